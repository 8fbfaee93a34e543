"""``retry``: try again on failures that a later attempt can fix, with jittered backoff.

Retried: ``RateLimited`` (429; its ``retry_after`` from the server's Retry-After header is
waited for, not guessed), ``Timeout``, and ``LMError``s a provider marked transient (5xx,
408/409, dropped or refused connections, a malformed response body); Python's own
``ConnectionError``/``TimeoutError`` from custom LMs too. Never retried: other 4xx, a
refused key (``ConfigError``), ``OutputValidationError`` (instructor already re-asked the
model; asking again the same way will not help), or anything else.

Backoff is exponential with jitter (``initial * 2**n`` plus a random ``jitter``, as in
tenacity's ``wait_exponential_jitter``), so a crowd of callers rejected together does not
come back together. Each retry is logged on the
``desic.lm`` logger and emitted as an ``lm_retry`` event. tenacity loads on first call.

With the ``openai`` provider, a response body that is not JSON at all is first retried by
instructor itself (within ``validation_retries``, each request paying any throttle the
call runs under), then here with backoff.

A stream (``stream``) is retried only until its first item: once a partial output has
reached the caller, a failure is raised as it is (the caller has seen part of an answer
that a new attempt would contradict).
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import BaseModel

from .. import events
from .._redact import get_logger
from ..errors import ConfigError, LMError, OutputValidationError, RateLimited, Timeout
from . import LM, LMRequest, LMResponse, Usage, stream_of
from ._wrapper import WrapperLM

if TYPE_CHECKING:
    from tenacity import RetryCallState

log = get_logger("desic.lm")
T = TypeVar("T")
E = TypeVar("E", bound=BaseException)


def transient(exc: E, status: int | None = None) -> E:
    """Mark ``exc`` as worth retrying (what providers do for 5xx and connection errors)."""
    exc.retryable = True  # type: ignore[attr-defined]
    if status is not None:
        exc.status_code = status  # type: ignore[attr-defined]
    return exc


def is_retryable(exc: BaseException) -> bool:
    """Whether a later attempt may succeed where this one failed."""
    if isinstance(exc, (OutputValidationError, ConfigError)):
        return False
    if isinstance(exc, (RateLimited, Timeout)):
        return True
    if isinstance(exc, LMError):
        return bool(getattr(exc, "retryable", False))
    return isinstance(exc, (ConnectionError, TimeoutError))


class RetryLM(WrapperLM):
    """Retries requests and embeddings up to ``max_retries`` times.

    Waits ``initial * 2**n`` seconds (plus up to ``jitter`` at random, at most
    ``max_wait``) between attempts; a rate limit with a Retry-After waits that long (plus
    up to 10%). A Retry-After longer than ``max_wait`` is not waited for: the
    ``RateLimited`` error is raised at once (a caller with a budget would rather know).
    """

    def __init__(
        self,
        inner: LM,
        max_retries: int = 3,
        *,
        initial: float = 0.5,
        max_wait: float = 30.0,
        jitter: float | None = None,
    ):
        super().__init__(inner)
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.max_retries = max_retries
        self.initial = initial
        self.max_wait = max_wait
        self.jitter = initial if jitter is None else jitter

    async def request(self, request: LMRequest) -> LMResponse:
        return await self._run(self.inner.request, request)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        return await self._run(super().embed, texts)

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        spent = Usage()
        attempt = 0
        while True:
            attempt += 1
            items = stream_of(self.inner, request)
            try:
                first = await items.__anext__()
            except StopAsyncIteration:
                return
            except Exception as exc:
                await _close(items)
                if isinstance(exc, LMError):
                    if exc.usage is not None:
                        spent = spent + exc.usage
                    exc.usage = spent if spent.calls or spent.total_tokens else exc.usage
                retry_after = _retry_after_of(exc)
                if (
                    not is_retryable(exc)
                    or attempt > self.max_retries
                    or (retry_after is not None and retry_after > self.max_wait)
                ):
                    raise
                wait = self._delay(attempt, retry_after)
                self._log_retry(attempt, exc, wait)
                await asyncio.sleep(wait)
                continue
            break
        try:  # no retry past the first item
            yield self._with_spent(first, spent)
            async for item in items:
                yield self._with_spent(item, spent)
        finally:
            await _close(items)

    @staticmethod
    def _with_spent(item: BaseModel | LMResponse, spent: Usage) -> BaseModel | LMResponse:
        """The final response with the usage of the failed attempts before it added."""
        if isinstance(item, LMResponse) and (spent.calls or spent.total_tokens):
            return dataclasses.replace(item, usage=item.usage + spent)
        return item

    async def _run(self, fn: Callable[[Any], Awaitable[T]], arg: Any) -> T:
        from tenacity import AsyncRetrying, retry_if_exception

        retrying = AsyncRetrying(
            stop=self._stop,
            wait=self._wait,
            retry=retry_if_exception(is_retryable),
            before_sleep=self._before_sleep,
            reraise=True,
        )
        spent = Usage()  # what the failed attempts consumed: it counts too
        async for attempt in retrying:
            with attempt:
                try:
                    result = await fn(arg)
                except LMError as exc:
                    if exc.usage is not None:
                        spent = spent + exc.usage
                    exc.usage = spent if spent.calls or spent.total_tokens else exc.usage
                    raise
                if isinstance(result, LMResponse) and (spent.calls or spent.total_tokens):
                    result = dataclasses.replace(result, usage=result.usage + spent)
                return result
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _stop(self, state: RetryCallState) -> bool:
        if state.attempt_number > self.max_retries:
            return True
        retry_after = _retry_after(state)
        return retry_after is not None and retry_after > self.max_wait

    def _wait(self, state: RetryCallState) -> float:
        return self._delay(state.attempt_number, _retry_after(state))

    def _delay(self, attempt_number: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return retry_after + random.uniform(0.0, retry_after * 0.1)
        exponential = self.initial * 2.0 ** (attempt_number - 1)
        return float(min(self.max_wait, exponential + random.uniform(0.0, self.jitter)))

    def _before_sleep(self, state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome is not None else None
        wait = state.next_action.sleep if state.next_action is not None else 0.0
        self._log_retry(state.attempt_number, exc, wait)

    def _log_retry(self, attempt_number: int, exc: BaseException | None, wait: float) -> None:
        error = f"{type(exc).__name__}: {exc}"
        log.info("%s: attempt %d failed (%s); retrying in %.2fs", self.name, attempt_number, error, wait)
        events.emit("lm_retry", lm=self.name, attempt=attempt_number, wait=wait, error=error)


def _retry_after(state: RetryCallState) -> float | None:
    return _retry_after_of(state.outcome.exception() if state.outcome is not None else None)


def _retry_after_of(exc: BaseException | None) -> float | None:
    if isinstance(exc, RateLimited) and exc.retry_after is not None:
        return max(0.0, float(exc.retry_after))
    return None


async def _close(items: AsyncIterator[Any]) -> None:
    aclose = getattr(items, "aclose", None)
    if aclose is not None:
        await aclose()
