//! The request to send ([`Target`]) and one keep-alive HTTP/1.1 connection that sends it ([`Conn`]).

use bytes::Bytes;
use http::{HeaderMap, HeaderName, HeaderValue, Method, Request, Uri, header};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::{net::TcpStream, task::JoinHandle};

/// Largest response body read before the request counts as failed (answers here are a few hundred bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024 * 1024;

/// Everything needed to build the request, prepared once.
#[derive(Debug)]
pub(crate) struct Target {
    /// `host:port` to connect to.
    addr: String,
    method: Method,
    /// Origin-form request target (path and query).
    path: Uri,
    headers: HeaderMap,
    body: Bytes,
}

impl Target {
    pub(crate) fn new(
        url: &str,
        method: &str,
        headers: &[String],
        body: Vec<u8>,
    ) -> Result<Self, String> {
        let uri: Uri = url.parse().map_err(|e| format!("--url {url}: {e}"))?;
        if uri.scheme_str() != Some("http") {
            return Err(format!("--url {url}: only http:// URLs are supported"));
        }
        let authority = uri
            .authority()
            .ok_or_else(|| format!("--url {url}: no host"))?;
        let addr = format!(
            "{}:{}",
            authority.host(),
            authority.port_u16().unwrap_or(80)
        );
        let path_and_query = uri.path_and_query().map_or("/", |p| p.as_str());
        let path: Uri = path_and_query
            .parse()
            .map_err(|e| format!("--url {url}: {e}"))?;
        let method: Method = method
            .parse()
            .map_err(|e| format!("--method {method}: {e}"))?;

        let mut map = HeaderMap::new();
        let host =
            HeaderValue::from_str(authority.as_str()).map_err(|e| format!("--url {url}: {e}"))?;
        map.insert(header::HOST, host);
        for line in headers {
            let (name, value) = line
                .split_once(':')
                .ok_or_else(|| format!("--header {line}: expected name:value"))?;
            let name = HeaderName::from_bytes(name.trim().as_bytes())
                .map_err(|e| format!("--header {line}: {e}"))?;
            let value =
                HeaderValue::from_str(value.trim()).map_err(|e| format!("--header {line}: {e}"))?;
            map.append(name, value);
        }
        if !body.is_empty() && !map.contains_key(header::CONTENT_TYPE) {
            map.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        Ok(Self {
            addr,
            method,
            path,
            headers: map,
            body: Bytes::from(body),
        })
    }

    fn request(&self) -> Request<Full<Bytes>> {
        let mut req = Request::new(Full::new(self.body.clone()));
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.path.clone();
        *req.headers_mut() = self.headers.clone();
        req
    }
}

/// How one request ended.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The whole answer arrived; the status may still be an error status.
    Status(u16),
    /// Connecting, sending or reading failed; the connection is dropped.
    Transport(String),
}

/// One keep-alive connection, opened on first use and reopened after a transport error.
#[derive(Default)]
pub(crate) struct Conn {
    open: Option<Open>,
}

struct Open {
    sender: SendRequest<Full<Bytes>>,
    /// Drives the connection; aborted when the connection is dropped, so it never outlives its owner.
    driver: JoinHandle<()>,
}

impl Drop for Open {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

impl Conn {
    /// Sends one request and reads the whole answer.
    pub(crate) async fn send(&mut self, target: &Target) -> Outcome {
        match self.try_send(target).await {
            Ok(status) => Outcome::Status(status),
            Err(e) => {
                self.open = None;
                Outcome::Transport(e)
            }
        }
    }

    async fn try_send(&mut self, target: &Target) -> Result<u16, String> {
        let open = match &mut self.open {
            Some(open) if !open.sender.is_closed() => open,
            _ => self.open.insert(connect(&target.addr).await?),
        };
        open.sender
            .ready()
            .await
            .map_err(|e| format!("connection: {e}"))?;
        let response = open
            .sender
            .send_request(target.request())
            .await
            .map_err(|e| format!("send: {e}"))?;
        let status = response.status().as_u16();
        let mut body = response.into_body();
        let mut read = 0usize;
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| format!("read body: {e}"))?;
            if let Some(data) = frame.data_ref() {
                read += data.len();
                if read > MAX_RESPONSE_BYTES {
                    return Err(format!("response body over {MAX_RESPONSE_BYTES} bytes"));
                }
            }
        }
        Ok(status)
    }
}

async fn connect(addr: &str) -> Result<Open, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("set TCP_NODELAY: {e}"))?;
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    let driver = tokio::spawn(async move {
        // The error, if any, surfaces on the next send through `sender`.
        let _ = connection.await;
    });
    Ok(Open { sender, driver })
}
