//! Inbound routes: the API endpoints clients call (each fixing the client's wire format), the model
//! list, health and readiness, and the fallback for unknown paths.

use std::sync::Arc;

use axum::Extension;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue, StatusCode};

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};

use crate::auth;
use crate::error::EdgeError;
use crate::proxy;
use crate::request_id::RequestId;
use crate::state::AppState;

pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(st, ApiFormat::OpenAiChat, rid, headers, body).await
}

pub async fn messages(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    proxy::handle(st, ApiFormat::AnthropicMessages, rid, headers, body).await
}

/// The API format to answer in on endpoints shared by several SDKs.
fn guess_format(headers: &HeaderMap, path: &str) -> ApiFormat {
    if path.starts_with("/v1beta") {
        ApiFormat::Gemini
    } else if headers.contains_key("anthropic-version") || headers.contains_key("x-api-key") {
        ApiFormat::AnthropicMessages
    } else {
        ApiFormat::OpenAiChat
    }
}

pub async fn models(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
) -> Response {
    if !auth::authorized(&st.config.auth.gateway_keys, &headers) {
        let format = guess_format(&headers, "/v1/models");
        return EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(ErrorKind::Authentication, "invalid or missing gateway key"),
        )
        .into_response();
    }
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        st.models_body(),
    )
        .into_response()
}

pub async fn healthz() -> Response {
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"ok"}"#,
    )
        .into_response()
}

/// Ready when the configuration is loaded and every route has at least one target (validation
/// guarantees it; the check stays so a future live reload cannot break it silently).
pub async fn readyz(State(st): State<Arc<AppState>>) -> Response {
    let empty: Vec<&str> = st
        .config
        .routes
        .iter()
        .filter(|r| r.targets.is_empty())
        .map(|r| r.name.as_str())
        .collect();
    let (status, body) = if empty.is_empty() {
        (
            StatusCode::OK,
            serde_json::json!({"status": "ready", "routes": st.config.routes.len()}),
        )
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            serde_json::json!({"status": "not ready", "routes_without_targets": empty}),
        )
    };
    (status, axum::Json(body)).into_response()
}

pub async fn not_found(Extension(rid): Extension<RequestId>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let format = guess_format(req.headers(), &path);
    EdgeError::new(
        format,
        rid.as_str(),
        ClientError::new(
            ErrorKind::NotFound,
            format!(
                "no such endpoint: {} {path}; Ballast serves POST /v1/chat/completions, POST /v1/messages, GET /v1/models",
                req.method()
            ),
        ),
    )
    .into_response()
}
