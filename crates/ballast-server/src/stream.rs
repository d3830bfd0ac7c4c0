//! The streaming body of an answer. Same format: upstream bytes go to the client as they arrive, whole
//! SSE events at a time (a partial event is held back until its end arrives, so a cut never leaves the
//! client mid-line). Translated: each upstream event is turned into the client's events as it arrives.
//! Either way an observer reads usage, stop reason and the first token, and a stream that stops without
//! its terminal event, breaks, or outlives the deadline ends with a well-formed error event in the
//! client's format — never presented as a complete answer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::Stream;
use tokio::time::{Instant, Sleep};

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind, stream_error_event_after};
use ballast_core::observe::StreamObserver;
use ballast_core::sse::SseParser;
use ballast_core::translate::StreamTranslator;

use ballast_core::continuation::Delivery;

use crate::outcome::Outcome;
use crate::proxy::{Continued, Resumer, continue_stream};
use crate::runtime::Reservation;
use crate::upstream::{BodyStream, TimeoutKind, secs};

/// A continuation being looked for: the resumer comes back with its result.
type Continuing =
    Pin<Box<dyn Future<Output = (Box<Resumer>, Result<Continued, String>)> + Send + 'static>>;

/// Everything a stream needs once its attempt has been committed to the client.
pub struct StreamStart {
    pub inner: BodyStream,
    pub upstream_format: ApiFormat,
    pub client_format: ApiFormat,
    /// The observer, already fed with `prefix`.
    pub observer: StreamObserver,
    /// Chunks read (and observed) before the answer was committed, sent first.
    pub prefix: Vec<Bytes>,
    pub translator: Option<StreamTranslator>,
    /// When the stream must end, and which limit that is.
    pub deadline: Instant,
    pub deadline_kind: TimeoutKind,
    pub deadline_after: Duration,
    /// The longest silence allowed between chunks.
    pub idle: Duration,
    /// The largest event held back waiting for its end (`limits.max_event_bytes`).
    pub max_event_bytes: usize,
    /// The share of the gateway's buffer budget holding `prefix`; it then follows what is held.
    pub held: Reservation,
    /// Observes the time between chunks after the first (`time_per_output_chunk`).
    pub chunk_timer: Option<prometheus_client::metrics::histogram::Histogram>,
    pub outcome: Outcome,
    /// Present when a stream that breaks after content reached the client is continued on another
    /// target: what the client was sent, and how to find the next target.
    pub continuation: Option<(Delivery, Box<Resumer>)>,
}

pub struct ObservedStream {
    inner: BodyStream,
    /// The client's format (error events are written in it).
    format: ApiFormat,
    upstream_format: ApiFormat,
    observer: StreamObserver,
    prefix: VecDeque<Bytes>,
    /// Present when the upstream speaks another format than the client.
    translation: Option<Translation>,
    /// Bytes of an event whose end has not arrived yet.
    pending: BytesMut,
    /// How much of `pending` is known to hold no event end, so a long event arriving in many
    /// chunks is scanned once, not once per chunk.
    pending_scanned: usize,
    max_event_bytes: usize,
    /// Bytes of `prefix` not yet sent plus `pending`, held against the gateway's buffer budget.
    held: Reservation,
    prefix_bytes: usize,
    /// The upstream broke a limit: the stream ends with an error event at the next poll.
    violation: Option<String>,
    chunk_timer: Option<prometheus_client::metrics::histogram::Histogram>,
    /// When the last upstream chunk arrived.
    last_chunk: Instant,
    /// Malformed events dropped so far (same-format streams).
    malformed_skipped: u64,
    deadline: Pin<Box<Sleep>>,
    deadline_kind: TimeoutKind,
    deadline_after: Duration,
    idle: Pin<Box<Sleep>>,
    idle_after: Duration,
    outcome: Option<Outcome>,
    /// What the client was sent (and a tool call held back until complete), when the stream can be
    /// continued; its copy is held against the gateway's buffer budget.
    delivery: Option<Delivery>,
    delivery_held: Reservation,
    resumer: Option<Box<Resumer>>,
    continuing: Option<Continuing>,
    /// Why the stream broke, while a continuation is looked for (or must be, at the next poll).
    broken: Option<(ErrorKind, String)>,
}

struct Translation {
    parser: SseParser,
    translator: StreamTranslator,
    malformed: u64,
    /// The answer went over a `[limits]` cap (tool-call arguments, parts): the stream must end.
    exceeded: Option<String>,
}

impl ObservedStream {
    pub fn new(s: StreamStart) -> Self {
        let prefix_bytes = s.prefix.iter().map(Bytes::len).sum();
        let delivery_held = s.outcome.st.runtime.buffered.reserve();
        Self {
            inner: s.inner,
            format: s.client_format,
            upstream_format: s.upstream_format,
            observer: s.observer,
            prefix: s.prefix.into(),
            translation: s.translator.map(|translator| Translation {
                parser: SseParser::with_limit(s.max_event_bytes),
                translator,
                malformed: 0,
                exceeded: None,
            }),
            pending: BytesMut::new(),
            pending_scanned: 0,
            max_event_bytes: s.max_event_bytes,
            held: s.held,
            prefix_bytes,
            violation: None,
            chunk_timer: s.chunk_timer,
            last_chunk: Instant::now(),
            malformed_skipped: 0,
            deadline: Box::pin(tokio::time::sleep_until(s.deadline)),
            deadline_kind: s.deadline_kind,
            deadline_after: s.deadline_after,
            idle: Box::pin(tokio::time::sleep(s.idle)),
            idle_after: s.idle,
            delivery_held,
            outcome: Some(s.outcome),
            delivery: None,
            resumer: None,
            continuing: None,
            broken: None,
        }
        .with_continuation(s.continuation)
    }

    fn with_continuation(mut self, c: Option<(Delivery, Box<Resumer>)>) -> Self {
        if let Some((d, r)) = c {
            self.delivery = Some(d);
            self.resumer = Some(r);
        }
        self
    }

    /// Passes client-bound events through the delivery (when the stream can be continued): a
    /// tool call is held until complete, and the provider's error event stops the stream.
    fn deliver(&mut self, out: Bytes) -> Option<Bytes> {
        let Some(d) = &mut self.delivery else {
            return (!out.is_empty()).then_some(out);
        };
        let (mut sent, delivered) = d.push_bytes(out);
        if delivered.error && self.broken.is_none() {
            self.broken = Some((
                ErrorKind::BadGateway,
                "the provider sent an error event".to_owned(),
            ));
        }
        if !self.delivery_held.set(d.buffered()) {
            // No room to keep a copy: the stream goes on, but can no longer be continued.
            let mut all = sent.to_vec();
            d.flush(&mut all);
            sent = Bytes::from(all);
            self.delivery = None;
            self.resumer = None;
            self.delivery_held.set(0);
        }
        (!sent.is_empty()).then_some(sent)
    }

    /// Whatever the delivery still holds, at a clean end.
    fn flush_delivery(&mut self) -> Vec<u8> {
        let mut out = Vec::new();
        if let Some(d) = &mut self.delivery {
            d.flush(&mut out);
        }
        out
    }

    /// The stream broke after content reached the client: look for a continuation when one is
    /// possible (the next poll drives it), else end with an error event now.
    fn break_off(&mut self, kind: ErrorKind, cause: String) -> Option<Bytes> {
        let obs = self.observer.observation();
        if obs.stop_reason.is_some() && obs.error.is_none() && self.pending.is_empty() {
            // The answer was complete (its stop reason arrived); only its closing was lost.
            let done = obs.done;
            let mut tail = self.flush_delivery();
            tail.extend(self.closing_events(done));
            self.complete();
            return Some(Bytes::from(tail));
        }
        if let (Some(d), Some(o)) = (self.delivery.as_mut(), self.outcome.as_ref())
            && let Some(rp) = d.resume_point()
            && let Some(r) = self.resumer.take()
        {
            tracing::info!(
                request_id = &*o.request_id,
                target = o.target(),
                "stream broke after content reached the client ({cause}); continuing elsewhere"
            );
            self.continuing = Some(Box::pin(continue_stream(r, rp, o.request_id.clone())));
            self.broken = Some((kind, cause));
            return None;
        }
        Some(self.fail(kind, cause))
    }

    /// The continuation started: its stream replaces the broken one, joined to the client's.
    fn install(&mut self, c: Continued, r: Box<Resumer>) {
        let prefix_bytes = c.held.prefix.iter().map(Bytes::len).sum();
        self.inner = c.held.inner;
        self.upstream_format = c.upstream_format;
        self.observer = c.held.observer;
        self.prefix = c.held.prefix.into();
        self.prefix_bytes = prefix_bytes;
        self.held = c.held.held;
        self.translation = Some(Translation {
            parser: SseParser::with_limit(self.max_event_bytes),
            translator: c.translator,
            malformed: 0,
            exceeded: None,
        });
        self.pending = BytesMut::new();
        self.pending_scanned = 0;
        self.malformed_skipped = 0;
        self.deadline.as_mut().reset(c.end);
        self.deadline_kind = c.end_kind;
        self.deadline_after = c.end_after;
        self.idle
            .as_mut()
            .reset(Instant::now().checked_add(self.idle_after).unwrap_or(c.end));
        self.last_chunk = Instant::now();
        if let Some(o) = &mut self.outcome {
            o.continue_on(
                c.target_state,
                c.ticket,
                c.slot,
                c.attempt_started,
                r.attempts,
            );
        }
        self.resumer = Some(r);
        self.broken = None;
    }

    /// Once the upstream's closing sentinel went by (`[DONE]`, `message_stop`), the answer is
    /// complete: end now, even if the provider keeps the connection open. Gemini has no sentinel (its
    /// last chunk carries the finish reason and maybe more): it ends at the end of the body.
    fn end_if_done(&mut self, out: Option<Bytes>) -> Option<Bytes> {
        let obs = self.observer.observation();
        if !(obs.done
            && self.pending.is_empty()
            && self.prefix.is_empty()
            && self.upstream_format != ApiFormat::Gemini)
        {
            return out;
        }
        if obs.error.is_some() && self.delivery.is_some() {
            // The provider's failure event (`response.failed`), held back: continue elsewhere.
            if self.broken.is_none() {
                self.broken = Some((
                    ErrorKind::BadGateway,
                    "the provider sent an error event".to_owned(),
                ));
            }
            return out;
        }
        if obs.error.is_some() {
            // The provider's own failure event (already passed on, or translated): a failed stream.
            if let Some(o) = self.outcome.take() {
                o.finish_stream(obs, Some("the provider sent an error event"));
            }
            return out;
        }
        let mut tail = self.flush_delivery();
        tail.extend(self.closing_events(true));
        self.complete();
        match (out, tail.is_empty()) {
            (out, true) => out.or(Some(Bytes::new())),
            (None, false) => Some(Bytes::from(tail)),
            (Some(out), false) => {
                let mut all = Vec::with_capacity(out.len().saturating_add(tail.len()));
                all.extend_from_slice(&out);
                all.extend_from_slice(&tail);
                Some(Bytes::from(all))
            }
        }
    }

    /// What the client still needs to see a complete answer: the translator's closing events, or —
    /// same format, when the upstream left out its sentinel — the format's own terminator.
    fn closing_events(&mut self, sentinel_seen: bool) -> Vec<u8> {
        let mut tail = Vec::new();
        if let Some(t) = &mut self.translation {
            t.translator.finish(&mut tail);
        } else if !sentinel_seen {
            match self.format {
                ApiFormat::OpenAiChat => tail.extend_from_slice(b"data: [DONE]\n\n"),
                ApiFormat::AnthropicMessages => tail.extend_from_slice(
                    b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n",
                ),
                // A Responses stream is complete only with its `response.completed`, which carries
                // the whole answer the passthrough never kept: end it as failed instead.
                ApiFormat::OpenAiResponses => {
                    tail = stream_error_event_after(
                        ApiFormat::OpenAiResponses,
                        &ClientError::new(
                            ErrorKind::BadGateway,
                            "the upstream ended without response.completed",
                        ),
                        self.observer.observation().last_sequence_number,
                    );
                }
                ApiFormat::Gemini => {}
            }
        }
        tail
    }

    /// Turns upstream bytes into what the client gets now (`None`: nothing yet).
    fn emit(&mut self, chunk: Bytes) -> Option<Bytes> {
        if let Some(t) = &mut self.translation {
            let mut out = Vec::new();
            let Translation {
                parser,
                translator,
                malformed,
                exceeded,
            } = t;
            parser.feed_ref(&chunk, |ev| match translator.push(ev, &mut out) {
                Ok(()) => {}
                Err(e) if e.is_limit_exceeded() => {
                    if exceeded.is_none() {
                        *exceeded = Some(e.to_string());
                    }
                }
                Err(_) => *malformed = malformed.saturating_add(1),
            });
            let over_limit = exceeded.take();
            let oversized = parser.oversized_events() > 0;
            if self.violation.is_none() {
                self.violation = over_limit.or_else(|| {
                    // An event was dropped whole: what follows could not be a faithful translation.
                    oversized.then(|| {
                        format!(
                            "the provider sent an event larger than {} bytes (limits.max_event_bytes)",
                            self.max_event_bytes
                        )
                    })
                });
            }
            return self.deliver(Bytes::from(out));
        }
        let out = if self.pending.is_empty() {
            match last_event_end(&chunk, 0) {
                Some(end) if end == chunk.len() => chunk,
                Some(end) => {
                    self.hold(chunk.get(end..).unwrap_or_default());
                    chunk.slice(..end)
                }
                None => {
                    self.hold(&chunk);
                    return None;
                }
            }
        } else {
            let from = self.pending_scanned;
            self.pending.extend_from_slice(&chunk);
            match last_event_end(&self.pending, from) {
                Some(end) => {
                    self.pending_scanned = 0;
                    self.pending.split_to(end).freeze()
                }
                None => {
                    self.pending_scanned = self.pending.len();
                    self.check_pending();
                    return None;
                }
            }
        };
        let out = self.skip_malformed(out);
        let out = self.repair_utf8(out);
        self.deliver(out)
    }

    /// Holds back the start of an event whose end has not arrived yet.
    fn hold(&mut self, bytes: &[u8]) {
        self.pending.extend_from_slice(bytes);
        self.pending_scanned = self.pending.len();
        self.check_pending();
    }

    /// An event that outgrows the limit ends the stream: it is never buffered without bound. Nor
    /// past the gateway-wide budget, when many streams hold large partial events at once.
    fn check_pending(&mut self) {
        if self.violation.is_some() {
            return;
        }
        let held = self.holding();
        if self.pending.len() > self.max_event_bytes {
            self.violation = Some(format!(
                "the provider sent an event larger than {} bytes (limits.max_event_bytes)",
                self.max_event_bytes
            ));
        } else if !self.held.set(held) {
            self.violation = Some(BUFFERS_FULL.to_owned());
        } else {
            return;
        }
        self.pending = BytesMut::new();
        self.pending_scanned = 0;
        self.held.set(self.holding());
    }

    /// Bytes held for the client now: the prefix not yet sent, the event waiting for its end, and
    /// the parsers' copies of the event in progress.
    fn holding(&self) -> usize {
        let parsers = self
            .observer
            .buffered()
            .saturating_add(self.translation.as_ref().map_or(0, |t| t.parser.buffered()));
        self.prefix_bytes
            .saturating_add(self.pending.len())
            .saturating_add(parsers)
    }

    /// Follows what is held now; past the gateway's budget the stream must end.
    fn rebalance(&mut self) {
        let holding = self.holding();
        if !self.held.set(holding) && self.violation.is_none() {
            self.violation = Some(BUFFERS_FULL.to_owned());
        }
    }

    /// One malformed event in an otherwise healthy stream is dropped (and counted in the log line),
    /// not passed on for the client's SDK to choke on. Only chunks that hold one are rebuilt.
    fn skip_malformed(&mut self, out: Bytes) -> Bytes {
        let seen = self.observer.observation().malformed_events;
        if seen <= self.malformed_skipped {
            return out;
        }
        let mut parser = SseParser::new();
        let mut kept = Vec::with_capacity(out.len());
        let mut dropped: u64 = 0;
        parser.feed(&out, |ev| {
            let valid = ev.data.trim() == "[DONE]"
                || serde_json::from_str::<serde::de::IgnoredAny>(&ev.data).is_ok();
            if !valid {
                dropped = dropped.saturating_add(1);
                return;
            }
            if !ev.event.is_empty() {
                kept.extend_from_slice(b"event: ");
                kept.extend_from_slice(ev.event.as_bytes());
                kept.push(b'\n');
            }
            for line in ev.data.split('\n') {
                kept.extend_from_slice(b"data: ");
                kept.extend_from_slice(line.as_bytes());
                kept.push(b'\n');
            }
            kept.push(b'\n');
        });
        if dropped == 0 {
            // What the observer counted was well-formed JSON of an unexpected shape: passed on as
            // is. Catch up, so later chunks are not parsed a second time for nothing.
            self.malformed_skipped = seen;
            return out;
        }
        self.malformed_skipped = self.malformed_skipped.saturating_add(dropped);
        if let Some(o) = &self.outcome {
            tracing::warn!(
                request_id = &*o.request_id,
                target = o.target(),
                "skipped {dropped} malformed stream event(s) from the provider"
            );
        }
        Bytes::from(kept)
    }

    /// Whole events are valid UTF-8 in a well-formed stream (checking is cheap next to the network);
    /// a provider's invalid bytes are replaced with U+FFFD rather than passed on for the client's
    /// SDK to choke on, and logged.
    fn repair_utf8(&mut self, out: Bytes) -> Bytes {
        if std::str::from_utf8(&out).is_ok() {
            return out;
        }
        if let Some(o) = &self.outcome {
            tracing::warn!(
                request_id = &*o.request_id,
                target = o.target(),
                "replaced invalid UTF-8 in a stream event from the provider"
            );
        }
        Bytes::from(String::from_utf8_lossy(&out).into_owned())
    }

    /// Ends the stream with an error event naming the target and the cause.
    fn fail(&mut self, kind: ErrorKind, cause: String) -> Bytes {
        let target = self.outcome.as_ref().map_or("", |o| o.target());
        let message = format!("{target}: {cause}");
        let event = match &mut self.translation {
            Some(t) => {
                let mut out = Vec::new();
                t.translator.error(error_word(kind), &message, &mut out);
                out
            }
            None => stream_error_event_after(
                self.format,
                &ClientError::new(kind, message.clone()),
                self.observer.observation().last_sequence_number,
            ),
        };
        if let Some(o) = self.outcome.take() {
            o.finish_stream(self.observer.observation(), Some(&message));
        }
        Bytes::from(event)
    }

    fn complete(&mut self) {
        if let Some(o) = self.outcome.take() {
            o.finish_stream(self.observer.observation(), None);
        }
        self.drain_upstream();
    }

    /// The answer is complete, but the upstream's HTTP body may not have ended yet (its last chunk
    /// often follows the terminal event a moment later). Read it to its end off the client's path,
    /// bounded in bytes and time, so the connection goes back to the pool instead of being closed.
    fn drain_upstream(&mut self) {
        let mut inner: BodyStream =
            std::mem::replace(&mut self.inner, Box::pin(futures_util::stream::empty()));
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        rt.spawn(async move {
            let mut left = DRAIN_MAX_BYTES;
            let read = async {
                while let Some(Ok(chunk)) = futures_util::StreamExt::next(&mut inner).await {
                    left = left.saturating_sub(chunk.len());
                    if left == 0 {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(DRAIN_TIME, read).await;
        });
    }
}

/// At most this much of an upstream body is read after the answer's end, within this time.
const DRAIN_MAX_BYTES: usize = 64 * 1024;
const DRAIN_TIME: Duration = Duration::from_secs(2);

const BUFFERS_FULL: &str =
    "the gateway holds limits.max_buffered_bytes of provider answers already";

/// The gateway's word for an error kind, which the stream encoder maps to the client's vocabulary.
fn error_word(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::Timeout => "timeout",
        ErrorKind::Overloaded => "overloaded_error",
        ErrorKind::RateLimited => "rate_limit",
        _ => "api_error",
    }
}

/// The end of the last complete SSE event in `b` (just after its blank line), if any. `b[..from]` is
/// known to hold no event end; only the bytes after it (and the 2 before, where a terminator can
/// straddle the boundary) are scanned.
fn last_event_end(b: &[u8], from: usize) -> Option<usize> {
    let lo = from.saturating_sub(2);
    let scan = b.get(lo..)?;
    scan.windows(2).enumerate().rev().find_map(|(k, w)| {
        let &[first, second] = w else { return None };
        let end = match (first, second) {
            (b'\n', b'\n') | (b'\r', b'\r') => true,
            // `\n\r\n`: the byte before the pair must end a line.
            (b'\r', b'\n') => {
                let before = lo.saturating_add(k).checked_sub(1).and_then(|j| b.get(j));
                before == Some(&b'\n')
            }
            _ => false,
        };
        // The pair ends at `lo + k + 1`; the event ends just after it.
        end.then(|| lo.saturating_add(k).saturating_add(2))
    })
}

impl Stream for ObservedStream {
    type Item = Result<Bytes, std::convert::Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        loop {
            if this.outcome.is_none() {
                return Poll::Ready(None);
            }
            if let Some(fut) = this.continuing.as_mut() {
                let Poll::Ready((r, result)) = fut.as_mut().poll(cx) else {
                    return Poll::Pending;
                };
                this.continuing = None;
                if let Some(o) = &this.outcome {
                    o.st.telemetry.continuation(o.route_idx, result.is_ok());
                }
                match result {
                    Ok(c) => {
                        if let Some(o) = &this.outcome {
                            tracing::info!(
                                request_id = &*o.request_id,
                                target = c.label.as_str(),
                                "stream continued on {}",
                                c.label
                            );
                        }
                        this.install(c, r);
                        continue;
                    }
                    Err(why) => {
                        let (kind, cause) = this
                            .broken
                            .take()
                            .unwrap_or((ErrorKind::BadGateway, "stream broke".to_owned()));
                        let ev = this.fail(kind, format!("{cause}; not continued: {why}"));
                        return Poll::Ready(Some(Ok(ev)));
                    }
                }
            }
            if let Some((kind, cause)) = this.broken.take() {
                match this.break_off(kind, cause) {
                    Some(ev) => return Poll::Ready(Some(Ok(ev))),
                    None => continue,
                }
            }
            if let Some(cause) = this.violation.take() {
                let ev = this.fail(ErrorKind::BadGateway, cause);
                return Poll::Ready(Some(Ok(ev)));
            }
            if let Some(chunk) = this.prefix.pop_front() {
                this.prefix_bytes = this.prefix_bytes.saturating_sub(chunk.len());
                let out = this.emit(chunk);
                this.rebalance();
                match this.end_if_done(out) {
                    Some(out) => return Poll::Ready(Some(Ok(out))),
                    None => continue,
                }
            }
            if this.deadline.as_mut().poll(cx).is_ready() {
                let cause = format!(
                    "{} after {} mid-stream",
                    this.deadline_kind.as_str(),
                    secs(this.deadline_after)
                );
                let ev = this.fail(ErrorKind::Timeout, cause);
                return Poll::Ready(Some(Ok(ev)));
            }
            if this.idle.as_mut().poll(cx).is_ready() {
                let cause = format!("idle timeout: no data for {}", secs(this.idle_after));
                match this.break_off(ErrorKind::Timeout, cause) {
                    Some(ev) => return Poll::Ready(Some(Ok(ev))),
                    None => continue,
                }
            }
            match this.inner.as_mut().poll_next(cx) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Some(Ok(chunk))) => {
                    let idle_after = this.idle_after;
                    let now = Instant::now();
                    if let Some(h) = &this.chunk_timer {
                        h.observe(now.saturating_duration_since(this.last_chunk).as_secs_f64());
                    }
                    this.last_chunk = now;
                    this.idle.as_mut().reset(
                        Instant::now()
                            .checked_add(idle_after)
                            .unwrap_or(this.deadline.deadline()),
                    );
                    if this.observer.feed(&chunk)
                        && let Some(o) = this.outcome.as_mut()
                    {
                        o.first_token();
                    }
                    let out = this.emit(chunk);
                    // What completed was sent: hold only what still waits for its end.
                    this.rebalance();
                    match this.end_if_done(out) {
                        Some(out) => return Poll::Ready(Some(Ok(out))),
                        None => continue,
                    }
                }
                Poll::Ready(Some(Err(failure))) => {
                    match this.break_off(ErrorKind::BadGateway, format!("stream broke: {failure}"))
                    {
                        Some(ev) => return Poll::Ready(Some(Ok(ev))),
                        None => continue,
                    }
                }
                Poll::Ready(None) => {
                    let cut_mid_event = this.observer.finish() || !this.pending.is_empty();
                    let obs = this.observer.observation();
                    if obs.error.is_some() && this.delivery.is_some() {
                        let cause = "the provider sent an error event".to_owned();
                        match this.break_off(ErrorKind::BadGateway, cause) {
                            Some(ev) => return Poll::Ready(Some(Ok(ev))),
                            None => continue,
                        }
                    }
                    if obs.error.is_some() {
                        // The provider ended the stream with its own error event: already forwarded.
                        if let Some(o) = this.outcome.take() {
                            o.finish_stream(
                                this.observer.observation(),
                                Some("the provider sent an error event"),
                            );
                        }
                        return Poll::Ready(None);
                    }
                    // A clean end with the answer's stop reason but no closing sentinel: finalise it
                    // at once rather than call a complete answer broken.
                    if !cut_mid_event && (obs.done || obs.stop_reason.is_some()) {
                        let done = obs.done;
                        let mut tail = this.flush_delivery();
                        tail.extend(this.closing_events(done));
                        this.complete();
                        if tail.is_empty() {
                            return Poll::Ready(None);
                        }
                        return Poll::Ready(Some(Ok(Bytes::from(tail))));
                    }
                    let cause = "stream ended before the answer was complete".to_owned();
                    match this.break_off(ErrorKind::BadGateway, cause) {
                        Some(ev) => return Poll::Ready(Some(Ok(ev))),
                        None => continue,
                    }
                }
            }
        }
    }
}

impl Drop for ObservedStream {
    fn drop(&mut self) {
        if let Some(o) = self.outcome.take() {
            o.client_gone(self.observer.observation());
        }
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects
)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use bytes::Bytes;
    use futures_util::StreamExt;
    use tokio::sync::mpsc;
    use tokio::time::Instant;

    use ballast_core::api::ApiFormat;
    use ballast_core::config::Config;
    use ballast_core::config::env::MapEnv;
    use ballast_core::observe::StreamObserver;
    use ballast_core::translate::{StreamOptions, StreamTranslator};

    use super::{ObservedStream, StreamStart, last_event_end};
    use crate::outcome::Outcome;
    use crate::state::AppState;
    use crate::upstream::{Failure, TimeoutKind};

    #[test]
    fn event_ends() {
        assert_eq!(last_event_end(b"data: a\n\ndata: b", 0), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\n", 0), Some(11));
        assert_eq!(last_event_end(b"data: a\n", 0), None);
        assert_eq!(
            last_event_end(b"event: x\ndata: a\n\nevent: y\ndata: b\n\n", 0),
            Some(36)
        );
        assert_eq!(last_event_end(b"", 0), None);
        assert_eq!(last_event_end(b"\n\n", 0), Some(2));
        // A terminator that straddles what was already scanned is still found.
        assert_eq!(last_event_end(b"data: a\n\n", 8), Some(9));
        assert_eq!(last_event_end(b"data: a\r\n\r\n", 10), Some(11));
        assert_eq!(last_event_end(b"data: a\r\n\r\n", 9), Some(11));
    }

    fn state() -> Arc<AppState> {
        let toml = "[providers.p]\nkind = \"openai\"\nbase_url = \"http://p.test/v1\"\napi_key = \"k\"\n[routes.r]\ntargets = [\"p/m\"]\n";
        Arc::new(
            AppState::with_seed(Config::from_toml(toml, &MapEnv::new(&[])).unwrap(), 1).unwrap(),
        )
    }

    /// An `ObservedStream` over chunks the test sends; `to` is the client's format.
    fn observed(
        st: &Arc<AppState>,
        to: ApiFormat,
        max_event_bytes: usize,
        idle: Duration,
    ) -> (mpsc::Sender<Result<Bytes, Failure>>, ObservedStream) {
        let (tx, rx) = mpsc::channel(16);
        let inner = Box::pin(futures_util::stream::unfold(rx, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
        let now = Instant::now();
        let outcome = Outcome {
            st: st.clone(),
            request_id: Arc::from("req-1"),
            route_idx: 0,
            api: ApiFormat::OpenAiChat,
            fallback: false,
            target_state: 0,
            started: now,
            attempt_started: now,
            attempts: 1,
            ttft: None,
            ticket: None,
            guards: Vec::new(),
            trace: None,
            request_model: None,
        };
        let from = ApiFormat::OpenAiChat;
        let translator = (to != from).then(|| {
            StreamTranslator::new(
                from,
                to,
                StreamOptions {
                    model: "m".to_owned(),
                    include_usage: false,
                },
            )
        });
        let stream = ObservedStream::new(StreamStart {
            inner,
            upstream_format: from,
            client_format: to,
            observer: StreamObserver::new(from),
            prefix: Vec::new(),
            translator,
            deadline: now + Duration::from_secs(3600),
            deadline_kind: TimeoutKind::Deadline,
            deadline_after: Duration::from_secs(3600),
            idle,
            max_event_bytes,
            held: st.runtime.buffered.reserve(),
            chunk_timer: None,
            outcome,
            continuation: None,
        });
        (tx, stream)
    }

    fn chunk(text: &str) -> String {
        format!(
            "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{text}\"}},\"finish_reason\":null}}]}}\n\n"
        )
    }

    const END: &str = "data: {\"id\":\"c\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\ndata: [DONE]\n\n";

    async fn collect(mut s: ObservedStream) -> (Vec<Bytes>, String) {
        let mut parts = Vec::new();
        while let Some(Ok(b)) = s.next().await {
            parts.push(b);
        }
        let all = parts
            .iter()
            .flat_map(|b| b.iter().copied())
            .collect::<Vec<u8>>();
        (parts, String::from_utf8_lossy(&all).into_owned())
    }

    #[tokio::test(start_paused = true)]
    async fn the_client_sees_only_whole_events_however_the_upstream_splits_them() {
        let whole = format!("{}{}{END}", chunk("hello "), chunk("world"));
        let st = state();
        for split in 1..whole.len() {
            let (tx, s) = observed(&st, ApiFormat::OpenAiChat, 1 << 20, Duration::from_secs(60));
            let (a, b) = whole.as_bytes().split_at(split);
            tx.send(Ok(Bytes::copy_from_slice(a))).await.unwrap();
            tx.send(Ok(Bytes::copy_from_slice(b))).await.unwrap();
            drop(tx);
            let (parts, all) = collect(s).await;
            assert_eq!(all, whole, "split at {split}");
            for p in parts {
                assert!(
                    p.ends_with(b"\n\n"),
                    "split at {split}: a part ends mid-event"
                );
            }
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_event_past_the_cap_ends_the_stream_with_an_error_event() {
        let (tx, s) = observed(
            &state(),
            ApiFormat::OpenAiChat,
            4096,
            Duration::from_secs(60),
        );
        let feeder = tokio::spawn(async move {
            tx.send(Ok(Bytes::from(chunk("ok ")))).await.unwrap();
            tx.send(Ok(Bytes::from_static(b"data: {\"x\":\"")))
                .await
                .unwrap();
            // Far more than the cap, in small pieces; the stream must stop reading well before.
            for _ in 0..10_000 {
                if tx.send(Ok(Bytes::from(vec![b'a'; 100]))).await.is_err() {
                    return;
                }
            }
        });
        let (_, all) = collect(s).await;
        assert!(all.starts_with(&chunk("ok ")), "{all}");
        assert!(all.contains("limits.max_event_bytes"), "{all}");
        assert!(
            all.len() < 1024,
            "the oversized event leaked: {} bytes",
            all.len()
        );
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_upstream_ends_the_stream_at_the_idle_timeout() {
        let (tx, s) = observed(
            &state(),
            ApiFormat::OpenAiChat,
            1 << 20,
            Duration::from_secs(7),
        );
        tx.send(Ok(Bytes::from(chunk("partial")))).await.unwrap();
        let t0 = Instant::now();
        let (_, all) = collect(s).await;
        assert_eq!(t0.elapsed(), Duration::from_secs(7));
        assert!(
            all.contains("partial") && all.contains("idle timeout"),
            "{all}"
        );
        assert!(!all.contains("[DONE]"));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn a_broken_connection_ends_the_stream_with_an_error_event() {
        let (tx, s) = observed(
            &state(),
            ApiFormat::AnthropicMessages,
            1 << 20,
            Duration::from_secs(60),
        );
        tx.send(Ok(Bytes::from(chunk("partial")))).await.unwrap();
        tx.send(Err(Failure::Transport("connection reset".to_owned())))
            .await
            .unwrap();
        let (_, all) = collect(s).await;
        assert!(all.contains("partial"), "{all}");
        assert!(
            all.contains("event: error") && all.contains("stream broke"),
            "{all}"
        );
        assert!(!all.contains("message_stop"), "{all}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_clean_end_without_the_sentinel_is_finalised() {
        let (tx, s) = observed(
            &state(),
            ApiFormat::OpenAiChat,
            1 << 20,
            Duration::from_secs(60),
        );
        let body = format!(
            "{}data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n",
            chunk("done")
        );
        tx.send(Ok(Bytes::from(body))).await.unwrap();
        drop(tx);
        let (_, all) = collect(s).await;
        assert!(all.ends_with("data: [DONE]\n\n"), "{all}");
    }

    #[tokio::test(start_paused = true)]
    async fn a_translated_stream_ends_cleanly_in_the_clients_format() {
        let (tx, s) = observed(
            &state(),
            ApiFormat::AnthropicMessages,
            1 << 20,
            Duration::from_secs(60),
        );
        tx.send(Ok(Bytes::from(format!("{}{END}", chunk("hi")))))
            .await
            .unwrap();
        drop(tx);
        let (_, all) = collect(s).await;
        assert!(all.contains("event: message_start"), "{all}");
        assert!(all.contains("\"text\":\"hi\""), "{all}");
        assert!(all.contains("event: message_stop"), "{all}");
    }
}
