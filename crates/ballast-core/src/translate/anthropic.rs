//! Anthropic Messages ⇄ canonical: requests, complete answers and the `message_start` … `message_stop` event stream.
//!
//! Decoding: `system` (string or text blocks) and any `role: "system"` message become system segments;
//! `thinking`/`redacted_thinking` blocks are dropped with a warning (no other provider can use them);
//! `cache_control` is dropped with a warning; base64 PDF `document` blocks become `Image::Base64` with
//! media type `application/pdf`. Encoding: roles strictly alternate (same-role messages merged, empty
//! ones dropped), tool results lead their user turn, tool ids are made `[A-Za-z0-9_-]`,
//! `max_tokens` falls back to the route default, `temperature` is clamped to 1, `json_schema` maps to
//! `output_config.format` and `json_object` (no equivalent) is dropped with a warning.
//! Usage: Anthropic's `input_tokens` excludes cache reads and writes; canonical input includes them.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::openai_chat::empty_schema;
use super::{
    EncodeOptions, ErrorClass, SamplingParams, StrOrVec, StreamOptions, TranslateError, Warnings,
    alternating_turns, args_object, args_text, bounded_id, fallback_id, inferred_stop, merge_usage,
    note_unknown, prefixed_id, safe_id, to_body, write_sse,
};
use crate::api::ApiFormat;
use crate::continuation::ResumePoint;
use crate::model::{
    ChatRequest, ChatResponse, Image, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    ToolCall, ToolChoice, ToolResult, ToolSpec, Usage,
};
use crate::sse::SseEvent;

const FORMAT: ApiFormat = ApiFormat::AnthropicMessages;

/// Block types Anthropic defines that the canonical model cannot carry.
const UNTRANSLATABLE_BLOCKS: &[&str] = &[
    "server_tool_use",
    "web_search_tool_result",
    "web_fetch_tool_result",
    "code_execution_tool_result",
    "bash_code_execution_tool_result",
    "text_editor_code_execution_tool_result",
    "tool_search_tool_result",
    "mcp_tool_use",
    "mcp_tool_result",
    "container_upload",
    "search_result",
];

// ---------------------------------------------------------------------------------------------------
// Request, inbound.

#[derive(Deserialize)]
struct Request {
    #[serde(default)]
    model: String,
    messages: Vec<InMessage>,
    system: Option<StrOrVec<InBlock>>,
    max_tokens: Option<u32>,
    temperature: Option<f64>,
    top_p: Option<f64>,
    top_k: Option<u32>,
    stop_sequences: Option<Vec<String>>,
    stream: Option<bool>,
    metadata: Option<InMetadata>,
    tools: Option<Vec<InTool>>,
    tool_choice: Option<InToolChoice>,
    output_config: Option<InOutputConfig>,
    cache_control: Option<IgnoredAny>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
struct InMetadata {
    user_id: Option<String>,
}

#[derive(Deserialize)]
struct InOutputConfig {
    format: Option<InOutputFormat>,
    effort: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InOutputFormat {
    #[serde(rename = "type")]
    kind: String,
    schema: Option<Value>,
}

#[derive(Deserialize)]
struct InMessage {
    role: String,
    content: StrOrVec<InBlock>,
}

/// One content block, all shapes flattened so an unknown `type` gets a precise error.
#[derive(Deserialize)]
struct InBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    source: Option<InSource>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Box<RawValue>>,
    tool_use_id: Option<String>,
    content: Option<StrOrVec<InBlock>>,
    is_error: Option<bool>,
    cache_control: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InSource {
    #[serde(rename = "type")]
    kind: String,
    media_type: Option<String>,
    data: Option<String>,
    url: Option<String>,
}

#[derive(Deserialize)]
struct InTool {
    #[serde(rename = "type")]
    kind: Option<String>,
    name: Option<String>,
    description: Option<String>,
    input_schema: Option<Value>,
    strict: Option<bool>,
    cache_control: Option<IgnoredAny>,
}

#[derive(Deserialize)]
struct InToolChoice {
    #[serde(rename = "type")]
    kind: String,
    name: Option<String>,
    disable_parallel_tool_use: Option<bool>,
}

/// Decoding state shared across blocks.
#[derive(Default)]
struct Ctx {
    call_names: HashMap<String, String>,
    cache_control: bool,
    thinking: bool,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Place {
    System,
    User,
    Assistant,
    ToolResult,
}

fn decode_blocks(
    content: StrOrVec<InBlock>,
    path: &str,
    place: Place,
    ctx: &mut Ctx,
    out: &mut Vec<Part>,
) -> Result<(), TranslateError> {
    let blocks = match content {
        StrOrVec::Str(s) => {
            if !s.is_empty() {
                out.push(Part::Text(s));
            }
            return Ok(());
        }
        StrOrVec::Vec(b) => b,
    };
    for (j, b) in blocks.into_iter().enumerate() {
        let here = || format!("{path}[{j}]");
        let missing =
            |field: &str| TranslateError::invalid(format!("{path}[{j}].{field}"), "missing");
        let misplaced = || {
            TranslateError::invalid(
                format!("{path}[{j}].type"),
                format!("{:?} blocks are not allowed here", b.kind),
            )
        };
        if b.cache_control.is_some() {
            ctx.cache_control = true;
        }
        match b.kind.as_str() {
            "text" => {
                let text = b.text.ok_or_else(|| missing("text"))?;
                if !text.is_empty() {
                    out.push(Part::Text(text));
                }
            }
            "image" | "document" if matches!(place, Place::User | Place::ToolResult) => {
                let src = b.source.ok_or_else(|| missing("source"))?;
                match src.kind.as_str() {
                    "base64" => out.push(Part::Image(Image::Base64 {
                        media_type: src.media_type.ok_or_else(|| missing("source.media_type"))?,
                        data: src.data.ok_or_else(|| missing("source.data"))?,
                    })),
                    "url" if b.kind == "image" => out.push(Part::Image(Image::Url(
                        src.url.ok_or_else(|| missing("source.url"))?,
                    ))),
                    "text" if b.kind == "document" => {
                        let text = src.data.ok_or_else(|| missing("source.data"))?;
                        if !text.is_empty() {
                            out.push(Part::Text(text));
                        }
                    }
                    other => {
                        return Err(TranslateError::unsupported(format!(
                            "{}: {} source {other:?} cannot be translated",
                            here(),
                            b.kind
                        )));
                    }
                }
            }
            "tool_use" if place == Place::Assistant => {
                let id = b.id.ok_or_else(|| missing("id"))?;
                let name = b.name.ok_or_else(|| missing("name"))?;
                ctx.call_names.insert(id.clone(), name.clone());
                out.push(Part::ToolCall(ToolCall {
                    id,
                    name,
                    arguments: args_text(b.input.as_deref()),
                }));
            }
            "tool_result" if place == Place::User => {
                let call_id = b.tool_use_id.ok_or_else(|| missing("tool_use_id"))?;
                let mut content = Vec::new();
                if let Some(c) = b.content {
                    decode_blocks(
                        c,
                        &format!("{}.content", here()),
                        Place::ToolResult,
                        ctx,
                        &mut content,
                    )?;
                }
                out.push(Part::ToolResult(ToolResult {
                    name: ctx.call_names.get(&call_id).cloned(),
                    call_id,
                    content,
                    is_error: b.is_error.unwrap_or(false),
                }));
            }
            "thinking" | "redacted_thinking" if place == Place::Assistant => ctx.thinking = true,
            "image" | "document" | "tool_use" | "tool_result" | "thinking"
            | "redacted_thinking" => return Err(misplaced()),
            other if UNTRANSLATABLE_BLOCKS.contains(&other) => {
                return Err(TranslateError::unsupported(format!(
                    "{}: {other:?} blocks cannot be translated",
                    here()
                )));
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("{path}[{j}].type"),
                    format!("unknown content type {other:?}"),
                ));
            }
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
    let mut ctx = Ctx::default();
    let mut system_parts = Vec::new();
    if let Some(system) = raw.system {
        decode_blocks(system, "system", Place::System, &mut ctx, &mut system_parts)?;
    }
    for (i, m) in raw.messages.into_iter().enumerate() {
        let path = format!("messages[{i}].content");
        let (role, place) = match m.role.as_str() {
            "user" => (Role::User, Place::User),
            "assistant" => (Role::Assistant, Place::Assistant),
            "system" => {
                decode_blocks(m.content, &path, Place::System, &mut ctx, &mut system_parts)?;
                continue;
            }
            other => {
                return Err(TranslateError::invalid(
                    format!("messages[{i}].role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        let mut content = Vec::new();
        decode_blocks(m.content, &path, place, &mut ctx, &mut content)?;
        req.messages.push(Message { role, content });
    }
    req.system = system_parts
        .into_iter()
        .filter_map(|p| match p {
            Part::Text(t) => Some(t),
            _ => None,
        })
        .collect();
    let mut disable_parallel = None;
    for (k, t) in raw.tools.unwrap_or_default().into_iter().enumerate() {
        if t.cache_control.is_some() {
            ctx.cache_control = true;
        }
        match t.kind.as_deref() {
            None | Some("custom") => req.tools.push(ToolSpec {
                name: t.name.ok_or_else(|| {
                    TranslateError::invalid(format!("tools[{k}].name"), "missing")
                })?,
                description: t.description,
                parameters: t.input_schema.unwrap_or_else(empty_schema),
                strict: t.strict,
            }),
            Some(other) => req.dropped.push(format!("tools[{k}] ({other})")),
        }
    }
    if let Some(tc) = raw.tool_choice {
        disable_parallel = tc.disable_parallel_tool_use;
        req.tool_choice = match (tc.kind.as_str(), tc.name) {
            ("auto", _) => Some(ToolChoice::Auto),
            ("any", _) => Some(ToolChoice::Required),
            ("none", _) => Some(ToolChoice::None),
            ("tool", Some(name)) => Some(ToolChoice::Tool(name)),
            _ => {
                req.dropped.push("tool_choice".to_owned());
                None
            }
        };
    }
    req.parallel_tool_calls = disable_parallel.map(|d| !d);
    req.max_tokens = raw.max_tokens;
    req.temperature = raw.temperature;
    req.top_p = raw.top_p;
    req.top_k = raw.top_k;
    req.stop = raw.stop_sequences.unwrap_or_default();
    req.stream = raw.stream.unwrap_or(false);
    req.user = raw.metadata.and_then(|m| m.user_id);
    if let Some(oc) = raw.output_config {
        if oc.effort.is_some() {
            req.dropped.push("output_config.effort".to_owned());
        }
        match oc.format {
            Some(f) if f.kind == "json_schema" => {
                req.response_format = Some(ResponseFormat::JsonSchema {
                    name: "response".to_owned(),
                    schema: f
                        .schema
                        .unwrap_or_else(|| Value::Object(Default::default())),
                    strict: None,
                })
            }
            Some(_) => req.dropped.push("output_config.format".to_owned()),
            None => {}
        }
    }
    if raw.cache_control.is_some() {
        ctx.cache_control = true;
    }
    if ctx.cache_control {
        req.dropped.push("cache_control".to_owned());
    }
    if ctx.thinking {
        req.dropped.push("thinking blocks".to_owned());
    }
    note_unknown(&mut req.dropped, "", &raw.other);
    Ok(req)
}

// ---------------------------------------------------------------------------------------------------
// Request, outbound.

#[derive(Serialize)]
struct OutRequest<'a> {
    model: &'a str,
    max_tokens: u32,
    messages: Vec<OutMessage<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system: Option<OutSystem<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    metadata: Option<OutMetadata<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_choice: Option<OutToolChoice<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_config: Option<OutOutputConfig<'a>>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutSystem<'a> {
    Str(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
struct OutMetadata<'a> {
    user_id: &'a str,
}

#[derive(Serialize)]
struct OutOutputConfig<'a> {
    format: OutOutputFormat<'a>,
}

#[derive(Serialize)]
struct OutOutputFormat<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    schema: &'a Value,
}

#[derive(Serialize)]
struct OutMessage<'a> {
    role: &'static str,
    content: Vec<OutBlock<'a>>,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutBlock<'a> {
    Text {
        text: &'a str,
    },
    Image {
        source: OutSource<'a>,
    },
    Document {
        source: OutSource<'a>,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: &'a RawValue,
    },
    ToolResult {
        tool_use_id: Cow<'a, str>,
        #[serde(skip_serializing_if = "Option::is_none")]
        content: Option<OutResultContent<'a>>,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        is_error: bool,
    },
}

#[derive(Serialize)]
#[serde(untagged)]
enum OutResultContent<'a> {
    Str(&'a str),
    Blocks(Vec<OutBlock<'a>>),
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutSource<'a> {
    Base64 { media_type: &'a str, data: &'a str },
    Url { url: &'a str },
}

#[derive(Serialize)]
struct OutTool<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    input_schema: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    strict: Option<bool>,
}

#[derive(Serialize)]
struct OutToolChoice<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    disable_parallel_tool_use: bool,
}

const IMAGE_TYPES: &[&str] = &["image/jpeg", "image/png", "image/gif", "image/webp"];

fn media_block<'a>(img: &'a Image, path: &str) -> Result<OutBlock<'a>, TranslateError> {
    match img {
        Image::Base64 { media_type, data } if media_type == "application/pdf" => {
            Ok(OutBlock::Document {
                source: OutSource::Base64 { media_type, data },
            })
        }
        Image::Base64 { media_type, data } if IMAGE_TYPES.contains(&media_type.as_str()) => {
            Ok(OutBlock::Image {
                source: OutSource::Base64 { media_type, data },
            })
        }
        Image::Base64 { media_type, .. } => Err(TranslateError::unsupported(format!(
            "{path}: media type {} is not accepted by {FORMAT}",
            super::header_safe(media_type)
        ))),
        Image::Url(url) => Ok(OutBlock::Image {
            source: OutSource::Url { url },
        }),
    }
}

fn tool_input<'a>(arguments: &'a str, path: &str) -> Result<&'a RawValue, TranslateError> {
    args_object(arguments).ok_or_else(|| {
        TranslateError::unsupported(format!(
            "{path}: tool call arguments are not a JSON object, which {FORMAT} requires"
        ))
    })
}

pub(super) fn encode_request(
    req: &ChatRequest,
    opts: &EncodeOptions,
    sampling: &SamplingParams,
    warnings: &mut Warnings,
) -> Result<Vec<u8>, TranslateError> {
    let mut messages = Vec::with_capacity(req.messages.len());
    for turn in alternating_turns(&req.messages) {
        let path = format!("messages[{}]", turn.first_index);
        let mut results = Vec::new();
        let mut rest = Vec::new();
        for p in turn.parts {
            match (p, turn.role) {
                (Part::Text(t), _) => rest.push(OutBlock::Text { text: t }),
                (Part::Image(img), Role::User) => rest.push(media_block(img, &path)?),
                (Part::ToolCall(c), Role::Assistant) => rest.push(OutBlock::ToolUse {
                    id: safe_id(&c.id),
                    name: &c.name,
                    input: tool_input(&c.arguments, &path)?,
                }),
                (Part::ToolResult(r), Role::User) => {
                    let content = match r.content.as_slice() {
                        [] => None,
                        [Part::Text(t)] => Some(OutResultContent::Str(t)),
                        parts => {
                            let mut blocks = Vec::with_capacity(parts.len());
                            for p in parts {
                                match p {
                                    Part::Text(t) if t.is_empty() => {}
                                    Part::Text(t) => blocks.push(OutBlock::Text { text: t }),
                                    Part::Image(img) => blocks.push(media_block(img, &path)?),
                                    _ => {
                                        return Err(TranslateError::invalid(
                                            path.clone(),
                                            "a tool result may hold only text and images",
                                        ));
                                    }
                                }
                            }
                            Some(OutResultContent::Blocks(blocks))
                        }
                    };
                    results.push(OutBlock::ToolResult {
                        tool_use_id: safe_id(&r.call_id),
                        content,
                        is_error: r.is_error,
                    });
                }
                (Part::Image(_), Role::Assistant) => {
                    return Err(TranslateError::unsupported(format!(
                        "{path}: {FORMAT} assistant messages cannot hold images"
                    )));
                }
                (Part::ToolCall(_), Role::User) | (Part::ToolResult(_), Role::Assistant) => {
                    return Err(TranslateError::invalid(
                        path,
                        "tool calls belong to assistant messages and tool results to user messages",
                    ));
                }
            }
        }
        // Tool results must lead the user turn that follows the tool use.
        results.append(&mut rest);
        messages.push(OutMessage {
            role: match turn.role {
                Role::User => "user",
                Role::Assistant => "assistant",
            },
            content: results,
        });
    }
    if messages.is_empty() {
        return Err(TranslateError::unsupported(format!(
            "{FORMAT} needs at least one non-empty message"
        )));
    }
    let system_segments: Vec<&String> = req.system.iter().filter(|s| !s.is_empty()).collect();
    let system = match system_segments.as_slice() {
        [] => None,
        [one] => Some(OutSystem::Str(one)),
        many => Some(OutSystem::Blocks(
            many.iter().map(|s| OutBlock::Text { text: s }).collect(),
        )),
    };
    let temperature = sampling.temperature.map(|t| {
        if t > 1.0 {
            warnings.push(format!("temperature {t} clamped to 1 for {FORMAT}"));
            1.0
        } else {
            t
        }
    });
    let has_tools = !req.tools.is_empty();
    let disable = req.parallel_tool_calls == Some(false);
    let tool_choice = if !has_tools {
        None
    } else {
        match &req.tool_choice {
            None if disable => Some(("auto", None)),
            None => None,
            Some(ToolChoice::Auto) => Some(("auto", None)),
            Some(ToolChoice::Required) => Some(("any", None)),
            Some(ToolChoice::Tool(name)) => Some(("tool", Some(name.as_str()))),
            Some(ToolChoice::None) => Some(("none", None)),
        }
        .map(|(kind, name)| OutToolChoice {
            kind,
            name,
            disable_parallel_tool_use: disable && kind != "none",
        })
    };
    let output_config = match &req.response_format {
        None | Some(ResponseFormat::Text) => None,
        Some(ResponseFormat::JsonObject) => {
            warnings.dropped("response_format (json_object)", FORMAT);
            None
        }
        Some(ResponseFormat::JsonSchema { schema, .. }) => Some(OutOutputConfig {
            format: OutOutputFormat {
                kind: "json_schema",
                schema,
            },
        }),
    };
    let out = OutRequest {
        model: opts.upstream_model,
        max_tokens: req.max_tokens.unwrap_or(opts.default_max_tokens),
        messages,
        system,
        temperature,
        top_p: sampling.top_p,
        top_k: sampling.top_k,
        stop_sequences: &req.stop,
        stream: req.stream,
        metadata: req.user.as_deref().map(|user_id| OutMetadata { user_id }),
        tools: req
            .tools
            .iter()
            .map(|t| OutTool {
                name: &t.name,
                description: t.description.as_deref(),
                input_schema: &t.parameters,
                strict: t.strict,
            })
            .collect(),
        tool_choice,
        output_config,
    };
    Ok(to_body(&out))
}

// ---------------------------------------------------------------------------------------------------
// Usage and stop reasons.

#[derive(Deserialize, Default, Clone, Copy, Debug)]
struct InUsage {
    input_tokens: Option<u64>,
    output_tokens: Option<u64>,
    cache_creation_input_tokens: Option<u64>,
    cache_read_input_tokens: Option<u64>,
}

impl InUsage {
    fn merge(&mut self, other: &InUsage) {
        let pick = |a: &mut Option<u64>, b: Option<u64>| {
            if b.is_some() {
                *a = b;
            }
        };
        pick(&mut self.input_tokens, other.input_tokens);
        pick(&mut self.output_tokens, other.output_tokens);
        pick(
            &mut self.cache_creation_input_tokens,
            other.cache_creation_input_tokens,
        );
        pick(
            &mut self.cache_read_input_tokens,
            other.cache_read_input_tokens,
        );
    }

    fn canonical(&self) -> Usage {
        Usage {
            input_tokens: self.input_tokens.map(|i| {
                i.saturating_add(self.cache_read_input_tokens.unwrap_or(0))
                    .saturating_add(self.cache_creation_input_tokens.unwrap_or(0))
            }),
            output_tokens: self.output_tokens,
            cache_read_tokens: self.cache_read_input_tokens,
            cache_write_tokens: self.cache_creation_input_tokens,
            reasoning_tokens: None,
        }
    }
}

#[derive(Serialize)]
struct OutUsage {
    input_tokens: u64,
    output_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    cache_read_input_tokens: Option<u64>,
}

fn out_usage(u: &Usage) -> OutUsage {
    let cached = u
        .cache_read_tokens
        .unwrap_or(0)
        .saturating_add(u.cache_write_tokens.unwrap_or(0));
    OutUsage {
        input_tokens: u.input_tokens.unwrap_or(0).saturating_sub(cached),
        output_tokens: u.output_tokens.unwrap_or(0),
        cache_creation_input_tokens: u.cache_write_tokens,
        cache_read_input_tokens: u.cache_read_tokens,
    }
}

fn stop_from(reason: &str, sequence: Option<String>) -> StopReason {
    match reason {
        "end_turn" => StopReason::EndTurn,
        "max_tokens" | "model_context_window_exceeded" => StopReason::MaxTokens,
        "stop_sequence" => StopReason::StopSequence(sequence),
        "tool_use" => StopReason::ToolUse,
        "refusal" => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn stop_reason(r: &StopReason) -> (&'static str, Option<&str>) {
    match r {
        StopReason::EndTurn => ("end_turn", None),
        StopReason::MaxTokens => ("max_tokens", None),
        StopReason::StopSequence(s) => ("stop_sequence", s.as_deref()),
        StopReason::ToolUse => ("tool_use", None),
        StopReason::ContentFilter => ("refusal", None),
        StopReason::Other(o) if o == "pause_turn" => ("pause_turn", None),
        StopReason::Other(_) => ("end_turn", None),
    }
}

// ---------------------------------------------------------------------------------------------------
// Complete answers.

#[derive(Deserialize)]
struct Response {
    id: Option<String>,
    model: Option<String>,
    #[serde(default)]
    content: Vec<InRespBlock>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InRespBlock {
    #[serde(rename = "type")]
    kind: String,
    text: Option<String>,
    id: Option<String>,
    name: Option<String>,
    input: Option<Box<RawValue>>,
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let raw: Response = serde_json::from_slice(body).map_err(TranslateError::bad_upstream)?;
    let mut content = Vec::with_capacity(raw.content.len());
    for (j, b) in raw.content.into_iter().enumerate() {
        match b.kind.as_str() {
            "text" => {
                if let Some(t) = b.text.filter(|t| !t.is_empty()) {
                    content.push(Part::Text(t));
                }
            }
            "tool_use" => content.push(Part::ToolCall(ToolCall {
                id: b
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("toolu_{j}")),
                name: b.name.unwrap_or_default(),
                arguments: args_text(b.input.as_deref()),
            })),
            // Thinking and server-tool blocks have no canonical form; the answer is the rest.
            _ => {}
        }
    }
    Ok(ChatResponse {
        id: raw.id.unwrap_or_default(),
        model: raw.model.unwrap_or_default(),
        created: None,
        content,
        stop_reason: raw
            .stop_reason
            .as_deref()
            .map(|r| stop_from(r, raw.stop_sequence)),
        usage: raw.usage.map(|u| u.canonical()).unwrap_or_default(),
    })
}

#[derive(Serialize)]
struct OutResponse<'a> {
    id: String,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: Vec<OutRespBlock<'a>>,
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutRespBlock<'a> {
    Text {
        text: &'a str,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Input<'a>,
    },
}

/// A tool input: the call's JSON object, or `{}` when the canonical arguments are not an object.
#[derive(Serialize)]
#[serde(untagged)]
enum Input<'a> {
    Raw(&'a RawValue),
    Empty(Empty),
}

fn input_of(arguments: &str) -> Input<'_> {
    args_object(arguments).map_or(Input::Empty(Empty {}), Input::Raw)
}

fn tool_id(id: &str) -> Cow<'_, str> {
    if id.is_empty() {
        Cow::Owned(format!("toolu_{}", fallback_id()))
    } else {
        Cow::Borrowed(id)
    }
}

pub(super) fn encode_response(resp: &ChatResponse, client_model: &str) -> Vec<u8> {
    let mut content = Vec::with_capacity(resp.content.len());
    let mut saw_tool = false;
    for p in &resp.content {
        match p {
            Part::Text(t) if !t.is_empty() => content.push(OutRespBlock::Text { text: t }),
            Part::ToolCall(c) => {
                saw_tool = true;
                content.push(OutRespBlock::ToolUse {
                    id: tool_id(&c.id),
                    name: &c.name,
                    input: input_of(&c.arguments),
                });
            }
            _ => {}
        }
    }
    let reason = inferred_stop(resp.stop_reason.as_ref(), saw_tool);
    let (stop_reason, stop_sequence) = stop_reason(&reason);
    let out = OutResponse {
        id: prefixed_id("msg_", &resp.id),
        kind: "message",
        role: "assistant",
        model: client_model,
        content,
        stop_reason,
        stop_sequence,
        usage: out_usage(&resp.usage),
    };
    to_body(&out)
}

// ---------------------------------------------------------------------------------------------------
// Streams, inbound.

#[derive(Deserialize)]
struct InEvent {
    #[serde(rename = "type")]
    kind: String,
    message: Option<InStartMessage>,
    index: Option<usize>,
    content_block: Option<InRespBlock>,
    delta: Option<InDelta>,
    usage: Option<InUsage>,
    error: Option<InError>,
}

#[derive(Deserialize)]
struct InStartMessage {
    id: Option<String>,
    model: Option<String>,
    usage: Option<InUsage>,
}

#[derive(Deserialize)]
struct InDelta {
    #[serde(rename = "type")]
    kind: Option<String>,
    text: Option<String>,
    partial_json: Option<String>,
    stop_reason: Option<String>,
    stop_sequence: Option<String>,
}

#[derive(Deserialize)]
struct InError {
    #[serde(rename = "type")]
    kind: Option<String>,
    message: Option<String>,
}

/// Canonical part index = Anthropic block index (skipped blocks leave gaps).
#[derive(Debug, Default)]
pub(crate) struct EventDecoder {
    usage: InUsage,
}

impl EventDecoder {
    pub(crate) fn push(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError> {
        if ev.data.trim().is_empty() {
            return Ok(());
        }
        let e: InEvent = serde_json::from_str(&ev.data).map_err(TranslateError::bad_upstream)?;
        let index = e.index.unwrap_or(0);
        match e.kind.as_str() {
            "message_start" => {
                let m = e
                    .message
                    .ok_or_else(|| TranslateError::upstream("message_start without message"))?;
                out.push(StreamEvent::Start {
                    id: bounded_id(m.id.as_deref().unwrap_or_default()).to_owned(),
                    model: m.model.unwrap_or_default(),
                });
                if let Some(u) = m.usage {
                    self.usage.merge(&u);
                    out.push(StreamEvent::Usage(self.usage.canonical()));
                }
            }
            "content_block_start" => {
                let b = e
                    .content_block
                    .ok_or_else(|| TranslateError::upstream("content_block_start without block"))?;
                match b.kind.as_str() {
                    "text" => {
                        if let Some(text) = b.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { index, text });
                        }
                    }
                    "tool_use" => {
                        out.push(StreamEvent::ToolCallStart {
                            index,
                            id: b.id.unwrap_or_else(|| format!("toolu_{index}")),
                            name: b.name.unwrap_or_default(),
                        });
                        // Real streams open with `input: {}` and send the JSON as deltas; a proxy
                        // may send it whole here instead.
                        if let Some(input) = b.input.filter(|i| {
                            let s = i.get().trim();
                            s != "{}" && s != "null" && !s.is_empty()
                        }) {
                            out.push(StreamEvent::ToolCallDelta {
                                index,
                                fragment: input.get().to_owned(),
                            });
                        }
                    }
                    _ => {}
                }
            }
            "content_block_delta" => {
                let d = e
                    .delta
                    .ok_or_else(|| TranslateError::upstream("content_block_delta without delta"))?;
                match d.kind.as_deref() {
                    Some("text_delta") => {
                        if let Some(text) = d.text.filter(|t| !t.is_empty()) {
                            out.push(StreamEvent::TextDelta { index, text });
                        }
                    }
                    Some("input_json_delta") => {
                        if let Some(fragment) = d.partial_json.filter(|f| !f.is_empty()) {
                            out.push(StreamEvent::ToolCallDelta { index, fragment });
                        }
                    }
                    _ => {}
                }
            }
            "message_delta" => {
                if let Some(u) = e.usage {
                    self.usage.merge(&u);
                    out.push(StreamEvent::Usage(self.usage.canonical()));
                }
                if let Some(d) = e.delta
                    && let Some(reason) = d.stop_reason
                {
                    out.push(StreamEvent::Stop(stop_from(&reason, d.stop_sequence)));
                }
            }
            "message_stop" => out.push(StreamEvent::Done),
            "error" => {
                let err = e.error.unwrap_or(InError {
                    kind: None,
                    message: None,
                });
                out.push(StreamEvent::Error {
                    kind: err.kind.unwrap_or_else(|| "api_error".to_owned()),
                    message: err.message.unwrap_or_default(),
                });
            }
            // ping, content_block_stop and event types added later carry nothing we need.
            _ => {}
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams, outbound.

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutEvent<'a> {
    MessageStart {
        message: OutStartMessage<'a>,
    },
    Ping,
    ContentBlockStart {
        index: usize,
        content_block: OutStartBlock<'a>,
    },
    ContentBlockDelta {
        index: usize,
        delta: OutDelta<'a>,
    },
    ContentBlockStop {
        index: usize,
    },
    MessageDelta {
        delta: OutMessageDelta<'a>,
        usage: OutUsage,
    },
    MessageStop,
    Error {
        error: OutError<'a>,
    },
}

impl OutEvent<'_> {
    fn name(&self) -> &'static str {
        match self {
            OutEvent::MessageStart { .. } => "message_start",
            OutEvent::Ping => "ping",
            OutEvent::ContentBlockStart { .. } => "content_block_start",
            OutEvent::ContentBlockDelta { .. } => "content_block_delta",
            OutEvent::ContentBlockStop { .. } => "content_block_stop",
            OutEvent::MessageDelta { .. } => "message_delta",
            OutEvent::MessageStop => "message_stop",
            OutEvent::Error { .. } => "error",
        }
    }
}

#[derive(Serialize)]
struct OutStartMessage<'a> {
    id: &'a str,
    #[serde(rename = "type")]
    kind: &'static str,
    role: &'static str,
    model: &'a str,
    content: [(); 0],
    stop_reason: Option<()>,
    stop_sequence: Option<()>,
    usage: OutUsage,
}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutStartBlock<'a> {
    Text {
        text: &'static str,
    },
    ToolUse {
        id: Cow<'a, str>,
        name: &'a str,
        input: Empty,
    },
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
enum OutDelta<'a> {
    TextDelta { text: &'a str },
    InputJsonDelta { partial_json: &'a str },
}

#[derive(Serialize)]
struct OutMessageDelta<'a> {
    stop_reason: &'static str,
    stop_sequence: Option<&'a str>,
}

#[derive(Serialize)]
struct OutError<'a> {
    #[serde(rename = "type")]
    kind: &'static str,
    message: &'a str,
}

fn emit(out: &mut Vec<u8>, ev: &OutEvent<'_>) {
    write_sse(out, Some(ev.name()), ev);
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BlockKind {
    Text,
    Tool,
}

#[derive(Debug)]
pub(crate) struct EventEncoder {
    opts: StreamOptions,
    id: String,
    started: bool,
    done: bool,
    /// The open block: (canonical index, Anthropic block index, kind).
    open: Option<(usize, usize, BlockKind)>,
    next_block: usize,
    /// Canonical index → block index of the last tool block opened for it (for stray late deltas).
    tool_blocks: HashMap<usize, usize>,
    stop: Option<StopReason>,
    usage: Usage,
    /// What `message_start` says of input tokens when the upstream has not said yet.
    input_estimate: Option<u64>,
}

impl EventEncoder {
    pub(crate) fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            started: false,
            done: false,
            open: None,
            next_block: 0,
            tool_blocks: HashMap::new(),
            stop: None,
            usage: Usage::default(),
            input_estimate: None,
        }
    }

    pub(crate) fn set_input_estimate(&mut self, tokens: u64) {
        self.input_estimate = Some(tokens);
    }

    /// Carries on a stream the client has up to `rp`: its `message_start` was sent, its blocks are
    /// numbered after the client's, and an open text block is continued as canonical part 0.
    pub(crate) fn resume(&mut self, rp: &ResumePoint) {
        self.started = true;
        self.id = rp.id.clone().unwrap_or_default();
        self.next_block = rp.blocks;
        // An open text block continues as canonical part 0; another open block (thinking) takes
        // no canonical part, so the next content closes it first.
        self.open = rp
            .open_block
            .map(|(b, text)| (if text { 0 } else { usize::MAX }, b, BlockKind::Text));
        self.usage = rp.usage;
    }

    fn ensure_started(&mut self, id: Option<&str>, out: &mut Vec<u8>) {
        if self.started {
            return;
        }
        self.started = true;
        self.id = prefixed_id("msg_", bounded_id(id.unwrap_or("")));
        let mut usage = out_usage(&self.usage);
        if self.usage.input_tokens.is_none()
            && let Some(estimate) = self.input_estimate
        {
            usage.input_tokens = estimate;
        }
        emit(
            out,
            &OutEvent::MessageStart {
                message: OutStartMessage {
                    id: &self.id,
                    kind: "message",
                    role: "assistant",
                    model: &self.opts.model,
                    content: [],
                    stop_reason: None,
                    stop_sequence: None,
                    usage,
                },
            },
        );
        emit(out, &OutEvent::Ping);
    }

    fn close_open(&mut self, out: &mut Vec<u8>) {
        if let Some((_, block, _)) = self.open.take() {
            emit(out, &OutEvent::ContentBlockStop { index: block });
        }
    }

    fn open_block(
        &mut self,
        index: usize,
        kind: BlockKind,
        block: OutStartBlock<'_>,
        out: &mut Vec<u8>,
    ) -> usize {
        self.close_open(out);
        let b = self.next_block;
        self.next_block = b.saturating_add(1);
        self.open = Some((index, b, kind));
        if kind == BlockKind::Tool {
            self.tool_blocks.insert(index, b);
        }
        emit(
            out,
            &OutEvent::ContentBlockStart {
                index: b,
                content_block: block,
            },
        );
        b
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
                let block = match self.open {
                    Some((i, b, BlockKind::Text)) if i == *index => b,
                    _ => self.open_block(
                        *index,
                        BlockKind::Text,
                        OutStartBlock::Text { text: "" },
                        out,
                    ),
                };
                emit(
                    out,
                    &OutEvent::ContentBlockDelta {
                        index: block,
                        delta: OutDelta::TextDelta { text },
                    },
                );
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                self.ensure_started(None, out);
                if self.stop.is_some() {
                    return;
                }
                self.open_block(
                    *index,
                    BlockKind::Tool,
                    OutStartBlock::ToolUse {
                        id: tool_id(id),
                        name,
                        input: Empty {},
                    },
                    out,
                );
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                self.ensure_started(None, out);
                if self.stop.is_some() || fragment.is_empty() {
                    return;
                }
                let block = match self.open {
                    Some((i, b, BlockKind::Tool)) if i == *index => b,
                    _ => match self.tool_blocks.get(index) {
                        Some(&b) => b,
                        None => self.open_block(
                            *index,
                            BlockKind::Tool,
                            OutStartBlock::ToolUse {
                                id: tool_id(""),
                                name: "",
                                input: Empty {},
                            },
                            out,
                        ),
                    },
                };
                emit(
                    out,
                    &OutEvent::ContentBlockDelta {
                        index: block,
                        delta: OutDelta::InputJsonDelta {
                            partial_json: fragment,
                        },
                    },
                );
            }
            StreamEvent::Usage(u) => merge_usage(&mut self.usage, u),
            StreamEvent::Stop(reason) => {
                self.ensure_started(None, out);
                self.close_open(out);
                if self.stop.is_none() {
                    self.stop = Some(reason.clone());
                }
            }
            StreamEvent::Error { kind, message } => self.error(kind, message, out),
            StreamEvent::Done => self.finish(out),
        }
    }

    pub(crate) fn finish(&mut self, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.ensure_started(None, out);
        self.close_open(out);
        let reason = inferred_stop(self.stop.as_ref(), !self.tool_blocks.is_empty());
        let (stop_reason, stop_sequence) = stop_reason(&reason);
        emit(
            out,
            &OutEvent::MessageDelta {
                delta: OutMessageDelta {
                    stop_reason,
                    stop_sequence,
                },
                usage: out_usage(&self.usage),
            },
        );
        emit(out, &OutEvent::MessageStop);
        self.done = true;
    }

    pub(crate) fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        emit(
            out,
            &OutEvent::Error {
                error: OutError {
                    kind: ErrorClass::parse(kind).anthropic(),
                    message,
                },
            },
        );
    }
}
