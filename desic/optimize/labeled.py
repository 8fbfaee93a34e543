"""``labeled``: demos taken straight from the labelled trainset."""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from ..data import Example
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
