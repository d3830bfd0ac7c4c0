#![allow(
    clippy::unwrap_used,
    clippy::panic,
    clippy::cast_precision_loss,
    clippy::indexing_slicing,
    clippy::arithmetic_side_effects,
    reason = "tests drive detectors with simulated traffic; a panic is a failure"
)]

use std::time::Duration;

use super::*;

/// A seeded source of clean and faulty traffic.
struct Traffic {
    rng: fastrand::Rng,
}

impl Traffic {
    fn new(seed: u64) -> Self {
        Self {
            rng: fastrand::Rng::with_seed(seed),
        }
    }

    fn fails(&mut self, ratio: f64) -> bool {
        self.rng.f64() < ratio
    }

    /// A log-normal time to first token around `median` seconds with spread `sigma`, plus rare
    /// spikes (1% of requests 3-8x slower), as clean traffic has.
    fn ttft(&mut self, median: f64, sigma: f64) -> Duration {
        // Box-Muller.
        let u1 = self.rng.f64().max(1e-12);
        let u2 = self.rng.f64();
        let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
        let mut s = median * (sigma * z).exp();
        if self.rng.f64() < 0.01 {
            s *= 3.0 + 5.0 * self.rng.f64();
        }
        Duration::from_secs_f64(s)
    }
}

/// Attempts until the detector fires after the failure ratio jumps, following `warm` clean ones.
fn attempts_to_detect(clean: f64, faulty: f64, warm: u64, seed: u64) -> Option<u64> {
    let mut t = Traffic::new(seed);
    let mut a = Availability::new(AvailabilityConfig::default());
    for _ in 0..warm {
        let _ = a.observe(t.fails(clean));
    }
    assert!(!a.firing(), "fired on clean traffic during warm-up");
    (1..=10_000).find(|_| a.observe(t.fails(faulty)) == Some(Change::Fired))
}

#[test]
fn a_rise_from_half_a_percent_to_sixteen_is_seen_within_a_hundred_attempts() {
    let mut worst = 0;
    for seed in 0..20 {
        let n = attempts_to_detect(0.005, 0.16, 20_000, seed).unwrap();
        worst = worst.max(n);
    }
    // 10 attempts a second: within 10 s.
    assert!(worst <= 100, "worst {worst} attempts");
}

#[test]
fn a_dead_target_is_seen_at_once() {
    let n = attempts_to_detect(0.005, 1.0, 20_000, 1).unwrap();
    assert!(n <= 12, "{n}");
    let mut h = HardFailure::new(5);
    let fired: Vec<_> = (0..6).map(|_| h.observe(true)).collect();
    assert_eq!(fired.iter().filter(|c| c.is_some()).count(), 1);
    assert_eq!(fired[4], Some(Change::Fired));
    assert_eq!(h.observe(false), Some(Change::Cleared));
    assert_eq!(h.evidence().threshold, 5.0);
}

#[test]
fn availability_clears_after_recovery_and_reports_its_evidence() {
    let mut t = Traffic::new(3);
    let mut a = Availability::new(AvailabilityConfig::default());
    for _ in 0..5_000 {
        let _ = a.observe(t.fails(0.005));
    }
    let base = a.evidence().baseline;
    assert!((0.002..0.01).contains(&base), "learned {base}");
    while a.observe(t.fails(0.3)) != Some(Change::Fired) {}
    let e = a.evidence();
    assert!(e.score >= e.threshold && e.observed > 0.1, "{e:?}");
    assert!(
        a.evidence().baseline < 0.01,
        "trouble must not be learned as normal"
    );
    let cleared = (0..2_000).any(|_| a.observe(t.fails(0.005)) == Some(Change::Cleared));
    assert!(cleared);
}

#[test]
fn doubled_time_to_first_token_is_seen_within_a_hundred_requests() {
    let mut worst = 0;
    for seed in 0..20 {
        let mut t = Traffic::new(seed);
        let mut l = Latency::new(LatencyConfig::default());
        for _ in 0..5_000 {
            assert_ne!(
                l.observe(t.ttft(0.4, 0.3)),
                Some(Change::Fired),
                "seed {seed}"
            );
        }
        let n = (1..=1_000)
            .find(|_| l.observe(t.ttft(0.8, 0.3)) == Some(Change::Fired))
            .unwrap();
        worst = worst.max(n);
        let e = l.evidence();
        assert!((0.3..0.55).contains(&e.baseline), "{e:?}");
    }
    assert!(worst <= 100, "worst {worst}");
}

#[test]
fn answers_in_the_wrong_script_are_seen_at_five_and_one_percent() {
    // p95 over 20 seeded runs (the 19th of 20), as the detection figures are stated.
    for (ratio, within) in [(0.05, 150), (0.01, 900)] {
        let mut runs = Vec::new();
        for seed in 0..20 {
            let mut t = Traffic::new(seed);
            let mut w = WrongScript::default();
            for _ in 0..20_000 {
                assert_eq!(w.observe(t.fails(0.0005)), None, "seed {seed}");
            }
            let n = (1..=10_000)
                .find(|_| w.observe(t.fails(ratio)) == Some(Change::Fired))
                .unwrap();
            runs.push(n);
        }
        runs.sort_unstable();
        let p95 = runs[18];
        eprintln!("wrong script at {ratio}: answers to detect {runs:?}");
        assert!(p95 <= within, "{ratio}: p95 {p95} answers");
        assert_eq!(
            WrongScript::default().evidence().signal,
            Signal::WrongScript
        );
    }
}

/// Clean traffic for `days` at 10 attempts a second (a diurnal swing in failure ratio and latency,
/// latency spikes, scattered failures): the alarms each detector raises. Thresholds are set for at
/// most one false alarm per detector in 30 days; `bench/false-alarms.sh` replays 30 days in a
/// release build (`BALLAST_REPLAY_DAYS=30`), CI replays a short stretch.
fn false_alarms(days: f64, seed: u64) -> (u64, u64, u64, u64) {
    let mut t = Traffic::new(seed);
    let mut a = Availability::new(AvailabilityConfig::default());
    let mut h = HardFailure::new(5);
    let mut l = Latency::new(LatencyConfig::default());
    let mut w = WrongScript::default();
    let n = (days * 86_400.0 * 10.0) as u64;
    let (mut fa, mut fh, mut fl, mut fw) = (0, 0, 0, 0);
    for i in 0..n {
        let phase = (i as f64 / 864_000.0) * 2.0 * std::f64::consts::PI;
        let ratio = 0.005 * (1.0 + 0.5 * phase.sin());
        let failed = t.fails(ratio);
        if a.observe(failed) == Some(Change::Fired) {
            fa += 1;
        }
        if h.observe(failed) == Some(Change::Fired) {
            fh += 1;
        }
        let median = 0.4 * (1.0 + 0.2 * phase.sin());
        if !failed && l.observe(t.ttft(median, 0.3)) == Some(Change::Fired) {
            fl += 1;
        }
        // Legitimate answers with another script now and then (a translation, a name): 0.05%.
        if !failed && w.observe(t.fails(0.0005)) == Some(Change::Fired) {
            fw += 1;
        }
    }
    (fa, fh, fl, fw)
}

#[test]
fn clean_traffic_raises_no_alarm() {
    let days = std::env::var("BALLAST_REPLAY_DAYS")
        .ok()
        .and_then(|d| d.parse::<f64>().ok())
        .unwrap_or(0.25);
    let (a, h, l, w) = false_alarms(days, 42);
    eprintln!(
        "{days} simulated days at 10 attempts/s of clean traffic: availability {a}, hard failure {h}, latency {l}, wrong script {w} alarms"
    );
    assert!(w <= (days / 30.0).ceil() as u64, "wrong script: {w}");
    assert!(a <= (days / 30.0).ceil() as u64, "availability: {a}");
    assert!(h <= (days / 30.0).ceil() as u64, "hard failure: {h}");
    assert!(l <= (days / 30.0).ceil() as u64, "latency: {l}");
}
