//! Every client API through every provider kind against a hostile simulator (huge indices, events
//! without end, a huge event, invalid UTF-8, deep nesting, endless or huge headers, a trickle): the
//! gateway lives, each client gets a clean error or a fallback answer in its own format, a healthy
//! request in flight beside them completes, and memory stays bounded.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use ballast_sim::{SimConfig, SimHandle};
use common::{faults, gateway};
use serde_json::{Value, json};

/// Each mode with sizes that exceed the gateway's (test-sized) limits without making the test slow.
fn modes() -> Vec<(&'static str, Value)> {
    vec![
        ("huge_index", json!({"mode": "huge_index"})),
        (
            "no_terminator",
            json!({"mode": "no_terminator", "bytes": 2 << 20}),
        ),
        (
            "huge_event",
            json!({"mode": "huge_event", "bytes": 2 << 20}),
        ),
        ("invalid_utf8", json!({"mode": "invalid_utf8"})),
        (
            "deep_nesting",
            json!({"mode": "deep_nesting", "depth": 100_000}),
        ),
        (
            "endless_headers",
            json!({"mode": "endless_headers", "interval_ms": 5, "bytes": 1 << 20}),
        ),
        ("trickle", json!({"mode": "trickle", "interval_ms": 20})),
        (
            "huge_headers",
            json!({"mode": "huge_headers", "count": 5000, "bytes": 1 << 20}),
        ),
    ]
}

const KINDS: [&str; 4] = ["anthropic", "openai", "responses", "gemini"];

fn provider_toml(name: &str, kind: &str, url: &str) -> String {
    match kind {
        "anthropic" => {
            format!(
                "[providers.{name}]\nkind = \"anthropic\"\nbase_url = \"{url}\"\napi_key = \"k\"\n"
            )
        }
        "openai" => {
            format!(
                "[providers.{name}]\nkind = \"openai\"\nbase_url = \"{url}/v1\"\napi_key = \"k\"\n"
            )
        }
        "responses" => format!(
            "[providers.{name}]\nkind = \"openai\"\napi = \"responses\"\nbase_url = \"{url}/v1\"\napi_key = \"k\"\n"
        ),
        _ => format!(
            "[providers.{name}]\nkind = \"gemini\"\nbase_url = \"{url}\"\napi_key = \"k\"\n"
        ),
    }
}

fn model_of(kind: &str) -> &'static str {
    match kind {
        "anthropic" => "claude-sonnet-4-5",
        "gemini" => "gemini-2.5-flash",
        _ => "gpt-4.1",
    }
}

/// A request of client API `api` for `route`, asking for a tool so tool-call paths run.
fn request(api: &str, route: &str, stream: bool) -> (String, Value) {
    match api {
        "chat" => (
            "/v1/chat/completions".into(),
            json!({"model": route, "stream": stream, "messages": [{"role": "user", "content": "weather in Paris?"}],
                   "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]}),
        ),
        "messages" => (
            "/v1/messages".into(),
            json!({"model": route, "max_tokens": 200, "stream": stream, "messages": [{"role": "user", "content": "weather in Paris?"}],
                   "tools": [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]}),
        ),
        "responses" => (
            "/v1/responses".into(),
            json!({"model": route, "stream": stream, "store": false, "input": "weather in Paris?",
                   "tools": [{"type": "function", "name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}),
        ),
        _ => (
            format!(
                "/v1beta/models/{route}:{}",
                if stream {
                    "streamGenerateContent?alt=sse"
                } else {
                    "generateContent"
                }
            ),
            json!({"contents": [{"role": "user", "parts": [{"text": "weather in Paris?"}]}],
                   "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}]}]}),
        ),
    }
}

/// How a client's call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Ending {
    /// A whole answer (its terminal event, or a complete JSON body).
    Answer,
    /// The stream had started and ended with an error event in the client's format.
    ErrorEvent,
    /// An error status with a JSON error body in the client's format.
    ErrorStatus,
}

fn classify(api: &str, stream: bool, status: u16, body: &str) -> Result<Ending, String> {
    if status != 200 {
        let v: Value =
            serde_json::from_str(body).map_err(|_| format!("{status}: not JSON: {body:.300}"))?;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        if message.is_empty() {
            return Err(format!("{status}: no error message: {body:.300}"));
        }
        return Ok(Ending::ErrorStatus);
    }
    if !stream {
        let v: Value =
            serde_json::from_str(body).map_err(|_| format!("200 body not JSON: {body:.300}"))?;
        let whole = match api {
            "chat" => v["choices"].is_array(),
            "messages" => v["content"].is_array(),
            "responses" => v["output"].is_array(),
            _ => v["candidates"].is_array(),
        };
        return if whole {
            Ok(Ending::Answer)
        } else {
            Err(format!("200 body not an answer: {body:.300}"))
        };
    }
    let error_event = match api {
        "chat" | "gemini" => body.contains("data: {\"error\""),
        "messages" => body.contains("event: error"),
        _ => body.contains("\"type\":\"error\"") || body.contains("response.failed"),
    };
    if error_event {
        return Ok(Ending::ErrorEvent);
    }
    let terminal = match api {
        "chat" => body.contains("data: [DONE]"),
        "messages" => body.contains("event: message_stop"),
        "responses" => body.contains("response.completed"),
        // Gemini has no sentinel: its last chunk carries the finish reason.
        _ => body.contains("\"finishReason\""),
    };
    if terminal {
        Ok(Ending::Answer)
    } else {
        Err(format!("stream neither complete nor failed: {:.300}", body))
    }
}

fn peak_rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_api_through_every_provider_kind_survives_a_hostile_provider() {
    let start_sim = || async {
        ballast_sim::start(SocketAddr::from(([127, 0, 0, 1], 0)), SimConfig::default())
            .await
            .unwrap()
    };
    let healthy = start_sim().await;
    let mut toml = String::from(
        "[limits]\nmax_event_bytes = \"256KiB\"\nmax_first_token_bytes = \"512KiB\"\nmax_answer_bytes = \"1MiB\"\n\
         [policy]\nretries = 0\nretry_budget_ratio = 1.0\nretry_budget_min_per_second = 1000.0\nfirst_token_timeout = \"2s\"\nresponse_timeout = \"2s\"\nidle_timeout = \"1s\"\ndeadline = \"10s\"\n",
    );
    toml.push_str(&provider_toml("healthy", "openai", &healthy.base_url()));
    toml.push_str(
        "[routes.healthy]\ntargets = [\"healthy/gpt-4.1\"]\n[routes.healthy.policy]\ndeadline = \"60s\"\nfirst_token_timeout = \"30s\"\nresponse_timeout = \"30s\"\nidle_timeout = \"30s\"\n",
    );
    let mut sims: Vec<SimHandle> = Vec::new();
    let mut routes = Vec::new();
    for (mode, fault) in modes() {
        for kind in KINDS {
            let sim = start_sim().await;
            sim.set_faults(faults(json!({ "hostile": fault })));
            let name = format!("{mode}-{kind}");
            toml.push_str(&provider_toml(&name, kind, &sim.base_url()));
            toml.push_str(&format!(
                "[routes.{name}]\ntargets = [\"{name}/{}\", \"healthy/gpt-4.1-mini\"]\n",
                model_of(kind)
            ));
            sims.push(sim);
            routes.push((mode, kind, name));
        }
    }
    let gw = gateway(&toml).await;
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();

    // A healthy stream in flight for the whole attack.
    let beside = {
        let http = http.clone();
        let url = format!("{}/v1/chat/completions", gw.url);
        tokio::spawn(async move {
            let mut ok = 0;
            for i in 0..20 {
                let resp = http
                    .post(&url)
                    .json(&json!({"model": "healthy", "stream": i % 2 == 0, "messages": [{"role": "user", "content": "hi"}]}))
                    .send()
                    .await
                    .unwrap();
                let status = resp.status();
                let body = resp.text().await.unwrap();
                if status == 200 && !body.contains("\"error\"") {
                    ok += 1;
                } else {
                    eprintln!("healthy request {i} failed: {status} {body:.500}");
                }
            }
            ok
        })
    };

    let mut calls = Vec::new();
    for (mode, kind, route) in &routes {
        for api in ["chat", "messages", "responses", "gemini"] {
            for stream in [false, true] {
                let (path, body) = request(api, route, stream);
                let http = http.clone();
                let url = format!("{}{path}", gw.url);
                let (mode, kind) = (*mode, *kind);
                calls.push(tokio::spawn(async move {
                    let result = http.post(url).json(&body).send().await;
                    let outcome = match result {
                        Ok(resp) => {
                            let status = resp.status().as_u16();
                            let fallback = resp
                                .headers()
                                .get("x-ballast-target")
                                .is_some_and(|t| t.to_str().unwrap_or("").starts_with("healthy/"));
                            match resp.bytes().await {
                                Ok(b) => {
                                    let text = String::from_utf8_lossy(&b);
                                    if std::env::var_os("HOSTILE_DEBUG").is_some() {
                                        eprintln!(
                                            "{mode} {kind} {api} stream={stream} {status} fallback={fallback}: {text:.400}"
                                        );
                                    }
                                    classify(api, stream, status, &text).map(|e| (e, fallback))
                                }
                                Err(e) => Err(format!("body read failed: {e}")),
                            }
                        }
                        Err(e) => Err(format!("request failed: {e}")),
                    };
                    (mode, kind, api, stream, outcome)
                }));
            }
        }
    }
    let mut table: BTreeMap<(&str, Ending, bool), u32> = BTreeMap::new();
    let mut failures = Vec::new();
    for c in calls {
        let (mode, kind, api, stream, outcome) = c.await.unwrap();
        match outcome {
            Ok((ending, fallback)) => *table.entry((mode, ending, fallback)).or_default() += 1,
            Err(e) => failures.push(format!(
                "{mode} via {kind}, {api} client, stream={stream}: {e}"
            )),
        }
    }
    for ((mode, ending, fallback), n) in &table {
        eprintln!(
            "{mode:16} {ending:?}{} × {n}",
            if *fallback { " (fallback)" } else { "" }
        );
    }
    assert!(
        failures.is_empty(),
        "{} unclean endings:\n{}",
        failures.len(),
        failures.join("\n")
    );
    assert_eq!(
        beside.await.unwrap(),
        20,
        "a healthy request beside the attack failed"
    );
    // Failures before the first token fall over, and streams that fail after it are continued on
    // the healthy target (their headers still name the first): the modes that never produce a usable
    // answer must mostly end as whole answers, not errors.
    for mode in ["no_terminator", "endless_headers", "huge_headers"] {
        let fallbacks = [true, false]
            .iter()
            .map(|&f| table.get(&(mode, Ending::Answer, f)).copied().unwrap_or(0))
            .sum::<u32>();
        assert!(
            fallbacks >= 24,
            "{mode}: only {fallbacks} of 32 were answered by the healthy target"
        );
    }
    let peak = peak_rss_kib();
    eprintln!(
        "peak RSS of the test process (gateway, 33 simulators, clients): {} MiB",
        peak / 1024
    );
    assert!(peak < 1024 * 1024, "peak RSS {peak} KiB");
    drop(sims);
}
