#!/usr/bin/env python3
"""Condense `perf report --no-children -n --sort dso,sym` outputs (as written by `BENCH_PROFILE=S bench/run.sh`)
into: Ballast's CPU samples by DSO (kernel, libc, the ballast binary), the ballast binary's self time by crate
(the first non-std crate named in the symbol, so `drop_in_place<ballast_core::X>` counts as ballast_core), its
top symbols, and the top symbols of Ballast's own crates (`ballast_*`), with the translation code
(`ballast_core::translate`) totalled.

Figures are shares of Ballast's samples and, with --us-per-sample (1e6 / sampling frequency / requests sent while
sampling), CPU microseconds per request, which compare across paths.

Self time only: the release build has no frame pointers, so call chains are partial; inlined code is charged to
the function it was inlined into (serde derive code to the type it deserializes, generic serde_json code to
serde_json).

usage: perf_top.py [--us-per-sample X] perf-API-PATH.txt...
"""

import re
import sys
from pathlib import Path

# "    1.17%   25  ballast   [.] symbol" (with -n) or without the sample count.
LINE = re.compile(r"^\s*([\d.]+)%\s+(?:(\d+)\s+)?(\S+)\s+\[(.)\]\s+(.*?)\s*$")
# The root segment of each path in a symbol (after a start, `<`, space, `(`, `&`, `*`, `,` or `[`).
CRATE = re.compile(r"(?:^|[<\s(&*,\[])([A-Za-z_][A-Za-z0-9_]*)::")
STD = {"core", "alloc", "std", "impl", "_"}
TOP = 15


def crate_of(sym: str) -> str:
    names = [n for n in CRATE.findall(sym) if n not in STD]
    if names:
        return names[0]
    if CRATE.search(sym):
        return "std/core/alloc"
    return "(unresolved)" if sym.startswith("0x") else "(unnamed)"


def summarize(path: Path, us_per_sample: float | None) -> list[str]:
    by_dso, by_crate, syms, total, has_counts = {}, {}, [], 0.0, False
    for line in path.read_text(errors="replace").splitlines():
        m = LINE.match(line)
        if not m:
            continue
        # Without sample counts, work in percent.
        weight = float(m[2]) if m[2] is not None else float(m[1])
        has_counts = has_counts or m[2] is not None
        dso, sym = m[3], m[5]
        total += weight
        dso_name = "ballast" if dso == "ballast" else ("kernel" if "kernel" in dso else dso)
        by_dso[dso_name] = by_dso.get(dso_name, 0.0) + weight
        if dso == "ballast":
            crate = crate_of(sym)
            by_crate[crate] = by_crate.get(crate, 0.0) + weight
            syms.append((weight, crate, sym))
    if not total:
        return [f"== {path.stem}: no samples"]

    per_req = us_per_sample if has_counts else None

    def fig(w: float) -> str:
        pct = f"{100 * w / total:5.1f}%"
        return f"{pct} {w * per_req:6.1f} us/req" if per_req else pct

    own = sum(v for k, v in by_crate.items() if k.startswith("ballast"))
    translate = sum(w for w, _c, s in syms if "ballast_core::translate" in s)
    head = f"== {path.stem.removeprefix('perf-')}  (self time: share of Ballast's samples"
    head += ", CPU us per request)" if per_req else ")"
    out = [head]
    if per_req:
        out.append(f"  all of Ballast: {total * per_req:.1f} us/req ({int(total)} samples)")
    out.append("  by DSO: " + ", ".join(f"{k} {fig(v).strip()}" for k, v in sorted(by_dso.items(), key=lambda x: -x[1])[:5]))
    out.append(f"  Ballast's own crates (ballast_*): {fig(own).strip()}; of which ballast_core::translate "
               f"(symbols naming it): {fig(translate).strip()}")
    out.append("  by crate (ballast binary): "
               + ", ".join(f"{k} {fig(v).strip()}" for k, v in sorted(by_crate.items(), key=lambda x: -x[1])[:10]))
    out.append("  top symbols in the ballast binary (* = Ballast's own crates):")
    for w, crate, sym in sorted(syms, key=lambda x: -x[0])[:TOP]:
        mark = "*" if crate.startswith("ballast") else " "
        out.append(f"   {mark}{fig(w)}  {sym[:140]}")
    out.append("  top symbols of Ballast's own crates:")
    for w, _crate, sym in [x for x in sorted(syms, key=lambda x: -x[0]) if x[1].startswith("ballast")][:TOP]:
        out.append(f"    {fig(w)}  {sym[:140]}")
    return out


def main(argv: list[str]) -> None:
    us_per_sample = None
    if argv[:1] == ["--us-per-sample"]:
        us_per_sample, argv = float(argv[1]), argv[2:]
    lines = []
    for p in argv:
        lines += summarize(Path(p), us_per_sample) + [""]
    print("\n".join(lines))


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    main(sys.argv[1:])
