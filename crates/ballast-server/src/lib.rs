//! Ballast's HTTP edge: the inbound API routes (OpenAI, Anthropic), authentication, request ids, and
//! the proxy that carries each request to a provider and its answer back. [`app`] builds the router
//! from an [`AppState`] so tests drive it without a socket; [`serve`] runs it on a listener.

mod admin;
mod auth;
mod cache;
mod count_tokens;
mod error;
mod inbound;
mod outcome;
mod proxy;
mod request_id;
mod runtime;
mod state;
mod stream;
mod upstream;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};

pub use state::{AppState, StateError};

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
        .route("/healthz", get(inbound::healthz))
        .route("/readyz", get(inbound::readyz))
        .route("/admin/targets", get(admin::targets))
        .route("/admin/targets/{action}", post(admin::target))
        .route("/admin/providers/{name}/{action}", post(admin::provider))
        .fallback(inbound::not_found)
        .layer(axum::middleware::from_fn(request_id::layer))
        .with_state(state)
}

/// Serves the gateway on `listener` until `shutdown` resolves, then drains in-flight requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, app(state))
        .with_graceful_shutdown(shutdown)
        .await
}
