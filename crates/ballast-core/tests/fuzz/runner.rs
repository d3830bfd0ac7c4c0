//! Runs a property for the configured number of cases or time, reports what it ran, and makes a
//! failure easy to reproduce: the shrunk input is printed (bytes as hex) and its seed persisted.

use std::fmt::Debug;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::time::Duration;

use proptest::strategy::Strategy;
use proptest::test_runner::{Config, FileFailurePersistence, TestCaseError, TestError, TestRunner};
use tokio::time::Instant;

/// How many property tests `props` has: they share `BALLAST_FUZZ_SECONDS`.
pub const PROPERTIES: u32 = 11;

/// Cases per property when `BALLAST_FUZZ_CASES` is not set: enough to run every generator and every
/// path a few times in a debug build, in a few seconds.
const DEFAULT_CASES: u64 = 256;

/// Cases per proptest run: a long run is many of these (each replays the persisted failures
/// first), sized to take about [`BATCH_SECONDS`] so a time budget is kept closely.
const FIRST_BATCH: u64 = 64;
const BATCH_SECONDS: f64 = 0.5;

/// Most memory the whole test process may have used at its peak (`VmHWM`), in MiB
/// (`BALLAST_FUZZ_MAX_RSS_MIB`): every input is small, so a decoder that allocated in proportion
/// to a hostile number (and survived) shows here.
const DEFAULT_MAX_RSS_MIB: u64 = 1536;

fn env_u64(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// This property's share of the time budget, if there is one.
fn budget() -> Option<Duration> {
    let total: f64 = std::env::var("BALLAST_FUZZ_SECONDS")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    let threads = env_u64("RUST_TEST_THREADS")
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get() as u64));
    let share = total * threads.min(u64::from(PROPERTIES)) as f64 / f64::from(PROPERTIES);
    Some(Duration::from_secs_f64(share.max(0.1)))
}

/// Runs `test` on inputs from `strategy` until `BALLAST_FUZZ_CASES` cases ran or the budget is
/// spent, whichever comes first; panics with the minimal failing input.
pub fn run<S>(
    name: &'static str,
    strategy: S,
    test: impl Fn(&S::Value) -> Result<(), TestCaseError>,
) where
    S: Strategy,
    S::Value: Debug,
{
    let cases = env_u64("BALLAST_FUZZ_CASES").unwrap_or(DEFAULT_CASES);
    let started = Instant::now();
    let deadline = budget().map(|b| started + b);
    let regressions: &'static str = Box::leak(
        format!(
            "{}/tests/fuzz/regressions/{name}.txt",
            env!("CARGO_MANIFEST_DIR")
        )
        .into_boxed_str(),
    );
    let trace = std::env::var("BALLAST_FUZZ_TRACE")
        .ok()
        .filter(|d| !d.is_empty())
        .map(|dir| {
            let _ = std::fs::create_dir_all(&dir);
            File::create(format!("{dir}/{name}.case")).unwrap()
        });
    let mut ran = 0u64;
    let mut batch = FIRST_BATCH;
    while ran < cases {
        let batch_started = Instant::now();
        batch = batch.min(cases - ran);
        let config = Config {
            cases: u32::try_from(batch).unwrap_or(u32::MAX),
            failure_persistence: Some(Box::new(FileFailurePersistence::Direct(regressions))),
            source_file: Some(file!()),
            // Shrinking a large input through every format can take long; a minute is plenty.
            max_shrink_time: 60_000,
            ..Config::default()
        };
        let mut runner = TestRunner::new(config);
        let result = runner.run(&strategy, |value| {
            if let Some(file) = &trace {
                // Written before the case runs: if it kills the process (an abort on a failed
                // allocation, a stack overflow), the input is on disk.
                let text = format!("{value:#?}\n");
                let _ = file.set_len(0);
                let _ = file.write_all_at(text.as_bytes(), 0);
            }
            test(&value)
        });
        match result {
            Ok(()) => {}
            Err(TestError::Fail(reason, value)) => {
                panic!(
                    "fuzz: {name} failed: {reason}\nminimal failing input:\n{value:#?}\n\
                     (its seed is saved in {regressions}; the next run replays it first)"
                );
            }
            Err(TestError::Abort(reason)) => panic!("fuzz: {name} aborted: {reason}"),
        }
        ran += batch;
        let now = Instant::now();
        if deadline.is_some_and(|d| now >= d) {
            break;
        }
        let rate = batch as f64 / (now - batch_started).as_secs_f64().max(1e-6);
        batch = ((rate * BATCH_SECONDS) as u64).clamp(16, 1 << 16);
        if let Some(d) = deadline {
            // Not much past the deadline either.
            let left = (d - now).as_secs_f64();
            batch = batch.min(((rate * left) as u64).max(16));
        }
    }
    let secs = started.elapsed().as_secs_f64();
    eprintln!(
        "fuzz: {name}: {ran} cases in {secs:.2} s ({:.0} cases/s)",
        ran as f64 / secs.max(1e-9)
    );
    check_peak_memory(name);
}

/// Fails if the process's peak resident memory went over the limit.
fn check_peak_memory(name: &str) {
    let Ok(status) = std::fs::read_to_string("/proc/self/status") else {
        return;
    };
    let peak_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok());
    let limit = env_u64("BALLAST_FUZZ_MAX_RSS_MIB").unwrap_or(DEFAULT_MAX_RSS_MIB);
    if let Some(peak) = peak_kib {
        assert!(
            peak / 1024 <= limit,
            "fuzz: {name}: the process peaked at {} MiB of memory (limit {limit} MiB): something \
             allocated in proportion to a hostile input",
            peak / 1024
        );
    }
}
