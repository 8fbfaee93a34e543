# mypy: disable-error-code="empty-body"
"""Fakes shared by the optimizer and budget tests (no tests here).

The task: route tickets to teams. Three keywords route themselves; the fourth follows a
house rule the default instruction does not state (refunds go to shipping). The fake
model gets refund tickets right only when the rule is in its instruction or a refund
ticket is among its demos; the fake proposer writes the rule into its instruction for
odd sampling seeds only. So demo search and instruction search can both be seen to work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from typing import Any, Literal

from pydantic import BaseModel

import desic
from desic.lm import LMRequest, LMResponse
from desic.testing import FunctionLM, last_input

RULE = "refunds go to shipping"


class Route(BaseModel):
    team: Literal["billing", "shipping", "tech"]


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


@desic.pipeline
def triage(ticket: str) -> Route:
    return route(ticket=ticket)


def truth(ticket: str) -> str:
    if "refund" in ticket or "parcel" in ticket:
        return "shipping"
    if "charge" in ticket:
        return "billing"
    return "tech"


WORDS = ("charge", "parcel", "crash", "refund")
ROWS = [{"ticket": f"{w} {i}", "team": truth(w)} for i in range(8) for w in WORDS]


def answer(request: LMRequest) -> Any:
    """The fake model and the fake proposer in one function."""
    if request.node_id in ("propose_instruction", "reflect_instruction"):
        seed = request.params.seed or 0
        if seed % 2:
            return {"instruction": f"Route each ticket to its team; {RULE} (variant {seed})."}
        return {"instruction": f"Route each ticket to the right team, carefully (variant {seed})."}
    system = request.messages[0]["content"]
    ticket = last_input(request)
    if "refund" in ticket:
        demo_turns = [m["content"] for m in request.messages[1:-1] if m["role"] == "user"]
        knows = RULE in system or any("refund" in t for t in demo_turns)
        return {"team": "shipping" if knows else "billing"}
    return {"team": truth(ticket)}


class Jittery(FunctionLM):
    """``answer`` with a random latency per call, so completion order varies from run to run."""

    def __init__(self, max_latency: float = 0.004, fn: Any = answer, seed: int | None = None):
        super().__init__(fn)
        self._rng = random.Random(seed)
        self.max_latency = max_latency

    async def request(self, request: LMRequest) -> LMResponse:
        await asyncio.sleep(self._rng.random() * self.max_latency)
        return await super().request(request)


class Priced(FunctionLM):
    """``answer`` at a fixed price per call (the fakes report no cost by themselves)."""

    def __init__(self, price: float = 0.01, fn: Any = answer, latency: float = 0.0):
        super().__init__(fn, latency=latency)
        self.price = price

    async def request(self, request: LMRequest) -> LMResponse:
        response = await super().request(request)
        return dataclasses.replace(response, usage=dataclasses.replace(response.usage, cost=self.price))


def proposals(lm: FunctionLM) -> int:
    return sum(1 for r in lm.calls if r.node_id in ("propose_instruction", "reflect_instruction"))


def pipeline_calls(lm: FunctionLM) -> int:
    return sum(1 for r in lm.calls if r.node_id == "route")


# Small settings: every optimizer finishes in well under a second on the fakes.
SMALL: dict[str, dict[str, Any]] = {
    "labeled": {},
    "bootstrap": {"max_demos": 2, "max_labeled": 2},
    "knn": {"k": 2},
    "random_search": {"num_candidates": 6, "max_demos": 3},
    "beam": {"rounds": 2, "width": 2, "beam": 2},
    "genetic": {"population": 4, "generations": 2, "max_demos": 2},
    "mipro": {"num_instructions": 3, "num_demo_sets": 3, "trials": 8, "minibatch": 6, "full_every": 4},
    "reflective": {"iterations": 6, "minibatch": 4},
}
SEARCHING = ("random_search", "beam", "genetic", "mipro", "reflective")


def search_choice(history: Any) -> Any:
    """The search optimizer's own decision (its last ``selected`` or ``selected (check)``
    record), before compile compares it with the pipeline as written."""
    return next(c for c in reversed(history) if c.split in ("selected", "selected (check)"))
