//! The end of an answered request: one log line (who answered, how fast, how many tokens — never
//! content), the target's breaker told how it went, its latency average fed, its in-flight slots
//! released. A stream carries its `Outcome` to the end of the stream.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use crate::runtime::{Admitted, InFlight, lock};
use crate::state::AppState;
use ballast_core::api::ApiFormat;
use ballast_core::observe::Observation;
use ballast_core::record::{AnswerChecks, RequestOutcome, RequestRecord};
use ballast_core::trace::TraceContext;

pub struct Outcome {
    pub st: Arc<AppState>,
    pub request_id: Arc<str>,
    /// The route's index in the configuration.
    pub route_idx: usize,
    /// The client's API.
    pub api: ApiFormat,
    /// An earlier target failed before this one answered.
    pub fallback: bool,
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
    /// The request's trace, and the model it asked for (kept only when its span is exported).
    pub trace: Option<TraceContext>,
    pub request_model: Option<Box<str>>,
}

impl Outcome {
    /// The answering target's `provider/model` (its live state's label: nothing copied per request).
    pub fn target(&self) -> &str {
        self.st
            .runtime
            .targets
            .get(self.target_state)
            .map_or("", |t| t.label.as_str())
    }

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

    /// The request's record, to telemetry (its one log line and its metrics).
    fn report(
        &self,
        obs: &Observation,
        stream: bool,
        outcome: RequestOutcome,
        error: Option<&str>,
    ) {
        let status = if outcome == RequestOutcome::ClientGone {
            499
        } else {
            200
        };
        self.st.telemetry.request(&RequestRecord {
            request_id: &self.request_id,
            api: self.api,
            route: Some(self.route_idx),
            target: Some(self.target_state),
            outcome,
            status,
            stream,
            attempts: self.attempts,
            fallback: self.fallback,
            duration: self.started.elapsed(),
            ttft: self.ttft,
            usage: obs.usage,
            stop_reason: obs.stop_reason.as_deref(),
            malformed_events: obs.malformed_events,
            text: obs.text,
            checks: AnswerChecks::of(obs),
            error,
            trace: self.trace,
            request_model: self.request_model.as_deref(),
        });
    }

    /// The stream broke and continues on another target: the broken one's breaker is told, its
    /// slot released, and the answer is from now on the new target's.
    pub fn continue_on(
        &mut self,
        target_state: usize,
        ticket: Admitted,
        slot: InFlight,
        attempt_started: Instant,
        attempts: u32,
    ) {
        self.record(false);
        self.guards.retain(|g| !g.is_target());
        self.guards.push(slot);
        self.target_state = target_state;
        self.ticket = Some(ticket);
        self.attempt_started = attempt_started;
        self.attempts = attempts;
        self.fallback = true;
    }

    pub fn finish_body(mut self, obs: &Observation) {
        let latency = self.attempt_started.elapsed();
        lock(&self.st.runtime.targets[self.target_state].ewma).observe(Instant::now(), latency);
        self.record(true);
        self.report(obs, false, RequestOutcome::Answered, None);
    }

    pub fn finish_stream(mut self, obs: &Observation, error: Option<&str>) {
        self.record(error.is_none());
        let outcome = if error.is_none() {
            RequestOutcome::Answered
        } else {
            RequestOutcome::StreamFailed
        };
        self.report(obs, true, outcome, error);
    }

    pub fn client_gone(mut self, obs: &Observation) {
        if let Some(ticket) = self.ticket.take() {
            ticket.cancel();
        }
        self.report(obs, true, RequestOutcome::ClientGone, None);
    }
}
