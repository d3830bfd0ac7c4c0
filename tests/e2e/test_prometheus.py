"""A real Prometheus scraping a real Ballast: the shipped alert rules load, and the incident alert
goes to firing when a provider starts failing, as seen through Prometheus' own HTTP API."""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import httpx2 as httpx
import pytest

from conftest import GATEWAY_KEY, OPENAI_KEY, Proc, Sim, free_port

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"


def wait_for(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"{what} not seen within {timeout}s (last: {last!r})")


@pytest.fixture
def watched(ballast_bin: str, log_dir: Path):
    """A simulator of its own and a gateway whose route `watched` has only that simulator."""
    sim_proc = Proc("sim-prom", [ballast_bin, "sim", "--listen", "127.0.0.1:0"], "ballast-sim listening on", log_dir)
    sim = Sim(sim_proc)
    config = log_dir / "ballast-prom.toml"
    config.write_text(
        "\n".join(
            [
                "[policy]",
                "retries = 0",
                "[policy.breaker]",
                "consecutive_failures = 1000000",
                "min_requests = 1000000",
                "[auth]",
                f'gateway_keys = ["{GATEWAY_KEY}"]',
                "[providers.oai]",
                'kind = "openai"',
                f'base_url = "{sim.base_url}/v1"',
                f'api_key = "{OPENAI_KEY}"',
                "[routes.watched]",
                'targets = ["oai/gpt-4.1"]',
                "[incidents]",
                f'store = "{log_dir / "incidents-prom.sqlite"}"',
            ]
        )
    )
    gw = Proc("gateway-prom", [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"], "ballast listening on", log_dir)
    yield sim, gw.base_url
    gw.stop()
    sim_proc.stop()


@pytest.fixture
def prometheus(watched, log_dir: Path, tmp_path: Path):
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not installed (scripts/test.sh installs Debian's package)")
    _, gateway = watched
    port = free_port()
    config = tmp_path / "prometheus.yml"
    config.write_text(
        f"""
global:
  scrape_interval: 1s
  evaluation_interval: 1s
rule_files:
  - {RULES}
scrape_configs:
  - job_name: ballast
    metrics_path: /metrics
    static_configs:
      - targets: ["{gateway.removeprefix('http://')}"]
"""
    )
    log = open(log_dir / "prometheus.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen(
        [
            binary,
            f"--config.file={config}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=log,
    )
    api = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5.0)

    def ready():
        try:
            return api.get("/-/ready").status_code == 200
        except httpx.HTTPError:
            return False

    try:
        wait_for(ready, 30, "prometheus ready")
        yield api
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_the_shipped_incident_alert_fires_in_a_real_prometheus(watched, prometheus: httpx.Client):
    sim, gateway = watched
    client = httpx.Client(base_url=gateway, timeout=10.0, headers={"authorization": f"Bearer {GATEWAY_KEY}"})
    body = {"model": "watched", "messages": [{"role": "user", "content": "hi"}]}

    # Prometheus scrapes Ballast and loaded every shipped rule.
    def scraped():
        r = prometheus.get("/api/v1/query", params={"query": 'up{job="ballast"}'}).json()
        return r["data"]["result"] and r["data"]["result"][0]["value"][1] == "1"

    wait_for(scraped, 20, "Ballast scraped")
    groups = prometheus.get("/api/v1/rules").json()["data"]["groups"]
    names = {rule["name"] for g in groups for rule in g["rules"]}
    assert {"BallastIncidentOpen", "BallastErrorBudgetFastBurn", "BallastBreakerOpen"} <= names

    for _ in range(30):
        assert client.post("/v1/chat/completions", json=body).status_code == 200

    def firing():
        alerts = prometheus.get("/api/v1/alerts").json()["data"]["alerts"]
        return [a for a in alerts if a["labels"]["alertname"] == "BallastIncidentOpen" and a["state"] == "firing"]

    assert not firing(), "an incident alert on healthy traffic"

    # The provider starts failing every request: a hard-failure incident opens, and the alert fires.
    sim.set_faults({"error": {"status": 503}})
    for _ in range(10):
        assert client.post("/v1/chat/completions", json=body).status_code == 503
    alerts = wait_for(firing, 30, "BallastIncidentOpen firing")
    signals = {a["labels"]["signal"] for a in alerts}
    assert "hard_failure" in signals, alerts


def test_every_dashboard_query_is_valid_promql(prometheus: httpx.Client):
    """The shipped Grafana dashboard's queries parse and run in a real Prometheus."""
    import json

    dashboard = json.loads((ROOT / "deploy" / "grafana" / "ballast.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    exprs += [a["expr"] for a in dashboard["annotations"]["list"]]
    assert len(exprs) >= 12
    for expr in exprs:
        q = expr.replace("$__rate_interval", "1m").replace("$route", ".*")
        r = prometheus.get("/api/v1/query", params={"query": q})
        assert r.status_code == 200 and r.json()["status"] == "success", f"{expr}: {r.text}"
