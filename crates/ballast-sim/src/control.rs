//! The control plane under `/_sim/`: faults, rate limits, stats, recorded requests, reset and
//! health. Never faulted.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use http::StatusCode;
use serde_json::json;

use crate::faults::Faults;
use crate::limits::Limits;
use crate::state::SimState;

fn bad_request(message: String) -> Response {
    (StatusCode::BAD_REQUEST, Json(json!({"error": message}))).into_response()
}

/// `GET /_sim/faults`
pub(crate) async fn get_faults(State(sim): State<Arc<SimState>>) -> Json<Faults> {
    Json(sim.current_faults())
}

/// `POST /_sim/faults`: replaces the active faults with the body (a JSON `Faults`).
pub(crate) async fn set_faults(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let faults: Faults = match serde_json::from_slice(&body) {
        Ok(f) => f,
        Err(e) => return bad_request(format!("invalid faults: {e}")),
    };
    if let Err(e) = faults.validate() {
        return bad_request(format!("invalid faults: {e}"));
    }
    sim.set_faults(faults.clone());
    Json(faults).into_response()
}

/// `DELETE /_sim/faults`: clears every fault.
pub(crate) async fn clear_faults(State(sim): State<Arc<SimState>>) -> Json<Faults> {
    sim.set_faults(Faults::default());
    Json(Faults::default())
}

/// `GET /_sim/limits`
pub(crate) async fn get_limits(State(sim): State<Arc<SimState>>) -> Json<Limits> {
    Json(sim.current_limits())
}

/// `POST /_sim/limits`: replaces the rate limits with the body (a JSON `Limits`; fields left out
/// take their defaults).
pub(crate) async fn set_limits(State(sim): State<Arc<SimState>>, body: Bytes) -> Response {
    let limits: Limits = match serde_json::from_slice(&body) {
        Ok(l) => l,
        Err(e) => return bad_request(format!("invalid limits: {e}")),
    };
    if let Err(e) = limits.validate() {
        return bad_request(format!("invalid limits: {e}"));
    }
    sim.set_limits(limits.clone());
    Json(limits).into_response()
}

/// `DELETE /_sim/limits`: back to the default limits.
pub(crate) async fn clear_limits(State(sim): State<Arc<SimState>>) -> Json<Limits> {
    sim.set_limits(Limits::default());
    Json(Limits::default())
}

/// `GET /_sim/stats`
pub(crate) async fn stats(State(sim): State<Arc<SimState>>) -> Response {
    Json(sim.stats()).into_response()
}

/// `GET /_sim/requests`: the most recent requests, oldest first.
pub(crate) async fn requests(State(sim): State<Arc<SimState>>) -> Response {
    Json(sim.recent_requests()).into_response()
}

/// `POST /_sim/reset`: clears stats and recorded requests and restarts the seeded draws.
pub(crate) async fn reset(State(sim): State<Arc<SimState>>) -> Response {
    sim.reset();
    Json(json!({"reset": true})).into_response()
}

/// `GET /_sim/health`
pub(crate) async fn health() -> Response {
    Json(json!({"status": "ok"})).into_response()
}
