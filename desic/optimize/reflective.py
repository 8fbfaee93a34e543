"""``reflective``: read failures and feedback, edit one instruction, keep a Pareto front.

After GEPA (Agrawal et al., 2025). The pool starts with one program (default
``init="bootstrap"``: its demos stay while instructions are edited; ``init=None`` starts
zero-shot), scored on every validation row. Each iteration:

1. pick a parent from the Pareto front: for every validation row, the candidates that
   score best on it; a candidate is drawn with probability proportional to the number
   of rows it is best on, so specialists survive next to the best average;
2. pick a node (round robin) and a seeded minibatch of training rows, run the parent on
   them and collect, at that node, inputs, answers, and the metric's feedback (or the
   expected answer when the metric gives none);
3. ask the LM (``reflect_instruction``, memoized) for a targeted edit of the node's
   instruction; run the child on the same minibatch;
4. only if the child beats the parent there is it scored on the validation split and
   added to the pool (a cheap filter before the expensive evaluation).

Minibatches where the parent is already perfect are skipped (nothing to learn). The
result is the start unless the pool's best beats it with evidence (``_select``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from .. import ir
from ..record import program_key
from ._options import COUNT, POSITIVE, TEMPERATURE, Range
from ._propose import (
    clean_instruction,
    describe_node,
    reflect_instruction,
    reflect_tool_description,
    reflection_text,
    tool_text,
    with_tool_description,
)
from ._search import Ranked, SearchOptimizer, ask, best_of, start_pool
from ._select import select_final
from .demos import with_node_changes
from .task import CompileTask


@dataclass(eq=False)
class Reflective(SearchOptimizer):
    name = "reflective"

    iterations: int = 12
    minibatch: int = 4
    init: Any = "bootstrap"
    temperature: float = 0.8
    val_fraction: float = 0.5
    max_val: int | None = 200

    RANGES: ClassVar[dict[str, Range]] = {"iterations": COUNT, "minibatch": POSITIVE, "temperature": TEMPERATURE, **SearchOptimizer.RANGES}

    def __post_init__(self) -> None:
        super().__post_init__()
        self.minibatch = max(1, self.minibatch)

    async def optimize(self, task: CompileTask) -> ir.Program:
        train, val = self.splits(task)
        pool: list[Ranked] = [await start_pool(task, self.init, train, val)]
        start = pool[0][0].program
        seen = {program_key(start)}
        rng = task.rng("reflective")
        # what an iteration may rewrite, in turn: each node's instructions and, for an
        # agent, each of its tools' descriptions
        slots = [(n.id, tool) for n in start.nodes for tool in (None, *(t.name for t in n.tools))]
        tuned: set[int] = set()  # the training rows a minibatch showed
        for it in range(1, self.iterations + 1):
            parent, parent_index = self._select(pool, rng)
            node_id, tool = slots[(it - 1) % len(slots)] if slots else (None, None)
            batch = rng.sample(train, min(self.minibatch, len(train)))
            tuned.update(id(row) for row in batch)
            if node_id is None:
                break
            (before,) = await task.run_pairs([(parent.program, batch)])
            before_scores = [o.score or 0.0 for o in before]
            if all(s >= 1.0 for s in before_scores):
                task.iteration(it, best_of(pool)[0].score, skipped="parent perfect on minibatch")
                continue
            node = parent.program.node(node_id)
            if node is None:
                continue
            proposer: Any
            if tool is None:
                current = node.instructions or node.signature.instructions
                proposer, inputs = reflect_instruction, {"current_instruction": current}
            else:
                current = next((t.description for t in node.tools if t.name == tool), "")
                proposer, inputs = reflect_tool_description, {"current_description": current, "tool": tool_text(node, tool)}
            value = await ask(
                task,
                proposer,
                {**inputs, "task": describe_node(node), "examples_with_feedback": reflection_text(before, node_id)},
                key_salt=f"reflective:{it}:{program_key(parent.program)}:{node_id}" + (f":{tool}" if tool else ""),
                seed=it,
                temperature=self.temperature,
            )
            text = clean_instruction(value, current)
            if text is None:
                task.iteration(it, best_of(pool)[0].score, skipped="no usable proposal")
                continue
            if tool is None:
                child = with_node_changes(parent.program, node_id, instructions=text)
            else:
                child = with_node_changes(parent.program, node_id, tools=with_tool_description(node, tool, text))
            if tool is not None:
                node_id = f"{node_id} tool {tool}"  # how the candidate's note names the edit
            if program_key(child) in seen:
                continue
            seen.add(program_key(child))
            (after,) = await task.run_pairs([(child, batch)])
            after_scores = [o.score or 0.0 for o in after]
            mini = task.record(
                child,
                sum(after_scores) / len(after_scores),
                f"edit of {node_id} (minibatch {sum(before_scores):.2f} -> {sum(after_scores):.2f})",
                split="minibatch",
                scores=after_scores,
                round=it,
                parent=parent_index,
            )
            if sum(after_scores) > sum(before_scores):
                (full,) = await task.evaluate_many([child], val)
                kept = task.record(
                    child, full.score, f"edit of {node_id} accepted", split="val", scores=full.scores,
                    round=it, parent=mini.index,
                )
                pool.append((full, kept.index))
            task.iteration(it, best_of(pool)[0].score, pool=len(pool))
        # only training rows no minibatch showed may join the test (edits were tuned on those)
        unseen = [row for row in train if id(row) not in tuned]
        return await select_final(task, pool[0][1], [index for _, index in pool], unseen)

    @staticmethod
    def _select(pool: list[Ranked], rng: random.Random) -> Ranked:
        """A parent drawn from the Pareto front, weighted by how many rows it leads on."""
        rows = len(pool[0][0].scores)
        wins = [0] * len(pool)
        for j in range(rows):
            top = max(s.scores[j] for s, _ in pool)
            for k, (s, _) in enumerate(pool):
                if s.scores[j] == top:
                    wins[k] += 1
        # drop candidates dominated by another (no better anywhere, worse somewhere)
        for k, (s, _) in enumerate(pool):
            for m, (o, _) in enumerate(pool):
                if m != k and wins[k] and all(a <= b for a, b in zip(s.scores, o.scores)) and s.scores != o.scores:
                    wins[k] = 0
                    break
        if not any(wins):
            wins = [1] * len(pool)
        return rng.choices(pool, weights=wins, k=1)[0]
