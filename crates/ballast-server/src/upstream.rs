//! The upstream side of an attempt: the [`Transport`] every upstream call goes through (the pooled
//! hyper-util client in production, a scripted one in tests), and the classification of what went wrong
//! (connect, timeout, transport, status), which decides whether the route may fall over.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use http::{HeaderMap, StatusCode};

use ballast_core::config::ServerSettings;

use crate::runtime::Reservation;

pub use reqwest::Url;

/// One upstream call, ready to send: the target's URL, the provider's headers, the prepared body.
#[derive(Debug, Clone)]
pub struct UpstreamRequest {
    pub url: Url,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An answer's bytes as they arrive; an error ends the body (the connection broke).
pub type BodyStream = Pin<Box<dyn Stream<Item = Result<Bytes, Failure>> + Send>>;

/// The upstream's answer once its status line and headers arrived; the body is read as a stream.
pub struct UpstreamResponse {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: BodyStream,
}

impl UpstreamResponse {
    /// The declared body length, if the upstream sent one.
    fn content_length(&self) -> Option<u64> {
        self.headers
            .get(http::header::CONTENT_LENGTH)?
            .to_str()
            .ok()?
            .parse()
            .ok()
    }
}

/// A future of an upstream response.
pub type SendFuture = Pin<Box<dyn Future<Output = Result<UpstreamResponse, Failure>> + Send>>;

/// How the request path reaches a provider. The production transport is [`HttpTransport`]; tests
/// substitute a scripted one so the request path runs under Tokio's paused time.
pub trait Transport: Send + Sync + 'static {
    /// Sends `req` and resolves once the response head arrived (or the call failed). Timeouts are
    /// the caller's: it drops the future when its time is up.
    fn send(&self, req: UpstreamRequest) -> SendFuture;
}

/// The pooled, keep-alive HTTP client: hyper-util's, called directly. When the environment names
/// a proxy (`HTTPS_PROXY`, `HTTP_PROXY`, `ALL_PROXY`), reqwest's, which honours it and `NO_PROXY`.
///
/// reqwest costs more per call than the call itself needs (its redirect layer parses the URL
/// again even with redirects off, its retry layer copies the request), about 5% of the gateway's
/// CPU per request; the direct client builds the hyper request from the prepared parts.
pub struct HttpTransport {
    client: Client,
}

enum Client {
    Direct(Box<DirectClient>),
    Proxied(reqwest::Client),
}

type DirectClient = hyper_util::client::legacy::Client<
    hyper_rustls::HttpsConnector<hyper_util::client::legacy::connect::HttpConnector>,
    http_body_util::Full<Bytes>,
>;

impl HttpTransport {
    pub fn new(settings: &ServerSettings) -> Result<Self, String> {
        if proxy_in_environment() {
            tracing::info!(
                "upstream calls go through the proxy the environment names (HTTPS_PROXY, HTTP_PROXY, ALL_PROXY; NO_PROXY)"
            );
            return Self::via_reqwest(settings);
        }
        Ok(Self {
            client: Client::Direct(Box::new(direct_client(settings)?)),
        })
    }

    /// Through reqwest (proxies from the environment), whatever the environment says.
    pub fn via_reqwest(settings: &ServerSettings) -> Result<Self, String> {
        Ok(Self {
            client: Client::Proxied(client(settings)?),
        })
    }
}

impl Transport for HttpTransport {
    fn send(&self, req: UpstreamRequest) -> SendFuture {
        match &self.client {
            Client::Direct(client) => send_direct(client, req),
            Client::Proxied(client) => send_reqwest(client, req),
        }
    }
}

fn send_direct(client: &DirectClient, req: UpstreamRequest) -> SendFuture {
    let uri = match http::Uri::try_from(req.url.as_str()) {
        Ok(uri) => uri,
        Err(e) => {
            let failure = Failure::Connect(format!("invalid upstream URL: {e}"));
            return Box::pin(std::future::ready(Err(failure)));
        }
    };
    let mut request = http::Request::new(http_body_util::Full::new(req.body));
    *request.method_mut() = http::Method::POST;
    *request.uri_mut() = uri;
    *request.headers_mut() = req.headers;
    let call = client.request(request);
    Box::pin(async move {
        let resp = call.await.map_err(|e| Failure::from_client(&e))?;
        let (parts, body) = resp.into_parts();
        let body = http_body_util::BodyDataStream::new(body)
            .map(|r| r.map_err(|e| Failure::Transport(root_cause(&e))));
        Ok(UpstreamResponse {
            status: parts.status,
            headers: parts.headers,
            body: Box::pin(body),
        })
    })
}

fn send_reqwest(client: &reqwest::Client, req: UpstreamRequest) -> SendFuture {
    // The request is built whole rather than through a `RequestBuilder`, whose `headers` copies
    // every header into a fresh map: the prepared map is moved in as it is.
    let mut request = reqwest::Request::new(http::Method::POST, req.url);
    *request.headers_mut() = req.headers;
    *request.body_mut() = Some(req.body.into());
    let call = client.execute(request);
    Box::pin(async move {
        let mut resp = call.await.map_err(|e| Failure::from_reqwest(&e))?;
        let status = resp.status();
        let headers = std::mem::take(resp.headers_mut());
        let body = resp
            .bytes_stream()
            .map(|r| r.map_err(|e| Failure::from_reqwest(&e)));
        Ok(UpstreamResponse {
            status,
            headers,
            body: Box::pin(body),
        })
    })
}

/// Whether the environment names a proxy for outgoing calls (reqwest's system proxy settings).
fn proxy_in_environment() -> bool {
    [
        "HTTPS_PROXY",
        "https_proxy",
        "HTTP_PROXY",
        "http_proxy",
        "ALL_PROXY",
        "all_proxy",
    ]
    .iter()
    .any(|k| std::env::var_os(k).is_some_and(|v| !v.is_empty()))
}

/// hyper-util's pooled client with the settings reqwest was given: rustls with ring and the
/// platform's verifier, HTTP/2 when the provider offers it (ALPN), keep-alive pool, no redirects.
fn direct_client(settings: &ServerSettings) -> Result<DirectClient, String> {
    use hyper_util::client::legacy::connect::HttpConnector;
    use rustls_platform_verifier::BuilderVerifierExt;

    // ring is the process's provider too: the other clients in the process (alert and telemetry
    // exporters, reqwest) are built without one of their own. Err means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_platform_verifier())
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_no_client_auth();
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_keepalive(Some(Duration::from_secs(30)));
    http.set_connect_timeout(Some(settings.connect_timeout));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http);
    Ok(
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(90))
            .pool_max_idle_per_host(1024)
            .build(https),
    )
}

/// A plain HTTP client (rustls with ring) for the command line's calls to a gateway.
pub fn plain_client(timeout: Duration) -> Result<reqwest::Client, String> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(timeout)
        .build()
        .map_err(|e| e.to_string())
}

/// Builds the pooled, keep-alive client every upstream call goes through.
fn client(settings: &ServerSettings) -> Result<reqwest::Client, String> {
    // reqwest is built without a bundled crypto provider; ring is ours. Err means one is installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(settings.connect_timeout)
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(1024)
        .tcp_nodelay(true)
        .tcp_keepalive(Duration::from_secs(30))
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| e.to_string())
}

/// Why one attempt at a target failed.
#[derive(Debug)]
pub enum Failure {
    /// No connection could be made (refused, reset during connect, DNS, TLS).
    Connect(String),
    /// The upstream did not answer in time.
    Timeout(TimeoutKind, Duration),
    /// The connection broke while sending or receiving.
    Transport(String),
    /// The upstream answered with an error status.
    Status {
        status: u16,
        message: Option<String>,
        /// The provider's requested wait (`retry-after-ms`, `retry-after`), parsed.
        retry_after: Option<Duration>,
        body: Bytes,
    },
    /// The upstream answered 2xx with a body we could not use.
    BadResponse(String),
    /// The target was not tried: the request's deadline had (all but) passed.
    OutOfTime,
    /// The gateway itself ran out of a resource (file descriptors, memory for buffers): says
    /// nothing about the target, so its breaker is not told.
    Local(String),
    /// The target was not tried: circuit open, disabled, at capacity, out of retry budget.
    Skipped {
        reason: String,
        /// When trying again could help (e.g. the breaker's next probe).
        retry_in: Option<Duration>,
    },
    /// The request cannot be expressed in this target's format (never sent). `invalid` when the
    /// request itself is malformed rather than merely beyond what this target supports.
    Untranslatable {
        message: String,
        param: Option<String>,
        invalid: bool,
    },
}

/// Which wait ran out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeoutKind {
    /// No connection within `server.connect_timeout`.
    Connect,
    /// Streams: no first token in time.
    FirstToken,
    /// Non-streaming: the whole answer did not arrive in time.
    Response,
    /// The attempt's own time limit.
    Attempt,
    /// The request's deadline.
    Deadline,
    /// Streams held whole: no data for `policy.idle_timeout`.
    Idle,
}

impl TimeoutKind {
    pub const fn as_str(self) -> &'static str {
        match self {
            TimeoutKind::Connect => "connect timeout",
            TimeoutKind::FirstToken => "first token timeout",
            TimeoutKind::Response => "response timeout",
            TimeoutKind::Attempt => "attempt timeout",
            TimeoutKind::Deadline => "deadline exceeded",
            TimeoutKind::Idle => "idle timeout",
        }
    }
}

/// What the route does after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// The request itself is at fault: every target would refuse it. Answer now.
    Answer,
    /// Transient: the same target may be retried (within the retry and budget limits).
    Retry,
    /// Try another target, never this one again for this request.
    Move,
}

impl Failure {
    /// The decision after this failure. `fallback_on_refusal` is the route's content-policy setting.
    pub fn next(&self, fallback_on_refusal: bool) -> Next {
        match self {
            Failure::Connect(_) | Failure::Transport(_) => Next::Retry,
            // Waiting twice on a silent provider only doubles the wait.
            Failure::Timeout(..) => Next::Move,
            Failure::Status {
                status, message, ..
            } => match status {
                408 | 429 | 500 | 502 | 503 | 504 | 529 => Next::Retry,
                401 | 403 => Next::Move,
                _ if *status >= 500 => Next::Retry,
                _ if is_context_window(message.as_deref()) => Next::Move,
                _ if is_content_policy(message.as_deref()) => {
                    if fallback_on_refusal {
                        Next::Move
                    } else {
                        Next::Answer
                    }
                }
                _ => Next::Answer,
            },
            Failure::BadResponse(_)
            | Failure::Skipped { .. }
            | Failure::Untranslatable { .. }
            | Failure::OutOfTime
            | Failure::Local(_) => Next::Move,
        }
    }

    /// Whether this failure is the target's fault and counts against its circuit breaker.
    pub fn trips_breaker(&self) -> bool {
        match self {
            // The request ran out of time: that says nothing about the target.
            Failure::Timeout(TimeoutKind::Deadline, _) => false,
            Failure::Connect(_)
            | Failure::Transport(_)
            | Failure::Timeout(..)
            | Failure::BadResponse(_) => true,
            // 429 is the provider asking for less traffic: it pauses the target for its
            // `retry-after` (`TargetState::note_rate_limit`) rather than opening its breaker, so a
            // partial rate limit never shuts a target for a whole cool-down.
            Failure::Status { status, .. } => matches!(status, 401 | 403 | 408) || *status >= 500,
            Failure::Skipped { .. }
            | Failure::Untranslatable { .. }
            | Failure::OutOfTime
            | Failure::Local(_) => false,
        }
    }

    /// How this failure reads as an attempt's result; `None` when nothing was sent.
    pub fn attempt_result(&self) -> Option<ballast_core::record::AttemptResult> {
        use ballast_core::record::AttemptResult as R;
        Some(match self {
            Failure::Connect(_) => R::Connect,
            Failure::Timeout(..) => R::Timeout,
            Failure::Transport(_) => R::Transport,
            Failure::Status { status: 429, .. } => R::RateLimited,
            Failure::Status { status, .. } if *status >= 500 => R::ServerError,
            Failure::Status { .. } => R::ClientError,
            Failure::BadResponse(_) => R::BadResponse,
            Failure::Local(_) => R::Local,
            Failure::OutOfTime | Failure::Skipped { .. } | Failure::Untranslatable { .. } => {
                return None;
            }
        })
    }

    /// The provider's requested wait before a retry (`retry-after-ms`, `retry-after`).
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Failure::Status { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    pub fn untranslatable(e: &ballast_core::translate::TranslateError) -> Self {
        use ballast_core::translate::TranslateError as T;
        match e {
            T::Invalid { message, param } => Failure::Untranslatable {
                message: message.clone(),
                param: param.clone(),
                invalid: true,
            },
            T::Unsupported { message } | T::Upstream { message } => Failure::Untranslatable {
                message: message.clone(),
                param: None,
                invalid: false,
            },
        }
    }

    /// A failed call of the direct client: it could not connect (or not in time), or the
    /// connection broke.
    pub fn from_client(e: &hyper_util::client::legacy::Error) -> Self {
        if let Some(local) = local_exhaustion(e) {
            return Failure::Local(local);
        }
        if e.is_connect() && root_cause(e) == "connect timed out" {
            Failure::Timeout(TimeoutKind::Connect, Duration::ZERO)
        } else if e.is_connect() {
            Failure::Connect(describe_connect(e))
        } else {
            Failure::Transport(root_cause(e))
        }
    }

    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        if let Some(local) = local_exhaustion(e) {
            return Failure::Local(local);
        }
        if e.is_connect() && (e.is_timeout() || root_cause(e) == "connect timed out") {
            // Waiting again on a target that could not be reached in time only doubles the wait.
            Failure::Timeout(TimeoutKind::Connect, Duration::ZERO)
        } else if e.is_connect() {
            Failure::Connect(describe_connect(e))
        } else {
            Failure::Transport(root_cause(e))
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Connect(c) => f.write_str(c),
            Failure::Timeout(TimeoutKind::Connect, _) => f.write_str("connect timeout"),
            Failure::Timeout(kind, d) => write!(f, "{} after {}", kind.as_str(), secs(*d)),
            Failure::Transport(c) => write!(f, "connection failed: {c}"),
            Failure::Status {
                status, message, ..
            } => {
                if matches!(status, 401 | 403) {
                    // The provider's text may quote (part of) our key: never pass it on.
                    return write!(
                        f,
                        "HTTP {status}; the provider rejected the gateway's credentials"
                    );
                }
                match message {
                    Some(m) => write!(f, "HTTP {status}: {m}"),
                    None => write!(f, "HTTP {status}"),
                }
            }
            Failure::BadResponse(m) => write!(f, "unusable response: {m}"),
            Failure::Untranslatable { message, .. } => {
                write!(f, "cannot serve this request: {message}")
            }
            Failure::Skipped { reason, .. } => f.write_str(reason),
            Failure::OutOfTime => f.write_str("not tried: no time left before the deadline"),
            Failure::Local(cause) => write!(f, "the gateway is out of resources: {cause}"),
        }
    }
}

impl Failure {
    /// For logs: the failure without any text the provider or the request supplied (an upstream
    /// message can quote the prompt; a decoding error can quote the answer).
    pub fn summary(&self) -> String {
        match self {
            Failure::Status { status, .. } => format!("HTTP {status}"),
            Failure::BadResponse(_) => "unusable response".to_owned(),
            Failure::Untranslatable { invalid: true, .. } => {
                "request cannot be translated".to_owned()
            }
            Failure::Untranslatable { invalid: false, .. } => {
                "request not supported by this target".to_owned()
            }
            other => other.to_string(),
        }
    }
}

/// `10s`, `1.5s`, `250ms`.
pub fn secs(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{}ms", d.as_millis())
    } else if d.subsec_millis() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// A provider's error saying the prompt does not fit the model's context window.
fn is_context_window(message: Option<&str>) -> bool {
    let Some(m) = message else { return false };
    let m = m.to_ascii_lowercase();
    [
        "context length",
        "context window",
        "maximum context",
        "prompt is too long",
        "too many tokens",
        "input is too long",
        "exceeds the maximum number of tokens",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// A provider's refusal on content-policy grounds.
fn is_content_policy(message: Option<&str>) -> bool {
    let Some(m) = message else { return false };
    let m = m.to_ascii_lowercase();
    [
        "content policy",
        "content_policy",
        "content management policy",
        "safety system",
        "flagged",
    ]
    .iter()
    .any(|p| m.contains(p))
}

/// The gateway's own exhaustion (out of file descriptors or sockets), not the target's fault.
fn local_exhaustion(e: &(dyn std::error::Error + 'static)) -> Option<String> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            // EMFILE, ENFILE, ENOBUFS, ENOMEM on Linux.
            return match io.raw_os_error() {
                Some(24) => Some("too many open files (raise the process's file limit)".to_owned()),
                Some(23) => Some("too many open files in the system".to_owned()),
                Some(105) => Some("no buffer space available".to_owned()),
                Some(12) => Some("out of memory".to_owned()),
                _ => None,
            };
        }
        cur = err.source();
    }
    None
}

/// The innermost error message, lower-cased words a person can act on (`connection refused`).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    if let Some(io) = cur.downcast_ref::<std::io::Error>() {
        return io_kind_text(io);
    }
    cur.to_string()
}

fn io_kind_text(io: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match io.kind() {
        K::ConnectionRefused => "connection refused".to_owned(),
        K::ConnectionReset => "connection reset".to_owned(),
        K::ConnectionAborted => "connection aborted".to_owned(),
        K::TimedOut => "connect timed out".to_owned(),
        K::UnexpectedEof => "connection closed early".to_owned(),
        _ => {
            // Strip the "(os error N)" suffix std adds.
            let s = io.to_string();
            match s.find(" (os error") {
                Some(i) => s[..i].to_lowercase(),
                None => s.to_lowercase(),
            }
        }
    }
}

fn describe_connect(e: &(dyn std::error::Error + 'static)) -> String {
    let cause = root_cause(e);
    if cause.contains("dns") || cause.contains("failed to lookup") {
        format!("DNS lookup failed ({cause})")
    } else if cause.is_empty() {
        "connection failed".to_owned()
    } else {
        cause
    }
}

/// Reads a whole (non-streaming) response body, refusing more than `limit` bytes.
///
/// The bytes are held against `held`, the caller's share of the gateway-wide buffer budget: when the
/// gateway as a whole holds too much, the read fails as a local failure (the route falls over)
/// rather than growing further.
pub async fn read_body(
    resp: UpstreamResponse,
    limit: usize,
    held: &mut Reservation,
) -> Result<Bytes, Failure> {
    if let Some(len) = resp.content_length()
        && len > limit as u64
    {
        return Err(Failure::BadResponse(format!(
            "body of {len} bytes exceeds {limit} (limits.max_answer_bytes)"
        )));
    }
    // The chunks are kept as they arrive and joined once at the end into an exact allocation: a
    // growing buffer would hold up to twice the answer (and three times while it reallocates).
    let mut stream = resp.body;
    let mut chunks: Vec<Bytes> = Vec::new();
    let mut len = 0usize;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        len = len.saturating_add(chunk.len());
        if len > limit {
            return Err(Failure::BadResponse(format!(
                "body exceeds {limit} bytes (limits.max_answer_bytes)"
            )));
        }
        if !held.set(len) {
            return Err(buffers_full());
        }
        chunks.push(chunk);
    }
    if let [one] = chunks.as_slice() {
        return Ok(one.clone());
    }
    // Joining holds the chunks and the whole at once, briefly.
    if !held.set(len.saturating_mul(2)) {
        return Err(buffers_full());
    }
    let mut buf = BytesMut::with_capacity(len);
    for c in chunks {
        buf.extend_from_slice(&c);
    }
    Ok(buf.freeze())
}

/// The gateway-wide buffer budget is spent.
pub fn buffers_full() -> Failure {
    Failure::Local(
        "the gateway holds limits.max_buffered_bytes of provider answers already".to_owned(),
    )
}
