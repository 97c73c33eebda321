#!/usr/bin/env bash
# Tests the desk's Debian package as a user gets it (about 30 s; not part of test.sh, run it
# after scripts/build-desk-deb.sh): apt resolves its dependencies (simulated, nothing installed),
# its files unpacked into a scratch root (dpkg -x), and the unpacked /usr/bin/sosdesk-desk started
# under Xvfb with a lab config: its page shows and two 911 calls reach it as painted alerts
# (bench/desk_first_alert.py, one round). Usage: scripts/test-desk-deb.sh DEB
set -euo pipefail
cd "$(dirname "$0")/.."
deb=$(realpath "${1:?usage: scripts/test-desk-deb.sh DEB}")
apt-get -s install "$deb" | grep -q '^Inst sosdesk-desk ' \
  || { apt-get -s install "$deb" >&2; echo "test-desk-deb: apt cannot install $deb" >&2; exit 1; }
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
dpkg -x "$deb" "$root"
app=$root/usr/bin/sosdesk-desk
[ -x "$app" ] || { echo "test-desk-deb: no usr/bin/sosdesk-desk in $deb" >&2; exit 1; }
SOSDESK_DESK_APP=$app bench/desk-first-alert.sh 1
echo "test-desk-deb: $deb installs, and its desk starts and shows alerts"
