//! The live gate (`ballast check --probe`): one tiny, capped request to every distinct target a
//! configuration names (provider + upstream model), in the target's own API and through the
//! gateway's own transport, prepared headers and endpoint URLs, before the configuration is trusted.
//! Per target: whether it is reachable, accepts the key, knows the model, answers whole and
//! streamed (and calls a tool, when asked), each probe's latency and the probe's cost; per route,
//! whether it keeps a working target. [`check_with`] is what a running gateway calls before it
//! takes a new configuration; [`Report`] is both the table people read and the JSON pipelines parse.
//!
//! Every route serves every client API (translation), so a target is probed once, in its own API:
//! a client API adds no upstream behaviour of its own to check.

use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::Serialize;
use tokio::time::Instant;

use ballast_core::api::ApiFormat;
use ballast_core::client_error::upstream_error_message;
use ballast_core::config::Config;
use ballast_core::model::{ChatRequest, Message, Part, Role, ToolChoice, ToolSpec, Usage};
use ballast_core::observe::{Observation, StreamObserver, observe_body};
use ballast_core::translate::{self, EncodeOptions};

use crate::state::{AppState, PreparedTarget, StateError};
use crate::upstream::{Failure, TimeoutKind, Transport, UpstreamRequest, UpstreamResponse};
use crate::upstream::{read_body, secs};

/// The version of the JSON shape ([`Report::version`]); bumped only by an incompatible change.
pub const REPORT_VERSION: u32 = 1;
/// What every probe asks.
pub const PROMPT: &str = "Reply with the single word: pong";
/// Output tokens an answer or stream probe asks for.
pub const PROBE_TOKENS: u32 = 8;
/// Output tokens the tool probe asks for (a call with its arguments needs a few more).
const TOOL_PROBE_TOKENS: u32 = 64;
/// The tool the tool probe offers and forces.
const TOOL_NAME: &str = "ballast_check";
/// The most of a probe's answer read (a probe's answer is a few hundred bytes).
const MAX_PROBE_BYTES: usize = 1 << 20;
/// The most of an error body read for its message.
const MAX_ERROR_BYTES: usize = 64 << 10;
/// The longest provider message quoted in an error.
const MAX_MESSAGE_CHARS: usize = 160;

/// How the gate probes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateOptions {
    /// One probe's time limit, from sending to the end of its answer.
    pub timeout: Duration,
    /// Also check that each target calls a tool (a forced call to a tiny tool).
    pub tools: bool,
    /// Targets probed at once.
    pub concurrency: usize,
}

impl Default for GateOptions {
    /// 10 s per probe, tools not checked, 4 targets at once.
    fn default() -> Self {
        Self {
            timeout: Duration::from_secs(10),
            tools: false,
            concurrency: 4,
        }
    }
}

/// The result of one check of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Check {
    Ok,
    Fail,
    /// Tried, but what came back says nothing about it (a 500 says nothing of the model).
    Unknown,
    /// Not tried: an earlier check of the target failed.
    Skipped,
    /// Not asked for (`tools` without `--tools`).
    NotChecked,
}

impl Check {
    /// As the table shows it.
    pub const fn symbol(self) -> &'static str {
        match self {
            Check::Ok => "ok",
            Check::Fail => "FAIL",
            Check::Unknown => "?",
            Check::Skipped => "skip",
            Check::NotChecked => "n/c",
        }
    }
}

/// Every check of one target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Checks {
    /// A connection was made.
    pub reachable: Check,
    /// The provider did not refuse the key (401, 403, Gemini's 400 `API_KEY_INVALID`).
    pub authenticated: Check,
    /// The provider knows the model (not 404, not a model-not-found error).
    pub model: Check,
    /// A whole (non-streamed) answer came back complete.
    pub answer: Check,
    /// A streamed answer gave a first token and ended cleanly (its terminal event, no error event).
    pub stream: Check,
    /// A forced call to a tiny tool came back as a tool call (only with `tools`).
    pub tools: Check,
}

/// Each probe's time, in milliseconds; `None` when it was not sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Latency {
    /// The whole answer: sent to last byte.
    pub answer: Option<u64>,
    /// The stream's first token.
    pub stream_first_token: Option<u64>,
    /// The stream: sent to last byte.
    pub stream: Option<u64>,
    /// The tool probe's whole answer.
    pub tools: Option<u64>,
}

/// Tokens the provider reported for the probes, summed; `None` when it reported none.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct ProbeUsage {
    pub input_tokens: Option<u64>,
    pub output_tokens: Option<u64>,
}

/// What the gate found of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetReport {
    /// `provider/model`.
    pub target: String,
    pub provider: String,
    pub model: String,
    /// The API the target was probed in (its own): `anthropic-messages`, `openai-chat`,
    /// `openai-responses` or `gemini`.
    pub api: &'static str,
    /// The routes naming it, in configuration order.
    pub routes: Vec<String>,
    pub checks: Checks,
    /// Reachable, authenticated, model, answer and stream all `ok`.
    pub working: bool,
    pub latency_ms: Latency,
    pub usage: ProbeUsage,
    /// The probes' cost in USD at list price, `None` when the model is not in the price table or
    /// the provider reported no usage.
    pub cost_usd: Option<f64>,
    /// One line per failed probe: `answer: HTTP 401: the provider refused the key`.
    pub errors: Vec<String>,
    /// Remarks that are not failures.
    pub notes: Vec<String>,
}

/// A route's verdict.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RouteStatus {
    /// Every target works.
    Ok,
    /// Some, not all, targets work.
    Degraded,
    /// No target works: the route would fail every request.
    Fail,
}

/// What the gate found of one route.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct RouteReport {
    pub route: String,
    pub status: RouteStatus,
    /// Its distinct targets that work, and how many it has.
    pub working: usize,
    pub targets: usize,
    /// Its targets that do not work (`provider/model`).
    pub failed_targets: Vec<String>,
}

/// The gate's verdict on a configuration.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Report {
    /// [`REPORT_VERSION`].
    pub version: u32,
    /// No route is left without a working target and no asked-for capability failed: the
    /// configuration may be taken (`ballast check --probe` exits 0).
    pub ok: bool,
    pub tools_checked: bool,
    pub timeout_ms: u64,
    /// How client APIs relate to the probes.
    pub note: &'static str,
    pub targets: Vec<TargetReport>,
    pub routes: Vec<RouteReport>,
    /// The sum of the targets' known costs.
    pub cost_usd: f64,
    /// Targets whose cost is unknown (a model missing from the price table, or no usage reported).
    pub cost_unknown: Vec<String>,
    /// Why `ok` is false, one line each.
    pub problems: Vec<String>,
    /// What does not fail the gate but should be looked at (a route left with one working target).
    pub warnings: Vec<String>,
}

const NOTE: &str = "every route serves every client API (OpenAI Chat Completions and Responses, \
Anthropic Messages, Gemini) by translation, so each target is probed once, in its own API";

/// Probes every target of `config` over HTTP (the gateway's pooled client).
pub async fn check(config: Config, opts: &GateOptions) -> Result<Report, StateError> {
    let st = AppState::new(config)?;
    Ok(check_state(&st, opts).await)
}

/// Probes every target of `config` through `transport` (a running gateway's own, or a test's).
pub async fn check_with(
    config: Config,
    transport: Arc<dyn Transport>,
    opts: &GateOptions,
) -> Result<Report, StateError> {
    let st = AppState::with_transport(config, 0, transport)?;
    Ok(check_state(&st, opts).await)
}

/// Probes every target of a prepared gateway state.
pub async fn check_state(st: &AppState, opts: &GateOptions) -> Report {
    // Distinct targets (by their live-state index, one per `provider/model`), at their first
    // appearance, with the routes naming them.
    let mut order: Vec<(usize, &PreparedTarget, Vec<String>)> = Vec::new();
    for (route, targets) in st.config.routes.iter().zip(&st.targets) {
        for t in targets {
            match order.iter_mut().find(|(s, ..)| *s == t.state) {
                Some((_, _, routes)) => {
                    if !routes.contains(&route.name) {
                        routes.push(route.name.clone());
                    }
                }
                None => order.push((t.state, t, vec![route.name.clone()])),
            }
        }
    }
    // The probes as futures first (none runs until polled): a stream mapping through a closure
    // over borrowed targets would not be `Send` for every lifetime, and the gate runs inside the
    // admin API's handlers.
    let probes: Vec<_> = order
        .into_iter()
        .map(|(_, t, routes)| probe_target(st, t, routes, opts))
        .collect();
    let targets: Vec<TargetReport> = futures_util::stream::iter(probes)
        .buffered(opts.concurrency.max(1))
        .collect()
        .await;
    verdict(st, targets, opts)
}

fn verdict(st: &AppState, targets: Vec<TargetReport>, opts: &GateOptions) -> Report {
    let mut problems = Vec::new();
    let mut warnings = Vec::new();
    let mut routes = Vec::with_capacity(st.config.routes.len());
    for (route, prepared) in st.config.routes.iter().zip(&st.targets) {
        let mut labels: Vec<&str> = Vec::new();
        for t in prepared {
            if !labels.contains(&t.label.as_str()) {
                labels.push(&t.label);
            }
        }
        let found = |label: &str| targets.iter().find(|r| r.target == label);
        let failed: Vec<String> = labels
            .iter()
            .filter(|l| !found(l).is_some_and(|r| r.working))
            .map(|l| (*l).to_owned())
            .collect();
        let working = labels.len().saturating_sub(failed.len());
        let status = if working == 0 {
            let causes: Vec<String> = failed
                .iter()
                .map(|l| {
                    let why = found(l)
                        .and_then(|r| r.errors.first())
                        .map_or("not probed", String::as_str);
                    format!("{l}: {why}")
                })
                .collect();
            problems.push(format!(
                "route {}: no working target ({})",
                route.name,
                causes.join("; ")
            ));
            RouteStatus::Fail
        } else if failed.is_empty() {
            RouteStatus::Ok
        } else {
            if working == 1 {
                let left = labels
                    .iter()
                    .find(|l| !failed.iter().any(|f| f == *l))
                    .copied()
                    .unwrap_or("?");
                warnings.push(format!(
                    "route {} is left with one working target ({left}): nothing to fail over to",
                    route.name
                ));
            }
            RouteStatus::Degraded
        };
        routes.push(RouteReport {
            route: route.name.clone(),
            status,
            working,
            targets: labels.len(),
            failed_targets: failed,
        });
    }
    if opts.tools {
        for t in targets.iter().filter(|t| t.checks.tools == Check::Fail) {
            let why = t
                .errors
                .iter()
                .find(|e| e.starts_with("tools:"))
                .map_or("tools: failed", String::as_str);
            problems.push(format!(
                "target {} (routes {}): {why}",
                t.target,
                t.routes.join(", ")
            ));
        }
    }
    let cost_usd = round_usd(targets.iter().filter_map(|t| t.cost_usd).sum());
    let cost_unknown = targets
        .iter()
        .filter(|t| t.cost_usd.is_none())
        .map(|t| t.target.clone())
        .collect();
    Report {
        version: REPORT_VERSION,
        ok: problems.is_empty(),
        tools_checked: opts.tools,
        timeout_ms: millis(opts.timeout),
        note: NOTE,
        targets,
        routes,
        cost_usd,
        cost_unknown,
        problems,
        warnings,
    }
}

/// The request every probe starts from.
fn probe_request(stream: bool) -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text(PROMPT.to_owned())],
        }],
        max_tokens: Some(PROBE_TOKENS),
        stream,
        include_usage: stream,
        ..ChatRequest::default()
    }
}

/// A forced call to a tool with one boolean argument (a model that cannot be forced is asked by
/// name).
fn tool_request() -> ChatRequest {
    ChatRequest {
        messages: vec![Message {
            role: Role::User,
            content: vec![Part::Text(format!(
                "Call the {TOOL_NAME} tool with ok set to true."
            ))],
        }],
        tools: vec![ToolSpec {
            name: TOOL_NAME.to_owned(),
            description: Some("Confirms that tool calling works.".to_owned()),
            parameters: serde_json::json!({
                "type": "object",
                "properties": {"ok": {"type": "boolean"}},
                "required": ["ok"],
            }),
            strict: None,
        }],
        tool_choice: Some(ToolChoice::Tool(TOOL_NAME.to_owned())),
        max_tokens: Some(TOOL_PROBE_TOKENS),
        ..ChatRequest::default()
    }
}

/// What one probe got back.
enum Contact {
    /// No connection was made.
    Unreachable(String),
    /// Nothing came back in time: whether a connection was made is not known.
    Silent(String),
    /// A connection was made and failed before an answer began.
    Broken(String),
    /// The provider answered with an error status.
    Refused {
        status: u16,
        message: Option<String>,
    },
    /// A 2xx answer: `Err` says why it was not a usable one.
    Answered(Result<(), String>),
}

impl Contact {
    fn connected(&self) -> bool {
        matches!(
            self,
            Contact::Broken(_) | Contact::Refused { .. } | Contact::Answered(_)
        )
    }

    fn auth_refused(&self) -> bool {
        match self {
            Contact::Refused { status, message } => is_auth_refusal(*status, message.as_deref()),
            _ => false,
        }
    }

    fn model_missing(&self) -> bool {
        match self {
            Contact::Refused { status, message } => {
                !self.auth_refused() && is_model_missing(*status, message.as_deref())
            }
            _ => false,
        }
    }

    fn ok(&self) -> bool {
        matches!(self, Contact::Answered(Ok(())))
    }

    /// Why it is not an answer; `None` when it is one.
    fn error(&self, model: &str) -> Option<String> {
        Some(match self {
            Contact::Unreachable(m) | Contact::Silent(m) | Contact::Broken(m) => m.clone(),
            Contact::Answered(Ok(())) => return None,
            Contact::Answered(Err(m)) => m.clone(),
            // The provider's text may quote (part of) the key: never pass it on.
            Contact::Refused { status, .. } if self.auth_refused() => {
                format!("HTTP {status}: the provider refused the key")
            }
            Contact::Refused { status, message } => {
                let said = message
                    .as_deref()
                    .map(|m| format!(": {}", clip(m)))
                    .unwrap_or_default();
                if self.model_missing() {
                    format!("HTTP {status}: model {model:?} not found (or a wrong base_url){said}")
                } else {
                    format!("HTTP {status}{said}")
                }
            }
        })
    }
}

/// One probe's result.
struct Probe {
    contact: Contact,
    elapsed: Duration,
    first_token: Option<Duration>,
    usage: Usage,
    note: Option<String>,
}

fn contact_of(f: &Failure) -> Contact {
    match f {
        Failure::Connect(m) => Contact::Unreachable(m.clone()),
        Failure::Timeout(TimeoutKind::Connect, _) => Contact::Unreachable("connect timeout".into()),
        Failure::Timeout(..) | Failure::Local(_) | Failure::OutOfTime => {
            Contact::Silent(f.to_string())
        }
        _ => Contact::Broken(f.to_string()),
    }
}

/// Reads an error answer's message (bounded), for the status it came with.
async fn refused(st: &AppState, resp: UpstreamResponse) -> Contact {
    let status = resp.status.as_u16();
    let body = read_body(resp, MAX_ERROR_BYTES, &mut st.runtime.buffered.reserve())
        .await
        .unwrap_or_default();
    Contact::Refused {
        status,
        message: upstream_error_message(&body),
    }
}

/// Sends `body` to the target's whole-answer endpoint and judges the answer (a tool call when
/// `want_tool`).
async fn whole(
    st: &AppState,
    t: &PreparedTarget,
    format: ApiFormat,
    body: Bytes,
    timeout: Duration,
    want_tool: bool,
) -> Probe {
    let started = Instant::now();
    let req = UpstreamRequest {
        url: t.url.clone(),
        headers: headers(st, t),
        body,
    };
    let mut head = false;
    let result = tokio::time::timeout(timeout, async {
        let resp = st.transport.send(req).await.map_err(|f| contact_of(&f))?;
        if !resp.status.is_success() {
            return Err(refused(st, resp).await);
        }
        head = true;
        read_body(resp, MAX_PROBE_BYTES, &mut st.runtime.buffered.reserve())
            .await
            .map_err(|f| Contact::Answered(Err(format!("the answer broke off: {f}"))))
    })
    .await;
    let mut usage = Usage::default();
    let contact = match result {
        Err(_) if head => Contact::Answered(Err(format!(
            "the answer stalled: no end within {}",
            secs(timeout)
        ))),
        Err(_) => Contact::Silent(format!("no answer within {}", secs(timeout))),
        Ok(Err(c)) => c,
        Ok(Ok(body)) => {
            let obs = observe_body(format, &body);
            usage = obs.usage;
            Contact::Answered(judge_whole(&obs).and_then(|()| {
                if want_tool {
                    calls_tool(format, &body)
                } else {
                    Ok(())
                }
            }))
        }
    };
    Probe {
        contact,
        elapsed: started.elapsed(),
        first_token: None,
        usage,
        note: None,
    }
}

fn judge_whole(obs: &Observation) -> Result<(), String> {
    if let Some(e) = &obs.error {
        return Err(format!("the answer is an error: {}", clip(e)));
    }
    if !obs.done {
        return Err("not a complete answer".to_owned());
    }
    Ok(())
}

/// The answer calls the probe's tool with an arguments object (read as translation reads it).
fn calls_tool(format: ApiFormat, body: &[u8]) -> Result<(), String> {
    let answer = translate::decode_response(format, body)
        .map_err(|e| format!("the answer cannot be read: {e}"))?;
    let call = answer.content.iter().find_map(|p| match p {
        Part::ToolCall(c) => Some(c),
        _ => None,
    });
    match call {
        None => Err(format!("answered without calling the {TOOL_NAME} tool")),
        Some(c) if c.name != TOOL_NAME => {
            Err(format!("called {:?}, not {TOOL_NAME}", clip(&c.name)))
        }
        Some(c)
            if !serde_json::from_str::<serde_json::Value>(&c.arguments)
                .is_ok_and(|v| v.is_object()) =>
        {
            Err(format!(
                "called {TOOL_NAME} with arguments that are not a JSON object"
            ))
        }
        Some(_) => Ok(()),
    }
}

/// Sends `body` to the target's streaming endpoint and reads the stream to its end.
async fn streamed(
    st: &AppState,
    t: &PreparedTarget,
    format: ApiFormat,
    body: Bytes,
    timeout: Duration,
) -> Probe {
    let started = Instant::now();
    let req = UpstreamRequest {
        url: t.url_stream.clone(),
        headers: headers(st, t),
        body,
    };
    let mut observer =
        StreamObserver::new(format).with_max_event_bytes(st.config.limits.max_event_bytes);
    let mut first_token = None;
    let mut head = false;
    let result = tokio::time::timeout(timeout, async {
        let resp = st.transport.send(req).await.map_err(|f| contact_of(&f))?;
        if !resp.status.is_success() {
            return Err(refused(st, resp).await);
        }
        head = true;
        let mut body = resp.body;
        let mut len = 0usize;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|f| {
                Contact::Answered(Err(format!("the stream broke off after {len} bytes: {f}")))
            })?;
            len = len.saturating_add(chunk.len());
            if len > MAX_PROBE_BYTES {
                return Err(Contact::Answered(Err(format!(
                    "the stream exceeds {MAX_PROBE_BYTES} bytes for a {PROBE_TOKENS}-token answer"
                ))));
            }
            if observer.feed(&chunk) {
                first_token = Some(started.elapsed());
            }
        }
        Ok(observer.finish())
    })
    .await;
    let obs = observer.observation();
    let mut note = None;
    let contact = match result {
        Err(_) if head && first_token.is_some() => Contact::Answered(Err(format!(
            "the stream stalled: no end within {}",
            secs(timeout)
        ))),
        Err(_) if head => {
            Contact::Answered(Err(format!("no first token within {}", secs(timeout))))
        }
        Err(_) => Contact::Silent(format!("no answer within {}", secs(timeout))),
        Ok(Err(c)) => c,
        Ok(Ok(mid_event)) => Contact::Answered(if let Some(e) = &obs.error {
            Err(format!("the provider's error event: {}", clip(e)))
        } else if !obs.done {
            Err(if mid_event {
                "the stream ended mid-event, without its terminal event".to_owned()
            } else {
                "the stream ended without its terminal event".to_owned()
            })
        } else if !obs.first_token_seen {
            if obs.stop_reason.as_deref().is_some_and(token_limit) {
                note = Some(format!(
                    "stream: no token within the probe's {PROBE_TOKENS}-token limit (a reasoning \
                     model?); the stream itself ended cleanly"
                ));
                Ok(())
            } else {
                Err("the stream ended without a token".to_owned())
            }
        } else {
            Ok(())
        }),
    };
    Probe {
        contact,
        elapsed: started.elapsed(),
        first_token,
        usage: obs.usage,
        note,
    }
}

/// A stop reason saying the output-token limit was reached (every API's spelling).
fn token_limit(reason: &str) -> bool {
    matches!(
        reason,
        "length" | "max_tokens" | "MAX_TOKENS" | "max_output_tokens"
    )
}

fn headers(st: &AppState, t: &PreparedTarget) -> http::HeaderMap {
    st.providers
        .get(t.provider)
        .map(|p| p.headers.clone())
        .unwrap_or_default()
}

async fn probe_target(
    st: &AppState,
    t: &PreparedTarget,
    routes: Vec<String>,
    opts: &GateOptions,
) -> TargetReport {
    let provider = st.providers.get(t.provider);
    let format = provider.map_or(ApiFormat::OpenAiChat, |p| p.format);
    let mut report = TargetReport {
        target: t.label.clone(),
        provider: provider.map(|p| p.name.clone()).unwrap_or_default(),
        model: t.model.clone(),
        api: format.as_str(),
        routes,
        checks: Checks {
            reachable: Check::Skipped,
            authenticated: Check::Skipped,
            model: Check::Skipped,
            answer: Check::Skipped,
            stream: Check::Skipped,
            tools: if opts.tools {
                Check::Skipped
            } else {
                Check::NotChecked
            },
        },
        working: false,
        latency_ms: Latency::default(),
        usage: ProbeUsage::default(),
        cost_usd: None,
        errors: Vec::new(),
        notes: Vec::new(),
    };
    let encode = |req: &ChatRequest| {
        let opts = EncodeOptions {
            upstream_model: &t.model,
            default_max_tokens: req.max_tokens.unwrap_or(PROBE_TOKENS),
            rules: t.rules,
        };
        translate::encode_request(format, req, &opts).map(|e| Bytes::from(e.body))
    };
    let (answer_body, stream_body) =
        match (encode(&probe_request(false)), encode(&probe_request(true))) {
            (Ok(a), Ok(s)) => (a, s),
            (Err(e), _) | (_, Err(e)) => {
                report
                    .errors
                    .push(format!("the probe cannot be written in {format}: {e}"));
                return report;
            }
        };

    let answer = whole(st, t, format, answer_body, opts.timeout, false).await;
    report.latency_ms.answer = Some(millis(answer.elapsed));
    // Unreachable, refused key or unknown model: the other probes would only say it again.
    let settled = matches!(answer.contact, Contact::Unreachable(_))
        || answer.contact.auth_refused()
        || answer.contact.model_missing();
    let mut stream = None;
    let mut tools = None;
    if !settled {
        let s = streamed(st, t, format, stream_body, opts.timeout).await;
        report.latency_ms.stream = Some(millis(s.elapsed));
        report.latency_ms.stream_first_token = s.first_token.map(millis);
        stream = Some(s);
        if opts.tools {
            let tp = match encode(&tool_request()) {
                Ok(body) => whole(st, t, format, body, opts.timeout, true).await,
                Err(e) => Probe {
                    contact: Contact::Answered(Err(format!(
                        "a tool call cannot be written in {format}: {e}"
                    ))),
                    elapsed: Duration::ZERO,
                    first_token: None,
                    usage: Usage::default(),
                    note: None,
                },
            };
            report.latency_ms.tools = Some(millis(tp.elapsed));
            tools = Some(tp);
        }
    }

    let probes: Vec<(&str, &Probe)> = [
        Some(("answer", &answer)),
        stream.as_ref().map(|p| ("stream", p)),
        tools.as_ref().map(|p| ("tools", p)),
    ]
    .into_iter()
    .flatten()
    .collect();
    let any = |f: &dyn Fn(&Contact) -> bool| probes.iter().any(|(_, p)| f(&p.contact));
    let c = &mut report.checks;
    c.reachable = if any(&Contact::connected) {
        Check::Ok
    } else if matches!(answer.contact, Contact::Unreachable(_)) {
        Check::Fail
    } else {
        Check::Unknown
    };
    let answered = any(&|c| matches!(c, Contact::Answered(_)));
    c.authenticated = if c.reachable == Check::Fail {
        Check::Skipped
    } else if any(&Contact::auth_refused) {
        Check::Fail
    } else if answered || any(&Contact::model_missing) {
        Check::Ok
    } else {
        Check::Unknown
    };
    c.model = if c.reachable == Check::Fail || c.authenticated == Check::Fail {
        Check::Skipped
    } else if any(&Contact::model_missing) {
        Check::Fail
    } else if answered {
        Check::Ok
    } else {
        Check::Unknown
    };
    if !settled {
        let judge = |p: Option<&Probe>| match p {
            Some(p) if p.contact.ok() => Check::Ok,
            Some(_) => Check::Fail,
            None => Check::Skipped,
        };
        c.answer = judge(Some(&answer));
        c.stream = judge(stream.as_ref());
        if opts.tools {
            c.tools = judge(tools.as_ref());
        }
    }
    report.working = [c.reachable, c.authenticated, c.model, c.answer, c.stream]
        .iter()
        .all(|c| *c == Check::Ok);

    let mut usage = ProbeUsage::default();
    for (name, p) in &probes {
        if let Some(e) = p.contact.error(&t.model) {
            report.errors.push(format!("{name}: {e}"));
        }
        if let Some(n) = &p.note {
            report.notes.push(n.clone());
        }
        let add = |sum: Option<u64>, n: Option<u64>| match (sum, n) {
            (Some(a), Some(b)) => Some(a.saturating_add(b)),
            (a, b) => a.or(b),
        };
        usage.input_tokens = add(usage.input_tokens, p.usage.input_tokens);
        usage.output_tokens = add(usage.output_tokens, p.usage.output_tokens);
    }
    report.usage = usage;
    report.cost_usd = match (
        list_price(&t.model),
        usage.input_tokens,
        usage.output_tokens,
    ) {
        (Some(price), i, o) if i.is_some() || o.is_some() => {
            Some(round_usd(price.cost(i.unwrap_or(0), o.unwrap_or(0))))
        }
        _ => None,
    };
    report
}

/// The provider refused the key: 401, 403, or a 400 about the key (Gemini's `API_KEY_INVALID`).
fn is_auth_refusal(status: u16, message: Option<&str>) -> bool {
    match status {
        401 | 403 => true,
        400 => message.is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("api key") || m.contains("api_key")
        }),
        _ => false,
    }
}

/// The provider does not know the model: 404, or a 400/422 saying so (OpenAI-compatible servers).
fn is_model_missing(status: u16, message: Option<&str>) -> bool {
    match status {
        404 => true,
        400 | 422 => message.is_some_and(|m| {
            let m = m.to_ascii_lowercase();
            m.contains("model")
                && [
                    "not found",
                    "does not exist",
                    "unknown model",
                    "invalid model",
                    "no such model",
                    "model_not_found",
                ]
                .iter()
                .any(|p| m.contains(p))
        }),
        _ => false,
    }
}

/// A provider's message, cut to a line's worth.
fn clip(m: &str) -> String {
    let one_line: String = m.split_whitespace().collect::<Vec<_>>().join(" ");
    match one_line.char_indices().nth(MAX_MESSAGE_CHARS) {
        Some((i, _)) => format!("{}…", one_line.get(..i).unwrap_or_default()),
        None => one_line,
    }
}

/// To a billionth of a dollar (no float noise in the JSON).
fn round_usd(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// A model's list price, USD per million tokens.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// The cost of `input` and `output` tokens, in USD.
    #[allow(
        clippy::cast_precision_loss,
        reason = "token counts are far below 2^52"
    )]
    pub fn cost(self, input: u64, output: u64) -> f64 {
        (input as f64 * self.input_per_mtok + output as f64 * self.output_per_mtok) / 1e6
    }
}

/// List prices (USD per million input and output tokens, standard tier, late 2025) of the
/// common model families. A model not here is costed "unknown", never guessed.
const PRICES: &[(&str, f64, f64)] = &[
    ("claude-opus-4-5", 5.0, 25.0),
    ("claude-opus-4-1", 15.0, 75.0),
    ("claude-opus-4-0", 15.0, 75.0),
    ("claude-opus-4", 15.0, 75.0),
    ("claude-sonnet-4-5", 3.0, 15.0),
    ("claude-sonnet-4-0", 3.0, 15.0),
    ("claude-sonnet-4", 3.0, 15.0),
    ("claude-3-7-sonnet", 3.0, 15.0),
    ("claude-3-5-sonnet", 3.0, 15.0),
    ("claude-haiku-4-5", 1.0, 5.0),
    ("claude-3-5-haiku", 0.8, 4.0),
    ("claude-3-haiku", 0.25, 1.25),
    ("gpt-5", 1.25, 10.0),
    ("gpt-5-chat", 1.25, 10.0),
    ("gpt-5.1", 1.25, 10.0),
    ("gpt-5-mini", 0.25, 2.0),
    ("gpt-5-nano", 0.05, 0.4),
    ("gpt-4.1", 2.0, 8.0),
    ("gpt-4.1-mini", 0.4, 1.6),
    ("gpt-4.1-nano", 0.1, 0.4),
    ("gpt-4o", 2.5, 10.0),
    ("gpt-4o-mini", 0.15, 0.6),
    ("o1", 15.0, 60.0),
    ("o3", 2.0, 8.0),
    ("o3-mini", 1.1, 4.4),
    ("o4-mini", 1.1, 4.4),
    ("gemini-2.5-pro", 1.25, 10.0),
    ("gemini-2.5-flash", 0.3, 2.5),
    ("gemini-2.5-flash-lite", 0.1, 0.4),
    ("gemini-2.0-flash", 0.1, 0.4),
    ("gemini-2.0-flash-lite", 0.075, 0.3),
];

/// The list price of `model`'s family: its name without a vendor prefix (`anthropic/`,
/// `models/`, Bedrock's `anthropic.`), a Vertex `@version`, a date (`-20250929`, `-2025-04-14`) or
/// `-latest`, looked up exactly (a prefix would price `gpt-5-pro` as `gpt-5`).
pub fn list_price(model: &str) -> Option<Price> {
    let m = model.to_ascii_lowercase();
    let m = m.rsplit('/').next().unwrap_or(&m);
    let m = m.split_once("anthropic.").map_or(m, |(_, rest)| rest);
    let m = m.split('@').next().unwrap_or(m);
    let mut m = m.strip_suffix("-latest").unwrap_or(m);
    // `-v1:0` (Bedrock), then a date: `-20250929` or `-2025-04-14`.
    if let Some((head, _)) = m.split_once("-v1:") {
        m = head;
    }
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if let Some((head, tail)) = m.rsplit_once('-')
        && tail.len() == 8
        && digits(tail)
    {
        m = head;
    } else if m.len() > 11
        && let Some((head, date)) = m.split_at_checked(m.len() - 11)
        && date.starts_with('-')
        && date
            .get(1..)
            .is_some_and(|d| d.split('-').map(str::len).eq([4, 2, 2]) && d.split('-').all(digits))
    {
        m = head;
    }
    PRICES
        .iter()
        .find(|(name, ..)| *name == m)
        .map(|&(_, input_per_mtok, output_per_mtok)| Price {
            input_per_mtok,
            output_per_mtok,
        })
}

impl Report {
    /// The report for people: a row per target, a line per route, then problems and warnings.
    pub fn table(&self) -> String {
        let mut out = String::new();
        let width = |f: &dyn Fn(&TargetReport) -> usize, min: usize| {
            self.targets.iter().map(f).max().unwrap_or(0).max(min)
        };
        let tw = width(&|t| t.target.chars().count(), 6);
        let aw = width(&|t| t.api.len(), 3);
        let rw = width(&|t| t.routes.join(",").chars().count(), 6).min(32);
        let _ = writeln!(
            out,
            "{:<tw$}  {:<aw$}  {:<rw$}  {:<5} {:<5} {:<5} {:<6} {:<6} {:<5}  {:>13}  {:>10}  ERROR",
            "TARGET",
            "API",
            "ROUTES",
            "REACH",
            "AUTH",
            "MODEL",
            "ANSWER",
            "STREAM",
            "TOOLS",
            "LATENCY",
            "COST",
        );
        for t in &self.targets {
            let c = &t.checks;
            let ms = |v: Option<u64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
            let latency = format!(
                "{}/{}ms",
                ms(t.latency_ms.answer),
                ms(t.latency_ms.stream_first_token)
            );
            let cost = t
                .cost_usd
                .map_or_else(|| "unknown".to_owned(), |c| format!("${c:.6}"));
            let error = t.errors.first().map_or("", String::as_str);
            let row = format!(
                "{:<tw$}  {:<aw$}  {:<rw$}  {:<5} {:<5} {:<5} {:<6} {:<6} {:<5}  {:>13}  {:>10}  {}",
                t.target,
                t.api,
                clip_to(&t.routes.join(","), rw),
                c.reachable.symbol(),
                c.authenticated.symbol(),
                c.model.symbol(),
                c.answer.symbol(),
                c.stream.symbol(),
                c.tools.symbol(),
                latency,
                cost,
                error,
            );
            let _ = writeln!(out, "{}", row.trim_end());
            for e in t.errors.iter().skip(1) {
                let _ = writeln!(out, "{:<tw$}  {e}", "");
            }
            for n in &t.notes {
                let _ = writeln!(out, "{:<tw$}  note: {n}", "");
            }
        }
        let _ = writeln!(
            out,
            "(LATENCY: whole answer / stream's first token. ?: unknown, the answer said nothing \
             of it;\n skip: not tried after an earlier failure; n/c: not checked{})",
            if self.tools_checked {
                ""
            } else {
                ", pass --tools"
            }
        );
        let _ = writeln!(out, "note: {}", self.note);
        let _ = writeln!(out);
        let nw = self
            .routes
            .iter()
            .map(|r| r.route.chars().count())
            .max()
            .unwrap_or(0);
        for r in &self.routes {
            let verdict = match r.status {
                RouteStatus::Ok => "OK".to_owned(),
                RouteStatus::Degraded => {
                    format!("DEGRADED ({} of {} working)", r.working, r.targets)
                }
                RouteStatus::Fail => format!("FAIL (0 of {} working)", r.targets),
            };
            let _ = writeln!(out, "route {:<nw$}  {verdict}", r.route);
        }
        let priced = if self.cost_unknown.is_empty() {
            String::new()
        } else {
            format!(" (cost unknown: {})", self.cost_unknown.join(", "))
        };
        let _ = writeln!(out, "probe cost: ${:.6}{priced}", self.cost_usd);
        for w in &self.warnings {
            let _ = writeln!(out, "warning: {w}");
        }
        for p in &self.problems {
            let _ = writeln!(out, "problem: {p}");
        }
        out
    }
}

fn clip_to(s: &str, width: usize) -> String {
    if s.chars().count() <= width {
        return s.to_owned();
    }
    let kept: String = s.chars().take(width.saturating_sub(1)).collect();
    format!("{kept}…")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prices_by_family() {
        let p = |m: &str| list_price(m).map(|p| (p.input_per_mtok, p.output_per_mtok));
        assert_eq!(p("claude-sonnet-4-5"), Some((3.0, 15.0)));
        assert_eq!(p("claude-sonnet-4-5-20250929"), Some((3.0, 15.0)));
        assert_eq!(p("anthropic/claude-haiku-4-5"), Some((1.0, 5.0)));
        assert_eq!(
            p("us.anthropic.claude-opus-4-1-20250805-v1:0"),
            Some((15.0, 75.0))
        );
        assert_eq!(p("claude-opus-4-5@20251101"), Some((5.0, 25.0)));
        assert_eq!(p("gpt-4.1-2025-04-14"), Some((2.0, 8.0)));
        assert_eq!(p("GPT-4.1-mini"), Some((0.4, 1.6)));
        assert_eq!(p("gpt-5-chat-latest"), Some((1.25, 10.0)));
        assert_eq!(p("models/gemini-2.5-flash"), Some((0.3, 2.5)));
        // Never a guess from a prefix.
        assert_eq!(p("gpt-5-pro"), None);
        assert_eq!(p("claude-opus-4-7"), None);
        assert_eq!(p("llama3.1:8b"), None);
        let cost = list_price("gpt-4.1").map(|p| p.cost(1_000_000, 1_000_000));
        assert_eq!(cost, Some(10.0));
    }

    #[test]
    fn refusals_are_classified() {
        assert!(is_auth_refusal(401, None));
        assert!(is_auth_refusal(403, Some("PERMISSION_DENIED")));
        assert!(is_auth_refusal(
            400,
            Some("API key not valid. Please pass a valid API key.")
        ));
        assert!(!is_auth_refusal(400, Some("max_tokens: Field required")));
        assert!(is_model_missing(404, None));
        assert!(is_model_missing(
            400,
            Some("The model `gpt-9` does not exist or you do not have access to it.")
        ));
        assert!(!is_model_missing(400, Some("messages: Field required")));
        assert!(!is_model_missing(500, Some("model not found")));
    }

    #[test]
    fn messages_are_clipped_to_one_line() {
        assert_eq!(clip("a\n  b"), "a b");
        let long = "é".repeat(500);
        assert_eq!(clip(&long).chars().count(), MAX_MESSAGE_CHARS + 1);
    }
}
