"""Budgets stop a compile cleanly: best program so far, ``stopped_by`` says which, and why."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import desic
from desic import events
from desic.budget import Budget, BudgetMeter
from desic.lm import Usage
from desic.optimize import MemoryRecorder
from desic.record import program_key
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, SEARCHING, SMALL, Priced, answer, triage

METRIC = desic.metrics.exact_match


# bootstrap asks for more demos than the rows give, so it runs through the whole trainset
SETTINGS = {**SMALL, "bootstrap": {"max_demos": 50, "max_labeled": 0}}


def run(name: str, lm: Any, **options: Any) -> desic.CompiledPipeline[..., Any]:
    return desic.compile(triage, ROWS, metric=METRIC, optimizer=name, lm=lm, **{**SETTINGS[name], **options})


def full_usage(name: str) -> Usage:
    lm = Priced()
    return run(name, lm).usage


# --- the Budget object -----------------------------------------------------------------------


def test_budget_checks_its_values_and_merges_shortcuts() -> None:
    with pytest.raises(desic.ConfigError, match="cannot be negative"):
        Budget(max_calls=-1)
    with pytest.raises(desic.ConfigError, match="give a number"):
        Budget(max_tokens="lots")  # type: ignore[arg-type]
    with pytest.raises(desic.ConfigError, match="unknown budget"):
        Budget.of(None, max_cals=3)
    assert Budget.of(None) is None and not Budget()
    merged = Budget.of(Budget(max_calls=10, max_dollars=1.0), max_calls=5)
    assert merged == Budget(max_calls=5, max_dollars=1.0)


def test_meter_counts_work_in_flight_at_the_average_cost() -> None:
    meter = BudgetMeter(Budget(max_calls=10))
    for _ in range(4):
        meter.start()
        meter.finish(Usage(calls=2))
    assert meter.reason() is None
    assert meter.reason() is None  # 8 calls made, one more unit of ~2 calls reaches 10
    meter.start()  # ... but with that one in flight, another would pass 10
    hit = meter.reason()
    assert hit is not None and hit[0] == "max_calls" and "about 2 more in flight" in hit[1]
    with pytest.raises(desic.BudgetExceeded) as info:
        meter.check()
    assert info.value.budget == "max_calls"


# --- compile stops cleanly, for every kind of budget and optimizer ---------------------------

KINDS: dict[str, Callable[[Usage], dict[str, Any]]] = {
    "max_calls": lambda u: {"max_calls": u.calls // 2},
    "max_tokens": lambda u: {"max_tokens": u.total_tokens // 2},
    "max_dollars": lambda u: {"max_dollars": u.cost / 2},
    "max_seconds": lambda u: {"max_seconds": 0.15},
}


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("name", ("bootstrap", "knn", *SEARCHING))
def test_a_compile_stopped_by_a_budget_returns_the_best_so_far_and_says_why(name: str, kind: str) -> None:
    whole = full_usage(name)
    limits = KINDS[kind](whole)
    seen: list[events.Event] = []
    lm = Priced(latency=0.05 if kind == "max_seconds" else 0.0)
    with events.listening(seen.append):
        compiled = run(name, lm, **limits)  # no BudgetExceeded leaks out
    assert compiled.stopped_by == kind
    stops = [e for e in seen if e.kind == "budget_stop"]
    assert len(stops) == 1 and stops[0].data["budget"] == kind and kind in stops[0].data["detail"]
    assert compiled.usage.calls < whole.calls
    if kind == "max_calls":
        assert len(lm.calls) <= limits["max_calls"]
    if kind == "max_dollars":
        assert compiled.usage.cost <= limits["max_dollars"] + 1e-9
    scored = [c for c in compiled.history if c.split == "val" and c.score is not None]
    if scored:  # the best candidate scored on validation so far is what comes back
        best = max(scored, key=lambda c: (c.score, -c.index))
        assert program_key(compiled.program) == program_key(best.program)
        assert compiled.score == best.score
    elif compiled.history:
        assert compiled.program.nodes == compiled.history[-1].program.nodes
    with desic.context(lm=FunctionLM(answer)):
        assert compiled(ticket="charge 1").team == "billing"  # usable as it is


def test_a_budget_spent_before_any_candidate_gives_the_zero_shot_program() -> None:
    lm = Priced()
    compiled = run("mipro", lm, max_calls=0)
    assert compiled.stopped_by == "max_calls" and lm.calls == []
    assert compiled.history == [] and compiled.program.nodes == ()  # nothing ran, nothing recorded
    with desic.context(lm=FunctionLM(answer)):
        assert compiled(ticket="parcel 3").team == "shipping"


def test_budget_object_and_shortcuts_are_the_same() -> None:
    a = run("random_search", FunctionLM(answer), budget=Budget(max_calls=40))
    b = run("random_search", FunctionLM(answer), max_calls=40)
    assert a.stopped_by == b.stopped_by == "max_calls"
    assert a.program.nodes == b.program.nodes


def test_a_stopped_compile_resumes_with_its_recorder_without_repeating_work() -> None:
    recorder = MemoryRecorder()
    first_lm = FunctionLM(answer)
    stopped = run("beam", first_lm, recorder=recorder, max_calls=60, seed=4)
    assert stopped.stopped_by == "max_calls"
    rest_lm = FunctionLM(answer)
    finished = run("beam", rest_lm, recorder=recorder, seed=4)
    whole_lm = FunctionLM(answer)
    whole = run("beam", whole_lm, seed=4)
    assert finished.stopped_by is None
    assert finished.program.nodes == whole.program.nodes
    assert len(first_lm.calls) + len(rest_lm.calls) <= len(whole_lm.calls) + 8  # only in-flight overlap
