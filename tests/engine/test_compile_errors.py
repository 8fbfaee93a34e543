"""A failed evaluation is an error, never a 0: a compile stops on too many, and resumes.

An LM call that fails after its retries (an outage, a rate limit that never clears) says
nothing about the program: such an evaluation is not scored, not recorded (a resume runs it
again), and counted; past ``max_errors`` the compile stops with an ``LMError`` and its run
is stored as ``failed``. A metric that raises stops the compile at once, naming the metric,
the row and the exception. Faults that the retries absorb change nothing.
"""

from __future__ import annotations

import itertools
import uuid
from collections.abc import Callable
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.record import program_key
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, SMALL, answer, triage

METRIC = desic.metrics.exact_match


def outage_after(calls: int) -> Callable[[LMRequest], Any]:
    """The fake model, down (LMError on every call) after its first ``calls`` calls."""
    count = itertools.count()

    def fn(request: LMRequest) -> Any:
        if next(count) >= calls:
            raise desic.LMError("503 Service Unavailable (retries exhausted)")
        return answer(request)

    return fn


def flaky(every: int) -> Callable[[LMRequest], Any]:
    """The fake model, rate limited on every ``every``-th call (a retry clears it)."""
    count = itertools.count(1)

    def fn(request: LMRequest) -> Any:
        if next(count) % every == 0:
            raise desic.RateLimited("429 Too Many Requests", retry_after=0.0)
        return answer(request)

    return fn


def compile_search(lm: Any, metric: Any = METRIC, **extra: Any) -> desic.CompiledPipeline[..., Any]:
    return desic.compile(triage, ROWS, metric=metric, optimizer="random_search", lm=lm,
                         **SMALL["random_search"], **extra)


def test_an_outage_fails_the_run_and_a_resume_reruns_what_failed() -> None:
    url = f"memory://outage-{uuid.uuid4().hex}"
    with pytest.raises(desic.LMError, match=r"evaluations failed .*max_errors=10"):
        compile_search(FunctionLM(outage_after(60), name="m"), storage=url)
    store = desic.storage.open(url)
    (run,) = store.list_runs()
    assert run.status == "failed"
    assert "max_errors" in (run.error or "")

    healthy = FunctionLM(answer, name="m")
    resumed = compile_search(healthy, storage=url, resume=run.id)
    assert healthy.calls, "the failed evaluations were stored as finished ones"
    assert store.get_run(run.id).status == "finished"
    clean = compile_search(FunctionLM(answer, name="m"))
    assert program_key(resumed.program) == program_key(clean.program)


def test_errors_under_the_limit_are_counted_and_never_scored() -> None:
    with pytest.raises(desic.LMError, match="max_errors=2"):
        compile_search(FunctionLM(outage_after(40), name="m"), max_errors=2)
    # no limit: the compile goes on, and says how many evaluations failed
    events: list[desic.events.Event] = []
    with desic.events.listening(events.append):
        compiled = compile_search(FunctionLM(outage_after(100), name="m"), max_errors=None)
    assert compiled.errors > 0
    ends = [e for e in events if e.kind == "run_end"]
    assert ends and ends[-1].data["errors"] == compiled.errors


def test_a_metric_that_raises_stops_the_compile_naming_metric_row_and_exception() -> None:
    def picky(example: desic.Example, output: Any) -> float:
        if "crash" in example.inputs["ticket"]:
            raise ValueError("cannot compare")
        return float(output.team == example.labels["team"])

    url = f"memory://metric-{uuid.uuid4().hex}"
    with pytest.raises(desic.MetricError) as info:
        compile_search(FunctionLM(answer, name="m"), metric=picky, storage=url)
    message = str(info.value)
    assert "picky" in message and "ValueError: cannot compare" in message
    assert "row" in message and info.value.row is not None
    assert "crash" in ROWS[info.value.row]["ticket"]
    (run,) = desic.storage.open(url).list_runs()
    assert run.status == "failed"


@pytest.mark.parametrize("optimizer", ["bootstrap", "random_search", "mipro"])
def test_faults_the_retries_absorb_leave_the_program_unchanged(optimizer: str) -> None:
    clean = desic.compile(triage, ROWS, metric=METRIC, optimizer=optimizer, lm=FunctionLM(answer, name="m"),
                          concurrency=4, **SMALL[optimizer])
    faulty = desic.lm.retry(FunctionLM(flaky(3), name="m"), 3, initial=0.0, max_wait=0.0)
    again = desic.compile(triage, ROWS, metric=METRIC, optimizer=optimizer, lm=faulty, concurrency=4,
                          **SMALL[optimizer])
    assert program_key(again.program) == program_key(clean.program)
    assert again.errors == 0
