"""``desic.compile``: optimize a pipeline into a ``CompiledPipeline``.

The top of the compile: it checks every row, resolves the LM once (handed down on the
task), owns the run's lifecycle in a store (``desic._lifecycle``), runs the optimizer over
the engine and turns its result into a scored, stamped program.

``CompiledPipeline`` and ``load`` live in the light ``desic._compiled`` (loading an
artifact imports no optimizer); they are re-exported here for compatibility.
"""

from __future__ import annotations

import asyncio
import datetime as _dt
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

import msgspec

from . import events, executors, ir
from ._aio import run_sync
from ._compiled import CompiledPipeline, load
from ._lifecycle import compile_run
from ._redact import get_logger
from ._version import __version__
from .budget import Budget, require_prices
from .data import Example, dataset_fingerprint, require_json, to_examples
from .engine import Executor, RunOutcome, default_concurrency
from .errors import BudgetExceeded, ConfigError
from .lm import LM
from .metrics import Metric, check_labels, resolve_metric
from .optimize import (
    CompileTask,
    Optimizer,
    RunRecorder,
    compare,
    resolve,
    unseen_rows,
    without_own_demos,
)
from .optimize.demos import MAX_DEMO_CHARS
from .optimize.history import Scored
from .pipeline import Pipeline, as_pipeline
from .record import program_key
from .render import leave_one_out
from .runtime import current_lm
from .sampling import SamplingSpec
from .sinks import progress_display
from .storage import redact

if TYPE_CHECKING:
    from .sinks import ProgressSink
    from .storage import Storage

__all__ = ["CompiledPipeline", "acompile", "compile", "load"]

log = get_logger("desic.compile")

P = ParamSpec("P")
R = TypeVar("R")


@contextmanager
def _closing(executor: Executor, owned: bool) -> Iterator[Executor]:
    """``executor``, closed at the end when this compile made it (from a name)."""
    try:
        yield executor
    finally:
        if owned:
            executors.close(executor)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


async def acompile(
    pipeline: Callable[P, R],  # a @pipeline, a @signature or a compiled pipeline (checked at run time)
    trainset: Iterable[Any],
    *,
    metric: Metric | str | None = None,
    optimizer: str | Optimizer = "bootstrap",
    valset: Iterable[Any] | None = None,
    lm: LM | str | None = None,
    teacher_lm: LM | str | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    recorder: RunRecorder | None = None,
    storage: Storage | str | None = None,
    resume: str | None = None,
    budget: Budget | None = None,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    max_dollars: float | None = None,
    max_seconds: float | None = None,
    progress: bool | None = None,
    max_errors: int | None = 10,
    executor: Executor | str | None = None,
    ensemble: int = 1,
    sampling: Sequence[SamplingSpec] = (),
    baseline: bool = True,
    **optimizer_options: Any,
) -> CompiledPipeline[P, R]:
    """The async form of :func:`compile` (same options)."""
    from .lm import lm as make_lm

    if isinstance(ensemble, bool) or not isinstance(ensemble, int) or not 1 <= ensemble <= 16:
        raise ConfigError(f"ensemble must be a whole number of candidates from 1 to 16, got {ensemble!r}")
    tries = list(sampling)
    for spec in tries:
        if not isinstance(spec, SamplingSpec):
            raise ConfigError(
                f"sampling= takes a list of desic.Majority(...), desic.BestOfN(...), desic.Refine(...); got {spec!r}"
            )
    metric = resolve_metric(metric) if metric is not None else None
    pipe = cast("Pipeline[P, R]", as_pipeline(pipeline))  # the same parameters and result
    train = to_examples(pipe, trainset, what="trainset")  # every row checked before any LM call
    val = to_examples(pipe, valset, what="valset") if valset is not None else None
    require_json(train, "trainset")  # rows are fingerprinted and recorded
    check_labels(pipe, train, metric, what="trainset", demos=True)  # trainset labels become demos
    _warn_oversized(train)
    if val is not None:
        require_json(val, "valset")
        check_labels(pipe, val, metric, what="valset")
    opt = resolve(optimizer, **optimizer_options)
    limits = Budget.of(
        budget, max_calls=max_calls, max_tokens=max_tokens, max_dollars=max_dollars, max_seconds=max_seconds
    )
    student = make_lm(lm) if isinstance(lm, str) else lm
    teacher = make_lm(teacher_lm) if isinstance(teacher_lm, str) else teacher_lm
    active = student if student is not None else current_lm()  # resolved once, handed down on the task
    require_prices(limits, active)
    runner, owned = executors.resolve(executor)
    with compile_run(storage, resume, recorder) as run, _closing(runner, owned):
        train_fingerprint = dataset_fingerprint(train)
        rows = ir.fingerprint([train_fingerprint, dataset_fingerprint(val) if val is not None else None])
        run.start(
            pipeline=pipe.ref, optimizer=opt.name, optimizer_config={**opt.config(), "seed": seed}, seed=seed,
            lm=active.describe(), trainset=rows,
        )
        if run.finished_program is not None:  # a finished run resumed: its program, no work
            return CompiledPipeline(pipe, run.finished_program)
        task = CompileTask(
            pipeline=pipe,
            trainset=train,
            metric=metric,
            lm=active,
            teacher_lm=teacher,
            valset=val,
            seed=seed,
            concurrency=default_concurrency(concurrency),
            recorder=run.recorder,
            budget=limits,
            optimizer_name=opt.name,
            max_errors=max_errors,
            executor=runner,
        )
        listening = events.active()
        if listening:
            events.emit(
                "run_start", what="compile", run_id=run.run_id, pipeline=pipe.ref, optimizer=opt.name,
                trainset=len(train), valset=len(val) if val is not None else None, seed=seed,
            )
        stopped: BudgetExceeded | None = None
        # a killed process leaves a stale run; one whose run was taken over is cancelled
        beat = asyncio.ensure_future(run.heartbeat(asyncio.current_task()))
        bar = progress_display("compile", budget=task.budget, show=progress)
        try:
            # leave_one_out: a per-input demo never shows the very row being scored
            with _showing(bar), leave_one_out():  # the final steps' calls too: the bar counts what usage counts
                program, stopped = await _optimize(opt, task, run.run_id)
                rows_name: str | None = None
                if baseline and stopped is None and getattr(opt, "checks_baseline", False):
                    try:
                        program, rows_name = await _against_written(task, program)
                    except BudgetExceeded as exc:
                        stopped = exc
                        events.emit("budget_stop", budget=exc.budget, detail=str(exc), run_id=run.run_id)
                if ensemble > 1 and stopped is None:
                    try:
                        program = await _ensemble(task, program, ensemble)
                    except BudgetExceeded as exc:
                        stopped = exc
                if tries and stopped is None:
                    try:
                        program = await _try_sampling(task, program, tries)
                    except BudgetExceeded as exc:
                        stopped = exc
                score, split = await _final_score(task, program, stopped, rows_name)
            meta = ir.ProgramMeta(
                desic_version=__version__,
                created_at=_now(),
                lm=active.describe(),
                optimizer=opt.name,
                optimizer_config={**opt.config(), "seed": seed},
                score=score,
                score_split=split,
                trainset_fingerprint=train_fingerprint,
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
        finally:
            beat.cancel()
        if listening:
            _run_end(task, run.run_id, pipe, opt, score, stopped)
    stopped_by = stopped.budget if stopped is not None else None
    if task.proposals_failed:
        _warn_proposals(task)
    if task.errors:
        log.warning(
            "desic: %d evaluations of this compile failed after their LM call's retries (last: %s); "
            "they counted as failures in the search. Resume the run to retry them.",
            task.errors, redact(task.last_error),
        )
    return CompiledPipeline(
        pipe, program, history=task.history, stopped_by=stopped_by, usage=task.usage, errors=task.errors
    )


def _warn_proposals(task: CompileTask) -> None:
    """Say how many instruction proposals failed, why the last did, and what helps."""
    from .optimize.calls import PROPOSAL_TOKENS

    proposer = task.proposer_lm
    name = proposer.name if proposer is not None else "?"
    log.warning(
        "desic: %d of %d instruction proposals failed and were skipped (last: %s). Proposals run "
        "with the proposer LM's own max_tokens, at least %d; if they were cut off, give the proposer "
        "more (e.g. teacher_lm=desic.lm(%r, max_tokens=1024)) or use a stronger teacher_lm.",
        task.proposals_failed, task.proposals, redact(task.last_proposal_error), PROPOSAL_TOKENS, name,
    )


_PLAIN = frozenset((str, int, float, bool, type(None)))


def _oversized(example: Example) -> int | None:
    """The characters of the row's JSON when over ``MAX_DEMO_CHARS``, else None.

    A row of plain values whose text is short enough is passed without encoding it (JSON
    escapes a character into at most 6).
    """
    row = {**example.inputs, **example.labels}
    if all(type(v) in _PLAIN for v in row.values()):
        bound = sum(len(v) if type(v) is str else 24 for v in row.values()) + sum(len(str(k)) + 8 for k in row)
        if 6 * bound <= MAX_DEMO_CHARS:
            return None
    size = len(json.dumps(row, ensure_ascii=False, default=str))
    return size if size > MAX_DEMO_CHARS else None


def _warn_oversized(train: list[Example]) -> None:
    """Warn once, before any LM call, of trainset rows too large to become demos
    (``desic.optimize.demos``: they still train and score; their demos are skipped)."""
    rows = [i for i, e in enumerate(train) if _oversized(e) is not None]
    if not rows:
        return
    shown = ", ".join(map(str, rows[:10])) + (f" and {len(rows) - 10} more" if len(rows) > 10 else "")
    noun = f"row {shown} is" if len(rows) == 1 else f"rows {shown} are"
    log.warning(
        "trainset %s over MAX_DEMO_CHARS=%d characters of JSON: never shown as demos (a demo is "
        "repeated in every prompt), still used to train and score",
        noun, MAX_DEMO_CHARS,
    )
    events.emit("demo_skipped", rows=rows, limit=MAX_DEMO_CHARS, what="trainset")


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
        candidates=len(task.history), calls=u.calls, cost=u.cost, seconds=task.meter.elapsed(), errors=task.errors,
        proposals=task.proposals, proposals_failed=task.proposals_failed,
        stopped_by=stopped.budget if stopped is not None else None, **data,
    )


@contextmanager
def _showing(bar: ProgressSink | None) -> Iterator[None]:
    """Draw ``bar`` from this block's events (nothing when None)."""
    if bar is None:
        yield
        return
    bar.start()
    try:
        with events.listening(bar):
            yield
    finally:
        bar.stop()


async def _optimize(opt: Optimizer, task: CompileTask, run_id: str) -> tuple[ir.Program, BudgetExceeded | None]:
    """Run the optimizer; a budget stop yields the best program so far and the stop."""
    stopped: BudgetExceeded | None = None
    try:
        program: ir.Program = await opt.optimize(task)
    except BudgetExceeded as exc:
        stopped = exc
        events.emit("budget_stop", budget=exc.budget, detail=str(exc), run_id=run_id)
        # the optimizer's own choice when it made one (a stop during its final check
        # keeps the start), else the best validation score so far
        chosen = [c for c in task.history if (c.split or "").startswith("selected")]
        best = chosen[-1] if chosen else task.best("val")
        if best is not None:
            program = best.program
        elif task.history:
            program = task.history[-1].program
        else:
            program = task.observed_program()
    return program, stopped


# at most this many rows compare a compiled program with the pipeline as written
BASELINE_ROWS = 64


async def _against_written(task: CompileTask, program: ir.Program) -> tuple[ir.Program, str | None]:
    """``program``, or the pipeline as written (zero-shot) when that scores higher on the
    same rows, and what those rows are called: every row of the valset, or of the trainset
    when given none (a seeded sample of ``BASELINE_ROWS`` when there are more), each scored
    by ``program`` without the demos made from that very row. A base model that copies its
    demos' answers is better off without them, and a compile must never hand back a
    program worse than its start. (Scoring only the rows no demo shows would be unfair to
    zero-shot: bootstrap makes its demos of the rows zero-shot gets right.)
    Both scores are recorded (split ``"baseline"``), then the choice with its evidence
    (split ``"selected (baseline)"``)."""
    written = program.replace(nodes=tuple(
        msgspec.structs.replace(n, instructions=n.signature.instructions, demos=(), select=None, variants=())
        for n in program.nodes
    ))
    if program_key(program) == program_key(written) or task.metric is None:
        return program, None
    pool = task.valset if task.valset is not None else task.trainset
    rows = list(pool)
    if len(rows) > BASELINE_ROWS:  # a seeded sample: the comparison must not cost a pass over a large set
        rows = task.rng("baseline").sample(rows, BASELINE_ROWS)
    held = without_own_demos(task, rows, program)
    if held is None:  # a demo of unknown origin: the rows it cannot come from
        shown = program.replace(nodes=tuple(  # per-input pools are left out while compiling
            msgspec.structs.replace(n, select=None) if n.select is not None and n.select.per_input else n
            for n in program.nodes
        ))
        rows = unseen_rows(task, rows, [shown])
        held = [program] * len(rows)
    if not rows:
        return program, None
    if task.valset is not None:
        label = "valset" if len(rows) == len(pool) else "a sample of the valset"
    else:
        label = "trainset rows, each without its own demos" if len(rows) == len(pool) else (
            "a sample of the trainset rows, each without its own demos")
    runs = await task.run_pairs([(written, rows), *((p, [row]) for p, row in zip(held, rows))])
    zero = _scored(task, written, runs[0])
    mine = _scored(task, program, [o for outcomes in runs[1:] for o in outcomes])
    first = task.record(written, zero.score, f"the pipeline as written (zero-shot), on {len(rows)} {label}",
                        split="baseline", scores=zero.scores)
    second = task.record(program, mine.score, f"the compiled program, on the same {len(rows)} rows",
                         split="baseline", scores=mine.scores)
    evidence = compare(mine.scores, zero.scores, task.seed)  # the compiled program's gain over zero-shot
    if zero.score > mine.score:
        note = (f"the compile keeps the pipeline as written (candidate {first.index}): it scores higher "
                f"than the compiled program (the compiled program: {evidence.describe()})")
        task.record(written, zero.score, note, split="selected (baseline)", scores=zero.scores, parent=first.index)
        log.warning("desic: the %s program scores %.3f on %d rows where the pipeline as written scores %.3f: "
                    "returning the pipeline as written (compile(..., baseline=False) returns the program)",
                    task.optimizer_name, mine.score, len(rows), zero.score)
        return written, label
    note = (f"the compile keeps the compiled program (candidate {second.index}): it scores "
            f"{'as high as' if mine.score == zero.score else 'higher than'} the pipeline as written "
            f"({evidence.describe()})")
    task.record(program, mine.score, note, split="selected (baseline)", scores=mine.scores, parent=second.index)
    return program, label


def _scored(task: CompileTask, program: ir.Program, outcomes: list[RunOutcome]) -> Scored:
    """``program``'s mean score over ``outcomes`` (as ``CompileTask.evaluate`` gives it)."""
    scores = [task.score(o) for o in outcomes]
    return Scored(program, sum(scores) / len(scores) if scores else 0.0, scores, outcomes)


async def _ensemble(task: CompileTask, program: ir.Program, k: int) -> ir.Program:
    """The top ``k`` distinct validation candidates as one program: each node answers
    with the best candidate's prompt and the runners-up's (``ir.Node.variants``) and
    takes the majority answer (``desic.sampling``). Kept unless it scores below the best
    single candidate on the same validation rows."""
    ranked: list[ir.Program] = [program]
    seen = {program_key(program)}
    for cand in sorted(
        (c for c in task.history if c.split == "val" and c.score is not None),
        key=lambda c: (-(c.score or 0.0), c.index),
    ):
        key = program_key(cand.program)
        if key not in seen:
            seen.add(key)
            ranked.append(cand.program)
        if len(ranked) == k:
            break
    if len(ranked) < 2:
        log.warning("ensemble=%d: only one distinct scored candidate; no ensemble to build", k)
        return program
    nodes = []
    for node in program.nodes:
        variants = []
        for other in ranked[1:]:
            theirs = other.node(node.id)
            if theirs is not None:
                variants.append(ir.Variant(instructions=theirs.instructions, demos=theirs.demos))
        nodes.append(msgspec.structs.replace(node, variants=tuple(variants)) if variants else node)
    combined = program.replace(nodes=tuple(nodes))
    _, val = task.split()
    if task.metric is None or not val:
        return combined
    single, both = await task.evaluate_many([program, combined], val)
    note = f"ensemble of the top {len(ranked)} candidates (majority vote per node)"
    task.record(combined, both.score, note, split="val", scores=both.scores)
    worse = compare(single.scores, both.scores, task.seed)
    if worse.significant:
        log.warning(
            "ensemble=%d: the best single candidate beats the ensemble on the validation rows "
            "(%s): keeping the single program", k, worse.describe(),
        )
        return program
    return combined


async def _try_sampling(task: CompileTask, program: ir.Program, tries: list[SamplingSpec]) -> ir.Program:
    """The program with each inference-time strategy of ``tries`` on every node, scored on
    the same validation rows as the plain program; the best one is kept only if it beats
    the plain (cheaper) program with evidence (``desic.optimize.compare``, paired)."""
    _, val = task.split()
    if task.metric is None or not val:
        log.warning("sampling=: no metric or validation rows to choose with; the program is unchanged")
        return program
    variants = [
        program.replace(nodes=tuple(msgspec.structs.replace(n, sampling=spec.to_ir()) for n in program.nodes))
        for spec in tries
    ]
    plain, *scored = await task.evaluate_many([program, *variants], val)
    best, best_scores = program, plain
    for spec, variant, result in zip(tries, variants, scored):
        label = f"{spec.kind} n={spec.n}" + (f" reward={spec.reward_name}" if spec.reward_name else "")
        task.record(variant, result.score, f"sampling: {label}", split="val", scores=result.scores)
        if result.score > best_scores.score:
            best, best_scores = variant, result
    if best is program:
        return program
    evidence = compare(best_scores.scores, plain.scores, task.seed)
    if not evidence.significant:
        log.info("sampling: the best strategy did not beat the plain program with evidence (%s)", evidence.describe())
        return program
    return best


# where a program's score may come from, best first ("": the validation split's own name;
# None: the rows the comparison with the pipeline as written used)
_SCORED_ON: dict[str, str | None] = {
    "selected (check)": "check rows (never used by the search)",
    "val": "",
    "selected (baseline)": None,
}


async def _final_score(
    task: CompileTask, program: ir.Program, stopped: BudgetExceeded | None, rows_name: str | None = None
) -> tuple[float | None, str | None]:
    """The program's validation score: from the history when the optimizer scored it there
    (on the check rows the search never used, when it has them), or when the comparison
    with the pipeline as written did (on ``rows_name``), else (valset given, budget left)
    by evaluating it through the task (memoized)."""
    key = program_key(program)
    found: dict[str, float] = {}
    for cand in reversed(task.history):
        if cand.score is not None and cand.split in _SCORED_ON and cand.split not in found \
                and program_key(cand.program) == key:
            found[cand.split] = cand.score
    for split, name in _SCORED_ON.items():
        if split in found:
            return found[split], rows_name if name is None else name or task.val_name
    if task.valset is None or task.metric is None or stopped is not None:
        return None, None
    try:
        scored = await task.evaluate(program, task.valset)
    except BudgetExceeded:
        return None, None
    return scored.score, "valset"


def compile(
    pipeline: Callable[P, R],  # a @pipeline, a @signature or a compiled pipeline (checked at run time)
    trainset: Iterable[Any],
    *,
    metric: Metric | str | None = None,
    optimizer: str | Optimizer = "bootstrap",
    valset: Iterable[Any] | None = None,
    lm: LM | str | None = None,
    teacher_lm: LM | str | None = None,
    seed: int = 0,
    concurrency: int | None = None,
    recorder: RunRecorder | None = None,
    storage: Storage | str | None = None,
    resume: str | None = None,
    budget: Budget | None = None,
    max_calls: int | None = None,
    max_tokens: int | None = None,
    max_dollars: float | None = None,
    max_seconds: float | None = None,
    progress: bool | None = None,
    max_errors: int | None = 10,
    executor: Executor | str | None = None,
    ensemble: int = 1,
    sampling: Sequence[SamplingSpec] = (),
    baseline: bool = True,
    **optimizer_options: Any,
) -> CompiledPipeline[P, R]:
    """Optimize ``pipeline`` on ``trainset`` and return it bound to the best program.

    - ``metric``: scores an output against a row's labels: a function ``metric(example,
      output)`` or the name of one of ``desic.metrics`` (``"exact_match"``, ...);
    - ``optimizer``: a registered name (``"bootstrap"``, ``"mipro"``, ...) or an instance;
      the optimizer's own options follow as keywords (a misspelt one is a ``ConfigError``
      listing the valid names);
    - ``valset``: validation rows (default: a seeded split of the trainset);
    - ``lm`` / ``teacher_lm``: the student LM (default: ``desic.context``'s) and the one
      that bootstraps demos and proposes instructions (default: the student);
    - ``seed``: every random choice of the optimizer derives from it;
    - ``concurrency``: rows running at once (default as for ``desic.evaluate``);
    - ``storage``: a store or URL where the run is recorded as it goes (default
      ``desic.context(storage=...)`` or ``$DESIC_STORAGE``, else nothing is written);
      ``resume``: the id of a stored run to continue (finished evaluations are replayed,
      not repeated); ``recorder``: record into this object instead of a store;
    - ``budget`` (a ``desic.Budget``) or its shortcuts ``max_calls``, ``max_tokens``,
      ``max_dollars``, ``max_seconds``: when one runs out the compile stops cleanly with
      the best program so far, ``compiled.stopped_by`` names it and a stored run is
      marked ``stopped``;
    - ``ensemble``: above 1, the top that many distinct candidates answer together: each
      node votes over their prompts (``desic.sampling``), one LM call per member; kept
      unless the best single candidate beats it with evidence on the validation rows;
    - ``sampling``: inference-time strategies to try on the chosen program
      (``[desic.Majority(5), desic.BestOfN(4, reward=fn)]``, applied to every node); one
      is kept only if it beats the plain program with evidence on the validation rows;
    - ``baseline``: the built-in optimizers that use the metric (all but ``labeled``)
      return the pipeline as written (zero-shot) instead of their program when it scores
      higher on the same rows (a tie keeps the program): every valset row, or trainset row
      (at most ``BASELINE_ROWS``, seeded), each scored by the program without the demos made
      from it (a per-input demo is never shown for its own row while compiling either). Both scores and the decision are in
      ``compiled.history`` (split ``"baseline"``); ``baseline=False`` skips the comparison
      and its LM calls;
    - ``progress``: a status line on stderr (default: when stderr is a terminal);
    - ``max_errors``: how many evaluations may fail after their LM call's retries (an
      outage, a rate limit that never clears) before the compile stops with an
      ``LMError`` (the stored run is ``failed`` and resumable; failed evaluations are
      never recorded, so a resume runs them again). None: no limit. A metric that
      raises stops the compile at once (``MetricError``);
    - ``executor``: where the pipeline's rows run: ``"local"`` (this process, the
      default), ``"ray"`` or a ``desic.executors.Ray(...)`` (default ``$DESIC_EXECUTOR``;
      see :mod:`desic.executors`). The optimizer and everything it decides stay here.

    Before the first LM call every row is checked (inputs, JSON values, and labels against
    the output type: ``desic.metrics.check_labels``), and so are the metric and the
    optimizer's options. A trainset row over ``desic.optimize.demos.MAX_DEMO_CHARS``
    characters of JSON is kept for training and scoring but never becomes a demo: the
    compile warns once (``demo_skipped`` event, ``desic.compile`` logger) and goes on.

    Events: ``run_start`` (``what="compile"``, ``run_id``, ``pipeline``, ``optimizer``,
    ``trainset``/``valset`` sizes, ``seed``) and, however the compile ends, ``run_end``
    (``score``, ``calls``, ``cost``, ``seconds``, ``candidates``, ``stopped_by``, and
    ``error`` when it failed) bracket everything it emits.
    """
    return run_sync(
        acompile(
            pipeline, trainset, metric=metric, optimizer=optimizer, valset=valset, lm=lm,
            teacher_lm=teacher_lm, seed=seed, concurrency=concurrency, recorder=recorder,
            storage=storage, resume=resume, budget=budget, max_calls=max_calls,
            max_tokens=max_tokens, max_dollars=max_dollars, max_seconds=max_seconds,
            progress=progress, max_errors=max_errors, executor=executor, ensemble=ensemble, sampling=sampling,
            baseline=baseline, **optimizer_options,
        )
    )
