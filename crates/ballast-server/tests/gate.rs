//! The live gate against real simulators on loopback: a healthy configuration passes in every
//! provider API; a refused key, an unknown model, a broken stream, a silent provider and a dead one
//! are each reported on the target at fault; a route keeps its verdict (OK, DEGRADED, FAIL) and the
//! configuration is refused only when a route has no working target or an asked-for capability
//! fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::gate::{self, Check, GateOptions, Report, RouteStatus, TargetReport};
use ballast_server::{Failure, SendFuture, Transport, UpstreamRequest, UpstreamResponse};
use ballast_sim::{SimConfig, SimHandle};
use common::{faults, sim};
use futures_util::StreamExt;
use serde_json::{Value, json};

fn config(toml: &str) -> Config {
    Config::from_toml(toml, &MapEnv::new(&[])).unwrap()
}

/// Every provider API on one simulator.
fn providers(s: &SimHandle) -> String {
    let u = s.base_url();
    format!(
        r#"
        [providers.anth]
        kind = "anthropic"
        base_url = "{u}"
        api_key = "k"
        [providers.oai]
        kind = "openai"
        base_url = "{u}/v1"
        api_key = "k"
        [providers.resp]
        kind = "openai"
        api = "responses"
        base_url = "{u}/v1"
        api_key = "k"
        [providers.gem]
        kind = "gemini"
        base_url = "{u}"
        api_key = "k"
        "#
    )
}

async fn run(toml: &str, opts: GateOptions) -> Report {
    gate::check(config(toml), &opts).await.unwrap()
}

fn opts() -> GateOptions {
    GateOptions {
        timeout: Duration::from_secs(5),
        ..GateOptions::default()
    }
}

fn target<'a>(r: &'a Report, label: &str) -> &'a TargetReport {
    r.targets
        .iter()
        .find(|t| t.target == label)
        .unwrap_or_else(|| panic!("no target {label} in {r:#?}"))
}

fn route(r: &Report, name: &str) -> RouteStatus {
    r.routes.iter().find(|x| x.route == name).unwrap().status
}

async fn sim_with(require_key: Option<&str>) -> SimHandle {
    ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        SimConfig {
            require_key: require_key.map(str::to_owned),
            ..SimConfig::default()
        },
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_healthy_configuration_passes_in_every_api_with_tools() {
    let s = sim().await;
    let toml = format!(
        r#"{}
        [routes.chat]
        targets = ["anth/claude-sonnet-4-5", "oai/gpt-4.1", "resp/gpt-4.1", "gem/gemini-2.5-flash"]
        [routes.solo]
        targets = ["oai/gpt-4.1"]
        "#,
        providers(&s)
    );
    let r = run(
        &toml,
        GateOptions {
            tools: true,
            ..opts()
        },
    )
    .await;
    assert!(r.ok, "{}", r.table());
    assert!(r.problems.is_empty() && r.warnings.is_empty(), "{r:#?}");
    assert_eq!(r.targets.len(), 4, "one row per distinct target");
    for t in &r.targets {
        let c = t.checks;
        for (name, check) in [
            ("reachable", c.reachable),
            ("authenticated", c.authenticated),
            ("model", c.model),
            ("answer", c.answer),
            ("stream", c.stream),
            ("tools", c.tools),
        ] {
            assert_eq!(check, Check::Ok, "{}: {name}: {t:#?}", t.target);
        }
        assert!(t.working && t.errors.is_empty(), "{t:#?}");
        assert!(t.latency_ms.answer.is_some() && t.latency_ms.stream_first_token.is_some());
        assert!(t.latency_ms.stream.is_some() && t.latency_ms.tools.is_some());
        assert!(t.usage.input_tokens.unwrap() > 0 && t.usage.output_tokens.unwrap() > 0);
        assert!(t.cost_usd.unwrap() > 0.0, "a priced model: {t:#?}");
    }
    assert_eq!(target(&r, "oai/gpt-4.1").routes, ["chat", "solo"]);
    assert_eq!(target(&r, "resp/gpt-4.1").api, "openai-responses");
    assert_eq!(target(&r, "gem/gemini-2.5-flash").api, "gemini");
    assert_eq!(route(&r, "chat"), RouteStatus::Ok);
    assert_eq!(route(&r, "solo"), RouteStatus::Ok);
    assert!(r.cost_usd > 0.0 && r.cost_unknown.is_empty());

    // What the simulator saw: three tiny probes per target, in its own API, capped.
    let seen = s.recent_requests();
    assert_eq!(
        seen.len(),
        12,
        "answer, stream and tools for each of 4 targets"
    );
    for req in &seen {
        let b = &req.body;
        let cap = [
            &b["max_tokens"],
            &b["max_completion_tokens"],
            &b["max_output_tokens"],
            &b["generationConfig"]["maxOutputTokens"],
        ]
        .into_iter()
        .find_map(Value::as_u64)
        .unwrap_or_else(|| panic!("no output cap in {b}"));
        assert!(cap <= 64, "{}: {cap}", req.path);
    }
    assert_eq!(seen.iter().filter(|r| r.stream).count(), 4);
}

#[tokio::test]
async fn a_new_target_whose_key_is_refused_is_named_and_the_config_refused() {
    let good = sim().await;
    let locked = sim_with(Some("the-right-key")).await;
    let l = locked.base_url();
    let toml = format!(
        r#"{}
        [providers.new-anth]
        kind = "anthropic"
        base_url = "{l}"
        api_key = "a-wrong-key"
        [providers.new-oai]
        kind = "openai"
        base_url = "{l}/v1"
        api_key = "a-wrong-key"
        [providers.new-gem]
        kind = "gemini"
        base_url = "{l}"
        api_key = "a-wrong-key"
        [routes.chat]
        targets = ["anth/claude-sonnet-4-5"]
        [routes.new]
        targets = ["new-oai/gpt-4.1", "new-anth/claude-haiku-4-5", "new-gem/gemini-2.5-flash"]
        "#,
        providers(&good)
    );
    let r = run(&toml, opts()).await;
    assert!(!r.ok, "{}", r.table());
    assert_eq!(route(&r, "chat"), RouteStatus::Ok);
    assert_eq!(route(&r, "new"), RouteStatus::Fail);
    for label in [
        "new-oai/gpt-4.1",
        "new-anth/claude-haiku-4-5",
        "new-gem/gemini-2.5-flash",
    ] {
        let t = target(&r, label);
        assert_eq!(t.checks.reachable, Check::Ok, "{t:#?}");
        assert_eq!(t.checks.authenticated, Check::Fail, "{t:#?}");
        assert_eq!(t.checks.model, Check::Skipped);
        assert_eq!(t.checks.stream, Check::Skipped);
        assert!(!t.working);
        assert!(
            t.errors[0].contains("the provider refused the key"),
            "{:?}",
            t.errors
        );
        assert!(
            r.problems[0].contains(label),
            "the refusal names {label}: {:?}",
            r.problems
        );
    }
    assert!(r.problems[0].starts_with("route new: no working target"));
    // The key never appears in what the gate reports.
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("a-wrong-key") && !r.table().contains("a-wrong-key"));
    // After the answer was refused, nothing more was sent to the locked simulator.
    assert_eq!(locked.stats().total_requests, 3);
}

#[tokio::test]
async fn an_unknown_model_is_reported_on_its_target() {
    // The simulator accepts any model: this one answers every request 404, as a real API does for
    // a model it does not know.
    let missing = sim().await;
    missing.set_faults(faults(json!({"error": {"status": 404}})));
    let m = missing.base_url();
    let toml = format!(
        r#"
        [providers.oai]
        kind = "openai"
        base_url = "{m}/v1"
        api_key = "k"
        [providers.anth]
        kind = "anthropic"
        base_url = "{m}"
        api_key = "k"
        [routes.chat]
        targets = ["oai/gpt-9-turbo", "anth/claude-sonnet-9"]
        "#
    );
    let r = run(&toml, opts()).await;
    assert!(!r.ok);
    assert_eq!(route(&r, "chat"), RouteStatus::Fail);
    for (label, model) in [
        ("oai/gpt-9-turbo", "gpt-9-turbo"),
        ("anth/claude-sonnet-9", "claude-sonnet-9"),
    ] {
        let t = target(&r, label);
        assert_eq!(t.checks.authenticated, Check::Ok, "{t:#?}");
        assert_eq!(t.checks.model, Check::Fail, "{t:#?}");
        assert!(
            t.errors[0].contains("HTTP 404") && t.errors[0].contains(model),
            "{:?}",
            t.errors
        );
        assert_eq!(t.cost_usd, None, "an unknown model has no price");
    }
    assert_eq!(r.cost_unknown.len(), 2);
}

#[tokio::test]
async fn a_stream_that_breaks_fails_the_stream_check() {
    let s = sim().await;
    let toml = format!(
        r#"{}
        [routes.chat]
        targets = ["anth/claude-sonnet-4-5", "oai/gpt-4.1", "resp/gpt-4.1", "gem/gemini-2.5-flash"]
        "#,
        providers(&s)
    );
    for (mode, says) in [
        ("eof", "without its terminal event"),
        ("reset", "broke off"),
        ("error_event", "error event"),
    ] {
        s.set_faults(faults(
            json!({"truncate": {"mode": mode, "after_tokens": 1}}),
        ));
        let r = run(&toml, opts()).await;
        assert!(!r.ok, "{mode}: {}", r.table());
        for t in &r.targets {
            assert_eq!(t.checks.reachable, Check::Ok, "{mode}: {t:#?}");
            assert_eq!(t.checks.stream, Check::Fail, "{mode}: {t:#?}");
            let stream = t.errors.iter().find(|e| e.starts_with("stream:")).unwrap();
            assert!(stream.contains(says), "{mode}: {stream}");
            assert!(!t.working);
        }
    }
    // A stream that goes silent after its first token is cut at the probe's time limit.
    s.set_faults(faults(
        json!({"truncate": {"mode": "stall", "after_tokens": 1}, "hang": {"api": "openai"}}),
    ));
    let r = run(
        &toml,
        GateOptions {
            timeout: Duration::from_millis(300),
            ..opts()
        },
    )
    .await;
    let t = target(&r, "anth/claude-sonnet-4-5");
    assert_eq!(t.checks.stream, Check::Fail);
    assert!(
        t.errors
            .iter()
            .any(|e| e == "stream: the stream stalled: no end within 300ms"),
        "{:?}",
        t.errors
    );
    assert!(t.latency_ms.stream_first_token.is_some());
    // A provider that never answers: whether it could be reached is not known.
    let t = target(&r, "oai/gpt-4.1");
    assert_eq!(t.checks.reachable, Check::Unknown, "{t:#?}");
    assert_eq!(t.checks.answer, Check::Fail);
    assert_eq!(t.errors[0], "answer: no answer within 300ms");
}

#[tokio::test]
async fn a_route_with_one_dead_and_one_healthy_target_is_degraded_not_failed() {
    let healthy = sim().await;
    let dead = sim().await;
    // Rate 1: the simulator stops listening (connections refused).
    dead.set_faults(faults(json!({"down": {}})));
    let d = dead.base_url();
    let toml = format!(
        r#"{}
        [providers.gone]
        kind = "openai"
        base_url = "{d}/v1"
        api_key = "k"
        [routes.chat]
        targets = ["gone/gpt-4.1", "anth/claude-sonnet-4-5"]
        [routes.pair]
        targets = ["oai/gpt-4.1", "gem/gemini-2.5-flash", "gone/gpt-4.1"]
        "#,
        providers(&healthy)
    );
    let r = run(&toml, opts()).await;
    assert!(
        r.ok,
        "a degraded route does not fail the gate: {}",
        r.table()
    );
    assert_eq!(route(&r, "chat"), RouteStatus::Degraded);
    assert_eq!(route(&r, "pair"), RouteStatus::Degraded);
    let chat = r.routes.iter().find(|x| x.route == "chat").unwrap();
    assert_eq!((chat.working, chat.targets), (1, 2));
    assert_eq!(chat.failed_targets, ["gone/gpt-4.1"]);
    let gone = target(&r, "gone/gpt-4.1");
    assert_eq!(gone.checks.reachable, Check::Fail, "{gone:#?}");
    assert_eq!(gone.checks.authenticated, Check::Skipped);
    assert_eq!(gone.routes, ["chat", "pair"]);
    // One working target left is a warning; two are not.
    assert_eq!(r.warnings.len(), 1, "{:?}", r.warnings);
    assert!(
        r.warnings[0].contains("route chat") && r.warnings[0].contains("anth/claude-sonnet-4-5")
    );
    let table = r.table();
    assert!(table.contains("DEGRADED (1 of 2 working)"), "{table}");
    assert!(table.contains("DEGRADED (2 of 3 working)"), "{table}");
}

#[tokio::test]
async fn tools_are_checked_only_when_asked_and_their_failure_refuses_the_config() {
    let s = sim().await;
    let toml = format!(
        r#"{}
        [routes.chat]
        targets = ["oai/gpt-4.1", "anth/claude-sonnet-4-5"]
        "#,
        providers(&s)
    );
    let r = run(&toml, opts()).await;
    assert!(r.ok);
    assert!(
        r.targets
            .iter()
            .all(|t| t.checks.tools == Check::NotChecked)
    );
    assert!(r.table().contains("n/c"));
    assert_eq!(s.recent_requests().len(), 4, "no tool probe unless asked");

    // A transport that takes the tools out of requests: the simulator answers in text.
    let r = gate::check_with(
        config(&toml),
        Arc::new(NoTools(
            ballast_server::plain_client(Duration::from_secs(5)).unwrap(),
        )),
        &GateOptions {
            tools: true,
            ..opts()
        },
    )
    .await
    .unwrap();
    assert!(!r.ok, "{}", r.table());
    assert_eq!(
        route(&r, "chat"),
        RouteStatus::Ok,
        "tools do not decide a target's health"
    );
    for t in &r.targets {
        assert_eq!(t.checks.tools, Check::Fail, "{t:#?}");
        assert!(t.working);
    }
    assert_eq!(r.problems.len(), 2, "{:?}", r.problems);
    assert!(r.problems[0].contains("oai/gpt-4.1") && r.problems[0].contains("without calling"));
}

/// An HTTP transport that drops `tools` and `tool_choice` from every request body.
struct NoTools(reqwest::Client);

impl Transport for NoTools {
    fn send(&self, req: UpstreamRequest) -> SendFuture {
        let mut body: Value = serde_json::from_slice(&req.body).unwrap();
        if let Some(o) = body.as_object_mut() {
            o.remove("tools");
            o.remove("tool_choice");
            o.remove("toolConfig");
        }
        let call = self
            .0
            .post(req.url)
            .headers(req.headers)
            .body(serde_json::to_vec(&body).unwrap())
            .send();
        Box::pin(async move {
            let mut resp = call.await.map_err(|e| Failure::Connect(e.to_string()))?;
            let headers = std::mem::take(resp.headers_mut());
            Ok(UpstreamResponse {
                status: resp.status(),
                headers,
                body: Box::pin(
                    resp.bytes_stream()
                        .map(|r| r.map_err(|e| Failure::Transport(e.to_string()))),
                ),
            })
        })
    }
}

#[tokio::test]
async fn the_json_shape_is_stable() {
    let s = sim().await;
    let toml = format!(
        r#"{}
        [routes.chat]
        targets = ["anth/claude-sonnet-4-5"]
        "#,
        providers(&s)
    );
    let r = run(&toml, opts()).await;
    let v = serde_json::to_value(&r).unwrap();
    let keys = |v: &Value| {
        let mut k: Vec<String> = v.as_object().unwrap().keys().cloned().collect();
        k.sort();
        k
    };
    assert_eq!(
        keys(&v),
        [
            "cost_unknown",
            "cost_usd",
            "note",
            "ok",
            "problems",
            "routes",
            "targets",
            "timeout_ms",
            "tools_checked",
            "version",
            "warnings"
        ]
    );
    assert_eq!(v["version"], 1);
    let t = &v["targets"][0];
    assert_eq!(
        keys(t),
        [
            "api",
            "checks",
            "cost_usd",
            "errors",
            "latency_ms",
            "model",
            "notes",
            "provider",
            "routes",
            "target",
            "usage",
            "working"
        ]
    );
    assert_eq!(
        keys(&t["checks"]),
        [
            "answer",
            "authenticated",
            "model",
            "reachable",
            "stream",
            "tools"
        ]
    );
    assert_eq!(t["checks"]["tools"], "not_checked");
    assert_eq!(
        keys(&t["latency_ms"]),
        ["answer", "stream", "stream_first_token", "tools"]
    );
    assert_eq!(keys(&t["usage"]), ["input_tokens", "output_tokens"]);
    assert_eq!(
        keys(&v["routes"][0]),
        ["failed_targets", "route", "status", "targets", "working"]
    );
    assert_eq!(v["routes"][0]["status"], "ok");
}
