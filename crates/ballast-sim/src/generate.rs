//! Deterministic answers: a provider-neutral prompt in, text or a tool call out, with token counts.
//!
//! Every API module turns its request into a [`Prompt`] and renders the [`Answer`] in its own wire
//! format, so the conventions (echo, tool calls, the `[[ballast-sim:call NAME {ARGS}]]` directive, tool
//! results, stop sequences, `max_tokens`) behave the same on every API.

use serde_json::{Map, Value, json};

use crate::faults::Script;
use crate::words::{ENGLISH, script_words};

/// Generated answers have between these many tokens (before `max_tokens` and stop sequences).
const MIN_TOKENS: usize = 12;
const MAX_TOKENS: usize = 60;
/// How much of a tool result the acknowledgement quotes.
const TOOL_RESULT_QUOTE_CHARS: usize = 100;
/// Recursion limit when building tool arguments from a schema.
const SCHEMA_DEPTH: usize = 8;

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

/// A request reduced to what answer generation needs.
#[derive(Clone, Debug, Default)]
pub(crate) struct Prompt {
    pub model: String,
    pub stream: bool,
    /// Serialized conversation (system + messages): seeds the answer.
    pub conversation: String,
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

/// A structured-output request (OpenAI Responses `text.format`).
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

/// Answers a prompt. Same seed and prompt, same answer; `corrupt` swaps words into another script.
pub(crate) fn answer(seed: u64, prompt: &Prompt, corrupt: Option<Script>) -> Answer {
    let hash = stable_hash(&[&prompt.model, &prompt.conversation]);
    let mut rng = fastrand::Rng::with_seed(seed ^ hash);
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
        return text_answer(echoed.to_owned(), prompt, input_tokens, corrupt, &mut rng);
    } else if let Some(tool) = pick_tool(prompt) {
        return tool_call(tool, input_tokens);
    } else {
        generated_text(&mut rng)
    };
    let text = match &prompt.json_output {
        Some(format) => json_text(format, text),
        None => text,
    };
    text_answer(text, prompt, input_tokens, corrupt, &mut rng)
}

/// A text answer: `max_tokens` and stop sequences applied, then the `corrupt` fault.
fn text_answer(
    text: String,
    prompt: &Prompt,
    input_tokens: u64,
    corrupt: Option<Script>,
    rng: &mut fastrand::Rng,
) -> Answer {
    let (mut pieces, finish) = limit(&text, prompt.max_tokens, &prompt.stop_sequences);
    let corrupted = match corrupt {
        Some(script) => corrupt_pieces(&mut pieces, script, rng),
        None => false,
    };
    let output_tokens = pieces.len() as u64;
    Answer {
        content: Content::Text(pieces),
        finish,
        input_tokens,
        output_tokens,
        corrupted,
        preamble: Vec::new(),
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

/// A text answer as structured output: indented JSON, so it streams in several pieces.
fn json_text(format: &JsonOutput, text: String) -> String {
    let value = match format {
        JsonOutput::Object => json!({ "answer": text }),
        JsonOutput::Schema(schema) => example_value(schema, 0),
    };
    serde_json::to_string_pretty(&value).unwrap_or_else(|_| value.to_string())
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
            conversation: user.into(),
            input_chars: user.chars().count(),
            last_user_text: Some(user.into()),
            turn_text: user.into(),
            ..Prompt::default()
        }
    }

    #[test]
    fn same_request_same_answer() {
        let a = answer(7, &prompt("hello there"), None);
        let b = answer(7, &prompt("hello there"), None);
        assert_eq!(a, b);
        let c = answer(8, &prompt("hello there"), None);
        assert_ne!(a.text(), c.text());
        let d = answer(7, &prompt("hello again"), None);
        assert_ne!(a.text(), d.text());
        assert!(
            (MIN_TOKENS as u64..=MAX_TOKENS as u64).contains(&a.output_tokens),
            "{}",
            a.output_tokens
        );
        assert_eq!(a.finish, Finish::EndTurn);
        assert!(a.text().ends_with('.'));
    }

    #[test]
    fn echo_is_verbatim() {
        let a = answer(0, &prompt("echo héllo  wörld 你好 🎉"), None);
        assert_eq!(a.text(), "héllo  wörld 你好 🎉");
        assert_eq!(a.output_tokens, 4);
    }

    #[test]
    fn max_tokens_caps_the_answer() {
        let mut p = prompt("tell me a story");
        p.max_tokens = Some(5);
        let a = answer(0, &p, None);
        assert_eq!(a.output_tokens, 5);
        assert_eq!(a.finish, Finish::MaxTokens);
    }

    #[test]
    fn stop_sequence_cuts_before_it() {
        let mut p = prompt("echo one two three four");
        p.stop_sequences = vec!["four".into(), "three".into()];
        let a = answer(0, &p, None);
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
        assert!(matches!(answer(0, &p, None).content, Content::Text(_)));
        p.last_user_text = Some("please call get_time".into());
        assert!(
            matches!(answer(0, &p, None).content, Content::ToolCall { ref name, .. } if name == "get_time")
        );
        p.tool_choice = ToolChoice::None;
        assert!(matches!(answer(0, &p, None).content, Content::Text(_)));
        p.tool_choice = ToolChoice::Required;
        p.last_user_text = Some("hi".into());
        let a = answer(0, &p, None);
        assert!(matches!(a.content, Content::ToolCall { ref name, .. } if name == "get_weather"));
        assert_eq!(a.finish, Finish::ToolUse);
        p.tool_choice = ToolChoice::Named("get_time".into());
        assert!(
            matches!(answer(0, &p, None).content, Content::ToolCall { ref name, .. } if name == "get_time")
        );
        p.tool_result = Some("22 degrees and sunny".into());
        assert_eq!(
            answer(0, &p, None).text(),
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
        let a = answer(0, &p, None);
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
        assert_eq!(answer(0, &p, None).content, a.content);
        p.tool_choice = ToolChoice::Named("Bash".into());
        assert_eq!(answer(0, &p, None).content, a.content);
        // Forced choice of another tool wins; `none` never calls.
        p.tool_choice = ToolChoice::Named("Read".into());
        assert!(
            matches!(answer(0, &p, None).content, Content::ToolCall { ref name, .. } if name == "Read")
        );
        p.tool_choice = ToolChoice::None;
        assert!(matches!(answer(0, &p, None).content, Content::Text(_)));
        // A tool that is not offered: the usual rules (here: Bash is mentioned by name).
        p.tool_choice = ToolChoice::Auto;
        p.tools = vec![read.clone()];
        assert!(
            matches!(answer(0, &p, None).content, Content::ToolCall { ref name, ref arguments } if name == "Read" && *arguments == json!({}))
        );
        p.tools = vec![];
        assert!(matches!(answer(0, &p, None).content, Content::Text(_)));
        // After the tool ran, its result is acknowledged.
        p.tools = vec![bash];
        p.tool_result = Some("hi".into());
        assert_eq!(answer(0, &p, None).text(), "Tool result received: hi");
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
        let a = answer(0, &p, None);
        assert_eq!(
            serde_json::from_str::<Value>(&a.text()).unwrap(),
            json!({"a": "example"})
        );
        assert!(a.output_tokens > 1, "indented JSON streams in pieces");
        p.tool_result = Some("done".into());
        assert_eq!(
            serde_json::from_str::<Value>(&answer(0, &p, None).text()).unwrap(),
            json!({"a": "example"})
        );
        p.json_output = Some(JsonOutput::Object);
        p.tool_result = None;
        let text = answer(0, &p, None).text();
        assert!(serde_json::from_str::<Value>(&text).unwrap()["answer"].is_string());
        p.last_user_text = Some("echo not json".into());
        assert_eq!(answer(0, &p, None).text(), "not json");
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
        let a = answer(1, &prompt("write something"), Some(Script::Thai));
        assert!(a.corrupted);
        assert!(
            a.text()
                .chars()
                .any(|c| ('\u{0E00}'..='\u{0E7F}').contains(&c)),
            "{}",
            a.text()
        );
        let plain = answer(1, &prompt("write something"), None);
        assert_eq!(a.output_tokens, plain.output_tokens);
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
