"""Concurrent evaluation: one event loop, a semaphore for concurrency, per-example results.

Synchronous pipelines run in worker threads; their LM calls are handed back to the
evaluation's loop, so every call shares one set of limits. One example's failure is
recorded on its row and never stops the run.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from . import ir
from ._utils import home_loop, run_sync, to_jsonable
from .data import Example, to_examples
from .errors import DesicError
from .lm import LM, Usage
from .metrics import Metric, score_of
from .pipeline import Pipeline, as_pipeline
from .runtime import RunState

__all__ = ["ExampleResult", "EvaluationReport", "evaluate", "aevaluate", "run_examples"]


@dataclass
class ExampleResult:
    index: int
    inputs: dict[str, Any]
    expected: dict[str, Any]
    output: Any = None
    score: float = 0.0
    feedback: str | None = None
    error: str | None = None
    latency: float = 0.0
    usage: Usage = Usage()


@dataclass
class EvaluationReport:
    score: float
    results: list[ExampleResult]
    usage: Usage = Usage()
    wall_time: float = 0.0

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None)

    def __str__(self) -> str:
        return (
            f"score {self.score:.3f} on {len(self.results)} examples "
            f"({self.errors} errors, {self.usage.calls} LM calls, {self.wall_time:.1f}s)"
        )


@dataclass
class RunOutcome:
    """One pipeline run on one example (used by evaluation and by optimizers)."""

    index: int
    example: Example
    output: Any = None
    error: str | None = None
    state: RunState = field(default_factory=RunState)
    latency: float = 0.0


async def run_examples(
    pipe: Pipeline[..., Any],
    examples: list[Example],
    *,
    program: ir.Program | None = None,
    lm: LM | None = None,
    concurrency: int = 8,
    trace: bool = False,
    indices: Iterable[int] | None = None,
) -> list[RunOutcome]:
    """Run ``pipe`` on ``examples`` concurrently; outcomes come back in input order."""
    loop = asyncio.get_running_loop()
    limit = asyncio.Semaphore(max(1, concurrency))
    executor = None
    if not pipe.is_async:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=max(1, concurrency), thread_name_prefix="desic-eval"
        )
    token = home_loop.set(loop)
    try:

        async def one(i: int) -> RunOutcome:
            example = examples[i]
            state = RunState(program=program, lm=lm, trace=[] if trace else None)
            outcome = RunOutcome(index=i, example=example, state=state)
            async with limit:
                start = time.perf_counter()
                try:
                    if executor is not None:
                        ctx = contextvars.copy_context()
                        outcome.output = await loop.run_in_executor(
                            executor, ctx.run, pipe.run, example.inputs, state
                        )
                    else:
                        outcome.output = await pipe.arun(example.inputs, state)
                except Exception as exc:  # recorded on the row, never fatal
                    outcome.error = f"{type(exc).__name__}: {exc}"
                outcome.latency = time.perf_counter() - start
            return outcome

        order = list(indices) if indices is not None else list(range(len(examples)))
        return list(await asyncio.gather(*(one(i) for i in order)))
    finally:
        home_loop.reset(token)
        if executor is not None:
            executor.shutdown(wait=False)


async def aevaluate(
    target: Any,
    devset: Iterable[Any],
    metric: Metric,
    *,
    concurrency: int = 8,
    lm: LM | None = None,
    program: ir.Program | None = None,
) -> EvaluationReport:
    """Evaluate a pipeline (or compiled pipeline) on ``devset`` with ``metric``."""
    pipe = as_pipeline(target)
    if program is None:
        program = getattr(target, "program", None)
    examples = to_examples(pipe, devset, what="devset")
    start = time.perf_counter()
    outcomes = await run_examples(pipe, examples, program=program, lm=lm, concurrency=concurrency)
    results: list[ExampleResult] = []
    usage = Usage()
    for o in outcomes:
        r = ExampleResult(
            index=o.index,
            inputs={k: to_jsonable(v) for k, v in o.example.inputs.items()},
            expected=to_jsonable(o.example.labels),
            latency=o.latency,
            usage=o.state.usage,
            error=o.error,
        )
        usage = usage + o.state.usage
        if o.error is None:
            r.output = to_jsonable(o.output)
            try:
                r.score, r.feedback = score_of(metric(o.example, o.output))
            except DesicError:
                raise
            except Exception as exc:
                r.error = f"metric failed: {type(exc).__name__}: {exc}"
        results.append(r)
    score = sum(r.score for r in results) / len(results) if results else 0.0
    return EvaluationReport(
        score=score, results=results, usage=usage, wall_time=time.perf_counter() - start
    )


def evaluate(
    target: Any,
    devset: Iterable[Any],
    metric: Metric,
    *,
    concurrency: int = 8,
    lm: LM | None = None,
    program: ir.Program | None = None,
) -> EvaluationReport:
    """Sync front of :func:`aevaluate` (works inside a running event loop too)."""
    return run_sync(
        aevaluate(target, devset, metric, concurrency=concurrency, lm=lm, program=program)
    )
