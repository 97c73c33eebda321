#!/usr/bin/env bash
# TLS handshake cost, sosdesk -> Kamailio's TLS port on loopback (EC P-256 certificates from
# bench/make-pki.sh; mutual TLS unless SOSDESK_BENCH_MTLS=0):
#
#  1. a core's first connection: the release core started RESTARTS times on a config whose
#     primary route is TLS to Kamailio, health probes on; its first probe opens the connection
#     and the core logs "TLS connection open … handshake_us=…" (src/transport/mod.rs). Each start
#     is a fresh process: no session cache, nothing warmed up.
#  2. handshakes in a running process, with the core's own client side (`TlsSetup`, rustls/ring):
#     examples/tls_handshake.rs opens CONNECTIONS connections with a fresh client config each
#     (full handshakes) and CONNECTIONS with one config (resumed where Kamailio allows), timing
#     each and counting its thread's CPU; Kamailio's CPU (all its processes, /proc) over each.
#  3. for context, OpenSSL's own client against the same Kamailio: `openssl s_time`, new
#     sessions and reused sessions, 5 s each.
#
#   bash bench/tls-handshake.sh [RESTARTS] [CONNECTIONS]      (default 30, 500)
#   SOSDESK_BENCH_BIN=path: that core binary, no build; SOSDESK_BENCH_PORT_BASE (27400).
set -euo pipefail
cd "$(dirname "$0")/.."
restarts=${1:-30}
conns=${2:-500}

bash scripts/ensure-packages.sh kamailio kamailio-tls-modules openssl
target="${CARGO_TARGET_DIR:-target}/release"
# SOSDESK_BENCH_BIN: that core, and no build (then build the example beforehand:
# cargo build --release --locked --example tls_handshake). Two cargo runs, not one: an example brings
# the dev-dependencies' features, and the core must be the binary the other benchmarks measure.
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  cargo build --release --locked --example tls_handshake
  bin=$target/sosdesk
fi
source bench/kamailio-sbc.sh

B=${SOSDESK_BENCH_PORT_BASE:-27400}
SOS=$B; K_UDP=$((B + 200)); K_TLS=$((B + 201)); NEXT=$((B + 210))
work=$(mktemp -d)
core=
cleanup() {
  [ -z "$core" ] || kill "$core" 2>/dev/null || true
  kamailio_stop
  rm -rf "$work"
}
trap cleanup EXIT

bash bench/make-pki.sh "$work/pki" sbc.provider.test
verify=no; client=(); s_client=()
if [ "${SOSDESK_BENCH_MTLS:-1}" != 0 ]; then
  verify=yes
  client=(--tls-cert "$work/pki/client.pem" --tls-key "$work/pki/client.key")
  s_client=(-cert "$work/pki/client.pem" -key "$work/pki/client.key")
fi
# No provider behind Kamailio: only its TLS port and its answer to OPTIONS are used.
kamailio_start "$work" $K_UDP $K_TLS 127.0.0.1:$NEXT "$work/pki" $verify
python3 bench/lab-config.py --no-notify --health-interval 30 --sip-port $SOS --store "$work/core.db" \
  --api-port $((B + 300)) --held-port $((B + 310)) --rtp-ports 32000-32999 \
  --route-address 127.0.0.1:$K_TLS --route-transport tls --route-domain sbc.provider.test \
  --tls-ca "$work/pki/ca.pem" "${client[@]}" > "$work/tls.toml"

summary() { # label, then the values (µs) on stdin
  python3 -c '
import sys
v = sorted(float(x) for x in sys.stdin.read().split())
p = lambda q: v[min(len(v) - 1, round(q / 100 * (len(v) - 1)))]
print(f"{sys.argv[1]}: n={len(v)} min_us={v[0]:.0f} p50_us={p(50):.0f} p90_us={p(90):.0f} max_us={v[-1]:.0f}")
' "$1"
}

echo "# 1. a core's first TLS connection (the first health probe's), $restarts starts"
: > "$work/first.txt"
for i in $(seq "$restarts"); do
  SOSDESK_LOG=warn,sosdesk::transport=info "$bin" serve --config "$work/tls.toml" > "$work/core.log" 2>&1 &
  core=$!
  for _ in $(seq 200); do grep -q "TLS connection open" "$work/core.log" && break; sleep 0.025; done
  # The log may be coloured: strip the escapes before reading the field.
  us=$(sed 's/\x1b\[[0-9;]*m//g' "$work/core.log" | grep "TLS connection open" | head -1 | grep -o 'handshake_us=[0-9]*' | cut -d= -f2)
  [ -n "$us" ] || { echo "start $i: no TLS connection" >&2; cat "$work/core.log" >&2; exit 1; }
  [ "$i" = 1 ] && sed 's/\x1b\[[0-9;]*m//g' "$work/core.log" | grep "TLS connection open" | head -1 | sed 's/^/#   /'
  echo "$us" >> "$work/first.txt"
  kill "$core"; wait "$core" 2>/dev/null || true; core=
done
echo "#   handshake_us of each start: $(tr '\n' ' ' < "$work/first.txt")"
summary "core_first_handshake" < "$work/first.txt"

echo "# 2. $conns handshakes in one process, sosdesk's TlsSetup (examples/tls_handshake.rs)"
hz=$(getconf CLK_TCK)
k0=$(kamailio_cpu_ticks); sleep 5; k1=$(kamailio_cpu_ticks)
echo "#   Kamailio idle, for the baseline: $(( (k1 - k0) * 1000 / hz )) ms CPU in 5 s"
for mode in fresh reuse; do
  k0=$(kamailio_cpu_ticks)
  out=$("$target/examples/tls_handshake" "$work/tls.toml" "$conns" $mode)
  k1=$(kamailio_cpu_ticks)
  echo "$out kamailio_cpu_per_handshake_us=$(( (k1 - k0) * 1000000 / hz / conns ))"
done

echo "# 3. context: OpenSSL alone, client (openssl s_time) and server (openssl s_server, same certificates), 5 s each"
# Not against Kamailio: s_time drops each connection without reading, and Kamailio 5.6.3 then
# failed to send its session tickets ("Connection reset by peer") and one of its workers crashed
# (signal 11) within a few hundred connections.
S_PORT=$((B + 220))
s_verify=()
[ "${SOSDESK_BENCH_MTLS:-1}" = 0 ] || s_verify=(-Verify 1)
openssl s_server -accept 127.0.0.1:$S_PORT -cert "$work/pki/server.pem" -key "$work/pki/server.key" \
  -CAfile "$work/pki/ca.pem" "${s_verify[@]}" -quiet < /dev/null > "$work/s_server.log" 2>&1 &
s_server=$!
for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$S_PORT) 2>/dev/null && break; sleep 0.05; done
for mode in -new -reuse; do
  s0=$(awk '{print $14 + $15}' /proc/$s_server/stat)
  out=$(openssl s_time -connect 127.0.0.1:$S_PORT -CAfile "$work/pki/ca.pem" "${s_client[@]}" $mode -time 5 2>&1)
  s1=$(awk '{print $14 + $15}' /proc/$s_server/stat)
  n=$(echo "$out" | grep -o '^[0-9]* connections in [0-9.]* real' | head -1 | cut -d' ' -f1)
  echo "s_time $mode: $(echo "$out" | grep -E 'connections in|connections/user sec' | tr '\n' ' ')" \
       "s_server_cpu_per_handshake_us=$(( (s1 - s0) * 1000000 / hz / (${n:-0} > 0 ? n : 1) ))"
done
kill $s_server; wait $s_server 2>/dev/null || true
