# mypy: disable-error-code="empty-body"
"""Mistakes found before the first LM call, and raw exceptions turned into desic errors.

Every check here must refuse its input with a ``DesicError`` that names what is wrong,
and must do it before a single LM call is paid for (the fakes record every call).
"""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic import events
from desic.evaluate import aevaluate
from desic.testing import FakeLM

# --- a small task -------------------------------------------------------------------------


class Route(BaseModel):
    team: Literal["billing", "tech"]


class Ticket(BaseModel):
    team: Literal["billing", "tech"]
    urgent: bool


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


@desic.signature
def classify(ticket: str) -> Ticket:
    """Classify the ticket."""


@desic.signature
def reply(ticket: str) -> str:
    """Reply to the ticket."""


@desic.pipeline
def triage(ticket: str) -> Route:
    return route(ticket=ticket)


@desic.pipeline
def untyped(ticket: str):  # type: ignore[no-untyped-def]  # no return annotation: output unknown
    return route(ticket=ticket)


ROWS = [{"ticket": f"charge {i}", "team": "billing"} for i in range(3)]


def fake() -> FakeLM:
    return FakeLM(default={"team": "billing", "urgent": False, "output": "hello"})


# --- 10. the metric -----------------------------------------------------------------------


@pytest.mark.parametrize("name", ["exact_match", "token_f1", "f1", "contains", "field_match"])
def test_evaluate_takes_a_known_metric_by_name(name: str) -> None:
    report = desic.evaluate(route, ROWS, name, lm=fake())
    assert report.errors == 0
    assert report.score == 1.0


def test_aevaluate_and_compile_take_a_metric_by_name() -> None:
    report = asyncio.run(aevaluate(route, ROWS, "exact_match", lm=fake()))
    assert report.score == 1.0 and report.errors == 0
    compiled = desic.compile(route, ROWS, metric="exact_match", optimizer="bootstrap", lm=fake())
    assert compiled.program.nodes[0].demos


@pytest.mark.parametrize("metric", ["accuracy", "exact-match", 42, None])
def test_an_unusable_metric_is_refused_before_any_call(metric: Any) -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError) as info:
        desic.evaluate(route, ROWS, metric, lm=lm)
    message = str(info.value)
    for name in ("exact_match", "token_f1", "contains", "field_match"):
        assert name in message
    assert "\n" not in message
    assert lm.calls == []


def test_compile_refuses_an_unknown_metric_name_before_any_call() -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError, match="unknown metric 'exactmatch'.*exact_match"):
        desic.compile(route, ROWS, metric="exactmatch", lm=lm)
    with pytest.raises(desic.ConfigError, match="metric"):
        desic.compile(route, ROWS, metric=3.5, lm=lm)  # type: ignore[arg-type]
    assert lm.calls == []


def test_a_metric_that_cannot_take_example_and_output_is_refused() -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError, match=r"metric\(example, output\)"):
        desic.evaluate(route, ROWS, lambda output: 1.0, lm=lm)  # type: ignore[arg-type, misc]
    assert lm.calls == []


# --- 10. label keys -----------------------------------------------------------------------


def test_labels_matching_no_output_field_are_refused_naming_row_labels_and_fields() -> None:
    lm = fake()
    rows = [*ROWS, {"ticket": "sad", "sentiment": "negative", "score": 2}]
    with pytest.raises(desic.DataError) as info:
        desic.evaluate(route, rows, desic.metrics.exact_match, lm=lm)
    message = str(info.value)
    assert "row 3" in message and "sentiment" in message and "score" in message and "team" in message
    assert info.value.row == 3
    assert lm.calls == []


@pytest.mark.parametrize("target", [route, triage], ids=["signature", "pipeline"])
def test_compile_refuses_labels_of_another_task(target: Any) -> None:
    lm = fake()
    rows = [{"ticket": "a", "sentiment": "positive", "language": "en"}] * 3
    with pytest.raises(desic.DataError, match="row 0.*language.*sentiment.*team"):
        desic.compile(target, rows, metric=desic.metrics.exact_match, lm=lm)
    assert lm.calls == []


def test_a_bare_output_with_several_labels_and_no_answer_label_is_refused() -> None:
    lm = fake()
    with pytest.raises(desic.DataError, match="row 0"):
        desic.evaluate(reply, [{"ticket": "a", "tone": "warm", "length": 3}], "exact_match", lm=lm)
    with pytest.raises(desic.DataError, match="no labels"):
        desic.evaluate(reply, [{"ticket": "a"}], "exact_match", lm=lm)
    assert lm.calls == []


@pytest.mark.parametrize(
    ("target", "row"),
    [
        (reply, {"ticket": "a", "expected": "hello"}),  # a single label matches a bare output
        (reply, {"ticket": "a", "answer": "hello", "notes": "x"}),  # "answer" is the one compared
        (route, {"ticket": "a", "label": "billing"}),  # a single label, a single-field output
        (route, {"ticket": "a", "route": {"team": "billing"}}),  # the whole output under one label
        (classify, {"ticket": "a", "team": "billing", "source": "mail"}),  # extra labels beside a field
        (untyped, {"ticket": "a", "team": "billing"}),  # output type unknown: not checked
    ],
    ids=["bare-single", "bare-answer", "single-field", "whole-output", "extra-label", "unknown-type"],
)
def test_labels_that_work_today_are_still_accepted(target: Any, row: dict[str, Any]) -> None:
    lm = fake()
    report = desic.evaluate(target, [row], desic.metrics.exact_match, lm=lm)
    assert report.errors == 0, report.results[0].error


def test_a_custom_metric_may_read_any_label() -> None:
    def long_enough(example: desic.Example, output: Any) -> float:
        return float(len(output.team) >= example.labels["min_length"])

    report = desic.evaluate(route, [{"ticket": "a", "min_length": 3}], long_enough, lm=fake())
    assert report.score == 1.0


# --- 10. label values ---------------------------------------------------------------------


def test_a_label_value_the_output_type_refuses_never_becomes_a_demo() -> None:
    lm = fake()
    rows = [*ROWS, {"ticket": "crash", "team": 7}]
    with pytest.raises(desic.DataError) as info:
        desic.compile(route, rows, optimizer="labeled", lm=lm)
    message = str(info.value)
    assert "row 3" in message and "'team'" in message and "Input should be 'billing' or 'tech'" in message
    assert info.value.row == 3 and info.value.field == "team"
    assert lm.calls == []


def test_evaluate_refuses_a_label_that_can_never_equal_the_output() -> None:
    lm = fake()
    with pytest.raises(desic.DataError, match="row 1.*'urgent'"):
        desic.evaluate(classify, [{"ticket": "a", "team": "tech", "urgent": True},
                                  {"ticket": "b", "team": "tech", "urgent": "very"}], "exact_match", lm=lm)
    assert lm.calls == []


def test_label_values_exact_match_treats_as_equal_are_still_accepted() -> None:
    # exact_match compares normalised text: "Billing " scores 1.0 against "billing" today
    report = desic.evaluate(route, [{"ticket": "a", "team": "Billing "}], desic.metrics.exact_match, lm=fake())
    assert report.score == 1.0


# --- 10. optimizer options ----------------------------------------------------------------


BAD_OPTIONS = [
    ("labeled", "max_demos", -1),
    ("bootstrap", "max_demos", -1),
    ("bootstrap", "max_labeled", -2),
    ("bootstrap", "threshold", 1.5),
    ("bootstrap", "rounds", 0),
    ("bootstrap", "max_demos", "four"),
    ("random_search", "num_candidates", -1),
    ("random_search", "val_fraction", 1.5),
    ("random_search", "max_val", 0),
    ("beam", "width", 0),
    ("beam", "temperature", -0.5),
    ("genetic", "mutation", 2.0),
    ("genetic", "generations", -1),
    ("mipro", "trials", -3),
    ("mipro", "gamma", 0.0),
    ("reflective", "iterations", -1),
    ("reflective", "max_val", True),
]


@pytest.mark.parametrize(("optimizer", "option", "value"), BAD_OPTIONS, ids=lambda v: str(v))
def test_optimizer_options_out_of_range_are_config_errors(optimizer: str, option: str, value: Any) -> None:
    lm = fake()
    with pytest.raises(desic.ConfigError) as info:
        desic.compile(route, ROWS, metric=desic.metrics.exact_match, optimizer=optimizer, lm=lm, **{option: value})
    message = str(info.value)
    assert f"{option}={value!r}" in message
    assert optimizer in message
    assert "\n" not in message
    assert lm.calls == []


def test_optimizer_constructors_check_their_options() -> None:
    from desic.optimize.bootstrap import Bootstrap
    from desic.optimize.labeled import Labeled
    from desic.optimize.mipro import Mipro

    with pytest.raises(desic.ConfigError, match=r"max_demos=-1.*0 or more"):
        Labeled(max_demos=-1)
    with pytest.raises(desic.ConfigError, match=r"threshold=2.*between 0 and 1"):
        Bootstrap(threshold=2)
    with pytest.raises(desic.ConfigError, match=r"parallel=0.*None, or a whole number 1 or more"):
        Mipro(parallel=0)
    Mipro(parallel=None, minibatch=0)  # minibatch 0: score on the whole validation split


def test_unknown_options_still_list_the_valid_names() -> None:
    with pytest.raises(desic.ConfigError, match="its options: max_demos"):
        desic.compile(route, ROWS, optimizer="labeled", lm=fake(), max_demo=2)


# --- 10. return types ---------------------------------------------------------------------


class Loose(BaseModel):
    answer: str
    extra: Any


def test_a_return_type_without_a_schema_is_a_signature_error() -> None:
    with pytest.raises(desic.SignatureError, match="return type.*object"):
        @desic.signature
        def vague(question: str) -> object:
            """Answer."""

    with pytest.raises(desic.SignatureError, match="extra"):
        @desic.signature
        def loose(question: str) -> Loose:
            """Answer."""


# --- 11. LM options -----------------------------------------------------------------------

URL = "http://127.0.0.1:9/v1"  # nothing listens there; nothing may be sent


@pytest.mark.parametrize(
    ("option", "value"),
    [("retries", -1), ("rps", 0), ("rps", -2.5), ("timeout", 0), ("timeout", -1), ("tpm", 0), ("burst", 0)],
)
def test_lm_options_out_of_range_are_config_errors(option: str, value: Any) -> None:
    extra = {"rps": 1} if option == "burst" else {}
    with pytest.raises(desic.ConfigError, match=f"{option}={value!r}"):
        desic.lm("openai:gpt-4o-mini", base_url=URL, api_key="x", **{option: value, **extra})
    with pytest.raises(desic.ConfigError, match=f"{option}={value!r}"):
        desic.lm(FakeLM(), **{option: value, **extra})


def test_lm_options_are_checked_before_the_provider_is_built(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    with pytest.raises(desic.ConfigError, match="retries=-1"):  # not "needs an API key"
        desic.lm("openai:gpt-4o-mini", retries=-1)


def test_the_lm_wrappers_check_their_options_too() -> None:
    with pytest.raises(desic.ConfigError, match="max_retries=-3"):
        desic.lm.retry(FakeLM(), -3)
    with pytest.raises(desic.ConfigError, match="rps=0"):
        desic.lm.throttle(FakeLM(), rps=0)
    with pytest.raises(desic.ConfigError, match="seconds=0"):
        desic.lm.timeout(FakeLM(), 0)


# --- 11. declarations ---------------------------------------------------------------------


@pytest.mark.parametrize("thing", [42, "triage", route.spec])
def test_pipeline_of_a_non_function_is_a_signature_error(thing: Any) -> None:
    with pytest.raises(desic.SignatureError, match="@desic.pipeline"):
        desic.pipeline(thing)


def test_evaluating_a_non_pipeline_is_a_signature_error() -> None:
    with pytest.raises(desic.SignatureError, match="expected a @desic.pipeline"):
        desic.evaluate(42, ROWS, "exact_match")


# --- 11. rows that are not JSON -----------------------------------------------------------


def test_a_row_value_that_is_not_json_is_a_data_error_naming_row_and_field() -> None:
    lm = fake()
    rows = [*ROWS, {"ticket": "x", "team": "tech", "attachment": object()}]
    with pytest.raises(desic.DataError) as info:
        desic.compile(route, rows, optimizer="labeled", lm=lm)
    assert "row 3" in str(info.value) and "'attachment'" in str(info.value)
    assert info.value.row == 3 and info.value.field == "attachment"
    assert lm.calls == []


@pytest.mark.parametrize("suffix", [".jsonl", ".json", ".csv"])
def test_a_file_that_is_not_utf8_is_a_data_error_naming_file_and_line(tmp_path: Path, suffix: str) -> None:
    body = {
        ".jsonl": b'{"ticket": "ok"}\n{"ticket": "caf\xe9"}\n',
        ".json": b'[\n{"ticket": "ok"},\n{"ticket": "caf\xe9"}\n]\n',
        ".csv": b"ticket\nok\ncaf\xe9\n",
    }[suffix]
    path = tmp_path / f"rows{suffix}"
    path.write_bytes(body)
    with pytest.raises(desic.DataError) as info:
        desic.load_dataset(path)
    message = str(info.value)
    assert str(path) in message and "UTF-8" in message
    line = {".jsonl": 2, ".json": 3, ".csv": 3}[suffix]
    assert f":{line}:" in message or f"line {line}" in message


# --- 11. huge rows and demos --------------------------------------------------------------


def test_a_huge_row_never_becomes_a_demo(caplog: pytest.LogCaptureFixture) -> None:
    from desic.optimize.demos import MAX_DEMO_CHARS

    huge = {"ticket": "charge " + "x" * 10_000_000, "team": "billing"}
    rows = [huge, *ROWS]
    seen: list[events.Event] = []
    for optimizer in ("labeled", "bootstrap"):
        with caplog.at_level(logging.WARNING, logger="desic"), events.listening(seen.append):
            compiled = desic.compile(route, rows, metric=desic.metrics.exact_match, optimizer=optimizer, lm=fake())
        demos = compiled.program.nodes[0].demos
        assert demos, optimizer  # the other rows still make demos
        assert all(len(json.dumps({"inputs": d.inputs, "output": d.output})) <= MAX_DEMO_CHARS for d in demos)
    warnings = [e for e in seen if e.kind == "demo_skipped"]
    assert warnings and warnings[0].data["rows"] == [0] and warnings[0].data["limit"] == MAX_DEMO_CHARS
    assert "row 0" in caplog.text and "MAX_DEMO_CHARS" in caplog.text
