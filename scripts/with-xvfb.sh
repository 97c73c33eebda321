#!/usr/bin/env bash
# Runs a command on a virtual X display with a window manager (the desk's always-on-top and
# focus need one), as the desk's E2E tests and benchmarks do. Usage: scripts/with-xvfb.sh CMD ARGS…
set -euo pipefail
exec xvfb-run -a -s "-screen 0 1400x1000x24" bash -c '
  openbox >/dev/null 2>&1 &
  wm=$!
  # openbox takes the display before the first window is mapped.
  for _ in $(seq 100); do xprop -root _NET_SUPPORTING_WM_CHECK 2>/dev/null | grep -q "window id" && break; sleep 0.05; done
  "$@"; rc=$?
  kill $wm 2>/dev/null || true
  exit $rc
' with-xvfb "$@"
