"""Limits hold for the whole Ray cluster: a throttled LM's rate across every worker (a server
enforcing it rejects nothing), and a budget stops every worker."""

from __future__ import annotations

import time
from typing import Any

import pytest

import desic
from desic.testing import FakeOpenAIServer, Faults, allow_model_requests
from tests.support.house_rule import triage


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Any:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def test_the_rate_of_a_throttled_lm_holds_across_all_workers(ray_executor: Any) -> None:
    rate, n = 20, 80
    devset = [{"ticket": f"crash {i}", "team": "tech"} for i in range(n)]
    # more than `rate` requests within 0.6 s are rejected: each worker pacing itself at the
    # full rate (2x the rate together) would be, at once
    faults = Faults(max_rps=rate, rps_slack=0.4)
    with FakeOpenAIServer(handler=lambda req: {"team": "tech"}, faults=faults) as server:
        # retries=0: a rejection shows as an error instead of being hidden by a retry
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=rate, retries=0)
        # both workers build the LM (SDK import, client) and run a batch, so that next both
        # call at once from the start
        desic.evaluate(triage, devset[:32], "exact_match", lm=lm, executor=ray_executor, concurrency=16)
        time.sleep(1.0)  # the warm-up's requests leave the server's window
        started = time.monotonic()
        report = desic.evaluate(triage, devset, "exact_match", lm=lm, executor=ray_executor, concurrency=16)
        wall = time.monotonic() - started
        assert server.counts["rejected_rate"] == 0
        assert server.counts["ok"] == 32 + n
    assert report.errors == 0 and report.score == 1.0
    assert wall >= 0.95 * (n - 1) / rate  # a lower bound: the rate was kept on average too


def test_a_budget_stops_every_worker(ray_executor: Any, ray_cluster: Any) -> None:
    devset = [{"ticket": f"crash {i}", "team": "tech"} for i in range(400)]
    with FakeOpenAIServer(handler=lambda req: {"team": "tech"}, faults=Faults(latency=0.02)) as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", retries=0)
        report = desic.evaluate(triage, devset, "exact_match", lm=lm, executor=ray_executor, concurrency=16,
                                budget=desic.Budget(max_calls=30))
        assert report.stopped_by == "max_calls"
        assert report.usage.calls <= 30 and server.counts["requests"] <= 30  # what the whole cluster sent
        assert report.skipped >= 400 - 30
    # nothing of the run is left on any worker
    assert ray_cluster.get([actor.running.remote() for actor in ray_executor.actors]) == [0, 0]
