//! The provider APIs: the request pipeline they share and the [`Dialect`] each one implements.
//!
//! A request goes: read the body (bounded) → record it → check the key → parse JSON → draw faults →
//! validate into a [`Prompt`] (with the model's [`params`] rules; `reject_prefill` refuses a prefill
//! here) → generate (continuing an answer when asked to: [`Prompt::continuation`]) → charge it to the
//! API's rate limits ([`crate::limits`]: a 429 when enforced and spent) → render in the
//! dialect's wire format (JSON or SSE, cut by `truncate`, or only opened under `role_then_silence`),
//! or, under the `hostile` fault, rewrite that rendering into broken bytes ([`hostile`]). Adding an
//! API is one new module implementing [`Dialect`] plus a route (as `responses` did).

pub(crate) mod anthropic;
pub(crate) mod gemini;
pub(crate) mod hostile;
pub(crate) mod models;
pub(crate) mod openai;
pub(crate) mod params;
pub(crate) mod responses;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::body::{Body, Bytes};
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::request::Parts;
use http::{HeaderMap, HeaderValue, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::faults::{Decision, TruncateMode};
use crate::generate::{Answer, Prompt, answer, continue_answer};
use crate::sse::{Ending, Frame, cut_len, paced_body, truncated_body};
use crate::state::SimState;
use crate::stats::{Outcome, RecordedRequest};

/// Largest request body accepted (the real APIs' limit is in the same range); larger gets 413.
const MAX_BODY_BYTES: usize = 32 * 1024 * 1024;

/// Which provider API a request was for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Api {
    /// Anthropic Messages API.
    Anthropic,
    /// OpenAI Chat Completions and Responses APIs.
    #[serde(rename = "openai")]
    OpenAi,
    /// Google Gemini API.
    Gemini,
    /// Any other path.
    Other,
}

impl Api {
    /// The lower-case name used in JSON and flags.
    pub fn name(self) -> &'static str {
        match self {
            Api::Anthropic => "anthropic",
            Api::OpenAi => "openai",
            Api::Gemini => "gemini",
            Api::Other => "other",
        }
    }
}

/// A request the simulator refuses, rendered in the dialect's error shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Failure {
    /// 400: malformed JSON, a missing/invalid field, or a parameter the model refuses (`param` names
    /// it when known; `code` is OpenAI's error code, when it has a specific one).
    Invalid {
        message: String,
        param: Option<&'static str>,
        code: Option<&'static str>,
    },
    /// 401 (or the dialect's equivalent): no key sent.
    MissingKey,
    /// 401 (or the dialect's equivalent): a key that is not the required one.
    WrongKey,
    /// 404.
    NotFound(String),
    /// 413.
    TooLarge,
    /// The `error` fault.
    Injected(u16),
    /// The `rate_limit` fault.
    RateLimited { retry_after_secs: u64 },
}

impl Failure {
    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::Invalid {
            message: message.into(),
            param: None,
            code: None,
        }
    }

    pub fn invalid_param(param: &'static str, message: impl Into<String>) -> Failure {
        Failure::Invalid {
            message: message.into(),
            param: Some(param),
            code: None,
        }
    }

    /// The HTTP status this failure is sent with (dialects may override for keys).
    pub fn status(&self) -> StatusCode {
        match self {
            Failure::Invalid { .. } => StatusCode::BAD_REQUEST,
            Failure::MissingKey | Failure::WrongKey => StatusCode::UNAUTHORIZED,
            Failure::NotFound(_) => StatusCode::NOT_FOUND,
            Failure::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Failure::Injected(status) => {
                StatusCode::from_u16(*status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE)
            }
            Failure::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        }
    }

    fn outcome(&self) -> Outcome {
        match self {
            Failure::Injected(_) => Outcome::Error,
            Failure::RateLimited { .. } => Outcome::RateLimited,
            _ => Outcome::Invalid,
        }
    }
}

/// Identifiers and options of one answer, shared by its body or every chunk of its stream.
#[derive(Clone, Debug)]
pub(crate) struct Meta {
    /// The answer's id with the dialect's prefix.
    pub id: String,
    /// The tool call's id, when the answer is a tool call.
    pub tool_call_id: String,
    /// Unix seconds.
    pub created: u64,
    /// The model as requested.
    pub model: String,
}

/// One provider wire format.
pub(crate) trait Dialect {
    /// Where requests are counted.
    const API: Api;
    /// The request field holding the conversation list (`messages`, `input`, `contents`).
    const CONVERSATION: &'static str;
    /// Whether the API continues a conversation that ends with an assistant turn (a prefill) rather
    /// than answering it afresh: Anthropic Messages does.
    const PREFILL: bool = false;
    /// The status a non-streamed answer fails with where a stream would end in the provider's
    /// mid-stream error event (`truncate:error_event`).
    const STREAM_ERROR_STATUS: u16;
    /// Options that only this dialect renders (e.g. OpenAI's `stream_options.include_usage`).
    type Options: Send;

    /// Checks the request's key against the required one.
    fn authorize(parts: &Parts, key: &str) -> Result<(), Failure>;
    /// Renders a failure in this dialect's error shape, with its headers.
    fn failure(failure: &Failure, request_id: &str) -> Response;
    /// Adds the dialect's usual response headers (request id …).
    fn headers(headers: &mut HeaderMap, request_id: &str);
    /// Validates the request into a prompt.
    fn prompt(request: &Inbound) -> Result<(Prompt, Self::Options), Failure>;
    /// The id prefixes of answers and tool calls: (`msg_`, `toolu_`) …
    fn id_prefixes() -> (&'static str, &'static str);
    /// A non-streamed answer's body.
    fn body(answer: &Answer, meta: &Meta, options: &Self::Options) -> Value;
    /// A streamed answer's frames, terminal event last.
    fn frames(answer: &Answer, meta: &Meta, options: &Self::Options) -> Vec<Frame>;
    /// The events a stream opens with before any content (`role_then_silence`).
    fn opening(answer: &Answer, meta: &Meta, options: &Self::Options) -> Vec<Frame>;
    /// The provider's mid-stream error event, ending a stream after `sent` of its frames.
    fn stream_error(
        answer: &Answer,
        meta: &Meta,
        options: &Self::Options,
        sent: usize,
    ) -> Vec<Frame>;
    /// The 400 refusing a prefill (`reject_prefill`).
    fn prefill_refused(prompt: &Prompt) -> Failure;
    /// The content type of a streamed answer.
    fn stream_content_type(_options: &Self::Options) -> &'static str {
        "text/event-stream; charset=utf-8"
    }
}

/// A request that passed intake: recorded, authorized, parsed.
pub(crate) struct Inbound {
    pub parts: Parts,
    pub json: Value,
    /// Gemini names the model in the path.
    pub path_model: Option<String>,
    /// Gemini asks for a stream in the path.
    pub path_stream: bool,
    pub request_id: String,
    /// Whether the model's parameter rules ([`params`]) are enforced.
    pub strict_params: bool,
}

/// Where a request's model and stream flag come from beyond its body.
#[derive(Clone, Debug, Default)]
pub(crate) struct PathInfo {
    pub model: Option<String>,
    pub stream: bool,
}

fn record(sim: &SimState, api: Api, parts: &Parts, body: &Value, path: &PathInfo) {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        headers
            .entry(name.as_str().to_owned())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let model = path
        .model
        .clone()
        .or_else(|| body.get("model").and_then(Value::as_str).map(str::to_owned));
    let stream = path.stream || body.get("stream").and_then(Value::as_bool).unwrap_or(false);
    sim.record(RecordedRequest {
        api,
        method: parts.method.to_string(),
        path: parts
            .uri
            .path_and_query()
            .map_or_else(|| parts.uri.path().to_owned(), |p| p.as_str().to_owned()),
        model,
        stream,
        headers,
        body: body.clone(),
    });
}

/// Counts a failure and renders it.
pub(crate) fn fail<D: Dialect>(sim: &SimState, failure: &Failure, request_id: &str) -> Response {
    sim.count(Some(D::API), failure.outcome());
    D::failure(failure, request_id)
}

/// Reads, records and authorizes a request, then draws faults and applies the ones that replace the
/// answer (hang, error, rate limit). `expect_json` requires a JSON body.
pub(crate) async fn intake<D: Dialect>(
    sim: &SimState,
    req: Request,
    path: PathInfo,
    expect_json: bool,
) -> Result<(Inbound, Decision), Response> {
    let request_id = sim.new_id("req_", 24);
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, MAX_BODY_BYTES).await {
        Ok(bytes) => bytes,
        Err(_) => {
            record(sim, D::API, &parts, &Value::Null, &path);
            return Err(fail::<D>(sim, &Failure::TooLarge, &request_id));
        }
    };
    let parsed = if bytes.is_empty() {
        Ok(Value::Null)
    } else {
        serde_json::from_slice::<Value>(&bytes)
    };
    let recorded = match &parsed {
        Ok(v) => v.clone(),
        Err(_) => Value::String(String::from_utf8_lossy(&bytes).into_owned()),
    };
    record(sim, D::API, &parts, &recorded, &path);

    if let Some(key) = &sim.require_key
        && let Err(failure) = D::authorize(&parts, key)
    {
        return Err(fail::<D>(sim, &failure, &request_id));
    }
    let json = match parsed {
        Ok(json) if !expect_json || json.is_object() => json,
        Ok(_) => {
            return Err(fail::<D>(
                sim,
                &Failure::invalid("The request body must be a JSON object."),
                &request_id,
            ));
        }
        Err(e) => {
            let failure = Failure::invalid(format!("The request body is not valid JSON: {e}"));
            return Err(fail::<D>(sim, &failure, &request_id));
        }
    };
    let inbound = Inbound {
        parts,
        json,
        path_model: path.model,
        path_stream: path.stream,
        request_id,
        strict_params: sim.strict_params,
    };
    let decision = sim.decide(D::API);
    preflight::<D>(sim, &decision, &inbound.request_id).await?;
    Ok((inbound, decision))
}

/// Applies the faults that replace the answer. A hang never returns: its future is dropped when the
/// client goes away, `down` closes the connection, or the simulator shuts down.
async fn preflight<D: Dialect>(
    sim: &SimState,
    decision: &Decision,
    request_id: &str,
) -> Result<(), Response> {
    if decision.hang {
        sim.count(Some(D::API), Outcome::Hang);
        std::future::pending::<()>().await;
    }
    if let Some(status) = decision.error {
        return Err(fail::<D>(sim, &Failure::Injected(status), request_id));
    }
    if let Some(retry_after_secs) = decision.rate_limit {
        let mut response = fail::<D>(sim, &Failure::RateLimited { retry_after_secs }, request_id);
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        return Err(response);
    }
    Ok(())
}

/// Serves a generation request (`/v1/messages`, `/v1/chat/completions`, `:generateContent` …) end to end.
pub(crate) async fn generate<D: Dialect>(
    sim: Arc<SimState>,
    req: Request,
    path: PathInfo,
) -> Response {
    let (mut inbound, decision) = match intake::<D>(&sim, req, path, true).await {
        Ok(ok) => ok,
        Err(response) => return response,
    };
    let (prompt, options) = match D::prompt(&inbound) {
        Ok(ok) => ok,
        Err(failure) => return fail::<D>(&sim, &failure, &inbound.request_id),
    };
    if decision.reject_prefill && prompt.ends_with_assistant() {
        return fail::<D>(&sim, &D::prefill_refused(&prompt), &inbound.request_id);
    }
    // A hostile answer replaces `corrupt`, `degrade` (and `truncate`): it is built from the clean
    // answer.
    let corrupt = decision.corrupt.filter(|_| decision.hostile.is_none());
    let degrade = decision.degrade.filter(|_| decision.hostile.is_none());
    let continued = prompt.continuation(D::PREFILL).and_then(|continuation| {
        let base = cut_conversation::<D>(&mut inbound, continuation.cut)?;
        continue_answer(sim.seed, &prompt, &base, &continuation, corrupt, degrade)
    });
    let answer = continued.unwrap_or_else(|| answer(sim.seed, &prompt, corrupt, degrade));
    let (id_prefix, tool_prefix) = D::id_prefixes();
    let meta = Meta {
        id: sim.new_id(id_prefix, 24),
        tool_call_id: sim.new_id(tool_prefix, 24),
        created: unix_now(),
        model: prompt.model.clone(),
    };
    // Every answer is charged to the API's rate-limit buckets; enforcing, one they cannot pay for is
    // the provider's 429 instead.
    let quota = sim.charge(D::API, answer.input_tokens, answer.output_tokens);
    if let Some(quota) = quota.as_ref().filter(|q| !q.granted) {
        let retry_after_secs = quota.retry_after_secs;
        let failure = Failure::RateLimited { retry_after_secs };
        let mut response = fail::<D>(&sim, &failure, &inbound.request_id);
        if let Ok(v) = HeaderValue::from_str(&retry_after_secs.to_string()) {
            response.headers_mut().insert("retry-after", v);
        }
        quota.write(response.headers_mut());
        return response;
    }
    let pacing = sim.pacing(decision.slow);
    if decision.role_then_silence {
        sim.count(Some(D::API), Outcome::Hang);
        let mut response = if prompt.stream {
            let frames = D::opening(&answer, &meta, &options);
            stream_response::<D>(paced_body(frames, pacing, Ending::Silence), &options)
        } else {
            if !pacing.ttft.is_zero() {
                tokio::time::sleep(pacing.ttft).await;
            }
            json_body(paced_body(Vec::new(), pacing, Ending::Silence))
        };
        D::headers(response.headers_mut(), &inbound.request_id);
        if let Some(quota) = &quota {
            quota.write(response.headers_mut());
        }
        return response;
    }
    let outcome = if decision.hostile.is_some() {
        Outcome::Hostile
    } else if decision.truncate.is_some() {
        Outcome::Truncated
    } else if answer.degraded {
        Outcome::Degraded
    } else if answer.corrupted {
        Outcome::Corrupted
    } else {
        Outcome::Ok
    };
    sim.count(Some(D::API), outcome);
    if let Some(hostile) = decision.hostile {
        return hostile::respond::<D>(hostile, &inbound, &prompt, &options, answer, meta, pacing)
            .await;
    }

    let mut response = if prompt.stream {
        let mut frames = D::frames(&answer, &meta, &options);
        let ending = match decision.truncate {
            None => Ending::Close,
            Some(cut) => {
                let kept = cut_len(&frames, cut.after_tokens);
                frames.truncate(kept);
                if cut.mode == TruncateMode::ErrorEvent {
                    frames.extend(D::stream_error(&answer, &meta, &options, kept));
                }
                Ending::of(cut.mode)
            }
        };
        stream_response::<D>(paced_body(frames, pacing, ending), &options)
    } else {
        if !pacing.ttft.is_zero() {
            tokio::time::sleep(pacing.ttft).await;
        }
        match decision.truncate.map(|cut| cut.mode) {
            Some(TruncateMode::ErrorEvent) => D::failure(
                &Failure::Injected(D::STREAM_ERROR_STATUS),
                &inbound.request_id,
            ),
            mode => json_response(&D::body(&answer, &meta, &options), mode.map(Ending::of)),
        }
    };
    D::headers(response.headers_mut(), &inbound.request_id);
    if let Some(quota) = &quota {
        quota.write(response.headers_mut());
    }
    response
}

/// The prompt of the request with its conversation list cut before `cut` (the conversation an
/// answer being continued answered), validated as any request; `None` when it is not valid (a
/// prefill with nothing before it).
fn cut_conversation<D: Dialect>(inbound: &mut Inbound, cut: usize) -> Option<Prompt> {
    let mut json = inbound.json.clone();
    json.get_mut(D::CONVERSATION)?.as_array_mut()?.truncate(cut);
    let whole = std::mem::replace(&mut inbound.json, json);
    let base = D::prompt(inbound).ok().map(|(prompt, _)| prompt);
    inbound.json = whole;
    base
}

/// A streamed answer's response: `body` with the dialect's content type.
fn stream_response<D: Dialect>(body: Body, options: &D::Options) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(
        CONTENT_TYPE,
        HeaderValue::from_static(D::stream_content_type(options)),
    );
    headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// A JSON response; with `truncate`, only half the body is sent, then it ends as `truncate` says.
pub(crate) fn json_response(value: &Value, truncate: Option<Ending>) -> Response {
    let bytes = Bytes::from(value.to_string());
    json_body(match truncate {
        Some(ending) => truncated_body(bytes, ending),
        None => Body::from(bytes),
    })
}

/// A response with a JSON content type around `body`.
fn json_body(body: Body) -> Response {
    let mut response = Response::new(body);
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// A JSON response with a status.
pub(crate) fn json_status(status: StatusCode, value: &Value) -> Response {
    let mut response = json_response(value, None);
    *response.status_mut() = status;
    response
}

/// The request's header as text, if present and valid.
pub(crate) fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

/// The bearer token of an `Authorization` header.
pub(crate) fn bearer(parts: &Parts) -> Option<&str> {
    let value = header(parts, "authorization")?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

/// A query parameter of the request's URI.
pub(crate) fn query_param(parts: &Parts, name: &str) -> Option<String> {
    let query = parts.uri.query()?;
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (k == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Seconds since the Unix epoch (0 if the clock is before it).
pub(crate) fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// The text of a message `content` that is either a string or a list of `{type: "text", text}` blocks.
pub(crate) fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(blocks) => blocks
            .iter()
            .filter_map(|b| match b {
                Value::String(s) => Some(s.as_str()),
                _ => b.get("text").and_then(Value::as_str),
            })
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// Stop sequences given as a string or a list of strings.
pub(crate) fn string_list(value: Option<&Value>) -> Vec<String> {
    match value {
        Some(Value::String(s)) => vec![s.clone()],
        Some(Value::Array(items)) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut builder = http::Request::builder().uri(uri);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn query_and_bearer() {
        let p = parts(
            "/x?alt=sse&key=a%2Bb+c",
            &[("authorization", "Bearer sk-1")],
        );
        assert_eq!(query_param(&p, "key").as_deref(), Some("a+b c"));
        assert_eq!(query_param(&p, "alt").as_deref(), Some("sse"));
        assert_eq!(query_param(&p, "nope"), None);
        assert_eq!(bearer(&p), Some("sk-1"));
    }

    #[test]
    fn content_text_accepts_strings_and_blocks() {
        assert_eq!(content_text(&serde_json::json!("hi")), "hi");
        assert_eq!(
            content_text(
                &serde_json::json!([{"type": "text", "text": "a"}, {"type": "image"}, {"type": "text", "text": "b"}])
            ),
            "ab"
        );
    }
}
