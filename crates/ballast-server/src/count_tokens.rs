//! Token counting, forwarded or estimated: Anthropic's `POST /v1/messages/count_tokens` (Claude Code
//! calls it) and Gemini's `POST /v1beta/models/{model}:countTokens` (also under `/v1/`; Gemini CLI
//! calls it). The route's targets that speak the client's API are asked in order until one answers,
//! and its count goes back as the provider sent it (`x-ballast-token-count: provider`); when the
//! route has none, or none answers, a local estimate answers instead, marked
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
use ballast_core::client_error::{ClientError, ErrorKind, upstream_error_message};
use ballast_core::config::Policy;
use ballast_core::policy::Admission;

use crate::auth;
use crate::error::EdgeError;
use crate::request_id::RequestId;
use crate::runtime::{Admitted, InFlight, lock};
use crate::state::{AppState, PreparedTarget};
use crate::upstream::{UpstreamRequest, Url, read_body};

const HEADER: &str = "x-ballast-token-count";
/// The most of a provider's count (or refusal) read: a count is a few dozen bytes.
const MAX_COUNT_BYTES: usize = 1 << 20;
const MAX_ERROR_BYTES: usize = 64 << 10;

/// Which API is counting.
pub enum Counting {
    /// `POST /v1/messages/count_tokens`: the model (route) is in the body.
    Anthropic,
    /// `POST …/models/{model}:countTokens`: the model (route) is in the path.
    Gemini { model: String },
}

impl Counting {
    const fn format(&self) -> ApiFormat {
        match self {
            Counting::Anthropic => ApiFormat::AnthropicMessages,
            Counting::Gemini { .. } => ApiFormat::Gemini,
        }
    }
}

pub async fn handle(
    st: Arc<AppState>,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
    api: Counting,
) -> Response {
    let format = api.format();
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
    let model = match check(&api, &req) {
        Ok(model) => model,
        Err(e) => return edge(e),
    };
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
    if let Some(r) = forward(
        &st,
        &rid,
        &api,
        route_idx,
        &route.policy,
        &headers,
        &mut req,
    )
    .await
    {
        return r;
    }
    let body = match api {
        Counting::Anthropic => serde_json::json!({ "input_tokens": estimate_anthropic(&req) }),
        Counting::Gemini { .. } => serde_json::json!({ "totalTokens": estimate_gemini(&req) }),
    };
    let mut r = axum::Json(body).into_response();
    r.headers_mut()
        .insert(HEADER, HeaderValue::from_static("estimate"));
    r
}

/// The route the request names, once its required fields are there.
fn check(api: &Counting, req: &Value) -> Result<String, ClientError> {
    let required = |field: &str| {
        ClientError::new(
            ErrorKind::InvalidRequest,
            format!("{field}: this field is required"),
        )
        .with_param(Some(field.into()))
    };
    match api {
        Counting::Anthropic => {
            let Some(model) = req.get("model").and_then(Value::as_str) else {
                return Err(required("model"));
            };
            if req.get("messages").is_none() {
                return Err(required("messages"));
            }
            Ok(model.to_owned())
        }
        Counting::Gemini { model } => {
            // Either the prompt's `contents`, or a whole `generateContentRequest` (with system
            // instruction and tools); the API ignores `contents` when both are sent.
            match req.get("generateContentRequest") {
                Some(Value::Object(_)) => {}
                Some(_) => {
                    return Err(ClientError::new(
                        ErrorKind::InvalidRequest,
                        "generateContentRequest: must be an object",
                    )
                    .with_param(Some("generateContentRequest".into())));
                }
                None if req.get("contents").is_none() => return Err(required("contents")),
                None => {}
            }
            Ok(model.clone())
        }
    }
}

/// The upstream call for target `t`: its count endpoint, and `req` with the target's model in it.
fn upstream_call(api: &Counting, t: &PreparedTarget, req: &mut Value) -> Option<Url> {
    match api {
        Counting::Anthropic => {
            req["model"] = Value::String(t.model.clone());
            Url::parse(&format!("{}/count_tokens", t.url)).ok()
        }
        Counting::Gemini { .. } => {
            // The target's `…/models/{upstream model}:generateContent`, as `:countTokens`.
            let mut url = t.url.clone();
            let path = url.path().strip_suffix(":generateContent")?.to_owned();
            url.set_path(&format!("{path}:countTokens"));
            url.set_query(None);
            if let Some(Value::Object(inner)) = req.get_mut("generateContentRequest") {
                // The API requires the request's own `model`, and it must be the path's.
                inner.insert(
                    "model".to_owned(),
                    Value::String(format!("models/{}", t.model)),
                );
            }
            Some(url)
        }
    }
}

/// Whether a provider's 2xx body is a count in its API's shape.
fn is_count(api: &Counting, body: &[u8]) -> bool {
    let Ok(Value::Object(o)) = serde_json::from_slice::<Value>(body) else {
        return false;
    };
    match api {
        Counting::Anthropic => o.get("input_tokens").is_some_and(Value::is_u64),
        // Proto3 JSON leaves a zero out: an absent `totalTokens` is 0.
        Counting::Gemini { .. } => o.get("totalTokens").is_none_or(Value::is_u64),
    }
}

/// Asks the route's targets that speak the client's API, in order, through the same admission as
/// every other upstream call: operator switches, the breaker (a ticket, told how the call went), the
/// target's bulkhead, and the retry budgets (the first call counted, a later one paid from the
/// budget of the target that failed, as a fallback is). The provider's count, or its answer that
/// the request is wrong; `None`: no target could answer, estimate instead.
async fn forward(
    st: &Arc<AppState>,
    rid: &RequestId,
    api: &Counting,
    route_idx: usize,
    policy: &Policy,
    headers: &HeaderMap,
    req: &mut Value,
) -> Option<Response> {
    let format = api.format();
    let rt = &st.runtime;
    let deadline = Instant::now() + policy.deadline;
    let mut failed: Option<usize> = None;
    for t in &st.targets[route_idx] {
        let ts = &rt.targets[t.state];
        if st.providers[t.provider].format != format
            || rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            || ts.disabled.load(Ordering::Relaxed)
        {
            continue;
        }
        let now = Instant::now();
        if now >= deadline {
            log_estimate(rid, t, "the request's deadline passed");
            return None;
        }
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
        let Some(url) = upstream_call(api, t, req) else {
            ticket.cancel();
            continue;
        };
        match failed {
            None => {
                lock(&ts.budget).record_request(now);
                lock(&rt.global_budget).record_request(now);
            }
            Some(charged) => {
                if !withdraw_budget(st, charged, now) {
                    ticket.cancel();
                    log_estimate(rid, t, "not tried: the retry budget is exhausted");
                    return None;
                }
            }
        }
        let mut h = st.providers[t.provider].headers.clone();
        if let Counting::Anthropic = api {
            for name in ["anthropic-version", "anthropic-beta"] {
                if let Some(v) = headers.get(name) {
                    h.insert(name, v.clone());
                }
            }
        }
        // Waiting on the provider is bounded by the response timeout; running into the request's
        // deadline instead says nothing about the target.
        let by_timeout = now + policy.response_timeout;
        let until = by_timeout.min(deadline);
        let timeout_trips = by_timeout <= deadline;
        let send = st.transport.send(UpstreamRequest {
            url,
            headers: h,
            body: Bytes::from(serde_json::to_vec(&*req).unwrap_or_default()),
        });
        let resp = match tokio::time::timeout_at(until, send).await {
            Ok(Ok(resp)) => resp,
            Ok(Err(f)) => {
                if f.trips_breaker() {
                    ticket.record(false, "failures");
                } else {
                    ticket.cancel();
                }
                log_estimate(rid, t, &f.summary());
                failed = Some(t.state);
                continue;
            }
            Err(_) => {
                if timeout_trips {
                    ticket.record(false, "failures");
                } else {
                    ticket.cancel();
                }
                log_estimate(rid, t, "response timeout");
                failed = Some(t.state);
                continue;
            }
        };
        let status = resp.status;
        if status.is_success() {
            let mut held = st.runtime.buffered.reserve();
            match tokio::time::timeout_at(until, read_body(resp, MAX_COUNT_BYTES, &mut held)).await
            {
                Ok(Ok(body)) if is_count(api, &body) => {
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
                    failed = Some(t.state);
                    continue;
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
            // The provider says the request is wrong: that is the client's answer, in its API's
            // shape. (Its refusal of our own key, or a rate limit, is not: those fall over.)
            let mut held = st.runtime.buffered.reserve();
            let body =
                match tokio::time::timeout_at(until, read_body(resp, MAX_ERROR_BYTES, &mut held))
                    .await
                {
                    Ok(Ok(b)) => b,
                    _ => Bytes::new(),
                };
            let code = status.as_u16();
            let mut e = EdgeError::new(
                format,
                rid.as_str(),
                ClientError {
                    status: code,
                    ..ClientError::new(
                        ErrorKind::from_status(code),
                        format!("the provider refused the request (HTTP {code})"),
                    )
                },
            );
            // The provider's own message may quote the request: it goes to the client, not the log.
            if upstream_error_message(&body).is_some() {
                e.passthrough = Some(body);
            }
            e.log_line = Some(format!(
                "count_tokens: {} refused the request (HTTP {code})",
                t.label
            ));
            return Some(e.into_response());
        }
        log_estimate(rid, t, &format!("HTTP {}", status.as_u16()));
        failed = Some(t.state);
    }
    None
}

/// Pays a later upstream call from the retry budgets of the target that failed and of the gateway.
fn withdraw_budget(st: &AppState, target: usize, now: Instant) -> bool {
    let rt = &st.runtime;
    let mut mine = lock(&rt.targets[target].budget);
    let mut global = lock(&rt.global_budget);
    if mine.can_withdraw(now) && global.can_withdraw(now) {
        mine.withdraw(now);
        global.withdraw(now);
        true
    } else {
        false
    }
}

fn log_estimate(rid: &RequestId, t: &PreparedTarget, cause: &str) {
    tracing::info!(
        request_id = rid.as_str(),
        target = t.label.as_str(),
        "count_tokens: provider unavailable ({cause})"
    );
}

/// Anthropic: bytes of the prompt's text (system, messages, tools) / 4.
fn estimate_anthropic(req: &Value) -> u64 {
    estimate(req, &["system", "messages", "tools"], &["type"])
}

/// Gemini: bytes of the prompt's text (contents, system instruction, tools; from the
/// `generateContentRequest` when there is one) / 4. Binary parts and opaque signatures are not text.
fn estimate_gemini(req: &Value) -> u64 {
    let req = match req.get("generateContentRequest") {
        Some(inner @ Value::Object(_)) => inner,
        _ => req,
    };
    estimate(
        req,
        &[
            "contents",
            "systemInstruction",
            "system_instruction",
            "tools",
        ],
        &[
            "inlineData",
            "inline_data",
            "fileData",
            "file_data",
            "thoughtSignature",
            "thought_signature",
        ],
    )
}

/// Bytes of the strings under `fields` of `req`, keys in `skip` left out, / 4, rounded up, at least 1.
fn estimate(req: &Value, fields: &[&str], skip: &[&str]) -> u64 {
    fn text_len(v: &Value, skip: &[&str]) -> usize {
        match v {
            Value::String(s) => s.len(),
            Value::Array(a) => a.iter().map(|v| text_len(v, skip)).sum(),
            Value::Object(o) => o
                .iter()
                .map(|(k, v)| {
                    if skip.contains(&k.as_str()) {
                        0
                    } else {
                        text_len(v, skip)
                    }
                })
                .sum(),
            _ => 0,
        }
    }
    let bytes: usize = fields
        .iter()
        .filter_map(|k| req.get(*k))
        .map(|v| text_len(v, skip))
        .sum();
    (bytes as u64).div_ceil(4).max(1)
}

#[cfg(test)]
mod tests {
    use super::{estimate_anthropic, estimate_gemini};
    use serde_json::json;

    #[test]
    fn estimates_count_text_not_structure() {
        let req = json!({"model": "m", "system": "abcd", "messages": [{"role": "user", "content": [{"type": "text", "text": "abcdefgh"}]}]});
        // "abcd" + "user" + "abcdefgh" = 16 bytes → 4 tokens.
        assert_eq!(estimate_anthropic(&req), 4);
        assert_eq!(estimate_anthropic(&json!({"messages": []})), 1);
    }

    #[test]
    fn gemini_estimates_count_text_in_either_shape_and_skip_binary_parts() {
        let contents = json!([{"role": "user", "parts": [
            {"text": "abcdefgh"},
            {"inlineData": {"mimeType": "image/png", "data": "QUJDRA==".repeat(100)}},
            {"text": "ijkl", "thoughtSignature": "c2ln".repeat(100)},
        ]}]);
        // "user" + "abcdefgh" + "ijkl" = 16 bytes → 4 tokens.
        assert_eq!(estimate_gemini(&json!({"contents": contents})), 4);
        let wrapped = json!({"generateContentRequest": {
            "model": "models/m",
            "contents": contents,
            "systemInstruction": {"parts": [{"text": "abcd"}]},
        }});
        assert_eq!(estimate_gemini(&wrapped), 5);
        assert_eq!(estimate_gemini(&json!({"contents": []})), 1);
    }
}
