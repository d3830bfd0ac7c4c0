//! The SVG timeline chart: success rate, p99 latency (log scale) and upstream attempts per request
//! over the run, with Ballast and without it, fault windows shaded and incidents marked.

use std::fmt::Write;

use super::report::{Bucket, Column, RunData, secs};

const W: f64 = 960.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 30.0;
const TOP: f64 = 70.0;
const PANEL: f64 = 170.0;
const GAP: f64 = 40.0;
const BALLAST: &str = "#1f77b4";
const BASELINE: &str = "#d62728";

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the chart.
pub fn render(run: &RunData, buckets: &[Bucket]) -> String {
    let sc = &run.scenario;
    let duration = sc.run_duration().max(1e-3);
    let plot_w = W - LEFT - RIGHT;
    let h = TOP + 3.0 * PANEL + 2.0 * GAP + 60.0;
    let x = |t: f64| LEFT + plot_w * (t / duration).clamp(0.0, 1.0);
    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{h}" viewBox="0 0 {W} {h}" font-family="sans-serif" font-size="12">
<title>ballast chaos: {name}</title>
<rect class="background" x="0" y="0" width="{W}" height="{h}" fill="#ffffff"/>
<text x="{LEFT}" y="24" font-size="16" font-weight="bold">{name}: with Ballast vs without</text>
<text x="{LEFT}" y="44" fill="#555">{desc}</text>"##,
        name = esc(&sc.name),
        desc = esc(&format!(
            "{:.1} s of load at {} req/s, time compressed x{}; result: {}",
            duration,
            sc.traffic.rate,
            sc.compression,
            if run.passed() { "PASS" } else { "FAIL" }
        )),
    );
    // Legend.
    let lx = W - RIGHT - 330.0;
    let _ = write!(
        s,
        r##"<g class="legend"><line x1="{lx}" y1="40" x2="{a}" y2="40" stroke="{BALLAST}" stroke-width="2.5"/><text x="{b}" y="44">with Ballast</text>"##,
        a = lx + 24.0,
        b = lx + 30.0
    );
    if run.baseline.is_some() {
        let _ = write!(
            s,
            r##"<line x1="{a}" y1="40" x2="{b}" y2="40" stroke="{BASELINE}" stroke-width="2.5" stroke-dasharray="6 3"/><text x="{c}" y="44">without Ballast</text>"##,
            a = lx + 115.0,
            b = lx + 139.0,
            c = lx + 145.0
        );
    }
    let _ = writeln!(
        s,
        r##"<rect x="{a}" y="33" width="14" height="14" fill="#f4a582" fill-opacity="0.45"/><text x="{b}" y="44">fault</text></g>"##,
        a = lx + 255.0,
        b = lx + 273.0
    );

    type Get = fn(&Column) -> Option<f64>;
    let panels: [(&str, Get, bool); 3] = [
        ("success rate", |c| c.success_rate, false),
        ("p99 latency", |c| c.p99, true),
        (
            "upstream attempts / request",
            |c| c.attempts_per_request,
            false,
        ),
    ];
    let max_attempts = buckets
        .iter()
        .flat_map(|b| {
            [
                b.gateway.attempts_per_request,
                b.baseline.as_ref().and_then(|c| c.attempts_per_request),
            ]
        })
        .flatten()
        .fold(2.0_f64, f64::max)
        .ceil();
    let max_latency = buckets
        .iter()
        .flat_map(|b| [b.gateway.p99, b.baseline.as_ref().and_then(|c| c.p99)])
        .flatten()
        .fold(1.0_f64, f64::max);
    let lat_top = 10f64.powf(max_latency.log10().ceil());
    let lat_bottom = 0.01;
    for (pi, (title, get, log)) in panels.iter().enumerate() {
        let y0 = TOP + pi as f64 * (PANEL + GAP);
        let y1 = y0 + PANEL;
        let (lo, hi) = match pi {
            0 => (0.0, 1.0),
            1 => (lat_bottom, lat_top),
            _ => (0.0, max_attempts),
        };
        let y = |v: f64| {
            let f = if *log {
                (v.max(lo).log10() - lo.log10()) / (hi.log10() - lo.log10())
            } else {
                (v - lo) / (hi - lo)
            };
            y1 - PANEL * f.clamp(0.0, 1.0)
        };
        let _ = writeln!(
            s,
            r##"<g class="panel" data-metric="{title}"><rect x="{LEFT}" y="{y0}" width="{plot_w}" height="{PANEL}" fill="#fafafa" stroke="#999"/>
<text x="{LEFT}" y="{ty}" font-weight="bold">{title}</text>"##,
            ty = y0 - 8.0
        );
        // Fault windows.
        for (a, b, sim, name) in sc.fault_spans() {
            let _ = writeln!(
                s,
                r##"<rect class="fault-window" x="{x0:.1}" y="{y0}" width="{w:.1}" height="{PANEL}" fill="#f4a582" fill-opacity="0.45"><title>{label}</title></rect>"##,
                x0 = x(a),
                w = (x(b) - x(a)).max(1.0),
                label = esc(&format!("{sim}: {name} ({a:.1}s-{b:.1}s)")),
            );
        }
        // Y ticks.
        let ticks: Vec<(f64, String)> = match pi {
            0 => [0.0, 0.25, 0.5, 0.75, 1.0]
                .iter()
                .map(|v| (*v, format!("{:.0}%", v * 100.0)))
                .collect(),
            1 => {
                let mut v = lat_bottom;
                let mut out = Vec::new();
                while v <= lat_top * 1.0001 {
                    out.push((v, secs(Some(v))));
                    v *= 10.0;
                }
                out
            }
            _ => (0..=max_attempts as u32)
                .step_by((max_attempts as usize / 5).max(1))
                .map(|v| (f64::from(v), v.to_string()))
                .collect(),
        };
        for (v, label) in ticks {
            let yy = y(v);
            let _ = writeln!(
                s,
                r##"<line x1="{LEFT}" y1="{yy:.1}" x2="{x2}" y2="{yy:.1}" stroke="#ddd"/><text x="{tx}" y="{ly:.1}" text-anchor="end" fill="#444">{label}</text>"##,
                x2 = LEFT + plot_w,
                tx = LEFT - 6.0,
                ly = yy + 4.0
            );
        }
        // Series.
        let series = |pick: &dyn Fn(&Bucket) -> Option<f64>| -> Vec<String> {
            // Consecutive buckets with data make one polyline each.
            let mut lines = Vec::new();
            let mut cur = Vec::new();
            for b in buckets {
                match pick(b) {
                    Some(v) => cur.push(format!("{:.1},{:.1}", x((b.start + b.end) / 2.0), y(v))),
                    None => {
                        if !cur.is_empty() {
                            lines.push(cur.join(" "));
                            cur.clear();
                        }
                    }
                }
            }
            if !cur.is_empty() {
                lines.push(cur.join(" "));
            }
            lines
        };
        if run.baseline.is_some() {
            for pts in series(&|b| b.baseline.as_ref().and_then(get)) {
                let _ = writeln!(
                    s,
                    r##"<polyline class="series without-ballast" points="{pts}" fill="none" stroke="{BASELINE}" stroke-width="2" stroke-dasharray="6 3"/>"##
                );
            }
        }
        for pts in series(&|b| get(&b.gateway)) {
            let _ = writeln!(
                s,
                r##"<polyline class="series with-ballast" points="{pts}" fill="none" stroke="{BALLAST}" stroke-width="2.5"/>"##
            );
        }
        // Incidents.
        for i in &run.incidents {
            let ix = x(i.opened);
            let _ = writeln!(
                s,
                r##"<line class="incident" x1="{ix:.1}" y1="{y0}" x2="{ix:.1}" y2="{y1}" stroke="#6a3d9a" stroke-width="1.5" stroke-dasharray="3 3"><title>{label}</title></line>"##,
                label = esc(&format!(
                    "incident #{} {} {} at {:.1}s",
                    i.id, i.target, i.signal, i.opened
                ))
            );
            if pi == 0 {
                let _ = writeln!(
                    s,
                    r##"<text class="incident-label" x="{tx:.1}" y="{ty}" fill="#6a3d9a" font-size="10">{label}</text>"##,
                    tx = ix + 3.0,
                    ty = y0 + 12.0,
                    label = esc(&format!("{} {}", i.signal, i.target))
                );
            }
        }
        s.push_str("</g>\n");
    }
    // X axis under the last panel.
    let base = TOP + 3.0 * PANEL + 2.0 * GAP;
    let step = nice_step(duration / 8.0);
    let mut t = 0.0;
    while t <= duration + 1e-9 {
        let _ = writeln!(
            s,
            r##"<text x="{tx:.1}" y="{ty}" text-anchor="middle" fill="#444">{t:.0}s</text>"##,
            tx = x(t),
            ty = base + 18.0
        );
        t += step;
    }
    let _ = writeln!(
        s,
        r##"<text x="{cx}" y="{ty}" text-anchor="middle" fill="#444">run time (the event's time compressed x{c})</text>
</svg>"##,
        cx = LEFT + plot_w / 2.0,
        ty = base + 40.0,
        c = sc.compression
    );
    s
}

fn nice_step(raw: f64) -> f64 {
    let mag = 10f64.powf(raw.max(1e-3).log10().floor());
    for m in [1.0, 2.0, 5.0, 10.0] {
        if raw <= m * mag {
            return m * mag;
        }
    }
    10.0 * mag
}
