# mypy: disable-error-code="empty-body"
"""Search that does not overfit: the start is kept unless a candidate beats it with evidence.

The fakes have known truths: an instruction edit that looks better on a tiny validation
split and is worse on new data; edits that are plain harmful; a zero-shot program a base
model cannot run. Every search must return its start (the bootstrap program) there, and
report each score with its interval, rows and split.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.optimize import MemoryRecorder
from desic.optimize._stats import compare, interval
from desic.testing import FunctionLM, last_input
from tests.support.house_rule import (
    ROWS,
    SEARCHING,
    SMALL,
    Route,
    answer,
    search_choice,
    triage,
    truth,
)

METRIC = desic.metrics.exact_match
EDIT = "Route refund and crash tickets to shipping."


def lucky_edit(request: LMRequest) -> Any:
    """The start gets refunds wrong; the proposed edit fixes refunds and breaks crashes."""
    if request.node_id in ("propose_instruction", "reflect_instruction"):
        return {"instruction": EDIT}
    ticket = last_input(request)
    if EDIT in request.messages[0]["content"]:
        return {"team": "shipping" if any(w in ticket for w in ("refund", "crash", "parcel")) else "billing"}
    return {"team": "billing" if "refund" in ticket else truth(ticket)}


# a tiny validation split where the edit wins two rows and loses none: no crash rows
TINY_VAL = [{"ticket": f"refund {i}", "team": "shipping"} for i in (100, 101)] + [
    {"ticket": f"charge {i}", "team": "billing"} for i in range(100, 106)
]
DEV = [{"ticket": f"{w} {i}", "team": truth(w)} for i in range(200, 215) for w in ("charge", "crash", "crash", "refund")]
INSTRUCTION_SEARCH = ("beam", "genetic", "mipro", "reflective")
EXTRA: dict[str, dict[str, Any]] = {"genetic": {"mutation": 1.0}, "reflective": {"init": None}, "beam": {"init": None}}


@pytest.mark.parametrize("name", INSTRUCTION_SEARCH)
def test_an_edit_that_looks_better_on_a_tiny_split_does_not_replace_the_start(name: str) -> None:
    lm = FunctionLM(lucky_edit)
    options = {**SMALL[name], **EXTRA.get(name, {})}
    compiled = desic.compile(triage, ROWS, valset=TINY_VAL, metric=METRIC, optimizer=name, lm=lm, **options)
    history = compiled.history
    start = next(c for c in history if c.split == "val")
    edited = [c for c in history if c.split == "val" and EDIT in c.program.nodes[0].instructions]
    # the edit was scored and looked better than the start: the old "best mean" would take
    # it (reflective's minibatch filter may reject it before that)
    assert edited or name == "reflective"
    assert all((c.score or 0) > (start.score or 0) for c in edited)
    assert EDIT not in compiled.program.nodes[0].instructions
    assert compiled.program.nodes == start.program.nodes
    decision = search_choice(history)
    assert decision.split == "selected" and "kept the start" in decision.note
    # and in truth the start is the better program
    with desic.context(lm=FunctionLM(lucky_edit)):
        kept = desic.evaluate(compiled, DEV, METRIC).score
        worse = desic.evaluate(desic.CompiledPipeline(triage, edited[0].program), DEV, METRIC).score if edited else 0.0
    assert kept > worse


def harmful(request: LMRequest) -> Any:
    """A base model: zero-shot it answers "tech" to everything; with demos it gets the
    keyword rows right; every proposed instruction makes it answer "billing"."""
    if request.node_id in ("propose_instruction", "reflect_instruction"):
        return {"instruction": f"Consider the ticket carefully (variant {request.params.seed})."}
    if "Consider the ticket carefully" in request.messages[0]["content"]:
        return {"team": "billing"}
    if len(request.messages) <= 2:
        return {"team": "tech"}
    return answer(request)


@pytest.mark.parametrize("name", ("random_search", *INSTRUCTION_SEARCH))
def test_defaults_never_end_below_the_bootstrap_program(name: str) -> None:
    val = ROWS[:16]
    boot = desic.compile(triage, ROWS[16:], metric=METRIC, optimizer="bootstrap", lm=FunctionLM(harmful))
    with desic.context(lm=FunctionLM(harmful)):
        floor = desic.evaluate(boot, val, METRIC).score
    options = {k: v for k, v in SMALL[name].items() if k != "max_demos"}  # the default demo counts
    compiled = desic.compile(triage, ROWS[16:], valset=val, metric=METRIC, optimizer=name, lm=FunctionLM(harmful), **options)
    assert compiled.score is not None and compiled.score >= floor > 0.5
    node = compiled.program.nodes[0]
    assert node.demos or (node.select is not None and node.select.per_input)  # demos kept (or per-input ones)
    if name in ("beam", "reflective"):
        assert compiled.history[0].split == "bootstrap"  # they start from the bootstrap program


def test_a_real_improvement_is_taken() -> None:
    # zero-shot start, an edit that fixes the four refund rows of 16 and breaks none
    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer="beam", lm=FunctionLM(answer), init=None,
                             **SMALL["beam"])
    assert "refunds go to shipping" in compiled.program.nodes[0].instructions
    assert "beats the start" in search_choice(compiled.history).note


def test_every_score_carries_its_interval_rows_and_split() -> None:
    recorder = MemoryRecorder()
    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer="random_search", lm=FunctionLM(answer),
                             recorder=recorder, **SMALL["random_search"])
    for cand, record in zip(compiled.history, recorder.candidates):
        if cand.split in ("val", "selected"):
            assert cand.n == 16 and record["n"] == 16
            low, high = cand.interval or (2.0, -1.0)
            assert low <= (cand.score or 0) <= high and record["interval"] == [low, high]
            assert f"on 16 {cand.split} rows" in cand.describe()


def test_a_check_split_rescored_when_there_are_enough_rows() -> None:
    rows = [{"ticket": f"{w} {i}", "team": truth(w)} for i in range(25) for w in ("charge", "parcel", "crash", "refund")]
    compiled = desic.compile(triage, rows, metric=METRIC, optimizer="beam", lm=FunctionLM(answer), init=None,
                             **SMALL["beam"])
    check = [c for c in compiled.history if c.split == "check"]
    assert check and all(c.n == 25 for c in check)  # a quarter of 100 rows, never searched on
    val = [c for c in compiled.history if c.split == "val"]
    assert all(c.n == 38 for c in val)  # half of the other 75
    assert search_choice(compiled.history).split == "selected (check)"
    assert compiled.program.meta.score_split == "check rows (never used by the search)"


def test_small_trainsets_pool_a_second_fold_of_rows_no_demo_shows() -> None:
    # 16 rows: 8 to validate on; the rows neither program shows as a demo join the test
    compiled = desic.compile(triage, ROWS[:16], metric=METRIC, optimizer="random_search", lm=FunctionLM(answer),
                             num_candidates=4, max_demos=1, max_labeled=1)
    decision = search_choice(compiled.history)
    assert "training rows neither shows as a demo" in decision.note or "no other" not in decision.note


def test_statistics_are_deterministic_and_paired() -> None:
    start = [1.0] * 12 + [0.0] * 4
    better = [1.0] * 16
    one = compare(better, start, seed=3)
    assert one == compare(better, start, seed=3)
    assert one.wins == 4 and one.losses == 0 and one.delta == 0.25 and one.significant
    lucky = compare([1.0] * 14, [1.0] * 12 + [0.0] * 2)
    assert not lucky.significant  # two rows of fourteen are no evidence
    assert not compare(start, start).significant
    mixed = compare([1.0] * 6 + [0.0] * 10, [0.0] * 5 + [1.0] + [0.0] * 10)
    assert mixed.wins == 5 and mixed.losses == 0 and mixed.significant
    assert interval([]) is None
    low, high = interval([1.0] * 12 + [0.0] * 4) or (0, 0)
    assert 0.45 < low < 0.75 < high < 0.95
    assert interval([2.0, 4.0]) is not None


def test_a_budget_stop_during_the_check_returns_the_start() -> None:
    rows = [{"ticket": f"{w} {i}", "team": truth(w)} for i in range(25) for w in ("charge", "parcel", "crash", "refund")]
    options: dict[str, Any] = {"init": None, **SMALL["beam"]}
    free = desic.compile(triage, rows, metric=METRIC, optimizer="beam", lm=FunctionLM(answer), **options)
    searched = max(c.usage.calls for c in free.history if c.split == "val")
    assert "refunds go to shipping" in free.program.nodes[0].instructions  # unchecked, it wins
    stopped = desic.compile(triage, rows, metric=METRIC, optimizer="beam", lm=FunctionLM(answer),
                            max_calls=searched + 1, **options)
    assert stopped.stopped_by == "max_calls"
    assert stopped.history[-1].split == "selected" and "budget ran out" in stopped.history[-1].note
    assert stopped.program.nodes == free.history[0].program.nodes  # the start, zero-shot


# a pipeline of two nodes: a later node's demo inputs are not a row's, so which training
# rows a program shows is known from where each bootstrapped demo came from
@desic.signature
def keyword(ticket: str) -> str:
    """The ticket's first word."""


@desic.signature
def route_by(ticket: str, word: str) -> Route:
    """Route the ticket."""


@desic.pipeline
def two_step(ticket: str) -> Route:
    return route_by(ticket=ticket, word=keyword(ticket=ticket))


def one_demo_rule(request: LMRequest) -> Any:
    """Crash tickets are routed right only with exactly one demo (the bootstrap start has two)."""
    text = last_input(request)
    if request.node_id == "keyword":
        return text.split("ticket:")[-1].split()[0]
    demos = sum(m["role"] == "assistant" for m in request.messages)
    return {"team": "billing" if "crash" in text and demos != 1 else truth(text)}


def test_a_multi_node_pipeline_pools_the_training_rows_no_demo_came_from() -> None:
    compiled = desic.compile(two_step, ROWS[:16], metric=METRIC, optimizer="random_search", lm=FunctionLM(one_demo_rule),
                             num_candidates=6, max_demos=2, max_labeled=0, seed=3)
    decision = search_choice(compiled.history)
    # 8 validation rows alone (2 better, 0 worse) are no evidence; with the training rows
    # neither program was shown, the better program is taken
    assert "(validation + 4 training rows neither shows as a demo)" in decision.note, decision.note
    assert "beats the start" in decision.note
    route_node = compiled.program.node("route_by")
    assert route_node is not None
    shown = route_node.demos or (route_node.select.pool if route_node.select is not None else ())
    assert shown


def test_a_bootstrapped_demo_of_unknown_origin_pools_no_rows() -> None:
    from desic import ir
    from desic.data import Example
    from desic.optimize._select import unseen_rows
    from desic.optimize.task import CompileTask

    rows = [Example(inputs={"ticket": f"crash {i}"}, labels={"team": "tech"}) for i in range(4)]
    task = CompileTask(pipeline=two_step, trainset=rows, metric=desic.metrics.exact_match)
    spec_a, spec_b = keyword.spec, route_by.spec
    traced = ir.Demo(inputs={"ticket": "crash 0", "word": "crash"}, output={"team": "tech"}, source="bootstrap")
    labelled = ir.Demo(inputs={"ticket": "crash 1"}, output={"output": "crash"}, source="labeled")
    task.note_demo_row(traced, rows[0])

    def program(*demos: ir.Demo) -> ir.Program:
        return ir.Program(nodes=(ir.Node(id="keyword", signature=spec_a, demos=(labelled,)),
                                 ir.Node(id="route_by", signature=spec_b, demos=demos)))

    assert unseen_rows(task, rows, [program(traced)]) == rows[2:]  # row 0 traced, row 1 labelled
    stranger = ir.Demo(inputs={"ticket": "crash 9", "word": "crash"}, output={"team": "tech"}, source="bootstrap")
    assert unseen_rows(task, rows, [program(traced, stranger)]) == []  # could be any row: none pooled
    manual = ir.Demo(inputs={"ticket": "a made-up one", "word": "x"}, output={"team": "tech"}, source="manual")
    assert unseen_rows(task, rows, [program(traced, manual)]) == rows[2:]  # a row of nobody's


def copier(request: LMRequest) -> Any:
    """A base model that copies its last demo's answer when it has demos, and without any
    gets the keyword tickets right (refunds wrong): demos only hurt it."""
    answers = [m["content"] for m in request.messages[1:-1] if m["role"] == "assistant"]
    if answers:
        return json.loads(answers[-1])
    ticket = last_input(request)
    return {"team": "billing" if "refund" in ticket else truth(ticket)}


def test_random_search_starts_from_zero_shot_when_demos_make_it_worse() -> None:
    compiled = desic.compile(triage, ROWS[:12], metric=METRIC, optimizer="random_search", lm=FunctionLM(copier),
                             num_candidates=3, max_demos=2, max_labeled=0, seed=2)
    zero_shot, boot = (c for c in compiled.history if c.split == "val" and c.note in ("zero-shot", "bootstrap"))
    assert (zero_shot.score or 0) > (boot.score or 0)  # on these few rows: no significant difference
    node = compiled.program.nodes[0]
    assert not node.demos and (node.select is None or not node.select.per_input)
    assert "(candidate 1)" in search_choice(compiled.history).note  # zero-shot was the start, and it was kept
    with desic.context(lm=FunctionLM(copier)):
        assert desic.evaluate(compiled, ROWS, METRIC, progress=False).score == 0.75


@pytest.mark.parametrize("name", ("bootstrap", "knn", *SEARCHING))
def test_no_optimizer_returns_a_program_below_the_pipeline_as_written(name: str) -> None:
    # a base model that copies its demos' answers: the pipeline as written (zero-shot) is
    # the best program there is, and every optimizer must return nothing worse on new rows
    with desic.context(lm=FunctionLM(copier)):
        written = desic.evaluate(triage, DEV, METRIC, progress=False).score
    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer=name, lm=FunctionLM(copier), seed=1, **SMALL[name])
    with desic.context(lm=FunctionLM(copier)):
        assert desic.evaluate(compiled, DEV, METRIC, progress=False).score >= written == 0.75
    baseline = [c for c in compiled.history if c.split == "baseline"]
    if baseline:  # the comparison is in the history, paired on the same rows, with its evidence
        assert len(baseline) == 2 and baseline[0].n == baseline[1].n > 0
        choice = compiled.history[-1]
        assert choice.split == "selected (baseline)" and "the pipeline as written" in choice.note
    else:  # no comparison only when the optimizer itself returned the pipeline as written
        node = compiled.program.nodes[0]
        assert not node.demos and node.select is None


def test_bootstrap_keeps_the_pipeline_as_written_when_its_demos_do_worse() -> None:
    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer="bootstrap", lm=FunctionLM(copier), seed=1,
                             **SMALL["bootstrap"])
    assert not compiled.program.nodes[0].demos
    written, mine, choice = compiled.history[-3:]
    assert written.split == mine.split == "baseline" and choice.split == "selected (baseline)"
    assert "keeps the pipeline as written" in choice.note and (written.score or 0) > (mine.score or 0)
    assert choice.program == written.program and choice.score == written.score
    assert compiled.program.meta.score == written.score and "without its own demos" in (compiled.program.meta.score_split or "")
    # asked not to compare, it returns its demos, however they score
    plain = desic.compile(triage, ROWS, metric=METRIC, optimizer="bootstrap", lm=FunctionLM(copier), seed=1,
                          baseline=False, **SMALL["bootstrap"])
    assert plain.program.nodes[0].demos and not any(c.split == "baseline" for c in plain.history)


def test_a_program_better_than_the_pipeline_as_written_is_kept() -> None:
    # demos with a refund ticket teach the house rule: the bootstrap program beats zero-shot
    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer="bootstrap", lm=FunctionLM(answer), seed=1,
                             **SMALL["bootstrap"])
    assert compiled.program.nodes[0].demos
    written, chosen = (c for c in compiled.history if c.split == "baseline")
    assert (chosen.score or 0) > (written.score or 0)
    assert "keeps the compiled program" in compiled.history[-1].note
    assert compiled.history[-1].split == "selected (baseline)" and compiled.program.meta.score == chosen.score



def test_a_tie_with_the_pipeline_as_written_keeps_the_compiled_program() -> None:
    def always_right(request: LMRequest) -> Any:
        return {"team": truth(last_input(request))}  # demos neither help nor hurt

    compiled = desic.compile(triage, ROWS, metric=METRIC, optimizer="bootstrap", lm=FunctionLM(always_right), seed=1,
                             **SMALL["bootstrap"])
    written, mine, choice = compiled.history[-3:]
    assert written.score == mine.score == 1.0 and mine.program.nodes[0].demos
    assert compiled.program.nodes[0].demos and "as high as the pipeline as written" in choice.note


def helped_only_where_zero_shot_fails(request: LMRequest) -> Any:
    """Zero-shot it gets charges right and refunds wrong; with any demo the reverse."""
    ticket = last_input(request)
    if any(m["role"] == "assistant" for m in request.messages[1:-1]):
        return {"team": "shipping" if "refund" in ticket else "tech"}
    return {"team": "billing"}


def test_the_comparison_is_fair_to_zero_shot_on_the_rows_bootstrap_took_its_demos_from() -> None:
    # bootstrap's demos are rows zero-shot got right: leaving those rows out of the
    # comparison keeps zero-shot's successes out and its failures in. Every row is scored,
    # each without the demo made from it.
    rows = [{"ticket": f"charge {i}", "team": "billing"} for i in range(3)] + [
        {"ticket": f"refund {i}", "team": "shipping"} for i in range(2)
    ]
    lm = FunctionLM(helped_only_where_zero_shot_fails)
    compiled = desic.compile(triage, rows, metric=METRIC, optimizer="bootstrap", lm=lm, seed=1, max_demos=2,
                             max_labeled=0)
    written, mine, choice = compiled.history[-3:]
    assert written.split == mine.split == "baseline" and written.n == mine.n == len(rows)
    assert (written.score, mine.score) == (0.6, 0.4)
    assert not compiled.program.nodes[0].demos and "keeps the pipeline as written" in choice.note
    for request in lm.calls:  # no row was ever answered with its own demo in the prompt
        shown = [m["content"] for m in request.messages[1:-1] if m["role"] == "user"]
        assert request.messages[-1]["content"] not in shown
    dev = [{"ticket": f"{w} {i}", "team": t} for i in range(10, 20) for w, t in
           (("charge", "billing"), ("charge", "billing"), ("charge", "billing"), ("refund", "shipping"),
            ("refund", "shipping"))]
    plain = desic.compile(triage, rows, metric=METRIC, optimizer="bootstrap", lm=FunctionLM(helped_only_where_zero_shot_fails),
                          seed=1, max_demos=2, max_labeled=0, baseline=False)
    with desic.context(lm=FunctionLM(helped_only_where_zero_shot_fails)):
        assert desic.evaluate(compiled, dev, METRIC, progress=False).score == 0.6  # new rows agree
        assert desic.evaluate(plain, dev, METRIC, progress=False).score == 0.4
