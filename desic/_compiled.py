"""``CompiledPipeline`` and ``desic.load``: running and loading artifacts, nothing more.

Kept apart from ``desic.compile`` so that serving an artifact (``import desic;
desic.load(path)``) never imports the optimizers, the evaluator or the budget machinery:
only the IR, the runtime and what a program needs to run. ``desic.compile`` re-exports
both names.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator, Callable, Coroutine, Iterable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, ParamSpec, TypedDict, TypeVar, Unpack, overload

from . import ir
from ._aio import home_loop, run_sync
from ._batch import BatchResult
from ._json import to_jsonable
from ._text import plural
from .errors import ArtifactError, SignatureError, StorageError
from .lm import Message, Usage
from .pipeline import Pipeline, as_pipeline
from .render import render_messages
from .runtime import (
    CaptureStop,
    Partial,
    RunState,
    check_tools,
    drift_error,
    settings,
    sync_stream,
)
from .signature import Signature, registered

if TYPE_CHECKING:
    from .budget import Budget
    from .evaluate import EvaluationReport
    from .lm import LM
    from .metrics import Metric

__all__ = ["CompiledPipeline", "load"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)  # a pipeline of an async def returns a coroutine
Q = ParamSpec("Q")
T = TypeVar("T")


class EvaluateOptions(TypedDict, total=False):
    """The options of ``compiled.evaluate`` / ``aevaluate``: ``desic.evaluate``'s own."""

    concurrency: int | None
    rps: float | None
    burst: int | None
    max_errors: int | None
    budget: Budget | None
    lm: LM | None
    progress: bool | None


class CompiledPipeline(Generic[P, R_co]):
    """A pipeline bound to an optimized ``Program``. Call it like the original.

    Typed like the pipeline it came from: ``compiled(...)`` takes the pipeline's
    parameters and returns what it returns; ``await compiled.acall(...)`` is the async
    form, ``compiled.batch([...])`` / ``await compiled.abatch([...])`` run many inputs.
    """

    def __init__(
        self,
        pipeline: Pipeline[P, R_co],
        program: ir.Program,
        *,
        history: list[Any] | None = None,
        stopped_by: str | None = None,
        usage: Usage | None = None,
        errors: int = 0,
    ):
        self.pipeline = pipeline
        self.program = program
        # Every candidate the optimizer scored, in evaluation order (``Candidate``s).
        self.history = history or []
        # The budget that stopped the compile early ("max_calls", ...), or None.
        self.stopped_by = stopped_by
        # LM usage of the compile itself (replayed records of a resumed run cost nothing).
        self.usage = usage if usage is not None else Usage()
        # Evaluations of the compile that failed after their LM call's retries (not scored).
        self.errors = errors

    @property
    def score(self) -> float | None:
        return self.program.meta.score

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        inputs = self.pipeline.bind(args, kwargs)
        state = RunState(program=self.program)
        if self.pipeline.is_async:
            return self.pipeline.arun(inputs, state)  # type: ignore[return-value]  # R is the coroutine
        result: R_co = self.pipeline.run(inputs, state)
        return result

    # An ``async def`` pipeline's R is a coroutine: ``acall`` and the batches give what it returns.
    @overload
    async def acall(
        self: CompiledPipeline[Q, Coroutine[Any, Any, T]], *args: Q.args, **kwargs: Q.kwargs
    ) -> T: ...
    @overload
    async def acall(self: CompiledPipeline[Q, T], *args: Q.args, **kwargs: Q.kwargs) -> T: ...
    async def acall(self, *args: Any, **kwargs: Any) -> Any:
        """The async form of calling: ``await compiled.acall(...)`` (a synchronous
        pipeline runs on one of desic's worker threads)."""
        inputs = self.pipeline.bind(args, kwargs)
        return await self.pipeline.arun(inputs, RunState(program=self.program))

    @overload
    def batch(
        self: CompiledPipeline[Q, Coroutine[Any, Any, T]],
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int | None = None,
    ) -> list[BatchResult[T]]: ...
    @overload
    def batch(
        self: CompiledPipeline[Q, T], inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[T]]: ...
    def batch(self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None) -> list[BatchResult[Any]]:
        """Run every dict of inputs, ``concurrency`` at a time; one ``BatchResult`` per item
        in input order (its output or its error; one failure never stops the others)."""
        return run_sync(self.pipeline.run_batch(inputs, self.program, concurrency))

    @overload
    async def abatch(
        self: CompiledPipeline[Q, Coroutine[Any, Any, T]],
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int | None = None,
    ) -> list[BatchResult[T]]: ...
    @overload
    async def abatch(
        self: CompiledPipeline[Q, T], inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[T]]: ...
    async def abatch(
        self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[Any]]:
        """The async form of :meth:`batch`."""
        return await self.pipeline.run_batch(inputs, self.program, concurrency)

    def stream(self, *args: Any, **kwargs: Any) -> Iterator[Partial[Any]]:
        """Run the pipeline, streaming its last node: ``desic.Partial`` items of that node's
        output as it is written, then one with ``done=True`` and the pipeline's output."""
        return sync_stream(self.astream(*args, **kwargs))

    async def astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[Partial[Any]]:
        """``stream`` for async code: ``async for partial in compiled.astream(...)``."""
        inputs = self.pipeline.bind(args, kwargs)
        state = RunState(program=self.program)
        target = self.last_node()
        queue: asyncio.Queue[Partial[Any]] = asyncio.Queue()
        if target is not None:
            state.stream = (target, queue.put_nowait)
        loop = asyncio.get_running_loop()
        token = home_loop.set(loop)  # a synchronous pipeline's calls come back to this loop
        try:
            run = asyncio.ensure_future(self.pipeline.arun(inputs, state))
        finally:
            home_loop.reset(token)
        try:
            while not run.done():
                getter = asyncio.ensure_future(queue.get())
                await asyncio.wait((getter, run), return_when=asyncio.FIRST_COMPLETED)
                if getter.done():
                    yield getter.result()
                else:
                    getter.cancel()
            while not queue.empty():
                yield queue.get_nowait()
            result = run.result()
        finally:
            if not run.done():
                run.cancel()
                await asyncio.gather(run, return_exceptions=True)
        yield Partial(result, _as_data(result), done=True)

    def last_node(self) -> str | None:
        """The node ``stream`` streams: the last of the program's nodes that feeds no other
        (a bare signature's own node before it is compiled). None for a multi-node pipeline
        that was never compiled or traced: its stream is the final item alone."""
        feeding = {e.src for e in self.program.edges}
        ends = [n.id for n in self.program.nodes if n.id not in feeding]
        if ends:
            return ends[-1]
        sig = self.pipeline.signature
        return (sig.node_name or sig.spec.name) if sig is not None else None

    def prompts(self, **inputs: Any) -> dict[str, list[Message]]:
        """The exact messages each node sends for ``inputs``, by node id.

        With an LM in ``desic.context`` the pipeline really runs (later nodes need earlier
        outputs); without one, rendering stops after the first node's prompt. A node that
        answers as an ensemble (``compile(..., ensemble=k)``) sends one prompt per member:
        the others follow its own under ``"<node id>/variant-<i>"`` (i from 1).
        """
        inputs = self.pipeline.validate_inputs(self.pipeline.bind((), inputs))
        has_lm = settings().lm is not None
        state = RunState(program=self.program, trace=[], capture_only=not has_lm)
        try:
            self.pipeline.run(inputs, state)
        except CaptureStop:
            pass
        out: dict[str, list[Message]] = {}
        for entry in state.trace or []:
            if entry.kind != "lm" or entry.node_id in out:
                continue
            out[entry.node_id] = entry.messages
            for i, messages in enumerate(entry.members, 1):
                out[f"{entry.node_id}/variant-{i}"] = messages
        return out

    def render(self, node_id: str, **inputs: Any) -> list[Message]:
        """The messages of one node for inputs given directly (no LM involved)."""
        node = self.program.node(node_id)
        if node is None:
            raise KeyError(f"no node {node_id!r}; nodes: {', '.join(self.program.node_ids)}")
        return render_messages(node, inputs)

    def evaluate(
        self, devset: Iterable[Any], metric: Metric | str, **options: Unpack[EvaluateOptions]
    ) -> EvaluationReport:
        """``desic.evaluate`` of this compiled program (same options: concurrency, rps, ...)."""
        return run_sync(self.aevaluate(devset, metric, **options))

    async def aevaluate(
        self, devset: Iterable[Any], metric: Metric | str, **options: Unpack[EvaluateOptions]
    ) -> EvaluationReport:
        from .evaluate import aevaluate

        return await aevaluate(self, devset, metric, **options)

    def inspect(self) -> str:
        """The node graph and each node's configuration, as text."""
        p = self.program
        lines = [f"pipeline {p.pipeline or self.pipeline.ref}  ({plural(len(p.nodes), 'node')})"]
        m = p.meta
        if m.optimizer:
            if m.score is not None:
                score = f"{m.score:.3f} on {m.score_split}"
            elif self.stopped_by is not None:
                score = f"not scored (the {self.stopped_by} budget ran out first)"
            else:
                score = (
                    f"not scored ({m.optimizer} scored no validation split and no valset= was given; "
                    "compiled.evaluate(devset, metric) scores it)"
                )
            lines.append(f"optimizer {m.optimizer}, score {score}, lm {m.lm.get('model', '?')}")
        for node in p.nodes:
            ins = ", ".join(node.signature.input_names)
            outs = ", ".join(node.signature.output_names)
            per_input = node.select is not None and node.select.per_input
            demos = node.demos_text if per_input else plural(len(node.demos), 'demo')
            lines.append(f"  [{node.id}] {node.strategy}({ins}) -> {outs}; {demos}")
            first = (node.instructions.splitlines() or [""])[0]
            lines.append(f"      instructions: {first[:100]}")
        if p.edges:
            lines.append("edges:")
            lines.extend(f"  {e.src} --{e.field}--> {e.dst}" for e in p.edges)
        return "\n".join(lines)

    def save(self, path: str | os.PathLike[str]) -> Any:
        """Write the artifact (versioned JSON, atomically: temp file, fsync, rename, directory
        fsync); a path that cannot be written raises ``StorageError`` naming it.

        A store URL with an artifact name (``"sqlite://.desic/desic.db#triage"``, or
        ``#triage@prod`` to tag it) saves the next version there and returns its
        ``ArtifactInfo``; a path returns the ``Path`` written.
        """
        if isinstance(path, str) and "://" in path:
            from .storage import save_url

            return save_url(self.program, path)
        from .storage import atomic_write

        target = Path(path)
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create {target.parent} for {target}: {exc.strerror or exc}") from exc
        atomic_write(target, ir.encode_program(self.program), sync_dir=True)
        return target

    def __repr__(self) -> str:
        return f"<desic.CompiledPipeline {self.pipeline.name} nodes={list(self.program.node_ids)}>"


def _as_data(value: Any) -> dict[str, Any]:
    data = to_jsonable(value)
    return data if isinstance(data, dict) else {"output": data}


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
        if sig is not None and node.strategy == "react":
            check_tools(node, sig)  # bound to the code's tools by name: same names and arguments


@overload
def load(path: str | os.PathLike[str], pipeline: None = None) -> CompiledPipeline[..., Any]: ...
@overload
def load(
    path: str | os.PathLike[str], pipeline: Callable[P, R]
) -> CompiledPipeline[P, R]: ...
def load(path: str | os.PathLike[str], pipeline: Any = None) -> CompiledPipeline[..., Any]:
    """Read an artifact (no code is executed) and bind it.

    ``path`` is a file, or a store URL naming an artifact version:
    ``"sqlite://.desic/desic.db#triage@latest"`` (``@3``, ``@prod``; see ``desic.storage``).

    With ``pipeline`` the artifact is bound to your code and every node's signature is
    checked against it (``ArtifactError`` with a field-level diff on drift). Without it,
    a single-signature artifact runs from the file alone.
    """
    p: str | Path
    if isinstance(path, str) and "://" in path:  # a store: "sqlite://.desic/desic.db#triage@prod"
        from .storage import load_url

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
            f"{p} holds a pipeline of {plural(len(program.nodes), 'node')}; pass your code to run it: "
            f"desic.load({str(p)!r}, pipeline={program.pipeline.rsplit(':', 1)[-1] or 'my_pipeline'})"
        )
    node = program.nodes[0]
    if node.tools:
        names = ", ".join(t.name for t in node.tools)
        raise ArtifactError(
            f"{p}: node {node.id!r} is an agent whose tools ({names}) are code, which an artifact never "
            f"holds; load it with your code: desic.load({str(p)!r}, pipeline=<your @signature or @pipeline>)"
        )
    try:
        sig: Signature[..., Any] = Signature.from_spec(node.signature, strategy=node.strategy)
        if node.id != node.signature.name:
            sig = sig.named(node.id)
        return CompiledPipeline(as_pipeline(sig), program)
    except ArtifactError:
        raise
    except (SignatureError, TypeError, ValueError) as exc:  # the artifact is data: say what failed
        raise ArtifactError(f"{p}: node {node.id!r} cannot run from the artifact alone: {exc}") from exc

