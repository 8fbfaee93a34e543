# mypy: disable-error-code="empty-body"
"""A bootstrap whose metric rejects every trace says so (it used to end silently with no
bootstrapped demo), and ``inspect()`` says why a program has no score (issue 15)."""

from __future__ import annotations

import logging

import pytest

import desic
from desic.testing import FakeLM


@desic.signature
def summarize(ticket: str) -> str:
    """Summarize the ticket in one line."""


ROWS = [{"ticket": f"ticket {i}", "team": "billing"} for i in range(6)]  # labels a summary never equals


def test_every_trace_rejected_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), desic.context(lm=FakeLM(default="a short summary")):
        compiled = desic.compile(summarize, ROWS, metric="exact_match", optimizer="bootstrap", max_labeled=0)
    (node,) = compiled.program.nodes
    assert node.demos == ()
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("accepted none of the 6 traces" in w and "team" in w for w in warnings), warnings


def test_accepted_traces_give_no_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING), desic.context(lm=FakeLM(default="billing")):
        desic.compile(summarize, ROWS, metric="exact_match", optimizer="bootstrap")
    assert not [r for r in caplog.records if "accepted none" in r.getMessage()]


def test_inspect_says_why_there_is_no_score() -> None:
    with desic.context(lm=FakeLM(default="billing")):
        # every row is a demo and no comparison with the pipeline as written: nothing was scored
        compiled = desic.compile(summarize, ROWS, metric="exact_match", optimizer="bootstrap", baseline=False)
        scored = desic.compile(summarize, ROWS, metric="exact_match", optimizer="bootstrap", valset=ROWS[:2])
        compared = desic.compile(summarize, ROWS, metric="exact_match", optimizer="bootstrap")
    text = compiled.inspect()
    assert "not scored" in text and "valset=" in text and "compiled.evaluate(" in text
    assert "score 1.000 on valset" in scored.inspect()
    # the comparison scores every row, each without the demo made from it
    assert "on trainset rows, each without its own demos" in compared.inspect()
