//! Request ids: every request gets one (the client's `x-request-id` when it sent a sane one), every
//! response carries it back, and every log line about the request names it.

use std::sync::Arc;

use axum::extract::Request;
use axum::middleware::Next;
use axum::response::Response;
use http::HeaderValue;

pub const HEADER: &str = "x-request-id";

/// The id of the request being served, available to handlers as an extension.
#[derive(Clone, Debug)]
pub struct RequestId(pub Arc<str>);

impl RequestId {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn generate() -> String {
    format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..))
}

fn acceptable(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

pub async fn layer(mut req: Request, next: Next) -> Response {
    let id: Arc<str> = match req.headers().get(HEADER).and_then(acceptable) {
        Some(s) => s.into(),
        None => generate().into(),
    };
    let header = HeaderValue::from_str(&id).ok();
    req.extensions_mut().insert(RequestId(id));
    let mut resp = next.run(req).await;
    if let Some(h) = header {
        resp.headers_mut().insert(HEADER, h);
    }
    resp
}
