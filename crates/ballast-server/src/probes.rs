//! Probes: a tiny synthetic request per target ("reply with the single word: pong", a few output
//! tokens, in the target's own API) when its live traffic has given no evidence for an interval
//! (jittered), so an idle target that goes down is seen within one interval and an ejected one is
//! re-admitted by evidence. Capped per target per day; counted apart from client traffic.
//!
//! A failed probe is confirmed at once, up to the failures in a row that open a hard-failure
//! incident. A target out of rotation (ejected, or its breaker open) is probed every
//! [`RECOVERY_EVERY`] whatever its traffic, and nothing more: that is all a dead provider gets from
//! probes. Each answered probe is evidence of recovery: it counts towards clearing the incident,
//! and it ends an open breaker's cool-down so the next client request is its half-open trial.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::model::{ChatRequest, Message, Part, Role};
use ballast_core::observe::observe_body;
use ballast_core::record::{AttemptRecord, AttemptResult};
use ballast_core::translate::{self, EncodeOptions};

use crate::incidents::HARD_FAILURES;
use crate::runtime::lock;
use crate::state::AppState;
use crate::upstream::{Failure, UpstreamRequest, Url, read_body};

/// How often due probes are looked for.
const TICK: Duration = Duration::from_millis(250);
/// How often a target out of rotation is probed (at most: `[probes] interval` when shorter): the
/// longest a recovered provider waits for the evidence that lets it back, and, during an outage,
/// 12 tiny requests a minute.
const RECOVERY_EVERY: Duration = Duration::from_secs(5);
/// One probe's time limit.
const PROBE_TIMEOUT: Duration = Duration::from_secs(15);
/// Output tokens a probe asks for.
const PROBE_TOKENS: u32 = 5;

/// What is needed to probe one target (its first appearance in the routes).
struct ProbeTarget {
    state: usize,
    provider: usize,
    format: ApiFormat,
    url: Url,
    body: Bytes,
    busy: AtomicBool,
    /// Probes failed in a row. The first few are confirmed at once, so an idle target that died is
    /// seen within an interval.
    failed_in_row: AtomicU32,
}

fn probe_request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text("Reply with the single word: pong".to_owned())],
        }],
        max_tokens: Some(PROBE_TOKENS),
        ..ChatRequest::default()
    }
}

fn targets(st: &AppState) -> Vec<ProbeTarget> {
    let req = probe_request();
    let mut seen = vec![false; st.runtime.targets.len()];
    let mut out = Vec::new();
    for t in st.targets.iter().flatten() {
        if seen.get(t.state).copied().unwrap_or(true) {
            continue;
        }
        if let Some(s) = seen.get_mut(t.state) {
            *s = true;
        }
        let format = st.providers[t.provider].format;
        let opts = EncodeOptions {
            upstream_model: &t.model,
            default_max_tokens: PROBE_TOKENS,
            rules: t.rules,
        };
        let Ok(encoded) = translate::encode_request(format, &req, &opts) else {
            continue;
        };
        out.push(ProbeTarget {
            state: t.state,
            provider: t.provider,
            format,
            url: t.url.clone(),
            body: Bytes::from(encoded.body),
            busy: AtomicBool::new(false),
            failed_in_row: AtomicU32::new(0),
        });
    }
    out
}

/// The probe loop: ends when `stop` fires.
pub async fn run(st: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let mut st = st;
    // Probes follow the configuration serving: a new one probes its own targets (their schedules
    // start over).
    while let Some(next) = run_generation(st, &mut stop).await {
        st = next;
    }
}

/// Probes `st`'s targets until the gateway serves another configuration (returned) or stops.
async fn run_generation(
    st: Arc<AppState>,
    stop: &mut tokio::sync::watch::Receiver<bool>,
) -> Option<Arc<AppState>> {
    let settings = st.config.probes;
    if settings.interval.is_zero() {
        // Nothing to send for this one; wait for the next configuration or the end.
        let mut every = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                _ = every.tick() => {}
                _ = stop.changed() => return None,
            }
            let latest = st.latest();
            if !Arc::ptr_eq(&latest, &st) {
                return Some(latest);
            }
        }
    }
    let targets: Arc<Vec<ProbeTarget>> = Arc::new(targets(&st));
    let mut rng = fastrand::Rng::with_seed(0x0b0b);
    // Per target: the next time it is due if nothing else is heard from it, and today's count.
    let start = Instant::now();
    let mut due: Vec<Instant> = targets
        .iter()
        .map(|_| start + jitter(settings.interval, &mut rng))
        .collect();
    let mut day_start = start;
    let mut today = vec![0u32; targets.len()];
    // Per target: when its last probe went out, and since when it has been out of rotation.
    let mut last_sent: Vec<Option<Instant>> = vec![None; targets.len()];
    let mut out_since: Vec<Option<Instant>> = vec![None; targets.len()];
    let recovery_every = settings.interval.min(RECOVERY_EVERY);
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return None,
        }
        let latest = st.latest();
        if !Arc::ptr_eq(&latest, &st) {
            return Some(latest);
        }
        let now = Instant::now();
        if now.duration_since(day_start) >= Duration::from_secs(86_400) {
            day_start = now;
            today.iter_mut().for_each(|n| *n = 0);
        }
        for (i, t) in targets.iter().enumerate() {
            if t.busy.load(Ordering::Relaxed) {
                continue;
            }
            let (Some(due_at), Some(sent_at), Some(out), Some(count)) = (
                due.get_mut(i),
                last_sent.get_mut(i),
                out_since.get_mut(i),
                today.get_mut(i),
            ) else {
                continue;
            };
            if out_of_rotation(&st, t.state, now) {
                // Looking for recovery: `recovery_every` after it left the rotation or after the last
                // probe, whatever the client traffic (an ejected target's failing trials say
                // nothing new).
                let since = *out.get_or_insert(now);
                *due_at = sent_at.map_or(since, |s| s.max(since)) + recovery_every;
            } else {
                *out = None;
                let failed = t.failed_in_row.load(Ordering::Relaxed);
                if (1..HARD_FAILURES).contains(&failed) {
                    // Confirming a failure: at once (one tick later), so a dead target fails the
                    // five in a row that open a hard-failure incident within about a second.
                    *due_at = now;
                } else if let Some(heard) = st.telemetry.incidents.last_evidence(t.state)
                    && heard + settings.interval > *due_at
                {
                    // Live traffic is evidence enough: push the probe back.
                    *due_at = heard + jitter(settings.interval, &mut rng);
                    continue;
                }
            }
            if *due_at > now || *count >= settings.max_per_day {
                continue;
            }
            if st.runtime.targets[t.state].disabled.load(Ordering::Relaxed)
                || st.runtime.provider_disabled[t.provider].load(Ordering::Relaxed)
            {
                continue;
            }
            *count = count.saturating_add(1);
            *sent_at = Some(now);
            *due_at = now + jitter(settings.interval, &mut rng);
            t.busy.store(true, Ordering::Relaxed);
            let (st, targets) = (st.clone(), targets.clone());
            // Bounded: one probe per target at a time, each under PROBE_TIMEOUT; ends with the loop's
            // runtime.
            tokio::spawn(async move {
                if let Some(t) = targets.get(i) {
                    probe(&st, t).await;
                    t.busy.store(false, Ordering::Relaxed);
                }
            });
        }
    }
}

/// Whether client traffic goes around `target` now: an open incident ejects it, or its breaker
/// opened (an operator's forced state is not a failure to recover from).
fn out_of_rotation(st: &AppState, target: usize, now: Instant) -> bool {
    st.telemetry.incidents.ejected(target)
        || st.runtime.targets.get(target).is_some_and(|ts| {
            let b = lock(&ts.breaker).snapshot(now);
            b.state == ballast_core::policy::State::Open && b.forced.is_none()
        })
}

/// `interval` ± 20%.
fn jitter(interval: Duration, rng: &mut fastrand::Rng) -> Duration {
    interval.mul_f64(0.8 + 0.4 * rng.f64())
}

async fn probe(st: &AppState, t: &ProbeTarget) {
    let started = Instant::now();
    let req = UpstreamRequest {
        url: t.url.clone(),
        headers: st.providers[t.provider].headers.clone(),
        body: t.body.clone(),
    };
    let result = tokio::time::timeout(PROBE_TIMEOUT, async {
        let resp = st.transport.send(req).await?;
        let status = resp.status;
        let body = read_body(resp, 1 << 20, &mut st.runtime.buffered.reserve()).await?;
        if !status.is_success() {
            return Err(Failure::Status {
                status: status.as_u16(),
                message: None,
                retry_after: None,
                body: Bytes::new(),
            });
        }
        let obs = observe_body(t.format, &body);
        if obs.done && obs.error.is_none() {
            Ok(())
        } else {
            Err(Failure::BadResponse("not an answer".to_owned()))
        }
    })
    .await;
    let result = match result {
        Ok(Ok(())) => AttemptResult::Answered,
        Ok(Err(f)) => f.attempt_result().unwrap_or(AttemptResult::BadResponse),
        Err(_) => AttemptResult::Timeout,
    };
    match result.health() {
        Some(true) => {
            t.failed_in_row.fetch_add(1, Ordering::Relaxed);
        }
        Some(false) => {
            t.failed_in_row.store(0, Ordering::Relaxed);
            // The target answered a request sent after its breaker opened (if it did): no need to
            // wait out the cool-down, the next client request is its trial.
            if let Some(ts) = st.runtime.targets.get(t.state)
                && lock(&ts.breaker).vouch(Instant::now(), started)
            {
                tracing::info!(
                    target = ts.label.as_str(),
                    "probe answered: the circuit's cool-down ends, the next request is its trial"
                );
            }
        }
        None => {}
    }
    st.telemetry.probe(&AttemptRecord {
        target: t.state,
        result,
        duration: started.elapsed(),
        stream: false,
        trace: None,
    });
}
