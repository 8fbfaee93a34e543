"""``compile`` opens and closes its run on the event bus: ``run_start`` ... ``run_end``.

The pair brackets everything the compile emits (candidates, LM calls), carries the run id
the program and the store know, and says how the run ended: a score, a budget that
stopped it, or the error it crashed with.
"""

from __future__ import annotations

from typing import Any

import pytest

import desic
from desic import events, ir
from desic.optimize import CompileTask
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, SMALL, answer, triage

METRIC = desic.metrics.exact_match


def compile_events(**options: Any) -> tuple[list[events.Event], desic.CompiledPipeline[..., Any] | None, BaseException | None]:
    seen: list[events.Event] = []
    compiled: desic.CompiledPipeline[..., Any] | None = None
    error: BaseException | None = None
    with events.listening(seen.append):
        try:
            compiled = desic.compile(triage, ROWS, metric=METRIC, lm=FunctionLM(answer), **options)
        except Exception as exc:  # noqa: BLE001 - the failing case looks at it
            error = exc
    return seen, compiled, error


def run_pair(seen: list[events.Event]) -> tuple[events.Event, events.Event]:
    """The compile's run_start and run_end, checked to bracket all its other events."""
    starts = [e for e in seen if e.kind == "run_start" and e.data.get("what") == "compile"]
    ends = [e for e in seen if e.kind == "run_end" and e.data.get("what") == "compile"]
    assert len(starts) == len(ends) == 1
    assert seen[0] is starts[0] and seen[-1] is ends[0]
    assert starts[0].data["run_id"] == ends[0].data["run_id"]
    return starts[0], ends[0]


def test_a_compile_is_bracketed_by_run_start_and_run_end() -> None:
    seen, compiled, _ = compile_events(optimizer="beam", **SMALL["beam"])
    assert compiled is not None
    start, end = run_pair(seen)
    assert start.data == {
        "what": "compile",
        "run_id": compiled.program.meta.run_id,
        "pipeline": triage.ref,
        "optimizer": "beam",
        "trainset": len(ROWS),
        "valset": None,
        "seed": 0,
    }
    assert end.data["run_id"] == compiled.program.meta.run_id
    assert end.data["pipeline"] == triage.ref and end.data["optimizer"] == "beam"
    assert end.data["score"] == compiled.score == 1.0
    assert end.data["calls"] == compiled.usage.calls > 0
    assert end.data["candidates"] == len(compiled.history)
    assert end.data["seconds"] > 0 and end.data["stopped_by"] is None
    assert "error" not in end.data
    kinds = [e.kind for e in seen]
    assert "candidate" in kinds and "lm_call" in kinds


def test_the_run_id_is_the_stored_runs() -> None:
    seen, compiled, _ = compile_events(optimizer="bootstrap", storage="memory://compile-events")
    assert compiled is not None
    start, _ = run_pair(seen)
    with desic.storage.open("memory://compile-events") as store:  # type: ignore[attr-defined]
        assert [r.id for r in store.list_runs()] == [start.data["run_id"]] == [compiled.program.meta.run_id]


def test_a_budget_stopped_compile_ends_with_the_budget_and_no_error() -> None:
    seen, compiled, _ = compile_events(optimizer="beam", max_calls=30, **SMALL["beam"])
    assert compiled is not None and compiled.stopped_by == "max_calls"
    _, end = run_pair(seen)
    assert end.data["stopped_by"] == "max_calls" and "error" not in end.data
    assert end.data["score"] == compiled.score and end.data["calls"] == compiled.usage.calls
    stop = next(e for e in seen if e.kind == "budget_stop")
    assert seen.index(stop) < seen.index(end)


class Crashing:
    """Scores one candidate, then fails like a bug in a third-party optimizer."""

    name = "crashing"

    def config(self) -> dict[str, Any]:
        return {}

    async def optimize(self, task: CompileTask) -> ir.Program:
        program = await task.discover()
        scored = await task.evaluate(program, task.trainset[:2])
        task.record(program, scored.score, "first", split="val", scores=scored.scores)
        raise RuntimeError("optimizer bug")


def test_a_failing_compile_ends_with_the_error() -> None:
    seen, compiled, error = compile_events(optimizer=Crashing(), storage="memory://compile-events-crash")
    assert compiled is None and isinstance(error, RuntimeError)
    start, end = run_pair(seen)
    assert end.data["error"] == "RuntimeError: optimizer bug"
    assert end.data["score"] is None and end.data["stopped_by"] is None
    # discovery + 2 rows scored, the first of them the discovery run itself (not asked again)
    assert end.data["candidates"] == 1 and end.data["calls"] == 2
    with desic.storage.open("memory://compile-events-crash") as store:  # type: ignore[attr-defined]
        run = store.get_run(start.data["run_id"])
        assert run.status == "failed" and run.error == "RuntimeError: optimizer bug"


def test_nothing_is_built_when_nobody_listens(monkeypatch: pytest.MonkeyPatch) -> None:
    emitted: list[str] = []
    real = events.emit

    def spy(kind: str, **data: Any) -> None:
        emitted.append(kind)
        real(kind, **data)

    monkeypatch.setattr(events, "emit", spy)
    desic.compile(triage, ROWS, metric=METRIC, lm=FunctionLM(answer), optimizer="labeled")
    assert "run_start" not in emitted and "run_end" not in emitted


def test_otel_turns_the_pair_into_a_parent_span_with_the_error() -> None:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    from desic.sinks import OTelSink

    exporter = memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    with events.listening(OTelSink(provider)), pytest.raises(RuntimeError):
        desic.compile(triage, ROWS, metric=METRIC, lm=FunctionLM(answer), optimizer=Crashing())
    spans = exporter.get_finished_spans()
    (run,) = [s for s in spans if s.name == "desic.compile"]
    assert run.status.status_code.name == "ERROR" and "optimizer bug" in (run.status.description or "")
    assert run.attributes["desic.pipeline"] == triage.ref
    calls = [s for s in spans if s.name == "desic.lm_call"]
    assert calls and all(s.parent is not None and s.parent.span_id == run.context.span_id for s in calls)
