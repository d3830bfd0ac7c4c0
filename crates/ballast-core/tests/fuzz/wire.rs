//! Generators: arbitrary bytes, hostile JSON pieces, and near-valid request bodies, answers and SSE
//! streams of each wire format, built from realistic templates and then damaged on purpose.

use std::fmt;

use ballast_core::api::ApiFormat;
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use serde_json::{Value, json};

pub const FORMATS: [ApiFormat; 4] = [
    ApiFormat::OpenAiChat,
    ApiFormat::AnthropicMessages,
    ApiFormat::Gemini,
    ApiFormat::OpenAiResponses,
];

pub fn format() -> impl Strategy<Value = ApiFormat> {
    select(FORMATS.to_vec())
}

/// Bytes, shown as escaped text and as hex when a case fails.
#[derive(Clone, PartialEq, Eq)]
pub struct Bytes(pub Vec<u8>);

impl fmt::Debug for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const HEX: &[u8; 16] = b"0123456789abcdef";
        let mut text = String::with_capacity(self.0.len() * 2 + 64);
        text.push_str(&format!("{} bytes b\"", self.0.len()));
        text.extend(
            self.0
                .iter()
                .flat_map(|&b| std::ascii::escape_default(b))
                .map(char::from),
        );
        text.push_str("\" hex ");
        for &b in &self.0 {
            text.push(char::from(HEX[usize::from(b >> 4)]));
            text.push(char::from(HEX[usize::from(b & 15)]));
        }
        f.write_str(&text)
    }
}

/// Anything, mostly short; often from a JSON-and-SSE alphabet so parsers get past their first byte.
pub fn arbitrary_bytes() -> impl Strategy<Value = Bytes> {
    let alphabet: Vec<u8> =
        b"{}[]\":,0123456789-+.eE \\/ntrufalsu\r\n:dataevent\xff\xc3\x80\xe2\x82".to_vec();
    prop_oneof![
        3 => vec(any::<u8>(), 0..256),
        1 => vec(any::<u8>(), 0..4096),
        4 => vec(select(alphabet), 0..512),
    ]
    .prop_map(Bytes)
}

// ---------------------------------------------------------------------------------------------------
// Hostile pieces.

/// A number as JSON text: small ones mostly, and every kind of edge (negative, past `u32`/`u64`,
/// huge floats, fractions, overflowing exponents).
pub fn number() -> BoxedStrategy<String> {
    prop_oneof![
        4 => (0u64..4).prop_map(|n| n.to_string()),
        3 => select(vec![
            "-1",
            "4294967295",
            "4294967296",
            "18446744073709551615",
            "18446744073709551616",
            "9223372036854775807",
            "-9223372036854775808",
            "1000000000000000",
            "1e15",
            "1e300",
            "-1e300",
            "1e999",
            "0.5",
            "2.0",
            "-0",
            "1E2",
            "5e-324",
        ])
        .prop_map(str::to_owned),
        1 => any::<u64>().prop_map(|n| n.to_string()),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(|x| format!("{x:e}")),
    ]
    .boxed()
}

/// Text for a string field: ordinary, unicode, control characters and quotes, or a kilobyte.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        12 => "[a-zA-Z0-9 {}\":,.]{0,12}",
        4 => "\\PC{0,8}",
        2 => "[\\x00-\\x1f\"\\\\]{0,8}",
        1 => Just("x".repeat(1 << 10)),
    ]
    .boxed()
}

/// [`text`], or (rarely: they are slow to push through everything) past 64 KiB or a megabyte:
/// events may be 8 MiB, answers larger.
pub fn text_or_huge() -> BoxedStrategy<String> {
    prop_oneof![
        400 => text(),
        4 => Just("y".repeat(70 << 10)),
        1 => Just("z".repeat(1 << 20)),
    ]
    .boxed()
}

/// Nesting `depth` deep, as JSON text.
fn nested(depth: usize, objects: bool) -> String {
    if objects {
        format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth))
    } else {
        format!("{}{}", "[".repeat(depth), "]".repeat(depth))
    }
}

/// Raw JSON text (not always valid) to put in place of a value: hostile numbers, huge or broken
/// strings, deep nesting, values of the wrong type.
pub fn raw_value() -> BoxedStrategy<String> {
    prop_oneof![
        4 => number(),
        2 => text().prop_map(|t| Value::String(t).to_string()),
        1 => (select(vec![2usize, 127, 128, 129, 1000, 20_000]), any::<bool>())
            .prop_map(|(d, o)| nested(d, o)),
        3 => select(vec![
            "{}", "[]", "true", "false", "null", "\"\"", "\"7\"", "[1,2]", "{\"a\":1}",
            "[null]", "{\"type\":null}",
        ])
        .prop_map(str::to_owned),
        1 => select(vec![
            "\"\\ud800\"",
            "\"\\udc00x\"",
            "\"\\u0000\"",
            "\"unterminated",
            "tru",
            "01",
            "1.",
            "--1",
            "{\"a\":}",
            "[1,]",
        ])
        .prop_map(str::to_owned),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------------
// Mutations.

/// A change to a JSON document: the `n`th number (or node of any kind) replaced by raw text.
#[derive(Clone, Debug)]
pub enum Mutation {
    Number(usize, String),
    Node(usize, String),
}

/// A change to the bytes: invalid UTF-8 or arbitrary bytes inserted, the end cut, a slice
/// repeated. Positions are taken modulo the length.
#[derive(Clone, Debug)]
pub enum ByteMutation {
    Insert(usize, Vec<u8>),
    Truncate(usize),
    Repeat(usize, usize),
}

pub fn mutations() -> BoxedStrategy<Vec<Mutation>> {
    prop_oneof![
        // Most documents stay valid, so the deeper paths are reached too.
        3 => Just(Vec::new()),
        2 => vec(
            prop_oneof![
                3 => (any::<usize>(), number()).prop_map(|(n, r)| Mutation::Number(n, r)),
                2 => (any::<usize>(), raw_value()).prop_map(|(n, r)| Mutation::Node(n, r)),
            ],
            1..4,
        ),
    ]
    .boxed()
}

pub fn byte_mutations() -> BoxedStrategy<Vec<ByteMutation>> {
    let inserted = prop_oneof![
        select(vec![
            b"\xff".to_vec(),
            b"\xc3".to_vec(),
            b"\xe2\x82".to_vec(),
            b"\xf0\x9f\x98".to_vec(),
            b"\xed\xa0\x80".to_vec(),
            b"\r".to_vec(),
            b"\n".to_vec(),
            b"\n\n".to_vec(),
            b":".to_vec(),
            b"\0".to_vec(),
        ]),
        vec(any::<u8>(), 1..8),
    ];
    prop_oneof![
        4 => Just(Vec::new()),
        1 => vec(
            prop_oneof![
                3 => (any::<usize>(), inserted).prop_map(|(p, b)| ByteMutation::Insert(p, b)),
                1 => any::<usize>().prop_map(ByteMutation::Truncate),
                1 => (any::<usize>(), 1usize..64).prop_map(|(p, n)| ByteMutation::Repeat(p, n)),
            ],
            1..4,
        ),
    ]
    .boxed()
}

const RAW: &str = "__ballast_fuzz_raw_";

/// `v` serialised with `mutations` applied.
pub fn mutate(mut v: Value, mutations: &[Mutation]) -> String {
    let mut raws = Vec::new();
    for m in mutations {
        let (n, raw, numbers_only) = match m {
            Mutation::Number(n, raw) => (*n, raw, true),
            Mutation::Node(n, raw) => (*n, raw, false),
        };
        let count = count_nodes(&v, numbers_only);
        if count == 0 {
            continue;
        }
        let mut target = n % count;
        let placeholder = Value::String(format!("{RAW}{}", raws.len()));
        replace_node(&mut v, &mut target, numbers_only, &placeholder);
        raws.push(raw.clone());
    }
    let mut s = v.to_string();
    for (i, raw) in raws.iter().enumerate() {
        s = s.replace(&format!("\"{RAW}{i}\""), raw);
    }
    s
}

fn count_nodes(v: &Value, numbers_only: bool) -> usize {
    let here = usize::from(!numbers_only || v.is_number());
    here + match v {
        Value::Array(a) => a.iter().map(|c| count_nodes(c, numbers_only)).sum(),
        Value::Object(o) => o.values().map(|c| count_nodes(c, numbers_only)).sum(),
        _ => 0,
    }
}

/// Replaces the `target`th counted node; returns true once done.
fn replace_node(v: &mut Value, target: &mut usize, numbers_only: bool, with: &Value) -> bool {
    if !numbers_only || v.is_number() {
        if *target == 0 {
            *v = with.clone();
            return true;
        }
        *target -= 1;
    }
    match v {
        Value::Array(a) => a
            .iter_mut()
            .any(|c| replace_node(c, target, numbers_only, with)),
        Value::Object(o) => o
            .values_mut()
            .any(|c| replace_node(c, target, numbers_only, with)),
        _ => false,
    }
}

pub fn apply_bytes(mut b: Vec<u8>, mutations: &[ByteMutation]) -> Vec<u8> {
    for m in mutations {
        let at = |p: usize, len: usize| if len == 0 { 0 } else { p % (len + 1) };
        match m {
            ByteMutation::Insert(p, bytes) => {
                let p = at(*p, b.len());
                b.splice(p..p, bytes.iter().copied());
            }
            ByteMutation::Truncate(p) => {
                let p = at(*p, b.len());
                b.truncate(p);
            }
            ByteMutation::Repeat(p, n) => {
                let p = at(*p, b.len());
                let end = (p + n).min(b.len());
                let slice = b[p..end].to_vec();
                b.splice(end..end, slice);
            }
        }
    }
    b
}

// ---------------------------------------------------------------------------------------------------
// Request bodies and complete answers.

/// The parameters a body template is filled with.
#[derive(Clone, Debug)]
pub struct Fill {
    pub texts: [String; 3],
    pub numbers: [u64; 3],
    pub pick: u8,
}

fn fill() -> impl Strategy<Value = Fill> {
    (
        [text_or_huge(), text(), text()],
        (0u64..5, 0u64..5, any::<u64>()),
        any::<u8>(),
    )
        .prop_map(|(texts, (a, b, c), pick)| Fill {
            texts,
            numbers: [a, b, c],
            pick,
        })
}

/// A near-valid JSON body: a template, filled, mutated, then damaged at the byte level.
#[derive(Clone, Debug)]
pub struct BodyCase {
    pub format: ApiFormat,
    pub fill: Fill,
    pub mutations: Vec<Mutation>,
    pub bytes: Vec<ByteMutation>,
}

impl BodyCase {
    /// Whether the body is exactly a template (no damage): such a body must decode.
    pub fn pristine(&self) -> bool {
        self.mutations.is_empty() && self.bytes.is_empty()
    }
}

pub fn body_case() -> impl Strategy<Value = BodyCase> {
    (format(), fill(), mutations(), byte_mutations()).prop_map(
        |(format, fill, mutations, bytes)| BodyCase {
            format,
            fill,
            mutations,
            bytes,
        },
    )
}

impl BodyCase {
    pub fn request(&self) -> Vec<u8> {
        let v = request_template(self.format, &self.fill);
        apply_bytes(mutate(v, &self.mutations).into_bytes(), &self.bytes)
    }

    pub fn response(&self) -> Vec<u8> {
        let v = response_template(self.format, &self.fill);
        apply_bytes(mutate(v, &self.mutations).into_bytes(), &self.bytes)
    }

    pub fn error(&self) -> Vec<u8> {
        let [a, b, _] = &self.fill.texts;
        let v = match self.fill.pick % 4 {
            0 => {
                json!({"error": {"message": a, "type": b, "param": null, "code": "invalid_api_key"}})
            }
            1 => {
                json!({"type": "error", "error": {"type": "overloaded_error", "message": a}, "request_id": b})
            }
            2 => {
                json!({"error": {"code": self.fill.numbers[2], "message": a, "status": "RESOURCE_EXHAUSTED"}})
            }
            _ => json!({"error": a, "message": b}),
        };
        apply_bytes(mutate(v, &self.mutations).into_bytes(), &self.bytes)
    }
}

fn schema(f: &Fill) -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string", "description": f.texts[2]},
        "days": {"type": "integer", "minimum": f.numbers[0]}}, "required": ["city"]})
}

fn request_template(format: ApiFormat, f: &Fill) -> Value {
    let [a, b, c] = &f.texts;
    let [n, m, big] = f.numbers;
    let args = json!({"city": c}).to_string();
    match format {
        ApiFormat::OpenAiChat => json!({
            "model": "chat", "stream": f.pick.is_multiple_of(2), "stream_options": {"include_usage": true},
            "max_tokens": n * 100 + 1, "max_completion_tokens": m * 10 + 1, "temperature": 0.5, "top_p": 1,
            "n": 1, "stop": ["END", a], "user": b, "seed": big, "logprobs": false,
            "tools": [{"type": "function", "function": {"name": "get_weather", "description": a, "parameters": schema(f), "strict": true}}],
            "tool_choice": if f.pick.is_multiple_of(3) { json!("auto") } else { json!({"type": "function", "function": {"name": "get_weather"}}) },
            "response_format": {"type": "json_schema", "json_schema": {"name": "r", "schema": schema(f), "strict": true}},
            "messages": [
                {"role": "system", "content": a},
                {"role": "developer", "content": [{"type": "text", "text": b}]},
                {"role": "user", "content": [{"type": "text", "text": c},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}}]},
                {"role": "assistant", "content": a, "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}}]},
                {"role": "tool", "tool_call_id": "call_1", "content": b},
                {"role": "user", "content": c},
            ],
        }),
        ApiFormat::AnthropicMessages => json!({
            "model": "claude", "max_tokens": n * 100 + 1, "stream": f.pick.is_multiple_of(2), "temperature": 1.5,
            "top_k": m, "stop_sequences": [a], "metadata": {"user_id": b},
            "system": [{"type": "text", "text": a, "cache_control": {"type": "ephemeral"}}],
            "tools": [{"name": "get_weather", "description": b, "input_schema": schema(f)}],
            "tool_choice": {"type": "auto", "disable_parallel_tool_use": f.pick.is_multiple_of(2)},
            "output_config": {"format": {"type": "json_schema", "schema": schema(f)}},
            "messages": [
                {"role": "user", "content": [{"type": "text", "text": c},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                    {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": a, "signature": "s"},
                    {"type": "text", "text": b},
                    {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": c}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                    "content": [{"type": "text", "text": a}], "is_error": f.pick.is_multiple_of(5)}]},
            ],
        }),
        ApiFormat::Gemini => json!({
            "contents": [
                {"role": "user", "parts": [{"text": a}, {"inlineData": {"mimeType": "image/png", "data": "iVBORw0KGgo="}}]},
                {"role": "model", "parts": [{"text": b, "thought": true}, {"functionCall": {"name": "get_weather", "args": {"city": c}}},
                    {"functionCall": {"id": "x", "name": "get_time", "args": {}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"output": a}}},
                    {"functionResponse": {"id": "x", "name": "get_time", "response": {"error": b}}}]},
            ],
            "systemInstruction": {"parts": [{"text": c}]},
            "tools": [{"functionDeclarations": [{"name": "get_weather", "description": a,
                "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}}}]}, {"googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["get_weather"]}},
            "generationConfig": {"maxOutputTokens": n * 100 + 1, "temperature": 0.2, "topP": 0.9, "topK": m as f64 + 0.5,
                "stopSequences": [a], "candidateCount": 1, "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT"}, "seed": big},
        }),
        ApiFormat::OpenAiResponses => json!({
            "model": "resp", "stream": f.pick.is_multiple_of(2), "instructions": a, "max_output_tokens": n * 100 + 1,
            "temperature": 0.5, "top_p": 1, "store": false, "include": ["reasoning.encrypted_content"],
            "parallel_tool_calls": true, "user": b, "truncation": "auto", "top_logprobs": m,
            "text": {"format": {"type": "json_schema", "name": "r", "schema": schema(f), "strict": true}, "verbosity": "low"},
            "tools": [
                {"type": "function", "name": "get_weather", "description": a, "parameters": schema(f), "strict": false},
                {"type": "namespace", "name": "crm", "description": b, "tools": [{"type": "function", "name": "lookup", "parameters": schema(f)}]},
                {"type": "custom", "name": "free"},
            ],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "input": [
                {"role": "developer", "content": b},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": c},
                    {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgo=", "detail": "auto"}]},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": a}]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": args},
                {"type": "function_call", "call_id": "call_2", "namespace": "crm", "name": "lookup", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": b},
                {"type": "function_call_output", "call_id": "call_2", "output": [{"type": "input_text", "text": c}]},
            ],
        }),
    }
}

/// One of `options`, chosen by the fill.
fn pick(f: &Fill, options: &[&'static str]) -> &'static str {
    options[usize::from(f.pick) % options.len()]
}

fn response_template(format: ApiFormat, f: &Fill) -> Value {
    let [a, b, c] = &f.texts;
    let [n, m, big] = f.numbers;
    let args = json!({"city": c}).to_string();
    match format {
        ApiFormat::OpenAiChat => json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": big, "model": "gpt",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": a, "refusal": null,
                "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": args}},
                    {"id": "", "type": "function", "function": {"name": b, "arguments": {"raw": true}}}]},
                "logprobs": null, "finish_reason": pick(f, &["stop", "length", "tool_calls", "content_filter"])}],
            "usage": {"prompt_tokens": n, "completion_tokens": m, "total_tokens": n + m,
                "prompt_tokens_details": {"cached_tokens": n}, "completion_tokens_details": {"reasoning_tokens": big}},
        }),
        ApiFormat::AnthropicMessages => json!({
            "id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
            "content": [{"type": "thinking", "thinking": c, "signature": "s"}, {"type": "text", "text": a},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": c}},
                {"type": "tool_use", "id": "", "name": b, "input": null}],
            "stop_reason": pick(f, &["end_turn", "max_tokens", "tool_use", "stop_sequence", "pause_turn"]),
            "stop_sequence": b,
            "usage": {"input_tokens": n, "output_tokens": m, "cache_read_input_tokens": big, "cache_creation_input_tokens": n},
        }),
        ApiFormat::Gemini => json!({
            "candidates": [{"content": {"role": "model", "parts": [{"text": c, "thought": true}, {"text": a},
                {"functionCall": {"name": "get_weather", "args": {"city": c}}}, {"functionCall": {"id": b, "name": "f"}}]},
                "finishReason": pick(f, &["STOP", "MAX_TOKENS", "SAFETY", "MALFORMED_FUNCTION_CALL"]), "index": 0}],
            "usageMetadata": {"promptTokenCount": n, "candidatesTokenCount": m, "thoughtsTokenCount": big,
                "cachedContentTokenCount": n, "toolUsePromptTokenCount": m, "totalTokenCount": big},
            "modelVersion": "gemini", "responseId": b,
            "promptFeedback": {"blockReason": "SAFETY"},
        }),
        ApiFormat::OpenAiResponses => json!({
            "id": "resp_1", "object": "response", "created_at": big as f64 / 3.0, "status": pick(f, &["completed", "incomplete", "in_progress"]),
            "model": "gpt", "incomplete_details": {"reason": "max_output_tokens"},
            "output": [
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"type": "message", "id": "msg_1", "role": "assistant", "status": "completed",
                    "content": [{"type": "output_text", "text": a, "annotations": []}, {"type": "refusal", "refusal": b}]},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather", "arguments": args, "status": "completed"},
                {"type": "function_call", "id": "fc_2", "call_id": "", "namespace": "crm", "name": "lookup", "arguments": ""},
            ],
            "usage": {"input_tokens": n, "input_tokens_details": {"cached_tokens": m, "cache_write_tokens": n},
                "output_tokens": big, "output_tokens_details": {"reasoning_tokens": m}, "total_tokens": big},
        }),
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams.

/// One event of a generated stream: which template, a small index and a text to fill it with, and
/// mutations.
#[derive(Clone, Debug)]
pub struct EventSpec {
    pub kind: u8,
    pub index: u8,
    pub text: String,
    pub mutations: Vec<Mutation>,
}

/// A provider stream: a start, content events, an end (normal, cut short, or an error), rendered
/// with some line-ending style, then maybe damaged at the byte level.
#[derive(Clone, Debug)]
pub struct StreamCase {
    pub format: ApiFormat,
    pub start: bool,
    pub events: Vec<EventSpec>,
    /// 0: cut (no end), 1, 2: normal end, 3: an error event.
    pub end: u8,
    pub end_mutations: Vec<Mutation>,
    /// 0: `\n`, 1: `\r\n`, 2: `\r`, 3: mixed, line by line.
    pub endings: u8,
    /// Comment lines between events; JSON pretty-printed over several `data:` lines.
    pub comments: bool,
    pub multiline: bool,
    pub bytes: Vec<ByteMutation>,
}

impl StreamCase {
    /// No mutation of any kind: every event is well-formed.
    pub fn pristine(&self) -> bool {
        self.bytes.is_empty()
            && self.end_mutations.is_empty()
            && self.events.iter().all(|e| e.mutations.is_empty())
    }
}

fn event_spec() -> impl Strategy<Value = EventSpec> {
    (
        any::<u8>(),
        prop_oneof![4 => 0u8..3, 1 => any::<u8>()],
        text_or_huge(),
        prop_oneof![4 => Just(Vec::new()), 1 => mutations()],
    )
        .prop_map(|(kind, index, text, mutations)| EventSpec {
            kind,
            index,
            text,
            mutations,
        })
}

pub fn stream_case_of(
    format: impl Strategy<Value = ApiFormat>,
) -> impl Strategy<Value = StreamCase> {
    (
        format,
        prop_oneof![5 => Just(true), 1 => Just(false)],
        vec(event_spec(), 0..16),
        0u8..4,
        prop_oneof![4 => Just(Vec::new()), 1 => mutations()],
        0u8..4,
        any::<(bool, bool)>(),
        byte_mutations(),
    )
        .prop_map(
            |(format, start, events, end, end_mutations, endings, (comments, multiline), bytes)| {
                StreamCase {
                    format,
                    start,
                    events,
                    end,
                    end_mutations,
                    endings,
                    comments,
                    multiline,
                    bytes,
                }
            },
        )
}

pub fn stream_case() -> impl Strategy<Value = StreamCase> {
    stream_case_of(format())
}

impl StreamCase {
    /// The stream's SSE bytes.
    pub fn render(&self) -> Vec<u8> {
        let mut events: Vec<(Option<String>, String)> = Vec::new();
        let mut seq = 0u64;
        let mut push = |name: Option<&str>, v: Value, mutations: &[Mutation], seq: &mut u64| {
            let v = match v {
                Value::Object(mut o) if self.format == ApiFormat::OpenAiResponses => {
                    o.insert("sequence_number".into(), json!(*seq));
                    *seq += 1;
                    Value::Object(o)
                }
                v => v,
            };
            let name = name.map(str::to_owned).or_else(|| {
                (matches!(
                    self.format,
                    ApiFormat::AnthropicMessages | ApiFormat::OpenAiResponses
                ))
                .then(|| v["type"].as_str().unwrap_or("").to_owned())
            });
            let data = if self.multiline && mutations.is_empty() {
                serde_json::to_string_pretty(&v).unwrap()
            } else {
                mutate(v, mutations)
            };
            events.push((name, data));
        };
        if self.start {
            for v in start_events(self.format) {
                push(None, v, &[], &mut seq);
            }
        }
        for e in &self.events {
            let v = stream_event(self.format, e);
            push(None, v, &e.mutations, &mut seq);
        }
        match self.end {
            0 => {}
            3 => {
                for v in error_events(self.format) {
                    push(None, v, &self.end_mutations, &mut seq);
                }
            }
            _ => {
                for v in end_events(self.format) {
                    push(None, v, &self.end_mutations, &mut seq);
                }
                if self.format == ApiFormat::OpenAiChat {
                    events.push((None, "[DONE]".to_owned()));
                }
            }
        }
        let mut out = Vec::new();
        for (k, (name, data)) in events.iter().enumerate() {
            // Mixed endings change per event: a `\r` line end followed by an empty line ended by
            // `\n` would be one `\r\n`, a different stream.
            let ending: &[u8] = match (self.endings, k % 3) {
                (0, _) | (3, 0) => b"\n",
                (1, _) | (3, 1) => b"\r\n",
                _ => b"\r",
            };
            let line = |out: &mut Vec<u8>, text: &str| {
                out.extend_from_slice(text.as_bytes());
                out.extend_from_slice(ending);
            };
            if self.comments {
                line(&mut out, ": keep-alive");
            }
            if let Some(name) = name {
                line(&mut out, &format!("event: {name}"));
            }
            for l in data.split('\n') {
                line(&mut out, &format!("data: {l}"));
            }
            line(&mut out, "");
        }
        apply_bytes(out, &self.bytes)
    }
}

fn start_events(format: ApiFormat) -> Vec<Value> {
    match format {
        ApiFormat::OpenAiChat => vec![
            json!({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "logprobs": null, "finish_reason": null}]}),
        ],
        ApiFormat::AnthropicMessages => vec![
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude",
                "content": [], "stop_reason": null, "stop_sequence": null,
                "usage": {"input_tokens": 12, "output_tokens": 1, "cache_read_input_tokens": 3}}}),
            json!({"type": "ping"}),
        ],
        ApiFormat::Gemini => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Hi"}]}, "index": 0}],
                "modelVersion": "gemini", "responseId": "r1"}),
        ],
        ApiFormat::OpenAiResponses => vec![
            json!({"type": "response.created", "response": {"id": "resp_1", "object": "response", "status": "in_progress",
                "model": "gpt", "output": [], "usage": null}}),
            json!({"type": "response.in_progress", "response": {"id": "resp_1", "status": "in_progress", "output": []}}),
        ],
    }
}

fn stream_event(format: ApiFormat, e: &EventSpec) -> Value {
    let i = e.index;
    let t = &e.text;
    match format {
        ApiFormat::OpenAiChat => {
            let delta = match e.kind % 7 {
                0 => json!({"content": t}),
                1 => {
                    json!({"tool_calls": [{"index": i, "id": format!("call_{i}"), "type": "function",
                    "function": {"name": "get_weather", "arguments": ""}}]})
                }
                2 => json!({"tool_calls": [{"index": i, "function": {"arguments": t}}]}),
                3 => json!({"refusal": t}),
                4 => {
                    return json!({"id": "chatcmpl-1", "choices": [], "usage": {"prompt_tokens": i, "completion_tokens": 2,
                        "prompt_tokens_details": {"cached_tokens": 1}, "completion_tokens_details": {"reasoning_tokens": 0}}});
                }
                5 => {
                    json!({"tool_calls": [{"index": i, "id": "", "function": {"name": t, "arguments": "{}"}},
                    {"index": i.wrapping_add(1), "function": {"arguments": t}}]})
                }
                _ => json!({}),
            };
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": null}]})
        }
        ApiFormat::AnthropicMessages => match e.kind % 8 {
            0 => {
                json!({"type": "content_block_start", "index": i, "content_block": {"type": "text", "text": ""}})
            }
            1 => {
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "text_delta", "text": t}})
            }
            2 => json!({"type": "content_block_start", "index": i,
                "content_block": {"type": "tool_use", "id": format!("toolu_{i}"), "name": "get_weather", "input": {}}}),
            3 => {
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "input_json_delta", "partial_json": t}})
            }
            4 => json!({"type": "content_block_stop", "index": i}),
            5 => json!({"type": "ping"}),
            6 => {
                json!({"type": "message_delta", "delta": {"stop_reason": null}, "usage": {"output_tokens": i}})
            }
            _ => {
                json!({"type": "content_block_delta", "index": i, "delta": {"type": "thinking_delta", "thinking": t}})
            }
        },
        ApiFormat::Gemini => {
            let part = match e.kind % 6 {
                0 => json!([{"text": t}]),
                1 => json!([{"functionCall": {"name": "get_weather", "args": {"city": t}}}]),
                2 => json!([{"text": t, "thought": true}]),
                3 => {
                    return json!({"usageMetadata": {"promptTokenCount": i, "candidatesTokenCount": 2, "thoughtsTokenCount": 1},
                        "modelVersion": "gemini", "responseId": "r1"});
                }
                4 => {
                    json!([{"text": t}, {"functionCall": {"id": format!("c{i}"), "name": t, "args": {}}}, {"text": ""}])
                }
                _ => json!([{"executableCode": {"code": t}}]),
            };
            json!({"candidates": [{"content": {"role": "model", "parts": part}, "index": 0}],
                "modelVersion": "gemini", "responseId": "r1"})
        }
        ApiFormat::OpenAiResponses => {
            let item_id = format!("item_{i}");
            match e.kind % 10 {
                0 => json!({"type": "response.output_item.added", "output_index": i,
                    "item": {"type": "message", "id": item_id, "status": "in_progress", "role": "assistant", "content": []}}),
                1 => {
                    json!({"type": "response.content_part.added", "item_id": item_id, "output_index": i, "content_index": 0,
                    "part": {"type": "output_text", "text": "", "annotations": []}})
                }
                2 => {
                    json!({"type": "response.output_text.delta", "item_id": item_id, "output_index": i, "content_index": 0,
                    "delta": t, "logprobs": []})
                }
                3 => {
                    json!({"type": "response.output_text.done", "item_id": item_id, "output_index": i, "content_index": 0,
                    "text": t, "logprobs": []})
                }
                4 => json!({"type": "response.output_item.added", "output_index": i,
                    "item": {"type": "function_call", "id": item_id, "call_id": format!("call_{i}"), "name": "get_weather",
                        "arguments": "", "status": "in_progress"}}),
                5 => {
                    json!({"type": "response.function_call_arguments.delta", "item_id": item_id, "output_index": i, "delta": t})
                }
                6 => {
                    json!({"type": "response.function_call_arguments.done", "item_id": item_id, "output_index": i, "arguments": t})
                }
                7 => json!({"type": "response.output_item.done", "output_index": i,
                    "item": {"type": "function_call", "id": item_id, "call_id": format!("call_{i}"), "namespace": "crm",
                        "name": "lookup", "arguments": t, "status": "completed"}}),
                8 => json!({"type": "response.output_item.done", "output_index": i,
                    "item": {"type": "message", "id": item_id, "role": "assistant", "status": "completed",
                        "content": [{"type": "output_text", "text": t, "annotations": []}]}}),
                _ => json!({"type": "response.output_item.added", "output_index": i,
                    "item": {"type": "reasoning", "id": item_id, "summary": []}}),
            }
        }
    }
}

fn end_events(format: ApiFormat) -> Vec<Value> {
    match format {
        ApiFormat::OpenAiChat => vec![
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt",
                "choices": [{"index": 0, "delta": {}, "logprobs": null, "finish_reason": "tool_calls"}]}),
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt", "choices": [],
                "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30,
                    "prompt_tokens_details": {"cached_tokens": 5}}}),
        ],
        ApiFormat::AnthropicMessages => vec![
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null},
                "usage": {"output_tokens": 10}}),
            json!({"type": "message_stop"}),
        ],
        ApiFormat::Gemini => vec![
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": ""}]}, "finishReason": "STOP", "index": 0}],
                "usageMetadata": {"promptTokenCount": 20, "candidatesTokenCount": 10, "totalTokenCount": 30},
                "modelVersion": "gemini", "responseId": "r1"}),
        ],
        ApiFormat::OpenAiResponses => vec![json!({"type": "response.completed",
            "response": {"id": "resp_1", "object": "response", "status": "completed", "model": "gpt",
                "output": [{"type": "message"}], "incomplete_details": null,
                "usage": {"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 10,
                    "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 30}}})],
    }
}

fn error_events(format: ApiFormat) -> Vec<Value> {
    match format {
        ApiFormat::OpenAiChat => {
            vec![json!({"error": {"message": "boom", "type": "server_error", "code": null}})]
        }
        ApiFormat::AnthropicMessages => vec![
            json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ],
        ApiFormat::Gemini => {
            vec![json!({"error": {"code": 503, "message": "overloaded", "status": "UNAVAILABLE"}})]
        }
        ApiFormat::OpenAiResponses => vec![
            json!({"type": "error", "code": "server_error", "message": "boom", "param": null}),
            json!({"type": "response.failed", "response": {"id": "resp_1", "status": "failed", "output": [],
                "error": {"code": "server_error", "message": "boom"}}}),
        ],
    }
}

/// Chunk sizes to split a byte stream with (cycled); 0 is an empty chunk (the network may deliver
/// those too).
pub fn splits() -> impl Strategy<Value = Vec<usize>> {
    prop_oneof![
        2 => vec(0usize..8, 1..8),
        2 => vec(1usize..200, 1..8),
        1 => vec(1usize..5000, 1..4),
    ]
}

/// `bytes` cut into chunks of the given sizes, cycled (a 0 gives an empty chunk, at most one in a
/// row).
pub fn chunks<'a>(bytes: &'a [u8], sizes: &[usize]) -> Vec<&'a [u8]> {
    let mut out: Vec<&[u8]> = Vec::new();
    let mut rest = bytes;
    let mut k = 0;
    while !rest.is_empty() {
        let size = sizes.get(k % sizes.len().max(1)).copied().unwrap_or(1);
        k += 1;
        if size == 0 {
            if out.last().is_some_and(|c| !c.is_empty()) {
                out.push(&[]);
            }
            if sizes.iter().all(|&s| s == 0) {
                // Nothing else would make progress.
                out.push(rest);
                break;
            }
            continue;
        }
        let (head, tail) = rest.split_at(size.min(rest.len()));
        out.push(head);
        rest = tail;
    }
    out
}
