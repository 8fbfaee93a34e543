"""What an optimizer is given, and what it reports (the history seam for storage)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from .. import ir
from ..data import Example
from ..evaluate import RunOutcome, run_examples
from ..lm import LM, Usage
from ..metrics import Metric, score_of
from ..pipeline import Pipeline, program_from_runs


@dataclass
class Candidate:
    """A program an optimizer evaluated, with its score (kept in evaluation order)."""

    index: int
    program: ir.Program
    score: float | None
    usage: Usage = Usage()
    note: str = ""


@dataclass
class CompileTask:
    pipeline: Pipeline[..., Any]
    trainset: list[Example]
    metric: Metric | None
    lm: LM | None = None
    teacher_lm: LM | None = None
    valset: list[Example] | None = None
    seed: int = 0
    concurrency: int = 8
    history: list[Candidate] = field(default_factory=list)
    usage: Usage = Usage()
    on_candidate: Callable[[Candidate], None] | None = None

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")

    def need_metric(self, who: str) -> Metric:
        if self.metric is None:
            from ..errors import ConfigError

            raise ConfigError(f"optimizer {who!r} needs a metric: compile(..., metric=desic.metrics.exact_match)")
        return self.metric

    async def run(
        self,
        examples: list[Example],
        program: ir.Program | None,
        *,
        lm: LM | None = None,
        trace: bool = False,
    ) -> list[RunOutcome]:
        outcomes = await run_examples(
            self.pipeline,
            examples,
            program=program,
            lm=lm or self.lm,
            concurrency=self.concurrency,
            trace=trace,
        )
        for o in outcomes:
            self.usage = self.usage + o.state.usage
        return outcomes

    def score(self, outcome: RunOutcome) -> float:
        if outcome.error is not None:
            return 0.0
        return score_of(self.need_metric("evaluate")(outcome.example, outcome.output))[0]

    async def discover(self, program: ir.Program | None = None) -> ir.Program:
        """The program's nodes, observed by running the pipeline on one example."""
        outcomes = await self.run(self.trainset[:1], program, trace=True)
        if outcomes[0].error is not None and not outcomes[0].state.nodes_seen:
            from ..errors import LMError

            raise LMError(f"could not trace the pipeline on trainset row 0: {outcomes[0].error}")
        return program_from_runs(self.pipeline, [o.state for o in outcomes], base=program)

    def record(self, program: ir.Program, score: float | None, note: str = "") -> Candidate:
        cand = Candidate(index=len(self.history), program=program, score=score, usage=self.usage, note=note)
        self.history.append(cand)
        if self.on_candidate is not None:
            self.on_candidate(cand)
        return cand


def labeled_demo(node: ir.Node, example: Example, *, only_node: bool = False) -> ir.Demo | None:
    """A demo for ``node`` from a labelled example, when the example covers its fields.

    A row's single label is taken for a bare output of another name only when ``node`` is
    the program's only node (otherwise it is most likely the final node's label).
    """
    from .._utils import to_jsonable

    data = {**example.inputs, **example.labels}
    spec = node.signature
    if not all(f.name in data for f in spec.inputs if f.required):
        return None
    inputs = {f.name: to_jsonable(data[f.name]) for f in spec.inputs if f.name in data}
    required = list(spec.output_schema.get("required", spec.output_names))
    if spec.output_field is not None:
        if spec.output_field in example.labels:
            value = example.labels[spec.output_field]
        elif only_node and len(example.labels) == 1:
            value = next(iter(example.labels.values()))
        else:
            return None
        output = {spec.output_field: to_jsonable(value)}
    else:
        if not all(name in example.labels for name in required):
            return None
        output = {k: to_jsonable(example.labels[k]) for k in spec.output_names if k in example.labels}
    if node.strategy == "chain_of_thought":
        output = {"reasoning": "", **output} if "reasoning" not in output else output
    return ir.Demo(inputs=inputs, output=output, source="labeled")
