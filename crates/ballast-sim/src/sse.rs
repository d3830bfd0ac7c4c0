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
    /// End with an error (the connection is closed mid-body) once the frames run out.
    cut: bool,
}

/// A body that sends `frames` paced by `pacing` (the first after ttft, token frames after the token
/// delay). With `truncate`, only about half are sent, then the body ends (`eof`) or the connection is
/// cut (`reset`).
pub(crate) fn paced_body(
    mut frames: Vec<Frame>,
    pacing: Pacing,
    truncate: Option<TruncateMode>,
) -> Body {
    if truncate.is_some() {
        frames.truncate(truncated_len(frames.len()));
    }
    send_frames(frames, pacing, truncate == Some(TruncateMode::Reset))
}

/// Sends every frame, paced; with `cut`, ends in an error that closes the connection mid-body.
fn send_frames(frames: Vec<Frame>, pacing: Pacing, cut: bool) -> Body {
    let state = Paced {
        frames: frames.into(),
        first: true,
        pacing,
        cut,
    };
    let stream = futures_util::stream::unfold(state, |mut st| async move {
        let Some(frame) = st.frames.pop_front() else {
            if st.cut {
                st.cut = false;
                tokio::time::sleep(FLUSH_BEFORE_CUT).await;
                return Some((Err(cut_error()), st));
            }
            return None;
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

/// A non-streamed body cut after about half its bytes: it ends there (`eof`) or the connection is
/// closed (`reset`).
pub(crate) fn truncated_body(full: Bytes, mode: TruncateMode) -> Body {
    let half = full.slice(..full.len() / 2);
    send_frames(
        vec![Frame::plain(half)],
        Pacing::default(),
        mode == TruncateMode::Reset,
    )
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
