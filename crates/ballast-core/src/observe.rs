//! Watching an answer go by without touching it: per-format observers that read usage, stop reason,
//! the first token and the terminal event from a stream's SSE events (or a whole JSON body), for logs and
//! the signal work. They keep nothing of the content: when asked ([`StreamObserver::with_scripts`]),
//! the answer's text is read in passing to count the characters in a script the prompt does not use,
//! and only the counts are kept.

use std::borrow::Cow;

use serde::Deserialize;

use crate::api::ApiFormat;
use crate::model::Usage;
use crate::quality::{JsonCheck, Repetition};
use crate::script::{ScriptCount, ScriptSet};
use crate::sse::{SseEvent, SseParser};

/// What was seen of one answer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Observation {
    /// Generated content (text or tool call) was seen.
    pub first_token_seen: bool,
    pub usage: Usage,
    /// The provider's stop/finish reason, verbatim.
    pub stop_reason: Option<String>,
    /// The provider's terminal event arrived (`message_stop`, `[DONE]`, a Gemini finish reason).
    pub done: bool,
    /// The provider reported an error inside the stream.
    pub error: Option<String>,
    pub events: u64,
    /// Events that were not valid JSON of the expected shape.
    pub malformed_events: u64,
    /// The last `sequence_number` seen (OpenAI Responses streams): an error event the gateway adds
    /// to a passed-through stream must continue after it.
    pub last_sequence_number: Option<u64>,
    /// Characters of the answer's text, and those in a script the prompt does not use (counted only
    /// when the prompt's scripts were given).
    pub text: ScriptCount,
    /// The prompt's scripts; empty: text is not read at all.
    pub allowed: ScriptSet,
    /// Whether the answer loops, and whether it is JSON (when the request asked for JSON).
    pub quality: Quality,
    /// The answer calls a tool (it says nothing of emptiness or of its text's shape).
    pub tool_call: bool,
}

/// The output-quality scanners of one answer, fed the same text as the script count (read in
/// passing; only counts and hashes are kept).
#[derive(Clone, Debug, Default)]
pub struct Quality {
    pub repetition: Repetition,
    /// `Some` when the request asked for a JSON answer.
    pub json: Option<JsonCheck>,
}

impl PartialEq for Quality {
    fn eq(&self, other: &Self) -> bool {
        self.repetition.ngrams() == other.repetition.ngrams()
            && self.repetition.repeated() == other.repetition.repeated()
            && self.json.as_ref().map(JsonCheck::finish)
                == other.json.as_ref().map(JsonCheck::finish)
    }
}

impl Eq for Quality {}

impl Observation {
    fn count_text(&mut self, text: &str) {
        if !self.allowed.is_empty() {
            self.text.count(text, self.allowed);
            self.quality.repetition.feed(text);
            if let Some(j) = &mut self.quality.json {
                j.feed(text);
            }
        }
    }
}

/// Feeds stream chunks through an SSE parser and the format's event reader.
#[derive(Debug)]
pub struct StreamObserver {
    format: ApiFormat,
    parser: SseParser,
    obs: Observation,
}

impl StreamObserver {
    pub fn new(format: ApiFormat) -> Self {
        Self {
            format,
            parser: SseParser::new(),
            obs: Observation::default(),
        }
    }

    /// Replaces the default SSE event size limit ([`crate::sse::MAX_EVENT_BYTES`]); e.g.
    /// `StreamLimits::max_event_bytes`.
    pub fn with_max_event_bytes(mut self, max_event_bytes: usize) -> Self {
        self.parser = SseParser::with_limit(max_event_bytes);
        self
    }

    /// Counts the answer's characters in scripts outside `allowed` (the prompt's scripts), and
    /// watches it for loops.
    pub fn with_scripts(mut self, allowed: ScriptSet) -> Self {
        self.obs.allowed = allowed;
        self
    }

    /// Checks that the answer's text is JSON (the request asked for JSON); needs `with_scripts`.
    pub fn with_json_check(mut self, on: bool) -> Self {
        self.obs.quality.json = on.then(JsonCheck::default);
        self
    }

    /// Observes one chunk of stream bytes. Returns true if this chunk carried the first token.
    pub fn feed(&mut self, chunk: &[u8]) -> bool {
        let before = self.obs.first_token_seen;
        let format = self.format;
        let obs = &mut self.obs;
        self.parser
            .feed_ref(chunk, |ev| observe_event(format, ev, obs));
        !before && self.obs.first_token_seen
    }

    /// Ends the stream; returns whether the bytes stopped in the middle of an event.
    pub fn finish(&mut self) -> bool {
        self.parser.finish()
    }

    /// Bytes held for the event in progress.
    pub fn buffered(&self) -> usize {
        self.parser.buffered()
    }

    pub fn observation(&self) -> &Observation {
        &self.obs
    }
}

fn observe_event(format: ApiFormat, ev: &SseEvent, obs: &mut Observation) {
    obs.events = obs.events.saturating_add(1);
    let ok = match format {
        ApiFormat::AnthropicMessages => anthropic_event(ev, obs),
        ApiFormat::OpenAiChat => openai_event(ev, obs),
        ApiFormat::Gemini => gemini_chunk(ev.data.as_bytes(), obs),
        ApiFormat::OpenAiResponses => responses_event(ev, obs),
    };
    if !ok {
        obs.malformed_events = obs.malformed_events.saturating_add(1);
    }
}

#[derive(Deserialize)]
struct AnthropicUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
}

fn merge_anthropic_usage(u: &AnthropicUsage, obs: &mut Observation) {
    let t = &mut obs.usage;
    t.input_tokens = u.input_tokens.or(t.input_tokens);
    t.output_tokens = u.output_tokens.or(t.output_tokens);
    t.cache_read_tokens = u.cache_read_input_tokens.or(t.cache_read_tokens);
    t.cache_write_tokens = u.cache_creation_input_tokens.or(t.cache_write_tokens);
}

#[derive(Deserialize)]
struct ErrorBody {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
}

fn anthropic_event(ev: &SseEvent, obs: &mut Observation) -> bool {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: String,
        message: Option<Message>,
        #[serde(borrow)]
        delta: Option<Delta<'a>>,
        usage: Option<AnthropicUsage>,
        error: Option<ErrorBody>,
        #[serde(borrow)]
        content_block: Option<Block<'a>>,
    }
    #[derive(Deserialize)]
    struct Message {
        usage: Option<AnthropicUsage>,
    }
    #[derive(Deserialize)]
    struct Delta<'a> {
        stop_reason: Option<String>,
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(borrow)]
        partial_json: Option<Cow<'a, str>>,
        #[serde(borrow)]
        thinking: Option<Cow<'a, str>>,
    }
    #[derive(Deserialize)]
    struct Block<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let Ok(e) = serde_json::from_str::<Event>(&ev.data) else {
        return false;
    };
    match e.kind.as_str() {
        "message_start" => {
            if let Some(u) = e.message.as_ref().and_then(|m| m.usage.as_ref()) {
                merge_anthropic_usage(u, obs);
            }
        }
        // The first token is the first content: a tool call's start (it names the tool), or a
        // delta with text, arguments or thinking in it — not an empty text block's start, which
        // a provider may send and then fall silent.
        "content_block_start" => {
            if let Some(b) = e.content_block
                && b.kind != "text"
                && b.kind != "thinking"
            {
                obs.first_token_seen = true;
                if b.kind.ends_with("tool_use") {
                    obs.tool_call = true;
                }
            }
        }
        "content_block_delta" => {
            if let Some(d) = e.delta.as_ref() {
                let some = |v: &Option<Cow<'_, str>>| v.as_deref().is_some_and(|s| !s.is_empty());
                if some(&d.text) || some(&d.partial_json) || some(&d.thinking) {
                    obs.first_token_seen = true;
                }
                if let Some(t) = d.text.as_deref() {
                    obs.count_text(t);
                }
            }
        }
        "message_delta" => {
            if let Some(r) = e.delta.and_then(|d| d.stop_reason) {
                obs.stop_reason = Some(r);
            }
            if let Some(u) = &e.usage {
                merge_anthropic_usage(u, obs);
            }
        }
        "message_stop" => obs.done = true,
        "error" => {
            let err = e.error.as_ref();
            obs.error = Some(
                err.and_then(|x| x.message.clone().or_else(|| x.kind.clone()))
                    .unwrap_or_else(|| "error event".to_owned()),
            );
        }
        _ => {}
    }
    true
}

#[derive(Deserialize)]
struct OpenAiUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<OpenAiPromptDetails>,
    completion_tokens_details: Option<OpenAiCompletionDetails>,
}

#[derive(Deserialize)]
struct OpenAiPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize)]
struct OpenAiCompletionDetails {
    reasoning_tokens: Option<u64>,
}

fn merge_openai_usage(u: &OpenAiUsage, obs: &mut Observation) {
    let t = &mut obs.usage;
    t.input_tokens = u.prompt_tokens.or(t.input_tokens);
    t.output_tokens = u.completion_tokens.or(t.output_tokens);
    t.cache_read_tokens = u
        .prompt_tokens_details
        .as_ref()
        .and_then(|d| d.cached_tokens)
        .or(t.cache_read_tokens);
    t.reasoning_tokens = u
        .completion_tokens_details
        .as_ref()
        .and_then(|d| d.reasoning_tokens)
        .or(t.reasoning_tokens);
}

#[derive(Deserialize)]
struct OpenAiChoice<'a> {
    #[serde(borrow)]
    delta: Option<OpenAiContent<'a>>,
    #[serde(borrow)]
    message: Option<OpenAiContent<'a>>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct OpenAiContent<'a> {
    #[serde(borrow)]
    content: Option<TextOr<'a>>,
    #[serde(borrow)]
    refusal: Option<TextOr<'a>>,
    #[serde(borrow)]
    tool_calls: Option<TextOr<'a>>,
}

/// A content field: its text when it is a string (borrowed unless it has escapes), else whether it
/// carries anything (a non-empty array, any object or number). OpenAI's first chunk carries
/// `"content": ""` with the role: that is not a token, and must not commit a stream before its
/// first real one.
enum TextOr<'a> {
    Text(Cow<'a, str>),
    Other(bool),
}

impl TextOr<'_> {
    fn present(&self) -> bool {
        match self {
            TextOr::Text(t) => !t.is_empty(),
            TextOr::Other(p) => *p,
        }
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for TextOr<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = TextOr<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Borrowed(s)))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(s.to_owned())))
            }
            fn visit_string<E: serde::de::Error>(self, s: String) -> Result<Self::Value, E> {
                Ok(TextOr::Text(Cow::Owned(s)))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(TextOr::Other(false))
            }
            fn visit_bool<E: serde::de::Error>(self, _: bool) -> Result<Self::Value, E> {
                Ok(TextOr::Other(true))
            }
            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(TextOr::Other(true))
            }
            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(TextOr::Other(true))
            }
            fn visit_f64<E: serde::de::Error>(self, _: f64) -> Result<Self::Value, E> {
                Ok(TextOr::Other(true))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut any = false;
                while seq.next_element::<serde::de::IgnoredAny>()?.is_some() {
                    any = true;
                }
                Ok(TextOr::Other(any))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> Result<Self::Value, A::Error> {
                while map
                    .next_entry::<serde::de::IgnoredAny, serde::de::IgnoredAny>()?
                    .is_some()
                {}
                Ok(TextOr::Other(true))
            }
        }
        d.deserialize_any(V)
    }
}

/// A stream chunk's choices. There is nearly always one, held in place: a `Vec` would be one heap
/// allocation per event of every stream.
#[derive(Default)]
struct Choices<'a> {
    first: Option<OpenAiChoice<'a>>,
    rest: Vec<OpenAiChoice<'a>>,
}

impl<'a> Choices<'a> {
    fn as_slices(&self) -> [&[OpenAiChoice<'a>]; 2] {
        [self.first.as_slice(), &self.rest]
    }
}

impl<'de: 'a, 'a> Deserialize<'de> for Choices<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Choices<'de>;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a sequence")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Self::Value, A::Error> {
                let mut choices = Choices::default();
                while let Some(c) = seq.next_element::<OpenAiChoice<'de>>()? {
                    if choices.first.is_none() {
                        choices.first = Some(c);
                    } else {
                        choices.rest.push(c);
                    }
                }
                Ok(choices)
            }
        }
        d.deserialize_seq(V)
    }
}

fn openai_event(ev: &SseEvent, obs: &mut Observation) -> bool {
    #[derive(Deserialize)]
    struct Chunk<'a> {
        #[serde(default, borrow)]
        choices: Choices<'a>,
        usage: Option<OpenAiUsage>,
        error: Option<ErrorBody>,
    }
    if ev.data.trim() == "[DONE]" {
        obs.done = true;
        return true;
    }
    let Ok(c) = serde_json::from_str::<Chunk>(&ev.data) else {
        return false;
    };
    for choices in c.choices.as_slices() {
        openai_choices(choices, obs);
    }
    if let Some(u) = &c.usage {
        merge_openai_usage(u, obs);
    }
    if let Some(e) = c.error {
        obs.error = Some(
            e.message
                .or(e.kind)
                .unwrap_or_else(|| "error chunk".to_owned()),
        );
    }
    true
}

fn openai_choices(choices: &[OpenAiChoice<'_>], obs: &mut Observation) {
    for ch in choices {
        let present = |p: &Option<TextOr<'_>>| p.as_ref().is_some_and(TextOr::present);
        if let Some(d) = ch.delta.as_ref().or(ch.message.as_ref()) {
            if present(&d.content) || present(&d.refusal) || present(&d.tool_calls) {
                obs.first_token_seen = true;
            }
            if present(&d.tool_calls) {
                obs.tool_call = true;
            }
            if let Some(TextOr::Text(t)) = &d.content {
                obs.count_text(t);
            }
        }
        if let Some(r) = &ch.finish_reason {
            obs.stop_reason = Some(r.clone());
        }
    }
}

fn gemini_chunk(data: &[u8], obs: &mut Observation) -> bool {
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Chunk<'a> {
        #[serde(default, borrow)]
        candidates: Vec<Candidate<'a>>,
        usage_metadata: Option<Meta>,
        error: Option<ErrorBody>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Candidate<'a> {
        #[serde(borrow)]
        content: Option<Content<'a>>,
        finish_reason: Option<String>,
    }
    #[derive(Deserialize)]
    struct Content<'a> {
        #[serde(default, borrow)]
        parts: Vec<GeminiPart<'a>>,
    }
    #[derive(Deserialize)]
    struct GeminiPart<'a> {
        #[serde(borrow)]
        text: Option<Cow<'a, str>>,
        #[serde(default)]
        thought: bool,
        #[serde(rename = "functionCall")]
        function_call: Option<serde::de::IgnoredAny>,
    }
    #[derive(Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct Meta {
        prompt_token_count: Option<u64>,
        candidates_token_count: Option<u64>,
        cached_content_token_count: Option<u64>,
        thoughts_token_count: Option<u64>,
    }
    let Ok(c) = serde_json::from_slice::<Chunk>(data) else {
        return false;
    };
    for cand in &c.candidates {
        if let Some(content) = &cand.content {
            // A part with text counts once its text is not empty; a part of another kind (a
            // function call, code, data) is content at once.
            if content
                .parts
                .iter()
                .any(|p| p.text.as_deref().is_none_or(|t| !t.is_empty()))
            {
                obs.first_token_seen = true;
            }
            for part in content.parts.iter().filter(|p| !p.thought) {
                if let Some(t) = &part.text {
                    obs.count_text(t);
                }
                if part.function_call.is_some() {
                    obs.tool_call = true;
                }
            }
        }
        if let Some(r) = &cand.finish_reason {
            obs.stop_reason = Some(r.clone());
            obs.done = true;
        }
    }
    if let Some(m) = c.usage_metadata {
        let t = &mut obs.usage;
        t.input_tokens = m.prompt_token_count.or(t.input_tokens);
        t.output_tokens = m.candidates_token_count.or(t.output_tokens);
        t.cache_read_tokens = m.cached_content_token_count.or(t.cache_read_tokens);
        t.reasoning_tokens = m.thoughts_token_count.or(t.reasoning_tokens);
    }
    if let Some(e) = c.error {
        obs.error = Some(e.message.unwrap_or_else(|| "error chunk".to_owned()));
    }
    true
}

#[derive(Deserialize)]
struct ResponsesUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<ResponsesInputDetails>,
    output_tokens_details: Option<OpenAiCompletionDetails>,
}

#[derive(Deserialize)]
struct ResponsesInputDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

/// A Responses `response` object, its text and items skipped.
#[derive(Deserialize)]
struct ResponsesObject<O = serde::de::IgnoredAny> {
    status: Option<String>,
    #[serde(default = "Vec::new")]
    output: Vec<O>,
    incomplete_details: Option<ResponsesIncomplete>,
    error: Option<ErrorBody>,
    usage: Option<ResponsesUsage>,
}

/// An output item of a whole Responses answer: a message's text is read, a call noted.
#[derive(Deserialize)]
struct ResponsesItem<'a> {
    #[serde(rename = "type", borrow)]
    kind: Cow<'a, str>,
    #[serde(default, borrow)]
    content: Vec<ResponsesPart<'a>>,
}

#[derive(Deserialize)]
struct ResponsesPart<'a> {
    #[serde(borrow)]
    text: Option<Cow<'a, str>>,
}

#[derive(Deserialize)]
struct ResponsesIncomplete {
    reason: Option<String>,
}

/// Usage, and the stop reason: `incomplete_details.reason` when there is one, else the status.
fn merge_responses_object<O>(r: &ResponsesObject<O>, obs: &mut Observation) {
    if let Some(u) = &r.usage {
        let t = &mut obs.usage;
        t.input_tokens = u.input_tokens.or(t.input_tokens);
        t.output_tokens = u.output_tokens.or(t.output_tokens);
        let input = u.input_tokens_details.as_ref();
        t.cache_read_tokens = input.and_then(|d| d.cached_tokens).or(t.cache_read_tokens);
        t.cache_write_tokens = input
            .and_then(|d| d.cache_write_tokens)
            .filter(|&n| n > 0)
            .or(t.cache_write_tokens);
        t.reasoning_tokens = u
            .output_tokens_details
            .as_ref()
            .and_then(|d| d.reasoning_tokens)
            .or(t.reasoning_tokens);
    }
    let reason = r.incomplete_details.as_ref().and_then(|d| d.reason.clone());
    if let Some(r) = reason.or_else(|| r.status.clone()) {
        obs.stop_reason = Some(r);
    }
}

fn responses_event(ev: &SseEvent, obs: &mut Observation) -> bool {
    #[derive(Deserialize)]
    struct Event<'a> {
        #[serde(rename = "type")]
        kind: String,
        sequence_number: Option<u64>,
        response: Option<ResponsesObject>,
        message: Option<String>,
        code: Option<String>,
        error: Option<ErrorBody>,
        #[serde(borrow)]
        delta: Option<TextOr<'a>>,
        #[serde(borrow)]
        item: Option<ItemHead<'a>>,
    }
    #[derive(Deserialize)]
    struct ItemHead<'a> {
        #[serde(rename = "type", borrow)]
        kind: Cow<'a, str>,
    }
    let Ok(e) = serde_json::from_str::<Event>(&ev.data) else {
        return false;
    };
    if let Some(n) = e.sequence_number {
        obs.last_sequence_number = Some(obs.last_sequence_number.map_or(n, |m| m.max(n)));
    }
    match e.kind.as_str() {
        "response.output_text.delta" => {
            if let Some(TextOr::Text(t)) = &e.delta {
                obs.first_token_seen |= !t.is_empty();
                obs.count_text(t);
            }
        }
        // An added message item has no content yet; an added call names its tool.
        "response.output_item.added" if e.item.is_some_and(|i| i.kind.ends_with("call")) => {
            obs.first_token_seen = true;
            obs.tool_call = true;
        }
        "response.refusal.delta" => obs.first_token_seen = true,
        // A reasoning model's progress: its reasoning text, or a finished item (a reasoning item
        // without a summary says nothing until it is done).
        "response.reasoning_summary_text.delta" | "response.reasoning_text.delta" => {
            if let Some(TextOr::Text(t)) = &e.delta {
                obs.first_token_seen |= !t.is_empty();
            }
        }
        "response.output_item.done" => obs.first_token_seen = true,
        "response.function_call_arguments.delta" => {
            obs.first_token_seen = true;
            obs.tool_call = true;
        }
        "response.completed" | "response.incomplete" => {
            if let Some(r) = &e.response {
                merge_responses_object(r, obs);
            }
            obs.done = true;
        }
        "response.failed" => {
            let r = e.response.as_ref();
            if let Some(r) = r {
                merge_responses_object(r, obs);
            }
            obs.error = Some(
                r.and_then(|r| r.error.as_ref())
                    .and_then(|x| x.message.clone())
                    .unwrap_or_else(|| "response.failed".to_owned()),
            );
            obs.done = true;
        }
        "error" => {
            obs.error = Some(
                e.message
                    .or_else(|| e.error.and_then(|x| x.message.or(x.kind)))
                    .or(e.code)
                    .unwrap_or_else(|| "error event".to_owned()),
            );
        }
        _ => {}
    }
    true
}

/// Observes a complete (non-streaming) JSON answer.
pub fn observe_body(format: ApiFormat, body: &[u8]) -> Observation {
    observe_body_with(format, body, ScriptSet::EMPTY)
}

/// Like [`observe_body`], counting the answer's characters in scripts outside `allowed`.
pub fn observe_body_with(format: ApiFormat, body: &[u8], allowed: ScriptSet) -> Observation {
    observe_body_checked(format, body, allowed, false)
}

/// Like [`observe_body_with`], also checking that the answer's text is JSON when `json` (the
/// request asked for JSON).
pub fn observe_body_checked(
    format: ApiFormat,
    body: &[u8],
    allowed: ScriptSet,
    json: bool,
) -> Observation {
    let mut obs = Observation {
        allowed,
        ..Observation::default()
    };
    obs.quality.json = json.then(JsonCheck::default);
    let ok = match format {
        ApiFormat::AnthropicMessages => {
            #[derive(Deserialize)]
            struct Msg<'a> {
                #[serde(default, borrow)]
                content: Vec<Block<'a>>,
                stop_reason: Option<String>,
                usage: Option<AnthropicUsage>,
            }
            #[derive(Deserialize)]
            struct Block<'a> {
                #[serde(borrow)]
                text: Option<Cow<'a, str>>,
            }
            serde_json::from_slice::<Msg>(body)
                .map(|m| {
                    obs.first_token_seen = !m.content.is_empty();
                    for t in m.content.iter().filter_map(|b| b.text.as_deref()) {
                        obs.count_text(t);
                    }
                    obs.stop_reason = m.stop_reason;
                    if let Some(u) = &m.usage {
                        merge_anthropic_usage(u, &mut obs);
                    }
                })
                .is_ok()
        }
        ApiFormat::OpenAiChat => {
            #[derive(Deserialize)]
            struct Completion<'a> {
                #[serde(default, borrow)]
                choices: Vec<OpenAiChoice<'a>>,
                usage: Option<OpenAiUsage>,
            }
            serde_json::from_slice::<Completion>(body)
                .map(|c| {
                    openai_choices(&c.choices, &mut obs);
                    if let Some(u) = &c.usage {
                        merge_openai_usage(u, &mut obs);
                    }
                })
                .is_ok()
        }
        ApiFormat::Gemini => gemini_chunk(body, &mut obs),
        ApiFormat::OpenAiResponses => {
            serde_json::from_slice::<ResponsesObject<ResponsesItem>>(body)
                .map(|r| {
                    obs.first_token_seen = !r.output.is_empty();
                    for item in &r.output {
                        if item.kind == "message" {
                            for t in item.content.iter().filter_map(|p| p.text.as_deref()) {
                                obs.count_text(t);
                            }
                        } else if item.kind.ends_with("call") {
                            obs.tool_call = true;
                        }
                    }
                    merge_responses_object(&r, &mut obs);
                    if r.status.as_deref() == Some("failed") {
                        obs.error = Some(
                            r.error
                                .and_then(|e| e.message)
                                .unwrap_or_else(|| "response failed".to_owned()),
                        );
                    }
                })
                .is_ok()
        }
    };
    obs.done = ok;
    if !ok {
        obs.malformed_events = 1;
    }
    obs
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use super::*;

    fn observe(format: ApiFormat, transcript: &str) -> (Observation, bool) {
        let mut o = StreamObserver::new(format);
        let mut first_at = None;
        for (i, chunk) in transcript.as_bytes().chunks(7).enumerate() {
            if o.feed(chunk) {
                assert!(first_at.is_none(), "first token reported twice");
                first_at = Some(i);
            }
        }
        let cut = o.finish();
        (o.observation().clone(), cut)
    }

    #[test]
    fn anthropic_stream() {
        let t = "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1,\"cache_read_input_tokens\":3}}}\n\n\
                 event: ping\ndata: {\"type\":\"ping\"}\n\n\
                 event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n\
                 event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Hi\"}}\n\n\
                 event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":7}}\n\n\
                 event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n";
        let (o, cut) = observe(ApiFormat::AnthropicMessages, t);
        assert!(!cut && o.done && o.first_token_seen);
        assert_eq!(o.stop_reason.as_deref(), Some("end_turn"));
        assert_eq!(o.usage.input_tokens, Some(12));
        assert_eq!(o.usage.output_tokens, Some(7));
        assert_eq!(o.usage.cache_read_tokens, Some(3));
        assert_eq!(o.malformed_events, 0);
    }

    #[test]
    fn openai_stream_with_usage_and_a_bad_event() {
        let t = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n\
                 data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
                 data: {not json\n\n\
                 data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n\
                 data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":9,\"completion_tokens\":4,\"total_tokens\":13}}\n\n\
                 data: [DONE]\n\n";
        let (o, cut) = observe(ApiFormat::OpenAiChat, t);
        assert!(!cut && o.done && o.first_token_seen);
        assert_eq!(o.stop_reason.as_deref(), Some("stop"));
        assert_eq!(
            (o.usage.input_tokens, o.usage.output_tokens),
            (Some(9), Some(4))
        );
        assert_eq!(o.malformed_events, 1);
    }

    /// OpenAI's first chunk names the role with `"content": ""`: not a token. A stream whose real
    /// first token never follows must not be committed to the client (it could still fall over).
    #[test]
    fn an_empty_role_chunk_is_not_the_first_token() {
        let mut o = StreamObserver::new(ApiFormat::OpenAiChat);
        let role = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\",\"refusal\":null},\"finish_reason\":null}]}\n\n";
        assert!(!o.feed(role.as_bytes()));
        assert!(!o.observation().first_token_seen);
        let tool = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":0,\"function\":{\"name\":\"f\"}}]},\"finish_reason\":null}]}\n\n";
        assert!(o.feed(tool.as_bytes()));
        let mut o = StreamObserver::new(ApiFormat::OpenAiChat);
        let refusal = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"refusal\":\"No.\"},\"finish_reason\":null}]}\n\n";
        assert!(o.feed(refusal.as_bytes()));
    }

    #[test]
    fn cut_stream_is_not_done() {
        let t =
            "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi\"}}]}\n\ndata: {\"choi";
        let (o, cut) = observe(ApiFormat::OpenAiChat, t);
        assert!(cut && !o.done && o.first_token_seen);
    }

    #[test]
    fn gemini_stream_and_error_events() {
        let t = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi\"}],\"role\":\"model\"}}]}\r\n\r\n\
                 data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"!\"}],\"role\":\"model\"},\"finishReason\":\"STOP\"}],\"usageMetadata\":{\"promptTokenCount\":5,\"candidatesTokenCount\":2}}\r\n\r\n";
        let (o, _) = observe(ApiFormat::Gemini, t);
        assert!(o.done && o.first_token_seen);
        assert_eq!(o.stop_reason.as_deref(), Some("STOP"));
        assert_eq!(o.usage.output_tokens, Some(2));

        let (o, _) = observe(
            ApiFormat::AnthropicMessages,
            "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"Overloaded\"}}\n\n",
        );
        assert_eq!(o.error.as_deref(), Some("Overloaded"));
        assert!(!o.done);
    }

    #[test]
    fn whole_bodies() {
        let o = observe_body(
            ApiFormat::OpenAiChat,
            br#"{"choices":[{"index":0,"message":{"role":"assistant","content":"x"},"finish_reason":"length"}],"usage":{"prompt_tokens":3,"completion_tokens":2,"prompt_tokens_details":{"cached_tokens":1}}}"#,
        );
        assert_eq!(o.stop_reason.as_deref(), Some("length"));
        assert_eq!(o.usage.cache_read_tokens, Some(1));
        let o = observe_body(
            ApiFormat::AnthropicMessages,
            br#"{"content":[{"type":"text","text":"x"}],"stop_reason":"max_tokens","usage":{"input_tokens":3,"output_tokens":2}}"#,
        );
        assert!(o.done && o.first_token_seen);
        assert_eq!(o.usage.output_tokens, Some(2));
        assert!(!observe_body(ApiFormat::Gemini, b"nope").done);
        let o = observe_body(
            ApiFormat::OpenAiResponses,
            br#"{"id":"resp_1","object":"response","status":"incomplete","incomplete_details":{"reason":"max_output_tokens"},
               "output":[{"type":"message","id":"msg_1","role":"assistant","status":"incomplete","content":[{"type":"output_text","text":"x","annotations":[]}]}],
               "usage":{"input_tokens":9,"input_tokens_details":{"cached_tokens":4,"cache_write_tokens":0},"output_tokens":16,"output_tokens_details":{"reasoning_tokens":2},"total_tokens":25}}"#,
        );
        assert!(o.done && o.first_token_seen && o.error.is_none());
        assert_eq!(o.stop_reason.as_deref(), Some("max_output_tokens"));
        assert_eq!(
            (
                o.usage.input_tokens,
                o.usage.output_tokens,
                o.usage.cache_read_tokens,
                o.usage.cache_write_tokens,
                o.usage.reasoning_tokens
            ),
            (Some(9), Some(16), Some(4), None, Some(2))
        );
    }

    #[test]
    fn responses_stream() {
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let mut t = String::new();
        t += &ev(
            "response.created",
            r#"{"type":"response.created","sequence_number":0,"response":{"id":"resp_1","object":"response","status":"in_progress","output":[],"usage":null}}"#,
        );
        t += &ev(
            "response.in_progress",
            r#"{"type":"response.in_progress","sequence_number":1,"response":{"id":"resp_1","status":"in_progress","output":[]}}"#,
        );
        let (o, _) = observe(ApiFormat::OpenAiResponses, &t);
        assert!(!o.first_token_seen && !o.done);
        t += &ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","sequence_number":2,"output_index":0,"item":{"type":"message","id":"msg_1","status":"in_progress","role":"assistant","content":[]}}"#,
        );
        t += &ev(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":3,"item_id":"msg_1","output_index":0,"content_index":0,"delta":"Hi","logprobs":[]}"#,
        );
        let mut cut = t.clone();
        t += &ev(
            "response.completed",
            r#"{"type":"response.completed","sequence_number":4,"response":{"id":"resp_1","status":"completed","output":[{"type":"message"}],"usage":{"input_tokens":5,"input_tokens_details":{"cached_tokens":1},"output_tokens":2,"output_tokens_details":{"reasoning_tokens":0},"total_tokens":7}}}"#,
        );
        let (o, cut_off) = observe(ApiFormat::OpenAiResponses, &t);
        assert!(!cut_off && o.done && o.first_token_seen && o.error.is_none());
        assert_eq!(o.stop_reason.as_deref(), Some("completed"));
        assert_eq!(
            (o.usage.input_tokens, o.usage.output_tokens),
            (Some(5), Some(2))
        );
        assert_eq!(o.last_sequence_number, Some(4));
        assert_eq!(o.malformed_events, 0);

        cut += &ev(
            "error",
            r#"{"type":"error","code":"server_error","message":"boom","param":null,"sequence_number":4}"#,
        );
        let (o, _) = observe(ApiFormat::OpenAiResponses, &cut);
        assert_eq!(o.error.as_deref(), Some("boom"));
        assert!(!o.done);
        cut += &ev(
            "response.failed",
            r#"{"type":"response.failed","sequence_number":5,"response":{"id":"resp_1","status":"failed","output":[],"error":{"code":"server_error","message":"boom"}}}"#,
        );
        let (o, _) = observe(ApiFormat::OpenAiResponses, &cut);
        assert!(o.done);
        assert_eq!(o.error.as_deref(), Some("boom"));
        assert_eq!(o.stop_reason.as_deref(), Some("failed"));
        assert_eq!(o.last_sequence_number, Some(5));
    }

    #[test]
    fn whole_answers_are_read_for_text_and_tool_calls() {
        let latin = ScriptSet::of_request(b"{}");
        let o = observe_body_with(
            ApiFormat::OpenAiResponses,
            br#"{"status":"completed","output":[{"type":"reasoning","summary":[]},{"type":"message","content":[{"type":"output_text","text":"Hello there"}]}]}"#,
            latin,
        );
        assert_eq!(
            o.text.chars, 11,
            "a whole Responses answer's text is counted"
        );
        assert!(!o.tool_call);
        let o = observe_body_with(
            ApiFormat::OpenAiResponses,
            br#"{"status":"completed","output":[{"type":"function_call","name":"f","arguments":"{}","call_id":"c"}]}"#,
            latin,
        );
        assert!(o.tool_call && o.text.chars == 0);
        let o = observe_body_with(
            ApiFormat::Gemini,
            br#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}],"role":"model"},"finishReason":"STOP"}]}"#,
            latin,
        );
        assert!(
            o.tool_call,
            "a Gemini function call ends with STOP yet is not an empty answer"
        );
    }

    #[test]
    fn a_streamed_responses_tool_call_is_noted() {
        let t = "event: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"type\":\"function_call\",\"name\":\"f\",\"arguments\":\"\",\"call_id\":\"c\"}}\n\n";
        let (o, _) = observe(ApiFormat::OpenAiResponses, t);
        assert!(o.tool_call && o.first_token_seen);
    }

    #[test]
    fn json_answers_are_checked_and_loops_counted_as_they_stream() {
        let chunk = |text: &str| {
            format!(
                "data: {}\n\n",
                serde_json::json!({"id": "c", "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
            )
        };
        let run = |pieces: &[&str], json: bool| {
            let mut o = StreamObserver::new(ApiFormat::OpenAiChat)
                .with_scripts(ScriptSet::of_request(b"{}"))
                .with_json_check(json);
            for p in pieces {
                o.feed(chunk(p).as_bytes());
            }
            o.feed(b"data: [DONE]\n\n");
            o.observation().clone()
        };
        let good = run(&["{\"answer\": ", "\"forty", " two\"}"], true);
        assert_eq!(
            good.quality.json.as_ref().map(JsonCheck::finish),
            Some(true)
        );
        let cut = run(&["{\"answer\": ", "\"forty"], true);
        assert_eq!(
            cut.quality.json.as_ref().map(JsonCheck::finish),
            Some(false)
        );
        assert!(
            run(&["hello"], false).quality.json.is_none(),
            "not asked, not checked"
        );

        let looping: Vec<String> = (0..40).map(|_| "the same few words ".to_owned()).collect();
        let looping: Vec<&str> = looping.iter().map(String::as_str).collect();
        let o = run(&looping, false);
        assert!(
            o.quality.repetition.repetitive(),
            "{:?}",
            o.quality.repetition
        );
        let prose = run(
            &[
                "Rivers carve valleys slowly, while glaciers grind whole mountainsides into ",
                "till; the sea, meanwhile, sorts sand by size along every beach it reaches, ",
                "and wind lifts the finest dust across continents to fertilise distant plains.",
            ],
            false,
        );
        assert!(!prose.quality.repetition.repetitive());
    }

    /// The first token is the first content: openings, empty blocks and added items are not.
    #[test]
    fn openings_and_empty_content_are_not_the_first_token() {
        let ev = |name: &str, data: &str| format!("event: {name}\ndata: {data}\n\n");
        let opening = ev(
            "message_start",
            r#"{"type":"message_start","message":{"id":"m","usage":{"input_tokens":3,"output_tokens":1}}}"#,
        ) + &ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        ) + &ev("ping", r#"{"type":"ping"}"#)
            + &ev(
                "content_block_delta",
                r#"{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":""}}"#,
            );
        let (o, _) = observe(ApiFormat::AnthropicMessages, &opening);
        assert!(!o.first_token_seen);
        let tool = ev(
            "content_block_start",
            r#"{"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}"#,
        );
        let (o, _) = observe(ApiFormat::AnthropicMessages, &tool);
        assert!(
            o.first_token_seen && o.tool_call,
            "a tool call's start names the tool"
        );
        let thinking = ev(
            "content_block_delta",
            r#"{"type":"content_block_delta","index":0,"delta":{"type":"thinking_delta","thinking":"Let me see"}}"#,
        );
        let (o, _) = observe(ApiFormat::AnthropicMessages, &thinking);
        assert!(o.first_token_seen, "thinking is the model at work");

        let empty_part = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"\"}],\"role\":\"model\"}}]}\n\n";
        let (o, _) = observe(ApiFormat::Gemini, empty_part);
        assert!(!o.first_token_seen);

        let added = ev(
            "response.output_item.added",
            r#"{"type":"response.output_item.added","sequence_number":1,"output_index":0,"item":{"type":"message","id":"m","role":"assistant","content":[]}}"#,
        ) + &ev(
            "response.output_text.delta",
            r#"{"type":"response.output_text.delta","sequence_number":2,"delta":""}"#,
        );
        let (o, _) = observe(ApiFormat::OpenAiResponses, &added);
        assert!(!o.first_token_seen);
        let reasoned = ev(
            "response.output_item.done",
            r#"{"type":"response.output_item.done","sequence_number":3,"output_index":0,"item":{"type":"reasoning","id":"r","summary":[]}}"#,
        );
        let (o, _) = observe(ApiFormat::OpenAiResponses, &reasoned);
        assert!(o.first_token_seen, "a finished reasoning item is progress");
    }
}
