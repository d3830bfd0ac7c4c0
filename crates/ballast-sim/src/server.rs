//! Listener lifecycle: the accept loop, per-connection tasks (served by [`crate::raw::serve`], which
//! lets a handler take its connection over), `down` (stop listening, reset connections, re-bind) and
//! shutdown. [`SimHandle`] is the public face of a running simulator.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;

use crate::SimConfig;
use crate::app::router;
use crate::faults::{DownFault, Faults};
use crate::state::SimState;
use crate::stats::{Outcome, RecordedRequest, Stats};

/// Pending connections the kernel queues for us.
const BACKLOG: u32 = 1024;
/// Wait between attempts to re-bind the port after `down` is cleared.
const REBIND_RETRY: Duration = Duration::from_millis(50);

/// A running simulator. Dropping it stops the simulator too; [`SimHandle::shutdown`] also waits for it.
pub struct SimHandle {
    addr: SocketAddr,
    state: Arc<SimState>,
    shutdown: watch::Sender<bool>,
    task: JoinHandle<()>,
}

/// Starts a simulator listening on `listen` (port 0 picks a free port; see [`SimHandle::addr`]).
pub async fn start(listen: SocketAddr, config: SimConfig) -> io::Result<SimHandle> {
    let listener = bind(listen)?;
    let addr = listener.local_addr()?;
    let state = Arc::new(SimState::new(config));
    let (shutdown, shutdown_rx) = watch::channel(false);
    let app = router(state.clone());
    let task = tokio::spawn(accept_loop(
        Some(listener),
        addr,
        state.clone(),
        app,
        shutdown_rx,
    ));
    tracing::info!(%addr, "ballast-sim listening");
    Ok(SimHandle {
        addr,
        state,
        shutdown,
        task,
    })
}

impl SimHandle {
    /// The bound address (the real port when started on port 0).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://IP:PORT`, the base URL to give SDKs and the gateway.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Replaces the active faults (values out of range are clamped when drawn; the HTTP control plane
    /// validates instead).
    pub fn set_faults(&self, faults: Faults) {
        self.state.set_faults(faults);
    }

    /// The active faults.
    pub fn faults(&self) -> Faults {
        self.state.current_faults()
    }

    /// Replaces the rate limits from now on (values out of range are clamped; the HTTP control
    /// plane validates instead). What the buckets hold carries over, capped at the new limits.
    pub fn set_limits(&self, limits: crate::Limits) {
        self.state.set_limits(limits);
    }

    /// The rate limits in force.
    pub fn limits(&self) -> crate::Limits {
        self.state.current_limits()
    }

    /// Counters since start or the last reset.
    pub fn stats(&self) -> Stats {
        self.state.stats()
    }

    /// The most recent provider requests (at most [`crate::RECENT_REQUESTS_CAPACITY`]), oldest first.
    pub fn recent_requests(&self) -> Vec<RecordedRequest> {
        self.state.recent_requests()
    }

    /// Clears stats and recorded requests, restarts the seeded draws and refills the rate-limit
    /// buckets (as `POST /_sim/reset`).
    pub fn reset(&self) {
        self.state.reset();
    }

    /// Stops listening, closes every connection and waits for the accept loop to end.
    pub async fn shutdown(self) {
        self.shutdown.send_replace(true);
        if let Err(e) = self.task.await {
            tracing::warn!(error = %e, "ballast-sim accept loop ended abnormally");
        }
    }
}

/// Binds with `SO_REUSEADDR` so the same port can be bound again right after `down` is cleared.
fn bind(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

async fn accept(listener: &Option<TcpListener>) -> io::Result<(TcpStream, SocketAddr)> {
    match listener {
        Some(l) => l.accept().await,
        None => std::future::pending().await,
    }
}

async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn down_deadline(down: Option<&DownFault>) -> Option<Instant> {
    let secs = down?.duration_secs?;
    let duration = Duration::try_from_secs_f64(secs).ok()?;
    Instant::now().checked_add(duration)
}

/// Accepts connections until shutdown, one tracked task per connection. While `down` is at rate 1 the
/// listener is dropped and every open connection closed; when it clears, the same address is bound
/// again.
async fn accept_loop(
    mut listener: Option<TcpListener>,
    addr: SocketAddr,
    state: Arc<SimState>,
    app: Router,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut faults = state.faults.subscribe();
    let mut connections: JoinSet<()> = JoinSet::new();
    let mut last_down = faults.borrow_and_update().down.clone();
    let mut down_until = down_deadline(last_down.as_ref());
    let mut rebind_at: Option<Instant> = None;

    loop {
        let fully_down = faults.borrow().fully_down();
        if fully_down {
            if listener.take().is_some() {
                connections.shutdown().await;
                tracing::info!(%addr, "ballast-sim down: not listening");
            }
        } else if listener.is_none() && rebind_at.is_none_or(|at| at <= Instant::now()) {
            match bind(addr) {
                Ok(l) => {
                    listener = Some(l);
                    rebind_at = None;
                    tracing::info!(%addr, "ballast-sim listening again");
                }
                Err(e) => {
                    tracing::warn!(%addr, error = %e, "ballast-sim could not re-bind; retrying");
                    rebind_at = Some(Instant::now() + REBIND_RETRY);
                }
            }
        }

        tokio::select! {
            _ = shutdown.changed() => break,
            changed = faults.changed() => {
                if changed.is_err() {
                    break;
                }
                let down = faults.borrow_and_update().down.clone();
                if down != last_down {
                    down_until = down_deadline(down.as_ref());
                    last_down = down;
                }
            }
            () = sleep_until_opt(down_until) => {
                down_until = None;
                state.faults.send_modify(|f| f.down = None);
            }
            () = sleep_until_opt(rebind_at) => {}
            accepted = accept(&listener) => match accepted {
                Ok((stream, _peer)) => {
                    if state.draw_reset() {
                        state.count(None, Outcome::Refused);
                        // Zero linger turns the close into a reset.
                        if let Err(e) = stream.set_zero_linger() {
                            tracing::debug!(error = %e, "set_zero_linger failed");
                        }
                        drop(stream);
                        continue;
                    }
                    // Events go out as they are written, as a provider's front end streams them:
                    // with Nagle on, each small event after the first would wait for the client's
                    // delayed ACK (~40 ms).
                    if let Err(e) = stream.set_nodelay(true) {
                        tracing::debug!(error = %e, "set_nodelay failed");
                    }
                    connections.spawn(crate::raw::serve(stream, app.clone()));
                }
                Err(e) => {
                    // Out of file descriptors and the like: back off a little instead of spinning.
                    tracing::warn!(error = %e, "ballast-sim accept failed");
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    connections.shutdown().await;
    tracing::info!(%addr, "ballast-sim stopped");
}
