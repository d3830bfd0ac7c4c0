//! The admin API (kill switch and manual control), guarded by `[admin] key`: read every target's
//! state, disable or enable a provider or a target at once, force a breaker open or closed.
//!
//! `GET  /admin/targets`                         every target's state
//! `GET  /admin/incidents`                       incidents opened by the detectors, newest first,
//!                                               with their recurrence and follow-ups
//! `GET  /admin/config`                          the running configuration as TOML, secrets redacted
//! `POST /admin/providers/{name}/{enable|disable}`
//! `POST /admin/targets/{enable|disable|open|close|auto}` with body `{"target": "provider/model"}`
//! `POST /admin/incidents/{id}/followups`        a follow-up: `{"text", "owner", "due"}`
//! `PATCH|POST /admin/followups/{id}`            change its `state`, `owner`, `due` or `text`
//! `GET  /admin/followups?state=&overdue=&incident=`  follow-ups, soonest due first
//! `GET  /admin/digest`, `POST /admin/digest`    the weekly digest now: shown, or sent to the sinks

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::SystemTime;

use axum::Json;
use axum::extract::{Path, RawQuery, State};
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, StatusCode};
use serde::Deserialize;
use serde_json::json;

use ballast_core::policy::Forced;

use crate::incidents::{
    FollowupChange, FollowupFilter, MAX_OWNER, MAX_TEXT, NewFollowup, check_text, followup_json,
    parse_due,
};
use crate::state::AppState;
use crate::store::FollowupState;

/// A JSON error the admin API answers with.
fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, Json(json!({"error": {"message": message.into()}}))).into_response()
}

/// `None` when the request may proceed, else the refusal to send.
pub(crate) fn refuse(st: &AppState, headers: &HeaderMap) -> Option<Response> {
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
    Json(t.incidents.snapshot(SystemTime::now())).into_response()
}

/// An id from the path: a positive number.
fn parse_id(what: &str, s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "{what} id {s:?} is not a number (ids are 1, 2, 3…)"
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateBody {
    text: String,
    owner: String,
    due: String,
}

const CREATE_SHAPE: &str =
    r#"send a JSON body {"text": "what to do", "owner": "who", "due": "2026-03-10"}"#;

/// `POST /admin/incidents/{id}/followups`: a follow-up on an incident, written to the store.
pub async fn followup_create(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let incident = match parse_id("incident", &id) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let body = match serde_json::from_slice::<CreateBody>(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{CREATE_SHAPE}: {e}")),
    };
    let new = (|| {
        Ok::<_, String>(NewFollowup {
            text: check_text("text", &body.text, MAX_TEXT)?,
            owner: check_text("owner", &body.owner, MAX_OWNER)?,
            due: parse_due(&body.due)?,
        })
    })();
    let new = match new {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let t = &st.telemetry;
    let now = SystemTime::now();
    match t.incidents.add_followup(incident, new, now).await {
        Ok(f) => (
            StatusCode::CREATED,
            Json(json!({ "followup": followup_json(&f, now) })),
        )
            .into_response(),
        Err(e) => error(e.status(), e.message()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateBody {
    state: Option<String>,
    owner: Option<String>,
    due: Option<String>,
    text: Option<String>,
}

fn states() -> String {
    FollowupState::ALL
        .iter()
        .map(|s| s.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

fn parse_state(s: &str) -> Result<FollowupState, String> {
    FollowupState::parse(s.trim()).ok_or_else(|| format!("state {s:?} is not one of {}", states()))
}

/// `PATCH /admin/followups/{id}` (or `POST`): changes a follow-up's state, owner, due date or text.
pub async fn followup_update(
    State(st): State<Arc<AppState>>,
    Path(id): Path<String>,
    headers: HeaderMap,
    body: bytes::Bytes,
) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let id = match parse_id("follow-up", &id) {
        Ok(n) => n,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let shape = r#"send a JSON body with any of {"state": "open|done|dropped", "owner": "…", "due": "2026-03-10", "text": "…"}"#;
    let body = match serde_json::from_slice::<UpdateBody>(&body) {
        Ok(b) => b,
        Err(e) => return error(StatusCode::BAD_REQUEST, format!("{shape}: {e}")),
    };
    let change = (|| {
        Ok::<_, String>(FollowupChange {
            state: body.state.as_deref().map(parse_state).transpose()?,
            owner: body
                .owner
                .as_deref()
                .map(|o| check_text("owner", o, MAX_OWNER))
                .transpose()?,
            due: body.due.as_deref().map(parse_due).transpose()?,
            text: body
                .text
                .as_deref()
                .map(|t| check_text("text", t, MAX_TEXT))
                .transpose()?,
        })
    })();
    let change = match change {
        Ok(c) if c.is_empty() => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("nothing to change: {shape}"),
            );
        }
        Ok(c) => c,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let now = SystemTime::now();
    match st
        .telemetry
        .incidents
        .update_followup(id, change, now)
        .await
    {
        Ok(f) => Json(json!({ "followup": followup_json(&f, now) })).into_response(),
        Err(e) => error(e.status(), e.message()),
    }
}

/// The filter of `GET /admin/followups`'s query: `state`, `overdue`, `incident`.
fn followup_filter(query: Option<&str>) -> Result<FollowupFilter, String> {
    let mut f = FollowupFilter::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let v = percent_encoding::percent_decode_str(v).decode_utf8_lossy();
        match k {
            "state" => f.state = Some(parse_state(&v)?),
            "overdue" => {
                f.overdue = Some(match v.as_ref() {
                    "true" | "1" | "" => true,
                    "false" | "0" => false,
                    other => return Err(format!("overdue={other:?}: use true or false")),
                });
            }
            "incident" => {
                f.incident = Some(
                    v.parse::<u64>()
                        .map_err(|_| format!("incident={v:?} is not an incident id"))?,
                );
            }
            other => {
                return Err(format!(
                    "unknown query parameter {other:?}: use state, overdue or incident"
                ));
            }
        }
    }
    Ok(f)
}

/// `GET /admin/followups`: follow-ups (soonest due first), filtered by `state`, `overdue`, `incident`.
pub async fn followups(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    RawQuery(query): RawQuery,
) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let filter = match followup_filter(query.as_deref()) {
        Ok(f) => f,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let incidents = &st.telemetry.incidents;
    let now = SystemTime::now();
    let list: Vec<serde_json::Value> = incidents
        .followups(filter, now)
        .iter()
        .map(|f| followup_json(f, now))
        .collect();
    let overdue: i64 = incidents.overdue_counts(now).iter().sum();
    Json(json!({
        "followups": list,
        "overdue": overdue,
        "store": incidents.has_store(),
    }))
    .into_response()
}

/// `GET /admin/digest`: the digest as it would go out now.
pub async fn digest(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let t = &st.telemetry;
    let d = t.incidents.digest(SystemTime::now());
    Json(json!({ "digest": d.to_json(), "text": d.text() })).into_response()
}

/// `POST /admin/digest`: sends the digest now to the webhook and Slack sinks (as the weekly one).
pub async fn digest_send(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let t = &st.telemetry;
    if !t.incidents.alerts.digest_sinks() {
        return error(
            StatusCode::CONFLICT,
            "no [[alerts.sinks]] of kind webhook or slack to send the digest to (PagerDuty gets \
             incidents only); GET /admin/digest shows it",
        );
    }
    let d = t.incidents.digest(SystemTime::now());
    let shown = d.to_json();
    t.incidents.alerts.send_digest(d);
    (
        StatusCode::ACCEPTED,
        Json(json!({ "queued": true, "digest": shown })),
    )
        .into_response()
}

/// `GET /admin/config/versions`: the configurations this gateway's store has kept, newest first,
/// each with its hash, when and how it was applied, and what changed from the one before (the
/// redacted text with `?full=true`).
pub async fn config_versions(
    State(st): State<Arc<AppState>>,
    headers: HeaderMap,
    axum::extract::Query(q): axum::extract::Query<std::collections::HashMap<String, String>>,
) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let Some(path) = st.config.incidents.store.as_ref() else {
        return (
            http::StatusCode::CONFLICT,
            Json(json!({"error": {"message": "no store: set [incidents] store to keep configuration versions"}})),
        )
            .into_response();
    };
    let full = q.get("full").is_some_and(|v| v == "true");
    match crate::store::config_versions(path, 200) {
        Ok(rows) => Json(json!({
            "versions": rows.iter().map(|v| {
                let mut j = json!({
                    "version": v.id,
                    "hash": v.hash,
                    "applied_at": crate::runtime::rfc3339(v.applied_at),
                    "source": v.source,
                    "summary": v.summary,
                    "outcome": v.outcome,
                });
                if full {
                    j["config"] = json!(v.config);
                }
                j
            }).collect::<Vec<_>>(),
        }))
        .into_response(),
        Err(e) => (
            http::StatusCode::INTERNAL_SERVER_ERROR,
            Json(json!({"error": {"message": e.to_string()}})),
        )
            .into_response(),
    }
}

/// `GET /admin/capacity`: each target's rate limits as its provider last reported them (limit,
/// remaining, reset), the use trend and the hours until the limit at its current growth.
pub async fn capacity(State(st): State<Arc<AppState>>, headers: HeaderMap) -> Response {
    if let Some(r) = refuse(&st, &headers) {
        return r;
    }
    let now = tokio::time::Instant::now();
    Json(json!({ "targets": st.capacity.snapshot(now) })).into_response()
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
