# mypy: disable-error-code="empty-body"
"""Retrievers: corpora, BM25 and embeddings ranking, and a search as a traced pipeline step."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

import desic
from desic import events
from desic.data import Example
from desic.lm import LMRequest
from desic.record import outcome_from_record, outcome_record
from desic.retrieve import load_corpus, traced
from desic.runtime import RunState
from desic.testing import FakeLM, FunctionLM, last_input

CORPUS = [
    {"id": "ferry", "text": "The ferry leaves the north pier every 40 minutes.", "topic": "transport"},
    {"id": "fare", "text": "A ferry ticket costs 6 crowns; children travel free.", "topic": "transport"},
    {"id": "lighthouse", "text": "The lighthouse was built in 1887 and is painted red and white."},
    {"id": "market", "text": "The fish market on Quay Street opens at dawn on Saturdays."},
]


def test_corpora_load_from_lists_jsonl_json_and_folders(tmp_path: Path) -> None:
    (tmp_path / "c.jsonl").write_text("\n".join(json.dumps(r) for r in CORPUS) + "\n\n")
    (tmp_path / "c.json").write_text(json.dumps([r["text"] for r in CORPUS]))
    folder = tmp_path / "docs"
    (folder / "sub").mkdir(parents=True)
    (folder / "b.txt").write_text("second file")
    (folder / "sub" / "a.md").write_text("first file")
    (folder / "skip.bin").write_bytes(b"\x00")

    from_jsonl = load_corpus(tmp_path / "c.jsonl")
    assert [p.id for p in from_jsonl] == ["ferry", "fare", "lighthouse", "market"]
    assert from_jsonl[0] == CORPUS[0]["text"] and from_jsonl[0].meta == {"topic": "transport"}
    assert [p.id for p in load_corpus(str(tmp_path / "c.json"))] == ["0", "1", "2", "3"]
    assert [(p.id, p.text) for p in load_corpus(folder)] == [("b.txt", "second file"), ("sub/a.md", "first file")]
    assert [p.id for p in load_corpus(["x", "y"])] == ["0", "1"]
    assert load_corpus([{"body": "hi", "id": 7}], text_field="body")[0].id == "7"


def test_bad_corpora_say_which_row_and_how_to_fix_it(tmp_path: Path) -> None:
    with pytest.raises(desic.DataError, match="row 1 has no string field 'text'.*text_field=") as info:
        load_corpus([{"text": "ok"}, {"body": "no text"}])
    assert info.value.row == 1 and info.value.field == "text"
    with pytest.raises(desic.DataError, match="row 0 is int"):
        load_corpus([3])  # type: ignore[list-item]
    (tmp_path / "bad.jsonl").write_text('{"text": "a"}\n{oops\n')
    with pytest.raises(desic.DataError, match="line 2 is not JSON"):
        load_corpus(tmp_path / "bad.jsonl")
    with pytest.raises(desic.DataError, match="corpus not found"):
        load_corpus(tmp_path / "missing.jsonl")
    (tmp_path / "empty").mkdir()
    with pytest.raises(desic.DataError, match="no text files"):
        load_corpus(tmp_path / "empty")


def test_bm25_ranks_the_matching_passage_first_deterministically() -> None:
    retriever = desic.BM25Retriever(CORPUS, k=2)
    found = retriever.search("how much is a ferry ticket")
    assert [p.id for p in found] == ["fare", "ferry"]
    assert isinstance(found[0], str) and found[0].startswith("A ferry ticket")
    assert found[0].score > found[1].score > 0
    assert [p.id for p in retriever.search("lighthouse colour", k=1)] == ["lighthouse"]
    # nothing matches: k passages all the same, in corpus order (ties go to the earlier one)
    assert [p.id for p in retriever.search("zebra", k=3)] == ["ferry", "fare", "lighthouse"]
    assert retriever.search("ferry", k=0) == []
    assert isinstance(retriever, desic.Retriever)
    with pytest.raises(desic.ConfigError, match="k must be a whole number"):
        retriever.search("ferry", k=-1)


def test_embeddings_rank_by_similarity_and_embed_the_corpus_once() -> None:
    lm = FakeLM()
    retriever = desic.EmbeddingsRetriever([r["text"] for r in CORPUS], lm=lm, k=1)
    (best,) = retriever.search("The fish market on Quay Street opens at dawn")
    assert best.id == "3" and best.score > 0.6
    retriever.search("the lighthouse was built in 1887")
    assert [len(texts) for texts in lm.embed_calls] == [4, 1, 1]  # the corpus once, then each query
    with desic.context(lm=FakeLM()):  # no lm given: the context's LM at search time
        found = desic.EmbeddingsRetriever(CORPUS, k=2).search("a ferry ticket costs crowns")
    assert found[0].id == "fare"


class Answer(BaseModel):
    answer: str


@desic.signature
def reply(question: str, passages: list[str]) -> Answer:
    """Answer from the passages."""


RETRIEVER = desic.BM25Retriever(CORPUS, k=1)


@desic.pipeline
def ask(question: str) -> Answer:
    first = RETRIEVER(question)
    second = RETRIEVER.search(question + " dawn", k=2)
    return reply(question=question, passages=[*first, *second])


def fake_answer(request: LMRequest) -> str:
    return "6 crowns" if "6 crowns" in last_input(request) else "unknown"


def test_a_search_in_a_pipeline_is_a_traced_step() -> None:
    seen: list[events.Event] = []
    state = RunState(trace=[], lm=FunctionLM(fake_answer))
    with events.listening(seen.append):
        out = ask.run({"question": "ferry ticket price"}, state)
    assert out.answer == "6 crowns"
    kinds = [(e.node_id, e.kind) for e in state.trace or []]
    assert kinds == [("retrieve", "retrieve"), ("retrieve#2", "retrieve"), ("reply", "lm")]
    first = (state.trace or [])[0]
    assert first.inputs == {"query": "ferry ticket price", "k": 1}
    assert first.output is not None and [p["id"] for p in first.output["passages"]] == ["fare"]
    assert first.messages == []
    assert list(state.nodes_seen) == ["reply"]  # a retriever is a step, not a node to optimize
    searches = [e for e in seen if e.kind == "retrieve"]
    assert [e.data["node"] for e in searches] == ["retrieve", "retrieve#2"]
    assert searches[0].data["query"] == "ferry ticket price" and searches[0].data["passages"] == ["fare"]


def test_traced_steps_survive_the_run_record_and_never_become_demos() -> None:
    state = RunState(trace=[], lm=FunctionLM(fake_answer))
    ask.run({"question": "ferry ticket price"}, state)
    from desic.engine import RunOutcome

    example = Example(inputs={"question": "ferry ticket price"}, labels={"answer": "6 crowns"})
    outcome = RunOutcome(index=0, example=example, output=Answer(answer="6 crowns"), error=None, state=state)
    record = json.loads(json.dumps(outcome_record(outcome)))
    again = outcome_from_record(ask, 0, example, record, True)
    assert [(e.node_id, e.kind) for e in again.state.trace or []] == [
        ("retrieve", "retrieve"), ("retrieve#2", "retrieve"), ("reply", "lm")
    ]
    trainset = [{"question": "ferry ticket price", "answer": "6 crowns"}, {"question": "ferry fare", "answer": "6 crowns"}]
    compiled = desic.compile(ask, trainset, metric=desic.metrics.contains, lm=FunctionLM(fake_answer),
                             optimizer="bootstrap", max_labeled=0)
    assert compiled.program.node_ids == ("reply",)
    (demo, *_) = compiled.program.nodes[0].demos
    # the passages the search found are the demo's context
    assert any("6 crowns" in p for p in demo.inputs["passages"])


def test_any_object_with_search_can_be_traced() -> None:
    class Mine:
        def search(self, query: str, k: int = 3) -> list[str]:
            return [f"{query}-{i}" for i in range(k)]

    step = traced(Mine(), name="lookup", k=2)
    state = RunState(trace=[])
    from desic.runtime import run_scope

    with run_scope(state):
        found = step("q")
    assert found == ["q-0", "q-1"] and [p.id for p in found] == ["0", "1"]
    assert [(e.node_id, e.kind) for e in state.trace or []] == [("lookup", "retrieve")]
    with pytest.raises(desic.ConfigError, match="needs a search"):
        traced(object())


async def _async_search() -> list[Any]:
    return await RETRIEVER.asearch("lighthouse", k=1)


def test_async_search() -> None:
    import asyncio

    assert [p.id for p in asyncio.run(_async_search())] == ["lighthouse"]
