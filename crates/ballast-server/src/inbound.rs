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
use crate::proxy::{self, UrlCall};
use crate::request_id::RequestId;
use crate::state::AppState;

// The API handlers take the request whole and move its headers out: the `HeaderMap` extractor
// would copy every header of every request.
pub async fn chat_completions(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    proxy::handle(
        st,
        ApiFormat::OpenAiChat,
        rid,
        parts.headers,
        body,
        UrlCall::default(),
    )
    .await
}

pub async fn messages(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    proxy::handle(
        st,
        ApiFormat::AnthropicMessages,
        rid,
        parts.headers,
        body,
        UrlCall::default(),
    )
    .await
}

/// OpenAI's Responses API (`POST /v1/responses`), as the openai SDKs, the Agents SDK and Codex send it.
pub async fn responses(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    proxy::handle(
        st,
        ApiFormat::OpenAiResponses,
        rid,
        parts.headers,
        body,
        UrlCall::default(),
    )
    .await
}

/// Gemini's `POST /v1beta/models/{model}:generateContent`, `:streamGenerateContent` and `:countTokens`
/// (also under `/v1/`): the model and the method are in the path, the key in `x-goog-api-key`,
/// `?key=` or `Authorization: Bearer`.
pub async fn gemini(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    axum::extract::Path(rest): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    req: Request,
) -> Response {
    let (parts, body) = req.into_parts();
    let mut headers = parts.headers;
    let (model, method) = rest.rsplit_once(':').unwrap_or((rest.as_str(), ""));
    let stream = match method {
        "generateContent" | "countTokens" => false,
        "streamGenerateContent" => true,
        _ => {
            return EdgeError::new(
                ApiFormat::Gemini,
                rid.as_str(),
                ClientError::new(
                    ErrorKind::NotFound,
                    format!(
                        "no such method {method:?} on models/{model}: Ballast serves :generateContent, :streamGenerateContent and :countTokens"
                    ),
                ),
            )
            .into_response();
        }
    };
    if let Some(key) = query.as_deref().and_then(query_key)
        && let Ok(v) = HeaderValue::from_str(&key)
    {
        headers.insert("x-goog-api-key", v);
    }
    let model = model.strip_prefix("models/").unwrap_or(model).to_owned();
    if method == "countTokens" {
        let api = crate::count_tokens::Counting::Gemini { model };
        return crate::count_tokens::handle(st, rid, headers, body, api).await;
    }
    let call = UrlCall {
        model: Some(model),
        stream: Some(stream),
    };
    proxy::handle(st, ApiFormat::Gemini, rid, headers, body, call).await
}

/// The `key` parameter of a query string, percent-decoded.
fn query_key(query: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == "key").then(|| {
            percent_encoding::percent_decode_str(&v.replace('+', " "))
                .decode_utf8_lossy()
                .into_owned()
        })
    })
}

/// `GET /v1beta/models`: the routes in Gemini's list shape.
pub async fn gemini_models(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    mut headers: HeaderMap,
) -> Response {
    if let Some(key) = query.as_deref().and_then(query_key)
        && let Ok(v) = HeaderValue::from_str(&key)
    {
        headers.insert("x-goog-api-key", v);
    }
    if !auth::authorized(&st.config.auth.gateway_keys, &headers) {
        return EdgeError::new(
            ApiFormat::Gemini,
            rid.as_str(),
            ClientError::new(ErrorKind::Authentication, "invalid or missing gateway key"),
        )
        .into_response();
    }
    let models: Vec<serde_json::Value> = st
        .config
        .routes
        .iter()
        .map(|r| gemini_model(&r.name))
        .collect();
    axum::Json(serde_json::json!({ "models": models })).into_response()
}

fn gemini_model(route: &str) -> serde_json::Value {
    serde_json::json!({
        "name": format!("models/{route}"),
        "baseModelId": route,
        "version": "ballast",
        "displayName": route,
        "description": format!("Ballast route {route}"),
        "supportedGenerationMethods": ["generateContent", "streamGenerateContent", "countTokens"],
    })
}

/// Whether a request on a path shared with OpenAI (`/v1/models`) comes from a Gemini client.
fn is_gemini_client(headers: &HeaderMap, query: Option<&str>) -> bool {
    headers.contains_key("x-goog-api-key") || query.and_then(query_key).is_some()
}

/// `GET /v1beta/models/{model}` and `GET /v1/models/{model}`: one route, in Gemini's model shape for
/// Gemini clients (`models.get`), in OpenAI's for the others.
pub async fn model(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    axum::extract::Path(name): axum::extract::Path<String>,
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    uri: http::Uri,
    mut headers: HeaderMap,
) -> Response {
    let gemini = uri.path().starts_with("/v1beta") || is_gemini_client(&headers, query.as_deref());
    let format = if gemini {
        ApiFormat::Gemini
    } else {
        guess_format(&headers, uri.path())
    };
    if let Some(key) = query.as_deref().and_then(query_key)
        && let Ok(v) = HeaderValue::from_str(&key)
    {
        headers.insert("x-goog-api-key", v);
    }
    if !auth::authorized(&st.config.auth.gateway_keys, &headers) {
        return EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(ErrorKind::Authentication, "invalid or missing gateway key"),
        )
        .into_response();
    }
    let route = name.strip_prefix("models/").unwrap_or(&name);
    if st.route(route).is_none() {
        return EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(
                ErrorKind::NotFound,
                format!(
                    "model {route:?} is not served by this gateway; available models: {}",
                    st.route_names()
                ),
            ),
        )
        .into_response();
    }
    let body = match format {
        ApiFormat::Gemini => gemini_model(route),
        _ => serde_json::json!({
            "id": route, "object": "model", "created": 0, "owned_by": "ballast",
            "type": "model", "display_name": route, "created_at": "1970-01-01T00:00:00Z",
        }),
    };
    axum::Json(body).into_response()
}

/// `POST /v1/messages/count_tokens`: forwarded to the route's Anthropic targets in order, else a local
/// estimate, marked `x-ballast-token-count: estimate`.
pub async fn count_tokens(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    crate::count_tokens::handle(
        st,
        rid,
        headers,
        body,
        crate::count_tokens::Counting::Anthropic,
    )
    .await
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
    axum::extract::RawQuery(query): axum::extract::RawQuery,
    headers: HeaderMap,
) -> Response {
    // google-genai lists models at /v1/models too: answer it in its own shape.
    if is_gemini_client(&headers, query.as_deref()) {
        return gemini_models(
            State(st),
            Extension(rid),
            axum::extract::RawQuery(query),
            headers,
        )
        .await;
    }
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
                "no such endpoint: {} {path}; Ballast serves POST /v1/chat/completions, POST /v1/responses, POST /v1/messages, POST /v1beta/models/{{model}}:generateContent, POST /v1beta/models/{{model}}:countTokens, GET /v1/models, GET /metrics",
                req.method()
            ),
        ),
    )
    .into_response()
}

/// `GET /metrics` on the main listener: Prometheus text, unless `[telemetry] metrics_listen` moved
/// it to a listener of its own (then this one answers 404, so a public listener does not expose it).
pub async fn metrics(
    State(st): State<Arc<AppState>>,
    Extension(rid): Extension<RequestId>,
    req: Request,
) -> Response {
    if st.config.telemetry.metrics_listen.is_some() {
        return not_found(Extension(rid), req).await;
    }
    render_metrics(State(st)).await
}

/// Prometheus text (OpenMetrics). Route and target names and counts only: no request or answer
/// text, no keys.
pub async fn render_metrics(State(st): State<Arc<AppState>>) -> Response {
    // The configuration serving now (a separate metrics listener was started with the first).
    let st = st.latest();
    let now = tokio::time::Instant::now();
    let rt = &st.runtime;
    let targets: Vec<(i64, i64)> = rt
        .targets
        .iter()
        .map(|t| {
            let breaker = match crate::runtime::lock(&t.breaker).snapshot(now).state {
                ballast_core::policy::State::Closed => 0,
                ballast_core::policy::State::HalfOpen => 1,
                ballast_core::policy::State::Open => 2,
            };
            let budget = crate::runtime::lock(&t.budget).snapshot(now).available;
            (breaker, i64::try_from(budget).unwrap_or(i64::MAX))
        })
        .collect();
    let live = crate::telemetry::LiveState {
        targets: &targets,
        in_flight: i64::from(rt.in_flight.load(std::sync::atomic::Ordering::Relaxed)),
        buffered_bytes: i64::try_from(rt.buffered.used()).unwrap_or(i64::MAX),
    };
    let body = st.telemetry.render(&live);
    (
        [(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
        )],
        body,
    )
        .into_response()
}
