//! Alert delivery: one message per incident opened and one per incident resolved, to each sink of
//! `[alerts]` (a generic JSON webhook, a Slack incoming webhook, PagerDuty Events API v2).
//!
//! The request path never waits on a sink: incidents hand their events to a bounded queue (a full
//! queue drops and counts), and one supervised background task — started by [`crate::serve`], drained
//! on shutdown — delivers them through the gateway's transport, each with a time limit and retried
//! with backoff. Messages carry target names, signals and numbers: never request or answer text.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use ballast_core::config::AlertSink;
use ballast_core::signal::{Evidence, Signal};

use crate::runtime::{lock, rfc3339};
use crate::upstream::{Transport, UpstreamRequest, Url};

/// Events waiting for delivery before new ones are dropped.
const QUEUE: usize = 1024;
/// One delivery attempt's time limit.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(5);
/// Waits between attempts at one sink (then the event is given up for that sink).
const BACKOFF: [Duration; 3] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
];
/// How long shutdown waits for queued events.
pub const DRAIN: Duration = Duration::from_secs(5);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertKind {
    Opened,
    Resolved,
}

/// An incident's change, as alerts tell it.
#[derive(Clone, Debug)]
pub struct AlertEvent {
    pub kind: AlertKind,
    pub incident: u64,
    pub target: String,
    pub signal: Signal,
    pub severity: &'static str,
    pub opened_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
    pub evidence: Evidence,
}

pub struct Alerts {
    sinks: Vec<AlertSink>,
    tx: mpsc::Sender<AlertEvent>,
    rx: Mutex<Option<mpsc::Receiver<AlertEvent>>>,
    dropped: AtomicU64,
}

impl Alerts {
    pub fn new(sinks: Vec<AlertSink>) -> Self {
        let (tx, rx) = mpsc::channel(QUEUE);
        Self {
            sinks,
            tx,
            rx: Mutex::new(Some(rx)),
            dropped: AtomicU64::new(0),
        }
    }

    /// Queues an event for every sink; never waits.
    pub fn send(&self, ev: AlertEvent) {
        if self.sinks.is_empty() {
            return;
        }
        if self.tx.try_send(ev).is_err() {
            let n = self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            tracing::warn!(dropped = n, "alert queue full: an alert was dropped");
        }
    }

    /// The delivery loop, once (the first caller gets it). It ends when `stop` fires, after
    /// delivering what is queued for at most [`DRAIN`].
    pub fn worker(
        &self,
        transport: std::sync::Arc<dyn Transport>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) -> Option<impl std::future::Future<Output = ()> + Send + 'static> {
        let mut rx = lock(&self.rx).take()?;
        let sinks = self.sinks.clone();
        Some(async move {
            loop {
                tokio::select! {
                    ev = rx.recv() => match ev {
                        Some(ev) => deliver_all(&*transport, &sinks, &ev).await,
                        None => return,
                    },
                    _ = stop.changed() => break,
                }
            }
            // Shutting down: what is queued still goes out, within the drain time.
            let drain = async {
                while let Ok(ev) = rx.try_recv() {
                    deliver_all(&*transport, &sinks, &ev).await;
                }
            };
            let _ = tokio::time::timeout(DRAIN, drain).await;
        })
    }
}

async fn deliver_all(transport: &dyn Transport, sinks: &[AlertSink], ev: &AlertEvent) {
    for sink in sinks {
        let (url, body) = message(sink, ev);
        let Ok(url) = Url::parse(&url) else { continue };
        let mut delivered = false;
        for (attempt, wait) in std::iter::once(Duration::ZERO).chain(BACKOFF).enumerate() {
            tokio::time::sleep(wait).await;
            let mut headers = HeaderMap::new();
            headers.insert(
                http::header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
            let req = UpstreamRequest {
                url: url.clone(),
                headers,
                body: Bytes::from(body.to_string()),
            };
            match tokio::time::timeout(ATTEMPT_TIMEOUT, transport.send(req)).await {
                Ok(Ok(resp)) if resp.status.is_success() => {
                    delivered = true;
                    break;
                }
                Ok(Ok(resp)) => tracing::debug!(
                    sink = sink_name(sink),
                    attempt,
                    status = resp.status.as_u16(),
                    "alert not accepted"
                ),
                Ok(Err(e)) => {
                    tracing::debug!(sink = sink_name(sink), attempt, "alert not sent: {e}")
                }
                Err(_) => tracing::debug!(sink = sink_name(sink), attempt, "alert timed out"),
            }
        }
        if !delivered {
            tracing::warn!(
                sink = sink_name(sink),
                incident = ev.incident,
                "could not deliver an alert after {} attempts",
                BACKOFF.len().saturating_add(1)
            );
        }
    }
}

fn sink_name(sink: &AlertSink) -> &'static str {
    match sink {
        AlertSink::Webhook { .. } => "webhook",
        AlertSink::Slack { .. } => "slack",
        AlertSink::PagerDuty { .. } => "pagerduty",
    }
}

fn evidence_json(e: &Evidence) -> Value {
    json!({
        "observed": e.observed,
        "baseline": e.baseline,
        "samples": e.samples,
        "score": e.score,
        "threshold": e.threshold,
    })
}

/// One line a person reads: what, where, and the numbers.
fn summary(ev: &AlertEvent) -> String {
    let e = &ev.evidence;
    let numbers = match ev.signal {
        Signal::Availability => format!(
            "failure ratio {:.1}% against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
        Signal::HardFailure => format!("{} consecutive failures", e.observed),
        Signal::Latency => format!(
            "time to first token {:.2}s against {:.2}s normal",
            e.observed, e.baseline
        ),
        Signal::EmptyAnswer => format!(
            "{:.1}% of answers end with no text, against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
        Signal::WrongScript => format!(
            "{:.1}% of answers have text in a script their prompt does not use, against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
        Signal::AnswerLength => format!(
            "typical answer length {:.0} characters against {:.0} normal",
            e.observed, e.baseline
        ),
        Signal::StopReason => format!(
            "{:.1}% of answers stop for another reason than a natural end (token limit, filter), against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
        Signal::Repetition => format!(
            "{:.1}% of answers repeat themselves, against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
        Signal::InvalidJson => format!(
            "{:.1}% of answers asked to be JSON are not valid JSON, against {:.2}% normal",
            e.observed * 100.0,
            e.baseline * 100.0
        ),
    };
    let what = match ev.kind {
        AlertKind::Opened => "opened",
        AlertKind::Resolved => "resolved",
    };
    format!(
        "Ballast incident #{} {what}: {} {} ({}) — {numbers}",
        ev.incident,
        ev.target,
        ev.signal.as_str(),
        ev.severity
    )
}

/// The URL and body of `ev` for `sink`.
fn message(sink: &AlertSink, ev: &AlertEvent) -> (String, Value) {
    match sink {
        AlertSink::Webhook { url } => (
            url.clone(),
            json!({
                "source": "ballast",
                "event": match ev.kind {
                    AlertKind::Opened => "incident.opened",
                    AlertKind::Resolved => "incident.resolved",
                },
                "summary": summary(ev),
                "incident": {
                    "id": ev.incident,
                    "target": ev.target,
                    "signal": ev.signal.as_str(),
                    "severity": ev.severity,
                    "opened_at": rfc3339(ev.opened_at),
                    "resolved_at": ev.resolved_at.map(rfc3339),
                    "evidence": evidence_json(&ev.evidence),
                },
            }),
        ),
        AlertSink::Slack { url } => (url.clone(), json!({ "text": summary(ev) })),
        AlertSink::PagerDuty { url, routing_key } => (
            url.clone(),
            json!({
                "routing_key": routing_key.expose(),
                "event_action": match ev.kind {
                    AlertKind::Opened => "trigger",
                    AlertKind::Resolved => "resolve",
                },
                "dedup_key": format!("ballast-incident-{}", ev.incident),
                "payload": {
                    "summary": summary(ev),
                    "source": "ballast",
                    "severity": ev.severity,
                    "component": ev.target,
                    "group": "ballast",
                    "class": ev.signal.as_str(),
                    "timestamp": rfc3339(ev.opened_at),
                    "custom_details": evidence_json(&ev.evidence),
                },
            }),
        ),
    }
}
