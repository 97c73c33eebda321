# Kamailio as a provider's SBC for the TLS benchmarks (sourced by bench/tls-route.sh and
# bench/tls-handshake.sh): it listens on udp:127.0.0.1:UDP_PORT and tls:127.0.0.1:TLS_PORT and
# relays every new request, whichever it came over, statefully (tm) over UDP to NEXT_HOP (a sipp
# UAS), with Record-Route so that ACK and BYE come back through it; an OPTIONS without a user part
# (sosdesk's health probe) is answered 200 by Kamailio itself. The routing of
# tests/it/support/kamailio.rs's provider SBC, without its per-request log lines (they would cost
# Kamailio CPU that a real SBC does not spend) and without the UDP -> TLS direction.
#
#   kamailio_start DIR UDP_PORT TLS_PORT NEXT_HOP(ip:port) PKI_DIR REQUIRE_CLIENT_CERT(yes|no)
#   kamailio_cpu_ticks         # user+system ticks of Kamailio and all its workers so far
#   kamailio_stop
# Sets KAMAILIO_PID and KAMAILIO_LOG.

kamailio_start() {
  local dir=$1 udp=$2 tls=$3 next=$4 pki=$5 verify=$6
  local cfg=$dir/kamailio.cfg tls_cfg=$dir/kamailio-tls.cfg
  mkdir -p "$dir/kamailio.run"
  cat > "$tls_cfg" <<EOF
[server:default]
method = TLSv1.2+
certificate = $pki/server.pem
private_key = $pki/server.key
ca_list = $pki/ca.pem
verify_certificate = $verify
require_certificate = $verify
EOF
  cat > "$cfg" <<EOF
#!KAMAILIO
debug=1
log_stderror=yes
children=2
tcp_children=2
auto_aliases=no
enable_tls=yes
dns=no
rev_dns=no
dns_try_naptr=no
use_dns_failover=off
tcp_connection_lifetime=3600
listen=udp:127.0.0.1:$udp
listen=tls:127.0.0.1:$tls

loadmodule "tls.so"
loadmodule "tm.so"
loadmodule "sl.so"
loadmodule "rr.so"
loadmodule "pv.so"
loadmodule "maxfwd.so"
loadmodule "textops.so"
loadmodule "siputils.so"

modparam("tls", "config", "$tls_cfg")
modparam("tm", "fr_timer", 5000)
modparam("rr", "enable_double_rr", 1)

request_route {
    if (!mf_process_maxfwd_header("10")) {
        sl_send_reply("483", "Too Many Hops");
        exit;
    }
    if (has_totag()) {
        if (loose_route()) {
            route(RELAY);
        }
        if (is_method("ACK")) {
            if (t_check_trans()) {
                route(RELAY);
            }
            exit;
        }
        sl_send_reply("404", "Not here");
        exit;
    }
    if (is_method("CANCEL")) {
        if (t_check_trans()) {
            route(RELAY);
        }
        exit;
    }
    if (is_method("OPTIONS") && \$rU == \$null) {
        sl_send_reply("200", "OK");
        exit;
    }
    record_route();
    \$du = "sip:$next;transport=udp";
    route(RELAY);
}

route[RELAY] {
    if (!t_relay()) {
        sl_reply_error();
    }
    exit;
}
EOF
  local bin=/usr/sbin/kamailio
  [ -x $bin ] || bin=kamailio
  KAMAILIO_LOG=$dir/kamailio.log
  # -DD: foreground, with its worker processes (TLS needs them). -E: log to stderr.
  # Shared memory for ~10 s of transactions at a few thousand calls/s.
  "$bin" -f "$cfg" -DD -E -m 256 -M 16 -Y "$dir/kamailio.run" -w "$dir" < /dev/null > "$KAMAILIO_LOG" 2>&1 &
  KAMAILIO_PID=$!
  # Ready: the UDP port answers an OPTIONS, the TLS port accepts a connection.
  local i
  for i in $(seq 200); do
    if python3 - "$udp" "$tls" <<'PY' 2>/dev/null; then break; fi
import socket, sys
udp, tls = int(sys.argv[1]), int(sys.argv[2])
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(0.1); s.bind(("127.0.0.1", 0))
me = "127.0.0.1:%d" % s.getsockname()[1]
s.sendto(("OPTIONS sip:127.0.0.1:%d SIP/2.0\r\nVia: SIP/2.0/UDP %s;branch=z9hG4bK-ready\r\n"
          "Max-Forwards: 70\r\nFrom: <sip:probe@%s>;tag=r\r\nTo: <sip:127.0.0.1>\r\n"
          "Call-ID: ready@127.0.0.1\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n" % (udp, me, me)).encode(),
         ("127.0.0.1", udp))
assert s.recv(4096).startswith(b"SIP/2.0 200")
socket.create_connection(("127.0.0.1", tls), timeout=0.2).close()
PY
    kill -0 "$KAMAILIO_PID" 2>/dev/null || { echo "kamailio exited:" >&2; cat "$KAMAILIO_LOG" >&2; return 1; }
    sleep 0.05
  done
}

# Kamailio's own CPU and its workers' (its children while it lives), in clock ticks.
kamailio_cpu_ticks() {
  local pids=("$KAMAILIO_PID") t
  for t in /proc/"$KAMAILIO_PID"/task/*/children; do
    # shellcheck disable=SC2207
    pids+=($(cat "$t" 2>/dev/null))
  done
  local sum=0 p
  for p in "${pids[@]}"; do
    [ -r /proc/"$p"/stat ] || continue
    sum=$((sum + $(awk '{print $14 + $15}' /proc/"$p"/stat)))
  done
  echo $sum
}

kamailio_stop() {
  [ -n "${KAMAILIO_PID:-}" ] || return 0
  # SIGTERM to the main process: it stops and reaps its workers.
  kill -TERM "$KAMAILIO_PID" 2>/dev/null || true
  wait "$KAMAILIO_PID" 2>/dev/null || true
  KAMAILIO_PID=
}
