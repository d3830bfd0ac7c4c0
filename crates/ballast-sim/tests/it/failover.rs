//! What mid-stream failover needs from the simulator, on every API: streams cut after N tokens
//! (`truncate` with `after_tokens`, ending `eof`, `reset`, `error_event` or `stall`), streams that
//! open and fall silent (`role_then_silence`), refused prefills (`reject_prefill`), the same answer
//! for the same conversation whatever the API and model, and continuations (an Anthropic prefill, or
//! an instruction to continue) that say exactly the rest of the answer.

use std::time::Duration;

use ballast_sim::{SimConfig, SimHandle};
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::{Event, client, faults, sim, sse_events};

/// The wire formats; `GeminiArray` is Gemini's stream without `?alt=sse` (one JSON array).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Anthropic,
    Chat,
    Responses,
    Gemini,
    GeminiArray,
}

/// The four APIs (Gemini streamed as SSE).
const APIS: [Wire; 4] = [Wire::Anthropic, Wire::Chat, Wire::Responses, Wire::Gemini];

const SEED: u64 = 11;
const QUESTION: &str = "tell me about rivers";
const CONTINUE: &str =
    "Continue exactly where your previous message stopped, without repeating anything.";

/// One turn of a conversation in neutral terms.
#[derive(Clone, Debug)]
enum Turn {
    User(String),
    Assistant(String),
    /// An assistant tool call (name, arguments).
    Call(&'static str, Value),
    /// The result of the call before it.
    Result(&'static str, String),
}

fn user(text: &str) -> Turn {
    Turn::User(text.to_owned())
}

fn assistant(text: &str) -> Turn {
    Turn::Assistant(text.to_owned())
}

/// A model name for each API (any model gives the same answer).
fn model(wire: Wire) -> &'static str {
    match wire {
        Wire::Anthropic => "claude-sonnet-4-5",
        Wire::Chat => "gpt-4o",
        Wire::Responses => "gpt-4.1",
        Wire::Gemini | Wire::GeminiArray => "gemini-2.5-flash",
    }
}

/// The request path and body carrying `turns` (after `system`) in `wire`'s own shape.
fn request(
    wire: Wire,
    model: &str,
    system: Option<&str>,
    turns: &[Turn],
    stream: bool,
) -> (String, Value) {
    match wire {
        Wire::Anthropic => {
            let messages: Vec<Value> = turns
                .iter()
                .map(|t| match t {
                    Turn::User(text) => json!({"role": "user", "content": text}),
                    Turn::Assistant(text) => json!({"role": "assistant", "content": text}),
                    Turn::Call(name, args) => json!({"role": "assistant", "content": [
                        {"type": "tool_use", "id": "toolu_1", "name": name, "input": args}]}),
                    Turn::Result(_, text) => json!({"role": "user", "content": [
                        {"type": "tool_result", "tool_use_id": "toolu_1", "content": text}]}),
                })
                .collect();
            let mut body = json!({"model": model, "max_tokens": 1000, "stream": stream,
                "messages": messages});
            if let Some(system) = system {
                body["system"] = json!([{"type": "text", "text": system}]);
            }
            ("/v1/messages".into(), body)
        }
        Wire::Chat => {
            let mut messages: Vec<Value> = system
                .map(|s| json!({"role": "system", "content": s}))
                .into_iter()
                .collect();
            messages.extend(turns.iter().map(|t| match t {
                Turn::User(text) => json!({"role": "user", "content": text}),
                Turn::Assistant(text) => json!({"role": "assistant", "content": text}),
                Turn::Call(name, args) => json!({"role": "assistant", "content": null,
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": name, "arguments": args.to_string()}}]}),
                Turn::Result(_, text) => {
                    json!({"role": "tool", "tool_call_id": "call_1", "content": text})
                }
            }));
            let mut body = json!({"model": model, "stream": stream, "messages": messages});
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            ("/v1/chat/completions".into(), body)
        }
        Wire::Responses => {
            let input: Vec<Value> = turns
                .iter()
                .map(|t| match t {
                    Turn::User(text) => json!({"role": "user", "content": text}),
                    Turn::Assistant(text) => json!({"type": "message", "role": "assistant",
                        "content": [{"type": "output_text", "text": text, "annotations": []}]}),
                    Turn::Call(name, args) => json!({"type": "function_call", "call_id": "call_1",
                        "name": name, "arguments": args.to_string()}),
                    Turn::Result(_, text) => json!({"type": "function_call_output",
                        "call_id": "call_1", "output": text}),
                })
                .collect();
            let mut body = json!({"model": model, "stream": stream, "input": input});
            if let Some(system) = system {
                body["instructions"] = json!(system);
            }
            ("/v1/responses".into(), body)
        }
        Wire::Gemini | Wire::GeminiArray => {
            let contents: Vec<Value> = turns
                .iter()
                .map(|t| match t {
                    Turn::User(text) => json!({"role": "user", "parts": [{"text": text}]}),
                    Turn::Assistant(text) => json!({"role": "model", "parts": [{"text": text}]}),
                    Turn::Call(name, args) => json!({"role": "model", "parts": [
                        {"functionCall": {"name": name, "args": args}}]}),
                    Turn::Result(name, text) => json!({"role": "user", "parts": [
                        {"functionResponse": {"name": name, "response": {"output": text}}}]}),
                })
                .collect();
            let mut body = json!({"contents": contents});
            if let Some(system) = system {
                body["systemInstruction"] = json!({"parts": [{"text": system}]});
            }
            let path = match (stream, wire) {
                (false, _) => format!("/v1beta/models/{model}:generateContent"),
                (true, Wire::Gemini) => {
                    format!("/v1beta/models/{model}:streamGenerateContent?alt=sse")
                }
                (true, _) => format!("/v1beta/models/{model}:streamGenerateContent"),
            };
            (path, body)
        }
    }
}

async fn post(sim: &SimHandle, path: &str, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// How a body ended while it was read.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum End {
    /// The body ended cleanly.
    Closed,
    /// The connection was cut mid-body.
    Failed,
    /// Nothing came for a while and the body is still open.
    Open,
}

/// Reads a body until it ends or nothing comes for 300 ms.
async fn read_for(response: reqwest::Response) -> (String, End) {
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    let end = loop {
        match tokio::time::timeout(Duration::from_millis(300), stream.next()).await {
            Err(_) => break End::Open,
            Ok(None) => break End::Closed,
            Ok(Some(Err(_))) => break End::Failed,
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
        }
    };
    (String::from_utf8(bytes).unwrap(), end)
}

/// An answer as a client reads it.
#[derive(Debug, Default, PartialEq)]
struct Said {
    text: String,
    /// The tool call, with its arguments as sent (Chat and Responses: a JSON string).
    call: Option<(String, Value)>,
    output_tokens: u64,
}

/// A non-streamed answer.
fn said_in_body(wire: Wire, body: &Value) -> Said {
    let u = |pointer: &str| body.pointer(pointer).and_then(Value::as_u64).unwrap();
    match wire {
        Wire::Anthropic => {
            let blocks = body["content"].as_array().unwrap();
            Said {
                text: blocks.iter().filter_map(|b| b["text"].as_str()).collect(),
                call: blocks
                    .iter()
                    .find(|b| b["type"] == "tool_use")
                    .map(|b| (b["name"].as_str().unwrap().to_owned(), b["input"].clone())),
                output_tokens: u("/usage/output_tokens"),
            }
        }
        Wire::Chat => {
            let message = &body["choices"][0]["message"];
            Said {
                text: message["content"].as_str().unwrap_or_default().to_owned(),
                call: message["tool_calls"].get(0).map(|c| {
                    let f = &c["function"];
                    let args = serde_json::from_str(f["arguments"].as_str().unwrap()).unwrap();
                    (f["name"].as_str().unwrap().to_owned(), args)
                }),
                output_tokens: u("/usage/completion_tokens"),
            }
        }
        Wire::Responses => {
            let output = body["output"].as_array().unwrap();
            Said {
                text: output
                    .iter()
                    .filter(|i| i["type"] == "message")
                    .flat_map(|i| i["content"].as_array().unwrap())
                    .filter_map(|p| p["text"].as_str())
                    .collect(),
                call: output
                    .iter()
                    .find(|i| i["type"] == "function_call")
                    .map(|i| {
                        let args = serde_json::from_str(i["arguments"].as_str().unwrap()).unwrap();
                        (i["name"].as_str().unwrap().to_owned(), args)
                    }),
                output_tokens: u("/usage/output_tokens"),
            }
        }
        Wire::Gemini | Wire::GeminiArray => {
            let parts = body["candidates"][0]["content"]["parts"]
                .as_array()
                .unwrap();
            Said {
                text: parts.iter().filter_map(|p| p["text"].as_str()).collect(),
                call: parts.iter().find_map(|p| {
                    let call = p.get("functionCall")?;
                    Some((
                        call["name"].as_str().unwrap().to_owned(),
                        call["args"].clone(),
                    ))
                }),
                output_tokens: u("/usageMetadata/candidatesTokenCount"),
            }
        }
    }
}

/// The chunks of a Gemini JSON-array stream, closed or cut after a chunk.
fn gemini_array(raw: &str) -> Vec<Value> {
    if raw.is_empty() {
        return Vec::new();
    }
    serde_json::from_str(raw)
        .or_else(|_| serde_json::from_str(&format!("{raw}]")))
        .unwrap_or_else(|e| panic!("not a JSON array stream ({e}): {raw}"))
}

/// The text a stream says (as far as it got) and its output tokens, if it reported them.
fn said_in_stream(wire: Wire, raw: &str) -> Said {
    let mut said = Said::default();
    let events: Vec<(Option<String>, Value)> = if wire == Wire::GeminiArray {
        gemini_array(raw).into_iter().map(|c| (None, c)).collect()
    } else {
        sse_events(raw)
            .into_iter()
            .filter(|e| e.data != "[DONE]")
            .map(|e| (e.name.clone(), e.json()))
            .collect()
    };
    for (name, data) in events {
        match wire {
            Wire::Anthropic => {
                if let Some(t) = data.pointer("/delta/text").and_then(Value::as_str) {
                    said.text.push_str(t);
                }
                if name.as_deref() == Some("message_delta") {
                    said.output_tokens = data["usage"]["output_tokens"].as_u64().unwrap();
                }
            }
            Wire::Chat => {
                if let Some(t) = data
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    said.text.push_str(t);
                }
                if let Some(n) = data
                    .pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
                {
                    said.output_tokens = n;
                }
            }
            Wire::Responses => match name.as_deref() {
                Some("response.output_text.delta") => {
                    said.text.push_str(data["delta"].as_str().unwrap());
                }
                Some("response.completed" | "response.incomplete") => {
                    said.output_tokens =
                        data["response"]["usage"]["output_tokens"].as_u64().unwrap();
                }
                _ => {}
            },
            Wire::Gemini | Wire::GeminiArray => {
                for part in data
                    .pointer("/candidates/0/content/parts")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    if let Some(t) = part["text"].as_str() {
                        said.text.push_str(t);
                    }
                }
                if let Some(n) = data
                    .pointer("/usageMetadata/candidatesTokenCount")
                    .and_then(Value::as_u64)
                {
                    said.output_tokens = n;
                }
            }
        }
    }
    said
}

/// Asks `turns` of `wire`, streamed or not, and reads the whole answer.
async fn ask(sim: &SimHandle, wire: Wire, model: &str, turns: &[Turn], stream: bool) -> Said {
    let (path, body) = request(wire, model, None, turns, stream);
    let resp = post(sim, &path, &body).await;
    assert_eq!(resp.status(), 200, "{wire:?} {path}");
    if stream {
        let (raw, end) = read_for(resp).await;
        assert_eq!(end, End::Closed, "{wire:?}: {raw}");
        said_in_stream(wire, &raw)
    } else {
        said_in_body(wire, &resp.json().await.unwrap())
    }
}

/// The pieces a text streams in, as the simulator splits it: leading whitespace and a word.
fn pieces(text: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut current = String::new();
    let mut seen_word = false;
    for c in text.chars() {
        if c.is_whitespace() && seen_word {
            out.push(std::mem::take(&mut current));
            seen_word = false;
        }
        seen_word |= !c.is_whitespace();
        current.push(c);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

async fn seeded_sim() -> SimHandle {
    sim(SimConfig {
        seed: SEED,
        ..SimConfig::default()
    })
    .await
}

/// The clean answer to `QUESTION` (the same on every API).
async fn full_answer(sim: &SimHandle) -> String {
    ask(sim, Wire::Chat, "gpt-4o", &[user(QUESTION)], false)
        .await
        .text
}

fn names(events: &[Event]) -> Vec<&str> {
    events
        .iter()
        .map(|e| e.name.as_deref().unwrap_or("data"))
        .collect()
}

#[tokio::test]
async fn the_same_conversation_gets_the_same_answer_on_every_api_and_model() {
    let sim = seeded_sim().await;
    let conversations = [
        vec![user(QUESTION)],
        vec![
            user("what is the weather in Paris?"),
            Turn::Call("get_weather", json!({"city": "Paris"})),
            Turn::Result("get_weather", "sunny, 21C".into()),
            assistant("It is sunny in Paris."),
            user("and what should I wear?"),
        ],
    ];
    for turns in &conversations {
        for system in [None, Some("You are a terse assistant.")] {
            let mut seen: Vec<(Wire, &str, bool, Said)> = Vec::new();
            for wire in APIS {
                for model in [model(wire), "any-model-at-all"] {
                    for stream in [false, true] {
                        let (path, body) = request(wire, model, system, turns, stream);
                        let resp = post(&sim, &path, &body).await;
                        assert_eq!(resp.status(), 200);
                        let said = if stream {
                            let (raw, _) = read_for(resp).await;
                            said_in_stream(wire, &raw)
                        } else {
                            said_in_body(wire, &resp.json().await.unwrap())
                        };
                        seen.push((wire, model, stream, said));
                    }
                }
            }
            let (_, _, _, first) = &seen[0];
            assert!(first.text.len() > 20, "{first:?}");
            for (wire, model, stream, said) in &seen {
                assert_eq!(said, first, "{wire:?} {model} stream={stream} {system:?}");
            }
        }
    }
    // The system prompt and the conversation count; another seed answers otherwise.
    let plain = ask(&sim, Wire::Gemini, "g", &[user(QUESTION)], false).await;
    let (path, body) = request(
        Wire::Gemini,
        "g",
        Some("Be brief."),
        &[user(QUESTION)],
        false,
    );
    let with_system = said_in_body(
        Wire::Gemini,
        &post(&sim, &path, &body).await.json().await.unwrap(),
    );
    assert_ne!(plain.text, with_system.text);
    let other = sim_with_seed(SEED + 1).await;
    assert_ne!(
        ask(&other, Wire::Gemini, "g", &[user(QUESTION)], false)
            .await
            .text,
        plain.text
    );
    // A tool result reads the same on every API (Gemini's `{"output": …}` is its text).
    for wire in APIS {
        let turns = [
            user("weather?"),
            Turn::Call("get_weather", json!({})),
            Turn::Result("get_weather", "sunny, 21C".into()),
        ];
        let said = ask(&sim, wire, model(wire), &turns, false).await;
        assert_eq!(said.text, "Tool result received: sunny, 21C", "{wire:?}");
    }
    other.shutdown().await;
    sim.shutdown().await;
}

async fn sim_with_seed(seed: u64) -> SimHandle {
    sim(SimConfig {
        seed,
        ..SimConfig::default()
    })
    .await
}

/// Sets faults through the control plane, as a remote user would.
async fn set_faults(sim: &SimHandle, faults: Value) {
    let resp = client()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&faults)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{faults}");
}

/// The events (and their data) a stream cut after `n` text pieces sends before its ending.
fn check_cut_prefix(wire: Wire, raw: &str, n: usize, full: &[String]) {
    let said = said_in_stream(wire, raw);
    assert_eq!(said.text, full[..n].concat(), "{wire:?}: {raw}");
    match wire {
        Wire::GeminiArray => {
            assert!(raw.starts_with("[{"), "{raw}");
            assert!(!raw.contains("finishReason"), "{raw}");
        }
        _ => {
            let events = sse_events(raw);
            let mut expected: Vec<&str> = match wire {
                Wire::Anthropic => vec!["message_start", "content_block_start", "ping"],
                Wire::Chat => vec!["data"],
                Wire::Responses => vec![
                    "response.created",
                    "response.in_progress",
                    "response.output_item.added",
                    "response.content_part.added",
                ],
                _ => vec![],
            };
            let delta = match wire {
                Wire::Anthropic => "content_block_delta",
                Wire::Responses => "response.output_text.delta",
                _ => "data",
            };
            expected.extend(std::iter::repeat_n(delta, n));
            let names = names(&events);
            assert_eq!(&names[..expected.len()], expected, "{wire:?}: {raw}");
            // Nothing after the pieces but the error event, if any: never a terminal event.
            for e in &events[..expected.len()] {
                let data = e.json();
                assert!(
                    data.pointer("/choices/0/finish_reason")
                        .is_none_or(Value::is_null)
                );
                assert!(data.pointer("/candidates/0/finishReason").is_none());
            }
        }
    }
}

#[tokio::test]
async fn truncate_after_tokens_ends_each_way_in_every_api() {
    let sim = seeded_sim().await;
    let full = pieces(&full_answer(&sim).await);
    assert!(full.len() > 4);
    let n = 3;
    for mode in ["eof", "reset", "error_event", "stall"] {
        for wire in [
            Wire::Anthropic,
            Wire::Chat,
            Wire::Responses,
            Wire::Gemini,
            Wire::GeminiArray,
        ] {
            set_faults(&sim, json!({"truncate": {"mode": mode, "after_tokens": n}})).await;
            let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], true);
            let resp = post(&sim, &path, &body).await;
            assert_eq!(resp.status(), 200);
            let (raw, end) = read_for(resp).await;
            let expected_end = match mode {
                "eof" | "error_event" => End::Closed,
                "reset" => End::Failed,
                _ => End::Open,
            };
            assert_eq!(end, expected_end, "{mode} {wire:?}: {raw}");
            if mode != "error_event" {
                check_cut_prefix(wire, &raw, n, &full);
                if wire == Wire::GeminiArray {
                    let chunks: Vec<Value> = serde_json::from_str(&format!("{raw}]")).unwrap();
                    assert_eq!(chunks.len(), n, "{raw}");
                } else {
                    let expected = match wire {
                        Wire::Anthropic => 3 + n,
                        Wire::Chat => 1 + n,
                        Wire::Responses => 4 + n,
                        _ => n,
                    };
                    assert_eq!(sse_events(&raw).len(), expected, "{mode} {wire:?}: {raw}");
                }
                continue;
            }
            // The provider's own error event, last.
            if wire == Wire::GeminiArray {
                let chunks: Vec<Value> = serde_json::from_str(&raw).unwrap();
                assert_eq!(chunks.len(), n + 1, "{raw}");
                assert_eq!(
                    chunks[n],
                    json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
                );
                check_cut_prefix(wire, &raw[..raw.rfind(",\r\n").unwrap()], n, &full);
                continue;
            }
            let events = sse_events(&raw);
            let (body, errors) = match wire {
                Wire::Responses => events.split_at(events.len() - 2),
                _ => events.split_at(events.len() - 1),
            };
            let mut prefix = String::new();
            for e in body {
                if let Some(name) = &e.name {
                    prefix.push_str(&format!("event: {name}\n"));
                }
                prefix.push_str(&format!("data: {}\n\n", e.data));
            }
            check_cut_prefix(wire, &prefix, n, &full);
            match wire {
                Wire::Anthropic => {
                    assert!(raw.ends_with("\n\n") && raw.contains("\nevent: error\ndata: {"));
                    assert_eq!(errors[0].name.as_deref(), Some("error"));
                    assert_eq!(
                        errors[0].json(),
                        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
                    );
                }
                Wire::Chat => {
                    assert!(!raw.contains("[DONE]"));
                    assert_eq!(errors[0].name, None);
                    assert_eq!(
                        errors[0].json(),
                        json!({"error": {"message": "The server had an error while processing your request. Sorry about that!",
                            "type": "server_error", "param": null, "code": null}})
                    );
                }
                Wire::Responses => {
                    let expected_seq = (4 + n) as u64;
                    assert_eq!(names(errors), ["error", "response.failed"]);
                    let error = errors[0].json();
                    assert_eq!(error["type"], "error");
                    assert_eq!(error["sequence_number"], expected_seq);
                    assert_eq!(error["code"], "server_error");
                    assert_eq!(error["error"]["type"], "server_error");
                    assert_eq!(error["message"], error["error"]["message"]);
                    let failed = errors[1].json();
                    assert_eq!(failed["type"], "response.failed");
                    assert_eq!(failed["sequence_number"], expected_seq + 1);
                    assert_eq!(failed["response"]["status"], "failed");
                    assert_eq!(failed["response"]["error"]["code"], "server_error");
                    assert!(raw.ends_with("\n\n"));
                }
                _ => {
                    assert!(raw.ends_with("\r\n\r\n"));
                    assert_eq!(
                        errors[0].json(),
                        json!({"error": {"code": 503, "message": "The model is overloaded. Please try again later.", "status": "UNAVAILABLE"}})
                    );
                }
            }
        }
    }
    assert_eq!(sim.stats().by_outcome.truncated, 20);
    sim.shutdown().await;
}

#[tokio::test]
async fn truncate_after_zero_tokens_sends_only_the_opening_and_more_than_the_answer_sends_it_all() {
    let sim = sim(SimConfig {
        seed: SEED,
        faults: faults(&["truncate:after_tokens=0"]),
        ..SimConfig::default()
    })
    .await;
    let clean = seeded_sim().await;
    let full = pieces(&full_answer(&clean).await);
    clean.shutdown().await;
    for wire in APIS {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], true);
        let (raw, end) = read_for(post(&sim, &path, &body).await).await;
        assert_eq!(end, End::Closed);
        check_cut_prefix(wire, &raw, 0, &full);
        if wire == Wire::Gemini {
            assert_eq!(raw, "", "Gemini has no opening event");
        }
    }
    sim.set_faults(faults(&["truncate:after_tokens=1000"]));
    for wire in APIS {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], true);
        let (raw, end) = read_for(post(&sim, &path, &body).await).await;
        assert_eq!(end, End::Closed);
        let said = said_in_stream(wire, &raw);
        let last = match wire {
            // The last chunk carries the last piece and `finishReason`: it never comes.
            Wire::Gemini => full.len() - 1,
            _ => full.len(),
        };
        assert_eq!(said.text, full[..last].concat(), "{wire:?}");
        for terminal in [
            "message_stop",
            "[DONE]",
            "response.completed",
            "finishReason",
        ] {
            assert!(!raw.contains(terminal), "{wire:?}: {raw}");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_cut_can_land_inside_a_tool_call() {
    let sim = seeded_sim().await;
    let schema = json!({"type": "object", "properties": {
        "city": {"type": "string"}, "country": {"type": "string"}, "days": {"type": "integer"}},
        "required": ["city", "country", "days"]});
    let arguments = json!({"city": "example", "country": "example", "days": 1}).to_string();
    let body = |wire: Wire| -> (String, Value) {
        let (path, mut body) = request(wire, model(wire), None, &[user("weather?")], true);
        match wire {
            Wire::Anthropic => {
                body["tools"] = json!([{"name": "get_weather", "input_schema": schema}]);
                body["tool_choice"] = json!({"type": "any"});
            }
            Wire::Chat => {
                body["tools"] = json!([{"type": "function", "function": {"name": "get_weather", "parameters": schema}}]);
                body["tool_choice"] = json!("required");
            }
            Wire::Responses => {
                body["tools"] =
                    json!([{"type": "function", "name": "get_weather", "parameters": schema}]);
                body["tool_choice"] = json!("required");
            }
            _ => {
                body["tools"] = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": schema}]}]);
                body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
            }
        }
        (path, body)
    };
    /// The argument fragments a stream sends.
    fn fragments(wire: Wire, raw: &str) -> Vec<String> {
        sse_events(raw)
            .iter()
            .filter(|e| e.data != "[DONE]")
            .filter_map(|e| {
                let data = e.json();
                let f = match wire {
                    Wire::Anthropic => data.pointer("/delta/partial_json"),
                    Wire::Chat => data.pointer("/choices/0/delta/tool_calls/0/function/arguments"),
                    _ => (e.name.as_deref() == Some("response.function_call_arguments.delta"))
                        .then(|| &data["delta"]),
                };
                f.and_then(Value::as_str).map(str::to_owned)
            })
            .filter(|f| !f.is_empty())
            .collect()
    }
    // Whole streams send the arguments in several fragments.
    for wire in [Wire::Anthropic, Wire::Chat, Wire::Responses] {
        let (path, body) = body(wire);
        let (raw, _) = read_for(post(&sim, &path, &body).await).await;
        let all = fragments(wire, &raw);
        assert!(all.len() >= 3, "{wire:?}: {all:?}");
        assert_eq!(all.concat(), arguments, "{wire:?}");
    }
    sim.set_faults(faults(&["truncate:error_event,after_tokens=2"]));
    for wire in [Wire::Anthropic, Wire::Chat, Wire::Responses] {
        let (path, body) = body(wire);
        let (raw, end) = read_for(post(&sim, &path, &body).await).await;
        assert_eq!(end, End::Closed);
        let got = fragments(wire, &raw);
        assert_eq!(got.len(), 2, "{wire:?}: {raw}");
        assert!(arguments.starts_with(&got.concat()) && got.concat() != arguments);
        let events = sse_events(&raw);
        let names = names(&events);
        let expected: &[&str] = match wire {
            Wire::Anthropic => &[
                "message_start",
                "content_block_start",
                "ping",
                "content_block_delta",
                "content_block_delta",
                "error",
            ],
            Wire::Chat => &["data", "data", "data", "data"],
            _ => &[
                "response.created",
                "response.in_progress",
                "response.output_item.added",
                "response.function_call_arguments.delta",
                "response.function_call_arguments.delta",
                "error",
                "response.failed",
            ],
        };
        assert_eq!(names, expected, "{wire:?}: {raw}");
        if wire == Wire::Chat {
            // The call starts (name, empty arguments) in the role chunk.
            let first = events[0].json();
            assert_eq!(
                first["choices"][0]["delta"]["tool_calls"][0]["function"],
                json!({"name": "get_weather", "arguments": ""})
            );
            assert!(events[3].json()["error"].is_object());
        }
    }
    // Gemini sends a call whole, in the chunk that also ends the answer: it never arrives.
    let (path, body) = body(Wire::Gemini);
    let (raw, end) = read_for(post(&sim, &path, &body).await).await;
    assert_eq!(end, End::Closed);
    let events = sse_events(&raw);
    assert_eq!(events.len(), 1, "{raw}");
    assert_eq!(events[0].json()["error"]["status"], "UNAVAILABLE");
    sim.shutdown().await;
}

#[tokio::test]
async fn role_then_silence_opens_the_answer_and_falls_silent() {
    let sim = sim(SimConfig {
        seed: SEED,
        faults: faults(&["role_then_silence"]),
        ..SimConfig::default()
    })
    .await;
    for wire in [
        Wire::Anthropic,
        Wire::Chat,
        Wire::Responses,
        Wire::Gemini,
        Wire::GeminiArray,
    ] {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], true);
        let resp = post(&sim, &path, &body).await;
        assert_eq!(resp.status(), 200);
        let (raw, end) = read_for(resp).await;
        assert_eq!(end, End::Open, "{wire:?}");
        let events = sse_events(&raw);
        match wire {
            Wire::Anthropic => {
                assert_eq!(
                    names(&events),
                    ["message_start", "content_block_start", "ping"]
                );
                assert_eq!(events[0].json()["message"]["content"], json!([]));
                assert_eq!(
                    events[1].json(),
                    json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
                );
                assert_eq!(events[2].json(), json!({"type": "ping"}));
            }
            Wire::Chat => {
                assert_eq!(events.len(), 1, "{raw}");
                let chunk = events[0].json();
                assert_eq!(chunk["object"], "chat.completion.chunk");
                assert_eq!(
                    chunk["choices"],
                    json!([{"index": 0, "delta": {"role": "assistant", "content": "", "refusal": null},
                        "logprobs": null, "finish_reason": null}])
                );
            }
            Wire::Responses => {
                assert_eq!(
                    names(&events),
                    [
                        "response.created",
                        "response.in_progress",
                        "response.output_item.added",
                        "response.content_part.added"
                    ]
                );
                for (i, e) in events.iter().enumerate() {
                    assert_eq!(e.json()["sequence_number"], i as u64);
                }
                assert_eq!(events[0].json()["response"]["status"], "in_progress");
                let item = &events[2].json()["item"];
                assert_eq!(
                    (&item["type"], &item["status"], &item["content"]),
                    (&json!("message"), &json!("in_progress"), &json!([]))
                );
                assert_eq!(events[3].json()["part"]["text"], "");
            }
            Wire::Gemini => {
                assert_eq!(events.len(), 1, "{raw}");
                let chunk = events[0].json();
                assert_eq!(
                    chunk["candidates"],
                    json!([{"content": {"parts": [{"text": ""}], "role": "model"}, "index": 0}])
                );
                assert!(raw.ends_with("\r\n\r\n"));
            }
            Wire::GeminiArray => {
                assert!(raw.starts_with("[{"), "{raw}");
                let chunk: Value = serde_json::from_str(&raw[1..]).unwrap();
                assert_eq!(
                    chunk["candidates"][0]["content"]["parts"],
                    json!([{"text": ""}])
                );
            }
        }
    }
    // Non-streamed: the status and headers, then no body.
    for wire in APIS {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], false);
        let resp = post(&sim, &path, &body).await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["content-type"], "application/json");
        let (raw, end) = read_for(resp).await;
        assert_eq!((raw.as_str(), end), ("", End::Open), "{wire:?}");
    }
    assert_eq!(sim.stats().by_outcome.hang, 9);
    sim.shutdown().await;
}

#[tokio::test]
async fn reject_prefill_refuses_a_conversation_ending_with_the_assistant() {
    let sim = sim(SimConfig {
        seed: SEED,
        faults: faults(&["reject_prefill"]),
        ..SimConfig::default()
    })
    .await;
    let prefill = [user(QUESTION), assistant("Rivers")];
    let message = "This model does not support assistant message prefill. The conversation must end with a user message.";
    for wire in APIS {
        let (path, body) = request(wire, model(wire), None, &prefill, true);
        let resp = post(&sim, &path, &body).await;
        assert_eq!(resp.status(), 400, "{wire:?}");
        let body: Value = resp.json().await.unwrap();
        match wire {
            Wire::Anthropic => {
                assert_eq!(
                    body["error"],
                    json!({"type": "invalid_request_error", "message": message})
                );
                assert_eq!(body["type"], "error");
                assert!(body["request_id"].as_str().unwrap().starts_with("req_"));
            }
            Wire::Chat | Wire::Responses => {
                let param = if wire == Wire::Chat {
                    "messages"
                } else {
                    "input"
                };
                assert_eq!(
                    body,
                    json!({"error": {"message": message, "type": "invalid_request_error", "param": param, "code": null}})
                );
            }
            _ => assert_eq!(
                body,
                json!({"error": {"code": 400, "status": "INVALID_ARGUMENT",
                    "message": "Please ensure that multiturn requests ends with a user role or a function response."}})
            ),
        }
        // A conversation that ends with the user (an instruction to continue too) is answered.
        for turns in [
            vec![user(QUESTION)],
            vec![user(QUESTION), assistant("Rivers"), user(CONTINUE)],
        ] {
            let (path, body) = request(wire, model(wire), None, &turns, false);
            assert_eq!(post(&sim, &path, &body).await.status(), 200, "{wire:?}");
        }
    }
    // Scoped to one API, the others continue as they do.
    sim.set_faults(faults(&["reject_prefill/anthropic"]));
    let (path, body) = request(Wire::Gemini, "g", None, &prefill, false);
    assert_eq!(post(&sim, &path, &body).await.status(), 200);
    let (path, body) = request(Wire::Anthropic, "claude-sonnet-4-5", None, &prefill, false);
    assert_eq!(post(&sim, &path, &body).await.status(), 400);
    assert_eq!(sim.stats().by_outcome.invalid, 5);
    sim.shutdown().await;
}

#[tokio::test]
async fn an_anthropic_prefill_gets_exactly_the_rest() {
    let sim = seeded_sim().await;
    let text = full_answer(&sim).await;
    let full = pieces(&text);
    for n in [0, 1, 4, full.len() - 1, full.len()] {
        let delivered = full[..n].concat();
        let rest = full[n..].concat();
        for stream in [false, true] {
            let turns = [user(QUESTION), assistant(&delivered)];
            let said = ask(&sim, Wire::Anthropic, "claude-opus-4-1", &turns, stream).await;
            assert_eq!(said.text, rest, "n={n} stream={stream}");
            assert_eq!(said.output_tokens as usize, full.len() - n);
        }
    }
    // A streamed continuation is a normal stream of the rest.
    let turns = [user(QUESTION), assistant(&full[..4].concat())];
    let (path, body) = request(Wire::Anthropic, "claude-haiku-4-5", None, &turns, true);
    let (raw, end) = read_for(post(&sim, &path, &body).await).await;
    assert_eq!(end, End::Closed);
    let events = sse_events(&raw);
    let deltas = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .count();
    assert_eq!(deltas, full.len() - 4);
    assert_eq!(names(&events).last(), Some(&"message_stop"));
    let stop = events
        .iter()
        .find(|e| e.name.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(stop["delta"]["stop_reason"], "end_turn");
    // `max_tokens` bounds the new tokens.
    let (path, mut body) = request(Wire::Anthropic, "claude-sonnet-4-5", None, &turns, false);
    body["max_tokens"] = json!(3);
    let answer: Value = post(&sim, &path, &body).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], full[4..7].concat());
    assert_eq!(answer["stop_reason"], "max_tokens");
    // A prefill the answer does not start with: the answer as usual.
    let said = ask(
        &sim,
        Wire::Anthropic,
        "claude-sonnet-4-5",
        &[user(QUESTION), assistant("Lakes are")],
        false,
    )
    .await;
    assert_eq!(said.text, text);
    // The API refuses a prefill ending in whitespace (unless parameters are lenient).
    let trailing = [
        user(QUESTION),
        assistant(&format!("{} ", full[..2].concat())),
    ];
    let (path, body) = request(Wire::Anthropic, "claude-sonnet-4-5", None, &trailing, false);
    let resp = post(&sim, &path, &body).await;
    assert_eq!(resp.status(), 400);
    let error: Value = resp.json().await.unwrap();
    assert_eq!(
        error["error"]["message"],
        "messages: final assistant content cannot end with trailing whitespace"
    );
    let lenient = sim_lenient().await;
    assert_eq!(post(&lenient, &path, &body).await.status(), 200);
    lenient.shutdown().await;
    sim.shutdown().await;
}

async fn sim_lenient() -> SimHandle {
    sim(SimConfig {
        seed: SEED,
        strict_params: false,
        ..SimConfig::default()
    })
    .await
}

#[tokio::test]
async fn other_apis_answer_a_prefill_afresh() {
    let sim = seeded_sim().await;
    let full = pieces(&full_answer(&sim).await);
    let delivered = full[..4].concat();
    let rest = full[4..].concat();
    let turns = [user(QUESTION), assistant(&delivered)];
    let mut answers = Vec::new();
    for wire in [Wire::Chat, Wire::Responses, Wire::Gemini] {
        let said = ask(&sim, wire, model(wire), &turns, false).await;
        assert_ne!(said.text, rest, "{wire:?}");
        answers.push(said.text);
    }
    // The same (new) answer to the same conversation on each.
    assert!(answers.iter().all(|a| *a == answers[0]), "{answers:?}");
    sim.shutdown().await;
}

#[tokio::test]
async fn an_instruction_to_continue_gets_exactly_the_rest_on_every_api() {
    let sim = seeded_sim().await;
    let text = full_answer(&sim).await;
    let full = pieces(&text);
    for wire in APIS {
        for n in [0, 3, full.len() - 1] {
            let turns = [
                user(QUESTION),
                assistant(&full[..n].concat()),
                user(CONTINUE),
            ];
            for stream in [false, true] {
                let said = ask(&sim, wire, model(wire), &turns, stream).await;
                assert_eq!(
                    said.text,
                    full[n..].concat(),
                    "{wire:?} n={n} stream={stream}"
                );
                assert_eq!(said.output_tokens as usize, full.len() - n, "{wire:?} {n}");
            }
        }
        // With a system prompt, asked in any case.
        let system = Some("Be helpful.");
        let (path, body) = request(wire, model(wire), system, &[user(QUESTION)], false);
        let whole = said_in_body(wire, &post(&sim, &path, &body).await.json().await.unwrap());
        assert_ne!(whole.text, text, "the system prompt changes the answer");
        let said_first = pieces(&whole.text)[..2].concat();
        let turns = [
            user(QUESTION),
            assistant(&said_first),
            user("please CONTINUE."),
        ];
        let (path, body) = request(wire, model(wire), system, &turns, false);
        let said = said_in_body(wire, &post(&sim, &path, &body).await.json().await.unwrap());
        assert_eq!(format!("{said_first}{}", said.text), whole.text, "{wire:?}");
        // All of it said, or something else said: a new answer, not a remainder.
        for delivered in [text.clone(), "Lakes are".to_owned()] {
            let turns = [user(QUESTION), assistant(&delivered), user(CONTINUE)];
            let said = ask(&sim, wire, model(wire), &turns, false).await;
            assert!(!said.text.is_empty());
            assert!(!text.ends_with(&said.text), "{wire:?}: {}", said.text);
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn a_cut_stream_continued_elsewhere_makes_one_answer() {
    // The first target cuts after 5 tokens; the gateway continues on a second one (another
    // simulator with the same seed), through any API, by instruction or (Anthropic) by prefill.
    let first = sim(SimConfig {
        seed: SEED,
        faults: faults(&["truncate:error_event,after_tokens=5"]),
        ..SimConfig::default()
    })
    .await;
    let second = seeded_sim().await;
    let text = full_answer(&second).await;
    for from in APIS {
        let (path, body) = request(from, model(from), None, &[user(QUESTION)], true);
        let (raw, end) = read_for(post(&first, &path, &body).await).await;
        assert_eq!(end, End::Closed);
        let delivered = said_in_stream(from, &raw).text;
        assert_eq!(pieces(&delivered).len(), 5);
        for to in APIS {
            let mut asks = vec![vec![user(QUESTION), assistant(&delivered), user(CONTINUE)]];
            if to == Wire::Anthropic {
                asks.push(vec![user(QUESTION), assistant(&delivered)]);
            }
            for turns in asks {
                let rest = ask(&second, to, "backup-model", &turns, true).await;
                assert_eq!(
                    format!("{delivered}{}", rest.text),
                    text,
                    "{from:?} → {to:?}"
                );
            }
        }
    }
    first.shutdown().await;
    second.shutdown().await;
}

#[tokio::test]
async fn a_tool_call_cut_short_is_made_again() {
    let sim = seeded_sim().await;
    let tools = |wire: Wire, body: &mut Value| match wire {
        Wire::Anthropic => {
            body["tools"] = json!([{"name": "lookup", "input_schema": {"type": "object",
                "properties": {"q": {"type": "string"}}, "required": ["q"]}}]);
        }
        Wire::Chat => {
            body["tools"] = json!([{"type": "function", "function": {"name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}}]);
        }
        Wire::Responses => {
            body["tools"] = json!([{"type": "function", "name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]);
        }
        _ => {
            body["tools"] = json!([{"functionDeclarations": [{"name": "lookup",
                "parameters": {"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}}]}]);
        }
    };
    // The user asks for the tool by name: every API calls it.
    let question = user("please lookup the answer");
    for wire in APIS {
        let mut asks = vec![vec![question.clone(), assistant(""), user(CONTINUE)]];
        if wire == Wire::Anthropic {
            asks.push(vec![question.clone(), assistant("")]);
        }
        for turns in asks {
            let (path, mut body) = request(wire, model(wire), None, &turns, false);
            tools(wire, &mut body);
            let said = said_in_body(wire, &post(&sim, &path, &body).await.json().await.unwrap());
            assert_eq!(
                said.call,
                Some(("lookup".to_owned(), json!({"q": "example"}))),
                "{wire:?}"
            );
            assert_eq!(said.text, "");
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn truncate_modes_on_non_streamed_answers() {
    let sim = seeded_sim().await;
    // `error_event`: the error the stream would carry, as an error response.
    set_faults(
        &sim,
        json!({"truncate": {"mode": "error_event", "after_tokens": 2}}),
    )
    .await;
    for (wire, status) in [
        (Wire::Anthropic, 529),
        (Wire::Chat, 500),
        (Wire::Responses, 500),
        (Wire::Gemini, 503),
    ] {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], false);
        let resp = post(&sim, &path, &body).await;
        assert_eq!(resp.status(), status, "{wire:?}");
        let body: Value = resp.json().await.unwrap();
        match wire {
            Wire::Anthropic => assert_eq!(
                body["error"],
                json!({"type": "overloaded_error", "message": "Overloaded"})
            ),
            Wire::Gemini => assert_eq!(body["error"]["status"], "UNAVAILABLE"),
            _ => assert_eq!(body["error"]["type"], "server_error"),
        }
    }
    // `stall`: half the JSON, then nothing, the connection open.
    set_faults(&sim, json!({"truncate": {"mode": "stall"}})).await;
    for wire in APIS {
        let (path, body) = request(wire, model(wire), None, &[user(QUESTION)], false);
        let resp = post(&sim, &path, &body).await;
        assert_eq!(resp.status(), 200);
        let (raw, end) = read_for(resp).await;
        assert_eq!(end, End::Open, "{wire:?}");
        assert!(raw.starts_with('{') && serde_json::from_str::<Value>(&raw).is_err());
    }
    assert_eq!(sim.stats().by_outcome.truncated, 8);
    // The control plane refuses what does not fit.
    for bad in [
        json!({"truncate": {"mode": "sideways"}}),
        json!({"truncate": {"after_tokens": "five"}}),
        json!({"truncate": {"after": 5}}),
        json!({"reject_prefill": {"rate": 2}}),
        json!({"role_then_silence": {"api": "bedrock"}}),
    ] {
        let resp = client()
            .post(format!("{}/_sim/faults", sim.base_url()))
            .json(&bad)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    let resp = client()
        .get(format!("{}/_sim/faults", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"truncate": {"mode": "stall", "rate": 1.0}})
    );
    sim.shutdown().await;
}
