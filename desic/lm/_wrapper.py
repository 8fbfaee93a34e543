"""The base of LMs that wrap another LM (retry, throttle, timeout, cache).

A wrapper is an LM itself, so wrappers compose in any order; what it does not change it
hands to ``inner``: the name, the artifact description (a cache or a throttle does not
change the answers, so compile records and artifacts see the wrapped model), embeddings,
streams, and whether the model takes images (``vision``).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractContextManager
from typing import Any

from pydantic import BaseModel

from . import LM, BaseLM, LMRequest, LMResponse, stream_of, supports_images


class WrapperLM(BaseLM):
    def __init__(self, inner: LM):
        if not isinstance(inner, LM):
            raise TypeError(f"expected an LM (name, request, describe), got {inner!r}")
        self.inner = inner
        self.name = inner.name
        self.vision = supports_images(inner)

    async def request(self, request: LMRequest) -> LMResponse:
        return await self.inner.request(request)

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        async for item in stepped(stream_of(self.inner, request)):
            yield item

    async def prepare(self, op: str = "request") -> None:
        await prepare(self.inner, op)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        embed = getattr(self.inner, "embed", None)
        if embed is None:
            return await super().embed(texts)
        result: list[list[float]] = await embed(texts)
        return result

    def describe(self) -> dict[str, Any]:
        return self.inner.describe()

    def unpriced(self) -> str | None:
        method = getattr(self.inner, "unpriced", None)
        return method() if method is not None else None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.inner!r}>"


async def prepare(lm: LM, op: str = "request") -> None:
    """``lm.prepare(op)`` for LMs that have it (an ``LM`` need not be a ``BaseLM``)."""
    method = getattr(lm, "prepare", None)
    if method is not None:
        await method(op)


def unwrap(lm: LM) -> LM:
    """The innermost LM under any number of wrappers."""
    while isinstance(lm, WrapperLM):
        lm = lm.inner
    return lm


async def stepped(
    items: AsyncIterator[BaseModel | LMResponse],
    scope: Callable[[], AbstractContextManager[Any]] | None = None,
) -> AsyncIterator[BaseModel | LMResponse]:
    """``items``, each step taken inside ``scope()`` (a context a wrapper sets for the
    call, e.g. its throttle), and closed when the consumer stops early.

    The context covers the wrapped stream's work only, never the consumer's code between
    two items (which may make calls of its own).
    """
    try:
        while True:
            if scope is None:
                try:
                    item = await items.__anext__()
                except StopAsyncIteration:
                    return
            else:
                with scope():
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        return
            yield item
    finally:
        aclose = getattr(items, "aclose", None)
        if aclose is not None:
            await aclose()
