//! Which writing systems a text uses, for the wrong-script check: characters of a script the prompt
//! does not use (Thai in an answer to an English prompt) are counted as they stream past, and only
//! the counts are kept. ASCII is skipped at once (it is always allowed); other characters go through
//! a small range table. Digits, punctuation, symbols and emoji belong to no script.

/// A writing system the check tells apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Script {
    Latin = 0,
    Greek,
    Cyrillic,
    Armenian,
    Hebrew,
    Arabic,
    Indic,
    Thai,
    Lao,
    Georgian,
    Hangul,
    Kana,
    Han,
    Ethiopic,
    Other,
}

impl Script {
    /// Every script, in order (`Script::ALL[s as usize] == s`).
    pub const ALL: [Script; 15] = [
        Script::Latin,
        Script::Greek,
        Script::Cyrillic,
        Script::Armenian,
        Script::Hebrew,
        Script::Arabic,
        Script::Indic,
        Script::Thai,
        Script::Lao,
        Script::Georgian,
        Script::Hangul,
        Script::Kana,
        Script::Han,
        Script::Ethiopic,
        Script::Other,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            Script::Latin => "Latin",
            Script::Greek => "Greek",
            Script::Cyrillic => "Cyrillic",
            Script::Armenian => "Armenian",
            Script::Hebrew => "Hebrew",
            Script::Arabic => "Arabic",
            Script::Indic => "Indic",
            Script::Thai => "Thai",
            Script::Lao => "Lao",
            Script::Georgian => "Georgian",
            Script::Hangul => "Hangul",
            Script::Kana => "Kana",
            Script::Han => "Han",
            Script::Ethiopic => "Ethiopic",
            Script::Other => "other",
        }
    }
}

/// The script of `c`, or `None` for characters that belong to none (digits, punctuation, symbols,
/// marks, emoji, spaces).
pub fn script_of(c: char) -> Option<Script> {
    let u = u32::from(c);
    let s = match u {
        0x0041..=0x005A | 0x0061..=0x007A => Script::Latin,
        0x0000..=0x007F => return None,
        0x00C0..=0x024F | 0x1E00..=0x1EFF | 0x2C60..=0x2C7F | 0xA720..=0xA7FF => Script::Latin,
        0x0080..=0x00BF | 0x02B0..=0x036F => return None,
        0x0370..=0x03FF | 0x1F00..=0x1FFF => Script::Greek,
        0x0400..=0x052F | 0x2DE0..=0x2DFF | 0xA640..=0xA69F => Script::Cyrillic,
        0x0530..=0x058F => Script::Armenian,
        0x0590..=0x05FF => Script::Hebrew,
        0x0600..=0x06FF | 0x0750..=0x077F | 0x08A0..=0x08FF | 0xFB50..=0xFDFF | 0xFE70..=0xFEFF => {
            Script::Arabic
        }
        0x0900..=0x0DFF => Script::Indic,
        0x0E00..=0x0E7F => Script::Thai,
        0x0E80..=0x0EFF => Script::Lao,
        0x10A0..=0x10FF => Script::Georgian,
        0x1100..=0x11FF | 0x3130..=0x318F | 0xAC00..=0xD7AF => Script::Hangul,
        0x3040..=0x30FF | 0x31F0..=0x31FF | 0xFF66..=0xFF9F => Script::Kana,
        0x3400..=0x4DBF | 0x4E00..=0x9FFF | 0xF900..=0xFAFF | 0x20000..=0x3134F => Script::Han,
        0x1200..=0x139F => Script::Ethiopic,
        // General punctuation, symbols, arrows, box drawing, CJK punctuation, fullwidth forms,
        // emoji and the rest of the symbol planes.
        0x2000..=0x2BFF | 0x3000..=0x303F | 0xFE00..=0xFE6F | 0xFF00..=0xFF65 => return None,
        0x1F000..=0x1FAFF | 0xE0000..=0xE007F => return None,
        _ if !c.is_alphabetic() => return None,
        _ => Script::Other,
    };
    Some(s)
}

/// A set of scripts.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptSet(u32);

impl ScriptSet {
    pub const EMPTY: ScriptSet = ScriptSet(0);

    pub fn insert(&mut self, s: Script) {
        self.0 |= 1 << (s as u8);
    }

    pub fn union(self, other: ScriptSet) -> ScriptSet {
        ScriptSet(self.0 | other.0)
    }

    pub fn remove(&mut self, s: Script) {
        self.0 &= !(1 << (s as u8));
    }

    pub fn contains(self, s: Script) -> bool {
        self.0 & (1 << (s as u8)) != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The scripts in the set, in their order (one step per member: an empty set, most answers',
    /// costs nothing).
    pub fn iter(self) -> impl Iterator<Item = Script> {
        let mut bits = self.0;
        std::iter::from_fn(move || {
            let lowest = bits.trailing_zeros();
            bits &= bits.wrapping_sub(1);
            Script::ALL.get(usize::try_from(lowest).ok()?).copied()
        })
    }

    /// The set of one script.
    pub fn of(s: Script) -> ScriptSet {
        let mut set = ScriptSet::EMPTY;
        set.insert(s);
        set
    }

    /// The scripts of a request body as sent (JSON): its raw characters and its `\uXXXX` escapes.
    /// Latin is always in (ASCII is never foreign). One pass; pure ASCII without escapes is
    /// recognised at once.
    pub fn of_request(body: &[u8]) -> ScriptSet {
        let mut set = ScriptSet::EMPTY;
        set.insert(Script::Latin);
        if body.is_ascii() && !body.windows(2).any(|w| w == b"\\u") {
            return set;
        }
        // A JSON body is UTF-8 (the envelope checked it): borrowed, not copied.
        let text = match std::str::from_utf8(body) {
            Ok(t) => std::borrow::Cow::Borrowed(t),
            Err(_) => String::from_utf8_lossy(body),
        };
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c == '\\' {
                // An escape: `\uXXXX` names a character; any other escaped character is ASCII.
                if chars.peek() == Some(&'u') {
                    chars.next();
                    let hex: String = chars.by_ref().take(4).collect();
                    if let Some(s) = u32::from_str_radix(&hex, 16)
                        .ok()
                        .and_then(char::from_u32)
                        .and_then(script_of)
                    {
                        set.insert(s);
                    }
                } else {
                    chars.next();
                }
                continue;
            }
            if !c.is_ascii()
                && let Some(s) = script_of(c)
            {
                set.insert(s);
            }
        }
        set
    }
}

/// Characters of an answer, and those in a script the prompt does not use.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ScriptCount {
    pub chars: u64,
    pub foreign: u64,
    /// The scripts those foreign characters belong to.
    pub scripts: ScriptSet,
}

impl ScriptCount {
    /// Counts `text` against the prompt's scripts. ASCII text costs one vectorised check.
    pub fn count(&mut self, text: &str, allowed: ScriptSet) {
        if text.is_ascii() {
            self.chars = self.chars.saturating_add(text.len() as u64);
            return;
        }
        for c in text.chars() {
            self.chars = self.chars.saturating_add(1);
            if c.is_ascii() {
                continue;
            }
            if let Some(s) = script_of(c)
                && !allowed.contains(s)
            {
                self.foreign = self.foreign.saturating_add(1);
                self.scripts.insert(s);
            }
        }
    }

    /// Whether the answer has text in a script the prompt does not use (a word's worth at least).
    pub fn wrong_script(&self) -> bool {
        self.foreign >= 2
    }

    /// The foreign scripts of an answer in the wrong script (empty when it is not).
    pub fn wrong_scripts(&self) -> ScriptSet {
        if self.wrong_script() {
            self.scripts
        } else {
            ScriptSet::EMPTY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_english_prompt_allows_latin_only_and_thai_in_the_answer_is_foreign() {
        let allowed = ScriptSet::of_request(
            br#"{"messages":[{"role":"user","content":"Hello, caf\u00e9!"}]}"#,
        );
        assert!(allowed.contains(Script::Latin));
        assert!(!allowed.contains(Script::Thai));
        let mut c = ScriptCount::default();
        c.count("Sure — here it is: “naïve” 42 🙂", allowed);
        assert_eq!(c.foreign, 0);
        assert!(!c.wrong_script());
        c.count(" The answer is สวัสดี today", allowed);
        assert_eq!(c.foreign, 6);
        assert!(c.wrong_script());
        assert_eq!(c.wrong_scripts(), ScriptSet::of(Script::Thai));
        assert_eq!(c.wrong_scripts().iter().collect::<Vec<_>>(), [Script::Thai]);
    }

    #[test]
    fn one_stray_character_is_not_the_wrong_script_and_every_script_is_named() {
        let allowed = ScriptSet::of_request(b"{}");
        let mut c = ScriptCount::default();
        c.count("the angle \u{3b1} is small", allowed);
        assert_eq!(c.foreign, 1);
        assert_eq!(c.wrong_scripts(), ScriptSet::EMPTY);
        c.count(" \u{4e2d}\u{6587}", allowed);
        assert_eq!(
            c.wrong_scripts().iter().collect::<Vec<_>>(),
            [Script::Greek, Script::Han]
        );
        for (i, s) in Script::ALL.iter().enumerate() {
            assert_eq!(*s as usize, i);
        }
    }

    #[test]
    fn scripts_in_the_prompt_are_allowed_whether_raw_or_escaped() {
        for body in [
            "{\"content\":\"แปลว่าอะไร\"}".as_bytes(),
            br#"{"content":"\u0e41\u0e1b\u0e25"}"#,
        ] {
            let allowed = ScriptSet::of_request(body);
            assert!(allowed.contains(Script::Thai), "{body:?}");
            let mut c = ScriptCount::default();
            c.count("คำแปลคือ hello", allowed);
            assert_eq!(c.foreign, 0);
        }
        let ru = ScriptSet::of_request("{\"content\":\"Привет\"}".as_bytes());
        let mut c = ScriptCount::default();
        c.count("Привет! 你好", ru);
        assert_eq!(c.foreign, 2, "Han is foreign to a Russian prompt");
    }

    #[test]
    fn punctuation_symbols_and_emoji_belong_to_no_script() {
        for c in ['—', '“', '€', '→', '🙂', '。', '、', '１', '\u{301}'] {
            assert_eq!(script_of(c), None, "{c:?}");
        }
        assert_eq!(script_of('é'), Some(Script::Latin));
        assert_eq!(script_of('ก'), Some(Script::Thai));
        assert_eq!(script_of('中'), Some(Script::Han));
        assert_eq!(script_of('ア'), Some(Script::Kana));
    }
}
