# mypy: disable-error-code="empty-body"
"""Streaming a signature and a compiled pipeline: partials, the final validated output,
usage, events, budgets, and the same result as calling it."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

import desic
from desic import events
from desic.lm import LMRequest
from desic.runtime import RunState, run_scope
from desic.testing import FakeLM, FunctionLM, last_input


class Route(BaseModel):
    team: str
    reason: str


@desic.signature
def route(ticket: str) -> Route:
    """Route a support ticket to a team and say why."""


@desic.signature
def reply(ticket: str, team: str) -> str:
    """Write a one-line reply naming the team."""


ROUTE = {"team": "billing", "reason": "the customer was charged twice"}


def test_stream_yields_growing_partials_then_the_validated_output() -> None:
    lm = FakeLM([ROUTE], chunk_chars=6)
    with desic.context(lm=lm):
        items = list(route.stream(ticket="charged twice"))
    *partials, final = items
    assert len(partials) > 2
    assert [p.done for p in items] == [False] * len(partials) + [True]
    assert final.value == Route(**ROUTE) and isinstance(final.value, Route)
    assert final.data == ROUTE
    # each partial says more than the one before, and never contradicts the answer
    texts = [p.value.reason or "" for p in partials]
    assert texts == sorted(texts, key=len) and ROUTE["reason"].startswith(texts[-1])
    assert partials[0].value.reason is None  # not begun yet: None, not missing
    assert len(lm.calls) == 1


def test_a_bare_output_streams_its_value_and_ends_with_what_a_call_returns() -> None:
    lm = FakeLM(["hello there, billing took it"] * 2, chunk_chars=4)
    with desic.context(lm=lm):
        items = list(reply.stream(ticket="t", team="billing"))
        called = reply(ticket="t", team="billing")
    assert items[-1].done and items[-1].value == called == "hello there, billing took it"
    assert all(isinstance(p.value, str) for p in items[:-1]) and len(items) > 2
    assert items[-1].data == {"output": called}


def test_chain_of_thought_partials_carry_the_reasoning_in_data_only() -> None:
    cot = route.with_strategy("chain_of_thought")
    lm = FakeLM([{"reasoning": "the card was charged twice", **ROUTE}], chunk_chars=5)
    with desic.context(lm=lm):
        items = list(cot.stream(ticket="x"))
    assert any("reasoning" in p.data and "team" not in p.data for p in items[:-1])
    assert all(isinstance(p.value, Route) for p in items)
    assert items[-1].value == Route(**ROUTE) and items[-1].data["reasoning"] == "the card was charged twice"


def test_astream_in_async_code() -> None:
    async def main() -> list[Any]:
        with desic.context(lm=FakeLM([ROUTE], chunk_chars=10)):
            return [p async for p in route.astream(ticket="x")]

    items = asyncio.run(main())
    assert items[-1].done and items[-1].value == Route(**ROUTE) and len(items) > 1


def test_sync_stream_inside_a_running_loop_says_to_use_astream() -> None:
    async def main() -> None:
        with desic.context(lm=FakeLM([ROUTE])), pytest.raises(desic.ConfigError, match="astream"):
            next(iter(route.stream(ticket="x")))

    asyncio.run(main())


def test_an_lm_that_cannot_stream_gives_its_one_answer() -> None:
    class Plain:  # a minimal LM: no stream method
        name = "plain"

        async def request(self, request: LMRequest) -> Any:
            return await FakeLM([ROUTE]).request(request)

        def describe(self) -> dict[str, Any]:
            return {"name": "plain"}

    with desic.context(lm=Plain()):
        items = list(route.stream(ticket="x"))
    assert len(items) == 1 and items[0].done and items[0].value == Route(**ROUTE)


def test_usage_trace_and_events_of_a_streamed_call() -> None:
    lm = FakeLM([ROUTE], chunk_chars=6)
    seen: list[events.Event] = []
    state = RunState(trace=[])
    with desic.context(lm=lm), events.listening(seen.append), run_scope(state):
        items = list(route.stream(ticket="charged twice"))
    assert state.usage.calls == 1 and state.usage.completion_tokens > 0
    assert state.node_usage["route"].calls == 1
    assert state.trace is not None and state.trace[0].output == ROUTE
    calls = [e for e in seen if e.kind == "lm_call"]
    assert len(calls) == 1 and calls[0].data["streamed"] is True
    assert calls[0].data["partials"] == len(items) - 1 and calls[0].data["first_partial"] >= 0
    assert [e.kind for e in seen if e.kind == "node_call"] == ["node_call"]


def test_a_failed_stream_is_raised_and_recorded() -> None:
    def broken(request: LMRequest) -> Any:
        return {"team": 3}  # never fits Route

    state = RunState(trace=[])
    with desic.context(lm=FunctionLM(broken)), run_scope(state), pytest.raises(desic.OutputValidationError):
        list(route.stream(ticket="x"))
    assert state.trace is not None and state.trace[0].error is not None


def test_stopping_early_closes_the_stream() -> None:
    lm = FakeLM([ROUTE], chunk_chars=2)
    with desic.context(lm=lm):
        stream = route.stream(ticket="x")
        first = next(iter(stream))
        stream.close()  # type: ignore[attr-defined]
    assert not first.done


# --- a compiled pipeline streams its last node --------------------------------------------------


@desic.pipeline
def support(ticket: str) -> str:
    r = route(ticket=ticket)
    return reply(ticket=ticket, team=r.team)


@desic.pipeline
async def support_async(ticket: str) -> str:
    r = await route.acall(ticket=ticket)
    return await reply.acall(ticket=ticket, team=r.team)


def support_lm() -> FunctionLM:
    def answer(request: LMRequest) -> Any:
        if "team:" in last_input(request):
            return "Thanks, the billing team has your ticket now."
        return ROUTE

    return FunctionLM(answer, chunk_chars=5)


@pytest.mark.parametrize("pipe", [support, support_async], ids=["sync", "async"])
def test_a_compiled_pipeline_streams_its_last_node(pipe: desic.Pipeline[..., str]) -> None:
    rows = [{"ticket": "charged twice", "output": "Thanks, the billing team has your ticket now."}]
    lm = support_lm()
    compiled = desic.compile(pipe, rows, metric=desic.metrics.exact_match, optimizer="labeled", lm=lm)
    assert compiled.last_node() == "reply"
    with desic.context(lm=lm):
        items = list(compiled.stream(ticket="charged twice"))
        called = compiled(ticket="charged twice")
        if asyncio.iscoroutine(called):
            called = asyncio.run(called)
    *partials, final = items
    assert final.done and final.value == called == "Thanks, the billing team has your ticket now."
    assert len(partials) > 2 and all(isinstance(p.value, str) for p in partials)
    assert all(called.startswith(p.value) for p in partials)  # the reply's text, never the route's


def test_a_loaded_single_signature_artifact_streams(tmp_path: Any) -> None:
    compiled = desic.compile(route, [{"ticket": "x", **ROUTE}], metric=desic.metrics.exact_match,
                             optimizer="labeled", lm=FakeLM([ROUTE], cycle=True))
    path = compiled.save(tmp_path / "route.json")
    loaded = desic.load(path)
    with desic.context(lm=FakeLM([ROUTE], chunk_chars=7)):
        items = list(loaded.stream(ticket="charged twice"))
    assert len(items) > 2 and items[-1].done and items[-1].value.team == "billing"


# --- budgets count streamed calls ---------------------------------------------------------------


@desic.pipeline
async def streamed_triage(ticket: str) -> str:
    final = None
    async for partial in route.astream(ticket=ticket):
        final = partial
    assert final is not None and final.done
    return str(final.value.team)


def test_streamed_calls_count_against_an_evaluation_budget() -> None:
    rows = [{"ticket": f"t{i}", "output": "billing"} for i in range(6)]
    report = desic.evaluate(
        streamed_triage, rows, desic.metrics.exact_match, lm=FakeLM([ROUTE], cycle=True, chunk_chars=9),
        concurrency=1, budget=desic.Budget(max_calls=2),
    )
    assert report.usage.calls == 2
    assert len([r for r in report.results if not r.skipped]) == 2


def test_concurrent_astreams_keep_their_own_partials() -> None:
    def answer(request: LMRequest) -> Any:
        ticket = last_input(request).removeprefix("ticket: ")
        return {"team": ticket, "reason": f"because {ticket} " * 4}

    async def main() -> list[list[Any]]:
        async def one(t: str) -> list[Any]:
            return [p async for p in route.astream(ticket=t)]

        with desic.context(lm=FunctionLM(answer, chunk_chars=3, latency=0.001)):
            return await asyncio.gather(*(one(t) for t in ("billing", "shipping", "account")))

    for team, items in zip(("billing", "shipping", "account"), asyncio.run(main()), strict=True):
        assert items[-1].value.team == team
        assert all((p.value.team or team).startswith(team[: len(p.value.team or "")]) for p in items)


@desic.signature(sampling=desic.Majority(3, temperature=0.8))
def voted(ticket: str) -> str:
    """Name the team for the ticket."""


def test_a_sampled_node_streams_only_its_chosen_output() -> None:
    lm = FakeLM(["billing", "shipping", "billing"], chunk_chars=2)
    with desic.context(lm=lm):
        items = list(voted.stream(ticket="charged twice"))
    assert len(items) == 1 and items[0].done and items[0].value == "billing"
    assert len(lm.calls) == 3
