//! Resilience policy settings: gateway-wide defaults in `[policy]`, overridden per route in
//! `[routes.NAME.policy]`. Raw (every field optional) and resolved (every field set) forms.

use std::time::Duration;

use serde::Deserialize;

use crate::policy::{BackoffConfig, BreakerConfig, RetryBudgetConfig};

/// The longest any timeout may be (keeps instant arithmetic far from overflow).
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `[policy]` / `[routes.NAME.policy]` as written: every field optional so a route overrides only what
/// it names.
#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawPolicy {
    #[serde(default, with = "humantime_serde::option")]
    pub deadline: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub first_token_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub response_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub attempt_timeout: Option<Duration>,
    pub retries: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_base: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub backoff_cap: Option<Duration>,
    pub retry_budget_ratio: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    pub retry_budget_window: Option<Duration>,
    pub retry_budget_min_per_second: Option<f64>,
    pub max_in_flight_per_target: Option<u32>,
    pub content_policy: Option<ContentPolicyAction>,
    pub stream_recovery: Option<StreamRecovery>,
    pub cache: Option<CacheMode>,
    #[serde(default, with = "humantime_serde::option")]
    pub cache_ttl: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub cache_stale_ttl: Option<Duration>,
    #[serde(default)]
    pub breaker: RawBreaker,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawBreaker {
    pub failure_ratio: Option<f64>,
    #[serde(default, with = "humantime_serde::option")]
    pub window: Option<Duration>,
    pub min_requests: Option<u32>,
    pub consecutive_failures: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub cooldown: Option<Duration>,
    #[serde(default, with = "humantime_serde::option")]
    pub max_cooldown: Option<Duration>,
    pub half_open_trials: Option<u32>,
}

/// What to do when a provider refuses to answer on content-policy grounds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ContentPolicyAction {
    /// Return the refusal to the client (the default: another model may not be a better answer).
    Return,
    /// Try the next target (never the same model again).
    Fallback,
}

/// What happens to a stream that breaks (cut, stalled past the idle timeout, an error event, an end
/// without its terminal event).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StreamRecovery {
    /// Before its first token it falls over transparently; after it, the answer is continued on the
    /// route's next eligible target, joined to what the client already has (the default).
    Continue,
    /// Before its first token it falls over; after it, the client's stream ends with an error event.
    Off,
    /// Nothing is sent until the upstream stream ended cleanly, then all of it: a broken stream falls
    /// over transparently like a failed request, at the cost of time to first token.
    Complete,
}

/// Per-route response caching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum CacheMode {
    Off,
    /// Serve identical requests from the cache while fresh, and (like `StaleOnError`) a stale
    /// answer when every target failed.
    On,
    /// Only when every target failed, serve a cached answer (fresh or stale), marked `stale`.
    StaleOnError,
}

/// A route's resolved policy.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// Total time budget of one request, from arrival to the last byte of the answer.
    pub deadline: Duration,
    /// Streams: the longest wait for the first token of an attempt.
    pub first_token_timeout: Duration,
    /// Non-streaming requests: the longest wait for an attempt's whole answer.
    pub response_timeout: Duration,
    /// Streams: the longest silence between two chunks.
    pub idle_timeout: Duration,
    /// The longest one attempt may take, start to last byte.
    pub attempt_timeout: Duration,
    /// Retries on the same target after a retryable failure.
    pub retries: u32,
    pub backoff: BackoffConfig,
    pub retry_budget: RetryBudgetConfig,
    pub breaker: BreakerConfig,
    pub max_in_flight_per_target: u32,
    pub content_policy: ContentPolicyAction,
    pub stream_recovery: StreamRecovery,
    pub cache: CacheMode,
    pub cache_ttl: Duration,
    /// How long past its TTL a cached answer may still be served by `stale-on-error`.
    pub cache_stale_ttl: Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            deadline: Duration::from_secs(600),
            first_token_timeout: Duration::from_secs(30),
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(60),
            attempt_timeout: Duration::from_secs(600),
            retries: 1,
            backoff: BackoffConfig::default(),
            // Linkerd's defaults: 20% of first attempts plus 10 retries a second, over 10 s. The
            // floor keeps low-traffic routes able to retry; the breaker bounds an outage.
            retry_budget: RetryBudgetConfig {
                ratio: 0.2,
                window: Duration::from_secs(10),
                min_per_second: 10.0,
            },
            breaker: BreakerConfig::default(),
            max_in_flight_per_target: 1024,
            content_policy: ContentPolicyAction::Return,
            stream_recovery: StreamRecovery::Continue,
            cache: CacheMode::Off,
            cache_ttl: Duration::from_secs(300),
            cache_stale_ttl: Duration::from_secs(24 * 3600),
        }
    }
}

impl Policy {
    /// `base` with every field `raw` sets replaced. Returns the problems found, each with the field
    /// name relative to the policy table.
    pub fn resolve(base: &Policy, raw: &RawPolicy) -> (Policy, Vec<(String, String)>) {
        let mut p = base.clone();
        let mut errors = Vec::new();
        macro_rules! set {
            ($($field:ident),*) => { $( if let Some(v) = raw.$field { p.$field = v; } )* };
        }
        set!(
            deadline,
            first_token_timeout,
            response_timeout,
            idle_timeout,
            attempt_timeout,
            retries,
            max_in_flight_per_target,
            content_policy,
            stream_recovery,
            cache,
            cache_ttl,
            cache_stale_ttl
        );
        if let Some(v) = raw.backoff_base {
            p.backoff.base = v;
        }
        if let Some(v) = raw.backoff_cap {
            p.backoff.cap = v;
        }
        if let Some(v) = raw.retry_budget_ratio {
            p.retry_budget.ratio = v;
        }
        if let Some(v) = raw.retry_budget_window {
            p.retry_budget.window = v;
        }
        if let Some(v) = raw.retry_budget_min_per_second {
            p.retry_budget.min_per_second = v;
        }
        let b = &raw.breaker;
        macro_rules! set_breaker {
            ($($field:ident),*) => { $( if let Some(v) = b.$field { p.breaker.$field = v; } )* };
        }
        set_breaker!(
            failure_ratio,
            window,
            min_requests,
            consecutive_failures,
            cooldown,
            max_cooldown,
            half_open_trials
        );
        for (name, d) in [
            ("deadline", p.deadline),
            ("first_token_timeout", p.first_token_timeout),
            ("response_timeout", p.response_timeout),
            ("idle_timeout", p.idle_timeout),
            ("attempt_timeout", p.attempt_timeout),
            ("cache_ttl", p.cache_ttl),
        ] {
            if d.is_zero() {
                errors.push((name.to_owned(), "must be greater than 0".to_owned()));
            } else if d > MAX_DURATION && name != "cache_ttl" {
                errors.push((name.to_owned(), "must be at most 24h".to_owned()));
            }
        }
        if p.max_in_flight_per_target == 0 {
            errors.push((
                "max_in_flight_per_target".to_owned(),
                "must be greater than 0".to_owned(),
            ));
        }
        if let Err(e) = p.backoff.validate() {
            errors.push(("backoff".to_owned(), e));
        }
        if let Err(e) = p.retry_budget.validate() {
            errors.push(("retry_budget".to_owned(), e));
        }
        if let Err(e) = p.breaker.validate() {
            errors.push(("breaker".to_owned(), e));
        }
        (p, errors)
    }
}
