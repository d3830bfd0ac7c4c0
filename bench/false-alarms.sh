#!/usr/bin/env bash
# bench/false-alarms.sh: how often Ballast's detectors raise an alarm on clean traffic. Replays DAYS simulated days
# (default 30) of clean traffic at 10 attempts a second (a diurnal swing in failure ratio and latency, 1% latency
# spikes of 3-8x, scattered failures) through the availability, hard-failure and latency detectors on an injected
# clock, in a release build, and prints the alarms each raised. The goal: at most one per detector in 30 days.
#   bench/false-alarms.sh [DAYS]
set -euo pipefail
cd "$(dirname "$0")/.."
days="${1:-30}"
BALLAST_REPLAY_DAYS="$days" cargo test --release --locked -p ballast-core --lib \
    signal::tests::clean_traffic_raises_no_alarm -- --nocapture 2>&1 |
    grep -E "simulated days|test result"
