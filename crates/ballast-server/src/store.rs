//! The incident store: incidents and their follow-ups kept in an embedded SQLite file so they
//! survive restarts. The request path never touches the file: incidents hand rows to a bounded
//! queue, and one writer thread — started by [`crate::Background`], stopped and drained on shutdown —
//! writes them. At start the store is read back (and its schema migrated); incidents still open in
//! it (their detectors start afresh) are closed as "gateway restarted".
//!
//! Incident rows hold target names, signals, timestamps and numbers: never request or answer text.
//! Follow-up rows hold the operators' own text (what to do, who, by when), written through the admin
//! API; each write is acknowledged, so the API answers only once it is on disk.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, OptionalExtension, params};
use serde_json::json;

/// Rows waiting for the writer before new ones are dropped.
const QUEUE: usize = 1024;
/// Incidents read back at start.
const LOAD: usize = 1000;
/// Follow-ups read back at start (open ones first, then the newest closed ones).
pub const FOLLOWUPS_LOAD: usize = 10_000;
/// The schema this build writes (`PRAGMA user_version`): 0 was incidents only; 1 added each
/// incident's recurrence and the follow-ups table; 2 the configuration versions.
const SCHEMA: i64 = 2;

/// One configuration the gateway ran: kept when it starts with one that differs from the last.
#[derive(Clone, Debug, PartialEq)]
pub struct VersionRow {
    pub id: u64,
    /// FNV-1a (64-bit, hex) of its redacted TOML: which configuration, not a secret's digest.
    pub hash: String,
    pub applied_at: SystemTime,
    /// How it was applied (`ballast serve` at start).
    pub source: String,
    /// What changed from the version before it (`ConfigDiff::summary`).
    pub summary: String,
    pub outcome: String,
    /// The configuration as `GET /admin/config` renders it: every secret replaced.
    pub config: String,
}

/// The hash [`VersionRow::hash`] names a configuration by.
pub fn config_hash(redacted: &str) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in redacted.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("{h:016x}")
}

/// Keeps `redacted` as a new version unless it is the one the store saw last; `summary` says what
/// changed from that one's text. Returns the new row, or `None` when nothing changed.
pub fn record_config(
    conn: &Connection,
    redacted: &str,
    source: &str,
    summary: impl FnOnce(Option<&str>) -> String,
    now: SystemTime,
) -> rusqlite::Result<Option<VersionRow>> {
    let hash = config_hash(redacted);
    let last: Option<(String, String)> = conn
        .query_row(
            "SELECT hash, config FROM config_versions ORDER BY id DESC LIMIT 1",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .optional()?;
    if last.as_ref().is_some_and(|(h, _)| *h == hash) {
        return Ok(None);
    }
    let summary = summary(last.as_ref().map(|(_, c)| c.as_str()));
    let outcome = "applied".to_owned();
    conn.execute(
        "INSERT INTO config_versions (hash, applied_at, source, summary, outcome, config)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
        params![hash, secs(now), source, summary, outcome, redacted],
    )?;
    Ok(Some(VersionRow {
        id: u64::try_from(conn.last_insert_rowid()).unwrap_or(0),
        hash,
        applied_at: time(secs(now)),
        source: source.to_owned(),
        summary,
        outcome,
        config: redacted.to_owned(),
    }))
}

/// The configuration versions of a store file, newest first, without writing to it (none in a
/// file written before versions were kept).
pub fn config_versions(path: &Path, limit: usize) -> Result<Vec<VersionRow>, StoreError> {
    let conn = open_read_only(path)?;
    if schema(&conn).map_err(|e| store_error(path, &e))? < 2 {
        return Ok(Vec::new());
    }
    read_versions(&conn, limit).map_err(|e| store_error(path, &e))
}

fn read_versions(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<VersionRow>> {
    let mut stmt = conn.prepare(
        "SELECT id, hash, applied_at, source, summary, outcome, config FROM config_versions
         ORDER BY id DESC LIMIT ?1",
    )?;
    let rows = stmt.query_map(params![i64::try_from(limit).unwrap_or(i64::MAX)], |r| {
        Ok(VersionRow {
            id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
            hash: r.get(1)?,
            applied_at: time(r.get(2)?),
            source: r.get(3)?,
            summary: r.get(4)?,
            outcome: r.get(5)?,
            config: r.get(6)?,
        })
    })?;
    rows.collect()
}

/// One incident as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub id: u64,
    pub target: String,
    pub signal: String,
    pub severity: String,
    pub opened_at: SystemTime,
    pub resolved_at: Option<SystemTime>,
    /// How it ended ("evidence back to normal", "gateway restarted").
    pub resolution: Option<String>,
    /// The evidence at open and the latest, as JSON objects of numbers (and, for a wrong-script
    /// test on one script, its name).
    pub evidence_at_open: String,
    pub evidence_latest: String,
    /// The earlier incidents of the same signal on the same target it repeats, when it does.
    pub recurrence: Option<Recurrence>,
}

/// An incident that repeats earlier ones: the same signal on the same target within
/// [`crate::incidents::RECURRENCE_WINDOW`].
#[derive(Clone, Debug, PartialEq)]
pub struct Recurrence {
    /// Earlier incidents of this class in the window (this one is the `count + 1`th).
    pub count: u32,
    /// Their ids, newest first (at most [`crate::incidents::RECURRENCE_IDS`]).
    pub earlier: Vec<u64>,
    /// When the latest of them opened.
    pub last_at: SystemTime,
}

impl Recurrence {
    /// This incident's place in the series: 2 for the first repeat.
    pub fn ordinal(&self) -> u32 {
        self.count.saturating_add(1)
    }

    fn to_column(&self) -> String {
        json!({ "count": self.count, "earlier": self.earlier, "last_at": secs(self.last_at) })
            .to_string()
    }

    fn from_column(s: &str) -> Option<Self> {
        let v: serde_json::Value = serde_json::from_str(s).ok()?;
        Some(Self {
            count: u32::try_from(v.get("count")?.as_u64()?).unwrap_or(u32::MAX),
            earlier: v
                .get("earlier")?
                .as_array()?
                .iter()
                .filter_map(serde_json::Value::as_u64)
                .collect(),
            last_at: time(v.get("last_at")?.as_i64()?),
        })
    }
}

/// Where a follow-up stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FollowupState {
    Open,
    Done,
    Dropped,
}

impl FollowupState {
    pub const ALL: [FollowupState; 3] = [Self::Open, Self::Done, Self::Dropped];

    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Done => "done",
            Self::Dropped => "dropped",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

/// One follow-up item of an incident, as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct FollowupRow {
    pub id: u64,
    pub incident: u64,
    /// The incident's target and signal, copied when the follow-up was made.
    pub target: String,
    pub signal: String,
    /// What to do: the operators' own words.
    pub text: String,
    pub owner: String,
    /// The due date as given, normalised: `2026-03-10` or `2026-03-10T12:00:00Z`.
    pub due: String,
    /// From when it is overdue (a date is due by the end of that day, UTC).
    pub due_at: SystemTime,
    pub state: FollowupState,
    pub created_at: SystemTime,
    pub updated_at: SystemTime,
}

impl FollowupRow {
    /// Open past its due time at `now`.
    pub fn overdue(&self, now: SystemTime) -> bool {
        self.state == FollowupState::Open && now >= self.due_at
    }
}

/// What a store holds at start.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The recent incidents, oldest first.
    pub incidents: Vec<Row>,
    /// Follow-ups: every open one and the newest closed ones, up to [`FOLLOWUPS_LOAD`].
    pub followups: Vec<FollowupRow>,
    /// The highest follow-up id ever stored (0: none).
    pub max_followup: u64,
}

/// The writer's answer to an acknowledged write: written, or why not.
pub type Ack = tokio::sync::oneshot::Sender<Result<(), String>>;

pub enum Op {
    Save(Box<Row>),
    /// A configuration version a running gateway took (its id chosen by the gateway).
    Version(Box<VersionRow>),
    /// What became of a version (promoted, rolled back, superseded).
    VersionOutcome(u64, String),
    Followup(Box<FollowupRow>, Ack),
    Stop,
}

/// The queue into the writer thread.
pub struct StoreHandle {
    tx: SyncSender<Op>,
    dropped: AtomicU64,
}

/// The writer's queue is full (or the writer has stopped).
#[derive(Debug)]
pub struct Busy;

impl StoreHandle {
    /// Queues a row; never waits.
    pub fn save(&self, row: Row) {
        match self.tx.try_send(Op::Save(Box::new(row))) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                let n = self
                    .dropped
                    .fetch_add(1, Ordering::Relaxed)
                    .saturating_add(1);
                tracing::warn!(
                    dropped = n,
                    "incident store queue full: a row was not written"
                );
            }
            Err(TrySendError::Disconnected(_)) => {}
        }
    }

    /// Queues a follow-up (new or changed) without waiting; the receiver says when it is written.
    pub fn save_followup(
        &self,
        row: FollowupRow,
    ) -> Result<tokio::sync::oneshot::Receiver<Result<(), String>>, Busy> {
        let (ack, done) = tokio::sync::oneshot::channel();
        self.tx
            .try_send(Op::Followup(Box::new(row), ack))
            .map_err(|_| Busy)?;
        Ok(done)
    }

    /// Queues a configuration version; never waits.
    pub fn save_version(&self, row: VersionRow) {
        self.queue(Op::Version(Box::new(row)));
    }

    /// Queues a version's new outcome; never waits.
    pub fn set_version_outcome(&self, id: u64, outcome: &str) {
        self.queue(Op::VersionOutcome(id, outcome.to_owned()));
    }

    fn queue(&self, op: Op) {
        if let Err(TrySendError::Full(_)) = self.tx.try_send(op) {
            let n = self
                .dropped
                .fetch_add(1, Ordering::Relaxed)
                .saturating_add(1);
            tracing::warn!(
                dropped = n,
                "incident store queue full: a row was not written"
            );
        }
    }

    pub fn stop(&self) {
        let _ = self.tx.try_send(Op::Stop);
    }
}

/// Why the store could not be used: said with the path and what to do.
#[derive(Debug, thiserror::Error)]
#[error("cannot use the incident store {path}: {cause}. {advice}")]
pub struct StoreError {
    pub path: String,
    pub cause: String,
    pub advice: &'static str,
}

fn store_error(path: &Path, e: &rusqlite::Error) -> StoreError {
    let (cause, advice) = match e.sqlite_error_code() {
        Some(rusqlite::ErrorCode::NotADatabase) => (
            "the file is not an SQLite database (or is corrupt)".to_owned(),
            "Move it aside (Ballast starts a new one) or set [incidents] store to another path.",
        ),
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => (
            "the file is locked by another process".to_owned(),
            "Give each Ballast instance its own [incidents] store path.",
        ),
        Some(rusqlite::ErrorCode::CannotOpen | rusqlite::ErrorCode::PermissionDenied) => (
            e.to_string(),
            "Check that the directory exists and is writable, or set [incidents] store.",
        ),
        _ => (
            e.to_string(),
            "Move the file aside or set [incidents] store to another path.",
        ),
    };
    StoreError {
        path: path.display().to_string(),
        cause,
        advice,
    }
}

fn secs(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

fn time(secs: i64) -> SystemTime {
    UNIX_EPOCH
        .checked_add(Duration::from_secs(u64::try_from(secs).unwrap_or(0)))
        .unwrap_or(UNIX_EPOCH)
}

fn id(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn schema(conn: &Connection) -> rusqlite::Result<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0))
}

/// Reads the incidents of a store file without writing to it (for `ballast incidents`).
pub fn history(path: &Path, limit: usize) -> Result<Vec<Row>, StoreError> {
    let conn = open_read_only(path)?;
    read(&conn, limit).map_err(|e| store_error(path, &e))
}

/// Reads the follow-ups of a store file without writing to it (for `ballast incidents`), newest
/// first; none in a file written before follow-ups existed.
pub fn followup_history(path: &Path) -> Result<Vec<FollowupRow>, StoreError> {
    let conn = open_read_only(path)?;
    let mut rows = read_followups(&conn, usize::MAX).map_err(|e| store_error(path, &e))?;
    rows.sort_by_key(|r| std::cmp::Reverse(r.id));
    Ok(rows)
}

fn open_read_only(path: &Path) -> Result<Connection, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| store_error(path, &e))?;
    // A gateway may be writing to it: wait a moment for its lock rather than fail.
    conn.busy_timeout(Duration::from_millis(500))
        .map_err(|e| store_error(path, &e))?;
    Ok(conn)
}

/// Brings a store written by an earlier version up to [`SCHEMA`], one step at a time, each in one
/// transaction.
fn migrate(conn: &Connection) -> rusqlite::Result<()> {
    if schema(conn)? >= SCHEMA {
        return Ok(());
    }
    if schema(conn)? < 1 {
        migrate_to_1(conn)?;
    }
    if schema(conn)? < 2 {
        let tx = conn.unchecked_transaction()?;
        tx.execute_batch(
            "CREATE TABLE IF NOT EXISTS config_versions (
                id INTEGER PRIMARY KEY,
                hash TEXT NOT NULL,
                applied_at INTEGER NOT NULL,
                source TEXT NOT NULL,
                summary TEXT NOT NULL,
                outcome TEXT NOT NULL,
                config TEXT NOT NULL
             );
             PRAGMA user_version = 2;",
        )?;
        tx.commit()?;
    }
    Ok(())
}

fn migrate_to_1(conn: &Connection) -> rusqlite::Result<()> {
    let tx = conn.unchecked_transaction()?;
    tx.execute_batch(
        "ALTER TABLE incidents ADD COLUMN recurrence TEXT;
         CREATE TABLE IF NOT EXISTS followups (
            id INTEGER PRIMARY KEY,
            incident INTEGER NOT NULL,
            target TEXT NOT NULL,
            signal TEXT NOT NULL,
            text TEXT NOT NULL,
            owner TEXT NOT NULL,
            due TEXT NOT NULL,
            due_at INTEGER NOT NULL,
            state TEXT NOT NULL,
            created_at INTEGER NOT NULL,
            updated_at INTEGER NOT NULL
         );
         CREATE INDEX IF NOT EXISTS followups_incident ON followups (incident);
         PRAGMA user_version = 1;",
    )?;
    tx.commit()
}

/// Opens (creating if needed) the store at `path`: its schema (migrated from an earlier version's),
/// its recent incidents (newest last), with those left open by a previous run closed as "gateway
/// restarted", and its follow-ups.
pub fn open(path: &Path) -> Result<(Connection, Loaded), StoreError> {
    let conn = Connection::open(path).map_err(|e| store_error(path, &e))?;
    conn.busy_timeout(Duration::from_millis(200))
        .map_err(|e| store_error(path, &e))?;
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS incidents (
            id INTEGER PRIMARY KEY,
            target TEXT NOT NULL,
            signal TEXT NOT NULL,
            severity TEXT NOT NULL,
            opened_at INTEGER NOT NULL,
            resolved_at INTEGER,
            resolution TEXT,
            evidence_at_open TEXT NOT NULL,
            evidence_latest TEXT NOT NULL
        );",
    )
    .map_err(|e| store_error(path, &e))?;
    migrate(&conn).map_err(|e| store_error(path, &e))?;
    let now = secs(SystemTime::now());
    conn.execute(
        "UPDATE incidents SET resolved_at = ?1, resolution = 'gateway restarted (detectors start afresh)'
         WHERE resolved_at IS NULL",
        params![now],
    )
    .map_err(|e| store_error(path, &e))?;
    let incidents = read(&conn, LOAD).map_err(|e| store_error(path, &e))?;
    let followups = read_followups(&conn, FOLLOWUPS_LOAD).map_err(|e| store_error(path, &e))?;
    let max_followup = conn
        .query_row("SELECT MAX(id) FROM followups", [], |r| {
            r.get::<_, Option<i64>>(0)
        })
        .map_err(|e| store_error(path, &e))?
        .map_or(0, |n| u64::try_from(n).unwrap_or(0));
    Ok((
        conn,
        Loaded {
            incidents,
            followups,
            max_followup,
        },
    ))
}

/// The `limit` newest incidents, oldest first.
pub fn read(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Row>> {
    // A file of an earlier version (read-only, not migrated) has no recurrence column.
    let recurrence = if schema(conn)? >= 1 {
        "recurrence"
    } else {
        "NULL"
    };
    let mut stmt = conn.prepare(&format!(
        "SELECT id, target, signal, severity, opened_at, resolved_at, resolution,
                evidence_at_open, evidence_latest, {recurrence}
         FROM incidents ORDER BY id DESC LIMIT ?1"
    ))?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let mut rows: Vec<Row> = stmt
        .query_map(params![limit], |r| {
            Ok(Row {
                id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                target: r.get(1)?,
                signal: r.get(2)?,
                severity: r.get(3)?,
                opened_at: time(r.get(4)?),
                resolved_at: r.get::<_, Option<i64>>(5)?.map(time),
                resolution: r.get(6)?,
                evidence_at_open: r.get(7)?,
                evidence_latest: r.get(8)?,
                recurrence: r
                    .get::<_, Option<String>>(9)?
                    .as_deref()
                    .and_then(Recurrence::from_column),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    Ok(rows)
}

/// Up to `limit` follow-ups: the open ones first, then the newest closed ones; none before schema 1.
fn read_followups(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<FollowupRow>> {
    if schema(conn)? < 1 {
        return Ok(Vec::new());
    }
    let mut stmt = conn.prepare(
        "SELECT id, incident, target, signal, text, owner, due, due_at, state, created_at, updated_at
         FROM followups ORDER BY (state = 'open') DESC, id DESC LIMIT ?1",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt
        .query_map(params![limit], |r| {
            let state: String = r.get(8)?;
            Ok(FollowupRow {
                id: u64::try_from(r.get::<_, i64>(0)?).unwrap_or(0),
                incident: u64::try_from(r.get::<_, i64>(1)?).unwrap_or(0),
                target: r.get(2)?,
                signal: r.get(3)?,
                text: r.get(4)?,
                owner: r.get(5)?,
                due: r.get(6)?,
                due_at: time(r.get(7)?),
                // A state this build does not know (a later one's) reads as open: still tracked.
                state: FollowupState::parse(&state).unwrap_or(FollowupState::Open),
                created_at: time(r.get(9)?),
                updated_at: time(r.get(10)?),
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    Ok(rows)
}

fn write(conn: &Connection, row: &Row) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO incidents (id, target, signal, severity, opened_at, resolved_at, resolution,
                                evidence_at_open, evidence_latest, recurrence)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)
         ON CONFLICT(id) DO UPDATE SET resolved_at = excluded.resolved_at,
             resolution = excluded.resolution, evidence_latest = excluded.evidence_latest",
        params![
            id(row.id),
            row.target,
            row.signal,
            row.severity,
            secs(row.opened_at),
            row.resolved_at.map(secs),
            row.resolution,
            row.evidence_at_open,
            row.evidence_latest,
            row.recurrence.as_ref().map(Recurrence::to_column),
        ],
    )?;
    Ok(())
}

fn write_version(conn: &Connection, v: &VersionRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT OR REPLACE INTO config_versions (id, hash, applied_at, source, summary, outcome, config)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![
            i64::try_from(v.id).unwrap_or(i64::MAX),
            v.hash,
            secs(v.applied_at),
            v.source,
            v.summary,
            v.outcome,
            v.config
        ],
    )?;
    Ok(())
}

fn write_followup(conn: &Connection, f: &FollowupRow) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO followups (id, incident, target, signal, text, owner, due, due_at, state,
                                created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT(id) DO UPDATE SET text = excluded.text, owner = excluded.owner,
             due = excluded.due, due_at = excluded.due_at, state = excluded.state,
             updated_at = excluded.updated_at",
        params![
            id(f.id),
            id(f.incident),
            f.target,
            f.signal,
            f.text,
            f.owner,
            f.due,
            secs(f.due_at),
            f.state.as_str(),
            secs(f.created_at),
            secs(f.updated_at),
        ],
    )?;
    Ok(())
}

/// Starts the writer thread on an opened store.
pub fn start(conn: Connection, path: PathBuf) -> (StoreHandle, std::thread::JoinHandle<()>) {
    let (tx, rx) = sync_channel(QUEUE);
    let shown = path.display().to_string();
    let thread = std::thread::Builder::new()
        .name("ballast-store".to_owned())
        .spawn(move || writer(&conn, &rx, &shown));
    let handle = StoreHandle {
        tx,
        dropped: AtomicU64::new(0),
    };
    match thread {
        Ok(t) => (handle, t),
        Err(e) => {
            tracing::error!(
                "cannot start the incident store writer: {e}; incidents are kept in memory only"
            );
            // A thread that ends at once: the queue is disconnected, rows are dropped.
            let t = std::thread::spawn(|| {});
            (handle, t)
        }
    }
}

fn writer(conn: &Connection, rx: &Receiver<Op>, path: &str) {
    let mut failing = false;
    while let Ok(op) = rx.recv() {
        match op {
            Op::Save(row) => match write(conn, &row) {
                Ok(()) => failing = false,
                Err(e) => {
                    // Reported once per failing spell, not per row.
                    if !failing {
                        tracing::error!("cannot write to the incident store {path}: {e}");
                    }
                    failing = true;
                }
            },
            Op::Followup(row, ack) => {
                let written = write_followup(conn, &row).map_err(|e| {
                    tracing::error!("cannot write a follow-up to the incident store {path}: {e}");
                    format!("cannot write to the incident store {path}: {e}")
                });
                // The admin request may have given up waiting: nothing to tell then.
                let _ = ack.send(written);
            }
            Op::Version(row) => {
                if let Err(e) = write_version(conn, &row) {
                    tracing::error!(
                        "cannot keep configuration version {} in {path}: {e}",
                        row.id
                    );
                }
            }
            Op::VersionOutcome(id, outcome) => {
                let done = conn.execute(
                    "UPDATE config_versions SET outcome = ?2 WHERE id = ?1",
                    params![i64::try_from(id).unwrap_or(i64::MAX), outcome],
                );
                if let Err(e) = done {
                    tracing::error!(
                        "cannot note what became of configuration version {id} in {path}: {e}"
                    );
                }
            }
            Op::Stop => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        std::env::temp_dir().join(format!(
            "ballast-store-{name}-{}-{nanos}.sqlite",
            std::process::id()
        ))
    }

    /// A store written before follow-ups existed (schema 0) opens, is migrated in place, keeps its
    /// incidents, and takes follow-ups; read-only readers cope with both versions.
    #[test]
    fn an_existing_store_is_migrated_in_place() {
        let path = temp("migrate");
        {
            let conn = Connection::open(&path).unwrap();
            conn.execute_batch(
                "CREATE TABLE incidents (
                    id INTEGER PRIMARY KEY, target TEXT NOT NULL, signal TEXT NOT NULL,
                    severity TEXT NOT NULL, opened_at INTEGER NOT NULL, resolved_at INTEGER,
                    resolution TEXT, evidence_at_open TEXT NOT NULL, evidence_latest TEXT NOT NULL);
                 INSERT INTO incidents VALUES (7, 'a/m', 'availability', 'critical', 1000, 2000,
                    'evidence back to normal', '{}', '{}');",
            )
            .unwrap();
        }
        // An old file read by the CLI before any gateway migrated it.
        let old = history(&path, 10).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old.first().map(|r| r.recurrence.clone()), Some(None));
        assert!(followup_history(&path).unwrap().is_empty());

        let (conn, loaded) = open(&path).unwrap();
        assert_eq!(schema(&conn).unwrap(), SCHEMA);
        assert_eq!(loaded.incidents.len(), 1);
        assert_eq!(loaded.max_followup, 0);
        let f = FollowupRow {
            id: 1,
            incident: 7,
            target: "a/m".to_owned(),
            signal: "availability".to_owned(),
            text: "add a second provider".to_owned(),
            owner: "ops".to_owned(),
            due: "2026-03-10".to_owned(),
            due_at: time(1_773_187_200),
            state: FollowupState::Open,
            created_at: time(3000),
            updated_at: time(3000),
        };
        write_followup(&conn, &f).unwrap();
        let done = FollowupRow {
            state: FollowupState::Done,
            updated_at: time(4000),
            ..f.clone()
        };
        write_followup(&conn, &done).unwrap();
        write(
            &conn,
            &Row {
                id: 8,
                target: "a/m".to_owned(),
                signal: "availability".to_owned(),
                severity: "critical".to_owned(),
                opened_at: time(5000),
                resolved_at: None,
                resolution: None,
                evidence_at_open: "{}".to_owned(),
                evidence_latest: "{}".to_owned(),
                recurrence: Some(Recurrence {
                    count: 1,
                    earlier: vec![7],
                    last_at: time(1000),
                }),
            },
        )
        .unwrap();
        drop(conn);
        // Opening again is a no-op migration.
        let (_conn, loaded) = open(&path).unwrap();
        assert_eq!(loaded.followups, vec![done]);
        assert_eq!(loaded.max_followup, 1);
        let newest = loaded.incidents.last().unwrap();
        assert_eq!(newest.id, 8);
        assert_eq!(newest.recurrence.as_ref().map(Recurrence::ordinal), Some(2));
        assert_eq!(followup_history(&path).unwrap().len(), 1);
        let _ = std::fs::remove_file(&path);
    }
}
