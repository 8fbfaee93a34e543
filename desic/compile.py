"""``desic.compile`` and ``CompiledPipeline``; ``desic.load`` for artifacts."""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
import uuid
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from . import ir
from ._utils import run_sync
from ._version import __version__
from .data import dataset_fingerprint, to_examples
from .errors import ArtifactError
from .evaluate import EvaluationReport, aevaluate
from .lm import LM
from .metrics import Metric
from .optimize import CompileTask, MemoryRecorder, Optimizer, RunRecorder, resolve
from .pipeline import Pipeline, as_pipeline
from .render import render_messages
from .runtime import RunState, _Capture, context, current_lm, drift_error, settings
from .signature import Signature, registered

__all__ = ["CompiledPipeline", "compile", "acompile", "load"]


class CompiledPipeline:
    """A pipeline bound to an optimized ``Program``. Call it like the original."""

    def __init__(self, pipeline: Pipeline[..., Any], program: ir.Program, *, history: list[Any] | None = None):
        self.pipeline = pipeline
        self.program = program
        self.history = history or []

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

    def evaluate(self, devset: Iterable[Any], metric: Metric, *, concurrency: int = 8) -> EvaluationReport:
        return run_sync(aevaluate(self, devset, metric, concurrency=concurrency))

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

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the artifact (versioned JSON, atomically: temp file, fsync, rename)."""
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
    concurrency: int = 8,
    recorder: RunRecorder | None = None,
    **optimizer_options: Any,
) -> CompiledPipeline:
    from .lm import lm as make_lm

    pipe = as_pipeline(pipeline)
    train = to_examples(pipe, trainset, what="trainset")  # every row checked before any LM call
    val = to_examples(pipe, valset, what="valset") if valset is not None else None
    opt = resolve(optimizer, **optimizer_options)
    student = make_lm(lm) if isinstance(lm, str) else lm
    teacher = make_lm(teacher_lm) if isinstance(teacher_lm, str) else teacher_lm
    with context(**({"lm": student} if student is not None else {})):
        active = current_lm()
        task = CompileTask(
            pipeline=pipe,
            trainset=train,
            metric=metric,
            lm=active,
            teacher_lm=teacher,
            valset=val,
            seed=seed,
            concurrency=concurrency,
            recorder=recorder if recorder is not None else MemoryRecorder(),
        )
        program: ir.Program = await opt.optimize(task)
        score = split = None
        if val is not None and metric is not None:
            report = await aevaluate(pipe, val, metric, program=program, lm=active, concurrency=concurrency)
            score, split = report.score, "valset"
        meta = ir.ProgramMeta(
            desic_version=__version__,
            created_at=_now(),
            lm=active.describe(),
            optimizer=opt.name,
            optimizer_config={**opt.config(), "seed": seed},
            score=score,
            score_split=split,
            trainset_fingerprint=dataset_fingerprint(train),
            run_id=uuid.uuid4().hex[:12],
        )
        program = program.replace(meta=meta, pipeline=pipe.ref)
    return CompiledPipeline(pipe, program, history=task.history)


def compile(pipeline: Any, trainset: Iterable[Any], **options: Any) -> CompiledPipeline:
    """Optimize ``pipeline`` on ``trainset`` and return it bound to the best program.

    Options: ``metric``, ``optimizer`` (a registered name or an instance), ``valset``,
    ``lm``, ``teacher_lm``, ``seed``, ``concurrency``, ``recorder`` (where evaluations are
    recorded; a run given the recorder of an interrupted one resumes it without repeating
    finished evaluations), and the optimizer's own options.
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

    With ``pipeline`` the artifact is bound to your code and every node's signature is
    checked against it (``ArtifactError`` with a field-level diff on drift). Without it,
    a single-signature artifact runs from the file alone.
    """
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

