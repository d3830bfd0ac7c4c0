//! The same-format fast path over a request body: a single borrowing pass over the top-level JSON object
//! that finds `model` and `stream`, checks the fields the API requires, and re-serialises the body with
//! only the model replaced. Every other field — including ones newer than any spec we read — goes
//! through byte for byte, in order.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde_json::value::RawValue;

use crate::api::ApiFormat;

/// Why a request body was refused (always the client's fault: 400).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BodyError {
    pub message: String,
    /// The offending field, when there is one (OpenAI errors carry it as `param`).
    pub param: Option<String>,
}

impl fmt::Display for BodyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The top-level fields of a request body, borrowed from it.
pub struct Envelope<'a> {
    fields: Vec<(Cow<'a, str>, &'a RawValue)>,
    model: Option<Cow<'a, str>>,
    stream: bool,
}

impl<'a> Envelope<'a> {
    /// Parses `body` as the request of `format` and checks the fields that API requires.
    pub fn parse(format: ApiFormat, body: &'a [u8]) -> Result<Self, BodyError> {
        let fields: Fields<'a> = serde_json::from_slice(body).map_err(|e| BodyError {
            message: if e.is_data() {
                // The only data error possible here: the top level is not an object.
                "the request body must be a JSON object".to_owned()
            } else {
                format!("invalid JSON in request body: {e}")
            },
            param: None,
        })?;
        let fields = fields.0;
        let mut model = None;
        let mut stream = false;
        let has = |name: &str| fields.iter().any(|(k, _)| k == name);
        let (need_messages, need_max_tokens) = match format {
            ApiFormat::OpenAiChat => (true, false),
            ApiFormat::AnthropicMessages => (true, true),
            // Gemini carries the model in the URL and `contents` in the body; Responses has `input`.
            ApiFormat::Gemini | ApiFormat::OpenAiResponses => (false, false),
        };
        if format != ApiFormat::Gemini && !has("model") {
            return Err(missing("model"));
        }
        if need_messages && !has("messages") {
            return Err(missing("messages"));
        }
        if need_max_tokens && !has("max_tokens") {
            return Err(missing("max_tokens"));
        }
        if format == ApiFormat::Gemini && !has("contents") {
            return Err(missing("contents"));
        }
        if format == ApiFormat::OpenAiResponses && !has("input") {
            return Err(missing("input"));
        }
        for (k, v) in &fields {
            match k.as_ref() {
                "model" => {
                    let m: Cow<'a, str> = parse_field(v, "model", "a string")?;
                    if m.is_empty() {
                        return Err(BodyError {
                            message: "model: must not be empty".to_owned(),
                            param: Some("model".to_owned()),
                        });
                    }
                    model = Some(m);
                }
                "stream" => {
                    // `null` means absent, as in the SDKs.
                    let s: Option<bool> = parse_field(v, "stream", "a boolean")?;
                    stream = s.unwrap_or(false);
                }
                "messages" if need_messages && !v.get().trim_start().starts_with('[') => {
                    return Err(wrong_type("messages", "an array"));
                }
                "input"
                    if format == ApiFormat::OpenAiResponses
                        && !matches!(
                            v.get().trim_start().as_bytes().first(),
                            Some(b'[' | b'"')
                        ) =>
                {
                    return Err(wrong_type("input", "a string or an array of items"));
                }
                "max_tokens" if need_max_tokens => {
                    let _: u64 = parse_field(v, "max_tokens", "a positive integer")?;
                }
                _ => {}
            }
        }
        Ok(Self {
            fields,
            model,
            stream,
        })
    }

    /// The `model` field (absent only for Gemini, where the model is in the URL).
    pub fn model(&self) -> Option<&str> {
        self.model.as_deref()
    }

    pub fn stream(&self) -> bool {
        self.stream
    }

    /// Serialises the body with `model` replaced (or left out when `model` is `None`, as Gemini wants).
    pub fn write_with_model(&self, model: Option<&str>, out: &mut Vec<u8>) {
        // Key, value, quotes, colon and comma of every field, and the braces: no more than the
        // body the fields were borrowed from, plus the new model name.
        out.reserve(
            self.fields
                .iter()
                .map(|(k, v)| k.len().saturating_add(v.get().len()).saturating_add(4))
                .fold(2, usize::saturating_add),
        );
        out.push(b'{');
        let mut first = true;
        let mut comma = |out: &mut Vec<u8>| {
            if !std::mem::take(&mut first) {
                out.push(b',');
            }
        };
        let mut wrote_model = false;
        for (k, v) in &self.fields {
            if k == "model" {
                if let Some(m) = model {
                    comma(out);
                    out.extend_from_slice(b"\"model\":");
                    write_json_string(m, out);
                    wrote_model = true;
                }
                continue;
            }
            comma(out);
            write_json_string(k, out);
            out.push(b':');
            out.extend_from_slice(v.get().as_bytes());
        }
        if let (false, Some(m)) = (wrote_model, model) {
            comma(out);
            out.extend_from_slice(b"\"model\":");
            write_json_string(m, out);
        }
        out.push(b'}');
    }

    /// Bytes identifying the request for the response cache: every top-level field as sent, except
    /// those that only change how the answer is delivered (`stream`, `stream_options`).
    pub fn cache_identity(&self, out: &mut Vec<u8>) {
        for (k, v) in &self.fields {
            if k == "stream" || k == "stream_options" {
                continue;
            }
            // Length-prefixed, so no choice of keys and values can collide with another.
            for part in [k.as_bytes(), v.get().as_bytes()] {
                out.extend_from_slice(&(part.len() as u64).to_le_bytes());
                out.extend_from_slice(part);
            }
        }
    }

    /// For an OpenAI Responses request: the first field that needs state stored by OpenAI
    /// (`previous_response_id`, `conversation`, `background: true`), which a stateless gateway cannot
    /// honour on any target but OpenAI itself. `null` and `false` count as absent.
    pub fn responses_stateful_field(&self) -> Option<&'static str> {
        ["previous_response_id", "conversation", "background"]
            .into_iter()
            .find(|name| {
                self.field(name)
                    .is_some_and(|v| !matches!(v.trim(), "null" | "false"))
            })
    }

    /// The raw JSON text of a top-level field.
    pub fn field(&self, name: &str) -> Option<&'a str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.get())
    }
}

fn missing(field: &str) -> BodyError {
    BodyError {
        message: format!("{field}: this field is required"),
        param: Some(field.to_owned()),
    }
}

fn wrong_type(field: &str, expected: &str) -> BodyError {
    BodyError {
        message: format!("{field}: expected {expected}"),
        param: Some(field.to_owned()),
    }
}

fn parse_field<'a, T: serde::Deserialize<'a>>(
    v: &'a RawValue,
    field: &str,
    expected: &str,
) -> Result<T, BodyError> {
    serde_json::from_str(v.get()).map_err(|_| wrong_type(field, expected))
}

fn write_json_string(s: &str, out: &mut Vec<u8>) {
    // serde_json escapes exactly as JSON requires; writing to a Vec cannot fail.
    if serde_json::to_writer(&mut *out, s).is_err() {
        out.extend_from_slice(b"\"\"");
    }
}

/// The object's entries in order, keys borrowed when they contain no escapes.
struct Fields<'a>(Vec<(Cow<'a, str>, &'a RawValue)>);

impl<'de> serde::Deserialize<'de> for Fields<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Fields<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object")
            }
            fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
                // A hint is only a hint: never trusted to size more than a small allocation.
                let mut out = Vec::with_capacity(map.size_hint().unwrap_or(8).min(64));
                while let Some(Key(k)) = map.next_key()? {
                    let v: &'de RawValue = map.next_value()?;
                    out.push((k, v));
                }
                Ok(Fields(out))
            }
        }
        d.deserialize_map(V)
    }
}

struct Key<'a>(Cow<'a, str>);

impl<'de> serde::Deserialize<'de> for Key<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Borrowed(v)))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(Key(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use super::*;
    use serde_json::json;

    fn rewrite(format: ApiFormat, body: &str, model: Option<&str>) -> String {
        let env = Envelope::parse(format, body.as_bytes()).unwrap();
        let mut out = Vec::new();
        env.write_with_model(model, &mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn only_the_model_changes_and_unknown_fields_survive() {
        let body = r#"{"model":"chat","messages":[{"role":"user","content":"hi \"there\" ไทย"}],"stream":true,
            "some_future_field":{"nested":[1,2.50,null]},"stream_options":{"include_usage":true}}"#;
        let env = Envelope::parse(ApiFormat::OpenAiChat, body.as_bytes()).unwrap();
        assert_eq!(env.model(), Some("chat"));
        assert!(env.stream());
        let out = rewrite(ApiFormat::OpenAiChat, body, Some("gpt-4.1"));
        let mut want: serde_json::Value = serde_json::from_str(body).unwrap();
        want["model"] = json!("gpt-4.1");
        assert_eq!(
            serde_json::from_str::<serde_json::Value>(&out).unwrap(),
            want
        );
        // Raw numbers are kept as written (2.50 stays 2.50).
        assert!(out.contains("2.50"), "{out}");
        assert!(
            out.starts_with(r#"{"model":"gpt-4.1","#),
            "order kept: {out}"
        );
    }

    #[test]
    fn escaped_keys_and_model_names_are_handled() {
        let out = rewrite(
            ApiFormat::AnthropicMessages,
            r#"{"mod\u0065l":"x","messages":[],"max_tokens":5}"#,
            Some("we\"ird"),
        );
        assert_eq!(out, r#"{"model":"we\"ird","messages":[],"max_tokens":5}"#);
    }

    #[test]
    fn gemini_drops_or_adds_model() {
        assert_eq!(
            rewrite(ApiFormat::Gemini, r#"{"contents":[]}"#, None),
            r#"{"contents":[]}"#
        );
        assert_eq!(
            rewrite(ApiFormat::Gemini, r#"{"contents":[]}"#, Some("m")),
            r#"{"contents":[],"model":"m"}"#
        );
    }

    #[test]
    fn errors_say_where_and_what() {
        let check = |format, body: &str, want: &str, param: Option<&str>| {
            let err = Envelope::parse(format, body.as_bytes()).err().unwrap();
            assert!(
                err.message.contains(want),
                "{body}: got {:?}, want {want:?}",
                err.message
            );
            assert_eq!(err.param.as_deref(), param, "{body}");
        };
        use ApiFormat::*;
        check(
            OpenAiChat,
            "{\"model\": \"x\",\n \"messages\": [}",
            "invalid JSON in request body",
            None,
        );
        check(
            OpenAiChat,
            "{\"model\": \"x\",\n \"messages\": [}",
            "line 2 column",
            None,
        );
        check(OpenAiChat, "", "EOF while parsing", None);
        check(OpenAiChat, "[1]", "must be a JSON object", None);
        check(
            OpenAiChat,
            r#"{"messages":[]}"#,
            "model: this field is required",
            Some("model"),
        );
        check(
            OpenAiChat,
            r#"{"model":"x"}"#,
            "messages: this field is required",
            Some("messages"),
        );
        check(
            OpenAiChat,
            r#"{"model":7,"messages":[]}"#,
            "model: expected a string",
            Some("model"),
        );
        check(
            OpenAiChat,
            r#"{"model":"","messages":[]}"#,
            "must not be empty",
            Some("model"),
        );
        check(
            OpenAiChat,
            r#"{"model":"x","messages":{}}"#,
            "messages: expected an array",
            Some("messages"),
        );
        check(
            OpenAiChat,
            r#"{"model":"x","messages":[],"stream":"yes"}"#,
            "stream: expected a boolean",
            Some("stream"),
        );
        check(
            AnthropicMessages,
            r#"{"model":"x","messages":[]}"#,
            "max_tokens: this field is required",
            Some("max_tokens"),
        );
        check(
            AnthropicMessages,
            r#"{"model":"x","messages":[],"max_tokens":-1}"#,
            "max_tokens: expected a positive integer",
            Some("max_tokens"),
        );
        check(
            Gemini,
            r#"{}"#,
            "contents: this field is required",
            Some("contents"),
        );
        check(
            OpenAiResponses,
            r#"{"model":"x"}"#,
            "input: this field is required",
            Some("input"),
        );
        check(
            OpenAiResponses,
            r#"{"model":"x","input":{}}"#,
            "input: expected a string or an array",
            Some("input"),
        );
        check(
            OpenAiResponses,
            r#"{"input":"hi"}"#,
            "model: this field is required",
            Some("model"),
        );
    }

    #[test]
    fn responses_bodies_and_their_stateful_fields() {
        let env = Envelope::parse(
            ApiFormat::OpenAiResponses,
            br#"{"model":"m","input":"hi","stream":true,"store":false,"previous_response_id":null,"background":false}"#,
        )
        .unwrap();
        assert!(env.stream());
        assert_eq!(env.responses_stateful_field(), None);
        for (body, want) in [
            (
                r#"{"model":"m","input":[],"previous_response_id":"resp_1"}"#,
                "previous_response_id",
            ),
            (
                r#"{"model":"m","input":[],"conversation":{"id":"conv_1"}}"#,
                "conversation",
            ),
            (
                r#"{"model":"m","input":[],"background":true}"#,
                "background",
            ),
        ] {
            let env = Envelope::parse(ApiFormat::OpenAiResponses, body.as_bytes()).unwrap();
            assert_eq!(env.responses_stateful_field(), Some(want), "{body}");
        }
    }

    #[test]
    fn null_stream_is_not_streaming() {
        let env = Envelope::parse(
            ApiFormat::OpenAiChat,
            br#"{"model":"x","messages":[],"stream":null}"#,
        )
        .unwrap();
        assert!(!env.stream());
    }

    proptest::proptest! {
        #[test]
        fn rewriting_never_panics_and_keeps_valid_json(s in "\\PC{1,64}") {
            let body = serde_json::to_string(&json!({"model": s, "messages": [], "max_tokens": 1, "x": s})).unwrap();
            let env = Envelope::parse(ApiFormat::AnthropicMessages, body.as_bytes()).unwrap();
            let mut out = Vec::new();
            env.write_with_model(Some(&s), &mut out);
            let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
            proptest::prop_assert_eq!(v, serde_json::from_str::<serde_json::Value>(&body).unwrap());
        }

        #[test]
        fn arbitrary_bytes_never_panic(b in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let _ = Envelope::parse(ApiFormat::OpenAiChat, &b);
        }
    }
}
