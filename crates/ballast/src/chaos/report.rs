//! The report: per-phase and whole-run figures for the gateway and the naive baseline, the pass
//! criteria, the terminal table and the JSON document.

use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Value, json};

use super::load::{Kind, Outcome};
use super::scenario::{Phase, Scenario};

/// One sample of every simulator's request counter, in run seconds.
#[derive(Clone, Debug)]
pub struct Sample {
    pub t: f64,
    /// `total_requests` per gateway simulator (scenario order).
    pub totals: Vec<u64>,
}

/// An incident the gateway opened during the run.
#[derive(Clone, Debug)]
pub struct SeenIncident {
    pub id: u64,
    pub target: String,
    pub signal: String,
    pub severity: String,
    pub opened: f64,
    pub resolved: Option<f64>,
}

/// Everything a run observed.
pub struct RunData {
    pub scenario: Scenario,
    pub quick: bool,
    pub mode: &'static str,
    pub gateway: Vec<Outcome>,
    pub baseline: Option<Vec<Outcome>>,
    pub samples: Vec<Sample>,
    pub incidents: Vec<SeenIncident>,
    pub primary_providers: Vec<String>,
}

/// Figures for one column (the gateway, or the baseline) over one stretch of the run.
#[derive(Clone, Debug, Default)]
pub struct Figures {
    pub requests: usize,
    pub ok: usize,
    pub p50: Option<f64>,
    pub p99: Option<f64>,
    pub attempts_per_request: Option<f64>,
    pub attempts_by_sim: BTreeMap<String, u64>,
    pub failures: BTreeMap<String, usize>,
    pub detect: Option<f64>,
    pub failover: Option<f64>,
    /// Tokens the answers reported.
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Their cost in US dollars at the scenario's prices (tokens of unpriced models left out).
    pub cost_usd: f64,
    /// Models that answered with tokens but have no price.
    pub unpriced: BTreeSet<String>,
}

impl Figures {
    pub fn success_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.ok as f64 / self.requests as f64)
    }

    fn json(&self) -> Value {
        json!({
            "requests": self.requests,
            "ok": self.ok,
            "success_rate": self.success_rate(),
            "p50_ms": self.p50.map(|s| (s * 1000.0).round()),
            "p99_ms": self.p99.map(|s| (s * 1000.0).round()),
            "attempts_per_request": self.attempts_per_request.map(round3),
            "attempts_by_sim": self.attempts_by_sim,
            "failures": self.failures,
            "time_to_detect_s": self.detect.map(round3),
            "time_to_failover_s": self.failover.map(round3),
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "cost_usd": (self.cost_usd * 1e6).round() / 1e6,
            "unpriced_models": self.unpriced,
        })
    }
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// The `q` quantile (0..=1) of unsorted values.
pub fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let i = ((values.len() as f64 * q).ceil() as usize).clamp(1, values.len()) - 1;
    Some(values[i])
}

/// Each simulator's counter at run time `t`, interpolated between the samples around it.
fn totals_at(samples: &[Sample], t: f64) -> Option<Vec<u64>> {
    let after = samples.iter().position(|s| s.t >= t);
    match after {
        None => samples.last().map(|s| s.totals.clone()),
        Some(0) => samples.first().map(|s| s.totals.clone()),
        Some(i) => {
            let (a, b) = (&samples[i - 1], &samples[i]);
            let k = if b.t > a.t {
                (t - a.t) / (b.t - a.t)
            } else {
                1.0
            };
            Some(
                a.totals
                    .iter()
                    .zip(&b.totals)
                    .map(|(x, y)| (*x as f64 + (y.saturating_sub(*x)) as f64 * k).round() as u64)
                    .collect(),
            )
        }
    }
}

impl RunData {
    fn is_failover(&self, o: &Outcome) -> bool {
        o.ok()
            && (o.fallback
                || o.target.as_deref().is_some_and(|t| {
                    let provider = t.split('/').next().unwrap_or(t);
                    !self.primary_providers.iter().any(|p| p == provider)
                }))
    }

    /// Figures for requests started in `[start, end)`; `last` extends the simulator counts to the
    /// final sample (requests still in flight at the end of the window).
    pub fn figures(&self, start: f64, end: f64, last: bool, baseline: bool) -> Option<Figures> {
        let outcomes = if baseline {
            self.baseline.as_ref()?
        } else {
            &self.gateway
        };
        let in_window: Vec<&Outcome> = outcomes
            .iter()
            .filter(|o| o.start >= start && o.start < end)
            .collect();
        let mut f = Figures {
            requests: in_window.len(),
            ..Figures::default()
        };
        f.ok = in_window.iter().filter(|o| o.ok()).count();
        let mut lat: Vec<f64> = in_window
            .iter()
            .filter(|o| o.kind != Kind::NotSent)
            .map(|o| o.latency)
            .collect();
        f.p50 = quantile(&mut lat, 0.5);
        f.p99 = quantile(&mut lat, 0.99);
        for o in in_window.iter().filter(|o| !o.ok()) {
            *f.failures.entry(o.kind.label()).or_default() += 1;
        }
        for o in &in_window {
            if o.tokens.input == 0 && o.tokens.output == 0 {
                continue;
            }
            f.input_tokens += o.tokens.input;
            f.output_tokens += o.tokens.output;
            // The model that answered: the gateway names it (provider/model); the baseline asks the
            // primary's.
            let model = if baseline {
                self.scenario.primary.as_ref().map(|(_, m)| m.as_str())
            } else {
                o.target
                    .as_deref()
                    .map(|t| t.split_once('/').map_or(t, |(_, m)| m))
            };
            match model.and_then(|m| self.scenario.prices.get(m)) {
                Some(p) => f.cost_usd += p.cost(o.tokens.input, o.tokens.output),
                None => {
                    f.unpriced.insert(model.unwrap_or("unknown").to_owned());
                }
            }
        }
        if baseline {
            let attempts: u64 = in_window.iter().map(|o| u64::from(o.attempts)).sum();
            f.attempts_by_sim.insert(
                self.scenario.sims[self.scenario.baseline].name.clone(),
                attempts,
            );
            f.attempts_per_request = (f.requests > 0).then(|| attempts as f64 / f.requests as f64);
        } else {
            let to = if last { f64::INFINITY } else { end };
            if let (Some(a), Some(b)) = (
                totals_at(&self.samples, start),
                totals_at(&self.samples, to),
            ) {
                let mut sum = 0;
                for (i, sim) in self.scenario.sims.iter().enumerate() {
                    let d = b
                        .get(i)
                        .copied()
                        .unwrap_or(0)
                        .saturating_sub(a.get(i).copied().unwrap_or(0));
                    f.attempts_by_sim.insert(sim.name.clone(), d);
                    sum += d;
                }
                f.attempts_per_request = (f.requests > 0).then(|| sum as f64 / f.requests as f64);
            }
            f.detect = self
                .incidents
                .iter()
                .filter(|i| i.opened >= start && i.opened < end)
                .map(|i| i.opened - start)
                .min_by(f64::total_cmp);
            f.failover = in_window
                .iter()
                .filter(|o| self.is_failover(o))
                .map(|o| (o.start + o.latency - start).max(0.0))
                .min_by(f64::total_cmp);
        }
        Some(f)
    }

    pub fn phases(&self) -> Vec<Phase> {
        self.scenario.phases()
    }

    /// The whole run, with detection and failover measured from the first fault.
    pub fn total(&self, baseline: bool) -> Option<Figures> {
        let mut f = self.figures(0.0, f64::INFINITY, true, baseline)?;
        if !baseline {
            let first = self.scenario.first_fault();
            f.detect = first.and_then(|t0| {
                self.incidents
                    .iter()
                    .filter(|i| i.opened >= t0)
                    .map(|i| i.opened - t0)
                    .min_by(f64::total_cmp)
            });
            f.failover = first.and_then(|t0| {
                self.gateway
                    .iter()
                    .filter(|o| o.start + o.latency >= t0 && self.is_failover(o))
                    .map(|o| o.start + o.latency - t0)
                    .min_by(f64::total_cmp)
            });
        }
        Some(f)
    }

    /// Each pass criterion: (name, limit, observed, passed).
    pub fn criteria(&self) -> Vec<Criterion> {
        let Some(t) = self.total(false) else {
            return Vec::new();
        };
        let p = &self.scenario.pass;
        let mut out = Vec::new();
        if let Some(min) = p.success_rate {
            let got = t.success_rate();
            out.push(Criterion::new(
                "success_rate",
                format!(">= {}", pct(Some(min))),
                pct(got),
                got.is_some_and(|g| g >= min),
            ));
        }
        if let Some(max) = p.p99 {
            let max = max.as_secs_f64();
            out.push(Criterion::new(
                "p99",
                format!("<= {}", secs(Some(max))),
                secs(t.p99),
                t.p99.is_some_and(|g| g <= max),
            ));
        }
        if let Some(max) = p.attempts_per_request {
            let got = t.attempts_per_request;
            out.push(Criterion::new(
                "attempts_per_request",
                format!("<= {max:.2}"),
                got.map_or("-".into(), |g| format!("{g:.2}")),
                got.is_some_and(|g| g <= max),
            ));
        }
        if let Some(max) = p.time_to_detect {
            let max = max.as_secs_f64();
            out.push(Criterion::new(
                "time_to_detect",
                format!("<= {}", secs(Some(max))),
                secs(t.detect),
                t.detect.is_some_and(|g| g <= max),
            ));
        }
        if let Some(max) = p.time_to_failover {
            let max = max.as_secs_f64();
            out.push(Criterion::new(
                "time_to_failover",
                format!("<= {}", secs(Some(max))),
                secs(t.failover),
                t.failover.is_some_and(|g| g <= max),
            ));
        }
        let phases = self.phases();
        let last = phases.len().saturating_sub(1);
        for pp in &p.phases {
            let Some((i, ph)) = phases.iter().enumerate().find(|(_, ph)| ph.name == pp.name) else {
                continue;
            };
            let f = self.figures(ph.start, ph.end, i == last, false);
            let name = |what: &str| format!("{} ({what})", pp.name);
            if let Some(min) = pp.success_rate {
                let got = f.as_ref().and_then(Figures::success_rate);
                out.push(Criterion::new(
                    &name("success_rate"),
                    format!(">= {}", pct(Some(min))),
                    pct(got),
                    got.is_some_and(|g| g >= min),
                ));
            }
            if let Some(max) = pp.p99 {
                let max = max.as_secs_f64();
                let got = f.as_ref().and_then(|f| f.p99);
                out.push(Criterion::new(
                    &name("p99"),
                    format!("<= {}", secs(Some(max))),
                    secs(got),
                    got.is_some_and(|g| g <= max),
                ));
            }
            if let Some(max) = pp.attempts_per_request {
                let got = f.as_ref().and_then(|f| f.attempts_per_request);
                out.push(Criterion::new(
                    &name("attempts_per_request"),
                    format!("<= {max:.2}"),
                    got.map_or("-".into(), |g| format!("{g:.2}")),
                    got.is_some_and(|g| g <= max),
                ));
            }
        }
        out
    }

    pub fn passed(&self) -> bool {
        self.criteria().iter().all(|c| c.pass)
    }

    /// The terminal table.
    pub fn table(&self) -> String {
        let mut s = String::new();
        let sc = &self.scenario;
        s.push_str(&format!(
            "\nscenario {} ({}): {:.1} s of load at {} req/s, time compressed x{}\n",
            sc.name,
            self.mode,
            sc.run_duration(),
            sc.traffic.rate,
            sc.compression
        ));
        s.push_str(&format!("traffic: {}\n", sc.traffic.mix()));
        let with_base = self.baseline.is_some();
        s.push_str(&format!(
            "{:<26} {:>13} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
            "PHASE", "WINDOW", "REQS", "OK", "P50", "P99", "ATT/REQ", "DETECT", "FAILOVER"
        ));
        if with_base {
            s.push_str(&format!(
                " | {:>7} {:>7} {:>7} {:>7}",
                "OK", "P50", "P99", "ATT/REQ"
            ));
        }
        s.push('\n');
        s.push_str(&format!(
            "{:<26} {:>13} {:>6} | {:^48}",
            "", "(run seconds)", "", "with Ballast"
        ));
        if with_base {
            s.push_str(&format!(" | {:^31}", "without Ballast"));
        }
        s.push('\n');
        let phases = self.phases();
        let n = phases.len();
        let mut row = |name: &str, window: String, g: Option<Figures>, b: Option<Figures>| {
            let g = g.unwrap_or_default();
            let mut name = name.to_owned();
            if name.chars().count() > 26 {
                name = name.chars().take(25).collect::<String>() + "…";
            }
            s.push_str(&format!(
                "{:<26} {:>13} {:>6} | {:>7} {:>7} {:>7} {:>7} {:>7} {:>8}",
                name,
                window,
                g.requests,
                pct(g.success_rate()),
                secs(g.p50),
                secs(g.p99),
                g.attempts_per_request
                    .map_or("-".into(), |a| format!("{a:.2}")),
                secs(g.detect),
                secs(g.failover),
            ));
            if let Some(b) = b {
                s.push_str(&format!(
                    " | {:>7} {:>7} {:>7} {:>7}",
                    pct(b.success_rate()),
                    secs(b.p50),
                    secs(b.p99),
                    b.attempts_per_request
                        .map_or("-".into(), |a| format!("{a:.2}")),
                ));
            }
            s.push('\n');
        };
        for (i, p) in phases.iter().enumerate() {
            let last = i + 1 == n;
            row(
                &p.name,
                format!("{:.1}-{:.1}", p.start, p.end),
                self.figures(p.start, p.end, last, false),
                self.figures(p.start, p.end, last, true),
            );
        }
        row(
            "TOTAL",
            format!("{:.1}-{:.1}", 0.0, sc.run_duration()),
            self.total(false),
            self.total(true),
        );
        s.push_str(&self.cost_table());
        if let Some(t) = self.total(false) {
            let by_sim: Vec<String> = t
                .attempts_by_sim
                .iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect();
            s.push_str(&format!(
                "upstream attempts by simulator (with Ballast): {}\n",
                by_sim.join(", ")
            ));
            if !t.failures.is_empty() {
                let f: Vec<String> = t.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
                s.push_str(&format!("failures with Ballast: {}\n", f.join(", ")));
            }
        }
        if let Some(b) = self.total(true)
            && !b.failures.is_empty()
        {
            let f: Vec<String> = b.failures.iter().map(|(k, v)| format!("{k} {v}")).collect();
            s.push_str(&format!("failures without Ballast: {}\n", f.join(", ")));
        }
        if self.incidents.is_empty() {
            s.push_str("incidents: none\n");
        } else {
            s.push_str("incidents:\n");
            for i in &self.incidents {
                s.push_str(&format!(
                    "  #{} {} {} ({}) opened at {:.1}s{}\n",
                    i.id,
                    i.target,
                    i.signal,
                    i.severity,
                    i.opened,
                    i.resolved
                        .map_or(String::new(), |r| format!(", resolved at {r:.1}s"))
                ));
            }
        }
        let criteria = self.criteria();
        if !criteria.is_empty() {
            s.push_str("pass criteria (the whole run unless a phase is named; with Ballast):\n");
            let width = criteria
                .iter()
                .map(|c| c.name.chars().count())
                .max()
                .unwrap_or(0);
            for c in &criteria {
                s.push_str(&format!(
                    "  {} {:<width$} {:>10}  (limit {})\n",
                    if c.pass { "PASS" } else { "FAIL" },
                    c.name,
                    c.observed,
                    c.limit
                ));
            }
        }
        s.push_str(if self.passed() {
            "result: PASS\n"
        } else {
            "result: FAIL\n"
        });
        s
    }

    /// Tokens and cost per phase, below the main table: with Ballast, then without.
    fn cost_table(&self) -> String {
        let mut s = String::new();
        let with_base = self.baseline.is_some();
        s.push_str(&format!(
            "\n{:<26} | {:>10} {:>10} {:>10}",
            "PHASE", "IN TOK", "OUT TOK", "COST"
        ));
        if with_base {
            s.push_str(&format!(
                " | {:>10} {:>10} {:>10}",
                "IN TOK", "OUT TOK", "COST"
            ));
        }
        s.push('\n');
        s.push_str(&format!("{:<26} | {:^32}", "", "with Ballast"));
        if with_base {
            s.push_str(&format!(" | {:^32}", "without Ballast"));
        }
        s.push('\n');
        let cells = |f: &Figures| {
            format!(
                "{:>10} {:>10} {:>10}",
                f.input_tokens,
                f.output_tokens,
                format!("${:.4}", f.cost_usd)
            )
        };
        let phases = self.phases();
        let n = phases.len();
        let mut rows: Vec<(String, Option<Figures>, Option<Figures>)> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let last = i + 1 == n;
                (
                    p.name.clone(),
                    self.figures(p.start, p.end, last, false),
                    self.figures(p.start, p.end, last, true),
                )
            })
            .collect();
        rows.push(("TOTAL".into(), self.total(false), self.total(true)));
        for (name, g, b) in &rows {
            let mut name = name.clone();
            if name.chars().count() > 26 {
                name = name.chars().take(25).collect::<String>() + "…";
            }
            s.push_str(&format!(
                "{name:<26} | {}",
                cells(&g.clone().unwrap_or_default())
            ));
            if let Some(b) = b {
                s.push_str(&format!(" | {}", cells(b)));
            }
            s.push('\n');
        }
        let unpriced: BTreeSet<&String> = rows
            .iter()
            .filter(|r| r.0 == "TOTAL")
            .flat_map(|(_, g, b)| g.iter().chain(b.iter()).flat_map(|f| f.unpriced.iter()))
            .collect();
        if !unpriced.is_empty() {
            let list: Vec<&str> = unpriced.iter().map(|m| m.as_str()).collect();
            s.push_str(&format!(
                "no price for {} (add [prices.\"MODEL\"] to the scenario): their tokens cost nothing above\n",
                list.join(", ")
            ));
        }
        s
    }

    /// The JSON report.
    pub fn json(&self, buckets: &[Bucket], bucket_secs: f64) -> Value {
        let sc = &self.scenario;
        let phases = self.phases();
        let n = phases.len();
        let phase_list: Vec<Value> = phases
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let last = i + 1 == n;
                json!({
                    "name": p.name,
                    "start_s": round3(p.start),
                    "end_s": round3(p.end),
                    "faulted": p.faulted,
                    "ballast": self.figures(p.start, p.end, last, false).map(|f| f.json()),
                    "without_ballast": self.figures(p.start, p.end, last, true).map(|f| f.json()),
                })
            })
            .collect();
        let criteria: Vec<Value> = self
            .criteria()
            .iter()
            .map(|c| json!({"name": c.name, "limit": c.limit, "observed": c.observed, "pass": c.pass}))
            .collect();
        let incidents: Vec<Value> = self
            .incidents
            .iter()
            .map(|i| {
                json!({"id": i.id, "target": i.target, "signal": i.signal, "severity": i.severity,
                       "opened_s": round3(i.opened), "resolved_s": i.resolved.map(round3)})
            })
            .collect();
        let series =
            |baseline: bool| -> Value {
                buckets
                .iter()
                .map(|b| {
                    let c = if baseline { b.baseline.as_ref() } else { Some(&b.gateway) };
                    json!({
                        "t_s": round3(b.start),
                        "requests": c.map(|c| c.requests),
                        "success_rate": c.and_then(|c| c.success_rate),
                        "p99_ms": c.and_then(|c| c.p99).map(|s| (s * 1000.0).round()),
                        "attempts_per_request": c.and_then(|c| c.attempts_per_request).map(round3),
                    })
                })
                .collect()
            };
        json!({
            "scenario": sc.name,
            "description": sc.description,
            "source": sc.source,
            "mode": self.mode,
            "quick": self.quick,
            "compression": sc.compression,
            "run_seconds": round3(sc.run_duration()),
            "rate": sc.traffic.rate,
            "traffic": {
                "stream_share": sc.traffic.stream_share,
                "tool_share": sc.traffic.tool_share,
                "languages": sc.traffic.languages.iter().map(|(l, w)| (l.name().to_owned(), json!(round3(*w)))).collect::<serde_json::Map<String, serde_json::Value>>(),
                "apis": sc.traffic.apis.iter().map(|a| format!("{a:?}").to_lowercase()).collect::<Vec<_>>(),
            },
            "phases": phase_list,
            "total": {
                "ballast": self.total(false).map(|f| f.json()),
                "without_ballast": self.total(true).map(|f| f.json()),
            },
            "incidents": incidents,
            "faults": sc.fault_spans().iter().map(|(a, b, sim, name)| json!({"start_s": round3(*a), "end_s": round3(*b), "sim": sim, "name": name})).collect::<Vec<_>>(),
            "criteria": criteria,
            "passed": self.passed(),
            "timeline": {
                "bucket_s": round3(bucket_secs),
                "ballast": series(false),
                "without_ballast": if self.baseline.is_some() { series(true) } else { Value::Null },
            },
        })
    }

    /// The run cut into `n` buckets by request start, for the chart and the JSON timeline.
    pub fn buckets(&self, n: usize) -> (Vec<Bucket>, f64) {
        let run = self.scenario.run_duration();
        let width = run / n.max(1) as f64;
        let column = |outcomes: &[Outcome], start: f64, end: f64, baseline: bool| {
            let list: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| o.start >= start && o.start < end)
                .collect();
            let requests = list.len();
            let ok = list.iter().filter(|o| o.ok()).count();
            let mut lat: Vec<f64> = list
                .iter()
                .filter(|o| o.kind != Kind::NotSent)
                .map(|o| o.latency)
                .collect();
            let attempts = if baseline {
                Some(list.iter().map(|o| f64::from(o.attempts)).sum::<f64>())
            } else {
                match (
                    totals_at(&self.samples, start),
                    totals_at(&self.samples, end),
                ) {
                    (Some(a), Some(b)) => Some(
                        b.iter()
                            .zip(a)
                            .map(|(b, a)| b.saturating_sub(a) as f64)
                            .sum(),
                    ),
                    _ => None,
                }
            };
            Column {
                requests,
                success_rate: (requests > 0).then(|| ok as f64 / requests as f64),
                p99: quantile(&mut lat, 0.99),
                attempts_per_request: attempts
                    .and_then(|a| (requests > 0).then(|| a / requests as f64)),
            }
        };
        let buckets = (0..n)
            .map(|i| {
                let (start, end) = (i as f64 * width, (i + 1) as f64 * width);
                Bucket {
                    start,
                    end,
                    gateway: column(&self.gateway, start, end, false),
                    baseline: self.baseline.as_ref().map(|b| column(b, start, end, true)),
                }
            })
            .collect();
        (buckets, width)
    }
}

/// One time bucket of the chart.
pub struct Bucket {
    pub start: f64,
    pub end: f64,
    pub gateway: Column,
    pub baseline: Option<Column>,
}

/// One column's figures in a bucket.
pub struct Column {
    pub requests: usize,
    pub success_rate: Option<f64>,
    pub p99: Option<f64>,
    pub attempts_per_request: Option<f64>,
}

/// One pass criterion's verdict.
pub struct Criterion {
    pub name: String,
    pub limit: String,
    pub observed: String,
    pub pass: bool,
}

impl Criterion {
    fn new(name: &str, limit: String, observed: String, pass: bool) -> Criterion {
        Criterion {
            name: name.to_owned(),
            limit,
            observed,
            pass,
        }
    }
}

pub fn pct(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| {
        if (0.9995..1.0).contains(&x) {
            "99.9%".into()
        } else {
            format!("{:.1}%", x * 100.0)
        }
    })
}

pub fn secs(x: Option<f64>) -> String {
    x.map_or("-".into(), |x| {
        if x < 1.0 {
            format!("{:.0}ms", x * 1000.0)
        } else if x < 100.0 {
            format!("{x:.2}s")
        } else {
            format!("{x:.0}s")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.5), Some(50.0));
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut [], 0.5), None);
    }
}
