//! `config::diff`: every kind of change between two configurations, compared by name, the
//! redundancy rules, the JSON and table renderings, and the redacted rendering of a running
//! configuration that reads back to the same configuration.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use ballast_core::config::Config;
use ballast_core::config::diff::{self, ConfigDiff, Kind, Level, parse_redacted, redacted_toml};
use ballast_core::config::env::MapEnv;
use serde_json::{Value, json};

const SECRETS: [&str; 8] = [
    "sk-ant-secret",
    "sk-oai-secret",
    "gw-secret-1",
    "gw-secret-2",
    "adm-secret",
    "hdr-secret",
    "pd-secret",
    "otlp-secret",
];

fn env() -> MapEnv {
    MapEnv::new(&[
        ("A_KEY", "sk-ant-secret"),
        ("O_KEY", "sk-oai-secret"),
        ("HDR", "hdr-secret"),
    ])
}

fn load(text: &str) -> Config {
    match Config::from_toml(text, &env()) {
        Ok(c) => c,
        Err(e) => panic!("invalid test config:\n{e}\n{text}"),
    }
}

/// Two providers of different kinds and a local one; `chat` fails over across all three.
const BASE: &str = r#"
[policy]
deadline = "60s"

[providers.anthropic]
kind = "anthropic"
api_key = "${A_KEY}"

[providers.openai]
kind = "openai"
api_key = "${O_KEY}"
headers = { "openai-project" = "${HDR}" }

[providers.local]
kind = "openai-compatible"
base_url = "http://127.0.0.1:11434/v1"

[routes.chat]
targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1", "local/llama3"]

[routes.pair]
targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]

[routes.solo]
targets = ["local/llama3"]
"#;

fn d(old: &str, new: &str) -> ConfigDiff {
    diff::diff(&load(old), &load(new))
}

fn route<'a>(d: &'a ConfigDiff, name: &str) -> &'a diff::RouteDiff {
    d.routes
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("route {name} not in the diff: {d:#?}"))
}

/// The route's changes as `path: old → new` (JSON values).
fn changes(d: &ConfigDiff, name: &str) -> Vec<String> {
    route(d, name)
        .changes
        .iter()
        .map(|c| format!("{}: {} → {}", c.path, c.old, c.new))
        .collect()
}

fn codes(d: &ConfigDiff) -> Vec<(Level, &'static str, &str)> {
    d.findings
        .iter()
        .map(|f| (f.level, f.code, f.route.as_str()))
        .collect()
}

#[test]
fn the_same_configuration_has_no_changes() {
    let d = d(BASE, BASE);
    assert!(d.is_empty() && d.passes(), "{d:#?}");
    assert!(d.findings.is_empty());
    assert_eq!(d.redundancy.len(), 3, "every route's redundancy is listed");
    let j = d.to_json();
    assert_eq!(j["changed"], false);
    assert_eq!(j["passes"], true);
    assert!(d.table().contains("no changes"), "{}", d.table());
}

#[test]
fn routes_are_compared_by_name_and_targets_by_label_not_position() {
    // A provider whose name sorts first shifts every provider index, and the routes are written
    // in another order: nothing but the new provider differs.
    let new = BASE
        .replace(
            "[providers.anthropic]",
            "[providers.aaa]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n\n[providers.anthropic]",
        )
        .replace(
            "[routes.chat]",
            "[routes.zzz]\ntargets = [\"aaa/m\", \"local/llama3\"]\n\n[routes.chat]",
        );
    let d = d(BASE, &new);
    assert_eq!(d.routes.len(), 1, "{d:#?}");
    assert_eq!(route(&d, "zzz").change, Kind::Added);
    assert_eq!(d.providers.len(), 1);
    assert_eq!(d.providers[0].name, "aaa");
    assert_eq!(d.providers[0].change, Kind::Added);
}

#[test]
fn routes_added_and_removed() {
    let new = BASE
        .replace(
            "[routes.pair]\ntargets = [\"anthropic/claude-sonnet-4-5\", \"openai/gpt-4.1\"]\n",
            "",
        )
        .replace(
            "[routes.solo]",
            "[routes.fresh]\ntargets = [\"openai/gpt-4.1\", \"local/llama3\"]\n\n[routes.solo]",
        );
    let d = d(BASE, &new);
    let removed = route(&d, "pair");
    assert_eq!(removed.change, Kind::Removed);
    let labels: Vec<&str> = removed
        .targets_removed
        .iter()
        .map(|t| t.target.as_str())
        .collect();
    assert_eq!(labels, ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]);
    assert_eq!(removed.providers.old, Some(2));
    assert_eq!(removed.providers.new, None);
    let added = route(&d, "fresh");
    assert_eq!(added.change, Kind::Added);
    assert_eq!(added.targets_added.len(), 2);
    assert_eq!(added.targets_added[1].tier, 1);
    assert_eq!(
        codes(&d),
        vec![(Level::Warning, "route_removed", "pair")],
        "a route added with failover is fine; a removed one is a warning"
    );
}

#[test]
fn targets_added_removed_and_moved_between_tiers() {
    // gpt-4.1 leaves; gemini joins the first tier beside Claude; llama3 moves from tier 2 to 1.
    let new = BASE
        .replace(
            "[providers.local]",
            "[providers.gemini]\nkind = \"gemini\"\napi_key = \"g\"\n\n[providers.local]",
        )
        .replace(
            r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1", "local/llama3"]"#,
            r#"tiers = [{ targets = ["anthropic/claude-sonnet-4-5", "gemini/gemini-2.5-pro"] }, { targets = ["local/llama3"] }]"#,
        );
    let d = d(BASE, &new);
    let r = route(&d, "chat");
    assert_eq!(r.change, Kind::Changed);
    assert_eq!(
        r.targets_removed,
        [diff::TargetRef {
            target: "openai/gpt-4.1".into(),
            tier: 1,
            weight: 1
        }]
    );
    assert_eq!(
        r.targets_added,
        [diff::TargetRef {
            target: "gemini/gemini-2.5-pro".into(),
            tier: 0,
            weight: 1
        }]
    );
    assert_eq!(
        changes(&d, "chat"),
        ["routes.chat.targets[local/llama3].tier: 2 → 1"],
        "the relative order of the targets both sides share did not change"
    );
    assert_eq!(r.providers.old, Some(3));
    assert_eq!(r.providers.new, Some(3));
}

#[test]
fn reordering_the_failover_is_a_change() {
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"targets = ["openai/gpt-4.1", "anthropic/claude-sonnet-4-5"]"#,
    );
    let d = d(BASE, &new);
    assert_eq!(
        changes(&d, "pair"),
        [
            "routes.pair.targets[anthropic/claude-sonnet-4-5].tier: 0 → 1",
            "routes.pair.targets[openai/gpt-4.1].tier: 1 → 0",
            r#"routes.pair.order: [["anthropic/claude-sonnet-4-5"],["openai/gpt-4.1"]] → [["openai/gpt-4.1"],["anthropic/claude-sonnet-4-5"]]"#,
        ]
    );
    assert!(
        d.table()
            .contains("~ order: anthropic/claude-sonnet-4-5 → openai/gpt-4.1 → openai/gpt-4.1 → anthropic/claude-sonnet-4-5"),
        "{}",
        d.table()
    );
    // Within one tier, order decides nothing.
    let a = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"tiers = [{ targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"] }]"#,
    );
    let b = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"tiers = [{ targets = ["openai/gpt-4.1", "anthropic/claude-sonnet-4-5"] }]"#,
    );
    assert!(self::d(&a, &b).is_empty());
}

#[test]
fn weights_strategies_capabilities_and_max_tokens() {
    let old = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"tiers = [{ targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"] }]"#,
    );
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"tiers = [{ strategy = "latency", targets = ["anthropic/claude-sonnet-4-5", { provider = "openai", model = "gpt-4.1", weight = 3, capabilities = { sampling = "default-only", top_k = false } }] }]
max_tokens = 1024"#,
    );
    let d = d(&old, &new);
    assert_eq!(
        changes(&d, "pair"),
        [
            "routes.pair.targets[openai/gpt-4.1].weight: 1 → 3",
            r#"routes.pair.targets[openai/gpt-4.1].capabilities.sampling: null → "default-only""#,
            "routes.pair.targets[openai/gpt-4.1].capabilities.top_k: null → false",
            r#"routes.pair.tiers[0].strategy: "weighted" → "latency""#,
            "routes.pair.max_tokens: 4096 → 1024",
        ]
    );
    assert!(d.findings.is_empty(), "{:?}", d.findings);
}

#[test]
fn policy_changes_name_every_resolved_field() {
    // A route override, and a gateway default that reaches every route.
    let new = BASE
        .replace(
            "[routes.solo]",
            "[routes.pair.policy]\ncache = \"on\"\nfirst_token_timeout = \"5s\"\n\n[routes.solo]",
        )
        .replace(
            "deadline = \"60s\"",
            "deadline = \"90s\"\n[policy.breaker]\ncooldown = \"2s\"",
        );
    let d = d(BASE, &new);
    assert_eq!(
        changes(&d, "pair"),
        [
            r#"routes.pair.policy.deadline: "1m" → "1m 30s""#,
            r#"routes.pair.policy.first_token_timeout: "30s" → "5s""#,
            r#"routes.pair.policy.cache: "off" → "on""#,
            r#"routes.pair.policy.breaker.cooldown: "5s" → "2s""#,
        ]
    );
    assert_eq!(
        changes(&d, "solo"),
        [
            r#"routes.solo.policy.deadline: "1m" → "1m 30s""#,
            r#"routes.solo.policy.breaker.cooldown: "5s" → "2s""#,
        ]
    );
    let settings: Vec<&str> = d.settings.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(settings, ["policy.deadline", "policy.breaker.cooldown"]);
}

#[test]
fn providers_added_removed_and_changed_without_secret_values() {
    let new = BASE
        .replace(
            "headers = { \"openai-project\" = \"${HDR}\" }",
            "api = \"responses\"\nbase_url = \"https://proxy.example/v1\"\nheaders = { \"openai-organization\" = \"other-secret\" }",
        )
        .replace(
            "[providers.local]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:11434/v1\"\n",
            "[providers.vllm]\nkind = \"openai-compatible\"\nbase_url = \"http://10.0.0.2:8000/v1\"\napi_key = \"vllm-secret\"\n",
        )
        .replace("local/llama3", "vllm/llama3");
    let d = d(BASE, &new);
    let p = |name: &str| {
        let p = d.providers.iter().find(|p| p.name == name).unwrap();
        let c: Vec<String> = p
            .changes
            .iter()
            .map(|c| format!("{}: {} → {}", c.path, c.old, c.new))
            .collect();
        (p.change, c)
    };
    assert_eq!(
        p("openai"),
        (
            Kind::Changed,
            vec![
                r#"providers.openai.api: "openai-chat" → "openai-responses""#.to_owned(),
                r#"providers.openai.base_url: "https://api.openai.com/v1" → "https://proxy.example/v1""#.to_owned(),
                r#"providers.openai.headers: ["openai-project"] → ["openai-organization"]"#.to_owned(),
            ]
        )
    );
    let (kind, added) = p("vllm");
    assert_eq!(kind, Kind::Added);
    assert!(
        added.contains(&"providers.vllm.api_key: null → true".to_owned()),
        "{added:?}"
    );
    assert_eq!(p("local").0, Kind::Removed);
    // A header's or a key's value changing is not shown (nor compared): only names and presence.
    let quiet = BASE.replace("${HDR}", "changed-secret");
    assert!(self::d(BASE, &quiet).is_empty());
    let out = format!("{}\n{}", d.table(), d.to_json());
    for s in SECRETS.iter().chain(&["other-secret", "vllm-secret"]) {
        assert!(!out.contains(s), "{s} leaked:\n{out}");
    }
}

#[test]
fn a_route_left_with_one_provider_is_a_warning_and_an_error_with_strict() {
    // pair: Claude + GPT → two Claude models (one provider, two targets).
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"targets = ["anthropic/claude-sonnet-4-5", "anthropic/claude-haiku-4-5"]"#,
    );
    let d = d(BASE, &new);
    assert_eq!(codes(&d), vec![(Level::Warning, "single_provider", "pair")]);
    assert_eq!(
        d.findings[0].message,
        "left with a single provider (anthropic); it had 2 (anthropic, openai)"
    );
    assert!(d.passes(), "a warning passes");
    let strict = d.strict();
    assert_eq!(
        codes(&strict),
        vec![(Level::Error, "single_provider", "pair")]
    );
    assert!(!strict.passes());
    assert_eq!(strict.to_json()["passes"], false);
    assert_eq!(strict.to_json()["strict"], true);
    assert!(
        strict
            .table()
            .contains("error    routes.pair: left with a single provider"),
        "{}",
        strict.table()
    );
}

#[test]
fn a_route_left_with_one_target_is_a_warning() {
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"targets = ["openai/gpt-4.1"]"#,
    );
    let d = d(BASE, &new);
    assert_eq!(codes(&d), vec![(Level::Warning, "single_target", "pair")]);
    assert_eq!(
        d.findings[0].message,
        "left with a single target (openai/gpt-4.1); it had 2"
    );
    let r = route(&d, "pair");
    assert_eq!((r.providers.old, r.providers.new), (Some(2), Some(1)));
    assert_eq!((r.targets.old, r.targets.new), (Some(2), Some(1)));
}

#[test]
fn less_redundancy_with_failover_left_is_information() {
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1", "local/llama3"]"#,
        r#"targets = ["anthropic/claude-sonnet-4-5", "local/llama3"]"#,
    );
    let d = d(BASE, &new);
    assert_eq!(codes(&d), vec![(Level::Info, "redundancy_reduced", "chat")]);
    assert!(d.clone().strict().passes(), "information never fails");
}

#[test]
fn routes_added_without_failover_warn_and_unchanged_ones_do_not() {
    // solo has one target and stays so: not this change's doing. A new route with one is.
    let new = BASE
        .replace("[routes.solo]", "[routes.one]\ntargets = [\"openai/gpt-4.1\"]\n\n[routes.two]\ntargets = [\"openai/gpt-4.1\", \"openai/gpt-4.1-mini\"]\n\n[routes.solo]");
    let d = d(BASE, &new);
    assert_eq!(
        codes(&d),
        vec![
            (Level::Warning, "single_target", "one"),
            (Level::Warning, "single_provider", "two"),
        ]
    );
}

#[test]
fn a_route_with_no_targets_is_an_error_even_without_strict() {
    let old = load(BASE);
    let mut new = old.clone();
    let pair = new.routes.iter_mut().find(|r| r.name == "pair").unwrap();
    pair.targets.clear();
    pair.tiers.clear();
    let d = diff::diff(&old, &new);
    assert_eq!(codes(&d), vec![(Level::Error, "no_targets", "pair")]);
    assert!(!d.passes());
    assert_eq!(route(&d, "pair").targets_removed.len(), 2);
}

#[test]
fn settings_changes_show_counts_and_presence_not_secrets() {
    let new = format!(
        "[server]\nbody_limit = \"1MiB\"\n[auth]\ngateway_keys = [\"gw-secret-1\", \"gw-secret-2\"]\n[admin]\nkey = \"adm-secret\"\n{BASE}"
    );
    let d = d(BASE, &new);
    let s: Vec<String> = d
        .settings
        .iter()
        .map(|c| format!("{}: {} → {}", c.path, c.old, c.new))
        .collect();
    assert_eq!(
        s,
        [
            "server.body_limit: 16777216 → 1048576",
            "auth.gateway_keys: 0 → 2",
            "admin.key: false → true",
        ]
    );
    assert!(d.routes.is_empty() && d.providers.is_empty());
}

#[test]
fn the_json_shape_is_stable() {
    let new = BASE.replace(
        r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
        r#"targets = ["anthropic/claude-sonnet-4-5"]"#,
    );
    let j = d(BASE, &new).to_json();
    let keys: Vec<&str> = j.as_object().unwrap().keys().map(String::as_str).collect();
    for k in [
        "version",
        "strict",
        "changed",
        "passes",
        "summary",
        "routes",
        "redundancy",
        "providers",
        "settings",
        "findings",
    ] {
        assert!(keys.contains(&k), "{k} missing from {keys:?}");
    }
    assert_eq!(j["version"], 1);
    assert_eq!(
        j["summary"],
        json!({"routes_added": 0, "routes_removed": 0, "routes_changed": 1,
               "providers_added": 0, "providers_removed": 0, "providers_changed": 0,
               "settings_changed": 0, "errors": 0, "warnings": 1, "infos": 0})
    );
    assert_eq!(
        j["routes"],
        json!([{
            "name": "pair", "change": "changed",
            "targets_added": [],
            "targets_removed": [{"target": "openai/gpt-4.1", "tier": 1, "weight": 1}],
            "changes": [],
            "providers": {"old": 2, "new": 1},
            "targets": {"old": 2, "new": 1},
        }])
    );
    assert_eq!(
        j["redundancy"][1],
        json!({"route": "pair", "providers": {"old": 2, "new": 1}, "targets": {"old": 2, "new": 1}})
    );
    assert_eq!(
        j["findings"],
        json!([{"level": "warning", "code": "single_target", "route": "pair",
                "message": "left with a single target (anthropic/claude-sonnet-4-5); it had 2"}])
    );
}

#[test]
fn the_table_lists_every_route_and_each_change() {
    let new = BASE
        .replace(
            r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
            r#"targets = ["anthropic/claude-sonnet-4-5"]"#,
        )
        .replace("deadline = \"60s\"", "deadline = \"30s\"");
    let t = d(BASE, &new).table();
    for want in [
        "ROUTE  CHANGE    PROVIDERS  TARGETS",
        "chat   changed   3 → 3      3 → 3",
        "pair   changed   2 → 1      2 → 1",
        "solo   changed   1 → 1      1 → 1",
        "route pair (changed)\n  - openai/gpt-4.1 (tier 1, weight 1)\n  ~ policy.deadline: 1m → 30s",
        "settings\n  ~ policy.deadline: 1m → 30s",
        "warning  routes.pair: left with a single target (anthropic/claude-sonnet-4-5); it had 2",
        "changes: routes 0 added, 0 removed, 3 changed; providers 0 added, 0 removed, 0 changed; 1 settings changed; 0 errors, 1 warnings",
    ] {
        assert!(t.contains(want), "missing {want:?} in:\n{t}");
    }
}

/// Every kind of secret the configuration holds.
const FULL: &str = r#"
[server]
listen = "127.0.0.1:9000"
max_in_flight = 500
[auth]
gateway_keys = ["gw-secret-1", "gw-secret-2"]
[admin]
key = "adm-secret"
[limits]
max_event_bytes = "1MiB"
[signal]
eject = false
[probes]
interval = "0s"
[incidents]
store = ""
[[alerts.sinks]]
kind = "slack"
url = "https://hooks.slack.com/services/T0/B0/hdr-secret"
[[alerts.sinks]]
kind = "pagerduty"
routing_key = "pd-secret"
[telemetry]
otlp_endpoint = "http://otel:4318"
otlp_headers = { authorization = "Bearer otlp-secret" }
trace_sample_ratio = 0.25
[policy]
retries = 3
retry_budget_ratio = 0.1
[policy.breaker]
failure_ratio = 0.3
[providers.anthropic]
kind = "anthropic"
api_key = "${A_KEY}"
headers = { "anthropic-beta" = "${HDR}" }
[providers.openai]
kind = "openai"
api = "responses"
api_key = "${O_KEY}"
[providers."my.local"]
kind = "openai-compatible"
base_url = "http://127.0.0.1:1/v$$1"
[routes."gpt-4.1"]
targets = ["openai/gpt-4.1"]
[routes.chat]
tiers = [
  { strategy = "latency", targets = ["anthropic/claude-sonnet-4-5", { provider = "openai", model = "gpt-4.1", weight = 2, capabilities = { token_limit = "max_tokens", images = false } }] },
  { targets = ["my.local/llama3"] },
]
max_tokens = 2048
[routes.chat.policy]
deadline = "1m 30s"
stream_recovery = "complete"
content_policy = "fallback"
"#;

#[test]
fn the_redacted_rendering_reads_back_to_the_same_configuration() {
    for (name, text, env) in [
        ("FULL", FULL, env()),
        ("BASE", BASE, env()),
        (
            "examples/ballast.toml",
            include_str!("../../../examples/ballast.toml"),
            MapEnv::new(&[
                ("ANTHROPIC_API_KEY", "sk-ant-secret"),
                ("OPENAI_API_KEY", "sk-oai-secret"),
                ("GEMINI_API_KEY", "gem-secret"),
                ("BALLAST_GATEWAY_KEY", "gw-secret-1"),
                ("BALLAST_ADMIN_KEY", "adm-secret"),
            ]),
        ),
    ] {
        let running = Config::from_toml(text, &env).unwrap();
        let rendered = redacted_toml(&running);
        for s in SECRETS.iter().chain(&["gem-secret", "hooks.slack.com"]) {
            assert!(!rendered.contains(s), "{name}: {s} leaked:\n{rendered}");
        }
        let back = match parse_redacted(&rendered, &MapEnv::new(&[])) {
            Ok(c) => c,
            Err(e) => panic!("{name}: the rendering does not validate:\n{e}\n{rendered}"),
        };
        let d = diff::diff(&running, &back);
        assert!(d.is_empty(), "{name}: {}\n{rendered}", d.table());
        // And rendering is stable.
        assert_eq!(redacted_toml(&back), rendered, "{name}");
    }
}

#[test]
fn credentials_in_a_url_are_redacted() {
    let text = BASE.replace(
        "base_url = \"http://127.0.0.1:11434/v1\"",
        "base_url = \"http://user:hdr-secret@127.0.0.1:11434/v1\"",
    );
    let c = load(&text);
    let rendered = redacted_toml(&c);
    assert!(!rendered.contains("hdr-secret"), "{rendered}");
    assert!(
        rendered.contains("http://redacted@127.0.0.1:11434/v1"),
        "{rendered}"
    );
    let d = diff::diff(&load(BASE), &c);
    let out = format!("{}{}", d.table(), d.to_json());
    assert!(!out.contains("hdr-secret"), "{out}");
}

#[test]
fn a_running_rendering_diffs_against_a_candidate() {
    let running = redacted_toml(&load(BASE));
    let current = parse_redacted(&running, &MapEnv::new(&[])).unwrap();
    let candidate = load(&BASE.replace("deadline = \"60s\"", "deadline = \"45s\""));
    let d = diff::diff(&current, &candidate);
    assert_eq!(d.routes.len(), 3);
    assert_eq!(d.settings.len(), 1);
    assert!(
        d.providers.is_empty(),
        "redacted keys and headers compare equal to real ones: {:?}",
        d.providers
    );
    let v: Value = d.to_json();
    assert_eq!(v["settings"][0]["new"], "45s");
}
