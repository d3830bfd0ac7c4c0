//! Cross-format serving through the gateway: OpenAI and Anthropic clients served by Anthropic, OpenAI
//! and Gemini targets on the simulator — whole answers, streams, tool-call round trips, warnings,
//! failover across formats, and cut streams.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use ballast_core::sse::SseParser;
use ballast_sim::SimHandle;
use common::{Gateway, faults, gateway, sim};
use serde_json::{Value, json};

struct Setup {
    sim: SimHandle,
    dead: SimHandle,
    gw: Gateway,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    let sim = sim().await;
    let dead = common::sim().await;
    let toml = format!(
        r#"
        [providers.anth]
        kind = "anthropic"
        base_url = "{s}"
        api_key = "k-anth"
        [providers.oai]
        kind = "openai"
        base_url = "{s}/v1"
        api_key = "k-oai"
        [providers.gem]
        kind = "gemini"
        base_url = "{s}"
        api_key = "k-gem"
        [providers.oai-resp]
        kind = "openai"
        api = "responses"
        base_url = "{s}/v1"
        api_key = "k-oai"
        [routes.responses]
        targets = ["oai-resp/gpt-5"]
        [providers.resp-dead]
        kind = "openai"
        api = "responses"
        base_url = "{d}/v1"
        api_key = "k-dead"
        [routes.codex-failover]
        targets = ["resp-dead/gpt-5", "anth/claude-sonnet-4-5"]
        [routes.builtin-capable]
        targets = ["anth/claude-sonnet-4-5", "oai-resp/gpt-5"]
        [providers.anth-dead]
        kind = "anthropic"
        base_url = "{d}"
        api_key = "k-dead"
        [routes.anthropic]
        targets = ["anth/claude-sonnet-4-5"]
        max_tokens = 333
        [routes.openai]
        targets = ["oai/gpt-4.1"]
        [routes.gemini]
        targets = ["gem/gemini-2.5-flash"]
        [routes.cross-failover]
        targets = ["anth-dead/claude-sonnet-4-5", "gem/gemini-2.5-flash"]
        "#,
        s = sim.base_url(),
        d = dead.base_url(),
    );
    Setup {
        gw: gateway(&toml).await,
        sim,
        dead,
        http: reqwest::Client::new(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Client {
    OpenAi,
    Anthropic,
}

impl Setup {
    async fn call(&self, client: Client, body: Value) -> reqwest::Response {
        let path = match client {
            Client::OpenAi => "/v1/chat/completions",
            Client::Anthropic => "/v1/messages",
        };
        self.http
            .post(format!("{}{path}", self.gw.url))
            .header("anthropic-version", "2023-06-01")
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn request(client: Client, route: &str, text: &str, stream: bool) -> Value {
    let mut v = match client {
        Client::OpenAi => json!({
            "model": route,
            "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": text}],
        }),
        Client::Anthropic => json!({
            "model": route,
            "max_tokens": 200,
            "system": "Be brief.",
            "messages": [{"role": "user", "content": text}],
        }),
    };
    if stream {
        v["stream"] = json!(true);
        if client == Client::OpenAi {
            v["stream_options"] = json!({"include_usage": true});
        }
    }
    v
}

/// The text of a whole answer in the client's format.
fn answer_text(client: Client, v: &Value) -> String {
    match client {
        Client::OpenAi => v["choices"][0]["message"]["content"]
            .as_str()
            .unwrap()
            .to_owned(),
        Client::Anthropic => v["content"][0]["text"].as_str().unwrap().to_owned(),
    }
}

/// Parses a client-format stream into (text, terminal seen, error seen, usage seen).
fn read_stream(client: Client, body: &str) -> (String, bool, Option<Value>, bool) {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(body.as_bytes(), |e| events.push(e));
    assert!(!p.finish(), "stream ended mid-event: {body}");
    let (mut text, mut done, mut error, mut usage) = (String::new(), false, None, false);
    for e in events {
        if e.data == "[DONE]" {
            done = true;
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap_or_else(|_| panic!("bad event {e:?}"));
        if v.get("error").is_some() && v["type"] != "message_start" {
            error = Some(v.clone());
            continue;
        }
        match client {
            Client::OpenAi => {
                if let Some(t) = v["choices"][0]["delta"]["content"].as_str() {
                    text.push_str(t);
                }
                usage |= v["usage"]["completion_tokens"].as_u64().is_some();
            }
            Client::Anthropic => match v["type"].as_str().unwrap() {
                "content_block_delta" => {
                    if let Some(t) = v["delta"]["text"].as_str() {
                        text.push_str(t);
                    }
                }
                "message_delta" => usage |= v["usage"]["output_tokens"].as_u64().is_some(),
                "message_stop" => done = true,
                _ => {}
            },
        }
    }
    (text, done, error, usage)
}

const PAIRS: [(Client, &str, &str, &str); 4] = [
    (
        Client::OpenAi,
        "anthropic",
        "claude-sonnet-4-5",
        "/v1/messages",
    ),
    (
        Client::OpenAi,
        "gemini",
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:",
    ),
    (
        Client::Anthropic,
        "openai",
        "gpt-4.1",
        "/v1/chat/completions",
    ),
    (
        Client::Anthropic,
        "gemini",
        "gemini-2.5-flash",
        "/v1beta/models/gemini-2.5-flash:",
    ),
];

#[tokio::test]
async fn whole_answers_cross_every_format() {
    let s = setup().await;
    for (client, route, upstream_model, upstream_path) in PAIRS {
        s.sim.reset();
        let resp = s
            .call(client, request(client, route, "echo héllo ไทย 🚀", false))
            .await;
        assert_eq!(resp.status(), 200, "{client:?} → {route}");
        assert_eq!(
            resp.headers()["x-ballast-target"]
                .to_str()
                .unwrap()
                .split('/')
                .nth(1),
            Some(upstream_model)
        );
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            answer_text(client, &v),
            "héllo ไทย 🚀",
            "{client:?} → {route}: {v}"
        );
        assert_eq!(v["model"], upstream_model, "{client:?} → {route}");
        match client {
            Client::OpenAi => {
                assert_eq!(v["object"], "chat.completion");
                assert_eq!(v["choices"][0]["finish_reason"], "stop");
                assert!(v["usage"]["prompt_tokens"].as_u64().unwrap() > 0);
            }
            Client::Anthropic => {
                assert_eq!(v["type"], "message");
                assert_eq!(v["stop_reason"], "end_turn");
                assert!(v["usage"]["output_tokens"].as_u64().unwrap() > 0);
            }
        }
        let seen = s.sim.recent_requests();
        assert_eq!(seen.len(), 1);
        assert!(seen[0].path.starts_with(upstream_path), "{}", seen[0].path);
    }
    // The route's max_tokens fills in what Anthropic requires and an OpenAI client did not send.
    s.sim.reset();
    s.call(
        Client::OpenAi,
        request(Client::OpenAi, "anthropic", "hi", false),
    )
    .await;
    let r = &s.sim.recent_requests()[0];
    assert_eq!(r.body["max_tokens"], 333);
    assert_eq!(r.body["system"], "Be brief.");
    assert_eq!(r.headers["x-api-key"], "k-anth");
}

#[tokio::test]
async fn streams_cross_every_format_incrementally() {
    let s = setup().await;
    for (client, route, _, _) in PAIRS {
        let resp = s
            .call(
                client,
                request(client, route, "echo one two three four", true),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert!(
            resp.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        let body = resp.text().await.unwrap();
        let (text, done, error, usage) = read_stream(client, &body);
        assert_eq!(text, "one two three four", "{client:?} → {route}: {body}");
        assert!(done, "{client:?} → {route}: no terminal event: {body}");
        assert!(error.is_none(), "{client:?} → {route}: {body}");
        assert!(usage, "{client:?} → {route}: no usage: {body}");
    }
}

#[tokio::test]
async fn tool_calls_round_trip_with_their_ids() {
    let s = setup().await;
    let weather_schema =
        json!({"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]});
    for (client, route, _, _) in PAIRS {
        for stream in [false, true] {
            let mut body = request(
                client,
                route,
                "What is the weather? Use get_weather.",
                stream,
            );
            body["tools"] = match client {
                Client::OpenAi => {
                    json!([{"type": "function", "function": {"name": "get_weather", "description": "Weather", "parameters": weather_schema}}])
                }
                Client::Anthropic => {
                    json!([{"name": "get_weather", "description": "Weather", "input_schema": weather_schema}])
                }
            };
            let resp = s.call(client, body.clone()).await;
            assert_eq!(resp.status(), 200);
            let (id, args) = if stream {
                tool_call_from_stream(client, &resp.text().await.unwrap())
            } else {
                let v: Value = resp.json().await.unwrap();
                match client {
                    Client::OpenAi => {
                        assert_eq!(v["choices"][0]["finish_reason"], "tool_calls", "{v}");
                        let call = &v["choices"][0]["message"]["tool_calls"][0];
                        (
                            call["id"].as_str().unwrap().to_owned(),
                            call["function"]["arguments"].as_str().unwrap().to_owned(),
                        )
                    }
                    Client::Anthropic => {
                        assert_eq!(v["stop_reason"], "tool_use", "{v}");
                        let block = v["content"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .find(|b| b["type"] == "tool_use")
                            .unwrap();
                        (
                            block["id"].as_str().unwrap().to_owned(),
                            block["input"].to_string(),
                        )
                    }
                }
            };
            let parsed: Value = serde_json::from_str(&args).unwrap();
            assert_eq!(
                parsed["city"], "example",
                "{client:?} → {route} stream={stream}"
            );
            assert!(!id.is_empty());

            // Send the result back under the same id.
            let msgs = body["messages"].as_array().unwrap().clone();
            let mut next = body.clone();
            next["stream"] = json!(false);
            next.as_object_mut().unwrap().remove("stream_options");
            next["messages"] = match client {
                Client::OpenAi => {
                    let mut m = msgs;
                    m.push(json!({"role": "assistant", "content": null, "tool_calls": [{"id": id, "type": "function", "function": {"name": "get_weather", "arguments": args}}]}));
                    m.push(json!({"role": "tool", "tool_call_id": id, "content": "sunny, 21C"}));
                    json!(m)
                }
                Client::Anthropic => {
                    let mut m = msgs;
                    m.push(json!({"role": "assistant", "content": [{"type": "tool_use", "id": id, "name": "get_weather", "input": parsed}]}));
                    m.push(json!({"role": "user", "content": [{"type": "tool_result", "tool_use_id": id, "content": "sunny, 21C"}]}));
                    json!(m)
                }
            };
            s.sim.reset();
            let resp = s.call(client, next).await;
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            let text = answer_text(client, &v);
            // Gemini wraps a result in an object (`{"output": …}`); the others carry the text as is.
            assert!(
                text.starts_with("Tool result received: "),
                "{client:?} → {route}: {text}"
            );
            assert!(text.contains("sunny, 21C"), "{client:?} → {route}: {text}");
            // The upstream saw the result tied to the same call.
            let up = &s.sim.recent_requests()[0].body;
            let up_text = up.to_string();
            if route != "gemini" {
                assert!(
                    up_text.contains(&id),
                    "{client:?} → {route}: id {id} not in {up_text}"
                );
            } else {
                assert!(
                    up_text.contains("functionResponse") && up_text.contains("get_weather"),
                    "{up_text}"
                );
            }
        }
    }
}

fn tool_call_from_stream(client: Client, body: &str) -> (String, String) {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(body.as_bytes(), |e| events.push(e));
    let (mut id, mut args) = (String::new(), String::new());
    for e in events {
        if e.data == "[DONE]" {
            continue;
        }
        let v: Value = serde_json::from_str(&e.data).unwrap();
        match client {
            Client::OpenAi => {
                if let Some(tc) = v["choices"][0]["delta"]["tool_calls"].get(0) {
                    if let Some(i) = tc["id"].as_str() {
                        id = i.to_owned();
                    }
                    if let Some(a) = tc["function"]["arguments"].as_str() {
                        args.push_str(a);
                    }
                }
            }
            Client::Anthropic => {
                if v["type"] == "content_block_start" && v["content_block"]["type"] == "tool_use" {
                    id = v["content_block"]["id"].as_str().unwrap().to_owned();
                }
                if v["type"] == "content_block_delta" && v["delta"]["type"] == "input_json_delta" {
                    args.push_str(v["delta"]["partial_json"].as_str().unwrap());
                }
            }
        }
    }
    (id, args)
}

#[tokio::test]
async fn dropped_fields_are_named_in_a_warning_header() {
    let s = setup().await;
    let mut body = request(Client::OpenAi, "anthropic", "hi", false);
    body["seed"] = json!(7);
    body["logit_bias"] = json!({"50256": -100});
    let resp = s.call(Client::OpenAi, body).await;
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-ballast-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(w.contains("seed") && w.contains("logit_bias"), "{w}");
    // Same-format requests carry no warning: everything is forwarded.
    let resp = s
        .call(
            Client::Anthropic,
            request(Client::Anthropic, "anthropic", "hi", false),
        )
        .await;
    assert!(!resp.headers().contains_key("x-ballast-warning"));
}

#[tokio::test]
async fn failover_crosses_formats() {
    let s = setup().await;
    s.dead.set_faults(faults(json!({"down": {"rate": 1.0}})));
    for stream in [false, true] {
        let resp = s
            .call(
                Client::Anthropic,
                request(
                    Client::Anthropic,
                    "cross-failover",
                    "echo still here",
                    stream,
                ),
            )
            .await;
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["x-ballast-target"], "gem/gemini-2.5-flash");
        // The refused primary is retried once (policy.retries = 1), then the route falls over.
        assert_eq!(resp.headers()["x-ballast-attempts"], "3");
        assert_eq!(resp.headers()["x-ballast-fallback"], "true");
        let text = if stream {
            let (t, done, _, _) = read_stream(Client::Anthropic, &resp.text().await.unwrap());
            assert!(done);
            t
        } else {
            answer_text(Client::Anthropic, &resp.json().await.unwrap())
        };
        assert_eq!(text, "still here");
    }
}

#[tokio::test]
async fn a_cut_translated_stream_ends_with_the_clients_error_event() {
    let s = setup().await;
    s.sim.set_faults(faults(json!({"truncate": {"rate": 1.0}})));
    for (client, route, _, _) in PAIRS {
        let resp = s
            .call(client, request(client, route, "tell me a long story", true))
            .await;
        let body = resp.text().await.unwrap();
        let (_, done, error, _) = read_stream(client, &body);
        assert!(
            !done,
            "{client:?} → {route}: a cut stream must not look complete: {body}"
        );
        let error = error.unwrap_or_else(|| panic!("{client:?} → {route}: no error event: {body}"));
        let msg = error["error"]["message"].as_str().unwrap();
        assert!(msg.contains("before the answer was complete"), "{msg}");
    }
}

#[tokio::test]
async fn upstream_errors_are_shown_in_the_clients_format() {
    let s = setup().await;
    s.sim.set_faults(faults(json!({"error": {"status": 400}})));
    let resp = s
        .call(
            Client::Anthropic,
            request(Client::Anthropic, "openai", "hi", false),
        )
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["type"], "error",
        "re-rendered in the Anthropic shape: {v}"
    );
    assert_eq!(v["error"]["type"], "invalid_request_error");
    assert!(!v["error"]["message"].as_str().unwrap().is_empty());
}

fn gemini_body(text: &str) -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "Be brief."}]},
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "generationConfig": {"maxOutputTokens": 200}
    })
}

#[tokio::test]
async fn gemini_clients_are_served_by_every_provider_kind() {
    let s = setup().await;
    for (route, upstream_path) in [
        ("anthropic", "/v1/messages"),
        ("openai", "/v1/chat/completions"),
        ("gemini", "/v1beta/models/gemini-2.5-flash:generateContent"),
    ] {
        s.sim.reset();
        // The key may come as `?key=` (gateway keys are not configured here, so any is accepted).
        let resp = s
            .http
            .post(format!(
                "{}/v1beta/models/{route}:generateContent?key=k",
                s.gw.url
            ))
            .json(&gemini_body("echo héllo ไทย"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{route}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(
            v["candidates"][0]["content"]["parts"][0]["text"], "héllo ไทย",
            "{route}: {v}"
        );
        assert_eq!(v["candidates"][0]["finishReason"], "STOP", "{route}: {v}");
        assert!(
            v["usageMetadata"]["promptTokenCount"].as_u64().is_some(),
            "{v}"
        );
        assert!(
            s.sim.recent_requests()[0].path.starts_with(upstream_path),
            "{route}"
        );

        let resp = s
            .http
            .post(format!(
                "{}/v1beta/models/{route}:streamGenerateContent?alt=sse",
                s.gw.url
            ))
            .json(&gemini_body("echo one two three"))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{route}");
        let body = resp.text().await.unwrap();
        let mut p = SseParser::new();
        let mut text = String::new();
        let mut finished = false;
        p.feed(body.as_bytes(), |e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            if let Some(t) = v["candidates"][0]["content"]["parts"][0]["text"].as_str() {
                text.push_str(t);
            }
            finished |= v["candidates"][0]["finishReason"].is_string();
        });
        assert_eq!(text, "one two three", "{route}: {body}");
        assert!(finished, "{route}: {body}");
    }
    // Errors come back in Google's shape.
    let resp = s
        .http
        .post(format!("{}/v1beta/models/nope:generateContent", s.gw.url))
        .json(&gemini_body("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["status"], "NOT_FOUND", "{v}");
    let v: Value = s
        .http
        .get(format!("{}/v1beta/models", s.gw.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        v["models"]
            .as_array()
            .unwrap()
            .iter()
            .any(|m| m["name"] == "models/gemini")
    );
}

#[tokio::test]
async fn count_tokens_is_forwarded_to_anthropic_or_estimated() {
    let s = setup().await;
    let body = json!({"model": "anthropic", "system": "Be brief.", "messages": [{"role": "user", "content": "How many tokens is this?"}]});
    let resp = s
        .http
        .post(format!("{}/v1/messages/count_tokens?beta=true", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-token-count"], "provider");
    let v: Value = resp.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
    let seen = &s.sim.recent_requests()[0];
    assert_eq!(seen.path, "/v1/messages/count_tokens");
    assert_eq!(seen.body["model"], "claude-sonnet-4-5");

    let mut body = body;
    body["model"] = json!("openai");
    let resp = s
        .http
        .post(format!("{}/v1/messages/count_tokens", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-token-count"], "estimate");
    let v: Value = resp.json().await.unwrap();
    assert!(v["input_tokens"].as_u64().unwrap() > 0);
}

fn responses_body(text: &str, stream: bool) -> Value {
    json!({
        "model": "ROUTE",
        "instructions": "Be brief.",
        "input": [{"type": "message", "role": "user", "content": [{"type": "input_text", "text": text}]}],
        "max_output_tokens": 200,
        "store": false,
        "stream": stream,
    })
}

#[tokio::test]
async fn responses_clients_are_served_by_every_provider_kind() {
    let s = setup().await;
    for (route, upstream_path) in [
        ("anthropic", "/v1/messages"),
        ("openai", "/v1/chat/completions"),
        ("gemini", "/v1beta/models/gemini-2.5-flash:"),
        ("responses", "/v1/responses"),
    ] {
        s.sim.reset();
        let mut body = responses_body("echo héllo ไทย", false);
        body["model"] = json!(route);
        let resp = s
            .http
            .post(format!("{}/v1/responses", s.gw.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{route}");
        let v: Value = resp.json().await.unwrap();
        assert_eq!(v["object"], "response", "{route}: {v}");
        assert_eq!(v["status"], "completed", "{route}: {v}");
        let msg = v["output"]
            .as_array()
            .unwrap()
            .iter()
            .find(|o| o["type"] == "message")
            .unwrap();
        assert_eq!(msg["content"][0]["text"], "héllo ไทย", "{route}: {v}");
        assert!(
            s.sim.recent_requests()[0].path.starts_with(upstream_path),
            "{route}"
        );

        body["stream"] = json!(true);
        body["input"][0]["content"][0]["text"] = json!("echo one two three");
        let resp = s
            .http
            .post(format!("{}/v1/responses", s.gw.url))
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{route}");
        let text = resp.text().await.unwrap();
        let mut p = SseParser::new();
        let (mut deltas, mut completed, mut last_seq) = (String::new(), false, -1i64);
        p.feed(text.as_bytes(), |e| {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            assert_eq!(v["type"].as_str(), Some(e.event.as_str()), "{route}: {e:?}");
            let seq = v["sequence_number"].as_i64().unwrap();
            assert!(seq > last_seq, "{route}: sequence numbers must increase");
            last_seq = seq;
            match e.event.as_str() {
                "response.output_text.delta" => deltas.push_str(v["delta"].as_str().unwrap()),
                "response.completed" => completed = true,
                _ => {}
            }
        });
        assert_eq!(deltas, "one two three", "{route}: {text}");
        assert!(completed, "{route}: {text}");
    }
}

#[tokio::test]
async fn responses_state_is_refused_and_store_is_reported() {
    let s = setup().await;
    let mut body = responses_body("hi", false);
    body["model"] = json!("anthropic");
    body["previous_response_id"] = json!("resp_123");
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("previous_response_id: Ballast is stateless"),
        "{m}"
    );
    assert_eq!(v["error"]["param"], "previous_response_id");

    let mut body = responses_body("hi", false);
    body["model"] = json!("anthropic");
    body["store"] = json!(true);
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-ballast-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(w.contains("store: Ballast is stateless"), "{w}");
}

#[tokio::test]
async fn builtin_tools_go_to_a_responses_target_or_are_dropped_with_a_warning() {
    let s = setup().await;
    let mut body = responses_body("search the web for ballast", false);
    body["model"] = json!("anthropic");
    body["tools"] = json!([{"type": "web_search"}]);
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    // No target of the route can run OpenAI's built-in tools: served without them, and told so.
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-ballast-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(w.contains("web_search"), "{w}");
    // A route that has a Responses target behind the Anthropic one falls over to it instead.
    s.sim.reset();
    body["model"] = json!("builtin-capable");
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-target"], "oai-resp/gpt-5");
    assert_eq!(
        s.sim.recent_requests().len(),
        1,
        "the Anthropic target was not tried"
    );
    body["model"] = json!("responses");
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn anthropic_betas_are_dropped_with_a_warning_or_make_a_target_ineligible() {
    let s = setup().await;
    let send = |beta: &'static str| {
        s.http
            .post(format!("{}/v1/messages", s.gw.url))
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", beta)
            .json(&request(Client::Anthropic, "openai", "hi", false))
            .send()
    };
    // A beta that only tunes Anthropic's behaviour: served by the OpenAI target, and said so.
    let resp = send("interleaved-thinking-2025-05-14, context-1m-2025-08-07")
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let w = resp.headers()["x-ballast-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        w.contains("anthropic-beta interleaved-thinking-2025-05-14 not sent"),
        "{w}"
    );
    // A beta that changes what the request means: the OpenAI target cannot serve it.
    s.sim.reset();
    let resp = send("files-api-2025-04-14").await.unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("files-api-2025-04-14"),
        "{v}"
    );
    assert_eq!(s.sim.recent_requests().len(), 0);
}

#[tokio::test]
async fn builtin_tools_do_not_block_failover_from_a_dead_responses_target() {
    let s = setup().await;
    s.dead.set_faults(faults(json!({"down": {"rate": 1.0}})));
    let mut body = responses_body("echo still served", false);
    body["model"] = json!("codex-failover");
    body["tools"] = json!([{"type": "web_search"}]);
    let resp = s
        .http
        .post(format!("{}/v1/responses", s.gw.url))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{}", resp.text().await.unwrap());
    assert_eq!(resp.headers()["x-ballast-target"], "anth/claude-sonnet-4-5");
    let w = resp.headers()["x-ballast-warning"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(w.contains("web_search"), "{w}");
}
