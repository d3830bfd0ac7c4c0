//! Request counters and the bounded ring of recently seen requests.

use std::collections::{BTreeMap, VecDeque};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::api::Api;

/// How many requests [`crate::SimHandle::recent_requests`] keeps (oldest dropped first).
pub const RECENT_REQUESTS_CAPACITY: usize = 64;

/// Counters since start or the last `POST /_sim/reset`.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Provider requests answered (or hung, or cut), plus connections reset by `down`.
    pub total_requests: u64,
    /// Requests per API (`other` holds unknown paths; refused connections are in no API).
    pub by_api: ApiCounts,
    /// Requests per outcome.
    pub by_outcome: OutcomeCounts,
}

/// Requests per API.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct ApiCounts {
    /// `/v1/messages…`, and `/v1/models` when called with Anthropic headers.
    pub anthropic: u64,
    /// `/v1/chat/completions`, `/v1/responses`, and `/v1/models` otherwise.
    pub openai: u64,
    /// `/v1beta/models…`.
    pub gemini: u64,
    /// Any other path (answered 404).
    pub other: u64,
}

/// Requests per outcome; each request has exactly one.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
pub struct OutcomeCounts {
    /// Answered normally (possibly slowed).
    pub ok: u64,
    /// Failed by the `error` fault.
    pub error: u64,
    /// Failed by the `rate_limit` fault.
    pub rate_limited: u64,
    /// Never answered (the `hang` fault), or opened and left silent (`role_then_silence`).
    pub hang: u64,
    /// Cut off by the `truncate` fault (any mode: clean end, cut connection, error event, stall).
    pub truncated: u64,
    /// Answered with text in the wrong script (the `corrupt` fault).
    pub corrupted: u64,
    /// Answered with malicious or broken bytes (the `hostile` fault).
    #[serde(default)]
    pub hostile: u64,
    /// Answered with a degraded answer (the `degrade` fault: empty, looping, cut short or broken
    /// JSON).
    #[serde(default)]
    pub degraded: u64,
    /// Connections reset by `down` below rate 1 (refusals at rate 1 never reach the simulator).
    pub refused: u64,
    /// Rejected as the real API would: malformed body, missing field, bad key, unknown path, and
    /// prefills refused under `reject_prefill`.
    pub invalid: u64,
}

/// What happened to one request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    Ok,
    Error,
    RateLimited,
    Hang,
    Truncated,
    Corrupted,
    Hostile,
    Degraded,
    Refused,
    Invalid,
}

impl Stats {
    pub(crate) fn count(&mut self, api: Option<Api>, outcome: Outcome) {
        self.total_requests += 1;
        match api {
            Some(Api::Anthropic) => self.by_api.anthropic += 1,
            Some(Api::OpenAi) => self.by_api.openai += 1,
            Some(Api::Gemini) => self.by_api.gemini += 1,
            Some(Api::Other) => self.by_api.other += 1,
            None => {}
        }
        let o = &mut self.by_outcome;
        match outcome {
            Outcome::Ok => o.ok += 1,
            Outcome::Error => o.error += 1,
            Outcome::RateLimited => o.rate_limited += 1,
            Outcome::Hang => o.hang += 1,
            Outcome::Truncated => o.truncated += 1,
            Outcome::Corrupted => o.corrupted += 1,
            Outcome::Hostile => o.hostile += 1,
            Outcome::Degraded => o.degraded += 1,
            Outcome::Refused => o.refused += 1,
            Outcome::Invalid => o.invalid += 1,
        }
    }
}

/// One provider request as the simulator received it.
///
/// This is a test tool: it keeps **all** request headers, API keys included, and the whole body.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// Which API the path belongs to.
    pub api: Api,
    /// HTTP method.
    pub method: String,
    /// Path with query, as in `/v1/messages?beta=true`.
    pub path: String,
    /// The requested model (from the body, or the path for Gemini), if any.
    pub model: Option<String>,
    /// Whether a streamed answer was asked for.
    pub stream: bool,
    /// Every request header, lower-case names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// The body as JSON; `null` when empty, a JSON string when it was not valid JSON.
    pub body: Value,
}

/// A ring of the most recent requests.
#[derive(Debug, Default)]
pub(crate) struct Recent {
    ring: VecDeque<RecordedRequest>,
}

impl Recent {
    pub(crate) fn push(&mut self, request: RecordedRequest) {
        if self.ring.len() >= RECENT_REQUESTS_CAPACITY {
            self.ring.pop_front();
        }
        self.ring.push_back(request);
    }

    pub(crate) fn snapshot(&self) -> Vec<RecordedRequest> {
        self.ring.iter().cloned().collect()
    }

    pub(crate) fn clear(&mut self) {
        self.ring.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(n: usize) -> RecordedRequest {
        RecordedRequest {
            api: Api::OpenAi,
            method: "POST".into(),
            path: format!("/{n}"),
            model: None,
            stream: false,
            headers: BTreeMap::new(),
            body: Value::Null,
        }
    }

    #[test]
    fn ring_is_bounded_and_keeps_newest() {
        let mut recent = Recent::default();
        for n in 0..RECENT_REQUESTS_CAPACITY + 10 {
            recent.push(request(n));
        }
        let all = recent.snapshot();
        assert_eq!(all.len(), RECENT_REQUESTS_CAPACITY);
        assert_eq!(all[0].path, "/10");
        assert_eq!(
            all.last().unwrap().path,
            format!("/{}", RECENT_REQUESTS_CAPACITY + 9)
        );
    }

    #[test]
    fn counts_by_api_and_outcome() {
        let mut stats = Stats::default();
        stats.count(Some(Api::Gemini), Outcome::Ok);
        stats.count(Some(Api::Gemini), Outcome::Truncated);
        stats.count(None, Outcome::Refused);
        assert_eq!(stats.total_requests, 3);
        assert_eq!(stats.by_api.gemini, 2);
        assert_eq!(stats.by_outcome.refused, 1);
        assert_eq!(stats.by_outcome.truncated, 1);
    }
}
