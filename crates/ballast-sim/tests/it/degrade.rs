//! The `degrade` fault (empty, repeat, short, invalid_json) and JSON answers to requests that ask for
//! JSON, on every API, streamed and not, each answer read back as that API's client reads it.

use ballast_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

use crate::{client, faults, read_stream, sim, sse_events};

/// The four wire formats.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Wire {
    Anthropic,
    Chat,
    Responses,
    Gemini,
}

const WIRES: [Wire; 4] = [Wire::Anthropic, Wire::Chat, Wire::Responses, Wire::Gemini];

/// Why an answer ended, in the format's own words, sorted.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Stop {
    /// `end_turn`, `stop`, `STOP`, a `completed` response.
    Natural,
    /// `max_tokens`, `length`, `MAX_TOKENS`, an `incomplete` response for `max_output_tokens`.
    TokenLimit,
    Other(String),
}

/// An answer as a client sees it.
#[derive(Debug)]
struct Read {
    text: String,
    /// Streamed events (non-streamed: parts or blocks) carrying non-empty text.
    text_deltas: usize,
    stop: Stop,
    output_tokens: u64,
    /// The non-streamed body, or the final event's payload.
    last: Value,
}

const PROMPT: &str = "tell me something";

fn schema() -> Value {
    json!({"type": "object", "properties": {"answer": {"type": "string"}}, "required": ["answer"]})
}

/// The request path and body; `json` asks for a JSON answer in the format's own way.
fn request(wire: Wire, stream: bool, json: bool) -> (String, Value) {
    match wire {
        Wire::Anthropic => {
            let mut body = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}]});
            if json {
                body["output_config"] =
                    json!({"format": {"type": "json_schema", "schema": schema()}});
            }
            ("/v1/messages".into(), body)
        }
        Wire::Chat => {
            let mut body = json!({"model": "gpt-4o", "stream": stream,
                "messages": [{"role": "user", "content": PROMPT}]});
            if stream {
                body["stream_options"] = json!({"include_usage": true});
            }
            if json {
                body["response_format"] = json!({"type": "json_object"});
            }
            ("/v1/chat/completions".into(), body)
        }
        Wire::Responses => {
            let mut body = json!({"model": "gpt-4.1", "input": PROMPT, "stream": stream});
            if json {
                body["text"] = json!({"format": {"type": "json_schema", "name": "answer", "strict": true,
                    "schema": schema()}});
            }
            ("/v1/responses".into(), body)
        }
        Wire::Gemini => {
            let path = if stream {
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            } else {
                "/v1beta/models/gemini-2.5-flash:generateContent"
            };
            let mut body = json!({"contents": [{"role": "user", "parts": [{"text": PROMPT}]}]});
            if json {
                body["generationConfig"] = json!({"responseMimeType": "application/json"});
            }
            (path.into(), body)
        }
    }
}

fn stop_of(reason: &str) -> Stop {
    match reason {
        "end_turn" | "stop" | "STOP" => Stop::Natural,
        "max_tokens" | "length" | "MAX_TOKENS" => Stop::TokenLimit,
        other => Stop::Other(other.to_owned()),
    }
}

fn u64_at(value: &Value, pointer: &str) -> u64 {
    value
        .pointer(pointer)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("no {pointer} in {value}"))
}

/// A Responses `response` object's text, stop and output tokens.
fn read_response_object(response: &Value) -> (String, usize, Stop, u64) {
    let mut text = String::new();
    let mut parts = 0;
    for item in response["output"].as_array().unwrap() {
        assert_eq!(item["type"], "message", "{item}");
        for part in item["content"].as_array().unwrap() {
            assert_eq!(part["type"], "output_text");
            let t = part["text"].as_str().unwrap();
            parts += usize::from(!t.is_empty());
            text.push_str(t);
        }
    }
    let stop = match response["status"].as_str().unwrap() {
        "completed" => {
            assert!(response["incomplete_details"].is_null(), "{response}");
            Stop::Natural
        }
        "incomplete" => {
            assert_eq!(
                response["incomplete_details"],
                json!({"reason": "max_output_tokens"})
            );
            assert!(response["completed_at"].is_null());
            Stop::TokenLimit
        }
        other => Stop::Other(other.to_owned()),
    };
    (text, parts, stop, u64_at(response, "/usage/output_tokens"))
}

/// Gemini text parts of one response (or chunk), with the count of non-empty ones.
fn gemini_text(chunk: &Value) -> (String, usize) {
    let parts = chunk
        .pointer("/candidates/0/content/parts")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let texts: Vec<&str> = parts.iter().filter_map(|p| p["text"].as_str()).collect();
    (
        texts.concat(),
        texts.iter().filter(|t| !t.is_empty()).count(),
    )
}

async fn ask(sim: &SimHandle, wire: Wire, stream: bool, json: bool) -> Read {
    let (path, body) = request(wire, stream, json);
    let resp = client()
        .post(format!("{}{path}", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{wire:?} {path}");
    if !stream {
        let body: Value = resp.json().await.unwrap();
        return match wire {
            Wire::Anthropic => {
                let blocks = body["content"].as_array().unwrap();
                let texts: Vec<&str> = blocks
                    .iter()
                    .filter(|b| b["type"] == "text")
                    .map(|b| b["text"].as_str().unwrap())
                    .collect();
                Read {
                    text: texts.concat(),
                    text_deltas: texts.len(),
                    stop: stop_of(body["stop_reason"].as_str().unwrap()),
                    output_tokens: u64_at(&body, "/usage/output_tokens"),
                    last: body,
                }
            }
            Wire::Chat => {
                let text = body["choices"][0]["message"]["content"]
                    .as_str()
                    .unwrap()
                    .to_owned();
                Read {
                    text_deltas: usize::from(!text.is_empty()),
                    text,
                    stop: stop_of(body["choices"][0]["finish_reason"].as_str().unwrap()),
                    output_tokens: u64_at(&body, "/usage/completion_tokens"),
                    last: body,
                }
            }
            Wire::Responses => {
                let (text, text_deltas, stop, output_tokens) = read_response_object(&body);
                Read {
                    text,
                    text_deltas,
                    stop,
                    output_tokens,
                    last: body,
                }
            }
            Wire::Gemini => {
                let (text, text_deltas) = gemini_text(&body);
                Read {
                    text,
                    text_deltas,
                    stop: stop_of(body["candidates"][0]["finishReason"].as_str().unwrap()),
                    output_tokens: u64_at(&body, "/usageMetadata/candidatesTokenCount"),
                    last: body,
                }
            }
        };
    }
    let (raw, failed) = read_stream(resp).await;
    assert!(!failed, "{wire:?}: {raw}");
    let events = sse_events(&raw);
    let mut text = String::new();
    let mut text_deltas = 0;
    match wire {
        Wire::Anthropic => {
            let mut stop = None;
            let mut output_tokens = 0;
            for e in &events {
                let data = e.json();
                assert_eq!(e.name.as_deref(), data["type"].as_str());
                match e.name.as_deref() {
                    Some("content_block_delta") if data["delta"]["type"] == "text_delta" => {
                        text.push_str(data["delta"]["text"].as_str().unwrap());
                        text_deltas += 1;
                    }
                    Some("message_delta") => {
                        stop = data["delta"]["stop_reason"].as_str().map(stop_of);
                        output_tokens = u64_at(&data, "/usage/output_tokens");
                    }
                    _ => {}
                }
            }
            let last = events.last().unwrap().json();
            assert_eq!(last["type"], "message_stop");
            Read {
                text,
                text_deltas,
                stop: stop.unwrap(),
                output_tokens,
                last,
            }
        }
        Wire::Chat => {
            assert_eq!(events.last().unwrap().data, "[DONE]");
            let mut stop = None;
            let mut output_tokens = None;
            let mut last = Value::Null;
            for e in &events[..events.len() - 1] {
                let chunk = e.json();
                if let Some(choice) = chunk["choices"].get(0) {
                    if let Some(t) = choice["delta"]["content"].as_str()
                        && !t.is_empty()
                    {
                        text.push_str(t);
                        text_deltas += 1;
                    }
                    if let Some(reason) = choice["finish_reason"].as_str() {
                        stop = Some(stop_of(reason));
                    }
                }
                if let Some(n) = chunk
                    .pointer("/usage/completion_tokens")
                    .and_then(Value::as_u64)
                {
                    output_tokens = Some(n);
                }
                last = chunk;
            }
            Read {
                text,
                text_deltas,
                stop: stop.unwrap(),
                output_tokens: output_tokens.unwrap(),
                last,
            }
        }
        Wire::Responses => {
            let mut done_text = None;
            for e in &events {
                let data = e.json();
                match e.name.as_deref() {
                    Some("response.output_text.delta") => {
                        text.push_str(data["delta"].as_str().unwrap());
                        text_deltas += 1;
                    }
                    Some("response.output_text.done") => {
                        done_text = Some(data["text"].as_str().unwrap().to_owned());
                    }
                    _ => {}
                }
            }
            assert_eq!(done_text.as_deref(), Some(text.as_str()));
            let terminal = events.last().unwrap();
            let last = terminal.json()["response"].clone();
            let (final_text, _, stop, output_tokens) = read_response_object(&last);
            assert_eq!(final_text, text);
            let expected = match stop {
                Stop::TokenLimit => "response.incomplete",
                _ => "response.completed",
            };
            assert_eq!(terminal.name.as_deref(), Some(expected));
            Read {
                text,
                text_deltas,
                stop,
                output_tokens,
                last,
            }
        }
        Wire::Gemini => {
            let mut stop = None;
            let mut output_tokens = None;
            let mut last = Value::Null;
            for e in &events {
                let chunk = e.json();
                let (t, n) = gemini_text(&chunk);
                text.push_str(&t);
                text_deltas += n;
                if let Some(reason) = chunk
                    .pointer("/candidates/0/finishReason")
                    .and_then(Value::as_str)
                {
                    stop = Some(stop_of(reason));
                }
                if let Some(n) = chunk
                    .pointer("/usageMetadata/candidatesTokenCount")
                    .and_then(Value::as_u64)
                {
                    output_tokens = Some(n);
                }
                last = chunk;
            }
            Read {
                text,
                text_deltas,
                stop: stop.unwrap(),
                output_tokens: output_tokens.unwrap(),
                last,
            }
        }
    }
}

/// The shortest period (in words, up to 4) with which the text's words repeat, if any.
fn loop_period(text: &str) -> Option<usize> {
    let words: Vec<&str> = text.split_whitespace().collect();
    (1..=4).find(|&k| words.len() >= 3 * k && (k..words.len()).all(|i| words[i] == words[i - k]))
}

fn seeded_sim() -> SimConfig {
    SimConfig {
        seed: 5,
        ..SimConfig::default()
    }
}

#[tokio::test]
async fn empty_answers_have_no_text_and_end_naturally() {
    let sim = sim(SimConfig {
        faults: faults(&["degrade:empty"]),
        ..seeded_sim()
    })
    .await;
    for wire in WIRES {
        for stream in [false, true] {
            let read = ask(&sim, wire, stream, false).await;
            let at = format!("{wire:?} stream={stream}: {read:?}");
            assert_eq!(read.text, "", "{at}");
            assert_eq!(read.text_deltas, 0, "{at}");
            assert_eq!(read.stop, Stop::Natural, "{at}");
            assert!((1..=3).contains(&read.output_tokens), "{at}");
            // The shape each API gives an answer with nothing in it.
            match (wire, stream) {
                (Wire::Anthropic, false) => assert_eq!(read.last["content"], json!([]), "{at}"),
                (Wire::Chat, false) => {
                    assert_eq!(read.last["choices"][0]["message"]["content"], "", "{at}");
                }
                (Wire::Responses, _) => {
                    assert_eq!(read.last["output"][0]["content"][0]["text"], "", "{at}")
                }
                (Wire::Gemini, _) => assert_eq!(
                    read.last["candidates"][0]["content"]["parts"],
                    json!([{"text": ""}]),
                    "{at}"
                ),
                _ => {}
            }
        }
    }
    // A request asking for JSON gets no text either.
    let read = ask(&sim, Wire::Chat, true, true).await;
    assert_eq!((read.text.as_str(), read.stop), ("", Stop::Natural));
    assert_eq!(sim.stats().by_outcome.degraded, 9);
    sim.shutdown().await;
}

#[tokio::test]
async fn repeat_answers_loop_a_phrase() {
    let sim = sim(seeded_sim()).await;
    // Set at run time through the control API.
    let resp = client()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"degrade": {"mode": "repeat"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    for wire in WIRES {
        for stream in [false, true] {
            let read = ask(&sim, wire, stream, false).await;
            let at = format!("{wire:?} stream={stream}: {read:?}");
            assert!(loop_period(&read.text).is_some(), "{at}");
            assert!(read.text.split_whitespace().count() >= 12, "{at}");
            assert_eq!(read.stop, Stop::Natural, "{at}");
            assert_eq!(
                read.output_tokens,
                read.text.split_whitespace().count() as u64,
                "{at}"
            );
            if stream {
                assert!(read.text_deltas > 1, "{at}");
            }
        }
    }
    // Asked for JSON: valid JSON whose text loops.
    let read = ask(&sim, Wire::Gemini, false, true).await;
    let value: Value = serde_json::from_str(&read.text).unwrap();
    assert!(loop_period(value["answer"].as_str().unwrap()).is_some());
    assert_eq!(sim.stats().by_outcome.degraded, 9);
    sim.shutdown().await;
}

#[tokio::test]
async fn short_answers_stop_at_the_token_limit() {
    let sim = sim(seeded_sim()).await;
    for wire in WIRES {
        for stream in [false, true] {
            sim.set_faults(Default::default());
            let normal = ask(&sim, wire, stream, false).await;
            assert_eq!(normal.stop, Stop::Natural);
            sim.set_faults(faults(&["degrade:short"]));
            let read = ask(&sim, wire, stream, false).await;
            let at = format!("{wire:?} stream={stream}: {read:?}");
            assert_eq!(read.stop, Stop::TokenLimit, "{at}");
            assert!((2..=4).contains(&read.output_tokens), "{at}");
            assert!(!read.text.is_empty(), "{at}");
            assert!(normal.text.starts_with(&read.text), "{at} vs {normal:?}");
            assert!(read.text.len() < normal.text.len(), "{at}");
            if wire == Wire::Responses {
                assert_eq!(read.last["status"], "incomplete");
                assert_eq!(read.last["output"][0]["status"], "incomplete");
            }
        }
    }
    assert_eq!(sim.stats().by_outcome.degraded, 8);
    assert_eq!(sim.stats().by_outcome.ok, 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn json_answers_parse_and_invalid_json_does_not() {
    let sim = sim(seeded_sim()).await;
    for wire in WIRES {
        for stream in [false, true] {
            sim.set_faults(Default::default());
            let read = ask(&sim, wire, stream, true).await;
            let at = format!("{wire:?} stream={stream}: {read:?}");
            let value: Value =
                serde_json::from_str(&read.text).unwrap_or_else(|e| panic!("{at}: {e}"));
            assert!(value["answer"].is_string(), "{at}");
            assert_eq!(read.stop, Stop::Natural, "{at}");
            if stream {
                assert!(read.text_deltas > 1, "streamed in pieces: {at}");
            }
            let prose = ask(&sim, wire, stream, false).await;
            assert!(
                serde_json::from_str::<Value>(&prose.text).is_err(),
                "{prose:?}"
            );

            sim.set_faults(faults(&["degrade:invalid_json"]));
            let broken = ask(&sim, wire, stream, true).await;
            let at = format!("{wire:?} stream={stream}: {broken:?}");
            assert!(serde_json::from_str::<Value>(&broken.text).is_err(), "{at}");
            assert!(broken.text.starts_with('{'), "{at}");
            assert_eq!(broken.stop, Stop::Natural, "{at}");
            // A request that does not ask for JSON gets the normal answer.
            let plain = ask(&sim, wire, stream, false).await;
            assert_eq!(plain.text, prose.text, "{wire:?} stream={stream}");
            assert_eq!(plain.stop, Stop::Natural);
        }
    }
    let outcomes = sim.stats().by_outcome;
    assert_eq!((outcomes.degraded, outcomes.ok), (8, 24));
    sim.shutdown().await;
}

#[tokio::test]
async fn degrade_is_scoped_and_settable_over_http() {
    let sim = sim(seeded_sim()).await;
    let url = format!("{}/_sim/faults", sim.base_url());
    let set = json!({"degrade": {"mode": "short", "api": "gemini"}});
    let resp = client().post(&url).json(&set).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        got,
        json!({"degrade": {"mode": "short", "rate": 1.0, "api": "gemini"}})
    );
    assert_eq!(sim.faults(), faults(&["degrade:short/gemini"]));
    assert_eq!(
        ask(&sim, Wire::Gemini, true, false).await.stop,
        Stop::TokenLimit
    );
    assert_eq!(ask(&sim, Wire::Chat, true, false).await.stop, Stop::Natural);

    for bad in [
        json!({"degrade": {"mode": "garbled"}}),
        json!({"degrade": {}}),
        json!({"degrade": {"mode": "empty", "rate": 2}}),
    ] {
        let resp = client().post(&url).json(&bad).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn tool_calls_are_not_degraded() {
    let sim = sim(SimConfig {
        faults: faults(&["degrade:empty"]),
        ..seeded_sim()
    })
    .await;
    let body = json!({"model": "gpt-4o", "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "get_time", "parameters": {"type": "object"}}}],
        "messages": [{"role": "user", "content": "what time is it?"}]});
    let body: Value = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["finish_reason"], "tool_calls");
    assert_eq!(
        body["choices"][0]["message"]["tool_calls"][0]["function"]["name"],
        "get_time"
    );
    assert_eq!(sim.stats().by_outcome.ok, 1);
    sim.shutdown().await;
}
