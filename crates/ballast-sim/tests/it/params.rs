//! Per-model parameter rules: what each real API refuses (status, error shape, exact message), what
//! it accepts, and the lenient simulator that accepts everything.

use ballast_sim::{SimConfig, SimHandle};
use serde_json::{Value, json};

use crate::{client, default_sim, sim};

const BOTH_SAMPLERS: &str =
    "`temperature` and `top_p` cannot both be specified for this model. Please use only one.";

fn lenient() -> SimConfig {
    SimConfig {
        strict_params: false,
        ..SimConfig::default()
    }
}

/// Posts `body` to `path`; returns the status, the `request-id` / `x-request-id` header and the body.
async fn post(sim: &SimHandle, path: &str, body: &Value) -> (u16, Option<String>, Value) {
    let resp = client()
        .post(format!("{}{path}", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let id = ["request-id", "x-request-id"]
        .iter()
        .find_map(|h| resp.headers().get(*h))
        .map(|v| v.to_str().unwrap().to_owned());
    let text = resp.text().await.unwrap();
    let body = serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}"));
    (status, id, body)
}

fn message(model: &str, extra: Value) -> Value {
    let mut body = json!({
        "model": model, "max_tokens": 50,
        "messages": [{"role": "user", "content": "Hello"}]
    });
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn chat(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "messages": [{"role": "user", "content": "Hello"}]});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

fn response(model: &str, extra: Value) -> Value {
    let mut body = json!({"model": model, "input": "Hello"});
    body.as_object_mut()
        .unwrap()
        .extend(extra.as_object().unwrap().clone());
    body
}

#[tokio::test]
async fn newer_claude_models_refuse_temperature_with_top_p() {
    let sim = default_sim().await;
    for model in [
        "claude-sonnet-4-5",
        "claude-sonnet-4-5-20250929",
        "claude-haiku-4-5-20251001",
        "claude-opus-4-1",
        "claude-opus-4-5",
        "claude-sonnet-4-6",
    ] {
        for stream in [false, true] {
            let body = message(
                model,
                json!({"temperature": 0.7, "top_p": 0.9, "stream": stream}),
            );
            let (status, id, body) = post(&sim, "/v1/messages", &body).await;
            assert_eq!(status, 400, "{model}");
            let id = id.unwrap();
            assert!(id.starts_with("req_"));
            assert_eq!(
                body,
                json!({
                    "type": "error",
                    "error": {"type": "invalid_request_error", "message": BOTH_SAMPLERS},
                    "request_id": id,
                }),
                "{model}"
            );
        }
    }
    // Whatever the values: setting both is the fault.
    let (status, _, _) = post(
        &sim,
        "/v1/messages",
        &message("claude-sonnet-4-5", json!({"temperature": 1, "top_p": 1})),
    )
    .await;
    assert_eq!(status, 400);
    assert_eq!(sim.stats().by_outcome.invalid, 13);
    sim.shutdown().await;
}

#[tokio::test]
async fn claude_accepts_one_sampler_and_older_models_accept_both() {
    let sim = default_sim().await;
    let cases = [
        ("claude-sonnet-4-5", json!({"temperature": 0.2})),
        ("claude-sonnet-4-5", json!({"top_p": 0.9})),
        ("claude-haiku-4-5", json!({"temperature": 0.2, "top_k": 40})),
        // `null` is not setting a field.
        (
            "claude-opus-4-1",
            json!({"temperature": 0.2, "top_p": null}),
        ),
        (
            "claude-3-5-sonnet-20241022",
            json!({"temperature": 0.2, "top_p": 0.9}),
        ),
        (
            "claude-3-7-sonnet-latest",
            json!({"temperature": 0.2, "top_p": 0.9}),
        ),
        (
            "claude-sonnet-4-20250514",
            json!({"temperature": 0.2, "top_p": 0.9}),
        ),
        ("claude-opus-4-0", json!({"temperature": 0.2, "top_p": 0.9})),
    ];
    for (model, extra) in cases {
        let (status, _, body) = post(&sim, "/v1/messages", &message(model, extra.clone())).await;
        assert_eq!(status, 200, "{model} {extra}: {body}");
        assert_eq!(body["type"], "message");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_reasoning_models_refuse_sampling_on_chat_completions() {
    let sim = default_sim().await;
    let cases = [
        (
            "gpt-5",
            json!({"temperature": 0.2}),
            json!({
                "message": "Unsupported value: 'temperature' does not support 0.2 with this model. Only the \
                            default (1) value is supported.",
                "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"
            }),
        ),
        (
            // The value is echoed as sent.
            "o3-mini",
            json!({"temperature": 0}),
            json!({
                "message": "Unsupported value: 'temperature' does not support 0 with this model. Only the \
                            default (1) value is supported.",
                "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"
            }),
        ),
        (
            "o1",
            json!({"top_p": 0.9}),
            json!({
                "message": "Unsupported parameter: 'top_p' is not supported with this model.",
                "type": "invalid_request_error", "param": "top_p", "code": "unsupported_parameter"
            }),
        ),
        (
            "gpt-5-mini",
            json!({"max_tokens": 100}),
            json!({
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use \
                            'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"
            }),
        ),
        (
            // `max_tokens` is refused even at reasoning effort `none`.
            "gpt-5.1",
            json!({"max_tokens": 100, "temperature": 0.2, "reasoning_effort": "none"}),
            json!({
                "message": "Unsupported parameter: 'max_tokens' is not supported with this model. Use \
                            'max_completion_tokens' instead.",
                "type": "invalid_request_error", "param": "max_tokens", "code": "unsupported_parameter"
            }),
        ),
        (
            // GPT-5.1 takes a temperature only with reasoning off.
            "gpt-5.1",
            json!({"temperature": 0.7, "reasoning_effort": "medium"}),
            json!({
                "message": "Unsupported value: 'temperature' does not support 0.7 with this model. Only the \
                            default (1) value is supported.",
                "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"
            }),
        ),
        (
            "o4-mini",
            json!({"temperature": 0.5, "stream": true}),
            json!({
                "message": "Unsupported value: 'temperature' does not support 0.5 with this model. Only the \
                            default (1) value is supported.",
                "type": "invalid_request_error", "param": "temperature", "code": "unsupported_value"
            }),
        ),
    ];
    for (model, extra, error) in cases {
        let (status, id, body) = post(&sim, "/v1/chat/completions", &chat(model, extra)).await;
        assert_eq!(status, 400, "{model}");
        assert!(id.unwrap().starts_with("req_"));
        assert_eq!(body, json!({"error": error}), "{model}");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn chat_completions_accepts_what_the_models_take() {
    let sim = default_sim().await;
    let cases = [
        ("gpt-5", json!({"max_completion_tokens": 200})),
        (
            "gpt-5",
            json!({"temperature": 1, "top_p": 1.0, "max_completion_tokens": 200}),
        ),
        (
            "o3",
            json!({"temperature": 1.0, "reasoning_effort": "high"}),
        ),
        ("gpt-5.1", json!({"temperature": 0.2, "top_p": 0.9})),
        (
            "gpt-5.5",
            json!({"temperature": 0.2, "reasoning_effort": "none"}),
        ),
        (
            "gpt-5-chat-latest",
            json!({"temperature": 0.2, "top_p": 0.9, "max_tokens": 200}),
        ),
        (
            "gpt-4.1",
            json!({"temperature": 0.2, "top_p": 0.9, "max_tokens": 200}),
        ),
        ("gpt-4o-mini", json!({"temperature": 0, "max_tokens": 200})),
    ];
    for (model, extra) in cases {
        let (status, _, body) =
            post(&sim, "/v1/chat/completions", &chat(model, extra.clone())).await;
        assert_eq!(status, 200, "{model} {extra}: {body}");
        assert_eq!(body["object"], "chat.completion");
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_reasoning_models_refuse_sampling_on_responses() {
    let sim = default_sim().await;
    let cases = [
        ("gpt-5", json!({"temperature": 0.2}), "temperature"),
        ("o4-mini", json!({"top_p": 0.5}), "top_p"),
        (
            "gpt-5-codex",
            json!({"temperature": 0, "stream": true}),
            "temperature",
        ),
        (
            "gpt-5.2",
            json!({"temperature": 0.3, "reasoning": {"effort": "high"}}),
            "temperature",
        ),
    ];
    for (model, extra, param) in cases {
        let (status, id, body) = post(&sim, "/v1/responses", &response(model, extra)).await;
        assert_eq!(status, 400, "{model}");
        assert!(id.unwrap().starts_with("req_"));
        assert_eq!(
            body,
            json!({"error": {
                "message": format!("Unsupported parameter: '{param}' is not supported with this model."),
                "type": "invalid_request_error", "param": param, "code": null
            }}),
            "{model}"
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn responses_accepts_what_the_models_take() {
    let sim = default_sim().await;
    let cases = [
        ("gpt-5", json!({"temperature": 1, "max_output_tokens": 200})),
        ("o3", json!({"top_p": 1.0, "reasoning": {"effort": "low"}})),
        ("gpt-5.2", json!({"temperature": 0.3})),
        (
            "gpt-5.1-codex",
            json!({"temperature": 0.3, "reasoning": {"effort": "none"}}),
        ),
        ("gpt-4.1", json!({"temperature": 0.2, "top_p": 0.9})),
    ];
    for (model, extra) in cases {
        let (status, _, body) = post(&sim, "/v1/responses", &response(model, extra.clone())).await;
        assert_eq!(status, 200, "{model} {extra}: {body}");
        assert_eq!(body["status"], "completed");
        assert_eq!(
            body["temperature"],
            extra.get("temperature").unwrap_or(&json!(1.0)).clone()
        );
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn gemini_takes_every_sampler() {
    let sim = default_sim().await;
    let body = json!({
        "contents": [{"role": "user", "parts": [{"text": "Hello"}]}],
        "generationConfig": {"temperature": 0.2, "topP": 0.9, "topK": 40, "maxOutputTokens": 200}
    });
    let (status, _, body) = post(
        &sim,
        "/v1beta/models/gemini-2.5-flash:generateContent",
        &body,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    sim.shutdown().await;
}

#[tokio::test]
async fn a_lenient_simulator_answers_every_parameter() {
    let sim = sim(lenient()).await;
    let cases = [
        (
            "/v1/messages",
            message(
                "claude-sonnet-4-5",
                json!({"temperature": 0.7, "top_p": 0.9}),
            ),
        ),
        (
            "/v1/chat/completions",
            chat(
                "gpt-5",
                json!({"temperature": 0.2, "top_p": 0.5, "max_tokens": 100}),
            ),
        ),
        (
            "/v1/responses",
            response("o3", json!({"temperature": 0.2, "top_p": 0.5})),
        ),
    ];
    for (path, body) in cases {
        let (status, _, answer) = post(&sim, path, &body).await;
        assert_eq!(status, 200, "{path}: {answer}");
    }
    // Other validation still applies.
    let (status, _, _) = post(
        &sim,
        "/v1/messages",
        &json!({"model": "claude-sonnet-4-5", "messages": []}),
    )
    .await;
    assert_eq!(status, 400);
    assert!(SimConfig::default().strict_params);
    sim.shutdown().await;
}
