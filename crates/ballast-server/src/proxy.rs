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
use ballast_core::config::{CacheMode, ContentPolicyAction, Policy, Route, Strategy, Tier};
use ballast_core::envelope::Envelope;
use ballast_core::model::ChatRequest;
use ballast_core::observe::{StreamObserver, observe_body_with};
use ballast_core::policy::{Admission, P2cCandidate, pick_p2c, pick_weighted, plan_wait};
use ballast_core::record::{AttemptRecord, AttemptResult, RequestOutcome, RequestRecord};
use ballast_core::script::ScriptSet;
use ballast_core::trace::TraceContext;
use ballast_core::translate::{
    self, EncodeOptions, StreamEncoder, StreamLimits, StreamOptions, StreamTranslator,
    TranslateError,
};

use crate::auth;
use crate::cache;
use crate::error::EdgeError;
use crate::outcome::Outcome;
use crate::request_id::RequestId;
use crate::runtime::{Admitted, InFlight, lock};
use crate::state::{AppState, PreparedTarget};
use crate::stream::{ObservedStream, StreamStart};
use crate::upstream::{self, Failure, Next, TimeoutKind};

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

/// Picks the next untried target of a tier, preferring healthy ones (not disabled, breaker not open);
/// once only unhealthy ones are left, returns them in order so the error can name them. `None` when
/// the tier is spent.
fn pick(ctx: &Ctx<'_>, targets: &[PreparedTarget], tier: &Tier, tried: &[bool]) -> Option<usize> {
    let range = tier.targets.clone();
    let rt = &ctx.st.runtime;
    let untried = || range.clone().find(|&i| !tried[i]);
    if range.len() == 1 {
        return untried();
    }
    let now = Instant::now();
    let eject = ctx.st.config.signal.eject;
    let ejected = |i: usize| eject && ctx.st.telemetry.incidents.ejected(targets[i].state);
    let healthy = |i: usize| {
        let ts = &rt.targets[targets[i].state];
        !tried[i]
            && !ts.disabled.load(Ordering::Relaxed)
            && !rt.provider_disabled[targets[i].provider].load(Ordering::Relaxed)
            && !ejected(i)
            && {
                // An open breaker whose cool-down is over is due a trial: that counts as healthy.
                let b = lock(&ts.breaker).snapshot(now);
                b.state != ballast_core::policy::State::Open
                    || b.reopen_at.is_some_and(|at| at <= now)
            }
    };
    let mut rng = lock(&rt.rng);
    let chosen = match tier.strategy {
        Strategy::Weighted => {
            let weights: Vec<u32> = range.clone().map(|i| targets[i].weight).collect();
            let eligible: Vec<bool> = range.clone().map(healthy).collect();
            pick_weighted(&weights, &eligible, &mut rng)
        }
        Strategy::Latency => {
            let candidates: Vec<P2cCandidate> = range
                .clone()
                .map(|i| {
                    let ts = &rt.targets[targets[i].state];
                    P2cCandidate {
                        eligible: healthy(i),
                        ewma: lock(&ts.ewma).get(),
                        in_flight: ts.in_flight.load(Ordering::Relaxed),
                        weight: targets[i].weight,
                    }
                })
                .collect();
            pick_p2c(&candidates, &mut rng)
        }
    };
    chosen.map(|c| range.start + c).or_else(untried)
}

async fn attempt_targets(
    mut ctx: Ctx<'_>,
    targets: &[PreparedTarget],
) -> Result<Response, EdgeError> {
    let st = ctx.st;
    let rt = &st.runtime;
    let fallback_on_refusal = ctx.policy.content_policy == ContentPolicyAction::Fallback;
    let mut failures: Vec<(&PreparedTarget, Failure)> = Vec::new();
    let mut tried = vec![false; targets.len()];
    let mut attempts = 0u32;
    // The target whose failure makes the next attempt a retry or a fallback: that attempt is paid
    // from its retry budget (and the gateway's), so extra load stays a share of its own traffic.
    let mut failed_target: Option<usize> = None;
    'tiers: for tier in &ctx.route.tiers {
        while let Some(ti) = pick(&ctx, targets, tier, &tried) {
            tried[ti] = true;
            let target = &targets[ti];
            let ts = &rt.targets[target.state];
            if rt.provider_disabled[target.provider].load(Ordering::Relaxed)
                || ts.disabled.load(Ordering::Relaxed)
            {
                failures.push((target, skipped("disabled by an operator", None)));
                continue;
            }
            let now = Instant::now();
            // An open availability incident routes around the target while another one can serve
            // (it still gets a trial request now and then, so its recovery can be seen).
            if st.config.signal.eject
                && st.telemetry.incidents.avoid(target.state, now)
                && healthy_target_ahead(&ctx, targets, &tried)
            {
                failures.push((
                    target,
                    skipped(
                        "ejected: an availability incident is open",
                        Some(Duration::from_secs(1)),
                    ),
                ));
                continue;
            }
            if ctx.deadline.saturating_duration_since(now) < MIN_ATTEMPT_TIME {
                failures.push((target, Failure::OutOfTime));
                break 'tiers;
            }
            let ticket = match lock(&ts.breaker).admit(now) {
                Admission::Allowed(t) | Admission::Trial(t) => t,
                Admission::Rejected { open_since, until } => {
                    let since = crate::runtime::wall_clock(now, open_since);
                    failures.push((
                        target,
                        skipped(
                            format!("circuit open since {since}"),
                            Some(until.saturating_duration_since(now)),
                        ),
                    ));
                    continue;
                }
                Admission::ForcedOpen { .. } => {
                    failures.push((target, skipped("circuit forced open by an operator", None)));
                    continue;
                }
            };
            let mut ticket = Some(Admitted::new(st, target.state, ticket));
            let Some(slot) =
                InFlight::target(st, target.state, ctx.policy.max_in_flight_per_target)
            else {
                failures.push((
                    target,
                    skipped(
                        "at capacity (policy.max_in_flight_per_target)",
                        Some(Duration::from_secs(1)),
                    ),
                ));
                continue;
            };
            let prepared = match prepare(&mut ctx, targets, ti) {
                Ok(p) => p,
                Err(f) => {
                    tracing::info!(
                        request_id = ctx.rid.as_str(),
                        target = target.label.as_str(),
                        "target skipped: {}",
                        f.summary()
                    );
                    failures.push((target, f));
                    continue;
                }
            };
            // The first upstream attempt of a request is counted by the budgets; a fallback after
            // another target failed is paid from that target's budget and the gateway's.
            let now = Instant::now();
            match failed_target {
                None => {
                    lock(&ts.budget).record_request(now);
                    lock(&rt.global_budget).record_request(now);
                }
                Some(charged) => {
                    if !withdraw_budget(st, charged, now) {
                        failures.push((
                            target,
                            skipped(
                                "not tried: the retry budget is exhausted",
                                Some(Duration::from_secs(1)),
                            ),
                        ));
                        break 'tiers;
                    }
                }
            }
            let mut slot = Some(slot);
            let mut retries_left = ctx.policy.retries;
            let mut previous_backoff = None;
            loop {
                attempts += 1;
                ctx.attempt_span = ctx.trace.map(|t| st.telemetry.attempt_span(t));
                let attempt_started = Instant::now();
                let result = attempt(
                    &mut ctx,
                    target,
                    &prepared,
                    attempts,
                    &mut ticket,
                    &mut slot,
                    failures.len(),
                )
                .await;
                let failure = match result {
                    Ok(r) => {
                        st.telemetry.attempt(&AttemptRecord {
                            target: target.state,
                            result: AttemptResult::Answered,
                            duration: attempt_started.elapsed(),
                            stream: ctx.stream,
                            trace: ctx.attempt_span,
                        });
                        return Ok(r);
                    }
                    Err(f) => f,
                };
                let now = Instant::now();
                if let Some(result) = failure.attempt_result() {
                    st.telemetry.attempt(&AttemptRecord {
                        target: target.state,
                        result,
                        duration: now.duration_since(attempt_started),
                        stream: ctx.stream,
                        trace: ctx.attempt_span,
                    });
                }
                failed_target = Some(target.state);
                if let Some(t) = ticket.take() {
                    if failure.trips_breaker() {
                        t.record(false, "failures");
                        // A failing target must not look fast to the latency balancer.
                        let penalty = now.duration_since(attempt_started).max(FAILURE_LATENCY);
                        lock(&ts.ewma).observe(now, penalty);
                    } else {
                        t.cancel();
                    }
                }
                tracing::info!(
                    request_id = ctx.rid.as_str(),
                    route = ctx.route.name.as_str(),
                    target = target.label.as_str(),
                    attempt = attempts,
                    "attempt failed: {}",
                    failure.summary()
                );
                match failure.next(fallback_on_refusal) {
                    Next::Answer => {
                        let same_format = st.providers[target.provider].format == ctx.format;
                        let mut e = upstream_client_error(
                            ctx.format,
                            ctx.rid,
                            target,
                            failure,
                            same_format,
                        );
                        e.attempts = attempts;
                        return Err(e);
                    }
                    Next::Move => {
                        log_credentials(st, ctx.rid, target, &failure);
                        failures.push((target, failure));
                        break;
                    }
                    Next::Retry => {
                        // Leave the retry time to run: a wait that eats the deadline helps no one.
                        let remaining = ctx
                            .deadline
                            .saturating_duration_since(now)
                            .saturating_sub(MIN_ATTEMPT_TIME * 10);
                        let backoff = ctx
                            .policy
                            .backoff
                            .next_delay(previous_backoff, &mut lock(&rt.rng));
                        let wait = plan_wait(backoff, failure.retry_after(), remaining);
                        let (true, Some(wait)) = (retries_left > 0, wait) else {
                            failures.push((target, failure));
                            break;
                        };
                        // Pay for the retry before waiting for it.
                        if !withdraw_budget(st, target.state, now) {
                            failures.push((target, failure));
                            break;
                        }
                        retries_left -= 1;
                        previous_backoff = Some(backoff);
                        tokio::time::sleep(wait).await;
                        match lock(&ts.breaker).admit(Instant::now()) {
                            Admission::Allowed(t) | Admission::Trial(t) => {
                                ticket = Some(Admitted::new(st, target.state, t));
                            }
                            _ => {
                                failures.push((target, failure));
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
    let mut e = all_failed(ctx.format, ctx.rid, &ctx.route.name, failures);
    e.attempts = attempts;
    Err(e)
}

fn skipped(reason: impl Into<String>, retry_in: Option<Duration>) -> Failure {
    Failure::Skipped {
        reason: reason.into(),
        retry_in,
    }
}

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

fn log_credentials(st: &AppState, rid: &RequestId, target: &PreparedTarget, failure: &Failure) {
    if let Failure::Status {
        status: 401 | 403, ..
    } = failure
    {
        let name = &st.providers[target.provider].name;
        tracing::error!(
            request_id = rid.as_str(),
            target = target.label.as_str(),
            "provider {name} rejected Ballast's credentials: check providers.{name}.api_key"
        );
    }
}

/// Builds the body for `target`: the fast path when it speaks the client's format, else a translation
/// of the canonical request. An error means this target cannot serve this request.
fn prepare(ctx: &mut Ctx<'_>, targets: &[PreparedTarget], ti: usize) -> Result<Prepared, Failure> {
    let target = &targets[ti];
    let provider = &ctx.st.providers[target.provider];
    if provider.format == ctx.format {
        let mut body = Vec::with_capacity(ctx.bytes.len() + target.model.len() + 16);
        let model = (ctx.format != ApiFormat::Gemini).then_some(target.model.as_str());
        ctx.env.write_with_model(model, &mut body);
        return Ok(Prepared {
            body: Bytes::from(body),
            warnings: Vec::new(),
            translated: false,
            include_usage: false,
        });
    }
    // Anthropic betas are Anthropic's: one that changes what the request means (a tool only Anthropic
    // runs, files it stores) makes any other target ineligible; the rest are dropped, and said so.
    let mut beta_warnings = Vec::new();
    if ctx.format == ApiFormat::AnthropicMessages {
        // Every anthropic-beta header counts, however many the client sent.
        let betas: Vec<String> = ctx
            .headers
            .get_all("anthropic-beta")
            .iter()
            .flat_map(|v| {
                String::from_utf8_lossy(v.as_bytes())
                    .split(',')
                    .map(|b| b.trim().to_owned())
                    .collect::<Vec<_>>()
            })
            .filter(|b| !b.is_empty())
            .collect();
        for beta in betas {
            if MEANING_BETAS.iter().any(|p| beta.starts_with(p)) {
                return Err(Failure::Untranslatable {
                    message: format!(
                        "anthropic-beta {beta} changes what the request means and only Anthropic can honour it"
                    ),
                    param: None,
                    invalid: false,
                });
            }
            beta_warnings.push(format!(
                "anthropic-beta {beta} not sent to {}",
                provider.format
            ));
        }
    }
    let (format, bytes, stream) = (ctx.format, ctx.bytes, ctx.stream);
    let responses_ahead = responses_target_ahead(ctx, targets, ti);
    let canonical = ctx.canonical.get_or_insert_with(|| {
        translate::decode_request(format, bytes).map(|mut r| {
            r.stream = stream;
            r
        })
    });
    let req = canonical.as_ref().map_err(Failure::untranslatable)?;
    let opts = EncodeOptions {
        upstream_model: &target.model,
        default_max_tokens: ctx.route.max_tokens,
    };
    let encoded = match translate::encode_request(provider.format, req, &opts) {
        // OpenAI's built-in tools (web search…) run only on a Responses target. When the route has
        // one, other targets step aside for it; when it has none, the request is served without
        // them (named in x-ballast-warning) rather than not at all — Codex offers web search on
        // every request, whether or not the turn needs it.
        Err(TranslateError::Unsupported { .. })
            if !req.builtin_tools.is_empty() && !responses_ahead =>
        {
            let mut without = req.clone();
            without.drop_builtin_tools();
            translate::encode_request(provider.format, &without, &opts)
        }
        other => other,
    }
    .map_err(|e| Failure::untranslatable(&e))?;
    let mut warnings = encoded.warnings;
    warnings.extend(beta_warnings);
    Ok(Prepared {
        body: Bytes::from(encoded.body),
        warnings,
        translated: true,
        include_usage: req.include_usage,
    })
}

/// Whether an untried target of the route is neither disabled, nor open-circuited, nor ejected.
fn healthy_target_ahead(ctx: &Ctx<'_>, targets: &[PreparedTarget], tried: &[bool]) -> bool {
    let rt = &ctx.st.runtime;
    let now = Instant::now();
    targets.iter().zip(tried).any(|(t, &done)| {
        let ts = &rt.targets[t.state];
        !done
            && !ts.disabled.load(Ordering::Relaxed)
            && !rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            && !ctx.st.telemetry.incidents.ejected(t.state)
            && lock(&ts.breaker).snapshot(now).state != ballast_core::policy::State::Open
    })
}

/// Whether a Responses target (the only kind that runs OpenAI's built-in tools) that could still
/// serve this request comes after target `ti`: enabled, and its breaker not open.
fn responses_target_ahead(ctx: &Ctx<'_>, targets: &[PreparedTarget], ti: usize) -> bool {
    let rt = &ctx.st.runtime;
    let now = Instant::now();
    targets.iter().skip(ti + 1).any(|t| {
        let ts = &rt.targets[t.state];
        ctx.st.providers[t.provider].format == ApiFormat::OpenAiResponses
            && !ts.disabled.load(Ordering::Relaxed)
            && !rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            && {
                let b = lock(&ts.breaker).snapshot(now);
                b.state != ballast_core::policy::State::Open
                    || b.reopen_at.is_some_and(|at| at <= now)
            }
    })
}

/// One attempt at one target: send under the attempt's time limits, and on success commit the answer
/// to the client (whole, or as a stream once its first token arrived).
async fn attempt(
    ctx: &mut Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
    attempts: u32,
    ticket: &mut Option<Admitted>,
    slot: &mut Option<InFlight>,
    earlier_failures: usize,
) -> Result<Response, Failure> {
    let st = ctx.st;
    let policy = ctx.policy;
    let provider = &st.providers[target.provider];
    let stream = ctx.stream;
    let url = if stream {
        &target.url_stream
    } else {
        &target.url
    };
    let mut upstream_headers = provider.headers.clone();
    if !prepared.translated {
        for name in forwarded_headers(ctx.format) {
            if let Some(v) = ctx.headers.get(*name) {
                upstream_headers.insert(*name, v.clone());
            }
        }
    }
    // The provider sees the attempt as the parent of its own work (W3C Trace Context).
    if let Some(span) = ctx.attempt_span
        && let Ok(v) = HeaderValue::from_str(&span.traceparent())
    {
        upstream_headers.insert(TRACEPARENT.clone(), v);
        if let Some(state) = ctx.headers.get(&TRACESTATE) {
            upstream_headers.insert(TRACESTATE.clone(), state.clone());
        }
    }
    let attempt_started = Instant::now();
    // The attempt ends at its own limit or the request's deadline, whichever comes first.
    let (end, end_kind, end_after) = {
        let attempt_end = attempt_started + policy.attempt_timeout;
        if attempt_end < ctx.deadline {
            (attempt_end, TimeoutKind::Attempt, policy.attempt_timeout)
        } else {
            (ctx.deadline, TimeoutKind::Deadline, policy.deadline)
        }
    };
    // Until the answer starts: the first-token (streams) or response (whole answers) limit.
    let (first, first_kind, first_after) = {
        let (limit, kind) = if stream {
            (policy.first_token_timeout, TimeoutKind::FirstToken)
        } else {
            (policy.response_timeout, TimeoutKind::Response)
        };
        let at = attempt_started + limit;
        if at < end {
            (at, kind, limit)
        } else {
            (end, end_kind, end_after)
        }
    };
    let req = upstream::UpstreamRequest {
        url: url.clone(),
        headers: upstream_headers,
        body: prepared.body.clone(),
    };
    let resp = match tokio::time::timeout_at(first, st.transport.send(req)).await {
        Err(_) => return Err(Failure::Timeout(first_kind, first_after)),
        Ok(Err(f)) => return Err(f),
        Ok(Ok(resp)) if !resp.status.is_success() => {
            return Err(status_failure(resp, end, &st.runtime.buffered).await);
        }
        Ok(Ok(resp)) => resp,
    };
    let status = resp.status;
    let upstream_type = resp.headers.get(http::header::CONTENT_TYPE).cloned();
    let limits = &st.config.limits;
    let mut outcome = Outcome {
        st: st.clone(),
        request_id: ctx.rid.0.clone(),
        target: target.label.clone(),
        route_idx: ctx.route_idx,
        api: ctx.format,
        fallback: earlier_failures > 0,
        target_state: target.state,
        started: ctx.started,
        attempt_started,
        attempts,
        ttft: None,
        ticket: None,
        guards: Vec::new(),
        trace: ctx.trace,
        request_model: ctx
            .trace
            .filter(|t| t.sampled && st.telemetry.spans.is_some())
            .map(|_| ctx.model.into()),
    };
    let mut r = if stream {
        // Hold the answer back until its first token: a stream that fails before that falls over
        // transparently, since the client has seen nothing yet.
        let mut observer = StreamObserver::new(provider.format)
            .with_max_event_bytes(limits.max_event_bytes)
            .with_scripts(ctx.scripts);
        let mut prefix = Vec::new();
        let mut prefix_bytes = 0usize;
        let mut held = st.runtime.buffered.reserve();
        let mut inner = resp.body;
        while !observer.observation().first_token_seen && !observer.observation().done {
            let next =
                tokio::time::timeout_at(first, futures_util::StreamExt::next(&mut inner)).await;
            match next {
                Err(_) => {
                    return Err(Failure::Timeout(first_kind, first_after));
                }
                Ok(Some(Ok(chunk))) => {
                    // Held back until the first token: bounded in bytes, not only in time.
                    prefix_bytes = prefix_bytes.saturating_add(chunk.len());
                    if prefix_bytes > limits.max_first_token_bytes {
                        return Err(Failure::BadResponse(format!(
                            "no first token in the first {} bytes of the stream (limits.max_first_token_bytes)",
                            limits.max_first_token_bytes
                        )));
                    }
                    observer.feed(&chunk);
                    // The chunks held back, and the observer's copy of the event in progress.
                    if !held.set(prefix_bytes.saturating_add(observer.buffered())) {
                        return Err(upstream::buffers_full());
                    }
                    prefix.push(chunk);
                    if let Some(e) = &observer.observation().error {
                        return Err(Failure::BadResponse(format!(
                            "error event before the first token: {e}"
                        )));
                    }
                }
                Ok(Some(Err(f))) => {
                    return Err(f);
                }
                Ok(None) => {
                    return Err(Failure::BadResponse(
                        "the stream ended before its first token".to_owned(),
                    ));
                }
            }
        }
        outcome.ticket = ticket.take();
        outcome.first_token();
        outcome.guards.extend(ctx.guard.take());
        outcome.guards.extend(slot.take());
        let translator = prepared.translated.then(|| {
            let mut encoder = StreamEncoder::new(
                ctx.format,
                StreamOptions {
                    model: target.model.clone(),
                    include_usage: prepared.include_usage,
                },
            );
            if let Some(Ok(req)) = ctx.canonical.as_ref() {
                encoder = encoder.for_request(req);
            }
            StreamTranslator::with_encoder(provider.format, encoder).with_limits(StreamLimits {
                max_tool_args_bytes: limits.max_tool_args_bytes,
                max_event_bytes: limits.max_event_bytes,
                max_answer_bytes: limits.max_answer_bytes,
                ..StreamLimits::default()
            })
        });
        let body = ObservedStream::new(StreamStart {
            inner,
            upstream_format: provider.format,
            client_format: ctx.format,
            observer,
            prefix,
            translator,
            deadline: end,
            deadline_kind: end_kind,
            deadline_after: end_after,
            idle: policy.idle_timeout,
            max_event_bytes: limits.max_event_bytes,
            held,
            chunk_timer: st
                .telemetry
                .chunk_timer(ctx.route_idx, target.state, ctx.format),
            outcome,
        });
        let mut r = Response::new(Body::from_stream(body));
        let h = r.headers_mut();
        h.insert(
            http::header::CACHE_CONTROL,
            HeaderValue::from_static("no-cache"),
        );
        let ct = if prepared.translated {
            None
        } else {
            upstream_type
        };
        h.insert(
            http::header::CONTENT_TYPE,
            ct.unwrap_or_else(|| HeaderValue::from_static("text/event-stream")),
        );
        r
    } else {
        let mut held = st.runtime.buffered.reserve();
        // The whole answer within the response timeout: a provider that trickles it is abandoned
        // while there is still time to fall over.
        let read = tokio::time::timeout_at(
            first,
            upstream::read_body(resp, limits.max_answer_bytes, &mut held),
        )
        .await;
        let body = match read {
            Err(_) => {
                return Err(Failure::Timeout(first_kind, first_after));
            }
            Ok(Err(f)) => {
                return Err(f);
            }
            Ok(Ok(body)) => body,
        };
        if std::str::from_utf8(&body).is_err() {
            // JSON is UTF-8: an answer that is not cannot be what the client's SDK parses.
            return Err(Failure::BadResponse(
                "the answer is not valid UTF-8".to_owned(),
            ));
        }
        let observed = observe_body_with(provider.format, &body, ctx.scripts);
        if observed.error.is_some() {
            // A 2xx that reports a failed answer (Responses `status: "failed"`): not an answer.
            return Err(Failure::BadResponse(
                "the upstream reported the answer as failed".to_owned(),
            ));
        }
        if !observed.done {
            // A 2xx whose body is not the API's answer shape (e.g. cut short): not an answer.
            return Err(Failure::BadResponse(format!(
                "the {} answer is not valid JSON ({} bytes)",
                provider.format,
                body.len()
            )));
        }
        let body = if prepared.translated {
            let answer = match translate::decode_response(provider.format, &body) {
                Ok(a) => a,
                Err(e) => {
                    return Err(Failure::BadResponse(e.to_string()));
                }
            };
            let body = match ctx.canonical.as_ref() {
                Some(Ok(req)) => {
                    translate::encode_response_for(ctx.format, &answer, &target.model, req)
                }
                _ => translate::encode_response(ctx.format, &answer, &target.model),
            };
            Bytes::from(body)
        } else {
            body
        };
        outcome.ticket = ticket.take();
        outcome.finish_body(&observed);
        let content_type = if prepared.translated {
            None
        } else {
            upstream_type
        };
        // An answer from a target that could not honour every field is not the answer to store.
        if let Some(key) = ctx.cache_key.filter(|_| prepared.warnings.is_empty()) {
            cache::store(
                st,
                ctx.policy,
                key,
                &body,
                content_type.as_ref(),
                &target.model,
                &target.label,
            );
        }
        let mut r = Response::new(Body::from(body));
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            content_type.unwrap_or_else(|| HeaderValue::from_static("application/json")),
        );
        r
    };
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(X_BALLAST_ROUTE.clone(), target_header(&ctx.route.name));
    h.insert(X_BALLAST_TARGET.clone(), target_header(&target.label));
    h.insert(X_BALLAST_ATTEMPTS.clone(), HeaderValue::from(attempts));
    h.insert(
        X_BALLAST_FALLBACK.clone(),
        HeaderValue::from_static(if earlier_failures > 0 {
            "true"
        } else {
            "false"
        }),
    );
    h.insert(
        X_BALLAST_CACHE.clone(),
        HeaderValue::from_static(if ctx.cache_key.is_some() {
            "miss"
        } else {
            "off"
        }),
    );
    let mut warnings = prepared.warnings.join("; ");
    // Served by another provider, a Responses request is not stored (OpenAI's default is to store).
    if ctx.format == ApiFormat::OpenAiResponses
        && prepared.translated
        && ctx.env.field("store").is_none_or(|v| v.trim() != "false")
    {
        if !warnings.is_empty() {
            warnings.push_str("; ");
        }
        warnings.push_str(
            "store: Ballast is stateless; this response is not stored (send the full input each turn)",
        );
    }
    if !warnings.is_empty()
        && let Ok(v) = HeaderValue::from_str(&warnings)
    {
        h.insert(X_BALLAST_WARNING.clone(), v);
    }
    Ok(r)
}

fn target_header(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| HeaderValue::from_static("-"))
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
    match http_body_util::Limited::new(body, limit).collect().await {
        Ok(c) => Ok(c.to_bytes()),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(_) => Err(ClientError::new(
            ErrorKind::InvalidRequest,
            "the request body could not be read (client disconnected or sent a broken body)",
        )),
    }
}

async fn status_failure(
    resp: upstream::UpstreamResponse,
    deadline: Instant,
    buffered: &Arc<crate::runtime::BufferBudget>,
) -> Failure {
    let status = resp.status.as_u16();
    let header = |name: &str| resp.headers.get(name).and_then(|v| v.to_str().ok());
    let retry_after = ballast_core::policy::parse_retry_after(
        header("retry-after"),
        header("retry-after-ms"),
        std::time::SystemTime::now(),
    );
    let body = match tokio::time::timeout_at(
        deadline,
        upstream::read_body(resp, MAX_ERROR_BODY, &mut buffered.reserve()),
    )
    .await
    {
        Ok(Ok(b)) => b,
        _ => Bytes::new(),
    };
    Failure::Status {
        status,
        message: ballast_core::client_error::upstream_error_message(&body),
        retry_after,
        body,
    }
}

/// A `retry-after` header value (whole seconds, rounded up) for a wait.
fn retry_after_header(wait: Duration) -> Option<HeaderValue> {
    let secs = wait.as_secs() + u64::from(wait.subsec_nanos() > 0);
    HeaderValue::from_str(&secs.to_string()).ok()
}

/// An upstream 4xx the client must see as is: same status, the upstream's message, the client's format.
/// On the same-format path the upstream's own body goes through; otherwise it is re-rendered.
fn upstream_client_error(
    format: ApiFormat,
    rid: &RequestId,
    target: &PreparedTarget,
    failure: Failure,
    same_format: bool,
) -> EdgeError {
    let Failure::Status {
        status,
        message,
        retry_after,
        body,
        ..
    } = failure
    else {
        let e = ClientError::new(
            ErrorKind::BadGateway,
            format!("{}: {failure}", target.label),
        );
        return EdgeError::new(format, rid.as_str(), e);
    };
    let mut error = ClientError::new(
        ErrorKind::from_status(status),
        message.unwrap_or_else(|| format!("{}: HTTP {status}", target.label)),
    );
    error.status = status;
    let mut e = EdgeError::new(format, rid.as_str(), error);
    e.log_line = Some(format!(
        "{}: HTTP {status} (the provider's message is not logged)",
        target.label
    ));
    e.retry_after = retry_after.and_then(retry_after_header);
    // Same format: the upstream's own error body is already what this client's SDK expects.
    e.passthrough = (same_format && !body.is_empty()).then_some(body);
    e
}

/// 503 with a `retry-after` saying when trying again may help (a breaker's next probe, else 1 s).
fn unavailable(failures: &[(&PreparedTarget, Failure)]) -> (ErrorKind, u16, Option<HeaderValue>) {
    let wait = failures
        .iter()
        .filter_map(|(_, f)| match f {
            Failure::Skipped { retry_in, .. } => *retry_in,
            _ => None,
        })
        .min()
        .map_or(1, |d| d.as_secs().clamp(1, 60));
    (
        ErrorKind::Unavailable,
        503,
        HeaderValue::from_str(&wait.to_string()).ok(),
    )
}

/// Every target failed: one error naming each target and its cause. A single failure keeps its own
/// kind (an upstream 529 stays 529, a refused connection is 502, a timeout 504); several give 503
/// with `retry-after`.
fn all_failed(
    format: ApiFormat,
    rid: &RequestId,
    route: &str,
    failures: Vec<(&PreparedTarget, Failure)>,
) -> EdgeError {
    let causes: Vec<String> = failures
        .iter()
        .map(|(t, f)| format!("{} ({f})", t.label))
        .collect();
    let attempted: Vec<&Failure> = failures
        .iter()
        .map(|(_, f)| f)
        .filter(|f| {
            !matches!(
                f,
                Failure::Untranslatable { .. } | Failure::Skipped { .. } | Failure::OutOfTime
            )
        })
        .collect();
    let any_skipped = failures
        .iter()
        .any(|(_, f)| matches!(f, Failure::Skipped { .. } | Failure::OutOfTime));
    if attempted.is_empty() && !any_skipped {
        // No target could even be asked: the request is beyond every target (or malformed).
        let param = failures.iter().find_map(|(_, f)| match f {
            Failure::Untranslatable { param, .. } => param.clone(),
            _ => None,
        });
        let message = if let [
            (
                _,
                Failure::Untranslatable {
                    message,
                    invalid: true,
                    ..
                },
            ),
        ] = failures.as_slice()
        {
            message.clone()
        } else {
            format!(
                "no target of route {route:?} can serve this request: {}",
                causes.join(", ")
            )
        };
        let mut e = EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(ErrorKind::InvalidRequest, message).with_param(param),
        );
        e.log_line = Some(format!(
            "no target of route {route:?} can serve this request"
        ));
        return e;
    }
    // Nothing answered in time, and nothing else went wrong: a timeout.
    let all_timeouts = !attempted.is_empty()
        && failures
            .iter()
            .all(|(_, f)| matches!(f, Failure::Timeout(..) | Failure::OutOfTime));
    let (kind, status, retry_after) = match attempted.as_slice() {
        _ if all_timeouts => (ErrorKind::Timeout, 504, None),
        // Several targets failed (tried or skipped): the route as a whole is unavailable.
        _ if failures.len() > 1 => unavailable(&failures),
        // The provider refused Ballast's own credentials: the gateway is misconfigured, not the client.
        [
            Failure::Status {
                status: 401 | 403, ..
            },
        ] => (ErrorKind::BadGateway, 502, None),
        [
            Failure::Status {
                status,
                retry_after,
                ..
            },
        ] => (
            ErrorKind::from_status(*status),
            *status,
            retry_after.and_then(retry_after_header),
        ),
        [Failure::Connect(_) | Failure::Transport(_) | Failure::BadResponse(_)] => {
            (ErrorKind::BadGateway, 502, None)
        }
        _ => unavailable(&failures),
    };
    let summaries: Vec<String> = failures
        .iter()
        .map(|(t, f)| format!("{} ({})", t.label, f.summary()))
        .collect();
    let message = if failures.len() == 1 {
        let (t, f) = &failures[0];
        format!("{}: {f}", t.label)
    } else {
        format!(
            "all targets of route {route:?} failed: {}",
            causes.join(", ")
        )
    };
    let mut error = ClientError::new(kind, message);
    error.status = status;
    let mut e = EdgeError::new(format, rid.as_str(), error);
    e.retry_after = retry_after;
    e.stale_ok = true;
    e.log_line = Some(format!(
        "all targets of route {route:?} failed: {}",
        summaries.join(", ")
    ));
    e
}
