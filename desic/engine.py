"""The engine: run a pipeline on examples, concurrently, and score what comes out.

Evaluation and compile both run here, through the same few pieces:

- ``run_one``: one pipeline run on one example; an exception is recorded on the
  ``RunOutcome``, never raised. A bare signature (``SignaturePipeline``) and an ``async
  def`` pipeline run on the event loop itself; a synchronous pipeline runs on desic's
  worker threads (``desic._aio.workers``) and its LM calls hop back to the loop, so every
  call shares one set of limits.
- ``Executor.run``: many ``(example, program)`` jobs, at most ``concurrency`` at once,
  streaming (a worker pulls the next job as soon as it finishes one, so one slow row
  never holds up the others). ``before(i)`` runs on the driver before job ``i`` starts
  (rate limits, budgets, a recorded answer that makes the run unnecessary) and
  ``after(i, outcome)`` as each one finishes (scoring, recording, progress). The
  ``LocalExecutor`` runs jobs on this process's event loop; an executor for a cluster
  implements the same method.
- ``score_outcome``: the one place a metric is applied to an outcome (an LM-backed
  metric defaults to the run's LM and its usage is added to the run's).
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from . import ir
from ._aio import home_loop, workers
from ._redact import redact_text
from .data import Example
from .errors import BudgetExceeded, ConfigError, DataError, LMError, OutputValidationError
from .lm import LM
from .metrics import Metric, ascore
from .pipeline import Pipeline
from .runtime import RunState, context, default_concurrency, run_isolated, run_scope

__all__ = [
    "LOCAL",
    "Executor",
    "Job",
    "LocalExecutor",
    "RunOutcome",
    "default_concurrency",
    "drive",
    "lm_failure",
    "run_all",
    "run_one",
    "score_outcome",
]

Job = tuple[Example, "ir.Program | None"]


@dataclass(slots=True)
class RunOutcome:
    """One pipeline run on one example.

    ``score``/``feedback`` are set by ``score_outcome``; ``metric_error`` says why the
    metric could not score this output (the metric raised), when it could not.
    ``lm_failed`` marks a run that failed because an LM call failed after its retries
    (an outage, a rate limit that never cleared, a missing key): the LM, not the program,
    is at fault, so such a run is an error, never a score.
    """

    index: int
    example: Example
    output: Any = None
    error: str | None = None
    state: RunState = field(default_factory=RunState)
    latency: float = 0.0
    score: float | None = None
    feedback: str | None = None
    metric_error: str | None = None
    lm_failed: bool = False
    # the run stopped because a budget ran out (an agent between two steps): neither scored
    # nor recorded, so a resumed compile runs it again
    budget_stopped: bool = False


def lm_failure(exc: BaseException) -> bool:
    """Whether ``exc`` ending a run is the LM's failure rather than the program's: an
    ``LMError`` other than an output that never validated (that is the model's answer), or
    a ``ConfigError`` (no LM could be reached as configured)."""
    return (isinstance(exc, LMError) and not isinstance(exc, OutputValidationError)) or isinstance(exc, ConfigError)


async def drive(
    count: int,
    work: Callable[[int], Awaitable[None]],
    *,
    concurrency: int,
    stop: Callable[[], bool] | None = None,
) -> None:
    """Run ``work(0) .. work(count-1)``, at most ``concurrency`` at once, in index order of start.

    Workers pull the next index as soon as they finish one. ``stop()`` is asked before each
    start; once true, nothing new starts and the call returns when running work is done.
    An exception from ``work`` (it records per-item failures itself, so this means a
    misuse, such as a metric that cannot read the labels) cancels the other items and is
    raised.
    """
    if count <= 0:
        return
    loop = asyncio.get_running_loop()
    position = 0
    halted = False

    async def worker() -> None:
        nonlocal position, halted
        while not halted:
            if stop is not None and stop():
                halted = True
                return
            i = position
            if i >= count:
                return
            position += 1
            try:
                await work(i)
            except BaseException:
                halted = True
                raise

    token = home_loop.set(loop)
    try:
        tasks = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, count)))]
    finally:
        home_loop.reset(token)
    try:
        _, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # cancelled from outside: stop the workers too
        for t in tasks:
            t.cancel()
        raise
    if pending:  # one failed: nothing else is worth finishing
        for t in pending:
            t.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    errors = [t.exception() for t in tasks if t.done() and not t.cancelled()]  # all retrieved
    for error in errors:
        if error is not None:
            raise error


async def run_one(
    pipe: Pipeline[..., Any],
    example: Example,
    *,
    program: ir.Program | None = None,
    lm: LM | None = None,
    trace: bool = False,
    index: int = 0,
) -> RunOutcome:
    """Run ``pipe`` once on ``example``; an exception is recorded on the outcome."""
    state = RunState(program=program, lm=lm, trace=[] if trace else None)
    outcome = RunOutcome(index=index, example=example, state=state)
    start = time.perf_counter()
    try:
        if pipe.signature is not None:
            outcome.output = await run_isolated(pipe.signature, example.inputs, state=state)
        elif pipe.is_async:
            outcome.output = await pipe.arun(example.inputs, state)
        else:
            ctx = contextvars.copy_context()
            outcome.output = await workers().submit(ctx.run, pipe.run, example.inputs, state)
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never fatal
        # rows go to reports, events and stores: a credential a provider echoed goes nowhere
        outcome.error = redact_text(f"{type(exc).__name__}: {exc}")
        outcome.budget_stopped = isinstance(exc, BudgetExceeded)
        outcome.lm_failed = lm_failure(exc) or outcome.budget_stopped
    except BaseException:  # cancelled (Ctrl-C): a row still running in a thread stops calling
        state.cancelled = True
        raise
    outcome.latency = time.perf_counter() - start
    state.finish()
    return outcome


async def score_outcome(metric: Metric, outcome: RunOutcome, *, lm: LM | None = None) -> None:
    """Score ``outcome`` with ``metric`` (a failed run is left unscored).

    An LM-backed metric (one with ``acall``) defaults to ``lm``; it is scored inside the
    outcome's run, so its usage is added to that run's (the one usage channel). A metric that raises ``DataError``/``ConfigError`` cannot work on
    this data at all: that is raised. Any other exception is kept in
    ``outcome.metric_error`` and the score stays None.
    """
    if outcome.error is not None:
        return
    if getattr(metric, "acall", None) is None:
        await _apply(metric, outcome)
        return
    with run_scope(outcome.state), context(**({"lm": lm} if lm is not None else {})):
        await _apply(metric, outcome)


async def _apply(metric: Metric, outcome: RunOutcome) -> None:
    try:
        outcome.score, outcome.feedback = await ascore(metric, outcome.example, outcome.output)
    except (DataError, ConfigError):
        raise
    except Exception as exc:  # noqa: BLE001 - kept on the outcome
        outcome.metric_error = redact_text(f"metric failed: {type(exc).__name__}: {exc}")


class Executor(Protocol):
    """Runs a batch of jobs of one pipeline (the seam between the engine and where rows run)."""

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
    ) -> None: ...


class LocalExecutor:
    """Runs jobs on this process's event loop, at most ``concurrency`` at once.

    ``stop()`` is asked before each job starts; ``await before(i)`` (on this loop)
    returns False to skip job ``i`` (its hook dealt with it); ``await after(i, outcome)``
    is called as each run finishes, in completion order.
    """

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
        if pipe.signature is None and not pipe.is_async:
            workers(concurrency)  # threads for synchronous rows, as many as may run at once

        async def work(i: int) -> None:
            if before is not None and not await before(i):
                return
            example, program = jobs[i]
            outcome = await run_one(pipe, example, program=program, lm=lm, trace=trace, index=i)
            await after(i, outcome)

        await drive(len(jobs), work, concurrency=concurrency, stop=stop)


LOCAL = LocalExecutor()


async def run_all(
    pipe: Pipeline[..., Any],
    examples: Sequence[Example],
    *,
    program: ir.Program | None = None,
    lm: LM | None = None,
    concurrency: int = 8,
    trace: bool = False,
    executor: Executor = LOCAL,
) -> list[RunOutcome]:
    """Run ``pipe`` on every example under ``program``; outcomes in input order."""
    out: list[RunOutcome | None] = [None] * len(examples)

    async def keep(i: int, outcome: RunOutcome) -> None:
        out[i] = outcome

    jobs = [(e, program) for e in examples]
    await executor.run(pipe, jobs, lm=lm, concurrency=concurrency, trace=trace, after=keep)
    return [o for o in out if o is not None]
