# mypy: disable-error-code="empty-body"
"""Tokens and dollars: the price table, the providers' costs, per-node and per-run usage."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterator

import pytest

import desic
from desic.events import Event, listening

# private on purpose (no public API): unit tests of the providers' own pricing (_cost)
from desic.lm._local import LocalLM
from desic.lm._openai import OpenAILM
from desic.lm.pricing import Price, cost, normalize_prices, price_for
from desic.runtime import RunState
from desic.testing import FakeLM, FakeOpenAIServer, allow_model_requests


@desic.signature
def summarize(ticket: str) -> str:
    """Summarize the ticket."""


@desic.signature
def team(summary: str) -> str:
    """Name the team."""


@desic.pipeline
def triage(ticket: str) -> str:
    return team(summary=summarize(ticket=ticket))


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


# --- the price table (genai-prices, the user's prices over it) ---------------------------------


def test_common_openai_models_have_prices() -> None:
    for model in ("gpt-4o", "gpt-4o-mini", "gpt-4.1", "gpt-4.1-mini", "gpt-4.1-nano", "o3-mini", "gpt-5"):
        price = price_for(model)
        assert price is not None and price.input > 0 and price.output >= price.input, model
    embedding = price_for("text-embedding-3-small")
    assert embedding is not None and embedding.input > 0 and embedding.output == 0


def test_prices_come_from_the_maintained_table() -> None:
    from genai_prices import Usage as GenaiUsage
    from genai_prices import calc_price

    for model in ("gpt-4o", "gpt-4.1-nano", "o3"):
        expected = calc_price(GenaiUsage(input_tokens=123_456, output_tokens=7_890), model, provider_id="openai")
        assert cost(model, 123_456, 7_890) == pytest.approx(float(expected.total_price)), model


def test_snapshots_are_priced_as_their_family() -> None:
    assert price_for("gpt-4o-mini-2024-07-18") == price_for("gpt-4o-mini")
    assert price_for("gpt-4o-2024-08-06") == price_for("gpt-4o")
    assert price_for("gpt-4.1-nano-2025-04-14") == price_for("gpt-4.1-nano")
    assert price_for("llama-3-8b") is None
    assert price_for("no-such-model-anywhere") is None


def test_cost_per_million_tokens_with_cached_prompt_tokens() -> None:
    mini = price_for("gpt-4o-mini")
    assert mini is not None
    assert cost("gpt-4o-mini", 1_000_000, 1_000_000) == pytest.approx(mini.input + mini.output)
    full = price_for("gpt-4o")
    assert full is not None and full.cached_input is not None and full.cached_input < full.input
    assert cost("gpt-4o", 1000, 0, cached_tokens=400) == pytest.approx(
        (600 * full.input + 400 * full.cached_input) / 1e6
    )
    assert cost("unknown-model", 10, 10) is None


def test_prices_are_overridable() -> None:
    overrides = normalize_prices({"my-model": (1.0, 2.0), "gpt-4o": Price(9, 9)}, "ignored")
    assert cost("my-model", 1_000_000, 500_000, overrides=overrides) == pytest.approx(2.0)
    assert cost("gpt-4o", 1_000_000, 0, overrides=overrides) == pytest.approx(9.0)
    assert cost("my-model-2025-01-01", 1_000_000, 0, overrides=overrides) == pytest.approx(1.0)
    assert price_for("gpt-4o", overrides) == Price(9, 9)
    assert normalize_prices((3, 4), "mine") == {"mine": Price(3, 4)}
    with pytest.raises(ValueError, match="per 1M tokens"):
        normalize_prices((1,), "x")  # type: ignore[arg-type]


def test_a_dollar_budget_refuses_to_start_on_a_model_with_no_price() -> None:
    """max_dollars could never trigger when calls cost $0: refused before any call."""
    devset = [{"ticket": "t", "output": "x"}]
    seen: list[object] = []

    def handler(req: object) -> dict[str, str]:
        seen.append(req)
        return {"output": "x"}

    with FakeOpenAIServer(handler=handler) as server:
        lm = desic.lm("openai:my-finetune", base_url=server.url, api_key="t")
        with pytest.raises(desic.ConfigError, match=r"max_dollars=1 cannot be enforced.*'my-finetune'.*prices="):
            desic.evaluate(triage, devset, desic.metrics.exact_match, lm=lm, budget=desic.Budget(max_dollars=1))
        with pytest.raises(desic.ConfigError, match="'my-finetune'"):
            desic.compile(triage, devset, metric=desic.metrics.exact_match, lm=lm, max_dollars=1, storage=None)
        assert seen == []  # refused before the first call
        # the same with its price given runs, and so do budgets other than dollars
        priced = desic.lm("openai:my-finetune", base_url=server.url, api_key="t", prices=(0, 0))
        report = desic.evaluate(triage, devset, desic.metrics.exact_match, lm=priced, budget=desic.Budget(max_dollars=1))
        assert report.errors == 0
        report = desic.evaluate(triage, devset, desic.metrics.exact_match, lm=lm, budget=desic.Budget(max_calls=10))
        assert report.errors == 0
    # free LMs need no price
    desic.evaluate(triage, devset, desic.metrics.exact_match, lm=FakeLM(default="x"), budget=desic.Budget(max_dollars=1))


# --- the providers fill Usage.cost ----------------------------------------------------------------


def test_the_openai_provider_puts_a_cost_on_every_call() -> None:
    devset = [{"ticket": f"ticket number {i}", "output": "x"} for i in range(3)]
    with FakeOpenAIServer(handler=lambda req: {"output": "x"}) as server:
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t")
        report = desic.evaluate(triage, devset, desic.metrics.exact_match, lm=lm)
    assert report.errors == 0
    u = report.usage
    assert u.calls == 6 and u.prompt_tokens > 0 and u.completion_tokens > 0
    assert u.cost == pytest.approx((u.prompt_tokens * 0.15 + u.completion_tokens * 0.60) / 1e6)
    assert sum(r.usage.cost for r in report.results) == pytest.approx(u.cost)


def test_provider_prices_override_the_table() -> None:
    with FakeOpenAIServer(handler=lambda req: {"output": "x"}) as server:
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t", prices=(1000.0, 0.0))
        with desic.context(lm=lm):
            state = RunState()
            triage.run({"ticket": "hello"}, state)
    assert state.usage.cost == pytest.approx(state.usage.prompt_tokens * 1000 / 1e6)


def test_unknown_models_cost_nothing_and_openai_ones_are_reported(caplog: pytest.LogCaptureFixture) -> None:
    compatible = OpenAILM("llama-3-8b", base_url="http://127.0.0.1:1/v1")
    with caplog.at_level(logging.WARNING, logger="desic.lm"):
        assert compatible._cost("llama-3-8b", 100, 100, 0) == 0.0
    assert caplog.records == []  # a self-hosted model is expected to have no price
    hosted = OpenAILM("gpt-9-preview", api_key="sk-test")
    with caplog.at_level(logging.WARNING, logger="desic.lm"):
        assert hosted._cost("gpt-9-preview", 100, 100, 0) == 0.0
        hosted._cost("gpt-9-preview", 100, 100, 0)
    assert len(caplog.records) == 1 and "prices=" in caplog.records[0].getMessage()


def test_local_models_and_fakes_cost_nothing() -> None:
    local = LocalLM()
    assert local._cost("gpt-4o", 10**6, 10**6, 0) == 0.0  # even if a model file were so named
    with desic.context(lm=FakeLM(default="x")):
        state = RunState()
        triage.run({"ticket": "hello"}, state)
    assert state.usage.calls == 2 and state.usage.cost == 0.0


def test_embeddings_are_priced_and_reported_as_events() -> None:
    seen: list[Event] = []
    with FakeOpenAIServer() as server, listening(seen.append):
        lm = desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="t")
        vectors = asyncio.run(lm.embed(["one text", "another text"]))
        assert server.requests[0]["model"] == "text-embedding-3-small"
    assert len(vectors) == 2
    (event,) = [e for e in seen if e.kind == "lm_call"]
    assert event.data["op"] == "embed" and event.data["prompt_tokens"] > 0
    assert event.data["cost"] == pytest.approx(event.data["prompt_tokens"] * 0.02 / 1e6)


# --- aggregation per node and per run ----------------------------------------------------------


def test_run_state_sums_usage_per_node() -> None:
    with FakeOpenAIServer(handler=lambda req: {"output": "x" * 40}) as server:
        lm = desic.lm("openai:gpt-4.1-mini", base_url=server.url, api_key="t")
        state = RunState()
        with desic.context(lm=lm):
            triage.run({"ticket": "a long ticket about many things " * 5}, state)
    assert set(state.node_usage) == {"summarize", "team"}
    assert all(u.calls == 1 and u.cost > 0 for u in state.node_usage.values())
    total = state.node_usage["summarize"] + state.node_usage["team"]
    assert total.calls == state.usage.calls == 2
    assert total.prompt_tokens == state.usage.prompt_tokens
    assert total.cost == pytest.approx(state.usage.cost)


def test_a_node_used_twice_accumulates_under_each_id() -> None:
    @desic.pipeline
    def twice(ticket: str) -> str:
        return summarize(ticket=summarize(ticket=ticket))

    state = RunState()
    with desic.context(lm=FakeLM(default="short")):
        twice.run({"ticket": "hello"}, state)
    assert set(state.node_usage) == {"summarize", "summarize#2"}
    assert state.usage.calls == 2


def test_cached_answers_add_no_usage() -> None:
    lm = desic.lm(FakeLM(default="x"), cache="memory")
    states = [RunState(), RunState()]
    with desic.context(lm=lm):
        for state in states:
            triage.run({"ticket": "same"}, state)
    assert states[0].usage.calls == 2 and states[0].usage.prompt_tokens > 0
    assert states[1].usage.calls == 0 and states[1].usage.total_tokens == 0
    assert all(u.calls == 0 for u in states[1].node_usage.values())

