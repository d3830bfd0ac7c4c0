//! The `hostile` fault over real loopback HTTP, every mode on every API, streamed and not. Sizes are
//! small and every read is bounded in bytes and time, so nothing here reads 100 MB or waits forever.

use std::net::SocketAddr;
use std::time::Duration;

use ballast_sim::{HostileFault, HostileMode, SimConfig, SimHandle};
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout};

use crate::{Event, client, faults, sim, sse_events};

const HUGE: u64 = 1_000_000_000_000_000;
const INVALID_UTF8: &[u8] = b"\xff\xc3\x28\xed\xa0\x80";
/// No test waits longer than this for one answer.
const PATIENCE: Duration = Duration::from_secs(10);

/// The four APIs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Target {
    Anthropic,
    Chat,
    Responses,
    Gemini,
}

const TARGETS: [Target; 4] = [
    Target::Anthropic,
    Target::Chat,
    Target::Responses,
    Target::Gemini,
];

fn weather_schema() -> Value {
    json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})
}

impl Target {
    fn path(self, stream: bool) -> &'static str {
        match (self, stream) {
            (Target::Anthropic, _) => "/v1/messages",
            (Target::Chat, _) => "/v1/chat/completions",
            (Target::Responses, _) => "/v1/responses",
            (Target::Gemini, true) => {
                "/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse"
            }
            (Target::Gemini, false) => "/v1beta/models/gemini-2.5-flash:generateContent",
        }
    }

    /// A request that asks for text; with `tools`, it also declares a `get_weather` tool.
    fn body(self, stream: bool, tools: bool) -> Value {
        let prompt = "tell me something";
        let mut body = match self {
            Target::Anthropic => {
                json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
                "messages": [{"role": "user", "content": prompt}]})
            }
            Target::Chat => json!({"model": "gpt-4o", "stream": stream,
                "stream_options": {"include_usage": true},
                "messages": [{"role": "user", "content": prompt}]}),
            Target::Responses => json!({"model": "gpt-4o", "stream": stream, "input": prompt}),
            Target::Gemini => json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}]}),
        };
        if !stream && self == Target::Chat {
            body.as_object_mut().unwrap().remove("stream_options");
        }
        if tools {
            let tools = match self {
                Target::Anthropic => {
                    json!([{"name": "get_weather", "input_schema": weather_schema()}])
                }
                Target::Chat => {
                    json!([{"type": "function", "function": {"name": "get_weather", "parameters": weather_schema()}}])
                }
                Target::Responses => {
                    json!([{"type": "function", "name": "get_weather", "parameters": weather_schema()}])
                }
                Target::Gemini => {
                    json!([{"functionDeclarations": [{"name": "get_weather", "parameters": weather_schema()}]}])
                }
            };
            body.as_object_mut()
                .unwrap()
                .insert("tools".to_owned(), tools);
        }
        body
    }
}

/// A simulator with one hostile fault.
async fn hostile_sim(fault: HostileFault) -> SimHandle {
    sim(SimConfig {
        faults: ballast_sim::Faults {
            hostile: Some(fault),
            ..ballast_sim::Faults::default()
        },
        ..SimConfig::default()
    })
    .await
}

fn mode(mode: HostileMode) -> HostileFault {
    HostileFault::new(mode)
}

async fn send(
    http: &reqwest::Client,
    sim: &SimHandle,
    target: Target,
    stream: bool,
    tools: bool,
) -> reqwest::Response {
    let response = http
        .post(format!("{}{}", sim.base_url(), target.path(stream)))
        .json(&target.body(stream, tools))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200, "{target:?}");
    response
}

/// Reads at most `cap` bytes of a body within [`PATIENCE`]; also says whether the body ended.
async fn read_capped(response: reqwest::Response, cap: usize) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    while bytes.len() < cap {
        match timeout(deadline - Instant::now(), stream.next()).await {
            Ok(Some(Ok(chunk))) => bytes.extend_from_slice(&chunk),
            Ok(None) => return (bytes, true),
            Ok(Some(Err(e))) => panic!("body failed after {} bytes: {e}", bytes.len()),
            Err(_) => panic!("body stalled after {} bytes", bytes.len()),
        }
    }
    (bytes, false)
}

/// The whole body (bounded by `cap`), which must end.
async fn read_all(response: reqwest::Response, cap: usize) -> Vec<u8> {
    let (bytes, ended) = read_capped(response, cap).await;
    assert!(ended, "body longer than {cap} bytes");
    bytes
}

fn text(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

fn named<'a>(events: &'a [Event], name: &str) -> Vec<&'a Event> {
    events
        .iter()
        .filter(|e| e.name.as_deref() == Some(name))
        .collect()
}

/// The JSON events of an OpenAI Chat or Gemini SSE stream (`[DONE]` left out).
fn data_json(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(Event::json)
        .collect()
}

/// The event that ends each API's stream is the last one.
fn assert_terminal(target: Target, events: &[Event]) {
    let last = events.last().expect("no events");
    match target {
        Target::Anthropic => assert_eq!(last.name.as_deref(), Some("message_stop")),
        Target::Chat => assert_eq!(last.data, "[DONE]"),
        Target::Responses => assert_eq!(last.name.as_deref(), Some("response.completed")),
        // Read as text: the JSON may be nested too deep to parse.
        Target::Gemini => assert!(last.data.contains("\"finishReason\":\"")),
    }
}

#[tokio::test]
async fn huge_index_streams_huge_indexes_counts_and_tool_calls() {
    let http = client();
    let sim = hostile_sim(mode(HostileMode::HugeIndex)).await;
    for target in TARGETS {
        let body = text(read_all(send(&http, &sim, target, true, true).await, 1 << 20).await);
        let events = sse_events(&body);
        assert_terminal(target, &events);
        match target {
            Target::Anthropic => {
                let start = named(&events, "message_start")[0].json();
                assert_eq!(start["message"]["usage"]["input_tokens"], u64::MAX);
                let blocks: Vec<Value> = named(&events, "content_block_start")
                    .iter()
                    .map(|e| e.json())
                    .collect();
                assert_eq!(blocks.len(), 2, "text, then the tool call");
                assert!(blocks.iter().all(|b| b["index"] == HUGE));
                assert_eq!(blocks[1]["content_block"]["type"], "tool_use");
                assert_eq!(blocks[1]["content_block"]["name"], "get_weather");
                let deltas = named(&events, "content_block_delta");
                assert!(deltas.iter().all(|d| d.json()["index"] == HUGE));
                assert!(
                    deltas
                        .iter()
                        .any(|d| d.json()["delta"]["type"] == "input_json_delta")
                );
                let end = named(&events, "message_delta")[0].json();
                assert_eq!(end["usage"]["output_tokens"], i64::MAX);
                assert_eq!(end["usage"]["cache_read_input_tokens"], u64::MAX);
                assert_eq!(end["delta"]["stop_reason"], "tool_use");
            }
            Target::Chat => {
                let chunks = data_json(&events);
                let calls: Vec<&Value> = chunks
                    .iter()
                    .filter(|c| c["choices"][0]["delta"]["tool_calls"].is_array())
                    .collect();
                assert!(calls.len() > 1, "the call's start and argument fragments");
                for c in &calls {
                    assert_eq!(c["choices"][0]["index"], HUGE);
                    assert_eq!(c["choices"][0]["delta"]["tool_calls"][0]["index"], HUGE);
                }
                assert_eq!(
                    calls[0]["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
                    "get_weather"
                );
                assert!(
                    chunks
                        .iter()
                        .any(|c| c["choices"][0]["delta"]["content"].is_string())
                );
                let usage = &chunks.last().unwrap()["usage"];
                assert_eq!(usage["prompt_tokens"], u64::MAX);
                assert_eq!(usage["completion_tokens"], i64::MAX);
                assert_eq!(usage["total_tokens"], -1);
                assert_eq!(usage["prompt_tokens_details"]["cached_tokens"], i64::MIN);
            }
            Target::Responses => {
                for e in &events {
                    assert!(e.json()["sequence_number"].as_u64().unwrap() >= HUGE);
                }
                let text = named(&events, "response.output_text.delta")[0].json();
                assert_eq!(text["output_index"], HUGE);
                assert_eq!(text["content_index"], HUGE);
                let args = named(&events, "response.function_call_arguments.delta");
                assert!(!args.is_empty());
                assert!(args.iter().all(|a| a.json()["output_index"] == HUGE));
                let done = events.last().unwrap().json();
                assert_eq!(done["response"]["usage"]["input_tokens"], u64::MAX);
                assert_eq!(done["response"]["usage"]["total_tokens"], -1);
                assert_eq!(done["response"]["output"][1]["type"], "function_call");
            }
            Target::Gemini => {
                let chunks = data_json(&events);
                assert!(chunks.iter().all(|c| c["candidates"][0]["index"] == HUGE));
                let last = chunks.last().unwrap();
                assert_eq!(
                    last["candidates"][0]["content"]["parts"][0]["functionCall"]["name"],
                    "get_weather"
                );
                assert_eq!(last["usageMetadata"]["promptTokenCount"], u64::MAX);
                assert_eq!(last["usageMetadata"]["candidatesTokenCount"], i64::MAX);
                assert_eq!(last["usageMetadata"]["totalTokenCount"], -1);
            }
        }
    }
    assert_eq!(sim.stats().by_outcome.hostile, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_index_bodies_and_undeclared_tools() {
    let http = client();
    let sim = hostile_sim(mode(HostileMode::HugeIndex)).await;
    for target in TARGETS {
        let body: Value = serde_json::from_slice(
            &read_all(send(&http, &sim, target, false, true).await, 1 << 20).await,
        )
        .unwrap();
        match target {
            Target::Anthropic => {
                assert_eq!(body["content"][0]["type"], "text");
                assert_eq!(body["content"][1]["type"], "tool_use");
                assert_eq!(body["usage"]["input_tokens"], u64::MAX);
                assert_eq!(body["usage"]["output_tokens"], i64::MAX);
            }
            Target::Chat => {
                let choice = &body["choices"][0];
                assert_eq!(choice["index"], HUGE);
                assert_eq!(choice["message"]["tool_calls"][0]["index"], HUGE);
                assert_eq!(
                    choice["message"]["tool_calls"][0]["function"]["name"],
                    "get_weather"
                );
                assert!(choice["message"]["content"].is_string());
                assert_eq!(body["usage"]["total_tokens"], -1);
            }
            Target::Responses => {
                assert_eq!(body["output"][0]["type"], "message");
                assert_eq!(body["output"][1]["type"], "function_call");
                assert_eq!(body["usage"]["input_tokens"], u64::MAX);
            }
            Target::Gemini => {
                assert_eq!(body["candidates"][0]["index"], HUGE);
                assert_eq!(
                    body["candidates"][0]["content"]["parts"][1]["functionCall"]["name"],
                    "get_weather"
                );
                assert_eq!(body["usageMetadata"]["promptTokenCount"], u64::MAX);
            }
        }
    }
    // No tool declared: tool-call events are sent all the same.
    let body = text(read_all(send(&http, &sim, Target::Chat, true, false).await, 1 << 20).await);
    let chunks = data_json(&sse_events(&body));
    let call = chunks
        .iter()
        .find(|c| c["choices"][0]["delta"]["tool_calls"][0]["function"]["name"].is_string())
        .unwrap();
    assert_eq!(
        call["choices"][0]["delta"]["tool_calls"][0]["function"]["name"],
        "ballast_sim_hostile"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn no_terminator_never_ends_an_event_nor_the_json() {
    let http = client();
    let bytes = 200_000;
    let sim = hostile_sim(HostileFault {
        bytes: Some(bytes),
        ..mode(HostileMode::NoTerminator)
    })
    .await;
    for target in TARGETS {
        for stream in [true, false] {
            let body = read_all(send(&http, &sim, target, stream, false).await, 1 << 20).await;
            let what = format!("{target:?} stream={stream}");
            assert_eq!(body.len() as u64, bytes, "{what}: exactly `bytes`");
            assert!(
                !contains(&body, b"\n\n") && !contains(&body, b"\r\n\r\n"),
                "{what}"
            );
            let start: &[u8] = match (target, stream) {
                (Target::Anthropic, true) => b"event: content_block_delta\ndata: {",
                (Target::Responses, true) => b"event: response.output_text.delta\ndata: {",
                (Target::Chat | Target::Gemini, true) => b"data: {",
                (_, false) => b"{",
            };
            assert!(body.starts_with(start), "{what}");
            assert!(
                body[body.len() - 64..]
                    .iter()
                    .all(|b| b"hostile ".contains(b)),
                "{what}: then filler"
            );
            if !stream {
                assert!(serde_json::from_slice::<Value>(&body).is_err(), "{what}");
            }
        }
    }
    sim.shutdown().await;

    // The default size (64 MiB): read the first 256 KiB only, then hang up.
    let sim = hostile_sim(mode(HostileMode::NoTerminator)).await;
    let response = send(&http, &sim, Target::Chat, true, false).await;
    let (head, ended) = read_capped(response, 256 * 1024).await;
    assert!(!ended);
    assert!(!contains(&head, b"\n\n"));
    // Still serving after the client hung up mid-body.
    let health = http
        .get(format!("{}/_sim/health", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn huge_event_sends_one_enormous_string_then_the_rest() {
    let http = client();
    let bytes = 300_000usize;
    let sim = hostile_sim(HostileFault {
        bytes: Some(bytes as u64),
        ..mode(HostileMode::HugeEvent)
    })
    .await;
    for target in TARGETS {
        let body = text(read_all(send(&http, &sim, target, true, false).await, 1 << 20).await);
        let events = sse_events(&body);
        assert_terminal(target, &events);
        let huge: Vec<&Event> = events.iter().filter(|e| e.data.len() > bytes).collect();
        assert_eq!(huge.len(), 1, "{target:?}: exactly one huge event");
        let event = huge[0].json();
        let field = match target {
            Target::Anthropic => &event["delta"]["text"],
            Target::Chat => &event["choices"][0]["delta"]["content"],
            Target::Responses => &event["delta"],
            Target::Gemini => &event["candidates"][0]["content"]["parts"][0]["text"],
        };
        let field = field.as_str().unwrap();
        assert_eq!(field.len(), bytes, "{target:?}");
        assert!(field.starts_with("hostile hostile"));
        // The normal answer follows.
        assert!(events.len() > 4, "{target:?}");

        let body: Value = serde_json::from_slice(
            &read_all(send(&http, &sim, target, false, false).await, 1 << 20).await,
        )
        .unwrap();
        let text = match target {
            Target::Anthropic => &body["content"][0]["text"],
            Target::Chat => &body["choices"][0]["message"]["content"],
            Target::Responses => &body["output"][0]["content"][0]["text"],
            Target::Gemini => &body["candidates"][0]["content"]["parts"][0]["text"],
        };
        assert_eq!(text.as_str().unwrap().len(), bytes, "{target:?}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn invalid_utf8_inside_ids_models_text_and_event_names() {
    let http = client();
    let sim = hostile_sim(mode(HostileMode::InvalidUtf8)).await;
    for target in TARGETS {
        for stream in [true, false] {
            let what = format!("{target:?} stream={stream}");
            let body = read_all(send(&http, &sim, target, stream, false).await, 1 << 20).await;
            assert!(contains(&body, INVALID_UTF8), "{what}");
            assert!(std::str::from_utf8(&body).is_err(), "{what}");
            // Only strings were touched: read leniently, the structure is intact.
            let lossy = String::from_utf8_lossy(&body).into_owned();
            let suffix = format!("{}\n", String::from_utf8_lossy(INVALID_UTF8));
            let lossy = lossy.replace(&suffix, "\n");
            if stream {
                let events = sse_events(&lossy);
                assert_terminal(target, &events);
                let first = events[0].json();
                let model = match target {
                    Target::Anthropic => &first["message"]["model"],
                    Target::Chat => &first["model"],
                    Target::Responses => &first["response"]["model"],
                    Target::Gemini => &first["modelVersion"],
                };
                assert!(model.as_str().unwrap().contains('\u{FFFD}'), "{what}");
                if matches!(target, Target::Anthropic | Target::Responses) {
                    let mut line = b"\nevent: ".to_vec();
                    line.extend_from_slice(match target {
                        Target::Anthropic => b"message_stop".as_slice(),
                        _ => b"response.completed".as_slice(),
                    });
                    line.extend_from_slice(INVALID_UTF8);
                    line.push(b'\n');
                    assert!(contains(&body, &line), "{what}: event names");
                }
            } else {
                assert!(serde_json::from_slice::<Value>(&body).is_err(), "{what}");
                let value: Value = serde_json::from_str(&lossy).unwrap();
                let id = match target {
                    Target::Gemini => &value["responseId"],
                    _ => &value["id"],
                };
                assert!(id.as_str().unwrap().contains('\u{FFFD}'), "{what}");
            }
        }
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn deep_nesting_in_text_delta_and_usage_closed_and_unclosed() {
    let http = client();
    let depth = 1000;
    let sim = hostile_sim(HostileFault {
        depth: Some(depth as u64),
        ..mode(HostileMode::DeepNesting)
    })
    .await;
    let closed_array = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
    let open_object = "{\"a\":".repeat(depth);
    let closed_object = format!("{open_object}0{}", "}".repeat(depth));
    for target in TARGETS {
        let body = text(read_all(send(&http, &sim, target, true, false).await, 1 << 20).await);
        let events = sse_events(&body);
        assert_terminal(target, &events);
        let deltas: Vec<&Event> = events
            .iter()
            .filter(|e| e.data.len() > depth && !e.data.contains(&closed_object))
            .collect();
        assert!(
            deltas[0].data.contains(&format!(":{closed_array}")),
            "{target:?}: first text delta is a closed array"
        );
        assert!(
            deltas[1].data.contains(&format!(":{open_object}")),
            "{target:?}: second text delta never closes"
        );
        assert!(!deltas[1].data.contains(&closed_object));
        // Usage: Chat streams carry it when `include_usage` is asked (it is here).
        let usage_key = match target {
            Target::Gemini => "\"usageMetadata\":",
            _ => "\"usage\":",
        };
        assert!(
            body.contains(&format!("{usage_key}{closed_object}")),
            "{target:?}: usage is a closed object"
        );
        // The nesting is deeper than a default JSON parser accepts.
        assert!(serde_json::from_str::<Value>(&deltas[0].data).is_err());

        let body = text(read_all(send(&http, &sim, target, false, false).await, 1 << 20).await);
        assert!(body.contains(&format!(":{closed_array}")), "{target:?}");
        assert!(
            body.contains(&format!("{usage_key}{open_object}")),
            "{target:?}"
        );
        assert!(!body.contains(&closed_object), "{target:?}");
    }
    sim.shutdown().await;
}

/// Sends a raw HTTP/1.1 request on a new connection.
async fn raw_post(addr: SocketAddr, path: &str, body: &Value) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let body = body.to_string();
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

/// Reads until EOF, `cap` bytes, or `stop` is seen; bounded by [`PATIENCE`]. Says whether EOF came.
async fn read_raw(stream: &mut TcpStream, cap: usize, stop: Option<&[u8]>) -> (Vec<u8>, bool) {
    let deadline = Instant::now() + PATIENCE;
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    while bytes.len() < cap {
        if stop.is_some_and(|s| contains(&bytes, s)) {
            return (bytes, false);
        }
        match timeout(deadline - Instant::now(), stream.read(&mut buf)).await {
            Ok(Ok(0)) => return (bytes, true),
            Ok(Ok(n)) => bytes.extend_from_slice(&buf[..n]),
            Ok(Err(e)) => panic!("read failed after {} bytes: {e}", bytes.len()),
            Err(_) => panic!("stalled after {} bytes", bytes.len()),
        }
    }
    (bytes, false)
}

#[tokio::test]
async fn endless_headers_never_finish_the_head() {
    let limit = 8192;
    let sim = hostile_sim(HostileFault {
        bytes: Some(limit as u64),
        interval_ms: Some(0),
        ..mode(HostileMode::EndlessHeaders)
    })
    .await;
    for target in TARGETS {
        for stream in [true, false] {
            let what = format!("{target:?} stream={stream}");
            let mut conn =
                raw_post(sim.addr(), target.path(stream), &target.body(stream, false)).await;
            let (head, eof) = read_raw(&mut conn, 4 * limit, None).await;
            assert!(eof, "{what}: closed once `bytes` were sent");
            assert_eq!(head.len(), limit, "{what}");
            assert!(
                head.starts_with(b"HTTP/1.1 200 OK\r\ncontent-type: "),
                "{what}"
            );
            assert!(contains(
                &head,
                b"\r\nx-ballast-sim-hostile-0: endless headers\r\n"
            ));
            assert!(contains(
                &head,
                b"\r\nx-ballast-sim-hostile-100: endless headers\r\n"
            ));
            assert!(!contains(&head, b"\r\n\r\n"), "{what}: the head never ends");
        }
    }
    assert_eq!(sim.stats().by_outcome.hostile, 8);

    // An HTTP client sees a response whose head never completes.
    let err = client()
        .post(format!("{}{}", sim.base_url(), Target::Chat.path(false)))
        .json(&Target::Chat.body(false, false))
        .send()
        .await
        .unwrap_err();
    assert!(!err.is_timeout(), "{err:?}");
    sim.shutdown().await;

    // Paced: a new line every `interval_ms`.
    let sim = hostile_sim(HostileFault {
        interval_ms: Some(20),
        ..mode(HostileMode::EndlessHeaders)
    })
    .await;
    let started = Instant::now();
    let mut conn = raw_post(
        sim.addr(),
        Target::Gemini.path(true),
        &Target::Gemini.body(true, false),
    )
    .await;
    let (head, _) = read_raw(&mut conn, 1 << 20, Some(b"x-ballast-sim-hostile-3: ")).await;
    assert!(
        started.elapsed() >= Duration::from_millis(80),
        "{:?}",
        started.elapsed()
    );
    assert!(!contains(&head, b"\r\n\r\n"));
    sim.shutdown().await;
}

#[tokio::test]
async fn endless_headers_take_over_pooled_connections_and_stop_when_the_client_leaves() {
    let sim = hostile_sim(HostileFault {
        rate: 0.0,
        interval_ms: Some(0),
        ..mode(HostileMode::EndlessHeaders)
    })
    .await;
    // A keep-alive connection that already carried a normal answer.
    let mut conn = raw_post(
        sim.addr(),
        "/v1/chat/completions",
        &Target::Chat.body(false, false),
    )
    .await;
    let (first, _) = read_raw(&mut conn, 1 << 20, Some(b"}")).await;
    assert!(first.starts_with(b"HTTP/1.1 200 OK\r\n"));
    let (_, rest) = first.split_at(first.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4);
    let length: usize = String::from_utf8_lossy(&first)
        .lines()
        .find_map(|l| {
            l.strip_prefix("content-length: ")
                .map(|v| v.trim().parse().unwrap())
        })
        .unwrap();
    let mut body = rest.to_vec();
    if body.len() < length {
        let (more, _) = read_raw(&mut conn, length - body.len(), None).await;
        body.extend_from_slice(&more);
    }
    assert_eq!(body.len(), length);

    sim.set_faults(faults(&["hostile:endless_headers,interval_ms=0"]));
    let request = Target::Chat.body(false, false).to_string();
    conn.write_all(
        format!(
            "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{request}",
            request.len()
        )
        .as_bytes(),
    )
    .await
    .unwrap();
    // The default limit is 64 MiB: read 256 KiB of endless headers, then hang up.
    let (head, eof) = read_raw(&mut conn, 256 * 1024, None).await;
    assert!(!eof);
    assert!(head.starts_with(b"HTTP/1.1 200 OK\r\n"));
    assert!(!contains(&head, b"\r\n\r\n"));
    drop(conn);
    let health = client()
        .get(format!("{}/_sim/health", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn trickle_sends_the_correct_answer_one_byte_at_a_time() {
    let http = client();
    // Interval 0: the whole answer, byte by byte, and it is the correct answer.
    let sim = hostile_sim(HostileFault {
        interval_ms: Some(0),
        ..mode(HostileMode::Trickle)
    })
    .await;
    for target in TARGETS {
        let body = text(read_all(send(&http, &sim, target, true, true).await, 1 << 20).await);
        assert_terminal(target, &sse_events(&body));
        let body = read_all(send(&http, &sim, target, false, false).await, 1 << 20).await;
        serde_json::from_slice::<Value>(&body).unwrap();
    }
    sim.shutdown().await;

    let interval = Duration::from_millis(25);
    let sim = hostile_sim(HostileFault {
        interval_ms: Some(25),
        ..mode(HostileMode::Trickle)
    })
    .await;
    for target in TARGETS {
        let response = send(&http, &sim, target, true, false).await;
        let started = Instant::now();
        let mut stream = response.bytes_stream();
        let mut received = Vec::new();
        while received.len() < 6 {
            let chunk = timeout(PATIENCE, stream.next())
                .await
                .unwrap()
                .unwrap()
                .unwrap();
            assert_eq!(chunk.len(), 1, "{target:?}: one byte per chunk");
            received.extend_from_slice(&chunk);
        }
        assert!(
            started.elapsed() >= interval * 5,
            "{target:?}: {:?}",
            started.elapsed()
        );
        let start: &[u8] = match target {
            Target::Anthropic | Target::Responses => b"event:",
            Target::Chat | Target::Gemini => b"data: ",
        };
        assert_eq!(received, start, "{target:?}");
    }
    sim.shutdown().await;
}

/// Decodes a chunked body (bounded by its input).
fn dechunk(mut body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    while let Some(eol) = body.windows(2).position(|w| w == b"\r\n") {
        let size =
            usize::from_str_radix(std::str::from_utf8(&body[..eol]).unwrap().trim(), 16).unwrap();
        if size == 0 {
            break;
        }
        out.extend_from_slice(&body[eol + 2..eol + 2 + size]);
        body = &body[eol + 2 + size + 2..];
    }
    out
}

#[tokio::test]
async fn huge_headers_then_a_normal_body() {
    let count = 2000;
    let big = 100_000;
    let sim = hostile_sim(HostileFault {
        bytes: Some(big as u64),
        count: Some(count as u64),
        ..mode(HostileMode::HugeHeaders)
    })
    .await;
    for target in TARGETS {
        for stream in [true, false] {
            let what = format!("{target:?} stream={stream}");
            let mut conn =
                raw_post(sim.addr(), target.path(stream), &target.body(stream, false)).await;
            let (raw, _) = read_raw(&mut conn, 4 << 20, Some(b"\r\n0\r\n\r\n")).await;
            let end = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
            let head = String::from_utf8(raw[..end].to_vec()).unwrap();
            let hostile: Vec<&str> = head
                .split("\r\n")
                .filter(|l| l.starts_with("x-ballast-sim-hostile-"))
                .collect();
            assert_eq!(hostile.len(), count + 1, "{what}");
            let value = hostile
                .iter()
                .find_map(|l| l.strip_prefix("x-ballast-sim-hostile-big: "))
                .unwrap();
            assert_eq!(value.len(), big, "{what}");
            let body = text(dechunk(&raw[end + 4..]));
            if stream {
                assert_terminal(target, &sse_events(&body));
            } else {
                serde_json::from_str::<Value>(&body).unwrap();
            }
        }
    }
    sim.shutdown().await;

    // Within an HTTP client's limits the answer reads as usual, extra headers and all.
    let sim = hostile_sim(HostileFault {
        bytes: Some(1000),
        count: Some(10),
        ..mode(HostileMode::HugeHeaders)
    })
    .await;
    let response = send(&client(), &sim, Target::Anthropic, false, false).await;
    assert_eq!(response.headers()["x-ballast-sim-hostile-big"].len(), 1000);
    assert!(response.headers().contains_key("x-ballast-sim-hostile-9"));
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["type"], "message");
    sim.shutdown().await;
}

#[tokio::test]
async fn hostile_is_set_over_http_scoped_and_counted() {
    let http = client();
    let sim = sim(SimConfig::default()).await;
    let set = |body: Value| {
        http.post(format!("{}/_sim/faults", sim.base_url()))
            .json(&body)
            .send()
    };
    let fault = json!({"hostile": {"mode": "no_terminator", "bytes": 1000, "rate": 1.0, "api": "anthropic"}});
    let resp = set(fault.clone()).await.unwrap();
    assert_eq!(resp.status(), 200);
    let current: Value = http
        .get(format!("{}/_sim/faults", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(current, fault);
    for bad in [
        json!({"hostile": {"mode": "sideways"}}),
        json!({"hostile": {"mode": "huge_index", "bytes": 10}}),
        json!({"hostile": {"mode": "trickle", "interval_ms": 4_000_000}}),
        json!({"hostile": {"rate": 1}}),
    ] {
        let resp = set(bad.clone()).await.unwrap();
        assert_eq!(resp.status(), 400, "{bad}");
    }
    // Scoped to Anthropic: OpenAI answers normally.
    let body = read_all(send(&http, &sim, Target::Chat, false, false).await, 1 << 20).await;
    serde_json::from_slice::<Value>(&body).unwrap();
    let body = read_all(
        send(&http, &sim, Target::Anthropic, false, false).await,
        1 << 20,
    )
    .await;
    assert_eq!(body.len(), 1000);
    let stats = sim.stats();
    assert_eq!((stats.by_outcome.ok, stats.by_outcome.hostile), (1, 1));
    let stats: Value = http
        .get(format!("{}/_sim/stats", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["by_outcome"]["hostile"], 1);
    // Model lists and token counts are never hostile.
    let resp = http
        .post(format!("{}/v1/messages/count_tokens", sim.base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}
