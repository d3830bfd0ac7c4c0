//! `ballast chaos`: every built-in scenario, compressed to seconds (`--quick`), meets its pass
//! criteria; a gateway without fallback fails on purpose with a non-zero exit and the failing row;
//! scenario files are validated with key paths; the JSON report and the SVG chart have their shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::process::{Command, Output};

fn ballast(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ballast"))
        .args(args)
        .env_remove("BALLAST_LOG")
        .output()
        .unwrap_or_else(|e| panic!("cannot run ballast: {e}"))
}

fn tmp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("ballast-chaos-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn text(o: &Output) -> String {
    format!(
        "exit {:?}\n--- stdout\n{}\n--- stderr\n{}",
        o.status.code(),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// Runs a built-in compressed, asserts it passed, returns the JSON report.
fn run_builtin(name: &str, extra: &[&str]) -> serde_json::Value {
    let json = tmp(&format!("{name}.json"));
    let mut args = vec![
        "chaos",
        "run",
        name,
        "--quick",
        "--json",
        json.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = ballast(&args);
    assert!(o.status.success(), "{name} did not pass:\n{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("result: PASS"), "{stdout}");
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["scenario"], name);
    assert_eq!(report["passed"], true);
    assert!(
        report["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .all(|c| c["pass"] == true)
    );
    report
}

#[test]
fn outage_survives_and_the_report_compares_with_a_naive_client() {
    let chart = tmp("outage.svg");
    let report = run_builtin("outage-2026-06-02", &["--chart", chart.to_str().unwrap()]);
    let phases = report["phases"].as_array().unwrap();
    let names: Vec<&str> = phases.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["healthy", "outage (529)", "recovered"]);
    let outage = &phases[1];
    let with = &outage["ballast"];
    let without = &outage["without_ballast"];
    assert!(with["requests"].as_u64().unwrap() > 100, "{outage}");
    assert!(with["success_rate"].as_f64().unwrap() >= 0.99, "{outage}");
    // The naive client sees the outage and burns up to six attempts a request on it.
    assert!(without["success_rate"].as_f64().unwrap() < 0.9, "{outage}");
    assert!(
        without["attempts_per_request"].as_f64().unwrap() > 3.0,
        "{outage}"
    );
    assert!(
        with["attempts_per_request"].as_f64().unwrap() < 1.5,
        "{outage}"
    );
    assert!(with["time_to_detect_s"].as_f64().is_some(), "{outage}");
    // Tokens and cost per phase: the baseline's answers all come from the primary's Claude (list
    // price 3/15 USD per million tokens); the gateway's from Claude or, after failover, GPT-4.1 (2/8).
    for p in phases {
        for column in ["ballast", "without_ballast"] {
            let f = &p[column];
            let (input, output) = (
                f["input_tokens"].as_u64().unwrap(),
                f["output_tokens"].as_u64().unwrap(),
            );
            assert!(input > 0 && output > 0, "{column} {p}");
            let (i, o) = (input as f64, output as f64);
            let cost = f["cost_usd"].as_f64().unwrap();
            if column == "without_ballast" {
                assert_cost(cost, (i * 3.0 + o * 15.0) / 1e6, &p.to_string());
            } else {
                let (low, high) = ((i * 2.0 + o * 8.0) / 1e6, (i * 3.0 + o * 15.0) / 1e6);
                assert!(cost >= low - 2e-6 && cost <= high + 2e-6, "{p}");
            }
            assert_eq!(f["unpriced_models"], serde_json::json!([]), "{p}");
        }
    }
    let healthy = &phases[0]["ballast"];
    assert!(healthy["input_tokens"].as_u64().unwrap() >= healthy["requests"].as_u64().unwrap());
    assert!(with["time_to_failover_s"].as_f64().is_some(), "{outage}");
    assert!(!report["incidents"].as_array().unwrap().is_empty());
    let timeline = &report["timeline"];
    assert_eq!(timeline["ballast"].as_array().unwrap().len(), 60);
    assert_eq!(timeline["without_ballast"].as_array().unwrap().len(), 60);
    let svg = std::fs::read_to_string(&chart).unwrap();
    assert!(svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""));
    assert_eq!(svg.matches("class=\"panel\"").count(), 3);
    assert!(svg.contains("class=\"fault-window\""));
    assert!(svg.contains("class=\"incident\""));
    assert!(svg.contains("class=\"series with-ballast\""));
    assert!(svg.contains("class=\"series without-ballast\""));
    assert!(svg.trim_end().ends_with("</svg>"));
}

fn assert_cost(got: f64, want: f64, what: &str) {
    assert!(got > 0.0, "{what}");
    assert!((got - want).abs() <= 2e-6, "cost {got} != {want}: {what}");
}

#[test]
fn outage_hang_variant() {
    run_builtin("outage-2026-06-02-hang", &["--no-baseline"]);
}

#[test]
fn partial_error_ramp() {
    let report = run_builtin("partial-2025-08", &["--no-baseline"]);
    // Ramps are phases: 0.8% first, 16% last.
    let names: Vec<String> = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert!(names.contains(&"errors 0.8%".to_owned()), "{names:?}");
    assert!(names.contains(&"errors 16%".to_owned()), "{names:?}");
}

#[test]
fn corruption_is_detected() {
    let report = run_builtin("corruption-2025-08", &["--no-baseline"]);
    let incidents = report["incidents"].as_array().unwrap();
    assert!(
        incidents.iter().any(|i| i["signal"] == "wrong_script"),
        "{incidents:?}"
    );
}

/// A 429 storm on both providers: answered (a rate-limited target is paused for its retry-after,
/// not shut by its breaker) without draining the quota.
#[test]
fn rate_limit_storm_does_not_drain_quota() {
    run_builtin("rate-limit-storm", &["--no-baseline"]);
}

#[test]
fn brownout() {
    run_builtin("brownout", &["--no-baseline"]);
}

#[test]
fn flap_fails_over_both_times() {
    let report = run_builtin("flap-2026-03-02", &["--no-baseline"]);
    let phases = report["phases"].as_array().unwrap();
    for name in ["outage 1", "outage 2"] {
        let p = phases.iter().find(|p| p["name"] == name).unwrap();
        assert!(p["ballast"]["time_to_failover_s"].as_f64().is_some(), "{p}");
    }
}

const NO_FALLBACK: &str = r#"
name = "no-fallback"
duration = "8s"
seed = 9

[sims.primary]
[sims.secondary]

[traffic]
rate = 25

[[faults]]
at = "2s"
until = "6s"
sim = "primary"
set = { error = { status = 529, rate = 1.0 } }

[pass]
success_rate = 0.99
time_to_detect = "5s"

[gateway.providers.primary]
kind = "anthropic"
base_url = "sim:primary"
api_key = "k"

[gateway.routes.chat]
targets = ["primary/claude-sonnet-4-5"]
"#;

#[test]
fn streams_cut_mid_answer_are_continued_where_a_naive_client_breaks() {
    let report = run_builtin("midstream-cuts", &[]);
    let cut = report["phases"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "10% of streams cut")
        .expect("the cut phase");
    assert_eq!(cut["ballast"]["success_rate"], 1.0, "{cut}");
    let naive = cut["without_ballast"]["success_rate"].as_f64().unwrap();
    assert!(naive < 0.97, "the naive client lost no answer: {cut}");
    // The scenario's criterion over the cut phase is checked and reported.
    assert!(
        report["criteria"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "10% of streams cut (success_rate)" && c["pass"] == true),
        "{}",
        report["criteria"]
    );
    // The traffic mix is in the report: tool calls in every client API.
    assert_eq!(report["traffic"]["tool_share"], 0.25);
    assert_eq!(report["traffic"]["apis"].as_array().unwrap().len(), 4);
}

#[test]
fn a_gateway_without_fallback_fails_with_the_failing_row() {
    let file = tmp("no-fallback.toml");
    std::fs::write(&file, NO_FALLBACK).unwrap();
    let json = tmp("no-fallback.json");
    let o = ballast(&[
        "chaos",
        "run",
        file.to_str().unwrap(),
        "--no-baseline",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(!o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let row = stdout
        .lines()
        .find(|l| l.contains("success_rate"))
        .unwrap_or_default();
    assert!(row.trim_start().starts_with("FAIL"), "{stdout}");
    assert!(stdout.contains("result: FAIL"), "{stdout}");
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("failed its pass criteria: success_rate"),
        "{}",
        text(&o)
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], false);
    let c = report["criteria"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "success_rate")
        .unwrap();
    assert_eq!(c["pass"], false);
}

/// Gemini clients (`:generateContent` and `:streamGenerateContent?alt=sse`) through the gateway to a
/// Claude primary and a GPT secondary; the naive client sends the primary's own (Anthropic) API. The
/// scenario's prices replace the defaults.
const GEMINI: &str = r#"
name = "gemini-clients"
duration = "6s"
seed = 4

[sims.primary]
[sims.secondary]

[traffic]
rate = 20
stream_share = 0.5
apis = ["gemini"]

[[faults]]
at = "2s"
until = "4s"
sim = "primary"
set = { error = { status = 529, rate = 1.0 } }

[pass]
success_rate = 0.99

[prices."claude-sonnet-4-5"]
input_per_mtok = 1.0
output_per_mtok = 4.0
[prices."gpt-4.1"]
input_per_mtok = 1.0
output_per_mtok = 4.0

[gateway.policy]
deadline = "30s"
first_token_timeout = "1500ms"
response_timeout = "3s"
[gateway.probes]
interval = "0s"
[gateway.providers.primary]
kind = "anthropic"
base_url = "sim:primary"
api_key = "k"
[gateway.providers.secondary]
kind = "openai"
base_url = "sim:secondary/v1"
api_key = "k"
[gateway.routes.chat]
targets = ["primary/claude-sonnet-4-5", "secondary/gpt-4.1"]
"#;

#[test]
fn gemini_clients_survive_and_are_priced() {
    let file = tmp("gemini.toml");
    std::fs::write(&file, GEMINI).unwrap();
    let json = tmp("gemini.json");
    let o = ballast(&[
        "chaos",
        "run",
        file.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", text(&o));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("IN TOK") && stdout.contains("COST"),
        "{stdout}"
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["passed"], true);
    let phases = report["phases"].as_array().unwrap();
    assert_eq!(phases.len(), 3, "{report}");
    for p in phases {
        for column in ["ballast", "without_ballast"] {
            let f = &p[column];
            let (i, o) = (
                f["input_tokens"].as_u64().unwrap() as f64,
                f["output_tokens"].as_u64().unwrap() as f64,
            );
            assert!(i > 0.0 && o > 0.0, "{column} {p}");
            assert_cost(
                f["cost_usd"].as_f64().unwrap(),
                (i + o * 4.0) / 1e6,
                &format!("{column} {p}"),
            );
        }
    }
    // The gateway answered every Gemini client, during the outage too.
    let outage = &phases[1];
    assert_eq!(outage["ballast"]["success_rate"], 1.0, "{outage}");
    assert!(
        outage["ballast"]["time_to_failover_s"].as_f64().is_some(),
        "{outage}"
    );
    // The naive client rides the 2 s outage out with its retries, paying for them in attempts.
    assert!(
        outage["without_ballast"]["attempts_per_request"]
            .as_f64()
            .unwrap()
            > 1.5,
        "{outage}"
    );
}

#[test]
fn check_reports_every_error_with_its_key_path() {
    let file = tmp("bad.toml");
    let bad = NO_FALLBACK
        .replace("rate = 25", "rate = 0\napis = [\"anthropic\", \"grpc\"]")
        .replace("sim = \"primary\"", "sim = \"tertiary\"")
        .replace("status = 529", "status = 200")
        .replace(
            "[pass]",
            "[prices.\"my-model\"]\ninput_per_mtok = -1.0\noutput_per_mtok = 4.0\n\n[[pass.phase]]\nname = \"no such phase\"\nsuccess_rate = 0.9\n\n[pass]",
        )
        .replace(
            "targets = [\"primary/claude-sonnet-4-5\"]",
            "targets = [\"nobody/model\"]",
        );
    std::fs::write(&file, bad).unwrap();
    let o = ballast(&["chaos", "check", file.to_str().unwrap()]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    for path in [
        "traffic.rate:",
        "traffic.apis[1]:",
        "faults[0].sim:",
        "faults[0].set:",
        "gateway.routes.chat.targets[0]",
        "prices.\"my-model\".input_per_mtok:",
        "pass.phase[0].name:",
    ] {
        assert!(err.contains(path), "missing {path} in:\n{err}");
    }
    for name in ["outage-2026-06-02", "corruption-2025-08", "flap-2026-03-02"] {
        let o = ballast(&["chaos", "check", name]);
        assert!(o.status.success(), "{}", text(&o));
    }
}

#[test]
fn list_names_every_builtin() {
    let o = ballast(&["chaos", "list"]);
    assert!(o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    for name in [
        "outage-2026-06-02",
        "partial-2025-08",
        "corruption-2025-08",
        "rate-limit-storm",
        "brownout",
        "flap-2026-03-02",
        "midstream-cuts",
    ] {
        assert!(out.lines().any(|l| l.starts_with(name)), "{out}");
    }
}
