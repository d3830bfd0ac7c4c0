//! Retry budget: retries and fallback attempts may be at most a share of first attempts over a sliding
//! window, plus a small floor — the guard against retry storms and silent quota drains.
//!
//! The caller keeps one budget per target and one gateway-wide. Every first attempt is recorded in both
//! ([`RetryBudget::record_request`]); a retry or fallback attempt needs both to agree: check with
//! [`RetryBudget::can_withdraw`] on each, then [`RetryBudget::withdraw`] from each (or use
//! [`RetryBudget::try_withdraw`] when only one budget is involved), so a refusal by one does not spend
//! the other.

use std::time::Duration;

use tokio::time::Instant;

use super::window::Window;

/// Longest window accepted by [`RetryBudgetConfig::validate`].
const MAX_WINDOW: Duration = Duration::from_secs(3600);

/// How many retries a budget grants.
#[derive(Clone, Debug, PartialEq)]
pub struct RetryBudgetConfig {
    /// Retries allowed per first attempt in the window (≥ 0). Default 0.2.
    pub ratio: f64,
    /// Sliding window, counted in 10 buckets. Default 10 s.
    pub window: Duration,
    /// Retries per second allowed with no traffic at all (≥ 0). Default 1.
    pub min_per_second: f64,
}

impl Default for RetryBudgetConfig {
    fn default() -> Self {
        Self {
            ratio: 0.2,
            window: Duration::from_secs(10),
            min_per_second: 1.0,
        }
    }
}

impl RetryBudgetConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.ratio.is_finite() && self.ratio >= 0.0 && self.ratio <= 1000.0) {
            return Err(format!(
                "ratio must be a number from 0 to 1000, got {}",
                self.ratio
            ));
        }
        if self.window.is_zero() || self.window > MAX_WINDOW {
            return Err(format!(
                "window must be greater than 0 and at most 1h, got {:?}",
                self.window
            ));
        }
        if !(self.min_per_second.is_finite()
            && self.min_per_second >= 0.0
            && self.min_per_second <= 1e6)
        {
            return Err(format!(
                "min_per_second must be a number from 0 to 1000000, got {}",
                self.min_per_second
            ));
        }
        Ok(())
    }
}

/// Counts of a budget's window.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BudgetSnapshot {
    /// First attempts in the window.
    pub requests: u64,
    /// Retries and fallback attempts in the window.
    pub retries: u64,
    /// Retries still allowed now.
    pub available: u64,
}

/// A retry budget over a sliding window.
///
/// A retry is allowed iff `retries_in_window + 1 ≤ ratio × requests_in_window + min_per_second ×
/// window_seconds`. The window covers the last 9 to 10 tenths of `window` (it slides by tenths).
#[derive(Clone, Debug)]
pub struct RetryBudget {
    ratio: f64,
    floor: f64,
    /// `a` = first attempts, `b` = retries.
    window: Window,
}

impl RetryBudget {
    /// An empty budget. `cfg` should have passed [`RetryBudgetConfig::validate`]; negative or non-finite
    /// values count as 0.
    pub fn new(cfg: RetryBudgetConfig) -> Self {
        let sane = |x: f64| if x.is_finite() && x > 0.0 { x } else { 0.0 };
        Self {
            ratio: sane(cfg.ratio),
            floor: sane(cfg.min_per_second) * cfg.window.as_secs_f64(),
            window: Window::new(cfg.window),
        }
    }

    /// Counts a first attempt.
    pub fn record_request(&mut self, now: Instant) {
        self.window.add(now, 1, 0);
    }

    /// How many retries the budget allows right now.
    pub fn available(&self, now: Instant) -> u64 {
        let (requests, retries) = self.window.totals(now);
        let allowance = self.ratio * requests as f64 + self.floor;
        // The epsilon keeps products such as 0.29 × 100 = 28.999… from losing a retry; `as` saturates
        // and the allowance is never negative.
        ((allowance + 1e-9).floor() as u64).saturating_sub(retries)
    }

    /// Whether one more retry would be allowed now (spends nothing).
    pub fn can_withdraw(&self, now: Instant) -> bool {
        self.available(now) >= 1
    }

    /// Counts a retry unconditionally (after [`RetryBudget::can_withdraw`] agreed here and elsewhere).
    pub fn withdraw(&mut self, now: Instant) {
        self.window.add(now, 0, 1);
    }

    /// Counts a retry if the budget allows it; returns whether it did.
    pub fn try_withdraw(&mut self, now: Instant) -> bool {
        let ok = self.can_withdraw(now);
        if ok {
            self.withdraw(now);
        }
        ok
    }

    /// The window's counts as of `now`.
    pub fn snapshot(&self, now: Instant) -> BudgetSnapshot {
        let (requests, retries) = self.window.totals(now);
        BudgetSnapshot {
            requests,
            retries,
            available: self.available(now),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// Withdraws at `now` until refused; returns how many were granted.
    fn drain(b: &mut RetryBudget, now: Instant) -> u64 {
        let mut n = 0;
        while b.try_withdraw(now) {
            n += 1;
            assert!(n < 1_000_000, "budget never runs out");
        }
        n
    }

    #[test]
    fn the_ratio_holds_over_a_window() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        // 1000 first attempts over 10 s.
        for i in 0..1000 {
            b.record_request(t0 + ms(i * 10));
        }
        let now = t0 + ms(9_990);
        assert_eq!(b.available(now), 210);
        assert_eq!(drain(&mut b, now), 200 + 10);
        assert_eq!(
            b.snapshot(now),
            BudgetSnapshot {
                requests: 1000,
                retries: 210,
                available: 0
            }
        );
    }

    #[test]
    fn checking_spends_nothing() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..100 {
            assert!(b.can_withdraw(t0));
        }
        assert_eq!(b.snapshot(t0).retries, 0);
        b.withdraw(t0);
        assert_eq!(b.snapshot(t0).retries, 1);
    }

    #[test]
    fn the_floor_allows_a_trickle_with_no_traffic() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        // min_per_second × window = 10 at once...
        assert_eq!(drain(&mut b, t0), 10);
        // ...and about one a second over time (in bursts of up to 10 as the window slides): one try
        // every 100 ms for a minute.
        let granted = 10
            + (1..=600)
                .filter(|i| b.try_withdraw(t0 + ms(i * 100)))
                .count();
        assert!((55..=66).contains(&granted), "granted {granted}");
        // No floor, no traffic: nothing.
        let mut none = RetryBudget::new(RetryBudgetConfig {
            min_per_second: 0.0,
            ..RetryBudgetConfig::default()
        });
        assert!(!none.try_withdraw(t0));
    }

    #[test]
    fn old_buckets_expire() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig::default());
        for _ in 0..1000 {
            b.record_request(t0);
        }
        assert_eq!(drain(&mut b, t0 + ms(500)), 210);
        // The first second's bucket leaves the window at 10 s: requests and retries alike.
        let later = t0 + ms(10_000);
        assert_eq!(
            b.snapshot(later),
            BudgetSnapshot {
                requests: 0,
                retries: 0,
                available: 10
            }
        );
        assert_eq!(drain(&mut b, later), 10);
    }

    #[test]
    fn fractional_allowances_round_down_without_losing_one() {
        let t0 = Instant::now();
        let mut b = RetryBudget::new(RetryBudgetConfig {
            ratio: 0.29,
            min_per_second: 0.0,
            ..RetryBudgetConfig::default()
        });
        for _ in 0..100 {
            b.record_request(t0);
        }
        assert_eq!(b.available(t0), 29);
        for _ in 0..3 {
            b.record_request(t0);
        }
        assert_eq!(b.available(t0), 29); // 29.87
    }

    /// The property the retry budget exists for: during a total outage of the primary, with each client
    /// request allowed one retry and one fallback, the budget keeps upstream attempts at about 1.2 per
    /// client request (20% + the floor), both at the dead primary and overall. No breaker here: this
    /// is the budget alone.
    #[test]
    fn outage_keeps_attempts_per_request_near_one_point_two() {
        let t0 = Instant::now();
        let cfg = RetryBudgetConfig::default();
        let mut primary = RetryBudget::new(cfg.clone());
        let mut global = RetryBudget::new(cfg);
        let (mut requests, mut attempts, mut primary_attempts, mut answered) = (0u64, 0, 0, 0);
        // 50 requests a second for 30 s.
        for i in 0..1500u64 {
            let now = t0 + ms(i * 20);
            requests += 1;
            // First attempt: the dead primary.
            primary.record_request(now);
            global.record_request(now);
            attempts += 1;
            primary_attempts += 1;
            // One retry on the primary, if both budgets agree.
            if primary.can_withdraw(now) && global.can_withdraw(now) {
                primary.withdraw(now);
                global.withdraw(now);
                attempts += 1;
                primary_attempts += 1;
            }
            // One fallback to the healthy secondary, charged to the failed target and gateway-wide.
            if primary.can_withdraw(now) && global.can_withdraw(now) {
                primary.withdraw(now);
                global.withdraw(now);
                attempts += 1;
                answered += 1;
            }
        }
        let per_request = attempts as f64 / requests as f64;
        let primary_per_request = primary_attempts as f64 / requests as f64;
        // ratio 0.2 + floor 1/s ÷ 50 req/s = 1.22 at most.
        assert!(per_request <= 1.22 + 1e-9, "{per_request}");
        assert!(per_request >= 1.18, "budget should be used: {per_request}");
        assert!(primary_per_request <= 1.22 + 1e-9, "{primary_per_request}");
        assert!(answered > 0);
        // A naive client retrying 5 times sends 6 attempts per request to the dead provider.
        assert!(per_request * 4.0 < 6.0);
    }

    #[test]
    fn validate_names_the_bad_field() {
        assert_eq!(RetryBudgetConfig::default().validate(), Ok(()));
        let d = RetryBudgetConfig::default;
        let cases = [
            (RetryBudgetConfig { ratio: -0.1, ..d() }, "ratio"),
            (
                RetryBudgetConfig {
                    ratio: f64::NAN,
                    ..d()
                },
                "ratio",
            ),
            (
                RetryBudgetConfig {
                    ratio: f64::INFINITY,
                    ..d()
                },
                "ratio",
            ),
            (
                RetryBudgetConfig {
                    window: Duration::ZERO,
                    ..d()
                },
                "window",
            ),
            (
                RetryBudgetConfig {
                    window: Duration::from_secs(7200),
                    ..d()
                },
                "window",
            ),
            (
                RetryBudgetConfig {
                    min_per_second: -1.0,
                    ..d()
                },
                "min_per_second",
            ),
            (
                RetryBudgetConfig {
                    min_per_second: f64::NAN,
                    ..d()
                },
                "min_per_second",
            ),
        ];
        for (cfg, field) in cases {
            let err = cfg.validate().expect_err(field);
            assert!(err.starts_with(field), "{err}");
        }
        // A zero ratio (retries only from the floor) is allowed.
        assert_eq!(RetryBudgetConfig { ratio: 0.0, ..d() }.validate(), Ok(()));
    }
}
