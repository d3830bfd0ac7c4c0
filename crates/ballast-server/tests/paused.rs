//! The request path under Tokio's paused time, on a scripted upstream: timeouts, `retry-after`,
//! backoff, breakers and deadlines asserted to the millisecond without sleeping, and hostile
//! upstream bytes (events without end, answers past their caps, huge indices) that must end as a
//! clean error or a fallback answer — never a crash, never unbounded growth.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::scripted::{Reply, chat, chat_answer, chat_chunk, chat_end, rig};
use serde_json::json;
use tokio::time::Instant;

const MS: Duration = Duration::from_millis(1);

fn within(took: Duration, expected: Duration) {
    assert!(
        took >= expected && took <= expected + 5 * MS,
        "took {took:?}, expected {expected:?}"
    );
}

#[tokio::test(start_paused = true)]
async fn a_hung_primary_falls_over_after_exactly_the_first_token_timeout() {
    let r = rig("[policy]\nfirst_token_timeout = \"10s\"\nresponse_timeout = \"20s\"");
    r.upstream.set("primary.test", Reply::Hang);
    r.upstream.script("backup.test", |req, _| {
        if String::from_utf8_lossy(&req.body).contains("\"stream\":true") {
            Reply::stream(&[&chat_chunk("hi"), &chat_end()])
        } else {
            Reply::Json(chat_answer("hi"))
        }
    });
    for (stream, wait) in [(true, 10), (false, 20)] {
        let t0 = Instant::now();
        let got = r
            .call("/v1/chat/completions", &chat("chat", "x", stream))
            .await;
        within(t0.elapsed(), Duration::from_secs(wait));
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
        assert_eq!(got.header("x-ballast-fallback"), "true");
        assert!(!got.body.contains("error"), "{}", got.body);
    }
    // A timed-out target is not retried within the same request.
    assert_eq!(r.upstream.calls("primary.test"), 2);
}

#[tokio::test(start_paused = true)]
async fn retry_after_is_honoured_when_it_fits_the_deadline_and_skipped_when_not() {
    let r = rig("[policy]\ndeadline = \"20s\"");
    r.upstream.script("primary.test", |_, n| match n {
        1 => Reply::Status {
            status: 429,
            retry_after: Some("3"),
            body: r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        },
        _ => Reply::Json(chat_answer("ok")),
    });
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    within(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ballast-attempts"), "2");

    // A wait longer than what is left of the deadline is not waited for: fall over at once.
    r.upstream.set(
        "primary.test",
        Reply::Status {
            status: 429,
            retry_after: Some("60"),
            body: r#"{"error":{"message":"slow down","type":"rate_limit_error"}}"#,
        },
    );
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("ok")));
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
}

#[tokio::test(start_paused = true)]
async fn the_breaker_opens_at_its_threshold_and_a_trial_after_the_cooldown_closes_it() {
    let r = rig(
        "[policy]\nretries = 0\n[policy.breaker]\nconsecutive_failures = 3\ncooldown = \"30s\"",
    );
    r.upstream.set("primary.test", Reply::status(500));
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("ok")));
    for _ in 0..3 {
        let got = r
            .call("/v1/chat/completions", &chat("chat", "x", false))
            .await;
        assert_eq!(got.status, 200);
    }
    assert_eq!(r.breaker_state("primary/gpt-4.1").await, "open");
    for _ in 0..5 {
        r.call("/v1/chat/completions", &chat("chat", "x", false))
            .await;
    }
    assert_eq!(
        r.upstream.calls("primary.test"),
        3,
        "an open breaker sends nothing"
    );
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("ok")));
    tokio::time::advance(Duration::from_secs(29)).await;
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(
        got.header("x-ballast-target"),
        "backup/gpt-4.1-mini",
        "still cooling down"
    );
    tokio::time::advance(Duration::from_secs(2)).await;
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(got.header("x-ballast-target"), "primary/gpt-4.1");
    assert_eq!(r.breaker_state("primary/gpt-4.1").await, "closed");
}

#[tokio::test(start_paused = true)]
async fn the_deadline_ends_a_slow_stream_and_a_hung_answer_on_time() {
    let r = rig("[policy]\ndeadline = \"500ms\"");
    let chunks = (0..50)
        .map(|i| {
            (
                Duration::from_millis(100),
                Bytes::from(chat_chunk(&format!("w{i} "))),
            )
        })
        .collect();
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks,
            hang: false,
        },
    );
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", true))
        .await;
    within(t0.elapsed(), Duration::from_millis(500));
    assert_eq!(got.status, 200);
    assert!(got.body.contains("w3 "), "{}", got.body);
    assert!(got.body.contains("deadline exceeded"), "{}", got.body);
    assert!(
        !got.body.contains("[DONE]"),
        "a cut answer is never presented as complete"
    );

    r.upstream.set("primary.test", Reply::Hang);
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    within(t0.elapsed(), Duration::from_millis(500));
    assert_eq!(got.status, 504);
}

#[tokio::test(start_paused = true)]
async fn a_stream_that_stalls_mid_answer_ends_after_the_idle_timeout() {
    let r = rig("[policy]\nidle_timeout = \"5s\"");
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks: vec![(MS, Bytes::from(chat_chunk("partial")))],
            hang: true,
        },
    );
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", true))
        .await;
    within(t0.elapsed(), Duration::from_secs(5) + MS);
    assert!(got.body.contains("partial"));
    assert!(got.body.contains("idle timeout"), "{}", got.body);
}

#[tokio::test(start_paused = true)]
async fn a_client_leaving_during_a_half_open_trial_does_not_lock_the_target_out() {
    let r =
        rig("[policy]\nretries = 0\n[policy.breaker]\nconsecutive_failures = 1\ncooldown = \"1s\"");
    r.upstream.set("primary.test", Reply::status(500));
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    assert_eq!(got.status, 500);
    assert_eq!(r.breaker_state("primary/gpt-4.1").await, "open");
    tokio::time::advance(Duration::from_millis(1100)).await;
    // The half-open trial hangs and its client gives up.
    r.upstream.set("primary.test", Reply::Hang);
    let gave_up = tokio::time::timeout(
        Duration::from_millis(200),
        r.call("/v1/chat/completions", &chat("solo", "x", false)),
    )
    .await;
    assert!(gave_up.is_err());
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("ok")));
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(r.breaker_state("primary/gpt-4.1").await, "closed");
}

#[tokio::test(start_paused = true)]
async fn an_exhausted_budget_reports_the_real_failure_at_once() {
    let r = rig(
        "[policy]\nretry_budget_ratio = 0.0\nretry_budget_min_per_second = 0.0\nbackoff_base = \"2s\"\nbackoff_cap = \"2s\"",
    );
    r.upstream.set("primary.test", Reply::status(529));
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("ok")));
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(
        t0.elapsed(),
        Duration::ZERO,
        "waited for a retry it could not pay for"
    );
    assert_eq!(got.status, 503);
    assert!(got.body.contains("retry budget"), "{}", got.body);
    assert_eq!(r.upstream.calls("primary.test"), 1);
    assert_eq!(r.upstream.calls("backup.test"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_saturated_gateway_sheds_load_at_once() {
    let r = rig("[server]\nmax_in_flight = 2");
    r.upstream.set("primary.test", Reply::Hang);
    let mut hanging = Vec::new();
    for _ in 0..2 {
        let r = r.clone();
        hanging.push(tokio::spawn(async move {
            r.call("/v1/chat/completions", &chat("solo", "x", false))
                .await
        }));
    }
    while r.upstream.calls("primary.test") < 2 {
        tokio::task::yield_now().await;
    }
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(got.status, 503);
    assert_eq!(got.header("retry-after"), "1");
    for h in hanging {
        h.abort();
    }
}

#[tokio::test(start_paused = true)]
async fn cache_on_also_serves_a_stale_answer_when_every_target_failed() {
    let r = rig("[routes.solo.policy]\ncache = \"on\"\ncache_ttl = \"1s\"");
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("remembered")));
    let got = r
        .call("/v1/chat/completions", &chat("solo", "q", false))
        .await;
    assert_eq!(got.header("x-ballast-cache"), "miss");
    let got = r
        .call("/v1/chat/completions", &chat("solo", "q", false))
        .await;
    assert_eq!(got.header("x-ballast-cache"), "hit");
    assert_eq!(r.upstream.calls("primary.test"), 1);
    tokio::time::advance(Duration::from_secs(2)).await;
    r.upstream.set("primary.test", Reply::Refused);
    let got = r
        .call("/v1/chat/completions", &chat("solo", "q", false))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ballast-cache"), "stale");
    assert!(got.body.contains("remembered"));
}

// ---------------------------------------------------------------------------------------------
// Hostile upstream bytes.

/// Regression (found on e1878d2): a tool-call index of 10^15 in a Chat Completions stream,
/// translated for a Messages client, made the decoder allocate 10^15 bytes and abort the process.
#[tokio::test(start_paused = true)]
async fn a_huge_tool_call_index_from_the_provider_cannot_abort_the_gateway() {
    let r = rig("[routes.tools]\ntargets = [\"primary/gpt-4.1\", \"backup/gpt-4.1-mini\"]");
    let hostile = format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 1_000_000_000_000_000u64,
                "id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{}"}}]},
                "finish_reason": null}]})
    );
    let end = format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
    );
    r.upstream
        .set("primary.test", Reply::stream(&[&hostile, &end]));
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("fine"), &chat_end()]),
    );
    let body = json!({"model": "tools", "max_tokens": 100, "stream": true,
        "tools": [{"name": "get_weather", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "weather?"}]});
    let got = r.call("/v1/messages", &body).await;
    assert_eq!(got.status, 200, "{}", got.body);
    // Either the call was mapped to a small block index, or the attempt failed over: both are whole
    // answers to the client.
    assert!(got.body.contains("message_stop"), "{}", got.body);
    assert!(!got.body.contains("1000000000000000"), "{}", got.body);
}

#[tokio::test(start_paused = true)]
async fn an_event_that_never_ends_is_cut_at_the_event_limit() {
    let r = rig("[limits]\nmax_event_bytes = \"64KiB\"");
    let mut chunks = vec![(MS, Bytes::from(chat_chunk("start ")))];
    chunks.push((
        MS,
        Bytes::from_static(b"data: {\"choices\":[{\"delta\":{\"content\":\""),
    ));
    // 1 MiB of an event that never ends, a KiB at a time.
    for _ in 0..1024 {
        chunks.push((Duration::ZERO, Bytes::from(vec![b'x'; 1024])));
    }
    r.upstream
        .set("primary.test", Reply::Stream { chunks, hang: true });
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", true))
        .await;
    assert_eq!(got.status, 200);
    assert!(got.body.contains("start "), "{}", got.body);
    assert!(got.body.contains("limits.max_event_bytes"), "{}", got.body);
    assert!(got.body.len() < 4096, "the oversized event was passed on");
    // The gateway is still serving.
    r.upstream
        .set("primary.test", Reply::Json(chat_answer("ok")));
    let got = r
        .call("/v1/chat/completions", &chat("solo", "x", false))
        .await;
    assert_eq!(got.status, 200);
}

#[tokio::test(start_paused = true)]
async fn a_translated_stream_with_an_oversized_event_ends_with_an_error() {
    let r =
        rig("[limits]\nmax_event_bytes = \"64KiB\"\n[routes.tr]\ntargets = [\"primary/gpt-4.1\"]");
    let big = format!(
        "data: {{\"id\":\"c\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "y".repeat(100 * 1024)
    );
    r.upstream.set(
        "primary.test",
        Reply::stream(&[&chat_chunk("start "), &big, &chat_end()]),
    );
    let body = json!({"model": "tr", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "x"}]});
    let got = r.call("/v1/messages", &body).await;
    assert!(got.body.contains("start "), "{}", got.body);
    assert!(got.body.contains("event: error"), "{}", got.body);
    assert!(!got.body.contains("yyyy"));
    assert!(!got.body.contains("message_stop"), "{}", got.body);
}

#[tokio::test(start_paused = true)]
async fn a_stream_without_a_first_token_within_its_byte_cap_falls_over() {
    let r = rig("[limits]\nmax_first_token_bytes = \"16KiB\"");
    // Keep-alive comments forever, never a token.
    let chunks = (0..1000)
        .map(|_| {
            (
                Duration::ZERO,
                Bytes::from(format!(": {}\n\n", "k".repeat(1000))),
            )
        })
        .collect();
    r.upstream
        .set("primary.test", Reply::Stream { chunks, hang: true });
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("from backup"), &chat_end()]),
    );
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    assert_eq!(t0.elapsed(), Duration::ZERO);
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
    assert!(got.body.contains("from backup"));
}

#[tokio::test(start_paused = true)]
async fn an_answer_over_its_byte_cap_falls_over() {
    let r = rig("[limits]\nmax_answer_bytes = \"64KiB\"");
    r.upstream.set(
        "primary.test",
        Reply::Json(chat_answer(&"z".repeat(100 * 1024))),
    );
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("small")));
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
    assert!(got.body.contains("small"));
}

// ---------------------------------------------------------------------------------------------
// count_tokens goes through the same admission as every other call.

#[tokio::test(start_paused = true)]
async fn count_tokens_failures_open_the_breaker_and_an_open_breaker_is_not_asked() {
    let r = rig(
        "[policy]\nretries = 0\n[policy.breaker]\nconsecutive_failures = 2\ncooldown = \"60s\"",
    );
    r.upstream.set("claude.test", Reply::status(500));
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "abcdefgh"}]});
    for _ in 0..2 {
        let got = r.call("/v1/messages/count_tokens", &body).await;
        assert_eq!(got.status, 200);
        assert_eq!(got.header("x-ballast-token-count"), "estimate");
    }
    assert_eq!(r.breaker_state("claude/claude-sonnet-4-5").await, "open");
    let got = r.call("/v1/messages/count_tokens", &body).await;
    assert_eq!(got.header("x-ballast-token-count"), "estimate");
    assert_eq!(
        r.upstream.calls("claude.test"),
        2,
        "an open breaker is not asked"
    );
}

#[tokio::test(start_paused = true)]
async fn count_tokens_from_the_provider_when_it_answers() {
    let r = rig("");
    r.upstream.set(
        "claude.test",
        Reply::Json(r#"{"input_tokens":42}"#.to_owned()),
    );
    let body = json!({"model": "claude", "messages": [{"role": "user", "content": "hi"}]});
    let got = r.call("/v1/messages/count_tokens", &body).await;
    assert_eq!(got.header("x-ballast-token-count"), "provider");
    assert!(got.body.contains("42"));
    let sent = r.upstream.requests("claude.test");
    assert_eq!(sent[0].url.path(), "/v1/messages/count_tokens");
    assert!(String::from_utf8_lossy(&sent[0].body).contains("claude-sonnet-4-5"));
}

#[tokio::test(start_paused = true)]
async fn a_trickled_answer_is_abandoned_at_the_response_timeout_and_falls_over() {
    let r = rig("[policy]\nresponse_timeout = \"2s\"\ndeadline = \"60s\"");
    // The whole answer, one byte a second.
    let chunks = chat_answer("slow")
        .into_bytes()
        .into_iter()
        .map(|b| (Duration::from_secs(1), Bytes::from(vec![b])))
        .collect();
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks,
            hang: false,
        },
    );
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("fast")));
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", false))
        .await;
    within(t0.elapsed(), Duration::from_secs(2));
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
    assert!(got.body.contains("fast"));
}

/// Each request's buffers are capped, and so is their sum: many large answers at once cannot
/// exhaust the gateway's memory. Past the budget an attempt fails as the gateway's own (its
/// target's breaker is not told) and the route falls over.
#[tokio::test(start_paused = true)]
async fn the_gateway_wide_buffer_budget_caps_many_large_answers_at_once() {
    let r = rig(
        "[limits]\nmax_answer_bytes = \"1MiB\"\nmax_buffered_bytes = \"1MiB\"\n[policy]\nretries = 0\n[policy.breaker]\nconsecutive_failures = 1",
    );
    // Answers of 300 KiB trickled in 10 KiB pieces, so several are being read at once.
    let answer = chat_answer(&"q".repeat(300 * 1024));
    let chunks: Vec<(Duration, Bytes)> = answer
        .as_bytes()
        .chunks(10 * 1024)
        .map(|c| (MS, Bytes::copy_from_slice(c)))
        .collect();
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks,
            hang: false,
        },
    );
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("small")));
    let mut calls = Vec::new();
    for _ in 0..8 {
        let r = r.clone();
        calls.push(tokio::spawn(async move {
            r.call("/v1/chat/completions", &chat("chat", "x", false))
                .await
        }));
    }
    let mut from_backup = 0;
    for c in calls {
        let got = c.await.unwrap();
        assert_eq!(got.status, 200, "{}", got.body);
        if got.header("x-ballast-target") == "backup/gpt-4.1-mini" {
            from_backup += 1;
        }
    }
    // At most three 300 KiB answers fit in 1 MiB at once: the rest fell over.
    assert!(from_backup >= 5, "only {from_backup} of 8 fell over");
    assert_eq!(
        r.breaker_state("primary/gpt-4.1").await,
        "closed",
        "the gateway's own limit is not the provider's failure"
    );
    let v = r.admin("/admin/targets").await;
    assert_eq!(v["buffered_bytes"], 0, "every reservation was released");
}

/// A Gemini client's tool call is held until complete (Gemini streams whole calls): its arguments
/// are capped by `limits.max_tool_args_bytes`, and a provider that exceeds it ends the stream with an
/// error rather than growing the buffer.
#[tokio::test(start_paused = true)]
async fn tool_call_arguments_past_their_cap_end_the_stream_with_an_error() {
    let r = rig(
        "[limits]\nmax_tool_args_bytes = \"16KiB\"\n[routes.gem]\ntargets = [\"primary/gpt-4.1\"]",
    );
    let tool_chunk = |args: &str| {
        format!(
            "data: {}\n\n",
            json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
                "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_1", "type": "function",
                    "function": {"name": "get_weather", "arguments": args}}]}, "finish_reason": null}]})
        )
    };
    let mut chunks: Vec<(Duration, Bytes)> = vec![(MS, Bytes::from(tool_chunk("{\"city\":\"")))];
    for _ in 0..64 {
        chunks.push((Duration::ZERO, Bytes::from(tool_chunk(&"p".repeat(1024)))));
    }
    chunks.push((Duration::ZERO, Bytes::from(tool_chunk("\"}"))));
    chunks.push((Duration::ZERO, Bytes::from(chat_end())));
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks,
            hang: false,
        },
    );
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "weather?"}]}],
        "tools": [{"functionDeclarations": [{"name": "get_weather", "parameters": {"type": "object"}}]}]});
    let got = r
        .call("/v1beta/models/gem:streamGenerateContent?alt=sse", &body)
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert!(got.body.contains("\"error\""), "{}", got.body);
    assert!(
        !got.body.contains("pppppppp"),
        "a partial call reached the client"
    );
}

/// OpenAI streams open with a role chunk (`"content": ""`). A provider that sends it and then
/// nothing has sent no token: the stream is still held back and falls over at the first-token
/// timeout, instead of being committed and cut at the idle timeout.
#[tokio::test(start_paused = true)]
async fn a_role_chunk_alone_is_not_a_first_token() {
    let r = rig("[policy]\nfirst_token_timeout = \"5s\"\nidle_timeout = \"60s\"");
    let role = format!(
        "data: {}\n\n",
        json!({"id": "c", "object": "chat.completion.chunk", "created": 1, "model": "m",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]})
    );
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks: vec![(MS, Bytes::from(role))],
            hang: true,
        },
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("from backup"), &chat_end()]),
    );
    let t0 = Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    within(t0.elapsed(), Duration::from_secs(5));
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
    assert!(got.body.contains("from backup") && got.body.contains("[DONE]"));
}

/// The first token is the first content: a provider that opens its stream (`message_start`, an
/// empty text block, a ping) and then falls silent is abandoned under the first-token timeout,
/// before anything is committed, and the route falls over.
#[tokio::test(start_paused = true)]
async fn a_stream_that_opens_and_falls_silent_falls_over_before_its_first_token() {
    let r = rig("[policy]\nretries = 0\nfirst_token_timeout = \"2s\"\n");
    let opening = [
        "event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_1\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"claude-sonnet-4-5\",\"content\":[],\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":5,\"output_tokens\":1}}}\n\n",
        "event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
        "event: ping\ndata: {\"type\":\"ping\"}\n\n",
    ];
    r.upstream.set(
        "claude.test",
        Reply::Stream {
            chunks: opening
                .iter()
                .map(|c| (Duration::ZERO, Bytes::from_static(c.as_bytes())))
                .collect(),
            hang: true,
        },
    );
    r.upstream.script("backup.test", |_, _| {
        Reply::stream(&[&chat_chunk("from the backup"), &chat_end()])
    });
    let body = serde_json::json!({"model": "claude", "max_tokens": 64, "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let got = r.call("/v1/messages", &body).await;
    assert_eq!(got.status, 200, "{}", got.body);
    assert_eq!(
        got.header("x-ballast-target"),
        "backup/gpt-4.1-mini",
        "{}",
        got.body
    );
    assert!(got.body.contains("from the backup"), "{}", got.body);
    assert!(got.body.contains("message_stop"), "{}", got.body);
}
