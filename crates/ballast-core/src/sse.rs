//! An incremental Server-Sent Events parser: feed it byte chunks as they arrive, get whole events out.
//!
//! The gateway forwards stream bytes untouched on the same-format path and uses this parser only to
//! *observe* them (usage, stop reason, terminal event), so the parser never owns or delays the bytes
//! that go to the client. It follows the WHATWG event-stream rules that matter for LLM APIs: `event:`
//! and `data:` fields, multi-line data joined with `\n`, comments (`:`) ignored, `\n`, `\r\n` and `\r`
//! line endings, and events split anywhere across chunks (including inside a UTF-8 sequence).
//!
//! Memory is bounded whatever the bytes: a partial line is buffered only up to the event size limit
//! (a longer line is dropped with the rest of its event), and every byte is scanned for a line end
//! once, however many chunks a long line arrives in.

use bytes::BytesMut;

/// One dispatched event. `event` is empty when the stream gave no `event:` field (OpenAI, Gemini).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Default upper bound on one event's size (its longest line, and its joined `data`); a longer event
/// is dropped (and counted) rather than buffered without limit.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

/// The largest event buffer kept for the next event (see [`SseParser::feed_ref`]).
const REUSED_CAPACITY: usize = 16 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    /// The current line so far (never holds a line end: it is scanned once, as it arrives).
    buf: BytesMut,
    event: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`; a `\n` at the start of the next one belongs to that line end.
    pending_cr: bool,
    /// The current line outgrew the limit and was dropped; skip the rest of it.
    skip_line: bool,
    /// The current event outgrew the limit and was dropped; skip its lines up to the blank line.
    skip_event: bool,
    oversized: u64,
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self::with_limit(MAX_EVENT_BYTES)
    }

    /// A parser with a custom per-event size limit (e.g. `StreamLimits::max_event_bytes`).
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            ..Self::default()
        }
    }

    /// Bytes held for the event in progress (its current line, its data so far).
    pub fn buffered(&self) -> usize {
        self.buf
            .len()
            .saturating_add(self.data.len())
            .saturating_add(self.event.len())
    }

    /// How many events were dropped for exceeding the size limit.
    pub fn oversized_events(&self) -> u64 {
        self.oversized
    }

    /// Feeds a chunk; calls `on_event` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        self.feed_with(chunk, |ev| {
            on_event(ev);
            None
        });
    }

    /// Like [`SseParser::feed`] for a reader that only borrows each event: the event's buffers
    /// are reused for the next one instead of allocated per event.
    pub fn feed_ref(&mut self, chunk: &[u8], mut on_event: impl FnMut(&SseEvent)) {
        self.feed_with(chunk, |ev| {
            on_event(&ev);
            Some(ev)
        });
    }

    /// Feeds a chunk; `on_event` may hand an event back to lend its buffers to the next one.
    fn feed_with(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent) -> Option<SseEvent>) {
        let mut rest = chunk;
        if self.pending_cr && !rest.is_empty() {
            // (An empty chunk says nothing about the `\n` that may follow.)
            self.pending_cr = false;
            if let Some((b'\n', tail)) = rest.split_first() {
                rest = tail;
            }
        }
        while !rest.is_empty() {
            let Some(pos) = rest.iter().position(|&b| b == b'\n' || b == b'\r') else {
                // No line end: the line continues in the next chunk.
                self.buffer(rest);
                return;
            };
            let (line, terminator) = rest.split_at(pos);
            // `terminator` starts with the `\r` or `\n` just found.
            rest = match terminator {
                [b'\r', b'\n', tail @ ..] => tail,
                [b'\r'] => {
                    self.pending_cr = true;
                    &[]
                }
                [_, tail @ ..] => tail,
                [] => &[],
            };
            if std::mem::take(&mut self.skip_line) {
                self.buf.clear();
                continue;
            }
            if self.buf.is_empty() {
                if line.len() > self.max_event_bytes {
                    self.oversized_line();
                } else {
                    self.line(line, &mut on_event);
                }
            } else if self.buf.len().saturating_add(line.len()) > self.max_event_bytes {
                self.buf.clear();
                self.oversized_line();
            } else {
                self.buf.extend_from_slice(line);
                let whole = std::mem::take(&mut self.buf);
                self.line(&whole, &mut on_event);
                // Keep the allocation for the next partial line.
                self.buf = whole;
                self.buf.clear();
            }
        }
    }

    /// Buffers the start of a line that continues in a later chunk, up to the limit.
    fn buffer(&mut self, part: &[u8]) {
        if self.skip_line {
            return;
        }
        if self.buf.len().saturating_add(part.len()) > self.max_event_bytes {
            // A single line longer than the limit: drop it and everything up to the next line end.
            self.buf.clear();
            self.skip_line = true;
            self.oversized_line();
        } else {
            self.buf.extend_from_slice(part);
        }
    }

    /// Signals the end of the stream. Per the spec an unterminated final event is discarded; returns
    /// whether such a partial event (or partial line) was pending, which means the stream was cut.
    pub fn finish(&mut self) -> bool {
        let partial = !self.buf.is_empty()
            || self.has_data
            || !self.event.is_empty()
            || self.skip_line
            || self.skip_event;
        self.buf.clear();
        self.event.clear();
        self.data.clear();
        self.has_data = false;
        self.skip_line = false;
        self.skip_event = false;
        self.pending_cr = false;
        partial
    }

    /// A line too long to keep: the event it belongs to is dropped.
    fn oversized_line(&mut self) {
        if !self.skip_event {
            self.discard_event();
        }
    }

    fn discard_event(&mut self) {
        self.oversized = self.oversized.saturating_add(1);
        self.event = String::new();
        self.data = String::new();
        self.has_data = false;
        self.skip_event = true;
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent) -> Option<SseEvent>) {
        if line.is_empty() {
            if std::mem::take(&mut self.skip_event) {
                return;
            }
            if self.has_data {
                let event = SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                };
                self.has_data = false;
                if let Some(back) = on_event(event) {
                    // Only ordinary sizes are kept: a rare huge event's memory is not held for
                    // the rest of the stream.
                    for (mine, theirs) in
                        [(&mut self.event, back.event), (&mut self.data, back.data)]
                    {
                        if theirs.capacity() <= REUSED_CAPACITY {
                            *mine = theirs;
                            mine.clear();
                        }
                    }
                }
            } else {
                self.event.clear();
            }
            return;
        }
        if self.skip_event || line.first() == Some(&b':') {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let (field, v) = line.split_at(i);
                let v = v.get(1..).unwrap_or_default();
                (field, v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                push_lossy(&mut self.event, value);
            }
            b"data" => {
                // The data so far, the `\n` joining this line to it, and the line's value. (Lossy
                // UTF-8 can still triple an invalid value: checked again below.)
                let joined = self
                    .data
                    .len()
                    .saturating_add(usize::from(self.has_data))
                    .saturating_add(value.len());
                if joined > self.max_event_bytes {
                    self.discard_event();
                    return;
                }
                if self.has_data {
                    self.data.push('\n');
                }
                push_lossy(&mut self.data, value);
                self.has_data = true;
                if self.data.len() > self.max_event_bytes {
                    self.discard_event();
                }
            }
            _ => {}
        }
    }
}

/// Appends `value`, invalid UTF-8 replaced with U+FFFD. Valid text (every well-formed stream's) takes
/// the vectorised check, not the lossy decoder's byte-by-byte walk.
fn push_lossy(to: &mut String, value: &[u8]) {
    match std::str::from_utf8(value) {
        Ok(text) => to.push_str(text),
        Err(_) => to.push_str(&String::from_utf8_lossy(value)),
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use super::*;

    fn parse_chunks(chunks: &[&[u8]]) -> (Vec<SseEvent>, bool) {
        let mut p = SseParser::new();
        let mut out = Vec::new();
        for c in chunks {
            p.feed(c, |e| out.push(e));
        }
        let partial = p.finish();
        (out, partial)
    }

    #[test]
    fn borrowed_events_are_the_owned_ones_with_buffers_reused() {
        let stream: &[u8] = b"event: a\ndata: 1\ndata: 2\n\ndata: x\n\n: c\nevent: long-name\ndata: yy\n\nevent: e\n\ndata: z\n\n";
        for split in 0..stream.len() {
            let (head, tail) = stream.split_at(split);
            let (owned, _) = parse_chunks(&[head, tail]);
            let mut p = SseParser::new();
            let mut borrowed = Vec::new();
            for c in [head, tail] {
                p.feed_ref(c, |e| borrowed.push(e.clone()));
            }
            assert!(!p.finish());
            assert_eq!(borrowed, owned, "split at {split}");
        }
    }

    fn ev(event: &str, data: &str) -> SseEvent {
        SseEvent {
            event: event.into(),
            data: data.into(),
        }
    }

    #[test]
    fn named_and_unnamed_events() {
        let (events, partial) = parse_chunks(&[
            b"event: message_start\ndata: {\"a\":1}\n\n",
            b"data: {\"b\":2}\n\ndata: [DONE]\n\n",
        ]);
        assert_eq!(
            events,
            vec![
                ev("message_start", "{\"a\":1}"),
                ev("", "{\"b\":2}"),
                ev("", "[DONE]")
            ]
        );
        assert!(!partial);
    }

    #[test]
    fn split_anywhere_including_utf8_and_crlf() {
        let whole =
            "event: x\r\ndata: héllo ไทย\r\n\r\n: comment\r\ndata: a\r\ndata: b\r\n\r\n".as_bytes();
        for split in 0..whole.len() {
            let (events, partial) = parse_chunks(&[&whole[..split], &whole[split..]]);
            assert_eq!(
                events,
                vec![ev("x", "héllo ไทย"), ev("", "a\nb")],
                "split at {split}"
            );
            assert!(!partial);
        }
        // Byte by byte.
        let chunks: Vec<&[u8]> = whole.chunks(1).collect();
        assert_eq!(parse_chunks(&chunks).0.len(), 2);
    }

    #[test]
    fn cut_stream_reports_partial_event() {
        let (events, partial) = parse_chunks(&[b"data: {\"a\":1}\n\ndata: {\"trunc"]);
        assert_eq!(events, vec![ev("", "{\"a\":1}")]);
        assert!(partial);
    }

    #[test]
    fn oversized_event_is_dropped_not_buffered() {
        let mut p = SseParser::with_limit(16);
        let mut out = Vec::new();
        p.feed(b"data: 0123456789abcdefghij\n\ndata: ok\n\n", |e| {
            out.push(e)
        });
        assert_eq!(out, vec![ev("", "ok")]);
        assert_eq!(p.oversized_events(), 1);
        // The same overlong line arriving in pieces is skipped to its end, not reparsed as fields.
        p.feed(b"data: 0123456789abcdefghijkl", |e| out.push(e));
        p.feed(b"mnop\nevent: bogus\n\ndata: ok2\n\n", |e| out.push(e));
        assert_eq!(out, vec![ev("", "ok"), ev("", "ok2")]);
    }

    #[test]
    fn the_rest_of_an_oversized_event_is_not_dispatched_as_an_event() {
        // Regression: after a long data line was dropped, the event's later lines used to form a
        // truncated event of their own.
        let mut p = SseParser::with_limit(16);
        let mut out = Vec::new();
        p.feed(
            b"event: x\ndata: 0123456789abcdefghij\ndata: tail\n\ndata: ok\n\n",
            |e| out.push(e),
        );
        assert_eq!(out, vec![ev("", "ok")]);
        // Many short data lines that together outgrow the limit.
        p.feed(
            b"data: 0123456\ndata: 0123456\ndata: 0\n\ndata: ok\n\n",
            |e| out.push(e),
        );
        assert_eq!(out, vec![ev("", "ok"), ev("", "ok")]);
        assert_eq!(p.oversized_events(), 2);
    }

    #[test]
    fn a_long_line_in_many_chunks_is_bounded_and_scanned_once() {
        let mut p = SseParser::with_limit(1024);
        let mut out = Vec::new();
        // 1 MiB of one line in 64-byte pieces: the buffer never holds more than the limit.
        p.feed(b"data: ", |e| out.push(e));
        for _ in 0..16 * 1024 {
            p.feed(&[b'a'; 64], |e| out.push(e));
            assert!(p.buf.len() <= 1024);
        }
        p.feed(b"\n\ndata: ok\n\n", |e| out.push(e));
        assert_eq!(out, vec![ev("", "ok")]);
        // A line just under the limit, byte by byte, is kept whole.
        let line = format!("data: {}\n\n", "b".repeat(1000));
        for b in line.as_bytes() {
            p.feed(std::slice::from_ref(b), |e| out.push(e));
        }
        assert_eq!(out.last().map(|e| e.data.len()), Some(1000));
    }

    #[test]
    fn an_empty_chunk_between_cr_and_lf() {
        // Regression: the empty chunk cleared the pending `\r`, so the `\n` after it ended the
        // event early.
        let (events, partial) = parse_chunks(&[b"data: a\r", b"", b"\ndata: b\n", b"", b"\n"]);
        assert_eq!(events, vec![ev("", "a\nb")]);
        assert!(!partial);
    }

    #[test]
    fn lone_cr_at_a_chunk_end_and_invalid_utf8() {
        let (events, partial) = parse_chunks(&[b"data: a\r", b"\ndata: \xff\xfe\r", b"\r"]);
        assert_eq!(events, vec![ev("", "a\n\u{fffd}\u{fffd}")]);
        assert!(!partial);
        let (events, partial) = parse_chunks(&[b"data: a\r\r", b"data: b\r", b"\r"]);
        assert_eq!(events, vec![ev("", "a"), ev("", "b")]);
        assert!(!partial);
    }
}
