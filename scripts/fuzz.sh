#!/usr/bin/env bash
# Short runs of every fuzz target (cargo-fuzz, nightly), the fuzz step of scripts/test.sh.
#
#   scripts/fuzz.sh [SECONDS]     (per target; 30 by default)
#
# Fails (exit 1) when `cargo +nightly fuzz list` fails or names no target, when a target
# fails (a crash, a leak, a timeout), or when it reports no executions. Prints one line per
# target with its total executions and executions per second (libFuzzer's
# -print_final_stats=1), then a table of all targets. Each target's output is kept in
# target/fuzz-logs/TARGET.log.
#
# Each target starts from its committed seeds, fuzz/corpus/TARGET/seed-* (scripts/fuzz-seeds.sh),
# copied into a scratch corpus, target/fuzz-corpus/TARGET, emptied first: what libFuzzer adds
# goes there, so a run never changes the checkout and every run starts from the same seeds.
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_TARGET="${1:-30}"
[[ "$SECONDS_PER_TARGET" =~ ^[1-9][0-9]*$ ]] || { sed -n '2,10p' "$0"; exit 2; }
export PATH="$HOME/.cargo/bin:$PATH"

fail() { echo "fuzz.sh: FAILED: $*" >&2; exit 1; }

# The list first, then the loop: a failing `cargo fuzz list` inside `for t in $(...)` would
# run zero targets and pass.
if ! listing=$(cargo +nightly fuzz list); then
    fail "'cargo +nightly fuzz list' failed: no fuzz target ran"
fi
targets=()
while read -r t; do
    [ -n "$t" ] && targets+=("$t")
done <<< "$listing"
[ "${#targets[@]}" -gt 0 ] || fail "'cargo +nightly fuzz list' names no target: no fuzz target ran"
echo "fuzz targets: ${targets[*]} (${SECONDS_PER_TARGET} s each)"

LOGS=target/fuzz-logs
SCRATCH="$PWD/target/fuzz-corpus"
mkdir -p "$LOGS"
ROWS=()
FAILED=()
for t in "${targets[@]}"; do
    log="$LOGS/$t.log"
    ok=1
    corpus="$SCRATCH/$t"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    seeds=0
    for s in fuzz/corpus/"$t"/seed-*; do
        [ -f "$s" ] || continue
        cp "$s" "$corpus/"
        seeds=$((seeds + 1))
    done
    echo "fuzz $t: running for ${SECONDS_PER_TARGET} s from $seeds seeds (output in $log)"
    cargo +nightly fuzz run "$t" "$corpus" -- -max_total_time="$SECONDS_PER_TARGET" \
        -rss_limit_mb=2048 -print_final_stats=1 > "$log" 2>&1 || ok=0
    execs=$(awk '/^stat::number_of_executed_units:/ {print $2}' "$log" | tail -n 1)
    per_sec=$(awk '/^stat::average_exec_per_sec:/ {print $2}' "$log" | tail -n 1)
    if [ "$ok" -eq 0 ]; then
        tail -n 40 "$log" >&2
        status="FAILED (see $log)"
    elif ! [[ "$execs" =~ ^[1-9][0-9]*$ ]]; then
        status="FAILED: no executions reported (see $log)"
    else
        status=ok
    fi
    [ "$status" = ok ] || FAILED+=("$t")
    echo "fuzz $t: ${execs:-?} executions, ${per_sec:-?} exec/s, $status"
    ROWS+=("| $t | ${execs:-?} | ${per_sec:-?} | $status |")
done

echo
echo "| fuzz target | executions | exec/s | result |"
echo "|---|---|---|---|"
printf '%s\n' "${ROWS[@]}"
[ "${#FAILED[@]}" -eq 0 ] || fail "${FAILED[*]}"
