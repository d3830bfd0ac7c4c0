//! The open-loop load: the seeded request plan (same for the gateway and the baseline), one HTTP
//! exchange read to its end and classified, and the driver that fires requests at a fixed rate
//! whatever the answers do.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use serde_json::json;
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::Instant;

use super::scenario::{ClientApi, Lang, Traffic};

/// Largest body read from one answer; past it the answer counts as read.
const MAX_BODY: usize = 4 << 20;

const PROMPTS: &[&str] = &[
    "Summarise the main causes of the French Revolution in three sentences.",
    "Write a short friendly reply to a customer whose parcel is late.",
    "Explain what a circuit breaker does in a distributed system.",
    "List three ways to make a small garden more drought tolerant.",
    "Describe how a hash map works to a new programmer.",
    "Draft a two line product update about faster search.",
    "What should I check before deploying a database migration?",
    "Give me a haiku about the sea at night.",
];

const PROMPTS_JA: &[&str] = &[
    "フランス革命の主な原因を三文で要約してください。",
    "荷物の到着が遅れているお客様への短い返信を書いてください。",
    "分散システムにおけるサーキットブレーカーの役割を説明してください。",
    "夜の海についての俳句をください。",
];

const PROMPTS_ZH: &[&str] = &[
    "请用三句话总结法国大革命的主要原因。",
    "给包裹延误的客户写一封简短友好的回复。",
    "解释分布式系统中断路器的作用。",
    "部署数据库迁移之前应该检查什么？",
];

const PROMPTS_RU: &[&str] = &[
    "Кратко опишите основные причины Французской революции в трёх предложениях.",
    "Напишите короткий дружелюбный ответ клиенту, чья посылка задерживается.",
    "Объясните, что делает автоматический выключатель в распределённой системе.",
    "Что проверить перед миграцией базы данных?",
];

const PROMPTS_TH: &[&str] = &[
    "สรุปสาเหตุหลักของการปฏิวัติฝรั่งเศสในสามประโยค",
    "เขียนคำตอบสั้นๆ ที่เป็นมิตรถึงลูกค้าที่พัสดุล่าช้า",
    "อธิบายว่าเซอร์กิตเบรกเกอร์ทำอะไรในระบบกระจาย",
    "ควรตรวจสอบอะไรบ้างก่อนย้ายฐานข้อมูล",
];

/// A tool-using request names its tool, so the model calls it.
const TOOL_PROMPT: &str = "What is the weather in Oslo right now? Use get_weather.";

fn prompts(lang: Lang) -> &'static [&'static str] {
    match lang {
        Lang::En => PROMPTS,
        Lang::Ja => PROMPTS_JA,
        Lang::Zh => PROMPTS_ZH,
        Lang::Ru => PROMPTS_RU,
        Lang::Th => PROMPTS_TH,
    }
}

/// The tool a tool-using request declares, in each client API's shape.
fn tools(api: ClientApi) -> serde_json::Value {
    let params = json!({"type": "object", "properties": {"city": {"type": "string"}},
                        "required": ["city"]});
    let about = "The current weather in a city";
    match api {
        ClientApi::Anthropic => {
            json!([{"name": "get_weather", "description": about, "input_schema": params}])
        }
        ClientApi::OpenAi => json!([{"type": "function", "function": {
            "name": "get_weather", "description": about, "parameters": params}}]),
        ClientApi::Responses => json!([{"type": "function", "name": "get_weather",
            "description": about, "parameters": params}]),
        ClientApi::Gemini => json!([{"functionDeclarations": [{
            "name": "get_weather", "description": about, "parameters": params}]}]),
    }
}

/// A tiny seeded generator (splitmix64): the same seed, the same plan.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed ^ 0x9E37_79B9_7F4A_7C15)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// One planned request.
#[derive(Clone, Debug)]
pub struct Shot {
    pub index: u64,
    /// Seconds from the start of load.
    pub at: f64,
    pub api: ClientApi,
    pub stream: bool,
    pub prompt: usize,
    pub lang: Lang,
    /// Declares a tool and asks for it.
    pub tool: bool,
}

impl Shot {
    fn prompt_text(&self) -> &'static str {
        if self.tool {
            return TOOL_PROMPT;
        }
        let p = prompts(self.lang);
        p[self.prompt % p.len()]
    }
}

/// The plan: `rate` a second for `secs`, at most `max` requests.
pub fn plan(traffic: &Traffic, secs: f64, seed: u64) -> Vec<Shot> {
    let mut rng = Rng::new(seed);
    let count = ((secs * traffic.rate).floor() as u64).min(traffic.max_requests);
    (0..count)
        .map(|i| {
            let api = traffic.apis[(rng.next_u64() % traffic.apis.len() as u64) as usize];
            let stream = rng.unit() < traffic.stream_share;
            let prompt = (rng.next_u64() % PROMPTS.len() as u64) as usize;
            let tool = rng.unit() < traffic.tool_share;
            let mut pick = rng.unit();
            let mut lang = Lang::En;
            for &(l, w) in &traffic.languages {
                lang = l;
                if pick < w {
                    break;
                }
                pick -= w;
            }
            Shot {
                index: i,
                at: i as f64 / traffic.rate,
                api,
                stream,
                prompt,
                lang,
                tool,
            }
        })
        .collect()
}

/// The request for `shot` against `base` with `model`: (url, body, headers).
pub fn request(
    shot: &Shot,
    base: &str,
    model: &str,
    max_tokens: u64,
) -> (String, String, Vec<(&'static str, &'static str)>) {
    let prompt = shot.prompt_text();
    let base = base.trim_end_matches('/');
    let (url, mut body, headers) = plain_request(shot, base, model, max_tokens, prompt);
    if shot.tool {
        body["tools"] = tools(shot.api);
    }
    (url, body.to_string(), headers)
}

fn plain_request(
    shot: &Shot,
    base: &str,
    model: &str,
    max_tokens: u64,
    prompt: &str,
) -> (String, serde_json::Value, Vec<(&'static str, &'static str)>) {
    match shot.api {
        ClientApi::Anthropic => (
            format!("{base}/v1/messages"),
            json!({"model": model, "max_tokens": max_tokens, "stream": shot.stream,
                   "messages": [{"role": "user", "content": prompt}]}),
            vec![
                ("anthropic-version", "2023-06-01"),
                ("content-type", "application/json"),
            ],
        ),
        ClientApi::OpenAi => {
            let mut body = json!({"model": model, "stream": shot.stream,
                                  "messages": [{"role": "user", "content": prompt}]});
            if shot.stream {
                // As an application counting its tokens does: the stream ends with its usage.
                body["stream_options"] = json!({"include_usage": true});
            }
            (
                format!("{base}/v1/chat/completions"),
                body,
                vec![("content-type", "application/json")],
            )
        }
        ClientApi::Responses => (
            format!("{base}/v1/responses"),
            json!({"model": model, "stream": shot.stream, "input": prompt}),
            vec![("content-type", "application/json")],
        ),
        ClientApi::Gemini => (
            if shot.stream {
                format!("{base}/v1beta/models/{model}:streamGenerateContent?alt=sse")
            } else {
                format!("{base}/v1beta/models/{model}:generateContent")
            },
            json!({"contents": [{"role": "user", "parts": [{"text": prompt}]}],
                   "generationConfig": {"maxOutputTokens": max_tokens}}),
            vec![
                ("x-goog-api-key", "ballast-chaos"),
                ("content-type", "application/json"),
            ],
        ),
    }
}

/// How one exchange ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Ok,
    /// An answer with text in a script the (English) prompt does not use.
    WrongScript,
    /// An HTTP error status.
    Status(u16),
    /// A stream that ended with an error event or without its terminal event.
    BrokenStream,
    /// The connection failed or was cut.
    Connection,
    /// The client gave up waiting.
    Timeout,
    /// Never sent: the load generator's in-flight cap was reached.
    NotSent,
}

impl Kind {
    pub fn label(self) -> String {
        match self {
            Kind::Ok => "ok".into(),
            Kind::WrongScript => "wrong_script".into(),
            Kind::Status(s) => format!("http_{s}"),
            Kind::BrokenStream => "broken_stream".into(),
            Kind::Connection => "connection".into(),
            Kind::Timeout => "timeout".into(),
            Kind::NotSent => "not_sent".into(),
        }
    }

    /// Whether a naive client retries it (connection errors, 408, 409, 429, 5xx).
    pub fn retryable(self) -> bool {
        matches!(self, Kind::Connection)
            || matches!(self, Kind::Status(s) if s == 408 || s == 409 || s == 429 || s >= 500)
    }
}

/// One exchange's result.
#[derive(Clone, Debug)]
pub struct Exchange {
    pub kind: Kind,
    pub target: Option<String>,
    pub fallback: bool,
    /// The tokens the answer reports (input, output); zero when it reports none.
    pub tokens: Tokens,
}

/// Input and output tokens.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
}

impl Tokens {
    pub fn add(&mut self, other: Tokens) {
        self.input = self.input.saturating_add(other.input);
        self.output = self.output.saturating_add(other.output);
    }
}

/// Sends one request and reads its answer to the end (or `timeout`), then classifies it.
pub async fn exchange(
    http: &reqwest::Client,
    shot: &Shot,
    base: &str,
    model: &str,
    max_tokens: u64,
    timeout: Duration,
) -> Exchange {
    let (url, body, headers) = request(shot, base, model, max_tokens);
    let mut rb = http.post(&url).body(body).timeout(timeout);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    let fail = |kind| Exchange {
        kind,
        target: None,
        fallback: false,
        tokens: Tokens::default(),
    };
    let mut resp = match rb.send().await {
        Ok(r) => r,
        Err(e) if e.is_timeout() => return fail(Kind::Timeout),
        Err(_) => return fail(Kind::Connection),
    };
    let header = |name: &str| {
        resp.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let target = header("x-ballast-target");
    let fallback = header("x-ballast-fallback").as_deref() == Some("true");
    let status = resp.status().as_u16();
    let mut body: Vec<u8> = Vec::new();
    let read_error = loop {
        match resp.chunk().await {
            Ok(Some(c)) => {
                if body.len() < MAX_BODY {
                    body.extend_from_slice(&c);
                }
            }
            Ok(None) => break None,
            Err(e) => {
                break Some(if e.is_timeout() {
                    Kind::Timeout
                } else if shot.stream && status == 200 {
                    // An SDK hands a stream over at its headers and never retries one that breaks
                    // while it is read: the application gets the error.
                    Kind::BrokenStream
                } else {
                    Kind::Connection
                });
            }
        }
    };
    let kind = if status != 200 {
        Kind::Status(status)
    } else if let Some(k) = read_error {
        k
    } else {
        classify(shot, &body)
    };
    let tokens = if status == 200 {
        usage(shot.stream, &body)
    } else {
        Tokens::default()
    };
    Exchange {
        kind,
        target,
        fallback,
        tokens,
    }
}

/// The tokens an answer reports: OpenAI's `usage.prompt_tokens`/`completion_tokens`, Anthropic's and
/// the Responses API's `usage.input_tokens`/`output_tokens` (under `message` in `message_start`, under
/// `response` in `response.completed`), Gemini's `usageMetadata`. A stream's counts are cumulative
/// (Anthropic's `message_delta`, Gemini's chunks), so each is the largest any event reports.
pub fn usage(stream: bool, body: &[u8]) -> Tokens {
    let mut t = Tokens::default();
    let mut read = |v: &serde_json::Value| {
        let blocks = [
            &v["usage"],
            &v["message"]["usage"],
            &v["response"]["usage"],
            &v["usageMetadata"],
        ];
        for u in blocks {
            let count = |keys: &[&str]| keys.iter().filter_map(|k| u[*k].as_u64()).max();
            if let Some(i) = count(&["prompt_tokens", "input_tokens", "promptTokenCount"]) {
                t.input = t.input.max(i);
            }
            if let Some(o) = count(&["completion_tokens", "output_tokens", "candidatesTokenCount"])
            {
                t.output = t.output.max(o);
            }
        }
    };
    if stream {
        let text = String::from_utf8_lossy(body);
        for line in text.lines() {
            if let Some(data) = line.strip_prefix("data:")
                && let Ok(v) = serde_json::from_str::<serde_json::Value>(data.trim())
            {
                read(&v);
            }
        }
    } else if let Ok(v) = serde_json::from_slice::<serde_json::Value>(body) {
        read(&v);
    }
    t
}

/// A whole 200 answer: complete (a stream's terminal event, no error event) and in the prompt's
/// script.
fn classify(shot: &Shot, body: &[u8]) -> Kind {
    let text = String::from_utf8_lossy(body);
    if shot.stream {
        let terminal = match shot.api {
            ClientApi::Anthropic => "message_stop",
            ClientApi::OpenAi => "[DONE]",
            ClientApi::Responses => "response.completed",
            ClientApi::Gemini => "\"finishReason\"",
        };
        let error = text.contains("event: error")
            || text.contains("\"type\":\"error\"")
            || text.contains("\"error\":{");
        if error || !text.contains(terminal) {
            return Kind::BrokenStream;
        }
    } else if serde_json::from_str::<serde_json::Value>(&text).is_err()
        || (shot.api == ClientApi::Gemini && !text.contains("\"finishReason\""))
    {
        return Kind::BrokenStream;
    }
    if wrong_script(&text, shot.lang) {
        Kind::WrongScript
    } else {
        Kind::Ok
    }
}

/// Whether the text has letters of a script other than Latin and the prompt's own (raw or as
/// `\uXXXX` escapes).
fn wrong_script(text: &str, lang: Lang) -> bool {
    let foreign = |c: u32| {
        ((0x0370..0x2000).contains(&c) || (0x2E80..0xFFF0).contains(&c)) && !lang.allows(c)
    };
    if text.chars().any(|c| foreign(c as u32)) {
        return true;
    }
    let b = text.as_bytes();
    let mut i = 0;
    while i + 6 <= b.len() {
        if b[i] == b'\\' && b[i + 1] == b'u' {
            if let Some(c) = std::str::from_utf8(&b[i + 2..i + 6])
                .ok()
                .and_then(|h| u32::from_str_radix(h, 16).ok())
                && foreign(c)
                && !(0xD800..0xE000).contains(&c)
            {
                return true;
            }
            i += 6;
        } else {
            i += 1;
        }
    }
    false
}

/// What the application saw for one planned request.
#[derive(Clone, Debug)]
pub struct Outcome {
    pub index: u64,
    pub start: f64,
    pub latency: f64,
    pub kind: Kind,
    pub target: Option<String>,
    pub fallback: bool,
    /// Upstream attempts this request cost, when the client knows it (the baseline does).
    pub attempts: u32,
    /// The tokens its answers reported.
    pub tokens: Tokens,
}

impl Outcome {
    pub fn ok(&self) -> bool {
        self.kind == Kind::Ok
    }
}

/// How a planned request is carried out: the gateway client sends once, the naive one retries.
pub trait Client: Send + Sync + 'static {
    fn run(
        self: Arc<Self>,
        shot: Shot,
        deadline: Instant,
    ) -> impl std::future::Future<Output = (Exchange, u32)> + Send;
}

/// Fires `shots` at their times from `start`, never waiting for answers (open loop), with at most
/// `max_in_flight` outstanding; every request ends by `deadline`. Outcomes go to `out` as they end.
pub async fn drive<C: Client>(
    client: Arc<C>,
    shots: Vec<Shot>,
    start: Instant,
    deadline: Instant,
    max_in_flight: usize,
    out: mpsc::UnboundedSender<Outcome>,
) {
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tasks = JoinSet::new();
    for shot in shots {
        tokio::time::sleep_until(start + Duration::from_secs_f64(shot.at)).await;
        // Reap what finished so the set stays small.
        while tasks.try_join_next().is_some() {}
        if in_flight.load(Ordering::Relaxed) >= max_in_flight {
            let _ = out.send(Outcome {
                index: shot.index,
                start: shot.at,
                latency: 0.0,
                kind: Kind::NotSent,
                target: None,
                fallback: false,
                attempts: 0,
                tokens: Tokens::default(),
            });
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let (client, out, in_flight) = (client.clone(), out.clone(), in_flight.clone());
        tasks.spawn(async move {
            let began = Instant::now();
            let (index, at) = (shot.index, shot.at);
            let (ex, attempts) = client.run(shot, deadline).await;
            in_flight.fetch_sub(1, Ordering::Relaxed);
            let _ = out.send(Outcome {
                index,
                start: at,
                latency: began.elapsed().as_secs_f64(),
                kind: ex.kind,
                target: ex.target,
                fallback: ex.fallback,
                attempts,
                tokens: ex.tokens,
            });
        });
    }
    // Every request carries its own timeout ending by the deadline; this only guards against a stuck
    // task.
    let _ = tokio::time::timeout_at(deadline + Duration::from_secs(2), async {
        while tasks.join_next().await.is_some() {}
    })
    .await;
    tasks.abort_all();
}

/// The gateway's client: one request, the client timeout capped by the run's end.
pub struct GatewayClient {
    pub http: reqwest::Client,
    pub base: String,
    pub model: String,
    pub max_tokens: u64,
    pub timeout: Duration,
}

impl Client for GatewayClient {
    async fn run(self: Arc<Self>, shot: Shot, deadline: Instant) -> (Exchange, u32) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ex = exchange(
            &self.http,
            &shot,
            &self.base,
            &self.model,
            self.max_tokens,
            self.timeout.min(left),
        )
        .await;
        (ex, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrong_script_sees_raw_and_escaped_letters() {
        assert!(!wrong_script("Hello, world — “quoted” café", Lang::En));
        assert!(wrong_script("Hello สวัสดี", Lang::En));
        assert!(wrong_script(r#"{"text":"Hello \u0e2a"}"#, Lang::En));
        assert!(!wrong_script(r#"{"text":"Hello \u00e9 \u2014"}"#, Lang::En));
    }

    #[test]
    fn the_prompts_own_script_is_not_wrong() {
        assert!(!wrong_script("こんにちは、世界", Lang::Ja));
        assert!(wrong_script("こんにちは สวัสดี", Lang::Ja));
        assert!(!wrong_script("สวัสดี", Lang::Th));
        assert!(!wrong_script("Привет", Lang::Ru));
        assert!(wrong_script("Привет", Lang::Zh));
    }

    #[test]
    fn the_plan_mixes_tools_and_languages_as_asked() {
        let traffic = Traffic {
            rate: 100.0,
            route: "chat".into(),
            stream_share: 0.5,
            tool_share: 0.25,
            languages: vec![(Lang::En, 0.5), (Lang::Ja, 0.5)],
            apis: vec![ClientApi::OpenAi, ClientApi::Anthropic],
            client_timeout: Duration::from_secs(1),
            max_in_flight: 10,
            max_requests: 10_000,
            max_tokens: 16,
        };
        let shots = plan(&traffic, 40.0, 3);
        let share = |f: &dyn Fn(&Shot) -> bool| {
            shots.iter().filter(|s| f(s)).count() as f64 / shots.len() as f64
        };
        assert!((share(&|s| s.tool) - 0.25).abs() < 0.03);
        assert!((share(&|s| s.lang == Lang::Ja) - 0.5).abs() < 0.03);
        let tool = shots
            .iter()
            .find(|s| s.tool && s.api == ClientApi::OpenAi)
            .unwrap();
        let (_, body, _) = request(tool, "http://127.0.0.1:1", "chat", 16);
        let body: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(body["tools"][0]["function"]["name"], "get_weather");
    }

    #[test]
    fn usage_is_read_from_every_api() {
        let t = |input, output| Tokens { input, output };
        let openai = br#"{"usage":{"prompt_tokens":12,"completion_tokens":30,"total_tokens":42}}"#;
        assert_eq!(usage(false, openai), t(12, 30));
        let openai_stream = b"data: {\"choices\":[]}\n\ndata: {\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":30}}\n\ndata: [DONE]\n\n";
        assert_eq!(usage(true, openai_stream), t(12, 30));
        let anthropic_stream = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"usage\":{\"input_tokens\":9,\"output_tokens\":1}}}\n\nevent: message_delta\ndata: {\"type\":\"message_delta\",\"usage\":{\"output_tokens\":25}}\n\n";
        assert_eq!(usage(true, anthropic_stream), t(9, 25));
        let responses_stream = b"event: response.completed\ndata: {\"type\":\"response.completed\",\"response\":{\"usage\":{\"input_tokens\":7,\"output_tokens\":11}}}\n\n";
        assert_eq!(usage(true, responses_stream), t(7, 11));
        let gemini =
            br#"{"candidates":[],"usageMetadata":{"promptTokenCount":5,"candidatesTokenCount":8}}"#;
        assert_eq!(usage(false, gemini), t(5, 8));
        assert_eq!(usage(false, b"not json"), t(0, 0));
    }

    #[test]
    fn the_plan_is_seeded_and_open_loop() {
        let t = Traffic {
            rate: 10.0,
            route: "chat".into(),
            stream_share: 0.5,
            tool_share: 0.0,
            languages: vec![(Lang::En, 1.0)],
            apis: vec![ClientApi::Anthropic, ClientApi::OpenAi],
            client_timeout: Duration::from_secs(600),
            max_in_flight: 10,
            max_requests: 1000,
            max_tokens: 64,
        };
        let a = plan(&t, 3.0, 7);
        let b = plan(&t, 3.0, 7);
        assert_eq!(a.len(), 30);
        assert!((a[29].at - 2.9).abs() < 1e-9);
        assert!(
            a.iter()
                .zip(&b)
                .all(|(x, y)| x.stream == y.stream && x.api == y.api)
        );
        assert!(a.iter().any(|s| s.stream) && a.iter().any(|s| !s.stream));
    }
}
