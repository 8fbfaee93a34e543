# mypy: disable-error-code="empty-body"
"""Bootstrapping with labelled demos in front of the trace-producing model (DSPy's teacher).

The fake model here cannot do the task zero-shot: it answers right only when at least one
demo is in its prompt. So traces are accepted only if bootstrapping shows it labelled
demos, and what it was shown can be checked call by call.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

import desic
from desic.errors import ConfigError
from desic.lm import LMRequest
from desic.testing import FunctionLM, last_input


@desic.signature
def shout(word: str) -> str:
    """Repeat the word in capitals."""


@desic.pipeline
def loud(word: str) -> str:
    return shout(word=word)


WORDS = ["apple", "pear", "plum", "fig", "kiwi", "lime", "date", "yuzu", "sloe", "quince"]
ROWS = [{"word": w, "output": w.upper()} for w in WORDS]


class Shown:
    """The fake model, recording for each call its input and the demo inputs it was shown."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, list[str]]] = []
        self._lock = threading.Lock()

    def __call__(self, request: LMRequest) -> Any:
        word = last_input(request).removeprefix("word: ")
        demos = [m["content"].removeprefix("word: ") for m in request.messages[1:-1] if m["role"] == "user"]
        with self._lock:
            self.seen.append((word, demos))
        return word.upper() if demos else "no idea"  # right only with a demo to copy from


@pytest.mark.parametrize("target", [shout, loud], ids=["signature", "pipeline"])
def test_labelled_demos_let_a_weak_model_produce_traces(target: Any) -> None:
    model = Shown()
    compiled: desic.CompiledPipeline[..., Any] = desic.compile(
        target, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=3, max_labeled=2,
        lm=FunctionLM(model), concurrency=3, baseline=False,
    )
    (node,) = compiled.program.nodes
    sources = [d.source for d in node.demos]
    assert sources.count("bootstrap") == 3 and sources.count("labeled") == 2
    for demo in node.demos:
        assert demo.output == {"output": demo.inputs["word"].upper()}
    assert len({d.inputs["word"] for d in node.demos}) == 5  # no row twice

    bootstrapping = [(w, d) for w, d in model.seen if d]
    assert bootstrapping, "the rows ran with labelled demos"
    for word, demos in bootstrapping:
        assert len(demos) == 2  # teacher_demos defaults to max_labeled
        assert word not in demos  # a row never sees its own label
    # a bare signature's node is known; a @pipeline's is found with one zero-shot run first
    # (the discovering run is the only call without demos)
    assert [bool(d) for _, d in model.seen].count(False) == (1 if target is loud else 0)
    if target is shout:
        assert len(model.seen) == 3  # every row accepted: the quota filled with no call wasted
    # at most 3 distinct demo sets: the first two labelled rows, or (for those two rows) the
    # other one and the spare third
    assert len({tuple(d) for _, d in bootstrapping}) <= 3


def test_without_teacher_demos_the_weak_model_yields_no_traces() -> None:
    model = Shown()
    compiled = desic.compile(
        shout, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=3, max_labeled=2,
        teacher_demos=0, lm=FunctionLM(model), baseline=False,
    )
    (node,) = compiled.program.nodes
    assert [d.source for d in node.demos] == ["labeled", "labeled"]
    assert all(not demos for _, demos in model.seen)
    assert len(model.seen) == len(ROWS)  # no run to discover the node: none is needed


def test_teacher_demos_can_differ_from_the_labelled_top_up() -> None:
    model = Shown()
    compiled = desic.compile(
        shout, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=2, max_labeled=0,
        teacher_demos=4, lm=FunctionLM(model), concurrency=1, baseline=False,
    )
    (node,) = compiled.program.nodes
    assert [d.source for d in node.demos] == ["bootstrap", "bootstrap"]  # the teacher's demos stay out
    assert {len(d) for _, d in model.seen if d} == {4}


def test_retry_rounds_show_the_same_number_of_demos() -> None:
    calls: list[int] = []

    def picky(request: LMRequest) -> Any:
        word = last_input(request).removeprefix("word: ")
        calls.append(sum(1 for m in request.messages[1:-1] if m["role"] == "user"))
        sampled = request.params.temperature is not None
        return word.upper() if sampled else "no idea"  # right only in a retry round

    compiled = desic.compile(
        shout, ROWS[:6], metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=2, max_labeled=1,
        rounds=2, lm=FunctionLM(picky), baseline=False,
    )
    (node,) = compiled.program.nodes
    assert [d.source for d in node.demos].count("bootstrap") == 2
    assert set(calls[1:]) == {1}  # every bootstrap call, round 1 or 2, showed exactly one demo


def test_same_seed_same_demos_whatever_the_concurrency() -> None:
    programs = [
        desic.compile(
            loud, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=3, max_labeled=2,
            lm=FunctionLM(Shown()), concurrency=c, seed=7,
        ).program.nodes
        for c in (1, 4)
    ]
    assert programs[0] == programs[1]


def test_negative_teacher_demos_is_refused() -> None:
    with pytest.raises(ConfigError, match="teacher_demos=-1"):
        desic.compile(shout, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap", teacher_demos=-1,
                      lm=FunctionLM(Shown()))


# --- distinct answers first -----------------------------------------------------------------


def test_pick_diverse_covers_distinct_answers_first_and_keeps_order() -> None:
    from desic import ir
    from desic.optimize.demos import pick_diverse

    def demo(answer: str, reasoning: str = "") -> ir.Demo:
        return ir.Demo(inputs={"q": answer}, output={"reasoning": reasoning, "answer": answer})

    rows = [(i, demo(a, reasoning=str(i))) for i, a in enumerate(["none", "none", "A", "none", "B", "A"])]
    assert [i for i, _ in pick_diverse(rows, 3)] == [0, 2, 4]  # one "none", then A and B
    assert [i for i, _ in pick_diverse(rows, 4)] == [0, 1, 2, 4]  # the 4th: the first repeat
    assert [i for i, _ in pick_diverse(rows, 2, taken=[demo("none")])] == [2, 4]  # reasoning ignored
    assert [i for i, _ in pick_diverse(rows, 10)] == [0, 1, 2, 3, 4, 5]
    assert pick_diverse(rows, 0) == []


def test_labelled_top_up_prefers_answers_the_demos_lack() -> None:
    rows = [{"word": w, "output": "none"} for w in ("a", "b", "c", "d", "e", "f")] + [
        {"word": "plum", "output": "PLUM"},
        {"word": "fig", "output": "FIG"},
    ]

    def never(request: LMRequest) -> Any:
        return "wrong"

    compiled = desic.compile(
        shout, rows, metric=desic.metrics.exact_match, optimizer="bootstrap", max_demos=2, max_labeled=3,
        lm=FunctionLM(never),
    )
    (node,) = compiled.program.nodes
    answers = sorted(d.output["output"] for d in node.demos)
    assert answers == ["FIG", "PLUM", "none"]  # not three "none" rows, whatever the seeded order
