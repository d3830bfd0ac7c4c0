//! The commands behind the CLI: `serve`, `check`, `demo` and `sim`. Each returns an error message for
//! `main` to print; none exits the process itself. What they print goes through [`write_stdout`].

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use ballast_core::config::env::{ProcessEnv, default_config_toml};
use ballast_core::config::{Config, ConfigErrors};
use ballast_server::AppState;
use tokio::net::TcpListener;

use crate::cli::{
    AdminApiArgs, CheckArgs, Command, ConfigCommand, ConfigHistoryArgs, DemoArgs, FollowupAddArgs,
    FollowupCommand, FollowupEditArgs, FollowupListArgs, FollowupStateArg, IncidentsArgs,
    IncidentsCommand, ServeArgs, SimArgs, StatusArgs,
};

/// Stdout could not be written: what follows is not written either.
static STDOUT_DONE: AtomicBool = AtomicBool::new(false);
/// Why, unless its reader went away.
static STDOUT_ERROR: OnceLock<String> = OnceLock::new();

/// Writes to stdout (the binary's `println!` and `print!`). When the reader has gone away
/// (`ballast check | head -1`) the rest of the output is dropped and the command goes on to its
/// normal end and status: a server keeps serving, a report run still reports its verdict by exit
/// code. Any other failure to write is kept for [`stdout_result`]. Never panics.
pub fn write_stdout(args: fmt::Arguments<'_>) {
    if STDOUT_DONE.load(Ordering::Relaxed) {
        return;
    }
    let mut out = io::stdout().lock();
    if let Err(e) = out.write_fmt(args).and_then(|()| out.flush()) {
        STDOUT_DONE.store(true, Ordering::Relaxed);
        if e.kind() != io::ErrorKind::BrokenPipe {
            let _ = STDOUT_ERROR.set(format!("cannot write to stdout: {e}"));
        }
    }
}

/// Whether everything printed was written (or its reader went away: a normal end of output).
pub fn stdout_result() -> Result<(), String> {
    STDOUT_ERROR.get().map_or(Ok(()), |e| Err(e.clone()))
}

pub async fn run(command: Command) -> Result<(), String> {
    match command {
        Command::Serve(a) => serve(a).await,
        Command::Check(a) => check(&a).await,
        Command::Demo(a) => demo(a).await,
        Command::Sim(a) => sim(a).await,
        Command::Incidents(a) => match a.command {
            Some(IncidentsCommand::Followup(f)) => followup(f).await,
            None => incidents(&a),
        },
        Command::Status(a) => status(&a).await,
        Command::Config(ConfigCommand::History(a)) => config_history(&a),
        // main.rs runs these itself, for their exit codes (2: rolled back).
        Command::Config(ConfigCommand::Live(c)) => crate::config_cmd::run(c)
            .await
            .and_then(crate::config_cmd::Exit::into_result),
        Command::Chaos(a) => crate::chaos::run(a).await,
    }
}

/// `ballast config history`: the versions kept in the incident store, newest first.
fn config_history(args: &ConfigHistoryArgs) -> Result<(), String> {
    let path = store_path(args.store.as_ref(), args.config.as_ref())?;
    let rows = ballast_server::config_versions(&path, 1000).map_err(|e| e.to_string())?;
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|v| {
                let mut j = serde_json::json!({
                    "version": v.id,
                    "hash": v.hash,
                    "applied_at": humantime::format_rfc3339_seconds(v.applied_at).to_string(),
                    "source": v.source,
                    "summary": v.summary,
                    "outcome": v.outcome,
                });
                if args.full {
                    j["config"] = serde_json::json!(v.config);
                }
                j
            })
            .collect();
        let text = serde_json::to_string_pretty(&list).map_err(|e| e.to_string())?;
        println!("{text}");
        return Ok(());
    }
    if rows.is_empty() {
        println!("{}: no configuration version kept yet", path.display());
        return Ok(());
    }
    println!(
        "{:>7}  {:<16}  {:<20}  {:<10}  CHANGE",
        "VERSION", "HASH", "APPLIED", "OUTCOME"
    );
    for v in &rows {
        println!(
            "{:>7}  {:<16}  {:<20}  {:<10}  {}",
            v.id,
            v.hash,
            humantime::format_rfc3339_seconds(v.applied_at).to_string(),
            v.outcome,
            v.summary
        );
    }
    Ok(())
}

async fn status(args: &StatusArgs) -> Result<(), String> {
    let http = ballast_server::plain_client(Duration::from_secs(10))?;
    let base = args.url.trim_end_matches('/');
    let get = |path: &'static str| {
        let http = http.clone();
        let url = format!("{base}{path}");
        let key = args.admin_key.clone();
        async move {
            let resp = http
                .get(&url)
                .bearer_auth(key)
                .send()
                .await
                .map_err(|e| format!("cannot reach {url}: {e}"))?;
            let status = resp.status();
            let body = resp.text().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("{url}: HTTP {status}: {body}"));
            }
            serde_json::from_str::<serde_json::Value>(&body).map_err(|e| format!("{url}: {e}"))
        }
    };
    let targets = get("/admin/targets").await?;
    let incidents = get("/admin/incidents").await?;
    // A gateway from before follow-ups has no such endpoint: then the section is left out.
    let followups = get("/admin/followups?overdue=true").await.ok();
    let score = |d: &serde_json::Value, s: &str| {
        let e = &d[s];
        match (e["score"].as_f64(), e["threshold"].as_f64()) {
            (Some(x), Some(t)) if t > 0.0 => format!("{:>3.0}%", 100.0 * x / t),
            _ => "-".to_owned(),
        }
    };
    println!(
        "{:<36} {:<9} {:>8} {:>9} {:>7} {:<7}  {:>6} {:>6} {:>6} {:>6}",
        "TARGET",
        "BREAKER",
        "INFLIGHT",
        "LATENCY",
        "BUDGET",
        "EJECTED",
        "AVAIL",
        "HARD",
        "LAT",
        "SCRIPT"
    );
    for t in targets["targets"].as_array().into_iter().flatten() {
        let d = &t["detectors"];
        let latency = t["latency_ewma_ms"]
            .as_f64()
            .map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}ms"));
        println!(
            "{:<36} {:<9} {:>8} {:>9} {:>7} {:<7}  {:>6} {:>6} {:>6} {:>6}",
            t["target"].as_str().unwrap_or("?"),
            t["breaker"]["state"].as_str().unwrap_or("?"),
            t["in_flight"].to_string(),
            latency,
            t["retry_budget"]["available"].to_string(),
            if t["ejected"].as_bool() == Some(true) {
                "yes"
            } else {
                "no"
            },
            score(d, "availability"),
            score(d, "hard_failure"),
            score(d, "latency"),
            score(d, "wrong_script"),
        );
    }
    println!("(detector columns: score as a share of the threshold; 100% fires)");
    let open: Vec<&serde_json::Value> = incidents["incidents"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|i| i["state"] == "open")
        .collect();
    if open.is_empty() {
        println!("\nno open incidents");
    } else {
        println!("\nopen incidents:");
        for i in open {
            let mut line = format!(
                "  #{} {} {} ({}) since {}",
                i["id"],
                i["target"].as_str().unwrap_or("?"),
                i["signal"].as_str().unwrap_or("?"),
                i["severity"].as_str().unwrap_or("?"),
                i["opened_at"].as_str().unwrap_or("?"),
            );
            if let Some(r) = recurrence_text(&i["recurrence"]) {
                line.push_str(&format!(" — {r}"));
            }
            let (n_open, n_overdue) = (
                i["followups_open"].as_u64().unwrap_or(0),
                i["followups_overdue"].as_u64().unwrap_or(0),
            );
            if n_open > 0 {
                line.push_str(&format!(
                    " — follow-ups: {n_open} open, {n_overdue} overdue"
                ));
            }
            println!("{line}");
        }
    }
    // Overdue follow-ups, whatever became of their incidents (most are resolved by then).
    let Some(followups) = followups else {
        return Ok(());
    };
    let overdue: Vec<&serde_json::Value> = followups["followups"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["overdue"] == true)
        .collect();
    if overdue.is_empty() {
        println!("no overdue follow-ups");
    } else {
        println!("\nOVERDUE follow-ups ({}):", overdue.len());
        for f in overdue {
            println!(
                "  #{} incident #{} ({} {}): due {}, owner {} — {}",
                f["id"],
                f["incident"],
                f["target"].as_str().unwrap_or("?"),
                f["signal"].as_str().unwrap_or("?"),
                f["due"].as_str().unwrap_or("?"),
                f["owner"].as_str().unwrap_or("?"),
                one_line(f["text"].as_str().unwrap_or(""), 80),
            );
        }
    }
    Ok(())
}

/// `3rd in 30 days (after #12, #9)` from an incident's `recurrence` (admin API or store JSON).
fn recurrence_text(r: &serde_json::Value) -> Option<String> {
    let nth = r["ordinal"].as_u64()?;
    let days = r["window_days"].as_u64().unwrap_or(30);
    let ids: Vec<String> = r["earlier_ids"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|i| format!("#{i}"))
        .collect();
    Some(format!(
        "recurrence: {} in {days} days (after {})",
        ordinal(nth),
        ids.join(", ")
    ))
}

fn ordinal(n: u64) -> String {
    let suffix = match (n % 10, n % 100) {
        (_, 11..=13) => "th",
        (1, _) => "st",
        (2, _) => "nd",
        (3, _) => "rd",
        _ => "th",
    };
    format!("{n}{suffix}")
}

/// `s` on one line, cut to `max` characters.
fn one_line(s: &str, max: usize) -> String {
    let flat: String = s
        .chars()
        .map(|c| if c.is_whitespace() { ' ' } else { c })
        .collect();
    if flat.chars().count() <= max {
        return flat;
    }
    let cut: String = flat.chars().take(max.saturating_sub(1)).collect();
    format!("{cut}…")
}

/// One call to a running gateway's admin API; its JSON answer, or the error it gave.
async fn admin_call(
    api: &AdminApiArgs,
    method: reqwest::Method,
    path: &str,
    body: Option<serde_json::Value>,
) -> Result<serde_json::Value, String> {
    let key = api.admin_key.as_deref().ok_or(
        "the gateway's admin key is needed: --admin-key KEY or BALLAST_ADMIN_KEY (its [admin] key)",
    )?;
    let http = ballast_server::plain_client(Duration::from_secs(10))?;
    let url = format!("{}{path}", api.url.trim_end_matches('/'));
    let mut req = http.request(method.clone(), &url).bearer_auth(key);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/json")
            .body(b.to_string());
    }
    let resp = req
        .send()
        .await
        .map_err(|e| format!("cannot reach {url}: {e}"))?;
    let status = resp.status();
    let text = resp.text().await.map_err(|e| e.to_string())?;
    let json = serde_json::from_str::<serde_json::Value>(&text);
    if !status.is_success() {
        let message = json
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(format!("{method} {url}: {status}: {message}"));
    }
    json.map_err(|e| format!("{url}: {e}"))
}

async fn followup(command: FollowupCommand) -> Result<(), String> {
    match command {
        FollowupCommand::Add(a) => followup_add(&a).await,
        FollowupCommand::List(a) => followup_list(&a).await,
        FollowupCommand::Done(a) => followup_state(&a.api, &a.ids, "done").await,
        FollowupCommand::Drop(a) => followup_state(&a.api, &a.ids, "dropped").await,
        FollowupCommand::Edit(a) => followup_edit(&a).await,
    }
}

fn followup_line(f: &serde_json::Value) -> String {
    format!(
        "follow-up #{} on incident #{} ({} {}): {}{}, owner {}, due {} — {}",
        f["id"],
        f["incident"],
        f["target"].as_str().unwrap_or("?"),
        f["signal"].as_str().unwrap_or("?"),
        f["state"].as_str().unwrap_or("?"),
        if f["overdue"] == true {
            " (OVERDUE)"
        } else {
            ""
        },
        f["owner"].as_str().unwrap_or("?"),
        f["due"].as_str().unwrap_or("?"),
        one_line(f["text"].as_str().unwrap_or(""), 80),
    )
}

async fn followup_add(a: &FollowupAddArgs) -> Result<(), String> {
    let body = serde_json::json!({
        "text": a.text.join(" "),
        "owner": a.owner,
        "due": a.due,
    });
    let path = format!("/admin/incidents/{}/followups", a.incident);
    let v = admin_call(&a.api, reqwest::Method::POST, &path, Some(body)).await?;
    if a.json {
        println!("{}", v["followup"]);
    } else {
        println!("added {}", followup_line(&v["followup"]));
    }
    Ok(())
}

async fn followup_state(api: &AdminApiArgs, ids: &[u64], state: &str) -> Result<(), String> {
    for id in ids {
        let body = serde_json::json!({ "state": state });
        let path = format!("/admin/followups/{id}");
        let v = admin_call(api, reqwest::Method::PATCH, &path, Some(body)).await?;
        println!("{}", followup_line(&v["followup"]));
    }
    Ok(())
}

async fn followup_edit(a: &FollowupEditArgs) -> Result<(), String> {
    let mut body = serde_json::Map::new();
    if let Some(o) = &a.owner {
        body.insert("owner".to_owned(), o.clone().into());
    }
    if let Some(d) = &a.due {
        body.insert("due".to_owned(), d.clone().into());
    }
    if let Some(t) = &a.text {
        body.insert("text".to_owned(), t.clone().into());
    }
    if a.reopen {
        body.insert("state".to_owned(), "open".into());
    }
    if body.is_empty() {
        return Err("nothing to change: give --owner, --due, --text or --reopen".to_owned());
    }
    let path = format!("/admin/followups/{}", a.id);
    let v = admin_call(
        &a.api,
        reqwest::Method::PATCH,
        &path,
        Some(serde_json::Value::Object(body)),
    )
    .await?;
    if a.json {
        println!("{}", v["followup"]);
    } else {
        println!("{}", followup_line(&v["followup"]));
    }
    Ok(())
}

fn state_name(s: FollowupStateArg) -> &'static str {
    match s {
        FollowupStateArg::Open => "open",
        FollowupStateArg::Done => "done",
        FollowupStateArg::Dropped => "dropped",
    }
}

/// A store file's follow-up as the admin API shows one (overdue as of now).
fn stored_followup_json(
    f: &ballast_server::FollowupRow,
    now: std::time::SystemTime,
) -> serde_json::Value {
    serde_json::json!({
        "id": f.id,
        "incident": f.incident,
        "target": f.target,
        "signal": f.signal,
        "text": f.text,
        "owner": f.owner,
        "due": f.due,
        "state": f.state.as_str(),
        "overdue": f.overdue(now),
        "created_at": humantime::format_rfc3339_seconds(f.created_at).to_string(),
        "updated_at": humantime::format_rfc3339_seconds(f.updated_at).to_string(),
    })
}

async fn followup_list(a: &FollowupListArgs) -> Result<(), String> {
    let list: Vec<serde_json::Value> = if a.store.is_some() || a.config.is_some() {
        let path = store_path(a.store.as_ref(), a.config.as_ref())?;
        let now = std::time::SystemTime::now();
        let mut rows = ballast_server::followup_history(&path).map_err(|e| e.to_string())?;
        rows.sort_by(|x, y| x.due_at.cmp(&y.due_at).then(x.id.cmp(&y.id)));
        rows.iter()
            .map(|f| stored_followup_json(f, now))
            .filter(|f| a.state.is_none_or(|s| f["state"] == state_name(s)))
            .filter(|f| !a.overdue || f["overdue"] == true)
            .filter(|f| a.incident.is_none_or(|i| f["incident"] == i))
            .collect()
    } else {
        let mut query = Vec::new();
        if let Some(s) = a.state {
            query.push(format!("state={}", state_name(s)));
        }
        if a.overdue {
            query.push("overdue=true".to_owned());
        }
        if let Some(i) = a.incident {
            query.push(format!("incident={i}"));
        }
        let path = if query.is_empty() {
            "/admin/followups".to_owned()
        } else {
            format!("/admin/followups?{}", query.join("&"))
        };
        let v = admin_call(&a.api, reqwest::Method::GET, &path, None).await?;
        v["followups"].as_array().cloned().unwrap_or_default()
    };
    if a.json {
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if list.is_empty() {
        println!("no follow-ups");
        return Ok(());
    }
    println!(
        "{:>4}  {:>8}  {:<8}  {:<20}  {:<12}  {:<32}  {:<12}  TEXT",
        "ID", "INCIDENT", "STATE", "DUE", "OWNER", "TARGET", "SIGNAL"
    );
    for f in &list {
        let state = if f["overdue"] == true {
            "OVERDUE"
        } else {
            f["state"].as_str().unwrap_or("?")
        };
        println!(
            "{:>4}  {:>8}  {:<8}  {:<20}  {:<12}  {:<32}  {:<12}  {}",
            f["id"].to_string(),
            format!("#{}", f["incident"]),
            state,
            f["due"].as_str().unwrap_or("?"),
            f["owner"].as_str().unwrap_or("?"),
            f["target"].as_str().unwrap_or("?"),
            f["signal"].as_str().unwrap_or("?"),
            one_line(f["text"].as_str().unwrap_or(""), 60),
        );
    }
    Ok(())
}

/// The incident store a command reads: `--store`, else the one `--config` names, else the default.
fn store_path(store: Option<&PathBuf>, config: Option<&PathBuf>) -> Result<PathBuf, String> {
    let path = match (store, config) {
        (Some(p), _) => p.clone(),
        (None, Some(c)) => {
            let config = Config::load(c).map_err(|e| config_errors(c, &e))?;
            config.incidents.store.ok_or_else(|| {
                format!(
                    "{} keeps incidents in memory only ([incidents] store = \"\")",
                    c.display()
                )
            })?
        }
        (None, None) => PathBuf::from(ballast_core::config::DEFAULT_INCIDENT_STORE),
    };
    if !path.exists() {
        return Err(format!(
            "no incident store at {}: a gateway writes one when it opens its first incident (set --store or --config)",
            path.display()
        ));
    }
    Ok(path)
}

fn incidents(args: &IncidentsArgs) -> Result<(), String> {
    let path = store_path(args.store.as_ref(), args.config.as_ref())?;
    let mut rows =
        ballast_server::incident_history(&path, args.limit).map_err(|e| e.to_string())?;
    rows.reverse();
    let now = std::time::SystemTime::now();
    let followups = ballast_server::followup_history(&path).map_err(|e| e.to_string())?;
    let of = |id: u64| -> Vec<&ballast_server::FollowupRow> {
        followups.iter().filter(|f| f.incident == id).collect()
    };
    let recurrence = |r: &ballast_server::IncidentRow| {
        r.recurrence.as_ref().map(|x| {
            serde_json::json!({
                "ordinal": x.ordinal(),
                "earlier_count": x.count,
                "earlier_ids": x.earlier,
                "last_at": humantime::format_rfc3339_seconds(x.last_at).to_string(),
                "window_days": 30,
            })
        })
    };
    if args.json {
        let list: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "id": r.id,
                    "target": r.target,
                    "signal": r.signal,
                    "severity": r.severity,
                    "opened_at": humantime::format_rfc3339_seconds(r.opened_at).to_string(),
                    "resolved_at": r.resolved_at.map(|t| humantime::format_rfc3339_seconds(t).to_string()),
                    "resolution": r.resolution,
                    "evidence_at_open": serde_json::from_str::<serde_json::Value>(&r.evidence_at_open).ok(),
                    "evidence_latest": serde_json::from_str::<serde_json::Value>(&r.evidence_latest).ok(),
                    "recurrence": recurrence(r),
                    "followups": of(r.id).iter().map(|f| stored_followup_json(f, now)).collect::<Vec<_>>(),
                })
            })
            .collect();
        println!("{}", serde_json::Value::Array(list));
        return Ok(());
    }
    if rows.is_empty() {
        println!("no incidents in {}", path.display());
        return Ok(());
    }
    println!(
        "{:>5}  {:<8}  {:<20}  {:<20}  {:<32}  {:<12}  {:<8}  {:<18}  FOLLOW-UPS",
        "ID", "STATE", "OPENED", "RESOLVED", "TARGET", "SIGNAL", "SEVERITY", "RECURRENCE"
    );
    for r in &rows {
        let state = if r.resolved_at.is_some() {
            "resolved"
        } else {
            "open"
        };
        let resolved = r.resolved_at.map_or_else(
            || "-".to_owned(),
            |t| humantime::format_rfc3339_seconds(t).to_string(),
        );
        // `3rd (#12 #9)`: its place among this target's incidents of this signal in 30 days.
        let recurs = r.recurrence.as_ref().map_or_else(
            || "-".to_owned(),
            |x| {
                let ids: Vec<String> = x.earlier.iter().map(|i| format!("#{i}")).collect();
                format!("{} ({})", ordinal(u64::from(x.ordinal())), ids.join(" "))
            },
        );
        let fs = of(r.id);
        let open = fs.iter().filter(|f| f.state.as_str() == "open").count();
        let overdue = fs.iter().filter(|f| f.overdue(now)).count();
        let follow = match (fs.len(), overdue) {
            (0, _) => "-".to_owned(),
            (n, 0) => format!("{n} ({open} open)"),
            (n, d) => format!("{n} ({open} open, {d} OVERDUE)"),
        };
        println!(
            "{:>5}  {:<8}  {:<20}  {:<20}  {:<32}  {:<12}  {:<8}  {:<18}  {}",
            r.id,
            state,
            humantime::format_rfc3339_seconds(r.opened_at).to_string(),
            resolved,
            r.target,
            r.signal,
            r.severity,
            recurs,
            follow
        );
    }
    Ok(())
}

fn config_errors(path: &Path, e: &ConfigErrors) -> String {
    format!("{} is invalid:\n{e}", path.display())
}

async fn check(args: &CheckArgs) -> Result<(), String> {
    let config = Config::load(&args.config).map_err(|e| config_errors(&args.config, &e))?;
    if args.json && !args.probe && args.against.is_none() {
        return Err("--json goes with --probe or --against".to_owned());
    }
    let path = args.config.display();
    // The change against the running configuration (or a file), before any probe is sent.
    let mut diff_refused = None;
    let mut diff_json = None;
    if let Some(a) = &args.against {
        let current = crate::diff_cmd::load_against(a, args.admin_key.as_deref()).await?;
        let (out, passes) = crate::diff_cmd::against(&current, &config, args.strict, args.json);
        if args.json && args.probe {
            diff_json =
                Some(serde_json::from_str::<serde_json::Value>(&out).map_err(|e| e.to_string())?);
        } else {
            print!("{out}");
        }
        if !passes {
            diff_refused = Some(format!(
                "{path}: the change against {a} is refused (errors above)"
            ));
        }
        if !args.probe {
            return diff_refused.map_or(Ok(()), Err);
        }
    }
    if args.probe {
        let live = check_live(args, config, diff_json).await;
        return match (diff_refused, live) {
            (Some(d), Err(l)) => Err(format!("{d}\n{l}")),
            (Some(d), Ok(())) => Err(d),
            (None, live) => live,
        };
    }
    // Preparing the state checks what validation cannot: endpoint URLs and header-safe keys.
    AppState::new(config.clone())
        .map_err(|e| format!("{} is invalid:\n{e}", args.config.display()))?;
    println!("{}: OK", args.config.display());
    print_routes(&config);
    Ok(())
}

/// `check --probe`: the live gate over every target; the report as a table or JSON, and an error
/// (non-zero exit) when the gate refuses the configuration.
async fn check_live(
    args: &CheckArgs,
    config: Config,
    against: Option<serde_json::Value>,
) -> Result<(), String> {
    let path = args.config.display();
    let opts = ballast_server::gate::GateOptions {
        timeout: args.timeout,
        tools: args.tools,
        concurrency: usize::from(args.concurrency),
    };
    if !args.json {
        print_routes(&config);
        println!(
            "{path}: valid; probing every target (timeout {}, tools {})\n",
            humantime::format_duration(args.timeout),
            if args.tools { "checked" } else { "not checked" },
        );
    }
    let report = ballast_server::gate::check(config, &opts)
        .await
        .map_err(|e| format!("{path} is invalid:\n{e}"))?;
    if args.json {
        let json = match against {
            // Both reports in one document.
            Some(diff) => serde_json::to_string_pretty(&serde_json::json!({
                "probe": report,
                "against": diff,
            })),
            None => serde_json::to_string_pretty(&report),
        }
        .map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", report.table());
    }
    if report.ok {
        return Ok(());
    }
    Err(if args.json {
        format!(
            "{path}: the gate refuses this configuration:\n  {}",
            report.problems.join("\n  ")
        )
    } else {
        format!(
            "{path}: the gate refuses this configuration ({} problem{}, above)",
            report.problems.len(),
            if report.problems.len() == 1 { "" } else { "s" }
        )
    })
}

fn print_routes(config: &Config) {
    for r in &config.routes {
        // Tiers in failover order; a tier that balances over several targets is shown in brackets.
        let tiers: Vec<String> = r
            .tiers
            .iter()
            .map(|tier| {
                let names: Vec<String> = r.targets[tier.targets.clone()]
                    .iter()
                    .map(|t| format!("{}/{}", config.provider(t.provider).name, t.model))
                    .collect();
                if names.len() == 1 {
                    names.join("")
                } else {
                    format!("[{}]", names.join(" | "))
                }
            })
            .collect();
        println!("  route {:<24} -> {}", r.name, tiers.join(" -> "));
    }
}

/// The configuration `serve` runs: the given file, else ./ballast.toml, else one built from the
/// environment's provider keys.
fn load_for_serve(path: Option<PathBuf>) -> Result<(Config, Option<PathBuf>), String> {
    let path = path.or_else(|| {
        let default = PathBuf::from("ballast.toml");
        default.exists().then_some(default)
    });
    match path {
        Some(p) => {
            let c = Config::load(&p).map_err(|e| config_errors(&p, &e))?;
            println!("ballast: configuration {}", p.display());
            Ok((c, Some(p)))
        }
        None => {
            let text = default_config_toml(&ProcessEnv).map_err(|e| e.to_string())?;
            let c = Config::from_toml(&text, &ProcessEnv).map_err(|e| e.to_string())?;
            println!("ballast: no config file; built this configuration from the environment:");
            Ok((c, None))
        }
    }
}

/// Refuses an open gateway on a non-loopback address unless explicitly allowed.
fn check_exposure(config: &Config, listen: SocketAddr, allow: bool) -> Result<(), String> {
    if config.auth.gateway_keys.is_empty() && !listen.ip().is_loopback() && !allow {
        return Err(format!(
            "refusing to listen on {listen} with no gateway keys: anyone who can reach it could spend \
             your provider quota. Set [auth] gateway_keys, listen on 127.0.0.1, or pass \
             --allow-unauthenticated."
        ));
    }
    Ok(())
}

async fn bind(listen: SocketAddr) -> Result<TcpListener, String> {
    TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))
}

async fn run_gateway(
    config: Config,
    path: Option<PathBuf>,
    watch: bool,
    listener: TcpListener,
) -> Result<(), String> {
    let state = AppState::new(config).map_err(|e| e.to_string())?;
    // The kill switch at start: providers or provider/model targets to keep out of rotation.
    if let Ok(list) = std::env::var("BALLAST_DISABLE") {
        let unknown = state.disable(&list);
        if !unknown.is_empty() {
            return Err(format!(
                "BALLAST_DISABLE names no provider or target: {}",
                unknown.join(", ")
            ));
        }
        println!("ballast: disabled at start (BALLAST_DISABLE): {list}");
    }
    let state = Arc::new(state);
    if let Some(addr) = state.config.telemetry.metrics_listen {
        let metrics = bind(addr).await?;
        let shown = metrics.local_addr().map_err(|e| e.to_string())?;
        println!("ballast metrics on http://{shown}/metrics");
        tokio::spawn(ballast_server::serve_metrics(metrics, state.clone()));
    }
    let gateway = ballast_server::rollout::Gateway::new(state, path);
    tokio::spawn(reload_on_hangup(gateway.clone()));
    if watch {
        tokio::spawn(watch_file(gateway.clone()));
    }
    ballast_server::serve_gateway(listener, gateway, shutdown_signal())
        .await
        .map_err(|e| format!("server error: {e}"))
}

/// Reports what became of a configuration change the gateway was asked to take.
fn report_reload(
    source: &str,
    result: Result<serde_json::Value, ballast_server::rollout::ApplyError>,
) {
    use ballast_server::rollout::ApplyError as E;
    match result {
        Ok(v) => tracing::warn!(
            "{source}: configuration version {} accepted: {}",
            v["version"],
            v["summary"].as_str().unwrap_or("")
        ),
        Err(E::Unchanged(v)) => tracing::info!("{source}: no change (version {v} serves)"),
        Err(E::Refused { message, problems }) => {
            tracing::error!(
                "{source}: configuration refused: {message}: {}",
                problems.join("; ")
            );
        }
        Err(E::Busy(m) | E::RolledBackBefore(m)) => tracing::error!("{source}: not taken: {m}"),
    }
}

/// `SIGHUP`: read the configuration file again and take it (through the gate and the rollout).
async fn reload_on_hangup(gateway: Arc<ballast_server::rollout::Gateway>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let Ok(mut hup) = signal(SignalKind::hangup()) else {
            tracing::warn!("cannot listen for SIGHUP: reload with POST /admin/config instead");
            return;
        };
        while hup.recv().await.is_some() {
            report_reload("SIGHUP", gateway.reload_file("SIGHUP").await);
        }
    }
    #[cfg(not(unix))]
    let _ = gateway;
}

/// `--watch`: take the configuration file whenever its content changes (looked at every second).
async fn watch_file(gateway: Arc<ballast_server::rollout::Gateway>) {
    let Some(path) = gateway.config_path().map(std::path::Path::to_path_buf) else {
        tracing::warn!("--watch: the gateway was not started from a file; nothing to watch");
        return;
    };
    let mut last = tokio::fs::read(&path).await.ok();
    let mut every = tokio::time::interval(std::time::Duration::from_secs(1));
    loop {
        every.tick().await;
        let Ok(now) = tokio::fs::read(&path).await else {
            continue;
        };
        if last.as_deref() == Some(&now[..]) {
            continue;
        }
        last = Some(now);
        report_reload(
            "file change",
            gateway.reload_file("file change (--watch)").await,
        );
    }
}

async fn serve(args: ServeArgs) -> Result<(), String> {
    let (mut config, path) = load_for_serve(args.config)?;
    if !config.incidents.store_set {
        // Incidents survive restarts unless the configuration says otherwise.
        config.incidents.store = Some(PathBuf::from(ballast_core::config::DEFAULT_INCIDENT_STORE));
    }
    print_routes(&config);
    let listen = args.listen.unwrap_or(config.server.listen);
    check_exposure(&config, listen, args.allow_unauthenticated)?;
    let listener = bind(listen).await?;
    let addr = listener.local_addr().map_err(|e| e.to_string())?;
    println!("ballast listening on http://{addr}");
    run_gateway(config, path, args.watch, listener).await
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {},
        () = term => {},
    }
    tracing::info!("shutting down: draining in-flight requests");
}

fn sim_config(seed: u64, ttft_ms: u64, token_delay_ms: u64) -> ballast_sim::SimConfig {
    ballast_sim::SimConfig {
        seed,
        ttft: Duration::from_millis(ttft_ms),
        token_delay: Duration::from_millis(token_delay_ms),
        ..ballast_sim::SimConfig::default()
    }
}

async fn sim(args: SimArgs) -> Result<(), String> {
    let mut config = sim_config(args.seed, args.ttft_ms, args.token_delay_ms);
    for f in &args.faults {
        let flag: ballast_sim::FaultFlag = f.parse().map_err(|e| format!("--fault {f:?}: {e}"))?;
        config.faults.apply(flag);
    }
    config.require_key = args.require_key;
    config.strict_params = !args.lenient_params;
    let handle = ballast_sim::start(args.listen, config)
        .await
        .map_err(|e| format!("cannot start the simulator on {}: {e}", args.listen))?;
    println!("ballast-sim listening on {}", handle.base_url());
    shutdown_signal().await;
    handle.shutdown().await;
    Ok(())
}

async fn demo(args: DemoArgs) -> Result<(), String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let start = |seed| {
        ballast_sim::start(
            loopback,
            sim_config(seed, args.ttft_ms, args.token_delay_ms),
        )
    };
    let anthropic = start(1)
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let openai = start(2)
        .await
        .map_err(|e| format!("cannot start the simulator: {e}"))?;
    let text = format!(
        r#"
[providers.sim-anthropic]
kind = "anthropic"
base_url = "{a}"
api_key = "sim-key"

[providers.sim-openai]
kind = "openai"
base_url = "{o}/v1"
api_key = "sim-key"

[routes."claude-sonnet-4-5"]
targets = ["sim-anthropic/claude-sonnet-4-5"]

[routes."gpt-4.1"]
targets = ["sim-openai/gpt-4.1"]

# Any client, either provider: Claude first, GPT when Claude is down (translated both ways).
[routes.chat]
targets = ["sim-anthropic/claude-sonnet-4-5", "sim-openai/gpt-4.1"]
"#,
        a = anthropic.base_url(),
        o = openai.base_url(),
    );
    let config = Config::from_toml(&text, &ProcessEnv).map_err(|e| e.to_string())?;
    let listener = match bind(args.listen).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("{e}; using a free port instead");
            bind(loopback).await?
        }
    };
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    print_demo(&base, &anthropic.base_url(), &openai.base_url());
    print_routes(&config);
    let result = run_gateway(config, None, false, listener).await;
    anthropic.shutdown().await;
    openai.shutdown().await;
    result
}

fn print_demo(base: &str, anthropic_sim: &str, openai_sim: &str) {
    println!(
        r#"
Ballast demo: the gateway is at {base}
  simulated Anthropic provider: {anthropic_sim}   (faults: POST {anthropic_sim}/_sim/faults)
  simulated OpenAI provider:    {openai_sim}   (faults: POST {openai_sim}/_sim/faults)

Try it with curl:
  curl -s {base}/v1/chat/completions -H 'content-type: application/json' \
    -d '{{"model":"gpt-4.1","messages":[{{"role":"user","content":"Hello!"}}]}}'
  curl -s {base}/v1/messages -H 'content-type: application/json' -H 'anthropic-version: 2023-06-01' \
    -d '{{"model":"claude-sonnet-4-5","max_tokens":256,"messages":[{{"role":"user","content":"Hello!"}}]}}'

With the OpenAI Python SDK:
  from openai import OpenAI
  client = OpenAI(base_url="{base}/v1", api_key="unused")
  r = client.chat.completions.create(model="gpt-4.1", messages=[{{"role": "user", "content": "Hello!"}}])
  print(r.choices[0].message.content)

With the Anthropic Python SDK:
  import anthropic
  client = anthropic.Anthropic(base_url="{base}", api_key="unused")
  m = client.messages.create(model="claude-sonnet-4-5", max_tokens=256, messages=[{{"role": "user", "content": "Hello!"}}])
  print(m.content[0].text)

Take Claude down and watch route "chat" fail over to GPT, for either SDK (then DELETE to heal):
  curl -s -X POST {anthropic_sim}/_sim/faults -d '{{"error": {{"status": 529, "rate": 1.0}}}}'
  curl -s -i {base}/v1/messages -H 'content-type: application/json' \
    -d '{{"model":"chat","max_tokens":256,"messages":[{{"role":"user","content":"Still there?"}}]}}'
  curl -s -X DELETE {anthropic_sim}/_sim/faults
Press Ctrl-C to stop.
"#
    );
}
