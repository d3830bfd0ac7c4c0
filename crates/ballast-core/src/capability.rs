//! What each target model accepts, as data: per provider kind and model family, which sampling
//! parameters it takes and which exclude each other, what its token limit is called, and whether it
//! honours an assistant prefill, a system prompt, parallel tool calls, images and structured output.
//!
//! Translation consults these rules for the target model, so a request translated from another
//! client format is never forwarded into a certain 400: a parameter the model refuses is dropped or
//! mapped (and named in `x-ballast-warning`), and a request it cannot serve at all makes the target
//! ineligible. Same-format traffic is not touched: the client spoke the target's own API.
//! Every rule can be overridden per target in the configuration (`capabilities = { … }`).

use crate::provider::ProviderKind;

/// How a model treats the sampling parameters `temperature` and `top_p`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Sampling {
    /// Both, together or apart.
    Any,
    /// At most one of them (Claude 4.5-generation models refuse both: 400).
    TemperatureOrTopP,
    /// Only their default values (OpenAI reasoning models: gpt-5, the o-series).
    DefaultOnly,
}

/// The name of the output-token limit in an OpenAI Chat Completions request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenLimit {
    /// `max_tokens`: what OpenAI-compatible servers (vLLM, Ollama, llama.cpp) read.
    MaxTokens,
    /// `max_completion_tokens`: OpenAI's current name, the only one its reasoning models accept.
    MaxCompletionTokens,
}

/// What one target model accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelRules {
    pub sampling: Sampling,
    /// `top_k` has a meaning for the model.
    pub top_k: bool,
    pub token_limit: TokenLimit,
    /// A conversation ending with an assistant turn is continued from that text.
    pub prefill: bool,
    pub system_prompt: bool,
    /// `tool_choice` may force a call (`required`/`any`, or a named tool).
    pub forced_tool_choice: bool,
    pub parallel_tool_calls: bool,
    pub images: bool,
    pub structured_output: bool,
}

impl ModelRules {
    /// Accepts everything (the rules of an unknown model of a permissive kind).
    pub const PERMISSIVE: ModelRules = ModelRules {
        sampling: Sampling::Any,
        top_k: true,
        token_limit: TokenLimit::MaxTokens,
        prefill: true,
        system_prompt: true,
        forced_tool_choice: true,
        parallel_tool_calls: true,
        images: true,
        structured_output: true,
    };

    /// The rules of `model` served by a provider of `kind`, from its family. A model the table
    /// does not know gets its kind's general rules.
    pub fn of(kind: ProviderKind, model: &str) -> ModelRules {
        let m = model.to_ascii_lowercase();
        // Vendor prefixes (`anthropic/`, `models/`, Bedrock-style `us.anthropic.`) say nothing of
        // the family.
        let m = m.rsplit('/').next().unwrap_or(&m);
        let m = m.split_once("anthropic.").map_or(m, |(_, rest)| rest);
        // Vertex AI names a version after `@` (`claude-opus-4-1@20250805`).
        let m = m.split('@').next().unwrap_or(m);
        match kind {
            ProviderKind::Anthropic => ModelRules {
                sampling: if claude_exclusive_sampling(m) {
                    Sampling::TemperatureOrTopP
                } else {
                    Sampling::Any
                },
                top_k: true,
                token_limit: TokenLimit::MaxTokens,
                prefill: !claude_refuses_prefill(m),
                system_prompt: true,
                forced_tool_choice: true,
                parallel_tool_calls: true,
                images: true,
                structured_output: true,
            },
            ProviderKind::OpenAi => {
                let reasoning = openai_reasoning(m);
                ModelRules {
                    sampling: if reasoning {
                        Sampling::DefaultOnly
                    } else {
                        Sampling::Any
                    },
                    top_k: false,
                    token_limit: TokenLimit::MaxCompletionTokens,
                    prefill: false,
                    system_prompt: true,
                    forced_tool_choice: true,
                    parallel_tool_calls: !m.starts_with("o1"),
                    images: !m.starts_with("o1-mini") && !m.starts_with("o3-mini"),
                    structured_output: true,
                }
            }
            ProviderKind::OpenAiCompatible => ModelRules {
                // Servers differ; vLLM and llama.cpp take `top_k`, others ignore unknown fields.
                top_k: true,
                prefill: false,
                ..ModelRules::PERMISSIVE
            },
            // A conversation ending with a model turn is answered, not continued.
            ProviderKind::Gemini => ModelRules {
                token_limit: TokenLimit::MaxTokens,
                prefill: false,
                ..ModelRules::PERMISSIVE
            },
        }
    }
}

/// Claude models that refuse `temperature` with `top_p`: the 4.5 generation and later (Sonnet 4.5,
/// Haiku 4.5, Opus 4.1, Opus 4.5, and any 4.x after .5 or a 5+ generation).
fn claude_exclusive_sampling(m: &str) -> bool {
    match claude_version(m) {
        None | Some((_, 0..=3, _)) => false,
        Some((family, 4, minor)) => minor >= 5 || (family == "opus" && minor >= 1),
        Some(_) => true,
    }
}

/// Claude models that refuse an assistant prefill ("This model does not support assistant message
/// prefill"): the 4.6 generation and later.
fn claude_refuses_prefill(m: &str) -> bool {
    match claude_version(m) {
        None | Some((_, 0..=3, _)) => false,
        Some((_, 4, minor)) => minor >= 6,
        Some(_) => true,
    }
}

/// `claude-sonnet-4-5-20250929` → ("sonnet", 4, 5); `claude-opus-4-1` → ("opus", 4, 1). Older names
/// put the generation first (`claude-3-5-sonnet`): `None`.
fn claude_version(m: &str) -> Option<(&str, u32, u32)> {
    let rest = m.strip_prefix("claude-")?;
    let mut parts = rest.split('-');
    let family = parts.next()?;
    if !matches!(family, "sonnet" | "opus" | "haiku") {
        return None;
    }
    let major: u32 = parts.next().and_then(|p| p.parse().ok()).unwrap_or(0);
    // A minor is one or two digits; an 8-digit date is not a minor.
    let minor: u32 = parts
        .next()
        .filter(|p| p.len() <= 2)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    Some((family, major, minor))
}

/// OpenAI reasoning models: gpt-5 (not its `-chat` variant) and the o-series.
fn openai_reasoning(m: &str) -> bool {
    if let Some(rest) = m.strip_prefix("gpt-") {
        let major: u32 = rest
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0);
        return major >= 5 && !rest.contains("-chat");
    }
    let b = m.as_bytes();
    b.first() == Some(&b'o') && b.get(1).is_some_and(u8::is_ascii_digit)
}

/// Per-target overrides of the table, from the configuration; unset fields keep the table's value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RulesOverride {
    pub sampling: Option<Sampling>,
    pub top_k: Option<bool>,
    pub token_limit: Option<TokenLimit>,
    pub prefill: Option<bool>,
    pub system_prompt: Option<bool>,
    pub forced_tool_choice: Option<bool>,
    pub parallel_tool_calls: Option<bool>,
    pub images: Option<bool>,
    pub structured_output: Option<bool>,
}

impl RulesOverride {
    pub fn apply(&self, r: ModelRules) -> ModelRules {
        ModelRules {
            sampling: self.sampling.unwrap_or(r.sampling),
            top_k: self.top_k.unwrap_or(r.top_k),
            token_limit: self.token_limit.unwrap_or(r.token_limit),
            prefill: self.prefill.unwrap_or(r.prefill),
            system_prompt: self.system_prompt.unwrap_or(r.system_prompt),
            forced_tool_choice: self.forced_tool_choice.unwrap_or(r.forced_tool_choice),
            parallel_tool_calls: self.parallel_tool_calls.unwrap_or(r.parallel_tool_calls),
            images: self.images.unwrap_or(r.images),
            structured_output: self.structured_output.unwrap_or(r.structured_output),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claude_four_five_and_later_take_temperature_or_top_p_not_both() {
        for m in [
            "claude-sonnet-4-5",
            "claude-sonnet-4-5-20250929",
            "claude-haiku-4-5",
            "claude-opus-4-1",
            "claude-opus-4-5",
            "claude-sonnet-4-6",
            "claude-opus-5",
            "anthropic/claude-sonnet-4-5",
            "us.anthropic.claude-sonnet-4-5-20250929-v1:0",
            "claude-opus-4-1@20250805",
        ] {
            assert_eq!(
                ModelRules::of(ProviderKind::Anthropic, m).sampling,
                Sampling::TemperatureOrTopP,
                "{m}"
            );
        }
        for m in [
            "claude-sonnet-4-20250514",
            "claude-opus-4-20250514",
            "claude-3-5-sonnet-20241022",
            "claude-3-7-sonnet-latest",
            "claude-haiku-3-5",
            "some-local-model",
        ] {
            assert_eq!(
                ModelRules::of(ProviderKind::Anthropic, m).sampling,
                Sampling::Any,
                "{m}"
            );
        }
    }

    #[test]
    fn claude_four_six_and_later_refuse_a_prefill() {
        for (m, prefill) in [
            ("claude-opus-4-6", false),
            ("claude-sonnet-4-6-20260217", false),
            ("us.anthropic.claude-opus-4-6-v1:0", false),
            ("claude-opus-5", false),
            ("claude-sonnet-4-5-20250929", true),
            ("claude-opus-4-1", true),
            ("claude-3-7-sonnet-latest", true),
        ] {
            assert_eq!(
                ModelRules::of(ProviderKind::Anthropic, m).prefill,
                prefill,
                "{m}"
            );
        }
        // Nor do Gemini or OpenAI models continue a trailing assistant turn.
        assert!(!ModelRules::of(ProviderKind::Gemini, "gemini-2.5-pro").prefill);
        assert!(!ModelRules::of(ProviderKind::OpenAi, "gpt-4.1").prefill);
    }

    #[test]
    fn openai_reasoning_models_take_only_default_sampling() {
        for m in [
            "gpt-5",
            "gpt-5-mini",
            "gpt-5.1",
            "o1",
            "o3-mini",
            "o4-mini",
            "gpt-6",
        ] {
            let r = ModelRules::of(ProviderKind::OpenAi, m);
            assert_eq!(r.sampling, Sampling::DefaultOnly, "{m}");
            assert_eq!(r.token_limit, TokenLimit::MaxCompletionTokens);
        }
        for m in [
            "gpt-4.1",
            "gpt-4o-mini",
            "gpt-5-chat-latest",
            "omni-moderation",
        ] {
            assert_eq!(
                ModelRules::of(ProviderKind::OpenAi, m).sampling,
                Sampling::Any,
                "{m}"
            );
        }
        assert!(!ModelRules::of(ProviderKind::OpenAi, "gpt-4.1").top_k);
    }

    #[test]
    fn compatible_servers_read_max_tokens_and_overrides_win() {
        let r = ModelRules::of(ProviderKind::OpenAiCompatible, "llama3.1:8b");
        assert_eq!(r.token_limit, TokenLimit::MaxTokens);
        let o = RulesOverride {
            sampling: Some(Sampling::DefaultOnly),
            token_limit: Some(TokenLimit::MaxCompletionTokens),
            ..RulesOverride::default()
        };
        let r = o.apply(r);
        assert_eq!(r.sampling, Sampling::DefaultOnly);
        assert_eq!(r.token_limit, TokenLimit::MaxCompletionTokens);
        assert!(r.top_k, "unset fields keep the table's value");
    }
}
