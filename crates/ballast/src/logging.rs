//! Logging that never blocks a worker thread: lines go through a bounded queue to a writer thread;
//! when the queue is full a line is dropped and counted rather than making a request wait on stderr.
//! Colour only when stderr is a terminal.
//!
//! The writer thread writes what is queued, then rests for [`PACE`] before it looks again. Under
//! load (an access line per request) the lines of those milliseconds go out in one write and the
//! thread is woken once for them, not once per line: waking it for every line cost more CPU than
//! the rest of the log. A line waits at most that long; a lone line is written at once.

use std::io::{IsTerminal, Write};
use std::time::Duration;

use tracing_appender::non_blocking::{ErrorCounter, NonBlockingBuilder, WorkerGuard};

use crate::cli::LogFormat;

/// Lines that may wait for the writer thread before new ones are dropped.
const QUEUE_LINES: usize = 64 * 1024;
/// How long the writer thread rests after writing what was queued.
const PACE: Duration = Duration::from_millis(20);
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
        .finish(Paced::new(std::io::stderr(), PACE));
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

/// The writer thread's output: lines are gathered in a buffer, and each flush (after the queue
/// was drained) writes them in one go and then rests, so lines queued meanwhile are taken together.
struct Paced<W: Write> {
    out: std::io::BufWriter<W>,
    rest: Duration,
}

impl<W: Write> Paced<W> {
    fn new(out: W, rest: Duration) -> Self {
        Self {
            out: std::io::BufWriter::with_capacity(64 * 1024, out),
            rest,
        }
    }
}

impl<W: Write> Write for Paced<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.out.write(buf)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()?;
        // The log's own thread, never a runtime worker.
        #[allow(clippy::disallowed_methods)]
        std::thread::sleep(self.rest);
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};
    use std::time::Duration;

    use super::Paced;

    /// Records each write it is given.
    #[derive(Clone, Default)]
    struct Writes(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Write for Writes {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().push(buf.to_vec());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_lines_of_one_batch_go_out_in_one_write_at_the_flush() {
        let writes = Writes::default();
        let mut paced = Paced::new(writes.clone(), Duration::ZERO);
        paced.write_all(b"line 1\n").unwrap();
        paced.write_all(b"line 2\n").unwrap();
        assert!(
            writes.0.lock().unwrap().is_empty(),
            "written before the flush"
        );
        paced.flush().unwrap();
        assert_eq!(
            *writes.0.lock().unwrap(),
            vec![b"line 1\nline 2\n".to_vec()]
        );
    }
}
