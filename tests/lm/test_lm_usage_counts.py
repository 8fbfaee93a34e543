# mypy: disable-error-code="empty-body"
"""Usage counts every request the server saw: re-asks, answers that never validated, and
attempts the retry middleware repeated (a budget must not be able to miss them)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

import desic
from desic.lm.guard import allow_model_requests
from desic.testing import FakeOpenAIServer, Faults


class Route(BaseModel):
    team: str


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


def handler(req: dict[str, Any]) -> Any:
    if any("boom" in str(m["content"]) for m in req["messages"]):
        return "this is not JSON"  # never validates: every re-ask fails too
    return {"team": "billing"}


ROWS = [{"ticket": f"{'boom ' if i % 4 == 0 else ''}ticket {i}", "team": "billing"} for i in range(16)]


@pytest.mark.parametrize("faults", [Faults(), Faults(rate_500=0.3, rate_malformed=0.2)], ids=["clean", "faulty"])
def test_usage_counts_every_request_the_server_saw(faults: Faults) -> None:
    with FakeOpenAIServer(handler, faults=faults, seed=7) as server, allow_model_requests():
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", client_retries=0,
                      retries=4, mode="json_schema")
        report = desic.evaluate(route, ROWS, desic.metrics.exact_match, lm=lm, concurrency=4)
        seen = server.counts["requests"]
    assert report.errors >= 4  # the "boom" rows never validated
    assert report.usage.calls == seen
    assert sum(r.usage.calls for r in report.results) == seen


def test_a_calls_budget_sees_the_failed_requests_too() -> None:
    with FakeOpenAIServer(handler) as server, allow_model_requests():
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", client_retries=0, mode="json_schema")
        boom = [{"ticket": f"boom {i}", "team": "billing"} for i in range(12)]
        report = desic.evaluate(route, boom, desic.metrics.exact_match, lm=lm, concurrency=1,
                                budget=desic.Budget(max_calls=6))
        seen = server.counts["requests"]
    assert report.stopped_by == "max_calls"
    assert report.usage.calls == seen
    assert seen <= 6 + 3  # the budget stopped at the limit (plus one row's re-asks in flight)
