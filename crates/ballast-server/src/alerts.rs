//! Alert delivery: one message per incident opened and one per incident resolved, to each sink of
//! `[alerts]` (a generic JSON webhook, a Slack incoming webhook, PagerDuty Events API v2), and the
//! weekly digest (open incidents, overdue follow-ups, recurrences) to the webhook and Slack sinks.
//!
//! The request path never waits on a sink: incidents hand their events to a bounded queue (a full
//! queue drops and counts), and one supervised background task — started by [`crate::serve`], drained
//! on shutdown — delivers them through the gateway's transport, each with a time limit and retried
//! with backoff. Incident messages carry target names, signals and numbers: never request or answer
//! text; the digest also carries the operators' own follow-up text.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, HeaderValue};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use ballast_core::config::AlertSink;
use ballast_core::signal::{Evidence, Signal};

use crate::incidents::{RECURRENCE_WINDOW, evidence_json, ordinal, recurrence_json};
use crate::runtime::{lock, rfc3339};
use crate::state::AppState;
use crate::store::Recurrence;
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
    /// The earlier incidents of this signal on this target it repeats.
    pub recurrence: Option<Recurrence>,
}

/// What goes through the queue.
enum Message {
    Incident(AlertEvent),
    Digest(Box<Digest>),
}

/// The digest: what is still open, what is overdue, what keeps coming back.
#[derive(Clone, Debug)]
pub struct Digest {
    pub at: SystemTime,
    /// The start of the week it looks back over.
    pub since: SystemTime,
    /// Incidents opened in the week.
    pub opened: usize,
    pub open: Vec<DigestIncident>,
    pub overdue: Vec<DigestFollowup>,
    pub recurrences: Vec<DigestRecurrence>,
}

#[derive(Clone, Debug)]
pub struct DigestIncident {
    pub id: u64,
    pub target: String,
    pub signal: String,
    pub severity: String,
    pub opened_at: SystemTime,
    pub followups_open: usize,
    pub followups_overdue: usize,
    pub recurrence: Option<Recurrence>,
}

#[derive(Clone, Debug)]
pub struct DigestFollowup {
    pub id: u64,
    pub incident: u64,
    pub target: String,
    pub signal: String,
    pub text: String,
    pub owner: String,
    pub due: String,
    pub due_at: SystemTime,
}

/// A target and signal with incidents in the week that repeat earlier ones.
#[derive(Clone, Debug)]
pub struct DigestRecurrence {
    pub target: String,
    pub signal: String,
    /// Its incidents opened in the week, newest first.
    pub ids: Vec<u64>,
    pub last_at: SystemTime,
    /// The latest one's place in its 30-day series (3: the third in 30 days).
    pub in_30_days: u32,
}

/// Entries of each digest list a message shows (the counts cover them all).
const DIGEST_ITEMS: usize = 50;

impl Digest {
    pub fn to_json(&self) -> Value {
        let open: Vec<Value> = self
            .open
            .iter()
            .take(DIGEST_ITEMS)
            .map(|i| {
                json!({
                    "id": i.id,
                    "target": i.target,
                    "signal": i.signal,
                    "severity": i.severity,
                    "opened_at": rfc3339(i.opened_at),
                    "followups_open": i.followups_open,
                    "followups_overdue": i.followups_overdue,
                    "recurrence": i.recurrence.as_ref().map(recurrence_json),
                })
            })
            .collect();
        let overdue: Vec<Value> = self
            .overdue
            .iter()
            .take(DIGEST_ITEMS)
            .map(|f| {
                json!({
                    "id": f.id,
                    "incident": f.incident,
                    "target": f.target,
                    "signal": f.signal,
                    "text": f.text,
                    "owner": f.owner,
                    "due": f.due,
                    "days_overdue": days(self.at, f.due_at),
                })
            })
            .collect();
        let recurrences: Vec<Value> = self
            .recurrences
            .iter()
            .take(DIGEST_ITEMS)
            .map(|r| {
                json!({
                    "target": r.target,
                    "signal": r.signal,
                    "incidents": r.ids,
                    "count": r.ids.len(),
                    "last_at": rfc3339(r.last_at),
                    "in_30_days": r.in_30_days,
                })
            })
            .collect();
        json!({
            "at": rfc3339(self.at),
            "since": rfc3339(self.since),
            "opened": self.opened,
            "open_count": self.open.len(),
            "open": open,
            "overdue_count": self.overdue.len(),
            "overdue": overdue,
            "recurrence_count": self.recurrences.len(),
            "recurrences": recurrences,
        })
    }

    /// The digest as lines a person reads.
    pub fn text(&self) -> String {
        use std::fmt::Write as _;
        let mut out = format!(
            "Ballast weekly digest, {} to {}: {} incident{} opened, {} open, {} overdue follow-up{}, {} recurring.",
            day(self.since),
            day(self.at),
            self.opened,
            plural(self.opened),
            self.open.len(),
            self.overdue.len(),
            plural(self.overdue.len()),
            self.recurrences.len(),
        );
        if !self.open.is_empty() {
            out.push_str("\nOpen incidents:");
            for i in self.open.iter().take(DIGEST_ITEMS) {
                let _ = write!(
                    out,
                    "\n• #{} {} {} ({}) since {}",
                    i.id,
                    i.target,
                    i.signal,
                    i.severity,
                    rfc3339(i.opened_at)
                );
                if i.followups_open > 0 {
                    let _ = write!(
                        out,
                        ", {} open follow-up{} ({} overdue)",
                        i.followups_open,
                        plural(i.followups_open),
                        i.followups_overdue
                    );
                } else {
                    out.push_str(", no open follow-ups");
                }
            }
            more(&mut out, self.open.len());
        }
        if !self.overdue.is_empty() {
            out.push_str("\nOverdue follow-ups:");
            for f in self.overdue.iter().take(DIGEST_ITEMS) {
                let _ = write!(
                    out,
                    "\n• #{} on incident #{} ({} {}), owner {}, due {} ({} days overdue): {}",
                    f.id,
                    f.incident,
                    f.target,
                    f.signal,
                    f.owner,
                    f.due,
                    days(self.at, f.due_at),
                    one_line(&f.text, 200)
                );
            }
            more(&mut out, self.overdue.len());
        }
        if !self.recurrences.is_empty() {
            out.push_str("\nRecurring this week:");
            for r in self.recurrences.iter().take(DIGEST_ITEMS) {
                let ids: Vec<String> = r.ids.iter().map(|i| format!("#{i}")).collect();
                let _ = write!(
                    out,
                    "\n• {} {}: {} this week ({}), the latest the {} in {} days",
                    r.target,
                    r.signal,
                    r.ids.len(),
                    ids.join(", "),
                    ordinal(r.in_30_days),
                    RECURRENCE_WINDOW.as_secs() / 86_400
                );
            }
            more(&mut out, self.recurrences.len());
        }
        out
    }
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn more(out: &mut String, n: usize) {
    if n > DIGEST_ITEMS {
        out.push_str(&format!("\n… and {} more", n - DIGEST_ITEMS));
    }
}

/// Whole days from `due` to `at` (0 within the first day).
fn days(at: SystemTime, due: SystemTime) -> u64 {
    at.duration_since(due).map_or(0, |d| d.as_secs() / 86_400)
}

fn day(t: SystemTime) -> String {
    rfc3339(t).get(..10).unwrap_or_default().to_owned()
}

/// `s` on one line, at most `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max).collect();
    format!("{cut}…")
}

/// When the digest goes out: weekly (Mondays at 09:00 UTC) or never (`[alerts] digest`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DigestSchedule {
    Weekly,
    Off,
}

/// Mondays at 09:00 UTC, in seconds after the start of a Monday.
const DIGEST_AT: u64 = 9 * 3600;
const WEEK: u64 = 7 * 86_400;

impl DigestSchedule {
    /// The first digest time strictly after `after`.
    pub fn next_after(self, after: SystemTime) -> Option<SystemTime> {
        match self {
            Self::Off => None,
            Self::Weekly => {
                let secs = after.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
                // 1970-01-05 was a Monday.
                let monday = 4 * 86_400;
                let into = secs.saturating_sub(monday) % WEEK;
                let week_start = secs.saturating_sub(into);
                let mut next = week_start.saturating_add(DIGEST_AT);
                if next <= secs {
                    next = next.saturating_add(WEEK);
                }
                UNIX_EPOCH.checked_add(Duration::from_secs(next))
            }
        }
    }
}

/// Starts the digest task when there is a sink to send it to and the schedule is not off.
pub fn start_digest(
    state: &Arc<AppState>,
    stop: tokio::sync::watch::Receiver<bool>,
) -> Option<tokio::task::JoinHandle<()>> {
    let schedule = match state.config.alerts_digest {
        ballast_core::config::Digest::Off => DigestSchedule::Off,
        ballast_core::config::Digest::Weekly => DigestSchedule::Weekly,
    };
    if schedule == DigestSchedule::Off || !state.telemetry.incidents.alerts.digest_sinks() {
        return None;
    }
    Some(tokio::spawn(run_digest(state.clone(), schedule, stop)))
}

/// Sends the digest at every time of `schedule` until `stop`. The wait is measured on Tokio's clock
/// from the wall clock at each step, so paused-time tests drive it; each digest is as of its
/// scheduled time.
pub async fn run_digest(
    state: Arc<AppState>,
    schedule: DigestSchedule,
    mut stop: tokio::sync::watch::Receiver<bool>,
) {
    let mut last: Option<SystemTime> = None;
    loop {
        let now = SystemTime::now();
        let from = last.map_or(now, |l| l.max(now));
        let Some(slot) = schedule.next_after(from) else {
            return;
        };
        let wait = slot.duration_since(now).unwrap_or(Duration::ZERO);
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            _ = stop.changed() => return,
        }
        let t = &state.telemetry;
        let digest = t.incidents.digest(slot);
        tracing::info!(
            open = digest.open.len(),
            overdue = digest.overdue.len(),
            recurring = digest.recurrences.len(),
            "weekly digest queued"
        );
        t.incidents.alerts.send_digest(digest);
        last = Some(slot);
    }
}

pub struct Alerts {
    sinks: Vec<AlertSink>,
    tx: mpsc::Sender<Message>,
    rx: Mutex<Option<mpsc::Receiver<Message>>>,
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
        self.queue(Message::Incident(ev));
    }

    /// Whether any sink takes the digest (webhook and Slack do; PagerDuty pages, so it does not).
    pub fn digest_sinks(&self) -> bool {
        self.sinks
            .iter()
            .any(|s| !matches!(s, AlertSink::PagerDuty { .. }))
    }

    /// Queues the digest for the sinks that take it; never waits.
    pub fn send_digest(&self, d: Digest) {
        self.queue(Message::Digest(Box::new(d)));
    }

    fn queue(&self, m: Message) {
        if self.sinks.is_empty() {
            return;
        }
        if self.tx.try_send(m).is_err() {
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

async fn deliver_all(transport: &dyn Transport, sinks: &[AlertSink], m: &Message) {
    for sink in sinks {
        let (url, body) = match m {
            Message::Incident(ev) => message(sink, ev),
            Message::Digest(d) => match digest_message(sink, d) {
                Some(m) => m,
                None => continue,
            },
        };
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
            let what = match m {
                Message::Incident(ev) => format!("incident #{}", ev.incident),
                Message::Digest(_) => "the digest".to_owned(),
            };
            tracing::warn!(
                sink = sink_name(sink),
                "could not deliver an alert ({what}) after {} attempts",
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

/// A number with four significant digits, no exponent.
fn short(x: f64) -> String {
    if x.abs() >= 100.0 {
        format!("{x:.0}")
    } else if x.abs() >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.4}")
    }
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
        Signal::WrongScript => match e.script {
            Some(script) => format!(
                "{:.1}% of answers have {} text, in a script their prompt does not use, against {:.3}% normal",
                e.observed * 100.0,
                script.as_str(),
                e.baseline * 100.0
            ),
            None => format!(
                "{:.1}% of answers have text in a script their prompt does not use, against {:.2}% normal",
                e.observed * 100.0,
                e.baseline * 100.0
            ),
        },
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
        Signal::RateLimitChanged => format!(
            "the provider's rate limit changed from {} to {} (its response headers)",
            e.baseline, e.observed
        ),
        Signal::Headroom => {
            if e.observed.is_finite() {
                format!(
                    "at the current growth the rate limit is reached in {:.1} h (alert under {} h)",
                    e.observed, e.threshold
                )
            } else {
                "no exhaustion of the rate limit in sight".to_owned()
            }
        }
        Signal::ConfigRegression => format!(
            "the change was rolled back during its canary: {} on the new version against {} on \
             the current one (sequential test {:.0} ≥ {:.0})",
            short(e.observed),
            short(e.baseline),
            e.score,
            e.threshold
        ),
    };
    let what = match ev.kind {
        AlertKind::Opened => "opened",
        AlertKind::Resolved => "resolved",
    };
    let mut line = format!(
        "Ballast incident #{} {what}: {} {} ({}) — {numbers}",
        ev.incident,
        ev.target,
        ev.signal.as_str(),
        ev.severity
    );
    if let Some(r) = &ev.recurrence {
        line.push_str(" — ");
        line.push_str(&recurrence_line(r, ev.signal, &ev.target));
    }
    line
}

/// `recurrence: 3rd availability incident on openai/gpt-4.1 in 30 days (after #12, #9)`.
pub fn recurrence_line(r: &Recurrence, signal: Signal, target: &str) -> String {
    let ids: Vec<String> = r.earlier.iter().map(|i| format!("#{i}")).collect();
    format!(
        "recurrence: {} {} incident on {target} in {} days (after {})",
        ordinal(r.ordinal()),
        signal.as_str(),
        RECURRENCE_WINDOW.as_secs() / 86_400,
        ids.join(", ")
    )
}

/// Slack's text with its three control characters escaped (operators' text can hold them).
fn slack_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The URL and body of the digest for `sink`; `None` for PagerDuty (a digest is not an incident to
/// page anyone for).
fn digest_message(sink: &AlertSink, d: &Digest) -> Option<(String, Value)> {
    match sink {
        AlertSink::Webhook { url } => Some((
            url.clone(),
            json!({
                "source": "ballast",
                "event": "digest.weekly",
                "summary": d.text(),
                "digest": d.to_json(),
            }),
        )),
        AlertSink::Slack { url } => Some((url.clone(), json!({ "text": slack_escape(&d.text()) }))),
        AlertSink::PagerDuty { .. } => None,
    }
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
                    "recurrence": ev.recurrence.as_ref().map(recurrence_json),
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
                    "custom_details": match &ev.recurrence {
                        Some(r) => {
                            let mut d = evidence_json(&ev.evidence);
                            d["recurrence"] = recurrence_json(r);
                            d
                        }
                        None => evidence_json(&ev.evidence),
                    },
                },
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> SystemTime {
        humantime::parse_rfc3339(s).unwrap()
    }

    #[test]
    fn the_digest_goes_out_on_mondays_at_nine_utc() {
        let w = DigestSchedule::Weekly;
        let next = |s: &str| rfc3339(w.next_after(at(s)).unwrap());
        // 2026-03-09 is a Monday.
        assert_eq!(next("2026-03-09T08:59:59Z"), "2026-03-09T09:00:00Z");
        assert_eq!(next("2026-03-09T09:00:00Z"), "2026-03-16T09:00:00Z");
        assert_eq!(next("2026-03-12T17:00:00Z"), "2026-03-16T09:00:00Z");
        assert_eq!(next("2026-03-15T23:59:59Z"), "2026-03-16T09:00:00Z");
        assert_eq!(next("2026-03-08T09:00:00Z"), "2026-03-09T09:00:00Z");
        assert_eq!(
            DigestSchedule::Off.next_after(at("2026-03-09T08:00:00Z")),
            None
        );
    }

    #[test]
    fn the_digest_reads_as_a_list_and_skips_pagerduty() {
        let d = Digest {
            at: at("2026-03-16T09:00:00Z"),
            since: at("2026-03-09T09:00:00Z"),
            opened: 3,
            open: vec![DigestIncident {
                id: 14,
                target: "openai/gpt-4.1".to_owned(),
                signal: "availability".to_owned(),
                severity: "critical".to_owned(),
                opened_at: at("2026-03-15T10:00:00Z"),
                followups_open: 0,
                followups_overdue: 0,
                recurrence: None,
            }],
            overdue: vec![DigestFollowup {
                id: 2,
                incident: 9,
                target: "openai/gpt-4.1".to_owned(),
                signal: "availability".to_owned(),
                text: "add a <second> provider".to_owned(),
                owner: "alice".to_owned(),
                due: "2026-03-10".to_owned(),
                due_at: at("2026-03-11T00:00:00Z"),
            }],
            recurrences: vec![DigestRecurrence {
                target: "openai/gpt-4.1".to_owned(),
                signal: "availability".to_owned(),
                ids: vec![14, 12],
                last_at: at("2026-03-15T10:00:00Z"),
                in_30_days: 3,
            }],
        };
        let text = d.text();
        assert!(text.starts_with("Ballast weekly digest, 2026-03-09 to 2026-03-16: 3 incidents opened, 1 open, 1 overdue follow-up, 1 recurring."), "{text}");
        assert!(text.contains("• #14 openai/gpt-4.1 availability (critical) since 2026-03-15T10:00:00Z, no open follow-ups"), "{text}");
        assert!(text.contains("• #2 on incident #9 (openai/gpt-4.1 availability), owner alice, due 2026-03-10 (5 days overdue): add a <second> provider"), "{text}");
        assert!(text.contains("• openai/gpt-4.1 availability: 2 this week (#14, #12), the latest the 3rd in 30 days"), "{text}");
        let hook = AlertSink::Webhook {
            url: "http://h/".to_owned(),
        };
        let (_, body) = digest_message(&hook, &d).unwrap();
        assert_eq!(body["event"], "digest.weekly");
        assert_eq!(body["digest"]["overdue"][0]["days_overdue"], 5);
        let slack = AlertSink::Slack {
            url: "http://s/".to_owned(),
        };
        let (_, body) = digest_message(&slack, &d).unwrap();
        assert!(
            body["text"]
                .as_str()
                .unwrap()
                .contains("add a &lt;second&gt; provider")
        );
        let pd = AlertSink::PagerDuty {
            url: "http://p/".to_owned(),
            routing_key: ballast_core::config::Secret::new("k"),
        };
        assert!(digest_message(&pd, &d).is_none());
    }
}
