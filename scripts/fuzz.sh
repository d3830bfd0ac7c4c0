#!/usr/bin/env bash
# Fuzzes everything in ballast-core that reads bytes from clients and providers: the hostile-input
# suite (crates/ballast-core/tests/fuzz, 11 properties and the regression tests) in release mode.
#
#   scripts/fuzz.sh [CASES] [SECONDS]
#
#   CASES    cases per property; default 1000000
#   SECONDS  time budget for the whole run; default 180, 0 for none. Each property gets its share
#            (they run in parallel, one per test thread) and stops there even if it has not run
#            CASES yet. So by default a run takes about three minutes and runs a few million cases;
#            `scripts/fuzz.sh 20000 0` runs exactly 20 000 cases of each property.
#
# Environment: FUZZ_THREADS (test threads, default: the number of CPUs), FUZZ_TRACE=0 (do not write
# each case to disk before running it: about a third faster, but a crash that kills the process then
# leaves no input behind), BALLAST_FUZZ_MAX_RSS_MIB (peak memory the process may reach, default 1536).
#
# Prints each property's count and rate, then the total cases run and cases/s. On a failure,
# proptest's minimal failing input is printed (bytes also as hex) and its seed saved under
# crates/ballast-core/tests/fuzz/regressions/ (replayed first by every later run, `cargo test`
# included). If the process dies instead (an abort on a failed allocation, a stack overflow), the
# inputs each property was running are printed from target/fuzz-trace/.
set -euo pipefail
cd "$(dirname "$0")/.."

cases="${1:-1000000}"
seconds="${2:-180}"
[ "$seconds" = 0 ] && seconds=""
threads="${FUZZ_THREADS:-$(nproc 2>/dev/null || echo 2)}"
trace_dir="$PWD/target/fuzz-trace"
log="$PWD/target/fuzz.log"

echo "fuzz: building (release)…"
# The test binary is run directly, so the time measured is the fuzzing alone (no build, no wait on
# cargo's lock).
bin=$(cargo test --release -p ballast-core --test fuzz --no-run --message-format=json-render-diagnostics \
    | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' | tail -n 1)
if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    echo "fuzz: could not find the test binary" >&2
    exit 1
fi

rm -rf "$trace_dir"
mkdir -p "$trace_dir"
trace="$trace_dir"
[ "${FUZZ_TRACE:-1}" = 0 ] && trace=""
echo "fuzz: $cases cases per property${seconds:+, at most ${seconds} s}, $threads threads"
start=$(date +%s.%N)
set +e
BALLAST_FUZZ_CASES="$cases" BALLAST_FUZZ_SECONDS="$seconds" BALLAST_FUZZ_TRACE="$trace" \
    RUST_TEST_THREADS="$threads" RUST_BACKTRACE="${RUST_BACKTRACE:-0}" \
    "$bin" --nocapture 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
end=$(date +%s.%N)

total=$(sed -n 's/^fuzz: [a-z_]*: \([0-9]*\) cases in.*/\1/p' "$log" | awk '{s += $1} END {print s + 0}')
awk -v n="$total" -v a="$start" -v b="$end" 'BEGIN {
    t = b - a; printf "fuzz: %d cases in %.1f s: %.0f cases/s\n", n, t, (t > 0 ? n / t : 0)
}'

if [ "$status" -ne 0 ]; then
    if grep -q "minimal failing input" "$log"; then
        echo "fuzz: FAILED — the minimal failing input is printed above; its seed is saved under crates/ballast-core/tests/fuzz/regressions/"
    else
        echo "fuzz: FAILED — the test process died; the inputs the properties were running:"
        for f in "$trace_dir"/*.case; do
            [ -e "$f" ] || continue
            echo "== ${f##*/}"
            head -c 65536 "$f"
            echo
        done
    fi
    exit "$status"
fi
