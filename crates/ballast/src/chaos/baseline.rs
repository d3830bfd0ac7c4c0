//! "Without Ballast": the same planned requests sent straight to the primary provider by a naive
//! client — up to 5 retries 1 s apart on connection errors, 408, 409, 429 and 5xx, and an SDK's long
//! default timeout (600 s) capped by the run's end. A Gemini client calls the primary's Gemini API
//! when the primary speaks it; otherwise (an application written for its provider) it sends the
//! primary's own API.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::load::{Client, Exchange, Kind, Shot, Tokens, exchange};
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
    /// The API the primary speaks and the model the gateway's route asks it for.
    pub primary: Option<(ClientApi, String)>,
}

/// The model the application would name at the provider.
fn model(api: ClientApi) -> &'static str {
    match api {
        ClientApi::Anthropic => "claude-sonnet-4-5",
        ClientApi::OpenAi | ClientApi::Responses => "gpt-4.1",
        ClientApi::Gemini => "gemini-2.5-flash",
    }
}

/// The API and model of the direct call for `shot`, given the primary's API and model.
fn direct(primary: Option<&(ClientApi, String)>, mut shot: Shot) -> (Shot, String) {
    match (primary, shot.api) {
        (Some((api, m)), ClientApi::Gemini) => {
            shot.api = *api;
            (shot, m.clone())
        }
        _ => {
            let m = model(shot.api).to_owned();
            (shot, m)
        }
    }
}

impl Client for NaiveClient {
    async fn run(self: Arc<Self>, shot: Shot, deadline: Instant) -> (Exchange, u32) {
        let (shot, model) = direct(self.primary.as_ref(), shot);
        let mut attempts = 0;
        // Every attempt's tokens: a retried answer is paid for too.
        let mut tokens = Tokens::default();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                let ex = Exchange {
                    kind: Kind::Timeout,
                    target: None,
                    fallback: false,
                    tokens,
                };
                return (ex, attempts);
            }
            attempts += 1;
            let mut ex = exchange(
                &self.http,
                &shot,
                &self.base,
                &model,
                self.max_tokens,
                SDK_TIMEOUT.min(left),
            )
            .await;
            tokens.add(ex.tokens);
            ex.tokens = tokens;
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gemini_client_calls_the_primarys_own_api() {
        let shot = |api| Shot {
            index: 0,
            at: 0.0,
            api,
            stream: true,
            prompt: 0,
            lang: crate::chaos::scenario::Lang::En,
            tool: false,
        };
        let claude = Some((ClientApi::Anthropic, "claude-sonnet-4-5".to_owned()));
        let (s, m) = direct(claude.as_ref(), shot(ClientApi::Gemini));
        assert_eq!(
            (s.api, m.as_str()),
            (ClientApi::Anthropic, "claude-sonnet-4-5")
        );
        let gemini = Some((ClientApi::Gemini, "gemini-2.5-pro".to_owned()));
        let (s, m) = direct(gemini.as_ref(), shot(ClientApi::Gemini));
        assert_eq!((s.api, m.as_str()), (ClientApi::Gemini, "gemini-2.5-pro"));
        // Other clients keep their API.
        let (s, m) = direct(claude.as_ref(), shot(ClientApi::OpenAi));
        assert_eq!((s.api, m.as_str()), (ClientApi::OpenAi, "gpt-4.1"));
    }
}
