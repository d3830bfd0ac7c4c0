//! Integration tests: the simulator over real loopback HTTP (port 0), driven with reqwest.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod anthropic;
mod control;
mod degrade;
mod directive;
mod failover;
mod faults;
mod gemini;
mod hostile;
mod limits;
mod openai;
mod params;
mod responses;

use std::time::Duration;

use ballast_sim::{FaultFlag, Faults, SimConfig, SimHandle};
use futures_util::StreamExt;
use serde_json::Value;

/// A simulator on a free loopback port.
pub async fn sim(config: SimConfig) -> SimHandle {
    ballast_sim::start("127.0.0.1:0".parse().unwrap(), config)
        .await
        .unwrap()
}

/// A simulator with default config.
pub async fn default_sim() -> SimHandle {
    sim(SimConfig::default()).await
}

/// Faults from CLI-style flags.
pub fn faults(flags: &[&str]) -> Faults {
    Faults::from_flags(flags.iter().map(|f| f.parse::<FaultFlag>().unwrap()))
}

/// A client with a short overall timeout and no connection reuse surprises.
pub fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
        .unwrap()
}

/// Reads a streamed body chunk by chunk; returns the text received and whether it ended in an error.
pub async fn read_stream(response: reqwest::Response) -> (String, bool) {
    let mut stream = response.bytes_stream();
    let mut bytes = Vec::new();
    let mut failed = false;
    while let Some(chunk) = stream.next().await {
        match chunk {
            Ok(c) => bytes.extend_from_slice(&c),
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    (String::from_utf8(bytes).unwrap(), failed)
}

/// An SSE event: its `event:` name, if any, and its `data:` payload.
#[derive(Debug, Clone)]
pub struct Event {
    pub name: Option<String>,
    pub data: String,
}

impl Event {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.data)
            .unwrap_or_else(|e| panic!("bad event data {:?}: {e}", self.data))
    }
}

/// Parses an SSE body (either `\n\n` or `\r\n\r\n` separated).
pub fn sse_events(body: &str) -> Vec<Event> {
    let normalized = body.replace("\r\n", "\n");
    normalized
        .split("\n\n")
        .filter(|block| !block.trim().is_empty())
        .map(|block| {
            let mut name = None;
            let mut data = Vec::new();
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event: ") {
                    name = Some(n.to_owned());
                } else if let Some(d) = line.strip_prefix("data: ") {
                    data.push(d);
                }
            }
            Event {
                name,
                data: data.join("\n"),
            }
        })
        .collect()
}

/// True if the text contains a Thai character.
pub fn has_thai(text: &str) -> bool {
    text.chars().any(|c| ('\u{0E00}'..='\u{0E7F}').contains(&c))
}
