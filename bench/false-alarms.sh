#!/usr/bin/env bash
# bench/false-alarms.sh: how often Ballast's detectors raise an alarm on clean traffic. Replays DAYS simulated days
# (default 30) of clean traffic at 10 attempts a second through every detector — availability, hard failure, latency,
# wrong script, answer length, stop reason, repetition and invalid JSON — on an injected clock, in a release build,
# and prints the alarms each raised. Attempts: a diurnal swing in failure ratio and latency, 1% latency spikes of
# 3-8x, scattered failures. Answers: log-normal lengths (spread 1.0) of two kinds, chat replies and documents, whose
# mix drifts over the day while the medians swing +/-30%; 2-5% token-limit stops swinging over the day; 0.05% with a
# legitimate foreign script (Han, Greek, Cyrillic, Kana and six more, in realistic shares); 0.1% that repeat
# themselves; a fifth asking for JSON, 0.2% of those not valid JSON.
# The goal: at most one alarm per detector in 30 days. SEEDS independent replays (default 1) give the rate over
# SEEDS x DAYS days, with a total line.
#   bench/false-alarms.sh [DAYS] [SEEDS]
set -euo pipefail
cd "$(dirname "$0")/.."
days="${1:-30}"
seeds="${2:-1}"
BALLAST_REPLAY_DAYS="$days" BALLAST_REPLAY_SEEDS="$seeds" cargo test --release --locked -p ballast-core --lib \
    signal::tests::clean_traffic_raises_no_alarm -- --nocapture 2>&1 |
    grep -E "simulated days|test result|panicked"
