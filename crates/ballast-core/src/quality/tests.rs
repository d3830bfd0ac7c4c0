#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    clippy::cast_precision_loss,
    reason = "tests build texts and compare verdicts; a panic is a failure"
)]

use proptest::prelude::*;

use super::*;

fn scan(text: &str) -> Repetition {
    let mut r = Repetition::default();
    r.feed(text);
    r.feed(" ");
    r
}

/// The highest repeated share any window reached along the way (once it held 32 3-grams): what
/// `repetitive` compares with the threshold.
fn worst_window(text: &str) -> f64 {
    let mut r = Repetition::default();
    let mut worst = 0.0f64;
    for c in text.chars().chain([' ']) {
        r.feed(c.encode_utf8(&mut [0; 4]));
        if r.window_ngrams >= MIN_NGRAMS {
            worst = worst.max(f64::from(r.window_repeated) / f64::from(r.window_ngrams));
        }
    }
    worst
}

fn share(r: &Repetition) -> f64 {
    f64::from(r.repeated()) / f64::from(r.ngrams().max(1))
}

const PROSE: &str = "\
Rust's ownership model is the feature that most surprises programmers coming from garbage-collected \
languages. Every value has a single owner, and when that owner goes out of scope the value is dropped. \
There is no runtime tracing of references and no pause while a collector walks the heap; the compiler \
decides, at compile time, exactly where each allocation is released.

Borrowing is how code uses a value without taking ownership of it. A shared borrow lets many readers \
look at the same data at once, while a mutable borrow grants exclusive access to a single writer. The \
borrow checker enforces these rules statically, which is why data races are impossible in safe Rust: \
two threads simply cannot hold a mutable reference to the same memory at the same time.

In practice, most of the friction people feel early on comes from trying to write code the way they \
would in another language. Long-lived mutable references, cyclic graphs of objects and callbacks that \
capture their environment all need a little more thought. The usual answers are to restructure the \
data so that ownership is a tree, to use indices into a vector instead of pointers, or to reach for \
reference counting with Rc or Arc when shared ownership is genuinely what the program needs.

Once the model clicks, it tends to change how you design programs in other languages too. You start \
asking who owns a piece of data, how long it lives, and who is allowed to change it. Those questions \
were always there; Rust just makes you answer them before the program runs rather than after it \
crashes in production at three in the morning.";

const RUST_CODE: &str = r#"Here is a configuration loader with defaults for every field:

```rust
use std::collections::HashMap;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Settings {
    pub host: String,
    pub port: u16,
    pub workers: usize,
    pub timeout: Duration,
    pub retries: u32,
    pub log_level: String,
    pub cache_size: usize,
    pub compression: bool,
}

impl Settings {
    pub fn from_map(map: &HashMap<String, String>) -> Self {
        let mut s = Settings::default();
        if let Some(v) = map.get("host") {
            s.host = v.clone();
        }
        if let Some(v) = map.get("port") {
            s.port = v.parse().unwrap_or(8080);
        }
        if let Some(v) = map.get("workers") {
            s.workers = v.parse().unwrap_or(4);
        }
        if let Some(v) = map.get("timeout") {
            s.timeout = Duration::from_secs(v.parse().unwrap_or(30));
        }
        if let Some(v) = map.get("retries") {
            s.retries = v.parse().unwrap_or(3);
        }
        if let Some(v) = map.get("log_level") {
            s.log_level = v.clone();
        }
        if let Some(v) = map.get("cache_size") {
            s.cache_size = v.parse().unwrap_or(1024);
        }
        if let Some(v) = map.get("compression") {
            s.compression = v == "true";
        }
        s
    }
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            host: "127.0.0.1".to_string(),
            port: 8080,
            workers: 4,
            timeout: Duration::from_secs(30),
            retries: 3,
            log_level: "info".to_string(),
            cache_size: 1024,
            compression: false,
        }
    }
}
```

Each field falls back to its default when the key is missing or does not parse."#;

const PYTHON_CODE: &str = r#"```python
import math
from dataclasses import dataclass


@dataclass
class Point:
    x: float
    y: float

    def distance(self, other: "Point") -> float:
        dx = self.x - other.x
        dy = self.y - other.y
        return math.hypot(dx, dy)


COLORS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}

width = 800
height = 600
margin_left = 20
margin_right = 20
margin_top = 10
margin_bottom = 10
inner_width = width - margin_left - margin_right
inner_height = height - margin_top - margin_bottom


def centroid(points):
    if not points:
        raise ValueError("no points")
    sx = sum(p.x for p in points)
    sy = sum(p.y for p in points)
    return Point(sx / len(points), sy / len(points))


def closest_pair(points):
    best = None
    best_d = math.inf
    for i, a in enumerate(points):
        for b in points[i + 1:]:
            d = a.distance(b)
            if d < best_d:
                best, best_d = (a, b), d
    return best, best_d


if __name__ == "__main__":
    pts = [Point(0, 0), Point(3, 4), Point(1, 1), Point(7, 2)]
    print(centroid(pts))
    print(closest_pair(pts))
```"#;

const TABLE: &str = "\
| Model | Context window | Input price | Output price | Vision | Tool use |
|-------|----------------|-------------|--------------|--------|----------|
| gpt-4o | 128k tokens | $2.50 / 1M | $10.00 / 1M | Yes | Yes |
| gpt-4o-mini | 128k tokens | $0.15 / 1M | $0.60 / 1M | Yes | Yes |
| claude-sonnet-4 | 200k tokens | $3.00 / 1M | $15.00 / 1M | Yes | Yes |
| claude-haiku-3.5 | 200k tokens | $0.80 / 1M | $4.00 / 1M | Yes | Yes |
| gemini-2.5-pro | 1M tokens | $1.25 / 1M | $10.00 / 1M | Yes | Yes |
| gemini-2.5-flash | 1M tokens | $0.30 / 1M | $2.50 / 1M | Yes | Yes |
| llama-3.1-70b | 128k tokens | $0.88 / 1M | $0.88 / 1M | No | Yes |
| mistral-large | 128k tokens | $2.00 / 1M | $6.00 / 1M | No | Yes |

Prices are per million tokens and change often, so check each provider's page before you decide.";

const BULLETS: &str = "\
Before you deploy, make sure you have:

- Set the `DATABASE_URL` environment variable for the production database.
- Run the migrations with `cargo sqlx migrate run` against a staging copy first.
- Enabled TLS on the load balancer and redirected plain HTTP to HTTPS.
- Configured log rotation so the disk does not fill up over a long weekend.
- Added a health check endpoint that the orchestrator can poll every ten seconds.
- Set resource limits on the container: memory, CPU and open file descriptors.
- Written down the rollback procedure and tested it at least once.
- Turned on alerts for error rate, latency and saturation.
- Checked that secrets are read from the vault, not baked into the image.
- Told the on-call engineer when the release is going out.

If any of these is missing, postpone the release; a calm Tuesday beats a frantic Friday.";

const CHINESE: &str = "\
机器学习是人工智能的一个分支，它让计算机能够从数据中学习规律，而不需要人为地编写每一条规则。\
在监督学习中，模型通过大量带有标签的样本进行训练，例如一张图片和它对应的类别。训练的目标是让模型\
在没有见过的新数据上也能做出准确的预测。\n\n\
深度学习使用多层神经网络来提取特征。早期的方法需要专家手工设计特征，而深度网络可以自动从原始数据\
中发现有用的表示。这也是为什么它在图像识别、语音识别和自然语言处理等领域取得了巨大的进步。\n\n\
不过，深度学习也有明显的局限。它通常需要海量的数据和昂贵的计算资源，模型的决策过程也难以解释。\
在医疗和金融等对可靠性要求很高的行业，人们往往更关心模型为什么会给出某个结论。因此，可解释性、\
数据隐私以及算法公平性，正在成为研究者和工程师共同关注的重要问题。";

const JAPANESE: &str = "\
東京は日本の首都であり、世界でも有数の大都市です。人口は約千四百万人で、周辺の県を含めた首都圏には\
三千万人以上が暮らしています。江戸時代には徳川幕府が置かれ、明治維新の後に現在の名前に改められました。\n\n\
東京の魅力は、古いものと新しいものが共存していることです。浅草の浅草寺や明治神宮のような歴史ある\
寺社がある一方で、渋谷や新宿には高層ビルが立ち並び、最新のファッションや技術が集まっています。\
電車のネットワークは非常に発達しており、時間通りに運行されることで知られています。\n\n\
また、食文化も豊かです。寿司やラーメン、天ぷらといった日本料理はもちろん、世界各国の料理を楽しむ\
ことができます。ミシュランガイドで星を獲得したレストランの数は、世界の都市の中で最も多いと言われて\
います。初めて訪れる人は、季節ごとの祭りや桜の名所にも足を運んでみるとよいでしょう。\n\n\
はい、わかりました。それでは、プログラミングを始めるときに大切なことをいくつか説明します。まず、最初から難しい言語を選ぶ必要はありません。多くの人はPythonから始めています。文法がシンプルで、読みやすいコードを書くことができるからです。\n\n\
次に、毎日少しずつ練習することが大切です。一度に長い時間勉強するよりも、短い時間でも続けることが上達への近道です。たとえば、一日三十分だけでもコードを書く習慣をつけるとよいでしょう。\n\n\
また、エラーを怖がらないでください。エラーメッセージは、プログラムのどこに問題があるのかを教えてくれるヒントです。メッセージをよく読んで、検索してみると、同じ問題に悩んだ人の解決方法が見つかることが多いです。\n\n\
さらに、小さなプロジェクトを作ってみることをおすすめします。簡単な計算機やToDoリスト、天気を表示するアプリなど、自分が使いたいものを作ると、楽しく学ぶことができます。完成したら、友だちに見せて意見をもらうのもよいと思います。\n\n\
最後に、わからないことがあれば、遠慮せずに質問してください。オンラインのコミュニティには、親切に教えてくれる人がたくさんいます。焦らず、自分のペースで進めていきましょう。何か具体的な質問があれば、いつでも聞いてくださいね。";

const THAI: &str = "\
ประเทศไทยตั้งอยู่ในภูมิภาคเอเชียตะวันออกเฉียงใต้ มีกรุงเทพมหานครเป็นเมืองหลวงและเป็นศูนย์กลางทางเศรษฐกิจ\
ของประเทศ ประชากรส่วนใหญ่นับถือศาสนาพุทธ และวัฒนธรรมไทยได้รับอิทธิพลจากทั้งอินเดียและจีน\n\n\
อาหารไทยมีชื่อเสียงไปทั่วโลก ต้มยำกุ้ง ผัดไทย และแกงเขียวหวานเป็นเมนูที่นักท่องเที่ยวนิยมสั่ง รสชาติของอาหาร\
มักผสมผสานความเปรี้ยว หวาน เค็ม และเผ็ดเข้าด้วยกันอย่างลงตัว\n\n\
การท่องเที่ยวเป็นรายได้หลักอย่างหนึ่งของประเทศ ทะเลทางภาคใต้ เช่น ภูเก็ตและกระบี่ ดึงดูดผู้คนจากทั่วโลก ส่วนภาคเหนือ\
มีภูเขา อากาศเย็นสบาย และวัดเก่าแก่ที่เชียงใหม่ ช่วงเวลาที่เหมาะแก่การเดินทางที่สุดคือเดือนพฤศจิกายนถึงกุมภาพันธ์\n\n\
ภาษาไทยเป็นภาษาที่มีวรรณยุกต์ ซึ่งหมายความว่าระดับเสียงของคำสามารถเปลี่ยนความหมายได้ ตัวอย่างเช่น คำว่า ม้า ที่แปลว่าสัตว์ กับคำว่า มา ที่แปลว่าเดินทางมาถึง แม้จะสะกดคล้ายกันแต่ออกเสียงต่างกัน ผู้เรียนชาวต่างชาติจึงมักพบว่าการฟังและการพูดให้ถูกต้องเป็นเรื่องที่ต้องใช้เวลาฝึกฝน\n\n\
ระบบการศึกษาของไทยแบ่งออกเป็นระดับประถมศึกษา มัธยมศึกษา และอุดมศึกษา นักเรียนส่วนใหญ่เริ่มเรียนภาษาอังกฤษตั้งแต่ชั้นประถม มหาวิทยาลัยที่มีชื่อเสียง ได้แก่ จุฬาลงกรณ์มหาวิทยาลัย มหาวิทยาลัยธรรมศาสตร์ และมหาวิทยาลัยมหิดล ซึ่งเปิดสอนหลักสูตรนานาชาติหลายสาขา\n\n\
ในช่วงหลายปีที่ผ่านมา เทคโนโลยีดิจิทัลเข้ามามีบทบาทในชีวิตประจำวันของคนไทยมากขึ้น การชำระเงินผ่านโทรศัพท์มือถือด้วยคิวอาร์โค้ดได้รับความนิยมอย่างรวดเร็ว ร้านค้าเล็ก ๆ ริมถนนก็สามารถรับเงินโอนได้ทันที ทำให้การใช้เงินสดลดลงอย่างเห็นได้ชัด\n\n\
เทศกาลสงกรานต์ในเดือนเมษายนถือเป็นวันขึ้นปีใหม่แบบไทย ผู้คนจะเดินทางกลับบ้านเกิดเพื่อรดน้ำขอพรจากผู้ใหญ่ และออกมาเล่นสาดน้ำกันบนท้องถนน ส่วนเทศกาลลอยกระทงในคืนวันเพ็ญเดือนสิบสองเป็นการขอขมาแม่น้ำ โดยผู้คนจะนำกระทงที่ทำจากใบตองและดอกไม้ไปลอยในแม่น้ำหรือคลอง\n\n\
หากคุณวางแผนจะเดินทางมาประเทศไทย ควรเตรียมเสื้อผ้าที่ระบายอากาศได้ดี ครีมกันแดด และยากันยุง การแต่งกายเมื่อเข้าวัดควรสุภาพ ไม่สวมเสื้อแขนกุดหรือกางเกงขาสั้น และควรถอดรองเท้าก่อนเข้าไปในโบสถ์ การเคารพธรรมเนียมท้องถิ่นจะทำให้การเดินทางของคุณราบรื่นและน่าประทับใจยิ่งขึ้น";

/// A varied word list for long ordinary answers: no 3-gram repeats beyond chance.
const WORDS: &[&str] = &[
    "system",
    "request",
    "answer",
    "model",
    "token",
    "stream",
    "gateway",
    "provider",
    "latency",
    "budget",
    "policy",
    "failure",
    "retry",
    "circuit",
    "breaker",
    "window",
    "sample",
    "detector",
    "signal",
    "threshold",
    "baseline",
    "route",
    "target",
    "tier",
    "balance",
    "health",
    "probe",
    "config",
    "secret",
    "header",
    "status",
    "error",
    "timeout",
    "deadline",
    "attempt",
    "upstream",
    "client",
    "server",
    "cache",
    "entry",
    "key",
    "value",
    "hash",
    "table",
    "index",
    "vector",
    "queue",
    "thread",
    "task",
    "future",
    "poll",
    "wake",
    "socket",
    "buffer",
    "frame",
    "chunk",
    "event",
    "record",
    "metric",
    "label",
    "series",
    "counter",
    "gauge",
    "histogram",
    "bucket",
    "quantile",
    "the",
    "a",
    "an",
    "of",
    "to",
    "in",
    "on",
    "for",
    "with",
    "from",
    "by",
    "at",
    "and",
    "or",
    "but",
    "is",
    "was",
    "are",
    "were",
    "be",
    "has",
    "had",
    "will",
    "would",
    "can",
    "could",
    "should",
    "may",
    "quickly",
    "slowly",
    "often",
    "rarely",
    "always",
    "never",
    "usually",
    "clearly",
    "simply",
    "large",
    "small",
    "fast",
    "slow",
    "new",
    "old",
    "first",
    "last",
    "next",
    "previous",
    "same",
    "different",
    "simple",
    "complex",
    "safe",
    "unsafe",
    "bounded",
    "open",
    "closed",
    "half-open",
    "river",
    "mountain",
    "forest",
    "ocean",
    "city",
    "village",
    "market",
    "garden",
    "kitchen",
    "teacher",
    "student",
    "doctor",
    "farmer",
    "writer",
    "painter",
    "engineer",
    "pilot",
    "sailor",
    "apple",
    "bread",
    "cheese",
    "coffee",
    "honey",
    "lemon",
    "olive",
    "pepper",
    "rice",
    "salt",
    "walks",
    "runs",
    "reads",
    "writes",
    "builds",
    "breaks",
    "fixes",
    "measures",
    "counts",
    "sends",
    "receives",
    "waits",
    "sleeps",
    "wakes",
    "starts",
    "stops",
    "opens",
    "closes",
    "grows",
    "falls",
];

fn long_ordinary(seed: u64, words: usize) -> String {
    let mut rng = fastrand::Rng::with_seed(seed);
    let mut out = String::new();
    for i in 0..words {
        out.push_str(WORDS[rng.usize(..WORDS.len())]);
        out.push(if i % 13 == 12 { '\n' } else { ' ' });
    }
    out
}

#[test]
fn ordinary_answers_are_not_repetitive() {
    let long = long_ordinary(7, 5_000);
    let cases = [
        ("prose", PROSE),
        ("rust", RUST_CODE),
        ("python", PYTHON_CODE),
        ("table", TABLE),
        ("bullets", BULLETS),
        ("chinese", CHINESE),
        ("japanese", JAPANESE),
        ("thai", THAI),
        ("long", long.as_str()),
    ];
    for (name, text) in cases {
        let r = scan(text);
        let worst = worst_window(text);
        eprintln!(
            "{name:10} ngrams {:5} repeated {:5} share {:.3} worst window {worst:.3}",
            r.ngrams(),
            r.repeated(),
            share(&r)
        );
        assert!(
            r.ngrams() >= MIN_NGRAMS,
            "{name}: too short to judge ({r:?})"
        );
        assert!(!r.repetitive(), "{name}: {r:?}");
        // A margin under the threshold, not a near miss.
        assert!(worst < 0.4, "{name}: {worst}");
    }
}

#[test]
fn a_long_answer_is_judged_by_windows_so_the_bitset_does_not_fill() {
    let long = long_ordinary(42, 5_000);
    let r = scan(&long);
    assert!(r.ngrams() > 4_900);
    // Over 5,000 3-grams one 4,096-bit set would call most of them repeated; per window it stays low.
    assert!(share(&r) < 0.2, "{r:?}");
    assert!(!r.repetitive());
}

#[test]
fn degenerate_answers_are_repetitive() {
    let sentence = "I apologize for the confusion, let me try to explain this again more clearly. ";
    let the = "the ".repeat(100);
    let phrase = format!(
        "Sure! Here is the answer: {}",
        "and then we go back to the start, ".repeat(20)
    );
    let cjk = format!(
        "好的，我来解释一下。{}",
        "我不知道这个问题的答案。".repeat(15)
    );
    let kana = "すみません、わかりません。".repeat(12);
    let thai = "ขอโทษครับ ผมไม่เข้าใจ ".repeat(10);
    // A sane opening, then a loop until the token limit.
    let paragraph = PROSE.split("\n\n").next().unwrap().repeat(4);
    let late = format!(
        "{}{}",
        long_ordinary(3, 1_500),
        "The function returns the value of the variable. ".repeat(250)
    );
    let cases = [
        ("sentence x10", sentence.repeat(10)),
        ("the the the", the),
        ("phrase loop", phrase),
        ("cjk loop", cjk),
        ("kana loop", kana),
        ("thai loop", thai),
        ("paragraph x4", paragraph),
        ("late loop", late),
    ];
    for (name, text) in cases {
        let r = scan(&text);
        eprintln!(
            "{name:12} ngrams {:5} repeated {:5} share {:.3}",
            r.ngrams(),
            r.repeated(),
            share(&r)
        );
        assert!(r.repetitive(), "{name}: {r:?}");
    }
}

#[test]
fn a_long_answer_counts_the_same_in_any_chunking() {
    let text = format!(
        "{}{}",
        long_ordinary(9, 3_000),
        "我不知道这个问题的答案。 the loop goes on ".repeat(200)
    );
    let whole = scan(&text);
    assert!(whole.ngrams() > 3 * WINDOW && whole.repetitive());
    let mut rng = fastrand::Rng::with_seed(5);
    for _ in 0..8 {
        let cuts: Vec<usize> = (0..rng.usize(1..2_000)).map(|_| rng.usize(..)).collect();
        let mut split = Repetition::default();
        for piece in chunks(&text, &cuts) {
            split.feed(piece);
        }
        split.feed(" ");
        assert_eq!(
            (split.ngrams(), split.repeated(), split.repetitive()),
            (whole.ngrams(), whole.repeated(), whole.repetitive())
        );
    }
}

#[test]
fn the_scanners_state_is_small_and_fixed() {
    assert!(
        std::mem::size_of::<Repetition>() <= 600,
        "{}",
        std::mem::size_of::<Repetition>()
    );
    assert!(
        std::mem::size_of::<JsonCheck>() <= 48,
        "{}",
        std::mem::size_of::<JsonCheck>()
    );
}

#[test]
fn short_answers_are_never_judged() {
    let r = scan(&"yes ".repeat(20));
    assert_eq!(r.ngrams(), 18);
    assert_eq!(r.repeated(), 17);
    assert!(!r.repetitive(), "fewer than 32 3-grams");
}

#[test]
fn words_punctuation_case_and_unspaced_scripts() {
    // Markup-only runs are skipped: `a | b | c` is the three words a b c.
    let r = scan("a | b | c — d");
    assert_eq!(r.ngrams(), 2);
    // Case folds, punctuation stays.
    let mut a = Repetition::default();
    a.feed("The cat sat. the CAT sat. ");
    assert_eq!((a.ngrams(), a.repeated()), (4, 1));
    // Each Han character is a word, and CJK punctuation is not.
    let r = scan("我喜欢你。");
    assert_eq!(r.ngrams(), 2);
    // Latin next to Han: the Latin run ends at the Han character.
    let r = scan("API接口");
    assert_eq!(r.ngrams(), 1);
    // Non-breaking and ideographic spaces separate words.
    let r = scan("one\u{a0}two\u{3000}three four");
    assert_eq!(r.ngrams(), 2);
}

#[test]
fn a_word_split_between_deltas_is_one_word() {
    let mut split = Repetition::default();
    for part in ["hel", "lo wor", "ld ag", "ain and ", "again"] {
        split.feed(part);
    }
    split.feed(" ");
    let whole = scan("hello world again and again");
    assert_eq!(split.ngrams(), whole.ngrams());
    assert_eq!(split.repeated(), whole.repeated());
    assert_eq!(split.ngrams(), 3);
}

/// Splits `text` at the given char-boundary positions (taken modulo its length).
fn chunks<'a>(text: &'a str, cuts: &[usize]) -> Vec<&'a str> {
    let mut at: Vec<usize> = cuts
        .iter()
        .map(|c| c % (text.len() + 1))
        .map(|mut c| {
            while !text.is_char_boundary(c) {
                c -= 1;
            }
            c
        })
        .collect();
    at.push(0);
    at.push(text.len());
    at.sort_unstable();
    at.windows(2).map(|w| &text[w[0]..w[1]]).collect()
}

fn mixed_text() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        prop::sample::select(vec![
            "the ",
            "cat ",
            "sat ",
            "on ",
            "mat. ",
            "The ",
            "| ",
            "- ",
            "\n",
            "  ",
            "x=1; ",
            "foo(2) ",
            "我",
            "不",
            "知道",
            "。",
            "すみません",
            "ขอโทษ",
            "ລາວ",
            "ខ្មែរ",
            "မြန်မာ",
            "café ",
            "—",
            "🙂",
            "\u{3000}",
        ])
        .prop_map(String::from),
        "\\PC{1,6}",
    ];
    prop::collection::vec(piece, 0..120).prop_map(|v| v.concat())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn repetition_counts_do_not_depend_on_chunking(
        text in mixed_text(),
        cuts in prop::collection::vec(any::<usize>(), 0..24),
    ) {
        let mut whole = Repetition::default();
        whole.feed(&text);
        let mut split = Repetition::default();
        for c in chunks(&text, &cuts) {
            split.feed(c);
        }
        prop_assert_eq!(whole.ngrams(), split.ngrams());
        prop_assert_eq!(whole.repeated(), split.repeated());
        prop_assert_eq!(whole.repetitive(), split.repetitive());
    }
}

// ---------------------------------------------------------------------------------------------------
// JsonCheck
// ---------------------------------------------------------------------------------------------------

fn json_ok(text: &str) -> bool {
    let mut c = JsonCheck::default();
    c.feed(text);
    c.finish()
}

fn serde_ok(text: &str) -> bool {
    serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok()
}

#[test]
fn hand_written_json_cases() {
    let cases: &[(&str, bool)] = &[
        ("{}", true),
        ("[]", true),
        ("\"x\"", true),
        ("1", true),
        ("0", true),
        ("-0", true),
        ("-0.5e+3", true),
        ("1E-7", true),
        ("1e999999", true),
        (
            "  {\"a\": [1, 2.5, true, false, null, \"s\", {}]}\n\t\r ",
            true,
        ),
        ("\"\\u00e9\\ud83d\\ude00\\/\\b\\f\\n\\r\\t\\\"\\\\\"", true),
        ("\"naïve 🙂\"", true),
        ("\"\\ud800\"", true),
        ("\"\\udc00x\"", true),
        ("", false),
        ("   ", false),
        ("01", false),
        ("-01", false),
        ("1.", false),
        (".5", false),
        ("-", false),
        ("+1", false),
        ("1e", false),
        ("1e+", false),
        ("0x10", false),
        ("[1,]", false),
        ("{\"a\":1,}", false),
        ("[,1]", false),
        ("{,}", false),
        ("{\"a\"}", false),
        ("{\"a\" 1}", false),
        ("{1:2}", false),
        ("{\"a\":1}{}", false),
        ("1 2", false),
        ("[1 2]", false),
        ("[1}", false),
        ("{\"a\":1]", false),
        ("[", false),
        ("]", false),
        ("\"abc", false),
        ("\"a\tb\"", false),
        ("\"a\nb\"", false),
        ("\"\u{1f}\"", false),
        ("\"\\x\"", false),
        ("\"\\u12g4\"", false),
        ("\"\\u12\"", false),
        ("tru", false),
        ("truex", false),
        ("True", false),
        ("nul", false),
        ("NaN", false),
        ("Infinity", false),
        ("'a'", false),
        ("\u{feff}{}", false),
        ("{}\u{a0}", false),
        ("[1]x", false),
    ];
    for &(text, want) in cases {
        assert_eq!(
            serde_ok(text),
            want,
            "serde_json disagrees with the table on {text:?}"
        );
        assert_eq!(json_ok(text), want, "{text:?}");
    }
}

#[test]
fn nesting_is_limited_where_serde_json_limits_it() {
    let nested = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n));
    let ok = nested(usize::from(MAX_DEPTH));
    let deep = nested(usize::from(MAX_DEPTH) + 1);
    assert!(serde_json::from_str::<serde_json::Value>(&ok).is_ok());
    assert!(serde_json::from_str::<serde_json::Value>(&deep).is_err());
    assert!(
        serde_ok(&deep),
        "IgnoredAny skips iteratively, without a limit"
    );
    assert!(json_ok(&ok));
    assert!(!json_ok(&deep));
    let objects = |n: usize| format!("{}1{}", "{\"a\":".repeat(n), "}".repeat(n));
    assert!(json_ok(&objects(usize::from(MAX_DEPTH))));
    assert!(!json_ok(&objects(usize::from(MAX_DEPTH) + 1)));
    // Mixed stacks close in order.
    assert!(json_ok("[{\"a\":[{\"b\":[]}]}]"));
    assert!(!json_ok("[{\"a\":[{\"b\":[]]}]}"));
}

#[test]
fn invalid_stays_invalid_and_feeding_stops() {
    let mut c = JsonCheck::default();
    c.feed("{\"a\":01");
    assert!(c.failed());
    c.feed("}");
    assert!(c.failed());
    assert!(!c.finish());
    let mut c = JsonCheck::default();
    c.feed("{\"a\":");
    assert!(!c.failed() && !c.finish());
    c.feed("1}");
    assert!(c.finish());
}

fn json_string() -> impl Strategy<Value = String> {
    let piece = prop_oneof![
        8 => "[a-zA-Z0-9 ]{1,6}",
        2 => "\\PC{1,3}",
        2 => prop::sample::select(vec![
            "\\n", "\\\"", "\\\\", "\\/", "\\b", "\\f", "\\r", "\\t", "\\u00e9", "\\u4E2D",
            "\\ud83d\\ude00", "\\uD834\\uDD1E", "é", "中文", "🙂",
        ]).prop_map(String::from),
        1 => prop::sample::select(vec![
            "\\ud800", "\\udc00", "\\x", "\\u12", "\\u12g4", "\t", "\n", "\u{1}", "\"", "\\",
        ]).prop_map(String::from),
    ];
    prop::collection::vec(piece, 0..5).prop_map(|v| format!("\"{}\"", v.concat()))
}

fn json_number() -> impl Strategy<Value = String> {
    let int = prop_oneof![
        3 => Just("0".to_owned()),
        6 => "[1-9][0-9]{0,6}",
        1 => "0[0-9]{1,2}",
        1 => Just(String::new()),
    ];
    let frac = prop_oneof![
        6 => Just(String::new()),
        3 => "\\.[0-9]{1,4}",
        1 => Just(".".to_owned()),
    ];
    let exp = prop_oneof![
        6 => Just(String::new()),
        3 => "[eE][+-]?[0-9]{1,3}",
        1 => "[eE][+-]?",
    ];
    (prop::bool::weighted(0.3), int, frac, exp)
        .prop_map(|(neg, i, f, e)| format!("{}{i}{f}{e}", if neg { "-" } else { "" }))
}

fn ws() -> impl Strategy<Value = &'static str> {
    prop::sample::select(vec!["", "", "", "", " ", "\n", "\t ", "\r\n  "])
}

fn json_text() -> impl Strategy<Value = String> {
    let leaf = prop_oneof![
        json_number(),
        json_string(),
        prop::sample::select(vec!["true", "false", "null"]).prop_map(String::from),
    ];
    leaf.prop_recursive(6, 64, 6, |inner| {
        prop_oneof![
            prop::collection::vec((ws(), inner.clone(), ws()), 0..6).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(a, v, b)| format!("{a}{v}{b}"))
                    .collect();
                format!("[{}]", items.join(","))
            }),
            prop::collection::vec((json_string(), ws(), inner, ws()), 0..6).prop_map(|items| {
                let items: Vec<String> = items
                    .into_iter()
                    .map(|(k, a, v, b)| format!("{a}{k}{b}:{a}{v}{b}"))
                    .collect();
                format!("{{{}}}", items.join(","))
            }),
        ]
    })
    .prop_flat_map(|v| (ws(), Just(v), ws()).prop_map(|(a, v, b)| format!("{a}{v}{b}")))
}

#[derive(Clone, Debug)]
enum Mutation {
    None,
    Delete(usize),
    Insert(usize, char),
    Replace(usize, char),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let c = prop_oneof![
        4 => prop::sample::select(vec![
            '{', '}', '[', ']', '"', ':', ',', '\\', ' ', '0', '1', '-', '.', 'e', '+', 't', 'n', 'u', 'x', '\n', '\u{1}', 'é',
        ]),
        1 => any::<char>(),
    ];
    prop_oneof![
        3 => Just(Mutation::None),
        1 => any::<usize>().prop_map(Mutation::Delete),
        1 => (any::<usize>(), c.clone()).prop_map(|(i, c)| Mutation::Insert(i, c)),
        1 => (any::<usize>(), c).prop_map(|(i, c)| Mutation::Replace(i, c)),
    ]
}

fn mutate(text: &str, m: &Mutation) -> String {
    let mut chars: Vec<char> = text.chars().collect();
    match *m {
        Mutation::None => {}
        Mutation::Delete(i) if !chars.is_empty() => {
            chars.remove(i % chars.len());
        }
        Mutation::Insert(i, c) => chars.insert(i % (chars.len() + 1), c),
        Mutation::Replace(i, c) if !chars.is_empty() => {
            let n = chars.len();
            chars[i % n] = c;
        }
        _ => {}
    }
    chars.into_iter().collect()
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    #[test]
    fn json_verdicts_match_serde_json_in_any_chunking(
        text in json_text(),
        m in mutation(),
        cuts in prop::collection::vec(any::<usize>(), 0..16),
    ) {
        let text = mutate(&text, &m);
        let mut c = JsonCheck::default();
        for piece in chunks(&text, &cuts) {
            c.feed(piece);
        }
        prop_assert_eq!(c.finish(), serde_ok(&text), "{:?}", text);
    }
}

// ---------------------------------------------------------------------------------------------------
// asks_for_json
// ---------------------------------------------------------------------------------------------------

#[test]
fn openai_chat_asks_for_json_in_response_format() {
    let f = ApiFormat::OpenAiChat;
    assert!(asks_for_json(
        f,
        br#"{"model":"m","messages":[],"response_format":{"type":"json_object"}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"model":"m","messages":[{"role":"user","content":"hi"}],"response_format":{"type":"json_schema","json_schema":{"name":"x","schema":{"type":"object"}}}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","messages":[],"response_format":{"type":"text"}}"#
    ));
    assert!(!asks_for_json(f, br#"{"model":"m","messages":[]}"#));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","messages":[{"role":"user","content":"What does response_format json_schema do? And json_object?"}]}"#
    ));
    // The right string in the wrong place.
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","metadata":{"type":"json_schema"},"response_format":null}"#
    ));
    // Other formats' fields are not this format's.
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","text":{"format":{"type":"json_schema"}}}"#
    ));
    assert!(!asks_for_json(f, b"not json json_schema"));
}

#[test]
fn openai_responses_asks_for_json_in_text_format() {
    let f = ApiFormat::OpenAiResponses;
    assert!(asks_for_json(
        f,
        br#"{"model":"m","input":"hi","text":{"format":{"type":"json_schema","name":"x","schema":{}}}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"model":"m","input":"hi","text":{"verbosity":"low","format":{"type":"json_object"}}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","input":"hi","text":{"format":{"type":"text"}}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","input":"use json_schema please"}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","input":"hi","response_format":{"type":"json_object"}}"#
    ));
}

#[test]
fn anthropic_asks_for_json_in_output_config_or_output_format() {
    let f = ApiFormat::AnthropicMessages;
    assert!(asks_for_json(
        f,
        br#"{"model":"m","max_tokens":10,"messages":[],"output_config":{"effort":"low","format":{"type":"json_schema","schema":{"type":"object"}}}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"model":"m","max_tokens":10,"messages":[],"output_format":{"type":"json_schema","schema":{}}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","max_tokens":10,"messages":[],"output_config":{"effort":"high"}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","max_tokens":10,"messages":[{"role":"user","content":"explain output_format json_schema"}]}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"model":"m","response_format":{"type":"json_object"}}"#
    ));
}

#[test]
fn gemini_asks_for_json_with_its_response_mime_type() {
    let f = ApiFormat::Gemini;
    assert!(asks_for_json(
        f,
        br#"{"contents":[{"parts":[{"text":"hi"}]}],"generationConfig":{"responseMimeType":"application/json"}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"contents":[],"generationConfig":{"temperature":0,"responseMimeType":"application/json","responseSchema":{"type":"OBJECT"}}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"contents":[],"generation_config":{"response_mime_type":"application/json","response_json_schema":{}}}"#
    ));
    assert!(asks_for_json(
        f,
        br#"{"contents":[],"generationConfig":{"responseMimeType":"application\/json"}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"contents":[],"generationConfig":{"responseMimeType":"text/plain"}}"#
    ));
    assert!(!asks_for_json(
        f,
        br#"{"contents":[{"parts":[{"text":"set Content-Type: application/json"}]}],"generationConfig":{}}"#
    ));
}

// ---------------------------------------------------------------------------------------------------
// Throughput
// ---------------------------------------------------------------------------------------------------

#[test]
#[ignore = "a measurement: cargo test --release -p ballast-core --lib quality -- --ignored --nocapture"]
fn throughput() {
    use tokio::time::Instant;

    /// ~16-byte deltas at char boundaries, as a stream brings them.
    fn deltas(s: &str) -> Vec<&str> {
        let mut out = Vec::new();
        let mut start = 0;
        while start < s.len() {
            let mut end = (start + 16).min(s.len());
            while !s.is_char_boundary(end) {
                end += 1;
            }
            out.push(&s[start..end]);
            start = end;
        }
        out
    }
    /// Best of five runs, in ns per byte.
    fn time(text: &str, mut run: impl FnMut(&[&str])) -> f64 {
        let d = deltas(text);
        (0..5)
            .map(|_| {
                let t0 = Instant::now();
                run(&d);
                t0.elapsed().as_nanos() as f64 / text.len() as f64
            })
            .fold(f64::INFINITY, f64::min)
    }
    fn fill(parts: &[&str]) -> String {
        let mut s = String::new();
        while s.len() < 1 << 20 {
            for p in parts {
                s.push_str(p);
                s.push_str("\n\n");
            }
        }
        s
    }
    let repetition = |d: &[&str]| {
        let mut r = Repetition::default();
        for t in d {
            r.feed(t);
        }
        std::hint::black_box(&r);
    };
    let json_check = |d: &[&str]| {
        let mut c = JsonCheck::default();
        for t in d {
            c.feed(t);
        }
        std::hint::black_box(&c);
    };

    let mixed = fill(&[
        PROSE,
        RUST_CODE,
        PYTHON_CODE,
        TABLE,
        BULLETS,
        CHINESE,
        JAPANESE,
        THAI,
    ]);
    let ascii = fill(&[PROSE, RUST_CODE, PYTHON_CODE, TABLE, BULLETS]);
    let unspaced = fill(&[CHINESE, JAPANESE, THAI]);
    let mut json = String::from("[");
    for i in 0u32.. {
        if json.len() >= 1 << 20 {
            break;
        }
        json.push_str(&format!(
            "{{\"id\":{i},\"name\":\"item {i} — naïve\",\"price\":{}.{:02}e-1,\"tags\":[\"a\",\"b\\n\",\"\\u00e9\"],\"ok\":true,\"note\":null}},\n",
            i * 7,
            i % 100
        ));
    }
    json.push_str("{}]");
    let mut c = JsonCheck::default();
    c.feed(&json);
    assert!(c.finish());

    println!(
        "Repetition::feed: {:.2} ns/byte mixed ({} KiB), {:.2} ASCII, {:.2} CJK/Thai; \
         {:.2} mixed in one call",
        time(&mixed, repetition),
        mixed.len() >> 10,
        time(&ascii, repetition),
        time(&unspaced, repetition),
        time(&mixed, |_| repetition(&[mixed.as_str()])),
    );
    println!(
        "JsonCheck::feed: {:.2} ns/byte JSON ({} KiB); {:.3} on prose (invalid at once)",
        time(&json, json_check),
        json.len() >> 10,
        time(&mixed, json_check),
    );
}
