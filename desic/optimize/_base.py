"""What an optimizer is given (``CompileTask``), and what it reports (the history seam).

Every piece of LM work an optimizer does goes through the task:

- ``task.run`` / ``task.run_many`` / ``task.stream`` run the pipeline on examples under a
  program, score each outcome with the metric, and record both under a deterministic key
  (program configuration + example + LM + metric);
- ``task.call`` runs a signature of the optimizer's own (an instruction proposal, a
  rewrite) and records its answer under a key the optimizer salts (round, parent, slot).

A rerun with the same recorder therefore answers every finished piece from the record:
zero LM calls for work already done, and, because optimizers draw every random choice
from ``task.rng(salt)`` and accept results in a fixed order (never in completion order),
the same program at the end. The recorder is also where the storage layer plugs in.

Budgets are checked before each piece of work starts (``BudgetExceeded`` is raised to
the optimizer and caught by ``compile``, which returns the best candidate so far).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import msgspec

from .. import events, ir
from .._utils import to_jsonable
from ..budget import Budget, BudgetMeter
from ..data import Example
from ..errors import BudgetExceeded, ConfigError, DataError, LMError
from ..evaluate import RunOutcome, drive, run_one, thread_pool
from ..lm import LM, Usage
from ..metrics import Metric, ascore, collect_usage, metric_key, score_of
from ..pipeline import Pipeline, program_from_runs
from ..runtime import RunState, TraceEntry, context, default_node, run_scope

T = TypeVar("T")
_NO_USAGE = Usage()

Job = tuple[Example, "ir.Program | None"]


class RunRecorder(Protocol):
    """Where a compile run keeps what it has done: the seam to storage.

    Resuming a run is a deterministic replay: optimizers are seeded, and every evaluation
    or optimizer LM call whose key is already recorded is answered from the record instead
    of the LM. So a crashed run continues where it stopped without repeating finished work.
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


def _usage_of(data: Any) -> Usage:
    if not data:
        return Usage()
    calls, prompt, completion, cost = data
    return Usage(calls=int(calls), prompt_tokens=int(prompt), completion_tokens=int(completion), cost=float(cost))


_node_data: dict[int, tuple[ir.Node, Any]] = {}


def _node_builtins(node: ir.Node) -> Any:
    """``msgspec.to_builtins(node)``, cached per node object (nodes are immutable and a
    program's nodes are shared by all of its runs)."""
    hit = _node_data.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    if len(_node_data) > 4096:
        _node_data.clear()
    data = msgspec.to_builtins(node)
    _node_data[id(node)] = (node, data)
    return data


def outcome_record(outcome: RunOutcome, metric: str = "") -> dict[str, Any]:
    state = outcome.state
    return {
        "output": to_jsonable(outcome.output) if outcome.error is None else None,
        "error": outcome.error,
        "latency": outcome.latency,
        "usage": _usage_list(state.usage),
        "trace": [[e.node_id, e.inputs, e.output, e.error] for e in state.trace or []],
        "nodes": [_node_builtins(n) for n in state.nodes_seen.values()],
        "edges": sorted(state.observed_edges()),
        "metric": metric,
        "score": outcome.score,
        "feedback": outcome.feedback,
    }


def outcome_from_record(
    pipe: Pipeline[..., Any],
    index: int,
    example: Example,
    record: dict[str, Any],
    trace: bool,
    metric: str = "",
) -> RunOutcome:
    state = RunState(trace=[] if trace else None, usage=_usage_of(record.get("usage")))
    for node_data in record.get("nodes", []):
        node = msgspec.convert(node_data, ir.Node)
        state.nodes_seen[node.id] = node
    edges = record.get("edges")
    if edges:
        state.edges = {(a, b, c) for a, b, c in edges}
    if state.trace is not None:
        for node_id, inputs, output, error in record.get("trace", []):
            state.trace.append(TraceEntry(node_id, inputs, output, [], error))
    output = record.get("output")
    if record.get("error") is None and pipe.output_adapter is not None:
        output = pipe.output_adapter.validate_python(output)
    outcome = RunOutcome(
        index=index,
        example=example,
        output=output,
        error=record.get("error"),
        state=state,
        latency=record.get("latency", 0.0),
    )
    if metric and record.get("metric") == metric and record.get("score") is not None:
        outcome.score = float(record["score"])
        outcome.feedback = record.get("feedback")
    return outcome


@dataclass
class Candidate:
    """A program an optimizer evaluated, with its score, in evaluation order.

    ``split`` says what the score is measured on: ``"val"`` (the validation split, the
    scores compile picks the best from), ``"minibatch"`` (a sample of it or of the
    trainset), ``"bootstrap"`` (the share of trainset traces the metric accepted), or
    None. ``usage`` is the run's cumulative usage when the candidate was recorded.
    """

    index: int
    program: ir.Program
    score: float | None
    usage: Usage = _NO_USAGE
    note: str = ""
    split: str | None = None
    scores: list[float] | None = None
    round: int | None = None
    parent: int | None = None
    seconds: float = 0.0


@dataclass
class Scored:
    """A program's scores on some examples (what ``task.evaluate`` returns)."""

    program: ir.Program
    score: float
    scores: list[float]
    outcomes: list[RunOutcome]

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if (o.score or 0.0) < 1.0]


@dataclass
class CompileTask:
    """One compile run as an optimizer sees it: data, metric, LMs, limits and records.

    ``lm`` is the student (whose scores count), ``teacher_lm`` (optional) bootstraps demos
    and proposes instructions; ``concurrency`` bounds every batch of work; ``budget`` is
    checked before each unit of work starts; ``recorder`` memoizes everything; ``history``
    is every candidate recorded, in order.
    """

    pipeline: Pipeline[..., Any]
    trainset: list[Example]
    metric: Metric | None
    lm: LM | None = None
    teacher_lm: LM | None = None
    valset: list[Example] | None = None
    seed: int = 0
    concurrency: int = 8
    history: list[Candidate] = field(default_factory=list)
    on_candidate: Callable[[Candidate], None] | None = None
    recorder: RunRecorder = field(default_factory=MemoryRecorder)
    budget: Budget | None = None
    optimizer_name: str = ""
    memo_hits: int = 0
    meter: BudgetMeter = field(init=False)
    _example_keys: dict[int, tuple[Example, str]] = field(default_factory=dict)
    _nodes: dict[str, ir.Node] = field(default_factory=dict)
    _edges: set[tuple[str, str, str]] = field(default_factory=set)
    _splits: dict[tuple[float, int | None], tuple[list[Example], list[Example]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter = BudgetMeter(self.budget)
        self._metric_key = metric_key(self.metric)
        self._lm_metric = getattr(self.metric, "acall", None) is not None

    # --- basics ---------------------------------------------------------------------------

    @property
    def usage(self) -> Usage:
        """LM usage of the work this run did itself (replayed records cost nothing)."""
        return self.meter.usage

    @usage.setter
    def usage(self, value: Usage) -> None:
        self.meter.usage = value

    @property
    def proposer_lm(self) -> LM | None:
        """The LM that proposes instructions: the teacher if given, else the task LM."""
        return self.teacher_lm or self.lm

    def rng(self, salt: str = "") -> random.Random:
        return random.Random(f"{self.seed}:{salt}")

    def need_metric(self, who: str) -> Metric:
        if self.metric is None:
            raise ConfigError(f"optimizer {who!r} needs a metric: compile(..., metric=desic.metrics.exact_match)")
        return self.metric

    def split(self, *, fraction: float = 0.5, max_val: int | None = None) -> tuple[list[Example], list[Example]]:
        """(train, validation) examples: the valset when given, else a seeded split of the
        trainset (``fraction`` of it, at most ``max_val`` rows, for validation)."""
        if self.valset is not None:
            return self.trainset, self.valset
        key = (fraction, max_val)
        if key not in self._splits:
            n = len(self.trainset)
            if n < 2:
                self._splits[key] = (self.trainset, self.trainset)
            else:
                k = max(1, min(n - 1, round(n * fraction)))
                if max_val is not None:
                    k = max(1, min(k, max_val))
                order = list(range(n))
                self.rng("split").shuffle(order)
                val = set(order[:k])
                self._splits[key] = (
                    [e for i, e in enumerate(self.trainset) if i not in val],
                    [e for i, e in enumerate(self.trainset) if i in val],
                )
        return self._splits[key]

    @property
    def val_name(self) -> str:
        return "valset" if self.valset is not None else "trainset holdout"

    # --- running the pipeline -------------------------------------------------------------

    def _example_key(self, example: Example) -> str:
        hit = self._example_keys.get(id(example))
        if hit is not None and hit[0] is example:
            return hit[1]
        data = example.to_dict()
        try:
            key = ir.fingerprint(data)  # plain JSON data: no conversion needed
        except TypeError:
            key = ir.fingerprint(to_jsonable(data))
        self._example_keys[id(example)] = (example, key)
        return key

    async def _score(self, outcome: RunOutcome) -> None:
        if self.metric is None:
            return
        if outcome.error is not None:
            outcome.score, outcome.feedback = 0.0, None
            return
        if not self._lm_metric:
            await self._apply_metric(outcome)
            return
        # An LM-backed metric defaults to the task's LM, and its calls count as usage.
        with collect_usage() as spent, context(**({"lm": self.lm} if self.lm is not None else {})):
            await self._apply_metric(outcome)
        for u in spent:
            outcome.state.add_usage(u)

    async def _apply_metric(self, outcome: RunOutcome) -> None:
        assert self.metric is not None
        try:
            outcome.score, outcome.feedback = await ascore(self.metric, outcome.example, outcome.output)
        except (DataError, ConfigError):
            raise
        except Exception as exc:  # noqa: BLE001 - a failing metric scores 0 on this row
            outcome.score, outcome.feedback = 0.0, f"metric failed: {type(exc).__name__}: {exc}"

    def _observe(self, state: RunState) -> None:
        for node_id, node in state.nodes_seen.items():
            self._nodes.setdefault(node_id, node)
        self._edges.update(state.observed_edges())

    async def stream(
        self,
        jobs: Sequence[Job],
        *,
        lm: LM | None = None,
        stop: Callable[[], bool] | None = None,
        on_outcome: Callable[[int, RunOutcome], None] | None = None,
        gate: Callable[[int], Awaitable[bool]] | None = None,
        keep: bool = True,
    ) -> list[RunOutcome | None]:
        """Run ``(example, program)`` jobs concurrently; recorded ones are replayed.

        Outcomes carry the metric's score. ``on_outcome(i, outcome)`` is called as each job
        finishes (in completion order: accept results by ``i`` to stay deterministic);
        ``stop()`` is asked before each job starts; ``await gate(i)`` may hold job ``i``
        back, and skips it by returning False. Jobs never run are None; with
        ``keep=False`` no outcome is kept (all None: ``on_outcome`` saw them), so a long
        stream does not hold every run alive. Raises ``BudgetExceeded`` once the work
        started is done if a budget ran out.
        """
        active = lm or self.lm
        describe = active.describe() if active is not None else None
        bases: dict[int, tuple[ir.Program | None, str]] = {}
        results: list[RunOutcome | None] = [None] * len(jobs)
        direct = self.pipeline.is_async or getattr(self.pipeline, "signature", None) is not None
        executor = None if direct else thread_pool(self.concurrency)

        def base_of(program: ir.Program | None) -> str:
            hit = bases.get(id(program))
            if hit is None or hit[0] is not program:
                hit = (program, ir.fingerprint([program_key(program), describe, self._metric_key]))
                bases[id(program)] = hit
            return hit[1]

        def halt() -> bool:
            return self.meter.reason() is not None or (stop is not None and stop())

        finished = 0

        async def work(i: int) -> None:
            nonlocal finished
            if gate is not None and not await gate(i):
                return
            example, program = jobs[i]
            key = ir.fingerprint([base_of(program), self._example_key(example)])
            record = self.recorder.get_evaluation(key)
            if record is not None:
                self.memo_hits += 1
                outcome = outcome_from_record(self.pipeline, i, example, record, True, self._metric_key)
                if self.metric is not None and outcome.score is None:
                    await self._score(outcome)
                    self.recorder.put_evaluation(key, outcome_record(outcome, self._metric_key))
            else:
                self.meter.start()
                outcome = await run_one(
                    self.pipeline, example, program=program, lm=active, trace=True, index=i, executor=executor
                )
                try:
                    await self._score(outcome)
                finally:
                    self.meter.finish(outcome.state.usage)
                self._observe(outcome.state)
                self.recorder.put_evaluation(key, outcome_record(outcome, self._metric_key))
            finished += 1
            if keep:
                results[i] = outcome
            if on_outcome is not None:
                on_outcome(i, outcome)

        await drive(len(jobs), work, concurrency=self.concurrency, stop=halt)
        unfinished = self.meter.stopped is not None and finished < len(jobs)
        if unfinished and (stop is None or not stop()):
            self.meter.check()
        return results

    async def run(
        self,
        examples: list[Example],
        program: ir.Program | None,
        *,
        lm: LM | None = None,
        trace: bool = True,
    ) -> list[RunOutcome]:
        """Run the pipeline on ``examples`` under ``program``, in order, scored.

        Outcomes always carry the trace of node inputs and outputs (``trace`` is kept for
        compatibility); recorded results are reused.
        """
        outcomes = await self.stream([(e, program) for e in examples], lm=lm)
        return [o for o in outcomes if o is not None]

    async def run_many(
        self, programs: Sequence[ir.Program | None], examples: list[Example], *, lm: LM | None = None
    ) -> list[list[RunOutcome]]:
        """Every program on every example, all through one concurrency limit."""
        jobs = [(e, p) for p in programs for e in examples]
        flat = await self.stream(jobs, lm=lm)
        n = len(examples)
        return [[o for o in flat[k * n : (k + 1) * n] if o is not None] for k in range(len(programs))]

    async def run_pairs(
        self, pairs: Sequence[tuple[ir.Program | None, list[Example]]], *, lm: LM | None = None
    ) -> list[list[RunOutcome]]:
        """Each program on its own examples (e.g. minibatches), through one concurrency limit."""
        jobs = [(e, p) for p, examples in pairs for e in examples]
        flat = await self.stream(jobs, lm=lm)
        out, at = [], 0
        for _, examples in pairs:
            out.append([o for o in flat[at : at + len(examples)] if o is not None])
            at += len(examples)
        return out

    async def evaluate(self, program: ir.Program, examples: list[Example]) -> Scored:
        """``program``'s mean score on ``examples`` (not recorded as a candidate)."""
        return (await self.evaluate_many([program], examples))[0]

    async def evaluate_many(self, programs: Sequence[ir.Program], examples: list[Example]) -> list[Scored]:
        self.need_metric(self.optimizer_name or "evaluate")
        out = []
        for program, outcomes in zip(programs, await self.run_many(programs, examples)):
            scores = [o.score or 0.0 for o in outcomes]
            out.append(Scored(program, sum(scores) / len(scores) if scores else 0.0, scores, outcomes))
        return out

    def score(self, outcome: RunOutcome) -> float:
        if outcome.score is not None:
            return outcome.score
        if outcome.error is not None:
            return 0.0
        return score_of(self.need_metric("evaluate")(outcome.example, outcome.output))[0]

    async def discover(self, program: ir.Program | None = None) -> ir.Program:
        """The program's nodes, observed by running the pipeline on one example."""
        outcomes = await self.run(self.trainset[:1], program, trace=True)
        if outcomes[0].error is not None and not outcomes[0].state.nodes_seen:
            raise LMError(f"could not trace the pipeline on trainset row 0: {outcomes[0].error}")
        return program_from_runs(self.pipeline, [o.state for o in outcomes], base=program)

    def observed_program(self) -> ir.Program:
        """The nodes seen in any run so far with their default configuration (zero-shot)."""
        return ir.Program(
            pipeline=self.pipeline.ref,
            nodes=tuple(self._nodes.values()),
            edges=tuple(ir.Edge(s, d, f) for s, d, f in sorted(self._edges)),
        )

    # --- the optimizer's own LM calls -----------------------------------------------------

    async def call(
        self,
        sig: Any,
        inputs: dict[str, Any],
        *,
        key_salt: str = "",
        lm: LM | None = None,
        temperature: float | None = None,
        seed: int | None = None,
        max_tokens: int | None = None,
    ) -> Any:
        """Run signature ``sig`` on ``inputs`` for the optimizer itself; memoized.

        The record key covers the signature, the inputs, the LM, the sampling overrides
        and ``key_salt`` (say which round/parent/slot this call is for, so distinct
        proposals get distinct keys). Runs on the teacher LM if given, else the task LM.
        Returns the output, or None when the call failed (the failure is recorded too, so
        a replay takes the same path).
        """
        active = lm or self.proposer_lm
        overrides = ir.LMOverrides(temperature=temperature, seed=seed, max_tokens=max_tokens)
        key = ir.fingerprint(
            [
                "call",
                sig.spec.fingerprint,
                sig.strategy,
                to_jsonable(inputs),
                active.describe() if active is not None else None,
                msgspec.to_builtins(overrides),
                key_salt,
            ]
        )
        record = self.recorder.get_evaluation(key)
        if record is None:
            self.meter.check()
            node_id = sig.node_name or sig.spec.name
            node = msgspec.structs.replace(default_node(sig, node_id), lm=overrides)
            state = RunState(program=ir.Program(nodes=(node,)), lm=active)
            error = None
            value = None
            self.meter.start()
            try:
                with run_scope(state):  # its own run: never part of the user's pipeline
                    pending = sig.acall(**inputs)
                value = await pending
            except BudgetExceeded:
                raise
            except Exception as exc:  # noqa: BLE001 - a failed proposal is skipped, not fatal
                error = f"{type(exc).__name__}: {exc}"
            finally:
                self.meter.finish(state.usage)
            record = {
                "output": to_jsonable(value) if error is None else None,
                "error": error,
                "usage": _usage_list(state.usage),
            }
            self.recorder.put_evaluation(key, record)
            if events.active():
                events.emit("proposal", optimizer=self.optimizer_name, signature=sig.spec.name, error=error)
            return value
        self.memo_hits += 1
        if record.get("error") is not None:
            return None
        data = record.get("output")
        if sig.spec.output_field is not None:
            return getattr(sig.output_model.model_validate({sig.spec.output_field: data}), sig.spec.output_field)
        return sig.output_model.model_validate(data)

    async def gather(self, *aws: Awaitable[T]) -> list[T]:
        """Await all of ``aws`` concurrently, results in order; then raise the first error.

        Unlike ``asyncio.gather``, nothing is left running in the background when one fails
        (a budget stop must not leave LM calls going after compile returned).
        """
        results = await asyncio.gather(*aws, return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r
        return results  # type: ignore[return-value]

    # --- reporting ------------------------------------------------------------------------

    def record(
        self,
        program: ir.Program,
        score: float | None,
        note: str = "",
        *,
        split: str | None = None,
        scores: list[float] | None = None,
        round: int | None = None,
        parent: int | None = None,
    ) -> Candidate:
        """Add ``program`` to the history (and the recorder), and emit a ``candidate`` event."""
        usage = self.usage
        cand = Candidate(
            index=len(self.history),
            program=program,
            score=score,
            usage=usage,
            note=note,
            split=split,
            scores=scores,
            round=round,
            parent=parent,
            seconds=self.meter.elapsed(),
        )
        self.history.append(cand)
        self.recorder.add_candidate(
            {
                "index": cand.index,
                "score": score,
                "note": note,
                "split": split,
                "scores": scores,
                "round": round,
                "parent": parent,
                "usage": _usage_list(usage),
                "seconds": cand.seconds,
                "program": msgspec.to_builtins(program),
            }
        )
        if events.active():
            events.emit(
                "candidate",
                optimizer=self.optimizer_name,
                index=cand.index,
                score=score,
                split=split,
                note=note,
                round=round,
                calls=usage.calls,
                cost=usage.cost,
            )
        if self.on_candidate is not None:
            self.on_candidate(cand)
        return cand

    def iteration(self, round: int, best: float | None, **data: Any) -> None:
        """Emit an ``iteration`` event: an optimizer round ended."""
        if events.active():
            events.emit("iteration", optimizer=self.optimizer_name, round=round, best=best, **data)

    def best(self, split: str = "val") -> Candidate | None:
        """The best-scoring candidate on ``split`` (the earliest among equals)."""
        best: Candidate | None = None
        for cand in self.history:
            if cand.split == split and cand.score is not None and (best is None or cand.score > (best.score or 0.0)):
                best = cand
        return best


def labeled_demo(node: ir.Node, example: Example, *, only_node: bool = False) -> ir.Demo | None:
    """A demo for ``node`` from a labelled example, when the example covers its fields.

    A row's single label is taken for a bare output of another name only when ``node`` is
    the program's only node (otherwise it is most likely the final node's label).
    """
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


def with_node_changes(program: ir.Program, node_id: str, **changes: Any) -> ir.Program:
    """``program`` with one node's fields replaced (instructions, demos, ...)."""
    node = program.node(node_id)
    if node is None:
        raise KeyError(node_id)
    return program.with_node(msgspec.structs.replace(node, **changes))


async def initial_program(task: CompileTask, init: Any, train: list[Example] | None = None) -> ir.Program:
    """The starting point of an instruction optimizer: zero-shot (``None``) or what another
    optimizer (a registered name or an instance, e.g. ``"bootstrap"``) produces.

    The built-in demo optimizers draw their demos from ``train`` only, so validation rows
    never show up as demos (their scores would flatter the program).
    """
    if init is None or init == "zero_shot":
        return await task.discover()
    from . import resolve

    opt = resolve(init)
    if train is not None and getattr(opt, "takes_examples", False):
        return await opt.optimize(task, examples=train)  # type: ignore[call-arg, no-any-return]
    return await opt.optimize(task)  # type: ignore[no-any-return]
