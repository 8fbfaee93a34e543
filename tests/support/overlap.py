"""Show that calls ran concurrently without timing them (a loaded machine must not fail a test).

``InFlight(target)`` counts the calls inside it and their peak. Until ``target`` calls have
been inside together, each one waits for the others to arrive (for ``timeout`` seconds in
all, counted from the first call; after that nobody waits). Code that really runs
``target`` calls at once reaches ``peak == target`` however slow the machine is; code
that runs fewer at once (one after the other, small batches) never does, and the test
asserting ``peak == target`` fails after ``timeout`` seconds.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager


class InFlight:
    def __init__(self, target: int, timeout: float = 10.0):
        self.target = target
        self.timeout = timeout
        self.now = 0
        self.peak = 0
        self._cond = threading.Condition()
        self._deadline: float | None = None

    def _enter(self) -> None:
        with self._cond:
            self.now += 1
            self.peak = max(self.peak, self.now)
            if self._deadline is None:
                self._deadline = time.monotonic() + self.timeout
            self._cond.notify_all()

    def _exit(self) -> None:
        with self._cond:
            self.now -= 1

    def _waiting(self) -> float:
        """Seconds left to wait for the others (0: go on)."""
        assert self._deadline is not None
        return 0.0 if self.peak >= self.target else max(0.0, self._deadline - time.monotonic())

    @contextmanager
    def sync(self) -> Iterator[None]:
        self._enter()
        try:
            with self._cond:
                while (left := self._waiting()) > 0:
                    self._cond.wait(left)
            yield
        finally:
            self._exit()

    @asynccontextmanager
    async def aio(self) -> AsyncIterator[None]:
        self._enter()
        try:
            while self._waiting() > 0:
                await asyncio.sleep(0.002)
            yield
        finally:
            self._exit()
