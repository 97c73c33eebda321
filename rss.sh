#!/bin/bash
# usage: rss.sh <binary> [settle-seconds]; env passes through. Starts the app on $DISPLAY, waits, sums RSS/PSS of it and its children.
BIN=$1; SETTLE=${2:-10}
"$BIN" > /dev/null 2>&1 & APP=$!
sleep $SETTLE
PIDS="$APP $(pgrep -P $APP | tr '\n' ' ')"
ps -o pid=,rss=,comm= -p $(echo $PIDS | tr ' ' ',')
ps -o rss= -p $(echo $PIDS | tr ' ' ',') | awk '{s+=$1} END {printf "RSS sum: %.1f MiB\n", s/1024}'
for p in $PIDS; do awk '/^Pss:/{print $2}' /proc/$p/smaps_rollup; done | awk '{s+=$1} END {printf "PSS sum: %.1f MiB\n", s/1024}'
kill $APP; wait $APP 2>/dev/null
