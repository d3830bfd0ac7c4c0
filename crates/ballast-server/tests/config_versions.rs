//! Every configuration a gateway starts with is kept in its store as a version (hash, time, what
//! changed from the one before; secrets never kept), readable from the admin API and the file.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;

use axum::body::Body;
use ballast_core::config::Config;
use ballast_core::config::env::MapEnv;
use ballast_server::{AppState, Background, app, config_versions};
use http::Request;
use http_body_util::BodyExt;
use tower::ServiceExt;

fn config(store: &std::path::Path, routes: &str) -> Config {
    let toml = format!(
        "[admin]\nkey = \"adm\"\n[incidents]\nstore = \"{}\"\n[providers.p]\nkind = \"openai\"\nbase_url = \"http://127.0.0.1:9/v1\"\napi_key = \"sk-very-secret\"\n{routes}",
        store.display()
    );
    Config::from_toml(&toml, &MapEnv::new(&[])).unwrap()
}

async fn start(c: Config) -> Arc<AppState> {
    let st = Arc::new(AppState::new(c).unwrap());
    let bg = Background::start(&st);
    bg.shutdown().await;
    st
}

#[tokio::test]
async fn each_new_configuration_is_kept_once_with_what_changed() {
    let dir = std::env::temp_dir().join(format!(
        "ballast-config-versions-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let store = dir.join("store.sqlite");
    let one = "[routes.chat]\ntargets = [\"p/gpt-4.1\"]\n";
    let two = "[routes.chat]\ntargets = [\"p/gpt-4.1\", \"p/gpt-4.1-mini\"]\n[routes.fast]\ntargets = [\"p/gpt-4.1-mini\"]\n";
    start(config(&store, one)).await;
    start(config(&store, one)).await;
    let st = start(config(&store, two)).await;
    let rows = config_versions(&store, 10).unwrap();
    assert_eq!(rows.len(), 2, "an unchanged restart keeps no new version");
    assert_eq!(rows[1].summary, "the first version kept");
    assert!(
        rows[0].summary.contains("route +fast"),
        "{}",
        rows[0].summary
    );
    assert!(rows[0].summary.contains("~chat"), "{}", rows[0].summary);
    assert_ne!(rows[0].hash, rows[1].hash);
    for r in &rows {
        assert!(!r.config.contains("sk-very-secret"), "a key was kept");
    }
    // The admin API lists them, newest first.
    let resp = app(st)
        .oneshot(
            Request::get("/admin/config/versions")
                .header("authorization", "Bearer adm")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["versions"].as_array().unwrap().len(), 2, "{v}");
    assert_eq!(v["versions"][0]["hash"], rows[0].hash.as_str());
    assert!(v["versions"][0].get("config").is_none());
    let _ = std::fs::remove_dir_all(&dir);
}
