"""The `openai` SDK through the gateway's `/v1/chat/completions` to an OpenAI target (same format)."""

from __future__ import annotations

import json

import openai

from conftest import (
    GATEWAY_KEY,
    OPENAI_KEY,
    WEATHER_SCHEMA,
    Gateway,
    Sim,
    assert_matches_schema,
    assert_no_secret_in_headers,
)

ROUTE = "gpt-4.1"
UPSTREAM_MODEL = "gpt-4.1-2025-04-14"

WEATHER_TOOL = {
    "type": "function",
    "function": {"name": "get_weather", "description": "Current weather for a city", "parameters": WEATHER_SCHEMA},
}


def test_non_streaming_text(oai: openai.OpenAI, sim: Sim):
    raw = oai.chat.completions.with_raw_response.create(
        model=ROUTE, messages=[{"role": "user", "content": "Tell me about the sea."}]
    )
    assert raw.headers.get("x-request-id"), "every response carries x-request-id"
    assert raw.headers.get("x-ballast-route") == ROUTE
    assert raw.headers.get("x-ballast-target") == f"oai/{UPSTREAM_MODEL}"
    assert raw.headers.get("x-ballast-attempts") == "1"
    completion = raw.parse()
    assert completion.object == "chat.completion"
    assert completion.model == UPSTREAM_MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert isinstance(choice.message.content, str) and choice.message.content.strip()
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 0
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert len(sim.generation_requests()) == 1


def test_streaming_with_usage(oai: openai.OpenAI):
    messages = [{"role": "user", "content": "Write a few sentences about rivers."}]
    whole = oai.chat.completions.create(model=ROUTE, messages=messages).choices[0].message.content

    raw = oai.chat.completions.with_raw_response.create(
        model=ROUTE, messages=messages, stream=True, stream_options={"include_usage": True}
    )
    assert raw.headers.get("x-request-id")
    assert raw.headers.get("x-ballast-target") == f"oai/{UPSTREAM_MODEL}"
    assert raw.headers.get("content-type", "").startswith("text/event-stream")
    chunks = list(raw.parse())
    assert len(chunks) > 3, "the answer streams in several chunks"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    # Answers are deterministic: the streamed text is exactly the non-streamed one.
    assert text == whole
    assert all(c.model == UPSTREAM_MODEL for c in chunks)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finish == ["stop"]
    # With include_usage the last chunk carries usage and no choices; earlier chunks carry none.
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None and last.usage.completion_tokens > 0 and last.usage.prompt_tokens > 0
    assert all(c.usage is None for c in chunks[:-1])


def test_multi_turn_with_system_prompt_unicode_echo(oai: openai.OpenAI, sim: Sim):
    phrase = "héllo ไทย 🚀 —  “quotes”\n\\ back\\slash \"dq\"\t你好 "
    messages = [
        {"role": "system", "content": "You are terse. Système: ünïcödé ✓"},
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": f"echo {phrase}"},
    ]
    completion = oai.chat.completions.create(model=ROUTE, messages=messages)
    assert completion.choices[0].message.content == phrase

    # The upstream saw the whole conversation, system prompt included, byte for byte.
    (seen,) = sim.generation_requests()
    assert seen["body"]["messages"] == messages

    stream = oai.chat.completions.create(model=ROUTE, messages=messages, stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == phrase


def test_tool_call_round_trip(oai: openai.OpenAI, sim: Sim):
    messages = [{"role": "user", "content": "Please call get_weather for Paris."}]
    first = oai.chat.completions.create(model=ROUTE, messages=messages, tools=[WEATHER_TOOL])
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.type == "function"
    assert call.function.name == "get_weather"
    assert call.id
    args = json.loads(call.function.arguments)
    assert_matches_schema(args, WEATHER_SCHEMA)

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": call.id, "type": "function", "function": {"name": "get_weather", "arguments": call.function.arguments}}
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "18°C and sunny"},
    ]
    second = oai.chat.completions.create(model=ROUTE, messages=messages, tools=[WEATHER_TOOL])
    assert second.choices[0].finish_reason == "stop"
    assert second.choices[0].message.content == "Tool result received: 18°C and sunny"

    # The id the client got is the id the upstream received back with the result.
    seen = sim.generation_requests()[-1]["body"]["messages"]
    assert seen[1]["tool_calls"][0]["id"] == call.id
    assert seen[2]["tool_call_id"] == call.id


def test_tool_call_forced_by_tool_choice(oai: openai.OpenAI):
    completion = oai.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "What should I wear today?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
    )
    (call,) = completion.choices[0].message.tool_calls
    assert call.function.name == "get_weather"
    assert_matches_schema(json.loads(call.function.arguments), WEATHER_SCHEMA)


def test_streaming_tool_call(oai: openai.OpenAI):
    messages = [{"role": "user", "content": "Use get_weather for Lisbon."}]
    whole = oai.chat.completions.create(model=ROUTE, messages=messages, tools=[WEATHER_TOOL]).choices[0].message

    stream = oai.chat.completions.create(model=ROUTE, messages=messages, tools=[WEATHER_TOOL], stream=True)
    calls: dict[int, dict[str, str]] = {}
    fragments = 0
    finish = None
    for chunk in stream:
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            acc = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": ""})
            if tc.id:
                acc["id"] = tc.id
            if tc.function and tc.function.name:
                acc["name"] += tc.function.name
            if tc.function and tc.function.arguments:
                acc["arguments"] += tc.function.arguments
                fragments += 1
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0]
    call = calls[0]
    assert call["name"] == "get_weather"
    assert fragments > 1, "arguments arrive in several deltas"
    args = json.loads(call["arguments"])
    assert_matches_schema(args, WEATHER_SCHEMA)
    assert call["id"].startswith("call_")
    # Same request, same answer: streaming and non-streaming agree on the call.
    assert args == json.loads(whole.tool_calls[0].function.arguments)


def test_provider_key_model_rewrite_and_unknown_fields_pass_through(oai: openai.OpenAI, sim: Sim):
    future = {"x": 1, "nested": {"list": [1, "two", None, True], "ü": "ß"}}
    oai.chat.completions.create(
        model=ROUTE,
        messages=[{"role": "user", "content": "hello"}],
        temperature=0.25,
        max_completion_tokens=50,
        user="e2e-user",
        extra_body={"some_future_field": future},
    )
    (seen,) = sim.generation_requests()
    assert seen["api"] == "openai"
    assert seen["path"] == "/v1/chat/completions"
    assert seen["model"] == UPSTREAM_MODEL
    body = seen["body"]
    assert body["model"] == UPSTREAM_MODEL, "the gateway rewrites model to the target's upstream model"
    assert body["some_future_field"] == future, "unknown fields reach the upstream unchanged"
    assert body["temperature"] == 0.25
    assert body["max_completion_tokens"] == 50
    assert body["user"] == "e2e-user"
    assert body["messages"] == [{"role": "user", "content": "hello"}]
    headers = seen["headers"]
    assert headers.get("authorization") == f"Bearer {OPENAI_KEY}", "the provider key is sent upstream"
    assert_no_secret_in_headers(headers, GATEWAY_KEY)


def test_models_list(oai: openai.OpenAI, gateway: Gateway):
    models = list(oai.models.list())
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(gateway.routes)
    assert all(m.object == "model" for m in models)
