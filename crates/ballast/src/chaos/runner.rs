//! Runs a scenario: starts simulators and a gateway in-process (or uses the ones named), plays the
//! fault timeline through each simulator's `/_sim/faults`, drives the gateway and the naive baseline
//! with the same open-loop plan, and watches simulator counters and gateway incidents meanwhile.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Map, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::baseline::NaiveClient;
use super::load::{GatewayClient, Outcome, drive, plan};
use super::report::{RunData, Sample, SeenIncident, pct, quantile, secs};
use super::scenario::Scenario;

/// Where the gateway and simulators are when the user started them.
pub struct External {
    pub gateway: String,
    pub sims: Vec<(String, String)>,
    pub admin_key: Option<String>,
}

/// How to run.
pub struct RunOptions {
    pub quick: bool,
    pub baseline: bool,
    pub external: Option<External>,
}

/// How long requests may outlast the load before they count as timed out.
const DRAIN: Duration = Duration::from_secs(3);
/// How often simulator counters and incidents are read.
const MONITOR_EVERY: Duration = Duration::from_millis(200);

struct Started {
    gateway: String,
    sims: Vec<String>,
    baseline_sim: Option<String>,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

async fn start_in_process(sc: &Scenario, baseline: bool) -> Result<Started, String> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    let mut stop = Vec::new();
    let mut tasks = Vec::new();
    let mut urls = Vec::new();
    let mut handles = Vec::new();
    let sim_config = |s: &super::scenario::Sim| ballast_sim::SimConfig {
        seed: s.seed,
        ttft: s.ttft,
        token_delay: s.token_delay,
        ..ballast_sim::SimConfig::default()
    };
    for s in &sc.sims {
        let h = ballast_sim::start(loopback, sim_config(s))
            .await
            .map_err(|e| format!("cannot start simulator {}: {e}", s.name))?;
        urls.push(h.base_url());
        handles.push(h);
    }
    let mut baseline_sim = None;
    if baseline {
        let s = &sc.sims[sc.baseline];
        let h = ballast_sim::start(loopback, sim_config(s))
            .await
            .map_err(|e| format!("cannot start the baseline simulator: {e}"))?;
        baseline_sim = Some(h.base_url());
        handles.push(h);
    }
    let addresses: Vec<(String, String)> = sc
        .sims
        .iter()
        .zip(&urls)
        .map(|(s, u)| (s.name.clone(), u.clone()))
        .collect();
    let config = sc
        .gateway_config(&addresses)
        .map_err(|e| format!("the scenario's gateway configuration is invalid:\n{e}"))?;
    let state = ballast_server::AppState::with_seed(config, sc.seed).map_err(|e| e.to_string())?;
    let listener = tokio::net::TcpListener::bind(loopback)
        .await
        .map_err(|e| e.to_string())?;
    let gateway = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    tasks.push(tokio::spawn(async move {
        let shutdown = async move {
            let _ = rx.await;
        };
        if let Err(e) = ballast_server::serve(listener, Arc::new(state), shutdown).await {
            eprintln!("chaos: gateway error: {e}");
        }
    }));
    // The simulators stop with the run.
    let (tx, rx) = oneshot::channel::<()>();
    stop.push(tx);
    tasks.push(tokio::spawn(async move {
        let _ = rx.await;
        for h in handles {
            h.shutdown().await;
        }
    }));
    Ok(Started {
        gateway,
        sims: urls,
        baseline_sim,
        stop,
        tasks,
    })
}

async fn set_faults(
    http: &reqwest::Client,
    sim: &str,
    faults: &Map<String, Value>,
) -> Result<(), String> {
    let url = format!("{}/_sim/faults", sim.trim_end_matches('/'));
    let req = if faults.is_empty() {
        http.delete(&url)
    } else {
        http.post(&url)
            .body(Value::Object(faults.clone()).to_string())
    };
    let resp = req
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    if !resp.status().is_success() {
        let body = resp.text().await.unwrap_or_default();
        return Err(format!("{url}: {body}"));
    }
    Ok(())
}

async fn sim_total(http: &reqwest::Client, sim: &str) -> Option<u64> {
    let url = format!("{}/_sim/stats", sim.trim_end_matches('/'));
    let v: Value = http
        .get(url)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())?;
    v["total_requests"].as_u64()
}

async fn reset_sim(http: &reqwest::Client, sim: &str) -> Result<(), String> {
    set_faults(http, sim, &Map::new()).await?;
    let url = format!("{}/_sim/reset", sim.trim_end_matches('/'));
    http.post(&url)
        .timeout(Duration::from_secs(5))
        .send()
        .await
        .map_err(|e| format!("{url}: {e}"))?;
    Ok(())
}

/// (id, target, signal, severity, open)
async fn incidents(
    http: &reqwest::Client,
    gateway: &str,
    key: &str,
) -> Option<Vec<(u64, String, String, String, bool)>> {
    let url = format!("{}/admin/incidents", gateway.trim_end_matches('/'));
    let v: Value = http
        .get(url)
        .bearer_auth(key)
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())?;
    Some(
        v["incidents"]
            .as_array()?
            .iter()
            .filter_map(|i| {
                Some((
                    i["id"].as_u64()?,
                    i["target"].as_str().unwrap_or("?").to_owned(),
                    i["signal"].as_str().unwrap_or("?").to_owned(),
                    i["severity"].as_str().unwrap_or("?").to_owned(),
                    i["state"] == "open",
                ))
            })
            .collect(),
    )
}

/// Plays the fault timeline from `start`: at each change, each simulator gets its merged faults
/// (`mirror`: the baseline's copy of the primary gets the primary's).
async fn play_faults(
    http: reqwest::Client,
    sc: Scenario,
    sims: Vec<String>,
    mirror: Option<String>,
    start: Instant,
) -> Result<(), String> {
    let mut last: Vec<Option<Map<String, Value>>> = vec![None; sims.len()];
    for t in sc.fault_changes() {
        tokio::time::sleep_until(start + Duration::from_secs_f64(t)).await;
        for (i, sim) in sims.iter().enumerate() {
            if sim.is_empty() {
                continue;
            }
            let faults = sc.faults_at(i, t);
            if last[i].as_ref() == Some(&faults) {
                continue;
            }
            set_faults(&http, sim, &faults).await?;
            if i == sc.baseline
                && let Some(m) = &mirror
            {
                set_faults(&http, m, &faults).await?;
            }
            last[i] = Some(faults);
        }
    }
    Ok(())
}

struct Monitor {
    samples: Vec<Sample>,
    incidents: BTreeMap<u64, SeenIncident>,
    known_before: Vec<u64>,
}

impl Monitor {
    async fn sample(
        &mut self,
        http: &reqwest::Client,
        sims: &[String],
        gateway: &str,
        key: &str,
        t: f64,
    ) {
        let mut totals = Vec::new();
        for s in sims {
            totals.push(sim_total(http, s).await.unwrap_or_else(|| {
                self.samples
                    .last()
                    .and_then(|l| l.totals.get(totals.len()).copied())
                    .unwrap_or(0)
            }));
        }
        self.samples.push(Sample { t, totals });
        if let Some(list) = incidents(http, gateway, key).await {
            for (id, target, signal, severity, open) in list {
                if self.known_before.contains(&id) {
                    continue;
                }
                let e = self.incidents.entry(id).or_insert(SeenIncident {
                    id,
                    target,
                    signal,
                    severity,
                    opened: t,
                    resolved: None,
                });
                if !open && e.resolved.is_none() {
                    e.resolved = Some(t);
                }
            }
        }
    }

    fn open(&self) -> usize {
        self.incidents
            .values()
            .filter(|i| i.resolved.is_none())
            .count()
    }
}

/// A progress line: elapsed, phase, success rate and p99 over the last 5 s, open incidents.
fn progress(sc: &Scenario, t: f64, done: &[Outcome], open: usize) -> String {
    let phase = sc
        .phases()
        .into_iter()
        .rev()
        .find(|p| p.start <= t)
        .map_or_else(String::new, |p| p.name);
    let recent: Vec<&Outcome> = done
        .iter()
        .filter(|o| o.start + o.latency >= t - 5.0)
        .collect();
    let ok = recent.iter().filter(|o| o.ok()).count();
    let mut lat: Vec<f64> = recent.iter().map(|o| o.latency).collect();
    let rate = (!recent.is_empty()).then(|| ok as f64 / recent.len() as f64);
    format!(
        "[{t:>6.1}s / {:.0}s] {phase:<24} ok {:>6}  p99 {:>7}  open incidents {open}",
        sc.run_duration(),
        pct(rate),
        secs(quantile(&mut lat, 0.99))
    )
}

/// Runs the scenario and returns what it observed.
pub async fn run(sc: Scenario, opts: RunOptions) -> Result<RunData, String> {
    let http = ballast_server::plain_client(Duration::from_secs(3600))?;
    let (mut started, mode) = match &opts.external {
        None => (start_in_process(&sc, opts.baseline).await?, "in-process"),
        Some(ext) => {
            let mut urls = Vec::new();
            for s in &sc.sims {
                let url = ext
                    .sims
                    .iter()
                    .find(|(n, _)| *n == s.name)
                    .map(|(_, u)| u.clone())
                    .ok_or_else(|| format!("--sim {}=URL is missing", s.name))?;
                urls.push(url);
            }
            (
                Started {
                    gateway: ext.gateway.clone(),
                    sims: urls,
                    baseline_sim: None,
                    stop: Vec::new(),
                    tasks: Vec::new(),
                },
                "external",
            )
        }
    };
    let key = opts
        .external
        .as_ref()
        .and_then(|e| e.admin_key.clone())
        .unwrap_or_else(|| sc.admin_key());
    for s in started.sims.iter().chain(started.baseline_sim.iter()) {
        reset_sim(&http, s).await?;
    }
    if incidents(&http, &started.gateway, &key).await.is_none() {
        eprintln!(
            "chaos: note: cannot read {}/admin/incidents (admin key?): detection times will be missing",
            started.gateway
        );
    }
    let known_before = incidents(&http, &started.gateway, &key)
        .await
        .unwrap_or_default()
        .iter()
        .map(|i| i.0)
        .collect();
    let mut monitor = Monitor {
        samples: Vec::new(),
        incidents: BTreeMap::new(),
        known_before,
    };

    let run_secs = sc.run_duration();
    let shots = plan(&sc.traffic, run_secs, sc.seed);
    let gateway_out = run_pass(
        &http,
        &sc,
        &started,
        &key,
        &mut monitor,
        shots.clone(),
        false,
        started.baseline_sim.clone(),
    )
    .await?;
    let gateway_outcomes = gateway_out.0;
    let mut baseline = gateway_out.1;
    if opts.baseline && baseline.is_none() {
        // External: the same plan again, straight to the primary, after the gateway's pass.
        eprintln!(
            "chaos: now the same traffic without Ballast, straight to {}",
            started.sims[sc.baseline]
        );
        reset_sim(&http, &started.sims[sc.baseline]).await?;
        let mut m2 = Monitor {
            samples: Vec::new(),
            incidents: BTreeMap::new(),
            known_before: Vec::new(),
        };
        let only_primary = started.sims[sc.baseline].clone();
        let (b, _) = run_pass(
            &http,
            &sc,
            &started,
            &key,
            &mut m2,
            shots,
            true,
            Some(only_primary),
        )
        .await?;
        baseline = Some(b);
    }
    for s in started.sims.iter().chain(started.baseline_sim.iter()) {
        let _ = set_faults(&http, s, &Map::new()).await;
    }
    for tx in started.stop.drain(..) {
        let _ = tx.send(());
    }
    for t in started.tasks.drain(..) {
        let _ = tokio::time::timeout(Duration::from_secs(10), t).await;
    }
    let primary_providers = sc.primary_providers();
    Ok(RunData {
        scenario: sc,
        quick: opts.quick,
        mode,
        gateway: gateway_outcomes,
        baseline,
        samples: monitor.samples,
        incidents: monitor.incidents.into_values().collect(),
        primary_providers,
    })
}

/// One pass of the plan. `baseline_only`: only the naive client runs, against `mirror` (the primary
/// itself, externally). Otherwise the gateway runs, with the naive client alongside against `mirror`
/// when there is one.
#[allow(clippy::too_many_arguments)]
async fn run_pass(
    http: &reqwest::Client,
    sc: &Scenario,
    started: &Started,
    key: &str,
    monitor: &mut Monitor,
    shots: Vec<super::load::Shot>,
    baseline_only: bool,
    mirror: Option<String>,
) -> Result<(Vec<Outcome>, Option<Vec<Outcome>>), String> {
    let run_secs = sc.run_duration();
    let start = Instant::now() + Duration::from_millis(100);
    let end = start + Duration::from_secs_f64(run_secs);
    let deadline = end + DRAIN;
    let (gtx, mut grx) = mpsc::unbounded_channel();
    let (btx, mut brx) = mpsc::unbounded_channel();
    let mut drivers = Vec::new();
    if !baseline_only {
        let client = Arc::new(GatewayClient {
            http: http.clone(),
            base: started.gateway.clone(),
            model: sc.traffic.route.clone(),
            max_tokens: sc.traffic.max_tokens,
            timeout: sc.traffic.client_timeout,
        });
        drivers.push(tokio::spawn(drive(
            client,
            shots.clone(),
            start,
            deadline,
            sc.traffic.max_in_flight,
            gtx,
        )));
    } else {
        drop(gtx);
    }
    if let Some(m) = &mirror {
        let naive = Arc::new(NaiveClient {
            http: http.clone(),
            base: m.clone(),
            max_tokens: sc.traffic.max_tokens,
            primary: sc.primary.clone(),
        });
        drivers.push(tokio::spawn(drive(
            naive,
            shots,
            start,
            deadline,
            sc.traffic.max_in_flight,
            btx,
        )));
    } else {
        drop(btx);
    }
    // The faults: on the gateway's simulators (and the mirror), or only on the primary.
    let fault_sims = if baseline_only {
        let mut v = vec![String::new(); sc.sims.len()];
        v[sc.baseline] = mirror.clone().unwrap_or_default();
        v
    } else {
        started.sims.clone()
    };
    let timeline = {
        let (http, sc, mirror) = (
            http.clone(),
            sc.clone(),
            if baseline_only { None } else { mirror.clone() },
        );
        tokio::spawn(play_faults(http, sc, fault_sims, mirror, start))
    };
    let monitored: Vec<String> = if baseline_only {
        Vec::new()
    } else {
        started.sims.clone()
    };
    let terminal = std::io::stderr().is_terminal();
    let mut gateway_done: Vec<Outcome> = Vec::new();
    let mut baseline_done: Vec<Outcome> = Vec::new();
    let mut tick = tokio::time::interval_at(start, MONITOR_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut last_print = -10.0;
    let mut last_phase = String::new();
    loop {
        tick.tick().await;
        let now = Instant::now();
        let t = now.saturating_duration_since(start).as_secs_f64();
        if !baseline_only {
            monitor
                .sample(http, &monitored, &started.gateway, key, t)
                .await;
        }
        while let Ok(o) = grx.try_recv() {
            gateway_done.push(o);
        }
        while let Ok(o) = brx.try_recv() {
            baseline_done.push(o);
        }
        let shown = if baseline_only {
            &baseline_done
        } else {
            &gateway_done
        };
        let line = progress(sc, t.min(run_secs), shown, monitor.open());
        let phase = sc
            .phases()
            .into_iter()
            .rev()
            .find(|p| p.start <= t)
            .map_or_else(String::new, |p| p.name);
        if terminal {
            eprint!("\r\x1b[2K{line}");
            let _ = std::io::stderr().flush();
        } else if t - last_print >= 5.0 || phase != last_phase {
            eprintln!("{line}");
            last_print = t;
        }
        last_phase = phase;
        if drivers.iter().all(tokio::task::JoinHandle::is_finished)
            || now >= deadline + Duration::from_secs(3)
        {
            break;
        }
    }
    if terminal {
        eprintln!();
    }
    for d in drivers {
        let _ = d.await;
    }
    while let Some(o) = grx.recv().await {
        gateway_done.push(o);
    }
    while let Some(o) = brx.recv().await {
        baseline_done.push(o);
    }
    if !baseline_only {
        let t = Instant::now()
            .saturating_duration_since(start)
            .as_secs_f64();
        monitor
            .sample(http, &monitored, &started.gateway, key, t)
            .await;
    }
    match timeline.await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => return Err(format!("cannot set faults: {e}")),
        Err(e) => return Err(format!("fault timeline failed: {e}")),
    }
    gateway_done.sort_by_key(|o| o.index);
    baseline_done.sort_by_key(|o| o.index);
    if baseline_only {
        Ok((baseline_done, None))
    } else {
        Ok((gateway_done, mirror.map(|_| baseline_done)))
    }
}
