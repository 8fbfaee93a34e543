# mypy: disable-error-code="empty-body"
"""A small agent for the tests: a search tool over a few facts, a calculator, and ``ask``."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, Field

import desic
from desic.lm import LMRequest
from desic.testing import act, finish

FACTS = {
    "ferry": "The ferry crossing takes 25 minutes.",
    "ticket": "A ferry ticket costs 6 crowns.",
    "mayor": "The mayor is Ingrid Falk.",
}


def search(query: Annotated[str, "a few keywords"]) -> list[str]:
    """Find facts about the town."""
    return [text for key, text in FACTS.items() if key in query.lower()] or ["nothing found"]


@desic.tool(max_calls=2)
def calc(a: int, b: int, op: Annotated[str, Field(description="+ or *")] = "+") -> int:
    """Add or multiply two numbers."""
    return a * b if op == "*" else a + b


class Answer(BaseModel):
    answer: str = Field(description="a few words")


@desic.signature(strategy="react", tools=[search, calc], max_steps=4)
def ask(question: str) -> Answer:
    """Answer the question about the town."""


ROWS = [
    {"question": "How long is the ferry crossing?", "answer": "25 minutes"},
    {"question": "Who is the mayor?", "answer": "Ingrid Falk"},
    {"question": "What do two tickets cost?", "answer": "12 crowns"},
]


PLANS = {
    "ferry": [act("search", "look it up", query="ferry"), finish("found it", answer="25 minutes")],
    "mayor": [act("search", query="mayor"), finish(answer="Ingrid Falk")],
    "tickets": [
        act("search", query="ticket"),
        act("calc", "two tickets", a=6, b=2, op="*"),
        finish(answer="12 crowns"),
    ],
}


def query_at(request: LMRequest) -> tuple[str, int]:
    """The question of an agent's request and how many steps it has taken so far."""
    messages = request.messages
    at = max(i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("question:"))
    return messages[at]["content"].removeprefix("question: "), (len(messages) - at - 1) // 2


def play(request: LMRequest) -> Any:
    """A scripted agent (for ``FunctionLM``): follows the plan of the question's keyword."""
    question, done = query_at(request)
    plan = next((p for key, p in PLANS.items() if key in question.lower()), [finish(answer="no idea")])
    return plan[min(done, len(plan) - 1)]
