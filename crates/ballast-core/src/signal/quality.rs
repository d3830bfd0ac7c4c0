//! Output quality: answer length (a two-sided CUSUM on log length), abnormal stops (a Bernoulli
//! CUSUM on "did not stop naturally" against a learned ratio), and rare per-answer defects
//! (repetition, invalid JSON, text in the wrong script, empty answers) as a pair of Bernoulli
//! CUSUMs against a floor.

use super::{Change, Evidence, Signal};
use crate::script::{Script, ScriptSet};

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
            script: None,
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

/// A detector made of several tests fires when the first does and clears when the last does.
fn transition(firing: &mut bool, now: bool) -> Option<Change> {
    match (*firing, now) {
        (false, true) => {
            *firing = true;
            Some(Change::Fired)
        }
        (true, false) => {
            *firing = false;
            Some(Change::Cleared)
        }
        _ => None,
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
        transition(&mut self.firing, now)
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// The learned normal share of answers with the defect.
    pub fn baseline(&self) -> f64 {
        self.slow.baseline
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

// --- Wrong script ----------------------------------------------------------------------------

/// Tuning of the wrong-script detector: the rare-defect test over answers with text in any script
/// their prompt does not use, and a test per script.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WrongScriptConfig {
    /// The test over every foreign script together.
    pub any: RareDefectConfig,
    /// The share of answers with text in one given script is never assumed below this ...
    pub script_floor: f64,
    /// ... nor below this part of the learned share with text in any foreign script (an app whose
    /// answers often quote other languages spreads them over several scripts).
    pub script_part: f64,
    /// How slowly each script's normal share is learned (from the floor): the weight of one
    /// answer. An answer with the script while its score is already rising is not learned, so
    /// that a fault's first answers do not make the next ones look normal.
    pub learn_rate: f64,
    /// The per-script tests, looking for at least this share (or four times the normal).
    pub fast: DefectTest,
    pub slow: DefectTest,
}

impl Default for WrongScriptConfig {
    fn default() -> Self {
        Self {
            any: RareDefectConfig::for_signal(Signal::WrongScript),
            script_floor: 0.000_01,
            script_part: 0.02,
            learn_rate: 1.0 / 100_000.0,
            // Two answers with a script are never enough (2 x ln(0.05 / floor) = 17.0 nats at
            // the floor; 2 x ln(0.012 / floor) = 14.2): pairs of quotes in one script come
            // about daily. Three within ~160 (fast) or ~520 answers (slow) are.
            fast: DefectTest {
                alternative: 0.05,
                threshold: 17.5,
            },
            slow: DefectTest {
                alternative: 0.012,
                threshold: 15.0,
            },
        }
    }
}

/// Answers with text in a script the prompt does not use (Thai in answers to English prompts).
///
/// Two kinds of test, and it fires when any does:
/// - a [`RareDefect`] over answers with any foreign script, for corruption spread over many
///   scripts (a broken sampler drawing random tokens);
/// - a pair of Bernoulli CUSUMs per script, each against that script's own normal share. Legitimate
///   foreign text in answers (a name, a quotation, a Greek letter) is spread over several scripts,
///   while a serving bug that corrupts tokens shows one script again and again; against that one
///   script's far smaller normal share, each corrupted answer is worth more evidence. This is what
///   sees 1% of answers in Thai within a few hundred answers without alarming on 0.05% of answers
///   quoting other languages.
///
/// A script's test is brought up to date only when an answer has that script (or while it fires):
/// the answers in between are all without it, and their effect (the score falling, the normal
/// share decaying) is applied at once, so a clean answer costs no more than it did.
///
/// Evidence: of whichever test is nearest its threshold; for a script's test `observed` is the
/// share of answers with that script since its score last left zero, `baseline` its normal share.
#[derive(Clone, Debug)]
pub struct WrongScript {
    cfg: WrongScriptConfig,
    any: RareDefect,
    scripts: [ScriptTest; Script::ALL.len()],
    /// Answers seen.
    answers: u64,
    /// Scripts whose test is firing: brought up to date on every answer, so that they clear.
    firing_scripts: ScriptSet,
    firing: bool,
}

/// One script's pair of tests, as of answer `at`.
#[derive(Clone, Copy, Debug, Default)]
struct ScriptTest {
    baseline: f64,
    fast: f64,
    slow: f64,
    at: u64,
    /// The answer at which the score last left zero, and the answers with the script since.
    rise_from: u64,
    rise_flagged: u64,
    firing: bool,
}

impl Default for WrongScript {
    fn default() -> Self {
        Self::with_config(WrongScriptConfig::default())
    }
}

impl WrongScript {
    pub fn with_config(cfg: WrongScriptConfig) -> Self {
        Self {
            any: RareDefect::with_config(Signal::WrongScript, cfg.any),
            scripts: [ScriptTest {
                baseline: cfg.script_floor,
                ..ScriptTest::default()
            }; Script::ALL.len()],
            answers: 0,
            firing_scripts: ScriptSet::EMPTY,
            firing: false,
            cfg,
        }
    }

    /// One answer, with the scripts its prompt does not use that it has text in (empty: none).
    pub fn observe(&mut self, foreign: ScriptSet) -> Option<Change> {
        self.answers = self.answers.saturating_add(1);
        let _ = self.any.observe(!foreign.is_empty());
        let any_normal = self.any.baseline();
        let warm = self.answers >= self.cfg.any.warmup;
        // The common answer (no foreign text, no script's test firing) updates none.
        for s in foreign.union(self.firing_scripts).iter() {
            let Some(t) = self.scripts.get_mut(s as usize) else {
                continue;
            };
            t.observe(&self.cfg, any_normal, self.answers, foreign.contains(s));
            let fired =
                warm && (t.fast >= self.cfg.fast.threshold || t.slow >= self.cfg.slow.threshold);
            if fired {
                t.firing = true;
                self.firing_scripts.insert(s);
            } else if t.firing && t.fast == 0.0 && t.slow == 0.0 {
                t.firing = false;
                self.firing_scripts.remove(s);
            }
        }
        let now = self.any.firing() || !self.firing_scripts.is_empty();
        transition(&mut self.firing, now)
    }

    pub fn firing(&self) -> bool {
        self.firing
    }

    /// The script whose own test is nearest its threshold, if any has evidence.
    pub fn script(&self) -> Option<Script> {
        self.nearest().map(|(s, _)| s)
    }

    fn nearest(&self) -> Option<(Script, Evidence)> {
        let any_normal = self.any.baseline();
        Script::ALL
            .into_iter()
            .zip(self.scripts.iter())
            .filter(|(_, t)| t.fast > 0.0 || t.slow > 0.0)
            .map(|(s, t)| {
                let mut t = *t;
                t.catch_up(&self.cfg, any_normal, self.answers);
                (s, t.evidence(&self.cfg, self.answers, s))
            })
            .max_by(|a, b| (a.1.score / a.1.threshold).total_cmp(&(b.1.score / b.1.threshold)))
    }

    /// The evidence of whichever test is nearest its threshold.
    pub fn evidence(&self) -> Evidence {
        let any = self.any.evidence();
        match self.nearest() {
            Some((_, e)) if e.score / e.threshold > any.score / any.threshold => Evidence {
                samples: self.answers,
                ..e
            },
            _ => any,
        }
    }
}

impl ScriptTest {
    fn p0(&self, cfg: &WrongScriptConfig, any_normal: f64) -> f64 {
        self.baseline
            .max(cfg.script_floor)
            .max(any_normal * cfg.script_part)
            .min(MAX_SHARE)
    }

    fn p1(p0: f64, t: DefectTest) -> f64 {
        t.alternative.max(p0 * 4.0).min(MAX_SHARE)
    }

    /// Applies the answers after `self.at` up to `until` (all without the script): the normal
    /// share decays, then each score falls by the clean answers' evidence. (The drain uses the
    /// normal share at the end of the stretch: at most as much evidence as answer by answer.)
    fn catch_up(&mut self, cfg: &WrongScriptConfig, any_normal: f64, until: u64) {
        let m = until.saturating_sub(self.at);
        self.at = self.at.max(until);
        if m == 0 {
            return;
        }
        let m = m as f64;
        if !self.firing {
            self.baseline *= (m * (-cfg.learn_rate).ln_1p()).exp();
        }
        let p0 = self.p0(cfg, any_normal);
        for (score, test) in [(&mut self.fast, cfg.fast), (&mut self.slow, cfg.slow)] {
            let p1 = Self::p1(p0, test);
            let per_answer = ((1.0 - p1) / (1.0 - p0)).ln();
            *score = (*score + m * per_answer).max(0.0);
        }
    }

    /// Answer `n`, with or without the script.
    fn observe(&mut self, cfg: &WrongScriptConfig, any_normal: f64, n: u64, flagged: bool) {
        self.catch_up(cfg, any_normal, n.saturating_sub(1));
        self.at = n;
        let p0 = self.p0(cfg, any_normal);
        let rising = self.fast > 0.0 || self.slow > 0.0;
        for (score, test) in [(&mut self.fast, cfg.fast), (&mut self.slow, cfg.slow)] {
            let p1 = Self::p1(p0, test);
            let llr = if flagged {
                (p1 / p0).ln()
            } else {
                ((1.0 - p1) / (1.0 - p0)).ln()
            };
            *score = (*score + llr).clamp(0.0, test.threshold * CEILING);
        }
        let suspect = flagged && rising;
        if !self.firing && !suspect {
            let x = if flagged { 1.0 } else { 0.0 };
            self.baseline += (x - self.baseline) * cfg.learn_rate;
        }
        if !rising {
            self.rise_from = n;
            self.rise_flagged = 0;
        }
        self.rise_flagged = self.rise_flagged.saturating_add(u64::from(flagged));
    }

    fn evidence(&self, cfg: &WrongScriptConfig, answers: u64, script: Script) -> Evidence {
        let span = answers.saturating_sub(self.rise_from).saturating_add(1);
        let (score, threshold) = if self.fast / cfg.fast.threshold >= self.slow / cfg.slow.threshold
        {
            (self.fast, cfg.fast.threshold)
        } else {
            (self.slow, cfg.slow.threshold)
        };
        Evidence {
            signal: Signal::WrongScript,
            observed: self.rise_flagged as f64 / span as f64,
            baseline: self.baseline,
            samples: answers,
            score,
            threshold,
            script: Some(script),
        }
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
            script: None,
        }
    }
}
