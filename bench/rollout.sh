#!/usr/bin/env bash
# bench/rollout.sh: how fast a bad configuration change is rolled back, and how many requests it
# touched. A fresh `ballast serve` (route "chat" on the `good` simulator) under open-loop Chat
# Completions traffic; after a warm-up, POST /admin/config takes a change that puts the `bad`
# simulator first in the route, rolled out to a canary share (default 5%, a 10-minute hold: only a
# rollback ends it early). `bad` fails 10% of its requests with 500 (FAULT=errors) or answers 5% in
# Thai (FAULT=script). Reported per round: seconds from the change's acceptance (the start of its
# canary step) to its rollback, the requests sent meanwhile, the canary requests, and the requests
# that reached `bad` (its /_sim/stats, the gate's probes included). Medians over ROUNDS.
#   bench/rollout.sh                        # 100 req/s, 5% canary, errors, 3 rounds
#   FAULT=script SHARE=0.1 bench/rollout.sh
#   RATE=300 ROUNDS=5 bench/rollout.sh
# Only 127.0.0.1; every process started here is stopped on exit; every loop is bounded.
set -euo pipefail
cd "$(dirname "$0")/.."

if [[ -z "${BALLAST_BIN:-}" ]]; then
    cargo build --release --bin ballast
    BALLAST_BIN=target/release/ballast
fi
export BALLAST_BIN RATE="${RATE:-100}" SHARE="${SHARE:-0.05}" FAULT="${FAULT:-errors}" \
    ROUNDS="${ROUNDS:-3}" WARMUP="${WARMUP:-5}" LIMIT="${LIMIT:-240}" TTFT_MS="${TTFT_MS:-50}"

exec timeout --signal=TERM --kill-after=10 $(( (WARMUP + LIMIT + 30) * ROUNDS )) python3 - <<'EOF'
import ctypes, http.client, json, os, re, signal, statistics, subprocess, sys, tempfile, threading, time
from concurrent.futures import ThreadPoolExecutor

BIN = os.environ["BALLAST_BIN"]
RATE, SHARE = float(os.environ["RATE"]), float(os.environ["SHARE"])
FAULT, ROUNDS = os.environ["FAULT"], int(os.environ["ROUNDS"])
WARMUP, LIMIT, TTFT_MS = float(os.environ["WARMUP"]), float(os.environ["LIMIT"]), os.environ["TTFT_MS"]
ADMIN = "bench-admin"
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


def call(method, base, path, body=None, raw=None, timeout=30.0):
    host, port = re.match(r"http://(127\.0\.0\.1):(\d+)$", base).groups()
    c = http.client.HTTPConnection(host, int(port), timeout=timeout)
    try:
        data = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
        c.request(method, path, body=data, headers={"content-type": "application/json",
                                                    "authorization": f"Bearer {ADMIN}"})
        r = c.getresponse()
        return r, r.read()
    finally:
        c.close()


def config(good, bad, targets, rollout=""):
    out = f'[admin]\nkey = "{ADMIN}"\n[incidents]\nstore = ""\n[probes]\ninterval = "0s"\n'
    for name, url in (("good", good), ("bad", bad)):
        out += f'[providers.{name}]\nkind = "openai"\nbase_url = "{url}/v1"\napi_key = "sim"\n'
    out += f"[routes.chat]\ntargets = [{targets}]\n[rollout]\n{rollout}\n"
    return out


def round_(tmp, k):
    sim = lambda name, seed: spawn([BIN, "sim", "--listen", "127.0.0.1:0", "--seed", str(seed),
                                    "--ttft-ms", TTFT_MS], r"listening on (http://127\.0\.0\.1:\d+)",
                                   f"{tmp}/sim-{name}-{k}.log")
    good, bad = sim("good", 1 + k), sim("bad", 100 + k)
    fault = ({"error": {"status": 500, "rate": 0.1}} if FAULT == "errors"
             else {"corrupt": {"script": "thai", "rate": 0.05}})
    call("POST", bad, "/_sim/faults", fault)
    cfg = f"{tmp}/ballast-{k}.toml"
    with open(cfg, "w") as f:
        f.write(config(good, bad, '"good/gpt-4.1-mini"'))
    gw = spawn([BIN, "serve", "--config", cfg, "--listen", "127.0.0.1:0"],
               r"ballast listening on (http://[0-9.:]+)", f"{tmp}/ballast-{k}.log")
    t0 = time.monotonic()
    sent, ok, lock, stop = [0], [0], threading.Lock(), threading.Event()

    def one(i):
        try:
            r, _ = call("POST", gw, "/v1/chat/completions",
                        {"model": "chat", "max_tokens": 32,
                         "messages": [{"role": "user", "content": f"Hello {i}, answer briefly."}]})
            good_answer = r.status == 200
        except OSError:
            good_answer = False
        with lock:
            ok[0] += good_answer

    marks = {}

    def change():
        time.sleep(max(0.0, t0 + WARMUP - time.monotonic()))
        with lock:
            marks["sent0"] = sent[0]
        bad0 = json.loads(call("GET", bad, "/_sim/stats")[1])["total_requests"]
        text = config(good, bad, '"bad/gpt-4.1-mini", "good/gpt-4.1-mini"',
                      f'steps = [{{ share = {SHARE}, hold = "10m" }}]')
        r, body = call("POST", gw, "/admin/config", raw=text.encode())
        accepted = time.monotonic()
        if r.status != 202:
            sys.exit(f"the change was not taken: {r.status} {body.decode()}")
        status = {}
        while time.monotonic() - accepted < LIMIT:
            status = json.loads(call("GET", gw, "/admin/rollout")[1])
            if status.get("state") in ("rolled_back", "promoted"):
                break
            time.sleep(0.05)
        marks["took"] = time.monotonic() - accepted
        with lock:
            marks["sent"] = sent[0] - marks["sent0"]
        marks["state"] = status.get("state")
        marks["reason"] = status.get("reason")
        comp = status.get("comparison") or [{}]
        marks["canary"] = (comp[0].get("canary") or {}).get("requests", 0)
        marks["bad"] = json.loads(call("GET", bad, "/_sim/stats")[1])["total_requests"] - bad0
        stop.set()

    threading.Thread(target=change, daemon=True).start()
    n = int((WARMUP + LIMIT) * RATE)
    with ThreadPoolExecutor(max_workers=256) as pool:
        for i in range(n):
            if stop.is_set():
                break
            time.sleep(max(0.0, t0 + i / RATE - time.monotonic()))
            with lock:
                sent[0] += 1
            pool.submit(one, i)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(timeout=10)
    procs.clear()
    return marks


def main():
    tmp = tempfile.mkdtemp(prefix="ballast-rollout-")
    rows = []
    print(f"open loop {RATE:g} req/s, canary share {SHARE:g}, bad target: "
          f"{'10% 500s' if FAULT == 'errors' else '5% Thai answers'}", flush=True)
    print("round  outcome      to rollback  requests  canary  reached bad  canary share", flush=True)
    for k in range(ROUNDS):
        m = round_(tmp, k)
        rows.append(m)
        share = m["canary"] / m["sent"] if m["sent"] else 0
        print(f"{k + 1:>5}  {m['state'] or '?':<11}  {m['took']:>9.2f} s  {m['sent']:>8}  "
              f"{m['canary']:>6}  {m['bad']:>11}  {share:>11.1%}", flush=True)
        if m["state"] != "rolled_back":
            print(f"       not rolled back: {m}", flush=True)
    done = [m for m in rows if m["state"] == "rolled_back"]
    if done:
        med = lambda key: statistics.median(m[key] for m in done)
        print(f"median: {med('took'):.2f} s to roll back, {med('canary'):.0f} canary requests of "
              f"{med('sent'):.0f}, {med('bad'):.0f} reached the bad target; reason: {done[0]['reason']}")
    print(f"logs: {tmp}")


try:
    main()
finally:
    for p in procs:
        p.kill()
EOF
