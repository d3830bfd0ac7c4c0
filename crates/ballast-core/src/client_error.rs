//! Errors as clients see them: one kind, rendered in the client's own API error format (OpenAI,
//! Anthropic or Gemini; OpenAI Responses uses OpenAI's) with the status each API uses, so every SDK
//! raises its usual exception class.

use serde::Deserialize;
use serde_json::json;

use crate::api::ApiFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 400: the request is malformed or names something invalid.
    InvalidRequest,
    /// 401: missing or wrong gateway key (or, passed through, provider key).
    Authentication,
    /// 403.
    PermissionDenied,
    /// 404: unknown model (route) or path.
    NotFound,
    /// 413: body over the configured limit.
    RequestTooLarge,
    /// 429.
    RateLimited,
    /// 500 and other upstream server errors.
    Api,
    /// 502: the upstream could not be reached or sent garbage.
    BadGateway,
    /// 503: nothing can serve the request now.
    Unavailable,
    /// 529: upstream overloaded (Anthropic).
    Overloaded,
    /// 504: the upstream did not answer in time.
    Timeout,
}

impl ErrorKind {
    /// The kind an upstream status maps to when its error is shown to a client of another format.
    pub fn from_status(status: u16) -> Self {
        match status {
            400 | 405 | 409 | 415 | 422 => ErrorKind::InvalidRequest,
            401 => ErrorKind::Authentication,
            403 => ErrorKind::PermissionDenied,
            404 => ErrorKind::NotFound,
            413 => ErrorKind::RequestTooLarge,
            429 => ErrorKind::RateLimited,
            502 => ErrorKind::BadGateway,
            503 => ErrorKind::Unavailable,
            504 | 408 => ErrorKind::Timeout,
            529 => ErrorKind::Overloaded,
            s if (400..500).contains(&s) => ErrorKind::InvalidRequest,
            _ => ErrorKind::Api,
        }
    }

    pub const fn status(self) -> u16 {
        match self {
            ErrorKind::InvalidRequest => 400,
            ErrorKind::Authentication => 401,
            ErrorKind::PermissionDenied => 403,
            ErrorKind::NotFound => 404,
            ErrorKind::RequestTooLarge => 413,
            ErrorKind::RateLimited => 429,
            ErrorKind::Api => 500,
            ErrorKind::BadGateway => 502,
            ErrorKind::Unavailable => 503,
            ErrorKind::Overloaded => 529,
            ErrorKind::Timeout => 504,
        }
    }

    /// Anthropic's `error.type`.
    const fn anthropic_type(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest => "invalid_request_error",
            ErrorKind::Authentication => "authentication_error",
            ErrorKind::PermissionDenied => "permission_error",
            ErrorKind::NotFound => "not_found_error",
            ErrorKind::RequestTooLarge => "request_too_large",
            ErrorKind::RateLimited => "rate_limit_error",
            ErrorKind::Api | ErrorKind::BadGateway | ErrorKind::Unavailable => "api_error",
            ErrorKind::Overloaded => "overloaded_error",
            ErrorKind::Timeout => "timeout_error",
        }
    }

    /// OpenAI's `error.type` and `error.code`.
    const fn openai_type_code(self) -> (&'static str, Option<&'static str>) {
        match self {
            ErrorKind::InvalidRequest => ("invalid_request_error", None),
            ErrorKind::Authentication => ("invalid_request_error", Some("invalid_api_key")),
            ErrorKind::PermissionDenied => ("invalid_request_error", Some("permission_denied")),
            ErrorKind::NotFound => ("invalid_request_error", Some("model_not_found")),
            ErrorKind::RequestTooLarge => ("invalid_request_error", Some("request_too_large")),
            ErrorKind::RateLimited => ("requests", Some("rate_limit_exceeded")),
            ErrorKind::Api | ErrorKind::BadGateway | ErrorKind::Overloaded => {
                ("server_error", None)
            }
            ErrorKind::Unavailable => ("server_error", Some("service_unavailable")),
            ErrorKind::Timeout => ("server_error", Some("timeout")),
        }
    }

    /// Google's `error.status`.
    const fn google_status(self) -> &'static str {
        match self {
            ErrorKind::InvalidRequest | ErrorKind::RequestTooLarge => "INVALID_ARGUMENT",
            ErrorKind::Authentication => "UNAUTHENTICATED",
            ErrorKind::PermissionDenied => "PERMISSION_DENIED",
            ErrorKind::NotFound => "NOT_FOUND",
            ErrorKind::RateLimited => "RESOURCE_EXHAUSTED",
            ErrorKind::Api | ErrorKind::BadGateway => "INTERNAL",
            ErrorKind::Unavailable | ErrorKind::Overloaded => "UNAVAILABLE",
            ErrorKind::Timeout => "DEADLINE_EXCEEDED",
        }
    }
}

/// An error to show a client.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientError {
    pub kind: ErrorKind,
    /// The HTTP status; usually `kind.status()`, but an upstream 4xx keeps its own status.
    pub status: u16,
    pub message: String,
    /// The request field at fault, when known.
    pub param: Option<String>,
}

impl ClientError {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            status: kind.status(),
            message: message.into(),
            param: None,
        }
    }

    pub fn with_param(mut self, param: Option<String>) -> Self {
        self.param = param;
        self
    }

    /// The body, in `format`'s error shape.
    pub fn render(&self, format: ApiFormat, request_id: &str) -> Vec<u8> {
        let v = match format {
            ApiFormat::OpenAiChat | ApiFormat::OpenAiResponses => {
                let (ty, code) = self.kind.openai_type_code();
                json!({"error": {"message": self.message, "type": ty, "param": self.param, "code": code}})
            }
            ApiFormat::AnthropicMessages => json!({
                "type": "error",
                "error": {"type": self.kind.anthropic_type(), "message": self.message},
                "request_id": request_id,
            }),
            ApiFormat::Gemini => json!({
                "error": {"code": self.status, "message": self.message, "status": self.kind.google_status()}
            }),
        };
        serde_json::to_vec(&v).unwrap_or_default()
    }
}

/// A well-formed error event to end a stream that already started, in `format`'s streaming dialect:
/// the SDKs raise it as an error instead of presenting a cut answer as complete. For OpenAI Responses
/// use [`stream_error_event_after`], which continues the stream's `sequence_number`s.
pub fn stream_error_event(format: ApiFormat, error: &ClientError) -> Vec<u8> {
    stream_error_event_after(format, error, None)
}

/// [`stream_error_event`] for a stream whose last `sequence_number` was `last_sequence_number`
/// ([`crate::observe::Observation::last_sequence_number`]; only OpenAI Responses streams have one).
/// For Responses it is two events: an `error` event carrying both the documented flat fields and the
/// nested `error` object the API sends (the `openai` SDK raises `APIError` on the latter), then a
/// terminal `response.failed` (Codex and other typed clients act on that one).
pub fn stream_error_event_after(
    format: ApiFormat,
    error: &ClientError,
    last_sequence_number: Option<u64>,
) -> Vec<u8> {
    let mut out = Vec::with_capacity(error.message.len().saturating_add(160));
    match format {
        ApiFormat::OpenAiResponses => {
            let next = last_sequence_number.map_or(0, |n| n.saturating_add(1));
            let (ty, _) = error.kind.openai_type_code();
            crate::translate::responses_failure(
                &mut out,
                next,
                ty,
                error.kind == ErrorKind::RateLimited,
                &error.message,
            );
            return out;
        }
        ApiFormat::AnthropicMessages => {
            out.extend_from_slice(b"event: error\ndata: ");
            let v = json!({"type": "error", "error": {"type": error.kind.anthropic_type(), "message": error.message}});
            let _ = serde_json::to_writer(&mut out, &v);
        }
        ApiFormat::OpenAiChat => {
            out.extend_from_slice(b"data: ");
            let (ty, code) = error.kind.openai_type_code();
            let v = json!({"error": {"message": error.message, "type": ty, "param": null, "code": code}});
            let _ = serde_json::to_writer(&mut out, &v);
        }
        ApiFormat::Gemini => {
            out.extend_from_slice(b"data: ");
            let v = json!({"error": {"code": error.status, "message": error.message, "status": error.kind.google_status()}});
            let _ = serde_json::to_writer(&mut out, &v);
        }
    }
    out.extend_from_slice(b"\n\n");
    out
}

/// The human message inside an upstream error body of any of the three shapes (they all carry
/// `error.message`; Anthropic nests it the same way). `None` when the body is not such an error.
pub fn upstream_error_message(body: &[u8]) -> Option<String> {
    #[derive(Deserialize)]
    struct Outer {
        error: Inner,
    }
    #[derive(Deserialize)]
    struct Inner {
        message: String,
    }
    serde_json::from_slice::<Outer>(body)
        .ok()
        .map(|o| o.error.message)
        .filter(|m| !m.is_empty())
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use super::*;
    use serde_json::Value;

    fn render(format: ApiFormat, e: &ClientError) -> Value {
        serde_json::from_slice(&e.render(format, "req_1")).unwrap()
    }

    #[test]
    fn each_format_gets_its_own_shape() {
        let e = ClientError::new(ErrorKind::NotFound, "model \"x\" not found")
            .with_param(Some("model".into()));
        assert_eq!(
            render(ApiFormat::OpenAiChat, &e),
            json!({"error": {"message": "model \"x\" not found", "type": "invalid_request_error", "param": "model", "code": "model_not_found"}})
        );
        assert_eq!(
            render(ApiFormat::AnthropicMessages, &e),
            json!({"type": "error", "error": {"type": "not_found_error", "message": "model \"x\" not found"}, "request_id": "req_1"})
        );
        assert_eq!(
            render(ApiFormat::Gemini, &e),
            json!({"error": {"code": 404, "message": "model \"x\" not found", "status": "NOT_FOUND"}})
        );
    }

    #[test]
    fn stream_error_events_parse_as_sse() {
        let e = ClientError::new(ErrorKind::BadGateway, "anthropic: stream ended early");
        for (format, event) in [
            (ApiFormat::AnthropicMessages, "error"),
            (ApiFormat::OpenAiChat, ""),
            (ApiFormat::Gemini, ""),
        ] {
            let bytes = stream_error_event(format, &e);
            let mut p = crate::sse::SseParser::new();
            let mut events = Vec::new();
            p.feed(&bytes, |ev| events.push(ev));
            assert_eq!(events.len(), 1, "{format}");
            assert_eq!(events[0].event, event);
            let v: Value = serde_json::from_str(&events[0].data).unwrap();
            assert_eq!(
                upstream_error_message(events[0].data.as_bytes()).as_deref(),
                Some("anthropic: stream ended early"),
                "{v}"
            );
        }
    }

    #[test]
    fn responses_errors_use_openai_shapes_and_continue_the_sequence() {
        let e = ClientError::new(ErrorKind::RateLimited, "slow down");
        assert_eq!(
            render(ApiFormat::OpenAiResponses, &e),
            render(ApiFormat::OpenAiChat, &e)
        );
        let bytes = stream_error_event_after(ApiFormat::OpenAiResponses, &e, Some(6));
        let mut p = crate::sse::SseParser::new();
        let mut events = Vec::new();
        p.feed(&bytes, |ev| events.push(ev));
        assert!(!p.finish());
        let names: Vec<&str> = events.iter().map(|e| e.event.as_str()).collect();
        assert_eq!(names, ["error", "response.failed"]);
        let error: Value = serde_json::from_str(&events[0].data).unwrap();
        assert_eq!(error["type"], "error");
        assert_eq!(error["sequence_number"], 7);
        assert_eq!(error["message"], "slow down");
        assert_eq!(error["code"], "rate_limit_exceeded");
        assert_eq!(error["param"], Value::Null);
        // What the openai SDK raises on: a truthy top-level `error` with a message.
        assert_eq!(
            upstream_error_message(events[0].data.as_bytes()).as_deref(),
            Some("slow down")
        );
        let failed: Value = serde_json::from_str(&events[1].data).unwrap();
        assert_eq!(failed["type"], "response.failed");
        assert_eq!(failed["sequence_number"], 8);
        assert_eq!(failed["response"]["status"], "failed");
        assert_eq!(failed["response"]["object"], "response");
        assert_eq!(
            failed["response"]["error"],
            json!({"code": "rate_limit_exceeded", "message": "slow down"})
        );
        let first = stream_error_event(ApiFormat::OpenAiResponses, &e);
        assert!(
            String::from_utf8(first)
                .unwrap()
                .contains(r#""sequence_number":0"#)
        );
    }

    #[test]
    fn statuses_map_to_kinds_and_back() {
        for s in [400, 401, 403, 404, 413, 429, 500, 502, 503, 504, 529] {
            assert_eq!(ErrorKind::from_status(s).status(), s, "{s}");
        }
        assert_eq!(ErrorKind::from_status(418), ErrorKind::InvalidRequest);
        assert_eq!(ErrorKind::from_status(599), ErrorKind::Api);
    }

    #[test]
    fn upstream_messages_are_found_in_every_shape() {
        assert_eq!(
            upstream_error_message(
                br#"{"type":"error","error":{"type":"overloaded_error","message":"Overloaded"}}"#
            ),
            Some("Overloaded".into())
        );
        assert_eq!(
            upstream_error_message(br#"{"error":{"message":"bad key","type":"invalid_request_error","code":"invalid_api_key"}}"#),
            Some("bad key".into())
        );
        assert_eq!(
            upstream_error_message(
                br#"{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED"}}"#
            ),
            Some("quota".into())
        );
        assert_eq!(upstream_error_message(b"<html>502</html>"), None);
    }
}
