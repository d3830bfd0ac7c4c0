"""Privacy end to end: traffic whose prompts and answers carry a unique marker, through a gateway
that exports traces to a collector, announces incidents to a webhook and keeps them in SQLite. The
marker must appear in no log line, no /metrics output, no exported span, no alert body and no byte of
the SQLite file — while each of those did receive something (so the check cannot pass by silence)."""

from __future__ import annotations

import sqlite3
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import anthropic
import httpx2 as httpx
import openai
import pytest

from conftest import ANTHROPIC_KEY, CLIENT_TIMEOUT, GATEWAY_KEY, OPENAI_KEY, Proc, Sim

MARKER = "okapi-marker-5d21"


class Receiver:
    """One HTTP server standing in for the OTLP collector (`/v1/traces`) and the alert webhook
    (`/hook`): it keeps every body it is sent."""

    def __init__(self) -> None:
        self.bodies: dict[str, list[bytes]] = {"/v1/traces": [], "/hook": []}
        lock = threading.Lock()
        bodies = self.bodies

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (the http.server API)
                n = int(self.headers.get("content-length", "0"))
                body = self.rfile.read(n)
                with lock:
                    bodies.setdefault(self.path, []).append(body)
                self.send_response(200)
                self.send_header("content-length", "0")
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()


@pytest.fixture
def private(ballast_bin: str, log_dir: Path):
    sim = Sim(Proc("sim-privacy", [ballast_bin, "sim", "--listen", "127.0.0.1:0"], "ballast-sim listening on", log_dir))
    receiver = Receiver()
    store = log_dir / "incidents-privacy.sqlite"
    config = log_dir / "ballast-privacy.toml"
    config.write_text(
        "\n".join(
            [
                "[policy]",
                "retries = 0",
                "[probes]",
                'interval = "0s"',
                "[incidents]",
                f'store = "{store}"',
                "[telemetry]",
                f'otlp_endpoint = "{receiver.url}"',
                "[[alerts.sinks]]",
                'kind = "webhook"',
                f'url = "{receiver.url}/hook"',
                "[auth]",
                f'gateway_keys = ["{GATEWAY_KEY}"]',
                "[providers.oai]",
                'kind = "openai"',
                f'base_url = "{sim.base_url}/v1"',
                f'api_key = "{OPENAI_KEY}"',
                "[providers.anth]",
                'kind = "anthropic"',
                f'base_url = "{sim.base_url}"',
                f'api_key = "{ANTHROPIC_KEY}"',
                "[routes.private-chat]",
                'targets = ["oai/gpt-4.1"]',
                "[routes.private-claude]",
                'targets = ["anth/claude-sonnet-4-5", "oai/gpt-4.1"]',
            ]
        )
    )
    gw = Proc("gateway-privacy", [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"], "ballast listening on", log_dir)
    yield sim, gw, receiver, store
    gw.stop()
    sim.proc.stop()
    receiver.stop()


def test_the_marker_reaches_no_log_metric_span_alert_or_store(private):
    sim, gw, receiver, store = private
    oai = openai.OpenAI(base_url=gw.base_url + "/v1", api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    anth = anthropic.Anthropic(base_url=gw.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    text = f"echo {MARKER} and more words"
    traced = {"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}

    answer = oai.chat.completions.create(
        model="private-chat", messages=[{"role": "system", "content": MARKER}, {"role": "user", "content": text}],
        extra_headers=traced,
    )
    assert MARKER in (answer.choices[0].message.content or ""), "the answer must carry the marker for this test to mean anything"
    list(oai.chat.completions.create(model="private-chat", messages=[{"role": "user", "content": text}], stream=True))
    # Translated: an Anthropic client whose route falls over to the OpenAI target below.
    anth.messages.create(model="private-claude", max_tokens=64, system=MARKER, messages=[{"role": "user", "content": text}])
    with anth.messages.stream(model="private-claude", max_tokens=64, messages=[{"role": "user", "content": text}]) as s:
        s.get_final_message()

    # The Anthropic API fails every request: a hard-failure incident opens on its target (alert,
    # store) while the route falls over, with the marker in every prompt.
    sim.set_faults({"error": {"status": 503, "rate": 1.0, "api": "anthropic"}})
    for _ in range(8):
        anth.messages.create(model="private-claude", max_tokens=64, messages=[{"role": "user", "content": text}])
    sim.clear_faults()

    deadline = time.monotonic() + 10
    while not receiver.bodies["/hook"] and time.monotonic() < deadline:
        time.sleep(0.1)
    assert receiver.bodies["/hook"], "no alert was sent: the incident did not open"
    metrics = httpx.get(gw.base_url + "/metrics", timeout=5).text
    assert "ballast_requests_total" in metrics
    gw.stop()  # a clean shutdown: the last spans are exported and the store is written

    spans = receiver.bodies["/v1/traces"]
    assert spans, "no spans were exported"
    assert any(b"4bf92f3577b34da6a3ce929d0e0e4736" in b or bytes.fromhex("4bf92f3577b34da6a3ce929d0e0e4736") in b for b in spans)
    with sqlite3.connect(store) as db:
        assert db.execute("SELECT count(*) FROM incidents").fetchone()[0] >= 1
    log = gw.log_path.read_bytes()
    assert b"trace_id=4bf92f3577b34da6a3ce929d0e0e4736" in log, "the request log line names its trace"

    needle = MARKER.encode()
    places = {
        "the log": [log],
        "/metrics": [metrics.encode()],
        "an exported span": spans,
        "an alert body": receiver.bodies["/hook"],
        "the SQLite file": [store.read_bytes()] + [p.read_bytes() for p in store.parent.glob(store.name + "-*")],
    }
    for where, blobs in places.items():
        assert not any(needle in b for b in blobs), f"the marker appears in {where}"
