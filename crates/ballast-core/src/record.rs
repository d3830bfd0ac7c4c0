//! The typed records the request path emits: one per upstream attempt and one per request end.
//! Everything that watches traffic — the request log line, metrics, and later traces, detectors and
//! incidents — consumes these records rather than being fed from each exit of the request path. They
//! carry indices, enums, timings and counts: never request or answer text.

use std::time::Duration;

use crate::api::ApiFormat;
use crate::model::Usage;
use crate::script::ScriptCount;
use crate::trace::TraceContext;

/// How one upstream attempt ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AttemptResult {
    /// The target answered (a whole answer, or a stream committed to the client).
    Answered,
    /// No connection could be made.
    Connect,
    /// A time limit ran out.
    Timeout,
    /// The connection broke.
    Transport,
    /// The target answered 429.
    RateLimited,
    /// Another 4xx.
    ClientError,
    /// A 5xx (or 529).
    ServerError,
    /// 2xx, but not a usable answer.
    BadResponse,
    /// The gateway's own resources ran out; says nothing about the target.
    Local,
}

impl AttemptResult {
    pub const ALL: [AttemptResult; 9] = [
        AttemptResult::Answered,
        AttemptResult::Connect,
        AttemptResult::Timeout,
        AttemptResult::Transport,
        AttemptResult::RateLimited,
        AttemptResult::ClientError,
        AttemptResult::ServerError,
        AttemptResult::BadResponse,
        AttemptResult::Local,
    ];

    /// The metric label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            AttemptResult::Answered => "answered",
            AttemptResult::Connect => "connect_error",
            AttemptResult::Timeout => "timeout",
            AttemptResult::Transport => "transport_error",
            AttemptResult::RateLimited => "rate_limited",
            AttemptResult::ClientError => "client_error",
            AttemptResult::ServerError => "server_error",
            AttemptResult::BadResponse => "bad_response",
            AttemptResult::Local => "local",
        }
    }

    /// Position in [`AttemptResult::ALL`].
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// One upstream attempt: which target (its index in the gateway's target state), how it ended, and
/// how long it took until it answered or failed.
#[derive(Clone, Copy, Debug)]
pub struct AttemptRecord {
    pub target: usize,
    pub result: AttemptResult,
    /// Until the answer (whole) or the first token (streams), or the failure.
    pub duration: Duration,
    pub stream: bool,
    /// The attempt's span, when the request is traced.
    pub trace: Option<TraceContext>,
}

impl AttemptResult {
    /// Whether this result is evidence that the target is unwell: it failed for a reason of its own
    /// (`Some(true)`), answered (`Some(false)`), or says nothing of its health (`None`: a rate
    /// limit, a refused request, the gateway's own limits).
    pub const fn health(self) -> Option<bool> {
        match self {
            AttemptResult::Answered => Some(false),
            AttemptResult::Connect
            | AttemptResult::Timeout
            | AttemptResult::Transport
            | AttemptResult::ServerError
            | AttemptResult::BadResponse => Some(true),
            AttemptResult::RateLimited | AttemptResult::ClientError | AttemptResult::Local => None,
        }
    }
}

/// How a request ended, for the client.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum RequestOutcome {
    /// A whole answer, or a stream that ended with its terminal event.
    Answered,
    /// A stream that started and then failed (it ended with an error event).
    StreamFailed,
    /// The client went away before the answer ended.
    ClientGone,
    /// An error status: every target failed, or the request was refused.
    Failed,
    /// Refused at once: the gateway was at capacity.
    Shed,
    /// Answered from the cache while fresh.
    CacheHit,
    /// Every target failed; a stale cached answer stood in.
    Stale,
}

impl RequestOutcome {
    pub const ALL: [RequestOutcome; 7] = [
        RequestOutcome::Answered,
        RequestOutcome::StreamFailed,
        RequestOutcome::ClientGone,
        RequestOutcome::Failed,
        RequestOutcome::Shed,
        RequestOutcome::CacheHit,
        RequestOutcome::Stale,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RequestOutcome::Answered => "answered",
            RequestOutcome::StreamFailed => "stream_failed",
            RequestOutcome::ClientGone => "client_gone",
            RequestOutcome::Failed => "failed",
            RequestOutcome::Shed => "shed",
            RequestOutcome::CacheHit => "cache_hit",
            RequestOutcome::Stale => "stale",
        }
    }

    pub const fn index(self) -> usize {
        self as usize
    }

    /// Whether the client got what it asked for.
    pub const fn is_success(self) -> bool {
        matches!(
            self,
            RequestOutcome::Answered | RequestOutcome::CacheHit | RequestOutcome::Stale
        )
    }
}

/// What the output-quality scanners concluded about one answer (counts and verdicts only).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AnswerChecks {
    /// Word 3-grams read: too few say nothing about repetition.
    pub ngrams: u32,
    /// The answer loops (see [`crate::quality::Repetition`]).
    pub repetitive: bool,
    /// `Some(valid)` when the request asked for JSON.
    pub json: Option<bool>,
    /// The answer calls a tool.
    pub tool_call: bool,
}

impl AnswerChecks {
    pub fn of(o: &crate::observe::Observation) -> Self {
        let q = &o.quality;
        Self {
            ngrams: q.repetition.ngrams(),
            repetitive: q.repetition.repetitive(),
            json: q.json.as_ref().map(crate::quality::JsonCheck::finish),
            tool_call: o.tool_call,
        }
    }
}

/// The end of one request: exactly one per request, whatever happened.
#[derive(Clone, Debug)]
pub struct RequestRecord<'a> {
    pub request_id: &'a str,
    /// The client's API.
    pub api: ApiFormat,
    /// The route (index in the configuration), once the request named one that exists.
    pub route: Option<usize>,
    /// The target that answered (index in the gateway's target state), if one did.
    pub target: Option<usize>,
    pub outcome: RequestOutcome,
    /// The HTTP status the client got.
    pub status: u16,
    pub stream: bool,
    /// Upstream attempts made (retries and fallbacks included).
    pub attempts: u32,
    /// An earlier target failed before the one that answered.
    pub fallback: bool,
    /// From arrival to the end of the answer.
    pub duration: Duration,
    /// From arrival to the first token (streams).
    pub ttft: Option<Duration>,
    pub usage: Usage,
    pub stop_reason: Option<&'a str>,
    pub malformed_events: u64,
    /// The answer's characters, and those in a script the prompt does not use.
    pub text: ScriptCount,
    /// Whether the answer loops, and whether it is valid JSON (when JSON was asked for).
    pub checks: AnswerChecks,
    /// What went wrong, already free of request and answer text (for the log line).
    pub error: Option<&'a str>,
    /// The request's span, when it is traced (or the client sent a trace).
    pub trace: Option<TraceContext>,
    /// The model the client asked for, and the one that answered (names only).
    pub request_model: Option<&'a str>,
}

impl<'a> RequestRecord<'a> {
    /// A request that ended without an answer from a target (refused, shed, failed, or answered
    /// from the cache): no target, no usage, no text.
    pub fn without_answer(
        request_id: &'a str,
        api: ApiFormat,
        outcome: RequestOutcome,
        status: u16,
        duration: Duration,
    ) -> Self {
        Self {
            request_id,
            api,
            route: None,
            target: None,
            outcome,
            status,
            stream: false,
            attempts: 0,
            fallback: false,
            duration,
            ttft: None,
            usage: Usage::default(),
            stop_reason: None,
            malformed_events: 0,
            text: ScriptCount::default(),
            checks: AnswerChecks::default(),
            error: None,
            trace: None,
            request_model: None,
        }
    }
}
