#!/usr/bin/env bash
# Soak (issue 19): emergency calls at a steady rate for a long time through the real sosdesk, with
# anchored media (sipp rtp_stream both ways through the anchor: the provider echoes every
# packet), recording and the notification IM; every 10 s the core's RSS, open files and threads
# from /proc, and what its engine holds (calls, transactions, timers, runtime tasks) from
# GET /api/v1/status. Writes soak.csv and soak.svg (a plot of each series) into OUT.
#   bash bench/soak.sh [SECONDS] [CALLS_PER_S] [HOLD_MS] [OUT]     (default 3600 50 2000 soak-out)
# SOSDESK_BENCH_BIN=path: that binary. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-3600}; rate=${2:-50}; hold=${3:-2000}; out=$(realpath -m "${4:-soak-out}")
mkdir -p "$out"
bash scripts/ensure-packages.sh sip-tester
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then bin=$SOSDESK_BENCH_BIN; else
  cargo build --release --locked --bin sosdesk; bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/sosdesk"; fi

work=$(mktemp -d)
SOS=28060; PROV=28070; NOTE=28090; API=28443
trap 'cp "$work/core.log" "$out/core.log" 2>/dev/null || true; kill $(jobs -p) 2>/dev/null || true;
      pkill -f "media_caller_stream.xml 127.0.0.1:$SOS" || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p $PROV" || true;
      pkill -f "notify_receiver.xml -i 127.0.0.1 -p $NOTE" || true; rm -rf "$work"' EXIT
sed -e "s/127.0.0.1:5060\"/127.0.0.1:$SOS\"/" -e "s/127.0.0.1:5070\"/127.0.0.1:$PROV\"/" \
    -e "s/127.0.0.1:5090/127.0.0.1:$NOTE/g" -e "s/127.0.0.1:8443/127.0.0.1:$API/" \
    -e "s#path = \"../sosdesk-lab.db\"#path = \"$work/audit.db\"#" \
    -e 's/rtp_ports = "20000-20999"/rtp_ports = "30000-39999"/' examples/lab.toml > "$work/soak.toml"
sed -i "s#^\[media\]#[media]\nrecordings = \"$work/recordings\"#" "$work/soak.toml"
python3 tests/support/g711.py tone "$work/caller_tone.ulaw" 500

# SOSDESK_SOAK_HEAPTRACK=FILE: the core runs under heaptrack (its heap profile into FILE.zst,
# read with heaptrack_print); the samples are taken from the core itself, heaptrack's child.
if [ -n "${SOSDESK_SOAK_HEAPTRACK:-}" ]; then
  SOSDESK_LOG=warn heaptrack -o "$SOSDESK_SOAK_HEAPTRACK" "$bin" serve --config "$work/soak.toml" > "$work/core.log" 2>&1 &
  for _ in $(seq 100); do core=$(pgrep -n -f "^$bin serve --config $work/soak.toml" || true); [ -n "$core" ] && break; sleep 0.05; done
else
  SOSDESK_LOG=warn "$bin" serve --config "$work/soak.toml" > "$work/core.log" 2>&1 &
  core=$!
fi
(cd "$work" && sipp -sn uas -i 127.0.0.1 -p $PROV -rtp_echo -bg -nostdin > /dev/null 2>&1) || true
sipp -sf tests/sipp/notify_receiver.xml -i 127.0.0.1 -p $NOTE -bg -nostdin > /dev/null 2>&1 || true
for _ in $(seq 100); do grep -q serving "$work/core.log" && break; sleep 0.05; done
grep -q serving "$work/core.log" || { echo "sosdesk did not start:" >&2; cat "$work/core.log" >&2; exit 1; }

n=$((secs * rate))
(cd "$work" && sipp -sf "$OLDPWD/tests/sipp/media_caller_stream.xml" 127.0.0.1:$SOS -i 127.0.0.1 -p 28062 \
   -s 911 -set hold_ms "$hold" -r "$rate" -m "$n" -l $((rate * 20)) -timeout $((secs + 120)) -nostdin \
   -trace_stat -stf "$work/stat.csv" -fd 10 > /dev/null 2>&1) &
caller=$!

echo "t_s,rss_kb,fds,threads,calls,server_tx,client_tx,timers,tasks,audit_committed,recordings_mb" > "$out/soak.csv"
t0=$(date +%s)
while kill -0 $caller 2>/dev/null; do
  t=$(( $(date +%s) - t0 ))
  rss=$(awk '/VmRSS/ {print $2}' /proc/$core/status)
  fds=$(ls /proc/$core/fd | wc -l)
  threads=$(awk '/Threads/ {print $2}' /proc/$core/status)
  status=$(curl -s -u desk1:lobby-desk-secret "http://127.0.0.1:$API/api/v1/status" || echo '{}')
  rec=$( (du -sm "$work/recordings" 2>/dev/null || true) | cut -f1)
  echo "$status" | python3 -c "
import json, sys
s = json.loads(sys.stdin.read() or '{}'); e = s.get('engine', {}); l = e.get('load', {})
print(','.join(str(x) for x in ['$t', '$rss', '$fds', '$threads', l.get('calls', ''), l.get('server_transactions', ''),
      l.get('client_transactions', ''), l.get('timers', ''), e.get('tasks', ''), s.get('audit', {}).get('committed', ''), '${rec:-0}']))
" >> "$out/soak.csv"
  # Recordings are checked by the tests; here they would only fill the disk (~6 GB an hour).
  find "$work/recordings" -name '*.wav' -mmin +1 -delete 2>/dev/null || true
  sleep 10   # the sampling period (a measurement interval, not a synchronisation)
done
wait $caller || true
read -r ok failed < <(python3 - "$work/stat.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")])
PY
)
cp "$work/stat.csv" "$out/sipp-stat.csv"
kill -INT $core; wait $core 2>/dev/null || true
# Under heaptrack the core is not this shell's child: wait for it, then for heaptrack's writing.
while kill -0 $core 2>/dev/null; do sleep 0.1; done
[ -z "${SOSDESK_SOAK_HEAPTRACK:-}" ] || wait
"$bin" audit verify --store "$work/audit.db" | tee "$out/verify.txt"
python3 - "$out" "$ok" "$failed" <<'PY'
import csv, sys
out, ok, failed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/soak.csv")))
series = ["rss_kb", "fds", "threads", "calls", "server_tx", "client_tx", "timers", "tasks"]
def col(k): return [(float(r["t_s"]), float(r[k])) for r in rows if r[k] not in ("", None)]
# One small panel per series, as plain SVG (no plotting library needed).
W, H, P = 900, 110, 40
svg = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H * len(series) + 20}" font-family="sans-serif" font-size="11">']
lines = []
for i, k in enumerate(series):
    pts = col(k)
    if not pts: continue
    t_max = max(t for t, _ in pts) or 1; v_max = max(v for _, v in pts) or 1
    y0 = i * H + 10
    path = " ".join(f"{P + (W - 2 * P) * t / t_max:.1f},{y0 + H - 25 - (H - 40) * v / v_max:.1f}" for t, v in pts)
    svg.append(f'<text x="{P}" y="{y0 + 10}">{k}: max {v_max:g}, last {pts[-1][1]:g} (t = 0 … {t_max:g} s)</text>')
    svg.append(f'<polyline fill="none" stroke="#c00" stroke-width="1" points="{path}"/>')
    svg.append(f'<line x1="{P}" y1="{y0 + H - 25}" x2="{W - P}" y2="{y0 + H - 25}" stroke="#999"/>')
    # Flat? Compare the second half's mean with the first half's (after the first minute's ramp).
    steady = [v for t, v in pts if t >= 60]
    h = len(steady) // 2
    if h:
        a, b = sum(steady[:h]) / h, sum(steady[h:]) / (len(steady) - h)
        lines.append(f"{k}: first half mean {a:.1f}, second half mean {b:.1f}, max {v_max:g}")
svg.append("</svg>")
open(f"{out}/soak.svg", "w").write("\n".join(svg))
print(f"calls: {ok} completed, {failed} failed")
print("\n".join(lines))
PY
