//! The end of an answered request: one log line (who answered, how fast, how many tokens — never
//! content), the target's breaker told how it went, its latency average fed, its in-flight slots
//! released. A stream carries its `Outcome` to the end of the stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::runtime::{Admitted, InFlight, lock};
use crate::state::AppState;
use ballast_core::observe::Observation;

pub struct Outcome {
    pub st: Arc<AppState>,
    pub request_id: Arc<str>,
    pub route: String,
    pub target: String,
    /// Index of the target's live state.
    pub target_state: usize,
    pub started: Instant,
    pub attempt_started: Instant,
    pub attempts: u32,
    pub ttft: Option<Duration>,
    /// The breaker admission, told at the end (dropped unrecorded: cancelled).
    pub ticket: Option<Admitted>,
    /// The request's and the target's in-flight slots, released when the answer ends.
    pub guards: Vec<InFlight>,
}

impl Outcome {
    pub fn first_token(&mut self) {
        if self.ttft.is_none() {
            self.ttft = Some(self.started.elapsed());
            let latency = self.attempt_started.elapsed();
            lock(&self.st.runtime.targets[self.target_state].ewma).observe(Instant::now(), latency);
        }
    }

    fn record(&mut self, success: bool) {
        if let Some(ticket) = self.ticket.take() {
            ticket.record(success, if success { "success" } else { "stream failed" });
        }
    }

    fn log(&self, obs: &Observation, stream: bool, error: Option<&str>) {
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        let latency_ms = ms(self.started.elapsed());
        let ttft_ms = self.ttft.map(ms);
        let u = &obs.usage;
        match error {
            None => tracing::info!(
                request_id = &*self.request_id,
                route = self.route.as_str(),
                target = self.target.as_str(),
                attempts = self.attempts,
                stream,
                latency_ms,
                ttft_ms,
                input_tokens = u.input_tokens,
                output_tokens = u.output_tokens,
                stop_reason = obs.stop_reason.as_deref(),
                malformed_events = obs.malformed_events,
                "answered"
            ),
            Some(e) => tracing::warn!(
                request_id = &*self.request_id,
                route = self.route.as_str(),
                target = self.target.as_str(),
                attempts = self.attempts,
                stream,
                latency_ms,
                ttft_ms,
                output_tokens = u.output_tokens,
                "stream failed after it started: {e}"
            ),
        }
    }

    pub fn finish_body(mut self, obs: &Observation) {
        let latency = self.attempt_started.elapsed();
        lock(&self.st.runtime.targets[self.target_state].ewma).observe(Instant::now(), latency);
        self.record(true);
        self.log(obs, false, None);
    }

    pub fn finish_stream(mut self, obs: &Observation, error: Option<&str>) {
        self.record(error.is_none());
        self.log(obs, true, error);
    }

    pub fn client_gone(mut self, obs: &Observation) {
        if let Some(ticket) = self.ticket.take() {
            ticket.cancel();
        }
        tracing::info!(
            request_id = &*self.request_id,
            route = self.route.as_str(),
            target = self.target.as_str(),
            output_tokens = obs.usage.output_tokens,
            "client disconnected before the stream ended"
        );
    }
}
