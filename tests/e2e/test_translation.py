"""Cross-format translation end to end: the official SDKs through the gateway to a target that speaks
another API (issue 3's proof).

- an `anthropic` client (`/v1/messages`) served by an `openai` target and by a `gemini` target;
- an `openai` client (`/v1/chat/completions`) served by an `anthropic` target and by a `gemini` target;

each streaming and not, with a tool-call round trip whose ids survive (for Gemini, which has no call
ids, the function response upstream names the tool), `tool_choice` forcing a named tool, dropped
fields reported in `x-ballast-warning`, and upstream errors raised by the client SDK as its own error.

The gateway here is this module's own (its routes target other formats); it shares the session's
primary simulator, whose request log and faults `conftest._clean_sims` resets around every test.
The simulator only ever answers with a single tool call, so parallel calls in a *response* are
skipped here (the translation unit tests cover them); parallel calls a client replays in its
*history* are exercised (ids and order kept upstream). Stop reasons, `tool_choice` any/required/none,
upstream 429s and streaming pace (deltas arrive as the target sends them) are checked too.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

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
ROUTE_MAX_TOKENS = 321

# Route (the model clients send) -> (target label, provider kind, upstream model).
TARGETS: dict[str, tuple[str, str, str]] = {
    "via-openai": ("oai/gpt-4.1", "openai", "gpt-4.1"),
    "via-gemini": ("gem/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
    "via-anthropic": ("anth/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
}

# Which simulator API each provider kind speaks (the `api` of its recorded requests).
SIM_API = {"openai": "openai", "gemini": "gemini", "anthropic": "anthropic"}

PHRASE = "héllo ไทย 🚀"
SYSTEM = "You are terse. Système: ünïcödé ✓"
TOOL_RESULT = "18°C and sunny"

# The wire events of an Anthropic stream (the SDK's helper adds its own `text`/`input_json` events).
RAW_EVENT_TYPES = {
    "message_start", "message_delta", "message_stop", "content_block_start", "content_block_delta", "content_block_stop", "ping",
}

ANTH_WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}
ANTH_TIME_TOOL = {
    "name": "get_time",
    "description": "Current time in a city",
    "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
}
OAI_WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}
OAI_TIME_TOOL = {
    "type": "function",
    "function": {
        "name": "get_time",
        "description": "Current time in a city",
        "parameters": ANTH_TIME_TOOL["input_schema"],
    },
}


# --------------------------------------------------------------------------------------------------
# This module's gateway


@dataclass
class TranslationGateway:
    base_url: str
    proc: Proc

    @property
    def openai_base_url(self) -> str:
        return self.base_url + "/v1"


def translation_config(sim: Sim) -> str:
    def provider(name: str, kind: str, base: str, key: str) -> str:
        return f'[providers.{name}]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "{key}"\n'

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
        provider("oai", "openai", sim.base_url + "/v1", OPENAI_KEY),
        provider("gem", "gemini", sim.base_url, GEMINI_KEY),
    ]
    for route, (target, _, _) in TARGETS.items():
        parts.append(f"[routes.{json.dumps(route)}]\ntargets = {json.dumps([target])}\nmax_tokens = {ROUTE_MAX_TOKENS}\n")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def tgw(ballast_bin: str, log_dir: Path, sim: Sim):
    config = log_dir / "ballast-translation.toml"
    config.write_text(translation_config(sim))
    proc = Proc(
        "gateway-translation",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield TranslationGateway(base_url=proc.base_url, proc=proc)
    proc.stop()


@pytest.fixture
def anth(tgw: TranslationGateway):
    client = anthropic.Anthropic(base_url=tgw.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


@pytest.fixture
def oai(tgw: TranslationGateway):
    client = openai.OpenAI(base_url=tgw.openai_base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    yield client
    client.close()


# Parametrisations: the client's API is the test's; the target is the parameter.
anth_targets = pytest.mark.parametrize("route", ["via-openai", "via-gemini"])
oai_targets = pytest.mark.parametrize("route", ["via-anthropic", "via-gemini"])


def upstream_model(route: str) -> str:
    return TARGETS[route][2]


def kind(route: str) -> str:
    return TARGETS[route][1]


def upstream_requests(sim: Sim, route: str) -> list[dict[str, Any]]:
    """Recorded generation requests to the target's API (model listings and count_tokens excluded)."""
    api = SIM_API[kind(route)]
    out = []
    for r in sim.requests():
        path = r["path"].split("?")[0]
        if r["api"] != api or r["method"] != "POST":
            continue
        if path in ("/v1/messages", "/v1/chat/completions") or path.endswith((":generateContent", ":streamGenerateContent")):
            out.append(r)
    return out


def assert_upstream_format(seen: dict[str, Any], route: str, stream: bool) -> None:
    """The gateway spoke the target's format to it."""
    k = kind(route)
    path = seen["path"].split("?")[0]
    body = seen["body"]
    assert seen["model"] == upstream_model(route)
    if k == "openai":
        assert path == "/v1/chat/completions"
        assert body["model"] == upstream_model(route)
        assert "messages" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("authorization") == f"Bearer {OPENAI_KEY}"
    elif k == "anthropic":
        assert path == "/v1/messages"
        assert body["model"] == upstream_model(route)
        assert "messages" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("x-api-key") == ANTHROPIC_KEY
        assert seen["headers"].get("anthropic-version")
    else:
        method = "streamGenerateContent" if stream else "generateContent"
        assert path in (f"/v1beta/models/{upstream_model(route)}:{method}", f"/v1/models/{upstream_model(route)}:{method}")
        assert "contents" in body and "messages" not in body
        assert seen["headers"].get("x-goog-api-key") == GEMINI_KEY or f"key={GEMINI_KEY}" in seen["path"]
    assert GATEWAY_KEY not in json.dumps(seen["headers"]), "the gateway key reached the upstream"


def assert_routing_headers(headers: Any, route: str) -> None:
    assert headers.get("x-ballast-route") == route
    assert headers.get("x-ballast-target") == TARGETS[route][0]


def assert_tool_result_reached_upstream(seen_body: dict[str, Any], route: str, call_id: str) -> None:
    """The tool call and its result went back upstream under the id the client saw (Gemini: the
    function response names the tool, as Gemini has no call ids)."""
    k = kind(route)
    if k == "openai":
        msgs = seen_body["messages"]
        calls = [tc for m in msgs if m["role"] == "assistant" for tc in (m.get("tool_calls") or [])]
        assert [c["id"] for c in calls] == [call_id], msgs
        assert calls[0]["function"]["name"] == "get_weather"
        results = [m for m in msgs if m["role"] == "tool"]
        assert [m["tool_call_id"] for m in results] == [call_id], msgs
    elif k == "anthropic":
        msgs = seen_body["messages"]
        blocks = [b for m in msgs if isinstance(m["content"], list) for b in m["content"]]
        uses = [b for b in blocks if b["type"] == "tool_use"]
        results = [b for b in blocks if b["type"] == "tool_result"]
        assert [u["id"] for u in uses] == [call_id], msgs
        assert uses[0]["name"] == "get_weather"
        assert [r["tool_use_id"] for r in results] == [call_id], msgs
    else:
        parts = [p for c in seen_body["contents"] for p in c.get("parts", [])]
        calls = [p.get("functionCall") or p.get("function_call") for p in parts if "functionCall" in p or "function_call" in p]
        responses = [
            p.get("functionResponse") or p.get("function_response")
            for p in parts
            if "functionResponse" in p or "function_response" in p
        ]
        assert [c["name"] for c in calls] == ["get_weather"], seen_body["contents"]
        assert [r["name"] for r in responses] == ["get_weather"], seen_body["contents"]
        assert TOOL_RESULT in json.dumps(responses[0]["response"], ensure_ascii=False)
        # When Gemini's newer `id` fields are sent, they must match the client's id.
        for c in calls + responses:
            if "id" in c:
                assert c["id"] == call_id


def assert_tool_ack(text: str) -> None:
    """The simulator acknowledges the result it received; Gemini results arrive wrapped in an object."""
    assert text.startswith("Tool result received: "), text
    assert TOOL_RESULT in text, text


def assert_anthropic_event_grammar(events: list[Any]) -> None:
    """Anthropic's stream grammar: message_start, then per block start → deltas → stop (indices in
    order, one block open at a time), then one message_delta and message_stop. Accepts event objects
    or their type names (pings allowed anywhere)."""
    seq = [e if isinstance(e, str) else e.type for e in events]
    seq = [t for t in seq if t != "ping"]
    assert seq[0] == "message_start", seq
    assert seq[-2:] == ["message_delta", "message_stop"], seq
    assert seq.count("message_start") == seq.count("message_delta") == seq.count("message_stop") == 1, seq
    body = seq[1:-2]
    open_block = False
    for t in body:
        if t == "content_block_start":
            assert not open_block, seq
            open_block = True
        elif t == "content_block_delta":
            assert open_block, seq
        elif t == "content_block_stop":
            assert open_block, seq
            open_block = False
        else:
            raise AssertionError(f"unexpected event {t!r} in {seq}")
    assert not open_block, seq
    assert body.count("content_block_start") >= 1, seq
    indices = [e.index for e in events if not isinstance(e, str) and e.type == "content_block_start"]
    assert indices == list(range(len(indices))), indices


# --------------------------------------------------------------------------------------------------
# anthropic client -> openai / gemini targets


def anth_echo_messages() -> list[dict[str, Any]]:
    return [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": f"echo {PHRASE}"},
    ]


@anth_targets
def test_anthropic_client_text(anth: anthropic.Anthropic, sim: Sim, route: str):
    raw = anth.messages.with_raw_response.create(model=route, max_tokens=256, system=SYSTEM, messages=anth_echo_messages())
    assert_routing_headers(raw.headers, route)
    assert raw.headers.get("x-request-id")
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == upstream_model(route)
    assert message.id
    assert message.stop_reason == "end_turn"
    (block,) = message.content
    assert block.type == "text"
    assert block.text == PHRASE
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0

    (seen,) = upstream_requests(sim, route)
    assert_upstream_format(seen, route, stream=False)
    body = seen["body"]
    if kind(route) == "openai":
        assert body["messages"][0]["role"] in ("system", "developer")
        assert SYSTEM in json.dumps(body["messages"][0], ensure_ascii=False)
        assert body["messages"][-1]["role"] == "user"
        assert PHRASE in json.dumps(body["messages"][-1], ensure_ascii=False)
        assert len(body["messages"]) == 4
        max_out = body.get("max_completion_tokens", body.get("max_tokens"))
        assert max_out == 256
    else:
        system = body.get("systemInstruction") or body.get("system_instruction")
        assert SYSTEM in json.dumps(system, ensure_ascii=False)
        roles = [c.get("role") for c in body["contents"]]
        assert roles == ["user", "model", "user"]
        assert PHRASE in json.dumps(body["contents"][-1], ensure_ascii=False)
        gen = body.get("generationConfig") or body.get("generation_config") or {}
        assert gen.get("maxOutputTokens", gen.get("max_output_tokens")) == 256


@anth_targets
def test_anthropic_client_streaming(anth: anthropic.Anthropic, sim: Sim, route: str):
    event_types: list[Any] = []
    deltas: list[str] = []
    with anth.messages.stream(model=route, max_tokens=256, system=SYSTEM, messages=anth_echo_messages()) as stream:
        assert_routing_headers(stream.response.headers, route)
        assert stream.response.headers.get("content-type", "").startswith("text/event-stream")
        for event in stream:
            if event.type in RAW_EVENT_TYPES:
                event_types.append(event)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = stream.get_final_message()
    assert_anthropic_event_grammar(event_types)
    assert len(deltas) >= 2, "the answer streams in several deltas"
    assert "".join(deltas) == PHRASE
    assert final.model == upstream_model(route)
    assert final.stop_reason == "end_turn"
    (block,) = final.content
    assert block.type == "text" and block.text == PHRASE
    assert final.usage.output_tokens > 0
    assert final.usage.input_tokens > 0

    (seen,) = upstream_requests(sim, route)
    assert_upstream_format(seen, route, stream=True)


@anth_targets
def test_anthropic_client_tool_round_trip(anth: anthropic.Anthropic, sim: Sim, route: str):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Please call get_weather for Paris."}]
    tools = [ANTH_WEATHER_TOOL, ANTH_TIME_TOOL]
    first = anth.messages.create(model=route, max_tokens=256, messages=messages, tools=tools)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.id
    assert_matches_schema(use.input, WEATHER_SCHEMA)
    (seen_first,) = upstream_requests(sim, route)
    assert_upstream_format(seen_first, route, stream=False)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}]},
    ]
    second = anth.messages.create(model=route, max_tokens=256, messages=messages, tools=tools)
    assert second.stop_reason == "end_turn"
    (block,) = second.content
    assert block.type == "text"
    assert_tool_ack(block.text)

    seen = upstream_requests(sim, route)[-1]
    assert_upstream_format(seen, route, stream=False)
    assert_tool_result_reached_upstream(seen["body"], route, use.id)


@anth_targets
def test_anthropic_client_streaming_tool_round_trip(anth: anthropic.Anthropic, sim: Sim, route: str):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Use get_weather for Lisbon."}]
    tools = [ANTH_WEATHER_TOOL, ANTH_TIME_TOOL]
    partial: list[str] = []
    start_id = None
    events = []
    with anth.messages.stream(model=route, max_tokens=256, messages=messages, tools=tools) as stream:
        assert_routing_headers(stream.response.headers, route)
        for event in stream:
            if event.type in RAW_EVENT_TYPES:
                events.append(event)
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                assert start_id is None, "one tool_use block"
                start_id = event.content_block.id
                assert event.content_block.name == "get_weather"
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
        first = stream.get_final_message()
    assert_anthropic_event_grammar(events)
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.id and use.id == start_id
    assert use.name == "get_weather"
    assert partial, "arguments arrive as input_json_delta events"
    args = json.loads("".join(partial))
    assert args == use.input
    assert_matches_schema(args, WEATHER_SCHEMA)
    assert first.usage.output_tokens > 0
    (seen_first,) = upstream_requests(sim, route)
    assert_upstream_format(seen_first, route, stream=True)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": TOOL_RESULT}]},
    ]
    with anth.messages.stream(model=route, max_tokens=256, messages=messages, tools=tools) as stream:
        text = "".join(stream.text_stream)
        second = stream.get_final_message()
    assert second.stop_reason == "end_turn"
    assert_tool_ack(text)
    assert second.content[0].text == text

    seen = upstream_requests(sim, route)[-1]
    assert_upstream_format(seen, route, stream=True)
    assert_tool_result_reached_upstream(seen["body"], route, use.id)


@anth_targets
def test_anthropic_client_tool_choice_forces_named_tool(anth: anthropic.Anthropic, sim: Sim, route: str):
    message = anth.messages.create(
        model=route,
        max_tokens=256,
        messages=[{"role": "user", "content": "What should I wear today?"}],
        tools=[ANTH_WEATHER_TOOL, ANTH_TIME_TOOL],
        tool_choice={"type": "tool", "name": "get_time"},
    )
    assert message.stop_reason == "tool_use"
    (use,) = [b for b in message.content if b.type == "tool_use"]
    assert use.name == "get_time"
    assert use.id
    assert use.input == {"city": "example"}

    (seen,) = upstream_requests(sim, route)
    body = seen["body"]
    if kind(route) == "openai":
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_time"}}
    else:
        cfg = body["toolConfig"]["functionCallingConfig"]
        assert cfg["mode"] == "ANY"
        assert cfg["allowedFunctionNames"] == ["get_time"]


@anth_targets
def test_anthropic_client_parallel_tool_calls(route: str):
    pytest.skip("the simulator answers with at most one tool call (ballast-sim generate.rs: Content::ToolCall)")


@anth_targets
def test_anthropic_client_dropped_field_warns(anth: anthropic.Anthropic, sim: Sim, route: str):
    """A field the target format does not know (here an unknown top-level field) is not forwarded
    into another API's body: it is dropped and named in `x-ballast-warning`, and the request succeeds."""
    raw = anth.messages.with_raw_response.create(
        model=route,
        max_tokens=64,
        messages=[{"role": "user", "content": "echo ok"}],
        extra_body={"some_future_field": {"x": 1}},
    )
    warning = raw.headers.get("x-ballast-warning")
    assert warning and "some_future_field" in warning, warning
    assert raw.parse().content[0].text == "ok"
    (seen,) = upstream_requests(sim, route)
    assert "some_future_field" not in seen["body"]


@anth_targets
def test_anthropic_client_top_k(anth: anthropic.Anthropic, sim: Sim, route: str):
    """`top_k` has no OpenAI equivalent (dropped, with a warning); Gemini's is `topK` (kept)."""
    raw = anth.messages.with_raw_response.create(
        model=route, max_tokens=64, messages=[{"role": "user", "content": "echo ok"}], extra_body={"top_k": 5}
    )
    assert raw.parse().content[0].text == "ok"
    (seen,) = upstream_requests(sim, route)
    warning = raw.headers.get("x-ballast-warning") or ""
    if kind(route) == "openai":
        assert "top_k" in warning, warning
        assert "top_k" not in seen["body"]
    else:
        gen = seen["body"].get("generationConfig") or {}
        assert gen.get("topK") == 5
        assert "top_k" not in warning, warning


@anth_targets
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_client_upstream_400(anth: anthropic.Anthropic, sim: Sim, route: str, stream: bool):
    sim.set_faults({"error": {"status": 400, "api": SIM_API[kind(route)]}})
    try:
        with pytest.raises(anthropic.BadRequestError) as info:
            if stream:
                with anth.messages.stream(
                    model=route, max_tokens=64, messages=[{"role": "user", "content": "echo ok"}]
                ) as s:
                    s.get_final_message()
            else:
                anth.messages.create(model=route, max_tokens=64, messages=[{"role": "user", "content": "echo ok"}])
    finally:
        sim.clear_faults()
    err = info.value
    assert err.status_code == 400
    body = err.body
    assert isinstance(body, dict) and body.get("type") == "error", body
    assert body["error"]["type"] == "invalid_request_error"
    assert "ballast-sim injected" in body["error"]["message"], body
    assert "ballast-sim injected" in str(err)


# --------------------------------------------------------------------------------------------------
# openai client -> anthropic / gemini targets


def oai_echo_messages() -> list[dict[str, Any]]:
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": f"echo {PHRASE}"},
    ]


@oai_targets
def test_openai_client_text(oai: openai.OpenAI, sim: Sim, route: str):
    raw = oai.chat.completions.with_raw_response.create(model=route, messages=oai_echo_messages())
    assert_routing_headers(raw.headers, route)
    assert raw.headers.get("x-request-id")
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.id
    assert completion.model == upstream_model(route)
    (choice,) = completion.choices
    assert choice.index == 0
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == PHRASE
    assert not choice.message.tool_calls
    usage = completion.usage
    assert usage is not None
    assert usage.prompt_tokens > 0 and usage.completion_tokens > 0
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens

    (seen,) = upstream_requests(sim, route)
    assert_upstream_format(seen, route, stream=False)
    body = seen["body"]
    if kind(route) == "anthropic":
        system = body["system"]
        assert SYSTEM in json.dumps(system, ensure_ascii=False)
        assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
        assert PHRASE in json.dumps(body["messages"][-1], ensure_ascii=False)
        assert body["max_tokens"] == ROUTE_MAX_TOKENS, "the route's max_tokens fills Anthropic's required field"
    else:
        system = body.get("systemInstruction") or body.get("system_instruction")
        assert SYSTEM in json.dumps(system, ensure_ascii=False)
        assert [c.get("role") for c in body["contents"]] == ["user", "model", "user"]
        assert PHRASE in json.dumps(body["contents"][-1], ensure_ascii=False)


@oai_targets
def test_openai_client_max_completion_tokens_reaches_target(oai: openai.OpenAI, sim: Sim, route: str):
    oai.chat.completions.create(model=route, messages=[{"role": "user", "content": "echo ok"}], max_completion_tokens=42)
    (seen,) = upstream_requests(sim, route)
    body = seen["body"]
    if kind(route) == "anthropic":
        assert body["max_tokens"] == 42
    else:
        assert body["generationConfig"]["maxOutputTokens"] == 42


@oai_targets
def test_openai_client_streaming(oai: openai.OpenAI, sim: Sim, route: str):
    raw = oai.chat.completions.with_raw_response.create(
        model=route, messages=oai_echo_messages(), stream=True, stream_options={"include_usage": True}
    )
    assert_routing_headers(raw.headers, route)
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    chunks = list(raw.parse())
    assert len(chunks) >= 3
    assert all(c.object == "chat.completion.chunk" for c in chunks)
    assert len({c.id for c in chunks}) == 1, "every chunk of one completion shares its id"
    assert all(c.model == upstream_model(route) for c in chunks)
    with_choices = [c for c in chunks if c.choices]
    assert with_choices[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in with_choices)
    assert text == PHRASE
    finish = [c.choices[0].finish_reason for c in with_choices if c.choices[0].finish_reason]
    assert finish == ["stop"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.prompt_tokens > 0 and last.usage.completion_tokens > 0
    assert last.usage.total_tokens == last.usage.prompt_tokens + last.usage.completion_tokens
    assert all(c.usage is None for c in chunks[:-1])

    (seen,) = upstream_requests(sim, route)
    assert_upstream_format(seen, route, stream=True)


@oai_targets
def test_openai_client_streaming_without_usage(oai: openai.OpenAI, route: str):
    chunks = list(oai.chat.completions.create(model=route, messages=oai_echo_messages(), stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == PHRASE
    assert all(c.usage is None for c in chunks), "usage is only sent when include_usage asks for it"


def oai_collect_tool_stream(stream) -> tuple[dict[int, dict[str, str]], str | None, int, list]:
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    finish = None
    chunks = []
    for chunk in stream:
        chunks.append(chunk)
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            if tc.index not in calls:
                # OpenAI's shape: a call's first delta carries its id, type and name.
                assert tc.id, f"first delta of tool call {tc.index} has no id"
                assert tc.type == "function", tc
                assert tc.function and tc.function.name, tc
            acc = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                assert not acc["id"] or acc["id"] == tc.id, "a call's id does not change mid-stream"
                acc["id"] = tc.id
            if tc.function and tc.function.name:
                acc["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                acc["arguments"] += tc.function.arguments
                fragments += 1
        finish = chunk.choices[0].finish_reason or finish
    return calls, finish, fragments, chunks


def oai_tool_turn(call_id: str, arguments: str) -> list[dict[str, Any]]:
    return [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": {"name": "get_weather", "arguments": arguments}}],
        },
        {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
    ]


@oai_targets
def test_openai_client_tool_round_trip(oai: openai.OpenAI, sim: Sim, route: str):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Please call get_weather for Paris."}]
    tools = [OAI_WEATHER_TOOL, OAI_TIME_TOOL]
    first = oai.chat.completions.create(model=route, messages=messages, tools=tools)
    (choice,) = first.choices
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.id
    args = json.loads(call.function.arguments)
    assert_matches_schema(args, WEATHER_SCHEMA)
    (seen_first,) = upstream_requests(sim, route)
    assert_upstream_format(seen_first, route, stream=False)

    messages += oai_tool_turn(call.id, call.function.arguments)
    second = oai.chat.completions.create(model=route, messages=messages, tools=tools)
    assert second.choices[0].finish_reason == "stop"
    assert_tool_ack(second.choices[0].message.content)

    seen = upstream_requests(sim, route)[-1]
    assert_upstream_format(seen, route, stream=False)
    assert_tool_result_reached_upstream(seen["body"], route, call.id)


@oai_targets
def test_openai_client_streaming_tool_round_trip(oai: openai.OpenAI, sim: Sim, route: str):
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Use get_weather for Lisbon."}]
    tools = [OAI_WEATHER_TOOL, OAI_TIME_TOOL]
    stream = oai.chat.completions.create(
        model=route, messages=messages, tools=tools, stream=True, stream_options={"include_usage": True}
    )
    calls, finish, fragments, chunks = oai_collect_tool_stream(stream)
    assert finish == "tool_calls"
    assert list(calls) == [0]
    call = calls[0]
    assert call["id"]
    assert call["name"] == "get_weather"
    assert fragments >= 1
    args = json.loads(call["arguments"])
    assert_matches_schema(args, WEATHER_SCHEMA)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    (seen_first,) = upstream_requests(sim, route)
    assert_upstream_format(seen_first, route, stream=True)

    messages += oai_tool_turn(call["id"], call["arguments"])
    stream = oai.chat.completions.create(model=route, messages=messages, tools=tools, stream=True)
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert_tool_ack(text)
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]

    seen = upstream_requests(sim, route)[-1]
    assert_upstream_format(seen, route, stream=True)
    assert_tool_result_reached_upstream(seen["body"], route, call["id"])


@oai_targets
def test_openai_client_tool_choice_forces_named_tool(oai: openai.OpenAI, sim: Sim, route: str):
    completion = oai.chat.completions.create(
        model=route,
        messages=[{"role": "user", "content": "What should I wear today?"}],
        tools=[OAI_WEATHER_TOOL, OAI_TIME_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_time"}},
    )
    assert completion.choices[0].finish_reason == "tool_calls"
    (call,) = completion.choices[0].message.tool_calls
    assert call.id
    assert call.function.name == "get_time"
    assert json.loads(call.function.arguments) == {"city": "example"}

    (seen,) = upstream_requests(sim, route)
    body = seen["body"]
    if kind(route) == "anthropic":
        assert body["tool_choice"]["type"] == "tool"
        assert body["tool_choice"]["name"] == "get_time"
    else:
        cfg = body["toolConfig"]["functionCallingConfig"]
        assert cfg["mode"] == "ANY"
        assert cfg["allowedFunctionNames"] == ["get_time"]


@oai_targets
def test_openai_client_parallel_tool_calls(route: str):
    pytest.skip("the simulator answers with at most one tool call (ballast-sim generate.rs: Content::ToolCall)")


@oai_targets
@pytest.mark.parametrize("field", ["seed", "logit_bias"])
def test_openai_client_dropped_field_warns(oai: openai.OpenAI, sim: Sim, route: str, field: str):
    extra: dict[str, Any] = {"seed": 1} if field == "seed" else {"logit_bias": {"50256": -100}}
    raw = oai.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": "echo ok"}], **extra
    )
    assert raw.parse().choices[0].message.content == "ok"
    warning = raw.headers.get("x-ballast-warning") or ""
    (seen,) = upstream_requests(sim, route)
    gen = seen["body"].get("generationConfig", {})
    if kind(route) == "gemini" and field == "seed" and gen.get("seed") == 1:
        # Gemini has `generationConfig.seed`: honouring it is right too, and then nothing is dropped.
        assert "seed" not in warning, warning
        return
    # Anthropic has neither field, Gemini has no logit_bias: dropped, and said so, never sent.
    assert field in warning, f"{field} was dropped without an x-ballast-warning"
    assert warning.startswith("dropped field") or "dropped" in warning, warning
    assert field not in seen["body"]
    assert field not in json.dumps(gen)


@oai_targets
def test_openai_client_dropped_field_warns_when_streaming(oai: openai.OpenAI, route: str):
    raw = oai.chat.completions.with_raw_response.create(
        model=route, messages=[{"role": "user", "content": "echo ok"}], stream=True, logit_bias={"50256": -100}
    )
    warning = raw.headers.get("x-ballast-warning")
    assert warning and "logit_bias" in warning, warning
    assert "".join(c.choices[0].delta.content or "" for c in raw.parse() if c.choices) == "ok"


@oai_targets
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_client_upstream_400(oai: openai.OpenAI, sim: Sim, route: str, stream: bool):
    sim.set_faults({"error": {"status": 400, "api": SIM_API[kind(route)]}})
    try:
        with pytest.raises(openai.BadRequestError) as info:
            result = oai.chat.completions.create(
                model=route, messages=[{"role": "user", "content": "echo ok"}], stream=stream
            )
            if stream:
                list(result)
    finally:
        sim.clear_faults()
    err = info.value
    assert err.status_code == 400
    body = err.body
    # The openai SDK hands over the `error` object of `{"error": {...}}`.
    assert isinstance(body, dict), body
    assert "ballast-sim injected" in body.get("message", ""), body
    assert body.get("type") == "invalid_request_error", body
    assert "ballast-sim injected" in str(err)


# --------------------------------------------------------------------------------------------------
# Both clients: stop reasons, other tool choices, parallel calls in the history, streaming pace


@anth_targets
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_anthropic_client_max_tokens_stop_reason(anth: anthropic.Anthropic, sim: Sim, route: str, stream: bool):
    """`length` / `MAX_TOKENS` from the target is `max_tokens` for an Anthropic client."""
    kwargs = dict(model=route, max_tokens=2, messages=[{"role": "user", "content": "echo one two three four"}])
    if stream:
        with anth.messages.stream(**kwargs) as s:
            message = s.get_final_message()
    else:
        message = anth.messages.create(**kwargs)
    assert message.stop_reason == "max_tokens"
    assert message.content[0].text == "one two"


@oai_targets
@pytest.mark.parametrize("stream", [False, True], ids=["plain", "stream"])
def test_openai_client_length_finish_reason(oai: openai.OpenAI, route: str, stream: bool):
    """`max_tokens` / `MAX_TOKENS` from the target is `length` for an OpenAI client."""
    kwargs = dict(model=route, max_completion_tokens=2, messages=[{"role": "user", "content": "echo one two three four"}])
    if stream:
        chunks = list(oai.chat.completions.create(**kwargs, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    else:
        choice = oai.chat.completions.create(**kwargs).choices[0]
        text, finish = choice.message.content, [choice.finish_reason]
    assert finish == ["length"]
    assert text == "one two"


@anth_targets
def test_anthropic_client_tool_choice_any_and_none(anth: anthropic.Anthropic, route: str):
    tools = [ANTH_WEATHER_TOOL, ANTH_TIME_TOOL]
    # `any`: a call is required; the simulator calls the first tool when none is mentioned.
    forced = anth.messages.create(
        model=route, max_tokens=256, tools=tools, tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "What should I wear today?"}],
    )
    assert forced.stop_reason == "tool_use"
    assert [b.name for b in forced.content if b.type == "tool_use"] == ["get_weather"]
    # `none`: no call even though the message names a tool.
    plain = anth.messages.create(
        model=route, max_tokens=256, tools=tools, tool_choice={"type": "none"},
        messages=[{"role": "user", "content": "Please call get_time for Paris."}],
    )
    assert plain.stop_reason == "end_turn"
    assert [b.type for b in plain.content] == ["text"]


@oai_targets
def test_openai_client_tool_choice_required_and_none(oai: openai.OpenAI, route: str):
    tools = [OAI_WEATHER_TOOL, OAI_TIME_TOOL]
    forced = oai.chat.completions.create(
        model=route, tools=tools, tool_choice="required",
        messages=[{"role": "user", "content": "What should I wear today?"}],
    )
    assert forced.choices[0].finish_reason == "tool_calls"
    assert [c.function.name for c in forced.choices[0].message.tool_calls] == ["get_weather"]
    plain = oai.chat.completions.create(
        model=route, tools=tools, tool_choice="none",
        messages=[{"role": "user", "content": "Please call get_time for Paris."}],
    )
    assert plain.choices[0].finish_reason == "stop"
    assert not plain.choices[0].message.tool_calls
    assert plain.choices[0].message.content


@anth_targets
def test_anthropic_client_parallel_calls_in_history(anth: anthropic.Anthropic, sim: Sim, route: str):
    """The simulator never makes parallel calls, but a client may replay them (from another model):
    two calls in one assistant turn, two results in the next, each id kept with its own call."""
    messages = [
        {"role": "user", "content": "Weather and time in Paris."},
        {"role": "assistant", "content": [
            {"type": "text", "text": "Checking both."},
            {"type": "tool_use", "id": "toolu_01A", "name": "get_weather",
             "input": {"city": "Paris", "unit": "celsius", "days": 1, "detailed": True}},
            {"type": "tool_use", "id": "toolu_02B", "name": "get_time", "input": {"city": "Paris"}},
        ]},
        {"role": "user", "content": [
            {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18C"},
            {"type": "tool_result", "tool_use_id": "toolu_02B", "content": "10:00"},
        ]},
    ]
    message = anth.messages.create(model=route, max_tokens=256, messages=messages, tools=[ANTH_WEATHER_TOOL, ANTH_TIME_TOOL])
    assert message.stop_reason == "end_turn"
    assert message.content[0].text.startswith("Tool result received: ")
    assert "10:00" in message.content[0].text, "the last result is the one the simulator quotes"
    (seen,) = upstream_requests(sim, route)
    body = seen["body"]
    if kind(route) == "openai":
        msgs = body["messages"]
        (assistant,) = [m for m in msgs if m["role"] == "assistant"]
        assert [(c["id"], c["function"]["name"]) for c in assistant["tool_calls"]] == [
            ("toolu_01A", "get_weather"), ("toolu_02B", "get_time")
        ]
        assert json.loads(assistant["tool_calls"][1]["function"]["arguments"]) == {"city": "Paris"}
        assert [(m["tool_call_id"], m["content"]) for m in msgs if m["role"] == "tool"] == [
            ("toolu_01A", "18C"), ("toolu_02B", "10:00")
        ]
    else:
        model_turn, result_turn = body["contents"][1], body["contents"][2]
        assert model_turn["role"] == "model"
        assert [p["functionCall"]["name"] for p in model_turn["parts"] if "functionCall" in p] == ["get_weather", "get_time"]
        responses = [p["functionResponse"] for p in result_turn["parts"] if "functionResponse" in p]
        assert [r["name"] for r in responses] == ["get_weather", "get_time"]
        assert "18C" in json.dumps(responses[0]["response"]) and "10:00" in json.dumps(responses[1]["response"])


@oai_targets
def test_openai_client_parallel_calls_in_history(oai: openai.OpenAI, sim: Sim, route: str):
    """Two calls in one assistant message and two `tool` messages: Anthropic needs both results in
    one user turn right after the calls; Gemini needs the responses named after their calls."""
    messages = [
        {"role": "user", "content": "Weather and time in Paris."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_01A", "type": "function", "function": {
                "name": "get_weather", "arguments": json.dumps({"city": "Paris", "unit": "celsius", "days": 1, "detailed": True})}},
            {"id": "call_02B", "type": "function", "function": {"name": "get_time", "arguments": "{\"city\": \"Paris\"}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_01A", "content": "18C"},
        {"role": "tool", "tool_call_id": "call_02B", "content": "10:00"},
    ]
    completion = oai.chat.completions.create(model=route, messages=messages, tools=[OAI_WEATHER_TOOL, OAI_TIME_TOOL])
    assert completion.choices[0].finish_reason == "stop"
    assert completion.choices[0].message.content.startswith("Tool result received: ")
    (seen,) = upstream_requests(sim, route)
    body = seen["body"]
    if kind(route) == "anthropic":
        msgs = body["messages"]
        assert [m["role"] for m in msgs] == ["user", "assistant", "user"]
        uses = [b for b in msgs[1]["content"] if b["type"] == "tool_use"]
        assert [(u["id"], u["name"], u["input"]) for u in uses] == [
            ("call_01A", "get_weather", {"city": "Paris", "unit": "celsius", "days": 1, "detailed": True}),
            ("call_02B", "get_time", {"city": "Paris"}),
        ]
        results = msgs[2]["content"]
        assert [(r["type"], r["tool_use_id"]) for r in results] == [("tool_result", "call_01A"), ("tool_result", "call_02B")]
        assert "18C" in json.dumps(results[0]["content"]) and "10:00" in json.dumps(results[1]["content"])
    else:
        model_turn, result_turn = body["contents"][1], body["contents"][2]
        assert [p["functionCall"]["name"] for p in model_turn["parts"] if "functionCall" in p] == ["get_weather", "get_time"]
        responses = [p["functionResponse"] for p in result_turn["parts"] if "functionResponse" in p]
        assert [r["name"] for r in responses] == ["get_weather", "get_time"]


@oai_targets
def test_openai_client_stream_helper_tool_round_trip(oai: openai.OpenAI, sim: Sim, route: str):
    """The SDK's own accumulator (`chat.completions.stream`) parses the translated stream."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Use get_weather for Oslo."}]
    tools = [OAI_WEATHER_TOOL, OAI_TIME_TOOL]
    with oai.chat.completions.stream(model=route, messages=messages, tools=tools) as stream:
        done = [e for e in stream if e.type == "tool_calls.function.arguments.done"]
        first = stream.get_final_completion()
    assert first.choices[0].finish_reason == "tool_calls"
    (call,) = first.choices[0].message.tool_calls
    assert call.id and call.function.name == "get_weather"
    assert [e.name for e in done] == ["get_weather"]
    assert done[0].arguments == call.function.arguments
    assert_matches_schema(json.loads(call.function.arguments), WEATHER_SCHEMA)

    messages += oai_tool_turn(call.id, call.function.arguments)
    with oai.chat.completions.stream(model=route, messages=messages, tools=tools) as stream:
        second = stream.get_final_completion()
    assert second.choices[0].finish_reason == "stop"
    assert_tool_ack(second.choices[0].message.content)
    assert_tool_result_reached_upstream(upstream_requests(sim, route)[-1]["body"], route, call.id)


SLOW_WORDS = " ".join(f"w{i}" for i in range(30))


def _spread(times: list[float]) -> float:
    return times[-1] - times[0] if len(times) > 1 else 0.0


@anth_targets
def test_anthropic_client_streams_incrementally(anth: anthropic.Anthropic, sim: Sim, route: str):
    """Deltas reach the client as the target sends them, not all at the end: with the target slowed
    to ~20 ms a token, 30 tokens arrive spread over about half a second."""
    sim.set_faults({"slow": {"factor": 20, "api": SIM_API[kind(route)]}})
    times: list[float] = []
    with anth.messages.stream(model=route, max_tokens=256, messages=[{"role": "user", "content": f"echo {SLOW_WORDS}"}]) as s:
        for text in s.text_stream:
            times.append(time.monotonic())
        assert s.get_final_text() == SLOW_WORDS
    assert len(times) >= 10
    assert _spread(times) > 0.2, f"deltas arrived within {_spread(times):.3f}s: buffered, not streamed"


@oai_targets
def test_openai_client_streams_incrementally(oai: openai.OpenAI, sim: Sim, route: str):
    sim.set_faults({"slow": {"factor": 20, "api": SIM_API[kind(route)]}})
    times: list[float] = []
    text = ""
    for chunk in oai.chat.completions.create(model=route, messages=[{"role": "user", "content": f"echo {SLOW_WORDS}"}], stream=True):
        if chunk.choices and chunk.choices[0].delta.content:
            text += chunk.choices[0].delta.content
            times.append(time.monotonic())
    assert text == SLOW_WORDS
    assert len(times) >= 10
    assert _spread(times) > 0.2, f"deltas arrived within {_spread(times):.3f}s: buffered, not streamed"


@anth_targets
def test_anthropic_client_upstream_429_keeps_retry_after(anth: anthropic.Anthropic, sim: Sim, route: str):
    sim.set_faults({"rate_limit": {"retry_after_secs": 3, "api": SIM_API[kind(route)]}})
    with pytest.raises(anthropic.RateLimitError) as info:
        anth.messages.create(model=route, max_tokens=64, messages=[{"role": "user", "content": "echo ok"}])
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "3"
    assert info.value.body["error"]["type"] == "rate_limit_error"


@oai_targets
def test_openai_client_upstream_429_keeps_retry_after(oai: openai.OpenAI, sim: Sim, route: str):
    sim.set_faults({"rate_limit": {"retry_after_secs": 3, "api": SIM_API[kind(route)]}})
    with pytest.raises(openai.RateLimitError) as info:
        oai.chat.completions.create(model=route, messages=[{"role": "user", "content": "echo ok"}])
    assert info.value.status_code == 429
    assert info.value.response.headers.get("retry-after") == "3"
