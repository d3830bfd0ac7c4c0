//! OpenTelemetry traces over OTLP/HTTP: one server span per request and one client span per
//! upstream attempt, with the GenAI semantic conventions' attributes (operation, provider, models,
//! usage, finish reasons, `error.type`) and never a prompt or an answer.
//!
//! The request path only copies a few numbers and names into a [`SpanMsg`] and `try_send`s it on a
//! bounded channel (a full channel drops the span and counts it); spans are built and exported in
//! batches by a background task that `serve()` owns and drains on shutdown. A slow or dead
//! collector costs the request path nothing.

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use opentelemetry::trace::{
    SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
};
use opentelemetry::{Array, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_http::{HttpClient, HttpError};
use opentelemetry_otlp::{Protocol, WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use prometheus_client::metrics::counter::Counter;
use tokio::sync::{mpsc, watch};

use ballast_core::api::ApiFormat;
use ballast_core::config::TelemetrySettings;
use ballast_core::model::Usage;
use ballast_core::record::{AttemptResult, RequestOutcome};
use ballast_core::trace::TraceContext;

use crate::runtime::lock;

/// Spans waiting for export, at most; more are dropped (and counted) rather than queued without
/// bound.
const QUEUE: usize = 8192;
/// Spans per export request.
const BATCH: usize = 512;
/// A partial batch goes out after this long.
const FLUSH_EVERY: Duration = Duration::from_secs(1);
/// How often an export failure is logged, at most.
const LOG_EVERY: Duration = Duration::from_secs(60);

/// What the request path hands over for one span: numbers, indices and names only.
pub(crate) enum SpanMsg {
    Request(RequestSpan),
    Attempt(AttemptSpan),
}

pub(crate) struct RequestSpan {
    /// The names of the configuration that served it (its indices are into these).
    pub names: Arc<SpanNames>,
    pub trace: TraceContext,
    pub end: SystemTime,
    pub duration: Duration,
    pub request_id: Box<str>,
    pub api: ApiFormat,
    pub request_model: Option<Box<str>>,
    pub route: Option<usize>,
    pub target: Option<usize>,
    pub outcome: RequestOutcome,
    pub status: u16,
    pub stream: bool,
    pub attempts: u32,
    pub fallback: bool,
    pub ttft: Option<Duration>,
    pub usage: Usage,
    pub stop_reason: Option<Box<str>>,
}

pub(crate) struct AttemptSpan {
    pub names: Arc<SpanNames>,
    pub trace: TraceContext,
    pub end: SystemTime,
    pub duration: Duration,
    pub target: usize,
    pub result: AttemptResult,
    pub stream: bool,
}

/// Names the spans need: routes, and per target its label, model and provider kind.
#[derive(Clone, Default)]
pub(crate) struct SpanNames {
    pub routes: Vec<String>,
    pub route_provider: Vec<&'static str>,
    pub targets: Vec<(String, String, &'static str)>,
}

/// The span pipeline of a gateway with `[telemetry] otlp_endpoint` set.
pub(crate) struct Spans {
    tx: mpsc::Sender<SpanMsg>,
    rx: Mutex<Option<mpsc::Receiver<SpanMsg>>>,
    settings: TelemetrySettings,
    /// Spans exported, dropped at the queue, and lost to failed exports.
    pub exported: Counter,
    pub dropped: Counter,
    pub failed: Counter,
    /// Sampling: a new trace is sampled when a draw falls below this (of `u64::MAX`).
    sample_below: u64,
}

impl Spans {
    /// `None` when no collector is configured: then no span is ever built.
    pub fn new(
        settings: &TelemetrySettings,
        (exported, dropped, failed): (Counter, Counter, Counter),
    ) -> Option<Self> {
        settings.otlp_endpoint.as_ref()?;
        let (tx, rx) = mpsc::channel(QUEUE);
        #[allow(
            clippy::cast_possible_truncation,
            clippy::cast_sign_loss,
            clippy::cast_precision_loss,
            reason = "a ratio in [0, 1] scaled to the u64 range; saturating is the intent"
        )]
        let sample_below = (settings.trace_sample_ratio * u64::MAX as f64) as u64;
        Some(Self {
            tx,
            rx: Mutex::new(Some(rx)),
            settings: settings.clone(),
            exported,
            dropped,
            failed,
            sample_below,
        })
    }

    /// Whether a new trace (no sampling decision from the client) is exported.
    pub fn sample(&self) -> bool {
        self.sample_below == u64::MAX || fastrand::u64(..) < self.sample_below
    }

    pub fn send(&self, m: SpanMsg) {
        if self.tx.try_send(m).is_err() {
            self.dropped.inc();
        }
    }

    /// The export task, once (`None` the second time).
    pub fn worker(
        &self,
        client: reqwest::Client,
        stopped: watch::Receiver<bool>,
    ) -> Option<impl Future<Output = ()> + Send + 'static> {
        let rx = lock(&self.rx).take()?;
        let settings = self.settings.clone();
        let endpoint = settings.otlp_endpoint.clone()?;
        let headers: HashMap<String, String> = settings
            .otlp_headers
            .iter()
            .map(|(k, v)| (k.clone(), v.expose().to_owned()))
            .collect();
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(OtlpClient(client))
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(endpoint.clone())
            .with_timeout(settings.otlp_timeout)
            .with_headers(headers)
            .build();
        let mut exporter = match exporter {
            Ok(e) => e,
            Err(e) => {
                tracing::error!(
                    "telemetry.otlp_endpoint {endpoint}: no traces will be exported: {e}"
                );
                return None;
            }
        };
        exporter.set_resource(
            &Resource::builder_empty()
                .with_service_name(settings.service_name.clone())
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
                .build(),
        );
        let counters = (self.exported.clone(), self.failed.clone());
        Some(run(
            rx,
            exporter,
            endpoint,
            settings.otlp_timeout,
            counters,
            stopped,
        ))
    }
}

async fn run(
    mut rx: mpsc::Receiver<SpanMsg>,
    exporter: opentelemetry_otlp::SpanExporter,
    endpoint: String,
    timeout: Duration,
    (exported, failed): (Counter, Counter),
    mut stopped: watch::Receiver<bool>,
) {
    let scope = InstrumentationScope::builder("ballast")
        .with_version(env!("CARGO_PKG_VERSION"))
        .build();
    let mut batch: Vec<SpanData> = Vec::with_capacity(BATCH);
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_log: Option<tokio::time::Instant> = None;
    let mut flush = async |batch: &mut Vec<SpanData>| {
        if batch.is_empty() {
            return;
        }
        let n = u64::try_from(batch.len()).unwrap_or(u64::MAX);
        let spans = std::mem::replace(batch, Vec::with_capacity(BATCH));
        let limit = timeout.saturating_add(Duration::from_secs(1));
        let result = match tokio::time::timeout(limit, exporter.export(spans)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {}s", limit.as_secs())),
        };
        match result {
            Ok(()) => {
                exported.inc_by(n);
            }
            Err(e) => {
                failed.inc_by(n);
                let now = tokio::time::Instant::now();
                if last_log.is_none_or(|t| now.duration_since(t) >= LOG_EVERY) {
                    last_log = Some(now);
                    tracing::warn!(
                        "could not export {n} spans to {endpoint}: {e} (logged at most once a minute; \
                         ballast_trace_spans_total{{result=\"failed\"}} counts them)"
                    );
                }
            }
        }
    };
    loop {
        tokio::select! {
            m = rx.recv() => {
                let Some(m) = m else { break };
                batch.push(build(m, &scope));
                if batch.len() >= BATCH {
                    flush(&mut batch).await;
                }
            }
            _ = tick.tick() => flush(&mut batch).await,
            _ = stopped.changed() => {
                // Shutting down: what is queued goes out, then the task ends.
                while let Ok(m) = rx.try_recv() {
                    batch.push(build(m, &scope));
                    if batch.len() >= BATCH {
                        flush(&mut batch).await;
                    }
                }
                break;
            }
        }
    }
    flush(&mut batch).await;
}

fn kv(key: &'static str, value: impl Into<Value>) -> KeyValue {
    KeyValue::new(key, value)
}

fn secs(d: Duration) -> f64 {
    d.as_secs_f64()
}

fn i64_of(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// `gen_ai.operation.name` for a provider kind or client API.
fn operation(api: ApiFormat) -> &'static str {
    match api {
        ApiFormat::Gemini => "generate_content",
        _ => "chat",
    }
}

fn context(t: &TraceContext) -> SpanContext {
    SpanContext::new(
        TraceId::from(t.trace_id),
        SpanId::from(t.span_id),
        TraceFlags::SAMPLED,
        false,
        TraceState::default(),
    )
}

fn build(m: SpanMsg, scope: &InstrumentationScope) -> SpanData {
    match m {
        SpanMsg::Request(r) => request_span(r, scope),
        SpanMsg::Attempt(a) => attempt_span(a, scope),
    }
}

fn request_span(r: RequestSpan, scope: &InstrumentationScope) -> SpanData {
    let names = r.names.clone();
    let op = operation(r.api);
    let target = r.target.and_then(|t| names.targets.get(t));
    let provider = target
        .map(|t| t.2)
        .or_else(|| r.route.and_then(|i| names.route_provider.get(i)).copied());
    // The model the client named; a request refused before that names its route (the model alias).
    let model = r
        .request_model
        .as_deref()
        .or_else(|| {
            r.route
                .and_then(|i| names.routes.get(i))
                .map(String::as_str)
        })
        .unwrap_or("");
    let name = if model.is_empty() {
        Cow::Borrowed(op)
    } else {
        Cow::Owned(format!("{op} {model}"))
    };
    let mut a = Vec::with_capacity(20);
    a.push(kv("gen_ai.operation.name", op));
    if let Some(p) = provider {
        a.push(kv("gen_ai.provider.name", p));
    }
    if !model.is_empty() {
        a.push(kv("gen_ai.request.model", model.to_owned()));
    }
    if let Some(t) = target {
        a.push(kv("gen_ai.response.model", t.1.clone()));
        a.push(kv("ballast.target", t.0.clone()));
    }
    if let Some(route) = r.route.and_then(|i| names.routes.get(i)) {
        a.push(kv("ballast.route", route.clone()));
    }
    if let Some(n) = r.usage.input_tokens {
        a.push(kv("gen_ai.usage.input_tokens", i64_of(n)));
    }
    if let Some(n) = r.usage.output_tokens {
        a.push(kv("gen_ai.usage.output_tokens", i64_of(n)));
    }
    if let Some(n) = r.usage.cache_read_tokens {
        a.push(kv("gen_ai.usage.cache_read.input_tokens", i64_of(n)));
    }
    if let Some(reason) = r.stop_reason {
        a.push(kv(
            "gen_ai.response.finish_reasons",
            Value::Array(Array::String(vec![StringValue::from(String::from(reason))])),
        ));
    }
    a.push(kv("http.response.status_code", i64::from(r.status)));
    a.push(kv("ballast.request_id", String::from(r.request_id)));
    a.push(kv("ballast.api", r.api.to_string()));
    a.push(kv("ballast.outcome", r.outcome.as_str()));
    a.push(kv("ballast.attempts", i64::from(r.attempts)));
    a.push(kv("ballast.fallback", r.fallback));
    a.push(kv("ballast.stream", r.stream));
    if let Some(t) = r.ttft {
        a.push(kv("ballast.time_to_first_token", secs(t)));
    }
    let status = if r.outcome.is_success() {
        Status::Unset
    } else {
        a.push(kv("error.type", error_type(r.outcome, r.status)));
        Status::error(r.outcome.as_str())
    };
    SpanData {
        span_context: context(&r.trace),
        parent_span_id: SpanId::from(r.trace.parent_span_id),
        parent_span_is_remote: r.trace.parent_remote,
        span_kind: SpanKind::Server,
        name,
        start_time: r.end.checked_sub(r.duration).unwrap_or(r.end),
        end_time: r.end,
        attributes: a,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// `error.type` of a request that did not get its answer: the HTTP status class where there is
/// one, else what happened.
fn error_type(outcome: RequestOutcome, status: u16) -> Cow<'static, str> {
    match outcome {
        RequestOutcome::StreamFailed | RequestOutcome::ClientGone | RequestOutcome::Shed => {
            Cow::Borrowed(outcome.as_str())
        }
        _ => Cow::Owned(status.to_string()),
    }
}

fn attempt_span(a: AttemptSpan, scope: &InstrumentationScope) -> SpanData {
    let names = a.names.clone();
    let (label, model, provider) = names
        .targets
        .get(a.target)
        .map_or(("", "", "_OTHER"), |t| (t.0.as_str(), t.1.as_str(), t.2));
    let op = if provider == "gcp.gemini" {
        "generate_content"
    } else {
        "chat"
    };
    let mut attrs = vec![
        kv("gen_ai.operation.name", op),
        kv("gen_ai.provider.name", provider),
        kv("gen_ai.request.model", model.to_owned()),
        kv("ballast.target", label.to_owned()),
        kv("ballast.attempt.result", a.result.as_str()),
        kv("ballast.stream", a.stream),
    ];
    let status = if a.result == AttemptResult::Answered {
        Status::Unset
    } else {
        attrs.push(kv("error.type", a.result.as_str()));
        Status::error(a.result.as_str())
    };
    SpanData {
        span_context: context(&a.trace),
        parent_span_id: SpanId::from(a.trace.parent_span_id),
        parent_span_is_remote: false,
        span_kind: SpanKind::Client,
        name: Cow::Owned(format!("{op} {model}")),
        start_time: a.end.checked_sub(a.duration).unwrap_or(a.end),
        end_time: a.end,
        attributes: attrs,
        dropped_attributes_count: 0,
        events: SpanEvents::default(),
        links: SpanLinks::default(),
        status,
        instrumentation_scope: scope.clone(),
    }
}

/// The exporter's HTTP client: the gateway's own reqwest, on the gateway's runtime.
#[derive(Debug)]
struct OtlpClient(reqwest::Client);

/// Collector answers larger than this are not read (a collector answers a few bytes).
const MAX_COLLECTOR_ANSWER: usize = 64 * 1024;

#[async_trait::async_trait]
impl HttpClient for OtlpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, HttpError> {
        let (parts, body) = request.into_parts();
        let resp = self
            .0
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let mut body = Vec::new();
        let mut stream = resp.bytes_stream();
        while let Some(chunk) = futures_util::StreamExt::next(&mut stream).await {
            let chunk = chunk?;
            if body.len().saturating_add(chunk.len()) > MAX_COLLECTOR_ANSWER {
                return Err("the collector's answer is too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        let mut out = http::Response::new(Bytes::from(body));
        *out.status_mut() = status;
        *out.headers_mut() = headers;
        Ok(out)
    }
}
