//! The gateway's shared state, built once from a validated [`Config`]: prepared providers (auth and
//! extra headers as a ready `HeaderMap`), prepared targets (parsed endpoint URLs), the route index, the
//! upstream transport, and the precomputed `/v1/models` body. Nothing here is parsed per request.

use ballast_core::capability::ModelRules;
use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};

use ballast_core::api::ApiFormat;
use ballast_core::config::{Config, Secret};
use ballast_core::provider::{AuthStyle, ProviderKind};

use crate::runtime::Runtime;
use crate::telemetry::Telemetry;
use crate::upstream::{self, Transport, Url};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("route {route:?}: target {target}: invalid endpoint URL {url:?}")]
    BadUrl {
        route: String,
        target: String,
        url: String,
    },
    #[error("provider {provider:?}: its API key cannot be sent as an HTTP header")]
    BadKey { provider: String },
    #[error("cannot build the upstream HTTP client: {0}")]
    Client(String),
}

pub struct AppState {
    pub config: Config,
    routes: HashMap<String, usize>,
    pub(crate) providers: Vec<PreparedProvider>,
    pub(crate) targets: Vec<Vec<PreparedTarget>>,
    /// How upstream calls are made (the pooled HTTP client, or a test's scripted transport).
    pub(crate) transport: Arc<dyn Transport>,
    pub(crate) runtime: Runtime,
    /// The request log line and metrics, fed by the request path's records.
    pub(crate) telemetry: Telemetry,
    /// The providers' rate limits per target, from their response headers (aggregates only).
    pub(crate) capacity: Arc<crate::capacity::Capacity>,
    models_body: Bytes,
    /// The gateway serving this configuration (shared by every configuration of the process).
    pub(crate) gateway: crate::rollout::GatewaySlot,
}

pub(crate) struct PreparedProvider {
    pub name: String,
    pub format: ApiFormat,
    /// Authentication, configured extra headers and defaults, ready to send.
    pub headers: HeaderMap,
}

pub(crate) struct PreparedTarget {
    pub provider: usize,
    pub model: String,
    /// `provider/model`, as logs and headers show it.
    pub label: String,
    pub url: Url,
    pub url_stream: Url,
    /// Index of this target's live state in [`Runtime::targets`] (shared by routes naming it).
    pub state: usize,
    pub weight: u32,
    /// What the target model accepts (the capability table, with the configuration's overrides).
    pub rules: ModelRules,
    /// `x-ballast-target` and `x-ballast-route` of its answers on this route, made once.
    pub label_header: HeaderValue,
    pub route_header: HeaderValue,
}

/// A name as a response header value (`-` when it cannot be one).
fn name_header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
}

impl AppState {
    /// Prepares the gateway, with randomness (balancing, backoff jitter) seeded from the OS.
    pub fn new(config: Config) -> Result<Self, StateError> {
        Self::with_seed(config, fastrand::u64(..))
    }

    /// Like [`AppState::new`] with a fixed seed, so a test can replay every random choice.
    pub fn with_seed(config: Config, seed: u64) -> Result<Self, StateError> {
        let transport = upstream::HttpTransport::new(&config.server).map_err(StateError::Client)?;
        Self::with_transport(config, seed, Arc::new(transport))
    }

    /// Like [`AppState::with_seed`], reaching providers through `transport` instead of HTTP.
    pub fn with_transport(
        config: Config,
        seed: u64,
        transport: Arc<dyn Transport>,
    ) -> Result<Self, StateError> {
        let runtime = Runtime::new(&config, seed);
        let labels: Vec<String> = runtime.targets.iter().map(|t| t.label.clone()).collect();
        let mut telemetry = Telemetry::new(&config, &labels);
        let capacity = Arc::new(crate::capacity::Capacity::new(
            &labels,
            ballast_core::ratelimit::HeadroomConfig::default(),
        ));
        if let Some(registry) = telemetry.registry_mut() {
            capacity.register(registry);
        }
        Self::assemble(
            config,
            transport,
            runtime,
            telemetry,
            capacity,
            Arc::default(),
        )
    }

    /// The state of another configuration of the same process (a generation), to serve beside or
    /// instead of this one: what the two share (targets by label, providers' kill switches by name,
    /// the gateway-wide budget, in-flight count, cache, metrics, incidents, alerting, the
    /// transport) is the same object; what differs is prepared from `config`. Nothing here reads
    /// the network.
    pub fn next(&self, config: Config) -> Result<Self, StateError> {
        let runtime = self.runtime.next(&config);
        let labels: Vec<String> = runtime.targets.iter().map(|t| t.label.clone()).collect();
        let telemetry = self.telemetry.next(&config, &labels);
        let capacity = Arc::new(self.capacity.next(&labels));
        Self::assemble(
            config,
            self.transport.clone(),
            runtime,
            telemetry,
            capacity,
            self.gateway.clone(),
        )
    }

    fn assemble(
        config: Config,
        transport: Arc<dyn Transport>,
        runtime: Runtime,
        telemetry: Telemetry,
        capacity: Arc<crate::capacity::Capacity>,
        gateway: crate::rollout::GatewaySlot,
    ) -> Result<Self, StateError> {
        let providers = config
            .providers
            .iter()
            .map(|p| {
                Ok(PreparedProvider {
                    name: p.name.clone(),
                    format: p.format,
                    headers: provider_headers(p.kind, p.api_key.as_ref(), &p.headers).ok_or_else(
                        || StateError::BadKey {
                            provider: p.name.clone(),
                        },
                    )?,
                })
            })
            .collect::<Result<Vec<_>, StateError>>()?;
        let mut targets = Vec::with_capacity(config.routes.len());
        for route in &config.routes {
            let mut prepared = Vec::with_capacity(route.targets.len());
            for t in &route.targets {
                let p = config.provider(t.provider);
                let label = format!("{}/{}", p.name, t.model);
                let parse = |stream| {
                    let url = ballast_core::provider::endpoint_for(
                        p.format,
                        &p.base_url,
                        &t.model,
                        stream,
                    );
                    Url::parse(&url).map_err(|_| StateError::BadUrl {
                        route: route.name.clone(),
                        target: label.clone(),
                        url,
                    })
                };
                prepared.push(PreparedTarget {
                    provider: t.provider.0,
                    model: t.model.clone(),
                    url: parse(false)?,
                    url_stream: parse(true)?,
                    state: runtime.index(&label).unwrap_or(0),
                    weight: t.weight,
                    rules: t.capabilities.apply(ModelRules::of(p.kind, &t.model)),
                    label_header: name_header(&label),
                    route_header: name_header(&route.name),
                    label,
                });
            }
            targets.push(prepared);
        }
        let models_body = models_body(&config);
        Ok(Self {
            routes: config.route_index(),
            config,
            providers,
            targets,
            transport,
            runtime,
            telemetry,
            capacity,
            models_body,
            gateway,
        })
    }

    /// An upstream answer's head arrived: its rate-limit headers (if any) update the target's
    /// capacity, and what they say worth an incident opens one.
    pub(crate) fn observe_capacity(&self, target: usize, headers: &http::HeaderMap) {
        let events = self
            .capacity
            .observe(target, headers, tokio::time::Instant::now());
        self.capacity_events(&events);
    }

    /// The state serving now: this one, or the configuration that replaced it (background work
    /// follows the configuration serving).
    pub(crate) fn latest(self: &Arc<Self>) -> Arc<AppState> {
        self.gateway
            .get()
            .and_then(std::sync::Weak::upgrade)
            .map_or_else(|| self.clone(), |g| g.state())
    }

    /// The periodic look at capacity: forecasts of targets gone quiet, and limit-change notices
    /// that have run their time.
    pub(crate) fn capacity_tick(&self) {
        let events = self.capacity.tick(tokio::time::Instant::now());
        self.capacity_events(&events);
        self.telemetry
            .incidents
            .expire_limit_changes(std::time::SystemTime::now());
    }

    fn capacity_events(&self, events: &[crate::capacity::CapacityEvent]) {
        if !self.config.signal.detectors {
            return;
        }
        for ev in events {
            let label = self.target_label(ev.target());
            self.telemetry.incidents.capacity(ev, &label);
        }
    }

    fn target_label(&self, target: usize) -> String {
        self.runtime
            .targets
            .get(target)
            .map_or_else(String::new, |t| t.label.clone())
    }

    /// The index of the route clients call `model`.
    pub(crate) fn route(&self, model: &str) -> Option<usize> {
        self.routes.get(model).copied()
    }

    pub(crate) fn route_names(&self) -> String {
        let names: Vec<&str> = self.config.routes.iter().map(|r| r.name.as_str()).collect();
        names.join(", ")
    }

    /// Disables the providers and targets named in a `BALLAST_DISABLE`-style list; returns the
    /// entries that name nothing.
    pub fn disable(&self, list: &str) -> Vec<String> {
        self.runtime.disable_from_list(&self.config, list)
    }

    pub(crate) fn models_body(&self) -> Bytes {
        self.models_body.clone()
    }
}

fn provider_headers(
    kind: ProviderKind,
    key: Option<&Secret>,
    extra: &[(http::HeaderName, HeaderValue)],
) -> Option<HeaderMap> {
    let mut h = HeaderMap::new();
    h.insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    h.insert(
        http::header::USER_AGENT,
        HeaderValue::from_static(concat!("ballast/", env!("CARGO_PKG_VERSION"))),
    );
    if kind == ProviderKind::Anthropic {
        h.insert("anthropic-version", HeaderValue::from_static("2023-06-01"));
    }
    if let Some(key) = key {
        let (name, value) = match kind.auth_style() {
            AuthStyle::XApiKey => ("x-api-key", key.expose().to_owned()),
            AuthStyle::Bearer => ("authorization", format!("Bearer {}", key.expose())),
            AuthStyle::GoogApiKey => ("x-goog-api-key", key.expose().to_owned()),
        };
        let mut value = HeaderValue::from_str(&value).ok()?;
        value.set_sensitive(true);
        h.insert(name, value);
    }
    for (n, v) in extra {
        h.insert(n.clone(), v.clone());
    }
    Some(h)
}

/// One body that both the OpenAI and the Anthropic SDK parse as their model list.
fn models_body(config: &Config) -> Bytes {
    let data: Vec<serde_json::Value> = config
        .routes
        .iter()
        .map(|r| {
            serde_json::json!({
                "id": r.name,
                "object": "model",
                "created": 0,
                "owned_by": "ballast",
                "type": "model",
                "display_name": r.name,
                "created_at": "1970-01-01T00:00:00Z",
            })
        })
        .collect();
    let first = config.routes.first().map(|r| r.name.clone());
    let last = config.routes.last().map(|r| r.name.clone());
    let body = serde_json::json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": first,
        "last_id": last,
    });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}
