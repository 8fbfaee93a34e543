"""Executing signatures and pipelines: scoped settings and per-run state over contextvars.

Nothing here is a global mutable singleton: ``context(...)`` sets values for the current
thread or task only, and every pipeline run gets its own ``RunState`` (node counters,
the bound program, the trace being recorded, usage).
"""

from __future__ import annotations

import asyncio
import contextvars
import math
import os
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec
from pydantic import BaseModel

from . import events, ir, sampling
from ._aio import run_sync, running_loop
from ._json import UNSET, to_jsonable
from .errors import ArtifactError, ConfigError, LMError
from .lm import (
    LM,
    LMParams,
    LMRequest,
    LMResponse,
    Message,
    Usage,
    counting_embeddings,
    default_lm,
    stream_of,
    supports_images,
)
from .render import default_template, match_text, query_vector, render_messages

if TYPE_CHECKING:
    from .signature import Signature

__all__ = [
    "CaptureStop",
    "Partial",
    "RunState",
    "Settings",
    "TraceEntry",
    "context",
    "current_lm",
    "default_concurrency",
    "default_node",
    "drift_error",
    "run_isolated",
    "run_scope",
    "settings",
    "stream_signature",
    "sync_stream",
]

R = TypeVar("R")


@dataclass(frozen=True)
class Settings:
    lm: LM | None = None
    storage: Any = None
    max_concurrency: int | None = None


_settings: contextvars.ContextVar[Settings] = contextvars.ContextVar(
    "desic_settings", default=Settings()  # noqa: B039 - Settings is frozen
)


def settings() -> Settings:
    return _settings.get()


@contextmanager
def context(*, lm: Any = UNSET, storage: Any = UNSET, max_concurrency: Any = UNSET) -> Iterator[Settings]:
    """Scope settings to this block (this thread/task only); nested blocks override.

    ``lm`` takes an LM object or a spec string such as ``"local"`` or ``"openai:gpt-4o-mini"``.
    """
    from .lm import lm as make_lm

    changes: dict[str, Any] = {}
    if lm is not UNSET:
        changes["lm"] = make_lm(lm) if isinstance(lm, str) else lm
    if storage is not UNSET:
        changes["storage"] = storage
    if max_concurrency is not UNSET:
        changes["max_concurrency"] = max_concurrency
    new = replace(_settings.get(), **changes)
    token = _settings.set(new)
    try:
        yield new
    finally:
        _settings.reset(token)


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


def current_lm() -> LM:
    return _settings.get().lm or default_lm()


@dataclass
class TraceEntry:
    node_id: str
    inputs: dict[str, Any]
    output: dict[str, Any] | None  # the full LM response as JSON data (reasoning included)
    messages: list[Message]
    error: str | None = None
    kind: str = "lm"  # "lm": a signature's call; "retrieve": a retriever's search (no messages)
    members: list[list[Message]] = field(default_factory=list)  # an ensemble's other prompts


_NO_USAGE = Usage()


class CaptureStop(Exception):
    """Raised to stop a run after the prompt of a node was captured and no LM is available."""


_lock = threading.Lock()  # guards every run's bookkeeping (short, never nested)


class RunState:
    """The state of one pipeline run.

    Public: ``program``, ``trace``, ``lm``, ``capture_only``, ``check_drift``, ``usage``,
    ``node_usage`` (usage by node id), ``nodes_seen``, ``edges``. An optimizer keeps
    thousands of finished runs, so the containers most runs never fill are made on first
    use and the bookkeeping only a running pipeline needs is dropped by :meth:`finish`.
    """

    __slots__ = (
        "_checked",
        "_counters",
        "_edges",
        "_node_usage",
        "_origins",
        "cancelled",
        "capture_only",
        "check_drift",
        "lm",
        "nodes_seen",
        "program",
        "stream",
        "trace",
        "usage",
    )

    def __init__(
        self,
        program: ir.Program | None = None,
        trace: list[TraceEntry] | None = None,
        lm: LM | None = None,
        capture_only: bool = False,
        check_drift: bool = True,
        usage: Usage = _NO_USAGE,
    ) -> None:
        self.program = program
        self.trace = trace
        self.lm = lm
        self.capture_only = capture_only
        self.check_drift = check_drift
        self.usage = usage
        self.nodes_seen: dict[str, ir.Node] = {}
        self.cancelled = False  # set when the run was cancelled: it makes no further LM call
        # (node id, sink): that node's call streams, handing each partial to the sink
        self.stream: tuple[str, Any] | None = None
        self._node_usage: dict[str, Usage] | None = None
        self._edges: set[tuple[str, str, str]] | None = None
        self._counters: dict[str, int] | None = None
        self._origins: dict[int, tuple[str, Any]] | None = None
        self._checked: set[str] | None = None

    def __repr__(self) -> str:
        return f"RunState(nodes_seen={list(self.nodes_seen)}, usage={self.usage!r})"

    @property
    def node_usage(self) -> dict[str, Usage]:
        """The run's usage by node id."""
        if self._node_usage is None:
            self._node_usage = {}
        return self._node_usage

    @property
    def edges(self) -> set[tuple[str, str, str]]:
        """The data edges observed: ``(source node, destination node, input field)``."""
        if self._edges is None:
            self._edges = set()
        return self._edges

    @edges.setter
    def edges(self, value: set[tuple[str, str, str]]) -> None:
        self._edges = value

    def observed_edges(self) -> set[tuple[str, str, str]] | tuple[()]:
        """``edges`` without making an empty set for a run that has none."""
        return self._edges if self._edges is not None else ()

    def finish(self) -> None:
        """Drop what only a running pipeline needs (node counters, output origins, drift
        checks); called once the run is over. A later call in this state starts over."""
        self._counters = self._origins = self._checked = None

    def next_id(self, sig: Signature[..., Any]) -> str:
        if sig.node_name is not None:
            return sig.node_name
        return self.next_name(sig.spec.name)

    def next_name(self, name: str) -> str:
        """``name`` for its first use in this run, then ``name#2``, ``name#3``, ..."""
        with _lock:
            counters = self._counters
            if counters is None:
                counters = self._counters = {}
            n = counters.get(name, 0) + 1
            counters[name] = n
        return name if n == 1 else f"{name}#{n}"

    def note_output(self, node_id: str, value: Any) -> None:
        """Remember where output objects came from, to observe data edges."""
        items = [value]
        if hasattr(type(value), "model_fields"):
            items.extend(getattr(value, name) for name in type(value).model_fields)
        with _lock:
            origins = self._origins
            if origins is None:
                origins = self._origins = {}
            for item in items:
                if isinstance(item, (bool, int, float, type(None))):
                    continue  # small immutables are shared objects; identity means nothing
                origins[id(item)] = (node_id, item)  # keep ``item`` alive: ids stay unique

    def note_inputs(self, node_id: str, inputs: dict[str, Any]) -> None:
        origins = self._origins
        if origins is None:
            return
        with _lock:
            for name, value in inputs.items():
                origin = origins.get(id(value))
                if origin is not None and origin[1] is value and origin[0] != node_id:
                    self.edges.add((origin[0], node_id, name))

    def add_usage(self, usage: Usage, node_id: str | None = None) -> None:
        with _lock:
            self.usage = self.usage + usage
            if node_id is not None:
                by_node = self.node_usage
                before = by_node.get(node_id)
                by_node[node_id] = usage if before is None else before + usage

    def checked(self, node_id: str) -> bool:
        return self._checked is not None and node_id in self._checked

    def mark_checked(self, node_id: str) -> None:
        with _lock:
            if self._checked is None:
                self._checked = set()
            self._checked.add(node_id)


_run: contextvars.ContextVar[RunState | None] = contextvars.ContextVar("desic_run", default=None)


def current_run() -> RunState | None:
    return _run.get()


class run_scope:  # lower case: it replaced a context-manager function of this name
    """``with run_scope(state):`` runs the block as part of ``state``'s run (this thread/task)."""

    __slots__ = ("_token", "state")

    def __init__(self, state: RunState) -> None:
        self.state = state

    def __enter__(self) -> RunState:
        self._token = _run.set(self.state)
        return self.state

    def __exit__(self, *exc: object) -> None:
        _run.reset(self._token)


_default_nodes: dict[tuple[Any, ...], ir.Node] = {}


def default_node(sig: Signature[..., Any], node_id: str) -> ir.Node:
    """The node a signature runs as when no program configures it.

    Made once per (signature ref and fingerprint, strategy, node id) and kept here: the
    node is immutable and the same for every signature object of that spec.
    """
    plan = sig.sampling.to_ir() if sig.sampling is not None else None
    key: tuple[Any, ...] = (sig.spec.ref, sig.fingerprint, sig.strategy, node_id, plan)
    if sig.tools:  # an agent: its tools and step limit make the node too
        key += (tuple(t.key for t in sig.tools), sig.max_steps)
    cached = _default_nodes.get(key)
    if cached is not None:
        return cached
    spec = sig.spec
    node = ir.Node(
        id=node_id,
        signature=spec,
        strategy=sig.strategy,
        instructions=spec.instructions,
        template=default_template(sig.strategy),
        fingerprint=sig.fingerprint,
        sampling=plan,
        tools=tuple(t.spec for t in sig.tools),
        max_steps=sig.max_steps,
    )
    if len(_default_nodes) >= 4096:
        _default_nodes.clear()
    _default_nodes[key] = node
    return node


def _node_for(sig: Signature[..., Any], node_id: str, state: RunState | None) -> ir.Node:
    node = state.program.node(node_id) if state is not None and state.program is not None else None
    if node is None:
        return default_node(sig, node_id)
    if state is not None and state.check_drift and not state.checked(node_id):
        if node.fingerprint != sig.fingerprint and node.signature.fingerprint != sig.fingerprint:
            raise drift_error(node_id, node.signature, sig.spec)
        if node.strategy == "react" or sig.tools:
            check_tools(node, sig)
        state.mark_checked(node_id)
    return node


def drift_error(node_id: str, old: ir.SignatureSpec, new: ir.SignatureSpec) -> ArtifactError:
    diff = "\n".join(f"  - {line}" for line in ir.spec_diff(old, new)) or "  - (fingerprint differs)"
    return ArtifactError(
        f"node {node_id!r}: the signature {new.name!r} changed since the artifact was compiled:\n"
        f"{diff}\nrecompile the pipeline (desic.compile) or restore the old signature"
    )


def check_tools(node: ir.Node, sig: Signature[..., Any]) -> None:
    """``ArtifactError`` with a diff when the artifact's tools are not the code's (names and
    argument schemas; descriptions are the optimizer's to rewrite)."""
    diff = ir.tools_diff(node.tools, tuple(t.spec for t in sig.tools))
    if diff:
        lines = "\n".join(f"  - {line}" for line in diff)
        raise ArtifactError(
            f"node {node.id!r}: the tools of {sig.spec.name!r} changed since the artifact was compiled:\n"
            f"{lines}\nrecompile the pipeline (desic.compile) or restore the old tools"
        )


def prepare(sig: Signature[..., Any], inputs: dict[str, Any]) -> tuple[ir.Node, list[Message], RunState | None]:
    state = _run.get()
    node_id = state.next_id(sig) if state is not None else (sig.node_name or sig.spec.name)
    node = _node_for(sig, node_id, state)
    if _by_embeddings(node):  # rendered once the input is embedded (``execute``)
        return node, [], state
    return node, render_messages(node, inputs), state


def _by_embeddings(node: ir.Node) -> bool:
    select = node.select
    return select is not None and select.per_input and select.by == "embeddings" and bool(select.pool)


async def _embedded(node: ir.Node, inputs: dict[str, Any], state: RunState | None) -> list[float]:
    """The unit embedding of the text ``node`` matches its per-input demos on, by the LM
    the node would call."""
    if state is not None and state.capture_only:
        raise ConfigError(
            f"node {node.id!r} chooses its demos by the embeddings of its input: it needs an LM to embed it "
            "(call compiled.prompts(...) inside desic.context(lm=...))"
        )
    lm = (state.lm if state is not None and state.lm is not None else None) or current_lm()
    embed = getattr(lm, "embed", None)
    if embed is None:
        raise LMError(f"node {node.id!r} chooses its demos by embeddings, and {getattr(lm, 'name', lm)!r} cannot embed")
    with counting_embeddings() as tally:
        try:
            (vector,) = await embed([match_text(node, inputs)])
        finally:  # a request answered before a failure was still spent
            run = state if state is not None else current_run()
            if run is not None:
                run.add_usage(tally.usage, node.id)
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


_params_cache: dict[ir.LMOverrides, LMParams] = {}


def _params(o: ir.LMOverrides) -> LMParams:
    """The request parameters of a node's LM overrides (both immutable: made once)."""
    params = _params_cache.get(o)
    if params is None:
        if len(_params_cache) >= 1024:
            _params_cache.clear()
        params = LMParams(model=o.model, temperature=o.temperature, max_tokens=o.max_tokens, seed=o.seed)
        _params_cache[o] = params
    return params


def _begin(
    sig: Signature[..., Any],
    inputs: dict[str, Any],
    node: ir.Node,
    messages: list[Message],
    state: RunState | None,
) -> tuple[LM, TraceEntry | None]:
    """What every call of a node does before its LM call: the run's bookkeeping, the LM
    to use, and the check of what it is sent."""
    entry: TraceEntry | None = None
    if state is not None:
        state.note_inputs(node.id, inputs)
        if node.id not in state.nodes_seen:
            state.nodes_seen[node.id] = node
        if state.trace is not None:
            entry = TraceEntry(node.id, {k: to_jsonable(v) for k, v in inputs.items()}, None, messages)
            if node.variants:
                entry.members = [render_messages(member, inputs) for member in ensemble_members(node)]
            state.trace.append(entry)
        if state.capture_only:
            raise CaptureStop(node.id)
        if state.cancelled:  # a synchronous pipeline still running in a worker thread
            raise asyncio.CancelledError(f"the run was cancelled before node {node.id!r} called its LM")
    lm = (state.lm if state is not None and state.lm is not None else None) or current_lm()
    if type(messages[-1]["content"]) is not str or len(messages) > 2:  # images, demos, history
        _check_media(lm, node, messages)
    return lm, entry


def _check_media(lm: LM, node: ir.Node, messages: list[Message]) -> None:
    """``ConfigError`` before the call when ``lm`` reads text only and a message holds images."""
    if supports_images(lm):
        return
    for message in messages:
        content = message.get("content")
        if isinstance(content, list) and any(
            isinstance(p, dict) and p.get("type") == "image_url" for p in content
        ):
            raise ConfigError(
                f"node {node.id!r} sends images, but {getattr(lm, 'name', 'the LM')} reads text only; "
                "use a model that takes images, e.g. desic.lm('openai:gpt-4o-mini'), or, if this "
                "one does, say so: desic.lm(..., vision=True)"
            )


async def execute(
    sig: Signature[..., Any],
    inputs: dict[str, Any],
    node: ir.Node,
    messages: list[Message],
    state: RunState | None,
) -> Any:
    if not messages and _by_embeddings(node):  # per-input demos by embeddings: embed, then render
        with query_vector(node.id, await _embedded(node, inputs, state)):
            return await execute(sig, inputs, node, render_messages(node, inputs), state)
    if state is not None and state.stream is not None and state.stream[0] == node.id:
        return await _streamed(state.stream[1], stream_execute(sig, inputs, node, messages, state))
    lm, entry = _begin(sig, inputs, node, messages, state)
    if node.strategy == "react":
        from . import react

        return await react.run_agent(sig, inputs, node, messages, state, entry, lm, _params(node.lm))
    if node.sampling is None and not node.variants:
        response = await _request(lm, sig, node, messages, state, entry, _params(node.lm), 0)
        result = sig.finish(response.value)
        data = response.value.model_dump(mode="json") if entry is not None else None
    else:
        result, data = await _sampled(lm, sig, node, inputs, messages, state, entry)
    if state is not None:
        state.note_output(node.id, result)
        if entry is not None:
            entry.output = data
    return result


async def _request(
    lm: LM,
    sig: Signature[..., Any],
    node: ir.Node,
    messages: list[Message],
    state: RunState | None,
    entry: TraceEntry | None,
    params: LMParams,
    sample: int,
) -> Any:
    """One LM call of a node: its usage counted (a failed call's too) and its events."""
    request = LMRequest(
        messages=tuple(messages),
        response_model=sig.response_model(node.strategy),
        params=params,
        node_id=node.id,
        sample=sample,
    )
    started = time.perf_counter()
    try:
        response = await lm.request(request)
    except Exception as exc:
        _failed(exc, node, state, entry, started)
        raise
    _answered(lm, response, node, state, started)
    return response


def _failed(
    exc: BaseException, node: ir.Node, state: RunState | None, entry: TraceEntry | None, started: float
) -> None:
    """A failed LM call: the requests it made count all the same; its events."""
    spent = getattr(exc, "usage", None)
    if state is not None and isinstance(spent, Usage):
        state.add_usage(spent, node.id)
    if entry is not None:
        entry.error = f"{type(exc).__name__}: {exc}"
    if events.active():
        spent_calls = spent.calls if isinstance(spent, Usage) else 0
        events.emit(
            "node_call", node=node.id, latency=time.perf_counter() - started, error=str(exc), calls=spent_calls
        )


def _answered(
    lm: LM, response: LMResponse, node: ir.Node, state: RunState | None, started: float, **extra: Any
) -> None:
    """An answered LM call: its events and its usage counted."""
    if events.active():
        u = response.usage
        events.emit(
            "lm_call",
            lm=getattr(lm, "name", "?"),
            node=node.id,
            latency=response.latency,
            prompt_tokens=u.prompt_tokens,
            completion_tokens=u.completion_tokens,
            cost=u.cost,
            cached=bool(response.meta.get("cached", False)),
            calls=u.calls,
            **extra,
        )
        events.emit("node_call", node=node.id, latency=time.perf_counter() - started, error=None)
    if state is not None:
        state.add_usage(response.usage, node.id)


def ensemble_members(node: ir.Node) -> list[ir.Node]:
    """The node as each of its ensemble variants prompts (``ir.Node.variants``, in order):
    the variant's instructions and demos, one call each, no strategy of its own."""
    return [
        msgspec.structs.replace(node, instructions=v.instructions, demos=v.demos, variants=(), sampling=None)
        for v in node.variants
    ]


async def _sampled(
    lm: LM,
    sig: Signature[..., Any],
    node: ir.Node,
    inputs: dict[str, Any],
    messages: list[Message],
    state: RunState | None,
    entry: TraceEntry | None,
) -> tuple[Any, dict[str, Any]]:
    """A node with an inference-time strategy or ensemble variants (``desic.sampling``)."""
    spec = node.sampling
    params = _params(node.lm)
    if spec is not None and spec.temperature is not None:
        params = replace(params, temperature=spec.temperature)

    async def one(msgs: list[Message], i: int) -> tuple[Any, dict[str, Any]]:
        response = await _request(lm, sig, node, msgs, state, entry, params, i)
        return sig.finish(response.value), response.value.model_dump(mode="json")

    if spec is None or spec.kind == "majority":
        members = entry.members if entry is not None and entry.members else None
        prompts = [messages, *(members or (render_messages(m, inputs) for m in ensemble_members(node)))]
        n = spec.n if spec is not None else len(prompts)
        picked = await sampling.majority(one, prompts, n)
    else:
        fn = sampling.reward_named(spec.reward or "", node.id)
        if spec.kind == "best_of_n":
            picked = await sampling.best_of_n(one, messages, spec.n, fn, inputs)
        else:
            threshold = spec.threshold if spec.threshold is not None else 1.0
            picked = await sampling.refine(one, messages, spec.n, fn, inputs, threshold)
    if entry is not None:
        entry.error = None  # a failed sample is not the node's failure
    if events.active():
        events.emit(
            "sampling", node=node.id, strategy=spec.kind if spec is not None else "ensemble",
            chosen=picked.index, votes=picked.votes, scores=picked.scores,
        )
    return picked.output, picked.data


class Partial(Generic[R]):
    """One item of a stream (``sig.stream``, ``sig.astream``, ``compiled.stream``).

    ``value``: the output so far, in the type the signature returns (a model whose fields
    not yet written are None, or the bare value so far); ``data``: the same as JSON data
    (a chain-of-thought node's ``reasoning`` included); ``done``: True for the last item
    only, whose ``value`` is validated, exactly what calling the signature returns.
    """

    __slots__ = ("data", "done", "value")

    def __init__(self, value: R, data: dict[str, Any], done: bool = False) -> None:
        self.value = value
        self.data = data
        self.done = done

    def __repr__(self) -> str:
        return f"Partial(done={self.done}, value={self.value!r})"


async def stream_execute(
    sig: Signature[..., Any],
    inputs: dict[str, Any],
    node: ir.Node,
    messages: list[Message],
    state: RunState | None,
) -> AsyncIterator[Partial[Any]]:
    """``execute`` as a stream: a ``Partial`` each time the output grows, then the final one."""
    if not messages and _by_embeddings(node):  # per-input demos by embeddings: embed, then render
        with query_vector(node.id, await _embedded(node, inputs, state)):
            async for part in stream_execute(sig, inputs, node, render_messages(node, inputs), state):
                yield part
        return
    lm, entry = _begin(sig, inputs, node, messages, state)
    if node.strategy == "react":  # an agent's steps are calls of their own: its answer only
        from . import react

        result = await react.run_agent(sig, inputs, node, messages, state, entry, lm, _params(node.lm))
        answer = to_jsonable(result)
        yield Partial(result, answer if isinstance(answer, dict) else {"output": answer}, done=True)
        return
    if node.sampling is not None or node.variants:  # several calls, one choice: nothing to stream
        result, data = await _sampled(lm, sig, node, inputs, messages, state, entry)
        if state is not None:
            state.note_output(node.id, result)
            if entry is not None:
                entry.output = data
        yield Partial(result, data, done=True)
        return
    request = LMRequest(
        messages=tuple(messages),
        response_model=sig.response_model(node.strategy),
        params=_params(node.lm),
        node_id=node.id,
    )
    started = time.perf_counter()
    first: float | None = None
    partials = 0
    response: LMResponse | None = None
    seen: dict[str, Any] | None = None
    items = stream_of(lm, request)
    try:
        async for item in items:
            if isinstance(item, LMResponse):
                response = item
                continue
            data = _partial_data(item)
            if data == seen or not data:
                continue
            seen = data
            partials += 1
            if first is None:
                first = time.perf_counter() - started
            yield Partial(sig.partial(item), data)
        if response is None:
            raise LMError(f"{getattr(lm, 'name', 'the LM')} ended its stream without a final response")
    except Exception as exc:
        _failed(exc, node, state, entry, started)
        raise
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
    _answered(lm, response, node, state, started, streamed=True, partials=partials, first_partial=first)
    result = sig.finish(response.value)
    data = response.value.model_dump(mode="json")
    if state is not None:
        state.note_output(node.id, result)
        if entry is not None:
            entry.output = data
    yield Partial(result, data, done=True)


async def _streamed(sink: Any, items: AsyncIterator[Partial[Any]]) -> Any:
    """Run a streamed call to its end, handing its partials to ``sink``; its output."""
    async for item in items:
        if item.done:
            return item.value
        sink(item)
    raise LMError("the stream ended without its final output")  # pragma: no cover


def _partial_data(value: BaseModel) -> dict[str, Any]:
    """The fields of a partial output written so far, as JSON data."""
    data = value.model_dump(mode="json", exclude_none=True, warnings=False)
    return data if isinstance(data, dict) else {}


def stream_signature(sig: Signature[..., Any], inputs: dict[str, Any]) -> AsyncIterator[Partial[Any]]:
    node, messages, state = prepare(sig, inputs)
    return stream_execute(sig, inputs, node, messages, state)


def sync_stream(items: AsyncIterator[Partial[Any]]) -> Iterator[Partial[Any]]:
    """An async stream consumed from synchronous code, one ``run_sync`` a step (on this
    thread's loop, or an evaluation's loop from its worker threads)."""
    if running_loop() is not None:
        raise ConfigError(
            "sig.stream(...) cannot run inside a running event loop; "
            "use async for partial in sig.astream(...) there"
        )

    async def step() -> Partial[Any] | None:
        try:
            return await items.__anext__()
        except StopAsyncIteration:
            return None

    async def close() -> None:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()

    finished = False
    try:
        while True:
            item = run_sync(step())
            if item is None:
                finished = True
                return
            yield item
    finally:
        if not finished:
            run_sync(close())


def call_signature(sig: Signature[..., Any], inputs: dict[str, Any]) -> Any:
    node, messages, state = prepare(sig, inputs)
    return run_sync(execute(sig, inputs, node, messages, state))


def acall_signature(sig: Signature[..., Any], inputs: dict[str, Any]) -> Awaitable[Any]:
    # The node id is taken now, at call time, so ids follow call order even when
    # coroutines are gathered.
    node, messages, state = prepare(sig, inputs)
    return execute(sig, inputs, node, messages, state)


async def run_isolated(
    sig: Signature[..., Any],
    inputs: dict[str, Any],
    *,
    lm: LM | None = None,
    program: ir.Program | None = None,
    state: RunState | None = None,
) -> Any:
    """Run ``sig`` on ``inputs`` as a run of its own, never a node of the caller's run.

    The one way desic runs a signature apart from a user's pipeline: a bare signature
    evaluated as a pipeline, an optimizer's own proposals, an LLM judge. The run happens
    in ``state`` (default: a new one with ``lm`` and ``program``), whose ``usage`` and
    ``trace`` the caller reads afterwards.
    """
    if state is None:
        state = RunState(program=program, lm=lm)
    bound = sig.bind((), inputs)
    with run_scope(state):
        node, messages, current = prepare(sig, bound)
    return await execute(sig, bound, node, messages, current)
