//! Closed loop: C connections, each sending its next request as soon as the previous one is answered.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use tokio::{task::JoinSet, time::Instant};

use crate::{
    Plan,
    conn::{Conn, Target},
    stats::{Mode, Recorder, Report},
};

pub(crate) async fn run(
    target: Arc<Target>,
    plan: Plan,
    concurrency: usize,
) -> Result<Report, String> {
    let start = Instant::now();
    let measure_start = start + plan.warmup;
    let end = measure_start + plan.duration;
    let hard_stop = end + plan.drain;
    let sent = Arc::new(AtomicU64::new(0));
    let capped = Arc::new(AtomicBool::new(false));

    let mut tasks = JoinSet::new();
    for _ in 0..concurrency {
        let mut rec = Recorder::new()?;
        let target = Arc::clone(&target);
        let sent = Arc::clone(&sent);
        let capped = Arc::clone(&capped);
        tasks.spawn(async move {
            let mut conn = Conn::default();
            loop {
                let now = Instant::now();
                if now >= end {
                    break;
                }
                if sent.fetch_add(1, Ordering::Relaxed) >= plan.max_requests {
                    capped.store(true, Ordering::Relaxed);
                    break;
                }
                let deadline = (now + plan.timeout).min(hard_stop);
                let outcome = tokio::time::timeout_at(deadline, conn.send(&target))
                    .await
                    .ok();
                let done = Instant::now();
                if now >= measure_start {
                    rec.record(done - now, done - now, outcome);
                } else {
                    rec.warmup_request();
                }
            }
            rec
        });
    }

    let (recorders, abandoned) = crate::open_loop::join_until(tasks, hard_stop).await;
    let mut report = Report::merge(
        Mode::Concurrency(concurrency),
        plan.duration,
        plan.warmup,
        &recorders,
    )?;
    report.abandoned = abandoned;
    report.capped = capped.load(Ordering::Relaxed);
    Ok(report)
}
