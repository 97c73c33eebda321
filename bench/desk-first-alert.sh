#!/usr/bin/env bash
# Desk app: first alert of a fresh app vs a later one, event → painted (BENCHMARKS.md, "Desk app:
# core event → alert painted"). Usage: bench/desk-first-alert.sh [ROUNDS]; the app built first
# (cargo build -p sosdesk-desk, or SOSDESK_DESK_APP=path). Xvfb + openbox as in the E2E tests.
set -euo pipefail
cd "$(dirname "$0")/.."
exec xvfb-run -a -s "-screen 0 1400x1000x24" bash -c '
  openbox >/dev/null 2>&1 &
  wm=$!
  for _ in $(seq 100); do xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q "window id" && break; sleep 0.05; done
  /usr/bin/python3 bench/desk_first_alert.py "$@"; rc=$?
  kill $wm 2>/dev/null || true
  exit $rc
' bench "$@"
