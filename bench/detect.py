#!/usr/bin/env python3
"""bench/detect.py: time to detect, in real seconds, for Ballast's detectors (driven by bench/detect.sh).

For each fault, each run starts a fresh `ballast serve` in front of two fresh `ballast sim` (the faulted
target first in the route, a healthy fallback second), sends clean open-loop Chat Completions traffic (half of
it streaming) for a warm-up, injects the fault on the faulted simulator (`POST /_sim/faults`), then polls
`GET /admin/incidents` every 100 ms until an incident for the faulted target opens (detected: the seconds from
the injection to the poll that saw it) or the fault's timeout passes (a miss). Eject variants then watch the
faulted simulator's request counter to time "detection to ejection". A clean-traffic check (no fault) runs
beside the fault runs and counts incidents.

Standard library only. Every process it starts is killed on exit (and dies with its parent thread through
PR_SET_PDEATHSIG); every loop is bounded in count and time; nothing leaves 127.0.0.1.
"""

import ctypes
import http.client
import json
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone

BIN = os.environ.get("BALLAST_BIN", "target/release/ballast")
RUNS = int(os.environ.get("DETECT_RUNS", "3"))
SLOW_RUNS = int(os.environ.get("DETECT_SLOW_RUNS", "1"))  # the 1% wrong-script fault (~90 s a run)
EJECT_RUNS = int(os.environ.get("DETECT_EJECT_RUNS", "1"))
RATE = float(os.environ.get("DETECT_RATE", "10"))
EJECT_RATE = float(os.environ.get("DETECT_EJECT_RATE", "40"))
WARMUP = float(os.environ.get("DETECT_WARMUP", "30"))
WARMUP_LOW = float(os.environ.get("DETECT_WARMUP_LOW", "40"))  # the 0.5% -> 16% fault
IDLE_WARMUP = float(os.environ.get("DETECT_IDLE_WARMUP", "12"))
PROBE_INTERVAL = float(os.environ.get("DETECT_PROBE_INTERVAL", "5"))
CLEAN_SECS = float(os.environ.get("DETECT_CLEAN_SECS", "300"))
PARALLEL = max(1, int(os.environ.get("DETECT_PARALLEL", "2")))
TIMEOUT_FACTOR = float(os.environ.get("DETECT_TIMEOUT_FACTOR", "3"))
EJECT_WATCH = float(os.environ.get("DETECT_EJECT_WATCH", "8"))
HARD_LIMIT = float(os.environ.get("DETECT_TIMEOUT", "1800"))
OUT = os.environ.get("DETECT_OUT", "bench/out")
SEED = int(os.environ.get("DETECT_SEED", "1000"))  # the simulators' seeds: run r uses SEED + r
POLL = 0.1
ADMIN_KEY = "detect-admin-key"
MODEL = "gpt-4.1"
FAULTY = f"faulty/{MODEL}"
BACKUP = f"backup/{MODEL}"
TRIAL_CAP = 12  # requests/s an ejected target may still get: one trial per 100 ms, plus slack

# name, label, fault JSON, expected seconds, expected signal, options
FAULTS = [
    ("down", "connection refused (down 1.0)", {"down": {"rate": 1.0}}, 2, "hard_failure", {}),
    ("5xx", "5xx on everything (error 503 1.0)", {"error": {"status": 503, "rate": 1.0}}, 2,
     "hard_failure", {}),
    ("hang", "a hang (hang 1.0, 2 s timeouts)", {"hang": {"rate": 1.0}}, 4, "hard_failure", {}),
    ("errors16", "errors 0.5% -> 16% (503)", {"error": {"status": 503, "rate": 0.16}}, 10,
     "availability", {"pre": {"error": {"status": 503, "rate": 0.005}}, "warmup": WARMUP_LOW}),
    ("thai5", "wrong script in 5% of answers", {"corrupt": {"script": "thai", "rate": 0.05}}, 15,
     "wrong_script", {}),
    ("thai1", "wrong script in 1% of answers", {"corrupt": {"script": "thai", "rate": 0.01}}, 90,
     "wrong_script", {"runs": SLOW_RUNS}),
    ("slow", "time to first token doubled (200 -> 400 ms)", {"slow": {"factor": 2}}, 10, "latency",
     {"ttft_ms": 200}),
    ("idle", f"an idle target gone down (probes {PROBE_INTERVAL:g} s)", {"down": {"rate": 1.0}},
     PROBE_INTERVAL + 3, "hard_failure", {"idle": True, "warmup": IDLE_WARMUP}),
    ("repeat5", "looping answers in 5% (degrade repeat)", {"degrade": {"mode": "repeat", "rate": 0.05}}, 15,
     "repetition", {}),
    ("empty5", "empty answers in 5% (degrade empty)", {"degrade": {"mode": "empty", "rate": 0.05}}, 15,
     "empty_answer", {}),
    ("short20", "token-limit stops in 20% (degrade short)", {"degrade": {"mode": "short", "rate": 0.2}}, 15,
     "stop_reason", {}),
    ("json20", "invalid JSON in 20% of JSON answers (degrade invalid_json)",
     {"degrade": {"mode": "invalid_json", "rate": 0.2}}, 30, "invalid_json", {}),
    ("thai5-eject", f"wrong script 5%, eject on, {EJECT_RATE:g} req/s",
     {"corrupt": {"script": "thai", "rate": 0.05}}, 15, "wrong_script",
     {"eject": True, "rate": EJECT_RATE, "runs": EJECT_RUNS}),
    ("errors16-eject", f"errors 0.5% -> 16%, eject on, {EJECT_RATE:g} req/s",
     {"error": {"status": 503, "rate": 0.16}}, 10, "availability",
     {"pre": {"error": {"status": 503, "rate": 0.005}}, "warmup": WARMUP_LOW, "eject": True,
      "rate": EJECT_RATE, "runs": EJECT_RUNS}),
]

ABORT = threading.Event()
PROCS = []
PROCS_LOCK = threading.Lock()
T_START = time.monotonic()


def log(msg):
    print(f"[detect {time.monotonic() - T_START:7.1f}s] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent():
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args, log_path, pattern, timeout=20):
    """Starts a process with its output in log_path and waits for `pattern` in it; returns (proc, match)."""
    f = open(log_path, "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                         preexec_fn=_die_with_parent)
    f.close()
    with PROCS_LOCK:
        PROCS.append(p)
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as r:
            m = rx.search(r.read().decode("utf-8", "replace"))
        if m:
            return p, m
        if p.poll() is not None:
            break
        time.sleep(0.05)
    stop(p)
    with open(log_path, "rb") as r:
        tail = r.read()[-2000:].decode("utf-8", "replace")
    raise RuntimeError(f"{args[0]} {args[1]} did not start (exit {p.poll()}): {tail}")


def stop(p):
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(3)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(3)
    with PROCS_LOCK:
        if p in PROCS:
            PROCS.remove(p)


def stop_all():
    with PROCS_LOCK:
        procs = list(PROCS)
    for p in procs:
        try:
            stop(p)
        except Exception:  # noqa: BLE001 - best effort on exit
            pass


# ---------------------------------------------------------------- HTTP


def req(method, url, body=None, headers=None, timeout=5.0):
    """One request on a fresh connection; returns (status, parsed JSON or text)."""
    m = re.match(r"http://([^/:]+):(\d+)(/.*)?$", url)
    host, port, path = m.group(1), int(m.group(2)), m.group(3) or "/"
    assert host == "127.0.0.1"
    c = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        data = json.dumps(body).encode() if body is not None else None
        h = {"content-type": "application/json"} if data else {}
        h.update(headers or {})
        c.request(method, path, body=data, headers=h)
        r = c.getresponse()
        raw = r.read()
        try:
            return r.status, json.loads(raw)
        except ValueError:
            return r.status, raw.decode("utf-8", "replace")
    finally:
        c.close()


def sim_total(sim):
    try:
        st, j = req("GET", sim + "/_sim/stats", timeout=1.0)
        return j.get("total_requests") if st == 200 else None
    except (OSError, http.client.HTTPException):
        return None


def incidents(gw):
    st, j = req("GET", gw + "/admin/incidents", headers={"authorization": f"Bearer {ADMIN_KEY}"},
                 timeout=2.0)
    if st != 200:
        raise RuntimeError(f"/admin/incidents: {st} {j}")
    return j["incidents"]


class Traffic:
    """Open-loop Chat Completions traffic: request i is released at start + i/rate (half streaming) to a
    pool of keep-alive workers. Bounded by max_secs and by stop()."""

    def __init__(self, gw, route, rate, max_secs, tag):
        m = re.match(r"http://127\.0\.0\.1:(\d+)", gw)
        self.port = int(m.group(1))
        self.route, self.rate, self.max_secs, self.tag = route, rate, max_secs, tag
        self.q = queue.Queue()
        self.stop_ev = threading.Event()
        self.lock = threading.Lock()
        self.sent = 0
        self.done = 0
        self.ok = 0
        self.errors = {}
        self.by_target = {}
        self.unsent = 0
        self.stale_retries = 0
        self.threads = []
        self.workers = int(min(128, max(16, rate * 3)))

    def start(self):
        t = threading.Thread(target=self._schedule, daemon=True)
        t.start()
        self.threads.append(t)
        for _ in range(self.workers):
            t = threading.Thread(target=self._work, daemon=True)
            t.start()
            self.threads.append(t)
        return self

    def stop(self):
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=12)

    def snapshot(self):
        with self.lock:
            return {"sent": self.sent, "done": self.done, "ok": self.ok, "errors": dict(self.errors),
                    "by_target": dict(self.by_target), "unsent": self.unsent,
                    "stale_connection_retries": self.stale_retries}

    def _schedule(self):
        start = time.monotonic()
        n_max = int(self.rate * self.max_secs) + 1
        for i in range(n_max):
            at = start + i / self.rate
            delay = at - time.monotonic()
            if delay > 0 and self.stop_ev.wait(delay):
                return
            if self.stop_ev.is_set() or ABORT.is_set():
                return
            if self.q.qsize() > self.workers * 4:
                with self.lock:
                    self.unsent += 1
                continue
            with self.lock:
                self.sent += 1
            self.q.put(i)

    def _err(self, kind):
        with self.lock:
            self.errors[kind] = self.errors.get(kind, 0) + 1

    def _work(self):
        conn = None
        while not self.stop_ev.is_set():
            try:
                i = self.q.get(timeout=0.2)
            except queue.Empty:
                continue
            stream = i % 2 == 0
            body = {"model": self.route, "max_tokens": 96,
                    "messages": [{"role": "user", "content":
                                  f"Hello, this is request {i} of run {self.tag}. Answer in a few words."}]}
            # One request in four asks for a JSON answer (the invalid-JSON detector's evidence).
            if i % 4 == 3:
                body["response_format"] = {"type": "json_object"}
            if stream:
                body["stream"] = True
                body["stream_options"] = {"include_usage": True}
            reused = conn is not None
            for attempt in (1, 2):
                try:
                    if conn is None:
                        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                    conn.request("POST", "/v1/chat/completions", body=json.dumps(body).encode(),
                                 headers={"content-type": "application/json"})
                    r = conn.getresponse()
                    raw = r.read()
                except (BrokenPipeError, ConnectionResetError, http.client.RemoteDisconnected) as e:
                    # A keep-alive connection the gateway closed while idle: the request never reached
                    # it, so send it once more on a fresh connection (as HTTP client libraries do).
                    if conn is not None:
                        conn.close()
                    conn = None
                    if reused and attempt == 1:
                        with self.lock:
                            self.stale_retries += 1
                        reused = False
                        continue
                    with self.lock:
                        self.done += 1
                    self._err(type(e).__name__)
                    break
                except (OSError, http.client.HTTPException) as e:
                    with self.lock:
                        self.done += 1
                    self._err(type(e).__name__)
                    if conn is not None:
                        conn.close()
                    conn = None
                    break
                target = r.getheader("x-ballast-target") or "-"
                with self.lock:
                    self.done += 1
                    self.by_target[target] = self.by_target.get(target, 0) + 1
                if r.status != 200:
                    self._err(f"http {r.status}")
                elif stream and b"[DONE]" not in raw:
                    self._err("stream without [DONE]")
                else:
                    with self.lock:
                        self.ok += 1
                if (r.getheader("connection") or "").lower() == "close":
                    conn.close()
                    conn = None
                break
        if conn is not None:
            conn.close()


# ---------------------------------------------------------------- one run


def gateway_config(path, routes, eject):
    """routes: {route: [(provider, base_url), ...]}"""
    lines = [
        "[server]", 'listen = "127.0.0.1:0"', "",
        "[admin]", f'key = "{ADMIN_KEY}"', "",
        "[incidents]", 'store = ""', "",
        "[probes]", f'interval = "{PROBE_INTERVAL:g}s"', "",
        "[signal]", f"eject = {'true' if eject else 'false'}", "",
        "[policy]", "retries = 0", "",
    ]
    providers = {}
    for targets in routes.values():
        for name, url in targets:
            providers[name] = url
    for name, url in providers.items():
        lines += [f"[providers.{name}]", 'kind = "openai"', f'base_url = "{url}/v1"', 'api_key = "sim"', ""]
    for route, targets in routes.items():
        ts = ", ".join(f'"{n}/{MODEL}"' for n, _ in targets)
        lines += [f"[routes.{route}]", f"targets = [{ts}]", "",
                  f"[routes.{route}.policy]", 'first_token_timeout = "2s"', 'response_timeout = "2s"', ""]
    with open(path, "w") as f:
        f.write("\n".join(lines))


def start_sim(logdir, name, seed, ttft_ms=0):
    args = [BIN, "sim", "--listen", "127.0.0.1:0", "--seed", str(seed)]
    if ttft_ms:
        args += ["--ttft-ms", str(ttft_ms)]
    p, m = spawn(args, os.path.join(logdir, f"sim-{name}.log"), r"listening on (http://127\.0\.0\.1:\d+)")
    return p, m.group(1)


def start_gateway(logdir, routes, eject):
    cfg = os.path.join(logdir, "ballast.toml")
    gateway_config(cfg, routes, eject)
    p, m = spawn([BIN, "serve", "--config", cfg, "--listen", "127.0.0.1:0"],
                 os.path.join(logdir, "ballast.log"), r"ballast listening on (http://[0-9.:]+)")
    return p, m.group(1)


def wait_until(t, step=0.5):
    while not ABORT.is_set():
        left = t - time.monotonic()
        if left <= 0:
            return True
        time.sleep(min(step, left))
    return False


def one_run(fault, run_no, logroot):
    key, label, inject, expected, expect_signal, opts = fault
    # A run is detected by an incident of the signal the fault is for (a dead target may also be seen
    # by the availability test first); an incident of another signal on the faulted target before it
    # (a latency incident on a loaded machine) is recorded, not counted as the detection.
    accept = {expect_signal, "availability"} if expect_signal == "hard_failure" else {expect_signal}
    logdir = os.path.join(logroot, f"{key}-r{run_no}")
    os.makedirs(logdir, exist_ok=True)
    eject = bool(opts.get("eject"))
    idle = bool(opts.get("idle"))
    rate = opts.get("rate", RATE)
    warmup = opts.get("warmup", WARMUP)
    timeout = expected * TIMEOUT_FACTOR
    seed = SEED + run_no
    res = {"fault": key, "run": run_no, "rate": rate, "warmup_s": warmup, "timeout_s": timeout,
           "eject": eject, "detected": False, "seconds": None, "signal_first": None, "signals": [],
           "warmup_incidents": [], "other_incidents": [], "other_signals_before": [], "logs": logdir}
    mine = []
    try:
        p1, faulty = start_sim(logdir, "faulty", seed, opts.get("ttft_ms", 0))
        mine.append(p1)
        p2, backup = start_sim(logdir, "backup", seed + 500, opts.get("ttft_ms", 0))
        mine.append(p2)
        if "pre" in opts:
            st, j = req("POST", faulty + "/_sim/faults", opts["pre"])
            assert st == 200, (st, j)
        if idle:
            routes = {"detect": [("backup", backup)], "idle": [("faulty", faulty)]}
        else:
            routes = {"detect": [("faulty", faulty), ("backup", backup)]}
        pg, gw = start_gateway(logdir, routes, eject)
        mine.append(pg)
        traffic = Traffic(gw, "detect", rate, warmup + timeout + EJECT_WATCH + 30, f"{key}-{run_no}").start()
        t_start = time.monotonic()
        f0, b0 = sim_total(faulty), sim_total(backup)
        if not wait_until(t_start + warmup):
            raise RuntimeError("aborted")
        f1, b1 = sim_total(faulty), sim_total(backup)
        res["warmup_requests"] = {"faulty": (f1 or 0) - (f0 or 0), "backup": (b1 or 0) - (b0 or 0)}
        res["traffic_warmup"] = traffic.snapshot()
        before = incidents(gw)
        seen_ids = {i["id"] for i in before}
        res["warmup_incidents"] = [{"target": i["target"], "signal": i["signal"], "state": i["state"]}
                                   for i in before]
        # Inject. `down` at rate 1 closes the port, the control API too: give it a duration that outlives
        # the run, and expect the POST's answer to be lost.
        body = json.loads(json.dumps(inject))
        if "down" in body:
            body["down"]["duration_secs"] = int(timeout + EJECT_WATCH + 30)
        t0 = time.monotonic()
        t0_wall = time.time()
        try:
            st, j = req("POST", faulty + "/_sim/faults", body, timeout=2.0)
            if st != 200:
                raise RuntimeError(f"inject: {st} {j}")
        except (OSError, http.client.HTTPException):
            if "down" not in body:
                raise
        res["inject_ms"] = round((time.monotonic() - t0) * 1000, 1)
        samples = []  # (t - t0, faulty sim total requests), eject runs only
        t_seen = None
        n = 0
        max_polls = int((timeout + EJECT_WATCH) / POLL) + 10
        while n < max_polls and not ABORT.is_set():
            n += 1
            now = time.monotonic()
            if eject:
                tot = sim_total(faulty)
                if tot is not None:
                    samples.append((now - t0, tot))
            if t_seen is None:
                cur = incidents(gw)
                new = [i for i in cur if i["id"] not in seen_ids]
                ours = sorted((i for i in new if i["target"] == FAULTY), key=lambda i: i["id"])
                res["other_signals_before"] = sorted({i["signal"] for i in ours if i["signal"] not in accept})
                ours = [i for i in ours if i["signal"] in accept]
                if ours:
                    t_seen = time.monotonic() - t0
                    res.update(detected=True, seconds=round(t_seen, 2), signal_first=ours[0]["signal"],
                               incident_id=ours[0]["id"],
                               evidence_at_open=ours[0].get("evidence_at_open"))
                    if not eject:
                        break
                elif now - t0 > timeout:
                    break
            elif now - t0 > t_seen + EJECT_WATCH:
                break
            nxt = now + POLL
            while time.monotonic() < nxt:
                time.sleep(max(0.0, nxt - time.monotonic()))
        traffic.stop()
        res["traffic"] = traffic.snapshot()
        final = incidents(gw)
        res["signals"] = sorted({i["signal"] for i in final if i["id"] not in seen_ids and i["target"] == FAULTY})
        res["other_incidents"] = [{"target": i["target"], "signal": i["signal"]} for i in final
                                  if i["id"] not in seen_ids and i["target"] != FAULTY]
        if eject and t_seen is not None:
            res.update(ejection(samples, t_seen))
        if res["detected"]:
            res["seconds_log"] = log_seconds(os.path.join(logdir, "ballast.log"), res["incident_id"], t0_wall)
        if pg.poll() is not None:
            res["gateway_exit"] = pg.returncode
    except Exception as e:  # noqa: BLE001 - reported in the run's record
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        if len(mine) == 3 and mine[2].poll() is not None and "gateway_exit" not in res:
            res["gateway_exit"] = mine[2].returncode  # the gateway died during the run
        for p in reversed(mine):
            stop(p)
    state = f"{res['seconds']} s ({res['signal_first']})" if res["detected"] else "MISS"
    if res.get("error"):
        state += f" error: {res['error']}"
    if "eject_seconds" in res:
        state += f", ejected after {res['eject_seconds']} s"
    log(f"{key} run {run_no}: {state}")
    return res


def log_seconds(path, incident_id, t0_wall):
    """The incident's opening time from the gateway's log line (microseconds), minus the injection time."""
    rx = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(?:\.\d+)?)Z .*incident opened incident=%d " % incident_id)
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line in f:
                m = rx.match(line)
                if m:
                    ts = m.group(1)
                    base, _, frac = ts.partition(".")
                    t = datetime.strptime(base, "%Y-%m-%dT%H:%M:%S").replace(tzinfo=timezone.utc).timestamp()
                    return round(t + float("0." + (frac or "0")) - t0_wall, 3)
    except OSError:
        pass
    return None


def ejection(samples, t_seen):
    """Detection to ejection: from the poll that saw the incident to the first point after which the
    faulted simulator got at most TRIAL_CAP requests in the next second."""

    def count_at(t):
        prev = None
        for ts, n in samples:
            if ts >= t:
                if prev is None:
                    return n
                (pt, pn) = prev
                return pn + (n - pn) * (t - pt) / max(ts - pt, 1e-9)
            prev = (ts, n)
        return None

    out = {"eject_seconds": None}
    before = [(ts, n) for ts, n in samples if ts <= t_seen]
    if len(before) >= 2:
        out["faulty_rps_before"] = round((before[-1][1] - before[0][1]) / max(before[-1][0] - before[0][0], 1e-9), 1)
    end = samples[-1][0] if samples else 0
    if out.get("faulty_rps_before", 0) < 2 * TRIAL_CAP:
        # At this rate every request may be a trial (one per 100 ms): ejection cannot be told apart.
        out["eject_note"] = "not measurable: the traffic rate is within the ejected target's trial allowance"
    scan = [] if "eject_note" in out else samples
    for ts, n in scan:
        if ts < t_seen - 0.5 or ts + 1.0 > end:
            continue
        nxt = count_at(ts + 1.0)
        if nxt is not None and nxt - n <= TRIAL_CAP:
            out["eject_seconds"] = round(max(0.0, ts - t_seen), 2)
            break
    tail = [(ts, n) for ts, n in samples if ts >= end - 3.0]
    if len(tail) >= 2:
        out["faulty_rps_after"] = round((tail[-1][1] - tail[0][1]) / max(tail[-1][0] - tail[0][0], 1e-9), 1)
    return out


# ---------------------------------------------------------------- clean traffic


def clean_check(logroot):
    logdir = os.path.join(logroot, "clean")
    os.makedirs(logdir, exist_ok=True)
    res = {"seconds": CLEAN_SECS, "rate_per_route": RATE, "incidents": [], "routes": {}}
    mine = []
    traffics = []
    try:
        p, fast = start_sim(logdir, "fast", 7)
        mine.append(p)
        p, slow = start_sim(logdir, "ttft200", 8, 200)
        mine.append(p)
        p, backup = start_sim(logdir, "backup", 9)
        mine.append(p)
        routes = {"detect": [("ttft0", fast), ("backup", backup)],
                  "detect200": [("ttft200", slow), ("backup", backup)]}
        pg, gw = start_gateway(logdir, routes, True)
        mine.append(pg)
        for r in routes:
            traffics.append((r, Traffic(gw, r, RATE, CLEAN_SECS + 5, f"clean-{r}").start()))
        t_end = time.monotonic() + CLEAN_SECS
        wait_until(t_end, step=1.0)
        for r, t in traffics:
            t.stop()
            res["routes"][r] = t.snapshot()
        res["incidents"] = [{"target": i["target"], "signal": i["signal"], "state": i["state"],
                             "opened_at": i["opened_at"], "evidence_at_open": i.get("evidence_at_open")}
                            for i in incidents(gw)]
        res["actual_seconds"] = round(CLEAN_SECS - max(0.0, t_end - time.monotonic()), 1)
        if pg.poll() is not None:
            res["gateway_exit"] = pg.returncode
    except Exception as e:  # noqa: BLE001
        res["error"] = f"{type(e).__name__}: {e}"
    finally:
        for _, t in traffics:
            t.stop_ev.set()
        for p in reversed(mine):
            stop(p)
    log(f"clean check: {len(res['incidents'])} incident(s) in {res.get('actual_seconds')} s"
        + (f" error: {res['error']}" if res.get("error") else ""))
    return res


# ---------------------------------------------------------------- summary


def pct(xs, q):
    """Nearest-rank percentile."""
    xs = sorted(xs)
    if not xs:
        return None
    k = max(0, min(len(xs) - 1, int(-(-q * len(xs) // 1)) - 1))
    return xs[k]


def summarize(results, clean, meta):
    rows = []
    for key, label, _, expected, expect_signal, opts in FAULTS:
        rs = [r for r in results if r["fault"] == key]
        if not rs:
            continue
        secs = [r["seconds"] for r in rs if r["detected"]]
        firsts = {}
        for r in rs:
            if r["detected"]:
                firsts[r["signal_first"]] = firsts.get(r["signal_first"], 0) + 1
        ej = [r["eject_seconds"] for r in rs if r.get("eject_seconds") is not None]
        row = {
            "fault": key, "label": label, "runs": len(rs), "detected": len(secs),
            "expected_s": expected, "expected_signal": expect_signal, "timeout_s": expected * TIMEOUT_FACTOR,
            "rate": opts.get("rate", RATE), "warmup_s": opts.get("warmup", WARMUP),
            "min": min(secs) if secs else None,
            "median": round(statistics.median(secs), 2) if secs else None,
            "p95": pct(secs, 0.95), "max": max(secs) if secs else None,
            "first_signal": firsts,
            "errors": [r["error"] for r in rs if r.get("error")],
            "warmup_false_alarms": sum(len(r["warmup_incidents"]) for r in rs),
            "other_signals_before": sum(len(r.get("other_signals_before", [])) for r in rs),
            "other_target_incidents": sum(len(r["other_incidents"]) for r in rs),
        }
        if opts.get("eject"):
            row["eject_seconds"] = ej
            row["eject_median"] = round(statistics.median(ej), 2) if ej else None
            row["faulty_rps_after"] = [r.get("faulty_rps_after") for r in rs]
            row["eject_notes"] = sorted({r["eject_note"] for r in rs if r.get("eject_note")})
        rows.append(row)
    return {"meta": meta, "faults": rows, "clean": clean, "runs": results}


def fmt(v):
    return "-" if v is None else f"{v:.1f}"


def table(summary):
    out = []
    h = f"{'fault':<46} {'runs':>4} {'det':>4} {'min':>6} {'median':>6} {'p95':>6} {'max':>6}  first signal"
    out.append(h)
    for r in summary["faults"]:
        sig = ", ".join(f"{k} {v}" for k, v in sorted(r["first_signal"].items())) or "-"
        out.append(f"{r['label'][:46]:<46} {r['runs']:>4} {r['detected']:>4} {fmt(r['min']):>6} "
                   f"{fmt(r['median']):>6} {fmt(r['p95']):>6} {fmt(r['max']):>6}  {sig}")
    notes = []
    for r in summary["faults"]:
        if "eject_seconds" in r:
            ej = r["eject_seconds"] or "; ".join(r["eject_notes"]) or "-"
            notes.append(f"  detection to ejection ({r['fault']}): {ej} s; faulted target "
                         f"afterwards at {r['faulty_rps_after']} req/s of {r['rate']:g}")
        if r["warmup_false_alarms"] or r["other_target_incidents"] or r["other_signals_before"]:
            notes.append(f"  {r['fault']}: {r['warmup_false_alarms']} incident(s) during warm-up, "
                         f"{r['other_target_incidents']} on another target after the injection, "
                         f"{r['other_signals_before']} of another signal on the faulted target before detection")
        for e in r["errors"]:
            notes.append(f"  {r['fault']}: run error: {e}")
    out += notes
    c = summary.get("clean")
    if c is not None:
        byk = {}
        for i in c.get("incidents", []):
            k = f"{i['target']} {i['signal']}"
            byk[k] = byk.get(k, 0) + 1
        errs = sum(sum(t["errors"].values()) for t in c.get("routes", {}).values())
        sent = sum(t["sent"] for t in c.get("routes", {}).values())
        out.append(f"clean traffic {c.get('actual_seconds')} s, {len(c.get('routes', {}))} routes x {RATE:g} req/s "
                   f"({sent} requests, {errs} client errors): {len(c.get('incidents', []))} incident(s)"
                   + (f" {byk}" if byk else "") + (f" error: {c['error']}" if c.get("error") else ""))
    return "\n".join(out)


# ---------------------------------------------------------------- main


def main():
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    os.makedirs(OUT, exist_ok=True)
    logroot = os.path.join(OUT, f"detect-{stamp}")
    os.makedirs(logroot, exist_ok=True)
    wanted = os.environ.get("DETECT_FAULTS", "").replace(",", " ").split()
    faults = [f for f in FAULTS if not wanted or f[0] in wanted]
    jobs = []
    for f in faults:
        for r in range(1, f[5].get("runs", RUNS) + 1):
            jobs.append((f, r))
    # Longest first, so the parallel slots finish together.
    jobs.sort(key=lambda j: -(j[0][5].get("warmup", WARMUP) + j[0][3] * 1.5))
    est = sum(j[0][5].get("warmup", WARMUP) + j[0][3] * 1.5 + 3 for j in jobs) / PARALLEL
    log(f"{len(jobs)} runs of {len(faults)} faults, {PARALLEL} at a time (about {est / 60:.1f} min), "
        f"clean check {CLEAN_SECS:g} s beside them; logs in {logroot}")
    meta = {"stamp": stamp, "date_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "bin": BIN, "nproc": os.cpu_count(), "runs": RUNS, "slow_runs": SLOW_RUNS, "eject_runs": EJECT_RUNS,
            "rate": RATE, "eject_rate": EJECT_RATE, "warmup": WARMUP, "warmup_low": WARMUP_LOW,
            "idle_warmup": IDLE_WARMUP, "probe_interval": PROBE_INTERVAL, "clean_secs": CLEAN_SECS,
            "parallel": PARALLEL, "timeout_factor": TIMEOUT_FACTOR, "poll_s": POLL, "seed": SEED}
    try:
        meta["load_before"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    results = []
    res_lock = threading.Lock()
    clean_box = {}
    threads = []
    if CLEAN_SECS > 0:
        t = threading.Thread(target=lambda: clean_box.update(r=clean_check(logroot)), daemon=True)
        t.start()
        threads.append(t)
    work = queue.Queue()
    for j in jobs:
        work.put(j)

    def worker():
        while not ABORT.is_set():
            try:
                f, r = work.get_nowait()
            except queue.Empty:
                return
            res = one_run(f, r, logroot)
            with res_lock:
                results.append(res)

    for _ in range(PARALLEL):
        t = threading.Thread(target=worker, daemon=True)
        t.start()
        threads.append(t)
    deadline = T_START + HARD_LIMIT
    for t in threads:
        while t.is_alive():
            t.join(timeout=1.0)
            if time.monotonic() > deadline and not ABORT.is_set():
                log(f"DETECT_TIMEOUT ({HARD_LIMIT:g} s) reached: stopping")
                ABORT.set()
        if ABORT.is_set():
            t.join(timeout=20)
    results.sort(key=lambda r: (r["fault"], r["run"]))
    meta["wall_seconds"] = round(time.monotonic() - T_START, 1)
    try:
        meta["load_after"] = open("/proc/loadavg").read().split()[:3]
    except OSError:
        pass
    summary = summarize(results, clean_box.get("r"), meta)
    text = table(summary)
    path = os.path.join(OUT, f"detect-{stamp}.json")
    with open(path, "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(OUT, "detect-latest.json"), "w") as f:
        json.dump(summary, f, indent=1)
    with open(os.path.join(logroot, "table.txt"), "w") as f:
        f.write(text + "\n")
    print(text)
    print(f"\n{path} ({meta['wall_seconds']:.0f} s wall clock)")


def on_signal(signum, _frame):
    ABORT.set()
    stop_all()
    os._exit(128 + signum)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        main()
    finally:
        ABORT.set()
        stop_all()
