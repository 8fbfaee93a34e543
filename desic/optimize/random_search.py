"""``random_search``: bootstrap once, then try random demo subsets and keep the best.

DSPy's BootstrapFewShotWithRandomSearch re-bootstraps every candidate; here one bootstrap
pass over the training split fills a pool of accepted traces per node (``pool`` each,
stopping early once full) and the candidates are random subsets of that pool plus
labelled demos. Every candidate is scored on the validation split (the valset, or a
seeded holdout of the trainset), all through one concurrency limit. Candidates:
zero-shot, the plain bootstrap program, then ``num_candidates`` random subsets
(1..``max_demos`` demos per node). The start is the bootstrap program, or zero-shot when it
scores higher on validation (a base model that copies its demos' answers); it is kept
unless the best other candidate beats it with evidence, or ties it with a shorter prompt
(``_select``).
Then (``per_input``) per-input demos: each input shown the k pool demos nearest it
(``knn``), for k = ``max_demos`` and half of it, matched by BM25 (``per_input=True``) or
by the LM's embeddings (``per_input="embeddings"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import msgspec

from .. import ir
from ._options import COUNT, POSITIVE, SHARE, Range
from ._search import SearchOptimizer, bootstrap_seed, demo_pool, sample_demos
from ._select import select_final
from .knn import embed_pools, knn_pool, per_input_option, per_input_program
from .task import CompileTask


@dataclass(eq=False)
class RandomSearch(SearchOptimizer):
    name = "random_search"

    num_candidates: int = 8
    max_demos: int = 4
    max_labeled: int = 4
    pool: int | None = None
    threshold: float = 1.0
    val_fraction: float = 0.5
    max_val: int | None = 200
    per_input: bool | str = True  # True: per-input demos by BM25; "embeddings": by the LM's embeddings

    RANGES: ClassVar[dict[str, Range]] = {
        "num_candidates": COUNT, "max_demos": POSITIVE, "max_labeled": COUNT, "pool": Range(1, none=True),
        "threshold": SHARE, **SearchOptimizer.RANGES,
    }

    def __post_init__(self) -> None:
        super().__post_init__()
        per_input_option(self.name, self.per_input)  # a bad choice fails before any LM call

    async def optimize(self, task: CompileTask) -> ir.Program:
        train, val = self.splits(task)
        bootstrapped, found = await bootstrap_seed(
            task,
            train,
            want=self.pool or 2 * self.max_demos,
            max_demos=self.max_demos,
            max_labeled=self.max_labeled,
            threshold=self.threshold,
        )
        zero_shot = bootstrapped.replace(
            nodes=tuple(msgspec.structs.replace(n, demos=()) for n in bootstrapped.nodes)
        )
        candidates: list[tuple[ir.Program, str]] = [(zero_shot, "zero-shot"), (bootstrapped, "bootstrap")]
        pools = self._pools(task, train, found.demos, bootstrapped)
        rng = task.rng("random_search")
        seen = {ir.fingerprint(msgspec.to_builtins(p.nodes)) for p, _ in candidates}
        for c in range(self.num_candidates):
            program = bootstrapped
            sizes = []
            for node in bootstrapped.nodes:
                choices = pools.get(node.id, [])
                k = rng.randint(1, max(1, min(self.max_demos, len(choices)))) if choices else 0
                picked = sample_demos(choices, k, rng) if k else ()
                sizes.append(f"{node.id}:{k}")
                program = program.with_node(msgspec.structs.replace(node, demos=tuple(picked)))
            key = ir.fingerprint(msgspec.to_builtins(program.nodes))
            if key in seen:
                continue
            seen.add(key)
            candidates.append((program, f"random subset {c} ({', '.join(sizes)})"))
        by = per_input_option(self.name, self.per_input)
        if by is not None:
            only_node = len(bootstrapped.nodes) == 1
            knn_pools = {
                n.id: knn_pool(n, found.demos.get(n.id, []), train, only_node=only_node) for n in bootstrapped.nodes
            }
            widest = await embed_pools(task, per_input_program(bootstrapped, knn_pools, self.max_demos, by=by))
            for k in sorted({max(1, self.max_demos // 2), self.max_demos}):
                program = widest.replace(nodes=tuple(  # the pools (and their vectors, embedded once) with k each
                    msgspec.structs.replace(n, select=msgspec.structs.replace(n.select, k=k)) if n.select else n
                    for n in widest.nodes
                ))
                if program.nodes != bootstrapped.nodes:
                    candidates.append((program, f"per-input demos (knn, k={k}{', by embeddings' if by != 'bm25' else ''})"))
        scored = await task.evaluate_many([p for p, _ in candidates], val)
        indexes = []
        for (program, note), s in zip(candidates, scored):
            indexes.append(task.record(program, s.score, note, split="val", scores=s.scores, round=0).index)
        task.iteration(0, max(s.score for s in scored), candidates=len(candidates))
        # the start is the better cheap program on validation: the bootstrap one, or zero-shot
        # when that scores higher (a base model that copies demo answers); every other
        # candidate must beat the start with evidence
        start = indexes[0] if scored[0].score > scored[1].score else indexes[1]
        return await select_final(task, start, indexes, train)

    def _pools(
        self, task: CompileTask, train: list[Any], demos: dict[str, list[ir.Demo]], program: ir.Program
    ) -> dict[str, list[ir.Demo]]:
        """Per node: the accepted traces, then labelled demos from the training rows."""
        only_node = len(program.nodes) == 1
        return {
            node.id: demo_pool(node, demos.get(node.id, []), train, only_node=only_node, labeled=self.max_labeled)
            for node in program.nodes
        }
