//! Probes: a tiny synthetic request per target ("reply with the single word: pong", a few output
//! tokens, in the target's own API) when its live traffic has given no evidence for an interval
//! (jittered), so an idle target that goes down is seen within one interval and an ejected one is
//! re-admitted by evidence. Capped per target per day; counted apart from client traffic.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::model::{ChatRequest, Message, Part, Role};
use ballast_core::observe::observe_body;
use ballast_core::record::{AttemptRecord, AttemptResult};
use ballast_core::translate::{self, EncodeOptions};

use crate::state::AppState;
use crate::upstream::{Failure, UpstreamRequest, Url, read_body};

/// How often due probes are looked for.
const TICK: Duration = Duration::from_millis(250);
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
    /// The last probe failed: confirm soon, so an idle target that died is seen within an interval.
    confirm: AtomicBool,
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
            confirm: AtomicBool::new(false),
        });
    }
    out
}

/// The probe loop: ends when `stop` fires.
pub async fn run(st: Arc<AppState>, mut stop: tokio::sync::watch::Receiver<bool>) {
    let settings = st.config.probes;
    if settings.interval.is_zero() {
        return;
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
    let mut tick = tokio::time::interval(TICK);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.changed() => return,
        }
        let now = Instant::now();
        if now.duration_since(day_start) >= Duration::from_secs(86_400) {
            day_start = now;
            today.iter_mut().for_each(|n| *n = 0);
        }
        for (i, t) in targets.iter().enumerate() {
            // After a failed probe, the next goes out at once (one tick later): a dead target
            // fails the five in a row that open a hard-failure incident within about a second.
            let confirming = t.confirm.swap(false, Ordering::Relaxed);
            if confirming && let Some(d) = due.get_mut(i) {
                *d = now;
            }
            let heard = st.telemetry.incidents.last_evidence(t.state);
            let next = due.get(i).copied().unwrap_or(now);
            // Live traffic is evidence enough: push the probe back.
            if !confirming
                && let Some(heard) = heard
                && heard + settings.interval > next
            {
                if let Some(d) = due.get_mut(i) {
                    *d = heard + jitter(settings.interval, &mut rng);
                }
                continue;
            }
            let count = today.get(i).copied().unwrap_or(u32::MAX);
            if next > now || count >= settings.max_per_day || t.busy.load(Ordering::Relaxed) {
                continue;
            }
            if st.runtime.targets[t.state].disabled.load(Ordering::Relaxed)
                || st.runtime.provider_disabled[t.provider].load(Ordering::Relaxed)
            {
                continue;
            }
            if let Some(n) = today.get_mut(i) {
                *n = n.saturating_add(1);
            }
            if let Some(d) = due.get_mut(i) {
                *d = now + jitter(settings.interval, &mut rng);
            }
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
    if result.health() == Some(true) {
        t.confirm.store(true, Ordering::Relaxed);
    }
    st.telemetry.probe(&AttemptRecord {
        target: t.state,
        result,
        duration: started.elapsed(),
        stream: false,
        trace: None,
    });
}
