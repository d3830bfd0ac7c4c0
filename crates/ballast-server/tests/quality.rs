//! Output-quality detectors on live answers: answers that loop, JSON answers that are not JSON, a
//! rise in answers cut by the token limit, and a shift in answer length each open an incident on
//! their target — from counts read in passing, never the text — while ordinary answers, tool calls
//! and answers nobody asked to be JSON do not. Looping and broken-JSON answers eject the target.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scripted::{Reply, Rig, chat, chat_chunk, rig};
use serde_json::{Value, json};

const WORDS: [&str; 24] = [
    "river", "stone", "lantern", "harvest", "copper", "meadow", "signal", "orbit", "velvet",
    "thunder", "garden", "compass", "marble", "feather", "canyon", "ember", "glacier", "harbor",
    "island", "jasmine", "kettle", "ladder", "mirror", "needle",
];

/// An ordinary answer of about `words` words that never loops (a different walk through the word
/// list for each `seed`).
fn prose(seed: u64, words: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..words)
        .map(|_| WORDS[rng.usize(..WORDS.len())])
        .collect::<Vec<_>>()
        .join(" ")
}

fn answer(text: &str, finish: &str) -> String {
    json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 20, "total_tokens": 23}
    })
    .to_string()
}

/// The closing chunks of a stream that ends with `finish`.
fn end(finish: &str) -> String {
    format!(
        "data: {}\n\ndata: [DONE]\n\n",
        json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4.1",
            "choices": [{"index": 0, "delta": {}, "finish_reason": finish}]})
    )
}

/// Replies with `text` ending in `finish`, streamed in word-sized chunks when asked to stream.
fn reply(req_body: &[u8], text: &str, finish: &str) -> Reply {
    if String::from_utf8_lossy(req_body).contains("\"stream\":true") {
        let mut chunks: Vec<String> = text.split_inclusive(' ').map(chat_chunk).collect();
        chunks.push(end(finish));
        let refs: Vec<&str> = chunks.iter().map(String::as_str).collect();
        Reply::stream(&refs)
    } else {
        Reply::Json(answer(text, finish))
    }
}

/// Sends `n` requests (alternating whole and streamed); returns after which one an incident with
/// `signal` was first listed, if any.
async fn until_incident(
    r: &Rig,
    signal: &str,
    n: usize,
    body: impl Fn(usize) -> Value,
) -> Option<usize> {
    for i in 1..=n {
        let got = r.call("/v1/chat/completions", &body(i)).await;
        assert_eq!(got.status, 200, "{}", got.body);
        let v = r.admin("/admin/incidents").await;
        if v["incidents"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["signal"] == signal && x["state"] == "open")
        {
            return Some(i);
        }
    }
    None
}

async fn incidents(r: &Rig) -> Vec<Value> {
    r.admin("/admin/incidents").await["incidents"]
        .as_array()
        .unwrap()
        .clone()
}

const QUIET: &str = "[signal]\neject = false\n[probes]\ninterval = \"0s\"\n";

#[tokio::test(start_paused = true)]
async fn answers_that_loop_open_a_repetition_incident() {
    let r = rig(QUIET);
    r.upstream.script("primary.test", |req, n| {
        let words = 30 + (n as usize * 7) % 60;
        reply(&req.body, &prose(n, words), "stop")
    });
    let warm = until_incident(&r, "repetition", 300, |i| {
        chat("solo", "tell me", i.is_multiple_of(2))
    })
    .await;
    assert_eq!(
        warm,
        None,
        "ordinary answers opened {:?}",
        incidents(&r).await
    );
    // One answer in ten loops: a sane opening, then one phrase until the end.
    r.upstream.script("primary.test", |req, n| {
        let text = if n.is_multiple_of(10) {
            format!("{} {}", prose(n, 12), "over and over again ".repeat(40))
        } else {
            prose(n, 30 + (n as usize * 7) % 60)
        };
        reply(&req.body, &text, "stop")
    });
    let n = until_incident(&r, "repetition", 400, |i| {
        chat("solo", "tell me", i.is_multiple_of(2))
    })
    .await
    .expect("no repetition incident");
    assert!(n <= 250, "took {n} answers");
    let listed = incidents(&r).await;
    let inc = listed.iter().find(|x| x["signal"] == "repetition").unwrap();
    assert_eq!(inc["severity"], "critical");
    assert!(
        inc["evidence_now"]["observed"].as_f64().unwrap() > 0.0,
        "{inc}"
    );
}

#[tokio::test(start_paused = true)]
async fn json_answers_that_are_not_json_open_an_invalid_json_incident() {
    let r = rig(QUIET);
    let asks_json = |i: usize| {
        let mut b = chat("solo", "give me json", i.is_multiple_of(2));
        b["response_format"] = json!({"type": "json_object"});
        b
    };
    // Prose to requests that did not ask for JSON, and valid JSON to those that did: no incident.
    r.upstream.script("primary.test", |req, n| {
        let text = if String::from_utf8_lossy(&req.body).contains("json_object") {
            json!({"answer": prose(n, 12), "n": n}).to_string()
        } else {
            prose(n, 20)
        };
        reply(&req.body, &text, "stop")
    });
    let warm = until_incident(&r, "invalid_json", 300, |i| {
        if i.is_multiple_of(3) {
            chat("solo", "prose", i.is_multiple_of(2))
        } else {
            asks_json(i)
        }
    })
    .await;
    assert_eq!(warm, None, "{:?}", incidents(&r).await);
    // One JSON answer in ten is cut mid-object (yet reports a natural stop).
    r.upstream.script("primary.test", |req, n| {
        let full = json!({"answer": prose(n, 12), "n": n}).to_string();
        let text = if n.is_multiple_of(10) {
            full[..full.len() / 2].to_owned()
        } else {
            full
        };
        reply(&req.body, &text, "stop")
    });
    let n = until_incident(&r, "invalid_json", 400, asks_json)
        .await
        .expect("no invalid_json incident");
    assert!(n <= 250, "took {n} answers");
}

#[tokio::test(start_paused = true)]
async fn more_answers_cut_by_the_token_limit_open_a_stop_reason_incident() {
    let r = rig(QUIET);
    // A few percent of answers hit the limit normally.
    r.upstream.script("primary.test", |req, n| {
        let finish = if n.is_multiple_of(33) {
            "length"
        } else {
            "stop"
        };
        reply(&req.body, &prose(n, 20), finish)
    });
    let warm = until_incident(&r, "stop_reason", 400, |i| {
        chat("solo", "x", i.is_multiple_of(2))
    })
    .await;
    assert_eq!(warm, None, "{:?}", incidents(&r).await);
    r.upstream.script("primary.test", |req, n| {
        let finish = if n.is_multiple_of(3) {
            "length"
        } else {
            "stop"
        };
        reply(&req.body, &prose(n, 20), finish)
    });
    let n = until_incident(&r, "stop_reason", 400, |i| {
        chat("solo", "x", i.is_multiple_of(2))
    })
    .await
    .expect("no stop_reason incident");
    assert!(n <= 200, "took {n} answers");
    let listed = incidents(&r).await;
    let inc = listed
        .iter()
        .find(|x| x["signal"] == "stop_reason")
        .unwrap();
    assert_eq!(inc["severity"], "warning");
}

#[tokio::test(start_paused = true)]
async fn answers_much_shorter_than_normal_open_an_answer_length_incident() {
    let r = rig(QUIET);
    r.upstream.script("primary.test", |req, n| {
        reply(&req.body, &prose(n, 40 + (n as usize * 13) % 80), "stop")
    });
    let warm = until_incident(&r, "answer_length", 400, |i| {
        chat("solo", "x", i.is_multiple_of(2))
    })
    .await;
    assert_eq!(warm, None, "{:?}", incidents(&r).await);
    // A sampler that ends every answer after a word or two, with a natural stop.
    r.upstream.script("primary.test", |req, n| {
        reply(&req.body, &prose(n, 2), "stop")
    });
    let n = until_incident(&r, "answer_length", 400, |i| {
        chat("solo", "x", i.is_multiple_of(2))
    })
    .await
    .expect("no answer_length incident");
    assert!(n <= 100, "took {n} answers");
}

#[tokio::test(start_paused = true)]
async fn a_looping_target_is_ejected_while_its_backup_serves() {
    let r = rig("[probes]\ninterval = \"0s\"\n");
    r.upstream.script("backup.test", |req, n| {
        reply(&req.body, &prose(n, 30), "stop")
    });
    r.upstream.script("primary.test", |req, n| {
        let text = if n > 300 && n.is_multiple_of(5) {
            "again and again ".repeat(60)
        } else {
            prose(n, 30)
        };
        reply(&req.body, &text, "stop")
    });
    let mut by_target = std::collections::HashMap::<String, u32>::new();
    let mut opened_at = None;
    for i in 1..=700usize {
        let got = r
            .call(
                "/v1/chat/completions",
                &chat("chat", "x", i.is_multiple_of(2)),
            )
            .await;
        assert_eq!(got.status, 200);
        if opened_at.is_some() {
            *by_target
                .entry(got.header("x-ballast-target").to_owned())
                .or_default() += 1;
        } else if incidents(&r)
            .await
            .iter()
            .any(|x| x["signal"] == "repetition")
        {
            opened_at = Some(i);
        }
    }
    assert!(opened_at.is_some(), "no repetition incident");
    let backup = by_target.get("backup/gpt-4.1-mini").copied().unwrap_or(0);
    let primary = by_target.get("primary/gpt-4.1").copied().unwrap_or(0);
    assert!(backup > primary * 5, "not routed around: {by_target:?}");
}

#[tokio::test(start_paused = true)]
async fn answers_that_only_call_a_tool_are_not_empty_answers_whatever_their_stop_reason() {
    let r = rig(QUIET);
    // A Chat answer that only calls a tool, ending "stop" as some providers do.
    let tool_only = json!({
        "id": "chatcmpl-1", "object": "chat.completion", "created": 1, "model": "gpt-4.1",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": null,
            "tool_calls": [{"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            "finish_reason": "stop"}]
    })
    .to_string();
    r.upstream.set("primary.test", Reply::Json(tool_only));
    for i in 0..300 {
        let got = r
            .call("/v1/chat/completions", &chat("solo", "x", false))
            .await;
        assert_eq!(got.status, 200, "{i}: {}", got.body);
    }
    assert!(incidents(&r).await.is_empty(), "{:?}", incidents(&r).await);
}
