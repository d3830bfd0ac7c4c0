//! Continuing a stream that broke after part of its answer reached the client, on the route's next
//! eligible target (`ballast_core::continuation` holds the pure parts): the original request plus
//! the delivered text — as an assistant prefill where the target continues one, else followed by an
//! instruction to continue — held back until its first token like any stream, then joined to the
//! client's stream by an encoder of the client's format resumed where the client's stream stands.

use ballast_core::continuation::{ResumePoint, Splice, continuation_request};

use super::attempt::{Held, hold_until_first_token, status_failure};
use super::targets::{Admit, admit, withdraw_budget};
use super::*;

/// What a committed stream keeps so that, if it breaks, it can be continued elsewhere: the request's
/// bytes (decoded only then), the route, which targets were tried, and the request's deadline.
pub(crate) struct Resumer {
    st: Arc<AppState>,
    route_idx: usize,
    format: ApiFormat,
    body: Bytes,
    tried: Vec<bool>,
    deadline: Instant,
    scripts: ScriptSet,
    wants_json: bool,
    /// The target (live-state index) whose stream is being served: a continuation is paid from its
    /// retry budget.
    serving: usize,
    /// Upstream attempts made for the request so far.
    pub attempts: u32,
    /// Continuations so far.
    pub continued: u32,
}

/// A continuation that started: its stream held until its first token, the translator that joins
/// it to the client's stream, and the attempt's terms.
pub(crate) struct Continued {
    pub held: Held,
    pub translator: StreamTranslator,
    pub upstream_format: ApiFormat,
    pub label: String,
    pub target_state: usize,
    pub ticket: Admitted,
    pub slot: InFlight,
    pub attempt_started: Instant,
    /// When the continuation must be over, and which limit that is.
    pub end: Instant,
    pub end_kind: TimeoutKind,
    pub end_after: Duration,
}

impl Resumer {
    pub(super) fn new(ctx: &Ctx<'_>, tried: &[bool], serving: usize, attempts: u32) -> Box<Self> {
        Box::new(Self {
            st: ctx.st.clone(),
            route_idx: ctx.route_idx,
            format: ctx.format,
            body: ctx.bytes.clone(),
            tried: tried.to_vec(),
            deadline: ctx.deadline,
            scripts: ctx.scripts,
            wants_json: ctx.wants_json,
            serving,
            attempts,
            continued: 0,
        })
    }
}

/// Finds the next eligible target of the route (tier order; kill switches, incidents, breakers,
/// bulkheads and the retry budget as for any fallback) and starts the rest of the answer there.
/// The error says why no continuation could start.
pub(crate) async fn continue_stream(
    mut r: Box<Resumer>,
    rp: ResumePoint,
    request_id: Arc<str>,
) -> (Box<Resumer>, Result<Continued, String>) {
    let result = next_target(&mut r, &rp, &request_id).await;
    (r, result)
}

async fn next_target(
    r: &mut Resumer,
    rp: &ResumePoint,
    request_id: &str,
) -> Result<Continued, String> {
    let st = r.st.clone();
    let route = &st.config.routes[r.route_idx];
    let policy = &route.policy;
    let targets = &st.targets[r.route_idx];
    let mut req = translate::decode_request(r.format, &r.body)
        .map_err(|e| format!("the request cannot be continued elsewhere: {e}"))?;
    req.stream = true;
    let mut last = String::from("no other target of the route can serve");
    for tier in &route.tiers {
        for ti in tier.targets.clone() {
            if r.tried[ti] {
                continue;
            }
            r.tried[ti] = true;
            let target = &targets[ti];
            let (ticket, slot) = match admit(&st, policy, r.deadline, targets, ti, &r.tried) {
                Admit::Go(ticket, slot) => (ticket, slot),
                Admit::Skip(f) => {
                    last = format!("{}: {}", target.label, f.summary());
                    continue;
                }
                Admit::Stop(f) => return Err(f.summary()),
            };
            if !withdraw_budget(&st, r.serving, Instant::now()) {
                ticket.cancel();
                return Err("the retry budget is exhausted".to_owned());
            }
            match try_target(r, &req, rp, ti, ticket, slot, request_id).await {
                Ok(c) => return Ok(c),
                Err(f) => last = format!("{}: {}", target.label, f.summary()),
            }
        }
    }
    Err(last)
}

/// Asks one target for the rest of the answer: with a prefill where its rules say it continues one,
/// and at once without it if the target refuses the prefill (a 400).
async fn try_target(
    r: &mut Resumer,
    req: &ballast_core::model::ChatRequest,
    rp: &ResumePoint,
    ti: usize,
    ticket: Admitted,
    slot: InFlight,
    request_id: &str,
) -> Result<Continued, Failure> {
    let st = r.st.clone();
    let route = &st.config.routes[r.route_idx];
    let policy = &route.policy;
    let target = &st.targets[r.route_idx][ti];
    let provider = &st.providers[target.provider];
    let ts = &st.runtime.targets[target.state];
    let mut prefill = target.rules.prefill;
    let mut ticket = Some(ticket);
    loop {
        let (creq, trimmed) = continuation_request(req, &rp.text, prefill);
        let opts = EncodeOptions {
            upstream_model: &target.model,
            default_max_tokens: route.max_tokens,
            rules: target.rules,
        };
        let encoded = match translate::encode_request(provider.format, &creq, &opts) {
            // The client's headers went out with the first answer: a field this target would
            // drop could no longer be named in `x-ballast-warning`, so it does not continue.
            Ok(e) if !e.warnings.is_empty() => {
                if let Some(t) = ticket.take() {
                    t.cancel();
                }
                return Err(Failure::Untranslatable {
                    message: format!(
                        "it cannot honour the whole request ({})",
                        e.warnings.join("; ")
                    ),
                    param: None,
                    invalid: false,
                });
            }
            Ok(e) => e,
            Err(e) => {
                if let Some(t) = ticket.take() {
                    t.cancel();
                }
                return Err(Failure::untranslatable(&e));
            }
        };
        r.attempts = r.attempts.saturating_add(1);
        let started = Instant::now();
        let attempt_end = started + policy.attempt_timeout;
        let (end, end_kind, end_after) = if attempt_end < r.deadline {
            (attempt_end, TimeoutKind::Attempt, policy.attempt_timeout)
        } else {
            (r.deadline, TimeoutKind::Deadline, policy.deadline)
        };
        let first = (started + policy.first_token_timeout).min(end);
        let too_late = || Failure::Timeout(TimeoutKind::FirstToken, policy.first_token_timeout);
        let upstream_req = upstream::UpstreamRequest {
            url: target.url_stream.clone(),
            headers: st.providers[target.provider].headers.clone(),
            body: Bytes::from(encoded.body),
        };
        let sent = tokio::time::timeout_at(first, st.transport.send(upstream_req)).await;
        if let Ok(Ok(resp)) = &sent {
            st.observe_capacity(target.state, &resp.headers);
        }
        let failure = match sent {
            Err(_) => too_late(),
            Ok(Err(f)) => f,
            Ok(Ok(resp)) if !resp.status.is_success() => {
                status_failure(resp, first, &st.runtime.buffered).await
            }
            Ok(Ok(resp)) => {
                let observer = StreamObserver::new(provider.format)
                    .with_max_event_bytes(st.config.limits.max_event_bytes)
                    .with_scripts(r.scripts)
                    .with_json_check(r.wants_json);
                match hold_until_first_token(&st, observer, resp.body, first, too_late()).await {
                    Ok(held) => {
                        st.telemetry.attempt(&AttemptRecord {
                            target: target.state,
                            result: AttemptResult::Answered,
                            duration: started.elapsed(),
                            stream: true,
                            trace: None,
                        });
                        lock(&ts.ewma).observe(Instant::now(), started.elapsed());
                        let limits = &st.config.limits;
                        let encoder = StreamEncoder::resume(
                            r.format,
                            StreamOptions {
                                model: target.model.clone(),
                                include_usage: req.include_usage,
                            },
                            rp,
                        )
                        .for_request(req);
                        let translator = StreamTranslator::continuation(
                            provider.format,
                            encoder,
                            Splice::new(rp, trimmed),
                        )
                        .with_limits(StreamLimits {
                            max_tool_args_bytes: limits.max_tool_args_bytes,
                            max_event_bytes: limits.max_event_bytes,
                            max_answer_bytes: limits.max_answer_bytes,
                            ..StreamLimits::default()
                        });
                        r.serving = target.state;
                        r.continued = r.continued.saturating_add(1);
                        let ticket = match ticket.take() {
                            Some(t) => t,
                            // The ticket is only taken here or on failure: never missing.
                            None => return Err(Failure::Local("no breaker admission".to_owned())),
                        };
                        return Ok(Continued {
                            held,
                            translator,
                            upstream_format: provider.format,
                            label: target.label.clone(),
                            target_state: target.state,
                            ticket,
                            slot,
                            attempt_started: started,
                            end,
                            end_kind,
                            end_after,
                        });
                    }
                    Err(f) => f,
                }
            }
        };
        let now = Instant::now();
        // A target that refuses the prefill is asked again at once without it; the refusal says
        // nothing of its health and never reaches the client.
        if prefill && matches!(failure, Failure::Status { status: 400, .. }) {
            tracing::info!(
                request_id,
                target = target.label.as_str(),
                "the target refused the prefill; continuing with an instruction instead"
            );
            prefill = false;
            continue;
        }
        if failure.attempt_result() == Some(AttemptResult::RateLimited) {
            ts.note_rate_limit(now, failure.retry_after());
        }
        if let Some(result) = failure.attempt_result() {
            st.telemetry.attempt(&AttemptRecord {
                target: target.state,
                result,
                duration: now.duration_since(started),
                stream: true,
                trace: None,
            });
        }
        if let Some(t) = ticket.take() {
            if failure.trips_breaker() {
                t.record(false, "failures");
            } else {
                t.cancel();
            }
        }
        return Err(failure);
    }
}
