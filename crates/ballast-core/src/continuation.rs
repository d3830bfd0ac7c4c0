//! Continuing an answer whose stream broke after part of it reached the client.
//!
//! While a stream runs, [`Delivery`] sits between the answer (passed through or translated) and the
//! client: it keeps a copy of the events the client was sent, holds a tool call's events back until
//! the call is complete (so a cut inside a call never leaves the client with half of one), and stops
//! at the provider's error event instead of passing it on. When the stream breaks, [`ResumePoint`]
//! reads what the client has from those events, [`continuation_request`] asks another target for the
//! rest (the delivered text as an assistant prefill, or followed by an instruction to continue), and
//! [`Splice`] joins that target's answer to the client's stream: its opening is dropped, its parts
//! are renumbered after the client's, and any text it repeats is not sent twice. An encoder of the
//! client's format resumed at the [`ResumePoint`] (`StreamEncoder::resume`) writes the rest under
//! the same ids, so the client's SDK sees one stream with one normal end.
//!
//! The copy is kept in memory for the life of the stream only, bounded in bytes, and never logged.

use bytes::Bytes;
use serde_json::Value;
use serde_json::value::RawValue;

use crate::api::ApiFormat;
use crate::model::{ChatRequest, Message, Part, Role, StreamEvent, Usage};
use crate::sse::{SseEvent, SseParser};
use crate::translate::MAX_TOOL_CALLS;

/// What a target that cannot take an assistant prefill is asked after the delivered text.
pub const CONTINUE_INSTRUCTION: &str = "Your previous reply was cut off mid-way. Continue it from \
exactly where it stopped: do not repeat anything already written and add no preamble.";

/// The request that asks a target for the rest of an answer: the original conversation, then the text
/// already delivered as the assistant's turn; where the target does not continue an assistant turn
/// (`prefill` false), a user turn asking it to continue follows. Providers refuse a prefill ending in
/// whitespace, so that is trimmed off and returned: the continuation's text usually starts with it.
pub fn continuation_request(
    req: &ChatRequest,
    delivered: &str,
    prefill: bool,
) -> (ChatRequest, String) {
    let mut r = req.clone();
    r.stream = true;
    let kept = delivered.trim_end();
    let trimmed = delivered.get(kept.len()..).unwrap_or_default().to_owned();
    if kept.is_empty() {
        // Nothing but whitespace (or nothing) was said: ask again from the start.
        return (r, String::new());
    }
    r.messages.push(Message {
        role: Role::Assistant,
        content: vec![Part::Text(kept.to_owned())],
    });
    if !prefill {
        r.messages.push(Message {
            role: Role::User,
            content: vec![Part::Text(CONTINUE_INSTRUCTION.to_owned())],
        });
    }
    (r, trimmed)
}

// ---------------------------------------------------------------------------------------------------
// Delivery: what the client was sent.

/// Where the events between the answer and the client went.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivered {
    /// The provider's error event was reached (it and what followed were not sent).
    pub error: bool,
}

/// Sits between a stream's client-format events and the client (see the module docs).
#[derive(Debug)]
pub struct Delivery {
    format: ApiFormat,
    hold_tools: bool,
    /// A tool call's events, held until the call is complete.
    held: Vec<u8>,
    holding: bool,
    /// Every event the client was sent, while it fits in `max_bytes`.
    sent: Vec<u8>,
    max_bytes: usize,
    /// `sent` outgrew `max_bytes`: the stream can no longer be continued.
    overflow: bool,
}

impl Delivery {
    /// `hold_tools`: the request declares tools, so the answer may call one.
    pub fn new(format: ApiFormat, hold_tools: bool, max_bytes: usize) -> Self {
        Self {
            format,
            hold_tools: hold_tools && format != ApiFormat::Gemini,
            held: Vec::new(),
            holding: false,
            sent: Vec::new(),
            max_bytes,
            overflow: false,
        }
    }

    /// Takes a run of whole SSE events bound for the client; returns what may go now. A run with
    /// nothing to look at (no tool call held, no word that could open one or be an error) goes
    /// through as it is, copied once; only the rest is read event by event.
    pub fn push_bytes(&mut self, events: Bytes) -> (Bytes, Delivered) {
        if !self.holding && !self.worth_a_look(&events) {
            self.send_copy(&events);
            return (events, Delivered::default());
        }
        let mut out = Vec::with_capacity(events.len());
        let d = self.push(&events, &mut out);
        (Bytes::from(out), d)
    }

    /// Whether `events` may hold an error event or a tool call's opening.
    fn worth_a_look(&self, events: &[u8]) -> bool {
        let found = |needle: &[u8]| memchr::memmem::find(events, needle).is_some();
        if found(b"error") {
            return true;
        }
        if self.format == ApiFormat::OpenAiResponses && found(b"response.failed") {
            return true;
        }
        self.hold_tools
            && match self.format {
                ApiFormat::AnthropicMessages => found(b"tool_use"),
                ApiFormat::OpenAiChat => found(b"tool_calls"),
                ApiFormat::OpenAiResponses => found(b"_call"),
                ApiFormat::Gemini => false,
            }
    }

    /// Takes a run of whole SSE events bound for the client and appends to `out` what may go now.
    pub fn push(&mut self, events: &[u8], out: &mut Vec<u8>) -> Delivered {
        let mut rest = events;
        while !rest.is_empty() {
            let end = next_event_end(rest).unwrap_or(rest.len());
            let (ev, tail) = rest.split_at(end);
            rest = tail;
            let (name, data) = event_fields(ev);
            let class = classify(self.format, name, data);
            if class == Class::Error {
                return Delivered { error: true };
            }
            if self.hold_tools {
                match (self.holding, class) {
                    (false, Class::ToolOpen) => {
                        self.holding = true;
                        self.held.extend_from_slice(ev);
                        continue;
                    }
                    (true, Class::ToolClose) => {
                        self.held.extend_from_slice(ev);
                        self.holding = false;
                        let held = std::mem::take(&mut self.held);
                        self.send(&held, out);
                        continue;
                    }
                    (true, Class::ToolPart | Class::ToolOpen | Class::Other) => {
                        // Everything until the call is complete waits with it (its order kept).
                        self.held.extend_from_slice(ev);
                        continue;
                    }
                    _ => {}
                }
            }
            self.send(ev, out);
        }
        Delivered::default()
    }

    /// The upstream ended cleanly: whatever is held goes out.
    pub fn flush(&mut self, out: &mut Vec<u8>) {
        self.holding = false;
        let held = std::mem::take(&mut self.held);
        self.send(&held, out);
    }

    fn send(&mut self, ev: &[u8], out: &mut Vec<u8>) {
        out.extend_from_slice(ev);
        self.send_copy(ev);
    }

    /// Keeps the copy of what the client is sent.
    fn send_copy(&mut self, ev: &[u8]) {
        if self.overflow {
            return;
        }
        if self.sent.len().saturating_add(ev.len()) > self.max_bytes {
            self.overflow = true;
            self.sent = Vec::new();
        } else {
            self.sent.extend_from_slice(ev);
        }
    }

    /// Bytes held in memory (the copy and a held tool call).
    pub fn buffered(&self) -> usize {
        self.sent.len().saturating_add(self.held.len())
    }

    /// A tool call is being held back.
    pub fn holding(&self) -> bool {
        self.holding
    }

    /// The stream broke: drops a held, incomplete tool call (the client never saw it) and reads
    /// where the client's stream stands. `None` when the copy outgrew its bound.
    pub fn resume_point(&mut self) -> Option<ResumePoint> {
        self.held = Vec::new();
        self.holding = false;
        if self.overflow {
            return None;
        }
        Some(ResumePoint::read(self.format, &self.sent))
    }

    /// The client format's events from here on come from a continuation: the copy goes on.
    pub fn format(&self) -> ApiFormat {
        self.format
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Class {
    Other,
    Error,
    /// A tool call opens.
    ToolOpen,
    /// A piece of an open tool call.
    ToolPart,
    /// The last event of a tool call.
    ToolClose,
}

/// The end of the first SSE event in `b` (just after its blank line).
fn next_event_end(b: &[u8]) -> Option<usize> {
    let mut i = 0usize;
    while let Some(k) = b.get(i..).and_then(|s| memchr::memchr2(b'\n', b'\r', s)) {
        let at = i.saturating_add(k);
        let rest = b.get(at..).unwrap_or_default();
        let end = if rest.starts_with(b"\n\n") || rest.starts_with(b"\r\r") {
            Some(2)
        } else if rest.starts_with(b"\r\n\r\n") {
            Some(4)
        } else if rest.starts_with(b"\n\r\n") || rest.starts_with(b"\r\n\n") {
            Some(3)
        } else {
            None
        };
        if let Some(n) = end {
            return Some(at.saturating_add(n));
        }
        i = at.saturating_add(1);
    }
    None
}

/// An event's name and (first) data line.
fn event_fields(ev: &[u8]) -> (&str, &str) {
    let text = std::str::from_utf8(ev).unwrap_or_default();
    let mut name = "";
    let mut data = "";
    for line in text.lines() {
        if let Some(v) = line.strip_prefix("event:") {
            name = v.trim();
        } else if let Some(v) = line.strip_prefix("data:")
            && data.is_empty()
        {
            data = v.trim_start();
        }
    }
    (name, data)
}

/// The `"type"` an event names: its `event:` field, else its data's top-level `type`.
fn event_type<'a>(name: &'a str, data: &'a str) -> &'a str {
    if !name.is_empty() {
        return name;
    }
    let Some(at) = data.find("\"type\":\"") else {
        return "";
    };
    let rest = data.get(at.saturating_add(8)..).unwrap_or_default();
    rest.split('"').next().unwrap_or_default()
}

fn classify(format: ApiFormat, name: &str, data: &str) -> Class {
    match format {
        ApiFormat::AnthropicMessages => match event_type(name, data) {
            "error" => Class::Error,
            "content_block_start" if data.contains("tool_use\"") => Class::ToolOpen,
            "content_block_stop" => Class::ToolClose,
            "content_block_delta" | "ping" => Class::ToolPart,
            _ => Class::Other,
        },
        ApiFormat::OpenAiResponses => match event_type(name, data) {
            "error" | "response.failed" => Class::Error,
            "response.output_item.added" if data.contains("_call\"") => Class::ToolOpen,
            "response.output_item.done" => Class::ToolClose,
            t if t.starts_with("response.function_call_arguments")
                || t.starts_with("response.custom_tool_call_input") =>
            {
                Class::ToolPart
            }
            _ => Class::Other,
        },
        ApiFormat::OpenAiChat => {
            if data.contains("\"error\"") && top_level_error(data) {
                Class::Error
            } else if data.contains("\"finish_reason\":\"") || data.trim() == "[DONE]" {
                Class::ToolClose
            } else if data.contains("\"tool_calls\":[") {
                Class::ToolOpen
            } else {
                Class::Other
            }
        }
        ApiFormat::Gemini => {
            if data.contains("\"error\"") && top_level_error(data) {
                Class::Error
            } else {
                Class::Other
            }
        }
    }
}

fn top_level_error(data: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct E {
        error: Option<serde::de::IgnoredAny>,
    }
    serde_json::from_str::<E>(data).is_ok_and(|e| e.error.is_some())
}

// ---------------------------------------------------------------------------------------------------
// Where the client's stream stands.

/// An output item a Responses client was sent, for the final response object that repeats them.
#[derive(Clone, Debug)]
pub enum ResumeItem {
    /// A message item: its id, its text, and whether it is still open.
    Message {
        id: String,
        text: String,
        open: bool,
    },
    /// Any other item (or a finished message), exactly as the client last saw it.
    Verbatim(Box<RawValue>),
}

/// Where a client's stream stands, read from the events it was sent: enough for an encoder of its
/// format to carry on under the same ids, and the text said so far.
#[derive(Clone, Debug, Default)]
pub struct ResumePoint {
    pub format: Option<ApiFormat>,
    /// The answer's id as the client saw it (message, response or chunk id).
    pub id: Option<String>,
    pub model: Option<String>,
    /// OpenAI's `created` / `created_at`.
    pub created: Option<u64>,
    /// The answer's text so far (every text part, in order).
    pub text: String,
    /// Anthropic: content blocks opened, the index of the block still open, and whether it is text.
    pub blocks: usize,
    pub open_block: Option<(usize, bool)>,
    /// OpenAI Chat: tool calls sent (at most [`MAX_TOOL_CALLS`] counted).
    pub tool_calls: usize,
    chat_call_indices: Vec<u64>,
    /// Responses: the output items sent, and the last sequence number.
    pub items: Vec<ResumeItem>,
    pub last_sequence_number: Option<u64>,
    /// Usage the client was told of so far.
    pub usage: Usage,
}

impl ResumePoint {
    /// Reads the client-format events in `sent`.
    pub fn read(format: ApiFormat, sent: &[u8]) -> Self {
        let mut rp = ResumePoint {
            format: Some(format),
            ..ResumePoint::default()
        };
        let mut parser = SseParser::new();
        parser.feed(sent, |ev| rp.event(format, &ev));
        rp
    }

    fn event(&mut self, format: ApiFormat, ev: &SseEvent) {
        let Ok(v) = serde_json::from_str::<Value>(&ev.data) else {
            return;
        };
        let s = |v: &Value, k: &str| v.get(k).and_then(Value::as_str).map(str::to_owned);
        match format {
            ApiFormat::AnthropicMessages => match v.get("type").and_then(Value::as_str) {
                Some("message_start") => {
                    let m = v.get("message").unwrap_or(&Value::Null);
                    self.id = s(m, "id");
                    self.model = s(m, "model");
                    let u = m.get("usage").unwrap_or(&Value::Null);
                    self.usage.input_tokens = u.get("input_tokens").and_then(Value::as_u64);
                    self.usage.output_tokens = u.get("output_tokens").and_then(Value::as_u64);
                }
                Some("content_block_start") => {
                    self.blocks = self.blocks.saturating_add(1);
                    let b = v.get("content_block").unwrap_or(&Value::Null);
                    let text = b.get("type").and_then(Value::as_str) == Some("text");
                    let index = v.get("index").and_then(Value::as_u64).unwrap_or(0);
                    self.open_block = usize::try_from(index).ok().map(|i| (i, text));
                    if text && let Some(t) = b.get("text").and_then(Value::as_str) {
                        self.text.push_str(t);
                    }
                }
                Some("content_block_delta") => {
                    let d = v.get("delta").unwrap_or(&Value::Null);
                    if d.get("type").and_then(Value::as_str) == Some("text_delta")
                        && let Some(t) = d.get("text").and_then(Value::as_str)
                    {
                        self.text.push_str(t);
                    }
                }
                Some("content_block_stop") => self.open_block = None,
                _ => {}
            },
            ApiFormat::OpenAiChat => {
                if self.id.is_none() {
                    self.id = s(&v, "id");
                    self.model = s(&v, "model");
                    self.created = v.get("created").and_then(Value::as_u64);
                }
                for ch in v
                    .get("choices")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let d = ch.get("delta").unwrap_or(&Value::Null);
                    if let Some(t) = d.get("content").and_then(Value::as_str) {
                        self.text.push_str(t);
                    }
                    for call in d
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                    {
                        // Counted by the distinct indices seen, never sized by one: a provider's
                        // index is any number it likes.
                        let index = call.get("index").and_then(Value::as_u64).unwrap_or(0);
                        if !self.chat_call_indices.contains(&index)
                            && self.chat_call_indices.len() < MAX_TOOL_CALLS
                        {
                            self.chat_call_indices.push(index);
                            self.tool_calls = self.chat_call_indices.len();
                        }
                    }
                }
            }
            ApiFormat::Gemini => {
                if self.id.is_none() {
                    self.id = s(&v, "responseId");
                    self.model = s(&v, "modelVersion");
                }
                for c in v
                    .get("candidates")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let parts = c.pointer("/content/parts").and_then(Value::as_array);
                    for p in parts.into_iter().flatten() {
                        if p.get("thought").and_then(Value::as_bool) != Some(true)
                            && let Some(t) = p.get("text").and_then(Value::as_str)
                        {
                            self.text.push_str(t);
                        }
                    }
                }
            }
            ApiFormat::OpenAiResponses => {
                if let Some(n) = v.get("sequence_number").and_then(Value::as_u64) {
                    self.last_sequence_number =
                        Some(self.last_sequence_number.map_or(n, |m| m.max(n)));
                }
                let index = v
                    .get("output_index")
                    .and_then(Value::as_u64)
                    .and_then(|i| usize::try_from(i).ok());
                match v.get("type").and_then(Value::as_str) {
                    Some("response.created") => {
                        let r = v.get("response").unwrap_or(&Value::Null);
                        self.id = s(r, "id");
                        self.model = s(r, "model");
                        self.created = r.get("created_at").and_then(Value::as_u64);
                    }
                    Some("response.output_item.added") => {
                        let item = v.get("item").unwrap_or(&Value::Null);
                        let entry = if item.get("type").and_then(Value::as_str) == Some("message") {
                            Some(ResumeItem::Message {
                                id: s(item, "id").unwrap_or_default(),
                                text: String::new(),
                                open: true,
                            })
                        } else {
                            verbatim(item)
                        };
                        if let Some(entry) = entry {
                            self.set_item(index, entry);
                        }
                    }
                    Some("response.output_text.delta") => {
                        if let Some(t) = v.get("delta").and_then(Value::as_str) {
                            self.text.push_str(t);
                            if let Some(ResumeItem::Message { text, .. }) =
                                index.and_then(|i| self.items.get_mut(i))
                            {
                                text.push_str(t);
                            }
                        }
                    }
                    Some("response.output_item.done") => {
                        let item = v.get("item").unwrap_or(&Value::Null);
                        if let Some(entry) = verbatim(item) {
                            self.set_item(index, entry);
                        }
                    }
                    _ => {}
                }
            }
        }
    }

    fn set_item(&mut self, index: Option<usize>, item: ResumeItem) {
        let i = index.unwrap_or(self.items.len());
        if i == self.items.len() {
            self.items.push(item);
        } else if let Some(slot) = self.items.get_mut(i) {
            *slot = item;
        }
    }

    /// Output tokens of the part delivered: as reported, else estimated (four characters a token).
    pub fn output_tokens(&self) -> u64 {
        self.usage
            .output_tokens
            .filter(|&n| n > 1)
            .unwrap_or_else(|| u64::try_from(self.text.len().div_ceil(4)).unwrap_or(u64::MAX))
    }
}

fn verbatim(v: &Value) -> Option<ResumeItem> {
    serde_json::value::to_raw_value(v)
        .ok()
        .map(ResumeItem::Verbatim)
}

// ---------------------------------------------------------------------------------------------------
// The splice.

/// Continuation text is held back while it could still turn out to repeat the end of what was
/// delivered; this much of the delivered text is compared. Each check costs up to the window
/// squared, and a continuation's text is checked as it arrives until decided: small on purpose.
const OVERLAP_WINDOW: usize = 512;

/// Shorter matches are taken for coincidence, unless the whole delivered text is repeated.
const MIN_OVERLAP: usize = 12;

/// Joins a continuation's canonical events to a client's stream resumed at a [`ResumePoint`]: drops
/// the continuation's opening, renumbers its parts (its first text part continues the client's open
/// one; the rest come after), leaves out text that repeats the end of what was delivered, and adds
/// the delivered part's output tokens to the usage.
#[derive(Debug)]
pub struct Splice {
    /// The end of the delivered text (at most [`OVERLAP_WINDOW`] bytes), for the overlap check.
    tail: String,
    /// The whole delivered text fits in `tail`.
    tail_is_all: bool,
    /// Whitespace trimmed off the prefill: left out of the continuation's start.
    trimmed: String,
    first_text: Option<usize>,
    /// Continuation text waiting for the overlap decision.
    pending: String,
    decided: bool,
    delivered_tokens: u64,
}

impl Splice {
    pub fn new(rp: &ResumePoint, trimmed: String) -> Self {
        let mut from = rp.text.len().saturating_sub(OVERLAP_WINDOW);
        while !rp.text.is_char_boundary(from) {
            from = from.saturating_add(1);
        }
        Self {
            tail: rp.text.get(from..).unwrap_or_default().to_owned(),
            tail_is_all: from == 0,
            trimmed,
            first_text: None,
            pending: String::new(),
            decided: rp.text.is_empty(),
            delivered_tokens: rp.output_tokens(),
        }
    }

    fn index(&mut self, k: usize) -> usize {
        if self.first_text == Some(k) {
            0
        } else {
            k.saturating_add(1)
        }
    }

    /// Maps one continuation event to what goes to the client's encoder.
    pub fn push(&mut self, ev: StreamEvent, out: &mut Vec<StreamEvent>) {
        match ev {
            StreamEvent::Start { .. } => {}
            StreamEvent::TextDelta { index, text } => {
                if self.first_text.is_none() {
                    self.first_text = Some(index);
                }
                let index = self.index(index);
                if index != 0 || self.decided {
                    out.push(StreamEvent::TextDelta { index, text });
                    return;
                }
                self.pending.push_str(&text);
                if let Some(skip) = self.overlap(false) {
                    self.release(skip, out);
                }
            }
            other => {
                self.settle(out);
                out.push(match other {
                    StreamEvent::ToolCallStart { index, id, name } => StreamEvent::ToolCallStart {
                        index: self.index(index),
                        id,
                        name,
                    },
                    StreamEvent::ToolCallDelta { index, fragment } => StreamEvent::ToolCallDelta {
                        index: self.index(index),
                        fragment,
                    },
                    StreamEvent::Usage(mut u) => {
                        u.output_tokens = u
                            .output_tokens
                            .map(|n| n.saturating_add(self.delivered_tokens));
                        StreamEvent::Usage(u)
                    }
                    ev => ev,
                });
            }
        }
    }

    /// Decides on held text now (anything but more text arrived).
    pub fn settle(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.decided {
            let skip = self.overlap(true).unwrap_or(0);
            self.release(skip, out);
        }
    }

    fn release(&mut self, skip: usize, out: &mut Vec<StreamEvent>) {
        self.decided = true;
        let text = std::mem::take(&mut self.pending);
        let rest = text.get(skip..).unwrap_or_default();
        if !rest.is_empty() {
            out.push(StreamEvent::TextDelta {
                index: 0,
                text: rest.to_owned(),
            });
        }
    }

    /// How many bytes at the start of the pending text to leave out, once that can be decided:
    /// the whitespace trimmed off the prefill, then the longest repeat of the delivered text's end
    /// (of at least [`MIN_OVERLAP`] bytes, or all of it). `None`: wait for more text.
    fn overlap(&self, at_end: bool) -> Option<usize> {
        let p = self.pending.as_str();
        let ws = self.trimmed.as_str();
        let lead = if p.starts_with(ws) {
            ws.len()
        } else if ws.starts_with(p) && !at_end {
            return None;
        } else {
            0
        };
        let c = p.get(lead..).unwrap_or_default();
        let d = self.tail.as_str();
        let mut best = 0usize;
        for (start, _) in d.char_indices() {
            let suffix = d.get(start..).unwrap_or_default();
            if c.starts_with(suffix) {
                // The continuation repeats `suffix`: the longest such is the first found.
                let whole = start == 0 && self.tail_is_all;
                if suffix.len() >= MIN_OVERLAP || whole {
                    best = suffix.len();
                    break;
                }
            } else if suffix.starts_with(c) && !at_end && c.len() < OVERLAP_WINDOW {
                // It may still turn out to repeat this much: wait for more.
                if suffix.len() >= MIN_OVERLAP || (start == 0 && self.tail_is_all) {
                    return None;
                }
            }
        }
        Some(lead.saturating_add(best))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use super::*;

    fn texts(evs: &[StreamEvent]) -> String {
        evs.iter()
            .filter_map(|e| match e {
                StreamEvent::TextDelta { text, .. } => Some(text.as_str()),
                _ => None,
            })
            .collect()
    }

    fn splice(delivered: &str, trimmed: &str, pieces: &[&str]) -> String {
        let rp = ResumePoint {
            text: delivered.to_owned(),
            ..ResumePoint::default()
        };
        let mut s = Splice::new(&rp, trimmed.to_owned());
        let mut out = Vec::new();
        s.push(
            StreamEvent::Start {
                id: "x".into(),
                model: "m".into(),
            },
            &mut out,
        );
        for p in pieces {
            s.push(
                StreamEvent::TextDelta {
                    index: 0,
                    text: (*p).to_owned(),
                },
                &mut out,
            );
        }
        s.push(StreamEvent::Done, &mut out);
        assert!(!out.iter().any(|e| matches!(e, StreamEvent::Start { .. })));
        texts(&out)
    }

    #[test]
    fn a_continuation_that_carries_on_is_passed_whole() {
        assert_eq!(
            splice("The quick brown fox", "", &[" jumps", " over"]),
            " jumps over"
        );
    }

    #[test]
    fn the_trimmed_whitespace_is_not_sent_twice() {
        assert_eq!(splice("The quick brown fox ", " ", &[" jumps"]), "jumps");
        // A continuation that does not start with it is passed as it is.
        assert_eq!(splice("The quick brown fox ", " ", &["jumps"]), "jumps");
    }

    #[test]
    fn a_repeated_end_is_left_out() {
        let d = "First sentence here. Second sentence that was cut";
        assert_eq!(
            splice(d, "", &["Second sen", "tence that was cut", " short."]),
            " short."
        );
    }

    #[test]
    fn an_answer_restarted_from_the_top_is_not_sent_twice() {
        let d = "Hello there, friend";
        assert_eq!(
            splice(d, "", &["Hello ", "there, ", "friend", " and more"]),
            " and more"
        );
    }

    #[test]
    fn a_short_coincidence_is_kept() {
        assert_eq!(splice("I saw the", "", &[" the cat"]), " the cat");
        assert_eq!(splice("one two", "", &["two three"]), "two three");
    }

    #[test]
    fn text_in_other_scripts_is_compared_by_characters() {
        assert_eq!(
            splice("これは長い日本語の文章です。続きは", "", &["続きはこちら"]),
            "続きはこちら"
        );
        assert_eq!(
            splice(
                "これは長い日本語の文章です。続きは",
                "",
                &["日本語の文章です。続きは", "こちら"]
            ),
            "こちら"
        );
    }

    #[test]
    fn parts_after_the_text_are_renumbered() {
        let rp = ResumePoint {
            text: "abc".into(),
            ..ResumePoint::default()
        };
        let mut s = Splice::new(&rp, String::new());
        let mut out = Vec::new();
        s.push(
            StreamEvent::TextDelta {
                index: 0,
                text: "def".into(),
            },
            &mut out,
        );
        s.push(
            StreamEvent::ToolCallStart {
                index: 1,
                id: "t".into(),
                name: "f".into(),
            },
            &mut out,
        );
        s.push(
            StreamEvent::Usage(Usage {
                output_tokens: Some(10),
                ..Usage::default()
            }),
            &mut out,
        );
        assert_eq!(
            out,
            vec![
                StreamEvent::TextDelta {
                    index: 0,
                    text: "def".into()
                },
                StreamEvent::ToolCallStart {
                    index: 2,
                    id: "t".into(),
                    name: "f".into()
                },
                StreamEvent::Usage(Usage {
                    output_tokens: Some(11),
                    ..Usage::default()
                }),
            ]
        );
    }

    #[test]
    fn the_request_carries_the_delivered_text() {
        let req = ChatRequest {
            messages: vec![Message {
                role: Role::User,
                content: vec![Part::Text("hi".into())],
            }],
            ..ChatRequest::default()
        };
        let (r, trimmed) = continuation_request(&req, "Hello wor ", true);
        assert_eq!(trimmed, " ");
        assert_eq!(r.messages.len(), 2);
        assert_eq!(r.messages[1].content, vec![Part::Text("Hello wor".into())]);
        let (r, _) = continuation_request(&req, "Hello wor", false);
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[2].role, Role::User);
        let (r, _) = continuation_request(&req, "  ", false);
        assert_eq!(r.messages.len(), 1);
    }

    fn deliver(format: ApiFormat, tools: bool, chunks: &[&str]) -> (String, Delivery, bool) {
        let mut d = Delivery::new(format, tools, 1 << 20);
        let mut out = Vec::new();
        let mut error = false;
        for c in chunks {
            error |= d.push(c.as_bytes(), &mut out).error;
        }
        (String::from_utf8(out).unwrap(), d, error)
    }

    const A_TEXT: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"Let me look.\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n";
    const A_TOOL_OPEN: &str = "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":1,\"content_block\":{\"type\":\"tool_use\",\"id\":\"toolu_1\",\"name\":\"f\",\"input\":{}}}\n\nevent: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"{\\\"a\\\":\"}}\n\n";
    const A_TOOL_CLOSE: &str = "event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":1,\"delta\":{\"type\":\"input_json_delta\",\"partial_json\":\"1}\"}}\n\nevent: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":1}\n\n";

    #[test]
    fn a_tool_call_is_held_until_it_is_complete() {
        let (out, _, _) = deliver(ApiFormat::AnthropicMessages, true, &[A_TEXT, A_TOOL_OPEN]);
        assert_eq!(out, A_TEXT, "half a call reached the client");
        let (out, _, _) = deliver(
            ApiFormat::AnthropicMessages,
            true,
            &[A_TEXT, A_TOOL_OPEN, A_TOOL_CLOSE],
        );
        assert_eq!(out, format!("{A_TEXT}{A_TOOL_OPEN}{A_TOOL_CLOSE}"));
        // Without tools in the request nothing is held.
        let (out, _, _) = deliver(ApiFormat::AnthropicMessages, false, &[A_TEXT, A_TOOL_OPEN]);
        assert_eq!(out, format!("{A_TEXT}{A_TOOL_OPEN}"));
    }

    #[test]
    fn a_cut_inside_a_tool_call_resumes_after_the_text() {
        let (_, mut d, _) = deliver(ApiFormat::AnthropicMessages, true, &[A_TEXT, A_TOOL_OPEN]);
        let rp = d.resume_point().unwrap();
        assert_eq!(rp.text, "Let me look.");
        assert_eq!(rp.blocks, 1);
        assert_eq!(rp.open_block, None);
    }

    #[test]
    fn an_error_event_stops_delivery() {
        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\",\"message\":\"x\"}}\n\n";
        let (out, _, error) = deliver(
            ApiFormat::AnthropicMessages,
            false,
            &[&format!("{A_TEXT}{err}")],
        );
        assert!(error);
        assert_eq!(out, A_TEXT);
        let chat = "data: {\"error\":{\"message\":\"boom\"}}\n\n";
        let (out, _, error) = deliver(ApiFormat::OpenAiChat, false, &[chat]);
        assert!(error && out.is_empty());
        // The word inside an answer's text is not an error.
        let text = "data: {\"choices\":[{\"index\":0,\"delta\":{\"content\":\"an \\\"error\\\" here\"}}]}\n\n";
        let (out, _, error) = deliver(ApiFormat::OpenAiChat, false, &[text]);
        assert!(!error);
        assert_eq!(out, text);
    }

    #[test]
    fn plain_text_passes_untouched_and_is_still_copied() {
        let mut d = Delivery::new(ApiFormat::AnthropicMessages, true, 1 << 20);
        let chunk = Bytes::from_static(A_TEXT.as_bytes());
        let (out, got) = d.push_bytes(chunk.clone());
        assert_eq!(out, chunk);
        assert!(out.as_ptr() == chunk.as_ptr(), "copied when it need not be");
        assert!(!got.error);
        assert_eq!(d.resume_point().unwrap().text, "Let me look.");
        // A run with a tool call or an error event takes the careful way.
        let (out, _) = d.push_bytes(Bytes::from_static(A_TOOL_OPEN.as_bytes()));
        assert!(out.is_empty());
        let err = "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"overloaded_error\"}}\n\n";
        let (_, got) = d.push_bytes(Bytes::from_static(err.as_bytes()));
        assert!(got.error);
    }

    #[test]
    fn a_huge_chat_tool_call_index_costs_nothing_to_resume() {
        let chunk = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{\"tool_calls\":[{\"index\":18446744073709551615,\"id\":\"x\",\"function\":{\"name\":\"f\",\"arguments\":\"{}\"}}]}}]}\n\n";
        let rp = ResumePoint::read(ApiFormat::OpenAiChat, chunk.as_bytes());
        assert_eq!(rp.tool_calls, 1);
        // Resuming an encoder from it is immediate (it used to loop over the index).
        let _ = crate::translate::StreamEncoder::resume(
            ApiFormat::OpenAiChat,
            crate::translate::StreamOptions {
                model: "m".into(),
                include_usage: false,
            },
            &rp,
        );
    }

    #[test]
    fn resume_points_are_read_for_every_format() {
        let chat = "data: {\"id\":\"chatcmpl-1\",\"object\":\"chat.completion.chunk\",\"created\":7,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"}}]}\n\ndata: {\"id\":\"chatcmpl-1\",\"created\":7,\"model\":\"gpt\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"Hi there\"}}]}\n\n";
        let rp = ResumePoint::read(ApiFormat::OpenAiChat, chat.as_bytes());
        assert_eq!(rp.id.as_deref(), Some("chatcmpl-1"));
        assert_eq!(rp.created, Some(7));
        assert_eq!(rp.text, "Hi there");
        let gem = "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"Hi \"}],\"role\":\"model\"},\"index\":0}],\"modelVersion\":\"g\",\"responseId\":\"r1\"}\n\n";
        let rp = ResumePoint::read(ApiFormat::Gemini, gem.as_bytes());
        assert_eq!(rp.id.as_deref(), Some("r1"));
        assert_eq!(rp.text, "Hi ");
        let resp = "event: response.created\ndata: {\"type\":\"response.created\",\"sequence_number\":0,\"response\":{\"id\":\"resp_1\",\"model\":\"m\",\"created_at\":5}}\n\nevent: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":1,\"output_index\":0,\"item\":{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]}}\n\nevent: response.output_item.done\ndata: {\"type\":\"response.output_item.done\",\"sequence_number\":2,\"output_index\":0,\"item\":{\"type\":\"reasoning\",\"id\":\"rs_1\",\"summary\":[]}}\n\nevent: response.output_item.added\ndata: {\"type\":\"response.output_item.added\",\"sequence_number\":3,\"output_index\":1,\"item\":{\"type\":\"message\",\"id\":\"msg_1\",\"role\":\"assistant\",\"content\":[]}}\n\nevent: response.output_text.delta\ndata: {\"type\":\"response.output_text.delta\",\"sequence_number\":5,\"output_index\":1,\"content_index\":0,\"item_id\":\"msg_1\",\"delta\":\"Hel\"}\n\n";
        let rp = ResumePoint::read(ApiFormat::OpenAiResponses, resp.as_bytes());
        assert_eq!(rp.id.as_deref(), Some("resp_1"));
        assert_eq!(rp.last_sequence_number, Some(5));
        assert_eq!(rp.items.len(), 2);
        assert!(
            matches!(&rp.items[1], ResumeItem::Message { id, text, open: true } if id == "msg_1" && text == "Hel")
        );
        assert_eq!(rp.text, "Hel");
    }
}
