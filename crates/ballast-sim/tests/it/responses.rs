//! OpenAI Responses: the `response` object, the named event stream and its sequence numbers, tool
//! calls and results, structured output, validation, keys, faults and stats.

use ballast_sim::SimConfig;
use serde_json::{Value, json};

use crate::{Event, client, default_sim, faults, has_thai, read_stream, sim, sse_events};

fn weather_tool() -> Value {
    json!({
        "type": "function", "name": "get_weather", "description": "Weather for a city", "strict": true,
        "parameters": {
            "type": "object", "additionalProperties": false, "required": ["city"],
            "properties": {"city": {"type": "string"}}
        }
    })
}

async fn post(sim: &ballast_sim::SimHandle, body: &Value) -> reqwest::Response {
    client()
        .post(format!("{}/v1/responses", sim.base_url()))
        .json(body)
        .send()
        .await
        .unwrap()
}

async fn create(sim: &ballast_sim::SimHandle, body: Value) -> Value {
    let resp = post(sim, &body).await;
    assert_eq!(resp.status(), 200);
    resp.json().await.unwrap()
}

/// Streams `body` and returns its events, checking what every stream must satisfy: an `event:` name
/// equal to the JSON's `type`, JSON data, sequence numbers 0, 1, 2 …, `response.created` first and
/// one terminal event last.
async fn stream(sim: &ballast_sim::SimHandle, mut body: Value) -> Vec<(String, Value)> {
    body["stream"] = json!(true);
    let resp = post(sim, &body).await;
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let (text, failed) = read_stream(resp).await;
    assert!(!failed);
    let events: Vec<(String, Value)> = sse_events(&text)
        .iter()
        .map(|e: &Event| (e.name.clone().expect("every event is named"), e.json()))
        .collect();
    for (i, (name, data)) in events.iter().enumerate() {
        assert_eq!(&data["type"], name);
        assert_eq!(data["sequence_number"], i, "{name}");
    }
    assert_eq!(events[0].0, "response.created");
    let terminal = |n: &str| matches!(n, "response.completed" | "response.incomplete");
    assert!(terminal(&events.last().unwrap().0));
    assert_eq!(events.iter().filter(|(n, _)| terminal(n)).count(), 1);
    events
}

fn names(events: &[(String, Value)]) -> Vec<&str> {
    events.iter().map(|(n, _)| n.as_str()).collect()
}

#[tokio::test]
async fn non_streaming_response_has_the_real_shape() {
    let sim = default_sim().await;
    let resp = post(
        &sim,
        &json!({
            // GPT-5.1 takes a temperature at reasoning effort `none` (reasoning models refuse it
            // otherwise: the README's *Parameter rules*).
            "model": "gpt-5.1", "input": "Hello!", "instructions": "be brief",
            "metadata": {"k": "v"}, "store": false, "temperature": 0.5,
            "reasoning": {"effort": "none"}, "prompt_cache_key": "pck",
            "include": ["reasoning.encrypted_content"], "client_metadata": {"a": "b"},
            "some_future_field": 1
        }),
    )
    .await;
    assert_eq!(resp.status(), 200);
    assert!(resp.headers().contains_key("x-request-id"));
    let body: Value = resp.json().await.unwrap();
    assert!(body["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(body["object"], "response");
    assert!(body["created_at"].as_u64().unwrap() > 1_700_000_000);
    assert_eq!(body["status"], "completed");
    assert_eq!(body["model"], "gpt-5.1");
    assert_eq!(body["error"], Value::Null);
    assert_eq!(body["incomplete_details"], Value::Null);
    assert_eq!(body["instructions"], "be brief");
    assert_eq!(body["metadata"], json!({"k": "v"}));
    assert_eq!(body["store"], false);
    assert_eq!(body["temperature"], 0.5);
    assert_eq!(body["top_p"], 1.0);
    assert_eq!(body["parallel_tool_calls"], true);
    assert_eq!(body["tool_choice"], "auto");
    assert_eq!(body["tools"], json!([]));
    assert_eq!(body["reasoning"]["effort"], "none");
    assert_eq!(body["prompt_cache_key"], "pck");
    assert_eq!(body["text"]["format"]["type"], "text");
    let output = body["output"].as_array().unwrap();
    assert_eq!(output.len(), 1);
    let message = &output[0];
    assert_eq!(message["type"], "message");
    assert_eq!(message["role"], "assistant");
    assert_eq!(message["status"], "completed");
    assert!(message["id"].as_str().unwrap().starts_with("msg_"));
    let part = &message["content"][0];
    assert_eq!(part["type"], "output_text");
    assert_eq!(part["annotations"], json!([]));
    assert!(!part["text"].as_str().unwrap().is_empty());
    let usage = &body["usage"];
    assert_eq!(
        usage["total_tokens"].as_u64().unwrap(),
        usage["input_tokens"].as_u64().unwrap() + usage["output_tokens"].as_u64().unwrap()
    );
    assert_eq!(usage["input_tokens_details"]["cached_tokens"], 0);
    assert_eq!(usage["output_tokens_details"]["reasoning_tokens"], 0);
    sim.shutdown().await;
}

#[tokio::test]
async fn stream_sends_the_named_event_sequence_and_the_full_response() {
    let sim = default_sim().await;
    let body = json!({"model": "gpt-5", "input": [
        {"role": "developer", "content": "be brief"},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "tell me something"}]}
    ]});
    let full = create(&sim, body.clone()).await;
    let events = stream(&sim, body).await;
    let n = names(&events);
    let deltas = n
        .iter()
        .filter(|e| **e == "response.output_text.delta")
        .count();
    assert!(deltas > 1);
    let mut expected = vec![
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
    ];
    expected.extend(std::iter::repeat_n("response.output_text.delta", deltas));
    expected.extend([
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]);
    assert_eq!(n, expected);

    let created = &events[0].1["response"];
    assert_eq!(created["status"], "in_progress");
    assert_eq!(created["output"], json!([]));
    let added = &events[2].1;
    assert_eq!(added["output_index"], 0);
    assert_eq!(added["item"]["status"], "in_progress");
    assert_eq!(added["item"]["content"], json!([]));
    let item_id = added["item"]["id"].as_str().unwrap();
    let text: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| {
            assert_eq!(d["item_id"], item_id);
            assert_eq!(d["content_index"], 0);
            d["delta"].as_str().unwrap().to_owned()
        })
        .collect();
    // Same request, same answer: the stream carries the text of the non-streamed response.
    assert_eq!(text, full["output"][0]["content"][0]["text"]);
    let done = &events[events.len() - 4].1;
    assert_eq!(done["text"], text.as_str());
    assert_eq!(events[events.len() - 3].1["part"]["text"], text.as_str());
    assert_eq!(events[events.len() - 2].1["item"]["status"], "completed");
    let completed = &events.last().unwrap().1["response"];
    assert_eq!(completed["status"], "completed");
    assert_eq!(completed["id"], created["id"]);
    assert_eq!(completed["output"][0]["content"][0]["text"], text.as_str());
    assert_eq!(completed["usage"], full["usage"]);
    sim.shutdown().await;
}

#[tokio::test]
async fn echo_is_verbatim() {
    let sim = default_sim().await;
    let body = create(
        &sim,
        json!({"model": "m", "input": [{"role": "user", "content": [
            {"type": "input_text", "text": "echo héllo  "},
            {"type": "input_text", "text": "wörld 你好 🎉"}
        ]}]}),
    )
    .await;
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "héllo  wörld 你好 🎉"
    );
    assert_eq!(body["usage"]["output_tokens"], 4);
    sim.shutdown().await;
}

#[tokio::test]
async fn mentioned_tool_is_called_with_schema_arguments() {
    let sim = default_sim().await;
    let request = json!({"model": "m", "input": "please call get_weather", "tools": [weather_tool(), {"type": "web_search"}]});
    let body = create(&sim, request.clone()).await;
    assert_eq!(body["status"], "completed");
    let call = &body["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "get_weather");
    assert_eq!(call["status"], "completed");
    assert!(call["id"].as_str().unwrap().starts_with("fc_"));
    assert!(call["call_id"].as_str().unwrap().starts_with("call_"));
    let args: Value = serde_json::from_str(call["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(args, json!({"city": "example"}));
    assert_eq!(body["tools"][0]["name"], "get_weather");

    let events = stream(&sim, request).await;
    let n = names(&events);
    assert_eq!(
        &n[..3],
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added"
        ]
    );
    assert_eq!(
        &n[n.len() - 3..],
        [
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed"
        ]
    );
    let added = &events[2].1["item"];
    assert_eq!(added["type"], "function_call");
    assert_eq!(added["arguments"], "");
    assert_eq!(added["status"], "in_progress");
    let fragments: Vec<&str> = events
        .iter()
        .filter(|(n, _)| n == "response.function_call_arguments.delta")
        .map(|(_, d)| {
            assert_eq!(d["item_id"], added["id"]);
            d["delta"].as_str().unwrap()
        })
        .collect();
    assert!(fragments.len() > 1);
    let args = fragments.concat();
    let done = &events[n.len() - 3].1;
    assert_eq!(done["arguments"], args.as_str());
    assert_eq!(done["name"], "get_weather");
    assert_eq!(events[n.len() - 2].1["item"]["arguments"], args.as_str());
    assert_eq!(
        events.last().unwrap().1["response"]["output"][0]["call_id"],
        added["call_id"]
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn tool_choice_forces_and_forbids_calls() {
    let sim = default_sim().await;
    let forced = |choice: Value| json!({"model": "m", "input": "hi", "tools": [weather_tool()], "tool_choice": choice});
    for choice in [
        json!("required"),
        json!({"type": "function", "name": "get_weather"}),
        json!({"type": "allowed_tools", "mode": "required", "tools": [{"type": "function", "name": "get_weather"}]}),
    ] {
        let body = create(&sim, forced(choice.clone())).await;
        assert_eq!(body["output"][0]["type"], "function_call", "{choice}");
        assert_eq!(body["tool_choice"], choice);
    }
    let body = create(
        &sim,
        json!({"model": "m", "input": "call get_weather", "tools": [weather_tool()], "tool_choice": "none"}),
    )
    .await;
    assert_eq!(body["output"][0]["type"], "message");
    sim.shutdown().await;
}

#[tokio::test]
async fn namespace_functions_are_called_with_their_namespace() {
    let sim = default_sim().await;
    // Shaped like Codex: developer instructions, a namespace tool, a built-in tool, reasoning items.
    let body = create(
        &sim,
        json!({
            "model": "gpt-5-codex", "store": false, "stream": false, "parallel_tool_calls": false,
            "include": ["reasoning.encrypted_content"], "reasoning": {"effort": "medium", "summary": "auto"},
            "input": [
                {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "You are Codex."}]},
                {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "opaque"},
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "run list_files please"}]}
            ],
            "tools": [
                {"type": "namespace", "name": "workspace", "description": "files", "tools": [
                    {"type": "function", "name": "list_files", "strict": false,
                     "parameters": {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]}}
                ]},
                {"type": "web_search", "external_web_access": false}
            ]
        }),
    )
    .await;
    let call = &body["output"][0];
    assert_eq!(call["type"], "function_call");
    assert_eq!(call["name"], "list_files");
    assert_eq!(call["namespace"], "workspace");
    assert_eq!(call["arguments"], r#"{"path":"example"}"#);
    assert_eq!(body["parallel_tool_calls"], false);
    sim.shutdown().await;
}

#[tokio::test]
async fn tool_result_is_acknowledged_even_when_a_call_is_forced() {
    let sim = default_sim().await;
    let body = create(
        &sim,
        json!({
            "model": "m", "tools": [weather_tool()], "tool_choice": "required",
            "input": [
                {"role": "user", "content": "weather in Paris?"},
                {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
                 "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
                {"type": "function_call_output", "call_id": "call_1", "output": "22 degrees and sunny"}
            ]
        }),
    )
    .await;
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "Tool result received: 22 degrees and sunny"
    );
    // Outputs given as content parts count too.
    let body = create(
        &sim,
        json!({"model": "m", "input": [
            {"role": "user", "content": "x"},
            {"type": "function_call_output", "call_id": "call_1",
             "output": [{"type": "input_text", "text": "from parts"}]}
        ]}),
    )
    .await;
    assert_eq!(
        body["output"][0]["content"][0]["text"],
        "Tool result received: from parts"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn structured_output_follows_the_schema() {
    let sim = default_sim().await;
    let schema = json!({"type": "object", "additionalProperties": false, "required": ["city", "temp", "sunny"],
        "properties": {"city": {"type": "string"}, "temp": {"type": "integer"}, "sunny": {"type": "boolean"}}});
    let request = json!({"model": "m", "input": "weather as JSON",
        "text": {"format": {"type": "json_schema", "name": "weather", "strict": true, "schema": schema}}});
    let body = create(&sim, request.clone()).await;
    assert_eq!(body["text"]["format"]["name"], "weather");
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert_eq!(parsed, json!({"city": "example", "temp": 1, "sunny": true}));
    let events = stream(&sim, request).await;
    let streamed: String = events
        .iter()
        .filter(|(n, _)| n == "response.output_text.delta")
        .map(|(_, d)| d["delta"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(streamed, text);

    let body = create(
        &sim,
        json!({"model": "m", "input": "anything", "text": {"format": {"type": "json_object"}}}),
    )
    .await;
    let text = body["output"][0]["content"][0]["text"].as_str().unwrap();
    let parsed: Value = serde_json::from_str(text).unwrap();
    assert!(parsed["answer"].is_string());
    sim.shutdown().await;
}

#[tokio::test]
async fn max_output_tokens_makes_the_response_incomplete() {
    let sim = default_sim().await;
    let words = vec!["word"; 30].join(" ");
    let request = json!({"model": "m", "input": format!("echo {words}"), "max_output_tokens": 16});
    let body = create(&sim, request.clone()).await;
    assert_eq!(body["status"], "incomplete");
    assert_eq!(body["incomplete_details"]["reason"], "max_output_tokens");
    assert_eq!(body["max_output_tokens"], 16);
    assert_eq!(body["output"][0]["status"], "incomplete");
    assert_eq!(body["usage"]["output_tokens"], 16);
    assert_eq!(body["completed_at"], Value::Null);

    let events = stream(&sim, request).await;
    let (name, last) = events.last().unwrap();
    assert_eq!(name, "response.incomplete");
    assert_eq!(
        last["response"]["incomplete_details"]["reason"],
        "max_output_tokens"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn requests_are_validated_like_the_real_api() {
    let sim = default_sim().await;
    let check = async |body: Value, param: &str, code: Option<&str>| {
        let resp = post(&sim, &body).await;
        assert_eq!(resp.status(), 400, "{body}");
        let err: Value = resp.json().await.unwrap();
        assert_eq!(err["error"]["type"], "invalid_request_error", "{body}");
        assert_eq!(err["error"]["param"], param, "{body}");
        assert_eq!(err["error"]["code"].as_str(), code, "{body}");
        err["error"]["message"].as_str().unwrap().to_owned()
    };
    check(
        json!({"input": "hi"}),
        "model",
        Some("missing_required_parameter"),
    )
    .await;
    check(
        json!({"model": "m"}),
        "input",
        Some("missing_required_parameter"),
    )
    .await;
    check(
        json!({"model": "m", "input": {"role": "user"}}),
        "input",
        None,
    )
    .await;
    check(
        json!({"model": "m", "input": "hi", "max_output_tokens": 5}),
        "max_output_tokens",
        None,
    )
    .await;
    check(
        json!({"model": "m", "input": "hi", "stream": "yes"}),
        "stream",
        None,
    )
    .await;
    let message = check(
        json!({"model": "m", "input": "hi", "previous_response_id": "resp_1"}),
        "previous_response_id",
        None,
    )
    .await;
    assert!(message.contains("send the full conversation"), "{message}");
    check(
        json!({"model": "m", "input": "hi", "conversation": "conv_1"}),
        "conversation",
        None,
    )
    .await;
    // Explicit nulls and `background: false` are fine.
    let ok = post(
        &sim,
        &json!({"model": "m", "input": "hi", "previous_response_id": null, "background": false}),
    )
    .await;
    assert_eq!(ok.status(), 200);

    let resp = client()
        .post(format!("{}/v1/responses", sim.base_url()))
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    assert_eq!(sim.stats().by_outcome.invalid, 8);
    sim.shutdown().await;
}

#[tokio::test]
async fn key_is_checked_as_openai_does() {
    let sim = sim(SimConfig {
        require_key: Some("sk-test".into()),
        ..SimConfig::default()
    })
    .await;
    let url = format!("{}/v1/responses", sim.base_url());
    let body = json!({"model": "m", "input": "hi"});
    let resp = client().post(&url).json(&body).send().await.unwrap();
    assert_eq!(resp.status(), 401);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], "invalid_api_key");
    let resp = client()
        .post(&url)
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    sim.shutdown().await;
}

#[tokio::test]
async fn faults_apply_and_are_counted_under_openai() {
    let sim = default_sim().await;
    let body = json!({"model": "m", "input": "tell me something"});

    sim.set_faults(faults(&["error:503/openai"]));
    let resp = post(&sim, &body).await;
    assert_eq!(resp.status(), 503);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "server_error");

    sim.set_faults(faults(&["rate_limit:2"]));
    let resp = post(&sim, &body).await;
    assert_eq!(resp.status(), 429);
    assert_eq!(resp.headers()["retry-after"], "2");
    assert_eq!(resp.headers()["retry-after-ms"], "2000");

    // A fault scoped to another API leaves Responses alone.
    sim.set_faults(faults(&["error:500/anthropic"]));
    assert_eq!(post(&sim, &body).await.status(), 200);

    sim.set_faults(faults(&["truncate"]));
    let mut streamed = body.clone();
    streamed["stream"] = json!(true);
    let (text, failed) = read_stream(post(&sim, &streamed).await).await;
    assert!(!failed);
    let events = sse_events(&text);
    assert!(!events.is_empty());
    assert!(events.iter().all(|e| {
        let data = e.json();
        data["type"] != "response.completed" && data["type"] != "response.incomplete"
    }));

    sim.set_faults(faults(&["truncate:reset"]));
    let (_, failed) = read_stream(post(&sim, &streamed).await).await;
    assert!(failed);

    sim.set_faults(faults(&["corrupt:thai"]));
    let body_json: Value = post(&sim, &body).await.json().await.unwrap();
    assert!(has_thai(
        body_json["output"][0]["content"][0]["text"]
            .as_str()
            .unwrap()
    ));

    let stats = sim.stats();
    assert_eq!(stats.by_api.openai, 6);
    assert_eq!(stats.by_outcome.error, 1);
    assert_eq!(stats.by_outcome.rate_limited, 1);
    assert_eq!(stats.by_outcome.truncated, 2);
    assert_eq!(stats.by_outcome.corrupted, 1);
    let recorded = sim.recent_requests();
    assert!(
        recorded
            .iter()
            .all(|r| r.path == "/v1/responses" && r.api == ballast_sim::Api::OpenAi)
    );
    assert!(recorded[4].stream);
    assert_eq!(recorded[0].model.as_deref(), Some("m"));
    sim.shutdown().await;
}

#[tokio::test]
async fn slow_delays_the_first_event() {
    let sim = sim(SimConfig {
        faults: faults(&["slow:4"]),
        ..SimConfig::default()
    })
    .await;
    let started = tokio::time::Instant::now();
    let events = stream(&sim, json!({"model": "m", "input": "echo a b c"})).await;
    // 20 ms base ttft × 4, plus 5 ms × 4 for each of the three deltas.
    assert!(started.elapsed() >= std::time::Duration::from_millis(80 + 60));
    assert_eq!(events.last().unwrap().0, "response.completed");
    sim.shutdown().await;
}

#[tokio::test]
async fn only_the_v1_path_exists() {
    let sim = default_sim().await;
    let resp = client()
        .post(format!("{}/responses", sim.base_url()))
        .json(&json!({"model": "m", "input": "hi"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["type"], "invalid_request_error");
    sim.shutdown().await;
}
