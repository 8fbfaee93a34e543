"""``knn``: per-input demos, the ``k`` pool examples most similar to each input.

One bootstrap pass over the trainset (as ``bootstrap`` does: the trace-producing model
sees ``teacher_demos`` labelled demos of other rows) collects up to ``pool`` accepted
traces per node; every labelled row that covers a node's fields joins its pool too (rows
whose trace was accepted are there already). Each node then prompts with the ``k`` demos
of its pool most similar to the input at hand (BM25 over the input fields, ``fields`` to
restrict them): ``ir.DemoSelect(mode="knn")``, plain data in the artifact, the index
rebuilt from the pool wherever the program is loaded.

While a compile scores programs, a pool demo with the very inputs of the query is never
shown (``desic.render.leave_one_out``; on Ray workers too), so scoring the program on the
rows its pool came from is still a fair, leave-one-out, estimate. Outside a compile an
input identical to a pool demo's gets that demo first.

``per_input_program`` and ``knn_pool`` are the pieces the search optimizers use to put
per-input demos into their search space (``random_search``, ``mipro``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec

from .. import ir
from ..data import Example
from ..errors import ConfigError
from ..lm import counting_embeddings
from ..render import match_text
from ._options import COUNT, POSITIVE, SHARE, Range, check
from .bootstrap import collect_traces, fill_program, record_pool
from .demos import labeled_rows
from .task import CompileTask

__all__ = ["KNN", "embed_pools", "embed_select", "knn_pool", "per_input_option", "per_input_program"]


def knn_pool(node: ir.Node, accepted: Sequence[ir.Demo], rows: list[Example], *, only_node: bool) -> tuple[ir.Demo, ...]:
    """A node's per-input demo pool: the accepted traces, then a labelled demo of every row
    of ``rows`` whose inputs no demo of the pool has (in row order)."""
    pool = list(accepted)
    seen = {ir.fingerprint(d.inputs) for d in pool}
    for _, demo in labeled_rows(node, rows, range(len(rows)), only_node):
        key = ir.fingerprint(demo.inputs)
        if key not in seen:
            seen.add(key)
            pool.append(demo)
    return tuple(pool)


def per_input_program(
    program: ir.Program,
    pools: Mapping[str, Sequence[ir.Demo]],
    k: int,
    *,
    by: str = "bm25",
    fields: Mapping[str, tuple[str, ...]] | None = None,
) -> ir.Program:
    """``program`` with every node that has a pool prompting with per-input demos (``k``
    of its pool); a node without a pool keeps its demos."""
    for node in program.nodes:
        pool = tuple(pools.get(node.id, ()))
        if not pool:
            continue
        select = ir.DemoSelect(mode="knn", k=k, by=by, fields=(fields or {}).get(node.id, ()), pool=pool)
        program = program.with_node(msgspec.structs.replace(node, demos=(), select=select))
    return program


async def embed_select(task: CompileTask, node: ir.Node, select: ir.DemoSelect, batch: int = 64) -> ir.DemoSelect:
    """``select`` with its pool's vectors when it matches by embeddings: every pool demo's
    match text embedded by the task's LM (the one the program will run with), as unit
    vectors. Any other ``select`` is returned as it is."""
    from ..runtime import current_lm

    if not select.per_input or select.by != "embeddings" or len(select.vectors) == len(select.pool):
        return select
    lm = task.lm or current_lm()
    embed = getattr(lm, "embed", None)
    if embed is None:
        raise ConfigError(
            f"optimizer {task.optimizer_name or 'knn'!r}: per-input demos by embeddings need an LM that can embed; "
            f"{getattr(lm, 'name', lm)!r} cannot (match by 'bm25' instead)"
        )
    texts = [match_text(node, d.inputs) for d in select.pool]
    vectors: list[tuple[float, ...]] = []
    for start in range(0, len(texts), batch):
        task.meter.check()  # before each request, as before each run
        with counting_embeddings() as tally:
            try:
                answered = await embed(texts[start : start + batch])
            finally:
                task.meter.add(tally.usage)  # the compile's usage and budget count them
        for v in answered:
            norm = math.sqrt(sum(x * x for x in v)) or 1.0
            vectors.append(tuple(round(x / norm, 6) for x in v))
    return msgspec.structs.replace(select, vectors=tuple(vectors))


async def embed_pools(task: CompileTask, program: ir.Program) -> ir.Program:
    """``program`` with each embeddings-matched pool's vectors (``embed_select``)."""
    for node in program.nodes:
        if node.select is not None:
            select = await embed_select(task, node, node.select)
            if select is not node.select:
                program = program.with_node(msgspec.structs.replace(node, select=select))
    return program


def per_input_option(who: str, value: object) -> str | None:
    """A search optimizer's ``per_input`` option as the retriever it names: ``True`` is
    BM25, ``False`` none, or a retriever's name (``"embeddings"``)."""
    if value is True:
        return "bm25"
    if value is False:
        return None
    if isinstance(value, str) and value in ir.DEMO_RETRIEVERS:
        return value
    raise ConfigError(
        f"optimizer {who!r}: per_input={value!r} is not a choice; give True (BM25), False (no per-input demos) "
        f"or how to match them: {', '.join(repr(r) for r in ir.DEMO_RETRIEVERS)}"
    )


class KNN:
    name = "knn"

    def __init__(
        self,
        k: int = 4,
        pool: int | None = None,
        threshold: float = 1.0,
        teacher_demos: int | None = None,
        bootstrap: bool = True,
        fields: list[str] | tuple[str, ...] | None = None,
        by: str = "bm25",
    ):
        for option, value, allowed in (
            ("k", k, POSITIVE),
            ("pool", pool, Range(1, none=True)),
            ("threshold", threshold, SHARE),
            ("teacher_demos", teacher_demos, Range(0, none=True)),
        ):
            check(self.name, option, value, allowed)
        if by not in ir.DEMO_RETRIEVERS:
            raise ConfigError(f"optimizer 'knn': by={by!r} is unknown; per-input demos are matched by: {', '.join(ir.DEMO_RETRIEVERS)}")
        if fields is not None and (isinstance(fields, str) or not all(isinstance(f, str) for f in fields)):
            raise ConfigError("optimizer 'knn': fields must be a list of input names, e.g. fields=['question']")
        self.k = k
        self.pool = pool
        self.threshold = threshold
        self.teacher_demos = k if teacher_demos is None else teacher_demos
        self.bootstrap = bool(bootstrap)
        self.fields = tuple(fields or ())
        self.by = by
        check(self.name, "teacher_demos", self.teacher_demos, COUNT)

    def config(self) -> dict[str, Any]:
        return {
            "k": self.k,
            "pool": self.pool,
            "threshold": self.threshold,
            "teacher_demos": self.teacher_demos,
            "bootstrap": self.bootstrap,
            "fields": list(self.fields),
            "by": self.by,
        }

    takes_examples = True  # initial_program may restrict it to a training split
    checks_baseline = True  # compile keeps the pipeline as written when it scores higher

    async def optimize(self, task: CompileTask, examples: list[Example] | None = None) -> ir.Program:
        rows = task.trainset if examples is None else examples
        if self.bootstrap:
            task.need_metric(self.name)
            found = await collect_traces(
                task,
                rows,
                want=self.pool or max(1, len(rows)),
                threshold=self.threshold,
                lm=task.teacher_lm,
                teacher_demos=self.teacher_demos,
            )
            base = fill_program(task, rows, found, max_demos=self.k, max_labeled=0)
            record_pool(task, base, found, "knn pool (bootstrap)")  # re-raises a budget stop
            accepted = found.demos
        else:
            base = await task.discover()
            accepted = {}
        only_node = len(base.nodes) == 1
        pools: dict[str, tuple[ir.Demo, ...]] = {}
        fields: dict[str, tuple[str, ...]] = {}
        for node in base.nodes:
            pool = knn_pool(node, accepted.get(node.id, []), rows, only_node=only_node)
            if self.pool is not None:
                pool = pool[: self.pool]
            pools[node.id] = pool
            names = node.signature.input_names
            missing = [f for f in self.fields if f not in names]
            if self.fields and len(missing) == len(self.fields):
                raise ConfigError(
                    f"optimizer 'knn': fields {list(self.fields)} name no input of node {node.id!r}; "
                    f"its inputs: {', '.join(names)}"
                )
            fields[node.id] = tuple(f for f in self.fields if f in names)
        program = per_input_program(base, pools, self.k, by=self.by, fields=fields)
        if self.by == "embeddings":
            program = await embed_pools(task, program)
        sizes = ", ".join(f"{n}: {len(p)}" for n, p in pools.items())
        task.record(program, None, f"per-input demos: k={self.k} of pools ({sizes})")
        return program
