//! Each fault over real HTTP: down, hang, error, rate_limit, slow, truncate, corrupt, scoping and seeding
//! (`degrade` has its own file, as `hostile` does).

use std::time::Duration;

use ballast_sim::{Faults, SimConfig, SimHandle};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::{client, default_sim, faults, has_thai, read_stream, sim, sse_events};

fn anthropic_body(stream: bool) -> Value {
    json!({"model": "claude-sonnet-4-5", "max_tokens": 100, "stream": stream,
        "messages": [{"role": "user", "content": "tell me something"}]})
}

fn openai_body(stream: bool) -> Value {
    json!({"model": "gpt-4o", "stream": stream, "messages": [{"role": "user", "content": "tell me something"}]})
}

fn gemini_body() -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": "tell me something"}]}]})
}

async fn post(
    http: &reqwest::Client,
    sim: &SimHandle,
    path: &str,
    body: &Value,
) -> reqwest::Response {
    http.post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

/// Polls `/_sim/health` with a fresh client until `want_up` holds (bounded: ~2 s).
async fn wait_until(sim: &SimHandle, want_up: bool) {
    for _ in 0..200 {
        let result = client()
            .get(format!("{}/_sim/health", sim.base_url()))
            .send()
            .await;
        match result {
            Ok(r) if want_up && r.status() == 200 => return,
            Err(e) if !want_up && e.is_connect() => return,
            _ => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    panic!(
        "simulator never became {}",
        if want_up { "reachable" } else { "unreachable" }
    );
}

#[tokio::test]
async fn down_refuses_connections_and_comes_back_on_the_same_port() {
    let http = client();
    let sim = default_sim().await;
    let addr = sim.addr();
    // A pooled keep-alive connection must be closed too.
    let pooled = client();
    assert_eq!(
        pooled
            .get(format!("{}/_sim/health", sim.base_url()))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    sim.set_faults(faults(&["down"]));
    wait_until(&sim, false).await;
    let err = pooled
        .get(format!("{}/_sim/health", sim.base_url()))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect() || err.is_request(), "{err:?}");
    sim.set_faults(Faults::default());
    wait_until(&sim, true).await;
    assert_eq!(sim.addr(), addr);
    assert_eq!(
        post(&http, &sim, "/v1/messages", &anthropic_body(false))
            .await
            .status(),
        200
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn down_with_duration_recovers_by_itself() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!("{}/_sim/faults", sim.base_url()))
        .json(&json!({"down": {"rate": 1.0, "duration_secs": 0.2}}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    wait_until(&sim, false).await;
    wait_until(&sim, true).await;
    assert_eq!(sim.faults(), Faults::default());
    sim.shutdown().await;
}

#[tokio::test]
async fn partial_down_resets_some_connections() {
    let sim = sim(SimConfig {
        seed: 11,
        faults: faults(&["down@0.5"]),
        ..SimConfig::default()
    })
    .await;
    let mut failures = 0;
    let mut successes = 0;
    let http = client();
    for _ in 0..30 {
        match http
            .post(format!("{}/v1/chat/completions", sim.base_url()))
            .json(&openai_body(false))
            .send()
            .await
        {
            Ok(r) if r.status() == 200 => successes += 1,
            _ => failures += 1,
        }
    }
    assert!(
        failures > 0 && successes > 0,
        "{failures} failures, {successes} successes"
    );
    assert!(sim.stats().by_outcome.refused > 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn hang_never_answers() {
    let sim = sim(SimConfig {
        faults: faults(&["hang"]),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let err = client()
        .post(format!("{}/v1/messages", sim.base_url()))
        .timeout(Duration::from_millis(200))
        .json(&anthropic_body(false))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_timeout(), "{err:?}");
    assert!(started.elapsed() >= Duration::from_millis(200));
    // The control plane is never faulted.
    let health = client()
        .get(format!("{}/_sim/health", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(sim.stats().by_outcome.hang, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn error_status_in_each_provider_shape() {
    let http = client();
    let sim = sim(SimConfig {
        faults: faults(&["error:529"]),
        ..SimConfig::default()
    })
    .await;
    let resp = post(&http, &sim, "/v1/messages", &anthropic_body(false)).await;
    assert_eq!(resp.status(), 529);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["type"], "error");
    assert_eq!(body["error"]["type"], "overloaded_error");

    sim.set_faults(faults(&["error:500"]));
    let body: Value = post(&http, &sim, "/v1/messages", &anthropic_body(true))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["error"]["type"], "api_error");

    sim.set_faults(faults(&["error:503"]));
    let resp = post(&http, &sim, "/v1/chat/completions", &openai_body(false)).await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "server_error");
    assert!(body["error"].as_object().unwrap().contains_key("param"));

    let resp = post(
        &http,
        &sim,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &gemini_body(),
    )
    .await;
    assert_eq!(resp.status(), 503);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], 503);
    assert_eq!(body["error"]["status"], "UNAVAILABLE");
    assert_eq!(sim.stats().by_outcome.error, 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn rate_limit_sends_429_and_retry_after() {
    let http = client();
    let sim = sim(SimConfig {
        faults: faults(&["rate_limit:2"]),
        ..SimConfig::default()
    })
    .await;
    let resp = post(&http, &sim, "/v1/chat/completions", &openai_body(false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "2000");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");

    let resp = post(&http, &sim, "/v1/messages", &anthropic_body(false)).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["type"], "rate_limit_error");

    let resp = post(
        &http,
        &sim,
        "/v1beta/models/g:generateContent",
        &gemini_body(),
    )
    .await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "RESOURCE_EXHAUSTED");
    assert_eq!(sim.stats().by_outcome.rate_limited, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn truncate_cuts_streams_before_the_terminal_event() {
    // Default mode `eof`: the body ends cleanly, the terminal event is simply missing.
    // Mode `reset`: the connection is cut mid-body and the client sees an error.
    for (flag, cut) in [("truncate", false), ("truncate:reset", true)] {
        let http = client();
        let sim = sim(SimConfig {
            faults: faults(&[flag]),
            ..SimConfig::default()
        })
        .await;
        let resp = post(&http, &sim, "/v1/messages", &anthropic_body(true)).await;
        assert_eq!(resp.status(), 200);
        let (body, failed) = read_stream(resp).await;
        assert_eq!(failed, cut, "{flag}");
        let events = sse_events(&body);
        assert!(events.len() > 1, "{flag}: about half the events arrive");
        assert!(
            events
                .iter()
                .all(|e| e.name.as_deref() != Some("message_stop"))
        );

        let (body, failed) =
            read_stream(post(&http, &sim, "/v1/chat/completions", &openai_body(true)).await).await;
        assert_eq!(failed, cut, "{flag}");
        assert!(!body.contains("[DONE]"));
        assert!(body.contains("chat.completion.chunk"));

        let (body, failed) = read_stream(
            post(
                &http,
                &sim,
                "/v1beta/models/g:streamGenerateContent?alt=sse",
                &gemini_body(),
            )
            .await,
        )
        .await;
        assert_eq!(failed, cut, "{flag}");
        assert!(!body.contains("finishReason"));

        let (body, failed) =
            read_stream(post(&http, &sim, "/v1/chat/completions", &openai_body(false)).await).await;
        assert_eq!(failed, cut, "{flag}");
        assert!(
            serde_json::from_str::<Value>(&body).is_err(),
            "partial JSON: {body}"
        );
        assert_eq!(sim.stats().by_outcome.truncated, 4);
        sim.shutdown().await;
    }
}

#[tokio::test]
async fn corrupt_answers_contain_thai() {
    let http = client();
    let sim = sim(SimConfig {
        faults: faults(&["corrupt:thai"]),
        ..SimConfig::default()
    })
    .await;
    let body: Value = post(&http, &sim, "/v1/messages", &anthropic_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert!(
        has_thai(body["content"][0]["text"].as_str().unwrap()),
        "{body}"
    );
    let body: Value = post(&http, &sim, "/v1/chat/completions", &openai_body(false))
        .await
        .json()
        .await
        .unwrap();
    assert!(has_thai(
        body["choices"][0]["message"]["content"].as_str().unwrap()
    ));
    let (stream, _) = read_stream(
        post(
            &http,
            &sim,
            "/v1beta/models/g:streamGenerateContent?alt=sse",
            &gemini_body(),
        )
        .await,
    )
    .await;
    assert!(has_thai(&stream));
    assert_eq!(sim.stats().by_outcome.corrupted, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_and_configured_latency_delay_the_answer() {
    let http = client();
    let slow = sim(SimConfig {
        faults: faults(&["slow:2"]),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    assert_eq!(
        post(&http, &slow, "/v1/chat/completions", &openai_body(false))
            .await
            .status(),
        200
    );
    assert!(
        started.elapsed() >= Duration::from_millis(40),
        "slow with zero latency uses a 20 ms base"
    );
    slow.shutdown().await;

    let sim = sim(SimConfig {
        ttft: Duration::from_millis(30),
        token_delay: Duration::from_millis(1),
        ..SimConfig::default()
    })
    .await;
    let started = Instant::now();
    let (body, _) =
        read_stream(post(&http, &sim, "/v1/messages", &anthropic_body(true)).await).await;
    let deltas = sse_events(&body)
        .iter()
        .filter(|e| e.name.as_deref() == Some("content_block_delta"))
        .count();
    assert!(started.elapsed() >= Duration::from_millis(30 + deltas as u64 - 1));
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_scoped_to_one_api() {
    let http = client();
    let sim = sim(SimConfig {
        faults: faults(&["error:502/openai"]),
        ..SimConfig::default()
    })
    .await;
    assert_eq!(
        post(&http, &sim, "/v1/chat/completions", &openai_body(false))
            .await
            .status(),
        502
    );
    assert_eq!(
        post(&http, &sim, "/v1/messages", &anthropic_body(false))
            .await
            .status(),
        200
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn fault_draws_are_seeded() {
    async fn run(seed: u64) -> Vec<u16> {
        let http = client();
        let sim = sim(SimConfig {
            seed,
            faults: faults(&["error:503@0.5"]),
            ..SimConfig::default()
        })
        .await;
        let mut statuses = Vec::new();
        for _ in 0..16 {
            statuses.push(
                post(&http, &sim, "/v1/chat/completions", &openai_body(false))
                    .await
                    .status()
                    .as_u16(),
            );
        }
        sim.shutdown().await;
        statuses
    }
    let a = run(42).await;
    assert_eq!(a, run(42).await);
    assert!(a.contains(&503) && a.contains(&200), "{a:?}");
}
