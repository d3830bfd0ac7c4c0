//! Anthropic Messages API: shapes, streaming event sequence, tools, echo, validation and keys.

use ballast_sim::SimConfig;
use serde_json::{Value, json};

use crate::{client, default_sim, read_stream, sim, sse_events};

fn hello(stream: bool) -> Value {
    json!({
        "model": "claude-sonnet-4-5",
        "max_tokens": 200,
        "stream": stream,
        "messages": [{"role": "user", "content": "Hello, simulator"}]
    })
}

#[tokio::test]
async fn non_streaming_message_has_the_real_shape() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!("{}/v1/messages?beta=true", sim.base_url()))
        .header("x-api-key", "anything")
        .header("anthropic-version", "2023-06-01")
        .json(&hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["request-id"]
            .to_str()
            .unwrap()
            .starts_with("req_")
    );
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/json")
    );
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("msg_"));
    assert_eq!(body["type"], "message");
    assert_eq!(body["role"], "assistant");
    assert_eq!(body["model"], "claude-sonnet-4-5");
    assert_eq!(body["content"][0]["type"], "text");
    assert!(!body["content"][0]["text"].as_str().unwrap().is_empty());
    assert_eq!(body["stop_reason"], "end_turn");
    assert_eq!(body["stop_sequence"], Value::Null);
    let usage = &body["usage"];
    assert!(usage["input_tokens"].as_u64().unwrap() >= 1);
    assert!(usage["output_tokens"].as_u64().unwrap() >= 12);
    assert_eq!(usage["cache_creation_input_tokens"], 0);
    assert_eq!(usage["cache_read_input_tokens"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_has_the_real_event_sequence_and_same_text() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages", sim.base_url());
    let full: Value = client()
        .post(&url)
        .json(&hello(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client().post(&url).json(&hello(true)).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (body, failed) = read_stream(resp).await;
    assert!(!failed);
    let events = sse_events(&body);
    let names: Vec<&str> = events.iter().map(|e| e.name.as_deref().unwrap()).collect();
    let n = names.len();
    assert_eq!(
        &names[..3],
        ["message_start", "content_block_start", "ping"]
    );
    assert!(names[3..n - 3].iter().all(|e| *e == "content_block_delta"));
    assert_eq!(
        &names[n - 3..],
        ["content_block_stop", "message_delta", "message_stop"]
    );
    for e in &events {
        assert_eq!(
            e.json()["type"],
            e.name.as_deref().unwrap(),
            "data.type matches event name"
        );
    }
    let start = events[0].json();
    assert_eq!(start["message"]["content"], json!([]));
    assert_eq!(start["message"]["stop_reason"], Value::Null);
    assert!(start["message"]["usage"]["input_tokens"].as_u64().is_some());
    assert!(
        start["message"]["usage"]["output_tokens"]
            .as_u64()
            .is_some()
    );
    let text: String = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let d = e.json();
            assert_eq!(d["delta"]["type"], "text_delta");
            d["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(
        text,
        full["content"][0]["text"].as_str().unwrap(),
        "deterministic answer"
    );
    let delta = events[n - 2].json();
    assert_eq!(delta["delta"]["stop_reason"], "end_turn");
    assert_eq!(delta["delta"]["stop_sequence"], Value::Null);
    assert_eq!(
        delta["usage"]["output_tokens"],
        full["usage"]["output_tokens"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn forced_tool_use_streams_json_fragments() {
    let sim = default_sim().await;
    let body = json!({
        "model": "claude-haiku-4-5", "max_tokens": 100, "stream": true,
        "tools": [
            {"name": "lookup", "input_schema": {"type": "object"}},
            {"name": "get_weather", "description": "weather", "input_schema": {
                "type": "object",
                "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}, "days": {"type": "integer"}},
                "required": ["city", "unit", "days"]
            }}
        ],
        "tool_choice": {"type": "tool", "name": "get_weather"},
        "messages": [{"role": "user", "content": "What's the weather?"}]
    });
    let resp = client()
        .post(format!("{}/v1/messages", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (text, _) = read_stream(resp).await;
    let events = sse_events(&text);
    let block = events[1].json();
    assert_eq!(block["content_block"]["type"], "tool_use");
    assert_eq!(block["content_block"]["name"], "get_weather");
    assert!(
        block["content_block"]["id"]
            .as_str()
            .unwrap()
            .starts_with("toolu_")
    );
    let fragments: Vec<String> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .map(|e| {
            let d = e.json();
            assert_eq!(d["delta"]["type"], "input_json_delta");
            d["delta"]["partial_json"].as_str().unwrap().to_owned()
        })
        .collect();
    assert!(fragments.len() > 1, "several fragments");
    let args: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(args, json!({"city": "example", "unit": "c", "days": 1}));
    let delta = events
        .iter()
        .find(|e| e.name.as_deref() == Some("message_delta"))
        .unwrap()
        .json();
    assert_eq!(delta["delta"]["stop_reason"], "tool_use");
    sim.shutdown().await;
}

#[tokio::test]
async fn mentioned_tool_and_tool_result_round_trip() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages", sim.base_url());
    let tools = json!([{"name": "get_time", "input_schema": {"type": "object", "properties": {"tz": {"type": "string"}}, "required": ["tz"]}}]);
    let first: Value = client()
        .post(&url)
        .json(&json!({"model": "m", "max_tokens": 50, "tools": tools,
            "messages": [{"role": "user", "content": "please use get_time"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(first["stop_reason"], "tool_use");
    let call = &first["content"][0];
    assert_eq!(call["type"], "tool_use");
    assert_eq!(call["input"], json!({"tz": "example"}));
    let second: Value = client()
        .post(&url)
        .json(&json!({"model": "m", "max_tokens": 50, "tools": tools, "messages": [
            {"role": "user", "content": "please use get_time"},
            {"role": "assistant", "content": [call]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call["id"], "content": "12:00 UTC"}]}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        second["content"][0]["text"],
        "Tool result received: 12:00 UTC"
    );
    assert_eq!(second["stop_reason"], "end_turn");
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_max_tokens_and_stop_sequences() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages", sim.base_url());
    let ask = |content: &str, extra: Value| {
        let mut body = json!({"model": "m", "max_tokens": 100, "messages": [
            {"role": "user", "content": "first turn"},
            {"role": "assistant", "content": "ok"},
            {"role": "user", "content": [{"type": "text", "text": content}]}
        ]});
        for (k, v) in extra.as_object().unwrap() {
            body[k] = v.clone();
        }
        client().post(&url).json(&body).send()
    };
    let echoed: Value = ask("echo Grüße, 世界! 🎉", json!({}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(echoed["content"][0]["text"], "Grüße, 世界! 🎉");
    let capped: Value = ask("echo a b c d e f", json!({"max_tokens": 3}))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(capped["content"][0]["text"], "a b c");
    assert_eq!(capped["stop_reason"], "max_tokens");
    assert_eq!(capped["usage"]["output_tokens"], 3);
    let stopped: Value = ask(
        "echo one two STOP three",
        json!({"stop_sequences": ["STOP"]}),
    )
    .await
    .unwrap()
    .json()
    .await
    .unwrap();
    assert_eq!(stopped["content"][0]["text"], "one two ");
    assert_eq!(stopped["stop_reason"], "stop_sequence");
    assert_eq!(stopped["stop_sequence"], "STOP");
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_errors_have_the_anthropic_shape() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages", sim.base_url());
    let resp = client()
        .post(&url)
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("max_tokens")
    );

    let resp = client()
        .post(&url)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(sim.stats().by_outcome.invalid, 2);
    sim.shutdown().await;
}

#[tokio::test]
async fn required_key_is_checked_in_x_api_key() {
    let sim = sim(SimConfig {
        require_key: Some("sk-ant-test".into()),
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/messages", sim.base_url());
    for key in [None, Some("wrong")] {
        let mut req = client().post(&url).json(&hello(false));
        if let Some(k) = key {
            req = req.header("x-api-key", k);
        }
        let resp = req.send().await.unwrap();
        assert_eq!(resp.status(), 401, "{key:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"]["type"], "authentication_error");
    }
    let ok = client()
        .post(&url)
        .header("x-api-key", "sk-ant-test")
        .json(&hello(false))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn count_tokens_estimates_from_text() {
    let sim = default_sim().await;
    let body: Value = client()
        .post(format!("{}/v1/messages/count_tokens", sim.base_url()))
        .json(&json!({"model": "m", "messages": [{"role": "user", "content": "abcdefgh"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // "user" (4) + "abcdefgh" (8) = 12 chars → 3 tokens.
    assert_eq!(body, json!({"input_tokens": 3}));
    sim.shutdown().await;
}
