//! Ballast's provider simulator: fake Anthropic, OpenAI and Gemini APIs on one port, with fault injection.
//!
//! The simulator answers at the real APIs' paths with bodies and event streams shaped like the real
//! ones, so the official SDKs parse everything it sends. Answers are deterministic: the same
//! conversation sent to a simulator started with the same seed always gets the same answer, through
//! any of its APIs and under any model name. Faults (connection refusal,
//! hangs, error statuses, rate limits, slowness, truncated and corrupted answers, degraded answers —
//! empty, looping, cut at a token limit, broken JSON — and hostile bytes: huge numbers, endless events
//! and headers, invalid UTF-8, deep nesting, trickles) are decided per
//! request with a seeded random generator and can be changed at run time, through [`SimHandle`] or the
//! HTTP control plane under `/_sim/`. Streams can be cut after a chosen number of tokens (ending
//! cleanly, with a cut connection, with the provider's mid-stream error event, or in silence), open
//! and fall silent, and prefills can be refused, to exercise mid-stream failover; a request that asks
//! to continue an answer (an assistant prefill, or an assistant turn then a user turn asking to
//! continue) gets exactly the rest of it. OpenAI and Anthropic answers carry the providers'
//! rate-limit headers, from buckets whose limits can be changed (and enforced) at run time.
//!
//! It serves the gateway's tests (start on port 0, assert on [`SimHandle::recent_requests`]),
//! `ballast demo`, the benchmarks, and users who run `ballast sim` in staging for chaos experiments.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! use ballast_sim::{Faults, SimConfig};
//! let sim = ballast_sim::start("127.0.0.1:0".parse().unwrap(), SimConfig::default()).await?;
//! let flag: ballast_sim::FaultFlag = "error:503@0.5".parse().unwrap();
//! sim.set_faults(Faults::from_flags([flag]));
//! println!("upstream at {}", sim.base_url());
//! sim.shutdown().await;
//! # Ok(()) }
//! ```

mod api;
mod app;
mod control;
mod faults;
mod generate;
mod limits;
mod raw;
mod server;
mod sse;
mod state;
mod stats;
mod words;

use std::time::Duration;

pub use api::Api;
pub use faults::{
    CorruptFault, DegradeFault, DegradeMode, DownFault, ErrorFault, FaultFlag, FaultFlagError,
    Faults, FaultsError, HangFault, HostileFault, HostileMode, RateLimitFault, RejectPrefillFault,
    RoleThenSilenceFault, Script, SlowFault, TruncateFault, TruncateMode,
};
pub use limits::{Limits, LimitsError};
pub use server::{SimHandle, start};
pub use stats::{ApiCounts, OutcomeCounts, RECENT_REQUESTS_CAPACITY, RecordedRequest, Stats};

/// How a simulator runs: its seed, its latency, its initial faults, its key and how strictly it checks
/// parameters.
#[derive(Clone, Debug)]
pub struct SimConfig {
    /// Seeds answer generation and fault draws: the same seed and the same requests give the same run.
    pub seed: u64,
    /// Time to first token: waited before the first byte of an answer's body.
    pub ttft: Duration,
    /// Delay between streamed chunks that carry tokens.
    pub token_delay: Duration,
    /// Faults active from the start (replaceable at run time).
    pub faults: Faults,
    /// When set, provider requests must carry this key in the provider's own header.
    pub require_key: Option<String>,
    /// Refuse, as the real APIs do, parameters a model does not accept: both `temperature` and
    /// `top_p` on newer Claude models, sampling parameters and `max_tokens` on OpenAI reasoning
    /// models (see the README's *Parameter rules*). On by default; off answers them anyway.
    pub strict_params: bool,
    /// The rate limits OpenAI and Anthropic answers report (and, with `enforce`, apply); replaceable
    /// at run time.
    pub limits: Limits,
}

impl Default for SimConfig {
    /// Seed 0, no latency, no faults, no key, strict parameter rules, the default (high, not
    /// enforced) rate limits.
    fn default() -> SimConfig {
        SimConfig {
            seed: 0,
            ttft: Duration::ZERO,
            token_delay: Duration::ZERO,
            faults: Faults::default(),
            require_key: None,
            strict_params: true,
            limits: Limits::default(),
        }
    }
}
