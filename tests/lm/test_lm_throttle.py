# mypy: disable-error-code="empty-body"
"""``desic.lm.throttle``: staying under a server's rate limit instead of hitting it."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any, Literal

import pytest

import desic
import desic._bucket  # private: the token bucket's clock is patched
from desic._bucket import TokenBucket  # private: the bucket this process's throttle keeps
from desic.lm import LMRequest, RetryLM, ThrottleLM
from desic.lm._throttle import estimate_tokens  # private: the throttle's own token estimate
from desic.testing import FakeLM, FakeOpenAIServer, Faults, FunctionLM, allow_model_requests
from tests.support.overlap import InFlight


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def test_evaluation_throttled_at_the_servers_rate_is_never_rejected() -> None:
    rate, n = 20, 60
    devset = [{"ticket": f"ticket {i}", "output": "tech"} for i in range(n)]
    # The server rejects more than `rate` requests within 0.6 s: arrivals may bunch up by
    # a few hundred ms on a loaded machine (a stalled process sends what was due together),
    # while a client without the throttle (16 at once) is still rejected at once.
    faults = Faults(max_rps=rate, rps_slack=0.4)
    # the server's first requests wait until 2 are in flight: a client sending one request
    # at a time (rather than the throttle pacing a concurrent evaluation) never gets there
    inflight = InFlight(2)

    def handler(req: dict[str, Any]) -> dict[str, str]:
        with inflight.sync():
            return {"output": "tech"}

    with FakeOpenAIServer(handler=lambda req: {"output": "tech"}, faults=faults) as server:
        # retries=0: a rejection would show as an error instead of being hidden by a retry
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=rate, retries=0)
        with desic.context(lm=lm):
            team(ticket="warm-up")  # SDK imports and client set-up happen once, before the run
        time.sleep(1.0)  # the warm-up request leaves the server's window
        server.handler = handler
        started = time.monotonic()
        report = desic.evaluate(team, devset, desic.metrics.exact_match, lm=lm, concurrency=16)
        wall = time.monotonic() - started
        assert server.counts["rejected_rate"] == 0  # never in bursts above the rate
        assert server.counts["ok"] == n + 1
    assert report.errors == 0 and report.score == 1.0
    assert inflight.peak == 2  # and not one at a time (how fast it went is for bench/)
    # no faster than the rate on average either: a lower bound, which load cannot break
    assert wall >= 0.95 * (n - 1) / rate, f"{n} requests in {wall:.2f} s at {rate}/s"


def test_the_same_lm_object_shares_its_budget_across_threads_and_loops() -> None:
    stamps: list[float] = []
    lock = threading.Lock()

    def answer(request: LMRequest) -> str:
        with lock:
            stamps.append(time.monotonic())
        return "tech"

    lm = desic.lm.throttle(FunctionLM(answer), rps=50)

    def worker() -> None:
        with desic.context(lm=lm):  # each thread runs its own event loop
            for i in range(10):
                team(ticket=f"{threading.get_ident()}-{i}")

    threads = [threading.Thread(target=worker) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=10)
    assert len(stamps) == 40
    # 40 requests at 50/s with a burst of 1: at least 39 gaps of 20 ms
    assert time.monotonic() - started >= 39 / 50 * 0.95
    stamps.sort()
    gaps = [b - a for a, b in itertools.pairwise(stamps)]
    assert sum(gaps) / len(gaps) >= 0.019


def test_burst_lets_the_first_requests_through_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    lm = desic.lm.throttle(FakeLM(default="tech"), rps=2, burst=5)
    assert isinstance(lm, ThrottleLM) and isinstance(lm.requests, TokenBucket)
    waits: list[float] = []
    reserve = lm.requests.reserve

    def recording_reserve(tokens: float = 1.0) -> float:
        waits.append(reserve(tokens))
        return waits[-1]

    monkeypatch.setattr(lm.requests, "reserve", recording_reserve)

    async def main() -> None:
        with desic.context(lm=lm):
            await asyncio.gather(*(team.acall(ticket=str(i)) for i in range(5)))

    asyncio.run(main())
    assert waits == [0.0] * 5  # the throttle held none of the five back


def test_tokens_per_minute_reserves_an_estimate_and_settles_with_the_usage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the bucket's clock stands still, so the time the call took (load) cannot blur the sum
    monkeypatch.setattr(desic._bucket, "time", SimpleNamespace(monotonic=lambda: 1000.0, sleep=time.sleep))
    fake = FakeLM(default="tech")
    lm = desic.lm.throttle(fake, tpm=6000)  # 100 tokens a second, a burst of 6000
    assert isinstance(lm, ThrottleLM) and lm.tokens is not None
    request = LMRequest(messages=({"role": "user", "content": "x" * 400},), response_model=team.response_model())
    estimate = estimate_tokens(["x" * 400])
    assert estimate == 105

    async def main() -> Any:
        return await lm.request(request)

    response = asyncio.run(main())
    used = response.usage.total_tokens
    assert used != estimate
    # the bucket was charged exactly what the call used: its "full again" time moved by used/rate
    assert isinstance(lm.tokens, TokenBucket)
    assert lm.tokens._tat - 1000.0 == pytest.approx(used / 100)


def test_tokens_per_minute_slows_large_prompts() -> None:
    lm = desic.lm.throttle(FakeLM(default="tech"), tpm=60 * 200, tpm_burst=200)  # 200 tokens/s
    big = "y" * 200 * 4  # about 200 tokens each

    started = time.monotonic()
    with desic.context(lm=lm):
        for _ in range(2):
            team(ticket=big)
    # the first takes the burst (clamped to it), the second waits ~1 s for its 200 tokens
    assert time.monotonic() - started >= 0.8


def test_config_options_build_a_throttle_inside_a_retry() -> None:
    with FakeOpenAIServer() as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=5, burst=10, tpm=90_000)
    assert isinstance(lm, RetryLM) and lm.max_retries == 3
    throttle = lm.inner
    assert isinstance(throttle, ThrottleLM)
    assert throttle.requests is not None and throttle.requests.rate == 5 and throttle.requests.burst == 10
    assert throttle.tokens is not None and throttle.tokens.rate == 1500
    assert throttle.inner.client_retries == 0  # type: ignore[attr-defined]


def test_a_throttle_needs_a_rate() -> None:
    with pytest.raises(desic.ConfigError, match="rps="):
        desic.lm.throttle(FakeLM())
    with pytest.raises(desic.ConfigError, match="burst="):
        desic.lm(FakeLM(), burst=3)


def test_callers_a_stalled_loop_wakes_late_do_not_go_out_together() -> None:
    """A process that stalls (load, a pause) past several callers' slots must not let them
    all send at once when it resumes: a caller woken well after its slot takes a new one.
    Slots of a 20/s bucket are 50 ms apart; each caller sends within half a slot of its
    own, so no 50 ms window ever holds more than two sends."""
    from desic._bucket import TokenBucket

    rate = 20.0
    bucket = TokenBucket(rate, 1)
    sent: list[float] = []

    async def caller() -> None:
        await bucket.acquire()
        sent.append(time.monotonic())

    async def main() -> None:
        tasks = [asyncio.ensure_future(caller()) for _ in range(10)]
        await asyncio.sleep(0)  # every caller has its slot: 0, 50, ..., 450 ms from now
        time.sleep(0.3)  # noqa: ASYNC251 - the loop stalls past six of them, on purpose
        await asyncio.gather(*tasks)

    asyncio.run(main())
    assert len(sent) == 10
    crowded = max(sum(1 for t in sent if s <= t < s + 1 / rate) for s in sent)
    assert crowded <= 2, [round(t - sent[0], 3) for t in sent]
