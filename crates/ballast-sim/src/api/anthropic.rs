//! Anthropic Messages API: `POST /v1/messages` (JSON and SSE) and `POST /v1/messages/count_tokens`.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};

use super::{
    Dialect, Failure, Inbound, Meta, PathInfo, bearer, content_text, fail, generate, header,
    intake, json_response, json_status, params, string_list,
};
use crate::generate::{
    Answer, Content, Finish, JsonOutput, Message, Part, Prompt, Role, Tool, ToolChoice, Turn,
    estimate_tokens, json_fragments, latest_turn_text, text_chars,
};
use crate::sse::{Frame, named_event};
use crate::state::SimState;

/// The Anthropic wire format.
pub(crate) struct Anthropic;

/// `POST /v1/messages`
pub(crate) async fn messages(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    generate::<Anthropic>(sim, req, PathInfo::default()).await
}

/// `POST /v1/messages/count_tokens`
pub(crate) async fn count_tokens(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    let (inbound, _) = match intake::<Anthropic>(&sim, req, PathInfo::default(), true).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    match parse(&inbound.json, false) {
        Ok(prompt) => {
            sim.count(Some(Anthropic::API), crate::stats::Outcome::Ok);
            let mut response = json_response(
                &json!({"input_tokens": estimate_tokens(prompt.input_chars)}),
                None,
            );
            Anthropic::headers(response.headers_mut(), &inbound.request_id);
            response
        }
        Err(failure) => fail::<Anthropic>(&sim, &failure, &inbound.request_id),
    }
}

fn error_type(status: u16) -> &'static str {
    match status {
        400 => "invalid_request_error",
        401 => "authentication_error",
        402 => "billing_error",
        403 => "permission_error",
        404 => "not_found_error",
        413 => "request_too_large",
        429 => "rate_limit_error",
        529 => "overloaded_error",
        504 => "timeout_error",
        s if s >= 500 => "api_error",
        _ => "invalid_request_error",
    }
}

fn parse(json: &Value, require_max_tokens: bool) -> Result<Prompt, Failure> {
    let model = json
        .get("model")
        .and_then(Value::as_str)
        .ok_or_else(|| Failure::invalid("model: Field required"))?;
    let max_tokens = match json.get("max_tokens") {
        Some(v) => Some(
            v.as_u64()
                .ok_or_else(|| Failure::invalid("max_tokens: Input should be a valid integer"))?,
        ),
        None if require_max_tokens => return Err(Failure::invalid("max_tokens: Field required")),
        None => None,
    };
    let messages = match json.get("messages") {
        Some(Value::Array(m)) if !m.is_empty() => m,
        Some(Value::Array(_)) => {
            return Err(Failure::invalid(
                "messages: at least one message is required",
            ));
        }
        Some(_) => return Err(Failure::invalid("messages: Input should be a valid list")),
        None => return Err(Failure::invalid("messages: Field required")),
    };
    let system = json.get("system").cloned().unwrap_or(Value::Null);
    let tools_json = json.get("tools").cloned().unwrap_or(Value::Null);
    let tools = tools_json
        .as_array()
        .map(|tools| {
            tools
                .iter()
                .filter_map(|t| {
                    let name = t.get("name")?.as_str()?.to_owned();
                    Some(Tool {
                        name,
                        schema: t.get("input_schema").cloned().unwrap_or_else(|| json!({})),
                    })
                })
                .collect()
        })
        .unwrap_or_default();
    let tool_choice = match json.get("tool_choice") {
        Some(choice) => match choice.get("type").and_then(Value::as_str) {
            Some("any") => ToolChoice::Required,
            Some("tool") => ToolChoice::Named(
                choice
                    .get("name")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            ),
            Some("none") => ToolChoice::None,
            _ => ToolChoice::Auto,
        },
        None => ToolChoice::Auto,
    };
    let last_user_text = messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some("user"))
        .map(|m| content_text(m.get("content").unwrap_or(&Value::Null)));
    let turn_text = latest_turn_text(
        messages,
        |m| match m.get("role").and_then(Value::as_str) {
            Some("user") => Turn::User,
            Some("system") => Turn::Skip,
            _ => Turn::Other,
        },
        |m| content_text(m.get("content").unwrap_or(&Value::Null)),
    );
    let tool_result = messages
        .last()
        .and_then(|m| m.get("content"))
        .and_then(Value::as_array)
        .and_then(|blocks| {
            blocks
                .iter()
                .rev()
                .find(|b| b.get("type").and_then(Value::as_str) == Some("tool_result"))
                .map(|b| content_text(b.get("content").unwrap_or(&Value::Null)))
        });
    Ok(Prompt {
        model: model.to_owned(),
        stream: json.get("stream").and_then(Value::as_bool).unwrap_or(false),
        system: vec![content_text(&system)],
        messages: logical(messages),
        input_chars: text_chars(&system)
            + text_chars(&Value::Array(messages.clone()))
            + text_chars(&tools_json),
        last_user_text,
        turn_text,
        tool_result,
        tools,
        tool_choice,
        max_tokens,
        stop_sequences: string_list(json.get("stop_sequences")),
        json_output: json_output(json),
    })
}

/// The conversation in provider-neutral terms: text blocks, `tool_use` calls and `tool_result`s
/// (thinking and images say nothing here).
fn logical(messages: &[Value]) -> Vec<Message> {
    messages
        .iter()
        .map(|m| {
            let role = match m.get("role").and_then(Value::as_str) {
                Some("assistant") => Role::Assistant,
                Some("system") => Role::System,
                _ => Role::User,
            };
            let parts = match m.get("content") {
                Some(Value::String(s)) => vec![Part::Text(s.clone())],
                Some(Value::Array(blocks)) => blocks.iter().filter_map(block_part).collect(),
                _ => Vec::new(),
            };
            Message::new(role, parts)
        })
        .collect()
}

fn block_part(block: &Value) -> Option<Part> {
    if let Value::String(s) = block {
        return Some(Part::Text(s.clone()));
    }
    match block.get("type").and_then(Value::as_str) {
        Some("text") | None => block
            .get("text")
            .and_then(Value::as_str)
            .map(|t| Part::Text(t.to_owned())),
        Some("tool_use" | "server_tool_use") => Some(Part::Call {
            name: block
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or_default()
                .to_owned(),
            arguments: block.get("input").cloned().unwrap_or_else(|| json!({})),
        }),
        Some("tool_result") => Some(Part::Result(content_text(
            block.get("content").unwrap_or(&Value::Null),
        ))),
        _ => None,
    }
}

/// The API refuses a prefill whose last text ends with whitespace.
fn check_prefill(messages: &[Message]) -> Result<(), Failure> {
    let Some(last) = messages.last().filter(|m| m.role == Role::Assistant) else {
        return Ok(());
    };
    let trailing = last.parts.iter().rev().find_map(|p| match p {
        Part::Text(t) => Some(t.ends_with(char::is_whitespace)),
        _ => None,
    });
    if trailing == Some(true) {
        return Err(Failure::invalid(
            "messages: final assistant content cannot end with trailing whitespace",
        ));
    }
    Ok(())
}

/// Structured outputs: `output_config.format` = `{"type": "json_schema", "schema": …}`, or the
/// deprecated beta `output_format` of the same shape.
fn json_output(json: &Value) -> Option<JsonOutput> {
    let format = json
        .get("output_config")
        .and_then(|c| c.get("format"))
        .filter(|f| !f.is_null())
        .or_else(|| json.get("output_format"))?;
    (format.get("type").and_then(Value::as_str) == Some("json_schema"))
        .then(|| JsonOutput::Schema(format.get("schema").cloned().unwrap_or_else(|| json!({}))))
}

/// The answer's text pieces, unless it says nothing: an answer with no text has no text block
/// (`content: []`, as the API answers when the model says nothing).
fn said(answer: &Answer) -> Option<&[String]> {
    answer.text_pieces().filter(|pieces| !pieces.is_empty())
}

fn stop_reason(finish: &Finish) -> (&'static str, Value) {
    match finish {
        Finish::EndTurn => ("end_turn", Value::Null),
        Finish::MaxTokens => ("max_tokens", Value::Null),
        Finish::StopSequence(s) => ("stop_sequence", Value::String(s.clone())),
        Finish::ToolUse => ("tool_use", Value::Null),
    }
}

fn usage(answer: &Answer, output_tokens: u64) -> Value {
    json!({
        "input_tokens": answer.input_tokens,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
        "output_tokens": output_tokens,
        "service_tier": "standard",
    })
}

fn message(
    answer: &Answer,
    meta: &Meta,
    content: Value,
    stop: Option<&Finish>,
    output_tokens: u64,
) -> Value {
    let (reason, sequence) = match stop {
        Some(f) => {
            let (r, s) = stop_reason(f);
            (Value::String(r.to_owned()), s)
        }
        None => (Value::Null, Value::Null),
    };
    json!({
        "id": meta.id,
        "type": "message",
        "role": "assistant",
        "model": meta.model,
        "content": content,
        "stop_reason": reason,
        "stop_sequence": sequence,
        "usage": usage(answer, output_tokens),
    })
}

fn ping() -> Frame {
    Frame::plain(named_event("ping", &json!({"type": "ping"})))
}

fn message_start(answer: &Answer, meta: &Meta) -> Frame {
    Frame::plain(named_event(
        "message_start",
        &json!({"type": "message_start", "message": message(answer, meta, json!([]), None, 1)}),
    ))
}

fn block_start(index: usize, block: &Value) -> Frame {
    Frame::plain(named_event(
        "content_block_start",
        &json!({"type": "content_block_start", "index": index, "content_block": block}),
    ))
}

/// What models without prefill support answer a conversation that ends with an assistant turn.
const PREFILL_REFUSED: &str = "This model does not support assistant message prefill. The \
                               conversation must end with a user message.";

impl Dialect for Anthropic {
    const API: crate::Api = crate::Api::Anthropic;
    const CONVERSATION: &'static str = "messages";
    const PREFILL: bool = true;
    const STREAM_ERROR_STATUS: u16 = 529;
    type Options = ();

    fn authorize(parts: &Parts, key: &str) -> Result<(), Failure> {
        match header(parts, "x-api-key").or_else(|| bearer(parts)) {
            None => Err(Failure::MissingKey),
            Some(k) if k == key => Ok(()),
            Some(_) => Err(Failure::WrongKey),
        }
    }

    fn failure(failure: &Failure, request_id: &str) -> Response {
        let status = failure.status();
        let message = match failure {
            Failure::Invalid { message, .. } => message.clone(),
            Failure::MissingKey => "x-api-key header is required".to_owned(),
            Failure::WrongKey => "invalid x-api-key".to_owned(),
            Failure::NotFound(what) => format!("Not found: {what}"),
            Failure::TooLarge => "Request exceeds the maximum allowed number of bytes.".to_owned(),
            Failure::RateLimited { .. } => {
                "This request would exceed the rate limit for your organization. Please retry later.".to_owned()
            }
            Failure::Injected(529) => "Overloaded".to_owned(),
            Failure::Injected(s) if *s >= 500 => format!("Internal server error (ballast-sim injected {s})"),
            Failure::Injected(s) => format!("Request rejected (ballast-sim injected {s})"),
        };
        let body = json!({
            "type": "error",
            "error": {"type": error_type(status.as_u16()), "message": message},
            "request_id": request_id,
        });
        let mut response = json_status(status, &body);
        Self::headers(response.headers_mut(), request_id);
        if matches!(
            failure,
            Failure::Injected(500..) | Failure::RateLimited { .. }
        ) {
            response
                .headers_mut()
                .insert("x-should-retry", HeaderValue::from_static("true"));
        }
        response
    }

    fn headers(headers: &mut HeaderMap, request_id: &str) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            headers.insert("request-id", v);
        }
    }

    fn prompt(request: &Inbound) -> Result<(Prompt, ()), Failure> {
        let prompt = parse(&request.json, true)?;
        if request.strict_params {
            check_prefill(&prompt.messages)?;
            params::anthropic(&request.json)?;
        }
        Ok((prompt, ()))
    }

    fn id_prefixes() -> (&'static str, &'static str) {
        ("msg_", "toolu_")
    }

    fn body(answer: &Answer, meta: &Meta, _: &()) -> Value {
        let mut content = Vec::new();
        if let Some(pieces) = said(answer) {
            content.push(json!({"type": "text", "text": pieces.concat()}));
        }
        if let Content::ToolCall { name, arguments } = &answer.content {
            content.push(
                json!({"type": "tool_use", "id": meta.tool_call_id, "name": name, "input": arguments}),
            );
        }
        message(
            answer,
            meta,
            Value::Array(content),
            Some(&answer.finish),
            answer.output_tokens,
        )
    }

    fn frames(answer: &Answer, meta: &Meta, _: &()) -> Vec<Frame> {
        let mut frames = vec![message_start(answer, meta)];
        // One content block per part of the answer: its text, then its tool call.
        let mut blocks: Vec<(Value, Vec<Value>)> = Vec::new();
        if let Some(pieces) = said(answer) {
            blocks.push((
                json!({"type": "text", "text": ""}),
                pieces
                    .iter()
                    .map(|p| json!({"type": "text_delta", "text": p}))
                    .collect(),
            ));
        }
        if let Content::ToolCall { name, arguments } = &answer.content {
            blocks.push((
                json!({"type": "tool_use", "id": meta.tool_call_id, "name": name, "input": {}}),
                json_fragments(&arguments.to_string())
                    .into_iter()
                    .map(|f| json!({"type": "input_json_delta", "partial_json": f}))
                    .collect(),
            ));
        }
        for (index, (block, deltas)) in blocks.into_iter().enumerate() {
            frames.push(block_start(index, &block));
            if index == 0 {
                frames.push(ping());
            }
            for delta in deltas {
                frames.push(Frame::token(named_event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": index, "delta": delta}),
                )));
            }
            frames.push(Frame::plain(named_event(
                "content_block_stop",
                &json!({"type": "content_block_stop", "index": index}),
            )));
        }
        if frames.len() == 1 {
            // No content block: the ping still comes.
            frames.push(ping());
        }
        let (reason, sequence) = stop_reason(&answer.finish);
        frames.push(Frame::plain(named_event(
            "message_delta",
            &json!({
                "type": "message_delta",
                "delta": {"stop_reason": reason, "stop_sequence": sequence},
                "usage": usage(answer, answer.output_tokens),
            }),
        )));
        frames.push(Frame::plain(named_event(
            "message_stop",
            &json!({"type": "message_stop"}),
        )));
        frames
    }

    fn opening(answer: &Answer, meta: &Meta, _: &()) -> Vec<Frame> {
        vec![
            message_start(answer, meta),
            block_start(0, &json!({"type": "text", "text": ""})),
            ping(),
        ]
    }

    fn stream_error(_: &Answer, _: &Meta, _: &(), _: usize) -> Vec<Frame> {
        vec![Frame::plain(named_event(
            "error",
            &json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
        ))]
    }

    fn prefill_refused(_: &Prompt) -> Failure {
        Failure::invalid(PREFILL_REFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validation_messages() {
        let cases = [
            (
                json!({"max_tokens": 5, "messages": []}),
                "model: Field required",
            ),
            (
                json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}),
                "max_tokens: Field required",
            ),
            (
                json!({"model": "m", "max_tokens": 5}),
                "messages: Field required",
            ),
        ];
        for (body, expected) in cases {
            match parse(&body, true) {
                Err(Failure::Invalid { message, .. }) => assert_eq!(message, expected),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

    #[test]
    fn structured_output_forms() {
        let base =
            json!({"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]});
        let with = |key: &str, value: Value| {
            let mut body = base.clone();
            body[key] = value;
            parse(&body, true).unwrap().json_output
        };
        let schema = json!({"type": "object"});
        let format = json!({"type": "json_schema", "schema": schema});
        assert_eq!(parse(&base, true).unwrap().json_output, None);
        assert_eq!(
            with("output_config", json!({"format": format})),
            Some(JsonOutput::Schema(schema.clone()))
        );
        // The deprecated beta parameter.
        assert_eq!(
            with("output_format", format),
            Some(JsonOutput::Schema(schema))
        );
        assert_eq!(with("output_config", json!({"effort": "low"})), None);
    }

    #[test]
    fn reads_tools_and_tool_results() {
        let body = json!({
            "model": "m", "max_tokens": 50,
            "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "get_weather"},
            "messages": [
                {"role": "user", "content": "weather?"},
                {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {}}]},
                {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [{"type": "text", "text": "sunny"}]}]}
            ]
        });
        let prompt = parse(&body, true).unwrap();
        assert_eq!(prompt.tool_result.as_deref(), Some("sunny"));
        assert_eq!(prompt.tool_choice, ToolChoice::Named("get_weather".into()));
        assert_eq!(prompt.tools.len(), 1);
    }
}
