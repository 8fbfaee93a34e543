"""The pinned prompt of a react node: its tools in the system message, a bootstrapped
trajectory as demo turns (each action and observation), then the query."""

from __future__ import annotations

from collections.abc import Callable

import desic
from desic.testing import FunctionLM
from tests.support.agents import ROWS, ask, play

PromptSnapshot = Callable[..., dict[str, list[dict[str, str]]]]


def test_react_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    compiled = desic.compile(ask, ROWS, metric=desic.metrics.contains, optimizer="bootstrap",
                             max_demos=1, max_labeled=0, lm=FunctionLM(play))
    prompts = prompt_snapshot(compiled, question="What do two tickets cost?")
    roles = [m["role"] for m in prompts["ask"]]
    assert roles == ["system", "user", "assistant", "user", "assistant", "user"]
