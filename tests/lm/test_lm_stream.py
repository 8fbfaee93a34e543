# mypy: disable-error-code="empty-body"
"""Streaming through the LM layer: real SSE from the loopback server through openai and
instructor, and the middleware (usage, cache, retry before the first partial, timeout)."""

from __future__ import annotations

import asyncio
import http.client
import json
import threading
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlsplit

import pytest
from pydantic import BaseModel

import desic
from desic.lm import BaseLM, LMRequest, LMResponse, stream_of
from desic.testing import FakeLM, FakeOpenAIServer, HTTPFault, allow_model_requests


class Route(BaseModel):
    team: str
    reason: str


@desic.signature
def route(ticket: str) -> Route:
    """Route a support ticket to a team and say why."""


ROUTE = {"team": "billing", "reason": "the customer was charged twice for one order"}


def server_lm(server: FakeOpenAIServer, **options: Any) -> Any:
    return desic.lm("openai:gpt-4o-mini", base_url=server.url, api_key="test", **options)


# --- the loopback server answers stream=True with real chunked SSE -------------------------------


def test_the_fake_server_streams_chunked_server_sent_events() -> None:
    with FakeOpenAIServer(lambda req: "abcdefghij", stream_chunk_chars=3) as server:
        body = {"model": "m", "messages": [{"role": "user", "content": "hi"}], "stream": True,
                "stream_options": {"include_usage": True}}
        url = urlsplit(server.url)
        conn = http.client.HTTPConnection(url.hostname or "", url.port, timeout=30)
        try:
            conn.request("POST", url.path + "/chat/completions", json.dumps(body),
                         {"Content-Type": "application/json"})
            r = conn.getresponse()
            assert r.getheader("Transfer-Encoding") == "chunked"
            assert (r.getheader("Content-Type") or "").startswith("text/event-stream")
            text = r.read().decode()
        finally:
            conn.close()
        lines = [line for line in text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "data: [DONE]"
    assert '"usage"' in lines[-2]
    assert sum('"content": "' in line for line in lines) == 5  # the role, then abc def ghi j


@pytest.mark.parametrize("mode", ["json_schema", "tools"])
def test_streaming_through_openai_and_instructor(mode: str) -> None:
    with FakeOpenAIServer(lambda req: ROUTE, stream_chunk_chars=5) as server, allow_model_requests():
        lm = server_lm(server, mode=mode)
        request = LMRequest(messages=({"role": "user", "content": "ticket"},), response_model=Route)

        async def collect() -> list[Any]:
            return [item async for item in stream_of(lm, request)]

        items = asyncio.run(collect())
    partials, final = items[:-1], items[-1]
    assert len(partials) > 3 and all(isinstance(p, Route) for p in partials)
    assert isinstance(final, LMResponse) and final.value == Route(**ROUTE)
    assert final.usage.calls == 1 and final.usage.prompt_tokens > 0 and final.usage.completion_tokens > 0
    assert server.requests[0]["stream"] is True and server.requests[0]["stream_options"] == {"include_usage": True}


def test_a_cached_answer_streams_as_one_final_item() -> None:
    with FakeOpenAIServer(lambda req: ROUTE, stream_chunk_chars=5) as server, allow_model_requests():
        lm = server_lm(server, cache="memory")
        with desic.context(lm=lm):
            first = list(route.stream(ticket="charged twice"))
            again = list(route.stream(ticket="charged twice"))
            called = route(ticket="charged twice")  # the same cache entry
        assert len(server.requests) == 1
    assert len(first) > 2
    assert len(again) == 1 and again[0].done and again[0].value == first[-1].value == called


def test_an_answer_that_never_validates_is_an_output_validation_error() -> None:
    with FakeOpenAIServer(lambda req: {"team": "billing"}) as server, allow_model_requests():
        lm = server_lm(server)
        with desic.context(lm=lm), pytest.raises(desic.OutputValidationError) as caught:
            list(route.stream(ticket="x"))
    assert caught.value.raw == '{"team": "billing"}' and caught.value.usage.calls == 1


def test_a_failure_before_the_first_partial_is_retried() -> None:
    lock, seen = threading.Lock(), []

    def flaky(req: dict[str, Any]) -> Any:
        with lock:
            seen.append(1)
            if len(seen) == 1:
                raise HTTPFault(503, "busy")
        return ROUTE

    with FakeOpenAIServer(flaky) as server, allow_model_requests():
        lm = server_lm(server, retries=2)
        lm.initial = lm.jitter = 0.0  # no backoff wait in a test
        with desic.context(lm=lm):
            items = list(route.stream(ticket="x"))
    assert len(seen) == 2 and items[-1].value == Route(**ROUTE)


class BreaksMidway(BaseLM):
    """Streams one partial, then fails with an error a retry would otherwise take."""

    name = "breaks"

    def __init__(self) -> None:
        self.attempts = 0

    async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - unused
        raise NotImplementedError

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        self.attempts += 1
        yield Route.model_construct(team="bill", reason=None)
        raise desic.Timeout("the connection dropped mid-stream")


def test_no_retry_once_a_partial_reached_the_caller() -> None:
    inner = BreaksMidway()
    lm = desic.lm.retry(inner, 3, initial=0, jitter=0)
    with desic.context(lm=lm), pytest.raises(desic.Timeout):
        list(route.stream(ticket="x"))
    assert inner.attempts == 1


class Stalls(BaseLM):
    """Streams a partial at once, then ``pause`` seconds before each of the next ones."""

    name = "stalls"

    def __init__(self, pause: float, items: int = 3) -> None:
        self.pause = pause
        self.items = items

    async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - unused
        raise NotImplementedError

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        for i in range(self.items):
            if i:
                await asyncio.sleep(self.pause)
            yield Route.model_construct(team="b" * (i + 1), reason=None)
        yield await FakeLM([ROUTE]).request(request)


def test_a_stalled_stream_times_out() -> None:
    lm = desic.lm.timeout(Stalls(pause=60), 0.2)
    with desic.context(lm=lm), pytest.raises(desic.Timeout):
        list(route.stream(ticket="x"))


def test_the_caller_s_own_time_between_items_is_not_the_model_s() -> None:
    async def main() -> Any:
        final = None
        with desic.context(lm=desic.lm.timeout(Stalls(pause=0), 1.0)):
            async for partial in route.astream(ticket="x"):
                await asyncio.sleep(0.4)  # 1.6 s in all, over the timeout
                final = partial
        return final

    assert asyncio.run(main()).value == Route(**ROUTE)


def test_throttled_streams_take_a_slot_and_settle_their_tokens() -> None:
    lm = desic.lm(FakeLM([ROUTE], cycle=True, chunk_chars=9), rps=1000, burst=5, tpm=1_000_000)
    with desic.context(lm=lm):
        items = [list(route.stream(ticket=f"t{i}")) for i in range(3)]
    assert all(run[-1].value == Route(**ROUTE) and len(run) > 2 for run in items)
