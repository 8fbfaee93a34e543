"""What travels between the driver and the Ray workers, as desic's own plain data.

Everything is msgpack through msgspec (never a pickle made by desic): a batch of jobs goes
to a worker as bytes, and outcomes come back as bytes, a chunk at a time.

- a batch: ``{"run", "pipe", "lm", "lm_config"?, "programs", "trace", "events", "jobs"}``,
  each job ``[index, inputs (JSON data), program id or None]``; a program or an LM
  configuration is sent to a worker once, then named by its id;
- a chunk: a list of items, ``["o", index, outcome]`` (a finished run), ``["s", index]``
  (a job the worker dropped, never run: the run was halted) and ``["e", kind, data, time]``
  (an event the run emitted on the worker);
- an outcome: output (JSON data), error, whether the LM failed, latency, usage, trace
  (node id, inputs, output, error), the nodes seen (by name in the job's program when it is
  that program's node, else the node's own msgpack bytes) and the data edges.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from .._json import to_jsonable
from ..data import Example
from ..engine import RunOutcome
from ..pipeline import Pipeline
from ..record import usage_list, usage_of
from ..runtime import RunState, TraceEntry

__all__ = ["NodeBytes", "NodeCache", "decode", "decode_outcome", "encode", "encode_outcome"]

encode = msgspec.msgpack.encode
decode = msgspec.msgpack.decode


class NodeBytes:
    """A node's msgpack bytes, made once per node object (worker side)."""

    __slots__ = ("_data",)

    def __init__(self) -> None:
        self._data: dict[int, tuple[ir.Node, bytes]] = {}

    def __call__(self, node: ir.Node) -> bytes:
        hit = self._data.get(id(node))
        if hit is not None and hit[0] is node:
            return hit[1]
        if len(self._data) > 4096:
            self._data.clear()
        data = encode(node)
        self._data[id(node)] = (node, data)
        return data


class NodeCache:
    """Nodes decoded from their bytes, once per distinct node (driver side)."""

    __slots__ = ("_nodes",)

    def __init__(self) -> None:
        self._nodes: dict[bytes, ir.Node] = {}

    def __call__(self, data: bytes) -> ir.Node:
        node = self._nodes.get(data)
        if node is None:
            if len(self._nodes) > 4096:
                self._nodes.clear()
            node = self._nodes[data] = decode(data, type=ir.Node)
        return node


def encode_outcome(outcome: RunOutcome, program: ir.Program | None, pid: str | None, nodes: NodeBytes) -> list[Any]:
    """``outcome`` as plain data (worker side); nodes of ``program`` go by name."""
    state = outcome.state
    seen: list[Any] = []
    for node_id, node in state.nodes_seen.items():
        if program is not None and program.node(node_id) is node:
            seen.append([node_id, pid, None])
        else:
            seen.append([node_id, None, nodes(node)])
    return [
        to_jsonable(outcome.output) if outcome.error is None else None,
        outcome.error,
        outcome.lm_failed,
        outcome.latency,
        usage_list(state.usage),
        [[e.node_id, e.inputs, e.output, e.error] for e in state.trace or ()],
        seen,
        sorted(state.observed_edges()),
    ]


def decode_outcome(
    pipe: Pipeline[..., Any],
    index: int,
    example: Example,
    data: list[Any],
    trace: bool,
    programs: dict[str, ir.Program],
    nodes: NodeCache,
) -> RunOutcome:
    """The ``RunOutcome`` (driver side) that :func:`encode_outcome` encoded."""
    output, error, lm_failed, latency, usage, entries, seen, edges = data
    state = RunState(trace=[] if trace else None, usage=usage_of(usage))
    for node_id, pid, raw in seen:
        node = programs[pid].node(node_id) if pid is not None else nodes(raw)
        if node is not None:
            state.nodes_seen[node_id] = node
    if edges:
        state.edges = {(a, b, c) for a, b, c in edges}
    if state.trace is not None:
        for node_id, inputs, out, err in entries:
            state.trace.append(TraceEntry(node_id, inputs, out, [], err))
    if error is None and pipe.output_adapter is not None:
        try:
            output = pipe.output_adapter.validate_python(output)
        except ValueError:  # kept as the JSON data it came as
            pass
    return RunOutcome(
        index=index, example=example, output=output, error=error, state=state, latency=latency, lm_failed=lm_failed
    )
