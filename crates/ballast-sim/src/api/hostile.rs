//! The `hostile` fault: answers made of malicious or broken bytes, in each API's own wire format apart
//! from the hostile part, to prove a client survives a provider that sends them.
//!
//! Answers are built by the dialect as usual ([`Dialect::frames`], [`Dialect::body`]) from an answer
//! whose strings may hold *markers*; the bytes are then rewritten: a marker becomes a run of filler, a
//! deep nesting or invalid UTF-8, and `huge_index` rewrites numbers in the JSON. Huge runs are never
//! held in memory: a body is a queue of [`Part`]s produced 64 KiB at a time while the client reads, so
//! a client that stops reading stops generation and one that hangs up drops the body. Every loop is
//! bounded by the fault's `bytes`, `depth` or `count` or by the answer's length.

use std::collections::VecDeque;
use std::io;
use std::sync::LazyLock;
use std::time::Duration;

use axum::body::Body;
use axum::response::Response;
use bytes::{Bytes, BytesMut};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderName, HeaderValue, Version};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Dialect, Inbound, Meta};
use crate::faults::{Hostile, HostileMode};
use crate::generate::{Answer, Content, Finish, Prompt, any_tool_call, split_pieces};
use crate::raw::Takeover;
use crate::state::Pacing;

/// The size of each chunk of a huge run.
const CHUNK: usize = 64 * 1024;

/// `huge_index`: every index a client might size something with.
pub(crate) const HUGE_INDEX: u64 = 1_000_000_000_000_000;

/// Invalid UTF-8: a byte that never occurs (0xff), a lead byte without its continuation (0xc3 0x28),
/// and a UTF-16 surrogate encoded as UTF-8 (0xed 0xa0 0x80). No quote, backslash or control byte, so
/// the JSON around it keeps its structure.
pub(crate) const INVALID_UTF8: &[u8] = b"\xff\xc3\x28\xed\xa0\x80";

/// Markers stand for hostile bytes inside the strings an answer is rendered from. A marker that is a
/// whole JSON string (`"MARK"`) becomes its run; one embedded in a longer string (Responses' `done`
/// events repeat the whole text) is dropped, so exactly one event carries each run.
const MARK_FILL: &str = "\u{F8FF}ballast-sim:fill\u{F8FF}";
const MARK_NEST_ARRAY: &str = "\u{F8FF}ballast-sim:nest-array\u{F8FF}";
const MARK_NEST_OBJECT: &str = "\u{F8FF}ballast-sim:nest-object\u{F8FF}";
const MARK_NEST_OPEN: &str = "\u{F8FF}ballast-sim:nest-open\u{F8FF}";
const MARK_INVALID: &str = "\u{F8FF}ballast-sim:invalid-utf8\u{F8FF}";
const MARK_PREFIX: &[u8] = "\u{F8FF}ballast-sim:".as_bytes();

/// How a marker is rewritten.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Mark {
    /// String content: `bytes` of filler (no quote, backslash, control byte or newline).
    Fill,
    /// A value: `[` × depth then `]` × depth.
    NestArray,
    /// A value: `{"a":` × depth, `0`, then `}` × depth.
    NestObject,
    /// A value that never closes: `{"a":` × depth.
    NestOpen,
    /// String content: [`INVALID_UTF8`], wherever it is.
    Invalid,
}

const MARKS: [(&str, Mark); 5] = [
    (MARK_FILL, Mark::Fill),
    (MARK_NEST_ARRAY, Mark::NestArray),
    (MARK_NEST_OBJECT, Mark::NestObject),
    (MARK_NEST_OPEN, Mark::NestOpen),
    (MARK_INVALID, Mark::Invalid),
];

/// A chunk of `unit` repeated, for runs of that unit (its length is a multiple of the unit's).
fn repeated(unit: &[u8]) -> Bytes {
    let len = CHUNK - CHUNK % unit.len();
    Bytes::from(unit.iter().copied().cycle().take(len).collect::<Vec<u8>>())
}

static FILL: LazyLock<Bytes> = LazyLock::new(|| repeated(b"hostile "));
static OPEN_ARRAY: LazyLock<Bytes> = LazyLock::new(|| repeated(b"["));
static CLOSE_ARRAY: LazyLock<Bytes> = LazyLock::new(|| repeated(b"]"));
static OPEN_OBJECT: LazyLock<Bytes> = LazyLock::new(|| repeated(b"{\"a\":"));
static CLOSE_OBJECT: LazyLock<Bytes> = LazyLock::new(|| repeated(b"}"));

/// One piece of a hostile body.
enum Part {
    /// Bytes sent as they are; `token` waits the token delay first (a streamed token frame).
    Bytes { bytes: Bytes, token: bool },
    /// `left` bytes of `chunk` repeated, at most a chunk at a time.
    Run { chunk: Bytes, left: u64 },
    /// Bytes sent one at a time, `interval` apart.
    Trickle { bytes: Bytes, interval: Duration },
}

impl Part {
    fn run(chunk: &Bytes, len: u64) -> Part {
        Part::Run {
            chunk: chunk.clone(),
            left: len,
        }
    }

    fn done(&self) -> bool {
        match self {
            Part::Bytes { bytes, .. } | Part::Trickle { bytes, .. } => bytes.is_empty(),
            Part::Run { left, .. } => *left == 0,
        }
    }
}

/// Produces a body's parts chunk by chunk: the first after ttft, token frames after the token delay.
struct Generator {
    parts: VecDeque<Part>,
    started: bool,
    pacing: Pacing,
}

impl Generator {
    async fn next(&mut self) -> Option<Bytes> {
        while self.parts.front().is_some_and(Part::done) {
            self.parts.pop_front();
        }
        let part = self.parts.front_mut()?;
        let wait = match part {
            Part::Bytes { token: true, .. } => self.pacing.token_delay,
            Part::Trickle { interval, .. } => *interval,
            Part::Bytes { .. } | Part::Run { .. } => Duration::ZERO,
        };
        let wait = if self.started {
            wait
        } else {
            self.started = true;
            self.pacing.ttft
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some(match part {
            Part::Bytes { bytes, .. } => std::mem::take(bytes),
            Part::Trickle { bytes, .. } => bytes.split_to(1),
            Part::Run { chunk, left } => {
                let n = usize::try_from(*left).map_or(chunk.len(), |l| l.min(chunk.len()));
                *left -= n as u64;
                chunk.slice(..n)
            }
        })
    }
}

fn body(parts: VecDeque<Part>, pacing: Pacing) -> Body {
    let generator = Generator {
        parts,
        started: false,
        pacing,
    };
    Body::from_stream(futures_util::stream::unfold(
        generator,
        |mut g| async move {
            let bytes = g.next().await?;
            Some((Ok::<Bytes, io::Error>(bytes), g))
        },
    ))
}

/// Serves a generation request under the `hostile` fault (already counted). `answer` is the normal
/// answer to the request.
pub(crate) async fn respond<D: Dialect>(
    hostile: Hostile,
    inbound: &Inbound,
    prompt: &Prompt,
    options: &D::Options,
    answer: Answer,
    mut meta: Meta,
    pacing: Pacing,
) -> Response {
    let stream = prompt.stream;
    let mut headers = HeaderMap::new();
    let content_type = if stream {
        D::stream_content_type(options)
    } else {
        "application/json"
    };
    headers.insert(CONTENT_TYPE, HeaderValue::from_static(content_type));
    if stream {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    D::headers(&mut headers, &inbound.request_id);

    let mut parts = VecDeque::new();
    match hostile.mode {
        HostileMode::EndlessHeaders => {
            let raw = RawAnswer {
                head: head_bytes(&headers),
                interval: hostile.interval,
                limit: hostile.bytes,
            };
            // HTTP/1 only: an HTTP/2 connection carries other requests, so the answer never comes.
            if inbound.parts.version <= Version::HTTP_11
                && let Some(takeover) = inbound.parts.extensions.get::<Takeover>()
            {
                takeover.take_over(raw);
            }
            return std::future::pending().await;
        }
        HostileMode::HugeIndex => {
            let answer = with_tool_call(answer, prompt);
            if stream {
                for frame in D::frames(&answer, &meta, options) {
                    parts.push_back(Part::Bytes {
                        bytes: map_json(&frame.bytes, enlarge),
                        token: frame.token,
                    });
                }
            } else {
                let mut value = D::body(&answer, &meta, options);
                enlarge(&mut value);
                parts.push_back(Part::Bytes {
                    bytes: Bytes::from(value.to_string()),
                    token: false,
                });
            }
        }
        HostileMode::NoTerminator => {
            let answer = text_answer(answer, vec![MARK_FILL.to_owned()]);
            let rendered = if stream {
                D::frames(&answer, &meta, options)
                    .into_iter()
                    .map(|f| f.bytes)
                    .find(|b| find(b, MARK_FILL.as_bytes()).is_some())
                    .unwrap_or_default()
            } else {
                Bytes::from(D::body(&answer, &meta, options).to_string())
            };
            // Everything up to the string that never ends: no event terminator, no closing bracket.
            let at = find(&rendered, MARK_FILL.as_bytes()).unwrap_or(rendered.len());
            let prefix = rendered.slice(..at.min(usize::try_from(hostile.bytes).unwrap_or(at)));
            let fill = hostile.bytes.saturating_sub(prefix.len() as u64);
            parts.push_back(Part::Bytes {
                bytes: prefix,
                token: false,
            });
            parts.push_back(Part::run(&FILL, fill));
        }
        HostileMode::HugeEvent => {
            let answer = lead_with(answer, vec![MARK_FILL.to_owned()], stream);
            render::<D>(
                &answer,
                &meta,
                options,
                stream,
                |_| {},
                &hostile,
                &mut parts,
            );
        }
        HostileMode::DeepNesting => {
            let (lead, usage_mark) = if stream {
                (vec![MARK_NEST_ARRAY, MARK_NEST_OPEN], MARK_NEST_OBJECT)
            } else {
                (vec![MARK_NEST_ARRAY], MARK_NEST_OPEN)
            };
            let lead = lead.into_iter().map(str::to_owned).collect();
            let answer = lead_with(answer, lead, stream);
            let mark_usage = |v: &mut Value| mark_usage(v, usage_mark);
            render::<D>(
                &answer, &meta, options, stream, mark_usage, &hostile, &mut parts,
            );
        }
        HostileMode::InvalidUtf8 => {
            let mut answer = answer;
            for piece in text_pieces_mut(&mut answer) {
                piece.push_str(MARK_INVALID);
            }
            meta.id.push_str(MARK_INVALID);
            meta.model.push_str(MARK_INVALID);
            meta.tool_call_id.push_str(MARK_INVALID);
            render::<D>(
                &answer,
                &meta,
                options,
                stream,
                |_| {},
                &hostile,
                &mut parts,
            );
        }
        HostileMode::Trickle => {
            let bytes = if stream {
                let mut all = BytesMut::new();
                for frame in D::frames(&answer, &meta, options) {
                    all.extend_from_slice(&frame.bytes);
                }
                all.freeze()
            } else {
                Bytes::from(D::body(&answer, &meta, options).to_string())
            };
            parts.push_back(Part::Trickle {
                bytes,
                interval: hostile.interval,
            });
        }
        HostileMode::HugeHeaders => {
            add_huge_headers(&mut headers, &hostile);
            if stream {
                for frame in D::frames(&answer, &meta, options) {
                    parts.push_back(Part::Bytes {
                        bytes: frame.bytes,
                        token: frame.token,
                    });
                }
            } else {
                parts.push_back(Part::Bytes {
                    bytes: Bytes::from(D::body(&answer, &meta, options).to_string()),
                    token: false,
                });
            }
        }
    }

    // Non-streamed answers wait ttft before the response, as normal ones do.
    let pacing = if stream {
        pacing
    } else {
        if !pacing.ttft.is_zero() {
            tokio::time::sleep(pacing.ttft).await;
        }
        Pacing::default()
    };
    let mut response = Response::new(body(parts, pacing));
    *response.headers_mut() = headers;
    response
}

/// Renders the answer (frames or body), lets `edit` change each event's (or the body's) JSON, then
/// turns markers into their runs.
fn render<D: Dialect>(
    answer: &Answer,
    meta: &Meta,
    options: &D::Options,
    stream: bool,
    edit: impl Fn(&mut Value),
    hostile: &Hostile,
    parts: &mut VecDeque<Part>,
) {
    if stream {
        for frame in D::frames(answer, meta, options) {
            let bytes = map_json(&frame.bytes, &edit);
            expand(&bytes, frame.token, hostile, parts);
        }
    } else {
        let mut value = D::body(answer, meta, options);
        edit(&mut value);
        expand(value.to_string().as_bytes(), false, hostile, parts);
    }
}

/// The answer's text pieces (a text answer's, or a tool call's preamble) to edit in place.
fn text_pieces_mut(answer: &mut Answer) -> &mut [String] {
    match &mut answer.content {
        Content::Text(pieces) => pieces,
        Content::ToolCall { .. } => &mut answer.preamble,
    }
}

/// A text answer saying `pieces` (tool calls become text).
fn text_answer(answer: Answer, pieces: Vec<String>) -> Answer {
    Answer {
        content: Content::Text(pieces),
        finish: Finish::EndTurn,
        preamble: Vec::new(),
        ..answer
    }
}

/// The answer with `lead` said first: ahead of a text answer's pieces (or instead of them unless
/// `keep`), or as a tool call's preamble.
fn lead_with(mut answer: Answer, mut lead: Vec<String>, keep: bool) -> Answer {
    match &mut answer.content {
        Content::Text(pieces) => {
            if keep {
                lead.append(pieces);
            }
            *pieces = lead;
        }
        Content::ToolCall { .. } => answer.preamble = lead,
    }
    answer
}

/// The answer as text followed by a tool call: its own call, else one to a tool the request declared,
/// else one to a tool it never declared — so tool-call code paths run whatever was asked.
fn with_tool_call(answer: Answer, prompt: &Prompt) -> Answer {
    let (text, call) = match answer.content {
        Content::Text(pieces) if !pieces.is_empty() => (pieces, None),
        Content::Text(_) => (split_pieces("Calling a tool."), None),
        Content::ToolCall { name, arguments } => {
            (split_pieces("Calling a tool."), Some((name, arguments)))
        }
    };
    let (name, arguments) = call.unwrap_or_else(|| any_tool_call(prompt));
    Answer {
        content: Content::ToolCall { name, arguments },
        finish: Finish::ToolUse,
        preamble: text,
        ..answer
    }
}

/// The position of `needle` in `haystack`.
fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Rewrites the JSON of one event (from its first `{` to its last `}`, whatever the framing: SSE
/// `data:` lines or Gemini's streamed array) or leaves the bytes as they are.
fn map_json(bytes: &Bytes, edit: impl Fn(&mut Value)) -> Bytes {
    let start = bytes.iter().position(|&b| b == b'{');
    let end = bytes.iter().rposition(|&b| b == b'}');
    let (Some(start), Some(end)) = (start, end) else {
        return bytes.clone();
    };
    if end < start {
        return bytes.clone();
    }
    let Ok(mut value) = serde_json::from_slice::<Value>(&bytes[start..=end]) else {
        return bytes.clone();
    };
    edit(&mut value);
    let mut out = Vec::with_capacity(bytes.len() + 64);
    out.extend_from_slice(&bytes[..start]);
    out.extend_from_slice(value.to_string().as_bytes());
    out.extend_from_slice(&bytes[end + 1..]);
    Bytes::from(out)
}

/// `huge_index`: every index becomes [`HUGE_INDEX`] (tool calls get one even where the API has none),
/// sequence numbers start there, and token counts become `u64::MAX`, `i64::MAX` or negative.
fn enlarge(value: &mut Value) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                match key.as_str() {
                    "index" | "output_index" | "content_index" if v.is_number() => {
                        *v = Value::from(HUGE_INDEX);
                    }
                    "sequence_number" => {
                        *v = Value::from(HUGE_INDEX.saturating_add(v.as_u64().unwrap_or(0)));
                    }
                    "usage" | "usageMetadata" => huge_counts(v, key),
                    // Non-streamed Chat Completions tool calls get an index too.
                    "tool_calls" => {
                        for call in v.as_array_mut().into_iter().flatten() {
                            if let Some(call) = call.as_object_mut() {
                                call.insert("index".to_owned(), Value::from(HUGE_INDEX));
                            }
                            enlarge(call);
                        }
                    }
                    _ => enlarge(v),
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(enlarge),
        _ => {}
    }
}

/// The token counts of a usage object: input counts `u64::MAX`, output counts `i64::MAX`, totals -1,
/// the rest (cache and detail counts) `i64::MIN`.
fn huge_counts(value: &mut Value, key: &str) {
    match value {
        Value::Object(map) => map.iter_mut().for_each(|(k, v)| huge_counts(v, k)),
        Value::Array(items) => items.iter_mut().for_each(|v| huge_counts(v, key)),
        Value::Number(_) => {
            let key = key.to_ascii_lowercase();
            *value = if key.contains("total") {
                Value::from(-1)
            } else if key.contains("input") || key.contains("prompt") {
                Value::from(u64::MAX)
            } else if ["output", "completion", "candidates"]
                .iter()
                .any(|k| key.contains(k))
            {
                Value::from(i64::MAX)
            } else {
                Value::from(i64::MIN)
            };
        }
        _ => {}
    }
}

/// `deep_nesting`: every usage object becomes `mark` (a deep nesting once expanded).
fn mark_usage(value: &mut Value, mark: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if matches!(key.as_str(), "usage" | "usageMetadata") && v.is_object() {
                    *v = Value::String(mark.to_owned());
                } else {
                    mark_usage(v, mark);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| mark_usage(v, mark)),
        _ => {}
    }
}

/// The marker at the start of `bytes`, if any, with its length.
fn mark_at(bytes: &[u8]) -> Option<(Mark, usize)> {
    MARKS
        .iter()
        .find(|(text, _)| bytes.starts_with(text.as_bytes()))
        .map(|(text, mark)| (*mark, text.len()))
}

/// Turns the markers in one event (or body) into parts; the event's first part keeps its `token`
/// flag. Under `invalid_utf8`, the event's name (its `event:` line) ends in invalid UTF-8 too.
fn expand(bytes: &[u8], token: bool, hostile: &Hostile, parts: &mut VecDeque<Part>) {
    let mut literal: Vec<u8> = Vec::with_capacity(bytes.len());
    let mut token = token;
    let mut flush = |literal: &mut Vec<u8>, parts: &mut VecDeque<Part>| {
        if !literal.is_empty() {
            parts.push_back(Part::Bytes {
                bytes: Bytes::from(std::mem::take(literal)),
                token,
            });
            token = false;
        }
    };
    let mut rest = bytes;
    if hostile.mode == HostileMode::InvalidUtf8
        && rest.starts_with(b"event: ")
        && let Some(eol) = rest.iter().position(|&b| b == b'\n')
    {
        literal.extend_from_slice(&rest[..eol]);
        literal.extend_from_slice(INVALID_UTF8);
        rest = &rest[eol..];
    }
    // Each round consumes at least one byte of `rest`.
    while let Some(at) = find(rest, MARK_PREFIX) {
        let Some((mark, len)) = mark_at(&rest[at..]) else {
            literal.extend_from_slice(&rest[..at + MARK_PREFIX.len()]);
            rest = &rest[at + MARK_PREFIX.len()..];
            continue;
        };
        let before = &rest[..at];
        let after = &rest[at + len..];
        let whole = before.ends_with(b"\"") && after.starts_with(b"\"");
        match mark {
            Mark::Invalid => {
                literal.extend_from_slice(before);
                literal.extend_from_slice(INVALID_UTF8);
                rest = after;
            }
            Mark::Fill if whole => {
                literal.extend_from_slice(before);
                flush(&mut literal, parts);
                parts.push_back(Part::run(&FILL, hostile.bytes));
                rest = after;
            }
            Mark::NestArray | Mark::NestObject | Mark::NestOpen if whole => {
                // The quotes go: the nesting is the value.
                literal.extend_from_slice(&before[..before.len() - 1]);
                flush(&mut literal, parts);
                nest(mark, hostile.depth, parts);
                rest = &after[1..];
            }
            // Embedded in a longer string: dropped.
            Mark::Fill | Mark::NestArray | Mark::NestObject | Mark::NestOpen => {
                literal.extend_from_slice(before);
                rest = after;
            }
        }
    }
    literal.extend_from_slice(rest);
    flush(&mut literal, parts);
}

/// The parts of a nesting `depth` levels deep.
fn nest(mark: Mark, depth: u64, parts: &mut VecDeque<Part>) {
    let object_len = depth.saturating_mul(b"{\"a\":".len() as u64);
    match mark {
        Mark::NestArray => {
            parts.push_back(Part::run(&OPEN_ARRAY, depth));
            parts.push_back(Part::run(&CLOSE_ARRAY, depth));
        }
        Mark::NestObject => {
            parts.push_back(Part::run(&OPEN_OBJECT, object_len));
            parts.push_back(Part::Bytes {
                bytes: Bytes::from_static(b"0"),
                token: false,
            });
            parts.push_back(Part::run(&CLOSE_OBJECT, depth));
        }
        Mark::NestOpen => parts.push_back(Part::run(&OPEN_OBJECT, object_len)),
        Mark::Fill | Mark::Invalid => {}
    }
}

/// `huge_headers`: `count` headers `x-ballast-sim-hostile-N`, then one, `x-ballast-sim-hostile-big`,
/// whose value is `bytes` long.
fn add_huge_headers(headers: &mut HeaderMap, hostile: &Hostile) {
    let value = HeaderValue::from_static("ballast-sim hostile header");
    for n in 0..hostile.count {
        let Ok(name) = HeaderName::from_bytes(format!("x-ballast-sim-hostile-{n}").as_bytes())
        else {
            break;
        };
        if headers.try_insert(name, value.clone()).is_err() {
            break;
        }
    }
    let Ok(len) = usize::try_from(hostile.bytes) else {
        return;
    };
    if len == 0 {
        return;
    }
    let big: Vec<u8> = b"hostile-".iter().copied().cycle().take(len).collect();
    if let Ok(value) = HeaderValue::from_maybe_shared(Bytes::from(big)) {
        // Failing only at the header map's capacity, which `count` is bounded below.
        let _ = headers.try_insert("x-ballast-sim-hostile-big", value);
    }
}

/// A status line and header lines (the response head without its terminating blank line).
fn head_bytes(headers: &HeaderMap) -> Vec<u8> {
    let mut head = b"HTTP/1.1 200 OK\r\n".to_vec();
    for (name, value) in headers {
        head.extend_from_slice(name.as_str().as_bytes());
        head.extend_from_slice(b": ");
        head.extend_from_slice(value.as_bytes());
        head.extend_from_slice(b"\r\n");
    }
    head
}

/// How much of what the client sends while headers stream is read (and dropped) to notice it hang up.
const DRAIN_LIMIT: u64 = 64 * 1024 * 1024;

/// `endless_headers`, written on the bare socket: the status line and the usual headers, then a new
/// header line every `interval`, never the blank line that ends the head, until `limit` bytes are
/// written (then the connection is closed) or the client hangs up.
pub(crate) struct RawAnswer {
    head: Vec<u8>,
    interval: Duration,
    limit: u64,
}

impl RawAnswer {
    pub(crate) async fn run(self, stream: TcpStream) {
        let (mut reader, mut writer) = stream.into_split();
        tokio::select! {
            () = hung_up(&mut reader) => {}
            () = self.write(&mut writer) => {}
        }
    }

    async fn write(self, writer: &mut OwnedWriteHalf) {
        let head_len =
            usize::try_from(self.limit).map_or(self.head.len(), |l| l.min(self.head.len()));
        if writer.write_all(&self.head[..head_len]).await.is_err() {
            return;
        }
        let mut written = head_len as u64;
        // Every line is longer than this, so the count bounds the loop as `limit` does.
        const SHORTEST_LINE: u64 = 16;
        let lines = self.limit.saturating_sub(written).div_ceil(SHORTEST_LINE);
        for n in 0..lines {
            if written >= self.limit {
                break;
            }
            if self.interval.is_zero() {
                tokio::task::yield_now().await;
            } else {
                tokio::time::sleep(self.interval).await;
            }
            let line = format!("x-ballast-sim-hostile-{n}: endless headers\r\n");
            let left = usize::try_from(self.limit - written).unwrap_or(usize::MAX);
            let line = &line.as_bytes()[..line.len().min(left)];
            if writer.write_all(line).await.is_err() {
                return;
            }
            written += line.len() as u64;
        }
    }
}

/// Returns when the client closes its side (or the socket fails); reads and drops what it sends, at
/// most [`DRAIN_LIMIT`] bytes, then only waits.
async fn hung_up(reader: &mut OwnedReadHalf) {
    let mut buf = [0u8; 8192];
    let mut read = 0u64;
    while read < DRAIN_LIMIT {
        match reader.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => read += n as u64,
        }
    }
    std::future::pending::<()>().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn hostile(mode: HostileMode) -> Hostile {
        Hostile {
            mode,
            bytes: 10,
            interval: Duration::ZERO,
            depth: 3,
            count: 2,
        }
    }

    async fn collect(parts: VecDeque<Part>) -> Vec<u8> {
        let mut g = Generator {
            parts,
            started: false,
            pacing: Pacing::default(),
        };
        let mut out = Vec::new();
        for _ in 0..10_000 {
            match g.next().await {
                Some(b) => out.extend_from_slice(&b),
                None => break,
            }
        }
        out
    }

    #[tokio::test]
    async fn markers_expand_whole_strings_and_drop_embedded_ones() {
        let h = hostile(HostileMode::DeepNesting);
        let text = format!(
            r#"{{"a":"{MARK_NEST_ARRAY}","b":"{MARK_NEST_OBJECT}","c":"x{MARK_NEST_ARRAY}y","d":"{MARK_FILL}","e":"{MARK_NEST_OPEN}"}}"#
        );
        let mut parts = VecDeque::new();
        expand(text.as_bytes(), true, &h, &mut parts);
        assert!(matches!(
            parts.front(),
            Some(Part::Bytes { token: true, .. })
        ));
        let out = collect(parts).await;
        assert_eq!(
            String::from_utf8(out).unwrap(),
            r#"{"a":[[[]]],"b":{"a":{"a":{"a":0}}},"c":"xy","d":"hostile ho","e":{"a":{"a":{"a":}"#
        );
    }

    #[tokio::test]
    async fn invalid_utf8_reaches_event_names_and_strings() {
        let h = hostile(HostileMode::InvalidUtf8);
        let frame = format!("event: ping\ndata: {{\"id\":\"m{MARK_INVALID}\"}}\n\n");
        let mut parts = VecDeque::new();
        expand(frame.as_bytes(), false, &h, &mut parts);
        let out = collect(parts).await;
        let mut expected = b"event: ping".to_vec();
        expected.extend_from_slice(INVALID_UTF8);
        expected.extend_from_slice(b"\ndata: {\"id\":\"m");
        expected.extend_from_slice(INVALID_UTF8);
        expected.extend_from_slice(b"\"}\n\n");
        assert_eq!(out, expected);
    }

    #[test]
    fn enlarge_rewrites_indexes_sequences_and_usage() {
        let mut v = json!({
            "index": 0, "sequence_number": 3,
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0}]}}],
            "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3,
                      "prompt_tokens_details": {"cached_tokens": 0}}
        });
        enlarge(&mut v);
        assert_eq!(v["index"], json!(HUGE_INDEX));
        assert_eq!(v["sequence_number"], json!(HUGE_INDEX + 3));
        assert_eq!(
            v["choices"][0]["delta"]["tool_calls"][0]["index"],
            json!(HUGE_INDEX)
        );
        assert_eq!(v["usage"]["prompt_tokens"], json!(u64::MAX));
        assert_eq!(v["usage"]["completion_tokens"], json!(i64::MAX));
        assert_eq!(v["usage"]["total_tokens"], json!(-1));
        assert_eq!(
            v["usage"]["prompt_tokens_details"]["cached_tokens"],
            json!(i64::MIN)
        );
    }

    #[test]
    fn map_json_keeps_framing() {
        let frame = Bytes::from_static(b",\r\n{\"index\":0}]");
        assert_eq!(
            map_json(&frame, enlarge),
            Bytes::from(format!(",\r\n{{\"index\":{HUGE_INDEX}}}]"))
        );
        let done = Bytes::from_static(b"data: [DONE]\n\n");
        assert_eq!(map_json(&done, enlarge), done);
    }

    #[tokio::test]
    async fn runs_are_chunked_and_exact() {
        let len = (CHUNK as u64) * 2 + 7;
        let mut parts = VecDeque::new();
        parts.push_back(Part::run(&FILL, len));
        let mut g = Generator {
            parts,
            started: false,
            pacing: Pacing::default(),
        };
        let mut total = 0u64;
        let mut chunks = 0;
        while let Some(b) = g.next().await {
            assert!(b.len() <= CHUNK);
            assert!(!b.contains(&b'\n') && !b.contains(&b'"'));
            total += b.len() as u64;
            chunks += 1;
        }
        assert_eq!((total, chunks), (len, 3));
    }
}
