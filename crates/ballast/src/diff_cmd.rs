//! `ballast check --against URL-or-FILE [--strict] [--json]`: the candidate configuration compared
//! with the one a gateway runs (its `GET /admin/config`) or with a file, as a table or JSON, and
//! whether the change passes (no route left without targets; with `--strict`, none left with a
//! single provider or target either). The diff itself is `ballast_core::config::diff`.

use std::path::Path;
use std::time::Duration;

use ballast_core::config::Config;
use ballast_core::config::diff::{self, parse_redacted};
use ballast_core::config::env::{MapEnv, ProcessEnv};

use crate::config_cmd::Gateway;

/// The longest fetching a running configuration may take, connection to last byte.
const FETCH_TIMEOUT: Duration = Duration::from_secs(10);

/// The diff of `candidate` against `current` (the running one), rendered as a table or as JSON
/// (the shape `ballast_core::config::diff` documents), and whether it passes.
pub fn against(current: &Config, candidate: &Config, strict: bool, json: bool) -> (String, bool) {
    let mut d = diff::diff(current, candidate);
    if strict {
        d = d.strict();
    }
    let passes = d.passes();
    let out = if json {
        let mut s = serde_json::to_string_pretty(&d.to_json())
            .unwrap_or_else(|e| format!("{{\"error\": \"cannot render the diff: {e}\"}}"));
        s.push('\n');
        s
    } else {
        d.table()
    };
    (out, passes)
}

/// Whether `--against` names a running gateway (else a file).
pub fn is_url(against: &str) -> bool {
    against.starts_with("http://") || against.starts_with("https://")
}

/// `GET /admin/config` of the gateway at `url` (its base URL, or the endpoint itself): the running
/// configuration as TOML with its secrets redacted, read with [`parse_redacted`].
pub async fn fetch_running(url: &str, admin_key: Option<&str>) -> Result<String, String> {
    let answer = Gateway::new(url, admin_key)?
        .call(reqwest::Method::GET, "/admin/config", None, FETCH_TIMEOUT)
        .await?;
    if answer.status == reqwest::StatusCode::OK {
        Ok(answer.body)
    } else {
        Err(answer.failure())
    }
}

/// The configuration `--against` names, for comparison only: a running gateway's (`http(s)://…`,
/// through [`fetch_running`]) or a file's (`${VAR}` from the environment; a variable that is not
/// set stands for a secret and does not matter to the diff).
pub async fn load_against(against: &str, admin_key: Option<&str>) -> Result<Config, String> {
    if is_url(against) {
        let text = fetch_running(against, admin_key).await?;
        parse_redacted(&text, &MapEnv::new(&[]))
            .map_err(|e| format!("the configuration {against} serves does not validate here:\n{e}"))
    } else {
        let path = Path::new(against);
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        parse_redacted(&text, &ProcessEnv).map_err(|e| format!("{against} is invalid:\n{e}"))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use ballast_core::config::env::MapEnv;
    use ballast_server::AppState;

    use super::*;

    const RUNNING: &str = r#"
        [admin]
        key = "admin-key"
        [incidents]
        store = ""
        [probes]
        interval = "0s"
        [providers.anthropic]
        kind = "anthropic"
        api_key = "sk-ant-SECRET"
        [providers.openai]
        kind = "openai"
        api_key = "sk-oai-SECRET"
        [routes.chat]
        targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]
    "#;

    fn load(text: &str) -> Config {
        Config::from_toml(text, &MapEnv::new(&[])).unwrap()
    }

    /// A gateway on a loopback port serving `RUNNING`; dropped with the runtime.
    async fn gateway() -> (String, tokio::sync::oneshot::Sender<()>) {
        let state = Arc::new(AppState::new(load(RUNNING)).unwrap());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(ballast_server::serve(listener, state, async {
            let _ = rx.await;
        }));
        (url, tx)
    }

    #[test]
    fn against_renders_and_decides() {
        let single = RUNNING.replace(
            r#"targets = ["anthropic/claude-sonnet-4-5", "openai/gpt-4.1"]"#,
            r#"targets = ["anthropic/claude-sonnet-4-5"]"#,
        );
        let (current, candidate) = (load(RUNNING), load(&single));
        let (table, passes) = against(&current, &candidate, false, false);
        assert!(passes);
        assert!(
            table.contains("warning  routes.chat: left with a single target"),
            "{table}"
        );
        let (json, passes) = against(&current, &candidate, true, true);
        assert!(!passes, "--strict turns the warning into an error");
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["findings"][0]["level"], "error");
        let (same, passes) = against(&current, &current, true, false);
        assert!(passes && same.contains("no changes"), "{same}");
    }

    #[tokio::test]
    async fn fetches_the_running_configuration_with_the_admin_key() {
        let (url, _stop) = gateway().await;
        let e = fetch_running(&url, None).await.unwrap_err();
        assert!(e.contains("HTTP 401") && e.contains("--admin-key"), "{e}");
        let e = fetch_running(&url, Some("wrong")).await.unwrap_err();
        assert!(e.contains("HTTP 401"), "{e}");
        let text = fetch_running(&format!("{url}/"), Some("admin-key"))
            .await
            .unwrap();
        assert!(!text.contains("SECRET"), "{text}");
        let current = load_against(&url, Some("admin-key")).await.unwrap();
        let (out, passes) = against(&current, &load(RUNNING), true, false);
        assert!(passes && out.contains("no changes"), "{out}");
        // The endpoint itself may be given.
        let again = fetch_running(&format!("{url}/admin/config"), Some("admin-key"))
            .await
            .unwrap();
        assert_eq!(again, text);
    }

    #[tokio::test]
    async fn an_unreachable_gateway_and_a_missing_file_are_errors() {
        // A port nothing listens on: bind one, then close it.
        let addr = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap()
            .local_addr()
            .unwrap();
        let e = fetch_running(&format!("http://{addr}"), Some("k"))
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot reach"), "{e}");
        let e = load_against("/nonexistent/ballast.toml", None)
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot read"), "{e}");
    }
}
