//! OpenAI Chat Completions ⇄ canonical: requests, complete answers and `chat.completion.chunk` streams.
//!
//! Decoding: `system` and `developer` messages anywhere become canonical system segments (one per text
//! part); `role: tool` messages become `ToolResult` parts of a user message (consecutive ones share it).
//! Encoding: system segments become leading `system` messages; a user message's tool results become
//! `tool` messages placed before its other parts; `max_completion_tokens` carries the token limit; a
//! streamed request always asks for `stream_options.include_usage` (the gateway wants usage, the client
//! encoder decides whether to show it). OpenAI tool messages have no error flag: an error result is sent
//! as `Error: <text>`.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::{
    DataUrl, EncodeOptions, ErrorClass, SamplingParams, StrOrVec, StreamLimits, StreamOptions,
    TranslateError, Warnings, bounded_id, fallback_id, inferred_stop, joined_text, merge_usage,
    norm_args, note_unknown, now_unix, parse_data_url, prefixed_id, str_or_vec_strings, to_body,
    too_many_tool_calls, write_sse,
};
use crate::api::ApiFormat;
use crate::capability::TokenLimit;
use crate::continuation::ResumePoint;
use crate::model::{
    ChatRequest, ChatResponse, Image, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    ToolCall, ToolChoice, ToolResult, ToolSpec, Usage,
};
use crate::sse::SseEvent;

const FORMAT: ApiFormat = ApiFormat::OpenAiChat;

// ---------------------------------------------------------------------------------------------------
// Request, inbound.

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: String,
    messages: Vec<InMessage>,
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    parallel_tool_calls: Option<bool>,
    max_tokens: Option<u32>,
    max_completion_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    stop: Option<StrOrVec<String>>,
    response_format: Option<InResponseFormat>,
    stream: Option<bool>,
    stream_options: Option<InStreamOptions>,
    user: Option<String>,
    safety_identifier: Option<String>,
    n: Option<u32>,
    presence_penalty: Option<f64>,
    frequency_penalty: Option<f64>,
    logprobs: Option<bool>,
    store: Option<IgnoredAny>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: Option<StrOrVec<InPart>>,
    tool_calls: Option<Vec<InToolCall>>,
    tool_call_id: Option<String>,
    refusal: Option<String>,
}

/// One content part, all shapes flattened so an unknown `type` gets a precise error.
#[derive(Deserialize)]
struct InPart {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    image_url: Option<InImageUrl>,
    refusal: Option<String>,
    file: Option<InFile>,
}

#[derive(Deserialize)]
struct InImageUrl {
    url: String,
}

#[derive(Deserialize)]
struct InFile {
    file_data: Option<String>,
}

#[derive(Deserialize)]
struct InToolCall {
    id: Option<String>,
    function: InFunctionCall,
}

#[derive(Deserialize)]
struct InFunctionCall {
    #[serde(default)]
    name: String,
    /// A JSON string per the spec; some clients send the object itself.
    arguments: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    function: Option<InFunctionDef>,
}

#[derive(Deserialize)]
struct InFunctionDef {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum InToolChoice {
    Mode(String),
    Object {
        #[serde(rename = "type")]
        kind: String,
        function: Option<NameOnly>,
    },
}

#[derive(Deserialize)]
struct NameOnly {
    name: String,
}

#[derive(Deserialize)]
struct InResponseFormat {
    #[serde(rename = "type")]
    kind: String,
    json_schema: Option<InJsonSchema>,
}

#[derive(Deserialize)]
struct InJsonSchema {
    name: Option<String>,
    schema: Option<Value>,
    strict: Option<bool>,
}

#[derive(Deserialize)]
struct InStreamOptions {
    include_usage: Option<bool>,
}

fn arguments_text(raw: Option<Box<RawValue>>) -> String {
    match raw {
        None => "{}".to_owned(),
        Some(raw) if raw.get().starts_with('"') => {
            norm_args(serde_json::from_str::<String>(raw.get()).unwrap_or_default())
        }
        Some(raw) => super::args_text(Some(&raw)),
    }
}

fn content_parts(
    content: Option<StrOrVec<InPart>>,
    path: &str,
    allow_images: bool,
    out: &mut Vec<Part>,
) -> Result<(), TranslateError> {
    let parts = match content {
        None => return Ok(()),
        Some(StrOrVec::Str(s)) => {
            if !s.is_empty() {
                out.push(Part::Text(s));
            }
            return Ok(());
        }
        Some(StrOrVec::Vec(parts)) => parts,
    };
    for (j, p) in parts.into_iter().enumerate() {
        let missing = |field: &str| {
            TranslateError::invalid(format!("{path}.content[{j}].{field}"), "missing")
        };
        let part = match p.kind.as_str() {
            "text" => Part::Text(p.text.ok_or_else(|| missing("text"))?),
            "refusal" => Part::Text(p.refusal.ok_or_else(|| missing("refusal"))?),
            "image_url" if allow_images => {
                let url = p.image_url.ok_or_else(|| missing("image_url"))?.url;
                match parse_data_url(&url) {
                    Some((media_type, data)) => Part::Image(Image::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    }),
                    None => Part::Image(Image::Url(url)),
                }
            }
            "file" if allow_images => {
                let data_url = p.file.and_then(|f| f.file_data).unwrap_or_default();
                match parse_data_url(&data_url) {
                    Some((media_type, data)) => Part::Image(Image::Base64 {
                        media_type: media_type.to_owned(),
                        data: data.to_owned(),
                    }),
                    None => {
                        return Err(TranslateError::unsupported(format!(
                            "{path}.content[{j}]: file references (file_id) cannot be translated"
                        )));
                    }
                }
            }
            "image_url" | "file" => {
                return Err(TranslateError::invalid(
                    format!("{path}.content[{j}].type"),
                    format!("{:?} is not allowed in this message", p.kind),
                ));
            }
            "input_audio" => {
                return Err(TranslateError::unsupported(format!(
                    "{path}.content[{j}]: audio input cannot be translated"
                )));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.content[{j}].type"),
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

pub(super) fn decode_request(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    let raw: Request = serde_json::from_slice(body).map_err(TranslateError::bad_body)?;
    let mut req = ChatRequest {
        model: raw.model,
        ..ChatRequest::default()
    };
    let mut call_names: HashMap<String, String> = HashMap::new();
    for (i, m) in raw.messages.into_iter().enumerate() {
        let path = format!("messages[{i}]");
        match m.role.as_str() {
            "system" | "developer" => {
                let mut parts = Vec::new();
                content_parts(m.content, &path, false, &mut parts)?;
                req.system.extend(parts.into_iter().filter_map(|p| match p {
                    Part::Text(t) => Some(t),
                    _ => None,
                }));
            }
            "user" => {
                let mut content = Vec::new();
                content_parts(m.content, &path, true, &mut content)?;
                req.messages.push(Message {
                    role: Role::User,
                    content,
                });
            }
            "assistant" => {
                let mut content = Vec::new();
                content_parts(m.content, &path, false, &mut content)?;
                if content.is_empty()
                    && let Some(r) = m.refusal.filter(|r| !r.is_empty())
                {
                    content.push(Part::Text(r));
                }
                for (j, tc) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
                    let id = tc
                        .id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| format!("call_{i}_{j}"));
                    call_names.insert(id.clone(), tc.function.name.clone());
                    content.push(Part::ToolCall(ToolCall {
                        id,
                        name: tc.function.name,
                        arguments: arguments_text(tc.function.arguments),
                    }));
                }
                req.messages.push(Message {
                    role: Role::Assistant,
                    content,
                });
            }
            "tool" => {
                let call_id = m.tool_call_id.ok_or_else(|| {
                    TranslateError::invalid(format!("{path}.tool_call_id"), "missing")
                })?;
                let mut content = Vec::new();
                content_parts(m.content, &path, false, &mut content)?;
                let result = Part::ToolResult(ToolResult {
                    name: call_names.get(&call_id).cloned(),
                    call_id,
                    content,
                    is_error: false,
                });
                match req.messages.last_mut() {
                    Some(last)
                        if last.role == Role::User
                            && matches!(last.content.last(), Some(Part::ToolResult(_))) =>
                    {
                        last.content.push(result)
                    }
                    _ => req.messages.push(Message {
                        role: Role::User,
                        content: vec![result],
                    }),
                }
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}.role"),
                    format!("unknown role {other:?}"),
                ));
            }
        }
    }
    for (k, t) in raw.tools.unwrap_or_default().into_iter().enumerate() {
        let kind = t.kind.as_deref().unwrap_or("function");
        match (kind, t.function) {
            ("function", Some(f)) => req.tools.push(ToolSpec {
                name: f.name,
                description: f.description,
                parameters: f.parameters.unwrap_or_else(empty_schema),
                strict: f.strict,
            }),
            ("function", None) => {
                return Err(TranslateError::invalid(
                    format!("tools[{k}].function"),
                    "missing",
                ));
            }
            (other, _) => req.dropped.push(format!("tools[{k}] ({other})")),
        }
    }
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
        Some(InToolChoice::Object { kind, function }) => match (kind.as_str(), function) {
            ("function", Some(f)) => Some(ToolChoice::Tool(f.name)),
            _ => {
                req.dropped.push("tool_choice".to_owned());
                None
            }
        },
    };
    req.parallel_tool_calls = raw.parallel_tool_calls;
    req.max_tokens = raw.max_completion_tokens.or(raw.max_tokens);
    req.temperature = raw.temperature;
    req.top_p = raw.top_p;
    req.top_k = raw.top_k;
    req.stop = str_or_vec_strings(raw.stop);
    req.response_format = raw.response_format.and_then(|rf| match rf.kind.as_str() {
        "text" => Some(ResponseFormat::Text),
        "json_object" => Some(ResponseFormat::JsonObject),
        "json_schema" => {
            let js = rf.json_schema;
            let (name, schema, strict) = match js {
                Some(js) => (js.name, js.schema, js.strict),
                None => (None, None, None),
            };
            Some(ResponseFormat::JsonSchema {
                name: name.unwrap_or_else(|| "response".to_owned()),
                schema: schema.unwrap_or_else(|| Value::Object(Default::default())),
                strict,
            })
        }
        _ => {
            req.dropped.push("response_format".to_owned());
            None
        }
    });
    req.stream = raw.stream.unwrap_or(false);
    req.include_usage = raw
        .stream_options
        .and_then(|o| o.include_usage)
        .unwrap_or(false);
    req.user = raw.user.or(raw.safety_identifier);
    if raw.n.is_some_and(|n| n != 1) {
        req.dropped.push("n".to_owned());
    }
    if raw.presence_penalty.is_some_and(|p| p != 0.0) {
        req.dropped.push("presence_penalty".to_owned());
    }
    if raw.frequency_penalty.is_some_and(|p| p != 0.0) {
        req.dropped.push("frequency_penalty".to_owned());
    }
    if raw.logprobs == Some(true) {
        req.dropped.push("logprobs".to_owned());
    }
    let _ = raw.store;
    note_unknown(&mut req.dropped, "", &raw.other);
    Ok(req)
}

pub(crate) fn empty_schema() -> Value {
    serde_json::json!({"type": "object", "properties": {}})
}

// ---------------------------------------------------------------------------------------------------
// Request, outbound.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    parallel_tool_calls: Option<bool>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    max_completion_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_format: Option<OutResponseFormat<'a>>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    stream_options: Option<OutStreamOptions>,
    #[serde(skip_serializing_if = "Option::is_none")]
    user: Option<&'a str>,
}

#[derive(Serialize)]
struct OutStreamOptions {
    include_usage: bool,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<OutContent<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_call_id: Option<&'a str>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutContent<'a> {
    Str(Cow<'a, str>),
    Parts(Vec<OutPart<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutPart<'a> {
    Text { text: &'a str },
    ImageUrl { image_url: OutImageUrl<'a> },
    File { file: OutFile<'a> },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutImageUrl<'a> {
    Data { url: DataUrl<'a> },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct OutFile<'a> {
    filename: &'static str,
    file_data: DataUrl<'a>,
}

#[derive(Serialize)]
struct OutToolCall<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionCall<'a>,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    name: &'a str,
    arguments: &'a str,
}

#[derive(Serialize)]
struct OutTool<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    function: OutFunctionDef<'a>,
}

#[derive(Serialize)]
struct OutFunctionDef<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutToolChoice<'a> {
    Mode(&'static str),
    Named {
        #[serde(rename = "type")]
        kind: &'static str,
        function: OutName<'a>,
    },
}

#[derive(Serialize)]
struct OutName<'a> {
    name: &'a str,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutResponseFormat<'a> {
    Text,
    JsonObject,
    JsonSchema { json_schema: OutJsonSchema<'a> },
}

#[derive(Serialize)]
struct OutJsonSchema<'a> {
    name: &'a str,
    schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

fn image_part(img: &Image) -> OutPart<'_> {
    match img {
        Image::Base64 { media_type, data } if media_type == "application/pdf" => OutPart::File {
            file: OutFile {
                filename: "document.pdf",
                file_data: DataUrl { media_type, data },
            },
        },
        Image::Base64 { media_type, data } => OutPart::ImageUrl {
            image_url: OutImageUrl::Data {
                url: DataUrl { media_type, data },
            },
        },
        Image::Url(url) => OutPart::ImageUrl {
            image_url: OutImageUrl::Url { url },
        },
    }
}

pub(super) fn encode_request(
    req: &ChatRequest,
    opts: &EncodeOptions,
    sampling: &SamplingParams,
    warnings: &mut Warnings,
) -> Result<Vec<u8>, TranslateError> {
    let mut messages = Vec::with_capacity(req.system.len().saturating_add(req.messages.len()));
    for s in &req.system {
        messages.push(OutMessage {
            role: "system",
            content: Some(OutContent::Str(Cow::Borrowed(s))),
            tool_calls: Vec::new(),
            tool_call_id: None,
        });
    }
    for (i, m) in req.messages.iter().enumerate() {
        match m.role {
            Role::User => {
                let mut parts: Vec<OutPart<'_>> = Vec::new();
                let mut had_results = false;
                for p in &m.content {
                    match p {
                        Part::ToolResult(r) => {
                            had_results = true;
                            let text = joined_text(r.content.iter(), "\n").unwrap_or_default();
                            let text = if r.is_error {
                                Cow::Owned(format!("Error: {text}"))
                            } else {
                                text
                            };
                            messages.push(OutMessage {
                                role: "tool",
                                content: Some(OutContent::Str(text)),
                                tool_calls: Vec::new(),
                                tool_call_id: Some(&r.call_id),
                            });
                            for c in &r.content {
                                if let Part::Image(img) = c {
                                    warnings.push(format!(
                                        "tool result image for {} sent as a user message part",
                                        super::header_safe(&r.call_id)
                                    ));
                                    parts.push(image_part(img));
                                }
                            }
                        }
                        Part::Text(t) => parts.push(OutPart::Text { text: t }),
                        Part::Image(img) => parts.push(image_part(img)),
                        Part::ToolCall(_) => {
                            return Err(TranslateError::invalid(
                                format!("messages[{i}]"),
                                "a user message cannot contain a tool call",
                            ));
                        }
                    }
                }
                if parts.is_empty() && had_results {
                    continue;
                }
                let content = match parts.as_slice() {
                    [] => OutContent::Str(Cow::Borrowed("")),
                    [OutPart::Text { text }] => OutContent::Str(Cow::Borrowed(text)),
                    _ => OutContent::Parts(parts),
                };
                messages.push(OutMessage {
                    role: "user",
                    content: Some(content),
                    tool_calls: Vec::new(),
                    tool_call_id: None,
                });
            }
            Role::Assistant => {
                let mut tool_calls = Vec::new();
                for p in &m.content {
                    match p {
                        Part::Text(_) => {}
                        Part::ToolCall(c) => tool_calls.push(OutToolCall {
                            id: &c.id,
                            kind: "function",
                            function: OutFunctionCall {
                                name: &c.name,
                                arguments: if c.arguments.trim().is_empty() {
                                    "{}"
                                } else {
                                    &c.arguments
                                },
                            },
                        }),
                        Part::Image(_) | Part::ToolResult(_) => {
                            return Err(TranslateError::unsupported(format!(
                                "messages[{i}]: openai-chat assistant messages carry only text and tool calls"
                            )));
                        }
                    }
                }
                let text = joined_text(m.content.iter(), "");
                let content = match (text, tool_calls.is_empty()) {
                    (Some(t), _) => Some(OutContent::Str(t)),
                    (None, true) => Some(OutContent::Str(Cow::Borrowed(""))),
                    (None, false) => None,
                };
                messages.push(OutMessage {
                    role: "assistant",
                    content,
                    tool_calls,
                    tool_call_id: None,
                });
            }
        }
    }
    let has_tools = !req.tools.is_empty();
    let tools = req
        .tools
        .iter()
        .map(|t| OutTool {
            kind: "function",
            function: OutFunctionDef {
                name: &t.name,
                description: t.description.as_deref(),
                parameters: &t.parameters,
                strict: t.strict,
            },
        })
        .collect();
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
                function: OutName { name },
            },
        });
    if sampling.top_k.is_some() {
        warnings.dropped("top_k", FORMAT);
    }
    // The token limit under the name the target reads.
    let (max_tokens, max_completion_tokens) = match opts.rules.token_limit {
        TokenLimit::MaxTokens => (req.max_tokens, None),
        TokenLimit::MaxCompletionTokens => (None, req.max_tokens),
    };
    let response_format = req.response_format.as_ref().map(|rf| match rf {
        ResponseFormat::Text => OutResponseFormat::Text,
        ResponseFormat::JsonObject => OutResponseFormat::JsonObject,
        ResponseFormat::JsonSchema {
            name,
            schema,
            strict,
        } => OutResponseFormat::JsonSchema {
            json_schema: OutJsonSchema {
                name,
                schema,
                strict: *strict,
            },
        },
    });
    let out = OutRequest {
        model: opts.upstream_model,
        messages,
        tools,
        tool_choice,
        parallel_tool_calls: req.parallel_tool_calls.filter(|_| has_tools),
        max_tokens,
        max_completion_tokens,
        temperature: sampling.temperature,
        top_p: sampling.top_p,
        stop: &req.stop,
        response_format,
        stream: req.stream,
        stream_options: req.stream.then_some(OutStreamOptions {
            include_usage: true,
        }),
        user: req.user.as_deref(),
    };
    Ok(to_body(&out))
}

// ---------------------------------------------------------------------------------------------------
// Usage and finish reasons.

#[derive(Deserialize, Default)]
struct InUsage {
    prompt_tokens: Option<u64>,
    completion_tokens: Option<u64>,
    prompt_tokens_details: Option<InPromptDetails>,
    completion_tokens_details: Option<InCompletionDetails>,
}

#[derive(Deserialize, Default)]
struct InPromptDetails {
    cached_tokens: Option<u64>,
}

#[derive(Deserialize, Default)]
struct InCompletionDetails {
    reasoning_tokens: Option<u64>,
}

impl InUsage {
    fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self.prompt_tokens,
            output_tokens: self.completion_tokens,
            cache_read_tokens: self
                .prompt_tokens_details
                .as_ref()
                .and_then(|d| d.cached_tokens),
            cache_write_tokens: None,
            reasoning_tokens: self
                .completion_tokens_details
                .as_ref()
                .and_then(|d| d.reasoning_tokens),
        }
    }
}

#[derive(Serialize)]
struct OutUsage {
    prompt_tokens: u64,
    completion_tokens: u64,
    total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    prompt_tokens_details: Option<OutPromptDetails>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completion_tokens_details: Option<OutCompletionDetails>,
}

#[derive(Serialize)]
struct OutPromptDetails {
    cached_tokens: u64,
}

#[derive(Serialize)]
struct OutCompletionDetails {
    reasoning_tokens: u64,
}

fn out_usage(u: &Usage) -> OutUsage {
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    OutUsage {
        prompt_tokens: input,
        completion_tokens: output,
        total_tokens: input.saturating_add(output),
        prompt_tokens_details: u
            .cache_read_tokens
            .map(|cached_tokens| OutPromptDetails { cached_tokens }),
        completion_tokens_details: u
            .reasoning_tokens
            .map(|reasoning_tokens| OutCompletionDetails { reasoning_tokens }),
    }
}

fn stop_from(reason: &str) -> StopReason {
    match reason {
        "stop" => StopReason::EndTurn,
        "length" => StopReason::MaxTokens,
        "tool_calls" | "function_call" => StopReason::ToolUse,
        "content_filter" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn finish_reason(r: &StopReason) -> &'static str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::Other(_) => "stop",
        StopReason::MaxTokens => "length",
        StopReason::ToolUse => "tool_calls",
        StopReason::ContentFilter => "content_filter",
    }
}

// ---------------------------------------------------------------------------------------------------
// Complete answers.

#[derive(Deserialize)]
struct Response {
    id: Option<String>,
    model: Option<String>,
    created: Option<u64>,
    #[serde(default)]
    choices: Vec<InChoice>,
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InChoice {
    message: InRespMessage,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InRespMessage {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<InToolCall>>,
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let raw: Response = serde_json::from_slice(body).map_err(TranslateError::bad_upstream)?;
    let id = raw.id.unwrap_or_default();
    let mut resp = ChatResponse {
        model: raw.model.unwrap_or_default(),
        created: raw.created,
        usage: raw.usage.map(|u| u.canonical()).unwrap_or_default(),
        ..ChatResponse::default()
    };
    if let Some(choice) = raw.choices.into_iter().next() {
        let m = choice.message;
        match (m.content, m.refusal) {
            (Some(t), _) if !t.is_empty() => resp.content.push(Part::Text(t)),
            (_, Some(r)) if !r.is_empty() => resp.content.push(Part::Text(r)),
            _ => {}
        }
        for (j, tc) in m.tool_calls.unwrap_or_default().into_iter().enumerate() {
            resp.content.push(Part::ToolCall(ToolCall {
                id: tc
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{}_{j}", super::safe_id(&id))),
                name: tc.function.name,
                arguments: arguments_text(tc.function.arguments),
            }));
        }
        resp.stop_reason = choice.finish_reason.as_deref().map(stop_from);
    }
    resp.id = id;
    Ok(resp)
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: String,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: [OutChoice<'a>; 1],
    usage: OutUsage,
}

#[derive(Serialize)]
struct OutChoice<'a> {
    index: u32,
    message: OutRespMessage<'a>,
    logprobs: Option<()>,
    finish_reason: &'static str,
}

#[derive(Serialize)]
struct OutRespMessage<'a> {
    role: &'static str,
    content: Option<Cow<'a, str>>,
    refusal: Option<()>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tool_calls: Vec<OutToolCall<'a>>,
}

pub(super) fn encode_response(resp: &ChatResponse, client_model: &str) -> Vec<u8> {
    let mut tool_calls = Vec::new();
    for p in &resp.content {
        if let Part::ToolCall(c) = p {
            tool_calls.push(OutToolCall {
                id: &c.id,
                kind: "function",
                function: OutFunctionCall {
                    name: &c.name,
                    arguments: if c.arguments.trim().is_empty() {
                        "{}"
                    } else {
                        &c.arguments
                    },
                },
            });
        }
    }
    let reason = inferred_stop(resp.stop_reason.as_ref(), !tool_calls.is_empty());
    let out = OutResponse {
        id: prefixed_id("chatcmpl-", &resp.id),
        object: "chat.completion",
        created: resp.created.unwrap_or_else(now_unix),
        model: client_model,
        choices: [OutChoice {
            index: 0,
            message: OutRespMessage {
                role: "assistant",
                content: joined_text(resp.content.iter(), ""),
                refusal: None,
                tool_calls,
            },
            logprobs: None,
            finish_reason: finish_reason(&reason),
        }],
        usage: out_usage(&resp.usage),
    };
    to_body(&out)
}

// ---------------------------------------------------------------------------------------------------
// Streams, inbound.

#[derive(Deserialize)]
struct Chunk {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    choices: Vec<InChunkChoice>,
    usage: Option<InUsage>,
    error: Option<InError>,
}

#[derive(Deserialize)]
struct InChunkChoice {
    delta: Option<InDelta>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
struct InDelta {
    content: Option<String>,
    refusal: Option<String>,
    tool_calls: Option<Vec<InToolCallDelta>>,
}

#[derive(Deserialize)]
struct InToolCallDelta {
    #[serde(default)]
    index: usize,
    id: Option<String>,
    function: Option<InFunctionDelta>,
}

#[derive(Deserialize)]
struct InFunctionDelta {
    name: Option<String>,
    arguments: Option<String>,
}

#[derive(Deserialize)]
struct InError {
    message: Option<String>,
    #[serde(rename = "type")]
    kind: Option<String>,
    code: Option<Value>,
}

/// Canonical part indices: the text is part 0, the `n`th tool call to appear is part `n` (1, 2, …)
/// whatever index the provider gave it.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    started: bool,
    done: bool,
    /// Provider tool-call index → canonical part index, for the calls opened so far (at most
    /// `max_tool_calls`). A map, so a huge or sparse provider index costs nothing.
    tools: HashMap<usize, usize>,
    response_id: String,
}

impl ChunkDecoder {
    pub(crate) fn push(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
        limits: &StreamLimits,
    ) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data == "[DONE]" {
            if !self.done {
                self.done = true;
                out.push(StreamEvent::Done);
            }
            return Ok(());
        }
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Chunk = serde_json::from_str(data).map_err(TranslateError::bad_upstream)?;
        if let Some(err) = chunk.error {
            let kind = err
                .kind
                .or_else(|| err.code.as_ref().and_then(Value::as_str).map(str::to_owned))
                .unwrap_or_else(|| "server_error".to_owned());
            out.push(StreamEvent::Error {
                kind,
                message: err.message.unwrap_or_default(),
            });
            return Ok(());
        }
        if chunk.choices.is_empty() && chunk.usage.is_none() {
            // e.g. Azure's leading `prompt_filter_results` chunk (empty id and model).
            return Ok(());
        }
        if !self.started {
            self.started = true;
            self.response_id = bounded_id(chunk.id.as_deref().unwrap_or_default()).to_owned();
            out.push(StreamEvent::Start {
                id: self.response_id.clone(),
                model: chunk.model.unwrap_or_default(),
            });
        }
        if let Some(choice) = chunk.choices.into_iter().next() {
            if let Some(delta) = choice.delta {
                for text in [delta.content, delta.refusal].into_iter().flatten() {
                    if !text.is_empty() {
                        out.push(StreamEvent::TextDelta { index: 0, text });
                    }
                }
                for tc in delta.tool_calls.unwrap_or_default() {
                    let (name, args) = match tc.function {
                        Some(f) => (f.name, f.arguments),
                        None => (None, None),
                    };
                    let index = match self.tools.get(&tc.index) {
                        Some(&index) => index,
                        None => {
                            if self.tools.len() >= limits.max_tool_calls {
                                return Err(too_many_tool_calls(limits.max_tool_calls));
                            }
                            let index = self.tools.len().saturating_add(1);
                            self.tools.insert(tc.index, index);
                            let id = tc.id.filter(|id| !id.is_empty()).unwrap_or_else(|| {
                                format!("call_{}_{}", super::safe_id(&self.response_id), tc.index)
                            });
                            out.push(StreamEvent::ToolCallStart {
                                index,
                                id,
                                name: name.unwrap_or_default(),
                            });
                            index
                        }
                    };
                    if let Some(fragment) = args.filter(|a| !a.is_empty()) {
                        out.push(StreamEvent::ToolCallDelta { index, fragment });
                    }
                }
            }
            if let Some(usage) = &chunk.usage {
                out.push(StreamEvent::Usage(usage.canonical()));
            }
            if let Some(reason) = choice.finish_reason {
                out.push(StreamEvent::Stop(stop_from(&reason)));
            }
        } else if let Some(usage) = &chunk.usage {
            out.push(StreamEvent::Usage(usage.canonical()));
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams, outbound.

#[derive(Serialize)]
struct OutChunk<'a> {
    id: &'a str,
    object: &'static str,
    created: u64,
    model: &'a str,
    choices: &'a [OutChunkChoice<'a>],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage: Option<OutUsage>,
}

#[derive(Serialize)]
struct OutChunkChoice<'a> {
    index: u32,
    delta: OutDelta<'a>,
    logprobs: Option<()>,
    finish_reason: Option<&'static str>,
}

#[derive(Serialize, Default)]
struct OutDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    role: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    content: Option<&'a str>,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    tool_calls: &'a [OutToolCallDelta<'a>],
}

#[derive(Serialize)]
struct OutToolCallDelta<'a> {
    index: usize,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    #[serde(rename = "type", skip_serializing_if = "Option::is_none")]
    kind: Option<&'static str>,
    function: OutFunctionDelta<'a>,
}

#[derive(Serialize)]
struct OutFunctionDelta<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    arguments: Option<&'a str>,
}

#[derive(Serialize)]
struct OutErrorEvent<'a> {
    error: OutErrorBody<'a>,
}

#[derive(Serialize)]
struct OutErrorBody<'a> {
    message: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    param: Option<()>,
    code: Option<()>,
}

#[derive(Debug)]
pub(crate) struct ChunkEncoder {
    opts: StreamOptions,
    created: u64,
    id: String,
    started: bool,
    stopped: bool,
    done: bool,
    /// Canonical part index → OpenAI tool-call index (0, 1, … in order of appearance).
    tools: HashMap<usize, usize>,
    usage: Usage,
}

impl ChunkEncoder {
    pub(crate) fn new(opts: StreamOptions, created: u64) -> Self {
        Self {
            opts,
            created,
            id: String::new(),
            started: false,
            stopped: false,
            done: false,
            tools: HashMap::new(),
            usage: Usage::default(),
        }
    }

    pub(crate) fn set_created(&mut self, created: u64) {
        self.created = created;
    }

    /// Carries on a stream the client has up to `rp`: same id, `created` and model, and tool calls
    /// numbered after the ones it has.
    pub(crate) fn resume(&mut self, rp: &ResumePoint) {
        self.started = true;
        self.id = rp.id.clone().unwrap_or_default();
        if let Some(c) = rp.created {
            self.created = c;
        }
        if let Some(m) = &rp.model {
            self.opts.model.clone_from(m);
        }
        // Placeholder keys (never canonical indices of a continuation) hold the client's numbers.
        for k in 0..rp.tool_calls {
            self.tools.insert(usize::MAX.saturating_sub(k), k);
        }
    }

    fn chunk(&self, out: &mut Vec<u8>, delta: OutDelta<'_>, finish: Option<&'static str>) {
        let choices = [OutChunkChoice {
            index: 0,
            delta,
            logprobs: None,
            finish_reason: finish,
        }];
        write_sse(
            out,
            None,
            &OutChunk {
                id: &self.id,
                object: "chat.completion.chunk",
                created: self.created,
                model: &self.opts.model,
                choices: &choices,
                usage: None,
            },
        );
    }

    fn ensure_started(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = prefixed_id("chatcmpl-", bounded_id(id.unwrap_or("")));
        self.chunk(
            out,
            OutDelta {
                role: Some("assistant"),
                content: Some(""),
                ..OutDelta::default()
            },
            None,
        );
    }

    fn tool_index(&self, index: usize) -> Option<usize> {
        self.tools.get(&index).copied()
    }

    fn open_tool(&mut self, index: usize, id: &str, name: &str, out: &mut Vec<u8>) -> usize {
        let oi = self.tools.len();
        self.tools.insert(index, oi);
        let calls = [OutToolCallDelta {
            index: oi,
            id: Some(id),
            kind: Some("function"),
            function: OutFunctionDelta {
                name: Some(name),
                arguments: Some(""),
            },
        }];
        self.chunk(
            out,
            OutDelta {
                tool_calls: &calls,
                ..OutDelta::default()
            },
            None,
        );
        oi
    }

    pub(crate) fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => self.ensure_started(Some(id), out),
            StreamEvent::TextDelta { text, .. } => {
                self.ensure_started(None, out);
                if self.stopped || text.is_empty() {
                    return;
                }
                self.chunk(
                    out,
                    OutDelta {
                        content: Some(text),
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(None, out);
                if self.stopped || self.tool_index(*index).is_some() {
                    return;
                }
                self.open_tool(*index, id, name, out);
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                self.ensure_started(None, out);
                if self.stopped || fragment.is_empty() {
                    return;
                }
                let oi = match self.tool_index(*index) {
                    Some(oi) => oi,
                    None => {
                        let id = format!("call_{}", fallback_id());
                        self.open_tool(*index, &id, "", out)
                    }
                };
                let calls = [OutToolCallDelta {
                    index: oi,
                    id: None,
                    kind: None,
                    function: OutFunctionDelta {
                        name: None,
                        arguments: Some(fragment),
                    },
                }];
                self.chunk(
                    out,
                    OutDelta {
                        tool_calls: &calls,
                        ..OutDelta::default()
                    },
                    None,
                );
            }
            StreamEvent::Usage(u) => merge_usage(&mut self.usage, u),
            StreamEvent::Stop(reason) => {
                self.ensure_started(None, out);
                self.stop(Some(reason), out);
            }
            StreamEvent::Error { kind, message } => self.error(kind, message, out),
            StreamEvent::Done => self.finish(out),
        }
    }

    fn stop(&mut self, reason: Option<&StopReason>, out: &mut Vec<u8>) {
        if self.stopped {
            return;
        }
        self.stopped = true;
        let reason = inferred_stop(reason, !self.tools.is_empty());
        self.chunk(out, OutDelta::default(), Some(finish_reason(&reason)));
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(None, out);
        self.stop(None, out);
        if self.opts.include_usage {
            write_sse(
                out,
                None,
                &OutChunk {
                    id: &self.id,
                    object: "chat.completion.chunk",
                    created: self.created,
                    model: &self.opts.model,
                    choices: &[],
                    usage: Some(out_usage(&self.usage)),
                },
            );
        }
        out.extend_from_slice(b"data: [DONE]\n\n");
        self.done = true;
    }

    pub(crate) fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        write_sse(
            out,
            None,
            &OutErrorEvent {
                error: OutErrorBody {
                    message,
                    kind: ErrorClass::parse(kind).openai(),
                    param: None,
                    code: None,
                },
            },
        );
    }
}
