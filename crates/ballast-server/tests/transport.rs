//! The production transport's two clients (hyper-util's, called directly, and reqwest's, used when
//! the environment names a proxy) against the simulator over loopback: the same answers, streamed
//! as they come, and the same classification of a refused connection.

#![allow(clippy::unwrap_used)]

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http::{HeaderMap, HeaderValue};

use ballast_core::config::ServerSettings;
use ballast_server::{Failure, HttpTransport, Transport, UpstreamRequest, Url};
use ballast_sim::SimConfig;

fn settings() -> ServerSettings {
    ServerSettings {
        listen: "127.0.0.1:0".parse().unwrap(),
        body_limit: 1 << 20,
        connect_timeout: Duration::from_secs(2),
        max_in_flight: 100,
        body_timeout: Duration::from_secs(5),
    }
}

fn request(base: &str, stream: bool) -> UpstreamRequest {
    let mut headers = HeaderMap::new();
    headers.insert("authorization", HeaderValue::from_static("Bearer sk-test"));
    headers.insert("content-type", HeaderValue::from_static("application/json"));
    let body = format!(
        r#"{{"model":"gpt-4.1","stream":{stream},"max_tokens":8,"messages":[{{"role":"user","content":"Hello"}}]}}"#
    );
    UpstreamRequest {
        url: Url::parse(&format!("{base}/v1/chat/completions")).unwrap(),
        headers,
        body: Bytes::from(body),
    }
}

/// Sends and reads the whole answer: status, content type, chunks received, body.
async fn call(t: &HttpTransport, req: UpstreamRequest) -> (u16, String, usize, String) {
    let resp = t.send(req).await.unwrap();
    let content_type = resp.headers["content-type"].to_str().unwrap().to_owned();
    let mut body = resp.body;
    let (mut chunks, mut all) = (0, Vec::new());
    while let Some(chunk) = body.next().await {
        chunks += 1;
        all.extend_from_slice(&chunk.unwrap());
    }
    (
        resp.status.as_u16(),
        content_type,
        chunks,
        String::from_utf8(all).unwrap(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn both_clients_answer_alike_and_classify_a_refused_connection_alike() {
    let sim = ballast_sim::start("127.0.0.1:0".parse().unwrap(), SimConfig::default())
        .await
        .unwrap();
    let base = sim.base_url();
    let direct = HttpTransport::new(&settings()).unwrap();
    let proxied = HttpTransport::via_reqwest(&settings()).unwrap();

    for t in [&direct, &proxied] {
        let (status, content_type, _, body) = call(t, request(&base, false)).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("application/json"),
            "{content_type}"
        );
        let v: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(v["object"], "chat.completion");

        // A stream arrives as the provider sends it, chunk by chunk, to its end.
        let (status, content_type, chunks, body) = call(t, request(&base, true)).await;
        assert_eq!(status, 200);
        assert!(
            content_type.starts_with("text/event-stream"),
            "{content_type}"
        );
        assert!(chunks > 1, "the stream came in {chunks} chunk(s)");
        assert!(body.trim_end().ends_with("data: [DONE]"), "{body}");

        // Nobody listens on the simulator's port once it is gone: a connect failure.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}", listener.local_addr().unwrap());
        drop(listener);
        let Err(failure) = t.send(request(&dead, false)).await else {
            panic!("a call to a closed port succeeded");
        };
        assert!(
            matches!(&failure, Failure::Connect(c) if c == "connection refused"),
            "{failure:?}"
        );
    }
}
