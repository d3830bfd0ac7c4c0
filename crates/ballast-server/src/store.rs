//! The incident store: incidents kept in an embedded SQLite file so they survive restarts. The
//! request path never touches the file: incidents hand rows to a bounded queue, and one writer
//! thread — started by [`crate::Background`], stopped and drained on shutdown — writes them. At start
//! the store is read back; incidents still open in it (their detectors start afresh) are closed as
//! "gateway restarted".
//!
//! Rows hold target names, signals, timestamps and numbers: never request or answer text.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rusqlite::{Connection, params};

/// Rows waiting for the writer before new ones are dropped.
const QUEUE: usize = 1024;
/// Incidents read back at start.
const LOAD: usize = 1000;

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
    /// The evidence at open and the latest, as JSON objects of numbers.
    pub evidence_at_open: String,
    pub evidence_latest: String,
}

pub enum Op {
    Save(Box<Row>),
    Stop,
}

/// The queue into the writer thread.
pub struct StoreHandle {
    tx: SyncSender<Op>,
    dropped: AtomicU64,
}

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

/// Reads the incidents of a store file without writing to it (for `ballast incidents`).
pub fn history(path: &Path, limit: usize) -> Result<Vec<Row>, StoreError> {
    let flags = rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY;
    let conn = Connection::open_with_flags(path, flags).map_err(|e| store_error(path, &e))?;
    read(&conn, limit).map_err(|e| store_error(path, &e))
}

/// Opens (creating if needed) the store at `path`: its schema, its recent incidents (newest last),
/// with those left open by a previous run closed as "gateway restarted".
pub fn open(path: &Path) -> Result<(Connection, Vec<Row>), StoreError> {
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
    let now = secs(SystemTime::now());
    conn.execute(
        "UPDATE incidents SET resolved_at = ?1, resolution = 'gateway restarted (detectors start afresh)'
         WHERE resolved_at IS NULL",
        params![now],
    )
    .map_err(|e| store_error(path, &e))?;
    let rows = read(&conn, LOAD).map_err(|e| store_error(path, &e))?;
    Ok((conn, rows))
}

/// The `limit` newest incidents, oldest first.
pub fn read(conn: &Connection, limit: usize) -> rusqlite::Result<Vec<Row>> {
    let mut stmt = conn.prepare(
        "SELECT id, target, signal, severity, opened_at, resolved_at, resolution,
                evidence_at_open, evidence_latest
         FROM incidents ORDER BY id DESC LIMIT ?1",
    )?;
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
            })
        })?
        .collect::<rusqlite::Result<_>>()?;
    rows.reverse();
    Ok(rows)
}

fn write(conn: &Connection, row: &Row) -> rusqlite::Result<()> {
    conn.execute(
        "INSERT INTO incidents (id, target, signal, severity, opened_at, resolved_at, resolution,
                                evidence_at_open, evidence_latest)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(id) DO UPDATE SET resolved_at = excluded.resolved_at,
             resolution = excluded.resolution, evidence_latest = excluded.evidence_latest",
        params![
            i64::try_from(row.id).unwrap_or(i64::MAX),
            row.target,
            row.signal,
            row.severity,
            secs(row.opened_at),
            row.resolved_at.map(secs),
            row.resolution,
            row.evidence_at_open,
            row.evidence_latest,
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
            Op::Stop => break,
        }
    }
}
