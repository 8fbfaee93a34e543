"""``timeout``: no call may take longer than a fixed time.

Enforced on the async path (``asyncio.timeout``), so it holds whatever the wrapped LM does
(an HTTP client's own timeout covers the network only, not a slow local model or a
queue). Put it inside ``retry`` (as ``desic.lm(..., timeout=, retries=)`` does) so each
attempt gets the full time and a timed-out attempt is retried.

The clock starts once the LM is ready: a provider's one-off set-up (importing its SDK,
building its client, starting a local server) runs before it (``BaseLM.prepare``). Time an
HTTP request of the attempt spends waiting for a throttle outside is added to the
deadline (``desic.lm._pacing``): the timeout bounds the model, not the queue.

A stream gets the same ``seconds`` for all of its items together, counting only the time
spent waiting for them (not the caller's own work between two items).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from pydantic import BaseModel

from ..errors import Timeout
from . import LM, LMRequest, LMResponse, stream_of
from ._pacing import entered
from ._wrapper import WrapperLM, prepare


class TimeoutLM(WrapperLM):
    """Raises ``desic.Timeout`` when a request or embedding takes over ``seconds``."""

    def __init__(self, inner: LM, seconds: float):
        super().__init__(inner)
        if seconds <= 0:
            raise ValueError(f"timeout must be positive, got {seconds}")
        self.seconds = float(seconds)

    async def request(self, request: LMRequest) -> LMResponse:
        await prepare(self.inner, "request")
        try:
            async with asyncio.timeout(self.seconds) as clock:
                with entered(clock):
                    return await self.inner.request(request)
        except TimeoutError as exc:
            raise self._error() from exc

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        await prepare(self.inner, "request")
        loop = asyncio.get_running_loop()
        remaining = self.seconds
        items = stream_of(self.inner, request)
        try:
            while True:
                began = loop.time()
                try:
                    async with asyncio.timeout(max(remaining, 0.0)) as clock:
                        with entered(clock):
                            item = await items.__anext__()
                except StopAsyncIteration:
                    return
                except TimeoutError as exc:
                    raise self._error() from exc
                remaining -= loop.time() - began
                yield item
        finally:
            aclose = getattr(items, "aclose", None)
            if aclose is not None:
                await aclose()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await prepare(self.inner, "embed")
        try:
            async with asyncio.timeout(self.seconds) as clock:
                with entered(clock):
                    return await super().embed(texts)
        except TimeoutError as exc:
            raise self._error() from exc

    def _error(self) -> Timeout:
        return Timeout(f"{self.name}: no answer within {self.seconds:g}s")
