//! `ballast check` end to end, the built binary against simulators on loopback: static by default
//! (nothing sent), `--probe` probes every target, `--json` is one parseable document on stdout,
//! and the exit status is the gate's verdict.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};

use ballast_sim::{SimConfig, SimHandle};
use serde_json::Value;

async fn sim(require_key: Option<&str>) -> SimHandle {
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

fn write_config(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-check-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("ballast.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs the binary off the runtime's threads, so the in-process simulators keep answering.
async fn ballast(args: &[&str]) -> Output {
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_ballast"))
            .env_remove("BALLAST_LOG")
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

fn json(o: &Output) -> Value {
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", show(o)))
}

fn healthy(s: &SimHandle) -> String {
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
[routes.chat]
targets = ["anth/claude-sonnet-4-5", "oai/gpt-4.1"]
"#
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_probe_the_check_stays_static() {
    let s = sim(None).await;
    let path = write_config("static", &healthy(&s));
    let path = path.to_str().unwrap();
    let o = ballast(&["check", "-c", path]).await;
    assert!(o.status.success(), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stdout).contains(": OK"));
    assert_eq!(s.stats().total_requests, 0, "a static check sends nothing");
    // The probe's flags need --probe; --json needs --probe or --against.
    let o = ballast(&["check", "-c", path, "--tools"]).await;
    assert_eq!(o.status.code(), Some(2), "{}", show(&o));
    let o = ballast(&["check", "-c", path, "--json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    assert!(String::from_utf8_lossy(&o.stderr).contains("--json goes with"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_names_a_route_left_without_a_fallback_and_strict_refuses_it() {
    let s = sim(None).await;
    let running = write_config("running", &healthy(&s));
    let candidate_text = healthy(&s).replace(
        r#"targets = ["anth/claude-sonnet-4-5", "oai/gpt-4.1"]"#,
        r#"targets = ["oai/gpt-4.1"]"#,
    );
    let candidate = write_config("candidate", &candidate_text);
    let (running, candidate) = (running.to_str().unwrap(), candidate.to_str().unwrap());
    let o = ballast(&["check", "-c", candidate, "--against", running]).await;
    assert!(o.status.success(), "a warning passes: {}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("anth/claude-sonnet-4-5"), "{out}");
    let o = ballast(&[
        "check",
        "-c",
        candidate,
        "--against",
        running,
        "--strict",
        "--json",
    ])
    .await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["passes"], false, "{v}");
    assert!(
        v["findings"]
            .as_array()
            .unwrap()
            .iter()
            .any(|f| f["route"] == "chat" && f["level"] == "error"),
        "{v}"
    );
    assert_eq!(s.stats().total_requests, 0, "a diff sends nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_healthy_configuration_passes_with_json_and_with_a_table() {
    let s = sim(None).await;
    let path = write_config("healthy", &healthy(&s));
    let path = path.to_str().unwrap();
    let o = ballast(&["check", "-c", path, "--probe", "--json", "--tools"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["version"], 1);
    assert_eq!(v["ok"], true);
    assert_eq!(v["tools_checked"], true);
    assert_eq!(v["targets"].as_array().unwrap().len(), 2);
    for t in v["targets"].as_array().unwrap() {
        assert_eq!(t["working"], true, "{t}");
        assert_eq!(t["checks"]["tools"], "ok", "{t}");
    }
    assert_eq!(v["routes"][0]["status"], "ok");
    assert!(o.stderr.is_empty(), "{}", show(&o));

    let o = ballast(&["check", "-c", path, "--probe", "--timeout", "2s"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(
        out.contains("TARGET") && out.contains("anth/claude-sonnet-4-5"),
        "{out}"
    );
    assert!(out.contains("route chat  OK"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_route_without_a_working_target_exits_non_zero_naming_it() {
    let good = sim(None).await;
    let locked = sim(Some("right")).await;
    let text = format!(
        r#"{}
[providers.new]
kind = "openai"
base_url = "{}/v1"
api_key = "wrong"
[routes.fresh]
targets = ["new/gpt-4.1"]
"#,
        healthy(&good),
        locked.base_url()
    );
    let path = write_config("refused", &text);
    let path = path.to_str().unwrap();
    let o = ballast(&["check", "-c", path, "--probe", "--json"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let v = json(&o);
    assert_eq!(v["ok"], false);
    let problems = v["problems"].to_string();
    assert!(
        problems.contains("route fresh") && problems.contains("new/gpt-4.1"),
        "{problems}"
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("new/gpt-4.1") && stderr.contains("refused the key"),
        "{stderr}"
    );
    assert!(!stderr.contains("wrong") && !String::from_utf8_lossy(&o.stdout).contains("\"wrong\""));

    let o = ballast(&["check", "-c", path, "--probe"]).await;
    assert_eq!(o.status.code(), Some(1), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("route fresh  FAIL (0 of 1 working)"), "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_degraded_route_is_a_warning_and_exits_zero() {
    let good = sim(None).await;
    let text = format!(
        r#"{}
[providers.gone]
kind = "anthropic"
base_url = "http://127.0.0.1:9"
api_key = "k"
[routes.pair]
targets = ["gone/claude-haiku-4-5", "oai/gpt-4.1"]
"#,
        healthy(&good)
    );
    let path = write_config("degraded", &text);
    let path = path.to_str().unwrap();
    let o = ballast(&["check", "-c", path, "--probe"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("DEGRADED (1 of 2 working)"), "{out}");
    assert!(
        out.contains("warning: route pair is left with one working target"),
        "{out}"
    );
    let o = ballast(&["check", "-c", path, "--probe", "--json"]).await;
    assert!(o.status.success(), "{}", show(&o));
    let v = json(&o);
    let pair = v["routes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["route"] == "pair")
        .unwrap();
    assert_eq!(pair["status"], "degraded");
    assert_eq!(v["warnings"].as_array().unwrap().len(), 1);
}
