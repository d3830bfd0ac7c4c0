//! Provider kinds: what each upstream API expects — its wire format, default base URL, endpoint paths
//! and how it is authenticated. Pure data; the server turns it into prepared requests once at start.

use std::fmt;

use crate::api::ApiFormat;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProviderKind {
    /// Anthropic Messages API. `base_url` is the host root (`https://api.anthropic.com`).
    Anthropic,
    /// OpenAI Chat Completions. `base_url` includes the version path (`https://api.openai.com/v1`).
    OpenAi,
    /// A server speaking OpenAI Chat Completions (Ollama, vLLM, llama.cpp, Groq, Together, OpenRouter).
    /// `base_url` is required and includes the version path (`http://localhost:11434/v1`).
    OpenAiCompatible,
    /// Google Gemini API. `base_url` is the host root (`https://generativelanguage.googleapis.com`).
    Gemini,
}

/// How the provider's key is sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AuthStyle {
    /// `x-api-key: KEY` (Anthropic).
    XApiKey,
    /// `Authorization: Bearer KEY` (OpenAI and compatibles).
    Bearer,
    /// `x-goog-api-key: KEY` (Gemini).
    GoogApiKey,
}

impl ProviderKind {
    pub const ALL: [ProviderKind; 4] = [
        ProviderKind::Anthropic,
        ProviderKind::OpenAi,
        ProviderKind::OpenAiCompatible,
        ProviderKind::Gemini,
    ];

    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub const fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Anthropic => "anthropic",
            ProviderKind::OpenAi => "openai",
            ProviderKind::OpenAiCompatible => "openai-compatible",
            ProviderKind::Gemini => "gemini",
        }
    }

    pub const fn format(self) -> ApiFormat {
        match self {
            ProviderKind::Anthropic => ApiFormat::AnthropicMessages,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => ApiFormat::OpenAiChat,
            ProviderKind::Gemini => ApiFormat::Gemini,
        }
    }

    pub const fn default_base_url(self) -> Option<&'static str> {
        match self {
            ProviderKind::Anthropic => Some("https://api.anthropic.com"),
            ProviderKind::OpenAi => Some("https://api.openai.com/v1"),
            ProviderKind::OpenAiCompatible => None,
            ProviderKind::Gemini => Some("https://generativelanguage.googleapis.com"),
        }
    }

    /// Whether a provider of this kind is unusable without a key.
    pub const fn requires_key(self) -> bool {
        !matches!(self, ProviderKind::OpenAiCompatible)
    }

    pub const fn auth_style(self) -> AuthStyle {
        match self {
            ProviderKind::Anthropic => AuthStyle::XApiKey,
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => AuthStyle::Bearer,
            ProviderKind::Gemini => AuthStyle::GoogApiKey,
        }
    }

    /// Whether a provider of this kind can be configured to speak `format` upstream: its own format,
    /// and for `openai` also the Responses API.
    pub const fn speaks(self, format: ApiFormat) -> bool {
        matches!(
            (self, format),
            (ProviderKind::Anthropic, ApiFormat::AnthropicMessages)
                | (
                    ProviderKind::OpenAi,
                    ApiFormat::OpenAiChat | ApiFormat::OpenAiResponses
                )
                | (ProviderKind::OpenAiCompatible, ApiFormat::OpenAiChat)
                | (ProviderKind::Gemini, ApiFormat::Gemini)
        )
    }

    /// The full endpoint URL for a chat call to `model` in this kind's default format, given a base
    /// URL without trailing slash.
    pub fn endpoint(self, base_url: &str, model: &str, stream: bool) -> String {
        endpoint_for(self.format(), base_url, model, stream)
    }
}

/// The full endpoint URL for a call in `format` to `model`, given a base URL without trailing slash
/// (host root for Anthropic and Gemini; including the version path, e.g. `https://api.openai.com/v1`,
/// for the OpenAI formats).
pub fn endpoint_for(format: ApiFormat, base_url: &str, model: &str, stream: bool) -> String {
    match format {
        ApiFormat::AnthropicMessages => format!("{base_url}/v1/messages"),
        ApiFormat::OpenAiChat => format!("{base_url}/chat/completions"),
        ApiFormat::OpenAiResponses => format!("{base_url}/responses"),
        ApiFormat::Gemini if stream => {
            format!("{base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse")
        }
        ApiFormat::Gemini => format!("{base_url}/v1beta/models/{model}:generateContent"),
    }
}

impl fmt::Display for ProviderKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_follow_each_api() {
        let check = |k: ProviderKind, stream, want: &str| {
            let base = k.default_base_url().unwrap_or("http://localhost:11434/v1");
            assert_eq!(k.endpoint(base, "m-1", stream), want);
        };
        check(
            ProviderKind::Anthropic,
            true,
            "https://api.anthropic.com/v1/messages",
        );
        check(
            ProviderKind::OpenAi,
            false,
            "https://api.openai.com/v1/chat/completions",
        );
        check(
            ProviderKind::OpenAiCompatible,
            true,
            "http://localhost:11434/v1/chat/completions",
        );
        check(
            ProviderKind::Gemini,
            false,
            "https://generativelanguage.googleapis.com/v1beta/models/m-1:generateContent",
        );
        check(
            ProviderKind::Gemini,
            true,
            "https://generativelanguage.googleapis.com/v1beta/models/m-1:streamGenerateContent?alt=sse",
        );
    }

    #[test]
    fn openai_speaks_responses_at_its_own_path() {
        assert_eq!(
            endpoint_for(
                ApiFormat::OpenAiResponses,
                "https://api.openai.com/v1",
                "gpt-5",
                true
            ),
            "https://api.openai.com/v1/responses"
        );
        assert!(ProviderKind::OpenAi.speaks(ApiFormat::OpenAiResponses));
        assert!(!ProviderKind::OpenAiCompatible.speaks(ApiFormat::OpenAiResponses));
        assert!(!ProviderKind::Anthropic.speaks(ApiFormat::OpenAiChat));
        for k in ProviderKind::ALL {
            assert!(k.speaks(k.format()), "{k}");
        }
    }

    #[test]
    fn kinds_round_trip_by_name() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("opneai"), None);
    }
}
