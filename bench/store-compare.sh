#!/usr/bin/env bash
# The wire benchmark of bench/sipp-load.sh (sipp caller -> sosdesk -> sipp provider, tcpdump on
# loopback, bench/latency.py for INVITE in -> INVITE out) run against each store in turn, with
# the same binary in the same run (issue 14 item 9): SQLite (the lab's file, synchronous=FULL)
# and PostgreSQL (a throwaway cluster started here on 127.0.0.1, durable as a real server:
# fsync=on, synchronous_commit=on, full_page_writes=on, the defaults).
#   bash bench/store-compare.sh [SECONDS_PER_RATE] [RATES...]        (default 8 100 500 1000)
#   SOSDESK_BENCH_STORES="sqlite postgres postgres sqlite": the stores and their order
#   SOSDESK_BENCH_BIN=path: measure that binary (default: a release build of this tree)
#   SOSDESK_BENCH_ROUTE=elin: the calls come from the lab's warehouse (127.0.0.4) and go out
#     through its ELIN gateway (two ELINs, each held for the callback window: every call takes
#     over the oldest mapping); on PostgreSQL each ELIN is claimed in the store first
# Prints one line per store and rate: the calls sipp counted answered/failed, the latency line of
# bench/latency.py, sosdesk's CPU per call, and whether the audit writer kept up: audit rows
# and call summaries written for the rate's calls, how many of the events that had happened when
# the callers stopped were not committed yet (the writer's backlog), and when the last row came
# (later rows are mostly the notification retries to the lab's unreachable second URI). Each store's run ends with `sosdesk audit verify` over its whole log.
# Traffic stays on 127.0.0.1. Needs root (loopback capture; PostgreSQL then runs as nobody).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-8}
shift || true
rates=("$@")
[ ${#rates[@]} -gt 0 ] || rates=(100 500 1000)
read -r -a stores <<< "${SOSDESK_BENCH_STORES:-sqlite postgres}"

bash scripts/ensure-packages.sh sip-tester tcpdump postgresql
if [ -n "${SOSDESK_BENCH_BIN:-}" ]; then
  bin=$SOSDESK_BENCH_BIN
else
  cargo build --release --locked --bin sosdesk
  bin="${CARGO_TARGET_DIR:-target}/release/sosdesk"
fi
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)

work=$(mktemp -d)
chmod 755 "$work"
SOS=27060; PROV=27070; NOTE=27090; PG=27432
route=${SOSDESK_BENCH_ROUTE:-trunk}
caller_ip=127.0.0.1
# The ELIN gateway is the first route of the warehouse's policy; sipp plays it on PROV.
# Its INVITEs carry the ELIN, not the caller's number: latency.py pairs them by rank in time.
[ "$route" = elin ] && { caller_ip=127.0.0.4; PROV=27075; in_order=--in-order; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# --- PostgreSQL: its own cluster, as nobody (PostgreSQL refuses root), password auth on TCP ---
mkdir -p "$work/pg"; echo pw-bench > "$work/pg/pw"; chown -R nobody:nogroup "$work/pg"
as_pg() { setpriv --reuid=nobody --regid=nogroup --clear-groups "$@"; }
as_pg "$pgbin/initdb" -D "$work/pg/data" -U sosdesk --auth-local=trust --auth-host=scram-sha-256 \
  -E UTF8 --locale=C.UTF-8 --pwfile="$work/pg/pw" > "$work/pg/initdb.log"
# Durability as a real server has it: fsync, synchronous_commit and full_page_writes stay on
# (the defaults); nothing tuned beyond the listen address.
as_pg "$pgbin/postgres" -D "$work/pg/data" -k "$work/pg/data" -h 127.0.0.1 -p $PG \
  > "$work/pg/postgres.log" 2>&1 & pids+=($!)
for _ in $(seq 100); do "$pgbin/pg_isready" -q -h 127.0.0.1 -p $PG && break; sleep 0.1; done
psql_pg() { "$pgbin/psql" -h "$work/pg/data" -p $PG -U sosdesk -X -q -t -A -v ON_ERROR_STOP=1 "$@"; }
echo "PostgreSQL $(psql_pg -d postgres -c 'SHOW server_version'):" \
  "fsync=$(psql_pg -d postgres -c 'SHOW fsync') synchronous_commit=$(psql_pg -d postgres -c 'SHOW synchronous_commit')" \
  "full_page_writes=$(psql_pg -d postgres -c 'SHOW full_page_writes') shared_buffers=$(psql_pg -d postgres -c 'SHOW shared_buffers')"

# The CPU ticks of the PostgreSQL server (the postmaster and its backends, which do in their
# own processes what SQLite does inside sosdesk's).
pg_ticks() {
  local t=0 p pm
  pm=$(head -1 "$work/pg/data/postmaster.pid")
  for p in $pm $(pgrep -P "$pm"); do t=$((t + $(awk '{print $14 + $15}' /proc/$p/stat 2>/dev/null || echo 0))); done
  echo $t
}
# sql STORE QUERY: runs QUERY on the store's log.
sql() {
  if [ "$1" = sqlite ]; then sqlite3 "$work/run/audit.db" "$2"; else psql_pg -d "$db" -c "$2"; fi
}
# rows STORE: "<audit rows> <call summaries>".
rows() { sql "$1" "SELECT (SELECT count(*) FROM events) || ' ' || (SELECT count(*) FROM calls)"; }

n_run=0
echo "route: $route (calls from $caller_ip)"
echo "store  rate_per_s  sipp_ok sipp_failed  capture  cpu  audit"
for store in "${stores[@]}"; do
  n_run=$((n_run + 1))
  rm -rf "$work/run"; mkdir -p "$work/run"
  sed -e "s/127.0.0.1:5060\"/127.0.0.1:$SOS\"/" -e "s/127.0.0.1:5070\"/127.0.0.1:$PROV\"/" \
      -e "s/127.0.0.1:5090/127.0.0.1:$NOTE/g" -e "s/127.0.0.1:8443/127.0.0.1:27443/" \
      -e "s/127.0.0.1:8080/127.0.0.1:27080/" -e "s/127.0.0.1:5080\"/127.0.0.1:$PROV\"/" \
      examples/lab.toml > "$work/run/bench.toml"
  if [ "$store" = sqlite ]; then
    sed -i "s#^path = \"../sosdesk-lab.db\"#path = \"$work/run/audit.db\"#" "$work/run/bench.toml"
    verify=(--store "$work/run/audit.db")
  else
    db="bench$n_run"
    psql_pg -d postgres -c "CREATE DATABASE $db"
    sed -i "s#^path = \"../sosdesk-lab.db\"#url = \"postgres://sosdesk:pw-bench@127.0.0.1:$PG/$db\"\nnode = \"bench\"#" \
      "$work/run/bench.toml"
    verify=(--config "$work/run/bench.toml")
  fi
  # The previous store's recordings and log are flushed and out of the page cache (see
  # BENCHMARKS.md, "Wire A/B": leftover dirty pages slowed whichever run came second).
  sync; echo 3 > /proc/sys/vm/drop_caches
  SOSDESK_LOG=warn "$bin" serve --config "$work/run/bench.toml" > "$work/run/core.log" 2>&1 &
  core=$!; pids+=($core)
  sipp -sn uas -i 127.0.0.1 -p $PROV -nostdin > /dev/null 2>&1 & uas=$!; pids+=($uas)
  sipp -sf tests/sipp/notify_receiver.xml -i 127.0.0.1 -p $NOTE -nostdin > /dev/null 2>&1 & note=$!; pids+=($note)
  for _ in $(seq 200); do grep -q serving "$work/run/core.log" && break; sleep 0.05; done
  grep -q serving "$work/run/core.log" || { echo "sosdesk did not start:" >&2; cat "$work/run/core.log" >&2; exit 1; }
  for rate in "${rates[@]}"; do
    pcap="$work/run/r$rate.pcap"
    tcpdump -i lo -nn -B 65536 -w "$pcap" "udp and (dst port $SOS or dst port $PROV or dst port $NOTE)" > "$work/run/tcpdump.log" 2>&1 &
    tcpd=$!
    for _ in $(seq 100); do grep -q listening "$work/run/tcpdump.log" && break; sleep 0.05; done
    read -r ev0 calls0 < <(rows "$store")
    n=$((rate * secs))
    cpu0=$(awk '{print $14 + $15}' /proc/$core/stat); pg0=$(pg_ticks)
    sipp -sf bench/caller.xml 127.0.0.1:$SOS -i $caller_ip -p 27062 -r "$rate" -m "$n" -l 100000 \
         -timeout $((secs + 30)) -nostdin -trace_stat -stf "$work/run/stat$rate.csv" > /dev/null 2>&1 || true
    end_ms=$(date +%s%3N); end_at=$(date -u +%Y-%m-%dT%H:%M:%S.%NZ)
    cpu1=$(awk '{print $14 + $15}' /proc/$core/stat); pg1=$(pg_ticks)
    # The audit: rows at the callers' end, then polled every 100 ms until unchanged for 1 s.
    before_end="SELECT count(*) FROM events WHERE at <= '$end_at'"
    last=$(rows "$store") last_ms=$end_ms stable=0 committed_at_end=$(sql "$store" "$before_end")
    read -r ev_end _ <<< "$last"
    while [ $stable -lt 10 ]; do
      cur=$(rows "$store")
      if [ "$cur" = "$last" ]; then stable=$((stable + 1)); else stable=0; last=$cur; last_ms=$(date +%s%3N); fi
      sleep 0.1
    done
    read -r ev1 calls1 <<< "$last"
    # The writer's backlog when the callers stopped: events that had happened by then (their
    # time, `at`) but were not yet committed (the same text format, so compared as text).
    backlog=$(( $(sql "$store" "$before_end") - committed_at_end ))
    kill -INT $tcpd; wait $tcpd 2>/dev/null || true
    read -r ok failed < <(python3 - "$work/run/stat$rate.csv" <<'PY'
import sys
rows = [l.rstrip("\n").split(";") for l in open(sys.argv[1]) if l.strip()]
h, last = rows[0], rows[-1]
print(last[h.index("SuccessfulCall(C)")], last[h.index("FailedCall(C)")])
PY
)
    drops=$(grep -o '[0-9]* packets dropped by kernel' "$work/run/tcpdump.log" || true)
    cpu_us=$(( (cpu1 - cpu0) * 1000000 / $(getconf CLK_TCK) / (ok + failed > 0 ? ok + failed : 1) ))
    pg_us=$(( (pg1 - pg0) * 1000000 / $(getconf CLK_TCK) / (ok + failed > 0 ? ok + failed : 1) ))
    echo "$store  $rate  $ok $failed  $(python3 bench/latency.py "$pcap" $SOS $PROV $NOTE ${in_order:-})" \
         "sosdesk_cpu_per_call_us=$cpu_us postgres_cpu_per_call_us=$pg_us" \
         "audit_rows=$((ev1 - ev0)) (at callers' end $((ev_end - ev0)), not yet committed then $backlog)" \
         "call_summaries=$((calls1 - calls0)) last_row_after_callers_end_ms=$((last_ms - end_ms)) ${drops:+($drops)}"
  done
  kill $core $uas $note; wait $core $uas $note 2>/dev/null || true
  echo "$store: $("$bin" audit verify "${verify[@]}" 2>&1 | tail -1)"
done
