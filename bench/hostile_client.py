#!/usr/bin/env python3
"""Drive every client API through Ballast while hostile simulators attack, and watch Ballast's memory.

Used by bench/hostile-rss.sh (see bench/README.md, "Memory benchmarks"). Standard library only.

- Fault cycler: every `--cycle` seconds each hostile simulator gets the next `hostile` mode
  (`POST /_sim/faults`), staggered so the simulators run different modes at the same time.
- Load: `--concurrency` workers, each on its own HTTP/1.1 keep-alive connection to the gateway, send
  requests to the four client APIs in turn (Chat Completions, Responses, Messages, Gemini), streaming and
  not streaming alternately, each under a client timeout, for `--duration` seconds; requests still in
  flight get `--drain` seconds more, then are cancelled.
- Sampler: the gateway's VmRSS/VmHWM every 200 ms (fds and threads every second).

Each answer is classified per (client API, streaming): 2xx complete answer in the client's format,
2xx ending in an error event, 2xx malformed (neither complete nor ending in an error event: cut, not
parseable, invalid UTF-8, wrong shape), 4xx/5xx clean error (JSON error body), 4xx/5xx unclean,
client timeout, connection error. Writes one JSON report.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time

APIS = ("chat", "responses", "messages", "gemini")
MODES = (
    "huge_index",
    "no_terminator",
    "huge_event",
    "invalid_utf8",
    "deep_nesting",
    "endless_headers",
    "trickle",
    "huge_headers",
)
OUTCOMES = (
    "2xx_complete",
    "2xx_error_event",
    "2xx_malformed",
    "error_clean",
    "error_unclean",
    "client_timeout",
    "connection_error",
)
# Sizes of each mode, moderate by default: huge_event keeps its real 100 MiB (the gateway must cap it
# at its 8 MiB event limit), the rest are bounded so the simulators' output stays bounded.
DEFAULT_PARAMS: dict[str, dict] = {
    "huge_index": {},
    "no_terminator": {"bytes": 32 << 20},
    "huge_event": {"bytes": 100 << 20},
    "invalid_utf8": {},
    "deep_nesting": {"depth": 100_000},
    "endless_headers": {"bytes": 4 << 20, "interval_ms": 1},
    "trickle": {"interval_ms": 200},
    "huge_headers": {"bytes": 1 << 20, "count": 10_000},
}


# `--classic`: the simulator's older faults, for a simulator without `hostile` (one fault set per step).
CLASSIC: dict[str, dict] = {
    "truncate_eof": {"truncate": {"mode": "eof"}},
    "truncate_reset": {"truncate": {"mode": "reset"}},
    "error_503": {"error": {"status": 503}},
    "corrupt": {"corrupt": {"script": "thai"}},
    "hang": {"hang": {}},
    "slow": {"slow": {"factor": 100}},
    "rate_limit": {"rate_limit": {"retry_after_secs": 1}},
}


class Oversized(Exception):
    pass


class BadResponse(Exception):
    pass


# ---- a small HTTP/1.1 client (keep-alive, chunked, bounded) ----------------------------------------------


class Conn:
    def __init__(self, addr: str):
        host, port = addr.rsplit(":", 1)
        self.host, self.port = host, int(port)
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        self.reader = self.writer = None

    async def request(
        self, method: str, path: str, headers: dict[str, str], body: bytes, max_body: int
    ) -> tuple[int, dict[str, str], bytes]:
        if self.writer is None or self.writer.is_closing():
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port, limit=1 << 20)
        head = f"{method} {path} HTTP/1.1\r\nhost: {self.host}:{self.port}\r\n"
        for k, v in headers.items():
            head += f"{k}: {v}\r\n"
        head += f"content-length: {len(body)}\r\n\r\n"
        self.writer.write(head.encode() + body)
        await self.writer.drain()
        r = self.reader
        assert r is not None
        try:
            raw = await r.readuntil(b"\r\n\r\n")
        except asyncio.LimitOverrunError as e:
            raise BadResponse("response head over 1 MiB") from e
        lines = raw.decode("latin-1").split("\r\n")
        try:
            status = int(lines[0].split(" ", 2)[1])
        except (IndexError, ValueError) as e:
            raise BadResponse(f"bad status line {lines[0][:80]!r}") from e
        hdrs: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                k, _, v = line.partition(":")
                hdrs[k.strip().lower()] = v.strip()
        out = bytearray()
        if method == "HEAD" or status in (204, 304):
            pass
        elif "chunked" in hdrs.get("transfer-encoding", "").lower():
            while True:
                size_line = await r.readuntil(b"\r\n")
                size = int(size_line.split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while (await r.readuntil(b"\r\n")) != b"\r\n":
                        pass
                    break
                if len(out) + size > max_body:
                    raise Oversized(f"body over {max_body} bytes")
                out += await r.readexactly(size)
                await r.readexactly(2)
        elif "content-length" in hdrs:
            n = int(hdrs["content-length"])
            if n > max_body:
                raise Oversized(f"content-length {n} over {max_body}")
            out += await r.readexactly(n)
        else:
            while True:
                chunk = await r.read(1 << 16)
                if not chunk:
                    break
                out += chunk
                if len(out) > max_body:
                    raise Oversized(f"body over {max_body} bytes")
            self.close()
        if hdrs.get("connection", "").lower() == "close":
            self.close()
        return status, hdrs, bytes(out)


async def one_shot(addr: str, method: str, path: str, body: bytes = b"", timeout: float = 10.0):
    c = Conn(addr)
    try:
        return await asyncio.wait_for(
            c.request(method, path, {"content-type": "application/json"}, body, 1 << 20), timeout
        )
    finally:
        c.close()


# ---- requests and their classification -------------------------------------------------------------------


def build(api: str, stream: bool, route: str) -> tuple[str, dict[str, str], bytes]:
    h = {"content-type": "application/json"}
    if api == "chat":
        b = {"model": route, "messages": [{"role": "user", "content": "Hello"}], "max_tokens": 32}
        if stream:
            b["stream"] = True
        path = "/v1/chat/completions"
        h["authorization"] = "Bearer bench"
    elif api == "responses":
        b = {"model": route, "input": "Hello", "max_output_tokens": 32}
        if stream:
            b["stream"] = True
        path = "/v1/responses"
        h["authorization"] = "Bearer bench"
    elif api == "messages":
        b = {"model": route, "max_tokens": 32, "messages": [{"role": "user", "content": "Hello"}]}
        if stream:
            b["stream"] = True
        path = "/v1/messages"
        h["x-api-key"] = "bench"
        h["anthropic-version"] = "2023-06-01"
    else:
        b = {"contents": [{"role": "user", "parts": [{"text": "Hello"}]}], "generationConfig": {"maxOutputTokens": 32}}
        path = f"/v1beta/models/{route}:" + ("streamGenerateContent?alt=sse" if stream else "generateContent")
        h["x-goog-api-key"] = "bench"
    if stream:
        h["accept"] = "text/event-stream"
    return path, h, json.dumps(b).encode()


def sse_events(text: str) -> list[tuple[str, str]]:
    """(event name, data) of each event; comments skipped."""
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip(" ") if line[5:6] == " " else line[5:])
        if name or data:
            events.append((name, "\n".join(data)))
    return events


def nesting(text: str) -> tuple[int, bool]:
    """Deepest nesting of a JSON text and whether its brackets close (strings skipped), without recursion."""
    depth = deepest = 0
    in_string = escaped = False
    for ch in text:
        if in_string:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == '"':
                in_string = False
        elif ch == '"':
            in_string = True
        elif ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}":
            depth -= 1
    return deepest, depth == 0 and not in_string


def too_deep(text: str) -> str:
    deepest, closed = nesting(text)
    return f"nested {deepest} levels deep, {'closed' if closed else 'never closed'}"


def classify_ok(api: str, stream: bool, body: bytes) -> tuple[str, str]:
    """Outcome of a 2xx answer, and a reason when it is malformed."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return "2xx_malformed", f"invalid UTF-8 at byte {e.start}"
    if not stream:
        try:
            v = json.loads(text)
        except RecursionError:
            return "2xx_malformed", f"JSON {too_deep(text)} (the client's parser gives up)"
        except json.JSONDecodeError as e:
            return "2xx_malformed", f"invalid JSON: {str(e)[:80]}"
        ok = False
        if isinstance(v, dict):
            if api == "chat":
                ok = v.get("object") == "chat.completion" and bool(v.get("choices"))
            elif api == "responses":
                ok = v.get("object") == "response" and v.get("status") in ("completed", "incomplete")
            elif api == "messages":
                ok = v.get("type") == "message"
            else:
                ok = bool(v.get("candidates"))
        return ("2xx_complete", "") if ok else ("2xx_malformed", f"shape: {text[:120]!r}")
    events = sse_events(text)
    parsed = []
    problems = []
    for name, data in events:
        if api == "chat" and data == "[DONE]":
            parsed.append((name, "[DONE]"))
            continue
        try:
            parsed.append((name, json.loads(data)))
        except RecursionError:
            problems.append(f"event data {too_deep(data)} {data[:40]!r}")
        except json.JSONDecodeError as e:
            problems.append(f"event data not JSON ({str(e)[:40]}): {data[:40]!r}")
    if problems:
        return "2xx_malformed", f"{len(problems)} bad event(s): " + "; ".join(problems[:2])
    for name, v in parsed:
        if not isinstance(v, dict):
            continue
        if api in ("chat", "gemini") and "error" in v:
            return "2xx_error_event", ""
        if api == "messages" and (name == "error" or v.get("type") == "error"):
            return "2xx_error_event", ""
        if api == "responses" and (v.get("type") in ("error", "response.failed") or name in ("error", "response.failed")):
            return "2xx_error_event", ""
    if not parsed:
        return "2xx_malformed", "empty stream"
    last_name, last = parsed[-1]
    if api == "chat":
        done = last == "[DONE]"
    elif api == "messages":
        done = last_name == "message_stop" or (isinstance(last, dict) and last.get("type") == "message_stop")
    elif api == "responses":
        done = isinstance(last, dict) and last.get("type") in ("response.completed", "response.incomplete")
    else:
        cands = last.get("candidates") if isinstance(last, dict) else None
        done = bool(cands) and isinstance(cands[0], dict) and bool(cands[0].get("finishReason"))
    return ("2xx_complete", "") if done else ("2xx_malformed", f"no terminal event; last {str(last)[:100]!r}")


def classify_error(body: bytes) -> str:
    try:
        v = json.loads(body)
    except (ValueError, RecursionError):
        return "error_unclean"
    if isinstance(v, dict) and "error" in v:
        return "error_clean"
    if isinstance(v, list) and v and isinstance(v[0], dict) and "error" in v[0]:
        return "error_clean"
    return "error_unclean"


# ---- the run ----------------------------------------------------------------------------------------------


def proc_status(pid: int) -> dict[str, int] | None:
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
                elif key == "Threads":
                    out[key] = int(rest.split()[0])
                elif key == "State":
                    out["zombie"] = int(rest.strip().startswith("Z"))
    except OSError:
        return None
    return out


def fds(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Run:
    def __init__(self, a: argparse.Namespace):
        self.a = a
        self.routes = dict(kv.split("=", 1) for kv in a.routes.split(","))
        self.sims = [kv.split("=", 1) for kv in a.sims.split(",")] if a.sims else []
        self.params = dict(DEFAULT_PARAMS)
        if a.params:
            for k, v in json.loads(a.params).items():
                self.params[k] = v
        default_modes = list(CLASSIC) if a.classic else list(MODES)
        self.modes = [m for m in a.modes.split(",") if m] if a.modes else default_modes
        self.counts: dict[str, dict[str, int]] = {}
        self.by_target: dict[str, dict[str, int]] = {}
        self.by_mode: dict[str, dict[str, int]] = {}
        self.current: dict[str, str] = {}
        self.statuses: dict[str, dict[str, int]] = {}
        self.examples: dict[str, list[str]] = {}
        self.latency: dict[str, list[float]] = {}
        self.samples: list[tuple[float, int, int]] = []
        self.slow_samples: list[dict] = []
        self.fault_log: list[dict] = []
        self.stop_load = asyncio.Event()
        self.stop_all = asyncio.Event()
        self.in_flight = 0
        self.t0 = time.monotonic()

    def record(self, key: str, outcome: str, status: int | None, note: str, secs: float,
               target: str = "-", mode: str | None = None) -> None:
        self.counts.setdefault(key, {o: 0 for o in OUTCOMES})[outcome] += 1
        pair = f"{key.split()[0]} <- {target}"
        self.by_target.setdefault(pair, {o: 0 for o in OUTCOMES})[outcome] += 1
        if mode:
            m = self.by_mode.setdefault(f"{key} <- {target} [{mode}]", {o: 0 for o in OUTCOMES})
            m[outcome] += 1
        if status is not None:
            s = self.statuses.setdefault(key, {})
            s[str(status)] = s.get(str(status), 0) + 1
        self.latency.setdefault(key, []).append(secs)
        if outcome in ("2xx_malformed", "error_unclean", "connection_error") and note:
            ex = self.examples.setdefault(f"{key} <- {target} [{mode or '?'}] {outcome}", [])
            if len(ex) < 3 and note not in ex:
                ex.append(note)

    async def send(self, conn: Conn, api: str, stream: bool) -> tuple[str, int | None, str, str]:
        outcome, status, note, hdrs = await self._send(conn, api, stream)
        # The provider that answered (`x-ballast-target: provider/model`), else none.
        target = hdrs.get("x-ballast-target", "").split("/", 1)[0] or "-"
        return outcome, status, note, target

    async def _send(self, conn: Conn, api: str, stream: bool) -> tuple[str, int | None, str, dict]:
        path, headers, body = build(api, stream, self.routes[api])
        hdrs: dict[str, str] = {}
        try:
            status, hdrs, data = await asyncio.wait_for(
                conn.request("POST", path, headers, body, self.a.max_body), self.a.timeout
            )
        except asyncio.TimeoutError:
            conn.close()
            return "client_timeout", None, "", hdrs
        except Oversized as e:
            conn.close()
            return "2xx_malformed", None, f"oversized: {e}", hdrs
        except BadResponse as e:
            conn.close()
            return "connection_error", None, str(e), hdrs
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            conn.close()
            return "connection_error", None, f"{type(e).__name__}: {str(e)[:100]}", hdrs
        if 200 <= status < 300:
            outcome, note = classify_ok(api, stream, data)
            return outcome, status, note, hdrs
        if status >= 400:
            outcome = classify_error(data)
            return outcome, status, "" if outcome == "error_clean" else f"{status}: {data[:120]!r}", hdrs
        return "2xx_malformed", status, f"status {status}", hdrs

    async def worker(self, w: int) -> None:
        conn = Conn(self.a.gateway)
        c = 0
        try:
            while not self.stop_load.is_set():
                api = APIS[(w + c) % len(APIS)]
                stream = ((w + c) // len(APIS)) % 2 == 1
                c += 1
                t = time.monotonic()
                modes_before = dict(self.current)
                self.in_flight += 1
                try:
                    outcome, status, note, target = await self.send(conn, api, stream)
                finally:
                    self.in_flight -= 1
                # The mode of the simulator that answered, when it did not change during the request.
                sim = target[2:] if target.startswith("h-") else target
                mode = self.current.get(sim) if modes_before.get(sim) == self.current.get(sim) else None
                self.record(f"{api} {'stream' if stream else 'json'}", outcome, status, note, time.monotonic() - t,
                            target, mode)
        finally:
            conn.close()

    async def set_faults(self, k: int) -> None:
        entry = {"t": round(time.monotonic() - self.t0, 1), "modes": {}}
        for j, (name, addr) in enumerate(self.sims):
            mode = self.modes[(k + j) % len(self.modes)]
            if self.a.classic:
                faults = {kind: {**f, "rate": self.a.rate} for kind, f in CLASSIC[mode].items()}
            else:
                faults = {"hostile": {"mode": mode, "rate": self.a.rate, **self.params.get(mode, {})}}
            try:
                status, _, body = await one_shot(addr, "POST", "/_sim/faults", json.dumps(faults).encode())
                if status != 200:
                    print(f"[hostile] {name}: /_sim/faults answered {status}: {body[:200]!r}", file=sys.stderr)
                    entry["modes"][name] = f"REJECTED {mode}"
                    continue
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError) as e:
                print(f"[hostile] {name}: cannot set faults: {e}", file=sys.stderr)
                continue
            entry["modes"][name] = mode
            self.current[name] = mode
        self.fault_log.append(entry)

    async def sampler(self) -> None:
        last_slow = 0.0
        while not self.stop_all.is_set():
            now = time.monotonic()
            st = proc_status(self.a.gateway_pid)
            if st is None or st.get("zombie"):
                self.samples.append((round(now - self.t0, 2), -1, -1))
                return
            self.samples.append((round(now - self.t0, 2), st.get("VmRSS", 0), st.get("VmHWM", 0)))
            if now - last_slow >= 1.0:
                last_slow = now
                self.slow_samples.append(
                    {"t": round(now - self.t0, 1), "fds": fds(self.a.gateway_pid), "threads": st.get("Threads"),
                     "in_flight": self.in_flight}
                )
            await asyncio.sleep(0.2)

    async def smoke(self) -> list[str]:
        """Before any fault: every (API, streaming) answers completely through its route."""
        problems = []
        conn = Conn(self.a.gateway)
        try:
            for api in APIS:
                for stream in (False, True):
                    for _ in range(self.a.smoke):
                        outcome, status, note, _ = await self.send(conn, api, stream)
                        if outcome != "2xx_complete":
                            problems.append(f"{api} {'stream' if stream else 'json'}: {outcome} {status} {note}")
        finally:
            conn.close()
        return problems

    async def main(self) -> dict:
        a = self.a
        problems = await self.smoke()
        if problems:
            return {"error": "smoke requests failed", "problems": problems[:20]}
        await asyncio.sleep(1.0)
        idle = proc_status(a.gateway_pid) or {}
        idle_fds = fds(a.gateway_pid)
        self.t0 = time.monotonic()
        sampler = asyncio.create_task(self.sampler())
        await self.set_faults(0)
        cycler_task = asyncio.create_task(self._cycler_after_first())
        workers = [asyncio.create_task(self.worker(w)) for w in range(a.concurrency)]
        load_start = time.monotonic()
        next_log = load_start + 10
        while time.monotonic() - load_start < a.duration:
            await asyncio.sleep(min(1.0, a.duration - (time.monotonic() - load_start)))
            if time.monotonic() >= next_log:
                next_log += 10
                done = sum(sum(v.values()) for v in self.counts.values())
                rss = self.samples[-1][1] if self.samples else 0
                print(f"[hostile] t={time.monotonic() - load_start:4.0f}s requests={done} "
                      f"rss={rss / 1e6:.1f} MB faults={self.fault_log[-1]['modes'] if self.fault_log else {}}",
                      file=sys.stderr)
                if self.samples and self.samples[-1][1] < 0:
                    break
        self.stop_load.set()
        load_s = time.monotonic() - load_start
        _, pending = await asyncio.wait(workers, timeout=a.drain)
        for t in pending:
            t.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        cancelled = len(pending)
        await cycler_task
        total_s = time.monotonic() - load_start
        # Clear the faults, let the gateway settle, then the figures at the end.
        for name, addr in self.sims:
            try:
                await one_shot(addr, "DELETE", "/_sim/faults")
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError):
                pass
        end = proc_status(a.gateway_pid)
        await asyncio.sleep(a.settle)
        self.stop_all.set()
        await sampler
        settled = proc_status(a.gateway_pid)
        alive = settled is not None and not settled.get("zombie")
        # Still answering? One request per client API, faults cleared.
        after = {}
        if alive:
            self.routes = {api: self.routes[api] for api in APIS}
            conn = Conn(a.gateway)
            for api in APIS:
                outcome, status, note, target = await self.send(conn, api, False)
                after[api] = f"{outcome} {status or ''} {note} (from {target})".strip()
            conn.close()
        sim_stats = {}
        for name, addr in self.sims:
            try:
                status, _, body = await one_shot(addr, "GET", "/_sim/stats")
                sim_stats[name] = json.loads(body) if status == 200 else status
            except (OSError, asyncio.TimeoutError, asyncio.IncompleteReadError, ValueError) as e:
                sim_stats[name] = str(e)
        total = sum(sum(v.values()) for v in self.counts.values())
        rss = [s[1] for s in self.samples if s[1] >= 0]
        return {
            "duration_s": a.duration,
            "load_s": round(load_s, 2),
            "total_s": round(total_s, 2),
            "concurrency": a.concurrency,
            "client_timeout_s": a.timeout,
            "cycle_s": a.cycle,
            "rate": a.rate,
            "modes": self.modes,
            "params": {m: (CLASSIC[m] if a.classic else self.params.get(m, {})) for m in self.modes},
            "idle": {**idle, "fds": idle_fds},
            "peak_rss_sampled": max(rss) if rss else None,
            "hwm": max((s[2] for s in self.samples), default=None),
            "end": end,
            "settled": settled,
            "settled_fds": fds(a.gateway_pid),
            "alive": alive,
            "after": after,
            "requests": total,
            "requests_per_s": round(total / load_s, 2) if load_s else None,
            "cancelled_at_end": cancelled,
            "counts": self.counts,
            "by_target": self.by_target,
            "by_mode": self.by_mode,
            "rss_by_cycle": self.rss_by_cycle(),
            "statuses": self.statuses,
            "latency_s": {
                k: {"p50": round(sorted(v)[len(v) // 2], 3), "max": round(max(v), 3)} for k, v in self.latency.items()
            },
            "examples": self.examples,
            "faults": self.fault_log,
            "sim_stats": sim_stats,
            "rss_series": self.samples,
            "slow_series": self.slow_samples,
        }

    def rss_by_cycle(self) -> list[dict]:
        """The highest RSS sampled while each set of modes was active."""
        out = []
        for i, e in enumerate(self.fault_log):
            t1 = self.fault_log[i + 1]["t"] if i + 1 < len(self.fault_log) else float("inf")
            rss = [s[1] for s in self.samples if e["t"] <= s[0] < t1 and s[1] >= 0]
            out.append({"t": e["t"], "max_rss": max(rss) if rss else None, "modes": e["modes"]})
        return out

    async def _cycler_after_first(self) -> None:
        k = 1
        while not self.stop_load.is_set():
            try:
                await asyncio.wait_for(self.stop_load.wait(), self.a.cycle)
                return
            except asyncio.TimeoutError:
                pass
            await self.set_faults(k)
            k += 1


async def amain(a: argparse.Namespace) -> dict:
    run = Run(a)
    try:
        return await asyncio.wait_for(run.main(), a.deadline)
    except asyncio.TimeoutError:
        return {"error": f"hard deadline {a.deadline}s reached", "counts": run.counts,
                "alive": proc_status(a.gateway_pid) is not None}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--gateway", required=True, help="gateway host:port (127.0.0.1 only)")
    p.add_argument("--gateway-pid", type=int, required=True)
    p.add_argument("--routes", required=True, help="chat=ROUTE,responses=ROUTE,messages=ROUTE,gemini=ROUTE")
    p.add_argument("--sims", default="", help="name=host:port,... of the hostile simulators")
    p.add_argument("--modes", default="", help="comma-separated hostile modes (default: all)")
    p.add_argument("--params", default="", help='JSON {"mode": {"bytes": N, ...}} overriding the sizes')
    p.add_argument("--classic", action="store_true", help="cycle the older faults instead of `hostile`")
    p.add_argument("--rate", type=float, default=1.0, help="hostile fault rate")
    p.add_argument("--duration", type=float, default=60.0)
    p.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--timeout", type=float, default=45.0, help="client timeout per request, seconds")
    p.add_argument("--cycle", type=float, default=5.0, help="seconds between fault mode changes")
    p.add_argument("--drain", type=float, default=10.0, help="seconds in-flight requests get after the load")
    p.add_argument("--settle", type=float, default=3.0)
    p.add_argument("--smoke", type=int, default=3, help="healthy requests per (API, streaming) before the run")
    p.add_argument("--max-body", type=int, default=256 << 20, help="largest answer body the client reads")
    p.add_argument("--deadline", type=float, default=300.0, help="hard limit for the whole run, seconds")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--out", required=True)
    a = p.parse_args()
    for addr in [a.gateway] + [kv.split("=", 1)[1] for kv in a.sims.split(",") if kv]:
        if not addr.startswith("127.0.0.1:"):
            p.error(f"{addr}: only 127.0.0.1 addresses")
    random.seed(a.seed)
    report = asyncio.run(amain(a))
    with open(a.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
