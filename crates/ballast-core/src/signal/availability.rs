//! Availability: a Bernoulli CUSUM on attempt failures, and consecutive hard failures.

use super::{Change, Evidence, Signal};

/// Tuning of the availability test. The defaults give a mean time between false alarms far above
/// 30 days at 10 attempts a second on clean traffic (measured in the tests), and detect a failure
/// ratio going from 0.5% to 16% within about 100 attempts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AvailabilityConfig {
    /// The failure ratio assumed normal is never below this (a target with no failures yet must
    /// not alarm on its first one).
    pub floor: f64,
    /// The alternative the test looks for: this many times the normal ratio, at least `min_rise`
    /// above it.
    pub factor: f64,
    pub min_rise: f64,
    /// The CUSUM threshold (in nats of evidence).
    pub threshold: f64,
    /// How slowly the normal ratio is learned: the weight of one observation.
    pub learn_rate: f64,
    /// Observations before the detector may fire.
    pub warmup: u64,
}

impl Default for AvailabilityConfig {
    fn default() -> Self {
        Self {
            floor: 0.01,
            factor: 4.0,
            min_rise: 0.08,
            threshold: 12.0,
            learn_rate: 1.0 / 5000.0,
            warmup: 20,
        }
    }
}

/// The failure ratio of a target's attempts against its own normal ratio.
#[derive(Clone, Debug)]
pub struct Availability {
    cfg: AvailabilityConfig,
    /// Learned normal failure ratio.
    baseline: f64,
    /// Recent failure ratio (fast average), for evidence.
    recent: f64,
    score: f64,
    samples: u64,
    firing: bool,
    /// Answered attempts in a row, for recovery.
    answered_in_row: u32,
}

/// The score is capped at this many thresholds: an hours-long outage must not need hours of good
/// answers to clear once the target is back.
const CEILING: f64 = 2.0;
/// Answered attempts in a row that clear a firing availability test at once: an ejected target
/// gets only trial requests and probes, and those are the evidence that it recovered. Fifty is
/// long enough that a target still failing 16% of its attempts shows such a run about once in
/// 39,000 attempts.
pub const RECOVERY_RUN: u32 = 50;

impl Availability {
    pub fn new(cfg: AvailabilityConfig) -> Self {
        Self {
            baseline: cfg.floor / 2.0,
            recent: 0.0,
            score: 0.0,
            samples: 0,
            firing: false,
            answered_in_row: 0,
            cfg,
        }
    }

    /// One attempt: did it fail for a reason that is the target's (5xx, timeout, connection, a
    /// broken answer)?
    pub fn observe(&mut self, failed: bool) -> Option<Change> {
        self.samples = self.samples.saturating_add(1);
        let x = if failed { 1.0 } else { 0.0 };
        self.recent += (x - self.recent) * 0.05;
        let p0 = self.baseline.max(self.cfg.floor).min(0.5);
        let p1 = (p0 * self.cfg.factor).max(p0 + self.cfg.min_rise).min(0.95);
        let llr = if failed {
            (p1 / p0).ln()
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        };
        self.score = (self.score + llr).clamp(0.0, self.cfg.threshold * CEILING);
        self.answered_in_row = if failed {
            0
        } else {
            self.answered_in_row.saturating_add(1)
        };
        if self.firing && self.answered_in_row >= RECOVERY_RUN {
            self.score = 0.0;
        }
        // Learn the normal ratio slowly, and not while firing: trouble is never absorbed.
        if !self.firing {
            self.baseline += (x - self.baseline) * self.cfg.learn_rate;
        }
        self.transition()
    }

    fn transition(&mut self) -> Option<Change> {
        if !self.firing && self.samples >= self.cfg.warmup && self.score >= self.cfg.threshold {
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

    /// Attempts answered in a row, up to now: the evidence of recovery gathered so far.
    pub fn answered_in_row(&self) -> u32 {
        self.answered_in_row
    }

    pub fn evidence(&self) -> Evidence {
        Evidence {
            signal: Signal::Availability,
            observed: self.recent,
            baseline: self.baseline,
            samples: self.samples,
            score: self.score,
            threshold: self.cfg.threshold,
            script: None,
        }
    }
}

/// Consecutive failures: a target that fails every attempt is reported at once, without waiting
/// for the statistics.
#[derive(Clone, Debug)]
pub struct HardFailure {
    threshold: u32,
    run: u32,
    samples: u64,
    firing: bool,
}

impl HardFailure {
    pub fn new(threshold: u32) -> Self {
        Self {
            threshold: threshold.max(1),
            run: 0,
            samples: 0,
            firing: false,
        }
    }

    pub fn observe(&mut self, failed: bool) -> Option<Change> {
        self.samples = self.samples.saturating_add(1);
        if failed {
            self.run = self.run.saturating_add(1);
            if !self.firing && self.run >= self.threshold {
                self.firing = true;
                return Some(Change::Fired);
            }
        } else {
            self.run = 0;
            if self.firing {
                self.firing = false;
                return Some(Change::Cleared);
            }
        }
        None
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    pub fn evidence(&self) -> Evidence {
        Evidence {
            signal: Signal::HardFailure,
            observed: f64::from(self.run),
            baseline: 0.0,
            samples: self.samples,
            score: f64::from(self.run),
            threshold: f64::from(self.threshold),
            script: None,
        }
    }
}
