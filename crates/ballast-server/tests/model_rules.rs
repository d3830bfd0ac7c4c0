//! Model-aware translation through the gateway: a translated request reaches each target model in
//! the form it accepts (Gemini CLI's `temperature` + `topP` + `topK` to a Claude 4.5 model, to an
//! OpenAI reasoning model), with what was dropped named in `x-ballast-warning`; a target's
//! `capabilities` in the configuration override the table; same-format traffic is untouched.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scripted::{Reply, chat_answer, rig};
use serde_json::{Value, json};

fn anthropic_answer() -> String {
    json!({
        "id": "msg_1", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn", "stop_sequence": null,
        "usage": {"input_tokens": 5, "output_tokens": 1}
    })
    .to_string()
}

/// What Gemini CLI sends on every request.
fn gemini_cli_body() -> Value {
    json!({
        "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
        "generationConfig": {"temperature": 0, "topP": 1, "topK": 64, "maxOutputTokens": 256}
    })
}

fn sent(r: &common::scripted::Rig, host: &str) -> Value {
    let reqs = r.upstream.requests(host);
    serde_json::from_slice(&reqs.last().expect("nothing sent").body).unwrap()
}

#[tokio::test(start_paused = true)]
async fn gemini_cli_through_a_claude_four_five_target_sends_one_sampling_parameter() {
    let r = rig("");
    r.upstream
        .set("claude.test", Reply::Json(anthropic_answer()));
    let got = r
        .call("/v1beta/models/claude:generateContent", &gemini_cli_body())
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let body = sent(&r, "claude.test");
    assert_eq!(body["temperature"], json!(0.0));
    assert!(body.get("top_p").is_none(), "both sent: {body}");
    assert_eq!(body["top_k"], json!(64));
    assert!(
        got.header("x-ballast-warning").contains("top_p"),
        "{:?}",
        got.headers
    );
}

#[tokio::test(start_paused = true)]
async fn a_reasoning_model_gets_default_sampling_and_its_token_limit_name() {
    let r = rig(
        "[providers.reasoner]\nkind = \"openai\"\nbase_url = \"http://reasoner.test/v1\"\napi_key = \"k\"\n\
         [routes.think]\ntargets = [\"reasoner/gpt-5\"]\n",
    );
    r.upstream
        .set("reasoner.test", Reply::Json(chat_answer("ok")));
    let got = r
        .call("/v1beta/models/think:generateContent", &gemini_cli_body())
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let body = sent(&r, "reasoner.test");
    for field in ["temperature", "top_p", "top_k", "max_tokens"] {
        assert!(body.get(field).is_none(), "{field} in {body}");
    }
    assert_eq!(body["max_completion_tokens"], json!(256));
    assert!(got.header("x-ballast-warning").contains("temperature"));
}

#[tokio::test(start_paused = true)]
async fn a_targets_capabilities_override_the_table() {
    // A model the table does not know, said to be a reasoning model that reads max_tokens.
    let r = rig(
        "[providers.local]\nkind = \"openai-compatible\"\nbase_url = \"http://local.test/v1\"\n\
         [routes.mine]\ntargets = [{ provider = \"local\", model = \"my-thinker\", capabilities = { sampling = \"default-only\", top_k = false } }]\n",
    );
    r.upstream.set("local.test", Reply::Json(chat_answer("ok")));
    let got = r
        .call("/v1beta/models/mine:generateContent", &gemini_cli_body())
        .await;
    assert_eq!(got.status, 200, "{}", got.body);
    let body = sent(&r, "local.test");
    assert!(body.get("temperature").is_none(), "{body}");
    assert!(body.get("top_k").is_none(), "{body}");
    assert_eq!(
        body["max_tokens"],
        json!(256),
        "an OpenAI-compatible server reads max_tokens"
    );
}

#[tokio::test(start_paused = true)]
async fn same_format_requests_pass_through_untouched() {
    let r = rig("");
    r.upstream
        .set("claude.test", Reply::Json(anthropic_answer()));
    let body = json!({"model": "claude", "max_tokens": 64, "temperature": 0.5, "top_p": 0.9,
        "messages": [{"role": "user", "content": "hi"}]});
    let got = r.call("/v1/messages", &body).await;
    assert_eq!(got.status, 200, "{}", got.body);
    let sent = sent(&r, "claude.test");
    assert_eq!(
        sent["top_p"],
        json!(0.9),
        "the client spoke the target's own API"
    );
    assert_eq!(got.header("x-ballast-warning"), "");
}

#[test]
fn bad_capabilities_are_configuration_errors_with_key_paths() {
    let toml = "[providers.p]\nkind = \"openai\"\napi_key = \"k\"\n\
        [routes.r]\ntargets = [{ provider = \"p\", model = \"m\", capabilities = { sampling = \"sometimes\", token_limit = \"max_output\" } }]\n";
    let err =
        ballast_core::config::Config::from_toml(toml, &ballast_core::config::env::MapEnv::new(&[]))
            .unwrap_err()
            .to_string();
    assert!(
        err.contains("routes.r.targets[0].capabilities.sampling"),
        "{err}"
    );
    assert!(
        err.contains("routes.r.targets[0].capabilities.token_limit"),
        "{err}"
    );
}
