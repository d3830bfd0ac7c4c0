//! Logging that never blocks a worker thread: lines go through a bounded queue to a writer thread;
//! when the queue is full a line is dropped and counted rather than making a request wait on stderr.
//! Colour only when stderr is a terminal.

use std::io::IsTerminal;
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::cli::LogFormat;

/// Lines that may wait for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;
/// How often dropped lines are reported.
const REPORT_EVERY: Duration = Duration::from_secs(10);

/// Keeps the writer thread alive (dropping it flushes what is queued) and counts dropped lines.
pub struct Logging {
    _guard: WorkerGuard,
    dropped: ErrorCounter,
}

impl Logging {
    /// Lines dropped so far because the queue was full.
    pub fn dropped(&self) -> usize {
        self.dropped.dropped_lines()
    }

    /// Reports newly dropped lines every few seconds; never returns (run it beside the command).
    pub async fn report_drops(&self) {
        let mut reported = 0;
        let mut tick = tokio::time::interval(REPORT_EVERY);
        loop {
            tick.tick().await;
            let now = self.dropped();
            if now > reported {
                tracing::warn!(
                    dropped = now - reported,
                    total = now,
                    "log lines dropped: the log writer could not keep up"
                );
                reported = now;
            }
        }
    }
}

pub fn init(filter: &str, format: LogFormat) -> Logging {
    let (writer, guard) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(QUEUE_LINES)
        .thread_name("ballast-log")
        .finish(std::io::stderr());
    let dropped = writer.error_counter();
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Logging {
        _guard: guard,
        dropped,
    }
}
