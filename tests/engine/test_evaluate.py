"""desic.evaluate: streaming concurrency, rate limit, per-row results, stops, events."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

import desic
from desic import events
from desic.budget import Budget
from desic.evaluate import aevaluate
from desic.lm import LMRequest
from desic.testing import FunctionLM, last_input
from tests.support.house_rule import answer, route, triage

METRIC = desic.metrics.exact_match


def rows(n: int, word: str = "charge") -> list[dict[str, Any]]:
    return [{"ticket": f"{word} {i}", "team": "billing" if word == "charge" else "shipping"} for i in range(n)]


class Gauge:
    """An async LM function that tracks how many calls run at once."""

    def __init__(self, latency: Any = 0.01):
        self.latency = latency
        self.now = 0
        self.peak = 0
        self.lock = threading.Lock()

    async def __call__(self, request: LMRequest) -> Any:
        with self.lock:
            self.now += 1
            self.peak = max(self.peak, self.now)
        try:
            wait = self.latency(request) if callable(self.latency) else self.latency
            await asyncio.sleep(wait)
        finally:
            with self.lock:
                self.now -= 1
        return answer(request)


@desic.pipeline
async def atriage(ticket: str) -> Any:
    return await route.acall(ticket=ticket)


@pytest.mark.parametrize("target", [triage, atriage, route], ids=["sync", "async", "signature"])
def test_results_come_back_in_devset_order_with_every_field(target: Any) -> None:
    # later rows answer faster, so completion order is the reverse of devset order
    gauge = Gauge(lambda r: 0.002 * (20 - int(last_input(r).split()[-1])))
    dev = rows(10) + rows(10, "parcel")
    dev = [{**r, "ticket": f"{r['ticket'].split()[0]} {i}"} for i, r in enumerate(dev)]
    dev[3]["team"] = "tech"  # mislabelled on purpose
    report = desic.evaluate(target, dev, METRIC, lm=FunctionLM(gauge), concurrency=8)
    assert [r.index for r in report.results] == list(range(20))
    assert [r.inputs["ticket"] for r in report.results] == [d["ticket"] for d in dev]
    assert [r.expected["team"] for r in report.results] == [d["team"] for d in dev]
    first = report.results[0]
    assert first.output == {"team": "billing"} and first.score == 1.0 and first.error is None
    assert first.latency > 0 and first.tokens > 0 and first.usage.calls == 1
    assert report.results[3].score == 0.0
    assert report.score == pytest.approx(19 / 20)
    assert report.usage.calls == 20 and report.wall_time > 0
    assert gauge.peak == 8


def test_workers_stream_instead_of_waiting_for_batches() -> None:
    # one slow row must not hold up the others: row 0 answers only once the 15 others have
    # (with batches of 4, rows 4-15 would wait for row 0, which gives up after 10 s)
    done: list[str] = []
    others_done_before_row_0: list[int] = []

    async def slow_first_row(request: LMRequest) -> Any:
        ticket = last_input(request)
        if ticket.endswith(" 0"):
            deadline = time.monotonic() + 10  # a safety net, not a speed target
            while len(done) < 15 and time.monotonic() < deadline:
                await asyncio.sleep(0.005)
            others_done_before_row_0.append(len(done))
        else:
            await asyncio.sleep(0.01)
        done.append(ticket)
        return answer(request)

    report = desic.evaluate(triage, rows(16), METRIC, lm=FunctionLM(slow_first_row), concurrency=4)
    assert report.errors == 0 and len(done) == 16
    assert others_done_before_row_0 == [15]


def test_one_failure_is_recorded_on_its_row_and_never_stops_the_run() -> None:
    def flaky(request: LMRequest) -> Any:
        if last_input(request).endswith(" 2"):
            raise RuntimeError("model exploded")
        return answer(request)

    report = desic.evaluate(triage, rows(6), METRIC, lm=FunctionLM(flaky))
    assert report.errors == 1 and "model exploded" in (report.results[2].error or "")
    assert report.results[2].score == 0.0 and report.results[2].output is None
    assert all(r.score == 1.0 for i, r in enumerate(report.results) if i != 2)
    assert report.stopped_by is None and report.skipped == 0
    assert report.score == pytest.approx(5 / 6)


def test_max_errors_stops_deliberately_and_marks_the_rest_skipped() -> None:
    def broken(request: LMRequest) -> Any:
        raise RuntimeError("down")

    report = desic.evaluate(triage, rows(50), METRIC, lm=FunctionLM(broken), concurrency=1, max_errors=3)
    assert report.stopped_by == "max_errors"
    assert "3 examples failed" in (report.stop_reason or "")
    assert report.errors == 3 and report.skipped == 47 and report.completed == 3
    assert all(r.skipped and r.error is None for r in report.results[3:])
    assert "stopped by max_errors" in str(report)
    with pytest.raises(desic.ConfigError, match="max_errors"):
        desic.evaluate(triage, rows(2), METRIC, lm=FunctionLM(answer), max_errors=0)


def test_a_budget_stops_an_evaluation_cleanly() -> None:
    lm = FunctionLM(answer)
    report = desic.evaluate(triage, rows(40), METRIC, lm=lm, concurrency=4, budget=Budget(max_calls=10))
    assert report.stopped_by == "max_calls"
    assert len(lm.calls) == 10 and report.completed == 10 and report.skipped == 30
    assert report.score == 1.0  # over the rows that ran


def test_rps_limits_how_fast_rows_start() -> None:
    start = time.perf_counter()
    report = desic.evaluate(triage, rows(6), METRIC, lm=FunctionLM(answer), concurrency=6, rps=20)
    wall = time.perf_counter() - start
    assert report.score == 1.0
    assert wall >= 5 / 20 * 0.9  # the first starts at once, then one every 50 ms


def test_metric_feedback_and_metric_failures_are_recorded() -> None:
    def picky(example: desic.Example, output: Any) -> tuple[float, str]:
        if example.inputs["ticket"].endswith(" 1"):
            raise ValueError("cannot judge this")
        return 0.5, f"half marks for {output.team}"

    report = desic.evaluate(triage, rows(3), picky, lm=FunctionLM(answer))
    assert report.results[0].feedback == "half marks for billing"
    assert report.results[1].error == "metric failed: ValueError: cannot judge this"
    assert report.score == pytest.approx(1.0 / 3)


def test_a_metric_that_cannot_read_the_labels_stops_at_once() -> None:
    with pytest.raises(desic.DataError, match="needs labels"):
        desic.evaluate(triage, [{"ticket": "charge 1"}], METRIC, lm=FunctionLM(answer))


def test_example_events_and_run_events() -> None:
    seen: list[events.Event] = []
    with events.listening(seen.append):
        desic.evaluate(triage, rows(5), METRIC, lm=FunctionLM(answer), concurrency=2)
    examples = [e for e in seen if e.kind == "example"]
    assert sorted(e.data["index"] for e in examples) == list(range(5))
    assert all(e.data["score"] == 1.0 and e.data["error"] is None for e in examples)
    assert seen[0].kind == "run_start" and seen[0].data["examples"] == 5
    assert seen[-1].kind == "run_end" and seen[-1].data["score"] == 1.0


def test_usable_from_async_code_and_inside_a_running_loop() -> None:
    async def main() -> tuple[float, float]:
        direct = await aevaluate(triage, rows(4), METRIC, lm=FunctionLM(answer))
        nested = desic.evaluate(triage, rows(4), METRIC, lm=FunctionLM(answer))  # sync front in a loop
        return direct.score, nested.score

    assert asyncio.run(main()) == (1.0, 1.0)


def test_compiled_pipelines_evaluate_with_their_program_and_options() -> None:
    compiled = desic.compile(triage, rows(4), metric=METRIC, optimizer="labeled", lm=FunctionLM(answer))
    lm = FunctionLM(answer)
    report = compiled.evaluate(rows(8), METRIC, lm=lm, concurrency=2, max_errors=2)
    assert report.score == 1.0
    assert any(m["role"] == "assistant" for m in lm.calls[0].messages)  # the compiled demos


def test_silent_off_a_terminal_and_rows_export() -> None:
    from desic.sinks import want_progress

    assert want_progress(None) is False  # pytest captures stderr: not a terminal
    assert want_progress(True) is True
    report = desic.evaluate(triage, rows(2), METRIC, lm=FunctionLM(answer))
    data = report.to_rows()
    assert data[0]["inputs"] == {"ticket": "charge 0"} and data[0]["calls"] == 1
    assert report.failures() == []


def test_progress_line_draws_when_asked() -> None:
    report = desic.evaluate(triage, rows(3), METRIC, lm=FunctionLM(answer), progress=True)
    assert report.score == 1.0  # the rich sink subscribed and unsubscribed without trouble


def test_concurrency_defaults_to_the_context_then_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    gauge = Gauge(0.01)
    with desic.context(max_concurrency=3):
        desic.evaluate(triage, rows(12), METRIC, lm=FunctionLM(gauge))
    assert gauge.peak == 3
    monkeypatch.setenv("DESIC_MAX_CONCURRENCY", "5")
    gauge = Gauge(0.01)
    desic.evaluate(triage, rows(12), METRIC, lm=FunctionLM(gauge))
    assert gauge.peak == 5
    monkeypatch.setenv("DESIC_MAX_CONCURRENCY", "many")
    with pytest.raises(desic.ConfigError, match="DESIC_MAX_CONCURRENCY"):
        desic.evaluate(triage, rows(2), METRIC, lm=FunctionLM(answer))
    with pytest.raises(desic.ConfigError, match="at least 1"):
        desic.evaluate(triage, rows(2), METRIC, lm=FunctionLM(answer), concurrency=0)
