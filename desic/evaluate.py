"""Concurrent evaluation: one event loop, a semaphore-like worker pool, a token bucket.

``evaluate`` (sync) and ``aevaluate`` (async) run a pipeline over a devset and score each
output. At most ``concurrency`` examples run at once: a fixed pool of workers pulls the
next row as soon as one finishes (streaming, not batches, so one slow row never holds up
the others), and ``rps`` caps how many rows start per second. Synchronous pipelines run
in worker threads; their LM calls are handed back to the evaluation's loop, so every call
shares one set of limits.

A bare signature and an ``async def`` pipeline run on the loop itself; a synchronous
pipeline costs a thread hop per LM call, which shows at a concurrency in the hundreds
(write the pipeline ``async`` there: ``await sig.acall(...)``).

One row's failure is recorded on its row and never stops the run; ``max_errors`` stops it
on purpose (the rows not started are marked skipped and the report says why). Per-row
work is constant: results go to their slot in devset order, totals are kept running, so
100k rows cost 100x what 1k rows cost.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import os
import queue
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from . import events, ir
from ._bucket import TokenBucket
from ._utils import home_loop, run_sync, to_jsonable
from .budget import Budget, BudgetMeter
from .data import Example, to_examples
from .errors import ConfigError, DataError
from .lm import LM, Usage
from .metrics import Metric, ascore, collect_usage
from .pipeline import Pipeline, as_pipeline
from .runtime import RunState, context, run_scope, settings
from .signature import Signature

__all__ = [
    "EvaluationReport",
    "ExampleResult",
    "RunOutcome",
    "aevaluate",
    "drive",
    "evaluate",
    "run_examples",
    "run_one",
]

_NO_USAGE = Usage()
T = TypeVar("T")


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
            f"score {self.score:.3f} on {self.completed} examples "
            f"({self.errors} errors, {self.usage.calls} LM calls, {self.wall_time:.1f}s)"
        )
        if self.stopped_by is not None:
            text += f"; stopped by {self.stopped_by}: {self.stop_reason}, {self.skipped} skipped"
        return text


@dataclass
class RunOutcome:
    """One pipeline run on one example (used by evaluation and by optimizers)."""

    index: int
    example: Example
    output: Any = None
    error: str | None = None
    state: RunState = field(default_factory=RunState)
    latency: float = 0.0
    score: float | None = None
    feedback: str | None = None


# --- the engine -----------------------------------------------------------------------------

class ThreadWorkers:
    """Long-lived threads that run synchronous pipeline rows for an event loop.

    What ``loop.run_in_executor`` over a ``ThreadPoolExecutor`` does, for less: a job is
    a tuple on a queue and its result goes back with one ``call_soon_threadsafe``, with
    no ``concurrent.futures.Future`` (condition variable, callbacks) in between. Threads
    are started as jobs find none idle, up to ``size``, and then wait for the next job.
    A job whose future was cancelled before a thread took it is not run.
    """

    def __init__(self, size: int, name: str = "desic-eval") -> None:
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._queued = 0  # jobs no thread has taken yet

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker thread; the future resolves on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._jobs.put((loop, future, fn, args))
        with self._lock:
            self._queued += 1
            if self._queued <= self._idle or self._threads >= self.size:
                return future  # a waiting thread takes it, or it waits for a thread
            self._threads += 1
            self._idle += 1  # the new thread, about to wait for a job
            number = self._threads
        threading.Thread(target=self._serve, name=f"{self._name}_{number}", daemon=True).start()
        return future

    def _serve(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            loop, future, fn, args = jobs.get()
            with lock:
                self._queued -= 1
                self._idle -= 1
            if not future.cancelled():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - raised where the future is awaited
                    _hand_back(loop, future, None, exc)
                else:
                    _hand_back(loop, future, result, None)
                    result = None
            loop = future = fn = args = None
            with lock:
                self._idle += 1


def _hand_back(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody waits for this row any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_pool: ThreadWorkers | None = None
_pool_lock = threading.Lock()


def thread_pool(size: int) -> ThreadWorkers:
    """The process-wide threads for synchronous pipelines, grown to the largest concurrency asked.

    Threads are reused across evaluations (an optimizer evaluates hundreds of candidates)
    and started only as rows need them.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadWorkers(size)
        elif _pool.size < size:
            _pool.size = size
        return _pool


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
        workers = [asyncio.ensure_future(worker()) for _ in range(max(1, min(concurrency, count)))]
    finally:
        home_loop.reset(token)
    try:
        _, pending = await asyncio.wait(workers, return_when=asyncio.FIRST_EXCEPTION)
    except BaseException:  # cancelled from outside: stop the workers too
        for w in workers:
            w.cancel()
        raise
    if pending:  # one failed: nothing else is worth finishing
        for w in pending:
            w.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
    errors = [w.exception() for w in workers if w.done() and not w.cancelled()]
    for error in errors:
        if error is not None:
            raise error


def pipeline_of(target: Any) -> Pipeline[..., Any]:
    """``as_pipeline(target)``, remembering the signature when ``target`` is a bare one.

    A bare signature then runs straight on the evaluation's event loop instead of in a
    worker thread (no thread hops: much cheaper at high concurrency).
    """
    pipe = as_pipeline(target)
    if isinstance(target, Signature) and getattr(pipe, "signature", None) is None:
        pipe.signature = target  # type: ignore[attr-defined]
    return pipe


def _plain(value: Any) -> Any:
    """JSON data for an output (skipping the conversion for plain values)."""
    if value is None or type(value) in _PRIMITIVES:
        return value
    return to_jsonable(value)


_PRIMITIVES = (str, int, float, bool)


async def run_one(
    pipe: Pipeline[..., Any],
    example: Example,
    *,
    program: ir.Program | None = None,
    lm: LM | None = None,
    trace: bool = False,
    index: int = 0,
    executor: ThreadWorkers | concurrent.futures.Executor | None = None,
) -> RunOutcome:
    """Run ``pipe`` once on ``example``; an exception is recorded on the outcome."""
    state = RunState(program=program, lm=lm, trace=[] if trace else None)
    outcome = RunOutcome(index=index, example=example, state=state)
    start = time.perf_counter()
    sig: Signature[..., Any] | None = getattr(pipe, "signature", None)
    try:
        if sig is not None:
            with run_scope(state):
                pending = sig.acall(**example.inputs)
            outcome.output = await pending
        elif pipe.is_async:
            outcome.output = await pipe.arun(example.inputs, state)
        else:
            ctx = contextvars.copy_context()
            if executor is None or isinstance(executor, ThreadWorkers):
                pending = (executor or thread_pool(8)).submit(ctx.run, pipe.run, example.inputs, state)
            else:
                pending = asyncio.get_running_loop().run_in_executor(executor, ctx.run, pipe.run, example.inputs, state)
            outcome.output = await pending
    except Exception as exc:  # noqa: BLE001 - recorded on the row, never fatal
        outcome.error = f"{type(exc).__name__}: {exc}"
    outcome.latency = time.perf_counter() - start
    state.finish()
    return outcome


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
    order = list(indices) if indices is not None else list(range(len(examples)))
    out: list[RunOutcome | None] = [None] * len(order)
    executor = None if pipe.is_async or getattr(pipe, "signature", None) else thread_pool(concurrency)

    async def work(pos: int) -> None:
        i = order[pos]
        out[pos] = await run_one(pipe, examples[i], program=program, lm=lm, trace=trace, index=i, executor=executor)

    await drive(len(order), work, concurrency=concurrency)
    return [o for o in out if o is not None]


# --- evaluate ---------------------------------------------------------------------------------


def _progress_sink(what: str, total: int | None = None, budget: Budget | None = None) -> Any:
    """The rich progress line of :mod:`desic.sinks` (imported only when shown)."""
    from .sinks import ProgressSink

    limits: dict[str, float] = {}
    if budget:
        for name, key in (("max_calls", "calls"), ("max_tokens", "tokens"), ("max_dollars", "dollars"), ("max_seconds", "seconds")):
            value = getattr(budget, name)
            if value is not None:
                limits[key] = value
    return ProgressSink(what=what, total=total, budget=limits)


def default_concurrency(given: int | None = None) -> int:
    """``given``, else ``desic.context(max_concurrency=...)``, else ``$DESIC_MAX_CONCURRENCY``, else 8."""
    if given is not None:
        value: Any = given
    else:
        value = settings().max_concurrency
        if value is None:
            env = os.environ.get("DESIC_MAX_CONCURRENCY", "").strip()
            try:
                value = int(env) if env else 8
            except ValueError:
                raise ConfigError(f"DESIC_MAX_CONCURRENCY={env!r} is not a number; set it to e.g. 16") from None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"concurrency must be a whole number of at least 1, got {value!r}")
    return value


def _want_bar(progress: bool | None) -> bool:
    if progress is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    return progress


async def aevaluate(
    target: Any,
    devset: Iterable[Any],
    metric: Metric,
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

    ``concurrency``: rows running at once (default: ``desic.context(max_concurrency=...)``,
    ``$DESIC_MAX_CONCURRENCY`` or 8); ``rps``: rows started per second at most (with
    ``burst`` at once; wrap the LM in a throttle to cap LM calls instead); ``max_errors``:
    stop after this many failed rows; ``budget``: stop when LM calls/tokens/dollars/time
    run out; ``lm``: the LM (default: the one in ``desic.context``); ``progress``: a
    progress line on stderr (default: only when stderr is a terminal).
    """
    pipe = pipeline_of(target)
    if program is None:
        program = getattr(target, "program", None)
    examples = to_examples(pipe, devset, what="devset")
    concurrency = default_concurrency(concurrency)
    if max_errors is not None and max_errors < 1:
        raise ConfigError(f"max_errors must be at least 1 (or None for no limit), got {max_errors}")
    limits = Budget.of(budget)
    run = _Evaluation(pipe, examples, metric, program, lm, concurrency, rps, burst, max_errors, limits)
    if not _want_bar(progress):
        return await run.execute()
    sink = _progress_sink("evaluate", len(examples), limits)
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
        direct = pipe.is_async or getattr(pipe, "signature", None) is not None
        self.executor = None if direct else thread_pool(concurrency)
        self.scores_usage = getattr(metric, "acall", None) is not None  # an LM-backed metric
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

    async def work(self, i: int) -> None:
        example = self.examples[i]
        if self.bucket is not None:
            await self.bucket.acquire()
        if self.meter is not None:
            self.meter.start()
        outcome = await run_one(
            self.pipe, example, program=self.program, lm=self.lm, index=i, executor=self.executor
        )
        r = ExampleResult(i, example.inputs, example.labels, latency=outcome.latency, error=outcome.error)
        if outcome.error is None:
            r.output = _plain(outcome.output)
            if self.scores_usage:  # an LM-backed metric: it defaults to this evaluation's LM
                with collect_usage() as spent, context(**({"lm": self.lm} if self.lm is not None else {})):
                    await self._score(r, example, outcome.output)
                for u in spent:
                    outcome.state.add_usage(u)
            else:
                await self._score(r, example, outcome.output)
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

    async def _score(self, r: ExampleResult, example: Example, output: Any) -> None:
        try:
            r.score, r.feedback = await ascore(self.metric, example, output)
        except (DataError, ConfigError):
            raise  # the metric cannot work on this data at all: say so now
        except Exception as exc:  # noqa: BLE001 - recorded on the row
            r.error = f"metric failed: {type(exc).__name__}: {exc}"

    async def execute(self) -> EvaluationReport:
        total = len(self.examples)
        self.listening = events.active()
        if self.listening:
            events.emit("run_start", what="evaluate", pipeline=self.pipe.name, examples=total)
        start = time.perf_counter()
        await drive(total, self.work, concurrency=self.concurrency, stop=self.halt)
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
    metric: Metric,
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
