#!/usr/bin/env bash
# Emergency first under a junk flood (issue 19): sosdesk is flooded with a mix of what anyone
# can send (bench/flood.py: ordinary INVITEs, REGISTERs with made-up credentials from many
# addresses, OPTIONS, MESSAGEs, malformed datagrams) while sipp places emergency calls (911) at
# 4/s (SOSDESK_BENCH_EMERGENCY_RATE). Per flood rate: emergency calls completed, INVITE in -> INVITE out (bench/latency.py, from
# a loopback capture of the emergency traffic only), sosdesk's CPU; at the end, the audit store's
# growth per junk datagram.
#   bash bench/flood.sh [SECONDS_PER_RATE] [FLOOD_RATES...]     (SOSDESK_BENCH_BIN=path: that binary)
# The flood generator and sipp share the machine's cores with sosdesk: on 2 cores, the
# generator keeps one core busy, which is the condition the issue measured.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(0 2000 5000 10000 20000 40000)

bash scripts/ensure-packages.sh sip-tester tcpdump
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi

work=$(mktemp -d)
SOS=26060; PROV=26070
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p $PROV" || true; rm -rf "$work"' EXIT
sed -e "s/127.0.0.1:5060\"/127.0.0.1:$SOS\"/" -e "s/127.0.0.1:5070\"/127.0.0.1:$PROV\"/" \
    -e "s/127.0.0.1:8443/127.0.0.1:26443/" -e '/^notification_uris = /d' \
    -e "s#path = \"../sosdesk-lab.db\"#path = \"$work/audit.db\"#" examples/lab.toml > "$work/bench.toml"

SOSDESK_LOG=warn "$bin" serve --config "$work/bench.toml" > "$work/core.log" 2>&1 &
core=$!
sipp -sn uas -i 127.0.0.1 -p $PROV -bg -nostdin > /dev/null 2>&1 || true
for _ in $(seq 100); do grep -q serving "$work/core.log" && break; sleep 0.05; done
grep -q serving "$work/core.log" || { echo "sosdesk did not start:" >&2; cat "$work/core.log" >&2; exit 1; }

junk_total=0
echo "flood_per_s  emergency_ok/placed  latency  cpu  flood"
for rate in "${rates[@]}"; do
  pcap="$work/f$rate.pcap"
  # Only the emergency calls' INVITEs: sipp's port in, the provider's port out.
  tcpdump -i lo -nn -B 65536 -w "$pcap" "udp and ((src port 26062 and dst port $SOS) or dst port $PROV)" \
    > "$work/tcpdump.log" 2>&1 &
  tcpd=$!
  for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" && break; sleep 0.05; done
  flood_out="flood_sent=0"
  if [ "$rate" -gt 0 ]; then
    python3 bench/flood.py 127.0.0.1 $SOS "$rate" $((secs + 2)) 200 > "$work/flood.out" &
    flood=$!
    sleep 1   # the flood is at full rate before the first emergency call
  fi
  erate=${SOSDESK_BENCH_EMERGENCY_RATE:-4}
  n=$((secs * erate))
  cpu0=$(awk '{print $14 + $15}' /proc/$core/stat)
  sipp -sf bench/caller.xml 127.0.0.1:$SOS -i 127.0.0.1 -p 26062 -r "$erate" -m "$n" -l 1000 \
       -timeout $((secs + 40)) -nostdin -trace_stat -stf "$work/stat$rate.csv" > /dev/null 2>&1 || true
  cpu1=$(awk '{print $14 + $15}' /proc/$core/stat)
  if [ "$rate" -gt 0 ]; then wait $flood || true; flood_out=$(cat "$work/flood.out"); fi
  kill -INT $tcpd; wait $tcpd 2>/dev/null || true
  read -r ok failed < <(python3 - "$work/stat$rate.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")])
PY
)
  sent=$(echo "$flood_out" | sed -n 's/.*flood_sent=\([0-9]*\).*/\1/p')
  junk_total=$((junk_total + ${sent:-0}))
  cpu_s=$(python3 -c "print(f'{($cpu1 - $cpu0) / $(getconf CLK_TCK):.1f}')")
  echo "$rate  $ok/$n  $(python3 bench/latency.py "$pcap" $SOS $PROV)  sosdesk_cpu_s=$cpu_s  $flood_out"
done
echo "sosdesk peak memory: $(awk '/VmHWM/ {print $2, $3}' /proc/$core/status)"
kill -INT $core; wait $core 2>/dev/null || true
python3 - "$work/audit.db" "$junk_total" <<'PY'
import os, sqlite3, sys
db, junk = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
rows = dict(c.execute("SELECT kind, count(*) FROM events GROUP BY kind").fetchall())
calls = c.execute("SELECT count(*) FROM calls").fetchone()[0]
c.close()
size = os.path.getsize(db)
print(f"audit store: {size} bytes, events by kind {rows}, call-history rows {calls}; "
      f"junk datagrams sent {junk}: {size / junk if junk else 0:.2f} bytes per junk datagram (whole store)")
PY
"$bin" audit verify --store "$work/audit.db"
