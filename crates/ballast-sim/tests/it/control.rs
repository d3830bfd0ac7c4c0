//! The control plane and what the simulator records: faults CRUD, stats, recent requests, reset.

use ballast_sim::{Api, Faults, SimConfig};
use serde_json::{Value, json};

use crate::{client, default_sim, faults, sim};

#[tokio::test]
async fn faults_can_be_set_read_and_cleared_over_http() {
    let sim = default_sim().await;
    let url = format!("{}/_sim/faults", sim.base_url());
    let set =
        json!({"error": {"status": 503, "rate": 0.16}, "corrupt": {"script": "cjk", "rate": 0.1}});
    let resp = client().post(&url).json(&set).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    let got: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got["error"], json!({"status": 503, "rate": 0.16}));
    assert_eq!(got["corrupt"], json!({"script": "cjk", "rate": 0.1}));
    assert_eq!(sim.faults(), faults(&["error:503@0.16", "corrupt:cjk@0.1"]));

    let bad = client()
        .post(&url)
        .json(&json!({"hang": {"rate": 3}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad = client()
        .post(&url)
        .json(&json!({"explode": {}}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await.unwrap().contains("unknown field"));

    let resp = client().delete(&url).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(sim.faults(), Faults::default());
    let got: Value = client()
        .get(&url)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(got, json!({}));
    sim.shutdown().await;
}

#[tokio::test]
async fn records_what_the_upstream_saw() {
    let sim = sim(SimConfig {
        seed: 1,
        ..SimConfig::default()
    })
    .await;
    let resp = client()
        .post(format!("{}/v1/messages?beta=true", sim.base_url()))
        .header("x-api-key", "sk-ant-xyz")
        .header("anthropic-version", "2023-06-01")
        .json(&json!({"model": "claude-x", "max_tokens": 5, "stream": true, "messages": [{"role": "user", "content": "hi"}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    resp.text().await.unwrap();

    let recent = sim.recent_requests();
    assert_eq!(recent.len(), 1);
    let r = &recent[0];
    assert_eq!(r.api, Api::Anthropic);
    assert_eq!(r.method, "POST");
    assert_eq!(r.path, "/v1/messages?beta=true");
    assert_eq!(r.model.as_deref(), Some("claude-x"));
    assert!(r.stream);
    assert_eq!(r.headers["x-api-key"], "sk-ant-xyz");
    assert_eq!(r.headers["anthropic-version"], "2023-06-01");
    assert_eq!(r.body["max_tokens"], 5);

    let over_http: Value = client()
        .get(format!("{}/_sim/requests", sim.base_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(over_http[0]["api"], "anthropic");
    assert_eq!(over_http[0]["headers"]["x-api-key"], "sk-ant-xyz");

    let stats = sim.stats();
    assert_eq!(stats.total_requests, 1);
    assert_eq!(stats.by_api.anthropic, 1);
    assert_eq!(stats.by_outcome.ok, 1);
    sim.shutdown().await;
}

#[tokio::test]
async fn stats_reset_health_and_unknown_paths() {
    let sim = default_sim().await;
    let base = sim.base_url();
    let health: Value = client()
        .get(format!("{base}/_sim/health"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(health["status"], "ok");

    client()
        .post(format!("{base}/v1/chat/completions"))
        .json(&json!({"model": "gpt-4o", "messages": [{"role": "user", "content": "x"}]}))
        .send()
        .await
        .unwrap();
    let missing = client()
        .post(format!("{base}/v1/embeddings"))
        .json(&json!({"model": "e"}))
        .send()
        .await
        .unwrap();
    assert_eq!(missing.status(), 404);
    let body: Value = missing.json().await.unwrap();
    assert!(body["error"]["message"].is_string());

    let stats: Value = client()
        .get(format!("{base}/_sim/stats"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(stats["total_requests"], 2);
    assert_eq!(stats["by_api"]["openai"], 1);
    assert_eq!(stats["by_api"]["other"], 1);
    assert_eq!(stats["by_outcome"]["ok"], 1);
    assert_eq!(stats["by_outcome"]["invalid"], 1);
    assert_eq!(sim.recent_requests()[1].api, Api::Other);

    let reset = client()
        .post(format!("{base}/_sim/reset"))
        .send()
        .await
        .unwrap();
    assert_eq!(reset.status(), 200);
    assert_eq!(sim.stats(), ballast_sim::Stats::default());
    assert!(sim.recent_requests().is_empty());
    sim.shutdown().await;
}

#[tokio::test]
async fn control_plane_is_not_faulted_and_shutdown_stops_listening() {
    let sim = sim(SimConfig {
        faults: faults(&["error:500", "rate_limit"]),
        ..SimConfig::default()
    })
    .await;
    let base = sim.base_url();
    for path in [
        "/_sim/health",
        "/_sim/stats",
        "/_sim/faults",
        "/_sim/requests",
    ] {
        assert_eq!(
            client()
                .get(format!("{base}{path}"))
                .send()
                .await
                .unwrap()
                .status(),
            200,
            "{path}"
        );
    }
    sim.shutdown().await;
    let err = client()
        .get(format!("{base}/_sim/health"))
        .send()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err:?}");
}
