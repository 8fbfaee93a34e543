"""Demos from labelled rows, and node edits shared by the optimizers."""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from .._json import to_jsonable
from ..data import Example

__all__ = ["labeled_demo", "with_node_changes"]


def labeled_demo(node: ir.Node, example: Example, *, only_node: bool = False) -> ir.Demo | None:
    """A demo for ``node`` from a labelled example, when the example covers its fields.

    A row's single label is taken for a bare output of another name only when ``node`` is
    the program's only node (otherwise it is most likely the final node's label).
    """
    data = {**example.inputs, **example.labels}
    spec = node.signature
    if not all(f.name in data for f in spec.inputs if f.required):
        return None
    inputs = {f.name: to_jsonable(data[f.name]) for f in spec.inputs if f.name in data}
    required = list(spec.output_schema.get("required", spec.output_names))
    if spec.output_field is not None:
        if spec.output_field in example.labels:
            value = example.labels[spec.output_field]
        elif only_node and len(example.labels) == 1:
            value = next(iter(example.labels.values()))
        else:
            return None
        output = {spec.output_field: to_jsonable(value)}
    else:
        if not all(name in example.labels for name in required):
            return None
        output = {k: to_jsonable(example.labels[k]) for k in spec.output_names if k in example.labels}
    if node.strategy == "chain_of_thought":
        output = {"reasoning": "", **output} if "reasoning" not in output else output
    return ir.Demo(inputs=inputs, output=output, source="labeled")


def with_node_changes(program: ir.Program, node_id: str, **changes: Any) -> ir.Program:
    """``program`` with one node's fields replaced (instructions, demos, ...)."""
    node = program.node(node_id)
    if node is None:
        raise KeyError(node_id)
    return program.with_node(msgspec.structs.replace(node, **changes))
