"""Small shared helpers: the UNSET sentinel, JSON-able conversion, running async code from
sync, retrying sqlite's immediate "database is locked"."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import random
import threading
import time
from collections.abc import Callable, Coroutine
from enum import Enum
from typing import Any, Final, TypeVar

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

T = TypeVar("T")


class _Unset(Enum):
    """"Not given", distinct from ``None``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET


_SCALARS = frozenset((str, int, float, bool, type(None)))


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for a value (pydantic models dumped in JSON mode)."""
    if type(value) in _SCALARS:
        return value  # what pydantic returns for these, without the call
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)


# --- running coroutines from synchronous code --------------------------------------------

_local = threading.local()
# The loop that owns shared async resources (throttles, clients) while an evaluation runs;
# synchronous user code in worker threads hands its LM calls back to it.
home_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "desic_home_loop", default=None
)
_pool: concurrent.futures.ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _run_on_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    return _thread_loop().run_until_complete(coro)


class _Handoff:
    """One coroutine run on another thread's loop while this thread waits.

    What ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` does, with a bare lock
    for the wait instead of a ``concurrent.futures.Future`` (its condition variable and
    callback machinery cost more than the coroutine itself for a fast LM call). The task
    runs in a copy of the calling thread's context, as there.
    """

    __slots__ = ("coro", "done", "error", "result")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def start(self, loop: asyncio.AbstractEventLoop) -> None:  # on the loop
        try:
            task = loop.create_task(self.coro)
        except BaseException as exc:  # handed to the waiting thread, then raised here too
            self.error = exc
            self.done.release()
            raise
        task.add_done_callback(self.finish)

    def finish(self, task: asyncio.Task[Any]) -> None:  # on the loop
        if task.cancelled():  # as a cancelled concurrent future reports it
            self.error = concurrent.futures.CancelledError()
        else:
            self.error = task.exception()
            if self.error is None:
                self.result = task.result()
        self.done.release()


def run_on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and wait for its result."""
    handoff = _Handoff(coro)
    try:
        loop.call_soon_threadsafe(handoff.start, loop)
    except BaseException:
        coro.close()
        raise
    handoff.done.acquire()
    if handoff.error is not None:
        error, handoff.error = handoff.error, None
        raise error
    result: T = handoff.result
    return result


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, wherever that code runs.

    - in a worker thread of an evaluation: on the evaluation's loop (shared limits);
    - in a thread with no running loop: on that thread's own persistent loop (cheap);
    - inside a running loop (a notebook): on a helper thread, so the call still completes.
    """
    running = asyncio._get_running_loop()  # None outside a loop (no exception to raise)
    if running is None:
        home = home_loop.get()
        if home is not None and home.is_running():
            return run_on_loop(home, coro)
        return _run_on_thread_loop(coro)
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=8, thread_name_prefix="desic-sync"
            )
    ctx = contextvars.copy_context()
    return _pool.submit(ctx.run, _run_on_thread_loop, coro).result()


def retry_sqlite_busy(operation: Callable[[], T], timeout: float) -> T:
    """Run ``operation``, again after a short jittered sleep while sqlite says busy/locked.

    sqlite's busy timeout does not cover every case: a connection that would deadlock
    (several processes switching one new file to WAL, each holding a shared lock) is
    told "database is locked" at once. Other errors, and busy past ``timeout`` seconds,
    are raised.
    """
    import sqlite3

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
