"""What an optimizer is given, and what it reports (the history seam for storage)."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import msgspec

from .. import ir
from ..data import Example
from .._utils import to_jsonable
from ..evaluate import RunOutcome, run_examples
from ..lm import LM, Usage
from ..metrics import Metric, score_of
from ..pipeline import Pipeline, program_from_runs
from ..runtime import RunState, TraceEntry


class RunRecorder(Protocol):
    """Where a compile run keeps what it has done: the seam to storage.

    Resuming a run is a deterministic replay: optimizers are seeded, and every evaluation
    whose key is already recorded is answered from the record instead of the LM. So a
    crashed run continues where it stopped without repeating finished work.
    """

    def get_evaluation(self, key: str) -> dict[str, Any] | None: ...

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None: ...

    def add_candidate(self, record: dict[str, Any]) -> None: ...


class MemoryRecorder:
    """A recorder that keeps everything in memory (the default)."""

    def __init__(self) -> None:
        self.evaluations: dict[str, dict[str, Any]] = {}
        self.candidates: list[dict[str, Any]] = []

    def get_evaluation(self, key: str) -> dict[str, Any] | None:
        return self.evaluations.get(key)

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None:
        self.evaluations[key] = record

    def add_candidate(self, record: dict[str, Any]) -> None:
        self.candidates.append(record)


def program_key(program: ir.Program | None) -> str:
    """What of a program changes its answers (node configs), hashed."""
    if program is None:
        return "zero-shot"
    return ir.fingerprint(msgspec.to_builtins(program.nodes))


def _usage_list(u: Usage) -> list[float]:
    return [u.calls, u.prompt_tokens, u.completion_tokens, u.cost]


def outcome_record(outcome: RunOutcome) -> dict[str, Any]:
    state = outcome.state
    return {
        "output": to_jsonable(outcome.output) if outcome.error is None else None,
        "error": outcome.error,
        "latency": outcome.latency,
        "usage": _usage_list(state.usage),
        "trace": [[e.node_id, e.inputs, e.output, e.error] for e in state.trace or []],
        "nodes": [msgspec.to_builtins(n) for n in state.nodes_seen.values()],
        "edges": sorted(state.edges),
    }


def outcome_from_record(
    pipe: Pipeline[..., Any], index: int, example: Example, record: dict[str, Any], trace: bool
) -> RunOutcome:
    state = RunState(trace=[] if trace else None)
    for node_data in record.get("nodes", []):
        node = msgspec.convert(node_data, ir.Node)
        state.nodes_seen[node.id] = node
    state.edges = {(a, b, c) for a, b, c in record.get("edges", [])}
    if state.trace is not None:
        for node_id, inputs, output, error in record.get("trace", []):
            state.trace.append(TraceEntry(node_id, inputs, output, [], error))
    output = record.get("output")
    if record.get("error") is None and pipe.output_adapter is not None:
        output = pipe.output_adapter.validate_python(output)
    return RunOutcome(index=index, example=example, output=output, error=record.get("error"), state=state, latency=record.get("latency", 0.0))


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
    recorder: RunRecorder = field(default_factory=MemoryRecorder)
    memo_hits: int = 0
    _example_keys: dict[int, tuple[Example, str]] = field(default_factory=dict)

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
        """Run the pipeline on ``examples`` under ``program``; recorded results are reused.

        The record key covers the program's node configs, the example, the LM and whether
        a trace was asked for, so only truly identical work is skipped.
        """
        active = lm or self.lm
        base = ir.fingerprint(
            [program_key(program), active.describe() if active is not None else None, trace]
        )
        keys = [ir.fingerprint([base, self._example_key(e)]) for e in examples]
        results: list[RunOutcome | None] = [None] * len(examples)
        todo: list[int] = []
        for i, key in enumerate(keys):
            record = self.recorder.get_evaluation(key)
            if record is None:
                todo.append(i)
            else:
                self.memo_hits += 1
                results[i] = outcome_from_record(self.pipeline, i, examples[i], record, trace)
        if todo:
            fresh = await run_examples(
                self.pipeline,
                [examples[i] for i in todo],
                program=program,
                lm=active,
                concurrency=self.concurrency,
                trace=trace,
            )
            for i, outcome in zip(todo, fresh):
                outcome.index = i
                results[i] = outcome
                self.usage = self.usage + outcome.state.usage
                self.recorder.put_evaluation(keys[i], outcome_record(outcome))
        return [r for r in results if r is not None]

    def _example_key(self, example: Example) -> str:
        hit = self._example_keys.get(id(example))
        if hit is not None and hit[0] is example:
            return hit[1]
        key = ir.fingerprint(to_jsonable(example.to_dict()))
        self._example_keys[id(example)] = (example, key)
        return key

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
        self.recorder.add_candidate(
            {
                "index": cand.index,
                "score": score,
                "note": note,
                "usage": _usage_list(self.usage),
                "program": msgspec.to_builtins(program),
            }
        )
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
