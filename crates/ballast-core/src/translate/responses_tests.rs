//! OpenAI Responses specifics, table-driven from real-shaped payloads: Codex's requests, namespaces, built-in tools, unknown call ids, cut streams, exact transcripts and errors.

use serde_json::{Value, json};

use super::tests::{ALL, PNG, decode, encode, opts, provider_stream, rebuild, translate_all};
use super::*;
use crate::api::ApiFormat::{
    AnthropicMessages as A, Gemini as G, OpenAiChat as O, OpenAiResponses as R,
};
use crate::model::*;
use crate::sse::SseParser;

fn bytes(v: &Value) -> Vec<u8> {
    serde_json::to_vec(v).unwrap()
}

/// A second turn as Codex sends it: `store: false`, the whole history, developer messages,
/// encrypted reasoning, a namespace tool and the built-in web search.
fn codex_request() -> Value {
    json!({
        "model": "gpt-5-codex",
        "instructions": "You are Codex, a coding agent.",
        "input": [
            {"type": "message", "role": "developer", "content": [{"type": "input_text", "text": "<permissions>workspace-write</permissions>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "<environment_context>cwd=/repo</environment_context>"}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "List the files."}]},
            {"type": "reasoning", "id": "rs_1", "summary": [{"type": "summary_text", "text": "Listing."}], "content": null, "encrypted_content": "gAAAAB..."},
            {"type": "function_call", "id": "fc_1", "call_id": "call_ls", "name": "shell", "arguments": "{\"command\":[\"ls\"]}"},
            {"type": "function_call_output", "call_id": "call_ls", "output": "Cargo.toml\nsrc"},
            {"type": "function_call", "call_id": "call_spawn", "name": "spawn_agent", "namespace": "collaboration", "arguments": "{\"message\":\"go\"}"},
            {"type": "function_call_output", "call_id": "call_spawn", "output": [{"type": "input_text", "text": "spawned"}]},
            {"type": "message", "role": "assistant", "phase": "final_answer", "content": [{"type": "output_text", "text": "Cargo.toml and src."}]},
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Thanks"}]}
        ],
        "tools": [
            {"type": "function", "name": "shell", "description": "Runs a command.", "strict": false,
             "parameters": {"type": "object", "properties": {"command": {"type": "array", "items": {"type": "string"}}}, "required": ["command"]}},
            {"type": "namespace", "name": "collaboration", "description": "Work with other agents.", "tools": [
                {"type": "function", "name": "spawn_agent", "description": "Spawns an agent.",
                 "parameters": {"type": "object", "properties": {"message": {"type": "string"}}}},
                {"type": "function", "name": "send_message",
                 "parameters": {"type": "object", "properties": {"message": {"type": "string"}}}}
            ]},
            {"type": "web_search", "search_context_size": "medium"}
        ],
        "tool_choice": "auto",
        "parallel_tool_calls": false,
        "reasoning": {"effort": "medium", "summary": "auto"},
        "store": false,
        "stream": true,
        "include": ["reasoning.encrypted_content"],
        "prompt_cache_key": "0199a1b2-c3d4",
        "client_metadata": {"x-codex-turn": "2"},
        "text": {"verbosity": "low"}
    })
}

#[test]
fn a_codex_turn_decodes_with_its_namespace_flattened() {
    let req = decode(R, &codex_request());
    assert_eq!(
        req.system,
        vec![
            "You are Codex, a coding agent.",
            "<permissions>workspace-write</permissions>"
        ]
    );
    let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "shell",
            "collaboration__spawn_agent",
            "collaboration__send_message"
        ]
    );
    assert_eq!(
        req.tools[2].description.as_deref(),
        Some("Work with other agents."),
        "a nested function without a description gets its namespace's"
    );
    assert_eq!(
        req.namespaced_tools[0],
        NamespacedTool {
            flat: "collaboration__spawn_agent".into(),
            namespace: "collaboration".into(),
            name: "spawn_agent".into(),
        }
    );
    assert_eq!(
        req.builtin_tools,
        vec![json!({"type": "web_search", "search_context_size": "medium"})]
    );
    assert_eq!(req.parallel_tool_calls, Some(false));
    // Two user items, then the assistant's calls, their results, the answer and the next question.
    let roles: Vec<Role> = req.messages.iter().map(|m| m.role).collect();
    assert_eq!(
        roles,
        [
            Role::User,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::User,
            Role::Assistant,
            Role::User
        ]
    );
    assert_eq!(
        req.messages[4].content,
        vec![Part::ToolCall(ToolCall {
            id: "call_spawn".into(),
            name: "collaboration__spawn_agent".into(),
            arguments: "{\"message\":\"go\"}".into(),
        })]
    );
    assert_eq!(
        req.messages[5].content,
        vec![Part::ToolResult(ToolResult {
            call_id: "call_spawn".into(),
            name: Some("collaboration__spawn_agent".into()),
            content: vec![Part::Text("spawned".into())],
            is_error: false,
        })]
    );
    // What has no meaning elsewhere is warned about; stateless no-ops are not.
    assert_eq!(
        req.dropped,
        vec!["text.verbosity", "reasoning items", "reasoning"]
    );
}

#[test]
fn builtin_tools_make_every_other_target_unsupported() {
    let mut req = decode(R, &codex_request());
    for to in [O, A, G] {
        let err = encode_request(to, &req, &opts()).unwrap_err();
        assert!(
            matches!(&err, TranslateError::Unsupported { message } if message.contains("web_search")),
            "{to}: {err}"
        );
    }
    // A Responses target runs it: the tool goes out as the client sent it.
    let (body, _) = encode(R, &req);
    assert_eq!(
        body["tools"][3],
        json!({"type": "web_search", "search_context_size": "medium"})
    );
    // A deployment may prefer an answer without it.
    req.drop_builtin_tools();
    let (body, warnings) = encode(A, &req);
    assert_eq!(body["tools"].as_array().unwrap().len(), 3);
    assert_eq!(body["tools"][1]["name"], "collaboration__spawn_agent");
    assert!(
        warnings.contains(
            &"dropped field tools (web_search): not translated to anthropic-messages".to_owned()
        ),
        "{warnings:?}"
    );
    assert_eq!(
        body["tool_choice"],
        json!({"type": "auto", "disable_parallel_tool_use": true})
    );
}

/// An answer naming a flattened function goes back to a Responses client under its own namespace
/// and name, whole or streamed; other clients see the flat name.
#[test]
fn namespaced_names_round_trip_to_the_client() {
    let req = decode(R, &codex_request());
    let anthropic_answer = json!({
        "id": "msg_01", "type": "message", "role": "assistant", "model": "claude-sonnet-4-5",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "collaboration__send_message", "input": {"message": "hi"}}],
        "stop_reason": "tool_use", "usage": {"input_tokens": 10, "output_tokens": 5}
    });
    let resp = decode_response(A, &bytes(&anthropic_answer)).unwrap();
    let body: Value =
        serde_json::from_slice(&encode_response_for(R, &resp, "codex", &req)).unwrap();
    let call = &body["output"][0];
    assert_eq!(
        (
            &call["type"],
            &call["name"],
            &call["namespace"],
            &call["call_id"]
        ),
        (
            &json!("function_call"),
            &json!("send_message"),
            &json!("collaboration"),
            &json!("toolu_1")
        )
    );
    // Decoded again (the next turn's history), it is the same flat call.
    let back = decode_response(R, &serde_json::to_vec(&body).unwrap()).unwrap();
    assert_eq!(back.content, resp.content);
    // Other clients keep the flat name; so does a Responses client without the request at hand.
    let plain: Value = serde_json::from_slice(&encode_response(R, &resp, "codex")).unwrap();
    assert_eq!(plain["output"][0]["name"], "collaboration__send_message");
    assert!(plain["output"][0].get("namespace").is_none());

    let mut e = StreamEncoder::new(R, StreamOptions::default()).for_request(&req);
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "msg_01".into(),
            model: "m".into(),
        },
        StreamEvent::ToolCallStart {
            index: 0,
            id: "toolu_1".into(),
            name: "collaboration__send_message".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 0,
            fragment: "{\"message\":\"hi\"}".into(),
        },
        StreamEvent::Stop(StopReason::ToolUse),
        StreamEvent::Done,
    ] {
        e.push(&ev, &mut out);
    }
    let r = rebuild(R, &out);
    assert_eq!(
        r.calls,
        vec![(
            "toolu_1".into(),
            "send_message".into(),
            json!({"message": "hi"})
        )]
    );
    let text = String::from_utf8(out).unwrap();
    assert!(
        text.contains(r#""name":"send_message","namespace":"collaboration""#),
        "{text}"
    );
}

#[test]
fn flat_names_stay_short_unique_and_stable() {
    let long_ns = "mcp__codex_apps__a_connector_with_a_rather_long_descriptive_name";
    let body = json!({
        "model": "m",
        "input": "hi",
        "tools": [
            // A top-level function that already has the obvious flat name.
            {"type": "function", "name": "ns__f", "parameters": {"type": "object"}},
            {"type": "namespace", "name": "ns", "description": "d", "tools": [
                {"type": "function", "name": "f"},
                {"type": "custom", "name": "apply_patch"}
            ]},
            {"type": "namespace", "name": long_ns, "description": "d", "tools": [
                {"type": "function", "name": "_search_emails"},
                {"type": "function", "name": "_search_emails_by_date"}
            ]},
            {"type": "namespace", "name": "a.b c", "description": "d", "tools": [{"type": "function", "name": "g"}]}
        ]
    });
    let req = decode(R, &body);
    let names: Vec<&str> = req.tools.iter().map(|t| t.name.as_str()).collect();
    assert_eq!(names[0], "ns__f");
    assert_ne!(names[1], "ns__f", "no collision with a top-level function");
    assert!(
        names[1].starts_with("ns__f_") && names[1].len() == "ns__f".len() + 9,
        "{}",
        names[1]
    );
    assert_eq!(
        names[4], "a_b_c__g",
        "characters other targets reject become _"
    );
    for n in &names {
        assert!(n.len() <= 64, "{n}");
        assert!(
            n.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'),
            "{n}"
        );
    }
    let unique: std::collections::HashSet<&&str> = names.iter().collect();
    assert_eq!(unique.len(), names.len());
    assert_eq!(req.dropped, vec!["tools[1].tools[1] (custom)"]);
    // Deterministic: the next turn maps the same names the same way.
    assert_eq!(decode(R, &body).tools, req.tools);
    // And every flat name maps back to its namespace and name.
    let t = req.namespaced(names[3]).unwrap();
    assert_eq!(
        (t.namespace.as_str(), t.name.as_str()),
        (long_ns, "_search_emails_by_date")
    );
}

/// A `function_call_output` whose call is not in the history: kept as a tool result with that id
/// (and the name the item gives, if any). Anthropic will reject the unknown id, as it would from
/// any client; Gemini needs a name.
#[test]
fn a_result_for_an_unknown_call_is_kept_as_is() {
    let orphan = |named: bool| {
        let mut item = json!({"type": "function_call_output", "call_id": "call_orphan_1", "output": "<task/>"});
        if named {
            item["name"] = json!("create_thread");
            item["namespace"] = json!("codex_app");
        }
        json!({"model": "m", "input": [item, {"role": "user", "content": "continue"}]})
    };
    let req = decode(R, &orphan(false));
    assert_eq!(
        req.messages[0].content[0],
        Part::ToolResult(ToolResult {
            call_id: "call_orphan_1".into(),
            name: None,
            content: vec![Part::Text("<task/>".into())],
            is_error: false,
        })
    );
    let (o, _) = encode(O, &req);
    assert_eq!(
        o["messages"][0],
        json!({"role": "tool", "tool_call_id": "call_orphan_1", "content": "<task/>"})
    );
    let (a, _) = encode(A, &req);
    assert_eq!(
        a["messages"][0]["content"][0]["tool_use_id"],
        "call_orphan_1"
    );
    assert!(matches!(
        encode_request(G, &req, &opts()),
        Err(TranslateError::Invalid { .. })
    ));
    // With its name given, Gemini can pair it.
    let req = decode(R, &orphan(true));
    let Part::ToolResult(r) = &req.messages[0].content[0] else {
        panic!()
    };
    assert_eq!(r.name.as_deref(), Some("codex_app__create_thread"));
    let (g, _) = encode(G, &req);
    assert_eq!(
        g["contents"][0]["parts"][0]["functionResponse"]["name"],
        "codex_app__create_thread"
    );
}

#[test]
fn request_decoding_table() {
    type Check = fn(&ChatRequest);
    let cases: Vec<(Value, Check)> = vec![
        // A bare string is one user message.
        (json!({"model": "m", "input": "hello"}), |r| {
            assert_eq!(
                r.messages,
                vec![Message {
                    role: Role::User,
                    content: vec![Part::Text("hello".into())]
                }]
            );
            assert!(!r.stream);
        }),
        // Images by data URL and by URL; a PDF as input_file; system messages anywhere.
        (
            json!({"model": "m", "input": [
                {"role": "user", "content": [
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}"), "detail": "high"},
                    {"type": "input_image", "image_url": "https://example.com/cat.jpg"},
                    {"type": "input_file", "filename": "a.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]},
                {"role": "system", "content": "late system"}]}),
            |r| {
                assert_eq!(
                    r.messages[0].content,
                    vec![
                        Part::Image(Image::Base64 {
                            media_type: "image/png".into(),
                            data: PNG.into()
                        }),
                        Part::Image(Image::Url("https://example.com/cat.jpg".into())),
                        Part::Image(Image::Base64 {
                            media_type: "application/pdf".into(),
                            data: "JVBERi0=".into()
                        }),
                    ]
                );
                assert_eq!(r.system, vec!["late system"]);
            },
        ),
        // Structured output, a named tool choice, sampling parameters, the end user.
        (
            json!({"model": "m", "input": "q", "max_output_tokens": 64, "temperature": 0.2, "top_p": 0.5,
                "text": {"format": {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": true}},
                "tools": [{"type": "function", "name": "f", "parameters": {"type": "object"}, "strict": true}],
                "tool_choice": {"type": "function", "name": "f"}, "safety_identifier": "u-1", "metadata": {"k": "v"}}),
            |r| {
                assert_eq!(
                    r.response_format,
                    Some(ResponseFormat::JsonSchema {
                        name: "answer".into(),
                        schema: json!({"type": "object"}),
                        strict: Some(true)
                    })
                );
                assert_eq!(r.tool_choice, Some(ToolChoice::Tool("f".into())));
                assert_eq!(
                    (r.max_tokens, r.temperature, r.top_p),
                    (Some(64), Some(0.2), Some(0.5))
                );
                assert_eq!(r.tools[0].strict, Some(true));
                assert_eq!(r.user.as_deref(), Some("u-1"));
                assert!(r.dropped.is_empty(), "{:?}", r.dropped);
            },
        ),
        // A named namespaced function; json_object; required; allowed_tools keeps only its mode.
        (
            json!({"model": "m", "input": "q", "text": {"format": {"type": "json_object"}},
                "tools": [{"type": "namespace", "name": "ns", "description": "", "tools": [{"type": "function", "name": "g"}]}],
                "tool_choice": {"type": "function", "name": "g"}}),
            |r| {
                assert_eq!(r.tool_choice, Some(ToolChoice::Tool("ns__g".into())));
                assert_eq!(r.response_format, Some(ResponseFormat::JsonObject));
            },
        ),
        (
            json!({"model": "m", "input": "q", "tool_choice": {"type": "allowed_tools", "mode": "required", "tools": []}}),
            |r| {
                assert_eq!(r.tool_choice, Some(ToolChoice::Required));
                assert_eq!(r.dropped, vec!["tool_choice.tools"]);
            },
        ),
        // Arguments sent as an object (lenient), a refusal in history, unknown top-level fields.
        (
            json!({"model": "m", "input": [
                {"type": "function_call", "call_id": "c1", "name": "f", "arguments": {"a": 1}},
                {"type": "message", "role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
                {"type": "function_call_output", "call_id": "c1", "output": [
                    {"type": "input_text", "text": "see"}, {"type": "input_image", "image_url": "https://x/y.png"}]}],
                "service_tier": "flex", "truncation": "auto", "include": ["message.output_text.logprobs"]}),
            |r| {
                assert_eq!(
                    r.messages[0].content,
                    vec![Part::ToolCall(ToolCall {
                        id: "c1".into(),
                        name: "f".into(),
                        arguments: "{\"a\":1}".into()
                    })]
                );
                // A message item starts a message (alternating targets merge same-role turns).
                assert_eq!(r.messages[1].content, vec![Part::Text("No.".into())]);
                let Part::ToolResult(res) = &r.messages[2].content[0] else {
                    panic!()
                };
                assert_eq!(res.name.as_deref(), Some("f"));
                assert_eq!(res.content.len(), 2);
                assert_eq!(
                    r.dropped,
                    vec![
                        "truncation",
                        "include (message.output_text.logprobs)",
                        "service_tier"
                    ]
                );
            },
        ),
    ];
    for (i, (body, check)) in cases.into_iter().enumerate() {
        let req = decode_request(R, &bytes(&body)).unwrap_or_else(|e| panic!("case {i}: {e}"));
        check(&req);
    }
}

#[test]
fn requests_that_cannot_be_translated() {
    let unsupported = [
        json!({"model": "m", "input": [{"type": "web_search_call", "id": "ws_1", "status": "completed", "action": {"type": "search", "query": "x"}}]}),
        json!({"model": "m", "input": [{"type": "item_reference", "id": "msg_1"}]}),
        json!({"model": "m", "input": [{"type": "compaction", "encrypted_content": "gAAA"}]}),
        json!({"model": "m", "input": [{"type": "custom_tool_call", "call_id": "c", "name": "apply_patch", "input": "*** Begin Patch"}]}),
        json!({"model": "m", "input": [{"type": "computer_call_output", "call_id": "c", "output": {"type": "computer_screenshot", "image_url": "x"}}]}),
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_image", "file_id": "file-1"}]}]}),
        json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_file", "file_id": "file-1"}]}]}),
        json!({"model": "m", "input": "x", "prompt": {"id": "pmpt_1"}}),
    ];
    for body in unsupported {
        let err = decode_request(R, &bytes(&body)).unwrap_err();
        assert!(
            matches!(err, TranslateError::Unsupported { .. }),
            "{body}: {err}"
        );
    }
    let invalid = [
        (
            json!({"model": "m", "input": "x", "previous_response_id": "resp_1"}),
            "previous_response_id",
        ),
        (
            json!({"model": "m", "input": "x", "conversation": "conv_1"}),
            "conversation",
        ),
        (
            json!({"model": "m", "input": "x", "background": true}),
            "background",
        ),
        (
            json!({"model": "m", "input": [{"role": "tool", "content": "x"}]}),
            "input[0].role",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call", "name": "f", "arguments": "{}"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"type": "function_call_output", "output": "x"}]}),
            "input[0].call_id",
        ),
        (
            json!({"model": "m", "input": [{"role": "user", "content": [{"type": "input_video"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"role": "assistant", "content": [{"type": "input_image", "image_url": "https://x"}]}]}),
            "input[0].content[0].type",
        ),
        (
            json!({"model": "m", "input": [{"content": "no type, no role"}]}),
            "input[0].type",
        ),
    ];
    for (body, param) in invalid {
        match decode_request(R, &bytes(&body)) {
            Err(TranslateError::Invalid {
                param: Some(p),
                message,
            }) => {
                assert_eq!(p, param, "{body}");
                if param == "previous_response_id" {
                    assert!(
                        message.contains("stateless") && message.contains("input"),
                        "{message}"
                    );
                }
            }
            other => panic!("{body}: {other:?}"),
        }
    }
}

#[test]
fn request_encoding_for_a_responses_target() {
    let mut req = ChatRequest {
        model: "route".into(),
        system: vec!["Be brief.".into(), "Use metric units.".into()],
        messages: vec![
            Message {
                role: Role::User,
                content: vec![Part::Text("Chart?".into())],
            },
            Message {
                role: Role::Assistant,
                content: vec![
                    Part::Text("Fetching.".into()),
                    Part::ToolCall(ToolCall {
                        id: "toolu_1".into(),
                        name: "chart".into(),
                        arguments: String::new(),
                    }),
                    Part::ToolCall(ToolCall {
                        id: "toolu_2".into(),
                        name: "doc".into(),
                        arguments: "{\"n\":1}".into(),
                    }),
                ],
            },
            Message {
                role: Role::User,
                content: vec![
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_1".into(),
                        name: Some("chart".into()),
                        content: vec![
                            Part::Text("here".into()),
                            Part::Image(Image::Base64 {
                                media_type: "image/png".into(),
                                data: PNG.into(),
                            }),
                        ],
                        is_error: false,
                    }),
                    Part::ToolResult(ToolResult {
                        call_id: "toolu_2".into(),
                        name: None,
                        content: vec![Part::Text("not found".into())],
                        is_error: true,
                    }),
                    Part::Image(Image::Base64 {
                        media_type: "application/pdf".into(),
                        data: "JVBERi0=".into(),
                    }),
                ],
            },
        ],
        tools: vec![ToolSpec {
            name: "chart".into(),
            description: None,
            parameters: json!({"type": "object"}),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Tool("chart".into())),
        parallel_tool_calls: Some(false),
        max_tokens: Some(5),
        top_k: Some(3),
        stop: vec!["END".into()],
        response_format: Some(ResponseFormat::JsonSchema {
            name: "r".into(),
            schema: json!({"type": "object"}),
            strict: None,
        }),
        stream: true,
        include_usage: true,
        user: Some("u".into()),
        ..ChatRequest::default()
    };
    let (body, warnings) = encode(R, &req);
    assert_eq!(
        body,
        json!({
            "model": "up-model",
            "input": [
                {"type": "message", "role": "system", "content": "Be brief."},
                {"type": "message", "role": "system", "content": "Use metric units."},
                {"type": "message", "role": "user", "content": "Chart?"},
                {"type": "message", "role": "assistant", "content": "Fetching."},
                {"type": "function_call", "call_id": "toolu_1", "name": "chart", "arguments": "{}"},
                {"type": "function_call", "call_id": "toolu_2", "name": "doc", "arguments": "{\"n\":1}"},
                {"type": "function_call_output", "call_id": "toolu_1", "output": [
                    {"type": "input_text", "text": "here"},
                    {"type": "input_image", "image_url": format!("data:image/png;base64,{PNG}"), "detail": "auto"}]},
                {"type": "function_call_output", "call_id": "toolu_2", "output": "Error: not found"},
                {"type": "message", "role": "user", "content": [
                    {"type": "input_file", "filename": "document.pdf", "file_data": "data:application/pdf;base64,JVBERi0="}]}
            ],
            "tools": [{"type": "function", "name": "chart", "parameters": {"type": "object"}, "strict": false}],
            "tool_choice": {"type": "function", "name": "chart"},
            "parallel_tool_calls": false,
            "max_output_tokens": 16,
            "text": {"format": {"type": "json_schema", "name": "r", "schema": {"type": "object"}}},
            "stream": true,
            "store": false,
            "user": "u"
        })
    );
    assert_eq!(
        warnings,
        vec![
            "dropped field top_k: not supported by openai-responses",
            "dropped field stop: not supported by openai-responses",
            "max_tokens raised from 5 to 16, the minimum of openai-responses",
        ]
    );
    // Assistant images have no Responses equivalent.
    req.messages[1]
        .content
        .push(Part::Image(Image::Url("https://x/y.png".into())));
    assert!(matches!(
        encode_request(R, &req, &opts()),
        Err(TranslateError::Unsupported { .. })
    ));
}

#[test]
fn answers_carry_what_the_sdk_requires() {
    let resp = ChatResponse {
        id: "msg_9".into(),
        model: "claude".into(),
        created: Some(1_700_000_000),
        content: vec![Part::Text("Partial".into()), Part::Text(" answer".into())],
        stop_reason: Some(StopReason::MaxTokens),
        usage: Usage {
            input_tokens: Some(12),
            output_tokens: Some(16),
            cache_read_tokens: Some(2),
            ..Usage::default()
        },
    };
    let v: Value = serde_json::from_slice(&encode_response(R, &resp, "my-route")).unwrap();
    // Non-optional fields of the SDK's `Response` model.
    for key in [
        "id",
        "created_at",
        "model",
        "object",
        "output",
        "parallel_tool_calls",
        "tool_choice",
        "tools",
    ] {
        assert!(v.get(key).is_some_and(|x| !x.is_null()), "{key}: {v}");
    }
    assert_eq!(v["id"], "resp_msg_9");
    assert_eq!(
        (&v["object"], &v["model"], &v["created_at"]),
        (
            &json!("response"),
            &json!("my-route"),
            &json!(1_700_000_000)
        )
    );
    assert_eq!(
        (&v["status"], &v["incomplete_details"]),
        (
            &json!("incomplete"),
            &json!({"reason": "max_output_tokens"})
        )
    );
    assert!(v.get("completed_at").is_none());
    assert_eq!(
        v["output"],
        json!([{"type": "message", "id": "msg_msg_9_0", "status": "incomplete", "role": "assistant",
            "content": [{"type": "output_text", "text": "Partial answer", "annotations": [], "logprobs": []}]}])
    );
    assert_eq!(
        v["usage"],
        json!({"input_tokens": 12, "input_tokens_details": {"cached_tokens": 2, "cache_write_tokens": 0},
            "output_tokens": 16, "output_tokens_details": {"reasoning_tokens": 0}, "total_tokens": 28})
    );
    // A tool call with empty arguments goes out as `{}`; the answer is `completed`.
    let resp = ChatResponse {
        id: String::new(),
        content: vec![Part::ToolCall(ToolCall {
            id: "call_x".into(),
            name: "now".into(),
            arguments: String::new(),
        })],
        ..ChatResponse::default()
    };
    let v: Value = serde_json::from_slice(&encode_response(R, &resp, "m")).unwrap();
    assert!(v["id"].as_str().unwrap().starts_with("resp_"));
    assert_eq!(
        (&v["status"], &v["incomplete_details"]),
        (&json!("completed"), &Value::Null)
    );
    assert!(v["completed_at"].as_u64().is_some());
    assert_eq!(v["output"][0]["arguments"], "{}");
    assert!(v["output"][0]["id"].as_str().unwrap().starts_with("fc_"));
    // A failed response from upstream is an upstream error.
    let failed = json!({"id": "resp_1", "object": "response", "status": "failed", "output": [],
        "error": {"code": "server_error", "message": "The model crashed."}});
    match decode_response(R, &bytes(&failed)) {
        Err(TranslateError::Upstream { message }) => {
            assert!(message.contains("The model crashed."), "{message}")
        }
        other => panic!("{other:?}"),
    }
}

/// The exact event sequence the encoder writes for text then two parallel calls (one with empty
/// arguments), and the sequence numbers 0, 1, 2, ….
#[test]
fn encoder_transcript_is_the_real_sequence() {
    let mut e = StreamEncoder::new(
        R,
        StreamOptions {
            model: "route".into(),
            include_usage: false,
        },
    )
    .with_created(7);
    let mut out = Vec::new();
    for ev in [
        StreamEvent::Start {
            id: "msg_1".into(),
            model: "claude".into(),
        },
        StreamEvent::TextDelta {
            index: 0,
            text: "Hi".into(),
        },
        StreamEvent::ToolCallStart {
            index: 1,
            id: "toolu_a".into(),
            name: "f".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            fragment: "{\"x\":".into(),
        },
        StreamEvent::ToolCallDelta {
            index: 1,
            fragment: "1}".into(),
        },
        StreamEvent::ToolCallStart {
            index: 2,
            id: "toolu_b".into(),
            name: "g".into(),
        },
        StreamEvent::Usage(Usage {
            input_tokens: Some(3),
            output_tokens: Some(4),
            ..Usage::default()
        }),
        StreamEvent::Stop(StopReason::ToolUse),
        StreamEvent::Done,
    ] {
        e.push(&ev, &mut out);
    }
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(&out, |ev| events.push(ev));
    let summary: Vec<String> = events
        .iter()
        .map(|ev| {
            let v: Value = serde_json::from_str(&ev.data).unwrap();
            let detail = v["delta"]
                .as_str()
                .or(v["item"]["type"].as_str())
                .unwrap_or("");
            format!("{} {} {detail}", v["sequence_number"], ev.event)
        })
        .collect();
    assert_eq!(
        summary,
        [
            "0 response.created ",
            "1 response.in_progress ",
            "2 response.output_item.added message",
            "3 response.content_part.added ",
            "4 response.output_text.delta Hi",
            "5 response.output_text.done ",
            "6 response.content_part.done ",
            "7 response.output_item.done message",
            "8 response.output_item.added function_call",
            "9 response.function_call_arguments.delta {\"x\":",
            "10 response.function_call_arguments.delta 1}",
            "11 response.function_call_arguments.done ",
            "12 response.output_item.done function_call",
            "13 response.output_item.added function_call",
            "14 response.function_call_arguments.delta {}",
            "15 response.function_call_arguments.done ",
            "16 response.output_item.done function_call",
            "17 response.completed ",
        ]
    );
    let last: Value = serde_json::from_str(&events[17].data).unwrap();
    let resp = &last["response"];
    assert_eq!(
        (&resp["id"], &resp["model"], &resp["created_at"]),
        (&json!("resp_msg_1"), &json!("route"), &json!(7))
    );
    assert_eq!(
        resp["output"][1],
        json!({"type": "function_call", "id": "fc_msg_1_1", "status": "completed",
        "call_id": "toolu_a", "name": "f", "arguments": "{\"x\":1}"})
    );
    assert_eq!(resp["usage"]["total_tokens"], 7);
    let r = rebuild(R, &out);
    assert_eq!(r.text, "Hi");
    assert_eq!(r.calls.len(), 2);
}

/// An upstream cut right after `response.output_item.added` (no text, no arguments yet) still ends
/// every client's stream well-formed; and a Responses client's stream cut anywhere does too.
#[test]
fn a_stream_cut_after_output_item_added_ends_well_formed() {
    let events = provider_stream(R);
    for (cut_at, has_call) in [(2, false), (9, true)] {
        assert_eq!(events[cut_at].event, "response.output_item.added");
        for to in ALL {
            let r = rebuild(to, &translate_all(R, to, &events[..=cut_at], true));
            assert!(r.terminated, "cut at {cut_at} -> {to}");
            assert_eq!(
                r.text,
                if cut_at == 2 { "" } else { "Hello wörld 🌍" },
                "{to}"
            );
            assert_eq!(r.calls.len(), usize::from(has_call), "{to}");
            if has_call {
                assert_eq!(
                    r.calls[0].2,
                    json!({}),
                    "{to}: an empty call's arguments are {{}}"
                );
            }
        }
    }
    for from in ALL {
        let events = provider_stream(from);
        for cut in 0..=events.len() {
            let r = rebuild(R, &translate_all(from, R, &events[..cut], false));
            assert!(r.terminated, "{from} cut at {cut}");
        }
    }
}

#[test]
fn errors_end_a_responses_stream_in_both_shapes() {
    // Before anything was sent: created, in_progress, error, response.failed.
    let mut e = StreamEncoder::new(R, StreamOptions::default());
    let mut out = Vec::new();
    e.error("rate_limit", "slow down", &mut out);
    let len = out.len();
    e.finish(&mut out);
    e.error("api_error", "again", &mut out);
    assert_eq!(out.len(), len, "nothing follows the end");
    let r = rebuild(R, &out);
    assert!(r.terminated);
    assert_eq!(
        r.error,
        Some(
            json!({"type": "rate_limit_error", "code": "rate_limit_exceeded", "message": "slow down", "param": null})
        )
    );
    // The nested `error` is what the openai SDK raises `APIError` on.
    let text = String::from_utf8(out).unwrap();
    assert!(text.contains("event: error\ndata: {\"type\":\"error\",\"code\":\"rate_limit_exceeded\",\"message\":\"slow down\",\"param\":null,\"error\":{"));

    // Mid-answer, the failed response carries what was sent, marked incomplete.
    let mut e = StreamEncoder::new(R, StreamOptions::default());
    let mut out = Vec::new();
    e.push(
        &StreamEvent::TextDelta {
            index: 0,
            text: "Hal".into(),
        },
        &mut out,
    );
    e.error("overloaded_error", "upstream went away", &mut out);
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(&out, |ev| events.push(ev));
    let failed: Value = serde_json::from_str(&events.last().unwrap().data).unwrap();
    assert_eq!(failed["type"], "response.failed");
    assert_eq!(
        failed["response"]["error"],
        json!({"code": "server_error", "message": "upstream went away"})
    );
    assert_eq!(failed["response"]["output"][0]["status"], "incomplete");
    assert_eq!(failed["response"]["output"][0]["content"][0]["text"], "Hal");

    // Decoding: an upstream `response.failed` and a flat `error` event are canonical errors.
    for (ev, kind, message) in [
        (
            json!({"type": "response.failed", "sequence_number": 5, "response": {"id": "resp_1", "status": "failed",
                "error": {"code": "rate_limit_exceeded", "message": "Rate limit reached. Please try again in 11.054s."}}}),
            "rate_limit_exceeded",
            "Rate limit reached. Please try again in 11.054s.",
        ),
        (
            json!({"type": "error", "code": "context_length_exceeded", "message": "Too long.", "param": "input", "sequence_number": 1}),
            "context_length_exceeded",
            "Too long.",
        ),
    ] {
        let mut d = StreamDecoder::new(R);
        let mut out = Vec::new();
        d.push(
            &crate::sse::SseEvent {
                event: ev["type"].as_str().unwrap().into(),
                data: ev.to_string(),
            },
            &mut out,
        )
        .unwrap();
        assert_eq!(
            out,
            vec![StreamEvent::Error {
                kind: kind.into(),
                message: message.into()
            }]
        );
    }
}

/// Upstreams (and proxies) that skip deltas and send whole items, or end incomplete.
#[test]
fn decoder_accepts_whole_items_and_incomplete_endings() {
    let evs = [
        json!({"type": "response.created", "sequence_number": 0, "response": {"id": "resp_7", "model": "gpt-5", "status": "in_progress", "output": []}}),
        json!({"type": "response.output_item.added", "sequence_number": 1, "output_index": 0,
            "item": {"type": "reasoning", "id": "rs_1", "summary": []}}),
        json!({"type": "response.output_item.done", "sequence_number": 2, "output_index": 1,
            "item": {"type": "message", "id": "msg_1", "role": "assistant", "status": "incomplete",
                "content": [{"type": "output_text", "text": "Whole text", "annotations": []}]}}),
        json!({"type": "response.output_item.done", "sequence_number": 3, "output_index": 2,
            "item": {"type": "function_call", "id": "fc_1", "call_id": "call_1", "name": "f", "namespace": "ns", "arguments": "{\"a\":2}", "status": "completed"}}),
        json!({"type": "response.incomplete", "sequence_number": 4, "response": {"id": "resp_7", "status": "incomplete",
            "incomplete_details": {"reason": "max_output_tokens"}, "output": [],
            "usage": {"input_tokens": 4, "output_tokens": 16, "total_tokens": 20}}}),
    ];
    let mut d = StreamDecoder::new(R);
    let mut out = Vec::new();
    for ev in &evs {
        d.push(
            &crate::sse::SseEvent {
                event: ev["type"].as_str().unwrap().into(),
                data: ev.to_string(),
            },
            &mut out,
        )
        .unwrap();
    }
    assert_eq!(
        out,
        vec![
            StreamEvent::Start {
                id: "resp_7".into(),
                model: "gpt-5".into()
            },
            StreamEvent::TextDelta {
                index: 1,
                text: "Whole text".into()
            },
            StreamEvent::ToolCallStart {
                index: 2,
                id: "call_1".into(),
                name: "ns__f".into()
            },
            StreamEvent::ToolCallDelta {
                index: 2,
                fragment: "{\"a\":2}".into()
            },
            StreamEvent::Usage(Usage {
                input_tokens: Some(4),
                output_tokens: Some(16),
                ..Usage::default()
            }),
            StreamEvent::Stop(StopReason::MaxTokens),
            StreamEvent::Done,
        ]
    );
}

/// Every other format's stream, translated for a Responses client, parses with the SSE parser and
/// serde_json with strictly increasing sequence numbers (checked inside `rebuild`), and back.
#[test]
fn every_format_streams_to_responses_and_back() {
    for from in ALL {
        let out = translate_all(from, R, &provider_stream(from), false);
        let r = rebuild(R, &out);
        assert_eq!(
            (r.text.as_str(), r.calls.len(), r.stop.as_deref()),
            ("Hello wörld 🌍", 2, Some("completed")),
            "{from}"
        );
        // The Responses stream Ballast wrote is itself a valid upstream stream.
        let mut p = SseParser::new();
        let mut events = Vec::new();
        p.feed(&out, |ev| events.push(ev));
        for to in ALL {
            let again = rebuild(to, &translate_all(R, to, &events, true));
            assert_eq!(again.text, "Hello wörld 🌍", "{from} -> R -> {to}");
            let calls: Vec<(&str, &Value)> =
                again.calls.iter().map(|c| (c.1.as_str(), &c.2)).collect();
            assert_eq!(
                calls,
                vec![
                    ("get_weather", &json!({"city": "Paris"})),
                    ("get_time", &json!({}))
                ],
                "{from} -> R -> {to}"
            );
        }
    }
}
