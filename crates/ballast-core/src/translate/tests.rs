//! Table-driven and property tests for cross-format translation: real-shaped payloads for every pair, stream transcripts, edge cases, round trips.

use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;
use crate::api::ApiFormat::{
    self, AnthropicMessages as A, Gemini as G, OpenAiChat as O, OpenAiResponses as R,
};
use crate::model::*;
use crate::sse::SseParser;

pub(super) const ALL: [ApiFormat; 4] = [O, A, G, R];
pub(super) const PNG: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";

pub(super) fn opts() -> EncodeOptions<'static> {
    EncodeOptions {
        upstream_model: "up-model",
        default_max_tokens: 4096,
        rules: crate::capability::ModelRules {
            token_limit: crate::capability::TokenLimit::MaxCompletionTokens,
            ..crate::capability::ModelRules::PERMISSIVE
        },
    }
}

pub(super) fn decode(format: ApiFormat, body: &Value) -> ChatRequest {
    decode_request(format, &serde_json::to_vec(body).unwrap())
        .unwrap_or_else(|e| panic!("decode {format}: {e}"))
}

pub(super) fn encode(format: ApiFormat, req: &ChatRequest) -> (Value, Vec<String>) {
    let enc =
        encode_request(format, req, &opts()).unwrap_or_else(|e| panic!("encode {format}: {e}"));
    (serde_json::from_slice(&enc.body).unwrap(), enc.warnings)
}

/// Replaces tool-call ids with their order of first appearance, so synthesised (Gemini) ids compare.
fn renumber_ids(v: &mut Value, seen: &mut Vec<String>) {
    match v {
        Value::Object(map) => {
            for (k, child) in map.iter_mut() {
                if matches!(
                    k.as_str(),
                    "id" | "tool_call_id" | "tool_use_id" | "call_id"
                ) && let Value::String(s) = child
                {
                    let n = match seen.iter().position(|x| x == s) {
                        Some(n) => n,
                        None => {
                            seen.push(s.clone());
                            seen.len() - 1
                        }
                    };
                    *s = format!("id{n}");
                } else {
                    renumber_ids(child, seen);
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| renumber_ids(c, seen)),
        _ => {}
    }
}

fn ids_renumbered(mut v: Value) -> Value {
    renumber_ids(&mut v, &mut Vec::new());
    v
}

// ---------------------------------------------------------------------------------------------------
// One conversation in each client format: system, text, image, parallel tool calls (one with empty
// arguments), a tool result that is an error, unicode, params.

fn openai_request() -> Value {
    json!({
        "model": "route-a",
        "messages": [
            {"role": "system", "content": "You are terse."},
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Zürich? 🌦"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
            ]},
            {"role": "assistant", "content": null, "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": ""}}
            ]},
            {"role": "tool", "tool_call_id": "call_1", "content": "12°C, rain"},
            {"role": "tool", "tool_call_id": "call_2", "content": "Error: clock unavailable"},
            {"role": "assistant", "content": "It is 12°C and raining."},
            {"role": "user", "content": "Thanks!"}
        ],
        "tools": [
            {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
            {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
        ],
        "tool_choice": "auto",
        "max_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stop": ["END"],
        "stream": true,
        "stream_options": {"include_usage": true},
        "user": "user-42"
    })
}

fn anthropic_request() -> Value {
    json!({
        "model": "route-a",
        "max_tokens": 300,
        "system": "You are terse.",
        "messages": [
            {"role": "user", "content": [
                {"type": "text", "text": "Weather in Zürich? 🌦"},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
            ]},
            {"role": "assistant", "content": [
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "12°C, rain"},
                {"type": "tool_result", "tool_use_id": "call_2", "content": "clock unavailable", "is_error": true}
            ]},
            {"role": "assistant", "content": "It is 12°C and raining."},
            {"role": "user", "content": "Thanks!"}
        ],
        "tools": [
            {"name": "get_weather", "description": "Weather for a city",
             "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
        ],
        "tool_choice": {"type": "auto"},
        "temperature": 0.5,
        "top_p": 0.9,
        "stop_sequences": ["END"],
        "stream": true,
        "metadata": {"user_id": "user-42"}
    })
}

fn gemini_request() -> Value {
    json!({
        "systemInstruction": {"parts": [{"text": "You are terse."}]},
        "contents": [
            {"role": "user", "parts": [
                {"text": "Weather in Zürich? 🌦"},
                {"inlineData": {"mimeType": "image/png", "data": PNG}}
            ]},
            {"role": "model", "parts": [
                {"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}}},
                {"functionCall": {"name": "get_time", "args": {}}}
            ]},
            {"role": "user", "parts": [
                {"functionResponse": {"name": "get_weather", "response": {"output": "12°C, rain"}}},
                {"functionResponse": {"name": "get_time", "response": {"error": "clock unavailable"}}}
            ]},
            {"role": "model", "parts": [{"text": "It is 12°C and raining."}]},
            {"role": "user", "parts": [{"text": "Thanks!"}]}
        ],
        "tools": [{"functionDeclarations": [
            {"name": "get_weather", "description": "Weather for a city",
             "parameters": {"type": "OBJECT", "properties": {"city": {"type": "STRING"}}, "required": ["city"]}},
            {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}}
        ]}],
        "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
        "generationConfig": {"maxOutputTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
    })
}

fn responses_request() -> Value {
    json!({
        "model": "route-a",
        "instructions": "You are terse.",
        "input": [
            {"role": "user", "content": [
                {"type": "input_text", "text": "Weather in Zürich? 🌦"},
                {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}"), "detail": "auto"}
            ]},
            {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"},
            {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": ""},
            {"type": "function_call_output", "call_id": "call_1", "output": "12°C, rain"},
            {"type": "function_call_output", "call_id": "call_2", "output": "Error: clock unavailable"},
            {"type": "message", "role": "assistant", "content": [
                {"type": "output_text", "text": "It is 12°C and raining.", "annotations": []}]},
            {"role": "user", "content": "Thanks!"}
        ],
        "tools": [
            {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": null,
             "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
            {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}}
        ],
        "tool_choice": "auto",
        "max_output_tokens": 300,
        "temperature": 0.5,
        "top_p": 0.9,
        "stream": true,
        "store": false,
        "user": "user-42"
    })
}

fn client_request(format: ApiFormat) -> Value {
    match format {
        O => openai_request(),
        A => anthropic_request(),
        G => gemini_request(),
        R => responses_request(),
    }
}

/// What each target should receive for that conversation (ids renumbered).
fn expected_upstream(format: ApiFormat) -> Value {
    let v = match format {
        O => json!({
            "model": "up-model",
            "messages": [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Zürich? 🌦"},
                    {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
                ]},
                {"role": "assistant", "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}
                ]},
                {"role": "tool", "tool_call_id": "call_1", "content": "12°C, rain"},
                {"role": "tool", "tool_call_id": "call_2", "content": "Error: clock unavailable"},
                {"role": "assistant", "content": "It is 12°C and raining."},
                {"role": "user", "content": "Thanks!"}
            ],
            "tools": [
                {"type": "function", "function": {"name": "get_weather", "description": "Weather for a city",
                    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}},
                {"type": "function", "function": {"name": "get_time", "parameters": {"type": "object", "properties": {}}}}
            ],
            "tool_choice": "auto",
            "max_completion_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stop": ["END"],
            "stream": true,
            "stream_options": {"include_usage": true},
            "user": "user-42"
        }),
        A => json!({
            "model": "up-model",
            "max_tokens": 300,
            "system": "You are terse.",
            "messages": [
                {"role": "user", "content": [
                    {"type": "text", "text": "Weather in Zürich? 🌦"},
                    {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}
                ]},
                {"role": "assistant", "content": [
                    {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Zürich"}},
                    {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}
                ]},
                {"role": "user", "content": [
                    {"type": "tool_result", "tool_use_id": "call_1", "content": "12°C, rain"},
                    {"type": "tool_result", "tool_use_id": "call_2", "content": "clock unavailable", "is_error": true}
                ]},
                {"role": "assistant", "content": [{"type": "text", "text": "It is 12°C and raining."}]},
                {"role": "user", "content": [{"type": "text", "text": "Thanks!"}]}
            ],
            "tools": [
                {"name": "get_weather", "description": "Weather for a city",
                 "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time", "input_schema": {"type": "object", "properties": {}}}
            ],
            "tool_choice": {"type": "auto"},
            "temperature": 0.5,
            "top_p": 0.9,
            "stop_sequences": ["END"],
            "stream": true,
            "metadata": {"user_id": "user-42"}
        }),
        G => json!({
            "systemInstruction": {"parts": [{"text": "You are terse."}]},
            "contents": [
                {"role": "user", "parts": [
                    {"text": "Weather in Zürich? 🌦"},
                    {"inlineData": {"mimeType": "image/png", "data": PNG}}
                ]},
                {"role": "model", "parts": [
                    {"functionCall": {"name": "get_weather", "args": {"city": "Zürich"}},
                     "thoughtSignature": "skip_thought_signature_validator"},
                    {"functionCall": {"name": "get_time", "args": {}}}
                ]},
                {"role": "user", "parts": [
                    {"functionResponse": {"name": "get_weather", "response": {"output": "12°C, rain"}}},
                    {"functionResponse": {"name": "get_time", "response": {"error": "clock unavailable"}}}
                ]},
                {"role": "model", "parts": [{"text": "It is 12°C and raining."}]},
                {"role": "user", "parts": [{"text": "Thanks!"}]}
            ],
            "tools": [{"functionDeclarations": [
                {"name": "get_weather", "description": "Weather for a city",
                 "parametersJsonSchema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"name": "get_time", "parametersJsonSchema": {"type": "object", "properties": {}}}
            ]}],
            "toolConfig": {"functionCallingConfig": {"mode": "AUTO"}},
            "generationConfig": {"maxOutputTokens": 300, "temperature": 0.5, "topP": 0.9, "stopSequences": ["END"]}
        }),
        R => json!({
            "model": "up-model",
            "input": [
                {"type": "message", "role": "system", "content": "You are terse."},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_text", "text": "Weather in Zürich? 🌦"},
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}"), "detail": "auto"}
                ]},
                {"type": "function_call", "call_id": "call_1", "name": "get_weather", "arguments": "{\"city\":\"Zürich\"}"},
                {"type": "function_call", "call_id": "call_2", "name": "get_time", "arguments": "{}"},
                {"type": "function_call_output", "call_id": "call_1", "output": "12°C, rain"},
                {"type": "function_call_output", "call_id": "call_2", "output": "Error: clock unavailable"},
                {"type": "message", "role": "assistant", "content": "It is 12°C and raining."},
                {"type": "message", "role": "user", "content": "Thanks!"}
            ],
            "tools": [
                {"type": "function", "name": "get_weather", "description": "Weather for a city", "strict": false,
                 "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}},
                {"type": "function", "name": "get_time", "parameters": {"type": "object", "properties": {}}, "strict": false}
            ],
            "tool_choice": "auto",
            "max_output_tokens": 300,
            "temperature": 0.5,
            "top_p": 0.9,
            "stream": true,
            "store": false,
            "user": "user-42"
        }),
    };
    ids_renumbered(v)
}

#[test]
fn every_client_format_to_every_target() {
    for from in ALL {
        let req = decode(from, &client_request(from));
        for to in ALL {
            let (got, warnings) = encode(to, &req);
            let mut expected = expected_upstream(to);
            // Fields a pair cannot carry: the OpenAI error flag is a text prefix; Gemini has no user,
            // stream or include_usage in the body (the URL says it).
            if to == O && from != O {
                // The error result text gains the "Error: " prefix only once.
                assert_eq!(got["messages"][4]["content"], "Error: clock unavailable");
            }
            if to != G && from == G {
                for key in ["user", "stream", "stream_options", "metadata"] {
                    expected.as_object_mut().unwrap().remove(key);
                }
            }
            // Responses has no stop sequences.
            if from == R {
                match to {
                    O => drop(expected.as_object_mut().unwrap().remove("stop")),
                    A => drop(expected.as_object_mut().unwrap().remove("stop_sequences")),
                    G => drop(
                        expected["generationConfig"]
                            .as_object_mut()
                            .unwrap()
                            .remove("stopSequences"),
                    ),
                    R => {}
                }
            }
            if to == A && (from == O || from == R) {
                // OpenAI's error result has no flag: it arrives as text.
                expected["messages"][2]["content"][1] = json!(
                    {"type": "tool_result", "tool_use_id": "id1", "content": "Error: clock unavailable"});
            }
            if to == G && (from == O || from == R) {
                expected["contents"][2]["parts"][1] = json!(
                    {"functionResponse": {"name": "get_time", "response": {"output": "Error: clock unavailable"}}});
            }
            assert_eq!(ids_renumbered(got), expected, "{from} -> {to}");
            if to == G && from != G {
                assert_eq!(
                    warnings,
                    vec!["dropped field user: not supported by gemini"],
                    "{from} -> {to}"
                );
            } else if to == R && from != R {
                assert_eq!(
                    warnings,
                    vec!["dropped field stop: not supported by openai-responses"],
                    "{from} -> {to}"
                );
            } else {
                assert!(warnings.is_empty(), "{from} -> {to}: {warnings:?}");
            }
        }
    }
}

#[test]
fn decoded_conversations_agree_across_formats() {
    let o = decode(O, &openai_request());
    assert_eq!(o.system, vec!["You are terse."]);
    assert_eq!(o.messages.len(), 5);
    assert_eq!(o.max_tokens, Some(300));
    assert!(o.stream && o.include_usage);
    assert_eq!(o.user.as_deref(), Some("user-42"));
    assert_eq!(o.tool_choice, Some(ToolChoice::Auto));
    let Part::ToolCall(c) = &o.messages[1].content[1] else {
        panic!()
    };
    assert_eq!((c.id.as_str(), c.arguments.as_str()), ("call_2", "{}"));
    let Part::ToolResult(r) = &o.messages[2].content[1] else {
        panic!()
    };
    assert_eq!(r.name.as_deref(), Some("get_time"));
    assert_eq!(
        r.content,
        vec![Part::Text("Error: clock unavailable".into())]
    );

    // The same conversation from a Responses client means the same as from a Chat Completions one.
    let r = decode(R, &responses_request());
    assert_eq!(
        (&r.system, &r.messages, &r.tools),
        (&o.system, &o.messages, &o.tools)
    );
    assert_eq!(
        (r.max_tokens, r.stream, r.user.as_deref(), &r.tool_choice),
        (Some(300), true, Some("user-42"), &Some(ToolChoice::Auto))
    );
    assert!(r.dropped.is_empty(), "{:?}", r.dropped);

    let a = decode(A, &anthropic_request());
    let Part::ToolResult(r) = &a.messages[2].content[1] else {
        panic!()
    };
    assert!(r.is_error);
    assert_eq!(r.name.as_deref(), Some("get_time"));
    assert_eq!(
        a.messages[0].content[1],
        Part::Image(Image::Base64 {
            media_type: "image/png".into(),
            data: PNG.into()
        })
    );

    let g = decode(G, &gemini_request());
    let Part::ToolCall(c0) = &g.messages[1].content[0] else {
        panic!()
    };
    let Part::ToolCall(c1) = &g.messages[1].content[1] else {
        panic!()
    };
    assert_eq!((c0.id.as_str(), c1.id.as_str()), ("call_1_0", "call_1_1"));
    let Part::ToolResult(r0) = &g.messages[2].content[0] else {
        panic!()
    };
    let Part::ToolResult(r1) = &g.messages[2].content[1] else {
        panic!()
    };
    assert_eq!(
        (r0.call_id.as_str(), r1.call_id.as_str()),
        ("call_1_0", "call_1_1")
    );
    assert!(r1.is_error && !r0.is_error);
    // OpenAPI upper-case types are lowered for other targets.
    assert_eq!(
        g.tools[0].parameters["properties"]["city"]["type"],
        "string"
    );
    assert_eq!(
        g.messages,
        a.messages
            .iter()
            .cloned()
            .map(|mut m| {
                for p in &mut m.content {
                    match p {
                        Part::ToolCall(c) => {
                            c.id = if c.id == "call_1" {
                                "call_1_0".into()
                            } else {
                                "call_1_1".into()
                            }
                        }
                        Part::ToolResult(r) => {
                            r.call_id = if r.call_id == "call_1" {
                                "call_1_0".into()
                            } else {
                                "call_1_1".into()
                            }
                        }
                        _ => {}
                    }
                }
                m
            })
            .collect::<Vec<_>>()
    );
}

// ---------------------------------------------------------------------------------------------------
// Request features, table-driven: (format, body) → an assertion on the canonical request.

#[test]
fn request_decoding_table() {
    type Check = fn(&ChatRequest);
    let cases: Vec<(ApiFormat, Value, Check)> = vec![
        // developer messages anywhere are system segments; content parts; max_completion_tokens wins.
        (
            O,
            json!({"model": "m", "messages": [
            {"role": "developer", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "user", "content": "hi"},
            {"role": "system", "content": "late"}],
            "max_tokens": 5, "max_completion_tokens": 7, "stop": "X"}),
            |r| {
                assert_eq!(r.system, vec!["a", "b", "late"]);
                assert_eq!(r.max_tokens, Some(7));
                assert_eq!(r.stop, vec!["X"]);
            },
        ),
        // http image URL, json_schema, required, parallel_tool_calls, unknown fields → dropped.
        (
            O,
            json!({"model": "m", "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": "https://example.com/cat.png", "detail": "high"}}]}],
            "response_format": {"type": "json_schema", "json_schema": {"name": "cat", "schema": {"type": "object"}, "strict": true}},
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": "required", "parallel_tool_calls": false, "seed": 3, "frequency_penalty": 0, "n": 1,
            "some_future_field": {"x": 1}}),
            |r| {
                assert_eq!(
                    r.messages[0].content,
                    vec![Part::Image(Image::Url(
                        "https://example.com/cat.png".into()
                    ))]
                );
                assert_eq!(
                    r.response_format,
                    Some(ResponseFormat::JsonSchema {
                        name: "cat".into(),
                        schema: json!({"type": "object"}),
                        strict: Some(true)
                    })
                );
                assert_eq!(r.tool_choice, Some(ToolChoice::Required));
                assert_eq!(r.parallel_tool_calls, Some(false));
                assert_eq!(
                    r.tools[0].parameters,
                    json!({"type": "object", "properties": {}})
                );
                assert_eq!(r.dropped, vec!["seed", "some_future_field"]);
            },
        ),
        (
            O,
            json!({"model": "m", "messages": [{"role": "user", "content": "x"}],
            "tools": [{"type": "function", "function": {"name": "f"}}],
            "tool_choice": {"type": "function", "function": {"name": "f"}}, "response_format": {"type": "json_object"}}),
            |r| {
                assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
                assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
            },
        ),
        // Empty content is kept as an empty message; empty text parts vanish.
        (
            O,
            json!({"model": "m", "messages": [{"role": "user", "content": ""}, {"role": "assistant", "content": [{"type": "text", "text": ""}]}]}),
            |r| {
                assert!(r.messages.iter().all(|m| m.content.is_empty()));
            },
        ),
        // Anthropic: system blocks, role:system inside messages (Claude Code), thinking and cache_control dropped.
        (
            A,
            json!({"model": "m", "max_tokens": 10,
            "system": [{"type": "text", "text": "s1", "cache_control": {"type": "ephemeral"}}, {"type": "text", "text": "s2"}],
            "messages": [
                {"role": "system", "content": "s3"},
                {"role": "user", "content": "q"},
                {"role": "assistant", "content": [{"type": "thinking", "thinking": "hmm", "signature": "x"}, {"type": "text", "text": "a"}]}],
            "top_k": 40, "thinking": {"type": "enabled", "budget_tokens": 1024},
            "tool_choice": {"type": "any", "disable_parallel_tool_use": true},
            "tools": [{"name": "f", "input_schema": {"type": "object"}}, {"type": "web_search_20250305", "name": "web_search"}]}),
            |r| {
                assert_eq!(r.system, vec!["s1", "s2", "s3"]);
                assert_eq!(r.messages[1].content, vec![Part::Text("a".into())]);
                assert_eq!(r.top_k, Some(40));
                assert_eq!(r.tool_choice, Some(ToolChoice::Required));
                assert_eq!(r.parallel_tool_calls, Some(false));
                assert_eq!(r.tools.len(), 1);
                assert_eq!(
                    r.dropped,
                    vec![
                        "tools[1] (web_search_20250305)",
                        "cache_control",
                        "thinking blocks",
                        "thinking"
                    ]
                );
            },
        ),
        // Anthropic: URL image, tool_result with image blocks, PDF document, output_config json_schema, tool choice by name.
        (
            A,
            json!({"model": "m", "max_tokens": 10, "messages": [
            {"role": "user", "content": [
                {"type": "image", "source": {"type": "url", "url": "https://example.com/a.jpg"}},
                {"type": "document", "source": {"type": "base64", "media_type": "application/pdf", "data": "JVBERi0="}}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_01", "name": "shot", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": [
                {"type": "text", "text": "see"}, {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}}]}]}],
            "tools": [{"name": "shot", "input_schema": {"type": "object"}}],
            "tool_choice": {"type": "tool", "name": "shot"},
            "output_config": {"format": {"type": "json_schema", "schema": {"type": "object"}}}}),
            |r| {
                assert_eq!(
                    r.messages[0].content[0],
                    Part::Image(Image::Url("https://example.com/a.jpg".into()))
                );
                assert_eq!(
                    r.messages[0].content[1],
                    Part::Image(Image::Base64 {
                        media_type: "application/pdf".into(),
                        data: "JVBERi0=".into()
                    })
                );
                let Part::ToolResult(tr) = &r.messages[2].content[0] else {
                    panic!()
                };
                assert_eq!(tr.content.len(), 2);
                assert_eq!(tr.name.as_deref(), Some("shot"));
                assert_eq!(r.tool_choice, Some(ToolChoice::Tool("shot".into())));
                assert!(matches!(
                    r.response_format,
                    Some(ResponseFormat::JsonSchema { .. })
                ));
            },
        ),
        // Gemini: snake_case accepted, ANY with one name → that tool, responseSchema → json_schema, thoughts dropped.
        (
            G,
            json!({"contents": [{"role": "user", "parts": [{"text": "q"}]},
                                 {"role": "model", "parts": [{"text": "thinking...", "thought": true}, {"text": "a"}]}],
            "system_instruction": {"parts": [{"text": "s"}]},
            "tools": [{"functionDeclarations": [{"name": "f"}]}, {"googleSearch": {}}],
            "toolConfig": {"functionCallingConfig": {"mode": "ANY", "allowedFunctionNames": ["f"]}},
            "generationConfig": {"topK": 40, "responseMimeType": "application/json",
                "responseSchema": {"type": "OBJECT", "properties": {"a": {"type": "INTEGER"}}}, "seed": 1},
            "safetySettings": []}),
            |r| {
                assert_eq!(r.system, vec!["s"]);
                assert_eq!(r.messages[1].content, vec![Part::Text("a".into())]);
                assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
                assert_eq!(r.top_k, Some(40));
                assert_eq!(
                    r.response_format,
                    Some(ResponseFormat::JsonSchema {
                        name: "response".into(),
                        schema: json!({"type": "object", "properties": {"a": {"type": "integer"}}}),
                        strict: None
                    })
                );
                assert_eq!(
                    r.dropped,
                    vec![
                        "thought parts",
                        "tools[1].googleSearch",
                        "generationConfig.seed",
                        "safetySettings"
                    ]
                );
            },
        ),
        // Gemini: a result with an explicit id, arbitrary response objects kept as JSON text.
        (
            G,
            json!({"contents": [
            {"role": "model", "parts": [{"functionCall": {"id": "abc", "name": "f", "args": {"x": 1}}}]},
            {"role": "user", "parts": [{"functionResponse": {"id": "abc", "name": "f", "response": {"temp": 3, "unit": "C"}}}]}]}),
            |r| {
                let Part::ToolResult(tr) = &r.messages[1].content[0] else {
                    panic!()
                };
                assert_eq!(tr.call_id, "abc");
                assert_eq!(
                    tr.content,
                    vec![Part::Text("{\"temp\":3,\"unit\":\"C\"}".into())]
                );
            },
        ),
    ];
    for (i, (format, body, check)) in cases.into_iter().enumerate() {
        let req = decode_request(format, &serde_json::to_vec(&body).unwrap())
            .unwrap_or_else(|e| panic!("case {i}: {e}"));
        check(&req);
    }
}

#[test]
fn request_errors_name_the_field() {
    let cases: Vec<(ApiFormat, Value, &str)> = vec![
        (
            O,
            json!({"model": "m", "messages": [{"role": "user", "content": "a"}, {"role": "user", "content": "b"},
            {"role": "user", "content": [{"type": "foo"}]}]}),
            "invalid:messages[2].content[0].type: unknown content type \"foo\"",
        ),
        (
            O,
            json!({"model": "m", "messages": [{"role": "wizard", "content": "a"}]}),
            "invalid:messages[0].role: unknown role \"wizard\"",
        ),
        (
            O,
            json!({"model": "m", "messages": [{"role": "tool", "content": "a"}]}),
            "invalid:messages[0].tool_call_id: missing",
        ),
        (
            O,
            json!({"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio", "input_audio": {}}]}]}),
            "unsupported",
        ),
        (
            A,
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "bar"}]}]}),
            "invalid:messages[0].content[0].type: unknown content type \"bar\"",
        ),
        (
            A,
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "tool_use", "id": "x", "name": "f", "input": {}}]}]}),
            "invalid:messages[0].content[0].type: \"tool_use\" blocks are not allowed here",
        ),
        (
            A,
            json!({"model": "m", "max_tokens": 1, "messages": [{"role": "user", "content": [{"type": "image", "source": {"type": "file", "file_id": "f"}}]}]}),
            "unsupported",
        ),
        (
            G,
            json!({"contents": [{"role": "robot", "parts": []}]}),
            "invalid:contents[0].role: unknown role \"robot\"",
        ),
        (
            G,
            json!({"contents": [], "cachedContent": "cachedContents/x"}),
            "unsupported",
        ),
        (O, json!({"messages": "nope"}), "invalid-body"),
        (A, json!([1, 2]), "invalid-body"),
    ];
    for (format, body, want) in cases {
        let err = decode_request(format, &serde_json::to_vec(&body).unwrap()).unwrap_err();
        let got = match &err {
            TranslateError::Invalid {
                message,
                param: Some(_),
            } => format!("invalid:{message}"),
            TranslateError::Invalid { param: None, .. } => "invalid-body".to_owned(),
            TranslateError::Unsupported { .. } => "unsupported".to_owned(),
            TranslateError::Upstream { .. } => "upstream".to_owned(),
        };
        assert_eq!(got, want, "{format}: {err}");
    }
    // Not JSON at all.
    assert!(matches!(
        decode_request(G, b"{oops"),
        Err(TranslateError::Invalid { param: None, .. })
    ));
}

fn simple(messages: Vec<Message>) -> ChatRequest {
    ChatRequest {
        model: "m".into(),
        messages,
        ..ChatRequest::default()
    }
}

fn user(parts: Vec<Part>) -> Message {
    Message {
        role: Role::User,
        content: parts,
    }
}

fn assistant(parts: Vec<Part>) -> Message {
    Message {
        role: Role::Assistant,
        content: parts,
    }
}

fn text(s: &str) -> Part {
    Part::Text(s.into())
}

#[test]
fn request_encoding_table() {
    // (target, request, expected subset of the body as (JSON pointer, value), expected warnings)
    let url_image = simple(vec![user(vec![Part::Image(Image::Url(
        "https://example.com/x.png".into(),
    ))])]);
    let mut params = simple(vec![user(vec![text("q")])]);
    params.top_k = Some(5);
    params.temperature = Some(1.5);
    params.response_format = Some(ResponseFormat::JsonObject);
    params.tools = vec![ToolSpec {
        name: "f".into(),
        description: None,
        parameters: json!({"type": "object"}),
        strict: Some(true),
    }];
    params.parallel_tool_calls = Some(false);
    params.dropped = vec!["seed".into()];
    let mut schema = simple(vec![user(vec![text("q")])]);
    schema.response_format = Some(ResponseFormat::JsonSchema {
        name: "r".into(),
        schema: json!({"type": "object"}),
        strict: Some(true),
    });
    schema.tool_choice = Some(ToolChoice::Tool("f".into()));
    // Consecutive same-role messages, empty messages and text before tool results.
    let messy = simple(vec![
        user(vec![text("a")]),
        user(vec![text("")]),
        user(vec![text("b")]),
        assistant(vec![Part::ToolCall(ToolCall {
            id: "functions.f:0".into(),
            name: "f".into(),
            arguments: String::new(),
        })]),
        user(vec![
            text("note"),
            Part::ToolResult(ToolResult {
                call_id: "functions.f:0".into(),
                name: None,
                content: vec![],
                is_error: false,
            }),
        ]),
    ]);
    type Case = (
        ApiFormat,
        ChatRequest,
        Vec<(&'static str, Value)>,
        Vec<&'static str>,
    );
    let cases: Vec<Case> = vec![
        (
            O,
            url_image.clone(),
            vec![(
                "/messages/0/content/0/image_url/url",
                json!("https://example.com/x.png"),
            )],
            vec![],
        ),
        (
            A,
            url_image.clone(),
            vec![(
                "/messages/0/content/0/source",
                json!({"type": "url", "url": "https://example.com/x.png"}),
            )],
            vec![],
        ),
        (
            O,
            params.clone(),
            vec![
                ("/temperature", json!(1.5)),
                ("/parallel_tool_calls", json!(false)),
                ("/response_format", json!({"type": "json_object"})),
                ("/tools/0/function/strict", json!(true)),
            ],
            vec![
                "dropped field seed: not translated to openai-chat",
                "dropped field top_k: not supported by openai-chat",
            ],
        ),
        (
            A,
            params.clone(),
            vec![
                ("/temperature", json!(1.0)),
                ("/top_k", json!(5)),
                ("/max_tokens", json!(4096)),
                (
                    "/tool_choice",
                    json!({"type": "auto", "disable_parallel_tool_use": true}),
                ),
                ("/tools/0/strict", json!(true)),
            ],
            vec![
                "dropped field seed: not translated to anthropic-messages",
                "temperature 1.5 clamped to 1 for anthropic-messages",
                "dropped field response_format (json_object): not supported by anthropic-messages",
            ],
        ),
        (
            G,
            params.clone(),
            vec![(
                "/generationConfig",
                json!({"temperature": 1.5, "topK": 5, "responseMimeType": "application/json"}),
            )],
            vec![
                "dropped field seed: not translated to gemini",
                "dropped field parallel_tool_calls: not supported by gemini",
            ],
        ),
        (
            O,
            schema.clone(),
            vec![(
                "/response_format",
                json!({"type": "json_schema", "json_schema": {"name": "r", "schema": {"type": "object"}, "strict": true}}),
            )],
            vec![],
        ),
        (
            A,
            schema.clone(),
            vec![(
                "/output_config",
                json!({"format": {"type": "json_schema", "schema": {"type": "object"}}}),
            )],
            vec![],
        ),
        (
            G,
            schema.clone(),
            vec![(
                "/generationConfig",
                json!({"responseMimeType": "application/json", "responseJsonSchema": {"type": "object"}}),
            )],
            vec![],
        ),
        (
            A,
            messy.clone(),
            vec![(
                "/messages",
                json!([
            {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "functions_f_0", "name": "f", "input": {}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "functions_f_0"}, {"type": "text", "text": "note"}]}]),
            )],
            vec![],
        ),
        (
            G,
            messy.clone(),
            vec![(
                "/contents",
                json!([
            {"role": "user", "parts": [{"text": "a"}, {"text": "b"}]},
            {"role": "model", "parts": [{"functionCall": {"name": "f", "args": {}}, "thoughtSignature": "skip_thought_signature_validator"}]},
            {"role": "user", "parts": [{"text": "note"}, {"functionResponse": {"name": "f", "response": {"output": ""}}}]}]),
            )],
            vec![],
        ),
        (
            O,
            messy.clone(),
            vec![(
                "/messages",
                json!([
            {"role": "user", "content": "a"}, {"role": "user", "content": ""}, {"role": "user", "content": "b"},
            {"role": "assistant", "tool_calls": [{"id": "functions.f:0", "type": "function", "function": {"name": "f", "arguments": "{}"}}]},
            {"role": "tool", "tool_call_id": "functions.f:0", "content": ""},
            {"role": "user", "content": "note"}]),
            )],
            vec![],
        ),
    ];
    for (i, (format, req, checks, warnings)) in cases.into_iter().enumerate() {
        let (body, got_warnings) = encode(format, &req);
        for (ptr, want) in checks {
            assert_eq!(
                body.pointer(ptr),
                Some(&want),
                "case {i} ({format}) {ptr}: {body}"
            );
        }
        assert_eq!(got_warnings, warnings, "case {i} ({format})");
    }
}

#[test]
fn requests_a_target_cannot_serve_are_unsupported() {
    let url_image = simple(vec![user(vec![Part::Image(Image::Url(
        "https://example.com/x.png".into(),
    ))])]);
    let empty = simple(vec![user(vec![])]);
    let bad_args = simple(vec![
        user(vec![text("q")]),
        assistant(vec![Part::ToolCall(ToolCall {
            id: "c".into(),
            name: "f".into(),
            arguments: "[1".into(),
        })]),
    ]);
    let audio = simple(vec![user(vec![Part::Image(Image::Base64 {
        media_type: "audio/wav".into(),
        data: "AAAA".into(),
    })])]);
    for (format, req) in [
        (G, &url_image),
        (A, &empty),
        (G, &empty),
        (A, &bad_args),
        (G, &bad_args),
        (A, &audio),
    ] {
        let err = encode_request(format, req, &opts()).unwrap_err();
        assert!(
            matches!(err, TranslateError::Unsupported { .. }),
            "{format}: {err}"
        );
    }
    // OpenAI passes malformed argument text through untouched (it is only history there).
    assert!(encode_request(O, &bad_args, &opts()).is_ok());
    // Gemini maps file URIs it owns to fileData.
    let file = simple(vec![user(vec![Part::Image(Image::Url(
        "https://generativelanguage.googleapis.com/v1beta/files/abc".into(),
    ))])]);
    let (body, _) = encode(G, &file);
    assert_eq!(
        body["contents"][0]["parts"][0]["fileData"]["fileUri"],
        "https://generativelanguage.googleapis.com/v1beta/files/abc"
    );
    // A result whose call cannot be found cannot be named for Gemini.
    let orphan = simple(vec![user(vec![Part::ToolResult(ToolResult {
        call_id: "x".into(),
        name: None,
        content: vec![],
        is_error: false,
    })])]);
    assert!(matches!(
        encode_request(G, &orphan, &opts()),
        Err(TranslateError::Invalid { .. })
    ));
}

#[test]
fn warnings_are_header_safe_and_bounded() {
    let mut req = simple(vec![user(vec![text("q")])]);
    req.dropped = (0..40).map(|i| format!("fïeld\n{i}")).collect();
    let enc = encode_request(O, &req, &opts()).unwrap();
    assert!(enc.warnings.len() <= MAX_WARNINGS);
    for w in &enc.warnings {
        assert!(w.bytes().all(|b| (0x20..0x7f).contains(&b)), "{w:?}");
    }
    assert_eq!(
        enc.warnings.last().unwrap(),
        "more fields dropped (warnings truncated)"
    );
}

// ---------------------------------------------------------------------------------------------------
// Complete answers.

fn openai_response() -> Value {
    json!({
        "id": "chatcmpl-abc", "object": "chat.completion", "created": 1700000000, "model": "gpt-4o-2024-08-06",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me check ☀️.", "refusal": null,
            "tool_calls": [
                {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
            "logprobs": null, "finish_reason": "tool_calls"}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120,
            "prompt_tokens_details": {"cached_tokens": 60}, "completion_tokens_details": {"reasoning_tokens": 5}}
    })
}

fn anthropic_response() -> Value {
    json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [
            {"type": "thinking", "thinking": "…", "signature": "sig"},
            {"type": "text", "text": "Let me check ☀️."},
            {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
            {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}],
        "stop_reason": "tool_use", "stop_sequence": null,
        "usage": {"input_tokens": 30, "output_tokens": 20, "cache_read_input_tokens": 60, "cache_creation_input_tokens": 10}
    })
}

fn responses_response() -> Value {
    json!({
        "id": "resp_abc", "object": "response", "created_at": 1700000000, "status": "completed",
        "background": false, "error": null, "incomplete_details": null, "instructions": null,
        "max_output_tokens": null, "model": "gpt-5-2025-08-07", "parallel_tool_calls": true,
        "previous_response_id": null, "store": false, "temperature": 1.0, "top_p": 1.0,
        "text": {"format": {"type": "text"}}, "tool_choice": "auto", "tools": [], "truncation": "disabled",
        "metadata": {}, "user": null,
        "output": [
            {"type": "reasoning", "id": "rs_1", "summary": [], "encrypted_content": "gAAAA"},
            {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
             "content": [{"type": "output_text", "text": "Let me check ☀️.", "annotations": [], "logprobs": []}]},
            {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "get_weather",
             "arguments": "{\"city\":\"Paris\"}", "status": "completed"},
            {"type": "function_call", "id": "fc_2", "call_id": "call_2", "name": "get_time",
             "arguments": "", "status": "completed"}
        ],
        "usage": {"input_tokens": 100, "input_tokens_details": {"cached_tokens": 60},
            "output_tokens": 20, "output_tokens_details": {"reasoning_tokens": 5}, "total_tokens": 120}
    })
}

fn gemini_response() -> Value {
    json!({
        "candidates": [{"content": {"role": "model", "parts": [
            {"text": "Let me check ☀️."},
            {"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}},
            {"functionCall": {"name": "get_time", "args": {}}}]},
            "finishReason": "STOP", "index": 0}],
        "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 15, "thoughtsTokenCount": 5,
            "cachedContentTokenCount": 60, "totalTokenCount": 120},
        "modelVersion": "gemini-2.5-flash", "responseId": "resp-1"
    })
}

#[test]
fn responses_decode_to_the_same_meaning() {
    let expected_content = |id1: &str, id2: &str| {
        vec![
            text("Let me check ☀️."),
            Part::ToolCall(ToolCall {
                id: id1.into(),
                name: "get_weather".into(),
                arguments: "{\"city\":\"Paris\"}".into(),
            }),
            Part::ToolCall(ToolCall {
                id: id2.into(),
                name: "get_time".into(),
                arguments: "{}".into(),
            }),
        ]
    };
    let o = decode_response(O, &serde_json::to_vec(&openai_response()).unwrap()).unwrap();
    assert_eq!(o.content, expected_content("call_1", "call_2"));
    assert_eq!(o.stop_reason, Some(StopReason::ToolUse));
    assert_eq!(o.created, Some(1700000000));
    assert_eq!(
        o.usage,
        Usage {
            input_tokens: Some(100),
            output_tokens: Some(20),
            cache_read_tokens: Some(60),
            cache_write_tokens: None,
            reasoning_tokens: Some(5)
        }
    );

    let a = decode_response(A, &serde_json::to_vec(&anthropic_response()).unwrap()).unwrap();
    assert_eq!(a.content, expected_content("call_1", "call_2"));
    assert_eq!(a.stop_reason, Some(StopReason::ToolUse));
    // 30 uncached + 60 read + 10 written.
    assert_eq!(
        a.usage,
        Usage {
            input_tokens: Some(100),
            output_tokens: Some(20),
            cache_read_tokens: Some(60),
            cache_write_tokens: Some(10),
            reasoning_tokens: None
        }
    );

    let g = decode_response(G, &serde_json::to_vec(&gemini_response()).unwrap()).unwrap();
    assert_eq!(
        g.content,
        expected_content("call_resp-1_0", "call_resp-1_1")
    );
    assert_eq!(
        g.stop_reason,
        Some(StopReason::ToolUse),
        "STOP with function calls is tool use"
    );
    assert_eq!(
        g.usage,
        Usage {
            input_tokens: Some(100),
            output_tokens: Some(20),
            cache_read_tokens: Some(60),
            cache_write_tokens: None,
            reasoning_tokens: Some(5)
        }
    );
    assert_eq!(
        (g.id.as_str(), g.model.as_str()),
        ("resp-1", "gemini-2.5-flash")
    );

    let r = decode_response(R, &serde_json::to_vec(&responses_response()).unwrap()).unwrap();
    assert_eq!(r.content, expected_content("call_1", "call_2"));
    assert_eq!(
        r.stop_reason,
        Some(StopReason::ToolUse),
        "completed with function calls is tool use"
    );
    assert_eq!((r.usage, r.created), (o.usage, Some(1700000000)));
    assert_eq!(
        (r.id.as_str(), r.model.as_str()),
        ("resp_abc", "gpt-5-2025-08-07")
    );
}

#[test]
fn responses_encode_in_each_client_shape() {
    let resp = decode_response(A, &serde_json::to_vec(&anthropic_response()).unwrap()).unwrap();
    let o: Value = serde_json::from_slice(&encode_response(O, &resp, "claude-sonnet-4-5")).unwrap();
    let created = o["created"].clone();
    assert!(created.as_u64().unwrap() > 1_600_000_000);
    assert_eq!(
        o,
        json!({
            "id": "chatcmpl-msg_01", "object": "chat.completion", "created": created, "model": "claude-sonnet-4-5",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "Let me check ☀️.", "refusal": null,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}},
                    {"id": "call_2", "type": "function", "function": {"name": "get_time", "arguments": "{}"}}]},
                "logprobs": null, "finish_reason": "tool_calls"}],
            "usage": {"prompt_tokens": 100, "completion_tokens": 20, "total_tokens": 120, "prompt_tokens_details": {"cached_tokens": 60}}
        })
    );

    let resp = decode_response(O, &serde_json::to_vec(&openai_response()).unwrap()).unwrap();
    let a: Value = serde_json::from_slice(&encode_response(A, &resp, "gpt-4o")).unwrap();
    assert_eq!(
        a,
        json!({
            "id": "msg_chatcmpl-abc", "type": "message", "role": "assistant", "model": "gpt-4o",
            "content": [
                {"type": "text", "text": "Let me check ☀️."},
                {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"city": "Paris"}},
                {"type": "tool_use", "id": "call_2", "name": "get_time", "input": {}}],
            "stop_reason": "tool_use", "stop_sequence": null,
            "usage": {"input_tokens": 40, "output_tokens": 20, "cache_read_input_tokens": 60}
        })
    );

    let g: Value = serde_json::from_slice(&encode_response(G, &resp, "gpt-4o")).unwrap();
    assert_eq!(
        g,
        json!({
            "candidates": [{"content": {"role": "model", "parts": [
                {"text": "Let me check ☀️."},
                {"functionCall": {"id": "call_1", "name": "get_weather", "args": {"city": "Paris"}}},
                {"functionCall": {"id": "call_2", "name": "get_time", "args": {}}}]},
                "finishReason": "STOP", "index": 0}],
            "usageMetadata": {"promptTokenCount": 100, "candidatesTokenCount": 15, "totalTokenCount": 120,
                "cachedContentTokenCount": 60, "thoughtsTokenCount": 5},
            "modelVersion": "gpt-4o", "responseId": "chatcmpl-abc"
        })
    );
}

#[test]
fn every_response_pair_keeps_meaning_and_tool_ids() {
    let bodies = [
        (O, openai_response()),
        (A, anthropic_response()),
        (G, gemini_response()),
        (R, responses_response()),
    ];
    for (from, body) in &bodies {
        let resp = decode_response(*from, &serde_json::to_vec(body).unwrap()).unwrap();
        for to in ALL {
            let bytes = encode_response(to, &resp, "m");
            let back = decode_response(to, &bytes).unwrap();
            assert_eq!(
                back.content, resp.content,
                "{from} -> {to}: tool ids and content survive"
            );
            assert_eq!(back.stop_reason, resp.stop_reason, "{from} -> {to}");
            assert_eq!(
                back.usage.input_tokens, resp.usage.input_tokens,
                "{from} -> {to}"
            );
            assert_eq!(
                back.usage.output_tokens, resp.usage.output_tokens,
                "{from} -> {to}"
            );
            assert_eq!(
                back.usage.cache_read_tokens, resp.usage.cache_read_tokens,
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn stop_reasons_map_both_ways() {
    // (format, wire reason, canonical, wire reason when encoded back)
    let cases: Vec<(ApiFormat, &str, StopReason, &str)> = vec![
        (O, "stop", StopReason::EndTurn, "stop"),
        (O, "length", StopReason::MaxTokens, "length"),
        (O, "tool_calls", StopReason::ToolUse, "tool_calls"),
        (
            O,
            "content_filter",
            StopReason::ContentFilter,
            "content_filter",
        ),
        (A, "end_turn", StopReason::EndTurn, "end_turn"),
        (A, "max_tokens", StopReason::MaxTokens, "max_tokens"),
        (
            A,
            "stop_sequence",
            StopReason::StopSequence(Some("END".into())),
            "stop_sequence",
        ),
        (A, "tool_use", StopReason::ToolUse, "tool_use"),
        (A, "refusal", StopReason::ContentFilter, "refusal"),
        (
            A,
            "pause_turn",
            StopReason::Other("pause_turn".into()),
            "pause_turn",
        ),
        (
            A,
            "model_context_window_exceeded",
            StopReason::MaxTokens,
            "max_tokens",
        ),
        (G, "STOP", StopReason::EndTurn, "STOP"),
        (G, "MAX_TOKENS", StopReason::MaxTokens, "MAX_TOKENS"),
        (G, "SAFETY", StopReason::ContentFilter, "SAFETY"),
        (G, "RECITATION", StopReason::ContentFilter, "SAFETY"),
        (G, "BLOCKLIST", StopReason::ContentFilter, "SAFETY"),
        (G, "PROHIBITED_CONTENT", StopReason::ContentFilter, "SAFETY"),
        (
            G,
            "MALFORMED_FUNCTION_CALL",
            StopReason::Other("MALFORMED_FUNCTION_CALL".into()),
            "MALFORMED_FUNCTION_CALL",
        ),
        // Responses: the status, or the incomplete reason.
        (R, "completed", StopReason::EndTurn, "completed"),
        (
            R,
            "max_output_tokens",
            StopReason::MaxTokens,
            "max_output_tokens",
        ),
        (
            R,
            "content_filter",
            StopReason::ContentFilter,
            "content_filter",
        ),
    ];
    for (format, wire, canonical, back) in cases {
        let body = match format {
            O => {
                json!({"id": "x", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": wire}]})
            }
            A => {
                json!({"id": "x", "model": "m", "content": [{"type": "text", "text": "hi"}], "stop_reason": wire, "stop_sequence": (wire == "stop_sequence").then_some("END")})
            }
            G => {
                json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "hi"}]}, "finishReason": wire}]})
            }
            R if wire == "completed" => {
                json!({"id": "resp_x", "object": "response", "model": "m", "status": wire, "output": [
                    {"type": "message", "id": "m1", "role": "assistant", "status": "completed", "content": [{"type": "output_text", "text": "hi", "annotations": []}]}]})
            }
            R => {
                json!({"id": "resp_x", "object": "response", "model": "m", "status": "incomplete",
                    "incomplete_details": {"reason": wire}, "output": []})
            }
        };
        let resp = decode_response(format, &serde_json::to_vec(&body).unwrap()).unwrap();
        assert_eq!(
            resp.stop_reason.as_ref(),
            Some(&canonical),
            "{format} {wire}"
        );
        let out: Value = serde_json::from_slice(&encode_response(format, &resp, "m")).unwrap();
        let got = match format {
            O => &out["choices"][0]["finish_reason"],
            A => &out["stop_reason"],
            G => &out["candidates"][0]["finishReason"],
            R if out["incomplete_details"].is_null() => &out["status"],
            R => &out["incomplete_details"]["reason"],
        };
        assert_eq!(got, back, "{format} {wire}");
        if wire == "stop_sequence" {
            assert_eq!(out["stop_sequence"], "END");
        }
    }
    // Across formats: a stop sequence is a plain stop elsewhere; a refusal is a content filter.
    let resp = ChatResponse {
        stop_reason: Some(StopReason::StopSequence(Some("END".into()))),
        ..ChatResponse::default()
    };
    let o: Value = serde_json::from_slice(&encode_response(O, &resp, "m")).unwrap();
    assert_eq!(o["choices"][0]["finish_reason"], "stop");
    // A blocked prompt (no candidates) is a content filter.
    let blocked = decode_response(G, br#"{"promptFeedback": {"blockReason": "SAFETY"}}"#).unwrap();
    assert_eq!(blocked.stop_reason, Some(StopReason::ContentFilter));
    // Unparseable upstream bodies are upstream errors.
    assert!(matches!(
        decode_response(A, b"<html>"),
        Err(TranslateError::Upstream { .. })
    ));
}

#[test]
fn empty_answers_render_validly() {
    let resp = ChatResponse {
        id: "x".into(),
        ..ChatResponse::default()
    };
    for to in ALL {
        let bytes = encode_response(to, &resp, "m");
        let back = decode_response(to, &bytes).unwrap();
        assert!(back.content.is_empty());
        assert_eq!(back.stop_reason, Some(StopReason::EndTurn));
    }
    let o: Value = serde_json::from_slice(&encode_response(O, &resp, "m")).unwrap();
    assert_eq!(o["choices"][0]["message"]["content"], Value::Null);
}

// ---------------------------------------------------------------------------------------------------
// Streams.

fn sse(event: &str, data: Value) -> SseEvent {
    SseEvent {
        event: event.into(),
        data: data.to_string(),
    }
}

fn done() -> SseEvent {
    SseEvent {
        event: String::new(),
        data: "[DONE]".into(),
    }
}

/// Text "Hello wörld 🌍", then get_weather({"city":"Paris"}) in two fragments and get_time with no
/// argument fragments at all; tool use; 20 in (5 cached) / 10 out.
fn openai_stream() -> Vec<SseEvent> {
    let c = |delta: Value, finish: Value| {
        sse(
            "",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o",
            "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}]}),
        )
    };
    vec![
        c(json!({"role": "assistant", "content": ""}), Value::Null),
        c(json!({"content": "Hello"}), Value::Null),
        c(json!({"content": " wörld 🌍"}), Value::Null),
        c(
            json!({"tool_calls": [{"index": 0, "id": "call_a", "type": "function", "function": {"name": "get_weather", "arguments": ""}}]}),
            Value::Null,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "{\"city\":"}}]}),
            Value::Null,
        ),
        c(
            json!({"tool_calls": [{"index": 0, "function": {"arguments": "\"Paris\"}"}}]}),
            Value::Null,
        ),
        c(
            json!({"tool_calls": [{"index": 1, "id": "call_b", "type": "function", "function": {"name": "get_time", "arguments": ""}}]}),
            Value::Null,
        ),
        c(json!({}), json!("tool_calls")),
        sse(
            "",
            json!({"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "gpt-4o", "choices": [],
            "usage": {"prompt_tokens": 20, "completion_tokens": 10, "total_tokens": 30, "prompt_tokens_details": {"cached_tokens": 5}}}),
        ),
        done(),
    ]
}

fn anthropic_stream() -> Vec<SseEvent> {
    vec![
        sse(
            "message_start",
            json!({"type": "message_start", "message": {"id": "msg_1", "type": "message", "role": "assistant",
            "model": "claude-sonnet-4-5", "content": [], "stop_reason": null, "stop_sequence": null,
            "usage": {"input_tokens": 15, "cache_read_input_tokens": 5, "output_tokens": 1}}}),
        ),
        sse("ping", json!({"type": "ping"})),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
        ),
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}),
        ),
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": " wörld 🌍"}}),
        ),
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 0}),
        ),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "call_a", "name": "get_weather", "input": {}}}),
        ),
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": ""}}),
        ),
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{\"city\":"}}),
        ),
        sse(
            "content_block_delta",
            json!({"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "\"Paris\"}"}}),
        ),
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 1}),
        ),
        sse(
            "content_block_start",
            json!({"type": "content_block_start", "index": 2, "content_block": {"type": "tool_use", "id": "call_b", "name": "get_time", "input": {}}}),
        ),
        sse(
            "content_block_stop",
            json!({"type": "content_block_stop", "index": 2}),
        ),
        sse(
            "message_delta",
            json!({"type": "message_delta", "delta": {"stop_reason": "tool_use", "stop_sequence": null}, "usage": {"output_tokens": 10}}),
        ),
        sse("message_stop", json!({"type": "message_stop"})),
    ]
}

fn gemini_stream() -> Vec<SseEvent> {
    let c = |parts: Value, finish: Option<&str>, usage: Value| {
        let mut cand = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        if let Some(f) = finish {
            cand["finishReason"] = json!(f);
        }
        sse(
            "",
            json!({"candidates": [cand], "usageMetadata": usage, "modelVersion": "gemini-2.5-flash", "responseId": "r1"}),
        )
    };
    vec![
        c(
            json!([{"text": "Hello"}]),
            None,
            json!({"promptTokenCount": 20}),
        ),
        c(
            json!([{"text": " wörld 🌍"}]),
            None,
            json!({"promptTokenCount": 20, "candidatesTokenCount": 4}),
        ),
        c(
            json!([{"functionCall": {"name": "get_weather", "args": {"city": "Paris"}}}, {"functionCall": {"name": "get_time", "args": {}}}]),
            Some("STOP"),
            json!({"promptTokenCount": 20, "candidatesTokenCount": 10, "cachedContentTokenCount": 5, "totalTokenCount": 30}),
        ),
    ]
}

/// A Responses transcript as the API sends it (same answer as the others; `get_time`'s empty
/// arguments arrive only in its `.done` events).
pub(super) fn responses_stream() -> Vec<SseEvent> {
    let resp = |status: &str, output: Value, usage: Value| {
        json!({"id": "resp_1", "object": "response", "created_at": 1, "status": status, "background": false,
            "error": null, "incomplete_details": null, "instructions": null, "max_output_tokens": null,
            "model": "gpt-5", "output": output, "parallel_tool_calls": true, "previous_response_id": null,
            "store": false, "temperature": 1.0, "text": {"format": {"type": "text"}}, "tool_choice": "auto",
            "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": usage, "user": null, "metadata": {}})
    };
    let msg = |status: &str, text: &str| {
        let content = if status == "in_progress" {
            json!([])
        } else {
            json!([{"type": "output_text", "text": text, "annotations": [], "logprobs": []}])
        };
        json!({"type": "message", "id": "msg_1", "status": status, "role": "assistant", "content": content})
    };
    let call = |id: &str, call_id: &str, name: &str, status: &str, args: &str| json!({"type": "function_call", "id": id, "call_id": call_id, "name": name, "arguments": args, "status": status});
    let part = |text: &str| json!({"type": "output_text", "text": text, "annotations": [], "logprobs": []});
    let events = vec![
        json!({"type": "response.created", "response": resp("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.in_progress", "response": resp("in_progress", json!([]), Value::Null)}),
        json!({"type": "response.output_item.added", "output_index": 0, "item": msg("in_progress", "")}),
        json!({"type": "response.content_part.added", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part("")}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": "Hello", "logprobs": []}),
        json!({"type": "response.output_text.delta", "item_id": "msg_1", "output_index": 0, "content_index": 0, "delta": " wörld 🌍", "logprobs": []}),
        json!({"type": "response.output_text.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "text": "Hello wörld 🌍", "logprobs": []}),
        json!({"type": "response.content_part.done", "item_id": "msg_1", "output_index": 0, "content_index": 0, "part": part("Hello wörld 🌍")}),
        json!({"type": "response.output_item.done", "output_index": 0, "item": msg("completed", "Hello wörld 🌍")}),
        json!({"type": "response.output_item.added", "output_index": 1, "item": call("fc_1", "call_a", "get_weather", "in_progress", "")}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "{\"city\":"}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1", "output_index": 1, "delta": "\"Paris\"}"}),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1, "name": "get_weather", "arguments": "{\"city\":\"Paris\"}"}),
        json!({"type": "response.output_item.done", "output_index": 1, "item": call("fc_1", "call_a", "get_weather", "completed", "{\"city\":\"Paris\"}")}),
        json!({"type": "response.output_item.added", "output_index": 2, "item": call("fc_2", "call_b", "get_time", "in_progress", "")}),
        json!({"type": "response.function_call_arguments.done", "item_id": "fc_2", "output_index": 2, "name": "get_time", "arguments": "{}"}),
        json!({"type": "response.output_item.done", "output_index": 2, "item": call("fc_2", "call_b", "get_time", "completed", "{}")}),
        json!({"type": "response.completed", "response": resp("completed", json!([
            msg("completed", "Hello wörld 🌍"),
            call("fc_1", "call_a", "get_weather", "completed", "{\"city\":\"Paris\"}"),
            call("fc_2", "call_b", "get_time", "completed", "{}")]),
            json!({"input_tokens": 20, "input_tokens_details": {"cached_tokens": 5}, "output_tokens": 10,
                "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 30}))}),
    ];
    events
        .into_iter()
        .enumerate()
        .map(|(n, mut v)| {
            v["sequence_number"] = json!(n);
            let name = v["type"].as_str().unwrap().to_owned();
            sse(&name, v)
        })
        .collect()
}

pub(super) fn provider_stream(format: ApiFormat) -> Vec<SseEvent> {
    match format {
        O => openai_stream(),
        A => anthropic_stream(),
        G => gemini_stream(),
        R => responses_stream(),
    }
}

#[test]
fn stream_decoders_yield_the_same_canonical_events() {
    let expected = |id: &str, model: &str, t: usize, w: usize, b: usize, ids: [&str; 2]| {
        vec![
            StreamEvent::Start {
                id: id.into(),
                model: model.into(),
            },
            StreamEvent::TextDelta {
                index: t,
                text: "Hello".into(),
            },
            StreamEvent::TextDelta {
                index: t,
                text: " wörld 🌍".into(),
            },
            StreamEvent::ToolCallStart {
                index: w,
                id: ids[0].into(),
                name: "get_weather".into(),
            },
            StreamEvent::ToolCallDelta {
                index: w,
                fragment: "{\"city\":".into(),
            },
            StreamEvent::ToolCallDelta {
                index: w,
                fragment: "\"Paris\"}".into(),
            },
            StreamEvent::ToolCallStart {
                index: b,
                id: ids[1].into(),
                name: "get_time".into(),
            },
        ]
    };
    let run = |format: ApiFormat| {
        let mut d = StreamDecoder::new(format);
        let mut out = Vec::new();
        for ev in provider_stream(format) {
            d.push(&ev, &mut out).unwrap();
        }
        out
    };
    let usage = Usage {
        input_tokens: Some(20),
        output_tokens: Some(10),
        cache_read_tokens: Some(5),
        ..Usage::default()
    };

    let o = run(O);
    assert_eq!(
        o[..7],
        expected("chatcmpl-1", "gpt-4o", 0, 1, 2, ["call_a", "call_b"])[..]
    );
    assert_eq!(
        o[7..],
        [
            StreamEvent::Stop(StopReason::ToolUse),
            StreamEvent::Usage(usage),
            StreamEvent::Done
        ]
    );

    let a = run(A);
    assert_eq!(
        a[0],
        StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude-sonnet-4-5".into()
        }
    );
    assert_eq!(
        a[1],
        StreamEvent::Usage(Usage {
            input_tokens: Some(20),
            output_tokens: Some(1),
            cache_read_tokens: Some(5),
            ..Usage::default()
        })
    );
    let mut a_rest = a.clone();
    a_rest.remove(1);
    assert_eq!(
        a_rest[..7],
        expected("msg_1", "claude-sonnet-4-5", 0, 1, 2, ["call_a", "call_b"])[..]
    );
    assert_eq!(
        a_rest[7..],
        [
            StreamEvent::Usage(usage),
            StreamEvent::Stop(StopReason::ToolUse),
            StreamEvent::Done
        ]
    );

    let g = run(G);
    // Gemini sends whole calls: start + one fragment each; usage rides on every chunk.
    assert_eq!(
        g[..2],
        expected(
            "r1",
            "gemini-2.5-flash",
            0,
            1,
            2,
            ["call_r1_0", "call_r1_1"]
        )[..2]
    );
    assert_eq!(
        g[2],
        StreamEvent::Usage(Usage {
            input_tokens: Some(20),
            ..Usage::default()
        })
    );
    assert_eq!(
        g[3..],
        [
            StreamEvent::TextDelta {
                index: 0,
                text: " wörld 🌍".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: Some(20),
                output_tokens: Some(4),
                ..Usage::default()
            }),
            StreamEvent::ToolCallStart {
                index: 1,
                id: "call_r1_0".into(),
                name: "get_weather".into()
            },
            StreamEvent::ToolCallDelta {
                index: 1,
                fragment: "{\"city\":\"Paris\"}".into()
            },
            StreamEvent::ToolCallStart {
                index: 2,
                id: "call_r1_1".into(),
                name: "get_time".into()
            },
            StreamEvent::ToolCallDelta {
                index: 2,
                fragment: "{}".into()
            },
            StreamEvent::Usage(usage),
            StreamEvent::Stop(StopReason::ToolUse),
            StreamEvent::Done,
        ]
    );

    let r = run(R);
    assert_eq!(
        r[..7],
        expected("resp_1", "gpt-5", 0, 1, 2, ["call_a", "call_b"])[..]
    );
    // `.done` events repeat what the deltas said, except for get_time's arguments, sent only there.
    assert_eq!(
        r[7..],
        [
            StreamEvent::ToolCallDelta {
                index: 2,
                fragment: "{}".into()
            },
            StreamEvent::Usage(Usage {
                reasoning_tokens: Some(0),
                ..usage
            }),
            StreamEvent::Stop(StopReason::ToolUse),
            StreamEvent::Done
        ]
    );
}

/// What a client SDK would rebuild from the stream, plus protocol checks along the way.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Rebuilt {
    pub(super) id: String,
    pub(super) text: String,
    /// (id, name, arguments as JSON)
    pub(super) calls: Vec<(String, String, Value)>,
    pub(super) stop: Option<String>,
    /// (input, output, cache read) in the client's own terms.
    pub(super) usage: Option<(u64, u64, u64)>,
    pub(super) error: Option<Value>,
    pub(super) terminated: bool,
}

/// Parses encoder output with the SSE parser and serde_json, event by event, and rebuilds the answer.
pub(super) fn rebuild(format: ApiFormat, bytes: &[u8]) -> Rebuilt {
    let mut parser = SseParser::new();
    let mut events = Vec::new();
    parser.feed(bytes, |e| events.push(e));
    assert!(!parser.finish(), "the stream ends on an event boundary");
    let mut r = Rebuilt::default();
    let mut args: Vec<String> = Vec::new();
    // Anthropic block bookkeeping: index → (open, is_tool, call slot)
    let mut blocks: Vec<(bool, Option<usize>)> = Vec::new();
    // Responses bookkeeping: output items as (id, open, call slot, text so far), last sequence number.
    let mut items: Vec<(String, bool, Option<usize>, String)> = Vec::new();
    let mut last_seq: Option<u64> = None;
    for ev in &events {
        assert!(
            !r.terminated,
            "{format}: nothing may follow the terminal event: {ev:?}"
        );
        if format == O && ev.data == "[DONE]" {
            r.terminated = true;
            continue;
        }
        let v: Value =
            serde_json::from_str(&ev.data).unwrap_or_else(|e| panic!("{format}: {e}: {}", ev.data));
        match format {
            O => {
                assert!(ev.event.is_empty());
                if let Some(e) = v.get("error") {
                    r.error = Some(e.clone());
                    r.terminated = true;
                    continue;
                }
                assert_eq!(v["object"], "chat.completion.chunk");
                r.id = v["id"].as_str().unwrap().to_owned();
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    assert_eq!(v["choices"], json!([]));
                    r.usage = Some((
                        u["prompt_tokens"].as_u64().unwrap(),
                        u["completion_tokens"].as_u64().unwrap(),
                        u["prompt_tokens_details"]["cached_tokens"]
                            .as_u64()
                            .unwrap_or(0),
                    ));
                }
                for ch in v["choices"].as_array().unwrap() {
                    let d = &ch["delta"];
                    if let Some(t) = d["content"].as_str() {
                        r.text.push_str(t);
                    }
                    for tc in d["tool_calls"].as_array().into_iter().flatten() {
                        let i = tc["index"].as_u64().unwrap() as usize;
                        if let Some(id) = tc["id"].as_str() {
                            assert_eq!(i, r.calls.len(), "tool indices count up from 0");
                            r.calls.push((
                                id.into(),
                                tc["function"]["name"].as_str().unwrap().into(),
                                Value::Null,
                            ));
                            args.push(String::new());
                        }
                        if let Some(a) = tc["function"]["arguments"].as_str() {
                            args[i].push_str(a);
                        }
                    }
                    if let Some(f) = ch["finish_reason"].as_str() {
                        assert!(r.stop.is_none(), "one finish_reason");
                        r.stop = Some(f.into());
                    }
                }
            }
            A => {
                assert_eq!(
                    ev.event,
                    v["type"].as_str().unwrap(),
                    "event name matches type"
                );
                match ev.event.as_str() {
                    "message_start" => {
                        assert!(r.id.is_empty());
                        r.id = v["message"]["id"].as_str().unwrap().into();
                    }
                    "ping" => {}
                    "content_block_start" => {
                        let i = v["index"].as_u64().unwrap() as usize;
                        assert_eq!(i, blocks.len(), "blocks open in order");
                        assert!(blocks.iter().all(|b| !b.0), "one open block at a time");
                        let b = &v["content_block"];
                        if b["type"] == "tool_use" {
                            r.calls.push((
                                b["id"].as_str().unwrap().into(),
                                b["name"].as_str().unwrap().into(),
                                Value::Null,
                            ));
                            args.push(String::new());
                            blocks.push((true, Some(r.calls.len() - 1)));
                        } else {
                            assert_eq!(b["type"], "text");
                            blocks.push((true, None));
                        }
                    }
                    "content_block_delta" => {
                        let i = v["index"].as_u64().unwrap() as usize;
                        assert!(blocks[i].0, "delta to an open block");
                        match (v["delta"]["type"].as_str().unwrap(), blocks[i].1) {
                            ("text_delta", None) => {
                                r.text.push_str(v["delta"]["text"].as_str().unwrap())
                            }
                            ("input_json_delta", Some(c)) => {
                                args[c].push_str(v["delta"]["partial_json"].as_str().unwrap())
                            }
                            other => panic!("delta kind mismatch {other:?}"),
                        }
                    }
                    "content_block_stop" => {
                        let i = v["index"].as_u64().unwrap() as usize;
                        assert!(blocks[i].0, "stop an open block once");
                        blocks[i].0 = false;
                    }
                    "message_delta" => {
                        assert!(
                            blocks.iter().all(|b| !b.0),
                            "blocks closed before message_delta"
                        );
                        r.stop = v["delta"]["stop_reason"].as_str().map(str::to_owned);
                        let u = &v["usage"];
                        r.usage = Some((
                            u["input_tokens"].as_u64().unwrap(),
                            u["output_tokens"].as_u64().unwrap(),
                            u["cache_read_input_tokens"].as_u64().unwrap_or(0),
                        ));
                    }
                    "message_stop" => {
                        assert!(r.stop.is_some());
                        r.terminated = true;
                    }
                    "error" => {
                        r.error = Some(v["error"].clone());
                        r.terminated = true;
                    }
                    other => panic!("unexpected event {other}"),
                }
            }
            G => {
                assert!(ev.event.is_empty());
                if let Some(e) = v.get("error") {
                    r.error = Some(e.clone());
                    r.terminated = true;
                    continue;
                }
                r.id = v["responseId"].as_str().unwrap().into();
                let cand = &v["candidates"][0];
                assert_eq!(cand["content"]["role"], "model");
                for p in cand["content"]["parts"].as_array().unwrap() {
                    if let Some(t) = p["text"].as_str() {
                        r.text.push_str(t);
                    } else if let Some(fc) = p.get("functionCall") {
                        r.calls.push((
                            fc["id"].as_str().unwrap_or("").into(),
                            fc["name"].as_str().unwrap().into(),
                            fc["args"].clone(),
                        ));
                        args.push(fc["args"].to_string());
                    }
                }
                if let Some(u) = v.get("usageMetadata") {
                    r.usage = Some((
                        u["promptTokenCount"].as_u64().unwrap(),
                        u["candidatesTokenCount"].as_u64().unwrap()
                            + u["thoughtsTokenCount"].as_u64().unwrap_or(0),
                        u["cachedContentTokenCount"].as_u64().unwrap_or(0),
                    ));
                }
                if let Some(f) = cand["finishReason"].as_str() {
                    r.stop = Some(f.into());
                    r.terminated = true;
                }
            }
            R => rebuild_responses_event(ev, &v, &mut r, &mut args, &mut items, &mut last_seq),
        }
    }
    for (call, a) in r.calls.iter_mut().zip(args) {
        // A stream cut inside a call's arguments leaves them incomplete; keep the raw text then.
        call.2 =
            serde_json::from_str(if a.is_empty() { "{}" } else { &a }).unwrap_or(Value::String(a));
    }
    r
}

/// One Responses event, checked the way the `openai` SDK's `responses.stream` helper uses it: the
/// stream opens with `response.created`, sequence numbers strictly increase, every event names an
/// output item that was added (and is still open), `.done` events repeat exactly what the deltas
/// said, and the terminal response carries every item whole.
fn rebuild_responses_event(
    ev: &SseEvent,
    v: &Value,
    r: &mut Rebuilt,
    args: &mut Vec<String>,
    items: &mut Vec<(String, bool, Option<usize>, String)>,
    last_seq: &mut Option<u64>,
) {
    let kind = v["type"].as_str().unwrap();
    assert_eq!(ev.event, kind, "event name matches type");
    let seq = v["sequence_number"].as_u64().expect("sequence_number");
    assert!(
        last_seq.is_none_or(|l| seq > l),
        "sequence numbers increase: {seq} after {last_seq:?}"
    );
    if last_seq.is_none() {
        assert_eq!(
            kind, "response.created",
            "the stream opens with response.created"
        );
    }
    *last_seq = Some(seq);
    let open_item = |items: &Vec<(String, bool, Option<usize>, String)>| {
        let i = v["output_index"].as_u64().unwrap() as usize;
        assert!(items[i].1, "{kind}: item {i} is open");
        if let Some(id) = v["item_id"].as_str() {
            assert_eq!(id, items[i].0, "{kind}: item_id matches output_index");
        }
        i
    };
    match kind {
        "response.created" => {
            let resp = &v["response"];
            assert_eq!(resp["object"], "response");
            assert_eq!(resp["status"], "in_progress");
            assert_eq!(resp["output"], json!([]));
            r.id = resp["id"].as_str().unwrap().into();
        }
        "response.in_progress" => assert_eq!(v["response"]["id"], r.id.as_str()),
        "response.output_item.added" => {
            let i = v["output_index"].as_u64().unwrap() as usize;
            assert_eq!(i, items.len(), "items are added in order");
            let item = &v["item"];
            assert_eq!(item["status"], "in_progress");
            let id = item["id"].as_str().unwrap().to_owned();
            assert!(items.iter().all(|it| it.0 != id), "item ids are unique");
            let slot = match item["type"].as_str().unwrap() {
                "function_call" => {
                    assert_eq!(item["arguments"], "");
                    r.calls.push((
                        item["call_id"].as_str().unwrap().into(),
                        item["name"].as_str().unwrap().into(),
                        Value::Null,
                    ));
                    args.push(String::new());
                    Some(r.calls.len() - 1)
                }
                "message" => {
                    assert_eq!(item["role"], "assistant");
                    assert_eq!(item["content"], json!([]));
                    None
                }
                other => panic!("unexpected item type {other}"),
            };
            items.push((id, true, slot, String::new()));
        }
        "response.content_part.added" => {
            let i = open_item(items);
            assert!(items[i].2.is_none() && v["content_index"] == 0);
            assert_eq!(v["part"]["type"], "output_text");
        }
        "response.output_text.delta" => {
            let i = open_item(items);
            assert!(items[i].2.is_none() && v["content_index"] == 0);
            assert_eq!(v["logprobs"], json!([]));
            let d = v["delta"].as_str().unwrap();
            r.text.push_str(d);
            items[i].3.push_str(d);
        }
        "response.output_text.done" => {
            let i = open_item(items);
            assert_eq!(v["text"], items[i].3.as_str());
        }
        "response.content_part.done" => {
            let i = open_item(items);
            assert_eq!(v["part"]["text"], items[i].3.as_str());
        }
        "response.function_call_arguments.delta" => {
            let i = open_item(items);
            let c = items[i].2.expect("arguments of a function call");
            args[c].push_str(v["delta"].as_str().unwrap());
        }
        "response.function_call_arguments.done" => {
            let i = open_item(items);
            let c = items[i].2.expect("arguments of a function call");
            assert_eq!(v["arguments"], args[c].as_str(), "done repeats the deltas");
            assert_eq!(v["name"], r.calls[c].1.as_str());
        }
        "response.output_item.done" => {
            let i = open_item(items);
            let item = &v["item"];
            assert_eq!(item["id"], items[i].0.as_str());
            assert!(matches!(
                item["status"].as_str(),
                Some("completed" | "incomplete")
            ));
            match items[i].2 {
                Some(c) => assert_eq!(item["arguments"], args[c].as_str()),
                None => assert_eq!(item["content"][0]["text"], items[i].3.as_str()),
            }
            items[i].1 = false;
        }
        "response.completed" | "response.incomplete" | "response.failed" => {
            let resp = &v["response"];
            assert_eq!(resp["id"], r.id.as_str());
            assert_eq!(resp["object"], "response");
            let output = resp["output"].as_array().unwrap();
            assert_eq!(output.len(), items.len(), "the response carries every item");
            for (o, it) in output.iter().zip(items.iter()) {
                assert_eq!(o["id"], it.0.as_str());
                match it.2 {
                    Some(c) if kind != "response.failed" => {
                        assert_eq!(o["arguments"], args[c].as_str())
                    }
                    None if kind != "response.failed" => {
                        assert_eq!(o["content"][0]["text"], it.3.as_str())
                    }
                    _ => {}
                }
            }
            if kind == "response.failed" {
                assert_eq!(resp["status"], "failed");
                if r.error.is_none() {
                    r.error = Some(resp["error"].clone());
                }
            } else {
                assert!(items.iter().all(|it| !it.1), "items closed before {kind}");
                r.stop = Some(
                    resp["incomplete_details"]["reason"]
                        .as_str()
                        .or(resp["status"].as_str())
                        .unwrap()
                        .into(),
                );
                assert_eq!(resp["status"], kind.trim_start_matches("response."));
            }
            let u = &resp["usage"];
            r.usage = Some((
                u["input_tokens"].as_u64().unwrap(),
                u["output_tokens"].as_u64().unwrap(),
                u["input_tokens_details"]["cached_tokens"].as_u64().unwrap(),
            ));
            r.terminated = true;
        }
        "error" => {
            assert!(r.error.is_none(), "one error event");
            // Both the documented flat fields and the nested object the SDK raises on.
            assert_eq!(v["message"], v["error"]["message"]);
            assert!(v["code"].is_string());
            r.error = Some(v["error"].clone());
        }
        other => panic!("unexpected event {other}"),
    }
}

pub(super) fn translate_all(
    from: ApiFormat,
    to: ApiFormat,
    events: &[SseEvent],
    include_usage: bool,
) -> Vec<u8> {
    let encoder = StreamEncoder::new(
        to,
        StreamOptions {
            model: "client-model".into(),
            include_usage,
        },
    )
    .with_created(1);
    let mut t = StreamTranslator::with_encoder(from, encoder);
    let mut out = Vec::new();
    for ev in events {
        t.push(ev, &mut out).unwrap();
    }
    t.finish(&mut out);
    out
}

#[test]
fn every_stream_pair_rebuilds_the_same_answer() {
    for from in ALL {
        for to in ALL {
            let out = translate_all(from, to, &provider_stream(from), true);
            let r = rebuild(to, &out);
            assert!(r.terminated, "{from} -> {to}");
            assert_eq!(r.text, "Hello wörld 🌍", "{from} -> {to}");
            let ids: [&str; 2] = if from == G {
                ["call_r1_0", "call_r1_1"]
            } else {
                ["call_a", "call_b"]
            };
            assert_eq!(
                r.calls,
                vec![
                    (
                        ids[0].into(),
                        "get_weather".into(),
                        json!({"city": "Paris"})
                    ),
                    (ids[1].into(), "get_time".into(), json!({})),
                ],
                "{from} -> {to}: ids, names and arguments survive"
            );
            let (stop, usage) = match to {
                O => ("tool_calls", (20, 10, 5)),
                A => ("tool_use", (15, 10, 5)),
                G => ("STOP", (20, 10, 5)),
                R => ("completed", (20, 10, 5)),
            };
            assert_eq!(r.stop.as_deref(), Some(stop), "{from} -> {to}");
            assert_eq!(r.usage, Some(usage), "{from} -> {to}");
            let prefix = match to {
                O => "chatcmpl-",
                A => "msg_",
                G => "",
                R => "resp_",
            };
            assert!(r.id.starts_with(prefix), "{from} -> {to}: {}", r.id);
        }
    }
}

#[test]
fn openai_to_anthropic_transcript_is_exact() {
    let out = translate_all(O, A, &openai_stream(), false);
    let text = String::from_utf8(out).unwrap();
    let expected = [
        r#"event: message_start
data: {"type":"message_start","message":{"id":"msg_chatcmpl-1","type":"message","role":"assistant","model":"client-model","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":0,"output_tokens":0}}}"#,
        r#"event: ping
data: {"type":"ping"}"#,
        r#"event: content_block_start
data: {"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}"#,
        r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"Hello"}}"#,
        r#"event: content_block_delta
data: {"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" wörld 🌍"}}"#,
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":0}"#,
        r#"event: content_block_start
data: {"type":"content_block_start","index":1,"content_block":{"type":"tool_use","id":"call_a","name":"get_weather","input":{}}}"#,
        r#"event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"{\"city\":"}}"#,
        r#"event: content_block_delta
data: {"type":"content_block_delta","index":1,"delta":{"type":"input_json_delta","partial_json":"\"Paris\"}"}}"#,
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":1}"#,
        r#"event: content_block_start
data: {"type":"content_block_start","index":2,"content_block":{"type":"tool_use","id":"call_b","name":"get_time","input":{}}}"#,
        r#"event: content_block_stop
data: {"type":"content_block_stop","index":2}"#,
        r#"event: message_delta
data: {"type":"message_delta","delta":{"stop_reason":"tool_use","stop_sequence":null},"usage":{"input_tokens":15,"output_tokens":10,"cache_read_input_tokens":5}}"#,
        r#"event: message_stop
data: {"type":"message_stop"}"#,
    ];
    assert_eq!(text, expected.map(|e| format!("{e}\n\n")).concat());
}

#[test]
fn anthropic_to_openai_transcript_is_exact() {
    let out = translate_all(A, O, &anthropic_stream(), true);
    let text = String::from_utf8(out).unwrap();
    let head = r#"{"id":"chatcmpl-msg_1","object":"chat.completion.chunk","created":1,"model":"client-model","choices":"#;
    let c = |delta: &str, finish: &str| {
        format!(
            "data: {head}[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let expected = [
        c(r#"{"role":"assistant","content":""}"#, "null"),
        c(r#"{"content":"Hello"}"#, "null"),
        c(r#"{"content":" wörld 🌍"}"#, "null"),
        c(
            r#"{"tool_calls":[{"index":0,"id":"call_a","type":"function","function":{"name":"get_weather","arguments":""}}]}"#,
            "null",
        ),
        c(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"{\"city\":"}}]}"#,
            "null",
        ),
        c(
            r#"{"tool_calls":[{"index":0,"function":{"arguments":"\"Paris\"}"}}]}"#,
            "null",
        ),
        c(
            r#"{"tool_calls":[{"index":1,"id":"call_b","type":"function","function":{"name":"get_time","arguments":""}}]}"#,
            "null",
        ),
        c("{}", r#""tool_calls""#),
        format!(
            "data: {head}[],\"usage\":{{\"prompt_tokens\":20,\"completion_tokens\":10,\"total_tokens\":30,\"prompt_tokens_details\":{{\"cached_tokens\":5}}}}}}\n\n"
        ),
        "data: [DONE]\n\n".to_owned(),
    ];
    assert_eq!(text, expected.concat());
    // Without include_usage the client gets no usage chunk.
    let r = rebuild(O, &translate_all(A, O, &anthropic_stream(), false));
    assert_eq!(r.usage, None);
}

#[test]
fn anthropic_to_gemini_transcript_buffers_only_tool_arguments() {
    let mut t = StreamTranslator::new(
        A,
        G,
        StreamOptions {
            model: "client-model".into(),
            include_usage: false,
        },
    );
    let events = anthropic_stream();
    let mut out = Vec::new();
    let mut emitted_after = Vec::new();
    for ev in &events {
        let before = out.len();
        t.push(ev, &mut out).unwrap();
        emitted_after.push(out.len() > before);
    }
    // Text deltas (events 3, 4) go out at once; tool-call fragments (7..9) wait for the call to end;
    // the first call goes out when the second opens (11), the second at the stop (13).
    assert_eq!(
        emitted_after,
        vec![
            false, false, false, true, true, false, false, false, false, false, false, true, false,
            true, true
        ]
    );
    let text = String::from_utf8(out).unwrap();
    let lines: Vec<&str> = text.split("\n\n").filter(|l| !l.is_empty()).collect();
    assert_eq!(
        lines[0],
        r#"data: {"candidates":[{"content":{"role":"model","parts":[{"text":"Hello"}]},"index":0}],"modelVersion":"client-model","responseId":"msg_1"}"#
    );
    assert_eq!(
        lines[2],
        r#"data: {"candidates":[{"content":{"role":"model","parts":[{"functionCall":{"id":"call_a","name":"get_weather","args":{"city":"Paris"}}}]},"index":0}],"modelVersion":"client-model","responseId":"msg_1"}"#
    );
    assert_eq!(
        lines[4],
        r#"data: {"candidates":[{"content":{"role":"model","parts":[{"text":""}]},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":20,"candidatesTokenCount":10,"totalTokenCount":30,"cachedContentTokenCount":5},"modelVersion":"client-model","responseId":"msg_1"}"#
    );
}

#[test]
fn first_text_goes_out_with_the_first_event_that_carries_it() {
    for from in ALL {
        let events = provider_stream(from);
        // The index of the first event carrying "Hello".
        let first = events
            .iter()
            .position(|e| e.data.contains("Hello"))
            .unwrap();
        for to in ALL {
            let mut t = StreamTranslator::new(from, to, StreamOptions::default());
            let mut out = Vec::new();
            for ev in &events[..=first] {
                t.push(ev, &mut out).unwrap();
            }
            assert!(
                String::from_utf8_lossy(&out).contains("Hello"),
                "{from} -> {to}"
            );
        }
    }
}

#[test]
fn a_stream_cut_before_its_stop_still_ends_well_formed() {
    for from in ALL {
        let mut events = provider_stream(from);
        // Keep only up to the first text delta: no stop reason, no terminal event.
        let first = events
            .iter()
            .position(|e| e.data.contains("Hello"))
            .unwrap();
        events.truncate(first + 1);
        for to in ALL {
            let out = translate_all(from, to, &events, true);
            let r = rebuild(to, &out);
            assert!(r.terminated, "{from} -> {to}");
            assert_eq!(r.text, "Hello");
            let stop = match to {
                O => "stop",
                A => "end_turn",
                G => "STOP",
                R => "completed",
            };
            assert_eq!(r.stop.as_deref(), Some(stop), "{from} -> {to}");
        }
        // Cut in the middle of a tool call's arguments: the call is closed and reported as tool use.
        let mut events = provider_stream(from);
        if let Some(p) = events
            .iter()
            .position(|e| e.data.contains("{\\\"city\\\":\""))
        {
            events.truncate(p + 1);
            for to in [O, A] {
                let r = rebuild(to, &translate_all(from, to, &events, false));
                assert!(r.terminated);
                assert_eq!(
                    r.stop.as_deref(),
                    Some(if to == O { "tool_calls" } else { "tool_use" })
                );
            }
            let r = rebuild(R, &translate_all(from, R, &events, false));
            assert_eq!((r.terminated, r.stop.as_deref()), (true, Some("completed")));
            assert_eq!(
                r.calls[0].2,
                json!("{\"city\":"),
                "the cut arguments, as sent"
            );
        }
    }
    // Nothing at all arrived: finish alone still produces a complete, empty answer.
    for to in ALL {
        let mut e = StreamEncoder::new(to, StreamOptions::default());
        let mut out = Vec::new();
        e.finish(&mut out);
        let len = out.len();
        e.finish(&mut out);
        assert_eq!(out.len(), len, "finish is idempotent");
        let r = rebuild(to, &out);
        assert!(r.terminated && r.text.is_empty());
    }
}

#[test]
fn mid_stream_errors_decode_and_encode() {
    let cases = [
        (
            A,
            sse(
                "error",
                json!({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}),
            ),
            "overloaded_error",
        ),
        (
            O,
            sse(
                "",
                json!({"error": {"message": "Overloaded", "type": "server_error", "param": null, "code": null}}),
            ),
            "server_error",
        ),
        (
            G,
            sse(
                "",
                json!({"error": {"code": 503, "message": "Overloaded", "status": "UNAVAILABLE"}}),
            ),
            "UNAVAILABLE",
        ),
        (
            R,
            sse(
                "error",
                json!({"type": "error", "sequence_number": 1, "error": {"type": "service_unavailable_error",
                    "code": "server_is_overloaded", "message": "Overloaded", "param": null}}),
            ),
            "server_is_overloaded",
        ),
    ];
    for (from, ev, kind) in cases {
        let mut d = StreamDecoder::new(from);
        let mut out = Vec::new();
        d.push(&ev, &mut out).unwrap();
        assert_eq!(
            out,
            vec![StreamEvent::Error {
                kind: kind.into(),
                message: "Overloaded".into()
            }],
            "{from}"
        );
        for to in ALL {
            let mut t = StreamTranslator::new(from, to, StreamOptions::default());
            let mut bytes = Vec::new();
            t.push(&provider_stream(from)[0], &mut bytes).unwrap();
            t.push(&ev, &mut bytes).unwrap();
            t.finish(&mut bytes);
            let r = rebuild(to, &bytes);
            let err = r.error.unwrap_or_else(|| panic!("{from} -> {to}"));
            assert_eq!(err["message"], "Overloaded");
            // OpenAI's vocabulary has no "overloaded": its server_error maps to a generic server error.
            let overloaded = from != O;
            match to {
                A => assert_eq!(
                    err["type"],
                    if overloaded {
                        "overloaded_error"
                    } else {
                        "api_error"
                    }
                ),
                O => assert_eq!(err["type"], "server_error"),
                G => assert_eq!(
                    (err["status"].as_str(), err["code"].as_u64()),
                    if overloaded {
                        (Some("UNAVAILABLE"), Some(503))
                    } else {
                        (Some("INTERNAL"), Some(500))
                    }
                ),
                R => {
                    assert_eq!(
                        (&err["type"], &err["code"]),
                        (&json!("server_error"), &json!("server_error"))
                    );
                    assert!(r.terminated, "response.failed follows the error event");
                }
            }
        }
    }
    // The gateway's own errors (e.g. an idle timeout) render in each client's vocabulary.
    let mut out = Vec::new();
    StreamEncoder::new(A, StreamOptions::default()).error("timeout", "upstream idle", &mut out);
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "event: error\ndata: {\"type\":\"error\",\"error\":{\"type\":\"timeout_error\",\"message\":\"upstream idle\"}}\n\n"
    );
}

#[test]
fn malformed_upstream_events_are_errors_the_stream_survives() {
    for from in ALL {
        let mut t = StreamTranslator::new(from, A, StreamOptions::default());
        let mut out = Vec::new();
        let events = provider_stream(from);
        t.push(&events[0], &mut out).unwrap();
        let bad = SseEvent {
            event: "content_block_delta".into(),
            data: "{not json".into(),
        };
        let before = out.len();
        assert!(
            matches!(t.push(&bad, &mut out), Err(TranslateError::Upstream { .. })),
            "{from}"
        );
        assert_eq!(out.len(), before);
        for ev in &events[1..] {
            t.push(ev, &mut out).unwrap();
        }
        t.finish(&mut out);
        assert_eq!(rebuild(A, &out).text, "Hello wörld 🌍");
    }
}

#[test]
fn gemini_stream_with_text_only_and_max_tokens() {
    let events = vec![
        sse(
            "",
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "Bonjour "}]}}], "responseId": "r"}),
        ),
        sse(
            "",
            json!({"candidates": [{"content": {"role": "model", "parts": [{"text": "le monde"}]}, "finishReason": "MAX_TOKENS"}],
            "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 2, "thoughtsTokenCount": 7}, "responseId": "r"}),
        ),
    ];
    for to in ALL {
        let r = rebuild(to, &translate_all(G, to, &events, true));
        assert_eq!(r.text, "Bonjour le monde");
        let (stop, usage) = match to {
            O => ("length", (3, 9, 0)),
            A => ("max_tokens", (3, 9, 0)),
            G => ("MAX_TOKENS", (3, 9, 0)),
            R => ("max_output_tokens", (3, 9, 0)),
        };
        assert_eq!(
            (r.stop.as_deref(), r.usage),
            (Some(stop), Some(usage)),
            "{to}"
        );
    }
}

// ---------------------------------------------------------------------------------------------------
// Property: a canonical request encoded to a format and decoded back keeps its meaning.
//
// Normalisation (what each format legitimately cannot carry, documented in the adapters):
// - all: consecutive same-role messages merged; `dropped` cleared; the model becomes the upstream
//   model; `tool_choice` unset ≡ `auto` and `tool_choice`/`parallel_tool_calls` vanish without tools;
//   arguments compared as JSON;
// - OpenAI: no `top_k` (warned); an error tool result becomes `Error: <text>` with no flag;
//   `include_usage` is requested whenever streaming;
// - Anthropic: `max_tokens` defaults; no `include_usage`; `parallel_tool_calls: true` is the default;
//   json_schema loses its name and `strict`; json_object is dropped (warned);
// - Gemini: no model, `stream`, `include_usage`, `user`, `parallel_tool_calls`, tool `strict`; ids
//   are synthesised (compared after renumbering); json_schema loses its name and `strict`;
// - Responses: no `top_k` or `stop` (warned), no `include_usage`; `max_tokens` at least 16; tool
//   `strict` defaults to false; an error tool result becomes `Error: <text>` with no flag.

fn json_object() -> impl Strategy<Value = String> {
    prop::collection::btree_map(
        "[a-z]{1,6}",
        prop_oneof![
            any::<i32>().prop_map(Value::from),
            "\\PC{0,8}".prop_map(Value::from),
            any::<bool>().prop_map(Value::from),
        ],
        0..3,
    )
    .prop_map(|m| serde_json::to_string(&m).unwrap())
}

fn eighths() -> impl Strategy<Value = Option<f64>> {
    prop::option::of((0u8..=8).prop_map(|k| f64::from(k) / 8.0))
}

const TOOL_NAMES: [&str; 3] = ["get_weather", "search", "run_code"];

/// One exchange: a user turn (text, maybe an image), an assistant turn (text and/or tool calls) and,
/// if calls were made, a user turn with their results in order.
/// (user text, with image, assistant text, calls as (tool, args), results as (text, is_error)).
type Exchange = (
    String,
    bool,
    Option<String>,
    Vec<(usize, String)>,
    Vec<(String, bool)>,
);

fn exchange() -> impl Strategy<Value = Exchange> {
    (
        "\\PC{1,20}",
        any::<bool>(),
        prop::option::of("\\PC{1,20}"),
        prop::collection::vec((0..3usize, json_object()), 0..3),
        prop::collection::vec(("\\PC{1,12}", any::<bool>()), 3),
    )
        .prop_filter("assistant says something", |(_, _, t, calls, _)| {
            t.is_some() || !calls.is_empty()
        })
}

prop_compose! {
    fn canonical_request()(
        system in prop::collection::vec("\\PC{1,16}", 0..3),
        exchanges in prop::collection::vec(exchange(), 1..4),
        max_tokens in prop::option::of(1u32..8192),
        temperature in eighths(),
        top_p in eighths(),
        top_k in prop::option::of(1u32..100),
        stop in prop::collection::vec("[A-Z]{1,5}", 0..3),
        tool_choice in prop::option::of(0..4usize),
        parallel in prop::option::of(any::<bool>()),
        response_format in prop::option::of(0..2usize),
        end_user in prop::option::of("[a-z0-9-]{1,12}"),
        stream in any::<bool>(),
        include_usage in any::<bool>(),
        strict in prop::option::of(any::<bool>()),
    ) -> ChatRequest {
        let mut messages = Vec::new();
        let mut next_id = 0;
        for (utext, image, atext, calls, results) in exchanges {
            let mut u = vec![Part::Text(utext)];
            if image {
                u.push(Part::Image(Image::Base64 { media_type: "image/png".into(), data: PNG.into() }));
            }
            messages.push(user(u));
            let mut a = Vec::new();
            if let Some(t) = atext {
                a.push(Part::Text(t));
            }
            let mut made = Vec::new();
            for (n, args) in calls {
                let id = format!("call_{next_id}");
                next_id += 1;
                made.push((id.clone(), TOOL_NAMES[n]));
                a.push(Part::ToolCall(ToolCall { id, name: TOOL_NAMES[n].into(), arguments: args }));
            }
            messages.push(assistant(a));
            if !made.is_empty() {
                messages.push(user(made.into_iter().zip(results).map(|((id, name), (text, is_error))| {
                    Part::ToolResult(ToolResult { call_id: id, name: Some(name.into()), content: vec![Part::Text(text)], is_error })
                }).collect()));
            }
        }
        let tools: Vec<ToolSpec> = TOOL_NAMES.iter().map(|n| ToolSpec {
            name: (*n).into(),
            description: Some(format!("The {n} tool")),
            parameters: json!({"type": "object", "properties": {"q": {"type": "string"}}}),
            strict,
        }).collect();
        ChatRequest {
            model: "route".into(),
            system,
            messages,
            tools,
            tool_choice: tool_choice.map(|c| match c {
                0 => ToolChoice::Auto,
                1 => ToolChoice::None,
                2 => ToolChoice::Required,
                _ => ToolChoice::Tool("search".into()),
            }),
            parallel_tool_calls: parallel,
            max_tokens,
            temperature,
            top_p,
            top_k,
            stop,
            response_format: response_format.map(|r| match r {
                0 => ResponseFormat::JsonObject,
                _ => ResponseFormat::JsonSchema { name: "answer".into(), schema: json!({"type": "object"}), strict: Some(true) },
            }),
            stream,
            include_usage,
            user: end_user,
            dropped: Vec::new(),
            namespaced_tools: Vec::new(),
            builtin_tools: Vec::new(),
        }
    }
}

fn merged(messages: &[Message]) -> Vec<Message> {
    let mut out: Vec<Message> = Vec::new();
    for m in messages {
        match out.last_mut() {
            Some(last) if last.role == m.role => last.content.extend(m.content.iter().cloned()),
            _ => out.push(m.clone()),
        }
    }
    out
}

fn renumber_canonical(messages: &mut [Message]) {
    let mut seen: Vec<String> = Vec::new();
    let mut map = |id: &mut String| {
        let n = match seen.iter().position(|s| s == id) {
            Some(n) => n,
            None => {
                seen.push(id.clone());
                seen.len() - 1
            }
        };
        *id = format!("id{n}");
    };
    for m in messages {
        for p in &mut m.content {
            match p {
                Part::ToolCall(c) => map(&mut c.id),
                Part::ToolResult(r) => map(&mut r.call_id),
                _ => {}
            }
        }
    }
}

/// Arguments as parsed JSON text, so formatting differences do not matter.
fn canonical_args(messages: &mut [Message]) {
    for m in messages {
        for p in &mut m.content {
            if let Part::ToolCall(c) = p {
                c.arguments = serde_json::from_str::<Value>(&c.arguments)
                    .unwrap()
                    .to_string();
            }
        }
    }
}

fn normalise(format: ApiFormat, req: &ChatRequest, decoded_side: bool) -> ChatRequest {
    let mut r = req.clone();
    r.dropped.clear();
    r.messages = merged(&r.messages);
    canonical_args(&mut r.messages);
    if !decoded_side {
        r.model = "up-model".into();
    }
    if r.tools.is_empty() {
        r.tool_choice = None;
        r.parallel_tool_calls = None;
    } else if r.tool_choice.is_none() {
        r.tool_choice = Some(ToolChoice::Auto);
    }
    if let Some(ResponseFormat::Text) = r.response_format {
        r.response_format = None;
    }
    if decoded_side {
        return r;
    }
    let error_as_text = |r: &mut ChatRequest| {
        for m in &mut r.messages {
            for p in &mut m.content {
                if let Part::ToolResult(tr) = p
                    && tr.is_error
                {
                    tr.is_error = false;
                    if let [Part::Text(t)] = tr.content.as_mut_slice() {
                        *t = format!("Error: {t}");
                    }
                }
            }
        }
    };
    match format {
        R => {
            r.top_k = None;
            r.stop.clear();
            r.include_usage = false;
            r.max_tokens = r.max_tokens.map(|n| n.max(16));
            for t in &mut r.tools {
                t.strict = t.strict.or(Some(false));
            }
            error_as_text(&mut r);
        }
        O => {
            r.top_k = None;
            r.include_usage = r.stream;
            for m in &mut r.messages {
                for p in &mut m.content {
                    if let Part::ToolResult(tr) = p
                        && tr.is_error
                    {
                        tr.is_error = false;
                        if let [Part::Text(t)] = tr.content.as_mut_slice() {
                            *t = format!("Error: {t}");
                        }
                    }
                }
            }
        }
        A => {
            r.max_tokens = r.max_tokens.or(Some(4096));
            r.include_usage = false;
            if r.parallel_tool_calls == Some(true) || r.tool_choice == Some(ToolChoice::None) {
                r.parallel_tool_calls = None;
            }
            r.response_format = match r.response_format {
                Some(ResponseFormat::JsonSchema { schema, .. }) => {
                    Some(ResponseFormat::JsonSchema {
                        name: "response".into(),
                        schema,
                        strict: None,
                    })
                }
                _ => None,
            };
        }
        G => {
            r.model = String::new();
            r.stream = false;
            r.include_usage = false;
            r.user = None;
            r.parallel_tool_calls = None;
            for t in &mut r.tools {
                t.strict = None;
            }
            r.response_format = match r.response_format {
                Some(ResponseFormat::JsonSchema { schema, .. }) => {
                    Some(ResponseFormat::JsonSchema {
                        name: "response".into(),
                        schema,
                        strict: None,
                    })
                }
                other => other,
            };
            renumber_canonical(&mut r.messages);
        }
    }
    r
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn canonical_requests_survive_each_format(req in canonical_request()) {
        for format in ALL {
            let enc = encode_request(format, &req, &opts()).unwrap();
            let mut back = decode_request(format, &enc.body).unwrap();
            if format == G {
                renumber_canonical(&mut back.messages);
            }
            let back = normalise(format, &back, true);
            let want = normalise(format, &req, false);
            prop_assert_eq!(back, want, "{}", format);
        }
    }

    #[test]
    fn streams_of_any_text_and_calls_rebuild_in_every_client_format(
        texts in prop::collection::vec("\\PC{1,12}", 0..4),
        calls in prop::collection::vec((0..3usize, json_object(), 1..4usize), 0..3),
        cut in any::<bool>(),
    ) {
        // Canonical events as a provider decoder would emit them.
        let mut events = vec![StreamEvent::Start { id: "resp_1".into(), model: "m".into() }];
        for t in &texts {
            events.push(StreamEvent::TextDelta { index: 0, text: t.clone() });
        }
        for (k, (n, args, pieces)) in calls.iter().enumerate() {
            events.push(StreamEvent::ToolCallStart { index: k + 1, id: format!("call_{k}"), name: TOOL_NAMES[*n].into() });
            // Split the arguments on char boundaries into `pieces` fragments.
            let chars: Vec<char> = args.chars().collect();
            let step = chars.len().div_ceil(*pieces).max(1);
            for chunk in chars.chunks(step) {
                events.push(StreamEvent::ToolCallDelta { index: k + 1, fragment: chunk.iter().collect() });
            }
        }
        events.push(StreamEvent::Usage(Usage { input_tokens: Some(7), output_tokens: Some(3), ..Usage::default() }));
        if !cut {
            events.push(StreamEvent::Stop(if calls.is_empty() { StopReason::EndTurn } else { StopReason::ToolUse }));
            events.push(StreamEvent::Done);
        }
        for to in ALL {
            let mut e = StreamEncoder::new(to, StreamOptions { model: "m".into(), include_usage: true });
            let mut out = Vec::new();
            for ev in &events {
                e.push(ev, &mut out);
            }
            e.finish(&mut out);
            let r = rebuild(to, &out);
            prop_assert!(r.terminated);
            prop_assert_eq!(&r.text, &texts.concat());
            let want: Vec<(String, String, Value)> = calls.iter().enumerate().map(|(k, (n, args, _))| {
                (format!("call_{k}"), TOOL_NAMES[*n].to_owned(), serde_json::from_str(args).unwrap())
            }).collect();
            prop_assert_eq!(&r.calls, &want);
        }
    }
}

#[test]
fn openai_compatible_stream_quirks() {
    let events = vec![
        // Azure's leading content-filter chunk: no choices, empty id.
        sse(
            "",
            json!({"id": "", "object": "", "created": 0, "model": "", "choices": [], "prompt_filter_results": []}),
        ),
        sse(
            "",
            json!({"id": "cmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "llama",
            "choices": [{"index": 0, "delta": {"role": "assistant", "content": "ok"}, "finish_reason": null}]}),
        ),
        // Usage in the same chunk as the finish reason (vLLM, Ollama).
        sse(
            "",
            json!({"id": "cmpl-9", "object": "chat.completion.chunk", "created": 1, "model": "llama",
            "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 1, "total_tokens": 5}}),
        ),
        done(),
    ];
    let mut d = StreamDecoder::new(O);
    let mut out = Vec::new();
    for ev in &events {
        d.push(ev, &mut out).unwrap();
    }
    assert_eq!(
        out,
        vec![
            StreamEvent::Start {
                id: "cmpl-9".into(),
                model: "llama".into()
            },
            StreamEvent::TextDelta {
                index: 0,
                text: "ok".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: Some(4),
                output_tokens: Some(1),
                ..Usage::default()
            }),
            StreamEvent::Stop(StopReason::MaxTokens),
            StreamEvent::Done,
        ]
    );
    let r = rebuild(A, &translate_all(O, A, &events, false));
    assert_eq!(
        (r.text.as_str(), r.stop.as_deref(), r.usage),
        ("ok", Some("max_tokens"), Some((4, 1, 0)))
    );
}

#[test]
fn anthropic_stop_sequence_streams_as_plain_stop_elsewhere() {
    let mut events = anthropic_stream();
    events.truncate(6);
    events.push(sse("message_delta", json!({"type": "message_delta", "delta": {"stop_reason": "stop_sequence", "stop_sequence": "END"}, "usage": {"output_tokens": 3}})));
    events.push(sse("message_stop", json!({"type": "message_stop"})));
    for (to, want) in [(O, "stop"), (G, "STOP"), (A, "stop_sequence")] {
        let out = translate_all(A, to, &events, false);
        assert_eq!(rebuild(to, &out).stop.as_deref(), Some(want), "{to}");
        if to == A {
            assert!(
                String::from_utf8(out)
                    .unwrap()
                    .contains(r#""stop_sequence":"END""#)
            );
        }
    }
}

#[test]
fn decoding_errors_never_quote_the_request() {
    for format in [
        ApiFormat::OpenAiChat,
        ApiFormat::AnthropicMessages,
        ApiFormat::Gemini,
        ApiFormat::OpenAiResponses,
    ] {
        let body = br#"{"model":"m","max_tokens":5,"messages":["MY SECRET PROMPT"],"contents":["MY SECRET PROMPT"],"input":[7, "MY SECRET PROMPT"]}"#;
        match decode_request(format, body) {
            Err(e) => assert!(!e.to_string().contains("SECRET"), "{format}: {e}"),
            Ok(_) => assert_ne!(
                format,
                ApiFormat::OpenAiChat,
                "a string message must not decode"
            ),
        }
    }
    let e =
        decode_response(ApiFormat::OpenAiChat, br#"{"choices":"MY SECRET ANSWER"}"#).unwrap_err();
    assert!(!e.to_string().contains("SECRET"), "{e}");
}

mod model_rules {
    //! What each target model accepts: a parameter the model refuses is dropped or renamed and
    //! named in a warning, never forwarded into a certain 400.

    use super::*;
    use crate::capability::ModelRules;
    use crate::provider::ProviderKind;

    /// What Gemini CLI sends: temperature, topP and topK on every request.
    fn gemini_cli_request() -> ChatRequest {
        decode(
            G,
            &json!({
                "contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                "generationConfig": {"temperature": 0.3, "topP": 0.95, "topK": 64, "maxOutputTokens": 512}
            }),
        )
    }

    fn encode_for(
        format: ApiFormat,
        kind: ProviderKind,
        model: &str,
        req: &ChatRequest,
    ) -> (Value, Vec<String>) {
        let opts = EncodeOptions {
            upstream_model: model,
            default_max_tokens: 4096,
            rules: ModelRules::of(kind, model),
        };
        let enc = encode_request(format, req, &opts).unwrap();
        (serde_json::from_slice(&enc.body).unwrap(), enc.warnings)
    }

    #[test]
    fn a_claude_four_five_target_gets_temperature_or_top_p_never_both() {
        let req = gemini_cli_request();
        let (body, warnings) = encode_for(A, ProviderKind::Anthropic, "claude-sonnet-4-5", &req);
        assert_eq!(body["temperature"], json!(0.3));
        assert!(body.get("top_p").is_none(), "{body}");
        assert_eq!(body["top_k"], json!(64), "Claude takes top_k");
        assert!(warnings.iter().any(|w| w.contains("top_p")), "{warnings:?}");
        // An older Claude takes both.
        let (body, _) = encode_for(
            A,
            ProviderKind::Anthropic,
            "claude-3-5-sonnet-20241022",
            &req,
        );
        assert_eq!(body["top_p"], json!(0.95));
        // Only top_p: kept.
        let mut only_p = req.clone();
        only_p.temperature = None;
        let (body, warnings) = encode_for(A, ProviderKind::Anthropic, "claude-sonnet-4-5", &only_p);
        assert_eq!(body["top_p"], json!(0.95));
        assert!(!warnings.iter().any(|w| w.contains("top_p")));
    }

    #[test]
    fn an_openai_reasoning_target_gets_no_sampling_and_max_completion_tokens() {
        let req = gemini_cli_request();
        for format in [O, R] {
            let (body, warnings) = encode_for(format, ProviderKind::OpenAi, "gpt-5", &req);
            for field in ["temperature", "top_p", "top_k"] {
                assert!(body.get(field).is_none(), "{format}: {field} in {body}");
            }
            assert!(
                warnings
                    .iter()
                    .any(|w| w.contains("temperature") && w.contains("default")),
                "{warnings:?}"
            );
        }
        let (body, _) = encode_for(O, ProviderKind::OpenAi, "gpt-5", &req);
        assert_eq!(body["max_completion_tokens"], json!(512));
        assert!(body.get("max_tokens").is_none());
        // The default value is harmless and dropped without a warning.
        let mut default = req.clone();
        default.temperature = Some(1.0);
        default.top_p = None;
        let (_, warnings) = encode_for(O, ProviderKind::OpenAi, "o3", &default);
        assert!(
            !warnings.iter().any(|w| w.contains("temperature")),
            "{warnings:?}"
        );
        // A non-reasoning model keeps them.
        let (body, _) = encode_for(O, ProviderKind::OpenAi, "gpt-4.1", &req);
        assert_eq!(body["temperature"], json!(0.3));
        assert_eq!(body["top_p"], json!(0.95));
    }

    /// The same rules whatever the client's format: each client API's sampling fields reach a
    /// Claude 4.5 target as temperature only, and an OpenAI reasoning target as neither.
    #[test]
    fn every_client_format_meets_the_same_rules() {
        let bodies = [
            (
                O,
                json!({"model": "m", "temperature": 0.3, "top_p": 0.9, "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                R,
                json!({"model": "m", "temperature": 0.3, "top_p": 0.9, "max_output_tokens": 100,
                    "input": "hi"}),
            ),
            (
                A,
                json!({"model": "m", "temperature": 0.3, "top_p": 0.9, "max_tokens": 100,
                    "messages": [{"role": "user", "content": "hi"}]}),
            ),
            (
                G,
                json!({"contents": [{"role": "user", "parts": [{"text": "hi"}]}],
                    "generationConfig": {"temperature": 0.3, "topP": 0.9, "maxOutputTokens": 100}}),
            ),
        ];
        for (client, body) in bodies {
            let req = decode(client, &body);
            if client != A {
                let (sent, _) = encode_for(A, ProviderKind::Anthropic, "claude-haiku-4-5", &req);
                assert_eq!(sent["temperature"], json!(0.3), "{client}: {sent}");
                assert!(sent.get("top_p").is_none(), "{client}: {sent}");
            }
            for target in [O, R] {
                if client == target {
                    continue;
                }
                let (sent, _) = encode_for(target, ProviderKind::OpenAi, "o4-mini", &req);
                assert!(
                    sent.get("temperature").is_none(),
                    "{client} -> {target}: {sent}"
                );
                assert!(sent.get("top_p").is_none(), "{client} -> {target}: {sent}");
            }
        }
    }

    #[test]
    fn an_openai_compatible_server_gets_max_tokens() {
        let (body, _) = encode_for(
            O,
            ProviderKind::OpenAiCompatible,
            "llama3.1:8b",
            &gemini_cli_request(),
        );
        assert_eq!(body["max_tokens"], json!(512));
        assert!(body.get("max_completion_tokens").is_none());
    }

    #[test]
    fn parallel_tool_calls_and_json_schemas_follow_the_model() {
        let req = decode(
            O,
            &json!({"model": "m", "parallel_tool_calls": false,
                "response_format": {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}},
                "tools": [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}],
                "messages": [{"role": "user", "content": "hi"}]}),
        );
        // o1 refuses the parallel-tool-calls switch: dropped and named.
        let (body, warnings) = encode_for(O, ProviderKind::OpenAi, "o1", &req);
        assert!(body.get("parallel_tool_calls").is_none(), "{body}");
        assert!(
            warnings.iter().any(|w| w.contains("parallel_tool_calls")),
            "{warnings:?}"
        );
        let (body, _) = encode_for(O, ProviderKind::OpenAi, "gpt-4.1", &req);
        assert_eq!(body["parallel_tool_calls"], json!(false));
        // A model said to take no JSON schema cannot serve this request at all.
        let opts = EncodeOptions {
            upstream_model: "plain",
            default_max_tokens: 4096,
            rules: ModelRules {
                structured_output: false,
                ..ModelRules::PERMISSIVE
            },
        };
        assert!(encode_request(A, &req, &opts).is_err());
    }

    #[test]
    fn forced_tool_choice_and_system_prompts_follow_overrides() {
        let req = decode(
            A,
            &json!({"model": "m", "max_tokens": 64, "system": "Be brief.",
                "tool_choice": {"type": "any"},
                "tools": [{"name": "f", "input_schema": {"type": "object"}}],
                "messages": [{"role": "user", "content": "hi"}]}),
        );
        let opts = EncodeOptions {
            upstream_model: "small-local",
            default_max_tokens: 4096,
            rules: ModelRules {
                forced_tool_choice: false,
                system_prompt: false,
                ..ModelRules::PERMISSIVE
            },
        };
        let enc = encode_request(O, &req, &opts).unwrap();
        let body: Value = serde_json::from_slice(&enc.body).unwrap();
        assert_eq!(body["tool_choice"], json!("auto"), "{body}");
        let first = &body["messages"][0];
        assert_eq!(first["role"], json!("user"), "no system message: {body}");
        assert!(first.to_string().contains("Be brief."), "{first}");
        assert!(
            enc.warnings.iter().any(|w| w.contains("tool_choice")),
            "{:?}",
            enc.warnings
        );
        assert!(
            enc.warnings.iter().any(|w| w.contains("system")),
            "{:?}",
            enc.warnings
        );
        // The table's own rules leave both alone.
        let (body, _) = encode_for(O, ProviderKind::OpenAi, "gpt-4.1", &req);
        assert_eq!(body["tool_choice"], json!("required"));
        assert_eq!(body["messages"][0]["role"], json!("system"));
    }

    #[test]
    fn a_model_without_images_cannot_serve_an_image() {
        let req = decode(
            O,
            &json!({"model": "m", "messages": [{"role": "user", "content": [
                {"type": "text", "text": "what is this"},
                {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{PNG}")}}
            ]}]}),
        );
        let opts = EncodeOptions {
            upstream_model: "text-only",
            default_max_tokens: 4096,
            rules: ModelRules {
                images: false,
                ..ModelRules::PERMISSIVE
            },
        };
        let err = encode_request(A, &req, &opts).unwrap_err();
        assert!(err.to_string().contains("images"), "{err}");
    }
}

/// A Messages stream translated from an upstream that reports usage only at its end still says
/// something true-ish about input tokens in `message_start` (LangChain.js reads them only there): a
/// local estimate, replaced by the upstream's exact figure in the closing `message_delta`.
#[test]
fn a_translated_messages_stream_estimates_input_tokens_at_its_start() {
    let req = decode(
        O,
        &json!({"model": "m", "messages": [
            {"role": "system", "content": "You are a careful assistant who answers briefly."},
            {"role": "user", "content": "What is the weather like in Paris today, and should I take an umbrella?"}
        ]}),
    );
    let estimate = req.estimate_input_tokens();
    assert!((20..=60).contains(&estimate), "{estimate}");
    let encoder = StreamEncoder::new(
        A,
        StreamOptions {
            model: "client-model".into(),
            include_usage: false,
        },
    )
    .for_request(&req);
    let mut t = StreamTranslator::with_encoder(O, encoder);
    let mut out = Vec::new();
    for ev in openai_stream() {
        t.push(&ev, &mut out).unwrap();
    }
    t.finish(&mut out);
    let mut events = Vec::new();
    SseParser::new().feed(&out, |e| events.push(e));
    let data = |name: &str| -> Value {
        let e = events.iter().find(|e| e.event == name).unwrap();
        serde_json::from_str(&e.data).unwrap()
    };
    let start = data("message_start");
    assert_eq!(
        start["message"]["usage"]["input_tokens"],
        json!(estimate),
        "{start}"
    );
    // The upstream's own count at the end (the fixture reports 20 prompt tokens, 5 of them cached).
    let delta = data("message_delta");
    assert_eq!(delta["usage"]["input_tokens"], json!(15), "{delta}");
}

#[test]
fn an_event_embedding_pretty_printed_raw_json_stays_on_one_data_line() {
    #[derive(serde::Serialize)]
    struct Payload<'a> {
        args: &'a serde_json::value::RawValue,
    }
    let raw = serde_json::value::RawValue::from_string("{\n  \"city\": \"Paris\"\r\n}".to_owned())
        .unwrap();
    let mut out = Vec::new();
    write_sse(&mut out, Some("delta"), &Payload { args: &raw });
    let text = String::from_utf8(out).unwrap();
    let (head, rest) = text.split_once('\n').unwrap();
    assert_eq!(head, "event: delta");
    let data = rest
        .strip_prefix("data: ")
        .unwrap()
        .strip_suffix("\n\n")
        .unwrap();
    assert!(!data.contains(['\n', '\r']), "{data:?}");
    let v: Value = serde_json::from_str(data).unwrap();
    assert_eq!(v["args"]["city"], json!("Paris"));
}
