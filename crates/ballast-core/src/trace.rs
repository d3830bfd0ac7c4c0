//! W3C Trace Context (`traceparent`): read from the client, written upstream. Pure: ids are passed
//! in (drawn from the caller's RNG), so the tests need no randomness.
//!
//! A request's trace is the client's when it sent a valid `traceparent` (its trace id, with the
//! client's span as the parent of the gateway's request span), else a new one. Each upstream attempt
//! is a child span of the request span, and the provider is told that attempt's span as its parent.

use std::fmt::Write as _;

/// The trace position of one span: its trace, its own id, its parent's (0: a root span), and
/// whether the trace is sampled (exported).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TraceContext {
    pub trace_id: u128,
    pub span_id: u64,
    pub parent_span_id: u64,
    /// The parent span belongs to another process (the client).
    pub parent_remote: bool,
    pub sampled: bool,
}

/// What a valid `traceparent` header says.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TraceParent {
    pub trace_id: u128,
    pub span_id: u64,
    pub sampled: bool,
}

/// Parses a `traceparent` value (`00-<32 hex>-<16 hex>-<2 hex>`). Versions above 00 are read as
/// 00 where their first fields fit (the spec's rule for forward compatibility); all-zero ids,
/// version `ff`, upper-case hex and wrong lengths are invalid, and an invalid header is ignored
/// (the request starts a new trace), never an error.
pub fn parse_traceparent(value: &str) -> Option<TraceParent> {
    let v = value.trim_matches([' ', '\t']).as_bytes();
    let (version, rest) = v.split_at_checked(2)?;
    let version = hex_u128(version)?;
    if version == 0xff {
        return None;
    }
    // version 00: exactly 55 bytes; later versions: at least that, and a '-' after the flags.
    if version == 0 && v.len() != 55 {
        return None;
    }
    if v.len() < 55 || (v.len() > 55 && v.get(55) != Some(&b'-')) {
        return None;
    }
    let field = |from: usize, to: usize| rest.get(from..to);
    if field(0, 1)? != b"-" || field(33, 34)? != b"-" || field(50, 51)? != b"-" {
        return None;
    }
    let trace_id = hex_u128(field(1, 33)?)?;
    let span_id = u64::try_from(hex_u128(field(34, 50)?)?).ok()?;
    let flags = hex_u128(field(51, 53)?)?;
    if trace_id == 0 || span_id == 0 {
        return None;
    }
    Some(TraceParent {
        trace_id,
        span_id,
        sampled: flags & 1 == 1,
    })
}

/// Lower-case hex only, as the spec requires.
fn hex_u128(s: &[u8]) -> Option<u128> {
    if s.is_empty() || s.len() > 32 {
        return None;
    }
    s.iter().try_fold(0u128, |acc, &b| {
        let d = match b {
            b'0'..=b'9' | b'a'..=b'f' => char::from(b).to_digit(16)?,
            _ => return None,
        };
        Some((acc << 4) | u128::from(d))
    })
}

impl TraceContext {
    /// The request span: a child of the client's span when it sent one, else the root of a new
    /// trace (`new_trace_id` is used only then). `sample` decides for a new trace; a client's
    /// sampled flag decides for its own.
    pub fn for_request(
        parent: Option<TraceParent>,
        new_trace_id: u128,
        span_id: u64,
        sample: bool,
    ) -> Self {
        match parent {
            Some(p) => Self {
                trace_id: p.trace_id,
                span_id,
                parent_span_id: p.span_id,
                parent_remote: true,
                sampled: p.sampled,
            },
            None => Self {
                trace_id: new_trace_id.max(1),
                span_id,
                parent_span_id: 0,
                parent_remote: false,
                sampled: sample,
            },
        }
    }

    /// A child span of this one (an upstream attempt of the request).
    pub fn child(&self, span_id: u64) -> Self {
        Self {
            trace_id: self.trace_id,
            span_id,
            parent_span_id: self.span_id,
            parent_remote: false,
            sampled: self.sampled,
        }
    }

    /// The `traceparent` value naming this span as the parent.
    pub fn traceparent(&self) -> String {
        let mut s = String::with_capacity(55);
        let _ = write!(
            s,
            "00-{:032x}-{:016x}-{:02x}",
            self.trace_id,
            self.span_id,
            u8::from(self.sampled)
        );
        s
    }

    /// The trace id as 32 lower-case hex digits (for the log line).
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]

    use super::*;

    const EXAMPLE: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_the_specification_example() {
        let p = parse_traceparent(EXAMPLE).unwrap();
        assert_eq!(p.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
        assert_eq!(p.span_id, 0x00f067aa0ba902b7);
        assert!(p.sampled);
        let not_sampled = EXAMPLE.replace("-01", "-00");
        assert!(!parse_traceparent(&not_sampled).unwrap().sampled);
    }

    #[test]
    fn ignores_invalid_headers() {
        for bad in [
            "",
            "00",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-zz",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn a_later_version_is_read_for_its_known_fields() {
        let v = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-what-comes-next";
        assert_eq!(
            parse_traceparent(v).unwrap().trace_id,
            0x4bf92f3577b34da6a3ce929d0e0e4736
        );
        let glued = "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01x";
        assert_eq!(parse_traceparent(glued), None);
    }

    #[test]
    fn the_request_joins_the_clients_trace_and_attempts_hang_under_it() {
        let client = parse_traceparent(EXAMPLE).unwrap();
        let req = TraceContext::for_request(Some(client), 7, 0xaa, false);
        assert_eq!(req.trace_id, client.trace_id);
        assert_eq!(req.parent_span_id, client.span_id);
        assert!(req.parent_remote);
        // The client's decision wins over the gateway's own sampling.
        assert!(req.sampled);
        let attempt = req.child(0xbb);
        assert_eq!(attempt.parent_span_id, 0xaa);
        assert_eq!(
            attempt.traceparent(),
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00000000000000bb-01"
        );
        assert_eq!(
            parse_traceparent(&attempt.traceparent()).unwrap().span_id,
            0xbb
        );
    }

    #[test]
    fn without_a_client_trace_the_request_is_a_root() {
        let req = TraceContext::for_request(None, 0x1234, 0xaa, true);
        assert_eq!(req.trace_id, 0x1234);
        assert_eq!(req.parent_span_id, 0);
        assert_eq!(req.trace_id_hex(), "00000000000000000000000000001234");
        assert!(!TraceContext::for_request(None, 1, 2, false).sampled);
    }
}
