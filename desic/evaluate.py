"""``desic.evaluate``: score a pipeline on a devset, and the report it returns.

``evaluate`` (sync) and ``aevaluate`` (async) run a pipeline over a devset through the
engine (:mod:`desic.engine`) and score each output with the metric. At most
``concurrency`` examples run at once, streaming (a row starts as soon as one finishes, so
one slow row never holds up the others), and ``rps`` caps how many rows start per second.
Synchronous pipelines run in worker threads; their LM calls are handed back to the
evaluation's loop, so every call shares one set of limits.

A bare signature and an ``async def`` pipeline run on the loop itself; a synchronous
pipeline costs a thread hop per LM call, which shows at a concurrency in the hundreds
(write the pipeline ``async`` there: ``await sig.acall(...)``).

One row's failure is recorded on its row and never stops the run; ``max_errors`` stops it
on purpose (the rows not started are marked skipped and the report says why). Per-row
work is constant: results go to their slot in devset order, totals are kept running, so
100k rows cost 100x what 1k rows cost.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from . import events, ir
from ._aio import run_sync
from ._bucket import TokenBucket
from ._json import to_jsonable
from ._text import plural
from .budget import Budget, BudgetMeter, require_prices
from .data import Example, to_examples
from .engine import LOCAL, RunOutcome, default_concurrency, score_outcome
from .errors import ConfigError
from .lm import LM, Usage
from .metrics import Metric, check_labels, resolve_metric
from .pipeline import Pipeline, as_pipeline
from .runtime import current_lm

__all__ = ["EvaluationReport", "ExampleResult", "aevaluate", "evaluate"]

_NO_USAGE = Usage()


@dataclass(slots=True)
class ExampleResult:
    """One devset row: what went in, what came out, how it scored and what it cost."""

    index: int
    inputs: dict[str, Any]
    expected: dict[str, Any]
    output: Any = None
    score: float = 0.0
    feedback: str | None = None
    error: str | None = None
    latency: float = 0.0
    usage: Usage = _NO_USAGE
    skipped: bool = False  # never ran: the evaluation was stopped before this row

    @property
    def tokens(self) -> int:
        return self.usage.total_tokens


@dataclass
class EvaluationReport:
    """Scores of a whole devset; ``results`` are in devset order.

    ``score`` is the mean over the rows that ran (a failed row scores 0; skipped rows do
    not count). ``stopped_by`` names what stopped the run early (``"max_errors"`` or a
    budget), ``stop_reason`` says it in words.
    """

    score: float
    results: list[ExampleResult]
    usage: Usage = _NO_USAGE
    wall_time: float = 0.0
    stopped_by: str | None = None
    stop_reason: str | None = None

    @property
    def errors(self) -> int:
        return sum(1 for r in self.results if r.error is not None)

    @property
    def skipped(self) -> int:
        return sum(1 for r in self.results if r.skipped)

    @property
    def completed(self) -> int:
        return len(self.results) - self.skipped

    def failures(self, below: float = 1.0) -> list[ExampleResult]:
        """Rows that ran and scored under ``below`` (errors included)."""
        return [r for r in self.results if not r.skipped and (r.error is not None or r.score < below)]

    def to_rows(self) -> list[dict[str, Any]]:
        """The results as plain dicts (for a DataFrame, JSON or CSV)."""
        return [
            {
                "index": r.index,
                "inputs": r.inputs,
                "expected": r.expected,
                "output": r.output,
                "score": r.score,
                "feedback": r.feedback,
                "error": r.error,
                "latency": r.latency,
                "calls": r.usage.calls,
                "tokens": r.usage.total_tokens,
                "cost": r.usage.cost,
                "skipped": r.skipped,
            }
            for r in self.results
        ]

    def __str__(self) -> str:
        text = (
            f"score {self.score:.3f} on {plural(self.completed, 'example')} "
            f"({plural(self.errors, 'error')}, {plural(self.usage.calls, 'LM call')}, {self.wall_time:.1f}s)"
        )
        if self.stopped_by is not None:
            text += f"; stopped by {self.stopped_by}: {self.stop_reason}, {self.skipped} skipped"
        return text


async def aevaluate(
    target: Any,
    devset: Iterable[Any],
    metric: Metric | str,
    *,
    concurrency: int | None = None,
    rps: float | None = None,
    burst: int | None = None,
    max_errors: int | None = None,
    budget: Budget | None = None,
    lm: LM | None = None,
    program: ir.Program | None = None,
    progress: bool | None = None,
) -> EvaluationReport:
    """Evaluate a pipeline (or compiled pipeline, or signature) on ``devset`` with ``metric``.

    ``metric``: a function ``metric(example, output)`` or the name of one of
    ``desic.metrics`` (``"exact_match"``, ``"token_f1"``/``"f1"``, ``"contains"``,
    ``"field_match"``). Before the first LM call the metric, every row's inputs, and (for
    the built-in metrics and a pipeline whose output type is known) every row's labels
    are checked: a ``ConfigError``/``DataError`` names what cannot work.

    ``concurrency``: rows running at once (default: ``desic.context(max_concurrency=...)``,
    ``$DESIC_MAX_CONCURRENCY`` or 8); ``rps``: rows started per second at most (with
    ``burst`` at once; wrap the LM in a throttle to cap LM calls instead); ``max_errors``:
    stop after this many failed rows; ``budget``: stop when LM calls/tokens/dollars/time
    run out; ``lm``: the LM (default: the one in ``desic.context``); ``progress``: a
    progress line on stderr (default: only when stderr is a terminal).
    """
    from .sinks import progress_display

    metric = resolve_metric(metric)
    pipe = as_pipeline(target)
    if program is None:
        program = getattr(target, "program", None)
    examples = to_examples(pipe, devset, what="devset")
    check_labels(pipe, examples, metric, what="devset")
    concurrency = default_concurrency(concurrency)
    if max_errors is not None and max_errors < 1:
        raise ConfigError(f"max_errors must be at least 1 (or None for no limit), got {max_errors}")
    limits = Budget.of(budget)
    require_prices(limits, lm if lm is not None else current_lm())
    run = _Evaluation(pipe, examples, metric, program, lm, concurrency, rps, burst, max_errors, limits)
    sink = progress_display("evaluate", total=len(examples), budget=limits, show=progress)
    if sink is None:
        return await run.execute()
    with events.listening(sink):
        sink.start()
        try:
            return await run.execute()
        finally:
            sink.stop()


class _Evaluation:
    """One evaluation's state: results in devset order and running totals (O(1) per row)."""

    def __init__(
        self,
        pipe: Pipeline[..., Any],
        examples: list[Example],
        metric: Metric,
        program: ir.Program | None,
        lm: LM | None,
        concurrency: int,
        rps: float | None,
        burst: int | None,
        max_errors: int | None,
        budget: Budget | None,
    ):
        self.pipe = pipe
        self.examples = examples
        self.metric = metric
        self.program = program
        self.lm = lm
        self.concurrency = concurrency
        self.max_errors = max_errors
        self.bucket = TokenBucket(rps, burst or 1) if rps else None
        self.meter = BudgetMeter(budget) if budget else None
        self.results: list[ExampleResult | None] = [None] * len(examples)
        self.stopped: tuple[str, str] | None = None
        self.score_sum = 0.0
        self.done = 0
        self.errors = 0
        self.usage = Usage()
        self.listening = False

    def halt(self) -> bool:
        if self.stopped is None and self.meter is not None:
            self.stopped = self.meter.reason()
        return self.stopped is not None

    async def before(self, i: int) -> bool:
        if self.bucket is not None:
            await self.bucket.acquire()
        if self.meter is not None:
            self.meter.start()
        return True

    async def after(self, i: int, outcome: RunOutcome) -> None:
        example = outcome.example
        r = ExampleResult(i, example.inputs, example.labels, latency=outcome.latency, error=outcome.error)
        if outcome.error is None:
            r.output = to_jsonable(outcome.output)
            await score_outcome(self.metric, outcome, lm=self.lm)
            if outcome.metric_error is not None:
                r.error = outcome.metric_error
            else:
                r.score = outcome.score or 0.0
                r.feedback = outcome.feedback
        r.usage = outcome.state.usage
        self.results[i] = r
        self.usage = self.usage + r.usage
        if self.meter is not None:
            self.meter.finish(r.usage)
        self.done += 1
        self.score_sum += r.score
        if r.error is not None:
            self.errors += 1
            if self.max_errors is not None and self.errors >= self.max_errors and self.stopped is None:
                self.stopped = ("max_errors", f"{self.errors} examples failed (max_errors={self.max_errors})")
        if self.listening:
            events.emit("example", index=i, score=r.score, error=r.error, latency=r.latency)

    async def execute(self) -> EvaluationReport:
        total = len(self.examples)
        self.listening = events.active()
        if self.listening:
            events.emit("run_start", what="evaluate", pipeline=self.pipe.name, examples=total)
        start = time.perf_counter()
        await LOCAL.run(
            self.pipe,
            [(e, self.program) for e in self.examples],
            lm=self.lm,
            concurrency=self.concurrency,
            stop=self.halt,
            before=self.before,
            after=self.after,
        )
        wall = time.perf_counter() - start
        rows: list[ExampleResult] = []
        for i, r in enumerate(self.results):
            if r is None:
                e = self.examples[i]
                r = ExampleResult(index=i, inputs=e.inputs, expected=e.labels, skipped=True)
            rows.append(r)
        stopped = self.stopped
        report = EvaluationReport(
            score=self.score_sum / self.done if self.done else 0.0,
            results=rows,
            usage=self.usage,
            wall_time=wall,
            stopped_by=stopped[0] if stopped else None,
            stop_reason=stopped[1] if stopped else None,
        )
        if self.listening:
            events.emit(
                "run_end",
                what="evaluate",
                pipeline=self.pipe.name,
                score=report.score,
                errors=self.errors,
                calls=self.usage.calls,
                seconds=wall,
                stopped_by=report.stopped_by,
            )
        return report


def evaluate(
    target: Any,
    devset: Iterable[Any],
    metric: Metric | str,
    *,
    concurrency: int | None = None,
    rps: float | None = None,
    burst: int | None = None,
    max_errors: int | None = None,
    budget: Budget | None = None,
    lm: LM | None = None,
    program: ir.Program | None = None,
    progress: bool | None = None,
) -> EvaluationReport:
    """Sync front of :func:`aevaluate` (works inside a running event loop too)."""
    return run_sync(
        aevaluate(
            target,
            devset,
            metric,
            concurrency=concurrency,
            rps=rps,
            burst=burst,
            max_errors=max_errors,
            budget=budget,
            lm=lm,
            program=program,
            progress=progress,
        )
    )
