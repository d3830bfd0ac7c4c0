//! Provider capacity against the simulator's real rate-limit headers over loopback HTTP: each
//! answer's headers fed to `Capacity::observe` as the request path feeds them. OpenAI answers
//! report requests and tokens, Anthropic's four kinds, Gemini's nothing; a limit lowered mid-run
//! (`/_sim/limits`) is one `LimitChanged` per kind once three answers agree; an enforced limit
//! spent shows as the whole limit used, from the 429's own headers.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use ballast_core::ratelimit::{HeadroomConfig, Kind};
use ballast_server::capacity::{Capacity, CapacityEvent, LimitSnapshot};
use ballast_sim::{Limits, SimConfig, SimHandle};
use serde_json::{Value, json};
use tokio::time::Instant;

/// A day-long window in the simulator: nothing refills during a test, so counts are exact.
const DAY_MS: u64 = 86_400_000;

const OPENAI: usize = 0;
const ANTHROPIC: usize = 1;
const GEMINI: usize = 2;

fn labels() -> Vec<String> {
    [
        "openai/gpt-4.1",
        "anthropic/claude-sonnet-4-5",
        "gemini/gemini-2.5-flash",
    ]
    .map(str::to_owned)
    .to_vec()
}

async fn sim(limits: Limits) -> SimHandle {
    ballast_sim::start(
        "127.0.0.1:0".parse().unwrap(),
        SimConfig {
            limits,
            ..SimConfig::default()
        },
    )
    .await
    .unwrap()
}

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// One answer from `target`'s API, its headers observed; returns its status and the events.
async fn ask(
    client: &reqwest::Client,
    sim: &SimHandle,
    capacity: &Capacity,
    target: usize,
) -> (u16, Vec<CapacityEvent>) {
    let base = sim.base_url();
    let request = match target {
        OPENAI => client.post(format!("{base}/v1/chat/completions")).json(
            &json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello!"}]}),
        ),
        ANTHROPIC => client
            .post(format!("{base}/v1/messages"))
            .header("anthropic-version", "2023-06-01")
            .json(&json!({
                "model": "claude-sonnet-4-5",
                "max_tokens": 100,
                "messages": [{"role": "user", "content": "Hello!"}]
            })),
        _ => client
            .post(format!(
                "{base}/v1beta/models/gemini-2.5-flash:generateContent"
            ))
            .json(&json!({"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]})),
    };
    let response = request.send().await.unwrap();
    let events = capacity.observe(target, response.headers(), Instant::now());
    let status = response.status().as_u16();
    let _: Value = response.json().await.unwrap();
    (status, events)
}

fn limit<'a>(
    capacity: &'a [ballast_server::capacity::TargetCapacity],
    target: usize,
    kind: &str,
) -> &'a LimitSnapshot {
    capacity[target]
        .limits
        .iter()
        .find(|l| l.kind == kind)
        .unwrap_or_else(|| panic!("no {kind} on target {target}: {capacity:?}"))
}

#[tokio::test]
async fn every_api_reports_its_own_limits() {
    let sim = sim(Limits {
        requests: 100,
        tokens: 50_000,
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let capacity = Capacity::new(&labels(), HeadroomConfig::default());
    let client = client();
    for target in [OPENAI, ANTHROPIC, GEMINI] {
        for _ in 0..5 {
            let (status, events) = ask(&client, &sim, &capacity, target).await;
            assert_eq!(status, 200);
            assert!(events.is_empty(), "{events:?}");
        }
    }
    let snap = capacity.snapshot(Instant::now());
    let kinds = |t: usize| snap[t].limits.iter().map(|l| l.kind).collect::<Vec<_>>();
    assert_eq!(kinds(OPENAI), ["requests", "tokens"]);
    assert_eq!(
        kinds(ANTHROPIC),
        ["requests", "tokens", "input_tokens", "output_tokens"]
    );
    assert!(kinds(GEMINI).is_empty());

    let requests = limit(&snap, OPENAI, "requests");
    assert_eq!((requests.limit, requests.remaining), (100, 95));
    assert!((requests.used_share - 0.05).abs() < 1e-9);
    // One request of 100 a day: 864 s to replenish each, five of them.
    let reset = requests.reset_ms.unwrap();
    assert!((4_319_000..=4_321_000).contains(&reset), "{reset}");
    let tokens = limit(&snap, OPENAI, "tokens");
    assert_eq!(tokens.limit, 50_000);
    assert!(
        tokens.remaining < 50_000 && tokens.remaining > 49_000,
        "{tokens:?}"
    );

    let requests = limit(&snap, ANTHROPIC, "requests");
    assert_eq!((requests.limit, requests.remaining), (100, 95));
    // Anthropic's reset is a time, read against the answer's `date` (whole seconds).
    let reset = requests.reset_ms.unwrap();
    assert!((4_318_000..=4_322_000).contains(&reset), "{reset}");
    let input = limit(&snap, ANTHROPIC, "input_tokens");
    assert_eq!(input.limit, 1_600_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_limit_lowered_mid_run_is_one_event_per_kind() {
    let sim = sim(Limits {
        requests: 1000,
        tokens: 100_000,
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let capacity = Capacity::new(&labels(), HeadroomConfig::default());
    let client = client();
    for _ in 0..3 {
        assert!(ask(&client, &sim, &capacity, OPENAI).await.1.is_empty());
    }
    // The provider lowers the limits without notice; remaining is not the news, the limit is.
    let set = json!({"requests": 500, "tokens": 40_000, "window_ms": DAY_MS});
    let resp = client
        .post(format!("{}/_sim/limits", sim.base_url()))
        .json(&set)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let mut events = Vec::new();
    for _ in 0..6 {
        let (status, e) = ask(&client, &sim, &capacity, OPENAI).await;
        assert_eq!(status, 200);
        events.extend(e);
    }
    assert_eq!(
        events,
        [
            CapacityEvent::LimitChanged {
                target: OPENAI,
                kind: Kind::Requests,
                old: 1000,
                new: 500
            },
            CapacityEvent::LimitChanged {
                target: OPENAI,
                kind: Kind::Tokens,
                old: 100_000,
                new: 40_000
            },
        ]
    );
    let snap = capacity.snapshot(Instant::now());
    assert_eq!(limit(&snap, OPENAI, "requests").limit, 500);
    assert_eq!(limit(&snap, OPENAI, "requests").remaining, 494);
    sim.shutdown().await;
}

#[tokio::test]
async fn a_spent_enforced_limit_is_the_whole_limit_used() {
    let sim = sim(Limits {
        requests: 4,
        window_ms: DAY_MS,
        enforce: true,
        ..Limits::default()
    })
    .await;
    let capacity = Capacity::new(&labels(), HeadroomConfig::default());
    let client = client();
    let mut statuses = Vec::new();
    for _ in 0..6 {
        statuses.push(ask(&client, &sim, &capacity, ANTHROPIC).await.0);
    }
    assert_eq!(statuses, [200, 200, 200, 200, 429, 429]);
    let snap = capacity.snapshot(Instant::now());
    let requests = limit(&snap, ANTHROPIC, "requests");
    assert_eq!((requests.limit, requests.remaining), (4, 0));
    assert_eq!(requests.used_share, 1.0);
    // No answer said anything about the other targets.
    assert!(snap[OPENAI].limits.is_empty());
    sim.shutdown().await;
}

/// Through a real gateway: every answer's rate-limit headers reach the target's capacity, which
/// `/admin/capacity` and `/metrics` show, and a limit the provider changes without notice opens a
/// `rate_limit_changed` incident naming the target, old and new.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_changed_without_notice_opens_an_incident_through_the_gateway() {
    let s = sim(Limits {
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let config = format!(
        "[admin]\nkey = \"adm\"\n[providers.openai]\nkind = \"openai\"\nbase_url = \"{}/v1\"\napi_key = \"k\"\n[routes.chat]\ntargets = [\"openai/gpt-4.1\"]\n",
        s.base_url()
    );
    let config = ballast_core::config::Config::from_toml(
        &config,
        &ballast_core::config::env::MapEnv::new(&[]),
    )
    .unwrap();
    let state = std::sync::Arc::new(ballast_server::AppState::new(config).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_server::serve(listener, state, async {
        let _ = rx.await;
    }));
    let http = client();
    let chat = || {
        http.post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
    };
    for _ in 0..4 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }
    s.set_limits(Limits {
        requests: 500,
        window_ms: DAY_MS,
        ..Limits::default()
    });
    for _ in 0..4 {
        assert_eq!(chat().await.unwrap().status(), 200);
    }
    let admin = |path: &str| {
        http.get(format!("{url}{path}"))
            .header("authorization", "Bearer adm")
            .send()
    };
    let cap: Value = admin("/admin/capacity")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = cap.to_string();
    assert!(
        text.contains("openai/gpt-4.1") && text.contains("500"),
        "{text}"
    );
    let incidents: Value = admin("/admin/incidents")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let text = incidents.to_string();
    assert!(text.contains("rate_limit_changed"), "{text}");
    let metrics = http
        .get(format!("{url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .contains("ballast_ratelimit_limit{target=\"openai/gpt-4.1\",kind=\"requests\"} 500"),
        "{metrics}"
    );
    let _ = tx.send(());
}
