#!/usr/bin/env bash
# Desk app: memory over an hour with calls coming and going (BENCHMARKS.md, "Desk app: memory
# over an hour"). Usage: bench/desk-soak.sh [MINUTES] [WARMUP_MINUTES] [REST_MINUTES]; the app built first
# (cargo build --release -p sosdesk-desk; SOSDESK_DESK_APP=path).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-xvfb.sh /usr/bin/python3 bench/desk_soak.py "$@"
