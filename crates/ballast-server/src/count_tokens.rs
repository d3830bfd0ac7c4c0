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
use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use http_body_util::BodyExt;
use serde_json::Value;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};
use ballast_core::config::Policy;
use ballast_core::policy::Admission;

use crate::auth;
use crate::error::EdgeError;
use crate::request_id::RequestId;
use crate::runtime::{Admitted, InFlight, lock};
use crate::state::{AppState, PreparedTarget};
use crate::upstream::{UpstreamRequest, Url, read_body};

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
    let read_limit = st.config.server.body_timeout.min(st.config.policy.deadline);
    let bytes = match tokio::time::timeout(read_limit, read).await {
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
    if let Some(r) = forward(&st, &rid, route_idx, &route.policy, &headers, &mut req).await {
        return r;
    }
    let estimate = estimate(&req);
    let mut r = axum::Json(serde_json::json!({ "input_tokens": estimate })).into_response();
    r.headers_mut()
        .insert(HEADER, HeaderValue::from_static("estimate"));
    r
}

/// Asks the route's first eligible Anthropic target, through the same admission as every other
/// upstream call: operator switches, the breaker (a ticket, told how the call went), the target's
/// bulkhead and its retry budget's request count. `None`: no target could answer; estimate instead.
async fn forward(
    st: &Arc<AppState>,
    rid: &RequestId,
    route_idx: usize,
    policy: &Policy,
    headers: &HeaderMap,
    req: &mut Value,
) -> Option<Response> {
    let format = ApiFormat::AnthropicMessages;
    let rt = &st.runtime;
    for t in &st.targets[route_idx] {
        let ts = &rt.targets[t.state];
        if st.providers[t.provider].format != format
            || rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            || ts.disabled.load(Ordering::Relaxed)
        {
            continue;
        }
        let now = Instant::now();
        // A target whose breaker is open is not asked: estimating beats waiting on it.
        let ticket = match lock(&ts.breaker).admit(now) {
            Admission::Allowed(t) | Admission::Trial(t) => t,
            Admission::Rejected { .. } | Admission::ForcedOpen { .. } => continue,
        };
        let ticket = Admitted::new(st, t.state, ticket);
        let Some(_slot) = InFlight::target(st, t.state, policy.max_in_flight_per_target) else {
            ticket.cancel();
            continue;
        };
        lock(&ts.budget).record_request(now);
        lock(&rt.global_budget).record_request(now);
        req["model"] = Value::String(t.model.clone());
        let Ok(url) = Url::parse(&format!("{}/count_tokens", t.url)) else {
            ticket.cancel();
            continue;
        };
        let mut h = st.providers[t.provider].headers.clone();
        for name in ["anthropic-version", "anthropic-beta"] {
            if let Some(v) = headers.get(name) {
                h.insert(name, v.clone());
            }
        }
        let deadline = now + policy.response_timeout.min(policy.deadline);
        let send = st.transport.send(UpstreamRequest {
            url,
            headers: h,
            body: Bytes::from(serde_json::to_vec(&*req).unwrap_or_default()),
        });
        let resp = match tokio::time::timeout_at(deadline, send).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(f)) => {
                if f.trips_breaker() {
                    ticket.record(false, "failures");
                } else {
                    ticket.cancel();
                }
                log_estimate(rid, t, &f.summary());
                return None;
            }
            Err(_) => {
                ticket.record(false, "failures");
                log_estimate(rid, t, "response timeout");
                return None;
            }
        };
        let status = resp.status;
        if status.is_success() {
            match tokio::time::timeout_at(
                deadline,
                read_body(resp, 1 << 20, &mut st.runtime.buffered.reserve()),
            )
            .await
            {
                Ok(Ok(body)) => {
                    ticket.record(true, "");
                    let mut r = Response::new(Body::from(body));
                    r.headers_mut().insert(
                        http::header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    r.headers_mut()
                        .insert(HEADER, HeaderValue::from_static("provider"));
                    return Some(r);
                }
                _ => {
                    ticket.record(false, "failures");
                    log_estimate(rid, t, "unusable response");
                    return None;
                }
            }
        }
        let trips = matches!(status.as_u16(), 401 | 403 | 408 | 429) || status.is_server_error();
        if trips {
            ticket.record(false, "failures");
        } else {
            ticket.cancel();
        }
        if status.is_client_error() && !trips {
            // The provider says the request is wrong: that is the client's answer. (Its refusal
            // of our own key, or a rate limit, is not: those fall back to the estimate.)
            let body = match tokio::time::timeout_at(
                deadline,
                read_body(resp, 64 << 10, &mut st.runtime.buffered.reserve()),
            )
            .await
            {
                Ok(Ok(b)) => b,
                _ => Bytes::new(),
            };
            let mut r = Response::new(Body::from(body));
            *r.status_mut() = status;
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            return Some(r);
        }
        log_estimate(rid, t, &format!("HTTP {}", status.as_u16()));
        return None;
    }
    None
}

fn log_estimate(rid: &RequestId, t: &PreparedTarget, cause: &str) {
    tracing::info!(
        request_id = rid.as_str(),
        target = t.label.as_str(),
        "count_tokens: provider unavailable ({cause}), estimating"
    );
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
