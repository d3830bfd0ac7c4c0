"""Errors as each SDK sees them: the right exception class, status and a message a person can act on,
in the client's own API error format."""

from __future__ import annotations

import re

import anthropic
import httpx2 as httpx
import openai
import pytest

from conftest import BODY_LIMIT, CLIENT_TIMEOUT, GATEWAY_KEY, Gateway, Sim

OAI_ROUTE = "gpt-4.1"
ANTH_ROUTE = "claude-sonnet-4-5"
HELLO = [{"role": "user", "content": "hello"}]
# serde_json and most parsers report where: "line 1 column 42"; accept "position N"/"offset N" too.
POSITION = re.compile(r"(line \d+,? column \d+|column \d+|position \d+|offset \d+|byte \d+)", re.I)


def oai_call(client: openai.OpenAI, model: str = OAI_ROUTE, **kw):
    return client.chat.completions.create(model=model, messages=kw.pop("messages", HELLO), **kw)


def anth_call(client: anthropic.Anthropic, model: str = ANTH_ROUTE, **kw):
    return client.messages.create(model=model, max_tokens=64, messages=kw.pop("messages", HELLO), **kw)


def openai_error(body: object) -> dict:
    """The `error` object of an OpenAI error body, checked for its documented shape."""
    assert isinstance(body, dict), f"not an OpenAI error body: {body!r}"
    # The SDK hands `e.body` as the inner `error` object when the body has one.
    err = body.get("error", body)
    assert isinstance(err, dict) and isinstance(err.get("message"), str) and err["message"], body
    assert "type" in err, body
    return err


def anthropic_error(body: object) -> dict:
    assert isinstance(body, dict) and body.get("type") == "error", f"not an Anthropic error body: {body!r}"
    err = body["error"]
    assert isinstance(err.get("type"), str) and isinstance(err.get("message"), str) and err["message"], body
    return err


# --------------------------------------------------------------------------------------------------
# Inbound authentication


def test_openai_wrong_gateway_key(gateway: Gateway, sim: Sim):
    client = openai.OpenAI(base_url=gateway.openai_base_url, api_key="wrong-key", timeout=CLIENT_TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError) as exc:
        oai_call(client)
    e = exc.value
    assert e.status_code == 401
    assert "key" in e.message.lower()
    err = openai_error(e.body)
    assert err.get("code") == "invalid_api_key"
    assert e.response.headers.get("x-request-id")
    assert sim.generation_requests() == [], "an unauthenticated request never reaches a provider"


def test_anthropic_wrong_gateway_key(gateway: Gateway, sim: Sim):
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="wrong-key", timeout=CLIENT_TIMEOUT, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError) as exc:
        anth_call(client)
    e = exc.value
    assert e.status_code == 401
    err = anthropic_error(e.body)
    assert err["type"] == "authentication_error"
    assert "key" in err["message"].lower()
    assert e.response.headers.get("x-request-id")
    assert sim.generation_requests() == []


def test_streaming_requests_fail_before_the_stream_starts(gateway: Gateway, oai: openai.OpenAI, anth: anthropic.Anthropic):
    """Errors known before the first byte are plain error responses, so stream calls raise at once."""
    bad = openai.OpenAI(base_url=gateway.openai_base_url, api_key="wrong-key", timeout=CLIENT_TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        oai_call(bad, stream=True)
    with pytest.raises(openai.NotFoundError):
        oai_call(oai, model="gpt-nonexistent", stream=True)
    with pytest.raises(openai.BadRequestError):
        oai_call(oai, messages=[], stream=True)
    with pytest.raises(anthropic.NotFoundError):
        with anth.messages.stream(model="claude-nonexistent", max_tokens=64, messages=HELLO) as s:
            s.get_final_message()
    with pytest.raises(anthropic.BadRequestError):
        with anth.messages.stream(model=ANTH_ROUTE, max_tokens=64, messages=[]) as s:
            s.get_final_message()


def test_missing_gateway_key_raw(raw: httpx.Client):
    r = raw.post("/v1/chat/completions", json={"model": OAI_ROUTE, "messages": HELLO})
    assert r.status_code == 401
    openai_error(r.json())
    r = raw.post("/v1/messages", json={"model": ANTH_ROUTE, "max_tokens": 5, "messages": HELLO})
    assert r.status_code == 401
    assert anthropic_error(r.json())["type"] == "authentication_error"


def test_models_list_needs_gateway_key(gateway: Gateway):
    client = openai.OpenAI(base_url=gateway.openai_base_url, api_key="wrong-key", timeout=CLIENT_TIMEOUT, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        client.models.list()
    client = anthropic.Anthropic(base_url=gateway.base_url, api_key="wrong-key", timeout=CLIENT_TIMEOUT, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        client.models.list()


# --------------------------------------------------------------------------------------------------
# Unknown model


def test_openai_unknown_model_lists_available(oai: openai.OpenAI, gateway: Gateway):
    with pytest.raises(openai.NotFoundError) as exc:
        oai_call(oai, model="gpt-nonexistent")
    e = exc.value
    assert e.status_code == 404
    assert "gpt-nonexistent" in e.message
    for route in gateway.routes:
        assert route in e.message, f"the 404 lists the available model {route!r}: {e.message}"
    openai_error(e.body)


def test_anthropic_unknown_model_lists_available(anth: anthropic.Anthropic, gateway: Gateway):
    with pytest.raises(anthropic.NotFoundError) as exc:
        anth_call(anth, model="claude-nonexistent")
    e = exc.value
    assert e.status_code == 404
    err = anthropic_error(e.body)
    assert err["type"] == "not_found_error"
    assert "claude-nonexistent" in err["message"]
    for route in gateway.routes:
        assert route in err["message"], f"the 404 lists the available model {route!r}: {err['message']}"


# --------------------------------------------------------------------------------------------------
# Malformed bodies and missing fields (sent raw: no SDK would send them)


AUTH = {"authorization": f"Bearer {GATEWAY_KEY}"}
ANTH_AUTH = {"x-api-key": GATEWAY_KEY, "anthropic-version": "2023-06-01"}
BROKEN = b'{"model": "gpt-4.1", "messages": [{"role": "user", "content": "hi"}'


def test_openai_malformed_json_says_where(raw: httpx.Client, sim: Sim):
    r = raw.post("/v1/chat/completions", content=BROKEN, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers.get("x-request-id")
    err = openai_error(r.json())
    assert err["type"] == "invalid_request_error"
    assert POSITION.search(err["message"]), f"the message says where the JSON breaks: {err['message']!r}"
    assert sim.generation_requests() == []


def test_anthropic_malformed_json_says_where(raw: httpx.Client, sim: Sim):
    body = b'{"model": "claude-sonnet-4-5", "max_tokens": 10, "messages": [}'
    r = raw.post("/v1/messages", content=body, headers={**ANTH_AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    assert r.headers.get("x-request-id")
    err = anthropic_error(r.json())
    assert err["type"] == "invalid_request_error"
    assert POSITION.search(err["message"]), f"the message says where the JSON breaks: {err['message']!r}"
    assert sim.generation_requests() == []


def test_body_that_is_not_an_object(raw: httpx.Client):
    r = raw.post("/v1/chat/completions", content=b"[1, 2, 3]", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    openai_error(r.json())
    r = raw.post("/v1/messages", content=b'"just a string"', headers={**ANTH_AUTH, "content-type": "application/json"})
    assert r.status_code == 400
    anthropic_error(r.json())


def test_anthropic_missing_max_tokens_names_field(raw: httpx.Client, sim: Sim):
    r = raw.post("/v1/messages", json={"model": ANTH_ROUTE, "messages": HELLO}, headers=ANTH_AUTH)
    assert r.status_code == 400
    err = anthropic_error(r.json())
    assert err["type"] == "invalid_request_error"
    assert "max_tokens" in err["message"]
    assert sim.generation_requests() == []


@pytest.mark.parametrize("missing", ["model", "messages"])
def test_openai_missing_field_names_it(raw: httpx.Client, missing: str):
    body = {"model": OAI_ROUTE, "messages": HELLO}
    del body[missing]
    r = raw.post("/v1/chat/completions", json=body, headers=AUTH)
    assert r.status_code == 400
    err = openai_error(r.json())
    assert missing in err["message"]
    assert err.get("param") == missing


def test_anthropic_wrong_type_names_field(raw: httpx.Client):
    r = raw.post(
        "/v1/messages", json={"model": ANTH_ROUTE, "max_tokens": "ten", "messages": HELLO}, headers=ANTH_AUTH
    )
    assert r.status_code == 400
    assert "max_tokens" in anthropic_error(r.json())["message"]


# --------------------------------------------------------------------------------------------------
# Oversize bodies


def test_openai_oversize_body_is_413(oai: openai.OpenAI, sim: Sim):
    big = "x" * (BODY_LIMIT + 1024)
    with pytest.raises(openai.APIStatusError) as exc:
        oai_call(oai, messages=[{"role": "user", "content": big}])
    e = exc.value
    assert e.status_code == 413
    assert "limit" in e.message.lower()
    openai_error(e.body)
    assert e.response.headers.get("x-request-id")
    assert sim.generation_requests() == []


def test_anthropic_oversize_body_is_413(anth: anthropic.Anthropic, sim: Sim):
    big = "x" * (BODY_LIMIT + 1024)
    with pytest.raises(anthropic.APIStatusError) as exc:
        anth_call(anth, messages=[{"role": "user", "content": big}])
    e = exc.value
    assert e.status_code == 413
    assert isinstance(e, anthropic.ContentTooLargeError)
    err = anthropic_error(e.body)
    assert err["type"] == "request_too_large"
    assert sim.generation_requests() == []


# --------------------------------------------------------------------------------------------------
# Upstream errors


def test_anthropic_upstream_overloaded_529(anth: anthropic.Anthropic, sim: Sim):
    sim.set_faults({"error": {"status": 529, "rate": 1.0}})
    with pytest.raises(anthropic.InternalServerError) as exc:
        anth_call(anth)
    e = exc.value
    assert e.status_code == 529
    assert isinstance(e, anthropic.OverloadedError)
    err = anthropic_error(e.body)
    assert err["type"] == "overloaded_error"
    assert "overloaded" in err["message"].lower()
    assert e.response.headers.get("x-request-id")


def test_openai_upstream_503(oai: openai.OpenAI, sim: Sim):
    sim.set_faults({"error": {"status": 503, "rate": 1.0}})
    with pytest.raises(openai.InternalServerError) as exc:
        oai_call(oai)
    assert exc.value.status_code == 503
    assert "oai/" in exc.value.message, "the error names the target that failed"


def test_openai_upstream_429(oai: openai.OpenAI, sim: Sim):
    sim.set_faults({"rate_limit": {"retry_after_secs": 1}})
    with pytest.raises(openai.RateLimitError) as exc:
        oai_call(oai)
    e = exc.value
    assert e.status_code == 429
    openai_error(e.body)
    assert e.response.headers.get("retry-after") == "1"


def test_anthropic_upstream_429(anth: anthropic.Anthropic, sim: Sim):
    sim.set_faults({"rate_limit": {"retry_after_secs": 1}})
    with pytest.raises(anthropic.RateLimitError) as exc:
        anth_call(anth)
    e = exc.value
    assert e.status_code == 429
    assert anthropic_error(e.body)["type"] == "rate_limit_error"
    assert e.response.headers.get("retry-after") == "1"


def test_openai_upstream_4xx_passes_through(oai: openai.OpenAI, sim: Sim):
    # The simulator, like the real API, refuses an empty message list.
    with pytest.raises(openai.BadRequestError) as exc:
        oai_call(oai, messages=[])
    e = exc.value
    assert e.status_code == 400
    err = openai_error(e.body)
    assert "empty array" in err["message"], "the upstream's own message reaches the client"
    assert len(sim.generation_requests()) == 1


def test_anthropic_upstream_4xx_passes_through(anth: anthropic.Anthropic, sim: Sim):
    with pytest.raises(anthropic.BadRequestError) as exc:
        anth_call(anth, messages=[])
    e = exc.value
    assert e.status_code == 400
    err = anthropic_error(e.body)
    assert err["type"] == "invalid_request_error"
    assert "at least one message" in err["message"]


@pytest.mark.parametrize("status", [409, 422])
def test_upstream_4xx_status_is_kept(oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim, status: int):
    sim.set_faults({"error": {"status": status, "rate": 1.0}})
    with pytest.raises(openai.APIStatusError) as exc:
        oai_call(oai)
    assert exc.value.status_code == status
    assert f"injected error {status}" in exc.value.message
    with pytest.raises(anthropic.APIStatusError) as exc2:
        anth_call(anth)
    assert exc2.value.status_code == status
    assert f"injected {status}" in anthropic_error(exc2.value.body)["message"]


@pytest.mark.parametrize("status", [401, 403])
def test_upstream_refusing_the_provider_key_is_a_gateway_error(
    oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim, status: int
):
    """The provider refusing Ballast's own key is the gateway's misconfiguration, not the client's:
    by design it is a 502 naming the target, not the client-facing 401/403 (which would make the SDK
    blame the client's key). No key appears in the message."""
    sim.set_faults({"error": {"status": status, "rate": 1.0}})
    with pytest.raises(openai.InternalServerError) as exc:
        oai_call(oai)
    assert exc.value.status_code == 502
    assert "oai/" in exc.value.message and str(status) in exc.value.message
    with pytest.raises(anthropic.InternalServerError) as exc2:
        anth_call(anth)
    assert exc2.value.status_code == 502
    msg = anthropic_error(exc2.value.body)["message"]
    assert "anth/" in msg
    for secret in ("sim-openai-key", "sim-anthropic-key", GATEWAY_KEY):
        assert secret not in exc.value.message and secret not in msg


def test_sim_injected_4xx_is_not_described_as_a_server_error(anth: anthropic.Anthropic, sim: Sim):
    """The simulator's Anthropic body for an injected 4xx should not call it an internal server error."""
    sim.set_faults({"error": {"status": 409, "rate": 1.0}})
    with pytest.raises(anthropic.APIStatusError) as exc:
        anth_call(anth)
    msg = anthropic_error(exc.value.body)["message"]
    assert "internal server error" not in msg.lower(), msg


def test_openai_upstream_unreachable_is_502(oai: openai.OpenAI):
    with pytest.raises(openai.InternalServerError) as exc:
        oai_call(oai, model="unreachable-chat")
    e = exc.value
    assert e.status_code == 502
    assert "oai-nowhere/gpt-4.1" in e.message, f"the message names the target: {e.message}"
    assert "connection refused" in e.message.lower()
    openai_error(e.body)
    assert e.response.headers.get("x-request-id")


def test_anthropic_upstream_unreachable_is_502(anth: anthropic.Anthropic):
    with pytest.raises(anthropic.InternalServerError) as exc:
        anth_call(anth, model="unreachable-messages")
    e = exc.value
    assert e.status_code == 502
    err = anthropic_error(e.body)
    assert "anth-nowhere/claude-sonnet-4-5" in err["message"]
    assert "connection refused" in err["message"].lower()
    # Never a raw Rust error string.
    assert "hyper" not in err["message"] and "reqwest" not in err["message"] and "os error" not in err["message"]


def test_every_target_failing_names_each(oai: openai.OpenAI, anth: anthropic.Anthropic):
    with pytest.raises(openai.APIStatusError) as exc:
        oai_call(oai, model="all-dead-chat")
    e = exc.value
    assert e.status_code in (502, 503, 504)
    assert "oai-nowhere/gpt-4.1" in e.message and "oai-nowhere2/gpt-4.1-mini" in e.message
    with pytest.raises(anthropic.APIStatusError) as exc2:
        anth_call(anth, model="all-dead-messages")
    msg = anthropic_error(exc2.value.body)["message"]
    assert exc2.value.status_code in (502, 503, 504)
    assert "anth-nowhere/claude-sonnet-4-5" in msg and "anth-nowhere2/claude-haiku-4-5" in msg


# --------------------------------------------------------------------------------------------------
# Truncated answers. The simulator cuts an answer about half-way, then either ends the body cleanly
# (`eof`: only the missing terminal event or the broken JSON tells) or closes the connection (`reset`).

TRUNCATE_MODES = ["eof", "reset"]


def expect_status_error(call, cls):
    """The call must fail with the SDK's status error; anything else (a parse error on a body the
    gateway passed on as a success, or a success) fails the test with a readable message."""
    try:
        result = call()
    except cls as e:
        return e
    except Exception as e:  # noqa: BLE001
        pytest.fail(f"the gateway passed a broken answer on as a success; the SDK raised {type(e).__name__}: {e}")
    pytest.fail(f"a truncated answer was returned as complete: {result!r}")


@pytest.mark.parametrize("mode", TRUNCATE_MODES)
def test_openai_truncated_stream_raises(oai: openai.OpenAI, sim: Sim, mode: str):
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    stream = oai_call(oai, messages=[{"role": "user", "content": "Write a long story."}], stream=True)
    got: list[str] = []
    with pytest.raises(openai.APIError) as exc:
        for chunk in stream:
            if chunk.choices:
                got.append(chunk.choices[0].delta.content or "")
    assert "oai/" in exc.value.message, f"the stream error names the target: {exc.value.message}"
    assert got, "the first half of the answer arrived before the error"


@pytest.mark.parametrize("mode", TRUNCATE_MODES)
def test_anthropic_truncated_stream_raises(anth: anthropic.Anthropic, sim: Sim, mode: str):
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    with pytest.raises(anthropic.APIError) as exc:
        with anth.messages.stream(
            model=ANTH_ROUTE, max_tokens=256, messages=[{"role": "user", "content": "Write a long story."}]
        ) as stream:
            stream.get_final_message()
    assert "anth/" in str(exc.value), f"the stream error names the target: {exc.value}"


@pytest.mark.parametrize("mode", TRUNCATE_MODES)
def test_openai_truncated_body_is_an_error(oai: openai.OpenAI, sim: Sim, mode: str):
    """Half a JSON answer is never passed on as a 200: the SDK would fail to parse it (a
    JSONDecodeError, not an APIError the application handles)."""
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    e = expect_status_error(lambda: oai_call(oai), openai.APIStatusError)
    assert e.status_code in (502, 503, 504)
    assert "oai/" in e.message


@pytest.mark.parametrize("mode", TRUNCATE_MODES)
def test_anthropic_truncated_body_is_an_error(anth: anthropic.Anthropic, sim: Sim, mode: str):
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    e = expect_status_error(lambda: anth_call(anth), anthropic.APIStatusError)
    assert e.status_code in (502, 503, 504)
    assert "anth/" in anthropic_error(e.body)["message"]


# --------------------------------------------------------------------------------------------------
# Edge basics


def test_request_id_is_echoed_and_generated(oai: openai.OpenAI, raw: httpx.Client):
    r = oai.chat.completions.with_raw_response.create(
        model=OAI_ROUTE, messages=HELLO, extra_headers={"x-request-id": "e2e-trace-123"}
    )
    assert r.headers.get("x-request-id") == "e2e-trace-123"
    ids = {raw.get("/healthz").headers.get("x-request-id") for _ in range(3)}
    assert None not in ids and len(ids) == 3, "each request gets its own id"


def test_health_and_readiness(raw: httpx.Client):
    r = raw.get("/healthz")
    assert r.status_code == 200
    r = raw.get("/readyz")
    assert r.status_code == 200


def test_unknown_path_is_404_in_client_format(raw: httpx.Client):
    r = raw.post("/v1/completions", json={"model": OAI_ROUTE, "prompt": "hi"}, headers=AUTH)
    assert r.status_code == 404
    openai_error(r.json())
    assert r.headers.get("x-request-id")
