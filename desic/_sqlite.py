"""Retrying sqlite's immediate "database is locked" (the LM cache and the run store share it)."""

from __future__ import annotations

import random
import sqlite3
import time
from collections.abc import Callable
from typing import TypeVar

__all__ = ["retry_sqlite_busy"]

T = TypeVar("T")


def retry_sqlite_busy(operation: Callable[[], T], timeout: float) -> T:
    """Run ``operation``, again after a short jittered sleep while sqlite says busy/locked.

    sqlite's busy timeout does not cover every case: a connection that would deadlock
    (several processes switching one new file to WAL, each holding a shared lock) is
    told "database is locked" at once. Other errors, and busy past ``timeout`` seconds,
    are raised.
    """
    deadline = time.monotonic() + timeout
    delay = 0.002
    while True:
        try:
            return operation()
        except sqlite3.OperationalError as exc:
            message = str(exc)
            if ("locked" not in message and "busy" not in message) or time.monotonic() >= deadline:
                raise
        time.sleep(delay * (0.5 + random.random()))
        delay = min(delay * 2, 0.1)
