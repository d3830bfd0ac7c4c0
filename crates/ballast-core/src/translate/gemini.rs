//! Gemini `generateContent` ⇄ canonical: requests, complete answers and `streamGenerateContent?alt=sse` chunks.
//!
//! Gemini has no tool-call ids on the wire. Decoding synthesises deterministic ones (a `functionCall`'s
//! own `id` wins when present): `call_{turn}_{n}` in requests, `call_{responseId}_{n}` in answers, and a
//! `functionResponse` takes the id of the first unanswered call of the same name in the previous model
//! turn. Encoding pairs a result with its call by name (from `ToolResult::name` or the matching call
//! earlier in the conversation) and sends no ids upstream; answers rendered *for* a Gemini client do
//! carry the canonical ids so they survive the client's round trip. Results are sent as
//! `{"output": text}` or `{"error": text}`, as the API documents. Tool schemas go out as
//! `parametersJsonSchema` / `responseJsonSchema` (full JSON Schema); inbound OpenAPI-style
//! `parameters` / `responseSchema` have their upper-case `type` names lowered. Every replayed model turn
//! with function calls gets Google's documented placeholder `thoughtSignature` on its first call, as
//! Gemini 3 models reject replayed calls without one. Image URLs other than Gemini file URIs are
//! unsupported (Gemini does not fetch them).

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};

use serde::de::IgnoredAny;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use serde_json::value::RawValue;

use super::openai_chat::empty_schema;
use super::{
    EncodeOptions, ErrorClass, SamplingParams, StreamOptions, TranslateError, Warnings,
    alternating_turns, args_object, args_text, bounded_id, fallback_id, inferred_stop, merge_usage,
    note_unknown, safe_id, to_body, write_sse,
};
use crate::api::ApiFormat;
use crate::continuation::ResumePoint;
use crate::model::{
    ChatRequest, ChatResponse, Image, Message, Part, ResponseFormat, Role, StopReason, StreamEvent,
    ToolCall, ToolChoice, ToolResult, ToolSpec, Usage,
};
use crate::sse::SseEvent;

const FORMAT: ApiFormat = ApiFormat::Gemini;

/// Google's documented placeholder for function calls Gemini did not produce itself.
const PLACEHOLDER_SIGNATURE: &str = "skip_thought_signature_validator";

const FILTER_REASONS: &[&str] = &[
    "SAFETY",
    "RECITATION",
    "BLOCKLIST",
    "PROHIBITED_CONTENT",
    "SPII",
    "IMAGE_SAFETY",
    "IMAGE_PROHIBITED_CONTENT",
    "IMAGE_RECITATION",
];

const OTHER_REASONS: &[&str] = &[
    "LANGUAGE",
    "OTHER",
    "MALFORMED_FUNCTION_CALL",
    "UNEXPECTED_TOOL_CALL",
    "TOO_MANY_TOOL_CALLS",
    "NO_IMAGE",
    "IMAGE_OTHER",
    "FINISH_REASON_UNSPECIFIED",
];

// ---------------------------------------------------------------------------------------------------
// Shared wire pieces (requests, answers and chunks use the same `Content`).

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InContent {
    role: Option<String>,
    #[serde(default)]
    parts: Vec<InPart>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPart {
    text: Option<String>,
    thought: Option<bool>,
    #[serde(alias = "inline_data")]
    inline_data: Option<InBlob>,
    #[serde(alias = "file_data")]
    file_data: Option<InFileData>,
    #[serde(alias = "function_call")]
    function_call: Option<InFunctionCall>,
    #[serde(alias = "function_response")]
    function_response: Option<InFunctionResponse>,
    #[serde(alias = "executable_code")]
    executable_code: Option<IgnoredAny>,
    #[serde(alias = "code_execution_result")]
    code_execution_result: Option<IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InBlob {
    #[serde(alias = "mime_type")]
    mime_type: String,
    data: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InFileData {
    #[serde(alias = "file_uri")]
    file_uri: String,
}

#[derive(Deserialize)]
struct InFunctionCall {
    id: Option<String>,
    #[serde(default)]
    name: String,
    args: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct InFunctionResponse {
    id: Option<String>,
    #[serde(default)]
    name: String,
    response: Option<Value>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutContent<'a> {
    role: &'static str,
    parts: Vec<OutPart<'a>>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutPart<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    text: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    inline_data: Option<OutBlob<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    file_data: Option<OutFileData<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_call: Option<OutFunctionCall<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    function_response: Option<OutFunctionResponse<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thought_signature: Option<&'static str>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutBlob<'a> {
    mime_type: &'a str,
    data: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFileData<'a> {
    mime_type: &'static str,
    file_uri: &'a str,
}

#[derive(Serialize)]
struct OutFunctionCall<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    name: &'a str,
    args: Args<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum Args<'a> {
    Raw(&'a RawValue),
    Empty(Empty),
}

#[derive(Serialize)]
struct Empty {}

fn args_of(arguments: &str) -> Args<'_> {
    args_object(arguments).map_or(Args::Empty(Empty {}), Args::Raw)
}

#[derive(Serialize)]
struct OutFunctionResponse<'a> {
    name: &'a str,
    response: OutResult<'a>,
}

#[derive(Serialize)]
struct OutResult<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    output: Option<Cow<'a, str>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<Cow<'a, str>>,
}

/// Deepest a schema is walked by [`lowercase_types`]. `serde_json` already refuses input nested
/// deeper than 128, so this only makes the bound explicit: the walk never recurses further.
const MAX_SCHEMA_DEPTH: usize = 128;

/// Lowers OpenAPI-style type names (`"OBJECT"`) to JSON Schema's (`"object"`), recursively (down to
/// [`MAX_SCHEMA_DEPTH`]; anything deeper is left as is).
fn lowercase_types(v: &mut Value) {
    lowercase_types_within(v, MAX_SCHEMA_DEPTH);
}

fn lowercase_types_within(v: &mut Value, depth: usize) {
    let Some(depth) = depth.checked_sub(1) else {
        return;
    };
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                match (k.as_str(), child) {
                    ("type", Value::String(s)) => s.make_ascii_lowercase(),
                    ("enum" | "default" | "example" | "const", _) => {}
                    (_, child) => lowercase_types_within(child, depth),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| lowercase_types_within(item, depth)),
        _ => {}
    }
}

fn text_of(v: Value) -> String {
    match v {
        Value::String(s) => s,
        other => other.to_string(),
    }
}

/// A `functionResponse.response` object → (content text, is_error).
fn result_of(response: Option<Value>) -> (Vec<Part>, bool) {
    let Some(Value::Object(mut map)) = response else {
        return (Vec::new(), false);
    };
    let (text, is_error) = if map.len() == 1 {
        if let Some(e) = map.remove("error") {
            (text_of(e), true)
        } else if let Some(o) = map.remove("output") {
            (text_of(o), false)
        } else if let Some(Value::String(s)) = map.get("result").or_else(|| map.get("content")) {
            (s.clone(), false)
        } else {
            (Value::Object(map).to_string(), false)
        }
    } else if map.is_empty() {
        (String::new(), false)
    } else {
        (Value::Object(map).to_string(), false)
    };
    let content = if text.is_empty() {
        Vec::new()
    } else {
        vec![Part::Text(text)]
    };
    (content, is_error)
}

fn call_id(response_id: Option<&str>, n: usize, name: &str) -> String {
    match response_id.filter(|r| !r.is_empty()) {
        Some(r) => format!("call_{}_{n}", safe_id(r)),
        None => format!("call_{n}_{}", safe_id(name)),
    }
}

fn guess_mime(uri: &str) -> &'static str {
    let lower = uri.rsplit('.').next().unwrap_or("").to_ascii_lowercase();
    match lower.as_str() {
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "pdf" => "application/pdf",
        _ => "image/png",
    }
}

// ---------------------------------------------------------------------------------------------------
// Request, inbound.

/// The calls of the latest model turn, for pairing `functionResponse`s with them: by id, or (no id)
/// the first unanswered call of the same name. Indexed both ways, so pairing costs the same however
/// many calls a turn holds.
#[derive(Default)]
struct PendingCalls {
    /// (id, answered), in order.
    calls: Vec<(String, bool)>,
    /// The first position of each id.
    by_id: HashMap<String, usize>,
    /// Positions of the calls of each name, first first (answered ones are dropped lazily).
    by_name: HashMap<String, VecDeque<usize>>,
}

impl PendingCalls {
    fn clear(&mut self) {
        self.calls.clear();
        self.by_id.clear();
        self.by_name.clear();
    }

    fn push(&mut self, id: &str, name: &str) {
        let k = self.calls.len();
        self.by_id.entry(id.to_owned()).or_insert(k);
        self.by_name
            .entry(name.to_owned())
            .or_default()
            .push_back(k);
        self.calls.push((id.to_owned(), false));
    }

    fn answer_id(&mut self, id: &str) {
        if let Some(call) = self.by_id.get(id).and_then(|&k| self.calls.get_mut(k)) {
            call.1 = true;
        }
    }

    /// The id of the first unanswered call named `name`, now answered.
    fn answer_name(&mut self, name: &str) -> Option<String> {
        let queue = self.by_name.get_mut(name)?;
        while let Some(k) = queue.pop_front() {
            if let Some(call) = self.calls.get_mut(k)
                && !call.1
            {
                call.1 = true;
                return Some(call.0.clone());
            }
        }
        None
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Request {
    #[serde(default)]
    contents: Vec<InContent>,
    #[serde(alias = "system_instruction")]
    system_instruction: Option<InContent>,
    tools: Option<Vec<InTool>>,
    #[serde(alias = "tool_config")]
    tool_config: Option<InToolConfig>,
    #[serde(alias = "generation_config")]
    generation_config: Option<InGenerationConfig>,
    #[serde(alias = "cached_content")]
    cached_content: Option<String>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InTool {
    #[serde(alias = "function_declarations")]
    function_declarations: Option<Vec<InFunctionDecl>>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InFunctionDecl {
    name: String,
    description: Option<String>,
    parameters: Option<Value>,
    #[serde(alias = "parameters_json_schema")]
    parameters_json_schema: Option<Value>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InToolConfig {
    #[serde(alias = "function_calling_config")]
    function_calling_config: Option<InFunctionCallingConfig>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InFunctionCallingConfig {
    mode: Option<String>,
    #[serde(alias = "allowed_function_names")]
    allowed_function_names: Option<Vec<String>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InGenerationConfig {
    #[serde(alias = "max_output_tokens")]
    max_output_tokens: Option<u32>,
    temperature: Option<f64>,
    #[serde(alias = "top_p")]
    top_p: Option<f64>,
    #[serde(alias = "top_k")]
    top_k: Option<f64>,
    #[serde(alias = "stop_sequences")]
    stop_sequences: Option<Vec<String>>,
    #[serde(alias = "response_mime_type")]
    response_mime_type: Option<String>,
    #[serde(alias = "response_schema")]
    response_schema: Option<Value>,
    #[serde(alias = "response_json_schema")]
    response_json_schema: Option<Value>,
    #[serde(alias = "candidate_count")]
    candidate_count: Option<u32>,
    #[serde(flatten)]
    other: BTreeMap<String, IgnoredAny>,
}

pub(super) fn decode_request(body: &[u8]) -> Result<ChatRequest, TranslateError> {
    let raw: Request = serde_json::from_slice(body).map_err(TranslateError::bad_body)?;
    if raw.cached_content.is_some() {
        return Err(TranslateError::unsupported(
            "cachedContent refers to context stored at Google and cannot be translated",
        ));
    }
    let mut req = ChatRequest::default();
    if let Some(si) = raw.system_instruction {
        req.system = si
            .parts
            .into_iter()
            .filter_map(|p| p.text.filter(|t| !t.is_empty()))
            .collect();
    }
    let mut thoughts = false;
    let mut pending = PendingCalls::default();
    for (t, c) in raw.contents.into_iter().enumerate() {
        let role = match c.role.as_deref() {
            None | Some("user") | Some("function") => Role::User,
            Some("model") => Role::Assistant,
            Some(other) => {
                return Err(TranslateError::invalid(
                    format!("contents[{t}].role"),
                    format!("unknown role {other:?}"),
                ));
            }
        };
        if role == Role::Assistant {
            pending.clear();
        }
        let mut content = Vec::with_capacity(c.parts.len());
        let mut n: usize = 0;
        for (j, p) in c.parts.into_iter().enumerate() {
            let path = || format!("contents[{t}].parts[{j}]");
            if p.thought == Some(true) {
                thoughts = true;
                continue;
            }
            if p.executable_code.is_some() || p.code_execution_result.is_some() {
                return Err(TranslateError::unsupported(format!(
                    "{}: code execution parts cannot be translated",
                    path()
                )));
            }
            if let Some(text) = p.text {
                if !text.is_empty() {
                    content.push(Part::Text(text));
                }
            } else if let Some(blob) = p.inline_data {
                content.push(Part::Image(Image::Base64 {
                    media_type: blob.mime_type,
                    data: blob.data,
                }));
            } else if let Some(fd) = p.file_data {
                content.push(Part::Image(Image::Url(fd.file_uri)));
            } else if let Some(fc) = p.function_call {
                if role != Role::Assistant {
                    return Err(TranslateError::invalid(
                        path(),
                        "functionCall parts belong to model turns",
                    ));
                }
                let id = fc
                    .id
                    .filter(|id| !id.is_empty())
                    .unwrap_or_else(|| format!("call_{t}_{n}"));
                n = n.saturating_add(1);
                pending.push(&id, &fc.name);
                content.push(Part::ToolCall(ToolCall {
                    id,
                    name: fc.name,
                    arguments: args_text(fc.args.as_deref()),
                }));
            } else if let Some(fr) = p.function_response {
                if role != Role::User {
                    return Err(TranslateError::invalid(
                        path(),
                        "functionResponse parts belong to user turns",
                    ));
                }
                let by_id = fr.id.filter(|id| !id.is_empty());
                let call_id = match by_id {
                    Some(id) => {
                        pending.answer_id(&id);
                        id
                    }
                    None => pending
                        .answer_name(&fr.name)
                        .unwrap_or_else(|| format!("call_{t}_{}", safe_id(&fr.name))),
                };
                let (content_parts, is_error) = result_of(fr.response);
                content.push(Part::ToolResult(ToolResult {
                    call_id,
                    name: Some(fr.name),
                    content: content_parts,
                    is_error,
                }));
            }
        }
        req.messages.push(Message { role, content });
    }
    if thoughts {
        req.dropped.push("thought parts".to_owned());
    }
    for (k, tool) in raw.tools.unwrap_or_default().into_iter().enumerate() {
        for f in tool.function_declarations.unwrap_or_default() {
            let parameters = match (f.parameters_json_schema, f.parameters) {
                (Some(s), _) => s,
                (None, Some(mut s)) => {
                    lowercase_types(&mut s);
                    s
                }
                (None, None) => empty_schema(),
            };
            req.tools.push(ToolSpec {
                name: f.name,
                description: f.description,
                parameters,
                strict: None,
            });
        }
        note_unknown(&mut req.dropped, &format!("tools[{k}]."), &tool.other);
    }
    if let Some(fcc) = raw.tool_config.and_then(|tc| tc.function_calling_config) {
        let allowed = fcc.allowed_function_names.unwrap_or_default();
        let mode = fcc.mode.unwrap_or_default().to_ascii_uppercase();
        req.tool_choice = match mode.as_str() {
            "NONE" => Some(ToolChoice::None),
            "ANY" if allowed.len() == 1 => allowed.into_iter().next().map(ToolChoice::Tool),
            "ANY" => {
                if !allowed.is_empty() {
                    req.dropped
                        .push("toolConfig.functionCallingConfig.allowedFunctionNames".to_owned());
                }
                Some(ToolChoice::Required)
            }
            "AUTO" | "VALIDATED" => Some(ToolChoice::Auto),
            _ => None,
        };
    }
    if let Some(gc) = raw.generation_config {
        req.max_tokens = gc.max_output_tokens;
        req.temperature = gc.temperature;
        req.top_p = gc.top_p;
        req.top_k = gc.top_k.map(|k| k.max(0.0).round() as u32);
        req.stop = gc.stop_sequences.unwrap_or_default();
        match gc.response_mime_type.as_deref() {
            Some("application/json") => {
                let schema = match (gc.response_json_schema, gc.response_schema) {
                    (Some(s), _) => Some(s),
                    (None, Some(mut s)) => {
                        lowercase_types(&mut s);
                        Some(s)
                    }
                    (None, None) => None,
                };
                req.response_format = Some(match schema {
                    Some(schema) => ResponseFormat::JsonSchema {
                        name: "response".to_owned(),
                        schema,
                        strict: None,
                    },
                    None => ResponseFormat::JsonObject,
                });
            }
            None | Some("text/plain") => {}
            Some(_) => req
                .dropped
                .push("generationConfig.responseMimeType".to_owned()),
        }
        if gc.candidate_count.is_some_and(|n| n != 1) {
            req.dropped
                .push("generationConfig.candidateCount".to_owned());
        }
        note_unknown(&mut req.dropped, "generationConfig.", &gc.other);
    }
    note_unknown(&mut req.dropped, "", &raw.other);
    Ok(req)
}

// ---------------------------------------------------------------------------------------------------
// Request, outbound.

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutRequest<'a> {
    contents: Vec<OutContent<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    system_instruction: Option<OutSystem<'a>>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    tools: Vec<OutTool<'a>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    tool_config: Option<OutToolConfig<'a>>,
    #[serde(skip_serializing_if = "OutGenerationConfig::is_empty")]
    generation_config: OutGenerationConfig<'a>,
}

#[derive(Serialize)]
struct OutSystem<'a> {
    parts: Vec<OutPart<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutTool<'a> {
    function_declarations: Vec<OutFunctionDecl<'a>>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFunctionDecl<'a> {
    name: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
    parameters_json_schema: &'a Value,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutToolConfig<'a> {
    function_calling_config: OutFunctionCallingConfig<'a>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutFunctionCallingConfig<'a> {
    mode: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    allowed_function_names: Option<[&'a str; 1]>,
}

#[derive(Serialize, Default)]
#[serde(rename_all = "camelCase")]
struct OutGenerationConfig<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    max_output_tokens: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    temperature: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_p: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    top_k: Option<u32>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    stop_sequences: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    response_mime_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    response_json_schema: Option<&'a Value>,
}

impl OutGenerationConfig<'_> {
    fn is_empty(&self) -> bool {
        self.max_output_tokens.is_none()
            && self.temperature.is_none()
            && self.top_p.is_none()
            && self.top_k.is_none()
            && self.stop_sequences.is_empty()
            && self.response_mime_type.is_none()
    }
}

fn media_part<'a>(img: &'a Image, path: &str) -> Result<OutPart<'a>, TranslateError> {
    match img {
        Image::Base64 { media_type, data } => Ok(OutPart {
            inline_data: Some(OutBlob {
                mime_type: media_type,
                data,
            }),
            ..OutPart::default()
        }),
        Image::Url(url)
            if url.starts_with("https://generativelanguage.googleapis.com/")
                || url.starts_with("gs://") =>
        {
            Ok(OutPart {
                file_data: Some(OutFileData {
                    mime_type: guess_mime(url),
                    file_uri: url,
                }),
                ..OutPart::default()
            })
        }
        Image::Url(_) => Err(TranslateError::unsupported(format!(
            "{path}: {FORMAT} does not fetch image URLs; only inline (base64) images can be sent"
        ))),
    }
}

pub(super) fn encode_request(
    req: &ChatRequest,
    _opts: &EncodeOptions,
    sampling: &SamplingParams,
    warnings: &mut Warnings,
) -> Result<Vec<u8>, TranslateError> {
    // Names of calls by id, for results that do not carry one.
    let mut names: Vec<(&str, &str)> = Vec::new();
    let mut contents = Vec::with_capacity(req.messages.len());
    for turn in alternating_turns(&req.messages) {
        let path = format!("messages[{}]", turn.first_index);
        let mut parts = Vec::with_capacity(turn.parts.len());
        let mut extra = Vec::new();
        let mut signed = false;
        for p in turn.parts {
            match (p, turn.role) {
                (Part::Text(t), _) => parts.push(OutPart {
                    text: Some(t),
                    ..OutPart::default()
                }),
                (Part::Image(img), Role::User) => parts.push(media_part(img, &path)?),
                (Part::ToolCall(c), Role::Assistant) => {
                    names.push((&c.id, &c.name));
                    let args = args_object(&c.arguments).ok_or_else(|| {
                        TranslateError::unsupported(format!(
                            "{path}: tool call arguments are not a JSON object, which {FORMAT} requires"
                        ))
                    })?;
                    parts.push(OutPart {
                        function_call: Some(OutFunctionCall {
                            id: None,
                            name: &c.name,
                            args: Args::Raw(args),
                        }),
                        thought_signature: (!signed).then_some(PLACEHOLDER_SIGNATURE),
                        ..OutPart::default()
                    });
                    signed = true;
                }
                (Part::ToolResult(r), Role::User) => {
                    let name = match r.name.as_deref() {
                        Some(n) => n,
                        None => names
                            .iter()
                            .rev()
                            .find(|(id, _)| *id == r.call_id)
                            .map(|(_, n)| *n)
                            .ok_or_else(|| {
                                TranslateError::invalid(
                                    path.clone(),
                                    format!(
                                        "tool result for unknown call id {:?}",
                                        super::header_safe(&r.call_id)
                                    ),
                                )
                            })?,
                    };
                    let mut text: Option<Cow<'_, str>> = None;
                    for c in &r.content {
                        match c {
                            Part::Text(t) => match &mut text {
                                None => text = Some(Cow::Borrowed(t.as_str())),
                                // Appended in place: joining many parts stays linear.
                                Some(prev) => {
                                    let prev = prev.to_mut();
                                    prev.push('\n');
                                    prev.push_str(t);
                                }
                            },
                            Part::Image(img) => {
                                warnings.push(format!(
                                    "tool result image for {} sent as a separate part",
                                    super::header_safe(&r.call_id)
                                ));
                                extra.push(media_part(img, &path)?);
                            }
                            _ => {}
                        }
                    }
                    let text = text.unwrap_or_default();
                    parts.push(OutPart {
                        function_response: Some(OutFunctionResponse {
                            name,
                            response: if r.is_error {
                                OutResult {
                                    output: None,
                                    error: Some(text),
                                }
                            } else {
                                OutResult {
                                    output: Some(text),
                                    error: None,
                                }
                            },
                        }),
                        ..OutPart::default()
                    });
                }
                (Part::Image(_), Role::Assistant) => {
                    return Err(TranslateError::unsupported(format!(
                        "{path}: images in model turns cannot be sent to {FORMAT}"
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
        parts.append(&mut extra);
        contents.push(OutContent {
            role: match turn.role {
                Role::User => "user",
                Role::Assistant => "model",
            },
            parts,
        });
    }
    if contents.is_empty() {
        return Err(TranslateError::unsupported(format!(
            "{FORMAT} needs at least one non-empty message"
        )));
    }
    let system_parts: Vec<OutPart<'_>> = req
        .system
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| OutPart {
            text: Some(s),
            ..OutPart::default()
        })
        .collect();
    let has_tools = !req.tools.is_empty();
    let tools = if has_tools {
        vec![OutTool {
            function_declarations: req
                .tools
                .iter()
                .map(|t| OutFunctionDecl {
                    name: &t.name,
                    description: t.description.as_deref(),
                    parameters_json_schema: &t.parameters,
                })
                .collect(),
        }]
    } else {
        Vec::new()
    };
    let tool_config = req
        .tool_choice
        .as_ref()
        .filter(|_| has_tools)
        .map(|c| OutToolConfig {
            function_calling_config: match c {
                ToolChoice::Auto => OutFunctionCallingConfig {
                    mode: "AUTO",
                    allowed_function_names: None,
                },
                ToolChoice::None => OutFunctionCallingConfig {
                    mode: "NONE",
                    allowed_function_names: None,
                },
                ToolChoice::Required => OutFunctionCallingConfig {
                    mode: "ANY",
                    allowed_function_names: None,
                },
                ToolChoice::Tool(name) => OutFunctionCallingConfig {
                    mode: "ANY",
                    allowed_function_names: Some([name.as_str()]),
                },
            },
        });
    if has_tools && req.parallel_tool_calls == Some(false) {
        warnings.dropped("parallel_tool_calls", FORMAT);
    }
    if req.user.is_some() {
        warnings.dropped("user", FORMAT);
    }
    let (response_mime_type, response_json_schema) = match &req.response_format {
        None | Some(ResponseFormat::Text) => (None, None),
        Some(ResponseFormat::JsonObject) => (Some("application/json"), None),
        Some(ResponseFormat::JsonSchema { schema, .. }) => (Some("application/json"), Some(schema)),
    };
    let out = OutRequest {
        contents,
        system_instruction: (!system_parts.is_empty()).then_some(OutSystem {
            parts: system_parts,
        }),
        tools,
        tool_config,
        generation_config: OutGenerationConfig {
            max_output_tokens: req.max_tokens,
            temperature: sampling.temperature,
            top_p: sampling.top_p,
            top_k: sampling.top_k,
            stop_sequences: &req.stop,
            response_mime_type,
            response_json_schema,
        },
    };
    Ok(to_body(&out))
}

// ---------------------------------------------------------------------------------------------------
// Usage and finish reasons.

#[derive(Deserialize, Default)]
#[serde(rename_all = "camelCase")]
struct InUsage {
    prompt_token_count: Option<u64>,
    candidates_token_count: Option<u64>,
    cached_content_token_count: Option<u64>,
    thoughts_token_count: Option<u64>,
    tool_use_prompt_token_count: Option<u64>,
}

impl InUsage {
    fn canonical(&self) -> Usage {
        let output = match (self.candidates_token_count, self.thoughts_token_count) {
            (None, None) => None,
            (c, t) => Some(c.unwrap_or(0).saturating_add(t.unwrap_or(0))),
        };
        Usage {
            input_tokens: self
                .prompt_token_count
                .map(|p| p.saturating_add(self.tool_use_prompt_token_count.unwrap_or(0))),
            output_tokens: output,
            cache_read_tokens: self.cached_content_token_count,
            cache_write_tokens: None,
            reasoning_tokens: self.thoughts_token_count,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutUsage {
    prompt_token_count: u64,
    candidates_token_count: u64,
    total_token_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    cached_content_token_count: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    thoughts_token_count: Option<u64>,
}

fn out_usage(u: &Usage) -> OutUsage {
    let input = u.input_tokens.unwrap_or(0);
    let output = u.output_tokens.unwrap_or(0);
    OutUsage {
        prompt_token_count: input,
        candidates_token_count: output.saturating_sub(u.reasoning_tokens.unwrap_or(0)),
        total_token_count: input.saturating_add(output),
        cached_content_token_count: u.cache_read_tokens,
        thoughts_token_count: u.reasoning_tokens,
    }
}

fn stop_from(reason: &str, saw_tool_call: bool) -> StopReason {
    match reason {
        "STOP" if saw_tool_call => StopReason::ToolUse,
        "STOP" => StopReason::EndTurn,
        "MAX_TOKENS" => StopReason::MaxTokens,
        r if FILTER_REASONS.contains(&r) => StopReason::ContentFilter,
        other => StopReason::Other(other.to_owned()),
    }
}

fn finish_reason(r: &StopReason) -> &str {
    match r {
        StopReason::EndTurn | StopReason::StopSequence(_) | StopReason::ToolUse => "STOP",
        StopReason::MaxTokens => "MAX_TOKENS",
        StopReason::ContentFilter => "SAFETY",
        StopReason::Other(o) if OTHER_REASONS.contains(&o.as_str()) => o,
        StopReason::Other(_) => "OTHER",
    }
}

// ---------------------------------------------------------------------------------------------------
// Complete answers (and stream chunks, which have the same shape).

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Response {
    candidates: Option<Vec<InCandidate>>,
    usage_metadata: Option<InUsage>,
    model_version: Option<String>,
    response_id: Option<String>,
    prompt_feedback: Option<InPromptFeedback>,
    error: Option<InError>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InCandidate {
    content: Option<InContent>,
    finish_reason: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct InPromptFeedback {
    block_reason: Option<String>,
}

#[derive(Deserialize)]
struct InError {
    message: Option<String>,
    status: Option<String>,
}

pub(super) fn decode_response(body: &[u8]) -> Result<ChatResponse, TranslateError> {
    let raw: Response = serde_json::from_slice(body).map_err(TranslateError::bad_upstream)?;
    let mut resp = ChatResponse {
        id: raw.response_id.clone().unwrap_or_default(),
        model: raw.model_version.unwrap_or_default(),
        usage: raw
            .usage_metadata
            .as_ref()
            .map(InUsage::canonical)
            .unwrap_or_default(),
        ..ChatResponse::default()
    };
    let candidate = raw.candidates.and_then(|c| c.into_iter().next());
    let Some(candidate) = candidate else {
        if raw.prompt_feedback.and_then(|f| f.block_reason).is_some() {
            resp.stop_reason = Some(StopReason::ContentFilter);
        }
        return Ok(resp);
    };
    let mut n: usize = 0;
    for p in candidate.content.unwrap_or_default().parts {
        if p.thought == Some(true) {
            continue;
        }
        if let Some(text) = p.text {
            if !text.is_empty() {
                resp.content.push(Part::Text(text));
            }
        } else if let Some(fc) = p.function_call {
            let id = fc
                .id
                .filter(|id| !id.is_empty())
                .unwrap_or_else(|| call_id(raw.response_id.as_deref(), n, &fc.name));
            n = n.saturating_add(1);
            resp.content.push(Part::ToolCall(ToolCall {
                id,
                name: fc.name,
                arguments: args_text(fc.args.as_deref()),
            }));
        }
    }
    resp.stop_reason = candidate
        .finish_reason
        .as_deref()
        .map(|r| stop_from(r, n > 0));
    Ok(resp)
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutResponse<'a> {
    candidates: [OutCandidate<'a>; 1],
    #[serde(skip_serializing_if = "Option::is_none")]
    usage_metadata: Option<OutUsage>,
    model_version: &'a str,
    response_id: &'a str,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct OutCandidate<'a> {
    content: OutContent<'a>,
    #[serde(skip_serializing_if = "Option::is_none")]
    finish_reason: Option<&'a str>,
    index: u32,
}

pub(super) fn encode_response(resp: &ChatResponse, client_model: &str) -> Vec<u8> {
    let mut parts = Vec::with_capacity(resp.content.len());
    let mut saw_tool = false;
    for p in &resp.content {
        match p {
            Part::Text(t) if !t.is_empty() => parts.push(OutPart {
                text: Some(t),
                ..OutPart::default()
            }),
            Part::ToolCall(c) => {
                saw_tool = true;
                parts.push(OutPart {
                    function_call: Some(OutFunctionCall {
                        id: Some(&c.id).filter(|id| !id.is_empty()).map(String::as_str),
                        name: &c.name,
                        args: args_of(&c.arguments),
                    }),
                    ..OutPart::default()
                });
            }
            _ => {}
        }
    }
    let reason = inferred_stop(resp.stop_reason.as_ref(), saw_tool);
    let id = if resp.id.is_empty() {
        Cow::Owned(fallback_id())
    } else {
        Cow::Borrowed(resp.id.as_str())
    };
    let out = OutResponse {
        candidates: [OutCandidate {
            content: OutContent {
                role: "model",
                parts,
            },
            finish_reason: Some(finish_reason(&reason)),
            index: 0,
        }],
        usage_metadata: Some(out_usage(&resp.usage)),
        model_version: client_model,
        response_id: &id,
    };
    to_body(&out)
}

// ---------------------------------------------------------------------------------------------------
// Streams, inbound.

/// Consecutive text parts share one canonical index; each function call takes its own.
#[derive(Debug, Default)]
pub(crate) struct ChunkDecoder {
    started: bool,
    done: bool,
    next_index: usize,
    text_index: Option<usize>,
    calls: usize,
}

impl ChunkDecoder {
    pub(crate) fn push(
        &mut self,
        ev: &SseEvent,
        out: &mut Vec<StreamEvent>,
    ) -> Result<(), TranslateError> {
        let data = ev.data.trim();
        if data.is_empty() {
            return Ok(());
        }
        let chunk: Response = serde_json::from_str(data).map_err(TranslateError::bad_upstream)?;
        if let Some(err) = chunk.error {
            out.push(StreamEvent::Error {
                kind: err.status.unwrap_or_else(|| "INTERNAL".to_owned()),
                message: err.message.unwrap_or_default(),
            });
            return Ok(());
        }
        if self.done {
            return Ok(());
        }
        let response_id = chunk.response_id.as_deref().map(bounded_id);
        if !self.started {
            self.started = true;
            out.push(StreamEvent::Start {
                id: response_id.unwrap_or_default().to_owned(),
                model: chunk.model_version.clone().unwrap_or_default(),
            });
        }
        let candidate = chunk.candidates.and_then(|c| c.into_iter().next());
        let mut finish = None;
        if let Some(candidate) = candidate {
            for p in candidate.content.unwrap_or_default().parts {
                if p.thought == Some(true) {
                    continue;
                }
                if let Some(text) = p.text {
                    if text.is_empty() {
                        continue;
                    }
                    let index = match self.text_index {
                        Some(i) => i,
                        None => {
                            let i = self.next_index;
                            self.next_index = i.saturating_add(1);
                            self.text_index = Some(i);
                            i
                        }
                    };
                    out.push(StreamEvent::TextDelta { index, text });
                } else if let Some(fc) = p.function_call {
                    let index = self.next_index;
                    self.next_index = index.saturating_add(1);
                    self.text_index = None;
                    let id = fc
                        .id
                        .filter(|id| !id.is_empty())
                        .unwrap_or_else(|| call_id(response_id, self.calls, &fc.name));
                    self.calls = self.calls.saturating_add(1);
                    out.push(StreamEvent::ToolCallStart {
                        index,
                        id,
                        name: fc.name,
                    });
                    out.push(StreamEvent::ToolCallDelta {
                        index,
                        fragment: args_text(fc.args.as_deref()),
                    });
                }
            }
            finish = candidate.finish_reason;
        } else if chunk
            .prompt_feedback
            .as_ref()
            .and_then(|f| f.block_reason.as_ref())
            .is_some()
        {
            finish = Some("SAFETY".to_owned());
        }
        if let Some(u) = &chunk.usage_metadata {
            out.push(StreamEvent::Usage(u.canonical()));
        }
        if let Some(reason) = finish {
            out.push(StreamEvent::Stop(stop_from(&reason, self.calls > 0)));
            out.push(StreamEvent::Done);
            self.done = true;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------------
// Streams, outbound.

#[derive(Serialize)]
struct OutErrorEvent<'a> {
    error: OutErrorBody<'a>,
}

#[derive(Serialize)]
struct OutErrorBody<'a> {
    code: u16,
    message: &'a str,
    status: &'static str,
}

/// A tool call waiting for its last argument fragment.
#[derive(Debug)]
struct PendingCall {
    index: usize,
    id: String,
    name: String,
    args: String,
}

#[derive(Debug)]
pub(crate) struct ChunkEncoder {
    opts: StreamOptions,
    id: String,
    done: bool,
    pending: Option<PendingCall>,
    saw_tool: bool,
    stop: Option<StopReason>,
    usage: Usage,
}

impl ChunkEncoder {
    pub(crate) fn new(opts: StreamOptions) -> Self {
        Self {
            opts,
            id: String::new(),
            done: false,
            pending: None,
            saw_tool: false,
            stop: None,
            usage: Usage::default(),
        }
    }

    /// Carries on a stream the client has up to `rp`: same response id and model version.
    pub(crate) fn resume(&mut self, rp: &ResumePoint) {
        if let Some(id) = &rp.id {
            self.id.clone_from(id);
        }
        if let Some(m) = &rp.model {
            self.opts.model.clone_from(m);
        }
    }

    fn ensure_id(&mut self) {
        if self.id.is_empty() {
            self.id = fallback_id();
        }
    }

    fn chunk(
        &mut self,
        parts: Vec<OutPart<'_>>,
        finish: Option<&str>,
        usage: Option<OutUsage>,
        out: &mut Vec<u8>,
    ) {
        self.ensure_id();
        write_sse(
            out,
            None,
            &OutResponse {
                candidates: [OutCandidate {
                    content: OutContent {
                        role: "model",
                        parts,
                    },
                    finish_reason: finish,
                    index: 0,
                }],
                usage_metadata: usage,
                model_version: &self.opts.model,
                response_id: &self.id,
            },
        );
    }

    fn flush_call(&mut self, out: &mut Vec<u8>) {
        let Some(call) = self.pending.take() else {
            return;
        };
        let args = args_of(&call.args);
        let part = OutPart {
            function_call: Some(OutFunctionCall {
                id: Some(call.id.as_str()).filter(|id| !id.is_empty()),
                name: &call.name,
                args,
            }),
            ..OutPart::default()
        };
        self.chunk(vec![part], None, None, out);
    }

    pub(crate) fn push(&mut self, ev: &StreamEvent, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        match ev {
            StreamEvent::Start { id, .. } => {
                if self.id.is_empty() {
                    self.id = bounded_id(id).to_owned();
                }
            }
            StreamEvent::TextDelta { text, .. } => {
                if self.stop.is_some() || text.is_empty() {
                    return;
                }
                self.flush_call(out);
                let part = OutPart {
                    text: Some(text),
                    ..OutPart::default()
                };
                self.chunk(vec![part], None, None, out);
            }
            StreamEvent::ToolCallStart { index, id, name } => {
                if self.stop.is_some() {
                    return;
                }
                self.flush_call(out);
                self.saw_tool = true;
                self.pending = Some(PendingCall {
                    index: *index,
                    id: id.clone(),
                    name: name.clone(),
                    args: String::new(),
                });
            }
            StreamEvent::ToolCallDelta { index, fragment } => {
                if self.stop.is_some() {
                    return;
                }
                match &mut self.pending {
                    Some(call) if call.index == *index => call.args.push_str(fragment),
                    _ => {
                        // A fragment for a call we never saw open (or one already sent): open it
                        // now so the arguments are not lost.
                        self.flush_call(out);
                        self.saw_tool = true;
                        self.pending = Some(PendingCall {
                            index: *index,
                            id: String::new(),
                            name: String::new(),
                            args: fragment.clone(),
                        });
                    }
                }
            }
            StreamEvent::Usage(u) => merge_usage(&mut self.usage, u),
            StreamEvent::Stop(reason) => {
                self.flush_call(out);
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
        self.flush_call(out);
        let reason = inferred_stop(self.stop.as_ref(), self.saw_tool);
        let finish = finish_reason(&reason).to_owned();
        let usage = out_usage(&self.usage);
        let part = OutPart {
            text: Some(""),
            ..OutPart::default()
        };
        self.chunk(vec![part], Some(&finish), Some(usage), out);
        self.done = true;
    }

    pub(crate) fn error(&mut self, kind: &str, message: &str, out: &mut Vec<u8>) {
        if self.done {
            return;
        }
        self.done = true;
        let (status, code) = ErrorClass::parse(kind).gemini();
        write_sse(
            out,
            None,
            &OutErrorEvent {
                error: OutErrorBody {
                    code,
                    message,
                    status,
                },
            },
        );
    }
}
