#!/usr/bin/env bash
# Desk app: memory of all its processes, idle and after calls (BENCHMARKS.md, "Desk app: idle
# memory"). Usage: bench/desk-memory.sh [CALLS] [IDLE_S]; the app built first (cargo build -p
# sosdesk-desk, or SOSDESK_DESK_APP=path; SOSDESK_DESK_APPS to compare two builds).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-xvfb.sh /usr/bin/python3 bench/desk_memory.py "$@"
