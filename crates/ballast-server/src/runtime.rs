//! Live state behind the resilience policies: per target (breaker, retry budget, latency EWMA,
//! in-flight count, kill switch), per provider (kill switch), gateway-wide (retry budget, in-flight
//! count, seeded RNG, the budget of bytes buffered from providers) and the response cache. Each piece sits behind its own mutex, held only for a
//! decision — never across an await.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};
use tokio::time::Instant;

use ballast_core::config::Config;
use ballast_core::policy::{
    Breaker, CacheKeyer, Ewma, Forced, ResponseCache, RetryBudget, Transition,
};

use crate::state::AppState;

/// Locks a mutex, recovering the data if a holder panicked (the state stays usable).
pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub struct TargetState {
    /// `provider/model`.
    pub label: String,
    pub provider: usize,
    pub breaker: Mutex<Breaker>,
    pub budget: Mutex<RetryBudget>,
    pub ewma: Mutex<Ewma>,
    pub in_flight: AtomicU32,
    /// Disabled by an operator (admin API or `BALLAST_DISABLE`).
    pub disabled: AtomicBool,
    /// The provider answered 429: new requests go elsewhere until then (while another target can
    /// serve). A rate limit is the provider asking for less traffic, not a sign of ill health, so it
    /// pauses the target for its `retry-after` instead of opening its breaker.
    pub rate_limited_until: Mutex<Option<Instant>>,
}

/// How long a 429 without `retry-after` pauses its target.
pub const RATE_LIMIT_PAUSE: Duration = Duration::from_secs(1);
/// The longest a `retry-after` pauses a target (a provider's hour-long `retry-after` must not take a
/// target out of rotation for an hour on one answer).
pub const MAX_RATE_LIMIT_PAUSE: Duration = Duration::from_secs(60);

impl TargetState {
    /// Until when the target is paused by a rate limit, if it is now.
    pub fn rate_limited(&self, now: Instant) -> Option<Instant> {
        lock(&self.rate_limited_until).filter(|until| *until > now)
    }

    /// A 429 arrived at `now`, asking for `retry_after` (or the default pause).
    pub fn note_rate_limit(&self, now: Instant, retry_after: Option<Duration>) {
        let until = now
            + retry_after
                .unwrap_or(RATE_LIMIT_PAUSE)
                .min(MAX_RATE_LIMIT_PAUSE);
        let mut u = lock(&self.rate_limited_until);
        if u.is_none_or(|prev| prev < until) {
            *u = Some(until);
        }
    }

    pub fn force(&self, forced: Option<Forced>) {
        let t = lock(&self.breaker).force(Instant::now(), forced);
        log_transition(&self.label, t, "operator");
    }

    pub fn snapshot(&self, st: &AppState, now: Instant) -> Value {
        let b = lock(&self.breaker).snapshot(now);
        let budget = lock(&self.budget).snapshot(now);
        let ewma_ms = lock(&self.ewma).get().map(|d| d.as_secs_f64() * 1e3);
        let wall = |i: Instant| wall_clock(now, i);
        json!({
            "target": self.label,
            "provider": st.providers[self.provider].name,
            "disabled": self.disabled.load(Ordering::Relaxed),
            "provider_disabled": st.runtime.provider_disabled[self.provider].load(Ordering::Relaxed),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "latency_ewma_ms": ewma_ms,
            "breaker": {
                "state": b.state.as_str(),
                "forced": b.forced.map(|f| match f { Forced::Open => "open", Forced::Closed => "closed" }),
                "failures_in_window": b.failures,
                "successes_in_window": b.successes,
                "consecutive_failures": b.consecutive_failures,
                "open_since": b.open_since.map(wall),
                "reopen_at": b.reopen_at.map(wall),
                "openings": b.openings,
                "cooldown_ms": b.cooldown.as_millis() as u64,
            },
            "retry_budget": {
                "requests_in_window": budget.requests,
                "retries_in_window": budget.retries,
                "available": budget.available,
            },
        })
    }
}

/// Logs a breaker state change, once, at WARN (opening) or INFO.
pub fn log_transition(label: &str, t: Option<Transition>, cause: &str) {
    let Some(t) = t else { return };
    if t.to == ballast_core::policy::State::Open {
        tracing::warn!(
            target = label,
            from = t.from.as_str(),
            to = t.to.as_str(),
            cause,
            "circuit breaker opened"
        );
    } else {
        tracing::info!(
            target = label,
            from = t.from.as_str(),
            to = t.to.as_str(),
            cause,
            "circuit breaker changed state"
        );
    }
}

/// An RFC 3339 wall-clock time for a monotonic instant, for people reading the admin API.
pub fn wall_clock(now: Instant, at: Instant) -> String {
    let wall = SystemTime::now();
    let t = if at <= now {
        wall.checked_sub(now - at)
    } else {
        wall.checked_add(at - now)
    };
    t.map(rfc3339).unwrap_or_default()
}

/// `2026-11-23T12:01:03Z` (UTC, seconds).
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

pub struct Runtime {
    pub targets: Vec<TargetState>,
    by_label: HashMap<String, usize>,
    pub provider_disabled: Vec<AtomicBool>,
    pub global_budget: Mutex<RetryBudget>,
    pub in_flight: AtomicU32,
    /// Bytes held from providers right now (whole answers being read, stream prefixes, events
    /// waiting for their end), against `limits.max_buffered_bytes`.
    pub buffered: Arc<BufferBudget>,
    pub rng: Mutex<fastrand::Rng>,
    pub cache: Mutex<ResponseCache>,
    pub keyer: CacheKeyer,
}

impl Runtime {
    pub fn new(config: &Config, seed: u64) -> Self {
        let mut targets: Vec<TargetState> = Vec::new();
        let mut by_label = HashMap::new();
        for route in &config.routes {
            for t in &route.targets {
                let p = config.provider(t.provider);
                let label = format!("{}/{}", p.name, t.model);
                by_label.entry(label.clone()).or_insert_with(|| {
                    targets.push(TargetState {
                        label,
                        provider: t.provider.0,
                        breaker: Mutex::new(Breaker::new(config.policy.breaker.clone())),
                        budget: Mutex::new(RetryBudget::new(config.policy.retry_budget.clone())),
                        ewma: Mutex::new(Ewma::new(Duration::from_secs(10))),
                        in_flight: AtomicU32::new(0),
                        disabled: AtomicBool::new(false),
                        rate_limited_until: Mutex::new(None),
                    });
                    targets.len() - 1
                });
            }
        }
        Self {
            targets,
            by_label,
            provider_disabled: config
                .providers
                .iter()
                .map(|_| AtomicBool::new(false))
                .collect(),
            global_budget: Mutex::new(RetryBudget::new(config.policy.retry_budget.clone())),
            in_flight: AtomicU32::new(0),
            buffered: Arc::new(BufferBudget::new(config.limits.max_buffered_bytes)),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            cache: Mutex::new(ResponseCache::new(
                config.cache.max_bytes,
                config.cache.max_entry_bytes,
            )),
            keyer: CacheKeyer::new(),
        }
    }

    pub fn index(&self, label: &str) -> Option<usize> {
        self.by_label.get(label).copied()
    }

    pub fn find(&self, label: &str) -> Option<&TargetState> {
        self.index(label).map(|i| &self.targets[i])
    }

    /// Applies `BALLAST_DISABLE`: a comma-separated list of provider names and `provider/model`
    /// targets to start disabled. Returns the entries that named nothing.
    pub fn disable_from_list(&self, config: &Config, list: &str) -> Vec<String> {
        let mut unknown = Vec::new();
        for item in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            if let Some(t) = self.find(item) {
                t.disabled.store(true, Ordering::Relaxed);
            } else if let Some(p) = config.providers.iter().position(|p| p.name == item) {
                self.provider_disabled[p].store(true, Ordering::Relaxed);
            } else {
                unknown.push(item.to_owned());
            }
        }
        unknown
    }

    pub fn snapshot(&self, st: &AppState) -> Value {
        let now = Instant::now();
        json!({
            "targets": self
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut v = t.snapshot(st, now);
                    v["ejected"] = json!(st.telemetry.incidents.ejected(i));
                    v["detectors"] = st.telemetry.incidents.detectors_json(i);
                    v
                })
                .collect::<Vec<_>>(),
            "in_flight": self.in_flight.load(Ordering::Relaxed),
            "buffered_bytes": self.buffered.used(),
            "retry_budget": {
                "available": lock(&self.global_budget).snapshot(now).available,
            },
        })
    }
}

/// The gateway-wide cap on bytes buffered from providers: each request's buffers are capped by
/// `[limits]`, and this caps their sum, so many hostile answers at once cannot exhaust memory.
#[derive(Debug)]
pub struct BufferBudget {
    max: usize,
    used: AtomicUsize,
}

impl BufferBudget {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            used: AtomicUsize::new(0),
        }
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    /// A reservation of nothing yet, grown and shrunk as its holder buffers.
    pub fn reserve(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            held: 0,
        }
    }
}

/// Bytes of the [`BufferBudget`] held by one buffer; released when dropped.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<BufferBudget>,
    held: usize,
}

impl Reservation {
    /// Holds `n` bytes in all (more or fewer than now). Growing fails, holding what it held, when
    /// the gateway's budget has no room.
    pub fn set(&mut self, n: usize) -> bool {
        if n <= self.held {
            self.budget.used.fetch_sub(self.held - n, Ordering::AcqRel);
            self.held = n;
            return true;
        }
        let more = n - self.held;
        let grown = self
            .budget
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(more).filter(|&u| u <= self.budget.max)
            });
        if grown.is_ok() {
            self.held = n;
        }
        grown.is_ok()
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.held, Ordering::AcqRel);
    }
}

/// Counts one unit in flight until dropped.
pub struct InFlight {
    st: Arc<AppState>,
    target: Option<usize>,
}

impl InFlight {
    /// Enters the gateway; `None` when it is saturated (shed load).
    pub fn enter(st: &Arc<AppState>) -> Option<Self> {
        let max = st.config.server.max_in_flight;
        let prev = st.runtime.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            st.runtime.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            st: st.clone(),
            target: None,
        })
    }

    /// A target's slot (not the gateway's).
    pub fn is_target(&self) -> bool {
        self.target.is_some()
    }

    /// Occupies a slot of target `idx` (bulkhead); `None` when it is full.
    pub fn target(st: &Arc<AppState>, idx: usize, max: u32) -> Option<Self> {
        let t = &st.runtime.targets[idx];
        let prev = t.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= max {
            t.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Self {
            st: st.clone(),
            target: Some(idx),
        })
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        match self.target {
            Some(i) => self.st.runtime.targets[i]
                .in_flight
                .fetch_sub(1, Ordering::AcqRel),
            None => self.st.runtime.in_flight.fetch_sub(1, Ordering::AcqRel),
        };
    }
}

/// A breaker admission that must end in exactly one `record` or `cancel`: dropping it unrecorded (the
/// client went away mid-attempt, an early return) cancels it, so a half-open target is never left
/// waiting for a trial that will not report.
pub struct Admitted {
    st: Arc<AppState>,
    target: usize,
    ticket: Option<ballast_core::policy::Ticket>,
}

impl Admitted {
    pub fn new(st: &Arc<AppState>, target: usize, ticket: ballast_core::policy::Ticket) -> Self {
        Self {
            st: st.clone(),
            target,
            ticket: Some(ticket),
        }
    }

    /// Tells the breaker how the attempt went.
    pub fn record(mut self, success: bool, cause: &str) {
        if let Some(ticket) = self.ticket.take() {
            let t = &self.st.runtime.targets[self.target];
            let transition = lock(&t.breaker).record(Instant::now(), ticket, success);
            log_transition(&t.label, transition, cause);
        }
    }

    /// The outcome says nothing about the target's health.
    pub fn cancel(mut self) {
        self.release();
    }

    fn release(&mut self) {
        if let Some(ticket) = self.ticket.take() {
            lock(&self.st.runtime.targets[self.target].breaker).cancel(ticket);
        }
    }
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.release();
    }
}

#[cfg(test)]
mod tests {
    use super::rfc3339;
    use std::time::{Duration, SystemTime};

    #[test]
    fn rfc3339_dates() {
        assert_eq!(rfc3339(SystemTime::UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_438_707);
        assert_eq!(rfc3339(t), "2026-11-23T12:58:27Z");
        let leap = SystemTime::UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00Z");
    }
}
