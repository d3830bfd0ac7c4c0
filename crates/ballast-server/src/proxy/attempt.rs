//! One upstream attempt under its timeouts: send, then either hold a stream back until its first
//! token (so a failure before it can still fall over) or read and check a whole answer, and commit
//! the answer to the client with the gateway's headers.

use ballast_core::observe::{Observation, observe_body_checked};

use super::*;

/// When an attempt must be over: its whole time ([`Clock::end`]: the attempt timeout or the
/// request's deadline, whichever comes first), and its time until the answer starts
/// ([`Clock::first`]: the first-token limit of a stream, the response limit of a whole answer).
struct Clock {
    started: Instant,
    end: Instant,
    end_kind: TimeoutKind,
    end_after: Duration,
    first: Instant,
    first_kind: TimeoutKind,
    first_after: Duration,
}

impl Clock {
    fn start(ctx: &Ctx<'_>) -> Self {
        let policy = ctx.policy;
        let started = Instant::now();
        let attempt_end = started + policy.attempt_timeout;
        let (end, end_kind, end_after) = if attempt_end < ctx.deadline {
            (attempt_end, TimeoutKind::Attempt, policy.attempt_timeout)
        } else {
            (ctx.deadline, TimeoutKind::Deadline, policy.deadline)
        };
        let (limit, kind) = if ctx.stream {
            (policy.first_token_timeout, TimeoutKind::FirstToken)
        } else {
            (policy.response_timeout, TimeoutKind::Response)
        };
        let at = started + limit;
        let (first, first_kind, first_after) = if at < end {
            (at, kind, limit)
        } else {
            (end, end_kind, end_after)
        };
        Self {
            started,
            end,
            end_kind,
            end_after,
            first,
            first_kind,
            first_after,
        }
    }

    /// The failure of an answer that did not start in time.
    fn too_late(&self) -> Failure {
        Failure::Timeout(self.first_kind, self.first_after)
    }
}

/// The upstream request of an attempt: the provider's headers, the client's that change what the
/// upstream does (same format only), and the attempt's `traceparent`.
fn upstream_request(
    ctx: &Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
) -> upstream::UpstreamRequest {
    let provider = &ctx.st.providers[target.provider];
    let mut headers = provider.headers.clone();
    if !prepared.translated {
        for name in forwarded_headers(ctx.format) {
            if let Some(v) = ctx.headers.get(*name) {
                headers.insert(*name, v.clone());
            }
        }
    }
    // The provider sees the attempt as the parent of its own work (W3C Trace Context).
    if let Some(span) = ctx.attempt_span
        && let Ok(v) = HeaderValue::from_str(&span.traceparent())
    {
        headers.insert(TRACEPARENT.clone(), v);
        if let Some(state) = ctx.headers.get(&TRACESTATE) {
            headers.insert(TRACESTATE.clone(), state.clone());
        }
    }
    upstream::UpstreamRequest {
        url: if ctx.stream {
            target.url_stream.clone()
        } else {
            target.url.clone()
        },
        headers,
        body: prepared.body.clone(),
    }
}

/// One attempt at one target: send under the attempt's time limits, and on success commit the answer
/// to the client (whole, or as a stream once its first token arrived).
/// Where the request stands when an attempt starts.
pub(super) struct Tally<'a> {
    /// Upstream attempts so far, this one included.
    pub attempts: u32,
    /// Targets that failed before this one.
    pub earlier_failures: usize,
    /// The route's targets tried so far (this one included).
    pub tried: &'a [bool],
}

pub(super) async fn attempt(
    ctx: &mut Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
    tally: Tally<'_>,
    ticket: &mut Option<Admitted>,
    slot: &mut Option<InFlight>,
) -> Result<Response, Failure> {
    let Tally {
        attempts,
        earlier_failures,
        tried,
    } = tally;
    let st = ctx.st;
    let req = upstream_request(ctx, target, prepared);
    let clock = Clock::start(ctx);
    let resp = match tokio::time::timeout_at(clock.first, st.transport.send(req)).await {
        Err(_) => return Err(clock.too_late()),
        Ok(Err(f)) => return Err(f),
        Ok(Ok(resp)) => resp,
    };
    // Every answer's head (a 429's too) says how much of the provider's limit is left.
    st.observe_capacity(target.state, &resp.headers);
    if !resp.status.is_success() {
        return Err(status_failure(resp, clock.end, &st.runtime.buffered).await);
    }
    let status = resp.status;
    // The upstream's content type goes to the client only when the bytes are the upstream's.
    let content_type = if prepared.translated {
        None
    } else {
        resp.headers.get(http::header::CONTENT_TYPE).cloned()
    };
    let mut outcome = Outcome {
        st: st.clone(),
        request_id: ctx.rid.0.clone(),
        route_idx: ctx.route_idx,
        api: ctx.format,
        fallback: earlier_failures > 0,
        target_state: target.state,
        started: ctx.started,
        attempt_started: clock.started,
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
    let mut r = if ctx.stream {
        let provider = &st.providers[target.provider];
        let observer = StreamObserver::new(provider.format)
            .with_max_event_bytes(st.config.limits.max_event_bytes)
            .with_scripts(ctx.scripts)
            .with_json_check(ctx.wants_json);
        // Complete-or-nothing: the whole stream is held to its clean end, so a failure anywhere
        // in it falls over like a failed request.
        let whole = (ctx.policy.stream_recovery == StreamRecovery::Complete).then_some(Whole {
            idle: ctx.policy.idle_timeout,
            end: clock.end,
            end_kind: clock.end_kind,
            end_after: clock.end_after,
        });
        let held = hold(
            st,
            observer,
            resp.body,
            clock.first,
            clock.too_late(),
            whole,
        )
        .await?;
        outcome.ticket = ticket.take();
        outcome.first_token();
        outcome.guards.extend(ctx.guard.take());
        outcome.guards.extend(slot.take());
        let continuation = (ctx.policy.stream_recovery == StreamRecovery::Continue).then(|| {
            let tools = ctx
                .env
                .field("tools")
                .is_some_and(|v| !matches!(v.trim(), "[]" | "null"));
            (
                Delivery::new(ctx.format, tools, st.config.limits.max_answer_bytes),
                Resumer::new(ctx, tried, target.state, attempts),
            )
        });
        let commit = Commit {
            held,
            outcome,
            content_type,
            continuation,
        };
        stream_response(ctx, target, prepared, commit, &clock)
    } else {
        let (body, observed) = whole_answer(ctx, target, prepared, resp, &clock).await?;
        outcome.ticket = ticket.take();
        outcome.finish_body(&observed);
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
    gateway_headers(&mut r, ctx, target, prepared, attempts, earlier_failures);
    Ok(r)
}

/// A stream's start, held back until its first token.
pub(crate) struct Held {
    pub observer: StreamObserver,
    pub prefix: Vec<Bytes>,
    pub held: crate::runtime::Reservation,
    pub inner: upstream::BodyStream,
}

/// Reads a stream until its first token, holding the chunks back: a stream that fails before that
/// falls over transparently, since the client has seen nothing yet. Bounded in time (`first`; past
/// it the attempt fails with `too_late`) and in bytes (`limits.max_first_token_bytes`, and the
/// gateway's buffer budget).
pub(crate) async fn hold_until_first_token(
    st: &AppState,
    observer: StreamObserver,
    inner: upstream::BodyStream,
    first: Instant,
    too_late: Failure,
) -> Result<Held, Failure> {
    hold(st, observer, inner, first, too_late, None).await
}

/// How long a whole stream may take when it is held to its end (`stream_recovery = "complete"`).
struct Whole {
    idle: Duration,
    end: Instant,
    /// Which limit `end` is, and its length.
    end_kind: TimeoutKind,
    end_after: Duration,
}

/// Reads a stream until its first token (`whole` absent) or to its clean end, holding the chunks.
async fn hold(
    st: &AppState,
    mut observer: StreamObserver,
    mut inner: upstream::BodyStream,
    first: Instant,
    too_late: Failure,
    whole: Option<Whole>,
) -> Result<Held, Failure> {
    let limits = &st.config.limits;
    let mut prefix = Vec::new();
    let mut prefix_bytes = 0usize;
    let mut held = st.runtime.buffered.reserve();
    let (cap, cap_name) = if whole.is_some() {
        (limits.max_answer_bytes, "limits.max_answer_bytes")
    } else {
        (limits.max_first_token_bytes, "limits.max_first_token_bytes")
    };
    let mut last_chunk = Instant::now();
    loop {
        let obs = observer.observation();
        let enough = match &whole {
            None => obs.first_token_seen || obs.done,
            Some(_) => obs.done,
        };
        if enough {
            break;
        }
        // Before the first token the first-token limit; after it (whole streams) the idle limit.
        let until = match &whole {
            Some(w) if obs.first_token_seen => (last_chunk + w.idle).min(w.end),
            _ => first,
        };
        let next = tokio::time::timeout_at(until, futures_util::StreamExt::next(&mut inner)).await;
        match next {
            Err(_) => {
                return Err(match &whole {
                    Some(w) if observer.observation().first_token_seen => {
                        if until >= w.end {
                            Failure::Timeout(w.end_kind, w.end_after)
                        } else {
                            Failure::Timeout(TimeoutKind::Idle, w.idle)
                        }
                    }
                    _ => too_late,
                });
            }
            Ok(Some(Ok(chunk))) => {
                last_chunk = Instant::now();
                // Held back: bounded in bytes, not only in time.
                prefix_bytes = prefix_bytes.saturating_add(chunk.len());
                if prefix_bytes > cap {
                    return Err(Failure::BadResponse(if whole.is_some() {
                        format!("the streamed answer is larger than {cap} bytes ({cap_name})")
                    } else {
                        format!(
                            "no first token in the first {cap} bytes of the stream ({cap_name})"
                        )
                    }));
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
            Ok(Some(Err(f))) => return Err(f),
            Ok(None) => {
                let cut = observer.finish();
                let obs = observer.observation();
                // A whole stream that ended cleanly with its stop reason but no sentinel is whole.
                if whole.is_some() && !cut && obs.stop_reason.is_some() && obs.error.is_none() {
                    break;
                }
                return Err(Failure::BadResponse(
                    if whole.is_some() && obs.first_token_seen {
                        "the stream ended before the answer was complete"
                    } else {
                        "the stream ended before its first token"
                    }
                    .to_owned(),
                ));
            }
        }
    }
    Ok(Held {
        observer,
        prefix,
        held,
        inner,
    })
}

/// The client's streaming response, committed: the held chunks, then the rest as it arrives
/// (translated when the target speaks another format), under the attempt's deadline.
/// What a stream is committed with: its held start, its outcome, the upstream's content type, and
/// what it needs to be continued elsewhere.
struct Commit {
    held: Held,
    outcome: Outcome,
    content_type: Option<HeaderValue>,
    continuation: Option<(Delivery, Box<Resumer>)>,
}

fn stream_response(
    ctx: &Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
    commit: Commit,
    clock: &Clock,
) -> Response {
    let Commit {
        held,
        outcome,
        content_type,
        continuation,
    } = commit;
    let st = ctx.st;
    let limits = &st.config.limits;
    let provider = &st.providers[target.provider];
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
        inner: held.inner,
        upstream_format: provider.format,
        client_format: ctx.format,
        observer: held.observer,
        prefix: held.prefix,
        translator,
        deadline: clock.end,
        deadline_kind: clock.end_kind,
        deadline_after: clock.end_after,
        idle: ctx.policy.idle_timeout,
        max_event_bytes: limits.max_event_bytes,
        held: held.held,
        chunk_timer: st
            .telemetry
            .chunk_timer(ctx.route_idx, target.state, ctx.format),
        outcome,
        continuation,
    });
    let mut r = Response::new(Body::from_stream(Coalesced::new(body)));
    let h = r.headers_mut();
    h.insert(
        http::header::CACHE_CONTROL,
        HeaderValue::from_static("no-cache"),
    );
    h.insert(
        http::header::CONTENT_TYPE,
        content_type.unwrap_or_else(|| HeaderValue::from_static("text/event-stream")),
    );
    r
}

/// Reads a whole answer within the response limit (a provider that trickles it is abandoned while
/// there is still time to fall over), checks it is an answer, and translates it when needed.
async fn whole_answer(
    ctx: &Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
    resp: upstream::UpstreamResponse,
    clock: &Clock,
) -> Result<(Bytes, Observation), Failure> {
    let st = ctx.st;
    let provider = &st.providers[target.provider];
    let mut held = st.runtime.buffered.reserve();
    let read = tokio::time::timeout_at(
        clock.first,
        upstream::read_body(resp, st.config.limits.max_answer_bytes, &mut held),
    )
    .await;
    let body = match read {
        Err(_) => return Err(clock.too_late()),
        Ok(Err(f)) => return Err(f),
        Ok(Ok(body)) => body,
    };
    if std::str::from_utf8(&body).is_err() {
        // JSON is UTF-8: an answer that is not cannot be what the client's SDK parses.
        return Err(Failure::BadResponse(
            "the answer is not valid UTF-8".to_owned(),
        ));
    }
    let observed = observe_body_checked(provider.format, &body, ctx.scripts, ctx.wants_json);
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
    if !prepared.translated {
        return Ok((body, observed));
    }
    let answer = translate::decode_response(provider.format, &body)
        .map_err(|e| Failure::BadResponse(e.to_string()))?;
    let body = match ctx.canonical.as_ref() {
        Some(Ok(req)) => translate::encode_response_for(ctx.format, &answer, &target.model, req),
        _ => translate::encode_response(ctx.format, &answer, &target.model),
    };
    Ok((Bytes::from(body), observed))
}

/// What the gateway says about how it answered: route, target, attempts, fallback, cache, warnings.
fn gateway_headers(
    r: &mut Response,
    ctx: &Ctx<'_>,
    target: &PreparedTarget,
    prepared: &Prepared,
    attempts: u32,
    earlier_failures: usize,
) {
    let h = r.headers_mut();
    h.insert(X_BALLAST_ROUTE.clone(), target.route_header.clone());
    h.insert(X_BALLAST_TARGET.clone(), target.label_header.clone());
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
}

pub(super) async fn status_failure(
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
