//! OpenAI Chat Completions API: `POST /v1/chat/completions` (JSON and SSE chunks ending in `[DONE]`).

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{
    Dialect, Failure, Inbound, Meta, PathInfo, bearer, content_text, generate, json_status, params,
    string_list,
};
use crate::generate::{
    Answer, Content, Finish, JsonOutput, Message, Part, Prompt, Role, Tool, ToolChoice, Turn,
    arguments_value, json_fragments, latest_turn_text, text_chars,
};
use crate::sse::{Frame, data_event, data_literal};
use crate::state::SimState;

/// The OpenAI wire format.
pub(crate) struct OpenAi;

/// What only OpenAI renders.
pub(crate) struct Options {
    /// `stream_options.include_usage`: end the stream with a usage chunk.
    include_usage: bool,
}

/// A fixed fingerprint, as the real API reports per backend configuration.
const SYSTEM_FINGERPRINT: &str = "fp_ballastsim";

/// The message of the API's own mid-stream error.
pub(crate) const STREAM_ERROR_MESSAGE: &str =
    "The server had an error while processing your request. Sorry about that!";

/// The refusal of a prefill under `reject_prefill` (the OpenAI APIs accept one; this is what an
/// OpenAI-compatible server without prefill support says, in Anthropic's words).
pub(crate) const PREFILL_REFUSED: &str = "This model does not support assistant message prefill. \
                                          The conversation must end with a user message.";

/// `POST /v1/chat/completions`
pub(crate) async fn chat_completions(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    generate::<OpenAi>(sim, req, PathInfo::default()).await
}

fn finish_reason(finish: &Finish) -> &'static str {
    match finish {
        Finish::EndTurn | Finish::StopSequence(_) => "stop",
        Finish::MaxTokens => "length",
        Finish::ToolUse => "tool_calls",
    }
}

fn usage(answer: &Answer) -> Value {
    json!({
        "prompt_tokens": answer.input_tokens,
        "completion_tokens": answer.output_tokens,
        "total_tokens": answer.input_tokens + answer.output_tokens,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": 0, "audio_tokens": 0,
            "accepted_prediction_tokens": 0, "rejected_prediction_tokens": 0
        },
    })
}

fn chunk(meta: &Meta, choices: Value, usage: Option<Value>, include_usage: bool) -> Value {
    let mut chunk = json!({
        "id": meta.id,
        "object": "chat.completion.chunk",
        "created": meta.created,
        "model": meta.model,
        "service_tier": "default",
        "system_fingerprint": SYSTEM_FINGERPRINT,
        "choices": choices,
    });
    if include_usage && let Some(obj) = chunk.as_object_mut() {
        obj.insert("usage".to_owned(), usage.unwrap_or(Value::Null));
    }
    chunk
}

fn choice(delta: Value, finish: Option<&str>) -> Value {
    json!([{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}])
}

fn parse_tool_choice(choice: Option<&Value>) -> ToolChoice {
    match choice {
        Some(Value::String(s)) => match s.as_str() {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        },
        Some(obj @ Value::Object(_)) => {
            match obj
                .get("function")
                .and_then(|f| f.get("name"))
                .and_then(Value::as_str)
            {
                Some(name) => ToolChoice::Named(name.to_owned()),
                None => ToolChoice::Auto,
            }
        }
        _ => ToolChoice::Auto,
    }
}

/// The conversation in provider-neutral terms: system and developer messages, user text, assistant
/// text and `tool_calls` (or a legacy `function_call`), `tool` / `function` results.
fn logical(messages: &[Value]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| {
            let text = content_text(m.get("content").unwrap_or(&Value::Null));
            match m.get("role").and_then(Value::as_str) {
                Some("system" | "developer") => Message::text(Role::System, text),
                Some("tool" | "function") => Message::new(Role::User, vec![Part::Result(text)]),
                Some("assistant") => {
                    let mut message = Message::text(Role::Assistant, text);
                    let calls = m
                        .get("tool_calls")
                        .and_then(Value::as_array)
                        .into_iter()
                        .flatten()
                        .filter_map(|c| c.get("function"))
                        .chain(m.get("function_call"));
                    for function in calls {
                        message.parts.push(Part::Call {
                            name: function
                                .get("name")
                                .and_then(Value::as_str)
                                .unwrap_or_default()
                                .to_owned(),
                            arguments: arguments_value(function.get("arguments")),
                        });
                    }
                    message
                }
                _ => Message::text(Role::User, text),
            }
        })
        .collect()
}

impl Dialect for OpenAi {
    const API: crate::Api = crate::Api::OpenAi;
    const CONVERSATION: &'static str = "messages";
    const STREAM_ERROR_STATUS: u16 = 500;
    type Options = Options;

    fn authorize(parts: &Parts, key: &str) -> Result<(), Failure> {
        match bearer(parts) {
            None => Err(Failure::MissingKey),
            Some(k) if k == key => Ok(()),
            Some(_) => Err(Failure::WrongKey),
        }
    }

    fn failure(failure: &Failure, request_id: &str) -> Response {
        let (message, kind, param, code): (String, &str, Option<&str>, Option<&str>) = match failure {
            Failure::Invalid { message, param, code } => {
                let code = code.or_else(|| {
                    param.map(|_| "missing_required_parameter").filter(|_| message.starts_with("Missing"))
                });
                (message.clone(), "invalid_request_error", *param, code)
            }
            Failure::MissingKey => (
                "You didn't provide an API key. You need to provide your API key in an Authorization header \
                 using Bearer auth (i.e. Authorization: Bearer YOUR_KEY)."
                    .to_owned(),
                "invalid_request_error",
                None,
                Some("invalid_api_key"),
            ),
            Failure::WrongKey => {
                ("Incorrect API key provided.".to_owned(), "invalid_request_error", None, Some("invalid_api_key"))
            }
            Failure::NotFound(what) => (format!("Unknown request URL: {what}"), "invalid_request_error", None, None),
            Failure::TooLarge => {
                ("Request body too large.".to_owned(), "invalid_request_error", None, Some("request_too_large"))
            }
            Failure::RateLimited { .. } => (
                "Rate limit reached for requests. Please try again later.".to_owned(),
                "requests",
                None,
                Some("rate_limit_exceeded"),
            ),
            Failure::Injected(s) if *s >= 500 => (
                format!("The server had an error while processing your request (ballast-sim injected {s})."),
                "server_error",
                None,
                None,
            ),
            Failure::Injected(s) => {
                (format!("ballast-sim injected error {s}."), "invalid_request_error", None, None)
            }
        };
        let body =
            json!({"error": {"message": message, "type": kind, "param": param, "code": code}});
        let mut response = json_status(failure.status(), &body);
        Self::headers(response.headers_mut(), request_id);
        if let Failure::RateLimited { retry_after_secs } = failure
            && let Ok(v) =
                HeaderValue::from_str(&(retry_after_secs.saturating_mul(1000)).to_string())
        {
            response.headers_mut().insert("retry-after-ms", v);
        }
        response
    }

    fn headers(headers: &mut HeaderMap, request_id: &str) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("x-request-id", v);
        }
        headers.insert("openai-processing-ms", HeaderValue::from_static("1"));
        headers.insert("openai-version", HeaderValue::from_static("2020-10-01"));
    }

    fn prompt(request: &Inbound) -> Result<(Prompt, Options), Failure> {
        let json = &request.json;
        let model = json.get("model").and_then(Value::as_str).ok_or_else(|| {
            Failure::invalid_param("model", "Missing required parameter: 'model'.")
        })?;
        let messages = match json.get("messages") {
            Some(Value::Array(m)) if !m.is_empty() => m,
            Some(Value::Array(_)) => {
                return Err(Failure::invalid_param(
                    "messages",
                    "Invalid 'messages': empty array. Expected an array with minimum length 1, but got an empty \
                     array instead.",
                ));
            }
            Some(_) => {
                return Err(Failure::invalid_param(
                    "messages",
                    "Invalid type for 'messages': expected an array.",
                ));
            }
            None => {
                return Err(Failure::invalid_param(
                    "messages",
                    "Missing required parameter: 'messages'.",
                ));
            }
        };
        if request.strict_params {
            params::openai_chat(json)?;
        }
        let max_tokens = match json
            .get("max_completion_tokens")
            .or_else(|| json.get("max_tokens"))
        {
            None | Some(Value::Null) => None,
            Some(v) => Some(v.as_u64().ok_or_else(|| {
                Failure::invalid_param("max_tokens", "Invalid 'max_tokens': expected an integer.")
            })?),
        };
        let tools_json = json.get("tools").cloned().unwrap_or(Value::Null);
        let tools = tools_json
            .as_array()
            .map(|tools| {
                tools
                    .iter()
                    .filter_map(|t| {
                        let f = t.get("function")?;
                        Some(Tool {
                            name: f.get("name")?.as_str()?.to_owned(),
                            schema: f.get("parameters").cloned().unwrap_or_else(|| json!({})),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default();
        let role = |m: &Value| m.get("role").and_then(Value::as_str).map(str::to_owned);
        let last_user_text = messages
            .iter()
            .rev()
            .find(|m| role(m).as_deref() == Some("user"))
            .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)));
        let turn_text = latest_turn_text(
            messages,
            |m| match role(m).as_deref() {
                Some("user") => Turn::User,
                Some("system" | "developer") => Turn::Skip,
                _ => Turn::Other,
            },
            |m| content_text(m.get("content").unwrap_or(&Value::Null)),
        );
        let tool_result = messages
            .last()
            .filter(|m| matches!(role(m).as_deref(), Some("tool" | "function")))
            .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)));
        let prompt = Prompt {
            model: model.to_owned(),
            stream: json.get("stream").and_then(Value::as_bool).unwrap_or(false),
            system: Vec::new(),
            messages: logical(messages),
            input_chars: text_chars(&Value::Array(messages.clone())) + text_chars(&tools_json),
            last_user_text,
            turn_text,
            tool_result,
            tools,
            tool_choice: parse_tool_choice(json.get("tool_choice")),
            max_tokens,
            stop_sequences: string_list(json.get("stop")),
            json_output: match json
                .get("response_format")
                .and_then(|f| f.get("type"))
                .and_then(Value::as_str)
            {
                Some("json_object") => Some(JsonOutput::Object),
                Some("json_schema") => Some(JsonOutput::Schema(
                    json.get("response_format")
                        .and_then(|f| f.get("json_schema"))
                        .and_then(|s| s.get("schema"))
                        .cloned()
                        .unwrap_or_else(|| json!({})),
                )),
                _ => None,
            },
        };
        let include_usage = json
            .get("stream_options")
            .and_then(|o| o.get("include_usage"))
            .and_then(Value::as_bool)
            .unwrap_or(false);
        Ok((prompt, Options { include_usage }))
    }

    fn id_prefixes() -> (&'static str, &'static str) {
        ("chatcmpl-", "call_")
    }

    fn body(answer: &Answer, meta: &Meta, _: &Options) -> Value {
        let mut message = json!({
            "role": "assistant",
            "content": answer.text_pieces().map(<[String]>::concat),
            "refusal": null,
            "annotations": [],
        });
        if let (Content::ToolCall { name, arguments }, Some(obj)) =
            (&answer.content, message.as_object_mut())
        {
            obj.insert(
                "tool_calls".to_owned(),
                json!([{
                    "id": meta.tool_call_id, "type": "function",
                    "function": {"name": name, "arguments": arguments.to_string()}
                }]),
            );
        }
        json!({
            "id": meta.id,
            "object": "chat.completion",
            "created": meta.created,
            "model": meta.model,
            "choices": [{
                "index": 0, "message": message, "logprobs": null, "finish_reason": finish_reason(&answer.finish)
            }],
            "usage": usage(answer),
            "service_tier": "default",
            "system_fingerprint": SYSTEM_FINGERPRINT,
        })
    }

    fn frames(answer: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        let with_usage = options.include_usage;
        let event = |choices: Value| data_event(&chunk(meta, choices, None, with_usage));
        let mut frames = Vec::new();
        let call = match &answer.content {
            Content::ToolCall { name, arguments } => Some((name, arguments)),
            Content::Text(_) => None,
        };
        let call_start = |name: &String| {
            json!([{
                "index": 0, "id": meta.tool_call_id, "type": "function",
                "function": {"name": name, "arguments": ""}
            }])
        };
        match (answer.text_pieces(), call) {
            (Some(pieces), _) => {
                frames.push(Frame::plain(event(choice(
                    json!({"role": "assistant", "content": "", "refusal": null}),
                    None,
                ))));
                for piece in pieces {
                    frames.push(Frame::token(event(choice(json!({"content": piece}), None))));
                }
                // Text before a call: the call starts in a chunk of its own.
                if let Some((name, _)) = call {
                    frames.push(Frame::plain(event(choice(
                        json!({"tool_calls": call_start(name)}),
                        None,
                    ))));
                }
            }
            (None, Some((name, _))) => {
                frames.push(Frame::plain(event(choice(
                    json!({
                        "role": "assistant", "content": null, "refusal": null,
                        "tool_calls": call_start(name),
                    }),
                    None,
                ))));
            }
            (None, None) => {}
        }
        if let Some((_, arguments)) = call {
            for fragment in json_fragments(&arguments.to_string()) {
                frames.push(Frame::token(event(choice(
                    json!({"tool_calls": [{"index": 0, "function": {"arguments": fragment}}]}),
                    None,
                ))));
            }
        }
        frames.push(Frame::plain(event(choice(
            json!({}),
            Some(finish_reason(&answer.finish)),
        ))));
        if with_usage {
            frames.push(Frame::plain(data_event(&chunk(
                meta,
                json!([]),
                Some(usage(answer)),
                true,
            ))));
        }
        frames.push(Frame::plain(data_literal("[DONE]")));
        frames
    }

    fn opening(_: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        let chunk = chunk(
            meta,
            choice(
                json!({"role": "assistant", "content": "", "refusal": null}),
                None,
            ),
            None,
            options.include_usage,
        );
        vec![Frame::plain(data_event(&chunk))]
    }

    fn stream_error(_: &Answer, _: &Meta, _: &Options, _: usize) -> Vec<Frame> {
        vec![Frame::plain(data_event(&json!({"error": {
            "message": STREAM_ERROR_MESSAGE, "type": "server_error", "param": null, "code": null,
        }})))]
    }

    fn prefill_refused(_: &Prompt) -> Failure {
        Failure::invalid_param("messages", PREFILL_REFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tool_choice_forms() {
        assert_eq!(parse_tool_choice(Some(&json!("none"))), ToolChoice::None);
        assert_eq!(
            parse_tool_choice(Some(&json!("required"))),
            ToolChoice::Required
        );
        assert_eq!(parse_tool_choice(Some(&json!("auto"))), ToolChoice::Auto);
        assert_eq!(
            parse_tool_choice(Some(
                &json!({"type": "function", "function": {"name": "f"}})
            )),
            ToolChoice::Named("f".into())
        );
        assert_eq!(parse_tool_choice(None), ToolChoice::Auto);
    }
}
