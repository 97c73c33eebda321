#!/usr/bin/env bash
# Install the Debian packages named on the command line that are not installed yet.
# Used by ./run.sh and ./test.sh so that, on a fresh Debian machine, those two commands do all
# the set-up themselves. Runs apt-get as root, or through sudo when there is one.
set -euo pipefail
missing=()
for pkg in "$@"; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
echo "sosdesk: installing missing Debian packages: ${missing[*]}" >&2
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "sosdesk: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
  SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
# kamailio is a test peer here (tests/it/support/kamailio.rs starts its own, in the foreground, on
# free ports), not a service: on a systemd machine its postinst starts and enables the system
# one, which holds 5060 on every address (sosdesk's own SIP port in ./run.sh). Stop and disable
# it, but only when this run installed it: a kamailio that was already there is someone's.
# (Without systemd, Debian's init script does not start it: RUN_KAMAILIO=no in /etc/default.)
# postgresql likewise: the tests start their own clusters (tests/it/support/postgres.rs); the
# system one its postinst starts would only take memory and port 5432; snmpd's would hold
# UDP 161.
for pkg in "${missing[@]}"; do
  if [ "$pkg" = kamailio ] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now kamailio.service || true
  fi
  if [ "$pkg" = snmpd ] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now snmpd.service || true
  fi
  if [ "$pkg" = postgresql ] && [ -d /run/systemd/system ]; then
    $SUDO systemctl disable --now postgresql.service || true
  fi
done
