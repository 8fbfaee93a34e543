"""``bootstrap``: run the pipeline on the trainset and keep the traces the metric accepts.

Rows run concurrently through one worker pool (a new row starts as soon as one finishes)
and the run stops starting rows once every node holds ``max_demos`` accepted traces.
Results are accepted in the (seeded) trainset order, never in completion order, so the
same seed gives the same demos however the calls interleave; a row that finished after
the quota was filled is simply not used. Remaining slots are filled with labelled demos
(up to ``max_labeled``) where the rows carry every field a node needs.

While bootstrapping, the model producing the traces (the student, or ``teacher_lm``)
sees up to ``teacher_demos`` labelled demos (default: ``max_labeled``) drawn from the
other trainset rows: a row never sees its own label. A small model that cannot do the
task zero-shot often can with a few labelled examples in front of it, and its accepted
traces then teach the student. With ``teacher_lm`` the traces come from the teacher (a
stronger model) and the demos teach the student. ``rounds > 1`` retries the rejected
rows with sampling (temperature 0.7, a different seed each round) to find more accepted
traces.
"""

from __future__ import annotations

import asyncio
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec

from .. import ir
from ..data import Example
from ..engine import RunOutcome
from ..errors import BudgetExceeded, LMError
from ..lm import LM
from ..pipeline import observed_program
from ..runtime import default_node
from ._options import COUNT, POSITIVE, SHARE, Range, check
from .demos import MAX_DEMO_CHARS, demo_chars, labeled_rows, pick_diverse
from .task import CompileTask

log = logging.getLogger("desic.optimize")


@dataclass
class Traces:
    """What a bootstrap pass found: accepted demos per node, in acceptance order."""

    demos: dict[str, list[ir.Demo]] = field(default_factory=dict)
    used: set[int] = field(default_factory=set)  # positions in the examples given
    # The nodes and edges seen in the first round's runs (what ``program_from_runs``
    # needs; the runs themselves are not kept).
    nodes: dict[str, ir.Node] = field(default_factory=dict)
    edges: set[tuple[str, str, str]] = field(default_factory=set)
    order: list[int] = field(default_factory=list)
    accepted: int = 0
    tried: int = 0
    stopped: BudgetExceeded | None = None

    def program(self, task: CompileTask, base: ir.Program | None) -> ir.Program:
        """The program observed in the first round's runs, over ``base``."""
        return observed_program(task.pipeline, self.nodes, self.edges, base)


class _Acceptor:
    """Accepts finished runs strictly in order: only the contiguous finished prefix is
    looked at, so completion order never changes which traces become demos.

    A row starts only within a window of positions after the first row not yet looked
    at. The window is about twice the rows still expected to be needed (demos missing /
    acceptance rate so far, Laplace-smoothed), at most ``max_window``: enough to keep the
    concurrency busy, while the rows run after the quota fills (LM calls paid for
    nothing) stay few, and one slow row cannot let the others run far ahead.
    """

    def __init__(
        self,
        task: CompileTask,
        found: Traces,
        pending: list[int],
        want: int,
        threshold: float,
        seen_nodes: set[str],
        *,
        first: bool,
        enough: Callable[[], bool],
        max_window: int,
        examples: list[Example],
    ):
        self.task = task
        self.examples = examples
        self.found = found
        self.pending = pending
        self.want = want
        self.threshold = threshold
        self.seen_nodes = seen_nodes
        self.first = first
        self.enough = enough
        self.done: list[RunOutcome | None] = [None] * len(pending)
        self.oversized: set[str] = set()  # nodes whose too-large traces were skipped (warned once)
        self.frontier = 0
        self.filled = False
        self.max_window = max_window
        self.accepted = 0
        self._have = self._fewest_demos()
        self.window = self._window()  # recomputed as rows are looked at
        self._moved: asyncio.Event | None = None

    def full(self) -> bool:
        return self.filled

    def _fewest_demos(self) -> int:
        demos = self.found.demos
        return min((len(demos.get(n, [])) for n in self.seen_nodes), default=0)

    def _window(self) -> int:
        need = max(1, self.want - self._have)
        rate = (self.accepted + 1) / (self.frontier + 2)
        return max(1, min(self.max_window, math.ceil(2 * need / rate)))

    async def gate(self, pos: int) -> bool:
        """Hold row ``pos`` until it is within the window; False once the quota is full."""
        while not self.filled and pos >= self.frontier + self.window:
            if self._moved is None:
                self._moved = asyncio.Event()
            await self._moved.wait()
        return not self.filled

    def __call__(self, pos: int, outcome: RunOutcome) -> None:
        self.done[pos] = outcome
        if pos != self.frontier or self.filled:
            return  # the finished prefix did not grow: nothing to look at, nobody to wake
        found = self.found
        seen_nodes = self.seen_nodes
        # ``enough()`` and the fewest demos per node change only when a node is first seen
        # or a trace is accepted: ask again only then (and for the first row looked at).
        changed = self.frontier == 0
        while not self.filled and self.frontier < len(self.done):
            o = self.done[self.frontier]
            if o is None:
                break
            row = self.pending[self.frontier]
            self.done[self.frontier] = None  # looked at: let the run go
            self.frontier += 1
            nodes = o.state.nodes_seen
            if self.first:
                for node_id, node in nodes.items():
                    found.nodes.setdefault(node_id, node)
                found.edges.update(o.state.observed_edges())
                found.tried += 1
            if not seen_nodes.issuperset(nodes):
                seen_nodes.update(nodes)
                changed = True
            if o.error is None and self.task.score(o) >= self.threshold:
                found.accepted += 1
                self.accepted += 1
                found.used.add(row)
                changed = True
                for entry in o.state.trace or []:
                    if entry.output is None or entry.kind != "lm":
                        continue
                    bucket = found.demos.setdefault(entry.node_id, [])
                    if len(bucket) < self.want:
                        demo = ir.Demo(inputs=entry.inputs, output=entry.output, source="bootstrap")
                        size = demo_chars(demo)
                        if size <= MAX_DEMO_CHARS:
                            bucket.append(demo)
                            self.task.note_demo_row(demo, self.examples[row])
                        elif entry.node_id not in self.oversized:
                            self.oversized.add(entry.node_id)
                            log.warning(
                                "bootstrap: a trace of node %s is %d characters of JSON, over MAX_DEMO_CHARS=%d: "
                                "not used as a demo (nor any other trace of it that large)",
                                entry.node_id, size, MAX_DEMO_CHARS,
                            )
            if changed:
                self.filled = self.enough()
                self._have = self._fewest_demos()
                changed = False
        self.window = self._window()
        if self._moved is not None:
            self._moved.set()
            self._moved = None


class _TeacherPrograms:
    """The program each bootstrap row runs under: ``program`` with up to ``k`` labelled
    demos per node (rows in seeded order that cover the node's fields, distinct answers
    first: ``pick_diverse``), never the row's own. At most k + 1 distinct programs exist,
    so their fingerprints are computed once however many rows run.
    """

    def __init__(self, program: ir.Program, examples: list[Example], order: list[int], k: int):
        self.plain = program
        only_node = len(program.nodes) == 1
        picks: dict[str, list[tuple[int, ir.Demo]]] = {}
        for node in program.nodes:
            found = pick_diverse(labeled_rows(node, examples, order, only_node), k + 1)
            if found:
                picks[node.id] = found
        self._picks = picks
        self.k = k
        self.default = self._build(None)
        self._special = {i: self._build(i) for f in picks.values() for i, _ in f[:k]}

    def _build(self, exclude: int | None) -> ir.Program:
        program = self.plain
        for node_id, found in self._picks.items():
            node = program.node(node_id)
            assert node is not None
            demos = tuple(d for i, d in found if i != exclude)[: self.k]
            program = program.with_node(msgspec.structs.replace(node, demos=demos + node.demos))
        return program

    def __call__(self, row: int) -> ir.Program:
        return self._special.get(row, self.default)

    def plain_node(self, node: ir.Node) -> ir.Node:
        """``node`` as the student's program has it (without the teacher's labelled demos)."""
        plain = self.plain.node(node.id)
        return plain if plain is not None and node.id in self._picks else node


def _sampling(program: ir.Program, round_: int) -> ir.Program:
    """``program`` with every node sampling (for retry rounds)."""
    for node in program.nodes:
        lm = msgspec.structs.replace(node.lm, temperature=0.7, seed=round_)
        program = program.with_node(msgspec.structs.replace(node, lm=lm))
    return program


async def collect_traces(
    task: CompileTask,
    examples: list[Example],
    *,
    want: int,
    threshold: float = 1.0,
    lm: LM | None = None,
    base: ir.Program | None = None,
    rounds: int = 1,
    salt: str = "bootstrap",
    teacher_demos: int = 0,
) -> Traces:
    """Accepted traces, up to ``want`` per node, from running ``examples`` (seeded order).

    With ``teacher_demos`` > 0 each row runs with that many labelled demos of other rows
    per node (see ``_TeacherPrograms``); a ``@pipeline``'s nodes are first discovered (one
    run) when neither ``base`` nor an earlier run shows them. A budget stop is not raised
    but kept on ``traces.stopped`` (the caller records what was found, then re-raises).
    """
    task.need_metric("bootstrap")
    found = Traces()
    order = list(range(len(examples)))
    task.rng(salt).shuffle(order)
    found.order = order
    seen_nodes: set[str] = set()

    def enough() -> bool:
        return bool(seen_nodes) and all(len(found.demos.get(n, [])) >= want for n in seen_nodes)

    known: ir.Program | None = None
    if teacher_demos > 0:
        known = base if base is not None and base.nodes else None
        sig = getattr(task.pipeline, "signature", None)
        if known is None and sig is not None:  # a bare signature: its one node is known
            known = ir.Program(pipeline=task.pipeline.ref, nodes=(default_node(sig, sig.spec.name),))
        if known is None:
            observed = task.observed_program()
            try:
                known = observed if observed.nodes else await task.discover(base)
            except BudgetExceeded as exc:
                found.stopped = exc
                return found
            except LMError:
                known = None  # row 0 could not be traced: bootstrap without labelled demos

    for round_ in range(max(1, rounds)):
        pending = [i for i in order if i not in found.used]
        if not pending or (round_ > 0 and enough()):
            break
        program = base
        if round_ > 0:
            program = _sampling(found.program(task, base), round_)
        teacher: _TeacherPrograms | None = None
        if known is not None:
            plain = program if program is not None else known
            teacher = _TeacherPrograms(plain, examples, order, teacher_demos)
        acceptor = _Acceptor(
            task, found, pending, want, threshold, seen_nodes, first=round_ == 0, enough=enough, examples=examples,
            max_window=2 * max(1, task.concurrency),
        )
        try:
            await task.stream(
                [(examples[i], teacher(i) if teacher is not None else program) for i in pending],
                lm=lm,
                stop=acceptor.full,
                on_outcome=acceptor,
                gate=acceptor.gate,
                keep=False,
            )
        except BudgetExceeded as exc:
            found.stopped = exc
            break
        finally:
            if teacher is not None and round_ == 0:
                # the nodes as the student has them, not with the teacher's labelled demos
                found.nodes = {k: teacher.plain_node(n) for k, n in found.nodes.items()}
    return found


def fill_program(
    task: CompileTask,
    examples: list[Example],
    found: Traces,
    *,
    max_demos: int,
    max_labeled: int,
    base: ir.Program | None = None,
) -> ir.Program:
    """The program with each node's accepted demos, topped up with ``max_labeled``
    labelled ones from the rows not accepted (answers the demos lack first)."""
    program = found.program(task, base)
    if not program.nodes and task.observed_program().nodes:
        program = task.observed_program()
    only_node = len(program.nodes) == 1
    for node in program.nodes:
        chosen = list(found.demos.get(node.id, []))[:max_demos]
        if max_labeled > 0:
            unused = (i for i in found.order if i not in found.used)
            extra = pick_diverse(labeled_rows(node, examples, unused, only_node), max_labeled, taken=chosen)
            chosen.extend(demo for _, demo in extra)
        program = program.with_node(msgspec.structs.replace(node, demos=tuple(chosen)))
    return program


def _output_names(task: CompileTask) -> str:
    """The pipeline's output fields as the metric sees them, for messages."""
    sig = getattr(task.pipeline, "signature", None)
    if sig is not None:
        return ", ".join(sig.spec.output_names)
    out = task.pipeline.output_type
    fields = getattr(out, "model_fields", None)
    if isinstance(fields, dict):
        return ", ".join(fields)
    return getattr(out, "__name__", None) or ("not annotated" if out is None else str(out))


def record_pool(task: CompileTask, program: ir.Program, found: Traces, what: str = "bootstrap pool") -> None:
    """Record what a bootstrap pass produced (split ``"bootstrap"``: its score is the share
    of traces accepted, not a validation score); re-raise a budget stop after recording.
    Nothing is recorded when the budget was out before any row ran."""
    if found.tried and not found.accepted and found.stopped is None:
        labels = sorted({key for example in task.trainset[:50] for key in example.labels})
        log.warning(
            "desic: %s: the metric accepted none of the %d traces, so no demo was bootstrapped "
            "(labelled demos only, if any). Check that the metric compares the pipeline's output "
            "with the right labels (the rows have: %s; outputs: %s), or lower threshold=.",
            what, found.tried, ", ".join(labels) or "no labels", _output_names(task),
        )
    if found.tried or found.stopped is None:
        note = f"{what}: {found.accepted}/{found.tried} traces accepted"
        if found.stopped is not None:
            note += " (stopped by budget)"
        task.record(program, found.accepted / found.tried if found.tried else None, note, split="bootstrap")
    if found.stopped is not None:
        raise found.stopped


class Bootstrap:
    name = "bootstrap"

    def __init__(
        self,
        max_demos: int = 4,
        max_labeled: int = 4,
        threshold: float = 1.0,
        rounds: int = 1,
        teacher_demos: int | None = None,
    ):
        for option, value, allowed in (
            ("max_demos", max_demos, COUNT),
            ("max_labeled", max_labeled, COUNT),
            ("threshold", threshold, SHARE),
            ("rounds", rounds, POSITIVE),
            ("teacher_demos", teacher_demos, Range(0, none=True)),
        ):
            check(self.name, option, value, allowed)
        self.max_demos = max_demos
        self.max_labeled = max_labeled
        self.threshold = threshold
        self.rounds = rounds
        # labelled demos the trace-producing model sees while bootstrapping (None: max_labeled)
        self.teacher_demos = max_labeled if teacher_demos is None else teacher_demos

    def config(self) -> dict[str, Any]:
        return {
            "max_demos": self.max_demos,
            "max_labeled": self.max_labeled,
            "threshold": self.threshold,
            "rounds": self.rounds,
            "teacher_demos": self.teacher_demos,
        }

    takes_examples = True  # initial_program may restrict it to a training split
    checks_baseline = True  # compile keeps the pipeline as written when it scores higher

    async def optimize(
        self, task: CompileTask, base: ir.Program | None = None, examples: list[Example] | None = None
    ) -> ir.Program:
        task.need_metric(self.name)
        rows = task.trainset if examples is None else examples
        found = await collect_traces(
            task,
            rows,
            want=self.max_demos,
            threshold=self.threshold,
            lm=task.teacher_lm,
            base=base,
            rounds=self.rounds,
            teacher_demos=self.teacher_demos,
        )
        program = fill_program(
            task, rows, found, max_demos=self.max_demos, max_labeled=self.max_labeled, base=base
        )
        record_pool(task, program, found, "bootstrap")
        return program
