"""Running async code from sync code, and the one pool of worker threads.

- ``run_sync(coro)`` runs a coroutine to completion from synchronous code, wherever that
  code runs (see its docstring);
- ``workers()`` is the process's only pool of threads: synchronous pipeline rows of an
  evaluation or compile, ``Pipeline.arun`` of a synchronous pipeline, and ``run_sync``
  called inside a running event loop all run there;
- ``home_loop`` is the loop that owns the shared async resources (throttles, clients)
  while an evaluation runs: synchronous user code in worker threads hands its LM calls
  back to it with ``run_on_loop``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import queue
import threading
import weakref
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

__all__ = ["ThreadWorkers", "home_loop", "run_on_loop", "run_sync", "running_loop", "workers"]

T = TypeVar("T")

home_loop: contextvars.ContextVar[asyncio.AbstractEventLoop | None] = contextvars.ContextVar(
    "desic_home_loop", default=None
)


def running_loop() -> asyncio.AbstractEventLoop | None:
    """The event loop running in this thread, or None."""
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


class _Waiter:
    """A result handed from a worker thread to a thread blocked on a bare lock."""

    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = threading.Lock()
        self.done.acquire()
        self.result: Any = None
        self.error: BaseException | None = None

    def settle(self, result: Any, error: BaseException | None) -> None:
        self.result, self.error = result, error
        self.done.release()

    def wait(self) -> Any:
        self.done.acquire()
        if self.error is not None:
            error, self.error = self.error, None
            raise error
        return self.result


class ThreadWorkers:
    """Long-lived threads that run synchronous work for event loops and blocked callers.

    What ``loop.run_in_executor`` over a ``ThreadPoolExecutor`` does, for less: a job is
    a tuple on a queue and its result goes back with one ``call_soon_threadsafe``, with
    no ``concurrent.futures.Future`` (condition variable, callbacks) in between. Threads
    are started as jobs find none idle, up to ``size``, and then wait for the next job.
    A job whose future was cancelled before a thread took it is not run. ``call`` (a
    blocking caller) never waits for a thread to free up: it starts one past ``size`` if
    needed, so a caller holding a worker thread cannot deadlock the pool.
    """

    def __init__(self, size: int, name: str = "desic-worker") -> None:
        self.size = size
        self._name = name
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads = 0
        self._idle = 0  # threads waiting for a job
        self._queued = 0  # jobs no thread has taken yet

    def submit(self, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        """``fn(*args)`` in a worker thread; the future resolves on the running loop."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._put((loop, future, fn, args), bounded=True)
        return future

    def call(self, fn: Callable[..., T], *args: Any) -> T:
        """``fn(*args)`` in a worker thread, waiting here (a blocking thread) for the result."""
        waiter = _Waiter()
        self._put((None, waiter, fn, args), bounded=False)
        result: T = waiter.wait()
        return result

    def _put(self, job: tuple[Any, ...], *, bounded: bool) -> None:
        self._jobs.put(job)
        with self._lock:
            self._queued += 1
            if self._queued <= self._idle or (bounded and self._threads >= self.size):
                return  # a waiting thread takes it, or it waits for a thread
            self._threads += 1
            self._idle += 1  # the new thread, about to wait for a job
            number = self._threads
        threading.Thread(target=self._serve, name=f"{self._name}_{number}", daemon=True).start()

    def _serve(self) -> None:
        jobs, lock = self._jobs, self._lock
        while True:
            loop, future, fn, args = jobs.get()
            with lock:
                self._queued -= 1
                self._idle -= 1
            if loop is None:  # a blocked caller waits on ``future`` (a _Waiter)
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - raised in the waiting thread
                    future.settle(None, exc)
                else:
                    future.settle(result, None)
                    result = None
            elif not future.cancelled():
                try:
                    result = fn(*args)
                except BaseException as exc:  # noqa: BLE001 - raised where the future is awaited
                    _hand_back(loop, future, None, exc)
                else:
                    _hand_back(loop, future, result, None)
                    result = None
            loop = future = fn = args = None
            with lock:
                self._idle += 1


def _hand_back(loop: asyncio.AbstractEventLoop, future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    try:
        loop.call_soon_threadsafe(_settle, future, result, error)
    except RuntimeError:  # the loop is closed: nobody waits for this row any more
        pass


def _settle(future: asyncio.Future[Any], result: Any, error: BaseException | None) -> None:
    if future.cancelled():
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(result)


_pool: ThreadWorkers | None = None
_pool_lock = threading.Lock()


def workers(size: int = 8) -> ThreadWorkers:
    """The process-wide worker threads, grown to the largest ``size`` asked for.

    Threads are reused across evaluations (an optimizer evaluates hundreds of candidates)
    and started only as work needs them.
    """
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = ThreadWorkers(size)
        elif _pool.size < size:
            _pool.size = size
        return _pool


# --- running coroutines from synchronous code --------------------------------------------

_local = threading.local()
# Loops whose run was interrupted, while their tasks are being cancelled.
_winding_down: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()


def _thread_loop() -> asyncio.AbstractEventLoop:
    loop: asyncio.AbstractEventLoop | None = getattr(_local, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _local.loop = loop
    return loop


def _run_on_thread_loop(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on this thread's persistent loop.

    If it ends with an interrupt (Ctrl-C, SIGTERM turned into one, SystemExit) or a
    cancellation, every task still on the loop is cancelled at once and the loop is
    dropped: nothing of the interrupted work may run again at this thread's next call.
    """
    loop = _thread_loop()
    try:
        return loop.run_until_complete(coro)
    except (KeyboardInterrupt, SystemExit, asyncio.CancelledError, concurrent.futures.CancelledError) as exc:
        _cancel_all(loop, f"interrupted by {type(exc).__name__}")
        raise


def _cancel_all(loop: asyncio.AbstractEventLoop, why: str) -> None:
    """Cancel every task of ``loop``, let the cancellations run (a few seconds at most; a
    second interrupt cuts them short), then close the loop and forget it."""
    _local.loop = None  # whatever happens next, this thread starts a new loop next time
    _winding_down.add(loop)  # LM calls handed over from worker threads are refused now
    pending = [t for t in asyncio.all_tasks(loop) if not t.done()]
    for task in pending:
        task.cancel(why)
    try:
        if pending:
            loop.run_until_complete(asyncio.wait(pending, timeout=CANCEL_SECONDS))
    finally:
        if not any(not t.done() for t in pending):
            loop.close()


#: how long the tasks of an interrupted run get to wind down (close connections, ...)
CANCEL_SECONDS = 5.0


class _Handoff:
    """One coroutine run on another thread's loop while this thread waits.

    What ``asyncio.run_coroutine_threadsafe(coro, loop).result()`` does, with a bare lock
    for the wait instead of a ``concurrent.futures.Future`` (its condition variable and
    callback machinery cost more than the coroutine itself for a fast LM call). The task
    runs in a copy of the calling thread's context, as there.
    """

    __slots__ = ("coro", "waiter")

    def __init__(self, coro: Coroutine[Any, Any, Any]) -> None:
        self.coro = coro
        self.waiter = _Waiter()

    def start(self, loop: asyncio.AbstractEventLoop) -> None:  # on the loop
        if loop in _winding_down:  # the run was interrupted: this call must not start
            self.coro.close()
            self.waiter.settle(None, concurrent.futures.CancelledError())
            return
        try:
            task = loop.create_task(self.coro)
        except BaseException as exc:  # handed to the waiting thread, then raised here too
            self.waiter.settle(None, exc)
            raise
        task.add_done_callback(self.finish)

    def finish(self, task: asyncio.Task[Any]) -> None:  # on the loop
        if task.cancelled():  # as a cancelled concurrent future reports it
            self.waiter.settle(None, concurrent.futures.CancelledError())
        else:
            error = task.exception()
            self.waiter.settle(task.result() if error is None else None, error)


def run_on_loop(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` on ``loop`` (running in another thread) and wait for its result."""
    handoff = _Handoff(coro)
    try:
        loop.call_soon_threadsafe(handoff.start, loop)
    except BaseException:
        coro.close()
        raise
    result: T = handoff.waiter.wait()
    return result


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` to completion from synchronous code, wherever that code runs.

    - in a worker thread of an evaluation: on the evaluation's loop (shared limits);
    - in a thread with no running loop: on that thread's own persistent loop (cheap);
    - inside a running loop (a notebook): on a worker thread, so the call still completes.
    """
    if running_loop() is None:
        home = home_loop.get()
        if home is not None:  # a worker thread of an evaluation
            if home.is_running() and home not in _winding_down:
                return run_on_loop(home, coro)
            coro.close()  # its evaluation is over (interrupted): no call starts on its behalf
            raise asyncio.CancelledError("the evaluation this call belongs to was cancelled")
        return _run_on_thread_loop(coro)
    ctx = contextvars.copy_context()
    result: T = workers().call(ctx.run, _run_on_thread_loop, coro)
    return result
