//! A scripted upstream: the gateway's [`Transport`] replaced by replies the test chooses per host, so
//! the request path runs under Tokio's paused time (timeouts, backoff and breakers tested without
//! sleeping) and can be fed bytes no well-behaved simulator sends.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::{AppState, Failure, SendFuture, Transport, UpstreamRequest, UpstreamResponse};
use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue, Request, StatusCode};
use http_body_util::BodyExt;
use tower::ServiceExt;

/// What one upstream call gets.
#[derive(Clone)]
pub enum Reply {
    /// Never answers.
    Hang,
    /// The connection is refused.
    Refused,
    /// An error status with a body and optional `retry-after`.
    Status {
        status: u16,
        retry_after: Option<&'static str>,
        body: &'static str,
    },
    /// 200 with this JSON body.
    Json(String),
    /// 200 `text/event-stream`: each chunk after its delay; then the body ends, or hangs if `hang`.
    Stream {
        chunks: Vec<(Duration, Bytes)>,
        hang: bool,
    },
    /// 200 `text/event-stream`: these chunks, then the connection breaks.
    Cut(Vec<Bytes>),
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Reply::Status {
            status,
            retry_after: None,
            body: r#"{"error":{"message":"scripted failure","type":"server_error"}}"#,
        }
    }

    /// A stream whose chunks arrive at once, then the connection breaks.
    pub fn cut(chunks: &[&str]) -> Self {
        Reply::Cut(
            chunks
                .iter()
                .map(|c| Bytes::copy_from_slice(c.as_bytes()))
                .collect(),
        )
    }

    /// A stream whose chunks all arrive at once.
    pub fn stream(chunks: &[&str]) -> Self {
        Reply::Stream {
            chunks: chunks
                .iter()
                .map(|c| (Duration::ZERO, Bytes::copy_from_slice(c.as_bytes())))
                .collect(),
            hang: false,
        }
    }
}

type Script = Box<dyn Fn(&UpstreamRequest, u64) -> Reply + Send + Sync>;

/// The transport: per host, a script (from the call's number on that host to its reply) and the
/// calls it received.
#[derive(Default)]
pub struct Scripted {
    scripts: Mutex<HashMap<String, Script>>,
    calls: Mutex<HashMap<String, Vec<UpstreamRequest>>>,
}

impl Scripted {
    /// Every call to `host` gets `reply`.
    pub fn set(&self, host: &str, reply: Reply) {
        self.script(host, move |_, _| reply.clone());
    }

    pub fn script(
        &self,
        host: &str,
        f: impl Fn(&UpstreamRequest, u64) -> Reply + Send + Sync + 'static,
    ) {
        self.scripts
            .lock()
            .unwrap()
            .insert(host.to_owned(), Box::new(f));
    }

    /// How many calls `host` received.
    pub fn calls(&self, host: &str) -> u64 {
        self.calls
            .lock()
            .unwrap()
            .get(host)
            .map_or(0, |c| c.len() as u64)
    }

    pub fn requests(&self, host: &str) -> Vec<UpstreamRequest> {
        self.calls
            .lock()
            .unwrap()
            .get(host)
            .cloned()
            .unwrap_or_default()
    }
}

impl Transport for Scripted {
    fn send(&self, req: UpstreamRequest) -> SendFuture {
        let host = req.url.host_str().unwrap_or_default().to_owned();
        let n = {
            let mut calls = self.calls.lock().unwrap();
            let list = calls.entry(host.clone()).or_default();
            list.push(req.clone());
            list.len() as u64
        };
        let reply = match self.scripts.lock().unwrap().get(&host) {
            Some(f) => f(&req, n),
            None => Reply::Refused,
        };
        Box::pin(async move {
            match reply {
                Reply::Hang => std::future::pending().await,
                Reply::Refused => Err(Failure::Connect("connection refused".to_owned())),
                Reply::Status {
                    status,
                    retry_after,
                    body,
                } => {
                    let mut headers = HeaderMap::new();
                    headers.insert("content-type", HeaderValue::from_static("application/json"));
                    if let Some(r) = retry_after {
                        headers.insert("retry-after", HeaderValue::from_static(r));
                    }
                    Ok(response(
                        status,
                        headers,
                        once(Bytes::from_static(body.as_bytes())),
                    ))
                }
                Reply::Json(body) => {
                    let mut headers = HeaderMap::new();
                    headers.insert("content-type", HeaderValue::from_static("application/json"));
                    Ok(response(200, headers, once(Bytes::from(body))))
                }
                Reply::Cut(chunks) => {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        "content-type",
                        HeaderValue::from_static("text/event-stream"),
                    );
                    Ok(response(200, headers, cut(chunks)))
                }
                Reply::Stream { chunks, hang } => {
                    let mut headers = HeaderMap::new();
                    headers.insert(
                        "content-type",
                        HeaderValue::from_static("text/event-stream"),
                    );
                    let body = futures_util::stream::iter(chunks)
                        .then(|(delay, chunk)| async move {
                            tokio::time::sleep(delay).await;
                            Ok::<_, Failure>(chunk)
                        })
                        .chain(futures_util::stream::once(async move {
                            if hang {
                                std::future::pending::<()>().await;
                            }
                            Ok(Bytes::new())
                        }))
                        .filter(|r| {
                            let keep = !matches!(r, Ok(b) if b.is_empty());
                            async move { keep }
                        });
                    Ok(response(200, headers, Box::pin(body)))
                }
            }
        })
    }
}

fn cut(chunks: Vec<Bytes>) -> ballast_server::BodyStream {
    let items: Vec<Result<Bytes, Failure>> = chunks
        .into_iter()
        .map(Ok)
        .chain(std::iter::once(Err(Failure::Transport(
            "connection reset by peer".to_owned(),
        ))))
        .collect();
    Box::pin(futures_util::stream::iter(items))
}

fn once(b: Bytes) -> ballast_server::BodyStream {
    Box::pin(futures_util::stream::once(async move { Ok(b) }))
}

fn response(status: u16, headers: HeaderMap, body: ballast_server::BodyStream) -> UpstreamResponse {
    UpstreamResponse {
        status: StatusCode::from_u16(status).unwrap(),
        headers,
        body,
    }
}

/// A gateway on a scripted transport, driven without a socket.
#[derive(Clone)]
pub struct Rig {
    pub state: Arc<AppState>,
    pub upstream: Arc<Scripted>,
}

/// Providers `primary` and `backup` (OpenAI format, hosts `primary.test` and `backup.test`, also an
/// Anthropic one `claude.test`); route `chat` = primary then backup, `solo` = primary only,
/// `claude` = the Anthropic provider then backup. `extra` is appended to the TOML (e.g. a
/// `[policy]` table or `[limits]`).
pub fn rig(extra: &str) -> Rig {
    let toml = format!(
        r#"
        [admin]
        key = "admin-key"
        [providers.primary]
        kind = "openai"
        base_url = "http://primary.test/v1"
        api_key = "k"
        [providers.backup]
        kind = "openai"
        base_url = "http://backup.test/v1"
        api_key = "k"
        [providers.claude]
        kind = "anthropic"
        base_url = "http://claude.test"
        api_key = "k"
        [routes.chat]
        targets = ["primary/gpt-4.1", "backup/gpt-4.1-mini"]
        [routes.solo]
        targets = ["primary/gpt-4.1"]
        [routes.claude]
        targets = ["claude/claude-sonnet-4-5", "backup/gpt-4.1-mini"]
        {extra}
        "#
    );
    let config = Config::from_toml(&toml, &MapEnv::new(&[])).unwrap();
    let upstream = Arc::new(Scripted::default());
    let state = Arc::new(AppState::with_transport(config, 7, upstream.clone()).unwrap());
    Rig { state, upstream }
}

/// What the client got: status, headers, the whole body.
pub struct Got {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: String,
}

impl Got {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .get(name)
            .map_or("", |v| v.to_str().unwrap_or(""))
    }
}

impl Rig {
    /// Sends a request through the gateway's router (no socket) and reads the whole answer.
    pub async fn call(&self, path: &str, body: &serde_json::Value) -> Got {
        self.call_with(path, body, &[]).await
    }

    pub async fn call_with(
        &self,
        path: &str,
        body: &serde_json::Value,
        headers: &[(&str, &str)],
    ) -> Got {
        self.send(path, body.to_string().into_bytes(), headers)
            .await
    }

    /// Sends raw body bytes (which need not be JSON, or UTF-8).
    pub async fn call_bytes(&self, path: &str, body: Vec<u8>) -> Got {
        self.send(path, body, &[]).await
    }

    async fn send(&self, path: &str, body: Vec<u8>, headers: &[(&str, &str)]) -> Got {
        let mut req = Request::post(path).header("content-type", "application/json");
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let req = req.body(Body::from(body)).unwrap();
        let resp = ballast_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        Got {
            status,
            headers,
            body: String::from_utf8_lossy(&bytes).into_owned(),
        }
    }

    pub async fn admin(&self, path: &str) -> serde_json::Value {
        let req = Request::get(path)
            .header("authorization", "Bearer admin-key")
            .body(Body::empty())
            .unwrap();
        let resp = ballast_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice(&bytes).unwrap()
    }

    /// `GET path` without credentials; the body as text.
    pub async fn get_text(&self, path: &str) -> (u16, String) {
        let req = Request::get(path).body(Body::empty()).unwrap();
        let resp = ballast_server::app(self.state.clone())
            .oneshot(req)
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let bytes = resp.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    pub async fn breaker_state(&self, target: &str) -> String {
        let v = self.admin("/admin/targets").await;
        let t = v["targets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["target"] == target)
            .unwrap();
        t["breaker"]["state"].as_str().unwrap().to_owned()
    }
}

/// An OpenAI Chat Completions answer.
pub fn chat_answer(text: &str) -> String {
    serde_json::json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 2, "total_tokens": 5}
    })
    .to_string()
}

/// One Chat Completions stream chunk carrying `text`.
pub fn chat_chunk(text: &str) -> String {
    format!(
        "data: {}\n\n",
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]})
    )
}

/// The closing chunks of a Chat Completions stream.
pub fn chat_end() -> String {
    format!(
        "data: {}\n\ndata: [DONE]\n\n",
        serde_json::json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]})
    )
}

pub fn chat(route: &str, text: &str, stream: bool) -> serde_json::Value {
    serde_json::json!({"model": route, "stream": stream, "messages": [{"role": "user", "content": text}]})
}
