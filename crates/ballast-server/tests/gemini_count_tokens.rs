//! Gemini's `POST /v1beta/models/{model}:countTokens` (and `/v1/…`), on a scripted upstream: the
//! route's Gemini targets asked in order (the path's model rewritten to the target's), their count
//! passed back as sent; a local estimate, marked `x-ballast-token-count: estimate`, when the route has
//! no Gemini target or none answers; errors in Google's shape with the request id.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::scripted::{Got, Reply, Rig, rig};
use serde_json::{Value, json};

/// Two Gemini providers (hosts `gem.test`, `gem2.test`): route `gem` = gem then the OpenAI backup,
/// `gem2` = gem then gem2; a gateway key `gw`.
const GEMINI: &str = r#"
[auth]
gateway_keys = ["gw"]
[providers.gem]
kind = "gemini"
base_url = "http://gem.test"
api_key = "gk"
[providers.gem2]
kind = "gemini"
base_url = "http://gem2.test"
api_key = "gk2"
[routes.gem]
targets = ["gem/gemini-2.5-flash", "backup/gpt-4.1-mini"]
[routes.gem2]
targets = ["gem/gemini-2.5-flash", "gem2/gemini-2.5-pro"]
"#;

const KEY: (&str, &str) = ("x-goog-api-key", "gw");

fn contents(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

fn wrapped(text: &str) -> Value {
    json!({"generateContentRequest": {
        "model": "models/whatever",
        "contents": [{"role": "user", "parts": [{"text": text}]}],
        "systemInstruction": {"parts": [{"text": "be brief"}]},
    }})
}

fn json_of(got: &Got) -> Value {
    serde_json::from_str(&got.body).unwrap_or_else(|e| panic!("{e}: {}", got.body))
}

/// A Google-shaped error with the request id in its header.
fn assert_google_error(got: &Got, status: u16, google_status: &str) -> String {
    assert_eq!(got.status, status, "{}", got.body);
    let v = json_of(got);
    assert_eq!(v["error"]["code"], status, "{v}");
    assert_eq!(v["error"]["status"], google_status, "{v}");
    assert!(got.header("x-request-id").starts_with("req_"));
    v["error"]["message"].as_str().unwrap().to_owned()
}

async fn count(r: &Rig, path: &str, body: &Value) -> Got {
    r.call_with(path, body, &[KEY]).await
}

#[tokio::test(start_paused = true)]
async fn estimated_when_the_route_has_no_gemini_target_on_both_paths_and_shapes() {
    let r = rig(GEMINI);
    let text = "How many tokens is this sentence, roughly? ".repeat(4);
    for path in [
        "/v1beta/models/chat:countTokens",
        "/v1/models/chat:countTokens",
        "/v1beta/models/models/chat:countTokens",
    ] {
        let got = count(&r, path, &contents(&text)).await;
        assert_eq!(got.status, 200, "{path}: {}", got.body);
        assert_eq!(got.header("x-ballast-token-count"), "estimate");
        let v = json_of(&got);
        let n = v["totalTokens"].as_u64().unwrap();
        // "user" + the text, / 4.
        assert_eq!(n, (4 + text.len() as u64).div_ceil(4), "{path}");
        assert_eq!(v.as_object().unwrap().len(), 1, "only totalTokens: {v}");

        let got = count(&r, path, &wrapped(&text)).await;
        assert_eq!(got.header("x-ballast-token-count"), "estimate");
        let m = json_of(&got)["totalTokens"].as_u64().unwrap();
        assert!(m > n, "the system instruction counts too: {m} vs {n}");
    }
    assert_eq!(r.upstream.calls("primary.test"), 0, "nothing sent upstream");
    assert_eq!(r.upstream.calls("backup.test"), 0, "nothing sent upstream");
}

#[tokio::test(start_paused = true)]
async fn forwarded_to_the_gemini_target_with_its_model_in_the_path() {
    let r = rig(GEMINI);
    let answer = r#"{"totalTokens":42,"cachedContentTokenCount":7,"promptTokensDetails":[{"modality":"TEXT","tokenCount":42}]}"#;
    r.upstream.set("gem.test", Reply::Json(answer.to_owned()));
    for (i, path) in [
        "/v1beta/models/gem:countTokens",
        "/v1/models/gem:countTokens",
    ]
    .into_iter()
    .enumerate()
    {
        let got = count(&r, path, &contents("hello")).await;
        assert_eq!(got.status, 200, "{}", got.body);
        assert_eq!(got.header("x-ballast-token-count"), "provider");
        assert_eq!(got.body, answer, "passed back as the provider sent it");
        let sent = &r.upstream.requests("gem.test")[i];
        assert_eq!(
            sent.url.as_str(),
            "http://gem.test/v1beta/models/gemini-2.5-flash:countTokens"
        );
        assert_eq!(sent.headers["x-goog-api-key"], "gk", "the provider's key");
        assert!(
            !sent.headers.iter().any(|(_, v)| v.as_bytes() == b"gw"),
            "the gateway key stays here"
        );
        let body: Value = serde_json::from_slice(&sent.body).unwrap();
        assert_eq!(body, contents("hello"), "the body as the client sent it");
    }

    // The `generateContentRequest` form: its own `model` names the target's model.
    let got = count(&r, "/v1beta/models/gem:countTokens", &wrapped("hello")).await;
    assert_eq!(got.header("x-ballast-token-count"), "provider");
    let sent = r.upstream.requests("gem.test").pop().unwrap();
    let body: Value = serde_json::from_slice(&sent.body).unwrap();
    let inner = &body["generateContentRequest"];
    assert_eq!(inner["model"], "models/gemini-2.5-flash");
    assert_eq!(
        inner["systemInstruction"],
        wrapped("")["generateContentRequest"]["systemInstruction"]
    );
    assert_eq!(
        r.upstream.calls("backup.test"),
        0,
        "the OpenAI target is not asked"
    );
}

#[tokio::test(start_paused = true)]
async fn the_next_gemini_target_is_asked_when_one_fails_then_the_estimate() {
    let r = rig(GEMINI);
    r.upstream.set("gem.test", Reply::status(503));
    r.upstream
        .set("gem2.test", Reply::Json(r#"{"totalTokens":9}"#.to_owned()));
    let got = count(&r, "/v1beta/models/gem2:countTokens", &contents("hi")).await;
    assert_eq!(got.header("x-ballast-token-count"), "provider");
    assert_eq!(json_of(&got)["totalTokens"], 9);
    let sent = r.upstream.requests("gem2.test");
    assert_eq!(
        sent[0].url.path(),
        "/v1beta/models/gemini-2.5-pro:countTokens"
    );
    assert_eq!(sent[0].headers["x-goog-api-key"], "gk2");

    // Neither answers (one down, one sends something that is not a count): the estimate.
    r.upstream.set("gem2.test", Reply::Json("[1,2]".to_owned()));
    let got = count(&r, "/v1beta/models/gem2:countTokens", &contents("hi")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.header("x-ballast-token-count"), "estimate");
    assert_eq!(json_of(&got)["totalTokens"], 2);
    assert_eq!(r.upstream.calls("gem.test"), 2);
    assert_eq!(r.upstream.calls("gem2.test"), 2);
}

#[tokio::test(start_paused = true)]
async fn the_providers_refusal_of_the_request_is_the_clients_answer() {
    let r = rig(GEMINI);
    r.upstream.set(
        "gem.test",
        Reply::Status {
            status: 400,
            retry_after: None,
            body: r#"{"error":{"code":400,"message":"Invalid JSON payload","status":"INVALID_ARGUMENT"}}"#,
        },
    );
    let got = count(&r, "/v1beta/models/gem2:countTokens", &contents("hi")).await;
    let message = assert_google_error(&got, 400, "INVALID_ARGUMENT");
    assert_eq!(message, "Invalid JSON payload");
    assert_eq!(
        r.upstream.calls("gem2.test"),
        0,
        "every target would refuse it"
    );
}

#[tokio::test(start_paused = true)]
async fn the_gateway_key_is_taken_from_each_place_gemini_clients_send_it() {
    let r = rig(GEMINI);
    let body = contents("hi");
    for (path, headers) in [
        ("/v1beta/models/chat:countTokens?key=gw", vec![]),
        (
            "/v1beta/models/chat:countTokens",
            vec![("authorization", "Bearer gw")],
        ),
        ("/v1/models/chat:countTokens", vec![KEY]),
    ] {
        let got = r.call_with(path, &body, &headers).await;
        assert_eq!(got.status, 200, "{path} {headers:?}: {}", got.body);
    }
    let got = r
        .call_with("/v1beta/models/chat:countTokens?key=nope", &body, &[])
        .await;
    assert_google_error(&got, 401, "UNAUTHENTICATED");
    let got = r.call("/v1beta/models/chat:countTokens", &body).await;
    assert_google_error(&got, 401, "UNAUTHENTICATED");
}

#[tokio::test(start_paused = true)]
async fn an_unknown_model_is_a_google_404() {
    let r = rig(GEMINI);
    for path in [
        "/v1beta/models/no-such-route:countTokens",
        "/v1/models/no-such-route:countTokens",
    ] {
        let got = count(&r, path, &contents("hi")).await;
        let message = assert_google_error(&got, 404, "NOT_FOUND");
        assert!(message.contains("no-such-route"), "{message}");
        assert!(message.contains("gem2"), "lists the routes: {message}");
    }
}

#[tokio::test(start_paused = true)]
async fn bad_bodies_are_google_400s() {
    let r = rig(GEMINI);
    for path in [
        "/v1beta/models/gem:countTokens",
        "/v1/models/gem:countTokens",
    ] {
        let got = r
            .call_bytes(&format!("{path}?key=gw"), b"{\"contents\": [".to_vec())
            .await;
        let message = assert_google_error(&got, 400, "INVALID_ARGUMENT");
        assert!(message.contains("invalid JSON"), "{message}");
        for (body, field) in [
            (json!([1]), "JSON object"),
            (json!({"generationConfig": {}}), "contents"),
            (
                json!({"generateContentRequest": "x"}),
                "generateContentRequest",
            ),
        ] {
            let got = count(&r, path, &body).await;
            let message = assert_google_error(&got, 400, "INVALID_ARGUMENT");
            assert!(message.contains(field), "{message}");
        }
    }
    assert_eq!(r.upstream.calls("gem.test"), 0);
}
