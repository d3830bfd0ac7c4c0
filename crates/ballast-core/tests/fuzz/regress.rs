//! One test per defect found by reading and fuzzing the code that takes outside bytes, and deep
//! nesting in every decoder.

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{
    ClientError, ErrorKind, stream_error_event_after, upstream_error_message,
};
use ballast_core::envelope::Envelope;
use ballast_core::model::ChatRequest;
use ballast_core::model::{Part, StreamEvent, Usage};
use ballast_core::observe::{StreamObserver, observe_body};
use ballast_core::sse::{SseEvent, SseParser};
use ballast_core::translate::{
    self, EncodeOptions, StreamDecoder, StreamEncoder, StreamLimits, StreamOptions,
    StreamTranslator,
};
use serde_json::{Value, json};

use crate::wire::FORMATS;

fn data(v: Value) -> SseEvent {
    SseEvent {
        event: String::new(),
        data: v.to_string(),
    }
}

fn named(name: &str, v: Value) -> SseEvent {
    SseEvent {
        event: name.into(),
        data: v.to_string(),
    }
}

fn opts() -> StreamOptions {
    StreamOptions {
        model: "m".into(),
        include_usage: true,
    }
}

/// Every SSE event of `bytes`, which must be well-formed (no partial event at the end).
fn events_of(bytes: &[u8]) -> Vec<SseEvent> {
    let mut p = SseParser::new();
    let mut out = Vec::new();
    p.feed(bytes, |e| out.push(e));
    assert!(!p.finish(), "partial event at the end of the output");
    out
}

fn decode_all(format: ApiFormat, events: &[SseEvent]) -> Vec<StreamEvent> {
    let mut d = StreamDecoder::new(format);
    let mut out = Vec::new();
    for ev in events {
        d.push(ev, &mut out).unwrap();
    }
    out
}

fn chat_tool_chunk(index: &str) -> SseEvent {
    // The number is spliced in as written, so it can be anything JSON can say.
    SseEvent {
        event: String::new(),
        data: format!(
            r#"{{"id":"chatcmpl-1","model":"gpt","choices":[{{"index":0,"delta":{{"tool_calls":[{{"index":{index},"id":"call_x","type":"function","function":{{"name":"f","arguments":"{{}}"}}}}]}},"finish_reason":null}}]}}"#
        ),
    }
}

/// The crash on main: `ChunkDecoder` resized a `Vec` to a provider's tool-call index, so an index of
/// 1e15 aborted the process ("memory allocation of 1000000000000001 bytes failed").
#[test]
fn huge_chat_tool_call_index_costs_nothing() {
    for index in ["1000000000000000", "4294967295", "9007199254740993"] {
        let out = decode_all(ApiFormat::OpenAiChat, &[chat_tool_chunk(index)]);
        // The canonical index is dense (text is 0, the first call 1), whatever the provider's.
        let starts: Vec<_> = out
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallStart { index, id, .. } => Some((*index, id.as_str())),
                _ => None,
            })
            .collect();
        assert_eq!(starts, [(1, "call_x")], "{index}");
        // And the translated stream is a normal one.
        for to in FORMATS {
            let mut t = StreamTranslator::new(ApiFormat::OpenAiChat, to, opts());
            let mut bytes = Vec::new();
            t.push(&chat_tool_chunk(index), &mut bytes).unwrap();
            t.finish(&mut bytes);
            assert!(bytes.len() < 4096, "{to}: {} bytes", bytes.len());
            assert!(!events_of(&bytes).is_empty());
        }
    }
}

/// `index + 1` on the largest index overflowed: a panic in debug builds, and in release a wrap to
/// the text's index 0 followed by an out-of-bounds index (a panic too).
#[test]
fn largest_chat_tool_call_index_does_not_overflow() {
    let out = decode_all(
        ApiFormat::OpenAiChat,
        &[
            chat_tool_chunk("18446744073709551615"),
            chat_tool_chunk("0"),
            chat_tool_chunk("18446744073709551615"),
        ],
    );
    let starts: Vec<usize> = out
        .iter()
        .filter_map(|e| match e {
            StreamEvent::ToolCallStart { index, .. } => Some(*index),
            _ => None,
        })
        .collect();
    assert_eq!(starts, [1, 2]);
    // Indices JSON cannot fit in a usize (or that are not integers) make the event malformed.
    for index in ["-1", "1e300", "0.5", "18446744073709551616", "\"3\""] {
        let mut d = StreamDecoder::new(ApiFormat::OpenAiChat);
        assert!(d.push(&chat_tool_chunk(index), &mut Vec::new()).is_err());
    }
}

/// Tool-call, part and argument counts were unbounded: every call was tracked (with linear
/// searches), a Gemini client's call was buffered whole and a Responses client's answer kept whole,
/// however large. Now each is capped and going over fails the stream.
#[test]
fn stream_limits_fail_the_stream() {
    let limits = StreamLimits {
        max_tool_calls: 3,
        max_tool_args_bytes: 64,
        max_parts: 5,
        max_answer_bytes: 1024,
        ..StreamLimits::default()
    };
    // Too many tool calls from a Chat provider, however they are numbered.
    for to in FORMATS {
        let mut t = StreamTranslator::new(ApiFormat::OpenAiChat, to, opts()).with_limits(limits);
        let mut out = Vec::new();
        for i in 0..3 {
            t.push(&chat_tool_chunk(&(i * 1000).to_string()), &mut out)
                .unwrap();
        }
        let err = t.push(&chat_tool_chunk("7"), &mut out).unwrap_err();
        assert!(err.is_limit_exceeded(), "{err}");
        assert!(err.to_string().contains("more than 3 tool calls"), "{err}");
        // Sticky: later events are refused, and the stream ends with an error event.
        let before = out.len();
        assert!(t.push(&chat_tool_chunk("0"), &mut out).is_err());
        assert_eq!(out.len(), before);
        assert!(t.limit_exceeded().is_some());
        t.finish(&mut out);
        let tail = events_of(&out[before..]);
        let decoded = decode_all(to, &tail);
        assert!(
            decoded
                .iter()
                .any(|e| matches!(e, StreamEvent::Error { message, .. } if message.contains("tool calls"))),
            "{to}: {decoded:?}"
        );
    }
    // One call's arguments over the limit (Anthropic → Gemini buffers them until the call ends).
    let mut t = StreamTranslator::new(ApiFormat::AnthropicMessages, ApiFormat::Gemini, opts())
        .with_limits(limits);
    let mut out = Vec::new();
    t.push(
        &named(
            "content_block_start",
            json!({"type":"content_block_start","index":0,"content_block":{"type":"tool_use","id":"t","name":"f","input":{}}}),
        ),
        &mut out,
    )
    .unwrap();
    let delta = named(
        "content_block_delta",
        json!({"type":"content_block_delta","index":0,"delta":{"type":"input_json_delta","partial_json":"x".repeat(40)}}),
    );
    t.push(&delta, &mut out).unwrap();
    let err = t.push(&delta, &mut out).unwrap_err();
    assert!(err.to_string().contains("over 64 bytes"), "{err}");
    // Text parts (blocks) that keep switching, and a whole answer over the limit.
    let text = |index: usize, text: &str| {
        named(
            "content_block_delta",
            json!({"type":"content_block_delta","index":index,"delta":{"type":"text_delta","text":text}}),
        )
    };
    let mut t = StreamTranslator::new(
        ApiFormat::AnthropicMessages,
        ApiFormat::OpenAiResponses,
        opts(),
    )
    .with_limits(limits);
    let mut out = Vec::new();
    let results: Vec<bool> = (0..6)
        .map(|i| t.push(&text(i % 2, "a"), &mut out).is_ok())
        .collect();
    assert_eq!(results, [true, true, true, true, true, false]);
    let mut t = StreamTranslator::new(
        ApiFormat::AnthropicMessages,
        ApiFormat::OpenAiResponses,
        opts(),
    )
    .with_limits(limits);
    assert!(t.push(&text(0, &"a".repeat(1000)), &mut out).is_ok());
    let err = t.push(&text(0, &"a".repeat(100)), &mut out).unwrap_err();
    assert!(
        err.to_string().contains("answer is over 1024 bytes"),
        "{err}"
    );
    // A Responses provider's distinct output indices are capped in the decoder.
    let mut d = StreamDecoder::new(ApiFormat::OpenAiResponses).with_limits(limits);
    let mut out = Vec::new();
    let results: Vec<bool> = (0..6u64)
        .map(|i| {
            let ev = named(
                "response.output_text.delta",
                json!({"type":"response.output_text.delta","output_index": i * 1_000_000_000_000,"content_index":0,"delta":"a"}),
            );
            d.push(&ev, &mut out).is_ok()
        })
        .collect();
    assert_eq!(results, [true, true, true, true, true, false]);
    // The defaults are the documented constants, and a standalone encoder enforces them too.
    let d = StreamLimits::default();
    assert_eq!(
        (d.max_tool_args_bytes, d.max_tool_calls, d.max_event_bytes),
        (4 << 20, 1024, 8 << 20)
    );
    let mut enc = StreamEncoder::new(ApiFormat::Gemini, opts()).with_limits(limits);
    let mut out = Vec::new();
    for i in 0..4 {
        enc.push(
            &StreamEvent::ToolCallStart {
                index: i,
                id: String::new(),
                name: "f".into(),
            },
            &mut out,
        );
    }
    assert!(enc.limit_exceeded().is_some());
}

/// Usage figures are added up (Anthropic's input excludes its cache figures; Gemini's output
/// excludes thoughts; every format reports a total): with figures near `u64::MAX` the sums
/// overflowed — a panic in debug builds, a wrapped (wrong) total in release. They saturate now.
#[test]
fn huge_usage_figures_saturate() {
    let max = u64::MAX;
    let anthropic = json!({"id":"msg_1","type":"message","role":"assistant","model":"c","content":[{"type":"text","text":"hi"}],
        "stop_reason":"end_turn","usage":{"input_tokens":max,"output_tokens":max,"cache_read_input_tokens":max,"cache_creation_input_tokens":max}});
    let gemini = json!({"candidates":[{"content":{"role":"model","parts":[{"text":"hi"}]},"finishReason":"STOP"}],
        "usageMetadata":{"promptTokenCount":max,"candidatesTokenCount":max,"thoughtsTokenCount":max,"toolUsePromptTokenCount":max}});
    let chat = json!({"id":"c","object":"chat.completion","model":"g","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],
        "usage":{"prompt_tokens":max,"completion_tokens":max}});
    let responses = json!({"id":"resp_1","object":"response","status":"completed","model":"g",
        "output":[{"type":"message","role":"assistant","content":[{"type":"output_text","text":"hi"}]}],
        "usage":{"input_tokens":max,"output_tokens":max}});
    for (from, body) in [
        (ApiFormat::AnthropicMessages, anthropic),
        (ApiFormat::Gemini, gemini),
        (ApiFormat::OpenAiChat, chat),
        (ApiFormat::OpenAiResponses, responses),
    ] {
        let resp = translate::decode_response(from, body.to_string().as_bytes()).unwrap();
        assert_eq!(resp.usage.input_tokens, Some(max), "{from}");
        assert_eq!(resp.usage.output_tokens, Some(max), "{from}");
        for to in FORMATS {
            let out: Value =
                serde_json::from_slice(&translate::encode_response(to, &resp, "m")).unwrap();
            let total = out
                .pointer("/usage/total_tokens")
                .or_else(|| out.pointer("/usageMetadata/totalTokenCount"));
            if let Some(total) = total {
                assert_eq!(total.as_u64(), Some(max), "{from} → {to}");
            }
        }
    }
    // Streams: the encoders' usage sums.
    let usage = Usage {
        input_tokens: Some(max),
        output_tokens: Some(max),
        cache_read_tokens: Some(max),
        cache_write_tokens: Some(max),
        reasoning_tokens: Some(max),
    };
    for to in FORMATS {
        let mut enc = StreamEncoder::new(to, opts());
        let mut out = Vec::new();
        enc.push(&StreamEvent::Usage(usage), &mut out);
        enc.push(
            &StreamEvent::Stop(ballast_core::model::StopReason::EndTurn),
            &mut out,
        );
        enc.finish(&mut out);
        assert!(!events_of(&out).is_empty());
    }
    // Anthropic stream usage: input + cache figures.
    let out = decode_all(
        ApiFormat::AnthropicMessages,
        &[named(
            "message_start",
            json!({"type":"message_start","message":{"id":"m","model":"c","usage":{"input_tokens":max,"cache_read_input_tokens":max}}}),
        )],
    );
    assert!(out.contains(&StreamEvent::Usage(Usage {
        input_tokens: Some(max),
        cache_read_tokens: Some(max),
        ..Usage::default()
    })));
}

/// A Responses provider's `sequence_number` of `u64::MAX` made the error event the gateway appends
/// to a passed-through stream compute `n + 1`: a panic in debug builds, a wrap to 0 in release.
#[test]
fn largest_sequence_number_does_not_overflow() {
    let mut o = StreamObserver::new(ApiFormat::OpenAiResponses);
    o.feed(
        format!(
            "event: response.created\ndata: {}\n\n",
            json!({"type":"response.created","sequence_number":u64::MAX,"response":{"id":"r","status":"in_progress","output":[]}})
        )
        .as_bytes(),
    );
    let last = o.observation().last_sequence_number;
    assert_eq!(last, Some(u64::MAX));
    let bytes = stream_error_event_after(
        ApiFormat::OpenAiResponses,
        &ClientError::new(ErrorKind::BadGateway, "cut"),
        last,
    );
    let events = events_of(&bytes);
    let seqs: Vec<u64> = events
        .iter()
        .map(|e| {
            serde_json::from_str::<Value>(&e.data).unwrap()["sequence_number"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [u64::MAX, u64::MAX]);
}

/// A provider's response id is repeated in every event some client formats carry (a Chat chunk's
/// `id`, Gemini's `responseId`, Responses item ids) and in synthesised tool-call ids: a megabyte id
/// (events may be 8 MiB) turned every one-byte text delta into a megabyte of output. Adopted ids are
/// cut to 256 bytes.
#[test]
fn huge_response_ids_are_not_repeated() {
    let id = "x".repeat(64 << 10);
    let start = |from: ApiFormat| -> SseEvent {
        match from {
            ApiFormat::OpenAiChat => data(
                json!({"id":id,"model":"g","choices":[{"index":0,"delta":{"content":"a"},"finish_reason":null}]}),
            ),
            ApiFormat::AnthropicMessages => named(
                "message_start",
                json!({"type":"message_start","message":{"id":id,"model":"c","usage":{"input_tokens":1}}}),
            ),
            ApiFormat::Gemini => {
                data(json!({"responseId":id,"candidates":[{"content":{"parts":[{"text":"a"}]}}]}))
            }
            ApiFormat::OpenAiResponses => named(
                "response.created",
                json!({"type":"response.created","sequence_number":0,"response":{"id":id,"status":"in_progress","output":[]}}),
            ),
        }
    };
    let delta = |from: ApiFormat, i: usize| -> SseEvent {
        match from {
            ApiFormat::OpenAiChat => data(
                json!({"id":id,"choices":[{"index":0,"delta":{"tool_calls":[{"index":i,"function":{"name":"f","arguments":"{}"}}]},"finish_reason":null}]}),
            ),
            ApiFormat::AnthropicMessages => named(
                "content_block_delta",
                json!({"type":"content_block_delta","index":i,"delta":{"type":"text_delta","text":"a"}}),
            ),
            ApiFormat::Gemini => data(
                json!({"responseId":id,"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":{}}}]}}]}),
            ),
            ApiFormat::OpenAiResponses => named(
                "response.output_text.delta",
                json!({"type":"response.output_text.delta","output_index":i,"content_index":0,"delta":"a"}),
            ),
        }
    };
    for from in FORMATS {
        for to in FORMATS {
            let mut t = StreamTranslator::new(from, to, opts());
            let mut out = Vec::new();
            t.push(&start(from), &mut out).unwrap();
            let after_start = out.len();
            for i in 0..50 {
                t.push(&delta(from, i), &mut out).unwrap();
            }
            t.finish(&mut out);
            // Fifty small events (the Chat and Gemini ones carry the id again on the way in).
            assert!(
                out.len() - after_start < 50 * 4096,
                "{from} → {to}: {} bytes",
                out.len() - after_start
            );
        }
    }
}

/// Gemini request decoding paired each `functionResponse` with its call by scanning every call of
/// the previous turn, and the Gemini encoder joined a tool result's text parts by copying the text
/// so far for each part: both quadratic in what one request body holds. 20 000 calls and results
/// now take milliseconds.
#[test]
fn many_calls_and_results_decode_in_linear_time() {
    let n = 20_000;
    let calls: Vec<Value> = (0..n)
        .map(|i| json!({"functionCall":{"name":format!("f{i}"),"args":{}}}))
        .collect();
    let results: Vec<Value> = (0..n)
        .rev()
        .map(|i| json!({"functionResponse":{"name":format!("f{i}"),"response":{"output":"ok"}}}))
        .collect();
    let body = json!({"contents":[{"role":"user","parts":[{"text":"go"}]},{"role":"model","parts":calls},{"role":"user","parts":results}]});
    let req = translate::decode_request(ApiFormat::Gemini, body.to_string().as_bytes()).unwrap();
    let Some(Part::ToolResult(last)) = req.messages[2].content.last() else {
        panic!("no result");
    };
    assert_eq!(
        (last.call_id.as_str(), last.name.as_deref()),
        ("call_1_0", Some("f0"))
    );
    // A Chat tool message of many text parts, to Gemini.
    let parts: Vec<Value> = (0..n)
        .map(|_| json!({"type":"text","text":"line"}))
        .collect();
    let body = json!({"model":"m","messages":[
        {"role":"user","content":"go"},
        {"role":"assistant","tool_calls":[{"id":"c1","type":"function","function":{"name":"f","arguments":"{}"}}]},
        {"role":"tool","tool_call_id":"c1","content":parts}]});
    let req =
        translate::decode_request(ApiFormat::OpenAiChat, body.to_string().as_bytes()).unwrap();
    let enc = translate::encode_request(ApiFormat::Gemini, &req, &encode_opts()).unwrap();
    assert!(enc.body.len() > 5 * n);
    // Many namespaced Responses calls.
    let tools: Vec<Value> = (0..n)
        .map(|i| json!({"type":"namespace","name":"ns","tools":[{"type":"function","name":format!("f{i}")}]}))
        .collect();
    let items: Vec<Value> = (0..n)
        .map(|i| json!({"type":"function_call","call_id":format!("c{i}"),"namespace":"ns","name":format!("f{i}"),"arguments":"{}"}))
        .collect();
    let body = json!({"model":"m","input":items,"tools":tools});
    let req =
        translate::decode_request(ApiFormat::OpenAiResponses, body.to_string().as_bytes()).unwrap();
    assert_eq!(req.namespaced_tools.len(), n);
}

fn encode_opts() -> EncodeOptions<'static> {
    EncodeOptions {
        upstream_model: "up",
        default_max_tokens: 1024,
        rules: ballast_core::capability::ModelRules {
            token_limit: ballast_core::capability::TokenLimit::MaxCompletionTokens,
            ..ballast_core::capability::ModelRules::PERMISSIVE
        },
    }
}

/// After the SSE parser dropped an oversized line, the rest of that event (later `data:` lines)
/// was dispatched as an event of its own: a truncated payload treated as a whole one.
#[test]
fn the_tail_of_an_oversized_event_is_not_an_event() {
    let mut p = SseParser::with_limit(32);
    let mut out = Vec::new();
    let big = "a".repeat(64);
    p.feed(
        format!("data: {{\"x\":\"{big}\",\ndata: \"y\":1}}\n\ndata: {{}}\n\n").as_bytes(),
        |e| out.push(e.data),
    );
    assert_eq!(out, ["{}"]);
    assert_eq!(p.oversized_events(), 1);
}

// ---------------------------------------------------------------------------------------------------
// Deep nesting.

const DEPTH: usize = 100_000;

/// Runs `f` on a thread with a small stack: 256 KiB in an optimised build, 1 MiB in a debug one
/// (unoptimised frames are about four times larger). `serde_json` stops at 128 levels, which needs
/// 128–256 KiB optimised; a decoder that recursed once per level of the input would need a
/// thousand times more for 100 000 levels, and overflow either way.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let kib = if cfg!(debug_assertions) { 1024 } else { 256 };
    std::thread::Builder::new()
        .stack_size(kib * 1024)
        .spawn(f)
        .unwrap()
        .join()
        .unwrap();
}

/// 100 000-deep JSON in the places a body can nest: at the top, in a known typed field, in a free
/// JSON value (tool schemas), in an unknown field, and in recursive content blocks.
fn deep_bodies() -> Vec<Vec<u8>> {
    let open = "[".repeat(DEPTH);
    let close = "]".repeat(DEPTH);
    let arrays = format!("{open}{close}");
    let objects = format!("{}1{}", "{\"a\":".repeat(DEPTH), "}".repeat(DEPTH));
    let mut bodies = vec![open.clone().into_bytes(), arrays.clone().into_bytes()];
    for (deep, templates) in [(&arrays, 0..9), (&objects, 0..3)] {
        for template in [
            r#"{"model":"m","messages":[{"role":"user","content":DEEP}],"max_tokens":1}"#,
            r#"{"model":"m","messages":[],"max_tokens":1,"unknown":DEEP}"#,
            r#"{"model":"m","messages":[],"max_tokens":1,"tools":[{"type":"function","name":"f","function":{"name":"f","parameters":DEEP},"input_schema":DEEP,"parameters":DEEP}]}"#,
            r#"{"contents":[{"role":"user","parts":[{"text":"x"}]}],"tools":[{"functionDeclarations":[{"name":"f","parameters":DEEP}]}],"generationConfig":{"responseSchema":DEEP,"responseMimeType":"application/json"}}"#,
            r#"{"model":"m","input":[{"type":"function_call","call_id":"c","name":"f","arguments":DEEP}],"tools":[{"type":"namespace","name":"n","tools":[DEEP]}]}"#,
            r#"{"choices":[{"index":0,"delta":{"content":DEEP},"message":{"content":DEEP}}],"usage":DEEP}"#,
            r#"{"candidates":[{"content":{"parts":[{"functionCall":{"name":"f","args":DEEP}}]}}],"error":DEEP}"#,
            r#"{"type":"response.output_item.added","item":{"type":"function_call","arguments":DEEP},"response":DEEP}"#,
            r#"{"error":{"message":DEEP}}"#,
        ][templates]
        .iter()
        {
            bodies.push(template.replace("DEEP", deep).into_bytes());
        }
    }
    // Anthropic's recursive blocks: tool results inside tool results.
    let block = r#"{"type":"tool_result","tool_use_id":"t","content":["#;
    bodies.push(
        format!(
            r#"{{"model":"m","max_tokens":1,"messages":[{{"role":"user","content":[{}{}]}}]}}"#,
            block.repeat(DEPTH / 2),
            "]}".repeat(DEPTH / 2)
        )
        .into_bytes(),
    );
    bodies
}

/// Every request decoder refuses them (they build values from what they read). Answer and stream
/// decoders skip fields they do not read without recursing (`serde_json` ignores a value
/// iteratively), so some of those bodies are accepted: what matters is that nothing recurses per
/// level of the input.
#[test]
fn deep_nesting_is_refused_without_overflowing_the_stack() {
    let bodies = deep_bodies();
    on_small_stack(move || {
        for body in &bodies {
            for format in FORMATS {
                let _ = Envelope::parse(format, body);
                assert!(translate::decode_request(format, body).is_err(), "{format}");
                let _ = translate::decode_response(format, body);
                let _ = observe_body(format, body);
                let mut sse = b"data: ".to_vec();
                sse.extend_from_slice(body);
                sse.extend_from_slice(b"\n\n");
                StreamObserver::new(format).feed(&sse);
                let ev = SseEvent {
                    event: String::new(),
                    data: String::from_utf8_lossy(body).into_owned(),
                };
                let mut t = StreamTranslator::new(format, ApiFormat::OpenAiResponses, opts());
                let mut out = Vec::new();
                let _ = t.push(&ev, &mut out);
                t.finish(&mut out);
            }
            assert_eq!(upstream_error_message(body), None);
        }
    });
}

/// A request within the nesting limit still decodes, and every encoder writes it (their
/// recursion is as deep as the value, which the parser bounded).
#[test]
fn nesting_within_the_parser_limit_still_works() {
    let schema = format!(
        "{}{{}}{}",
        r#"{"type":"OBJECT","items":"#.repeat(100),
        "}".repeat(100)
    );
    let body = format!(
        r#"{{"contents":[{{"role":"user","parts":[{{"text":"x"}}]}}],"tools":[{{"functionDeclarations":[{{"name":"f","parameters":{schema}}}]}}]}}"#
    );
    on_small_stack(move || {
        let req: ChatRequest =
            translate::decode_request(ApiFormat::Gemini, body.as_bytes()).unwrap();
        assert_eq!(req.tools[0].parameters["type"], "object");
        for to in FORMATS {
            translate::encode_request(to, &req, &encode_opts()).unwrap();
        }
    });
}

/// Found by the fuzzer: a Gemini client's `functionCall.args` is the provider's JSON written as is,
/// and pretty-printed arguments (OpenAI models send `"{\n  \"city\": …}"`; a Gemini provider's
/// stream may be pretty-printed over several `data:` lines) put line breaks inside the `data:` line,
/// cutting the event mid-JSON.
#[test]
fn pretty_printed_arguments_stay_inside_their_event() {
    let chat = data(
        json!({"id":"c","choices":[{"index":0,"delta":{"tool_calls":[{"index":0,"id":"call_1","function":{"name":"f","arguments":"{\n  \"city\":\r\n \"Paris\"\n}"}}]},"finish_reason":null}]}),
    );
    let gemini = SseEvent {
        event: String::new(),
        data: "{\"candidates\":[{\"content\":{\"parts\":[{\"functionCall\":{\"name\":\"f\",\"args\":{\n  \"city\": \"Paris\"\n}}}]}}]}".into(),
    };
    for (from, ev) in [(ApiFormat::OpenAiChat, chat), (ApiFormat::Gemini, gemini)] {
        let mut t = StreamTranslator::new(from, ApiFormat::Gemini, opts());
        let mut out = Vec::new();
        t.push(&ev, &mut out).unwrap();
        t.finish(&mut out);
        let events = events_of(&out);
        let decoded = decode_all(ApiFormat::Gemini, &events);
        let args: Vec<Value> = decoded
            .iter()
            .filter_map(|e| match e {
                StreamEvent::ToolCallDelta { fragment, .. } => serde_json::from_str(fragment).ok(),
                _ => None,
            })
            .collect();
        assert_eq!(args, [json!({"city": "Paris"})], "{from}");
    }
}
