//! Incidents: a detector that fires on a target opens one (target, signal, severity, evidence,
//! timeline); it is updated while it lasts and resolves itself when the detector's evidence is back
//! to normal. Kept in memory, newest last, bounded; a persistent store comes next.
//!
//! Each target's detectors live behind their own short-held mutex and are fed by the attempt
//! records, so watching costs a lock and a few floating-point operations per attempt.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use serde_json::{Value, json};

use ballast_core::record::AttemptRecord;
use ballast_core::signal::{
    AbnormalStop, AnswerLength, Availability, AvailabilityConfig, Change, Evidence, HardFailure,
    Latency, LatencyConfig, RareDefect, Signal, WrongScript,
};

use crate::alerts::{AlertEvent, AlertKind, Alerts};
use crate::runtime::{lock, rfc3339};
use crate::store::{Row, StoreHandle};

/// Consecutive failures that open a hard-failure incident.
pub(crate) const HARD_FAILURES: u32 = 5;
/// Incidents kept (open and resolved), oldest dropped first.
const KEEP: usize = 1000;
/// An ejected target still gets one request this often, so the evidence that it recovered can come.
const TRIAL_EVERY: Duration = Duration::from_millis(500);
/// While a target ejected for availability answers its trials they come faster: the interval halves
/// for every `RAMP_STEP` attempts answered in a row, at most `RAMP_HALVINGS` times (500 ms down to
/// 62.5 ms), and a failure starts it over. A recovered target gathers the 50 answers in a row that
/// clear its incident in about ten seconds of traffic instead of 25; one still failing a sixth of its
/// attempts (runs of about six) stays at about one trial every 500 ms; a dead one gets exactly that.
const RAMP_STEP: u32 = 10;
const RAMP_HALVINGS: u32 = 3;

/// How often an ejected target gets a trial request, after `run` of its attempts were answered in a
/// row.
fn trial_every(run: u32) -> Duration {
    TRIAL_EVERY / (1u32 << (run / RAMP_STEP).min(RAMP_HALVINGS))
}

/// What one answer says to the output-quality detectors (`None`: nothing, for that detector).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnswerFacts {
    /// Text in a script the prompt does not use.
    pub wrong_script: bool,
    /// A natural end of text with no text at all.
    pub empty: Option<bool>,
    /// The characters of an answer that ended naturally with text.
    pub chars: Option<u64>,
    /// The answer stopped for another reason than a natural end.
    pub abnormal_stop: Option<bool>,
    /// The answer loops (enough words to judge).
    pub repetitive: Option<bool>,
    /// The request asked for JSON and the answer, ended naturally, is not.
    pub invalid_json: Option<bool>,
}

/// The detectors of one target.
struct Detectors {
    availability: Availability,
    hard: HardFailure,
    latency: Latency,
    wrong_script: WrongScript,
    empty: WrongScript,
    length: AnswerLength,
    stop: AbnormalStop,
    repetition: RareDefect,
    invalid_json: RareDefect,
}

impl Detectors {
    fn new() -> Self {
        Self {
            availability: Availability::new(AvailabilityConfig::default()),
            hard: HardFailure::new(HARD_FAILURES),
            latency: Latency::new(LatencyConfig::default()),
            wrong_script: WrongScript::default(),
            empty: WrongScript::empty_answers(),
            length: AnswerLength::default(),
            stop: AbnormalStop::default(),
            repetition: RareDefect::new(Signal::Repetition),
            invalid_json: RareDefect::new(Signal::InvalidJson),
        }
    }

    fn evidence(&self, signal: Signal) -> Evidence {
        match signal {
            Signal::Availability => self.availability.evidence(),
            Signal::HardFailure => self.hard.evidence(),
            Signal::Latency => self.latency.evidence(),
            Signal::WrongScript => self.wrong_script.evidence(),
            Signal::EmptyAnswer => self.empty.evidence(),
            Signal::AnswerLength => self.length.evidence(),
            Signal::StopReason => self.stop.evidence(),
            Signal::Repetition => self.repetition.evidence(),
            Signal::InvalidJson => self.invalid_json.evidence(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Incident {
    pub id: u64,
    pub target: usize,
    pub signal: Signal,
    pub opened_at: SystemTime,
    pub opened_with: Evidence,
    pub latest: Evidence,
    pub resolved_at: Option<SystemTime>,
}

impl Incident {
    fn severity(&self) -> &'static str {
        match self.signal {
            Signal::Availability
            | Signal::HardFailure
            | Signal::WrongScript
            | Signal::EmptyAnswer
            | Signal::Repetition
            | Signal::InvalidJson => "critical",
            Signal::Latency | Signal::AnswerLength | Signal::StopReason => "warning",
        }
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

pub struct Incidents {
    detectors: Vec<Mutex<Detectors>>,
    log: Mutex<IncidentLog>,
    /// Per target: an availability or hard-failure incident is open, so routes go around it.
    ejected: Vec<AtomicBool>,
    /// Per target: when its last trial request went out (ms since `epoch`).
    last_trial: Vec<AtomicU64>,
    /// Per target: attempts answered in a row while no output-quality detector fires (0 while one
    /// does: answering is not recovering from wrong answers), which paces trial requests.
    answered_run: Vec<AtomicU32>,
    /// Per target: when its last client attempt was observed (ms since `epoch`, 0: never).
    last_evidence: Vec<AtomicU64>,
    epoch: Instant,
    /// Where opened and resolved incidents are announced.
    pub alerts: Alerts,
    /// Where incidents are kept across restarts, once `Background` opened it.
    store: OnceLock<StoreHandle>,
    /// Incidents of earlier runs, read back from the store (oldest first).
    history: Mutex<Vec<Row>>,
}

#[derive(Default)]
struct IncidentLog {
    next_id: u64,
    incidents: VecDeque<Incident>,
}

impl Incidents {
    pub fn new(targets: usize, alerts: Alerts) -> Self {
        Self {
            detectors: (0..targets).map(|_| Mutex::new(Detectors::new())).collect(),
            log: Mutex::new(IncidentLog {
                next_id: 1,
                incidents: VecDeque::new(),
            }),
            ejected: (0..targets).map(|_| AtomicBool::new(false)).collect(),
            last_trial: (0..targets).map(|_| AtomicU64::new(0)).collect(),
            answered_run: (0..targets).map(|_| AtomicU32::new(0)).collect(),
            last_evidence: (0..targets).map(|_| AtomicU64::new(0)).collect(),
            epoch: Instant::now(),
            alerts,
            store: OnceLock::new(),
            history: Mutex::new(Vec::new()),
        }
    }

    /// Keeps incidents in `store` from now on; `rows` are the earlier runs' incidents. Ids go on
    /// from the highest stored one, so alert dedup keys stay unique across restarts.
    pub fn attach_store(&self, store: StoreHandle, rows: Vec<Row>) {
        if let Some(max) = rows.iter().map(|r| r.id).max() {
            let mut log = lock(&self.log);
            log.next_id = log.next_id.max(max.saturating_add(1));
        }
        *lock(&self.history) = rows;
        let _ = self.store.set(store);
    }

    /// Stops the store's writer after what is queued.
    pub fn stop_store(&self) {
        if let Some(s) = self.store.get() {
            s.stop();
        }
    }

    fn persist(&self, i: &Incident, label: &str, resolution: Option<&str>) {
        if let Some(s) = self.store.get() {
            s.save(Row {
                id: i.id,
                target: label.to_owned(),
                signal: i.signal.as_str().to_owned(),
                severity: i.severity().to_owned(),
                opened_at: i.opened_at,
                resolved_at: i.resolved_at,
                resolution: resolution.map(str::to_owned),
                evidence_at_open: evidence_json(&i.opened_with).to_string(),
                evidence_latest: evidence_json(&i.latest).to_string(),
            });
        }
    }

    /// Whether routes should go around `target` now. An ejected target is still let through for
    /// one trial request every [`TRIAL_EVERY`], more often while those are answered
    /// ([`trial_every`]): that request is its evidence of recovery. The caller tries it anyway when
    /// no other target is left.
    pub fn avoid(&self, target: usize, now: Instant) -> bool {
        let Some(flag) = self.ejected.get(target) else {
            return false;
        };
        if !flag.load(Ordering::Relaxed) {
            return false;
        }
        let Some(last) = self.last_trial.get(target) else {
            return true;
        };
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let prev = last.load(Ordering::Relaxed);
        let run = self
            .answered_run
            .get(target)
            .map_or(0, |r| r.load(Ordering::Relaxed));
        let every = u64::try_from(trial_every(run).as_millis()).unwrap_or(u64::MAX);
        if now_ms.saturating_sub(prev) >= every
            && last
                .compare_exchange(prev, now_ms, Ordering::AcqRel, Ordering::Relaxed)
                .is_ok()
        {
            return false;
        }
        true
    }

    /// When the last client attempt at `target` was observed.
    pub fn last_evidence(&self, target: usize) -> Option<Instant> {
        let ms = self.last_evidence.get(target)?.load(Ordering::Relaxed);
        (ms > 0).then(|| self.epoch + Duration::from_millis(ms))
    }

    /// Whether `target` is ejected (an availability or hard-failure incident is open).
    pub fn ejected(&self, target: usize) -> bool {
        self.ejected
            .get(target)
            .is_some_and(|f| f.load(Ordering::Relaxed))
    }

    /// Keeps `answered_run` in step with the detectors.
    fn note_run(&self, target: usize, d: &Detectors) {
        if let Some(run) = self.answered_run.get(target) {
            let quality = d.wrong_script.firing()
                || d.empty.firing()
                || d.repetition.firing()
                || d.invalid_json.firing();
            let n = if quality {
                0
            } else {
                d.availability.answered_in_row()
            };
            run.store(n, Ordering::Relaxed);
        }
    }

    fn set_ejected(&self, target: usize, detectors: &Detectors) {
        if let Some(flag) = self.ejected.get(target) {
            flag.store(
                detectors.availability.firing()
                    || detectors.hard.firing()
                    || detectors.wrong_script.firing()
                    || detectors.empty.firing()
                    || detectors.repetition.firing()
                    || detectors.invalid_json.firing(),
                Ordering::Relaxed,
            );
        }
    }

    /// Feeds one attempt to its target's detectors; opens or resolves incidents on a change.
    /// `client`: client traffic (which makes a probe unnecessary) rather than a probe.
    pub fn observe(&self, r: &AttemptRecord, label: &str, client: bool) {
        let Some(det) = self.detectors.get(r.target) else {
            return;
        };
        if client && let Some(at) = self.last_evidence.get(r.target) {
            let ms = u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX);
            at.store(ms.max(1), Ordering::Relaxed);
        }
        let mut changes: [(Signal, Option<Change>); 3] = [
            (Signal::Availability, None),
            (Signal::HardFailure, None),
            (Signal::Latency, None),
        ];
        // (Wrong-script evidence comes from whole answers: `observe_answer`.)
        let evidence = {
            let mut d = lock(det);
            if let Some(failed) = r.result.health() {
                changes[0].1 = d.availability.observe(failed);
                changes[1].1 = d.hard.observe(failed);
                if !failed && r.stream {
                    changes[2].1 = d.latency.observe(r.duration);
                }
                self.note_run(r.target, &d);
            }
            if changes.iter().all(|(_, c)| c.is_none()) {
                return;
            }
            self.set_ejected(r.target, &d);
            Signal::ALL.map(|s| d.evidence(s))
        };
        for (signal, change) in changes {
            let Some(change) = change else { continue };
            let e = evidence[signal.index()];
            match change {
                Change::Fired => self.open(r.target, label, signal, e),
                Change::Cleared => self.resolve(r.target, label, signal, e),
            }
        }
    }

    /// Feeds one answer to its target's output-quality detectors; each fact is `None` when the
    /// answer says nothing about it (a tool call says nothing of emptiness, a cut answer nothing of
    /// its JSON).
    pub fn observe_answer(&self, target: usize, a: &AnswerFacts, label: &str) {
        let Some(det) = self.detectors.get(target) else {
            return;
        };
        let (changes, evidence) = {
            let mut d = lock(det);
            let changes = [
                (Signal::WrongScript, d.wrong_script.observe(a.wrong_script)),
                (
                    Signal::EmptyAnswer,
                    a.empty.and_then(|e| d.empty.observe(e)),
                ),
                (
                    Signal::AnswerLength,
                    a.chars.and_then(|n| d.length.observe(n)),
                ),
                (
                    Signal::StopReason,
                    a.abnormal_stop.and_then(|x| d.stop.observe(x)),
                ),
                (
                    Signal::Repetition,
                    a.repetitive.and_then(|x| d.repetition.observe(x)),
                ),
                (
                    Signal::InvalidJson,
                    a.invalid_json.and_then(|x| d.invalid_json.observe(x)),
                ),
            ];
            if changes.iter().all(|(_, c)| c.is_none()) {
                return;
            }
            self.set_ejected(target, &d);
            self.note_run(target, &d);
            (changes, Signal::ALL.map(|s| d.evidence(s)))
        };
        for (signal, change) in changes {
            let e = evidence[signal.index()];
            match change {
                Some(Change::Fired) => self.open(target, label, signal, e),
                Some(Change::Cleared) => self.resolve(target, label, signal, e),
                None => {}
            }
        }
    }

    fn open(&self, target: usize, label: &str, signal: Signal, e: Evidence) {
        let mut log = lock(&self.log);
        let id = log.next_id;
        log.next_id = log.next_id.saturating_add(1);
        if log.incidents.len() >= KEEP {
            log.incidents.pop_front();
        }
        let incident = Incident {
            id,
            target,
            signal,
            opened_at: SystemTime::now(),
            opened_with: e,
            latest: e,
            resolved_at: None,
        };
        tracing::warn!(
            incident = id,
            target = label,
            signal = signal.as_str(),
            severity = incident.severity(),
            observed = e.observed,
            baseline = e.baseline,
            samples = e.samples,
            score = e.score,
            threshold = e.threshold,
            "incident opened"
        );
        self.alerts.send(AlertEvent {
            kind: AlertKind::Opened,
            incident: id,
            target: label.to_owned(),
            signal,
            severity: incident.severity(),
            opened_at: incident.opened_at,
            resolved_at: None,
            evidence: e,
        });
        self.persist(&incident, label, None);
        log.incidents.push_back(incident);
    }

    fn resolve(&self, target: usize, label: &str, signal: Signal, e: Evidence) {
        let mut log = lock(&self.log);
        if let Some(i) = log
            .incidents
            .iter_mut()
            .rev()
            .find(|i| i.target == target && i.signal == signal && i.resolved_at.is_none())
        {
            i.resolved_at = Some(SystemTime::now());
            i.latest = e;
            tracing::info!(
                incident = i.id,
                target = label,
                signal = signal.as_str(),
                "incident resolved: the evidence is back to normal"
            );
            self.alerts.send(AlertEvent {
                kind: AlertKind::Resolved,
                incident: i.id,
                target: label.to_owned(),
                signal,
                severity: i.severity(),
                opened_at: i.opened_at,
                resolved_at: i.resolved_at,
                evidence: e,
            });
            let done = i.clone();
            drop(log);
            self.persist(&done, label, Some("evidence back to normal"));
        }
    }

    /// Per target and signal: the detector's score and threshold, for metrics.
    pub fn scores(&self) -> Vec<[(f64, f64); Signal::COUNT]> {
        self.detectors
            .iter()
            .map(|d| {
                let d = lock(d);
                Signal::ALL.map(|s| {
                    let e = d.evidence(s);
                    (e.score, e.threshold)
                })
            })
            .collect()
    }

    /// `target`'s detectors: each signal's evidence now.
    pub fn detectors_json(&self, target: usize) -> Value {
        let Some(d) = self.detectors.get(target) else {
            return Value::Null;
        };
        let d = lock(d);
        let mut out = serde_json::Map::new();
        for s in Signal::ALL {
            out.insert(s.as_str().to_owned(), evidence_json(&d.evidence(s)));
        }
        Value::Object(out)
    }

    /// Open incidents per signal.
    pub fn open_counts(&self) -> [i64; Signal::COUNT] {
        let log = lock(&self.log);
        let mut n = [0i64; Signal::COUNT];
        for i in log.incidents.iter().filter(|i| i.resolved_at.is_none()) {
            if let Some(c) = n.get_mut(i.signal.index()) {
                *c = c.saturating_add(1);
            }
        }
        n
    }

    /// Every kept incident, newest first, with the latest evidence of open ones.
    pub fn snapshot(&self, label: impl Fn(usize) -> String) -> Value {
        let mut latest: Vec<(usize, Signal, Evidence)> = Vec::new();
        {
            let log = lock(&self.log);
            for i in log.incidents.iter().filter(|i| i.resolved_at.is_none()) {
                latest.push((i.target, i.signal, i.latest));
            }
        }
        for (target, signal, e) in &mut latest {
            if let Some(d) = self.detectors.get(*target) {
                *e = lock(d).evidence(*signal);
            }
        }
        let log = lock(&self.log);
        let list: Vec<Value> = log
            .incidents
            .iter()
            .rev()
            .map(|i| {
                let now = latest
                    .iter()
                    .find(|(t, s, _)| *t == i.target && *s == i.signal && i.resolved_at.is_none())
                    .map_or(i.latest, |(_, _, e)| *e);
                json!({
                    "id": i.id,
                    "target": label(i.target),
                    "signal": i.signal.as_str(),
                    "severity": i.severity(),
                    "state": if i.resolved_at.is_some() { "resolved" } else { "open" },
                    "opened_at": rfc3339(i.opened_at),
                    "resolved_at": i.resolved_at.map(rfc3339),
                    "evidence_at_open": evidence_json(&i.opened_with),
                    "evidence_now": evidence_json(&now),
                })
            })
            .collect();
        drop(log);
        // Then the earlier runs' incidents from the store, newest first.
        let history = lock(&self.history);
        let earlier = history.iter().rev().map(|r| {
            let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
            json!({
                "id": r.id,
                "target": r.target,
                "signal": r.signal,
                "severity": r.severity,
                "state": if r.resolved_at.is_some() { "resolved" } else { "open" },
                "opened_at": rfc3339(r.opened_at),
                "resolved_at": r.resolved_at.map(rfc3339),
                "resolution": r.resolution,
                "evidence_at_open": parse(&r.evidence_at_open),
                "evidence_now": parse(&r.evidence_latest),
            })
        });
        let all: Vec<Value> = list.into_iter().chain(earlier).collect();
        json!({ "incidents": all })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn attempt(target: usize, failed: bool) -> AttemptRecord {
        AttemptRecord {
            target,
            result: if failed {
                ballast_core::record::AttemptResult::ServerError
            } else {
                ballast_core::record::AttemptResult::Answered
            },
            duration: Duration::from_millis(100),
            stream: false,
            trace: None,
        }
    }

    /// Trials let through `avoid` over `secs` seconds, asked every millisecond.
    fn trials(i: &Incidents, t0: Instant, secs: u64) -> usize {
        (0..secs * 1000)
            .filter(|k| !i.avoid(0, t0 + Duration::from_millis(*k)))
            .count()
    }

    #[test]
    fn trial_requests_come_faster_while_answered_and_fall_back_on_a_failure() {
        assert_eq!(trial_every(0), Duration::from_millis(500));
        assert_eq!(trial_every(9), Duration::from_millis(500));
        assert_eq!(trial_every(10), Duration::from_millis(250));
        assert_eq!(trial_every(29), Duration::from_millis(125));
        assert_eq!(trial_every(30), Duration::from_micros(62_500));
        assert_eq!(trial_every(u32::MAX), Duration::from_micros(62_500));

        let i = Incidents::new(1, Alerts::new(Vec::new()));
        let t0 = Instant::now();
        assert!(!i.avoid(0, t0), "not ejected");
        for _ in 0..100 {
            i.observe(&attempt(0, false), "t", true);
        }
        for _ in 0..10 {
            i.observe(&attempt(0, true), "t", true);
        }
        assert!(i.ejected(0));
        // Failing: two trials a second.
        assert!((19..=20).contains(&trials(&i, t0, 10)));
        // Answered 30 in a row (not yet the 50 that clear it): sixteen a second.
        for _ in 0..30 {
            i.observe(&attempt(0, false), "t", true);
        }
        assert!(i.ejected(0), "availability still firing");
        let t1 = t0 + Duration::from_secs(20);
        let n = trials(&i, t1, 10);
        assert!((150..=170).contains(&n), "{n}");
        // One failure starts over.
        i.observe(&attempt(0, true), "t", true);
        assert!((19..=20).contains(&trials(&i, t1 + Duration::from_secs(20), 10)));
    }

    #[test]
    fn a_target_ejected_for_wrong_answers_gets_no_faster_trials() {
        let i = Incidents::new(1, Alerts::new(Vec::new()));
        let wrong = AnswerFacts {
            wrong_script: true,
            ..AnswerFacts::default()
        };
        for _ in 0..1_000 {
            i.observe(&attempt(0, false), "t", true);
            i.observe_answer(0, &wrong, "t");
            if i.ejected(0) {
                break;
            }
        }
        assert!(i.ejected(0));
        for _ in 0..100 {
            i.observe(&attempt(0, false), "t", true);
        }
        assert!((19..=20).contains(&trials(&i, Instant::now(), 10)));
    }
}
