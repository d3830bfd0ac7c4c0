//! OpenAI Responses API: `POST /v1/responses` (a `response` object, or named SSE events with a
//! `sequence_number`, ending in `response.completed` / `response.incomplete`).
//!
//! Counted and fault-scoped as `openai`: keys, headers and error bodies are Chat Completions'.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{Request, State};
use axum::response::Response;
use http::HeaderMap;
use http::request::Parts;
use serde_json::{Map, Value, json};

use super::openai::{OpenAi, PREFILL_REFUSED, STREAM_ERROR_MESSAGE};
use super::{Dialect, Failure, Inbound, Meta, PathInfo, content_text, generate, params};
use crate::generate::{
    Answer, Content, Finish, JsonOutput, Message, Part, Prompt, Role, Tool, ToolChoice, Turn,
    arguments_value, json_fragments, latest_turn_text, text_chars,
};
use crate::sse::{Frame, named_event};
use crate::state::SimState;

/// The OpenAI Responses wire format.
pub(crate) struct Responses;

/// The real API's lower bound for `max_output_tokens`.
const MIN_OUTPUT_TOKENS: u64 = 16;

/// Request fields that a `response` object reports back, with the API's defaults.
fn echoed_defaults() -> [(&'static str, Value); 16] {
    [
        ("instructions", Value::Null),
        ("max_output_tokens", Value::Null),
        ("max_tool_calls", Value::Null),
        ("metadata", json!({})),
        ("parallel_tool_calls", json!(true)),
        ("prompt_cache_key", Value::Null),
        ("reasoning", json!({"effort": null, "summary": null})),
        ("safety_identifier", Value::Null),
        ("store", json!(true)),
        ("temperature", json!(1.0)),
        ("tool_choice", json!("auto")),
        ("tools", json!([])),
        ("top_logprobs", json!(0)),
        ("top_p", json!(1.0)),
        ("truncation", json!("disabled")),
        ("user", Value::Null),
    ]
}

/// What only Responses renders.
pub(crate) struct Options {
    /// The request's fields as the `response` object reports them.
    echoed: Map<String, Value>,
    /// The namespace of each function offered inside a `namespace` tool.
    namespaces: HashMap<String, String>,
}

/// `POST /v1/responses`
pub(crate) async fn create(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    generate::<Responses>(sim, req, PathInfo::default()).await
}

/// The function tools a request offers: top-level `function` tools and the functions nested in
/// `namespace` tools (with their namespace). Built-in and custom tools are accepted and never called.
fn parse_tools(tools: &Value) -> (Vec<Tool>, HashMap<String, String>) {
    let mut out = Vec::new();
    let mut namespaces = HashMap::new();
    let function = |t: &Value| -> Option<Tool> {
        if t.get("type").and_then(Value::as_str) != Some("function") {
            return None;
        }
        Some(Tool {
            name: t.get("name")?.as_str()?.to_owned(),
            schema: t
                .get("parameters")
                .filter(|p| !p.is_null())
                .cloned()
                .unwrap_or_else(|| json!({})),
        })
    };
    for tool in tools.as_array().into_iter().flatten() {
        match tool.get("type").and_then(Value::as_str) {
            Some("function") => out.extend(function(tool)),
            Some("namespace") => {
                let namespace = tool.get("name").and_then(Value::as_str).unwrap_or_default();
                for nested in tool
                    .get("tools")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(f) = function(nested) {
                        namespaces
                            .entry(f.name.clone())
                            .or_insert_with(|| namespace.to_owned());
                        out.push(f);
                    }
                }
            }
            _ => {}
        }
    }
    (out, namespaces)
}

/// `tool_choice`: `none` / `auto` / `required`, `{"type": "function", "name"}`, or
/// `{"type": "allowed_tools", "mode", "tools"}` (which also narrows the tools). Forcing a built-in
/// tool is treated as `auto`.
fn parse_tool_choice(choice: Option<&Value>, tools: &mut Vec<Tool>) -> ToolChoice {
    let Some(choice) = choice else {
        return ToolChoice::Auto;
    };
    if let Some(s) = choice.as_str() {
        return match s {
            "none" => ToolChoice::None,
            "required" => ToolChoice::Required,
            _ => ToolChoice::Auto,
        };
    }
    match choice.get("type").and_then(Value::as_str) {
        Some("function") => match choice.get("name").and_then(Value::as_str) {
            Some(name) => ToolChoice::Named(name.to_owned()),
            None => ToolChoice::Auto,
        },
        Some("allowed_tools") => {
            let allowed: Vec<&str> = choice
                .get("tools")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(|t| t.get("name").and_then(Value::as_str))
                .collect();
            tools.retain(|t| allowed.contains(&t.name.as_str()));
            match choice.get("mode").and_then(Value::as_str) {
                Some("required") => ToolChoice::Required,
                _ => ToolChoice::Auto,
            }
        }
        _ => ToolChoice::Auto,
    }
}

/// `text.format`: `json_schema` and `json_object` ask for structured output; `text` (or none) does not.
fn parse_format(text: Option<&Value>) -> Option<JsonOutput> {
    let format = text?.get("format")?;
    match format.get("type").and_then(Value::as_str)? {
        "json_object" => Some(JsonOutput::Object),
        "json_schema" => Some(JsonOutput::Schema(
            format.get("schema").cloned().unwrap_or_else(|| json!({})),
        )),
        _ => None,
    }
}

/// The text of a tool call's output: a string, or a list of `input_text` (…) parts.
fn output_text(output: &Value) -> String {
    match output {
        Value::String(_) | Value::Array(_) => content_text(output),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The input as a list of items (a string is one user message).
fn input_items(json: &Value) -> Result<Vec<Value>, Failure> {
    match json.get("input") {
        Some(Value::String(s)) => Ok(vec![json!({"role": "user", "content": s})]),
        Some(Value::Array(items)) => Ok(items.clone()),
        // A stored prompt template may stand in for the input.
        None | Some(Value::Null) if json.get("prompt").is_some_and(Value::is_object) => {
            Ok(Vec::new())
        }
        None | Some(Value::Null) => Err(Failure::invalid_param(
            "input",
            "Missing required parameter: 'input'.",
        )),
        Some(_) => Err(Failure::invalid_param(
            "input",
            "Invalid type for 'input': expected one of a string or an array of input items.",
        )),
    }
}

fn unsupported(param: &'static str, json: &Value, what: &str) -> Result<(), Failure> {
    match json.get(param) {
        None | Some(Value::Null | Value::Bool(false)) => Ok(()),
        Some(_) => Err(Failure::invalid_param(
            param,
            format!("'{param}' is not supported by ballast-sim: {what}"),
        )),
    }
}

/// The input items in provider-neutral terms: messages, function (and custom tool) calls, and
/// `*_call_output` results; other items (reasoning, references, built-in tool calls) say nothing.
fn logical(items: &[Value], kind: impl Fn(&Value) -> String) -> Vec<Message> {
    items
        .iter()
        .map(|item| {
            let name = || {
                item.get("name")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned()
            };
            match kind(item).as_str() {
                "message" => {
                    let text = content_text(item.get("content").unwrap_or(&Value::Null));
                    let role = match item.get("role").and_then(Value::as_str) {
                        Some("assistant") => Role::Assistant,
                        Some("system" | "developer") => Role::System,
                        _ => Role::User,
                    };
                    Message::text(role, text)
                }
                "function_call" => Message::new(
                    Role::Assistant,
                    vec![Part::Call {
                        name: name(),
                        arguments: arguments_value(item.get("arguments")),
                    }],
                ),
                "custom_tool_call" => Message::new(
                    Role::Assistant,
                    vec![Part::Call {
                        name: name(),
                        arguments: item.get("input").cloned().unwrap_or(Value::Null),
                    }],
                ),
                k if k.ends_with("_call_output") => Message::new(
                    Role::User,
                    vec![Part::Result(output_text(
                        item.get("output").unwrap_or(&Value::Null),
                    ))],
                ),
                _ => Message::new(Role::Other, Vec::new()),
            }
        })
        .collect()
}

fn item_id(meta: &Meta, prefix: &str) -> String {
    let suffix = meta.id.strip_prefix("resp_").unwrap_or(&meta.id);
    format!("{prefix}{suffix}")
}

/// One output item of an answer.
#[derive(Clone, Copy)]
enum Item<'a> {
    /// An assistant message with one `output_text` part.
    Message(&'a [String]),
    /// A function call.
    Call { name: &'a str, arguments: &'a Value },
}

/// The answer's output items: its text (a message), then its tool call.
fn items(answer: &Answer) -> Vec<Item<'_>> {
    let mut items = Vec::new();
    if let Some(pieces) = answer.text_pieces() {
        items.push(Item::Message(pieces));
    }
    if let Content::ToolCall { name, arguments } = &answer.content {
        items.push(Item::Call { name, arguments });
    }
    items
}

/// An output item, `done` or as `output_item.added` announces it (empty, in progress).
fn output_item(
    item: Item<'_>,
    answer: &Answer,
    meta: &Meta,
    options: &Options,
    done: bool,
) -> Value {
    let status = match (done, &answer.finish) {
        (false, _) => "in_progress",
        (true, Finish::MaxTokens) => "incomplete",
        (true, _) => "completed",
    };
    match item {
        Item::Message(pieces) => {
            let content = if done {
                json!([text_part(&pieces.concat())])
            } else {
                json!([])
            };
            json!({
                "id": item_id(meta, "msg_"), "type": "message", "status": status,
                "role": "assistant", "content": content,
            })
        }
        Item::Call { name, arguments } => {
            let mut item = json!({
                "id": item_id(meta, "fc_"), "type": "function_call", "status": status,
                "call_id": meta.tool_call_id, "name": name,
                "arguments": if done { arguments.to_string() } else { String::new() },
            });
            if let (Some(namespace), Some(obj)) =
                (options.namespaces.get(name), item.as_object_mut())
            {
                obj.insert("namespace".to_owned(), json!(namespace));
            }
            item
        }
    }
}

fn text_part(text: &str) -> Value {
    json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []})
}

fn usage(answer: &Answer) -> Value {
    json!({
        "input_tokens": answer.input_tokens,
        "input_tokens_details": {"cached_tokens": 0, "cache_write_tokens": 0},
        "output_tokens": answer.output_tokens,
        "output_tokens_details": {"reasoning_tokens": 0},
        "total_tokens": answer.input_tokens + answer.output_tokens,
    })
}

/// The `response` object: in progress (no output yet), or finished with the answer.
fn response_object(answer: &Answer, meta: &Meta, options: &Options, done: bool) -> Value {
    let incomplete = done && answer.finish == Finish::MaxTokens;
    let status = match (done, incomplete) {
        (false, _) => "in_progress",
        (true, true) => "incomplete",
        (true, false) => "completed",
    };
    let mut response = json!({
        "id": meta.id,
        "object": "response",
        "created_at": meta.created,
        "status": status,
        "background": false,
        "completed_at": if done && !incomplete { json!(meta.created) } else { Value::Null },
        "error": null,
        "incomplete_details": if incomplete { json!({"reason": "max_output_tokens"}) } else { Value::Null },
        "model": meta.model,
        "output": if done {
            items(answer)
                .into_iter()
                .map(|item| output_item(item, answer, meta, options, true))
                .collect()
        } else {
            Vec::new()
        },
        "previous_response_id": null,
        "service_tier": "default",
        "usage": if done { usage(answer) } else { Value::Null },
    });
    if let Some(obj) = response.as_object_mut() {
        obj.extend(options.echoed.clone());
    }
    response
}

/// Numbers the stream's events and frames them as `event: TYPE` / `data: {…, "type": TYPE,
/// "sequence_number": N}`.
struct Events {
    frames: Vec<Frame>,
    next: u64,
}

impl Events {
    /// `response.created` and `response.in_progress`.
    fn open(&mut self, answer: &Answer, meta: &Meta, options: &Options) {
        let started = response_object(answer, meta, options, false);
        self.push("response.created", json!({"response": started}), false);
        self.push("response.in_progress", json!({"response": started}), false);
    }

    fn push(&mut self, name: &str, mut data: Value, token: bool) {
        if let Some(obj) = data.as_object_mut() {
            obj.insert("type".to_owned(), json!(name));
            obj.insert("sequence_number".to_owned(), json!(self.next));
        }
        self.next += 1;
        let bytes = named_event(name, &data);
        self.frames.push(if token {
            Frame::token(bytes)
        } else {
            Frame::plain(bytes)
        });
    }
}

impl Dialect for Responses {
    const API: crate::Api = crate::Api::OpenAi;
    const CONVERSATION: &'static str = "input";
    const STREAM_ERROR_STATUS: u16 = 500;
    type Options = Options;

    fn authorize(parts: &Parts, key: &str) -> Result<(), Failure> {
        OpenAi::authorize(parts, key)
    }

    fn failure(failure: &Failure, request_id: &str) -> Response {
        OpenAi::failure(failure, request_id)
    }

    fn headers(headers: &mut HeaderMap, request_id: &str) {
        OpenAi::headers(headers, request_id);
    }

    fn prompt(request: &Inbound) -> Result<(Prompt, Options), Failure> {
        let json = &request.json;
        let model = json.get("model").and_then(Value::as_str).ok_or_else(|| {
            Failure::invalid_param("model", "Missing required parameter: 'model'.")
        })?;
        unsupported(
            "previous_response_id",
            json,
            "it stores no responses; send the full conversation in 'input'.",
        )?;
        unsupported(
            "conversation",
            json,
            "it stores no conversations; send the full conversation in 'input'.",
        )?;
        unsupported(
            "background",
            json,
            "it stores no responses; omit 'background'.",
        )?;
        let items = input_items(json)?;
        if request.strict_params {
            params::openai_responses(json)?;
        }
        let max_tokens = match json.get("max_output_tokens") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(n) if n >= MIN_OUTPUT_TOKENS => Some(n),
                Some(n) => {
                    return Err(Failure::invalid_param(
                        "max_output_tokens",
                        format!(
                            "Invalid 'max_output_tokens': integer below minimum value. Expected a value >= \
                             {MIN_OUTPUT_TOKENS}, but got {n} instead."
                        ),
                    ));
                }
                None => {
                    return Err(Failure::invalid_param(
                        "max_output_tokens",
                        "Invalid type for 'max_output_tokens': expected an integer.",
                    ));
                }
            },
        };
        let stream = match json.get("stream") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(Failure::invalid_param(
                    "stream",
                    "Invalid type for 'stream': expected a boolean.",
                ));
            }
        };
        let tools_json = json.get("tools").cloned().unwrap_or(Value::Null);
        let (mut tools, namespaces) = parse_tools(&tools_json);
        let tool_choice = parse_tool_choice(json.get("tool_choice"), &mut tools);

        let kind = |item: &Value| -> String {
            match item.get("type").and_then(Value::as_str) {
                Some(t) => t.to_owned(),
                // Easy input messages may leave out the type.
                None if item.get("role").is_some() => "message".to_owned(),
                None => String::new(),
            }
        };
        let last_user_text = items
            .iter()
            .rev()
            .find(|i| kind(i) == "message" && i.get("role").and_then(Value::as_str) == Some("user"))
            .map(|i| content_text(i.get("content").unwrap_or(&Value::Null)));
        let turn_text = latest_turn_text(
            &items,
            |i| match (kind(i).as_str(), i.get("role").and_then(Value::as_str)) {
                ("message", Some("user")) => Turn::User,
                ("message", Some("system" | "developer")) => Turn::Skip,
                _ => Turn::Other,
            },
            |i| content_text(i.get("content").unwrap_or(&Value::Null)),
        );
        // Any `*_call_output` item last (function, custom tool, shell …) is a tool result.
        let tool_result = items
            .last()
            .filter(|i| kind(i).ends_with("_call_output"))
            .map(|i| output_text(i.get("output").unwrap_or(&Value::Null)));
        let instructions = json.get("instructions").cloned().unwrap_or(Value::Null);
        let messages = logical(&items, kind);
        let input = Value::Array(items);

        let mut echoed: Map<String, Value> = echoed_defaults()
            .into_iter()
            .map(|(name, default)| {
                let value = json.get(name).filter(|v| !v.is_null()).cloned();
                (name.to_owned(), value.unwrap_or(default))
            })
            .collect();
        let mut text = json!({"format": {"type": "text"}, "verbosity": "medium"});
        if let (Some(obj), Some(requested)) = (
            text.as_object_mut(),
            json.get("text").and_then(Value::as_object),
        ) {
            obj.extend(requested.clone());
        }
        echoed.insert("text".to_owned(), text);

        let prompt = Prompt {
            model: model.to_owned(),
            stream,
            system: vec![content_text(&instructions)],
            messages,
            input_chars: text_chars(&instructions) + text_chars(&input) + text_chars(&tools_json),
            last_user_text,
            turn_text,
            tool_result,
            tools,
            tool_choice,
            max_tokens,
            stop_sequences: Vec::new(),
            json_output: parse_format(json.get("text")),
        };
        Ok((prompt, Options { echoed, namespaces }))
    }

    fn id_prefixes() -> (&'static str, &'static str) {
        ("resp_", "call_")
    }

    fn body(answer: &Answer, meta: &Meta, options: &Options) -> Value {
        response_object(answer, meta, options, true)
    }

    fn frames(answer: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        let mut ev = Events {
            frames: Vec::new(),
            next: 0,
        };
        ev.open(answer, meta, options);
        for (output_index, item) in items(answer).into_iter().enumerate() {
            ev.push(
                "response.output_item.added",
                json!({"output_index": output_index, "item": output_item(item, answer, meta, options, false)}),
                false,
            );
            match item {
                Item::Message(pieces) => {
                    let item_id = item_id(meta, "msg_");
                    let at = |extra: Value| {
                        let mut data = json!({"item_id": item_id, "output_index": output_index, "content_index": 0});
                        if let (Some(obj), Value::Object(extra)) = (data.as_object_mut(), extra) {
                            obj.extend(extra);
                        }
                        data
                    };
                    ev.push(
                        "response.content_part.added",
                        at(json!({"part": text_part("")})),
                        false,
                    );
                    for piece in pieces {
                        ev.push(
                            "response.output_text.delta",
                            at(json!({"delta": piece, "logprobs": []})),
                            true,
                        );
                    }
                    let text = pieces.concat();
                    ev.push(
                        "response.output_text.done",
                        at(json!({"text": text, "logprobs": []})),
                        false,
                    );
                    ev.push(
                        "response.content_part.done",
                        at(json!({"part": text_part(&text)})),
                        false,
                    );
                }
                Item::Call { name, arguments } => {
                    let item_id = item_id(meta, "fc_");
                    let arguments = arguments.to_string();
                    for fragment in json_fragments(&arguments) {
                        ev.push(
                            "response.function_call_arguments.delta",
                            json!({"item_id": item_id, "output_index": output_index, "delta": fragment}),
                            true,
                        );
                    }
                    ev.push(
                        "response.function_call_arguments.done",
                        json!({"item_id": item_id, "output_index": output_index, "name": name, "arguments": arguments}),
                        false,
                    );
                }
            }
            ev.push(
                "response.output_item.done",
                json!({"output_index": output_index, "item": output_item(item, answer, meta, options, true)}),
                false,
            );
        }
        let terminal = if answer.finish == Finish::MaxTokens {
            "response.incomplete"
        } else {
            "response.completed"
        };
        ev.push(
            terminal,
            json!({"response": response_object(answer, meta, options, true)}),
            false,
        );
        ev.frames
    }

    fn opening(answer: &Answer, meta: &Meta, options: &Options) -> Vec<Frame> {
        let mut ev = Events {
            frames: Vec::new(),
            next: 0,
        };
        ev.open(answer, meta, options);
        let item = output_item(Item::Message(&[]), answer, meta, options, false);
        ev.push(
            "response.output_item.added",
            json!({"output_index": 0, "item": item}),
            false,
        );
        ev.push(
            "response.content_part.added",
            json!({"item_id": item_id(meta, "msg_"), "output_index": 0, "content_index": 0, "part": text_part("")}),
            false,
        );
        ev.frames
    }

    /// An `error` event (the documented flat fields, and the nested `error` object the API sends),
    /// then the terminal `response.failed`, numbered after the `sent` events.
    fn stream_error(answer: &Answer, meta: &Meta, options: &Options, sent: usize) -> Vec<Frame> {
        let mut ev = Events {
            frames: Vec::new(),
            next: u64::try_from(sent).unwrap_or(u64::MAX),
        };
        let code = "server_error";
        ev.push(
            "error",
            json!({
                "code": code, "message": STREAM_ERROR_MESSAGE, "param": null,
                "error": {"type": "server_error", "code": code, "message": STREAM_ERROR_MESSAGE, "param": null},
            }),
            false,
        );
        let mut failed = response_object(answer, meta, options, false);
        if let Some(obj) = failed.as_object_mut() {
            obj.insert("status".to_owned(), json!("failed"));
            obj.insert(
                "error".to_owned(),
                json!({"code": code, "message": STREAM_ERROR_MESSAGE}),
            );
        }
        ev.push("response.failed", json!({"response": failed}), false);
        ev.frames
    }

    fn prefill_refused(_: &Prompt) -> Failure {
        Failure::invalid_param("input", PREFILL_REFUSED)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tools_and_namespaces() {
        let (tools, namespaces) = parse_tools(&json!([
            {"type": "function", "name": "get_weather", "parameters": {"type": "object"}, "strict": true},
            {"type": "web_search"},
            {"type": "custom", "name": "apply_patch"},
            {"type": "namespace", "name": "crm", "description": "CRM", "tools": [
                {"type": "function", "name": "find_customer", "parameters": null},
                {"type": "custom", "name": "free"}
            ]}
        ]));
        let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
        assert_eq!(names, ["get_weather", "find_customer"]);
        assert_eq!(tools[1].schema, json!({}));
        assert_eq!(
            namespaces.get("find_customer").map(String::as_str),
            Some("crm")
        );
        assert!(!namespaces.contains_key("get_weather"));
    }

    #[test]
    fn tool_choice_forms() {
        let all = || {
            parse_tools(
                &json!([{"type": "function", "name": "a"}, {"type": "function", "name": "b"}]),
            )
            .0
        };
        let check = |choice: Value, expected: ToolChoice, left: &[&str]| {
            let mut tools = all();
            assert_eq!(
                parse_tool_choice(Some(&choice), &mut tools),
                expected,
                "{choice}"
            );
            let names: Vec<&str> = tools.iter().map(|t| t.name.as_str()).collect();
            assert_eq!(names, left, "{choice}");
        };
        check(json!("none"), ToolChoice::None, &["a", "b"]);
        check(json!("auto"), ToolChoice::Auto, &["a", "b"]);
        check(json!("required"), ToolChoice::Required, &["a", "b"]);
        check(
            json!({"type": "function", "name": "b"}),
            ToolChoice::Named("b".into()),
            &["a", "b"],
        );
        check(json!({"type": "web_search"}), ToolChoice::Auto, &["a", "b"]);
        check(
            json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "b"}]}),
            ToolChoice::Required,
            &["b"],
        );
        assert_eq!(parse_tool_choice(None, &mut all()), ToolChoice::Auto);
    }

    #[test]
    fn text_formats() {
        assert_eq!(parse_format(None), None);
        assert_eq!(
            parse_format(Some(&json!({"format": {"type": "text"}}))),
            None
        );
        assert_eq!(
            parse_format(Some(&json!({"format": {"type": "json_object"}}))),
            Some(JsonOutput::Object)
        );
        assert_eq!(
            parse_format(Some(
                &json!({"format": {"type": "json_schema", "name": "x", "schema": {"type": "object"}}})
            )),
            Some(JsonOutput::Schema(json!({"type": "object"})))
        );
    }

    #[test]
    fn tool_outputs_as_text() {
        assert_eq!(output_text(&json!("22C")), "22C");
        assert_eq!(
            output_text(
                &json!([{"type": "input_text", "text": "a"}, {"type": "input_text", "text": "b"}])
            ),
            "ab"
        );
        assert_eq!(output_text(&json!({"t": 1})), r#"{"t":1}"#);
    }
}
