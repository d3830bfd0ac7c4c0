//! Deterministic answers: a provider-neutral prompt in, text or a tool call out, with token counts.
//!
//! Every API module turns its request into a [`Prompt`] and renders the [`Answer`] in its own wire
//! format, so the conventions (echo, tool calls, the `[[ballast-sim:call NAME {ARGS}]]` directive, tool
//! results, stop sequences, `max_tokens`, continuations) behave the same on every API. The faults that
//! change an answer's text (`corrupt`, `degrade`) are applied here too, so they look alike on every API.
//!
//! Answers are seeded by the *logical* conversation ([`Prompt::conversation_key`]): who said what,
//! whatever the wire shape, so the same conversation gets the same answer through every API and under
//! every model name. A request that asks to continue an answer (an assistant prefill, or an assistant
//! turn followed by a user turn asking to continue) gets the rest of that answer
//! ([`Prompt::continuation`], [`continue_answer`]).

use std::ops::RangeInclusive;

use serde_json::{Map, Value, json};

use crate::faults::{DegradeMode, Script};
use crate::words::{ENGLISH, script_words};

/// Generated answers have between these many tokens (before `max_tokens` and stop sequences).
const MIN_TOKENS: usize = 12;
const MAX_TOKENS: usize = 60;
/// How much of a tool result the acknowledgement quotes.
const TOOL_RESULT_QUOTE_CHARS: usize = 100;
/// Recursion limit when building tool arguments from a schema.
const SCHEMA_DEPTH: usize = 8;
/// `degrade:empty`: output tokens reported for an answer with no text (the real APIs count a few).
const EMPTY_OUTPUT_TOKENS: RangeInclusive<u64> = 1..=3;
/// `degrade:short`: tokens said before the token-limit stop.
const SHORT_TOKENS: RangeInclusive<usize> = 2..=4;
/// `degrade:repeat`: words in the looping phrase.
const REPEAT_PHRASE_WORDS: RangeInclusive<usize> = 2..=4;
/// `degrade:repeat`: the phrase comes at least this many times, however short the answer.
const REPEAT_MIN_LOOPS: usize = 3;

/// A tool the request offers.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Tool {
    pub name: String,
    /// JSON schema of the arguments (Gemini's upper-case type names are accepted too).
    pub schema: Value,
}

/// How the request lets the model use tools.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) enum ToolChoice {
    /// Call a tool only when the last user message names one.
    #[default]
    Auto,
    /// Never call a tool.
    None,
    /// Always call a tool (a mentioned one, else the first).
    Required,
    /// Always call this tool.
    Named(String),
}

/// Who a message of the conversation comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Role {
    /// A system or developer message (Chat, Responses); instructions outside the list are in
    /// [`Prompt::system`].
    System,
    /// The user, tool results included (as Anthropic and Gemini carry them).
    User,
    /// The model: text and tool calls.
    Assistant,
    /// An item that is no message (Responses `reasoning`, `item_reference` …): ignored.
    Other,
}

/// What a message says, whatever its wire shape.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Part {
    Text(String),
    Call {
        name: String,
        arguments: Value,
    },
    /// A tool result's text.
    Result(String),
}

/// One item of the request's conversation list (Anthropic `messages`, Chat `messages`, Responses
/// `input`, Gemini `contents`), in provider-neutral terms.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Message {
    pub role: Role,
    pub parts: Vec<Part>,
}

impl Message {
    pub fn new(role: Role, parts: Vec<Part>) -> Message {
        Message { role, parts }
    }

    /// A message saying `text` (no part when it is empty).
    pub fn text(role: Role, text: String) -> Message {
        let parts = if text.is_empty() {
            Vec::new()
        } else {
            vec![Part::Text(text)]
        };
        Message { role, parts }
    }

    /// The text of a message that says only text (no tool call or result); `""` when it says nothing.
    pub fn only_text(&self) -> Option<String> {
        let mut text = String::new();
        for part in &self.parts {
            match part {
                Part::Text(t) => text.push_str(t),
                Part::Call { .. } | Part::Result(_) => return None,
            }
        }
        Some(text)
    }
}

/// Tool-call arguments sent as a JSON string (Chat, Responses), as a value; a string that is no JSON
/// stays a string.
pub(crate) fn arguments_value(arguments: Option<&Value>) -> Value {
    match arguments {
        Some(Value::String(s)) => {
            serde_json::from_str(s).unwrap_or_else(|_| Value::String(s.clone()))
        }
        Some(other) => other.clone(),
        None => Value::Object(Map::new()),
    }
}

/// A request reduced to what answer generation needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prompt {
    pub model: String,
    pub stream: bool,
    /// System instructions given outside the conversation list (Anthropic `system`, Responses
    /// `instructions`, Gemini `systemInstruction`).
    pub system: Vec<String>,
    /// The conversation list, one entry per item of the request's list (so an index into it is an
    /// index into the request's list). With [`Prompt::system`], it seeds the answer.
    pub messages: Vec<Message>,
    /// Characters of request text (system, messages, tools): estimates input tokens.
    pub input_chars: usize,
    /// Text of the last user message.
    pub last_user_text: Option<String>,
    /// Text of the latest user turn: every user message after the last assistant message or tool
    /// call (system messages in between are skipped). Searched for a [`Directive`].
    pub turn_text: String,
    /// When the last message carries a tool result, its text.
    pub tool_result: Option<String>,
    pub tools: Vec<Tool>,
    pub tool_choice: ToolChoice,
    pub max_tokens: Option<u64>,
    pub stop_sequences: Vec<String>,
    /// Structured output asked for: text answers (except echoes) become this JSON.
    pub json_output: Option<JsonOutput>,
}

/// How a request asks to continue an answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ContinueKind {
    /// The conversation ends with an assistant turn holding the text said so far (Anthropic
    /// Messages honours it).
    Prefill,
    /// An assistant turn holding the text said so far, then a user turn asking to continue (its
    /// text contains `continue`, in any case).
    Instruction,
}

/// A request to continue an answer: the conversation before `cut` (an index into
/// [`Prompt::messages`]) is the one answered, `delivered` the text of it already said.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Continuation {
    pub kind: ContinueKind,
    pub cut: usize,
    pub delivered: String,
}

/// The word a user turn uses to ask to continue (matched in any case).
const CONTINUE_WORD: &str = "continue";

impl Prompt {
    /// The logical conversation as a string: system texts, then turns (consecutive messages of one
    /// role merged) with their texts, tool calls (name and arguments) and tool results. Whitespace is
    /// dropped and ids, images, reasoning and the model name are left out, so the same conversation
    /// gives the same key whatever API or wire shape carries it (a system prompt split in blocks or
    /// joined, tool results as blocks or messages). It seeds the answer.
    pub fn conversation_key(&self) -> String {
        let mut key = String::from("system:");
        let system_messages = self
            .messages
            .iter()
            .filter(|m| m.role == Role::System)
            .flat_map(|m| &m.parts)
            .filter_map(|p| match p {
                Part::Text(t) => Some(t.as_str()),
                _ => None,
            });
        for text in self
            .system
            .iter()
            .map(String::as_str)
            .chain(system_messages)
        {
            push_squeezed(&mut key, text);
        }
        let mut turns: Vec<(Role, Vec<&Part>)> = Vec::new();
        for m in &self.messages {
            if !matches!(m.role, Role::User | Role::Assistant) {
                continue;
            }
            let parts = m.parts.iter().filter(|p| match p {
                Part::Text(t) => t.chars().any(|c| !c.is_whitespace()),
                _ => true,
            });
            match turns.last_mut() {
                Some((role, said)) if *role == m.role => said.extend(parts),
                _ => {
                    let said: Vec<&Part> = parts.collect();
                    if !said.is_empty() {
                        turns.push((m.role, said));
                    }
                }
            }
        }
        for (role, parts) in turns {
            key.push_str(match role {
                Role::Assistant => "\u{1}assistant:",
                _ => "\u{1}user:",
            });
            // Texts, then calls, then results: the order each API keeps within a turn.
            for part in &parts {
                if let Part::Text(t) = part {
                    push_squeezed(&mut key, t);
                }
            }
            for part in &parts {
                if let Part::Call { name, arguments } = part {
                    key.push_str("\u{2}call:");
                    key.push_str(name);
                    push_squeezed(&mut key, &arguments.to_string());
                }
            }
            for part in &parts {
                if let Part::Result(r) = part {
                    key.push_str("\u{3}result:");
                    push_squeezed(&mut key, r);
                }
            }
        }
        key
    }

    /// Whether the conversation ends with an assistant turn (system and non-message items after it
    /// aside): a prefill, as `reject_prefill` refuses it.
    pub fn ends_with_assistant(&self) -> bool {
        self.messages
            .iter()
            .rev()
            .find(|m| matches!(m.role, Role::User | Role::Assistant))
            .is_some_and(|m| m.role == Role::Assistant)
    }

    /// Whether the request asks to continue an answer: a last message from the assistant saying only
    /// text (when the API honours a prefill), or an assistant message saying only text followed by
    /// user messages saying only text, one of which contains `continue` (any case; system and
    /// non-message items in between are skipped).
    pub fn continuation(&self, prefill: bool) -> Option<Continuation> {
        let last = self.messages.len().checked_sub(1)?;
        let message = self.messages.get(last)?;
        if prefill && message.role == Role::Assistant {
            return Some(Continuation {
                kind: ContinueKind::Prefill,
                cut: last,
                delivered: message.only_text()?,
            });
        }
        let mut asks = false;
        for (at, m) in self.messages.iter().enumerate().rev() {
            match m.role {
                Role::System | Role::Other => {}
                Role::User => {
                    let text = m.only_text()?;
                    asks |= text.to_lowercase().contains(CONTINUE_WORD);
                }
                Role::Assistant if asks => {
                    return m.only_text().map(|delivered| Continuation {
                        kind: ContinueKind::Instruction,
                        cut: at,
                        delivered,
                    });
                }
                Role::Assistant => return None,
            }
        }
        None
    }
}

/// Appends `text` without its whitespace.
fn push_squeezed(key: &mut String, text: &str) {
    key.extend(text.chars().filter(|c| !c.is_whitespace()));
}

/// A structured-output request: Chat `response_format`, Responses `text.format`, Anthropic
/// `output_config.format`, Gemini `generationConfig.responseMimeType: application/json`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum JsonOutput {
    /// `json_object`: any JSON object; the answer is `{"answer": TEXT}`.
    Object,
    /// `json_schema`: an object built from the schema, as tool arguments are.
    Schema(Value),
}

/// Why an answer ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Finish {
    /// Natural end.
    EndTurn,
    /// Cut at `max_tokens`.
    MaxTokens,
    /// Cut before this stop sequence.
    StopSequence(String),
    /// Ended with a tool call.
    ToolUse,
}

/// What the answer says.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Content {
    /// Text, as the pieces (tokens) it streams in; their concatenation is the text.
    Text(Vec<String>),
    /// A call to a tool with these arguments (a JSON object).
    ToolCall { name: String, arguments: Value },
}

/// A generated answer.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Answer {
    pub content: Content,
    pub finish: Finish,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// True when the `corrupt` fault changed the text.
    pub corrupted: bool,
    /// True when the `degrade` fault changed the text.
    pub degraded: bool,
    /// Text said before a tool call, as streaming pieces (rendered as a text block / content / output
    /// item / part ahead of the call). Empty except in `hostile` answers.
    pub preamble: Vec<String>,
}

impl Answer {
    /// The text pieces the answer says, if it says any: a text answer's pieces, or a tool call's
    /// non-empty preamble.
    pub fn text_pieces(&self) -> Option<&[String]> {
        match &self.content {
            Content::Text(pieces) => Some(pieces),
            Content::ToolCall { .. } if !self.preamble.is_empty() => Some(&self.preamble),
            Content::ToolCall { .. } => None,
        }
    }

    /// The whole text of a text answer ("" for a tool call).
    #[cfg(test)]
    pub fn text(&self) -> String {
        match &self.content {
            Content::Text(pieces) => pieces.concat(),
            Content::ToolCall { .. } => String::new(),
        }
    }
}

/// What a message is to [`latest_turn_text`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Turn {
    /// A user message: part of the turn.
    User,
    /// A system or developer message: skipped.
    Skip,
    /// Anything the model produced (assistant message, tool call, reasoning) or a tool result: the
    /// turn starts after it.
    Other,
}

/// The text of the user messages after the last non-user, non-system one, joined by newlines. The
/// directive is looked for here, so it fires once per user turn: after the model answered (with a
/// tool call or text), the same directive no longer counts.
pub(crate) fn latest_turn_text<T>(
    items: &[T],
    classify: impl Fn(&T) -> Turn,
    text: impl Fn(&T) -> String,
) -> String {
    let mut texts = Vec::new();
    for item in items.iter().rev() {
        match classify(item) {
            Turn::User => texts.push(text(item)),
            Turn::Skip => {}
            Turn::Other => break,
        }
    }
    texts.reverse();
    texts.join("\n")
}

/// Opens a tool-call directive: `[[ballast-sim:call NAME {JSON}]]`.
const DIRECTIVE_OPEN: &str = "[[ballast-sim:call ";
/// Closes it.
const DIRECTIVE_CLOSE: &str = "]]";

/// A deterministic tool call asked for in the prompt: `[[ballast-sim:call NAME {JSON args}]]`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Directive {
    pub name: String,
    /// The arguments, a JSON object (`{}` when left out).
    pub arguments: Value,
}

/// The first well-formed directive in `text`, if any. The name runs to the first whitespace or `]`;
/// the arguments, when present, must be one JSON object, followed (after optional whitespace) by
/// `]]`. Malformed directives are ignored.
pub(crate) fn find_directive(text: &str) -> Option<Directive> {
    let mut rest = text;
    while let Some(at) = rest.find(DIRECTIVE_OPEN) {
        let after = &rest[at + DIRECTIVE_OPEN.len()..];
        if let Some(directive) = parse_directive(after) {
            return Some(directive);
        }
        rest = after;
    }
    None
}

fn parse_directive(after_open: &str) -> Option<Directive> {
    let body = after_open.trim_start();
    let name_len = body
        .find(|c: char| c.is_whitespace() || c == ']')
        .unwrap_or(body.len());
    let name = &body[..name_len];
    if name.is_empty() {
        return None;
    }
    let rest = body[name_len..].trim_start();
    let (arguments, rest) = if rest.starts_with('{') {
        let mut values = serde_json::Deserializer::from_str(rest).into_iter::<Value>();
        let value = values.next()?.ok()?;
        let used = values.byte_offset();
        (value, &rest[used..])
    } else {
        (Value::Object(Map::new()), rest)
    };
    rest.trim_start()
        .starts_with(DIRECTIVE_CLOSE)
        .then(|| Directive {
            name: name.to_owned(),
            arguments,
        })
}

/// 64-bit FNV-1a: a hash that never changes across Rust versions, so seeded answers stay put.
pub(crate) fn stable_hash(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for b in part.bytes().chain(std::iter::once(0xff)) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// Input tokens estimated from request characters: a quarter, rounded up, at least 1.
pub(crate) fn estimate_tokens(chars: usize) -> u64 {
    (chars.div_ceil(4)).max(1) as u64
}

/// Characters of every string inside a JSON value (keys excluded).
pub(crate) fn text_chars(value: &Value) -> usize {
    match value {
        Value::String(s) => s.chars().count(),
        Value::Array(items) => items.iter().map(text_chars).sum(),
        Value::Object(map) => map.values().map(text_chars).sum(),
        _ => 0,
    }
}

/// The generator of a prompt's answer: seeded by the seed and the logical conversation only (not the
/// model, nor the API).
fn seeded(seed: u64, prompt: &Prompt) -> fastrand::Rng {
    fastrand::Rng::with_seed(seed ^ stable_hash(&[&prompt.conversation_key()]))
}

/// Answers a request that asks to continue an answer. `base` is the request's prompt with the
/// conversation cut where the continuation starts ([`Continuation::cut`]); its answer `A` (without
/// `max_tokens`) is the answer being continued:
///
/// - `A` says text that starts with the delivered text (strictly, for an instruction): the rest of
///   it, split into pieces again, under this request's `max_tokens` (the new tokens only, as usage
///   counts them) and faults, ending as `A` ends;
/// - `A` calls a tool and the delivered text is empty or `A`'s preamble: `A` again (without the
///   preamble already said);
/// - otherwise, a prefill gets `A` as usual (cut by `max_tokens`, faults applied) and an
///   instruction gets `None`: the request is answered as any other.
pub(crate) fn continue_answer(
    seed: u64,
    prompt: &Prompt,
    base: &Prompt,
    continuation: &Continuation,
    corrupt: Option<Script>,
    degrade: Option<DegradeMode>,
) -> Option<Answer> {
    let input_tokens = estimate_tokens(prompt.input_chars);
    let unlimited = Prompt {
        max_tokens: None,
        ..base.clone()
    };
    let full = answer(seed, &unlimited, None, None);
    let delivered = continuation.delivered.as_str();
    match &full.content {
        Content::Text(pieces) => {
            let text = pieces.concat();
            let rest = text
                .strip_prefix(delivered)
                .filter(|rest| continuation.kind == ContinueKind::Prefill || !rest.is_empty());
            if let Some(rest) = rest {
                let mut rng = seeded(seed, prompt);
                let mut continued = TextAnswer {
                    prose: rest.to_owned(),
                    json: None,
                    input_tokens,
                }
                .finish(prompt, corrupt, degrade, &mut rng);
                if continued.finish == Finish::EndTurn && degrade.is_none() {
                    continued.finish = full.finish.clone();
                }
                return Some(continued);
            }
        }
        Content::ToolCall { .. } => {
            let preamble = full.preamble.concat();
            if delivered.is_empty() || delivered == preamble {
                let mut again = full;
                if !delivered.is_empty() {
                    again.preamble.clear();
                }
                again.input_tokens = input_tokens;
                return Some(again);
            }
        }
    }
    (continuation.kind == ContinueKind::Prefill).then(|| {
        let mut answer = answer(seed, base, corrupt, degrade);
        answer.input_tokens = input_tokens;
        answer
    })
}

/// Answers a prompt. Same seed and prompt, same answer; `corrupt` swaps words into another script and
/// `degrade` spoils a text answer (tool calls are left alone).
pub(crate) fn answer(
    seed: u64,
    prompt: &Prompt,
    corrupt: Option<Script>,
    degrade: Option<DegradeMode>,
) -> Answer {
    let mut rng = seeded(seed, prompt);
    let input_tokens = estimate_tokens(prompt.input_chars);

    let forced = !matches!(prompt.tool_choice, ToolChoice::Auto | ToolChoice::None);
    let echoed = prompt
        .last_user_text
        .as_deref()
        .and_then(|t| t.strip_prefix("echo "));
    let text = if let Some(result) = &prompt.tool_result {
        let quoted: String = result.chars().take(TOOL_RESULT_QUOTE_CHARS).collect();
        format!("Tool result received: {quoted}")
    } else if let Some(directive) = directed_call(prompt) {
        return directed(directive, input_tokens);
    } else if let Some(tool) = pick_tool(prompt).filter(|_| forced) {
        return tool_call(tool, input_tokens);
    } else if let Some(echoed) = echoed {
        // Echoes stay verbatim, even under structured output.
        let text = TextAnswer {
            prose: echoed.to_owned(),
            json: None,
            input_tokens,
        };
        return text.finish(prompt, corrupt, degrade, &mut rng);
    } else if let Some(tool) = pick_tool(prompt) {
        return tool_call(tool, input_tokens);
    } else {
        generated_text(&mut rng)
    };
    let text = TextAnswer {
        prose: text,
        json: prompt.json_output.as_ref(),
        input_tokens,
    };
    text.finish(prompt, corrupt, degrade, &mut rng)
}

/// A text answer before its limits and faults: what it says, and the JSON it is wrapped in when the
/// request asks for structured output.
struct TextAnswer<'a> {
    prose: String,
    json: Option<&'a JsonOutput>,
    input_tokens: u64,
}

impl TextAnswer<'_> {
    /// The answer: `repeat` and `invalid_json` change the text, then `max_tokens` and stop sequences
    /// apply, then `empty` and `short` cut it, then `corrupt` swaps words.
    fn finish(
        self,
        prompt: &Prompt,
        corrupt: Option<Script>,
        degrade: Option<DegradeMode>,
        rng: &mut fastrand::Rng,
    ) -> Answer {
        let repeat = degrade == Some(DegradeMode::Repeat);
        let prose = if repeat {
            looped_text(self.prose.split_whitespace().count(), rng)
        } else {
            self.prose
        };
        let (mut text, said) = match self.json {
            Some(format) => json_text(format, prose, repeat),
            None => (prose, true),
        };
        // A loop is only there when the answer says its text (a schema may have no string).
        let mut degraded = repeat && said;
        if degrade == Some(DegradeMode::InvalidJson) && self.json.is_some() {
            text = break_json(&text, rng);
            degraded = true;
        }
        let (mut pieces, mut finish) = limit(&text, prompt.max_tokens, &prompt.stop_sequences);
        let mut output_tokens = None;
        match degrade {
            Some(DegradeMode::Empty) => {
                pieces.clear();
                finish = Finish::EndTurn;
                output_tokens = Some(rng.u64(EMPTY_OUTPUT_TOKENS));
                degraded = true;
            }
            Some(DegradeMode::Short) => {
                pieces.truncate(rng.usize(SHORT_TOKENS));
                finish = Finish::MaxTokens;
                degraded = true;
            }
            _ => {}
        }
        let corrupted = match corrupt {
            Some(script) => corrupt_pieces(&mut pieces, script, rng),
            None => false,
        };
        Answer {
            output_tokens: output_tokens.unwrap_or(pieces.len() as u64),
            content: Content::Text(pieces),
            finish,
            input_tokens: self.input_tokens,
            corrupted,
            degraded,
            preamble: Vec::new(),
        }
    }
}

/// The directive of the latest user turn, when it names an offered tool the tool choice allows.
fn directed_call(prompt: &Prompt) -> Option<Directive> {
    let directive = find_directive(&prompt.turn_text)?;
    let allowed = match &prompt.tool_choice {
        ToolChoice::None => false,
        ToolChoice::Auto | ToolChoice::Required => true,
        ToolChoice::Named(name) => *name == directive.name,
    };
    (allowed && prompt.tools.iter().any(|t| t.name == directive.name)).then_some(directive)
}

/// A call with the directive's exact arguments.
fn directed(directive: Directive, input_tokens: u64) -> Answer {
    let output_tokens =
        estimate_tokens(directive.arguments.to_string().len() + directive.name.len());
    Answer {
        content: Content::ToolCall {
            name: directive.name,
            arguments: directive.arguments,
        },
        finish: Finish::ToolUse,
        input_tokens,
        output_tokens,
        corrupted: false,
        degraded: false,
        preamble: Vec::new(),
    }
}

fn tool_call(tool: &Tool, input_tokens: u64) -> Answer {
    let arguments = example_value(&tool.schema, 0);
    let arguments = if arguments.is_object() {
        arguments
    } else {
        Value::Object(Map::new())
    };
    let output_tokens = estimate_tokens(arguments.to_string().len() + tool.name.len());
    Answer {
        content: Content::ToolCall {
            name: tool.name.clone(),
            arguments,
        },
        finish: Finish::ToolUse,
        input_tokens,
        output_tokens,
        corrupted: false,
        degraded: false,
        preamble: Vec::new(),
    }
}

/// A call for answers that must call a tool whatever the request offered (`hostile:huge_index`): the
/// tool the prompt would call, else its first tool, else a tool the request never declared.
pub(crate) fn any_tool_call(prompt: &Prompt) -> (String, Value) {
    match pick_tool(prompt).or(prompt.tools.first()) {
        Some(tool) => match tool_call(tool, 0).content {
            Content::ToolCall { name, arguments } => (name, arguments),
            Content::Text(_) => (tool.name.clone(), json!({})),
        },
        None => (
            "ballast_sim_hostile".to_owned(),
            json!({"ballast_sim_hostile": "example"}),
        ),
    }
}

/// The tool to call, if any: the named one, else one the last user message mentions, else (when a
/// call is required) the first.
fn pick_tool(prompt: &Prompt) -> Option<&Tool> {
    let first = prompt.tools.first()?;
    let mentioned = || {
        let text = prompt.last_user_text.as_deref()?.to_lowercase();
        prompt
            .tools
            .iter()
            .find(|t| !t.name.is_empty() && text.contains(&t.name.to_lowercase()))
    };
    match &prompt.tool_choice {
        ToolChoice::None => None,
        ToolChoice::Auto => mentioned(),
        ToolChoice::Required => mentioned().or(Some(first)),
        ToolChoice::Named(name) => prompt
            .tools
            .iter()
            .find(|t| &t.name == name)
            .or(Some(first)),
    }
}

/// English-like sentences of a seeded length.
fn generated_text(rng: &mut fastrand::Rng) -> String {
    let count = rng.usize(MIN_TOKENS..=MAX_TOKENS);
    let mut text = String::new();
    let mut sentence_left = 0;
    for i in 0..count {
        let word = ENGLISH[rng.usize(..ENGLISH.len())];
        if sentence_left == 0 {
            if i > 0 {
                text.push(' ');
            }
            let mut chars = word.chars();
            if let Some(first) = chars.next() {
                text.extend(first.to_uppercase());
                text.push_str(chars.as_str());
            }
            sentence_left = rng.usize(5..=12);
        } else {
            text.push(' ');
            text.push_str(word);
        }
        sentence_left -= 1;
        if sentence_left == 0 || i + 1 == count {
            text.push('.');
            sentence_left = 0;
        }
    }
    text
}

/// Splits text into streaming pieces: each is leading whitespace plus a run of non-whitespace.
pub(crate) fn split_pieces(text: &str) -> Vec<String> {
    let mut pieces = Vec::new();
    let mut current = String::new();
    let mut seen_word = false;
    for c in text.chars() {
        if c.is_whitespace() {
            if seen_word {
                pieces.push(std::mem::take(&mut current));
                seen_word = false;
            }
        } else {
            seen_word = true;
        }
        current.push(c);
    }
    match pieces.last_mut() {
        // Trailing whitespace belongs to the last word rather than making a token of its own.
        Some(last) if !seen_word => last.push_str(&current),
        _ if !current.is_empty() => pieces.push(current),
        _ => {}
    }
    pieces
}

/// Applies `max_tokens` (in pieces) and stop sequences (the earliest match wins; the text ends
/// before it).
fn limit(text: &str, max_tokens: Option<u64>, stop_sequences: &[String]) -> (Vec<String>, Finish) {
    let mut pieces = split_pieces(text);
    let mut finish = Finish::EndTurn;
    if let Some(max) = max_tokens.and_then(|m| usize::try_from(m).ok())
        && pieces.len() > max
    {
        pieces.truncate(max);
        finish = Finish::MaxTokens;
    }
    let joined = pieces.concat();
    let earliest = stop_sequences
        .iter()
        .filter(|s| !s.is_empty())
        .filter_map(|s| joined.find(s.as_str()).map(|at| (at, s)))
        .min_by_key(|(at, _)| *at);
    if let Some((at, seq)) = earliest {
        pieces = split_pieces(&joined[..at]);
        finish = Finish::StopSequence(seq.clone());
    }
    (pieces, finish)
}

/// Replaces 30–100 % of the words (at least one) with words of `script`; returns whether any changed.
fn corrupt_pieces(pieces: &mut [String], script: Script, rng: &mut fastrand::Rng) -> bool {
    if pieces.is_empty() {
        return false;
    }
    let words = script_words(script);
    let share = 0.3 + 0.7 * rng.f64();
    let forced = rng.usize(..pieces.len());
    for (i, piece) in pieces.iter_mut().enumerate() {
        if i == forced || rng.f64() < share {
            let lead: String = piece.chars().take_while(|c| c.is_whitespace()).collect();
            *piece = format!("{lead}{}", words[rng.usize(..words.len())]);
        }
    }
    true
}

/// A text answer as structured output: indented JSON, so it streams in several pieces. `json_object`
/// answers `{"answer": TEXT}`; `json_schema` answers the schema's example value, whose strings are
/// `TEXT` when `fill` (a looping answer loops inside the JSON). Also says whether `TEXT` is in it.
fn json_text(format: &JsonOutput, text: String, fill: bool) -> (String, bool) {
    let (value, said) = match format {
        JsonOutput::Object => (json!({ "answer": text }), true),
        JsonOutput::Schema(schema) => {
            let mut value = example_value(schema, 0);
            let said = fill && fill_strings(&mut value, &text);
            (value, said)
        }
    };
    let text = serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string());
    (text, said)
}

/// Replaces every string inside `value` with `text`; true if there was one.
fn fill_strings(value: &mut Value, text: &str) -> bool {
    let children: Vec<&mut Value> = match value {
        Value::String(s) => {
            text.clone_into(s);
            return true;
        }
        Value::Array(items) => items.iter_mut().collect(),
        Value::Object(map) => map.values_mut().collect(),
        _ => return false,
    };
    let mut any = false;
    for child in children {
        any |= fill_strings(child, text);
    }
    any
}

/// `degrade:repeat`: a phrase of a few words looping for `words` words (at least a few loops), as a
/// broken sampler says it.
fn looped_text(words: usize, rng: &mut fastrand::Rng) -> String {
    let len = rng.usize(REPEAT_PHRASE_WORDS);
    let phrase: Vec<&str> = (0..len)
        .map(|_| ENGLISH[rng.usize(..ENGLISH.len())])
        .collect();
    let total = words.max(len * REPEAT_MIN_LOOPS);
    (0..total)
        .map(|i| phrase[i % len])
        .collect::<Vec<_>>()
        .join(" ")
}

/// `degrade:invalid_json`: the JSON text made unparseable, one of three ways (seeded): cut mid-way,
/// the first key unquoted, or a trailing comma before the closing brace. A text that is not a JSON
/// object (a schema asking for a bare string or number) gets a stray `}` instead.
fn break_json(text: &str, rng: &mut fastrand::Rng) -> String {
    let value = serde_json::from_str::<Value>(text).ok();
    let Some(object) = value.as_ref().and_then(Value::as_object) else {
        return format!("{text}}}");
    };
    let first_key = object
        .keys()
        .next()
        .and_then(|k| serde_json::to_string(k).ok().map(|quoted| (k, quoted)));
    let ways = if first_key.is_some() { 3 } else { 1 };
    match rng.usize(..ways) {
        1 => {
            // The first key comes first in the text: only `{` and whitespace precede it.
            if let Some((key, quoted)) = first_key
                && let Some(at) = text.find(&format!("{quoted}:"))
            {
                return format!("{}{key}{}", &text[..at], &text[at + quoted.len()..]);
            }
            cut_json(text, rng)
        }
        2 => match text.trim_end().strip_suffix('}') {
            Some(body) => {
                let inner = body.trim_end();
                format!("{inner},{}}}", &body[inner.len()..])
            }
            None => cut_json(text, rng),
        },
        _ => cut_json(text, rng),
    }
}

/// A JSON object's text cut after half to all but one of its characters: it never closes.
fn cut_json(text: &str, rng: &mut fastrand::Rng) -> String {
    let chars: Vec<char> = text.trim_end().chars().collect();
    let len = chars.len();
    let keep = if len < 2 {
        len.saturating_sub(1)
    } else {
        rng.usize(len / 2..len)
    };
    chars[..keep].iter().collect()
}

/// An example value for a JSON schema: required properties only; strings "example", numbers 1,
/// booleans true, enums their first value, objects and arrays recursively.
pub(crate) fn example_value(schema: &Value, depth: usize) -> Value {
    if depth > SCHEMA_DEPTH {
        return Value::Null;
    }
    let Some(obj) = schema.as_object() else {
        return Value::Null;
    };
    if let Some(c) = obj.get("const") {
        return c.clone();
    }
    if let Some(first) = obj
        .get("enum")
        .and_then(Value::as_array)
        .and_then(|e| e.first())
    {
        return first.clone();
    }
    for key in ["anyOf", "oneOf", "allOf", "any_of"] {
        if let Some(first) = obj
            .get(key)
            .and_then(Value::as_array)
            .and_then(|v| v.first())
        {
            return example_value(first, depth + 1);
        }
    }
    let ty = match obj.get("type") {
        Some(Value::String(t)) => t.to_ascii_lowercase(),
        Some(Value::Array(types)) => types
            .iter()
            .filter_map(Value::as_str)
            .find(|t| !t.eq_ignore_ascii_case("null"))
            .unwrap_or("null")
            .to_ascii_lowercase(),
        _ if obj.contains_key("properties") => "object".to_owned(),
        _ if obj.contains_key("items") => "array".to_owned(),
        _ => "string".to_owned(),
    };
    match ty.as_str() {
        "string" => json!("example"),
        "number" | "integer" => json!(1),
        "boolean" => json!(true),
        "null" => Value::Null,
        "array" => match obj.get("items") {
            Some(items) => Value::Array(vec![example_value(items, depth + 1)]),
            None => Value::Array(Vec::new()),
        },
        _ => {
            let mut out = Map::new();
            let props = obj.get("properties").and_then(Value::as_object);
            let required = obj.get("required").and_then(Value::as_array);
            if let (Some(props), Some(required)) = (props, required) {
                for name in required.iter().filter_map(Value::as_str) {
                    if let Some(prop) = props.get(name) {
                        out.insert(name.to_owned(), example_value(prop, depth + 1));
                    }
                }
            }
            Value::Object(out)
        }
    }
}

/// Splits a tool call's JSON arguments into a few fragments for streaming (at char boundaries).
pub(crate) fn json_fragments(json: &str) -> Vec<String> {
    let chars: Vec<char> = json.chars().collect();
    let size = chars.len().div_ceil(4).max(1);
    chars.chunks(size).map(|c| c.iter().collect()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn prompt(user: &str) -> Prompt {
        Prompt {
            model: "m".into(),
            messages: vec![Message::text(Role::User, user.into())],
            input_chars: user.chars().count(),
            last_user_text: Some(user.into()),
            turn_text: user.into(),
            ..Prompt::default()
        }
    }

    #[test]
    fn same_request_same_answer() {
        let a = answer(7, &prompt("hello there"), None, None);
        let b = answer(7, &prompt("hello there"), None, None);
        assert_eq!(a, b);
        let c = answer(8, &prompt("hello there"), None, None);
        assert_ne!(a.text(), c.text());
        let d = answer(7, &prompt("hello again"), None, None);
        assert_ne!(a.text(), d.text());
        assert!(
            (MIN_TOKENS as u64..=MAX_TOKENS as u64).contains(&a.output_tokens),
            "{}",
            a.output_tokens
        );
        assert_eq!(a.finish, Finish::EndTurn);
        assert!(a.text().ends_with('.'));
    }

    fn conversation(turns: &[(Role, &str)]) -> Prompt {
        let messages: Vec<Message> = turns
            .iter()
            .map(|(role, text)| Message::text(*role, (*text).to_owned()))
            .collect();
        let last_user_text = turns
            .iter()
            .rev()
            .find(|(role, _)| *role == Role::User)
            .map(|(_, text)| (*text).to_owned());
        Prompt {
            model: "m".into(),
            messages,
            input_chars: 10,
            last_user_text,
            ..Prompt::default()
        }
    }

    #[test]
    fn the_logical_conversation_seeds_the_answer() {
        let a = conversation(&[(Role::User, "hello there")]);
        // The model and whitespace do not count; system prompts are one, wherever they are.
        let b = Prompt {
            model: "other".into(),
            messages: vec![Message::new(
                Role::User,
                vec![Part::Text("hello".into()), Part::Text(" there ".into())],
            )],
            ..a.clone()
        };
        assert_eq!(a.conversation_key(), b.conversation_key());
        assert_eq!(answer(3, &a, None, None), answer(3, &b, None, None));
        let split = Prompt {
            system: vec!["Be brief.".into()],
            ..a.clone()
        };
        let mut listed = a.clone();
        listed
            .messages
            .insert(0, Message::text(Role::System, "Be\nbrief.".into()));
        assert_eq!(split.conversation_key(), listed.conversation_key());
        assert_ne!(split.conversation_key(), a.conversation_key());
        // Consecutive messages of one role are one turn; empty ones and non-messages say nothing.
        let merged = conversation(&[(Role::User, "hello"), (Role::User, "there")]);
        let mut padded = merged.clone();
        padded.messages.push(Message::new(Role::Other, Vec::new()));
        padded
            .messages
            .insert(1, Message::text(Role::Assistant, String::new()));
        assert_eq!(merged.conversation_key(), a.conversation_key());
        assert_eq!(padded.conversation_key(), a.conversation_key());
        // Roles, calls and results count.
        let asked = conversation(&[(Role::Assistant, "hello there")]);
        assert_ne!(asked.conversation_key(), a.conversation_key());
        let call = |arguments: Value| {
            let mut p = a.clone();
            p.messages.push(Message::new(
                Role::Assistant,
                vec![Part::Call {
                    name: "f".into(),
                    arguments,
                }],
            ));
            p.messages
                .push(Message::new(Role::User, vec![Part::Result("ok".into())]));
            p.conversation_key()
        };
        assert_eq!(call(json!({"a": 1})), call(json!({"a": 1})));
        assert_ne!(call(json!({"a": 1})), call(json!({"a": 2})));
        assert_ne!(call(json!({"a": 1})), a.conversation_key());
    }

    #[test]
    fn continuations_are_recognised() {
        let prefill = conversation(&[(Role::User, "hi"), (Role::Assistant, "Some")]);
        assert_eq!(
            prefill.continuation(true),
            Some(Continuation {
                kind: ContinueKind::Prefill,
                cut: 1,
                delivered: "Some".into()
            })
        );
        assert_eq!(prefill.continuation(false), None);
        assert!(prefill.ends_with_assistant());
        let asked = conversation(&[
            (Role::User, "hi"),
            (Role::Assistant, "Some"),
            (Role::System, "reminder"),
            (Role::User, "Please CONTINUE exactly where you stopped."),
        ]);
        let expected = Some(Continuation {
            kind: ContinueKind::Instruction,
            cut: 1,
            delivered: "Some".into(),
        });
        assert_eq!(asked.continuation(true), expected);
        assert_eq!(asked.continuation(false), expected);
        assert!(!asked.ends_with_assistant());
        // No `continue`, or a tool call where the text should be: a conversation like any other.
        let plain = conversation(&[
            (Role::User, "hi"),
            (Role::Assistant, "Some"),
            (Role::User, "go on"),
        ]);
        assert_eq!(plain.continuation(true), None);
        let mut called = asked.clone();
        called.messages[1].parts.push(Part::Call {
            name: "f".into(),
            arguments: json!({}),
        });
        assert_eq!(called.continuation(true), None);
        let mut result = asked.clone();
        result.messages[3].parts.push(Part::Result("x".into()));
        assert_eq!(result.continuation(true), None);
        assert_eq!(
            conversation(&[(Role::User, "continue")]).continuation(true),
            None
        );
    }

    /// The pieces of `answer`'s text.
    fn pieces(answer: &Answer) -> Vec<String> {
        match &answer.content {
            Content::Text(pieces) => pieces.clone(),
            Content::ToolCall { .. } => Vec::new(),
        }
    }

    #[test]
    fn a_continuation_says_exactly_the_rest() {
        let base = conversation(&[(Role::User, "tell me something")]);
        let full = answer(5, &base, None, None);
        let all = pieces(&full);
        assert!(all.len() >= MIN_TOKENS);
        for kind in [ContinueKind::Prefill, ContinueKind::Instruction] {
            for n in [0, 1, 5, all.len() - 1] {
                let continuation = Continuation {
                    kind,
                    cut: 1,
                    delivered: all[..n].concat(),
                };
                let mut prompt = base.clone();
                prompt.input_chars = 400;
                let rest = continue_answer(5, &prompt, &base, &continuation, None, None).unwrap();
                assert_eq!(pieces(&rest), all[n..].to_vec(), "{kind:?} {n}");
                assert_eq!(rest.output_tokens as usize, all.len() - n);
                assert_eq!(rest.input_tokens, 100);
                assert_eq!(rest.finish, Finish::EndTurn);
                // `max_tokens` counts the new tokens only.
                prompt.max_tokens = Some(2);
                let cut = continue_answer(5, &prompt, &base, &continuation, None, None).unwrap();
                let left = all.len() - n;
                assert_eq!(pieces(&cut), all[n..n + left.min(2)].to_vec());
                let finish = if left > 2 {
                    Finish::MaxTokens
                } else {
                    Finish::EndTurn
                };
                assert_eq!(cut.finish, finish);
            }
        }
        // All of it delivered: a prefill gets nothing more, an instruction a new answer.
        let everything = |kind| Continuation {
            kind,
            cut: 1,
            delivered: all.concat(),
        };
        let done = continue_answer(
            5,
            &base,
            &base,
            &everything(ContinueKind::Prefill),
            None,
            None,
        )
        .unwrap();
        assert!(pieces(&done).is_empty() && done.output_tokens == 0);
        assert_eq!(
            continue_answer(
                5,
                &base,
                &base,
                &everything(ContinueKind::Instruction),
                None,
                None
            ),
            None
        );
        // Text that is not the answer's start: a prefill gets the answer, an instruction nothing.
        let other = |kind| Continuation {
            kind,
            cut: 1,
            delivered: "Unrelated words".into(),
        };
        assert_eq!(
            continue_answer(5, &base, &base, &other(ContinueKind::Prefill), None, None),
            Some(full.clone())
        );
        assert_eq!(
            continue_answer(
                5,
                &base,
                &base,
                &other(ContinueKind::Instruction),
                None,
                None
            ),
            None
        );
        // The answer ended by a stop sequence ends the same way after a continuation.
        let mut stopped = base.clone();
        stopped.stop_sequences = vec![all[4].trim().to_owned()];
        let stop_full = answer(5, &stopped, None, None);
        let stop_pieces = pieces(&stop_full);
        let rest = continue_answer(
            5,
            &stopped,
            &stopped,
            &Continuation {
                kind: ContinueKind::Instruction,
                cut: 1,
                delivered: stop_pieces[..1].concat(),
            },
            None,
            None,
        )
        .unwrap();
        assert_eq!(pieces(&rest), stop_pieces[1..].to_vec());
        assert_eq!(rest.finish, stop_full.finish);
        assert!(matches!(rest.finish, Finish::StopSequence(_)));
    }

    #[test]
    fn a_tool_call_is_made_again() {
        let mut base = conversation(&[(Role::User, "go")]);
        base.tools = vec![Tool {
            name: "f".into(),
            schema: json!({"type": "object", "properties": {"q": {"type": "string"}}, "required": ["q"]}),
        }];
        base.tool_choice = ToolChoice::Required;
        let full = answer(0, &base, None, None);
        assert!(matches!(full.content, Content::ToolCall { .. }));
        for kind in [ContinueKind::Prefill, ContinueKind::Instruction] {
            let again = |delivered: &str| {
                let continuation = Continuation {
                    kind,
                    cut: 1,
                    delivered: delivered.into(),
                };
                continue_answer(0, &base, &base, &continuation, None, None)
            };
            assert_eq!(again(""), Some(full.clone()));
            let other = again("Let me");
            match kind {
                ContinueKind::Prefill => assert_eq!(other, Some(full.clone())),
                ContinueKind::Instruction => assert_eq!(other, None),
            }
        }
    }

    #[test]
    fn echo_is_verbatim() {
        let a = answer(0, &prompt("echo héllo  wörld 你好 🎉"), None, None);
        assert_eq!(a.text(), "héllo  wörld 你好 🎉");
        assert_eq!(a.output_tokens, 4);
    }

    #[test]
    fn max_tokens_caps_the_answer() {
        let mut p = prompt("tell me a story");
        p.max_tokens = Some(5);
        let a = answer(0, &p, None, None);
        assert_eq!(a.output_tokens, 5);
        assert_eq!(a.finish, Finish::MaxTokens);
    }

    #[test]
    fn stop_sequence_cuts_before_it() {
        let mut p = prompt("echo one two three four");
        p.stop_sequences = vec!["four".into(), "three".into()];
        let a = answer(0, &p, None, None);
        assert_eq!(a.text(), "one two ");
        assert_eq!(a.finish, Finish::StopSequence("three".into()));
    }

    #[test]
    fn tool_choice_and_mentions() {
        let weather = Tool {
            name: "get_weather".into(),
            schema: json!({"type": "object"}),
        };
        let time = Tool {
            name: "get_time".into(),
            schema: json!({"type": "object"}),
        };
        let mut p = prompt("what is the weather?");
        p.tools = vec![weather.clone(), time.clone()];
        assert!(matches!(
            answer(0, &p, None, None).content,
            Content::Text(_)
        ));
        p.last_user_text = Some("please call get_time".into());
        assert!(
            matches!(answer(0, &p, None, None).content, Content::ToolCall { ref name, .. } if name == "get_time")
        );
        p.tool_choice = ToolChoice::None;
        assert!(matches!(
            answer(0, &p, None, None).content,
            Content::Text(_)
        ));
        p.tool_choice = ToolChoice::Required;
        p.last_user_text = Some("hi".into());
        let a = answer(0, &p, None, None);
        assert!(matches!(a.content, Content::ToolCall { ref name, .. } if name == "get_weather"));
        assert_eq!(a.finish, Finish::ToolUse);
        p.tool_choice = ToolChoice::Named("get_time".into());
        assert!(
            matches!(answer(0, &p, None, None).content, Content::ToolCall { ref name, .. } if name == "get_time")
        );
        p.tool_result = Some("22 degrees and sunny".into());
        assert_eq!(
            answer(0, &p, None, None).text(),
            "Tool result received: 22 degrees and sunny"
        );
    }

    #[test]
    fn directive_parsing() {
        let check = |text: &str, expected: Option<(&str, Value)>| {
            let got = find_directive(text).map(|d| (d.name, d.arguments));
            let expected = expected.map(|(n, a)| (n.to_owned(), a));
            assert_eq!(got, expected, "{text}");
        };
        check(
            r#"please [[ballast-sim:call Bash {"command": "echo ok > out.txt", "description": "write"}]] now"#,
            Some((
                "Bash",
                json!({"command": "echo ok > out.txt", "description": "write"}),
            )),
        );
        check(
            "[[ballast-sim:call get_time]]",
            Some(("get_time", json!({}))),
        );
        check(
            "[[ballast-sim:call  get_time ]]",
            Some(("get_time", json!({}))),
        );
        // `]]` inside the JSON does not end the directive.
        check(
            r#"[[ballast-sim:call f {"a": [[1]], "s": "]]"}]]"#,
            Some(("f", json!({"a": [[1]], "s": "]]"}))),
        );
        check(
            "[[ballast-sim:call f\n{\"x\": 1}\n]]",
            Some(("f", json!({"x": 1}))),
        );
        // Malformed ones are skipped; a later good one still counts.
        check(r#"[[ballast-sim:call f {"x": ]]"#, None);
        check(r#"[[ballast-sim:call f {"x": 1}"#, None);
        check("[[ballast-sim:call ]]", None);
        check("[[ballast-sim:call f [1]]]", None);
        check(
            r#"[[ballast-sim:call f {bad}]] then [[ballast-sim:call g {"y": 2}]]"#,
            Some(("g", json!({"y": 2}))),
        );
        check("no directive here", None);
    }

    #[test]
    fn directive_calls_an_offered_tool_with_exact_arguments() {
        let bash = Tool {
            name: "Bash".into(),
            schema: json!({"type": "object", "properties": {"command": {"type": "string"}}, "required": ["command"]}),
        };
        let read = Tool {
            name: "Read".into(),
            schema: json!({"type": "object"}),
        };
        let mut p = prompt(
            r#"<system-reminder>Bash and Read exist</system-reminder>
Do it: [[ballast-sim:call Bash {"command": "echo hi", "description": "say hi", "extra": [1, 2]}]]"#,
        );
        p.tools = vec![read.clone(), bash.clone()];
        let a = answer(0, &p, None, None);
        assert_eq!(
            a.content,
            Content::ToolCall {
                name: "Bash".into(),
                arguments: json!({"command": "echo hi", "description": "say hi", "extra": [1, 2]}),
            }
        );
        assert_eq!(a.finish, Finish::ToolUse);
        // Forced choice of that tool, or any tool: still the directive's arguments.
        p.tool_choice = ToolChoice::Required;
        assert_eq!(answer(0, &p, None, None).content, a.content);
        p.tool_choice = ToolChoice::Named("Bash".into());
        assert_eq!(answer(0, &p, None, None).content, a.content);
        // Forced choice of another tool wins; `none` never calls.
        p.tool_choice = ToolChoice::Named("Read".into());
        assert!(
            matches!(answer(0, &p, None, None).content, Content::ToolCall { ref name, .. } if name == "Read")
        );
        p.tool_choice = ToolChoice::None;
        assert!(matches!(
            answer(0, &p, None, None).content,
            Content::Text(_)
        ));
        // A tool that is not offered: the usual rules (here: Bash is mentioned by name).
        p.tool_choice = ToolChoice::Auto;
        p.tools = vec![read.clone()];
        assert!(
            matches!(answer(0, &p, None, None).content, Content::ToolCall { ref name, ref arguments } if name == "Read" && *arguments == json!({}))
        );
        p.tools = vec![];
        assert!(matches!(
            answer(0, &p, None, None).content,
            Content::Text(_)
        ));
        // After the tool ran, its result is acknowledged.
        p.tools = vec![bash];
        p.tool_result = Some("hi".into());
        assert_eq!(answer(0, &p, None, None).text(), "Tool result received: hi");
    }

    #[test]
    fn latest_turn_skips_system_and_stops_at_the_model() {
        let items = [
            ("user", "[[ballast-sim:call old]]"),
            ("assistant", "done"),
            ("user", "first"),
            ("system", "ignored"),
            ("user", "second"),
        ];
        let classify = |(role, _): &(&str, &str)| match *role {
            "user" => Turn::User,
            "system" => Turn::Skip,
            _ => Turn::Other,
        };
        let text = |(_, t): &(&str, &str)| (*t).to_owned();
        assert_eq!(latest_turn_text(&items, classify, text), "first\nsecond");
        assert_eq!(latest_turn_text(&items[..2], classify, text), "");
        assert_eq!(
            latest_turn_text(&items[..1], classify, text),
            "[[ballast-sim:call old]]"
        );
    }

    #[test]
    fn structured_output_replaces_text_but_not_echoes() {
        let schema =
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]});
        let mut p = prompt("give me json");
        p.json_output = Some(JsonOutput::Schema(schema));
        let a = answer(0, &p, None, None);
        assert_eq!(
            serde_json::from_str::<Value>(&a.text()).unwrap(),
            json!({"a": "example"})
        );
        assert!(a.output_tokens > 1, "indented JSON streams in pieces");
        p.tool_result = Some("done".into());
        assert_eq!(
            serde_json::from_str::<Value>(&answer(0, &p, None, None).text()).unwrap(),
            json!({"a": "example"})
        );
        p.json_output = Some(JsonOutput::Object);
        p.tool_result = None;
        let text = answer(0, &p, None, None).text();
        assert!(serde_json::from_str::<Value>(&text).unwrap()["answer"].is_string());
        p.last_user_text = Some("echo not json".into());
        assert_eq!(answer(0, &p, None, None).text(), "not json");
    }

    #[test]
    fn schema_based_arguments() {
        let schema = json!({
            "type": "object",
            "properties": {
                "city": {"type": "string"},
                "days": {"type": "integer"},
                "metric": {"type": "boolean"},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}}, "required": ["lat"]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "optional": {"type": "string"}
            },
            "required": ["city", "days", "metric", "unit", "where", "tags"]
        });
        assert_eq!(
            example_value(&schema, 0),
            json!({"city": "example", "days": 1, "metric": true, "unit": "celsius", "where": {"lat": 1}, "tags": ["example"]})
        );
        // Gemini's OpenAPI-style upper-case types.
        let gemini =
            json!({"type": "OBJECT", "properties": {"q": {"type": "STRING"}}, "required": ["q"]});
        assert_eq!(example_value(&gemini, 0), json!({"q": "example"}));
        assert_eq!(
            example_value(&json!({"type": ["null", "number"]}), 0),
            json!(1)
        );
    }

    #[test]
    fn corruption_swaps_in_other_script() {
        let a = answer(1, &prompt("write something"), Some(Script::Thai), None);
        assert!(a.corrupted);
        assert!(
            a.text()
                .chars()
                .any(|c| ('\u{0E00}'..='\u{0E7F}').contains(&c)),
            "{}",
            a.text()
        );
        let plain = answer(1, &prompt("write something"), None, None);
        assert_eq!(a.output_tokens, plain.output_tokens);
    }

    /// The shortest period (in words, up to 4) the text's words repeat with, if any.
    fn loop_period(text: &str) -> Option<usize> {
        let words: Vec<&str> = text.split_whitespace().collect();
        (1..=4)
            .find(|&k| words.len() >= 3 * k && (k..words.len()).all(|i| words[i] == words[i - k]))
    }

    #[test]
    fn degrade_empty_says_nothing_and_ends_naturally() {
        let mut p = prompt("tell me something");
        p.stop_sequences = vec!["the".into()];
        for seed in 0..20 {
            let a = answer(seed, &p, Some(Script::Thai), Some(DegradeMode::Empty));
            assert_eq!(a.content, Content::Text(Vec::new()));
            assert_eq!(a.finish, Finish::EndTurn);
            assert!(EMPTY_OUTPUT_TOKENS.contains(&a.output_tokens));
            assert!(a.degraded && !a.corrupted);
        }
        // Tool calls are left alone.
        p.tools = vec![Tool {
            name: "f".into(),
            schema: json!({"type": "object"}),
        }];
        p.tool_choice = ToolChoice::Required;
        let a = answer(0, &p, None, Some(DegradeMode::Empty));
        assert!(matches!(a.content, Content::ToolCall { .. }) && !a.degraded);
    }

    #[test]
    fn degrade_repeat_loops_a_phrase_for_the_normal_length() {
        for seed in 0..20 {
            let p = prompt("tell me something");
            let normal = answer(seed, &p, None, None);
            let a = answer(seed, &p, None, Some(DegradeMode::Repeat));
            assert!(a.degraded);
            assert_eq!(a.finish, Finish::EndTurn);
            assert!(loop_period(&a.text()).is_some(), "{}", a.text());
            assert_eq!(
                a.text().split_whitespace().count(),
                normal.text().split_whitespace().count().max(12),
                "{}",
                a.text()
            );
        }
        // A short echo still loops a few times.
        let a = answer(0, &prompt("echo hi"), None, Some(DegradeMode::Repeat));
        assert!(loop_period(&a.text()).is_some(), "{}", a.text());
        // Under structured output, the loop is inside valid JSON.
        let mut p = prompt("tell me something");
        p.json_output = Some(JsonOutput::Object);
        let value: Value =
            serde_json::from_str(&answer(3, &p, None, Some(DegradeMode::Repeat)).text()).unwrap();
        assert!(loop_period(value["answer"].as_str().unwrap()).is_some());
        p.json_output = Some(JsonOutput::Schema(
            json!({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]}),
        ));
        let value: Value =
            serde_json::from_str(&answer(3, &p, None, Some(DegradeMode::Repeat)).text()).unwrap();
        assert!(loop_period(value["a"].as_str().unwrap()).is_some());
        // A schema with no string to loop in: the normal answer.
        p.json_output = Some(JsonOutput::Schema(
            json!({"type": "object", "properties": {"n": {"type": "integer"}}, "required": ["n"]}),
        ));
        let a = answer(3, &p, None, Some(DegradeMode::Repeat));
        assert_eq!(
            (a.text(), a.degraded),
            ("{\n  \"n\": 1\n}".to_owned(), false)
        );
    }

    #[test]
    fn degrade_short_stops_at_the_token_limit() {
        for seed in 0..20 {
            let a = answer(
                seed,
                &prompt("tell me something"),
                None,
                Some(DegradeMode::Short),
            );
            assert_eq!(a.finish, Finish::MaxTokens);
            assert!(SHORT_TOKENS.contains(&(a.output_tokens as usize)));
            assert_eq!(a.output_tokens as usize, split_pieces(&a.text()).len());
            assert!(a.degraded);
        }
    }

    #[test]
    fn degrade_invalid_json_breaks_only_json_answers() {
        let schemas = [
            JsonOutput::Object,
            JsonOutput::Schema(
                json!({"type": "object", "properties": {"a": {"type": "string"}, "b": {"type": "integer"}}, "required": ["a", "b"]}),
            ),
            JsonOutput::Schema(json!({"type": "object"})),
            JsonOutput::Schema(json!({"type": "string"})),
            JsonOutput::Schema(json!({"type": "integer"})),
        ];
        let mut seen = std::collections::HashSet::new();
        for format in schemas {
            let mut p = prompt("give me json");
            p.json_output = Some(format.clone());
            for seed in 0..40 {
                let clean = answer(seed, &p, None, None);
                assert!(serde_json::from_str::<Value>(&clean.text()).is_ok());
                let a = answer(seed, &p, None, Some(DegradeMode::InvalidJson));
                let text = a.text();
                assert!(
                    serde_json::from_str::<Value>(&text).is_err(),
                    "{format:?} {seed}: {text}"
                );
                assert_eq!(a.finish, Finish::EndTurn);
                assert!(a.degraded);
                if text.trim_end().ends_with(",\n}") {
                    seen.insert("trailing comma");
                } else if text.contains("\n  answer:") {
                    seen.insert("unquoted key");
                } else if !text.trim_end().ends_with('}') {
                    seen.insert("cut");
                }
            }
        }
        assert_eq!(seen.len(), 3, "{seen:?}");
        // Without structured output (or for an echo), the answer is the normal one.
        let p = prompt("tell me something");
        let a = answer(0, &p, None, Some(DegradeMode::InvalidJson));
        assert_eq!(a, answer(0, &p, None, None));
        let mut p = prompt("echo plain");
        p.json_output = Some(JsonOutput::Object);
        let a = answer(0, &p, None, Some(DegradeMode::InvalidJson));
        assert_eq!((a.text().as_str(), a.degraded), ("plain", false));
    }

    #[test]
    fn pieces_concatenate_to_text() {
        for text in ["", "a", " a b  c ", "x\ny"] {
            assert_eq!(split_pieces(text).concat(), text);
        }
        assert_eq!(split_pieces("foo bar "), vec!["foo", " bar "]);
        let frags = json_fragments(r#"{"city":"Zürich","n":1}"#);
        assert!(frags.len() > 1);
        assert_eq!(frags.concat(), r#"{"city":"Zürich","n":1}"#);
    }

    #[test]
    fn token_estimate() {
        assert_eq!(estimate_tokens(0), 1);
        assert_eq!(estimate_tokens(9), 3);
        assert_eq!(text_chars(&json!([{"role": "user", "content": "abcd"}])), 8);
    }
}
