//! Rate-limit headers: OpenAI's and Anthropic's on their answers (none on Gemini's), buckets
//! charged by every answer, limits changed and enforced at run time over `/_sim/limits`.

use std::time::{SystemTime, UNIX_EPOCH};

use ballast_sim::{Limits, SimConfig, SimHandle};
use reqwest::header::HeaderMap;
use serde_json::{Value, json};

use crate::{client, read_stream, sim};

/// A day-long window: nothing refills during a test, so every count is exact.
const DAY_MS: u64 = 86_400_000;

async fn sim_with(limits: Limits) -> SimHandle {
    sim(SimConfig {
        limits,
        ..SimConfig::default()
    })
    .await
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> &'a str {
    h.get(name)
        .unwrap_or_else(|| panic!("no {name} in {h:?}"))
        .to_str()
        .unwrap()
}

fn number(h: &HeaderMap, name: &str) -> u64 {
    header(h, name).parse().unwrap()
}

/// `2025-08-21T12:40:59Z` as Unix seconds.
fn unix_time(rfc3339: &str) -> u64 {
    assert_eq!(rfc3339.len(), 20, "{rfc3339}");
    let n = |from: usize, to: usize| rfc3339[from..to].parse::<u64>().unwrap();
    let (y, m, d) = (n(0, 4), n(5, 7), n(8, 10));
    // Days from civil (Howard Hinnant), for years after 1970.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y - era * 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + (153 * mp + 2) / 5 + d - 1;
    let days = era * 146_097 + doe - 719_468;
    days * 86_400 + n(11, 13) * 3600 + n(14, 16) * 60 + n(17, 19)
}

fn ratelimit_headers(h: &HeaderMap) -> Vec<&str> {
    let mut names: Vec<&str> = h
        .keys()
        .map(|k| k.as_str())
        .filter(|k| k.contains("ratelimit"))
        .collect();
    names.sort_unstable();
    names
}

async fn chat(sim: &SimHandle, stream: bool) -> (HeaderMap, Value) {
    let resp = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({
            "model": "gpt-4.1",
            "stream": stream,
            "messages": [{"role": "user", "content": "Hello!"}]
        }))
        .send()
        .await
        .unwrap();
    let headers = resp.headers().clone();
    if stream {
        let (body, failed) = read_stream(resp).await;
        assert!(!failed);
        assert!(body.contains("[DONE]"));
        (headers, Value::Null)
    } else {
        (headers, resp.json().await.unwrap())
    }
}

async fn messages(sim: &SimHandle) -> (reqwest::StatusCode, HeaderMap, Value) {
    let resp = client()
        .post(format!("{}/v1/messages", sim.base_url()))
        .header("anthropic-version", "2023-06-01")
        .json(&json!({
            "model": "claude-sonnet-4-5",
            "max_tokens": 100,
            "messages": [{"role": "user", "content": "Hello!"}]
        }))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

#[tokio::test]
async fn openai_answers_report_requests_and_tokens() {
    let sim = sim_with(Limits {
        requests: 100,
        tokens: 50_000,
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let (h, body) = chat(&sim, false).await;
    assert_eq!(
        ratelimit_headers(&h),
        [
            "x-ratelimit-limit-requests",
            "x-ratelimit-limit-tokens",
            "x-ratelimit-remaining-requests",
            "x-ratelimit-remaining-tokens",
            "x-ratelimit-reset-requests",
            "x-ratelimit-reset-tokens",
        ]
    );
    assert_eq!(number(&h, "x-ratelimit-limit-requests"), 100);
    assert_eq!(number(&h, "x-ratelimit-remaining-requests"), 99);
    // One request of 100 a day refills in 864 s, printed as Go prints it.
    assert_eq!(header(&h, "x-ratelimit-reset-requests"), "14m24s");
    let used = body["usage"]["total_tokens"].as_u64().unwrap();
    assert!(used > 0);
    assert_eq!(number(&h, "x-ratelimit-limit-tokens"), 50_000);
    assert_eq!(number(&h, "x-ratelimit-remaining-tokens"), 50_000 - used);

    // Streamed answers and the Responses API are charged to the same buckets.
    let (h, _) = chat(&sim, true).await;
    assert_eq!(number(&h, "x-ratelimit-remaining-requests"), 98);
    let resp = client()
        .post(format!("{}/v1/responses", sim.base_url()))
        .json(&json!({"model": "gpt-4.1", "input": "Hello!"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(number(resp.headers(), "x-ratelimit-remaining-requests"), 97);
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_answers_report_four_limits_with_rfc3339_resets() {
    let sim = sim_with(Limits {
        requests: 50,
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let before = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let (status, h, _) = messages(&sim).await;
    assert_eq!(status, 200);
    assert_eq!(ratelimit_headers(&h).len(), 12, "{h:?}");
    assert_eq!(number(&h, "anthropic-ratelimit-requests-limit"), 50);
    assert_eq!(number(&h, "anthropic-ratelimit-requests-remaining"), 49);
    assert_eq!(
        number(&h, "anthropic-ratelimit-input-tokens-limit"),
        1_600_000
    );
    assert_eq!(
        number(&h, "anthropic-ratelimit-output-tokens-limit"),
        400_000
    );
    assert_eq!(number(&h, "anthropic-ratelimit-tokens-limit"), 2_000_000);
    // Token remainders are rounded to the thousand, as Anthropic's are.
    assert_eq!(
        number(&h, "anthropic-ratelimit-tokens-remaining"),
        2_000_000
    );
    // One request of 50 a day is back in 1728 s: the reset is that far ahead, to the second.
    let reset = unix_time(header(&h, "anthropic-ratelimit-requests-reset"));
    assert!(
        (before + 1728..=before + 1730).contains(&reset),
        "{reset} vs {before}"
    );
    // Answers carry the `date` the resets can be read against.
    assert!(header(&h, "date").ends_with("GMT"));
    let (_, h, _) = messages(&sim).await;
    assert_eq!(number(&h, "anthropic-ratelimit-requests-remaining"), 48);
    sim.shutdown().await;
}

#[tokio::test]
async fn gemini_answers_report_no_limits() {
    let sim = sim_with(Limits::default()).await;
    let resp = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            sim.base_url()
        ))
        .json(&json!({"contents": [{"role": "user", "parts": [{"text": "Hello!"}]}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(ratelimit_headers(resp.headers()).is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn limits_change_at_run_time_and_can_be_enforced() {
    let sim = sim_with(Limits {
        requests: 10,
        window_ms: DAY_MS,
        ..Limits::default()
    })
    .await;
    let url = format!("{}/_sim/limits", sim.base_url());
    for _ in 0..3 {
        chat(&sim, false).await;
    }
    // Lowered mid-run: what is left is capped at the new limit, and it is enforced.
    let set = json!({"requests": 4, "window_ms": DAY_MS, "enforce": true});
    let resp = client().post(&url).json(&set).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["requests"], 4);
    assert_eq!(got["tokens"], 2_000_000);
    assert_eq!(got["enforce"], true);
    assert_eq!(sim.limits().requests, 4);

    let mut remaining = Vec::new();
    for _ in 0..4 {
        let (h, _) = chat(&sim, false).await;
        assert_eq!(number(&h, "x-ratelimit-limit-requests"), 4);
        remaining.push(number(&h, "x-ratelimit-remaining-requests"));
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    // Spent: the provider's 429, with retry-after and the headers saying why.
    let resp = client()
        .post(format!("{}/v1/chat/completions", sim.base_url()))
        .json(&json!({"model": "gpt-4.1", "messages": [{"role": "user", "content": "Hello!"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let h = resp.headers().clone();
    assert_eq!(number(&h, "x-ratelimit-remaining-requests"), 0);
    // One of four requests a day is back in six hours.
    assert_eq!(number(&h, "retry-after"), 21_600);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limit_exceeded");
    assert_eq!(sim.stats().by_outcome.rate_limited, 1);
    // Anthropic's buckets are its own; spent likewise, its 429 is a rate_limit_error.
    for _ in 0..4 {
        assert_eq!(messages(&sim).await.0, 200);
    }
    let (status, h, body) = messages(&sim).await;
    assert_eq!(status, 429);
    assert_eq!(body["error"]["type"], "rate_limit_error");
    assert_eq!(number(&h, "anthropic-ratelimit-requests-remaining"), 0);

    // A reset refills; DELETE brings the defaults back.
    let resp = client()
        .post(format!("{}/_sim/reset", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let (h, _) = chat(&sim, false).await;
    assert_eq!(number(&h, "x-ratelimit-remaining-requests"), 3);
    let resp = client().delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.limits(), Limits::default());
    let (h, _) = chat(&sim, false).await;
    assert_eq!(number(&h, "x-ratelimit-limit-requests"), 10_000);
    sim.shutdown().await;
}

#[tokio::test]
async fn bad_limits_are_refused() {
    let sim = sim_with(Limits::default()).await;
    let url = format!("{}/_sim/limits", sim.base_url());
    for (body, says) in [
        (json!({"requests": 0}), "requests must be at least 1"),
        (json!({"window_ms": 0}), "window_ms must be between"),
        (json!({"rpm": 5}), "unknown field"),
        (json!({"requests": -1}), "invalid limits"),
    ] {
        let resp = client().post(&url).json(&body).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{body}");
        assert!(resp.text().await.unwrap().contains(says), "{body}");
    }
    assert_eq!(sim.limits(), Limits::default());
    sim.shutdown().await;
}
