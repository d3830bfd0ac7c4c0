//! Connections the simulator may take back from hyper: every connection is served by hyper, but a
//! handler can take its HTTP/1 connection over to write bytes no HTTP library would write (the
//! `hostile` fault's `endless_headers` mode: a status line, then headers that never end).
//!
//! hyper reads and writes the socket through [`SharedStream`], which only borrows it from a slot the
//! connection task keeps. A handler that takes over sends its [`RawAnswer`] through the request's
//! [`Takeover`] extension and never returns; the connection task then drops hyper's connection (and
//! with it the handler), takes the socket back out of the slot and hands it to the raw answer.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use axum::Router;
use hyper::body::Incoming;
use hyper::service::{Service, service_fn};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::sync::oneshot;

use crate::api::hostile::RawAnswer;

/// The socket, while hyper serves it; empty once taken back.
type Slot = Arc<Mutex<Option<TcpStream>>>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Lets a handler take its HTTP/1 connection over: a request extension on every request.
#[derive(Clone)]
pub(crate) struct Takeover(Arc<Mutex<Option<oneshot::Sender<RawAnswer>>>>);

impl Takeover {
    /// Hands the connection to `answer`. On `true` the handler must never return: hyper's connection,
    /// and the handler's future with it, is dropped and `answer` writes on the bare socket. `false`
    /// when the connection was already taken over.
    pub fn take_over(&self, answer: RawAnswer) -> bool {
        lock(&self.0)
            .take()
            .is_some_and(|tx| tx.send(answer).is_ok())
    }
}

/// Serves one accepted connection with hyper (HTTP/1 or HTTP/2) until it ends, or until a handler
/// takes it over; then runs the raw answer on the socket.
pub(crate) async fn serve(stream: TcpStream, app: Router) {
    let slot: Slot = Arc::new(Mutex::new(Some(stream)));
    let (tx, rx) = oneshot::channel();
    let takeover = Takeover(Arc::new(Mutex::new(Some(tx))));
    let router = TowerToHyperService::new(app);
    let service = service_fn(move |mut req: http::Request<Incoming>| {
        req.extensions_mut().insert(takeover.clone());
        router.call(req)
    });
    let builder = auto::Builder::new(TokioExecutor::new());
    let answer = {
        let conn = builder.serve_connection(TokioIo::new(SharedStream(slot.clone())), service);
        tokio::pin!(conn);
        tokio::select! {
            result = conn.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(error = %e, "ballast-sim connection ended with an error");
                }
                return;
            }
            Ok(answer) = rx => answer,
        }
        // hyper's connection (and the handler waiting in it) is dropped here.
    };
    let Some(stream) = lock(&slot).take() else {
        return;
    };
    answer.run(stream).await;
}

/// The socket as hyper's IO, borrowed from the slot for each call (the lock is never contended: only
/// the connection's own task touches it, and never across an await).
struct SharedStream(Slot);

fn taken() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "connection taken over")
}

impl AsyncRead for SharedStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(stream) => Pin::new(stream).poll_read(cx, buf),
            None => Poll::Ready(Err(taken())),
        }
    }
}

impl AsyncWrite for SharedStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.0).as_mut() {
            Some(stream) => Pin::new(stream).poll_write(cx, buf),
            None => Poll::Ready(Err(taken())),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match lock(&self.0).as_mut() {
            Some(stream) => Pin::new(stream).poll_write_vectored(cx, bufs),
            None => Poll::Ready(Err(taken())),
        }
    }

    fn is_write_vectored(&self) -> bool {
        true
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(stream) => Pin::new(stream).poll_flush(cx),
            None => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match lock(&self.0).as_mut() {
            Some(stream) => Pin::new(stream).poll_shutdown(cx),
            None => Poll::Ready(Ok(())),
        }
    }
}
