"""Honest progress lines (issue 15): "loading model" while a local model loads, a
compile's calls and examples as they happen, the bar's call count equal to the compile's
own count (cache hits and re-asks included), an ETA from the work done, right plurals."""

from __future__ import annotations

import io
import time
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

import desic
from desic import events
from desic.sinks import ProgressSink
from desic.testing import FakeOpenAIServer
from tests.cli.test_cli import DEV, TRAIN, answer, cli, env, project, server  # noqa: F401 - fixtures


def sink(what: str, **options: object) -> ProgressSink:
    return ProgressSink(Console(file=io.StringIO(), force_terminal=False), what=what, **options)  # type: ignore[arg-type]


def test_eval_says_loading_model_while_the_local_model_loads() -> None:
    bar = sink("evaluate", total=5)
    bar(events.Event("lm_load", {"lm": "local", "model": "gemma.gguf", "done": False}))
    task = bar._progress.tasks[0]
    assert task.fields["count"] == "loading model"
    assert "loading model gemma.gguf" in task.fields["status"]
    bar(events.Event("lm_load", {"lm": "local", "model": "gemma.gguf", "done": True, "seconds": 30.0}))
    assert bar._progress.tasks[0].fields["count"] == "0/5 examples"


def test_the_eta_under_a_budget_comes_from_the_work_done() -> None:
    bar = sink("compile", budget={"calls": 60})
    bar.started = time.monotonic() - 120  # two minutes went into loading the model
    bar(events.Event("lm_load", {"lm": "local", "model": "m.gguf", "done": False}))
    assert bar.eta() is None  # loading: no rate to estimate from
    bar(events.Event("lm_load", {"lm": "local", "model": "m.gguf", "done": True, "seconds": 119.0}))
    assert bar.eta() is None  # nothing spent yet
    for _ in range(30):  # then half the budget goes in a moment
        bar(events.Event("lm_call", {"calls": 1, "prompt_tokens": 1, "completion_tokens": 1}))
    eta = bar.eta()
    assert eta is not None and eta < 60  # not another two minutes, as the elapsed time alone says


def test_plurals_in_the_status() -> None:
    bar = sink("evaluate", total=1)
    bar(events.Event("lm_call", {"calls": 1}))
    bar(events.Event("example", {"index": 0, "score": None, "error": "boom"}))
    status = bar.status()
    assert "1 error" in status and "1 errors" not in status
    assert "1 call" in status and "1 calls" not in status
    assert bar._progress.tasks[0].fields["count"] == "1/1 example"




def _compile(fake: FakeOpenAIServer, cache: Path) -> tuple[desic.CompiledPipeline[..., Any], ProgressSink]:
    from desic.cli._common import import_object
    from tests.cli.test_cli import PROJECT

    module = cache.parent / "cliproj_progress.py"
    if not module.exists():
        module.write_text(PROJECT, encoding="utf-8")
    triage = import_object(f"{module}:triage")
    model = desic.lm("openai:fake", base_url=fake.url, api_key="k", cache=str(cache))
    bar = sink("compile")
    rows = TRAIN + [{"ticket": "boom: the app crashes", "team": "technical"}]  # never validates: re-asks
    with events.listening(bar):
        compiled = desic.compile(triage, rows, valset=DEV, metric="exact_match",
                                 optimizer="bootstrap", lm=model, progress=False)
    return compiled, bar


def test_the_bar_counts_the_calls_the_summary_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("DESIC_ALLOW_MODEL_REQUESTS", "1")
    with FakeOpenAIServer(answer) as fake:
        first, bar = _compile(fake, tmp_path / "cache")
        sent = len(fake.requests)
        assert first.usage.calls == sent  # what the server saw: re-asks of the failing row included
        assert bar.calls == first.usage.calls
        assert bar.examples > 0 and "example" in bar.status()  # examples shown as they happen
        again, rerun = _compile(fake, tmp_path / "cache")  # every answer cached now
        assert len(fake.requests) - sent == again.usage.calls
        assert rerun.calls == again.usage.calls
        assert rerun.cached > 0 and f"{rerun.cached} cached" in rerun.status()


def test_the_compile_summary_counts_every_call_the_server_saw(env: dict[str, str], server: FakeOpenAIServer, tmp_path: Path) -> None:  # noqa: F811
    before = len(server.requests)
    result = cli("compile", "cliproj:support", "-t", "train.jsonl", "--valset", "dev.jsonl", "--metric", "contains",
                 "-o", str(tmp_path / "s.json"))
    assert result.exit_code == 0, result.output
    sent = len(server.requests) - before
    assert f"| {sent} LM calls" in result.stdout  # the valset's final scoring included
