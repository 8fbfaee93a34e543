"""A hang detector for tests of bounded work (no tests here)."""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Iterator
from typing import Any


class Hung(BaseException):
    """Raised by ``deadline``; a BaseException so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def deadline(seconds: float = 20.0) -> Iterator[None]:
    """Fail (rather than hang the suite) if the block runs away; a hang detector, not a timing
    assertion: the limits under test bound the work far below this."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
