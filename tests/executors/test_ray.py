"""The Ray executor on a real local cluster: the same report as on one machine, events from
the workers on the driver's bus, and a clear error when a worker cannot import the code."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

import desic
from desic.events import Event
from desic.sinks import JsonlSink, read_trace
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, answer, route, triage


def test_evaluate_on_ray_matches_the_local_report_row_for_row(ray_executor: Any, tmp_path: Path) -> None:
    lm = FunctionLM(answer, name="m", latency=0.002)
    devset = ROWS * 3
    trace = tmp_path / "trace.jsonl"
    seen: list[Event] = []
    with desic.events.listening(JsonlSink(trace)), desic.events.listening(seen.append):
        on_ray = desic.evaluate(triage, devset, "exact_match", lm=lm, executor=ray_executor, concurrency=8)
    local = desic.evaluate(triage, devset, "exact_match", lm=lm, concurrency=8)
    assert [r.output for r in on_ray.results] == [r.output for r in local.results]  # devset order
    assert [r.score for r in on_ray.results] == [r.score for r in local.results]
    assert on_ray.score == local.score and on_ray.usage.calls == len(devset)
    # every LM call made on a worker reached the driver's bus, the JSONL trace included,
    # naming its worker; each row's progress event came as its outcome did
    calls = [e for e in read_trace(trace) if e.kind == "lm_call"]
    assert len(calls) == len(devset)
    assert {e.data["worker"] for e in calls} <= {"ray-worker-0", "ray-worker-1"}
    assert sum(1 for e in seen if e.kind == "example") == len(devset)
    # a bare signature runs there too (imported by its own MODULE:NAME)
    signature_report = desic.evaluate(route, devset[:8], "exact_match", lm=lm, executor=ray_executor)
    assert [r.output for r in signature_report.results] == [r.output for r in local.results[:8]]


def test_a_pipeline_the_workers_cannot_import_is_refused_with_how_to_ship_it(
    ray_executor: Any, tmp_path: Path
) -> None:
    name = f"only_on_the_driver_{uuid.uuid4().hex[:8]}"
    (tmp_path / f"{name}.py").write_text(
        "import desic\n"
        "from tests.support.house_rule import route\n\n"
        "@desic.pipeline\n"
        "def here(ticket: str):\n"
        "    return route(ticket=ticket)\n"
    )
    sys.path.insert(0, str(tmp_path))
    try:
        module = __import__(name)
        with pytest.raises(desic.ConfigError) as caught:
            desic.evaluate(module.here, ROWS[:2], "exact_match", lm=FunctionLM(answer), executor=ray_executor)
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop(name, None)
    message = str(caught.value)
    assert f"cannot import module {name!r}" in message
    assert "runtime_env" in message and "working_dir" in message and "py_modules" in message

    @desic.pipeline
    def nested(ticket: str) -> Any:
        return route(ticket=ticket)

    with pytest.raises(desic.ConfigError, match="define it at the top level of a module"):
        desic.evaluate(nested, ROWS[:2], "exact_match", lm=FunctionLM(answer), executor=ray_executor)


def test_a_test_that_refuses_real_lm_calls_refuses_them_on_the_workers_too(ray_executor: Any) -> None:
    lm = desic.lm("openai:gpt-4o-mini", base_url="http://127.0.0.1:9/v1", api_key="x")
    report = desic.evaluate(triage, ROWS[:4], "exact_match", lm=lm, executor=ray_executor)
    assert report.errors == 4
    assert all("refusing to call the real LM" in (r.error or "") for r in report.results)


def test_a_compile_on_ray_holds_out_the_row_being_scored_as_on_one_machine(ray_executor: Any) -> None:
    from tests.optimize.test_knn import parrot
    from tests.optimize.test_knn import route as knn_route

    rows = [{"ticket": f"case {i}", "team": ("billing", "shipping", "technical")[i % 3]} for i in range(12)]
    options: dict[str, Any] = {"valset": rows, "metric": "exact_match", "optimizer": "random_search",
                               "num_candidates": 2, "progress": False}
    on_ray = desic.compile(knn_route, rows, lm=FunctionLM(parrot), executor=ray_executor, **options)
    local = desic.compile(knn_route, rows, lm=FunctionLM(parrot), **options)
    assert [(c.note, c.score) for c in on_ray.history] == [(c.note, c.score) for c in local.history]
    # the workers left each scored row out of its per-input demos, as the driver's process does
    per_input = [c for c in on_ray.history if c.split == "val" and "per-input" in c.note]
    assert per_input and all(c.score is not None and c.score < 0.5 for c in per_input)


def test_the_drivers_allowance_holds_on_a_worker_that_imported_pytest(ray_executor: Any) -> None:
    # the workers import this pipeline's module, which imports pytest: a worker process
    # then looks like a test itself, yet the driver's decision (here: allowed) is what counts,
    # for the LM's set-up and for every request, in this run and in the next
    from desic.testing import FakeOpenAIServer, allow_model_requests
    from tests.optimize.test_knn import route as knn_route

    rows = [{"ticket": f"case {i}", "team": "billing"} for i in range(6)]
    with allow_model_requests(), FakeOpenAIServer(handler=lambda req: {"team": "billing"}) as server:
        for _ in range(2):
            lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", retries=0)
            report = desic.evaluate(knn_route, rows, "exact_match", lm=lm, executor=ray_executor)
            assert report.errors == 0 and report.score == 1.0
