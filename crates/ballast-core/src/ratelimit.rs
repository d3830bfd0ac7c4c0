//! Providers' rate-limit headers and the headroom they leave: [`RateLimits::parse`] reads the
//! limits an answer reports (OpenAI `x-ratelimit-*`, Anthropic `anthropic-ratelimit-*`), and
//! [`LimitTracker`], a pure state machine fed one reading at a time (time passed in), keeps the
//! aggregates of one kind of limit for one target — the limit, what remains, the consumption per
//! minute over time — and forecasts the hours left before the traffic trend reaches the limit.
//!
//! # The headers
//! | kind | OpenAI (and compatible servers) | Anthropic |
//! | --- | --- | --- |
//! | requests | `x-ratelimit-{limit,remaining,reset}-requests` | `anthropic-ratelimit-requests-{limit,remaining,reset}` |
//! | tokens | `x-ratelimit-{limit,remaining,reset}-tokens` | `anthropic-ratelimit-tokens-{limit,remaining,reset}` (the most restrictive token limit in effect) |
//! | input tokens | — | `anthropic-ratelimit-input-tokens-{limit,remaining,reset}` |
//! | output tokens | — | `anthropic-ratelimit-output-tokens-{limit,remaining,reset}` |
//!
//! Limits and remainders are whole numbers. OpenAI's reset is a duration in Go's notation (`6m0s`,
//! `1s`, `20ms`, `8.64s`; a bare number is read as seconds); Anthropic's is an RFC 3339 time
//! (`2025-08-21T12:40:59Z`), turned into a duration against the answer's own `date` header (the
//! provider's clock, so the gateway's clock skew does not matter; no `date`, no reset). Any other
//! header (`x-ratelimit-limit-tokens_usage_based`, Anthropic's priority-tier headers …) is ignored.
//! A kind is read only when its limit (a whole number above zero) and its remainder are both
//! valid; a bad reset only loses the reset. Nothing read from a header can panic, overflow or size
//! anything.
//!
//! # The forecast
//! Both providers replenish these limits continuously over a one-minute window (RPM, TPM, ITPM,
//! OTPM: OpenAI's `reset` of one request out of 5,000 is 12 ms = 60 s / 5,000). Between two
//! readings `(R₁, t₁)` and `(R₂, t₂)` of a limit `L` per window `W` the key consumed
//! `min(L, R₁ + L·(t₂−t₁)/W) − R₂` — every consumer of the key, not only this gateway. That
//! consumption is summed into buckets of [`HeadroomConfig::bucket`] (negative sums, from readings
//! arriving out of order or a raised limit, count as zero); each closed bucket gives a rate in units
//! per minute, and the last [`BUCKETS`] rates (a bucket with no reading counts as zero) are kept.
//! The first bucket, which lacks the consumption behind the tracker's first reading, is dropped.
//!
//! **Headroom** is defined on the least-squares line through those rates (oldest to newest, once
//! [`HeadroomConfig::min_buckets`] are closed): its value at the newest bucket is the *current
//! rate*, its slope (per hour) the *growth*, and the *capacity* is the limit per minute. The hours
//! until the limit at the current growth are `0` when the current rate has reached the capacity
//! or the newest bucket consumed at least [`AT_LIMIT`] of it (the provider is already holding the
//! key at its limit), `(capacity − current rate) / growth` when the growth is positive, and none
//! (no exhaustion in sight) otherwise. The headroom is **low** when those hours fall below
//! [`HeadroomConfig::alert_hours`], and stays low until they are none or at least
//! [`HeadroomConfig::clear_hours`] (hysteresis). It is a forecast of the sustained rate: bursts
//! within a minute can meet the limit earlier, and Anthropic's token remainders, rounded to the
//! thousand, hide consumption below a thousand tokens a window.
//!
//! A **limit change** is reported once the same new limit has been read
//! [`HeadroomConfig::confirm`] times in a row, so a limit that flickers between two values (a
//! provider's "most restrictive limit in effect" switching, a stray answer) is not news.

use std::time::Duration;

use http::{HeaderMap, HeaderName};
use tokio::time::Instant;

/// A kind of rate limit: a fixed set, so it can be a metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// Requests per minute.
    Requests,
    /// Tokens per minute (OpenAI: input and output; Anthropic: the most restrictive in effect).
    Tokens,
    /// Input tokens per minute (Anthropic).
    InputTokens,
    /// Output tokens per minute (Anthropic).
    OutputTokens,
}

impl Kind {
    pub const COUNT: usize = 4;
    pub const ALL: [Kind; Kind::COUNT] = [
        Kind::Requests,
        Kind::Tokens,
        Kind::InputTokens,
        Kind::OutputTokens,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Requests => "requests",
            Kind::Tokens => "tokens",
            Kind::InputTokens => "input_tokens",
            Kind::OutputTokens => "output_tokens",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One kind of limit as one answer reported it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Reading {
    /// The limit per window (above zero).
    pub limit: u64,
    /// What remains of it (never above `limit`).
    pub remaining: u64,
    /// How long until it is fully replenished, as of the answer.
    pub reset: Option<Duration>,
}

/// The limits one answer reported, by kind. Parsing never allocates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RateLimits {
    readings: [Option<Reading>; Kind::COUNT],
}

/// The three headers of one kind of limit in one provider's naming.
struct Names {
    kind: Kind,
    limit: HeaderName,
    remaining: HeaderName,
    reset: HeaderName,
}

const fn names(
    kind: Kind,
    limit: &'static str,
    remaining: &'static str,
    reset: &'static str,
) -> Names {
    Names {
        kind,
        limit: HeaderName::from_static(limit),
        remaining: HeaderName::from_static(remaining),
        reset: HeaderName::from_static(reset),
    }
}

const OPENAI: [Names; 2] = [
    names(
        Kind::Requests,
        "x-ratelimit-limit-requests",
        "x-ratelimit-remaining-requests",
        "x-ratelimit-reset-requests",
    ),
    names(
        Kind::Tokens,
        "x-ratelimit-limit-tokens",
        "x-ratelimit-remaining-tokens",
        "x-ratelimit-reset-tokens",
    ),
];

const ANTHROPIC: [Names; 4] = [
    names(
        Kind::Requests,
        "anthropic-ratelimit-requests-limit",
        "anthropic-ratelimit-requests-remaining",
        "anthropic-ratelimit-requests-reset",
    ),
    names(
        Kind::Tokens,
        "anthropic-ratelimit-tokens-limit",
        "anthropic-ratelimit-tokens-remaining",
        "anthropic-ratelimit-tokens-reset",
    ),
    names(
        Kind::InputTokens,
        "anthropic-ratelimit-input-tokens-limit",
        "anthropic-ratelimit-input-tokens-remaining",
        "anthropic-ratelimit-input-tokens-reset",
    ),
    names(
        Kind::OutputTokens,
        "anthropic-ratelimit-output-tokens-limit",
        "anthropic-ratelimit-output-tokens-remaining",
        "anthropic-ratelimit-output-tokens-reset",
    ),
];

impl RateLimits {
    /// Reads the rate-limit headers of an answer (any status: a 429 reports them too). A kind named
    /// in both styles is read from Anthropic's. No header: empty, after six failed lookups.
    pub fn parse(headers: &HeaderMap) -> RateLimits {
        let mut out = RateLimits::default();
        // The answer's `date`, read once and only if an Anthropic reset needs it.
        let mut date: Option<Option<Duration>> = None;
        for names in &ANTHROPIC {
            let Some((limit, remaining)) = counts(headers, names) else {
                continue;
            };
            let reset = text(headers, &names.reset)
                .and_then(parse_rfc3339)
                .and_then(|at| {
                    let date = *date.get_or_insert_with(|| {
                        // An HTTP date measured from the epoch is its Unix time.
                        text(headers, &http::header::DATE).and_then(|d| {
                            crate::policy::parse_retry_after(Some(d), None, std::time::UNIX_EPOCH)
                        })
                    });
                    date.map(|date| at.saturating_sub(date))
                });
            out.set(names.kind, limit, remaining, reset);
        }
        for names in &OPENAI {
            if out.get(names.kind).is_some() {
                continue;
            }
            let Some((limit, remaining)) = counts(headers, names) else {
                continue;
            };
            let reset = text(headers, &names.reset).and_then(parse_duration);
            out.set(names.kind, limit, remaining, reset);
        }
        out
    }

    /// A set with one reading (tests, and callers that read limits elsewhere).
    pub fn with(mut self, kind: Kind, reading: Reading) -> RateLimits {
        self.set(kind, reading.limit, reading.remaining, reading.reset);
        self
    }

    fn set(&mut self, kind: Kind, limit: u64, remaining: u64, reset: Option<Duration>) {
        if limit == 0 {
            return;
        }
        if let Some(slot) = self.readings.get_mut(kind.index()) {
            *slot = Some(Reading {
                limit,
                remaining: remaining.min(limit),
                reset,
            });
        }
    }

    pub fn get(&self, kind: Kind) -> Option<Reading> {
        self.readings.get(kind.index()).copied().flatten()
    }

    pub fn is_empty(&self) -> bool {
        self.readings.iter().all(Option::is_none)
    }

    /// The kinds read, in [`Kind::ALL`] order.
    pub fn iter(&self) -> impl Iterator<Item = (Kind, Reading)> + '_ {
        Kind::ALL
            .into_iter()
            .zip(self.readings.iter())
            .filter_map(|(kind, r)| r.map(|r| (kind, r)))
    }
}

fn text<'a>(headers: &'a HeaderMap, name: &HeaderName) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The limit and remainder of one kind, when both are valid whole numbers.
fn counts(headers: &HeaderMap, names: &Names) -> Option<(u64, u64)> {
    let limit = headers.get(&names.limit)?;
    let limit = parse_count(limit.as_bytes())?;
    let remaining = parse_count(headers.get(&names.remaining)?.as_bytes())?;
    Some((limit, remaining))
}

/// A whole number in ASCII digits (surrounding spaces allowed); no sign, no fraction, no overflow.
pub fn parse_count(bytes: &[u8]) -> Option<u64> {
    let digits = bytes.trim_ascii();
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = b.checked_sub(b'0').filter(|d| *d <= 9)?;
        n.checked_mul(10)?.checked_add(u64::from(d))
    })
}

/// Nanoseconds per unit of Go's duration notation, longest spelling first.
const UNITS: [(&str, u128); 8] = [
    ("ns", 1),
    ("us", 1_000),
    ("µs", 1_000),
    ("μs", 1_000),
    ("ms", 1_000_000),
    ("s", 1_000_000_000),
    ("m", 60_000_000_000),
    ("h", 3_600_000_000_000),
];

/// A duration in Go's notation as OpenAI sends it (`6m0s`, `1s`, `20ms`, `8.64s`, `1h2m3.5s`,
/// `0`), or a bare number of seconds (`1`, `0.5`). Fractions finer than a nanosecond are dropped;
/// signs, unknown units, empty numbers and durations beyond `u64::MAX` nanoseconds are refused.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let mut rest = s.trim().as_bytes();
    if rest.is_empty() {
        return None;
    }
    if let Some(nanos) = number_nanos(rest, 1_000_000_000) {
        // A bare number: seconds.
        return nanos_duration(nanos);
    }
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let number_len = rest
            .iter()
            .take_while(|b| b.is_ascii_digit() || **b == b'.')
            .count();
        let (number, after) = rest.split_at_checked(number_len)?;
        let (unit, per) = UNITS
            .iter()
            .find(|(unit, _)| after.starts_with(unit.as_bytes()))?;
        // `m` must not swallow the `m` of `ms`: `ms` comes first in UNITS.
        total = total.checked_add(number_nanos(number, *per)?)?;
        rest = after.get(unit.len()..)?;
    }
    nanos_duration(total)
}

fn nanos_duration(nanos: u128) -> Option<Duration> {
    u64::try_from(nanos).ok().map(Duration::from_nanos)
}

/// `digits[.digits]` times `per` nanoseconds. At least one digit; at most 20 integer digits, and
/// fraction digits past the 18th ignored, so nothing overflows a `u128`.
fn number_nanos(number: &[u8], per: u128) -> Option<u128> {
    let (int, frac) = match number.iter().position(|b| *b == b'.') {
        Some(dot) => (number.get(..dot)?, number.get(dot.checked_add(1)?..)?),
        None => (number, &[][..]),
    };
    if int.is_empty() && frac.is_empty() || int.len() > 20 || !frac.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let whole = if int.is_empty() {
        0
    } else {
        u128::from(parse_count(int)?)
    };
    let mut nanos = whole.checked_mul(per)?;
    let mut scale: u128 = 1;
    let mut frac_value: u128 = 0;
    for b in frac.iter().take(18) {
        scale = scale.checked_mul(10)?;
        frac_value = frac_value
            .checked_mul(10)?
            .checked_add(u128::from(b.checked_sub(b'0')?))?;
    }
    nanos = nanos.checked_add(frac_value.checked_mul(per)?.checked_div(scale)?)?;
    Some(nanos)
}

/// An RFC 3339 time (`2025-08-21T12:40:59Z`, `…59.5Z`, `…59+02:00`) as a duration since the Unix
/// epoch. Times before 1970 and invalid dates are refused; a leap second reads as the second before.
pub fn parse_rfc3339(s: &str) -> Option<Duration> {
    let b = s.trim().as_bytes();
    let field = |from: usize, to: usize| b.get(from..to).and_then(parse_count);
    let sep = |at: usize, allowed: &[u8]| b.get(at).is_some_and(|c| allowed.contains(c));
    let year = field(0, 4)?;
    let month = field(5, 7)?;
    let day = field(8, 10)?;
    let hour = field(11, 13)?;
    let minute = field(14, 16)?;
    let second = field(17, 19)?.min(59);
    if !(sep(4, b"-") && sep(7, b"-") && sep(10, b"Tt ") && sep(13, b":") && sep(16, b":")) {
        return None;
    }
    if b.get(0..4)?.len() != 4 || hour > 23 || minute > 59 {
        return None;
    }
    let mut rest = b.get(19..)?;
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix(b".") {
        let len = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if len == 0 {
            return None;
        }
        let mut scale: u32 = 1_000_000_000;
        for c in frac.iter().take(len.min(9)) {
            scale /= 10;
            nanos = nanos.checked_add(u32::from(c.checked_sub(b'0')?).checked_mul(scale)?)?;
        }
        rest = frac.get(len..)?;
    }
    let local = days_since_epoch(year, month, day)?
        .checked_mul(86_400)?
        .checked_add(
            hour.checked_mul(3_600)?
                .checked_add(minute.checked_mul(60)?)?,
        )?
        .checked_add(second)?;
    let utc = match rest {
        [b'Z' | b'z'] => local,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2] => {
            let offset_h = parse_count(&[*h1, *h2])?;
            let offset_m = parse_count(&[*m1, *m2])?;
            if offset_h > 23 || offset_m > 59 {
                return None;
            }
            let offset = offset_h
                .checked_mul(3_600)?
                .checked_add(offset_m.checked_mul(60)?)?;
            if *sign == b'+' {
                local.checked_sub(offset)?
            } else {
                local.checked_add(offset)?
            }
        }
        _ => return None,
    };
    Some(Duration::new(utc, nanos))
}

/// Days from 1970-01-01 to a date from 1970 to 9999, `None` for an invalid date.
fn days_since_epoch(year: u64, month: u64, day: u64) -> Option<u64> {
    if !(1970..=9999).contains(&year) || !(1..=12).contains(&month) {
        return None;
    }
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    const BEFORE: [u64; 12] = [0, 31, 59, 90, 120, 151, 181, 212, 243, 273, 304, 334];
    const LENGTH: [u64; 12] = [31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
    let m = usize::try_from(month.checked_sub(1)?).ok()?;
    let length = LENGTH.get(m)?.checked_add(u64::from(leap && month == 2))?;
    if day == 0 || day > length {
        return None;
    }
    let y = year.checked_sub(1)?;
    // Leap days in the years from 1970 up to (not including) `year`; 477 of them before 1970.
    let leap_days = (y / 4)
        .checked_sub(y / 100)?
        .checked_add(y / 400)?
        .checked_sub(477)?;
    let days_before_year = year
        .checked_sub(1970)?
        .checked_mul(365)?
        .checked_add(leap_days)?;
    let days_before_month = BEFORE.get(m)?.checked_add(u64::from(leap && month > 2))?;
    days_before_year
        .checked_add(days_before_month)?
        .checked_add(day.checked_sub(1)?)
}

/// Rates kept per limit: with the default 15-minute buckets, the last six hours.
pub const BUCKETS: usize = 24;

/// A bucket that consumed this share of the capacity was held at the limit: a provider enforcing
/// its limit lets through only what replenishes, so a saturated key measures just under 100%.
pub const AT_LIMIT: f64 = 0.95;

/// Tuning of a [`LimitTracker`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct HeadroomConfig {
    /// The window a limit replenishes over (one minute for both providers' header limits).
    pub window: Duration,
    /// How much consumption one rate sums (at least a second).
    pub bucket: Duration,
    /// Closed buckets before any forecast (2 to [`BUCKETS`]).
    pub min_buckets: usize,
    /// Headroom below this many hours is low.
    pub alert_hours: f64,
    /// Low headroom clears once the forecast is none or at least this many hours.
    pub clear_hours: f64,
    /// Readings in a row of the same new limit before it counts as changed (at least 1).
    pub confirm: u32,
}

impl Default for HeadroomConfig {
    /// One-minute limits; 15-minute buckets, forecasting after two hours over the last six; low
    /// below 24 hours, cleared at 36; a limit change confirmed by three answers.
    fn default() -> Self {
        Self {
            window: Duration::from_secs(60),
            bucket: Duration::from_secs(15 * 60),
            min_buckets: 8,
            alert_hours: 24.0,
            clear_hours: 36.0,
            confirm: 3,
        }
    }
}

/// Where the consumption of a limit is heading (see the module's *forecast*).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Forecast {
    /// The fitted consumption per minute at the newest bucket (never negative).
    pub rate_per_minute: f64,
    /// The fitted growth of that rate, per minute per hour.
    pub growth_per_hour: f64,
    /// The limit per minute.
    pub capacity_per_minute: f64,
    /// Hours until the rate reaches the capacity at the current growth; `None`: not in sight.
    pub hours: Option<f64>,
}

/// What one reading or tick changed.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Update {
    /// The limit changed (confirmed): `(old, new)`.
    pub limit_changed: Option<(u64, u64)>,
    /// The headroom became low or recovered.
    pub headroom: Option<HeadroomChange>,
}

impl Update {
    pub fn is_empty(&self) -> bool {
        self.limit_changed.is_none() && self.headroom.is_none()
    }
}

/// A crossing of the headroom thresholds.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum HeadroomChange {
    /// Fewer than `alert_hours` left at the current growth.
    Low { hours: f64 },
    /// Back above `clear_hours`, or no exhaustion in sight (`None`).
    Recovered { hours: Option<f64> },
}

/// One kind of limit of one target: the latest reading, the consumption trend and the headroom.
#[derive(Clone, Debug)]
pub struct LimitTracker {
    cfg: HeadroomConfig,
    /// The confirmed limit.
    limit: u64,
    /// The latest reading.
    latest: Reading,
    seen: Instant,
    /// A different limit read `n` times in a row.
    candidate: Option<(u64, u32)>,
    bucket_start: Instant,
    /// Consumption summed in the open bucket (may be negative until it closes).
    bucket_sum: f64,
    /// The first bucket misses the consumption of the reading the tracker started from: it is
    /// dropped rather than read as a dip.
    first: bool,
    /// Closed buckets' rates per minute, a ring; `filled` of them valid, the oldest at `next` once full.
    rates: [f64; BUCKETS],
    filled: usize,
    next: usize,
    forecast: Option<Forecast>,
    low: bool,
}

impl LimitTracker {
    /// Starts from a first reading at `now`.
    pub fn new(cfg: HeadroomConfig, reading: Reading, now: Instant) -> Self {
        Self {
            cfg,
            limit: reading.limit,
            latest: reading,
            seen: now,
            candidate: None,
            bucket_start: now,
            bucket_sum: 0.0,
            first: true,
            rates: [0.0; BUCKETS],
            filled: 0,
            next: 0,
            forecast: None,
            low: false,
        }
    }

    /// One more reading of this limit at `now`.
    pub fn observe(&mut self, reading: Reading, now: Instant) -> Update {
        let mut update = Update {
            headroom: self.close_buckets(now),
            ..Update::default()
        };
        let remaining = reading.remaining.min(reading.limit);
        let elapsed = now.saturating_duration_since(self.seen);
        let limit = reading.limit as f64;
        let refill = limit * elapsed.as_secs_f64() / self.window_secs();
        let available = (self.latest.remaining as f64 + refill).min(limit);
        self.bucket_sum += available - remaining as f64;
        if now > self.seen {
            self.seen = now;
        }
        self.latest = Reading {
            remaining,
            ..reading
        };

        if reading.limit == self.limit {
            self.candidate = None;
        } else {
            let seen = match self.candidate {
                Some((value, n)) if value == reading.limit => n.saturating_add(1),
                _ => 1,
            };
            if seen >= self.cfg.confirm.max(1) {
                update.limit_changed = Some((self.limit, reading.limit));
                self.limit = reading.limit;
                self.candidate = None;
                // Changes alternate (low, recovered, low …): two in one update cancel out.
                update.headroom = match (update.headroom, self.refresh()) {
                    (Some(_), Some(_)) => None,
                    (before, after) => before.or(after),
                };
            } else {
                self.candidate = Some((reading.limit, seen));
            }
        }
        update
    }

    /// Closes the buckets that ended by `now` without a reading (call it now and then so a
    /// target that stopped answering does not keep its last forecast).
    pub fn tick(&mut self, now: Instant) -> Option<HeadroomChange> {
        self.close_buckets(now)
    }

    /// The confirmed limit.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    /// The latest reading (its limit may be a change not yet confirmed).
    pub fn latest(&self) -> Reading {
        self.latest
    }

    /// When the latest reading was taken.
    pub fn seen(&self) -> Instant {
        self.seen
    }

    /// The share of the limit in use at the latest reading: `(limit − remaining) / limit`.
    pub fn used_share(&self) -> f64 {
        let limit = self.latest.limit as f64;
        if limit > 0.0 {
            ((limit - self.latest.remaining as f64) / limit).clamp(0.0, 1.0)
        } else {
            0.0
        }
    }

    /// The forecast as of the last closed bucket; `None` before `min_buckets` closed.
    pub fn forecast(&self) -> Option<Forecast> {
        self.forecast
    }

    /// Whether the headroom is low (between a `Low` and a `Recovered`).
    pub fn is_low(&self) -> bool {
        self.low
    }

    fn window_secs(&self) -> f64 {
        self.cfg.window.as_secs_f64().max(0.001)
    }

    fn bucket(&self) -> Duration {
        self.cfg.bucket.max(Duration::from_secs(1))
    }

    /// Closes every bucket that ended by `now`: the open one with its sum, then empty ones (at most
    /// a ring's worth).
    fn close_buckets(&mut self, now: Instant) -> Option<HeadroomChange> {
        let bucket = self.bucket();
        let elapsed = now.saturating_duration_since(self.bucket_start);
        let due = elapsed
            .as_nanos()
            .checked_div(bucket.as_nanos())
            .unwrap_or(0);
        if due == 0 {
            return None;
        }
        let minutes = bucket.as_secs_f64() / 60.0;
        if !std::mem::replace(&mut self.first, false) {
            self.push(self.bucket_sum.max(0.0) / minutes);
        }
        self.bucket_sum = 0.0;
        let empty = usize::try_from(due.saturating_sub(1))
            .unwrap_or(usize::MAX)
            .min(BUCKETS);
        for _ in 0..empty {
            self.push(0.0);
        }
        self.bucket_start = u32::try_from(due)
            .ok()
            .and_then(|due| bucket.checked_mul(due))
            .and_then(|span| self.bucket_start.checked_add(span))
            .filter(|start| *start <= now)
            .unwrap_or(now);
        self.refresh()
    }

    fn push(&mut self, rate: f64) {
        if let Some(slot) = self.rates.get_mut(self.next) {
            *slot = rate;
        }
        self.next = self.next.saturating_add(1) % BUCKETS;
        self.filled = self.filled.saturating_add(1).min(BUCKETS);
    }

    /// Recomputes the forecast and applies the hysteresis.
    fn refresh(&mut self) -> Option<HeadroomChange> {
        self.forecast = self.fit();
        self.judge()
    }

    /// The hysteresis on the forecast's hours: low below `alert_hours`, cleared at `clear_hours`
    /// or when no exhaustion is in sight.
    fn judge(&mut self) -> Option<HeadroomChange> {
        let hours = self.forecast.and_then(|f| f.hours);
        if !self.low && hours.is_some_and(|h| h < self.cfg.alert_hours) {
            self.low = true;
            return hours.map(|hours| HeadroomChange::Low { hours });
        }
        if self.low && hours.is_none_or(|h| h >= self.cfg.clear_hours) {
            self.low = false;
            return Some(HeadroomChange::Recovered { hours });
        }
        None
    }

    /// The least-squares line through the kept rates, oldest first.
    fn fit(&self) -> Option<Forecast> {
        let n = self.filled;
        if n < self.cfg.min_buckets.clamp(2, BUCKETS) {
            return None;
        }
        let oldest = if n < BUCKETS { 0 } else { self.next };
        let rates = || self.rates.iter().cycle().skip(oldest).take(n);
        let count = n as f64;
        let mean_x = (count - 1.0) / 2.0;
        let mean_y = rates().sum::<f64>() / count;
        let (mut sxx, mut sxy) = (0.0, 0.0);
        for (i, y) in rates().enumerate() {
            let dx = i as f64 - mean_x;
            sxx += dx * dx;
            sxy += dx * (y - mean_y);
        }
        let slope = if sxx > 0.0 { sxy / sxx } else { 0.0 };
        let rate = (mean_y + slope * mean_x).max(0.0);
        let growth = slope / (self.bucket().as_secs_f64() / 3600.0);
        let capacity = self.limit as f64 * 60.0 / self.window_secs();
        let newest = self
            .rates
            .get(self.next.checked_sub(1).unwrap_or(BUCKETS - 1))
            .copied()
            .unwrap_or(0.0);
        let hours = if rate >= capacity || newest >= AT_LIMIT * capacity {
            Some(0.0)
        } else if growth > 0.0 {
            Some((capacity - rate) / growth).filter(|h| h.is_finite())
        } else {
            None
        };
        Some(Forecast {
            rate_per_minute: rate,
            growth_per_hour: growth,
            capacity_per_minute: capacity,
            hours,
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_bytes(v.as_bytes()).unwrap(),
            );
        }
        h
    }

    fn reading(limit: u64, remaining: u64) -> Reading {
        Reading {
            limit,
            remaining,
            reset: None,
        }
    }

    #[test]
    fn openai_headers() {
        // As api.openai.com sends them (the rate-limits guide; a live chat completion).
        let h = headers(&[
            ("x-ratelimit-limit-requests", "5000"),
            ("x-ratelimit-limit-tokens", "160000"),
            ("x-ratelimit-limit-tokens_usage_based", "160000"),
            ("x-ratelimit-remaining-requests", "4999"),
            ("x-ratelimit-remaining-tokens", "159976"),
            ("x-ratelimit-remaining-tokens_usage_based", "159976"),
            ("x-ratelimit-reset-requests", "12ms"),
            ("x-ratelimit-reset-tokens", "6m0s"),
        ]);
        let limits = RateLimits::parse(&h);
        assert_eq!(
            limits.get(Kind::Requests),
            Some(Reading {
                limit: 5000,
                remaining: 4999,
                reset: Some(Duration::from_millis(12))
            })
        );
        assert_eq!(
            limits.get(Kind::Tokens),
            Some(Reading {
                limit: 160_000,
                remaining: 159_976,
                reset: Some(Duration::from_secs(360))
            })
        );
        assert_eq!(limits.get(Kind::InputTokens), None);
        assert_eq!(limits.iter().count(), 2);
    }

    #[test]
    fn anthropic_headers_reset_against_the_answers_date() {
        // As api.anthropic.com sent them on a 200 (Aug 2025), with later resets.
        let h = headers(&[
            ("date", "Thu, 21 Aug 2025 12:41:00 GMT"),
            ("anthropic-ratelimit-input-tokens-limit", "80000"),
            ("anthropic-ratelimit-input-tokens-remaining", "79000"),
            (
                "anthropic-ratelimit-input-tokens-reset",
                "2025-08-21T12:41:01Z",
            ),
            ("anthropic-ratelimit-output-tokens-limit", "16000"),
            ("anthropic-ratelimit-output-tokens-remaining", "16000"),
            (
                "anthropic-ratelimit-output-tokens-reset",
                "2025-08-21T12:41:00Z",
            ),
            ("anthropic-ratelimit-requests-limit", "1000"),
            ("anthropic-ratelimit-requests-remaining", "999"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:40:59Z"),
            ("anthropic-ratelimit-tokens-limit", "96000"),
            ("anthropic-ratelimit-tokens-remaining", "95000"),
            (
                "anthropic-ratelimit-tokens-reset",
                "2025-08-21T12:41:00.500Z",
            ),
            ("anthropic-priority-input-tokens-limit", "5"),
        ]);
        let limits = RateLimits::parse(&h);
        let get = |k| limits.get(k).unwrap();
        assert_eq!(get(Kind::Requests).limit, 1000);
        assert_eq!(get(Kind::Requests).remaining, 999);
        // A reset before the answer's date is no wait at all.
        assert_eq!(get(Kind::Requests).reset, Some(Duration::ZERO));
        assert_eq!(get(Kind::Tokens).reset, Some(Duration::from_millis(500)));
        assert_eq!(get(Kind::InputTokens).limit, 80_000);
        assert_eq!(get(Kind::InputTokens).reset, Some(Duration::from_secs(1)));
        assert_eq!(get(Kind::OutputTokens).remaining, 16_000);
        // No date: counts without resets.
        let h = headers(&[
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "10"),
            ("anthropic-ratelimit-requests-reset", "2025-08-21T12:41:01Z"),
        ]);
        assert_eq!(
            RateLimits::parse(&h).get(Kind::Requests),
            Some(reading(50, 10))
        );
    }

    #[test]
    fn no_headers_nothing_read() {
        assert!(RateLimits::parse(&HeaderMap::new()).is_empty());
        let h = headers(&[("content-type", "application/json"), ("x-request-id", "r")]);
        assert!(RateLimits::parse(&h).is_empty());
    }

    #[test]
    fn hostile_values_are_dropped_not_trusted() {
        for (limit, remaining) in [
            ("", "1"),
            ("-1", "1"),
            ("1e9", "1"),
            ("99999999999999999999999", "1"),
            ("18446744073709551616", "1"), // u64::MAX + 1
            ("0", "0"),
            ("12", "-3"),
            ("12", "3.5"),
            ("12", "١٢"),
            ("0x10", "1"),
        ] {
            let h = headers(&[
                ("x-ratelimit-limit-requests", limit),
                ("x-ratelimit-remaining-requests", remaining),
                ("x-ratelimit-reset-requests", "1s"),
            ]);
            assert!(
                RateLimits::parse(&h).is_empty(),
                "{limit:?} / {remaining:?} must not be read"
            );
        }
        // Remaining above the limit is capped; a bad reset loses only the reset.
        let h = headers(&[
            ("x-ratelimit-limit-requests", " 18446744073709551615 "),
            ("x-ratelimit-remaining-requests", "18446744073709551615"),
            ("x-ratelimit-reset-requests", "9999999999999999999999h"),
            ("x-ratelimit-limit-tokens", "10"),
            ("x-ratelimit-remaining-tokens", "11"),
            ("x-ratelimit-reset-tokens", "soon"),
        ]);
        let limits = RateLimits::parse(&h);
        assert_eq!(
            limits.get(Kind::Requests),
            Some(reading(u64::MAX, u64::MAX))
        );
        assert_eq!(limits.get(Kind::Tokens), Some(reading(10, 10)));
        // Invalid UTF-8 and an Anthropic reset that is no date.
        let mut h = headers(&[
            ("date", "Thu, 21 Aug 2025 12:41:00 GMT"),
            ("anthropic-ratelimit-requests-limit", "50"),
            ("anthropic-ratelimit-requests-remaining", "49"),
            ("anthropic-ratelimit-requests-reset", "2025-02-30T00:00:00Z"),
        ]);
        h.insert(
            "x-ratelimit-limit-tokens",
            http::HeaderValue::from_bytes(b"\xff\xfe").unwrap(),
        );
        h.insert("x-ratelimit-remaining-tokens", "1".parse().unwrap());
        let limits = RateLimits::parse(&h);
        assert_eq!(limits.get(Kind::Requests), Some(reading(50, 49)));
        assert_eq!(limits.get(Kind::Tokens), None);
    }

    #[test]
    fn go_durations() {
        let ms = Duration::from_millis;
        for (text, want) in [
            ("6m0s", Some(ms(360_000))),
            ("1s", Some(ms(1000))),
            ("20ms", Some(ms(20))),
            ("8.64s", Some(ms(8640))),
            ("1h2m3.5s", Some(ms(3_723_500))),
            ("2m59.56s", Some(ms(179_560))),
            ("1.5ms", Some(Duration::from_micros(1500))),
            ("750us", Some(Duration::from_micros(750))),
            ("750µs", Some(Duration::from_micros(750))),
            ("3ns", Some(Duration::from_nanos(3))),
            ("0s", Some(Duration::ZERO)),
            ("0", Some(Duration::ZERO)),
            ("2", Some(ms(2000))),
            ("0.25", Some(ms(250))),
            (".5s", Some(ms(500))),
            ("1.000000000000000000000001s", Some(ms(1000))),
            ("", None),
            ("s", None),
            ("-1s", None),
            ("1x", None),
            ("1.2.3s", None),
            ("1m 2s", None),
            ("5d", None),
            ("1e3s", None),
            ("ms", None),
            (".s", None),
            ("600000000000h", None), // beyond u64 nanoseconds
            ("99999999999999999999999999h", None),
        ] {
            assert_eq!(parse_duration(text), want, "{text:?}");
        }
    }

    #[test]
    fn rfc3339_times() {
        let at = |s| parse_rfc3339(s).map(|d| (d.as_secs(), d.subsec_nanos()));
        assert_eq!(at("1970-01-01T00:00:00Z"), Some((0, 0)));
        assert_eq!(at("2025-08-21T12:40:59Z"), Some((1_755_780_059, 0)));
        assert_eq!(
            at("2025-08-21t12:40:59.25z"),
            Some((1_755_780_059, 250_000_000))
        );
        assert_eq!(at("2025-08-21T14:40:59+02:00"), Some((1_755_780_059, 0)));
        assert_eq!(at("2025-08-21T10:40:59-02:00"), Some((1_755_780_059, 0)));
        assert_eq!(at("2024-02-29T00:00:00Z"), Some((1_709_164_800, 0)));
        assert_eq!(at("2000-03-01T00:00:00Z"), Some((951_868_800, 0)));
        assert_eq!(at("9999-12-31T23:59:60Z"), Some((253_402_300_799, 0)));
        assert_eq!(
            at("2025-08-21T12:40:59.1234567891234Z"),
            Some((1_755_780_059, 123_456_789))
        );
        for bad in [
            "",
            "2025-08-21",
            "2025-08-21T12:40:59",
            "2025-02-29T00:00:00Z",
            "1900-03-01T00:00:00Z",
            "1969-12-31T23:59:59Z",
            "1970-01-01T00:00:00+00:01",
            "2025-13-01T00:00:00Z",
            "2025-00-01T00:00:00Z",
            "2025-08-21T24:00:00Z",
            "2025-08-21T12:60:00Z",
            "2025-08-21T12:40:59.Z",
            "2025-08-21T12:40:59+2:00",
            "2025-08-21T12:40:59+24:00",
            "+025-08-21T12:40:59Z",
            "2025/08/21T12:40:59Z",
            "2025-08-21T12:40:59Zjunk",
            "Thu, 21 Aug 2025 12:41:00 GMT",
        ] {
            assert_eq!(at(bad), None, "{bad:?}");
        }
    }

    /// A tracker with 1-minute buckets, forecasting after 4.
    fn tracker(limit: u64, t0: Instant) -> LimitTracker {
        LimitTracker::new(
            HeadroomConfig {
                bucket: Duration::from_secs(60),
                min_buckets: 4,
                ..HeadroomConfig::default()
            },
            reading(limit, limit),
            t0,
        )
    }

    /// The provider's side: a bucket of `limit` replenished over a minute.
    struct Provider {
        level: f64,
        at: Instant,
    }

    /// Feeds `per_minute[i]` units of consumption during minute `i` after `start` (in 10 equal
    /// requests, 6 s apart), as the provider reports them.
    fn feed(
        t: &mut LimitTracker,
        provider: &mut Provider,
        start: Instant,
        per_minute: &[f64],
    ) -> Vec<Update> {
        let mut updates = Vec::new();
        let limit = t.latest().limit as f64;
        for (minute, rate) in per_minute.iter().enumerate() {
            for i in 0..10 {
                let now = start + Duration::from_secs(minute as u64 * 60 + i * 6 + 3);
                let refill = limit * (now - provider.at).as_secs_f64() / 60.0;
                provider.level = ((provider.level + refill).min(limit) - rate / 10.0).max(0.0);
                provider.at = now;
                let u = t.observe(
                    reading(t.latest().limit, provider.level.round() as u64),
                    now,
                );
                if !u.is_empty() {
                    updates.push(u);
                }
            }
        }
        updates
    }

    fn full(limit: u64, t0: Instant) -> Provider {
        Provider {
            level: limit as f64,
            at: t0,
        }
    }

    #[test]
    fn consumption_is_measured_from_remaining_and_the_refill() {
        let t0 = Instant::now();
        let mut t = tracker(1000, t0);
        let mut provider = full(1000, t0);
        feed(&mut t, &mut provider, t0, &[300.0; 6]);
        let f = t.forecast().expect("four buckets closed after the first");
        assert!((f.rate_per_minute - 300.0).abs() < 15.0, "{f:?}");
        assert!(f.growth_per_hour.abs() < 60.0, "{f:?}");
        // Flat traffic at 30% of the limit: no exhaustion in sight, headroom fine.
        assert_eq!(f.capacity_per_minute, 1000.0);
        assert!(f.hours.is_none_or(|h| h > 24.0), "{f:?}");
        assert!(!t.is_low());
        assert!((t.used_share() - 0.03).abs() < 0.02, "{}", t.used_share());
    }

    #[test]
    fn rising_traffic_forecasts_the_hours_to_the_limit() {
        let t0 = Instant::now();
        let mut t = tracker(10_000, t0);
        let mut provider = full(10_000, t0);
        // +10 a minute per minute: +600 per minute per hour. From 2,000 a minute, 8,000 to go
        // once the line is at 2,100 → about (10,000 − 2,100) / 600 ≈ 13 hours.
        let rates: Vec<f64> = (0..11).map(|m| 2000.0 + 10.0 * m as f64).collect();
        let updates = feed(&mut t, &mut provider, t0, &rates);
        let f = t.forecast().unwrap();
        assert!((f.growth_per_hour - 600.0).abs() < 30.0, "{f:?}");
        assert!((f.rate_per_minute - 2090.0).abs() < 30.0, "{f:?}");
        let hours = f.hours.unwrap();
        assert!((hours - (10_000.0 - f.rate_per_minute) / f.growth_per_hour).abs() < 1e-9);
        assert!((12.0..14.5).contains(&hours), "{hours}");
        // Under 24 hours: low, reported once.
        assert!(t.is_low());
        let lows: Vec<_> = updates.iter().filter_map(|u| u.headroom).collect();
        assert_eq!(lows.len(), 1, "{lows:?}");
        assert!(matches!(lows[0], HeadroomChange::Low { hours } if hours < 24.0));
    }

    #[test]
    fn low_headroom_recovers_once_when_growth_stops() {
        let t0 = Instant::now();
        let mut t = tracker(1000, t0);
        let mut provider = full(1000, t0);
        // Growth of 4 a minute per minute from 500 (240 an hour): about two hours left.
        let rising: Vec<f64> = (0..8).map(|m| 500.0 + 4.0 * m as f64).collect();
        let mut changes: Vec<HeadroomChange> = feed(&mut t, &mut provider, t0, &rising)
            .into_iter()
            .filter_map(|u| u.headroom)
            .collect();
        assert!(t.is_low());
        assert!(
            matches!(changes[..], [HeadroomChange::Low { hours }] if (1.0..3.0).contains(&hours))
        );
        // Then flat: the slope fades as flat buckets fill the ring, the hours pass 24 and 36
        // without flapping, and the headroom recovers once.
        let mut hours_seen = Vec::new();
        for minute in 8..60 {
            let start = t0 + Duration::from_secs(60 * minute);
            let ups = feed(&mut t, &mut provider, start, &[532.0]);
            changes.extend(ups.into_iter().filter_map(|u| u.headroom));
            hours_seen.push(t.forecast().unwrap().hours);
        }
        assert_eq!(changes.len(), 2, "{changes:?} {hours_seen:?}");
        assert!(
            matches!(changes[1], HeadroomChange::Recovered { hours } if hours.is_none_or(|h| h >= 36.0)),
            "{changes:?}"
        );
        assert!(!t.is_low());
        assert!(
            hours_seen
                .iter()
                .any(|h| h.is_some_and(|h| (24.0..36.0).contains(&h))),
            "the forecast crossed the band between the thresholds: {hours_seen:?}"
        );
    }

    #[test]
    fn hysteresis_between_the_thresholds() {
        // Low below 24 h; 30 h keeps it low; 40 h clears; 30 h does not re-fire; none clears.
        let t0 = Instant::now();
        let mut t = tracker(100, t0);
        let mut judge = |hours: Option<f64>| {
            t.forecast = Some(Forecast {
                rate_per_minute: 1.0,
                growth_per_hour: 1.0,
                capacity_per_minute: 100.0,
                hours,
            });
            (t.judge(), t.is_low())
        };
        assert_eq!(judge(Some(30.0)), (None, false));
        assert_eq!(
            judge(Some(20.0)),
            (Some(HeadroomChange::Low { hours: 20.0 }), true)
        );
        assert_eq!(judge(Some(10.0)), (None, true));
        assert_eq!(judge(Some(30.0)), (None, true));
        assert_eq!(
            judge(Some(40.0)),
            (Some(HeadroomChange::Recovered { hours: Some(40.0) }), false)
        );
        assert_eq!(judge(Some(30.0)), (None, false));
        assert_eq!(
            judge(Some(0.0)),
            (Some(HeadroomChange::Low { hours: 0.0 }), true)
        );
        assert_eq!(
            judge(None),
            (Some(HeadroomChange::Recovered { hours: None }), false)
        );
    }

    #[test]
    fn at_the_limit_the_headroom_is_zero() {
        let t0 = Instant::now();
        let mut t = tracker(100, t0);
        let mut provider = full(100, t0);
        // Asking for 150 a minute of a 100 limit: the provider lets through what refills.
        let updates = feed(&mut t, &mut provider, t0, &[150.0; 6]);
        let f = t.forecast().unwrap();
        assert_eq!(f.hours, Some(0.0), "{f:?}");
        assert!(
            updates
                .iter()
                .any(|u| matches!(u.headroom, Some(HeadroomChange::Low { hours }) if hours == 0.0))
        );
    }

    #[test]
    fn a_limit_change_is_reported_once_confirmed() {
        let t0 = Instant::now();
        let s = Duration::from_secs;
        let mut t = tracker(1000, t0);
        assert!(t.observe(reading(1000, 990), t0 + s(1)).is_empty());
        // One stray answer with another limit, then back: nothing.
        assert!(t.observe(reading(500, 490), t0 + s(2)).is_empty());
        assert!(t.observe(reading(1000, 980), t0 + s(3)).is_empty());
        // Flickering between two values never confirms.
        for i in 0..10 {
            let limit = if i % 2 == 0 { 500 } else { 1000 };
            assert!(t.observe(reading(limit, 400), t0 + s(4 + i)).is_empty());
        }
        assert_eq!(t.limit(), 1000);
        // Three in a row: changed, once.
        assert!(t.observe(reading(500, 480), t0 + s(20)).is_empty());
        assert!(t.observe(reading(500, 470), t0 + s(21)).is_empty());
        let u = t.observe(reading(500, 460), t0 + s(22));
        assert_eq!(u.limit_changed, Some((1000, 500)));
        assert_eq!(t.limit(), 500);
        assert!(t.observe(reading(500, 450), t0 + s(23)).is_empty());
        // Remaining changing is never a limit change.
        for i in 0..20 {
            assert!(
                t.observe(reading(500, 500 - i), t0 + s(30 + i))
                    .limit_changed
                    .is_none()
            );
        }
    }

    #[test]
    fn a_lowered_limit_can_make_the_headroom_low_at_once() {
        let t0 = Instant::now();
        let mut t = tracker(10_000, t0);
        let mut provider = full(10_000, t0);
        let rising: Vec<f64> = (0..6).map(|m| 1000.0 + 2.0 * m as f64).collect();
        feed(&mut t, &mut provider, t0, &rising);
        assert!(!t.is_low(), "{:?}", t.forecast());
        let now = t0 + Duration::from_secs(6 * 60);
        let mut last = Update::default();
        for i in 0..3 {
            last = t.observe(reading(1100, 1000), now + Duration::from_secs(i));
        }
        assert_eq!(last.limit_changed, Some((10_000, 1100)));
        assert!(
            matches!(last.headroom, Some(HeadroomChange::Low { .. })),
            "{last:?}"
        );
    }

    #[test]
    fn silence_empties_the_trend_and_long_gaps_are_bounded() {
        let t0 = Instant::now();
        let mut t = tracker(1000, t0);
        let mut provider = full(1000, t0);
        let rising: Vec<f64> = (0..8).map(|m| 500.0 + 4.0 * m as f64).collect();
        feed(&mut t, &mut provider, t0, &rising);
        assert!(t.is_low());
        // A year without answers: the ring is all zeros, the forecast none, low cleared.
        let later = t0 + Duration::from_secs(365 * 86_400);
        assert_eq!(
            t.tick(later),
            Some(HeadroomChange::Recovered { hours: None })
        );
        let f = t.forecast().unwrap();
        assert_eq!(f.rate_per_minute, 0.0);
        assert_eq!(f.hours, None);
        // Time going backwards is ignored.
        assert_eq!(t.tick(t0), None);
        assert!(t.observe(reading(1000, 1000), t0).is_empty());
    }

    #[test]
    fn hostile_readings_do_not_break_the_tracker() {
        let t0 = Instant::now();
        let mut t = tracker(u64::MAX, t0);
        let s = Duration::from_secs;
        for i in 0..600 {
            let r = if i % 2 == 0 { 0 } else { u64::MAX };
            t.observe(reading(u64::MAX, r), t0 + s(i));
        }
        let f = t.forecast().unwrap();
        assert!(f.rate_per_minute.is_finite());
        assert!(f.hours.is_none_or(f64::is_finite));
        // A zero window or bucket in the configuration is floored, not divided by.
        let mut t = LimitTracker::new(
            HeadroomConfig {
                window: Duration::ZERO,
                bucket: Duration::ZERO,
                min_buckets: 0,
                confirm: 0,
                ..HeadroomConfig::default()
            },
            reading(10, 10),
            t0,
        );
        for i in 0..100 {
            t.observe(reading(10, i % 10), t0 + s(i));
        }
        assert!(t.forecast().unwrap().rate_per_minute.is_finite());
        assert_eq!(
            t.observe(reading(11, 0), t0 + s(200)).limit_changed,
            Some((10, 11))
        );
    }

    mod properties {
        use proptest::prelude::*;

        use super::*;

        /// Header values near the real ones and arbitrary bytes.
        fn value() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                any::<u64>().prop_map(|n| n.to_string().into_bytes()),
                "[0-9]{1,25}".prop_map(String::into_bytes),
                "[0-9.]{0,6}(ns|us|µs|ms|s|m|h){0,1}[0-9.]{0,4}[a-zµ]{0,2}".prop_map(String::into_bytes),
                "[0-9]{4}-[0-9]{2}-[0-9]{2}[Tt ][0-9]{2}:[0-9]{2}:[0-9]{2}(\\.[0-9]{0,12})?(Z|[+-][0-9]{2}:[0-9]{2})?"
                    .prop_map(String::into_bytes),
                proptest::collection::vec(any::<u8>(), 0..40),
            ]
        }

        const NAMES: [&str; 13] = [
            "date",
            "x-ratelimit-limit-requests",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-reset-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-tokens",
            "anthropic-ratelimit-requests-limit",
            "anthropic-ratelimit-requests-remaining",
            "anthropic-ratelimit-requests-reset",
            "anthropic-ratelimit-output-tokens-limit",
            "anthropic-ratelimit-output-tokens-remaining",
            "anthropic-ratelimit-output-tokens-reset",
        ];

        proptest! {
            #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

            #[test]
            fn parsing_never_panics_and_keeps_remaining_within_the_limit(
                values in proptest::collection::vec((0..NAMES.len(), value()), 0..24)
            ) {
                let mut h = HeaderMap::new();
                for (name, bytes) in &values {
                    if let Ok(v) = http::HeaderValue::from_bytes(bytes) {
                        h.append(NAMES[*name], v);
                    }
                }
                let limits = RateLimits::parse(&h);
                for (_, r) in limits.iter() {
                    prop_assert!(r.limit > 0);
                    prop_assert!(r.remaining <= r.limit);
                }
                for (_, bytes) in &values {
                    let text = String::from_utf8_lossy(bytes);
                    let _ = parse_duration(&text);
                    let _ = parse_rfc3339(&text);
                    let _ = parse_count(bytes);
                }
            }

            #[test]
            fn the_tracker_stays_finite_on_any_readings(
                readings in proptest::collection::vec((1..u64::MAX, any::<u64>(), 0..100_000u64), 1..200)
            ) {
                let t0 = Instant::now();
                let cfg = HeadroomConfig {
                    bucket: Duration::from_secs(1),
                    min_buckets: 2,
                    ..HeadroomConfig::default()
                };
                let mut at = t0;
                let mut t = LimitTracker::new(cfg, reading(readings[0].0, readings[0].1), t0);
                for (limit, remaining, step_ms) in readings {
                    at += Duration::from_millis(step_ms);
                    t.observe(reading(limit, remaining), at);
                    if let Some(f) = t.forecast() {
                        prop_assert!(f.rate_per_minute.is_finite() && f.rate_per_minute >= 0.0);
                        prop_assert!(f.growth_per_hour.is_finite());
                        prop_assert!(f.hours.is_none_or(|h| h.is_finite() && h >= 0.0));
                    }
                    prop_assert!((0.0..=1.0).contains(&t.used_share()));
                }
            }
        }
    }
}
