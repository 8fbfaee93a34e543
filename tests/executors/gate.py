"""A gate in the cluster for fault tests (no tests here): LM calls made on a Ray worker pass
freely until ``free`` have, then wait at the gate until the test opens it, so a test knows
a worker is in the middle of a row (and which one) before it kills it."""

from __future__ import annotations

import asyncio
from typing import Any

from desic.lm import LMRequest
from tests.support.house_rule import answer

NAME = "desic-test-gate"


class Gate:
    def __init__(self, free: int) -> None:
        self.free = free
        self.calls = 0
        self.waiters: list[str] = []  # actor ids of the calls held at the gate
        self.opened: asyncio.Event | None = None

    async def enter(self, actor_id: str) -> None:
        if self.opened is None:
            self.opened = asyncio.Event()
        self.calls += 1
        if self.calls <= self.free or self.opened.is_set():
            return
        self.waiters.append(actor_id)
        await self.opened.wait()

    async def held(self) -> list[str]:
        return list(self.waiters)

    async def open(self) -> None:
        if self.opened is None:
            self.opened = asyncio.Event()
        self.opened.set()


async def gated_answer(request: LMRequest) -> Any:
    """``answer``, after the gate for the pipeline's rows run on a worker (the driver's own
    calls, e.g. instruction proposals, pass)."""
    import ray

    actor = ray.get_runtime_context().get_actor_id()
    if actor is not None and request.node_id == "route":
        await ray.get_actor(NAME).enter.remote(actor)
    return answer(request)
