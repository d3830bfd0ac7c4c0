//! The provider-neutral (canonical) model: one request, response and stream-event shape that every wire
//! format converts to and from. Same-format traffic never touches it (it takes the fast path); it is the
//! seam where cross-format translation plugs in.

use serde_json::Value;

/// A chat request in provider-neutral form.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatRequest {
    /// The model the client asked for (a route name on the inbound side, the upstream model outbound).
    pub model: String,
    /// System prompt segments, in order (OpenAI `system`/`developer` messages, Anthropic `system`,
    /// Gemini `systemInstruction`).
    pub system: Vec<String>,
    pub messages: Vec<Message>,
    pub tools: Vec<ToolSpec>,
    pub tool_choice: Option<ToolChoice>,
    pub parallel_tool_calls: Option<bool>,
    pub max_tokens: Option<u32>,
    pub temperature: Option<f64>,
    pub top_p: Option<f64>,
    pub top_k: Option<u32>,
    pub stop: Vec<String>,
    pub response_format: Option<ResponseFormat>,
    pub stream: bool,
    /// OpenAI `stream_options.include_usage`: the client wants a final usage chunk.
    pub include_usage: bool,
    /// End-user id for abuse tracking (OpenAI `user`, Anthropic `metadata.user_id`).
    pub user: Option<String>,
    /// Names of request fields the decoder saw but the canonical model cannot carry. The encoder turns
    /// them into `x-ballast-warning` entries when the target cannot honour them.
    pub dropped: Vec<String>,
    /// Functions the client declared inside OpenAI Responses `namespace` tools. They travel under
    /// their flat names (in [`ChatRequest::tools`] and in tool calls); answers for a Responses client
    /// get their namespace and name back.
    pub namespaced_tools: Vec<NamespacedTool>,
    /// Tools only OpenAI can run (Responses built-ins: `web_search`, `file_search`,
    /// `code_interpreter`, `computer_use_preview`, `mcp`, …), as the client sent them. Any target but
    /// an OpenAI Responses one cannot serve such a request: encoding for it is `Unsupported`, so the
    /// route falls over. [`ChatRequest::drop_builtin_tools`] turns them into warnings instead.
    pub builtin_tools: Vec<Value>,
}

impl ChatRequest {
    /// Gives up the built-in tools (listing them in [`ChatRequest::dropped`]), for a deployment that
    /// prefers an answer without them to a failover.
    pub fn drop_builtin_tools(&mut self) {
        for t in self.builtin_tools.drain(..) {
            let kind = t.get("type").and_then(Value::as_str).unwrap_or("unknown");
            self.dropped.push(format!("tools ({kind})"));
        }
    }

    /// The client's (namespace, name) for a flat canonical tool name, when it was namespaced.
    /// A local estimate of the request's input tokens (about four characters a token, plus each
    /// message's framing and a flat cost per image), for a client format that promises input tokens
    /// before the upstream reports them. Never exact; the upstream's count replaces it at the end.
    pub fn estimate_input_tokens(&self) -> u64 {
        /// What an image of unknown size costs, roughly (a 1,000-pixel square at ~750 px/token).
        const IMAGE_TOKENS: u64 = 1_300;
        fn part_chars(p: &Part, images: &mut u64) -> usize {
            match p {
                Part::Text(t) => t.len(),
                Part::Image(_) => {
                    *images = images.saturating_add(1);
                    0
                }
                Part::ToolCall(c) => c.name.len().saturating_add(c.arguments.len()),
                Part::ToolResult(r) => r
                    .content
                    .iter()
                    .map(|p| part_chars(p, images))
                    .fold(0usize, usize::saturating_add),
            }
        }
        let mut images = 0u64;
        let mut chars: usize = self
            .system
            .iter()
            .map(String::len)
            .fold(0, usize::saturating_add);
        for m in &self.messages {
            for p in &m.content {
                chars = chars.saturating_add(part_chars(p, &mut images));
            }
        }
        for t in &self.tools {
            chars = chars
                .saturating_add(t.name.len())
                .saturating_add(t.description.as_ref().map_or(0, String::len))
                .saturating_add(json_len(&t.parameters));
        }
        let framing = u64::try_from(self.messages.len())
            .unwrap_or(u64::MAX)
            .saturating_mul(4);
        u64::try_from(chars.div_ceil(4))
            .unwrap_or(u64::MAX)
            .saturating_add(framing)
            .saturating_add(images.saturating_mul(IMAGE_TOKENS))
    }

    pub fn namespaced(&self, flat: &str) -> Option<&NamespacedTool> {
        self.namespaced_tools.iter().find(|t| t.flat == flat)
    }
}

/// A function declared inside an OpenAI Responses `namespace` tool, and the flat name it has in the
/// canonical model (`{namespace}__{name}` unless that is too long or taken; see
/// `translate::responses`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespacedTool {
    pub flat: String,
    pub namespace: String,
    pub name: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    User,
    Assistant,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Message {
    pub role: Role,
    pub content: Vec<Part>,
}

/// One piece of message content.
#[derive(Clone, Debug, PartialEq)]
pub enum Part {
    Text(String),
    Image(Image),
    /// A call the assistant made. `arguments` is the JSON text of the arguments object.
    ToolCall(ToolCall),
    /// The result of a tool call, sent back by the user side.
    ToolResult(ToolResult),
}

#[derive(Clone, Debug, PartialEq)]
pub enum Image {
    Base64 { media_type: String, data: String },
    Url(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolCall {
    pub id: String,
    pub name: String,
    pub arguments: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolResult {
    pub call_id: String,
    /// The tool's name when known (Gemini's `functionResponse` needs it; OpenAI and Anthropic do not
    /// carry it, so decoders recover it from the matching call earlier in the conversation).
    pub name: Option<String>,
    pub content: Vec<Part>,
    pub is_error: bool,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ToolSpec {
    pub name: String,
    pub description: Option<String>,
    /// JSON Schema of the arguments object.
    pub parameters: Value,
    pub strict: Option<bool>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ToolChoice {
    Auto,
    None,
    /// The model must call some tool (OpenAI `required`, Anthropic `any`, Gemini `ANY`).
    Required,
    /// The model must call this tool.
    Tool(String),
}

#[derive(Clone, Debug, PartialEq)]
pub enum ResponseFormat {
    Text,
    JsonObject,
    JsonSchema {
        name: String,
        schema: Value,
        strict: Option<bool>,
    },
}

/// A complete (non-streaming) answer.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ChatResponse {
    pub id: String,
    /// The upstream model that actually answered.
    pub model: String,
    /// Creation time (Unix seconds) when the provider reported one (OpenAI `created`); encoders use the
    /// current time when absent.
    pub created: Option<u64>,
    /// Text and tool-call parts, in order.
    pub content: Vec<Part>,
    pub stop_reason: Option<StopReason>,
    pub usage: Usage,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopReason {
    EndTurn,
    MaxTokens,
    ToolUse,
    /// A stop sequence matched; the sequence when the provider reports it.
    StopSequence(Option<String>),
    ContentFilter,
    /// A provider reason with no canonical equivalent, kept verbatim.
    Other(String),
}

/// Token usage; `None` where the provider did not report a figure.
///
/// Canonical semantics (OpenAI's and Gemini's): `input_tokens` counts *every* prompt token, cached ones
/// included, and `cache_read_tokens`/`cache_write_tokens` are subsets of it (Anthropic's `input_tokens`
/// excludes both, so its adapter adds them in and takes them out again). `output_tokens` counts every
/// generated token, reasoning included, and `reasoning_tokens` is a subset of it (Gemini reports
/// `candidatesTokenCount` and `thoughtsTokenCount` separately; its adapter sums them).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
    pub cache_read_tokens: Option<u64>,
    pub cache_write_tokens: Option<u64>,
    pub reasoning_tokens: Option<u64>,
}

/// One provider-neutral stream event. A decoder turns a provider's SSE events into these; an encoder
/// turns these into the client's SSE events, incrementally.
#[derive(Clone, Debug, PartialEq)]
pub enum StreamEvent {
    /// The answer started.
    Start { id: String, model: String },
    /// Text for content part `index`.
    TextDelta { index: usize, text: String },
    /// A tool call opens at content part `index`.
    ToolCallStart {
        index: usize,
        id: String,
        name: String,
    },
    /// A fragment of the JSON arguments of the tool call at `index`.
    ToolCallDelta { index: usize, fragment: String },
    /// Usage figures known so far (may arrive more than once; later values win).
    Usage(Usage),
    /// The model stopped.
    Stop(StopReason),
    /// The provider reported an error mid-stream.
    Error { kind: String, message: String },
    /// The provider's terminal event (`message_stop`, `[DONE]`, Gemini's final chunk).
    Done,
}

/// The length of a JSON value's compact text, counted without building it.
fn json_len(v: &Value) -> usize {
    struct Count(usize);
    impl std::io::Write for Count {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0 = self.0.saturating_add(buf.len());
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut c = Count(0);
    let _ = serde_json::to_writer(&mut c, v);
    c.0
}
