//! `ballast chaos`: replay a real outage against a gateway and its providers under open-loop load,
//! and report whether the application survived, how fast trouble was detected, what it cost, and
//! what the same application would have seen without Ballast.
//!
//! `scenario` (model and validation), `builtin` (the built-in outages), `load` (plan, one exchange,
//! the open-loop driver), `baseline` (the naive client), `runner` (simulators, gateway, fault
//! timeline, monitoring), `report` (figures, criteria, table, JSON), `chart` (the SVG timeline).

mod baseline;
mod builtin;
mod chart;
mod load;
mod report;
mod runner;
mod scenario;

use std::path::Path;

use crate::cli::{ChaosArgs, ChaosCommand, ChaosRunArgs};
use scenario::Scenario;

pub async fn run(args: ChaosArgs) -> Result<(), String> {
    match args.command {
        ChaosCommand::List => {
            for name in builtin::names() {
                let sc = load(name)?;
                println!("{name:<24} {:>6.0}s  {}", sc.run_duration(), sc.description);
            }
            Ok(())
        }
        ChaosCommand::Check { scenario } => {
            let sc = load(&scenario)?;
            println!(
                "{scenario}: OK ({} phases over {:.1} s of load at {} req/s)",
                sc.phases().len(),
                sc.run_duration(),
                sc.traffic.rate
            );
            for p in sc.phases() {
                println!("  {:>7.1}s - {:>7.1}s  {}", p.start, p.end, p.name);
            }
            Ok(())
        }
        ChaosCommand::Run(a) => run_scenario(a).await,
    }
}

/// A built-in name or a scenario file.
fn load(name: &str) -> Result<Scenario, String> {
    let (text, label) = match builtin::text(name) {
        Some(t) => (t, format!("built-in scenario {name}")),
        None => {
            let path = Path::new(name);
            let t = std::fs::read_to_string(path).map_err(|e| {
                let known: Vec<&str> = builtin::names().collect();
                format!(
                    "{name}: not a built-in scenario ({}) nor a readable file: {e}",
                    known.join(", ")
                )
            })?;
            (t, name.to_owned())
        }
    };
    Scenario::from_toml(&text).map_err(|e| format!("{label} is invalid:\n{e}"))
}

async fn run_scenario(a: ChaosRunArgs) -> Result<(), String> {
    let mut sc = load(&a.scenario)?.adjusted(a.quick, a.compression);
    if let Some(r) = a.rate {
        if !(r > 0.0 && r <= 2000.0) {
            return Err("--rate: requests a second, more than 0 and at most 2000".into());
        }
        sc.traffic.rate = r;
    }
    let external = match (&a.gateway, a.sim.is_empty()) {
        (Some(g), _) => {
            let mut sims = Vec::new();
            for s in &a.sim {
                let (n, u) = s
                    .split_once('=')
                    .ok_or_else(|| format!("--sim {s:?}: expected NAME=URL"))?;
                sims.push((n.to_owned(), u.to_owned()));
            }
            Some(runner::External {
                gateway: g.clone(),
                sims,
                admin_key: a.admin_key.clone(),
            })
        }
        (None, false) => {
            return Err("--sim needs --gateway (the gateway in front of those simulators)".into());
        }
        (None, true) => None,
    };
    eprintln!(
        "chaos: {} — {:.1} s of load at {} req/s (time compressed x{}){}",
        sc.name,
        sc.run_duration(),
        sc.traffic.rate,
        sc.compression,
        if a.no_baseline {
            ""
        } else {
            ", with a naive client straight to the primary alongside"
        }
    );
    let data = runner::run(
        sc,
        runner::RunOptions {
            quick: a.quick,
            baseline: !a.no_baseline,
            external,
        },
    )
    .await?;
    print!("{}", data.table());
    let (buckets, width) = data.buckets(60);
    if let Some(path) = &a.json {
        let doc = data.json(&buckets, width);
        let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
        std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("report: {}", path.display());
    }
    if let Some(path) = &a.chart {
        std::fs::write(path, chart::render(&data, &buckets))
            .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
        println!("chart: {}", path.display());
    }
    if data.passed() {
        Ok(())
    } else {
        let failed: Vec<String> = data
            .criteria()
            .into_iter()
            .filter(|c| !c.pass)
            .map(|c| c.name)
            .collect();
        Err(format!(
            "scenario {} failed its pass criteria: {}",
            data.scenario.name,
            failed.join(", ")
        ))
    }
}
