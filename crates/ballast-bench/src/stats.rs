//! Per-worker recording of outcomes and latencies (HdrHistogram, microseconds) and the merged report.

use std::{collections::BTreeMap, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::conn::Outcome;

/// Highest latency the histograms track exactly (larger values are clamped): 10 minutes, in microseconds.
const MAX_TRACKED_US: u64 = 600_000_000;
/// How many error messages a report keeps as examples.
const ERROR_EXAMPLES: usize = 3;

/// What one worker saw during the measured window. Merged into a [`Report`] at the end.
#[derive(Debug, Clone)]
pub(crate) struct Recorder {
    /// From the scheduled send time (open loop) or the send time (closed loop) to the last byte of the answer.
    latency: Histogram<u64>,
    /// From the moment the request was handed to a connection to the last byte (open loop; same as latency in
    /// the closed loop). The gap between the two is time spent waiting on the generator or on a busy connection.
    service: Histogram<u64>,
    ok: u64,
    /// Answers with a status outside 2xx, by status.
    bad_status: BTreeMap<u16, u64>,
    transport_errors: u64,
    timeouts: u64,
    error_examples: Vec<String>,
    /// Requests sent during the warmup (not in the histograms).
    warmup: u64,
}

impl Recorder {
    pub(crate) fn new() -> Result<Self, String> {
        let histogram = || {
            Histogram::new_with_bounds(1, MAX_TRACKED_US, 3)
                .map_err(|e| format!("cannot create a histogram: {e}"))
        };
        Ok(Self {
            latency: histogram()?,
            service: histogram()?,
            ok: 0,
            bad_status: BTreeMap::new(),
            transport_errors: 0,
            timeouts: 0,
            error_examples: Vec::new(),
            warmup: 0,
        })
    }

    pub(crate) fn warmup_request(&mut self) {
        self.warmup += 1;
    }

    /// Records one measured request; `None` is a timeout.
    pub(crate) fn record(
        &mut self,
        latency: Duration,
        service: Duration,
        outcome: Option<Outcome>,
    ) {
        self.latency.saturating_record(micros(latency));
        self.service.saturating_record(micros(service));
        match outcome {
            Some(Outcome::Status(status)) if (200..300).contains(&status) => self.ok += 1,
            Some(Outcome::Status(status)) => {
                *self.bad_status.entry(status).or_default() += 1;
                self.example(|| format!("status {status}"));
            }
            Some(Outcome::Transport(e)) => {
                self.transport_errors += 1;
                self.example(|| e);
            }
            None => {
                self.timeouts += 1;
                self.example(|| "timeout".to_owned());
            }
        }
    }

    fn example(&mut self, message: impl FnOnce() -> String) {
        if self.error_examples.len() < ERROR_EXAMPLES {
            self.error_examples.push(message());
        }
    }

    fn merge(&mut self, other: &Self) {
        // Both histograms share the same bounds, so adding cannot fail; saturate rather than lose a run.
        let _ = self.latency.add(&other.latency);
        let _ = self.service.add(&other.service);
        self.ok += other.ok;
        for (status, n) in &other.bad_status {
            *self.bad_status.entry(*status).or_default() += n;
        }
        self.transport_errors += other.transport_errors;
        self.timeouts += other.timeouts;
        for e in &other.error_examples {
            if self.error_examples.len() < ERROR_EXAMPLES {
                self.error_examples.push(e.clone());
            }
        }
        self.warmup += other.warmup;
    }

    fn errors(&self) -> u64 {
        self.bad_status.values().sum::<u64>() + self.transport_errors + self.timeouts
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// The load that was applied.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Mode {
    Rate { rate: f64, connections: usize },
    Concurrency(usize),
}

/// The merged result of a run.
#[derive(Debug)]
pub(crate) struct Report {
    pub mode: Mode,
    /// The measured window.
    pub window: Duration,
    pub warmup: Duration,
    /// Open loop: requests due in the window that were never sent because the generator fell too far behind
    /// (all connections busy until the window closed). Counted as errors.
    pub unsent: u64,
    /// Requests still in flight when the drain ran out (abandoned, counted as errors).
    pub abandoned: u64,
    /// Whether `--max-requests` stopped the run early.
    pub capped: bool,
    pub recorder: Recorder,
}

impl Report {
    pub(crate) fn merge(
        mode: Mode,
        window: Duration,
        warmup: Duration,
        recorders: &[Recorder],
    ) -> Result<Self, String> {
        let mut merged = Recorder::new()?;
        for r in recorders {
            merged.merge(r);
        }
        Ok(Self {
            mode,
            window,
            warmup,
            unsent: 0,
            abandoned: 0,
            capped: false,
            recorder: merged,
        })
    }

    fn count(&self) -> u64 {
        self.recorder.latency.len()
    }

    fn errors(&self) -> u64 {
        self.recorder.errors() + self.unsent + self.abandoned
    }

    fn rps(&self) -> f64 {
        let secs = self.window.as_secs_f64();
        if secs > 0.0 {
            self.count() as f64 / secs
        } else {
            0.0
        }
    }

    pub(crate) fn to_json(&self, label: &str, url: &str) -> Value {
        let r = &self.recorder;
        let (mode, rate, concurrency, connections) = match self.mode {
            Mode::Rate { rate, connections } => ("rate", Some(rate), None, Some(connections)),
            Mode::Concurrency(c) => ("concurrency", None, Some(c), None),
        };
        let statuses: serde_json::Map<String, Value> = r
            .bad_status
            .iter()
            .map(|(s, n)| (s.to_string(), json!(n)))
            .collect();
        json!({
            "label": label,
            "url": url,
            "mode": mode,
            "target_rps": rate,
            "concurrency": concurrency,
            "connections": connections,
            "warmup_s": self.warmup.as_secs_f64(),
            "duration_s": self.window.as_secs_f64(),
            "count": self.count(),
            "ok": r.ok,
            "errors": self.errors(),
            "error_detail": {
                "status": statuses,
                "transport": r.transport_errors,
                "timeout": r.timeouts,
                "unsent": self.unsent,
                "abandoned": self.abandoned,
                "examples": r.error_examples,
            },
            "capped_by_max_requests": self.capped,
            "warmup_requests": r.warmup,
            "rps": round2(self.rps()),
            "latency_us": summary(&r.latency),
            "service_us": summary(&r.service),
            // Non-empty buckets as [highest value in the bucket, count], so runs can be pooled exactly.
            "latency_us_buckets": buckets(&r.latency),
        })
    }

    pub(crate) fn human_line(&self, label: &str) -> String {
        let l = &self.recorder.latency;
        let load = match self.mode {
            Mode::Rate { rate, .. } => format!("rate {rate}/s"),
            Mode::Concurrency(c) => format!("concurrency {c}"),
        };
        format!(
            "{label:<10} {load:<18} {count:>8} req {errors:>5} err {rps:>9.1} rps  p50 {p50:>6} us  p90 {p90:>6} us  \
             p99 {p99:>6} us  p99.9 {p999:>7} us  max {max:>7} us",
            count = self.count(),
            errors = self.errors(),
            rps = self.rps(),
            p50 = l.value_at_quantile(0.5),
            p90 = l.value_at_quantile(0.9),
            p99 = l.value_at_quantile(0.99),
            p999 = l.value_at_quantile(0.999),
            max = l.max(),
        )
    }
}

fn summary(h: &Histogram<u64>) -> Value {
    if h.is_empty() {
        return Value::Null;
    }
    json!({
        "p50": h.value_at_quantile(0.5),
        "p90": h.value_at_quantile(0.9),
        "p99": h.value_at_quantile(0.99),
        "p99_9": h.value_at_quantile(0.999),
        "max": h.max(),
        "mean": round2(h.mean()),
    })
}

fn buckets(h: &Histogram<u64>) -> Value {
    h.iter_recorded()
        .map(|v| json!([v.value_iterated_to(), v.count_at_value()]))
        .collect()
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_counts_and_histograms() {
        let mut a = Recorder::new().unwrap();
        let mut b = Recorder::new().unwrap();
        a.record(
            Duration::from_micros(100),
            Duration::from_micros(90),
            Some(Outcome::Status(200)),
        );
        b.record(
            Duration::from_micros(300),
            Duration::from_micros(300),
            Some(Outcome::Status(503)),
        );
        b.record(Duration::from_secs(1), Duration::from_secs(1), None);
        let report = Report::merge(
            Mode::Concurrency(2),
            Duration::from_secs(2),
            Duration::ZERO,
            &[a, b],
        )
        .unwrap();
        let json = report.to_json("t", "http://x/");
        assert_eq!(json["count"], 3);
        assert_eq!(json["ok"], 1);
        assert_eq!(json["errors"], 2);
        assert_eq!(json["error_detail"]["status"]["503"], 1);
        assert_eq!(json["error_detail"]["timeout"], 1);
        assert_eq!(json["rps"], 1.5);
        assert_eq!(json["latency_us"]["p50"], 300);
        assert!(json["latency_us"]["max"].as_u64().unwrap() >= 1_000_000);
        let buckets = json["latency_us_buckets"].as_array().unwrap();
        assert_eq!(buckets.len(), 3);
        assert_eq!(buckets[0][1], 1);
    }
}
