//! What changes between two configurations (`ballast check --against`): routes, targets, tiers,
//! weights, policies and providers compared by name, and which routes lose redundancy. Also the
//! running configuration rendered back to TOML with every secret redacted (`GET /admin/config`),
//! so a candidate can be compared with what a gateway runs.
//!
//! [`diff`] is pure: two validated [`Config`]s in, a [`ConfigDiff`] out. Routes are matched by
//! name, targets by their `provider/model` label, providers by name — never by position. Policies
//! are compared resolved (a change of a `[policy]` default shows on every route it reaches), field
//! by field, each named by its key path (`routes.chat.policy.deadline`). Secrets are never
//! compared or shown: a provider's key is reported as present or not, its headers by name only,
//! gateway keys by their count, alert sinks by their kind.
//!
//! # Redundancy
//!
//! For every route, the number of distinct providers and of targets before and after. A route
//! that this change leaves with a single target, or a single provider when it had several, or
//! that is added with one, is a [`Level::Warning`]; with [`ConfigDiff::strict`] those become
//! [`Level::Error`]s. A removed route is a warning too (its clients will get 404). A route with no
//! target at all is always an error. Fewer providers or targets that still leave a failover is
//! [`Level::Info`]. The diff passes ([`ConfigDiff::passes`]) when it has no error.
//!
//! # JSON shape (`"version": 1`)
//!
//! [`ConfigDiff::to_json`] returns one object; every key is always present (empty arrays, `null`
//! for what does not exist on one side):
//!
//! ```json
//! {
//!   "version": 1,
//!   "strict": false,
//!   "changed": true,
//!   "passes": true,
//!   "summary": {"routes_added": 0, "routes_removed": 0, "routes_changed": 1,
//!               "providers_added": 0, "providers_removed": 1, "providers_changed": 0,
//!               "settings_changed": 0, "errors": 0, "warnings": 1, "infos": 0},
//!   "routes": [{
//!     "name": "chat", "change": "changed",            // added | removed | changed
//!     "targets_added":   [],
//!     "targets_removed": [{"target": "openai/gpt-4.1", "tier": 1, "weight": 1}],
//!     "changes": [{"path": "routes.chat.policy.deadline", "old": "1m", "new": "30s"}],
//!     "providers": {"old": 2, "new": 1},                // distinct providers (null: no route)
//!     "targets":   {"old": 2, "new": 1}
//!   }],
//!   "redundancy": [{"route": "chat", "providers": {"old": 2, "new": 1},
//!                   "targets": {"old": 2, "new": 1}}],   // every route of either side
//!   "providers": [{"name": "openai", "change": "removed",
//!                  "changes": [{"path": "providers.openai.kind", "old": "openai", "new": null}]}],
//!   "settings": [{"path": "server.body_limit", "old": 16777216, "new": 1048576}],
//!   "findings": [{"level": "warning", "code": "single_target", "route": "chat",
//!                 "message": "left with a single target (anthropic/claude-sonnet-4-5); it had 2"}]
//! }
//! ```
//!
//! `old`/`new` values are JSON: durations as humantime strings (`"1m 30s"`), sizes as bytes,
//! enums as their configuration spelling, `null` when unset or absent. Route change paths:
//! `routes.R.targets[P/M].tier` (its tier index), `.weight`, `.capabilities.FIELD`;
//! `routes.R.tiers[I].strategy`; `routes.R.order` (the failover order of the targets both sides
//! share, as tiers of labels, when it changed); `routes.R.max_tokens`; `routes.R.policy.FIELD`
//! (`breaker.FIELD` nested). Provider paths: `.kind`, `.api` (the wire format spoken to it:
//! `openai-chat`, `openai-responses`, `anthropic-messages`, `gemini`), `.base_url` (credentials in
//! the URL redacted on both sides, so a change of credentials alone is not shown), `.api_key`
//! (`true` when set), `.headers` (the names). Settings paths are the TOML keys (`server.listen`,
//! `policy.deadline`, `limits.max_event_bytes`, …), with `auth.gateway_keys` as a count,
//! `admin.key` as presence, `alerts.sinks` as kinds, `telemetry.otlp_headers` as names and
//! `rollout.steps` as a list of `{"share": 0.05, "hold": "2m"}`.
//! Finding codes: `no_targets`, `route_removed`, `single_target`, `single_provider`,
//! `redundancy_reduced`.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;
use serde_json::{Value, json};

use super::env::Env;
use super::{AlertSink, Config, ConfigErrors, Policy, Provider, Route, Strategy};
use crate::capability::{RulesOverride, Sampling, TokenLimit};
use crate::config::policy::{CacheMode, ContentPolicyAction, StreamRecovery};

/// The variable every secret is replaced by in [`redacted_toml`].
pub const REDACTED_VAR: &str = "BALLAST_REDACTED";
/// The variable a secret URL (an alert sink's) is replaced by in [`redacted_toml`].
pub const REDACTED_URL_VAR: &str = "BALLAST_REDACTED_URL";
/// What [`CompareEnv`] resolves [`REDACTED_VAR`] (and unset variables) to.
const REDACTED_VALUE: &str = "redacted";
/// What [`CompareEnv`] resolves [`REDACTED_URL_VAR`] to.
const REDACTED_URL_VALUE: &str = "https://redacted.invalid";

/// Whether a thing exists on one side only, or on both with differences.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    Added,
    Removed,
    Changed,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Added => "added",
            Kind::Removed => "removed",
            Kind::Changed => "changed",
        }
    }
}

/// How much a finding matters: only errors fail the check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    Info,
    Warning,
    Error,
}

impl Level {
    fn as_str(self) -> &'static str {
        match self {
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
        }
    }
}

/// One value that differs, named by its key path; `Null` on the side where it is unset or absent.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Change {
    pub path: String,
    pub old: Value,
    pub new: Value,
}

/// A target as one side has it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct TargetRef {
    /// `provider/model`.
    pub target: String,
    /// Its tier's index in the route (0: tried first).
    pub tier: usize,
    pub weight: u32,
}

/// A count before and after; `None` where the route does not exist.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Count {
    pub old: Option<usize>,
    pub new: Option<usize>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RouteDiff {
    pub name: String,
    pub change: Kind,
    pub targets_added: Vec<TargetRef>,
    pub targets_removed: Vec<TargetRef>,
    /// Everything else that differs (tiers, weights, capabilities, order, max_tokens, policy).
    pub changes: Vec<Change>,
    /// Distinct providers among the route's targets.
    pub providers: Count,
    pub targets: Count,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProviderDiff {
    pub name: String,
    pub change: Kind,
    /// Every field of an added or removed provider; the differing ones of a changed provider.
    pub changes: Vec<Change>,
}

/// A route's redundancy before and after (every route of either side).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Redundancy {
    pub route: String,
    pub providers: Count,
    pub targets: Count,
}

/// Something about the change worth a word: a route losing its failover, a route removed.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Finding {
    pub level: Level,
    /// Stable: `no_targets`, `route_removed`, `single_target`, `single_provider`,
    /// `redundancy_reduced`.
    pub code: &'static str,
    pub route: String,
    pub message: String,
}

/// What changes from one configuration to another. See the module docs for its JSON shape.
#[derive(Clone, Debug, PartialEq)]
pub struct ConfigDiff {
    /// Routes added, removed or changed, by name.
    pub routes: Vec<RouteDiff>,
    /// Every route of either side, by name.
    pub redundancy: Vec<Redundancy>,
    pub providers: Vec<ProviderDiff>,
    /// Gateway-wide settings (`[server]`, `[policy]` defaults, `[limits]`, …).
    pub settings: Vec<Change>,
    pub findings: Vec<Finding>,
    /// Whether [`ConfigDiff::strict`] raised warnings to errors.
    pub strict: bool,
}

/// Compares `old` (say, the running configuration) with `new` (the candidate).
pub fn diff(old: &Config, new: &Config) -> ConfigDiff {
    let old_routes: BTreeMap<&str, &Route> = old.routes.iter().map(|r| (&*r.name, r)).collect();
    let new_routes: BTreeMap<&str, &Route> = new.routes.iter().map(|r| (&*r.name, r)).collect();
    let names: BTreeSet<&str> = old_routes
        .keys()
        .chain(new_routes.keys())
        .copied()
        .collect();
    let mut routes = Vec::new();
    let mut redundancy = Vec::new();
    let mut findings = Vec::new();
    for name in names {
        let o = old_routes.get(name).map(|r| Layout::of(old, r));
        let n = new_routes.get(name).map(|r| Layout::of(new, r));
        let providers = Count {
            old: o.as_ref().map(Layout::providers),
            new: n.as_ref().map(Layout::providers),
        };
        let targets = Count {
            old: o.as_ref().map(|l| l.targets.len()),
            new: n.as_ref().map(|l| l.targets.len()),
        };
        redundancy.push(Redundancy {
            route: name.to_owned(),
            providers,
            targets,
        });
        if let Some(f) = redundancy_finding(name, o.as_ref(), n.as_ref()) {
            findings.push(f);
        }
        let d = match (&o, &n) {
            (Some(o), None) => Some(RouteDiff {
                name: name.to_owned(),
                change: Kind::Removed,
                targets_added: Vec::new(),
                targets_removed: o.targets.iter().map(Placed::reference).collect(),
                changes: Vec::new(),
                providers,
                targets,
            }),
            (None, Some(n)) => Some(RouteDiff {
                name: name.to_owned(),
                change: Kind::Added,
                targets_added: n.targets.iter().map(Placed::reference).collect(),
                targets_removed: Vec::new(),
                changes: Vec::new(),
                providers,
                targets,
            }),
            (Some(o), Some(n)) => changed_route(name, o, n, providers, targets),
            (None, None) => None,
        };
        routes.extend(d);
    }
    ConfigDiff {
        routes,
        redundancy,
        providers: providers_diff(old, new),
        settings: fields_diff("", &settings(old), &settings(new)),
        findings,
        strict: false,
    }
}

/// A route's targets in failover order, labelled.
struct Layout<'a> {
    targets: Vec<Placed<'a>>,
    tiers: Vec<Strategy>,
    max_tokens: u32,
    policy: &'a Policy,
}

struct Placed<'a> {
    label: String,
    provider: &'a str,
    tier: usize,
    weight: u32,
    capabilities: RulesOverride,
}

impl Placed<'_> {
    fn reference(&self) -> TargetRef {
        TargetRef {
            target: self.label.clone(),
            tier: self.tier,
            weight: self.weight,
        }
    }
}

impl<'a> Layout<'a> {
    fn of(c: &'a Config, r: &'a Route) -> Self {
        let mut targets = Vec::new();
        for (ti, tier) in r.tiers.iter().enumerate() {
            for t in r.targets.get(tier.targets.clone()).unwrap_or_default() {
                let provider = c
                    .providers
                    .get(t.provider.0)
                    .map_or("?", |p| p.name.as_str());
                targets.push(Placed {
                    label: format!("{provider}/{}", t.model),
                    provider,
                    tier: ti,
                    weight: t.weight,
                    capabilities: t.capabilities,
                });
            }
        }
        Self {
            targets,
            tiers: r.tiers.iter().map(|t| t.strategy).collect(),
            max_tokens: r.max_tokens,
            policy: &r.policy,
        }
    }

    fn providers(&self) -> usize {
        self.provider_names().len()
    }

    fn provider_names(&self) -> BTreeSet<&'a str> {
        self.targets.iter().map(|t| t.provider).collect()
    }

    fn find(&self, label: &str) -> Option<&Placed<'a>> {
        self.targets.iter().find(|t| t.label == label)
    }

    /// The labels of `keep` in failover order, grouped by tier (empty groups left out).
    fn order(&self, keep: &BTreeSet<&str>) -> Vec<Vec<String>> {
        let mut out: Vec<Vec<String>> = Vec::new();
        let mut last = None;
        for t in self
            .targets
            .iter()
            .filter(|t| keep.contains(t.label.as_str()))
        {
            match out.last_mut() {
                Some(group) if last == Some(t.tier) => group.push(t.label.clone()),
                _ => out.push(vec![t.label.clone()]),
            }
            last = Some(t.tier);
        }
        for group in &mut out {
            // Within a tier, order does not decide anything (weights or latency do).
            group.sort();
        }
        out
    }
}

fn changed_route(
    name: &str,
    o: &Layout<'_>,
    n: &Layout<'_>,
    providers: Count,
    targets: Count,
) -> Option<RouteDiff> {
    let base = format!("routes.{name}");
    let targets_removed: Vec<TargetRef> = o
        .targets
        .iter()
        .filter(|t| n.find(&t.label).is_none())
        .map(Placed::reference)
        .collect();
    let targets_added: Vec<TargetRef> = n
        .targets
        .iter()
        .filter(|t| o.find(&t.label).is_none())
        .map(Placed::reference)
        .collect();
    let mut changes = Vec::new();
    let mut common = BTreeSet::new();
    for t in &o.targets {
        let Some(nt) = n.find(&t.label) else { continue };
        common.insert(t.label.as_str());
        let tpath = format!("{base}.targets[{}]", t.label);
        if t.tier != nt.tier {
            changes.push(change(
                format!("{tpath}.tier"),
                json!(t.tier),
                json!(nt.tier),
            ));
        }
        if t.weight != nt.weight {
            changes.push(change(
                format!("{tpath}.weight"),
                json!(t.weight),
                json!(nt.weight),
            ));
        }
        changes.extend(fields_diff(
            &format!("{tpath}.capabilities."),
            &capability_fields(&t.capabilities),
            &capability_fields(&nt.capabilities),
        ));
    }
    for (i, (os, ns)) in o.tiers.iter().zip(&n.tiers).enumerate() {
        if os != ns {
            changes.push(change(
                format!("{base}.tiers[{i}].strategy"),
                json!(strategy(*os)),
                json!(strategy(*ns)),
            ));
        }
    }
    let (oo, no) = (o.order(&common), n.order(&common));
    if oo != no {
        changes.push(change(format!("{base}.order"), json!(oo), json!(no)));
    }
    if o.max_tokens != n.max_tokens {
        changes.push(change(
            format!("{base}.max_tokens"),
            json!(o.max_tokens),
            json!(n.max_tokens),
        ));
    }
    changes.extend(fields_diff(
        &format!("{base}.policy."),
        &policy_fields(o.policy),
        &policy_fields(n.policy),
    ));
    if targets_added.is_empty() && targets_removed.is_empty() && changes.is_empty() {
        return None;
    }
    Some(RouteDiff {
        name: name.to_owned(),
        change: Kind::Changed,
        targets_added,
        targets_removed,
        changes,
        providers,
        targets,
    })
}

fn redundancy_finding(
    name: &str,
    o: Option<&Layout<'_>>,
    n: Option<&Layout<'_>>,
) -> Option<Finding> {
    let finding = |level, code, message: String| {
        Some(Finding {
            level,
            code,
            route: name.to_owned(),
            message,
        })
    };
    let list = |names: BTreeSet<&str>| names.into_iter().collect::<Vec<_>>().join(", ");
    let Some(n) = n else {
        return finding(
            Level::Warning,
            "route_removed",
            format!("route removed: clients sending model {name:?} will get 404"),
        );
    };
    let (pn, tn) = (n.providers(), n.targets.len());
    if tn == 0 {
        return finding(Level::Error, "no_targets", "has no targets".to_owned());
    }
    let Some(o) = o else {
        if tn == 1 {
            return finding(
                Level::Warning,
                "single_target",
                format!(
                    "added with a single target ({}): no failover",
                    n.targets.first().map_or("?", |t| t.label.as_str())
                ),
            );
        }
        if pn == 1 {
            return finding(
                Level::Warning,
                "single_provider",
                format!(
                    "added with a single provider ({}): no failover to another provider",
                    list(n.provider_names())
                ),
            );
        }
        return None;
    };
    let (po, to) = (o.providers(), o.targets.len());
    if tn == 1 && to > 1 {
        return finding(
            Level::Warning,
            "single_target",
            format!(
                "left with a single target ({}); it had {to}",
                n.targets.first().map_or("?", |t| t.label.as_str())
            ),
        );
    }
    if pn == 1 && po > 1 {
        return finding(
            Level::Warning,
            "single_provider",
            format!(
                "left with a single provider ({}); it had {po} ({})",
                list(n.provider_names()),
                list(o.provider_names())
            ),
        );
    }
    if pn < po || tn < to {
        return finding(
            Level::Info,
            "redundancy_reduced",
            format!("redundancy reduced: providers {po} → {pn}, targets {to} → {tn}"),
        );
    }
    None
}

fn providers_diff(old: &Config, new: &Config) -> Vec<ProviderDiff> {
    let o: BTreeMap<&str, &Provider> = old.providers.iter().map(|p| (&*p.name, p)).collect();
    let n: BTreeMap<&str, &Provider> = new.providers.iter().map(|p| (&*p.name, p)).collect();
    let names: BTreeSet<&str> = o.keys().chain(n.keys()).copied().collect();
    let mut out = Vec::new();
    for name in names {
        let prefix = format!("providers.{name}.");
        let of = o.get(name).map(|p| provider_fields(p)).unwrap_or_default();
        let nf = n.get(name).map(|p| provider_fields(p)).unwrap_or_default();
        let change = match (o.contains_key(name), n.contains_key(name)) {
            (true, false) => Kind::Removed,
            (false, true) => Kind::Added,
            _ => Kind::Changed,
        };
        let changes = fields_diff(&prefix, &of, &nf);
        if !changes.is_empty() {
            out.push(ProviderDiff {
                name: name.to_owned(),
                change,
                changes,
            });
        }
    }
    out
}

fn change(path: String, old: Value, new: Value) -> Change {
    Change { path, old, new }
}

/// The differing fields of two field lists, by key, in the order of `old` then `new`'s own.
fn fields_diff(prefix: &str, old: &[(String, Value)], new: &[(String, Value)]) -> Vec<Change> {
    let get = |list: &[(String, Value)], k: &str| {
        list.iter()
            .find(|(key, _)| key == k)
            .map_or(Value::Null, |(_, v)| v.clone())
    };
    let mut keys: Vec<&str> = old.iter().map(|(k, _)| k.as_str()).collect();
    for (k, _) in new {
        if !keys.contains(&k.as_str()) {
            keys.push(k);
        }
    }
    keys.into_iter()
        .filter_map(|k| {
            let (a, b) = (get(old, k), get(new, k));
            (a != b).then(|| change(format!("{prefix}{k}"), a, b))
        })
        .collect()
}

fn dur(d: Duration) -> Value {
    Value::String(humantime_serde::re::humantime::format_duration(d).to_string())
}

fn strategy(s: Strategy) -> &'static str {
    match s {
        Strategy::Weighted => "weighted",
        Strategy::Latency => "latency",
    }
}

fn fields(list: Vec<(&str, Value)>) -> Vec<(String, Value)> {
    list.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// A resolved policy as `(key, value)`, keys as `[policy]` spells them.
fn policy_fields(p: &Policy) -> Vec<(String, Value)> {
    let content = match p.content_policy {
        ContentPolicyAction::Return => "return",
        ContentPolicyAction::Fallback => "fallback",
    };
    let recovery = match p.stream_recovery {
        StreamRecovery::Continue => "continue",
        StreamRecovery::Off => "off",
        StreamRecovery::Complete => "complete",
    };
    let cache = match p.cache {
        CacheMode::Off => "off",
        CacheMode::On => "on",
        CacheMode::StaleOnError => "stale-on-error",
    };
    let b = &p.breaker;
    fields(vec![
        ("deadline", dur(p.deadline)),
        ("first_token_timeout", dur(p.first_token_timeout)),
        ("response_timeout", dur(p.response_timeout)),
        ("idle_timeout", dur(p.idle_timeout)),
        ("attempt_timeout", dur(p.attempt_timeout)),
        ("retries", json!(p.retries)),
        ("backoff_base", dur(p.backoff.base)),
        ("backoff_cap", dur(p.backoff.cap)),
        ("retry_budget_ratio", json!(p.retry_budget.ratio)),
        ("retry_budget_window", dur(p.retry_budget.window)),
        (
            "retry_budget_min_per_second",
            json!(p.retry_budget.min_per_second),
        ),
        (
            "max_in_flight_per_target",
            json!(p.max_in_flight_per_target),
        ),
        ("content_policy", json!(content)),
        ("stream_recovery", json!(recovery)),
        ("cache", json!(cache)),
        ("cache_ttl", dur(p.cache_ttl)),
        ("cache_stale_ttl", dur(p.cache_stale_ttl)),
        ("breaker.failure_ratio", json!(b.failure_ratio)),
        ("breaker.window", dur(b.window)),
        ("breaker.min_requests", json!(b.min_requests)),
        (
            "breaker.consecutive_failures",
            json!(b.consecutive_failures),
        ),
        ("breaker.cooldown", dur(b.cooldown)),
        ("breaker.max_cooldown", dur(b.max_cooldown)),
        ("breaker.half_open_trials", json!(b.half_open_trials)),
    ])
}

/// Policy keys a route may not set (they belong to targets, which routes share).
fn route_may_set(key: &str) -> bool {
    !key.starts_with("breaker.") && !key.starts_with("retry_budget_")
}

/// A target's capability overrides as `(key, value)`; `Null` where the table's value stands.
fn capability_fields(c: &RulesOverride) -> Vec<(String, Value)> {
    let sampling = c.sampling.map(|s| match s {
        Sampling::Any => "any",
        Sampling::TemperatureOrTopP => "temperature-or-top-p",
        Sampling::DefaultOnly => "default-only",
    });
    let token_limit = c.token_limit.map(|t| match t {
        TokenLimit::MaxTokens => "max_tokens",
        TokenLimit::MaxCompletionTokens => "max_completion_tokens",
    });
    fields(vec![
        ("sampling", json!(sampling)),
        ("top_k", json!(c.top_k)),
        ("token_limit", json!(token_limit)),
        ("prefill", json!(c.prefill)),
        ("system_prompt", json!(c.system_prompt)),
        ("forced_tool_choice", json!(c.forced_tool_choice)),
        ("parallel_tool_calls", json!(c.parallel_tool_calls)),
        ("images", json!(c.images)),
        ("structured_output", json!(c.structured_output)),
    ])
}

/// What the `api` key of a provider says, when it is not the kind's own format.
fn provider_api(p: &Provider) -> Option<&'static str> {
    use crate::api::ApiFormat;
    if p.format == p.kind.format() {
        return None;
    }
    match p.format {
        ApiFormat::OpenAiChat => Some("chat"),
        ApiFormat::OpenAiResponses => Some("responses"),
        // Not reachable from a validated configuration; shown rather than hidden.
        other => Some(other.as_str()),
    }
}

/// A provider as `(key, value)`, secrets as presence (`api_key`) or names (`headers`) only.
fn provider_fields(p: &Provider) -> Vec<(String, Value)> {
    let headers: Vec<&str> = p.headers.iter().map(|(n, _)| n.as_str()).collect();
    fields(vec![
        ("kind", json!(p.kind.as_str())),
        ("api", json!(p.format.as_str())),
        ("base_url", json!(redact_userinfo(&p.base_url))),
        ("api_key", json!(p.api_key.is_some())),
        ("headers", json!(headers)),
    ])
}

/// `scheme://user:password@host/…` → `scheme://redacted@host/…`: credentials in a URL are secrets.
fn redact_userinfo(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(end);
    match authority.rfind('@') {
        Some(at) => format!("{scheme}://{REDACTED_VALUE}@{}{path}", &authority[at + 1..]),
        None => url.to_owned(),
    }
}

/// Gateway-wide settings as `(key path, value)`; secrets as counts, presence or kinds. `Null`:
/// unset.
fn settings(c: &Config) -> Vec<(String, Value)> {
    let s = &c.server;
    let t = &c.telemetry;
    let store = if c.incidents.store_set {
        json!(
            c.incidents
                .store
                .as_ref()
                .map_or_else(String::new, |p| p.to_string_lossy().into_owned())
        )
    } else {
        Value::Null
    };
    let sinks: Vec<&str> = c
        .alerts
        .iter()
        .map(|a| match a {
            AlertSink::Webhook { .. } => "webhook",
            AlertSink::Slack { .. } => "slack",
            AlertSink::PagerDuty { .. } => "pagerduty",
        })
        .collect();
    let otlp_headers: Vec<&str> = t.otlp_headers.iter().map(|(n, _)| n.as_str()).collect();
    let r = &c.rollout;
    let steps: Vec<Value> = r
        .steps
        .iter()
        .map(|s| json!({"share": s.share, "hold": dur(s.hold)}))
        .collect();
    let mut out = fields(vec![
        ("server.listen", json!(s.listen.to_string())),
        ("server.body_limit", json!(s.body_limit)),
        ("server.connect_timeout", dur(s.connect_timeout)),
        ("server.max_in_flight", json!(s.max_in_flight)),
        ("server.body_timeout", dur(s.body_timeout)),
        ("auth.gateway_keys", json!(c.auth.gateway_keys.len())),
        ("admin.key", json!(c.admin.key.is_some())),
        ("cache.max_bytes", json!(c.cache.max_bytes)),
        ("cache.max_entry_bytes", json!(c.cache.max_entry_bytes)),
        ("limits.max_event_bytes", json!(c.limits.max_event_bytes)),
        (
            "limits.max_first_token_bytes",
            json!(c.limits.max_first_token_bytes),
        ),
        ("limits.max_answer_bytes", json!(c.limits.max_answer_bytes)),
        (
            "limits.max_tool_args_bytes",
            json!(c.limits.max_tool_args_bytes),
        ),
        (
            "limits.max_buffered_bytes",
            json!(c.limits.max_buffered_bytes),
        ),
        ("alerts.sinks", json!(sinks)),
        (
            "alerts.digest",
            json!(match c.alerts_digest {
                super::Digest::Weekly => "weekly",
                super::Digest::Off => "off",
            }),
        ),
        ("signal.eject", json!(c.signal.eject)),
        ("signal.detectors", json!(c.signal.detectors)),
        ("incidents.store", store),
        ("probes.interval", dur(c.probes.interval)),
        ("probes.max_per_day", json!(c.probes.max_per_day)),
        ("rollout.steps", json!(steps)),
        ("rollout.alpha", json!(r.alpha)),
        ("rollout.error_tolerance", json!(r.error_tolerance)),
        ("rollout.latency_tolerance", json!(r.latency_tolerance)),
        ("rollout.quality_tolerance", json!(r.quality_tolerance)),
        ("rollout.min_requests", json!(r.min_requests)),
        ("rollout.probe", json!(r.probe)),
        (
            "telemetry.metrics_listen",
            json!(t.metrics_listen.map(|a| a.to_string())),
        ),
        (
            "telemetry.otlp_endpoint",
            json!(t.otlp_endpoint.as_deref().map(redact_userinfo)),
        ),
        ("telemetry.otlp_headers", json!(otlp_headers)),
        ("telemetry.otlp_timeout", dur(t.otlp_timeout)),
        ("telemetry.service_name", json!(t.service_name)),
        ("telemetry.trace_sample_ratio", json!(t.trace_sample_ratio)),
        ("telemetry.access_log_sample", json!(t.access_log_sample)),
    ]);
    out.extend(
        policy_fields(&c.policy)
            .into_iter()
            .map(|(k, v)| (format!("policy.{k}"), v)),
    );
    out
}

impl ConfigDiff {
    /// Raises every warning to an error (`--strict`).
    #[must_use]
    pub fn strict(mut self) -> Self {
        for f in &mut self.findings {
            if f.level == Level::Warning {
                f.level = Level::Error;
            }
        }
        self.strict = true;
        self
    }

    /// Whether nothing differs.
    pub fn is_empty(&self) -> bool {
        self.routes.is_empty() && self.providers.is_empty() && self.settings.is_empty()
    }

    /// The change in one line, for a version history: what was added, removed and changed, by
    /// name, and how many warnings and errors it raises.
    pub fn summary(&self) -> String {
        if self.is_empty() {
            return "no change".to_owned();
        }
        let mut parts = Vec::new();
        for (change, sign) in [
            (Kind::Added, "+"),
            (Kind::Removed, "-"),
            (Kind::Changed, "~"),
        ] {
            let names: Vec<&str> = self
                .routes
                .iter()
                .filter(|r| r.change == change)
                .map(|r| r.name.as_str())
                .collect();
            if !names.is_empty() {
                parts.push(format!("route {sign}{}", names.join(&format!(" {sign}"))));
            }
            let names: Vec<&str> = self
                .providers
                .iter()
                .filter(|p| p.change == change)
                .map(|p| p.name.as_str())
                .collect();
            if !names.is_empty() {
                parts.push(format!(
                    "provider {sign}{}",
                    names.join(&format!(" {sign}"))
                ));
            }
        }
        if !self.settings.is_empty() {
            let keys: Vec<&str> = self.settings.iter().map(|c| c.path.as_str()).collect();
            parts.push(format!("settings ~{}", keys.join(" ~")));
        }
        let (w, e) = (
            self.count_findings(Level::Warning),
            self.count_findings(Level::Error),
        );
        if w + e > 0 {
            parts.push(format!("{w} warning(s), {e} error(s)"));
        }
        parts.join("; ")
    }

    /// Whether no finding is an error.
    pub fn passes(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Error)
    }

    fn count_findings(&self, level: Level) -> usize {
        self.findings.iter().filter(|f| f.level == level).count()
    }

    /// The diff as JSON, in the shape the module docs describe.
    pub fn to_json(&self) -> Value {
        let routes = |k| self.routes.iter().filter(|r| r.change == k).count();
        let providers = |k| self.providers.iter().filter(|p| p.change == k).count();
        json!({
            "version": 1,
            "strict": self.strict,
            "changed": !self.is_empty(),
            "passes": self.passes(),
            "summary": {
                "routes_added": routes(Kind::Added),
                "routes_removed": routes(Kind::Removed),
                "routes_changed": routes(Kind::Changed),
                "providers_added": providers(Kind::Added),
                "providers_removed": providers(Kind::Removed),
                "providers_changed": providers(Kind::Changed),
                "settings_changed": self.settings.len(),
                "errors": self.count_findings(Level::Error),
                "warnings": self.count_findings(Level::Warning),
                "infos": self.count_findings(Level::Info),
            },
            "routes": self.routes,
            "redundancy": self.redundancy,
            "providers": self.providers,
            "settings": self.settings,
            "findings": self.findings,
        })
    }

    /// The diff for people: every route with its redundancy, then what changed, then findings.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let count = |c: Count| {
            let side = |n: Option<usize>| n.map_or_else(|| "-".to_owned(), |n| n.to_string());
            format!("{} → {}", side(c.old), side(c.new))
        };
        let width = self
            .redundancy
            .iter()
            .map(|r| r.route.chars().count())
            .max()
            .unwrap_or(0)
            .max(5);
        let _ = writeln!(
            out,
            "{:<width$}  {:<8}  {:<9}  TARGETS",
            "ROUTE", "CHANGE", "PROVIDERS"
        );
        for r in &self.redundancy {
            let change = self
                .routes
                .iter()
                .find(|d| d.name == r.route)
                .map_or("-", |d| d.change.as_str());
            let _ = writeln!(
                out,
                "{:<width$}  {:<8}  {:<9}  {}",
                r.route,
                change,
                count(r.providers),
                count(r.targets)
            );
        }
        for r in &self.routes {
            let _ = writeln!(out, "\nroute {} ({})", r.name, r.change.as_str());
            let prefix = format!("routes.{}.", r.name);
            for t in &r.targets_removed {
                let _ = writeln!(
                    out,
                    "  - {} (tier {}, weight {})",
                    t.target, t.tier, t.weight
                );
            }
            for t in &r.targets_added {
                let _ = writeln!(
                    out,
                    "  + {} (tier {}, weight {})",
                    t.target, t.tier, t.weight
                );
            }
            for c in &r.changes {
                write_change(&mut out, c, &prefix);
            }
        }
        for p in &self.providers {
            let _ = writeln!(out, "\nprovider {} ({})", p.name, p.change.as_str());
            let prefix = format!("providers.{}.", p.name);
            for c in &p.changes {
                write_change(&mut out, c, &prefix);
            }
        }
        if !self.settings.is_empty() {
            let _ = writeln!(out, "\nsettings");
            for c in &self.settings {
                write_change(&mut out, c, "");
            }
        }
        if !self.findings.is_empty() {
            out.push('\n');
            for f in &self.findings {
                let _ = writeln!(
                    out,
                    "{:<7}  routes.{}: {}",
                    f.level.as_str(),
                    f.route,
                    f.message
                );
            }
        }
        let routes = |k| self.routes.iter().filter(|r| r.change == k).count();
        let providers = |k| self.providers.iter().filter(|p| p.change == k).count();
        let _ = write!(
            out,
            "\n{}: routes {} added, {} removed, {} changed; providers {} added, {} removed, {} changed; \
             {} settings changed; {} errors, {} warnings{}\n",
            if self.is_empty() {
                "no changes"
            } else {
                "changes"
            },
            routes(Kind::Added),
            routes(Kind::Removed),
            routes(Kind::Changed),
            providers(Kind::Added),
            providers(Kind::Removed),
            providers(Kind::Changed),
            self.settings.len(),
            self.count_findings(Level::Error),
            self.count_findings(Level::Warning),
            if self.strict { " (strict)" } else { "" },
        );
        out
    }
}

fn write_change(out: &mut String, c: &Change, prefix: &str) {
    let path = c.path.strip_prefix(prefix).unwrap_or(&c.path);
    let mark = match (&c.old, &c.new) {
        (Value::Null, _) => '+',
        (_, Value::Null) => '-',
        _ => '~',
    };
    let _ = writeln!(
        out,
        "  {mark} {path}: {} → {}",
        shown(&c.old),
        shown(&c.new)
    );
}

/// A value for people: strings bare, lists comma-separated, a failover order as `a → [b | c]`.
fn shown(v: &Value) -> String {
    match v {
        Value::Null => "(unset)".to_owned(),
        Value::String(s) => s.clone(),
        Value::Array(items) if items.iter().all(Value::is_array) => items
            .iter()
            .map(|group| match group.as_array().map(Vec::as_slice) {
                Some([one]) => shown(one),
                Some(many) => format!(
                    "[{}]",
                    many.iter().map(shown).collect::<Vec<_>>().join(" | ")
                ),
                None => shown(group),
            })
            .collect::<Vec<_>>()
            .join(" → "),
        Value::Array(items) if items.is_empty() => "(none)".to_owned(),
        Value::Array(items) => items.iter().map(shown).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

// ---------------------------------------------------------------------------------------------
// The running configuration as TOML, secrets redacted.

/// Renders `c` as a configuration file that validates back to the same configuration (every value
/// resolved and explicit, routes as tiers), except for secrets: provider keys, header values,
/// gateway and admin keys, PagerDuty routing keys and OTLP header values become
/// `${BALLAST_REDACTED}`, alert sink URLs `${BALLAST_REDACTED_URL}`, and credentials inside a
/// provider's or the OTLP endpoint's URL `redacted`. Read it back with [`parse_redacted`].
pub fn redacted_toml(c: &Config) -> String {
    let secret = || toml::Value::String(format!("${{{REDACTED_VAR}}}"));
    let mut doc = toml::Table::new();
    for (key, value) in settings(c) {
        let value = match key.as_str() {
            "auth.gateway_keys" => {
                toml::Value::Array((0..c.auth.gateway_keys.len()).map(|_| secret()).collect())
            }
            "admin.key" if c.admin.key.is_some() => secret(),
            "admin.key" => continue,
            "alerts.sinks" => toml::Value::Array(c.alerts.iter().map(alert_sink).collect()),
            "telemetry.otlp_headers" => toml::Value::Table(
                c.telemetry
                    .otlp_headers
                    .iter()
                    .map(|(n, _)| (n.clone(), secret()))
                    .collect(),
            ),
            "telemetry.otlp_endpoint" => match value.as_str() {
                Some(u) => toml::Value::String(escape_dollars(u)),
                None => continue,
            },
            _ => match to_toml(&value) {
                Some(v) => v,
                None => continue,
            },
        };
        let path: Vec<&str> = key.split('.').collect();
        insert(&mut doc, &path, value);
    }
    for p in &c.providers {
        let mut t = toml::Table::new();
        t.insert("kind".into(), p.kind.as_str().into());
        if let Some(api) = provider_api(p) {
            t.insert("api".into(), api.into());
        }
        t.insert(
            "base_url".into(),
            escape_dollars(&redact_userinfo(&p.base_url)).into(),
        );
        if p.api_key.is_some() {
            t.insert("api_key".into(), secret());
        } else if p.kind.requires_key() {
            // Set but empty: how a configuration says "no key" for a kind that usually has one.
            t.insert("api_key".into(), "".into());
        }
        if !p.headers.is_empty() {
            let headers = p
                .headers
                .iter()
                .map(|(n, _)| (n.as_str().to_owned(), secret()))
                .collect();
            t.insert("headers".into(), toml::Value::Table(headers));
        }
        insert(&mut doc, &["providers", &p.name], toml::Value::Table(t));
    }
    for r in &c.routes {
        insert(
            &mut doc,
            &["routes", &r.name],
            toml::Value::Table(route_table(c, r)),
        );
    }
    let body = toml::to_string(&doc).unwrap_or_default();
    format!(
        "# The running configuration, every value resolved; secrets are ${{{REDACTED_VAR}}} (URLs: \
         ${{{REDACTED_URL_VAR}}}).\n{body}"
    )
}

fn route_table(c: &Config, r: &Route) -> toml::Table {
    let mut t = toml::Table::new();
    t.insert("max_tokens".into(), i64::from(r.max_tokens).into());
    let mut tiers = Vec::new();
    for tier in &r.tiers {
        let mut targets = Vec::new();
        for target in r.targets.get(tier.targets.clone()).unwrap_or_default() {
            let mut tt = toml::Table::new();
            let provider = c
                .providers
                .get(target.provider.0)
                .map_or("?", |p| p.name.as_str());
            tt.insert("provider".into(), provider.into());
            tt.insert("model".into(), target.model.as_str().into());
            tt.insert("weight".into(), i64::from(target.weight).into());
            let caps: toml::Table = capability_fields(&target.capabilities)
                .into_iter()
                .filter_map(|(k, v)| Some((k, to_toml(&v)?)))
                .collect();
            if !caps.is_empty() {
                tt.insert("capabilities".into(), toml::Value::Table(caps));
            }
            targets.push(toml::Value::Table(tt));
        }
        let mut tt = toml::Table::new();
        tt.insert("strategy".into(), strategy(tier.strategy).into());
        tt.insert("targets".into(), toml::Value::Array(targets));
        tiers.push(toml::Value::Table(tt));
    }
    t.insert("tiers".into(), toml::Value::Array(tiers));
    // Only what differs from the `[policy]` defaults, as the route would have written it.
    let defaults = policy_fields(&c.policy);
    let mut policy = toml::Table::new();
    for (k, v) in policy_fields(&r.policy) {
        let inherited = defaults.iter().any(|(dk, dv)| *dk == k && *dv == v);
        if inherited || !route_may_set(&k) {
            continue;
        }
        if let Some(v) = to_toml(&v) {
            policy.insert(k, v);
        }
    }
    if !policy.is_empty() {
        t.insert("policy".into(), toml::Value::Table(policy));
    }
    t
}

fn alert_sink(a: &AlertSink) -> toml::Value {
    let url = || toml::Value::String(format!("${{{REDACTED_URL_VAR}}}"));
    let mut t = toml::Table::new();
    match a {
        AlertSink::Webhook { .. } => {
            t.insert("kind".into(), "webhook".into());
            t.insert("url".into(), url());
        }
        AlertSink::Slack { .. } => {
            t.insert("kind".into(), "slack".into());
            t.insert("url".into(), url());
        }
        AlertSink::PagerDuty { .. } => {
            t.insert("kind".into(), "pagerduty".into());
            t.insert("url".into(), url());
            t.insert(
                "routing_key".into(),
                toml::Value::String(format!("${{{REDACTED_VAR}}}")),
            );
        }
    }
    toml::Value::Table(t)
}

/// `$` is interpolation syntax in the fields that take `${VAR}`.
fn escape_dollars(s: &str) -> String {
    s.replace('$', "$$")
}

/// A JSON value as TOML; `None` for `null` (unset: left out).
fn to_toml(v: &Value) -> Option<toml::Value> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => toml::Value::Boolean(*b),
        Value::Number(n) => match (n.as_i64(), n.as_u64(), n.as_f64()) {
            (Some(i), _, _) => toml::Value::Integer(i),
            // Past TOML's integers (a byte size of "no limit"): sizes also parse from strings.
            (None, Some(u), _) => toml::Value::String(u.to_string()),
            (None, None, Some(f)) => toml::Value::Float(f),
            (None, None, None) => return None,
        },
        Value::String(s) => toml::Value::String(s.clone()),
        Value::Array(items) => toml::Value::Array(items.iter().filter_map(to_toml).collect()),
        Value::Object(m) => toml::Value::Table(
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), to_toml(v)?)))
                .collect(),
        ),
    })
}

/// Sets `path` in `doc`, creating the tables on the way.
fn insert(doc: &mut toml::Table, path: &[&str], value: toml::Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut t = doc;
    for p in parents {
        let entry = t
            .entry((*p).to_owned())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        let toml::Value::Table(next) = entry else {
            return;
        };
        t = next;
    }
    t.insert((*last).to_owned(), value);
}

/// `${VAR}` for reading a configuration only to compare it: [`REDACTED_VAR`] and
/// [`REDACTED_URL_VAR`] (what [`redacted_toml`] writes) resolve to placeholders, then `inner` is
/// asked, and any variable it does not know is a placeholder too (secrets do not matter to a
/// diff; a variable used in a URL must still be set).
pub struct CompareEnv<'a> {
    pub inner: &'a dyn Env,
}

impl Env for CompareEnv<'_> {
    fn var(&self, name: &str) -> Option<String> {
        match name {
            REDACTED_VAR => Some(REDACTED_VALUE.to_owned()),
            REDACTED_URL_VAR => Some(REDACTED_URL_VALUE.to_owned()),
            _ => Some(
                self.inner
                    .var(name)
                    .unwrap_or_else(|| REDACTED_VALUE.to_owned()),
            ),
        }
    }
}

/// Reads what [`redacted_toml`] wrote (or any configuration file, for comparison only: see
/// [`CompareEnv`]; other variables are taken from `inner`).
pub fn parse_redacted(text: &str, inner: &dyn Env) -> Result<Config, ConfigErrors> {
    Config::from_toml(text, &CompareEnv { inner })
}
