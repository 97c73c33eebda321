#!/usr/bin/env bash
# Wire A/B: the provider route over UDP against the same route over TLS, one binary, one run.
#
#   caller (sipp, bench/caller.xml) --UDP--> sosdesk "udp" --UDP--> Kamailio --UDP--> sipp UAS
#   caller (sipp, bench/caller.xml) --UDP--> sosdesk "tls" --TLS--> Kamailio --UDP--> sipp UAS
#
# Two sosdesk cores run side by side from the same binary and the lab config; they differ only in
# the primary route: Kamailio's UDP port, or its TLS port with `transport = "tls"`, `tls_ca` from
# a throw-away PKI (bench/make-pki.sh) and, unless SOSDESK_BENCH_MTLS=0, a client certificate
# that Kamailio requires (mutual TLS). Kamailio (bench/kamailio-sbc.sh) relays both to one sipp
# UAS over UDP, so both arms cross Kamailio and the difference between them is TLS's. Health
# probes are on (the default 30 s): the first probe opens the TLS connection before any call, as
# in a deployment. Notification URIs are off: this is the INVITE's path only.
#
# For each rate the two arms run one after the other, the order alternating from rate to rate,
# with `sync` before each (the recordings of the previous run must not be written back during the
# next). tcpdump captures loopback UDP; bench/latency.py matches the INVITE into sosdesk with the
# INVITE arriving at the sipp UAS (after Kamailio). It also gives sosdesk's own hop: INVITE in ->
# INVITE to Kamailio in the UDP arm; in the TLS arm INVITE in -> the TLS record that carries it
# (encrypted, so told by its size and paired in order: bench/latency.py --tls-hop).
#
#   bash bench/tls-route.sh [SECONDS_PER_RATE] [RATES...]      (default 8 s; 100 500 1000)
#   SOSDESK_BENCH_BIN=path: measure that binary; SOSDESK_BENCH_MTLS=0: no client certificate;
#   SOSDESK_BENCH_FIRST=tls: the TLS arm first at the first rate (default udp);
#   SOSDESK_BENCH_PORT_BASE (27000): ports BASE..BASE+320 on 127.0.0.1.
# Needs root (loopback capture), kamailio + kamailio-tls-modules, sipp, tcpdump, openssl.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(100 500 1000)

bash scripts/ensure-packages.sh sip-tester tcpdump kamailio kamailio-tls-modules openssl
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi
source bench/kamailio-sbc.sh

B=${SOSDESK_BENCH_PORT_BASE:-27000}
SOS_U=$B; SOS_T=$((B + 100))          # the two cores' SIP ports (UDP and TCP)
K_UDP=$((B + 200)); K_TLS=$((B + 201)) # Kamailio
PROV=$((B + 210))                      # the sipp UAS behind Kamailio
CALLER=$((B + 250))
mtls=${SOSDESK_BENCH_MTLS:-1}

work=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  kamailio_stop
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

bash bench/make-pki.sh "$work/pki" sbc.provider.test
verify=no; client=()
if [ "$mtls" != 0 ]; then
  verify=yes
  client=(--tls-cert "$work/pki/client.pem" --tls-key "$work/pki/client.key")
fi
kamailio_start "$work" $K_UDP $K_TLS 127.0.0.1:$PROV "$work/pki" $verify

# The provider: answers every INVITE (sipp's built-in UAS), runs until killed.
sipp -sn uas -i 127.0.0.1 -p $PROV -nostdin > /dev/null 2>&1 &
pids+=($!)

common=(--no-notify --health-interval 30 --route-domain sbc.provider.test)
python3 bench/lab-config.py "${common[@]}" --sip-port $SOS_U --store "$work/udp.db" --api-port $((B + 300)) \
  --held-port $((B + 310)) --rtp-ports 30000-30999 --route-address 127.0.0.1:$K_UDP --route-transport udp \
  > "$work/udp.toml"
python3 bench/lab-config.py "${common[@]}" --sip-port $SOS_T --store "$work/tls.db" --api-port $((B + 301)) \
  --held-port $((B + 311)) --rtp-ports 31000-31999 --route-address 127.0.0.1:$K_TLS --route-transport tls \
  --tls-ca "$work/pki/ca.pem" "${client[@]}" > "$work/tls.toml"

declare -A core port
for arm in udp tls; do
  # info for the transport (the TLS connection's line), warnings for the rest.
  SOSDESK_LOG=warn,sosdesk::transport=info "$bin" serve --config "$work/$arm.toml" > "$work/$arm.log" 2>&1 &
  core[$arm]=$!
  pids+=($!)
done
port[udp]=$SOS_U; port[tls]=$SOS_T
for arm in udp tls; do
  for _ in $(seq 100); do grep -q serving "$work/$arm.log" && break; sleep 0.05; done
  grep -q serving "$work/$arm.log" || { echo "sosdesk ($arm) did not start:" >&2; cat "$work/$arm.log" >&2; exit 1; }
done
# The health probe opens the TLS connection before the first call.
for _ in $(seq 100); do grep -q "TLS connection open" "$work/tls.log" && break; sleep 0.05; done
sed 's/\x1b\[[0-9;]*m//g' "$work/tls.log" | grep "TLS connection open" | sed 's/^/# /' || { echo "no TLS connection:" >&2; cat "$work/tls.log" >&2; exit 1; }
# Warm-up, not measured: 20 calls through each arm.
for arm in udp tls; do
  sipp -sf bench/caller.xml 127.0.0.1:${port[$arm]} -i 127.0.0.1 -p $CALLER -r 20 -m 20 -timeout 30 -nostdin \
    > /dev/null 2>&1 || { echo "warm-up calls through the $arm arm failed" >&2; exit 1; }
done

hz=$(getconf CLK_TCK)
echo "rate_per_s arm  sipp_ok sipp_failed  capture (INVITE in -> INVITE at the UAS)  CPU per call"
i=0
first=0
[ "${SOSDESK_BENCH_FIRST:-udp}" = udp ] || first=1
for rate in "${rates[@]}"; do
  if [ $(((i + first) % 2)) = 0 ]; then order=(udp tls); else order=(tls udp); fi
  i=$((i + 1))
  for arm in "${order[@]}"; do
    sync
    pcap="$work/$arm-$rate.pcap"
    tcpdump -i lo -nn -B 65536 -w "$pcap" \
      "(udp and (dst port $SOS_U or dst port $SOS_T or dst port $K_UDP or dst port $PROV)) or (tcp and dst port $K_TLS)" \
      > "$work/tcpdump.log" 2>&1 &
    tcpd=$!
    for _ in $(seq 100); do grep -q listening "$work/tcpdump.log" 2>/dev/null && break; sleep 0.05; done
    n=$((rate * secs))
    c=${core[$arm]}
    cpu0=$(awk '{print $14 + $15}' /proc/$c/stat); k0=$(kamailio_cpu_ticks)
    # timeout(1) as well as sipp's own -timeout: a caller left waiting on a call whose answer
    # was lost with a dropped connection did not stop at its -timeout (sipp 3.6.1).
    timeout -k 5 $((secs + 60)) \
      sipp -sf bench/caller.xml 127.0.0.1:${port[$arm]} -i 127.0.0.1 -p $CALLER -r "$rate" -m "$n" -l 100000 \
         -timeout $((secs + 30)) -nostdin -trace_stat -stf "$work/stat.csv" > /dev/null 2>&1 || true
    cpu1=$(awk '{print $14 + $15}' /proc/$c/stat); k1=$(kamailio_cpu_ticks)
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
    line="$rate $arm  $ok $failed  $(python3 bench/latency.py "$pcap" ${port[$arm]} $PROV)"
    line+=" sosdesk_cpu_per_call_us=$(( (cpu1 - cpu0) * 1000000 / hz / calls ))"
    line+=" kamailio_cpu_per_call_us=$(( (k1 - k0) * 1000000 / hz / calls ))"
    echo "$line ${drops:+($drops)}"
    if [ "$arm" = udp ]; then
      # sosdesk's own hop in the same capture: INVITE in -> INVITE to Kamailio.
      echo "      (udp arm, sosdesk's hop alone: $(python3 bench/latency.py "$pcap" $SOS_U $K_UDP))"
    else
      # The same from the TLS records' times (encrypted: told by size, paired in order).
      hop=$(python3 bench/latency.py "$pcap" $SOS_T $PROV --tls-hop $K_TLS)
      echo "      (tls arm, sosdesk's hop alone: ${hop#*| })"
    fi
    rm -f "$pcap"
  done
done

# Datagrams the kernel dropped because a socket's receive queue was full (/proc/net/udp, whole run).
udp_drops() { awk -v p="$(printf ':%04X' "$1")" 'NR > 1 && substr($2, length($2) - 4) == p { d += $NF } END { print d + 0 }' /proc/net/udp; }
echo "# UDP receive-queue drops over the run: sosdesk udp core $(udp_drops $SOS_U), tls core $(udp_drops $SOS_T)," \
     "Kamailio $(udp_drops $K_UDP), UAS $(udp_drops $PROV)"
for arm in udp tls; do kill "${core[$arm]}"; wait "${core[$arm]}" 2>/dev/null || true; done
# TLS connections opened during the whole run (1 = the one the first health probe opened).
echo "# TLS connections opened by the tls core: $(grep -c 'TLS connection open' "$work/tls.log")"
# What else the cores logged: warnings and errors by message (not the routes' health), e.g. a
# burst that filled the RTP port range (calls routed, media passing through).
for arm in udp tls; do
  sed 's/\x1b\[[0-9;]*m//g' "$work/$arm.log" | grep -E " (WARN|ERROR) " | grep -v "route .* answers\|route .* down" \
    | sed -E 's/^[^ ]+ +//; s/ [a-z_]+=.*//' | sort | uniq -c | sort -rn | head -5 | sed "s/^/# $arm core: /" || true
done
for arm in udp tls; do "$bin" audit verify --store "$work/$arm.db"; done
