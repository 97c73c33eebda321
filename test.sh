#!/usr/bin/env bash
# The test command (README): installs what the tests need when missing, then runs them all.
#   sip-tester     sipp, the real SIP peer of the integration tests
#   libxml2-utils  xmllint, which validates every PIDF-LO sosdesk generates against the RFC schemas
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "sosdesk: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
bash scripts/ensure-packages.sh sip-tester libxml2-utils

echo "== format and lints"
cargo fmt --check
cargo clippy --all-targets --locked -- -D warnings

echo "== tests (unit, SIP torture, sipp calls, audit store, CLI)"
cargo test --locked
