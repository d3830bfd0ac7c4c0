//! `POST /v1/messages/count_tokens` (Anthropic; coding agents call it): forwarded to the route's first
//! enabled Anthropic target, or — when the route has none, or it fails — a local estimate, marked
//! `x-ballast-token-count: estimate` so nobody mistakes it for the provider's count.
//!
//! The estimate is the request's text size in bytes divided by four (rounded up): the usual rule of
//! thumb for English with BPE tokenizers, good to within tens of percent, not a billing figure.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};

use crate::auth;
use crate::error::EdgeError;
use crate::request_id::RequestId;
use crate::state::AppState;

const HEADER: &str = "x-ballast-token-count";

pub async fn handle(st: Arc<AppState>, rid: RequestId, headers: HeaderMap, body: Body) -> Response {
    let format = ApiFormat::AnthropicMessages;
    let edge = |e: ClientError| EdgeError::new(format, rid.as_str(), e).into_response();
    if !auth::authorized(&st.config.auth.gateway_keys, &headers) {
        return edge(ClientError::new(
            ErrorKind::Authentication,
            "invalid or missing gateway key",
        ));
    }
    let limit = st.config.server.body_limit;
    let bytes = match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => c.to_bytes(),
        Err(_) => {
            return edge(ClientError::new(
                ErrorKind::RequestTooLarge,
                format!("request body exceeds the gateway's limit of {limit} bytes"),
            ));
        }
    };
    let mut req: Value = match serde_json::from_slice(&bytes) {
        Ok(v @ Value::Object(_)) => v,
        Ok(_) => {
            return edge(ClientError::new(
                ErrorKind::InvalidRequest,
                "the request body must be a JSON object",
            ));
        }
        Err(e) => {
            return edge(ClientError::new(
                ErrorKind::InvalidRequest,
                format!("invalid JSON in request body: {e}"),
            ));
        }
    };
    let Some(model) = req.get("model").and_then(Value::as_str).map(str::to_owned) else {
        return edge(
            ClientError::new(ErrorKind::InvalidRequest, "model: this field is required")
                .with_param(Some("model".into())),
        );
    };
    if req.get("messages").is_none() {
        return edge(
            ClientError::new(
                ErrorKind::InvalidRequest,
                "messages: this field is required",
            )
            .with_param(Some("messages".into())),
        );
    }
    let Some(route_idx) = st.route(&model) else {
        return edge(ClientError::new(
            ErrorKind::NotFound,
            format!(
                "model {model:?} is not served by this gateway; available models: {}",
                st.route_names()
            ),
        ));
    };
    let route = &st.config.routes[route_idx];
    let rt = &st.runtime;
    let target = st.targets[route_idx].iter().find(|t| {
        st.providers[t.provider].format == format
            && !rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            && !rt.targets[t.state].disabled.load(Ordering::Relaxed)
    });
    if let Some(t) = target {
        req["model"] = Value::String(t.model.clone());
        let url = format!("{}/count_tokens", t.url);
        let mut h = st.providers[t.provider].headers.clone();
        for name in ["anthropic-version", "anthropic-beta"] {
            if let Some(v) = headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        let deadline = Instant::now() + route.policy.response_timeout.min(route.policy.deadline);
        let send = st
            .client
            .post(url)
            .headers(h)
            .body(serde_json::to_vec(&req).unwrap_or_default())
            .send();
        match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(resp)) if resp.status().is_success() => {
                if let Ok(Ok(body)) =
                    tokio::time::timeout_at(deadline, crate::upstream::read_body(resp, 1 << 20))
                        .await
                {
                    let mut r = Response::new(Body::from(body));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r.headers_mut()
                        .insert(HEADER, HeaderValue::from_static("provider"));
                    return r;
                }
            }
            Ok(Ok(resp)) if resp.status().is_client_error() => {
                // The provider says the request is wrong: that is the client's answer.
                let status = resp.status();
                let body = crate::upstream::read_body(resp, 64 << 10)
                    .await
                    .unwrap_or_default();
                let mut r = Response::new(Body::from(body));
                *r.status_mut() = status;
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    HeaderValue::from_static("application/json"),
                );
                return r;
            }
            _ => {}
        }
        tracing::info!(
            request_id = rid.as_str(),
            target = t.label.as_str(),
            "count_tokens: provider unavailable, estimating"
        );
    }
    let estimate = estimate(&req);
    let mut r = axum::Json(serde_json::json!({ "input_tokens": estimate })).into_response();
    r.headers_mut()
        .insert(HEADER, HeaderValue::from_static("estimate"));
    r
}

/// Bytes of the prompt's text (system, messages, tools) / 4, rounded up.
fn estimate(req: &Value) -> u64 {
    fn text_len(v: &Value) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(text_len).sum(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| if k == "type" { 0 } else { text_len(v) })
                .sum(),
            _ => 0,
        }
    }
    let bytes: usize = ["system", "messages", "tools"]
        .iter()
        .filter_map(|k| req.get(*k))
        .map(text_len)
        .sum();
    (bytes as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::estimate;
    use serde_json::json;

    #[test]
    fn estimates_count_text_not_structure() {
        let req = json!({"model": "m", "system": "abcd", "messages": [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]});
        // "abcd" + "user" + "abcdefgh" = 16 bytes → 4 tokens.
        assert_eq!(estimate(&req), 4);
        assert_eq!(estimate(&json!({"messages": []})), 1);
    }
}
