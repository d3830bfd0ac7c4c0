#!/usr/bin/env python3
"""Summarize one bench/run.sh result directory: a table on stdout and summary.json beside the runs.

Each run file is `{api}-{mode}-{path}-r{round}.json` as written by `ballast-loadgen --out`. The paths of one
(api, mode) run back to back in each round, so they share that moment's background noise; the table
therefore compares within rounds and takes the median over rounds: each figure (p50, p99, rps) is the median
of the rounds' figures, and added latency is the median of the per-round differences (path minus direct in
the same round), so one noisy round cannot swing it. Percentiles of all rounds pooled are kept in
summary.json as `pooled`.

`translated` is Ballast serving the client from a provider of another format; its translation cost is the
median of the per-round differences from `ballast` (same client API, same format end to end) in latency and in
CPU per request, and, as a cross-check, from the `ballast` path of the client API that reaches the same provider
format (e.g. Responses -> Anthropic against Anthropic -> Anthropic).

`nosignal` is the same-format route on a second gateway started with the same configuration plus `[signal]
detectors = false` (optional: `BENCH_PATHS="... nosignal ..."`). The detectors' cost is the median of the
per-round differences `ballast - nosignal` in latency and CPU per request, with the ratios ballast/nosignal of
CPU per request and of added p50 (the goal: at most 1.05x).

Client APIs: `openai` (Chat Completions), `anthropic` (Messages), `responses` (OpenAI Responses), `gemini`
(generateContent). Their translated paths reach: openai -> Anthropic Messages, anthropic -> OpenAI Chat,
responses -> Anthropic Messages, gemini -> OpenAI Chat.
"""

import json
import math
import re
import statistics
import sys
from pathlib import Path

PATHS = ("direct", "nginx", "ballast", "nosignal", "translated")
PROXIES = ("nginx", "ballast", "nosignal", "translated")
API_ORDER = ("anthropic", "openai", "responses", "gemini")
# The provider API each client API's `ballast` path reaches (its own) and its `translated` path reaches, named by
# the client API whose same-format path reaches that provider API (responses and gemini have none other than
# their own).
OWN = {"openai": "openai", "anthropic": "anthropic", "responses": "responses", "gemini": "gemini"}
TRANSLATED_TO = {"openai": "anthropic", "anthropic": "openai", "responses": "anthropic", "gemini": "openai"}
# Issue 2's starting target, for the fixed-rate runs: Ballast's added latency over direct.
TARGET_ADDED_P50_US = 150
TARGET_ADDED_P99_US = 1000
# The detectors' goal: with every detector on, CPU per request and added p50 at most this many times their value
# with the detectors off (same-format path, fixed rate).
DETECTOR_GOAL_X = 1.05


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


def within_rounds(mine, base):
    """Per-round differences mine - base (rounds both have), for p50, p99 and CPU per request."""
    same = sorted(set(mine) & set(base))
    lat = lambda r, q: (r.get("latency_us") or {}).get(q)  # noqa: E731

    def cpu(r, key):
        return r.get(key)

    def fdiff(a, b):
        return round(a - b, 1) if a is not None and b is not None else None

    return {
        "p50": [d for d in (diff(lat(mine[i], "p50"), lat(base[i], "p50")) for i in same) if d is not None],
        "p99": [d for d in (diff(lat(mine[i], "p99"), lat(base[i], "p99")) for i in same) if d is not None],
        "proxy_cpu": [d for d in (fdiff(cpu(mine[i], "proxy_cpu_us_per_req"), cpu(base[i], "proxy_cpu_us_per_req"))
                                  for i in same) if d is not None],
        "upstream_cpu": [d for d in (fdiff(cpu(mine[i], "upstream_cpu_us_per_req"),
                                           cpu(base[i], "upstream_cpu_us_per_req")) for i in same) if d is not None],
    }


def round_ratios(mine, base, direct):
    """Per-round ratios mine / base (rounds both have) of CPU per request and of added p50 (each minus direct in
    the same round, when direct ran and both are positive). Their medians are steadier than ratios of medians when
    the machine's speed moves between rounds."""
    lat = lambda r: (r.get("latency_us") or {}).get("p50")  # noqa: E731
    same = sorted(set(mine) & set(base))
    cpu = [positive_ratio(mine[i].get("proxy_cpu_us_per_req"), base[i].get("proxy_cpu_us_per_req")) for i in same]
    added = []
    for i in (i for i in same if i in direct):
        m, b, d = lat(mine[i]), lat(base[i]), lat(direct[i])
        if None not in (m, b, d):
            added.append(positive_ratio(m - d, b - d))
    return {"proxy_cpu_x": [x for x in cpu if x is not None], "added_p50_x": [x for x in added if x is not None]}


def resilience(out_dir, groups):
    """Errors and signs of the gateway's resilience policies firing: client-visible errors, upstream requests
    beyond those sent (retries), upstream failures, breaker openings and retries in the admin snapshot taken
    after the load, and WARN/ERROR lines in Ballast's log."""
    out = {"errors": {}, "extra_upstream_requests": {}, "upstream_not_ok": {}, "sent": {}}
    for g in groups:
        for path, f in g["paths"].items():
            for key in ("errors", "extra_upstream_requests", "upstream_not_ok", "sent"):
                out[key][path] = out[key].get(path, 0) + (f.get(key) or 0)
    # The gateway's, and (with the nosignal path) the second gateway's, under keys suffixed `_nosignal`.
    for suffix in ("", "-nosignal"):
        key = suffix.replace("-", "_")
        admin = out_dir / f"admin-targets{suffix}.json"
        if admin.exists():
            try:
                snap = json.loads(admin.read_text())
                out["breakers" + key] = {
                    t["target"]: {"state": t["breaker"]["state"], "openings": t["breaker"]["openings"],
                                  "retries_in_window": t["retry_budget"]["retries_in_window"]}
                    for t in snap.get("targets", [])
                }
            except (ValueError, KeyError, TypeError):
                out["breakers" + key] = None
        log = out_dir / f"ballast{suffix}.log"
        if log.exists():
            bad = [line for line in log.read_text(errors="replace").splitlines()
                   if re.search(r"\b(WARN|ERROR)\b", line)]
            out["log_warnings" + key] = len(bad)
            out["log_warning_examples" + key] = bad[:3]
    return out


def main(out_dir: Path) -> None:
    meta = json.loads((out_dir / "meta.json").read_text())
    runs = {}
    for f in sorted(out_dir.glob("*-r*.json")):
        # `{api}-{mode}-{path}-r{n}`: not the profile runs (`profile-{api}-{path}.json`) written beside them.
        if not re.fullmatch(r"[a-z]+-[a-z]+-[a-z]+-r[0-9]+", f.stem):
            continue
        api, mode, path, _round = f.stem.split("-")
        run = json.loads(f.read_text())
        cpu_file = f.with_suffix(".cpu")
        # Every request sent is recorded (warmup or measured, errors included) unless abandoned in flight.
        sent = (run.get("count") or 0) + (run.get("warmup_requests") or 0)
        sent_all = sent + ((run.get("error_detail") or {}).get("abandoned") or 0)
        run["sent"] = sent_all
        if cpu_file.exists():
            cpu = json.loads(cpu_file.read_text())
            if sent:
                # CPU time of the processes over the whole run (warmup included), per request sent.
                run["upstream_cpu_us_per_req"] = round(cpu["upstream_cpu_ns"] / sent / 1000, 1)
                run["proxy_cpu_us_per_req"] = round(cpu["proxy_cpu_ns"] / sent / 1000, 1) if path != "direct" else None
            if "upstream_requests" in cpu:
                # Requests the simulator answered beyond those the client sent: retries (or hedges) by the proxy.
                run["upstream_requests"] = cpu["upstream_requests"]
                run["extra_upstream_requests"] = cpu["upstream_requests"] - sent_all
                run["upstream_not_ok"] = cpu["upstream_requests"] - cpu.get("upstream_ok", cpu["upstream_requests"])
        runs.setdefault((api, mode, path), []).append((int(_round[1:]), run))
    # Rounds in order, so the n-th run of every path is from the same round.
    rounds_of = {k: {n: r for n, r in v} for k, v in runs.items()}
    runs = {k: [r for _, r in sorted(v, key=lambda x: x[0])] for k, v in runs.items()}

    groups = []
    present = list(dict.fromkeys(k[0] for k in runs))
    for api in [a for a in API_ORDER if a in present] + [a for a in present if a not in API_ORDER]:
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
                    "sent": sum(r.get("sent", 0) for r in rs),
                    "errors": sum(r.get("errors", 0) for r in rs),
                    "extra_upstream_requests": sum(r.get("extra_upstream_requests", 0) for r in rs),
                    "upstream_not_ok": sum(r.get("upstream_not_ok", 0) for r in rs),
                    "per_round_proxy_cpu_us_per_req": [r.get("proxy_cpu_us_per_req") for r in rs],
                    "per_round_p50_us": [l.get("p50") for l in lat],
                    "per_round_p99_us": [l.get("p99") for l in lat],
                }
            d, n = figures.get("direct", {}), figures.get("nginx", {})
            comparison = {}
            for path in PROXIES:
                f = figures.get(path)
                if f is None:
                    continue
                per_round = within_rounds(rounds_of.get((api, mode, path), {}), rounds_of.get((api, mode, "direct"), {}))
                comparison[path] = {
                    "added_p50_us": median(per_round["p50"]),
                    "added_p99_us": median(per_round["p99"]),
                    "added_p50_us_per_round": per_round["p50"],
                    "added_p99_us_per_round": per_round["p99"],
                    "p50_x_direct": ratio(f.get("p50_us"), d.get("p50_us")),
                    "p99_x_direct": ratio(f.get("p99_us"), d.get("p99_us")),
                    "rps_x_direct": ratio(f.get("rps"), d.get("rps")),
                }
            for path in ("ballast", "nosignal", "translated"):
                f = figures.get(path)
                if f is None or not n:
                    continue
                comparison[f"{path}_vs_nginx"] = {
                    "p50_x": ratio(f.get("p50_us"), n.get("p50_us")),
                    "p99_x": ratio(f.get("p99_us"), n.get("p99_us")),
                    "rps_x": ratio(f.get("rps"), n.get("rps")),
                    "proxy_cpu_x": ratio(f.get("proxy_cpu_us_per_req"), n.get("proxy_cpu_us_per_req")),
                    "added_p50_x": positive_ratio(
                        comparison[path]["added_p50_us"], (comparison.get("nginx") or {}).get("added_p50_us")
                    ),
                }
            if "translated" in figures and "ballast" in figures:
                # Translation cost: the translated path minus the same-format Ballast path of the same client
                # API, within each round.
                t = within_rounds(rounds_of[(api, mode, "translated")], rounds_of[(api, mode, "ballast")])
                comparison["translation"] = {
                    "p50_us": median(t["p50"]),
                    "p99_us": median(t["p99"]),
                    "proxy_cpu_us_per_req": median(t["proxy_cpu"]),
                    "upstream_cpu_us_per_req": median(t["upstream_cpu"]),
                    "rps_x": ratio(figures["translated"].get("rps"), figures["ballast"].get("rps")),
                    "per_round": t,
                }
            if "ballast" in figures and "nosignal" in figures:
                # The detectors' cost: the same-format path with every detector fed minus the same path on the
                # gateway whose detectors are off, within each round.
                t = within_rounds(rounds_of[(api, mode, "ballast")], rounds_of[(api, mode, "nosignal")])
                rx = round_ratios(rounds_of[(api, mode, "ballast")], rounds_of[(api, mode, "nosignal")],
                                  rounds_of.get((api, mode, "direct"), {}))
                b_cpu, n_cpu = figures["ballast"].get("proxy_cpu_us_per_req"), figures["nosignal"].get("proxy_cpu_us_per_req")
                b_add = (comparison.get("ballast") or {}).get("added_p50_us")
                n_add = (comparison.get("nosignal") or {}).get("added_p50_us")
                cpu_x = positive_ratio(b_cpu, n_cpu)
                added_x = positive_ratio(b_add, n_add)
                # The goal is judged on the medians of the per-round ratios, and only with 3 rounds or more that
                # agree within the goal's own margin (their ratios span less than 2 x 5%); otherwise the run cannot
                # tell.
                cpu_rx, added_rx = median(rx["proxy_cpu_x"]), median(rx["added_p50_x"])
                spans = [max(v) - min(v) for v in rx.values() if len(v) >= 3]
                resolvable = len(spans) == 2 and max(spans) < 2 * (DETECTOR_GOAL_X - 1)
                comparison["detectors"] = {
                    "added_p50_us": median(t["p50"]),
                    "added_p99_us": median(t["p99"]),
                    "proxy_cpu_us_per_req": median(t["proxy_cpu"]),
                    # Ratios of the medians over rounds: CPU per request, and added p50 (over direct).
                    "proxy_cpu_x": cpu_x,
                    "added_p50_x": added_x,
                    # Medians of the per-round ratios (same round, same moment's machine speed).
                    "proxy_cpu_x_round_median": cpu_rx,
                    "added_p50_x_round_median": added_rx,
                    "per_round_x": rx,
                    "goal_x": DETECTOR_GOAL_X,
                    "goal_resolvable": resolvable,
                    # None when the rounds disagree too much to tell.
                    "within_goal": (cpu_rx <= DETECTOR_GOAL_X and added_rx <= DETECTOR_GOAL_X) if resolvable else None,
                    "rps_x": ratio(figures["ballast"].get("rps"), figures["nosignal"].get("rps")),
                    "per_round": t,
                }
            groups.append({"api": api, "mode": mode, "paths": figures, "comparison": comparison})

    # Cross-check: the translated path against the same-format path that reaches the same provider format
    # (e.g. OpenAI client -> Anthropic provider vs Anthropic client -> Anthropic provider), within each round.
    # This isolates the client-side format (parsing and rendering the other API) from the provider side.
    for g in groups:
        peer = TRANSLATED_TO.get(g["api"])
        if (g["api"], g["mode"], "translated") in rounds_of and (peer, g["mode"], "ballast") in rounds_of:
            t = within_rounds(rounds_of[(g["api"], g["mode"], "translated")], rounds_of[(peer, g["mode"], "ballast")])
            g["comparison"]["translation_vs_same_upstream"] = {
                "against": f"{peer} ballast",
                "p50_us": median(t["p50"]),
                "p99_us": median(t["p99"]),
                "proxy_cpu_us_per_req": median(t["proxy_cpu"]),
                "per_round": t,
            }

    health = resilience(out_dir, groups)

    route_of = {}
    for api in OWN:
        route_of[(api, "ballast")] = f"{api}->{OWN[api]}"
        route_of[(api, "translated")] = f"{api}->{TRANSLATED_TO[api]}"
        route_of[(api, "nosignal")] = f"{api}->{OWN[api]} (detectors off)"
    lines = [
        f"Ballast bench {meta['date']}  nproc={meta['nproc']}  {meta['placement']}",
        f"{meta['rounds']} interleaved round(s) of {meta['warmup_s']}s warmup + {meta['duration_s']}s per run; "
        "every figure is the median over rounds (added = median of per-round differences from direct); "
        "latency in microseconds, from the scheduled send time at a fixed rate;",
        "cpu:sim / cpu:proxy = CPU time (us) the simulator / the proxy spent per request (all threads, /proc schedstat);",
        "ballast = same format end to end; translated = the client's API served by a provider of another format "
        "(openai->anthropic, anthropic->openai, responses->anthropic, gemini->openai; openai = Chat Completions);",
        *(["nosignal = the ballast path on a second gateway with [signal] detectors = false "
           "(ballast-nosignal: the detectors' cost);"] if any(k[2] == "nosignal" for k in runs) else []),
        "err = requests that failed at the client; retry = upstream requests beyond those sent (retries by the proxy)",
        "",
        f"{'api':<10}{'load':<15}{'path':<12}{'p50':>7}{'p99':>8}{'p99.9':>8}{'+p50':>7}{'+p99':>8}"
        f"{'rps':>9}{'p50/dir':>9}{'p99/dir':>9}{'rps/dir':>9}{'cpu:sim':>9}{'cpu:proxy':>10}{'err':>6}{'retry':>6}",
    ]
    cell = lambda v, w, fmt="{:.0f}": (fmt.format(v) if v is not None else "-").rjust(w)  # noqa: E731
    for g in groups:
        load = f"rate {meta['rate']}/s" if g["mode"] == "rate" else f"conc {meta['concurrency']}"
        for path in PATHS:
            f = g["paths"].get(path)
            if f is None:
                continue
            c = g["comparison"].get(path, {})
            lines.append(
                f"{g['api']:<10}{load:<15}{path:<12}{cell(f['p50_us'], 7)}{cell(f['p99_us'], 8)}"
                f"{cell(f['p99_9_us'], 8)}{cell(c.get('added_p50_us'), 7, '{:+.0f}')}"
                f"{cell(c.get('added_p99_us'), 8, '{:+.0f}')}{cell(f['rps'], 9)}"
                f"{cell(c.get('p50_x_direct'), 9, '{:.2f}')}{cell(c.get('p99_x_direct'), 9, '{:.2f}')}"
                f"{cell(c.get('rps_x_direct'), 9, '{:.2f}')}{cell(f['upstream_cpu_us_per_req'], 9, '{:.1f}')}"
                f"{cell(f['proxy_cpu_us_per_req'], 10, '{:.1f}')}{cell(f['errors'], 6)}"
                f"{cell(f['extra_upstream_requests'] if path != 'direct' else None, 6)}"
            )
        for path in ("ballast", "nosignal", "translated"):
            v = g["comparison"].get(f"{path}_vs_nginx")
            if v:
                lines.append(
                    f"{'':<25}{path + '/nginx:':<20}p50 {v['p50_x']}x  p99 {v['p99_x']}x  rps {v['rps_x']}x  "
                    f"added p50 {cell(v['added_p50_x'], 0, '{}x')}  proxy CPU/req {v['proxy_cpu_x']}x"
                )
        t = g["comparison"].get("translation")
        if t:
            lines.append(
                f"{'':<25}{'translated-ballast:':<20}p50 {cell(t['p50_us'], 0, '{:+.0f}')} us  "
                f"p99 {cell(t['p99_us'], 0, '{:+.0f}')} us  proxy CPU {cell(t['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req  "
                f"sim CPU {cell(t['upstream_cpu_us_per_req'], 0, '{:+.1f}')} us/req  rps {t['rps_x']}x"
            )
        det = g["comparison"].get("detectors")
        if det:
            lines.append(
                f"{'':<25}{'ballast-nosignal:':<20}p50 {cell(det['added_p50_us'], 0, '{:+.0f}')} us  "
                f"p99 {cell(det['added_p99_us'], 0, '{:+.0f}')} us  "
                f"proxy CPU {cell(det['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req  "
                f"CPU/req {cell(det['proxy_cpu_x'], 0, '{:.2f}')}x  added p50 {cell(det['added_p50_x'], 0, '{:.2f}')}x  "
                f"rps {det['rps_x']}x"
            )
        x = g["comparison"].get("translation_vs_same_upstream")
        if x:
            lines.append(
                f"{'':<25}{'translated-peer:':<20}"
                f"p50 {cell(x['p50_us'], 0, '{:+.0f}')} us  p99 {cell(x['p99_us'], 0, '{:+.0f}')} us  "
                f"proxy CPU {cell(x['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req  "
                f"(peer: {route_of[(x['against'].split()[0], 'ballast')]}, same provider API)"
            )
    lines.append("")
    verdicts = []
    for g in groups:
        if g["mode"] != "rate":
            continue
        direct_p99 = [v for v in g["paths"].get("direct", {}).get("per_round_p99_us", []) if v is not None]
        spread = max(direct_p99) - min(direct_p99) if len(direct_p99) > 1 else 0
        resolvable = spread < TARGET_ADDED_P99_US
        for path in ("ballast", "translated"):
            c = g["comparison"].get(path)
            if not c or c["added_p50_us"] is None or c["added_p99_us"] is None:
                continue
            a50, a99 = c["added_p50_us"], c["added_p99_us"]
            ok = a50 < TARGET_ADDED_P50_US and (a99 < TARGET_ADDED_P99_US or not resolvable)
            verdicts.append(ok)
            p99_note = (
                "" if resolvable else
                f" [p99 not resolvable here: direct p99 ranged {min(direct_p99)}-{max(direct_p99)} us across rounds]"
            )
            lines.append(
                f"{route_of[(g['api'], path)]}: Ballast adds {a50:+.0f} us at p50 (target < {TARGET_ADDED_P50_US}) "
                f"and {a99:+.0f} us at p99 (target < {TARGET_ADDED_P99_US}) at {meta['rate']} req/s: "
                f"{'within target' if ok else 'OVER TARGET'}{p99_note}"
            )
    for g in groups:
        t = g["comparison"].get("translation")
        x = g["comparison"].get("translation_vs_same_upstream")
        load = f"{meta['rate']} req/s" if g["mode"] == "rate" else f"concurrency {meta['concurrency']}"
        if t:
            lines.append(
                f"translation cost, {route_of[(g['api'], 'translated')]} minus {route_of[(g['api'], 'ballast')]} at {load}: "
                f"p50 {cell(t['p50_us'], 0, '{:+.0f}')} us (rounds {t['per_round']['p50']}), "
                f"p99 {cell(t['p99_us'], 0, '{:+.0f}')} us, "
                f"Ballast CPU {cell(t['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req (rounds {t['per_round']['proxy_cpu']})"
                + (f"; vs {x['against']} (same provider format): p50 {cell(x['p50_us'], 0, '{:+.0f}')} us, "
                   f"CPU {cell(x['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req" if x else "")
            )
        elif x:
            peer = x["against"].split()[0]
            lines.append(
                f"translation cost, {route_of[(g['api'], 'translated')]} minus {route_of[(peer, 'ballast')]} "
                f"(same provider format, other client API) at {load}: "
                f"p50 {cell(x['p50_us'], 0, '{:+.0f}')} us (rounds {x['per_round']['p50']}), "
                f"p99 {cell(x['p99_us'], 0, '{:+.0f}')} us, "
                f"Ballast CPU {cell(x['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req (rounds {x['per_round']['proxy_cpu']})"
            )
    for g in groups:
        det = g["comparison"].get("detectors")
        if not det:
            continue
        load = f"{meta['rate']} req/s" if g["mode"] == "rate" else f"concurrency {meta['concurrency']}"
        b, n = g["paths"]["ballast"], g["paths"]["nosignal"]
        cb, cn = g["comparison"].get("ballast") or {}, g["comparison"].get("nosignal") or {}
        goal = f"; goal <= {DETECTOR_GOAL_X}x: " + (
            ("met" if det["within_goal"] else "NOT met") + " (on the per-round ratios)" if det["goal_resolvable"] else
            f"not resolvable in this run (fewer than 3 rounds, or per-round ratios spread over more than "
            f"+-{DETECTOR_GOAL_X - 1:.0%})"
        )
        lines.append(
            f"detector cost, {route_of[(g['api'], 'ballast')]} minus the same with detectors off at {load}: "
            f"added p50 {cell(det['added_p50_us'], 0, '{:+.0f}')} us (rounds {det['per_round']['p50']}; "
            f"{cell(cb.get('added_p50_us'), 0, '{:+.0f}')} vs {cell(cn.get('added_p50_us'), 0, '{:+.0f}')} us over direct: "
            f"{cell(det['added_p50_x'], 0, '{:.2f}')}x), "
            f"Ballast CPU {cell(det['proxy_cpu_us_per_req'], 0, '{:+.1f}')} us/req (rounds {det['per_round']['proxy_cpu']}; "
            f"{cell(b.get('proxy_cpu_us_per_req'), 0, '{:.1f}')} vs {cell(n.get('proxy_cpu_us_per_req'), 0, '{:.1f}')} "
            f"us/req: {cell(det['proxy_cpu_x'], 0, '{:.2f}')}x), p99 {cell(det['added_p99_us'], 0, '{:+.0f}')} us; "
            f"median of per-round ratios: CPU/req {cell(det['proxy_cpu_x_round_median'], 0, '{:.2f}')}x "
            f"(rounds {det['per_round_x']['proxy_cpu_x']}), added p50 {cell(det['added_p50_x_round_median'], 0, '{:.2f}')}x "
            f"(rounds {det['per_round_x']['added_p50_x']}){goal}"
        )
    lines.append("")
    sent, errs, extra, notok = (health[k] for k in ("sent", "errors", "extra_upstream_requests", "upstream_not_ok"))
    lines.append(
        "errors (all runs, warmup included in sent): "
        + ", ".join(f"{p} {errs.get(p, 0)}/{sent.get(p, 0)}" for p in PATHS if p in sent)
        + "; upstream requests beyond those sent: "
        + ", ".join(f"{p} {extra.get(p, 0)}" for p in PROXIES if p in extra)
        + "; upstream non-ok: " + ", ".join(f"{p} {notok.get(p, 0)}" for p in PATHS if p in notok)
    )
    for key, name in (("", "gateway"), ("_nosignal", "gateway with detectors off")):
        if health.get("breakers" + key) is not None or "log_warnings" + key in health:
            b = health.get("breakers" + key) or {}
            lines.append(
                f"{name} after the load: "
                + ", ".join(f"{t} breaker {v['state']} ({v['openings']} openings, {v['retries_in_window']} retries in window)"
                            for t, v in b.items())
                + f"; WARN/ERROR log lines: {health.get('log_warnings' + key, '-')}"
            )
    print("\n".join(lines))

    summary = {"meta": meta, "groups": groups, "resilience": health, "table": lines,
               "within_target": all(verdicts) if verdicts else None}
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: summarize.py RESULT_DIR")
    main(Path(sys.argv[1]))
