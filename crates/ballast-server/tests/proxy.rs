//! The gateway end to end over loopback HTTP, in front of the provider simulator: the same-format fast
//! path, failover, error shapes and stream integrity, asserting what the client got and what the
//! upstream saw.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use ballast_sim::{SimConfig, SimHandle};
use common::{Gateway, faults, gateway, sim};
use serde_json::{Value, json};

/// Two providers on one simulator (one per API) and one on a second simulator for failover.
fn config(primary: &SimHandle, backup: &SimHandle, extra: &str) -> String {
    format!(
        r#"
        [auth]
        gateway_keys = ["gw-key"]
        # One attempt per target and no breakers: these tests check the request path itself
        # (tests/resilience.rs covers the policies).
        [policy]
        retries = 0
        retry_budget_min_per_second = 10000.0
        [policy.breaker]
        consecutive_failures = 1000000
        min_requests = 1000000
        [providers.anth]
        kind = "anthropic"
        base_url = "{p}"
        api_key = "sk-ant-upstream"
        [providers.oai]
        kind = "openai"
        base_url = "{p}/v1"
        api_key = "sk-oai-upstream"
        [providers.oai-backup]
        kind = "openai"
        base_url = "{b}/v1"
        api_key = "sk-oai-backup"
        [providers.anth-backup]
        kind = "anthropic"
        base_url = "{b}"
        api_key = "sk-ant-backup"
        [routes.claude]
        targets = ["anth/claude-sonnet-4-5"]
        [routes.gpt]
        targets = ["oai/gpt-4.1"]
        [routes.gpt-failover]
        targets = ["oai/gpt-4.1", "oai-backup/gpt-4.1-mini"]
        [routes.claude-failover]
        targets = ["anth/claude-sonnet-4-5", "anth-backup/claude-haiku-4-5"]
        {extra}
        "#,
        p = primary.base_url(),
        b = backup.base_url(),
    )
}

struct Setup {
    primary: SimHandle,
    backup: SimHandle,
    gw: Gateway,
    http: reqwest::Client,
}

async fn setup() -> Setup {
    setup_with("").await
}

async fn setup_with(extra: &str) -> Setup {
    let primary = sim().await;
    let backup = sim().await;
    let gw = gateway(&config(&primary, &backup, extra)).await;
    Setup {
        primary,
        backup,
        gw,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap(),
    }
}

impl Setup {
    async fn openai(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.gw.url))
            .bearer_auth("gw-key")
            .json(&body)
            .send()
            .await
            .unwrap()
    }

    async fn anthropic(&self, body: Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/messages", self.gw.url))
            .header("x-api-key", "gw-key")
            .header("anthropic-version", "2023-06-01")
            .header("anthropic-beta", "some-beta-2099-01-01")
            .json(&body)
            .send()
            .await
            .unwrap()
    }
}

fn chat(model: &str) -> Value {
    json!({"model": model, "messages": [{"role": "user", "content": "Hello there"}]})
}

fn messages(model: &str) -> Value {
    json!({"model": model, "max_tokens": 64, "messages": [{"role": "user", "content": "Hello there"}]})
}

#[tokio::test]
async fn openai_fast_path_rewrites_only_the_model_and_uses_the_provider_key() {
    let s = setup().await;
    let mut body = chat("gpt");
    body["some_future_field"] = json!({"nested": [1, 2.50]});
    let resp = s.openai(body).await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    assert_eq!(resp.headers()["x-ballast-route"], "gpt");
    assert_eq!(resp.headers()["x-ballast-target"], "oai/gpt-4.1");
    assert_eq!(resp.headers()["x-ballast-attempts"], "1");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["model"], "gpt-4.1");
    assert!(v["usage"]["completion_tokens"].as_u64().unwrap() > 0);

    let seen = s.primary.recent_requests();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!(r.path, "/v1/chat/completions");
    assert_eq!(r.body["model"], "gpt-4.1");
    assert_eq!(r.body["some_future_field"], json!({"nested": [1, 2.50]}));
    assert_eq!(r.headers["authorization"], "Bearer sk-oai-upstream");
    assert!(
        !r.headers.values().any(|v| v.contains("gw-key")),
        "the gateway key must not reach the provider: {:?}",
        r.headers
    );
}

#[tokio::test]
async fn anthropic_fast_path_forwards_version_and_beta_headers() {
    let s = setup().await;
    let resp = s.anthropic(messages("claude")).await;
    assert_eq!(resp.status(), 200);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "message");
    assert_eq!(v["model"], "claude-sonnet-4-5");
    let r = &s.primary.recent_requests()[0];
    assert_eq!(r.headers["x-api-key"], "sk-ant-upstream");
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.headers["anthropic-beta"], "some-beta-2099-01-01");
}

#[tokio::test]
async fn streams_pass_through_whole_and_in_order() {
    let s = setup().await;
    let mut body = messages("claude");
    body["stream"] = json!(true);
    let resp = s.anthropic(body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = resp.text().await.unwrap();
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("event: "))
        .collect();
    assert_eq!(names.first(), Some(&"message_start"));
    assert_eq!(names.last(), Some(&"message_stop"));
    assert!(names.contains(&"content_block_delta"));
    assert!(!names.contains(&"error"));

    let mut body = chat("gpt");
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let text = s.openai(body).await.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert!(text.contains("\"usage\""));
}

#[tokio::test]
async fn a_truncated_stream_ends_with_an_error_event_not_a_silent_cut() {
    let s = setup().await;
    s.primary
        .set_faults(faults(json!({"truncate": {"rate": 1.0}})));
    let mut body = messages("claude");
    body["stream"] = json!(true);
    let text = s.anthropic(body).await.text().await.unwrap();
    assert!(!text.contains("message_stop"), "{text}");
    let tail: Vec<&str> = text.trim_end().lines().rev().take(2).collect();
    assert_eq!(tail[1], "event: error", "{text}");
    let err: Value = serde_json::from_str(tail[0].strip_prefix("data: ").unwrap()).unwrap();
    assert_eq!(err["type"], "error");
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("anth/claude-sonnet-4-5")
    );

    let mut body = chat("gpt");
    body["stream"] = json!(true);
    let text = s.openai(body).await.text().await.unwrap();
    assert!(!text.contains("[DONE]"), "{text}");
    let last = text.trim_end().lines().last().unwrap();
    let err: Value = serde_json::from_str(last.strip_prefix("data: ").unwrap()).unwrap();
    assert!(
        err["error"]["message"]
            .as_str()
            .unwrap()
            .contains("before the answer was complete")
    );
    // Every line the client got is a complete SSE line: no partial event leaked before the error.
    for block in text.split("\n\n").filter(|b| !b.trim().is_empty()) {
        for line in block.lines() {
            let data = line.strip_prefix("data: ").unwrap();
            let _: Value = serde_json::from_str(data).unwrap();
        }
    }
}

#[tokio::test]
async fn failover_when_the_primary_refuses_connections() {
    let s = setup().await;
    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    let resp = s.openai(chat("gpt-failover")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(
        resp.headers()["x-ballast-target"],
        "oai-backup/gpt-4.1-mini"
    );
    assert_eq!(resp.headers()["x-ballast-attempts"], "2");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["model"], "gpt-4.1-mini",
        "the model that answered is reported"
    );
    assert_eq!(s.backup.recent_requests().len(), 1);

    // Streams fall over too, before any byte reached the client.
    let mut body = messages("claude-failover");
    body["stream"] = json!(true);
    let resp = s.anthropic(body).await;
    assert_eq!(
        resp.headers()["x-ballast-target"],
        "anth-backup/claude-haiku-4-5"
    );
    assert!(resp.text().await.unwrap().contains("message_stop"));
}

#[tokio::test]
async fn failover_on_overload_and_rate_limit_but_not_on_client_errors() {
    let s = setup().await;
    s.primary
        .set_faults(faults(json!({"error": {"status": 529}})));
    let resp = s.anthropic(messages("claude-failover")).await;
    assert_eq!(resp.status(), 200);

    // An upstream 400 would fail the same way everywhere: returned at once, not retried elsewhere.
    s.primary
        .set_faults(faults(json!({"error": {"status": 400}})));
    s.backup.reset();
    let resp = s.openai(chat("gpt-failover")).await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(v["error"]["message"].is_string(), "{v}");
    assert_eq!(s.backup.recent_requests().len(), 0);

    // A 429 falls over, and pauses the primary for its retry-after: the next request goes straight
    // to the backup, without asking the rate-limited provider again.
    s.primary
        .set_faults(faults(json!({"rate_limit": {"retry_after_secs": 3}})));
    let resp = s.openai(chat("gpt-failover")).await;
    assert_eq!(resp.status(), 200);
    s.primary.reset();
    let resp = s.openai(chat("gpt-failover")).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-attempts"], "1");
    assert_eq!(
        s.primary.recent_requests().len(),
        0,
        "asked again while paused"
    );
}

#[tokio::test]
async fn single_target_errors_keep_their_meaning() {
    let s = setup().await;
    s.primary
        .set_faults(faults(json!({"error": {"status": 529}})));
    let resp = s.anthropic(messages("claude")).await;
    assert_eq!(resp.status(), 529);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["type"], "error");
    assert_eq!(v["error"]["type"], "overloaded_error");

    s.primary
        .set_faults(faults(json!({"rate_limit": {"retry_after_secs": 7}})));
    let resp = s.openai(chat("gpt")).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "7");

    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    let resp = s.openai(chat("gpt")).await;
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "oai/gpt-4.1: connection refused");
}

#[tokio::test]
async fn every_target_failing_names_each_cause() {
    let s = setup().await;
    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    s.backup
        .set_faults(faults(json!({"error": {"status": 503}})));
    let resp = s.openai(chat("gpt-failover")).await;
    assert_eq!(resp.status(), 503);
    assert!(resp.headers().contains_key("retry-after"));
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.starts_with("all targets of route \"gpt-failover\" failed: "),
        "{m}"
    );
    assert!(m.contains("oai/gpt-4.1 (connection refused)"), "{m}");
    assert!(m.contains("oai-backup/gpt-4.1-mini (HTTP 503"), "{m}");
}

#[tokio::test]
async fn provider_rejecting_our_key_is_a_gateway_error_not_the_clients() {
    let primary = ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            require_key: Some("the-real-key".into()),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let backup = sim().await;
    let gw = gateway(&config(&primary, &backup, "")).await;
    let resp = reqwest::Client::new()
        .post(format!("{}/v1/chat/completions", gw.url))
        .bearer_auth("gw-key")
        .json(&chat("gpt"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 502);
    let v: Value = resp.json().await.unwrap();
    let m = v["error"]["message"].as_str().unwrap();
    assert!(
        m.contains("HTTP 401") && m.contains("rejected the gateway's credentials"),
        "{m}"
    );
    assert!(
        !m.contains("sk-oai-upstream"),
        "keys never appear in errors: {m}"
    );
}

#[tokio::test]
async fn client_errors_in_each_format() {
    let s = setup().await;
    // Wrong gateway key.
    let resp = s
        .http
        .post(format!("{}/v1/messages", s.gw.url))
        .header("x-api-key", "wrong")
        .json(&messages("claude"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers().contains_key("x-request-id"));
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["type"], "authentication_error");

    // Unknown model lists the routes.
    let resp = s.openai(chat("gpt-9")).await;
    assert_eq!(resp.status(), 404);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("claude, claude-failover, gpt, gpt-failover")
    );

    // Malformed JSON says where.
    let resp = s
        .http
        .post(format!("{}/v1/chat/completions", s.gw.url))
        .bearer_auth("gw-key")
        .body("{\"model\": \"gpt\",\n\"messages\": [oops]}")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("line 2 column"),
        "{v}"
    );

    // Missing required field is named.
    let resp = s
        .anthropic(json!({"model": "claude", "messages": []}))
        .await;
    assert_eq!(resp.status(), 400);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["message"], "max_tokens: this field is required");
    assert_eq!(
        s.primary.recent_requests().len(),
        0,
        "nothing invalid reaches a provider"
    );

    // The client's own request id is kept.
    let resp = s
        .http
        .get(format!("{}/v1/models", s.gw.url))
        .bearer_auth("gw-key")
        .header("x-request-id", "client-chosen-id")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["x-request-id"], "client-chosen-id");
    let v: Value = resp.json().await.unwrap();
    let ids: Vec<&str> = v["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        vec!["claude", "claude-failover", "gpt", "gpt-failover"]
    );
}

#[tokio::test]
async fn bodies_over_the_limit_get_413() {
    let s = setup_with("[server]\nbody_limit = \"1KiB\"").await;
    let mut body = chat("gpt");
    body["messages"][0]["content"] = json!("x".repeat(2048));
    let resp = s.openai(body).await;
    assert_eq!(resp.status(), 413);
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["error"]["code"], "request_too_large");
}

#[tokio::test]
async fn a_hanging_provider_is_cut_off_at_the_deadline() {
    let s = setup_with("[routes.gpt.policy]\ndeadline = \"300ms\"").await;
    s.primary.set_faults(faults(json!({"hang": {"rate": 1.0}})));
    let started = std::time::SystemTime::now();
    let resp = s.openai(chat("gpt")).await;
    let took = started.elapsed().unwrap();
    assert_eq!(resp.status(), 504);
    assert!(took < Duration::from_secs(2), "took {took:?}");
    let v: Value = resp.json().await.unwrap();
    assert_eq!(
        v["error"]["message"], "oai/gpt-4.1: deadline exceeded after 300ms",
        "{v}"
    );
}

#[tokio::test]
async fn refused_requests_never_break_the_clients_next_request() {
    let s = setup().await;
    // Refused before the body is read: the gateway says the connection closes, so a keep-alive
    // client never sends its next request into a connection that is going away.
    for i in 0..30 {
        let resp = s
            .http
            .post(format!("{}/v1/chat/completions", s.gw.url))
            .json(&chat("gpt"))
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {i}: {e}"));
        assert_eq!(resp.status(), 401);
        assert_eq!(resp.headers()["connection"], "close");
    }
}
