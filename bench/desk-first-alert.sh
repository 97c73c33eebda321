#!/usr/bin/env bash
# Desk app: first alert of a fresh app vs a later one, event → painted (BENCHMARKS.md, "Desk app:
# core event → alert painted"). Usage: bench/desk-first-alert.sh [ROUNDS]; the app built first
# (cargo build -p sosdesk-desk, or SOSDESK_DESK_APP=path; SOSDESK_DESK_APPS to compare two).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/with-xvfb.sh /usr/bin/python3 bench/desk_first_alert.py "$@"
