# mypy: disable-error-code="empty-body"
"""``desic.lm.retry`` and ``desic.lm.timeout``: what is retried, how long it waits, and what never is."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Iterator
from typing import Any, Literal

import pytest

import desic
from desic.events import Event, listening
from desic.lm import LMRequest, RetryLM, TimeoutLM
from desic.lm._middleware import unwrap  # private: no public way to the innermost LM
from desic.lm._openai import _retry_after  # private: unit test of the Retry-After parser
from desic.testing import (
    FakeLM,
    FakeOpenAIServer,
    Faults,
    FunctionLM,
    HTTPFault,
    allow_model_requests,
)


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def openai_lm(server: FakeOpenAIServer, **options: Any) -> Any:
    return desic.lm("openai:fake-model", base_url=server.url, api_key="test", **options)


def fast_retry(inner: Any, max_retries: int = 3, **options: Any) -> RetryLM:
    return desic.lm.retry(inner, max_retries, initial=0.01, jitter=0.01, **options)


class Script:
    """A handler failing with the given faults first, then answering; records arrival times."""

    def __init__(self, *faults: HTTPFault | str):
        self.faults = list(faults)
        self.times: list[float] = []

    def __call__(self, req: dict[str, Any]) -> Any:
        self.times.append(time.monotonic())
        if self.faults:
            fault = self.faults.pop(0)
            if isinstance(fault, HTTPFault):
                raise fault
            return fault  # a bad answer (for validation errors)
        return {"output": "tech"}


def rate_limited(seconds: str) -> HTTPFault:
    return HTTPFault(429, "slow down", headers={"Retry-After": seconds}, code="rate_limit_exceeded")


# --- what is retried --------------------------------------------------------------------------


def test_retry_honours_retry_after() -> None:
    script = Script(rate_limited("0.3"), rate_limited("0.2"))
    seen: list[Event] = []
    with FakeOpenAIServer(handler=script) as server:
        lm = fast_retry(openai_lm(server, client_retries=0))
        with desic.context(lm=lm), listening(seen.append):
            assert team(ticket="crash") == "tech"
    first, second, third = script.times
    # the backoff alone would wait ~0.01 s: the server's Retry-After rules (plus up to 10%),
    # read from the waits the retry asked for; the arrival gaps may only be longer (load)
    waits = [e.data["wait"] for e in seen if e.kind == "lm_retry"]
    assert len(waits) == 2
    assert 0.3 <= waits[0] <= 0.3 * 1.1 and 0.2 <= waits[1] <= 0.2 * 1.1
    assert second - first >= 0.3 and third - second >= 0.2


def test_retry_after_longer_than_max_wait_is_not_waited_for() -> None:
    script = Script(rate_limited("60"))
    with FakeOpenAIServer(handler=script) as server:
        lm = fast_retry(openai_lm(server, client_retries=0), max_wait=5)
        seen: list[Event] = []
        with desic.context(lm=lm), listening(seen.append), pytest.raises(desic.RateLimited) as info:
            team(ticket="x")
    assert info.value.retry_after == 60
    assert len(script.times) == 1
    assert not [e for e in seen if e.kind == "lm_retry"]  # raised at once: no wait before a retry


def test_openai_provider_reads_retry_after_headers() -> None:
    class Response:
        def __init__(self, **headers: str):
            self.headers = headers

    assert _retry_after(Response(**{"retry-after": "7"})) == 7.0
    assert _retry_after(Response(**{"retry-after": "1.5", "retry-after-ms": "1250"})) == 1.25
    in_a_minute = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(time.time() + 60))
    assert 55 < (_retry_after(Response(**{"retry-after": in_a_minute})) or 0) <= 60
    assert _retry_after(Response(**{"retry-after": "soon"})) is None
    assert _retry_after(Response()) is None


@pytest.mark.parametrize(
    "fault",
    [
        HTTPFault(500, "boom"),
        HTTPFault(503, "overloaded"),
        HTTPFault(408, "request timeout"),
        rate_limited("0"),
    ],
    ids=["500", "503", "408", "429"],
)
def test_transient_http_errors_are_retried(fault: HTTPFault) -> None:
    script = Script(fault, fault)
    with FakeOpenAIServer(handler=script) as server, desic.context(
        lm=fast_retry(openai_lm(server, client_retries=0))
    ):
        assert team(ticket="x") == "tech"
    assert len(script.times) == 3


def test_malformed_responses_and_timeouts_are_retried() -> None:
    faults = Faults(rate_malformed=0.3, rate_slow=0.3, slow_seconds=1.0)
    with FakeOpenAIServer(handler=lambda req: {"output": "billing"}, faults=faults, seed=3) as server:
        # validation_retries=0: instructor would otherwise re-send a malformed body itself
        provider = openai_lm(server, client_retries=0, validation_retries=0)
        lm = fast_retry(desic.lm.timeout(provider, 0.2), max_retries=10)
        seen: list[Event] = []
        with desic.context(lm=lm), listening(seen.append):
            for i in range(6):
                assert team(ticket=f"t{i}") == "billing"
        assert server.counts["malformed"] > 0 and server.counts["slow"] > 0
    errors = " ".join(e.data["error"] for e in seen if e.kind == "lm_retry")
    assert "Timeout" in errors and "malformed" in errors


def test_connection_errors_are_retried() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lm = fast_retry(
        desic.lm("openai:m", base_url=f"http://127.0.0.1:{port}/v1", api_key="x", client_retries=0),
        max_retries=2,
    )
    seen: list[Event] = []
    with desic.context(lm=lm), listening(seen.append), pytest.raises(desic.LMError, match="cannot reach"):
        team(ticket="x")
    assert [e.data["attempt"] for e in seen if e.kind == "lm_retry"] == [1, 2]


@pytest.mark.parametrize(
    ("fault", "error"),
    [
        (HTTPFault(400, "bad request"), desic.LMError),
        (HTTPFault(401, "bad key"), desic.ConfigError),
        (HTTPFault(404, "no such model"), desic.LMError),
        (HTTPFault(422, "unprocessable"), desic.LMError),
    ],
    ids=["400", "401", "404", "422"],
)
def test_client_errors_are_never_retried(fault: HTTPFault, error: type[Exception]) -> None:
    script = Script(fault)
    with (
        FakeOpenAIServer(handler=script) as server,
        desic.context(lm=fast_retry(openai_lm(server, client_retries=0))),
        pytest.raises(error) as info,
    ):
        team(ticket="x")
    assert len(script.times) == 1
    assert not isinstance(info.value, (desic.RateLimited, desic.Timeout))


def test_output_validation_errors_are_never_retried() -> None:
    bad = '{"output": "sales"}'
    script = Script(bad, bad, bad, bad)
    with FakeOpenAIServer(handler=script) as server:
        lm = fast_retry(openai_lm(server, client_retries=0, validation_retries=1))
        with desic.context(lm=lm), pytest.raises(desic.OutputValidationError) as info:
            team(ticket="x")
    assert len(script.times) == 2  # instructor's one re-ask, and no retry on top
    assert info.value.raw == bad
    assert "output" in str(info.value.errors)


def test_each_retry_is_logged_and_emitted(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    def flaky(request: LMRequest) -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise desic.RateLimited("429 (fake)", retry_after=0.01)
        return "tech"

    seen: list[Event] = []
    lm = fast_retry(FunctionLM(flaky, name="flaky"))
    with (
        caplog.at_level(logging.INFO, logger="desic.lm"),
        listening(seen.append),
        desic.context(lm=lm),
    ):
        assert team(ticket="x") == "tech"
    retries = [e for e in seen if e.kind == "lm_retry"]
    assert [e.data["attempt"] for e in retries] == [1, 2]
    assert all(e.data["lm"] == "flaky" and "RateLimited" in e.data["error"] for e in retries)
    assert all(e.data["wait"] >= 0.01 for e in retries)
    logged = [r for r in caplog.records if "retrying" in r.getMessage()]
    assert len(logged) == 2 and "flaky" in logged[0].getMessage()


def test_gives_up_after_max_retries_with_the_last_error() -> None:
    calls = 0

    def down(request: LMRequest) -> str:
        nonlocal calls
        calls += 1
        raise desic.Timeout(f"attempt {calls} timed out")

    with (
        desic.context(lm=fast_retry(FunctionLM(down), max_retries=2)),
        pytest.raises(desic.Timeout, match="attempt 3"),
    ):
        team(ticket="x")
    assert calls == 3


def test_plain_lm_errors_and_other_exceptions_are_not_retried() -> None:
    for exc in (desic.LMError("a bug"), ValueError("a bug"), desic.ConfigError("no key")):
        calls = 0

        def broken(request: LMRequest, exc: Exception = exc) -> str:
            nonlocal calls
            calls += 1
            raise exc

        with desic.context(lm=fast_retry(FunctionLM(broken))), pytest.raises(type(exc)):
            team(ticket="x")
        assert calls == 1


def test_embeddings_are_retried_too() -> None:
    script = [HTTPFault(503, "busy")]

    def handler(req: dict[str, Any]) -> Any:  # chat only; embeddings fail through _embeddings
        raise AssertionError("no chat expected")

    class FlakyEmbeddings(FakeOpenAIServer):
        def _embeddings(self, req: dict[str, Any]) -> dict[str, Any]:
            if script:
                raise script.pop()
            return super()._embeddings(req)

    with FlakyEmbeddings(handler=handler) as server:
        lm = fast_retry(openai_lm(server, client_retries=0))
        vectors = lm.embed_sync(["hello", "world"])
        assert server.counts["http_503"] == 1
    assert len(vectors) == 2 and len(vectors[0]) == 64


# --- config: desic does the retrying ----------------------------------------------------------


def test_config_retries_turn_the_client_retries_off() -> None:
    with FakeOpenAIServer(faults=Faults(rate_500=1.0)) as server:
        lm = openai_lm(server, retries=2)
        assert isinstance(lm, RetryLM) and lm.max_retries == 2
        assert unwrap(lm).client_retries == 0  # type: ignore[attr-defined]
        lm.initial = lm.jitter = 0.01
        with desic.context(lm=lm), pytest.raises(desic.LMError, match="HTTP 500"):
            team(ticket="x")
        assert server.counts["500"] == 3  # 1 + 2 retries, not (1 + 2) * (1 + client retries)


def test_without_middleware_options_the_provider_is_returned_as_is() -> None:
    with FakeOpenAIServer() as server:
        lm = openai_lm(server)
    assert type(lm).__name__ == "OpenAILM"
    assert lm.client_retries == 2


# --- timeout ----------------------------------------------------------------------------------


def test_timeout_raises_desic_timeout() -> None:
    finished: list[bool] = []

    async def two_seconds(request: LMRequest) -> str:
        try:
            await asyncio.sleep(2.0)
        except asyncio.CancelledError:
            finished.append(False)
            raise
        finished.append(True)
        return "tech"

    lm = desic.lm.timeout(FunctionLM(two_seconds, name="slow"), 0.1)
    assert isinstance(lm, TimeoutLM)
    with desic.context(lm=lm), pytest.raises(desic.Timeout, match=r"slow: no answer within 0\.1s"):
        team(ticket="x")
    assert finished == [False]  # the slow call was cut short, not waited for


def test_timeout_applies_to_async_calls_and_embeddings() -> None:
    lm = desic.lm.timeout(FakeLM(default="tech", latency=2.0), 0.1)

    async def main() -> None:
        with desic.context(lm=lm), pytest.raises(desic.Timeout):
            await team.acall(ticket="x")
        with pytest.raises(desic.Timeout):
            await lm.embed(["x"])

    asyncio.run(main())


def test_config_timeout_against_a_slow_server() -> None:
    # slow_seconds=30: leaving the server (stop) wakes the slow request, so it costs nothing
    with FakeOpenAIServer(faults=Faults(rate_slow=1.0, slow_seconds=30)) as server:
        lm = openai_lm(server, timeout=0.2, client_retries=0)
        assert isinstance(lm, TimeoutLM)
        with desic.context(lm=lm), pytest.raises(desic.Timeout, match=r"0\.2s"):
            team(ticket="x")
        # no answer was sent yet (the slow one takes 30 s): the client gave up without waiting
        assert server.counts["ok"] == 0


def test_timeout_inside_retry_gives_each_attempt_its_own_time() -> None:
    answers = iter([3.0, 3.0, 0.0])

    async def sometimes_slow(request: LMRequest) -> str:
        await asyncio.sleep(next(answers))
        return "tech"

    lm = fast_retry(desic.lm.timeout(FunctionLM(sometimes_slow), 0.1), max_retries=3)
    with desic.context(lm=lm):
        assert team(ticket="x") == "tech"
