//! Ballast's HTTP edge: the inbound API routes (OpenAI, Anthropic), authentication, request ids, and
//! the proxy that carries each request to a provider and its answer back. [`app`] builds the router
//! from an [`AppState`] so tests drive it without a socket; [`serve`] runs it on a listener.

mod admin;
mod alerts;
mod auth;
mod cache;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
pub mod capacity;
mod coalesce;
mod count_tokens;
mod error;
pub mod gate;
mod inbound;
mod incidents;
mod otel;
mod outcome;
mod probes;
mod proxy;
mod request_id;
pub mod rollout;
mod runtime;
mod state;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod store;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod stream;
mod telemetry;
#[warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::routing::{get, patch, post};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tower::ServiceExt as _;

pub use state::{AppState, StateError};
pub use store::{
    FollowupRow, Row as IncidentRow, StoreError, VersionRow, config_versions, followup_history,
    history as incident_history,
};
pub use upstream::plain_client;
pub use upstream::{
    BodyStream, Failure, HttpTransport, SendFuture, Transport, UpstreamRequest, UpstreamResponse,
    Url,
};

/// The gateway's router over shared state.
pub fn app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/v1/chat/completions", post(inbound::chat_completions))
        .route("/v1/responses", post(inbound::responses))
        .route("/v1/messages", post(inbound::messages))
        .route("/v1/messages/count_tokens", post(inbound::count_tokens))
        .route("/v1beta/models", get(inbound::gemini_models))
        .route(
            "/v1beta/models/{*rest}",
            post(inbound::gemini).get(inbound::model),
        )
        .route(
            "/v1/models/{*rest}",
            post(inbound::gemini).get(inbound::model),
        )
        .route("/v1/models", get(inbound::models))
        .route("/metrics", get(inbound::metrics))
        .route("/healthz", get(inbound::healthz))
        .route("/readyz", get(inbound::readyz))
        .route("/admin/targets", get(admin::targets))
        .route("/admin/incidents", get(admin::incidents))
        .route(
            "/admin/config",
            get(admin::config).post(rollout::apply_handler),
        )
        .route("/admin/config/rollback", post(rollout::rollback_handler))
        .route("/admin/rollout", get(rollout::status_handler))
        .route("/admin/rollout/abort", post(rollout::abort_handler))
        .route("/admin/config/versions", get(admin::config_versions))
        .route("/admin/capacity", get(admin::capacity))
        .route("/admin/targets/{action}", post(admin::target))
        .route("/admin/providers/{name}/{action}", post(admin::provider))
        .route(
            "/admin/incidents/{id}/followups",
            post(admin::followup_create),
        )
        .route("/admin/followups", get(admin::followups))
        .route(
            "/admin/followups/{id}",
            patch(admin::followup_update).post(admin::followup_update),
        )
        .route("/admin/digest", get(admin::digest).post(admin::digest_send))
        .fallback(inbound::not_found)
        .layer(request_id::Layer)
        .with_state(state)
}

/// How long a client may take to send a request's head (line and headers); a slower one is cut.
/// hyper counts an idle keep-alive connection's wait for its next request in it too, so this is
/// also how long an idle keep-alive connection is kept (nginx's client_header_timeout default).
/// The router of `[telemetry] metrics_listen`: `GET /metrics` only (and `/healthz`, for probes
/// of that port).
pub fn metrics_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(inbound::render_metrics))
        .route("/healthz", get(inbound::healthz))
        .with_state(state)
}

/// Serves [`metrics_app`] on `listener` until the process ends (a scrape port needs no graceful
/// drain).
pub async fn serve_metrics(listener: tokio::net::TcpListener, state: Arc<AppState>) {
    if let Err(e) = axum::serve(listener, metrics_app(state)).await {
        tracing::error!("the metrics listener failed: {e}");
    }
}

const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(60);
/// Most request headers accepted (HTTP/1.1): more gets 431.
const MAX_HEADERS: usize = 128;
/// Largest request head buffered (HTTP/1.1), and the HTTP/2 header list limit.
const MAX_HEADER_BYTES: usize = 256 * 1024;
/// After an accept error (out of file descriptors), wait this long before accepting again.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests.
///
/// Each connection is served by hyper with bounds a hostile client cannot stretch: the request
/// head must arrive within [`HEADER_READ_TIMEOUT`], with at most [`MAX_HEADERS`] headers and
/// [`MAX_HEADER_BYTES`] bytes (431 otherwise); bodies are bounded by `server.body_limit` and the
/// request's deadline on the request path.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_gateway(listener, rollout::Gateway::new(state, None), shutdown).await
}

/// [`serve`] through a [`rollout::Gateway`], which takes new configurations while serving.
pub async fn serve_gateway(
    listener: tokio::net::TcpListener,
    gateway: Arc<rollout::Gateway>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let background = Background::start(&gateway.state());
    gateway.settle_version().await;
    let app = gateway.service();
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_headers(MAX_HEADERS)
        .max_buf_size(MAX_HEADER_BYTES);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(u32::try_from(MAX_HEADER_BYTES).unwrap_or(u32::MAX));
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (io, _peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or a connection reset before accept: keep serving the
                    // connections we have, and try again shortly rather than spin.
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                    continue;
                }
            },
        };
        // Stream events go out as they are written, not held back for more.
        let _ = io.set_nodelay(true);
        let service = TowerToHyperService::new(
            app.clone()
                .map_request(|req: http::Request<hyper::body::Incoming>| req.map(Body::new)),
        );
        let conn = builder
            .serve_connection_with_upgrades(TokioIo::new(io), service)
            .into_owned();
        let conn = graceful.watch(conn);
        // Tracked by `graceful`: shutdown waits for every connection to finish.
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!("connection ended with an error: {e}");
            }
        });
    }
    drop(listener);
    graceful.shutdown().await;
    background.shutdown().await;
    Ok(())
}

/// The gateway's background work (probes, alert delivery, the incident store), supervised: started with the server, stopped
/// and drained when it shuts down. Tests that drive [`app`] without [`serve`] start it themselves.
pub struct Background {
    state: Arc<AppState>,
    stop: tokio::sync::watch::Sender<bool>,
    task: Option<tokio::task::JoinHandle<()>>,
    probes: Option<tokio::task::JoinHandle<()>>,
    /// The periodic look at the providers' rate limits.
    capacity: Option<tokio::task::JoinHandle<()>>,
    spans: Option<tokio::task::JoinHandle<()>>,
    store: Option<std::thread::JoinHandle<()>>,
    /// The weekly digest to the alert sinks (none without a sink that takes it, or when off).
    digest: Option<tokio::task::JoinHandle<()>>,
}

/// Keeps the configuration the gateway starts with as a version in the store, when it differs
/// from the last one kept there, with what changed.
fn record_config_version(conn: &rusqlite::Connection, config: &ballast_core::config::Config) {
    use ballast_core::config::diff;
    let redacted = diff::redacted_toml(config);
    let summary = |previous: Option<&str>| match previous {
        None => "the first version kept".to_owned(),
        Some(text) => match diff::parse_redacted(text, &ballast_core::config::env::ProcessEnv) {
            Ok(prev) => diff::diff(&prev, config).summary(),
            Err(_) => "the previous version no longer reads as a configuration".to_owned(),
        },
    };
    match store::record_config(
        conn,
        &redacted,
        "ballast serve (at start)",
        summary,
        std::time::SystemTime::now(),
    ) {
        Ok(Some(v)) => tracing::info!(
            version = v.id,
            hash = v.hash.as_str(),
            "configuration version kept: {}",
            v.summary
        ),
        Ok(None) => {}
        Err(e) => tracing::warn!("could not keep the configuration version: {e}"),
    }
}

/// How often forecasts of quiet targets are closed out and limit-change notices expired.
const CAPACITY_TICK: Duration = Duration::from_secs(60);

async fn watch_capacity(state: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut every = tokio::time::interval(CAPACITY_TICK);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = every.tick() => state.latest().capacity_tick(),
            _ = stop.changed() => return,
        }
    }
}

impl Background {
    /// Starts alert delivery and, when `[incidents] store` names a file, the incident store (its
    /// earlier incidents are read back first). A store that cannot be opened is reported with its
    /// path and what to do; incidents are then kept in memory only.
    pub fn start(state: &Arc<AppState>) -> Self {
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let incidents = &state.telemetry.incidents;
        let task = incidents
            .alerts
            .worker(state.transport.clone(), stopped.clone())
            .map(tokio::spawn);
        let spans = state.telemetry.spans.as_ref().and_then(|sp| {
            let client = match upstream::plain_client(state.config.telemetry.otlp_timeout) {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!("no client for the OTLP collector, no traces exported: {e}");
                    return None;
                }
            };
            sp.worker(client, stopped.clone()).map(tokio::spawn)
        });
        let digest = alerts::start_digest(state, stopped.clone());
        let capacity = tokio::spawn(watch_capacity(state.clone(), stopped.clone()));
        let probes = tokio::spawn(probes::run(state.clone(), stopped));
        let store =
            state
                .config
                .incidents
                .store
                .as_ref()
                .and_then(|path| match store::open(path) {
                    Ok((conn, rows)) => {
                        record_config_version(&conn, &state.config);
                        let (handle, thread) = store::start(conn, path.clone());
                        incidents.attach_store(handle, rows);
                        Some(thread)
                    }
                    Err(e) => {
                        tracing::error!("{e} Incidents are kept in memory only.");
                        None
                    }
                });
        Self {
            state: state.clone(),
            stop,
            task,
            probes: Some(probes),
            capacity: Some(capacity),
            spans,
            store,
            digest,
        }
    }

    /// Stops the background work after delivering and writing what is queued (bounded).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.state.telemetry.incidents.stop_store();
        let limit = alerts::DRAIN.saturating_add(Duration::from_secs(1));
        if let Some(task) = self.task.take()
            && tokio::time::timeout(limit, task).await.is_err()
        {
            tracing::warn!("alert delivery did not finish in time");
        }
        if let Some(digest) = self.digest.take() {
            let _ = tokio::time::timeout(limit, digest).await;
        }
        if let Some(probes) = self.probes.take() {
            let _ = tokio::time::timeout(limit, probes).await;
        }
        if let Some(capacity) = self.capacity.take() {
            let _ = tokio::time::timeout(limit, capacity).await;
        }
        if let Some(spans) = self.spans.take() {
            let limit = self
                .state
                .config
                .telemetry
                .otlp_timeout
                .saturating_add(Duration::from_secs(2));
            if tokio::time::timeout(limit, spans).await.is_err() {
                tracing::warn!("the last spans were not exported in time");
            }
        }
        if let Some(thread) = self.store.take() {
            let join = tokio::task::spawn_blocking(move || thread.join());
            if tokio::time::timeout(limit, join).await.is_err() {
                tracing::warn!("the incident store did not finish writing in time");
            }
        }
    }
}
