#!/usr/bin/env bash
# Load benchmark for anchored media: N concurrent emergency calls, each streaming G.711 both ways
# through sosdesk (sipp rtp_stream caller -> sosdesk anchor -> sipp UAS with -rtp_echo, which
# sends every packet back). Prints sosdesk's CPU over a steady 10 s window with all N calls up.
#   bash bench/media-load.sh [N...]        (default: 50 100 200)
# BENCHMARKS.md records the results with the machine they ran on. Traffic stays on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
counts=("$@")
[ ${#counts[@]} -gt 0 ] || counts=(50 100 200)

bash scripts/ensure-packages.sh sip-tester
cargo build --release --locked --bin sosdesk
bin="$(realpath "${CARGO_TARGET_DIR:-target}")/release/sosdesk"
hz=$(getconf CLK_TCK)

work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; pkill -f "sipp -sn uas -i 127.0.0.1 -p $PROV" || true; rm -rf "$work"' EXIT
SOS=26060; PROV=26070
sed -e "s/127.0.0.1:5060\"/127.0.0.1:$SOS\"/" -e "s/127.0.0.1:5070\"/127.0.0.1:$PROV\"/" \
    -e "s#path = \"../sosdesk-lab.db\"#path = \"$work/audit.db\"#" \
    -e 's/rtp_ports = "20000-20999"/rtp_ports = "30000-39999"/' examples/lab.toml > "$work/bench.toml"
# One second of a 500 Hz tone, µ-law, for every caller to loop.
python3 tests/support/g711.py tone "$work/caller_tone.ulaw" 500

SOSDESK_LOG=warn "$bin" serve --config "$work/bench.toml" > "$work/core.log" 2>&1 &
core=$!
(cd "$work" && sipp -sn uas -i 127.0.0.1 -p $PROV -rtp_echo -bg -nostdin > /dev/null 2>&1) || true
for _ in $(seq 100); do grep -q serving "$work/core.log" && break; sleep 0.05; done
grep -q serving "$work/core.log" || { echo "sosdesk did not start:" >&2; cat "$work/core.log" >&2; exit 1; }

echo "calls  sosdesk_cpu_%_of_one_core  per_call_%  rtp_packets_offered_per_s  calls_completed"
for n in "${counts[@]}"; do
  ramp=$(( n / 5 + 1 ))          # all calls up within ~5 s
  hold=$(( 5000 + 12000 ))       # up for the 10 s window after the ramp
  (cd "$work" && sipp -sf "$OLDPWD/tests/sipp/media_caller_stream.xml" 127.0.0.1:$SOS -i 127.0.0.1 -p 26062 \
     -s 911 -set hold_ms $hold -r $ramp -m $n -l $n -timeout 60 -nostdin > /dev/null 2>&1) &
  caller=$!
  sleep 6                        # the ramp (a benchmark window, not a synchronisation)
  t0=$(awk '{print $14 + $15}' /proc/$core/stat)
  sleep 10
  t1=$(awk '{print $14 + $15}' /proc/$core/stat)
  # sipp exits 0 only when every call was set up, held and hung up cleanly.
  if wait $caller; then done_ok="all $n"; else done_ok="NOT ALL (sipp exit $?)"; fi
  cpu=$(echo "scale=1; ($t1 - $t0) * 100 / $hz / 10" | bc)
  per=$(echo "scale=3; $cpu / $n" | bc)
  # Offered, not counted: each call streams 50 packets/s to the far end, which echoes them back.
  echo "$n  $cpu  $per  $(( n * 100 ))  $done_ok"
  sleep 3
done
