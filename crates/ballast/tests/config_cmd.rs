//! `ballast config apply|rollout|abort|rollback` end to end: the built binary against an
//! imitation of a gateway's admin API on loopback, asserting what the gateway saw (admin key,
//! query flags, body) and the exit status (0 promoted, 2 rolled back, 1 refused).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

/// One request the imitation gateway saw.
#[derive(Clone, Debug)]
struct Seen {
    what: String,
    query: String,
    auth: Option<String>,
    content_type: Option<String>,
    body: String,
}

/// What the imitation gateway answers `GET /admin/rollout` and the abort with, and what it saw.
struct Fake {
    rollout: Value,
    rollout_running: bool,
    seen: Vec<Seen>,
}

type Shared = Arc<Mutex<Fake>>;

const KEY: &str = "admin-secret";

fn record(f: &Shared, what: &str, q: Option<String>, h: &HeaderMap, body: String) -> bool {
    let header = |n: &str| h.get(n).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let auth = header("authorization");
    let ok = auth.as_deref() == Some(&format!("Bearer {KEY}"));
    f.lock().unwrap().seen.push(Seen {
        what: what.to_owned(),
        query: q.unwrap_or_default(),
        auth,
        content_type: header("content-type"),
        body,
    });
    ok
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        axum::Json(json!({"error": {"message": "admin endpoints need the admin key"}})),
    )
        .into_response()
}

async fn apply(
    State(f): State<Shared>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: String,
) -> Response {
    let now = q.as_deref().unwrap_or("").contains("now=true");
    if !record(&f, "apply", q, &h, body.clone()) {
        return unauthorized();
    }
    if body.contains("gpt-9") {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            axum::Json(json!({"error": {"message": "the live gate refused the configuration",
                "problems": ["routes.chat: target oai/gpt-9 answered HTTP 404 (model not found)"]}})),
        )
            .into_response();
    }
    let state = if now { "promoted" } else { "canary" };
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"version": 7, "hash": "ab12cd34", "summary": "routes.chat: +1 target",
            "source": "cli", "rollout": {"state": state, "step": 0, "steps": 2, "share": 0.05,
            "hold_ms": 120000, "elapsed_ms": 0}}),
        ),
    )
        .into_response()
}

async fn rollout(State(f): State<Shared>, h: HeaderMap) -> Response {
    if !record(&f, "rollout", None, &h, String::new()) {
        return unauthorized();
    }
    axum::Json(f.lock().unwrap().rollout.clone()).into_response()
}

async fn abort(State(f): State<Shared>, h: HeaderMap) -> Response {
    if !record(&f, "abort", None, &h, String::new()) {
        return unauthorized();
    }
    let mut f = f.lock().unwrap();
    if !f.rollout_running {
        return (
            StatusCode::CONFLICT,
            axum::Json(json!({"error": {"message": "no rollout is running"}})),
        )
            .into_response();
    }
    f.rollout_running = false;
    axum::Json(json!({"state": "rolled_back", "version": 7, "reason": "aborted"})).into_response()
}

async fn rollback(
    State(f): State<Shared>,
    RawQuery(q): RawQuery,
    h: HeaderMap,
    body: String,
) -> Response {
    if !record(&f, "rollback", q, &h, body) {
        return unauthorized();
    }
    (
        StatusCode::ACCEPTED,
        axum::Json(
            json!({"version": 8, "hash": "ee11", "summary": "back to version 5",
            "rollout": {"state": "promoted"}}),
        ),
    )
        .into_response()
}

async fn gateway(rollout_state: Value) -> (String, Shared) {
    let fake = Arc::new(Mutex::new(Fake {
        rollout: rollout_state,
        rollout_running: true,
        seen: Vec::new(),
    }));
    let app = Router::new()
        .route("/admin/config", post(apply))
        .route("/admin/rollout", get(rollout))
        .route("/admin/rollout/abort", post(abort))
        .route("/admin/config/rollback", post(rollback))
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, fake)
}

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("ballast-config-cmd-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ballast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary off the runtime's threads, so the imitation gateway keeps answering.
async fn ballast(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ballast"))
            .env_remove("BALLAST_LOG")
            .env_remove("BALLAST_ADMIN_KEY")
            .env_remove("BALLAST_GATEWAY")
            .args(&args)
            .output()
            .unwrap()
    })
    .await
    .unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

const CONFIG: &str = "[routes.chat]\ntargets = [\"anth/claude-sonnet-4-5\", \"oai/gpt-4.1\"]\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn apply_sends_the_file_with_the_key_and_flags_and_waits_for_the_verdict() {
    let file = write_config("apply", CONFIG);
    let file = file.to_str().unwrap();
    let (url, fake) = gateway(json!({"state": "promoted", "version": 7})).await;

    let o = ballast(&[
        "config",
        "apply",
        file,
        "--gateway",
        &url,
        "--admin-key",
        KEY,
        "--force",
        "--no-probe",
        "--wait",
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "accepted as version 7 (hash ab12cd34): routes.chat: +1 target\n\
         rolling out: step 1 of 2, 5% of requests for 2m\n\
         promoted: version 7 serves every request\n",
        "{}",
        show(&o)
    );
    let seen = std::mem::take(&mut fake.lock().unwrap().seen);
    assert_eq!(seen[0].what, "apply");
    assert_eq!(seen[0].query, "force=true&probe=false");
    assert_eq!(seen[0].auth.as_deref(), Some("Bearer admin-secret"));
    assert_eq!(seen[0].content_type.as_deref(), Some("application/toml"));
    assert_eq!(seen[0].body, CONFIG);
    assert_eq!(seen[1].what, "rollout");
    assert_eq!(seen[1].auth.as_deref(), Some("Bearer admin-secret"));

    // Rolled back while waiting: exit 2 with the gateway's reason.
    fake.lock().unwrap().rollout =
        json!({"state": "rolled_back", "version": 7, "reason": "chat: 10% degraded vs 1%"});
    let o = ballast(&[
        "config",
        "apply",
        file,
        "--gateway",
        &url,
        "--admin-key",
        KEY,
        "--wait",
    ])
    .await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    assert!(
        stderr(&o).contains("rolled back: chat: 10% degraded vs 1%"),
        "{}",
        show(&o)
    );
    assert_eq!(fake.lock().unwrap().seen[0].query, "");

    // --now: applied at once, nothing to wait for; the key from the environment.
    let o = tokio::task::spawn_blocking({
        let (file, url) = (file.to_owned(), url.clone());
        move || {
            Command::new(env!("CARGO_BIN_EXE_ballast"))
                .env_remove("BALLAST_LOG")
                .env("BALLAST_ADMIN_KEY", KEY)
                .env("BALLAST_GATEWAY", &url)
                .args(["config", "apply", &file, "--now", "--wait"])
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).ends_with("applied at once (--now)\n"),
        "{}",
        show(&o)
    );
    let seen = std::mem::take(&mut fake.lock().unwrap().seen);
    assert_eq!(seen.last().unwrap().query, "now=true", "{seen:?}");
    assert_eq!(seen.len(), 3, "no polling after --now: {seen:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_and_a_missing_key_exit_1_with_the_reasons() {
    let (url, _fake) = gateway(json!({"state": "idle"})).await;
    let bad = write_config("bad", "[routes.chat]\ntargets = [\"oai/gpt-9\"]\n");
    let bad = bad.to_str().unwrap();

    let o = ballast(&[
        "config",
        "apply",
        bad,
        "--gateway",
        &url,
        "--admin-key",
        KEY,
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains(
            "the live gate refused the configuration\n  - routes.chat: target oai/gpt-9 answered HTTP 404"
        ),
        "{}",
        show(&o)
    );
    assert!(stdout(&o).is_empty(), "{}", show(&o));

    // --json: the gateway's answer on stdout as it is, the exit status unchanged.
    let o = ballast(&[
        "config",
        "apply",
        bad,
        "--gateway",
        &url,
        "--admin-key",
        KEY,
        "--json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(
        v["error"]["problems"][0]
            .as_str()
            .unwrap()
            .split(':')
            .next(),
        Some("routes.chat")
    );

    let o = ballast(&["config", "rollout", "--gateway", &url]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).contains("admin key is needed (--admin-key or BALLAST_ADMIN_KEY)"),
        "{}",
        show(&o)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rollout_abort_and_rollback() {
    let (url, fake) = gateway(json!({"state": "canary", "version": 7, "hash": "ab12cd34",
        "step": 0, "steps": 2, "share": 0.05, "hold_ms": 120000, "elapsed_ms": 30000,
        "reason": null, "comparison": [{"route": "chat",
            "canary": {"requests": 120, "degraded_ratio": 0.1, "latency_ms": 230.0, "defect_ratio": 0.0},
            "baseline": {"requests": 2280, "degraded_ratio": 0.01, "latency_ms": 210.0, "defect_ratio": 0.0}}]}))
    .await;
    let o = ballast(&["config", "rollout", "--gateway", &url, "--admin-key", KEY]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let out = stdout(&o);
    assert!(
        out.starts_with(
            "version 7 (hash ab12cd34) rolling out: step 1 of 2, 5% of requests for 2m (elapsed 30s)\n"
        ),
        "{out}"
    );
    assert!(
        out.contains("chat   120 / 2280  10.0% / 1.0%  230ms / 210ms  0.0% / 0.0%"),
        "{out}"
    );
    let o = ballast(&[
        "config",
        "rollout",
        "--gateway",
        &url,
        "--admin-key",
        KEY,
        "--json",
    ])
    .await;
    let v: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["comparison"][0]["route"], "chat", "{}", show(&o));

    let o = ballast(&["config", "abort", "--gateway", &url, "--admin-key", KEY]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert!(
        stdout(&o).contains("the current version keeps serving"),
        "{}",
        show(&o)
    );
    let o = ballast(&["config", "abort", "--gateway", &url, "--admin-key", KEY]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(stderr(&o).contains("no rollout is running"), "{}", show(&o));

    fake.lock().unwrap().seen.clear();
    let o = ballast(&[
        "config",
        "rollback",
        "5",
        "--force",
        "--gateway",
        &url,
        "--admin-key",
        KEY,
    ])
    .await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    assert_eq!(
        stdout(&o),
        "accepted as version 8 (hash ee11): back to version 5\napplied at once\n"
    );
    let o = ballast(&["config", "rollback", "--gateway", &url, "--admin-key", KEY]).await;
    assert_eq!(o.status.code(), Some(0), "{}", show(&o));
    let seen = std::mem::take(&mut fake.lock().unwrap().seen);
    assert_eq!(
        (seen[0].query.as_str(), seen[0].body.as_str()),
        ("force=true", r#"{"version":5}"#)
    );
    assert_eq!(seen[0].content_type.as_deref(), Some("application/json"));
    assert_eq!((seen[1].query.as_str(), seen[1].body.as_str()), ("", "{}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_gateway_is_named() {
    let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let o = ballast(&["config", "rollout", "--gateway", &format!("http://{addr}")]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(
        stderr(&o).starts_with(&format!("error: cannot reach http://{addr}/admin/rollout")),
        "{}",
        show(&o)
    );
}
