//! Staged configuration rollout (canary): per-arm statistics, an anytime-valid sequential test of
//! "the new version is worse than the current one", and the pure state machine that moves a
//! rollout from step to step, promotes it or rolls it back. No I/O and no clock reads: time is
//! passed in.
//!
//! # How it is used
//!
//! A reload that passed the live gate starts a [`Rollout`]. Each request goes to the new
//! configuration (the *canary* arm) with probability [`Rollout::share`], else to the current one
//! (the *baseline* arm). Its outcome is recorded per route and arm ([`ArmCounters::record`] on the
//! hot path; [`ArmStats`] is the plain snapshot). Every so often — as often as the caller likes —
//! [`Rollout::tick`] gets the cumulative statistics of every route since the rollout began and
//! returns what to do: hold, move to the next step, promote (the new configuration takes all
//! traffic) or roll back (the current configuration takes all traffic again).
//!
//! # The test
//!
//! For each route and each metric, [`compare`] runs a one-sided *mixture sequential probability
//! ratio test* (mSPRT; Robbins' normal mixture, as in Johari, Pekelis & Walsh, "Always Valid
//! Inference", 2017) on the difference of the arms' means, less a tolerance δ:
//!
//! - θ̂ = mean_canary − mean_baseline − δ, V = var_canary/n_canary + var_baseline/n_baseline;
//! - Λ = √(V/(V+τ²)) · exp(τ²θ̂² / (2V(V+τ²))) when θ̂ > 0, else 0;
//! - the change is a regression when Λ ≥ 1/α.
//!
//! Λ is (approximately, through the normal approximation with plug-in variances) a likelihood
//! ratio mixed over a N(0, τ²) prior on the true θ, a nonnegative martingale with mean 1 when θ = 0,
//! so by Ville's inequality the chance that it *ever* reaches 1/α is at most α: the test may be
//! looked at after every request (anytime validity), which a fixed-sample z-test may not (peeked at
//! continuously, it fires far more often than its α; the tests below measure both). Only
//! regressions count: when θ̂ > 0 the prior's half on θ < 0 contributes less than its half on
//! θ > 0, so Λ ≤ 2·M⁺ where M⁺ is the mixture over the half-normal prior on θ > 0 — a
//! supermartingale with mean ≤ 1 under every θ ≤ 0. The bound therefore holds for the whole null
//! "no worse than the tolerance", not only at its edge.
//!
//! The metrics, each per route:
//!
//! - **Errors**: the ratio of *degraded* requests (failed, or needed any retry or fallback);
//!   δ = `error_tolerance` (absolute).
//! - **Latency**: the mean of ln(latency in ms) (latency clamped to ≥ 1 ms), so the comparison is
//!   of geometric means, robust to a long tail; δ = ln(1 + `latency_tolerance`) (relative).
//! - **Quality**: the ratio of answers in a script the prompt does not use; δ =
//!   `quality_tolerance` (absolute).
//!
//! For the proportions the variance is taken from the smoothed p̃ = (x+1)/(n+2), so an arm with no
//! error yet does not claim zero variance (which would make any single canary error infinite
//! evidence). The log-latency variance has a floor of [`LOG_LATENCY_VAR_FLOOR`] for the same
//! reason. No metric decides before `min_requests` observations in each arm.
//!
//! **Mixture scale τ.** τ is the size of regression the test is tuned for: evidence accumulates
//! once V falls below about τ², and the price of a larger τ is the ½·ln((V+τ²)/V) penalty paid
//! before that. Proportions use τ = [`TAU_PROPORTION`] (5 percentage points: a canary that breaks
//! a route adds several points of degraded requests, and tolerances are around 1 point); log
//! latency uses τ = [`TAU_LOG_LATENCY`] (0.3, a ~35% change of the geometric mean, just past the
//! default 25% tolerance; a ×2 or ×3 slowdown is 0.7–1.1 and is seen within `min_requests`).
//!
//! **Multiple comparisons.** A rollout tests 3 metrics on every route. The controller divides α
//! by 3 × the number of routes (Bonferroni), so the chance of rolling back a change that is no
//! worse on any metric of any route stays ≤ α. The number of routes is the largest count passed
//! to [`Rollout::tick`] so far: pass every route of the new configuration on every tick, with or
//! without traffic, so the correction does not move.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

/// Mixture scale for the proportions (degraded requests, defective answers). See the module docs.
pub const TAU_PROPORTION: f64 = 0.05;
/// Mixture scale for the mean of ln(latency in ms). See the module docs.
pub const TAU_LOG_LATENCY: f64 = 0.3;
/// Smallest variance of ln(latency) assumed for an arm (σ = 1%): identical latencies (a cache, a
/// clamp at 1 ms) must not make V = 0.
pub const LOG_LATENCY_VAR_FLOOR: f64 = 1e-4;
/// Most steps a rollout may have.
pub const MAX_STEPS: usize = 10;
/// Longest hold of a step.
pub const MAX_HOLD: Duration = Duration::from_secs(24 * 3600);

// ---------------------------------------------------------------------------------------------
// Settings

/// One stage of a rollout: the canary's share of traffic, held for `hold` unless it regresses.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The share of requests the new configuration serves, in (0, 1).
    pub share: f64,
    /// How long the step lasts before the next (or promotion).
    pub hold: Duration,
}

/// `[rollout]`: how a reloaded configuration is rolled out.
#[derive(Clone, Debug, PartialEq)]
pub struct RolloutSettings {
    /// Stages before 100%; empty: straight to 100% (still recorded as a rollout).
    pub steps: Vec<Step>,
    /// Bound on the chance of rolling back a change that is no worse (over every metric and
    /// route, Bonferroni).
    pub alpha: f64,
    /// Absolute rise in the degraded-request ratio tolerated.
    pub error_tolerance: f64,
    /// Relative rise in typical (geometric-mean) latency tolerated.
    pub latency_tolerance: f64,
    /// Absolute rise in the defective-answer ratio tolerated (an answer in a script the prompt does
    /// not use, empty, looping, or not the JSON asked for).
    pub quality_tolerance: f64,
    /// Observations per arm and route before a comparison may decide.
    pub min_requests: u64,
    /// A reload first sends the live gate's probes to every target.
    pub probe: bool,
}

impl Default for RolloutSettings {
    fn default() -> Self {
        Self {
            steps: vec![
                Step {
                    share: 0.05,
                    hold: Duration::from_secs(120),
                },
                Step {
                    share: 0.25,
                    hold: Duration::from_secs(300),
                },
            ],
            alpha: 0.01,
            error_tolerance: 0.01,
            latency_tolerance: 0.25,
            quality_tolerance: 0.005,
            min_requests: 20,
            probe: true,
        }
    }
}

impl RolloutSettings {
    /// What is wrong with these settings, as `(key under [rollout], message)`; empty when valid.
    pub fn problems(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut err = |k: String, m: String| out.push((k, m));
        if self.steps.len() > MAX_STEPS {
            err(
                "steps".to_owned(),
                format!(
                    "at most {MAX_STEPS} steps, not {}; each step is a share held for a while",
                    self.steps.len()
                ),
            );
        }
        let mut previous: Option<f64> = None;
        for (i, s) in self.steps.iter().enumerate() {
            if !(s.share > 0.0 && s.share < 1.0) {
                err(
                    format!("steps[{i}].share"),
                    format!(
                        "must be between 0 and 1 (exclusive), not {}; 100% is the promotion after the last step",
                        s.share
                    ),
                );
            } else if let Some(p) = previous.filter(|p| s.share <= *p) {
                err(
                    format!("steps[{i}].share"),
                    format!(
                        "must be more than the previous step's share ({p}), not {}",
                        s.share
                    ),
                );
            }
            if s.share.is_finite() {
                previous = Some(previous.map_or(s.share, |p| p.max(s.share)));
            }
            if s.hold.is_zero() {
                err(
                    format!("steps[{i}].hold"),
                    "must be more than zero".to_owned(),
                );
            } else if s.hold > MAX_HOLD {
                err(format!("steps[{i}].hold"), "must be at most 24h".to_owned());
            }
        }
        if !(self.alpha > 0.0 && self.alpha <= 0.5) {
            err(
                "alpha".to_owned(),
                format!("must be more than 0 and at most 0.5, not {}", self.alpha),
            );
        }
        for (key, value) in [
            ("error_tolerance", self.error_tolerance),
            ("latency_tolerance", self.latency_tolerance),
            ("quality_tolerance", self.quality_tolerance),
        ] {
            if !(value >= 0.0 && value.is_finite()) {
                err(key.to_owned(), format!("must be 0 or more, not {value}"));
            }
        }
        if self.min_requests < 2 {
            err(
                "min_requests".to_owned(),
                format!(
                    "must be at least 2 (a variance needs two observations), not {}",
                    self.min_requests
                ),
            );
        }
        out
    }
}

// ---------------------------------------------------------------------------------------------
// Per-arm statistics

/// One arm's outcomes on one route: counts and running sums, never request or answer text.
#[derive(Clone, Copy, Default, Debug, PartialEq)]
pub struct ArmStats {
    pub requests: u64,
    /// Requests that failed or needed any retry or fallback.
    pub degraded: u64,
    /// Requests with a latency recorded.
    pub latency_n: u64,
    /// Σ ln(latency in ms), latency clamped to ≥ 1 ms.
    pub log_latency_sum: f64,
    /// Σ ln(latency in ms)².
    pub log_latency_sq_sum: f64,
    /// Answers checked for their script.
    pub answers: u64,
    /// Answers with text in a script the prompt does not use.
    pub defective: u64,
}

/// ln(latency in ms), latency clamped to ≥ 1 ms.
fn log_ms(latency: Duration) -> f64 {
    (latency.as_secs_f64() * 1000.0).max(1.0).ln()
}

impl ArmStats {
    /// One request's outcome: whether it was degraded, its latency (none when it failed before
    /// one could be measured), and for an answer whether it was defective (in a script the prompt does not
    /// use, empty, looping, or not the JSON asked for).
    pub fn record(&mut self, degraded: bool, latency: Option<Duration>, answer: Option<bool>) {
        self.requests = self.requests.saturating_add(1);
        if degraded {
            self.degraded = self.degraded.saturating_add(1);
        }
        if let Some(l) = latency {
            let x = log_ms(l);
            self.latency_n = self.latency_n.saturating_add(1);
            self.log_latency_sum += x;
            self.log_latency_sq_sum += x * x;
        }
        if let Some(wrong) = answer {
            self.answers = self.answers.saturating_add(1);
            if wrong {
                self.defective = self.defective.saturating_add(1);
            }
        }
    }

    /// Adds `other`'s outcomes to these.
    pub fn merge(&mut self, other: &ArmStats) {
        self.requests = self.requests.saturating_add(other.requests);
        self.degraded = self.degraded.saturating_add(other.degraded);
        self.latency_n = self.latency_n.saturating_add(other.latency_n);
        self.log_latency_sum += other.log_latency_sum;
        self.log_latency_sq_sum += other.log_latency_sq_sum;
        self.answers = self.answers.saturating_add(other.answers);
        self.defective = self.defective.saturating_add(other.defective);
    }

    /// Share of requests degraded (0 without requests).
    pub fn degraded_ratio(&self) -> f64 {
        ratio(self.degraded, self.requests)
    }

    /// Share of defective answers (0 without answers).
    pub fn defect_ratio(&self) -> f64 {
        ratio(self.defective, self.answers)
    }

    /// The geometric mean of the latencies in ms (0 without any).
    pub fn typical_latency_ms(&self) -> f64 {
        if self.latency_n == 0 {
            return 0.0;
        }
        self.log_latency_mean().exp()
    }

    fn log_latency_mean(&self) -> f64 {
        self.log_latency_sum / self.latency_n.max(1) as f64
    }

    /// Sample variance of ln(latency), at least [`LOG_LATENCY_VAR_FLOOR`].
    fn log_latency_var(&self) -> f64 {
        let n = self.latency_n as f64;
        if self.latency_n < 2 {
            return LOG_LATENCY_VAR_FLOOR;
        }
        let ss = self.log_latency_sq_sum - self.log_latency_sum * self.log_latency_sum / n;
        (ss / (n - 1.0)).max(LOG_LATENCY_VAR_FLOOR)
    }
}

fn ratio(x: u64, n: u64) -> f64 {
    if n == 0 { 0.0 } else { x as f64 / n as f64 }
}

/// Fixed-point scale of the log-latency sums in [`ArmCounters`] (micro-units of ln ms).
const FIXED: f64 = 1e6;
/// Largest ln(ms) an [`ArmCounters`] adds (≈ 31 years); keeps one square under 2^40 micro-units so
/// the sums do not wrap for billions of requests.
const MAX_LOG_MS: f64 = 30.0;

/// [`ArmStats`] to record into from many threads at once, on the hot path: a handful of relaxed
/// atomic adds per request, no lock. The log-latency sums are kept as fixed-point integers
/// (micro-units), which `fetch_add` handles in one instruction (an `f64` would need a CAS loop).
///
/// A [`snapshot`](Self::snapshot) taken while requests are being recorded reads each counter at a
/// slightly different instant, so a request may show in one count and not yet in another; for a
/// comparison made over hundreds of requests that is noise.
#[derive(Debug, Default)]
pub struct ArmCounters {
    requests: AtomicU64,
    degraded: AtomicU64,
    latency_n: AtomicU64,
    log_latency_sum: AtomicU64,
    log_latency_sq_sum: AtomicU64,
    answers: AtomicU64,
    defective: AtomicU64,
}

impl ArmCounters {
    pub fn new() -> Self {
        Self::default()
    }

    /// As [`ArmStats::record`].
    pub fn record(&self, degraded: bool, latency: Option<Duration>, answer: Option<bool>) {
        let r = Ordering::Relaxed;
        if degraded {
            self.degraded.fetch_add(1, r);
        }
        if let Some(l) = latency {
            let x = log_ms(l).min(MAX_LOG_MS);
            // Non-negative and bounded, so the casts neither wrap nor saturate.
            self.log_latency_sum
                .fetch_add((x * FIXED).round() as u64, r);
            self.log_latency_sq_sum
                .fetch_add((x * x * FIXED).round() as u64, r);
            self.latency_n.fetch_add(1, r);
        }
        if let Some(wrong) = answer {
            if wrong {
                self.defective.fetch_add(1, r);
            }
            self.answers.fetch_add(1, r);
        }
        self.requests.fetch_add(1, r);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> ArmStats {
        let r = Ordering::Relaxed;
        ArmStats {
            requests: self.requests.load(r),
            degraded: self.degraded.load(r),
            latency_n: self.latency_n.load(r),
            log_latency_sum: self.log_latency_sum.load(r) as f64 / FIXED,
            log_latency_sq_sum: self.log_latency_sq_sum.load(r) as f64 / FIXED,
            answers: self.answers.load(r),
            defective: self.defective.load(r),
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The sequential test

/// The one-sided mixture SPRT statistic Λ for an observed excess `theta_hat` (canary mean −
/// baseline mean − tolerance), the variance `v` of the difference of the means, and the mixture
/// scale `tau`. 0 when `theta_hat ≤ 0` (only regressions count) or when `v` is not a positive
/// number (no evidence is claimed from a degenerate variance). May be `+∞` for overwhelming
/// evidence.
pub fn msprt(theta_hat: f64, v: f64, tau: f64) -> f64 {
    if !(theta_hat > 0.0 && v > 0.0 && v.is_finite() && tau > 0.0) {
        return 0.0;
    }
    let t2 = tau * tau;
    let log = 0.5 * (v / (v + t2)).ln() + t2 * theta_hat * theta_hat / (2.0 * v * (v + t2));
    log.exp()
}

/// What got worse.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    /// The share of degraded requests (failed, or needed a retry or fallback).
    Errors,
    /// Typical (geometric-mean) latency.
    Latency,
    /// The share of answers in a script the prompt does not use.
    Quality,
}

impl Metric {
    pub const fn as_str(self) -> &'static str {
        match self {
            Metric::Errors => "errors",
            Metric::Latency => "latency",
            Metric::Quality => "quality",
        }
    }
}

/// A metric on which the new version is worse than the current one beyond its tolerance.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Regression {
    pub metric: Metric,
    /// The new version's value: a ratio (0–1), or the geometric-mean latency in ms.
    pub canary: f64,
    /// The current version's value, in the same terms.
    pub baseline: f64,
    /// The test statistic Λ.
    pub lambda: f64,
    /// What Λ had to reach: 1/α, with α divided among the metrics and routes tested.
    pub threshold: f64,
}

impl Regression {
    /// For people: "degraded requests 10.8% on the new version vs 0.1% on the current (Λ = 3,700
    /// ≥ 300)".
    pub fn describe(&self) -> String {
        let (what, c, b) = match self.metric {
            Metric::Errors => (
                "degraded requests",
                percent(self.canary),
                percent(self.baseline),
            ),
            Metric::Latency => (
                "typical latency",
                format!("{} ms", grouped(self.canary.round())),
                format!("{} ms", grouped(self.baseline.round())),
            ),
            Metric::Quality => (
                "defective answers (wrong script, empty, looping, invalid JSON)",
                percent(self.canary),
                percent(self.baseline),
            ),
        };
        format!(
            "{what} {c} on the new version vs {b} on the current (Λ = {} ≥ {})",
            number(self.lambda),
            number(self.threshold)
        )
    }

    /// How far past its threshold the statistic is (≥ 1 for a regression).
    fn strength(&self) -> f64 {
        self.lambda / self.threshold
    }
}

impl fmt::Display for Regression {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

fn percent(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A non-negative whole number with thousands separators.
fn grouped(x: f64) -> String {
    let digits = format!("{:.0}", x.max(0.0));
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

/// A statistic for people: one decimal under 10, whole under 1,000, two significant digits up to
/// 10^15, then scientific.
fn number(x: f64) -> String {
    if x.is_nan() {
        return "NaN".to_owned();
    }
    if x.is_infinite() {
        return "∞".to_owned();
    }
    if x < 10.0 {
        return format!("{x:.1}");
    }
    if x < 1000.0 {
        return format!("{x:.0}");
    }
    if x < 1e15 {
        let unit = 10f64.powf(x.log10().floor() - 1.0);
        return grouped((x / unit).round() * unit);
    }
    format!("{x:.1e}")
}

/// Whether the canary regressed against the baseline on one route, testing the 3 metrics with
/// α/3 each (Bonferroni). See [`compare_among`] for a rollout over several routes.
pub fn compare(canary: &ArmStats, base: &ArmStats, s: &RolloutSettings) -> Option<Regression> {
    compare_among(canary, base, s, 1)
}

/// As [`compare`], for one of `routes` routes tested together: each metric at α/(3 × routes), so
/// the chance of any false rollback over all of them stays ≤ α. The strongest regression when
/// several metrics crossed.
pub fn compare_among(
    canary: &ArmStats,
    base: &ArmStats,
    s: &RolloutSettings,
    routes: usize,
) -> Option<Regression> {
    let tests = 3.0 * routes.max(1) as f64;
    let threshold = tests / s.alpha;
    let min = s.min_requests.max(2);
    let mut found: Vec<Regression> = Vec::with_capacity(3);
    let mut check = |metric, canary_value, baseline_value, lambda: f64| {
        if lambda >= threshold {
            found.push(Regression {
                metric,
                canary: canary_value,
                baseline: baseline_value,
                lambda,
                threshold,
            });
        }
    };

    if canary.requests >= min && base.requests >= min {
        let lambda = proportion_lambda(
            (canary.degraded, canary.requests),
            (base.degraded, base.requests),
            s.error_tolerance,
        );
        check(
            Metric::Errors,
            canary.degraded_ratio(),
            base.degraded_ratio(),
            lambda,
        );
    }
    if canary.latency_n >= min && base.latency_n >= min {
        let theta =
            canary.log_latency_mean() - base.log_latency_mean() - s.latency_tolerance.ln_1p();
        let v = canary.log_latency_var() / canary.latency_n as f64
            + base.log_latency_var() / base.latency_n as f64;
        check(
            Metric::Latency,
            canary.typical_latency_ms(),
            base.typical_latency_ms(),
            msprt(theta, v, TAU_LOG_LATENCY),
        );
    }
    if canary.answers >= min && base.answers >= min {
        let lambda = proportion_lambda(
            (canary.defective, canary.answers),
            (base.defective, base.answers),
            s.quality_tolerance,
        );
        check(
            Metric::Quality,
            canary.defect_ratio(),
            base.defect_ratio(),
            lambda,
        );
    }
    found
        .into_iter()
        .max_by(|a, b| a.strength().total_cmp(&b.strength()))
}

/// Λ for "the canary's proportion exceeds the baseline's by more than `delta`": raw proportions
/// for θ̂, smoothed ones ((x+1)/(n+2)) for the variance.
fn proportion_lambda(canary: (u64, u64), base: (u64, u64), delta: f64) -> f64 {
    let var = |(x, n): (u64, u64)| {
        let p = (x as f64 + 1.0) / (n as f64 + 2.0);
        p * (1.0 - p) / n.max(1) as f64
    };
    let theta = ratio(canary.0, canary.1) - ratio(base.0, base.1) - delta;
    msprt(theta, var(canary) + var(base), TAU_PROPORTION)
}

// ---------------------------------------------------------------------------------------------
// The controller

/// What the caller should do after a [`Rollout::tick`].
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Nothing changes (also every tick after the rollout ended).
    Hold,
    /// Move to step `step`: the new configuration now serves `share` of requests.
    Advance { step: usize, share: f64 },
    /// The new configuration serves everything; the rollout is over.
    Promote,
    /// The new configuration regressed on `route`: the current one serves everything again; the
    /// rollout is over.
    RollBack {
        route: String,
        regression: Regression,
    },
}

/// Where a rollout is.
#[derive(Clone, Debug, PartialEq)]
pub enum Phase {
    /// At step `step`, since `since`.
    Canary {
        step: usize,
        since: Instant,
    },
    Promoted {
        at: Instant,
    },
    /// Ended by an operator at step `step`.
    Aborted {
        at: Instant,
        step: usize,
    },
    RolledBack {
        at: Instant,
        /// The step it was at.
        step: usize,
        route: String,
        regression: Regression,
    },
}

/// A rollout's state for the admin API.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutStatus {
    /// `canary`, `promoted` or `rolled_back`.
    pub state: &'static str,
    /// The current step (0-based); the number of steps once promoted; the step it stopped at once
    /// rolled back.
    pub step: usize,
    pub steps: usize,
    /// The share of requests the new configuration serves.
    pub share: f64,
    /// Time in the current step, or since the rollout ended.
    pub elapsed_ms: u64,
    /// The current step's hold (0 once ended).
    pub hold_ms: u64,
    /// Rolled back: the route that regressed.
    pub route: Option<String>,
    /// Rolled back: what regressed, for people.
    pub reason: Option<String>,
}

/// A staged rollout of a new configuration: a pure state machine, time passed in.
#[derive(Clone, Debug)]
pub struct Rollout {
    settings: RolloutSettings,
    started: Instant,
    phase: Phase,
    /// The most routes compared at once so far (the Bonferroni divisor).
    routes: usize,
}

impl Rollout {
    /// Starts at step 0, or promoted at once when there are no steps.
    pub fn new(settings: &RolloutSettings, now: Instant) -> Self {
        let phase = if settings.steps.is_empty() {
            Phase::Promoted { at: now }
        } else {
            Phase::Canary {
                step: 0,
                since: now,
            }
        };
        Self {
            settings: settings.clone(),
            started: now,
            phase,
            routes: 1,
        }
    }

    pub fn settings(&self) -> &RolloutSettings {
        &self.settings
    }

    pub fn phase(&self) -> &Phase {
        &self.phase
    }

    /// When the rollout began.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Whether it was promoted or rolled back.
    pub fn is_over(&self) -> bool {
        !matches!(self.phase, Phase::Canary { .. })
    }

    /// The share of requests the new configuration serves now: the step's share while in canary,
    /// 1 once promoted, 0 once rolled back.
    pub fn share(&self) -> f64 {
        match &self.phase {
            Phase::Canary { step, .. } => self.settings.steps.get(*step).map_or(1.0, |s| s.share),
            Phase::Promoted { .. } => 1.0,
            Phase::RolledBack { .. } | Phase::Aborted { .. } => 0.0,
        }
    }

    /// Looks at every route's statistics (cumulative since the rollout began: canary, baseline)
    /// and the time: a regression on any route rolls back (the strongest one is reported);
    /// otherwise a step whose hold is over moves on, the last one to promotion. Once promoted or
    /// rolled back, always [`Action::Hold`].
    pub fn tick(&mut self, now: Instant, routes: &[(String, ArmStats, ArmStats)]) -> Action {
        let Phase::Canary { step, since } = self.phase else {
            return Action::Hold;
        };
        self.routes = self.routes.max(routes.len());
        let worst = routes
            .iter()
            .filter_map(|(route, canary, base)| {
                compare_among(canary, base, &self.settings, self.routes).map(|r| (route, r))
            })
            .max_by(|a, b| a.1.strength().total_cmp(&b.1.strength()));
        if let Some((route, regression)) = worst {
            self.phase = Phase::RolledBack {
                at: now,
                step,
                route: route.clone(),
                regression: regression.clone(),
            };
            return Action::RollBack {
                route: route.clone(),
                regression,
            };
        }
        let hold = self
            .settings
            .steps
            .get(step)
            .map_or(Duration::ZERO, |s| s.hold);
        if now.saturating_duration_since(since) < hold {
            return Action::Hold;
        }
        let next = step + 1;
        match self.settings.steps.get(next) {
            Some(s) => {
                self.phase = Phase::Canary {
                    step: next,
                    since: now,
                };
                Action::Advance {
                    step: next,
                    share: s.share,
                }
            }
            None => {
                self.phase = Phase::Promoted { at: now };
                Action::Promote
            }
        }
    }

    /// An operator ends the rollout: the current configuration serves everything again. Nothing
    /// once it is over.
    pub fn abort(&mut self, now: Instant) {
        if let Phase::Canary { step, .. } = self.phase {
            self.phase = Phase::Aborted { at: now, step };
        }
    }

    /// Where the rollout is, for the admin API.
    pub fn status(&self, now: Instant) -> RolloutStatus {
        let ms = |d: Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        let steps = self.settings.steps.len();
        let share = self.share();
        match &self.phase {
            Phase::Canary { step, since } => RolloutStatus {
                state: "canary",
                step: *step,
                steps,
                share,
                elapsed_ms: ms(now.saturating_duration_since(*since)),
                hold_ms: ms(self
                    .settings
                    .steps
                    .get(*step)
                    .map_or(Duration::ZERO, |s| s.hold)),
                route: None,
                reason: None,
            },
            Phase::Promoted { at } => RolloutStatus {
                state: "promoted",
                step: steps,
                steps,
                share,
                elapsed_ms: ms(now.saturating_duration_since(*at)),
                hold_ms: 0,
                route: None,
                reason: None,
            },
            Phase::Aborted { at, step } => RolloutStatus {
                state: "rolled_back",
                step: *step,
                steps,
                share,
                elapsed_ms: ms(now.saturating_duration_since(*at)),
                hold_ms: 0,
                route: None,
                reason: Some("aborted by an operator".to_owned()),
            },
            Phase::RolledBack {
                at,
                step,
                route,
                regression,
            } => RolloutStatus {
                state: "rolled_back",
                step: *step,
                steps,
                share,
                elapsed_ms: ms(now.saturating_duration_since(*at)),
                hold_ms: 0,
                route: Some(route.clone()),
                reason: Some(regression.describe()),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    /// How one arm behaves: degraded share, log-normal latency, wrong-script share.
    #[derive(Clone, Copy)]
    struct Arm {
        degraded: f64,
        /// Median latency in ms.
        median_ms: f64,
        /// σ of ln(latency).
        sigma: f64,
        wrong: f64,
    }

    const CLEAN: Arm = Arm {
        degraded: 0.02,
        median_ms: 800.0,
        sigma: 0.5,
        wrong: 0.01,
    };

    fn normal(rng: &mut fastrand::Rng) -> f64 {
        let u1 = rng.f64().max(f64::MIN_POSITIVE);
        let u2 = rng.f64();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    fn draw(rng: &mut fastrand::Rng, arm: Arm, stats: &mut ArmStats) {
        let degraded = rng.f64() < arm.degraded;
        let ms = arm.median_ms * (arm.sigma * normal(rng)).exp();
        let wrong = rng.f64() < arm.wrong;
        stats.record(
            degraded,
            Some(Duration::from_secs_f64(ms / 1000.0)),
            Some(wrong),
        );
    }

    /// One step of `share` held for a day: only a regression ends it.
    fn one_step(share: f64) -> RolloutSettings {
        RolloutSettings {
            steps: vec![Step { share, hold: HOUR }],
            ..RolloutSettings::default()
        }
    }

    /// Feeds `requests` requests through a rollout, ticking after every one. Returns the rollback
    /// (route's regression) if any, and the canary requests seen when it was decided.
    fn run(
        settings: &RolloutSettings,
        canary: Arm,
        base: Arm,
        requests: usize,
        seed: u64,
    ) -> (Option<Regression>, u64) {
        let mut rng = fastrand::Rng::with_seed(seed);
        let now = Instant::now();
        let share = settings.steps.first().map_or(1.0, |s| s.share);
        let mut rollout = Rollout::new(settings, now);
        let mut routes = vec![("chat".to_owned(), ArmStats::default(), ArmStats::default())];
        for _ in 0..requests {
            let route = &mut routes[0];
            if rng.f64() < share {
                draw(&mut rng, canary, &mut route.1);
            } else {
                draw(&mut rng, base, &mut route.2);
            }
            match rollout.tick(now, &routes) {
                Action::Hold => {}
                Action::RollBack { route, regression } => {
                    assert_eq!(route, "chat");
                    assert_eq!(rollout.share(), 0.0);
                    return (Some(regression), routes[0].1.requests);
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        (None, routes[0].1.requests)
    }

    /// A fixed-sample one-sided z-test on the same statistics, α/3 per metric, looked at after
    /// every request: what "just check whether the canary is significantly worse" does.
    fn naive_z_rejects(c: &ArmStats, b: &ArmStats, s: &RolloutSettings) -> bool {
        // z for a one-sided α/3 = 0.00333.
        const Z: f64 = 2.713;
        let z = |theta: f64, v: f64| v > 0.0 && theta / v.sqrt() >= Z;
        let prop = |x: u64, n: u64, y: u64, m: u64, delta: f64| {
            let (p, q) = (ratio(x, n), ratio(y, m));
            let pooled = ratio(x + y, n + m);
            z(
                p - q - delta,
                pooled * (1.0 - pooled) * (1.0 / n as f64 + 1.0 / m as f64),
            )
        };
        let min = s.min_requests;
        if c.requests < min || b.requests < min {
            return false;
        }
        prop(
            c.degraded,
            c.requests,
            b.degraded,
            b.requests,
            s.error_tolerance,
        ) || prop(
            c.defective,
            c.answers,
            b.defective,
            b.answers,
            s.quality_tolerance,
        ) || z(
            c.log_latency_mean() - b.log_latency_mean() - s.latency_tolerance.ln_1p(),
            c.log_latency_var() / c.latency_n as f64 + b.log_latency_var() / b.latency_n as f64,
        )
    }

    #[test]
    fn rollout_a_a_false_rollbacks_stay_under_alpha_with_continuous_peeking() {
        // The strictest case: no tolerance at all, so two equal arms sit on the edge of the null.
        let strict = RolloutSettings {
            error_tolerance: 0.0,
            latency_tolerance: 0.0,
            quality_tolerance: 0.0,
            ..one_step(0.10)
        };
        let runs = 300;
        let (mut msprt_false, mut naive_false, mut default_false) = (0, 0, 0);
        for seed in 0..runs {
            if run(&strict, CLEAN, CLEAN, 3000, seed).0.is_some() {
                msprt_false += 1;
            }
            if run(&one_step(0.10), CLEAN, CLEAN, 3000, seed).0.is_some() {
                default_false += 1;
            }
            // The same traffic, judged by a z-test peeked at after every request.
            let mut rng = fastrand::Rng::with_seed(seed);
            let (mut c, mut b) = (ArmStats::default(), ArmStats::default());
            for _ in 0..3000 {
                if rng.f64() < 0.10 {
                    draw(&mut rng, CLEAN, &mut c);
                } else {
                    draw(&mut rng, CLEAN, &mut b);
                }
                if naive_z_rejects(&c, &b, &strict) {
                    naive_false += 1;
                    break;
                }
            }
        }
        println!(
            "A/A over {runs} rollouts of 3000 requests (10% canary), checked after every request: \
             mSPRT {msprt_false} false rollbacks (tolerances 0), {default_false} (default \
             tolerances); naive z-test {naive_false}"
        );
        assert!(
            msprt_false * 50 <= runs,
            "{msprt_false}/{runs} false rollbacks"
        );
        assert!(default_false * 50 <= runs, "{default_false}/{runs}");
        assert!(
            naive_false >= 3 * msprt_false.max(1),
            "the naive test should fire far more often: {naive_false} vs {msprt_false}"
        );
    }

    #[test]
    fn rollout_rolls_back_a_canary_with_many_degraded_requests() {
        let canary = Arm {
            degraded: 0.10,
            ..CLEAN
        };
        let base = Arm {
            degraded: 0.005,
            ..CLEAN
        };
        let mut needed = Vec::new();
        for seed in 0..20 {
            let (r, n) = run(&one_step(0.05), canary, base, 40_000, seed);
            let r = r.unwrap_or_else(|| panic!("seed {seed}: not rolled back"));
            assert_eq!(r.metric, Metric::Errors, "{r}");
            assert!(r.canary > r.baseline, "{r}");
            needed.push(n);
        }
        let max = needed.iter().copied().max().unwrap_or(0);
        let mean = needed.iter().sum::<u64>() as f64 / needed.len() as f64;
        println!(
            "10% vs 0.5% degraded, 5% canary: rolled back after {mean:.0} canary requests on average (max {max}): {needed:?}"
        );
        assert!(max < 400, "{needed:?}");
    }

    #[test]
    fn rollout_rolls_back_defective_answers() {
        let canary = Arm {
            wrong: 0.05,
            ..CLEAN
        };
        let base = Arm {
            wrong: 0.0,
            ..CLEAN
        };
        let mut needed = Vec::new();
        for seed in 0..20 {
            let (r, n) = run(&one_step(0.10), canary, base, 40_000, seed);
            let r = r.unwrap_or_else(|| panic!("seed {seed}: not rolled back"));
            assert_eq!(r.metric, Metric::Quality, "{r}");
            needed.push(n);
        }
        let max = needed.iter().copied().max().unwrap_or(0);
        println!(
            "5% vs 0% wrong-script answers, 10% canary: rolled back after {needed:?} canary requests"
        );
        assert!(max < 1000, "{needed:?}");
    }

    #[test]
    fn rollout_rolls_back_a_threefold_slowdown() {
        let canary = Arm {
            median_ms: 2400.0,
            ..CLEAN
        };
        let mut needed = Vec::new();
        for seed in 0..20 {
            let (r, n) = run(&one_step(0.10), canary, CLEAN, 40_000, seed);
            let r = r.unwrap_or_else(|| panic!("seed {seed}: not rolled back"));
            assert_eq!(r.metric, Metric::Latency, "{r}");
            assert!(r.canary > 2.0 * r.baseline, "{r}");
            needed.push(n);
        }
        let max = needed.iter().copied().max().unwrap_or(0);
        println!("latency ×3, 10% canary: rolled back after {needed:?} canary requests");
        assert!(max < 60, "{needed:?}");
    }

    #[test]
    fn rollout_tolerates_a_slowdown_under_its_tolerance() {
        let canary = Arm {
            median_ms: 880.0,
            ..CLEAN
        };
        for seed in 0..5 {
            let (r, n) = run(&one_step(0.5), canary, CLEAN, 10_000, seed);
            assert!(r.is_none(), "seed {seed}: {r:?}");
            assert!(n > 4500, "{n}");
        }
        // 5000 canary requests exactly, judged once more at the end.
        let mut rng = fastrand::Rng::with_seed(99);
        let (mut c, mut b) = (ArmStats::default(), ArmStats::default());
        for _ in 0..5000 {
            draw(&mut rng, canary, &mut c);
            draw(&mut rng, CLEAN, &mut b);
        }
        assert_eq!(compare(&c, &b, &RolloutSettings::default()), None);
        let ratio = c.typical_latency_ms() / b.typical_latency_ms();
        assert!((1.05..1.15).contains(&ratio), "{ratio}");
    }

    #[test]
    fn rollout_waits_for_min_requests() {
        let mut c = ArmStats::default();
        let mut b = ArmStats::default();
        for _ in 0..19 {
            c.record(true, Some(Duration::from_secs(30)), Some(true));
        }
        for _ in 0..1000 {
            b.record(false, Some(Duration::from_millis(100)), Some(false));
        }
        let s = RolloutSettings::default();
        assert_eq!(compare(&c, &b, &s), None, "19 < min_requests");
        c.record(true, Some(Duration::from_secs(30)), Some(true));
        let r = compare(&c, &b, &s).unwrap();
        assert!(r.lambda >= r.threshold);
    }

    #[test]
    fn rollout_msprt_is_zero_for_improvements_and_grows_with_evidence() {
        assert_eq!(msprt(0.0, 0.01, 0.05), 0.0);
        assert_eq!(msprt(-0.1, 0.01, 0.05), 0.0);
        assert_eq!(
            msprt(0.1, 0.0, 0.05),
            0.0,
            "no evidence from a zero variance"
        );
        let weak = msprt(0.02, 1e-3, 0.05);
        let strong = msprt(0.02, 1e-4, 0.05);
        assert!(weak < 1.0 && strong > weak, "{weak} {strong}");
        assert!(msprt(0.05, 1e-4, 0.05) > msprt(0.02, 1e-4, 0.05));
        assert_eq!(msprt(1.0, 1e-9, 0.3), f64::INFINITY);
        // √(V/(V+τ²)) · exp(τ²θ²/(2V(V+τ²))) with V = τ² = 1, θ = 2: √½ · e.
        let x = msprt(2.0, 1.0, 1.0);
        assert!((x - 0.5f64.sqrt() * 1f64.exp()).abs() < 1e-12, "{x}");
    }

    #[test]
    fn rollout_bonferroni_divides_alpha_among_routes() {
        let mut c = ArmStats::default();
        let mut b = ArmStats::default();
        for i in 0..200 {
            c.record(i % 8 == 0, None, None);
        }
        for i in 0..4000 {
            b.record(i % 200 == 0, None, None);
        }
        let s = RolloutSettings::default();
        let one = compare(&c, &b, &s).unwrap();
        assert_eq!(one.threshold, 3.0 / s.alpha);
        // Enough routes that the same evidence no longer suffices.
        let routes = (one.lambda * s.alpha / 3.0).ceil() as usize + 1;
        assert_eq!(compare_among(&c, &b, &s, routes), None);
        // And the controller counts the routes it is given.
        let now = Instant::now();
        let mut r = Rollout::new(&one_step(0.1), now);
        let mut list: Vec<_> = (0..routes).map(|i| (format!("r{i}"), b, b)).collect();
        list[0].1 = c;
        assert_eq!(r.tick(now, &list), Action::Hold);
        assert!(
            matches!(r.tick(now, &list[..1]), Action::Hold),
            "the divisor never shrinks"
        );
    }

    #[test]
    fn rollout_steps_advance_after_their_holds_and_promote() {
        let s = RolloutSettings::default();
        let t0 = Instant::now();
        let mut r = Rollout::new(&s, t0);
        let clean = vec![("chat".to_owned(), ArmStats::default(), ArmStats::default())];
        assert_eq!(r.share(), 0.05);
        assert_eq!(r.tick(t0 + Duration::from_secs(119), &clean), Action::Hold);
        let st = r.status(t0 + Duration::from_secs(60));
        assert_eq!(
            (st.state, st.step, st.steps, st.elapsed_ms, st.hold_ms),
            ("canary", 0, 2, 60_000, 120_000)
        );
        let t1 = t0 + Duration::from_secs(120);
        assert_eq!(
            r.tick(t1, &clean),
            Action::Advance {
                step: 1,
                share: 0.25
            }
        );
        assert_eq!(r.share(), 0.25);
        // The next hold counts from the advance.
        assert_eq!(r.tick(t1 + Duration::from_secs(299), &clean), Action::Hold);
        assert_eq!(r.status(t1 + Duration::from_secs(10)).elapsed_ms, 10_000);
        assert_eq!(
            r.tick(t1 + Duration::from_secs(300), &clean),
            Action::Promote
        );
        assert_eq!(r.share(), 1.0);
        assert!(r.is_over());
        assert_eq!(r.tick(t1 + HOUR, &clean), Action::Hold);
        let st = r.status(t1 + Duration::from_secs(301));
        assert_eq!(
            (st.state, st.step, st.share, st.elapsed_ms),
            ("promoted", 2, 1.0, 1000)
        );
        let json = serde_json::to_value(&st).unwrap();
        assert_eq!(json["state"], "promoted");
    }

    #[test]
    fn rollout_rolled_back_stays_rolled_back() {
        let t0 = Instant::now();
        let mut r = Rollout::new(&RolloutSettings::default(), t0);
        let mut bad = ArmStats::default();
        let mut good = ArmStats::default();
        for _ in 0..100 {
            bad.record(true, Some(Duration::from_millis(500)), Some(false));
            good.record(false, Some(Duration::from_millis(500)), Some(false));
        }
        let routes = vec![
            ("fine".to_owned(), good, good),
            ("chat".to_owned(), bad, good),
        ];
        let Action::RollBack { route, regression } = r.tick(t0, &routes) else {
            panic!("expected a rollback");
        };
        assert_eq!(route, "chat");
        assert_eq!(regression.metric, Metric::Errors);
        assert_eq!((regression.canary, regression.baseline), (1.0, 0.0));
        assert_eq!(r.share(), 0.0);
        let clean = vec![("chat".to_owned(), good, good)];
        for t in [0, 200, 400, 86_400] {
            assert_eq!(r.tick(t0 + Duration::from_secs(t), &clean), Action::Hold);
            assert_eq!(r.share(), 0.0);
        }
        let st = r.status(t0 + Duration::from_secs(5));
        assert_eq!((st.state, st.step, st.share), ("rolled_back", 0, 0.0));
        assert_eq!(st.route.as_deref(), Some("chat"));
        assert!(
            st.reason.as_deref().unwrap().starts_with(
                "degraded requests 100.0% on the new version vs 0.0% on the current (Λ = "
            ),
            "{st:?}"
        );
    }

    #[test]
    fn rollout_without_steps_is_promoted_at_once() {
        let s = RolloutSettings {
            steps: Vec::new(),
            ..RolloutSettings::default()
        };
        let t0 = Instant::now();
        let mut r = Rollout::new(&s, t0);
        assert_eq!(r.share(), 1.0);
        assert!(matches!(r.phase(), Phase::Promoted { .. }));
        assert_eq!(r.tick(t0, &[]), Action::Hold);
        let st = r.status(t0);
        assert_eq!((st.state, st.step, st.steps), ("promoted", 0, 0));
    }

    #[test]
    fn rollout_regressions_read_well() {
        let r = Regression {
            metric: Metric::Errors,
            canary: 0.108,
            baseline: 0.001,
            lambda: 3_712.0,
            threshold: 100.0,
        };
        assert_eq!(
            r.to_string(),
            "degraded requests 10.8% on the new version vs 0.1% on the current (Λ = 3,700 ≥ 100)"
        );
        let r = Regression {
            metric: Metric::Latency,
            canary: 2_431.4,
            baseline: 801.0,
            lambda: f64::INFINITY,
            threshold: 300.0,
        };
        assert_eq!(
            r.describe(),
            "typical latency 2,431 ms on the new version vs 801 ms on the current (Λ = ∞ ≥ 300)"
        );
        assert_eq!(number(4.25), "4.2");
        assert_eq!(number(264.4), "264");
        assert_eq!(number(12_345_678.0), "12,000,000");
        assert_eq!(number(2.5e20), "2.5e20");
        assert_eq!(grouped(999.0), "999");
        assert_eq!(grouped(1000.0), "1,000");
    }

    #[test]
    fn rollout_counters_match_stats_across_threads() {
        let counters = ArmCounters::new();
        let mut expected = ArmStats::default();
        let outcomes: Vec<(bool, Option<Duration>, Option<bool>)> = (0u64..4000)
            .map(|i| {
                (
                    i % 7 == 0,
                    (i % 5 != 0).then(|| Duration::from_micros(300 + i * 997)),
                    (i % 3 != 0).then_some(i % 11 == 0),
                )
            })
            .collect();
        for &(d, l, a) in &outcomes {
            expected.record(d, l, a);
        }
        std::thread::scope(|scope| {
            for chunk in outcomes.chunks(1000) {
                let counters = &counters;
                scope.spawn(move || {
                    for &(d, l, a) in chunk {
                        counters.record(d, l, a);
                    }
                });
            }
        });
        let got = counters.snapshot();
        assert_eq!(
            (
                got.requests,
                got.degraded,
                got.latency_n,
                got.answers,
                got.defective
            ),
            (
                expected.requests,
                expected.degraded,
                expected.latency_n,
                expected.answers,
                expected.defective
            )
        );
        assert!((got.log_latency_sum - expected.log_latency_sum).abs() < 1e-2);
        assert!((got.log_latency_sq_sum - expected.log_latency_sq_sum).abs() < 1e-2);
        assert!((got.log_latency_var() - expected.log_latency_var()).abs() < 1e-6);
        let mut merged = ArmStats::default();
        merged.merge(&expected);
        merged.merge(&expected);
        assert_eq!(merged.requests, 2 * expected.requests);
        assert_eq!(merged.degraded_ratio(), expected.degraded_ratio());
    }

    #[test]
    fn rollout_latency_is_clamped_to_a_millisecond() {
        let mut s = ArmStats::default();
        s.record(false, Some(Duration::ZERO), None);
        s.record(false, Some(Duration::from_micros(10)), None);
        assert_eq!(s.log_latency_sum, 0.0);
        assert_eq!(s.typical_latency_ms(), 1.0);
        assert_eq!(s.log_latency_var(), LOG_LATENCY_VAR_FLOOR);
    }

    #[test]
    fn rollout_settings_problems_name_their_keys() {
        assert!(RolloutSettings::default().problems().is_empty());
        let s = RolloutSettings {
            steps: vec![
                Step {
                    share: 0.5,
                    hold: Duration::ZERO,
                },
                Step {
                    share: 0.25,
                    hold: 2 * 24 * HOUR,
                },
                Step {
                    share: 1.0,
                    hold: HOUR,
                },
            ],
            alpha: 0.0,
            latency_tolerance: -0.1,
            min_requests: 1,
            ..RolloutSettings::default()
        };
        let keys: Vec<String> = s.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "steps[0].hold",
                "steps[1].share",
                "steps[1].hold",
                "steps[2].share",
                "alpha",
                "latency_tolerance",
                "min_requests"
            ]
        );
        let many = RolloutSettings {
            steps: (1..=11)
                .map(|i| Step {
                    share: f64::from(i) / 12.0,
                    hold: HOUR,
                })
                .collect(),
            ..RolloutSettings::default()
        };
        let keys: Vec<String> = many.problems().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["steps"]);
    }
}
