"""``genetic``: evolve a population of (instructions, demos) programs.

A genome is, per node, an instruction and a demo set. The first population holds the
plain bootstrap program and variants with random demo subsets from a bootstrap pool.
Each generation keeps the ``elite`` best unchanged and breeds the rest: two parents
picked by tournament, uniform crossover per node and per component (instruction or
demos), then with probability ``mutation`` one mutation: an LM rewrite of one node's
instruction (grounded on the first parent's failures) or a demo swap from the pool.

Every random choice is drawn from ``task.rng`` before any LM call of the generation is
made; rewrites are then run concurrently and memoized by generation and child slot, so
a seed always breeds the same population. Scores are on the validation split; the
bootstrap program is returned unless the final population's best beats it with evidence
(``_select``).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from .. import ir
from ..record import program_key
from ._options import COUNT, POSITIVE, SHARE, TEMPERATURE, Range
from ._propose import TIPS
from ._search import (
    Child,
    Ranked,
    SearchOptimizer,
    bootstrap_seed,
    demo_pool,
    rewrite,
    rotate,
    sample_demos,
    score_into,
)
from ._select import select_final
from .demos import with_node_changes
from .history import Scored
from .task import CompileTask


@dataclass
class _Plan:
    """How to make one child, decided before any LM call of the generation."""

    program: ir.Program
    parent: int
    note: str
    rewrite: str | None = None  # node id whose instruction the LM rewrites
    parent_scored: Scored | None = None


@dataclass(eq=False)
class Genetic(SearchOptimizer):
    name = "genetic"

    population: int = 6
    generations: int = 3
    elite: int = 2
    mutation: float = 0.6
    crossover: float = 0.7
    max_demos: int = 3
    temperature: float = 0.8
    val_fraction: float = 0.5
    max_val: int | None = 200

    RANGES: ClassVar[dict[str, Range]] = {
        "population": Range(2), "generations": COUNT, "elite": POSITIVE, "mutation": SHARE, "crossover": SHARE,
        "max_demos": POSITIVE, "temperature": TEMPERATURE, **SearchOptimizer.RANGES,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.population = max(2, self.population)
        self.elite = max(1, min(self.elite, self.population - 1))

    async def optimize(self, task: CompileTask) -> ir.Program:
        train, val = self.splits(task)
        seed_program, found = await bootstrap_seed(
            task, train, want=2 * self.max_demos, max_demos=self.max_demos, max_labeled=self.max_demos
        )
        pools = {n.id: self._pool(n, found.demos.get(n.id, []), train, len(seed_program.nodes)) for n in seed_program.nodes}
        rng = task.rng("genetic")

        # generation 0: the bootstrap program and random demo variants of it
        members = [seed_program]
        keys = {program_key(seed_program)}
        for _ in range(self.population * 3):
            if len(members) >= self.population:
                break
            variant = self._random_demos(seed_program, pools, rng)
            if program_key(variant) not in keys:
                keys.add(program_key(variant))
                members.append(variant)
        first = len(task.history)
        population: list[Ranked] = await score_into(
            task, [], [(program, None, "initial population") for program in members], val, 0
        )
        start = first  # the bootstrap program, recorded first
        task.iteration(0, population[0][0].score)

        for gen in range(1, self.generations + 1):
            elites = population[: self.elite]
            plans: list[_Plan] = []
            for slot in range(self.population - len(elites)):
                plans.append(self._breed(population, pools, rng, slot))
            rewrites = await task.gather(
                *(self._rewrite(task, p, gen, slot, train) for slot, p in enumerate(plans))
            )
            children: list[Child] = []
            for plan, text in zip(plans, rewrites):
                program = plan.program
                note = plan.note
                if plan.rewrite is not None:
                    if text is not None:
                        program = with_node_changes(program, plan.rewrite, instructions=text)
                    else:
                        note += " (rewrite failed)"
                if program_key(program) in keys:
                    continue
                keys.add(program_key(program))
                children.append((program, plan.parent, note))
            population = (await score_into(task, population, children, val, gen))[: self.population]
            task.iteration(gen, population[0][0].score, children=len(children))
        return await select_final(task, start, [index for _, index in population], train)

    # --- genome operations (all randomness drawn here, in a fixed order) -------------------

    def _pool(self, node: ir.Node, accepted: list[ir.Demo], train: list[Any], nodes: int) -> list[ir.Demo]:
        return demo_pool(node, accepted, train, only_node=nodes == 1, labeled=3 * self.max_demos - len(accepted))

    def _random_demos(self, program: ir.Program, pools: dict[str, list[ir.Demo]], rng: random.Random) -> ir.Program:
        for node in program.nodes:
            pool = pools.get(node.id, [])
            if not pool:
                continue
            k = rng.randint(1, min(self.max_demos, len(pool)))
            program = with_node_changes(program, node.id, demos=sample_demos(pool, k, rng))
        return program

    def _tournament(self, population: list[Ranked], rng: random.Random) -> Ranked:
        a, b = rng.choice(population), rng.choice(population)
        return a if (a[0].score, -a[1]) >= (b[0].score, -b[1]) else b

    def _breed(
        self, population: list[Ranked], pools: dict[str, list[ir.Demo]], rng: random.Random, slot: int
    ) -> _Plan:
        first, second = self._tournament(population, rng), self._tournament(population, rng)
        program = first[0].program
        note = f"child of {first[1]}"
        if rng.random() < self.crossover and second[1] != first[1]:
            other = second[0].program
            for node in program.nodes:
                theirs = other.node(node.id)
                if theirs is None:
                    continue
                changes: dict[str, Any] = {}
                if rng.random() < 0.5:
                    changes["instructions"] = theirs.instructions
                if rng.random() < 0.5:
                    changes["demos"] = theirs.demos
                if changes:
                    program = program.with_node(msgspec.structs.replace(node, **changes))
            note = f"crossover of {first[1]} and {second[1]}"
        plan = _Plan(program=program, parent=first[1], note=note, parent_scored=first[0])
        if rng.random() < self.mutation and program.nodes:
            node = rng.choice(program.nodes)
            pool = [d for d in pools.get(node.id, []) if d not in node.demos]
            if rng.random() < 0.5 or not pool or not node.demos:
                plan.rewrite = node.id
                plan.note += f", rewrite of {node.id}"
            else:
                demos = list(node.demos)
                demos[rng.randrange(len(demos))] = rng.choice(pool)
                plan.program = program.with_node(msgspec.structs.replace(node, demos=tuple(demos)))
                plan.note += f", demo swap in {node.id}"
        return plan

    async def _rewrite(self, task: CompileTask, plan: _Plan, gen: int, slot: int, train: list[Any]) -> str | None:
        if plan.rewrite is None:
            return None
        node = plan.program.node(plan.rewrite)
        if node is None or plan.parent_scored is None:
            return None
        return await rewrite(
            task,
            node,
            plan.parent_scored.outcomes,
            rotate(train, slot * 2),
            tip=TIPS[(gen + slot) % len(TIPS)],
            key_salt=f"genetic:{gen}:{slot}:{program_key(plan.program)}:{node.id}",
            seed=gen * 100 + slot,
            temperature=self.temperature,
        )
