#!/usr/bin/env bash
# The test command (README): installs what the tests need when missing, then runs them all.
#   sip-tester     sipp, the real SIP peer of the integration tests
#   libxml2-utils  xmllint, which validates every PIDF-LO sosdesk generates against the RFC schemas
#   openssl        makes the certificate of the HTTPS API test
#   baresip-core   baresip, and linphone-cli linphonec: ordinary SIP clients as desks (tests/clients)
#   tcpdump        watches those clients on the wire
#   iproute2       ss -K, which breaks a desk's TLS connection under it (tests/clients)
#   kamailio, kamailio-tls-modules  a real SIP proxy as the TLS SBC (SIP over TLS) in front of
#                  sosdesk or of a sipp peer (tests/it/support/kamailio.rs); sipp has no TLS
#   dnsmasq-base   dnsmasq alone (no daemon set-up): the DNS server with the NAPTR/SRV/A records
#                  of the RFC 3263 tests (tests/it/support/dnsmasq.rs)
#   python3-aiosmtpd  a real SMTP server (STARTTLS) that receives the email alerts
#                  (tests/it/support/smtp_sink.py, tests/it/channels.rs)
#   postgresql    PostgreSQL, for the store tests on the PostgreSQL backend ([store] url, issue 14):
#                 each test runs its own throwaway cluster (initdb + postgres on 127.0.0.1, a free
#                 port; tests/it/support/postgres.rs), never the system's service
#   snmpsim        snmpsimd, a simulated switch answering SNMP from a real device's walk, for
#                  switch-port discovery (tests/it/support/snmpsim.rs)
#   snmpd          net-snmp's agent: SNMP v3 with AES privacy in front of that simulated switch
#                  (tests/it/support/snmpd.rs), started by the test on a free port, never as a service
#   espeak-ng      the speech synthesiser the voice alert channel runs (src/reach/voice.rs); its
#                  tests compare what the called phone heard with espeak-ng's own output
#   the desk app's packages, npm modules and tauri-driver: scripts/desk-deps.sh --test
set -euo pipefail
cd "$(dirname "$0")"
command -v cargo >/dev/null || { echo "sosdesk: cargo (Rust) is required: https://rustup.rs" >&2; exit 1; }
# A clean build needs several GB; say how much there is before it fails half-way for want of it.
df -h "${CARGO_TARGET_DIR:-.}" 2>/dev/null | sed 's/^/sosdesk: disk: /' >&2 || true
# Incremental compilation state is disk a from-scratch run never reuses.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
bash scripts/ensure-packages.sh sip-tester libxml2-utils openssl baresip-core linphone-cli tcpdump \
  kamailio kamailio-tls-modules dnsmasq-base iproute2 python3-aiosmtpd postgresql snmpsim snmpd espeak-ng
bash scripts/desk-deps.sh --test

echo "== format and lints"
cargo fmt --all --check
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== core tests (unit, SIP torture, sipp calls, audit store, CLI)"
cargo test --locked

echo "== ordinary SIP clients as desks (baresip, linphonec: register, alert, listen-only join, 911 call; then over TLS)"
# The sosdesk that `cargo test` built; tests/clients/README.md
SOSDESK_BIN="${CARGO_TARGET_DIR:-target}/debug/sosdesk" tests/clients/run.sh

echo "== fuzz targets, a few seconds each from the committed corpus (docs/fuzzing.md)"
bash fuzz/run.sh 5

echo "== desk app tests (board, alarm, settings, commands on Tauri's mock runtime, TS bindings drift)"
# Also builds the app binary the end-to-end tests start.
cargo test --locked -p sosdesk-desk

echo "== desk app end to end (real webview under Xvfb + openbox, tauri-driver, sipp)"
tests/desk_e2e/run.sh
