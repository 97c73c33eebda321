#!/usr/bin/env bash
# A fuzzing campaign (issue 19; docs/fuzzing.md): each target for SECONDS in turn, from a corpus
# outside the repository that grows from run to run (CAMPAIGN_DIR, default
# /var/tmp/sosdesk-fuzz-campaign, seeded from fuzz/corpus), and one Markdown table row per target:
# executions, executions per second, libFuzzer's coverage (edges `cov` and features `ft`) at the
# start, from the seeds, and at the end, the corpus size and the findings. The targets are the ones
# `fuzz/run.sh` builds (its dev profile: debug assertions and overflow checks on).
#   bench/fuzz-campaign.sh [SECONDS] [TARGET...]     # default: 3600 s, every target
# A finding stops nothing: its input is left in fuzz/artifacts/<target>/ and counted in the row.
set -euo pipefail
seconds="${1:-3600}"
shift || true
root="$(cd "$(dirname "$0")/.." && pwd)"
campaign="${CAMPAIGN_DIR:-/var/tmp/sosdesk-fuzz-campaign}"
target_dir="${CARGO_TARGET_DIR:-$root/target}/fuzz"
triple="$(rustc -vV | sed -n 's/^host: //p')"
bin="$target_dir/$triple/debug"

# Builds every target (and runs each 1 s from the committed corpus), unless FUZZ_BUILT is set.
[ -n "${FUZZ_BUILT:-}" ] || "$root/fuzz/run.sh" 1 >/dev/null

targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    targets=()
    for f in "$root"/fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$f" .rs)"); done
fi

echo "| target | seconds | executions | per second | edges (cov) at start | at end | of instrumented | features (ft) start → end | corpus | findings (oom/timeout/crash) |"
echo "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
for t in "${targets[@]}"; do
    mkdir -p "$campaign/$t" "$root/fuzz/artifacts/$t"
    cp -Rn "$root/fuzz/corpus/$t/." "$campaign/$t/" 2>/dev/null || true
    dict=()
    [ -f "$root/fuzz/dict/$t.dict" ] && dict=("-dict=$root/fuzz/dict/$t.dict")
    # Coverage of the committed seeds alone: what the campaign starts from in CI.
    seeds_log="$campaign/$t.seeds.log"
    "$bin/$t" "$root/fuzz/corpus/$t" -runs=0 -max_len=65536 >"$seeds_log" 2>&1 || true
    start_cov=$(grep -m1 'INITED' "$seeds_log" | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\1/')
    start_ft=$(grep -m1 'INITED' "$seeds_log" | sed -E 's/.*cov: ([0-9]+) ft: ([0-9]+).*/\2/')
    edges=$(grep -m1 'inline 8-bit counters' "$seeds_log" | sed -E 's/.*\(([0-9]+) inline.*/\1/')
    # -fork=1 with -ignore_*: a finding is saved and the campaign goes on; -max_len: inputs as
    # long as the largest a peer may send in one datagram.
    log="$campaign/$t.log"
    "$bin/$t" "$campaign/$t" "${dict[@]}" -fork=1 -ignore_crashes=1 -ignore_timeouts=1 -ignore_ooms=1 \
        -max_len=65536 -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 \
        -artifact_prefix="$root/fuzz/artifacts/$t/" >"$log" 2>&1 || true
    last=$(grep -E '^#[0-9]+: cov: ' "$log" | tail -1)
    runs=$(sed -E 's/^#([0-9]+):.*/\1/' <<<"$last")
    cov=$(sed -E 's/.*cov: ([0-9]+) .*/\1/' <<<"$last")
    ft=$(sed -E 's/.*ft: ([0-9]+) .*/\1/' <<<"$last")
    found=$(sed -E 's/.*oom\/timeout\/crash: ([0-9\/]+) .*/\1/' <<<"$last")
    echo "| \`$t\` | $seconds | $runs | $((runs / seconds)) | $start_cov | $cov | $edges | $start_ft → $ft | $(ls "$campaign/$t" | wc -l) | $found |"
done
