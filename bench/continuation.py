#!/usr/bin/env python3
"""bench/continuation.py: what a continued stream costs. Two `ballast sim` processes (the same seed,
so the same answers; a time to first token and a delay between tokens like a hosted model's) behind
one `ballast serve`. Per path, interleaved rounds of: the stream unbroken, then the same stream with
the primary cut after N tokens (`truncate:reset,after_tokens=N`) so the gateway continues it on the
fallback. Reports medians of time to first token and time to the last byte, the added time of a
continued stream, and checks the continued answer's text equals the unbroken one.

    bench/continuation.sh                       # defaults below
    CONT_ROUNDS=30 CONT_TTFT_MS=300 bench/continuation.sh

Only 127.0.0.1; every process started here is stopped on exit.
"""

from __future__ import annotations

import atexit
import ctypes
import http.client
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time

BIN = os.environ.get("BALLAST_BIN", "target/release/ballast")
ROUNDS = int(os.environ.get("CONT_ROUNDS", "20"))
TTFT_MS = int(os.environ.get("CONT_TTFT_MS", "200"))
TOKEN_MS = int(os.environ.get("CONT_TOKEN_MS", "10"))
CUT_AFTER = int(os.environ.get("CONT_CUT_AFTER", "15"))
MAX_TOKENS = int(os.environ.get("CONT_MAX_TOKENS", "60"))
PROCS: list[subprocess.Popen] = []

_libc = ctypes.CDLL(None, use_errno=True) if sys.platform.startswith("linux") else None


def _die_with_parent():
    if _libc is not None:
        _libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def spawn(args, log_path, pattern, timeout=20):
    f = open(log_path, "wb")
    p = subprocess.Popen(args, stdin=subprocess.DEVNULL, stdout=f, stderr=subprocess.STDOUT,
                         preexec_fn=_die_with_parent)
    f.close()
    PROCS.append(p)
    rx = re.compile(pattern)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with open(log_path, "rb") as r:
            m = rx.search(r.read().decode("utf-8", "replace"))
        if m:
            return m.group(1)
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


def post(url, path, body, headers=None, timeout=30.0):
    """Streams a POST; returns (status, ttft seconds, total seconds, raw body)."""
    m = re.match(r"http://127\.0\.0\.1:(\d+)$", url)
    c = http.client.HTTPConnection("127.0.0.1", int(m.group(1)), timeout=timeout)
    h = {"content-type": "application/json"}
    h.update(headers or {})
    t0 = time.perf_counter()
    c.request("POST", path, body=json.dumps(body).encode(), headers=h)
    r = c.getresponse()
    ttft = None
    chunks = []
    while True:
        b = r.read1(65536)
        if not b:
            break
        if ttft is None and (b"delta" in b or b"content" in b):
            ttft = time.perf_counter() - t0
        chunks.append(b)
    total = time.perf_counter() - t0
    c.close()
    return r.status, ttft or total, total, b"".join(chunks).decode("utf-8", "replace")


def text_of(raw: str) -> str:
    out = []
    for line in raw.splitlines():
        if not line.startswith("data: "):
            continue
        try:
            v = json.loads(line[6:])
        except ValueError:
            continue
        if v.get("type") == "content_block_delta":
            out.append(v["delta"].get("text", ""))
        for ch in v.get("choices") or []:
            out.append((ch.get("delta") or {}).get("content") or "")
    return "".join(out)


def main():
    logdir = tempfile.mkdtemp(prefix="ballast-cont-")
    sims = {}
    for name in ("a", "b"):
        sims[name] = spawn([BIN, "sim", "--listen", "127.0.0.1:0", "--seed", "11",
                            "--ttft-ms", str(TTFT_MS), "--token-delay-ms", str(TOKEN_MS)],
                           os.path.join(logdir, f"sim-{name}.log"), r"listening on (http://127\.0\.0\.1:\d+)")
    cfg = os.path.join(logdir, "ballast.toml")
    with open(cfg, "w") as f:
        f.write(f"""
[server]
listen = "127.0.0.1:0"
[providers.oa]
kind = "openai"
base_url = "{sims['a']}/v1"
api_key = "sim"
[providers.ob]
kind = "openai"
base_url = "{sims['b']}/v1"
api_key = "sim"
[providers.aa]
kind = "anthropic"
base_url = "{sims['a']}"
api_key = "sim"
[providers.ab]
kind = "anthropic"
base_url = "{sims['b']}"
api_key = "sim"
[routes.chat]
targets = ["oa/gpt-4.1", "ob/gpt-4.1"]
[routes.messages]
targets = ["aa/claude-sonnet-4-5", "ab/claude-sonnet-4-5"]
[routes.messages-to-chat]
targets = ["aa/claude-haiku-4-5", "ob/gpt-4.1"]
""")
    # Each path's primary is a target of its own: the cuts of one path must not open the breaker of
    # another's primary (then its requests would skip it, and nothing would be continued).
    gw = spawn([BIN, "serve", "--config", cfg, "--listen", "127.0.0.1:0", "--log", os.environ.get("CONT_LOG", "warn")],
               os.path.join(logdir, "ballast.log"), r"ballast listening on (http://[0-9.:]+)")

    def fault(on: bool):
        body = {"truncate": {"mode": "reset", "after_tokens": CUT_AFTER}} if on else {}
        st, _, _, _ = post(sims["a"], "/_sim/faults", body)
        assert st in (200, 204), st

    paths = {
        "chat -> chat (instruction)": ("/v1/chat/completions", "chat", "chat"),
        "messages -> messages (prefill)": ("/v1/messages", "messages", "messages"),
        "messages -> chat (translated)": ("/v1/messages", "messages-to-chat", "messages"),
    }
    print(f"sims: ttft {TTFT_MS} ms, {TOKEN_MS} ms between tokens; cut after {CUT_AFTER} tokens; "
          f"max_tokens {MAX_TOKENS}; {ROUNDS} rounds per path, interleaved")
    print(f"{'path':34} {'ttft p50':>9} {'total p50 unbroken':>19} {'total p50 continued':>20} "
          f"{'added p50':>10} {'same text':>10}")
    for label, (path, route, kind) in paths.items():
        ok_tot, cut_tot, ttfts, same = [], [], [], 0
        for i in range(ROUNDS):
            prompt = f"Tell me about continuation round {i}"
            if kind == "chat":
                body = {"model": route, "stream": True, "max_tokens": MAX_TOKENS,
                        "messages": [{"role": "user", "content": prompt}]}
            else:
                body = {"model": route, "stream": True, "max_tokens": MAX_TOKENS,
                        "messages": [{"role": "user", "content": prompt}]}
            fault(False)
            st, ttft, total, raw = post(gw, path, body)
            assert st == 200, raw
            ok_tot.append(total)
            ttfts.append(ttft)
            want = text_of(raw)
            fault(True)
            st, _, total, raw = post(gw, path, body)
            fault(False)
            assert st == 200, raw
            cut_tot.append(total)
            got = text_of(raw)
            same += got == want
        p50 = statistics.median
        added = p50([c - o for c, o in zip(cut_tot, ok_tot)])
        print(f"{label:34} {p50(ttfts)*1000:8.0f}ms {p50(ok_tot)*1000:18.0f}ms {p50(cut_tot)*1000:19.0f}ms "
              f"{added*1000:9.0f}ms {same:>5}/{ROUNDS}")
    print(f"(logs in {logdir})")


if __name__ == "__main__":
    main()
