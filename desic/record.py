"""What a compile run keeps of what it did: the recorder seam, and how records are encoded.

Resuming a run is a deterministic replay: optimizers are seeded, and every evaluation or
optimizer LM call whose key is already recorded is answered from the record instead of the
LM, so a crashed run continues where it stopped without repeating finished work.

- ``RunRecorder``: the protocol a store implements (``desic.storage.StorageRecorder``);
  ``MemoryRecorder`` keeps everything in memory (the default);
- ``program_key``: what of a program changes its answers, hashed (part of every key);
- ``outcome_record`` / ``outcome_from_record``: a ``RunOutcome`` as plain JSON data and
  back; ``usage_list`` / ``usage_of`` the same for ``Usage``.
"""

from __future__ import annotations

from typing import Any, Protocol

import msgspec

from . import ir
from ._json import to_jsonable
from .data import Example
from .engine import RunOutcome
from .lm import Usage
from .pipeline import Pipeline
from .runtime import RunState, TraceEntry

__all__ = [
    "MemoryRecorder",
    "NodeEncoder",
    "RunRecorder",
    "outcome_from_record",
    "outcome_record",
    "program_key",
    "usage_list",
    "usage_of",
]


class RunRecorder(Protocol):
    """Where a compile run keeps what it has done (evaluations by key, scored candidates)."""

    def get_evaluation(self, key: str) -> dict[str, Any] | None: ...

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None: ...

    def add_candidate(self, record: dict[str, Any]) -> None: ...


class MemoryRecorder:
    """A recorder that keeps everything in memory (the default)."""

    def __init__(self) -> None:
        self.evaluations: dict[str, dict[str, Any]] = {}
        self.candidates: list[dict[str, Any]] = []

    def get_evaluation(self, key: str) -> dict[str, Any] | None:
        return self.evaluations.get(key)

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None:
        self.evaluations[key] = record

    def add_candidate(self, record: dict[str, Any]) -> None:
        self.candidates.append(record)


def program_key(program: ir.Program | None) -> str:
    """What of a program changes its answers (node configs), hashed."""
    if program is None:
        return "zero-shot"
    return ir.fingerprint(msgspec.to_builtins(program.nodes))


def usage_list(u: Usage) -> list[float]:
    return [u.calls, u.prompt_tokens, u.completion_tokens, u.cost]


def usage_of(data: Any) -> Usage:
    if not data:
        return Usage()
    calls, prompt, completion, cost = data
    return Usage(calls=int(calls), prompt_tokens=int(prompt), completion_tokens=int(completion), cost=float(cost))


class NodeEncoder:
    """``msgspec.to_builtins(node)``, encoded once per node object.

    Nodes are immutable and a program's nodes are shared by all of its runs, so one
    compile encodes each node once. The owner (a compile task) bounds the lifetime;
    the node is kept with its data, so an id is never reused while it is cached.
    """

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[int, tuple[ir.Node, Any]] = {}

    def __call__(self, node: ir.Node) -> Any:
        hit = self._data.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        if len(self._data) > 4096:
            self._data.clear()
        data = msgspec.to_builtins(node)
        self._data[id(node)] = (node, data)
        return data


def _trace_row(e: TraceEntry) -> list[Any]:
    row = [e.node_id, e.inputs, e.output, e.error]
    return row if e.kind == "lm" else [*row, e.kind]  # an LM call's row as before


def outcome_record(outcome: RunOutcome, metric: str = "", nodes: NodeEncoder | None = None) -> dict[str, Any]:
    """``outcome`` as plain JSON data (what a recorder stores for one evaluation)."""
    state = outcome.state
    encode = nodes if nodes is not None else msgspec.to_builtins
    return {
        "output": to_jsonable(outcome.output) if outcome.error is None else None,
        "error": outcome.error,
        "latency": outcome.latency,
        "usage": usage_list(state.usage),
        "trace": [_trace_row(e) for e in state.trace or []],
        "nodes": [encode(n) for n in state.nodes_seen.values()],
        "edges": sorted(state.observed_edges()),
        "metric": metric,
        "score": outcome.score,
        "feedback": outcome.feedback,
    }


def outcome_from_record(
    pipe: Pipeline[..., Any],
    index: int,
    example: Example,
    record: dict[str, Any],
    trace: bool,
    metric: str = "",
) -> RunOutcome:
    """The ``RunOutcome`` a record was made from (its score only if ``metric`` made it)."""
    state = RunState(trace=[] if trace else None, usage=usage_of(record.get("usage")))
    for node_data in record.get("nodes", []):
        node = msgspec.convert(node_data, ir.Node)
        state.nodes_seen[node.id] = node
    edges = record.get("edges")
    if edges:
        state.edges = {(a, b, c) for a, b, c in edges}
    if state.trace is not None:
        for node_id, inputs, output, error, *kind in record.get("trace", []):
            state.trace.append(TraceEntry(node_id, inputs, output, [], error, *kind))
    output = record.get("output")
    if record.get("error") is None and pipe.output_adapter is not None:
        output = pipe.output_adapter.validate_python(output)
    outcome = RunOutcome(
        index=index,
        example=example,
        output=output,
        error=record.get("error"),
        state=state,
        latency=record.get("latency", 0.0),
    )
    if metric and record.get("metric") == metric and record.get("score") is not None:
        outcome.score = float(record["score"])
        outcome.feedback = record.get("feedback")
    return outcome
