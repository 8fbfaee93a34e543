"""The executor seam: names, ``$DESIC_EXECUTOR`` and objects pick where rows run; local is the default."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import pytest

import desic
from desic import executors
from desic.engine import LOCAL, Job, RunOutcome
from desic.lm import LM
from desic.pipeline import Pipeline
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, answer, triage


def test_local_is_the_default_and_the_environment_names_another(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DESIC_EXECUTOR", raising=False)
    assert executors.resolve(None) == (LOCAL, False)
    assert executors.resolve("local") == (LOCAL, False)
    monkeypatch.setenv("DESIC_EXECUTOR", "spark")
    with pytest.raises(desic.ConfigError, match=r"unknown DESIC_EXECUTOR 'spark'; give 'local', 'ray'"):
        executors.resolve(None)


def test_an_unknown_executor_is_a_config_error_naming_the_choices() -> None:
    with pytest.raises(desic.ConfigError, match=r"unknown executor 'dask'.*'ray://HOST:10001'"):
        desic.evaluate(triage, ROWS[:2], "exact_match", lm=FunctionLM(answer), executor="dask")
    with pytest.raises(desic.ConfigError, match="is not an executor"):
        executors.resolve(42)  # type: ignore[arg-type]


class Counting:
    """An executor of our own: runs on the local one and counts the jobs it was given."""

    def __init__(self) -> None:
        self.jobs = 0

    async def run(
        self,
        pipe: Pipeline[..., Any],
        jobs: Sequence[Job],
        *,
        lm: LM | None,
        concurrency: int,
        trace: bool = False,
        stop: Callable[[], bool] | None = None,
        before: Callable[[int], Awaitable[bool]] | None = None,
        after: Callable[[int, RunOutcome], Awaitable[None]],
    ) -> None:
        self.jobs += len(jobs)
        await LOCAL.run(pipe, jobs, lm=lm, concurrency=concurrency, trace=trace, stop=stop, before=before, after=after)


def test_evaluate_and_compile_hand_their_rows_to_the_executor_given() -> None:
    counting = Counting()
    report = desic.evaluate(triage, ROWS, "exact_match", lm=FunctionLM(answer), executor=counting)
    assert counting.jobs == len(ROWS) and report.completed == len(ROWS)
    counting.jobs = 0
    compiled = desic.compile(triage, ROWS, metric="exact_match", optimizer="random_search", num_candidates=2,
                             lm=FunctionLM(answer, name="m"), executor=counting)
    plain = desic.compile(triage, ROWS, metric="exact_match", optimizer="random_search", num_candidates=2,
                          lm=FunctionLM(answer, name="m"))
    assert counting.jobs > len(ROWS)  # every evaluation of the search went through it
    assert compiled.program.nodes == plain.program.nodes
