//! The configuration file as written: serde structs that mirror the TOML, with no meaning attached yet.
//! `super::validate` turns them into the typed [`super::Config`]; nothing else reads these.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;

pub use super::policy::RawPolicy;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub auth: RawAuth,
    #[serde(default)]
    pub admin: RawAdmin,
    #[serde(default)]
    pub cache: RawCache,
    #[serde(default)]
    pub limits: RawLimits,
    #[serde(default)]
    pub alerts: RawAlerts,
    #[serde(default)]
    pub signal: RawSignal,
    #[serde(default)]
    pub incidents: RawIncidents,
    #[serde(default)]
    pub probes: RawProbes,
    #[serde(default)]
    pub telemetry: RawTelemetry,
    #[serde(default)]
    pub rollout: RawRollout,
    #[serde(default)]
    pub policy: RawPolicy,
    #[serde(default)]
    pub providers: BTreeMap<String, RawProvider>,
    #[serde(default)]
    pub routes: BTreeMap<String, RawRoute>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub listen: Option<String>,
    pub body_limit: Option<ByteSize>,
    #[serde(default, with = "humantime_serde::option")]
    pub connect_timeout: Option<Duration>,
    pub max_in_flight: Option<u32>,
    #[serde(default, with = "humantime_serde::option")]
    pub body_timeout: Option<Duration>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAuth {
    #[serde(default)]
    pub gateway_keys: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAdmin {
    pub key: Option<String>,
}

/// `[probes]`: synthetic requests to targets without traffic.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProbes {
    #[serde(default, with = "humantime_serde::option")]
    pub interval: Option<Duration>,
    pub max_per_day: Option<u32>,
}

/// `[rollout]`: how a reloaded configuration is rolled out (canary steps and the test that rolls
/// it back).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRollout {
    pub steps: Option<Vec<RawStep>>,
    pub alpha: Option<f64>,
    pub error_tolerance: Option<f64>,
    pub latency_tolerance: Option<f64>,
    pub quality_tolerance: Option<f64>,
    pub min_requests: Option<u64>,
    pub probe: Option<bool>,
}

/// One `[rollout] steps` entry: `{ share = 0.05, hold = "2m" }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStep {
    pub share: f64,
    #[serde(with = "humantime_serde")]
    pub hold: Duration,
}

/// `[incidents]`: where incidents are kept.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawIncidents {
    pub store: Option<String>,
}

/// `[signal]`: what detection does.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSignal {
    pub eject: Option<bool>,
    pub detectors: Option<bool>,
}

/// `[telemetry]`: where traces go.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTelemetry {
    pub metrics_listen: Option<String>,
    pub otlp_endpoint: Option<String>,
    #[serde(default)]
    pub otlp_headers: BTreeMap<String, String>,
    #[serde(default, with = "humantime_serde::option")]
    pub otlp_timeout: Option<Duration>,
    pub service_name: Option<String>,
    pub trace_sample_ratio: Option<f64>,
    pub access_log_sample: Option<f64>,
}

/// `[alerts]`: where incidents are announced.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawAlerts {
    #[serde(default)]
    pub sinks: Vec<RawSink>,
    /// The digest of open incidents, overdue follow-ups and recurrences: `weekly` (default) or `off`.
    pub digest: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawSink {
    /// `webhook` (generic JSON), `slack` (incoming webhook) or `pagerduty` (Events API v2).
    pub kind: String,
    pub url: Option<String>,
    /// PagerDuty's integration key.
    pub routing_key: Option<String>,
}

/// `[limits]`: byte caps on what the gateway buffers from a provider.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    pub max_event_bytes: Option<ByteSize>,
    pub max_first_token_bytes: Option<ByteSize>,
    pub max_answer_bytes: Option<ByteSize>,
    pub max_tool_args_bytes: Option<ByteSize>,
    pub max_buffered_bytes: Option<ByteSize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCache {
    pub max_bytes: Option<ByteSize>,
    pub max_entry_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawProvider {
    pub kind: String,
    /// Which of the provider's APIs Ballast speaks to it: `chat` or, for `openai`, `responses`.
    pub api: Option<String>,
    pub base_url: Option<String>,
    pub api_key: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoute {
    /// Shorthand: every target is a tier of its own, tried in order.
    pub targets: Option<Vec<RawTarget>>,
    pub tiers: Option<Vec<RawTier>>,
    pub max_tokens: Option<u32>,
    pub policy: Option<RawPolicy>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTier {
    pub strategy: Option<Strategy>,
    pub targets: Vec<RawTarget>,
}

/// How a tier spreads traffic over its targets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Strategy {
    /// Random in proportion to each target's weight.
    Weighted,
    /// Power of two choices over each target's latency EWMA and in-flight count.
    Latency,
}

/// A target as `"provider/model"` or `{ provider = "…", model = "…" }`.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum RawTarget {
    Short(String),
    Long(RawTargetTable),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawTargetTable {
    pub provider: String,
    pub model: String,
    pub weight: Option<u32>,
    pub capabilities: Option<RawCapabilities>,
}

/// A target's overrides of what Ballast's table says its model accepts.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawCapabilities {
    /// `any`, `temperature-or-top-p` or `default-only`.
    pub sampling: Option<String>,
    pub top_k: Option<bool>,
    /// `max_tokens` or `max_completion_tokens` (OpenAI Chat Completions).
    pub token_limit: Option<String>,
    pub prefill: Option<bool>,
    pub system_prompt: Option<bool>,
    pub forced_tool_choice: Option<bool>,
    pub parallel_tool_calls: Option<bool>,
    pub images: Option<bool>,
    pub structured_output: Option<bool>,
}

/// A size in bytes: an integer, or a string such as `"16MiB"`, `"512KiB"`, `"1MB"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteSize(pub u64);

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Either {
            N(u64),
            S(String),
        }
        match Either::deserialize(d)? {
            Either::N(n) => Ok(ByteSize(n)),
            Either::S(s) => parse_byte_size(&s)
                .map(ByteSize)
                .map_err(serde::de::Error::custom),
        }
    }
}

pub fn parse_byte_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("invalid size {s:?}: expected e.g. 16MiB"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1_000,
        "KiB" => 1 << 10,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        other => {
            return Err(format!(
                "invalid size unit {other:?} in {s:?}: use B, KiB, MiB or GiB"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size {s:?} is too large"))
}
