"""Every HTTP request a call sends pays the throttle, not only the call's first.

One call to a provider may send several HTTP requests: instructor re-asks the model when
an answer does not validate (or the body is broken, or the server refused), and the openai
client retries on its own. ``ThrottleLM`` pays for a call's first request before the call,
outside its timeout; the later ones pay as they are sent: the provider's HTTP client
awaits :func:`pace` before each request (an httpx request hook), which finds the
throttles the call runs under in a context variable (the hook runs in the call's task).

Waiting for the throttle never counts against a timeout: the time a later request waits
is added to the deadline of each ``TimeoutLM`` inside the throttle that paid it.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager

__all__ = ["Paid", "counting", "entered", "pace"]


class Paid:
    """One throttled call: its first request is paid for, later ones ``reserve`` a slot."""

    __slots__ = ("reserve", "sent")

    def __init__(self, reserve: Callable[[], float | Awaitable[float]]):
        # takes a request slot; returns the seconds to wait for it (a bucket shared by a
        # cluster, desic.executors, answers in an awaitable)
        self.reserve = reserve
        self.sent = 0


_Entry = Paid | asyncio.Timeout
_scope: contextvars.ContextVar[tuple[_Entry, ...]] = contextvars.ContextVar(
    "desic_lm_pacing", default=()
)


@contextmanager
def entered(entry: _Entry) -> Iterator[None]:
    """Run the block inside ``entry`` (a throttled call or a timeout), outermost first."""
    token = _scope.set((*_scope.get(), entry))
    try:
        yield
    finally:
        _scope.reset(token)


_sent: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar("desic_lm_sent", default=None)


@contextmanager
def counting() -> Iterator[list[int]]:
    """Count the HTTP requests sent in this block (``box[0]``): the requests one call made,
    re-asks and the client's own retries included, for its usage."""
    box = [0]
    token = _sent.set(box)
    try:
        yield box
    finally:
        _sent.reset(token)


async def pace(*_: object) -> None:
    """Called before each HTTP request a provider sends (any arguments are ignored)."""
    box = _sent.get()
    if box is not None:
        box[0] += 1
    scope = _scope.get()
    for i, entry in enumerate(scope):
        if not isinstance(entry, Paid):
            continue
        entry.sent += 1
        if entry.sent == 1:
            continue  # paid before the call began
        reserved = entry.reserve()
        wait = reserved if isinstance(reserved, (int, float)) else await reserved
        if wait > 0:
            for inner in scope[i + 1 :]:
                if isinstance(inner, asyncio.Timeout) and (when := inner.when()) is not None:
                    inner.reschedule(when + wait)
            await asyncio.sleep(wait)
