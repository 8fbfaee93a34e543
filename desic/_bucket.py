"""A token bucket that every thread and event loop of the process can share.

It schedules rather than polls (GCRA): each ``acquire`` reserves the earliest instant at
which the bucket holds enough tokens, under a ``threading.Lock``, and the caller sleeps
until then (``asyncio.sleep`` or ``time.sleep``). Waiters are served in arrival order and
the long-run rate never exceeds ``rate``, while up to ``burst`` tokens may go at once.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable
from typing import Protocol


class Bucket(Protocol):
    """What a throttle needs of a bucket: this process's ``TokenBucket``, or one a whole
    cluster shares (``desic.executors``: its ``reserve`` answers in an awaitable)."""

    rate: float
    burst: float

    def reserve(self, tokens: float = 1.0) -> float | Awaitable[float]: ...

    async def acquire(self, tokens: float = 1.0) -> float: ...


#: how late (seconds) after its slot a caller may still go (at most half a slot)
LATE = 0.05
#: how many new slots a caller woken late takes before it goes anyway
LATE_RETRIES = 8


class TokenBucket:
    def __init__(self, rate: float, burst: float = 1.0):
        if rate <= 0:
            raise ValueError(f"rate must be positive, got {rate}")
        if burst < 1:
            raise ValueError(f"burst must be at least 1, got {burst}")
        self.rate = float(rate)
        self.burst = float(burst)
        self._lock = threading.Lock()
        # The "theoretical arrival time": when the bucket will be full again.
        self._tat = 0.0

    def reserve(self, tokens: float = 1.0) -> float:
        """Reserve ``tokens``; returns how many seconds to wait before using them."""
        if tokens > self.burst:
            raise ValueError(f"cannot take {tokens} tokens from a bucket of burst {self.burst}")
        now = time.monotonic()
        increment = tokens / self.rate
        tolerance = self.burst / self.rate
        with self._lock:
            tat = max(self._tat, now)
            allowed_at = tat + increment - tolerance
            self._tat = tat + increment
        return max(0.0, allowed_at - now)

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait (asynchronously) until ``tokens`` may be used; returns the time waited.

        A caller woken well after its slot (more than half a slot, at most ``LATE``
        seconds: its event loop stalled under load or a pause) takes a new slot instead of
        going now, when it would go out together with every caller due during the stall,
        a burst the rate does not allow. The missed slot is lost: a stall costs
        throughput, never a burst.
        """
        started = time.monotonic()
        late = min(LATE, 0.5 * tokens / self.rate)
        for _ in range(LATE_RETRIES):
            wait = self.reserve(tokens)
            if wait <= 0:
                break
            due = time.monotonic() + wait
            await asyncio.sleep(wait)
            if time.monotonic() - due <= late:
                break
        return time.monotonic() - started

    def acquire_sync(self, tokens: float = 1.0) -> float:
        wait = self.reserve(tokens)
        if wait > 0:
            time.sleep(wait)
        return wait
