#!/usr/bin/env bash
# End-to-end tests of the desk app (tests/desk_e2e/test_desk.py) on a virtual X display with a
# window manager (always-on-top needs one). Usage: tests/desk_e2e/run.sh [unittest args]
# Expects the app built (cargo build -p sosdesk-desk); SOSDESK_DESK_APP overrides its path.
set -euo pipefail
cd "$(dirname "$0")/../.."
export SOSDESK_DESK_APP="${SOSDESK_DESK_APP:-$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/sosdesk-desk}"
export PATH="$HOME/.cargo/bin:$PATH"
# The Debian python3-selenium is for the system python, not a pyenv one that may come first.
exec scripts/with-xvfb.sh /usr/bin/python3 tests/desk_e2e/test_desk.py "$@"
