#!/usr/bin/env python3
"""bench/stream_cpu.py: what being ready to continue a stream costs on the request path. One `ballast sim`
(no latency) behind two `ballast serve` processes, identical but for `stream_recovery`: "continue" (the
default: the client's events pass through a copy, tool calls are held until complete) and "off". Interleaved
rounds send the same streaming Chat Completions requests (same format, a ~60-token answer; with and without
tools declared) through each, and read each gateway's CPU time from /proc. Reports CPU microseconds per
streamed request and the ratio, per round and the median.

    BALLAST_BIN=target/release/ballast python3 bench/stream_cpu.py
    SCPU_ROUNDS=7 SCPU_REQUESTS=1500 SCPU_CONCURRENCY=8 ...

Only 127.0.0.1; every process started here is stopped on exit.
"""

from __future__ import annotations

import atexit
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.environ.get("BALLAST_BIN", "target/release/ballast")
ROUNDS = int(os.environ.get("SCPU_ROUNDS", "5"))
REQUESTS = int(os.environ.get("SCPU_REQUESTS", "1000"))
CONCURRENCY = int(os.environ.get("SCPU_CONCURRENCY", "8"))
PROCS: list[subprocess.Popen] = []
TICK = os.sysconf("SC_CLK_TCK")


def spawn(args, log_path, pattern, timeout=20):
    f = open(log_path, "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT)
    f.close()
    PROCS.append(p)
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as r:
            m = rx.search(r.read().decode("utf-8", "replace"))
        if m:
            return p, m.group(1)
        if p.poll() is not None:
            break
        time.sleep(0.05)
    raise RuntimeError(f"{args[:2]} did not start; see {log_path}")


@atexit.register
def stop_all():
    for p in PROCS:
        if p.poll() is None:
            p.terminate()
            try:
                p.wait(3)
            except subprocess.TimeoutExpired:
                p.kill()


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def load(url: str, body: bytes, n: int):
    port = int(url.rsplit(":", 1)[1])
    left = [n]
    lock = threading.Lock()
    errors = [0]

    def work():
        c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while True:
            with lock:
                if left[0] == 0:
                    break
                left[0] -= 1
            c.request("POST", "/v1/chat/completions", body=body,
                      headers={"content-type": "application/json"})
            r = c.getresponse()
            data = r.read()
            if r.status != 200 or not data.endswith(b"data: [DONE]\n\n"):
                errors[0] += 1
        c.close()

    ts = [threading.Thread(target=work) for _ in range(CONCURRENCY)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errors[0]:
        raise RuntimeError(f"{errors[0]} bad answers from {url}")


def main():
    logdir = tempfile.mkdtemp(prefix="ballast-scpu-")
    _, sim = spawn([BIN, "sim", "--listen", "127.0.0.1:0", "--seed", "5"],
                   os.path.join(logdir, "sim.log"), r"listening on (http://127\.0\.0\.1:\d+)")
    gws = {}
    for mode in ("continue", "off"):
        cfg = os.path.join(logdir, f"{mode}.toml")
        with open(cfg, "w") as f:
            f.write(f"""
[server]
listen = "127.0.0.1:0"
[providers.o]
kind = "openai"
base_url = "{sim}/v1"
api_key = "sim"
[routes.chat]
targets = ["o/gpt-4.1"]
[policy]
stream_recovery = "{mode}"
""")
        gws[mode] = spawn([BIN, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--log", "warn"],
                          os.path.join(logdir, f"{mode}.log"), r"ballast listening on (http://[0-9.:]+)")
    plain = {"model": "chat", "stream": True, "max_tokens": 60,
             "messages": [{"role": "user", "content": "Write a few sentences about rivers."}]}
    tools = dict(plain, tools=[{"type": "function", "function": {
        "name": "lookup", "parameters": {"type": "object", "properties": {"q": {"type": "string"}}}}}])
    print(f"{REQUESTS} streamed requests per run, {CONCURRENCY} connections, {ROUNDS} interleaved rounds")
    for label, body in (("no tools", plain), ("tools declared", tools)):
        raw = json.dumps(body).encode()
        for mode in gws:  # warm up
            load(gws[mode][1], raw, 100)
        per = {m: [] for m in gws}
        ratios = []
        for _ in range(ROUNDS):
            us = {}
            for mode, (p, url) in gws.items():
                c0 = cpu_seconds(p.pid)
                load(url, raw, REQUESTS)
                us[mode] = (cpu_seconds(p.pid) - c0) / REQUESTS * 1e6
                per[mode].append(us[mode])
            ratios.append(us["continue"] / us["off"])
        med = statistics.median
        print(f"{label:15} CPU µs/request: continue {med(per['continue']):6.1f}  off {med(per['off']):6.1f}  "
              f"ratio median {med(ratios):.3f} (rounds {min(ratios):.2f}-{max(ratios):.2f})")
    print(f"(logs in {logdir})")


if __name__ == "__main__":
    sys.exit(main())
