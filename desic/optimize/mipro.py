"""``mipro``: instruction proposals x demo sets, searched with a TPE-like sampler.

1. **Demo sets.** One bootstrap pass over the training split fills a pool per node; the
   demo sets per node are: none, the bootstrap program's (accepted traces topped up
   with labelled demos), and random subsets of the pool (``num_demo_sets`` in all), and (``per_input``) one more choice:
   per-input demos, the ``max_demos`` examples of the pool nearest each input (``knn``; by
   BM25, or by the LM's embeddings with ``per_input="embeddings"``).
2. **Instructions.** Per node, ``num_instructions - 1`` proposals besides the original,
   grounded on the program (its steps and data flow), the node's signature, a few data
   rows, a demo set and a tip (as MIPROv2 does), all through ``task.call`` (memoized).
3. **Search.** A trial picks, for every node, an instruction and a demo set, and is
   scored on a seeded minibatch of the validation split. The first ``startup`` trials
   are random; later ones are sampled per parameter from the ratio of how often a value
   appears in good trials vs the rest (Tree-structured Parzen Estimator on categorical
   choices), so evaluations go to promising combinations instead of a full grid. Every
   ``full_every`` trials the best combination by mean minibatch score is scored on the
   whole validation split. The start (original instructions, the bootstrap demos) is
   kept unless the best fully-scored combination beats it with evidence (``_select``).

Trials run ``parallel`` at a time (sampled from the same history, so still deterministic).
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from .. import ir
from ._options import COUNT, POSITIVE, TEMPERATURE, Range
from ._propose import (
    TIPS,
    clean_instruction,
    describe_node,
    describe_program,
    examples_text,
    propose_instruction,
)
from ._search import SearchOptimizer, ask, bootstrap_seed, demo_pool, rotate, sample_demos
from ._select import select_final
from .knn import embed_select, knn_pool, per_input_option
from .task import CompileTask

Combo = tuple[int, ...]  # per node: instruction index, demo-set index (interleaved)
DemoSet = tuple[ir.Demo, ...] | ir.DemoSelect  # fixed demos, or per-input demos from a pool


def _with_demos(node: ir.Node, instructions: str, demos: DemoSet) -> ir.Node:
    if isinstance(demos, ir.DemoSelect):
        return msgspec.structs.replace(node, instructions=instructions, demos=(), select=demos)
    return msgspec.structs.replace(node, instructions=instructions, demos=demos)


@dataclass(eq=False)
class Mipro(SearchOptimizer):
    name = "mipro"

    num_instructions: int = 5
    num_demo_sets: int = 5
    trials: int = 16
    minibatch: int = 10
    full_every: int = 8
    startup: int = 4
    parallel: int | None = None
    max_demos: int = 3
    gamma: float = 0.25
    temperature: float = 0.8
    val_fraction: float = 0.5
    max_val: int | None = 200
    per_input: bool | str = True  # True: per-input demos by BM25; "embeddings": by the LM's embeddings

    RANGES: ClassVar[dict[str, Range]] = {
        "num_instructions": POSITIVE, "num_demo_sets": POSITIVE, "trials": COUNT,
        "minibatch": COUNT,  # 0: every trial on the whole validation split
        "full_every": POSITIVE, "startup": COUNT, "parallel": Range(1, none=True), "max_demos": COUNT,
        "gamma": Range(0, 1, whole=False, open_low=True), "temperature": TEMPERATURE, **SearchOptimizer.RANGES,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        self.num_instructions = max(1, self.num_instructions)
        self.num_demo_sets = max(1, self.num_demo_sets)
        self.full_every = max(1, self.full_every)
        per_input_option(self.name, self.per_input)  # a bad choice fails before any LM call

    async def optimize(self, task: CompileTask) -> ir.Program:
        train, val = self.splits(task)
        base, found = await bootstrap_seed(
            task, train, want=2 * self.max_demos, max_demos=self.max_demos, max_labeled=self.max_demos,
            teacher_demos=self.max_demos,
        )
        nodes = list(base.nodes)
        rng = task.rng("mipro")
        demo_sets = [
            self._demo_sets(node, found.demos.get(node.id, []), train, len(nodes), rng) for node in nodes
        ]
        for node, sets in zip(nodes, demo_sets):  # per-input pools by embeddings: their vectors, once
            sets[:] = [await embed_select(task, node, d) if isinstance(d, ir.DemoSelect) else d for d in sets]
        instructions = await self._instructions(task, base, nodes, demo_sets, train)
        choices: list[int] = []
        for k in range(len(nodes)):
            choices += [len(instructions[k]), len(demo_sets[k])]

        def build(combo: Combo) -> ir.Program:
            program = base
            for k, node in enumerate(nodes):
                program = program.with_node(
                    _with_demos(node, instructions[k][combo[2 * k]], demo_sets[k][combo[2 * k + 1]])
                )
            return program

        trials: list[tuple[Combo, float]] = []
        minibatch_scores: dict[Combo, list[float]] = {}
        full: dict[Combo, float] = {}
        best: tuple[float, int, Combo] | None = None  # (score, -candidate index, combo)
        fully: list[int] = []  # history indexes of the full evaluations
        default: Combo = tuple(v for k in range(len(nodes)) for v in (0, 1 if len(demo_sets[k]) > 1 else 0))

        async def score_fully(combo: Combo, note: str, round_: int) -> None:
            nonlocal best
            (s,) = await task.evaluate_many([build(combo)], val)
            cand = task.record(build(combo), s.score, note, split="val", scores=s.scores, round=round_)
            fully.append(cand.index)
            full[combo] = s.score
            if best is None or (s.score, -cand.index) > best[:2]:
                best = (s.score, -cand.index, combo)

        await score_fully(default, "original instructions + bootstrapped demos", 0)
        start = fully[0]
        batch = self.parallel or max(1, task.concurrency // max(1, min(self.minibatch, len(val))))
        done = 0
        while done < self.trials:
            size = min(batch, self.trials - done)
            combos = [self._sample(trials, choices, rng, done + j) for j in range(size)]
            batches = [self._minibatch(val, task, done + j) for j in range(size)]
            outcomes = await task.run_pairs([(build(c), b) for c, b in zip(combos, batches)])
            for j, (combo, outs) in enumerate(zip(combos, outcomes)):
                scores = [o.score or 0.0 for o in outs]
                mean = sum(scores) / len(scores) if scores else 0.0
                trials.append((combo, mean))
                minibatch_scores.setdefault(combo, []).append(mean)
                task.record(build(combo), mean, f"trial {done + j}: {self._describe(combo)}",
                            split="minibatch", scores=scores, round=done + j + 1)
            before = done
            done += size
            if done // self.full_every > before // self.full_every or done >= self.trials:
                pick = self._most_promising(minibatch_scores, full)
                if pick is not None:
                    await score_fully(pick, f"full evaluation of {self._describe(pick)}", done)
            task.iteration(done, best[0] if best else None, trials=done)
        return await select_final(task, start, fully, train)

    # --- the search space -----------------------------------------------------------------

    def _demo_sets(
        self, node: ir.Node, accepted: list[ir.Demo], train: list[Any], nodes: int, rng: random.Random
    ) -> list[DemoSet]:
        pool = demo_pool(node, accepted, train, only_node=nodes == 1, labeled=3 * self.max_demos - len(accepted))
        sets: list[DemoSet] = [()]
        if node.demos:  # the bootstrap program's own demos (traces topped up with labelled ones)
            sets.append(node.demos)
        attempts = 0
        while len(sets) < self.num_demo_sets and pool and attempts < 10 * self.num_demo_sets:
            attempts += 1
            k = rng.randint(1, min(self.max_demos, len(pool)))
            subset = sample_demos(pool, k, rng)
            if subset not in sets:
                sets.append(subset)
        by = per_input_option(self.name, self.per_input)
        if by is not None and self.max_demos > 0:
            everything = knn_pool(node, accepted, train, only_node=nodes == 1)
            if len(everything) > self.max_demos:  # else every input would get the same demos
                sets.append(ir.DemoSelect(mode="knn", k=self.max_demos, by=by, pool=everything))
        return sets

    async def _instructions(
        self,
        task: CompileTask,
        program: ir.Program,
        nodes: list[ir.Node],
        demo_sets: list[list[DemoSet]],
        train: list[Any],
    ) -> list[list[str]]:
        program_text = describe_program(program)
        calls = []
        for k, node in enumerate(nodes):
            for i in range(1, self.num_instructions):
                fixed = [d for d in demo_sets[k] if not isinstance(d, ir.DemoSelect)]
                shown = fixed[i % len(fixed)]
                demos = "\n".join(
                    f"{'; '.join(f'{a}: {b}' for a, b in d.inputs.items())} => {d.output}" for d in shown[:3]
                )
                inputs = {
                    "task": f"{program_text}. {describe_node(node)}",
                    "examples": examples_text(rotate(train, i * 3), 3) + ("\n" + demos if demos else ""),
                    "failures": "(not known yet)",
                    "feedback": "(none)",
                    "tip": TIPS[i % len(TIPS)],
                }
                salt = f"mipro:{node.id}:{i}"
                calls.append(
                    ask(task, propose_instruction, inputs, key_salt=salt, seed=i, temperature=self.temperature)
                )
        answers = await task.gather(*calls)
        out: list[list[str]] = []
        at = 0
        for node in nodes:
            current = node.instructions or node.signature.instructions
            texts = [current]
            for _ in range(1, self.num_instructions):
                text = clean_instruction(answers[at], current)
                at += 1
                if text is not None and text not in texts:
                    texts.append(text)
            out.append(texts)
        return out

    def _minibatch(self, val: list[Any], task: CompileTask, trial: int) -> list[Any]:
        if self.minibatch <= 0 or self.minibatch >= len(val):
            return val
        return task.rng(f"mipro:batch:{trial}").sample(val, self.minibatch)

    def _sample(self, trials: list[tuple[Combo, float]], choices: list[int], rng: random.Random, n: int) -> Combo:
        """Random for the first trials; then TPE per parameter on the trials so far."""
        if n < self.startup or len(trials) < 2:
            return tuple(rng.randrange(c) for c in choices)
        ranked = sorted(trials, key=lambda t: -t[1])
        cut = max(1, round(self.gamma * len(ranked)))
        good, bad = ranked[:cut], ranked[cut:]
        combo = []
        for p, count in enumerate(choices):
            lw, gw = _density(good, p, count), _density(bad, p, count)
            # draw a few values from the good density and keep the one with the best l/g
            draws = rng.choices(range(count), weights=lw, k=8)
            combo.append(max(draws, key=lambda v: (lw[v] / gw[v], -v)))
        return tuple(combo)

    def _most_promising(self, minibatch: dict[Combo, list[float]], full: dict[Combo, float]) -> Combo | None:
        pending = [(sum(v) / len(v), len(v), c) for c, v in minibatch.items() if c not in full]
        if not pending:
            return None
        pending.sort(key=lambda t: (-t[0], -t[1], t[2]))
        return pending[0][2]

    @staticmethod
    def _describe(combo: Combo) -> str:
        parts = [f"instr {combo[i]}/demos {combo[i + 1]}" for i in range(0, len(combo), 2)]
        return ", ".join(parts)


def _density(group: list[tuple[Combo, float]], param: int, count: int) -> list[float]:
    """How often each value of ``param`` occurs in ``group`` (with a Laplace prior)."""
    counts = [1.0] * count
    for combo, _ in group:
        counts[combo[param]] += 1.0
    total = sum(counts)
    return [x / total for x in counts]
