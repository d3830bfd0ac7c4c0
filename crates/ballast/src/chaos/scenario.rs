//! The chaos scenario: its TOML form, validation into a typed scenario (every error with its key
//! path), the fault timeline (windows, ramps, merged per simulator) and the phases it implies.

use std::collections::BTreeMap;
use std::time::Duration;

use ballast_core::api::ApiFormat;
use ballast_core::config::Config;
use ballast_core::config::env::Env;
use serde::Deserialize;
use serde_json::{Map, Value};

/// The placeholder a gateway configuration uses for a simulator's address: `sim:NAME`.
pub const SIM_PREFIX: &str = "sim:";

/// The admin key given to an in-process gateway whose configuration names none.
pub const CHAOS_ADMIN_KEY: &str = "ballast-chaos-admin";

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawScenario {
    name: Option<String>,
    description: Option<String>,
    source: Option<String>,
    duration: String,
    compression: Option<f64>,
    seed: Option<u64>,
    baseline: Option<String>,
    sims: BTreeMap<String, RawSim>,
    traffic: RawTraffic,
    #[serde(default)]
    faults: Vec<RawFault>,
    #[serde(default)]
    pass: RawPass,
    quick: Option<RawQuick>,
    #[serde(default)]
    prices: BTreeMap<String, RawPrice>,
    gateway: toml::Table,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    input_per_mtok: f64,
    output_per_mtok: f64,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawSim {
    ttft: Option<String>,
    token_delay: Option<String>,
    seed: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawTraffic {
    rate: f64,
    route: Option<String>,
    stream_share: Option<f64>,
    tool_share: Option<f64>,
    languages: Option<BTreeMap<String, f64>>,
    apis: Option<Vec<String>>,
    client_timeout: Option<String>,
    max_in_flight: Option<usize>,
    max_requests: Option<u64>,
    max_tokens: Option<u64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawFault {
    at: String,
    until: Option<String>,
    sim: String,
    name: Option<String>,
    set: toml::Table,
    ramp: Option<RawRamp>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawRamp {
    to: f64,
    steps: u32,
}

#[derive(Deserialize, Debug, Default)]
#[serde(deny_unknown_fields)]
struct RawPass {
    /// Criteria over one phase (by its name in the report: `healthy`, a fault's name, `recovered`).
    #[serde(default)]
    phase: Vec<RawPhasePass>,
    success_rate: Option<f64>,
    p99: Option<String>,
    attempts_per_request: Option<f64>,
    time_to_detect: Option<String>,
    time_to_failover: Option<String>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawPhasePass {
    name: String,
    success_rate: Option<f64>,
    p99: Option<String>,
    attempts_per_request: Option<f64>,
}

#[derive(Deserialize, Debug)]
#[serde(deny_unknown_fields)]
struct RawQuick {
    compression: Option<f64>,
    rate: Option<f64>,
}

/// The client API a simulated application speaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientApi {
    Anthropic,
    OpenAi,
    Responses,
    Gemini,
}

impl ClientApi {
    fn parse(s: &str) -> Option<ClientApi> {
        match s {
            "anthropic" => Some(ClientApi::Anthropic),
            "openai" => Some(ClientApi::OpenAi),
            "responses" => Some(ClientApi::Responses),
            "gemini" => Some(ClientApi::Gemini),
            _ => None,
        }
    }

    /// The client API of the format a provider speaks.
    fn of(format: ApiFormat) -> ClientApi {
        match format {
            ApiFormat::AnthropicMessages => ClientApi::Anthropic,
            ApiFormat::OpenAiChat => ClientApi::OpenAi,
            ApiFormat::OpenAiResponses => ClientApi::Responses,
            ApiFormat::Gemini => ClientApi::Gemini,
        }
    }
}

/// A model's price, in US dollars per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of these tokens, in US dollars.
    pub fn cost(self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1e6
    }
}

/// Prices of the models the built-ins use: the providers' list prices (USD per million tokens) as of
/// late 2025. A scenario overrides or extends them with `[prices."model"]`.
const DEFAULT_PRICES: &[(&str, f64, f64)] =
    &[("claude-sonnet-4-5", 3.0, 15.0), ("gpt-4.1", 2.0, 8.0)];

/// One simulator the scenario starts (or that the user names with `--sim NAME=URL`).
#[derive(Clone, Debug)]
pub struct Sim {
    pub name: String,
    pub ttft: Duration,
    pub token_delay: Duration,
    pub seed: u64,
}

/// The traffic mix: open-loop at `rate` requests a second.
#[derive(Clone, Debug)]
pub struct Traffic {
    pub rate: f64,
    pub route: String,
    pub stream_share: f64,
    /// The share of requests that declare a tool and ask for it to be called.
    pub tool_share: f64,
    /// The prompts' languages and their weights (normalised to sum to 1).
    pub languages: Vec<(Lang, f64)>,
    pub apis: Vec<ClientApi>,
    pub client_timeout: Duration,
    pub max_in_flight: usize,
    pub max_requests: u64,
    pub max_tokens: u64,
}

impl Traffic {
    /// The mix in one line: client APIs, streaming and tool shares, languages.
    pub fn mix(&self) -> String {
        let apis: Vec<String> = self
            .apis
            .iter()
            .map(|a| format!("{a:?}").to_lowercase())
            .collect();
        let langs: Vec<String> = self
            .languages
            .iter()
            .map(|(l, w)| format!("{} {:.0}%", l.name(), w * 100.0))
            .collect();
        format!(
            "{}; {:.0}% streamed, {:.0}% with a tool; prompts {}",
            apis.join(", "),
            self.stream_share * 100.0,
            self.tool_share * 100.0,
            langs.join(", ")
        )
    }
}

/// A prompt language of the traffic mix: its prompts, and the scripts an answer may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lang {
    En,
    Ja,
    Zh,
    Ru,
    Th,
}

impl Lang {
    pub const NAMES: [&'static str; 5] = ["en", "ja", "zh", "ru", "th"];

    pub fn parse(s: &str) -> Option<Lang> {
        Some(match s {
            "en" => Lang::En,
            "ja" => Lang::Ja,
            "zh" => Lang::Zh,
            "ru" => Lang::Ru,
            "th" => Lang::Th,
            _ => return None,
        })
    }

    pub fn name(self) -> &'static str {
        match self {
            Lang::En => "en",
            Lang::Ja => "ja",
            Lang::Zh => "zh",
            Lang::Ru => "ru",
            Lang::Th => "th",
        }
    }

    /// Whether an answer to a prompt in this language may hold the character `c` (beyond Latin).
    pub fn allows(self, c: u32) -> bool {
        let cjk = (0x3000..0x3040).contains(&c)
            || (0x4E00..0xA000).contains(&c)
            || (0xFF00..0xFFF0).contains(&c);
        match self {
            Lang::En => false,
            Lang::Ja => cjk || (0x3040..0x3100).contains(&c),
            Lang::Zh => cjk,
            Lang::Ru => (0x0400..0x0530).contains(&c),
            Lang::Th => (0x0E00..0x0E80).contains(&c),
        }
    }
}

/// A fault window: from `at` (until `until`, or the end) these faults are set on `sim`; with a ramp,
/// every `rate` in them steps linearly to `ramp_to` over the window.
#[derive(Clone, Debug)]
pub struct Window {
    pub at: Duration,
    pub until: Option<Duration>,
    pub sim: usize,
    pub name: String,
    pub set: Map<String, Value>,
    pub ramp: Option<(f64, u32)>,
}

/// Pass criteria over the whole run, for the gateway's column.
#[derive(Clone, Debug, Default)]
pub struct Pass {
    /// Criteria over single phases.
    pub phases: Vec<PhasePass>,
    pub success_rate: Option<f64>,
    pub p99: Option<Duration>,
    pub attempts_per_request: Option<f64>,
    pub time_to_detect: Option<Duration>,
    pub time_to_failover: Option<Duration>,
}

/// Pass criteria over one phase, with the gateway.
#[derive(Clone, Debug, Default)]
pub struct PhasePass {
    pub name: String,
    pub success_rate: Option<f64>,
    pub p99: Option<Duration>,
    pub attempts_per_request: Option<f64>,
}

/// A validated scenario. Times are in the event's own time; divide by `compression` for run time.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub name: String,
    pub description: String,
    pub source: String,
    pub duration: Duration,
    pub compression: f64,
    pub seed: u64,
    pub baseline: usize,
    pub sims: Vec<Sim>,
    pub traffic: Traffic,
    pub windows: Vec<Window>,
    pub pass: Pass,
    pub quick: (Option<f64>, Option<f64>),
    /// Prices per model (the defaults with the scenario's `[prices]` over them).
    pub prices: BTreeMap<String, Price>,
    /// The API the primary provider speaks and the model the route asks it for (the baseline's).
    pub primary: Option<(ClientApi, String)>,
    /// The gateway configuration with `sim:NAME` placeholders, as TOML.
    pub gateway: toml::Table,
}

/// A named phase of the run, in run time (seconds from the start of load).
#[derive(Clone, Debug)]
pub struct Phase {
    pub name: String,
    pub start: f64,
    pub end: f64,
    pub faulted: bool,
}

struct Errors(Vec<String>);

impl Errors {
    fn push(&mut self, path: impl std::fmt::Display, msg: impl std::fmt::Display) {
        self.0.push(format!("{path}: {msg}"));
    }

    fn duration(&mut self, path: &str, s: &str) -> Duration {
        match humantime::parse_duration(s) {
            Ok(d) => d,
            Err(e) => {
                self.push(path, format!("invalid duration {s:?}: {e}"));
                Duration::ZERO
            }
        }
    }

    fn share(&mut self, path: &str, x: f64) {
        if !(0.0..=1.0).contains(&x) {
            self.push(path, format!("must be between 0 and 1, got {x}"));
        }
    }
}

/// An environment with no variables: scenario gateway configs are self-contained.
struct NoEnv;

impl Env for NoEnv {
    fn var(&self, _name: &str) -> Option<String> {
        None
    }
}

impl Scenario {
    /// Parses and validates a scenario; the error lists every problem with its key path.
    pub fn from_toml(text: &str) -> Result<Scenario, String> {
        let raw: RawScenario = toml::from_str(text).map_err(|e| e.to_string())?;
        let mut errs = Errors(Vec::new());
        let duration = errs.duration("duration", &raw.duration);
        if duration.is_zero() {
            errs.push("duration", "must be more than zero");
        }
        let compression = raw.compression.unwrap_or(1.0);
        if !(compression.is_finite() && compression >= 1.0) {
            errs.push("compression", "must be a number of at least 1");
        }
        if raw.sims.is_empty() {
            errs.push("sims", "name at least one simulator");
        }
        let mut sims = Vec::new();
        for (i, (name, s)) in raw.sims.iter().enumerate() {
            let p = format!("sims.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                errs.push(&p, "names are letters, digits, - and _");
            }
            sims.push(Sim {
                name: name.clone(),
                ttft: s.ttft.as_deref().map_or(Duration::from_millis(40), |d| {
                    errs.duration(&format!("{p}.ttft"), d)
                }),
                token_delay: s
                    .token_delay
                    .as_deref()
                    .map_or(Duration::from_millis(2), |d| {
                        errs.duration(&format!("{p}.token_delay"), d)
                    }),
                seed: s.seed.unwrap_or(i as u64 + 1),
            });
        }
        let sim_index = |name: &str| sims.iter().position(|s| s.name == name);
        let baseline_name = raw.baseline.clone().unwrap_or_else(|| "primary".to_owned());
        let baseline = sim_index(&baseline_name).unwrap_or_else(|| {
            errs.push(
                "baseline",
                format!("no simulator named {baseline_name:?} (default: primary)"),
            );
            0
        });

        let t = &raw.traffic;
        if !(t.rate.is_finite() && t.rate > 0.0 && t.rate <= 2000.0) {
            errs.push(
                "traffic.rate",
                "requests a second, more than 0 and at most 2000",
            );
        }
        let stream_share = t.stream_share.unwrap_or(0.5);
        errs.share("traffic.stream_share", stream_share);
        let tool_share = t.tool_share.unwrap_or(0.0);
        errs.share("traffic.tool_share", tool_share);
        let mut languages = Vec::new();
        for (name, &w) in t.languages.iter().flatten() {
            let path = format!("traffic.languages.{name}");
            match Lang::parse(name) {
                Some(l) if w.is_finite() && w > 0.0 => languages.push((l, w)),
                Some(_) => errs.push(path, format!("a weight above 0, got {w}")),
                None => errs.push(
                    path,
                    format!(
                        "unknown language {name:?}; known: {}",
                        Lang::NAMES.join(", ")
                    ),
                ),
            }
        }
        if languages.is_empty() {
            languages.push((Lang::En, 1.0));
        }
        let total: f64 = languages.iter().map(|(_, w)| w).sum();
        for (_, w) in &mut languages {
            *w /= total;
        }
        let mut apis = Vec::new();
        for (i, a) in t
            .apis
            .clone()
            .unwrap_or_else(|| vec!["anthropic".into(), "openai".into()])
            .iter()
            .enumerate()
        {
            match ClientApi::parse(a) {
                Some(api) => apis.push(api),
                None => errs.push(
                    format!("traffic.apis[{i}]"),
                    format!(
                        "unknown client API {a:?}; known: anthropic, openai, responses, gemini"
                    ),
                ),
            }
        }
        if apis.is_empty() {
            errs.push("traffic.apis", "name at least one client API");
        }
        let traffic = Traffic {
            rate: t.rate,
            route: t.route.clone().unwrap_or_else(|| "chat".to_owned()),
            stream_share,
            tool_share,
            languages,
            apis,
            client_timeout: t
                .client_timeout
                .as_deref()
                .map_or(Duration::from_secs(600), |d| {
                    errs.duration("traffic.client_timeout", d)
                }),
            max_in_flight: t.max_in_flight.unwrap_or(4000),
            max_requests: t.max_requests.unwrap_or(200_000),
            max_tokens: t.max_tokens.unwrap_or(64),
        };

        let mut windows = Vec::new();
        for (i, f) in raw.faults.iter().enumerate() {
            let p = format!("faults[{i}]");
            let at = errs.duration(&format!("{p}.at"), &f.at);
            let until = f
                .until
                .as_deref()
                .map(|u| errs.duration(&format!("{p}.until"), u));
            if let Some(u) = until
                && u <= at
            {
                errs.push(format!("{p}.until"), "must be after `at`");
            }
            if at >= duration {
                errs.push(format!("{p}.at"), "must be before the scenario's duration");
            }
            let sim = sim_index(&f.sim).unwrap_or_else(|| {
                errs.push(
                    format!("{p}.sim"),
                    format!("no simulator named {:?}", f.sim),
                );
                0
            });
            let set = match serde_json::to_value(&f.set) {
                Ok(Value::Object(m)) => m,
                _ => {
                    errs.push(format!("{p}.set"), "must be a table of simulator faults");
                    Map::new()
                }
            };
            match serde_json::from_value::<ballast_sim::Faults>(Value::Object(set.clone())) {
                Ok(faults) => {
                    if let Err(e) = faults.validate() {
                        errs.push(format!("{p}.set"), e);
                    }
                }
                Err(e) => errs.push(format!("{p}.set"), e),
            }
            if set.is_empty() {
                errs.push(format!("{p}.set"), "name at least one fault (down, hang, error, rate_limit, slow, truncate, reject_prefill, role_then_silence, corrupt, degrade)");
            }
            let ramp = f.ramp.as_ref().map(|r| {
                errs.share(&format!("{p}.ramp.to"), r.to);
                if r.steps < 2 {
                    errs.push(format!("{p}.ramp.steps"), "at least 2");
                }
                if until.is_none() {
                    errs.push(format!("{p}.ramp"), "a ramp needs `until`");
                }
                (r.to, r.steps.max(2))
            });
            windows.push(Window {
                at,
                until,
                sim,
                name: f.name.clone().unwrap_or_else(|| describe(&set)),
                set,
                ramp,
            });
        }

        let p = &raw.pass;
        if let Some(x) = p.success_rate {
            errs.share("pass.success_rate", x);
        }
        let mut phase_pass = Vec::new();
        for (i, ph) in p.phase.iter().enumerate() {
            let path = format!("pass.phase[{i}]");
            if let Some(x) = ph.success_rate {
                errs.share(&format!("{path}.success_rate"), x);
            }
            if ph.success_rate.is_none() && ph.p99.is_none() && ph.attempts_per_request.is_none() {
                errs.push(
                    &path,
                    "name at least one criterion (success_rate, p99, attempts_per_request)",
                );
            }
            phase_pass.push(PhasePass {
                name: ph.name.clone(),
                success_rate: ph.success_rate,
                p99: ph
                    .p99
                    .as_deref()
                    .map(|d| errs.duration(&format!("{path}.p99"), d)),
                attempts_per_request: ph.attempts_per_request,
            });
        }
        let pass = Pass {
            phases: phase_pass,
            success_rate: p.success_rate,
            p99: p.p99.as_deref().map(|d| errs.duration("pass.p99", d)),
            attempts_per_request: p.attempts_per_request,
            time_to_detect: p
                .time_to_detect
                .as_deref()
                .map(|d| errs.duration("pass.time_to_detect", d)),
            time_to_failover: p
                .time_to_failover
                .as_deref()
                .map(|d| errs.duration("pass.time_to_failover", d)),
        };
        let mut prices: BTreeMap<String, Price> = DEFAULT_PRICES
            .iter()
            .map(|(m, i, o)| {
                let price = Price {
                    input_per_mtok: *i,
                    output_per_mtok: *o,
                };
                ((*m).to_owned(), price)
            })
            .collect();
        for (model, p) in &raw.prices {
            for (key, x) in [
                ("input_per_mtok", p.input_per_mtok),
                ("output_per_mtok", p.output_per_mtok),
            ] {
                if !(x.is_finite() && x >= 0.0) {
                    errs.push(
                        format!("prices.{model:?}.{key}"),
                        "US dollars per million tokens, 0 or more",
                    );
                }
            }
            let price = Price {
                input_per_mtok: p.input_per_mtok,
                output_per_mtok: p.output_per_mtok,
            };
            prices.insert(model.clone(), price);
        }
        let quick = raw
            .quick
            .as_ref()
            .map_or((None, None), |q| (q.compression, q.rate));

        let mut scenario = Scenario {
            name: raw.name.clone().unwrap_or_else(|| "scenario".to_owned()),
            description: raw.description.clone().unwrap_or_default(),
            source: raw.source.clone().unwrap_or_default(),
            duration,
            compression,
            seed: raw.seed.unwrap_or(1),
            baseline,
            sims,
            traffic,
            windows,
            pass,
            quick,
            prices,
            primary: None,
            gateway: raw.gateway,
        };
        // The gateway configuration, with placeholder addresses, validates as `ballast check` would.
        let placeholders: Vec<(String, String)> = scenario
            .sims
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.clone(), format!("http://127.0.0.1:{}", 1 + i)))
            .collect();
        match scenario.gateway_config(&placeholders) {
            Ok(config) => {
                let primaries = scenario.primary_providers();
                let route = config
                    .routes
                    .iter()
                    .find(|r| r.name == scenario.traffic.route);
                scenario.primary = route.and_then(|r| {
                    r.targets.iter().find_map(|t| {
                        let p = config.providers.get(t.provider.0)?;
                        primaries
                            .contains(&p.name)
                            .then(|| (ClientApi::of(p.format), t.model.clone()))
                    })
                });
                if route.is_none() {
                    errs.push(
                        "traffic.route",
                        format!("the gateway has no route {:?}", scenario.traffic.route),
                    );
                }
            }
            Err(e) => {
                for line in e.lines() {
                    errs.0.push(format!("gateway.{line}"));
                }
            }
        }
        // A phase criterion must name a phase the timeline has.
        let phases = scenario.phases();
        for (i, ph) in scenario.pass.phases.iter().enumerate() {
            if !phases.iter().any(|p| p.name == ph.name) {
                let names: Vec<&str> = phases.iter().map(|p| p.name.as_str()).collect();
                errs.push(
                    format!("pass.phase[{i}].name"),
                    format!(
                        "no phase {:?}; the phases are: {}",
                        ph.name,
                        names.join(", ")
                    ),
                );
            }
        }
        if errs.0.is_empty() {
            Ok(scenario)
        } else {
            Err(errs.0.join("\n"))
        }
    }

    /// The scenario as run: `--quick` and `--compression` applied.
    pub fn adjusted(mut self, quick: bool, compression: Option<f64>) -> Scenario {
        if quick {
            if let Some(c) = self.quick.0 {
                self.compression = c;
            }
            if let Some(r) = self.quick.1 {
                self.traffic.rate = r;
            }
        }
        if let Some(c) = compression {
            self.compression = c.max(1.0);
        }
        self
    }

    /// The gateway configuration with each `sim:NAME` replaced by that simulator's base URL, an admin
    /// key added when it has none, and incidents kept in memory unless it says otherwise.
    pub fn gateway_config(&self, addresses: &[(String, String)]) -> Result<Config, String> {
        let mut table = self.gateway.clone();
        let admin = table
            .entry("admin")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(a) = admin {
            a.entry("key").or_insert_with(|| CHAOS_ADMIN_KEY.into());
        }
        let incidents = table
            .entry("incidents")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if let toml::Value::Table(i) = incidents {
            i.entry("store").or_insert_with(|| "".into());
        }
        let mut text = toml::to_string(&table).map_err(|e| e.to_string())?;
        let mut sorted: Vec<&(String, String)> = addresses.iter().collect();
        sorted.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
        for (name, url) in sorted {
            text = text.replace(&format!("{SIM_PREFIX}{name}"), url.trim_end_matches('/'));
        }
        if let Some(pos) = text.find(SIM_PREFIX) {
            let rest: String = text[pos..].chars().take(24).collect();
            return Err(format!("unknown simulator placeholder near {rest:?}"));
        }
        Config::from_toml(&text, &NoEnv).map_err(|e| e.to_string())
    }

    /// The admin key the gateway configuration names (or the one added in-process).
    pub fn admin_key(&self) -> String {
        self.gateway
            .get("admin")
            .and_then(|a| a.get("key"))
            .and_then(toml::Value::as_str)
            .unwrap_or(CHAOS_ADMIN_KEY)
            .to_owned()
    }

    /// Providers whose base URL is the baseline (primary) simulator: answers from any other are
    /// failovers.
    pub fn primary_providers(&self) -> Vec<String> {
        let needle = format!("{SIM_PREFIX}{}", self.sims[self.baseline].name);
        let mut out = Vec::new();
        if let Some(toml::Value::Table(providers)) = self.gateway.get("providers") {
            for (name, p) in providers {
                let url = p
                    .get("base_url")
                    .and_then(toml::Value::as_str)
                    .unwrap_or("");
                if url == needle || url.starts_with(&format!("{needle}/")) {
                    out.push(name.clone());
                }
            }
        }
        out
    }

    /// Run time of a scenario time, in seconds.
    pub fn run_secs(&self, d: Duration) -> f64 {
        d.as_secs_f64() / self.compression
    }

    /// The whole run, in seconds.
    pub fn run_duration(&self) -> f64 {
        self.run_secs(self.duration)
    }

    /// The times (run seconds) at which some simulator's faults change, with the start.
    fn boundaries(&self, with_ramp_steps: bool) -> Vec<f64> {
        let mut b = vec![0.0];
        for w in &self.windows {
            b.push(self.run_secs(w.at));
            if let Some(u) = w.until {
                b.push(self.run_secs(u));
                if let (Some((_, steps)), true) = (w.ramp, with_ramp_steps) {
                    let (a, u) = (self.run_secs(w.at), self.run_secs(u));
                    for i in 1..steps {
                        b.push(a + (u - a) * f64::from(i) / f64::from(steps));
                    }
                }
            }
        }
        let end = self.run_duration();
        b.retain(|t| *t < end);
        b.sort_by(f64::total_cmp);
        b.dedup_by(|a, b| (*a - *b).abs() < 1e-9);
        b
    }

    /// The windows active at run time `t`, with the rate multiplier step of a ramp applied.
    fn active(&self, sim: Option<usize>, t: f64) -> Vec<(&Window, Map<String, Value>)> {
        let mut out = Vec::new();
        for w in &self.windows {
            if sim.is_some_and(|s| s != w.sim) {
                continue;
            }
            let (a, u) = (self.run_secs(w.at), w.until.map(|u| self.run_secs(u)));
            if t + 1e-9 < a || u.is_some_and(|u| t + 1e-9 >= u) {
                continue;
            }
            let mut set = w.set.clone();
            if let (Some((to, steps)), Some(u)) = (w.ramp, u) {
                let step = (((t - a) / (u - a)) * f64::from(steps))
                    .floor()
                    .clamp(0.0, f64::from(steps - 1));
                let k = step / f64::from(steps - 1);
                for fault in set.values_mut() {
                    if let Value::Object(f) = fault {
                        let from = f.get("rate").and_then(Value::as_f64).unwrap_or(1.0);
                        let rate = from + (to - from) * k;
                        f.insert("rate".into(), Value::from((rate * 1e6).round() / 1e6));
                    }
                }
            }
            out.push((w, set));
        }
        out
    }

    /// What each simulator's faults are at run time `t` (later windows win per fault kind).
    pub fn faults_at(&self, sim: usize, t: f64) -> Map<String, Value> {
        let mut merged = Map::new();
        for (_, set) in self.active(Some(sim), t) {
            merged.extend(set);
        }
        merged
    }

    /// Times (run seconds) at which any simulator's faults change.
    pub fn fault_changes(&self) -> Vec<f64> {
        self.boundaries(true)
    }

    /// The phases: one per stretch with the same faults (ramp steps included), named after them.
    pub fn phases(&self) -> Vec<Phase> {
        let b = self.boundaries(true);
        let end = self.run_duration();
        let first_fault = self
            .windows
            .iter()
            .map(|w| self.run_secs(w.at))
            .fold(f64::INFINITY, f64::min);
        let mut phases: Vec<Phase> = Vec::new();
        for (i, start) in b.iter().enumerate() {
            let stop = b.get(i + 1).copied().unwrap_or(end);
            let active = self.active(None, *start);
            let name = if active.is_empty() {
                if *start < first_fault {
                    "healthy".to_owned()
                } else {
                    "recovered".to_owned()
                }
            } else {
                active
                    .iter()
                    .map(|(w, set)| {
                        if w.ramp.is_some() {
                            format!("{} {}", w.name, rates(set))
                        } else {
                            w.name.clone()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(" + ")
            };
            let faulted = !active.is_empty();
            // Merge neighbours with the same name (e.g. a window ending where an identical one starts).
            if let Some(last) = phases.last_mut()
                && last.name == name
            {
                last.end = stop;
                continue;
            }
            phases.push(Phase {
                name,
                start: *start,
                end: stop,
                faulted,
            });
        }
        phases
    }

    /// Fault windows in run seconds, for the chart: (start, end, simulator, name).
    pub fn fault_spans(&self) -> Vec<(f64, f64, String, String)> {
        let end = self.run_duration();
        self.windows
            .iter()
            .map(|w| {
                (
                    self.run_secs(w.at),
                    w.until.map_or(end, |u| self.run_secs(u)).min(end),
                    self.sims[w.sim].name.clone(),
                    w.name.clone(),
                )
            })
            .collect()
    }

    /// The first fault's start, in run seconds.
    pub fn first_fault(&self) -> Option<f64> {
        self.windows
            .iter()
            .map(|w| self.run_secs(w.at))
            .min_by(f64::total_cmp)
    }
}

/// A short description of a set of faults: `error 529 100%`, `corrupt 5%`, `slow x10`.
fn describe(set: &Map<String, Value>) -> String {
    set.iter()
        .map(|(k, v)| {
            let mut s = k.clone();
            if let Some(st) = v.get("status").and_then(Value::as_u64) {
                s.push_str(&format!(" {st}"));
            }
            if let Some(f) = v.get("factor").and_then(Value::as_f64) {
                s.push_str(&format!(" x{f}"));
            }
            s
        })
        .collect::<Vec<_>>()
        .join(" + ")
}

fn rates(set: &Map<String, Value>) -> String {
    set.values()
        .filter_map(|v| v.get("rate").and_then(Value::as_f64))
        .map(|r| format!("{}%", (r * 1000.0).round() / 10.0))
        .collect::<Vec<_>>()
        .join("/")
}
