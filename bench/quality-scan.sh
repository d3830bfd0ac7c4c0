#!/usr/bin/env bash
# bench/quality-scan.sh: what the output-quality scanners cost per byte of answer text (they run on every
# streamed chunk): Repetition::feed and JsonCheck::feed over ~1 MB of mixed text in 16-byte deltas, release
# build, best of 5. Prints ns/byte. The measurement is an ignored test in crates/ballast-core/src/quality/tests.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo test --release --locked -p ballast-core --lib quality::tests::throughput -- --ignored --nocapture 2>&1 |
    grep -E "ns/byte|test result"
