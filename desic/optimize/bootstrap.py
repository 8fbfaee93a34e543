"""``bootstrap``: run the pipeline on the trainset and keep the traces the metric accepts.

Examples run concurrently, in rounds of ``concurrency``, until every node holds
``max_demos`` accepted traces or the trainset is used up; remaining slots are filled with
labelled demos (up to ``max_labeled``) where the rows carry every field a node needs.
"""

from __future__ import annotations

from typing import Any

import msgspec

from .. import ir
from ..pipeline import program_from_runs
from ._base import CompileTask, labeled_demo


class Bootstrap:
    name = "bootstrap"

    def __init__(self, max_demos: int = 4, max_labeled: int = 4, threshold: float = 1.0, rounds: int = 1):
        self.max_demos = max_demos
        self.max_labeled = max_labeled
        self.threshold = threshold
        self.rounds = rounds

    def config(self) -> dict[str, Any]:
        return {
            "max_demos": self.max_demos,
            "max_labeled": self.max_labeled,
            "threshold": self.threshold,
            "rounds": self.rounds,
        }

    async def optimize(self, task: CompileTask, base: ir.Program | None = None) -> ir.Program:
        task.need_metric(self.name)
        order = list(range(len(task.trainset)))
        task.rng("bootstrap").shuffle(order)
        teacher = task.teacher_lm
        demos: dict[str, list[ir.Demo]] = {}
        used: set[int] = set()
        states = []
        accepted = tried = 0
        for _ in range(self.rounds):
            pending = [i for i in order if i not in used]
            step = max(1, task.concurrency)
            for start in range(0, len(pending), step):
                batch = pending[start : start + step]
                outcomes = await task.run([task.trainset[i] for i in batch], base, lm=teacher, trace=True)
                for i, outcome in zip(batch, outcomes):
                    states.append(outcome.state)
                    tried += 1
                    if outcome.error is not None or task.score(outcome) < self.threshold:
                        continue
                    accepted += 1
                    used.add(i)
                    for entry in outcome.state.trace or []:
                        if entry.output is None:
                            continue
                        bucket = demos.setdefault(entry.node_id, [])
                        if len(bucket) < self.max_demos:
                            bucket.append(ir.Demo(inputs=entry.inputs, output=entry.output, source="bootstrap"))
                if states and all(
                    len(demos.get(n, [])) >= self.max_demos
                    for s in states
                    for n in s.nodes_seen
                ):
                    break
        program = program_from_runs(task.pipeline, states, base=base)
        for node in program.nodes:
            chosen = list(demos.get(node.id, []))
            extra = 0
            for i in order:
                if extra >= self.max_labeled or len(chosen) >= self.max_demos + self.max_labeled:
                    break
                if i in used:
                    continue
                demo = labeled_demo(node, task.trainset[i], only_node=len(program.nodes) == 1)
                if demo is not None:
                    chosen.append(demo)
                    extra += 1
            program = program.with_node(msgspec.structs.replace(node, demos=tuple(chosen)))
        task.record(program, accepted / tried if tried else None, f"bootstrap: {accepted}/{tried} traces accepted")
        return program
