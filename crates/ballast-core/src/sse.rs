//! An incremental Server-Sent Events parser: feed it byte chunks as they arrive, get whole events out.
//!
//! The gateway forwards stream bytes untouched on the same-format path and uses this parser only to
//! *observe* them (usage, stop reason, terminal event), so the parser never owns or delays the bytes
//! that go to the client. It follows the WHATWG event-stream rules that matter for LLM APIs: `event:`
//! and `data:` fields, multi-line data joined with `\n`, comments (`:`) ignored, `\n`, `\r\n` and `\r`
//! line endings, and events split anywhere across chunks (including inside a UTF-8 sequence).

use bytes::{Buf, BytesMut};

/// One dispatched event. `event` is empty when the stream gave no `event:` field (OpenAI, Gemini).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SseEvent {
    pub event: String,
    pub data: String,
}

/// Upper bound on one event's size; a longer event is dropped (and counted) rather than buffered
/// without limit.
pub const MAX_EVENT_BYTES: usize = 8 * 1024 * 1024;

#[derive(Debug, Default)]
pub struct SseParser {
    buf: BytesMut,
    event: String,
    data: String,
    has_data: bool,
    /// The previous chunk ended in `\r`; a `\n` at the start of the next one belongs to that line end.
    pending_cr: bool,
    /// The current line outgrew the limit and was dropped; skip the rest of it.
    skip_line: bool,
    /// Bytes at the start of `buf` already scanned for a line end (none found), so a long line
    /// arriving in many chunks is scanned once, not once per chunk.
    scanned: usize,
    oversized: u64,
    max_event_bytes: usize,
}

impl SseParser {
    pub fn new() -> Self {
        Self {
            max_event_bytes: MAX_EVENT_BYTES,
            ..Self::default()
        }
    }

    /// A parser with a custom per-event size limit (tests, fuzzing).
    pub fn with_limit(max_event_bytes: usize) -> Self {
        Self {
            max_event_bytes,
            ..Self::default()
        }
    }

    /// How many events were dropped for exceeding the size limit.
    pub fn oversized_events(&self) -> u64 {
        self.oversized
    }

    /// Feeds a chunk; calls `on_event` for every event it completes.
    pub fn feed(&mut self, chunk: &[u8], mut on_event: impl FnMut(SseEvent)) {
        let mut chunk = chunk;
        if self.pending_cr {
            self.pending_cr = false;
            if let Some(b'\n') = chunk.first() {
                chunk = &chunk[1..];
            }
        }
        self.buf.extend_from_slice(chunk);
        while let Some(pos) = self.buf[self.scanned..]
            .iter()
            .position(|&b| b == b'\n' || b == b'\r')
            .map(|p| p + self.scanned)
        {
            self.scanned = 0;
            let line = self.buf.split_to(pos);
            let terminator = self.buf[0];
            self.buf.advance(1);
            if terminator == b'\r' {
                match self.buf.first() {
                    Some(b'\n') => self.buf.advance(1),
                    None => self.pending_cr = true,
                    _ => {}
                }
            }
            if self.skip_line {
                self.skip_line = false;
                continue;
            }
            self.line(&line, &mut on_event);
        }
        self.scanned = self.buf.len();
        if self.buf.len() > self.max_event_bytes {
            // A single line longer than the limit: drop it and everything up to the next line end.
            self.buf.clear();
            self.scanned = 0;
            self.skip_line = true;
            self.discard_event();
        }
    }

    /// Signals the end of the stream. Per the spec an unterminated final event is discarded; returns
    /// whether such a partial event (or partial line) was pending, which means the stream was cut.
    pub fn finish(&mut self) -> bool {
        let partial = !self.buf.is_empty() || self.has_data || !self.event.is_empty();
        self.buf.clear();
        self.scanned = 0;
        self.event.clear();
        self.data.clear();
        self.has_data = false;
        partial
    }

    fn discard_event(&mut self) {
        self.oversized += 1;
        self.event.clear();
        self.data.clear();
        self.has_data = false;
    }

    fn line(&mut self, line: &[u8], on_event: &mut impl FnMut(SseEvent)) {
        if line.is_empty() {
            if self.has_data {
                let event = SseEvent {
                    event: std::mem::take(&mut self.event),
                    data: std::mem::take(&mut self.data),
                };
                self.has_data = false;
                on_event(event);
            } else {
                self.event.clear();
            }
            return;
        }
        if line[0] == b':' {
            return;
        }
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(i) => {
                let v = &line[i + 1..];
                (&line[..i], v.strip_prefix(b" ").unwrap_or(v))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => {
                self.event.clear();
                self.event.push_str(&value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                self.data.push_str(&value);
                self.has_data = true;
                if self.data.len() > self.max_event_bytes {
                    self.discard_event();
                }
            }
            _ => {}
        }
    }
}

#[cfg(test)]
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
}
