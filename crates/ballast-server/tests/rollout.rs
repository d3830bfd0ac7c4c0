//! Governed configuration changes on a running gateway, over real HTTP with simulators on loopback:
//! a configuration whose new target refuses its key is refused by the live gate with the target
//! named; one that sends a share of traffic to a target failing 10% of its requests is rolled back
//! during its canary step with an incident naming the change, and no more than the canary share of
//! requests ever reached that target; a good one is promoted through every step; a request in
//! flight finishes on the version it started with; a rolled-back configuration is not taken again
//! unchanged without `force`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::time::Duration;
use tokio::time::Instant;

use ballast_sim::{SimConfig, SimHandle};
use common::{faults, gateway};
use serde_json::{Value, json};

const ADMIN: &str = "admin-key";

async fn fast_sim(require_key: Option<&str>) -> SimHandle {
    ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            ttft: Duration::ZERO,
            token_delay: Duration::ZERO,
            require_key: require_key.map(str::to_owned),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap()
}

/// A configuration with providers `good`, `other` and `bad` (one simulator each), route `chat`
/// over `targets`, and `rollout` as its `[rollout]` section.
fn config(
    good: &SimHandle,
    other: &SimHandle,
    bad: &SimHandle,
    targets: &str,
    rollout: &str,
) -> String {
    format!(
        r#"
[admin]
key = "{ADMIN}"
[probes]
interval = "0s"
[providers.good]
kind = "openai"
base_url = "{}/v1"
api_key = "k"
[providers.other]
kind = "openai"
base_url = "{}/v1"
api_key = "k"
[providers.bad]
kind = "openai"
base_url = "{}/v1"
api_key = "k"
[routes.chat]
targets = [{targets}]
[rollout]
{rollout}
"#,
        good.base_url(),
        other.base_url(),
        bad.base_url()
    )
}

fn client() -> reqwest::Client {
    reqwest::Client::new()
}

async fn admin_post(url: &str, path: &str, body: String) -> (u16, Value) {
    let r = client()
        .post(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

async fn admin_get(url: &str, path: &str) -> Value {
    client()
        .get(format!("{url}{path}"))
        .bearer_auth(ADMIN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

async fn chat(url: &str) -> u16 {
    client()
        .post(format!("{url}/v1/chat/completions"))
        .json(&json!({"model": "chat", "messages": [{"role": "user", "content": "hello there"}], "max_tokens": 16}))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .unwrap_or(0)
}

/// Sends requests from `workers` loops until `done` says so (checked every request), at most `max`
/// in all and for at most `limit`; returns how many were sent and how many succeeded.
async fn traffic(
    url: &str,
    workers: usize,
    max: usize,
    limit: Duration,
    done: impl Fn() -> bool + Send + Sync + Clone + 'static,
) -> (usize, usize) {
    let sent = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let ok = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (url, sent, ok, done) = (url.to_owned(), sent.clone(), ok.clone(), done.clone());
        tasks.push(tokio::spawn(async move {
            use std::sync::atomic::Ordering::Relaxed;
            while start.elapsed() < limit && !done() && sent.fetch_add(1, Relaxed) < max {
                if chat(&url).await == 200 {
                    ok.fetch_add(1, Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    use std::sync::atomic::Ordering::Relaxed;
    (sent.load(Relaxed).min(max), ok.load(Relaxed))
}

/// Polls the rollout status in the background; `done()` turns true once its state is one of `ends`.
fn watch_until(
    url: &str,
    ends: &'static [&'static str],
) -> (
    impl Fn() -> bool + Clone + Send + Sync + 'static,
    tokio::task::JoinHandle<Vec<(String, u64)>>,
) {
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let url = url.to_owned();
    let f = flag.clone();
    let task = tokio::spawn(async move {
        let mut seen: Vec<(String, u64)> = Vec::new();
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            let s = admin_get(&url, "/admin/rollout").await;
            let state = s["state"].as_str().unwrap_or("").to_owned();
            let step = s["step"].as_u64().unwrap_or(0);
            if seen.last() != Some(&(state.clone(), step)) {
                seen.push((state.clone(), step));
            }
            if ends.contains(&state.as_str()) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        f.store(true, std::sync::atomic::Ordering::Relaxed);
        seen
    });
    let done = move || flag.load(std::sync::atomic::Ordering::Relaxed);
    (done, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_whose_new_target_is_refused_its_key_does_not_get_past_the_gate() {
    let (good, other) = (fast_sim(None).await, fast_sim(None).await);
    let locked = fast_sim(Some("the-right-key")).await;
    let start = config(&good, &other, &locked, r#""good/gpt-4o-mini""#, "");
    let gw = gateway(&start).await;
    let next = config(&good, &other, &locked, r#""bad/gpt-4o-mini""#, "");
    let (status, body) = admin_post(&gw.url, "/admin/config", next).await;
    assert_eq!(status, 422, "{body}");
    let problems = body["error"]["problems"].to_string();
    assert!(problems.contains("bad/gpt-4o-mini"), "{body}");
    // The serving configuration is untouched.
    let s = admin_get(&gw.url, "/admin/rollout").await;
    assert_eq!(s["state"], "idle", "{s}");
    assert_eq!(chat(&gw.url).await, 200);
    assert_eq!(
        locked.stats().total_requests,
        1,
        "the gate's one probe only"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_that_sends_traffic_to_a_failing_target_is_rolled_back_during_its_canary() {
    let (good, other, bad) = (
        fast_sim(None).await,
        fast_sim(None).await,
        fast_sim(None).await,
    );
    bad.set_faults(faults(json!({"error": {"status": 500, "rate": 0.1}})));
    let start = config(&good, &other, &bad, r#""good/gpt-4o-mini""#, "");
    let gw = gateway(&start).await;
    // The change: `bad` first, `good` behind it (so clients still get answers, degraded).
    let share = 0.2;
    let next = config(
        &good,
        &other,
        &bad,
        r#""bad/gpt-4o-mini", "good/gpt-4o-mini""#,
        &format!("steps = [{{ share = {share}, hold = \"5m\" }}]"),
    );
    let (status, body) = admin_post(&gw.url, "/admin/config?probe=false", next.clone()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rollout"]["state"], "canary", "{body}");
    let started = Instant::now();
    let (done, watcher) = watch_until(&gw.url, &["rolled_back", "promoted"]);
    let (sent, ok) = traffic(&gw.url, 8, 20_000, Duration::from_secs(40), done).await;
    let seen = watcher.await.unwrap();
    let took = started.elapsed();
    let s = admin_get(&gw.url, "/admin/rollout").await;
    assert_eq!(s["state"], "rolled_back", "{s} after {sent} requests");
    assert!(s["reason"].as_str().unwrap().contains("degraded"), "{s}");
    assert!(seen.iter().all(|(st, _)| st != "promoted"), "{seen:?}");
    // Only the canary's share of requests ever reached the bad target (its requests are the canary
    // requests plus their retries on it).
    let reached = bad.stats().total_requests as f64;
    let canary = s["comparison"][0]["canary"]["requests"].as_u64().unwrap() as f64;
    assert!(
        canary <= sent as f64 * share * 1.3 + 20.0,
        "{canary} canary requests of {sent}"
    );
    assert!(
        reached <= canary * 1.3 + 5.0,
        "the bad target saw {reached} requests for {canary} canary requests"
    );
    assert!(ok * 100 >= sent * 99, "{ok} of {sent} answered");
    eprintln!(
        "rolled back after {took:?}: {sent} requests, {canary} on the canary, {reached} reached the bad target; {}",
        s["comparison"]
    );
    // After the rollback everything is served by the current version.
    let before = bad.stats().total_requests;
    for _ in 0..20 {
        assert_eq!(chat(&gw.url).await, 200);
    }
    assert_eq!(bad.stats().total_requests, before);
    // An incident names the change.
    let incidents = admin_get(&gw.url, "/admin/incidents").await;
    let incident = incidents["incidents"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["signal"] == "config_regression")
        .unwrap_or_else(|| panic!("no config_regression incident in {incidents}"));
    assert!(
        incident["target"]
            .as_str()
            .unwrap()
            .starts_with("config v2"),
        "{incident}"
    );
    // The same configuration again is refused without `force`, and taken with it.
    let (status, body) = admin_post(&gw.url, "/admin/config?probe=false", next.clone()).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("--force"),
        "{body}"
    );
    let (status, body) = admin_post(&gw.url, "/admin/config?probe=false&force=true", next).await;
    assert_eq!(status, 202, "{body}");
    // A rollout in progress takes no other change, and an operator can end it.
    let (status, _) = admin_post(&gw.url, "/admin/config?probe=false", start.clone()).await;
    assert_eq!(status, 409);
    let (status, body) = admin_post(&gw.url, "/admin/rollout/abort", String::new()).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["state"], "rolled_back", "{body}");
    assert_eq!(body["reason"], "aborted by an operator", "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_to_a_target_answering_in_the_wrong_script_is_rolled_back_on_quality() {
    let (good, other, bad) = (
        fast_sim(None).await,
        fast_sim(None).await,
        fast_sim(None).await,
    );
    bad.set_faults(faults(json!({"corrupt": {"script": "thai", "rate": 0.05}})));
    let start = config(&good, &other, &bad, r#""good/gpt-4o-mini""#, "");
    let gw = gateway(&start).await;
    let next = config(
        &good,
        &other,
        &bad,
        r#""bad/gpt-4o-mini""#,
        r#"steps = [{ share = 0.5, hold = "5m" }]"#,
    );
    let (status, body) = admin_post(&gw.url, "/admin/config?probe=false", next).await;
    assert_eq!(status, 202, "{body}");
    let (done, watcher) = watch_until(&gw.url, &["rolled_back", "promoted"]);
    let (sent, ok) = traffic(&gw.url, 8, 20_000, Duration::from_secs(60), done).await;
    watcher.await.unwrap();
    let s = admin_get(&gw.url, "/admin/rollout").await;
    assert_eq!(s["state"], "rolled_back", "{s} after {sent} requests");
    assert!(s["reason"].as_str().unwrap().contains("script"), "{s}");
    // Every request was answered: wrong-script answers are answers; the comparison caught them.
    assert_eq!(ok, sent);
    eprintln!(
        "rolled back on quality after {sent} requests, {} on the canary",
        s["comparison"][0]["canary"]["requests"]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_good_change_is_promoted_through_every_step() {
    let (good, other, bad) = (
        fast_sim(None).await,
        fast_sim(None).await,
        fast_sim(None).await,
    );
    let start = config(&good, &other, &bad, r#""good/gpt-4o-mini""#, "");
    let gw = gateway(&start).await;
    let next = config(
        &good,
        &other,
        &bad,
        r#""other/gpt-4o-mini""#,
        r#"steps = [{ share = 0.25, hold = "700ms" }, { share = 0.5, hold = "700ms" }]"#,
    );
    let (status, body) = admin_post(&gw.url, "/admin/config", next).await;
    assert_eq!(status, 202, "{body}");
    assert!(body["gate"]["ok"].as_bool().unwrap(), "{body}");
    let (done, watcher) = watch_until(&gw.url, &["rolled_back", "promoted"]);
    let (sent, ok) = traffic(&gw.url, 4, 20_000, Duration::from_secs(30), done).await;
    let seen = watcher.await.unwrap();
    assert_eq!(ok, sent);
    let states: Vec<(&str, u64)> = seen.iter().map(|(s, n)| (s.as_str(), *n)).collect();
    assert_eq!(
        states,
        vec![("canary", 0), ("canary", 1), ("promoted", 2)],
        "{seen:?}"
    );
    // Both versions served during the rollout; now only the new one does.
    let (g, o) = (good.stats().total_requests, other.stats().total_requests);
    assert!(g > 0 && o > 0, "good {g}, other {o}");
    for _ in 0..20 {
        assert_eq!(chat(&gw.url).await, 200);
    }
    assert_eq!(good.stats().total_requests, g);
    assert_eq!(other.stats().total_requests, o + 20);
    let s = admin_get(&gw.url, "/admin/rollout").await;
    assert_eq!(s["serving"], 2, "{s}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_in_flight_finishes_on_the_version_it_started_with() {
    let slow = ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            ttft: Duration::ZERO,
            token_delay: Duration::from_millis(40),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap();
    let (other, bad) = (fast_sim(None).await, fast_sim(None).await);
    let start = config(&slow, &other, &bad, r#""good/gpt-4o-mini""#, "");
    let gw = gateway(&start).await;
    let url = gw.url.clone();
    let stream = tokio::spawn(async move {
        let r = client()
            .post(format!("{url}/v1/chat/completions"))
            .json(&json!({"model": "chat", "stream": true, "max_tokens": 40,
                "messages": [{"role": "user", "content": "tell me a long story"}]}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.text().await.unwrap()
    });
    // Wait until the stream is under way, then switch at once to a configuration on `other`.
    let t0 = Instant::now();
    while slow.stats().total_requests == 0 && t0.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let next = config(&slow, &other, &bad, r#""other/gpt-4o-mini""#, "");
    let (status, body) = admin_post(&gw.url, "/admin/config?now=true&probe=false", next).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["rollout"]["serving"], 2, "{body}");
    // New requests go to the new version while the old stream is still going.
    assert_eq!(chat(&gw.url).await, 200);
    assert_eq!(other.stats().total_requests, 1);
    let text = stream.await.unwrap();
    assert!(text.trim_end().ends_with("data: [DONE]"), "{text}");
    assert_eq!(slow.stats().total_requests, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn versions_are_kept_with_their_outcome_and_a_rollback_takes_one_again() {
    let (good, other, bad) = (
        fast_sim(None).await,
        fast_sim(None).await,
        fast_sim(None).await,
    );
    let dir = std::env::temp_dir().join(format!(
        "ballast-rollout-versions-{}-{}",
        std::process::id(),
        fastrand::u64(..)
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = format!(
        "[incidents]\nstore = \"{}\"\n",
        dir.join("s.sqlite").display()
    );
    let start = config(&good, &other, &bad, r#""good/gpt-4o-mini""#, "") + &store;
    let gw = gateway(&start).await;
    let next = config(&good, &other, &bad, r#""other/gpt-4o-mini""#, "") + &store;
    let (status, body) = admin_post(&gw.url, "/admin/config?now=true&probe=false", next).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["version"], 2, "{body}");
    assert_eq!(chat(&gw.url).await, 200);
    assert_eq!(other.stats().total_requests, 1);
    // Back to version 1, at once, with the serving configuration's secrets.
    let (status, body) = admin_post(&gw.url, "/admin/config/rollback", String::new()).await;
    assert_eq!(status, 202, "{body}");
    assert_eq!(body["version"], 3, "{body}");
    assert_eq!(body["source"], "rollback to version 1", "{body}");
    let g = good.stats().total_requests;
    assert_eq!(chat(&gw.url).await, 200);
    assert_eq!(good.stats().total_requests, g + 1);
    // The store has them all, with what became of each (written by the store's thread).
    let mut versions = Value::Null;
    for _ in 0..100 {
        versions = admin_get(&gw.url, "/admin/config/versions").await;
        if versions["versions"]
            .as_array()
            .is_some_and(|v| v.len() == 3)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let rows = versions["versions"].as_array().unwrap();
    assert_eq!(rows.len(), 3, "{versions}");
    assert_eq!(rows[0]["source"], "rollback to version 1", "{versions}");
    assert!(
        rows[1]["outcome"].as_str().unwrap().contains("--now"),
        "{versions}"
    );
    assert_eq!(rows[0]["hash"], rows[2]["hash"], "{versions}");
    let _ = std::fs::remove_dir_all(&dir);
}
