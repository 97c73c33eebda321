#!/usr/bin/env bash
# The fuzz targets in CI (issue 19; docs/fuzzing.md): build every target of fuzz/ with libFuzzer
# through cargo-fuzz on stable Rust (no sanitizer: sosdesk has no unsafe code, and sanitizers need
# nightly), then run each for SECONDS (default 5) from its committed corpus, copied to a temporary
# folder so that a run never writes into the repository. Any crash, panic, failed assertion,
# timeout or memory blow-up fails the script; the input that did it is saved in
# fuzz/artifacts/<target>/ and printed, ready to be added to the corpus with its fix.
#   fuzz/run.sh [SECONDS] [TARGET...]
set -euo pipefail
seconds="${1:-5}"
shift || true
cd "$(dirname "$0")"
fuzz_dir="$PWD"

# cargo-fuzz, pinned, installed when missing (about half a minute from crates.io).
CARGO_FUZZ_VERSION=0.13.2
if ! cargo fuzz --version 2>/dev/null | grep -q "cargo-fuzz $CARGO_FUZZ_VERSION\b"; then
    echo "fuzz: installing cargo-fuzz $CARGO_FUZZ_VERSION" >&2
    cargo install cargo-fuzz --version "$CARGO_FUZZ_VERSION" --locked --quiet
fi

# The project's dependency versions, before any cargo command here resolves its own (see below).
cp "$fuzz_dir/../Cargo.lock" "$fuzz_dir/Cargo.lock"

# Built beside the project's own build (its folder is ignored by git), out of the way of it.
target_dir="${CARGO_TARGET_DIR:-$fuzz_dir/../target}/fuzz"
triple="$(rustc -vV | sed -n 's/^host: //p')"
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
    mapfile -t targets < <(cargo fuzz list)
fi

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

echo "== fuzz: building the targets"
# --sanitizer none: no -Z flag, so stable rustc builds it. --dev: fuzz/Cargo.toml's dev profile
# (opt-level 1, debug assertions and overflow checks, as the tests run) with 16 codegen units
# builds cold in half the time of cargo-fuzz's release default (3 min against 6.5 on 2 cores) and
# runs 10-20% slower: the better trade for a few seconds per target. The dependency versions are
# the project's own: fuzz/Cargo.lock is its Cargo.lock plus the two pinned fuzzing crates, so
# the fuzzers build the very dependency versions sosdesk ships, and adding a dependency to sosdesk
# never leaves a second lock file stale (it is written at the top of this script).
cargo fuzz build --sanitizer none --dev --codegen-units 16 --target-dir "$target_dir" >/dev/null 2>"$work/build.log" \
    || { cat "$work/build.log" >&2; exit 1; }

failed=()
for t in "${targets[@]}"; do
    mkdir -p "$work/$t" "$fuzz_dir/artifacts/$t"
    cp -R "$fuzz_dir/corpus/$t/." "$work/$t/" 2>/dev/null || true
    dict=()
    [ -f "$fuzz_dir/dict/$t.dict" ] && dict=("-dict=$fuzz_dir/dict/$t.dict")
    log="$work/$t.log"
    if "$target_dir/$triple/debug/$t" "$work/$t" "${dict[@]}" \
        -max_total_time="$seconds" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        -artifact_prefix="$fuzz_dir/artifacts/$t/" >"$log" 2>&1; then
        runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
        per_s=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log")
        echo "fuzz: $t: OK, $runs runs in ${seconds} s ($per_s/s), corpus $(ls "$work/$t" | wc -l) inputs"
    else
        echo "fuzz: $t: FAILED" >&2
        # The panic (its message, without the backtrace) and libFuzzer's verdict, or the end of
        # the log for anything else (a timeout, memory).
        report="$(sed -n '/panicked at/,/^stack backtrace:/p' "$log" | head -60
            grep -E '^SUMMARY|ERROR: libFuzzer|^artifact_prefix|^Base64' "$log")"
        if [ -n "$report" ]; then echo "$report" >&2; else grep -v '^#[0-9]' "$log" | tail -40 >&2; fi
        failed+=("$t")
    fi
done
if [ ${#failed[@]} -gt 0 ]; then
    echo "fuzz: ${#failed[@]} target(s) failed: ${failed[*]} (inputs in fuzz/artifacts/; docs/fuzzing.md)" >&2
    exit 1
fi
echo "fuzz: ${#targets[@]} targets, no failure"
