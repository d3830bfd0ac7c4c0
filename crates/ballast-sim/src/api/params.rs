//! Per-model parameter rules the real APIs enforce, with the 400 each answers: newer Claude models
//! refuse `temperature` with `top_p`; OpenAI reasoning models refuse non-default sampling and, on
//! Chat Completions, `max_tokens`. Applied only when the simulator is strict
//! (`SimConfig::strict_params`, the default), after the request's fields were validated.

use serde_json::Value;

use super::Failure;

/// Anthropic Messages: Claude Opus 4.1, Sonnet 4.5, Haiku 4.5 and every later 4.x model refuse a
/// request that sets both `temperature` and `top_p` (whatever their values).
pub(crate) fn anthropic(json: &Value) -> Result<(), Failure> {
    if one_sampler_claude(model(json))
        && given(json, "temperature").is_some()
        && given(json, "top_p").is_some()
    {
        return Err(Failure::invalid(
            "`temperature` and `top_p` cannot both be specified for this model. Please use only one.",
        ));
    }
    Ok(())
}

/// OpenAI Chat Completions: a reasoning model refuses `max_tokens` (it takes
/// `max_completion_tokens`), and, unless its reasoning effort is `none`, a `temperature` or `top_p`
/// other than 1.
pub(crate) fn openai_chat(json: &Value) -> Result<(), Failure> {
    let Some(reasoning) = Reasoning::of(model(json)) else {
        return Ok(());
    };
    if given(json, "max_tokens").is_some() {
        return Err(Failure::Invalid {
            message: "Unsupported parameter: 'max_tokens' is not supported with this model. Use \
                      'max_completion_tokens' instead."
                .to_owned(),
            param: Some("max_tokens"),
            code: Some("unsupported_parameter"),
        });
    }
    if reasoning.samples_freely(json.get("reasoning_effort")) {
        return Ok(());
    }
    if let Some(value) = not_default(json, "temperature") {
        return Err(Failure::Invalid {
            message: format!(
                "Unsupported value: 'temperature' does not support {value} with this model. Only the \
                 default (1) value is supported."
            ),
            param: Some("temperature"),
            code: Some("unsupported_value"),
        });
    }
    if not_default(json, "top_p").is_some() {
        return Err(Failure::Invalid {
            message: "Unsupported parameter: 'top_p' is not supported with this model.".to_owned(),
            param: Some("top_p"),
            code: Some("unsupported_parameter"),
        });
    }
    Ok(())
}

/// OpenAI Responses: a reasoning model refuses a `temperature` or `top_p` other than 1 unless its
/// reasoning effort (`reasoning.effort`) is `none`.
pub(crate) fn openai_responses(json: &Value) -> Result<(), Failure> {
    let Some(reasoning) = Reasoning::of(model(json)) else {
        return Ok(());
    };
    if reasoning.samples_freely(json.get("reasoning").and_then(|r| r.get("effort"))) {
        return Ok(());
    }
    for param in ["temperature", "top_p"] {
        if not_default(json, param).is_some() {
            return Err(Failure::Invalid {
                message: format!(
                    "Unsupported parameter: '{param}' is not supported with this model."
                ),
                param: Some(param),
                code: None,
            });
        }
    }
    Ok(())
}

fn model(json: &Value) -> &str {
    json.get("model")
        .and_then(Value::as_str)
        .unwrap_or_default()
}

/// A field the request sets (`null` is not setting it).
fn given<'a>(json: &'a Value, field: &str) -> Option<&'a Value> {
    json.get(field).filter(|v| !v.is_null())
}

/// A numeric field set to something other than its default, 1, as the request wrote it (`0.2`,
/// `0`, `0.0`: the real message echoes the number as sent).
fn not_default(json: &Value, field: &str) -> Option<String> {
    match given(json, field)? {
        Value::Number(n) if n.as_f64() != Some(1.0) => Some(n.to_string()),
        _ => None,
    }
}

/// Claude models that take one sampler at most: `claude-{opus,sonnet,haiku}-4-N` with a minor
/// version N ≥ 1, with or without a date (`claude-sonnet-4-5-20250929`), and inside Bedrock or
/// Vertex ids (`anthropic.claude-haiku-4-5-20251001-v1:0`, `claude-opus-4-1@20250805`). Claude 4.0
/// (`claude-sonnet-4-20250514`) and Claude 3.x take both.
fn one_sampler_claude(model: &str) -> bool {
    let Some(at) = model.find("claude-") else {
        return false;
    };
    let rest = &model[at + "claude-".len()..];
    let Some((family, version)) = rest.split_once('-') else {
        return false;
    };
    if !matches!(family, "opus" | "sonnet" | "haiku") {
        return false;
    }
    let mut parts = version.split(['-', '.', '@', ':']);
    let (Some("4"), Some(minor)) = (parts.next(), parts.next()) else {
        return false;
    };
    // A one- or two-digit minor version, not a date.
    (1..=2).contains(&minor.len())
        && minor.bytes().all(|b| b.is_ascii_digit())
        && minor.parse::<u8>().is_ok_and(|m| m >= 1)
}

/// An OpenAI reasoning model: how its sampling parameters depend on its reasoning effort.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Reasoning {
    /// Effort `none` (GPT-5.1 and later) turns reasoning off, and sampling parameters are accepted.
    none_allowed: bool,
    /// The effort is `none` when the request leaves it out (GPT-5.1 and GPT-5.2).
    none_by_default: bool,
}

impl Reasoning {
    /// The reasoning models: `o1*`, `o3*`, `o4*` and `gpt-5*` except the chat models
    /// (`gpt-5-chat-latest`, `gpt-5.1-chat-latest` …).
    fn of(model: &str) -> Option<Reasoning> {
        if ["o1", "o3", "o4"].iter().any(|p| model.starts_with(p)) {
            return Some(Reasoning {
                none_allowed: false,
                none_by_default: false,
            });
        }
        let rest = model.strip_prefix("gpt-5")?;
        let (minor, tail) = match rest.strip_prefix('.') {
            Some(versioned) => {
                let digits = versioned.bytes().take_while(u8::is_ascii_digit).count();
                (
                    versioned[..digits].parse::<u32>().ok()?,
                    &versioned[digits..],
                )
            }
            None if rest.is_empty() || rest.starts_with('-') => (0, rest),
            // `gpt-50` …: not this family.
            None => return None,
        };
        if tail.starts_with("-chat") {
            return None;
        }
        Some(Reasoning {
            none_allowed: minor >= 1,
            none_by_default: matches!(minor, 1 | 2) && (tail.is_empty() || is_date_suffix(tail)),
        })
    }

    /// Whether sampling parameters are accepted at the request's reasoning effort.
    fn samples_freely(self, effort: Option<&Value>) -> bool {
        match effort.and_then(Value::as_str) {
            Some(effort) => self.none_allowed && effort == "none",
            None => self.none_by_default,
        }
    }
}

/// A snapshot suffix, `-YYYY-MM-DD`.
fn is_date_suffix(tail: &str) -> bool {
    let bytes = tail.as_bytes();
    bytes.len() == 11
        && bytes.iter().enumerate().all(|(i, b)| match i {
            0 | 5 | 8 => *b == b'-',
            _ => b.is_ascii_digit(),
        })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn claude_models_that_take_one_sampler() {
        for model in [
            "claude-opus-4-1",
            "claude-opus-4-1-20250805",
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5",
            "claude-opus-4-5-20251101",
            "claude-sonnet-4-6",
            "claude-opus-4-7",
            "claude-opus-4-1@20250805",
            "anthropic.claude-haiku-4-5-20251001-v1:0",
            "claude-sonnet-4.5",
        ] {
            assert!(one_sampler_claude(model), "{model}");
        }
        for model in [
            "claude-sonnet-4-20250514",
            "claude-opus-4-20250514",
            "claude-sonnet-4-0",
            "claude-opus-4",
            "claude-3-5-sonnet-20241022",
            "claude-3-7-sonnet-latest",
            "claude-3-5-haiku",
            "claude-sonnet-3-7",
            "gpt-4.1",
            "",
        ] {
            assert!(!one_sampler_claude(model), "{model}");
        }
    }

    #[test]
    fn openai_reasoning_models() {
        let always = Some(Reasoning {
            none_allowed: false,
            none_by_default: false,
        });
        let by_default = Some(Reasoning {
            none_allowed: true,
            none_by_default: true,
        });
        let when_asked = Some(Reasoning {
            none_allowed: true,
            none_by_default: false,
        });
        let cases = [
            ("gpt-5", always),
            ("gpt-5-mini", always),
            ("gpt-5-nano-2025-08-07", always),
            ("gpt-5-codex", always),
            ("o1", always),
            ("o1-mini", always),
            ("o3-pro", always),
            ("o4-mini-2025-04-16", always),
            ("gpt-5.1", by_default),
            ("gpt-5.2-2025-12-11", by_default),
            ("gpt-5.1-codex", when_asked),
            ("gpt-5.2-pro", when_asked),
            ("gpt-5.5", when_asked),
            ("gpt-5-chat-latest", None),
            ("gpt-5.1-chat-latest", None),
            ("gpt-4.1", None),
            ("gpt-4o-mini", None),
            ("gpt-50", None),
            ("omni-moderation-latest", None),
        ];
        for (model, expected) in cases {
            assert_eq!(Reasoning::of(model), expected, "{model}");
        }
    }

    #[test]
    fn reasoning_effort_none_frees_sampling() {
        let check = |body: Value, ok: bool| {
            assert_eq!(openai_chat(&body).is_ok(), ok, "{body}");
        };
        check(json!({"model": "gpt-5.1", "temperature": 0.2}), true);
        check(
            json!({"model": "gpt-5.1", "temperature": 0.2, "reasoning_effort": "low"}),
            false,
        );
        check(json!({"model": "gpt-5.5", "temperature": 0.2}), false);
        check(
            json!({"model": "gpt-5.5", "temperature": 0.2, "reasoning_effort": "none"}),
            true,
        );
        check(
            json!({"model": "gpt-5", "temperature": 0.2, "reasoning_effort": "none"}),
            false,
        );
        check(json!({"model": "o3", "top_p": 0.5}), false);
        check(json!({"model": "o3", "top_p": 1, "temperature": 1.0}), true);
        // `max_tokens` is refused whatever the effort.
        check(
            json!({"model": "gpt-5.1", "max_tokens": 5, "reasoning_effort": "none"}),
            false,
        );
    }

    #[test]
    fn values_are_echoed_as_sent() {
        assert_eq!(not_default(&json!({"t": 0.2}), "t").as_deref(), Some("0.2"));
        assert_eq!(not_default(&json!({"t": 0}), "t").as_deref(), Some("0"));
        assert_eq!(not_default(&json!({"t": 0.0}), "t").as_deref(), Some("0.0"));
        assert_eq!(not_default(&json!({"t": 1}), "t"), None);
        assert_eq!(not_default(&json!({"t": 1.0}), "t"), None);
        assert_eq!(not_default(&json!({"t": null}), "t"), None);
    }
}
