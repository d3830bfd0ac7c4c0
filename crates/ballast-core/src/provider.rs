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

    /// The full endpoint URL for a chat call to `model`, given a base URL without trailing slash.
    pub fn endpoint(self, base_url: &str, model: &str, stream: bool) -> String {
        match self {
            ProviderKind::Anthropic => format!("{base_url}/v1/messages"),
            ProviderKind::OpenAi | ProviderKind::OpenAiCompatible => {
                format!("{base_url}/chat/completions")
            }
            ProviderKind::Gemini if stream => {
                format!("{base_url}/v1beta/models/{model}:streamGenerateContent?alt=sse")
            }
            ProviderKind::Gemini => format!("{base_url}/v1beta/models/{model}:generateContent"),
        }
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
    fn kinds_round_trip_by_name() {
        for k in ProviderKind::ALL {
            assert_eq!(ProviderKind::parse(k.as_str()), Some(k));
        }
        assert_eq!(ProviderKind::parse("opneai"), None);
    }
}
