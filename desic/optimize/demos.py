"""Demos: from labelled rows, chosen to cover distinct answers, and node edits shared by
the optimizers.

A demo is repeated in every prompt of its node, so one huge row (a 10 MB document) would
make every call of the compiled program a 10M-character prompt. A demo whose JSON
(inputs and output) is over ``MAX_DEMO_CHARS`` characters is therefore never used: it is
skipped (not refused), labelled or bootstrapped alike, and the row still trains and
scores. ``desic.compile`` warns once, before any LM call, naming the trainset rows over
the limit (a ``demo_skipped`` event and a warning on the ``desic`` logger).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from typing import Any

import msgspec

from .. import ir
from .._json import to_jsonable
from ..data import Example

__all__ = ["MAX_DEMO_CHARS", "demo_chars", "fits", "labeled_demo", "labeled_rows", "pick_diverse", "with_node_changes"]

#: The most characters of JSON (inputs and output) a demo may have (about 12k tokens).
MAX_DEMO_CHARS = 50_000


_encoder = msgspec.json.Encoder(enc_hook=str)


def demo_chars(demo: ir.Demo) -> int:
    """The size of a demo's JSON (its inputs and output), in UTF-8 bytes: at least its
    characters, and measured without building a Python string (a demo per trace)."""
    return len(_encoder.encode((demo.inputs, demo.output)))


def fits(demo: ir.Demo) -> bool:
    """Whether ``demo`` is within ``MAX_DEMO_CHARS`` (see the module's docstring)."""
    return demo_chars(demo) <= MAX_DEMO_CHARS


def labeled_demo(node: ir.Node, example: Example, *, only_node: bool = False) -> ir.Demo | None:
    """A demo for ``node`` from a labelled example, when the example covers its fields.

    A row's single label is taken for a bare output of another name only when ``node`` is
    the program's only node (otherwise it is most likely the final node's label). None as
    well when the demo would be over ``MAX_DEMO_CHARS``.
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
    demo = ir.Demo(inputs=inputs, output=output, source="labeled")
    return demo if fits(demo) else None


def with_node_changes(program: ir.Program, node_id: str, **changes: Any) -> ir.Program:
    """``program`` with one node's fields replaced (instructions, demos, ...)."""
    node = program.node(node_id)
    if node is None:
        raise KeyError(node_id)
    return program.with_node(msgspec.structs.replace(node, **changes))


def _output_key(demo: ir.Demo) -> str:
    return json.dumps({k: v for k, v in demo.output.items() if k != "reasoning"}, sort_keys=True, default=str)


def pick_diverse(
    candidates: Iterable[tuple[int, ir.Demo]], k: int, taken: Iterable[ir.Demo] = ()
) -> list[tuple[int, ir.Demo]]:
    """Up to ``k`` of ``candidates`` (in their order), those whose output no demo chosen so
    far (``taken``, or an earlier pick) has first, then the others.

    A small model copies the answer most of its demos show: four demos answering "none"
    teach it to answer "none". Covering distinct answers first is the cheap guard. Looks
    at no more than ``20 * k + 20`` candidates, so a huge trainset costs no more.
    """
    seen = {_output_key(d) for d in taken}
    fresh: list[tuple[int, int, ir.Demo]] = []
    repeats: list[tuple[int, int, ir.Demo]] = []
    for n, (i, demo) in enumerate(candidates):
        if n >= 20 * k + 20 or len(fresh) >= k:
            break
        key = _output_key(demo)
        if key in seen:
            repeats.append((n, i, demo))
        else:
            seen.add(key)
            fresh.append((n, i, demo))
    chosen = sorted(fresh + repeats[: max(0, k - len(fresh))], key=lambda t: t[0])
    return [(i, demo) for _, i, demo in chosen]


def labeled_rows(
    node: ir.Node, examples: list[Example], order: Iterable[int], only_node: bool
) -> Iterator[tuple[int, ir.Demo]]:
    for i in order:
        demo = labeled_demo(node, examples[i], only_node=only_node)
        if demo is not None:
            yield i, demo
