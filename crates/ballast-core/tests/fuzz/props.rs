//! The properties. Every input is either arbitrary bytes or a near-valid body or stream (`wire`);
//! every property first of all requires that nothing panics.

use ballast_core::api::ApiFormat;
use ballast_core::client_error::{
    ClientError, ErrorKind, stream_error_event_after, upstream_error_message,
};
use ballast_core::envelope::Envelope;
use ballast_core::model::{StopReason, StreamEvent, Usage};
use ballast_core::observe::{StreamObserver, observe_body};
use ballast_core::sse::{MAX_EVENT_BYTES, SseEvent, SseParser};
use ballast_core::translate::{
    self, EncodeOptions, StreamDecoder, StreamEncoder, StreamLimits, StreamOptions,
    StreamTranslator, TranslateError,
};
use proptest::collection::vec;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use serde::de::IgnoredAny;

use crate::runner::run;
use crate::wire::{
    Bytes, FORMATS, arbitrary_bytes, body_case, chunks, format, splits, stream_case, text,
};

/// Output may be this many times the input, plus [`SLACK`]: per-event framing, ids and names,
/// repeated text (a Responses client gets every text three times more when its item closes, and
/// once more in `response.completed`), escaping (an invalid byte becomes a 3-byte replacement
/// character, a control character `\u00XX`). What it catches is output (and memory) that grows with
/// a number or a length the input only states.
const FACTOR: usize = 256;
const SLACK: usize = 64 << 10;

fn within_bound(output: usize, input: usize) -> bool {
    output <= input.saturating_mul(FACTOR).saturating_add(SLACK)
}

fn sse_events(bytes: &[u8], limit: usize, sizes: &[usize]) -> (Vec<SseEvent>, bool, u64) {
    let mut p = SseParser::with_limit(limit);
    let mut out = Vec::new();
    for c in chunks(bytes, sizes) {
        p.feed(c, |e| out.push(e));
    }
    let partial = p.finish();
    (out, partial, p.oversized_events())
}

/// A body: arbitrary bytes for any format, or a near-valid body of its format; whether it is exactly
/// a template.
fn body(which: fn(&crate::wire::BodyCase) -> Vec<u8>) -> BoxedStrategy<(ApiFormat, Bytes, bool)> {
    prop_oneof![
        1 => (format(), arbitrary_bytes()).prop_map(|(f, b)| (f, b, false)),
        3 => body_case().prop_map(move |c| (c.format, Bytes(which(&c)), c.pristine())),
    ]
    .boxed()
}

// ---------------------------------------------------------------------------------------------------
// The envelope (same-format fast path).

#[test]
fn envelope_reads_any_body() {
    run(
        "envelope_reads_any_body",
        body(crate::wire::BodyCase::request),
        |(format, body, pristine)| {
            let parsed = Envelope::parse(*format, &body.0);
            if *pristine {
                prop_assert!(parsed.is_ok(), "{:?}", parsed.err());
            }
            if let Ok(env) = parsed {
                let _ = (env.model(), env.stream(), env.responses_stateful_field());
                let mut out = Vec::new();
                env.write_with_model(Some("rewritten"), &mut out);
                prop_assert!(serde_json::from_slice::<IgnoredAny>(&out).is_ok());
                prop_assert!(out.len() <= body.0.len() + 64);
                out.clear();
                env.cache_identity(&mut out);
                prop_assert!(out.len() <= body.0.len().saturating_mul(3) + 64);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// The SSE parser.

/// Arbitrary bytes (and rendered streams, damaged or not) split anywhere give the same events as in
/// one piece, and no event is over the limit.
#[test]
fn sse_parser_splits_anywhere() {
    let input = prop_oneof![
        arbitrary_bytes(),
        stream_case().prop_map(|c| Bytes(c.render())),
    ];
    let limit = prop_oneof![3 => Just(MAX_EVENT_BYTES), 1 => 1usize..64];
    run(
        "sse_parser_splits_anywhere",
        (input, splits(), limit),
        |(bytes, sizes, limit)| {
            let whole = sse_events(&bytes.0, *limit, &[usize::MAX]);
            let split = sse_events(&bytes.0, *limit, sizes);
            prop_assert_eq!(&whole, &split);
            if bytes.0.len() <= 2048 {
                prop_assert_eq!(&whole, &sse_events(&bytes.0, *limit, &[1]));
            }
            for e in &whole.0 {
                prop_assert!(e.data.len() <= *limit && e.event.len() <= limit.saturating_mul(3));
            }
            Ok(())
        },
    );
}

/// What an SSE writer wrote, with any line endings and comments, split anywhere, is what the parser
/// reads back.
#[test]
fn sse_parser_reads_back_what_was_written() {
    let event = (
        prop_oneof![Just(String::new()), "[a-z_.]{1,24}", "[^\r\n]{0,8}"],
        vec("[^\r\n]{0,40}", 1..4),
    );
    run(
        "sse_parser_reads_back_what_was_written",
        (vec(event, 0..8), 0u8..4, any::<bool>(), splits()),
        |(events, endings, comments, sizes)| {
            let mut bytes = Vec::new();
            let mut want = Vec::new();
            for (k, (name, data)) in events.iter().enumerate() {
                // Mixed endings change per event (a `\r` then an empty line ended by `\n` would
                // be one `\r\n`).
                let ending: &[u8] = match (endings, k % 3) {
                    (0, _) | (3, 0) => b"\n",
                    (1, _) | (3, 1) => b"\r\n",
                    _ => b"\r",
                };
                let line = |bytes: &mut Vec<u8>, text: &str| {
                    bytes.extend_from_slice(text.as_bytes());
                    bytes.extend_from_slice(ending);
                };
                if *comments {
                    line(&mut bytes, ":comment");
                }
                if !name.is_empty() {
                    line(&mut bytes, &format!("event: {name}"));
                }
                for d in data {
                    line(&mut bytes, &format!("data: {d}"));
                }
                line(&mut bytes, "");
                want.push(SseEvent {
                    event: name.clone(),
                    data: data.join("\n"),
                });
            }
            let (got, partial, _) = sse_events(&bytes, MAX_EVENT_BYTES, sizes);
            prop_assert_eq!(&got, &want);
            prop_assert!(!partial);
            if bytes.len() <= 2048 {
                prop_assert_eq!(sse_events(&bytes, MAX_EVENT_BYTES, &[1]).0, want);
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Requests.

fn encode_opts() -> EncodeOptions<'static> {
    EncodeOptions {
        upstream_model: "upstream",
        default_max_tokens: 1024,
        rules: ballast_core::capability::ModelRules {
            token_limit: ballast_core::capability::TokenLimit::MaxCompletionTokens,
            ..ballast_core::capability::ModelRules::PERMISSIVE
        },
    }
}

/// Any body: a decoded request encodes for every target (or is refused by it) within the output
/// bound, as valid JSON with header-safe warnings; a template's encoding is read back by the
/// target's own decoder.
#[test]
fn requests_decode_and_encode() {
    run(
        "requests_decode_and_encode",
        body(crate::wire::BodyCase::request),
        |(format, body, pristine)| {
            let decoded = translate::decode_request(*format, &body.0);
            if *pristine {
                prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
            }
            let req = match decoded {
                Ok(req) => req,
                Err(TranslateError::Invalid { message, .. }) => {
                    prop_assert!(!message.is_empty());
                    return Ok(());
                }
                Err(_) => return Ok(()),
            };
            for to in FORMATS {
                let Ok(enc) = translate::encode_request(to, &req, &encode_opts()) else {
                    continue;
                };
                prop_assert!(within_bound(enc.body.len(), body.0.len()));
                prop_assert!(serde_json::from_slice::<IgnoredAny>(&enc.body).is_ok());
                for w in &enc.warnings {
                    prop_assert!(w.bytes().all(|b| (0x20..0x7f).contains(&b)), "{w:?}");
                }
                // Read back by the target's decoder. A damaged request may carry what a target
                // refuses (an empty call id): only the templates must come back whole.
                let back = translate::decode_request(to, &enc.body);
                if *pristine {
                    prop_assert!(back.is_ok(), "{format} → {to}: {:?}", back.err());
                }
            }
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Complete answers.

/// Any answer: a decoded one renders in every client format within the bound, and that rendering
/// decodes and observes cleanly.
#[test]
fn answers_decode_and_encode() {
    run(
        "answers_decode_and_encode",
        body(crate::wire::BodyCase::response),
        |(format, body, pristine)| {
            let decoded = translate::decode_response(*format, &body.0);
            let _ = observe_body(*format, &body.0);
            if *pristine {
                prop_assert!(decoded.is_ok(), "{:?}", decoded.err());
            }
            let Ok(resp) = decoded else {
                return Ok(());
            };
            for to in FORMATS {
                let out = translate::encode_response(to, &resp, "client-model");
                prop_assert!(within_bound(out.len(), body.0.len()));
                let back = translate::decode_response(to, &out);
                prop_assert!(back.is_ok(), "{format} → {to}: {:?}", back.err());
                let obs = observe_body(to, &out);
                prop_assert!(obs.done && obs.malformed_events == 0);
            }
            Ok(())
        },
    );
}

/// Whole bodies (answers, errors, anything) through the observer and the error-message reader.
#[test]
fn bodies_observe_and_errors_read() {
    let input = prop_oneof![
        body(crate::wire::BodyCase::response),
        body(crate::wire::BodyCase::error),
    ];
    run(
        "bodies_observe_and_errors_read",
        input,
        |(format, body, pristine)| {
            let obs = observe_body(*format, &body.0);
            prop_assert!(obs.done != (obs.malformed_events == 1));
            if let Some(m) = upstream_error_message(&body.0) {
                // The message is the body's own (unescaped, or lossily re-encoded) text.
                prop_assert!(!m.is_empty() && m.len() <= body.0.len() * 3);
            }
            let _ = pristine;
            Ok(())
        },
    );
}

// ---------------------------------------------------------------------------------------------------
// Streams.

fn small_limits() -> StreamLimits {
    StreamLimits {
        max_tool_args_bytes: 256,
        max_tool_calls: 3,
        max_parts: 6,
        max_answer_bytes: 4096,
        max_event_bytes: 4096,
    }
}

/// Provider bytes through a parser and a translator, as the gateway does; returns the client bytes
/// and the push errors.
fn translate_stream(
    from: ApiFormat,
    to: ApiFormat,
    input: &[u8],
    sizes: &[usize],
    limits: StreamLimits,
) -> (Vec<u8>, Vec<TranslateError>) {
    let mut parser = limits.sse_parser();
    let encoder = StreamEncoder::new(
        to,
        StreamOptions {
            model: "client-model".into(),
            include_usage: true,
        },
    )
    .with_created(1);
    let mut t = StreamTranslator::with_encoder(from, encoder).with_limits(limits);
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for c in chunks(input, sizes) {
        parser.feed(c, |ev| {
            if let Err(e) = t.push(&ev, &mut out) {
                errors.push(e);
            }
        });
    }
    parser.finish();
    t.finish(&mut out);
    (out, errors)
}

/// The client's bytes are a well-formed stream of `to`: whole events of JSON (or `[DONE]`) that the
/// format's own decoder reads without error.
fn check_client_stream(to: ApiFormat, out: &[u8]) -> Result<(), TestCaseError> {
    let mut p = SseParser::new();
    let mut events = Vec::new();
    p.feed(out, |e| events.push(e));
    prop_assert!(!p.finish(), "the client stream ends inside an event");
    prop_assert_eq!(p.oversized_events(), 0);
    let mut d = StreamDecoder::new(to);
    let mut canonical = Vec::new();
    for ev in &events {
        if !(to == ApiFormat::OpenAiChat && ev.data == "[DONE]") {
            prop_assert!(
                serde_json::from_str::<IgnoredAny>(&ev.data).is_ok(),
                "not JSON: {:?}",
                ev.data
            );
        }
        let res = d.push(ev, &mut canonical);
        prop_assert!(res.is_ok(), "{to} decoder: {:?} on {:?}", res.err(), ev);
    }
    Ok(())
}

/// Arbitrary bytes from a provider of any format, to a client of any format.
#[test]
fn streams_of_any_bytes_translate() {
    run(
        "streams_of_any_bytes_translate",
        (
            format(),
            format(),
            arbitrary_bytes(),
            splits(),
            any::<bool>(),
        ),
        |(from, to, bytes, sizes, small)| {
            let limits = if *small {
                small_limits()
            } else {
                StreamLimits::default()
            };
            let (out, _) = translate_stream(*from, *to, &bytes.0, sizes, limits);
            prop_assert!(within_bound(out.len(), bytes.0.len()));
            check_client_stream(*to, &out)
        },
    );
}

/// Near-valid provider streams (hostile numbers, huge and broken strings, deep nesting, wrong types,
/// invalid UTF-8, any line endings, split anywhere), to a client of any format.
#[test]
fn near_valid_streams_translate() {
    run(
        "near_valid_streams_translate",
        (
            stream_case(),
            format(),
            splits(),
            prop_oneof![3 => Just(false), 1 => Just(true)],
        ),
        |(case, to, sizes, small)| {
            let bytes = case.render();
            let limits = if *small {
                small_limits()
            } else {
                StreamLimits::default()
            };
            // Splitting changes nothing the translator sees.
            let whole = sse_events(&bytes, limits.max_event_bytes, &[usize::MAX]);
            prop_assert_eq!(&whole, &sse_events(&bytes, limits.max_event_bytes, sizes));
            if bytes.len() <= 2048 {
                prop_assert_eq!(&whole, &sse_events(&bytes, limits.max_event_bytes, &[1]));
            }
            let (out, errors) = translate_stream(case.format, *to, &bytes, sizes, limits);
            prop_assert!(
                within_bound(out.len(), bytes.len()),
                "{} bytes out of {}",
                out.len(),
                bytes.len()
            );
            if case.pristine() && !*small {
                prop_assert!(errors.is_empty(), "{errors:?}");
            }
            for e in &errors {
                prop_assert!(!e.to_string().is_empty());
            }
            check_client_stream(*to, &out)
        },
    );
}

/// Canonical events as a hostile provider's decoder could produce them (any index, huge ids, any
/// order) straight into every encoder: bounded, well-formed client streams.
#[test]
fn encoders_take_any_canonical_events() {
    let index = prop_oneof![4 => 0usize..4, 1 => any::<usize>(), 1 => Just(usize::MAX)];
    let figure = prop_oneof![Just(None), Just(Some(u64::MAX)), any::<Option<u64>>()];
    let event = prop_oneof![
        1 => text().prop_map(|id| StreamEvent::Start {
            id,
            model: "m".into()
        }),
        4 => (index.clone(), text()).prop_map(|(index, text)| StreamEvent::TextDelta { index, text }),
        2 => (index.clone(), text(), text())
            .prop_map(|(index, id, name)| StreamEvent::ToolCallStart { index, id, name }),
        3 => (index, text()).prop_map(|(index, fragment)| StreamEvent::ToolCallDelta { index, fragment }),
        1 => (figure.clone(), figure.clone(), figure.clone(), figure.clone(), figure).prop_map(
            |(i, o, r, w, t)| StreamEvent::Usage(Usage {
                input_tokens: i,
                output_tokens: o,
                cache_read_tokens: r,
                cache_write_tokens: w,
                reasoning_tokens: t,
            })
        ),
        1 => select(vec![
            StopReason::EndTurn,
            StopReason::MaxTokens,
            StopReason::ToolUse,
            StopReason::ContentFilter,
            StopReason::StopSequence(Some("x".into())),
            StopReason::Other("pause_turn".into()),
        ])
        .prop_map(StreamEvent::Stop),
        1 => (select(vec!["overloaded_error", "rate_limit", "", "INVALID_ARGUMENT"]), text())
            .prop_map(|(kind, message)| StreamEvent::Error {
                kind: kind.into(),
                message
            }),
        1 => Just(StreamEvent::Done),
    ];
    run(
        "encoders_take_any_canonical_events",
        (format(), vec(event, 0..32), any::<bool>()),
        |(to, events, small)| {
            let limits = if *small {
                small_limits()
            } else {
                StreamLimits::default()
            };
            let mut enc = StreamEncoder::new(
                *to,
                StreamOptions {
                    model: "client-model".into(),
                    include_usage: true,
                },
            )
            .with_limits(limits);
            let mut out = Vec::new();
            let mut size = 0usize;
            for e in events {
                size += 16
                    + match e {
                        StreamEvent::Start { id, .. } => id.len(),
                        StreamEvent::TextDelta { text, .. } => text.len(),
                        StreamEvent::ToolCallStart { id, name, .. } => id.len() + name.len(),
                        StreamEvent::ToolCallDelta { fragment, .. } => fragment.len(),
                        StreamEvent::Error { message, .. } => message.len(),
                        _ => 0,
                    };
                let _ = enc.try_push(e, &mut out);
            }
            enc.finish(&mut out);
            prop_assert!(
                within_bound(out.len(), size),
                "{} bytes out of {size}",
                out.len()
            );
            check_client_stream(*to, &out)
        },
    );
}

/// The observer of a passed-through stream: the same observation however the bytes are split, the
/// first token reported once.
#[test]
fn observers_see_the_same_whatever_the_split() {
    let input = prop_oneof![
        (format(), arbitrary_bytes()),
        stream_case().prop_map(|c| (c.format, Bytes(c.render()))),
    ];
    run(
        "observers_see_the_same_whatever_the_split",
        (input, splits()),
        |((format, bytes), sizes)| {
            let observe = |sizes: &[usize]| {
                let mut o = StreamObserver::new(*format);
                let mut firsts = 0;
                for c in chunks(&bytes.0, sizes) {
                    firsts += usize::from(o.feed(c));
                }
                let cut = o.finish();
                (o.observation().clone(), cut, firsts)
            };
            let whole = observe(&[usize::MAX]);
            prop_assert!(whole.2 <= 1);
            prop_assert_eq!(&whole, &observe(sizes));
            Ok(())
        },
    );
}

/// The error events the gateway appends to a stream, for any sequence number and message.
#[test]
fn stream_error_events_for_any_sequence_number() {
    run(
        "stream_error_events_for_any_sequence_number",
        (
            format(),
            prop_oneof![Just(None), Just(Some(u64::MAX)), any::<Option<u64>>()],
            text(),
            any::<u16>(),
        ),
        |(format, last, message, status)| {
            let e = ClientError::new(ErrorKind::from_status(*status), message.clone());
            let bytes = stream_error_event_after(*format, &e, *last);
            prop_assert!(within_bound(bytes.len(), message.len()));
            let mut p = SseParser::new();
            let mut events = Vec::new();
            p.feed(&bytes, |ev| events.push(ev));
            prop_assert!(!p.finish());
            prop_assert!(!events.is_empty());
            let mut d = StreamDecoder::new(*format);
            let mut canonical = Vec::new();
            for ev in &events {
                prop_assert!(d.push(ev, &mut canonical).is_ok());
            }
            prop_assert!(
                canonical
                    .iter()
                    .any(|c| matches!(c, StreamEvent::Error { .. })),
                "{canonical:?}"
            );
            Ok(())
        },
    );
}
