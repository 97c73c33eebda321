#!/usr/bin/env bash
# Wire benchmark: emergency calls through the real sosdesk at rising rates, sipp as caller,
# provider and notification receiver (the lab's security desk phone), tcpdump on loopback for
# the INVITE in -> INVITE out and INVITE in -> notification MESSAGE out times (bench/latency.py).
#   bash bench/sipp-load.sh [SECONDS_PER_RATE] [RATES...]      (SOSDESK_BENCH_NOTIFY=0: no notification URIs;
#   SOSDESK_BENCH_BIN=path: measure that binary)
# Prints one line per rate; BENCHMARKS.md records the results with the machine they ran on.
# Traffic stays on 127.0.0.1. Needs root for the loopback capture.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(100 250 500 1000 1500 2000 2500)

bash scripts/ensure-packages.sh sip-tester tcpdump
# SOSDESK_BENCH_BIN: a sosdesk binary to measure instead of this tree's (A/B comparisons).
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi

work=$(mktemp -d)
SOS=25060; PROV=25070; NOTE=25090
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p $PROV" || true;
      pkill -f "notify_receiver.xml -i 127.0.0.1 -p $NOTE" || true; rm -rf "$work"' EXIT
sed -e "s/127.0.0.1:5060\"/127.0.0.1:$SOS\"/" -e "s/127.0.0.1:5070\"/127.0.0.1:$PROV\"/" \
    -e "s/127.0.0.1:5090/127.0.0.1:$NOTE/g" -e "s/127.0.0.1:8443/127.0.0.1:25443/" \
    -e "s#path = \"../sosdesk-lab.db\"#path = \"$work/audit.db\"#" examples/lab.toml > "$work/bench.toml"
# SOSDESK_BENCH_NOTIFY=0: the same without notification URIs (what the notification IM costs).
if [ "${SOSDESK_BENCH_NOTIFY:-1}" = 0 ]; then sed -i '/^notification_uris = /d' "$work/bench.toml"; fi

SOSDESK_LOG=warn "$bin" serve --config "$work/bench.toml" > "$work/core.log" 2>&1 &
core=$!
# -bg: the launching process exits 99 ("no calls") while the UAS runs on.
sipp -sn uas -i 127.0.0.1 -p $PROV -bg -nostdin > /dev/null 2>&1 || true
# The notification receiver answers every MESSAGE with 200 (no -m: it runs until killed).
sipp -sf tests/sipp/notify_receiver.xml -i 127.0.0.1 -p $NOTE -bg -nostdin > /dev/null 2>&1 || true
for _ in $(seq 100); do grep -q serving "$work/core.log" && break; sleep 0.05; done
grep -q serving "$work/core.log" || { echo "sosdesk did not start:" >&2; cat "$work/core.log" >&2; exit 1; }

echo "rate_per_s  sipp_ok sipp_failed  capture"
for rate in "${rates[@]}"; do
  pcap="$work/r$rate.pcap"
  tcpdump -i lo -nn -B 65536 -w "$pcap" "udp and (dst port $SOS or dst port $PROV or dst port $NOTE)" > "$work/tcpdump.log" 2>&1 &
  tcpd=$!
  for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" && break; sleep 0.05; done
  n=$((rate * secs))
  cpu0=$(awk '{print $14 + $15}' /proc/$core/stat)
  sipp -sf bench/caller.xml 127.0.0.1:$SOS -i 127.0.0.1 -p 25062 -r "$rate" -m "$n" -l 100000 \
       -timeout $((secs + 30)) -nostdin -trace_stat -stf "$work/stat$rate.csv" > /dev/null 2>&1 || true
  cpu1=$(awk '{print $14 + $15}' /proc/$core/stat)
  kill -INT $tcpd; wait $tcpd 2>/dev/null || true
  # sipp's statistics file: columns found by header name (cumulative counters end in "(C)").
  read -r ok failed < <(python3 - "$work/stat$rate.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")])
PY
)
  drops=$(grep -o '[0-9]* packets dropped by kernel' "$work/tcpdump.log" || true)
  # sosdesk's own CPU time for the whole run at this rate, per call (the load generators and
  # tcpdump share the same 2 cores and are not counted).
  cpu_us=$(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / (ok + failed > 0 ? ok + failed : 1) ))
  echo "$rate  $ok $failed  $(python3 bench/latency.py "$pcap" $SOS $PROV $NOTE) sosdesk_cpu_per_call_us=$cpu_us ${drops:+($drops)}"
done
kill $core; wait $core 2>/dev/null || true
"$bin" audit verify --store "$work/audit.db"
