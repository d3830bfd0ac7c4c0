//! A sliding window of two counters in fixed time buckets, shared by the breaker and the retry budget.

use std::time::Duration;

use tokio::time::Instant;

/// Number of buckets a window is cut into: the window slides in steps of `window / BUCKETS`.
pub(crate) const BUCKETS: usize = 10;

#[derive(Clone, Copy, Debug, Default)]
struct Bucket {
    epoch: u64,
    a: u64,
    b: u64,
}

/// Two counters (`a`, `b`) over the last `window`, kept in [`BUCKETS`] buckets.
///
/// The window in effect covers between `(BUCKETS - 1) / BUCKETS × window` and `window` of history (the
/// current bucket is partly filled). Time is measured from the first instant ever recorded; an instant
/// earlier than that counts as the first bucket, so callers that captured `now` just before another
/// caller recorded a later one do not break anything.
#[derive(Clone, Debug)]
pub(crate) struct Window {
    buckets: [Bucket; BUCKETS],
    width_nanos: u128,
    origin: Option<Instant>,
}

impl Window {
    /// A window of `window` (a zero duration acts as the shortest possible window).
    pub(crate) fn new(window: Duration) -> Self {
        Self {
            buckets: [Bucket::default(); BUCKETS],
            width_nanos: (window.as_nanos() / BUCKETS as u128).max(1),
            origin: None,
        }
    }

    fn epoch(&self, origin: Instant, now: Instant) -> u64 {
        let elapsed = now.saturating_duration_since(origin).as_nanos();
        u64::try_from(elapsed / self.width_nanos).unwrap_or(u64::MAX)
    }

    /// Adds `a` and `b` to the bucket of `now`.
    pub(crate) fn add(&mut self, now: Instant, a: u64, b: u64) {
        let origin = *self.origin.get_or_insert(now);
        let epoch = self.epoch(origin, now);
        let idx = (epoch % BUCKETS as u64) as usize;
        if let Some(bucket) = self.buckets.get_mut(idx) {
            // A bucket holding an older epoch is reused; one holding a newer epoch (only possible if
            // the clock was handed in far out of order) keeps its epoch and absorbs the counts.
            if bucket.epoch < epoch || (bucket.a == 0 && bucket.b == 0) {
                *bucket = Bucket { epoch, a: 0, b: 0 };
            }
            bucket.a = bucket.a.saturating_add(a);
            bucket.b = bucket.b.saturating_add(b);
        }
    }

    /// The sums of `a` and `b` over the window ending at `now`.
    pub(crate) fn totals(&self, now: Instant) -> (u64, u64) {
        let Some(origin) = self.origin else {
            return (0, 0);
        };
        let current = self.epoch(origin, now);
        let mut a = 0u64;
        let mut b = 0u64;
        for bucket in &self.buckets {
            // Buckets slightly in the future (an out-of-order `now`) still count.
            if current.saturating_sub(bucket.epoch) < BUCKETS as u64 {
                a = a.saturating_add(bucket.a);
                b = b.saturating_add(bucket.b);
            }
        }
        (a, b)
    }

    /// Forgets everything counted.
    pub(crate) fn clear(&mut self) {
        self.buckets = [Bucket::default(); BUCKETS];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    #[test]
    fn counts_within_the_window_and_forgets_after() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10));
        w.add(t0, 1, 0);
        w.add(t0 + ms(500), 0, 2);
        w.add(t0 + ms(9_500), 3, 0);
        assert_eq!(w.totals(t0 + ms(9_999)), (4, 2));
        // The first bucket ([0 s, 1 s)) leaves the window at 10 s.
        assert_eq!(w.totals(t0 + ms(10_000)), (3, 0));
        // The last bucket ([9 s, 10 s)) leaves at 19 s.
        assert_eq!(w.totals(t0 + ms(18_999)), (3, 0));
        assert_eq!(w.totals(t0 + ms(19_000)), (0, 0));
    }

    #[test]
    fn reused_bucket_starts_from_zero() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10));
        w.add(t0, 5, 5);
        w.add(t0 + ms(10_000), 1, 0); // same slot, next lap
        assert_eq!(w.totals(t0 + ms(10_000)), (1, 0));
    }

    #[test]
    fn instants_before_the_origin_count_as_the_first_bucket() {
        let t0 = Instant::now();
        let mut w = Window::new(Duration::from_secs(10));
        w.add(t0 + ms(5_000), 1, 0);
        w.add(t0, 1, 0);
        assert_eq!(w.totals(t0 + ms(5_000)), (2, 0));
        w.clear();
        assert_eq!(w.totals(t0 + ms(5_000)), (0, 0));
    }

    #[test]
    fn empty_window_is_zero() {
        let w = Window::new(Duration::ZERO);
        assert_eq!(w.totals(Instant::now()), (0, 0));
    }
}
