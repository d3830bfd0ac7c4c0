"""The `anthropic` SDK through the gateway's `/v1/messages` to an Anthropic target (same format)."""

from __future__ import annotations

import json

import anthropic

from conftest import (
    ANTHROPIC_KEY,
    GATEWAY_KEY,
    WEATHER_SCHEMA,
    Gateway,
    Sim,
    assert_matches_schema,
    assert_no_secret_in_headers,
)

ROUTE = "claude-sonnet-4-5"
UPSTREAM_MODEL = "claude-sonnet-4-5-20250929"

WEATHER_TOOL = {"name": "get_weather", "description": "Current weather for a city", "input_schema": WEATHER_SCHEMA}


def test_non_streaming_text(anth: anthropic.Anthropic, sim: Sim):
    raw = anth.messages.with_raw_response.create(
        model=ROUTE, max_tokens=256, messages=[{"role": "user", "content": "Tell me about the sea."}]
    )
    assert raw.headers.get("x-request-id"), "every response carries x-request-id"
    assert raw.headers.get("x-ballast-route") == ROUTE
    assert raw.headers.get("x-ballast-target") == f"anth/{UPSTREAM_MODEL}"
    assert raw.headers.get("x-ballast-attempts") == "1"
    message = raw.parse()
    assert message.type == "message"
    assert message.role == "assistant"
    assert message.model == UPSTREAM_MODEL
    assert message.stop_reason == "end_turn"
    (block,) = message.content
    assert block.type == "text" and block.text.strip()
    assert message.usage.input_tokens > 0
    assert message.usage.output_tokens > 0
    assert len(sim.generation_requests()) == 1


def test_streaming_text(anth: anthropic.Anthropic):
    messages = [{"role": "user", "content": "Write a few sentences about rivers."}]
    whole = anth.messages.create(model=ROUTE, max_tokens=256, messages=messages).content[0].text

    event_types: list[str] = []
    deltas: list[str] = []
    with anth.messages.stream(model=ROUTE, max_tokens=256, messages=messages) as stream:
        assert stream.response.headers.get("x-request-id")
        assert stream.response.headers.get("x-ballast-target") == f"anth/{UPSTREAM_MODEL}"
        assert stream.response.headers.get("content-type", "").startswith("text/event-stream")
        for event in stream:
            event_types.append(event.type)
            if event.type == "content_block_delta" and event.delta.type == "text_delta":
                deltas.append(event.delta.text)
        final = stream.get_final_message()
    assert len(deltas) > 3, "the answer streams in several deltas"
    assert event_types[0] == "message_start"
    assert event_types[-1] == "message_stop"
    assert "message_delta" in event_types
    assert final.model == UPSTREAM_MODEL
    assert final.stop_reason == "end_turn"
    (block,) = final.content
    assert block.text == "".join(deltas)
    # Answers are deterministic: the streamed text is exactly the non-streamed one.
    assert block.text == whole
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_streaming_text_stream_helper(anth: anthropic.Anthropic):
    with anth.messages.stream(
        model=ROUTE, max_tokens=256, messages=[{"role": "user", "content": "echo one two three four"}]
    ) as stream:
        pieces = list(stream.text_stream)
        final = stream.get_final_message()
    assert "".join(pieces) == "one two three four" == final.content[0].text


def test_multi_turn_with_system_prompt_unicode_echo(anth: anthropic.Anthropic, sim: Sim):
    phrase = "héllo ไทย 🚀 —  “quotes”\n\\ back\\slash \"dq\"\t你好 "
    system = "You are terse. Système: ünïcödé ✓"
    messages = [
        {"role": "user", "content": "Hi there."},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": f"echo {phrase}"},
    ]
    message = anth.messages.create(model=ROUTE, max_tokens=256, system=system, messages=messages)
    assert message.content[0].text == phrase

    (seen,) = sim.generation_requests()
    assert seen["body"]["system"] == system
    assert seen["body"]["messages"] == messages

    with anth.messages.stream(model=ROUTE, max_tokens=256, system=system, messages=messages) as stream:
        assert stream.get_final_text() == phrase


def test_tool_call_round_trip(anth: anthropic.Anthropic, sim: Sim):
    messages: list[dict] = [{"role": "user", "content": "Please call get_weather for Paris."}]
    first = anth.messages.create(model=ROUTE, max_tokens=256, messages=messages, tools=[WEATHER_TOOL])
    assert first.stop_reason == "tool_use"
    (use,) = [b for b in first.content if b.type == "tool_use"]
    assert use.name == "get_weather"
    assert use.id
    assert_matches_schema(use.input, WEATHER_SCHEMA)

    messages += [
        {"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "18°C and sunny"}]},
    ]
    second = anth.messages.create(model=ROUTE, max_tokens=256, messages=messages, tools=[WEATHER_TOOL])
    assert second.stop_reason == "end_turn"
    assert second.content[0].type == "text"
    assert second.content[0].text == "Tool result received: 18°C and sunny"

    seen = sim.generation_requests()[-1]["body"]["messages"]
    assert seen[1]["content"][0]["id"] == use.id
    assert seen[2]["content"][0]["tool_use_id"] == use.id


def test_tool_call_forced_by_tool_choice(anth: anthropic.Anthropic):
    message = anth.messages.create(
        model=ROUTE,
        max_tokens=256,
        messages=[{"role": "user", "content": "What should I wear today?"}],
        tools=[WEATHER_TOOL],
        tool_choice={"type": "tool", "name": "get_weather"},
    )
    (use,) = message.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert_matches_schema(use.input, WEATHER_SCHEMA)


def test_streaming_tool_call(anth: anthropic.Anthropic):
    messages = [{"role": "user", "content": "Use get_weather for Lisbon."}]
    whole = anth.messages.create(model=ROUTE, max_tokens=256, messages=messages, tools=[WEATHER_TOOL])

    partial: list[str] = []
    start_id = None
    with anth.messages.stream(model=ROUTE, max_tokens=256, messages=messages, tools=[WEATHER_TOOL]) as stream:
        for event in stream:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                start_id = event.content_block.id
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                partial.append(event.delta.partial_json)
        final = stream.get_final_message()
    assert len(partial) > 1, "arguments arrive in several deltas"
    args = json.loads("".join(partial))
    assert_matches_schema(args, WEATHER_SCHEMA)
    assert final.stop_reason == "tool_use"
    (use,) = final.content
    assert use.type == "tool_use" and use.name == "get_weather"
    assert use.id == start_id and use.id.startswith("toolu_")
    assert use.input == args
    assert args == whole.content[0].input


def test_provider_key_model_rewrite_and_unknown_fields_pass_through(anth: anthropic.Anthropic, sim: Sim):
    future = {"x": 1, "nested": {"list": [1, "two", None, True], "ü": "ß"}}
    anth.messages.create(
        model=ROUTE,
        max_tokens=77,
        service_tier="standard_only",
        stop_sequences=["never-appears"],
        metadata={"user_id": "e2e-user"},
        messages=[{"role": "user", "content": "hello"}],
        extra_body={"some_future_field": future},
        extra_headers={"anthropic-beta": "e2e-beta-2099-01-01"},
    )
    (seen,) = sim.generation_requests()
    assert seen["api"] == "anthropic"
    assert seen["path"] == "/v1/messages"
    assert seen["model"] == UPSTREAM_MODEL
    body = seen["body"]
    assert body["model"] == UPSTREAM_MODEL, "the gateway rewrites model to the target's upstream model"
    assert body["some_future_field"] == future, "unknown fields reach the upstream unchanged"
    assert body["max_tokens"] == 77
    assert body["service_tier"] == "standard_only"
    assert body["stop_sequences"] == ["never-appears"]
    assert body["metadata"] == {"user_id": "e2e-user"}
    headers = seen["headers"]
    assert headers.get("x-api-key") == ANTHROPIC_KEY, "the provider key is sent upstream"
    assert headers.get("anthropic-version"), "the upstream gets an API version"
    assert headers.get("anthropic-beta") == "e2e-beta-2099-01-01"
    assert_no_secret_in_headers(headers, GATEWAY_KEY)


def test_models_list(anth: anthropic.Anthropic, gateway: Gateway):
    models = list(anth.models.list())
    ids = [m.id for m in models]
    assert sorted(ids) == sorted(gateway.routes)
    assert all(m.type == "model" for m in models)


def test_sdk_anthropic_version_is_forwarded_once(anth: anthropic.Anthropic, sim: Sim):
    """The upstream gets exactly the version the SDK sent, once: not the gateway's default beside it
    ("2023-06-01, <sdk version>" is not a version the API accepts)."""
    raw = anth.messages.with_raw_response.create(model=ROUTE, max_tokens=16, messages=[{"role": "user", "content": "hi"}])
    sdk_version = raw.http_request.headers["anthropic-version"]
    (seen,) = sim.generation_requests()
    assert seen["headers"].get("anthropic-version") == sdk_version


def test_client_anthropic_version_is_forwarded_once(raw, sim: Sim):
    """A client that pins another API version gets that version upstream, not the gateway's default
    added beside it."""
    for version in ("2023-06-01", "2023-01-01"):
        sim.reset()
        r = raw.post(
            "/v1/messages",
            json={"model": ROUTE, "max_tokens": 16, "messages": [{"role": "user", "content": "echo v"}]},
            headers={"x-api-key": GATEWAY_KEY, "anthropic-version": version},
        )
        assert r.status_code == 200, r.text
        (seen,) = sim.generation_requests()
        assert seen["headers"].get("anthropic-version") == version


def test_default_anthropic_version_when_client_sends_none(raw, sim: Sim):
    r = raw.post(
        "/v1/messages",
        json={"model": ROUTE, "max_tokens": 16, "messages": [{"role": "user", "content": "echo v"}]},
        headers={"x-api-key": GATEWAY_KEY},
    )
    assert r.status_code == 200, r.text
    (seen,) = sim.generation_requests()
    assert seen["headers"].get("anthropic-version") == "2023-06-01", "the real API requires the header"
