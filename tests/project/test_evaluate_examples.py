"""The shipped examples work end to end on fakes (their data, retriever and metrics)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

import desic
from desic._bm25 import tokenize  # the terms desic's BM25 matches
from desic.lm import LMRequest
from desic.testing import FunctionLM, last_input
from tests.support import ROOT

EXAMPLES = ROOT / "examples"
sys.path.insert(0, str(EXAMPLES))

import booking
import qa


def rows(name: str) -> list[dict[str, Any]]:
    return desic.load_dataset(EXAMPLES / "data" / name)


@pytest.mark.parametrize("split", ["qa_train.jsonl", "qa_dev.jsonl"])
def test_bm25_finds_the_passage_with_the_answer(split: str) -> None:
    for row in rows(split):
        found = " ".join(qa.INDEX.search(row["question"], k=2)).lower()
        assert row["answer"].lower() in found, row


def reader(request: LMRequest) -> Any:
    """Keywords for the query step; for the answer step, the first passage's capitalised words."""
    text = last_input(request)
    if request.node_id == "search_query":
        return {"query": " ".join(tokenize(text))[:60]}
    passages = text.split("passages: ", 1)[-1]
    gold = {r["question"]: r["answer"] for r in rows("qa_train.jsonl") + rows("qa_dev.jsonl")}
    question = text.split("question: ", 1)[-1].split("\n", 1)[0]
    answer = gold.get(question, "unknown")
    return {"answer": answer if answer.lower() in passages.lower() else "unknown"}


def test_qa_is_a_two_step_pipeline_that_compiles() -> None:
    lm = FunctionLM(reader)
    report = desic.evaluate(qa.qa, rows("qa_dev.jsonl"), desic.metrics.contains, lm=lm)
    assert report.score == 1.0 and report.usage.calls == 2 * len(report.results)
    compiled: desic.CompiledPipeline[..., Any] = desic.compile(qa.qa, rows("qa_train.jsonl"), metric=desic.metrics.contains,
                             optimizer="bootstrap", max_demos=2, lm=FunctionLM(reader))
    assert compiled.program.node_ids == ("search_query", "answer")
    assert all(len(n.demos) == 2 for n in compiled.program.nodes)


def test_booking_is_scored_field_by_field() -> None:
    dev = rows("booking_dev.jsonl")
    gold = {r["message"]: {k: v for k, v in r.items() if k != "message"} for r in dev}

    def extract(request: LMRequest) -> Any:
        answer = json.loads(json.dumps(gold[last_input(request).removeprefix("message: ")]))
        if answer["nights"] > 4:
            answer["nights"] = 1  # gets long stays wrong
        return answer

    report = desic.evaluate(booking.booking, dev, desic.metrics.field_match, lm=FunctionLM(extract))
    long_stays = [i for i, r in enumerate(dev) if r["nights"] > 4]
    assert long_stays
    for i, r in enumerate(report.results):
        if i in long_stays:
            assert r.score == pytest.approx(4 / 5) and "nights: expected" in (r.feedback or "")
        else:
            assert r.score == 1.0 and r.feedback is None


def test_the_examples_tell_embeddings_requests_from_chat_calls(tmp_path: Path) -> None:
    """The bench compares compile calls with DSPy's chat calls: embeddings go in their own figure."""
    from _common import compile_and_compare

    lm = FunctionLM(reader)
    dev = rows("qa_dev.jsonl")[:4]
    figures = compile_and_compare(qa.qa, rows("qa_train.jsonl"), dev, desic.metrics.contains, optimizer="knn",
                                  small=True, concurrency=2, before=False, lm=lm, out=str(tmp_path / "qa.json"))
    program = desic.load(tmp_path / "qa.json", pipeline=qa.qa).program
    matched = [n.id for n in program.nodes if n.select is not None and n.select.by == "embeddings"]
    assert matched, "the knn preset matches demos by embeddings"
    # the dev rows' runs after the compile: one chat call per node, one embedding per matched node
    assert figures["compile_embeds"] == len(lm.embed_calls) - len(dev) * len(matched) > 0
    assert figures["compile_calls"] == len(lm.calls) - len(dev) * len(program.nodes)


@pytest.mark.parametrize("optimizer", ["bootstrap", "knn"])
def test_a_compile_does_not_send_the_same_prompt_twice(optimizer: str) -> None:
    """The run that discovers a pipeline's nodes is the first row's zero-shot run: the
    traces it collects next reuse it rather than asking again."""
    from _common import LOCAL_PRESETS

    lm = FunctionLM(reader)
    desic.compile(qa.qa, rows("qa_train.jsonl"), metric=desic.metrics.contains, optimizer=optimizer, lm=lm,
                  progress=False, **LOCAL_PRESETS[optimizer])
    prompts = [json.dumps(r.messages, sort_keys=True) for r in lm.calls]
    assert len(set(prompts)) == len(prompts)
