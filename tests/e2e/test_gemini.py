"""Gemini inbound end to end: the official `google-genai` SDK through the gateway (issue 6's proof).

- `client.models.generate_content` and `generate_content_stream` served by an `openai` target and by
  an `anthropic` target (and, as a baseline, by a `gemini` target: same format);
- a function call round trip, by hand (a forced call, its `functionResponse` sent back) and by the
  SDK's own automatic function calling with a Python function;
- `client.models.list()` (`GET /v1beta/models`) listing the routes, and the key in `?key=`;
- failover: a Gemini client keeps being served while its route's primary (on the second simulator)
  is `down`.

The SDK validates every response and streamed chunk with its pydantic types (`extra` fields are
dropped, wrong types raise), so a response the SDK could not read fails the test that made it. The
client never leaves 127.0.0.1: its `base_url` is the gateway and it never retries.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from google import genai
from google.genai import errors as genai_errors
from google.genai import types

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
PHRASE = "héllo ไทย 🚀 gemini"
SYSTEM = "You are terse. Système: ünïcödé ✓"
TOOL_RESULT = "18°C and sunny in Paris"
FAILOVER_ROUTE = "gem-failover"
DOWN_SECS = 2.0

# Route (the model clients send) -> (target, provider kind, upstream model).
TARGETS: dict[str, tuple[str, str, str]] = {
    "gem-via-openai": ("oai/gpt-4.1", "openai", "gpt-4.1"),
    "gem-via-anthropic": ("anth/claude-sonnet-4-5", "anthropic", "claude-sonnet-4-5"),
    "gem-via-gemini": ("gem/gemini-2.5-flash", "gemini", "gemini-2.5-flash"),
}
# Primary: a Gemini target on the second simulator; secondary: an OpenAI target on the first.
FAILOVER_TARGETS = ["gem-b/gemini-2.5-pro", "oai/gpt-4.1-mini"]

routes = pytest.mark.parametrize("route", list(TARGETS))

# Issue 17: targets whose models refuse some sampling parameters (the simulator refuses them as the
# real APIs do): Claude 4.5 takes temperature or top_p, an OpenAI reasoning model neither.
SAMPLING_ROUTES = {"gem-claude-45": "anth/claude-sonnet-4-5", "gem-reasoning": "oai/gpt-5"}

WEATHER_DECL = types.FunctionDeclaration(
    name="get_weather", description="Current weather for a city", parameters_json_schema=WEATHER_SCHEMA
)
# The tool offered, with no forced choice (the turns after a call).
WEATHER_TOOLS = types.GenerateContentConfig(tools=[types.Tool(function_declarations=[WEATHER_DECL])])


# --------------------------------------------------------------------------------------------------
# This module's gateway


@dataclass
class GeminiGateway:
    base_url: str
    proc: Proc


def gemini_config(sim: Sim, sim_b: Sim) -> str:
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
        provider("gem-b", "gemini", sim_b.base_url, GEMINI_KEY),
    ]
    for route, (target, _, _) in TARGETS.items():
        parts.append(f"[routes.{json.dumps(route)}]\ntargets = {json.dumps([target])}\n")
    parts.append(f"[routes.{json.dumps(FAILOVER_ROUTE)}]\ntargets = {json.dumps(FAILOVER_TARGETS)}\n")
    for route, target in SAMPLING_ROUTES.items():
        parts.append(f"[routes.{json.dumps(route)}]\ntargets = {json.dumps([target])}\n")
    return "\n".join(parts)


@pytest.fixture(scope="module")
def ggw(ballast_bin: str, log_dir: Path, sim: Sim, sim_b: Sim):
    config = log_dir / "ballast-gemini.toml"
    config.write_text(gemini_config(sim, sim_b))
    proc = Proc(
        "gateway-gemini",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield GeminiGateway(base_url=proc.base_url, proc=proc)
    proc.stop()


def make_client(ggw: GeminiGateway, api_version: str | None = None) -> genai.Client:
    """A client on the gateway that never retries. `api_version` None: the SDK's default (`v1` in
    google-genai 3.x; older releases used `v1beta`, still what Google's REST docs show)."""
    return genai.Client(
        api_key=GATEWAY_KEY,
        http_options=types.HttpOptions(
            base_url=ggw.base_url,
            api_version=api_version,
            timeout=int(CLIENT_TIMEOUT * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
        ),
    )


@pytest.fixture
def gclient(ggw: GeminiGateway):
    client = make_client(ggw)
    yield client
    client.close()


LOOPBACK = {"127.0.0.1", "localhost", "::1"}


@pytest.fixture(autouse=True)
def _loopback_only(monkeypatch: pytest.MonkeyPatch):
    """Resolving any host but loopback fails (and fails the test): the SDK may not reach Google."""
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


def generation_requests(sim: Sim) -> list[dict[str, Any]]:
    """Recorded generation requests, whatever their API (model listings excluded)."""
    out = []
    for r in sim.requests():
        path = r["path"].split("?")[0]
        if r["method"] != "POST":
            continue
        if path in ("/v1/messages", "/v1/chat/completions", "/v1/responses") or path.endswith(
            (":generateContent", ":streamGenerateContent")
        ):
            out.append(r)
    return out


def assert_upstream_format(seen: dict[str, Any], route: str, stream: bool) -> None:
    """The gateway spoke the target's own API to it, with the upstream model and the target's key."""
    k = kind(route)
    path = seen["path"].split("?")[0]
    body = seen["body"]
    assert seen["model"] == upstream_model(route)
    if k == "openai":
        assert path == "/v1/chat/completions"
        assert body["model"] == upstream_model(route) and "messages" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("authorization") == f"Bearer {OPENAI_KEY}"
    elif k == "anthropic":
        assert path == "/v1/messages"
        assert body["model"] == upstream_model(route) and "messages" in body
        assert bool(body.get("stream")) == stream
        assert seen["headers"].get("x-api-key") == ANTHROPIC_KEY
    else:
        method = "streamGenerateContent" if stream else "generateContent"
        assert path.endswith(f"/models/{upstream_model(route)}:{method}"), path
        assert "contents" in body
        assert seen["headers"].get("x-goog-api-key") == GEMINI_KEY or f"key={GEMINI_KEY}" in seen["path"]
    # The client's key (the gateway's) never reaches the upstream.
    assert not any(GATEWAY_KEY in v for v in seen["headers"].values())
    assert GATEWAY_KEY not in seen["path"]


def upstream_system(seen: dict[str, Any], route: str) -> str:
    body = seen["body"]
    k = kind(route)
    if k == "openai":
        msgs = [m for m in body["messages"] if m["role"] in ("system", "developer")]
        return "".join(
            m["content"] if isinstance(m["content"], str) else "".join(p["text"] for p in m["content"]) for m in msgs
        )
    if k == "anthropic":
        system = body.get("system")
        return system if isinstance(system, str) else "".join(b["text"] for b in system or [])
    si = body.get("systemInstruction") or body.get("system_instruction")
    return "".join(p.get("text", "") for p in si["parts"])


def tool_config(name: str) -> types.ToolConfig:
    return types.ToolConfig(
        function_calling_config=types.FunctionCallingConfig(
            mode=types.FunctionCallingConfigMode.ANY, allowed_function_names=[name]
        )
    )


def forced_call_config(**extra: Any) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        tools=[types.Tool(function_declarations=[WEATHER_DECL])],
        tool_config=tool_config("get_weather"),
        automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        **extra,
    )


def assert_usage(usage: types.GenerateContentResponseUsageMetadata | None) -> None:
    assert usage is not None
    assert usage.prompt_token_count and usage.prompt_token_count > 0
    assert usage.candidates_token_count and usage.candidates_token_count > 0
    thoughts = usage.thoughts_token_count or 0
    assert usage.total_token_count == usage.prompt_token_count + usage.candidates_token_count + thoughts


# --------------------------------------------------------------------------------------------------
# Text


@routes
def test_generate_content_text(gclient: genai.Client, sim: Sim, route: str):
    resp = gclient.models.generate_content(
        model=route,
        contents=f"echo {PHRASE}",
        config=types.GenerateContentConfig(system_instruction=SYSTEM, temperature=0.5, max_output_tokens=200),
    )
    assert resp.text == PHRASE
    cand = resp.candidates[0]
    assert cand.content.role == "model"
    assert cand.finish_reason == types.FinishReason.STOP
    assert_usage(resp.usage_metadata)
    assert resp.model_version == upstream_model(route)
    assert resp.sdk_http_response.headers.get("x-ballast-route") == route
    assert resp.sdk_http_response.headers.get("x-ballast-target") == TARGETS[route][0]

    [seen] = generation_requests(sim)
    assert_upstream_format(seen, route, stream=False)
    assert upstream_system(seen, route) == SYSTEM
    body = seen["body"]
    if kind(route) == "openai":
        assert body.get("temperature") == 0.5
        assert (body.get("max_completion_tokens") or body.get("max_tokens")) == 200
    elif kind(route) == "anthropic":
        assert body["temperature"] == 0.5 and body["max_tokens"] == 200
    else:
        assert body["generationConfig"]["temperature"] == 0.5
        assert body["generationConfig"]["maxOutputTokens"] == 200


@routes
def test_generate_content_stream_text(gclient: genai.Client, sim: Sim, route: str):
    chunks = list(
        gclient.models.generate_content_stream(
            model=route, contents=f"echo {PHRASE}", config=types.GenerateContentConfig(system_instruction=SYSTEM)
        )
    )
    assert len(chunks) >= 2, "the answer arrives in pieces"
    assert "".join(c.text or "" for c in chunks) == PHRASE
    finishes = [c.candidates[0].finish_reason for c in chunks if c.candidates and c.candidates[0].finish_reason]
    assert finishes == [types.FinishReason.STOP], "exactly one chunk, the last, carries the finish reason"
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert_usage(chunks[-1].usage_metadata)
    assert len({c.response_id for c in chunks}) == 1, "every chunk carries the same response id"

    [seen] = generation_requests(sim)
    assert_upstream_format(seen, route, stream=True)
    assert upstream_system(seen, route) == SYSTEM


@routes
def test_max_output_tokens_finish_reason(gclient: genai.Client, route: str):
    config = types.GenerateContentConfig(max_output_tokens=5)
    resp = gclient.models.generate_content(model=route, contents="Write a long story about the sea.", config=config)
    assert resp.candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert resp.text and resp.usage_metadata.candidates_token_count <= 5
    chunks = list(
        gclient.models.generate_content_stream(model=route, contents="Write a long story about the sea.", config=config)
    )
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.MAX_TOKENS
    assert "".join(c.text or "" for c in chunks) == resp.text


# --------------------------------------------------------------------------------------------------
# Function calls


def _round_trip_contents(
    first: types.GenerateContentResponse, question: str, with_ids: bool
) -> tuple[list[types.Content], types.FunctionCall]:
    """The history a client sends back: its question, the model's turn, the function's result.
    Without ids, as code written for Gemini (which has none) builds it: call and result are paired
    by name."""
    [call] = first.function_calls
    model_turn = first.candidates[0].content
    if not with_ids:
        model_turn = types.Content(role="model", parts=[types.Part.from_function_call(name=call.name, args=call.args)])
    response_part = types.Part(
        function_response=types.FunctionResponse(
            id=call.id if with_ids else None, name=call.name, response={"output": TOOL_RESULT}
        )
    )
    contents = [
        types.Content(role="user", parts=[types.Part(text=question)]),
        model_turn,
        types.Content(role="user", parts=[response_part]),
    ]
    return contents, call if with_ids else types.FunctionCall(name=call.name, args=call.args)


def assert_tool_result_upstream(seen: dict[str, Any], route: str, call: types.FunctionCall) -> None:
    """The second request carried the model's call and its result, paired as the target expects."""
    body = seen["body"]
    k = kind(route)
    if k == "openai":
        msgs = body["messages"]
        assistant = next(m for m in msgs if m["role"] == "assistant")
        [tc] = assistant["tool_calls"]
        assert tc["function"]["name"] == "get_weather"
        assert json.loads(tc["function"]["arguments"]) == call.args
        tool = msgs[-1]
        assert tool["role"] == "tool" and tool["tool_call_id"] == tc["id"]
        assert TOOL_RESULT in json.dumps(tool["content"], ensure_ascii=False)
        if call.id:
            assert tc["id"] == call.id, "the id the client saw is the id the upstream gets back"
    elif k == "anthropic":
        msgs = body["messages"]
        assistant = next(m for m in msgs if m["role"] == "assistant")
        [use] = [b for b in assistant["content"] if b["type"] == "tool_use"]
        assert use["name"] == "get_weather" and use["input"] == call.args
        [result] = [b for b in msgs[-1]["content"] if b["type"] == "tool_result"]
        assert msgs[-1]["role"] == "user" and result["tool_use_id"] == use["id"]
        assert TOOL_RESULT in json.dumps(result["content"], ensure_ascii=False)
        if call.id:
            assert use["id"] == call.id
    else:
        contents = body["contents"]
        [fc] = [p["functionCall"] for c in contents for p in c["parts"] if "functionCall" in p]
        assert fc["name"] == "get_weather" and fc["args"] == call.args
        [fr] = [p["functionResponse"] for p in contents[-1]["parts"] if "functionResponse" in p]
        assert fr["name"] == "get_weather"
        assert TOOL_RESULT in json.dumps(fr["response"], ensure_ascii=False)


@pytest.mark.parametrize("with_ids", [True, False], ids=["ids", "no-ids"])
@routes
def test_function_call_round_trip(gclient: genai.Client, sim: Sim, route: str, with_ids: bool):
    question = "What is the weather like?"
    first = gclient.models.generate_content(model=route, contents=question, config=forced_call_config())
    assert first.candidates[0].finish_reason == types.FinishReason.STOP
    [call] = first.function_calls
    assert call.name == "get_weather"
    assert_matches_schema(call.args, WEATHER_SCHEMA)
    assert call.args["city"] == "example"
    if kind(route) != "gemini":
        # Gemini has no call ids; the gateway gives a Gemini client the target's so they survive.
        assert call.id, "a translated answer carries the call id"
    assert_usage(first.usage_metadata)

    contents, call = _round_trip_contents(first, question, with_ids)
    second = gclient.models.generate_content(model=route, contents=contents, config=WEATHER_TOOLS)
    assert second.text.startswith("Tool result received: ")
    assert TOOL_RESULT in second.text
    assert second.candidates[0].finish_reason == types.FinishReason.STOP

    seen = generation_requests(sim)
    assert len(seen) == 2
    for s in seen:
        assert_upstream_format(s, route, stream=False)
    # The forced choice reached the target in its own form.
    body = seen[0]["body"]
    if kind(route) == "openai":
        assert body["tool_choice"] == {"type": "function", "function": {"name": "get_weather"}}
        assert body["tools"][0]["function"]["parameters"]["required"] == WEATHER_SCHEMA["required"]
    elif kind(route) == "anthropic":
        assert body["tool_choice"]["type"] == "tool" and body["tool_choice"]["name"] == "get_weather"
        assert body["tools"][0]["input_schema"]["required"] == WEATHER_SCHEMA["required"]
    else:
        fcc = body["toolConfig"]["functionCallingConfig"]
        assert fcc["mode"] == "ANY" and fcc["allowedFunctionNames"] == ["get_weather"]
    assert_tool_result_upstream(seen[1], route, call)


@routes
def test_function_call_round_trip_streaming(gclient: genai.Client, sim: Sim, route: str):
    question = "What is the weather like?"
    chunks = list(gclient.models.generate_content_stream(model=route, contents=question, config=forced_call_config()))
    calls = [fc for c in chunks for fc in (c.function_calls or [])]
    assert len(calls) == 1, f"one whole function call across the stream, got {calls}"
    [call] = calls
    assert call.name == "get_weather"
    assert_matches_schema(call.args, WEATHER_SCHEMA)
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP
    assert_usage(chunks[-1].usage_metadata)

    # Rebuild the model turn from the stream, as a streaming client does.
    call_parts = [
        p
        for c in chunks
        if c.candidates and c.candidates[0].content
        for p in c.candidates[0].content.parts or []
        if p.function_call
    ]
    result = types.FunctionResponse(id=call.id, name=call.name, response={"output": TOOL_RESULT})
    contents = [
        types.Content(role="user", parts=[types.Part(text=question)]),
        types.Content(role="model", parts=call_parts),
        types.Content(role="user", parts=[types.Part(function_response=result)]),
    ]
    text = "".join(
        c.text or ""
        for c in gclient.models.generate_content_stream(model=route, contents=contents, config=WEATHER_TOOLS)
    )
    assert text.startswith("Tool result received: ") and TOOL_RESULT in text

    seen = generation_requests(sim)
    assert len(seen) == 2
    for s in seen:
        assert_upstream_format(s, route, stream=True)
    assert_tool_result_upstream(seen[1], route, call)


@routes
def test_automatic_function_calling(gclient: genai.Client, sim: Sim, route: str):
    """The SDK runs a Python function the model asks for and sends its result back by itself."""
    calls: list[dict[str, Any]] = []

    def get_weather(city: str) -> str:
        """Current weather for a city.

        Args:
            city: City name.
        """
        calls.append({"city": city})
        return TOOL_RESULT

    resp = gclient.models.generate_content(
        model=route,
        contents="Use get_weather to tell me the weather in Paris.",
        config=types.GenerateContentConfig(
            tools=[get_weather],
            automatic_function_calling=types.AutomaticFunctionCallingConfig(maximum_remote_calls=3),
        ),
    )
    assert calls == [{"city": "example"}]
    assert resp.text.startswith("Tool result received: ") and TOOL_RESULT in resp.text
    history = resp.automatic_function_calling_history
    assert [c.role for c in history] == ["user", "model", "user"]
    assert history[1].parts[0].function_call.name == "get_weather"
    assert len(generation_requests(sim)) == 2


# --------------------------------------------------------------------------------------------------
# Listing, keys, errors


@pytest.mark.parametrize("api_version", ["v1", "v1beta"])
def test_version_paths(ggw: GeminiGateway, sim: Sim, api_version: str):
    """The SDK under either version path (`v1` is google-genai 3.x's default): generation, streaming
    and `models.list()` (which must name the routes, in Gemini's shape)."""
    paths: list[str] = []
    client = genai.Client(
        api_key=GATEWAY_KEY,
        http_options=types.HttpOptions(
            base_url=ggw.base_url,
            api_version=api_version,
            timeout=int(CLIENT_TIMEOUT * 1000),
            retry_options=types.HttpRetryOptions(attempts=1),
            client_args={"event_hooks": {"request": [lambda req: paths.append(req.url.path)]}},
        ),
    )
    try:
        resp = client.models.generate_content(model="gem-via-anthropic", contents=f"echo {PHRASE}")
        assert resp.text == PHRASE
        chunks = client.models.generate_content_stream(model="gem-via-anthropic", contents=f"echo {PHRASE}")
        assert "".join(c.text or "" for c in chunks) == PHRASE
        assert paths == [
            f"/{api_version}/models/gem-via-anthropic:generateContent",
            f"/{api_version}/models/gem-via-anthropic:streamGenerateContent",
        ]
        assert len(generation_requests(sim)) == 2

        models = list(client.models.list(config={"page_size": 100}))
        assert paths[-1] == f"/{api_version}/models"
        names = {m.name for m in models}
        for route in [*TARGETS, FAILOVER_ROUTE]:
            assert f"models/{route}" in names, f"GET /{api_version}/models from google-genai listed {sorted(names)}"
        assert "generateContent" in (models[0].supported_actions or [])
    finally:
        client.close()


@pytest.mark.parametrize("version", ["v1beta", "v1"])
def test_key_in_query_and_version_paths(ggw: GeminiGateway, sim: Sim, version: str):
    """`?key=` works as `x-goog-api-key` does, under both version paths; a wrong key is refused in
    Google's error shape."""
    body = {"contents": [{"role": "user", "parts": [{"text": f"echo {PHRASE}"}]}]}
    with httpx.Client(base_url=ggw.base_url, timeout=CLIENT_TIMEOUT) as http:
        r = http.post(f"/{version}/models/gem-via-openai:generateContent", params={"key": GATEWAY_KEY}, json=body)
        assert r.status_code == 200, r.text
        resp = types.GenerateContentResponse.model_validate(r.json())
        assert resp.text == PHRASE
        r = http.post(f"/{version}/models/gem-via-openai:generateContent", params={"key": "wrong"}, json=body)
        assert r.status_code in (401, 403)
        err = r.json()["error"]
        assert err["code"] == r.status_code and err["message"] and err["status"]
    [seen] = generation_requests(sim)
    assert GATEWAY_KEY not in seen["path"]


def test_unknown_route_is_a_client_error(gclient: genai.Client):
    with pytest.raises(genai_errors.ClientError) as exc:
        gclient.models.generate_content(model="no-such-route", contents="hello")
    assert exc.value.code == 404
    assert "no-such-route" in exc.value.message


# --------------------------------------------------------------------------------------------------
# Upstream failures, before and after the first byte


@pytest.mark.parametrize("status", [400, 429, 503])
@routes
def test_upstream_error_in_googles_shape(gclient: genai.Client, sim: Sim, route: str, status: int):
    sim.set_faults({"error": {"status": status}} if status != 429 else {"rate_limit": {"retry_after_secs": 1}})
    error_cls = genai_errors.ClientError if status < 500 else genai_errors.ServerError
    with pytest.raises(error_cls) as exc:
        gclient.models.generate_content(model=route, contents="hello")
    assert exc.value.code == status
    assert exc.value.status, "Google's error shape names the status"
    with pytest.raises(error_cls) as exc:
        list(gclient.models.generate_content_stream(model=route, contents="hello"))
    assert exc.value.code == status


@pytest.mark.parametrize("mode", ["eof", "reset"])
@routes
def test_stream_cut_midway_raises(gclient: genai.Client, sim: Sim, route: str, mode: str):
    """The upstream's answer stops half-way, after the client got text: the stream ends with an error
    chunk in Google's shape (the SDK raises it), never a silent cut that looks complete."""
    sim.set_faults({"truncate": {"rate": 1.0, "mode": mode}})
    got: list[str] = []
    with pytest.raises(genai_errors.APIError) as exc:
        for chunk in gclient.models.generate_content_stream(model=route, contents="Write a long story."):
            got.append(chunk.text or "")
            assert not (chunk.candidates and chunk.candidates[0].finish_reason == types.FinishReason.STOP)
    assert exc.value.code >= 500
    assert TARGETS[route][0].split("/")[0] + "/" in (exc.value.message or ""), exc.value.message
    assert "".join(got), "text arrived before the cut"


# --------------------------------------------------------------------------------------------------
# Failover


def test_failover_when_primary_is_down(gclient: genai.Client, sim: Sim, sim_b: Sim):
    sim_b.go_down(DOWN_SECS)

    resp = gclient.models.generate_content(model=FAILOVER_ROUTE, contents=f"echo {PHRASE}")
    assert resp.text == PHRASE
    headers = resp.sdk_http_response.headers
    assert headers.get("x-ballast-target") == FAILOVER_TARGETS[1]
    assert headers.get("x-ballast-attempts") == "2"
    assert resp.model_version == "gpt-4.1-mini"

    chunks = list(gclient.models.generate_content_stream(model=FAILOVER_ROUTE, contents=f"echo {PHRASE}"))
    assert "".join(c.text or "" for c in chunks) == PHRASE
    assert chunks[-1].candidates[0].finish_reason == types.FinishReason.STOP

    first = gclient.models.generate_content(
        model=FAILOVER_ROUTE, contents="What is the weather like?", config=forced_call_config()
    )
    assert first.function_calls[0].name == "get_weather"

    assert [(r["api"], r["model"]) for r in generation_requests(sim)] == [("openai", "gpt-4.1-mini")] * 3
    sim_b.wait_until_up(timeout=DOWN_SECS + 5)
    assert sim_b.requests() == []


# --------------------------------------------------------------------------------------------------
# What each target model accepts (issue 17)


@pytest.mark.parametrize("route", list(SAMPLING_ROUTES))
@pytest.mark.parametrize("stream", [False, True])
def test_gemini_cli_sampling_reaches_models_that_refuse_some_of_it(gclient: genai.Client, sim: Sim, route: str, stream: bool):
    """Gemini CLI sends temperature, topP and topK on every request. Served by a Claude 4.5 model or an
    OpenAI reasoning model — each of which the simulator, like the real API, refuses with a 400 when
    sent what it does not take — the request still succeeds: the parameters the model refuses are
    dropped and named in x-ballast-warning."""
    config = types.GenerateContentConfig(temperature=0.3, top_p=0.9, top_k=40, max_output_tokens=200)
    if stream:
        chunks = list(gclient.models.generate_content_stream(model=route, contents=f"echo {PHRASE}", config=config))
        text = "".join(c.text or "" for c in chunks)
        headers = chunks[0].sdk_http_response.headers
    else:
        resp = gclient.models.generate_content(model=route, contents=f"echo {PHRASE}", config=config)
        text = resp.text
        headers = resp.sdk_http_response.headers
    assert text == PHRASE
    [seen] = generation_requests(sim)
    body = seen["body"]
    if route == "gem-claude-45":
        assert seen["path"] == "/v1/messages"
        assert body["temperature"] == 0.3 and "top_p" not in body and body["top_k"] == 40, body
        assert "top_p" in headers.get("x-ballast-warning", "")
    else:
        assert seen["path"] == "/v1/chat/completions"
        for field in ("temperature", "top_p", "top_k", "max_tokens"):
            assert field not in body, (field, body)
        assert body["max_completion_tokens"] == 200
        assert "temperature" in headers.get("x-ballast-warning", "")
