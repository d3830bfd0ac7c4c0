//! A streamed answer's upstream connection goes back to the pool when the answer is complete, even
//! when the provider sends the end of its HTTP body a moment after the terminal event: ten streams
//! in a row use one connection, not ten.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// An HTTP/1.1 upstream that answers every request with a chunked SSE stream whose last (empty)
/// chunk comes 50 ms after `[DONE]`; it counts the connections it accepts.
async fn lagging_upstream() -> (String, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v1", listener.local_addr().unwrap());
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let mut have = Vec::new();
                loop {
                    // Read one request: headers, then a Content-Length body.
                    let Some(head_end) = find(&have, b"\r\n\r\n") else {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have.extend_from_slice(&buf[..n]),
                        }
                        continue;
                    };
                    let head = String::from_utf8_lossy(&have[..head_end]).to_lowercase();
                    let len: usize = head
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length:"))
                        .map_or(0, |v| v.trim().parse().unwrap());
                    while have.len() < head_end + 4 + len {
                        match sock.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => have.extend_from_slice(&buf[..n]),
                        }
                    }
                    have.drain(..head_end + 4 + len);
                    let events = concat!(
                        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{\"content\":\"hi\"},\"finish_reason\":null}]}\n\n",
                        "data: {\"id\":\"c\",\"object\":\"chat.completion.chunk\",\"created\":1,\"model\":\"m\",\"choices\":[{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                        "data: [DONE]\n\n"
                    );
                    let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n";
                    let chunk = format!("{:x}\r\n{events}\r\n", events.len());
                    if sock.write_all(head.as_bytes()).await.is_err()
                        || sock.write_all(chunk.as_bytes()).await.is_err()
                    {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    if sock.write_all(b"0\r\n\r\n").await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (url, accepted)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[tokio::test]
async fn ten_streams_reuse_one_upstream_connection() {
    let (upstream, accepted) = lagging_upstream().await;
    let gw = common::gateway(&format!(
        "[providers.p]\nkind = \"openai\"\nbase_url = \"{upstream}\"\napi_key = \"k\"\n[routes.chat]\ntargets = [\"p/m\"]\n"
    ))
    .await;
    let client = reqwest::Client::new();
    for _ in 0..10 {
        let body = client
            .post(format!("{}/v1/chat/completions", gw.url))
            .json(&serde_json::json!({"model": "chat", "stream": true,
                "messages": [{"role": "user", "content": "x"}]}))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(body.ends_with("data: [DONE]\n\n"), "{body}");
        // Give the drain its moment to read the body's end (the upstream sends it after 50 ms).
        tokio::time::sleep(Duration::from_millis(120)).await;
    }
    let n = accepted.load(Ordering::SeqCst);
    assert_eq!(n, 1, "{n} upstream connections for 10 streams");
}
