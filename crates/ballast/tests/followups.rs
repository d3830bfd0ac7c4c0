//! `ballast incidents followup add|list|done|drop|edit`, `ballast status` and `ballast incidents`
//! end to end: the binary against a running `ballast serve` (its admin API) with an SQLite store in
//! a temp dir, in front of the simulator; follow-ups overdue, closed, listed from the store file;
//! a recurrence across a restart.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

const KEY: &str = "admin-key-7";
const TARGET: &str = "sim/gpt-4.1";

fn ballast() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ballast"));
    c.env_remove("BALLAST_LOG").env_remove("BALLAST_ADMIN_KEY");
    c
}

/// Kills the gateway when the test ends, however it ends.
struct Gateway {
    child: Child,
    url: String,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    /// `ballast serve --config FILE --listen 127.0.0.1:0`, once it says where it listens.
    async fn start(config: &Path) -> Self {
        let mut child = ballast()
            .args(["serve", "--config"])
            .arg(config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if let Some(url) = line.strip_prefix("ballast listening on ")
                    && let Some(tx) = tx.take()
                {
                    let _ = tx.send(url.to_owned());
                }
            }
        });
        let url = tokio::time::timeout(Duration::from_secs(30), rx)
            .await
            .expect("the gateway did not start")
            .unwrap();
        Self { child, url }
    }

    /// Stops it as an operator would (SIGTERM: it drains and closes its store), bounded.
    async fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        for _ in 0..200 {
            if self.child.try_wait().unwrap().is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("the gateway did not stop on SIGTERM");
    }
}

/// Runs `ballast ARGS` off the runtime's threads.
async fn run(args: Vec<String>, env_key: bool) -> Output {
    tokio::task::spawn_blocking(move || {
        let mut c = ballast();
        if env_key {
            c.env("BALLAST_ADMIN_KEY", KEY);
        }
        c.args(&args).output().unwrap()
    })
    .await
    .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn args(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

/// Runs a command that must succeed; its stdout.
async fn ok(list: &[&str]) -> String {
    let o = run(args(list), false).await;
    assert!(
        o.status.success(),
        "{list:?}: exit {:?}\n{}\n{}",
        o.status.code(),
        stdout(&o),
        stderr(&o)
    );
    stdout(&o)
}

/// Runs a command that must fail with exit 1; its stderr.
async fn fails(list: &[&str], env_key: bool) -> String {
    let o = run(args(list), env_key).await;
    assert_eq!(o.status.code(), Some(1), "{list:?}: {}", stdout(&o));
    let e = stderr(&o);
    assert!(e.starts_with("error: "), "{e}");
    assert!(!e.contains("panicked"), "{e}");
    e
}

fn temp_dir() -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir =
        std::env::temp_dir().join(format!("ballast-followups-{}-{nanos}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Fails the simulator's answers until the gateway opens a new hard-failure incident; its id.
async fn hard_failure(gw: &Gateway, sim: &ballast_sim::SimHandle, known: &[u64]) -> u64 {
    let http = ballast_server::plain_client(Duration::from_secs(10)).unwrap();
    sim.set_faults(serde_json::from_value(json!({"error": {"status": 503}})).unwrap());
    for _ in 0..5 {
        let r = http
            .post(format!("{}/v1/chat/completions", gw.url))
            .body(r#"{"model":"solo","messages":[{"role":"user","content":"hi"}]}"#)
            .header("content-type", "application/json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 503);
    }
    for _ in 0..100 {
        let text = http
            .get(format!("{}/admin/incidents", gw.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        let found = v["incidents"].as_array().unwrap().iter().find_map(|i| {
            let id = i["id"].as_u64().unwrap();
            (i["signal"] == "hard_failure" && i["state"] == "open" && !known.contains(&id))
                .then_some(id)
        });
        if let Some(id) = found {
            return id;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no hard-failure incident");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follow_ups_from_the_command_line() {
    let dir = temp_dir();
    let store = dir.join("incidents.sqlite");
    let sim = ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ballast_sim::SimConfig::default(),
    )
    .await
    .unwrap();
    let config = dir.join("ballast.toml");
    std::fs::write(
        &config,
        format!(
            r#"
[admin]
key = "{KEY}"
[policy]
retries = 0
[policy.breaker]
consecutive_failures = 1000000
min_requests = 1000000
[probes]
interval = "0s"
[incidents]
store = "{store}"
[providers.sim]
kind = "openai"
base_url = "{base}/v1"
api_key = "k"
[routes.solo]
targets = ["{TARGET}"]
"#,
            store = store.display(),
            base = sim.base_url(),
        ),
    )
    .unwrap();
    let store_arg = store.display().to_string();

    let gw = Gateway::start(&config).await;
    let url = gw.url.clone();
    let api = ["--url", url.as_str(), "--admin-key", KEY];
    let first = hard_failure(&gw, &sim, &[]).await;
    let first_s = first.to_string();

    // add: one already late (the key from the environment), one due far ahead (`#ID` works too).
    let o = run(
        args(&[
            "incidents",
            "followup",
            "add",
            &first_s,
            "--owner",
            "alice",
            "--due",
            "2020-01-01",
            "rotate",
            "the",
            "staging",
            "key",
            "--url",
            &url,
        ]),
        true,
    )
    .await;
    assert!(o.status.success(), "{}", stderr(&o));
    let added = stdout(&o);
    assert!(
        added.starts_with(&format!(
            "added follow-up #1 on incident #{first} ({TARGET} hard_failure): open (OVERDUE), owner alice, due 2020-01-01 — rotate the staging key"
        )),
        "{added}"
    );
    let hash = format!("#{first}");
    let mut add = vec![
        "incidents",
        "followup",
        "add",
        hash.as_str(),
        "--owner",
        "bob",
        "--due",
        "2999-01-01",
        "--json",
        "add a second provider",
    ];
    add.extend(api);
    let v: Value = serde_json::from_str(&ok(&add).await).unwrap();
    assert_eq!(v["id"], 2);
    assert_eq!(v["owner"], "bob");
    assert_eq!(v["overdue"], false);

    // list (from the gateway): soonest due first, the late one marked.
    let mut list = vec!["incidents", "followup", "list"];
    list.extend(api);
    let table = ok(&list).await;
    let lines: Vec<&str> = table.lines().collect();
    assert!(
        lines[0].contains("ID") && lines[0].contains("OWNER"),
        "{table}"
    );
    assert!(
        lines[1].contains("OVERDUE")
            && lines[1].contains("alice")
            && lines[1].contains("rotate the staging key"),
        "{table}"
    );
    assert!(
        lines[2].contains("open") && lines[2].contains("bob"),
        "{table}"
    );
    let mut overdue = vec!["incidents", "followup", "list", "--overdue", "--json"];
    overdue.extend(api);
    let v: Value = serde_json::from_str(&ok(&overdue).await).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    assert_eq!(v[0]["id"], 1);

    // The status page shows the overdue follow-up and the open incident's follow-ups.
    let mut status = vec!["status"];
    status.extend(api);
    let page = ok(&status).await;
    assert!(page.contains("OVERDUE follow-ups (1):"), "{page}");
    assert!(
        page.contains(&format!(
            "#1 incident #{first} ({TARGET} hard_failure): due 2020-01-01, owner alice — rotate the staging key"
        )),
        "{page}"
    );
    assert!(
        page.contains(&format!("#{first} {TARGET} hard_failure (critical)"))
            && page.contains("follow-ups: 2 open, 1 overdue"),
        "{page}"
    );

    // Errors, each saying what is wrong.
    let mut e = vec![
        "incidents",
        "followup",
        "add",
        "999",
        "--owner",
        "a",
        "--due",
        "2030-01-01",
        "x",
    ];
    e.extend(api);
    assert!(fails(&e, false).await.contains("no incident 999"));
    let mut e = vec![
        "incidents",
        "followup",
        "add",
        first_s.as_str(),
        "--owner",
        "a",
        "--due",
        "2030-02-30",
        "x",
    ];
    e.extend(api);
    let err = fails(&e, false).await;
    assert!(err.contains("is not an RFC 3339 date"), "{err}");
    let err = fails(
        &["incidents", "followup", "done", "1", "--url", &url],
        false,
    )
    .await;
    assert!(err.contains("admin key is needed"), "{err}");
    let err = fails(
        &["incidents", "followup", "done", "77", "--url", &url],
        true,
    )
    .await;
    assert!(err.contains("no follow-up 77"), "{err}");
    let err = fails(&["incidents", "followup", "edit", "2", "--url", &url], true).await;
    assert!(err.contains("nothing to change"), "{err}");
    let o = run(args(&["incidents", "followup", "done", "x"]), true).await;
    assert_eq!(o.status.code(), Some(2), "clap refuses a bad id");

    // done, edit, drop.
    let mut done = vec!["incidents", "followup", "done", "1"];
    done.extend(api);
    let out = ok(&done).await;
    assert!(
        out.contains("follow-up #1") && out.contains(": done, owner alice"),
        "{out}"
    );
    let v: Value = serde_json::from_str(&ok(&overdue).await).unwrap();
    assert_eq!(v, json!([]));
    let mut edit = vec![
        "incidents",
        "followup",
        "edit",
        "2",
        "--owner",
        "carol",
        "--due",
        "2021-01-01",
        "--json",
    ];
    edit.extend(api);
    let v: Value = serde_json::from_str(&ok(&edit).await).unwrap();
    assert_eq!(
        (v["owner"].as_str(), v["overdue"].as_bool()),
        (Some("carol"), Some(true))
    );
    let page = ok(&status).await;
    assert!(
        page.contains("OVERDUE follow-ups (1):") && page.contains("owner carol"),
        "{page}"
    );
    let mut drop_ = vec!["incidents", "followup", "drop", "2"];
    drop_.extend(api);
    assert!(ok(&drop_).await.contains(": dropped, owner carol"));
    assert!(ok(&status).await.contains("no overdue follow-ups"));

    // A restart: the store file lists them without a gateway, and the next incident of the same
    // class on the same target is its recurrence.
    gw.stop().await;
    let v: Value = serde_json::from_str(
        &ok(&[
            "incidents",
            "followup",
            "list",
            "--store",
            &store_arg,
            "--json",
        ])
        .await,
    )
    .unwrap();
    let states: Vec<(u64, &str)> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|f| (f["id"].as_u64().unwrap(), f["state"].as_str().unwrap()))
        .collect();
    // Soonest due first, as from the gateway.
    assert_eq!(states, vec![(1, "done"), (2, "dropped")]);
    let v: Value = serde_json::from_str(
        &ok(&[
            "incidents",
            "followup",
            "list",
            "--config",
            &config.display().to_string(),
            "--state",
            "done",
            "--json",
        ])
        .await,
    )
    .unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);

    let gw = Gateway::start(&config).await;
    let url = gw.url.clone();
    let second = hard_failure(&gw, &sim, &[first]).await;
    let page = ok(&["status", "--url", &url, "--admin-key", KEY]).await;
    assert!(
        page.contains(&format!("#{second} {TARGET} hard_failure (critical) since"))
            && page.contains(&format!("recurrence: 2nd in 30 days (after #{first})")),
        "{page}"
    );
    gw.stop().await;
    let table = ok(&["incidents", "--store", &store_arg]).await;
    let row = |id: u64| {
        table
            .lines()
            .find(|l| l.trim_start().starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("no row {id}: {table}"))
            .to_owned()
    };
    assert!(
        table.lines().next().unwrap().contains("RECURRENCE"),
        "{table}"
    );
    assert!(row(second).contains(&format!("2nd (#{first})")), "{table}");
    assert!(row(first).contains("2 (0 open)"), "{table}");
    let v: Value =
        serde_json::from_str(&ok(&["incidents", "--store", &store_arg, "--json"]).await).unwrap();
    let newest = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == second)
        .unwrap();
    assert_eq!(newest["recurrence"]["earlier_ids"], json!([first]));
    assert_eq!(newest["recurrence"]["ordinal"], 2);
    let older = v
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["id"] == first)
        .unwrap();
    assert_eq!(older["followups"].as_array().unwrap().len(), 2);
    sim.shutdown().await;
    let _ = std::fs::remove_dir_all(&dir);
}
