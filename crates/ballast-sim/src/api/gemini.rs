//! Gemini API: `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` (SSE with
//! `?alt=sse`, else a JSON array) and `:countTokens`.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue, Method, StatusCode};
use serde_json::{Value, json};

use super::{
    Dialect, Failure, Inbound, Meta, PathInfo, fail, generate, header, intake, json_response,
    json_status, query_param, string_list,
};
use crate::generate::{
    Answer, Content, Finish, JsonOutput, Message, Part, Prompt, Role, Tool, ToolChoice, Turn,
    estimate_tokens, latest_turn_text, text_chars,
};
use crate::sse::{Frame, data_event_crlf};
use crate::state::SimState;
use crate::stats::Outcome;

/// The Gemini wire format.
pub(crate) struct Gemini;

/// What Gemini says when it is overloaded (503 `UNAVAILABLE`).
const OVERLOADED_MESSAGE: &str = "The model is overloaded. Please try again later.";

/// What only Gemini renders.
pub(crate) struct Options {
    /// `?alt=sse`: stream as SSE; otherwise a streamed JSON array.
    sse: bool,
}

/// `POST|GET /v1beta/models/{*rest}`: `{model}:{method}` or, for GET, one model.
pub(crate) async fn model_action(
    State(sim): State<Arc<SimState>>,
    Path(rest): Path<String>,
    req: Request,
) -> Response {
    dispatch(sim, rest, req).await
}

/// Serves `models/{rest}` under `/v1beta` or `/v1` (recent google-genai SDKs default to `v1`).
pub(crate) async fn dispatch(sim: Arc<SimState>, rest: String, req: Request) -> Response {
    let Some((model, method)) = rest.rsplit_once(':') else {
        if req.method() == Method::GET {
            return super::models::gemini_get(sim, req, rest).await;
        }
        return not_found(&sim, req, &rest).await;
    };
    let model = model.to_owned();
    match (req.method().clone(), method) {
        (Method::POST, "generateContent") => {
            generate::<Gemini>(
                sim,
                req,
                PathInfo {
                    model: Some(model),
                    stream: false,
                },
            )
            .await
        }
        (Method::POST, "streamGenerateContent") => {
            generate::<Gemini>(
                sim,
                req,
                PathInfo {
                    model: Some(model),
                    stream: true,
                },
            )
            .await
        }
        (Method::POST, "countTokens") => count_tokens(sim, req, model).await,
        _ => not_found(&sim, req, &rest).await,
    }
}

async fn not_found(sim: &SimState, req: Request, rest: &str) -> Response {
    let (inbound, _) = match intake::<Gemini>(sim, req, PathInfo::default(), false).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    fail::<Gemini>(
        sim,
        &Failure::NotFound(format!("models/{rest}")),
        &inbound.request_id,
    )
}

async fn count_tokens(sim: Arc<SimState>, req: Request, model: String) -> Response {
    let path = PathInfo {
        model: Some(model),
        stream: false,
    };
    let (inbound, _) = match intake::<Gemini>(&sim, req, path, true).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let request = inbound
        .json
        .get("generateContentRequest")
        .unwrap_or(&inbound.json);
    match parse(
        request,
        inbound.path_model.clone().unwrap_or_default(),
        false,
    ) {
        Ok(prompt) => {
            sim.count(Some(Gemini::API), Outcome::Ok);
            let tokens = estimate_tokens(prompt.input_chars);
            json_response(
                &json!({"totalTokens": tokens, "promptTokensDetails": [{"modality": "TEXT", "tokenCount": tokens}]}),
                None,
            )
        }
        Err(failure) => fail::<Gemini>(&sim, &failure, &inbound.request_id),
    }
}

/// A field under its camelCase or snake_case name (the REST API accepts both).
fn field<'a>(v: &'a Value, camel: &str, snake: &str) -> Option<&'a Value> {
    v.get(camel).or_else(|| v.get(snake))
}

fn parts_text(content: &Value) -> String {
    content
        .get("parts")
        .and_then(Value::as_array)
        .map(|parts| {
            parts
                .iter()
                .filter_map(|p| p.get("text").and_then(Value::as_str))
                .collect::<Vec<_>>()
                .join("")
        })
        .unwrap_or_default()
}

/// A `functionResponse`'s text: the value of a lone `output` or `error` key (a string as is, else its
/// JSON), a lone string `result` or `content`, else the whole `response` object as JSON (the forms a
/// translated tool result takes, so it reads the same as on the other APIs).
fn result_text(function_response: &Value) -> String {
    let Some(response) = function_response.get("response") else {
        return function_response.to_string();
    };
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    match response.as_object() {
        Some(map) if map.is_empty() => String::new(),
        Some(map) if map.len() == 1 => {
            if let Some(v) = map.get("output").or_else(|| map.get("error")) {
                text(v)
            } else if let Some(Value::String(s)) = map.get("result").or_else(|| map.get("content"))
            {
                s.clone()
            } else {
                response.to_string()
            }
        }
        _ => response.to_string(),
    }
}

/// The contents in provider-neutral terms: text parts (thoughts left out), `functionCall`s and
/// `functionResponse`s.
fn logical(contents: &[Value]) -> Vec<Message> {
    contents
        .iter()
        .map(|c| {
            let role = match c.get("role").and_then(Value::as_str) {
                Some("model") => Role::Assistant,
                _ => Role::User,
            };
            let parts = c
                .get("parts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|p| {
                    if let Some(call) = field(p, "functionCall", "function_call") {
                        return Some(Part::Call {
                            name: call
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            arguments: call.get("args").cloned().unwrap_or_else(|| json!({})),
                        });
                    }
                    if let Some(response) = field(p, "functionResponse", "function_response") {
                        return Some(Part::Result(result_text(response)));
                    }
                    if p.get("thought").and_then(Value::as_bool) == Some(true) {
                        return None;
                    }
                    p.get("text")
                        .and_then(Value::as_str)
                        .map(|t| Part::Text(t.to_owned()))
                })
                .collect();
            Message::new(role, parts)
        })
        .collect()
}

fn parse(json: &Value, model: String, stream: bool) -> Result<Prompt, Failure> {
    let contents = match json.get("contents") {
        Some(Value::Array(c)) if !c.is_empty() => c,
        _ => {
            return Err(Failure::invalid(
                "* GenerateContentRequest.contents: contents is not specified\n",
            ));
        }
    };
    let system = field(json, "systemInstruction", "system_instruction")
        .cloned()
        .unwrap_or(Value::Null);
    let tools_json = json.get("tools").cloned().unwrap_or(Value::Null);
    let tools: Vec<Tool> = tools_json
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            field(t, "functionDeclarations", "function_declarations").and_then(Value::as_array)
        })
        .flatten()
        .filter_map(|d| {
            let name = d.get("name")?.as_str()?.to_owned();
            let schema = field(d, "parametersJsonSchema", "parameters_json_schema")
                .or_else(|| d.get("parameters"))
                .cloned()
                .unwrap_or_else(|| json!({}));
            Some(Tool { name, schema })
        })
        .collect();
    let calling = field(json, "toolConfig", "tool_config")
        .and_then(|c| field(c, "functionCallingConfig", "function_calling_config"));
    let allowed =
        calling.map(|c| string_list(field(c, "allowedFunctionNames", "allowed_function_names")));
    let tool_choice = match calling.and_then(|c| c.get("mode")).and_then(Value::as_str) {
        Some(m) if m.eq_ignore_ascii_case("any") => match allowed.as_deref() {
            Some([only]) => ToolChoice::Named(only.clone()),
            _ => ToolChoice::Required,
        },
        Some(m) if m.eq_ignore_ascii_case("none") => ToolChoice::None,
        _ => ToolChoice::Auto,
    };
    let generation = field(json, "generationConfig", "generation_config");
    let max_tokens = generation
        .and_then(|g| field(g, "maxOutputTokens", "max_output_tokens"))
        .and_then(Value::as_u64);
    let stop_sequences =
        string_list(generation.and_then(|g| field(g, "stopSequences", "stop_sequences")));
    let is_user = |c: &&Value| {
        c.get("role")
            .and_then(Value::as_str)
            .is_none_or(|r| r == "user")
    };
    let last_user_text = contents.iter().rev().find(is_user).map(parts_text);
    let turn_text = latest_turn_text(
        contents,
        |c| if is_user(&c) { Turn::User } else { Turn::Other },
        parts_text,
    );
    let tool_result = contents
        .last()
        .and_then(|c| c.get("parts"))
        .and_then(Value::as_array)
        .and_then(|parts| {
            parts
                .iter()
                .rev()
                .find_map(|p| field(p, "functionResponse", "function_response").map(result_text))
        });
    Ok(Prompt {
        model,
        stream,
        system: vec![parts_text(&system)],
        messages: logical(contents),
        input_chars: text_chars(&system)
            + text_chars(&Value::Array(contents.clone()))
            + text_chars(&tools_json),
        last_user_text,
        turn_text,
        tool_result,
        tools,
        tool_choice,
        max_tokens,
        stop_sequences,
        json_output: json_output(json),
    })
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::MaxTokens => "MAX_TOKENS",
        Finish::EndTurn | Finish::StopSequence(_) | Finish::ToolUse => "STOP",
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "promptTokenCount": answer.input_tokens,
        "candidatesTokenCount": answer.output_tokens,
        "totalTokenCount": answer.input_tokens + answer.output_tokens,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": answer.input_tokens}],
    })
}

fn response(meta: &Meta, parts: Value, finish: Option<&Finish>, usage: Option<Value>) -> Value {
    let mut candidate = json!({"content": {"parts": parts, "role": "model"}, "index": 0});
    let mut body = json!({"candidates": [], "modelVersion": meta.model, "responseId": meta.id});
    if let (Some(finish), Some(c)) = (finish, candidate.as_object_mut()) {
        c.insert("finishReason".to_owned(), json!(finish_reason(finish)));
    }
    if let Some(obj) = body.as_object_mut() {
        obj.insert("candidates".to_owned(), json!([candidate]));
        if let Some(usage) = usage {
            obj.insert("usageMetadata".to_owned(), usage);
        }
    }
    body
}

/// Gemini clients send `x-goog-api-key` or `?key=`.
pub(crate) fn is_gemini_client(req: &Request) -> bool {
    req.headers().contains_key("x-goog-api-key")
        || req
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("key=")))
}

fn status_name(status: u16) -> &'static str {
    match status {
        400 => "INVALID_ARGUMENT",
        401 => "UNAUTHENTICATED",
        403 => "PERMISSION_DENIED",
        404 => "NOT_FOUND",
        409 => "ABORTED",
        413 => "INVALID_ARGUMENT",
        429 => "RESOURCE_EXHAUSTED",
        499 => "CANCELLED",
        500 => "INTERNAL",
        501 => "NOT_IMPLEMENTED",
        503 => "UNAVAILABLE",
        504 => "DEADLINE_EXCEEDED",
        s if s >= 500 => "INTERNAL",
        _ => "FAILED_PRECONDITION",
    }
}

impl Dialect for Gemini {
    const API: crate::Api = crate::Api::Gemini;
    const CONVERSATION: &'static str = "contents";
    const STREAM_ERROR_STATUS: u16 = 503;
    type Options = Options;

    fn authorize(parts: &Parts, key: &str) -> Result<(), Failure> {
        let sent = header(parts, "x-goog-api-key")
            .map(str::to_owned)
            .or_else(|| query_param(parts, "key"));
        match sent {
            None => Err(Failure::MissingKey),
            Some(k) if k == key => Ok(()),
            Some(_) => Err(Failure::WrongKey),
        }
    }

    fn failure(failure: &Failure, _request_id: &str) -> Response {
        let (status, message, details) = match failure {
            Failure::Invalid { message, .. } => (400, message.clone(), None),
            Failure::MissingKey => (
                403,
                "Method doesn't allow unregistered callers (callers without established identity). Please use API \
                 Key or other form of API consumer identity to call this API."
                    .to_owned(),
                None,
            ),
            Failure::WrongKey => (
                400,
                "API key not valid. Please pass a valid API key.".to_owned(),
                Some(json!([{
                    "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                    "reason": "API_KEY_INVALID",
                    "domain": "googleapis.com",
                    "metadata": {"service": "generativelanguage.googleapis.com"}
                }])),
            ),
            Failure::NotFound(what) => (404, format!("{what} is not found for API version v1beta."), None),
            Failure::TooLarge => (400, "Request payload size exceeds the limit.".to_owned(), None),
            Failure::RateLimited { retry_after_secs } => (
                429,
                "Resource has been exhausted (e.g. check quota).".to_owned(),
                Some(json!([{
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{retry_after_secs}s")
                }])),
            ),
            Failure::Injected(503) => (503, OVERLOADED_MESSAGE.to_owned(), None),
            Failure::Injected(s) => (*s, format!("An internal error has occurred (ballast-sim injected {s})."), None),
        };
        let mut error = json!({"code": status, "message": message, "status": status_name(status)});
        if let (Some(details), Some(obj)) = (details, error.as_object_mut()) {
            obj.insert("details".to_owned(), details);
        }
        let code = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        json_status(code, &json!({"error": error}))
    }

    fn headers(headers: &mut HeaderMap, _request_id: &str) {
        headers.insert(
            "x-content-type-options",
            HeaderValue::from_static("nosniff"),
        );
    }

    fn prompt(request: &Inbound) -> Result<(Prompt, Options), Failure> {
        let model = request.path_model.clone().unwrap_or_default();
        let prompt = parse(&request.json, model, request.path_stream)?;
        let sse = query_param(&request.parts, "alt").is_some_and(|alt| alt == "sse");
        Ok((prompt, Options { sse }))
    }

    fn id_prefixes() -> (&'static str, &'static str) {
        ("", "")
    }

    fn body(answer: &Answer, meta: &Meta, _: &Options) -> Value {
        let mut parts = Vec::new();
        if let Some(pieces) = answer.text_pieces() {
            parts.push(json!({"text": pieces.concat()}));
        }
        if let Content::ToolCall { name, arguments } = &answer.content {
            parts.push(json!({"functionCall": {"name": name, "args": arguments}}));
        }
        response(
            meta,
            Value::Array(parts),
            Some(&answer.finish),
            Some(usage(answer)),
        )
    }

    fn frames(answer: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        // One chunk per text piece, then the whole `functionCall` in one chunk (as Gemini sends it);
        // the last chunk carries the finish reason and usage.
        let mut parts: Vec<Value> = answer
            .text_pieces()
            .unwrap_or_default()
            .iter()
            .map(|p| json!({"text": p}))
            .collect();
        if let Content::ToolCall { name, arguments } = &answer.content {
            parts.push(json!({"functionCall": {"name": name, "args": arguments}}));
        }
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let last = parts.len() - 1;
        let chunks: Vec<Value> = parts
            .into_iter()
            .enumerate()
            .map(|(i, part)| {
                let end = i == last;
                response(
                    meta,
                    json!([part]),
                    end.then_some(&answer.finish),
                    end.then(|| usage(answer)),
                )
            })
            .collect();
        if options.sse {
            return chunks
                .iter()
                .map(|c| Frame::token(data_event_crlf(c)))
                .collect();
        }
        // Without alt=sse the API streams one JSON array.
        let count = chunks.len();
        chunks
            .iter()
            .enumerate()
            .map(|(i, c)| {
                let open = if i == 0 { "[" } else { ",\r\n" };
                let close = if i + 1 == count { "]" } else { "" };
                Frame::token(bytes::Bytes::from(format!("{open}{c}{close}")))
            })
            .collect()
    }

    fn opening(_: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        let chunk = response(meta, json!([{"text": ""}]), None, None);
        let bytes = if options.sse {
            data_event_crlf(&chunk)
        } else {
            bytes::Bytes::from(format!("[{chunk}"))
        };
        vec![Frame::plain(bytes)]
    }

    /// An `{"error": …}` chunk, 503 `UNAVAILABLE`; in a JSON-array stream, the array's last element.
    fn stream_error(_: &Answer, _: &Meta, options: &Options, sent: usize) -> Vec<Frame> {
        let error = json!({"error": {
            "code": 503, "message": OVERLOADED_MESSAGE, "status": "UNAVAILABLE",
        }});
        let bytes = if options.sse {
            data_event_crlf(&error)
        } else {
            let open = if sent == 0 { "[" } else { ",\r\n" };
            bytes::Bytes::from(format!("{open}{error}]"))
        };
        vec![Frame::plain(bytes)]
    }

    fn prefill_refused(prompt: &Prompt) -> Failure {
        Failure::invalid(if prompt.messages.len() > 1 {
            "Please ensure that multiturn requests ends with a user role or a function response."
        } else {
            "Please ensure that single turn requests end with a user role or the role field is empty."
        })
    }

    fn stream_content_type(options: &Options) -> &'static str {
        if options.sse {
            "text/event-stream"
        } else {
            "application/json; charset=UTF-8"
        }
    }
}

/// `generationConfig.responseMimeType: "application/json"`, with `responseJsonSchema` or
/// `responseSchema` when given.
fn json_output(json: &Value) -> Option<JsonOutput> {
    let config = field(json, "generationConfig", "generation_config")?;
    let mime = field(config, "responseMimeType", "response_mime_type")?.as_str()?;
    if mime != "application/json" {
        return None;
    }
    let schema = field(config, "responseJsonSchema", "response_json_schema")
        .or_else(|| field(config, "responseSchema", "response_schema"));
    Some(match schema {
        Some(s) => JsonOutput::Schema(s.clone()),
        None => JsonOutput::Object,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_tools_config_and_results() {
        let body = json!({
            "contents": [
                {"role": "user", "parts": [{"text": "weather in Paris"}]},
                {"role": "model", "parts": [{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}]},
                {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}
            ],
            "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "OBJECT"}}]}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY"}},
            "generationConfig": {"maxOutputTokens": 9, "stopSequences": ["x"]}
        });
        let prompt = parse(&body, "gemini-2.5-flash".into(), false).unwrap();
        assert_eq!(prompt.tool_result.as_deref(), Some(r#"{"temp":21}"#));
        assert_eq!(prompt.tool_choice, ToolChoice::Required);
        assert_eq!(prompt.max_tokens, Some(9));
        assert_eq!(prompt.stop_sequences, vec!["x".to_owned()]);
        assert_eq!(prompt.tools[0].name, "get_weather");
    }

    #[test]
    fn missing_contents_is_invalid() {
        assert!(matches!(
            parse(&json!({}), "m".into(), false),
            Err(Failure::Invalid { .. })
        ));
    }
}
