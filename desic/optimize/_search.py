"""What the search optimizers share: options, the split, scoring into a pool, proposals.

``random_search``, ``beam``, ``genetic``, ``mipro`` and ``reflective`` are dataclasses over
``SearchOptimizer``: their fields are their options, in constructor order, and
``config()`` lists them in that order (the config keys resume and replay records, so it
must not change when an optimizer's code is reorganized).

A pool is a list of ``Ranked`` entries, ``(scored program, candidate index)``; ``rank``
orders it best first, the earliest candidate first among equals.

Proposals go through ``task.call`` (memoized, budgeted, teacher-first) with the
optimizer's sampling temperature and ``proposal_tokens`` (the LM's own limit, at least
``PROPOSAL_TOKENS``); the caller names the record key
(``key_salt``) and the sampling seed, which keep distinct proposals distinct.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar

from .. import ir
from ..data import Example
from ..engine import RunOutcome
from ._options import SPLIT, Range, check_all
from ._propose import (
    clean_instruction,
    describe_node,
    examples_text,
    failures_text,
    propose_instruction,
)
from .bootstrap import Traces, collect_traces, fill_program, record_pool
from .calls import proposal_tokens
from .demos import labeled_rows, pick_diverse
from .history import Scored
from .task import CompileTask

__all__ = [
    "Child",
    "Ranked",
    "SearchOptimizer",
    "ask",
    "best_of",
    "bootstrap_seed",
    "demo_pool",
    "rank",
    "rewrite",
    "rotate",
    "sample_demos",
    "score_into",
    "start_pool",
]

Ranked = tuple[Scored, int]  # a scored program and its index in the task's history
Child = tuple[ir.Program, "int | None", str]  # a program to score, its parent's index, a note


class SearchOptimizer:
    """Base of the built-in search optimizers; each subclass is a ``@dataclass``.

    ``RANGES`` declares what each numeric option allows; the dataclass constructor checks
    them (``__post_init__``), so a value out of range is a ``ConfigError`` before any LM call.
    """

    name: str = ""
    val_fraction: float
    max_val: int | None
    RANGES: ClassVar[dict[str, Range]] = {"val_fraction": SPLIT, "max_val": Range(1, none=True)}
    # compile keeps the pipeline as written when it scores higher than the search's choice
    checks_baseline: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_all(self.name, self, self.RANGES)

    def config(self) -> dict[str, Any]:
        """The options, by field in declaration order; an ``init`` optimizer by its name."""
        if not dataclasses.is_dataclass(self):
            raise TypeError(f"{type(self).__name__} must be a dataclass to derive its config")
        return {f.name: _option(f.name, getattr(self, f.name)) for f in dataclasses.fields(self)}

    def splits(self, task: CompileTask) -> tuple[list[Example], list[Example]]:
        """(train, validation) rows for this optimizer; refuses a compile without a metric."""
        task.need_metric(self.name)
        return task.split(fraction=self.val_fraction, max_val=self.max_val)


def _option(name: str, value: Any) -> Any:
    if name == "init" and not isinstance(value, (str, type(None))):
        return getattr(value, "name", "?")
    return value


# --- pools --------------------------------------------------------------------------------


def rank(pool: Sequence[Ranked]) -> list[Ranked]:
    """``pool`` best first, the earliest candidate first among equal scores."""
    return sorted(pool, key=lambda item: (-item[0].score, item[1]))


def best_of(pool: Sequence[Ranked]) -> Ranked:
    return min(pool, key=lambda item: (-item[0].score, item[1]))


async def score_into(
    task: CompileTask,
    pool: Sequence[Ranked],
    children: Sequence[Child],
    val: list[Example],
    round_: int,
) -> list[Ranked]:
    """Score ``children`` on ``val``, record each (in order), and return ``pool`` with them,
    ranked."""
    scored = await task.evaluate_many([program for program, _, _ in children], val)
    out = list(pool)
    for (program, parent, note), s in zip(children, scored):
        cand = task.record(
            program, s.score, note, split="val", scores=s.scores, round=round_, parent=parent
        )
        out.append((s, cand.index))
    return rank(out)


async def start_pool(
    task: CompileTask, init: Any, train: list[Example], val: list[Example]
) -> Ranked:
    """The starting program (zero-shot or ``init``'s result), scored on ``val`` and recorded."""
    start = await initial_program(task, init, train)
    (first,) = await score_into(task, [], [(start, None, "start")], val, 0)
    return first


async def bootstrap_seed(
    task: CompileTask,
    train: list[Example],
    *,
    want: int,
    max_demos: int,
    max_labeled: int,
    threshold: float = 1.0,
    teacher_demos: int | None = None,
) -> tuple[ir.Program, Traces]:
    """One bootstrap pass over ``train`` (teacher-first, the trace-producing model shown
    ``teacher_demos`` labelled demos, default ``max_labeled``), its program, and the pool
    recorded."""
    found = await collect_traces(
        task,
        train,
        want=want,
        threshold=threshold,
        lm=task.teacher_lm,
        teacher_demos=max_labeled if teacher_demos is None else teacher_demos,
    )
    program = fill_program(task, train, found, max_demos=max_demos, max_labeled=max_labeled)
    record_pool(task, program, found)
    return program, found


def demo_pool(
    node: ir.Node, accepted: list[ir.Demo], rows: list[Example], *, only_node: bool, labeled: int
) -> list[ir.Demo]:
    """A node's demo pool: the accepted traces, then up to ``labeled`` labelled demos of
    ``rows`` whose inputs no demo in the pool has (answers the pool lacks first)."""
    pool = list(accepted)
    inputs = {ir.fingerprint(d.inputs) for d in pool}

    def fresh() -> Iterator[tuple[int, ir.Demo]]:
        for i, demo in labeled_rows(node, rows, range(len(rows)), only_node):
            key = ir.fingerprint(demo.inputs)
            if key not in inputs:
                inputs.add(key)
                yield i, demo

    pool.extend(demo for _, demo in pick_diverse(fresh(), max(0, labeled), taken=pool))
    return pool


def sample_demos(pool: list[ir.Demo], k: int, rng: random.Random) -> tuple[ir.Demo, ...]:
    """``k`` demos of ``pool`` drawn at random, distinct answers first (see ``pick_diverse``)."""
    shuffled = rng.sample(pool, len(pool))
    return tuple(demo for _, demo in pick_diverse(enumerate(shuffled), k))


def rotate(rows: list[Example], by: int) -> list[Example]:
    """``rows`` starting at position ``by`` (so each proposal slot sees other data first)."""
    return rows[by:] + rows[:by]


# --- proposals ----------------------------------------------------------------------------


async def ask(
    task: CompileTask,
    sig: Any,
    inputs: dict[str, Any],
    *,
    key_salt: str,
    seed: int,
    temperature: float,
) -> Any:
    """One proposal call of an optimizer (``sig`` is a proposal signature)."""
    return await task.call(
        sig,
        inputs,
        key_salt=key_salt,
        temperature=temperature,
        max_tokens=proposal_tokens(task.proposer_lm),
        seed=seed,
    )


async def rewrite(
    task: CompileTask,
    node: ir.Node,
    outcomes: list[RunOutcome],
    rows: list[Example],
    *,
    tip: str,
    key_salt: str,
    seed: int,
    temperature: float,
) -> str | None:
    """A rewrite of ``node``'s instruction grounded on ``rows`` and the failures among
    ``outcomes`` (with the metric's feedback); None when no usable one came back."""
    fails, feedback = failures_text(outcomes, node.id)
    value = await ask(
        task,
        propose_instruction,
        {
            "task": describe_node(node),
            "examples": examples_text(rows, 4),
            "failures": fails,
            "feedback": feedback,
            "tip": tip,
        },
        key_salt=key_salt,
        seed=seed,
        temperature=temperature,
    )
    return clean_instruction(value, node.instructions or node.signature.instructions)


async def initial_program(task: CompileTask, init: Any, train: list[Example] | None = None) -> ir.Program:
    """The starting point of an instruction optimizer: zero-shot (``None``) or what another
    optimizer (a registered name or an instance, e.g. ``"bootstrap"``) produces.

    The built-in demo optimizers draw their demos from ``train`` only, so validation rows
    never show up as demos (their scores would flatter the program).
    """
    if init is None or init == "zero_shot":
        return await task.discover()
    from . import resolve  # the registry sits above the strategies

    opt = resolve(init)
    if train is not None and getattr(opt, "takes_examples", False):
        return await opt.optimize(task, examples=train)  # type: ignore[call-arg, no-any-return]
    return await opt.optimize(task)  # type: ignore[no-any-return]
