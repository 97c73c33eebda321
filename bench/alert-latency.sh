#!/usr/bin/env bash
# Alert channels (issue 15 item 6): INVITE in -> the email accepted by the SMTP server, the
# webhook received, the voice call's INVITE sent (received by the called phone), p50/p99.
#
# The release core with the lab config (bench/lab-config.py) and three channels on policy
# us-hq, all at once (tier 1): email (SMTP on loopback, no TLS), a signed json webhook, and a
# voice call to a SIP phone. sipp calls 911 (bench/caller.xml: From user bN unique per call) at
# RATE calls/s, a sipp UAS is the provider. tcpdump captures the INVITEs into sosdesk (the
# kernel's times); bench/alert_latency.py is the SMTP server, the webhook receiver and the phone
# (which answers 486, and `[alerts] retry_for_s = 0`: one attempt each), stamps each arrival
# with the wall clock and matches them to the calls by the caller's number (email text, webhook
# JSON) or name (the voice INVITE's Subject).
#
#   bash bench/alert-latency.sh [CALLS] [RATE]          (default 200 calls, 5 calls/s)
#   SOSDESK_BENCH_BIN=path: that core binary, no build; SOSDESK_BENCH_PORT_BASE (27900).
set -euo pipefail
cd "$(dirname "$0")/.."
calls=${1:-200}
rate=${2:-5}
bash scripts/ensure-packages.sh sip-tester tcpdump espeak-ng
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi
exec python3 bench/alert_latency.py --bin "$bin" --calls "$calls" --rate "$rate" \
  --port-base "${SOSDESK_BENCH_PORT_BASE:-27900}"
