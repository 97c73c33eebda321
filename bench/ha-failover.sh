#!/usr/bin/env bash
# HA failover (issue 14, docs/ha.md): Kamailio with examples/ha/kamailio.cfg in front of two
# `sosdesk serve` nodes (examples/ha/node-a.toml, node-b.toml), a sipp provider, and sipp callers
# at RATE calls/s for SECONDS; node-a is killed (SIGKILL) KILL_AFTER seconds in.
#   bash bench/ha-failover.sh [RATE] [SECONDS] [KILL_AFTER]     (default 50 6 2)
#   SOSDESK_BENCH_BIN=path: that binary (default: a release build of this tree)
# Each node has its own SQLite store here (the routing path is what is measured; the example's
# shared PostgreSQL is exercised by tests/it/ha.rs). Prints: calls, calls lost (failed at the
# callers), the INVITE -> 200 time at the callers (median, p99, max), the failover time (kill ->
# first call that was sent to the dead node answered through node-b) and for how long after the
# kill Kamailio still sent calls to the dead node. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
rate=${1:-50}; secs=${2:-6}; kill_after=${3:-2}
bash scripts/ensure-packages.sh sip-tester kamailio
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi
work=$(mktemp -d)
KAM=26060; A=26062; B=26064; PROV=26070
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"' EXIT

for n in a b; do
  port=$([ $n = a ] && echo $A || echo $B); api=$([ $n = a ] && echo 26443 || echo 26444)
  sed -e "s/127.0.0.1:506[24]/127.0.0.1:$port/g" -e "s/127.0.0.1:5070/127.0.0.1:$PROV/g" \
      -e "s/127.0.0.1:844[34]/127.0.0.1:$api/" -e "s#^url = .*#path = \"$work/node-$n.db\"#" \
      -e 's/^health_interval_s = 10/health_interval_s = 0/' examples/ha/node-$n.toml > "$work/node-$n.toml"
done
sed -e "s/127.0.0.1:5062/127.0.0.1:$A/" -e "s/127.0.0.1:5064/127.0.0.1:$B/" examples/ha/dispatcher.list > "$work/nodes.list"
sed -e "s/udp:127.0.0.1:5060/udp:127.0.0.1:$KAM/" -e "s#/etc/kamailio/sosdesk-nodes.list#$work/nodes.list#" \
    -e "s/127.0.0.1:5070/127.0.0.1:$PROV/" -e 's/^debug=2/debug=1/' examples/ha/kamailio.cfg > "$work/kamailio.cfg"

sipp -sf tests/sipp/ha_provider.xml -i 127.0.0.1 -p $PROV -nostdin > /dev/null 2>&1 & pids+=($!)
SOSDESK_LOG=warn "$bin" serve --config "$work/node-a.toml" > "$work/node-a.log" 2>&1 & node_a=$!; pids+=($node_a)
SOSDESK_LOG=warn "$bin" serve --config "$work/node-b.toml" > "$work/node-b.log" 2>&1 & pids+=($!)
mkdir -p "$work/kam.run"
/usr/sbin/kamailio -f "$work/kamailio.cfg" -DD -E -m 64 -M 8 -Y "$work/kam.run" -w "$work" > "$work/kamailio.log" 2>&1 & pids+=($!)
for f in node-a node-b; do
  for _ in $(seq 100); do grep -q "sosdesk serving" "$work/$f.log" && break; sleep 0.1; done
done
for _ in $(seq 100); do grep -q "Listening on" "$work/kamailio.log" && break; sleep 0.1; done

calls=$((rate * secs))
start_ms=$(date +%s%3N)
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/ha_caller.xml" 127.0.0.1:$KAM -s 911 -i 127.0.0.1 -p 26100 \
   -r "$rate" -m "$calls" -nostdin -recv_timeout 20000 -trace_rtt -rtt_freq 1 -trace_stat -stf stat.csv \
   > /dev/null 2>&1) & caller=$!
sleep "$kill_after"
kill_ms=$(date +%s%3N)
kill -9 "$node_a"
wait "$caller" || true

python3 - "$work" "$((kill_ms - start_ms))" "$calls" <<'PY'
import csv, glob, sys
# Times in ms since the callers started (sipp's rtt Date_ms counts from its own start: a few ms
# of process start-up are not subtracted).
work, kill_ms, calls = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
stat = list(csv.reader(open(f"{work}/stat.csv"), delimiter=";"))
h, last = stat[0], stat[-1]
ok, failed = int(last[h.index("SuccessfulCall(C)")]), int(last[h.index("FailedCall(C)")])
rows = []
for f in glob.glob(f"{work}/*_rtt.csv"):
    for r in list(csv.reader(open(f), delimiter=";"))[1:]:
        end, rt = float(r[0]), float(r[1])
        rows.append((end - rt, rt))  # (INVITE sent, ms to its 200)
rows.sort()
rts = sorted(rt for _, rt in rows)
q = lambda p: rts[min(len(rts) - 1, int(p * len(rts)))]
slow = [(t, rt) for t, rt in rows if rt > 1000]
print(f"calls {calls}: answered {ok}, lost {failed}")
print(f"INVITE -> 200 at the callers: median {q(0.5):.0f} ms, p99 {q(0.99):.0f} ms, max {rts[-1]:.0f} ms")
if slow:
    first = min(t + rt for t, rt in slow)
    print(f"failover: {len(slow)} calls were sent to the dead node; the first answered through node-b "
          f"{first - kill_ms:.0f} ms after the kill; Kamailio sent calls to the dead node until "
          f"{max(t for t, _ in slow) - kill_ms:.0f} ms after the kill")
else:
    print("failover: no call was sent to the dead node")
PY
