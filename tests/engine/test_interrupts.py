"""Ctrl-C cancels a compile at once: no call of it runs later, and its run is ``interrupted``.

The interrupt is raised in the main thread while the compile runs (``_thread.interrupt_main``
from inside the fake model, i.e. wherever the main thread happens to be), then the same
thread makes an unrelated desic call: before the fix the interrupted compile carried on
during that call (its tasks stayed on the thread's loop).
"""

from __future__ import annotations

import _thread
import itertools
import time
import uuid
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.storage import is_stale
from desic.testing import FakeLM, FunctionLM
from tests.support.house_rule import ROWS, answer, route, triage

pytestmark = pytest.mark.usefixtures("ctrl_c_raises")


def interrupting(after: int) -> FunctionLM:
    """The fake model, which presses Ctrl-C on its ``after``-th call."""
    count = itertools.count(1)

    def fn(request: LMRequest) -> Any:
        if next(count) == after:
            _thread.interrupt_main()
        return answer(request)

    return FunctionLM(fn, latency=0.002, name="m")


@pytest.mark.parametrize("target", [triage, route], ids=["sync-pipeline", "signature"])
def test_ctrl_c_stops_the_compile_and_nothing_of_it_runs_later(target: Any) -> None:
    lm = interrupting(after=12)
    url = f"memory://ctrl-c-{uuid.uuid4().hex}"
    with pytest.raises(KeyboardInterrupt):
        desic.compile(target, ROWS * 4, metric=desic.metrics.exact_match, optimizer="random_search",
                      num_candidates=8, lm=lm, storage=url, concurrency=4)
    made = len(lm.calls)
    assert made < 40  # it stopped (a whole compile makes hundreds)
    # the same thread goes on with something else; the interrupted compile must not
    other = FakeLM(default={"team": "tech"})
    report = desic.evaluate(route, ROWS[:4], desic.metrics.exact_match, lm=other)
    assert report.completed == 4 and len(other.calls) == 4
    time.sleep(0.2)  # any worker thread of the compile would have called by now
    assert len(lm.calls) == made
    (run,) = desic.storage.open(url).list_runs()
    assert run.status == "interrupted"
    assert "KeyboardInterrupt" in (run.error or "")


def test_the_interrupted_run_resumes_to_the_uninterrupted_program() -> None:
    url = f"memory://ctrl-c-{uuid.uuid4().hex}"
    options: dict[str, Any] = {"metric": desic.metrics.exact_match, "optimizer": "random_search",
                               "num_candidates": 4, "storage": url, "concurrency": 2}
    with pytest.raises(KeyboardInterrupt):
        desic.compile(triage, ROWS, lm=interrupting(after=30), **options)
    (run,) = desic.storage.open(url).list_runs()
    resumed = desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"), resume=run.id, **options)
    clean = desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"),
                          **{**options, "storage": f"memory://clean-{uuid.uuid4().hex}"})
    assert resumed.program.nodes == clean.program.nodes
    assert desic.storage.open(url).get_run(run.id).status == "finished"


def test_a_running_compile_keeps_its_heartbeat(monkeypatch: pytest.MonkeyPatch) -> None:
    import desic._lifecycle as lifecycle

    monkeypatch.setattr(lifecycle, "HEARTBEAT_SECONDS", 0.05)
    url = f"memory://beat-{uuid.uuid4().hex}"
    store = desic.storage.open(url)
    seen: list[str] = []

    def fn(request: LMRequest) -> Any:
        runs = store.list_runs()
        if runs:
            seen.append(runs[0].updated_at)
        return answer(request)

    desic.compile(triage, ROWS, metric=desic.metrics.exact_match, optimizer="bootstrap",
                  lm=FunctionLM(fn, latency=0.01, name="m"), storage=url, concurrency=1, max_demos=20)
    assert len(set(seen)) > 3  # touched while running, not only at start and end
    (run,) = store.list_runs()
    assert run.status == "finished" and not is_stale(run)
