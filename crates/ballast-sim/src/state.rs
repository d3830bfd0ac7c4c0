//! State shared by the accept loop, the API handlers and the control plane.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::watch;

use crate::SimConfig;
use crate::api::Api;
use crate::faults::{Decision, Faults, decide};
use crate::limits::{LimitState, Limits, Quota};
use crate::stats::{Outcome, Recent, RecordedRequest, Stats};

/// Base latency used by `slow` when the configured latency is zero, so `slow` is never a no-op.
const SLOW_BASE_TTFT: Duration = Duration::from_millis(20);
const SLOW_BASE_TOKEN_DELAY: Duration = Duration::from_millis(5);

/// Everything a running simulator shares. Locks are held only for a copy or a draw, never across an
/// await.
pub(crate) struct SimState {
    pub seed: u64,
    pub ttft: Duration,
    pub token_delay: Duration,
    pub require_key: Option<String>,
    /// Whether per-model parameter rules are enforced.
    pub strict_params: bool,
    /// The live faults; the accept loop watches it to stop and resume listening.
    pub faults: watch::Sender<Faults>,
    rng: Mutex<fastrand::Rng>,
    ids: AtomicU64,
    stats: Mutex<Stats>,
    recent: Mutex<Recent>,
    limits: Mutex<LimitState>,
}

/// The latency one answer is served with.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Pacing {
    pub ttft: Duration,
    pub token_delay: Duration,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SimState {
    pub fn new(config: SimConfig) -> SimState {
        let (faults, _) = watch::channel(config.faults);
        SimState {
            seed: config.seed,
            ttft: config.ttft,
            token_delay: config.token_delay,
            require_key: config.require_key,
            strict_params: config.strict_params,
            faults,
            rng: Mutex::new(fastrand::Rng::with_seed(config.seed)),
            ids: AtomicU64::new(0),
            stats: Mutex::new(Stats::default()),
            recent: Mutex::new(Recent::default()),
            limits: Mutex::new(LimitState::new(config.limits, tokio::time::Instant::now())),
        }
    }

    pub fn current_faults(&self) -> Faults {
        self.faults.borrow().clone()
    }

    pub fn set_faults(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    pub fn current_limits(&self) -> Limits {
        lock(&self.limits).limits()
    }

    /// New rate limits from now on (what the buckets hold carries over, capped at the new limits).
    pub fn set_limits(&self, limits: Limits) {
        lock(&self.limits).set(limits, tokio::time::Instant::now());
    }

    /// Charges one answer to `api`'s rate-limit buckets; `None` for an API without limits.
    pub fn charge(&self, api: Api, input_tokens: u64, output_tokens: u64) -> Option<Quota> {
        lock(&self.limits).charge(
            api,
            input_tokens,
            output_tokens,
            tokio::time::Instant::now(),
        )
    }

    /// Draws the faults for one request.
    pub fn decide(&self, api: Api) -> Decision {
        let faults = self.current_faults();
        let mut rng = lock(&self.rng);
        decide(&faults, api, &mut rng)
    }

    /// Draws whether to reset a new connection under `down` below rate 1.
    pub fn draw_reset(&self) -> bool {
        let rate = self.faults.borrow().reset_rate();
        rate > 0.0 && lock(&self.rng).f64() < rate
    }

    /// A fresh id with the given prefix (`msg_`, `chatcmpl-`, `req_` …): unique within a run and
    /// reproducible from the seed.
    pub fn new_id(&self, prefix: &str, len: usize) -> String {
        let n = self.ids.fetch_add(1, Ordering::Relaxed);
        let mut rng = fastrand::Rng::with_seed(self.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut id = String::with_capacity(prefix.len() + len);
        id.push_str(prefix);
        id.extend((0..len).map(|_| rng.alphanumeric()));
        id
    }

    pub fn pacing(&self, slow: Option<f64>) -> Pacing {
        let base = Pacing {
            ttft: self.ttft,
            token_delay: self.token_delay,
        };
        match slow {
            None => base,
            Some(factor) => {
                let ttft = if base.ttft.is_zero() {
                    SLOW_BASE_TTFT
                } else {
                    base.ttft
                };
                let token_delay = if base.token_delay.is_zero() {
                    SLOW_BASE_TOKEN_DELAY
                } else {
                    base.token_delay
                };
                Pacing {
                    ttft: ttft.mul_f64(factor),
                    token_delay: token_delay.mul_f64(factor),
                }
            }
        }
    }

    pub fn count(&self, api: Option<Api>, outcome: Outcome) {
        lock(&self.stats).count(api, outcome);
    }

    pub fn stats(&self) -> Stats {
        lock(&self.stats).clone()
    }

    pub fn record(&self, request: RecordedRequest) {
        lock(&self.recent).push(request);
    }

    pub fn recent_requests(&self) -> Vec<RecordedRequest> {
        lock(&self.recent).snapshot()
    }

    /// Clears counters and recorded requests, restarts the seeded draws and refills the rate-limit
    /// buckets (faults and limits are kept).
    pub fn reset(&self) {
        lock(&self.limits).refill_all(tokio::time::Instant::now());
        *lock(&self.stats) = Stats::default();
        lock(&self.recent).clear();
        *lock(&self.rng) = fastrand::Rng::with_seed(self.seed);
        self.ids.store(0, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slow_is_never_a_no_op() {
        let state = SimState::new(SimConfig::default());
        assert_eq!(state.pacing(None), Pacing::default());
        let slow = state.pacing(Some(10.0));
        assert_eq!(slow.ttft, Duration::from_millis(200));
        assert_eq!(slow.token_delay, Duration::from_millis(50));
    }

    #[test]
    fn ids_are_unique_and_reproducible() {
        let a = SimState::new(SimConfig {
            seed: 3,
            ..SimConfig::default()
        });
        let b = SimState::new(SimConfig {
            seed: 3,
            ..SimConfig::default()
        });
        let first = a.new_id("msg_", 24);
        assert_eq!(first, b.new_id("msg_", 24));
        assert_ne!(first, a.new_id("msg_", 24));
        assert_eq!(first.len(), 28);
    }
}
