"""End-to-end harness: real `ballast` processes (two provider simulators and a gateway) on loopback
ports chosen by the OS, driven by the official `openai` and `anthropic` Python SDKs.

Everything is started once per session and stopped at its end. Every test starts with the
simulators' recorded requests cleared and ends with their faults cleared, so tests do not depend on
each other's order. Every client has a short timeout and no retries: no test can hang or wait on
backoff.

The binary comes from `BALLAST_BIN` (CI sets it to the repository's `target/debug/ballast`):

    cargo build -p ballast
    python3 -m venv .venv-e2e && .venv-e2e/bin/pip install -r tests/e2e/requirements.txt
    BALLAST_BIN=target/debug/ballast .venv-e2e/bin/pytest -q tests/e2e

Each process's output is kept in pytest's temporary directory (`ballast-e2e*/gateway.log`, …).
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import anthropic
import httpx2 as httpx
import openai
import pytest

GATEWAY_KEY = "gw-test-key"
ANTHROPIC_KEY = "sim-anthropic-key"
OPENAI_KEY = "sim-openai-key"
# Small enough that the oversize test stays cheap, large enough for every other request.
BODY_LIMIT = 256 * 1024

# Seconds. Startup waits for the "listening on" line; clients give up well before the per-test limit.
STARTUP_TIMEOUT = 15.0
CLIENT_TIMEOUT = 10.0
PER_TEST_TIMEOUT = 30

# Route name -> (provider label, upstream model). The upstream models differ from the route names so
# the tests can see that the gateway rewrote `model`.
ROUTES: dict[str, list[str]] = {
    "claude-sonnet-4-5": ["anth/claude-sonnet-4-5-20250929"],
    "gpt-4.1": ["oai/gpt-4.1-2025-04-14"],
    # First target on the second simulator (made `down` or failing by the failover tests).
    "failover-chat": ["oai-b/gpt-4.1", "oai/gpt-4.1-mini"],
    "failover-messages": ["anth-b/claude-opus-4-1", "anth/claude-haiku-4-5"],
    # Targets on ports where nothing listens.
    "unreachable-chat": ["oai-nowhere/gpt-4.1"],
    "unreachable-messages": ["anth-nowhere/claude-sonnet-4-5"],
    "all-dead-chat": ["oai-nowhere/gpt-4.1", "oai-nowhere2/gpt-4.1-mini"],
    "all-dead-messages": ["anth-nowhere/claude-sonnet-4-5", "anth-nowhere2/claude-haiku-4-5"],
}


# --------------------------------------------------------------------------------------------------
# pytest hooks


def pytest_configure(config: pytest.Config) -> None:
    # Route names are the gateway's; the SDK's model-deprecation notices about them are noise here.
    config.addinivalue_line("filterwarnings", "ignore:The model .* is deprecated:DeprecationWarning")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """A hard per-test limit (pytest-timeout) so a hung gateway fails one test instead of the run."""
    if not config.pluginmanager.hasplugin("timeout"):
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(PER_TEST_TIMEOUT))


# --------------------------------------------------------------------------------------------------
# Processes


def ballast_binary() -> str:
    path = os.environ.get("BALLAST_BIN")
    if not path:
        pytest.exit(
            "BALLAST_BIN is not set: build the gateway (`cargo build -p ballast`) and run the tests with "
            "BALLAST_BIN=target/debug/ballast",
            returncode=2,
        )
    p = Path(path)
    if not p.is_absolute() and not p.exists():
        # A path relative to the repository root works from any working directory.
        p = Path(__file__).resolve().parents[2] / p
    if not p.is_file() or not os.access(p, os.X_OK):
        pytest.exit(f"BALLAST_BIN={path!r} is not an executable file: build it with `cargo build -p ballast`", returncode=2)
    return str(p.resolve())


def _die_with_parent() -> None:
    """Runs in the child before exec: on Linux, have the kernel stop it if pytest itself dies, so an
    interrupted run leaves no gateway or simulator behind."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    except Exception:  # noqa: BLE001 (best effort: not Linux, no libc)
        pass


class Proc:
    """A child process whose stdout and stderr go to a log file, started and waited for by the line
    announcing its address."""

    def __init__(self, name: str, args: list[str], announce: str, log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 (closed in stop)
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "info"), "NO_COLOR": "1"},
            preexec_fn=_die_with_parent if sys.platform.startswith("linux") else None,
        )
        # Drain stdout for the process's whole life so a full pipe can never block it.
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.base_url = self._wait_for(re.compile(re.escape(announce) + r" (http://\S+)"))

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for raw in self.proc.stdout:
            self._log.write(raw)
            self._log.flush()
            self._lines.put(raw.decode("utf-8", "replace"))
        self._lines.put(None)

    def _wait_for(self, pattern: re.Pattern[str]) -> str:
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                self.stop()
                raise RuntimeError(f"{self.name} did not announce its address within {STARTUP_TIMEOUT}s:\n{self.log_tail()}")
            try:
                line = self._lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                code = self.proc.wait(timeout=5)
                raise RuntimeError(f"{self.name} exited with {code} before listening:\n{self.log_tail()}")
            m = pattern.search(line)
            if m:
                return m.group(1).rstrip("/")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text("utf-8", "replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self._reader.join(timeout=2)
        self._log.close()


# --------------------------------------------------------------------------------------------------
# Simulator control plane


class Sim:
    """A running `ballast sim` and its control plane (`/_sim/…`)."""

    def __init__(self, proc: Proc) -> None:
        self.proc = proc
        self.base_url = proc.base_url
        self.port = int(self.base_url.rsplit(":", 1)[1])
        # No keep-alive: `down` closes every connection, and a stale pooled one must not fail a call.
        self.http = httpx.Client(
            base_url=self.base_url, timeout=5.0, limits=httpx.Limits(max_keepalive_connections=0)
        )

    def set_faults(self, faults: dict[str, Any]) -> None:
        r = self.http.post("/_sim/faults", json=faults)
        assert r.status_code == 200, f"sim refused faults {faults}: {r.status_code} {r.text}"

    def clear_faults(self) -> None:
        self.http.delete("/_sim/faults").raise_for_status()

    def faults(self) -> dict[str, Any]:
        return self.http.get("/_sim/faults").json()

    def reset(self) -> None:
        self.http.post("/_sim/reset").raise_for_status()

    def requests(self) -> list[dict[str, Any]]:
        r = self.http.get("/_sim/requests")
        r.raise_for_status()
        return r.json()

    def generation_requests(self) -> list[dict[str, Any]]:
        """Recorded requests to the generation endpoints (not model listings)."""
        return [r for r in self.requests() if r["path"].split("?")[0] in ("/v1/messages", "/v1/chat/completions")]

    def stats(self) -> dict[str, Any]:
        r = self.http.get("/_sim/stats")
        r.raise_for_status()
        return r.json()

    def healthy(self) -> bool:
        try:
            return self.http.get("/_sim/health", timeout=0.5).status_code == 200
        except httpx.TransportError:
            return False

    def go_down(self, duration_secs: float) -> None:
        """Stops listening for `duration_secs` (the control plane goes too, so the fault lifts itself)."""
        try:
            self.set_faults({"down": {"rate": 1.0, "duration_secs": duration_secs}})
        except httpx.TransportError:
            pass  # the simulator may close this very connection as it goes down
        deadline = time.monotonic() + 2.0
        while self.healthy():
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator {self.base_url} is still listening after `down`")
            time.sleep(0.02)

    def wait_until_up(self, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if time.monotonic() > deadline:
                raise AssertionError(f"simulator {self.base_url} did not come back within {timeout}s")
            time.sleep(0.05)


def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("ballast-e2e")


@pytest.fixture(scope="session")
def ballast_bin() -> str:
    return ballast_binary()


def _start_sim(name: str, ballast_bin: str, log_dir: Path, *extra: str) -> Proc:
    return Proc(name, [ballast_bin, "sim", "--listen", "127.0.0.1:0", *extra], "ballast-sim listening on", log_dir)


@pytest.fixture(scope="session")
def sim(ballast_bin: str, log_dir: Path):
    """The primary upstream: serves every healthy target (Anthropic and OpenAI APIs)."""
    proc = _start_sim("sim-a", ballast_bin, log_dir, "--seed", "7", "--token-delay-ms", "1")
    s = Sim(proc)
    yield s
    s.http.close()
    proc.stop()


@pytest.fixture(scope="session")
def sim_b(ballast_bin: str, log_dir: Path):
    """The second upstream: the first target of the failover routes."""
    proc = _start_sim("sim-b", ballast_bin, log_dir, "--seed", "8")
    s = Sim(proc)
    yield s
    s.http.close()
    proc.stop()


@dataclass
class Gateway:
    base_url: str
    proc: Proc
    routes: dict[str, list[str]] = field(default_factory=dict)
    dead_ports: tuple[int, int] = (0, 0)

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"


def gateway_config(sim: Sim, sim_b: Sim, dead: tuple[int, int], store: Path) -> str:
    def provider(name: str, kind: str, root: str, key: str) -> str:
        base = root + "/v1" if kind == "openai" else root
        return f'[providers.{name}]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "{key}"\n'

    nowhere, nowhere2 = (f"http://127.0.0.1:{p}" for p in dead)
    parts = [
        "[server]",
        f"body_limit = {BODY_LIMIT}",
        'connect_timeout = "2s"',
        "",
        # These tests check one request at a time: no same-target retries, and breakers and the
        # retry budget out of the way (the resilience tests exercise those).
        "[policy]",
        'deadline = "15s"',
        "retries = 0",
        "retry_budget_min_per_second = 10000.0",
        "[policy.breaker]",
        "consecutive_failures = 1000000",
        "min_requests = 1000000",
        # Detection still opens incidents, but traffic is not routed around them here.
        "[signal]",
        "eject = false",
        # Nor do probes add requests the tests would count.
        "[probes]",
        'interval = "0s"',
        "[incidents]",
        f'store = "{store}"',
        "",
        "[auth]",
        f'gateway_keys = ["{GATEWAY_KEY}"]',
        "",
        provider("anth", "anthropic", sim.base_url, ANTHROPIC_KEY),
        provider("oai", "openai", sim.base_url, OPENAI_KEY),
        provider("anth-b", "anthropic", sim_b.base_url, ANTHROPIC_KEY),
        provider("oai-b", "openai", sim_b.base_url, OPENAI_KEY),
        provider("anth-nowhere", "anthropic", nowhere, ANTHROPIC_KEY),
        provider("anth-nowhere2", "anthropic", nowhere2, ANTHROPIC_KEY),
        provider("oai-nowhere", "openai", nowhere, OPENAI_KEY),
        provider("oai-nowhere2", "openai", nowhere2, OPENAI_KEY),
    ]
    for route, targets in ROUTES.items():
        parts.append(f"[routes.{json.dumps(route)}]\ntargets = {json.dumps(targets)}\n")
    return "\n".join(parts)


@pytest.fixture(scope="session")
def gateway(ballast_bin: str, log_dir: Path, sim: Sim, sim_b: Sim):
    dead = (free_port(), free_port())
    config = log_dir / "ballast.toml"
    config.write_text(gateway_config(sim, sim_b, dead, log_dir / "incidents.sqlite"))
    proc = Proc(
        "gateway",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield Gateway(base_url=proc.base_url, proc=proc, routes=ROUTES, dead_ports=dead)
    proc.stop()


@pytest.fixture(autouse=True)
def _clean_sims(sim: Sim, sim_b: Sim):
    """Each test sees empty request logs and leaves no fault behind (even when it fails)."""
    for s in (sim, sim_b):
        s.wait_until_up()
        s.clear_faults()
        s.reset()
    yield
    for s in (sim, sim_b):
        # A timed `down` may still be in force: the control plane is unreachable until it lifts.
        s.wait_until_up()
        s.clear_faults()


# --------------------------------------------------------------------------------------------------
# Clients


@pytest.fixture
def oai(gateway: Gateway) -> openai.OpenAI:
    client = openai.OpenAI(base_url=gateway.openai_base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def anth(gateway: Gateway) -> anthropic.Anthropic:
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def raw(gateway: Gateway) -> httpx.Client:
    """A plain HTTP client on the gateway, for bodies no SDK would send."""
    client = httpx.Client(base_url=gateway.base_url, timeout=CLIENT_TIMEOUT)
    yield client
    client.close()


# --------------------------------------------------------------------------------------------------
# Helpers shared by the test modules


WEATHER_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "description": "City name"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1},
        "detailed": {"type": "boolean"},
        "optional_note": {"type": "string"},
    },
    "required": ["city", "unit", "days", "detailed"],
}


def assert_matches_schema(value: Any, schema: dict[str, Any], where: str = "arguments") -> None:
    """A small JSON-schema check (type, enum, required, properties, items): enough for tool args."""
    if "enum" in schema:
        assert value in schema["enum"], f"{where}: {value!r} not in {schema['enum']}"
    ty = schema.get("type")
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "number": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if ty in checks:
        assert checks[ty](value), f"{where}: {value!r} is not of type {ty}"
    if ty == "object":
        for name in schema.get("required", []):
            assert name in value, f"{where}: required property {name!r} missing from {value!r}"
        props = schema.get("properties", {})
        for name, v in value.items():
            assert name in props, f"{where}: unexpected property {name!r}"
            assert_matches_schema(v, props[name], f"{where}.{name}")
    if ty == "array" and "items" in schema:
        for i, v in enumerate(value):
            assert_matches_schema(v, schema["items"], f"{where}[{i}]")


def assert_no_secret_in_headers(headers: dict[str, str], secret: str) -> None:
    leaked = {k: v for k, v in headers.items() if secret in v}
    assert not leaked, f"the gateway key reached the upstream in headers {sorted(leaked)}"
