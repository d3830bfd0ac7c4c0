//! Cross-format translation between wire formats and the canonical model (issue "Cross-provider translation"): pure functions and stream state machines, no I/O.
//!
//! The gateway calls only what this module exports:
//! - [`decode_request`] / [`encode_request`]: a client's request body → [`ChatRequest`] → a provider's body
//!   (plus `x-ballast-warning` entries for whatever the target cannot honour);
//! - [`decode_response`] / [`encode_response`]: the same for complete (non-streaming) answers;
//! - [`StreamDecoder`] / [`StreamEncoder`] / [`StreamTranslator`]: provider SSE events → canonical
//!   [`StreamEvent`]s → the client's SSE bytes, event by event, with no buffering of the answer (the
//!   exceptions: a tool call bound for a Gemini client waits for its last argument fragment, because Gemini
//!   sends whole `functionCall` parts; a Responses client's final `response.completed` repeats the
//!   answer). What a stream may make them hold is bounded by [`StreamLimits`] (tool calls, content
//!   parts, one call's arguments, the whole answer); going over fails the stream.
//!
//! Nothing a client or a provider sends can make these panic or allocate in proportion to a number it
//! states: provider indices are mapped to dense canonical ones (or looked up in maps), usage sums
//! saturate, response ids repeated in every event are cut to 256 bytes, and JSON nesting is
//! bounded by `serde_json` (128 levels). `tests/fuzz` holds the hostile-input suite.
//!
//! Conventions every adapter follows (see also the per-format module docs):
//! - Decoders drop empty text parts and normalise empty tool arguments to `{}`.
//! - Fields the canonical model cannot carry are listed in [`ChatRequest::dropped`] by the decoder;
//!   fields a target cannot honour are dropped by its encoder; both become warnings, never errors.
//! - Tool-call ids are kept verbatim wherever the target accepts them, so an id a client saw is the id it
//!   sends back. Gemini has no ids on the wire: its decoder synthesises deterministic ones
//!   (`call_{turn}_{n}` in requests, `call_{responseId}_{n}` in answers) and its encoder pairs a result
//!   with its call by name. The Anthropic request encoder maps characters outside `[A-Za-z0-9_-]` to `_`
//!   (the same way for a call and its result), as Anthropic validates ids.
//! - `Unsupported` means "this target cannot serve this request" (fail over); `Invalid` means the
//!   client's request is wrong whatever the target. A request with OpenAI built-in tools
//!   ([`ChatRequest::builtin_tools`]) is `Unsupported` for every target but an OpenAI Responses one.
//! - Responses `namespace` tools are flattened (see `responses`); answers given back to a Responses
//!   client need the request's name table: [`encode_response_for`], [`StreamEncoder::for_request`].

mod anthropic;
mod gemini;
mod openai_chat;
mod responses;
#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod responses_tests;
#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests;

pub use responses::NAMESPACE_SEPARATOR;
pub(crate) use responses::write_failure as responses_failure;

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserialize, Deserializer, SeqAccess, Visitor};
use serde::{Serialize, Serializer};
use serde_json::value::RawValue;

use crate::api::ApiFormat;
use crate::capability::{ModelRules, Sampling};
use crate::continuation::{ResumePoint, Splice};
use crate::model::{
    ChatRequest, ChatResponse, Message, NamespacedTool, Part, ResponseFormat, Role, StopReason,
    StreamEvent, ToolChoice, Usage,
};
use crate::sse::{MAX_EVENT_BYTES, SseEvent, SseParser};

/// What an encoder needs to know about the target beyond the request itself.
#[derive(Clone, Copy, Debug)]
pub struct EncodeOptions<'a> {
    /// The provider's model name (written into the body; Gemini carries it in the URL instead).
    pub upstream_model: &'a str,
    /// `max_tokens` for targets that require it (Anthropic) when the client did not send one.
    pub default_max_tokens: u32,
    /// What the target model accepts.
    pub rules: ModelRules,
}

/// The sampling parameters a target gets, after its model's rules.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub(crate) struct SamplingParams {
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
}

impl SamplingParams {
    /// The request's sampling parameters as `rules` allow them; what is dropped is named.
    fn for_target(
        req: &ChatRequest,
        rules: &ModelRules,
        model: &str,
        warnings: &mut Warnings,
    ) -> Self {
        let mut p = SamplingParams {
            temperature: req.temperature,
            top_p: req.top_p,
            top_k: req.top_k,
        };
        let model = header_safe(model);
        match rules.sampling {
            Sampling::Any => {}
            Sampling::TemperatureOrTopP => {
                if p.temperature.is_some() && p.top_p.is_some() {
                    p.top_p = None;
                    warnings.push(format!(
                        "dropped field top_p: {model} accepts temperature or top_p, not both (temperature kept)"
                    ));
                }
            }
            Sampling::DefaultOnly => {
                // The default (1) is what the model uses anyway: sending it is harmless, and
                // anything else is refused.
                #[allow(
                    clippy::float_cmp,
                    reason = "1.0 is the documented default, sent as such"
                )]
                let non_default = |v: Option<f64>| v.is_some_and(|x| x != 1.0);
                if non_default(p.temperature) {
                    warnings.push(format!(
                        "dropped field temperature: {model} accepts only the default"
                    ));
                }
                if non_default(p.top_p) {
                    warnings.push(format!(
                        "dropped field top_p: {model} accepts only the default"
                    ));
                }
                p.temperature = None;
                p.top_p = None;
            }
        }
        if !rules.top_k && p.top_k.take().is_some() {
            warnings.push(format!("dropped field top_k: not supported by {model}"));
        }
        p
    }
}

/// An encoded request body and the warnings to return in `x-ballast-warning`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Encoded {
    pub body: Vec<u8>,
    /// Header-safe (printable ASCII) messages, e.g. `dropped field top_k: not supported by openai-chat`.
    pub warnings: Vec<String>,
}

#[derive(thiserror::Error, Debug, Clone, PartialEq, Eq)]
pub enum TranslateError {
    /// The client's request is invalid (400): message names the field, e.g.
    /// `messages[2].content[0].type: unknown content type "foo"`.
    #[error("invalid request: {message}")]
    Invalid {
        message: String,
        param: Option<String>,
    },
    /// This target cannot serve this request (e.g. an image URL to a target that only takes base64, a
    /// feature with no equivalent that would change meaning): the route falls over to the next target.
    #[error("unsupported by this target: {message}")]
    Unsupported { message: String },
    /// The upstream sent something we cannot parse (502 territory).
    #[error("unparseable upstream data: {message}")]
    Upstream { message: String },
}

impl TranslateError {
    pub(crate) fn invalid(param: impl Into<String>, message: impl fmt::Display) -> Self {
        let param = param.into();
        TranslateError::Invalid {
            message: format!("{param}: {message}"),
            param: Some(param),
        }
    }

    pub(crate) fn unsupported(message: impl Into<String>) -> Self {
        TranslateError::Unsupported {
            message: message.into(),
        }
    }

    pub(crate) fn upstream(message: impl Into<String>) -> Self {
        TranslateError::Upstream {
            message: message.into(),
        }
    }

    /// A body that is not JSON, or JSON of the wrong shape.
    pub(crate) fn bad_body(e: serde_json::Error) -> Self {
        TranslateError::Invalid {
            message: format!("invalid request body: {}", json_error(&e)),
            param: None,
        }
    }

    pub(crate) fn bad_upstream(e: serde_json::Error) -> Self {
        TranslateError::Upstream {
            message: format!("invalid upstream JSON: {}", json_error(&e)),
        }
    }

    /// A stream went over one of its [`StreamLimits`].
    pub(crate) fn limit(what: impl fmt::Display) -> Self {
        TranslateError::Upstream {
            message: format!("{LIMIT_PREFIX}{what}"),
        }
    }

    /// Whether this is a stream going over one of its [`StreamLimits`]: unlike a malformed event,
    /// the stream cannot go on (the translator refuses every later event), so the caller should end
    /// it as failed.
    pub fn is_limit_exceeded(&self) -> bool {
        matches!(self, TranslateError::Upstream { message } if message.starts_with(LIMIT_PREFIX))
    }

    /// The message without the variant's prefix.
    fn message(&self) -> &str {
        match self {
            TranslateError::Invalid { message, .. }
            | TranslateError::Unsupported { message }
            | TranslateError::Upstream { message } => message,
        }
    }
}

/// How the message of a [`TranslateError::is_limit_exceeded`] error starts.
const LIMIT_PREFIX: &str = "stream limit exceeded: ";

/// A JSON error described by its class and position only: serde's own message can quote the
/// offending value, which may be prompt or answer text, and these messages reach logs.
fn json_error(e: &serde_json::Error) -> String {
    use serde_json::error::Category;
    let what = match e.classify() {
        Category::Syntax => "malformed JSON",
        Category::Eof => "unexpected end of JSON",
        Category::Data => "a field has the wrong type or an unexpected value",
        Category::Io => "unreadable",
    };
    format!("{what} at line {} column {}", e.line(), e.column())
}

/// Parses a client's request body in `format`. Gemini bodies carry neither the model nor `stream` (both
/// live in the URL): the caller fills [`ChatRequest::model`] and [`ChatRequest::stream`] afterwards.
pub fn decode_request(format: ApiFormat, body: &[u8]) -> Result<ChatRequest, TranslateError> {
    match format {
        ApiFormat::OpenAiChat => openai_chat::decode_request(body),
        ApiFormat::AnthropicMessages => anthropic::decode_request(body),
        ApiFormat::Gemini => gemini::decode_request(body),
        ApiFormat::OpenAiResponses => responses::decode_request(body),
    }
}

/// Builds the body to send to a provider speaking `format`. For Gemini the model and `stream` are not in
/// the body: the caller picks `:generateContent` or `:streamGenerateContent?alt=sse`.
pub fn encode_request(
    format: ApiFormat,
    req: &ChatRequest,
    opts: &EncodeOptions,
) -> Result<Encoded, TranslateError> {
    if format != ApiFormat::OpenAiResponses
        && let Some(tool) = req.builtin_tools.first()
    {
        let kind = tool
            .get("type")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown");
        return Err(TranslateError::unsupported(format!(
            "built-in tool {:?} can only be served by an OpenAI Responses target",
            header_safe(kind)
        )));
    }
    let mut warnings = Warnings::default();
    for field in &req.dropped {
        warnings.push(format!(
            "dropped field {}: not translated to {format}",
            header_safe(field)
        ));
    }
    if !opts.rules.images && has_images(req) {
        return Err(TranslateError::unsupported(format!(
            "{} does not accept images",
            header_safe(opts.upstream_model)
        )));
    }
    if !opts.rules.structured_output
        && matches!(req.response_format, Some(ResponseFormat::JsonSchema { .. }))
    {
        return Err(TranslateError::unsupported(format!(
            "{} does not take a JSON schema for its answer",
            header_safe(opts.upstream_model)
        )));
    }
    // What the model cannot take is taken out of a copy of the request (rare targets: the copy is
    // made only for them).
    let adapted;
    let req = match adapt_to_model(req, &opts.rules, opts.upstream_model, &mut warnings) {
        Some(r) => {
            adapted = r;
            &adapted
        }
        None => req,
    };
    let sampling = SamplingParams::for_target(req, &opts.rules, opts.upstream_model, &mut warnings);
    let body = match format {
        ApiFormat::OpenAiChat => openai_chat::encode_request(req, opts, &sampling, &mut warnings)?,
        ApiFormat::AnthropicMessages => {
            anthropic::encode_request(req, opts, &sampling, &mut warnings)?
        }
        ApiFormat::Gemini => gemini::encode_request(req, opts, &sampling, &mut warnings)?,
        ApiFormat::OpenAiResponses => {
            responses::encode_request(req, opts, &sampling, &mut warnings)?
        }
    };
    Ok(Encoded {
        body,
        warnings: warnings.list,
    })
}

/// The request as a model that refuses some of its shape can take it: no parallel-tool-calls
/// switch, no forced tool choice (the model chooses), the system prompt folded into the first user
/// turn. `None` when nothing needs changing.
fn adapt_to_model(
    req: &ChatRequest,
    rules: &ModelRules,
    model: &str,
    warnings: &mut Warnings,
) -> Option<ChatRequest> {
    let parallel = !rules.parallel_tool_calls && req.parallel_tool_calls.is_some();
    let forced = !rules.forced_tool_choice
        && matches!(
            req.tool_choice,
            Some(ToolChoice::Required | ToolChoice::Tool(_))
        );
    let system = !rules.system_prompt && !req.system.is_empty();
    if !(parallel || forced || system) {
        return None;
    }
    let model = header_safe(model);
    let mut r = req.clone();
    if parallel {
        warnings.push(format!(
            "dropped field parallel_tool_calls: not supported by {model}"
        ));
        r.parallel_tool_calls = None;
    }
    if forced {
        warnings.push(format!(
            "tool_choice: {model} cannot be forced to call a tool; sent as auto"
        ));
        r.tool_choice = Some(ToolChoice::Auto);
    }
    if system {
        warnings.push(format!(
            "system: {model} takes no system prompt; sent at the start of the first user turn"
        ));
        let text = std::mem::take(&mut r.system).join("\n\n");
        match r.messages.iter_mut().find(|m| m.role == Role::User) {
            Some(m) => m.content.insert(0, Part::Text(text)),
            None => r.messages.insert(
                0,
                Message {
                    role: Role::User,
                    content: vec![Part::Text(text)],
                },
            ),
        }
    }
    Some(r)
}

/// Whether any message of the request carries an image.
fn has_images(req: &ChatRequest) -> bool {
    req.messages
        .iter()
        .any(|m| m.content.iter().any(|p| matches!(p, Part::Image(_))))
}

/// Parses a provider's complete answer.
pub fn decode_response(format: ApiFormat, body: &[u8]) -> Result<ChatResponse, TranslateError> {
    match format {
        ApiFormat::OpenAiChat => openai_chat::decode_response(body),
        ApiFormat::AnthropicMessages => anthropic::decode_response(body),
        ApiFormat::Gemini => gemini::decode_response(body),
        ApiFormat::OpenAiResponses => responses::decode_response(body),
    }
}

/// Renders a complete answer in the client's format; `client_model` is what the body's `model` says.
/// Prefer [`encode_response_for`] when the client's request is at hand.
pub fn encode_response(format: ApiFormat, resp: &ChatResponse, client_model: &str) -> Vec<u8> {
    encode_response_with(format, resp, client_model, &[])
}

/// Like [`encode_response`], for the client request `req` it answers: a Responses client gets its
/// namespaced function names back ([`ChatRequest::namespaced_tools`]).
pub fn encode_response_for(
    format: ApiFormat,
    resp: &ChatResponse,
    client_model: &str,
    req: &ChatRequest,
) -> Vec<u8> {
    encode_response_with(format, resp, client_model, &req.namespaced_tools)
}

fn encode_response_with(
    format: ApiFormat,
    resp: &ChatResponse,
    client_model: &str,
    names: &[NamespacedTool],
) -> Vec<u8> {
    match format {
        ApiFormat::OpenAiChat => openai_chat::encode_response(resp, client_model),
        ApiFormat::AnthropicMessages => anthropic::encode_response(resp, client_model),
        ApiFormat::Gemini => gemini::encode_response(resp, client_model),
        ApiFormat::OpenAiResponses => responses::encode_response(resp, client_model, names),
    }
}

/// How a stream encoder renders the answer for the client.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamOptions {
    /// What each event's `model` says.
    pub model: String,
    /// OpenAI `stream_options.include_usage`: emit a final `choices: []` usage chunk (other formats always
    /// carry usage).
    pub include_usage: bool,
}

/// Default [`StreamLimits::max_tool_args_bytes`].
pub const MAX_TOOL_ARGS_BYTES: usize = 4 * 1024 * 1024;
/// Default [`StreamLimits::max_tool_calls`].
pub const MAX_TOOL_CALLS: usize = 1024;
/// Default [`StreamLimits::max_parts`].
pub const MAX_PARTS: usize = 4096;
/// Default [`StreamLimits::max_answer_bytes`].
pub const MAX_ANSWER_BYTES: usize = 16 * 1024 * 1024;
/// Longest response id a stream translator adopts from a provider (longer ones are cut): the id is
/// repeated in every event some formats send, so an absurd one would multiply the output.
pub(crate) const MAX_ID_BYTES: usize = 256;

/// What one translated stream may hold, so that no provider stream can make the gateway buffer or
/// track without bound. Going over a limit makes [`StreamTranslator::push`] return an error for which
/// [`TranslateError::is_limit_exceeded`] holds; the stream is then failed (see
/// [`StreamTranslator::limit_exceeded`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamLimits {
    /// Most bytes of one tool call's arguments (a Gemini client's call is buffered until complete;
    /// a Responses client's final `response.completed` repeats them).
    pub max_tool_args_bytes: usize,
    /// Most tool calls in one answer.
    pub max_tool_calls: usize,
    /// Most content parts (text blocks, tool calls, output items) in one answer.
    pub max_parts: usize,
    /// Most bytes of text and tool arguments in one answer (a Responses client's final
    /// `response.completed` repeats the whole answer, so its translator keeps it).
    pub max_answer_bytes: usize,
    /// Most bytes of one SSE event; for the caller's [`SseParser`] ([`StreamLimits::sse_parser`]).
    pub max_event_bytes: usize,
}

impl Default for StreamLimits {
    fn default() -> Self {
        Self {
            max_tool_args_bytes: MAX_TOOL_ARGS_BYTES,
            max_tool_calls: MAX_TOOL_CALLS,
            max_parts: MAX_PARTS,
            max_answer_bytes: MAX_ANSWER_BYTES,
            max_event_bytes: MAX_EVENT_BYTES,
        }
    }
}

impl StreamLimits {
    /// An SSE parser with this event size limit.
    pub fn sse_parser(&self) -> SseParser {
        SseParser::with_limit(self.max_event_bytes)
    }
}

/// Counts what a stream encoder is asked to hold and refuses events over the [`StreamLimits`]. It
/// mirrors the encoders: a text delta for another part than the last one opens a part (a block, an
/// output item), every tool call start opens one, and so does a fragment for a call never started.
#[derive(Debug, Default)]
struct Guard {
    limits: StreamLimits,
    /// Argument bytes of each tool call, by canonical index (at most `max_tool_calls` entries).
    args: HashMap<usize, usize>,
    tool_calls: usize,
    parts: usize,
    /// The part the last text or tool call start went to: (canonical index, is a tool call).
    current: Option<(usize, bool)>,
    answer_bytes: usize,
    failed: Option<TranslateError>,
}

impl Guard {
    fn check(&mut self, ev: &StreamEvent) -> Result<(), TranslateError> {
        if let Some(e) = &self.failed {
            return Err(e.clone());
        }
        self.account(ev)
            .inspect_err(|e| self.failed = Some(e.clone()))
    }

    fn account(&mut self, ev: &StreamEvent) -> Result<(), TranslateError> {
        match ev {
            StreamEvent::TextDelta { index, text } => {
                self.answer(text.len())?;
                if self.current != Some((*index, false)) {
                    self.part()?;
                    self.current = Some((*index, false));
                }
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.answer(id.len().saturating_add(name.len()))?;
                self.tool(*index)?;
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                if !self.args.contains_key(index) {
                    self.tool(*index)?;
                }
                self.answer(fragment.len())?;
                let args = self.args.entry(*index).or_insert(0);
                *args = args.saturating_add(fragment.len());
                if *args > self.limits.max_tool_args_bytes {
                    return Err(TranslateError::limit(format_args!(
                        "the arguments of one tool call are over {} bytes",
                        self.limits.max_tool_args_bytes
                    )));
                }
            }
            StreamEvent::Start { .. }
            | StreamEvent::Usage(_)
            | StreamEvent::Stop(_)
            | StreamEvent::Error { .. }
            | StreamEvent::Done => {}
        }
        Ok(())
    }

    fn tool(&mut self, index: usize) -> Result<(), TranslateError> {
        self.tool_calls = self.tool_calls.saturating_add(1);
        if self.tool_calls > self.limits.max_tool_calls {
            return Err(too_many_tool_calls(self.limits.max_tool_calls));
        }
        self.part()?;
        self.current = Some((index, true));
        self.args.entry(index).or_insert(0);
        Ok(())
    }

    fn part(&mut self) -> Result<(), TranslateError> {
        self.parts = self.parts.saturating_add(1);
        if self.parts > self.limits.max_parts {
            return Err(too_many_parts(self.limits.max_parts));
        }
        Ok(())
    }

    fn answer(&mut self, bytes: usize) -> Result<(), TranslateError> {
        self.answer_bytes = self.answer_bytes.saturating_add(bytes);
        if self.answer_bytes > self.limits.max_answer_bytes {
            return Err(TranslateError::limit(format_args!(
                "the answer is over {} bytes",
                self.limits.max_answer_bytes
            )));
        }
        Ok(())
    }
}

pub(crate) fn too_many_tool_calls(max: usize) -> TranslateError {
    TranslateError::limit(format_args!("more than {max} tool calls in one answer"))
}

pub(crate) fn too_many_parts(max: usize) -> TranslateError {
    TranslateError::limit(format_args!("more than {max} content parts in one answer"))
}

/// Provider SSE events → canonical [`StreamEvent`]s.
#[derive(Debug)]
pub struct StreamDecoder {
    inner: DecoderKind,
    limits: StreamLimits,
}

#[derive(Debug)]
enum DecoderKind {
    OpenAi(openai_chat::ChunkDecoder),
    Anthropic(anthropic::EventDecoder),
    Gemini(gemini::ChunkDecoder),
    Responses(responses::EventDecoder),
}

impl StreamDecoder {
    pub fn new(format: ApiFormat) -> Self {
        let inner = match format {
            ApiFormat::OpenAiChat => DecoderKind::OpenAi(openai_chat::ChunkDecoder::default()),
            ApiFormat::AnthropicMessages => {
                DecoderKind::Anthropic(anthropic::EventDecoder::default())
            }
            ApiFormat::Gemini => DecoderKind::Gemini(gemini::ChunkDecoder::default()),
            ApiFormat::OpenAiResponses => {
                DecoderKind::Responses(responses::EventDecoder::default())
            }
        };
        Self {
            inner,
            limits: StreamLimits::default(),
        }
    }

    /// Replaces the default [`StreamLimits`] (the decoders track at most `max_tool_calls` calls and
    /// `max_parts` output items).
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Decodes one provider event, appending what it means to `out`. A malformed event is an error that
    /// leaves the decoder usable: the caller logs it and carries on with the next event.
    pub fn push(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError> {
        match &mut self.inner {
            DecoderKind::OpenAi(d) => d.push(ev, out, &self.limits),
            DecoderKind::Anthropic(d) => d.push(ev, out),
            DecoderKind::Gemini(d) => d.push(ev, out),
            DecoderKind::Responses(d) => d.push(ev, out, &self.limits),
        }
    }
}

/// Canonical [`StreamEvent`]s → the client's SSE bytes, incrementally, within [`StreamLimits`].
#[derive(Debug)]
pub struct StreamEncoder {
    inner: EncoderKind,
    guard: Guard,
}

#[derive(Debug)]
enum EncoderKind {
    OpenAi(openai_chat::ChunkEncoder),
    Anthropic(anthropic::EventEncoder),
    Gemini(gemini::ChunkEncoder),
    Responses(responses::EventEncoder),
}

impl StreamEncoder {
    pub fn new(format: ApiFormat, opts: StreamOptions) -> Self {
        let created = now_unix();
        let inner = match format {
            ApiFormat::OpenAiChat => {
                EncoderKind::OpenAi(openai_chat::ChunkEncoder::new(opts, created))
            }
            ApiFormat::AnthropicMessages => {
                EncoderKind::Anthropic(anthropic::EventEncoder::new(opts))
            }
            ApiFormat::Gemini => EncoderKind::Gemini(gemini::ChunkEncoder::new(opts)),
            ApiFormat::OpenAiResponses => {
                EncoderKind::Responses(responses::EventEncoder::new(opts, created))
            }
        };
        Self {
            inner,
            guard: Guard::default(),
        }
    }

    /// Replaces the default [`StreamLimits`].
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.guard.limits = limits;
        self
    }

    /// An encoder of `format` that carries on a stream its client has up to `rp` (same ids,
    /// numbering after what it has, no second opening): see [`crate::continuation`].
    pub fn resume(format: ApiFormat, opts: StreamOptions, rp: &ResumePoint) -> Self {
        let mut e = Self::new(format, opts);
        match &mut e.inner {
            EncoderKind::OpenAi(x) => x.resume(rp),
            EncoderKind::Anthropic(x) => x.resume(rp),
            EncoderKind::Gemini(x) => x.resume(rp),
            EncoderKind::Responses(x) => x.resume(rp),
        }
        e
    }

    /// Fixes the `created` (`created_at`) timestamp OpenAI chunks and Responses objects carry
    /// (deterministic output for tests and replays).
    pub fn with_created(mut self, created: u64) -> Self {
        match &mut self.inner {
            EncoderKind::OpenAi(e) => e.set_created(created),
            EncoderKind::Responses(e) => e.set_created(created),
            EncoderKind::Anthropic(_) | EncoderKind::Gemini(_) => {}
        }
        self
    }

    /// Tells the encoder about the client request it answers: a Responses client gets its
    /// namespaced function names back ([`ChatRequest::namespaced_tools`]).
    pub fn for_request(mut self, req: &ChatRequest) -> Self {
        match &mut self.inner {
            EncoderKind::Responses(e) => e.set_names(req.namespaced_tools.clone()),
            // Messages promises input tokens in `message_start`; most upstreams report them only at
            // the end, so the start carries an estimate (the end carries the upstream's figure).
            EncoderKind::Anthropic(e) => e.set_input_estimate(req.estimate_input_tokens()),
            EncoderKind::OpenAi(_) | EncoderKind::Gemini(_) => {}
        }
        self
    }

    /// Appends the client's SSE bytes for one canonical event (possibly none, possibly several events).
    /// An event over the [`StreamLimits`] is dropped, as is every later one; see
    /// [`StreamEncoder::try_push`].
    pub fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        let _ = self.try_push(ev, out);
    }

    /// Like [`StreamEncoder::push`], but says when the event goes over the [`StreamLimits`]: then
    /// nothing is written, now or for any later event, and [`StreamEncoder::finish`] ends the stream
    /// with an error event instead of a complete answer.
    pub fn try_push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        self.guard.check(ev)?;
        match &mut self.inner {
            EncoderKind::OpenAi(e) => e.push(ev, out),
            EncoderKind::Anthropic(e) => e.push(ev, out),
            EncoderKind::Gemini(e) => e.push(ev, out),
            EncoderKind::Responses(e) => e.push(ev, out),
        }
        Ok(())
    }

    /// The limit this stream went over, if it did.
    pub fn limit_exceeded(&self) -> Option<&TranslateError> {
        self.guard.failed.as_ref()
    }

    /// The upstream ended. If it never sent its terminal event, closes open blocks and emits the
    /// client's terminal events with what is known (a missing stop reason is inferred: `tool_use` when
    /// a tool call was streamed, else `end_turn`). Idempotent. A stream that went over its
    /// [`StreamLimits`] ends with an error event instead.
    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(e) = &self.guard.failed {
            let message = e.message().to_owned();
            self.error("server_error", &message, out);
            return;
        }
        match &mut self.inner {
            EncoderKind::OpenAi(e) => e.finish(out),
            EncoderKind::Anthropic(e) => e.finish(out),
            EncoderKind::Gemini(e) => e.finish(out),
            EncoderKind::Responses(e) => e.finish(out),
        }
    }

    /// Emits a well-formed error event in the client's format and ends the stream (later pushes and
    /// `finish` emit nothing). `kind` is any provider's error type (`overloaded_error`, `server_error`,
    /// `UNAVAILABLE`, …) or a gateway word (`timeout`, `rate_limit`); it is mapped to the client's
    /// vocabulary.
    pub fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        match &mut self.inner {
            EncoderKind::OpenAi(e) => e.error(kind, message, out),
            EncoderKind::Anthropic(e) => e.error(kind, message, out),
            EncoderKind::Gemini(e) => e.error(kind, message, out),
            EncoderKind::Responses(e) => e.error(kind, message, out),
        }
    }
}

/// A decoder and an encoder back to back: provider SSE events in, client SSE bytes out.
#[derive(Debug)]
pub struct StreamTranslator {
    decoder: StreamDecoder,
    encoder: StreamEncoder,
    scratch: Vec<StreamEvent>,
    /// A continuation's events are joined to the client's stream through this.
    splice: Option<Box<Splice>>,
    spliced: Vec<StreamEvent>,
}

impl StreamTranslator {
    pub fn new(from: ApiFormat, to: ApiFormat, opts: StreamOptions) -> Self {
        Self::with_encoder(from, StreamEncoder::new(to, opts))
    }

    /// Like [`StreamTranslator::new`] with a prepared encoder (e.g. one with a fixed `created`). The
    /// decoder gets the encoder's limits.
    pub fn with_encoder(from: ApiFormat, encoder: StreamEncoder) -> Self {
        Self {
            decoder: StreamDecoder::new(from).with_limits(encoder.guard.limits),
            encoder,
            scratch: Vec::new(),
            splice: None,
            spliced: Vec::new(),
        }
    }

    /// A continuation from a target speaking `from`, joined through `splice` to a client stream
    /// that `encoder` (resumed) carries on.
    pub fn continuation(from: ApiFormat, encoder: StreamEncoder, splice: Splice) -> Self {
        let mut t = Self::with_encoder(from, encoder);
        t.splice = Some(Box::new(splice));
        t
    }

    /// Replaces the default [`StreamLimits`] of the decoder and the encoder. (The caller's
    /// [`SseParser`] takes `max_event_bytes`: [`StreamLimits::sse_parser`].)
    pub fn with_limits(mut self, limits: StreamLimits) -> Self {
        self.decoder.limits = limits;
        self.encoder.guard.limits = limits;
        self
    }

    /// Translates one provider event. On a malformed event nothing is written and the error is
    /// returned; the stream can go on. Going over the [`StreamLimits`] is an error too
    /// ([`TranslateError::is_limit_exceeded`]), after which the stream cannot go on: every later
    /// push returns it again and writes nothing, and [`StreamTranslator::finish`] writes an error
    /// event. The caller should end the stream as failed ([`StreamTranslator::error`]).
    pub fn push(&mut self, ev: &SseEvent, out: &mut Vec<u8>) -> Result<(), TranslateError> {
        if let Some(e) = self.encoder.limit_exceeded() {
            return Err(e.clone());
        }
        self.scratch.clear();
        let res = self.decoder.push(ev, &mut self.scratch);
        if let Some(splice) = &mut self.splice {
            self.spliced.clear();
            for e in self.scratch.drain(..) {
                splice.push(e, &mut self.spliced);
            }
            std::mem::swap(&mut self.scratch, &mut self.spliced);
        }
        for e in &self.scratch {
            self.encoder.try_push(e, out)?;
        }
        if let Err(e) = &res
            && e.is_limit_exceeded()
        {
            self.encoder.guard.failed = Some(e.clone());
        }
        res
    }

    /// The limit this stream went over, if it did.
    pub fn limit_exceeded(&self) -> Option<&TranslateError> {
        self.encoder.limit_exceeded()
    }

    pub fn finish(&mut self, out: &mut Vec<u8>) {
        if let Some(splice) = &mut self.splice {
            // Text still waiting for the overlap decision goes out before the end.
            self.spliced.clear();
            splice.settle(&mut self.spliced);
            for e in &self.spliced {
                let _ = self.encoder.try_push(e, out);
            }
        }
        self.encoder.finish(out);
    }

    pub fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        self.encoder.error(kind, message, out);
    }
}

// ---------------------------------------------------------------------------------------------------
// Shared helpers for the adapters.

/// Most warnings one request can produce; the rest are summarised so the header stays small.
const MAX_WARNINGS: usize = 16;

#[derive(Debug, Default)]
pub(crate) struct Warnings {
    list: Vec<String>,
    overflow: bool,
}

impl Warnings {
    pub(crate) fn dropped(&mut self, field: &str, target: ApiFormat) {
        self.push(format!(
            "dropped field {}: not supported by {target}",
            header_safe(field)
        ));
    }

    pub(crate) fn push(&mut self, warning: String) {
        if self.list.contains(&warning) {
            return;
        }
        if self.list.len() < MAX_WARNINGS {
            self.list.push(warning);
        } else if !self.overflow {
            self.overflow = true;
            if let Some(last) = self.list.last_mut() {
                *last = "more fields dropped (warnings truncated)".to_owned();
            }
        }
    }
}

/// Makes client-supplied text (a field name) safe for an HTTP header value: printable ASCII, bounded.
pub(crate) fn header_safe(s: &str) -> Cow<'_, str> {
    const MAX: usize = 64;
    if s.len() <= MAX && s.bytes().all(|b| (0x20..0x7f).contains(&b)) {
        return Cow::Borrowed(s);
    }
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if (' '..='~').contains(&c) { c } else { '?' })
        .collect();
    if s.chars().count() > MAX {
        out.push_str("...");
    }
    Cow::Owned(out)
}

/// Records the names of unknown top-level fields (from a `#[serde(flatten)]` catch-all).
pub(crate) fn note_unknown<'a, V>(
    dropped: &mut Vec<String>,
    prefix: &str,
    fields: impl IntoIterator<Item = (&'a String, V)>,
) {
    for (name, _) in fields {
        dropped.push(format!("{prefix}{name}"));
    }
}

/// `[A-Za-z0-9_-]` only, as Anthropic requires of tool ids (and as is safe everywhere).
pub(crate) fn safe_id(s: &str) -> Cow<'_, str> {
    let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
    if !s.is_empty() && s.chars().all(ok) {
        return Cow::Borrowed(s);
    }
    if s.is_empty() {
        return Cow::Borrowed("_");
    }
    Cow::Owned(s.chars().map(|c| if ok(c) { c } else { '_' }).collect())
}

pub(crate) fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// A fallback id when the provider gave none: unique enough per process and time.
pub(crate) fn fallback_id() -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    format!("ballast{nanos:x}")
}

/// `prefix` + `id`, unless `id` already has it; a fresh id when `id` is empty.
pub(crate) fn prefixed_id(prefix: &str, id: &str) -> String {
    if id.is_empty() {
        format!("{prefix}{}", fallback_id())
    } else if id.starts_with(prefix) {
        id.to_owned()
    } else {
        format!("{prefix}{id}")
    }
}

/// `id` cut to at most [`MAX_ID_BYTES`] (at a character boundary): for the response ids a stream
/// translator repeats in its events.
pub(crate) fn bounded_id(id: &str) -> &str {
    if id.len() <= MAX_ID_BYTES {
        return id;
    }
    let mut end = MAX_ID_BYTES;
    while !id.is_char_boundary(end) {
        end = end.saturating_sub(1);
    }
    id.get(..end).unwrap_or_default()
}

/// Splits `data:<media type>;base64,<data>`.
pub(crate) fn parse_data_url(url: &str) -> Option<(&str, &str)> {
    let rest = url.strip_prefix("data:")?;
    let (meta, data) = rest.split_once(',')?;
    let media = meta.strip_suffix(";base64")?;
    Some((if media.is_empty() { "image/png" } else { media }, data))
}

/// Serialises as `data:<media>;base64,<data>` without building the string first.
pub(crate) struct DataUrl<'a> {
    pub media_type: &'a str,
    pub data: &'a str,
}

impl fmt::Display for DataUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data:{};base64,{}", self.media_type, self.data)
    }
}

impl Serialize for DataUrl<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// The JSON arguments object of a tool call, borrowed from the canonical text (`{}` when empty). `None`
/// when the text is not a JSON object.
pub(crate) fn args_object(args: &str) -> Option<&RawValue> {
    let trimmed = args.trim();
    if trimmed.is_empty() {
        return serde_json::from_str::<&'static RawValue>("{}").ok();
    }
    let raw: &RawValue = serde_json::from_str(trimmed).ok()?;
    raw.get().starts_with('{').then_some(raw)
}

/// Canonical argument text from a raw JSON value (`{}` for null or absent).
pub(crate) fn args_text(raw: Option<&RawValue>) -> String {
    match raw.map(RawValue::get) {
        None | Some("null") => "{}".to_owned(),
        Some(s) if s.trim().is_empty() => "{}".to_owned(),
        Some(s) => s.to_owned(),
    }
}

/// Normalises streamed or legacy argument text: blank → `{}`.
pub(crate) fn norm_args(s: String) -> String {
    if s.trim().is_empty() {
        "{}".to_owned()
    } else {
        s
    }
}

/// Field-wise merge: figures present in `from` win.
pub(crate) fn merge_usage(into: &mut Usage, from: &Usage) {
    let pick = |a: &mut Option<u64>, b: Option<u64>| {
        if b.is_some() {
            *a = b;
        }
    };
    pick(&mut into.input_tokens, from.input_tokens);
    pick(&mut into.output_tokens, from.output_tokens);
    pick(&mut into.cache_read_tokens, from.cache_read_tokens);
    pick(&mut into.cache_write_tokens, from.cache_write_tokens);
    pick(&mut into.reasoning_tokens, from.reasoning_tokens);
}

/// The stop reason to report when the upstream gave none.
pub(crate) fn inferred_stop(reason: Option<&StopReason>, saw_tool_call: bool) -> StopReason {
    match reason {
        Some(r) => r.clone(),
        None if saw_tool_call => StopReason::ToolUse,
        None => StopReason::EndTurn,
    }
}

/// A coarse error class, to render any provider's (or the gateway's) error kind in a client's vocabulary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ErrorClass {
    InvalidRequest,
    Authentication,
    Permission,
    NotFound,
    TooLarge,
    RateLimit,
    Overloaded,
    Timeout,
    Server,
}

impl ErrorClass {
    pub(crate) fn parse(kind: &str) -> Self {
        let k = kind.to_ascii_lowercase();
        let has = |s: &str| k.contains(s);
        if has("overload") || has("unavailable") {
            ErrorClass::Overloaded
        } else if has("rate") || has("resource_exhausted") || has("quota") {
            ErrorClass::RateLimit
        } else if has("timeout") || has("deadline") {
            ErrorClass::Timeout
        } else if has("auth") {
            ErrorClass::Authentication
        } else if has("permission") || has("forbidden") {
            ErrorClass::Permission
        } else if has("not_found") || has("notfound") {
            ErrorClass::NotFound
        } else if has("too_large") {
            ErrorClass::TooLarge
        } else if has("invalid") || has("bad_request") {
            ErrorClass::InvalidRequest
        } else {
            ErrorClass::Server
        }
    }

    pub(crate) fn anthropic(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest => "invalid_request_error",
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::TooLarge => "request_too_large",
            ErrorClass::RateLimit => "rate_limit_error",
            ErrorClass::Overloaded => "overloaded_error",
            ErrorClass::Timeout => "timeout_error",
            ErrorClass::Server => "api_error",
        }
    }

    pub(crate) fn openai(self) -> &'static str {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::TooLarge => "invalid_request_error",
            ErrorClass::Authentication => "authentication_error",
            ErrorClass::Permission => "permission_error",
            ErrorClass::NotFound => "not_found_error",
            ErrorClass::RateLimit => "rate_limit_error",
            ErrorClass::Overloaded | ErrorClass::Timeout | ErrorClass::Server => "server_error",
        }
    }

    /// Gemini's (google.rpc) status and HTTP code.
    pub(crate) fn gemini(self) -> (&'static str, u16) {
        match self {
            ErrorClass::InvalidRequest | ErrorClass::TooLarge => ("INVALID_ARGUMENT", 400),
            ErrorClass::Authentication => ("UNAUTHENTICATED", 401),
            ErrorClass::Permission => ("PERMISSION_DENIED", 403),
            ErrorClass::NotFound => ("NOT_FOUND", 404),
            ErrorClass::RateLimit => ("RESOURCE_EXHAUSTED", 429),
            ErrorClass::Overloaded => ("UNAVAILABLE", 503),
            ErrorClass::Timeout => ("DEADLINE_EXCEEDED", 504),
            ErrorClass::Server => ("INTERNAL", 500),
        }
    }
}

/// Appends one SSE event: optional `event:` line, one `data:` line of JSON, blank line. Our payload
/// types cannot fail to serialise; if one ever did, the partial bytes are rolled back.
///
/// A payload may embed a provider's raw JSON (a Gemini client's `functionCall.args`), which may be
/// pretty-printed: its line breaks would end the `data:` line mid-JSON. Outside strings they are
/// whitespace (inside, JSON requires them escaped), so they become spaces.
pub(crate) fn write_sse<T: Serialize>(out: &mut Vec<u8>, event: Option<&str>, payload: &T) {
    let start = out.len();
    if let Some(name) = event {
        out.extend_from_slice(b"event: ");
        out.extend_from_slice(name.as_bytes());
        out.push(b'\n');
    }
    out.extend_from_slice(b"data: ");
    let json_start = out.len();
    if serde_json::to_writer(&mut *out, payload).is_err() {
        out.truncate(start);
        return;
    }
    // Found with a vectorised search: a payload without raw JSON has none.
    if let Some(json) = out.get_mut(json_start..) {
        let breaks: Vec<usize> = memchr::memchr2_iter(b'\n', b'\r', json).collect();
        for k in breaks {
            if let Some(b) = json.get_mut(k) {
                *b = b' ';
            }
        }
    }
    out.extend_from_slice(b"\n\n");
}

/// Serialises a body; our body types cannot fail, and an empty body is the (unreachable) fallback.
pub(crate) fn to_body<T: Serialize>(payload: &T) -> Vec<u8> {
    serde_json::to_vec(payload).unwrap_or_default()
}

/// Canonical messages regrouped for targets that need strictly alternating roles (Anthropic, Gemini):
/// consecutive same-role messages merged, empty text parts and empty messages dropped. Each turn keeps
/// the index of its first source message (for error messages).
pub(crate) struct Turn<'a> {
    pub role: Role,
    pub first_index: usize,
    pub parts: Vec<&'a Part>,
}

pub(crate) fn alternating_turns(messages: &[Message]) -> Vec<Turn<'_>> {
    let mut turns: Vec<Turn<'_>> = Vec::with_capacity(messages.len());
    for (i, m) in messages.iter().enumerate() {
        let parts = m
            .content
            .iter()
            .filter(|p| !matches!(p, Part::Text(t) if t.is_empty()));
        match turns.last_mut() {
            Some(last) if last.role == m.role => last.parts.extend(parts),
            _ => turns.push(Turn {
                role: m.role,
                first_index: i,
                parts: parts.collect(),
            }),
        }
    }
    turns.retain(|t| !t.parts.is_empty());
    turns
}

/// A JSON value that is either a string or an array of `T` (OpenAI content, Anthropic `system`, …),
/// deserialised without buffering.
#[derive(Debug)]
pub(crate) enum StrOrVec<T> {
    Str(String),
    Vec(Vec<T>),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for StrOrVec<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<'de, T: Deserialize<'de>> Visitor<'de> for V<T> {
            type Value = StrOrVec<T>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an array")
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(StrOrVec::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(StrOrVec::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Self::Value, A::Error> {
                Vec::<T>::deserialize(de::value::SeqAccessDeserializer::new(seq)).map(StrOrVec::Vec)
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A stop-sequence list given as one string or several.
pub(crate) fn str_or_vec_strings(v: Option<StrOrVec<String>>) -> Vec<String> {
    match v {
        None => Vec::new(),
        Some(StrOrVec::Str(s)) => vec![s],
        Some(StrOrVec::Vec(v)) => v,
    }
}

/// Text parts joined (borrowed when there is only one).
pub(crate) fn joined_text<'a>(
    parts: impl Iterator<Item = &'a Part>,
    sep: &str,
) -> Option<std::borrow::Cow<'a, str>> {
    let mut acc: Option<std::borrow::Cow<'a, str>> = None;
    for p in parts {
        if let Part::Text(t) = p {
            match &mut acc {
                None => acc = Some(std::borrow::Cow::Borrowed(t.as_str())),
                Some(prev) => {
                    let s = prev.to_mut();
                    s.push_str(sep);
                    s.push_str(t);
                }
            }
        }
    }
    acc
}
