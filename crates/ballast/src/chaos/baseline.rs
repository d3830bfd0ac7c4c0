//! "Without Ballast": the same planned requests sent straight to the primary provider by a naive
//! client — up to 5 retries 1 s apart on connection errors, 408, 409, 429 and 5xx, and an SDK's long
//! default timeout (600 s) capped by the run's end.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::load::{Client, Exchange, Kind, Shot, exchange};
use super::scenario::ClientApi;

/// Retries after the first attempt.
pub const RETRIES: u32 = 5;
/// The wait between attempts.
pub const RETRY_WAIT: Duration = Duration::from_secs(1);
/// The SDKs' default request timeout.
pub const SDK_TIMEOUT: Duration = Duration::from_secs(600);

/// The naive client, talking to the primary simulator directly.
pub struct NaiveClient {
    pub http: reqwest::Client,
    pub base: String,
    pub max_tokens: u64,
}

/// The model the application would name at the provider.
fn model(api: ClientApi) -> &'static str {
    match api {
        ClientApi::Anthropic => "claude-sonnet-4-5",
        ClientApi::OpenAi | ClientApi::Responses => "gpt-4.1",
    }
}

impl Client for NaiveClient {
    async fn run(self: Arc<Self>, shot: Shot, deadline: Instant) -> (Exchange, u32) {
        let mut attempts = 0;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let ex = Exchange {
                    kind: Kind::Timeout,
                    target: None,
                    fallback: false,
                };
                return (ex, attempts);
            }
            attempts += 1;
            let ex = exchange(
                &self.http,
                &shot,
                &self.base,
                model(shot.api),
                self.max_tokens,
                SDK_TIMEOUT.min(left),
            )
            .await;
            if !ex.kind.retryable() || attempts > RETRIES {
                return (ex, attempts);
            }
            if Instant::now() + RETRY_WAIT >= deadline {
                return (ex, attempts);
            }
            tokio::time::sleep(RETRY_WAIT).await;
        }
    }
}
