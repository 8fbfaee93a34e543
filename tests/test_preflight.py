"""Mistakes found before the first LM call, and raw exceptions turned into desic errors.

Every check here must refuse its input with a ``DesicError`` that names what is wrong,
and must do it before a single LM call is paid for (the fakes record every call).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic import events
from desic.evaluate import aevaluate
from desic.testing import FakeLM

# --- a small task -------------------------------------------------------------------------


class Route(BaseModel):
    team: Literal["billing", "tech"]


class Ticket(BaseModel):
    team: Literal["billing", "tech"]
    urgent: bool


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


@desic.signature
def classify(ticket: str) -> Ticket:
    """Classify the ticket."""


@desic.signature
def reply(ticket: str) -> str:
    """Reply to the ticket."""


@desic.pipeline
def triage(ticket: str) -> Route:
    return route(ticket=ticket)


@desic.pipeline
def untyped(ticket: str):  # type: ignore[no-untyped-def]  # no return annotation: output unknown
    return route(ticket=ticket)


ROWS = [{"ticket": f"charge {i}", "team": "billing"} for i in range(3)]


def fake() -> FakeLM:
    return FakeLM(default={"team": "billing", "urgent": False, "output": "hello"})


# --- 10. the metric -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exact_match", "token_f1", "f1", "contains", "field_match"])
def test_evaluate_takes_a_known_metric_by_name(name: str) -> None:
    report = desic.evaluate(route, ROWS, name, lm=fake())  # type: ignore[arg-type]
    assert report.errors == 0
    assert report.score == 1.0


def test_aevaluate_and_compile_take_a_metric_by_name() -> None:
    report = asyncio.run(aevaluate(route, ROWS, "exact_match", lm=fake()))  # type: ignore[arg-type]
    assert report.score == 1.0 and report.errors == 0
    compiled = desic.compile(route, ROWS, metric="exact_match", optimizer="bootstrap", lm=fake())  # type: ignore[arg-type]
    assert compiled.program.nodes[0].demos


@pytest.mark.parametrize("metric", ["accuracy", "exact-match", 42, None])
def test_an_unusable_metric_is_refused_before_any_call(metric: Any) -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError) as info:
        desic.evaluate(route, ROWS, metric, lm=lm)
    message = str(info.value)
    for name in ("exact_match", "token_f1", "contains", "field_match"):
        assert name in message
    assert "\n" not in message
    assert lm.calls == []


def test_compile_refuses_an_unknown_metric_name_before_any_call() -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError, match="unknown metric 'exactmatch'.*exact_match"):
        desic.compile(route, ROWS, metric="exactmatch", lm=lm)  # type: ignore[arg-type]
    with pytest.raises(desic.ConfigError, match="metric"):
        desic.compile(route, ROWS, metric=3.5, lm=lm)  # type: ignore[arg-type]
    assert lm.calls == []


def test_a_metric_that_cannot_take_example_and_output_is_refused() -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError, match=r"metric\(example, output\)"):
        desic.evaluate(route, ROWS, lambda output: 1.0, lm=lm)  # type: ignore[arg-type, misc]
    assert lm.calls == []
