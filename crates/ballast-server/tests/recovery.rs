//! Recovery after an outage, measured under Tokio's paused time on a scripted upstream: open-loop
//! load on a route `primary → backup` at the default policy, the primary answering 529 for a
//! while, then healthy again. Measured: the time from the primary's recovery to its first served
//! client request and to its serving all of the route's traffic again, the upstream attempts per
//! client request during the outage, and the probes the dead primary received; and that a primary
//! that comes back still failing 16% of its attempts stays ejected.
//!
//! `cargo test -p ballast-server --test recovery -- --nocapture` prints the figures.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::{
    AppState, Background, BodyStream, SendFuture, Transport, UpstreamRequest, UpstreamResponse,
};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tokio::time::Instant;
use tower::ServiceExt;

/// Client requests a second.
const RATE: f64 = 10.0;
/// How long a healthy target takes to answer (a whole answer, not streamed).
const ANSWER_LATENCY: Duration = Duration::from_millis(1_000);
/// How long the overloaded primary takes to answer 529.
const FAILURE_LATENCY: Duration = Duration::from_millis(100);
/// Healthy traffic before the outage (the detectors learn their baselines).
const WARM_UP: Duration = Duration::from_secs(60);
/// Load after the recovery.
const AFTER: Duration = Duration::from_secs(120);
/// What recovery must take at most, to the first served request and to the whole share.
const RECOVERY_LIMIT: Duration = Duration::from_secs(30);

/// One upstream call as the scripted upstream saw it.
struct Call {
    at: Duration,
    primary: bool,
    probe: bool,
}

/// The upstream: `primary.test` answers 529 between `down.0` and `down.1` (from `t0`), and after
/// that to a share `failing_after` of its calls; everything else answers after [`ANSWER_LATENCY`].
struct Upstream {
    t0: Instant,
    down: (Duration, Duration),
    failing_after: f64,
    rng: Mutex<fastrand::Rng>,
    calls: Mutex<Vec<Call>>,
}

fn answer() -> Bytes {
    Bytes::from(
        serde_json::json!({
            "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "pong"},
                "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}
        })
        .to_string(),
    )
}

fn response(status: u16, body: Bytes) -> UpstreamResponse {
    let mut headers = HeaderMap::new();
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body: BodyStream = Box::pin(futures_util::stream::once(async move { Ok(body) }));
    UpstreamResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body,
    }
}

impl Transport for Upstream {
    fn send(&self, req: UpstreamRequest) -> SendFuture {
        let at = self.t0.elapsed();
        let primary = req.url.host_str() == Some("primary.test");
        let probe = String::from_utf8_lossy(&req.body).contains("single word: pong");
        self.calls.lock().unwrap().push(Call { at, primary, probe });
        let down = primary
            && at >= self.down.0
            && (at < self.down.1 || self.rng.lock().unwrap().f64() < self.failing_after);
        Box::pin(async move {
            if down {
                tokio::time::sleep(FAILURE_LATENCY).await;
                return Ok(response(
                    529,
                    Bytes::from_static(
                        br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#,
                    ),
                ));
            }
            tokio::time::sleep(ANSWER_LATENCY).await;
            Ok(response(200, answer()))
        })
    }
}

/// One client request: when it started and ended (from `t0`), and whether the primary answered it.
struct Sent {
    start: Duration,
    end: Duration,
    by_primary: bool,
    ok: bool,
    attempts: u32,
}

/// What one run measured.
#[derive(Debug)]
struct Figures {
    outage: Duration,
    /// Recovery to the end of the first client request the primary answered.
    first_served: Option<Duration>,
    /// Recovery to the start of the run of requests, lasting to the end, that the primary answered.
    full_share: Option<Duration>,
    /// Upstream attempts per client request started during the outage.
    attempts_per_request: f64,
    /// Probes the primary received during the outage.
    probes_during_outage: usize,
    /// Client requests that did not get an answer.
    failed: usize,
    /// The primary's share of the requests of the last minute.
    last_minute_share: f64,
    /// Open incidents on the primary at the end.
    open_at_end: Vec<String>,
}

async fn measure(outage: Duration, extra: &str) -> Figures {
    measure_with(outage, extra, 0.0).await
}

/// `failing_after`: the share of its calls the primary still fails after the outage.
async fn measure_with(outage: Duration, extra: &str, failing_after: f64) -> Figures {
    let toml = format!(
        r#"
        [admin]
        key = "admin-key"
        [providers.primary]
        kind = "openai"
        base_url = "http://primary.test/v1"
        api_key = "k"
        [providers.backup]
        kind = "openai"
        base_url = "http://backup.test/v1"
        api_key = "k"
        [routes.chat]
        targets = ["primary/gpt-4.1", "backup/gpt-4.1-mini"]
        {extra}
        "#
    );
    let config = Config::from_toml(&toml, &MapEnv::new(&[])).unwrap();
    let t0 = Instant::now();
    let down = (WARM_UP, WARM_UP + outage);
    let upstream = Arc::new(Upstream {
        t0,
        down,
        failing_after,
        rng: Mutex::new(fastrand::Rng::with_seed(16)),
        calls: Mutex::new(Vec::new()),
    });
    let state = Arc::new(AppState::with_transport(config, 7, upstream.clone()).unwrap());
    let background = Background::start(&state);
    let body =
        serde_json::json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]})
            .to_string();
    let mut tasks = tokio::task::JoinSet::new();
    let every = Duration::from_secs_f64(1.0 / RATE);
    let mut next = t0;
    while next.duration_since(t0) < down.1 + AFTER {
        tokio::time::sleep_until(next).await;
        next += every;
        let (state, body) = (state.clone(), body.clone());
        tasks.spawn(async move {
            let start = t0.elapsed();
            let req = Request::post("/v1/chat/completions")
                .header("content-type", "application/json")
                .body(Body::from(body))
                .unwrap();
            let resp = ballast_server::app(state).oneshot(req).await.unwrap();
            let ok = resp.status() == StatusCode::OK;
            let headers = resp.headers().clone();
            let header = |name: &str| {
                headers
                    .get(name)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            let by_primary = header("x-ballast-target") == "primary/gpt-4.1";
            let attempts = header("x-ballast-attempts").parse().unwrap_or(0);
            let _ = resp.into_body().collect().await;
            Sent {
                start,
                end: t0.elapsed(),
                by_primary,
                ok,
                attempts,
            }
        });
    }
    let mut sent: Vec<Sent> = tasks.join_all().await;
    let req = Request::get("/admin/incidents")
        .header("authorization", "Bearer admin-key")
        .body(Body::empty())
        .unwrap();
    let resp = ballast_server::app(state.clone())
        .oneshot(req)
        .await
        .unwrap();
    let incidents: serde_json::Value =
        serde_json::from_slice(&resp.into_body().collect().await.unwrap().to_bytes()).unwrap();
    let open_at_end = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|i| i["state"] == "open" && i["target"] == "primary/gpt-4.1")
        .map(|i| i["signal"].as_str().unwrap().to_owned())
        .collect();
    background.shutdown().await;
    sent.sort_by_key(|s| s.start);

    let recovered = down.1;
    let first_served = sent
        .iter()
        .filter(|s| s.ok && s.by_primary && s.start >= recovered)
        .map(|s| s.end - recovered)
        .min();
    let after: Vec<&Sent> = sent.iter().filter(|s| s.start >= recovered).collect();
    let full_share = match after.iter().rposition(|s| !(s.ok && s.by_primary)) {
        None => Some(Duration::ZERO),
        Some(i) => after.get(i + 1).map(|s| s.start - recovered),
    };
    let during: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.start >= down.0 && s.start < down.1)
        .collect();
    let attempts: u32 = during.iter().map(|s| s.attempts).sum();
    let end = down.1 + AFTER;
    let last_minute: Vec<&Sent> = sent
        .iter()
        .filter(|s| s.start + Duration::from_secs(60) >= end)
        .collect();
    let last_minute_share =
        last_minute.iter().filter(|s| s.by_primary).count() as f64 / last_minute.len() as f64;
    let calls = upstream.calls.lock().unwrap();
    let probes_during_outage = calls
        .iter()
        .filter(|c| c.primary && c.probe && c.at >= down.0 && c.at < down.1)
        .count();
    Figures {
        outage,
        first_served,
        full_share,
        attempts_per_request: f64::from(attempts) / during.len() as f64,
        probes_during_outage,
        failed: sent.iter().filter(|s| !s.ok).count(),
        last_minute_share,
        open_at_end,
    }
}

fn report(label: &str, f: &Figures) {
    let secs = |d: Option<Duration>| {
        d.map_or_else(
            || "never".to_owned(),
            |d| format!("{:.1} s", d.as_secs_f64()),
        )
    };
    eprintln!(
        "{label}: outage {:>3} s: first served {:>7} after recovery, whole share {:>7}; \
         {:.4} upstream attempts per request during the outage; {} probes to the dead primary \
         ({:.2}/min); {} requests failed",
        f.outage.as_secs(),
        secs(f.first_served),
        secs(f.full_share),
        f.attempts_per_request,
        f.probes_during_outage,
        f.probes_during_outage as f64 * 60.0 / f.outage.as_secs_f64(),
        f.failed,
    );
}

/// Upstream attempts per client request during each outage before recovery was reworked: what the
/// breaker's cool-downs allowed then, and what they must still hold to.
const ATTEMPTS_BEFORE: [(u64, f64); 3] = [(60, 1.0334), (80, 1.0264), (300, 1.0081)];

/// At the defaults, a primary back from an outage of one minute, of 80 s (it recovers just after a
/// failed half-open trial, when the next is a whole 60 s cool-down away) or of five minutes serves
/// its first client request, and all of its traffic, within 30 s. During the outage a client
/// request costs no more upstream attempts than before, every request is answered (by the backup),
/// and the dead primary gets a probe every 5 s at most.
#[tokio::test(start_paused = true)]
async fn a_recovered_primary_serves_again_within_30_s_at_the_defaults() {
    let mut runs = Vec::new();
    for (outage, _) in ATTEMPTS_BEFORE {
        let f = measure(Duration::from_secs(outage), "").await;
        report("defaults", &f);
        runs.push(f);
    }
    for (f, (_, attempts_before)) in runs.iter().zip(ATTEMPTS_BEFORE) {
        assert_eq!(f.failed, 0, "{f:?}");
        assert!(
            f.first_served.is_some_and(|d| d <= RECOVERY_LIMIT),
            "first served request: {f:?}"
        );
        assert!(
            f.full_share.is_some_and(|d| d <= RECOVERY_LIMIT),
            "whole share: {f:?}"
        );
        assert!(f.attempts_per_request <= attempts_before, "{f:?}");
        assert!(
            f.probes_during_outage as u64 <= f.outage.as_secs() / 5 + 2,
            "{f:?}"
        );
    }
}

/// Without probes (as the chaos scenarios run) the first trial waits for the breaker's cool-down;
/// once the primary serves again, its trials speed up while answered and it has all of its traffic
/// back within 15 s.
#[tokio::test(start_paused = true)]
async fn without_probes_the_share_follows_the_first_answer_within_15_s() {
    for (outage, attempts_before) in ATTEMPTS_BEFORE {
        let f = measure(Duration::from_secs(outage), "[probes]\ninterval = \"0s\"").await;
        report("no probes", &f);
        assert_eq!(f.failed, 0, "{f:?}");
        assert!(f.attempts_per_request <= attempts_before, "{f:?}");
        let (Some(first), Some(all)) = (f.first_served, f.full_share) else {
            panic!("never recovered: {f:?}");
        };
        assert!(all <= first + Duration::from_secs(15), "{f:?}");
    }
}

/// A primary that comes back still failing 16% of its attempts stays flagged: its availability
/// incident stays open and it keeps only a small share of the traffic.
#[tokio::test(start_paused = true)]
async fn a_primary_back_but_failing_a_sixth_of_its_attempts_stays_ejected() {
    let f = measure_with(Duration::from_secs(60), "", 0.16).await;
    report("16% failing after", &f);
    eprintln!(
        "  the primary served {:.1}% of the last minute's requests; open incidents: {:?}",
        100.0 * f.last_minute_share,
        f.open_at_end
    );
    assert!(f.open_at_end.iter().any(|s| s == "availability"), "{f:?}");
    assert!(f.last_minute_share < 0.5, "{f:?}");
}
