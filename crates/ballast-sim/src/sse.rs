//! Answer bodies over time: SSE framing, pacing (ttft, token delay) and truncation.

use std::collections::VecDeque;
use std::io;
use std::time::Duration;

use axum::body::Body;
use bytes::Bytes;
use serde_json::Value;

use crate::faults::TruncateMode;
use crate::state::Pacing;

/// One chunk of a streamed body.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Frame {
    pub bytes: Bytes,
    /// Carries a token: waits the token delay before it is sent.
    pub token: bool,
}

impl Frame {
    /// A structural frame (sent right after the previous one).
    pub fn plain(bytes: Bytes) -> Frame {
        Frame {
            bytes,
            token: false,
        }
    }

    /// A frame carrying generated tokens.
    pub fn token(bytes: Bytes) -> Frame {
        Frame { bytes, token: true }
    }
}

/// `event: NAME\ndata: JSON\n\n` (Anthropic).
pub(crate) fn named_event(name: &str, data: &Value) -> Bytes {
    Bytes::from(format!("event: {name}\ndata: {data}\n\n"))
}

/// `data: JSON\n\n` (OpenAI).
pub(crate) fn data_event(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\n\n"))
}

/// `data: TEXT\n\n` for a literal payload such as `[DONE]`.
pub(crate) fn data_literal(text: &str) -> Bytes {
    Bytes::from(format!("data: {text}\n\n"))
}

/// `data: JSON\r\n\r\n` (Gemini).
pub(crate) fn data_event_crlf(data: &Value) -> Bytes {
    Bytes::from(format!("data: {data}\r\n\r\n"))
}

/// How many frames a truncated stream keeps: about half, at least one, never the last.
pub(crate) fn truncated_len(total: usize) -> usize {
    if total <= 1 { 0 } else { (total / 2).max(1) }
}

/// How many frames a stream cut by `truncate` keeps. Without `after_tokens`, about half
/// ([`truncated_len`]). With it, every frame before the `after_tokens + 1`-th token frame (so exactly
/// that many pieces are sent); a stream with no more token frames than that is cut right after its
/// last one (one without any, before its last frame). The last frame (the terminal event) is never
/// kept.
pub(crate) fn cut_len(frames: &[Frame], after_tokens: Option<u64>) -> usize {
    let total = frames.len();
    let Some(after) = after_tokens else {
        return truncated_len(total);
    };
    let tokens = frames
        .iter()
        .enumerate()
        .filter(|(_, f)| f.token)
        .map(|(at, _)| at);
    let mut last_token = None;
    let mut seen: u64 = 0;
    for at in tokens {
        if seen == after {
            return at.min(total.saturating_sub(1));
        }
        seen = seen.saturating_add(1);
        last_token = Some(at);
    }
    last_token
        .map_or(total, |at| at.saturating_add(1))
        .min(total.saturating_sub(1))
}

/// How a body ends once its frames are sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Ending {
    /// The body ends cleanly (the final chunk is sent).
    Close,
    /// The connection is closed mid-body: the client sees an incomplete-body error.
    Reset,
    /// Nothing more is sent; the connection stays open until the client goes away (or `down` or
    /// shutdown closes it).
    Silence,
}

impl Ending {
    /// How a `truncate` fault in `mode` ends a body (an error event is a frame of its own, then the
    /// body closes).
    pub fn of(mode: TruncateMode) -> Ending {
        match mode {
            TruncateMode::Eof | TruncateMode::ErrorEvent => Ending::Close,
            TruncateMode::Reset => Ending::Reset,
            TruncateMode::Stall => Ending::Silence,
        }
    }
}

/// Before cutting, let hyper flush what was sent so far: it drops unflushed bytes on a body error.
const FLUSH_BEFORE_CUT: Duration = Duration::from_millis(10);

fn cut_error() -> io::Error {
    io::Error::new(
        io::ErrorKind::ConnectionAborted,
        "ballast-sim truncate fault: answer cut off",
    )
}

struct Paced {
    frames: VecDeque<Frame>,
    first: bool,
    pacing: Pacing,
    /// What happens once the frames run out (`None` once it happened).
    ending: Option<Ending>,
}

/// A body that sends `frames` paced by `pacing` (the first after ttft, token frames after the token
/// delay), then ends as `ending` says.
pub(crate) fn paced_body(frames: Vec<Frame>, pacing: Pacing, ending: Ending) -> Body {
    let state = Paced {
        frames: frames.into(),
        first: true,
        pacing,
        ending: Some(ending),
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let Some(frame) = st.frames.pop_front() else {
            match st.ending.take()? {
                Ending::Close => return None,
                Ending::Reset => {
                    tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                    return Some((Err(cut_error()), st));
                }
                Ending::Silence => {
                    std::future::pending::<()>().await;
                    return None;
                }
            }
        };
        let wait = if st.first {
            st.first = false;
            st.pacing.ttft
        } else if frame.token {
            st.pacing.token_delay
        } else {
            Duration::ZERO
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        Some((Ok(frame.bytes), st))
    });
    Body::from_stream(stream)
}

/// A non-streamed body cut after about half its bytes, then ending as `ending` says.
pub(crate) fn truncated_body(full: Bytes, ending: Ending) -> Body {
    let half = full.slice(..full.len() / 2);
    paced_body(vec![Frame::plain(half)], Pacing::default(), ending)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn framing() {
        assert_eq!(
            named_event("ping", &json!({"type": "ping"})),
            "event: ping\ndata: {\"type\":\"ping\"}\n\n"
        );
        assert_eq!(data_event(&json!({})), "data: {}\n\n");
        assert_eq!(data_event_crlf(&json!(1)), "data: 1\r\n\r\n");
        assert_eq!(data_literal("[DONE]"), "data: [DONE]\n\n");
    }

    #[test]
    fn cut_after_tokens_keeps_exactly_that_many() {
        let p = || Frame::plain(Bytes::from_static(b"p"));
        let t = || Frame::token(Bytes::from_static(b"t"));
        // open, open, 3 tokens, close, terminal
        let frames = vec![p(), p(), t(), t(), t(), p(), p()];
        let tokens = |n: usize| frames[..n].iter().filter(|f| f.token).count();
        assert_eq!(cut_len(&frames, Some(0)), 2);
        assert_eq!(cut_len(&frames, Some(1)), 3);
        assert_eq!(tokens(cut_len(&frames, Some(2))), 2);
        // All pieces: cut right after the last one.
        assert_eq!(cut_len(&frames, Some(3)), 5);
        assert_eq!(cut_len(&frames, Some(99)), 5);
        assert_eq!(cut_len(&frames, None), 3);
        // The terminal frame is never kept, even when it is a token frame (Gemini).
        let gemini = vec![t(), t(), t()];
        assert_eq!(cut_len(&gemini, Some(2)), 2);
        assert_eq!(cut_len(&gemini, Some(3)), 2);
        // No token frame at all: all but the terminal one.
        let empty = vec![p(), p(), p()];
        assert_eq!(cut_len(&empty, Some(0)), 2);
        assert_eq!(cut_len(&[], Some(0)), 0);
    }

    #[test]
    fn truncation_never_keeps_the_terminal_frame() {
        assert_eq!(truncated_len(0), 0);
        assert_eq!(truncated_len(1), 0);
        assert_eq!(truncated_len(2), 1);
        assert_eq!(truncated_len(9), 4);
        for n in 2..50 {
            assert!(truncated_len(n) < n && truncated_len(n) >= 1);
        }
    }
}
