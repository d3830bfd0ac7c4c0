//! Open loop: requests scheduled at fixed intervals, latency measured from each one's scheduled send time.
//!
//! A scheduler thread (not a runtime thread, so its sleeps are precise to tens of microseconds rather than the
//! runtime timer's millisecond) puts each request's due time in a bounded queue when it falls due; a fixed set
//! of connections takes them in turn. When every connection is busy, due requests wait in the queue and then in
//! the scheduler, and that wait counts in their latency, which is what corrects coordinated omission: a server
//! that stalls for 100 ms is charged for every request that should have been sent during the stall.

use std::{sync::Arc, time::Duration};

use tokio::{
    sync::{Mutex, mpsc, oneshot},
    task::JoinSet,
    time::Instant,
};

use crate::{
    Plan,
    conn::{Conn, Target},
    stats::{Mode, Recorder, Report},
};

/// One scheduled request.
#[derive(Debug, Clone, Copy)]
struct Job {
    due: Instant,
    /// Due inside the measured window (not the warmup).
    measured: bool,
}

/// What the scheduler reports when it stops.
#[derive(Debug, Default)]
struct Schedule {
    /// Requests due in the measured window that never left the scheduler.
    unsent: u64,
    /// Whether `--max-requests` ended the schedule early.
    capped: bool,
}

pub(crate) async fn run(
    target: Arc<Target>,
    plan: Plan,
    rate: f64,
    connections: usize,
) -> Result<Report, String> {
    let start = Instant::now() + Duration::from_millis(10);
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    let hard_stop = end + plan.drain;

    let (tx, rx) = mpsc::channel::<Job>(connections);
    let rx = Arc::new(Mutex::new(rx));
    let mut tasks = JoinSet::new();
    for _ in 0..connections {
        let mut rec = Recorder::new()?;
        let rx = Arc::clone(&rx);
        let target = Arc::clone(&target);
        tasks.spawn(async move {
            let mut conn = Conn::default();
            loop {
                let job = rx.lock().await.recv().await;
                let Some(job) = job else { break };
                let sent_at = Instant::now();
                let deadline = (sent_at + plan.timeout).min(hard_stop);
                let outcome = tokio::time::timeout_at(deadline, conn.send(&target))
                    .await
                    .ok();
                let done = Instant::now();
                if job.measured {
                    rec.record(done - job.due, done - sent_at, outcome);
                } else {
                    rec.warmup_request();
                }
            }
            rec
        });
    }

    let (done_tx, done_rx) = oneshot::channel();
    let spawned = std::thread::Builder::new()
        .name("loadgen-scheduler".into())
        .spawn(move || {
            let schedule = schedule(&tx, rate, start, measure_start, end, plan.max_requests);
            drop(tx);
            let _ = done_tx.send(schedule);
        });
    if let Err(e) = spawned {
        return Err(format!("cannot start the scheduler thread: {e}"));
    }
    // The scheduler stops by `end` at the latest; if it vanished, report nothing unsent rather than fail.
    let schedule = done_rx.await.unwrap_or_default();

    let (recorders, abandoned) = join_until(tasks, hard_stop).await;
    let mut report = Report::merge(
        Mode::Rate { rate, connections },
        plan.duration,
        plan.warmup,
        &recorders,
    )?;
    report.unsent = schedule.unsent;
    report.abandoned = abandoned;
    report.capped = schedule.capped;
    Ok(report)
}

/// Puts each request in the queue at its due time, on a plain thread; returns when the window closes.
#[allow(
    clippy::disallowed_methods,
    reason = "this is the scheduler's own OS thread, not a runtime worker: blocking sleeps are its job"
)]
fn schedule(
    tx: &mpsc::Sender<Job>,
    rate: f64,
    start: Instant,
    measure_start: Instant,
    end: Instant,
    max_requests: u64,
) -> Schedule {
    let mut out = Schedule::default();
    let mut measured_enqueued = 0u64;
    let mut i = 0u64;
    'schedule: loop {
        let due = start + Duration::from_secs_f64(i as f64 / rate);
        if due >= end {
            break;
        }
        if i >= max_requests {
            out.capped = true;
            break;
        }
        i += 1;
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        }
        let mut job = Job {
            due,
            measured: due >= measure_start,
        };
        loop {
            match tx.try_send(job) {
                Ok(()) => break,
                Err(mpsc::error::TrySendError::Full(j)) => {
                    if Instant::now() >= end {
                        break 'schedule;
                    }
                    job = j;
                    std::thread::sleep(Duration::from_micros(50));
                }
                Err(mpsc::error::TrySendError::Closed(_)) => break 'schedule,
            }
        }
        if job.measured {
            measured_enqueued += 1;
        }
    }
    if !out.capped {
        // Everything due in the window that did not make it into the queue.
        let in_window = due_in_window(rate, start, measure_start, end);
        out.unsent = in_window.saturating_sub(measured_enqueued);
    }
    out
}

/// How many of the requests `start + i / rate` fall in `[measure_start, end)`.
fn due_in_window(rate: f64, start: Instant, measure_start: Instant, end: Instant) -> u64 {
    let first = ((measure_start - start).as_secs_f64() * rate).ceil();
    let last = ((end - start).as_secs_f64() * rate).ceil();
    (last - first).max(0.0) as u64
}

/// Waits for every task until `hard_stop` (plus a little slack), then abandons the rest; returns what finished and
/// how many were abandoned (each had at most one request in flight).
pub(crate) async fn join_until(
    mut tasks: JoinSet<Recorder>,
    hard_stop: Instant,
) -> (Vec<Recorder>, u64) {
    let mut done = Vec::new();
    let slack = hard_stop + Duration::from_millis(200);
    loop {
        match tokio::time::timeout_at(slack, tasks.join_next()).await {
            Ok(Some(Ok(rec))) => done.push(rec),
            // A worker that panicked has lost its recording; there is nothing left to merge from it.
            Ok(Some(Err(_))) => {}
            Ok(None) => break,
            Err(_) => {
                let abandoned = tasks.len() as u64;
                tasks.abort_all();
                return (done, abandoned);
            }
        }
    }
    (done, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_requests_due_in_the_window() {
        let start = Instant::now();
        let window = |w: u64, d: u64| {
            due_in_window(
                1000.0,
                start,
                start + Duration::from_secs(w),
                start + Duration::from_secs(w + d),
            )
        };
        assert_eq!(window(0, 10), 10_000);
        assert_eq!(window(1, 10), 10_000);
    }
}
