//! The wire formats Ballast speaks, inbound (what a client sends) and outbound (what a provider expects).

use std::fmt;

/// One LLM HTTP API dialect. Inbound, it is what the client's SDK speaks; outbound, what a provider kind
/// expects. When the two are equal a request takes the same-format fast path (body forwarded with only the
/// model rewritten); otherwise it goes through the canonical model in [`crate::model`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ApiFormat {
    /// OpenAI Chat Completions (`POST /v1/chat/completions`), also spoken by OpenAI-compatible servers.
    OpenAiChat,
    /// Anthropic Messages (`POST /v1/messages`).
    AnthropicMessages,
    /// Google Gemini `generateContent` / `streamGenerateContent?alt=sse`.
    Gemini,
    /// OpenAI Responses (`POST /v1/responses`), spoken by OpenAI's SDKs, its Agents SDK and Codex.
    OpenAiResponses,
}

impl ApiFormat {
    /// A short stable name, used in logs, metrics labels and error messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            ApiFormat::OpenAiChat => "openai-chat",
            ApiFormat::AnthropicMessages => "anthropic-messages",
            ApiFormat::Gemini => "gemini",
            ApiFormat::OpenAiResponses => "openai-responses",
        }
    }
}

impl fmt::Display for ApiFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
