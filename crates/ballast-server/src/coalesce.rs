//! Streamed answers written to the client in as few writes as the upstream allows.
//!
//! A provider sends each SSE event as its own HTTP chunk, and the upstream connection hands the
//! gateway one chunk at a time: its task decodes one, wakes the answer's task and waits to be asked
//! for the next. Left alone, the client's connection would be written (one `writev`, one wake-up of
//! the client) for every event, although most events of an answer arrive in the same few reads.
//! That is most of what a stream costs a proxy: nginx writes what one read brought in one go.
//!
//! [`Coalesced`] does the same without waiting on a timer: when a chunk is ready it lets the
//! runtime turn (so the upstream connection's task can hand over the next chunk it has already
//! read, which takes it two turns) and takes every chunk that became ready meanwhile; when two
//! turns in a row bring nothing, what it holds goes to the client at once. A chunk is never held
//! for data that has not arrived: the first token waits two turns of the scheduler, not a timer,
//! and no batch is held more than a millisecond, however busy the runtime.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::Instant;

/// At most this many bytes go to the client in one write.
const MAX_BATCH_BYTES: usize = 64 * 1024;
/// At most this many turns of the scheduler between writes to the client.
const MAX_ROUNDS: u8 = 64;
/// A batch is held at most this long after its first chunk arrived, however busy the runtime
/// (each turn waits for every other ready task).
const MAX_HOLD: Duration = Duration::from_millis(1);
/// A batch goes to the client after this many turns of the scheduler in a row brought nothing.
const IDLE_ROUNDS: u8 = 2;

/// Joins the chunks of `inner` that are ready together into one.
pub struct Coalesced<S> {
    inner: S,
    /// The first chunk of the batch, kept as it came (a batch of one is not copied).
    first: Option<Bytes>,
    /// The chunks after the first, when there are any.
    rest: BytesMut,
    /// Turns given to the scheduler since the batch began.
    rounds: u8,
    /// When the batch's first chunk arrived.
    since: Option<Instant>,
    /// Turns in a row that brought nothing.
    idle_rounds: u8,
    /// `inner` ended: the next poll after the batch ends the stream.
    ended: bool,
}

impl<S> Coalesced<S> {
    pub fn new(inner: S) -> Self {
        Self {
            inner,
            first: None,
            rest: BytesMut::new(),
            rounds: 0,
            since: None,
            idle_rounds: 0,
            ended: false,
        }
    }

    fn held(&self) -> usize {
        self.first
            .as_ref()
            .map_or(0, Bytes::len)
            .saturating_add(self.rest.len())
    }

    fn add(&mut self, chunk: Bytes) {
        if chunk.is_empty() {
            return;
        }
        match &self.first {
            None => {
                self.first = Some(chunk);
                self.since = Some(Instant::now());
            }
            Some(_) => self.rest.extend_from_slice(&chunk),
        }
    }

    /// The batch, whole; `None` when nothing is held.
    fn take(&mut self) -> Option<Bytes> {
        self.rounds = 0;
        self.idle_rounds = 0;
        self.since = None;
        let first = self.first.take()?;
        if self.rest.is_empty() {
            return Some(first);
        }
        let mut all = BytesMut::with_capacity(first.len().saturating_add(self.rest.len()));
        all.extend_from_slice(&first);
        all.extend_from_slice(&self.rest);
        // Not kept for the next batch: a long-lived stream holds no buffer between bursts.
        self.rest = BytesMut::new();
        Some(all.freeze())
    }
}

impl<S> Stream for Coalesced<S>
where
    S: Stream<Item = Result<Bytes, Infallible>> + Unpin,
{
    type Item = Result<Bytes, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if this.ended {
            return Poll::Ready(this.take().map(Ok));
        }
        let mut arrived = false;
        loop {
            match Pin::new(&mut this.inner).poll_next(cx) {
                Poll::Ready(Some(Ok(chunk))) => {
                    arrived = true;
                    this.add(chunk);
                    if this.held() >= MAX_BATCH_BYTES {
                        return Poll::Ready(this.take().map(Ok));
                    }
                }
                Poll::Ready(Some(Err(never))) => match never {},
                Poll::Ready(None) => {
                    this.ended = true;
                    return Poll::Ready(this.take().map(Ok));
                }
                Poll::Pending => {
                    if this.first.is_none() {
                        return Poll::Pending;
                    }
                    if arrived {
                        this.idle_rounds = 0;
                    }
                    let fresh = this.since.is_some_and(|t| t.elapsed() < MAX_HOLD);
                    if this.idle_rounds < IDLE_ROUNDS && this.rounds < MAX_ROUNDS && fresh {
                        // Let the upstream connection's task decode what it has already read.
                        this.rounds = this.rounds.saturating_add(1);
                        this.idle_rounds = this.idle_rounds.saturating_add(1);
                        cx.waker().wake_by_ref();
                        return Poll::Pending;
                    }
                    return Poll::Ready(this.take().map(Ok));
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing)]
mod tests {
    use std::collections::VecDeque;
    use std::convert::Infallible;
    use std::pin::Pin;
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::{Context, Poll, Wake, Waker};

    use bytes::Bytes;
    use futures_util::Stream;

    use super::{Coalesced, IDLE_ROUNDS, MAX_BATCH_BYTES, MAX_HOLD};

    /// A stream that answers each poll from a script: `Some(bytes)` a chunk, `None` not yet.
    struct Scripted(VecDeque<Option<&'static str>>);

    impl Stream for Scripted {
        type Item = Result<Bytes, Infallible>;
        fn poll_next(mut self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            match self.0.pop_front() {
                Some(Some(s)) => Poll::Ready(Some(Ok(Bytes::from_static(s.as_bytes())))),
                Some(None) => Poll::Pending,
                None => Poll::Ready(None),
            }
        }
    }

    #[derive(Default)]
    struct Wakes(AtomicUsize);
    impl Wake for Wakes {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Polls until the stream yields; returns the item and how many polls it took. Every
    /// `Pending` with data held must have asked to be polled again (else the stream would hang).
    fn next(s: &mut Coalesced<Scripted>) -> (Option<String>, usize) {
        let wakes = Arc::new(Wakes::default());
        let waker = Waker::from(Arc::clone(&wakes));
        let mut cx = Context::from_waker(&waker);
        for polls in 1..1000 {
            let before = wakes.0.load(Ordering::SeqCst);
            match Pin::new(&mut *s).poll_next(&mut cx) {
                Poll::Ready(item) => {
                    let text = item.map(|r| String::from_utf8(r.unwrap().to_vec()).unwrap());
                    return (text, polls);
                }
                Poll::Pending if s.first.is_some() => {
                    assert!(
                        wakes.0.load(Ordering::SeqCst) > before,
                        "held data without a wake-up"
                    );
                }
                Poll::Pending => return (None, polls),
            }
        }
        panic!("never yielded");
    }

    fn coalesced(script: &[Option<&'static str>]) -> Coalesced<Scripted> {
        Coalesced::new(Scripted(script.iter().copied().collect()))
    }

    #[test]
    fn events_that_arrive_together_go_to_the_client_in_one_write() {
        // Two events ready now, a third after one turn of the scheduler, then nothing for a while.
        let mut s = coalesced(&[
            Some("data: 1\n\n"),
            Some("data: 2\n\n"),
            None,
            Some("data: 3\n\n"),
            None,
            None,
            None,
            Some("data: 4\n\n"),
        ]);
        let (batch, _) = next(&mut s);
        assert_eq!(batch.as_deref(), Some("data: 1\n\ndata: 2\n\ndata: 3\n\n"));
        // The next event, once it comes, is a batch of its own; then the end.
        assert_eq!(next(&mut s).0.as_deref(), Some("data: 4\n\n"));
        assert_eq!(next(&mut s).0, None);
    }

    #[test]
    fn an_event_is_not_held_for_data_that_has_not_arrived() {
        // One event, then the upstream has nothing: it goes out after a bounded number of turns.
        let mut s = coalesced(&[Some("data: 1\n\n"), None, None, None, None, None]);
        let (batch, polls) = next(&mut s);
        assert_eq!(batch.as_deref(), Some("data: 1\n\n"));
        assert!(polls <= usize::from(IDLE_ROUNDS) + 1, "{polls} polls");
    }

    #[test]
    fn nothing_ready_is_plain_pending() {
        let mut s = coalesced(&[None, Some("x")]);
        assert_eq!(next(&mut s), (None, 1));
        assert_eq!(next(&mut s).0.as_deref(), Some("x"));
    }

    #[test]
    fn the_end_of_the_stream_sends_what_is_held_first() {
        let mut s = coalesced(&[Some("a"), Some("b")]);
        assert_eq!(next(&mut s).0.as_deref(), Some("ab"));
        assert_eq!(next(&mut s).0, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_batch_is_held_at_most_max_hold_however_busy_the_runtime() {
        // Chunks keep coming one turn apart, but the runtime is so busy that a turn took longer
        // than MAX_HOLD: what arrived goes out at the next poll.
        let mut s = coalesced(&[Some("a"), None, Some("b"), None, Some("c"), None]);
        let waker = futures_util::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        assert!(Pin::new(&mut s).poll_next(&mut cx).is_pending());
        tokio::time::advance(MAX_HOLD * 2).await;
        let Poll::Ready(Some(Ok(batch))) = Pin::new(&mut s).poll_next(&mut cx) else {
            panic!("the batch was held past MAX_HOLD");
        };
        assert_eq!(&batch[..], b"ab");
    }

    #[test]
    fn a_batch_is_bounded_in_bytes() {
        let big: &'static str = Box::leak("x".repeat(MAX_BATCH_BYTES / 2 + 1).into_boxed_str());
        let mut s = coalesced(&[Some(big), Some(big), Some(big)]);
        assert_eq!(next(&mut s).0.map(|b| b.len()), Some(2 * big.len()));
        assert_eq!(next(&mut s).0.map(|b| b.len()), Some(big.len()));
        assert_eq!(next(&mut s).0, None);
    }
}
