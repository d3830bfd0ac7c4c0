"""Routes with two targets: the first on the second simulator (`sim_b`), the second on the primary.
Connection failures, 5xx and 429 fall over to the next target; client errors (4xx) do not."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from conftest import Sim

OAI_ROUTE = "failover-chat"
ANTH_ROUTE = "failover-messages"
HELLO = [{"role": "user", "content": "hello"}]
# Long enough for the handful of requests below, short enough to keep the suite quick: the
# simulator's control plane is unreachable while it is down, so the fault must lift by itself.
DOWN_SECS = 3.0


def test_failover_when_first_target_is_down(oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim, sim_b: Sim):
    sim_b.go_down(DOWN_SECS)

    raw = oai.chat.completions.with_raw_response.create(model=OAI_ROUTE, messages=HELLO)
    assert raw.headers.get("x-ballast-target") == "oai/gpt-4.1-mini"
    assert raw.headers.get("x-ballast-route") == OAI_ROUTE
    assert raw.headers.get("x-ballast-attempts") == "2"
    assert raw.parse().model == "gpt-4.1-mini"

    chunks = list(oai.chat.completions.create(model=OAI_ROUTE, messages=HELLO, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == raw.parse().choices[0].message.content

    raw = anth.messages.with_raw_response.create(model=ANTH_ROUTE, max_tokens=64, messages=HELLO)
    assert raw.headers.get("x-ballast-target") == "anth/claude-haiku-4-5"
    assert raw.headers.get("x-ballast-attempts") == "2"
    assert raw.parse().model == "claude-haiku-4-5"

    with anth.messages.stream(model=ANTH_ROUTE, max_tokens=64, messages=HELLO) as stream:
        assert stream.response.headers.get("x-ballast-target") == "anth/claude-haiku-4-5"
        assert stream.get_final_message().content[0].text

    served = [(r["api"], r["model"]) for r in sim.generation_requests()]
    assert served == [
        ("openai", "gpt-4.1-mini"),
        ("openai", "gpt-4.1-mini"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-haiku-4-5"),
    ]
    # The first simulator never saw a request: wait for it to come back and ask it.
    sim_b.wait_until_up(timeout=DOWN_SECS + 5)
    assert sim_b.requests() == []
    assert sim_b.stats()["total_requests"] == 0


@pytest.mark.parametrize("fault", [{"error": {"status": 503}}, {"error": {"status": 529}}, {"rate_limit": {"retry_after_secs": 1}}])
def test_failover_on_upstream_5xx_and_429(oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim, sim_b: Sim, fault):
    sim_b.set_faults(fault)

    raw = oai.chat.completions.with_raw_response.create(model=OAI_ROUTE, messages=HELLO)
    assert raw.headers.get("x-ballast-target") == "oai/gpt-4.1-mini"
    assert raw.headers.get("x-ballast-attempts") == "2"
    raw = anth.messages.with_raw_response.create(model=ANTH_ROUTE, max_tokens=64, messages=HELLO)
    assert raw.headers.get("x-ballast-target") == "anth/claude-haiku-4-5"
    assert raw.headers.get("x-ballast-attempts") == "2"

    # Streams fall over too (the failure came before the first byte).
    with anth.messages.stream(model=ANTH_ROUTE, max_tokens=64, messages=HELLO) as stream:
        assert stream.response.headers.get("x-ballast-target") == "anth/claude-haiku-4-5"
        stream.get_final_message()

    # Each target saw the request with its own upstream model. A 429 pauses its target for its
    # retry-after: the stream that followed went straight to the fallback.
    rate_limited = "rate_limit" in fault
    primary = [("openai", "gpt-4.1"), ("anthropic", "claude-opus-4-1")]
    if not rate_limited:
        primary.append(("anthropic", "claude-opus-4-1"))
    assert [(r["api"], r["model"]) for r in sim_b.generation_requests()] == primary
    assert [(r["api"], r["model"]) for r in sim.generation_requests()] == [
        ("openai", "gpt-4.1-mini"),
        ("anthropic", "claude-haiku-4-5"),
        ("anthropic", "claude-haiku-4-5"),
    ]
    if rate_limited:
        # Let the pause (retry-after: 1 s) run out before the next test uses these targets.
        time.sleep(1.1)


def test_no_failover_on_upstream_client_error(oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim, sim_b: Sim):
    sim_b.set_faults({"error": {"status": 400}})
    with pytest.raises(openai.BadRequestError) as exc:
        oai.chat.completions.create(model=OAI_ROUTE, messages=HELLO)
    assert "injected error 400" in exc.value.message
    with pytest.raises(anthropic.BadRequestError):
        anth.messages.create(model=ANTH_ROUTE, max_tokens=64, messages=HELLO)
    assert len(sim_b.generation_requests()) == 2
    assert sim.generation_requests() == [], "a 4xx would fail the same everywhere: no second attempt"


def test_all_targets_failing_names_each(oai: openai.OpenAI, sim: Sim, sim_b: Sim):
    sim_b.set_faults({"error": {"status": 503}})
    sim.set_faults({"error": {"status": 500}})
    with pytest.raises(openai.InternalServerError) as exc:
        oai.chat.completions.create(model=OAI_ROUTE, messages=HELLO)
    msg = exc.value.message
    assert "oai-b/gpt-4.1" in msg and "oai/gpt-4.1-mini" in msg, msg
    assert "503" in msg and "500" in msg, msg
