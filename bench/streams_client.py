#!/usr/bin/env python3
"""Open N concurrent streaming Chat Completions requests through Ballast and sample its memory.

Used by bench/streams.sh (see bench/README.md, "Memory benchmarks"). Standard library only.

Each stream is its own HTTP/1.1 keep-alive connection to the gateway (raw asyncio streams): the client
writes the request, reads the status line and headers, then keeps reading the chunked SSE body as it
arrives (a token every few seconds) and counts the stream as *open* once the first answer token is in
(the echoed marker word). Connections are opened at a bounded rate. When every stream is open (or has
failed, or the ramp timeout passed) it samples VmRSS/VmHWM of the gateway (and of the simulator, for
reference) several times, then closes every connection and writes a JSON report.

Everything is bounded: the ramp (`--ramp-timeout`), the sampling window (`--samples` x `--interval`),
and a hard `--deadline` for the whole run after which it closes everything and reports what it has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import sys
import time

# Per-stream state codes.
PENDING, CONNECTING, HEADERS, OPEN, FAILED, CLOSED = range(6)


def read_status(pid: int) -> dict[str, int]:
    """VmRSS, VmHWM (kB -> bytes) and thread count of a process, from /proc/PID/status."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                key, _, rest = line.partition(":")
                if key in ("VmRSS", "VmHWM"):
                    out[key] = int(rest.split()[0]) * 1024
                elif key == "Threads":
                    out[key] = int(rest.split()[0])
    except (OSError, ValueError, IndexError):
        pass
    return out


def count_fds(pid: int) -> int:
    try:
        import os

        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.state = [PENDING] * args.n
        self.errors: dict[str, int] = {}
        self.statuses: dict[str, int] = {}
        self.first_token_s: list[float] = []
        self.bytes_read = 0
        self.writers: list[asyncio.StreamWriter | None] = [None] * args.n
        self.stop = asyncio.Event()
        self.t0 = time.monotonic()
        body = {
            "model": args.model,
            "stream": True,
            "max_tokens": args.words + 16,
            # The simulator answers `echo X` with X verbatim, one word per token: MARKER first, then
            # enough words that the stream outlives the measurement at the simulator's token delay.
            "messages": [
                {"role": "user", "content": "echo " + " ".join([args.marker] + ["word"] * args.words)}
            ],
        }
        payload = json.dumps(body, separators=(",", ":")).encode()
        host = args.addr
        self.request = (
            f"POST /v1/chat/completions HTTP/1.1\r\nhost: {host}\r\n"
            "authorization: Bearer bench\r\ncontent-type: application/json\r\n"
            "accept: text/event-stream\r\nconnection: keep-alive\r\n"
            f"content-length: {len(payload)}\r\n\r\n"
        ).encode() + payload
        self.marker = args.marker.encode()

    def error(self, what: str) -> None:
        self.errors[what] = self.errors.get(what, 0) + 1

    def count(self, code: int) -> int:
        return sum(1 for s in self.state if s == code)

    async def one(self, i: int) -> None:
        host, port = self.args.addr.rsplit(":", 1)
        self.state[i] = CONNECTING
        t_start = time.monotonic()
        try:
            reader, writer = await asyncio.wait_for(
                asyncio.open_connection(host, int(port), limit=1 << 20), self.args.connect_timeout
            )
        except (OSError, asyncio.TimeoutError) as e:
            self.state[i] = FAILED
            self.error(f"connect: {type(e).__name__}: {getattr(e, 'strerror', None) or e}")
            return
        self.writers[i] = writer
        try:
            writer.write(self.request)
            await writer.drain()
            head = await asyncio.wait_for(
                reader.readuntil(b"\r\n\r\n"), self.args.first_token_timeout
            )
            status = head.split(b" ", 2)[1].decode(errors="replace")
            self.statuses[status] = self.statuses.get(status, 0) + 1
            if status != "200":
                self.state[i] = FAILED
                self.error(f"status {status}")
                return
            self.state[i] = HEADERS
            # Read the body as it arrives; the stream is open once the marker (first token) is in.
            seen = b""
            while not self.stop.is_set():
                timeout = None if self.state[i] == OPEN else self.args.first_token_timeout
                chunk = await asyncio.wait_for(reader.read(65536), timeout)
                if not chunk:
                    if self.state[i] == OPEN:
                        self.state[i] = CLOSED
                        self.error("stream ended during the measurement")
                    else:
                        self.state[i] = FAILED
                        self.error("stream ended before its first token")
                    return
                self.bytes_read += len(chunk)
                if self.state[i] != OPEN:
                    seen = (seen + chunk)[-4096:]
                    if self.marker in seen:
                        self.state[i] = OPEN
                        self.first_token_s.append(time.monotonic() - t_start)
                        seen = b""
        except asyncio.TimeoutError:
            self.state[i] = FAILED
            self.error("first token timeout")
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as e:
            if not self.stop.is_set():
                self.state[i] = FAILED if self.state[i] != OPEN else CLOSED
                self.error(f"read: {type(e).__name__}")
        except asyncio.CancelledError:
            pass

    def progress(self) -> str:
        return (
            f"t={time.monotonic() - self.t0:5.1f}s open={self.count(OPEN)} "
            f"waiting={self.count(CONNECTING) + self.count(HEADERS)} failed={self.count(FAILED)} "
            f"closed={self.count(CLOSED)} pending={self.count(PENDING)}"
        )

    async def main(self) -> dict:
        a = self.args
        idle = [read_status(a.gateway_pid) for _ in range(3)]
        idle_sim = read_status(a.sim_pid) if a.sim_pid else {}
        report: dict = {
            "n": a.n,
            "rate": a.rate,
            "words": a.words,
            "idle": {"gateway": idle[-1], "sim": idle_sim, "gateway_fds": count_fds(a.gateway_pid)},
        }
        tasks: list[asyncio.Task] = []
        ramp_start = time.monotonic()
        last_log = 0.0
        # Open at a bounded rate: stream i starts at ramp_start + i / rate.
        for i in range(a.n):
            due = ramp_start + i / a.rate
            now = time.monotonic()
            if due > now:
                await asyncio.sleep(due - now)
            tasks.append(asyncio.create_task(self.one(i)))
            if now - last_log >= 1.0:
                last_log = now
                print(f"[streams] ramp {self.progress()}", file=sys.stderr)
        report["ramp_s"] = round(time.monotonic() - ramp_start, 2)
        # Wait until every stream has its first token or failed (bounded).
        wait_end = time.monotonic() + a.ramp_timeout
        while time.monotonic() < wait_end:
            if self.count(CONNECTING) + self.count(HEADERS) + self.count(PENDING) == 0:
                break
            await asyncio.sleep(0.5)
            if time.monotonic() - last_log >= 2.0:
                last_log = time.monotonic()
                print(f"[streams] wait {self.progress()}", file=sys.stderr)
        report["all_first_tokens_s"] = round(time.monotonic() - ramp_start, 2)
        print(f"[streams] measuring {self.progress()}", file=sys.stderr)
        samples = []
        for k in range(a.samples):
            s = {
                "t": round(time.monotonic() - ramp_start, 2),
                "open": self.count(OPEN),
                "gateway": read_status(a.gateway_pid),
                "gateway_fds": count_fds(a.gateway_pid),
            }
            if a.sim_pid:
                s["sim"] = read_status(a.sim_pid)
            samples.append(s)
            if k + 1 < a.samples:
                await asyncio.sleep(a.interval)
        report["samples"] = samples
        report["open_at_end"] = self.count(OPEN)
        print(f"[streams] done {self.progress()}", file=sys.stderr)
        self.stop.set()
        for w in self.writers:
            if w is not None:
                w.close()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await asyncio.sleep(2.0)
        report["after_close"] = {"gateway": read_status(a.gateway_pid), "gateway_fds": count_fds(a.gateway_pid)}
        report["failed"] = self.count(FAILED)
        report["closed_early"] = self.count(CLOSED)
        report["never_started"] = self.count(PENDING)
        report["errors"] = dict(sorted(self.errors.items(), key=lambda kv: -kv[1]))
        report["statuses"] = self.statuses
        ft = sorted(self.first_token_s)
        if ft:
            report["first_token_s"] = {
                "p50": round(ft[len(ft) // 2], 3),
                "p99": round(ft[min(len(ft) - 1, int(len(ft) * 0.99))], 3),
                "max": round(ft[-1], 3),
            }
        report["client_bytes_read"] = self.bytes_read
        report["client_rss"] = read_status_self()
        return report


def read_status_self() -> dict[str, int]:
    import os

    return read_status(os.getpid())


async def amain(args: argparse.Namespace) -> dict:
    run = Run(args)
    try:
        return await asyncio.wait_for(run.main(), args.deadline)
    except asyncio.TimeoutError:
        print(f"[streams] hard deadline {args.deadline}s reached: {run.progress()}", file=sys.stderr)
        return {"n": args.n, "error": f"deadline {args.deadline}s reached", "progress": run.progress()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--addr", required=True, help="gateway host:port (127.0.0.1 only)")
    p.add_argument("--model", default="streams", help="route name")
    p.add_argument("--n", type=int, default=10000, help="concurrent streams")
    p.add_argument("--rate", type=float, default=2000, help="connections opened per second")
    p.add_argument("--words", type=int, default=60, help="answer length in tokens")
    p.add_argument("--marker", default="ballaststreammarker")
    p.add_argument("--gateway-pid", type=int, required=True)
    p.add_argument("--sim-pid", type=int, default=0)
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--interval", type=float, default=2.0, help="seconds between samples")
    p.add_argument("--connect-timeout", type=float, default=10.0)
    p.add_argument("--first-token-timeout", type=float, default=30.0)
    p.add_argument("--ramp-timeout", type=float, default=40.0, help="wait this long for first tokens after the ramp")
    p.add_argument("--deadline", type=float, default=150.0, help="hard limit for the whole run, seconds")
    p.add_argument("--out", required=True)
    args = p.parse_args()
    if not args.addr.startswith("127.0.0.1:"):
        p.error("--addr must be 127.0.0.1:PORT")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard, args.n + 256) if hard != resource.RLIM_INFINITY else args.n + 256
    if soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    if want < args.n + 64:
        print(f"[streams] warning: open-file limit {hard} < {args.n} streams", file=sys.stderr)
    report = asyncio.run(amain(args))
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=1)


if __name__ == "__main__":
    main()
