#!/usr/bin/env bash
# bench/recovery.sh: time to recover, in real seconds, at the default policy. A fresh `ballast serve`
# in front of two `ballast sim` (route "chat": primary, then backup), open-loop Chat Completions
# traffic, a warm-up, then the primary answers 529 to everything for OUTAGE seconds and heals. Reported:
# the seconds from the primary's recovery to its first served client request and to its serving all
# of the route's traffic again, the upstream attempts per client request during the outage
# (x-ballast-attempts), and the probes the dead primary got (/metrics). The same figures under paused
# time: crates/ballast-server/tests/recovery.rs.
#   bench/recovery.sh                 # a 60 s outage, ~3 min
#   OUTAGE=300 bench/recovery.sh      # a 5 min outage, ~7 min
#   RATE=20 PROBES=0s bench/recovery.sh
# Only 127.0.0.1; every process started here is stopped on exit; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${BALLAST_BIN:-}" ]]; then
    cargo build --release --bin ballast
    BALLAST_BIN=target/release/ballast
fi
export BALLAST_BIN OUTAGE="${OUTAGE:-60}" RATE="${RATE:-10}" WARMUP="${WARMUP:-30}" \
    AFTER="${AFTER:-90}" PROBES="${PROBES:-}" TTFT_MS="${TTFT_MS:-300}"

exec timeout --signal=TERM --kill-after=10 $(( WARMUP + OUTAGE + AFTER + 120 )) python3 - <<'EOF'
import ctypes, http.client, json, os, re, signal, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

BIN = os.environ["BALLAST_BIN"]
OUTAGE, RATE = float(os.environ["OUTAGE"]), float(os.environ["RATE"])
WARMUP, AFTER = float(os.environ["WARMUP"]), float(os.environ["AFTER"])
PROBES, TTFT_MS = os.environ["PROBES"], os.environ["TTFT_MS"]
PRIMARY = "primary/gpt-4.1"
libc = ctypes.CDLL(None)
procs = []


def spawn(args, pattern, log):
    f = open(log, "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                         preexec_fn=lambda: libc.prctl(1, signal.SIGKILL))  # PR_SET_PDEATHSIG
    procs.append(p)
    for _ in range(400):
        m = re.search(pattern, open(log, errors="replace").read())
        if m:
            return m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    sys.exit(f"{args[1]} did not start: see {log}")


def call(method, base, path, body=None, timeout=10.0):
    host, port = re.match(r"http://(127\.0\.0\.1):(\d+)$", base).groups()
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        c.request(method, path, body=json.dumps(body).encode() if body is not None else None,
                  headers={"content-type": "application/json"})
        r = c.getresponse()
        return r, r.read()
    finally:
        c.close()


def probes(gw):
    _, text = call("GET", gw, "/metrics")
    return sum(float(l.rsplit(" ", 1)[1]) for l in text.decode().splitlines()
               if l.startswith("ballast_probes_total{") and f'target="{PRIMARY}"' in l)


def main():
    tmp = tempfile.mkdtemp(prefix="ballast-recovery-")
    sim = lambda name, seed: spawn([BIN, "sim", "--listen", "127.0.0.1:0", "--seed", str(seed),
                                    "--ttft-ms", TTFT_MS], r"listening on (http://127\.0\.0\.1:\d+)",
                                   f"{tmp}/sim-{name}.log")
    primary, backup = sim("primary", 1), sim("backup", 2)
    cfg = f"{tmp}/ballast.toml"
    with open(cfg, "w") as f:
        f.write(f'[incidents]\nstore = ""\n')
        if PROBES:
            f.write(f'[probes]\ninterval = "{PROBES}"\n')
        for name, url in (("primary", primary), ("backup", backup)):
            f.write(f'[providers.{name}]\nkind = "openai"\nbase_url = "{url}/v1"\napi_key = "sim"\n')
        f.write('[routes.chat]\ntargets = ["primary/gpt-4.1", "backup/gpt-4.1-mini"]\n')
    gw = spawn([BIN, "serve", "--config", cfg, "--listen", "127.0.0.1:0"],
               r"ballast listening on (http://[0-9.:]+)", f"{tmp}/ballast.log")
    sent, lock = [], threading.Lock()
    t0 = time.monotonic()

    def one(i):
        start = time.monotonic() - t0
        try:
            r, _ = call("POST", gw, "/v1/chat/completions",
                        {"model": "chat", "max_tokens": 32,
                         "messages": [{"role": "user", "content": f"Hello {i}, answer briefly."}]})
            row = (start, time.monotonic() - t0, r.status == 200,
                   r.getheader("x-ballast-target") == PRIMARY, int(r.getheader("x-ballast-attempts") or 0))
        except OSError:
            row = (start, time.monotonic() - t0, False, False, 0)
        with lock:
            sent.append(row)

    marks = {}

    def timeline():
        time.sleep(max(0.0, t0 + WARMUP - time.monotonic()))
        marks["probes0"] = probes(gw)
        call("POST", primary, "/_sim/faults", {"error": {"status": 529, "rate": 1.0}})
        marks["down"] = time.monotonic() - t0
        print(f"outage: the primary answers 529 for {OUTAGE:g} s", file=sys.stderr, flush=True)
        time.sleep(max(0.0, t0 + WARMUP + OUTAGE - time.monotonic()))
        call("DELETE", primary, "/_sim/faults")
        marks["up"] = time.monotonic() - t0
        marks["probes1"] = probes(gw)
        print("recovered", file=sys.stderr, flush=True)

    threading.Thread(target=timeline, daemon=True).start()
    n = int((WARMUP + OUTAGE + AFTER) * RATE)
    with ThreadPoolExecutor(max_workers=256) as pool:
        for i in range(n):
            time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            pool.submit(one, i)
    down, up = marks["down"], marks["up"]
    sent.sort()
    served = [e - up for s, e, ok, p, _ in sent if ok and p and s >= up]
    after = [r for r in sent if r[0] >= up]
    last_other = max((i for i, r in enumerate(after) if not (r[2] and r[3])), default=None)
    if last_other is None:
        whole = 0.0
    elif last_other + 1 < len(after):
        whole = after[last_other + 1][0] - up
    else:
        whole = None
    during = [r for r in sent if down <= r[0] < up]
    fmt = lambda v: "never" if v is None else f"{v:.1f} s"
    print(f"outage {OUTAGE:g} s at {RATE:g} req/s (probes {PROBES or 'default'}): "
          f"first served {fmt(min(served) if served else None)} after recovery, "
          f"whole share {fmt(whole)}; "
          f"{sum(r[4] for r in during) / max(1, len(during)):.4f} upstream attempts per request during "
          f"the outage; {marks['probes1'] - marks['probes0']:.0f} probes to the dead primary; "
          f"{sum(1 for r in sent if not r[2])} of {len(sent)} requests failed")


try:
    main()
finally:
    for p in procs:
        p.terminate()
    for p in procs:
        try:
            p.wait(5)
        except subprocess.TimeoutExpired:
            p.kill()
EOF
