#!/usr/bin/env bash
# bench/continuation.sh: the added time of a stream continued on a fallback after its primary was cut
# mid-answer, against the same stream unbroken (see bench/continuation.py and bench/README.md).
#   bench/continuation.sh
#   CONT_ROUNDS=30 CONT_TTFT_MS=300 CONT_TOKEN_MS=20 bench/continuation.sh
# Only 127.0.0.1; every process started here is stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ -z "${BALLAST_BIN:-}" ]]; then
    cargo build --release --bin ballast
    BALLAST_BIN=target/release/ballast
fi
export BALLAST_BIN
timeout --signal=TERM --kill-after=10 600 python3 bench/continuation.py
