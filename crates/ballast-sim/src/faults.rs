//! Fault definitions (JSON shape and CLI flag syntax) and the per-request fault draw.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::api::Api;

/// The set of active faults. Every field is optional; an empty set means a healthy upstream.
///
/// The JSON shape is the body of `POST /_sim/faults`, for example
/// `{"error": {"status": 503, "rate": 0.16}, "slow": {"factor": 10}}`.
#[derive(Serialize, Deserialize, Default, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Connections refused (rate 1: the port stops listening) or reset (rate below 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub down: Option<DownFault>,
    /// The request is read and never answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hang: Option<HangFault>,
    /// The request fails with the given status and a provider-shaped error body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorFault>,
    /// The request fails with 429 and `retry-after`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimitFault>,
    /// Latency (time to first token and delay between tokens) is multiplied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub slow: Option<SlowFault>,
    /// The answer is cut off mid-way, or after a number of tokens: then the body ends cleanly, the
    /// connection is cut, the provider's mid-stream error event comes, or nothing more comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truncate: Option<TruncateFault>,
    /// The answer's text comes back partly in the wrong script.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub corrupt: Option<CorruptFault>,
    /// The answer is a successful one of poor quality: empty, looping, cut short at a token limit,
    /// or broken JSON when JSON was asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub degrade: Option<DegradeFault>,
    /// The answer is malicious or broken bytes (huge numbers, endless events or headers, invalid
    /// UTF-8, deep nesting, a trickle …).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostile: Option<HostileFault>,
    /// A conversation that ends with an assistant turn (a prefill) is refused with the provider's
    /// 400, as models without prefill support refuse it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reject_prefill: Option<RejectPrefillFault>,
    /// The answer opens (status, headers, the stream's opening events) and then nothing more comes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role_then_silence: Option<RoleThenSilenceFault>,
}

fn one() -> f64 {
    1.0
}

fn default_retry_after() -> u64 {
    1
}

fn default_factor() -> f64 {
    10.0
}

fn default_status() -> u16 {
    503
}

/// `down`: refuse connections. Not scoped to one API (it acts on the listener).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DownFault {
    /// 1.0: stop listening. Below 1: each new connection is reset with this probability.
    #[serde(default = "one")]
    pub rate: f64,
    /// Clear this fault by itself after this many seconds (keeps `ballast sim` recoverable over HTTP).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_secs: Option<f64>,
}

/// `hang`: read the request and never answer.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HangFault {
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `error`: answer with an error status and the provider's error body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ErrorFault {
    /// HTTP status, 400..=599 (500, 502, 503, 529 …).
    #[serde(default = "default_status")]
    pub status: u16,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `rate_limit`: answer 429 with `retry-after`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimitFault {
    /// Value of the `retry-after` header, in seconds.
    #[serde(default = "default_retry_after")]
    pub retry_after_secs: u64,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `slow`: multiply latency.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct SlowFault {
    /// Multiplier on ttft and token delay (a base of 20 ms / 5 ms is used when those are zero).
    #[serde(default = "default_factor")]
    pub factor: f64,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `truncate`: cut the answer off mid-way, or after `after_tokens` streamed pieces.
///
/// JSON: `{"truncate": {"mode": "error_event", "after_tokens": 5, "rate": 0.5, "api": "anthropic"}}`
/// (every field optional). Flag: `truncate[:MODE][,after_tokens=N][@RATE][/API]`, e.g.
/// `truncate:reset`, `truncate:stall,after_tokens=3/openai`, `truncate:after_tokens=0`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TruncateFault {
    /// How the answer ends: a clean end of body (`eof`, default), a cut connection (`reset`), the
    /// provider's mid-stream error event (`error_event`) or silence on an open connection (`stall`).
    #[serde(default)]
    pub mode: TruncateMode,
    /// Streams: cut right before the `after_tokens + 1`-th streamed piece (a text delta, a tool
    /// call's argument fragment, a Gemini chunk), so exactly that many pieces arrive; an answer with
    /// no more pieces than that is cut right after its last one, and the terminal event never comes.
    /// Unset: about half the events. Non-streamed answers ignore it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub after_tokens: Option<u64>,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `corrupt`: replace a share of the answer's words with words of another script.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct CorruptFault {
    /// The wrong script.
    #[serde(default)]
    pub script: Script,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `reject_prefill`: refuse, with the provider's 400, a request whose conversation ends with an
/// assistant turn (Anthropic: `This model does not support assistant message prefill. The
/// conversation must end with a user message.`). Other requests are answered as usual.
///
/// JSON: `{"reject_prefill": {"rate": 1, "api": "anthropic"}}`. Flag: `reject_prefill[@RATE][/API]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RejectPrefillFault {
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `role_then_silence`: the answer starts and then falls silent with the connection open. A stream
/// sends its API's opening events and no content (Chat: the role chunk; Anthropic: `message_start`,
/// an empty text `content_block_start`, `ping`; Responses: `response.created`,
/// `response.in_progress`, the added message item and its empty part; Gemini: a chunk with an empty
/// text part); a non-streamed answer sends its status and headers and no body.
///
/// JSON: `{"role_then_silence": {"rate": 1, "api": "openai"}}`. Flag:
/// `role_then_silence[@RATE][/API]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RoleThenSilenceFault {
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// `degrade`: a well-formed, successful answer of poor quality, in the format's own terms (stop
/// reasons, usage, statuses), to exercise output-quality detectors. Text answers only: tool calls are
/// left alone.
///
/// JSON: `{"degrade": {"mode": "repeat", "rate": 0.2, "api": "openai"}}` (`mode` required). Flag:
/// `degrade:MODE[@RATE][/API]`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct DegradeFault {
    /// How the answer is degraded.
    pub mode: DegradeMode,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

impl DegradeFault {
    /// A fault in `mode`, rate 1, every API.
    pub fn new(mode: DegradeMode) -> DegradeFault {
        DegradeFault {
            mode,
            rate: 1.0,
            api: None,
        }
    }
}

/// How a `degrade` fault spoils a text answer.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum DegradeMode {
    /// No text at all (no text deltas; an empty text part, or none on Anthropic), the natural stop
    /// reason (`stop`, `end_turn`, `STOP`, `completed`) and 1–3 output tokens.
    Empty,
    /// A short phrase looping for as many words as the normal answer has (a broken sampler); the
    /// natural stop reason.
    Repeat,
    /// A few tokens (2–4) of the normal answer, then the format's token-limit stop: `length`,
    /// `max_tokens`, `MAX_TOKENS`, or a Responses `incomplete` answer with
    /// `incomplete_details.reason: "max_output_tokens"`.
    Short,
    /// When the request asks for a JSON answer, broken JSON (cut mid-object, an unquoted key or a
    /// trailing comma) with the natural stop reason; otherwise the normal answer.
    InvalidJson,
}

impl DegradeMode {
    /// Every mode, in documentation order.
    pub const ALL: [DegradeMode; 4] = [
        DegradeMode::Empty,
        DegradeMode::Repeat,
        DegradeMode::Short,
        DegradeMode::InvalidJson,
    ];

    /// The snake_case name used in JSON and flags.
    pub fn name(self) -> &'static str {
        match self {
            DegradeMode::Empty => "empty",
            DegradeMode::Repeat => "repeat",
            DegradeMode::Short => "short",
            DegradeMode::InvalidJson => "invalid_json",
        }
    }
}

impl fmt::Display for DegradeMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for DegradeMode {
    type Err = FaultFlagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        DegradeMode::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| FaultFlagError::BadParam {
                fault: "degrade",
                param: s.to_owned(),
                expected: "a mode: empty, repeat, short or invalid_json",
            })
    }
}

/// `hostile`: answer with malicious or broken bytes, to prove a client survives them. One mode per
/// fault; `bytes`, `interval_ms`, `depth` and `count` tune the modes that use them (others reject
/// them).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HostileFault {
    /// What the answer does wrong.
    pub mode: HostileMode,
    /// Size bound: `no_terminator` body (default 64 MiB), `huge_event` string (100 MiB),
    /// `endless_headers` header block (64 MiB), `huge_headers` big header value (1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// Pause: between bytes for `trickle` (default 1000 ms), between header lines for
    /// `endless_headers` (default 10 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub interval_ms: Option<u64>,
    /// Nesting levels for `deep_nesting` (default 100000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub depth: Option<u64>,
    /// Number of extra headers for `huge_headers` (default 10000).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Probability per request.
    #[serde(default = "one")]
    pub rate: f64,
    /// Only requests to this API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api: Option<Api>,
}

/// What a `hostile` answer does wrong.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "snake_case")]
pub enum HostileMode {
    /// A valid-looking answer (text, then a tool call) whose indexes, sequence numbers and token
    /// counts are enormous or negative.
    HugeIndex,
    /// A body that never contains an SSE event terminator (nor closes its JSON), `bytes` long.
    NoTerminator,
    /// One event (non-streamed: the text) carrying a JSON string `bytes` long, then the normal rest.
    HugeEvent,
    /// The normal answer with invalid UTF-8 inside ids, the model, text and event names.
    InvalidUtf8,
    /// JSON nested `depth` levels deep (closed and unclosed) in the text, delta and usage fields.
    DeepNesting,
    /// A status line, then header lines that never end (until `bytes` or the client hangs up).
    EndlessHeaders,
    /// The correct answer, one byte every `interval_ms`.
    Trickle,
    /// The correct answer behind `count` extra headers and one header value `bytes` long.
    HugeHeaders,
}

/// The largest `bytes` of a streamed hostile answer (1 TiB: never reached in practice, but bounded).
const MAX_HOSTILE_BYTES: u64 = 1 << 40;
/// `huge_headers` holds its big header in memory: at most 16 MiB.
const MAX_HEADER_BYTES: u64 = 16 << 20;
/// `huge_headers`: a `HeaderMap` holds at most 32768 entries; leave room for the usual ones.
const MAX_HEADER_COUNT: u64 = 30_000;
/// The largest `depth` (each level is 1–5 bytes, streamed).
const MAX_DEPTH: u64 = 100_000_000;
/// The longest `interval_ms` (one hour).
const MAX_INTERVAL_MS: u64 = 3_600_000;

/// A tunable parameter of a hostile mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum HostileParam {
    Bytes,
    IntervalMs,
    Depth,
    Count,
}

impl HostileParam {
    fn name(self) -> &'static str {
        match self {
            HostileParam::Bytes => "bytes",
            HostileParam::IntervalMs => "interval_ms",
            HostileParam::Depth => "depth",
            HostileParam::Count => "count",
        }
    }
}

impl HostileMode {
    /// Every mode, in documentation order.
    pub const ALL: [HostileMode; 8] = [
        HostileMode::HugeIndex,
        HostileMode::NoTerminator,
        HostileMode::HugeEvent,
        HostileMode::InvalidUtf8,
        HostileMode::DeepNesting,
        HostileMode::EndlessHeaders,
        HostileMode::Trickle,
        HostileMode::HugeHeaders,
    ];

    /// The snake_case name used in JSON and flags.
    pub fn name(self) -> &'static str {
        match self {
            HostileMode::HugeIndex => "huge_index",
            HostileMode::NoTerminator => "no_terminator",
            HostileMode::HugeEvent => "huge_event",
            HostileMode::InvalidUtf8 => "invalid_utf8",
            HostileMode::DeepNesting => "deep_nesting",
            HostileMode::EndlessHeaders => "endless_headers",
            HostileMode::Trickle => "trickle",
            HostileMode::HugeHeaders => "huge_headers",
        }
    }

    /// The parameters this mode uses, with their defaults and allowed ranges.
    fn params(self) -> &'static [(HostileParam, u64, std::ops::RangeInclusive<u64>)] {
        const BYTES: std::ops::RangeInclusive<u64> = 1..=MAX_HOSTILE_BYTES;
        const INTERVAL: std::ops::RangeInclusive<u64> = 0..=MAX_INTERVAL_MS;
        match self {
            HostileMode::HugeIndex | HostileMode::InvalidUtf8 => &[],
            HostileMode::NoTerminator => &[(HostileParam::Bytes, 64 << 20, BYTES)],
            HostileMode::HugeEvent => &[(HostileParam::Bytes, 100 << 20, BYTES)],
            HostileMode::DeepNesting => &[(HostileParam::Depth, 100_000, 1..=MAX_DEPTH)],
            HostileMode::EndlessHeaders => &[
                (HostileParam::Bytes, 64 << 20, BYTES),
                (HostileParam::IntervalMs, 10, INTERVAL),
            ],
            HostileMode::Trickle => &[(HostileParam::IntervalMs, 1000, INTERVAL)],
            HostileMode::HugeHeaders => &[
                (HostileParam::Bytes, 1 << 20, 0..=MAX_HEADER_BYTES),
                (HostileParam::Count, 10_000, 0..=MAX_HEADER_COUNT),
            ],
        }
    }
}

impl fmt::Display for HostileMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for HostileMode {
    type Err = FaultFlagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.to_ascii_lowercase().replace('-', "_");
        HostileMode::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| FaultFlagError::BadParam {
                fault: "hostile",
                param: s.to_owned(),
                expected: "a mode: huge_index, no_terminator, huge_event, invalid_utf8, deep_nesting, \
                           endless_headers, trickle or huge_headers",
            })
    }
}

impl HostileFault {
    /// A fault in `mode` with default parameters, rate 1, every API.
    pub fn new(mode: HostileMode) -> HostileFault {
        HostileFault {
            mode,
            bytes: None,
            interval_ms: None,
            depth: None,
            count: None,
            rate: 1.0,
            api: None,
        }
    }

    fn param(&self, param: HostileParam) -> Option<u64> {
        match param {
            HostileParam::Bytes => self.bytes,
            HostileParam::IntervalMs => self.interval_ms,
            HostileParam::Depth => self.depth,
            HostileParam::Count => self.count,
        }
    }

    fn param_mut(&mut self, param: HostileParam) -> &mut Option<u64> {
        match param {
            HostileParam::Bytes => &mut self.bytes,
            HostileParam::IntervalMs => &mut self.interval_ms,
            HostileParam::Depth => &mut self.depth,
            HostileParam::Count => &mut self.count,
        }
    }

    /// Checks that every parameter set is one the mode uses, within its range.
    pub fn check(&self) -> Result<(), String> {
        let params = self.mode.params();
        for param in [
            HostileParam::Bytes,
            HostileParam::IntervalMs,
            HostileParam::Depth,
            HostileParam::Count,
        ] {
            let Some(value) = self.param(param) else {
                continue;
            };
            match params.iter().find(|(p, _, _)| *p == param) {
                None => {
                    return Err(format!(
                        "`{}` does not apply to mode {}",
                        param.name(),
                        self.mode
                    ));
                }
                Some((_, _, range)) if !range.contains(&value) => {
                    return Err(format!(
                        "`{}` for mode {} must be between {} and {}, got {value}",
                        param.name(),
                        self.mode,
                        range.start(),
                        range.end()
                    ));
                }
                Some(_) => {}
            }
        }
        Ok(())
    }

    /// The parameters the answer is generated with: defaults filled in, values clamped to range
    /// (faults set through [`crate::SimHandle::set_faults`] are not validated).
    pub(crate) fn resolve(&self) -> Hostile {
        let value = |param: HostileParam| -> u64 {
            self.mode
                .params()
                .iter()
                .find(|(p, _, _)| *p == param)
                .map_or(0, |(_, default, range)| {
                    self.param(param)
                        .unwrap_or(*default)
                        .clamp(*range.start(), *range.end())
                })
        };
        Hostile {
            mode: self.mode,
            bytes: value(HostileParam::Bytes),
            interval: std::time::Duration::from_millis(value(HostileParam::IntervalMs)),
            depth: value(HostileParam::Depth),
            count: value(HostileParam::Count),
        }
    }
}

/// A drawn `hostile` fault with its parameters resolved (0 for those the mode does not use).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Hostile {
    pub mode: HostileMode,
    pub bytes: u64,
    pub interval: std::time::Duration,
    pub depth: u64,
    pub count: u64,
}

/// How a truncated answer ends.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum TruncateMode {
    /// The body ends cleanly (final chunk sent) without the terminal event: a silent cut that only a
    /// client checking for `message_stop` / `[DONE]` / `finishReason` notices.
    #[default]
    Eof,
    /// The connection is closed mid-body: the client sees an incomplete-body error.
    Reset,
    /// Streams: the provider's own mid-stream error event, in the API's real shape, then the body
    /// ends (Anthropic `event: error` with `overloaded_error`; Chat a `data: {"error": …}` chunk;
    /// Responses an `error` event then `response.failed`; Gemini an `{"error": …}` chunk).
    /// Non-streamed: the error the stream would carry, as an error response (Anthropic 529
    /// `overloaded_error`, OpenAI 500 `server_error`, Gemini 503 `UNAVAILABLE`).
    ErrorEvent,
    /// Nothing more is sent and the connection stays open until the client goes away.
    Stall,
}

impl TruncateMode {
    /// Every mode, in documentation order.
    pub const ALL: [TruncateMode; 4] = [
        TruncateMode::Eof,
        TruncateMode::Reset,
        TruncateMode::ErrorEvent,
        TruncateMode::Stall,
    ];

    /// The snake_case name used in JSON and flags.
    pub fn name(self) -> &'static str {
        match self {
            TruncateMode::Eof => "eof",
            TruncateMode::Reset => "reset",
            TruncateMode::ErrorEvent => "error_event",
            TruncateMode::Stall => "stall",
        }
    }
}

impl fmt::Display for TruncateMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TruncateMode {
    type Err = FaultFlagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let wanted = s.trim().to_ascii_lowercase().replace('-', "_");
        TruncateMode::ALL
            .into_iter()
            .find(|m| m.name() == wanted)
            .ok_or_else(|| FaultFlagError::BadParam {
                fault: "truncate",
                param: s.to_owned(),
                expected: "a mode: eof (clean end, default), reset (cut connection), error_event \
                           (the provider's mid-stream error) or stall (silence, connection open), \
                           optionally followed by `,after_tokens=N`",
            })
    }
}

/// A drawn `truncate` fault.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Truncate {
    pub mode: TruncateMode,
    /// Cut after this many streamed pieces instead of about half the events.
    pub after_tokens: Option<u64>,
}

/// A writing system that corrupted answers drift into.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Script {
    /// Thai words.
    #[default]
    Thai,
    /// Russian words in Cyrillic.
    Cyrillic,
    /// Chinese words.
    Cjk,
}

impl FromStr for Script {
    type Err = FaultFlagError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "thai" => Ok(Script::Thai),
            "cyrillic" => Ok(Script::Cyrillic),
            "cjk" => Ok(Script::Cjk),
            _ => Err(FaultFlagError::BadParam {
                fault: "corrupt",
                param: s.to_owned(),
                expected: "a script: thai, cyrillic or cjk",
            }),
        }
    }
}

impl Default for DownFault {
    fn default() -> Self {
        DownFault {
            rate: 1.0,
            duration_secs: None,
        }
    }
}
impl Default for HangFault {
    fn default() -> Self {
        HangFault {
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for ErrorFault {
    fn default() -> Self {
        ErrorFault {
            status: default_status(),
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for RateLimitFault {
    fn default() -> Self {
        RateLimitFault {
            retry_after_secs: default_retry_after(),
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for SlowFault {
    fn default() -> Self {
        SlowFault {
            factor: default_factor(),
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for TruncateFault {
    fn default() -> Self {
        TruncateFault {
            mode: TruncateMode::Eof,
            after_tokens: None,
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for RejectPrefillFault {
    fn default() -> Self {
        RejectPrefillFault {
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for RoleThenSilenceFault {
    fn default() -> Self {
        RoleThenSilenceFault {
            rate: 1.0,
            api: None,
        }
    }
}
impl Default for CorruptFault {
    fn default() -> Self {
        CorruptFault {
            script: Script::Thai,
            rate: 1.0,
            api: None,
        }
    }
}

/// A `Faults` value that cannot be applied.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultsError {
    /// A rate outside 0..=1.
    #[error("{fault}.rate must be between 0 and 1, got {rate}")]
    Rate {
        /// The fault's name.
        fault: &'static str,
        /// The rejected rate.
        rate: f64,
    },
    /// An error status that is not an HTTP error.
    #[error("error.status must be between 400 and 599, got {0}")]
    Status(u16),
    /// A slow factor that is not a positive number.
    #[error("slow.factor must be a positive number, got {0}")]
    Factor(f64),
    /// A down duration that is not a positive number.
    #[error("down.duration_secs must be a positive number, got {0}")]
    Duration(f64),
    /// A hostile parameter the mode does not use, or out of range.
    #[error("hostile: {0}")]
    Hostile(String),
}

impl Faults {
    /// Faults from CLI flags, later flags replacing earlier ones of the same kind.
    pub fn from_flags(flags: impl IntoIterator<Item = FaultFlag>) -> Faults {
        let mut faults = Faults::default();
        faults.extend(flags);
        faults
    }

    /// Sets the fault a flag describes, replacing any fault of the same kind.
    pub fn apply(&mut self, flag: FaultFlag) {
        match flag {
            FaultFlag::Down(f) => self.down = Some(f),
            FaultFlag::Hang(f) => self.hang = Some(f),
            FaultFlag::Error(f) => self.error = Some(f),
            FaultFlag::RateLimit(f) => self.rate_limit = Some(f),
            FaultFlag::Slow(f) => self.slow = Some(f),
            FaultFlag::Truncate(f) => self.truncate = Some(f),
            FaultFlag::Corrupt(f) => self.corrupt = Some(f),
            FaultFlag::Hostile(f) => self.hostile = Some(f),
            FaultFlag::Degrade(f) => self.degrade = Some(f),
            FaultFlag::RejectPrefill(f) => self.reject_prefill = Some(f),
            FaultFlag::RoleThenSilence(f) => self.role_then_silence = Some(f),
        }
    }

    /// True when no fault is set.
    pub fn is_empty(&self) -> bool {
        *self == Faults::default()
    }

    /// Checks rates, statuses and factors.
    pub fn validate(&self) -> Result<(), FaultsError> {
        let rates = [
            ("down", self.down.as_ref().map(|f| f.rate)),
            ("hang", self.hang.as_ref().map(|f| f.rate)),
            ("error", self.error.as_ref().map(|f| f.rate)),
            ("rate_limit", self.rate_limit.as_ref().map(|f| f.rate)),
            ("slow", self.slow.as_ref().map(|f| f.rate)),
            ("truncate", self.truncate.as_ref().map(|f| f.rate)),
            ("corrupt", self.corrupt.as_ref().map(|f| f.rate)),
            ("hostile", self.hostile.as_ref().map(|f| f.rate)),
            ("degrade", self.degrade.as_ref().map(|f| f.rate)),
            (
                "reject_prefill",
                self.reject_prefill.as_ref().map(|f| f.rate),
            ),
            (
                "role_then_silence",
                self.role_then_silence.as_ref().map(|f| f.rate),
            ),
        ];
        for (fault, rate) in rates {
            if let Some(rate) = rate
                && !(0.0..=1.0).contains(&rate)
            {
                return Err(FaultsError::Rate { fault, rate });
            }
        }
        if let Some(e) = &self.error
            && !(400..=599).contains(&e.status)
        {
            return Err(FaultsError::Status(e.status));
        }
        if let Some(s) = &self.slow
            && !(s.factor.is_finite() && s.factor > 0.0)
        {
            return Err(FaultsError::Factor(s.factor));
        }
        if let Some(d) = self.down.as_ref().and_then(|d| d.duration_secs)
            && !(d.is_finite() && d > 0.0)
        {
            return Err(FaultsError::Duration(d));
        }
        if let Some(h) = &self.hostile {
            h.check().map_err(FaultsError::Hostile)?;
        }
        Ok(())
    }

    /// True when `down` is set at rate 1 (or above): the port must not listen.
    pub(crate) fn fully_down(&self) -> bool {
        self.down.as_ref().is_some_and(|d| d.rate >= 1.0)
    }

    /// The probability of resetting a new connection (0 when `down` is unset or at rate 1).
    pub(crate) fn reset_rate(&self) -> f64 {
        match &self.down {
            Some(d) if d.rate < 1.0 => d.rate.max(0.0),
            _ => 0.0,
        }
    }
}

impl Extend<FaultFlag> for Faults {
    fn extend<T: IntoIterator<Item = FaultFlag>>(&mut self, iter: T) {
        for flag in iter {
            self.apply(flag);
        }
    }
}

impl FromIterator<FaultFlag> for Faults {
    fn from_iter<T: IntoIterator<Item = FaultFlag>>(iter: T) -> Self {
        Faults::from_flags(iter)
    }
}

/// One `--fault` flag of `ballast sim`: `NAME[:PARAM][@RATE][/API]`.
///
/// `down`, `down@0.5`, `down:30` (down for 30 s), `hang@0.2`, `error:503@0.16`, `rate_limit:1`
/// (retry-after seconds), `slow:10` (factor), `truncate@0.3`, `truncate:reset`,
/// `truncate:error_event,after_tokens=5/anthropic`, `truncate:stall,after_tokens=3`,
/// `corrupt:thai@0.1`, `error:529/anthropic` (only Anthropic requests), `hostile:huge_index`,
/// `hostile:trickle,interval_ms=50@0.5/openai` (mode, then `KEY=VALUE` parameters), `degrade:empty`,
/// `degrade:repeat@0.2/gemini`, `degrade:short`, `degrade:invalid_json`, `reject_prefill/anthropic`,
/// `role_then_silence@0.1`.
#[derive(Clone, Debug, PartialEq)]
pub enum FaultFlag {
    /// `down[:SECS][@RATE]`
    Down(DownFault),
    /// `hang[@RATE][/API]`
    Hang(HangFault),
    /// `error:STATUS[@RATE][/API]`
    Error(ErrorFault),
    /// `rate_limit[:RETRY_AFTER_SECS][@RATE][/API]`
    RateLimit(RateLimitFault),
    /// `slow[:FACTOR][@RATE][/API]`
    Slow(SlowFault),
    /// `truncate[:eof|reset|error_event|stall][,after_tokens=N][@RATE][/API]`
    Truncate(TruncateFault),
    /// `corrupt[:SCRIPT][@RATE][/API]`
    Corrupt(CorruptFault),
    /// `hostile:MODE[,KEY=VALUE…][@RATE][/API]`
    Hostile(HostileFault),
    /// `degrade:empty|repeat|short|invalid_json[@RATE][/API]`
    Degrade(DegradeFault),
    /// `reject_prefill[@RATE][/API]`
    RejectPrefill(RejectPrefillFault),
    /// `role_then_silence[@RATE][/API]`
    RoleThenSilence(RoleThenSilenceFault),
}

/// Why a `--fault` flag did not parse.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FaultFlagError {
    /// Not one of the known fault names.
    #[error(
        "unknown fault `{0}`: expected down, hang, error, rate_limit, slow, truncate, corrupt, hostile, \
         degrade, reject_prefill or role_then_silence (syntax NAME[:PARAM][@RATE][/API], e.g. \
         error:503@0.16)"
    )]
    UnknownFault(String),
    /// A parameter that does not fit the fault.
    #[error("bad parameter `{param}` for `{fault}`: expected {expected}")]
    BadParam {
        /// The fault's name.
        fault: &'static str,
        /// The rejected parameter.
        param: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A fault that needs a parameter was given none.
    #[error("`{fault}` needs a parameter, as in `{example}`")]
    MissingParam {
        /// The fault's name.
        fault: &'static str,
        /// A correct flag.
        example: &'static str,
    },
    /// A fault that takes no parameter was given one.
    #[error("`{fault}` takes no `:` parameter (got `{param}`)")]
    UnexpectedParam {
        /// The fault's name.
        fault: &'static str,
        /// The rejected parameter.
        param: String,
    },
    /// A rate that is not a number in 0..=1.
    #[error("bad rate `{0}`: expected a number between 0 and 1 after `@`, as in `error:503@0.16`")]
    BadRate(String),
    /// An API scope that is not a known API.
    #[error("bad API `{0}` after `/`: expected anthropic, openai or gemini")]
    BadApi(String),
    /// `down` cannot be scoped to one API.
    #[error("`down` acts on the whole listener and cannot be scoped to one API")]
    ScopedDown,
    /// A `hostile` parameter that is malformed, unknown, unused by the mode or out of range.
    #[error(
        "bad hostile parameter: {0} (syntax hostile:MODE[,KEY=VALUE…], keys bytes, interval_ms, \
         depth, count; e.g. hostile:no_terminator,bytes=1048576)"
    )]
    BadHostile(String),
}

impl FromStr for FaultFlag {
    type Err = FaultFlagError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let (rest, api) = match s.rsplit_once('/') {
            Some((rest, api)) => (rest, Some(parse_api(api)?)),
            None => (s, None),
        };
        let (rest, rate) = match rest.rsplit_once('@') {
            Some((rest, rate)) => (rest, parse_rate(rate)?),
            None => (rest, 1.0),
        };
        let (name, param) = match rest.split_once(':') {
            Some((name, param)) => (name, Some(param)),
            None => (rest, None),
        };
        let name = name.to_ascii_lowercase().replace('-', "_");
        match name.as_str() {
            "down" => {
                if api.is_some() {
                    return Err(FaultFlagError::ScopedDown);
                }
                let duration_secs = param
                    .map(|p| match p.parse::<f64>() {
                        Ok(d) if d.is_finite() && d > 0.0 => Ok(d),
                        _ => Err(FaultFlagError::BadParam {
                            fault: "down",
                            param: p.to_owned(),
                            expected: "a duration in seconds, as in `down:30`",
                        }),
                    })
                    .transpose()?;
                Ok(FaultFlag::Down(DownFault {
                    rate,
                    duration_secs,
                }))
            }
            "hang" => {
                no_param("hang", param)?;
                Ok(FaultFlag::Hang(HangFault { rate, api }))
            }
            "truncate" => {
                let mut fault = TruncateFault {
                    rate,
                    api,
                    ..TruncateFault::default()
                };
                for (i, item) in param.into_iter().flat_map(|p| p.split(',')).enumerate() {
                    match item.split_once('=') {
                        Some((key, value)) => {
                            let key = key.trim().to_ascii_lowercase().replace('-', "_");
                            if key != "after_tokens" {
                                return Err(FaultFlagError::BadParam {
                                    fault: "truncate",
                                    param: item.to_owned(),
                                    expected: "`after_tokens=N` (the only key)",
                                });
                            }
                            let n = value.trim().parse::<u64>().map_err(|_| {
                                FaultFlagError::BadParam {
                                    fault: "truncate",
                                    param: item.to_owned(),
                                    expected: "a whole number of tokens, as in `after_tokens=5`",
                                }
                            })?;
                            fault.after_tokens = Some(n);
                        }
                        None if i == 0 => fault.mode = TruncateMode::from_str(item)?,
                        None => {
                            return Err(FaultFlagError::BadParam {
                                fault: "truncate",
                                param: item.to_owned(),
                                expected: "the mode first, then `after_tokens=N`, as in \
                                           `truncate:error_event,after_tokens=5`",
                            });
                        }
                    }
                }
                Ok(FaultFlag::Truncate(fault))
            }
            "error" => {
                let p = param.ok_or(FaultFlagError::MissingParam {
                    fault: "error",
                    example: "error:503@0.16",
                })?;
                let status = match p.parse::<u16>() {
                    Ok(s) if (400..=599).contains(&s) => s,
                    _ => {
                        return Err(FaultFlagError::BadParam {
                            fault: "error",
                            param: p.to_owned(),
                            expected: "an HTTP status between 400 and 599",
                        });
                    }
                };
                Ok(FaultFlag::Error(ErrorFault { status, rate, api }))
            }
            "rate_limit" | "ratelimit" => {
                let retry_after_secs = param
                    .map(|p| {
                        p.parse::<u64>().map_err(|_| FaultFlagError::BadParam {
                            fault: "rate_limit",
                            param: p.to_owned(),
                            expected: "whole seconds for retry-after, as in `rate_limit:1`",
                        })
                    })
                    .transpose()?
                    .unwrap_or_else(default_retry_after);
                Ok(FaultFlag::RateLimit(RateLimitFault {
                    retry_after_secs,
                    rate,
                    api,
                }))
            }
            "slow" => {
                let factor = param
                    .map(|p| match p.parse::<f64>() {
                        Ok(f) if f.is_finite() && f > 0.0 => Ok(f),
                        _ => Err(FaultFlagError::BadParam {
                            fault: "slow",
                            param: p.to_owned(),
                            expected: "a positive factor, as in `slow:10`",
                        }),
                    })
                    .transpose()?
                    .unwrap_or_else(default_factor);
                Ok(FaultFlag::Slow(SlowFault { factor, rate, api }))
            }
            "corrupt" => {
                let script = param.map(Script::from_str).transpose()?.unwrap_or_default();
                Ok(FaultFlag::Corrupt(CorruptFault { script, rate, api }))
            }
            "hostile" => {
                let p = param.ok_or(FaultFlagError::MissingParam {
                    fault: "hostile",
                    example: "hostile:huge_index",
                })?;
                let mut parts = p.split(',');
                let mode = HostileMode::from_str(parts.next().unwrap_or_default().trim())?;
                let mut fault = HostileFault {
                    rate,
                    api,
                    ..HostileFault::new(mode)
                };
                for pair in parts {
                    let (key, value) = pair.split_once('=').ok_or_else(|| {
                        FaultFlagError::BadHostile(format!("`{pair}` is not KEY=VALUE"))
                    })?;
                    let key = key.trim().to_ascii_lowercase();
                    let param = [
                        HostileParam::Bytes,
                        HostileParam::IntervalMs,
                        HostileParam::Depth,
                        HostileParam::Count,
                    ]
                    .into_iter()
                    .find(|p| p.name() == key)
                    .ok_or_else(|| FaultFlagError::BadHostile(format!("unknown key `{key}`")))?;
                    let value = value.trim().parse::<u64>().map_err(|_| {
                        FaultFlagError::BadHostile(format!(
                            "`{key}` needs a whole number, got `{value}`"
                        ))
                    })?;
                    *fault.param_mut(param) = Some(value);
                }
                fault.check().map_err(FaultFlagError::BadHostile)?;
                Ok(FaultFlag::Hostile(fault))
            }
            "degrade" => {
                let p = param.ok_or(FaultFlagError::MissingParam {
                    fault: "degrade",
                    example: "degrade:empty",
                })?;
                let mode = DegradeMode::from_str(p)?;
                Ok(FaultFlag::Degrade(DegradeFault { mode, rate, api }))
            }
            "reject_prefill" => {
                no_param("reject_prefill", param)?;
                Ok(FaultFlag::RejectPrefill(RejectPrefillFault { rate, api }))
            }
            "role_then_silence" => {
                no_param("role_then_silence", param)?;
                Ok(FaultFlag::RoleThenSilence(RoleThenSilenceFault {
                    rate,
                    api,
                }))
            }
            _ => Err(FaultFlagError::UnknownFault(s.to_owned())),
        }
    }
}

impl fmt::Display for FaultFlag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (name, param, rate, api): (&str, Option<String>, f64, Option<Api>) = match self {
            FaultFlag::Down(d) => ("down", d.duration_secs.map(|s| s.to_string()), d.rate, None),
            FaultFlag::Hang(h) => ("hang", None, h.rate, h.api),
            FaultFlag::Error(e) => ("error", Some(e.status.to_string()), e.rate, e.api),
            FaultFlag::RateLimit(r) => (
                "rate_limit",
                Some(r.retry_after_secs.to_string()),
                r.rate,
                r.api,
            ),
            FaultFlag::Slow(s) => ("slow", Some(s.factor.to_string()), s.rate, s.api),
            FaultFlag::Truncate(t) => {
                let mut items = Vec::new();
                if t.mode != TruncateMode::Eof {
                    items.push(t.mode.name().to_owned());
                }
                if let Some(n) = t.after_tokens {
                    items.push(format!("after_tokens={n}"));
                }
                let param = (!items.is_empty()).then(|| items.join(","));
                ("truncate", param, t.rate, t.api)
            }
            FaultFlag::Corrupt(c) => (
                "corrupt",
                Some(script_name(c.script).to_owned()),
                c.rate,
                c.api,
            ),
            FaultFlag::Hostile(h) => {
                let mut param = h.mode.name().to_owned();
                for p in [
                    HostileParam::Bytes,
                    HostileParam::IntervalMs,
                    HostileParam::Depth,
                    HostileParam::Count,
                ] {
                    if let Some(v) = h.param(p) {
                        param.push_str(&format!(",{}={v}", p.name()));
                    }
                }
                ("hostile", Some(param), h.rate, h.api)
            }
            FaultFlag::Degrade(d) => ("degrade", Some(d.mode.name().to_owned()), d.rate, d.api),
            FaultFlag::RejectPrefill(r) => ("reject_prefill", None, r.rate, r.api),
            FaultFlag::RoleThenSilence(r) => ("role_then_silence", None, r.rate, r.api),
        };
        f.write_str(name)?;
        if let Some(p) = param {
            write!(f, ":{p}")?;
        }
        if rate != 1.0 {
            write!(f, "@{rate}")?;
        }
        if let Some(api) = api {
            write!(f, "/{}", api.name())?;
        }
        Ok(())
    }
}

fn script_name(s: Script) -> &'static str {
    match s {
        Script::Thai => "thai",
        Script::Cyrillic => "cyrillic",
        Script::Cjk => "cjk",
    }
}

fn no_param(fault: &'static str, param: Option<&str>) -> Result<(), FaultFlagError> {
    match param {
        Some(p) => Err(FaultFlagError::UnexpectedParam {
            fault,
            param: p.to_owned(),
        }),
        None => Ok(()),
    }
}

fn parse_rate(s: &str) -> Result<f64, FaultFlagError> {
    match s.parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(r),
        _ => Err(FaultFlagError::BadRate(s.to_owned())),
    }
}

fn parse_api(s: &str) -> Result<Api, FaultFlagError> {
    match s.to_ascii_lowercase().as_str() {
        "anthropic" => Ok(Api::Anthropic),
        "openai" => Ok(Api::OpenAi),
        "gemini" => Ok(Api::Gemini),
        _ => Err(FaultFlagError::BadApi(s.to_owned())),
    }
}

/// What the fault draw decided for one request.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Decision {
    /// Never answer.
    pub hang: bool,
    /// Fail with this status.
    pub error: Option<u16>,
    /// Fail with 429 and this retry-after.
    pub rate_limit: Option<u64>,
    /// Multiply latency by this factor.
    pub slow: Option<f64>,
    /// Cut the answer off, ending it this way.
    pub truncate: Option<Truncate>,
    /// Corrupt the answer's text into this script.
    pub corrupt: Option<Script>,
    /// Answer with malicious or broken bytes.
    pub hostile: Option<Hostile>,
    /// Degrade the answer's text this way.
    pub degrade: Option<DegradeMode>,
    /// Refuse a conversation that ends with an assistant turn.
    pub reject_prefill: bool,
    /// Open the answer, then fall silent.
    pub role_then_silence: bool,
}

/// Draws the faults for one request to `api`. Every configured fault that applies to `api` takes one
/// draw, in a fixed order, so a seeded run is reproducible.
pub(crate) fn decide(faults: &Faults, api: Api, rng: &mut fastrand::Rng) -> Decision {
    let applies = |scope: Option<Api>| scope.is_none_or(|s| s == api);
    let mut hit = |rate: f64, scope: Option<Api>| applies(scope) && rng.f64() < rate;
    let hang = faults.hang.as_ref().is_some_and(|f| hit(f.rate, f.api));
    let error = faults
        .error
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| f.status);
    let rate_limit = faults
        .rate_limit
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| f.retry_after_secs);
    let slow = faults
        .slow
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| f.factor);
    let truncate = faults
        .truncate
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| Truncate {
            mode: f.mode,
            after_tokens: f.after_tokens,
        });
    let corrupt = faults
        .corrupt
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| f.script);
    // Drawn last, so seeded runs without `hostile` draw as they always did.
    let hostile = faults
        .hostile
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(HostileFault::resolve);
    // After `hostile`, for the same reason.
    let degrade = faults
        .degrade
        .as_ref()
        .filter(|f| hit(f.rate, f.api))
        .map(|f| f.mode);
    // After `degrade`, for the same reason.
    let reject_prefill = faults
        .reject_prefill
        .as_ref()
        .is_some_and(|f| hit(f.rate, f.api));
    let role_then_silence = faults
        .role_then_silence
        .as_ref()
        .is_some_and(|f| hit(f.rate, f.api));
    Decision {
        hang,
        error,
        rate_limit,
        slow,
        truncate,
        corrupt,
        hostile,
        degrade,
        reject_prefill,
        role_then_silence,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(flag: &str, expected: FaultFlag) {
        let parsed: FaultFlag = flag.parse().unwrap_or_else(|e| panic!("{flag}: {e}"));
        assert_eq!(parsed, expected, "{flag}");
        // Display round-trips.
        let again: FaultFlag = parsed.to_string().parse().unwrap();
        assert_eq!(again, expected, "{flag} via {parsed}");
    }

    #[test]
    fn parses_flag_syntax() {
        check(
            "down",
            FaultFlag::Down(DownFault {
                rate: 1.0,
                duration_secs: None,
            }),
        );
        check(
            "down@0.5",
            FaultFlag::Down(DownFault {
                rate: 0.5,
                duration_secs: None,
            }),
        );
        check(
            "down:30",
            FaultFlag::Down(DownFault {
                rate: 1.0,
                duration_secs: Some(30.0),
            }),
        );
        check(
            "hang@0.2",
            FaultFlag::Hang(HangFault {
                rate: 0.2,
                api: None,
            }),
        );
        check(
            "error:503@0.16",
            FaultFlag::Error(ErrorFault {
                status: 503,
                rate: 0.16,
                api: None,
            }),
        );
        check(
            "error:529/anthropic",
            FaultFlag::Error(ErrorFault {
                status: 529,
                rate: 1.0,
                api: Some(Api::Anthropic),
            }),
        );
        check(
            "rate_limit:1",
            FaultFlag::RateLimit(RateLimitFault {
                retry_after_secs: 1,
                rate: 1.0,
                api: None,
            }),
        );
        check(
            "rate-limit:7@0.5/openai",
            FaultFlag::RateLimit(RateLimitFault {
                retry_after_secs: 7,
                rate: 0.5,
                api: Some(Api::OpenAi),
            }),
        );
        check(
            "rate_limit",
            FaultFlag::RateLimit(RateLimitFault::default()),
        );
        check(
            "slow:10",
            FaultFlag::Slow(SlowFault {
                factor: 10.0,
                rate: 1.0,
                api: None,
            }),
        );
        check(
            "slow:2.5@0.1/gemini",
            FaultFlag::Slow(SlowFault {
                factor: 2.5,
                rate: 0.1,
                api: Some(Api::Gemini),
            }),
        );
        check(
            "truncate@0.3",
            FaultFlag::Truncate(TruncateFault {
                rate: 0.3,
                ..TruncateFault::default()
            }),
        );
        check(
            "truncate:reset/openai",
            FaultFlag::Truncate(TruncateFault {
                mode: TruncateMode::Reset,
                api: Some(Api::OpenAi),
                ..TruncateFault::default()
            }),
        );
        check(
            "truncate:error_event,after_tokens=5@0.5/anthropic",
            FaultFlag::Truncate(TruncateFault {
                mode: TruncateMode::ErrorEvent,
                after_tokens: Some(5),
                rate: 0.5,
                api: Some(Api::Anthropic),
            }),
        );
        check(
            "truncate:after_tokens=0",
            FaultFlag::Truncate(TruncateFault {
                after_tokens: Some(0),
                ..TruncateFault::default()
            }),
        );
        check(
            "truncate:stall,after-tokens=3/gemini",
            FaultFlag::Truncate(TruncateFault {
                mode: TruncateMode::Stall,
                after_tokens: Some(3),
                api: Some(Api::Gemini),
                ..TruncateFault::default()
            }),
        );
        for mode in TruncateMode::ALL {
            check(
                &format!("truncate:{mode}"),
                FaultFlag::Truncate(TruncateFault {
                    mode,
                    ..TruncateFault::default()
                }),
            );
        }
        check(
            "reject_prefill",
            FaultFlag::RejectPrefill(RejectPrefillFault::default()),
        );
        check(
            "reject-prefill@0.5/anthropic",
            FaultFlag::RejectPrefill(RejectPrefillFault {
                rate: 0.5,
                api: Some(Api::Anthropic),
            }),
        );
        check(
            "role_then_silence/openai",
            FaultFlag::RoleThenSilence(RoleThenSilenceFault {
                rate: 1.0,
                api: Some(Api::OpenAi),
            }),
        );
        check(
            "corrupt:thai@0.1",
            FaultFlag::Corrupt(CorruptFault {
                script: Script::Thai,
                rate: 0.1,
                api: None,
            }),
        );
        check(
            "corrupt:cjk",
            FaultFlag::Corrupt(CorruptFault {
                script: Script::Cjk,
                rate: 1.0,
                api: None,
            }),
        );
        check("corrupt", FaultFlag::Corrupt(CorruptFault::default()));
        check(
            "hostile:huge_index",
            FaultFlag::Hostile(HostileFault::new(HostileMode::HugeIndex)),
        );
        check(
            "hostile:no_terminator,bytes=1048576@0.5/openai",
            FaultFlag::Hostile(HostileFault {
                bytes: Some(1_048_576),
                rate: 0.5,
                api: Some(Api::OpenAi),
                ..HostileFault::new(HostileMode::NoTerminator)
            }),
        );
        check(
            "hostile:endless-headers,interval_ms=0,bytes=4096",
            FaultFlag::Hostile(HostileFault {
                bytes: Some(4096),
                interval_ms: Some(0),
                ..HostileFault::new(HostileMode::EndlessHeaders)
            }),
        );
        check(
            "hostile:huge_headers,count=10,bytes=0/gemini",
            FaultFlag::Hostile(HostileFault {
                bytes: Some(0),
                count: Some(10),
                api: Some(Api::Gemini),
                ..HostileFault::new(HostileMode::HugeHeaders)
            }),
        );
        for mode in HostileMode::ALL {
            check(
                &format!("hostile:{mode}"),
                FaultFlag::Hostile(HostileFault::new(mode)),
            );
        }
        check(
            "degrade:repeat@0.2/gemini",
            FaultFlag::Degrade(DegradeFault {
                mode: DegradeMode::Repeat,
                rate: 0.2,
                api: Some(Api::Gemini),
            }),
        );
        check(
            "degrade:invalid-json",
            FaultFlag::Degrade(DegradeFault::new(DegradeMode::InvalidJson)),
        );
        for mode in DegradeMode::ALL {
            check(
                &format!("degrade:{mode}"),
                FaultFlag::Degrade(DegradeFault::new(mode)),
            );
        }
    }

    #[test]
    fn rejects_bad_flags_with_clear_errors() {
        let cases = [
            ("explode", "unknown fault"),
            ("error", "needs a parameter"),
            ("error:abc", "HTTP status"),
            ("error:200", "HTTP status"),
            ("hang@1.5", "bad rate"),
            ("hang@x", "bad rate"),
            ("hang:3", "takes no"),
            ("truncate:sideways", "a mode"),
            ("truncate:after_tokens=x", "whole number"),
            ("truncate:after_tokens=-1", "whole number"),
            ("truncate:eof,speed=1", "the only key"),
            ("truncate:after_tokens=1,reset", "the mode first"),
            ("reject_prefill:1", "takes no"),
            ("role_then_silence:yes", "takes no"),
            ("role_then_silence@2", "bad rate"),
            ("slow:0", "positive factor"),
            ("corrupt:klingon", "script"),
            ("error:503/bedrock", "bad API"),
            ("down/openai", "cannot be scoped"),
            ("rate_limit:1.5", "whole seconds"),
            ("hostile", "needs a parameter"),
            ("hostile:sideways", "a mode"),
            ("hostile:trickle,bytes=5", "does not apply to mode trickle"),
            ("hostile:trickle,interval_ms=x", "whole number"),
            ("hostile:deep_nesting,depth=0", "between 1 and"),
            ("hostile:huge_headers,count=40000", "between 0 and 30000"),
            ("hostile:trickle,speed=1", "unknown key"),
            ("hostile:trickle,5", "KEY=VALUE"),
            ("degrade", "needs a parameter"),
            ("degrade:garbled", "empty, repeat, short or invalid_json"),
            ("degrade:short@2", "bad rate"),
        ];
        for (flag, needle) in cases {
            let err = flag.parse::<FaultFlag>().unwrap_err().to_string();
            assert!(err.contains(needle), "{flag}: {err}");
        }
    }

    #[test]
    fn folds_flags_into_faults() {
        let faults: Faults = ["error:500", "truncate@0.3", "error:503@0.16"]
            .iter()
            .map(|f| f.parse::<FaultFlag>().unwrap())
            .collect();
        assert_eq!(
            faults.error,
            Some(ErrorFault {
                status: 503,
                rate: 0.16,
                api: None
            })
        );
        assert_eq!(
            faults.truncate,
            Some(TruncateFault {
                rate: 0.3,
                ..TruncateFault::default()
            })
        );
        assert!(faults.hang.is_none());
    }

    #[test]
    fn json_shape_defaults_rate_to_one() {
        let faults: Faults = serde_json::from_str(
            r#"{"down": {}, "error": {"status": 529}, "corrupt": {"script": "cyrillic", "rate": 0.1, "api": "openai"}}"#,
        )
        .unwrap();
        assert_eq!(
            faults.down,
            Some(DownFault {
                rate: 1.0,
                duration_secs: None
            })
        );
        assert_eq!(
            faults.error,
            Some(ErrorFault {
                status: 529,
                rate: 1.0,
                api: None
            })
        );
        assert_eq!(
            faults.corrupt,
            Some(CorruptFault {
                script: Script::Cyrillic,
                rate: 0.1,
                api: Some(Api::OpenAi)
            })
        );
        assert!(serde_json::from_str::<Faults>(r#"{"errors": {}}"#).is_err());
        assert_eq!(serde_json::to_string(&Faults::default()).unwrap(), "{}");
    }

    #[test]
    fn validate_rejects_out_of_range_values() {
        let bad: Faults = serde_json::from_str(r#"{"hang": {"rate": 2}}"#).unwrap();
        assert!(bad.validate().is_err());
        let bad: Faults = serde_json::from_str(r#"{"error": {"status": 302}}"#).unwrap();
        assert!(bad.validate().is_err());
        let ok: Faults = serde_json::from_str(r#"{"slow": {"factor": 3}}"#).unwrap();
        assert!(ok.validate().is_ok());
    }

    #[test]
    fn hostile_json_shape_validation_and_defaults() {
        let faults: Faults = serde_json::from_str(
            r#"{"hostile": {"mode": "deep_nesting", "depth": 10, "rate": 0.5, "api": "gemini"}}"#,
        )
        .unwrap();
        let h = faults.hostile.clone().unwrap();
        assert_eq!(h.mode, HostileMode::DeepNesting);
        assert_eq!((h.depth, h.rate, h.api), (Some(10), 0.5, Some(Api::Gemini)));
        assert!(faults.validate().is_ok());
        assert_eq!(
            serde_json::to_value(&faults).unwrap(),
            serde_json::json!({"hostile": {"mode": "deep_nesting", "depth": 10, "rate": 0.5, "api": "gemini"}})
        );
        assert!(serde_json::from_str::<Faults>(r#"{"hostile": {}}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"hostile": {"mode": "loud"}}"#).is_err());
        let bad: Faults =
            serde_json::from_str(r#"{"hostile": {"mode": "huge_index", "bytes": 5}}"#).unwrap();
        assert_eq!(
            bad.validate().unwrap_err().to_string(),
            "hostile: `bytes` does not apply to mode huge_index"
        );
        let bad: Faults =
            serde_json::from_str(r#"{"hostile": {"mode": "trickle", "rate": 3}}"#).unwrap();
        assert!(bad.validate().is_err());

        let defaults = |mode| HostileFault::new(mode).resolve();
        assert_eq!(defaults(HostileMode::NoTerminator).bytes, 64 << 20);
        assert_eq!(defaults(HostileMode::HugeEvent).bytes, 100 << 20);
        assert_eq!(defaults(HostileMode::DeepNesting).depth, 100_000);
        assert_eq!(
            defaults(HostileMode::Trickle).interval,
            std::time::Duration::from_secs(1)
        );
        let headers = defaults(HostileMode::HugeHeaders);
        assert_eq!((headers.bytes, headers.count), (1 << 20, 10_000));
        // Unvalidated values (the embedding API) are clamped, never trusted.
        let clamped = HostileFault {
            count: Some(u64::MAX),
            ..HostileFault::new(HostileMode::HugeHeaders)
        }
        .resolve();
        assert_eq!(clamped.count, 30_000);
    }

    #[test]
    fn degrade_json_shape() {
        let faults: Faults = serde_json::from_str(
            r#"{"degrade": {"mode": "invalid_json", "rate": 0.5, "api": "anthropic"}}"#,
        )
        .unwrap();
        assert_eq!(
            faults.degrade,
            Some(DegradeFault {
                mode: DegradeMode::InvalidJson,
                rate: 0.5,
                api: Some(Api::Anthropic)
            })
        );
        assert!(faults.validate().is_ok());
        assert_eq!(
            serde_json::to_value(Faults::from_flags(["degrade:empty".parse().unwrap()])).unwrap(),
            serde_json::json!({"degrade": {"mode": "empty", "rate": 1.0}})
        );
        assert!(serde_json::from_str::<Faults>(r#"{"degrade": {}}"#).is_err());
        assert!(serde_json::from_str::<Faults>(r#"{"degrade": {"mode": "loud"}}"#).is_err());
        let bad: Faults =
            serde_json::from_str(r#"{"degrade": {"mode": "short", "rate": -1}}"#).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn truncate_and_prefill_json_shapes() {
        let faults: Faults = serde_json::from_str(
            r#"{"truncate": {"mode": "error_event", "after_tokens": 4, "api": "gemini"},
                "reject_prefill": {"rate": 0.5, "api": "anthropic"}, "role_then_silence": {}}"#,
        )
        .unwrap();
        assert_eq!(
            faults.truncate,
            Some(TruncateFault {
                mode: TruncateMode::ErrorEvent,
                after_tokens: Some(4),
                rate: 1.0,
                api: Some(Api::Gemini)
            })
        );
        assert_eq!(
            faults.reject_prefill,
            Some(RejectPrefillFault {
                rate: 0.5,
                api: Some(Api::Anthropic)
            })
        );
        assert_eq!(
            faults.role_then_silence,
            Some(RoleThenSilenceFault::default())
        );
        assert!(faults.validate().is_ok());
        assert_eq!(
            serde_json::to_value(Faults::from_flags([
                "truncate:stall,after_tokens=2".parse().unwrap(),
                "truncate".parse().unwrap(),
            ]))
            .unwrap(),
            serde_json::json!({"truncate": {"mode": "eof", "rate": 1.0}})
        );
        assert_eq!(
            serde_json::to_value(Faults::from_flags(["truncate:stall,after_tokens=2"
                .parse()
                .unwrap()]))
            .unwrap(),
            serde_json::json!({"truncate": {"mode": "stall", "after_tokens": 2, "rate": 1.0}})
        );
        for bad in [
            r#"{"truncate": {"mode": "sideways"}}"#,
            r#"{"truncate": {"after_tokens": -1}}"#,
            r#"{"truncate": {"after": 1}}"#,
            r#"{"reject_prefill": {"mode": "x"}}"#,
            r#"{"role_then_silence": {"api": "bedrock"}}"#,
        ] {
            assert!(serde_json::from_str::<Faults>(bad).is_err(), "{bad}");
        }
        let bad: Faults = serde_json::from_str(r#"{"role_then_silence": {"rate": 1.5}}"#).unwrap();
        assert!(
            bad.validate()
                .unwrap_err()
                .to_string()
                .contains("role_then_silence.rate")
        );
        let bad: Faults = serde_json::from_str(r#"{"reject_prefill": {"rate": -1}}"#).unwrap();
        assert!(bad.validate().is_err());
    }

    #[test]
    fn decide_respects_scope_and_rate() {
        let mut rng = fastrand::Rng::with_seed(1);
        let faults = Faults::from_flags([
            "error:503/openai".parse().unwrap(),
            "truncate@0".parse().unwrap(),
        ]);
        let d = decide(&faults, Api::OpenAi, &mut rng);
        assert_eq!(d.error, Some(503));
        assert!(d.truncate.is_none());
        let d = decide(&faults, Api::Anthropic, &mut rng);
        assert_eq!(d.error, None);
    }

    #[test]
    fn decide_rate_is_roughly_honoured() {
        let mut rng = fastrand::Rng::with_seed(7);
        let faults = Faults::from_flags(["hang@0.25".parse().unwrap()]);
        let hits = (0..4000)
            .filter(|_| decide(&faults, Api::Gemini, &mut rng).hang)
            .count();
        assert!((800..1200).contains(&hits), "{hits}");
    }
}
