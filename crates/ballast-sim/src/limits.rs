//! Rate limits as the providers report them: per API, a bucket per kind of limit (requests, tokens,
//! input and output tokens) replenished continuously over a window (a minute, as the real ones),
//! debited by every answer, and reported in the headers each API sends — OpenAI's
//! `x-ratelimit-{limit,remaining,reset}-{requests,tokens}` (resets in Go's duration notation:
//! `12ms`, `8.64s`, `6m0s`), Anthropic's `anthropic-ratelimit-{requests,tokens,input-tokens,
//! output-tokens}-{limit,remaining,reset}` (token remainders rounded to the thousand, resets as RFC
//! 3339 times). Gemini reports none. With `enforce`, an answer the buckets cannot pay for is a 429.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use http::{HeaderMap, HeaderName, HeaderValue};
use serde::{Deserialize, Serialize};
use tokio::time::Instant;

use crate::api::Api;

/// The limits OpenAI and Anthropic answers report, per window; the body of `POST /_sim/limits`,
/// e.g. `{"requests": 50, "tokens": 100000, "enforce": true}` (fields left out take their default).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Requests per window (both APIs).
    pub requests: u64,
    /// Tokens per window, input and output together (both APIs).
    pub tokens: u64,
    /// Input tokens per window (Anthropic).
    pub input_tokens: u64,
    /// Output tokens per window (Anthropic).
    pub output_tokens: u64,
    /// The window a bucket replenishes over, in milliseconds (60000: the real providers' minute).
    pub window_ms: u64,
    /// Answer 429 (the provider's rate-limit error, `retry-after`, the headers) when a bucket
    /// cannot pay for a request, instead of only reporting it.
    pub enforce: bool,
}

impl Default for Limits {
    /// A high usage tier: 10,000 requests, 2,000,000 tokens (1,600,000 input, 400,000 output) a
    /// minute, reported but not enforced.
    fn default() -> Limits {
        Limits {
            requests: 10_000,
            tokens: 2_000_000,
            input_tokens: 1_600_000,
            output_tokens: 400_000,
            window_ms: 60_000,
            enforce: false,
        }
    }
}

/// Longest window accepted: a day.
const MAX_WINDOW_MS: u64 = 86_400_000;

/// A limits value the control plane refuses.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum LimitsError {
    /// A limit of zero (nothing could ever be answered, and providers never report one).
    #[error("{0} must be at least 1")]
    Zero(&'static str),
    /// A window outside 1 ms..=1 day.
    #[error("window_ms must be between 1 and {MAX_WINDOW_MS}, got {0}")]
    Window(u64),
}

impl Limits {
    /// Checks every limit is at least 1 and the window between 1 ms and a day.
    pub fn validate(&self) -> Result<(), LimitsError> {
        for (name, value) in [
            ("requests", self.requests),
            ("tokens", self.tokens),
            ("input_tokens", self.input_tokens),
            ("output_tokens", self.output_tokens),
        ] {
            if value == 0 {
                return Err(LimitsError::Zero(name));
            }
        }
        if !(1..=MAX_WINDOW_MS).contains(&self.window_ms) {
            return Err(LimitsError::Window(self.window_ms));
        }
        Ok(())
    }

    /// The same limits within range (what `SimHandle::set_limits` applies).
    fn clamped(mut self) -> Limits {
        for value in [
            &mut self.requests,
            &mut self.tokens,
            &mut self.input_tokens,
            &mut self.output_tokens,
        ] {
            *value = (*value).max(1);
        }
        self.window_ms = self.window_ms.clamp(1, MAX_WINDOW_MS);
        self
    }

    fn limit(&self, kind: usize) -> u64 {
        match kind {
            REQUESTS => self.requests,
            TOKENS => self.tokens,
            INPUT => self.input_tokens,
            _ => self.output_tokens,
        }
    }

    fn window(&self) -> Duration {
        Duration::from_millis(self.window_ms)
    }
}

const REQUESTS: usize = 0;
const TOKENS: usize = 1;
const INPUT: usize = 2;
const OUTPUT: usize = 3;
const KINDS: usize = 4;

/// The kinds each API reports, in header order.
fn kinds(api: Api) -> &'static [usize] {
    match api {
        Api::OpenAi => &[REQUESTS, TOKENS],
        Api::Anthropic => &[REQUESTS, TOKENS, INPUT, OUTPUT],
        Api::Gemini | Api::Other => &[],
    }
}

/// What is left in one bucket, as of `at`.
#[derive(Clone, Copy, Debug)]
struct Bucket {
    level: f64,
    at: Instant,
}

/// Every API's buckets under the current limits.
#[derive(Debug)]
pub(crate) struct LimitState {
    limits: Limits,
    /// OpenAI's, then Anthropic's.
    buckets: [[Bucket; KINDS]; 2],
}

fn slot(api: Api) -> Option<usize> {
    match api {
        Api::OpenAi => Some(0),
        Api::Anthropic => Some(1),
        Api::Gemini | Api::Other => None,
    }
}

/// One kind of limit as an answer reports it.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Reported {
    kind: usize,
    limit: u64,
    remaining: u64,
    until_full: Duration,
}

/// The outcome of charging one answer to its API's buckets, and what its headers say.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Quota {
    api: Api,
    /// Whether the answer may be sent (always, unless enforcing).
    pub granted: bool,
    /// When refused: seconds until the buckets could pay for it.
    pub retry_after_secs: u64,
    reported: Vec<Reported>,
    /// The wall clock the Anthropic resets are written against.
    wall: SystemTime,
}

impl LimitState {
    pub fn new(limits: Limits, now: Instant) -> LimitState {
        let limits = limits.clamped();
        let full = |kind: usize| Bucket {
            level: limits.limit(kind) as f64,
            at: now,
        };
        let api = || std::array::from_fn(full);
        LimitState {
            buckets: [api(), api()],
            limits,
        }
    }

    pub fn limits(&self) -> Limits {
        self.limits.clone()
    }

    /// New limits from `now`: what the buckets hold carries over, capped at the new limits.
    pub fn set(&mut self, limits: Limits, now: Instant) {
        let limits = limits.clamped();
        for api in &mut self.buckets {
            for (kind, bucket) in api.iter_mut().enumerate() {
                refill(bucket, &self.limits, kind, now);
                bucket.level = bucket.level.min(limits.limit(kind) as f64);
            }
        }
        self.limits = limits;
    }

    /// Every bucket full again (`POST /_sim/reset`).
    pub fn refill_all(&mut self, now: Instant) {
        *self = LimitState::new(self.limits.clone(), now);
    }

    /// Charges an answer of `input` and `output` tokens to `api`'s buckets: one request, the tokens.
    /// `None` for an API that reports no limits. Enforcing, an answer a bucket cannot pay for is
    /// refused and charges nothing.
    pub fn charge(&mut self, api: Api, input: u64, output: u64, now: Instant) -> Option<Quota> {
        let slot = slot(api)?;
        let limits = &self.limits;
        let buckets = self.buckets.get_mut(slot)?;
        let cost = |kind: usize| -> f64 {
            match kind {
                REQUESTS => 1.0,
                TOKENS => input.saturating_add(output) as f64,
                INPUT => input as f64,
                _ => output as f64,
            }
        };
        let window = limits.window().as_secs_f64();
        let mut wait: f64 = 0.0;
        for &kind in kinds(api) {
            let bucket = &mut buckets[kind];
            refill(bucket, limits, kind, now);
            let short = cost(kind) - bucket.level;
            if short > 0.0 {
                let limit = limits.limit(kind) as f64;
                wait = wait.max((short / limit * window).min(window));
            }
        }
        let granted = !limits.enforce || wait <= 0.0;
        if granted {
            for &kind in kinds(api) {
                let bucket = &mut buckets[kind];
                bucket.level = (bucket.level - cost(kind)).max(0.0);
            }
        }
        let reported = kinds(api)
            .iter()
            .map(|&kind| {
                let limit = limits.limit(kind);
                let level = buckets[kind].level;
                let missing = (limit as f64 - level).max(0.0);
                Reported {
                    kind,
                    limit,
                    remaining: level.floor() as u64,
                    until_full: limits.window().mul_f64(missing / limit as f64),
                }
            })
            .collect();
        Some(Quota {
            api,
            granted,
            retry_after_secs: wait.ceil().max(1.0) as u64,
            reported,
            wall: SystemTime::now(),
        })
    }
}

fn refill(bucket: &mut Bucket, limits: &Limits, kind: usize, now: Instant) {
    let limit = limits.limit(kind) as f64;
    let elapsed = now.saturating_duration_since(bucket.at).as_secs_f64();
    bucket.level = (bucket.level + limit * elapsed / limits.window().as_secs_f64()).min(limit);
    bucket.at = bucket.at.max(now);
}

const OPENAI_NAMES: [[&str; 3]; 2] = [
    [
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ],
    [
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ],
];

const ANTHROPIC_NAMES: [[&str; 3]; KINDS] = [
    [
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ],
    [
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ],
    [
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ],
    [
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ],
];

impl Quota {
    /// Adds the API's rate-limit headers to an answer's.
    pub fn write(&self, headers: &mut HeaderMap) {
        for r in &self.reported {
            let (names, remaining, reset) = match self.api {
                Api::OpenAi => (
                    OPENAI_NAMES.get(r.kind),
                    r.remaining,
                    go_duration(r.until_full),
                ),
                _ => {
                    // Anthropic rounds token remainders to the nearest thousand.
                    let remaining = if r.kind == REQUESTS {
                        r.remaining
                    } else {
                        (r.remaining.saturating_add(500) / 1000 * 1000).min(r.limit)
                    };
                    let at = self.wall.checked_add(r.until_full).unwrap_or(self.wall);
                    (ANTHROPIC_NAMES.get(r.kind), remaining, rfc3339_ceil(at))
                }
            };
            let Some([limit_name, remaining_name, reset_name]) = names else {
                continue;
            };
            for (name, value) in [
                (limit_name, r.limit.to_string()),
                (remaining_name, remaining.to_string()),
                (reset_name, reset),
            ] {
                if let Ok(value) = HeaderValue::from_str(&value) {
                    headers.insert(HeaderName::from_static(name), value);
                }
            }
        }
    }
}

/// A duration as Go prints it, to the millisecond (rounded up), as OpenAI's resets: `0s`, `12ms`,
/// `8.64s`, `6m0s`, `1h0m0s`.
fn go_duration(d: Duration) -> String {
    let ms = d.as_micros().div_ceil(1000);
    if ms == 0 {
        return "0s".to_owned();
    }
    if ms < 1000 {
        return format!("{ms}ms");
    }
    let (secs, frac) = (ms / 1000, ms % 1000);
    let (h, m, s) = (secs / 3600, secs % 3600 / 60, secs % 60);
    let seconds = if frac == 0 {
        format!("{s}s")
    } else {
        let frac = format!("{frac:03}");
        format!("{s}.{}s", frac.trim_end_matches('0'))
    };
    if h > 0 {
        format!("{h}h{m}m{seconds}")
    } else if m > 0 {
        format!("{m}m{seconds}")
    } else {
        seconds
    }
}

/// `2025-08-21T12:40:59Z`: an RFC 3339 UTC time, rounded up to the second.
fn rfc3339_ceil(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs() + u64::from(since.subsec_nanos() > 0);
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
        h.get(name).unwrap().to_str().unwrap()
    }

    #[test]
    fn go_durations_as_openai_prints_them() {
        let ms = Duration::from_millis;
        assert_eq!(go_duration(Duration::ZERO), "0s");
        assert_eq!(go_duration(Duration::from_micros(1)), "1ms");
        assert_eq!(go_duration(ms(12)), "12ms");
        assert_eq!(go_duration(ms(1000)), "1s");
        assert_eq!(go_duration(ms(8640)), "8.64s");
        assert_eq!(go_duration(ms(360_000)), "6m0s");
        assert_eq!(go_duration(ms(3_723_500)), "1h2m3.5s");
    }

    #[test]
    fn rfc3339_times() {
        let at = |secs: u64, nanos: u32| rfc3339_ceil(UNIX_EPOCH + Duration::new(secs, nanos));
        assert_eq!(at(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(at(1_755_780_059, 0), "2025-08-21T12:40:59Z");
        assert_eq!(at(1_755_780_058, 1), "2025-08-21T12:40:59Z");
        assert_eq!(at(1_709_164_800, 0), "2024-02-29T00:00:00Z");
        assert_eq!(at(951_868_800, 0), "2000-03-01T00:00:00Z");
    }

    #[test]
    fn buckets_are_charged_refilled_and_reported() {
        let t0 = Instant::now();
        let limits = Limits {
            requests: 60,
            tokens: 6000,
            ..Limits::default()
        };
        let mut state = LimitState::new(limits, t0);
        let q = state.charge(Api::OpenAi, 100, 20, t0).unwrap();
        assert!(q.granted);
        let mut h = HeaderMap::new();
        q.write(&mut h);
        assert_eq!(header(&h, "x-ratelimit-limit-requests"), "60");
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "59");
        // One request of 60 a minute refills in a second.
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), "1s");
        assert_eq!(header(&h, "x-ratelimit-remaining-tokens"), "5880");
        assert_eq!(header(&h, "x-ratelimit-reset-tokens"), "1.2s");
        assert_eq!(h.len(), 6);
        // Half a second later, half a request is back (remaining is whole).
        let q = state
            .charge(Api::OpenAi, 0, 0, t0 + Duration::from_millis(500))
            .unwrap();
        let mut h = HeaderMap::new();
        q.write(&mut h);
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "58");
        assert_eq!(header(&h, "x-ratelimit-reset-requests"), "1.5s");
        // Gemini reports nothing; Anthropic has its own buckets.
        assert_eq!(state.charge(Api::Gemini, 1, 1, t0), None);
        let q = state.charge(Api::Anthropic, 1200, 10, t0).unwrap();
        let mut h = HeaderMap::new();
        q.write(&mut h);
        assert_eq!(h.len(), 12);
        assert_eq!(header(&h, "anthropic-ratelimit-requests-remaining"), "59");
        assert_eq!(
            header(&h, "anthropic-ratelimit-input-tokens-limit"),
            "1600000"
        );
        // 1,598,800 rounds to 1,599,000; 399,990 to 400,000.
        assert_eq!(
            header(&h, "anthropic-ratelimit-input-tokens-remaining"),
            "1599000"
        );
        assert_eq!(
            header(&h, "anthropic-ratelimit-output-tokens-remaining"),
            "400000"
        );
        assert!(header(&h, "anthropic-ratelimit-tokens-reset").ends_with('Z'));
    }

    #[test]
    fn enforcing_refuses_what_the_buckets_cannot_pay() {
        let t0 = Instant::now();
        let mut state = LimitState::new(
            Limits {
                requests: 2,
                enforce: true,
                ..Limits::default()
            },
            t0,
        );
        assert!(state.charge(Api::OpenAi, 1, 1, t0).unwrap().granted);
        assert!(state.charge(Api::OpenAi, 1, 1, t0).unwrap().granted);
        let refused = state.charge(Api::OpenAi, 1, 1, t0).unwrap();
        assert!(!refused.granted);
        // One of two requests a minute comes back in 30 s.
        assert_eq!(refused.retry_after_secs, 30);
        let mut h = HeaderMap::new();
        refused.write(&mut h);
        assert_eq!(header(&h, "x-ratelimit-remaining-requests"), "0");
        assert!(
            state
                .charge(Api::OpenAi, 1, 1, t0 + Duration::from_secs(30))
                .unwrap()
                .granted
        );
        // A lower limit caps what is left; a higher one refills over time.
        state.set(
            Limits {
                requests: 1,
                enforce: true,
                ..Limits::default()
            },
            t0 + Duration::from_secs(90),
        );
        assert!(
            state
                .charge(Api::OpenAi, 1, 1, t0 + Duration::from_secs(90))
                .unwrap()
                .granted
        );
        assert!(
            !state
                .charge(Api::OpenAi, 1, 1, t0 + Duration::from_secs(90))
                .unwrap()
                .granted
        );
    }

    #[test]
    fn validation() {
        assert_eq!(Limits::default().validate(), Ok(()));
        let zero = Limits {
            tokens: 0,
            ..Limits::default()
        };
        assert_eq!(zero.validate(), Err(LimitsError::Zero("tokens")));
        let window = Limits {
            window_ms: 0,
            ..Limits::default()
        };
        assert_eq!(window.validate(), Err(LimitsError::Window(0)));
        assert_eq!(zero.clamped().tokens, 1);
    }
}
