//! A stream that breaks after part of its answer reached the client is continued on the route's next
//! target: the client's SDK sees one answer, in its own format, under the same ids, with one normal
//! end — whether the stream was cut, stalled, or ended by the provider's error event; whether the
//! fallback takes an assistant prefill, refuses it, or needs an instruction; and whatever the
//! fallback repeats. A cut inside a tool call never leaves the client with half a call.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::scripted::{Reply, chat, chat_chunk, chat_end, rig};
use serde_json::{Value, json};

/// The JSON data of every SSE event in `body` (`[DONE]` as a string).
fn events(body: &str) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    let body = body.replace("\r\n", "\n");
    for block in body.split("\n\n") {
        let mut name = String::new();
        let mut data = String::new();
        for line in block.lines() {
            if let Some(v) = line.strip_prefix("event: ") {
                name = v.to_owned();
            } else if let Some(v) = line.strip_prefix("data: ") {
                data.push_str(v);
            }
        }
        if data.is_empty() {
            continue;
        }
        let v = serde_json::from_str(&data).unwrap_or(Value::String(data));
        out.push((name, v));
    }
    out
}

/// The text of a Chat Completions stream, and whether it ended with `[DONE]` after a finish reason.
fn chat_text(body: &str) -> (String, bool) {
    let evs = events(body);
    let text = evs
        .iter()
        .filter_map(|(_, v)| v.pointer("/choices/0/delta/content")?.as_str())
        .collect();
    let finished = evs.iter().any(|(_, v)| {
        v.pointer("/choices/0/finish_reason")
            .is_some_and(Value::is_string)
    });
    let done = evs.last().is_some_and(|(_, v)| v == "[DONE]");
    (text, finished && done)
}

/// The last message of the upstream request: (role, text).
fn last_message(body: &Bytes) -> (String, String) {
    let v: Value = serde_json::from_slice(body).unwrap();
    let m = v["messages"].as_array().unwrap().last().unwrap().clone();
    let text = match &m["content"] {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<String>(),
        _ => String::new(),
    };
    (m["role"].as_str().unwrap().to_owned(), text)
}

fn anthropic_text_chunks(id: &str, texts: &[&str]) -> String {
    let mut s = format!(
        "event: message_start\ndata: {}\n\n",
        json!({"type": "message_start", "message": {"id": id, "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 12, "output_tokens": 1}}})
    );
    s.push_str(&format!(
        "event: content_block_start\ndata: {}\n\n",
        json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}})
    ));
    for t in texts {
        s.push_str(&format!(
            "event: content_block_delta\ndata: {}\n\n",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": t}})
        ));
    }
    s
}

fn anthropic_end() -> String {
    format!(
        "event: content_block_stop\ndata: {}\n\nevent: message_delta\ndata: {}\n\nevent: message_stop\ndata: {}\n\n",
        json!({"type": "content_block_stop", "index": 0}),
        json!({"type": "message_delta", "delta": {"stop_reason": "end_turn", "stop_sequence": null}, "usage": {"output_tokens": 9}}),
        json!({"type": "message_stop"}),
    )
}

#[tokio::test(start_paused = true)]
async fn a_cut_chat_stream_is_continued_on_the_fallback_as_one_answer() {
    let r = rig("");
    r.upstream.set(
        "primary.test",
        Reply::cut(&[&chat_chunk("The quick "), &chat_chunk("brown fox ")]),
    );
    r.upstream.script("backup.test", |req, _| {
        // OpenAI continues no prefill: the delivered text, then an instruction to continue.
        let (role, text) = last_message(&req.body);
        assert_eq!(role, "user");
        assert!(text.contains("Continue"), "{text}");
        Reply::stream(&[
            &chat_chunk(" jumps over"),
            &chat_chunk(" the lazy dog."),
            &chat_end(),
        ])
    });
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    assert_eq!(got.status, 200);
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "The quick brown fox jumps over the lazy dog.");
    assert!(complete, "{}", got.body);
    assert!(!got.body.contains("error"), "{}", got.body);
    // One stream, one id: the continuation's chunks carry the primary's id.
    let ids: std::collections::HashSet<String> = events(&got.body)
        .iter()
        .filter_map(|(_, v)| v.get("id")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    let backup = r.upstream.requests("backup.test");
    assert_eq!(backup.len(), 1);
    let sent: Value = serde_json::from_slice(&backup[0].body).unwrap();
    let messages = sent["messages"].as_array().unwrap();
    assert_eq!(messages[messages.len() - 2]["role"], "assistant");
    assert_eq!(
        messages[messages.len() - 2]["content"],
        "The quick brown fox"
    );
    let (_, metrics) = r.get_text("/metrics").await;
    assert!(
        metrics
            .contains("ballast_stream_continuations_total{route=\"chat\",result=\"continued\"} 1"),
        "{metrics}"
    );
}

#[tokio::test(start_paused = true)]
async fn an_anthropic_stream_cut_mid_answer_continues_translated_under_the_same_message() {
    let r = rig("");
    r.upstream.set(
        "claude.test",
        Reply::cut(&[&anthropic_text_chunks(
            "msg_orig",
            &["Once upon ", "a time"],
        )]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk(", there was a fox."), &chat_end()]),
    );
    let body = json!({"model": "claude", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "tell me"}]});
    let got = r
        .call_with(
            "/v1/messages",
            &body,
            &[("anthropic-version", "2023-06-01")],
        )
        .await;
    assert_eq!(got.status, 200);
    let evs = events(&got.body);
    let names: Vec<&str> = evs.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names.iter().filter(|n| **n == "message_start").count(),
        1,
        "{names:?}"
    );
    assert_eq!(names.last(), Some(&"message_stop"), "{names:?}");
    assert!(!names.contains(&"error"), "{}", got.body);
    // The text continues in the open block 0.
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "content_block_delta")
        .map(|(_, v)| {
            assert_eq!(v["index"], 0);
            v["delta"]["text"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Once upon a time, there was a fox.");
    let starts = evs
        .iter()
        .filter(|(n, _)| n == "content_block_start")
        .count();
    let stops = evs
        .iter()
        .filter(|(n, _)| n == "content_block_stop")
        .count();
    assert_eq!((starts, stops), (1, 1), "{names:?}");
    let delta = evs.iter().find(|(n, _)| n == "message_delta").unwrap();
    assert_eq!(delta.1["delta"]["stop_reason"], "end_turn");
}

#[tokio::test(start_paused = true)]
async fn a_fallback_that_refuses_the_prefill_is_asked_again_with_an_instruction() {
    let r = rig(r#"
        [providers.claude2]
        kind = "anthropic"
        base_url = "http://claude2.test"
        api_key = "k"
        [routes.mixed]
        targets = ["primary/gpt-4.1", "claude2/claude-sonnet-4-5"]
        "#);
    r.upstream.set(
        "primary.test",
        Reply::cut(&[&chat_chunk("Roses are red, ")]),
    );
    r.upstream.script("claude2.test", |req, _| {
        let (role, _) = last_message(&req.body);
        if role == "assistant" {
            return Reply::Status {
                status: 400,
                retry_after: None,
                body: r#"{"type":"error","error":{"type":"invalid_request_error","message":"This model does not support assistant message prefill. The conversation must end with a user message."}}"#,
            };
        }
        Reply::stream(&[&format!(
            "{}{}",
            anthropic_text_chunks("msg_2", &["violets are blue."]),
            anthropic_end()
        )])
    });
    let got = r
        .call("/v1/chat/completions", &chat("mixed", "x", true))
        .await;
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "Roses are red, violets are blue.");
    assert!(complete, "{}", got.body);
    assert!(
        !got.body.contains("prefill"),
        "the refusal reached the client"
    );
    let tries = r.upstream.requests("claude2.test");
    assert_eq!(tries.len(), 2);
    assert_eq!(last_message(&tries[0].body).0, "assistant");
    assert_eq!(
        last_message(&tries[0].body).1,
        "Roses are red,",
        "a prefill never ends in whitespace"
    );
    assert_eq!(last_message(&tries[1].body).0, "user");
}

#[tokio::test(start_paused = true)]
async fn text_the_fallback_repeats_is_not_sent_twice() {
    let r = rig("");
    r.upstream.set(
        "primary.test",
        Reply::cut(&[
            &chat_chunk("First line of the answer. "),
            &chat_chunk("Second li"),
        ]),
    );
    // The fallback starts the answer over.
    r.upstream.set(
        "backup.test",
        Reply::stream(&[
            &chat_chunk("First line of the answer. Second line"),
            &chat_chunk(" and the rest."),
            &chat_end(),
        ]),
    );
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "First line of the answer. Second line and the rest.");
    assert!(complete);
}

#[tokio::test(start_paused = true)]
async fn a_stall_mid_answer_is_continued_after_the_idle_timeout() {
    let r = rig("[policy]\nidle_timeout = \"5s\"");
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks: vec![(Duration::ZERO, Bytes::from(chat_chunk("Half ")))],
            hang: true,
        },
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("and half."), &chat_end()]),
    );
    let t0 = tokio::time::Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    assert_eq!(t0.elapsed(), Duration::from_secs(5));
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "Half and half.");
    assert!(complete);
}

#[tokio::test(start_paused = true)]
async fn the_providers_error_event_is_not_passed_on_when_the_answer_continues() {
    let r = rig("");
    let err = format!(
        "event: error\ndata: {}\n\n",
        json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}})
    );
    r.upstream.set(
        "claude.test",
        Reply::stream(&[&anthropic_text_chunks("msg_e", &["Alpha "]), &err]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("beta."), &chat_end()]),
    );
    let body = json!({"model": "claude", "max_tokens": 100, "stream": true,
        "messages": [{"role": "user", "content": "go"}]});
    let got = r.call("/v1/messages", &body).await;
    assert!(!got.body.contains("Overloaded"), "{}", got.body);
    let text: String = events(&got.body)
        .iter()
        .filter_map(|(_, v)| v.pointer("/delta/text")?.as_str().map(str::to_owned))
        .collect();
    assert_eq!(text, "Alpha beta.");
    assert!(got.body.contains("message_stop"));
}

#[tokio::test(start_paused = true)]
async fn a_cut_inside_a_tool_call_yields_one_whole_call() {
    let r = rig("");
    let call_start = format!(
        "data: {}\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_a", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"ci"}}]}, "finish_reason": null}]})
    );
    r.upstream.set(
        "primary.test",
        Reply::cut(&[&chat_chunk("Checking. "), &call_start]),
    );
    let whole = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": "call_b", "type": "function",
            "function": {"name": "get_weather", "arguments": "{\"city\":\"Oslo\"}"}}]}, "finish_reason": null}]}),
        json!({"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1-mini",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}),
    );
    r.upstream.set("backup.test", Reply::stream(&[&whole]));
    let mut req = chat("chat", "weather in Oslo?", true);
    req["tools"] = json!([{"type": "function", "function": {"name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    let got = r.call("/v1/chat/completions", &req).await;
    let evs = events(&got.body);
    let calls: Vec<&Value> = evs
        .iter()
        .filter_map(|(_, v)| v.pointer("/choices/0/delta/tool_calls"))
        .collect();
    let ids: Vec<&str> = calls
        .iter()
        .flat_map(|c| c.as_array().unwrap())
        .filter_map(|c| c["id"].as_str())
        .collect();
    assert_eq!(
        ids.len(),
        1,
        "exactly one call reached the client: {}",
        got.body
    );
    let args: String = calls
        .iter()
        .flat_map(|c| c.as_array().unwrap())
        .filter_map(|c| c.pointer("/function/arguments")?.as_str())
        .collect();
    let parsed: Value = serde_json::from_str(&args).expect("whole JSON arguments");
    assert_eq!(parsed["city"], "Oslo");
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "Checking. ");
    assert!(complete, "{}", got.body);
}

#[tokio::test(start_paused = true)]
async fn without_a_fallback_or_with_recovery_off_the_client_gets_a_clean_error() {
    for (route, extra) in [
        ("solo", ""),
        ("chat", "[policy]\nstream_recovery = \"off\""),
    ] {
        let r = rig(extra);
        r.upstream
            .set("primary.test", Reply::cut(&[&chat_chunk("partial ")]));
        r.upstream.set(
            "backup.test",
            Reply::stream(&[&chat_chunk("rest"), &chat_end()]),
        );
        let got = r
            .call("/v1/chat/completions", &chat(route, "x", true))
            .await;
        assert!(got.body.contains("partial"), "{}", got.body);
        assert!(got.body.contains("error"), "{route}: {}", got.body);
        assert!(!got.body.contains("[DONE]"), "{}", got.body);
        assert!(!got.body.contains("rest"), "{}", got.body);
        if route == "solo" {
            let (_, metrics) = r.get_text("/metrics").await;
            assert!(
                metrics.contains(
                    "ballast_stream_continuations_total{route=\"solo\",result=\"failed\"} 1"
                ),
                "{metrics}"
            );
        }
    }
}

#[tokio::test(start_paused = true)]
async fn complete_or_nothing_falls_over_a_broken_stream_before_the_client_sees_any_of_it() {
    let r = rig("[routes.chat.policy]\nstream_recovery = \"complete\"");
    r.upstream.set(
        "primary.test",
        Reply::cut(&[&chat_chunk("Broken "), &chat_chunk("answer")]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("Whole "), &chat_chunk("answer."), &chat_end()]),
    );
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ballast-target"), "backup/gpt-4.1-mini");
    let (text, complete) = chat_text(&got.body);
    assert_eq!(text, "Whole answer.");
    assert!(complete);
    // The backup was asked the original request, not a continuation.
    let (role, _) = last_message(&r.upstream.requests("backup.test")[0].body);
    assert_eq!(role, "user");
    assert_eq!(r.upstream.requests("backup.test").len(), 1);

    // A stream that stalls after its first token is abandoned at the idle timeout, whole.
    let r = rig("[policy]\nstream_recovery = \"complete\"\nidle_timeout = \"3s\"");
    r.upstream.set(
        "primary.test",
        Reply::Stream {
            chunks: vec![(Duration::ZERO, Bytes::from(chat_chunk("Stalled ")))],
            hang: true,
        },
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("Fine."), &chat_end()]),
    );
    let t0 = tokio::time::Instant::now();
    let got = r
        .call("/v1/chat/completions", &chat("chat", "x", true))
        .await;
    assert_eq!(t0.elapsed(), Duration::from_secs(3));
    assert_eq!(chat_text(&got.body), ("Fine.".to_owned(), true));
}

const MORE_PROVIDERS: &str = r#"
[providers.resp]
kind = "openai"
api = "responses"
base_url = "http://resp.test/v1"
api_key = "k"
[providers.gem]
kind = "gemini"
base_url = "http://gem.test"
api_key = "k"
[routes.r-same]
targets = ["resp/gpt-5.1", "backup/gpt-4.1-mini"]
[routes.g-same]
targets = ["gem/gemini-2.5-flash", "backup/gpt-4.1-mini"]
"#;

fn responses_chunks(texts: &[&str]) -> String {
    let mut seq = 0u64;
    let mut ev = |name: &str, mut v: Value| {
        v["type"] = json!(name);
        v["sequence_number"] = json!(seq);
        seq += 1;
        format!("event: {name}\ndata: {v}\n\n")
    };
    let resp = json!({"id": "resp_orig", "object": "response", "created_at": 5, "status": "in_progress",
        "model": "gpt-5.1", "output": []});
    let mut s = ev("response.created", json!({"response": resp}));
    s.push_str(&ev("response.in_progress", json!({"response": resp})));
    s.push_str(&ev(
        "response.output_item.added",
        json!({"output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
    ));
    s.push_str(&ev(
        "response.output_item.done",
        json!({"output_index": 0, "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
    ));
    s.push_str(&ev(
        "response.output_item.added",
        json!({"output_index": 1, "item": {"type": "message", "id": "msg_orig", "status": "in_progress", "role": "assistant", "content": []}}),
    ));
    s.push_str(&ev(
        "response.content_part.added",
        json!({"item_id": "msg_orig", "output_index": 1, "content_index": 0, "part": {"type": "output_text", "text": "", "annotations": []}}),
    ));
    for t in texts {
        s.push_str(&ev(
            "response.output_text.delta",
            json!({"item_id": "msg_orig", "output_index": 1, "content_index": 0, "delta": t, "logprobs": []}),
        ));
    }
    s
}

#[tokio::test(start_paused = true)]
async fn a_responses_stream_is_continued_with_its_items_ids_and_sequence_numbers() {
    let r = rig(MORE_PROVIDERS);
    r.upstream.set(
        "resp.test",
        Reply::cut(&[&responses_chunks(&["Hello ", "wor"])]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("ld, again."), &chat_end()]),
    );
    let body = json!({"model": "r-same", "stream": true, "input": "hi", "store": false});
    let got = r.call("/v1/responses", &body).await;
    assert_eq!(got.status, 200);
    let evs = events(&got.body);
    let seqs: Vec<u64> = evs
        .iter()
        .map(|(_, v)| v["sequence_number"].as_u64().unwrap())
        .collect();
    assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
    let text: String = evs
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, v)| {
            assert_eq!(v["item_id"], "msg_orig");
            assert_eq!(v["output_index"], 1);
            v["delta"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(text, "Hello world, again.");
    let (last, done) = evs.last().unwrap();
    assert_eq!(last, "response.completed", "{}", got.body);
    assert_eq!(done["response"]["id"], "resp_orig");
    let output = done["response"]["output"].as_array().unwrap();
    assert_eq!(output.len(), 2, "{output:?}");
    assert_eq!(output[0]["type"], "reasoning");
    assert_eq!(output[1]["id"], "msg_orig");
    assert_eq!(output[1]["content"][0]["text"], "Hello world, again.");
    let text_done = evs
        .iter()
        .find(|(n, _)| n == "response.output_text.done")
        .unwrap();
    assert_eq!(text_done.1["text"], "Hello world, again.");
}

#[tokio::test(start_paused = true)]
async fn a_responses_client_served_by_translation_is_continued_too() {
    let r = rig("");
    r.upstream.set(
        "primary.test",
        Reply::cut(&[&chat_chunk("One, "), &chat_chunk("two, ")]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("three."), &chat_end()]),
    );
    let body = json!({"model": "chat", "stream": true, "input": "count", "store": false});
    let got = r.call("/v1/responses", &body).await;
    let evs = events(&got.body);
    let (last, done) = evs.last().unwrap();
    assert_eq!(last, "response.completed", "{}", got.body);
    assert_eq!(
        done["response"]["output"][0]["content"][0]["text"],
        "One, two, three."
    );
    let created: Vec<&Value> = evs
        .iter()
        .filter(|(n, _)| n == "response.created")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(created.len(), 1);
    assert_eq!(created[0]["response"]["id"], done["response"]["id"]);
}

fn gemini_chunk(text: &str) -> String {
    format!(
        "data: {}\r\n\r\n",
        json!({"candidates": [{"content": {"parts": [{"text": text}], "role": "model"}, "index": 0}],
            "modelVersion": "gemini-2.5-flash", "responseId": "gem-orig"})
    )
}

#[tokio::test(start_paused = true)]
async fn a_gemini_stream_is_continued_under_its_response_id() {
    let r = rig(MORE_PROVIDERS);
    r.upstream.set(
        "gem.test",
        Reply::cut(&[&gemini_chunk("Sky is "), &gemini_chunk("bl")]),
    );
    r.upstream.set(
        "backup.test",
        Reply::stream(&[&chat_chunk("ue today."), &chat_end()]),
    );
    let body = json!({"contents": [{"role": "user", "parts": [{"text": "sky?"}]}]});
    let got = r
        .call("/v1beta/models/g-same:streamGenerateContent?alt=sse", &body)
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let evs = events(&got.body);
    let text: String = evs
        .iter()
        .filter_map(|(_, v)| v.pointer("/candidates/0/content/parts/0/text")?.as_str())
        .collect();
    assert_eq!(text, "Sky is blue today.");
    for (_, v) in &evs {
        assert_eq!(v["responseId"], "gem-orig", "{v}");
    }
    let last = &evs.last().unwrap().1;
    assert_eq!(last.pointer("/candidates/0/finishReason").unwrap(), "STOP");
}
