//! Fixed word lists: English-like words for answers and wrong-script words for corrupted answers.

use crate::faults::Script;

/// Words generated answers are drawn from. Fixed: changing it changes every seeded answer.
pub(crate) const ENGLISH: &[&str] = &[
    "the", "a", "system", "request", "answer", "model", "gateway", "provider", "stream", "token",
    "latency", "route", "fallback", "budget", "retry", "breaker", "signal", "upstream", "client",
    "server", "message", "simple", "quick", "steady", "careful", "reliable", "small", "large",
    "early", "late", "clear", "bright", "quiet", "honest", "useful", "open", "closed", "ready",
    "busy", "calm", "is", "was", "will", "can", "should", "might", "must", "keeps", "sends",
    "reads", "writes", "holds", "moves", "checks", "counts", "waits", "builds", "finds", "returns",
    "carries", "measures", "follows", "answers", "handles", "and", "or", "but", "so", "then",
    "because", "while", "when", "if", "with", "without", "through", "over", "under", "between",
    "before", "after", "into", "from", "for", "of", "on", "in", "at", "by", "to", "every", "each",
    "some", "many", "few", "most", "this", "that", "these", "those", "its", "their", "our", "your",
    "time", "day", "river", "mountain", "garden", "window", "bridge", "harbor", "lantern",
    "compass", "journey", "morning", "evening", "winter", "summer", "letter", "story", "record",
    "table", "field", "number", "pattern", "question", "reason", "result", "moment", "detail",
    "method", "idea", "plan", "path", "step", "point", "line", "word", "page", "note", "list",
    "set", "map", "key", "value", "queue", "limit", "window", "channel", "header", "body", "chunk",
    "event", "error", "status", "health", "probe", "trace", "metric", "label", "config", "policy",
    "rule", "test", "check", "guard", "layer", "service", "future", "task", "thread", "buffer",
    "socket", "packet", "frame", "delay", "deadline", "timeout", "backoff", "jitter", "quota",
];

const THAI: &[&str] = &[
    "สวัสดี",
    "ภาษา",
    "ข้อมูล",
    "ระบบ",
    "ความรู้",
    "ทดสอบ",
    "ประเทศ",
    "เมือง",
    "น้ำ",
    "อาหาร",
    "เวลา",
    "คน",
    "บ้าน",
    "รถไฟ",
    "ทำงาน",
    "หนังสือ",
    "โรงเรียน",
    "ตลาด",
    "ดอกไม้",
    "ท้องฟ้า",
];

const CYRILLIC: &[&str] = &[
    "привет",
    "система",
    "данные",
    "время",
    "город",
    "работа",
    "вода",
    "язык",
    "человек",
    "дом",
    "книга",
    "дорога",
    "небо",
    "слово",
    "модель",
    "ответ",
    "запрос",
    "поток",
    "ошибка",
    "сервер",
];

const CJK: &[&str] = &[
    "数据",
    "系统",
    "时间",
    "语言",
    "城市",
    "工作",
    "模型",
    "测试",
    "网络",
    "问题",
    "答案",
    "请求",
    "服务器",
    "错误",
    "天空",
    "河流",
    "山脉",
    "花园",
    "窗户",
    "桥梁",
];

/// The word list of a corruption script.
pub(crate) fn script_words(script: Script) -> &'static [&'static str] {
    match script {
        Script::Thai => THAI,
        Script::Cyrillic => CYRILLIC,
        Script::Cjk => CJK,
    }
}
