"""What the gateway writes to its log: every failure once, with the request id; never prompt or
answer text; never a key."""

from __future__ import annotations

import time

import anthropic
import openai
import pytest

from conftest import ANTHROPIC_KEY, CLIENT_TIMEOUT, GATEWAY_KEY, OPENAI_KEY, Gateway

MARKER = "zebra-marker-91f3"


def log_lines_with(gateway: Gateway, needle: str, wait: float = 2.0, until=bool) -> list[str]:
    """Log lines mentioning `needle`, waiting briefly until `until(lines)` holds (by default: there are
    some). The gateway writes its log in batches, so one request's lines can arrive a batch apart."""
    deadline = time.monotonic() + wait
    while True:
        lines = [line for line in gateway.proc.log_path.read_text("utf-8", "replace").splitlines() if needle in line]
        if until(lines) or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def problems(lines: list[str]) -> list[str]:
    return [line for line in lines if " WARN " in line or " ERROR " in line]


def test_success_is_logged_once_with_its_request_id(oai: openai.OpenAI, gateway: Gateway):
    raw = oai.chat.completions.with_raw_response.create(model="gpt-4.1", messages=[{"role": "user", "content": "hi"}])
    rid = raw.headers["x-request-id"]
    lines = log_lines_with(gateway, rid)
    assert len(lines) == 1, lines
    assert problems(lines) == []


@pytest.mark.parametrize("model", ["unreachable-chat", "gpt-nonexistent"])
def test_each_failure_is_logged_once_with_its_request_id(oai: openai.OpenAI, gateway: Gateway, model: str):
    with pytest.raises(openai.APIStatusError) as exc:
        oai.chat.completions.create(model=model, messages=[{"role": "user", "content": "hi"}])
    rid = exc.value.response.headers["x-request-id"]
    log_lines_with(gateway, rid, until=lambda lines: problems(lines))
    time.sleep(0.1)  # longer than a batch: a second line would be written by now
    lines = log_lines_with(gateway, rid)
    assert len(problems(lines)) == 1, "one WARN/ERROR line per failed request, got:\n" + "\n".join(lines)


def test_no_prompt_answer_or_key_in_logs(gateway: Gateway, oai: openai.OpenAI, anth: anthropic.Anthropic):
    text = f"echo {MARKER} secret words"
    oai.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
    list(oai.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}], stream=True))
    anth.messages.create(model="claude-sonnet-4-5", max_tokens=64, system=MARKER, messages=[{"role": "user", "content": text}])
    with anth.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=[{"role": "user", "content": text}]) as s:
        s.get_final_message()
    # Failures too: a wrong key and a request for an unknown model.
    bad = openai.OpenAI(
        base_url=gateway.openai_base_url, api_key=f"wrong-{MARKER}", timeout=CLIENT_TIMEOUT, max_retries=0
    )
    with pytest.raises(openai.AuthenticationError):
        bad.chat.completions.create(model="gpt-4.1", messages=[{"role": "user", "content": text}])
    with pytest.raises(openai.NotFoundError):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": text}])

    time.sleep(0.2)
    log = gateway.proc.log_path.read_text("utf-8", "replace")
    for secret in (MARKER, "secret words", GATEWAY_KEY, OPENAI_KEY, ANTHROPIC_KEY):
        leaked = [line for line in log.splitlines() if secret in line]
        assert not leaked, f"{secret!r} appears in the gateway log:\n" + "\n".join(leaked[:5])
