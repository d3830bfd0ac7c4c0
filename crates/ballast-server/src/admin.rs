//! The admin API (kill switch and manual control), guarded by `[admin] key`: read every target's
//! state, disable or enable a provider or a target at once, force a breaker open or closed.
//!
//! `GET  /admin/targets`                         every target's state
//! `GET  /admin/incidents`                       incidents opened by the detectors, newest first
//! `GET  /admin/config`                          the running configuration as TOML, secrets redacted
//! `POST /admin/providers/{name}/{enable|disable}`
//! `POST /admin/targets/{enable|disable|open|close|auto}` with body `{"target": "provider/model"}`

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use ballast_core::policy::Forced;

use crate::state::AppState;

/// `None` when the request may proceed, else the refusal to send.
fn refuse(st: &AppState, headers: &HeaderMap) -> Option<Response> {
    let Some(key) = &st.config.admin.key else {
        return Some((
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": "the admin API is disabled: set [admin] key in the configuration"}})),
        )
            .into_response());
    };
    if crate::auth::authorized(std::slice::from_ref(key), headers) {
        None
    } else {
        Some((
            StatusCode::UNAUTHORIZED,
            Json(json!({"error": {"message": "admin endpoints need the admin key (Authorization: Bearer <key>)"}})),
        )
            .into_response())
    }
}

pub async fn targets(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    Json(st.runtime.snapshot(&st)).into_response()
}

/// `GET /admin/incidents`: every kept incident, newest first, with its evidence.
pub async fn incidents(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let t = &st.telemetry;
    Json(t.incidents.snapshot(|i| t.target_name(i).to_owned())).into_response()
}

/// `GET /admin/config`: the running configuration as a TOML file that validates back to it, every
/// value resolved and every secret (keys, header values, sink URLs) replaced by a placeholder
/// (`ballast_core::config::diff::redacted_toml`), for `ballast check --against URL`.
pub async fn config(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    (
        [
            (
                http::header::CONTENT_TYPE,
                "application/toml; charset=utf-8",
            ),
            (http::header::CACHE_CONTROL, "no-store"),
        ],
        ballast_core::config::diff::redacted_toml(&st.config),
    )
        .into_response()
}

pub async fn provider(
    State(st): State<Arc<AppState>>,
    Path((name, action)): Path<(String, String)>,
    headers: HeaderMap,
) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let Some(p) = st.providers.iter().position(|p| p.name == name) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("unknown provider {name:?}")}})),
        )
            .into_response();
    };
    let disable = match action.as_str() {
        "disable" => true,
        "enable" => false,
        other => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"message": format!("unknown action {other:?}: use enable or disable")}})),
            )
                .into_response();
        }
    };
    st.runtime.provider_disabled[p].store(disable, Ordering::Relaxed);
    tracing::warn!(
        provider = name.as_str(),
        disabled = disable,
        "admin: provider {action}d"
    );
    Json(json!({"provider": name, "disabled": disable})).into_response()
}

#[derive(Deserialize)]
pub struct TargetBody {
    target: String,
}

pub async fn target(
    State(st): State<Arc<AppState>>,
    Path(action): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    // The key first: nothing about the body is answered to a caller without it.
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let Ok(body) = serde_json::from_slice::<TargetBody>(&body) else {
        return (
            StatusCode::BAD_REQUEST,
            Json(
                json!({"error": {"message": "send a JSON body {\"target\": \"provider/model\"}"}}),
            ),
        )
            .into_response();
    };
    let Some(t) = st.runtime.find(&body.target) else {
        return (
            StatusCode::NOT_FOUND,
            Json(json!({"error": {"message": format!("unknown target {:?}; targets are \"provider/model\" as in the routes", body.target)}})),
        )
            .into_response();
    };
    match action.as_str() {
        "disable" => t.disabled.store(true, Ordering::Relaxed),
        "enable" => t.disabled.store(false, Ordering::Relaxed),
        "open" => t.force(Some(Forced::Open)),
        "close" => t.force(Some(Forced::Closed)),
        "auto" => t.force(None),
        other => {
            return (
                StatusCode::NOT_FOUND,
                Json(json!({"error": {"message": format!("unknown action {other:?}: use enable, disable, open, close or auto")}})),
            )
                .into_response();
        }
    }
    tracing::warn!(target = body.target.as_str(), "admin: target {action}");
    Json(t.snapshot(&st, tokio::time::Instant::now())).into_response()
}
