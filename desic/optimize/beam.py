"""``beam``: beam search over instructions, one node rewrite at a time.

Each round, for every program in the beam and every node, the LM proposes ``width``
rewrites of that node's instruction, grounded on the node's signature, a few rows of data
seen at the node and the program's current failures (with the metric's feedback). Every
child is scored on the validation split; the top ``beam`` programs of parents and
children survive into the next round. The start is zero-shot (``init=None``) or another
optimizer's result (``init="bootstrap"`` keeps its demos while instructions improve).

Proposals are sampled (temperature, a seed per slot) so a deterministic LM still gives
distinct ones, and memoized by round, parent and slot.
"""

from __future__ import annotations

from typing import Any

from .. import ir
from ._base import CompileTask, Scored, initial_program, program_key, with_node_changes
from ._propose import (
    PROPOSAL_TOKENS,
    TIPS,
    clean_instruction,
    describe_node,
    examples_text,
    failures_text,
    propose_instruction,
)


class Beam:
    name = "beam"

    def __init__(
        self,
        rounds: int = 3,
        width: int = 3,
        beam: int = 2,
        init: Any = None,
        temperature: float = 0.8,
        val_fraction: float = 0.5,
        max_val: int | None = 200,
    ):
        self.rounds = rounds
        self.width = width
        self.beam = beam
        self.init = init
        self.temperature = temperature
        self.val_fraction = val_fraction
        self.max_val = max_val

    def config(self) -> dict[str, Any]:
        return {
            "rounds": self.rounds,
            "width": self.width,
            "beam": self.beam,
            "init": self.init if isinstance(self.init, (str, type(None))) else getattr(self.init, "name", "?"),
            "temperature": self.temperature,
            "val_fraction": self.val_fraction,
            "max_val": self.max_val,
        }

    async def optimize(self, task: CompileTask) -> ir.Program:
        task.need_metric(self.name)
        train, val = task.split(fraction=self.val_fraction, max_val=self.max_val)
        start = await initial_program(task, self.init, train)
        (first,) = await task.evaluate_many([start], val)
        first_cand = task.record(start, first.score, "start", split="val", scores=first.scores, round=0)
        beam: list[tuple[Scored, int]] = [(first, first_cand.index)]
        seen = {program_key(start)}
        for r in range(1, self.rounds + 1):
            plans: list[tuple[Scored, int, ir.Node, int]] = []
            for parent, parent_index in beam:
                for node in parent.program.nodes:
                    plans.extend((parent, parent_index, node, slot) for slot in range(self.width))
            proposals = await task.gather(
                *(self._propose(task, parent, node, slot, r, train) for parent, _, node, slot in plans)
            )
            children: list[tuple[ir.Program, int, str]] = []
            for (parent, parent_index, node, _slot), text in zip(plans, proposals):
                if text is None:
                    continue
                child = with_node_changes(parent.program, node.id, instructions=text)
                key = program_key(child)
                if key in seen:
                    continue
                seen.add(key)
                children.append((child, parent_index, f"rewrite of {node.id}"))
            scored = await task.evaluate_many([c for c, _, _ in children], val)
            pool = list(beam)
            for (child, parent_index, note), s in zip(children, scored):
                cand = task.record(child, s.score, note, split="val", scores=s.scores, round=r, parent=parent_index)
                pool.append((s, cand.index))
            pool.sort(key=lambda item: (-item[0].score, item[1]))  # best first, earliest on ties
            beam = pool[: max(1, self.beam)]
            task.iteration(r, beam[0][0].score, children=len(children))
        return beam[0][0].program

    async def _propose(
        self, task: CompileTask, parent: Scored, node: ir.Node, slot: int, round_: int, train: list[Any]
    ) -> str | None:
        fails, feedback = failures_text(parent.outcomes, node.id)
        rows = train[slot * 3 :] + train[: slot * 3]  # each slot sees a different slice of data
        value = await task.call(
            propose_instruction,
            {
                "task": describe_node(node),
                "examples": examples_text(rows, 4),
                "failures": fails,
                "feedback": feedback,
                "tip": TIPS[(slot + round_) % len(TIPS)],
            },
            key_salt=f"beam:{round_}:{program_key(parent.program)}:{node.id}:{slot}",
            temperature=self.temperature,
            max_tokens=PROPOSAL_TOKENS,
            seed=slot + 1000 * round_,
        )
        return clean_instruction(value, node.instructions or node.signature.instructions)
