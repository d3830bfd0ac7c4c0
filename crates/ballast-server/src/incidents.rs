//! Incidents: a detector that fires on a target opens one (target, signal, severity, evidence,
//! timeline); it is updated while it lasts and resolves itself when the detector's evidence is back
//! to normal. Kept in memory, newest last, bounded, and in the store (`store.rs`) when there is one.
//!
//! Each target's detectors live behind their own short-held mutex and are fed by the attempt
//! records, so watching costs a lock and a few floating-point operations per attempt.
//!
//! Remediation: an incident of the same signal on the same target as earlier ones within
//! [`RECURRENCE_WINDOW`] links to them (its [`Recurrence`]); operators attach follow-up items (text,
//! owner, due date, state) through the admin API, kept in the store; one open past its due time is
//! overdue (`/metrics`, the admin API, `ballast status`, the weekly digest). Everything that depends
//! on the time of day takes `now` as an argument.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::Instant;

use serde_json::{Value, json};

use ballast_core::record::AttemptRecord;
use ballast_core::script::ScriptSet;
use ballast_core::signal::{
    AbnormalStop, AnswerLength, Availability, AvailabilityConfig, Change, Evidence, HardFailure,
    Latency, LatencyConfig, RareDefect, Signal, WrongScript,
};

use crate::alerts::{
    AlertEvent, AlertKind, Alerts, Digest, DigestFollowup, DigestIncident, DigestRecurrence,
};
use crate::runtime::{lock, rfc3339};
use crate::store::{FollowupRow, FollowupState, Loaded, Recurrence, Row, StoreHandle};

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

/// An incident of the same signal on the same target as one opened within this window before it
/// is a recurrence.
pub const RECURRENCE_WINDOW: Duration = Duration::from_secs(30 * 24 * 3600);
/// Earlier incidents a recurrence names (newest first); the count covers them all.
pub const RECURRENCE_IDS: usize = 10;
/// What the digest looks back over.
pub const DIGEST_WINDOW: Duration = Duration::from_secs(7 * 24 * 3600);
/// Follow-ups kept in memory; past it the oldest closed one is forgotten (it stays in the store).
const MAX_FOLLOWUPS: usize = crate::store::FOLLOWUPS_LOAD;
/// How long an admin request waits for the store to write its follow-up.
const WRITE_WAIT: Duration = Duration::from_secs(5);
/// Longest follow-up text and owner, in characters.
pub const MAX_TEXT: usize = 2000;
pub const MAX_OWNER: usize = 200;

/// How often an ejected target gets a trial request, after `run` of its attempts were answered in a
/// row.
fn trial_every(run: u32) -> Duration {
    TRIAL_EVERY / (1u32 << (run / RAMP_STEP).min(RAMP_HALVINGS))
}

/// What one answer says to the output-quality detectors (`None`: nothing, for that detector).
#[derive(Clone, Copy, Debug, Default)]
pub struct AnswerFacts {
    /// The scripts the prompt does not use that the answer has text in (empty: none).
    pub wrong_script: ScriptSet,
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
    empty: RareDefect,
    length: AnswerLength,
    stop: AbnormalStop,
    repetition: RareDefect,
    invalid_json: RareDefect,
}

/// How long a rate-limit change stays an open incident: it is a notice, not a condition.
pub const LIMIT_CHANGE_NOTICE: Duration = Duration::from_secs(3600);

impl Detectors {
    fn new() -> Self {
        Self {
            availability: Availability::new(AvailabilityConfig::default()),
            hard: HardFailure::new(HARD_FAILURES),
            latency: Latency::new(LatencyConfig::default()),
            wrong_script: WrongScript::default(),
            empty: RareDefect::new(Signal::EmptyAnswer),
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
            Signal::RateLimitChanged | Signal::Headroom | Signal::ConfigRegression => Evidence {
                signal,
                observed: 0.0,
                baseline: 0.0,
                samples: 0,
                score: 0.0,
                threshold: 0.0,
                script: None,
            },
        }
    }
}

#[derive(Clone, Debug)]
pub struct Incident {
    pub id: u64,
    /// The target's label (`provider/model`), or what else the incident is about (a configuration
    /// change). Labels, not positions: a target keeps its incidents across configurations.
    pub target: Arc<str>,
    pub signal: Signal,
    pub opened_at: SystemTime,
    pub opened_with: Evidence,
    pub latest: Evidence,
    pub resolved_at: Option<SystemTime>,
    /// The earlier incidents of this signal on this target it repeats.
    pub recurrence: Option<Recurrence>,
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
            Signal::Latency
            | Signal::AnswerLength
            | Signal::StopReason
            | Signal::RateLimitChanged
            | Signal::Headroom
            | Signal::ConfigRegression => "warning",
        }
    }
}

/// An incident's evidence as JSON, for the admin API, the store and alert bodies.
pub(crate) fn evidence_json(e: &Evidence) -> Value {
    let mut v = json!({
        "observed": e.observed,
        "baseline": e.baseline,
        "samples": e.samples,
        "score": e.score,
        "threshold": e.threshold,
    });
    // A wrong-script test on one script names it.
    if let (Some(script), Some(o)) = (e.script, v.as_object_mut()) {
        o.insert("script".to_owned(), script.as_str().into());
    }
    v
}

/// One configuration's view of the incidents: its targets' watches, in its target order, over the
/// process-wide log. A target's watch (detectors, ejection, trial pacing) is shared by label with
/// every other configuration that names it, so a change of configuration keeps what was learned.
pub struct Incidents {
    shared: Arc<Shared>,
    /// Per target of this configuration, its label and its watch.
    labels: Vec<Arc<str>>,
    watches: Vec<Arc<Watch>>,
}

/// One target's watch.
struct Watch {
    detectors: Mutex<Detectors>,
    /// An availability or hard-failure incident is open, so routes go around it.
    ejected: AtomicBool,
    /// When its last trial request went out (ms since `epoch`).
    last_trial: AtomicU64,
    /// Attempts answered in a row while no output-quality detector fires (0 while one does:
    /// answering is not recovering from wrong answers), which paces trial requests.
    answered_run: AtomicU32,
    /// When its last client attempt was observed (ms since `epoch`, 0: never).
    last_evidence: AtomicU64,
}

impl Watch {
    fn new() -> Self {
        Watch {
            detectors: Mutex::new(Detectors::new()),
            ejected: AtomicBool::new(false),
            last_trial: AtomicU64::new(0),
            answered_run: AtomicU32::new(0),
            last_evidence: AtomicU64::new(0),
        }
    }
}

impl std::ops::Deref for Incidents {
    type Target = Shared;
    fn deref(&self) -> &Shared {
        &self.shared
    }
}

/// What every configuration of the process shares: the log, alerting, the store, follow-ups.
pub struct Shared {
    log: Mutex<IncidentLog>,
    epoch: Instant,
    /// Where opened and resolved incidents are announced.
    pub alerts: Alerts,
    /// Where incidents are kept across restarts, once `Background` opened it.
    store: OnceLock<StoreHandle>,
    /// Incidents of earlier runs, read back from the store (oldest first).
    history: Mutex<Vec<Row>>,
    /// Follow-ups, by id (every open one, and the newest closed ones).
    followups: Mutex<FollowupLog>,
    /// Follow-up writes one at a time, so memory and the store change in the same order.
    followup_writes: tokio::sync::Mutex<()>,
}

#[derive(Default)]
struct FollowupLog {
    next_id: u64,
    items: BTreeMap<u64, FollowupRow>,
}

impl FollowupLog {
    /// Makes room for one more: forgets the oldest closed follow-up when full (false: every one is
    /// open).
    fn make_room(&mut self) -> bool {
        if self.items.len() < MAX_FOLLOWUPS {
            return true;
        }
        let closed = self
            .items
            .values()
            .find(|f| f.state != FollowupState::Open)
            .map(|f| f.id);
        closed.is_some_and(|id| self.items.remove(&id).is_some())
    }
}

/// A due date as given (`2026-03-10`, or an RFC 3339 date-time) and from when it is overdue.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Normalised: the date, or the date-time in UTC.
    pub shown: String,
    /// A date is due by the end of that day (UTC).
    pub at: SystemTime,
}

/// A new follow-up, validated.
#[derive(Clone, Debug)]
pub struct NewFollowup {
    pub text: String,
    pub owner: String,
    pub due: Due,
}

/// A change to a follow-up, validated; `None` leaves a field as it is.
#[derive(Clone, Debug, Default)]
pub struct FollowupChange {
    pub state: Option<FollowupState>,
    pub owner: Option<String>,
    pub due: Option<Due>,
    pub text: Option<String>,
}

impl FollowupChange {
    pub fn is_empty(&self) -> bool {
        self.state.is_none() && self.owner.is_none() && self.due.is_none() && self.text.is_none()
    }
}

/// Which follow-ups a listing wants.
#[derive(Clone, Copy, Debug, Default)]
pub struct FollowupFilter {
    pub state: Option<FollowupState>,
    /// `Some(true)`: only overdue ones; `Some(false)`: only those not overdue.
    pub overdue: Option<bool>,
    pub incident: Option<u64>,
}

/// Why a follow-up could not be made or changed.
#[derive(Debug, PartialEq, Eq)]
pub enum FollowupError {
    /// The gateway keeps incidents in memory only.
    NoStore,
    NoIncident(u64),
    NoFollowup(u64),
    /// Every follow-up kept in memory is open.
    Full,
    /// The store's queue is full.
    Busy,
    /// The store could not write it.
    Write(String),
}

impl FollowupError {
    pub fn status(&self) -> http::StatusCode {
        use http::StatusCode;
        match self {
            Self::NoStore | Self::Full => StatusCode::CONFLICT,
            Self::NoIncident(_) | Self::NoFollowup(_) => StatusCode::NOT_FOUND,
            Self::Busy => StatusCode::SERVICE_UNAVAILABLE,
            Self::Write(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Self::NoStore => {
                "follow-ups are kept in the incident store, and this gateway has none \
                ([incidents] store = \"\", or the file could not be opened at start: see its log); \
                set [incidents] store to a writable file and restart"
                    .to_owned()
            }
            Self::NoIncident(id) => format!(
                "no incident {id}: GET /admin/incidents lists the incidents this gateway knows \
                 (the latest {KEEP} of this run and those its store held at start)"
            ),
            Self::NoFollowup(id) => {
                format!("no follow-up {id}: GET /admin/followups lists them")
            }
            Self::Full => format!(
                "{MAX_FOLLOWUPS} follow-ups are open: mark some done or dropped before adding more"
            ),
            Self::Busy => "the incident store is busy writing; try again in a moment".to_owned(),
            Self::Write(e) => e.clone(),
        }
    }
}

/// Reads a due date: an RFC 3339 date (`2026-03-10`, due by the end of that day, UTC) or date-time
/// with its offset (`2026-03-10T17:00:00Z`, `2026-03-10T17:00:00+02:00`).
pub fn parse_due(s: &str) -> Result<Due, String> {
    let bad = |why: &str| {
        format!(
            "due {s:?} is not an RFC 3339 date or date-time ({why}): \
             use 2026-03-10 (due by the end of that day, UTC) or 2026-03-10T17:00:00Z"
        )
    };
    let s = s.trim();
    let num = |part: &str, len: usize| -> Option<u64> {
        (part.len() == len && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (&s[..i], Some(&s[i + 1..])),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (Some(y), Some(m), Some(d), None) = (
        parts.next().and_then(|p| num(p, 4)),
        parts.next().and_then(|p| num(p, 2)),
        parts.next().and_then(|p| num(p, 2)),
        parts.next(),
    ) else {
        return Err(bad("the date is not YYYY-MM-DD"));
    };
    let Some(days) = days_from_civil(y, m, d) else {
        return Err(bad("no such day"));
    };
    let day_start = days * 86_400;
    let Some(rest) = rest else {
        let at = UNIX_EPOCH + Duration::from_secs(day_start + 86_400);
        return Ok(Due {
            shown: format!("{y:04}-{m:02}-{d:02}"),
            at,
        });
    };
    // hh:mm:ss[.frac](Z|±hh:mm)
    let (clock, offset) = if let Some(c) = rest.strip_suffix(['Z', 'z']) {
        (c, 0i64)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (c, o) = (&rest[..i], &rest[i..]);
        let sign = if o.starts_with('-') { -1 } else { 1 };
        let mut hm = o[1..].split(':');
        let (Some(oh), Some(om), None) = (
            hm.next().and_then(|p| num(p, 2)),
            hm.next().and_then(|p| num(p, 2)),
            hm.next(),
        ) else {
            return Err(bad("the offset is not ±hh:mm"));
        };
        if oh > 23 || om > 59 {
            return Err(bad("the offset is not ±hh:mm"));
        }
        (c, sign * i64::try_from(oh * 3600 + om * 60).unwrap_or(0))
    } else {
        return Err(bad("a date-time needs its offset: Z or ±hh:mm"));
    };
    let clock = clock.split('.').next().unwrap_or(clock);
    let mut hms = clock.split(':');
    let (Some(h), Some(mi), Some(sec), None) = (
        hms.next().and_then(|p| num(p, 2)),
        hms.next().and_then(|p| num(p, 2)),
        hms.next().and_then(|p| num(p, 2)),
        hms.next(),
    ) else {
        return Err(bad("the time is not hh:mm:ss"));
    };
    if h > 23 || mi > 59 || sec > 60 {
        return Err(bad("no such time"));
    }
    let local = i64::try_from(day_start + h * 3600 + mi * 60 + sec.min(59)).unwrap_or(i64::MAX);
    let utc = u64::try_from(local - offset).map_err(|_| bad("before 1970"))?;
    let at = UNIX_EPOCH + Duration::from_secs(utc);
    Ok(Due {
        shown: rfc3339(at),
        at,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date from 1970 to 9999; `None` for no such day.
fn days_from_civil(y: u64, m: u64, d: u64) -> Option<u64> {
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || d == 0 {
        return None;
    }
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    let month_days = [
        31,
        if leap { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    if d > *month_days.get(usize::try_from(m - 1).ok()?)? {
        return None;
    }
    // Howard Hinnant's days_from_civil, for years from 1970 (no negative eras).
    let (y, m) = if m <= 2 { (y - 1, m + 9) } else { (y, m - 3) };
    let era = y / 400;
    let yoe = y - era * 400;
    let doy = (153 * m + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    (era * 146_097 + doe).checked_sub(719_468)
}

/// Operator text for a follow-up field: trimmed, not empty, at most `max` characters, no control
/// characters (but newlines, in `text`).
pub fn check_text(field: &str, s: &str, max: usize) -> Result<String, String> {
    let t = s.trim();
    if t.is_empty() {
        return Err(format!("{field} is empty"));
    }
    let n = t.chars().count();
    if n > max {
        return Err(format!("{field} is {n} characters long; at most {max}"));
    }
    let newlines = field == "text";
    if t.chars()
        .any(|c| c.is_control() && !(newlines && c == '\n'))
    {
        return Err(format!("{field} has control characters"));
    }
    Ok(t.to_owned())
}

/// The recurrence of an incident opened at `now`, from the `(id, opened_at)` of the earlier
/// incidents of its signal on its target.
pub fn recurrence_of(
    earlier: impl IntoIterator<Item = (u64, SystemTime)>,
    now: SystemTime,
) -> Option<Recurrence> {
    let since = now.checked_sub(RECURRENCE_WINDOW).unwrap_or(UNIX_EPOCH);
    let mut within: Vec<(u64, SystemTime)> = earlier
        .into_iter()
        .filter(|(_, at)| *at >= since && *at <= now)
        .collect();
    within.sort_by_key(|e| std::cmp::Reverse(e.0));
    within.dedup_by_key(|e| e.0);
    let last_at = within.iter().map(|(_, at)| *at).max()?;
    Some(Recurrence {
        count: u32::try_from(within.len()).unwrap_or(u32::MAX),
        earlier: within
            .iter()
            .take(RECURRENCE_IDS)
            .map(|(id, _)| *id)
            .collect(),
        last_at,
    })
}

/// `1st`, `2nd`, `3rd`, `11th`, `22nd`…
pub fn ordinal(n: u32) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

pub fn recurrence_json(r: &Recurrence) -> Value {
    json!({
        "ordinal": r.ordinal(),
        "earlier_count": r.count,
        "earlier_ids": r.earlier,
        "last_at": rfc3339(r.last_at),
        "window_days": RECURRENCE_WINDOW.as_secs() / 86_400,
    })
}

/// A follow-up as the admin API shows it.
pub fn followup_json(f: &FollowupRow, now: SystemTime) -> Value {
    json!({
        "id": f.id,
        "incident": f.incident,
        "target": f.target,
        "signal": f.signal,
        "text": f.text,
        "owner": f.owner,
        "due": f.due,
        "state": f.state.as_str(),
        "overdue": f.overdue(now),
        "created_at": rfc3339(f.created_at),
        "updated_at": rfc3339(f.updated_at),
    })
}

fn signal_named(s: &str) -> Option<Signal> {
    Signal::ALL.into_iter().find(|x| x.as_str() == s)
}

#[derive(Default)]
struct IncidentLog {
    next_id: u64,
    incidents: VecDeque<Incident>,
}

impl Incidents {
    /// Incidents for targets labelled `labels` (`provider/model`, in the gateway's target order).
    pub fn new(labels: &[String], alerts: Alerts) -> Self {
        let empty = Self {
            shared: Arc::new(Shared::new(alerts)),
            labels: Vec::new(),
            watches: Vec::new(),
        };
        empty.next(labels)
    }

    /// The view of another configuration of the same process: targets it shares with this one
    /// (by label) keep their watch; new ones start fresh.
    pub fn next(&self, labels: &[String]) -> Self {
        let watches = labels
            .iter()
            .map(|l| {
                self.labels
                    .iter()
                    .position(|m| **m == **l)
                    .and_then(|i| self.watches.get(i).cloned())
                    .unwrap_or_else(|| Arc::new(Watch::new()))
            })
            .collect();
        Self {
            shared: self.shared.clone(),
            labels: labels.iter().map(|l| Arc::from(l.as_str())).collect(),
            watches,
        }
    }
}

impl Shared {
    fn new(alerts: Alerts) -> Self {
        Self {
            log: Mutex::new(IncidentLog {
                next_id: 1,
                incidents: VecDeque::new(),
            }),
            epoch: Instant::now(),
            alerts,
            store: OnceLock::new(),
            history: Mutex::new(Vec::new()),
            followups: Mutex::new(FollowupLog {
                next_id: 1,
                items: BTreeMap::new(),
            }),
            followup_writes: tokio::sync::Mutex::new(()),
        }
    }

    /// Keeps incidents in `store` from now on; `loaded` holds the earlier runs' incidents and the
    /// follow-ups. Ids go on from the highest stored ones, so alert dedup keys stay unique across
    /// restarts.
    pub fn attach_store(&self, store: StoreHandle, loaded: Loaded) {
        let Loaded {
            incidents: rows,
            followups,
            max_followup,
        } = loaded;
        if let Some(max) = rows.iter().map(|r| r.id).max() {
            let mut log = lock(&self.log);
            log.next_id = log.next_id.max(max.saturating_add(1));
        }
        *lock(&self.history) = rows;
        {
            let mut f = lock(&self.followups);
            f.next_id = f.next_id.max(max_followup.saturating_add(1));
            f.items = followups.into_iter().map(|r| (r.id, r)).collect();
        }
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
                recurrence: i.recurrence.clone(),
            });
        }
    }
}

impl Incidents {
    /// Whether routes should go around `target` now. An ejected target is still let through for
    /// one trial request every [`TRIAL_EVERY`], more often while those are answered
    /// ([`trial_every`]): that request is its evidence of recovery. The caller tries it anyway when
    /// no other target is left.
    pub fn avoid(&self, target: usize, now: Instant) -> bool {
        let Some(w) = self.watches.get(target) else {
            return false;
        };
        if !w.ejected.load(Ordering::Relaxed) {
            return false;
        }
        let last = &w.last_trial;
        let now_ms = u64::try_from(now.saturating_duration_since(self.epoch).as_millis())
            .unwrap_or(u64::MAX);
        let prev = last.load(Ordering::Relaxed);
        let run = w.answered_run.load(Ordering::Relaxed);
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
        let ms = self
            .watches
            .get(target)?
            .last_evidence
            .load(Ordering::Relaxed);
        (ms > 0).then(|| self.epoch + Duration::from_millis(ms))
    }

    /// Whether `target` is ejected (an availability or hard-failure incident is open).
    pub fn ejected(&self, target: usize) -> bool {
        self.watches
            .get(target)
            .is_some_and(|w| w.ejected.load(Ordering::Relaxed))
    }

    /// Keeps `answered_run` in step with the detectors.
    fn note_run(&self, target: usize, d: &Detectors) {
        if let Some(run) = self.watches.get(target).map(|w| &w.answered_run) {
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
        if let Some(flag) = self.watches.get(target).map(|w| &w.ejected) {
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
        let Some(w) = self.watches.get(r.target) else {
            return;
        };
        let det = &w.detectors;
        if client {
            let at = &w.last_evidence;
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
                Change::Fired => self.open(label, signal, e),
                Change::Cleared => self.resolve(label, signal, e),
            }
        }
    }

    /// Feeds one answer to its target's output-quality detectors; each fact is `None` when the
    /// answer says nothing about it (a tool call says nothing of emptiness, a cut answer nothing of
    /// its JSON).
    pub fn observe_answer(&self, target: usize, a: &AnswerFacts, label: &str) {
        let Some(det) = self.watches.get(target).map(|w| &w.detectors) else {
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
                Some(Change::Fired) => self.open(label, signal, e),
                Some(Change::Cleared) => self.resolve(label, signal, e),
                None => {}
            }
        }
    }
}

impl Shared {
    pub(crate) fn open(&self, label: &str, signal: Signal, e: Evidence) {
        let mut log = lock(&self.log);
        let id = log.next_id;
        log.next_id = log.next_id.saturating_add(1);
        if log.incidents.len() >= KEEP {
            log.incidents.pop_front();
        }
        let now = SystemTime::now();
        let earlier: Vec<(u64, SystemTime)> = {
            let history = lock(&self.history);
            log.incidents
                .iter()
                .filter(|i| &*i.target == label && i.signal == signal)
                .map(|i| (i.id, i.opened_at))
                .chain(
                    history
                        .iter()
                        .filter(|r| r.target == label && r.signal == signal.as_str())
                        .map(|r| (r.id, r.opened_at)),
                )
                .collect()
        };
        let recurrence = recurrence_of(earlier, now);
        let incident = Incident {
            id,
            target: Arc::from(label),
            signal,
            opened_at: now,
            opened_with: e,
            latest: e,
            resolved_at: None,
            recurrence,
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
            script = e.script.map(|s| s.as_str()),
            recurrence = incident.recurrence.as_ref().map(Recurrence::ordinal),
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
            recurrence: incident.recurrence.clone(),
        });
        self.persist(&incident, label, None);
        log.incidents.push_back(incident);
    }

    pub(crate) fn resolve(&self, label: &str, signal: Signal, e: Evidence) {
        let mut log = lock(&self.log);
        if let Some(i) = log
            .incidents
            .iter_mut()
            .rev()
            .find(|i| &*i.target == label && i.signal == signal && i.resolved_at.is_none())
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
                recurrence: i.recurrence.clone(),
            });
            let done = i.clone();
            drop(log);
            self.persist(&done, label, Some("evidence back to normal"));
        }
    }

    /// A provider's rate-limit headers said something worth an incident: its limit changed without
    /// notice, or at the current growth it will be reached within a day (resolved when the forecast
    /// recovers). A limit change resolves itself after [`LIMIT_CHANGE_NOTICE`].
    pub fn capacity(&self, event: &crate::capacity::CapacityEvent, label: &str) {
        use crate::capacity::CapacityEvent as E;
        let evidence = |signal, observed: f64, baseline: f64, threshold: f64| Evidence {
            signal,
            observed,
            baseline,
            samples: 0,
            score: observed,
            threshold,
            script: None,
        };
        match event {
            E::LimitChanged { old, new, .. } => {
                let e = evidence(Signal::RateLimitChanged, *new as f64, *old as f64, 0.0);
                self.resolve(label, Signal::RateLimitChanged, e);
                self.open(label, Signal::RateLimitChanged, e);
            }
            E::HeadroomLow { hours, .. } => {
                if !self.is_open(label, Signal::Headroom) {
                    let e = evidence(Signal::Headroom, *hours, 0.0, 24.0);
                    self.open(label, Signal::Headroom, e);
                }
            }
            E::HeadroomRecovered { hours, .. } => {
                let e = evidence(Signal::Headroom, hours.unwrap_or(f64::INFINITY), 0.0, 24.0);
                self.resolve(label, Signal::Headroom, e);
            }
        }
    }

    /// Resolves limit-change incidents open longer than [`LIMIT_CHANGE_NOTICE`]: they are notices.
    pub fn expire_limit_changes(&self, now: SystemTime) {
        let due: Vec<(Arc<str>, Evidence)> = lock(&self.log)
            .incidents
            .iter()
            .filter(|i| {
                i.signal == Signal::RateLimitChanged
                    && i.resolved_at.is_none()
                    && now
                        .duration_since(i.opened_at)
                        .is_ok_and(|d| d >= LIMIT_CHANGE_NOTICE)
            })
            .map(|i| (i.target.clone(), i.latest))
            .collect();
        for (target, e) in due {
            self.resolve(&target, Signal::RateLimitChanged, e);
        }
    }

    pub(crate) fn is_open(&self, label: &str, signal: Signal) -> bool {
        lock(&self.log)
            .incidents
            .iter()
            .any(|i| &*i.target == label && i.signal == signal && i.resolved_at.is_none())
    }

    /// Resolves every open incident of `signal` (`why` says for what).
    pub(crate) fn resolve_every(&self, signal: Signal, why: &str) {
        let open: Vec<(Arc<str>, Evidence)> = lock(&self.log)
            .incidents
            .iter()
            .filter(|i| i.signal == signal && i.resolved_at.is_none())
            .map(|i| (i.target.clone(), i.latest))
            .collect();
        for (target, e) in open {
            tracing::info!(target = &*target, signal = signal.as_str(), "{why}");
            self.resolve(&target, signal, e);
        }
    }

    /// The store, once it is open.
    pub(crate) fn store(&self) -> Option<&StoreHandle> {
        self.store.get()
    }

    /// Whether follow-ups can be kept (the store is open).
    pub fn has_store(&self) -> bool {
        self.store.get().is_some()
    }

    /// The target and signal of incident `id`, if this gateway knows it.
    fn incident_of(&self, id: u64) -> Option<(String, String)> {
        let found = lock(&self.log)
            .incidents
            .iter()
            .find(|i| i.id == id)
            .map(|i| (i.target.to_string(), i.signal));
        if let Some((target, signal)) = found {
            return Some((target, signal.as_str().to_owned()));
        }
        lock(&self.history)
            .iter()
            .find(|r| r.id == id)
            .map(|r| (r.target.clone(), r.signal.clone()))
    }

    /// Writes `row` through the store and waits (bounded) until it is on disk.
    async fn persist_followup(&self, row: FollowupRow) -> Result<(), FollowupError> {
        let store = self.store.get().ok_or(FollowupError::NoStore)?;
        let written = store.save_followup(row).map_err(|_| FollowupError::Busy)?;
        match tokio::time::timeout(WRITE_WAIT, written).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(FollowupError::Write(e)),
            Ok(Err(_)) => Err(FollowupError::Write(
                "the incident store stopped before writing the follow-up".to_owned(),
            )),
            Err(_) => Err(FollowupError::Write(format!(
                "the incident store did not write the follow-up within {}s",
                WRITE_WAIT.as_secs()
            ))),
        }
    }

    /// Adds a follow-up to incident `incident`, written to the store before it is listed.
    pub async fn add_followup(
        &self,
        incident: u64,
        new: NewFollowup,
        now: SystemTime,
    ) -> Result<FollowupRow, FollowupError> {
        if !self.has_store() {
            return Err(FollowupError::NoStore);
        }
        let (target, signal) = self
            .incident_of(incident)
            .ok_or(FollowupError::NoIncident(incident))?;
        let _one_at_a_time = self.followup_writes.lock().await;
        let row = {
            let mut f = lock(&self.followups);
            if !f.make_room() {
                return Err(FollowupError::Full);
            }
            let id = f.next_id;
            f.next_id = id.saturating_add(1);
            FollowupRow {
                id,
                incident,
                target,
                signal,
                text: new.text,
                owner: new.owner,
                due: new.due.shown,
                due_at: new.due.at,
                state: FollowupState::Open,
                created_at: now,
                updated_at: now,
            }
        };
        self.persist_followup(row.clone()).await?;
        lock(&self.followups).items.insert(row.id, row.clone());
        tracing::info!(
            followup = row.id,
            incident,
            "follow-up added (due {})",
            row.due
        );
        Ok(row)
    }

    /// Changes follow-up `id` (its state, owner, due date or text), written to the store first.
    pub async fn update_followup(
        &self,
        id: u64,
        change: FollowupChange,
        now: SystemTime,
    ) -> Result<FollowupRow, FollowupError> {
        if !self.has_store() {
            return Err(FollowupError::NoStore);
        }
        let _one_at_a_time = self.followup_writes.lock().await;
        let mut row = lock(&self.followups)
            .items
            .get(&id)
            .cloned()
            .ok_or(FollowupError::NoFollowup(id))?;
        if let Some(state) = change.state {
            row.state = state;
        }
        if let Some(owner) = change.owner {
            row.owner = owner;
        }
        if let Some(due) = change.due {
            row.due = due.shown;
            row.due_at = due.at;
        }
        if let Some(text) = change.text {
            row.text = text;
        }
        row.updated_at = now;
        self.persist_followup(row.clone()).await?;
        lock(&self.followups).items.insert(id, row.clone());
        tracing::info!(
            followup = id,
            incident = row.incident,
            state = row.state.as_str(),
            "follow-up changed"
        );
        Ok(row)
    }

    /// The follow-ups `filter` wants, soonest due first.
    pub fn followups(&self, filter: FollowupFilter, now: SystemTime) -> Vec<FollowupRow> {
        let mut list: Vec<FollowupRow> = lock(&self.followups)
            .items
            .values()
            .filter(|f| filter.state.is_none_or(|s| f.state == s))
            .filter(|f| filter.overdue.is_none_or(|o| f.overdue(now) == o))
            .filter(|f| filter.incident.is_none_or(|i| f.incident == i))
            .cloned()
            .collect();
        list.sort_by(|a, b| a.due_at.cmp(&b.due_at).then(a.id.cmp(&b.id)));
        list
    }

    /// Overdue follow-ups at `now`, by their incident's signal, for metrics.
    pub fn overdue_counts(&self, now: SystemTime) -> [i64; Signal::COUNT] {
        let mut n = [0i64; Signal::COUNT];
        for f in lock(&self.followups).items.values() {
            if f.overdue(now)
                && let Some(c) = signal_named(&f.signal).and_then(|s| n.get_mut(s.index()))
            {
                *c = c.saturating_add(1);
            }
        }
        n
    }

    /// Per incident: its follow-ups, as JSON, and how many are open and overdue.
    fn followups_by_incident(&self, now: SystemTime) -> HashMap<u64, (Vec<Value>, usize, usize)> {
        let mut by: HashMap<u64, (Vec<Value>, usize, usize)> = HashMap::new();
        for f in lock(&self.followups).items.values() {
            let e = by.entry(f.incident).or_default();
            e.0.push(followup_json(f, now));
            if f.state == FollowupState::Open {
                e.1 = e.1.saturating_add(1);
            }
            if f.overdue(now) {
                e.2 = e.2.saturating_add(1);
            }
        }
        by
    }

    /// The weekly digest at `now`: open incidents, overdue follow-ups, and the incidents of the
    /// last [`DIGEST_WINDOW`] that repeat earlier ones, by target and signal.
    pub fn digest(&self, now: SystemTime) -> Digest {
        let since = now.checked_sub(DIGEST_WINDOW).unwrap_or(UNIX_EPOCH);
        let followups = self.followups_by_incident(now);
        let counts = |id: u64| followups.get(&id).map_or((0, 0), |(_, o, d)| (*o, *d));
        // (id, target, signal, opened_at, recurrence) of every incident known, newest first.
        let mut all: Vec<(u64, String, String, SystemTime, Option<Recurrence>)> = Vec::new();
        let mut open = Vec::new();
        {
            let log = lock(&self.log);
            for i in log.incidents.iter().rev() {
                let target = i.target.to_string();
                if i.resolved_at.is_none() {
                    let (o, d) = counts(i.id);
                    open.push(DigestIncident {
                        id: i.id,
                        target: target.clone(),
                        signal: i.signal.as_str().to_owned(),
                        severity: i.severity().to_owned(),
                        opened_at: i.opened_at,
                        followups_open: o,
                        followups_overdue: d,
                        recurrence: i.recurrence.clone(),
                    });
                }
                all.push((
                    i.id,
                    target,
                    i.signal.as_str().to_owned(),
                    i.opened_at,
                    i.recurrence.clone(),
                ));
            }
        }
        for r in lock(&self.history).iter().rev() {
            all.push((
                r.id,
                r.target.clone(),
                r.signal.clone(),
                r.opened_at,
                r.recurrence.clone(),
            ));
        }
        let opened = all
            .iter()
            .filter(|(_, _, _, at, _)| *at >= since && *at <= now)
            .count();
        // Classes with a recurring incident opened in the window: every incident of the class in
        // the window, and the latest one's place in its 30-day series.
        let mut recurrences: Vec<DigestRecurrence> = Vec::new();
        for (id, target, signal, at, rec) in &all {
            if *at < since || *at > now {
                continue;
            }
            if let Some(r) = recurrences
                .iter_mut()
                .find(|r| &r.target == target && &r.signal == signal)
            {
                r.ids.push(*id);
                continue;
            }
            if let Some(rec) = rec {
                // `all` is newest first: this is the class's latest incident in the window.
                recurrences.push(DigestRecurrence {
                    target: target.clone(),
                    signal: signal.clone(),
                    ids: vec![*id],
                    last_at: *at,
                    in_30_days: rec.ordinal(),
                });
            }
        }
        let overdue: Vec<DigestFollowup> = self
            .followups(
                FollowupFilter {
                    overdue: Some(true),
                    ..FollowupFilter::default()
                },
                now,
            )
            .into_iter()
            .map(|f| DigestFollowup {
                id: f.id,
                incident: f.incident,
                target: f.target,
                signal: f.signal,
                text: f.text,
                owner: f.owner,
                due: f.due,
                due_at: f.due_at,
            })
            .collect();
        Digest {
            at: now,
            since,
            opened,
            open,
            overdue,
            recurrences,
        }
    }
}

impl Incidents {
    /// Per target and signal: the detector's score and threshold, for metrics.
    pub fn scores(&self) -> Vec<[(f64, f64); Signal::COUNT]> {
        self.watches
            .iter()
            .map(|w| {
                let d = lock(&w.detectors);
                Signal::ALL.map(|s| {
                    let e = d.evidence(s);
                    (e.score, e.threshold)
                })
            })
            .collect()
    }

    /// `target`'s detectors: each signal's evidence now.
    pub fn detectors_json(&self, target: usize) -> Value {
        let Some(w) = self.watches.get(target) else {
            return Value::Null;
        };
        let d = lock(&w.detectors);
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

    /// Every kept incident, newest first, with the latest evidence of open ones, its recurrence and
    /// its follow-ups (overdue at `now`).
    pub fn snapshot(&self, now: SystemTime) -> Value {
        let mut latest: Vec<(Arc<str>, Signal, Evidence)> = Vec::new();
        {
            let log = lock(&self.log);
            for i in log.incidents.iter().filter(|i| i.resolved_at.is_none()) {
                latest.push((i.target.clone(), i.signal, i.latest));
            }
        }
        for (target, signal, e) in &mut latest {
            let watch = self
                .labels
                .iter()
                .position(|l| l == target)
                .and_then(|i| self.watches.get(i));
            if let Some(w) = watch {
                *e = lock(&w.detectors).evidence(*signal);
            }
        }
        let mut followups = self.followups_by_incident(now);
        let mut remediation = |id: u64, v: &mut Value| {
            let (list, open, overdue) = followups.remove(&id).unwrap_or_default();
            v["followups"] = Value::Array(list);
            v["followups_open"] = json!(open);
            v["followups_overdue"] = json!(overdue);
            v["overdue"] = json!(overdue > 0);
        };
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
                let mut v = json!({
                    "id": i.id,
                    "target": &*i.target,
                    "signal": i.signal.as_str(),
                    "severity": i.severity(),
                    "state": if i.resolved_at.is_some() { "resolved" } else { "open" },
                    "opened_at": rfc3339(i.opened_at),
                    "resolved_at": i.resolved_at.map(rfc3339),
                    "evidence_at_open": evidence_json(&i.opened_with),
                    "evidence_now": evidence_json(&now),
                    "recurrence": i.recurrence.as_ref().map(recurrence_json),
                });
                remediation(i.id, &mut v);
                v
            })
            .collect();
        drop(log);
        // Then the earlier runs' incidents from the store, newest first.
        let history = lock(&self.history);
        let earlier: Vec<Value> = history
            .iter()
            .rev()
            .map(|r| {
                let parse = |s: &str| serde_json::from_str::<Value>(s).unwrap_or(Value::Null);
                let mut v = json!({
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
                    "recurrence": r.recurrence.as_ref().map(recurrence_json),
                });
                remediation(r.id, &mut v);
                v
            })
            .collect();
        drop(history);
        let all: Vec<Value> = list.into_iter().chain(earlier).collect();
        let overdue: i64 = self.overdue_counts(now).iter().sum();
        json!({ "incidents": all, "followups_overdue": overdue })
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

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn due_dates_are_rfc3339_dates_or_date_times() {
        let check = |s: &str, shown: &str, secs: u64| {
            let d = parse_due(s).unwrap();
            assert_eq!((d.shown.as_str(), d.at), (shown, at(secs)), "{s}");
        };
        // A date is due by the end of that day, UTC.
        check("2026-03-10", "2026-03-10", 1_773_187_200);
        check(" 2024-02-29 ", "2024-02-29", 1_709_251_200);
        check(
            "2026-03-10T17:00:00Z",
            "2026-03-10T17:00:00Z",
            1_773_162_000,
        );
        check(
            "2026-03-10t17:00:00.250z",
            "2026-03-10T17:00:00Z",
            1_773_162_000,
        );
        check(
            "2026-03-10T19:00:00+02:00",
            "2026-03-10T17:00:00Z",
            1_773_162_000,
        );
        check(
            "2026-03-10T12:30:00-04:30",
            "2026-03-10T17:00:00Z",
            1_773_162_000,
        );
        for bad in [
            "",
            "tomorrow",
            "2026-3-10",
            "2026-02-29",
            "2026-13-01",
            "2026-04-31",
            "1969-12-31",
            "2026-03-10T17:00:00",
            "2026-03-10T25:00:00Z",
            "2026-03-10T17:00Z",
            "2026-03-10T17:00:00+2",
            "2026-03-10T00:00:00+01:00x",
            "1970-01-01T00:00:00+01:00",
        ] {
            let e = parse_due(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
    }

    #[test]
    fn follow_up_text_is_checked() {
        assert_eq!(check_text("owner", "  alice ", 10).unwrap(), "alice");
        assert!(
            check_text("owner", "   ", 10)
                .unwrap_err()
                .contains("empty")
        );
        assert!(
            check_text("owner", "abcdefghijk", 10)
                .unwrap_err()
                .contains("at most 10")
        );
        assert!(
            check_text("owner", "a\nb", 10)
                .unwrap_err()
                .contains("control")
        );
        assert_eq!(check_text("text", "a\nb", 10).unwrap(), "a\nb");
        assert!(check_text("text", "a\u{7}b", 10).is_err());
    }

    #[test]
    fn ordinals() {
        let got: Vec<String> = [1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 101, 111, 112]
            .into_iter()
            .map(ordinal)
            .collect();
        assert_eq!(
            got,
            [
                "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd",
                "101st", "111th", "112th"
            ]
        );
    }

    #[test]
    fn a_recurrence_counts_the_earlier_incidents_of_the_last_30_days() {
        let day = 86_400;
        let now = at(100 * day);
        assert_eq!(recurrence_of([], now), None);
        // 31 days ago is outside the window; a later one (clock skew) is ignored too.
        assert_eq!(
            recurrence_of([(1, at(69 * day)), (9, at(101 * day))], now),
            None
        );
        let r = recurrence_of(
            [
                (1, at(69 * day)),
                (3, at(75 * day)),
                (7, at(99 * day)),
                (7, at(99 * day)),
            ],
            now,
        )
        .unwrap();
        assert_eq!(r.count, 2);
        assert_eq!(r.earlier, vec![7, 3]);
        assert_eq!(r.last_at, at(99 * day));
        assert_eq!(r.ordinal(), 3);
        let many = recurrence_of((1..=40).map(|i| (i, at(90 * day))), now).unwrap();
        assert_eq!(many.count, 40);
        assert_eq!(many.earlier.len(), RECURRENCE_IDS);
        assert_eq!(many.earlier.first(), Some(&40));
    }

    /// Opens hard-failure incidents on target 0 until `n` have opened (each resolved before the
    /// next), as the attempt records would.
    fn flap(i: &Incidents, n: usize) {
        for _ in 0..n {
            for _ in 0..HARD_FAILURES {
                i.observe(&attempt(0, true), "p/m", true);
            }
            i.observe(&attempt(0, false), "p/m", true);
        }
    }

    #[test]
    fn a_repeat_of_the_same_signal_on_the_same_target_links_to_the_earlier_ones() {
        let i = Incidents::new(
            &["p/m".to_owned(), "q/m".to_owned()],
            Alerts::new(Vec::new()),
        );
        flap(&i, 3);
        // Another target's incident is not part of the series.
        for _ in 0..HARD_FAILURES {
            i.observe(&attempt(1, true), "q/m", true);
        }
        let v = i.snapshot(SystemTime::now());
        let hard: Vec<&Value> = v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|x| x["signal"] == "hard_failure")
            .collect();
        assert_eq!(hard.len(), 4, "{v}");
        assert_eq!(hard[0]["target"], "q/m");
        assert_eq!(hard[0]["recurrence"], Value::Null);
        let third = &hard[1]["recurrence"];
        assert_eq!(third["ordinal"], 3, "{v}");
        assert_eq!(third["earlier_ids"], json!([hard[2]["id"], hard[3]["id"]]));
        assert_eq!(hard[3]["recurrence"], Value::Null);
        assert!(
            super::super::alerts::recurrence_line(
                i.log
                    .lock()
                    .unwrap()
                    .incidents
                    .iter()
                    .rev()
                    .nth(1)
                    .and_then(|x| x.recurrence.as_ref())
                    .unwrap(),
                Signal::HardFailure,
                "p/m"
            )
            .starts_with("recurrence: 3rd hard_failure incident on p/m in 30 days (after #")
        );
    }

    fn temp_store(name: &str) -> std::path::PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "ballast-incidents-{name}-{}-{nanos}.sqlite",
            std::process::id()
        ))
    }

    /// A follow-up is overdue from its due time on (time passed in), until it is done; the count
    /// by signal and the digest follow.
    #[tokio::test]
    async fn follow_ups_become_overdue_when_their_due_time_passes() {
        let i = Incidents::new(&["p/m".to_owned()], Alerts::new(Vec::new()));
        let due = parse_due("2030-01-01T12:00:00Z").unwrap();
        let new = NewFollowup {
            text: "rotate the key".to_owned(),
            owner: "alice".to_owned(),
            due: due.clone(),
        };
        // No store: refused.
        assert_eq!(
            i.add_followup(1, new.clone(), at(0)).await.unwrap_err(),
            FollowupError::NoStore
        );
        let path = temp_store("overdue");
        let (conn, loaded) = crate::store::open(&path).unwrap();
        let (handle, thread) = crate::store::start(conn, path.clone());
        i.attach_store(handle, loaded);
        assert_eq!(
            i.add_followup(1, new.clone(), at(0)).await.unwrap_err(),
            FollowupError::NoIncident(1)
        );
        flap(&i, 2);
        let created = at(1_800_000_000);
        let f = i.add_followup(2, new, created).await.unwrap();
        assert_eq!((f.id, f.incident, f.state), (1, 2, FollowupState::Open));
        let before = due.at - Duration::from_secs(1);
        let hard = Signal::HardFailure.index();
        assert_eq!(i.overdue_counts(before)[hard], 0);
        assert_eq!(i.overdue_counts(due.at)[hard], 1);
        assert_eq!(i.overdue_counts(due.at).iter().sum::<i64>(), 1);
        let v = i.snapshot(due.at);
        assert_eq!(v["followups_overdue"], 1);
        assert_eq!(v["incidents"][0]["overdue"], true, "{v}");
        assert_eq!(v["incidents"][0]["followups"][0]["owner"], "alice");
        assert_eq!(v["incidents"][1]["overdue"], false);

        // The digest a week after the due time: nothing open (both incidents resolved), the
        // follow-up overdue, the recurrence listed only while it is within the week.
        let week_after = due.at + Duration::from_secs(7 * 86_400);
        let d = i.digest(week_after);
        assert!(d.open.is_empty());
        assert_eq!(d.overdue.len(), 1);
        assert_eq!(d.overdue[0].owner, "alice");
        assert!(d.recurrences.is_empty(), "{d:?}");
        let d = i.digest(SystemTime::now());
        assert_eq!(d.recurrences.len(), 1, "{d:?}");
        assert_eq!(d.recurrences[0].ids, vec![2, 1]);
        assert_eq!(d.recurrences[0].in_30_days, 2);
        assert_eq!(d.opened, 2);
        let text = i.digest(week_after).text();
        assert!(
            text.contains("owner alice, due 2030-01-01T12:00:00Z (7 days overdue): rotate the key"),
            "{text}"
        );

        // Done: no longer overdue; written through to the store.
        let change = FollowupChange {
            state: Some(FollowupState::Done),
            ..FollowupChange::default()
        };
        let f = i.update_followup(1, change, week_after).await.unwrap();
        assert_eq!(f.state, FollowupState::Done);
        assert_eq!(i.overdue_counts(week_after)[hard], 0);
        assert_eq!(
            i.update_followup(9, FollowupChange::default(), week_after)
                .await
                .unwrap_err(),
            FollowupError::NoFollowup(9)
        );
        i.stop_store();
        thread.join().unwrap();
        let stored = crate::store::followup_history(&path).unwrap();
        assert_eq!(stored.len(), 1);
        assert_eq!(stored[0].state, FollowupState::Done);
        assert_eq!(stored[0].updated_at, week_after);
        let _ = std::fs::remove_file(&path);
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

        let i = Incidents::new(&["p/m".to_owned()], Alerts::new(Vec::new()));
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
        let i = Incidents::new(&["p/m".to_owned()], Alerts::new(Vec::new()));
        let wrong = AnswerFacts {
            wrong_script: ScriptSet::of(ballast_core::script::Script::Thai),
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
