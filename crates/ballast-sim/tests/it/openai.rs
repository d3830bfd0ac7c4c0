//! OpenAI Chat Completions: shapes, streamed chunks with usage and `[DONE]`, tool calls, validation, keys.

use ballast_sim::SimConfig;
use serde_json::{Value, json};

use crate::{client, default_sim, read_stream, sim, sse_events};

fn chat(stream: bool) -> Value {
    json!({
        "model": "gpt-4o-mini",
        "stream": stream,
        "stream_options": {"include_usage": true},
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "Hello!"}]
    })
}

#[tokio::test]
async fn non_streaming_completion_has_the_real_shape() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("chatcmpl-"));
    assert_eq!(body["object"], "chat.completion");
    assert!(body["created"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["model"], "gpt-4o-mini");
    assert!(body["system_fingerprint"].is_string());
    let choice = &body["choices"][0];
    assert_eq!(choice["index"], 0);
    assert_eq!(choice["message"]["role"], "assistant");
    assert!(!choice["message"]["content"].as_str().unwrap().is_empty());
    assert_eq!(choice["finish_reason"], "stop");
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["prompt_tokens"].as_u64().unwrap() + usage["completion_tokens"].as_u64().unwrap()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_has_role_deltas_finish_usage_and_done() {
    let sim = default_sim().await;
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let full: Value = client()
        .post(&url)
        .json(&chat(false))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client().post(&url).json(&chat(true)).send().await.unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (body, failed) = read_stream(resp).await;
    assert!(!failed);
    let events = sse_events(&body);
    assert!(events.iter().all(|e| e.name.is_none()));
    assert_eq!(events.last().unwrap().data, "[DONE]");
    let chunks: Vec<Value> = events[..events.len() - 1]
        .iter()
        .map(|e| e.json())
        .collect();
    assert!(
        chunks
            .iter()
            .all(|c| c["object"] == "chat.completion.chunk")
    );
    let id = &chunks[0]["id"];
    assert!(chunks.iter().all(|c| &c["id"] == id));
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let usage_chunk = chunks.last().unwrap();
    assert_eq!(usage_chunk["choices"], json!([]));
    assert_eq!(
        usage_chunk["usage"]["completion_tokens"],
        full["usage"]["completion_tokens"]
    );
    let finish = &chunks[chunks.len() - 2];
    assert_eq!(finish["choices"][0]["finish_reason"], "stop");
    let text: String = chunks
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(
        text,
        full["choices"][0]["message"]["content"].as_str().unwrap()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn required_tool_choice_streams_argument_fragments() {
    let sim = default_sim().await;
    let body = json!({
        "model": "gpt-4o", "stream": true, "tool_choice": "required",
        "tools": [{"type": "function", "function": {"name": "search", "parameters": {
            "type": "object", "properties": {"query": {"type": "string"}, "limit": {"type": "number"}, "exact": {"type": "boolean"}},
            "required": ["query", "limit", "exact"]
        }}}],
        "messages": [{"role": "user", "content": "find things"}]
    });
    let resp = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    let (text, _) = read_stream(resp).await;
    let events = sse_events(&text);
    let chunks: Vec<Value> = events
        .iter()
        .filter(|e| e.data != "[DONE]")
        .map(|e| e.json())
        .collect();
    let first = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(first["index"], 0);
    assert!(first["id"].as_str().unwrap().starts_with("call_"));
    assert_eq!(first["type"], "function");
    assert_eq!(first["function"]["name"], "search");
    let fragments: Vec<String> = chunks[1..]
        .iter()
        .filter_map(|c| {
            c["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert!(fragments.len() > 1);
    let args: Value = serde_json::from_str(&fragments.concat()).unwrap();
    assert_eq!(args, json!({"query": "example", "limit": 1, "exact": true}));
    assert_eq!(
        chunks.last().unwrap()["choices"][0]["finish_reason"],
        "tool_calls"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn tool_message_is_acknowledged_and_none_disables_tools() {
    let sim = default_sim().await;
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let tools = json!([{"type": "function", "function": {"name": "search", "parameters": {"type": "object"}}}]);
    let body: Value = client()
        .post(&url)
        .json(&json!({"model": "gpt-4o", "tools": tools, "messages": [
            {"role": "user", "content": "search for it"},
            {"role": "assistant", "content": null, "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "search", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "found 3 results"}
        ]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        body["choices"][0]["message"]["content"],
        "Tool result received: found 3 results"
    );
    let body: Value = client()
        .post(&url)
        .json(
            &json!({"model": "gpt-4o", "tools": tools, "tool_choice": "none",
            "messages": [{"role": "user", "content": "search for it"}]}),
        )
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(body["choices"][0]["message"]["tool_calls"].is_null());
    assert_eq!(body["choices"][0]["finish_reason"], "stop");
    sim.shutdown().await;
}

#[tokio::test]
async fn max_completion_tokens_gives_length() {
    let sim = default_sim().await;
    let body: Value = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"model": "gpt-4o", "max_completion_tokens": 2, "messages": [{"role": "user", "content": "echo héllo wörld again"}]}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["choices"][0]["message"]["content"], "héllo wörld");
    assert_eq!(body["choices"][0]["finish_reason"], "length");
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_and_keys_have_the_openai_shape() {
    let sim = sim(SimConfig {
        require_key: Some("sk-test".into()),
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let resp = client()
        .post(&url)
        .bearer_auth("sk-test")
        .json(&json!({"model": "gpt-4o"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], "messages");
    assert!(body["error"].as_object().unwrap().contains_key("code"));

    let resp = client()
        .post(&url)
        .bearer_auth("sk-wrong")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "invalid_api_key");
    let resp = client().post(&url).json(&chat(false)).send().await.unwrap();
    assert_eq!(resp.status(), 401);

    let resp = client()
        .post(&url)
        .bearer_auth("sk-test")
        .json(&chat(false))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn models_list_satisfies_both_sdks() {
    let sim = default_sim().await;
    let body: Value = client()
        .get(format!("{}/v1/models", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(body["object"], "list");
    assert_eq!(body["has_more"], false);
    let data = body["data"].as_array().unwrap();
    assert!(!data.is_empty());
    assert_eq!(body["first_id"], data[0]["id"]);
    assert_eq!(body["last_id"], data[data.len() - 1]["id"]);
    for m in data {
        for key in [
            "id",
            "object",
            "created",
            "owned_by",
            "type",
            "display_name",
            "created_at",
        ] {
            assert!(m.get(key).is_some(), "{key} in {m}");
        }
    }
    let one: Value = client()
        .get(format!("{}/v1/models/my-custom-model", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(one["id"], "my-custom-model");
    sim.shutdown().await;
}
