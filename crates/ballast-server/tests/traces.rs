//! OpenTelemetry traces: with `[telemetry] otlp_endpoint` set, every request is a server span and
//! every upstream attempt a client span under it, exported over OTLP/HTTP (protobuf) to a collector
//! — here a local one that decodes what it receives — in the client's trace when it sent a
//! `traceparent`, which goes on to the provider naming the attempt's span. Spans carry GenAI
//! attributes and never a prompt or an answer; a dead collector never fails a request.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::routing::post;
use common::scripted::{Reply, chat, chat_answer, rig};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message as _;

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// What the collector received: the raw export bodies and the spans in them.
#[derive(Default)]
struct Received {
    bodies: Vec<Vec<u8>>,
    spans: Vec<Span>,
    service_names: Vec<String>,
}

/// A collector on loopback; returns its base address.
async fn collector() -> (String, Arc<Mutex<Received>>) {
    let got = Arc::new(Mutex::new(Received::default()));
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body.as_ref()).unwrap();
                let mut g = sink.lock().unwrap();
                g.bodies.push(body.to_vec());
                for rs in req.resource_spans {
                    if let Some(res) = &rs.resource {
                        for kv in &res.attributes {
                            if kv.key == "service.name"
                                && let Some(Value::StringValue(s)) =
                                    kv.value.as_ref().and_then(|v| v.value.clone())
                            {
                                g.service_names.push(s);
                            }
                        }
                    }
                    for ss in rs.scope_spans {
                        g.spans.extend(ss.spans);
                    }
                }
                // An empty ExportTraceServiceResponse: full success.
                ([("content-type", "application/x-protobuf")], Bytes::new())
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (format!("http://{addr}"), got)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a Value> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn attr_str<'a>(s: &'a Span, key: &str) -> &'a str {
    match attr(s, key) {
        Some(Value::StringValue(v)) => v,
        _ => "",
    }
}

fn attr_int(s: &Span, key: &str) -> Option<i64> {
    match attr(s, key) {
        Some(Value::IntValue(v)) => Some(*v),
        _ => None,
    }
}

#[tokio::test]
async fn a_request_and_its_attempts_are_spans_in_the_clients_trace() {
    let (url, got) = collector().await;
    let r = rig(&format!(
        "[policy]\nretries = 0\n[probes]\ninterval = \"0s\"\n[telemetry]\notlp_endpoint = \"{url}\"\nservice_name = \"gw-test\"\n"
    ));
    let background = ballast_server::Background::start(&r.state);
    r.upstream.set("primary.test", Reply::status(503));
    r.upstream.set(
        "backup.test",
        Reply::Json(chat_answer("the answer zq-span-answer")),
    );
    let traceparent = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let answer = r
        .call_with(
            "/v1/chat/completions",
            &chat("chat", "a prompt zq-span-prompt", false),
            &[("traceparent", &traceparent), ("tracestate", "vendor=1")],
        )
        .await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    background.shutdown().await;

    let g = got.lock().unwrap();
    assert_eq!(g.service_names.first().map(String::as_str), Some("gw-test"));
    let server: Vec<&Span> = g
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 1, "one span per request");
    let req = server[0];
    assert_eq!(
        hex(&req.trace_id),
        CLIENT_TRACE,
        "the client's trace goes on"
    );
    assert_eq!(hex(&req.parent_span_id), CLIENT_SPAN);
    assert_eq!(req.name, "chat chat");
    assert_eq!(attr_str(req, "gen_ai.operation.name"), "chat");
    assert_eq!(attr_str(req, "gen_ai.provider.name"), "openai");
    assert_eq!(attr_str(req, "gen_ai.request.model"), "chat");
    assert_eq!(attr_str(req, "gen_ai.response.model"), "gpt-4.1-mini");
    assert_eq!(attr_str(req, "ballast.route"), "chat");
    assert_eq!(attr_str(req, "ballast.target"), "backup/gpt-4.1-mini");
    assert_eq!(attr_int(req, "ballast.attempts"), Some(2));
    assert_eq!(attr_int(req, "http.response.status_code"), Some(200));
    assert!(attr(req, "gen_ai.usage.output_tokens").is_some());
    assert!(attr(req, "error.type").is_none());
    assert!(req.end_time_unix_nano > req.start_time_unix_nano);

    let attempts: Vec<&Span> = g
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    assert_eq!(attempts.len(), 2, "one span per upstream attempt");
    for a in &attempts {
        assert_eq!(hex(&a.trace_id), CLIENT_TRACE);
        assert_eq!(
            a.parent_span_id, req.span_id,
            "attempts hang under the request"
        );
        assert!(a.start_time_unix_nano >= req.start_time_unix_nano);
    }
    let failed = attempts
        .iter()
        .find(|a| attr_str(a, "ballast.target") == "primary/gpt-4.1")
        .unwrap();
    assert_eq!(attr_str(failed, "error.type"), "server_error");
    assert_eq!(attr_str(failed, "gen_ai.request.model"), "gpt-4.1");
    let answered = attempts
        .iter()
        .find(|a| attr_str(a, "ballast.target") == "backup/gpt-4.1-mini")
        .unwrap();
    assert!(attr(answered, "error.type").is_none());

    // The provider was told the attempt's span as the parent of its work.
    let sent = r.upstream.requests("backup.test");
    let tp = sent[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert_eq!(
        tp,
        format!("00-{CLIENT_TRACE}-{}-01", hex(&answered.span_id)),
        "traceparent sent upstream"
    );
    assert_eq!(sent[0].headers.get("tracestate").unwrap(), "vendor=1");

    // No prompt or answer text in any exported byte.
    for body in &g.bodies {
        for marker in [&b"zq-span-prompt"[..], b"zq-span-answer"] {
            assert!(
                !body.windows(marker.len()).any(|w| w == marker),
                "content in an exported span"
            );
        }
    }
}

#[tokio::test]
async fn without_a_client_trace_requests_start_their_own_and_failures_are_marked() {
    let (url, got) = collector().await;
    let r = rig(&format!(
        "[policy]\nretries = 0\n[probes]\ninterval = \"0s\"\n[telemetry]\notlp_endpoint = \"{url}/v1/traces\"\n"
    ));
    let background = ballast_server::Background::start(&r.state);
    r.upstream.set("primary.test", Reply::status(503));
    let failed = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    assert_eq!(failed.status, 503);
    let unknown = r
        .call("/v1/chat/completions", &chat("no-such-model", "x", false))
        .await;
    assert_eq!(unknown.status, 404);
    background.shutdown().await;

    let g = got.lock().unwrap();
    let server: Vec<&Span> = g
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .collect();
    assert_eq!(server.len(), 2, "{:?}", g.spans);
    for s in &server {
        assert!(s.parent_span_id.is_empty(), "a root span");
        assert_eq!(s.trace_id.len(), 16);
    }
    assert_ne!(
        server[0].trace_id, server[1].trace_id,
        "a trace per request"
    );
    let solo = server
        .iter()
        .find(|s| attr_str(s, "ballast.route") == "solo")
        .unwrap();
    assert_eq!(attr_str(solo, "error.type"), "503");
    assert_eq!(attr_int(solo, "http.response.status_code"), Some(503));
    let attempt = g
        .spans
        .iter()
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(attempt.trace_id, solo.trace_id);
    assert_eq!(attempt.parent_span_id, solo.span_id);
}

#[tokio::test]
async fn a_client_that_does_not_sample_gets_no_spans_and_sampling_can_be_turned_down() {
    let (url, got) = collector().await;
    let r = rig(&format!(
        "[probes]\ninterval = \"0s\"\n[telemetry]\notlp_endpoint = \"{url}\"\ntrace_sample_ratio = 0.0\n"
    ));
    let background = ballast_server::Background::start(&r.state);
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("hi")));
    // Not sampled by the client, and the gateway samples none of its own.
    let not_sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-00");
    for headers in [vec![("traceparent", not_sampled.as_str())], vec![]] {
        let got = r
            .call_with("/v1/chat/completions", &chat("chat", "x", false), &headers)
            .await;
        assert_eq!(got.status, 200);
    }
    // The client's sampled trace is exported whatever the ratio.
    let sampled = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    r.call_with(
        "/v1/chat/completions",
        &chat("chat", "x", false),
        &[("traceparent", &sampled)],
    )
    .await;
    background.shutdown().await;
    let g = got.lock().unwrap();
    let server = g
        .spans
        .iter()
        .filter(|s| s.kind == SpanKind::Server as i32)
        .count();
    assert_eq!(server, 1, "only the sampled request");
    // Unsampled requests still pass their trace on, flagged as not sampled.
    let sent = r.upstream.requests("primary.test");
    let tp = sent[0]
        .headers
        .get("traceparent")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(tp.starts_with(&format!("00-{CLIENT_TRACE}-")), "{tp}");
    assert!(tp.ends_with("-00"), "{tp}");
}

#[tokio::test]
async fn without_a_collector_the_clients_traceparent_goes_upstream_unchanged() {
    let r = rig("[probes]\ninterval = \"0s\"\n");
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("hi")));
    let tp = format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01");
    let got = r
        .call_with(
            "/v1/chat/completions",
            &chat("chat", "x", false),
            &[("traceparent", &tp)],
        )
        .await;
    assert_eq!(got.status, 200);
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(got.status, 200);
    let sent = r.upstream.requests("primary.test");
    assert_eq!(sent[0].headers.get("traceparent").unwrap(), tp.as_str());
    assert!(
        sent[1].headers.get("traceparent").is_none(),
        "no trace invented without a collector"
    );
    let (_, metrics) = r.get_text("/metrics").await;
    assert!(
        !metrics.contains("ballast_trace_spans"),
        "no span metrics without a collector"
    );
}

#[tokio::test]
async fn a_dead_collector_never_fails_a_request_and_the_lost_spans_are_counted() {
    // A port with nothing listening.
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let r = rig(&format!(
        "[probes]\ninterval = \"0s\"\n[telemetry]\notlp_endpoint = \"http://{dead}\"\notlp_timeout = \"2s\"\n"
    ));
    let background = ballast_server::Background::start(&r.state);
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("hi")));
    for _ in 0..5 {
        let got = r
            .call("/v1/chat/completions", &chat("chat", "x", false))
            .await;
        assert_eq!(got.status, 200);
    }
    background.shutdown().await;
    let (_, metrics) = r.get_text("/metrics").await;
    let failed: f64 = metrics
        .lines()
        .find(|l| l.starts_with("ballast_trace_spans_total{result=\"failed\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap();
    // Five requests, each a server span and one attempt span.
    assert_eq!(failed, 10.0, "{metrics}");
}
