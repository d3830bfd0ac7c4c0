//! The response cache at the edge: keys from the route, the client's format and the request (minus
//! how it is delivered), fresh hits for `cache = "on"` routes, stale answers when every target failed,
//! and replaying a stored answer to a streaming client as a stream.

use axum::body::Body;
use axum::response::Response;
use bytes::Bytes;
use http::HeaderValue;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::config::{CacheMode, Policy, Route};
use ballast_core::envelope::Envelope;
use ballast_core::model::{ChatResponse, Part, StreamEvent};
use ballast_core::policy::{CachedAnswer, Lookup};
use ballast_core::translate::{self, StreamEncoder, StreamOptions};

use crate::proxy::X_BALLAST_CACHE;
use crate::runtime::lock;
use crate::state::AppState;

/// Client headers that change the upstream's answer (betas, API versions): part of the key.
const KEYED_HEADERS: [&str; 3] = ["anthropic-version", "anthropic-beta", "openai-beta"];

pub fn key(
    st: &AppState,
    route: &Route,
    format: ApiFormat,
    headers: &http::HeaderMap,
    env: &Envelope<'_>,
) -> u128 {
    let mut identity = Vec::with_capacity(256);
    identity.extend_from_slice(format.as_str().as_bytes());
    identity.push(0);
    for name in KEYED_HEADERS {
        let v = headers.get(name).map_or(&b""[..], |v| v.as_bytes());
        identity.extend_from_slice(&(v.len() as u64).to_le_bytes());
        identity.extend_from_slice(v);
    }
    env.cache_identity(&mut identity);
    st.runtime.keyer.key(&route.name, &identity)
}

/// Whether an OpenAI streaming client asked for a usage chunk.
pub fn wants_usage(env: &Envelope<'_>) -> bool {
    env.field("stream_options")
        .is_some_and(|v| v.replace(' ', "").contains("\"include_usage\":true"))
}

/// A cached answer; with `fresh_only`, only one within its TTL.
pub fn lookup(st: &AppState, key: u128, fresh_only: bool) -> Option<Lookup> {
    let hit = lock(&st.runtime.cache).get(key, Instant::now())?;
    (hit.fresh || !fresh_only).then_some(hit)
}

pub fn store(
    st: &AppState,
    policy: &Policy,
    key: u128,
    body: &Bytes,
    content_type: Option<&HeaderValue>,
    model: &str,
    target: &str,
) {
    let stale_ttl = match policy.cache {
        CacheMode::Off => return,
        CacheMode::On | CacheMode::StaleOnError => policy.cache_stale_ttl,
    };
    let answer = CachedAnswer {
        status: 200,
        content_type: content_type
            .and_then(|v| v.to_str().ok())
            .unwrap_or("application/json")
            .to_owned(),
        body: body.clone(),
        model: model.to_owned(),
        target: target.to_owned(),
    };
    lock(&st.runtime.cache).insert(key, answer, Instant::now(), policy.cache_ttl, stale_ttl);
}

/// Replays a cached answer: as stored for a whole-answer request, re-encoded as the client's event
/// stream for a streaming one. `mark` goes in `x-ballast-cache` (`hit`, `stale`).
pub fn respond(
    hit: &Lookup,
    format: ApiFormat,
    stream: bool,
    include_usage: bool,
    mark: &'static str,
    route: &str,
) -> Response {
    let a = &hit.answer;
    let (body, content_type) = if stream {
        match translate::decode_response(format, &a.body) {
            Ok(answer) => (
                Bytes::from(as_stream(format, &answer, &a.model, include_usage)),
                "text/event-stream".to_owned(),
            ),
            Err(_) => (a.body.clone(), a.content_type.clone()),
        }
    } else {
        (a.body.clone(), a.content_type.clone())
    };
    let mut r = Response::new(Body::from(body));
    let h = r.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&content_type) {
        h.insert(http::header::CONTENT_TYPE, v);
    }
    h.insert(X_BALLAST_CACHE.clone(), HeaderValue::from_static(mark));
    if let Ok(v) = HeaderValue::from_str(route) {
        h.insert("x-ballast-route", v);
    }
    if let Ok(v) = HeaderValue::from_str(&a.target) {
        h.insert("x-ballast-target", v);
    }
    h.insert("x-ballast-attempts", HeaderValue::from_static("0"));
    if let Ok(v) = HeaderValue::from_str(&hit.age.as_secs().to_string()) {
        h.insert(http::header::AGE, v);
    }
    r
}

/// A whole answer as the client's event stream.
fn as_stream(
    format: ApiFormat,
    answer: &ChatResponse,
    model: &str,
    include_usage: bool,
) -> Vec<u8> {
    let mut enc = StreamEncoder::new(
        format,
        StreamOptions {
            model: model.to_owned(),
            include_usage,
        },
    );
    let mut out = Vec::new();
    let mut events = vec![StreamEvent::Start {
        id: answer.id.clone(),
        model: model.to_owned(),
    }];
    for (index, part) in answer.content.iter().enumerate() {
        match part {
            Part::Text(text) => events.push(StreamEvent::TextDelta {
                index,
                text: text.clone(),
            }),
            Part::ToolCall(call) => {
                events.push(StreamEvent::ToolCallStart {
                    index,
                    id: call.id.clone(),
                    name: call.name.clone(),
                });
                events.push(StreamEvent::ToolCallDelta {
                    index,
                    fragment: call.arguments.clone(),
                });
            }
            _ => {}
        }
    }
    events.push(StreamEvent::Usage(answer.usage));
    if let Some(stop) = &answer.stop_reason {
        events.push(StreamEvent::Stop(stop.clone()));
    }
    events.push(StreamEvent::Done);
    for e in &events {
        enc.push(e, &mut out);
    }
    enc.finish(&mut out);
    out
}
