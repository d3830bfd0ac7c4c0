//! Latency: a one-sided CUSUM on standardised log-latency against the target's learned baseline.

use std::time::Duration;

use super::{Change, Evidence, Signal};

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LatencyConfig {
    /// The allowance: shifts smaller than this many standard deviations are not trouble.
    pub slack: f64,
    /// The CUSUM threshold, in standard deviations accumulated.
    pub threshold: f64,
    /// Weight of one observation in the learned mean and variance.
    pub learn_rate: f64,
    /// The learned spread is never taken below this (log-seconds), so a very steady target does
    /// not alarm on ordinary jitter.
    pub min_sigma: f64,
    /// One observation moves the score by at most this many standard deviations (heavy tails).
    pub clamp: f64,
    /// Observations before the detector may fire (the baseline must exist first).
    pub warmup: u64,
    /// Latencies below this are taken as this: sub-millisecond jitter of an upstream on the same
    /// host is not a latency shift anyone cares about.
    pub floor: Duration,
}

impl Default for LatencyConfig {
    fn default() -> Self {
        Self {
            slack: 1.0,
            threshold: 16.0,
            learn_rate: 1.0 / 1000.0,
            min_sigma: 0.15,
            clamp: 4.0,
            warmup: 100,
            floor: Duration::from_millis(20),
        }
    }
}

/// Time to first token of a target's streams against its own normal.
#[derive(Clone, Debug)]
pub struct Latency {
    cfg: LatencyConfig,
    mean: f64,
    var: f64,
    recent: f64,
    score: f64,
    samples: u64,
    firing: bool,
}

impl Latency {
    pub fn new(cfg: LatencyConfig) -> Self {
        Self {
            cfg,
            mean: 0.0,
            var: 0.0,
            recent: 0.0,
            score: 0.0,
            samples: 0,
            firing: false,
        }
    }

    pub fn observe(&mut self, latency: Duration) -> Option<Change> {
        let x = latency.max(self.cfg.floor).as_secs_f64().ln();
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.mean = x;
            self.recent = x;
            return None;
        }
        self.recent += (x - self.recent) * 0.1;
        // During warm-up learn fast (a plain running mean), then slowly.
        let rate = if self.samples <= self.cfg.warmup {
            1.0 / self.samples as f64
        } else {
            self.cfg.learn_rate
        };
        let sigma = self.var.sqrt().max(self.cfg.min_sigma);
        if self.samples > self.cfg.warmup {
            let z = ((x - self.mean) / sigma).clamp(-self.cfg.clamp, self.cfg.clamp);
            // Capped, so a long slow spell clears within a bounded time once latency is back.
            self.score = (self.score + z - self.cfg.slack).clamp(0.0, self.cfg.threshold * 2.0);
        }
        // Learn slowly, and not while firing: trouble is never taken for the new normal.
        if !self.firing {
            let d = x - self.mean;
            self.mean += d * rate;
            self.var += (d * d - self.var) * rate;
        }
        if !self.firing && self.score >= self.cfg.threshold {
            self.firing = true;
            return Some(Change::Fired);
        }
        if self.firing && self.score == 0.0 {
            self.firing = false;
            return Some(Change::Cleared);
        }
        None
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    pub fn evidence(&self) -> Evidence {
        Evidence {
            signal: Signal::Latency,
            observed: self.recent.exp(),
            baseline: self.mean.exp(),
            samples: self.samples,
            score: self.score,
            threshold: self.cfg.threshold,
            script: None,
        }
    }
}
