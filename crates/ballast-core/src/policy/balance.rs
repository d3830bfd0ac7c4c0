//! Choosing a target within a tier: weighted random, or power of two choices over a latency EWMA and
//! the in-flight count. Weight 0 means "drained": never picked.

use std::cmp::Ordering;
use std::time::Duration;

use tokio::time::Instant;

/// A time-decayed moving average of latency.
///
/// A sample observed `Δt` after the previous one gets weight `α = 1 − e^(−Δt/τ)`, so the average forgets
/// at the same speed whatever the request rate: after `τ` without a change, about 63% of the way to the
/// new level. `Δt` is floored at `τ / 10 000` (1 ms for τ = 10 s) so that samples landing at the same
/// instant still count a little (0.01% each); up to that rate per target, the average is purely
/// time-based. The first sample is taken as is.
#[derive(Clone, Debug)]
pub struct Ewma {
    tau: Duration,
    value_nanos: f64,
    last: Option<Instant>,
}

impl Default for Ewma {
    /// τ = 10 s.
    fn default() -> Self {
        Self::new(Self::DEFAULT_TAU)
    }
}

impl Ewma {
    /// The default time constant.
    pub const DEFAULT_TAU: Duration = Duration::from_secs(10);

    /// An empty average with time constant `tau` (zero acts as "latest sample only").
    pub fn new(tau: Duration) -> Self {
        Self {
            tau,
            value_nanos: 0.0,
            last: None,
        }
    }

    /// Adds a latency sample taken at `now`.
    pub fn observe(&mut self, now: Instant, latency: Duration) {
        let sample = latency.as_nanos() as f64;
        let Some(last) = self.last else {
            self.value_nanos = sample;
            self.last = Some(now);
            return;
        };
        let tau = self.tau.as_secs_f64();
        let alpha = if tau > 0.0 {
            let dt = now
                .saturating_duration_since(last)
                .as_secs_f64()
                .max(tau / 10_000.0);
            1.0 - (-dt / tau).exp()
        } else {
            1.0
        };
        self.value_nanos += alpha * (sample - self.value_nanos);
        if now > last {
            self.last = Some(now);
        }
    }

    /// The average, `None` before the first sample.
    pub fn get(&self) -> Option<Duration> {
        // `as` saturates and maps NaN to 0.
        self.last
            .map(|_| Duration::from_nanos(self.value_nanos.max(0.0) as u64))
    }
}

/// Picks an index with probability proportional to its weight among the eligible ones (`eligible[i]`
/// and `weights[i] > 0`; indexes past either slice's end are not eligible). `None` if none is.
pub fn pick_weighted(weights: &[u32], eligible: &[bool], rng: &mut fastrand::Rng) -> Option<usize> {
    let pairs = || weights.iter().zip(eligible);
    let total: u64 = pairs()
        .filter(|(_, ok)| **ok)
        .map(|(w, _)| u64::from(*w))
        .sum();
    if total == 0 {
        return None;
    }
    let mut r = rng.u64(0..total);
    for (i, (w, ok)) in pairs().enumerate() {
        if !*ok {
            continue;
        }
        let w = u64::from(*w);
        if r < w {
            return Some(i);
        }
        r -= w;
    }
    None
}

/// One target as the latency balancer sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct P2cCandidate {
    /// Not disabled, breaker not open, bulkhead not full.
    pub eligible: bool,
    /// Latency average, `None` before any answer.
    pub ewma: Option<Duration>,
    /// Requests in flight to the target now.
    pub in_flight: u32,
    /// Configured weight: cost is divided by it; 0 means never picked.
    pub weight: u32,
}

impl P2cCandidate {
    fn usable(&self) -> bool {
        self.eligible && self.weight > 0
    }
}

/// Power of two choices: draws two distinct usable candidates at random and returns the cheaper, where
/// cost = latency × (in flight + 1) / weight. A candidate with no latency yet is assumed as fast as the
/// other one (so its in-flight count decides, and a tie goes to it: new targets get tried without all
/// traffic piling onto them before their first answer); with both unknown, in-flight / weight decides.
/// A single usable candidate is returned as is; `None` if there is none.
pub fn pick_p2c(candidates: &[P2cCandidate], rng: &mut fastrand::Rng) -> Option<usize> {
    let usable = candidates.iter().filter(|c| c.usable()).count();
    let nth_usable = |n: usize| {
        candidates
            .iter()
            .enumerate()
            .filter(|(_, c)| c.usable())
            .nth(n)
    };
    match usable {
        0 => None,
        1 => nth_usable(0).map(|(i, _)| i),
        _ => {
            let first = rng.usize(0..usable);
            let mut second = rng.usize(0..usable - 1);
            if second >= first {
                second += 1;
            }
            let (i, a) = nth_usable(first)?;
            let (j, b) = nth_usable(second)?;
            Some(match compare_cost(a, b) {
                Ordering::Greater => j,
                Ordering::Less | Ordering::Equal => i,
            })
        }
    }
}

/// Orders `a` against `b` by cost (`Less` = `a` is cheaper); ties favour the candidate with unknown
/// latency.
fn compare_cost(a: &P2cCandidate, b: &P2cCandidate) -> Ordering {
    let nanos = |d: Duration| d.as_nanos();
    let (la, lb) = match (a.ewma, b.ewma) {
        (Some(x), Some(y)) => (nanos(x), nanos(y)),
        (Some(x), None) => (nanos(x), nanos(x)),
        (None, Some(y)) => (nanos(y), nanos(y)),
        (None, None) => (1, 1),
    };
    // Cross-multiplied: la × (fa + 1) / wa  vs  lb × (fb + 1) / wb.
    let cost = |latency: u128, c: &P2cCandidate, other_weight: u32| {
        latency
            .max(1)
            .saturating_mul(u128::from(c.in_flight) + 1)
            .saturating_mul(u128::from(other_weight))
    };
    cost(la, a, b.weight)
        .cmp(&cost(lb, b, a.weight))
        .then_with(|| b.ewma.is_none().cmp(&a.ewma.is_none()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn counts(n: usize, picks: usize, mut pick: impl FnMut() -> Option<usize>) -> Vec<usize> {
        let mut counts = vec![0; n];
        for _ in 0..picks {
            counts[pick().expect("something eligible")] += 1;
        }
        counts
    }

    #[test]
    fn weights_are_respected_over_many_picks() {
        let cases: &[(&[u32], &[bool])] = &[
            (&[1, 1], &[true, true]),
            (&[1, 2, 7], &[true, true, true]),
            (&[5, 0, 5], &[true, true, true]),
            (&[3, 100, 1], &[true, false, true]),
            (&[u32::MAX, u32::MAX], &[true, true]),
        ];
        for (seed, (weights, eligible)) in cases.iter().enumerate() {
            let mut rng = fastrand::Rng::with_seed(seed as u64);
            let n = 10_000;
            let got = counts(weights.len(), n, || {
                pick_weighted(weights, eligible, &mut rng)
            });
            let total: u64 = weights
                .iter()
                .zip(*eligible)
                .filter(|(_, ok)| **ok)
                .map(|(w, _)| u64::from(*w))
                .sum();
            for i in 0..weights.len() {
                let expected = if eligible[i] {
                    n as f64 * weights[i] as f64 / total as f64
                } else {
                    0.0
                };
                // Within 2.5 points of the expected share (several standard deviations at 10k).
                assert!(
                    (got[i] as f64 - expected).abs() <= 250.0,
                    "weights {weights:?} eligible {eligible:?}: got {got:?}"
                );
                if expected == 0.0 {
                    assert_eq!(got[i], 0, "ineligible or drained picked: {got:?}");
                }
            }
        }
    }

    #[test]
    fn weighted_with_nothing_eligible_is_none() {
        let mut rng = fastrand::Rng::with_seed(1);
        assert_eq!(pick_weighted(&[], &[], &mut rng), None);
        assert_eq!(pick_weighted(&[1, 1], &[false, false], &mut rng), None);
        assert_eq!(pick_weighted(&[0, 0], &[true, true], &mut rng), None);
        // Entries past the shorter slice are not eligible.
        assert_eq!(pick_weighted(&[1, 1], &[false], &mut rng), None);
        assert_eq!(pick_weighted(&[0, 3], &[true, true], &mut rng), Some(1));
    }

    fn cand(ewma_ms: Option<u64>, in_flight: u32) -> P2cCandidate {
        P2cCandidate {
            eligible: true,
            ewma: ewma_ms.map(ms),
            in_flight,
            weight: 1,
        }
    }

    #[test]
    fn p2c_single_or_none() {
        let mut rng = fastrand::Rng::with_seed(3);
        assert_eq!(pick_p2c(&[], &mut rng), None);
        let off = P2cCandidate {
            eligible: false,
            ..cand(Some(1), 0)
        };
        let drained = P2cCandidate {
            weight: 0,
            ..cand(Some(1), 0)
        };
        assert_eq!(pick_p2c(&[off, drained], &mut rng), None);
        for _ in 0..100 {
            assert_eq!(
                pick_p2c(&[off, cand(Some(5_000), 50), drained], &mut rng),
                Some(1)
            );
        }
    }

    #[test]
    fn p2c_prefers_the_cheaper() {
        let mut rng = fastrand::Rng::with_seed(4);
        let cases: &[(&[P2cCandidate], usize)] = &[
            // (candidates, the one always picked from a pair of two)
            (&[cand(Some(1_000), 0), cand(Some(100), 0)], 1),
            // Load counts: 100 ms × 21 in flight costs more than 1 s × 1.
            (&[cand(Some(100), 20), cand(Some(1_000), 0)], 1),
            // Unknown latency ties with the known one: fewer in flight wins, a tie goes to the new one.
            (&[cand(Some(100), 0), cand(None, 0)], 1),
            (&[cand(None, 3), cand(Some(100), 0)], 1),
            (&[cand(None, 2), cand(None, 0)], 1),
            // Weight divides cost: 300 ms / 3 < 200 ms / 1.
            (
                &[
                    cand(Some(200), 0),
                    P2cCandidate {
                        weight: 3,
                        ..cand(Some(300), 0)
                    },
                ],
                1,
            ),
        ];
        for (candidates, best) in cases {
            for _ in 0..50 {
                assert_eq!(
                    pick_p2c(candidates, &mut rng),
                    Some(*best),
                    "{candidates:?}"
                );
            }
        }
    }

    #[test]
    fn p2c_spreads_over_many_and_never_picks_the_worst() {
        let mut rng = fastrand::Rng::with_seed(5);
        let candidates = [
            cand(Some(100), 0),
            cand(Some(200), 0),
            cand(Some(300), 0),
            P2cCandidate {
                eligible: false,
                ..cand(Some(1), 0)
            },
            cand(Some(400), 0),
        ];
        let got = counts(candidates.len(), 10_000, || pick_p2c(&candidates, &mut rng));
        // Of 4 usable, the best wins every pair it is in (3 of 6 pairs), the worst none.
        assert_eq!(got[3], 0, "{got:?}");
        assert_eq!(got[4], 0, "{got:?}");
        assert!(got[0] > got[1] && got[1] > got[2] && got[2] > 0, "{got:?}");
        assert!((4_700..=5_300).contains(&got[0]), "{got:?}");
    }

    #[test]
    fn ewma_follows_latency_over_time() {
        let t0 = Instant::now();
        let mut e = Ewma::default();
        assert_eq!(e.get(), None);
        e.observe(t0, ms(100));
        assert_eq!(e.get(), Some(ms(100)));
        // The target slows to 1 s; samples every 100 ms for τ = 10 s cover ~63% of the gap.
        for i in 1..=100 {
            e.observe(t0 + ms(i * 100), ms(1_000));
        }
        let v = e.get().expect("value").as_millis();
        assert!((640..=700).contains(&v), "{v}");
        // The same change at 10× the rate moves it about as far: time, not sample count, decides.
        let mut fast = Ewma::default();
        fast.observe(t0, ms(100));
        for i in 1..=1_000 {
            fast.observe(t0 + ms(i * 10), ms(1_000));
        }
        let w = fast.get().expect("value").as_millis();
        assert!(w.abs_diff(v) <= 10, "{v} vs {w}");
        // Samples at one instant still count, a little each (0.01% of the gap).
        let mut same = Ewma::default();
        same.observe(t0, ms(100));
        for _ in 0..10 {
            same.observe(t0, ms(1_100));
        }
        let s = same.get().expect("value");
        assert!(s > ms(100) && s < ms(102), "{s:?}");
        // A zero τ keeps only the latest sample.
        let mut latest = Ewma::new(Duration::ZERO);
        latest.observe(t0, ms(100));
        latest.observe(t0, ms(7));
        assert_eq!(latest.get(), Some(ms(7)));
    }
}
