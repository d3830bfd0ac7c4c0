//! Configuration in two steps: the TOML file is parsed into [`raw`] structs, then validated into the typed
//! [`Config`] the gateway runs on. Every validation error names the exact key at fault.
//!
//! The request path never looks anything up by string except the client's model name (one hash lookup).

pub mod diff;
pub mod env;
pub mod policy;
pub mod raw;

use crate::capability::{RulesOverride, Sampling, TokenLimit};
use std::collections::HashMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::provider::ProviderKind;
pub use crate::rollout::{RolloutSettings, Step as RolloutStep};
pub use diff::ConfigDiff;
pub use policy::{CacheMode, ContentPolicyAction, Policy, StreamRecovery};
pub use raw::Strategy;
use raw::{RawConfig, RawTarget};

pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
pub const DEFAULT_BODY_LIMIT: u64 = 16 * 1024 * 1024;
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
pub const DEFAULT_MAX_IN_FLIGHT: u32 = 10_000;
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
pub const DEFAULT_CACHE_BYTES: u64 = 64 * 1024 * 1024;
pub const DEFAULT_CACHE_ENTRY_BYTES: u64 = 1024 * 1024;
/// Anthropic requires `max_tokens`; when a client of another API omits it, this fills it in.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;
pub const DEFAULT_MAX_FIRST_TOKEN_BYTES: usize = 16 * 1024 * 1024;
pub const DEFAULT_MAX_ANSWER_BYTES: usize = 64 * 1024 * 1024;
pub const DEFAULT_MAX_TOOL_ARGS_BYTES: usize = 4 * 1024 * 1024;
pub const DEFAULT_MAX_BUFFERED_BYTES: usize = 256 * 1024 * 1024;
pub const DEFAULT_MAX_TOKENS: u32 = 4096;

/// A validated configuration. Providers and routes are stored in vectors and referred to by index.
#[derive(Clone, Debug)]
pub struct Config {
    pub server: ServerSettings,
    pub auth: AuthSettings,
    pub admin: AdminSettings,
    pub cache: CacheSettings,
    pub limits: Limits,
    /// Where incidents are announced.
    pub alerts: Vec<AlertSink>,
    /// `[alerts] digest`: the weekly digest to the sinks (Mondays at 09:00 UTC), or none.
    pub alerts_digest: Digest,
    pub signal: SignalSettings,
    pub incidents: IncidentSettings,
    pub probes: ProbeSettings,
    pub telemetry: TelemetrySettings,
    /// `[rollout]`: how a reloaded configuration is rolled out (canary steps, regression test).
    pub rollout: RolloutSettings,
    /// Gateway-wide policy defaults (each route's `policy` is already resolved over these).
    pub policy: Policy,
    pub providers: Vec<Provider>,
    pub routes: Vec<Route>,
}

#[derive(Clone, Debug)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger gets 413.
    pub body_limit: usize,
    /// Upper bound on establishing one upstream connection.
    pub connect_timeout: Duration,
    /// Requests in flight beyond which the gateway sheds load (503 with `retry-after`, at once).
    pub max_in_flight: u32,
    /// Longest a client may take to send its request body (408 after; the deadline also bounds it).
    pub body_timeout: Duration,
}

#[derive(Clone, Debug, Default)]
pub struct AdminSettings {
    /// The key admin endpoints require; without one they are disabled.
    pub key: Option<Secret>,
}

/// `[probes]`: a tiny request to each target that live traffic has not vouched for in `interval`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProbeSettings {
    /// Zero: no probes.
    pub interval: Duration,
    /// Probes per target per day, at most (their cost is capped).
    pub max_per_day: u32,
}

pub const DEFAULT_PROBE_INTERVAL: Duration = Duration::from_secs(30);
pub const DEFAULT_PROBES_PER_DAY: u32 = 4000;

/// `[incidents]`: where incidents are kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct IncidentSettings {
    /// The SQLite file; `None`: in memory only. `ballast serve` uses [`DEFAULT_INCIDENT_STORE`]
    /// when the configuration does not say (`store = ""` keeps them in memory).
    pub store: Option<std::path::PathBuf>,
    /// Whether the configuration named the store (or turned it off) rather than leaving the default.
    pub store_set: bool,
}

/// The incident store `ballast serve` uses when the configuration names none, under the working
/// directory.
pub const DEFAULT_INCIDENT_STORE: &str = "ballast-incidents.sqlite";

/// `[signal]`: what detection does besides opening incidents.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SignalSettings {
    /// Route around a target while an availability or quality incident is open on it.
    pub eject: bool,
    /// Feed the detectors at all (off: no incidents from live traffic; for measuring their cost).
    pub detectors: bool,
}

/// `[telemetry]`: OpenTelemetry traces over OTLP/HTTP (protobuf).
#[derive(Clone, Debug, PartialEq)]
pub struct TelemetrySettings {
    /// A listener of its own for `GET /metrics` (then the main listener does not serve it).
    pub metrics_listen: Option<SocketAddr>,
    /// The collector's traces URL; a bare `http://host:4318` gets `/v1/traces` appended. `None`:
    /// no spans are built or exported.
    pub otlp_endpoint: Option<String>,
    /// Extra headers on every export (a vendor's API key, say); values may use `${ENV}`.
    pub otlp_headers: Vec<(String, Secret)>,
    /// Longest one export may take.
    pub otlp_timeout: Duration,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Share of requests traced when the client sent no sampling decision (a client's
    /// `traceparent` decides for its own requests).
    pub trace_sample_ratio: f64,
    /// Share of answered requests whose access log line is written (failed requests always are).
    pub access_log_sample: f64,
}

impl Default for TelemetrySettings {
    fn default() -> Self {
        Self {
            metrics_listen: None,
            otlp_endpoint: None,
            otlp_headers: Vec::new(),
            otlp_timeout: Duration::from_secs(10),
            service_name: "ballast".to_owned(),
            trace_sample_ratio: 1.0,
            access_log_sample: 1.0,
        }
    }
}

/// Where an incident is announced: one message when it opens, one when it resolves.
#[derive(Clone, Debug)]
pub enum AlertSink {
    /// A generic webhook: the incident as JSON.
    Webhook { url: String },
    /// A Slack incoming webhook: a one-line message.
    Slack { url: String },
    /// PagerDuty Events API v2: trigger and resolve, deduplicated per incident.
    PagerDuty { url: String, routing_key: Secret },
}

/// PagerDuty's Events API v2 endpoint.
pub const PAGERDUTY_EVENTS_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `[limits]`: byte caps on everything the gateway buffers from a provider. Exceeding one fails the
/// attempt (before the answer is committed, the route falls over) or ends the stream with an error
/// event — never unbounded growth.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// One SSE event (and so the bytes of an event still waiting for its end).
    pub max_event_bytes: usize,
    /// A stream's bytes read before its first token (held back so a failure can still fall over).
    pub max_first_token_bytes: usize,
    /// A whole non-streaming answer.
    pub max_answer_bytes: usize,
    /// One tool call's arguments, accumulated where a translation must hold them whole.
    pub max_tool_args_bytes: usize,
    /// All of the above at once, across every request in flight: the gateway-wide ceiling.
    pub max_buffered_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_event_bytes: DEFAULT_MAX_EVENT_BYTES,
            max_first_token_bytes: DEFAULT_MAX_FIRST_TOKEN_BYTES,
            max_answer_bytes: DEFAULT_MAX_ANSWER_BYTES,
            max_tool_args_bytes: DEFAULT_MAX_TOOL_ARGS_BYTES,
            max_buffered_bytes: DEFAULT_MAX_BUFFERED_BYTES,
        }
    }
}

#[derive(Clone, Debug)]
pub struct CacheSettings {
    pub max_bytes: usize,
    pub max_entry_bytes: usize,
}

#[derive(Clone, Debug, Default)]
pub struct AuthSettings {
    /// Keys a client must present. Empty means no inbound authentication.
    pub gateway_keys: Vec<Secret>,
}

#[derive(Clone, Debug)]
pub struct Provider {
    pub name: String,
    pub kind: ProviderKind,
    /// The wire format Ballast speaks to it (the kind's own, or `openai`'s Responses API).
    pub format: crate::api::ApiFormat,
    /// Without trailing slash.
    pub base_url: String,
    pub api_key: Option<Secret>,
    /// Extra headers sent on every request to this provider.
    pub headers: Vec<(HeaderName, HeaderValue)>,
}

/// Index of a provider in [`Config::providers`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ProviderId(pub usize);

#[derive(Clone, Debug)]
pub struct Route {
    /// The model name clients send.
    pub name: String,
    /// Every target, tier after tier; never empty.
    pub targets: Vec<Target>,
    /// Tiers in failover order; each covers a range of `targets`.
    pub tiers: Vec<Tier>,
    /// `max_tokens` filled in for targets that require it when the client sent none.
    pub max_tokens: u32,
    pub policy: Policy,
}

#[derive(Clone, Debug)]
pub struct Tier {
    pub strategy: Strategy,
    /// Indices into [`Route::targets`].
    pub targets: std::ops::Range<usize>,
}

#[derive(Clone, Debug)]
pub struct Target {
    pub provider: ProviderId,
    /// The upstream model name.
    pub model: String,
    /// Share of the tier's traffic under the `weighted` strategy (and a tie-breaker under `latency`).
    pub weight: u32,
    /// Overrides of what the capability table says the model accepts.
    pub capabilities: RulesOverride,
}

/// A secret string (provider or gateway key). Its `Debug` and `Display` never show the value.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One problem with a configuration, located by its key path (`routes.chat.targets[1].provider`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            f.write_str(&self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Every problem found, so a user fixes them in one pass.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl ConfigErrors {
    fn one(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self(vec![ConfigError {
            path: path.into(),
            message: message.into(),
        }])
    }
}

impl Config {
    /// Reads and validates a TOML file, interpolating `${VAR}` from the process environment.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors::one("", format!("cannot read {}: {e}", path.display())))?;
        Self::from_toml(&text, &env::ProcessEnv)
    }

    /// Parses and validates TOML text; `env` resolves `${VAR}` references.
    pub fn from_toml(text: &str, env: &dyn env::Env) -> Result<Config, ConfigErrors> {
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            ConfigErrors::one("", format!("invalid TOML: {}", e.to_string().trim_end()))
        })?;
        validate(raw, env)
    }

    pub fn provider(&self, id: ProviderId) -> &Provider {
        &self.providers[id.0]
    }

    /// Route name → index, built once at start.
    pub fn route_index(&self) -> HashMap<String, usize> {
        self.routes
            .iter()
            .enumerate()
            .map(|(i, r)| (r.name.clone(), i))
            .collect()
    }
}

struct Validator<'e> {
    env: &'e dyn env::Env,
    errors: Vec<ConfigError>,
}

impl Validator<'_> {
    fn err(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    /// Resolves `${VAR}` references; on failure records an error at `path` and returns `None`.
    fn interpolate(&mut self, path: &str, value: &str) -> Option<String> {
        match env::interpolate(value, self.env) {
            Ok(s) => Some(s),
            Err(e) => {
                self.err(path, e);
                None
            }
        }
    }
}

impl Validator<'_> {
    fn capabilities(&mut self, c: &raw::RawCapabilities, path: &str) -> RulesOverride {
        let sampling = c.sampling.as_deref().and_then(|s| match s {
            "any" => Some(Sampling::Any),
            "temperature-or-top-p" => Some(Sampling::TemperatureOrTopP),
            "default-only" => Some(Sampling::DefaultOnly),
            other => {
                self.err(
                    format!("{path}.sampling"),
                    format!(
                        "unknown value {other:?}: use any, temperature-or-top-p or default-only"
                    ),
                );
                None
            }
        });
        let token_limit = c.token_limit.as_deref().and_then(|s| match s {
            "max_tokens" => Some(TokenLimit::MaxTokens),
            "max_completion_tokens" => Some(TokenLimit::MaxCompletionTokens),
            other => {
                self.err(
                    format!("{path}.token_limit"),
                    format!("unknown value {other:?}: use max_tokens or max_completion_tokens"),
                );
                None
            }
        });
        RulesOverride {
            sampling,
            top_k: c.top_k,
            token_limit,
            prefill: c.prefill,
            system_prompt: c.system_prompt,
            forced_tool_choice: c.forced_tool_choice,
            parallel_tool_calls: c.parallel_tool_calls,
            images: c.images,
            structured_output: c.structured_output,
        }
    }

    /// Resolves one target reference (`"provider/model"` or a table) against the providers.
    fn target(
        &mut self,
        t: &RawTarget,
        tpath: &str,
        providers: &std::collections::BTreeMap<String, raw::RawProvider>,
        known: &[&str],
    ) -> Option<Target> {
        let (provider, model, provider_path, weight, caps) = match t {
            RawTarget::Short(s) => match s.split_once('/') {
                Some((p, m)) if !p.is_empty() && !m.is_empty() => {
                    (p, m, tpath.to_owned(), None, None)
                }
                _ => {
                    self.err(
                        tpath,
                        format!(
                            "{s:?} is not \"provider/model\" (e.g. \"anthropic/claude-sonnet-4-5\")"
                        ),
                    );
                    return None;
                }
            },
            RawTarget::Long(t) => (
                t.provider.as_str(),
                t.model.as_str(),
                format!("{tpath}.provider"),
                t.weight,
                t.capabilities.as_ref(),
            ),
        };
        let capabilities = caps.map_or_else(RulesOverride::default, |c| {
            self.capabilities(c, &format!("{tpath}.capabilities"))
        });
        if model.is_empty() {
            self.err(format!("{tpath}.model"), "must not be empty");
            return None;
        }
        if weight == Some(0) {
            self.err(format!("{tpath}.weight"), "must be greater than 0");
        }
        match providers.keys().position(|k| k == provider) {
            Some(idx) => Some(Target {
                provider: ProviderId(idx),
                model: model.to_owned(),
                weight: weight.unwrap_or(1),
                capabilities,
            }),
            None => {
                self.err(
                    provider_path,
                    format!(
                        "unknown provider {provider:?}; known: {}",
                        if known.is_empty() {
                            "(none: add a [providers.NAME] section)".to_owned()
                        } else {
                            known.join(", ")
                        }
                    ),
                );
                None
            }
        }
    }
}

/// When the alert sinks get a digest of open incidents, overdue follow-ups and recurrences.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Digest {
    /// Mondays at 09:00 UTC.
    #[default]
    Weekly,
    Off,
}

impl Validator<'_> {
    fn alerts_digest(&mut self, raw: &raw::RawAlerts) -> Digest {
        match raw.digest.as_deref().map(str::trim) {
            None | Some("weekly") => Digest::Weekly,
            Some("off") => Digest::Off,
            Some(other) => {
                self.err(
                    "alerts.digest",
                    format!(
                        "unknown value {other:?}: use \"weekly\" (Mondays at 09:00 UTC) or \"off\""
                    ),
                );
                Digest::Weekly
            }
        }
    }

    fn alerts(&mut self, raw: &raw::RawAlerts) -> Vec<AlertSink> {
        let mut sinks = Vec::new();
        for (i, s) in raw.sinks.iter().enumerate() {
            let path = format!("alerts.sinks[{i}]");
            let url = match &s.url {
                Some(u) => self.interpolate(&format!("{path}.url"), u),
                None => None,
            };
            let url_ok = |v: &mut Self, url: &str| {
                let ok = url.starts_with("http://") || url.starts_with("https://");
                if !ok {
                    v.err(
                        format!("{path}.url"),
                        format!("invalid URL {url:?}: expected http:// or https://"),
                    );
                }
                ok
            };
            match s.kind.as_str() {
                "webhook" | "slack" => {
                    let Some(url) = url else {
                        if s.url.is_none() {
                            self.err(format!("{path}.url"), "is required for this kind");
                        }
                        continue;
                    };
                    if !url_ok(self, &url) {
                        continue;
                    }
                    sinks.push(if s.kind == "slack" {
                        AlertSink::Slack { url }
                    } else {
                        AlertSink::Webhook { url }
                    });
                }
                "pagerduty" => {
                    let url = url.unwrap_or_else(|| PAGERDUTY_EVENTS_URL.to_owned());
                    if !url_ok(self, &url) {
                        continue;
                    }
                    let key = match &s.routing_key {
                        Some(k) => self.interpolate(&format!("{path}.routing_key"), k),
                        None => {
                            self.err(
                                format!("{path}.routing_key"),
                                "is required for pagerduty (the integration key)",
                            );
                            None
                        }
                    };
                    if let Some(k) = key {
                        sinks.push(AlertSink::PagerDuty {
                            url,
                            routing_key: Secret(k),
                        });
                    }
                }
                other => self.err(
                    format!("{path}.kind"),
                    format!("unknown sink kind {other:?}: use webhook, slack or pagerduty"),
                ),
            }
        }
        sinks
    }

    /// A share between 0 and 1 (`default` when absent, or out of range with an error at `path`).
    fn share(&mut self, path: &str, value: Option<f64>, default: f64) -> f64 {
        match value {
            Some(x) if !(0.0..=1.0).contains(&x) => {
                self.err(path, format!("must be between 0 and 1, not {x}"));
                default
            }
            Some(x) => x,
            None => default,
        }
    }

    fn telemetry(&mut self, r: &raw::RawTelemetry) -> TelemetrySettings {
        let d = TelemetrySettings::default();
        let otlp_endpoint = r.otlp_endpoint.as_deref().and_then(|u| {
            let u = self.interpolate("telemetry.otlp_endpoint", u)?;
            if u.is_empty() {
                return None;
            }
            let Some(rest) = u
                .strip_prefix("http://")
                .or_else(|| u.strip_prefix("https://"))
            else {
                self.err(
                    "telemetry.otlp_endpoint",
                    format!("invalid URL {u:?}: expected http:// or https:// (OTLP over HTTP)"),
                );
                return None;
            };
            // A bare collector address gets the traces path, as OTEL_EXPORTER_OTLP_ENDPOINT does.
            Some(match rest.find('/') {
                None => format!("{u}/v1/traces"),
                Some(i) if rest.len() == i + 1 => format!("{u}v1/traces"),
                Some(_) => u,
            })
        });
        let mut otlp_headers = Vec::new();
        for (name, value) in &r.otlp_headers {
            let path = format!("telemetry.otlp_headers.{name}");
            let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
            if name.is_empty() || !name.bytes().all(tchar) {
                self.err(&path, "is not a valid header name");
                continue;
            }
            if let Some(v) = self.interpolate(&path, value) {
                otlp_headers.push((name.to_ascii_lowercase(), Secret(v)));
            }
        }
        let otlp_timeout = match r.otlp_timeout {
            Some(t) if t.is_zero() => {
                self.err("telemetry.otlp_timeout", "must be more than zero");
                d.otlp_timeout
            }
            Some(t) => t,
            None => d.otlp_timeout,
        };
        let trace_sample_ratio = self.share(
            "telemetry.trace_sample_ratio",
            r.trace_sample_ratio,
            d.trace_sample_ratio,
        );
        let access_log_sample = self.share(
            "telemetry.access_log_sample",
            r.access_log_sample,
            d.access_log_sample,
        );
        let service_name = match r.service_name.as_deref() {
            Some("") => {
                self.err("telemetry.service_name", "must not be empty");
                d.service_name
            }
            Some(s) => s.to_owned(),
            None => d.service_name,
        };
        let metrics_listen = r.metrics_listen.as_deref().and_then(|a| match a.parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.err(
                    "telemetry.metrics_listen",
                    format!("{a:?} is not an address such as \"127.0.0.1:9464\""),
                );
                None
            }
        });
        TelemetrySettings {
            metrics_listen,
            otlp_endpoint,
            otlp_headers,
            otlp_timeout,
            service_name,
            trace_sample_ratio,
            access_log_sample,
        }
    }

    fn rollout(&mut self, r: &raw::RawRollout) -> RolloutSettings {
        let d = RolloutSettings::default();
        let settings = RolloutSettings {
            steps: r.steps.as_ref().map_or(d.steps, |steps| {
                steps
                    .iter()
                    .map(|s| RolloutStep {
                        share: s.share,
                        hold: s.hold,
                    })
                    .collect()
            }),
            alpha: r.alpha.unwrap_or(d.alpha),
            error_tolerance: r.error_tolerance.unwrap_or(d.error_tolerance),
            latency_tolerance: r.latency_tolerance.unwrap_or(d.latency_tolerance),
            quality_tolerance: r.quality_tolerance.unwrap_or(d.quality_tolerance),
            min_requests: r.min_requests.unwrap_or(d.min_requests),
            probe: r.probe.unwrap_or(d.probe),
        };
        for (key, message) in settings.problems() {
            self.err(format!("rollout.{key}"), message);
        }
        settings
    }

    fn limits(&mut self, r: &raw::RawLimits) -> Limits {
        let d = Limits::default();
        let mut one = |key: &str, value: Option<raw::ByteSize>, default: usize| -> usize {
            let Some(b) = value else { return default };
            if b.0 < 1024 {
                self.err(format!("limits.{key}"), "must be at least 1KiB");
                return default;
            }
            usize::try_from(b.0).unwrap_or(usize::MAX)
        };
        Limits {
            max_event_bytes: one("max_event_bytes", r.max_event_bytes, d.max_event_bytes),
            max_first_token_bytes: one(
                "max_first_token_bytes",
                r.max_first_token_bytes,
                d.max_first_token_bytes,
            ),
            max_answer_bytes: one("max_answer_bytes", r.max_answer_bytes, d.max_answer_bytes),
            max_tool_args_bytes: one(
                "max_tool_args_bytes",
                r.max_tool_args_bytes,
                d.max_tool_args_bytes,
            ),
            max_buffered_bytes: one(
                "max_buffered_bytes",
                r.max_buffered_bytes,
                d.max_buffered_bytes,
            ),
        }
    }
}

fn validate(raw: RawConfig, env: &dyn env::Env) -> Result<Config, ConfigErrors> {
    let mut v = Validator {
        env,
        errors: Vec::new(),
    };

    let listen_text = raw.server.listen.as_deref().unwrap_or(DEFAULT_LISTEN);
    let listen = match listen_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            v.err(
                "server.listen",
                format!(
                    "invalid address {listen_text:?}: expected IP:PORT, e.g. \"127.0.0.1:8080\""
                ),
            );
            // A placeholder so validation can continue; never used since errors are returned.
            SocketAddr::from(([127, 0, 0, 1], 0))
        }
    };
    let body_limit = raw.server.body_limit.map_or(DEFAULT_BODY_LIMIT, |b| b.0);
    if body_limit == 0 {
        v.err("server.body_limit", "must be greater than 0");
    }
    let max_in_flight = raw.server.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
    if max_in_flight == 0 {
        v.err("server.max_in_flight", "must be greater than 0");
    }
    let connect_timeout = raw
        .server
        .connect_timeout
        .unwrap_or(DEFAULT_CONNECT_TIMEOUT);
    if connect_timeout.is_zero() {
        v.err("server.connect_timeout", "must be greater than 0");
    }
    let body_timeout = raw.server.body_timeout.unwrap_or(DEFAULT_BODY_TIMEOUT);
    if body_timeout.is_zero() {
        v.err("server.body_timeout", "must be greater than 0");
    }
    let (default_policy, policy_errors) = Policy::resolve(&Policy::default(), &raw.policy);
    for (field, message) in policy_errors {
        v.err(format!("policy.{field}"), message);
    }
    let admin_key = match &raw.admin.key {
        Some(k) => v
            .interpolate("admin.key", k)
            .filter(|k| !k.is_empty())
            .map(Secret),
        None => None,
    };
    let cache = CacheSettings {
        max_bytes: usize::try_from(raw.cache.max_bytes.map_or(DEFAULT_CACHE_BYTES, |b| b.0))
            .unwrap_or(usize::MAX),
        max_entry_bytes: usize::try_from(
            raw.cache
                .max_entry_bytes
                .map_or(DEFAULT_CACHE_ENTRY_BYTES, |b| b.0),
        )
        .unwrap_or(usize::MAX),
    };
    let limits = v.limits(&raw.limits);
    let alerts = v.alerts(&raw.alerts);
    let alerts_digest = v.alerts_digest(&raw.alerts);
    let telemetry = v.telemetry(&raw.telemetry);
    let rollout = v.rollout(&raw.rollout);

    let mut gateway_keys = Vec::new();
    for (i, k) in raw.auth.gateway_keys.iter().enumerate() {
        let path = format!("auth.gateway_keys[{i}]");
        if let Some(k) = v.interpolate(&path, k) {
            if k.is_empty() {
                v.err(path, "is empty");
            } else {
                gateway_keys.push(Secret(k));
            }
        }
    }

    let mut providers = Vec::new();
    for (name, p) in &raw.providers {
        let path = format!("providers.{name}");
        let Some(kind) = ProviderKind::parse(&p.kind) else {
            let known: Vec<_> = ProviderKind::ALL.iter().map(|k| k.as_str()).collect();
            v.err(
                format!("{path}.kind"),
                format!(
                    "unknown provider kind {:?}; known: {}",
                    p.kind,
                    known.join(", ")
                ),
            );
            continue;
        };
        let format = match p.api.as_deref() {
            None => kind.format(),
            Some("chat") if kind.speaks(crate::api::ApiFormat::OpenAiChat) => {
                crate::api::ApiFormat::OpenAiChat
            }
            Some("responses") if kind.speaks(crate::api::ApiFormat::OpenAiResponses) => {
                crate::api::ApiFormat::OpenAiResponses
            }
            Some(other) => {
                v.err(
                    format!("{path}.api"),
                    format!(
                        "{other:?} is not an API Ballast speaks to kind \"{kind}\" (openai: \"chat\" or \"responses\"; other kinds: leave it out)"
                    ),
                );
                kind.format()
            }
        };
        let base_url = match &p.base_url {
            Some(u) => v.interpolate(&format!("{path}.base_url"), u),
            None => {
                match kind.default_base_url() {
                    Some(u) => Some(u.to_owned()),
                    None => {
                        v.err(
                        format!("{path}.base_url"),
                        format!("is required for kind \"{kind}\" (e.g. \"http://localhost:11434/v1\")"),
                    );
                        None
                    }
                }
            }
        };
        let base_url = base_url.and_then(|u| {
            let u = u.trim_end_matches('/').to_owned();
            if u.starts_with("http://") || u.starts_with("https://") {
                Some(u)
            } else {
                v.err(
                    format!("{path}.base_url"),
                    format!("{u:?} is not an http:// or https:// URL"),
                );
                None
            }
        });
        let api_key = match &p.api_key {
            Some(k) => v
                .interpolate(&format!("{path}.api_key"), k)
                .filter(|k| !k.is_empty())
                .map(Secret),
            None => None,
        };
        if api_key.is_none() && p.api_key.is_none() && kind.requires_key() {
            v.err(
                format!("{path}.api_key"),
                format!(
                    "is required for kind \"{kind}\" (e.g. api_key = \"${{{}}}\")",
                    env::key_var(kind)
                ),
            );
        }
        let mut headers = Vec::new();
        for (hn, hv) in &p.headers {
            let hpath = format!("{path}.headers.{hn}");
            let Ok(name) = HeaderName::from_bytes(hn.as_bytes()) else {
                v.err(hpath, "is not a valid HTTP header name");
                continue;
            };
            let Some(value) = v.interpolate(&hpath, hv) else {
                continue;
            };
            match HeaderValue::from_str(&value) {
                Ok(mut value) => {
                    value.set_sensitive(true);
                    headers.push((name, value));
                }
                Err(_) => v.err(hpath, "is not a valid HTTP header value"),
            }
        }
        providers.push((
            name.clone(),
            base_url.map(|base_url| Provider {
                name: name.clone(),
                kind,
                format,
                base_url,
                api_key,
                headers,
            }),
        ));
    }

    let known_providers: Vec<&str> = raw.providers.keys().map(String::as_str).collect();
    let mut routes = Vec::new();
    if raw.routes.is_empty() {
        v.err(
            "routes",
            "no routes defined: add at least one [routes.NAME] with targets",
        );
    }
    for (name, r) in &raw.routes {
        let path = format!("routes.{name}");
        if name.is_empty() {
            v.err(&path, "route name must not be empty");
        }
        let max_tokens = r.max_tokens.unwrap_or(DEFAULT_MAX_TOKENS);
        if max_tokens == 0 {
            v.err(format!("{path}.max_tokens"), "must be greater than 0");
        }
        // `targets = [a, b]` is shorthand for one tier per target.
        let raw_tiers: Vec<(String, Strategy, &[RawTarget])> = match (&r.targets, &r.tiers) {
            (Some(_), Some(_)) => {
                v.err(&path, "set either `targets` or `tiers`, not both");
                Vec::new()
            }
            (None, None) => {
                v.err(format!("{path}.targets"), "must list at least one target");
                Vec::new()
            }
            (Some(ts), None) => {
                if ts.is_empty() {
                    v.err(format!("{path}.targets"), "must list at least one target");
                }
                ts.iter()
                    .enumerate()
                    .map(|(i, t)| {
                        (
                            format!("{path}.targets[{i}]"),
                            Strategy::Weighted,
                            std::slice::from_ref(t),
                        )
                    })
                    .collect()
            }
            (None, Some(tiers)) => {
                if tiers.is_empty() {
                    v.err(format!("{path}.tiers"), "must list at least one tier");
                }
                let mut out = Vec::new();
                for (ti, tier) in tiers.iter().enumerate() {
                    if tier.targets.is_empty() {
                        v.err(
                            format!("{path}.tiers[{ti}].targets"),
                            "must list at least one target",
                        );
                    }
                    let strategy = tier.strategy.unwrap_or(Strategy::Weighted);
                    out.push((
                        format!("{path}.tiers[{ti}].targets"),
                        strategy,
                        tier.targets.as_slice(),
                    ));
                }
                out
            }
        };
        let mut targets = Vec::new();
        let mut tiers = Vec::new();
        let shorthand = r.tiers.is_none();
        for (tier_path, strategy, raw_targets) in raw_tiers {
            let start = targets.len();
            for (i, t) in raw_targets.iter().enumerate() {
                let tpath = if shorthand {
                    tier_path.clone()
                } else {
                    format!("{tier_path}[{i}]")
                };
                if let Some(t) = v.target(t, &tpath, &raw.providers, &known_providers) {
                    let dup = targets
                        .iter()
                        .any(|o: &Target| o.provider == t.provider && o.model == t.model);
                    if dup {
                        v.err(&tpath, "this target is already in the route (each target is tried once per request)");
                    } else {
                        targets.push(t);
                    }
                }
            }
            if targets.len() > start {
                tiers.push(Tier {
                    strategy,
                    targets: start..targets.len(),
                });
            }
        }
        let policy = match &r.policy {
            Some(rp) => {
                let b = &rp.breaker;
                let shared = [
                    (
                        "breaker",
                        b.failure_ratio.is_some()
                            || b.window.is_some()
                            || b.min_requests.is_some()
                            || b.consecutive_failures.is_some()
                            || b.cooldown.is_some()
                            || b.max_cooldown.is_some()
                            || b.half_open_trials.is_some(),
                    ),
                    ("retry_budget_ratio", rp.retry_budget_ratio.is_some()),
                    ("retry_budget_window", rp.retry_budget_window.is_some()),
                    (
                        "retry_budget_min_per_second",
                        rp.retry_budget_min_per_second.is_some(),
                    ),
                ];
                for (field, set) in shared {
                    if set {
                        v.err(
                            format!("{path}.policy.{field}"),
                            "breakers and retry budgets belong to targets, which routes share: set it in [policy]",
                        );
                    }
                }
                let (p, errs) = Policy::resolve(&default_policy, rp);
                for (field, message) in errs {
                    v.err(format!("{path}.policy.{field}"), message);
                }
                p
            }
            None => default_policy.clone(),
        };
        routes.push(Route {
            name: name.clone(),
            targets,
            tiers,
            max_tokens,
            policy,
        });
    }

    if !v.errors.is_empty() {
        return Err(ConfigErrors(v.errors));
    }
    // No errors means every provider validated, so indices line up with `raw.providers`.
    let providers = providers.into_iter().filter_map(|(_, p)| p).collect();
    Ok(Config {
        server: ServerSettings {
            listen,
            body_limit: usize::try_from(body_limit).unwrap_or(usize::MAX),
            connect_timeout,
            max_in_flight,
            body_timeout,
        },
        auth: AuthSettings { gateway_keys },
        admin: AdminSettings { key: admin_key },
        cache,
        limits,
        alerts,
        alerts_digest,
        signal: SignalSettings {
            eject: raw.signal.eject.unwrap_or(true),
            detectors: raw.signal.detectors.unwrap_or(true),
        },
        telemetry,
        rollout,
        probes: ProbeSettings {
            interval: raw.probes.interval.unwrap_or(DEFAULT_PROBE_INTERVAL),
            max_per_day: raw.probes.max_per_day.unwrap_or(DEFAULT_PROBES_PER_DAY),
        },
        incidents: IncidentSettings {
            store: raw
                .incidents
                .store
                .as_deref()
                .filter(|s| !s.is_empty())
                .map(std::path::PathBuf::from),
            store_set: raw.incidents.store.is_some(),
        },
        policy: default_policy,
        providers,
        routes,
    })
}

#[cfg(test)]
mod tests {
    use super::env::MapEnv;
    use super::*;

    fn load(text: &str) -> Result<Config, ConfigErrors> {
        Config::from_toml(
            text,
            &MapEnv::new(&[("ANTHROPIC_KEY", "sk-ant-1"), ("OAI", "sk-oai")]),
        )
    }

    fn errors(text: &str) -> Vec<String> {
        match load(text) {
            Ok(_) => panic!("expected errors"),
            Err(e) => e.0.iter().map(ToString::to_string).collect(),
        }
    }

    const GOOD: &str = r#"
        [server]
        listen = "127.0.0.1:9000"
        body_limit = "1MiB"
        [policy]
        deadline = "30s"

        [auth]
        gateway_keys = ["gw-1"]

        [providers.anthropic]
        kind = "anthropic"
        api_key = "${ANTHROPIC_KEY}"

        [providers.openai]
        kind = "openai"
        api_key = "${OAI}"
        base_url = "http://127.0.0.1:9100/v1/"
        headers = { "openai-project" = "p1" }

        [routes.chat]
        targets = ["anthropic/claude-sonnet-4-5", { provider = "openai", model = "gpt-4.1" }]
        max_tokens = 1024
    "#;

    #[test]
    fn a_good_config_becomes_typed() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.server.listen.port(), 9000);
        assert_eq!(c.server.body_limit, 1 << 20);
        assert_eq!(c.routes[0].policy.deadline, Duration::from_secs(30));
        assert_eq!(c.auth.gateway_keys, vec![Secret::new("gw-1")]);
        let route = &c.routes[0];
        assert_eq!(route.name, "chat");
        assert_eq!(route.max_tokens, 1024);
        let first = c.provider(route.targets[0].provider);
        assert_eq!(first.kind, ProviderKind::Anthropic);
        assert_eq!(first.base_url, "https://api.anthropic.com");
        assert_eq!(first.api_key.as_ref().unwrap().expose(), "sk-ant-1");
        let second = c.provider(route.targets[1].provider);
        assert_eq!(
            second.base_url, "http://127.0.0.1:9100/v1",
            "trailing slash trimmed"
        );
        assert_eq!(route.targets[1].model, "gpt-4.1");
        assert_eq!(second.headers.len(), 1);
    }

    #[test]
    fn unknown_provider_names_the_key_and_the_known_ones() {
        let text = GOOD.replace(r#"{ provider = "openai""#, r#"{ provider = "opneai""#);
        assert_eq!(
            errors(&text),
            vec![
                r#"routes.chat.targets[1].provider: unknown provider "opneai"; known: anthropic, openai"#
            ]
        );
    }

    #[test]
    fn every_problem_is_reported_at_once() {
        let text = r#"
            [server]
            listen = "localhost"
            [providers.local]
            kind = "openai-compatible"
            [providers.x]
            kind = "azure"
            [providers.a]
            kind = "anthropic"
            api_key = "${MISSING_VAR}"
            [routes.chat]
            targets = ["nope", "local/llama3"]
        "#;
        let errs = errors(text);
        assert!(
            errs.iter()
                .any(|e| e.starts_with("server.listen: invalid address")),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with("providers.local.base_url: is required")),
            "{errs:?}"
        );
        assert!(
            errs.iter().any(|e| e.starts_with(r#"providers.x.kind: unknown provider kind "azure"; known: anthropic, openai, openai-compatible, gemini"#)),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e == "providers.a.api_key: environment variable MISSING_VAR is not set"),
            "{errs:?}"
        );
        assert!(
            errs.iter()
                .any(|e| e.starts_with(r#"routes.chat.targets[0]: "nope" is not"#)),
            "{errs:?}"
        );
    }

    #[test]
    fn unknown_keys_and_bad_types_are_toml_errors() {
        let e = errors("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n[routes.a]\ntargets=[]\n");
        assert!(e[0].contains("unknown field `lisen`"), "{e:?}");
        let e = errors("[server]\nbody_limit = \"12 parsecs\"\n");
        assert!(e[0].contains("invalid size unit"), "{e:?}");
    }

    #[test]
    fn missing_key_and_no_routes() {
        let e = errors("[providers.o]\nkind = \"openai\"\n");
        assert!(e.iter().any(|e| e == r#"providers.o.api_key: is required for kind "openai" (e.g. api_key = "${OPENAI_API_KEY}")"#), "{e:?}");
        assert!(
            e.iter().any(|e| e.starts_with("routes: no routes defined")),
            "{e:?}"
        );
    }

    #[test]
    fn secrets_never_print() {
        let c = load(GOOD).unwrap();
        let dump = format!("{c:?}");
        assert!(
            !dump.contains("sk-ant-1") && !dump.contains("sk-oai") && !dump.contains("gw-1"),
            "{dump}"
        );
    }

    #[test]
    fn the_shipped_example_is_valid() {
        let text = include_str!("../../../../examples/ballast.toml");
        let env = MapEnv::new(&[
            ("ANTHROPIC_API_KEY", "a"),
            ("OPENAI_API_KEY", "o"),
            ("GEMINI_API_KEY", "g"),
            ("BALLAST_GATEWAY_KEY", "k"),
            ("BALLAST_ADMIN_KEY", "adm"),
        ]);
        if let Err(e) = Config::from_toml(text, &env) {
            panic!("examples/ballast.toml is invalid:\n{e}");
        }
    }

    #[test]
    fn tiers_weights_and_route_policies() {
        let c = load(
            r#"
            [policy]
            retries = 2
            [providers.a]
            kind = "openai-compatible"
            base_url = "http://127.0.0.1:1/v1"
            [routes.r]
            tiers = [{ strategy = "latency", targets = ["a/x", { provider = "a", model = "y", weight = 3 }] }, { targets = ["a/z"] }]
            [routes.r.policy]
            deadline = "5s"
            cache = "stale-on-error"
            [routes.plain]
            targets = ["a/x", "a/y"]
            "#,
        )
        .unwrap();
        let r = c.routes.iter().find(|r| r.name == "r").unwrap();
        assert_eq!(r.targets.len(), 3);
        assert_eq!(r.tiers.len(), 2);
        assert_eq!(r.tiers[0].strategy, Strategy::Latency);
        assert_eq!(r.tiers[0].targets, 0..2);
        assert_eq!(r.targets[1].weight, 3);
        assert_eq!(r.policy.deadline, Duration::from_secs(5));
        assert_eq!(r.policy.retries, 2, "inherited from [policy]");
        assert_eq!(r.policy.cache, CacheMode::StaleOnError);
        let plain = c.routes.iter().find(|r| r.name == "plain").unwrap();
        assert_eq!(plain.tiers.len(), 2, "targets = [a, b] is two tiers of one");
        assert_eq!(plain.policy.cache, CacheMode::Off);
    }

    #[test]
    fn policy_errors_name_their_key() {
        let e = errors(
            r#"
            [policy]
            deadline = "0s"
            [policy.breaker]
            failure_ratio = 1.5
            [providers.a]
            kind = "openai-compatible"
            base_url = "http://127.0.0.1:1/v1"
            [routes.r]
            targets = ["a/x"]
            "#,
        );
        assert!(
            e.iter()
                .any(|e| e == "policy.deadline: must be greater than 0"),
            "{e:?}"
        );
        assert!(e.iter().any(|e| e.starts_with("policy.breaker: ")), "{e:?}");
        let e = errors(
            "[providers.a]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[routes.r]\ntargets = [\"a/x\"]\n[routes.r.policy]\ncache = \"sometimes\"\n",
        );
        assert!(e[0].contains("unknown variant `sometimes`"), "{e:?}");
        let e = errors(
            "[providers.a]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[routes.r]\ntargets = [\"a/x\"]\n[routes.r.policy.breaker]\ncooldown = \"1s\"\n",
        );
        assert!(
            e[0].starts_with(
                "routes.r.policy.breaker: breakers and retry budgets belong to targets"
            ),
            "{e:?}"
        );
    }

    #[test]
    fn rollout_section_defaults_and_values() {
        let c = load(GOOD).unwrap();
        assert_eq!(c.rollout, RolloutSettings::default());
        assert_eq!(c.rollout.steps.len(), 2);
        assert_eq!(c.rollout.steps[1].share, 0.25);
        assert_eq!(c.rollout.steps[1].hold, Duration::from_secs(300));
        let c = load(&format!(
            "{GOOD}\n[rollout]\nsteps = [{{ share = 0.1, hold = \"30s\" }}, {{ share = 0.5, hold = \"1h\" }}]\nalpha = 0.05\nlatency_tolerance = 1\nmin_requests = 50\nprobe = false\n"
        ))
        .unwrap();
        let r = &c.rollout;
        assert_eq!(
            r.steps,
            [
                RolloutStep {
                    share: 0.1,
                    hold: Duration::from_secs(30)
                },
                RolloutStep {
                    share: 0.5,
                    hold: Duration::from_secs(3600)
                }
            ]
        );
        assert_eq!(
            (r.alpha, r.latency_tolerance, r.min_requests, r.probe),
            (0.05, 1.0, 50, false)
        );
        assert_eq!(r.error_tolerance, 0.01, "unset keys keep their defaults");
        let c = load(&format!("{GOOD}\n[rollout]\nsteps = []\n")).unwrap();
        assert!(c.rollout.steps.is_empty());

        // The redacted rendering keeps it.
        let c = load(&format!(
            "{GOOD}\n[rollout]\nsteps = [{{ share = 0.1, hold = \"90s\" }}]\nquality_tolerance = 0.02\n"
        ))
        .unwrap();
        let text = diff::redacted_toml(&c);
        let back = diff::parse_redacted(&text, &MapEnv::new(&[])).unwrap();
        assert_eq!(back.rollout, c.rollout, "{text}");
        let empty = load(&format!("{GOOD}\n[rollout]\nsteps = []\n")).unwrap();
        let back = diff::parse_redacted(&diff::redacted_toml(&empty), &MapEnv::new(&[])).unwrap();
        assert!(back.rollout.steps.is_empty());
        let d = diff::diff(&c, &empty);
        let paths: Vec<&str> = d.settings.iter().map(|c| c.path.as_str()).collect();
        assert_eq!(paths, ["rollout.steps", "rollout.quality_tolerance"]);
    }

    #[test]
    fn rollout_errors_name_their_key() {
        let e = errors(&format!(
            "{GOOD}\n[rollout]\nsteps = [{{ share = 0.2, hold = \"1m\" }}, {{ share = 0.1, hold = \"0s\" }}, {{ share = 1.0, hold = \"25h\" }}]\nalpha = 0.6\nerror_tolerance = -0.1\nmin_requests = 0\n"
        ));
        assert_eq!(
            e,
            [
                "rollout.steps[1].share: must be more than the previous step's share (0.2), not 0.1",
                "rollout.steps[1].hold: must be more than zero",
                "rollout.steps[2].share: must be between 0 and 1 (exclusive), not 1; 100% is the promotion after the last step",
                "rollout.steps[2].hold: must be at most 24h",
                "rollout.alpha: must be more than 0 and at most 0.5, not 0.6",
                "rollout.error_tolerance: must be 0 or more, not -0.1",
                "rollout.min_requests: must be at least 2 (a variance needs two observations), not 0",
            ]
        );
        let steps: Vec<String> = (1..=11)
            .map(|i| format!("{{ share = {}, hold = \"1m\" }}", f64::from(i) / 20.0))
            .collect();
        let e = errors(&format!(
            "{GOOD}\n[rollout]\nsteps = [{}]\n",
            steps.join(", ")
        ));
        assert_eq!(e.len(), 1, "{e:?}");
        assert!(
            e[0].starts_with("rollout.steps: at most 10 steps, not 11"),
            "{e:?}"
        );
        let e = errors(&format!("{GOOD}\n[rollout]\nsteps = [{{ share = 0.1 }}]\n"));
        assert!(e[0].contains("missing field `hold`"), "{e:?}");
        let e = errors(&format!("{GOOD}\n[rollout]\nshares = [0.1]\n"));
        assert!(e[0].contains("unknown field `shares`"), "{e:?}");
    }

    #[test]
    fn byte_sizes() {
        use raw::parse_byte_size as p;
        assert_eq!(p("16MiB"), Ok(16 << 20));
        assert_eq!(p("512 KiB"), Ok(512 << 10));
        assert_eq!(p("1000"), Ok(1000));
        assert!(p("MiB").is_err());
        assert!(p("99999999999999GiB").is_err());
    }

    #[test]
    fn alert_sinks_are_validated_with_their_key_paths() {
        let base = "[providers.a]\nkind = \"openai-compatible\"\nbase_url = \"http://127.0.0.1:1/v1\"\n[routes.r]\ntargets = [\"a/x\"]\n";
        let e = errors(&format!(
            "{base}[[alerts.sinks]]\nkind = \"teams\"\nurl = \"http://h\"\n[[alerts.sinks]]\nkind = \"slack\"\n[[alerts.sinks]]\nkind = \"pagerduty\"\n[[alerts.sinks]]\nkind = \"webhook\"\nurl = \"ftp://h\"\n"
        ));
        assert!(
            e.iter()
                .any(|m| m.starts_with("alerts.sinks[0].kind: unknown sink kind \"teams\"")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("alerts.sinks[1].url: is required")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("alerts.sinks[2].routing_key: is required")),
            "{e:?}"
        );
        assert!(
            e.iter()
                .any(|m| m.starts_with("alerts.sinks[3].url: invalid URL")),
            "{e:?}"
        );
        let ok = load(&format!(
            "{base}[[alerts.sinks]]\nkind = \"pagerduty\"\nrouting_key = \"${{ANTHROPIC_KEY}}\"\n"
        ))
        .unwrap();
        match &ok.alerts[..] {
            [AlertSink::PagerDuty { url, routing_key }] => {
                assert_eq!(url, PAGERDUTY_EVENTS_URL);
                assert_eq!(routing_key.expose(), "sk-ant-1");
            }
            other => panic!("{other:?}"),
        }
    }
}
