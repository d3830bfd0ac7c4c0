//! Output quality: answer length (a two-sided CUSUM on log length), abnormal stops (a Bernoulli
//! CUSUM on "did not stop naturally" against a learned ratio), and rare per-answer defects
//! (repetition, invalid JSON, text in the wrong script, empty answers) as a pair of Bernoulli
//! CUSUMs against a floor.

use super::{Change, Evidence, Signal};

/// A statistical detector's score is never taken above this many times its threshold, so that
/// after a long incident it clears within a few hundred answers of recovery, not hours.
const CEILING: f64 = 2.0;

// --- Answer length -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AnswerLengthConfig {
    /// The allowance: shifts smaller than this many standard deviations (of log length) are not
    /// trouble.
    pub slack: f64,
    /// The CUSUM threshold, in standard deviations accumulated (each side).
    pub threshold: f64,
    /// Weight of one answer in the learned mean and variance of log length.
    pub learn_rate: f64,
    /// The learned spread is never taken below this (log characters), so a target whose answers
    /// are all about the same length does not alarm on ordinary variation.
    pub min_sigma: f64,
    /// One answer moves a score by at most this many standard deviations (empty answers, tails).
    pub clamp: f64,
    /// Answers before the detector may fire (the baseline must exist first).
    pub warmup: u64,
}

impl Default for AnswerLengthConfig {
    fn default() -> Self {
        Self {
            slack: 0.25,
            threshold: 35.0,
            learn_rate: 1.0 / 2000.0,
            min_sigma: 0.3,
            clamp: 4.0,
            warmup: 200,
        }
    }
}

/// The length of a target's answers (characters of text) against its own normal, both ways: a
/// miscompiled sampler, a broken stop sequence or a truncating proxy makes answers much shorter,
/// a sampler that no longer stops makes them much longer.
///
/// Evidence: `observed` is the typical recent length in characters (the exponential of a fast
/// average of log length), `baseline` the learned one; `score` is the larger of the two sides'.
#[derive(Clone, Debug)]
pub struct AnswerLength {
    cfg: AnswerLengthConfig,
    /// Learned mean and variance of ln(characters + 1).
    mean: f64,
    var: f64,
    recent: f64,
    /// The two one-sided scores: answers longer than normal, and shorter.
    longer: f64,
    shorter: f64,
    samples: u64,
    firing: bool,
}

impl Default for AnswerLength {
    fn default() -> Self {
        Self::new(AnswerLengthConfig::default())
    }
}

impl AnswerLength {
    pub fn new(cfg: AnswerLengthConfig) -> Self {
        Self {
            cfg,
            mean: 0.0,
            var: 0.0,
            recent: 0.0,
            longer: 0.0,
            shorter: 0.0,
            samples: 0,
            firing: false,
        }
    }

    /// One answer's length in characters of text. Answers that are only tool calls are better left
    /// out: they have no text by design.
    pub fn observe(&mut self, chars: u64) -> Option<Change> {
        let x = (chars as f64).ln_1p();
        self.samples = self.samples.saturating_add(1);
        if self.samples == 1 {
            self.mean = x;
            self.recent = x;
            return None;
        }
        self.recent += (x - self.recent) * 0.05;
        let warming = self.samples <= self.cfg.warmup;
        // During warm-up learn fast (a plain running mean), then slowly.
        let rate = if warming {
            1.0 / self.samples as f64
        } else {
            self.cfg.learn_rate
        };
        if !warming {
            let sigma = self.var.sqrt().max(self.cfg.min_sigma);
            let z = ((x - self.mean) / sigma).clamp(-self.cfg.clamp, self.cfg.clamp);
            let top = self.cfg.threshold * CEILING;
            self.longer = (self.longer + z - self.cfg.slack).clamp(0.0, top);
            self.shorter = (self.shorter - z - self.cfg.slack).clamp(0.0, top);
        }
        // Learn slowly, and not while firing: trouble is never taken for the new normal.
        if !self.firing {
            let d = x - self.mean;
            self.mean += d * rate;
            self.var += (d * d - self.var) * rate;
        }
        let score = self.score();
        if !self.firing && score >= self.cfg.threshold {
            self.firing = true;
            return Some(Change::Fired);
        }
        if self.firing && score == 0.0 {
            self.firing = false;
            return Some(Change::Cleared);
        }
        None
    }

    fn score(&self) -> f64 {
        self.longer.max(self.shorter)
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    pub fn evidence(&self) -> Evidence {
        Evidence {
            signal: Signal::AnswerLength,
            observed: self.recent.exp_m1(),
            baseline: self.mean.exp_m1(),
            samples: self.samples,
            score: self.score(),
            threshold: self.cfg.threshold,
        }
    }
}

// --- Stop reasons ------------------------------------------------------------------------------

/// Whether a provider's stop reason, verbatim as its API sends it, is a natural end of the answer:
/// `Some(true)` for a natural end (including a stop sequence, a tool call, or Anthropic's
/// `pause_turn`), `Some(false)` for an abnormal one (the token limit, a content or safety filter,
/// a refusal, a malformed tool call, a failure), `None` for a reason that says nothing either way
/// (unspecified, cancelled by the client, not finished, or unknown), which is no evidence.
///
/// Covers OpenAI Chat Completions `finish_reason`, Anthropic `stop_reason`, Gemini
/// `finishReason`, and OpenAI Responses as observed: `incomplete_details.reason` when there is
/// one, else the response `status`.
pub fn natural_stop(reason: &str) -> Option<bool> {
    match reason {
        // OpenAI Chat Completions.
        "stop" | "tool_calls" | "function_call" => Some(true),
        // Also the Responses API's `incomplete_details.reason`.
        "length" | "content_filter" => Some(false),
        // Anthropic Messages.
        "end_turn" | "stop_sequence" | "tool_use" | "pause_turn" => Some(true),
        "max_tokens" | "refusal" | "model_context_window_exceeded" => Some(false),
        // Gemini.
        "STOP" => Some(true),
        "MAX_TOKENS"
        | "SAFETY"
        | "RECITATION"
        | "LANGUAGE"
        | "OTHER"
        | "BLOCKLIST"
        | "PROHIBITED_CONTENT"
        | "SPII"
        | "MALFORMED_FUNCTION_CALL"
        | "IMAGE_SAFETY"
        | "UNEXPECTED_TOOL_CALL"
        | "TOO_MANY_TOOL_CALLS"
        | "IMAGE_PROHIBITED_CONTENT"
        | "NO_IMAGE"
        | "IMAGE_RECITATION"
        | "IMAGE_OTHER" => Some(false),
        // OpenAI Responses: the status, or why it is incomplete.
        "completed" => Some(true),
        "max_output_tokens" | "incomplete" | "failed" => Some(false),
        // `FINISH_REASON_UNSPECIFIED`, a Responses `cancelled` (the client's doing), `in_progress`
        // or `queued` (not finished), and anything new.
        _ => None,
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AbnormalStopConfig {
    /// The abnormal-stop ratio assumed normal is never below this.
    pub floor: f64,
    /// The alternative the test looks for: this many times the normal ratio, at least `min_rise`
    /// above it.
    pub factor: f64,
    pub min_rise: f64,
    /// The CUSUM threshold (in nats of evidence).
    pub threshold: f64,
    /// How slowly the normal ratio is learned after warm-up: the weight of one answer.
    pub learn_rate: f64,
    /// Answers during which the normal ratio is learned as a plain average and the detector does
    /// not score (the share of token-limit stops differs widely between applications).
    pub warmup: u64,
}

impl Default for AbnormalStopConfig {
    fn default() -> Self {
        Self {
            floor: 0.01,
            factor: 3.0,
            min_rise: 0.08,
            threshold: 16.0,
            learn_rate: 1.0 / 5000.0,
            warmup: 500,
        }
    }
}

/// The share of a target's answers that do not stop naturally (token limit, filters, refusals,
/// failures) against its own learned share: clean traffic has a few percent of token-limit stops,
/// more for some applications, so the test looks for a clear rise (three times the normal share,
/// and at least 8 points more).
///
/// Evidence: `observed` is the abnormal share since the rise began (since the score last left
/// zero; a short recent average when that is under 20 answers), `baseline` the learned share.
#[derive(Clone, Debug)]
pub struct AbnormalStop {
    test: Bernoulli,
}

impl Default for AbnormalStop {
    fn default() -> Self {
        Self::new(AbnormalStopConfig::default())
    }
}

impl AbnormalStop {
    pub fn new(cfg: AbnormalStopConfig) -> Self {
        Self {
            test: Bernoulli::new(
                Signal::StopReason,
                BernoulliConfig {
                    floor: cfg.floor,
                    factor: cfg.factor,
                    min_rise: cfg.min_rise,
                    threshold: cfg.threshold,
                    learn_rate: cfg.learn_rate,
                    warmup: cfg.warmup,
                    learn_in_warmup: true,
                },
            ),
        }
    }

    /// One answer: did it stop for another reason than a natural end?
    pub fn observe(&mut self, abnormal: bool) -> Option<Change> {
        self.test.observe(abnormal)
    }

    /// One answer's stop reason, verbatim from the provider ([`natural_stop`]); a reason that says
    /// nothing either way is not counted.
    pub fn observe_reason(&mut self, reason: &str) -> Option<Change> {
        natural_stop(reason).and_then(|natural| self.observe(!natural))
    }

    pub fn firing(&self) -> bool {
        self.test.firing
    }

    pub fn evidence(&self) -> Evidence {
        self.test.evidence()
    }
}

// --- Rare defects ------------------------------------------------------------------------------

/// One of a rare defect's two tests: the defect share it looks for (when the normal share is at
/// the floor; it scales with a learned normal above the floor) and its threshold (nats).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DefectTest {
    pub alternative: f64,
    pub threshold: f64,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RareDefectConfig {
    /// The defect share assumed normal is never below this; it is also what makes a target with
    /// no defects yet not alarm on its first few.
    pub floor: f64,
    /// How slowly the normal share is learned: the weight of one answer.
    pub learn_rate: f64,
    /// Answers before the detector may fire.
    pub warmup: u64,
    /// Tuned to a few percent of answers.
    pub fast: DefectTest,
    /// Tuned to about one percent of answers.
    pub slow: DefectTest,
}

impl RareDefectConfig {
    /// The tuning for one signal, measured against 30 simulated days of clean traffic
    /// (`bench/false-alarms.sh`) and the detection tests in `signal/tests.rs`.
    pub fn for_signal(signal: Signal) -> Self {
        match signal {
            // Normally (almost) none: ~0.05% of answers carry a legitimate foreign word or name.
            Signal::WrongScript | Signal::EmptyAnswer => Self {
                floor: 0.001,
                learn_rate: 1.0 / 20_000.0,
                warmup: 20,
                fast: DefectTest {
                    alternative: 0.05,
                    threshold: 12.0,
                },
                slow: DefectTest {
                    alternative: 0.012,
                    threshold: 9.0,
                },
            },
            // About 0.1% of answers legitimately repeat (lists, tables, refrains): the floor is
            // twice that.
            Signal::Repetition => Self {
                floor: 0.002,
                learn_rate: 1.0 / 20_000.0,
                warmup: 20,
                fast: DefectTest {
                    alternative: 0.05,
                    threshold: 12.0,
                },
                slow: DefectTest {
                    alternative: 0.01,
                    threshold: 9.0,
                },
            },
            // About 0.2% of answers asked to be JSON are not (cut off, a sentence around it): the
            // floor is one and a half times that.
            Signal::InvalidJson => Self {
                floor: 0.003,
                learn_rate: 1.0 / 20_000.0,
                warmup: 20,
                fast: DefectTest {
                    alternative: 0.05,
                    threshold: 12.0,
                },
                slow: DefectTest {
                    alternative: 0.012,
                    threshold: 9.0,
                },
            },
            Signal::Availability
            | Signal::HardFailure
            | Signal::Latency
            | Signal::AnswerLength
            | Signal::StopReason
            | Signal::RateLimitChanged
            | Signal::Headroom
            | Signal::ConfigRegression => Self::for_signal(Signal::WrongScript),
        }
    }

    fn test(&self, t: DefectTest) -> BernoulliConfig {
        BernoulliConfig {
            floor: self.floor,
            factor: t.alternative / self.floor,
            min_rise: 0.0,
            threshold: t.threshold,
            learn_rate: self.learn_rate,
            warmup: self.warmup,
            learn_in_warmup: false,
        }
    }
}

/// The share of answers with a defect that is normally (almost) absent — an answer that loops,
/// an answer that is not valid JSON although the request asked for JSON, text in a script the
/// prompt does not use, no text at all — against a floor: a fast test for a few percent of
/// answers and a slow one for about one percent; it fires when either does.
///
/// Evidence (of whichever test is nearer its threshold): `observed` is the defect share since the
/// rise began (since the score last left zero; a short recent average when that is under 20
/// answers), `baseline` the learned normal share.
#[derive(Clone, Debug)]
pub struct RareDefect {
    fast: Bernoulli,
    slow: Bernoulli,
    firing: bool,
}

impl RareDefect {
    /// The detector for `signal` (`Repetition`, `InvalidJson`, `WrongScript`, `EmptyAnswer`) with
    /// its tuning.
    pub fn new(signal: Signal) -> Self {
        Self::with_config(signal, RareDefectConfig::for_signal(signal))
    }

    pub fn with_config(signal: Signal, cfg: RareDefectConfig) -> Self {
        Self {
            fast: Bernoulli::new(signal, cfg.test(cfg.fast)),
            slow: Bernoulli::new(signal, cfg.test(cfg.slow)),
            firing: false,
        }
    }

    /// One answer: does it have the defect? (For invalid JSON, feed only answers whose request
    /// asked for JSON.)
    pub fn observe(&mut self, defect: bool) -> Option<Change> {
        let _ = self.fast.observe(defect);
        let _ = self.slow.observe(defect);
        let now = self.fast.firing || self.slow.firing;
        match (self.firing, now) {
            (false, true) => {
                self.firing = true;
                Some(Change::Fired)
            }
            (true, false) => {
                self.firing = false;
                Some(Change::Cleared)
            }
            _ => None,
        }
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// The evidence of whichever test is nearer its threshold.
    pub fn evidence(&self) -> Evidence {
        let (f, s) = (self.fast.evidence(), self.slow.evidence());
        if f.score / f.threshold >= s.score / s.threshold {
            f
        } else {
            s
        }
    }
}

/// Answers with text in a script the prompt does not use ([`WrongScript::default`]), or that end
/// normally with no text ([`WrongScript::empty_answers`]): a [`RareDefect`] for those signals.
#[derive(Clone, Debug)]
pub struct WrongScript(RareDefect);

impl Default for WrongScript {
    fn default() -> Self {
        Self(RareDefect::new(Signal::WrongScript))
    }
}

impl WrongScript {
    /// Answers that end normally with no text at all (a broken sampler, a serving bug).
    pub fn empty_answers() -> Self {
        Self(RareDefect::new(Signal::EmptyAnswer))
    }

    pub fn observe(&mut self, wrong: bool) -> Option<Change> {
        self.0.observe(wrong)
    }

    pub fn firing(&self) -> bool {
        self.0.firing()
    }

    pub fn evidence(&self) -> Evidence {
        self.0.evidence()
    }
}

impl From<WrongScript> for RareDefect {
    fn from(w: WrongScript) -> Self {
        w.0
    }
}

// --- The Bernoulli CUSUM both share ------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
struct BernoulliConfig {
    floor: f64,
    factor: f64,
    min_rise: f64,
    threshold: f64,
    learn_rate: f64,
    warmup: u64,
    /// Learn the normal share as a plain average during warm-up, without scoring; otherwise score
    /// from the first answer against the floor and only hold back firing.
    learn_in_warmup: bool,
}

/// Answers since the score left zero before their share is reported as the observed share.
const MIN_RUN: u64 = 20;

/// A Bernoulli CUSUM of per-answer flags against a learned normal share.
/// The largest share the test assumes or looks for (a share of 1 would make one unflagged answer
/// infinitely informative).
const MAX_SHARE: f64 = 0.99;

#[derive(Clone, Debug)]
struct Bernoulli {
    signal: Signal,
    cfg: BernoulliConfig,
    baseline: f64,
    /// Short recent average of the flags.
    recent: f64,
    /// Answers and flagged answers since the score last left zero.
    run: u64,
    run_flagged: u64,
    score: f64,
    samples: u64,
    firing: bool,
}

impl Bernoulli {
    fn new(signal: Signal, cfg: BernoulliConfig) -> Self {
        Self {
            signal,
            baseline: if cfg.learn_in_warmup {
                0.0
            } else {
                cfg.floor / 2.0
            },
            recent: 0.0,
            run: 0,
            run_flagged: 0,
            score: 0.0,
            samples: 0,
            firing: false,
            cfg,
        }
    }

    fn observe(&mut self, flagged: bool) -> Option<Change> {
        self.samples = self.samples.saturating_add(1);
        let x = if flagged { 1.0 } else { 0.0 };
        self.recent += (x - self.recent) * 0.05;
        if self.cfg.learn_in_warmup && self.samples <= self.cfg.warmup {
            self.baseline += (x - self.baseline) / self.samples as f64;
            return None;
        }
        let p0 = self.baseline.max(self.cfg.floor).min(MAX_SHARE);
        let p1 = (p0 * self.cfg.factor)
            .max(p0 + self.cfg.min_rise)
            .min(MAX_SHARE);
        // A normal share already (nearly) all flagged — every answer of an app with a tight
        // `max_tokens` stops at the limit — leaves no rise to see: no evidence either way.
        let llr = if p1 <= p0 {
            0.0
        } else if flagged {
            (p1 / p0).ln()
        } else {
            ((1.0 - p1) / (1.0 - p0)).ln()
        };
        self.score = (self.score + llr).clamp(0.0, self.cfg.threshold * CEILING);
        if self.score == 0.0 {
            self.run = 0;
            self.run_flagged = 0;
        } else {
            self.run = self.run.saturating_add(1);
            self.run_flagged = self.run_flagged.saturating_add(u64::from(flagged));
        }
        // Learn the normal share slowly, and not while firing: trouble is never absorbed.
        if !self.firing {
            self.baseline += (x - self.baseline) * self.cfg.learn_rate;
        }
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

    fn evidence(&self) -> Evidence {
        let observed = if self.run >= MIN_RUN {
            self.run_flagged as f64 / self.run as f64
        } else {
            self.recent
        };
        Evidence {
            signal: self.signal,
            observed,
            baseline: self.baseline,
            samples: self.samples,
            score: self.score,
            threshold: self.cfg.threshold,
        }
    }
}
