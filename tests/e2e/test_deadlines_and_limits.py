"""A second gateway with a short request deadline and the default body limit: upstreams that never
answer or stall mid-stream, and the 16 MiB default."""

from __future__ import annotations

from pathlib import Path

import anthropic
import openai
import pytest

from conftest import ANTHROPIC_KEY, CLIENT_TIMEOUT, GATEWAY_KEY, OPENAI_KEY, Proc, Sim

DEADLINE_SECS = 1
DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
HELLO = [{"role": "user", "content": "hello"}]
# 40 tokens: at the slowed pace below the stream outlives the deadline by seconds.
LONG_ECHO = [{"role": "user", "content": "echo " + " ".join(f"word{i}" for i in range(40))}]


@pytest.fixture(scope="module")
def short_gateway(ballast_bin: str, log_dir: Path, sim: Sim):
    config = log_dir / "ballast-short.toml"
    config.write_text(
        f"""
[server]
connect_timeout = "1s"

[policy]
deadline = "{DEADLINE_SECS}s"

[auth]
gateway_keys = ["{GATEWAY_KEY}"]

[providers.anth]
kind = "anthropic"
base_url = "{sim.base_url}"
api_key = "{ANTHROPIC_KEY}"

[providers.oai]
kind = "openai"
base_url = "{sim.base_url}/v1"
api_key = "{OPENAI_KEY}"

[routes."gpt-4.1"]
targets = ["oai/gpt-4.1"]

[routes."claude-sonnet-4-5"]
targets = ["anth/claude-sonnet-4-5"]
"""
    )
    proc = Proc(
        "gateway-short",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield proc.base_url
    proc.stop()


@pytest.fixture
def oai_short(short_gateway: str):
    c = openai.OpenAI(base_url=short_gateway + "/v1", api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield c
    c.close()


@pytest.fixture
def anth_short(short_gateway: str):
    c = anthropic.Anthropic(base_url=short_gateway, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield c
    c.close()


def test_openai_upstream_hang_is_504(oai_short: openai.OpenAI, sim: Sim):
    sim.set_faults({"hang": {"rate": 1.0}})
    with pytest.raises(openai.InternalServerError) as exc:
        oai_short.chat.completions.create(model="gpt-4.1", messages=HELLO)
    e = exc.value
    assert e.status_code == 504
    assert "oai/gpt-4.1" in e.message, e.message
    assert e.response.headers.get("x-request-id")


def test_anthropic_upstream_hang_is_504(anth_short: anthropic.Anthropic, sim: Sim):
    sim.set_faults({"hang": {"rate": 1.0}})
    with pytest.raises(anthropic.GatewayTimeoutError) as exc:
        with anth_short.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=HELLO) as s:
            s.get_final_message()
    e = exc.value
    assert e.status_code == 504
    assert e.body["error"]["type"] == "timeout_error"
    assert "anth/claude-sonnet-4-5" in e.body["error"]["message"]


def test_openai_stream_past_deadline_raises(oai_short: openai.OpenAI, sim: Sim):
    sim.set_faults({"slow": {"factor": 30}})
    stream = oai_short.chat.completions.create(model="gpt-4.1", messages=LONG_ECHO, stream=True)
    text = ""
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                text += chunk.choices[0].delta.content or ""
    assert "oai/gpt-4.1" in exc.value.message, exc.value.message
    assert text != LONG_ECHO[0]["content"][5:], "a cut stream is not presented as complete"


def test_anthropic_stream_past_deadline_raises(anth_short: anthropic.Anthropic, sim: Sim):
    sim.set_faults({"slow": {"factor": 30}})
    with pytest.raises(anthropic.APIError) as exc:
        with anth_short.messages.stream(model="claude-sonnet-4-5", max_tokens=256, messages=LONG_ECHO) as s:
            s.get_final_message()
    assert "anth/claude-sonnet-4-5" in str(exc.value)


def test_default_body_limit_is_16_mib(oai_short: openai.OpenAI, anth_short: anthropic.Anthropic, sim: Sim):
    # Well over the first gateway's limit, well under the default: served.
    medium = "y" * (1024 * 1024)
    oai_short.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": medium}])
    big = "x" * (DEFAULT_BODY_LIMIT + 1024)
    with pytest.raises(openai.APIStatusError) as exc:
        oai_short.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": big}])
    assert exc.value.status_code == 413
    with pytest.raises(anthropic.ContentTooLargeError):
        anth_short.messages.create(model="claude-sonnet-4-5", max_tokens=5, messages=[{"role": "user", "content": big}])
    assert len(sim.generation_requests()) == 1
