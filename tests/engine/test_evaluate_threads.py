# mypy: disable-error-code="empty-body"
"""Synchronous pipelines under evaluation: worker threads, hand-offs to the loop, run state.

A sync pipeline runs in a real thread, sees the caller's contextvars, and hands each
signature call back to the evaluation's loop; these tests pin what that must keep.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import datetime
import threading
import time
from typing import Any

import pytest

import desic
from desic import ir
from desic._aio import ThreadWorkers, home_loop, run_on_loop  # private: unit tests of hand-offs
from desic.data import Example, dataset_fingerprint, to_examples
from desic.engine import run_one
from desic.lm import LMRequest, Usage
from desic.pipeline import as_pipeline, program_from_runs
from desic.record import outcome_record
from desic.render import render_messages
from desic.runtime import RunState, current_run, default_node, settings
from desic.testing import FunctionLM
from tests.support.house_rule import answer, route, triage
from tests.support.overlap import InFlight

METRIC = desic.metrics.exact_match
_marker: contextvars.ContextVar[str] = contextvars.ContextVar("_marker", default="unset")


def rows(n: int) -> list[dict[str, Any]]:
    return [{"ticket": f"charge {i}", "team": "billing"} for i in range(n)]


def test_sync_pipeline_sees_context_and_its_run_state_in_a_worker_thread() -> None:
    seen: list[tuple[str, Any, Any, bool]] = []
    lm = FunctionLM(answer)

    @desic.pipeline
    def watched(ticket: str) -> Any:
        state = current_run()
        seen.append((_marker.get(), settings().max_concurrency, state, threading.current_thread() is threading.main_thread()))
        out = route(ticket=ticket)
        assert current_run() is state  # still this row's run after the hop to the loop
        return out

    _marker.set("from the caller")
    with desic.context(max_concurrency=3):
        report = desic.evaluate(watched, rows(12), METRIC, lm=lm)
    assert report.errors == 0 and report.score == 1.0
    assert {s[0] for s in seen} == {"from the caller"}
    assert {s[1] for s in seen} == {3}
    assert len({id(s[2]) for s in seen}) == 12 and all(s[2] is not None for s in seen)
    assert not any(s[3] for s in seen)  # never on the main thread
    assert sum(r.usage.calls for r in report.results) == 12


def test_sync_pipeline_errors_are_recorded_per_row_and_max_errors_stops() -> None:
    def flaky(request: LMRequest) -> Any:
        if "3" in request.messages[-1]["content"]:
            raise RuntimeError("model down")
        return answer(request)

    report = desic.evaluate(triage, rows(10), METRIC, lm=FunctionLM(flaky), concurrency=4)
    failed = [r for r in report.results if r.error is not None]
    assert [r.index for r in failed] == [3]
    assert "model down" in (failed[0].error or "")

    @desic.pipeline
    def broken(ticket: str) -> Any:
        raise ValueError(f"bad {ticket}")

    report = desic.evaluate(broken, rows(40), METRIC, lm=FunctionLM(answer), concurrency=1, max_errors=3)
    assert report.stopped_by == "max_errors" and report.errors == 3 and report.skipped == 37
    assert report.results[0].error == "ValueError: bad charge 0"


def test_a_sync_pipeline_blocking_in_its_thread_does_not_block_the_loop() -> None:
    lm = FunctionLM(answer)

    # each row blocks its thread until all 16 are blocked at once: if one blocked the loop
    # (or the rows ran one after the other), they would never all be in there together
    inflight = InFlight(16)

    @desic.pipeline
    def slow(ticket: str) -> Any:
        with inflight.sync():
            time.sleep(0.05)  # blocking I/O in user code
        return route(ticket=ticket)

    report = desic.evaluate(slow, rows(16), METRIC, lm=lm, concurrency=16)
    assert report.errors == 0
    assert inflight.peak == 16  # the blocking calls overlapped


def test_thread_workers_start_threads_only_as_needed_and_skip_cancelled_jobs() -> None:
    workers = ThreadWorkers(4, name="desic-test")
    gate = threading.Event()
    ran: list[int] = []

    def job(i: int) -> int:
        gate.wait(5)
        ran.append(i)
        return i * 10

    async def main() -> None:
        first = [workers.submit(job, i) for i in range(6)]  # 4 threads, 2 jobs queued
        assert workers._threads == 4
        first[5].cancel()  # not taken by a thread yet: never runs
        gate.set()
        assert await asyncio.gather(*first[:5]) == [0, 10, 20, 30, 40]
        await asyncio.sleep(0.05)
        for _ in range(3):  # idle threads are reused, none started
            assert await workers.submit(job, 7) == 70
        assert workers._threads == 4

        def fails() -> None:
            raise KeyError("boom")

        with pytest.raises(KeyError, match="boom"):
            await workers.submit(fails)

    asyncio.run(main())
    assert 5 not in ran and sorted(ran) == [0, 1, 2, 3, 4, 7, 7, 7]


def test_run_on_loop_returns_raises_and_reports_cancellation_like_run_coroutine_threadsafe() -> None:
    async def value() -> int:
        await asyncio.sleep(0)
        return 42

    async def fails() -> None:
        raise LookupError("nope")

    async def hangs() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        ctx_seen: list[str] = []

        async def reads_context() -> None:
            ctx_seen.append(_marker.get())

        def in_thread() -> list[Any]:
            _marker.set("thread")
            out: list[Any] = [run_on_loop(loop, value())]
            try:
                run_on_loop(loop, fails())
            except LookupError as exc:
                out.append(exc)
            run_on_loop(loop, reads_context())
            return out

        result = await loop.run_in_executor(None, in_thread)
        assert result[0] == 42 and isinstance(result[1], LookupError)
        assert ctx_seen == ["thread"]

        def cancelled() -> BaseException | None:
            try:
                run_on_loop(loop, hangs())
            except BaseException as exc:  # noqa: BLE001 - the test looks at its type
                return exc
            return None

        waiting = loop.run_in_executor(None, cancelled)
        await asyncio.sleep(0.05)
        for task in asyncio.all_tasks():
            if task.get_coro().__name__ == "hangs":  # type: ignore[union-attr]
                task.cancel()
        error = await waiting
        assert isinstance(error, concurrent.futures.CancelledError)

    asyncio.run(main())


def test_home_loop_hand_off_is_used_by_sync_signature_calls_in_threads() -> None:
    lm = FunctionLM(answer)

    async def main() -> Any:
        token = home_loop.set(asyncio.get_running_loop())
        try:
            return await run_one(triage, Example({"ticket": "charge 1"}, {"team": "billing"}), lm=lm)
        finally:
            home_loop.reset(token)

    outcome = asyncio.run(main())
    assert outcome.error is None and outcome.output.team == "billing"


# --- run state kept small ---------------------------------------------------------------------


def test_run_state_makes_containers_on_first_use_and_finish_keeps_the_results() -> None:
    state = RunState()
    assert state.observed_edges() == ()
    assert state.node_usage == {} and state.edges == set()
    state.add_usage(Usage(calls=1), "a")
    state.add_usage(Usage(calls=2), "a")
    assert state.node_usage["a"].calls == 3 and state.usage.calls == 3
    state.edges = {("a", "b", "x")}
    assert state.observed_edges() == {("a", "b", "x")}
    state.finish()
    assert state.node_usage["a"].calls == 3 and state.edges == {("a", "b", "x")}


def test_edges_and_records_are_unchanged_by_lazy_run_state() -> None:
    lm = FunctionLM(lambda r: "charge 9" if r.node_id == "summarize" else answer(r))

    @desic.signature
    def summarize(ticket: str) -> str:
        """Summarize."""

    @desic.pipeline
    def two(ticket: str) -> Any:
        short = summarize(ticket=ticket)
        return route(ticket=short)

    async def main() -> Any:
        return await run_one(two, Example({"ticket": "charge 9"}, {}), lm=lm, trace=True)

    with desic.context(lm=lm):
        outcome = asyncio.run(main())
    assert outcome.error is None
    assert outcome.state.edges == {("summarize", "route", "ticket")}
    program = program_from_runs(two, [outcome.state])
    assert [(e.src, e.dst, e.field) for e in program.edges] == [("summarize", "route", "ticket")]
    record = outcome_record(outcome)
    assert record["edges"] == [("summarize", "route", "ticket")]
    assert [n["id"] for n in record["nodes"]] == ["summarize", "route"]
    assert [t[0] for t in record["trace"]] == ["summarize", "route"]

    lone = asyncio.run(run_one(as_pipeline(route), Example({"ticket": "charge 1"}, {}), lm=lm, trace=True))
    assert outcome_record(lone)["edges"] == []


# --- data --------------------------------------------------------------------------------------


def test_to_examples_fast_path_matches_validation() -> None:
    pipe = as_pipeline(route)
    data: list[Any] = [
        {"ticket": "a", "team": "billing"},
        Example({"ticket": "b"}, {"team": "tech", "extra": 1}),
        {"ticket": 3, "team": None},  # no type to check: taken as given
    ]
    out = to_examples(pipe, data)
    assert [(e.inputs, e.labels) for e in out] == [
        ({"ticket": "a"}, {"team": "billing"}),
        ({"ticket": "b"}, {"team": "tech", "extra": 1}),
        ({"ticket": 3}, {"team": None}),
    ]
    assert out[0].inputs is not data[0]  # rows are never aliased
    with pytest.raises(desic.DataError, match="row 1: missing field 'ticket'"):
        to_examples(pipe, [{"ticket": "a"}, {"team": "x"}])
    typed = to_examples(triage, [{"ticket": "t", "team": "billing"}])
    assert typed[0].inputs == {"ticket": "t"}


def test_dataset_fingerprint_is_the_fingerprint_of_the_rows_as_json() -> None:
    from desic._json import to_jsonable  # private: the rows' JSON form, no public API

    examples = [
        Example({"ticket": "a"}, {"team": "billing", "n": 1, "ok": True, "none": None}),
        Example({"ticket": "b"}, {"score": 0.5, "nested": {"x": [1, 2]}}),
        Example({"ticket": "c"}, {1: "int key"}),  # type: ignore[dict-item]
        Example({"ticket": "d"}, {"when": datetime.date(2024, 5, 1)}),
    ]
    for e in examples:
        expected = ir.fingerprint([to_jsonable(e.to_dict())])
        assert dataset_fingerprint([e]) == expected


# --- the render cache ---------------------------------------------------------------------------


def test_an_lm_that_edits_its_messages_cannot_change_later_prompts() -> None:
    def vandal(request: LMRequest) -> Any:
        for m in request.messages:
            m["content"] = "overwritten"
        return answer(request)

    node = default_node(route, "route")
    before = render_messages(node, {"ticket": "charge 1"})
    with desic.context(lm=FunctionLM(vandal)):
        route(ticket="charge 1")
        route(ticket="charge 2")
    assert render_messages(node, {"ticket": "charge 1"}) == before
