//! Detectors on live traffic, as pure state machines: each is fed one observation at a time (with
//! the time passed in, never read) and says when its evidence crosses its threshold. They keep
//! counts and running statistics only — never request or answer text.
//!
//! - [`Availability`]: a Bernoulli CUSUM on per-attempt failure flags against the target's own
//!   learned failure rate, so a rise from 0.5% to 16% is seen in seconds while scattered failures
//!   are not an alarm.
//! - [`HardFailure`]: consecutive failures, at once.
//! - [`Latency`]: a CUSUM on standardised log-latency (time to first token) against the target's
//!   learned baseline.
//! - [`AnswerLength`]: a two-sided CUSUM on standardised log answer length (characters) against
//!   the target's learned baseline: much shorter or much longer answers.
//! - [`AbnormalStop`]: a Bernoulli CUSUM on per-answer flags "did not stop naturally" (token
//!   limit, filters; [`natural_stop`] reads the providers' stop reasons) against the target's
//!   learned share.
//! - [`RareDefect`]: two Bernoulli CUSUMs (tuned to a few percent and to about one percent of
//!   answers) on a per-answer defect that is normally (almost) absent: repetition, invalid JSON,
//!   empty answers.
//! - [`WrongScript`]: text in a script the prompt does not use, as a [`RareDefect`] over every
//!   foreign script and a pair of Bernoulli CUSUMs per script against that script's own normal share.
//!
//! Thresholds are set for at most one false alarm per 30 days per detector on clean traffic; the
//! rate is measured by replaying simulated clean traffic through them (`tests::false_alarms`;
//! `bench/false-alarms.sh` replays 30 days).

mod availability;
mod latency;
mod quality;

pub use availability::{Availability, AvailabilityConfig, HardFailure};
pub use latency::{Latency, LatencyConfig};
pub use quality::{
    AbnormalStop, AbnormalStopConfig, AnswerLength, AnswerLengthConfig, DefectTest, RareDefect,
    RareDefectConfig, WrongScript, WrongScriptConfig, natural_stop,
};

/// Which signal a detector watches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Signal {
    Availability,
    HardFailure,
    Latency,
    /// Answers with text in a script the prompt does not use (Thai in an English answer).
    WrongScript,
    /// Answers that end normally with no text and no tool call.
    EmptyAnswer,
    /// Answer length (characters of text) shifted, up or down, from the target's normal.
    AnswerLength,
    /// More answers than normal stop for another reason than a natural end (the token limit, a
    /// content filter, an error).
    StopReason,
    /// Answers that repeat themselves (the same word sequences over and over).
    Repetition,
    /// Answers that are not valid JSON when the request asked for JSON.
    InvalidJson,
    /// The provider's rate limit changed without notice (read from its response headers).
    RateLimitChanged,
    /// At the current growth of use, the provider's rate limit will be reached within a day.
    Headroom,
    /// A configuration change was rolled back during its canary: its traffic did worse than the
    /// current version's (the incident's target names the version).
    ConfigRegression,
}

impl Signal {
    pub const COUNT: usize = 12;

    pub const ALL: [Signal; Signal::COUNT] = [
        Signal::Availability,
        Signal::HardFailure,
        Signal::Latency,
        Signal::WrongScript,
        Signal::EmptyAnswer,
        Signal::AnswerLength,
        Signal::StopReason,
        Signal::Repetition,
        Signal::InvalidJson,
        Signal::RateLimitChanged,
        Signal::Headroom,
        Signal::ConfigRegression,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Signal::Availability => "availability",
            Signal::HardFailure => "hard_failure",
            Signal::Latency => "latency",
            Signal::WrongScript => "wrong_script",
            Signal::EmptyAnswer => "empty_answer",
            Signal::AnswerLength => "answer_length",
            Signal::StopReason => "stop_reason",
            Signal::Repetition => "repetition",
            Signal::InvalidJson => "invalid_json",
            Signal::RateLimitChanged => "rate_limit_changed",
            Signal::Headroom => "headroom",
            Signal::ConfigRegression => "config_regression",
        }
    }

    /// Whether a statistical detector watches each target's traffic for it (the capacity signals
    /// come from the providers' rate-limit headers instead, and a configuration regression from a
    /// rollout's comparison; they have no per-target score).
    pub const fn detector(self) -> bool {
        !matches!(
            self,
            Signal::RateLimitChanged | Signal::Headroom | Signal::ConfigRegression
        )
    }

    pub const fn index(self) -> usize {
        self as usize
    }
}

/// What a detector saw, for an incident and for operators: never a verdict without its numbers.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Evidence {
    pub signal: Signal,
    /// The recent value (failure ratio, latency in seconds, consecutive failures).
    pub observed: f64,
    /// The learned normal value it is compared with.
    pub baseline: f64,
    /// Observations behind the baseline.
    pub samples: u64,
    /// The test statistic, and the value at which it fires.
    pub score: f64,
    pub threshold: f64,
    /// The script, when a wrong-script test on one script is the evidence.
    pub script: Option<crate::script::Script>,
}

/// A detector's state change after an observation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Change {
    /// The score crossed the threshold: trouble.
    Fired,
    /// Back to normal after firing (the score fell back to zero).
    Cleared,
}

#[cfg(test)]
mod tests;
