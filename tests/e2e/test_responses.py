"""OpenAI Responses inbound end to end, and the calls coding agents make (issue 6's proof).

- the `openai` SDK's `client.responses.create` and `client.responses.stream` — text, a forced function
  call and its result round trip, JSON schema output — served by an `anthropic` target, by a `gemini`
  target and, as the same-format baseline, by an `openai` provider speaking Responses upstream;
- the `openai-agents` SDK running an agent with one function tool to completion against an
  `anthropic` target (non-streamed and streamed runs);
- the `anthropic` SDK's `messages.count_tokens`: forwarded to the route's Anthropic target
  (`x-ballast-token-count: provider`), or a local estimate on a route without one (`estimate`);
- failover: a Responses client keeps being served while its route's primary (a Responses target on
  the second simulator) is `down`, by an Anthropic target.

Every response body is validated against the SDK's own pydantic types (the SDK itself builds them
without validation) and every streamed event against its `ResponseStreamEvent` union, so a field of the
wrong type or a missing required field fails the test that received it. Nothing leaves 127.0.0.1:
clients get explicit base URLs, the Agents SDK's tracing is off, and name resolution of any other host
fails the test (`_loopback_only`).

The simulator honours structured-output requests in every dialect, so the JSON-schema tests check
that the answer parses as the schema whichever target served it.
"""

from __future__ import annotations

import asyncio
import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import anthropic
import openai
import pydantic
import pytest
from openai.types.responses import Response, ResponseStreamEvent

from conftest import (
    ANTHROPIC_KEY,
    CLIENT_TIMEOUT,
    GATEWAY_KEY,
    OPENAI_KEY,
    WEATHER_SCHEMA,
    Proc,
    Sim,
    assert_matches_schema,
)

GEMINI_KEY = "sim-gemini-key"
PHRASE = "héllo ไทย 🚀 responses"
SYSTEM = "You are terse. Système: ünïcödé ✓"
TOOL_RESULT = "18°C and sunny in Paris"
QUESTION = "What is the weather like?"
FAILOVER_ROUTE = "resp-failover"
DOWN_SECS = 2.0

# Route (the model clients send) -> (target, provider kind, upstream model).
TARGETS: dict[str, tuple[str, str, str]] = {
    "resp-via-anthropic": ("anth/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    "resp-via-gemini": ("gem/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
    "resp-via-responses": ("oair/gpt-4.1", "responses", "gpt-4.1"),
}
# Primary: a Responses target on the second simulator; secondary: an Anthropic target on the first.
FAILOVER_TARGETS = ["oair-b/gpt-4.1", "anth/claude-haiku-4-5"]
# count_tokens routes.
COUNT_ROUTES: dict[str, list[str]] = {
    "count-anthropic": ["anth/claude-sonnet-4-5"],
    # The Anthropic target is not first: count_tokens still goes to it.
    "count-anthropic-second": ["oai/gpt-4.1", "anth/claude-haiku-4-5"],
    "count-no-anthropic": ["oai/gpt-4.1", "gem/gemini-2.5-flash"],
}

routes = pytest.mark.parametrize("route", list(TARGETS))

WEATHER_TOOL = {
    "type": "function",
    "name": "get_weather",
    "description": "Current weather for a city",
    "parameters": WEATHER_SCHEMA,
    "strict": False,
}
FORCE_WEATHER = {"type": "function", "name": "get_weather"}

# A strict (OpenAI structured outputs) schema: every property required, no others.
REPORT_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "days": {"type": "integer"},
        "detailed": {"type": "boolean"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
    },
    "required": ["city", "days", "detailed", "unit"],
    "additionalProperties": False,
}


class Report(pydantic.BaseModel):
    city: str
    days: int
    detailed: bool
    unit: Literal["celsius", "fahrenheit"]


# --------------------------------------------------------------------------------------------------
# This module's gateway and clients


@dataclass
class ResponsesGateway:
    base_url: str
    proc: Proc

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"


def responses_config(sim: Sim, sim_b: Sim) -> str:
    def provider(name: str, kind: str, base: str, key: str, api: str | None = None) -> str:
        extra = f'api = "{api}"\n' if api else ""
        return f'[providers.{name}]\nkind = "{kind}"\n{extra}base_url = "{base}"\napi_key = "{key}"\n'

    parts = [
        "[policy]",
        'deadline = "15s"',
        "retries = 0",
        "retry_budget_min_per_second = 10000.0",
        "[policy.breaker]",
        "consecutive_failures = 1000000",
        "min_requests = 1000000",
        "",
        "[auth]",
        f'gateway_keys = ["{GATEWAY_KEY}"]',
        "",
        provider("anth", "anthropic", sim.base_url, ANTHROPIC_KEY),
        provider("gem", "gemini", sim.base_url, GEMINI_KEY),
        provider("oai", "openai", sim.base_url + "/v1", OPENAI_KEY),
        provider("oair", "openai", sim.base_url + "/v1", OPENAI_KEY, api="responses"),
        provider("oair-b", "openai", sim_b.base_url + "/v1", OPENAI_KEY, api="responses"),
    ]
    all_routes = {route: [target] for route, (target, _, _) in TARGETS.items()}
    all_routes[FAILOVER_ROUTE] = FAILOVER_TARGETS
    all_routes.update(COUNT_ROUTES)
    for route, targets in all_routes.items():
        parts.append(f"[routes.{json.dumps(route)}]\ntargets = {json.dumps(targets)}\n")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def rgw(ballast_bin: str, log_dir: Path, sim: Sim, sim_b: Sim):
    config = log_dir / "ballast-responses.toml"
    config.write_text(responses_config(sim, sim_b))
    proc = Proc(
        "gateway-responses",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield ResponsesGateway(base_url=proc.base_url, proc=proc)
    proc.stop()


@pytest.fixture
def oai(rgw: ResponsesGateway):
    client = openai.OpenAI(base_url=rgw.openai_base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def anth(rgw: ResponsesGateway):
    client = anthropic.Anthropic(base_url=rgw.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch):
    """Resolving any host but loopback fails (and fails the test, even from a background thread): no
    SDK here may reach a real API or a telemetry endpoint."""
    attempts: list[str] = []
    real = socket.getaddrinfo

    def guarded(host, *args, **kwargs):
        h = host.decode() if isinstance(host, bytes) else host
        if h not in LOOPBACK:
            attempts.append(str(h))
            raise socket.gaierror(f"e2e tests stay on loopback: refused to resolve {h!r}")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", guarded)
    yield
    assert attempts == [], f"something tried to reach {attempts}"


# --------------------------------------------------------------------------------------------------
# Helpers


def kind(route: str) -> str:
    return TARGETS[route][1]


def upstream_model(route: str) -> str:
    return TARGETS[route][2]


GENERATION_PATHS = ("/v1/messages", "/v1/chat/completions", "/v1/responses")


def generation_requests(sim: Sim) -> list[dict[str, Any]]:
    """Recorded generation requests, whatever their API (model listings and token counts excluded)."""
    out = []
    for r in sim.requests():
        path = r["path"].split("?")[0]
        gemini = path.endswith((":generateContent", ":streamGenerateContent"))
        if r["method"] == "POST" and (path in GENERATION_PATHS or gemini):
            out.append(r)
    return out


def assert_upstream_format(seen: dict[str, Any], route: str, stream: bool) -> None:
    """The gateway spoke the target's own API to it, with the upstream model and the target's key."""
    k = kind(route)
    path = seen["path"].split("?")[0]
    body = seen["body"]
    assert seen["model"] == upstream_model(route)
    if k == "responses":
        assert path == "/v1/responses"
        assert body["model"] == upstream_model(route) and "input" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("authorization") == f"Bearer {OPENAI_KEY}"
    elif k == "anthropic":
        assert path == "/v1/messages"
        assert body["model"] == upstream_model(route) and "messages" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("x-api-key") == ANTHROPIC_KEY
        assert seen["headers"].get("anthropic-version")
    else:
        method = "streamGenerateContent" if stream else "generateContent"
        assert path.endswith(f"/models/{upstream_model(route)}:{method}"), path
        assert "contents" in body
        assert seen["headers"].get("x-goog-api-key") == GEMINI_KEY or f"key={GEMINI_KEY}" in seen["path"]
    assert not any(GATEWAY_KEY in v for v in seen["headers"].values()), "the gateway key reached the upstream"


def upstream_system(seen: dict[str, Any], route: str) -> str:
    body = seen["body"]
    k = kind(route)
    if k == "responses":
        # Same format: the body is forwarded as it came (only the model rewritten).
        return body.get("instructions") or ""
    if k == "anthropic":
        system = body.get("system")
        return system if isinstance(system, str) else "".join(b["text"] for b in system or [])
    si = body.get("systemInstruction") or body.get("system_instruction")
    return "".join(p.get("text", "") for p in si["parts"])


def validated(raw: Any) -> Response:
    """The response body, validated against the SDK's `Response` type (required fields, types)."""
    return Response.model_validate(raw.http_response.json())


_EVENT = pydantic.TypeAdapter(ResponseStreamEvent)


def check_events(events: list[Any], terminal: str = "response.completed") -> list[str]:
    """Every event validates as a documented Responses stream event; `sequence_number`s count up from 0
    without gaps; the stream opens with `response.created`, `response.in_progress` and ends with one
    terminal event. Returns the event types."""
    types = []
    for i, ev in enumerate(events):
        data = ev.to_dict(mode="json", warnings=False)
        _EVENT.validate_python(data)
        assert data["sequence_number"] == i, f"event {i} ({data['type']}) has sequence_number {data['sequence_number']}"
        types.append(data["type"])
    assert types[:2] == ["response.created", "response.in_progress"], types
    ends = [t for t in types if t in ("response.completed", "response.incomplete", "response.failed", "error")]
    assert ends == [types[-1]] == [terminal], types
    return types


def assert_usage(resp: Response) -> None:
    u = resp.usage
    assert u is not None and u.input_tokens > 0 and u.output_tokens > 0
    assert u.total_tokens == u.input_tokens + u.output_tokens


def assert_in_order(types: list[str], expected: list[str]) -> None:
    """`expected` appear in `types` in this order (other events may sit between)."""
    at = 0
    for t in types:
        if at < len(expected) and t == expected[at]:
            at += 1
    assert at == len(expected), f"expected {expected} in order within {types}"


# --------------------------------------------------------------------------------------------------
# Text


@routes
def test_create_text(oai: openai.OpenAI, sim: Sim, route: str):
    raw = oai.responses.with_raw_response.create(
        model=route, input=f"echo {PHRASE}", instructions=SYSTEM, max_output_tokens=200, temperature=0.5
    )
    assert raw.headers.get("x-ballast-route") == route
    assert raw.headers.get("x-ballast-target") == TARGETS[route][0]
    resp = raw.parse()
    validated(raw)
    assert resp.output_text == PHRASE
    assert resp.status == "completed" and resp.error is None and resp.incomplete_details is None
    assert resp.object == "response" and resp.id.startswith("resp_")
    assert resp.model == upstream_model(route)
    [item] = resp.output
    assert item.type == "message" and item.role == "assistant" and item.status == "completed"
    assert item.id.startswith("msg_")
    assert [c.type for c in item.content] == ["output_text"]
    assert_usage(resp)

    [seen] = generation_requests(sim)
    assert_upstream_format(seen, route, stream=False)
    assert upstream_system(seen, route) == SYSTEM
    body = seen["body"]
    if kind(route) == "anthropic":
        assert body["max_tokens"] == 200 and body["temperature"] == 0.5
    elif kind(route) == "gemini":
        assert body["generationConfig"]["maxOutputTokens"] == 200
        assert body["generationConfig"]["temperature"] == 0.5
    else:
        # Same format: the body is forwarded as the client sent it, only `model` rewritten.
        assert body == {
            "model": upstream_model(route),
            "input": f"echo {PHRASE}",
            "instructions": SYSTEM,
            "max_output_tokens": 200,
            "temperature": 0.5,
        }


@routes
def test_stream_text(oai: openai.OpenAI, sim: Sim, route: str):
    with oai.responses.stream(model=route, input=f"echo {PHRASE}", instructions=SYSTEM) as stream:
        assert stream._response.headers.get("x-ballast-target") == TARGETS[route][0]  # noqa: SLF001
        events = list(stream)
        final = stream.get_final_response()
    types = check_events(events)
    assert_in_order(
        types,
        [
            "response.created",
            "response.in_progress",
            "response.output_item.added",
            "response.content_part.added",
            "response.output_text.delta",
            "response.output_text.done",
            "response.content_part.done",
            "response.output_item.done",
            "response.completed",
        ],
    )
    deltas = [e.delta for e in events if e.type == "response.output_text.delta"]
    assert len(deltas) >= 2, "the answer arrives in pieces"
    assert "".join(deltas) == PHRASE
    [done] = [e for e in events if e.type == "response.output_text.done"]
    assert done.text == PHRASE
    assert final.output_text == PHRASE and final.status == "completed"
    assert final.model == upstream_model(route)
    assert_usage(final)
    # Every event names the same item the way the API does.
    [added] = [e for e in events if e.type == "response.output_item.added"]
    assert added.item.type == "message"
    assert {e.item_id for e in events if e.type.startswith("response.output_text")} == {added.item.id}
    assert final.output[0].id == added.item.id
    created = events[0].response
    assert created.id == final.id and created.status == "in_progress"

    [seen] = generation_requests(sim)
    assert_upstream_format(seen, route, stream=True)
    assert upstream_system(seen, route) == SYSTEM


@routes
def test_max_output_tokens_makes_an_incomplete_response(oai: openai.OpenAI, sim: Sim, route: str):
    """An answer cut at `max_output_tokens` is `incomplete` (reason `max_output_tokens`), streamed
    (terminal `response.incomplete`) or not."""
    prompt = "Write a long story about the sea."
    raw = oai.responses.with_raw_response.create(model=route, input=prompt, max_output_tokens=16)
    validated(raw)
    resp = raw.parse()
    assert resp.status == "incomplete", resp.status
    assert resp.incomplete_details is not None and resp.incomplete_details.reason == "max_output_tokens"
    assert resp.output_text and resp.usage.output_tokens <= 16

    with oai.responses.stream(model=route, input=prompt, max_output_tokens=16) as stream:
        events = list(stream)
    check_events(events, terminal="response.incomplete")
    last = events[-1].response
    assert last.status == "incomplete" and last.incomplete_details.reason == "max_output_tokens"
    assert last.output_text == resp.output_text


# --------------------------------------------------------------------------------------------------
# Function calls


def assert_tool_result_upstream(seen: dict[str, Any], route: str, call_id: str, args: dict[str, Any]) -> None:
    """The second request carried the model's call and its result, paired as the target expects."""
    body = seen["body"]
    k = kind(route)
    if k == "anthropic":
        msgs = body["messages"]
        assistant = next(m for m in msgs if m["role"] == "assistant")
        [use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert use["name"] == "get_weather" and use["input"] == args
        assert use["id"] == call_id, "the call id the client saw is the one the upstream gets back"
        [result] = [b for b in msgs[-1]["content"] if b["type"] == "tool_result"]
        assert msgs[-1]["role"] == "user" and result["tool_use_id"] == call_id
        assert TOOL_RESULT in json.dumps(result["content"], ensure_ascii=False)
    elif k == "gemini":
        contents = body["contents"]
        [fc] = [p["functionCall"] for c in contents for p in c["parts"] if "functionCall" in p]
        assert fc["name"] == "get_weather" and fc["args"] == args
        [fr] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
        assert fr["name"] == "get_weather", "Gemini has no call ids: the result names its function"
        assert TOOL_RESULT in json.dumps(fr["response"], ensure_ascii=False)
    else:
        items = body["input"]
        [call] = [i for i in items if i.get("type") == "function_call"]
        assert call["call_id"] == call_id and json.loads(call["arguments"]) == args
        [out] = [i for i in items if i.get("type") == "function_call_output"]
        assert out["call_id"] == call_id and out["output"] == TOOL_RESULT


def assert_forced_upstream(seen: dict[str, Any], route: str) -> None:
    body = seen["body"]
    k = kind(route)
    if k == "anthropic":
        assert body["tool_choice"]["type"] == "tool" and body["tool_choice"]["name"] == "get_weather"
        assert body["tools"][0]["input_schema"]["required"] == WEATHER_SCHEMA["required"]
    elif k == "gemini":
        fcc = body["toolConfig"]["functionCallingConfig"]
        assert fcc["mode"] == "ANY" and fcc["allowedFunctionNames"] == ["get_weather"]
        [decl] = body["tools"][0]["functionDeclarations"]
        assert decl["name"] == "get_weather"
    else:
        assert body["tool_choice"] == FORCE_WEATHER
        assert body["tools"][0]["name"] == "get_weather"


@routes
def test_forced_function_call_round_trip(oai: openai.OpenAI, sim: Sim, route: str):
    raw = oai.responses.with_raw_response.create(
        model=route, input=QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER
    )
    validated(raw)
    first = raw.parse()
    assert first.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.name == "get_weather"
    assert call.call_id and call.id and call.id != call.call_id
    args = json.loads(call.arguments)
    assert_matches_schema(args, WEATHER_SCHEMA)
    assert args["city"] == "example"
    assert first.output_text == ""
    assert_usage(first)

    # The client sends the history back with the call's output (no stored state: full `input`).
    raw = oai.responses.with_raw_response.create(
        model=route,
        input=[
            {"role": "user", "content": QUESTION},
            *first.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
        ],
        tools=[WEATHER_TOOL],
    )
    validated(raw)
    second = raw.parse()
    assert second.output_text.startswith("Tool result received: ")
    assert TOOL_RESULT in second.output_text
    assert second.status == "completed"

    seen = generation_requests(sim)
    assert len(seen) == 2
    for s in seen:
        assert_upstream_format(s, route, stream=False)
    assert_forced_upstream(seen[0], route)
    assert_tool_result_upstream(seen[1], route, call.call_id, args)


@routes
def test_forced_function_call_round_trip_streaming(oai: openai.OpenAI, sim: Sim, route: str):
    with oai.responses.stream(model=route, input=QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER) as stream:
        events = list(stream)
        first = stream.get_final_response()
    types = check_events(events)
    assert_in_order(
        types,
        [
            "response.output_item.added",
            "response.function_call_arguments.delta",
            "response.function_call_arguments.done",
            "response.output_item.done",
            "response.completed",
        ],
    )
    [added] = [e for e in events if e.type == "response.output_item.added"]
    assert added.item.type == "function_call" and added.item.name == "get_weather" and added.item.call_id
    deltas = [e for e in events if e.type == "response.function_call_arguments.delta"]
    [done] = [e for e in events if e.type == "response.function_call_arguments.done"]
    assert {e.item_id for e in [*deltas, done]} == {added.item.id}
    assert "".join(e.delta for e in deltas) == done.arguments
    [item_done] = [e for e in events if e.type == "response.output_item.done"]
    assert item_done.item.arguments == done.arguments and item_done.item.status == "completed"
    [call] = first.output
    assert call.type == "function_call" and call.call_id == added.item.call_id and call.arguments == done.arguments
    args = json.loads(call.arguments)
    assert_matches_schema(args, WEATHER_SCHEMA)

    with oai.responses.stream(
        model=route,
        input=[
            {"role": "user", "content": QUESTION},
            *first.output,
            {"type": "function_call_output", "call_id": call.call_id, "output": TOOL_RESULT},
        ],
        tools=[WEATHER_TOOL],
    ) as stream:
        events = list(stream)
        second = stream.get_final_response()
    check_events(events)
    assert second.output_text.startswith("Tool result received: ") and TOOL_RESULT in second.output_text

    seen = generation_requests(sim)
    assert len(seen) == 2
    for s in seen:
        assert_upstream_format(s, route, stream=True)
    assert_forced_upstream(seen[0], route)
    assert_tool_result_upstream(seen[1], route, call.call_id, args)


# --------------------------------------------------------------------------------------------------
# JSON schema output


def assert_schema_upstream(seen: dict[str, Any], route: str) -> None:
    """The schema reached the target in the target's own structured-output form."""
    body = seen["body"]
    k = kind(route)
    if k == "anthropic":
        fmt = body["output_config"]["format"]
        assert fmt["type"] == "json_schema"
        assert fmt["schema"]["properties"] == REPORT_SCHEMA["properties"]
        assert fmt["schema"]["required"] == REPORT_SCHEMA["required"]
    elif k == "gemini":
        gc = body["generationConfig"]
        assert gc["responseMimeType"] == "application/json"
        schema = gc.get("responseJsonSchema") or gc.get("responseSchema")
        assert schema["properties"].keys() == REPORT_SCHEMA["properties"].keys()
        assert schema["required"] == REPORT_SCHEMA["required"]
    else:
        fmt = body["text"]["format"]
        assert fmt["type"] == "json_schema" and fmt["name"] == "Report"
        assert fmt["schema"]["required"] == REPORT_SCHEMA["required"]


SCHEMA_FORMAT = {"format": {"type": "json_schema", "name": "Report", "schema": REPORT_SCHEMA, "strict": True}}


@routes
def test_json_schema_reaches_target(oai: openai.OpenAI, sim: Sim, route: str):
    """`text.format: json_schema` is carried to every target in its own form, streamed or not, and
    the SDK reads what comes back."""
    raw = oai.responses.with_raw_response.create(model=route, input="Weather report for Paris", text=SCHEMA_FORMAT)
    validated(raw)
    resp = raw.parse()
    assert resp.status == "completed" and resp.output_text
    with oai.responses.stream(model=route, input="Weather report for Paris", text=SCHEMA_FORMAT) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_events(events)
    assert final.output_text == resp.output_text, "the simulator is deterministic"

    seen = generation_requests(sim)
    assert len(seen) == 2
    for s, streamed in zip(seen, (False, True)):
        assert_upstream_format(s, route, stream=streamed)
        assert_schema_upstream(s, route)


@pytest.mark.parametrize(
    "route",
    [
        pytest.param("resp-via-anthropic"),
        pytest.param("resp-via-gemini"),
        "resp-via-responses",
    ],
)
def test_json_schema_output_parses(oai: openai.OpenAI, route: str):
    """The SDK's structured-output helpers (`responses.parse`, `responses.stream(text_format=…)`) get
    an answer that parses as the schema."""
    resp = oai.responses.parse(model=route, input="Weather report for Paris", text_format=Report)
    assert resp.output_parsed == Report(city="example", days=1, detailed=True, unit="celsius")
    with oai.responses.stream(model=route, input="Weather report for Paris", text_format=Report) as stream:
        events = list(stream)
        final = stream.get_final_response()
    check_events(events)
    assert final.output_parsed == resp.output_parsed


# --------------------------------------------------------------------------------------------------
# Upstream failures, before and after the first byte


@pytest.mark.parametrize(("status", "error_cls"), [(400, openai.BadRequestError), (429, openai.RateLimitError)])
@routes
def test_upstream_error_is_the_sdks_own(oai: openai.OpenAI, sim: Sim, route: str, status: int, error_cls: type):
    sim.set_faults({"error": {"status": status}} if status != 429 else {"rate_limit": {"retry_after_secs": 1}})
    with pytest.raises(error_cls) as exc:
        oai.responses.create(model=route, input="hello")
    assert exc.value.status_code == status
    with pytest.raises(error_cls):
        with oai.responses.stream(model=route, input="hello") as stream:
            list(stream)


@pytest.mark.parametrize("mode", ["eof", "reset"])
@routes
def test_stream_cut_midway_ends_with_an_error_event(oai: openai.OpenAI, sim: Sim, route: str, mode: str):
    """The upstream's answer stops half-way, after the client got text: the stream ends with a
    well-formed `error` event (the SDK raises it as an `APIError` naming the target), never a
    silent cut that would look like a complete answer."""
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    events: list[Any] = []
    with pytest.raises(openai.APIError) as exc:
        with oai.responses.stream(model=route, input="Write a long story.") as stream:
            for ev in stream:
                events.append(ev)
    assert TARGETS[route][0].split("/")[0] + "/" in exc.value.message, exc.value.message
    assert any(e.type == "response.output_text.delta" for e in events), "text arrived before the cut"
    for i, ev in enumerate(events):
        data = ev.to_dict(mode="json", warnings=False)
        _EVENT.validate_python(data)
        assert data["sequence_number"] == i
    assert "response.completed" not in [e.type for e in events]


# --------------------------------------------------------------------------------------------------
# Stateless: what needs stored state is refused clearly


def test_previous_response_id_is_refused_clearly(oai: openai.OpenAI, sim: Sim):
    with pytest.raises(openai.BadRequestError) as exc:
        oai.responses.create(model="resp-via-anthropic", input="hello", previous_response_id="resp_abc")
    assert "previous_response_id" in exc.value.message and "input" in exc.value.message
    assert generation_requests(sim) == []


def test_store_true_is_served_with_a_warning(oai: openai.OpenAI):
    raw = oai.responses.with_raw_response.create(model="resp-via-anthropic", input=f"echo {PHRASE}", store=True)
    assert raw.parse().output_text == PHRASE
    assert "store" in (raw.headers.get("x-ballast-warning") or "")


# --------------------------------------------------------------------------------------------------
# openai-agents


def test_agents_sdk_runs_a_tool_agent_to_completion(rgw: ResponsesGateway, sim: Sim, monkeypatch: pytest.MonkeyPatch):
    """An Agents SDK agent with one function tool, on the Responses API, served by an Anthropic
    target: the model calls the tool, the SDK runs it and sends its output back, the model answers.
    Once as `Runner.run`, once as `Runner.run_streamed`."""
    monkeypatch.setenv("OPENAI_AGENTS_DISABLE_TRACING", "1")
    import agents
    from agents import Agent, ModelSettings, OpenAIResponsesModel, RunConfig, Runner, function_tool

    agents.set_tracing_disabled(True)
    route = "resp-via-anthropic"
    calls: list[str] = []

    @function_tool
    def get_weather(city: str) -> str:
        """Current weather for a city.

        Args:
            city: City name.
        """
        calls.append(city)
        return TOOL_RESULT

    async def run() -> tuple[Any, Any, list[Any]]:
        client = openai.AsyncOpenAI(base_url=rgw.openai_base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
        try:
            agent = Agent(
                name="weather",
                instructions="Answer weather questions with the get_weather tool.",
                tools=[get_weather],
                model=OpenAIResponsesModel(model=route, openai_client=client),
                model_settings=ModelSettings(max_tokens=256),
            )
            config = RunConfig(tracing_disabled=True)
            question = "Use get_weather: what is the weather in Paris?"
            result = await Runner.run(agent, question, run_config=config, max_turns=4)
            streamed = Runner.run_streamed(agent, question, run_config=config, max_turns=4)
            events = [e async for e in streamed.stream_events()]
            return result, streamed, events
        finally:
            await client.close()

    result, streamed, events = asyncio.run(run())

    for r in (result, streamed):
        assert isinstance(r.final_output, str)
        assert r.final_output.startswith("Tool result received: ") and TOOL_RESULT in r.final_output
        kinds = [item.type for item in r.new_items]
        assert kinds == ["tool_call_item", "tool_call_output_item", "message_output_item"], kinds
        assert len(r.raw_responses) == 2
    assert calls == ["example", "example"]
    raw_types = [e.data.type for e in events if e.type == "raw_response_event"]
    assert raw_types.count("response.completed") == 2
    assert "response.function_call_arguments.delta" in raw_types
    assert streamed.is_complete

    seen = generation_requests(sim)
    assert len(seen) == 4
    for s, stream in zip(seen, (False, False, True, True)):
        assert_upstream_format(s, route, stream=stream)
    for first, second in ((seen[0], seen[1]), (seen[2], seen[3])):
        assert first["body"]["tools"][0]["name"] == "get_weather"
        msgs = second["body"]["messages"]
        [use] = [b for m in msgs if m["role"] == "assistant" for b in m["content"] if b["type"] == "tool_use"]
        [res] = [b for b in msgs[-1]["content"] if b["type"] == "tool_result"]
        assert res["tool_use_id"] == use["id"] and use["input"] == {"city": "example"}


# --------------------------------------------------------------------------------------------------
# count_tokens (anthropic SDK)

COUNT_MESSAGES = [{"role": "user", "content": "How many tokens is this sentence, roughly? " * 4}]
COUNT_TOOLS = [{"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}]


def count_requests(sim: Sim) -> list[dict[str, Any]]:
    return [r for r in sim.requests() if r["path"].split("?")[0] == "/v1/messages/count_tokens"]


@pytest.mark.parametrize(
    ("route", "upstream"), [("count-anthropic", "claude-sonnet-4-5"), ("count-anthropic-second", "claude-haiku-4-5")]
)
def test_count_tokens_forwarded_to_anthropic_target(anth: anthropic.Anthropic, sim: Sim, route: str, upstream: str):
    raw = anth.messages.with_raw_response.count_tokens(model=route, system=SYSTEM, messages=COUNT_MESSAGES, tools=COUNT_TOOLS)
    assert raw.headers.get("x-ballast-token-count") == "provider"
    counted = raw.parse()
    assert counted.input_tokens > 0
    [seen] = count_requests(sim)
    assert seen["body"]["model"] == upstream
    assert seen["body"]["messages"] == COUNT_MESSAGES and seen["body"]["tools"] == COUNT_TOOLS
    assert seen["headers"].get("x-api-key") == ANTHROPIC_KEY
    assert not any(GATEWAY_KEY in v for v in seen["headers"].values())
    assert generation_requests(sim) == [], "counting generates nothing"

    # The beta form (what Claude Code sends: `?beta=true`, `anthropic-beta`) is forwarded too.
    raw = anth.beta.messages.with_raw_response.count_tokens(
        model=route, system=SYSTEM, messages=COUNT_MESSAGES, betas=["context-management-2025-06-27"]
    )
    assert raw.headers.get("x-ballast-token-count") == "provider"
    assert raw.parse().input_tokens > 0
    seen = count_requests(sim)[-1]
    assert seen["body"]["model"] == upstream


def test_count_tokens_estimated_without_anthropic_target(anth: anthropic.Anthropic, sim: Sim):
    raw = anth.messages.with_raw_response.count_tokens(model="count-no-anthropic", system=SYSTEM, messages=COUNT_MESSAGES)
    assert raw.headers.get("x-ballast-token-count") == "estimate"
    n = raw.parse().input_tokens
    text_bytes = len(SYSTEM.encode()) + len(COUNT_MESSAGES[0]["content"].encode())
    assert text_bytes // 8 <= n <= text_bytes, f"an estimate of {n} tokens for {text_bytes} bytes of text"
    more = anth.messages.count_tokens(
        model="count-no-anthropic", system=SYSTEM, messages=COUNT_MESSAGES * 3, tools=COUNT_TOOLS
    ).input_tokens
    assert more > n
    assert sim.requests() == [], "nothing was sent upstream"


def test_count_tokens_falls_back_to_estimate_when_the_provider_fails(anth: anthropic.Anthropic, sim: Sim):
    sim.set_faults({"error": {"status": 503}})
    raw = anth.messages.with_raw_response.count_tokens(model="count-anthropic", system=SYSTEM, messages=COUNT_MESSAGES)
    assert raw.headers.get("x-ballast-token-count") == "estimate"
    assert raw.parse().input_tokens > 0
    assert len(count_requests(sim)) == 1, "the provider was asked first"


def test_count_tokens_unknown_route(anth: anthropic.Anthropic):
    with pytest.raises(anthropic.NotFoundError) as exc:
        anth.messages.count_tokens(model="no-such-route", messages=COUNT_MESSAGES)
    assert "no-such-route" in exc.value.message


# --------------------------------------------------------------------------------------------------
# Failover


def test_failover_when_primary_is_down(oai: openai.OpenAI, sim: Sim, sim_b: Sim):
    sim_b.go_down(DOWN_SECS)

    raw = oai.responses.with_raw_response.create(model=FAILOVER_ROUTE, input=f"echo {PHRASE}")
    assert raw.headers.get("x-ballast-target") == FAILOVER_TARGETS[1]
    assert raw.headers.get("x-ballast-attempts") == "2"
    validated(raw)
    resp = raw.parse()
    assert resp.output_text == PHRASE and resp.model == "claude-haiku-4-5"

    with oai.responses.stream(model=FAILOVER_ROUTE, input=f"echo {PHRASE}") as stream:
        assert stream._response.headers.get("x-ballast-target") == FAILOVER_TARGETS[1]  # noqa: SLF001
        events = list(stream)
        final = stream.get_final_response()
    check_events(events)
    assert final.output_text == PHRASE

    first = oai.responses.create(model=FAILOVER_ROUTE, input=QUESTION, tools=[WEATHER_TOOL], tool_choice=FORCE_WEATHER)
    assert first.output[0].type == "function_call"

    assert [(r["api"], r["model"]) for r in generation_requests(sim)] == [("anthropic", "claude-haiku-4-5")] * 3
    sim_b.wait_until_up(timeout=DOWN_SECS + 5)
    assert sim_b.requests() == []
