//! The tool-call directive `[[ballast-sim:call NAME {ARGS}]]`, in every dialect, with agent-shaped
//! requests: the call carries exactly the arguments asked for, then the tool result is acknowledged.

use serde_json::{Value, json};

use crate::{client, default_sim, read_stream, sse_events};

const ARGS: &str =
    r#"{"command": "echo ballast-ok > out.txt", "description": "write [[x]]", "timeout": 5}"#;

fn prompt_text() -> String {
    format!("Run it. [[ballast-sim:call Bash {ARGS}]] Then say done.")
}

fn args() -> Value {
    serde_json::from_str(ARGS).unwrap()
}

async fn post(url: &str, body: &Value) -> reqwest::Response {
    let resp = client().post(url).json(body).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    resp
}

#[tokio::test]
async fn anthropic_directive_round_trip_streamed() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages?beta=true", sim.base_url());
    let tools = json!([
        {"name": "Read", "input_schema": {"type": "object", "properties": {"file_path": {"type": "string"}}, "required": ["file_path"]}},
        {"name": "Bash", "input_schema": {"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}}
    ]);
    // As Claude Code sends it: a system message inside `messages`, the prompt after a reminder.
    let user = json!({"role": "user", "content": [
        {"type": "text", "text": "<system-reminder>Tools: Bash, Read.</system-reminder>"},
        {"type": "text", "text": prompt_text(), "cache_control": {"type": "ephemeral"}}
    ]});
    let first = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "stream": true, "tools": tools,
        "messages": [user.clone(), {"role": "system", "content": "be brief"}]});
    let (text, _) = read_stream(post(&url, &first).await).await;
    let events = sse_events(&text);
    let start = events
        .iter()
        .map(|e| e.json())
        .find(|d| d["type"] == "content_block_start")
        .unwrap();
    assert_eq!(start["content_block"]["type"], "tool_use");
    assert_eq!(start["content_block"]["name"], "Bash");
    let fragments: String = events
        .iter()
        .map(|e| e.json())
        .filter(|d| d["type"] == "content_block_delta")
        .map(|d| d["delta"]["partial_json"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(serde_json::from_str::<Value>(&fragments).unwrap(), args());
    assert!(text.contains(r#""stop_reason":"tool_use""#));

    let call = json!({"type": "tool_use", "id": start["content_block"]["id"], "name": "Bash", "input": args()});
    let second = json!({"model": "claude-sonnet-4-5", "max_tokens": 1000, "tools": tools, "messages": [
        user,
        {"role": "assistant", "content": [call]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": start["content_block"]["id"], "content": "ran"},
            {"type": "text", "text": "<system-reminder>still here</system-reminder>"}
        ]}
    ]});
    let answer: Value = post(&url, &second).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["text"], "Tool result received: ran");
    assert_eq!(answer["stop_reason"], "end_turn");
    sim.shutdown().await;
}

#[tokio::test]
async fn anthropic_directive_fires_once_per_user_turn() {
    let sim = default_sim().await;
    let url = format!("{}/v1/messages", sim.base_url());
    let tools = json!([{"name": "Bash", "input_schema": {"type": "object"}}]);
    // The directive is in an earlier turn: the model answered since, so no call now.
    let body = json!({"model": "m", "max_tokens": 100, "tools": tools, "messages": [
        {"role": "user", "content": prompt_text()},
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "thanks"}
    ]});
    let answer: Value = post(&url, &body).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["type"], "text");
    // A tool that is not offered is not called.
    let body = json!({"model": "m", "max_tokens": 100, "tools": [{"name": "Read", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": prompt_text()}]});
    let answer: Value = post(&url, &body).await.json().await.unwrap();
    assert_eq!(answer["content"][0]["type"], "text");
    sim.shutdown().await;
}

#[tokio::test]
async fn openai_chat_directive_round_trip() {
    let sim = default_sim().await;
    let url = format!("{}/v1/chat/completions", sim.base_url());
    let tools = json!([
        {"type": "function", "function": {"name": "Read", "parameters": {"type": "object"}}},
        {"type": "function", "function": {"name": "Bash", "parameters": {"type": "object"}}}
    ]);
    let messages = json!([
        {"role": "system", "content": "You are an agent."},
        {"role": "user", "content": [{"type": "text", "text": "<system-reminder>hi</system-reminder>"}, {"type": "text", "text": prompt_text()}]}
    ]);
    let first: Value = post(
        &url,
        &json!({"model": "gpt-4o", "tools": tools, "messages": messages}),
    )
    .await
    .json()
    .await
    .unwrap();
    let call = &first["choices"][0]["message"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "Bash");
    let arguments: Value =
        serde_json::from_str(call["function"]["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, args());
    assert_eq!(first["choices"][0]["finish_reason"], "tool_calls");

    let mut history = messages.as_array().unwrap().clone();
    history.push(json!({"role": "assistant", "content": null, "tool_calls": [call]}));
    history.push(json!({"role": "tool", "tool_call_id": call["id"], "content": "ran"}));
    let second = json!({"model": "gpt-4o", "stream": true, "tools": tools, "messages": history});
    let (text, _) = read_stream(post(&url, &second).await).await;
    let said: String = sse_events(&text)
        .iter()
        .filter(|e| e.data != "[DONE]")
        .filter_map(|e| {
            e.json()["choices"][0]["delta"]["content"]
                .as_str()
                .map(str::to_owned)
        })
        .collect();
    assert_eq!(said, "Tool result received: ran");
    sim.shutdown().await;
}

#[tokio::test]
async fn responses_directive_round_trip_streamed() {
    let sim = default_sim().await;
    let url = format!("{}/v1/responses", sim.base_url());
    // As Codex sends it: developer and context messages, a namespace tool, a built-in tool.
    let tools = json!([
        {"type": "function", "name": "exec_command", "parameters": {"type": "object", "properties": {"cmd": {"type": "string"}}, "required": ["cmd"]}},
        {"type": "namespace", "name": "mcp", "description": "d", "tools": [{"type": "function", "name": "Bash", "parameters": {"type": "object"}}]},
        {"type": "web_search"}
    ]);
    let input = json!([
        {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "sandbox"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd</environment_context>"}]},
        {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt_text()}]}
    ]);
    let first = json!({"model": "gpt-5", "stream": true, "store": false, "tools": tools, "input": input,
        "include": ["reasoning.encrypted_content"]});
    let (text, _) = read_stream(post(&url, &first).await).await;
    let events = sse_events(&text);
    let done = events
        .iter()
        .map(|e| e.json())
        .find(|d| d["type"] == "response.output_item.done")
        .unwrap();
    let item = &done["item"];
    assert_eq!(item["type"], "function_call");
    assert_eq!(item["name"], "Bash");
    assert_eq!(item["namespace"], "mcp");
    let arguments: Value = serde_json::from_str(item["arguments"].as_str().unwrap()).unwrap();
    assert_eq!(arguments, args());
    assert!(text.contains("response.completed"));

    let mut history = input.as_array().unwrap().clone();
    history.push(item.clone());
    history
        .push(json!({"type": "function_call_output", "call_id": item["call_id"], "output": "ran"}));
    let second = json!({"model": "gpt-5", "tools": tools, "input": history});
    let answer: Value = post(&url, &second).await.json().await.unwrap();
    assert_eq!(
        answer["output"][0]["content"][0]["text"],
        "Tool result received: ran"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn gemini_directive_round_trip() {
    let sim = default_sim().await;
    let url = format!(
        "{}/v1beta/models/gemini-2.5-flash:generateContent",
        sim.base_url()
    );
    let tools = json!([{"functionDeclarations": [
        {"name": "Read", "parameters": {"type": "OBJECT"}},
        {"name": "Bash", "parameters": {"type": "OBJECT"}}
    ]}]);
    let user = json!({"role": "user", "parts": [{"text": prompt_text()}]});
    let first: Value = post(&url, &json!({"contents": [user], "tools": tools}))
        .await
        .json()
        .await
        .unwrap();
    let call = &first["candidates"][0]["content"]["parts"][0]["functionCall"];
    assert_eq!(call["name"], "Bash");
    assert_eq!(call["args"], args());

    let second = json!({"tools": tools, "contents": [
        user,
        {"role": "model", "parts": [{"functionCall": call}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "Bash", "response": {"output": "ran"}}}]}
    ]});
    let answer: Value = post(&url, &second).await.json().await.unwrap();
    // A lone `output` key reads as its text, as a translated tool result does on the other APIs.
    assert_eq!(
        answer["candidates"][0]["content"]["parts"][0]["text"],
        "Tool result received: ran"
    );
    sim.shutdown().await;
}
