"""Many clients at once through one gateway: every answer reaches the client that asked for it."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import anthropic
import openai

from conftest import Sim

N = 24


def test_concurrent_mixed_requests(oai: openai.OpenAI, anth: anthropic.Anthropic, sim: Sim):
    def one(i: int) -> tuple[int, str]:
        want = f"answer number {i} ✓"
        messages = [{"role": "user", "content": f"echo {want}"}]
        kind = i % 4
        if kind == 0:
            got = oai.chat.completions.create(model="gpt-4.1", messages=messages).choices[0].message.content
        elif kind == 1:
            stream = oai.chat.completions.create(model="gpt-4.1", messages=messages, stream=True)
            got = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        elif kind == 2:
            got = anth.messages.create(model="claude-sonnet-4-5", max_tokens=64, messages=messages).content[0].text
        else:
            with anth.messages.stream(model="claude-sonnet-4-5", max_tokens=64, messages=messages) as s:
                got = s.get_final_text()
        return i, got if got == want else f"MISMATCH: {got!r} != {want!r}"

    with ThreadPoolExecutor(max_workers=8) as pool:
        results = dict(pool.map(one, range(N)))
    bad = {i: r for i, r in results.items() if r.startswith("MISMATCH")}
    assert not bad, bad
    assert len(sim.generation_requests()) == N
