"""Optimizing an agent: the reflective optimizer rewrites its instructions and each tool's description."""

from __future__ import annotations

from typing import Any

import desic
from desic.lm import LMRequest
from desic.testing import FunctionLM
from tests.support.agents import ROWS, ask, play


def model(request: LMRequest) -> Any:
    fields = request.response_model.model_fields
    if "instruction" in fields:  # a proposal
        text = request.messages[-1]["content"]
        what = "tool search" if "tool: tool search" in text else "tool calc" if "tool: tool calc" in text else "agent"
        return {"instruction": f"Rewritten description of the {what}, with care."}
    return play(request)


def test_reflective_rewrites_instructions_and_tool_descriptions() -> None:
    rows = [*ROWS, {"question": "Where is the north pier?", "answer": "north"}]  # the agent gets this one wrong
    compiled = desic.compile(ask, rows, metric=desic.metrics.contains, optimizer="reflective", iterations=3,
                             minibatch=4, val_fraction=0.5, lm=FunctionLM(model), seed=0)
    notes = [c.note for c in compiled.history]
    assert any(n.startswith("edit of ask (") for n in notes)
    assert any(n.startswith("edit of ask tool search (") for n in notes)
    assert any(n.startswith("edit of ask tool calc (") for n in notes)
    edited = next(c.program for c in compiled.history if c.note.startswith("edit of ask tool search ("))
    (node,) = edited.nodes
    descriptions = {t.name: t.description for t in node.tools}
    assert descriptions == {"search": "Rewritten description of the tool search, with care.",
                            "calc": "Add or multiply two numbers."}
