//! `ballast config apply|rollout|abort|rollback`: staged configuration rollouts on a running
//! gateway through its admin API, and [`Gateway`], how this binary calls an admin API (base URL,
//! admin key, bounded answers, and what a 401, a 404 or an unreachable gateway mean).
//!
//! The gateway's answers are read leniently: a field that is missing, null or of another type is
//! left out of the text, never an error (`--json` prints them as they are).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::Value;

use crate::cli::{ConfigApplyArgs, ConfigRollbackArgs, GatewayArgs, LiveConfigCommand};

/// The largest answer read from an admin API, and the largest configuration file sent.
const MAX_BYTES: usize = 8 * 1024 * 1024;
/// A read (`GET /admin/rollout`) or an abort, connection to last byte.
const SHORT_TIMEOUT: Duration = Duration::from_secs(10);
/// An apply or a rollback: the gateway checks the configuration and may probe its targets first.
const APPLY_TIMEOUT: Duration = Duration::from_secs(120);
/// How often `--wait` reads the rollout.
const POLL_EVERY: Duration = Duration::from_secs(1);
/// Failed reads in a row `--wait` lets pass (a network blip, a busy gateway) before it gives up.
const MAX_POLL_FAILURES: u32 = 10;
/// How much of an answer that is not the admin API's JSON an error message quotes.
const MAX_QUOTED: usize = 1000;

/// How a command that did not fail ended: `config apply --wait` exits 2 when the rollout it
/// followed was rolled back. A failure is an `Err` (exit 1).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    Done,
    RolledBack,
}

impl Exit {
    pub fn code(self) -> ExitCode {
        match self {
            Exit::Done => ExitCode::SUCCESS,
            Exit::RolledBack => ExitCode::from(2),
        }
    }

    /// For a caller with no exit code of its own: a rollback is a failure.
    pub fn into_result(self) -> Result<(), String> {
        match self {
            Exit::Done => Ok(()),
            Exit::RolledBack => Err("the rollout was rolled back".to_owned()),
        }
    }
}

pub async fn run(command: LiveConfigCommand) -> Result<Exit, String> {
    match command {
        LiveConfigCommand::Apply(a) => apply(&a, POLL_EVERY).await,
        LiveConfigCommand::Rollout(g) => rollout(&g).await,
        LiveConfigCommand::Abort(g) => abort(&g).await,
        LiveConfigCommand::Rollback(a) => rollback(&a).await,
    }
}

// ---------------------------------------------------------------------------------------------
// An admin request to a gateway.

/// A running gateway's admin API: its base URL and admin key.
pub struct Gateway {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

/// An admin API's answer, whatever its status; its body read up to [`MAX_BYTES`].
#[derive(Debug)]
pub struct Answer {
    pub endpoint: String,
    pub status: StatusCode,
    pub body: String,
    /// Whether an admin key was sent (a 401 then means a wrong one).
    keyed: bool,
}

impl Gateway {
    /// `url` is the gateway's base URL, or one of its admin endpoints (`…/admin/config`): what
    /// follows the last `/admin` is dropped.
    pub fn new(url: &str, key: Option<&str>) -> Result<Self, String> {
        Ok(Self {
            base: base_url(url),
            key: key.map(str::to_owned),
            http: ballast_server::plain_client(APPLY_TIMEOUT)?,
        })
    }

    fn from_args(g: &GatewayArgs) -> Result<Self, String> {
        Self::new(&g.gateway, g.admin_key.as_deref())
    }

    /// `method path` (with its query) with the admin key, and `body` as (content type, text).
    /// `Err` only when no answer came (unreachable, too slow, too large).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<(&str, String)>,
        timeout: Duration,
    ) -> Result<Answer, String> {
        let endpoint = format!("{}{path}", self.base);
        let mut req = self.http.request(method, &endpoint).timeout(timeout);
        if let Some(key) = &self.key {
            req = req.bearer_auth(key);
        }
        if let Some((content_type, text)) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .body(text);
        }
        // The request's timeout bounds the whole exchange; this bounds it even if that changes.
        let read = async {
            let mut resp = req
                .send()
                .await
                .map_err(|e| format!("cannot reach {endpoint}: {}", error_chain(&e)))?;
            let status = resp.status();
            let mut body = Vec::new();
            while let Some(chunk) = resp
                .chunk()
                .await
                .map_err(|e| format!("{endpoint}: reading the answer: {}", error_chain(&e)))?
            {
                if body.len() + chunk.len() > MAX_BYTES {
                    return Err(format!(
                        "{endpoint}: the answer is larger than {MAX_BYTES} bytes"
                    ));
                }
                body.extend_from_slice(&chunk);
            }
            Ok((status, body))
        };
        let (status, body) = tokio::time::timeout(timeout, read).await.map_err(|_| {
            format!(
                "{endpoint}: no answer within {}",
                humantime::format_duration(timeout)
            )
        })??;
        Ok(Answer {
            endpoint,
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
            keyed: self.key.is_some(),
        })
    }
}

/// The gateway's base URL from a base URL or an admin endpoint, without a trailing `/`.
fn base_url(url: &str) -> String {
    let mut base = url.trim_end_matches('/');
    if let Some(i) = base.rfind("/admin")
        && matches!(
            base[i + "/admin".len()..].chars().next(),
            None | Some('/' | '?')
        )
    {
        base = base[..i].trim_end_matches('/');
    }
    base.to_owned()
}

/// An error with its causes (reqwest's own text rarely says "connection refused").
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        let c = cause.to_string();
        if !text.contains(&c) {
            text.push_str(": ");
            text.push_str(&c);
        }
        source = cause.source();
    }
    text
}

impl Answer {
    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<Value> {
        serde_json::from_str(&self.body).ok()
    }

    /// The admin API's `{"error": {"message": …}}` (or `{"error": "…"}`).
    fn message(&self) -> Option<String> {
        let v = self.json()?;
        let e = &v["error"];
        e["message"]
            .as_str()
            .or_else(|| e.as_str())
            .map(str::to_owned)
    }

    /// The admin API's `{"error": {"problems": […]}}`, each as text.
    fn problems(&self) -> Vec<String> {
        self.json()
            .map(|v| list_of(&v["error"]["problems"]))
            .unwrap_or_default()
    }

    /// What an unexpected answer means: 401 (no or a wrong admin key), 404 (no admin API, or not
    /// this endpoint), else the status and the gateway's message (or its body).
    pub fn failure(&self) -> String {
        let e = &self.endpoint;
        let status = self.status;
        match status.as_u16() {
            401 if self.keyed => format!(
                "{e}: HTTP {status}: the gateway refused this admin key (--admin-key or BALLAST_ADMIN_KEY): it is not its [admin] key"
            ),
            401 => format!(
                "{e}: HTTP {status}: the gateway's admin key is needed (--admin-key or BALLAST_ADMIN_KEY)"
            ),
            404 => match self.message() {
                Some(m) => format!("{e}: HTTP {status}: {m}"),
                None => format!(
                    "{e}: HTTP {status}: the gateway's admin API is disabled (no [admin] key) or this gateway is too old to serve this endpoint"
                ),
            },
            _ => match self.message() {
                Some(m) => with_problems(format!("{e}: HTTP {status}: {m}"), &self.problems()),
                None if self.body.trim().is_empty() => format!("{e}: HTTP {status}"),
                None => format!("{e}: HTTP {status}: {}", quote(self.body.trim())),
            },
        }
    }

    /// Why an apply or a rollback was not accepted: a refusal (422: the static check or the live
    /// gate, with its problems; 409: a rollout is running, or the configuration was rolled back
    /// before) in the gateway's words, else [`Answer::failure`].
    fn refusal(&self) -> String {
        match (self.status.as_u16(), self.message()) {
            (409 | 422, Some(m)) => with_problems(m, &self.problems()),
            _ => self.failure(),
        }
    }
}

/// `message`, then each problem on a line of its own.
fn with_problems(mut message: String, problems: &[String]) -> String {
    for p in problems {
        message.push_str("\n  - ");
        message.push_str(p);
    }
    message
}

/// At most [`MAX_QUOTED`] characters of `text`.
fn quote(text: &str) -> String {
    if text.chars().count() <= MAX_QUOTED {
        return text.to_owned();
    }
    let cut: String = text.chars().take(MAX_QUOTED).collect();
    format!("{cut}…")
}

// ---------------------------------------------------------------------------------------------
// The commands.

/// `POST /admin/config` with `?now=true&force=true&probe=false`, only the flags given.
fn apply_path(now: bool, force: bool, no_probe: bool) -> String {
    let query: Vec<&str> = [
        (now, "now=true"),
        (force, "force=true"),
        (no_probe, "probe=false"),
    ]
    .into_iter()
    .filter_map(|(given, q)| given.then_some(q))
    .collect();
    if query.is_empty() {
        "/admin/config".to_owned()
    } else {
        format!("/admin/config?{}", query.join("&"))
    }
}

/// `POST /admin/config/rollback`'s path and JSON body: `{"version": N}`, or `{}` for the version
/// before the current one.
fn rollback_request(version: Option<u64>, force: bool) -> (String, String) {
    let path = if force {
        "/admin/config/rollback?force=true"
    } else {
        "/admin/config/rollback"
    };
    let body = match version {
        Some(n) => serde_json::json!({ "version": n }),
        None => serde_json::json!({}),
    };
    (path.to_owned(), body.to_string())
}

/// Reads the configuration file to send, as it is.
fn read_config(path: &Path) -> Result<String, String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?
        .len();
    if size > MAX_BYTES as u64 {
        return Err(format!(
            "{}: {size} bytes is larger than a configuration ({MAX_BYTES} at most)",
            path.display()
        ));
    }
    std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()))
}

async fn apply(a: &ConfigApplyArgs, poll_every: Duration) -> Result<Exit, String> {
    let text = read_config(&a.file)?;
    let gw = Gateway::from_args(&a.gateway)?;
    let path = apply_path(a.now, a.force, a.no_probe);
    let answer = gw
        .call(
            Method::POST,
            &path,
            Some(("application/toml", text)),
            APPLY_TIMEOUT,
        )
        .await?;
    let accepted = accepted(&answer, a.gateway.json, a.now.then_some("--now"))?;
    if !a.wait.wait {
        return Ok(Exit::Done);
    }
    follow(&gw, &accepted, a.gateway.json, poll_every, a.wait.timeout).await
}

async fn rollback(a: &ConfigRollbackArgs) -> Result<Exit, String> {
    let gw = Gateway::from_args(&a.gateway)?;
    let (path, body) = rollback_request(a.version, a.force);
    let answer = gw
        .call(
            Method::POST,
            &path,
            Some(("application/json", body)),
            APPLY_TIMEOUT,
        )
        .await?;
    accepted(&answer, a.gateway.json, None)?;
    Ok(Exit::Done)
}

/// Prints an apply's or a rollback's answer (its warnings on stderr); its JSON when it was
/// accepted (202, or 200 for a configuration already serving), else why not.
/// `now_flag` names the flag that asked for no staged rollout.
fn accepted(answer: &Answer, json: bool, now_flag: Option<&str>) -> Result<Value, String> {
    let body = answer.json();
    if json && body.is_some() {
        println!("{}", answer.body.trim());
    }
    if !answer.status.is_success() {
        return Err(answer.refusal());
    }
    let Some(body) = body else {
        return Err(format!(
            "{}: HTTP {}: the answer is not JSON: {}",
            answer.endpoint,
            answer.status,
            quote(answer.body.trim())
        ));
    };
    if !json {
        for w in list_of(&body["warnings"]) {
            eprintln!("warning: {w}");
        }
        print!("{}", accepted_text(&body, now_flag));
    }
    Ok(body)
}

/// The rollout an accepted change started, as its answer shows it.
enum Started<'a> {
    /// It serves every request already (applied at once), or it is the one serving (unchanged).
    AtOnce,
    Rollout(&'a Value),
    /// The answer has no rollout.
    Unknown,
}

/// An answer's `rollout` is the change's own unless it is `idle` or another version's (the last
/// rollout before a change applied at once).
fn started(v: &Value) -> Started<'_> {
    let r = &v["rollout"];
    if v["unchanged"] == Value::Bool(true) {
        return Started::AtOnce;
    }
    if !r.is_object() {
        return Started::Unknown;
    }
    let other = matches!(
        (v["version"].as_u64(), r["version"].as_u64()),
        (Some(ours), Some(theirs)) if ours != theirs
    );
    if other || r["state"].as_str() == Some("idle") {
        Started::AtOnce
    } else {
        Started::Rollout(r)
    }
}

/// `accepted as version 7 (hash …): <summary>` and how it rolls out.
fn accepted_text(v: &Value, now_flag: Option<&str>) -> String {
    if v["unchanged"] == Value::Bool(true) {
        return match v["version"].as_u64() {
            Some(n) => format!("unchanged: version {n} is this configuration and serves already\n"),
            None => "unchanged: this configuration serves already\n".to_owned(),
        };
    }
    let mut out = String::from("accepted");
    if let Some(n) = v["version"].as_u64() {
        out.push_str(&format!(" as version {n}"));
    }
    if let Some(h) = text_of(&v["hash"]) {
        out.push_str(&format!(" (hash {h})"));
    }
    if let Some(s) = text_of(&v["summary"]) {
        out.push_str(&format!(": {s}"));
    }
    out.push('\n');
    let gate = &v["gate"];
    if gate.is_object() {
        let mut line = String::from("live gate passed");
        if let Some(n) = gate["targets"].as_u64() {
            line.push_str(&format!(": {n} targets probed"));
        }
        if let Some(c) = gate["cost_usd"].as_f64() {
            line.push_str(&format!(" (${c:.4})"));
        }
        out.push_str(&line);
        out.push('\n');
    }
    let at_once = match now_flag {
        Some(flag) => format!("applied at once ({flag})\n"),
        None => "applied at once\n".to_owned(),
    };
    match started(v) {
        Started::AtOnce => out.push_str(&at_once),
        Started::Rollout(r) => match r["state"].as_str() {
            Some("promoted") => out.push_str(&at_once),
            Some("canary") => out.push_str(&format!("rolling out: {}\n", step_text(r))),
            Some("rolled_back") => out.push_str(&format!("{}\n", rolled_back(r))),
            Some(other) => out.push_str(&format!("rollout: {other}\n")),
            None => {}
        },
        Started::Unknown => {}
    }
    out
}

/// The strings of a list (other items as JSON), none for anything else.
fn list_of(v: &Value) -> Vec<String> {
    match v {
        Value::Array(items) => items
            .iter()
            .map(|p| p.as_str().map_or_else(|| p.to_string(), str::to_owned))
            .collect(),
        _ => Vec::new(),
    }
}

/// `step 1 of 2, 5% of requests for 2m`, as far as the fields are known (`step` counts from 0).
fn step_text(r: &Value) -> String {
    let mut parts = Vec::new();
    if let Some(step) = r["step"].as_u64() {
        let mut s = format!("step {}", step + 1);
        if let Some(n) = r["steps"].as_u64() {
            s.push_str(&format!(" of {n}"));
        }
        parts.push(s);
    }
    if let Some(share) = r["share"].as_f64() {
        let mut s = format!("{} of requests", percent(share));
        if let Some(hold) = r["hold_ms"].as_f64() {
            s.push_str(&format!(" for {}", duration_ms(hold)));
        }
        parts.push(s);
    }
    if parts.is_empty() {
        "in progress".to_owned()
    } else {
        parts.join(", ")
    }
}

fn reason(r: &Value) -> String {
    text_of(&r["reason"]).unwrap_or_else(|| "the gateway gave no reason".to_owned())
}

/// `rolled back on route chat: <reason>`.
fn rolled_back(r: &Value) -> String {
    match text_of(&r["route"]) {
        Some(route) => format!("rolled back on route {route}: {}", reason(r)),
        None => format!("rolled back: {}", reason(r)),
    }
}

/// A string field, or a number shown as text; nothing for null, empty or other types.
fn text_of(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.trim().is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// `5%`, `12.5%`.
fn percent(ratio: f64) -> String {
    let p = ratio * 100.0;
    if (p - p.round()).abs() < 0.05 {
        format!("{p:.0}%")
    } else {
        format!("{p:.1}%")
    }
}

/// `2m`, `1m 30s`, `250ms` (whole seconds from a second on).
fn duration_ms(ms: f64) -> String {
    let ms = ms.max(0.0);
    let d = if ms >= 1000.0 {
        Duration::from_secs((ms / 1000.0).round() as u64)
    } else {
        Duration::from_millis(ms.round() as u64)
    };
    humantime::format_duration(d).to_string()
}

/// A rollout's state and step, to tell when it moved.
fn position(r: &Value) -> (Option<String>, Option<u64>) {
    (r["state"].as_str().map(str::to_owned), r["step"].as_u64())
}

/// `--wait`: reads `GET /admin/rollout` every `every` until the rollout `accepted` started is
/// promoted or rolled back, printing each step it reaches; `Err` after `timeout`.
async fn follow(
    gw: &Gateway,
    accepted: &Value,
    json: bool,
    every: Duration,
    timeout: Duration,
) -> Result<Exit, String> {
    let first = match started(accepted) {
        Started::AtOnce => return Ok(Exit::Done),
        Started::Rollout(r) => r,
        Started::Unknown => &Value::Null,
    };
    match first["state"].as_str() {
        Some("promoted") => return Ok(Exit::Done),
        Some("rolled_back") => {
            eprintln!("{}", rolled_back(first));
            return Ok(Exit::RolledBack);
        }
        _ => {}
    }
    let ours = accepted["version"].as_u64();
    let mut seen = position(first);
    let deadline = tokio::time::Instant::now() + timeout;
    let mut failures = 0;
    loop {
        match poll(gw).await {
            Ok((r, raw)) => {
                failures = 0;
                if r["state"].as_str() == Some("idle") {
                    return Err(
                        "the gateway reports no rollout (did it restart?): `ballast config history` shows which version it runs"
                            .to_owned(),
                    );
                }
                if let (Some(ours), Some(now)) = (ours, r["version"].as_u64())
                    && now != ours
                {
                    return Err(format!(
                        "version {now} is rolling out now, not version {ours}: `ballast config rollout` shows it, `ballast config history` what became of version {ours}"
                    ));
                }
                let at = position(&r);
                let moved = at != seen;
                if moved {
                    seen = at;
                    if json {
                        println!("{}", raw.trim());
                    }
                }
                match r["state"].as_str() {
                    Some("promoted") => {
                        if !json {
                            println!("promoted: {} serves every request", version_name(&r, ours));
                        }
                        return Ok(Exit::Done);
                    }
                    Some("rolled_back") => {
                        eprintln!("{}", rolled_back(&r));
                        return Ok(Exit::RolledBack);
                    }
                    Some("canary") if moved && !json => {
                        println!("rolling out: {}", step_text(&r));
                    }
                    Some(other) if moved && !json => println!("rollout: {other}"),
                    _ => {}
                }
            }
            Err(Poll::Fatal(e)) => return Err(e),
            Err(Poll::Again(e)) => {
                failures += 1;
                if failures >= MAX_POLL_FAILURES {
                    return Err(e);
                }
                if failures == 1 {
                    eprintln!("warning: {e} (trying again)");
                }
            }
        }
        let now = tokio::time::Instant::now();
        if now >= deadline {
            return Err(format!(
                "stopped waiting after {} (--timeout); the rollout goes on: `ballast config rollout` shows it, `ballast config abort` stops it",
                humantime::format_duration(timeout)
            ));
        }
        tokio::time::sleep(every.min(deadline - now)).await;
    }
}

/// `version 7`, or the new version when the gateway does not say.
fn version_name(r: &Value, ours: Option<u64>) -> String {
    match r["version"].as_u64().or(ours) {
        Some(n) => format!("version {n}"),
        None => "the new version".to_owned(),
    }
}

enum Poll {
    /// Worth trying again (no answer, a 5xx).
    Again(String),
    Fatal(String),
}

/// `GET /admin/rollout`: its JSON and its text.
async fn poll(gw: &Gateway) -> Result<(Value, String), Poll> {
    let answer = gw
        .call(Method::GET, "/admin/rollout", None, SHORT_TIMEOUT)
        .await
        .map_err(Poll::Again)?;
    if answer.status.is_server_error() {
        return Err(Poll::Again(answer.failure()));
    }
    if !answer.status.is_success() {
        return Err(Poll::Fatal(answer.failure()));
    }
    match answer.json() {
        Some(v) => Ok((v, answer.body)),
        None => Err(Poll::Again(format!(
            "{}: the answer is not JSON: {}",
            answer.endpoint,
            quote(answer.body.trim())
        ))),
    }
}

async fn rollout(g: &GatewayArgs) -> Result<Exit, String> {
    let gw = Gateway::from_args(g)?;
    let answer = gw
        .call(Method::GET, "/admin/rollout", None, SHORT_TIMEOUT)
        .await?;
    if !answer.status.is_success() {
        return Err(answer.failure());
    }
    if g.json {
        println!("{}", answer.body.trim());
        return Ok(Exit::Done);
    }
    let v = answer.json().ok_or_else(|| {
        format!(
            "{}: the answer is not JSON: {}",
            answer.endpoint,
            quote(answer.body.trim())
        )
    })?;
    print!("{}", rollout_text(&v));
    Ok(Exit::Done)
}

async fn abort(g: &GatewayArgs) -> Result<Exit, String> {
    let gw = Gateway::from_args(g)?;
    let answer = gw
        .call(Method::POST, "/admin/rollout/abort", None, SHORT_TIMEOUT)
        .await?;
    if g.json && answer.json().is_some() {
        println!("{}", answer.body.trim());
    }
    if !answer.status.is_success() {
        return Err(answer.refusal());
    }
    if !g.json {
        println!("{}", abort_text(answer.json().as_ref()));
    }
    Ok(Exit::Done)
}

/// What an accepted abort says.
fn abort_text(v: Option<&Value>) -> String {
    let field = |name: &str| v.and_then(|v| v[name].as_u64());
    let what = field("version").map_or_else(String::new, |n| format!(" version {n}"));
    let serving = field("serving").map_or_else(
        || "the current version keeps serving".to_owned(),
        |n| format!("version {n} keeps serving"),
    );
    format!("rolled back{what}: {serving}")
}

/// `ballast config rollout`'s text: the rollout's state, then the canary against the baseline
/// per route.
fn rollout_text(v: &Value) -> String {
    let who = {
        let version = v["version"].as_u64().map(|n| format!("version {n}"));
        let hash = text_of(&v["hash"]).map(|h| format!("hash {h}"));
        match (version, hash) {
            (Some(n), Some(h)) => format!("{n} ({h})"),
            (Some(n), None) => n,
            (None, Some(h)) => h,
            (None, None) => "the new configuration".to_owned(),
        }
    };
    let state = v["state"].as_str();
    let serving = v["serving"].as_u64();
    // A line for after the change's summary.
    let mut after = None;
    let mut out = match state {
        Some("idle") => match v["version"].as_u64().or(serving) {
            Some(n) => format!("no rollout running: version {n} serves\n"),
            None => "no rollout running\n".to_owned(),
        },
        Some("canary") => {
            let mut s = format!("{who} rolling out: {}", step_text(v));
            if let Some(ms) = v["elapsed_ms"].as_f64() {
                s.push_str(&format!(" (elapsed {})", duration_ms(ms)));
            }
            if let Some(n) = serving {
                s.push_str(&format!("; version {n} serves the rest"));
            }
            s.push('\n');
            s
        }
        Some("promoted") => match serving {
            Some(n) if Some(n) != v["version"].as_u64() => {
                format!("{who} was promoted; version {n} serves now\n")
            }
            _ => format!("{who} promoted: it serves every request\n"),
        },
        Some("rolled_back") => {
            let now = serving.map_or_else(
                || "the version before it serves".to_owned(),
                |n| format!("version {n} serves"),
            );
            after = Some(now);
            format!("{who} {}\n", rolled_back(v))
        }
        Some(other) => format!("rollout {other}: {who}\n"),
        None => "the gateway's answer names no rollout state\n".to_owned(),
    };
    if state != Some("idle")
        && let Some(c) = text_of(&v["summary"])
    {
        out.push_str(&format!("change: {c}\n"));
    }
    if let Some(line) = after {
        out.push_str(&line);
        out.push('\n');
    }
    if state != Some("rolled_back")
        && let Some(r) = text_of(&v["reason"])
    {
        out.push_str(&format!("reason: {r}\n"));
    }
    match comparison_table(&v["comparison"]) {
        Some(table) => {
            out.push_str("\ncanary / baseline per route:\n");
            out.push_str(&table);
        }
        None if state == Some("canary") => out.push_str("no requests compared yet\n"),
        None => {}
    }
    out
}

/// The per-route comparison: a list of `{"route", "canary": {…}, "baseline": {…}}` (or an object
/// keyed by route), as a table; `None` when there is no row.
fn comparison_table(c: &Value) -> Option<String> {
    let rows: Vec<(String, &Value)> = match c {
        Value::Array(items) => items
            .iter()
            .map(|r| (text_of(&r["route"]).unwrap_or_else(|| "?".to_owned()), r))
            .collect(),
        Value::Object(map) => map.iter().map(|(k, r)| (k.clone(), r)).collect(),
        _ => return None,
    };
    if rows.is_empty() {
        return None;
    }
    let ratio = |x: f64| format!("{:.1}%", x * 100.0);
    let count = |x: f64| format!("{x:.0}");
    let millis = |x: f64| format!("{x:.0}ms");
    let pair = |r: &Value, field: &str, show: &dyn Fn(f64) -> String| {
        let side = |s: &str| r[s][field].as_f64().map_or_else(|| "-".to_owned(), show);
        format!("{} / {}", side("canary"), side("baseline"))
    };
    let mut table: Vec<[String; 5]> = vec![[
        "ROUTE".to_owned(),
        "REQUESTS".to_owned(),
        "DEGRADED".to_owned(),
        "LATENCY".to_owned(),
        "DEFECTIVE".to_owned(),
    ]];
    for (route, r) in rows {
        table.push([
            route,
            pair(r, "requests", &count),
            pair(r, "degraded_ratio", &ratio),
            pair(r, "latency_ms", &millis),
            pair(r, "defect_ratio", &ratio),
        ]);
    }
    let mut widths = [0; 5];
    for row in &table {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in &table {
        let mut line = String::new();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(&format!("{cell:<w$}"));
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use axum::Router;
    use axum::extract::{RawQuery, State};
    use axum::http::{HeaderMap, StatusCode as Status};
    use axum::routing::{get, post};
    use serde_json::json;

    use super::*;

    fn answer(status: u16, body: Value) -> Answer {
        Answer {
            endpoint: "http://gw/admin/config".to_owned(),
            status: StatusCode::from_u16(status).unwrap(),
            body: body.to_string(),
            keyed: true,
        }
    }

    #[test]
    fn urls_carry_only_the_flags_given() {
        let check = |now, force, no_probe, expected: &str| {
            assert_eq!(apply_path(now, force, no_probe), expected);
        };
        check(false, false, false, "/admin/config");
        check(true, false, false, "/admin/config?now=true");
        check(false, true, true, "/admin/config?force=true&probe=false");
        check(
            true,
            true,
            true,
            "/admin/config?now=true&force=true&probe=false",
        );

        assert_eq!(
            rollback_request(Some(5), false),
            (
                "/admin/config/rollback".to_owned(),
                r#"{"version":5}"#.to_owned()
            )
        );
        assert_eq!(
            rollback_request(None, true),
            (
                "/admin/config/rollback?force=true".to_owned(),
                "{}".to_owned()
            )
        );

        for (given, base) in [
            ("http://gw:8080", "http://gw:8080"),
            ("http://gw:8080/", "http://gw:8080"),
            ("http://gw:8080/admin/config", "http://gw:8080"),
            ("http://gw:8080/admin/rollout/", "http://gw:8080"),
            ("https://gw/prefix/admin", "https://gw/prefix"),
            ("http://administrator:8080", "http://administrator:8080"),
            ("http://gw/administration", "http://gw/administration"),
        ] {
            assert_eq!(base_url(given), base, "{given}");
        }
    }

    #[test]
    fn accepted_answers_say_how_they_roll_out() {
        let canary = json!({"version": 7, "hash": "ab12", "summary": "routes.chat: +1 target",
            "source": "cli", "rollout": {"state": "canary", "step": 0, "steps": 2, "share": 0.05,
            "hold_ms": 120000, "elapsed_ms": 0}});
        assert_eq!(
            accepted_text(&canary, None),
            "accepted as version 7 (hash ab12): routes.chat: +1 target\n\
             rolling out: step 1 of 2, 5% of requests for 2m\n"
        );
        let now = json!({"version": 8, "hash": "cd34", "summary": "no change",
            "rollout": {"state": "promoted"}});
        assert_eq!(
            accepted_text(&now, Some("--now")),
            "accepted as version 8 (hash cd34): no change\napplied at once (--now)\n"
        );
        assert!(accepted_text(&now, None).ends_with("applied at once\n"));
        // A sparse or odd answer is shown as far as it goes.
        assert_eq!(accepted_text(&json!({}), None), "accepted\n");
        assert_eq!(
            accepted_text(
                &json!({"version": null, "rollout": {"state": "canary", "share": 0.125}}),
                None
            ),
            "accepted\nrolling out: 12.5% of requests\n"
        );
        assert_eq!(
            accepted_text(
                &json!({"version": 3, "rollout": {"state": "warming"}}),
                None
            ),
            "accepted as version 3\nrollout: warming\n"
        );
    }

    /// The answers `ballast-server`'s rollout module gives: a change applied at once carries the
    /// last rollout (another version's, or idle), a configuration already serving is unchanged.
    #[test]
    fn applied_at_once_is_told_from_a_stale_rollout() {
        let stale = json!({"version": 9, "hash": "ff00", "summary": "routes.chat: -1 target",
            "warnings": ["[server] listen changes only on restart"],
            "gate": {"ok": true, "targets": 3, "cost_usd": 0.00042},
            "rollout": {"state": "rolled_back", "version": 8, "reason": "aborted by an operator"}});
        assert_eq!(
            accepted_text(&stale, Some("--now")),
            "accepted as version 9 (hash ff00): routes.chat: -1 target\n\
             live gate passed: 3 targets probed ($0.0004)\n\
             applied at once (--now)\n"
        );
        assert!(matches!(started(&stale), Started::AtOnce));
        assert_eq!(
            list_of(&stale["warnings"]),
            ["[server] listen changes only on restart"]
        );
        let idle = json!({"version": 2, "rollout": {"state": "idle", "version": 2}});
        assert_eq!(
            accepted_text(&idle, None),
            "accepted as version 2\napplied at once\n"
        );
        let unchanged = json!({"version": 4, "unchanged": true, "summary": "no change"});
        assert_eq!(
            accepted_text(&unchanged, None),
            "unchanged: version 4 is this configuration and serves already\n"
        );
        assert!(matches!(started(&unchanged), Started::AtOnce));
        let ours = json!({"version": 5, "rollout": {"state": "canary", "version": 5, "step": 0}});
        assert!(matches!(started(&ours), Started::Rollout(_)));
        assert!(matches!(started(&json!({"version": 5})), Started::Unknown));
    }

    #[test]
    fn refusals_are_the_gateways_words() {
        let gate = answer(
            422,
            json!({"error": {"message": "the live gate refused the configuration",
                "problems": ["routes.chat: target openai/gpt-5 answered HTTP 404", {"odd": 1}]}}),
        );
        assert_eq!(
            gate.refusal(),
            "the live gate refused the configuration\n\
             \x20 - routes.chat: target openai/gpt-5 answered HTTP 404\n\
             \x20 - {\"odd\":1}"
        );
        let busy = answer(
            409,
            json!({"error": {"message": "a rollout is running (version 6)"}}),
        );
        assert_eq!(busy.refusal(), "a rollout is running (version 6)");
        let odd = answer(500, json!({"oops": true}));
        assert_eq!(
            odd.refusal(),
            r#"http://gw/admin/config: HTTP 500 Internal Server Error: {"oops":true}"#
        );
        let mut unkeyed = answer(401, json!({}));
        unkeyed.keyed = false;
        assert!(
            unkeyed
                .refusal()
                .contains("admin key is needed (--admin-key")
        );
        assert!(
            answer(401, json!({}))
                .refusal()
                .contains("refused this admin key")
        );
        let mut none = answer(404, json!(null));
        none.body = String::new();
        assert!(none.refusal().contains("too old"), "{}", none.refusal());
        let disabled = answer(
            404,
            json!({"error": {"message": "the admin API is disabled"}}),
        );
        assert!(
            disabled
                .refusal()
                .ends_with("HTTP 404 Not Found: the admin API is disabled")
        );
        assert_eq!(
            abort_text(None),
            "rolled back: the current version keeps serving"
        );
        assert_eq!(
            abort_text(Some(
                &json!({"state": "rolled_back", "version": 7, "serving": 6})
            )),
            "rolled back version 7: version 6 keeps serving"
        );
    }

    #[test]
    fn rollout_status_and_comparison() {
        let v = json!({"state": "canary", "version": 7, "hash": "ab12", "step": 1, "steps": 2,
        "share": 0.25, "hold_ms": 300000, "elapsed_ms": 90400, "reason": null,
        "comparison": [
            {"route": "chat",
             "canary": {"requests": 120, "degraded_ratio": 0.1, "latency_ms": 230.0, "defect_ratio": 0.0},
             "baseline": {"requests": 2280, "degraded_ratio": 0.012, "latency_ms": 210.4, "defect_ratio": 0.0}},
            {"route": "summarize-long", "canary": {"requests": 3}, "baseline": null}
        ]});
        let expected = "\
version 7 (hash ab12) rolling out: step 2 of 2, 25% of requests for 5m (elapsed 1m 30s)

canary / baseline per route:
ROUTE           REQUESTS    DEGRADED      LATENCY        DEFECTIVE
chat            120 / 2280  10.0% / 1.2%  230ms / 210ms  0.0% / 0.0%
summarize-long  3 / -       - / -         - / -          - / -
";
        assert_eq!(rollout_text(&v), expected);

        let back = json!({"state": "rolled_back", "version": 7, "reason": "chat: degraded 10% vs 1%",
            "comparison": []});
        assert_eq!(
            rollout_text(&back),
            "version 7 rolled back: chat: degraded 10% vs 1%\nthe version before it serves\n"
        );
        assert_eq!(
            rollout_text(&json!({"state": "idle", "version": null})),
            "no rollout running\n"
        );
        // As ballast-server shows them: the version serving, the route that regressed.
        assert_eq!(
            rollout_text(&json!({"state": "idle", "version": 3})),
            "no rollout running: version 3 serves\n"
        );
        let real = json!({"state": "rolled_back", "version": 7, "hash": "ab12",
            "summary": "routes.chat: +1 target", "step": 0, "steps": 2, "share": 0.05,
            "elapsed_ms": 4000, "hold_ms": 0, "route": "chat",
            "reason": "degraded requests 12% on the new version vs 1% on the current", "serving": 6,
            "comparison": [{"route": "chat",
                "canary": {"requests": 40, "degraded_ratio": 0.12, "latency_ms": null, "defect_ratio": 0.0},
                "baseline": {"requests": 800, "degraded_ratio": 0.01, "latency_ms": 200.0, "defect_ratio": 0.0}}]});
        assert_eq!(
            rollout_text(&real),
            "version 7 (hash ab12) rolled back on route chat: degraded requests 12% on the new \
             version vs 1% on the current\n\
             change: routes.chat: +1 target\n\
             version 6 serves\n\
             \n\
             canary / baseline per route:\n\
             ROUTE  REQUESTS  DEGRADED      LATENCY    DEFECTIVE\n\
             chat   40 / 800  12.0% / 1.0%  - / 200ms  0.0% / 0.0%\n"
        );
        assert_eq!(
            rollout_text(
                &json!({"state": "canary", "version": 7, "step": 0, "steps": 1,
                "share": 0.5, "serving": 6, "comparison": []})
            ),
            "version 7 rolling out: step 1 of 1, 50% of requests; version 6 serves the rest\n\
             no requests compared yet\n"
        );
        assert_eq!(
            rollout_text(&json!({"state": "canary"})),
            "the new configuration rolling out: in progress\nno requests compared yet\n"
        );
        // Unknown shapes are shown as far as they go, never an error.
        assert_eq!(
            rollout_text(&json!({"comparison": "soon"})),
            "the gateway's answer names no rollout state\n"
        );
        let keyed = comparison_table(&json!({"chat": {"canary": {"requests": 1}}})).unwrap();
        assert!(
            keyed.lines().nth(1).unwrap().starts_with("chat   1 / -"),
            "{keyed}"
        );
    }

    /// What the imitation gateway saw, and the rollout states it answers in turn (the last one
    /// repeats).
    #[derive(Default)]
    struct Fake {
        seen: Vec<(String, Option<String>, String)>,
        states: Vec<Value>,
    }

    type Shared = Arc<Mutex<Fake>>;

    async fn gateway(states: Vec<Value>) -> (String, Shared) {
        let fake = Arc::new(Mutex::new(Fake {
            seen: Vec::new(),
            states,
        }));
        let auth = |h: &HeaderMap| {
            h.get("authorization")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        let app = Router::new()
            .route(
                "/admin/config",
                post(
                    move |State(f): State<Shared>, RawQuery(q): RawQuery, h: HeaderMap, body: String| async move {
                        f.lock().unwrap().seen.push((format!("apply {}", q.unwrap_or_default()), auth(&h), body));
                        (Status::ACCEPTED, axum::Json(json!({"version": 7, "hash": "ab12",
                            "rollout": {"state": "canary", "step": 0, "steps": 2, "share": 0.05, "hold_ms": 1000}})))
                    },
                ),
            )
            .route(
                "/admin/rollout",
                get(move |State(f): State<Shared>, h: HeaderMap| async move {
                    let mut f = f.lock().unwrap();
                    f.seen.push(("rollout".to_owned(), auth(&h), String::new()));
                    let state = if f.states.len() > 1 {
                        f.states.remove(0)
                    } else {
                        f.states[0].clone()
                    };
                    axum::Json(state)
                }),
            )
            .with_state(fake.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        (url, fake)
    }

    fn apply_args(file: &Path, url: &str, timeout: Duration) -> ConfigApplyArgs {
        ConfigApplyArgs {
            file: file.to_owned(),
            now: false,
            force: true,
            no_probe: true,
            wait: crate::cli::WaitArgs {
                wait: true,
                timeout,
            },
            gateway: GatewayArgs {
                gateway: url.to_owned(),
                admin_key: Some("admin-key".to_owned()),
                json: false,
            },
        }
    }

    #[tokio::test]
    async fn apply_sends_the_file_and_follows_the_rollout() {
        let dir = std::env::temp_dir().join(format!("ballast-config-cmd-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ballast.toml");
        std::fs::write(&file, "[routes.chat]\ntargets = [\"a/b\"]\n").unwrap();
        let step = |step: u64| json!({"state": "canary", "version": 7, "step": step, "steps": 2});
        let every = Duration::from_millis(5);

        let (url, fake) = gateway(vec![
            step(0),
            step(0),
            step(1),
            json!({"state": "promoted", "version": 7}),
        ])
        .await;
        let args = apply_args(&file, &url, Duration::from_secs(30));
        assert_eq!(apply(&args, every).await, Ok(Exit::Done));
        let seen = std::mem::take(&mut fake.lock().unwrap().seen);
        assert_eq!(
            seen[0],
            (
                "apply force=true&probe=false".to_owned(),
                Some("Bearer admin-key".to_owned()),
                "[routes.chat]\ntargets = [\"a/b\"]\n".to_owned()
            )
        );
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(
            seen[1..]
                .iter()
                .all(|s| s.1.as_deref() == Some("Bearer admin-key"))
        );

        let (url, _) = gateway(vec![
            step(1),
            json!({"state": "rolled_back", "version": 7, "reason": "chat: degraded"}),
        ])
        .await;
        let args = apply_args(&file, &url, Duration::from_secs(30));
        assert_eq!(apply(&args, every).await, Ok(Exit::RolledBack));

        let (url, _) = gateway(vec![step(0)]).await;
        let args = apply_args(&file, &url, Duration::from_millis(50));
        let e = apply(&args, every).await.unwrap_err();
        assert!(e.contains("stopped waiting after 50ms"), "{e}");

        let (url, _) = gateway(vec![json!({"state": "canary", "version": 9})]).await;
        let args = apply_args(&file, &url, Duration::from_secs(30));
        let e = apply(&args, every).await.unwrap_err();
        assert!(e.starts_with("version 9 is rolling out now"), "{e}");
    }
}
