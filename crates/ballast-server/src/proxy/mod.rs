//! The request path: authenticate, read and check the body, pick the route, then try its targets in
//! order until one answers. Same-format targets take the fast path (body forwarded with only the model
//! rewritten; the answer's bytes passed through while observed). The answer's outcome is logged once,
//! without content.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};
use ballast_core::config::{
    CacheMode, ContentPolicyAction, Policy, Route, Strategy, StreamRecovery, Tier,
};
use ballast_core::envelope::Envelope;
use ballast_core::model::ChatRequest;
use ballast_core::observe::StreamObserver;
use ballast_core::policy::{Admission, P2cCandidate, pick_p2c, pick_weighted, plan_wait};
use ballast_core::quality::asks_for_json;
use ballast_core::record::{AttemptRecord, AttemptResult, RequestOutcome, RequestRecord};
use ballast_core::script::ScriptSet;
use ballast_core::trace::TraceContext;
use ballast_core::translate::{
    self, EncodeOptions, StreamEncoder, StreamLimits, StreamOptions, StreamTranslator,
    TranslateError,
};

use crate::auth;
use crate::cache;
use crate::coalesce::Coalesced;
use crate::error::EdgeError;
use crate::outcome::Outcome;
use crate::request_id::RequestId;
use crate::runtime::{Admitted, InFlight, lock};
use crate::state::{AppState, PreparedTarget};
use crate::stream::{ObservedStream, StreamStart};
use crate::upstream::{self, Failure, Next, TimeoutKind};
use ballast_core::continuation::Delivery;

mod attempt;
mod errors;
mod resume;
mod targets;

pub(crate) use resume::{Continued, Resumer, continue_stream};

use attempt::{Tally, attempt};
use errors::{all_failed, upstream_client_error};
use targets::attempt_targets;

/// Anthropic betas that change what a request means (server-side tools, stored files, MCP servers,
/// skills): a target that is not Anthropic cannot serve a request that uses them.
const MEANING_BETAS: [&str; 6] = [
    "computer-use-",
    "code-execution-",
    "files-api-",
    "mcp-client-",
    "skills-",
    "web-fetch-",
];

/// Below this much time left before the deadline, no new attempt is started.
const MIN_ATTEMPT_TIME: Duration = Duration::from_millis(10);

/// The latency a failed attempt counts as for the balancer, at least.
const FAILURE_LATENCY: Duration = Duration::from_secs(1);

/// Largest upstream error body kept to show the client.
const MAX_ERROR_BODY: usize = 64 * 1024;

static X_BALLAST_ROUTE: HeaderName = HeaderName::from_static("x-ballast-route");

static X_BALLAST_TARGET: HeaderName = HeaderName::from_static("x-ballast-target");

static X_BALLAST_ATTEMPTS: HeaderName = HeaderName::from_static("x-ballast-attempts");

static X_BALLAST_WARNING: HeaderName = HeaderName::from_static("x-ballast-warning");

static X_BALLAST_FALLBACK: HeaderName = HeaderName::from_static("x-ballast-fallback");

pub static X_BALLAST_CACHE: HeaderName = HeaderName::from_static("x-ballast-cache");

static TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

static TRACESTATE: HeaderName = HeaderName::from_static("tracestate");

/// Client headers forwarded on the same-format path: the ones that change what the upstream does.
fn forwarded_headers(format: ApiFormat) -> &'static [&'static str] {
    match format {
        ApiFormat::AnthropicMessages => &["anthropic-version", "anthropic-beta"],
        ApiFormat::OpenAiChat | ApiFormat::OpenAiResponses => &["openai-beta"],
        ApiFormat::Gemini => &[],
    }
}

/// What the URL says about the call, for APIs that carry it there (Gemini: the model and whether to
/// stream are in the path).
#[derive(Debug, Default)]
pub struct UrlCall {
    pub model: Option<String>,
    pub stream: Option<bool>,
}

pub async fn handle(
    st: Arc<AppState>,
    format: ApiFormat,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
    call: UrlCall,
) -> Response {
    let started = Instant::now();
    let trace = st.telemetry.start_trace(&headers);
    let Some(guard) = InFlight::enter(&st) else {
        // Saturated: answer at once rather than queue without bound.
        let mut e = EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(
                ErrorKind::Unavailable,
                format!(
                    "the gateway is at capacity ({} requests in flight, server.max_in_flight); retry shortly",
                    st.config.server.max_in_flight
                ),
            ),
        );
        e.retry_after = Some(HeaderValue::from_static("1"));
        e.close = true;
        report_error(&st, &mut e, RequestOutcome::Shed, started, trace);
        return e.into_response();
    };
    let arrival = Arrival {
        rid: &rid,
        format,
        started,
        trace,
    };
    match run(&st, arrival, &headers, body, guard, call).await {
        Ok(r) => r,
        Err(mut e) => {
            report_error(&st, &mut e, RequestOutcome::Failed, started, trace);
            e.into_response()
        }
    }
}

/// A request that ends in an error: its record, which logs it (so the error is not logged again).
fn report_error(
    st: &AppState,
    e: &mut EdgeError,
    outcome: RequestOutcome,
    started: Instant,
    trace: Option<TraceContext>,
) {
    st.telemetry.request(&RequestRecord {
        route: e.route,
        target: e.target,
        stream: e.stream,
        attempts: e.attempts,
        error: Some(e.log_message()),
        trace,
        ..RequestRecord::without_answer(
            &e.request_id,
            e.format,
            outcome,
            e.error.status,
            started.elapsed(),
        )
    });
    e.recorded = true;
}

/// Who asked, in which API, and when.
#[derive(Clone, Copy)]
struct Arrival<'a> {
    rid: &'a RequestId,
    format: ApiFormat,
    started: Instant,
    /// The request's trace, when it has one.
    trace: Option<TraceContext>,
}

/// A request answered from the cache (fresh, or stale when every target failed).
fn report_cached(
    st: &AppState,
    a: Arrival<'_>,
    route: usize,
    stream: bool,
    outcome: RequestOutcome,
    why: Option<&str>,
) {
    st.telemetry.request(&RequestRecord {
        route: Some(route),
        stream,
        error: why,
        trace: a.trace,
        ..RequestRecord::without_answer(a.rid.as_str(), a.format, outcome, 200, a.started.elapsed())
    });
}

async fn run(
    st: &Arc<AppState>,
    arrival: Arrival<'_>,
    headers: &HeaderMap,
    body: Body,
    guard: InFlight,
    call: UrlCall,
) -> Result<Response, EdgeError> {
    let Arrival {
        rid,
        format,
        started,
        trace,
    } = arrival;
    let edge = |e: ClientError| EdgeError::new(format, rid.as_str(), e);
    if !auth::authorized(&st.config.auth.gateway_keys, headers) {
        let mut e = edge(ClientError::new(
            ErrorKind::Authentication,
            "invalid or missing gateway key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
        ));
        // Refused before reading the body: an unauthenticated client gets no buffering from us.
        e.close = true;
        return Err(e);
    }
    // A client that never finishes sending must not hold its slot forever.
    let read = read_request_body(body, st.config.server.body_limit);
    let closing = |e: ClientError| {
        // The rest of the body is still on the connection: it cannot carry another request.
        let mut e = edge(e);
        e.close = true;
        e
    };
    let read_limit = st.config.server.body_timeout.min(st.config.policy.deadline);
    let bytes = match tokio::time::timeout(read_limit, read).await {
        Ok(r) => r.map_err(closing)?,
        Err(_) => {
            let mut e = ClientError::new(
                ErrorKind::InvalidRequest,
                "the request body did not arrive in time",
            );
            e.status = 408;
            return Err(closing(e));
        }
    };
    let env = Envelope::parse(format, &bytes).map_err(|e| {
        edge(ClientError::new(ErrorKind::InvalidRequest, e.message).with_param(e.param))
    })?;
    if format == ApiFormat::OpenAiResponses
        && let Some(field) = env.responses_stateful_field()
    {
        return Err(edge(
            ClientError::new(
                ErrorKind::InvalidRequest,
                format!(
                    "{field}: Ballast is stateless (it stores no prompts or answers), so it cannot \
                     continue a stored response or conversation; send the full conversation in `input` \
                     (and `store: false`)"
                ),
            )
            .with_param(Some(field.to_owned())),
        ));
    }
    let model = call.model.as_deref().or(env.model()).unwrap_or_default();
    let Some(route_idx) = st.route(model) else {
        return Err(edge(
            ClientError::new(
                ErrorKind::NotFound,
                format!(
                    "model {model:?} is not served by this gateway; available models: {}",
                    st.route_names()
                ),
            )
            .with_param(Some("model".to_owned())),
        ));
    };
    let route = &st.config.routes[route_idx];
    let policy = &route.policy;
    let stream = call.stream.unwrap_or_else(|| env.stream());
    let include_usage = stream && cache::wants_usage(&env);
    let cache_key =
        (policy.cache != CacheMode::Off).then(|| cache::key(st, route, format, headers, &env));
    if policy.cache == CacheMode::On
        && let Some(key) = cache_key
        && let Some(hit) = cache::lookup(st, key, true)
    {
        report_cached(
            st,
            arrival,
            route_idx,
            stream,
            RequestOutcome::CacheHit,
            None,
        );
        return Ok(cache::respond(
            &hit,
            format,
            stream,
            include_usage,
            "hit",
            &route.name,
        ));
    }
    let ctx = Ctx {
        st,
        format,
        rid,
        headers,
        bytes: &bytes,
        env: &env,
        route,
        route_idx,
        scripts: ScriptSet::of_request(&bytes),
        wants_json: asks_for_json(format, &bytes),
        policy,
        started,
        deadline: started + policy.deadline,
        stream,
        canonical: None,
        cache_key,
        guard: Some(guard),
        trace,
        attempt_span: None,
        model,
    };
    match attempt_targets(ctx, &st.targets[route_idx]).await {
        Ok(r) => Ok(r),
        Err(mut e) => {
            e.route = Some(route_idx);
            e.stream = stream;
            if let (CacheMode::StaleOnError | CacheMode::On, Some(key)) = (policy.cache, cache_key)
                && e.stale_ok
                && let Some(hit) = cache::lookup(st, key, false)
            {
                let why = format!(
                    "{}; served a cached answer {}s old",
                    e.log_message(),
                    hit.age.as_secs()
                );
                report_cached(
                    st,
                    arrival,
                    route_idx,
                    stream,
                    RequestOutcome::Stale,
                    Some(&why),
                );
                return Ok(cache::respond(
                    &hit,
                    format,
                    stream,
                    include_usage,
                    "stale",
                    &route.name,
                ));
            }
            Err(e)
        }
    }
}

/// Everything one request's attempts share.
struct Ctx<'a> {
    st: &'a Arc<AppState>,
    format: ApiFormat,
    rid: &'a RequestId,
    headers: &'a HeaderMap,
    bytes: &'a Bytes,
    env: &'a Envelope<'a>,
    route: &'a Route,
    /// The route's index in the configuration.
    route_idx: usize,
    /// The scripts the prompt uses: an answer's text in others is counted.
    scripts: ScriptSet,
    /// The request asked for a JSON answer: the answer's text is checked for it.
    wants_json: bool,
    policy: &'a Policy,
    started: Instant,
    deadline: Instant,
    /// The client asked for a stream (in the body, or in the URL for Gemini).
    stream: bool,
    /// The request in canonical form, decoded on the first target that needs translation.
    canonical: Option<Result<ChatRequest, TranslateError>>,
    cache_key: Option<u128>,
    /// The request's gateway in-flight slot, handed to the answer when one is committed.
    guard: Option<InFlight>,
    /// The request's trace, and the span of the attempt under way.
    trace: Option<TraceContext>,
    attempt_span: Option<TraceContext>,
    /// The model the client asked for.
    model: &'a str,
}

/// An upstream request body ready to send (and resend on retry).
struct Prepared {
    body: Bytes,
    /// Fields the target cannot honour, for `x-ballast-warning`.
    warnings: Vec<String>,
    /// The target speaks another format than the client: the answer is translated back.
    translated: bool,
    include_usage: bool,
}

async fn read_request_body(body: Body, limit: usize) -> Result<Bytes, ClientError> {
    let too_large = || {
        ClientError::new(
            ErrorKind::RequestTooLarge,
            format!(
                "request body exceeds the gateway's limit of {limit} bytes (server.body_limit)"
            ),
        )
    };
    let broken = || {
        ClientError::new(
            ErrorKind::InvalidRequest,
            "the request body could not be read (client disconnected or sent a broken body)",
        )
    };
    // A body that arrives in one piece (most do) is kept as that piece, not copied into a
    // collection; one in several is joined once.
    let mut body = http_body_util::Limited::new(body, limit);
    let mut first: Option<Bytes> = None;
    let mut joined: Option<bytes::BytesMut> = None;
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(f) => f,
            Err(e) if e.is::<http_body_util::LengthLimitError>() => return Err(too_large()),
            Err(_) => return Err(broken()),
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if let Some(all) = &mut joined {
            all.extend_from_slice(&data);
        } else if let Some(head) = first.take() {
            let mut all = bytes::BytesMut::with_capacity(head.len() + data.len());
            all.extend_from_slice(&head);
            all.extend_from_slice(&data);
            joined = Some(all);
        } else {
            first = Some(data);
        }
    }
    Ok(joined.map_or_else(|| first.unwrap_or_default(), bytes::BytesMut::freeze))
}
