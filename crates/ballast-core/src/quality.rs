//! Per-answer output-quality scanners: a looping answer ([`Repetition`]), an answer that should be
//! JSON and is not ([`JsonCheck`], [`asks_for_json`]).
//!
//! They read an answer's text in passing, delta by delta as it streams (a delta may end anywhere a
//! `&str` can end, in the middle of a word or of a JSON token), and keep no text: only counts, hashes
//! and a few hundred bytes of fixed state, whatever the answer's length. They run for every streamed
//! chunk, so a call allocates nothing, does O(1) work per byte, and ASCII takes the short way.

#![warn(clippy::indexing_slicing, clippy::arithmetic_side_effects)]

use std::borrow::Cow;

use serde::Deserialize;

use crate::api::ApiFormat;
use crate::script::{Script, script_of};

// ---------------------------------------------------------------------------------------------------
// Repetition
// ---------------------------------------------------------------------------------------------------

/// 64-bit words in the seen-set: 4,096 bits, 512 bytes.
const SEEN_WORDS: usize = 64;
/// 3-grams per window; the seen-set is cleared at the end of each.
const WINDOW: u32 = 1024;
/// Fewer 3-grams than this are too few to judge.
const MIN_NGRAMS: u32 = 32;
/// The repeated share, in percent, at which a window is degenerate.
const REPEATED_PERCENT: u64 = 50;

/// The FxHash multiplier (rustc-hash 2).
const FX: u64 = 0xf135_7aea_2e62_a9c5;

#[inline]
fn fx(h: u64, x: u64) -> u64 {
    (h.rotate_left(5) ^ x).wrapping_mul(FX)
}

/// Detects a degenerate, looping answer — a broken sampler or a model stuck in a loop repeating the
/// same words until `max_tokens` — from the share of word 3-grams it has already seen.
///
/// **Words.** A word is a run of non-whitespace, ASCII letters folded to lower case; punctuation stays
/// part of its word (`foo(1);` and `foo(2);` differ, which keeps ordinary code from looking like a
/// loop). A run with no letter or digit (`|`, `-`, `=`, `}`, `—`, an emoji) is markup or layout, not
/// a word, and is skipped: tables, bullets and braces would otherwise repeat on every line. Every
/// character of a script written without spaces (Han, Hiragana and Katakana, Thai, Lao, Khmer,
/// Myanmar) is a word by itself, so a looping Chinese answer loops in 3-grams of characters.
/// A word split between two deltas is one word: the word in progress is carried as its hash, and
/// counts once whitespace (or an unspaced character) ends it.
///
/// **Counting.** Each 3-gram's hash tests-and-sets one bit of a 4,096-bit set; a bit already set is a
/// 3-gram seen before. A bitset errs one way only: a new 3-gram whose bit another one set counts as
/// repeated. With `k` distinct 3-grams in `m = 4096` bits that chance is `1 - e^(-k/m)` — 22% at
/// 1,024 and 62% at 4,000, so one set over a 5,000-word ordinary answer would call half of it
/// repeated. The set is therefore cleared every 1,024 3-grams and each window judged alone: the
/// chance of a false repeat rises to 22% by a window's end and averages 11.5% over it (measured:
/// 11.7% on 5,000 words of random text that never truly repeats). A loop that starts late (the
/// usual way: a sane opening, then one sentence until the token limit) still fills the windows after
/// it. A loop whose period is over half a window (~500 words) is missed; that is a
/// regenerated essay, rarely a sampler fault.
///
/// **Threshold.** A window is degenerate when at least half its 3-grams (and at least 32 of them)
/// were seen before in it. The highest share any window reached on the ordinary texts in the tests
/// (bitset false repeats included): English prose 6%, Rust code with a run of near-identical
/// `if let` blocks 10%, Python 2%, a markdown table 11%, a bulleted list 4%, Chinese 5% and
/// Japanese 18% (character 3-grams), 5,000 random words 13%, and Thai — where every letter, vowel
/// sign and tone mark is a word — 32%, the highest. A loop of period `p` words in a window of `n`
/// 3-grams repeats about `(n - p) / n` of them: a passage said three times 67%, a sentence said ten
/// times 90%, `the the the` 99%. Half sits between the two with room on both sides; it is a
/// constant, not a setting, because it measures the text, not the traffic.
#[derive(Clone)]
pub struct Repetition {
    /// The seen-set of 3-gram hashes in the current window.
    seen: [u64; SEEN_WORDS],
    /// The word in progress.
    word: Word,
    /// Hashes of the two words before the next one.
    prev1: u64,
    prev2: u64,
    /// Words seen so far, up to 2: a 3-gram is formed from the third word on.
    words: u8,
    ngrams: u32,
    repeated: u32,
    window_ngrams: u32,
    window_repeated: u32,
    /// A finished window was degenerate.
    flagged: bool,
}

impl Default for Repetition {
    fn default() -> Self {
        Self {
            seen: [0; SEEN_WORDS],
            word: Word::default(),
            prev1: 0,
            prev2: 0,
            words: 0,
            ngrams: 0,
            repeated: 0,
            window_ngrams: 0,
            window_repeated: 0,
            flagged: false,
        }
    }
}

impl std::fmt::Debug for Repetition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The seen-set is 64 numbers of noise; the counts are what a reader wants.
        f.debug_struct("Repetition")
            .field("ngrams", &self.ngrams)
            .field("repeated", &self.repeated)
            .field("window_ngrams", &self.window_ngrams)
            .field("window_repeated", &self.window_repeated)
            .field("flagged", &self.flagged)
            .finish_non_exhaustive()
    }
}

impl Repetition {
    /// Reads the next delta of the answer.
    pub fn feed(&mut self, text: &str) {
        // The word in progress stays in registers through the loop rather than behind `&mut self`
        // (a store and reload per byte on the hash's dependency chain would double the cost).
        let mut w = self.word;
        if text.is_ascii() {
            for &b in text.as_bytes() {
                self.ascii(&mut w, b);
            }
        } else {
            for c in text.chars() {
                if c.is_ascii() {
                    self.ascii(&mut w, c as u8);
                } else {
                    self.other(&mut w, c);
                }
            }
        }
        self.word = w;
    }

    /// Word 3-grams counted so far. The word in progress counts once something ends it, so the
    /// answer's last word, with nothing after it, never does: one 3-gram, of no consequence.
    pub fn ngrams(&self) -> u32 {
        self.ngrams
    }

    /// Of those, 3-grams already seen in their window (including the bitset's false repeats).
    pub fn repeated(&self) -> u32 {
        self.repeated
    }

    /// Whether the answer loops: some window of 3-grams (the current one if it holds at least 32)
    /// had half or more of them repeated. See the type's documentation for why half.
    pub fn repetitive(&self) -> bool {
        self.flagged || degenerate(self.window_repeated, self.window_ngrams)
    }

    #[inline(always)]
    fn ascii(&mut self, w: &mut Word, b: u8) {
        // One table load, one branch (word end) per byte.
        let class = ASCII_CLASS.get(usize::from(b)).copied().unwrap_or(SPACE);
        if class == SPACE {
            self.end_word(w);
        } else {
            w.content |= class == WORD;
            // Rotate-and-xor by 7 packs nine 7-bit characters into 63 bits without loss, in two
            // cycles a byte; the word is mixed properly once, as part of its 3-gram.
            w.hash = w.hash.rotate_left(7) ^ u64::from(b.to_ascii_lowercase());
        }
    }

    fn other(&mut self, w: &mut Word, c: char) {
        if unspaced(c) {
            self.end_word(w);
            self.push_word(fx(0, u64::from(u32::from(c))));
        } else if c.is_whitespace() {
            self.end_word(w);
        } else {
            w.content |= c.is_alphanumeric();
            w.hash = fx(w.hash, u64::from(u32::from(c)));
        }
    }

    #[inline(always)]
    fn end_word(&mut self, w: &mut Word) {
        if w.content {
            self.push_word(w.hash);
        }
        *w = Word::default();
    }

    fn push_word(&mut self, h: u64) {
        if self.words < 2 {
            self.words = self.words.saturating_add(1);
        } else {
            self.ngram(fx(fx(fx(0x9e37_79b9_7f4a_7c15, self.prev1), self.prev2), h));
        }
        self.prev1 = self.prev2;
        self.prev2 = h;
    }

    fn ngram(&mut self, g: u64) {
        // Fx's high bits are its good ones; fold once more before taking the top 12.
        let g = (g ^ (g >> 32)).wrapping_mul(FX);
        let bit = g >> 52;
        let mask = 1u64 << (bit & 63);
        let slot = usize::try_from(bit >> 6).unwrap_or(0);
        if let Some(w) = self.seen.get_mut(slot) {
            // Branch-free: whether a 3-gram is new is as unpredictable as the text.
            let seen = u32::from(*w & mask != 0);
            *w |= mask;
            self.repeated = self.repeated.saturating_add(seen);
            self.window_repeated = self.window_repeated.saturating_add(seen);
        }
        self.ngrams = self.ngrams.saturating_add(1);
        self.window_ngrams = self.window_ngrams.saturating_add(1);
        if self.window_ngrams >= WINDOW {
            self.flagged |= degenerate(self.window_repeated, self.window_ngrams);
            self.seen = [0; SEEN_WORDS];
            self.window_ngrams = 0;
            self.window_repeated = 0;
        }
    }
}

const SPACE: u8 = 0;
const MARK: u8 = 1;
const WORD: u8 = 2;

/// The class of each ASCII byte: whitespace (the same bytes as `char::is_whitespace`, so every
/// path splits words alike), a letter or digit, or anything else. Non-ASCII bytes never look here.
#[allow(
    clippy::indexing_slicing,
    reason = "evaluated at compile time: an index out of range fails the build, not a request"
)]
static ASCII_CLASS: [u8; 256] = {
    let mut t = [MARK; 256];
    let mut b = 0u8;
    while b < 128 {
        t[b as usize] = match b {
            b' ' | b'\t' | b'\n' | b'\r' | b'\x0B' | b'\x0C' => SPACE,
            b if b.is_ascii_alphanumeric() => WORD,
            _ => MARK,
        };
        b += 1;
    }
    t
};

/// A word in progress: its hash so far, and whether it has a letter or digit (a run without one is
/// not counted).
#[derive(Clone, Copy, Debug, Default)]
struct Word {
    hash: u64,
    content: bool,
}

fn degenerate(repeated: u32, ngrams: u32) -> bool {
    ngrams >= MIN_NGRAMS
        && u64::from(repeated).saturating_mul(100)
            >= u64::from(ngrams).saturating_mul(REPEATED_PERCENT)
}

/// Whether `c` belongs to a script written without spaces between words, where each character is
/// counted as a word. Khmer and Myanmar are not in the script table (they are `Other` there).
fn unspaced(c: char) -> bool {
    let u = u32::from(c);
    if u < 0x0E00 {
        return false;
    }
    // Kana and the main Han block first: nearly every such character in practice.
    matches!(u, 0x3040..=0x30FF | 0x4E00..=0x9FFF)
        || matches!(
            script_of(c),
            Some(Script::Han | Script::Kana | Script::Thai | Script::Lao)
        )
        || matches!(u, 0x1000..=0x109F | 0x1780..=0x17FF | 0x19E0..=0x19FF)
}

// ---------------------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------------------

/// Nesting deeper than this is invalid. `serde_json` refuses the 128th level when it parses into any
/// real type (`Value`, a struct) — its default recursion limit — so an answer nested that deep would
/// fail in most clients' Rust parsers (and is no sane answer). Only `IgnoredAny`, which skips
/// iteratively, has no limit; this is the one place the check is stricter than it.
const MAX_DEPTH: u8 = 127;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
enum Json {
    /// A value must come: the start of the text, after `:`, or after `,` in an array.
    #[default]
    Value,
    /// After `[`: a value or `]`.
    ValueOrEnd,
    /// After `{`: a key or `}`.
    KeyOrEnd,
    /// After `,` in an object: a key.
    Key,
    /// After a key: `:`.
    Colon,
    /// A value ended: `,` or the container's closing bracket — or, at depth 0, only whitespace.
    After,
    /// In a string (a key when `JsonCheck::key`).
    Str,
    /// After `\` in a string.
    Escape,
    /// In `\uXXXX`, this many hex digits to go.
    Hex(u8),
    /// `-`: a digit must follow.
    Minus,
    /// A leading `0`: no digit may follow.
    Zero,
    /// Integer digits after a leading 1–9.
    Int,
    /// `.`: a digit must follow.
    Dot,
    Frac,
    /// `e`/`E`: a sign or digit must follow.
    Exp,
    /// The exponent's sign: a digit must follow.
    ExpSign,
    ExpInt,
    /// In `true`, `false` or `null`: `JsonCheck::lit` holds the bytes still due.
    Lit,
    Invalid,
}

/// Whether an answer is exactly one JSON value (RFC 8259, optional surrounding whitespace), checked
/// as it streams, for clients that asked for JSON: the same acceptance as
/// `serde_json::from_str::<serde::de::IgnoredAny>` — lone `\uD800` surrogates included, since the
/// grammar allows them and so does `IgnoredAny` — except that nesting deeper than 127 levels is
/// invalid, as it is when `serde_json` parses into a `Value` or a struct (its recursion limit;
/// `IgnoredAny` alone skips without one).
///
/// It is a byte-level state machine in 48 bytes: the open containers are a bit stack (object or
/// array per level) in one `u128`. A string's plain bytes are skipped in a tight loop; UTF-8 needs
/// no check (a `&str` is valid). Once the text is invalid it stays so and further deltas are not read.
#[derive(Clone, Debug, Default)]
pub struct JsonCheck {
    state: Json,
    /// The string in progress is an object key.
    key: bool,
    depth: u8,
    /// Bit `d` set: the container at depth `d + 1` is an object (else an array).
    objects: u128,
    lit: &'static [u8],
}

impl JsonCheck {
    /// Reads the next delta of the answer.
    pub fn feed(&mut self, text: &str) {
        let mut rest = text.as_bytes();
        while self.state != Json::Invalid {
            if self.state == Json::Str {
                let plain = rest
                    .iter()
                    .position(|&b| b == b'"' || b == b'\\' || b < 0x20)
                    .unwrap_or(rest.len());
                rest = rest.get(plain..).unwrap_or_default();
            }
            let Some((&b, tail)) = rest.split_first() else {
                return;
            };
            self.step(b);
            rest = tail;
        }
    }

    /// Whether the text read so far is exactly one valid JSON value (with optional surrounding
    /// whitespace). An empty text is not.
    pub fn finish(&self) -> bool {
        self.depth == 0
            && matches!(
                self.state,
                Json::After | Json::Zero | Json::Int | Json::Frac | Json::ExpInt
            )
    }

    /// Whether the text is already known to be invalid, whatever follows.
    pub fn failed(&self) -> bool {
        self.state == Json::Invalid
    }

    fn step(&mut self, b: u8) {
        let ws = matches!(b, b' ' | b'\t' | b'\n' | b'\r');
        self.state = match self.state {
            Json::Value if ws => Json::Value,
            Json::Value => self.begin_value(b),
            Json::ValueOrEnd if ws => Json::ValueOrEnd,
            Json::ValueOrEnd if b == b']' => self.close(false),
            Json::ValueOrEnd => self.begin_value(b),
            Json::KeyOrEnd if ws => Json::KeyOrEnd,
            Json::KeyOrEnd if b == b'}' => self.close(true),
            Json::KeyOrEnd | Json::Key if b == b'"' => {
                self.key = true;
                Json::Str
            }
            Json::Key if ws => Json::Key,
            Json::Colon if ws => Json::Colon,
            Json::Colon if b == b':' => Json::Value,
            Json::After => self.after(b, ws),
            Json::Str => match b {
                b'"' if self.key => Json::Colon,
                b'"' => Json::After,
                b'\\' => Json::Escape,
                0..0x20 => Json::Invalid,
                _ => Json::Str,
            },
            Json::Escape => match b {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => Json::Str,
                b'u' => Json::Hex(4),
                _ => Json::Invalid,
            },
            Json::Hex(n) if b.is_ascii_hexdigit() => match n {
                0 | 1 => Json::Str,
                n => Json::Hex(n.saturating_sub(1)),
            },
            Json::Minus => match b {
                b'0' => Json::Zero,
                b'1'..=b'9' => Json::Int,
                _ => Json::Invalid,
            },
            Json::Zero => match b {
                b'.' => Json::Dot,
                b'e' | b'E' => Json::Exp,
                _ => self.after(b, ws),
            },
            Json::Int => match b {
                b'0'..=b'9' => Json::Int,
                b'.' => Json::Dot,
                b'e' | b'E' => Json::Exp,
                _ => self.after(b, ws),
            },
            Json::Dot if b.is_ascii_digit() => Json::Frac,
            Json::Frac => match b {
                b'0'..=b'9' => Json::Frac,
                b'e' | b'E' => Json::Exp,
                _ => self.after(b, ws),
            },
            Json::Exp if b == b'+' || b == b'-' => Json::ExpSign,
            Json::Exp | Json::ExpSign if b.is_ascii_digit() => Json::ExpInt,
            Json::ExpInt if b.is_ascii_digit() => Json::ExpInt,
            Json::ExpInt => self.after(b, ws),
            Json::Lit => match self.lit.split_first() {
                Some((&want, rest)) if want == b => {
                    self.lit = rest;
                    if rest.is_empty() {
                        Json::After
                    } else {
                        Json::Lit
                    }
                }
                _ => Json::Invalid,
            },
            _ => Json::Invalid,
        };
    }

    /// The first byte of a value.
    fn begin_value(&mut self, b: u8) -> Json {
        match b {
            b'{' => self.open(true),
            b'[' => self.open(false),
            b'"' => {
                self.key = false;
                Json::Str
            }
            b'-' => Json::Minus,
            b'0' => Json::Zero,
            b'1'..=b'9' => Json::Int,
            b't' => self.literal(b"rue"),
            b'f' => self.literal(b"alse"),
            b'n' => self.literal(b"ull"),
            _ => Json::Invalid,
        }
    }

    fn literal(&mut self, rest: &'static [u8]) -> Json {
        self.lit = rest;
        Json::Lit
    }

    /// A byte after a complete value (or one that ends a number).
    fn after(&mut self, b: u8, ws: bool) -> Json {
        if ws {
            return Json::After;
        }
        if self.depth == 0 {
            // Anything but whitespace after the top-level value is a second value or garbage.
            return Json::Invalid;
        }
        let in_object = self.top_is_object();
        match b {
            b',' if in_object => Json::Key,
            b',' => Json::Value,
            b'}' => self.close(true),
            b']' => self.close(false),
            _ => Json::Invalid,
        }
    }

    fn open(&mut self, object: bool) -> Json {
        if self.depth >= MAX_DEPTH {
            return Json::Invalid;
        }
        let bit = 1u128 << self.depth;
        if object {
            self.objects |= bit;
        } else {
            self.objects &= !bit;
        }
        self.depth = self.depth.saturating_add(1);
        if object {
            Json::KeyOrEnd
        } else {
            Json::ValueOrEnd
        }
    }

    fn close(&mut self, object: bool) -> Json {
        if self.depth == 0 || self.top_is_object() != object {
            return Json::Invalid;
        }
        self.depth = self.depth.saturating_sub(1);
        Json::After
    }

    fn top_is_object(&self) -> bool {
        let top = u32::from(self.depth.saturating_sub(1));
        self.objects.checked_shr(top).is_some_and(|o| o & 1 == 1)
    }
}

// ---------------------------------------------------------------------------------------------------
// Does the request ask for JSON?
// ---------------------------------------------------------------------------------------------------

/// Whether a client's request asks for a JSON answer, in its API's own terms:
///
/// - OpenAI Chat Completions: `response_format.type` is `json_object` or `json_schema`;
/// - OpenAI Responses: `text.format.type` is `json_object` or `json_schema`;
/// - Gemini: `generationConfig.responseMimeType` is `application/json` (with or without
///   `responseSchema` / `responseJsonSchema`; snake_case spellings too, as the API accepts them);
/// - Anthropic Messages: `output_config.format.type` is `json_schema`, or the deprecated top-level
///   `output_format.type` is.
///
/// It runs on every request, so it first looks for the telltale string (`json_object`,
/// `json_schema`, `application/json` or its `application\/json` spelling) with a vectorised
/// substring search that allocates nothing; almost every request stops there. Only when one is
/// present is the body parsed — into just the fields above, serde skipping the rest — because the
/// string may as well be in the prompt. A telltale spelled with `\u` escapes is not recognised; no
/// SDK writes one.
pub fn asks_for_json(format: ApiFormat, body: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(body) else {
        return false;
    };
    let schema_or_object = || text.contains("json_schema") || text.contains("json_object");
    match format {
        ApiFormat::OpenAiChat => {
            schema_or_object()
                && serde_json::from_str::<ChatAsk<'_>>(text)
                    .is_ok_and(|r| r.response_format.is_some_and(|f| f.is_json()))
        }
        ApiFormat::OpenAiResponses => {
            schema_or_object()
                && serde_json::from_str::<ResponsesAsk<'_>>(text)
                    .is_ok_and(|r| r.text.and_then(|t| t.format).is_some_and(|f| f.is_json()))
        }
        ApiFormat::AnthropicMessages => {
            text.contains("json_schema")
                && serde_json::from_str::<AnthropicAsk<'_>>(text).is_ok_and(|r| {
                    let schema = |f: Option<TypeField<'_>>| {
                        f.is_some_and(|f| f.kind.as_deref() == Some("json_schema"))
                    };
                    schema(r.output_config.and_then(|c| c.format)) || schema(r.output_format)
                })
        }
        ApiFormat::Gemini => {
            (text.contains("application/json") || text.contains("application\\/json"))
                && serde_json::from_str::<GeminiAsk<'_>>(text).is_ok_and(|r| {
                    r.generation_config
                        .and_then(|c| c.response_mime_type)
                        .is_some_and(|m| m == "application/json")
                })
        }
    }
}

/// `{"type": …}`, the shape of every format selector above. Borrowed unless escaped.
#[derive(Deserialize)]
struct TypeField<'a> {
    #[serde(rename = "type", borrow)]
    kind: Option<Cow<'a, str>>,
}

impl TypeField<'_> {
    fn is_json(&self) -> bool {
        matches!(self.kind.as_deref(), Some("json_object" | "json_schema"))
    }
}

#[derive(Deserialize)]
struct ChatAsk<'a> {
    #[serde(borrow)]
    response_format: Option<TypeField<'a>>,
}

#[derive(Deserialize)]
struct ResponsesAsk<'a> {
    #[serde(borrow)]
    text: Option<ResponsesText<'a>>,
}

#[derive(Deserialize)]
struct ResponsesText<'a> {
    #[serde(borrow)]
    format: Option<TypeField<'a>>,
}

#[derive(Deserialize)]
struct AnthropicAsk<'a> {
    #[serde(borrow)]
    output_config: Option<AnthropicOutputConfig<'a>>,
    #[serde(borrow)]
    output_format: Option<TypeField<'a>>,
}

#[derive(Deserialize)]
struct AnthropicOutputConfig<'a> {
    #[serde(borrow)]
    format: Option<TypeField<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiAsk<'a> {
    #[serde(alias = "generation_config", borrow)]
    generation_config: Option<GeminiGenerationConfig<'a>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct GeminiGenerationConfig<'a> {
    #[serde(alias = "response_mime_type", borrow)]
    response_mime_type: Option<Cow<'a, str>>,
}

#[cfg(test)]
mod tests;
