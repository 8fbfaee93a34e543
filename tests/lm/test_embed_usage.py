# mypy: disable-error-code="empty-body"
"""Embedding requests count like any other LM call: in a run's usage, a compile's usage and
its budget, an evaluation's, a metric's and a retriever's."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import LMRequest, Usage, charge_embedding, counting_embeddings
from desic.metrics import semantic_similarity
from desic.runtime import RunState
from desic.testing import (
    FakeLM,
    FakeOpenAIServer,
    FunctionLM,
    act,
    allow_model_requests,
    finish,
    last_input,
)
from tests.support.agents import query_at

Team = Literal["billing", "account", "technical", "shipping"]
KEYWORDS = {"invoice": "billing", "password": "account", "crash": "technical", "parcel": "shipping"}
NAMES = ("alder", "birch", "cedar", "dogwood", "elm", "fir", "gum", "hazel")


class Route(BaseModel):
    team: Team


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


class Answer(BaseModel):
    answer: str


@desic.signature
def reply(question: str, passages: list[str]) -> Answer:
    """Answer from the passages."""


TRAIN = [{"ticket": f"{kw} problem for {n}", "team": t} for n in NAMES[:5] for kw, t in KEYWORDS.items()]
VAL = [{"ticket": f"{kw} problem for {n}", "team": t} for n in NAMES[5:] for kw, t in KEYWORDS.items()]


def copycat(request: LMRequest) -> Any:
    """Answers what the nearest demo (the last one shown) answered."""
    answers = [m["content"] for m in request.messages[1:-1] if m["role"] == "assistant"]
    return json.loads(answers[-1]) if answers else {"team": "shipping"}


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def test_the_openai_provider_reports_each_embeddings_request() -> None:
    texts = [f"text number {i}" for i in range(300)]  # two requests of 256 and 44
    with FakeOpenAIServer() as server:
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t")
        with counting_embeddings() as tally:
            asyncio.run(lm.embed(texts))
        assert tally.usage.calls == 2 and tally.usage.prompt_tokens > 300
        assert tally.usage.cost == pytest.approx(tally.usage.prompt_tokens * 0.02 / 1e6)
        # through the wrappers; a cached text costs nothing the second time
        wrapped = desic.lm(lm, retries=1, timeout=5, rps=100, cache="memory")
        with counting_embeddings() as first:
            asyncio.run(wrapped.embed(["a", "b"]))
        with counting_embeddings() as again:
            asyncio.run(wrapped.embed(["a", "b", "c"]))
    assert first.usage.calls == 1 and again.usage.calls == 1
    assert 0 < again.usage.prompt_tokens < first.usage.prompt_tokens  # only "c" was sent


def test_no_tally_no_cost_and_tallies_nest() -> None:
    lm = FakeLM()
    lm.embed_sync(["outside any tally"])  # nobody counting: nothing breaks
    with counting_embeddings() as outer:
        lm.embed_sync(["one"])
        with counting_embeddings() as inner:
            lm.embed_sync(["two", "three"])
        lm.embed_sync(["four"])
    assert inner.usage.calls == 1
    assert outer.usage.calls == 3  # an enclosing tally sees what the inner one counted too


def embeddings_knn(lm: Any, **options: Any) -> desic.CompiledPipeline[..., Any]:
    return desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=lm, optimizer="knn", k=2,
                         by="embeddings", progress=False, **options)


def test_a_compile_counts_its_embedding_requests() -> None:
    lm = FunctionLM(copycat)
    compiled = embeddings_knn(lm)
    assert lm.embed_calls, "the pool and the rows' inputs were embedded"
    assert compiled.usage.calls == len(lm.calls) + len(lm.embed_calls)


def test_a_run_and_an_evaluation_count_the_query_embedding() -> None:
    compiled = embeddings_knn(FunctionLM(copycat))
    lm = FunctionLM(copycat)
    state = RunState(program=compiled.program, lm=lm)
    compiled.pipeline.run({"ticket": "password problem for oak"}, state)
    assert len(lm.calls) == 1 and lm.embed_calls == [["password problem for oak"]]
    assert state.usage.calls == 2 and state.node_usage["route"].calls == 2
    with desic.context(lm=FunctionLM(copycat)):
        report = desic.evaluate(compiled, VAL, desic.metrics.exact_match, progress=False)
    assert report.usage.calls == 2 * len(VAL)


def test_a_compile_budget_counts_embeddings() -> None:
    lm = FunctionLM(copycat)
    full = embeddings_knn(lm, baseline=False)
    chats = len(lm.calls)
    assert full.usage.calls > chats  # the embeddings are part of it
    stopped = embeddings_knn(FunctionLM(copycat), baseline=False, max_calls=chats)
    assert stopped.stopped_by == "max_calls"
    assert stopped.usage.calls <= chats


def test_a_semantic_metric_and_an_embeddings_retriever_charge_the_run() -> None:
    metric = semantic_similarity(FakeLM())

    @desic.pipeline
    def echo(ticket: str) -> Route:
        return route(ticket=ticket)

    with desic.context(lm=FunctionLM(copycat)):
        report = desic.evaluate(echo, VAL[:2], metric, progress=False)
    assert report.usage.calls == 2 * 2  # each row: its answer and the metric's one embeddings request

    retriever = desic.EmbeddingsRetriever(["the ferry costs 6 crowns", "the lighthouse is red"], k=1)

    @desic.pipeline
    def ask(question: str) -> Answer:
        return reply(question=question, passages=[*retriever(question)])

    lm = FunctionLM(lambda r: "6 crowns" if "6 crowns" in last_input(r) else "unknown")
    state = RunState(lm=lm)
    assert ask.run({"question": "what the ferry costs in crowns"}, state).answer == "6 crowns"
    assert len(lm.embed_calls) == 2  # the corpus, then the query
    assert state.usage.calls == 1 + 2


# --- what a review found: sync tools, failures, budgets between chats and embeddings, prices ---


FACTS = desic.EmbeddingsRetriever(["A ferry ticket costs 6 crowns.", "The mayor is Ingrid Falk."], k=1)


def look_up(query: Annotated[str, "keywords"]) -> list[str]:
    """Find facts."""
    return [p.text for p in FACTS(query)]


@desic.signature(strategy="react", tools=[look_up], max_steps=3)
def ask_agent(question: str) -> Answer:
    """Answer the question."""


@desic.pipeline
def agent(question: str) -> Answer:
    return ask_agent(question=question)


def scripted(request: LMRequest) -> Any:
    _, done = query_at(request)
    return [act("look_up", query="ferry ticket"), finish(answer="6 crowns")][min(done, 1)]


def test_a_sync_tool_searches_with_the_run_lm_and_charges_the_run() -> None:
    run_lm, context_lm = FunctionLM(scripted), FunctionLM(scripted)
    state = RunState(lm=run_lm)
    with desic.context(lm=context_lm):
        assert agent.run({"question": "ticket price?"}, state).answer == "6 crowns"
    assert len(run_lm.embed_calls) == 2 and context_lm.embed_calls == []  # the corpus, then the query
    assert state.usage.calls == len(run_lm.calls) + 2


class AnsweredThenFailed(FunctionLM):
    """An embeddings request answered (and charged) whose result is then refused, as the
    openai provider does with a short answer."""

    async def embed(self, texts: list[str]) -> list[list[float]]:
        charge_embedding(Usage(calls=1, prompt_tokens=5))
        raise desic.LMError("asked for 1 embeddings, got 0")


def test_a_failed_embedding_still_counts_what_was_answered() -> None:
    compiled = embeddings_knn(FunctionLM(copycat))
    state = RunState(program=compiled.program, lm=AnsweredThenFailed(copycat))
    with pytest.raises(desic.LMError):
        compiled.pipeline.run({"ticket": "password problem for oak"}, state)
    assert state.usage.calls == 1

    retriever = desic.EmbeddingsRetriever(["a", "b"], k=1)

    @desic.pipeline
    def ask(question: str) -> Answer:
        return reply(question=question, passages=[p.text for p in retriever(question)])

    state = RunState(lm=AnsweredThenFailed(copycat))
    with pytest.raises(desic.LMError):
        ask.run({"question": "q"}, state)
    assert state.usage.calls == 1


def test_a_compile_budget_stops_between_batches_of_a_pool() -> None:
    many = [{"ticket": f"{kw} problem number {i}", "team": t} for i in range(40) for kw, t in KEYWORDS.items()]
    assert len(many) > 2 * 64  # the pool is embedded in three requests of at most 64 texts
    lm = FunctionLM(copycat)
    stopped = desic.compile(route, many, metric=desic.metrics.exact_match, lm=lm, optimizer="knn", k=2,
                            by="embeddings", baseline=False, progress=False, max_calls=len(many) + 1)
    assert len(lm.calls) == len(many)  # the pool's traces, then the budget allowed one embeddings request
    assert stopped.stopped_by == "max_calls"
    assert stopped.usage.calls == len(many) + 1 == len(lm.calls) + len(lm.embed_calls)
    assert stopped.program.nodes[0].select is None  # no half-embedded pool: fixed demos instead


def test_a_dollar_budget_needs_a_priced_embedding_model() -> None:
    with FakeOpenAIServer() as server:
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t", embedding_model="my-embed")
        assert lm.unpriced() == "my-embed"
        priced = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t")
        assert priced.unpriced() is None  # text-embedding-3-small has a price
