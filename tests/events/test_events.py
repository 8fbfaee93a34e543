# mypy: disable-error-code="empty-body"
"""The event bus and its sinks: subscribe, logging, JSONL traces, rich progress, OpenTelemetry."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Literal

import pytest

import desic
from desic import events
from desic.events import Event, emit, listening, subscribe
from desic.sinks import (
    JsonlSink,
    LoggingSink,
    OTelSink,
    ProgressSink,
    format_eta,
    progress,
    read_trace,
)
from desic.testing import FakeLM


@desic.signature
def label(text: str) -> Literal["spam", "ham"]:
    """Label the message."""


@desic.pipeline
def filter_mail(text: str) -> str:
    return label(text=text)


def test_subscribe_receives_events_until_unsubscribed() -> None:
    seen: list[Event] = []
    unsubscribe = subscribe(seen.append)
    try:
        emit("candidate", index=0, score=0.5)
    finally:
        unsubscribe()
    emit("candidate", index=1, score=0.7)
    assert [(e.kind, e.data) for e in seen] == [("candidate", {"index": 0, "score": 0.5})]


def test_runtime_events_reach_a_scoped_sink_and_a_broken_sink_is_harmless(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[Event] = []

    def broken(event: Event) -> None:
        raise RuntimeError("sink bug")

    with listening(seen.append), listening(broken), desic.context(lm=FakeLM(["spam"])):
        assert filter_mail(text="win money") == "spam"
    kinds = [e.kind for e in seen]
    assert kinds == ["lm_call", "node_call"]
    call = seen[0].data
    assert call["node"] == "label" and call["lm"] == "fake" and call["prompt_tokens"] > 0
    assert "desic event sink" in caplog.text  # logged, not raised


def test_logging_sink_puts_fields_in_the_record(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("desic.test_events")
    with caplog.at_level(logging.INFO, logger="desic.test_events"), listening(LoggingSink(logger=logger)):
        emit("candidate", index=3, score=0.75, note="round 2")
    (record,) = caplog.records
    assert record.getMessage() == "candidate index=3 score=0.75 note=round 2"
    assert record.desic_event == "candidate"  # type: ignore[attr-defined]
    assert record.desic_score == 0.75  # type: ignore[attr-defined]


def test_jsonl_sink_round_trips(tmp_path: Path) -> None:
    path = tmp_path / "trace.jsonl"
    with listening(JsonlSink(path)):
        emit("iteration", optimizer="beam", round=1, best=0.5)
        emit("budget_stop", budget="max_calls", detail="100 calls")
    lines = path.read_text().splitlines()
    assert [json.loads(line)["kind"] for line in lines] == ["iteration", "budget_stop"]
    back = read_trace(path)
    assert [(e.kind, e.data) for e in back] == [
        ("iteration", {"optimizer": "beam", "round": 1, "best": 0.5}),
        ("budget_stop", {"budget": "max_calls", "detail": "100 calls"}),
    ]


def test_desic_trace_env_traces_a_whole_process(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    code = (
        "import desic\nfrom desic.testing import FakeLM\n"
        "@desic.signature\ndef echo(text: str) -> str:\n    '''Echo.'''\n"
        "with desic.context(lm=FakeLM(['a', 'b'])):\n    echo(text='x'); echo(text='y')\n"
    )
    env = {**os.environ, "DESIC_TRACE": str(trace), "DESIC_OTEL": "0"}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert [e.kind for e in read_trace(trace)] == ["lm_call", "node_call", "lm_call", "node_call"]


# --- rich progress ------------------------------------------------------------------------------


def terminal(width: int = 160) -> tuple[object, io.StringIO]:
    from rich.console import Console

    buffer = io.StringIO()
    return Console(file=buffer, force_terminal=True, width=width, color_system=None), buffer


def test_progress_for_a_compile_shows_best_calls_cost_and_eta() -> None:
    console, buffer = terminal()
    sink = ProgressSink(console, what="compile", total=4)  # type: ignore[arg-type]
    with sink:
        sink(Event("lm_call", {"prompt_tokens": 900, "completion_tokens": 300, "cost": 0.0125}))
        sink(Event("lm_call", {"prompt_tokens": 10, "completion_tokens": 5, "cost": 0.0}))
        sink(Event("candidate", {"index": 0, "score": 0.5}))
        sink(Event("candidate", {"index": 1, "score": 0.75}))
        sink(Event("candidate", {"index": 2, "score": 0.25}))
        sink(Event("iteration", {"optimizer": "beam", "round": 2, "best": 0.75}))
    out = buffer.getvalue()
    final = out.rsplit("\r", 1)[-1]
    assert "3/4 candidates" in final
    assert "best 0.750 · round 2 · 2 calls · 1.2k tok · $0.0125" in final
    assert sink.eta() is not None and sink.eta() >= 0  # type: ignore[operator]


def test_progress_for_an_evaluation_shows_the_running_score() -> None:
    console, buffer = terminal()
    with ProgressSink(console, what="evaluate") as sink:  # type: ignore[arg-type]
        sink(Event("run_start", {"what": "evaluate", "total": 3}))
        sink(Event("example", {"index": 0, "score": 1.0}))
        sink(Event("example", {"index": 1, "score": 0.0, "error": "LMError: boom"}))
    final = buffer.getvalue().rsplit("\r", 1)[-1]
    assert "2/3 examples" in final and "score 0.500" in final and "1 error" in final


def test_progress_eta_from_a_budget() -> None:
    console, _ = terminal()
    sink = ProgressSink(console, budget={"calls": 10, "dollars": 1.0})  # type: ignore[arg-type]
    assert sink.eta() is None
    sink.started -= 10.0  # ten seconds in...
    for _ in range(5):  # ...half the calls are spent
        sink(Event("lm_call", {"cost": 0.01}))
    eta = sink.eta()
    assert eta is not None and 9.0 < eta < 11.5
    assert format_eta(75) == "1:15" and format_eta(3725) == "1:02:05" and format_eta(None) == "-:--"


def test_progress_is_silent_off_a_terminal() -> None:
    from rich.console import Console

    buffer = io.StringIO()
    with progress(Console(file=buffer, force_terminal=False), what="compile") as sink:
        emit("candidate", index=0, score=1.0)
    assert sink is None and buffer.getvalue() == ""


def test_progress_follows_a_real_compile() -> None:
    console, buffer = terminal()
    train = [{"text": f"win money {i}", "output": "spam"} for i in range(4)]
    lm = FakeLM(["spam"], cycle=True)
    with progress(console, what="compile") as sink:  # type: ignore[arg-type]
        desic.compile(filter_mail, train, metric=desic.metrics.exact_match, optimizer="bootstrap", lm=lm)
    # discovering the node, 4 rows, then the comparison with the pipeline as written (zero-shot
    # on the 3 rows not yet run so, the program on the 4 rows, each without its own demo)
    assert sink is not None and sink.calls == len(lm.calls) == 5 + 3 + 4
    assert "12 calls" in buffer.getvalue()


# --- OpenTelemetry ------------------------------------------------------------------------------


def test_otel_is_off_without_opentelemetry_or_when_disabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if not installed
    import desic.sinks

    assert desic.sinks._otel_wanted() is False
    monkeypatch.delitem(sys.modules, "opentelemetry")
    monkeypatch.setenv("DESIC_OTEL", "0")
    assert desic.sinks._otel_wanted() is False


def test_a_process_without_opentelemetry_runs_with_no_otel_sink() -> None:
    code = (
        "import sys; sys.modules['opentelemetry'] = None\n"
        "import desic.events as ev\nev.emit('candidate', index=0)\n"
        "print([type(s).__name__ for s in ev._global])\n"
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DESIC_TRACE", "DESIC_OTEL")}
    proc = subprocess.run([sys.executable, "-c", code], env=env, check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"




def _sdk() -> tuple[object, object]:
    sdk_trace = pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    export = pytest.importorskip("opentelemetry.sdk.trace.export")
    memory = pytest.importorskip("opentelemetry.sdk.trace.export.in_memory_span_exporter")
    exporter = memory.InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(export.SimpleSpanProcessor(exporter))
    return provider, exporter


def test_otel_spans_for_a_run_and_its_lm_calls() -> None:
    provider, exporter = _sdk()
    with listening(OTelSink(provider)), desic.context(lm=FakeLM(["spam", "ham"])):
        emit("run_start", run_id="r1", what="compile", pipeline="tests:filter_mail")
        filter_mail(text="a")
        emit("candidate", index=0, score=0.5)
        filter_mail(text="b")
        emit("run_end", run_id="r1", what="compile", best=0.5)
    spans = exporter.get_finished_spans()  # type: ignore[attr-defined]
    names = [s.name for s in spans]
    assert names.count("desic.lm_call") == 2 and names.count("desic.node_call") == 2
    (run,) = [s for s in spans if s.name == "desic.compile"]
    assert run.attributes["desic.pipeline"] == "tests:filter_mail" and run.attributes["desic.best"] == 0.5
    assert [e.name for e in run.events] == ["desic.candidate"]
    call = next(s for s in spans if s.name == "desic.lm_call")
    assert call.parent is not None and call.parent.span_id == run.context.span_id
    assert call.attributes["desic.node"] == "label" and call.attributes["gen_ai.usage.input_tokens"] > 0
    assert call.end_time >= call.start_time


def test_an_idle_global_sink_does_not_make_anyone_listen(monkeypatch: pytest.MonkeyPatch) -> None:
    class Sleepy:
        def __init__(self) -> None:
            self.asleep = True
            self.seen: list[str] = []

        def idle(self) -> bool:
            return self.asleep

        def __call__(self, event: Event) -> None:
            self.seen.append(event.kind)

    monkeypatch.setattr(events, "_trace_checked", True)  # no sinks from the environment
    monkeypatch.setattr(events, "_global", ())
    monkeypatch.setattr(events, "_interest", (False, ()))
    sleepy = Sleepy()
    unsubscribe = subscribe(sleepy)
    try:
        assert events.active() is False  # nobody builds events for a sink that drops them
        emit("candidate", index=0)  # an event emitted anyway still reaches it
        sleepy.asleep = False
        assert events.active() is True
        with listening(lambda e: None):
            sleepy.asleep = True
            assert events.active() is True  # a scoped sink always listens
        plain = subscribe(lambda e: None)
        assert events.active() is True  # so does a global one without ``idle``
        plain()
        assert events.active() is False
    finally:
        unsubscribe()
    assert sleepy.seen == ["candidate"]


def test_a_broken_opentelemetry_install_is_logged_not_raised(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import desic.sinks

    def broken(self: object, tracer_provider: object = None) -> None:
        raise ImportError("opentelemetry is broken")

    monkeypatch.setattr(events, "_trace_checked", False)
    monkeypatch.setattr(events, "_global", ())
    monkeypatch.setattr(events, "_interest", (False, ()))
    monkeypatch.setattr(desic.sinks, "_otel_wanted", lambda: True)
    monkeypatch.delenv("DESIC_TRACE", raising=False)
    monkeypatch.setattr(desic.sinks.OTelSink, "__init__", broken)
    with caplog.at_level(logging.WARNING, logger="desic"):
        emit("candidate", index=0)
    assert events._global == ()
    assert "cannot be used" in caplog.text


LATE_PROVIDER = '''
import time
import desic
import desic.events as ev
from desic.testing import FakeLM
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

@desic.signature
def label(text: str) -> str:
    """Label it."""

with desic.context(lm=FakeLM(["a"], cycle=True)):
    label(text="before any provider")
    print([type(s).__name__ for s in ev._global])
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    start = time.monotonic()
    label(text="right after the provider was set")
    print(sorted(s.name for s in exporter.get_finished_spans()), time.monotonic() - start < 0.5)
'''


def test_otel_sink_exports_once_an_sdk_provider_is_set_after_import() -> None:
    pytest.importorskip("opentelemetry.sdk.trace", reason="opentelemetry-sdk is not installed")
    unset = ("DESIC_TRACE", "DESIC_OTEL", "OTEL_PYTHON_TRACER_PROVIDER")
    env = {k: v for k, v in os.environ.items() if k not in unset}
    proc = subprocess.run(
        [sys.executable, "-c", LATE_PROVIDER], env=env, check=False, capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    subscribed, spans = proc.stdout.strip().splitlines()
    assert subscribed == "['OTelSink']"
    assert spans == "['desic.lm_call', 'desic.node_call'] True"  # at once, not a second later


def test_otel_sink_asks_for_the_global_provider_once_while_none_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    trace = pytest.importorskip("opentelemetry.trace")
    if getattr(trace, "_TRACER_PROVIDER", None) is not None:
        pytest.skip("a global tracer provider is set in this process")
    real = trace.get_tracer_provider
    calls: list[object] = []

    def counting() -> object:
        calls.append(real())
        return calls[-1]

    monkeypatch.setattr(trace, "get_tracer_provider", counting)
    sink = OTelSink()
    for _ in range(100):
        sink(Event("lm_call", {"latency": 0.1}))
    assert len(calls) == 1


def test_otel_sink_does_nothing_without_an_sdk() -> None:
    pytest.importorskip("opentelemetry.trace")
    sink = OTelSink()  # the global provider: no SDK configured in this process
    sink(Event("lm_call", {"latency": 0.1}))
    sink(Event("run_start", {"run_id": "x", "what": "compile"}))
    assert sink._runs == []
