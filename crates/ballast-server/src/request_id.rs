//! Request ids: every request gets one (the client's `x-request-id` when it sent a sane one), every
//! response carries it back, and every log line about the request names it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::extract::Request;
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

/// `req_` and 24 lower-case hex digits, written in place (no formatting machinery per request).
fn generate() -> Arc<str> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut id = *b"req_000000000000000000000000";
    let digits = (u128::from(fastrand::u64(..)) << 32) | u128::from(fastrand::u32(..));
    for (i, b) in id.iter_mut().skip(4).rev().enumerate() {
        *b = HEX[((digits >> (4 * i)) & 0xf) as usize];
    }
    std::str::from_utf8(&id).unwrap_or("req_0").into()
}

fn acceptable(v: &HeaderValue) -> Option<&str> {
    let s = v.to_str().ok()?;
    (!s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic())).then_some(s)
}

/// The request id middleware as a plain tower layer: `axum::middleware::from_fn` would box a future
/// and clone the route's boxed service for every request.
#[derive(Clone, Copy, Debug, Default)]
pub struct Layer;

impl<S> tower::Layer<S> for Layer {
    type Service = Service<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Service(inner)
    }
}

#[derive(Clone, Debug)]
pub struct Service<S>(S);

impl<S> tower::Service<Request> for Service<S>
where
    S: tower::Service<Request, Response = Response>,
    S::Future: Unpin,
{
    type Response = Response;
    type Error = S::Error;
    type Future = Tagged<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, mut req: Request) -> Self::Future {
        let (id, header) = match req.headers().get(HEADER).and_then(acceptable) {
            // The client's own value goes back as it came.
            Some(s) => (Arc::from(s), req.headers().get(HEADER).cloned()),
            None => {
                let id = generate();
                let header = HeaderValue::from_str(&id).ok();
                (id, header)
            }
        };
        req.extensions_mut().insert(RequestId(id));
        Tagged {
            inner: self.0.call(req),
            header,
        }
    }
}

/// The response future, which adds `x-request-id` to the response.
pub struct Tagged<F> {
    inner: F,
    header: Option<HeaderValue>,
}

impl<F, E> Future for Tagged<F>
where
    F: Future<Output = Result<Response, E>> + Unpin,
{
    type Output = Result<Response, E>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        let mut resp = std::task::ready!(Pin::new(&mut this.inner).poll(cx))?;
        if let Some(h) = this.header.take() {
            resp.headers_mut().insert(HEADER, h);
        }
        Poll::Ready(Ok(resp))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_ids_are_req_and_24_hex_digits() {
        fastrand::seed(7);
        let id = generate();
        fastrand::seed(7);
        let want = format!("req_{:016x}{:08x}", fastrand::u64(..), fastrand::u32(..));
        assert_eq!(&*id, want);
        assert!(acceptable(&HeaderValue::from_str(&id).unwrap()).is_some());
    }
}
