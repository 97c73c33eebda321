#!/usr/bin/env bash
# sosdesk with ordinary SIP clients as desks: baresip and linphonec register, receive the alert,
# join a call listen-only and place a 911 call, against a private sosdesk on loopback, with sipp
# as provider and caller and tcpdump watching the wire; then each again over SIP over TLS, with a
# certificate of a test CA made here (README.md here).
# Usage: tests/clients/run.sh [baresip] [linphonec] [baresip-tls] [linphonec-tls]   (default: all)
# SOSDESK_BIN: the sosdesk binary (default target/debug/sosdesk, which `cargo test` builds).
# Capturing on lo needs root (or CAP_NET_RAW for tcpdump).
set -euo pipefail
cd "$(dirname "$0")/../.."
bash scripts/ensure-packages.sh baresip-core linphone-cli sip-tester tcpdump openssl
export SOSDESK_BIN="$(realpath -m "${SOSDESK_BIN:-${CARGO_TARGET_DIR:-target}/debug/sosdesk}")"
[ -x "$SOSDESK_BIN" ] || { echo "clients: no sosdesk binary at $SOSDESK_BIN (cargo build, or set SOSDESK_BIN)" >&2; exit 1; }
echo "clients: $(dpkg-query -W -f='baresip-core ${Version}' baresip-core), $(dpkg-query -W -f='linphone-cli ${Version}' linphone-cli), $SOSDESK_BIN"
# The Debian python3 (stdlib only): a pyenv one that may come first on PATH would do as well.
export PYTHONDONTWRITEBYTECODE=1
exec /usr/bin/python3 tests/clients/test_clients.py "$@"
