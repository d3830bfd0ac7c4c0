//! `GET /admin/config`: the running configuration for `ballast check --against URL`. It needs the
//! admin key, never shows a secret, and reads back to a configuration a candidate is diffed against.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use axum::body::Body;
use ballast_core::config::Config;
use ballast_core::config::diff::{self, Level, parse_redacted};
use ballast_core::config::env::MapEnv;
use ballast_server::AppState;
use http::{Request, StatusCode};
use http_body_util::BodyExt as _;
use tower::ServiceExt as _;

/// Every secret the configuration can hold, each with a value that is easy to look for.
const SECRETS: [&str; 8] = [
    "sk-ant-SECRET",
    "sk-oai-SECRET",
    "gw-SECRET",
    "admin-SECRET",
    "hdr-SECRET",
    "pd-SECRET",
    "slack-SECRET",
    "otlp-SECRET",
];

const RUNNING: &str = r#"
[auth]
gateway_keys = ["gw-SECRET"]
[admin]
key = "admin-SECRET"
[incidents]
store = ""
[probes]
interval = "0s"
[[alerts.sinks]]
kind = "slack"
url = "https://hooks.slack.com/services/slack-SECRET"
[[alerts.sinks]]
kind = "pagerduty"
routing_key = "pd-SECRET"
[telemetry]
otlp_headers = { authorization = "Bearer otlp-SECRET" }
[policy]
deadline = "60s"
[providers.anthropic]
kind = "anthropic"
api_key = "${ANTHROPIC_KEY}"
headers = { "anthropic-beta" = "hdr-SECRET" }
[providers.openai]
kind = "openai"
api_key = "${OPENAI_KEY}"
base_url = "http://user:hdr-SECRET@127.0.0.1:9/v1"
[routes.chat]
targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]
[routes.chat.policy]
first_token_timeout = "5s"
"#;

fn env() -> MapEnv {
    MapEnv::new(&[
        ("ANTHROPIC_KEY", "sk-ant-SECRET"),
        ("OPENAI_KEY", "sk-oai-SECRET"),
    ])
}

fn state(toml: &str) -> Arc<AppState> {
    let config = Config::from_toml(toml, &env()).unwrap();
    Arc::new(AppState::new(config).unwrap())
}

async fn get(state: &Arc<AppState>, auth: Option<&str>) -> (StatusCode, Option<String>, String) {
    let mut req = Request::get("/admin/config");
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    let resp = ballast_server::app(state.clone())
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let ctype = resp
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned());
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, ctype, String::from_utf8(body.to_vec()).unwrap())
}

#[tokio::test]
async fn it_needs_the_admin_key() {
    let st = state(RUNNING);
    for auth in [None, Some("Bearer wrong"), Some("Bearer gw-SECRET")] {
        let (status, _, body) = get(&st, auth).await;
        assert_eq!(status, StatusCode::UNAUTHORIZED, "{auth:?}: {body}");
        assert!(!body.contains("[routes"), "{body}");
    }
    // No admin key configured: the admin API does not exist.
    let no_admin = state(&RUNNING.replace("key = \"admin-SECRET\"\n", ""));
    let (status, _, _) = get(&no_admin, Some("Bearer admin-SECRET")).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn no_secret_appears() {
    let (status, ctype, body) = get(&state(RUNNING), Some("Bearer admin-SECRET")).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(ctype.as_deref(), Some("application/toml; charset=utf-8"));
    for s in SECRETS.iter().chain(&["hooks.slack.com", "user:"]) {
        assert!(!body.contains(s), "{s} in GET /admin/config:\n{body}");
    }
    // The redacted values are still there, as placeholders: the shape of the configuration is kept.
    assert!(body.contains("api_key = \"${BALLAST_REDACTED}\""), "{body}");
    assert!(
        body.contains("anthropic-beta = \"${BALLAST_REDACTED}\""),
        "{body}"
    );
    assert!(body.contains("http://redacted@127.0.0.1:9/v1"), "{body}");
}

#[tokio::test]
async fn the_body_reads_back_to_the_running_configuration_and_diffs_against_a_candidate() {
    let running = Config::from_toml(RUNNING, &env()).unwrap();
    let (_, _, body) = get(&state(RUNNING), Some("Bearer admin-SECRET")).await;
    let current = match parse_redacted(&body, &MapEnv::new(&[])) {
        Ok(c) => c,
        Err(e) => panic!("GET /admin/config does not validate:\n{e}\n{body}"),
    };
    // Nothing differs (credentials in a URL are compared redacted on both sides).
    let same = diff::diff(&running, &current);
    assert!(same.is_empty(), "{}", same.table());

    // A candidate that drops OpenAI from the route and shortens the deadline.
    let candidate = Config::from_toml(
        &RUNNING
            .replace(
                r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
                r#"targets = ["anthropic/claude-sonnet-4-5"]"#,
            )
            .replace("deadline = \"60s\"", "deadline = \"30s\""),
        &env(),
    )
    .unwrap();
    let d = diff::diff(&current, &candidate);
    let chat = d.routes.iter().find(|r| r.name == "chat").unwrap();
    assert_eq!(chat.targets_removed[0].target, "openai/gpt-4.1");
    assert!(
        chat.changes
            .iter()
            .any(|c| c.path == "routes.chat.policy.deadline" && c.new == "30s"),
        "{}",
        d.table()
    );
    assert_eq!(d.findings[0].code, "single_target");
    assert_eq!(d.findings[0].level, Level::Warning);
    assert!(!d.clone().strict().passes());
    let out = format!("{}{}", d.table(), d.to_json());
    for s in SECRETS {
        assert!(!out.contains(s), "{s} in the diff:\n{out}");
    }
}
