"""``desic.compile`` and ``CompiledPipeline``; ``desic.load`` for artifacts."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from collections.abc import Iterable
from contextlib import nullcontext
from pathlib import Path
from typing import Any

from . import events, ir
from ._utils import run_sync
from ._version import __version__
from .budget import Budget
from .data import dataset_fingerprint, to_examples
from .errors import ArtifactError, BudgetExceeded
from .evaluate import (
    EvaluationReport,
    _progress_sink,
    _want_bar,
    aevaluate,
    default_concurrency,
    pipeline_of,
)
from .lm import LM, Usage
from .metrics import Metric
from .optimize import CompileTask, MemoryRecorder, Optimizer, RunRecorder, resolve
from .optimize._base import program_key
from .pipeline import Pipeline, as_pipeline
from .render import render_messages
from .runtime import RunState, _Capture, context, current_lm, drift_error, settings
from .signature import Signature, registered

__all__ = ["CompiledPipeline", "acompile", "compile", "load"]


class CompiledPipeline:
    """A pipeline bound to an optimized ``Program``. Call it like the original."""

    def __init__(
        self,
        pipeline: Pipeline[..., Any],
        program: ir.Program,
        *,
        history: list[Any] | None = None,
        stopped_by: str | None = None,
        usage: Usage | None = None,
    ):
        self.pipeline = pipeline
        self.program = program
        # Every candidate the optimizer scored, in evaluation order (``Candidate``s).
        self.history = history or []
        # The budget that stopped the compile early ("max_calls", ...), or None.
        self.stopped_by = stopped_by
        # LM usage of the compile itself (replayed records of a resumed run cost nothing).
        self.usage = usage if usage is not None else Usage()

    @property
    def score(self) -> float | None:
        return self.program.meta.score

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        inputs = self.pipeline.bind(args, kwargs)
        state = RunState(program=self.program)
        if self.pipeline.is_async:
            return self.pipeline.arun(inputs, state)
        return self.pipeline.run(inputs, state)

    def prompts(self, **inputs: Any) -> dict[str, list[dict[str, str]]]:
        """The exact messages each node sends for ``inputs``, by node id.

        With an LM in ``desic.context`` the pipeline really runs (later nodes need earlier
        outputs); without one, rendering stops after the first node's prompt.
        """
        inputs = self.pipeline.validate_inputs(self.pipeline.bind((), inputs))
        has_lm = settings().lm is not None
        state = RunState(program=self.program, trace=[], capture_only=not has_lm)
        try:
            self.pipeline.run(inputs, state)
        except _Capture:
            pass
        out: dict[str, list[dict[str, str]]] = {}
        for entry in state.trace or []:
            out.setdefault(entry.node_id, entry.messages)
        return out

    def render(self, node_id: str, **inputs: Any) -> list[dict[str, str]]:
        """The messages of one node for inputs given directly (no LM involved)."""
        node = self.program.node(node_id)
        if node is None:
            raise KeyError(f"no node {node_id!r}; nodes: {', '.join(self.program.node_ids)}")
        return render_messages(node, inputs)

    def evaluate(self, devset: Iterable[Any], metric: Metric, **options: Any) -> EvaluationReport:
        """``desic.evaluate`` of this compiled program (same options: concurrency, rps, ...)."""
        return run_sync(aevaluate(self, devset, metric, **options))

    async def aevaluate(self, devset: Iterable[Any], metric: Metric, **options: Any) -> EvaluationReport:
        return await aevaluate(self, devset, metric, **options)

    def inspect(self) -> str:
        """The node graph and each node's configuration, as text."""
        p = self.program
        lines = [f"pipeline {p.pipeline or self.pipeline.ref}  ({len(p.nodes)} nodes)"]
        m = p.meta
        if m.optimizer:
            score = f"{m.score:.3f} on {m.score_split}" if m.score is not None else "not scored"
            lines.append(f"optimizer {m.optimizer}, score {score}, lm {m.lm.get('model', '?')}")
        for node in p.nodes:
            ins = ", ".join(node.signature.input_names)
            outs = ", ".join(node.signature.output_names)
            lines.append(f"  [{node.id}] {node.strategy}({ins}) -> {outs}; {len(node.demos)} demos")
            first = (node.instructions.splitlines() or [""])[0]
            lines.append(f"      instructions: {first[:100]}")
        if p.edges:
            lines.append("edges:")
            lines.extend(f"  {e.src} --{e.field}--> {e.dst}" for e in p.edges)
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Write the artifact (versioned JSON, atomically: temp file, fsync, rename).

        A store URL with an artifact name (``"sqlite://.desic/desic.db#triage"``, or
        ``#triage@prod`` to tag it) saves the next version there and returns its
        ``ArtifactInfo``; a path returns the ``Path`` written.
        """
        if isinstance(path, str) and "://" in path:
            from .storage._artifacts import save_url

            return save_url(self.program, path)
        target = Path(path)
        data = ir.encode_program(self.program)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return target

    def __repr__(self) -> str:
        return f"<desic.CompiledPipeline {self.pipeline.name} nodes={list(self.program.node_ids)}>"


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


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
        program, stopped_by = await _optimize(opt, task, run.run_id, progress)
        score, split = await _final_score(task, program, stopped_by)
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
        run.finish(program)
    return CompiledPipeline(pipe, program, history=task.history, stopped_by=stopped_by, usage=task.usage)


async def _optimize(
    opt: Optimizer, task: CompileTask, run_id: str, progress: bool | None
) -> tuple[ir.Program, str | None]:
    """Run the optimizer; a budget stop yields the best program so far and its name."""
    if events.active():
        events.emit("run_start", what="compile", run_id=run_id, optimizer=opt.name, seed=task.seed)
    bar = _progress_sink("compile", budget=task.budget) if _want_bar(progress) else None
    if bar is not None:
        bar.start()
    stopped_by: str | None = None
    try:
        with events.listening(bar) if bar is not None else nullcontext():
            try:
                program: ir.Program = await opt.optimize(task)
            except BudgetExceeded as exc:
                stopped_by = exc.budget
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
    if events.active():
        u = task.usage
        events.emit(
            "run_end", what="compile", run_id=run_id, optimizer=opt.name, candidates=len(task.history),
            calls=u.calls, cost=u.cost, seconds=task.meter.elapsed(), stopped_by=stopped_by,
        )
    return program, stopped_by


async def _final_score(
    task: CompileTask, program: ir.Program, stopped_by: str | None
) -> tuple[float | None, str | None]:
    """The program's validation score: from the history when the optimizer scored it there,
    else (valset given, budget left) by evaluating it through the task (memoized)."""
    key = program_key(program)
    for cand in reversed(task.history):
        if cand.split == "val" and cand.score is not None and program_key(cand.program) == key:
            return cand.score, task.val_name
    if task.valset is None or task.metric is None or stopped_by is not None:
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
    cleanly with the best program so far and ``compiled.stopped_by`` names it),
    ``progress`` (a status line on stderr; default: when stderr is a terminal), and the
    optimizer's own options.
    """
    return run_sync(acompile(pipeline, trainset, **options))


def _check_drift(program: ir.Program, source: str) -> None:
    for node in program.nodes:
        if node.fingerprint and node.fingerprint != node.signature.fingerprint:
            raise ArtifactError(
                f"{source} is corrupt or was edited by hand: node {node.id!r} carries fingerprint "
                f"{node.fingerprint} but its signature hashes to {node.signature.fingerprint}"
            )
        sig = registered(node.signature.ref) if node.signature.ref else None
        if sig is not None and sig.spec.fingerprint != node.signature.fingerprint:
            raise drift_error(node.id, node.signature, sig.spec)


def load(path: str | os.PathLike[str], pipeline: Any = None) -> CompiledPipeline:
    """Read an artifact (no code is executed) and bind it.

    ``path`` is a file, or a store URL naming an artifact version:
    ``"sqlite://.desic/desic.db#triage@latest"`` (``@3``, ``@prod``; see ``desic.storage``).

    With ``pipeline`` the artifact is bound to your code and every node's signature is
    checked against it (``ArtifactError`` with a field-level diff on drift). Without it,
    a single-signature artifact runs from the file alone.
    """
    p: str | Path
    if isinstance(path, str) and "://" in path:  # a store: "sqlite://.desic/desic.db#triage@prod"
        from .storage._artifacts import load_url

        program, p = load_url(path)
    else:
        p = Path(path)
        try:
            data = p.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(f"artifact not found: {p}") from None
        except OSError as exc:
            raise ArtifactError(f"cannot read artifact {p}: {exc}") from exc
        program = ir.decode_program(data, source=str(p))
    _check_drift(program, str(p))
    if pipeline is not None:
        return CompiledPipeline(as_pipeline(pipeline), program)
    if len(program.nodes) != 1:
        raise ArtifactError(
            f"{p} holds a pipeline of {len(program.nodes)} nodes; pass your code to run it: "
            f"desic.load({str(p)!r}, pipeline={program.pipeline.rsplit(':', 1)[-1] or 'my_pipeline'})"
        )
    node = program.nodes[0]
    sig: Signature[..., Any] = Signature.from_spec(node.signature, strategy=node.strategy)
    if node.id != node.signature.name:
        sig = sig.named(node.id)
    return CompiledPipeline(as_pipeline(sig), program)

