# mypy: disable-error-code="empty-body"
"""Metrics: text overlap, structured field match, embeddings and the LLM judge."""

from __future__ import annotations

import math
import re
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.data import Example
from desic.lm import BaseLM, LMRequest, LMResponse, Usage
from desic.metrics import (
    contains,
    exact_match,
    f1,
    field_match,
    judge,
    metric_key,
    score_of,
    semantic_similarity,
    token_f1,
)
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, answer, triage


def ex(**labels: Any) -> Example:
    return Example(inputs={"question": "q"}, labels=labels)


# --- text ------------------------------------------------------------------------------------


def test_exact_match_normalises_case_space_and_trailing_punctuation() -> None:
    assert exact_match(ex(answer="Paris"), "  paris. ") == 1.0
    assert exact_match(ex(answer="Paris"), "Lyon") == 0.0


def test_token_f1_gives_partial_credit() -> None:
    assert token_f1(ex(answer="the Eiffel Tower"), "Eiffel Tower") == 1.0  # articles dropped
    assert token_f1(ex(answer="red and white"), "red") == pytest.approx(0.5)  # P 1, R 1/3
    assert token_f1(ex(answer="Paris"), "London") == 0.0
    assert f1 is token_f1


def test_contains_checks_the_label_occurs_in_the_output() -> None:
    assert contains(ex(answer="Tomas Reyne"), "It was built by the engineer Tomas Reyne.") == 1.0
    assert contains(ex(answer="Tomas Reyne"), "Reyne") == 0.0


def test_text_metrics_read_structured_outputs_by_field() -> None:
    class Answer(BaseModel):
        answer: str

    assert contains(ex(answer="Saltmere"), Answer(answer="the village of Saltmere")) == 1.0
    assert token_f1(ex(answer="Saltmere"), Answer(answer="Saltmere village")) == pytest.approx(2 / 3)


# --- structured ------------------------------------------------------------------------------


class Guest(BaseModel):
    name: str
    phone: str


class Booking(BaseModel):
    guest: Guest
    room: Literal["single", "double"]
    nights: int
    tags: list[str] = []


def test_field_match_scores_the_share_of_right_fields_and_names_the_wrong_ones() -> None:
    row = ex(guest={"name": "Maria Lopez", "phone": "555-0142"}, room="double", nights=3, tags=["late"])
    out = Booking(guest=Guest(name="maria lopez", phone="555-0000"), room="double", nights=2, tags=["late"])
    score, feedback = field_match(row, out)
    assert score == pytest.approx(3 / 5)
    assert feedback is not None and feedback.startswith("2 of 5 fields wrong")
    assert "guest.phone: expected '555-0142', got '555-0000'" in feedback
    assert "nights: expected 3, got 2" in feedback
    assert "guest.name" not in feedback  # normalised: case does not matter
    perfect = Booking(guest=Guest(name="Maria Lopez", phone="555-0142"), room="double", nights=3, tags=["late"])
    assert field_match(row, perfect) == (1.0, None)


def test_field_match_compares_lists_of_objects_item_by_item() -> None:
    row = ex(items=[{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}])
    score, feedback = field_match(row, {"items": [{"sku": "A", "qty": 1}]})
    assert score == pytest.approx(2 / 4)
    assert "items[1].sku: missing" in (feedback or "")
    score, feedback = field_match(row, {"items": [{"sku": "A", "qty": 1}, {"sku": "B", "qty": 2}, {"sku": "C", "qty": 1}]})
    assert score == pytest.approx(4 / 6) and "items[2].sku: unexpected 'C'" in (feedback or "")


def test_field_match_takes_a_whole_structured_label() -> None:
    row = ex(booking={"room": "single", "nights": 1})
    assert field_match(row, {"room": "single", "nights": 4})[0] == 0.5


def test_score_of_accepts_floats_bools_and_pairs() -> None:
    assert score_of(True) == (1.0, None)
    assert score_of(0.25) == (0.25, None)
    assert score_of((1, "fine")) == (1.0, "fine")
    with pytest.raises(desic.DataError, match="returned None"):
        score_of(None)


# --- embeddings ------------------------------------------------------------------------------


class BagOfWordsLM(BaseLM):
    """A tiny LM with embeddings: word-count vectors over a fixed vocabulary."""

    name = "bow"
    VOCAB = ("paris", "capital", "france", "london", "city", "river")

    def __init__(self) -> None:
        self.embedded: list[list[str]] = []

    async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - unused
        raise NotImplementedError

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.embedded.append(list(texts))
        return [[float(re.findall(r"[a-z]+", t.lower()).count(w)) for w in self.VOCAB] for t in texts]


def test_semantic_similarity_is_the_cosine_of_embeddings() -> None:
    lm = BagOfWordsLM()
    metric = semantic_similarity(lm)
    score, _ = metric(ex(answer="Paris, capital of France"), "the capital of France is Paris")
    assert score == pytest.approx(1.0)
    score, _ = metric(ex(answer="Paris capital"), "London city")
    assert score == 0.0
    score, _ = metric(ex(answer="Paris capital"), "Paris city")
    assert score == pytest.approx(1 / 2)
    assert lm.embedded[0] == ["Paris, capital of France", "the capital of France is Paris"]
    assert semantic_similarity(lm, threshold=0.4)(ex(answer="Paris capital"), "Paris city")[0] == 1.0


def test_semantic_similarity_uses_the_lm_in_context_and_explains_a_missing_embed() -> None:
    lm = BagOfWordsLM()
    with desic.context(lm=lm):
        assert semantic_similarity()(ex(answer="paris"), "paris")[0] == pytest.approx(1.0)
    class NoEmbed:  # an LM of the bare protocol, without embeddings
        name = "bare"

        async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - unused
            raise NotImplementedError

        def describe(self) -> dict[str, Any]:
            return {"name": "bare"}

    with pytest.raises(desic.ConfigError, match="needs an LM with embeddings"):
        semantic_similarity(NoEmbed())(ex(answer="paris"), "paris")
    with pytest.raises(desic.LMError, match="cannot embed"):
        semantic_similarity(BaseLM())(ex(answer="paris"), "paris")


def test_semantic_similarity_in_an_evaluation() -> None:
    class Echo(BagOfWordsLM):
        async def request(self, request: LMRequest) -> LMResponse:
            value = request.response_model(output="Paris is the capital")
            return LMResponse(value=value, raw="", usage=Usage(calls=1))

    @desic.signature
    def capital(question: str) -> str:
        """Answer."""

    lm = Echo()
    report = desic.evaluate(capital, [{"question": "capital of France?", "answer": "Paris capital"}], semantic_similarity(), lm=lm)
    assert report.score == pytest.approx(1.0)
    assert math.isclose(report.results[0].score, 1.0)


# --- the LLM judge ---------------------------------------------------------------------------


def grader(request: LMRequest) -> Any:
    if request.node_id == "judge":
        text = request.messages[-1]["content"]
        good = "output: " in text and "billing" in text.split("output: ")[-1]
        return {"reason": "routed to billing" if good else "not billing", "score": 0.9 if good else 0.1}
    return answer(request)


def test_judge_is_a_signature_returning_score_and_reason() -> None:
    lm = FunctionLM(grader)
    metric = judge("the ticket goes to billing", lm=lm)
    assert metric(Example(inputs={"ticket": "x"}, labels={}), {"team": "billing"}) == (0.9, "routed to billing")
    sent = lm.calls[0].messages
    assert "the ticket goes to billing" in sent[-1]["content"] and "ticket: x" in sent[-1]["content"]
    assert judge("c", lm=lm, threshold=0.5)(Example(inputs={"t": "x"}), {"team": "tech"})[0] == 0.0
    with pytest.raises(desic.ConfigError, match="criteria"):
        judge("  ")
    assert metric_key(metric) != metric_key(judge("other criteria"))


def test_judge_in_evaluation_counts_its_calls_and_gives_feedback() -> None:
    lm = FunctionLM(grader)
    dev = [{"ticket": "charge 1", "team": "billing"}, {"ticket": "crash 2", "team": "tech"}]
    report = desic.evaluate(triage, dev, judge("routed to billing"), lm=lm)
    assert [r.score for r in report.results] == [0.9, 0.1]
    assert report.results[1].feedback == "not billing"
    assert report.usage.calls == 4  # two pipeline calls and two judge calls
    assert report.results[0].usage.calls == 2


def test_judge_calls_are_memoized_in_a_compile_and_never_become_nodes() -> None:
    from desic.optimize import MemoryRecorder

    recorder = MemoryRecorder()
    lm = FunctionLM(grader)
    compiled = desic.compile(triage, ROWS[:8], metric=judge("routed well"), optimizer="random_search",
                             num_candidates=2, lm=lm, recorder=recorder)
    assert compiled.program.node_ids == ("route",)
    assert any(r.node_id == "judge" for r in lm.calls)
    assert compiled.usage.calls == len(lm.calls)  # the judge's calls count as compile usage
    again = FunctionLM(grader)
    desic.compile(triage, ROWS[:8], metric=judge("routed well"), optimizer="random_search",
                  num_candidates=2, lm=again, recorder=recorder)
    assert again.calls == []
