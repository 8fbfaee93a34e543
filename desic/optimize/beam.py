"""``beam``: beam search over instructions, one node rewrite at a time.

Each round, for every program in the beam and every node, the LM proposes ``width``
rewrites of that node's instruction, grounded on the node's signature, a few rows of data
seen at the node and the program's current failures (with the metric's feedback). Every
child is scored on the validation split; the top ``beam`` programs of parents and
children survive into the next round. The start is another optimizer's result (default
``init="bootstrap"``: its demos stay while instructions improve; ``init=None`` starts
zero-shot), and it is returned unless a rewrite beats it with evidence (``_select``).

Proposals are sampled (temperature, a seed per slot) so a deterministic LM still gives
distinct ones, and memoized by round, parent and slot.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from .. import ir
from ..record import program_key
from ._options import COUNT, POSITIVE, TEMPERATURE, Range
from ._propose import TIPS
from ._search import Child, Ranked, SearchOptimizer, rewrite, rotate, score_into, start_pool
from ._select import select_final
from .demos import with_node_changes
from .history import Scored
from .task import CompileTask


@dataclass(eq=False)
class Beam(SearchOptimizer):
    name = "beam"

    rounds: int = 3
    width: int = 3
    beam: int = 2
    init: Any = "bootstrap"
    temperature: float = 0.8
    val_fraction: float = 0.5
    max_val: int | None = 200

    RANGES: ClassVar[dict[str, Range]] = {"rounds": COUNT, "width": POSITIVE, "beam": POSITIVE, "temperature": TEMPERATURE, **SearchOptimizer.RANGES}

    async def optimize(self, task: CompileTask) -> ir.Program:
        train, val = self.splits(task)
        beam: list[Ranked] = [await start_pool(task, self.init, train, val)]
        start = beam[0][1]
        scored: list[int] = []
        seen = {program_key(beam[0][0].program)}
        for r in range(1, self.rounds + 1):
            plans: list[tuple[Scored, int, ir.Node, int]] = []
            for parent, parent_index in beam:
                for node in parent.program.nodes:
                    plans.extend((parent, parent_index, node, slot) for slot in range(self.width))
            proposals = await task.gather(
                *(self._propose(task, parent, node, slot, r, train) for parent, _, node, slot in plans)
            )
            children: list[Child] = []
            for (parent, parent_index, node, _slot), text in zip(plans, proposals):
                if text is None:
                    continue
                child = with_node_changes(parent.program, node.id, instructions=text)
                key = program_key(child)
                if key in seen:
                    continue
                seen.add(key)
                children.append((child, parent_index, f"rewrite of {node.id}"))
            first = len(task.history)
            beam = (await score_into(task, beam, children, val, r))[: max(1, self.beam)]
            scored.extend(range(first, len(task.history)))
            task.iteration(r, beam[0][0].score, children=len(children))
        return await select_final(task, start, scored, train)

    async def _propose(
        self, task: CompileTask, parent: Scored, node: ir.Node, slot: int, round_: int, train: list[Any]
    ) -> str | None:
        return await rewrite(
            task,
            node,
            parent.outcomes,
            rotate(train, slot * 3),  # each slot sees a different slice of data
            tip=TIPS[(slot + round_) % len(TIPS)],
            key_salt=f"beam:{round_}:{program_key(parent.program)}:{node.id}:{slot}",
            seed=slot + 1000 * round_,
            temperature=self.temperature,
        )
