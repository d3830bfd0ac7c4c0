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
use crate::runtime::InFlight;
use crate::state::AppState;

const HEADER: &str = "x-ballast-token-count";

pub async fn handle(st: Arc<AppState>, rid: RequestId, headers: HeaderMap, body: Body) -> Response {
    let format = ApiFormat::AnthropicMessages;
    let edge = |e: ClientError| EdgeError::new(format, rid.as_str(), e).into_response();
    // Refused before the body is read: the connection cannot carry another request.
    let closing = |e: ClientError| {
        let mut e = EdgeError::new(format, rid.as_str(), e);
        e.close = true;
        e.into_response()
    };
    let Some(_slot) = InFlight::enter(&st) else {
        return closing(ClientError::new(
            ErrorKind::Unavailable,
            "the gateway is at capacity; retry shortly",
        ));
    };
    if !auth::authorized(&st.config.auth.gateway_keys, &headers) {
        return closing(ClientError::new(
            ErrorKind::Authentication,
            "invalid or missing gateway key",
        ));
    }
    let limit = st.config.server.body_limit;
    let read = http_body_util::Limited::new(body, limit).collect();
    let bytes = match tokio::time::timeout(st.config.policy.deadline, read).await {
        Ok(Ok(c)) => c.to_bytes(),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => {
            return closing(ClientError::new(
                ErrorKind::RequestTooLarge,
                format!("request body exceeds the gateway's limit of {limit} bytes"),
            ));
        }
        Ok(Err(_)) => {
            return closing(ClientError::new(
                ErrorKind::InvalidRequest,
                "the request body could not be read",
            ));
        }
        Err(_) => {
            let mut e = ClientError::new(
                ErrorKind::InvalidRequest,
                "the request body did not arrive in time",
            );
            e.status = 408;
            return closing(e);
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
    let now = Instant::now();
    let target = st.targets[route_idx].iter().find(|t| {
        let ts = &rt.targets[t.state];
        st.providers[t.provider].format == format
            && !rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            && !ts.disabled.load(Ordering::Relaxed)
            // A target whose breaker is open is not asked: estimating beats waiting on it.
            && crate::runtime::lock(&ts.breaker).snapshot(now).state
                != ballast_core::policy::State::Open
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
            Ok(Ok(resp))
                if resp.status().is_client_error()
                    && !matches!(resp.status().as_u16(), 401 | 403 | 408 | 429) =>
            {
                // The provider says the request is wrong: that is the client's answer. (Its refusal
                // of our own key, or a rate limit, is not: those fall back to the estimate.)
                let status = resp.status();
                let read = crate::upstream::read_body(resp, 64 << 10);
                let body = match tokio::time::timeout_at(deadline, read).await {
                    Ok(Ok(b)) => b,
                    _ => bytes::Bytes::new(),
                };
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
