//! Provider capacity per target: the rate limits each answer reports (`x-ratelimit-*`,
//! `anthropic-ratelimit-*`, read by [`RateLimits::parse`]) kept as aggregates — per target and kind
//! of limit, the latest limit and remainder and the consumption trend ([`LimitTracker`]) — with a
//! forecast of the hours left before the trend reaches the limit. [`Capacity::observe`] is called
//! with every upstream answer's headers and returns what changed: a provider's limit changing (not
//! its remainder: the limit itself, confirmed by a few answers) and the headroom becoming low or
//! recovering (with hysteresis), for incidents and alerts. [`Capacity::snapshot`] is the admin
//! view; [`Capacity::register`] adds the `ballast_ratelimit_*` gauges to a Prometheus registry, read
//! at scrape time. Nothing of a request is kept: only numbers per target and kind.
//!
//! Each target's trackers sit behind their own mutex, held for a few arithmetic operations; an
//! answer without rate-limit headers (Gemini, most compatible servers) costs six header lookups,
//! no lock and no allocation.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use ballast_core::ratelimit::{
    Forecast, HeadroomChange, HeadroomConfig, Kind, LimitTracker, RateLimits,
};
use http::HeaderMap;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use serde::Serialize;
use tokio::time::Instant;

/// What an answer (or a tick) changed, for incidents and alerts.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum CapacityEvent {
    /// The provider's limit of this kind changed (read the same by `confirm` answers in a row).
    LimitChanged {
        target: usize,
        kind: Kind,
        old: u64,
        new: u64,
    },
    /// Fewer than `alert_hours` left before the limit at the current growth (`0`: at the limit).
    HeadroomLow {
        target: usize,
        kind: Kind,
        hours: f64,
        forecast: Forecast,
    },
    /// The headroom is back above `clear_hours`, or no exhaustion is in sight (`None`).
    HeadroomRecovered {
        target: usize,
        kind: Kind,
        hours: Option<f64>,
    },
}

impl CapacityEvent {
    pub fn target(&self) -> usize {
        match *self {
            CapacityEvent::LimitChanged { target, .. }
            | CapacityEvent::HeadroomLow { target, .. }
            | CapacityEvent::HeadroomRecovered { target, .. } => target,
        }
    }

    pub fn kind(&self) -> Kind {
        match *self {
            CapacityEvent::LimitChanged { kind, .. }
            | CapacityEvent::HeadroomLow { kind, .. }
            | CapacityEvent::HeadroomRecovered { kind, .. } => kind,
        }
    }
}

type Trackers = [Option<LimitTracker>; Kind::COUNT];

/// Every target's rate limits.
#[derive(Debug)]
pub struct Capacity {
    labels: Vec<String>,
    config: HeadroomConfig,
    /// Per target, its trackers: shared by label with the other configurations of the process
    /// ([`Capacity::next`]), so a change of configuration keeps what the providers said.
    targets: Vec<Arc<Mutex<Trackers>>>,
    /// The configuration whose targets the gauges show (the one serving; see [`Capacity::show`]).
    shown: Arc<Mutex<std::sync::Weak<Capacity>>>,
}

/// One target in [`Capacity::snapshot`].
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct TargetCapacity {
    /// `provider/model`.
    pub target: String,
    /// The kinds of limit its answers reported, in a fixed order; empty when they report none.
    pub limits: Vec<LimitSnapshot>,
}

/// One kind of limit of one target.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct LimitSnapshot {
    /// `requests`, `tokens`, `input_tokens`, `output_tokens`.
    pub kind: &'static str,
    /// The limit per minute the latest answer reported.
    pub limit: u64,
    /// What remained of it then.
    pub remaining: u64,
    /// `(limit − remaining) / limit` then.
    pub used_share: f64,
    /// Until the limit was fully replenished, as of that answer, when the provider said.
    pub reset_ms: Option<u64>,
    /// Since the latest answer that reported it.
    pub age_ms: u64,
    /// Consumption per minute (every user of the provider key), by the trend line; `None` until
    /// enough buckets closed.
    pub rate_per_minute: Option<f64>,
    /// How fast that rate grows, per minute per hour.
    pub growth_per_hour: Option<f64>,
    /// Hours until the limit at the current growth; `None`: not in sight (or not known yet).
    pub headroom_hours: Option<f64>,
    /// Between a `HeadroomLow` and its `HeadroomRecovered`.
    pub headroom_low: bool,
}

fn lock(m: &Mutex<Trackers>) -> MutexGuard<'_, Trackers> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Capacity {
    /// One entry per target state, `labels` in the gateway's target order (`provider/model`).
    pub fn new(labels: &[String], config: HeadroomConfig) -> Capacity {
        Capacity {
            labels: labels.to_vec(),
            config,
            targets: labels
                .iter()
                .map(|_| Arc::new(Mutex::new(Default::default())))
                .collect(),
            shown: Arc::new(Mutex::new(std::sync::Weak::new())),
        }
    }

    /// The trackers of another configuration of the same process: targets it shares with this one
    /// (by label) keep theirs; new ones start empty.
    pub fn next(&self, labels: &[String]) -> Capacity {
        Capacity {
            labels: labels.to_vec(),
            config: self.config,
            targets: labels
                .iter()
                .map(|l| {
                    self.labels
                        .iter()
                        .position(|m| m == l)
                        .and_then(|i| self.targets.get(i).cloned())
                        .unwrap_or_else(|| Arc::new(Mutex::new(Default::default())))
                })
                .collect(),
            shown: self.shown.clone(),
        }
    }

    /// From now on the gauges show this configuration's targets.
    pub fn show(self: &Arc<Self>) {
        *self.shown.lock().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(self);
    }

    /// An upstream answer of `target` arrived with `headers` (any status: 429s report limits
    /// too) at `now`. Returns what changed, usually nothing (no allocation then).
    pub fn observe(&self, target: usize, headers: &HeaderMap, now: Instant) -> Vec<CapacityEvent> {
        let limits = RateLimits::parse(headers);
        if limits.is_empty() {
            return Vec::new();
        }
        self.record(target, &limits, now)
    }

    /// [`Capacity::observe`] with limits already read.
    pub fn record(&self, target: usize, limits: &RateLimits, now: Instant) -> Vec<CapacityEvent> {
        let mut events = Vec::new();
        let Some(slot) = self.targets.get(target) else {
            return events;
        };
        let mut trackers = lock(slot);
        for (kind, reading) in limits.iter() {
            let Some(tracker) = trackers.get_mut(kind.index()) else {
                continue;
            };
            match tracker {
                None => *tracker = Some(LimitTracker::new(self.config, reading, now)),
                Some(t) => {
                    let update = t.observe(reading, now);
                    if let Some((old, new)) = update.limit_changed {
                        events.push(CapacityEvent::LimitChanged {
                            target,
                            kind,
                            old,
                            new,
                        });
                    }
                    push_headroom(&mut events, target, kind, t, update.headroom);
                }
            }
        }
        events
    }

    /// Closes the buckets that ended by `now` on every target, so a target that stopped
    /// answering does not keep an old forecast (and its low headroom recovers). Call it now and
    /// then (a minute is plenty); only needed for targets that may go quiet.
    pub fn tick(&self, now: Instant) -> Vec<CapacityEvent> {
        let mut events = Vec::new();
        for (target, slot) in self.targets.iter().enumerate() {
            let mut trackers = lock(slot);
            for (kind, tracker) in Kind::ALL.into_iter().zip(trackers.iter_mut()) {
                if let Some(t) = tracker {
                    let change = t.tick(now);
                    push_headroom(&mut events, target, kind, t, change);
                }
            }
        }
        events
    }

    /// The `provider/model` label of a target.
    pub fn label(&self, target: usize) -> Option<&str> {
        self.labels.get(target).map(String::as_str)
    }

    /// Every target (in order), with the limits its answers reported.
    pub fn snapshot(&self, now: Instant) -> Vec<TargetCapacity> {
        self.labels
            .iter()
            .zip(&self.targets)
            .map(|(label, slot)| {
                let trackers = lock(slot);
                let limits = Kind::ALL
                    .into_iter()
                    .zip(trackers.iter())
                    .filter_map(|(kind, t)| t.as_ref().map(|t| limit_snapshot(kind, t, now)))
                    .collect();
                TargetCapacity {
                    target: label.clone(),
                    limits,
                }
            })
            .collect()
    }

    /// Adds `ballast_ratelimit_limit`, `ballast_ratelimit_remaining` and
    /// `ballast_ratelimit_headroom_hours` (labels `target`, `kind`) to `registry`, read from this
    /// tracker at every scrape. A series exists once the target's answers reported that kind; the
    /// headroom series only while there is a forecast of exhaustion.
    pub fn register(self: &Arc<Self>, registry: &mut Registry) {
        self.show();
        registry.register_collector(Box::new(Gauges(self.shown.clone())));
    }

    /// Every kind reported, for the gauges.
    fn rows(&self) -> Vec<Row> {
        let mut rows = Vec::new();
        for (target, slot) in self.targets.iter().enumerate() {
            let trackers = lock(slot);
            for (kind, t) in Kind::ALL.into_iter().zip(trackers.iter()) {
                if let Some(t) = t {
                    let latest = t.latest();
                    rows.push(Row {
                        target,
                        kind,
                        limit: latest.limit,
                        remaining: latest.remaining,
                        hours: t.forecast().and_then(|f| f.hours),
                    });
                }
            }
        }
        rows
    }
}

/// One target's kind of limit at scrape time.
struct Row {
    target: usize,
    kind: Kind,
    limit: u64,
    remaining: u64,
    hours: Option<f64>,
}

/// A gauge's name, help and value from a row (`None`: no sample).
type GaugeSpec = (&'static str, &'static str, fn(&Row) -> Option<f64>);

const GAUGES: [GaugeSpec; 3] = [
    (
        "ballast_ratelimit_limit",
        "The rate limit per minute the target's provider reported on its latest answer",
        |row| Some(row.limit as f64),
    ),
    (
        "ballast_ratelimit_remaining",
        "What remained of the rate limit on the target's latest answer",
        |row| Some(row.remaining as f64),
    ),
    (
        "ballast_ratelimit_headroom_hours",
        "Hours until consumption reaches the rate limit at its current growth (absent: not in sight)",
        |row| row.hours,
    ),
];

fn push_headroom(
    events: &mut Vec<CapacityEvent>,
    target: usize,
    kind: Kind,
    tracker: &LimitTracker,
    change: Option<HeadroomChange>,
) {
    match change {
        Some(HeadroomChange::Low { hours }) => {
            if let Some(forecast) = tracker.forecast() {
                events.push(CapacityEvent::HeadroomLow {
                    target,
                    kind,
                    hours,
                    forecast,
                });
            }
        }
        Some(HeadroomChange::Recovered { hours }) => {
            events.push(CapacityEvent::HeadroomRecovered {
                target,
                kind,
                hours,
            });
        }
        None => {}
    }
}

fn limit_snapshot(kind: Kind, t: &LimitTracker, now: Instant) -> LimitSnapshot {
    let latest = t.latest();
    let forecast = t.forecast();
    let millis = |d: std::time::Duration| u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
    LimitSnapshot {
        kind: kind.as_str(),
        limit: latest.limit,
        remaining: latest.remaining,
        used_share: t.used_share(),
        reset_ms: latest.reset.map(millis),
        age_ms: millis(now.saturating_duration_since(t.seen())),
        rate_per_minute: forecast.map(|f| f.rate_per_minute),
        growth_per_hour: forecast.map(|f| f.growth_per_hour),
        headroom_hours: forecast.and_then(|f| f.hours),
        headroom_low: t.is_low(),
    }
}

/// The gauges, encoded from the trackers at scrape time.
#[derive(Debug)]
struct Gauges(Arc<Mutex<std::sync::Weak<Capacity>>>);

impl Collector for Gauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let shown = self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        let Some(capacity) = shown else {
            return Ok(());
        };
        let rows = capacity.rows();
        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for row in &rows {
                let (Some(label), Some(v)) = (capacity.label(row.target), value(row)) else {
                    continue;
                };
                let labels = [("target", label), ("kind", row.kind.as_str())];
                family.encode_family(&labels)?.encode_gauge(&v)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests index and count known fixtures; a panic is a test failure"
)]
mod tests {
    use std::time::Duration;

    use http::HeaderValue;

    use super::*;

    fn openai(limit: u64, remaining: u64) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut put = |name: &'static str, value: String| {
            h.insert(name, HeaderValue::from_str(&value).unwrap());
        };
        put("x-ratelimit-limit-requests", limit.to_string());
        put("x-ratelimit-remaining-requests", remaining.to_string());
        put("x-ratelimit-reset-requests", "12ms".to_owned());
        put("x-ratelimit-limit-tokens", (limit * 100).to_string());
        put(
            "x-ratelimit-remaining-tokens",
            (remaining * 100).to_string(),
        );
        put("x-ratelimit-reset-tokens", "6m0s".to_owned());
        h
    }

    fn config() -> HeadroomConfig {
        HeadroomConfig {
            bucket: Duration::from_secs(60),
            min_buckets: 4,
            ..HeadroomConfig::default()
        }
    }

    fn labels() -> Vec<String> {
        vec![
            "openai/gpt-4.1".to_owned(),
            "gemini/gemini-2.5-flash".to_owned(),
        ]
    }

    #[test]
    fn answers_without_headers_change_nothing() {
        let c = Capacity::new(&labels(), config());
        let now = Instant::now();
        let events = c.observe(1, &HeaderMap::new(), now);
        assert!(events.is_empty());
        assert_eq!(events.capacity(), 0, "no allocation");
        assert!(c.snapshot(now).iter().all(|t| t.limits.is_empty()));
        // A target out of range is ignored, not a panic.
        assert!(c.observe(7, &openai(10, 5), now).is_empty());
    }

    #[test]
    fn limits_are_kept_per_target_and_kind() {
        let c = Capacity::new(&labels(), config());
        let t0 = Instant::now();
        c.observe(0, &openai(5000, 4999), t0);
        c.observe(0, &openai(5000, 4990), t0 + Duration::from_secs(2));
        let snap = c.snapshot(t0 + Duration::from_secs(5));
        assert_eq!(snap.len(), 2);
        assert_eq!(snap[0].target, "openai/gpt-4.1");
        let requests = &snap[0].limits[0];
        assert_eq!(requests.kind, "requests");
        assert_eq!(requests.limit, 5000);
        assert_eq!(requests.remaining, 4990);
        assert!((requests.used_share - 0.002).abs() < 1e-9);
        assert_eq!(requests.reset_ms, Some(12));
        assert_eq!(requests.age_ms, 3000);
        assert_eq!(requests.headroom_hours, None);
        assert!(!requests.headroom_low);
        assert_eq!(snap[0].limits[1].kind, "tokens");
        assert_eq!(snap[0].limits[1].limit, 500_000);
        assert!(snap[1].limits.is_empty());
        let json = serde_json::to_value(&snap[0]).unwrap();
        assert_eq!(json["limits"][1]["reset_ms"], 360_000);
    }

    #[test]
    fn a_silent_limit_change_is_an_event_once() {
        let c = Capacity::new(&labels(), config());
        let t0 = Instant::now();
        let s = Duration::from_secs;
        assert!(c.observe(0, &openai(5000, 4999), t0).is_empty());
        assert!(c.observe(0, &openai(2000, 1999), t0 + s(1)).is_empty());
        assert!(c.observe(0, &openai(2000, 1998), t0 + s(2)).is_empty());
        let events = c.observe(0, &openai(2000, 1997), t0 + s(3));
        assert_eq!(
            events,
            [
                CapacityEvent::LimitChanged {
                    target: 0,
                    kind: Kind::Requests,
                    old: 5000,
                    new: 2000
                },
                CapacityEvent::LimitChanged {
                    target: 0,
                    kind: Kind::Tokens,
                    old: 500_000,
                    new: 200_000
                },
            ]
        );
        assert_eq!(events[1].kind(), Kind::Tokens);
        assert_eq!(events[1].target(), 0);
        assert!(c.observe(0, &openai(2000, 1996), t0 + s(4)).is_empty());
    }

    /// Answers every 6 s with `per_minute(m)` requests consumed in minute `m` of a 1,000 limit.
    fn drive(
        c: &Capacity,
        t0: Instant,
        minutes: u64,
        per_minute: impl Fn(u64) -> f64,
    ) -> Vec<CapacityEvent> {
        let mut events = Vec::new();
        let mut level = 1000.0_f64;
        let mut at = t0;
        for m in 0..minutes {
            for i in 0..10 {
                let now = t0 + Duration::from_secs(m * 60 + i * 6 + 3);
                level = (level + 1000.0 * (now - at).as_secs_f64() / 60.0).min(1000.0);
                level = (level - per_minute(m) / 10.0).max(0.0);
                at = now;
                events.extend(c.observe(0, &openai(1000, level.round() as u64), now));
            }
        }
        events
    }

    #[test]
    fn rising_traffic_raises_headroom_low_and_silence_recovers_it() {
        let c = Capacity::new(&labels(), config());
        let t0 = Instant::now();
        // 500 a minute, growing by 10 a minute every minute (600 an hour): under an hour to the
        // limit once four buckets (after the first) closed.
        let events = drive(&c, t0, 6, |m| 500.0 + 10.0 * m as f64);
        // Requests and tokens (100 a request here) grow alike: one low headroom each.
        let lows: Vec<_> = events
            .iter()
            .filter(|e| {
                matches!(
                    e,
                    CapacityEvent::HeadroomLow {
                        kind: Kind::Requests,
                        ..
                    }
                )
            })
            .collect();
        assert_eq!(events.len(), 2, "{events:?}");
        assert_eq!(lows.len(), 1, "{events:?}");
        let CapacityEvent::HeadroomLow {
            target,
            kind,
            hours,
            forecast,
        } = *lows[0]
        else {
            unreachable!()
        };
        assert_eq!((target, kind), (0, Kind::Requests));
        assert!(
            (forecast.growth_per_hour - 600.0).abs() < 1e-6,
            "{forecast:?}"
        );
        assert!(
            (forecast.rate_per_minute - 540.0).abs() < 1e-6,
            "{forecast:?}"
        );
        assert!((hours - 460.0 / 600.0).abs() < 1e-9, "{hours}");
        let snap = c.snapshot(t0 + Duration::from_secs(6 * 60));
        assert!(snap[0].limits[0].headroom_low);
        assert!(snap[0].limits[0].headroom_hours.unwrap() < 1.0);
        // The target goes quiet: a tick after the ring's span recovers it.
        let later = t0 + Duration::from_secs(24 * 60 * 60);
        let events = c.tick(later);
        assert!(events.contains(&CapacityEvent::HeadroomRecovered {
            target: 0,
            kind: Kind::Requests,
            hours: None
        }));
        assert!(!c.snapshot(later)[0].limits[0].headroom_low);
        assert!(c.tick(later).is_empty());
    }

    #[test]
    fn gauges_are_read_at_scrape_time() {
        let c = Arc::new(Capacity::new(&labels(), config()));
        let mut registry = Registry::default();
        c.register(&mut registry);
        let scrape = |registry: &Registry| {
            let mut text = String::new();
            prometheus_client::encoding::text::encode(&mut text, registry).unwrap();
            text
        };
        let empty = scrape(&registry);
        assert!(
            empty.contains("# TYPE ballast_ratelimit_limit gauge"),
            "{empty}"
        );
        assert!(!empty.contains("ballast_ratelimit_limit{"), "{empty}");
        let t0 = Instant::now();
        drive(&c, t0, 6, |m| 500.0 + 10.0 * m as f64);
        let text = scrape(&registry);
        assert!(
            text.contains(
                r#"ballast_ratelimit_limit{target="openai/gpt-4.1",kind="requests"} 1000"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ballast_ratelimit_limit{target="openai/gpt-4.1",kind="tokens"} 100000"#
            ),
            "{text}"
        );
        assert!(
            text.contains(
                r#"ballast_ratelimit_remaining{target="openai/gpt-4.1",kind="requests"} "#
            ),
            "{text}"
        );
        let headroom = text
            .lines()
            .find(|l| {
                l.starts_with(
                    r#"ballast_ratelimit_headroom_hours{target="openai/gpt-4.1",kind="requests"} "#,
                )
            })
            .unwrap_or_else(|| panic!("{text}"));
        let hours: f64 = headroom.rsplit(' ').next().unwrap().parse().unwrap();
        assert!((hours - 460.0 / 600.0).abs() < 1e-9, "{headroom}");
        assert!(!text.contains("gemini"), "{text}");
    }
}
