//! Gemini: generateContent, streamGenerateContent (SSE), function calls, keys and the model list.

use ballast_sim::SimConfig;
use serde_json::{Value, json};

use crate::{client, default_sim, read_stream, sim, sse_events};

fn contents(text: &str) -> Value {
    json!({"contents": [{"role": "user", "parts": [{"text": text}]}]})
}

#[tokio::test]
async fn generate_content_has_the_real_shape() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            sim.base_url()
        ))
        .json(&contents("Hello Gemini"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: Value = resp.json().await.unwrap();
    let candidate = &body["candidates"][0];
    assert_eq!(candidate["content"]["role"], "model");
    assert!(
        !candidate["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
            .is_empty()
    );
    assert_eq!(candidate["finishReason"], "STOP");
    let usage = &body["usageMetadata"];
    assert_eq!(
        usage["totalTokenCount"].as_u64().unwrap(),
        usage["promptTokenCount"].as_u64().unwrap()
            + usage["candidatesTokenCount"].as_u64().unwrap()
    );
    assert_eq!(body["modelVersion"], "gemini-2.5-flash");
    assert!(body["responseId"].is_string());
    let recorded = sim.recent_requests();
    assert_eq!(recorded[0].model.as_deref(), Some("gemini-2.5-flash"));
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_generate_content_sse_chunks() {
    let sim = default_sim().await;
    let base = sim.base_url();
    let full: Value = client()
        .post(format!(
            "{base}/v1beta/models/gemini-2.0-flash:generateContent"
        ))
        .json(&contents("stream me"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let resp = client()
        .post(format!(
            "{base}/v1beta/models/gemini-2.0-flash:streamGenerateContent?alt=sse"
        ))
        .json(&contents("stream me"))
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (body, failed) = read_stream(resp).await;
    assert!(!failed);
    assert!(body.contains("\r\n\r\n"), "CRLF-separated events");
    let chunks: Vec<Value> = sse_events(&body).iter().map(|e| e.json()).collect();
    assert!(chunks.len() > 1);
    let last = chunks.last().unwrap();
    assert_eq!(last["candidates"][0]["finishReason"], "STOP");
    assert!(last["usageMetadata"]["totalTokenCount"].as_u64().is_some());
    assert!(
        chunks[..chunks.len() - 1]
            .iter()
            .all(|c| c["candidates"][0].get("finishReason").is_none())
    );
    let text: String = chunks
        .iter()
        .map(|c| {
            c["candidates"][0]["content"]["parts"][0]["text"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        text,
        full["candidates"][0]["content"]["parts"][0]["text"]
            .as_str()
            .unwrap()
    );
    assert!(sim.recent_requests()[1].stream);
    sim.shutdown().await;
}

#[tokio::test]
async fn function_call_with_mode_any_and_function_response() {
    let sim = default_sim().await;
    let url = format!(
        "{}/v1beta/models/gemini-2.5-pro:generateContent",
        sim.base_url()
    );
    let tools = json!([{"functionDeclarations": [{"name": "get_weather", "parameters": {
        "type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}}]}]);
    let mut body = contents("weather?");
    body["tools"] = tools.clone();
    body["toolConfig"] = json!({"functionCallingConfig": {"mode": "ANY"}});
    let resp: Value = client()
        .post(&url)
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let part = &resp["candidates"][0]["content"]["parts"][0];
    assert_eq!(part["functionCall"]["name"], "get_weather");
    assert_eq!(part["functionCall"]["args"], json!({"city": "example"}));
    assert_eq!(resp["candidates"][0]["finishReason"], "STOP");

    let follow = json!({"tools": tools, "contents": [
        {"role": "user", "parts": [{"text": "weather?"}]},
        {"role": "model", "parts": [part]},
        {"role": "user", "parts": [{"functionResponse": {"name": "get_weather", "response": {"temp": 21}}}]}
    ]});
    let resp: Value = client()
        .post(&url)
        .json(&follow)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["candidates"][0]["content"]["parts"][0]["text"],
        "Tool result received: {\"temp\":21}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn max_output_tokens_gives_max_tokens() {
    let sim = default_sim().await;
    let mut body = contents("echo uno dos tres cuatro");
    body["generationConfig"] = json!({"maxOutputTokens": 2});
    let resp: Value = client()
        .post(format!(
            "{}/v1beta/models/gemini-2.5-flash:generateContent",
            sim.base_url()
        ))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        resp["candidates"][0]["content"]["parts"][0]["text"],
        "uno dos"
    );
    assert_eq!(resp["candidates"][0]["finishReason"], "MAX_TOKENS");
    sim.shutdown().await;
}

#[tokio::test]
async fn keys_in_header_or_query() {
    let sim = sim(SimConfig {
        require_key: Some("AIza-test".into()),
        ..SimConfig::default()
    })
    .await;
    let url = format!(
        "{}/v1beta/models/gemini-2.5-flash:generateContent",
        sim.base_url()
    );
    let ok = client()
        .post(&url)
        .header("x-goog-api-key", "AIza-test")
        .json(&contents("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let ok = client()
        .post(format!("{url}?key=AIza-test"))
        .json(&contents("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let bad = client()
        .post(format!("{url}?key=nope"))
        .json(&contents("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let body: Value = bad.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["details"][0]["reason"], "API_KEY_INVALID");
    let missing = client()
        .post(&url)
        .json(&contents("hi"))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 403);
    let body: Value = missing.json().await.unwrap();
    assert_eq!(body["error"]["code"], 403);
    assert_eq!(body["error"]["status"], "PERMISSION_DENIED");
    sim.shutdown().await;
}

#[tokio::test]
async fn validation_and_model_list() {
    let sim = default_sim().await;
    let base = sim.base_url();
    let resp = client()
        .post(format!("{base}/v1beta/models/g:generateContent"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["status"], "INVALID_ARGUMENT");
    assert_eq!(body["error"]["code"], 400);

    let list: Value = client()
        .get(format!("{base}/v1beta/models"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let models = list["models"].as_array().unwrap();
    assert!(
        models
            .iter()
            .all(|m| m["name"].as_str().unwrap().starts_with("models/"))
    );
    assert!(
        models[0]["supportedGenerationMethods"]
            .as_array()
            .unwrap()
            .contains(&json!("generateContent"))
    );

    let count: Value = client()
        .post(format!("{base}/v1beta/models/gemini-2.5-flash:countTokens"))
        .json(&contents("abcdefgh"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(count["totalTokens"].as_u64().unwrap() >= 1);
    let unknown = client()
        .post(format!("{base}/v1beta/models/g:explode"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    sim.shutdown().await;
}

#[tokio::test]
async fn v1_paths_serve_gemini_clients_like_v1beta() {
    let sim = default_sim().await;
    let base = sim.base_url();
    let v1: Value = client()
        .post(format!("{base}/v1/models/gemini-2.5-flash:generateContent"))
        .header("x-goog-api-key", "k")
        .json(&contents("same question"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let v1beta: Value = client()
        .post(format!(
            "{base}/v1beta/models/gemini-2.5-flash:generateContent"
        ))
        .json(&contents("same question"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v1["candidates"], v1beta["candidates"]);
    let list: Value = client()
        .get(format!("{base}/v1/models"))
        .header("x-goog-api-key", "k")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(list["models"].is_array());
    assert_eq!(sim.stats().by_api.gemini, 3);
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_without_alt_sse_is_a_json_array() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!(
            "{}/v1beta/models/g:streamGenerateContent",
            sim.base_url()
        ))
        .json(&contents("array please"))
        .send()
        .await
        .unwrap();
    let (body, failed) = read_stream(resp).await;
    assert!(!failed);
    let chunks: Vec<Value> = serde_json::from_str(&body).unwrap();
    assert_eq!(
        chunks.last().unwrap()["candidates"][0]["finishReason"],
        "STOP"
    );
    let wrong_method = client()
        .get(format!("{}/v1/messages", sim.base_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(wrong_method.status(), 405);
    sim.shutdown().await;
}
