//! Choosing and trying a route's targets: pick the next one of a tier (health, ejection, balancing),
//! admit it (kill switch, breaker, bulkhead, retry budget), prepare its body, and run attempts with
//! retries and backoff until one answers or the route is spent.

use super::*;

/// Picks the next untried target of a tier, preferring healthy ones (not disabled, breaker not open);
/// once only unhealthy ones are left, returns them in order so the error can name them. `None` when
/// the tier is spent.
pub(super) fn pick(
    ctx: &Ctx<'_>,
    targets: &[PreparedTarget],
    tier: &Tier,
    tried: &[bool],
) -> Option<usize> {
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

/// Whether a target may be tried now, and on what terms.
pub(super) enum Admit {
    /// Yes: its breaker ticket and its in-flight slot.
    Go(Admitted, InFlight),
    /// Not this one; the route moves on.
    Skip(Failure),
    /// Not this one, and no other either (the request is out of time).
    Stop(Failure),
}

/// The checks before an attempt, in order: the operators' kill switches, an open incident (while
/// another target can serve), the request's remaining time, the breaker, the target's bulkhead.
pub(super) fn admit(
    st: &Arc<AppState>,
    policy: &Policy,
    deadline: Instant,
    targets: &[PreparedTarget],
    ti: usize,
    tried: &[bool],
) -> Admit {
    let rt = &st.runtime;
    let target = &targets[ti];
    let ts = &rt.targets[target.state];
    if rt.provider_disabled[target.provider].load(Ordering::Relaxed)
        || ts.disabled.load(Ordering::Relaxed)
    {
        return Admit::Skip(skipped("disabled by an operator", None));
    }
    let now = Instant::now();
    // An open availability incident routes around the target while another one can serve (it
    // still gets a trial request now and then, so its recovery can be seen).
    if st.config.signal.eject
        && st.telemetry.incidents.avoid(target.state, now)
        && healthy_target_ahead(st, targets, tried)
    {
        return Admit::Skip(skipped(
            "ejected: an availability incident is open",
            Some(Duration::from_secs(1)),
        ));
    }
    // A provider that asked for less traffic (429) gets none until its `retry-after` while
    // another target can serve.
    if let Some(until) = ts.rate_limited(now)
        && healthy_target_ahead(st, targets, tried)
    {
        return Admit::Skip(skipped(
            "rate limited by the provider (429): paused for its retry-after",
            Some(until.saturating_duration_since(now)),
        ));
    }
    if deadline.saturating_duration_since(now) < MIN_ATTEMPT_TIME {
        return Admit::Stop(Failure::OutOfTime);
    }
    let ticket = match lock(&ts.breaker).admit(now) {
        Admission::Allowed(t) | Admission::Trial(t) => t,
        Admission::Rejected { open_since, until } => {
            let since = crate::runtime::wall_clock(now, open_since);
            return Admit::Skip(skipped(
                format!("circuit open since {since}"),
                Some(until.saturating_duration_since(now)),
            ));
        }
        Admission::ForcedOpen { .. } => {
            return Admit::Skip(skipped("circuit forced open by an operator", None));
        }
    };
    let ticket = Admitted::new(st, target.state, ticket);
    match InFlight::target(st, target.state, policy.max_in_flight_per_target) {
        Some(slot) => Admit::Go(ticket, slot),
        None => Admit::Skip(skipped(
            "at capacity (policy.max_in_flight_per_target)",
            Some(Duration::from_secs(1)),
        )),
    }
}

/// Tries the route's targets tier by tier until one answers: each admitted, its body prepared, its
/// first attempt counted by the budgets (a fallback paid from the failed target's), then retried
/// with backoff while the failure allows and the budgets pay. The answer, or the route's error.
pub(super) async fn attempt_targets(
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
            let (ticket, slot) = match admit(st, ctx.policy, ctx.deadline, targets, ti, &tried) {
                Admit::Go(ticket, slot) => (ticket, slot),
                Admit::Skip(f) => {
                    failures.push((target, f));
                    continue;
                }
                Admit::Stop(f) => {
                    failures.push((target, f));
                    break 'tiers;
                }
            };
            let mut ticket = Some(ticket);
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
                    Tally {
                        attempts,
                        earlier_failures: failures.len(),
                        tried: &tried,
                    },
                    &mut ticket,
                    &mut slot,
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
                if failure.attempt_result() == Some(AttemptResult::RateLimited) {
                    ts.note_rate_limit(now, failure.retry_after());
                }
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
                        e.target = Some(target.state);
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

pub(super) fn skipped(reason: impl Into<String>, retry_in: Option<Duration>) -> Failure {
    Failure::Skipped {
        reason: reason.into(),
        retry_in,
    }
}

pub(super) fn withdraw_budget(st: &AppState, target: usize, now: Instant) -> bool {
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

pub(super) fn log_credentials(
    st: &AppState,
    rid: &RequestId,
    target: &PreparedTarget,
    failure: &Failure,
) {
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
pub(super) fn prepare(
    ctx: &mut Ctx<'_>,
    targets: &[PreparedTarget],
    ti: usize,
) -> Result<Prepared, Failure> {
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
        rules: target.rules,
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
pub(super) fn healthy_target_ahead(
    st: &AppState,
    targets: &[PreparedTarget],
    tried: &[bool],
) -> bool {
    let rt = &st.runtime;
    let now = Instant::now();
    targets.iter().zip(tried).any(|(t, &done)| {
        let ts = &rt.targets[t.state];
        !done
            && !ts.disabled.load(Ordering::Relaxed)
            && !rt.provider_disabled[t.provider].load(Ordering::Relaxed)
            && !st.telemetry.incidents.ejected(t.state)
            && ts.rate_limited(now).is_none()
            && lock(&ts.breaker).snapshot(now).state != ballast_core::policy::State::Open
    })
}

/// Whether a Responses target (the only kind that runs OpenAI's built-in tools) that could still
/// serve this request comes after target `ti`: enabled, and its breaker not open.
pub(super) fn responses_target_ahead(ctx: &Ctx<'_>, targets: &[PreparedTarget], ti: usize) -> bool {
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
