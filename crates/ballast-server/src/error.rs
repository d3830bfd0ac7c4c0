//! Gateway errors at the edge: each becomes one HTTP response in the client's own API format, carrying
//! the request id, and is logged exactly once.

use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderValue, StatusCode};

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{ClientError, ErrorKind};

/// An error on its way to a client of `format`.
pub struct EdgeError {
    pub format: ApiFormat,
    pub request_id: String,
    pub error: ClientError,
    pub retry_after: Option<HeaderValue>,
    /// An upstream error body already in the client's format, sent instead of rendering `error`.
    pub passthrough: Option<Bytes>,
    /// What to log instead of the client's message when that message carries text from the provider
    /// or the request (which never goes to logs).
    pub log_line: Option<String>,
    /// Every target failed for reasons of their own: a stale cached answer may stand in.
    pub stale_ok: bool,
    /// Answered before the request body was read: the connection cannot be reused (its unread
    /// body is still on it), so say so instead of letting the client's next request hit a close.
    pub close: bool,
    /// The route the request named, once known (for its record).
    pub route: Option<usize>,
    /// Upstream attempts made before giving up.
    pub attempts: u32,
    /// The client asked for a stream, and the target whose answer this error is (an upstream
    /// refusal passed on), for the request's record.
    pub stream: bool,
    pub target: Option<usize>,
    /// Already told to telemetry as the request's record: not logged again.
    pub recorded: bool,
}

impl EdgeError {
    pub fn new(format: ApiFormat, request_id: &str, error: ClientError) -> Self {
        Self {
            format,
            request_id: request_id.to_owned(),
            error,
            retry_after: None,
            passthrough: None,
            log_line: None,
            stale_ok: false,
            close: false,
            route: None,
            attempts: 0,
            stream: false,
            target: None,
            recorded: false,
        }
    }

    /// What the log may say: never text from the provider or the request.
    pub fn log_message(&self) -> &str {
        self.log_line.as_deref().unwrap_or(&self.error.message)
    }

    fn log(&self) {
        let e = &self.error;
        let id = self.request_id.as_str();
        let message = self.log_line.as_deref().unwrap_or(&e.message);
        match e.kind {
            ErrorKind::Api
            | ErrorKind::BadGateway
            | ErrorKind::Unavailable
            | ErrorKind::Overloaded
            | ErrorKind::Timeout => {
                tracing::error!(request_id = id, status = e.status, api = %self.format, "{message}")
            }
            _ => {
                tracing::warn!(request_id = id, status = e.status, api = %self.format, "{message}")
            }
        }
    }
}

impl IntoResponse for EdgeError {
    fn into_response(self) -> Response {
        if !self.recorded {
            self.log();
        }
        let body = match self.passthrough {
            Some(b) => b,
            None => Bytes::from(self.error.render(self.format, &self.request_id)),
        };
        let status = StatusCode::from_u16(self.error.status).unwrap_or(StatusCode::BAD_GATEWAY);
        let mut resp = (status, body).into_response();
        let h = resp.headers_mut();
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        if let Some(ra) = self.retry_after {
            h.insert(http::header::RETRY_AFTER, ra);
        }
        if self.close {
            h.insert(http::header::CONNECTION, HeaderValue::from_static("close"));
        }
        resp
    }
}
