#!/usr/bin/env python3
"""Summarize one bench/run.sh result directory: a table on stdout and summary.json beside the runs.

Each run file is `{api}-{mode}-{path}-r{round}.json` as written by `ballast-loadgen --out`. The three paths of
one (api, mode) run back to back in each round, so they share that moment's background noise; the table
therefore compares within rounds and takes the median over rounds: each figure (p50, p99, rps) is the median
of the rounds' figures, and added latency is the median of the per-round differences (path minus direct in
the same round), so one noisy round cannot swing it. Percentiles of all rounds pooled are kept in
summary.json as `pooled`.
"""

import json
import math
import statistics
import sys
from pathlib import Path

PATHS = ("direct", "nginx", "ballast")
# Issue 2's starting target, for the fixed-rate runs: Ballast's added latency over direct.
TARGET_ADDED_P50_US = 150
TARGET_ADDED_P99_US = 1000


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def ratio(a, b):
    return round(a / b, 2) if a is not None and b else None


def positive_ratio(a, b):
    return ratio(a, b) if a is not None and b is not None and a > 0 and b > 0 else None


def pooled_quantiles(runs):
    """p50/p90/p99/p99.9 of the runs' latency histograms merged (HdrHistogram's rule: the value with at
    least ceil(q * total) values at or below it)."""
    counts = {}
    for r in runs:
        for value, count in r.get("latency_us_buckets") or []:
            counts[value] = counts.get(value, 0) + count
    total = sum(counts.values())
    out = {}
    for name, q in (("p50_us", 0.5), ("p90_us", 0.9), ("p99_us", 0.99), ("p99_9_us", 0.999)):
        if not total:
            out[name] = None
            continue
        want, seen = max(1, math.ceil(q * total)), 0
        for value in sorted(counts):
            seen += counts[value]
            if seen >= want:
                out[name] = value
                break
    return out


def diff(a, b):
    return round(a - b) if a is not None and b is not None else None


def main(out_dir: Path) -> None:
    meta = json.loads((out_dir / "meta.json").read_text())
    runs = {}
    for f in sorted(out_dir.glob("*-r*.json")):
        api, mode, path, _round = f.stem.split("-")
        run = json.loads(f.read_text())
        cpu_file = f.with_suffix(".cpu")
        if cpu_file.exists():
            cpu = json.loads(cpu_file.read_text())
            sent = (run.get("count") or 0) + (run.get("warmup_requests") or 0)
            if sent:
                # CPU time of the processes over the whole run (warmup included), per request sent.
                run["upstream_cpu_us_per_req"] = round(cpu["upstream_cpu_ns"] / sent / 1000, 1)
                run["proxy_cpu_us_per_req"] = round(cpu["proxy_cpu_ns"] / sent / 1000, 1) if path != "direct" else None
        runs.setdefault((api, mode, path), []).append((int(_round[1:]), run))
    # Rounds in order, so the n-th run of every path is from the same round.
    rounds_of = {k: {n: r for n, r in v} for k, v in runs.items()}
    runs = {k: [r for _, r in sorted(v, key=lambda x: x[0])] for k, v in runs.items()}

    groups = []
    for api in dict.fromkeys(k[0] for k in runs):
        for mode in ("rate", "concurrency"):
            figures = {}
            for path in PATHS:
                rs = runs.get((api, mode, path), [])
                if not rs:
                    continue
                lat = [r.get("latency_us") or {} for r in rs]
                figures[path] = {
                    "rounds": len(rs),
                    "p50_us": median([l.get("p50") for l in lat]),
                    "p90_us": median([l.get("p90") for l in lat]),
                    "p99_us": median([l.get("p99") for l in lat]),
                    "p99_9_us": median([l.get("p99_9") for l in lat]),
                    "max_us": max((l.get("max") or 0) for l in lat),
                    "pooled": pooled_quantiles(rs),
                    "rps": median([r.get("rps") for r in rs]),
                    "upstream_cpu_us_per_req": median([r.get("upstream_cpu_us_per_req") for r in rs]),
                    "proxy_cpu_us_per_req": median([r.get("proxy_cpu_us_per_req") for r in rs]),
                    "count": sum(r.get("count", 0) for r in rs),
                    "errors": sum(r.get("errors", 0) for r in rs),
                    "per_round_p50_us": [l.get("p50") for l in lat],
                    "per_round_p99_us": [l.get("p99") for l in lat],
                }
            d, n, b = (figures.get(p, {}) for p in PATHS)
            comparison = {}
            for path, f in (("nginx", n), ("ballast", b)):
                mine, direct = rounds_of.get((api, mode, path), {}), rounds_of.get((api, mode, "direct"), {})
                same = sorted(set(mine) & set(direct))

                def added(q):
                    return median(
                        [diff((mine[i].get("latency_us") or {}).get(q), (direct[i].get("latency_us") or {}).get(q))
                         for i in same]
                    )

                comparison[path] = {
                    "added_p50_us": added("p50"),
                    "added_p99_us": added("p99"),
                    "added_p50_us_per_round": [diff(mine[i]["latency_us"]["p50"], direct[i]["latency_us"]["p50"])
                                               for i in same if mine[i].get("latency_us") and direct[i].get("latency_us")],
                    "added_p99_us_per_round": [diff(mine[i]["latency_us"]["p99"], direct[i]["latency_us"]["p99"])
                                               for i in same if mine[i].get("latency_us") and direct[i].get("latency_us")],
                    "p50_x_direct": ratio(f.get("p50_us"), d.get("p50_us")),
                    "p99_x_direct": ratio(f.get("p99_us"), d.get("p99_us")),
                    "rps_x_direct": ratio(f.get("rps"), d.get("rps")),
                }
            comparison["ballast_vs_nginx"] = {
                "p50_x": ratio(b.get("p50_us"), n.get("p50_us")),
                "p99_x": ratio(b.get("p99_us"), n.get("p99_us")),
                "rps_x": ratio(b.get("rps"), n.get("rps")),
                "proxy_cpu_x": ratio(b.get("proxy_cpu_us_per_req"), n.get("proxy_cpu_us_per_req")),
                "added_p50_x": positive_ratio(
                    comparison["ballast"]["added_p50_us"], comparison["nginx"]["added_p50_us"]
                ),
            }
            groups.append({"api": api, "mode": mode, "paths": figures, "comparison": comparison})

    lines = [
        f"Ballast bench {meta['date']}  nproc={meta['nproc']}  {meta['placement']}",
        f"{meta['rounds']} interleaved round(s) of {meta['warmup_s']}s warmup + {meta['duration_s']}s per run; "
        "every figure is the median over rounds (added = median of per-round differences from direct); "
        "latency in microseconds, from the scheduled send time at a fixed rate;",
        "cpu:sim / cpu:proxy = CPU time (us) the simulator / the proxy spent per request (all threads, /proc schedstat)",
        "",
        f"{'api':<10}{'load':<15}{'path':<9}{'p50':>7}{'p99':>8}{'p99.9':>8}{'+p50':>7}{'+p99':>8}"
        f"{'rps':>9}{'p50/dir':>9}{'p99/dir':>9}{'rps/dir':>9}{'cpu:sim':>9}{'cpu:proxy':>10}{'err':>6}",
    ]
    for g in groups:
        load = f"rate {meta['rate']}/s" if g["mode"] == "rate" else f"conc {meta['concurrency']}"
        for path in PATHS:
            f = g["paths"].get(path)
            if f is None:
                continue
            c = g["comparison"].get(path, {})
            cell = lambda v, w, fmt="{:.0f}": (fmt.format(v) if v is not None else "-").rjust(w)  # noqa: E731
            lines.append(
                f"{g['api']:<10}{load:<15}{path:<9}{cell(f['p50_us'], 7)}{cell(f['p99_us'], 8)}"
                f"{cell(f['p99_9_us'], 8)}{cell(c.get('added_p50_us'), 7, '{:+.0f}')}"
                f"{cell(c.get('added_p99_us'), 8, '{:+.0f}')}{cell(f['rps'], 9)}"
                f"{cell(c.get('p50_x_direct'), 9, '{:.2f}')}{cell(c.get('p99_x_direct'), 9, '{:.2f}')}"
                f"{cell(c.get('rps_x_direct'), 9, '{:.2f}')}{cell(f['upstream_cpu_us_per_req'], 9, '{:.1f}')}"
                f"{cell(f['proxy_cpu_us_per_req'], 10, '{:.1f}')}{cell(f['errors'], 6)}"
            )
        v = g["comparison"]["ballast_vs_nginx"]
        lines.append(
            f"{'':<25}ballast/nginx: p50 {v['p50_x']}x  p99 {v['p99_x']}x  rps {v['rps_x']}x  "
            f"added p50 {v['added_p50_x']}x  proxy CPU/req {v['proxy_cpu_x']}x"
        )
    lines.append("")
    verdicts = []
    for g in groups:
        if g["mode"] != "rate":
            continue
        c = g["comparison"]["ballast"]
        a50, a99 = c["added_p50_us"], c["added_p99_us"]
        if a50 is None or a99 is None:
            continue
        direct_p99 = [v for v in g["paths"].get("direct", {}).get("per_round_p99_us", []) if v is not None]
        spread = max(direct_p99) - min(direct_p99) if len(direct_p99) > 1 else 0
        resolvable = spread < TARGET_ADDED_P99_US
        ok = a50 < TARGET_ADDED_P50_US and (a99 < TARGET_ADDED_P99_US or not resolvable)
        verdicts.append(ok)
        p99_note = (
            "" if resolvable else
            f" [p99 not resolvable here: direct p99 ranged {min(direct_p99)}-{max(direct_p99)} us across rounds]"
        )
        lines.append(
            f"{g['api']}: Ballast adds {a50:+.0f} us at p50 (target < {TARGET_ADDED_P50_US}) and {a99:+.0f} us at p99 "
            f"(target < {TARGET_ADDED_P99_US}) at {meta['rate']} req/s: "
            f"{'within target' if ok else 'OVER TARGET'}{p99_note}"
        )
    print("\n".join(lines))

    summary = {"meta": meta, "groups": groups, "table": lines, "within_target": all(verdicts) if verdicts else None}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULT_DIR")
    main(Path(sys.argv[1]))
