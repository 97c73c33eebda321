#!/usr/bin/env bash
# The run command (README): builds sosdesk and runs the routing core with the loopback lab
# config (examples/lab.toml). Any extra arguments replace the default `serve` arguments, e.g.
#   ./run.sh serve --config /etc/sosdesk/sosdesk.toml
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "sosdesk: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
# sipp is not needed to run sosdesk, but the README's lab walk-through places calls with it.
bash scripts/ensure-packages.sh sip-tester
cargo build --release --locked --bin sosdesk
if [ $# -eq 0 ]; then
  set -- serve --config examples/lab.toml
fi
exec "${CARGO_TARGET_DIR:-target}/release/sosdesk" "$@"
