//! Waits between retries on the same target: decorrelated-jitter exponential backoff, and reading a
//! provider's `retry-after` / `retry-after-ms` headers.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Longest base or cap accepted by [`BackoffConfig::validate`].
const MAX_CAP: Duration = Duration::from_secs(3600);

/// Decorrelated-jitter backoff ("Exponential Backoff and Jitter", AWS Architecture Blog, 2015).
#[derive(Clone, Debug, PartialEq)]
pub struct BackoffConfig {
    /// Shortest wait, and the first wait's lower bound. Default 100 ms.
    pub base: Duration,
    /// Longest wait. Default 2 s.
    pub cap: Duration,
}

impl Default for BackoffConfig {
    fn default() -> Self {
        Self {
            base: Duration::from_millis(100),
            cap: Duration::from_secs(2),
        }
    }
}

impl BackoffConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if self.base.is_zero() || self.base > MAX_CAP {
            return Err(format!(
                "base must be greater than 0 and at most 1h, got {:?}",
                self.base
            ));
        }
        if self.cap < self.base || self.cap > MAX_CAP {
            return Err(format!(
                "cap must be at least base ({:?}) and at most 1h, got {:?}",
                self.base, self.cap
            ));
        }
        Ok(())
    }

    /// The wait before the next retry: `min(cap, uniform(base, max(base, 3 × previous)))`, where
    /// `previous` is the wait before the last retry (`None` before the first retry, counted as `base`).
    pub fn next_delay(&self, previous: Option<Duration>, rng: &mut fastrand::Rng) -> Duration {
        let base = nanos(self.base);
        let cap = nanos(self.cap);
        let prev = previous.map_or(base, nanos);
        let high = prev.saturating_mul(3).max(base);
        Duration::from_nanos(rng.u64(base..=high).min(cap))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

/// How long to wait before retrying: the provider's `retry-after` when it gave one, else the backoff
/// delay. `None` when that wait does not fit in `remaining` (the time left before the request's
/// deadline): move on to the next target instead.
pub fn plan_wait(
    backoff: Duration,
    retry_after: Option<Duration>,
    remaining: Duration,
) -> Option<Duration> {
    let wait = retry_after.unwrap_or(backoff);
    (wait < remaining).then_some(wait)
}

/// Reads a provider's requested wait. `retry_after_ms` (OpenAI's `retry-after-ms`, milliseconds,
/// integer or decimal) takes precedence when it parses; otherwise `retry_after` is read as seconds
/// (integer or decimal) or as an HTTP date (IMF-fixdate, RFC 850 or asctime, RFC 9110 §5.6.7),
/// measured from `now_wall` (a date in the past means no wait). Negative, non-finite or malformed
/// values give `None`.
pub fn parse_retry_after(
    retry_after: Option<&str>,
    retry_after_ms: Option<&str>,
    now_wall: SystemTime,
) -> Option<Duration> {
    if let Some(ms) = retry_after_ms.and_then(parse_number) {
        return Duration::try_from_secs_f64(ms / 1000.0).ok();
    }
    let value = retry_after?.trim();
    if let Some(secs) = parse_number(value) {
        return Duration::try_from_secs_f64(secs).ok();
    }
    let at = parse_http_date(value)?;
    Some(at.duration_since(now_wall).unwrap_or(Duration::ZERO))
}

/// A non-negative decimal number: digits, at most one dot, nothing else (no sign, exponent or `inf`).
fn parse_number(s: &str) -> Option<f64> {
    let s = s.trim();
    let mut dots = 0;
    let mut digits = 0;
    for c in s.bytes() {
        match c {
            b'0'..=b'9' => digits += 1,
            b'.' => dots += 1,
            _ => return None,
        }
    }
    if digits == 0 || dots > 1 {
        return None;
    }
    s.parse::<f64>().ok().filter(|x| x.is_finite())
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];
const DAYS: [&str; 7] = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"];
const LONG_DAYS: [&str; 7] = [
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
    "Sunday",
];

/// Parses the three HTTP date forms (GMT only). The weekday name must be valid but is not checked
/// against the date.
fn parse_http_date(s: &str) -> Option<SystemTime> {
    let mut parts = s.split_ascii_whitespace();
    let first = parts.next()?;
    let (year, month, day, time) = if let Some(day_name) = first.strip_suffix(',') {
        if DAYS.contains(&day_name) {
            // IMF-fixdate: Sun, 06 Nov 1994 08:49:37 GMT
            let day = parse_digits(parts.next()?, 2)?;
            let month = month_number(parts.next()?)?;
            let year = parse_digits(parts.next()?, 4)?;
            (year, month, day, parts.next()?)
        } else if LONG_DAYS.contains(&day_name) {
            // RFC 850: Sunday, 06-Nov-94 08:49:37 GMT
            let mut date = parts.next()?.split('-');
            let day = parse_digits(date.next()?, 2)?;
            let month = month_number(date.next()?)?;
            let yy = parse_digits(date.next()?, 2)?;
            if date.next().is_some() {
                return None;
            }
            // RFC 9110: a two-digit year more than 50 years ahead is in the past century.
            let year = if yy < 70 { 2000 + yy } else { 1900 + yy };
            (year, month, day, parts.next()?)
        } else {
            return None;
        }
    } else if DAYS.contains(&first) {
        // asctime: Sun Nov  6 08:49:37 1994
        let month = month_number(parts.next()?)?;
        let day_text = parts.next()?;
        let day = match day_text.len() {
            1 | 2 => parse_digits(day_text, day_text.len())?,
            _ => return None,
        };
        let time = parts.next()?;
        let year = parse_digits(parts.next()?, 4)?;
        if parts.next().is_some() {
            return None;
        }
        return to_system_time(year, month, day, time);
    } else {
        return None;
    };
    if parts.next()? != "GMT" || parts.next().is_some() {
        return None;
    }
    to_system_time(year, month, day, time)
}

fn parse_digits(s: &str, len: usize) -> Option<u64> {
    if s.len() != len || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

fn month_number(s: &str) -> Option<u64> {
    MONTHS.iter().position(|m| *m == s).map(|i| i as u64 + 1)
}

fn to_system_time(year: u64, month: u64, day: u64, time: &str) -> Option<SystemTime> {
    let mut hms = time.split(':');
    let hour = parse_digits(hms.next()?, 2)?;
    let minute = parse_digits(hms.next()?, 2)?;
    let second = parse_digits(hms.next()?, 2)?;
    if hms.next().is_some() || hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let leap = (year.is_multiple_of(4) && !year.is_multiple_of(100)) || year.is_multiple_of(400);
    let month_days = match month {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    };
    if year < 1970 || day == 0 || day > month_days {
        return None;
    }
    let days = days_from_civil(year, month, day);
    let secs = days * 86_400 + hour * 3_600 + minute * 60 + second;
    UNIX_EPOCH.checked_add(Duration::from_secs(secs))
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`), for
/// years from 1970.
fn days_from_civil(year: u64, month: u64, day: u64) -> u64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if month > 2 { month - 3 } else { month + 9 };
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// The waits before retries 1..=n, each from the previous one.
    fn sequence(cfg: &BackoffConfig, seed: u64, n: usize) -> Vec<Duration> {
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut previous = None;
        (0..n)
            .map(|_| {
                let d = cfg.next_delay(previous, &mut rng);
                previous = Some(d);
                d
            })
            .collect()
    }

    #[test]
    fn delays_stay_between_base_and_cap() {
        let cfg = BackoffConfig::default();
        for seed in 0..500 {
            let delays = sequence(&cfg, seed, 20);
            assert!(delays[0] <= ms(300), "first wait is at most 3 × base");
            for d in delays {
                assert!(d >= cfg.base && d <= cfg.cap, "{d:?}");
            }
        }
        // Extremes do not panic or escape the bounds.
        let mut rng = fastrand::Rng::with_seed(1);
        assert!(cfg.next_delay(Some(Duration::MAX), &mut rng) <= cfg.cap);
        assert!(cfg.next_delay(Some(Duration::ZERO), &mut rng) >= cfg.base);
        let flat = BackoffConfig {
            base: ms(250),
            cap: ms(250),
        };
        assert!(sequence(&flat, 7, 10).iter().all(|d| *d == ms(250)));
    }

    #[test]
    fn delays_grow_on_average_until_the_cap() {
        let cfg = BackoffConfig::default();
        let runs = 2_000;
        let mut sums = [0f64; 6];
        for seed in 0..runs {
            for (sum, d) in sums.iter_mut().zip(sequence(&cfg, seed, 6)) {
                *sum += d.as_secs_f64();
            }
        }
        let means: Vec<f64> = sums.iter().map(|s| s / runs as f64).collect();
        // First wait: uniform(100 ms, 300 ms), mean 200 ms.
        assert!((0.19..0.21).contains(&means[0]), "{means:?}");
        for pair in means.windows(2).take(3) {
            assert!(pair[1] > pair[0] * 1.3, "{means:?}");
        }
        assert!(means[5] <= 2.0 && means[5] > 1.0, "{means:?}");
    }

    #[test]
    fn same_seed_same_waits() {
        let cfg = BackoffConfig::default();
        assert_eq!(sequence(&cfg, 42, 10), sequence(&cfg, 42, 10));
        assert_ne!(sequence(&cfg, 42, 10), sequence(&cfg, 43, 10));
    }

    #[test]
    fn plan_wait_prefers_retry_after_and_respects_the_deadline() {
        let cases = [
            // (backoff, retry-after, remaining) → wait
            (ms(100), None, ms(1_000), Some(ms(100))),
            (ms(100), Some(ms(1_000)), ms(5_000), Some(ms(1_000))),
            (ms(100), Some(ms(1_000)), ms(1_000), None),
            (ms(100), Some(ms(10)), ms(1_000), Some(ms(10))),
            (ms(500), None, ms(200), None),
            (ms(100), Some(Duration::ZERO), ms(1), Some(Duration::ZERO)),
        ];
        for (backoff, retry_after, remaining, expected) in cases {
            assert_eq!(
                plan_wait(backoff, retry_after, remaining),
                expected,
                "{backoff:?} {retry_after:?} {remaining:?}"
            );
        }
    }

    #[test]
    fn parses_retry_after_headers() {
        // Sun, 06 Nov 1994 08:49:37 GMT
        let now = UNIX_EPOCH + Duration::from_secs(784_111_777);
        let s = Duration::from_secs;
        let cases: &[(Option<&str>, Option<&str>, Option<Duration>)] = &[
            (None, None, None),
            (Some("120"), None, Some(s(120))),
            (Some(" 3 "), None, Some(s(3))),
            (Some("0"), None, Some(Duration::ZERO)),
            (Some("1.5"), None, Some(ms(1_500))),
            (Some("-1"), None, None),
            (Some("+1"), None, None),
            (Some("1e3"), None, None),
            (Some("inf"), None, None),
            (Some("NaN"), None, None),
            (Some("1.2.3"), None, None),
            (Some("."), None, None),
            (Some(""), None, None),
            (Some("soon"), None, None),
            // retry-after-ms wins when it parses.
            (Some("10"), Some("250"), Some(ms(250))),
            (None, Some("1500.5"), Some(Duration::from_micros(1_500_500))),
            (Some("10"), Some("oops"), Some(s(10))),
            (Some("10"), Some("-5"), Some(s(10))),
            // HTTP dates, all three forms, measured from now.
            (Some("Sun, 06 Nov 1994 08:49:47 GMT"), None, Some(s(10))),
            (Some("Sunday, 06-Nov-94 08:49:47 GMT"), None, Some(s(10))),
            (Some("Sun Nov  6 08:49:47 1994"), None, Some(s(10))),
            (Some("Mon, 07 Nov 1994 08:49:37 GMT"), None, Some(s(86_400))),
            (
                Some("Wed, 01 Mar 1995 00:00:00 GMT"),
                None,
                Some(s(794_016_000 - 784_111_777)),
            ),
            // In the past: no wait.
            (
                Some("Sun, 06 Nov 1994 08:49:00 GMT"),
                None,
                Some(Duration::ZERO),
            ),
            (
                Some("Thu, 01 Jan 1970 00:00:00 GMT"),
                None,
                Some(Duration::ZERO),
            ),
            // Malformed dates.
            (Some("Sun, 06 Nov 1994 08:49:37 PST"), None, None),
            (Some("Sun, 06 Nov 1994 08:49:37"), None, None),
            (Some("Sun, 06 Nov 1994 08:49:37 GMT extra"), None, None),
            (Some("Sun, 31 Feb 1994 08:49:37 GMT"), None, None),
            (Some("Sun, 06 Nov 1994 24:00:00 GMT"), None, None),
            (Some("Sun, 6 Nov 1994 08:49:37 GMT"), None, None),
            (Some("Sun, 06 Foo 1994 08:49:37 GMT"), None, None),
            (Some("Xyz, 06 Nov 1994 08:49:37 GMT"), None, None),
            (Some("Sunday, 06-Nov-94-1 08:49:37 GMT"), None, None),
            (Some("Sun, 06 Nov 1969 08:49:37 GMT"), None, None),
        ];
        for (retry_after, retry_after_ms, expected) in cases {
            assert_eq!(
                parse_retry_after(*retry_after, *retry_after_ms, now),
                *expected,
                "{retry_after:?} {retry_after_ms:?}"
            );
        }
    }

    #[test]
    fn http_dates_match_unix_time() {
        let cases = [
            ("Tue, 02 Jun 2026 12:00:00 GMT", 1_780_401_600),
            ("Tue, 29 Feb 2000 00:00:00 GMT", 951_782_400),
            ("Thu, 01 Jan 1970 00:00:00 GMT", 0),
            ("Tuesday, 02-Jun-26 12:00:00 GMT", 1_780_401_600),
            ("Tue Jun  2 12:00:00 2026", 1_780_401_600),
        ];
        for (text, unix) in cases {
            assert_eq!(
                parse_http_date(text),
                Some(UNIX_EPOCH + Duration::from_secs(unix)),
                "{text}"
            );
        }
        assert_eq!(parse_http_date("Mon, 29 Feb 2100 00:00:00 GMT"), None);
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(BackoffConfig::default().validate(), Ok(()));
        let cases = [
            (
                BackoffConfig {
                    base: Duration::ZERO,
                    cap: ms(1),
                },
                "base",
            ),
            (
                BackoffConfig {
                    base: ms(200),
                    cap: ms(100),
                },
                "cap",
            ),
            (
                BackoffConfig {
                    base: ms(100),
                    cap: Duration::from_secs(7200),
                },
                "cap",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
    }
}
