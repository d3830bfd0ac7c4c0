//! OpenAI Responses ⇄ canonical: requests (`POST /v1/responses`), `response` objects and the named `response.*` event stream.
//!
//! Decoding: `instructions` and `system`/`developer` message items become system segments (in that
//! order); `message` items become user/assistant messages; `function_call` items join the assistant
//! message before them and `function_call_output` items the user turn after (a result whose call id
//! matches no call is kept as is — Anthropic targets reject it, as they would from any client);
//! `reasoning` items are dropped with a warning (no other provider can use them). Functions nested in a
//! `namespace` tool are flattened to `{namespace}__{name}` — characters outside `[A-Za-z0-9_-]` become
//! `_`, and a name longer than 64 characters or already taken is cut and given an 8-hex-digit hash
//! suffix — and the table of flat names ([`ChatRequest::namespaced_tools`]) gives answers for a
//! Responses client their namespace and name back. Built-in tools (anything but `function`,
//! `namespace` and `custom`) are kept in [`ChatRequest::builtin_tools`]: only a Responses target can
//! serve them. `custom` (free-form) tools are dropped with a warning; history items of built-in or
//! custom tools, `item_reference` and `compaction` items cannot be translated (`Unsupported`).
//! `store`, `include`, `metadata`, `prompt_cache_key`, `prompt_cache_retention`, `client_metadata`
//! and `stream_options` mean nothing to a stateless translated call and are ignored silently;
//! `previous_response_id`, `conversation` and `background: true` need stored state and are refused.
//!
//! Encoding (for an `openai` provider speaking Responses): system segments become leading `system`
//! message items, tool results `function_call_output` items (an error result as `Error: <text>`, as
//! for Chat Completions), `store: false` always, tool `strict` defaults to `false` (Responses would
//! otherwise make compatible schemas strict), `max_output_tokens` is at least 16 (the API's minimum);
//! `stop` and `top_k` have no equivalent and are dropped with a warning.
//!
//! Answers: `completed` → end turn (tool use when a function call was made), `incomplete` with
//! `max_output_tokens` / `content_filter` → max tokens / content filter, `failed` → an upstream error.
//! The event stream keeps what it has sent of each output item (the answer itself, nothing more), as
//! the terminal `response.completed` must carry the whole response object. A mid-stream error is sent
//! as an `error` event carrying both the documented flat fields and the nested `error` object the API
//! actually sends (the `openai` SDK raises on the latter), followed by a terminal `response.failed`
//! (what Codex acts on).

use std::borrow::Cow;
use std::collections::hash_map::Entry;
use std::collections::{BTreeMap, HashMap, HashSet};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::openai_chat::empty_schema;
use super::{
    DataUrl, EncodeOptions, ErrorClass, SamplingParams, StrOrVec, StreamLimits, StreamOptions,
    TranslateError, Warnings, bounded_id, fallback_id, inferred_stop, joined_text, merge_usage,
    norm_args, note_unknown, now_unix, parse_data_url, prefixed_id, to_body, too_many_parts,
    write_sse,
};
use crate::api::ApiFormat;
use crate::continuation::{ResumeItem, ResumePoint};
use crate::model::{
    ChatRequest, ChatResponse, Image, Message, NamespacedTool, Part, ResponseFormat, Role,
    StopReason, StreamEvent, ToolCall, ToolChoice, ToolResult, ToolSpec, Usage,
};
use crate::sse::SseEvent;

const FORMAT: ApiFormat = ApiFormat::OpenAiResponses;

/// Joins a namespace and a function name into the flat canonical name.
pub const NAMESPACE_SEPARATOR: &str = "__";
/// Longest flat name (OpenAI's and Gemini's limit for function names).
const MAX_TOOL_NAME: usize = 64;
/// The API rejects a smaller `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u32 = 16;

// ---------------------------------------------------------------------------------------------------
// Request, inbound.

#[derive(Deserialize)]
struct Request<'a> {
    #[serde(default)]
    model: String,
    #[serde(borrow)]
    input: Option<StrOrVec<InItem<'a>>>,
    instructions: Option<String>,
    tools: Option<Vec<Value>>,
    tool_choice: Option<InToolChoice>,
    parallel_tool_calls: Option<bool>,
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    text: Option<InTextConfig>,
    user: Option<String>,
    safety_identifier: Option<String>,
    stream: Option<bool>,
    previous_response_id: Option<String>,
    conversation: Option<IgnoredAny>,
    background: Option<bool>,
    prompt: Option<IgnoredAny>,
    reasoning: Option<IgnoredAny>,
    truncation: Option<String>,
    top_logprobs: Option<u32>,
    include: Option<Vec<String>>,
    // Meaningless for a stateless, translated call: ignored without a warning.
    store: Option<IgnoredAny>,
    metadata: Option<IgnoredAny>,
    prompt_cache_key: Option<IgnoredAny>,
    prompt_cache_retention: Option<IgnoredAny>,
    client_metadata: Option<IgnoredAny>,
    stream_options: Option<IgnoredAny>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

/// One input item, all shapes flattened; `content` and `output` are parsed once the type is known.
#[derive(Deserialize)]
struct InItem<'a> {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    call_id: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    arguments: Option<Value>,
    #[serde(borrow)]
    output: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct InPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    refusal: Option<String>,
    image_url: Option<String>,
    file_id: Option<String>,
    file_data: Option<String>,
    file_url: Option<String>,
}

#[derive(Deserialize)]
struct InFunctionTool {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InNamespaceTool {
    name: String,
    description: Option<String>,
    #[serde(default)]
    tools: Vec<Value>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        name: Option<String>,
        mode: Option<String>,
    },
}

#[derive(Deserialize)]
struct InTextConfig {
    format: Option<InFormat>,
    verbosity: Option<String>,
}

#[derive(Deserialize)]
struct InFormat {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

/// Where content parts appear, which decides what they may hold.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    System,
    User,
    Assistant,
    ToolOutput,
}

fn decode_parts(
    raw: Option<&RawValue>,
    path: &str,
    place: Place,
    out: &mut Vec<Part>,
) -> Result<(), TranslateError> {
    let Some(raw) = raw else {
        return Ok(());
    };
    let content: StrOrVec<InPart> = serde_json::from_str(raw.get())
        .map_err(|e| TranslateError::invalid(path, format!("expected a string or parts: {e}")))?;
    let parts = match content {
        StrOrVec::Str(s) => {
            if !s.is_empty() {
                out.push(Part::Text(s));
            }
            return Ok(());
        }
        StrOrVec::Vec(parts) => parts,
    };
    let media_ok = matches!(place, Place::User | Place::ToolOutput);
    for (j, p) in parts.into_iter().enumerate() {
        let here = || format!("{path}[{j}]");
        let missing =
            |field: &str| TranslateError::invalid(format!("{path}[{j}].{field}"), "missing");
        let part = match p.kind.as_str() {
            "input_text" | "output_text" | "text" | "summary_text" => {
                Part::Text(p.text.ok_or_else(|| missing("text"))?)
            }
            "refusal" => Part::Text(p.refusal.ok_or_else(|| missing("refusal"))?),
            "input_image" if media_ok => match (p.image_url, p.file_id) {
                (Some(url), _) => match parse_data_url(&url) {
                    Some((media_type, data)) => Part::Image(Image::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    }),
                    None => Part::Image(Image::Url(url)),
                },
                (None, Some(_)) => {
                    return Err(TranslateError::unsupported(format!(
                        "{}: file references (file_id) cannot be translated",
                        here()
                    )));
                }
                (None, None) => return Err(missing("image_url")),
            },
            "input_file" if media_ok => match p.file_data.as_deref().and_then(parse_data_url) {
                Some((media_type, data)) => Part::Image(Image::Base64 {
                    media_type: media_type.to_owned(),
                    data: data.to_owned(),
                }),
                None if p.file_id.is_some() || p.file_url.is_some() => {
                    return Err(TranslateError::unsupported(format!(
                        "{}: file references (file_id, file_url) cannot be translated",
                        here()
                    )));
                }
                None => return Err(missing("file_data")),
            },
            "input_image" | "input_file" => {
                return Err(TranslateError::invalid(
                    format!("{path}[{j}].type"),
                    format!("{:?} is not allowed in this message", p.kind),
                ));
            }
            "input_audio" => {
                return Err(TranslateError::unsupported(format!(
                    "{}: audio input cannot be translated",
                    here()
                )));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}[{j}].type"),
                    format!("unknown content type {other:?}"),
                ));
            }
        };
        if !matches!(&part, Part::Text(t) if t.is_empty()) {
            out.push(part);
        }
    }
    Ok(())
}

/// 32-bit FNV-1a over the parts, each followed by a 0xff byte: a stable, dependency-free hash for
/// shortened tool names.
fn fnv1a(parts: &[&str]) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for p in parts {
        for b in p.bytes().chain([0xff]) {
            h ^= u32::from(b);
            h = h.wrapping_mul(0x0100_0193);
        }
    }
    h
}

/// Flat names of namespaced functions, and the names they must not collide with.
#[derive(Default)]
struct Names {
    table: Vec<NamespacedTool>,
    /// (namespace, name) → position in `table`.
    index: HashMap<(String, String), usize>,
    taken: HashSet<String>,
}

impl Names {
    /// The flat name of `namespace`'s `name`, allocating one on first sight.
    fn flat(&mut self, namespace: &str, name: &str) -> String {
        let key = (namespace.to_owned(), name.to_owned());
        if let Some(t) = self.index.get(&key).and_then(|&k| self.table.get(k)) {
            return t.flat.clone();
        }
        let ok = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == '-';
        let mut flat: String = format!("{namespace}{NAMESPACE_SEPARATOR}{name}")
            .chars()
            .map(|c| if ok(c) { c } else { '_' })
            .collect();
        if flat.len() > MAX_TOOL_NAME || self.taken.contains(&flat) {
            // All ASCII now, so any byte length is a char boundary.
            flat.truncate(MAX_TOOL_NAME - 9);
            let mut salt = 0u32;
            loop {
                let salt_text = salt.to_string();
                let candidate = format!("{flat}_{:08x}", fnv1a(&[namespace, name, &salt_text]));
                if !self.taken.contains(&candidate) {
                    flat = candidate;
                    break;
                }
                salt = salt.wrapping_add(1);
            }
        }
        self.taken.insert(flat.clone());
        self.index.insert(key, self.table.len());
        self.table.push(NamespacedTool {
            flat: flat.clone(),
            namespace: namespace.to_owned(),
            name: name.to_owned(),
        });
        flat
    }
}

fn arguments_text(v: Option<Value>) -> String {
    match v {
        None | Some(Value::Null) => "{}".to_owned(),
        Some(Value::String(s)) => norm_args(s),
        Some(other) => other.to_string(),
    }
}

fn decode_tools(
    tools: Vec<Value>,
    req: &mut ChatRequest,
    names: &mut Names,
) -> Result<(), TranslateError> {
    let kind_of = |t: &Value| {
        t.get("type")
            .and_then(Value::as_str)
            .unwrap_or("function")
            .to_owned()
    };
    // Top-level function names first, so a flattened name never shadows one.
    for t in &tools {
        if kind_of(t) == "function"
            && let Some(n) = t.get("name").and_then(Value::as_str)
        {
            names.taken.insert(n.to_owned());
        }
    }
    for (k, t) in tools.into_iter().enumerate() {
        match kind_of(&t).as_str() {
            "function" => {
                let f: InFunctionTool = serde_json::from_value(t)
                    .map_err(|e| TranslateError::invalid(format!("tools[{k}]"), e))?;
                req.tools.push(ToolSpec {
                    name: f.name,
                    description: f.description,
                    parameters: f.parameters.unwrap_or_else(empty_schema),
                    strict: f.strict,
                });
            }
            "namespace" => {
                let ns: InNamespaceTool = serde_json::from_value(t)
                    .map_err(|e| TranslateError::invalid(format!("tools[{k}]"), e))?;
                for (j, inner) in ns.tools.into_iter().enumerate() {
                    let kind = kind_of(&inner);
                    if kind != "function" {
                        req.dropped.push(format!("tools[{k}].tools[{j}] ({kind})"));
                        continue;
                    }
                    let f: InFunctionTool = serde_json::from_value(inner).map_err(|e| {
                        TranslateError::invalid(format!("tools[{k}].tools[{j}]"), e)
                    })?;
                    req.tools.push(ToolSpec {
                        name: names.flat(&ns.name, &f.name),
                        description: f.description.or_else(|| ns.description.clone()),
                        parameters: f.parameters.unwrap_or_else(empty_schema),
                        strict: f.strict,
                    });
                }
            }
            "custom" => req.dropped.push(format!("tools[{k}] (custom)")),
            _ => req.builtin_tools.push(t),
        }
    }
    Ok(())
}

/// The canonical name a client's `tool_choice` names: a top-level function wins over a namespaced one.
fn choice_name(name: String, req: &ChatRequest) -> String {
    if req.tools.iter().any(|t| t.name == name) {
        return name;
    }
    let mut matches = req.namespaced_tools.iter().filter(|t| t.name == name);
    match (matches.next(), matches.next()) {
        (Some(t), None) => t.flat.clone(),
        _ => name,
    }
}

/// Appends a part to the last message when it has `role` (and, for results, already ends in one).
fn push_to_turn(req: &mut ChatRequest, role: Role, part: Part) {
    let joins = match (req.messages.last(), &part) {
        (Some(last), Part::ToolResult(_)) => {
            last.role == Role::User && matches!(last.content.last(), Some(Part::ToolResult(_)))
        }
        (Some(last), _) => last.role == role,
        (None, _) => false,
    };
    match req.messages.last_mut() {
        Some(last) if joins => last.content.push(part),
        _ => req.messages.push(Message {
            role,
            content: vec![part],
        }),
    }
}

pub(super) fn decode_request(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    let raw: Request<'_> = serde_json::from_slice(body).map_err(TranslateError::bad_body)?;
    if raw.previous_response_id.is_some() {
        return Err(stateful("previous_response_id"));
    }
    if raw.conversation.is_some() {
        return Err(stateful("conversation"));
    }
    if raw.background == Some(true) {
        return Err(stateful("background"));
    }
    if raw.prompt.is_some() {
        return Err(TranslateError::unsupported(
            "prompt: stored prompt templates cannot be translated",
        ));
    }
    let mut req = ChatRequest {
        model: raw.model,
        ..ChatRequest::default()
    };
    let mut names = Names::default();
    decode_tools(raw.tools.unwrap_or_default(), &mut req, &mut names)?;
    if let Some(i) = raw.instructions.filter(|i| !i.is_empty()) {
        req.system.push(i);
    }
    let mut call_names: HashMap<String, String> = HashMap::new();
    let mut reasoning = false;
    match raw.input {
        Some(StrOrVec::Str(s)) if !s.is_empty() => req.messages.push(Message {
            role: Role::User,
            content: vec![Part::Text(s)],
        }),
        None | Some(StrOrVec::Str(_)) => {}
        Some(StrOrVec::Vec(items)) => {
            for (i, item) in items.into_iter().enumerate() {
                let path = format!("input[{i}]");
                let kind = item.kind.as_deref().unwrap_or(if item.role.is_some() {
                    "message"
                } else {
                    ""
                });
                match kind {
                    "message" => {
                        let role = item.role.as_deref().unwrap_or("");
                        let content_path = format!("{path}.content");
                        let mut parts = Vec::new();
                        let (role, place) = match role {
                            "system" | "developer" => {
                                decode_parts(
                                    item.content,
                                    &content_path,
                                    Place::System,
                                    &mut parts,
                                )?;
                                req.system.extend(parts.into_iter().filter_map(|p| match p {
                                    Part::Text(t) => Some(t),
                                    _ => None,
                                }));
                                continue;
                            }
                            "user" => (Role::User, Place::User),
                            "assistant" => (Role::Assistant, Place::Assistant),
                            other => {
                                return Err(TranslateError::invalid(
                                    format!("{path}.role"),
                                    format!("unknown role {other:?}"),
                                ));
                            }
                        };
                        decode_parts(item.content, &content_path, place, &mut parts)?;
                        req.messages.push(Message {
                            role,
                            content: parts,
                        });
                    }
                    "function_call" => {
                        let missing =
                            |f: &str| TranslateError::invalid(format!("{path}.{f}"), "missing");
                        let call_id = item
                            .call_id
                            .filter(|c| !c.is_empty())
                            .ok_or_else(|| missing("call_id"))?;
                        let name = item.name.ok_or_else(|| missing("name"))?;
                        let name = match item.namespace.filter(|n| !n.is_empty()) {
                            Some(ns) => names.flat(&ns, &name),
                            None => name,
                        };
                        call_names.insert(call_id.clone(), name.clone());
                        push_to_turn(
                            &mut req,
                            Role::Assistant,
                            Part::ToolCall(ToolCall {
                                id: call_id,
                                name,
                                arguments: arguments_text(item.arguments),
                            }),
                        );
                    }
                    "function_call_output" => {
                        let call_id = item.call_id.filter(|c| !c.is_empty()).ok_or_else(|| {
                            TranslateError::invalid(format!("{path}.call_id"), "missing")
                        })?;
                        let mut content = Vec::new();
                        decode_parts(
                            item.output,
                            &format!("{path}.output"),
                            Place::ToolOutput,
                            &mut content,
                        )?;
                        let name = call_names.get(&call_id).cloned().or_else(|| {
                            item.name.map(|n| match item.namespace {
                                Some(ns) if !ns.is_empty() => names.flat(&ns, &n),
                                _ => n,
                            })
                        });
                        push_to_turn(
                            &mut req,
                            Role::User,
                            Part::ToolResult(ToolResult {
                                call_id,
                                name,
                                content,
                                is_error: false,
                            }),
                        );
                    }
                    "reasoning" => reasoning = true,
                    "" => {
                        return Err(TranslateError::invalid(
                            format!("{path}.type"),
                            "missing (and no role)",
                        ));
                    }
                    // Built-in and custom tool calls and outputs, item references, compactions, …
                    other => {
                        return Err(TranslateError::unsupported(format!(
                            "{path}: {other:?} items can only be served by an OpenAI Responses target"
                        )));
                    }
                }
            }
        }
    }
    req.namespaced_tools = names.table;
    req.tool_choice = match raw.tool_choice {
        None => None,
        Some(InToolChoice::Mode(m)) => match m.as_str() {
            "auto" => Some(ToolChoice::Auto),
            "none" => Some(ToolChoice::None),
            "required" => Some(ToolChoice::Required),
            _ => {
                req.dropped.push("tool_choice".to_owned());
                None
            }
        },
        Some(InToolChoice::Object { kind, name, mode }) => match (kind.as_str(), name, mode) {
            ("function", Some(name), _) => Some(ToolChoice::Tool(choice_name(name, &req))),
            ("allowed_tools", _, Some(mode)) => {
                req.dropped.push("tool_choice.tools".to_owned());
                match mode.as_str() {
                    "required" => Some(ToolChoice::Required),
                    _ => Some(ToolChoice::Auto),
                }
            }
            _ => {
                req.dropped.push("tool_choice".to_owned());
                None
            }
        },
    };
    req.parallel_tool_calls = raw.parallel_tool_calls;
    req.max_tokens = raw.max_output_tokens;
    req.temperature = raw.temperature;
    req.top_p = raw.top_p;
    if let Some(text) = raw.text {
        req.response_format = text.format.and_then(|f| match f.kind.as_str() {
            "text" => Some(ResponseFormat::Text),
            "json_object" => Some(ResponseFormat::JsonObject),
            "json_schema" => Some(ResponseFormat::JsonSchema {
                name: f.name.unwrap_or_else(|| "response".to_owned()),
                schema: f
                    .schema
                    .unwrap_or_else(|| Value::Object(Default::default())),
                strict: f.strict,
            }),
            _ => {
                req.dropped.push("text.format".to_owned());
                None
            }
        });
        if text.verbosity.is_some() {
            req.dropped.push("text.verbosity".to_owned());
        }
    }
    req.stream = raw.stream.unwrap_or(false);
    req.user = raw.user.or(raw.safety_identifier);
    if reasoning {
        req.dropped.push("reasoning items".to_owned());
    }
    if raw.reasoning.is_some() {
        req.dropped.push("reasoning".to_owned());
    }
    if raw.truncation.as_deref() == Some("auto") {
        req.dropped.push("truncation".to_owned());
    }
    if raw.top_logprobs.is_some_and(|n| n > 0) {
        req.dropped.push("top_logprobs".to_owned());
    }
    for inc in raw.include.unwrap_or_default() {
        // Encrypted reasoning is only ever returned by OpenAI; asking for it changes nothing else.
        if inc != "reasoning.encrypted_content" {
            req.dropped.push(format!("include ({inc})"));
        }
    }
    let _ = (
        raw.store,
        raw.metadata,
        raw.prompt_cache_key,
        raw.prompt_cache_retention,
        raw.client_metadata,
        raw.stream_options,
    );
    note_unknown(&mut req.dropped, "", &raw.other);
    Ok(req)
}

fn stateful(field: &str) -> TranslateError {
    TranslateError::invalid(
        field,
        "Ballast is stateless and stores no responses or conversations: send the whole conversation in `input` instead",
    )
}

// ---------------------------------------------------------------------------------------------------
// Request, outbound.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    input: Vec<OutInItem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<OutTextConfig<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    store: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutInItem<'a> {
    Message {
        role: &'static str,
        content: OutContent<'a>,
    },
    FunctionCall {
        call_id: &'a str,
        name: &'a str,
        arguments: &'a str,
    },
    FunctionCallOutput {
        call_id: &'a str,
        output: OutContent<'a>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Str(Cow<'a, str>),
    Parts(Vec<OutInPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type")]
enum OutInPart<'a> {
    #[serde(rename = "input_text")]
    Text { text: Cow<'a, str> },
    #[serde(rename = "input_image")]
    Image {
        image_url: OutImageUrl<'a>,
        detail: &'static str,
    },
    #[serde(rename = "input_file")]
    File {
        filename: &'static str,
        file_data: DataUrl<'a>,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutImageUrl<'a> {
    Data(DataUrl<'a>),
    Url(&'a str),
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutTool<'a> {
    Function {
        #[serde(rename = "type")]
        kind: &'static str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        description: Option<&'a str>,
        parameters: &'a Value,
        strict: bool,
    },
    /// A built-in tool, as the client sent it.
    Raw(&'a Value),
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        name: &'a str,
    },
}

#[derive(Serialize)]
struct OutTextConfig<'a> {
    format: OutFormat<'a>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutFormat<'a> {
    Text,
    JsonObject,
    JsonSchema {
        name: &'a str,
        schema: &'a Value,
        #[serde(skip_serializing_if = "Option::is_none")]
        strict: Option<bool>,
    },
}

fn media_part(img: &Image) -> OutInPart<'_> {
    match img {
        Image::Base64 { media_type, data } if media_type == "application/pdf" => OutInPart::File {
            filename: "document.pdf",
            file_data: DataUrl { media_type, data },
        },
        Image::Base64 { media_type, data } => OutInPart::Image {
            image_url: OutImageUrl::Data(DataUrl { media_type, data }),
            detail: "auto",
        },
        Image::Url(url) => OutInPart::Image {
            image_url: OutImageUrl::Url(url),
            detail: "auto",
        },
    }
}

fn call_arguments(arguments: &str) -> &str {
    if arguments.trim().is_empty() {
        "{}"
    } else {
        arguments
    }
}

fn result_output(r: &ToolResult) -> OutContent<'_> {
    fn prefix(is_error: bool, t: Cow<'_, str>) -> Cow<'_, str> {
        if is_error {
            Cow::Owned(format!("Error: {t}"))
        } else {
            t
        }
    }
    let prefix = |t| prefix(r.is_error, t);
    if r.content.iter().all(|p| matches!(p, Part::Text(_))) {
        return OutContent::Str(prefix(
            joined_text(r.content.iter(), "\n").unwrap_or_default(),
        ));
    }
    let mut parts = Vec::with_capacity(r.content.len());
    let mut first_text = true;
    for p in &r.content {
        match p {
            Part::Text(t) if first_text => {
                first_text = false;
                parts.push(OutInPart::Text {
                    text: prefix(Cow::Borrowed(t)),
                });
            }
            Part::Text(t) => parts.push(OutInPart::Text {
                text: Cow::Borrowed(t),
            }),
            Part::Image(img) => parts.push(media_part(img)),
            Part::ToolCall(_) | Part::ToolResult(_) => {}
        }
    }
    OutContent::Parts(parts)
}

pub(super) fn encode_request(
    req: &ChatRequest,
    opts: &EncodeOptions,
    sampling: &SamplingParams,
    warnings: &mut Warnings,
) -> Result<Vec<u8>, TranslateError> {
    let mut input = Vec::with_capacity(req.system.len().saturating_add(req.messages.len()));
    for s in &req.system {
        input.push(OutInItem::Message {
            role: "system",
            content: OutContent::Str(Cow::Borrowed(s)),
        });
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::User => {
                let mut parts = Vec::new();
                for p in &m.content {
                    match p {
                        Part::ToolResult(r) => input.push(OutInItem::FunctionCallOutput {
                            call_id: &r.call_id,
                            output: result_output(r),
                        }),
                        Part::Text(t) => parts.push(OutInPart::Text {
                            text: Cow::Borrowed(t),
                        }),
                        Part::Image(img) => parts.push(media_part(img)),
                        Part::ToolCall(_) => {
                            return Err(TranslateError::invalid(
                                format!("messages[{i}]"),
                                "a user message cannot contain a tool call",
                            ));
                        }
                    }
                }
                let content = match parts.len() {
                    0 if m.content.iter().any(|p| matches!(p, Part::ToolResult(_))) => continue,
                    0 => OutContent::Str(Cow::Borrowed("")),
                    1 if matches!(parts.first(), Some(OutInPart::Text { .. })) => match parts.pop()
                    {
                        Some(OutInPart::Text { text }) => OutContent::Str(text),
                        _ => continue,
                    },
                    _ => OutContent::Parts(parts),
                };
                input.push(OutInItem::Message {
                    role: "user",
                    content,
                });
            }
            Role::Assistant => {
                if let Some(text) = joined_text(m.content.iter(), "") {
                    input.push(OutInItem::Message {
                        role: "assistant",
                        content: OutContent::Str(text),
                    });
                }
                for p in &m.content {
                    match p {
                        Part::Text(_) => {}
                        Part::ToolCall(c) => input.push(OutInItem::FunctionCall {
                            call_id: &c.id,
                            name: &c.name,
                            arguments: call_arguments(&c.arguments),
                        }),
                        Part::Image(_) | Part::ToolResult(_) => {
                            return Err(TranslateError::unsupported(format!(
                                "messages[{i}]: openai-responses assistant messages carry only text and tool calls"
                            )));
                        }
                    }
                }
            }
        }
    }
    let has_tools = !req.tools.is_empty() || !req.builtin_tools.is_empty();
    let mut tools: Vec<OutTool<'_>> = req
        .tools
        .iter()
        .map(|t| OutTool::Function {
            kind: "function",
            name: &t.name,
            description: t.description.as_deref(),
            parameters: &t.parameters,
            strict: t.strict.unwrap_or(false),
        })
        .collect();
    tools.extend(req.builtin_tools.iter().map(OutTool::Raw));
    let tool_choice = req
        .tool_choice
        .as_ref()
        .filter(|_| has_tools)
        .map(|c| match c {
            ToolChoice::Auto => OutToolChoice::Mode("auto"),
            ToolChoice::None => OutToolChoice::Mode("none"),
            ToolChoice::Required => OutToolChoice::Mode("required"),
            ToolChoice::Tool(name) => OutToolChoice::Named {
                kind: "function",
                name,
            },
        });
    if sampling.top_k.is_some() {
        warnings.dropped("top_k", FORMAT);
    }
    if !req.stop.is_empty() {
        warnings.dropped("stop", FORMAT);
    }
    let max_output_tokens = req.max_tokens.map(|n| {
        if n < MIN_OUTPUT_TOKENS {
            warnings.push(format!(
                "max_tokens raised from {n} to {MIN_OUTPUT_TOKENS}, the minimum of {FORMAT}"
            ));
        }
        n.max(MIN_OUTPUT_TOKENS)
    });
    let text = req.response_format.as_ref().map(|rf| OutTextConfig {
        format: match rf {
            ResponseFormat::Text => OutFormat::Text,
            ResponseFormat::JsonObject => OutFormat::JsonObject,
            ResponseFormat::JsonSchema {
                name,
                schema,
                strict,
            } => OutFormat::JsonSchema {
                name,
                schema,
                strict: *strict,
            },
        },
    });
    let out = OutRequest {
        model: opts.upstream_model,
        input,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        max_output_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        text,
        stream: req.stream,
        store: false,
        user: req.user.as_deref(),
    };
    Ok(to_body(&out))
}

// ---------------------------------------------------------------------------------------------------
// Usage and status.

#[derive(Deserialize, Default)]
struct InUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    input_tokens_details: Option<InInputDetails>,
    output_tokens_details: Option<InOutputDetails>,
}

#[derive(Deserialize, Default)]
struct InInputDetails {
    cached_tokens: Option<u64>,
    cache_write_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct InOutputDetails {
    reasoning_tokens: Option<u64>,
}

impl InUsage {
    fn canonical(&self) -> Usage {
        let input = self.input_tokens_details.as_ref();
        Usage {
            input_tokens: self.input_tokens,
            output_tokens: self.output_tokens,
            cache_read_tokens: input.and_then(|d| d.cached_tokens),
            cache_write_tokens: input.and_then(|d| d.cache_write_tokens).filter(|&n| n > 0),
            reasoning_tokens: self
                .output_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    input_tokens_details: OutInputDetails,
    output_tokens: u64,
    output_tokens_details: OutOutputDetails,
    total_tokens: u64,
}

#[derive(Serialize)]
struct OutInputDetails {
    cached_tokens: u64,
    cache_write_tokens: u64,
}

#[derive(Serialize)]
struct OutOutputDetails {
    reasoning_tokens: u64,
}

fn out_usage(u: &Usage) -> OutUsage {
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    OutUsage {
        input_tokens: input,
        input_tokens_details: OutInputDetails {
            cached_tokens: u.cache_read_tokens.unwrap_or(0),
            cache_write_tokens: u.cache_write_tokens.unwrap_or(0),
        },
        output_tokens: output,
        output_tokens_details: OutOutputDetails {
            reasoning_tokens: u.reasoning_tokens.unwrap_or(0),
        },
        total_tokens: input.saturating_add(output),
    }
}

#[derive(Deserialize)]
struct InIncomplete {
    reason: Option<String>,
}

#[derive(Deserialize)]
struct InRespError {
    code: Option<String>,
    message: Option<String>,
}

/// The canonical stop reason of a finished response.
fn stop_of(status: &str, incomplete: Option<&str>, saw_call: bool) -> StopReason {
    match (status, incomplete) {
        ("incomplete", Some("max_output_tokens")) => StopReason::MaxTokens,
        ("incomplete", Some("content_filter")) => StopReason::ContentFilter,
        ("incomplete", Some(other)) => StopReason::Other(other.to_owned()),
        ("completed", _) | ("", _) if saw_call => StopReason::ToolUse,
        ("completed", _) | ("", _) => StopReason::EndTurn,
        (other, _) => StopReason::Other(other.to_owned()),
    }
}

/// (status, incomplete reason) for a canonical stop reason.
fn status_of(reason: &StopReason) -> (&'static str, Option<&'static str>) {
    match reason {
        StopReason::MaxTokens => ("incomplete", Some("max_output_tokens")),
        StopReason::ContentFilter => ("incomplete", Some("content_filter")),
        StopReason::EndTurn
        | StopReason::ToolUse
        | StopReason::StopSequence(_)
        | StopReason::Other(_) => ("completed", None),
    }
}

/// The `code` of a Responses error object (`ResponseError.code` is a closed list).
fn error_code(class: ErrorClass) -> &'static str {
    match class {
        ErrorClass::RateLimit => "rate_limit_exceeded",
        _ => "server_error",
    }
}

// ---------------------------------------------------------------------------------------------------
// Complete answers.

#[derive(Deserialize)]
struct Response<'a> {
    id: Option<String>,
    model: Option<String>,
    created_at: Option<f64>,
    status: Option<String>,
    #[serde(default, borrow)]
    output: Vec<InOutItem<'a>>,
    incomplete_details: Option<InIncomplete>,
    error: Option<InRespError>,
    usage: Option<InUsage>,
}

/// An output item; only messages and function calls mean anything to the canonical model.
#[derive(Deserialize)]
struct InOutItem<'a> {
    #[serde(rename = "type")]
    kind: String,
    id: Option<String>,
    #[serde(borrow)]
    content: Option<&'a RawValue>,
    call_id: Option<String>,
    name: Option<String>,
    namespace: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct InOutPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    refusal: Option<String>,
}

impl InOutItem<'_> {
    /// The text of a `message` item's `output_text` (and `refusal`) parts.
    fn text(&self) -> String {
        let Some(raw) = self.content else {
            return String::new();
        };
        let parts: Vec<InOutPart> = serde_json::from_str(raw.get()).unwrap_or_default();
        let mut text = String::new();
        for p in parts {
            match p.kind.as_str() {
                "output_text" => text.push_str(p.text.as_deref().unwrap_or("")),
                "refusal" => text.push_str(p.refusal.as_deref().unwrap_or("")),
                _ => {}
            }
        }
        text
    }

    /// The canonical (flat) name of a `function_call` item.
    fn call_name(&self) -> String {
        let name = self.name.clone().unwrap_or_default();
        match self.namespace.as_deref().filter(|n| !n.is_empty()) {
            Some(ns) => format!("{ns}{NAMESPACE_SEPARATOR}{name}"),
            None => name,
        }
    }

    fn call_id(&self, response_id: &str, n: usize) -> String {
        self.call_id
            .clone()
            .filter(|c| !c.is_empty())
            .or_else(|| self.id.clone().filter(|c| !c.is_empty()))
            .unwrap_or_else(|| format!("call_{}_{n}", super::safe_id(response_id)))
    }
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let raw: Response<'_> = serde_json::from_slice(body).map_err(TranslateError::bad_upstream)?;
    let status = raw.status.unwrap_or_default();
    if status == "failed" {
        let (code, message) = raw
            .error
            .map(|e| (e.code, e.message))
            .unwrap_or((None, None));
        return Err(TranslateError::upstream(format!(
            "response failed ({}): {}",
            code.as_deref().unwrap_or("server_error"),
            message.as_deref().unwrap_or("no message")
        )));
    }
    let id = raw.id.unwrap_or_default();
    let mut content = Vec::new();
    let mut calls: usize = 0;
    for item in &raw.output {
        match item.kind.as_str() {
            "message" => {
                let text = item.text();
                if !text.is_empty() {
                    content.push(Part::Text(text));
                }
            }
            "function_call" => {
                content.push(Part::ToolCall(ToolCall {
                    id: item.call_id(&id, calls),
                    name: item.call_name(),
                    arguments: norm_args(item.arguments.clone().unwrap_or_default()),
                }));
                calls = calls.saturating_add(1);
            }
            // Reasoning and built-in tool items (never requested by a translated call).
            _ => {}
        }
    }
    let reason = raw.incomplete_details.and_then(|d| d.reason);
    Ok(ChatResponse {
        id,
        model: raw.model.unwrap_or_default(),
        created: raw.created_at.map(|t| t as u64),
        content,
        stop_reason: Some(stop_of(&status, reason.as_deref(), calls > 0)),
        usage: raw.usage.map(|u| u.canonical()).unwrap_or_default(),
    })
}

/// A `response` object, as answers and stream events carry it.
#[derive(Serialize)]
struct OutResponse<'a> {
    id: &'a str,
    object: &'static str,
    created_at: u64,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed_at: Option<u64>,
    background: bool,
    error: Option<OutRespError<'a>>,
    incomplete_details: Option<OutIncomplete>,
    instructions: Option<()>,
    max_output_tokens: Option<()>,
    metadata: Empty,
    model: &'a str,
    output: Vec<OutItem<'a>>,
    parallel_tool_calls: bool,
    previous_response_id: Option<()>,
    store: bool,
    temperature: Option<()>,
    text: OutTextEcho,
    tool_choice: &'static str,
    tools: [(); 0],
    top_p: Option<()>,
    truncation: &'static str,
    usage: Option<OutUsage>,
    user: Option<()>,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct OutTextEcho {
    format: OutFormatEcho,
}

#[derive(Serialize)]
struct OutFormatEcho {
    #[serde(rename = "type")]
    kind: &'static str,
}

#[derive(Serialize)]
struct OutIncomplete {
    reason: &'static str,
}

#[derive(Serialize)]
struct OutRespError<'a> {
    code: &'static str,
    message: &'a str,
}

impl<'a> OutResponse<'a> {
    fn new(id: &'a str, model: &'a str, created_at: u64, status: &'static str) -> Self {
        Self {
            id,
            object: "response",
            created_at,
            status,
            completed_at: None,
            background: false,
            error: None,
            incomplete_details: None,
            instructions: None,
            max_output_tokens: None,
            metadata: Empty {},
            model,
            output: Vec::new(),
            parallel_tool_calls: true,
            previous_response_id: None,
            store: false,
            temperature: None,
            text: OutTextEcho {
                format: OutFormatEcho { kind: "text" },
            },
            tool_choice: "auto",
            tools: [],
            top_p: None,
            truncation: "disabled",
            usage: None,
            user: None,
        }
    }

    /// Status, `incomplete_details` and `completed_at` for a finished answer.
    fn finished(mut self, reason: &StopReason) -> Self {
        let (status, incomplete) = status_of(reason);
        self.status = status;
        self.incomplete_details = incomplete.map(|reason| OutIncomplete { reason });
        if status == "completed" {
            self.completed_at = Some(now_unix().max(self.created_at));
        }
        self
    }
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutItem<'a> {
    Message {
        id: &'a str,
        status: &'static str,
        role: &'static str,
        content: Vec<OutText<'a>>,
    },
    FunctionCall {
        id: &'a str,
        status: &'static str,
        call_id: &'a str,
        name: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        namespace: Option<&'a str>,
        arguments: &'a str,
    },
    #[serde(untagged)]
    Verbatim(&'a serde_json::value::RawValue),
}

/// An `output_text` content part.
#[derive(Serialize)]
struct OutText<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    text: &'a str,
    annotations: [(); 0],
    logprobs: [(); 0],
}

fn output_text(text: &str) -> OutText<'_> {
    OutText {
        kind: "output_text",
        text,
        annotations: [],
        logprobs: [],
    }
}

/// The namespaced tools by flat name (the first of each, as a search in order would find).
fn names_by_flat(names: &[NamespacedTool]) -> HashMap<&str, &NamespacedTool> {
    let mut by_flat = HashMap::with_capacity(names.len());
    for t in names {
        by_flat.entry(t.flat.as_str()).or_insert(t);
    }
    by_flat
}

/// The client's (name, namespace) for a canonical tool name, given its entry in
/// [`names_by_flat`].
fn client_name<'a>(
    name: &'a str,
    namespaced: Option<&'a NamespacedTool>,
) -> (&'a str, Option<&'a str>) {
    match namespaced {
        Some(t) => (&t.name, Some(&t.namespace)),
        None => (name, None),
    }
}

/// The suffix that makes item ids unique within a response.
fn id_base(response_id: &str) -> &str {
    response_id.strip_prefix("resp_").unwrap_or(response_id)
}

pub(super) fn encode_response(
    resp: &ChatResponse,
    client_model: &str,
    names: &[NamespacedTool],
) -> Vec<u8> {
    let id = prefixed_id("resp_", &resp.id);
    let base = id_base(&id).to_owned();
    let saw_call = resp.content.iter().any(|p| matches!(p, Part::ToolCall(_)));
    let reason = inferred_stop(resp.stop_reason.as_ref(), saw_call);
    let item_status = match status_of(&reason) {
        ("incomplete", _) => "incomplete",
        _ => "completed",
    };
    // Consecutive text parts form one message item; every call is its own item.
    enum Slot<'a> {
        Text(String),
        Call(&'a ToolCall),
    }
    let mut slots: Vec<Slot<'_>> = Vec::new();
    for p in &resp.content {
        match p {
            Part::Text(t) => match slots.last_mut() {
                Some(Slot::Text(acc)) => acc.push_str(t),
                _ => slots.push(Slot::Text(t.clone())),
            },
            Part::ToolCall(c) => slots.push(Slot::Call(c)),
            Part::Image(_) | Part::ToolResult(_) => {}
        }
    }
    let ids: Vec<String> = slots
        .iter()
        .enumerate()
        .map(|(k, s)| match s {
            Slot::Text(_) => format!("msg_{base}_{k}"),
            Slot::Call(_) => format!("fc_{base}_{k}"),
        })
        .collect();
    let by_flat = names_by_flat(names);
    let output = slots
        .iter()
        .zip(&ids)
        .map(|(s, id)| match s {
            Slot::Text(text) => OutItem::Message {
                id,
                status: item_status,
                role: "assistant",
                content: vec![output_text(text)],
            },
            Slot::Call(c) => {
                let (name, namespace) = client_name(&c.name, by_flat.get(c.name.as_str()).copied());
                OutItem::FunctionCall {
                    id,
                    status: "completed",
                    call_id: &c.id,
                    name,
                    namespace,
                    arguments: call_arguments(&c.arguments),
                }
            }
        })
        .collect();
    let mut out = OutResponse::new(
        &id,
        client_model,
        resp.created.unwrap_or_else(now_unix),
        "completed",
    )
    .finished(&reason);
    out.output = output;
    out.usage = Some(out_usage(&resp.usage));
    to_body(&out)
}

// ---------------------------------------------------------------------------------------------------
// Streams, inbound.

#[derive(Deserialize)]
struct InEvent<'a> {
    #[serde(rename = "type")]
    kind: String,
    #[serde(borrow)]
    response: Option<Response<'a>>,
    #[serde(borrow)]
    item: Option<InOutItem<'a>>,
    output_index: Option<usize>,
    item_id: Option<String>,
    delta: Option<String>,
    text: Option<String>,
    refusal: Option<String>,
    arguments: Option<String>,
    code: Option<Value>,
    message: Option<String>,
    error: Option<InEventError>,
}

#[derive(Deserialize)]
struct InEventError {
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<Value>,
    message: Option<String>,
}

/// What the decoder has passed on for one output item.
#[derive(Debug)]
struct Seen {
    is_call: bool,
    /// Some text or argument fragment went out (a `.done` then adds nothing).
    content: bool,
}

/// Canonical part index = the item's `output_index` (skipped items such as reasoning leave gaps).
#[derive(Debug, Default)]
pub(crate) struct EventDecoder {
    started: bool,
    done: bool,
    response_id: String,
    /// By `output_index` (a map: a huge or sparse index costs nothing), at most `max_parts` items.
    seen: HashMap<usize, Seen>,
    calls: usize,
}

impl EventDecoder {
    fn ensure_started(&mut self, out: &mut Vec<StreamEvent>) {
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: String::new(),
                model: String::new(),
            });
        }
    }

    /// Starts tracking item `index`, unless that would go over the limit.
    fn track(
        &mut self,
        index: usize,
        is_call: bool,
        limits: &StreamLimits,
    ) -> Result<&mut Seen, TranslateError> {
        let count = self.seen.len();
        match self.seen.entry(index) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(_) if count >= limits.max_parts => Err(too_many_parts(limits.max_parts)),
            Entry::Vacant(e) => Ok(e.insert(Seen {
                is_call,
                content: false,
            })),
        }
    }

    /// Opens a function call unless it is open already.
    fn open_call(
        &mut self,
        index: usize,
        item: Option<&InOutItem<'_>>,
        item_id: Option<&str>,
        out: &mut Vec<StreamEvent>,
        limits: &StreamLimits,
    ) -> Result<(), TranslateError> {
        if self.seen.contains_key(&index) {
            return Ok(());
        }
        self.track(index, true, limits)?;
        let id = match item {
            Some(item) => item.call_id(&self.response_id, self.calls),
            None => item_id
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .unwrap_or_else(|| {
                    format!("call_{}_{}", super::safe_id(&self.response_id), self.calls)
                }),
        };
        self.calls = self.calls.saturating_add(1);
        out.push(StreamEvent::ToolCallStart {
            index,
            id,
            name: item.map(InOutItem::call_name).unwrap_or_default(),
        });
        Ok(())
    }

    /// Passes on text for item `index`; `whole` is a `.done` repeat, sent only if no delta came.
    fn text(
        &mut self,
        index: usize,
        text: String,
        whole: bool,
        out: &mut Vec<StreamEvent>,
        limits: &StreamLimits,
    ) -> Result<(), TranslateError> {
        let seen = self.track(index, false, limits)?;
        if whole && seen.content {
            return Ok(());
        }
        seen.content = true;
        if !text.is_empty() {
            out.push(StreamEvent::TextDelta { index, text });
        }
        Ok(())
    }

    /// Passes on arguments for the open call `index`, like [`EventDecoder::text`].
    fn arguments(
        &mut self,
        index: usize,
        fragment: String,
        whole: bool,
        out: &mut Vec<StreamEvent>,
    ) {
        let Some(seen) = self.seen.get_mut(&index) else {
            return;
        };
        if whole && seen.content {
            return;
        }
        seen.content = true;
        if !fragment.is_empty() {
            out.push(StreamEvent::ToolCallDelta { index, fragment });
        }
    }

    pub(crate) fn push(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
        limits: &StreamLimits,
    ) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() || data == "[DONE]" {
            return Ok(());
        }
        let e: InEvent<'_> = serde_json::from_str(data).map_err(TranslateError::bad_upstream)?;
        let index = e.output_index.unwrap_or(0);
        match e.kind.as_str() {
            "response.created" | "response.in_progress" | "response.queued" if !self.started => {
                self.started = true;
                let r = e.response.as_ref();
                self.response_id =
                    bounded_id(r.and_then(|r| r.id.as_deref()).unwrap_or_default()).to_owned();
                out.push(StreamEvent::Start {
                    id: self.response_id.clone(),
                    model: r.and_then(|r| r.model.clone()).unwrap_or_default(),
                });
            }
            "response.output_item.added" => {
                self.ensure_started(out);
                if let Some(item) = e.item.as_ref().filter(|i| i.kind == "function_call") {
                    self.open_call(index, Some(item), None, out, limits)?;
                    if let Some(args) = item.arguments.clone().filter(|a| !a.is_empty()) {
                        self.arguments(index, args, false, out);
                    }
                }
            }
            "response.output_text.delta" | "response.refusal.delta" => {
                self.ensure_started(out);
                self.text(index, e.delta.unwrap_or_default(), false, out, limits)?;
            }
            "response.output_text.done" => {
                self.text(index, e.text.unwrap_or_default(), true, out, limits)?;
            }
            "response.refusal.done" => {
                self.text(index, e.refusal.unwrap_or_default(), true, out, limits)?;
            }
            "response.function_call_arguments.delta" => {
                self.ensure_started(out);
                self.open_call(index, None, e.item_id.as_deref(), out, limits)?;
                self.arguments(index, e.delta.unwrap_or_default(), false, out);
            }
            "response.function_call_arguments.done" => {
                self.open_call(index, None, e.item_id.as_deref(), out, limits)?;
                self.arguments(index, e.arguments.unwrap_or_default(), true, out);
            }
            "response.output_item.done" => {
                let Some(item) = e.item.as_ref() else {
                    return Ok(());
                };
                match item.kind.as_str() {
                    "function_call" => {
                        self.ensure_started(out);
                        self.open_call(index, Some(item), None, out, limits)?;
                        let args = item.arguments.clone().unwrap_or_default();
                        self.arguments(index, args, true, out);
                    }
                    "message" => {
                        self.ensure_started(out);
                        let text = item.text();
                        self.text(index, text, true, out, limits)?;
                    }
                    _ => {}
                }
            }
            "response.completed" | "response.incomplete" => {
                if self.done {
                    return Ok(());
                }
                self.ensure_started(out);
                self.done = true;
                let r = e.response;
                let saw_call = self.seen.values().any(|s| s.is_call);
                if let Some(u) = r.as_ref().and_then(|r| r.usage.as_ref()) {
                    out.push(StreamEvent::Usage(u.canonical()));
                }
                let status = if e.kind == "response.completed" {
                    "completed"
                } else {
                    "incomplete"
                };
                let reason = r.and_then(|r| r.incomplete_details).and_then(|d| d.reason);
                out.push(StreamEvent::Stop(stop_of(
                    status,
                    reason.as_deref(),
                    saw_call,
                )));
                out.push(StreamEvent::Done);
            }
            "response.failed" => {
                if self.done {
                    return Ok(());
                }
                self.done = true;
                let err = e.response.and_then(|r| r.error);
                let (code, message) = err.map(|e| (e.code, e.message)).unwrap_or((None, None));
                out.push(StreamEvent::Error {
                    kind: code.unwrap_or_else(|| "server_error".to_owned()),
                    message: message.unwrap_or_else(|| "response failed".to_owned()),
                });
            }
            "error" => {
                if self.done {
                    return Ok(());
                }
                self.done = true;
                let nested = e.error;
                let code_str = |v: Option<Value>| v.and_then(|c| c.as_str().map(str::to_owned));
                let (n_kind, n_code, n_message) = match nested {
                    Some(n) => (n.kind, code_str(n.code), n.message),
                    None => (None, None, None),
                };
                out.push(StreamEvent::Error {
                    kind: code_str(e.code)
                        .or(n_code)
                        .or(n_kind)
                        .unwrap_or_else(|| "server_error".to_owned()),
                    message: e.message.or(n_message).unwrap_or_default(),
                });
            }
            // Reasoning, annotations, built-in tool progress and later event types carry nothing
            // the canonical stream needs.
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams, outbound.

#[derive(Serialize)]
#[serde(tag = "type")]
enum OutEvent<'a> {
    #[serde(rename = "response.created")]
    Created {
        response: OutResponse<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.in_progress")]
    InProgress {
        response: OutResponse<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.added")]
    ItemAdded {
        output_index: usize,
        item: OutItem<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.added")]
    PartAdded {
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        part: OutText<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.delta")]
    TextDelta {
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        delta: &'a str,
        logprobs: [(); 0],
        sequence_number: u64,
    },
    #[serde(rename = "response.output_text.done")]
    TextDone {
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        text: &'a str,
        logprobs: [(); 0],
        sequence_number: u64,
    },
    #[serde(rename = "response.content_part.done")]
    PartDone {
        item_id: &'a str,
        output_index: usize,
        content_index: usize,
        part: OutText<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.delta")]
    ArgsDelta {
        item_id: &'a str,
        output_index: usize,
        delta: &'a str,
        sequence_number: u64,
    },
    #[serde(rename = "response.function_call_arguments.done")]
    ArgsDone {
        item_id: &'a str,
        output_index: usize,
        name: &'a str,
        arguments: &'a str,
        sequence_number: u64,
    },
    #[serde(rename = "response.output_item.done")]
    ItemDone {
        output_index: usize,
        item: OutItem<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.completed")]
    Completed {
        response: OutResponse<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.incomplete")]
    Incomplete {
        response: OutResponse<'a>,
        sequence_number: u64,
    },
    #[serde(rename = "response.failed")]
    Failed {
        response: OutResponse<'a>,
        sequence_number: u64,
    },
    /// The documented fields flat, and the `error` object the API sends (and the SDK raises on).
    #[serde(rename = "error")]
    Error {
        code: &'static str,
        message: &'a str,
        param: Option<()>,
        error: OutEventError<'a>,
        sequence_number: u64,
    },
}

#[derive(Serialize)]
struct OutEventError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    code: &'static str,
    message: &'a str,
    param: Option<()>,
}

impl OutEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            OutEvent::Created { .. } => "response.created",
            OutEvent::InProgress { .. } => "response.in_progress",
            OutEvent::ItemAdded { .. } => "response.output_item.added",
            OutEvent::PartAdded { .. } => "response.content_part.added",
            OutEvent::TextDelta { .. } => "response.output_text.delta",
            OutEvent::TextDone { .. } => "response.output_text.done",
            OutEvent::PartDone { .. } => "response.content_part.done",
            OutEvent::ArgsDelta { .. } => "response.function_call_arguments.delta",
            OutEvent::ArgsDone { .. } => "response.function_call_arguments.done",
            OutEvent::ItemDone { .. } => "response.output_item.done",
            OutEvent::Completed { .. } => "response.completed",
            OutEvent::Incomplete { .. } => "response.incomplete",
            OutEvent::Failed { .. } => "response.failed",
            OutEvent::Error { .. } => "error",
        }
    }
}

fn emit(out: &mut Vec<u8>, ev: &OutEvent<'_>) {
    write_sse(out, Some(ev.name()), ev);
}

/// Writes an `error` event and a terminal `response.failed` for a stream that is not tracked by an
/// encoder (the same-format path): `sequence_number` continues from `next_sequence`.
pub(crate) fn write_failure(
    out: &mut Vec<u8>,
    next_sequence: u64,
    openai_type: &'static str,
    rate_limited: bool,
    message: &str,
) {
    let code = if rate_limited {
        "rate_limit_exceeded"
    } else {
        "server_error"
    };
    emit(
        out,
        &OutEvent::Error {
            code,
            message,
            param: None,
            error: OutEventError {
                kind: openai_type,
                code,
                message,
                param: None,
            },
            sequence_number: next_sequence,
        },
    );
    let id = format!("resp_{}", fallback_id());
    let mut response = OutResponse::new(&id, "", now_unix(), "failed");
    response.error = Some(OutRespError { code, message });
    emit(
        out,
        &OutEvent::Failed {
            response,
            sequence_number: next_sequence.saturating_add(1),
        },
    );
}

#[derive(Debug)]
enum ItemBody {
    Message {
        text: String,
    },
    Call {
        call_id: String,
        name: String,
        namespace: Option<String>,
        arguments: String,
    },
    /// An item a resumed stream's client already has whole, repeated as it was.
    Verbatim(Box<serde_json::value::RawValue>),
}

/// One output item sent to the client, and everything sent of it (the final response repeats it).
#[derive(Debug)]
struct Item {
    /// Canonical part index.
    index: usize,
    id: String,
    open: bool,
    incomplete: bool,
    body: ItemBody,
}

impl Item {
    fn view(&self, whole: bool) -> OutItem<'_> {
        let status = if self.open {
            "in_progress"
        } else if self.incomplete {
            "incomplete"
        } else {
            "completed"
        };
        match &self.body {
            ItemBody::Message { text } => OutItem::Message {
                id: &self.id,
                status,
                role: "assistant",
                content: if whole {
                    vec![output_text(text)]
                } else {
                    Vec::new()
                },
            },
            ItemBody::Call {
                call_id,
                name,
                namespace,
                arguments,
            } => OutItem::FunctionCall {
                id: &self.id,
                status,
                call_id,
                name,
                namespace: namespace.as_deref(),
                arguments: if whole { arguments } else { "" },
            },
            ItemBody::Verbatim(raw) => OutItem::Verbatim(raw),
        }
    }
}

#[derive(Debug)]
pub(crate) struct EventEncoder {
    opts: StreamOptions,
    /// The client's namespaced tools, by flat name.
    names: HashMap<String, NamespacedTool>,
    created_at: u64,
    id: String,
    next_sequence: u64,
    started: bool,
    done: bool,
    items: Vec<Item>,
    /// Position in `items` of the open item.
    open: Option<usize>,
    stop: Option<StopReason>,
    usage: Usage,
}

impl EventEncoder {
    pub(crate) fn new(opts: StreamOptions, created_at: u64) -> Self {
        Self {
            opts,
            names: HashMap::new(),
            created_at,
            id: String::new(),
            next_sequence: 0,
            started: false,
            done: false,
            items: Vec::new(),
            open: None,
            stop: None,
            usage: Usage::default(),
        }
    }

    pub(crate) fn set_created(&mut self, created_at: u64) {
        self.created_at = created_at;
    }

    /// Carries on a stream the client has up to `rp`: same response id, sequence numbers after
    /// the last it saw, its items kept for the final response, an open message item continued.
    pub(crate) fn resume(&mut self, rp: &ResumePoint) {
        self.started = true;
        self.id = rp
            .id
            .clone()
            .unwrap_or_else(|| format!("resp_{}", fallback_id()));
        if let Some(c) = rp.created {
            self.created_at = c;
        }
        if let Some(m) = &rp.model {
            self.opts.model.clone_from(m);
        }
        self.next_sequence = rp.last_sequence_number.map_or(0, |n| n.saturating_add(1));
        self.usage = rp.usage;
        for it in &rp.items {
            let k = self.items.len();
            let (id, open, body) = match it {
                ResumeItem::Message { id, text, open } => {
                    (id.clone(), *open, ItemBody::Message { text: text.clone() })
                }
                ResumeItem::Verbatim(raw) => {
                    (String::new(), false, ItemBody::Verbatim(raw.clone()))
                }
            };
            if open {
                self.open = Some(k);
            }
            self.items.push(Item {
                // The open message continues as canonical part 0; finished items take no part.
                index: if open { 0 } else { usize::MAX },
                id,
                open,
                incomplete: false,
                body,
            });
        }
    }

    pub(crate) fn set_names(&mut self, names: Vec<NamespacedTool>) {
        self.names = HashMap::with_capacity(names.len());
        for t in names {
            self.names.entry(t.flat.clone()).or_insert(t);
        }
    }

    fn seq(&mut self) -> u64 {
        let n = self.next_sequence;
        self.next_sequence = n.saturating_add(1);
        n
    }

    fn response(&self, status: &'static str) -> OutResponse<'_> {
        OutResponse::new(&self.id, &self.opts.model, self.created_at, status)
    }

    fn ensure_started(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = prefixed_id("resp_", bounded_id(id.unwrap_or("")));
        let sequence_number = self.seq();
        emit(
            out,
            &OutEvent::Created {
                response: self.response("in_progress"),
                sequence_number,
            },
        );
        let sequence_number = self.seq();
        emit(
            out,
            &OutEvent::InProgress {
                response: self.response("in_progress"),
                sequence_number,
            },
        );
    }

    fn open_item(&mut self, index: usize, body: ItemBody, out: &mut Vec<u8>) -> usize {
        self.close_open(false, out);
        let k = self.items.len();
        let prefix = match body {
            ItemBody::Message { .. } => "msg",
            ItemBody::Call { .. } | ItemBody::Verbatim(_) => "fc",
        };
        let item = Item {
            index,
            id: format!("{prefix}_{}_{k}", id_base(&self.id)),
            open: true,
            incomplete: false,
            body,
        };
        let sequence_number = self.seq();
        emit(
            out,
            &OutEvent::ItemAdded {
                output_index: k,
                item: item.view(false),
                sequence_number,
            },
        );
        if matches!(item.body, ItemBody::Message { .. }) {
            let sequence_number = self.seq();
            emit(
                out,
                &OutEvent::PartAdded {
                    item_id: &item.id,
                    output_index: k,
                    content_index: 0,
                    part: output_text(""),
                    sequence_number,
                },
            );
        }
        self.items.push(item);
        self.open = Some(k);
        k
    }

    /// Closes the open item (marking it incomplete when the answer was cut short).
    fn close_open(&mut self, incomplete: bool, out: &mut Vec<u8>) {
        let Some(k) = self.open.take() else {
            return;
        };
        let Self {
            items,
            next_sequence,
            ..
        } = self;
        let mut seq = || {
            let n = *next_sequence;
            *next_sequence = n.saturating_add(1);
            n
        };
        let Some(item) = items.get_mut(k) else {
            return;
        };
        if let ItemBody::Call { arguments, .. } = &mut item.body
            && arguments.trim().is_empty()
        {
            // A call with no argument fragments still sends its (empty) arguments object.
            arguments.clear();
            arguments.push_str("{}");
            emit(
                out,
                &OutEvent::ArgsDelta {
                    item_id: &item.id,
                    output_index: k,
                    delta: "{}",
                    sequence_number: seq(),
                },
            );
        }
        item.open = false;
        item.incomplete = incomplete;
        let item = &*item;
        let done = match &item.body {
            ItemBody::Message { text } => {
                emit(
                    out,
                    &OutEvent::TextDone {
                        item_id: &item.id,
                        output_index: k,
                        content_index: 0,
                        text,
                        logprobs: [],
                        sequence_number: seq(),
                    },
                );
                emit(
                    out,
                    &OutEvent::PartDone {
                        item_id: &item.id,
                        output_index: k,
                        content_index: 0,
                        part: output_text(text),
                        sequence_number: seq(),
                    },
                );
                seq()
            }
            ItemBody::Call {
                name, arguments, ..
            } => {
                emit(
                    out,
                    &OutEvent::ArgsDone {
                        item_id: &item.id,
                        output_index: k,
                        name,
                        arguments,
                        sequence_number: seq(),
                    },
                );
                seq()
            }
            ItemBody::Verbatim(_) => seq(),
        };
        emit(
            out,
            &OutEvent::ItemDone {
                output_index: k,
                item: item.view(true),
                sequence_number: done,
            },
        );
    }

    /// The open item at position `k` of `items`, when it is a message for part `index`.
    fn open_message(&self, index: usize) -> Option<usize> {
        let k = self.open?;
        let item = self.items.get(k)?;
        (item.index == index && matches!(item.body, ItemBody::Message { .. })).then_some(k)
    }

    pub(crate) fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => self.ensure_started(Some(id), out),
            StreamEvent::TextDelta { index, text } => {
                self.ensure_started(None, out);
                if self.stop.is_some() || text.is_empty() {
                    return;
                }
                let k = match self.open_message(*index) {
                    Some(k) => k,
                    None => self.open_item(
                        *index,
                        ItemBody::Message {
                            text: String::new(),
                        },
                        out,
                    ),
                };
                let sequence_number = self.seq();
                let Some(item) = self.items.get_mut(k) else {
                    return;
                };
                if let ItemBody::Message { text: acc } = &mut item.body {
                    acc.push_str(text);
                }
                emit(
                    out,
                    &OutEvent::TextDelta {
                        item_id: &item.id,
                        output_index: k,
                        content_index: 0,
                        delta: text,
                        logprobs: [],
                        sequence_number,
                    },
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(None, out);
                if self.stop.is_some() {
                    return;
                }
                let (name, namespace) = client_name(name, self.names.get(name.as_str()));
                let body = ItemBody::Call {
                    call_id: id.clone(),
                    name: name.to_owned(),
                    namespace: namespace.map(str::to_owned),
                    arguments: String::new(),
                };
                self.open_item(*index, body, out);
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                self.ensure_started(None, out);
                if self.stop.is_some() || fragment.is_empty() {
                    return;
                }
                let is_call =
                    |it: &Item| it.index == *index && matches!(it.body, ItemBody::Call { .. });
                let open_call = self
                    .open
                    .filter(|&k| self.items.get(k).is_some_and(is_call));
                let k = match open_call {
                    Some(k) => k,
                    None => match self.items.iter().rposition(is_call) {
                        // A late fragment for a call already closed: the final response object
                        // carries it; no event may follow the item's `.done`.
                        Some(k) => {
                            if let Some(Item {
                                body: ItemBody::Call { arguments, .. },
                                ..
                            }) = self.items.get_mut(k)
                            {
                                arguments.push_str(fragment);
                            }
                            return;
                        }
                        None => self.open_item(
                            *index,
                            ItemBody::Call {
                                call_id: format!("call_{}", fallback_id()),
                                name: String::new(),
                                namespace: None,
                                arguments: String::new(),
                            },
                            out,
                        ),
                    },
                };
                let sequence_number = self.seq();
                let Some(item) = self.items.get_mut(k) else {
                    return;
                };
                if let ItemBody::Call { arguments, .. } = &mut item.body {
                    arguments.push_str(fragment);
                }
                emit(
                    out,
                    &OutEvent::ArgsDelta {
                        item_id: &item.id,
                        output_index: k,
                        delta: fragment,
                        sequence_number,
                    },
                );
            }
            StreamEvent::Usage(u) => merge_usage(&mut self.usage, u),
            StreamEvent::Stop(reason) => {
                self.ensure_started(None, out);
                if self.stop.is_none() {
                    let cut = status_of(reason).0 == "incomplete";
                    self.close_open(cut, out);
                    self.stop = Some(reason.clone());
                }
            }
            StreamEvent::Error { kind, message } => self.error(kind, message, out),
            StreamEvent::Done => self.finish(out),
        }
    }

    fn saw_call(&self) -> bool {
        self.items
            .iter()
            .any(|i| matches!(i.body, ItemBody::Call { .. }))
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(None, out);
        self.close_open(false, out);
        self.done = true;
        let reason = inferred_stop(self.stop.as_ref(), self.saw_call());
        let sequence_number = self.seq();
        let mut response = self.response("completed").finished(&reason);
        response.output = self.items.iter().map(|i| i.view(true)).collect();
        response.usage = Some(out_usage(&self.usage));
        let ev = if response.status == "incomplete" {
            OutEvent::Incomplete {
                response,
                sequence_number,
            }
        } else {
            OutEvent::Completed {
                response,
                sequence_number,
            }
        };
        emit(out, &ev);
    }

    pub(crate) fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(None, out);
        self.done = true;
        if let Some(item) = self.open.take().and_then(|k| self.items.get_mut(k)) {
            item.open = false;
            item.incomplete = true;
        }
        let class = ErrorClass::parse(kind);
        let code = error_code(class);
        let sequence_number = self.seq();
        emit(
            out,
            &OutEvent::Error {
                code,
                message,
                param: None,
                error: OutEventError {
                    kind: class.openai(),
                    code,
                    message,
                    param: None,
                },
                sequence_number,
            },
        );
        let sequence_number = self.seq();
        let mut response = self.response("failed");
        response.error = Some(OutRespError { code, message });
        response.output = self.items.iter().map(|i| i.view(true)).collect();
        response.usage = Some(out_usage(&self.usage));
        emit(
            out,
            &OutEvent::Failed {
                response,
                sequence_number,
            },
        );
    }
}
