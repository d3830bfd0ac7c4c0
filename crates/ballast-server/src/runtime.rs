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

    /// The provider's name (the label's first part; a provider's position differs between
    /// configurations, its name does not).
    pub fn provider_name(&self) -> &str {
        self.label.split_once('/').map_or(&*self.label, |(p, _)| p)
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
            "provider": self.provider_name(),
            "disabled": self.disabled.load(Ordering::Relaxed),
            "provider_disabled": st.runtime.provider_is_disabled(self.provider_name()),
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
    /// This configuration's targets, in its order; each state is shared, by label, with every other
    /// configuration (generation) that names the target, so its breaker, budget and kill switch
    /// outlive a change of configuration.
    pub targets: Vec<Arc<TargetState>>,
    by_label: HashMap<String, usize>,
    /// Per provider of this configuration, its kill switch (shared by name across generations).
    pub provider_disabled: Vec<Arc<AtomicBool>>,
    provider_names: Vec<String>,
    pub global_budget: Arc<Mutex<RetryBudget>>,
    pub in_flight: Arc<AtomicU32>,
    /// Bytes held from providers right now (whole answers being read, stream prefixes, events
    /// waiting for their end), against `limits.max_buffered_bytes`.
    pub buffered: Arc<BufferBudget>,
    pub rng: Arc<Mutex<fastrand::Rng>>,
    pub cache: Arc<Mutex<ResponseCache>>,
    pub keyer: Arc<CacheKeyer>,
}

impl Runtime {
    pub fn new(config: &Config, seed: u64) -> Self {
        let shared = Runtime {
            targets: Vec::new(),
            by_label: HashMap::new(),
            provider_disabled: Vec::new(),
            provider_names: Vec::new(),
            global_budget: Arc::new(Mutex::new(RetryBudget::new(
                config.policy.retry_budget.clone(),
            ))),
            in_flight: Arc::new(AtomicU32::new(0)),
            buffered: Arc::new(BufferBudget::new(config.limits.max_buffered_bytes)),
            rng: Arc::new(Mutex::new(fastrand::Rng::with_seed(seed))),
            cache: Arc::new(Mutex::new(ResponseCache::new(
                config.cache.max_bytes,
                config.cache.max_entry_bytes,
            ))),
            keyer: Arc::new(CacheKeyer::new()),
        };
        shared.next(config)
    }

    /// The runtime of another configuration of the same process: the targets and providers it
    /// names keep the state they have here (by label, by name); new ones start fresh; the
    /// gateway-wide parts are the same.
    pub fn next(&self, config: &Config) -> Self {
        let mut targets: Vec<Arc<TargetState>> = Vec::new();
        let mut by_label = HashMap::new();
        for route in &config.routes {
            for t in &route.targets {
                let p = config.provider(t.provider);
                let label = format!("{}/{}", p.name, t.model);
                by_label.entry(label.clone()).or_insert_with(|| {
                    let state = self.find_arc(&label).unwrap_or_else(|| {
                        Arc::new(TargetState {
                            label,
                            breaker: Mutex::new(Breaker::new(config.policy.breaker.clone())),
                            budget: Mutex::new(RetryBudget::new(
                                config.policy.retry_budget.clone(),
                            )),
                            ewma: Mutex::new(Ewma::new(Duration::from_secs(10))),
                            in_flight: AtomicU32::new(0),
                            disabled: AtomicBool::new(false),
                            rate_limited_until: Mutex::new(None),
                        })
                    });
                    targets.push(state);
                    targets.len() - 1
                });
            }
        }
        let provider_names: Vec<String> = config.providers.iter().map(|p| p.name.clone()).collect();
        let provider_disabled = provider_names
            .iter()
            .map(|name| {
                self.provider_names
                    .iter()
                    .position(|n| n == name)
                    .and_then(|i| self.provider_disabled.get(i).cloned())
                    .unwrap_or_else(|| Arc::new(AtomicBool::new(false)))
            })
            .collect();
        Self {
            targets,
            by_label,
            provider_disabled,
            provider_names,
            global_budget: self.global_budget.clone(),
            in_flight: self.in_flight.clone(),
            buffered: self.buffered.clone(),
            rng: self.rng.clone(),
            cache: self.cache.clone(),
            keyer: self.keyer.clone(),
        }
    }

    /// Whether the provider named `name` is disabled by an operator.
    pub fn provider_is_disabled(&self, name: &str) -> bool {
        self.provider_names
            .iter()
            .position(|n| n == name)
            .and_then(|i| self.provider_disabled.get(i))
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    fn find_arc(&self, label: &str) -> Option<Arc<TargetState>> {
        self.index(label).and_then(|i| self.targets.get(i).cloned())
    }

    pub fn index(&self, label: &str) -> Option<usize> {
        self.by_label.get(label).copied()
    }

    pub fn find(&self, label: &str) -> Option<&TargetState> {
        self.index(label).map(|i| &*self.targets[i])
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

    #[test]
    fn another_configuration_keeps_the_state_of_the_targets_it_shares() {
        use super::Runtime;
        use ballast_core::config::Config;
        use ballast_core::config::env::MapEnv;
        use std::sync::Arc;
        use std::sync::atomic::Ordering;
        let cfg = |extra: &str| {
            let toml = format!(
                "[providers.a]\nkind = \"openai\"\nbase_url = \"http://a.test/v1\"\napi_key = \"k\"\n\
                 [providers.b]\nkind = \"openai\"\nbase_url = \"http://b.test/v1\"\napi_key = \"k\"\n{extra}"
            );
            Config::from_toml(&toml, &MapEnv::new(&[])).unwrap()
        };
        let old = Runtime::new(&cfg("[routes.r]\ntargets = [\"a/m\", \"b/m\"]\n"), 1);
        old.find("a/m")
            .unwrap()
            .disabled
            .store(true, Ordering::Relaxed);
        old.provider_disabled[1].store(true, Ordering::Relaxed);
        // The new one reorders, drops a/m's route position, adds b/n.
        let new = old.next(&cfg("[routes.r]\ntargets = [\"b/n\", \"b/m\", \"a/m\"]\n"));
        assert!(Arc::ptr_eq(
            &new.targets[new.index("b/m").unwrap()],
            &old.targets[old.index("b/m").unwrap()]
        ));
        assert!(new.find("a/m").unwrap().disabled.load(Ordering::Relaxed));
        assert!(!new.find("b/n").unwrap().disabled.load(Ordering::Relaxed));
        assert!(new.provider_is_disabled("b") && !new.provider_is_disabled("a"));
        assert!(Arc::ptr_eq(&new.global_budget, &old.global_budget));
        assert!(Arc::ptr_eq(&new.cache, &old.cache));
    }
}
