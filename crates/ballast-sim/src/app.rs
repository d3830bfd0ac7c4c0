//! The simulator's router: provider routes at the real APIs' paths, the control plane, and 404s.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Request, State};
use axum::middleware::{Next, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use http::header::CONNECTION;
use http::{HeaderValue, StatusCode, Version};
use serde_json::{Value, json};

use crate::api::anthropic::{self, Anthropic};
use crate::api::gemini::{self, Gemini};
use crate::api::openai::{self, OpenAi};
use crate::api::responses;
use crate::api::{Api, Dialect, Failure, models};
use crate::control;
use crate::state::SimState;
use crate::stats::{Outcome, RecordedRequest};

/// Bodies of unknown-path requests are not read past this.
const NOT_FOUND_BODY_LIMIT: usize = 64 * 1024;

/// Builds the simulator's app; tests can drive it without a socket.
pub(crate) fn router(sim: Arc<SimState>) -> Router {
    Router::new()
        .route("/v1/messages", post(anthropic::messages))
        .route("/v1/messages/count_tokens", post(anthropic::count_tokens))
        .route("/v1/chat/completions", post(openai::chat_completions))
        .route("/v1/responses", post(responses::create))
        .route("/v1/models", get(models::list))
        .route("/v1/models/{*id}", get(models::get).post(models::get))
        .route("/v1beta/models", get(models::gemini_list))
        .route(
            "/v1beta/models/{*rest}",
            get(gemini::model_action).post(gemini::model_action),
        )
        .route(
            "/_sim/faults",
            get(control::get_faults)
                .post(control::set_faults)
                .delete(control::clear_faults),
        )
        .route(
            "/_sim/limits",
            get(control::get_limits)
                .post(control::set_limits)
                .delete(control::clear_limits),
        )
        .route("/_sim/stats", get(control::stats))
        .route("/_sim/requests", get(control::requests))
        .route("/_sim/reset", post(control::reset))
        .route("/_sim/health", get(control::health))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(from_fn_with_state(sim.clone(), close_when_resetting))
        .with_state(sim)
}

/// Under `down` below rate 1, HTTP/1 responses carry `connection: close` so every request opens a
/// new connection and meets the reset draw (pooled clients would otherwise dodge it).
async fn close_when_resetting(
    State(sim): State<Arc<SimState>>,
    req: Request,
    next: Next,
) -> Response {
    let http1 = req.version() < Version::HTTP_2;
    let mut response = next.run(req).await;
    if http1 && sim.faults.borrow().reset_rate() > 0.0 {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// Known paths with the wrong method: a 405 in the provider's shape, counted as `other`.
async fn method_not_allowed(state: State<Arc<SimState>>, req: Request) -> Response {
    let mut response = not_found(state, req).await;
    *response.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    response
}

/// Unknown paths: a 404 in the shape of the API the path or headers look like, counted as `other`.
async fn not_found(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if path.starts_with("/_sim/") {
        return (
            StatusCode::NOT_FOUND,
            axum::Json(json!({"error": format!("no control endpoint {path}")})),
        )
            .into_response();
    }
    let request_id = sim.new_id("req_", 24);
    let gemini = path.starts_with("/v1beta") || crate::api::gemini::is_gemini_client(&req);
    let anthropic =
        req.headers().contains_key("anthropic-version") || req.headers().contains_key("x-api-key");
    let (parts, body) = req.into_parts();
    let body = match axum::body::to_bytes(body, NOT_FOUND_BODY_LIMIT).await {
        Ok(b) if b.is_empty() => Value::Null,
        Ok(b) => serde_json::from_slice(&b)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&b).into_owned())),
        Err(_) => Value::Null,
    };
    sim.record(RecordedRequest {
        api: Api::Other,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| path.clone(), |p| p.as_str().to_owned()),
        model: body.get("model").and_then(Value::as_str).map(str::to_owned),
        stream: body.get("stream").and_then(Value::as_bool).unwrap_or(false),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| {
                (
                    k.as_str().to_owned(),
                    String::from_utf8_lossy(v.as_bytes()).into_owned(),
                )
            })
            .collect(),
        body,
    });
    sim.count(Some(Api::Other), Outcome::Invalid);
    let failure = Failure::NotFound(format!("{} {}", parts.method, path));
    if gemini {
        Gemini::failure(&failure, &request_id)
    } else if anthropic {
        Anthropic::failure(&failure, &request_id)
    } else {
        OpenAi::failure(&failure, &request_id)
    }
}
