//! The resilience engine against simulator faults: failover on outages and hangs, honoured
//! `retry-after`, retries within budget, breakers that open and heal, deadlines kept, stale cache,
//! the kill switch and load shedding — asserting what clients got and what each upstream saw. Checks
//! that hang on timing (timeouts, backoff, cool-downs, deadlines) run under paused time in `paused.rs`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::AppState;
use ballast_sim::{SimConfig, SimHandle};
use common::faults;
use serde_json::{Value, json};
use tokio::time::Instant;

struct Setup {
    primary: SimHandle,
    backup: SimHandle,
    url: String,
    state: Arc<AppState>,
    http: reqwest::Client,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

async fn sim_with(seed: u64) -> SimHandle {
    ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            seed,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap()
}

/// A gateway with route `chat` = primary then backup (OpenAI format), `solo` = primary only, and
/// `policy` as the `[policy]` table's body.
async fn setup(policy: &str, route_extra: &str, server: &str) -> Setup {
    let primary = sim_with(1).await;
    let backup = sim_with(2).await;
    let toml = format!(
        r#"
        [server]
        {server}
        [admin]
        key = "admin-key"
        [policy]
        {policy}
        [providers.primary]
        kind = "openai"
        base_url = "{p}/v1"
        api_key = "k"
        [providers.backup]
        kind = "openai"
        base_url = "{b}/v1"
        api_key = "k"
        [routes.chat]
        targets = ["primary/gpt-4.1", "backup/gpt-4.1-mini"]
        {route_extra}
        [routes.solo]
        targets = ["primary/gpt-4.1"]
        "#,
        p = primary.base_url(),
        b = backup.base_url(),
    );
    let config = Config::from_toml(&toml, &MapEnv::new(&[])).unwrap();
    let state = Arc::new(AppState::with_seed(config, 7).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_server::serve(listener, state.clone(), async {
        let _ = rx.await;
    }));
    Setup {
        primary,
        backup,
        url,
        state,
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap(),
        _shutdown: tx,
    }
}

fn chat(route: &str, text: &str, stream: bool) -> Value {
    json!({"model": route, "stream": stream, "messages": [{"role": "user", "content": text}]})
}

impl Setup {
    async fn send(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(format!("{}/v1/chat/completions", self.url))
            .json(body)
            .send()
            .await
            .unwrap()
    }

    async fn admin(&self, path: &str, body: Option<Value>) -> Value {
        let req = match body {
            Some(b) => self.http.post(format!("{}{path}", self.url)).json(&b),
            None => self.http.get(format!("{}{path}", self.url)),
        };
        let resp = req.bearer_auth("admin-key").send().await.unwrap();
        assert_eq!(resp.status(), 200, "{path}");
        resp.json().await.unwrap()
    }

    async fn breaker_state(&self, target: &str) -> String {
        let v = self.admin("/admin/targets", None).await;
        let t = v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == target)
            .unwrap();
        t["breaker"]["state"].as_str().unwrap().to_owned()
    }

    fn upstream_requests(&self, sim: &SimHandle) -> u64 {
        sim.stats().total_requests
    }
}

#[tokio::test]
async fn primary_down_every_request_succeeds_from_the_fallback_and_the_breaker_opens() {
    let s = setup("", "", "").await;
    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    for i in 0..40 {
        let resp = s
            .send(&chat("chat", &format!("hello {i}"), i % 2 == 0))
            .await;
        assert_eq!(resp.status(), 200, "request {i}");
        assert_eq!(resp.headers()["x-ballast-target"], "backup/gpt-4.1-mini");
        let body = resp.text().await.unwrap();
        assert!(!body.contains("\"error\""), "{body}");
    }
    assert_eq!(s.breaker_state("primary/gpt-4.1").await, "open");
    // Once open, the dead primary is skipped at once: one attempt, straight to the backup.
    let resp = s.send(&chat("chat", "after", false)).await;
    assert_eq!(resp.headers()["x-ballast-attempts"], "1");
    assert_eq!(resp.headers()["x-ballast-fallback"], "true");
}

#[tokio::test]
async fn sixteen_percent_errors_every_request_succeeds_within_the_retry_budget() {
    // Short backoffs keep the test quick; the budget, not the backoff, is under test.
    let s = setup("backoff_base = \"2ms\"\nbackoff_cap = \"10ms\"", "", "").await;
    s.primary
        .set_faults(faults(json!({"error": {"status": 503, "rate": 0.16}})));
    let n = 300u64;
    for i in 0..n {
        let resp = s.send(&chat("chat", &format!("q{i}"), false)).await;
        if resp.status() != 200 {
            let snap = s.admin("/admin/targets", None).await;
            panic!(
                "request {i}: {} {}\nprimary {:?}\nbackup {:?}\n{snap:#}",
                resp.status(),
                resp.text().await.unwrap(),
                s.primary.stats(),
                s.backup.stats()
            );
        }
    }
    let upstream = s.upstream_requests(&s.primary) + s.upstream_requests(&s.backup);
    let per_request = upstream as f64 / n as f64;
    eprintln!(
        "16% errors: {upstream} upstream attempts for {n} requests ({per_request:.3} per request)"
    );
    let errors = s.primary.stats().by_outcome.error;
    eprintln!(
        "  the primary failed {errors} of its {} attempts",
        s.upstream_requests(&s.primary)
    );
    // Extra attempts stay within the budget: 20% of first attempts plus the floor (10/s × 10 s).
    assert!(
        upstream - n <= n / 5 + 100,
        "{upstream} attempts for {n} requests"
    );
    assert_eq!(
        s.breaker_state("primary/gpt-4.1").await,
        "closed",
        "16% is below the breaker's threshold"
    );
}

#[tokio::test]
async fn full_outage_attempts_per_request_vs_a_naive_retry_loop() {
    // Through Ballast: a route with only the dead primary (so every attempt is counted by it).
    let s = setup(
        r#"[policy.breaker]
        cooldown = "60s""#,
        "",
        "",
    )
    .await;
    s.primary
        .set_faults(faults(json!({"error": {"status": 529}})));
    let n = 200u64;
    for i in 0..n {
        let resp = s.send(&chat("solo", &format!("q{i}"), false)).await;
        assert!(resp.status().is_server_error());
    }
    let ballast = s.upstream_requests(&s.primary) as f64 / n as f64;
    // A naive client: 1 try + 5 retries with a sleep (the sleep is what makes it slow, not what it
    // sends; the count is the same with any sleep, so it is shortened here).
    let naive_sim = sim_with(3).await;
    naive_sim.set_faults(faults(json!({"error": {"status": 529}})));
    let naive_n = 20u64;
    for i in 0..naive_n {
        for _ in 0..6 {
            let r = s
                .http
                .post(format!("{}/v1/chat/completions", naive_sim.base_url()))
                .json(&chat("gpt-4.1", &format!("q{i}"), false))
                .send()
                .await
                .unwrap();
            if r.status().is_success() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let naive = naive_sim.stats().total_requests as f64 / naive_n as f64;
    eprintln!(
        "full outage: Ballast sent {ballast:.3} upstream attempts per client request; a naive 5-retry loop sent {naive:.1}"
    );
    assert!(ballast < 1.3, "{ballast}");
    assert!((naive - 6.0).abs() < f64::EPSILON);
    assert_eq!(s.breaker_state("primary/gpt-4.1").await, "open");
}

#[tokio::test]
async fn a_stale_answer_is_served_when_every_target_is_down() {
    let s = setup("", "[routes.chat.policy]\ncache = \"stale-on-error\"", "").await;
    let body = chat("chat", "what is the capital of France?", false);
    let first: Value = s.send(&body).await.json().await.unwrap();
    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    s.backup.set_faults(faults(json!({"down": {"rate": 1.0}})));
    let resp = s.send(&body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-cache"], "stale");
    let again: Value = resp.json().await.unwrap();
    assert_eq!(again, first);
    // As a stream too.
    let resp = s
        .send(&chat("chat", "what is the capital of France?", true))
        .await;
    assert_eq!(resp.headers()["x-ballast-cache"], "stale");
    let text = resp.text().await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    // A request never seen before still fails, clearly.
    let resp = s.send(&chat("chat", "something new", false)).await;
    assert_eq!(resp.status(), 503);
}

#[tokio::test]
async fn a_fresh_cache_hit_never_reaches_a_provider() {
    let s = setup("", "[routes.chat.policy]\ncache = \"on\"", "").await;
    let body = chat("chat", "cache me", false);
    let a = s.send(&body).await;
    assert_eq!(a.headers()["x-ballast-cache"], "miss");
    let a: Value = a.json().await.unwrap();
    let b = s.send(&body).await;
    assert_eq!(b.headers()["x-ballast-cache"], "hit");
    assert_eq!(b.json::<Value>().await.unwrap(), a);
    assert_eq!(s.upstream_requests(&s.primary), 1);
}

#[tokio::test]
async fn the_kill_switch_and_manual_breaker_control() {
    let s = setup("", "", "").await;
    // Without the admin key: refused.
    let resp = s
        .http
        .get(format!("{}/admin/targets", s.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);

    s.admin("/admin/providers/primary/disable", Some(json!({})))
        .await;
    let resp = s.send(&chat("chat", "x", false)).await;
    assert_eq!(resp.headers()["x-ballast-target"], "backup/gpt-4.1-mini");
    assert_eq!(s.upstream_requests(&s.primary), 0);
    s.admin("/admin/providers/primary/enable", Some(json!({})))
        .await;

    let v = s
        .admin(
            "/admin/targets/open",
            Some(json!({"target": "primary/gpt-4.1"})),
        )
        .await;
    assert_eq!(v["breaker"]["forced"], "open");
    let resp = s.send(&chat("chat", "x", false)).await;
    assert_eq!(resp.headers()["x-ballast-target"], "backup/gpt-4.1-mini");
    s.admin(
        "/admin/targets/auto",
        Some(json!({"target": "primary/gpt-4.1"})),
    )
    .await;
    let resp = s.send(&chat("chat", "x", false)).await;
    assert_eq!(resp.headers()["x-ballast-target"], "primary/gpt-4.1");

    // BALLAST_DISABLE at start does the same.
    assert!(
        s.state
            .disable("backup, nope/x")
            .contains(&"nope/x".to_owned())
    );
    s.primary.set_faults(faults(json!({"down": {"rate": 1.0}})));
    let resp = s.send(&chat("chat", "x", false)).await;
    assert_eq!(resp.status(), 503);
    let v: Value = resp.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("backup/gpt-4.1-mini (disabled by an operator)"),
        "{v}"
    );
}

#[tokio::test]
async fn running_out_of_time_never_counts_against_a_healthy_fallback() {
    let s = setup(r#"deadline = "400ms""#, "", "").await;
    s.primary.set_faults(faults(json!({"hang": {"rate": 1.0}})));
    for _ in 0..6 {
        let resp = s.send(&chat("chat", "x", false)).await;
        assert_eq!(resp.status(), 504);
        let v: Value = resp.json().await.unwrap();
        let m = v["error"]["message"].as_str().unwrap();
        assert!(
            m.contains("primary/gpt-4.1 (deadline exceeded after 400ms)"),
            "{m}"
        );
        assert!(
            m.contains("backup/gpt-4.1-mini (not tried: no time left before the deadline)"),
            "{m}"
        );
    }
    assert_eq!(s.upstream_requests(&s.backup), 0);
    assert_eq!(s.breaker_state("backup/gpt-4.1-mini").await, "closed");
}

#[tokio::test]
async fn stale_on_error_also_covers_rate_limits() {
    let s = setup(
        "retries = 0",
        "[routes.solo.policy]\ncache = \"stale-on-error\"",
        "",
    )
    .await;
    let body = chat("solo", "cache me", false);
    assert_eq!(s.send(&body).await.status(), 200);
    s.primary
        .set_faults(faults(json!({"rate_limit": {"retry_after_secs": 30}})));
    let resp = s.send(&body).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["x-ballast-cache"], "stale");
}

/// A hand-rolled OpenAI-compatible upstream that streams `events` and then either closes the
/// connection or keeps it open.
async fn raw_upstream(events: &'static str, linger: bool) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n) = sock.read(&mut buf).await else {
                        return;
                    };
                    if n == 0 {
                        return;
                    }
                    got.extend_from_slice(&buf[..n]);
                }
                let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\nconnection: close\r\n\r\n";
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(events.as_bytes()).await;
                if linger {
                    tokio::time::sleep(Duration::from_secs(10)).await;
                }
            });
        }
    });
    url
}

async fn raw_gateway(upstream: &str) -> (String, tokio::sync::oneshot::Sender<()>) {
    let toml = format!(
        r#"
        [policy]
        idle_timeout = "5s"
        [providers.raw]
        kind = "openai-compatible"
        base_url = "{upstream}/v1"
        [routes.raw]
        targets = ["raw/m"]
        "#
    );
    let config = Config::from_toml(&toml, &MapEnv::new(&[])).unwrap();
    let state = Arc::new(AppState::with_seed(config, 1).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    (url, tx)
}

const CHUNKS: &str = "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"Hi\"},\"finish_reason\":null}]}\n\n\
data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n";

#[tokio::test]
async fn a_stream_that_ends_cleanly_without_its_sentinel_is_finalised() {
    let upstream = raw_upstream(CHUNKS, false).await;
    let (gw, _stop) = raw_gateway(&upstream).await;
    let text = reqwest::Client::new()
        .post(format!("{gw}/v1/chat/completions"))
        .json(&chat("raw", "x", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("\"error\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}

#[tokio::test]
async fn a_stream_ends_at_its_sentinel_even_if_the_provider_lingers() {
    static EVENTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let events = EVENTS.get_or_init(|| format!("{CHUNKS}data: [DONE]\n\n"));
    let upstream = raw_upstream(events, true).await;
    let (gw, _stop) = raw_gateway(&upstream).await;
    let t0 = Instant::now();
    let text = reqwest::Client::new()
        .post(format!("{gw}/v1/chat/completions"))
        .json(&chat("raw", "x", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "waited for the provider to hang up"
    );
    assert!(!text.contains("\"error\""), "{text}");
    assert_eq!(text.matches("[DONE]").count(), 1, "{text}");
}

#[tokio::test]
async fn one_malformed_event_is_skipped_not_fatal() {
    static EVENTS: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let events = EVENTS.get_or_init(|| {
        let (first, rest) = CHUNKS.split_at(CHUNKS.find("\n\n").unwrap() + 2);
        format!("{first}data: {{\"broken\": tru\n\n{rest}data: [DONE]\n\n")
    });
    let upstream = raw_upstream(events, false).await;
    let (gw, _stop) = raw_gateway(&upstream).await;
    let text = reqwest::Client::new()
        .post(format!("{gw}/v1/chat/completions"))
        .json(&chat("raw", "x", true))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        !text.contains("broken"),
        "the malformed event reached the client: {text}"
    );
    assert!(!text.contains("\"error\""), "{text}");
    assert!(text.contains("\"finish_reason\":\"stop\""), "{text}");
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
}
