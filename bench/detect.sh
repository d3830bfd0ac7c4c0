#!/usr/bin/env bash
# bench/detect.sh: time to detect. For each fault (connection refused, 5xx, a hang, errors 0.5% -> 16%, wrong
# script in 5% and 1% of answers, time to first token doubled, an idle target gone down, looping, empty,
# token-limit-cut and broken-JSON answers), fresh `ballast serve`
# + `ballast sim` processes, open-loop traffic, a warm-up, the fault injected at run time, and the seconds until
# GET /admin/incidents lists an incident for the faulted target; plus detection to ejection (eject on) and a
# clean-traffic check for false alarms. See bench/README.md ("Time to detect"); all the work is in
# bench/detect.py.
#   bench/detect.sh                     # defaults: 3 runs per fault, ~10 min
#   DETECT_RUNS=20 bench/detect.sh      # the p95 figures
# Only 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${BALLAST_BIN:-}" ]]; then
    cargo build --release --bin ballast
    BALLAST_BIN=target/release/ballast
fi
export BALLAST_BIN

pid=""
cleanup() {
    if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null; then
        kill -TERM "$pid" 2>/dev/null || true
        for _ in $(seq 1 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# A hard limit above the script's own (DETECT_TIMEOUT, 1800 s by default).
limit=$(( ${DETECT_TIMEOUT:-1800} + 120 ))
timeout --signal=TERM --kill-after=30 "$limit" python3 bench/detect.py &
pid=$!
wait "$pid"
