//! Remediation tracked to closure, on a real gateway over loopback with its SQLite store in a temp
//! dir: follow-up items on incidents through the admin API (kept in the store, a schema migration
//! for a store of an earlier version), overdue follow-ups in `/metrics` and the admin API,
//! recurrences linked to the earlier incidents (in the record, the API and the alert), and the
//! weekly digest delivered to a local webhook — sent on demand, and on schedule under paused time.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use ballast_sim::{Faults, SimHandle};
use common::scripted::{Reply, chat, chat_answer, rig};
use common::{Gateway, faults, gateway, sim};
use serde_json::{Value, json};

const TARGET: &str = "sim/gpt-4.1";

fn temp_dir(name: &str) -> PathBuf {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    let dir = std::env::temp_dir().join(format!(
        "ballast-remediation-{name}-{}-{nanos}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A webhook receiver on 127.0.0.1: every JSON body posted to it, in order.
struct Hook {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
}

impl Hook {
    async fn start() -> Self {
        let got: Arc<Mutex<Vec<Value>>> = Arc::default();
        let keep = got.clone();
        let app = axum::Router::new().route(
            "/hook",
            axum::routing::post(move |body: bytes::Bytes| {
                let keep = keep.clone();
                async move {
                    keep.lock()
                        .unwrap()
                        .push(serde_json::from_slice(&body).unwrap());
                    "ok"
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { url, got }
    }

    fn events(&self, event: &str) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .filter(|v| v["event"] == event)
            .cloned()
            .collect()
    }

    /// Waits (bounded) until `event` arrived `n` times.
    async fn wait_for(&self, event: &str, n: usize) -> Vec<Value> {
        for _ in 0..200 {
            let got = self.events(event);
            if got.len() >= n {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!(
            "{event} did not arrive {n} times: {:?}",
            self.got.lock().unwrap()
        );
    }
}

fn config(sim: &SimHandle, store: &str, sinks: &str) -> String {
    format!(
        r#"
        [admin]
        key = "admin-key"
        [policy]
        retries = 0
        retry_budget_min_per_second = 10000.0
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
        {sinks}
        "#,
        base = sim.base_url(),
    )
}

struct Rig {
    sim: SimHandle,
    gw: Gateway,
    http: reqwest::Client,
}

impl Rig {
    async fn start(store: &str, sinks: &str) -> Self {
        let sim = sim().await;
        let gw = gateway(&config(&sim, store, sinks)).await;
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .unwrap();
        Self { sim, gw, http }
    }

    async fn chat(&self) -> u16 {
        self.http
            .post(format!("{}/v1/chat/completions", self.gw.url))
            .json(&json!({"model": "solo", "messages": [{"role": "user", "content": "hi"}]}))
            .send()
            .await
            .unwrap()
            .status()
            .as_u16()
    }

    async fn admin(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> (u16, Value) {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.gw.url))
            .bearer_auth("admin-key");
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    async fn get(&self, path: &str) -> Value {
        let (status, v) = self.admin(reqwest::Method::GET, path, None).await;
        assert_eq!(status, 200, "{path}: {v}");
        v
    }

    async fn post(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::POST, path, Some(body)).await
    }

    async fn patch(&self, path: &str, body: Value) -> (u16, Value) {
        self.admin(reqwest::Method::PATCH, path, Some(body)).await
    }

    async fn metric(&self, signal: &str) -> Option<f64> {
        let m = self
            .http
            .get(format!("{}/metrics", self.gw.url))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        let want = format!("ballast_incident_followups_overdue{{signal=\"{signal}\"}} ");
        m.lines()
            .find_map(|l| l.strip_prefix(want.as_str()))
            .map(|v| v.trim().parse().unwrap())
    }

    /// Fails the target until a new hard-failure incident is open; its JSON.
    async fn hard_failure(&self) -> Value {
        let before: Vec<u64> = self
            .incidents()
            .await
            .iter()
            .map(|i| i["id"].as_u64().unwrap())
            .collect();
        self.sim
            .set_faults(faults(json!({"error": {"status": 503}})));
        for _ in 0..5 {
            assert_eq!(self.chat().await, 503);
        }
        let mut listed = Vec::new();
        for _ in 0..100 {
            listed = self.incidents().await;
            let opened = listed.iter().find(|i| {
                i["signal"] == "hard_failure"
                    && i["state"] == "open"
                    && !before.contains(&i["id"].as_u64().unwrap())
            });
            if let Some(i) = opened {
                return i.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no hard-failure incident: {listed:?}");
    }

    /// The target answers again: its hard-failure incident resolves.
    async fn recover(&self) {
        self.sim.set_faults(Faults::default());
        assert_eq!(self.chat().await, 200);
    }

    async fn incidents(&self) -> Vec<Value> {
        self.get("/admin/incidents").await["incidents"]
            .as_array()
            .unwrap()
            .clone()
    }

    async fn incident(&self, id: u64) -> Value {
        self.incidents()
            .await
            .into_iter()
            .find(|i| i["id"] == id)
            .unwrap()
    }
}

fn id(v: &Value) -> u64 {
    v["id"].as_u64().unwrap()
}

/// Follow-ups through the admin API, kept in the store; overdue in `/metrics` and the API from
/// their due date on; recurrences linked in the record, the API and the alert; the digest to a
/// local webhook, on demand.
#[tokio::test]
async fn follow_ups_overdue_recurrence_and_the_digest_on_a_real_gateway() {
    let dir = temp_dir("main");
    let store = dir.join("incidents.sqlite");
    let hook = Hook::start().await;
    let sinks = format!(
        "[[alerts.sinks]]\nkind = \"webhook\"\nurl = \"{}\"\n",
        hook.url
    );
    let r = Rig::start(&store.display().to_string(), &sinks).await;

    // Two hard-failure incidents on the same target: the second is a recurrence of the first.
    let first = r.hard_failure().await;
    assert_eq!(first["recurrence"], Value::Null, "{first}");
    r.recover().await;
    assert_eq!(r.incident(id(&first)).await["state"], "resolved");
    let second = r.hard_failure().await;
    let rec = &second["recurrence"];
    assert_eq!(rec["ordinal"], 2, "{second}");
    assert_eq!(rec["earlier_count"], 1);
    assert_eq!(rec["earlier_ids"], json!([id(&first)]));
    assert_eq!(rec["last_at"], first["opened_at"]);
    assert_eq!(rec["window_days"], 30);
    // The alert says so.
    let opened = hook.wait_for("incident.opened", 2).await;
    let alert = opened
        .iter()
        .find(|a| a["incident"]["id"] == second["id"])
        .unwrap();
    let summary = alert["summary"].as_str().unwrap();
    assert!(
        summary.contains(&format!(
            "recurrence: 2nd hard_failure incident on {TARGET} in 30 days (after #{})",
            id(&first)
        )),
        "{summary}"
    );
    assert_eq!(
        alert["incident"]["recurrence"]["earlier_ids"],
        json!([id(&first)])
    );
    // And the store's record.
    let rows = ballast_server::incident_history(&store, 10).unwrap();
    let row = rows.iter().find(|x| x.id == id(&second)).unwrap();
    assert_eq!(row.recurrence.as_ref().unwrap().earlier, vec![id(&first)]);

    // Follow-ups: one already past due, one due far ahead.
    assert_eq!(r.metric("hard_failure").await, Some(0.0));
    let path = |i: &Value| format!("/admin/incidents/{}/followups", id(i));
    let (status, late) = r
        .post(
            &path(&first),
            json!({"text": "Rotate the staging key\nand document it", "owner": "alice", "due": "2020-01-01"}),
        )
        .await;
    assert_eq!(status, 201, "{late}");
    let late = late["followup"].clone();
    assert_eq!(late["incident"], first["id"]);
    assert_eq!(late["target"], TARGET);
    assert_eq!(late["signal"], "hard_failure");
    assert_eq!(late["state"], "open");
    assert_eq!(late["due"], "2020-01-01");
    assert_eq!(late["overdue"], true);
    assert_eq!(late["text"], "Rotate the staging key\nand document it");
    let (status, ahead) = r
        .post(
            &path(&second),
            json!({"text": "add a second provider", "owner": "bob", "due": "2999-12-31T17:00:00+02:00"}),
        )
        .await;
    assert_eq!(status, 201, "{ahead}");
    let ahead = ahead["followup"].clone();
    assert_eq!(ahead["due"], "2999-12-31T15:00:00Z");
    assert_eq!(ahead["overdue"], false);

    // Overdue: in /metrics (by signal), in the incidents and in the follow-up list.
    assert_eq!(r.metric("hard_failure").await, Some(1.0));
    assert_eq!(r.metric("availability").await, Some(0.0));
    let all = r.get("/admin/incidents").await;
    assert_eq!(all["followups_overdue"], 1);
    let i1 = r.incident(id(&first)).await;
    assert_eq!(i1["overdue"], true, "{i1}");
    assert_eq!(i1["followups_open"], 1);
    assert_eq!(i1["followups"][0]["owner"], "alice");
    let i2 = r.incident(id(&second)).await;
    assert_eq!(i2["overdue"], false);
    assert_eq!(i2["followups"][0]["owner"], "bob");
    let overdue = r.get("/admin/followups?overdue=true").await;
    assert_eq!(overdue["overdue"], 1);
    assert_eq!(overdue["followups"].as_array().unwrap().len(), 1);
    assert_eq!(overdue["followups"][0]["id"], late["id"]);
    let open = r.get("/admin/followups?state=open").await["followups"].clone();
    // Soonest due first.
    assert_eq!(
        open.as_array().unwrap().iter().map(id).collect::<Vec<_>>(),
        vec![id(&late), id(&ahead)]
    );
    let of_second = r
        .get(&format!("/admin/followups?incident={}", id(&second)))
        .await;
    assert_eq!(of_second["followups"].as_array().unwrap().len(), 1);

    // Its due date moved into the past: overdue too.
    let (status, moved) = r
        .patch(
            &format!("/admin/followups/{}", id(&ahead)),
            json!({"due": "2021-06-01T00:00:00Z", "owner": "carol"}),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["followup"]["overdue"], true);
    assert_eq!(moved["followup"]["owner"], "carol");
    assert_eq!(r.metric("hard_failure").await, Some(2.0));

    // The digest, now, to the webhook: the open incident, both overdue follow-ups, the recurrence.
    let (status, sent) = r.post("/admin/digest", json!({})).await;
    assert_eq!(status, 202, "{sent}");
    let digest = hook.wait_for("digest.weekly", 1).await.remove(0);
    let d = &digest["digest"];
    assert_eq!(d["open_count"], 1, "{digest}");
    assert_eq!(d["open"][0]["id"], second["id"]);
    assert_eq!(d["open"][0]["followups_overdue"], 1);
    assert_eq!(d["overdue_count"], 2);
    let owners: Vec<&str> = d["overdue"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["owner"].as_str().unwrap())
        .collect();
    assert_eq!(owners, ["alice", "carol"]);
    assert_eq!(d["recurrence_count"], 1);
    assert_eq!(d["recurrences"][0]["target"], TARGET);
    assert_eq!(d["recurrences"][0]["signal"], "hard_failure");
    assert_eq!(
        d["recurrences"][0]["incidents"],
        json!([id(&second), id(&first)])
    );
    assert_eq!(d["recurrences"][0]["in_30_days"], 2);
    assert!(d["opened"].as_u64().unwrap() >= 2);
    let text = digest["summary"].as_str().unwrap();
    assert!(text.starts_with("Ballast weekly digest, "), "{text}");
    assert!(text.contains("owner alice, due 2020-01-01"), "{text}");
    assert!(
        text.contains(&format!("{TARGET} hard_failure: 2 this week")),
        "{text}"
    );
    // The preview is the same digest.
    let preview = r.get("/admin/digest").await;
    assert_eq!(preview["digest"]["overdue_count"], 2);

    // Done and dropped: no longer overdue. `POST` works as `PATCH`.
    let (status, done) = r
        .post(
            &format!("/admin/followups/{}", id(&late)),
            json!({"state": "done"}),
        )
        .await;
    assert_eq!(status, 200, "{done}");
    assert_eq!(done["followup"]["state"], "done");
    assert_eq!(done["followup"]["overdue"], false);
    let (status, _) = r
        .patch(
            &format!("/admin/followups/{}", id(&ahead)),
            json!({"state": "dropped"}),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(r.metric("hard_failure").await, Some(0.0));
    assert_eq!(r.get("/admin/incidents").await["followups_overdue"], 0);
    assert_eq!(r.incident(id(&first)).await["overdue"], false);

    // Every change is on disk when the API answers.
    let stored = ballast_server::followup_history(&store).unwrap();
    let states: Vec<(u64, &str, &str)> = stored
        .iter()
        .map(|f| (f.id, f.state.as_str(), f.owner.as_str()))
        .collect();
    assert_eq!(
        states,
        vec![
            (id(&ahead), "dropped", "carol"),
            (id(&late), "done", "alice")
        ]
    );
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Clear 4xx answers, each saying what is wrong.
#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let dir = temp_dir("errors");
    let store = dir.join("incidents.sqlite");
    let r = Rig::start(&store.display().to_string(), "").await;
    let incident = r.hard_failure().await;
    let good = json!({"text": "x", "owner": "o", "due": "2030-01-01"});
    let on = format!("/admin/incidents/{}/followups", id(&incident));
    let cases: Vec<(reqwest::Method, String, Value, u16, &str)> = vec![
        (
            reqwest::Method::POST,
            "/admin/incidents/abc/followups".into(),
            good.clone(),
            400,
            "incident id \"abc\" is not a number",
        ),
        (
            reqwest::Method::POST,
            "/admin/incidents/0/followups".into(),
            good.clone(),
            400,
            "is not a number",
        ),
        (
            reqwest::Method::POST,
            "/admin/incidents/999/followups".into(),
            good.clone(),
            404,
            "no incident 999",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": "x", "owner": "o", "due": "2026-02-30"}),
            400,
            "due \"2026-02-30\" is not an RFC 3339 date",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": "x", "owner": "o", "due": "2026-03-10T17:00:00"}),
            400,
            "offset",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": "x", "due": "2030-01-01"}),
            400,
            "missing field `owner`",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": " ", "owner": "o", "due": "2030-01-01"}),
            400,
            "text is empty",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": "x".repeat(2001), "owner": "o", "due": "2030-01-01"}),
            400,
            "at most 2000",
        ),
        (
            reqwest::Method::POST,
            on.clone(),
            json!({"text": "x", "owner": "o", "due": "2030-01-01", "state": "done"}),
            400,
            "unknown field `state`",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/followups/999".into(),
            json!({"state": "done"}),
            404,
            "no follow-up 999",
        ),
        (
            reqwest::Method::PATCH,
            "/admin/followups/x1".into(),
            json!({"state": "done"}),
            400,
            "follow-up id \"x1\" is not a number",
        ),
        (
            reqwest::Method::GET,
            "/admin/followups?state=closed".into(),
            Value::Null,
            400,
            "state \"closed\" is not one of open, done, dropped",
        ),
        (
            reqwest::Method::GET,
            "/admin/followups?overdue=maybe".into(),
            Value::Null,
            400,
            "use true or false",
        ),
        (
            reqwest::Method::GET,
            "/admin/followups?owner=alice".into(),
            Value::Null,
            400,
            "unknown query parameter \"owner\"",
        ),
        (
            reqwest::Method::POST,
            "/admin/digest".into(),
            json!({}),
            409,
            "no [[alerts.sinks]]",
        ),
    ];
    for (method, path, body, status, says) in cases {
        let body = (!body.is_null()).then_some(body);
        let (got, v) = r.admin(method.clone(), &path, body).await;
        let message = v["error"]["message"].as_str().unwrap_or_default();
        assert_eq!(got, status, "{method} {path}: {v}");
        assert!(
            message.contains(says),
            "{method} {path}: {message:?} lacks {says:?}"
        );
    }
    let (status, made) = r.post(&on, good.clone()).await;
    assert_eq!(status, 201, "{made}");
    let fid = id(&made["followup"]);
    for (body, says) in [
        (json!({}), "nothing to change"),
        (
            json!({"state": "closed"}),
            "state \"closed\" is not one of open, done, dropped",
        ),
        (json!({"due": "soon"}), "not an RFC 3339"),
        (json!({"owner": ""}), "owner is empty"),
        (json!({"colour": "red"}), "unknown field `colour`"),
    ] {
        let (status, v) = r
            .patch(&format!("/admin/followups/{fid}"), body.clone())
            .await;
        assert_eq!(status, 400, "{body}: {v}");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{body}: {message}");
    }
    // The admin key is required.
    let resp = r
        .http
        .post(format!("{}{on}", r.gw.url))
        .json(&good)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = r
        .http
        .get(format!("{}/admin/followups", r.gw.url))
        .bearer_auth("wrong")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    drop(r);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A gateway keeping incidents in memory has nowhere to keep follow-ups: a 409 that says what to set.
#[tokio::test]
async fn without_a_store_follow_ups_are_refused_with_what_to_set() {
    let r = Rig::start("", "").await;
    let incident = r.hard_failure().await;
    let (status, v) = r
        .post(
            &format!("/admin/incidents/{}/followups", id(&incident)),
            json!({"text": "x", "owner": "o", "due": "2030-01-01"}),
        )
        .await;
    assert_eq!(status, 409, "{v}");
    let message = v["error"]["message"].as_str().unwrap();
    assert!(message.contains("set [incidents] store"), "{message}");
    let (status, v) = r
        .patch("/admin/followups/1", json!({"state": "done"}))
        .await;
    assert_eq!(status, 409, "{v}");
    let listed = r.get("/admin/followups").await;
    assert_eq!(listed["store"], false);
    assert_eq!(listed["followups"], json!([]));
}

/// A store written before follow-ups existed is migrated in place: its incidents are kept, take
/// follow-ups, and a new incident of the same class links to them across the restart.
#[tokio::test]
async fn a_store_of_an_earlier_version_is_migrated_and_its_incidents_recur() {
    let dir = temp_dir("migrate");
    let store = dir.join("old.sqlite");
    let two_days_ago = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        - 2 * 86_400;
    {
        let conn = rusqlite::Connection::open(&store).unwrap();
        conn.execute_batch(&format!(
            "CREATE TABLE incidents (
                id INTEGER PRIMARY KEY, target TEXT NOT NULL, signal TEXT NOT NULL,
                severity TEXT NOT NULL, opened_at INTEGER NOT NULL, resolved_at INTEGER,
                resolution TEXT, evidence_at_open TEXT NOT NULL, evidence_latest TEXT NOT NULL);
             INSERT INTO incidents VALUES (41, '{TARGET}', 'hard_failure', 'critical', {two_days_ago},
                {}, 'evidence back to normal', '{{}}', '{{}}');",
            two_days_ago + 600
        ))
        .unwrap();
    }
    let r = Rig::start(&store.display().to_string(), "").await;
    let old = r.incident(41).await;
    assert_eq!(old["state"], "resolved");
    let (status, v) = r
        .post(
            "/admin/incidents/41/followups",
            json!({"text": "postmortem", "owner": "dana", "due": "2020-02-02"}),
        )
        .await;
    assert_eq!(status, 201, "{v}");
    assert_eq!(r.metric("hard_failure").await, Some(1.0));
    let new = r.hard_failure().await;
    assert!(id(&new) > 41);
    assert_eq!(new["recurrence"]["earlier_ids"], json!([41]), "{new}");
    assert_eq!(new["recurrence"]["ordinal"], 2);
    drop(r);
    let rows = ballast_server::incident_history(&store, 10).unwrap();
    assert!(rows.iter().any(|x| x.id == 41));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The next Monday 09:00 UTC strictly after `t`, as the digest's schedule has it.
fn next_monday_nine(t: SystemTime) -> SystemTime {
    let secs = t.duration_since(UNIX_EPOCH).unwrap().as_secs();
    let week = 7 * 86_400;
    // 1970-01-05 was a Monday.
    let start = secs - (secs - 4 * 86_400) % week;
    let mut next = start + 9 * 3600;
    if next <= secs {
        next += week;
    }
    UNIX_EPOCH + Duration::from_secs(next)
}

/// The weekly digest goes out on schedule with time driven by the test (paused Tokio time, no
/// waiting a week): nothing a second before Monday 09:00 UTC, one digest at it, as of that time.
#[tokio::test(start_paused = true)]
async fn the_weekly_digest_goes_out_on_schedule() {
    let r = rig(concat!(
        "[policy]\nretries = 0\n[policy.breaker]\nconsecutive_failures = 100000\nfailure_ratio = 1.0\n[probes]\ninterval = \"0s\"\n",
        "[[alerts.sinks]]\nkind = \"webhook\"\nurl = \"http://hooks.test/ballast\"\n",
        "[[alerts.sinks]]\nkind = \"pagerduty\"\nurl = \"http://pd.test/v2/enqueue\"\nrouting_key = \"k\"\n",
    ));
    let now = SystemTime::now();
    let background = ballast_server::Background::start(&r.state);
    // The digest task reads the wall clock and starts its wait when it first runs: now.
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    for host in ["hooks.test", "pd.test"] {
        r.upstream.set(host, Reply::Json("{}".to_owned()));
    }
    r.upstream
        .set("backup.test", Reply::Json(chat_answer("ok")));
    r.upstream.set("primary.test", Reply::status(503));
    for _ in 0..10 {
        r.call("/v1/chat/completions", &chat("chat", "x", false))
            .await;
    }
    let digests = |r: &common::scripted::Rig| -> Vec<Value> {
        r.upstream
            .requests("hooks.test")
            .iter()
            .map(|q| serde_json::from_slice::<Value>(&q.body).unwrap())
            .filter(|v| v["event"] == "digest.weekly")
            .collect()
    };
    let slot = next_monday_nine(now);
    let wait = slot.duration_since(now).unwrap();
    // `settle` lets 2 s pass: this looks at 3 s before the time.
    tokio::time::advance(wait - Duration::from_secs(5)).await;
    settle().await;
    assert!(digests(&r).is_empty(), "a digest before its time");
    tokio::time::advance(Duration::from_secs(4)).await;
    settle().await;
    let got = digests(&r);
    assert_eq!(got.len(), 1, "{got:?}");
    let d = &got[0]["digest"];
    assert_eq!(
        d["at"],
        humantime::format_rfc3339_seconds(slot).to_string(),
        "as of its scheduled time"
    );
    let open: Vec<&str> = d["open"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["signal"].as_str().unwrap())
        .collect();
    assert!(open.contains(&"hard_failure"), "{d}");
    assert_eq!(d["open"][0]["target"], "primary/gpt-4.1");
    // PagerDuty pages for incidents, not for digests.
    assert!(
        r.upstream
            .requests("pd.test")
            .iter()
            .all(|q| !String::from_utf8_lossy(&q.body).contains("digest"))
    );
    background.shutdown().await;
}

/// Lets the background delivery run: a few seconds of paused time, a step at a time.
async fn settle() {
    for _ in 0..20 {
        tokio::time::advance(Duration::from_millis(100)).await;
        for _ in 0..5 {
            tokio::task::yield_now().await;
        }
    }
}
