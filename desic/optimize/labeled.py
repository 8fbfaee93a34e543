"""``labeled``: demos taken straight from the labelled trainset."""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from ._base import CompileTask, labeled_demo


class Labeled:
    name = "labeled"

    def __init__(self, max_demos: int = 8):
        self.max_demos = max_demos

    def config(self) -> dict[str, Any]:
        return {"max_demos": self.max_demos}

    async def optimize(self, task: CompileTask) -> ir.Program:
        program = await task.discover()
        order = list(range(len(task.trainset)))
        task.rng("labeled").shuffle(order)
        for node in program.nodes:
            demos: list[ir.Demo] = []
            for i in order:
                demo = labeled_demo(node, task.trainset[i], only_node=len(program.nodes) == 1)
                if demo is not None:
                    demos.append(demo)
                if len(demos) >= self.max_demos:
                    break
            program = program.with_node(msgspec.structs.replace(node, demos=tuple(demos)))
        task.record(program, None, "labeled demos")
        return program
