//! Model listings: `GET /v1/models[/{id}]` (one shape both the OpenAI and Anthropic SDKs parse) and
//! `GET /v1beta/models[/{model}]` (Gemini's shape, also served at `/v1` to Gemini clients). Any model name is accepted in requests; these lists
//! only give clients something realistic to discover.

use std::sync::Arc;

use axum::extract::{Path, Request, State};
use axum::response::Response;
use http::Method;
use serde_json::{Value, json};

use super::anthropic::Anthropic;
use super::gemini::{self, Gemini, is_gemini_client};
use super::openai::OpenAi;
use super::{Dialect, PathInfo, intake, json_response};
use crate::state::SimState;
use crate::stats::Outcome;

/// Models listed at `/v1/models`: (id, display name).
const MODELS: &[(&str, &str)] = &[
    ("claude-opus-4-1", "Claude Opus 4.1"),
    ("claude-sonnet-4-5", "Claude Sonnet 4.5"),
    ("claude-haiku-4-5", "Claude Haiku 4.5"),
    ("gpt-4.1", "GPT-4.1"),
    ("gpt-4o", "GPT-4o"),
    ("gpt-4o-mini", "GPT-4o mini"),
];

/// Models listed at `/v1beta/models`: (name, display name).
const GEMINI_MODELS: &[(&str, &str)] = &[
    ("gemini-2.5-pro", "Gemini 2.5 Pro"),
    ("gemini-2.5-flash", "Gemini 2.5 Flash"),
    ("gemini-2.0-flash", "Gemini 2.0 Flash"),
];

/// 2025-01-01T00:00:00Z, the listed models' creation time.
const CREATED: u64 = 1_735_689_600;
const CREATED_AT: &str = "2025-01-01T00:00:00Z";

fn model_item(id: &str, display_name: &str) -> Value {
    let owned_by = if id.starts_with("claude") {
        "anthropic"
    } else {
        "openai"
    };
    json!({
        "id": id,
        "object": "model",
        "created": CREATED,
        "owned_by": owned_by,
        "type": "model",
        "display_name": display_name,
        "created_at": CREATED_AT,
    })
}

fn gemini_item(name: &str, display_name: &str) -> Value {
    json!({
        "name": format!("models/{name}"),
        "baseModelId": name,
        "version": "001",
        "displayName": display_name,
        "description": format!("{display_name} (ballast-sim)"),
        "inputTokenLimit": 1_048_576,
        "outputTokenLimit": 65_536,
        "supportedGenerationMethods": ["generateContent", "countTokens"],
        "temperature": 1.0,
        "topP": 0.95,
        "topK": 64,
    })
}

/// Anthropic clients send `x-api-key` or `anthropic-version`; anything else is answered as OpenAI.
fn is_anthropic(req: &Request) -> bool {
    req.headers().contains_key("anthropic-version") || req.headers().contains_key("x-api-key")
}

async fn answer<D: Dialect>(sim: &SimState, req: Request, body: Value) -> Response {
    let (inbound, _) = match intake::<D>(sim, req, PathInfo::default(), false).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    sim.count(Some(D::API), Outcome::Ok);
    let mut response = json_response(&body, None);
    D::headers(response.headers_mut(), &inbound.request_id);
    response
}

/// `GET /v1/models`: Gemini's list for Gemini clients, else the OpenAI + Anthropic list.
pub(crate) async fn list(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    if is_gemini_client(&req) {
        return gemini_list(State(sim), req).await;
    }
    let data: Vec<Value> = MODELS
        .iter()
        .map(|(id, name)| model_item(id, name))
        .collect();
    let body = json!({
        "object": "list",
        "data": data,
        "has_more": false,
        "first_id": MODELS.first().map(|m| m.0),
        "last_id": MODELS.last().map(|m| m.0),
    });
    if is_anthropic(&req) {
        answer::<Anthropic>(&sim, req, body).await
    } else {
        answer::<OpenAi>(&sim, req, body).await
    }
}

/// `GET /v1/models/{id}`: any id is answered. Gemini's `POST /v1/models/{model}:{method}` and Gemini
/// clients' `GET` share the path and go to the Gemini module.
pub(crate) async fn get(
    State(sim): State<Arc<SimState>>,
    Path(id): Path<String>,
    req: Request,
) -> Response {
    if req.method() != Method::GET || is_gemini_client(&req) {
        return gemini::dispatch(sim, id, req).await;
    }
    let display = MODELS
        .iter()
        .find(|m| m.0 == id)
        .map_or(id.as_str(), |m| m.1);
    let body = model_item(&id, display);
    if is_anthropic(&req) {
        answer::<Anthropic>(&sim, req, body).await
    } else {
        answer::<OpenAi>(&sim, req, body).await
    }
}

/// `GET /v1beta/models`
pub(crate) async fn gemini_list(State(sim): State<Arc<SimState>>, req: Request) -> Response {
    let models: Vec<Value> = GEMINI_MODELS
        .iter()
        .map(|(n, d)| gemini_item(n, d))
        .collect();
    answer::<Gemini>(&sim, req, json!({"models": models})).await
}

/// `GET /v1beta/models/{model}`: any model is answered.
pub(crate) async fn gemini_get(sim: Arc<SimState>, req: Request, name: String) -> Response {
    let name = name.strip_prefix("models/").unwrap_or(&name).to_owned();
    let display = GEMINI_MODELS
        .iter()
        .find(|m| m.0 == name)
        .map_or(name.as_str(), |m| m.1);
    let body = gemini_item(&name, display);
    answer::<Gemini>(&sim, req, body).await
}
