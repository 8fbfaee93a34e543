"""``desic.compile``: optimize a pipeline into a ``CompiledPipeline``.

``CompiledPipeline`` and ``load`` live in the light ``desic._compiled`` (loading an
artifact imports no optimizer); they are re-exported here for compatibility.
"""

from __future__ import annotations

import datetime as _dt
from collections.abc import Iterable
from contextlib import nullcontext
from typing import Any

from . import events, ir
from ._compiled import CompiledPipeline, load
from ._utils import run_sync
from ._version import __version__
from .budget import Budget
from .data import dataset_fingerprint, to_examples
from .errors import BudgetExceeded
from .evaluate import _progress_sink, _want_bar, default_concurrency, pipeline_of
from .lm import LM
from .metrics import Metric
from .optimize import CompileTask, MemoryRecorder, Optimizer, RunRecorder, resolve
from .optimize._base import program_key
from .pipeline import Pipeline
from .runtime import context, current_lm

__all__ = ["CompiledPipeline", "acompile", "compile", "load"]


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


async def acompile(
    pipeline: Any,
    trainset: Iterable[Any],
    *,
    metric: Metric | None = None,
    optimizer: str | Optimizer = "bootstrap",
    valset: Iterable[Any] | None = None,
    lm: LM | str | None = None,
    teacher_lm: LM | str | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    recorder: RunRecorder | None = None,
    storage: Any = None,
    resume: str | None = None,
    budget: Budget | None = None,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    max_dollars: float | None = None,
    max_seconds: float | None = None,
    progress: bool | None = None,
    **optimizer_options: Any,
) -> CompiledPipeline:
    from .lm import lm as make_lm
    from .storage._run import compile_run

    pipe = pipeline_of(pipeline)
    train = to_examples(pipe, trainset, what="trainset")  # every row checked before any LM call
    val = to_examples(pipe, valset, what="valset") if valset is not None else None
    opt = resolve(optimizer, **optimizer_options)
    limits = Budget.of(
        budget, max_calls=max_calls, max_tokens=max_tokens, max_dollars=max_dollars, max_seconds=max_seconds
    )
    student = make_lm(lm) if isinstance(lm, str) else lm
    teacher = make_lm(teacher_lm) if isinstance(teacher_lm, str) else teacher_lm
    with context(**({"lm": student} if student is not None else {})), compile_run(storage, resume, recorder) as run:
        active = current_lm()
        run.start(pipeline=pipe.ref, optimizer=opt.name, optimizer_config={**opt.config(), "seed": seed}, seed=seed, lm=active.describe())
        task = CompileTask(
            pipeline=pipe,
            trainset=train,
            metric=metric,
            lm=active,
            teacher_lm=teacher,
            valset=val,
            seed=seed,
            concurrency=default_concurrency(concurrency),
            recorder=run.recorder or MemoryRecorder(),
            budget=limits,
            optimizer_name=opt.name,
        )
        listening = events.active()
        if listening:
            events.emit(
                "run_start", what="compile", run_id=run.run_id, pipeline=pipe.ref, optimizer=opt.name,
                trainset=len(train), valset=len(val) if val is not None else None, seed=seed,
            )
        stopped: BudgetExceeded | None = None
        try:
            program, stopped = await _optimize(opt, task, run.run_id, progress)
            score, split = await _final_score(task, program, stopped)
            meta = ir.ProgramMeta(
                desic_version=__version__,
                created_at=_now(),
                lm=active.describe(),
                optimizer=opt.name,
                optimizer_config={**opt.config(), "seed": seed},
                score=score,
                score_split=split,
                trainset_fingerprint=dataset_fingerprint(train),
                run_id=run.run_id,
            )
            program = program.replace(meta=meta, pipeline=pipe.ref)
            run.finish(program, stopped=stopped)
        except BaseException as exc:
            if listening:
                if stopped is None and isinstance(exc, BudgetExceeded):
                    stopped = exc
                _run_end(task, run.run_id, pipe, opt, None, stopped, error=f"{type(exc).__name__}: {exc}")
            raise
        if listening:
            _run_end(task, run.run_id, pipe, opt, score, stopped)
    stopped_by = stopped.budget if stopped is not None else None
    return CompiledPipeline(pipe, program, history=task.history, stopped_by=stopped_by, usage=task.usage)


def _run_end(
    task: CompileTask,
    run_id: str,
    pipe: Pipeline[..., Any],
    opt: Optimizer,
    score: float | None,
    stopped: BudgetExceeded | None,
    error: str | None = None,
) -> None:
    """Emit ``run_end`` for a compile: its score, usage and time, what stopped it, or the error."""
    u = task.usage
    data: dict[str, Any] = {"error": error} if error is not None else {}
    events.emit(
        "run_end", what="compile", run_id=run_id, pipeline=pipe.ref, optimizer=opt.name, score=score,
        candidates=len(task.history), calls=u.calls, cost=u.cost, seconds=task.meter.elapsed(),
        stopped_by=stopped.budget if stopped is not None else None, **data,
    )


async def _optimize(
    opt: Optimizer, task: CompileTask, run_id: str, progress: bool | None
) -> tuple[ir.Program, BudgetExceeded | None]:
    """Run the optimizer; a budget stop yields the best program so far and the stop."""
    bar = _progress_sink("compile", budget=task.budget) if _want_bar(progress) else None
    if bar is not None:
        bar.start()
    stopped: BudgetExceeded | None = None
    try:
        with events.listening(bar) if bar is not None else nullcontext():
            try:
                program: ir.Program = await opt.optimize(task)
            except BudgetExceeded as exc:
                stopped = exc
                events.emit("budget_stop", budget=exc.budget, detail=str(exc), run_id=run_id)
                best = task.best("val")
                if best is not None:
                    program = best.program
                elif task.history:
                    program = task.history[-1].program
                else:
                    program = task.observed_program()
    finally:
        if bar is not None:
            bar.stop()
    return program, stopped


async def _final_score(
    task: CompileTask, program: ir.Program, stopped: BudgetExceeded | None
) -> tuple[float | None, str | None]:
    """The program's validation score: from the history when the optimizer scored it there,
    else (valset given, budget left) by evaluating it through the task (memoized)."""
    key = program_key(program)
    for cand in reversed(task.history):
        if cand.split == "val" and cand.score is not None and program_key(cand.program) == key:
            return cand.score, task.val_name
    if task.valset is None or task.metric is None or stopped is not None:
        return None, None
    try:
        scored = await task.evaluate(program, task.valset)
    except BudgetExceeded:
        return None, None
    return scored.score, "valset"


def compile(pipeline: Any, trainset: Iterable[Any], **options: Any) -> CompiledPipeline:
    """Optimize ``pipeline`` on ``trainset`` and return it bound to the best program.

    Options: ``metric``, ``optimizer`` (a registered name or an instance), ``valset``,
    ``lm``, ``teacher_lm``, ``seed``, ``concurrency``, ``recorder`` (where evaluations are
    recorded; a run given the recorder of an interrupted one resumes it without repeating
    finished evaluations), ``storage`` (a store or URL where the run is recorded as it goes;
    default ``desic.context(storage=...)`` or ``$DESIC_STORAGE``, else nothing is written),
    ``resume`` (the id of a stored run to continue: finished evaluations are replayed, not
    repeated), ``budget`` (a ``desic.Budget``) or its shortcuts ``max_calls``,
    ``max_tokens``, ``max_dollars``, ``max_seconds`` (when one runs out the compile stops
    cleanly with the best program so far, ``compiled.stopped_by`` names it and a stored
    run is marked ``stopped``),
    ``progress`` (a status line on stderr; default: when stderr is a terminal), and the
    optimizer's own options.

    Events: ``run_start`` (``what="compile"``, ``run_id``, ``pipeline``, ``optimizer``,
    ``trainset``/``valset`` sizes, ``seed``) and, however the compile ends, ``run_end``
    (``score``, ``calls``, ``cost``, ``seconds``, ``candidates``, ``stopped_by``, and
    ``error`` when it failed) bracket everything it emits.
    """
    return run_sync(acompile(pipeline, trainset, **options))
