#!/usr/bin/env bash
# Routes given by name (RFC 3263) on the wire, against the same route by IP literal, and what a
# resolution itself costs. dnsmasq on loopback serves the provider's records:
#
#   provider.bench.test            NAPTR 10 10 "S" "SIP+D2U" "" _sip._udp.provider.bench.test
#   _sip._udp.provider.bench.test  SRV   10 0 PROV sbc.provider.bench.test
#   sbc.provider.bench.test        A     127.0.0.1
#
# 1. "miss" and "hit" of one resolution, with sosdesk's resolver (examples/dns_resolve.rs):
#    cold = a new resolver each time (NAPTR, SRV, A and AAAA asked of dnsmasq), warm = hickory's
#    cache; N each.
# 2. the call path: two cores side by side from one binary, the lab config with the primary route
#    `address = "sip:provider.bench.test"` (no transport: NAPTR chooses) in one and
#    `address = "127.0.0.1:PROV"` in the other, the same `domain` in both (identical INVITEs), one
#    sipp UAS behind both. For each rate the two arms run one after the other (order alternating),
#    bench/caller.xml as the caller, tcpdump + bench/latency.py for INVITE in -> INVITE out, and the
#    number of queries dnsmasq logged (--log-queries) during each arm.
#
#   bash bench/dns-route.sh [SECONDS_PER_RATE] [RATES...]      (default 10 s; 500)
#   SOSDESK_BENCH_DNS_TTL (300): the records' TTL; SOSDESK_BENCH_DNS_N (100): resolutions per mode;
#   SOSDESK_BENCH_BIN=path: that core binary, no build; SOSDESK_BENCH_PORT_BASE (27600).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-10}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(500)
ttl=${SOSDESK_BENCH_DNS_TTL:-300}
n_res=${SOSDESK_BENCH_DNS_N:-100}

bash scripts/ensure-packages.sh sip-tester tcpdump dnsmasq-base
target="${CARGO_TARGET_DIR:-target}/release"
# SOSDESK_BENCH_BIN: that core, and no build (then build the example beforehand:
# cargo build --release --locked --example dns_resolve). Two cargo runs, not one: an example brings
# the dev-dependencies' features, and the core must be the binary the other benchmarks measure.
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  cargo build --release --locked --example dns_resolve
  bin=$target/sosdesk
fi

B=${SOSDESK_BENCH_PORT_BASE:-27600}
SOS_N=$B; SOS_I=$((B + 100)); DNS=$((B + 200)); PROV=$((B + 210)); CALLER=$((B + 250))
work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

dnslog=$work/dnsmasq.log
dnsmasq=/usr/sbin/dnsmasq
[ -x $dnsmasq ] || dnsmasq=dnsmasq
# Only these records, nothing from the system (see tests/it/support/dnsmasq.rs), and served as
# the zone's authoritative server: a "no AAAA record" answer then carries the zone's SOA and may
# be cached (RFC 2308). Without --auth-zone dnsmasq leaves the SOA out, and a resolver must ask
# for the AAAA records again every time.
$dnsmasq --no-daemon --conf-file=/dev/null --no-resolv --no-hosts --local=/#/ --bind-interfaces \
  --listen-address=127.0.0.1 --port=$DNS --log-facility=- --log-queries --local-ttl="$ttl" \
  --auth-zone=bench.test --auth-server=ns.bench.test,127.0.0.1 --auth-ttl="$ttl" \
  --auth-soa=1,hostmaster.bench.test,1200,180,1209600,"$ttl" \
  --naptr-record=provider.bench.test,10,10,S,SIP+D2U,,_sip._udp.provider.bench.test \
  --srv-host=_sip._udp.provider.bench.test,sbc.provider.bench.test,$PROV,10,0 \
  --host-record=sbc.provider.bench.test,127.0.0.1 > "$dnslog" 2>&1 &
pids+=($!)
# One log line per query: "query[A] name" (or "auth[A] name", answered from the zone).
queries() { grep -c -E " (query|auth)\[" "$dnslog" || true; }
for _ in $(seq 100); do grep -q "started, version" "$dnslog" && break; sleep 0.05; done
sleep 0.2

common=(--route-domain provider.bench.test --dns-server 127.0.0.1:$DNS --no-notify)
python3 bench/lab-config.py "${common[@]}" --sip-port $SOS_N --store "$work/name.db" --api-port $((B + 300)) \
  --held-port $((B + 310)) --rtp-ports 33000-33999 --route-address sip:provider.bench.test --route-transport none \
  > "$work/name.toml"
python3 bench/lab-config.py "${common[@]}" --sip-port $SOS_I --store "$work/ip.db" --api-port $((B + 301)) \
  --held-port $((B + 311)) --rtp-ports 34000-34999 --route-address 127.0.0.1:$PROV --route-transport udp \
  > "$work/ip.toml"

echo "# 1. one RFC 3263 resolution of sip:provider.bench.test with sosdesk's resolver (examples/dns_resolve.rs)"
q0=$(queries); l0=$(wc -l < "$dnslog")
"$target/examples/dns_resolve" "$work/name.toml" sip:provider.bench.test "$n_res"
q1=$(queries)
echo "#   dnsmasq answered $((q1 - q0)) queries for these $((2 * n_res + 1)) resolutions:$(
  tail -n +$((l0 + 1)) "$dnslog" | grep -o -E ' (query|auth)\[[A-Z]*\] [^ ]*' | sort | uniq -c | tr -s ' ' | tr '\n' ';')"

# The provider: answers every INVITE (sipp's built-in UAS), runs until killed.
sipp -sn uas -i 127.0.0.1 -p $PROV -nostdin > /dev/null 2>&1 &
pids+=($!)
declare -A core port
port[name]=$SOS_N; port[ip]=$SOS_I
q0=$(queries)
for arm in name ip; do
  SOSDESK_LOG=warn "$bin" serve --config "$work/$arm.toml" > "$work/$arm.log" 2>&1 &
  core[$arm]=$!
  pids+=($!)
done
for arm in name ip; do
  for _ in $(seq 100); do grep -q serving "$work/$arm.log" && break; sleep 0.05; done
  grep -q serving "$work/$arm.log" || { echo "sosdesk ($arm) did not start:" >&2; cat "$work/$arm.log" >&2; exit 1; }
done
sleep 0.5
q1=$(queries)
echo "# 2. the cores started; dnsmasq answered $((q1 - q0)) queries (the name core's resolution at start, TTL $ttl s)"
for arm in name ip; do
  sipp -sf bench/caller.xml 127.0.0.1:${port[$arm]} -i 127.0.0.1 -p $CALLER -r 20 -m 20 -timeout 30 -nostdin \
    > /dev/null 2>&1 || { echo "warm-up calls through the $arm arm failed" >&2; exit 1; }
done

hz=$(getconf CLK_TCK)
echo "rate_per_s arm  sipp_ok sipp_failed  capture  dns_queries_during_the_run  CPU per call"
i=0
for rate in "${rates[@]}"; do
  if [ $((i % 2)) = 0 ]; then order=(name ip); else order=(ip name); fi
  i=$((i + 1))
  for arm in "${order[@]}"; do
    sync
    pcap="$work/$arm-$rate.pcap"
    tcpdump -i lo -nn -B 65536 -w "$pcap" "udp and (dst port $SOS_N or dst port $SOS_I or dst port $PROV)" \
      > "$work/tcpdump.log" 2>&1 &
    tcpd=$!
    for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" 2>/dev/null && break; sleep 0.05; done
    n=$((rate * secs))
    c=${core[$arm]}
    q0=$(queries); cpu0=$(awk '{print $14 + $15}' /proc/$c/stat)
    # timeout(1) as well as sipp's own -timeout: a caller left waiting on a call whose answer
    # was lost with a dropped connection did not stop at its -timeout (sipp 3.6.1).
    timeout -k 5 $((secs + 60)) \
      sipp -sf bench/caller.xml 127.0.0.1:${port[$arm]} -i 127.0.0.1 -p $CALLER -r "$rate" -m "$n" -l 100000 \
         -timeout $((secs + 30)) -nostdin -trace_stat -stf "$work/stat.csv" > /dev/null 2>&1 || true
    cpu1=$(awk '{print $14 + $15}' /proc/$c/stat); q1=$(queries)
    # tcpdump hands packets over in blocks: give the last one time to be delivered before
    # stopping it, or the last calls' INVITEs are lost from the capture.
    sleep 1.5
    kill -INT $tcpd; wait $tcpd 2>/dev/null || true
    read -r ok failed < <(python3 - "$work/stat.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")])
PY
)
    rm -f "$work/stat.csv"
    calls=$((ok + failed > 0 ? ok + failed : 1))
    drops=$(grep -o '[0-9]* packets dropped by kernel' "$work/tcpdump.log" || true)
    echo "$rate $arm  $ok $failed  $(python3 bench/latency.py "$pcap" ${port[$arm]} $PROV)" \
         "dns_queries=$((q1 - q0)) sosdesk_cpu_per_call_us=$(( (cpu1 - cpu0) * 1000000 / hz / calls )) ${drops:+($drops)}"
    rm -f "$pcap"
  done
done
for arm in name ip; do kill "${core[$arm]}"; wait "${core[$arm]}" 2>/dev/null || true; done
for arm in name ip; do "$bin" audit verify --store "$work/$arm.db"; done
