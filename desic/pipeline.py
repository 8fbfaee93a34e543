"""``@pipeline``: an ordinary Python function (sync or async) that calls signatures.

Running it records every signature call of the run as a node (ids: the signature's name,
``name#2`` for its second call in the same run, or ``sig.named("x")``) and the data
edges observed between them; ``trace`` turns those records into a ``Program``.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, Generic, ParamSpec, TypeVar, overload

from pydantic import TypeAdapter, ValidationError

from . import ir
from ._aio import run_sync
from ._batch import BatchResult, gather_results, items_of
from .errors import DataError, SignatureError
from .runtime import RunState, current_run, default_concurrency, run_scope
from .signature import Signature

__all__ = ["Pipeline", "SignaturePipeline", "as_pipeline", "observed_program", "pipeline", "program_from_runs"]

P = ParamSpec("P")
R = TypeVar("R")
R_co = TypeVar("R_co", covariant=True)  # a pipeline of an async def returns a coroutine
Q = ParamSpec("Q")
T = TypeVar("T")


class Pipeline(Generic[P, R_co]):
    """A traced pipeline. Call it like the function it wraps.

    ``signature`` is None for a ``@pipeline``; a ``SignaturePipeline`` (a bare signature
    used as a pipeline) sets it, and the engine then runs the signature straight on its
    event loop instead of in a worker thread.
    """

    signature: Signature[..., Any] | None = None

    def __init__(self, fn: Callable[P, R_co], *, name: str | None = None):
        if not callable(fn) or not isinstance(getattr(fn, "__qualname__", None), str):
            raise SignatureError(
                f"@desic.pipeline needs a function (def or async def), got {fn!r:.60} "
                f"({type(fn).__name__}); decorate the function itself: @desic.pipeline above its def"
            )
        if name is not None and not isinstance(name, str):
            raise SignatureError(f"@desic.pipeline(name=...) takes a string, got {name!r:.60}")
        self.fn = fn
        self.name = name or fn.__name__
        self.is_async = inspect.iscoroutinefunction(fn)
        self.ref = f"{fn.__module__}:{fn.__qualname__}"
        self.__doc__ = fn.__doc__
        self.__name__ = fn.__name__
        self.__qualname__ = fn.__qualname__
        self.__module__ = fn.__module__
        self.__wrapped__ = fn
        params = inspect.signature(fn).parameters
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:
            raise SignatureError(f"@pipeline {fn.__qualname__}: cannot resolve annotations: {exc}") from exc
        self.inputs: dict[str, tuple[TypeAdapter[Any] | None, bool]] = {}
        for pname, param in params.items():
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise SignatureError(
                    f"@pipeline {fn.__qualname__}: parameter {pname!r} must be a named parameter, "
                    "not *args/**kwargs (trainset rows are matched by name)"
                )
            adapter = TypeAdapter(hints[pname]) if pname in hints else None
            self.inputs[pname] = (adapter, param.default is param.empty)
        self._signature = inspect.signature(fn)
        # The declared return type (None when not annotated): what labels are checked against.
        self.output_type: Any = hints.get("return")
        # Rebuilds an output from JSON (recorded evaluations of a resumed run).
        self.output_adapter: TypeAdapter[Any] | None = (
            TypeAdapter(hints["return"]) if "return" in hints else None
        )

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def validate_inputs(self, row: dict[str, Any], index: int | None = None) -> dict[str, Any]:
        """The pipeline's inputs from ``row``, validated; ``DataError`` names row and field."""
        where = f"row {index}" if index is not None else "input"
        out: dict[str, Any] = {}
        for name, (adapter, required) in self.inputs.items():
            if name not in row:
                if required:
                    raise DataError(
                        f"{where}: missing field {name!r} (pipeline {self.name} takes "
                        f"{', '.join(self.inputs)}; the row has {', '.join(row) or 'no fields'})",
                        row=index,
                        field=name,
                    )
                continue
            value = row[name]
            if adapter is not None:
                try:
                    value = adapter.validate_python(value)
                except ValidationError as exc:
                    first = exc.errors()[0]["msg"] if exc.errors() else str(exc)
                    raise DataError(
                        f"{where}: field {name!r} = {value!r:.60} is invalid: {first}",
                        row=index,
                        field=name,
                    ) from exc
            out[name] = value
        return out

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        bound = self._signature.bind(*args, **kwargs)
        return dict(bound.arguments)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R_co:
        if current_run() is not None:  # nested inside another pipeline: same run
            return self.fn(*args, **kwargs)
        if self.is_async:
            return self._acall(RunState(), args, kwargs)  # type: ignore[return-value]
        with run_scope(RunState()):
            return self.fn(*args, **kwargs)

    async def _acall(self, state: RunState, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        with run_scope(state):
            return await self.fn(*args, **kwargs)  # type: ignore[misc]

    def run(self, inputs: dict[str, Any], state: RunState) -> Any:
        """Run once on ``inputs`` within ``state`` (sync; an async pipeline runs to completion)."""
        if self.is_async:
            from ._aio import run_sync

            return run_sync(self._acall(state, (), inputs))
        fn: Callable[..., Any] = self.fn
        with run_scope(state):
            return fn(**inputs)

    async def arun(self, inputs: dict[str, Any], state: RunState) -> Any:
        """Run once on ``inputs`` within ``state`` from async code (a synchronous pipeline
        runs on one of desic's worker threads)."""
        if self.is_async:
            return await self._acall(state, (), inputs)
        import contextvars

        from ._aio import workers

        return await workers().submit(contextvars.copy_context().run, self.run, inputs, state)

    # An ``async def`` pipeline's R is a coroutine: its batch results hold what it returns.
    @overload
    def batch(
        self: Pipeline[Q, Coroutine[Any, Any, T]],
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int | None = None,
    ) -> list[BatchResult[T]]: ...
    @overload
    def batch(
        self: Pipeline[Q, T], inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[T]]: ...
    def batch(self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None) -> list[BatchResult[Any]]:
        """Run the pipeline on every dict of inputs, ``concurrency`` runs at a time (default:
        ``desic.context(max_concurrency=...)``, ``$DESIC_MAX_CONCURRENCY``, else 8).

        One ``BatchResult`` per item, in input order: ``.output``, or the ``.error`` the
        item raised (a ``DataError`` for bad inputs, an LM failure, ...); one failure never
        stops the others.
        """
        return run_sync(self.abatch(inputs, concurrency=concurrency))

    @overload
    async def abatch(
        self: Pipeline[Q, Coroutine[Any, Any, T]],
        inputs: Iterable[Mapping[str, Any]],
        *,
        concurrency: int | None = None,
    ) -> list[BatchResult[T]]: ...
    @overload
    async def abatch(
        self: Pipeline[Q, T], inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[T]]: ...
    async def abatch(
        self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[Any]]:
        """The async form of :meth:`batch`."""
        return await self.run_batch(inputs, None, concurrency)

    async def run_batch(
        self, inputs: Iterable[Mapping[str, Any]], program: ir.Program | None, concurrency: int | None
    ) -> list[BatchResult[Any]]:
        """Every item run as its own run bound to ``program`` (the batch front of pipelines
        and compiled pipelines)."""
        items = items_of(inputs, self.name)

        async def one(item: dict[str, Any]) -> Any:
            return await self.arun(self.validate_inputs(self.bind((), item)), RunState(program=program))

        return await gather_results(items, one, default_concurrency(concurrency))

    def __repr__(self) -> str:
        return f"<desic.Pipeline {self.name}({', '.join(self.inputs)})>"


@overload
def pipeline(fn: Callable[P, R], /) -> Pipeline[P, R]: ...
@overload
def pipeline(*, name: str | None = None) -> Callable[[Callable[P, R]], Pipeline[P, R]]: ...
def pipeline(
    fn: Callable[P, R] | None = None, /, *, name: str | None = None
) -> Pipeline[P, R] | Callable[[Callable[P, R]], Pipeline[P, R]]:
    """Declare a pipeline (bare ``@pipeline`` or ``@pipeline(name=...)``)."""
    if fn is not None:
        return Pipeline(fn)

    def decorate(f: Callable[P, R]) -> Pipeline[P, R]:
        return Pipeline(f, name=name)

    return decorate


class SignaturePipeline(Pipeline[..., Any]):
    """A bare signature used as a pipeline (``desic.evaluate(sig, ...)``, a loaded
    single-node artifact): one node, inputs and positional order as the signature's."""

    def __init__(self, sig: Signature[..., Any]) -> None:
        def single(*args: Any, **inputs: Any) -> Any:
            return sig(*args, **inputs)

        single.__name__ = single.__qualname__ = sig.spec.name
        single.__module__ = sig.__module__
        single.__annotations__ = {}
        # Positional like the signature itself, until a required input follows a
        # defaulted one (legal only for keyword-only parameters).
        params: list[inspect.Parameter] = []
        kind: inspect._ParameterKind = inspect.Parameter.POSITIONAL_OR_KEYWORD
        for f in sig.spec.inputs:
            if f.required and params and params[-1].default is not inspect.Parameter.empty:
                kind = inspect.Parameter.KEYWORD_ONLY
            default = inspect.Parameter.empty if f.required else f.default
            params.append(inspect.Parameter(f.name, kind, default=default))
        single.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
        super().__init__(single, name=sig.spec.name)
        self.signature = sig
        self.ref = sig.spec.ref
        field = sig.spec.output_field
        self.output_type = sig.output_model if field is None else sig.output_model.model_fields[field].annotation
        if field is None:
            self.output_adapter = TypeAdapter(sig.output_model)


def as_pipeline(obj: Any) -> Pipeline[..., Any]:
    """A pipeline from a pipeline, a compiled pipeline, or a bare signature."""
    if isinstance(obj, Pipeline):
        return obj
    inner = getattr(obj, "pipeline", None)
    if isinstance(inner, Pipeline):
        return inner
    if isinstance(obj, Signature):
        return SignaturePipeline(obj)
    raise _NotAPipeline(
        f"expected a @desic.pipeline, a @desic.signature or a compiled pipeline, got {obj!r:.80} "
        f"({type(obj).__name__})"
    )


class _NotAPipeline(SignatureError, TypeError):
    """Not something desic can run: a ``SignatureError``, and still the ``TypeError`` it was."""


def program_from_runs(pipe: Pipeline[..., Any], runs: Iterable[RunState], base: ir.Program | None = None) -> ir.Program:
    """The program observed over ``runs``: nodes in order of first appearance, all edges."""
    nodes: dict[str, ir.Node] = {}
    edges: set[tuple[str, str, str]] = set()
    for state in runs:
        for node_id, node in state.nodes_seen.items():
            nodes.setdefault(node_id, node)
        edges.update(state.observed_edges())
    return observed_program(pipe, nodes, edges, base)


def observed_program(
    pipe: Pipeline[..., Any],
    nodes: dict[str, ir.Node],
    edges: Iterable[tuple[str, str, str]],
    base: ir.Program | None = None,
) -> ir.Program:
    """The program of nodes and edges seen in runs (``base``'s first, kept as they are)."""
    merged: dict[str, ir.Node] = {}
    if base is not None:
        merged.update((n.id, n) for n in base.nodes)
    for node_id, node in nodes.items():
        merged.setdefault(node_id, node)
    all_edges = {(e.src, e.dst, e.field) for e in (base.edges if base is not None else ())}
    all_edges.update(edges)
    return ir.Program(
        pipeline=pipe.ref,
        nodes=tuple(merged.values()),
        edges=tuple(ir.Edge(s, d, f) for s, d, f in sorted(all_edges)),
        meta=base.meta if base is not None else ir.ProgramMeta(),
    )
