//! The request path: authenticate, read and check the body, pick the route, then try its targets in
//! order until one answers. Same-format targets take the fast path (body forwarded with only the model
//! rewritten; the answer's bytes passed through while observed). The answer's outcome is logged once,
//! without content.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue};
use http_body_util::BodyExt;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};
use ballast_core::config::Route;
use ballast_core::envelope::Envelope;
use ballast_core::model::ChatRequest;
use ballast_core::observe::{Observation, observe_body};
use ballast_core::translate::{
    self, EncodeOptions, StreamOptions, StreamTranslator, TranslateError,
};

use crate::auth;
use crate::error::EdgeError;
use crate::request_id::RequestId;
use crate::state::{AppState, PreparedTarget};
use crate::stream::ObservedStream;
use crate::upstream::{self, Failure};

/// Largest upstream answer read whole (non-streaming); streams are never read whole.
const MAX_UPSTREAM_BODY: usize = 64 * 1024 * 1024;
/// Largest upstream error body kept to show the client.
const MAX_ERROR_BODY: usize = 64 * 1024;

static X_BALLAST_ROUTE: HeaderName = HeaderName::from_static("x-ballast-route");
static X_BALLAST_TARGET: HeaderName = HeaderName::from_static("x-ballast-target");
static X_BALLAST_ATTEMPTS: HeaderName = HeaderName::from_static("x-ballast-attempts");
static X_BALLAST_WARNING: HeaderName = HeaderName::from_static("x-ballast-warning");

/// Client headers forwarded on the same-format path: the ones that change what the upstream does.
fn forwarded_headers(format: ApiFormat) -> &'static [&'static str] {
    match format {
        ApiFormat::AnthropicMessages => &["anthropic-version", "anthropic-beta"],
        ApiFormat::OpenAiChat => &["openai-beta"],
        ApiFormat::Gemini => &[],
    }
}

pub async fn handle(
    st: Arc<AppState>,
    format: ApiFormat,
    rid: RequestId,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = Instant::now();
    match run(&st, format, &rid, &headers, body, started).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn run(
    st: &AppState,
    format: ApiFormat,
    rid: &RequestId,
    headers: &HeaderMap,
    body: Body,
    started: Instant,
) -> Result<Response, EdgeError> {
    let edge = |e: ClientError| EdgeError::new(format, rid.as_str(), e);
    if !auth::authorized(&st.config.auth.gateway_keys, headers) {
        return Err(edge(ClientError::new(
            ErrorKind::Authentication,
            "invalid or missing gateway key: send it as `Authorization: Bearer <key>` or `x-api-key: <key>`",
        )));
    }
    let bytes = read_request_body(body, st.config.server.body_limit)
        .await
        .map_err(edge)?;
    let env = Envelope::parse(format, &bytes).map_err(|e| {
        edge(ClientError::new(ErrorKind::InvalidRequest, e.message).with_param(e.param))
    })?;
    let model = env.model().unwrap_or_default();
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
    let ctx = Ctx {
        st,
        format,
        rid,
        headers,
        bytes: &bytes,
        env: &env,
        route,
        started,
        deadline: started + st.config.server.request_timeout,
        canonical: None,
    };
    attempt_targets(ctx, &st.targets[route_idx]).await
}

/// Everything one request's attempts share.
struct Ctx<'a> {
    st: &'a AppState,
    format: ApiFormat,
    rid: &'a RequestId,
    headers: &'a HeaderMap,
    bytes: &'a Bytes,
    env: &'a Envelope<'a>,
    route: &'a Route,
    started: Instant,
    deadline: Instant,
    /// The request in canonical form, decoded on the first target that needs translation.
    canonical: Option<Result<ChatRequest, TranslateError>>,
}

/// An upstream request body ready to send.
struct Prepared {
    body: Vec<u8>,
    /// Fields the target cannot honour, for `x-ballast-warning`.
    warnings: Vec<String>,
    /// The target speaks another format than the client: the answer is translated back.
    translated: bool,
    include_usage: bool,
}

async fn attempt_targets(
    mut ctx: Ctx<'_>,
    targets: &[PreparedTarget],
) -> Result<Response, EdgeError> {
    let mut failures: Vec<(&PreparedTarget, Failure)> = Vec::new();
    let mut attempts = 0u32;
    for target in targets {
        let prepared = match prepare(&mut ctx, target) {
            Ok(p) => p,
            Err(f) => {
                tracing::info!(
                    request_id = ctx.rid.as_str(),
                    target = target.label.as_str(),
                    "target skipped: {f}"
                );
                failures.push((target, f));
                continue;
            }
        };
        attempts += 1;
        let failure = match attempt(&ctx, target, prepared, attempts).await {
            Ok(r) => return Ok(r),
            Err(f) => f,
        };
        let provider = &ctx.st.providers[target.provider];
        tracing::warn!(
            request_id = ctx.rid.as_str(),
            route = ctx.route.name.as_str(),
            target = target.label.as_str(),
            "attempt failed: {failure}"
        );
        if !failure.falls_over() {
            let same_format = provider.format == ctx.format;
            return Err(upstream_client_error(
                ctx.format,
                ctx.rid,
                target,
                failure,
                same_format,
            ));
        }
        if let Failure::Status {
            status: 401 | 403, ..
        } = failure
        {
            tracing::error!(
                request_id = ctx.rid.as_str(),
                target = target.label.as_str(),
                "provider {} rejected Ballast's credentials: check providers.{}.api_key",
                provider.name,
                provider.name
            );
        }
        failures.push((target, failure));
    }
    Err(all_failed(ctx.format, ctx.rid, &ctx.route.name, failures))
}

/// Builds the body for `target`: the fast path when it speaks the client's format, else a translation
/// of the canonical request. An error means this target cannot serve this request.
fn prepare(ctx: &mut Ctx<'_>, target: &PreparedTarget) -> Result<Prepared, Failure> {
    let provider = &ctx.st.providers[target.provider];
    if provider.format == ctx.format {
        let mut body = Vec::with_capacity(ctx.bytes.len() + target.model.len() + 16);
        let model = (ctx.format != ApiFormat::Gemini).then_some(target.model.as_str());
        ctx.env.write_with_model(model, &mut body);
        return Ok(Prepared {
            body,
            warnings: Vec::new(),
            translated: false,
            include_usage: false,
        });
    }
    let (format, bytes, stream) = (ctx.format, ctx.bytes, ctx.env.stream());
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
    let encoded = translate::encode_request(provider.format, req, &opts)
        .map_err(|e| Failure::untranslatable(&e))?;
    Ok(Prepared {
        body: encoded.body,
        warnings: encoded.warnings,
        translated: true,
        include_usage: req.include_usage,
    })
}

/// One attempt at one target: send, and on 2xx build the client's response (streamed or whole).
async fn attempt(
    ctx: &Ctx<'_>,
    target: &PreparedTarget,
    prepared: Prepared,
    attempts: u32,
) -> Result<Response, Failure> {
    let st = ctx.st;
    let provider = &st.providers[target.provider];
    let stream = ctx.env.stream();
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
    let req = st
        .client
        .post(url.clone())
        .headers(upstream_headers)
        .body(prepared.body);
    let timeout = st.config.server.request_timeout;
    let resp = match tokio::time::timeout_at(ctx.deadline, req.send()).await {
        Err(_) => return Err(Failure::Timeout(timeout)),
        Ok(Err(e)) => return Err(Failure::from_reqwest(&e)),
        Ok(Ok(resp)) if !resp.status().is_success() => {
            return Err(status_failure(resp, ctx.deadline).await);
        }
        Ok(Ok(resp)) => resp,
    };
    let outcome = Outcome {
        request_id: ctx.rid.0.clone(),
        route: ctx.route.name.clone(),
        target: target.label.clone(),
        started: ctx.started,
        attempts,
        ttft: None,
    };
    let status = resp.status();
    let upstream_type = resp.headers().get(http::header::CONTENT_TYPE).cloned();
    let mut r = if stream {
        let translator = prepared.translated.then(|| {
            StreamTranslator::new(
                provider.format,
                ctx.format,
                StreamOptions {
                    model: target.model.clone(),
                    include_usage: prepared.include_usage,
                },
            )
        });
        let body = ObservedStream::new(
            Box::pin(resp.bytes_stream()),
            provider.format,
            ctx.format,
            translator,
            ctx.deadline,
            outcome,
        );
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
        let body = match tokio::time::timeout_at(
            ctx.deadline,
            upstream::read_body(resp, MAX_UPSTREAM_BODY),
        )
        .await
        {
            Err(_) => return Err(Failure::Timeout(timeout)),
            Ok(Err(f)) => return Err(f),
            Ok(Ok(body)) => body,
        };
        outcome.finish_body(&observe_body(provider.format, &body));
        let body = if prepared.translated {
            let answer = translate::decode_response(provider.format, &body)
                .map_err(|e| Failure::BadResponse(e.to_string()))?;
            Bytes::from(translate::encode_response(
                ctx.format,
                &answer,
                &target.model,
            ))
        } else {
            body
        };
        let mut r = Response::new(Body::from(body));
        let ct = if prepared.translated {
            None
        } else {
            upstream_type
        };
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            ct.unwrap_or_else(|| HeaderValue::from_static("application/json")),
        );
        r
    };
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(X_BALLAST_ROUTE.clone(), target_header(&ctx.route.name));
    h.insert(X_BALLAST_TARGET.clone(), target_header(&target.label));
    h.insert(X_BALLAST_ATTEMPTS.clone(), HeaderValue::from(attempts));
    if !prepared.warnings.is_empty()
        && let Ok(v) = HeaderValue::from_str(&prepared.warnings.join("; "))
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

async fn status_failure(resp: reqwest::Response, deadline: Instant) -> Failure {
    let status = resp.status().as_u16();
    let retry_after = resp.headers().get(http::header::RETRY_AFTER).cloned();
    let body =
        match tokio::time::timeout_at(deadline, upstream::read_body(resp, MAX_ERROR_BODY)).await {
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
    e.retry_after = retry_after;
    // Same format: the upstream's own error body is already what this client's SDK expects.
    e.passthrough = (same_format && !body.is_empty()).then_some(body);
    e
}

/// Every target failed: one error naming each target and its cause. A single failure keeps its own
/// kind (an upstream 529 stays 529, a refused connection is 502, a timeout 504); several give 503.
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
        .filter(|f| !matches!(f, Failure::Untranslatable { .. }))
        .collect();
    if attempted.is_empty() {
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
        return EdgeError::new(
            format,
            rid.as_str(),
            ClientError::new(ErrorKind::InvalidRequest, message).with_param(param),
        );
    }
    let (kind, status, retry_after) = match attempted.as_slice() {
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
            retry_after.clone(),
        ),
        [Failure::Connect(_) | Failure::Transport(_) | Failure::BadResponse(_)] => {
            (ErrorKind::BadGateway, 502, None)
        }
        [Failure::Timeout(_)] => (ErrorKind::Timeout, 504, None),
        all if !all.is_empty() && all.iter().all(|f| matches!(f, Failure::Timeout(_))) => {
            (ErrorKind::Timeout, 504, None)
        }
        _ => (
            ErrorKind::Unavailable,
            503,
            Some(HeaderValue::from_static("1")),
        ),
    };
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
    e
}

/// What is logged about one answered request: who answered, how fast, how many tokens — no content.
pub struct Outcome {
    request_id: Arc<str>,
    route: String,
    pub target: String,
    started: Instant,
    attempts: u32,
    ttft: Option<Duration>,
}

impl Outcome {
    pub fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.started.elapsed());
        }
    }

    fn log(&self, obs: &Observation, stream: bool, error: Option<&str>) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let latency_ms = ms(self.started.elapsed());
        let ttft_ms = self.ttft.map(ms);
        let u = &obs.usage;
        match error {
            None => tracing::info!(
                request_id = &*self.request_id,
                route = self.route.as_str(),
                target = self.target.as_str(),
                attempts = self.attempts,
                stream,
                latency_ms,
                ttft_ms,
                input_tokens = u.input_tokens,
                output_tokens = u.output_tokens,
                stop_reason = obs.stop_reason.as_deref(),
                malformed_events = obs.malformed_events,
                "answered"
            ),
            Some(e) => tracing::warn!(
                request_id = &*self.request_id,
                route = self.route.as_str(),
                target = self.target.as_str(),
                attempts = self.attempts,
                stream,
                latency_ms,
                ttft_ms,
                output_tokens = u.output_tokens,
                "stream failed after it started: {e}"
            ),
        }
    }

    pub fn finish_body(self, obs: &Observation) {
        self.log(obs, false, None);
    }

    pub fn finish_stream(self, obs: &Observation, error: Option<&str>) {
        self.log(obs, true, error);
    }

    pub fn client_gone(self, obs: &Observation) {
        tracing::info!(
            request_id = &*self.request_id,
            route = self.route.as_str(),
            target = self.target.as_str(),
            output_tokens = obs.usage.output_tokens,
            "client disconnected before the stream ended"
        );
    }
}
