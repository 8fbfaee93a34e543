"""Does the local model give the same answers at temperature 0 whatever the order and
concurrency? Measures each server setting on the same prompts, twice, and times it.

python bench/_local_determinism.py [--prompts 20] [--max-tokens 24] [--settings ...]

A setting is ``n_parallel,cache_prompt`` (e.g. ``4,1`` the old default, ``1,0``). For each,
the prompts run once in order at concurrency ``n_parallel`` and once reversed at
concurrency 1 (and once more shuffled at full concurrency); the line printed says how many
answers differ between the runs and the seconds of each run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from typing import Any

from pydantic import BaseModel, Field

import desic
from desic.lm import LMRequest


class Said(BaseModel):
    text: str = Field(max_length=40)


def prompts(n: int) -> list[str]:
    topics = ["a refund for a broken kettle", "a login that fails", "a parcel sent to the wrong town",
              "a double charge on a card", "an app that crashes at start", "a password reset email",
              "a late delivery of shoes", "an invoice with a wrong address", "a subscription to cancel",
              "a slow web page"]
    return [f"Write one short sentence a customer might send about {topics[i % len(topics)]} (variant {i})."
            for i in range(n)]


async def run(lm: Any, texts: list[str], order: list[int], concurrency: int) -> dict[int, str]:
    sem = asyncio.Semaphore(concurrency)
    out: dict[int, str] = {}

    async def one(i: int) -> None:
        async with sem:
            try:
                response = await lm.request(LMRequest(messages=({"role": "user", "content": texts[i]},), response_model=Said))
                out[i] = response.raw
            except desic.LMError as exc:  # a cut-off answer is an answer too: compare its text
                out[i] = f"error: {getattr(exc, 'raw', None) or exc}"

    await asyncio.gather(*(one(i) for i in order))
    return out


async def measure(n_parallel: int, cache: bool, texts: list[str], max_tokens: int, threads: int | None) -> dict[str, object]:
    lm = desic.lm("local", n_parallel=n_parallel, max_tokens=max_tokens, cache_prompt=cache, threads=threads)
    order = list(range(len(texts)))
    t0 = time.perf_counter()
    a = await run(lm, texts, order, n_parallel)
    t1 = time.perf_counter()
    b = await run(lm, texts, order[::-1], 1)
    t2 = time.perf_counter()
    shuffled = order[:]
    random.Random(1).shuffle(shuffled)
    c = await run(lm, texts, shuffled, max(n_parallel, 4))
    t3 = time.perf_counter()
    return {
        "n_parallel": n_parallel, "cache_prompt": cache, "prompts": len(texts),
        "differ_seq_vs_par": sum(a[i] != b[i] for i in order),
        "differ_par_vs_shuffled": sum(a[i] != c[i] for i in order),
        "seconds_parallel": round(t1 - t0, 2), "seconds_sequential": round(t2 - t1, 2),
        "seconds_shuffled": round(t3 - t2, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=20)
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--settings", nargs="*", default=["4,1", "4,0", "1,1", "1,0"])
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    texts = prompts(args.prompts)
    for setting in args.settings:
        par, cache = setting.split(",")
        row = asyncio.run(measure(int(par), cache == "1", texts, args.max_tokens, args.threads))
        print(json.dumps(row), flush=True)


if __name__ == "__main__":
    main()
