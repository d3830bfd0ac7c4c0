//! Hostile clients: huge or many headers, a head or a body trickled a byte at a time, deeply nested
//! JSON, thousands of tools or messages, invalid UTF-8 in every string field. Each gets a clear 4xx
//! (in its API's format, with a request id) in bounded time and memory, and nothing else is disturbed.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::scripted::{Reply, Rig, chat, chat_answer, rig};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// The rig served on a loopback port (for what only a real connection can send).
async fn listen(r: &Rig) -> (String, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(ballast_server::serve(listener, r.state.clone(), async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// Sends raw bytes and reads the reply's status line (or "" if the connection closed first).
async fn raw(addr: &str, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    // The server may answer (431) and close before reading everything: a failed write is fine.
    let _ = s.write_all(bytes).await;
    let mut buf = vec![0; 4096];
    let mut got = Vec::new();
    loop {
        match tokio::time::timeout(Duration::from_secs(20), s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
        }
    }
    String::from_utf8_lossy(&got)
        .lines()
        .next()
        .unwrap_or("")
        .to_owned()
}

fn healthy() -> Rig {
    let r = rig("");
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("ok")));
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("ok")));
    r
}

fn post_head(extra: &str, len: usize) -> String {
    format!(
        "POST /v1/chat/completions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\ncontent-length: {len}\r\n{extra}\r\n"
    )
}

#[tokio::test]
async fn many_or_huge_headers_get_431_and_the_gateway_keeps_serving() {
    let r = healthy();
    let (addr, _stop) = listen(&r).await;
    let body = chat("solo", "x", false).to_string();
    let many: String = (0..1000).map(|i| format!("x-h{i}: v\r\n")).collect();
    let status = raw(
        &addr,
        format!("{}{body}", post_head(&many, body.len())).as_bytes(),
    )
    .await;
    assert!(status.contains("431"), "{status}");
    let huge = format!("x-big: {}\r\n", "a".repeat(1 << 20));
    let status = raw(
        &addr,
        format!("{}{body}", post_head(&huge, body.len())).as_bytes(),
    )
    .await;
    assert!(status.contains("431"), "{status}");
    let status = raw(
        &addr,
        format!("{}{body}", post_head("", body.len())).as_bytes(),
    )
    .await;
    assert!(status.contains("200"), "{status}");
}

#[tokio::test(start_paused = true)]
async fn a_trickled_request_head_is_cut_at_the_header_timeout() {
    let r = healthy();
    let (addr, _stop) = listen(&r).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    let t0 = Instant::now();
    let head = post_head("", 10);
    let mut closed = false;
    for b in head.as_bytes().iter().take(90) {
        if s.write_all(&[*b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0; 512];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, s.read(&mut buf)).await {
            // The server answered (408) or closed: either way, it gave up on the head.
            let _ = n;
            closed = true;
            break;
        }
    }
    assert!(closed, "a head trickled for 90 s was still being read");
    assert!(
        t0.elapsed() <= Duration::from_secs(62),
        "{:?}",
        t0.elapsed()
    );
}

#[tokio::test(start_paused = true)]
async fn a_trickled_body_gets_408_within_the_body_timeout() {
    let r = rig("[server]\nbody_timeout = \"5s\"");
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("ok")));
    let (addr, _stop) = listen(&r).await;
    let mut s = TcpStream::connect(&addr).await.unwrap();
    s.write_all(post_head("", 10_000).as_bytes()).await.unwrap();
    let t0 = Instant::now();
    let mut got = Vec::new();
    for _ in 0..60 {
        let _ = s.write_all(b" ").await;
        tokio::time::sleep(Duration::from_secs(1)).await;
        let mut buf = [0; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::ZERO, s.read(&mut buf)).await {
            got.extend_from_slice(&buf[..n]);
            break;
        }
    }
    let text = String::from_utf8_lossy(&got);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("x-request-id"), "{text}");
    assert!(t0.elapsed() <= Duration::from_secs(6), "{:?}", t0.elapsed());
}

/// 100,000 levels of nesting in a field the gateway reads, and in one it only forwards.
#[tokio::test]
async fn deeply_nested_json_gets_a_clear_400_on_every_api() {
    let r = healthy();
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let cases = [
        (
            "/v1/chat/completions",
            format!(r#"{{"model":"chat","messages":{deep}}}"#),
        ),
        (
            "/v1/messages",
            format!(
                r#"{{"model":"chat","max_tokens":5,"messages":[{{"role":"user","content":{deep}}}]}}"#
            ),
        ),
        (
            "/v1/responses",
            format!(r#"{{"model":"chat","input":{deep}}}"#),
        ),
        (
            "/v1beta/models/chat:generateContent",
            format!(r#"{{"contents":{deep}}}"#),
        ),
        (
            "/v1/chat/completions",
            format!(
                r#"{{"model":"chat","messages":[{{"role":"user","content":"x"}}],"metadata":{deep}}}"#
            ),
        ),
    ];
    for (path, body) in cases {
        let got = call_raw(&r, path, body.into_bytes()).await;
        assert!(
            got.status == 400 || got.status == 200,
            "{path}: {} {}",
            got.status,
            got.body
        );
        if got.status == 400 {
            assert!(!got.header("x-request-id").is_empty());
            let v: Value = serde_json::from_str(&got.body).unwrap();
            assert!(v["error"]["message"].is_string(), "{path}: {}", got.body);
        }
    }
    // Still serving.
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(got.status, 200);
}

#[tokio::test]
async fn thousands_of_tools_and_messages_are_served_or_refused_cleanly() {
    let r = healthy();
    let tools: Vec<Value> = (0..5000)
        .map(|i| json!({"name": format!("tool_{i}"), "description": "d", "input_schema": {"type": "object"}}))
        .collect();
    let messages: Vec<Value> = (0..10_000)
        .map(|i| json!({"role": if i % 2 == 0 { "user" } else { "assistant" }, "content": format!("m{i}")}))
        .chain(std::iter::once(json!({"role": "user", "content": "last"})))
        .collect();
    // A Messages client on an OpenAI-format route: the translated path decodes all of it.
    let body = json!({"model": "chat", "max_tokens": 10, "tools": tools, "messages": messages});
    let t0 = Instant::now();
    let got = r.call("/v1/messages", &body).await;
    assert!(
        got.status == 200 || got.status == 400,
        "{} {}",
        got.status,
        got.body
    );
    assert!(t0.elapsed() < Duration::from_secs(10), "{:?}", t0.elapsed());
    let sent = r.upstream.requests("primary.test");
    if got.status == 200 {
        assert!(String::from_utf8_lossy(&sent[0].body).contains("tool_4999"));
    }
}

/// Invalid UTF-8 in each string field of each API: a 400 in the client's format, never a panic,
/// never forwarded.
#[tokio::test]
async fn invalid_utf8_in_any_string_field_gets_400_in_the_clients_format() {
    let r = healthy();
    let bad = "\u{FFFD}BAD\u{FFFD}";
    let templates: [(&str, Value); 4] = [
        (
            "/v1/chat/completions",
            json!({"model": "chat", "messages": [{"role": "user", "content": "c", "name": "n"}],
                   "tools": [{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}],
                   "user": "u"}),
        ),
        (
            "/v1/messages",
            json!({"model": "chat", "max_tokens": 5, "system": "s",
                   "messages": [{"role": "user", "content": [{"type": "text", "text": "t"}]}],
                   "tools": [{"name": "f", "description": "d", "input_schema": {"type": "object"}}]}),
        ),
        (
            "/v1/responses",
            json!({"model": "chat", "instructions": "i", "input": [{"role": "user", "content": "c"}]}),
        ),
        (
            "/v1beta/models/chat:generateContent",
            json!({"systemInstruction": {"parts": [{"text": "s"}]}, "contents": [{"role": "user", "parts": [{"text": "t"}]}]}),
        ),
    ];
    let before = r.upstream.calls("primary.test");
    for (path, template) in templates {
        let mut strings = Vec::new();
        collect_strings(&template, &mut Vec::new(), &mut strings);
        for pointer in strings {
            let mut v = template.clone();
            *v.pointer_mut(&pointer).unwrap() = Value::String(bad.to_owned());
            // Replace the marker's U+FFFD (valid UTF-8) with bytes that are not UTF-8 at all.
            let bytes = replace(
                v.to_string().as_bytes(),
                "\u{FFFD}".as_bytes(),
                &[0xff, 0xc3, 0x28],
            );
            let got = call_raw(&r, path, bytes).await;
            assert_eq!(got.status, 400, "{path} {pointer}: {}", got.body);
            assert!(!got.header("x-request-id").is_empty());
            let v: Value = serde_json::from_str(&got.body)
                .unwrap_or_else(|_| panic!("{path} {pointer}: not JSON: {}", got.body));
            let message = v["error"]["message"].as_str().unwrap_or_default();
            assert!(!message.is_empty(), "{path} {pointer}: {}", got.body);
        }
    }
    assert_eq!(
        r.upstream.calls("primary.test"),
        before,
        "nothing was forwarded"
    );
}

fn collect_strings(v: &Value, path: &mut Vec<String>, out: &mut Vec<String>) {
    match v {
        Value::String(_) => out.push(format!("/{}", path.join("/"))),
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                path.push(i.to_string());
                collect_strings(x, path, out);
                path.pop();
            }
        }
        Value::Object(o) => {
            for (k, x) in o {
                path.push(k.clone());
                collect_strings(x, path, out);
                path.pop();
            }
        }
        _ => {}
    }
}

fn replace(haystack: &[u8], from: &[u8], to: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(haystack.len());
    let mut i = 0;
    while i < haystack.len() {
        if haystack[i..].starts_with(from) {
            out.extend_from_slice(to);
            i += from.len();
        } else {
            out.push(haystack[i]);
            i += 1;
        }
    }
    out
}

async fn call_raw(r: &Rig, path: &str, body: Vec<u8>) -> common::scripted::Got {
    r.call_bytes(path, body).await
}
