//! The access log as an operator gets it from `ballast serve`: one line per request under the
//! `ballast::access` target; `[telemetry] access_log_sample` thins the answered requests' lines
//! while every failed request is still logged; `--log info,ballast::access=off` turns them off.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// A running `ballast serve`, its stderr collected; killed when dropped.
struct Gateway {
    child: Child,
    url: String,
    log: Arc<Mutex<Vec<String>>>,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Gateway {
    async fn start(telemetry: &str, log: &str, sim: &str) -> Self {
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir: PathBuf = std::env::temp_dir().join(format!("ballast-access-log-{nanos}"));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("ballast.toml");
        std::fs::write(
            &config,
            format!(
                "[policy]\nretries = 0\n[probes]\ninterval = \"0s\"\n[incidents]\nstore = \"\"\n\
                 [telemetry]\n{telemetry}\n\
                 [providers.sim]\nkind = \"openai\"\nbase_url = \"{sim}/v1\"\napi_key = \"k\"\n\
                 [routes.solo]\ntargets = [\"sim/gpt-4.1\"]\n"
            ),
        )
        .unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_ballast"))
            .env_remove("BALLAST_LOG")
            .current_dir(&dir)
            .args(["--log", log, "serve", "--config"])
            .arg(&config)
            .args(["--listen", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                lines.lock().unwrap().push(line);
            }
        });
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
        Self { child, url, log }
    }

    /// Sends one Chat Completions request for `model`; its status and request id.
    async fn call(&self, model: &str) -> (u16, String) {
        let r = ballast_server::plain_client(Duration::from_secs(30))
            .unwrap()
            .post(format!("{}/v1/chat/completions", self.url))
            .header("content-type", "application/json")
            .body(
                serde_json::json!({
                    "model": model,
                    "messages": [{"role": "user", "content": "hi"}],
                })
                .to_string(),
            )
            .send()
            .await
            .unwrap();
        let id = r.headers()["x-request-id"].to_str().unwrap().to_owned();
        (r.status().as_u16(), id)
    }

    /// The log lines naming `id`, after giving the writer a moment.
    async fn lines_with(&self, id: &str) -> Vec<String> {
        for _ in 0..40 {
            let found: Vec<String> = self
                .log
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.contains(id))
                .cloned()
                .collect();
            if !found.is_empty() {
                return found;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        Vec::new()
    }
}

async fn sim() -> ballast_sim::SimHandle {
    ballast_sim::start(
        SocketAddr::from(([127, 0, 0, 1], 0)),
        ballast_sim::SimConfig::default(),
    )
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answered_requests_are_sampled_and_failures_always_logged() {
    let sim = sim().await;
    // By default every request has its line, under the `ballast::access` target.
    let all = Gateway::start("", "info", &sim.base_url()).await;
    let (status, id) = all.call("solo").await;
    assert_eq!(status, 200);
    let lines = all.lines_with(&id).await;
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert!(lines[0].contains("ballast::access"), "{lines:?}");
    // Its latency in milliseconds, to the microsecond.
    let latency = lines[0]
        .split_once("latency_ms=")
        .and_then(|(_, rest)| rest.split(' ').next())
        .unwrap();
    let decimals = latency.split_once('.').map_or(0, |(_, d)| d.len());
    assert!(latency.parse::<f64>().is_ok() && decimals <= 3, "{latency}");
    drop(all);

    // Sampled at 0: no answered request is logged, a failed one still is.
    let none = Gateway::start("access_log_sample = 0.0", "info", &sim.base_url()).await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        let (status, id) = none.call("solo").await;
        assert_eq!(status, 200);
        ids.push(id);
    }
    let (status, failed) = none.call("no-such-model").await;
    assert_eq!(status, 404);
    assert_eq!(none.lines_with(&failed).await.len(), 1);
    for id in &ids {
        let lines = none.log.lock().unwrap().clone();
        assert!(!lines.iter().any(|l| l.contains(id.as_str())), "{id}");
    }
    drop(none);

    // Off by its target, other info lines untouched.
    let off = Gateway::start("", "info,ballast::access=off", &sim.base_url()).await;
    let (_, id) = off.call("solo").await;
    let (_, failed) = off.call("no-such-model").await;
    // Given as long as the first gateway's line took to show, and longer.
    assert_eq!(off.lines_with(&id).await, Vec::<String>::new());
    assert_eq!(off.lines_with(&failed).await, Vec::<String>::new());
}

#[test]
fn a_sample_outside_zero_to_one_is_refused_with_its_key_path() {
    let dir = std::env::temp_dir().join(format!(
        "ballast-access-log-check-{}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let config = dir.join("ballast.toml");
    std::fs::write(
        &config,
        "[telemetry]\naccess_log_sample = 1.5\n[providers.sim]\nkind = \"openai\"\n\
         base_url = \"http://127.0.0.1:9/v1\"\napi_key = \"k\"\n[routes.solo]\n\
         targets = [\"sim/gpt-4.1\"]\n",
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ballast"))
        .env_remove("BALLAST_LOG")
        .args(["check", "--config"])
        .arg(&config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("telemetry.access_log_sample"), "{text}");
}
