"""``throttle``: keep under a provider's rate limits instead of hitting them.

Two token buckets (``desic._bucket.TokenBucket``, GCRA: callers are scheduled, not
polled, and served in arrival order): one for requests per second with a burst, one for
tokens per minute. A request's tokens are not known before the call, so it reserves an
estimate from its messages' length and the difference is settled from the reported usage
afterwards (a debt delays later callers; an overestimate is given back). The buckets
belong to the wrapper object, so every thread and event loop calling the same LM object
shares one budget.

A call's first request is paid for before the call; the further HTTP requests one call
may send (instructor's re-asks, the openai client's own retries) each take a request slot
too, as they are sent (``desic.lm._pacing``), so a server enforcing the same rate sees it
kept. Their tokens are in the call's reported usage, settled afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

from pydantic import BaseModel

from .._bucket import TokenBucket
from ..errors import ConfigError
from . import LM, LMRequest, LMResponse, Message, message_text, stream_of
from ._pacing import Paid, entered
from ._wrapper import WrapperLM, stepped

CHARS_PER_TOKEN = 4


def estimate_tokens(texts: Iterable[str]) -> int:
    """A rough token count (4 characters a token, a few per message for the framing)."""
    return sum(len(t) // CHARS_PER_TOKEN + 4 for t in texts) + 1


def _message_texts(messages: Iterable[Message]) -> Iterable[str]:
    return (message_text(m.get("content")) for m in messages)


class ThrottleLM(WrapperLM):
    """At most ``rps`` requests a second (``burst`` at once) and ``tpm`` tokens a minute.

    ``burst=1`` (the default) spaces requests evenly, which also satisfies servers that
    count requests in a sliding window; raise it for providers with a bucket of their own.
    ``tpm_burst`` defaults to ``tpm`` (a minute's worth may go at once).
    """

    def __init__(
        self,
        inner: LM,
        rps: float | None = None,
        burst: float = 1,
        tpm: float | None = None,
        tpm_burst: float | None = None,
    ):
        super().__init__(inner)
        if rps is None and tpm is None:
            raise ConfigError("throttle needs rps= (requests per second) and/or tpm= (tokens per minute)")
        self.rps, self.burst, self.tpm = rps, burst, tpm
        self.requests = TokenBucket(rps, burst) if rps is not None else None
        self.tokens = TokenBucket(tpm / 60.0, tpm_burst or tpm) if tpm is not None else None

    async def request(self, request: LMRequest) -> LMResponse:
        estimate = await self._acquire(estimate_tokens(_message_texts(request.messages)))
        with entered(Paid(self._later_request)):
            response = await self.inner.request(request)
        used = response.usage.total_tokens
        if used or response.meta.get("cached"):
            self._settle(estimate, used)
        return response

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        estimate = await self._acquire(estimate_tokens(_message_texts(request.messages)))
        paid = Paid(self._later_request)
        async for item in stepped(stream_of(self.inner, request), lambda: entered(paid)):
            if isinstance(item, LMResponse) and (item.usage.total_tokens or item.meta.get("cached")):
                self._settle(estimate, item.usage.total_tokens)
            yield item

    async def embed(self, texts: list[str]) -> list[list[float]]:
        await self._acquire(estimate_tokens(texts))
        with entered(Paid(self._later_request)):
            return await super().embed(texts)

    def _later_request(self) -> float:
        """A request slot for a call's second and later HTTP requests: the seconds to wait."""
        return self.requests.reserve() if self.requests is not None else 0.0

    async def _acquire(self, tokens: int) -> int:
        """Wait for a request slot and ``tokens``; returns the tokens actually reserved."""
        if self.requests is not None:
            await self.requests.acquire()
        if self.tokens is None:
            return 0
        tokens = min(tokens, int(self.tokens.burst))
        await self.tokens.acquire(tokens)
        return tokens

    def _settle(self, reserved: int, used: int) -> None:
        if self.tokens is None:
            return
        delta = min(used - reserved, self.tokens.burst)
        if delta:
            # GCRA arithmetic: a positive reservation pushes later callers back (the debt),
            # a negative one gives the overestimate back; the bucket never fills beyond full.
            self.tokens.reserve(delta)
