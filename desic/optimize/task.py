"""What an optimizer is given: ``CompileTask``, a thin layer over the engine and the record.

Every piece of LM work an optimizer does goes through the task:

- ``task.stream`` / ``run`` / ``run_many`` / ``run_pairs`` run the pipeline on examples
  under a program through the engine's executor, score each outcome with the metric, and
  record both under a deterministic key (program configuration + example + LM + metric);
- ``task.call`` runs a signature of the optimizer's own (an instruction proposal, a
  rewrite) as a run of its own and records its answer under a key the optimizer salts.

A rerun with the same recorder therefore answers every finished piece from the record:
zero LM calls for work already done, and, because optimizers draw every random choice
from ``task.rng(salt)`` and accept results in a fixed order (never in completion order),
the same program at the end. Budgets are checked before each piece of work starts
(``BudgetExceeded`` is raised to the optimizer; ``compile`` returns the best so far).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import events, ir
from .._json import to_jsonable
from ..budget import Budget, BudgetMeter
from ..data import Example, holdout_split
from ..engine import LOCAL, Executor, Job, RunOutcome, score_outcome
from ..errors import BudgetExceeded, ConfigError, LMError, MetricError
from ..lm import LM, Usage
from ..metrics import Metric, metric_key
from ..pipeline import Pipeline, observed_program, program_from_runs
from ..react import step_guard
from ..record import (
    MemoryRecorder,
    NodeEncoder,
    RunRecorder,
    outcome_from_record,
    outcome_record,
    program_key,
)
from .calls import own_call
from .history import Candidate, Scored

__all__ = ["CHECK_MAX", "CHECK_MIN", "CompileTask"]

#: rows (valset, else trainset) from which a quarter is kept apart to check the final choice
CHECK_MIN = 80
CHECK_MAX = 100

T = TypeVar("T")


def demo_key(demo: ir.Demo) -> str:
    return ir.fingerprint([demo.inputs, demo.output])


@dataclass
class CompileTask:
    """One compile run as an optimizer sees it: data, metric, LMs, limits and records.

    ``lm`` is the student (whose scores count), ``teacher_lm`` (optional) bootstraps demos
    and proposes instructions; ``concurrency`` bounds every batch of work; ``budget`` is
    checked before each unit of work starts; ``recorder`` memoizes everything; ``history``
    is every candidate recorded, in order; ``executor`` runs the batches.

    An evaluation whose LM call failed after its retries is an error, not a score: it is
    never recorded (a resumed run runs it again) and counts in ``errors``; one more than
    ``max_errors`` stops the compile with an ``LMError``. A metric that raises stops it at
    once with a ``MetricError``.
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
    executor: Executor = LOCAL
    max_errors: int | None = 10
    memo_hits: int = 0
    errors: int = 0
    last_error: str | None = None
    meter: BudgetMeter = field(init=False)
    _example_keys: dict[int, tuple[Example, str]] = field(default_factory=dict)
    # an evaluation key -> the key of a recorded run that is the same run (see ``discover``)
    _same_run: dict[str, str] = field(default_factory=dict)
    _nodes: dict[str, ir.Node] = field(default_factory=dict)
    _edges: set[tuple[str, str, str]] = field(default_factory=set)
    _splits: dict[tuple[float, int | None], tuple[list[Example], list[Example]]] = field(default_factory=dict)
    _check: tuple[list[Example], list[Example]] | None = None  # (check rows, the rest)
    proposals_failed: int = 0
    proposals: int = 0
    last_proposal_error: str | None = None
    _encode: NodeEncoder = field(default_factory=NodeEncoder)
    # which training row each bootstrapped demo came from (demo key -> row key), so that the
    # rows a multi-node program never shows can judge it (``desic.optimize._select``)
    demo_rows: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.meter = BudgetMeter(self.budget)
        self._metric_key = metric_key(self.metric)

    @property
    def usage(self) -> Usage:
        """LM usage of the work this run did itself (replayed records cost nothing)."""
        return self.meter.usage

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

    def _checked(self) -> tuple[list[Example], list[Example]]:
        """(check rows, the rest): with ``CHECK_MIN`` rows or more to spare (the valset
        when given, else the trainset), a seeded quarter of them (at most ``CHECK_MAX``)
        is kept from the search to check its final choice on; else none."""
        if self._check is None:
            rows = self.valset if self.valset is not None else self.trainset
            if len(rows) < CHECK_MIN:
                self._check = ([], rows)
            else:
                rest, check = holdout_split(rows, 0.25, CHECK_MAX, self.rng("check"))
                self._check = (check, rest)
        return self._check

    def check_split(self) -> list[Example]:
        """Rows no optimizer sees while searching: the final choice is scored on them
        (``desic.optimize._select``). Empty below ``CHECK_MIN`` rows."""
        return self._checked()[0]

    def split(self, *, fraction: float = 0.5, max_val: int | None = None) -> tuple[list[Example], list[Example]]:
        """(train, validation) examples: the valset when given, else a seeded split of the
        trainset (``fraction`` of it, at most ``max_val`` rows, for validation); rows of
        ``check_split()`` are in neither."""
        _, rest = self._checked()
        if self.valset is not None:
            return self.trainset, rest
        key = (fraction, max_val)
        if key not in self._splits:
            self._splits[key] = holdout_split(rest, fraction, max_val, self.rng("split"))
        return self._splits[key]

    @property
    def val_name(self) -> str:
        return "valset" if self.valset is not None else "trainset holdout"

    def note_demo_row(self, demo: ir.Demo, example: Example) -> None:
        """Remember that ``demo`` was made from the run of ``example``."""
        self.demo_rows[demo_key(demo)] = self._example_key(example)

    def demo_row(self, demo: ir.Demo) -> str | None:
        """The key (``_example_key``) of the training row ``demo`` was made from, if known."""
        return self.demo_rows.get(demo_key(demo))

    def row_key(self, example: Example) -> str:
        return self._example_key(example)

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
        """The metric's score on ``outcome``: 0 for a run the program failed (its output
        never validated, its code raised); a metric that raises is a ``MetricError``."""
        if self.metric is None:
            return
        if outcome.error is not None:
            outcome.score, outcome.feedback = 0.0, None
            return
        await score_outcome(self.metric, outcome, lm=self.lm)
        if outcome.metric_error is not None:
            split, row = self._row_of(outcome.example)
            raise MetricError(
                f"the metric {self._metric_key} raised on {split} row {row}: {outcome.metric_error.removeprefix('metric failed: ')}; "
                "a metric must return a float, a bool or (score, feedback) for every output (fix it, then resume the run)",
                metric=self._metric_key,
                row=row,
            )

    def _row_of(self, example: Example) -> tuple[str, int | None]:
        """Which row of the trainset or valset ``example`` is."""
        for name, rows in (("trainset", self.trainset), ("valset", self.valset or [])):
            for i, e in enumerate(rows):
                if e is example:
                    return name, i
        return "example", None

    def _agent_step(self, used: Usage) -> None:
        """Before each step of an agent: ``BudgetExceeded`` once the budget is out, or once
        this run's spend so far and one more call would pass it (``react.step_guard``)."""
        hit = self.meter.stopped
        budget = self.meter.budget
        if hit is None and budget:
            hit = budget.exceeded(self.meter.usage + used, self.meter.elapsed(), next_unit=Usage(calls=1))
        if hit is not None:
            raise BudgetExceeded(f"budget {hit[0]} ran out in the middle of an agent's run: {hit[1]}", budget=hit[0])

    def _failed(self, outcome: RunOutcome) -> None:
        """Count an evaluation whose LM call failed after its retries; past ``max_errors``
        stop the compile (what was recorded so far stays: a resume continues from it)."""
        self.errors += 1
        self.last_error = outcome.error
        if self.max_errors is not None and self.errors > self.max_errors:
            raise LMError(
                f"{self.errors} evaluations failed after their LM call's retries (max_errors={self.max_errors}); "
                f"last: {outcome.error}. Fix the LM or the server, then resume the run; failed evaluations "
                "were not recorded and run again"
            )

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

        Outcomes carry the metric's score and the trace of node inputs and outputs.
        ``on_outcome(i, outcome)`` is called as each job finishes (in completion order:
        accept results by ``i`` to stay deterministic); ``stop()`` is asked before each
        job starts; ``await gate(i)`` may hold job ``i`` back, and skips it by returning
        False. Jobs never run are None; with ``keep=False`` no outcome is kept (all None:
        ``on_outcome`` saw them), so a long stream does not hold every run alive. Raises
        ``BudgetExceeded`` once the work started is done if a budget ran out.
        """
        active = lm or self.lm
        describe = active.describe() if active is not None else None
        bases: dict[int, tuple[ir.Program | None, str]] = {}
        results: list[RunOutcome | None] = [None] * len(jobs)
        keys: list[str] = [""] * len(jobs)
        finished = 0

        def key_of(i: int) -> str:
            example, program = jobs[i]
            hit = bases.get(id(program))
            if hit is None or hit[0] is not program:
                hit = (program, self._program_key(program, describe))
                bases[id(program)] = hit
            return ir.fingerprint([hit[1], self._example_key(example)])

        def done(i: int, outcome: RunOutcome, replayed: bool = False) -> None:
            nonlocal finished
            finished += 1
            if events.active():  # progress lines count the examples run as they finish
                events.emit(
                    "example", what="compile", index=i, score=outcome.score, error=outcome.error,
                    latency=outcome.latency, replayed=replayed,
                )
            if keep:
                results[i] = outcome
            if on_outcome is not None:
                on_outcome(i, outcome)

        async def before(i: int) -> bool:
            if gate is not None and not await gate(i):
                return False
            key = keys[i] = key_of(i)
            record = self.recorder.get_evaluation(key)
            if record is None and key in self._same_run:
                record = self.recorder.get_evaluation(self._same_run[key])
            if record is None:
                self.meter.start()
                return True
            self.memo_hits += 1
            outcome = outcome_from_record(self.pipeline, i, jobs[i][0], record, True, self._metric_key)
            if self.metric is not None and outcome.score is None:
                await self._score(outcome)
                self.recorder.put_evaluation(key, outcome_record(outcome, self._metric_key, self._encode))
            done(i, outcome, replayed=True)
            return False

        async def after(i: int, outcome: RunOutcome) -> None:
            if outcome.lm_failed:  # an error, not a score: not recorded, counted
                self.meter.finish(outcome.state.usage)
                if not outcome.budget_stopped:  # an agent stopped mid-run: not the LM's fault
                    self._failed(outcome)
                done(i, outcome)
                return
            try:
                await self._score(outcome)
            finally:
                self.meter.finish(outcome.state.usage)
            for node_id, node in outcome.state.nodes_seen.items():
                self._nodes.setdefault(node_id, node)
            self._edges.update(outcome.state.observed_edges())
            self.recorder.put_evaluation(keys[i], outcome_record(outcome, self._metric_key, self._encode))
            done(i, outcome)

        def halt() -> bool:
            return self.meter.reason() is not None or (stop is not None and stop())

        # an agent checks the budget before each of its steps, not only before its example
        token = step_guard.set(self._agent_step if self.meter.budget else None)
        try:
            await self.executor.run(
                self.pipeline, jobs, lm=active, concurrency=self.concurrency, trace=True,
                stop=halt, before=before, after=after,
            )
        finally:
            step_guard.reset(token)
        if self.meter.stopped is not None and finished < len(jobs) and (stop is None or not stop()):
            self.meter.check()
        return results

    async def run(self, examples: list[Example], program: ir.Program | None, *, lm: LM | None = None) -> list[RunOutcome]:
        """Run the pipeline on ``examples`` under ``program``, in order, scored and traced."""
        return [o for o in await self.stream([(e, program) for e in examples], lm=lm) if o is not None]

    async def run_many(
        self, programs: Sequence[ir.Program | None], examples: list[Example], *, lm: LM | None = None
    ) -> list[list[RunOutcome]]:
        """Every program on every example, all through one concurrency limit."""
        return await self.run_pairs([(p, examples) for p in programs], lm=lm)

    async def run_pairs(
        self, pairs: Sequence[tuple[ir.Program | None, list[Example]]], *, lm: LM | None = None
    ) -> list[list[RunOutcome]]:
        """Each program on its own examples (e.g. minibatches), through one concurrency limit."""
        flat = await self.stream([(e, p) for p, examples in pairs for e in examples], lm=lm)
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
        """The outcome's score (``stream`` scores every outcome when there is a metric)."""
        if outcome.score is not None:
            return outcome.score
        if outcome.error is None:
            self.need_metric("evaluate")
        return 0.0

    def _program_key(self, program: ir.Program | None, describe: Any) -> str:
        """The part of an evaluation's memo key that names the program, LM and metric."""
        return ir.fingerprint([program_key(program), describe, self._metric_key])

    async def discover(self, program: ir.Program | None = None) -> ir.Program:
        """The program's nodes, observed by running the pipeline on one example.

        Run without a program, that run is also row 0 under the program it finds (each
        node as its signature has it): a lookup of the latter finds the former's record,
        so the traces collected next do not ask the LM the same prompts again."""
        outcomes = await self.run(self.trainset[:1], program)
        if outcomes[0].error is not None and not outcomes[0].state.nodes_seen:
            raise LMError(f"could not trace the pipeline on trainset row 0: {outcomes[0].error}")
        found = program_from_runs(self.pipeline, [o.state for o in outcomes], base=program)
        if program is None and found.nodes:
            describe = self.lm.describe() if self.lm is not None else None
            row = self._example_key(self.trainset[0])
            plain = ir.fingerprint([self._program_key(None, describe), row])
            if self.recorder.get_evaluation(plain) is not None:  # not stored twice: made again on resume
                self._same_run[ir.fingerprint([self._program_key(found, describe), row])] = plain
        return found

    def observed_program(self) -> ir.Program:
        """The nodes seen in any run so far with their default configuration (zero-shot)."""
        return observed_program(self.pipeline, self._nodes, self._edges)

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
        """Run signature ``sig`` on ``inputs`` for the optimizer itself; memoized (see
        :func:`desic.optimize.calls.own_call`). Returns None when the call failed."""
        return await own_call(
            self, sig, inputs, key_salt=key_salt, lm=lm, temperature=temperature, seed=seed, max_tokens=max_tokens
        )

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
        cand = Candidate(
            index=len(self.history), program=program, score=score, usage=self.usage, note=note, split=split,
            scores=scores, round=round, parent=parent, seconds=self.meter.elapsed(),
            proposals=self.proposals, proposals_failed=self.proposals_failed,
        )
        self.history.append(cand)
        self.recorder.add_candidate(cand.to_record())
        if events.active():
            events.emit("candidate", optimizer=self.optimizer_name, **cand.event_data())
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
