//! What the gateway tells operators, from the request path's records: the one log line per request,
//! and Prometheus metrics (`GET /metrics`). Metric names follow the OpenTelemetry GenAI semantic
//! conventions where they name the thing (one client-level observation per logical request), mapped
//! to Prometheus as the OTel exporter maps them; per-attempt and gateway data are `ballast_*`.
//!
//! Every label value is bounded: routes and targets come from the configuration, the rest are enums.
//! The handles of each series are created once (at start, or on first use) and kept in tables
//! indexed by route, target and enum, so recording costs atomic adds, not label allocations.

use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use ballast_core::api::ApiFormat;
use ballast_core::config::Config;
use ballast_core::provider::ProviderKind;
use ballast_core::record::{AttemptRecord, AttemptResult, RequestOutcome, RequestRecord};
use ballast_core::rollout::{ArmCounters, ArmStats};
use ballast_core::signal::{Signal, natural_stop};
use ballast_core::trace::{TraceContext, parse_traceparent};

use crate::incidents::{AnswerFacts, Incidents};
use crate::otel::{AttemptSpan, RequestSpan, SpanMsg, SpanNames, Spans};

/// `gen_ai.client.operation.duration` buckets (seconds), as the conventions advise.
const DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
];

const APIS: [ApiFormat; 4] = [
    ApiFormat::OpenAiChat,
    ApiFormat::OpenAiResponses,
    ApiFormat::AnthropicMessages,
    ApiFormat::Gemini,
];

fn api_index(api: ApiFormat) -> usize {
    match api {
        ApiFormat::OpenAiChat => 0,
        ApiFormat::OpenAiResponses => 1,
        ApiFormat::AnthropicMessages => 2,
        ApiFormat::Gemini => 3,
    }
}

fn api_label(api: ApiFormat) -> &'static str {
    match api {
        ApiFormat::OpenAiChat => "chat_completions",
        ApiFormat::OpenAiResponses => "responses",
        ApiFormat::AnthropicMessages => "messages",
        ApiFormat::Gemini => "generate_content",
    }
}

/// `gen_ai.provider.name` for a provider kind.
fn provider_name(kind: ProviderKind) -> &'static str {
    match kind {
        ProviderKind::Anthropic => "anthropic",
        ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => "openai",
        ProviderKind::Gemini => "gcp.gemini",
    }
}

/// `error.type` for a request that did not succeed: a small fixed vocabulary.
const ERROR_TYPES: [&str; 8] = [
    "",
    "timeout",
    "unavailable",
    "bad_gateway",
    "rate_limited",
    "invalid_request",
    "stream_failed",
    "client_gone",
];

fn error_type(outcome: RequestOutcome, status: u16) -> usize {
    match outcome {
        o if o.is_success() => 0,
        RequestOutcome::StreamFailed => 6,
        RequestOutcome::ClientGone => 7,
        _ => match status {
            504 | 408 => 1,
            503 | 529 => 2,
            429 => 4,
            400..=499 => 5,
            _ => 3,
        },
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GenAiLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: String,
    gen_ai_response_model: String,
    error_type: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    gen_ai_operation_name: &'static str,
    gen_ai_provider_name: &'static str,
    gen_ai_request_model: String,
    gen_ai_response_model: String,
    gen_ai_token_modality: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    api: &'static str,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AttemptLabels {
    target: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabel {
    route: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DetectorLabels {
    target: String,
    signal: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabel {
    signal: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS)
}

/// `gen_ai.client.operation.time_per_output_chunk` buckets: chunks come milliseconds apart.
const TPOC_BUCKETS: [f64; 13] = [
    0.001, 0.002, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.2, 0.5, 1.0,
];

fn tpoc_histogram() -> Histogram {
    Histogram::new(TPOC_BUCKETS)
}

/// The series of one (route, answering target, client API, error type).
struct GenAiSeries {
    duration: Histogram,
    ttfc: Histogram,
    tpoc: Histogram,
    tokens: [Counter; 5],
}

/// `gen_ai.client.inference.usage.*` counters, in the order of [`GenAiSeries::tokens`].
const TOKEN_COUNTERS: [(&str, &str); 5] = [
    (
        "gen_ai_client_inference_usage_input_tokens",
        "Input tokens, as the provider reported them",
    ),
    (
        "gen_ai_client_inference_usage_output_tokens",
        "Output tokens, as the provider reported them",
    ),
    (
        "gen_ai_client_inference_usage_cache_read_input_tokens",
        "Input tokens read from the provider's prompt cache (a subset of the input tokens)",
    ),
    (
        "gen_ai_client_inference_usage_cache_write_input_tokens",
        "Input tokens written to the provider's prompt cache (a subset of the input tokens)",
    ),
    (
        "gen_ai_client_inference_usage_reasoning_output_tokens",
        "Reasoning tokens (a subset of the output tokens)",
    ),
];

/// `gen_ai.operation.name` for a client API.
fn operation_name(api: ApiFormat) -> &'static str {
    match api {
        ApiFormat::Gemini => "generate_content",
        _ => "chat",
    }
}

/// What the gateway knows of its routes and targets, for label values.
#[derive(Default)]
struct Names {
    routes: Vec<String>,
    /// Per route, the target states of its targets in order; a request's series is indexed by the
    /// answering target's position here, so the table grows with the routes' sizes, not with
    /// routes times targets.
    route_targets: Vec<Vec<usize>>,
    /// Per route, where its slots start in the series table.
    route_offset: Vec<usize>,
    /// Per route, the provider kind of its first target (the provider a failed request was for).
    route_provider: Vec<&'static str>,
    /// Per target state: `provider/model`, its model, its provider kind.
    targets: Vec<(String, String, &'static str)>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ContinuationLabels {
    route: String,
    result: &'static str,
}

pub struct Telemetry {
    /// Shared by every configuration of the process (each family registered once).
    registry: Arc<Registry>,
    names: Names,
    /// The same names for spans (shared with the span messages of this configuration).
    span_names: Arc<SpanNames>,
    /// The families whose series this configuration's tables hold.
    requests_family: Family<RequestLabels, Counter>,
    attempts_family: Family<AttemptLabels, Counter>,
    fallbacks_family: Family<RouteLabel, Counter>,
    continuations_family: Family<ContinuationLabels, Counter>,
    probes_family: Family<AttemptLabels, Counter>,
    probe_latency_family: Family<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// `[route + 1][api][outcome]`; route slot 0 is "no route".
    requests: Vec<Counter>,
    /// `[target][result]`.
    attempts: Vec<Counter>,
    /// `[route]`: answered by a target after an earlier one failed.
    fallbacks: Vec<Counter>,
    /// `[route][continued, failed]`: streams that broke after content reached the client.
    continuations: Vec<[Counter; 2]>,
    genai: Vec<OnceLock<GenAiSeries>>,
    op_duration: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    ttfc: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    tpoc: Family<GenAiLabels, Histogram, fn() -> Histogram>,
    tokens: [Family<TokenLabels, Counter>; 5],
    breaker_state: Family<TargetLabel, Gauge>,
    budget_available: Family<TargetLabel, Gauge>,
    in_flight: Gauge,
    buffered: Gauge,
    detector_score: Family<DetectorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    detector_threshold: Family<DetectorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    incidents_open: Family<SignalLabel, Gauge>,
    /// Open follow-ups past their due time, by their incident's signal.
    followups_overdue: Family<SignalLabel, Gauge>,
    /// `[target][result]`: probes sent, apart from client traffic.
    probes: Vec<Counter>,
    probe_latency: Vec<Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// The detectors of every target, and the incidents they opened.
    pub incidents: Incidents,
    /// `[signal] detectors`: feed them at all.
    detectors: bool,
    /// `[telemetry] access_log_sample`: share of answered requests given an access log line.
    access_sample: f64,
    /// Per route: how this configuration's requests fared, for a rollout's comparison of two
    /// configurations (aggregates only). Fresh for every configuration.
    arms: Vec<ArmCounters>,
    /// Spans for the OTLP exporter, when a collector is configured.
    pub(crate) spans: Option<Arc<Spans>>,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SpanResultLabel {
    result: &'static str,
}

/// One counter per (target, attempt result), created up front, in `[target][result]` order.
fn per_target_result(
    family: &Family<AttemptLabels, Counter>,
    targets: &[(String, String, &'static str)],
) -> Vec<Counter> {
    let mut out = Vec::with_capacity(targets.len().saturating_mul(AttemptResult::ALL.len()));
    for (label, _, _) in targets {
        for result in AttemptResult::ALL {
            let labels = AttemptLabels {
                target: label.clone(),
                result: result.as_str(),
            };
            out.push(family.get_or_create(&labels).clone());
        }
    }
    out
}

/// Gauges read from live state at scrape time.
pub struct LiveState<'a> {
    /// Per target state: breaker (0 closed, 1 half-open, 2 open) and retries available.
    pub targets: &'a [(i64, i64)],
    pub in_flight: i64,
    pub buffered_bytes: i64,
}

impl Telemetry {
    /// The registry `/metrics` renders, for collectors kept elsewhere (rate-limit capacity).
    /// Only while the first configuration is being built (later ones share the registry).
    pub(crate) fn registry_mut(&mut self) -> Option<&mut Registry> {
        Arc::get_mut(&mut self.registry)
    }

    /// Registers every family. `target_labels` are the gateway's target states in order (`provider/model`).
    pub fn new(config: &Config, target_labels: &[String]) -> Self {
        let mut registry = Registry::default();

        let op_duration = Family::<GenAiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "gen_ai_client_operation_duration",
            "GenAI operation duration: one observation per client request, arrival to last byte",
            Unit::Seconds,
            op_duration.clone(),
        );
        let ttfc = Family::<GenAiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            duration_histogram,
        );
        registry.register_with_unit(
            "gen_ai_client_operation_time_to_first_chunk",
            "Time from a streaming request's arrival to its first chunk with content",
            Unit::Seconds,
            ttfc.clone(),
        );
        let tpoc = Family::<GenAiLabels, Histogram, fn() -> Histogram>::new_with_constructor(
            tpoc_histogram,
        );
        registry.register_with_unit(
            "gen_ai_client_operation_time_per_output_chunk",
            "Time between a stream's chunks after the first, each chunk observed",
            Unit::Seconds,
            tpoc.clone(),
        );
        let tokens: [Family<TokenLabels, Counter>; 5] = Default::default();
        for ((name, help), family) in TOKEN_COUNTERS.iter().zip(&tokens) {
            registry.register(*name, *help, family.clone());
        }

        let requests_family = Family::<RequestLabels, Counter>::default();
        registry.register(
            "ballast_requests",
            "Requests by route, client API and outcome",
            requests_family.clone(),
        );
        let attempts_family = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "ballast_upstream_attempts",
            "Upstream attempts by target and result (retries and fallbacks included)",
            attempts_family.clone(),
        );
        let fallbacks_family = Family::<RouteLabel, Counter>::default();
        registry.register(
            "ballast_fallbacks",
            "Requests answered by a target after an earlier one failed",
            fallbacks_family.clone(),
        );
        let continuations_family = Family::<ContinuationLabels, Counter>::default();
        registry.register(
            "ballast_stream_continuations",
            "Streams that broke after content reached the client, by whether another target continued them",
            continuations_family.clone(),
        );
        let breaker_state = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "ballast_breaker_state",
            "Circuit breaker state per target: 0 closed, 1 half-open, 2 open",
            breaker_state.clone(),
        );
        let budget_available = Family::<TargetLabel, Gauge>::default();
        registry.register(
            "ballast_retry_budget_available",
            "Retries and fallbacks the target's retry budget allows now",
            budget_available.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "ballast_in_flight_requests",
            "Requests in flight",
            in_flight.clone(),
        );
        let buffered = Gauge::default();
        registry.register_with_unit(
            "ballast_buffered",
            "Bytes buffered from providers now (limits.max_buffered_bytes caps it)",
            Unit::Bytes,
            buffered.clone(),
        );
        let detector_score =
            Family::<DetectorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "ballast_detector_score",
            "Each detector's test statistic per target (it fires at ballast_detector_threshold)",
            detector_score.clone(),
        );
        let detector_threshold =
            Family::<DetectorLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register(
            "ballast_detector_threshold",
            "The score at which each detector fires",
            detector_threshold.clone(),
        );
        let incidents_open = Family::<SignalLabel, Gauge>::default();
        registry.register(
            "ballast_incidents_open",
            "Open incidents by signal",
            incidents_open.clone(),
        );
        let followups_overdue = Family::<SignalLabel, Gauge>::default();
        registry.register(
            "ballast_incident_followups_overdue",
            "Incident follow-ups open past their due date, by the incident's signal",
            followups_overdue.clone(),
        );
        let probes_family = Family::<AttemptLabels, Counter>::default();
        registry.register(
            "ballast_probes",
            "Probe requests by target and result (not client traffic)",
            probes_family.clone(),
        );
        let probe_latency_family =
            Family::<TargetLabel, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "ballast_probe_latency",
            "The last probe's latency per target",
            Unit::Seconds,
            probe_latency_family.clone(),
        );
        let spans = config.telemetry.otlp_endpoint.is_some().then(|| {
            let family = Family::<SpanResultLabel, Counter>::default();
            registry.register(
                "ballast_trace_spans",
                "Spans for the OTLP collector: exported, dropped at a full queue, or lost to a failed export",
                family.clone(),
            );
            let series = |result| family.get_or_create(&SpanResultLabel { result }).clone();
            (series("exported"), series("dropped"), series("failed"))
        });
        let spans = spans
            .and_then(|counters| Spans::new(&config.telemetry, counters))
            .map(Arc::new);
        let seed = Self {
            registry: Arc::new(registry),
            names: Names::default(),
            span_names: Arc::default(),
            requests_family,
            attempts_family,
            fallbacks_family,
            continuations_family,
            probes_family,
            probe_latency_family,
            requests: Vec::new(),
            attempts: Vec::new(),
            fallbacks: Vec::new(),
            continuations: Vec::new(),
            genai: Vec::new(),
            op_duration,
            ttfc,
            tpoc,
            tokens,
            breaker_state,
            budget_available,
            in_flight,
            buffered,
            detector_score,
            detector_threshold,
            incidents_open,
            followups_overdue,
            probes: Vec::new(),
            probe_latency: Vec::new(),
            incidents: Incidents::new(&[], crate::alerts::Alerts::new(config.alerts.clone())),
            detectors: config.signal.detectors,
            access_sample: config.telemetry.access_log_sample,
            arms: Vec::new(),
            spans,
        };
        seed.next(config, target_labels)
    }

    /// The telemetry of another configuration of the same process: the same registry, families,
    /// span pipeline and incidents, with this configuration's series tables (a route or target both
    /// name keeps its series: the families hand out the same one for the same labels).
    pub fn next(&self, config: &Config, target_labels: &[String]) -> Self {
        let routes: Vec<String> = config.routes.iter().map(|r| r.name.clone()).collect();
        let route_provider: Vec<&'static str> = config
            .routes
            .iter()
            .map(|r| {
                r.targets.first().map_or("_OTHER", |t| {
                    provider_name(config.provider(t.provider).kind)
                })
            })
            .collect();
        let targets = target_labels
            .iter()
            .map(|label| {
                let (provider, model) = label.split_once('/').unwrap_or((label, ""));
                let kind = config
                    .providers
                    .iter()
                    .find(|p| p.name == provider)
                    .map_or("_OTHER", |p| provider_name(p.kind));
                (label.clone(), model.to_owned(), kind)
            })
            .collect::<Vec<_>>();
        let mut requests = Vec::new();
        for route in std::iter::once("none").chain(routes.iter().map(String::as_str)) {
            for api in APIS {
                for outcome in RequestOutcome::ALL {
                    requests.push(
                        self.requests_family
                            .get_or_create(&RequestLabels {
                                route: route.to_owned(),
                                api: api_label(api),
                                outcome: outcome.as_str(),
                            })
                            .clone(),
                    );
                }
            }
        }
        let attempts = per_target_result(&self.attempts_family, &targets);
        let fallbacks = routes
            .iter()
            .map(|r| {
                self.fallbacks_family
                    .get_or_create(&RouteLabel { route: r.clone() })
                    .clone()
            })
            .collect();
        let continuations = routes
            .iter()
            .map(|r| {
                ["continued", "failed"].map(|result| {
                    self.continuations_family
                        .get_or_create(&ContinuationLabels {
                            route: r.clone(),
                            result,
                        })
                        .clone()
                })
            })
            .collect();
        let probes = per_target_result(&self.probes_family, &targets);
        let probe_latency_family = &self.probe_latency_family;
        let probe_latency = targets
            .iter()
            .map(|(label, _, _)| {
                probe_latency_family
                    .get_or_create(&TargetLabel {
                        target: label.clone(),
                    })
                    .clone()
            })
            .collect();
        let incidents = self.incidents.next(target_labels);
        let route_targets: Vec<Vec<usize>> = config
            .routes
            .iter()
            .map(|r| {
                r.targets
                    .iter()
                    .filter_map(|t| {
                        let label = format!("{}/{}", config.provider(t.provider).name, t.model);
                        target_labels.iter().position(|l| *l == label)
                    })
                    .collect()
            })
            .collect();
        let per_slot = APIS.len().saturating_mul(ERROR_TYPES.len());
        let mut route_offset = Vec::with_capacity(route_targets.len());
        let mut slots = 0usize;
        for ts in &route_targets {
            route_offset.push(slots);
            slots = slots.saturating_add(ts.len().saturating_add(1).saturating_mul(per_slot));
        }
        let span_names = Arc::new(SpanNames {
            routes: routes.clone(),
            route_provider: route_provider.clone(),
            targets: targets.clone(),
        });
        Self {
            registry: self.registry.clone(),
            names: Names {
                routes,
                route_targets,
                route_offset,
                route_provider,
                targets,
            },
            span_names,
            requests_family: self.requests_family.clone(),
            attempts_family: self.attempts_family.clone(),
            fallbacks_family: self.fallbacks_family.clone(),
            continuations_family: self.continuations_family.clone(),
            probes_family: self.probes_family.clone(),
            probe_latency_family: self.probe_latency_family.clone(),
            requests,
            attempts,
            fallbacks,
            continuations,
            genai: (0..slots).map(|_| OnceLock::new()).collect(),
            op_duration: self.op_duration.clone(),
            ttfc: self.ttfc.clone(),
            tpoc: self.tpoc.clone(),
            tokens: self.tokens.clone(),
            breaker_state: self.breaker_state.clone(),
            budget_available: self.budget_available.clone(),
            in_flight: self.in_flight.clone(),
            buffered: self.buffered.clone(),
            detector_score: self.detector_score.clone(),
            detector_threshold: self.detector_threshold.clone(),
            incidents_open: self.incidents_open.clone(),
            followups_overdue: self.followups_overdue.clone(),
            probes,
            probe_latency,
            incidents,
            detectors: config.signal.detectors,
            access_sample: config.telemetry.access_log_sample,
            arms: config.routes.iter().map(|_| ArmCounters::new()).collect(),
            spans: self.spans.clone(),
        }
    }

    /// The trace of a request arriving with `headers`: the client's (`traceparent`) continued, or
    /// a new one when spans are exported. `None`: no trace at all (nothing exported, nothing
    /// propagated).
    pub fn start_trace(&self, headers: &http::HeaderMap) -> Option<TraceContext> {
        let parent = headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        match &self.spans {
            Some(spans) => Some(TraceContext::for_request(
                parent,
                fastrand::u128(1..),
                fastrand::u64(1..),
                parent.is_none() && spans.sample(),
            )),
            // No collector: the client's own trace goes upstream unchanged.
            None => parent.map(|p| TraceContext {
                trace_id: p.trace_id,
                span_id: p.span_id,
                parent_span_id: 0,
                parent_remote: true,
                sampled: p.sampled,
            }),
        }
    }

    /// The span of one upstream attempt of a request traced as `t` (with no collector, the
    /// client's span is passed on as it is).
    pub fn attempt_span(&self, t: TraceContext) -> TraceContext {
        if self.spans.is_some() {
            t.child(fastrand::u64(1..))
        } else {
            t
        }
    }

    /// One probe ended: counted apart from client traffic, and evidence for the target's detectors.
    pub fn probe(&self, r: &AttemptRecord) {
        let i = r
            .target
            .saturating_mul(AttemptResult::ALL.len())
            .saturating_add(r.result.index());
        if let Some(c) = self.probes.get(i) {
            c.inc();
        }
        if let Some(g) = self.probe_latency.get(r.target) {
            g.set(r.duration.as_secs_f64());
        }
        self.incidents.observe(r, self.target_name(r.target), false);
    }

    pub fn route_name(&self, route: usize) -> &str {
        self.names.routes.get(route).map_or("", String::as_str)
    }

    pub fn target_name(&self, target: usize) -> &str {
        self.names.targets.get(target).map_or("", |t| t.0.as_str())
    }

    /// One upstream attempt ended.
    /// A stream broke after content reached the client; another target continued it, or none could.
    pub fn continuation(&self, route: usize, continued: bool) {
        if let Some([ok, failed]) = self.continuations.get(route) {
            if continued { ok } else { failed }.inc();
        }
    }

    pub fn attempt(&self, r: &AttemptRecord) {
        let i = r
            .target
            .saturating_mul(AttemptResult::ALL.len())
            .saturating_add(r.result.index());
        if let Some(c) = self.attempts.get(i) {
            c.inc();
        }
        if self.detectors {
            self.incidents.observe(r, self.target_name(r.target), true);
        }
        if let (Some(spans), Some(trace)) = (&self.spans, r.trace)
            && trace.sampled
        {
            spans.send(SpanMsg::Attempt(AttemptSpan {
                names: self.span_names.clone(),
                trace,
                end: SystemTime::now(),
                duration: r.duration,
                target: r.target,
                result: r.result,
                stream: r.stream,
            }));
        }
    }

    /// How this configuration's requests on `route` fared so far.
    pub fn arm(&self, route: usize) -> ArmStats {
        self.arms
            .get(route)
            .map(ArmCounters::snapshot)
            .unwrap_or_default()
    }

    /// One request ended: its log line, and its metrics.
    pub fn request(&self, r: &RequestRecord<'_>) {
        self.log(r);
        // What the answer says to the quality detectors and to a rollout's comparison, read once.
        let facts = (r.outcome == RequestOutcome::Answered).then(|| answer_facts(r));
        if let Some(arm) = r.route.and_then(|i| self.arms.get(i)) {
            arm_record(arm, r, facts.as_ref());
        }
        let route_slot = r.route.map_or(0, |i| i.saturating_add(1));
        let i = route_slot
            .saturating_mul(APIS.len())
            .saturating_add(api_index(r.api))
            .saturating_mul(RequestOutcome::ALL.len())
            .saturating_add(r.outcome.index());
        if let Some(c) = self.requests.get(i) {
            c.inc();
        }
        // An answer's text against the prompt's scripts: evidence for the target's wrong-script
        // detector (answers with no text, tool calls only, say nothing).
        if let (Some(spans), Some(trace)) = (&self.spans, r.trace)
            && trace.sampled
        {
            spans.send(SpanMsg::Request(RequestSpan {
                names: self.span_names.clone(),
                trace,
                end: SystemTime::now(),
                duration: r.duration,
                request_id: r.request_id.into(),
                api: r.api,
                request_model: r.request_model.map(Into::into),
                route: r.route,
                target: r.target,
                outcome: r.outcome,
                status: r.status,
                stream: r.stream,
                attempts: r.attempts,
                fallback: r.fallback,
                ttft: r.ttft,
                usage: r.usage,
                stop_reason: r.stop_reason.map(Into::into),
            }));
        }
        if self.detectors
            && let (Some(facts), Some(target)) = (&facts, r.target)
        {
            self.incidents
                .observe_answer(target, facts, self.target_name(target));
        }
        let Some(route) = r.route else { return };
        if r.fallback
            && r.outcome.is_success()
            && let Some(c) = self.fallbacks.get(route)
        {
            c.inc();
        }
        if matches!(r.outcome, RequestOutcome::Shed) {
            return;
        }
        let error = error_type(r.outcome, r.status);
        let Some(series) = self.genai_series(route, r.target, r.api, error) else {
            return;
        };
        series.duration.observe(r.duration.as_secs_f64());
        if r.stream
            && let Some(t) = r.ttft
        {
            series.ttfc.observe(t.as_secs_f64());
        }
        let u = &r.usage;
        let counts = [
            u.input_tokens,
            u.output_tokens,
            u.cache_read_tokens,
            u.cache_write_tokens,
            u.reasoning_tokens,
        ];
        for (counter, n) in series.tokens.iter().zip(counts) {
            if let Some(n) = n {
                counter.inc_by(n);
            }
        }
    }

    fn genai_series(
        &self,
        route: usize,
        target: Option<usize>,
        api: ApiFormat,
        error: usize,
    ) -> Option<&GenAiSeries> {
        let in_route = self.names.route_targets.get(route)?;
        // Slot 0: no target answered; slot k: the route's k-th target.
        let t_slot = match target {
            None => 0,
            Some(t) => in_route.iter().position(|&x| x == t)?.saturating_add(1),
        };
        let within = t_slot
            .saturating_mul(APIS.len())
            .saturating_add(api_index(api))
            .saturating_mul(ERROR_TYPES.len())
            .saturating_add(error);
        let i = self.names.route_offset.get(route)?.saturating_add(within);
        let cell = self.genai.get(i)?;
        Some(cell.get_or_init(|| {
            let request_model = self.names.routes.get(route).cloned().unwrap_or_default();
            let (response_model, provider) = match target.and_then(|t| self.names.targets.get(t)) {
                Some((_, model, kind)) => (model.clone(), *kind),
                None => (
                    String::new(),
                    self.names
                        .route_provider
                        .get(route)
                        .copied()
                        .unwrap_or("_OTHER"),
                ),
            };
            let operation = operation_name(api);
            let labels = GenAiLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: provider,
                gen_ai_request_model: request_model.clone(),
                gen_ai_response_model: response_model.clone(),
                error_type: ERROR_TYPES.get(error).copied().unwrap_or("_OTHER"),
            };
            let token = TokenLabels {
                gen_ai_operation_name: operation,
                gen_ai_provider_name: provider,
                gen_ai_request_model: request_model.clone(),
                gen_ai_response_model: response_model.clone(),
                gen_ai_token_modality: "text",
            };
            GenAiSeries {
                duration: self.op_duration.get_or_create(&labels).clone(),
                ttfc: self.ttfc.get_or_create(&labels).clone(),
                tpoc: self.tpoc.get_or_create(&labels).clone(),
                tokens: std::array::from_fn(|k| {
                    self.tokens
                        .get(k)
                        .map(|f| f.get_or_create(&token).clone())
                        .unwrap_or_default()
                }),
            }
        }))
    }

    /// The `time_per_output_chunk` histogram of a stream answered by `target` on `route` for a client
    /// of `api`, to observe as its chunks go by.
    pub fn chunk_timer(&self, route: usize, target: usize, api: ApiFormat) -> Option<Histogram> {
        self.genai_series(route, Some(target), api, 0)
            .map(|s| s.tpoc.clone())
    }

    /// The exposition, with the gauges read from `live` first.
    pub fn render(&self, live: &LiveState<'_>) -> String {
        for (i, (breaker, budget)) in live.targets.iter().enumerate() {
            if let Some((label, _, _)) = self.names.targets.get(i) {
                let l = TargetLabel {
                    target: label.clone(),
                };
                self.breaker_state.get_or_create(&l).set(*breaker);
                self.budget_available.get_or_create(&l).set(*budget);
            }
        }
        self.in_flight.set(live.in_flight);
        self.buffered.set(live.buffered_bytes);
        for (i, scores) in self.incidents.scores().iter().enumerate() {
            let Some((label, _, _)) = self.names.targets.get(i) else {
                continue;
            };
            for (signal, (score, threshold)) in
                Signal::ALL.iter().zip(scores).filter(|(s, _)| s.detector())
            {
                let l = DetectorLabels {
                    target: label.clone(),
                    signal: signal.as_str(),
                };
                self.detector_score.get_or_create(&l).set(*score);
                self.detector_threshold.get_or_create(&l).set(*threshold);
            }
        }
        for (signal, n) in Signal::ALL.iter().zip(self.incidents.open_counts()) {
            self.incidents_open
                .get_or_create(&SignalLabel {
                    signal: signal.as_str(),
                })
                .set(n);
        }
        let overdue = self.incidents.overdue_counts(std::time::SystemTime::now());
        for (signal, n) in Signal::ALL.iter().zip(overdue) {
            self.followups_overdue
                .get_or_create(&SignalLabel {
                    signal: signal.as_str(),
                })
                .set(n);
        }
        let mut out = String::with_capacity(16 * 1024);
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
            let _ = writeln!(out, "# encoding failed");
        }
        out
    }

    /// The request's one access log line (target `ballast::access`): ids, route, target, timings,
    /// token counts, stop reason — never content. Answered requests are sampled at
    /// `access_log_sample`; a failed one is always written.
    fn log(&self, r: &RequestRecord<'_>) {
        let answered = matches!(
            r.outcome,
            RequestOutcome::Answered | RequestOutcome::CacheHit | RequestOutcome::ClientGone
        );
        if answered && self.access_sample < 1.0 && fastrand::f64() >= self.access_sample {
            return;
        }
        // Milliseconds to the microsecond (`12.345`, not `12.345000000000001`).
        let ms = |d: Duration| (d.as_secs_f64() * 1e6).round() / 1e3;
        let trace_id = r
            .trace
            .map(|t| tracing::field::display(TraceId(t.trace_id)));
        let route = r.route.map_or("", |i| self.route_name(i));
        let target = r.target.map_or("", |i| self.target_name(i));
        let u = &r.usage;
        match (r.outcome, r.error) {
            (RequestOutcome::Answered | RequestOutcome::CacheHit, _) => tracing::info!(
                target: "ballast::access",
                request_id = r.request_id,
                trace_id = trace_id,
                route,
                target,
                api = %r.api,
                status = r.status,
                outcome = r.outcome.as_str(),
                attempts = r.attempts,
                stream = r.stream,
                latency_ms = ms(r.duration),
                ttft_ms = r.ttft.map(ms),
                input_tokens = u.input_tokens,
                output_tokens = u.output_tokens,
                stop_reason = r.stop_reason,
                malformed_events = r.malformed_events,
                "answered"
            ),
            (RequestOutcome::ClientGone, _) => tracing::info!(
                target: "ballast::access",
                request_id = r.request_id,
                trace_id = trace_id,
                route,
                target,
                api = %r.api,
                outcome = r.outcome.as_str(),
                attempts = r.attempts,
                latency_ms = ms(r.duration),
                output_tokens = u.output_tokens,
                "client disconnected before the answer ended"
            ),
            (outcome, error) => {
                let message = error.unwrap_or("failed");
                if r.status >= 500 && outcome != RequestOutcome::Stale {
                    tracing::error!(
                        target: "ballast::access",
                        request_id = r.request_id,
                        trace_id = trace_id,
                        route,
                        target,
                        api = %r.api,
                        status = r.status,
                        outcome = outcome.as_str(),
                        attempts = r.attempts,
                        stream = r.stream,
                        latency_ms = ms(r.duration),
                        "{message}"
                    );
                } else {
                    tracing::warn!(
                        target: "ballast::access",
                        request_id = r.request_id,
                        trace_id = trace_id,
                        route,
                        target,
                        api = %r.api,
                        status = r.status,
                        outcome = outcome.as_str(),
                        attempts = r.attempts,
                        stream = r.stream,
                        latency_ms = ms(r.duration),
                        ttft_ms = r.ttft.map(ms),
                        output_tokens = u.output_tokens,
                        "{message}"
                    );
                }
            }
        }
    }
}

/// A trace id as the log line shows it: 32 lower-case hex digits, written without allocating.
struct TraceId(u128);

impl std::fmt::Display for TraceId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:032x}", self.0)
    }
}

/// Word 3-grams an answer needs before its repetition says anything.
const MIN_NGRAMS_FOR_REPETITION: u32 = 32;

/// What an answered request tells the output-quality detectors.
/// A request's part in its configuration's tally: whether it was degraded (failed, or needed a
/// retry or another target), its latency (to the first token of a stream, to the end of a whole
/// answer), and whether its answer was defective (text in a script the prompt does not use, empty,
/// looping, or not the JSON asked for: the output-quality signals that eject a target). Requests the client ended, the
/// gateway shed at capacity, refused as malformed, or answered from its cache say nothing of the
/// configuration and are left out.
fn arm_record(arm: &ArmCounters, r: &RequestRecord<'_>, facts: Option<&AnswerFacts>) {
    let (degraded, latency) = match r.outcome {
        RequestOutcome::Answered => (
            r.attempts > 1 || r.fallback,
            Some(if r.stream {
                r.ttft.unwrap_or(r.duration)
            } else {
                r.duration
            }),
        ),
        RequestOutcome::StreamFailed | RequestOutcome::Stale => (true, None),
        RequestOutcome::Failed if r.status >= 500 || r.status == 429 || r.status == 408 => {
            (true, None)
        }
        RequestOutcome::Failed
        | RequestOutcome::ClientGone
        | RequestOutcome::Shed
        | RequestOutcome::CacheHit => return,
    };
    let answer = facts.map(|f| {
        !f.wrong_script.is_empty()
            || f.empty == Some(true)
            || f.repetitive == Some(true)
            || f.invalid_json == Some(true)
    });
    arm.record(degraded, latency, answer);
}

fn answer_facts(r: &RequestRecord<'_>) -> AnswerFacts {
    // Emptiness, length and JSON validity only count for answers that ended as a normal end of text
    // (not a tool call, a length cut or a refusal).
    let text_end = !r.checks.tool_call
        && r.stop_reason.is_some_and(|s| {
            matches!(
                s,
                "stop" | "end_turn" | "STOP" | "completed" | "stop_sequence"
            )
        });
    let chars = r.text.chars;
    AnswerFacts {
        wrong_script: r.text.wrong_scripts(),
        empty: text_end.then_some(chars == 0),
        chars: (text_end && chars > 0).then_some(chars),
        abnormal_stop: r.stop_reason.and_then(natural_stop).map(|natural| !natural),
        repetitive: (r.checks.ngrams >= MIN_NGRAMS_FOR_REPETITION).then_some(r.checks.repetitive),
        invalid_json: if text_end && chars > 0 {
            r.checks.json.map(|valid| !valid)
        } else {
            None
        },
    }
}
