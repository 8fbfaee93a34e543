"""Choosing between programs with evidence, not with the best mean on a small split.

A search scores many candidates on one validation split; the best mean among them is
flattered by chance (the winner's curse): on 14 rows one of a dozen instruction edits
looks two rows better than its start by luck alone, and is worse on new data. So every
built-in search keeps its starting program (the best cheap one: bootstrapped / labelled
demos) unless a candidate beats it with evidence:

- **paired**: both programs were scored on the same rows; what counts is the per-row
  difference (a row both get right or both get wrong says nothing);
- **significant**: the mean difference is above ``MARGIN`` and its one-sided p-value is
  below ``ALPHA``: the larger of a paired bootstrap's (``RESAMPLES`` resamples of the
  rows from an RNG seeded by the compile's seed, so the same scores always give the
  same decision) and the exact sign test's on the rows that differ. On 14 rows an edit
  must win 4 rows and lose none, or 6 against 1, to replace the start;
- **ties go to the cheaper program**: a candidate with the start's score on every row
  and a shorter prompt (demos and instructions) is taken without a test.

When the search had rows it never used (``CompileTask.check_split``), the choice is
scored there too; a candidate that does worse than the start on those rows is dropped.
Every score in ``compiled.history`` carries an interval (``interval``: Wilson's for
scores in [0, 1], a normal one otherwise) and its rows (``len(scores)``, ``split``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import TypeVar

import msgspec

from .. import ir
from .._json import to_jsonable
from ..data import Example
from ..errors import BudgetExceeded
from ._stats import ALPHA, MARGIN, RESAMPLES, Comparison, compare, interval
from .task import CompileTask

__all__ = ["ALPHA", "MARGIN", "RESAMPLES", "Comparison", "compare", "interval", "prompt_size", "select_final"]

T = TypeVar("T")


def prompt_size(program: ir.Program) -> int:
    """What a program adds to every prompt: its instructions' and demos' characters."""
    size = 0
    for node in program.nodes:
        size += len(node.instructions or "")
        size += sum(len(msgspec.json.encode((d.inputs, d.output))) for d in node.demos)
        select = node.select
        if select is not None and select.per_input and select.pool:  # k pool demos, of average size
            total = sum(len(msgspec.json.encode((d.inputs, d.output))) for d in select.pool)
            size += min(select.k, len(select.pool)) * total // len(select.pool)
    return size


async def _or_keep(task: CompileTask, start: int, work: Awaitable[T]) -> T:
    """``await work``; when the budget runs out during it, record the start as the choice
    (a budget stop returns it, not an unchecked candidate) and re-raise."""
    try:
        return await work
    except BudgetExceeded:
        base = task.history[start]
        task.record(base.program, base.score, f"kept the start (candidate {start}): the budget ran out "
                    "before a candidate could be checked", split="selected", scores=base.scores, parent=start)
        raise


def unseen_rows(task: CompileTask, rows: Sequence[Example], programs: Sequence[ir.Program]) -> list[Example]:
    """The rows of ``rows`` no program shows as a demo.

    One node: the rows whose inputs no demo has. Several nodes (a later node's demo inputs
    are not a row's): the rows no demo was made from, a bootstrapped demo's row being known
    from the compile (``CompileTask.demo_row``) and a labelled one's inputs being the row's
    own fields; per-input pools count as shown. A bootstrapped demo of unknown origin (a
    program the compile did not build) could be any row: then no row is returned.
    """
    if not programs:
        return []
    if all(len(p.nodes) == 1 for p in programs):
        shown = {ir.fingerprint(d.inputs) for p in programs for d in p.nodes[0].demos}
        fields = [f.name for f in programs[0].nodes[0].signature.inputs]
        out = []
        for row in rows:
            inputs = {k: to_jsonable(row.inputs[k]) for k in fields if k in row.inputs}
            if ir.fingerprint(inputs) not in shown:
                out.append(row)
        return out
    data = [{k: to_jsonable(v) for k, v in {**row.inputs, **row.labels}.items()} for row in rows]
    keys = [task.row_key(row) for row in rows]
    used: set[str] = set()
    for program in programs:
        for node in program.nodes:
            demos = list(node.demos)
            if node.select is not None and node.select.per_input:
                demos += node.select.pool
            for demo in demos:
                origin = task.demo_row(demo)
                if origin is not None:
                    used.add(origin)
                    continue
                hits = [k for k, d in zip(keys, data) if all(d.get(f, _MISSING) == v for f, v in demo.inputs.items())]
                if not hits and demo.source == "bootstrap":
                    return []
                used.update(hits)
    return [row for row, key in zip(rows, keys) if key not in used]


_MISSING = object()


def without_own_demos(task: CompileTask, rows: Sequence[Example], program: ir.Program) -> list[ir.Program] | None:
    """For each row of ``rows``, ``program`` without the fixed demos made from that row (the
    program itself for a row it shows no demo of): scoring row by row this way, every row
    can be scored, none with its own answer in the prompt. Which row a demo came from is
    found as ``unseen_rows`` finds it; None when a bootstrapped demo's row is unknown.
    (Per-input pools leave the row's own demo out by themselves while compiling.)"""
    keys = [task.row_key(row) for row in rows]
    data = [{k: to_jsonable(v) for k, v in {**row.inputs, **row.labels}.items()} for row in rows]
    single = len(program.nodes) == 1
    drop: dict[str, set[tuple[int, int]]] = {}
    for n, node in enumerate(program.nodes):
        fields = [f.name for f in node.signature.inputs]
        for d, demo in enumerate(node.demos):
            origin = task.demo_row(demo)
            if origin is not None:
                hits = [origin]
            elif single:  # a row whose node inputs are the demo's
                want = ir.fingerprint(demo.inputs)
                hits = [k for k, row in zip(keys, rows)
                        if ir.fingerprint({f: to_jsonable(row.inputs[f]) for f in fields if f in row.inputs}) == want]
            else:
                hits = [k for k, x in zip(keys, data) if all(x.get(f, _MISSING) == v for f, v in demo.inputs.items())]
            if not hits and demo.source == "bootstrap":
                return None
            for key in hits:
                drop.setdefault(key, set()).add((n, d))
    out: list[ir.Program] = []
    for key in keys:
        gone = drop.get(key)
        if not gone:
            out.append(program)
            continue
        out.append(program.replace(nodes=tuple(
            msgspec.structs.replace(node, demos=tuple(x for d, x in enumerate(node.demos) if (n, d) not in gone))
            if any(g[0] == n for g in gone) else node
            for n, node in enumerate(program.nodes)
        )))
    return out


async def select_final(
    task: CompileTask,
    start: int,
    challengers: Sequence[int],
    train: Sequence[Example] = (),
) -> ir.Program:
    """The program a search returns: the start (history index ``start``) unless one of
    ``challengers`` (history indexes, scored on the same validation rows) beats it with
    evidence, or ties it on every row with a shorter prompt. Only the best challenger (by mean, then
    shorter prompt) is tested: testing them all in turn would let luck pick one.

    Small data (no check rows, ``CompileTask.check_split``): the test pools the
    validation rows with the ``train`` rows neither program shows as a demo (a second
    fold: each row judges programs that never saw it). Enough data: the choice is scored
    on the check rows the search never used, and dropped if it does worse there than the
    start. The decision is recorded in the history (split ``"selected"``, or
    ``"selected (check)"`` with the check rows' score) with its evidence in the note.
    """
    hist = task.history
    base = hist[start]
    base_scores = list(base.scores or [])
    base_mean = base.score or 0.0
    ranked = sorted(
        (i for i in dict.fromkeys(challengers) if i != start and hist[i].score is not None
         and len(hist[i].scores or []) == len(base_scores)),
        key=lambda i: (-(hist[i].score or 0.0), prompt_size(hist[i].program), i),
    )
    chosen, reason = start, f"kept the start (candidate {start}): no other candidate"
    check = task.check_split()
    if ranked:
        top = hist[ranked[0]]
        cand_scores = list(top.scores or [])
        folds = ""
        if not check and (top.score or 0.0) > base_mean:
            extra = unseen_rows(task, train, [base.program, top.program])
            if extra:
                more = await _or_keep(task, start, task.evaluate_many([base.program, top.program], extra))
                base_scores += more[0].scores
                cand_scores += more[1].scores
                folds = f" (validation + {len(extra)} training rows neither shows as a demo)"
        result = compare(cand_scores, base_scores, task.seed)
        if result.significant:
            chosen = ranked[0]
            reason = f"candidate {chosen} beats the start (candidate {start}): {result.describe()}{folds}"
        else:
            reason = (f"kept the start (candidate {start}): the best other, candidate {ranked[0]}, "
                      f"is not better with evidence: {result.describe()}{folds}")
            # a tie (the same score on every paired row) goes to the shorter prompt
            cheaper = [i for i in ranked if list(hist[i].scores or []) == list(base.scores or [])
                       and prompt_size(hist[i].program) < prompt_size(base.program)]
            if cheaper:
                chosen = cheaper[0]
                reason = f"candidate {chosen} ties the start (candidate {start}) on every row with a shorter prompt"
    program = hist[chosen].program
    score, scores, split = hist[chosen].score, hist[chosen].scores, "selected"
    if check:
        programs = [base.program] if chosen == start else [base.program, program]
        checked = await _or_keep(task, start, task.evaluate_many(programs, check))
        first = task.record(base.program, checked[0].score, "the start on the check rows", split="check",
                            scores=checked[0].scores, parent=start)
        score, scores = first.score, first.scores
        if chosen != start:
            second = task.record(program, checked[1].score, "the choice on the check rows", split="check",
                                 scores=checked[1].scores, parent=chosen)
            if checked[1].score < checked[0].score:
                reason += (f"; dropped: on {len(check)} check rows it scores {checked[1].score:.3f}, "
                           f"the start {checked[0].score:.3f}")
                chosen, program = start, base.program
            else:
                score, scores = second.score, second.scores
        split = "selected (check)"
    task.record(program, score, reason, split=split, scores=scores, parent=chosen)
    return program
