"""``labeled``: demos taken straight from the labelled trainset.

No LM call for a bare signature (its one node is known); a ``@pipeline`` runs once on the
first row to see its nodes."""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from ..data import Example
from ..runtime import default_node
from ._options import COUNT, check
from .demos import labeled_demo
from .task import CompileTask


class Labeled:
    name = "labeled"

    def __init__(self, max_demos: int = 8):
        check(self.name, "max_demos", max_demos, COUNT)
        self.max_demos = max_demos

    def config(self) -> dict[str, Any]:
        return {"max_demos": self.max_demos}

    takes_examples = True  # initial_program may restrict it to a training split

    async def optimize(self, task: CompileTask, examples: list[Example] | None = None) -> ir.Program:
        rows = task.trainset if examples is None else examples
        sig = getattr(task.pipeline, "signature", None)
        if sig is not None:  # a bare signature: its one node is known without running it
            program = ir.Program(pipeline=task.pipeline.ref, nodes=(default_node(sig, sig.node_name or sig.spec.name),))
        else:  # a @pipeline: its nodes are seen by running it once
            program = await task.discover()
        order = list(range(len(rows)))
        task.rng("labeled").shuffle(order)
        for node in program.nodes:
            demos: list[ir.Demo] = []
            for i in order:
                demo = labeled_demo(node, rows[i], only_node=len(program.nodes) == 1)
                if demo is not None:
                    demos.append(demo)
                if len(demos) >= self.max_demos:
                    break
            program = program.with_node(msgspec.structs.replace(node, demos=tuple(demos)))
        task.record(program, None, "labeled demos")
        return program
