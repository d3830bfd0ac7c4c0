"""Streams that break mid-answer, end to end: the official SDKs (`anthropic` for Messages, `openai` for
Chat Completions and Responses) and a raw `:streamGenerateContent?alt=sse` call (its chunks read with
`google-genai`'s types) against a real gateway whose routes' primaries are made to break.

This module runs its own simulators and gateway:

- `primary` and `fallback` share a seed, so they give the same answer to the same logical
  conversation, and `fallback` continues an answer it is given as an Anthropic prefill or followed by
  a user turn asking it to continue. A stream cut on `primary` after N pieces and continued on
  `fallback` must reach the client as exactly the answer `fallback` gives to the unbroken request.
- `other` has another seed: its answers differ from the first word, so a test can tell its text from
  `fallback`'s (complete-or-nothing, a primary silent after its opening events).

What is checked (README, "What happens on failure"):

- every client API, on a same-format pair, a translated pair (the fallback in another API) and a
  cross pair (primary and fallback both in other APIs), with the primary's stream broken after N
  pieces by a clean end without the terminal event (`eof`), a cut connection (`reset`), the provider's
  own error event (`error_event`) and silence past the route's idle timeout (`stall`): the SDK sees one
  answer under one id, equal to the fallback's whole answer, with a normal terminal event and usage
  counting both parts; the fallback was asked for the rest (the delivered text as a prefill, or with
  an instruction), and `ballast_stream_continuations_total` counted it;
- a cut inside a tool call's arguments: exactly one whole call, with valid JSON arguments;
- a fallback that refuses the prefill: asked again with an instruction, the refusal never shown;
- no eligible fallback, and `stream_recovery = "off"`: the SDK raises (or the stream carries an error
  event), no complete-looking answer;
- `stream_recovery = "complete"`: the fallback's whole answer and none of the primary's text;
- a primary that opens its stream and falls silent: the route falls over before the first token;
- edges: a cut before any content (a transparent fallover), a cut after the last piece, structured
  output cut inside its first JSON tokens, a continuation that breaks too (continued again on a third
  target, or an error when none is left), and eight broken streams at once.

Each test is bounded by the client timeout and the routes' short timeouts (idle 1 s, first token 1 s
where it matters); everything stays on 127.0.0.1.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import anthropic
import httpx2 as httpx
import openai
import pytest
from google.genai import types

from conftest import CLIENT_TIMEOUT, GATEWAY_KEY, Proc, Sim, _start_sim, assert_matches_schema

SIM_KEY = "sim-continuation-key"
SEED = "7"
OTHER_SEED = "8"
# Pieces the primary sends before its stream breaks.
CUT_AFTER = 6
# A tool call's arguments come in four fragments: the cut lands after the second.
TOOL_CUT_AFTER = 2
IDLE_TIMEOUT = "1s"
FIRST_TOKEN_TIMEOUT = "1s"

PROMPT = "Tell me how a gateway keeps a stream alive."
TOOL_PROMPT = "What is the weather in Paris? Use get_weather."
TOOL_SCHEMA = {
    "type": "object",
    "properties": {
        "city": {"type": "string"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer"},
    },
    "required": ["city", "unit", "days"],
}

MODES = ["eof", "reset", "error_event", "stall"]
APIS = ["messages", "chat", "responses", "gemini"]

# Client API -> pair -> targets. "same": primary and fallback speak the client's API; "translated": the
# primary does, the fallback does not; "cross": neither does (the client's stream is translated from the
# start, and the continuation from yet another API). Primaries are on `primary` (`*-p`), fallbacks on
# `fallback` (`*-f`).
PAIRS: dict[str, dict[str, list[str]]] = {
    "messages": {
        "same": ["anth-p/claude-opus-4-1", "anth-f/claude-haiku-4-5"],
        "translated": ["anth-p/claude-opus-4-1", "oai-f/gpt-4.1"],
        "cross": ["gem-p/gemini-2.5-pro", "oai-f/gpt-4.1"],
    },
    "chat": {
        "same": ["oai-p/gpt-4.1", "oai-f/gpt-4.1-mini"],
        "translated": ["oai-p/gpt-4.1", "anth-f/claude-haiku-4-5"],
        "cross": ["anth-p/claude-opus-4-1", "gem-f/gemini-2.5-flash"],
    },
    "responses": {
        "same": ["oair-p/gpt-4.1", "oair-f/gpt-4.1-mini"],
        "translated": ["oair-p/gpt-4.1", "anth-f/claude-haiku-4-5"],
        "cross": ["gem-p/gemini-2.5-pro", "anth-f/claude-haiku-4-5"],
    },
    "gemini": {
        "same": ["gem-p/gemini-2.5-pro", "gem-f/gemini-2.5-flash"],
        "translated": ["gem-p/gemini-2.5-pro", "oai-f/gpt-4.1"],
        "cross": ["oai-p/gpt-4.1", "anth-f/claude-haiku-4-5"],
    },
}
# Which API each provider speaks (to read the continuation request the fallback received).
PROVIDER_API = {"anth": "messages", "oai": "chat", "oair": "responses", "gem": "gemini"}


# Three targets, the second and third on `fallback` in two different APIs: the second target's
# continuation can be broken too (a fault scoped to its API) and continued again on the third.
DOUBLE: dict[str, tuple[list[str], str]] = {
    "messages": (["anth-p/claude-opus-4-1", "oai-f/gpt-4.1", "anth-f/claude-haiku-4-5"], "openai"),
    "chat": (["oai-p/gpt-4.1", "anth-f/claude-haiku-4-5", "gem-f/gemini-2.5-flash"], "anthropic"),
    "responses": (["oair-p/gpt-4.1", "gem-f/gemini-2.5-flash", "oair-f/gpt-4.1-mini"], "gemini"),
    "gemini": (["gem-p/gemini-2.5-pro", "anth-f/claude-haiku-4-5", "oai-f/gpt-4.1"], "anthropic"),
}
# Pieces the second target sends before its continuation breaks.
SECOND_CUT_AFTER = 4


def route_name(api: str, pair: str) -> str:
    return f"cont-{api}-{pair}"


def double_route(api: str) -> str:
    return f"cont-{api}-double"


def off_route(api: str) -> str:
    return f"cont-{api}-off"


def solo_route(api: str) -> str:
    return f"cont-{api}-solo"


def complete_route(api: str) -> str:
    return f"cont-{api}-complete"


def silent_route(api: str) -> str:
    return f"cont-{api}-silent"


# --------------------------------------------------------------------------------------------------
# This module's simulators and gateway


@dataclass
class Sims:
    primary: Sim
    fallback: Sim
    other: Sim

    def all(self) -> tuple[Sim, Sim, Sim]:
        return (self.primary, self.fallback, self.other)


@pytest.fixture(scope="module")
def sims(ballast_bin: str, log_dir: Path):
    procs = [
        _start_sim("sim-cont-primary", ballast_bin, log_dir, "--seed", SEED),
        _start_sim("sim-cont-fallback", ballast_bin, log_dir, "--seed", SEED),
        _start_sim("sim-cont-other", ballast_bin, log_dir, "--seed", OTHER_SEED),
    ]
    s = Sims(*(Sim(p) for p in procs))
    yield s
    for sim in s.all():
        sim.http.close()
    for p in procs:
        p.stop()


@pytest.fixture(autouse=True)
def _clean(sims: Sims):
    for s in sims.all():
        s.clear_faults()
        s.reset()
    yield
    for s in sims.all():
        s.clear_faults()


def continuation_config(sims: Sims, store: Path) -> str:
    def provider(name: str, kind: str, base: str, api: str | None = None) -> str:
        extra = f'api = "{api}"\n' if api else ""
        return f'[providers.{name}]\nkind = "{kind}"\nbase_url = "{base}"\napi_key = "{SIM_KEY}"\n{extra}'

    def route(name: str, targets: list[str], **policy: str) -> str:
        out = f"[routes.{json.dumps(name)}]\ntargets = {json.dumps(targets)}\n"
        out += f"[routes.{json.dumps(name)}.policy]\n"
        out += "".join(f"{k} = {json.dumps(v)}\n" for k, v in policy.items())
        return out

    parts = [
        "[policy]",
        'deadline = "15s"',
        "retries = 0",
        "retry_budget_min_per_second = 10000.0",
        # Every test breaks its primary on purpose: keep breakers and ejection out of the way.
        "[policy.breaker]",
        "consecutive_failures = 1000000",
        "min_requests = 1000000",
        "[signal]",
        "eject = false",
        "[probes]",
        'interval = "0s"',
        "[incidents]",
        f"store = {json.dumps(str(store))}",
        "",
        "[auth]",
        f'gateway_keys = ["{GATEWAY_KEY}"]',
        "",
    ]
    for suffix, sim in (("p", sims.primary), ("f", sims.fallback), ("o", sims.other)):
        parts.append(provider(f"anth-{suffix}", "anthropic", sim.base_url))
        parts.append(provider(f"oai-{suffix}", "openai", sim.base_url + "/v1"))
        parts.append(provider(f"oair-{suffix}", "openai", sim.base_url + "/v1", api="responses"))
        parts.append(provider(f"gem-{suffix}", "gemini", sim.base_url))
    for api, pairs in PAIRS.items():
        for pair, targets in pairs.items():
            # Stalls are noticed after the idle timeout: short, so the stall tests stay quick.
            parts.append(route(route_name(api, pair), targets, idle_timeout=IDLE_TIMEOUT))
        primary = pairs["same"][0]
        parts.append(route(solo_route(api), [primary], idle_timeout=IDLE_TIMEOUT))
        parts.append(route(double_route(api), DOUBLE[api][0], idle_timeout=IDLE_TIMEOUT))
        parts.append(route(off_route(api), pairs["same"], idle_timeout=IDLE_TIMEOUT, stream_recovery="off"))
        # Complete-or-nothing and the silent primary: the primary on `other` (another seed), so its
        # text can be told from the fallback's.
        on_other = [pairs["same"][0].replace("-p/", "-o/"), pairs["same"][1]]
        parts.append(route(complete_route(api), on_other, idle_timeout=IDLE_TIMEOUT, stream_recovery="complete"))
        parts.append(route(silent_route(api), on_other, first_token_timeout=FIRST_TOKEN_TIMEOUT))
    return "\n".join(parts)


@dataclass
class ContGateway:
    base_url: str
    proc: Proc


@pytest.fixture(scope="module")
def cgw(ballast_bin: str, log_dir: Path, sims: Sims):
    config = log_dir / "ballast-continuation.toml"
    config.write_text(continuation_config(sims, log_dir / "incidents-continuation.sqlite"))
    proc = Proc(
        "gateway-continuation",
        [ballast_bin, "serve", "--config", str(config), "--listen", "127.0.0.1:0"],
        "ballast listening on",
        log_dir,
    )
    yield ContGateway(base_url=proc.base_url, proc=proc)
    proc.stop()


@pytest.fixture
def clients(cgw: ContGateway):
    anth = anthropic.Anthropic(base_url=cgw.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    oai = openai.OpenAI(base_url=cgw.base_url + "/v1", api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
    http = httpx.Client(base_url=cgw.base_url, timeout=CLIENT_TIMEOUT)
    yield Clients(anth, oai, http)
    anth.close()
    oai.close()
    http.close()


@dataclass
class Clients:
    anth: anthropic.Anthropic
    oai: openai.OpenAI
    http: httpx.Client


# --------------------------------------------------------------------------------------------------
# Requests in each client API, and what the client made of the answer


@dataclass
class Answer:
    """What one streamed answer looked like to its client."""

    text: str = ""
    # The terminal stop reason (Messages stop_reason, Chat finish_reason, Responses status, Gemini
    # finishReason); None when the stream had no terminal event.
    finish: str | None = None
    # Message / chunk / response ids carried by the stream (a whole answer has exactly one).
    ids: set[str] = field(default_factory=set)
    # (name, arguments as JSON text, call id) of every tool call the client received.
    tool_calls: list[tuple[str, str, str]] = field(default_factory=list)
    # The SDK's exception or the error event the stream carried.
    error: str | None = None
    # Structural problems seen in the event sequence (duplicate starts, numbering gaps …).
    problems: list[str] = field(default_factory=list)
    # The output tokens the answer's final usage reports.
    output_tokens: int | None = None


def tools_for(api: str) -> Any:
    if api == "messages":
        return [{"name": "get_weather", "description": "Current weather", "input_schema": TOOL_SCHEMA}]
    if api == "chat":
        return [{"type": "function", "function": {"name": "get_weather", "description": "Current weather", "parameters": TOOL_SCHEMA}}]
    if api == "responses":
        return [{"type": "function", "name": "get_weather", "description": "Current weather", "parameters": TOOL_SCHEMA}]
    return [{"functionDeclarations": [{"name": "get_weather", "description": "Current weather", "parametersJsonSchema": TOOL_SCHEMA}]}]


def stream_messages(c: Clients, route: str, prompt: str, tools: bool, extra: dict[str, Any] | None = None) -> Answer:
    a = Answer()
    kwargs: dict[str, Any] = {"model": route, "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}]}
    if tools:
        kwargs["tools"] = tools_for("messages")
    if extra:
        kwargs["extra_body"] = extra
    events: list[Any] = []
    try:
        with c.anth.messages.stream(**kwargs) as s:
            for ev in s:
                events.append(ev)
            final = s.get_final_message()
    except anthropic.APIError as e:
        a.error = f"{type(e).__name__}: {e}"
        a.text = "".join(ev.delta.text for ev in events if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
        return a
    types_seen = [ev.type for ev in events]
    starts = [ev for ev in events if ev.type == "message_start"]
    if len(starts) != 1:
        a.problems.append(f"{len(starts)} message_start events")
    a.ids = {ev.message.id for ev in starts} | {final.id}
    if types_seen.count("message_stop") != 1 or types_seen[-1] != "message_stop":
        a.problems.append(f"message_stop not once at the end: {types_seen[-3:]}")
    if types_seen.count("message_delta") != 1:
        a.problems.append(f"{types_seen.count('message_delta')} message_delta events")
    block_starts = [ev.index for ev in events if ev.type == "content_block_start"]
    block_stops = [ev.index for ev in events if ev.type == "content_block_stop"]
    if block_starts != list(range(len(final.content))) or block_stops != block_starts:
        a.problems.append(f"content blocks started {block_starts}, stopped {block_stops}, final has {len(final.content)}")
    a.finish = final.stop_reason
    a.output_tokens = final.usage.output_tokens
    a.text = "".join(b.text for b in final.content if b.type == "text")
    delta_text = "".join(ev.delta.text for ev in events if ev.type == "content_block_delta" and ev.delta.type == "text_delta")
    if delta_text != a.text:
        a.problems.append(f"deltas say {delta_text!r}, the final message {a.text!r}")
    for b in final.content:
        if b.type == "tool_use":
            a.tool_calls.append((b.name, json.dumps(b.input), b.id))
    # The raw argument fragments must make the same whole JSON the SDK parsed.
    for i, b in enumerate(final.content):
        if b.type == "tool_use":
            raw = "".join(
                ev.delta.partial_json
                for ev in events
                if ev.type == "content_block_delta" and ev.index == i and ev.delta.type == "input_json_delta"
            )
            if json.loads(raw or "{}") != b.input:
                a.problems.append(f"argument fragments {raw!r} do not make {b.input!r}")
    return a


def stream_chat(c: Clients, route: str, prompt: str, tools: bool, extra: dict[str, Any] | None = None) -> Answer:
    a = Answer()
    kwargs: dict[str, Any] = {
        "model": route,
        "messages": [{"role": "user", "content": prompt}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        kwargs["tools"] = tools_for("chat")
    if extra:
        kwargs["extra_body"] = extra
    chunks: list[Any] = []
    calls: dict[int, dict[str, str]] = {}
    try:
        for chunk in c.oai.chat.completions.create(**kwargs):
            chunks.append(chunk)
    except openai.APIError as e:
        a.error = f"{type(e).__name__}: {e}"
    a.ids = {ch.id for ch in chunks}
    finishes = []
    for ch in chunks:
        for choice in ch.choices:
            if choice.index != 0:
                a.problems.append(f"choice index {choice.index}")
            a.text += choice.delta.content or ""
            for tc in choice.delta.tool_calls or []:
                entry = calls.setdefault(tc.index, {"id": "", "name": "", "arguments": "", "ids_seen": ""})
                if tc.id:
                    entry["ids_seen"] += "+"
                    entry["id"] = tc.id
                if tc.function and tc.function.name:
                    entry["name"] += tc.function.name
                if tc.function and tc.function.arguments:
                    entry["arguments"] += tc.function.arguments
            if choice.finish_reason:
                finishes.append(choice.finish_reason)
    if len(finishes) > 1:
        a.problems.append(f"finish reasons {finishes}")
    a.finish = finishes[-1] if finishes else None
    for index in sorted(calls):
        e = calls[index]
        if e["ids_seen"] != "+":
            a.problems.append(f"tool call {index} announced {len(e['ids_seen'])} times")
        a.tool_calls.append((e["name"], e["arguments"], e["id"]))
    if a.error is None:
        usage = [ch.usage for ch in chunks if ch.usage is not None]
        if len(usage) != 1 or not usage[0].completion_tokens:
            a.problems.append(f"usage chunks: {usage}")
        else:
            a.output_tokens = usage[0].completion_tokens
    return a


def stream_responses(c: Clients, route: str, prompt: str, tools: bool, extra: dict[str, Any] | None = None) -> Answer:
    a = Answer()
    kwargs: dict[str, Any] = {"model": route, "input": prompt, "stream": True}
    if tools:
        kwargs["tools"] = tools_for("responses")
    if extra:
        kwargs["extra_body"] = extra
    events: list[Any] = []
    try:
        for ev in c.oai.responses.create(**kwargs):
            events.append(ev)
    except openai.APIError as e:
        a.error = f"{type(e).__name__}: {e}"
    kinds = [ev.type for ev in events]
    if any(k in ("error", "response.failed") for k in kinds):
        a.error = a.error or f"error event in {kinds[-3:]}"
    seqs = [ev.sequence_number for ev in events]
    if seqs != list(range(len(seqs))):
        a.problems.append(f"sequence numbers {seqs}")
    a.ids = {ev.response.id for ev in events if hasattr(ev, "response")}
    deltas = "".join(ev.delta for ev in events if ev.type == "response.output_text.delta")
    terminals = [ev for ev in events if ev.type in ("response.completed", "response.incomplete", "response.failed")]
    if not terminals:
        a.text = deltas
        return a
    if len(terminals) != 1 or events[-1] is not terminals[0]:
        a.problems.append(f"terminal events {[t.type for t in terminals]}, last {kinds[-1]}")
    if kinds[0] != "response.created":
        a.problems.append(f"first event {kinds[0]}")
    final = terminals[-1].response
    a.finish = final.status
    a.output_tokens = final.usage.output_tokens if final.usage else None
    a.text = final.output_text
    if deltas != a.text:
        a.problems.append(f"deltas say {deltas!r}, the final response {a.text!r}")
    added = [ev.item.id for ev in events if ev.type == "response.output_item.added"]
    done = [ev.item.id for ev in events if ev.type == "response.output_item.done"]
    final_ids = [item.id for item in final.output]
    if not (added == done == final_ids):
        a.problems.append(f"items added {added}, done {done}, final {final_ids}")
    delta_items = {ev.item_id for ev in events if ev.type in ("response.output_text.delta", "response.function_call_arguments.delta")}
    if not delta_items <= set(final_ids):
        a.problems.append(f"deltas for items {delta_items} not in {final_ids}")
    for item in final.output:
        if item.type == "function_call":
            a.tool_calls.append((item.name, item.arguments, item.call_id))
    messages = [item for item in final.output if item.type == "message"]
    if not tools and len(messages) != 1:
        a.problems.append(f"{len(messages)} message items")
    return a


def sse_events(body: str) -> list[tuple[str, str]]:
    out = []
    for block in body.replace("\r\n", "\n").split("\n\n"):
        name, data = "", []
        for line in block.split("\n"):
            if line.startswith("event:"):
                name = line[6:].strip()
            elif line.startswith("data:"):
                data.append(line[5:].lstrip())
        if data:
            out.append((name, "\n".join(data)))
    return out


def stream_gemini(c: Clients, route: str, prompt: str, tools: bool, extra: dict[str, Any] | None = None) -> Answer:
    """The raw `:streamGenerateContent?alt=sse` call; every chunk is read with the SDK's own type."""
    a = Answer()
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if tools:
        body["tools"] = tools_for("gemini")
    body.update(extra or {})
    try:
        with c.http.stream(
            "POST",
            f"/v1beta/models/{route}:streamGenerateContent",
            params={"alt": "sse"},
            headers={"x-goog-api-key": GATEWAY_KEY},
            json=body,
        ) as r:
            if r.status_code != 200:
                a.error = f"HTTP {r.status_code}: {r.read().decode()}"
                return a
            raw = r.read().decode()
    except httpx.TransportError as e:
        a.error = f"{type(e).__name__}: {e}"
        return a
    finishes = []
    for _, data in sse_events(raw):
        v = json.loads(data)
        if "error" in v:
            a.error = f"error chunk {v['error']}"
            continue
        chunk = types.GenerateContentResponse.model_validate(v)
        if chunk.usage_metadata and chunk.usage_metadata.candidates_token_count is not None:
            a.output_tokens = chunk.usage_metadata.candidates_token_count
        if chunk.response_id:
            a.ids.add(chunk.response_id)
        else:
            a.problems.append("a chunk without responseId")
        for cand in chunk.candidates or []:
            for part in (cand.content.parts if cand.content else None) or []:
                a.text += part.text or ""
                if part.function_call:
                    fc = part.function_call
                    a.tool_calls.append((fc.name or "", json.dumps(fc.args or {}), fc.id or ""))
            if cand.finish_reason:
                finishes.append(str(cand.finish_reason.value if hasattr(cand.finish_reason, "value") else cand.finish_reason))
    if len(finishes) > 1:
        a.problems.append(f"finish reasons {finishes}")
    a.finish = finishes[-1] if finishes else None
    return a


STREAM: dict[str, Callable[..., Answer]] = {
    "messages": stream_messages,
    "chat": stream_chat,
    "responses": stream_responses,
    "gemini": stream_gemini,
}
STREAM_EXTRA: dict[str, Callable[[Clients, str, str, dict[str, Any]], Answer]] = {
    api: (lambda f: lambda c, route, prompt, extra: f(c, route, prompt, False, extra))(f) for api, f in STREAM.items()
}
# The normal terminal of a text answer and of a tool call, per client API.
TEXT_END = {"messages": "end_turn", "chat": "stop", "responses": "completed", "gemini": "STOP"}
TOOL_END = {"messages": "tool_use", "chat": "tool_calls", "responses": "completed", "gemini": "STOP"}


# --------------------------------------------------------------------------------------------------
# The reference answer: the same request, unbroken, sent to the fallback simulator directly


@dataclass
class Reference:
    text: str
    # (name, arguments as parsed JSON)
    tool_calls: list[tuple[str, Any]]


def reference(sim: Sim, api: str, prompt: str, tools: bool, extra: dict[str, Any] | None = None) -> Reference:
    """What `sim` answers to the request, whole (non-streamed), in the client's own API."""
    if api == "messages":
        with anthropic.Anthropic(base_url=sim.base_url, api_key=SIM_KEY, timeout=CLIENT_TIMEOUT, max_retries=0) as cl:
            kw: dict[str, Any] = {"model": "claude-haiku-4-5", "max_tokens": 1024, "messages": [{"role": "user", "content": prompt}]}
            if tools:
                kw["tools"] = tools_for(api)
            if extra:
                kw["extra_body"] = extra
            m = cl.messages.create(**kw)
        return Reference(
            "".join(b.text for b in m.content if b.type == "text"),
            [(b.name, b.input) for b in m.content if b.type == "tool_use"],
        )
    if api in ("chat", "responses"):
        with openai.OpenAI(base_url=sim.base_url + "/v1", api_key=SIM_KEY, timeout=CLIENT_TIMEOUT, max_retries=0) as cl:
            if api == "chat":
                kw = {"model": "gpt-4.1-mini", "messages": [{"role": "user", "content": prompt}]}
                if tools:
                    kw["tools"] = tools_for(api)
                if extra:
                    kw["extra_body"] = extra
                msg = cl.chat.completions.create(**kw).choices[0].message
                return Reference(
                    msg.content or "",
                    [(tc.function.name, json.loads(tc.function.arguments)) for tc in msg.tool_calls or []],
                )
            kw = {"model": "gpt-4.1-mini", "input": prompt}
            if tools:
                kw["tools"] = tools_for(api)
            if extra:
                kw["extra_body"] = extra
            resp = cl.responses.create(**kw)
            return Reference(
                resp.output_text,
                [(i.name, json.loads(i.arguments)) for i in resp.output if i.type == "function_call"],
            )
    body: dict[str, Any] = {"contents": [{"role": "user", "parts": [{"text": prompt}]}]}
    if tools:
        body["tools"] = tools_for(api)
    body.update(extra or {})
    r = sim.http.post("/v1beta/models/gemini-2.5-flash:generateContent", json=body, headers={"x-goog-api-key": SIM_KEY})
    r.raise_for_status()
    resp = types.GenerateContentResponse.model_validate(r.json())
    parts = resp.candidates[0].content.parts or []
    return Reference(
        "".join(p.text or "" for p in parts),
        [(p.function_call.name, p.function_call.args) for p in parts if p.function_call],
    )


def json_reference(sim: Sim, api: str, prompt: str, extra: dict[str, Any]) -> str:
    return reference(sim, api, prompt, tools=False, extra=extra).text


def text_reference(sims: Sims, api: str, prompt: str = PROMPT) -> str:
    ref = reference(sims.fallback, api, prompt, tools=False)
    sims.fallback.reset()
    words = ref.text.split()
    # The cut must land well inside the answer, or the test would prove nothing.
    assert len(words) > CUT_AFTER + 4, f"the reference answer is too short for a cut after {CUT_AFTER}: {ref.text!r}"
    return ref.text


# --------------------------------------------------------------------------------------------------
# What the simulators saw


def generation_requests(sim: Sim) -> list[dict[str, Any]]:
    out = []
    for r in sim.requests():
        path = r["path"].split("?")[0]
        if r["method"] == "POST" and (
            path in ("/v1/messages", "/v1/chat/completions", "/v1/responses")
            or path.endswith((":generateContent", ":streamGenerateContent"))
        ):
            out.append(r)
    return out


def _text_of(content: Any) -> str:
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content if isinstance(p, dict))


def conversation(req: dict[str, Any]) -> list[tuple[str, str]]:
    """(role, text) of each turn of a recorded request, system turns left out, roles as user/assistant."""
    body = req["body"]
    path = req["path"].split("?")[0]
    turns: list[tuple[str, str]] = []
    if path in ("/v1/messages", "/v1/chat/completions"):
        for m in body["messages"]:
            if m["role"] in ("system", "developer"):
                continue
            turns.append((m["role"], _text_of(m.get("content"))))
    elif path == "/v1/responses":
        items = body["input"]
        if isinstance(items, str):
            return [("user", items)]
        for it in items:
            if it.get("type", "message") != "message" or it.get("role") in ("system", "developer"):
                continue
            turns.append((it["role"], _text_of(it.get("content"))))
    else:
        for c in body["contents"]:
            role = "assistant" if c.get("role") == "model" else "user"
            turns.append((role, "".join(p.get("text", "") for p in c.get("parts", []))))
    return turns


def continuation_of(req: dict[str, Any]) -> tuple[str | None, str]:
    """How a recorded request asks for the rest of an answer: ("prefill", T), ("instruction", T) or
    (None, "") for a request that is not a continuation."""
    turns = conversation(req)
    if turns and turns[-1][0] == "assistant":
        return "prefill", turns[-1][1]
    if len(turns) >= 2 and turns[-1][0] == "user" and "continue" in turns[-1][1].lower() and turns[-2][0] == "assistant":
        return "instruction", turns[-2][1]
    return None, ""


def assert_whole_answer(a: Answer, api: str, expected_text: str) -> None:
    assert a.error is None, f"the client got an error: {a.error}"
    assert not a.problems, f"malformed stream: {a.problems}"
    assert len(a.ids) == 1, f"one answer id expected, the client saw {a.ids}"
    assert a.text == expected_text, f"the client's text differs from the whole answer:\n got  {a.text!r}\n want {expected_text!r}"
    assert a.finish == TEXT_END[api], f"terminal {a.finish!r}, expected {TEXT_END[api]!r}"
    assert a.tool_calls == []


def metric(cgw: ContGateway, name: str, labels: str) -> float:
    r = httpx.get(cgw.base_url + "/metrics", headers={"authorization": f"Bearer {GATEWAY_KEY}"}, timeout=5.0)
    r.raise_for_status()
    prefix = f"{name}{{{labels}}} "
    for line in r.text.splitlines():
        if line.startswith(prefix):
            return float(line[len(prefix) :])
    return 0.0


# --------------------------------------------------------------------------------------------------
# A stream broken after N pieces is continued on the fallback, in every client API


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("pair", ["same", "translated", "cross"])
@pytest.mark.parametrize("api", APIS)
def test_broken_stream_is_continued_as_one_whole_answer(clients: Clients, cgw: ContGateway, sims: Sims, api: str, pair: str, mode: str):
    route = route_name(api, pair)
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": CUT_AFTER}})
    before = metric(cgw, "ballast_stream_continuations_total", f'route="{route}",result="continued"')

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    # The primary did break, after N pieces …
    [seen_p] = generation_requests(sims.primary)
    assert sims.primary.stats()["by_outcome"]["truncated"] == 1
    assert not continuation_of(seen_p)[0]
    # … and the fallback was asked for the rest, given exactly what the client already had.
    [seen_f] = generation_requests(sims.fallback)
    style, delivered = continuation_of(seen_f)
    fallback_api = PROVIDER_API[PAIRS[api][pair][1].split("-")[0]]
    assert style == ("prefill" if fallback_api == "messages" else "instruction"), conversation(seen_f)
    assert delivered.split() == expected.split()[:CUT_AFTER], f"delivered {delivered!r}"
    # The final usage counts both parts (the first one estimated when its provider never said).
    words = len(expected.split())
    assert a.output_tokens is not None and words - CUT_AFTER < a.output_tokens <= words + 2 * CUT_AFTER, (
        f"output tokens {a.output_tokens} for an answer of {words} tokens cut after {CUT_AFTER}"
    )
    assert metric(cgw, "ballast_stream_continuations_total", f'route="{route}",result="continued"') == before + 1


# --------------------------------------------------------------------------------------------------
# Tool calls are never half-delivered


# Every pair whose primary streams a call's arguments in fragments (Gemini sends a call whole).
TOOL_PAIRS = [(api, pair) for api in ("messages", "chat", "responses") for pair in ("same", "translated")] + [
    ("chat", "cross"),  # an Anthropic primary for a Chat client
    ("gemini", "cross"),  # a Chat Completions primary for a Gemini client
]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api,pair", TOOL_PAIRS)
def test_cut_inside_a_tool_call_yields_one_whole_call(clients: Clients, sims: Sims, api: str, pair: str, mode: str):
    route = route_name(api, pair)
    ref = reference(sims.fallback, api, TOOL_PROMPT, tools=True)
    sims.fallback.reset()
    assert [name for name, _ in ref.tool_calls] == ["get_weather"] and ref.text == "", ref
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": TOOL_CUT_AFTER}})

    a = STREAM[api](clients, route, TOOL_PROMPT, True)

    assert a.error is None, f"the client got an error: {a.error}"
    assert not a.problems, f"malformed stream: {a.problems}"
    assert len(a.ids) == 1, a.ids
    assert a.text == ""
    assert a.finish == TOOL_END[api]
    assert len(a.tool_calls) == 1, f"exactly one tool call expected: {a.tool_calls}"
    name, arguments, call_id = a.tool_calls[0]
    assert name == "get_weather"
    assert call_id or api == "gemini"
    args = json.loads(arguments)
    assert_matches_schema(args, TOOL_SCHEMA)
    assert args == ref.tool_calls[0][1]
    # The primary was cut inside the arguments; the fallback made the call again, whole.
    assert sims.primary.stats()["by_outcome"]["truncated"] == 1
    [seen_f] = generation_requests(sims.fallback)
    style, delivered = continuation_of(seen_f)
    assert delivered == "", f"no text was delivered before the call, yet the fallback got {style} {delivered!r}"


# --------------------------------------------------------------------------------------------------
# A fallback that refuses the prefill


@pytest.mark.parametrize("api,pair", [("messages", "same"), ("chat", "translated"), ("responses", "translated")])
def test_a_refused_prefill_is_asked_again_and_never_shown(clients: Clients, sims: Sims, api: str, pair: str):
    """The fallback is Anthropic (a prefill is its continuation) and refuses prefills with a 400."""
    route = route_name(api, pair)
    assert PAIRS[api][pair][1].startswith("anth-f/")
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": "eof", "after_tokens": CUT_AFTER}})
    sims.fallback.set_faults({"reject_prefill": {"api": "anthropic"}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    assert "prefill" not in a.text
    seen = generation_requests(sims.fallback)
    assert [continuation_of(r)[0] for r in seen] == ["prefill", "instruction"], [conversation(r) for r in seen]
    assert sims.fallback.stats()["by_outcome"]["invalid"] == 1
    for r in seen:
        assert continuation_of(r)[1].split() == expected.split()[:CUT_AFTER]


# --------------------------------------------------------------------------------------------------
# No eligible fallback: a clean error, never a complete-looking answer


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_without_a_fallback_the_client_gets_an_error(clients: Clients, cgw: ContGateway, sims: Sims, api: str, mode: str):
    route = solo_route(api)
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": CUT_AFTER}})
    before = metric(cgw, "ballast_stream_continuations_total", f'route="{route}",result="failed"')

    a = STREAM[api](clients, route, PROMPT, False)

    assert a.error is not None, f"a broken answer with nowhere to continue it must end in an error, the client got {a}"
    # The error names the target that broke.
    assert PAIRS[api]["same"][0] in a.error, a.error
    assert a.finish in (None, "failed"), f"a cut answer ended like a complete one: {a.finish!r}"
    # What did arrive is the start of the answer, never all of it.
    assert expected.startswith(a.text) and a.text != expected, a.text
    assert a.text.split() == expected.split()[:CUT_AFTER]
    assert len(generation_requests(sims.primary)) == 1
    assert generation_requests(sims.fallback) == []
    assert metric(cgw, "ballast_stream_continuations_total", f'route="{route}",result="failed"') == before + 1


@pytest.mark.parametrize("mode", ["eof", "error_event"])
@pytest.mark.parametrize("api", APIS)
def test_with_recovery_off_the_client_gets_an_error(clients: Clients, sims: Sims, api: str, mode: str):
    """`stream_recovery = "off"`: a fallback is there, but a stream broken after its first token ends
    with an error event and the fallback is never asked."""
    route = off_route(api)
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": CUT_AFTER}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert a.error is not None, f"a broken answer must end in an error with recovery off, the client got {a}"
    assert a.finish in (None, "failed"), a.finish
    assert a.text.split() == expected.split()[:CUT_AFTER]
    assert generation_requests(sims.fallback) == []


# --------------------------------------------------------------------------------------------------
# stream_recovery = "complete": the fallback's whole answer, none of the primary's text


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("api", APIS)
def test_complete_or_nothing_serves_only_the_fallbacks_answer(clients: Clients, sims: Sims, api: str, mode: str):
    route = complete_route(api)
    expected = text_reference(sims, api)
    primary_text = reference(sims.other, api, PROMPT, tools=False).text
    sims.other.reset()
    # The two answers differ from their first word, so any of the primary's text would show.
    assert primary_text.split()[0] != expected.split()[0]
    sims.other.set_faults({"truncate": {"mode": mode, "after_tokens": CUT_AFTER}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    delivered_by_primary = " ".join(primary_text.split()[:CUT_AFTER])
    assert delivered_by_primary not in a.text
    assert sims.other.stats()["by_outcome"]["truncated"] == 1
    # The fallback got the original request, not a continuation.
    [seen_f] = generation_requests(sims.fallback)
    assert continuation_of(seen_f) == (None, "")
    assert conversation(seen_f) == [("user", PROMPT)]


# --------------------------------------------------------------------------------------------------
# A primary that opens its stream and falls silent: over before the first token


@pytest.mark.parametrize("api", APIS)
def test_silence_after_the_opening_events_falls_over_before_the_first_token(clients: Clients, sims: Sims, api: str):
    route = silent_route(api)
    expected = text_reference(sims, api)
    sims.other.set_faults({"role_then_silence": {}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    assert sims.other.stats()["by_outcome"]["hang"] == 1
    [seen_f] = generation_requests(sims.fallback)
    assert conversation(seen_f) == [("user", PROMPT)], "nothing was delivered: the fallback gets the request as sent"


# --------------------------------------------------------------------------------------------------
# Edge cases of where the break lands and of breaks that repeat


@pytest.mark.parametrize("mode", ["eof", "error_event"])
@pytest.mark.parametrize("api", APIS)
def test_a_cut_before_any_content_falls_over_transparently(clients: Clients, sims: Sims, api: str, mode: str):
    """`after_tokens: 0`: only the opening events (nothing on Gemini) came; nothing reached the client,
    so the route falls over with the request as sent, not a continuation."""
    route = route_name(api, "translated")
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": 0}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    [seen_f] = generation_requests(sims.fallback)
    assert conversation(seen_f) == [("user", PROMPT)]


@pytest.mark.parametrize("mode", ["eof", "error_event"])
@pytest.mark.parametrize("pair", ["same", "translated"])
@pytest.mark.parametrize("api", APIS)
def test_a_cut_after_the_last_piece_is_finished_without_repeating(clients: Clients, sims: Sims, api: str, pair: str, mode: str):
    """Every piece arrived, then no terminal event (Gemini's last chunk carries its finishReason, so there
    the last piece is missing too). The gateway cannot know the text was complete and asks for the rest.
    A fallback given the text as a prefill has nothing to add: the client gets the answer exactly. A
    fallback given an instruction to continue a text it would not have said otherwise (the simulator
    continues only a strict prefix of its answer) answers the new conversation afresh, and that is
    appended: the client still gets the whole answer once, at the start, under one id, ended normally."""
    route = route_name(api, pair)
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": mode, "after_tokens": 1000}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert sims.primary.stats()["by_outcome"]["truncated"] == 1
    [seen_f] = generation_requests(sims.fallback)
    style, delivered = continuation_of(seen_f)
    if style == "prefill" or api == "gemini":
        assert_whole_answer(a, api, expected)
        return
    assert style == "instruction" and delivered == expected, (style, delivered)
    assert a.error is None and not a.problems and len(a.ids) == 1, a
    assert a.finish == TEXT_END[api]
    assert a.text.startswith(expected) and a.text.count(expected) == 1, a.text


@pytest.mark.parametrize("cut", [1, 2, 3])
@pytest.mark.parametrize("pair", ["same", "translated"])
@pytest.mark.parametrize("api", APIS)
def test_structured_output_cut_early_is_continued_into_valid_json(clients: Clients, sims: Sims, api: str, pair: str, cut: int):
    """A JSON answer (asked for in the client's own way, in a form every target here honours) cut right
    after its opening brace, its first key or its first value: the client gets the fallback's JSON
    whole, and it parses."""
    route = route_name(api, pair)
    prompt = "Describe a gateway, in JSON."
    schema = {"type": "object", "properties": {"answer": {"type": "string"}, "score": {"type": "integer"}}, "required": ["answer", "score"]}
    ask = {
        "messages": {"output_config": {"format": {"type": "json_schema", "schema": schema}}},
        "chat": {"response_format": {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}}},
        "responses": {"text": {"format": {"type": "json_schema", "name": "answer", "schema": schema}}},
        # Gemini's bare JSON mode: `{"answer": TEXT}` with the generated sentences.
        "gemini": {"generationConfig": {"responseMimeType": "application/json"}},
    }[api]
    expected = json_reference(sims.fallback, api, prompt, ask)
    sims.fallback.reset()
    json.loads(expected)
    sims.primary.set_faults({"truncate": {"mode": "eof", "after_tokens": cut}})

    a = STREAM_EXTRA[api](clients, route, prompt, ask)

    assert_whole_answer(a, api, expected)
    json.loads(a.text)
    [seen_f] = generation_requests(sims.fallback)
    assert continuation_of(seen_f)[0] is not None


@pytest.mark.parametrize("api", APIS)
def test_a_continuation_that_breaks_too_is_continued_again(clients: Clients, sims: Sims, api: str):
    """Primary cut after 6 pieces, the second target's continuation cut after 4 more, the third target
    finishes: one answer, whole, under one id."""
    route = double_route(api)
    targets, second_api = DOUBLE[api]
    expected = text_reference(sims, api)
    assert len(expected.split()) > CUT_AFTER + SECOND_CUT_AFTER + 2
    sims.primary.set_faults({"truncate": {"mode": "eof", "after_tokens": CUT_AFTER}})
    sims.fallback.set_faults({"truncate": {"mode": "error_event", "after_tokens": SECOND_CUT_AFTER, "api": second_api}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert_whole_answer(a, api, expected)
    second, third = generation_requests(sims.fallback)
    assert continuation_of(second)[1].split() == expected.split()[:CUT_AFTER]
    assert continuation_of(third)[1].split() == expected.split()[: CUT_AFTER + SECOND_CUT_AFTER]


@pytest.mark.parametrize("pair", ["same", "translated"])
@pytest.mark.parametrize("api", APIS)
def test_a_continuation_that_breaks_with_no_target_left_ends_in_an_error(clients: Clients, sims: Sims, api: str, pair: str):
    route = route_name(api, pair)
    expected = text_reference(sims, api)
    sims.primary.set_faults({"truncate": {"mode": "eof", "after_tokens": CUT_AFTER}})
    sims.fallback.set_faults({"truncate": {"mode": "eof", "after_tokens": SECOND_CUT_AFTER}})

    a = STREAM[api](clients, route, PROMPT, False)

    assert a.error is not None, f"a twice-broken answer with nowhere left to go must end in an error: {a}"
    assert a.finish in (None, "failed"), a.finish
    assert a.text.split() == expected.split()[: CUT_AFTER + SECOND_CUT_AFTER]
    assert len(generation_requests(sims.fallback)) == 1


def test_concurrent_broken_streams_are_each_continued_with_their_own_text(cgw: ContGateway, sims: Sims):
    """Eight streams in flight at once over four client APIs, every primary cut: each client gets its
    own answer, whole (no continuation state shared between streams)."""
    from concurrent.futures import ThreadPoolExecutor

    jobs = [(api, pair, f"Tell me about stream number {i} and its gateway.") for i, (api, pair) in enumerate(
        [(api, pair) for api in APIS for pair in ("same", "translated")]
    )]
    expected = {prompt: reference(sims.fallback, api, prompt, tools=False).text for api, _, prompt in jobs}
    sims.fallback.reset()
    for text in expected.values():
        assert len(text.split()) > CUT_AFTER + 2
    sims.primary.set_faults({"truncate": {"mode": "reset", "after_tokens": CUT_AFTER}})

    def run(job: tuple[str, str, str]) -> tuple[str, str, Answer]:
        api, pair, prompt = job
        anth = anthropic.Anthropic(base_url=cgw.base_url, api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
        oai = openai.OpenAI(base_url=cgw.base_url + "/v1", api_key=GATEWAY_KEY, timeout=CLIENT_TIMEOUT, max_retries=0)
        http = httpx.Client(base_url=cgw.base_url, timeout=CLIENT_TIMEOUT)
        try:
            return api, prompt, STREAM[api](Clients(anth, oai, http), route_name(api, pair), prompt, False)
        finally:
            anth.close()
            oai.close()
            http.close()

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        results = list(pool.map(run, jobs))
    for api, prompt, a in results:
        assert_whole_answer(a, api, expected[prompt])
    assert sims.primary.stats()["by_outcome"]["truncated"] == len(jobs)
    assert len(generation_requests(sims.fallback)) == len(jobs)
