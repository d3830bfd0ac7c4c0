//! `ballast-loadgen`: HTTP/1.1 keep-alive load at a fixed rate (open loop) or a fixed concurrency (closed loop).
//!
//! The binary parses flags, builds the runtime and hands over to [`open_loop`] or [`closed_loop`]; both
//! record into [`stats::Recorder`]s that are merged into one JSON report. Every run stops by itself: the
//! measured window is bounded by `--duration`, the number of requests by `--max-requests`, and in-flight work
//! by `--drain` after the window closes.

mod closed_loop;
mod conn;
mod open_loop;
mod stats;

use std::{path::PathBuf, process::ExitCode, sync::Arc, time::Duration};

use clap::{ArgGroup, Parser};

use crate::{conn::Target, stats::Report};

/// Longest run accepted (warmup plus duration), so a typo cannot start an hour-long load.
const MAX_RUN: Duration = Duration::from_secs(600);

/// HTTP/1.1 load generator for Ballast's benchmarks.
///
/// Open loop (`--rate`): requests are scheduled at fixed intervals and latency is measured from each request's
/// scheduled send time, so a slow server cannot hide its stalls by slowing the generator down (coordinated
/// omission). Closed loop (`--concurrency`): C connections each send the next request as soon as the previous one
/// is answered; the achieved rate is the throughput.
#[derive(Debug, Parser)]
#[command(name = "ballast-loadgen", version)]
#[command(group(ArgGroup::new("mode").required(true).args(["rate", "concurrency"])))]
struct Args {
    /// Target URL (http:// only), e.g. http://127.0.0.1:8080/v1/chat/completions
    #[arg(long)]
    url: String,
    /// File whose bytes are sent as the request body (POST by default). Without it the body is empty.
    #[arg(long)]
    body: Option<PathBuf>,
    /// Request header as `name:value` (repeatable). `content-type: application/json` is added when a body is
    /// given and no content-type is.
    #[arg(long = "header", short = 'H')]
    headers: Vec<String>,
    /// HTTP method.
    #[arg(long, default_value = "POST")]
    method: String,
    /// Open loop: requests per second, scheduled at fixed intervals.
    #[arg(long)]
    rate: Option<f64>,
    /// Closed loop: number of connections, each with one request in flight.
    #[arg(long)]
    concurrency: Option<usize>,
    /// Measured window, in seconds (after the warmup).
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Warmup, in seconds: load is applied but not recorded.
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop only: keep-alive connections, which bound the requests in flight. Requests due while all are busy
    /// wait in a queue of the same size (their wait counts in their latency).
    #[arg(long, default_value_t = 64)]
    connections: usize,
    /// Per-request timeout, in seconds (a timeout counts as an error).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// After the window closes, how long in-flight requests may take to finish before they are abandoned, in seconds.
    #[arg(long, default_value_t = 5.0)]
    drain: f64,
    /// Hard cap on the number of requests sent (warmup included).
    #[arg(long, default_value_t = 5_000_000)]
    max_requests: u64,
    /// Runtime worker threads for the client (the open loop's scheduler has a thread of its own).
    #[arg(long, default_value_t = 1)]
    threads: usize,
    /// Label copied into the report (e.g. `direct`, `nginx`, `ballast`).
    #[arg(long, default_value = "")]
    label: String,
    /// Also write the JSON report to this file.
    #[arg(long)]
    out: Option<PathBuf>,
}

/// What a run was asked to do, after validation.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Plan {
    pub warmup: Duration,
    pub duration: Duration,
    pub timeout: Duration,
    pub drain: Duration,
    pub max_requests: u64,
}

fn seconds(name: &str, value: f64) -> Result<Duration, String> {
    Duration::try_from_secs_f64(value).map_err(|e| format!("--{name} {value}: {e}"))
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("ballast-loadgen: error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let plan = Plan {
        warmup: seconds("warmup", args.warmup)?,
        duration: seconds("duration", args.duration)?,
        timeout: seconds("timeout", args.timeout)?,
        drain: seconds("drain", args.drain)?,
        max_requests: args.max_requests,
    };
    if plan.duration.is_zero() {
        return Err("--duration must be above 0".into());
    }
    if plan.warmup + plan.duration > MAX_RUN {
        return Err(format!(
            "--warmup plus --duration must stay under {} s",
            MAX_RUN.as_secs()
        ));
    }
    let body = match &args.body {
        Some(path) => std::fs::read(path).map_err(|e| format!("--body {}: {e}", path.display()))?,
        None => Vec::new(),
    };
    let target = Arc::new(Target::new(&args.url, &args.method, &args.headers, body)?);

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;

    let report: Report = match (args.rate, args.concurrency) {
        (Some(rate), None) => {
            if !(rate.is_finite() && rate > 0.0 && rate <= 1_000_000.0) {
                return Err(format!("--rate {rate}: must be in (0, 1000000]"));
            }
            if args.connections == 0 {
                return Err("--connections must be at least 1".into());
            }
            runtime.block_on(open_loop::run(target, plan, rate, args.connections))?
        }
        (None, Some(concurrency)) => {
            if concurrency == 0 || concurrency > 10_000 {
                return Err(format!("--concurrency {concurrency}: must be in 1..=10000"));
            }
            runtime.block_on(closed_loop::run(target, plan, concurrency))?
        }
        _ => return Err("give exactly one of --rate and --concurrency".into()),
    };
    // Abandoned tasks (past the drain) are cancelled here rather than waited for.
    runtime.shutdown_timeout(Duration::from_millis(100));

    eprintln!("{}", report.human_line(&args.label));
    let json = report.to_json(&args.label, &args.url);
    let text = serde_json::to_string_pretty(&json)
        .map_err(|e| format!("cannot encode the report: {e}"))?;
    println!("{text}");
    if let Some(path) = &args.out {
        std::fs::write(path, format!("{text}\n"))
            .map_err(|e| format!("--out {}: {e}", path.display()))?;
    }
    Ok(())
}
