"""What runs inside the Ray cluster: the worker actor and the cluster-wide limiter.

Both are plain classes; the driver (:mod:`desic.executors._ray`) makes them Ray actors.
Nothing here imports ray: a worker reaches other actors through the handles it is given.

A ``Worker`` is long-lived and runs jobs on its own event loop (Ray's loop of an async
actor), at most ``concurrency`` at once over every batch it holds, in the order they came.
Synchronous pipelines run on the worker's threads and hand their LM calls back to its
loop, as on one machine. Outcomes stream back in chunks: whatever finished since the last
chunk, with the events the runs emitted.

The ``Limiter`` keeps the rate buckets of every throttled LM of a run for the whole
cluster (GCRA on wall-clock time): a worker's throttle asks it for a slot and waits until
the instant it is given, so R requests a second hold across all workers together.
"""

from __future__ import annotations

import asyncio
import collections
import importlib
import time
from collections.abc import AsyncIterator
from contextlib import nullcontext
from typing import Any

from .. import events, ir
from .._aio import home_loop, workers
from .._json import to_jsonable
from ..data import Example
from ..engine import RunOutcome, run_one
from ..errors import DataError
from ..lm import LM
from ..lm.guard import allow_model_requests, refuse_model_requests
from ..lm.portable import lm_from_config
from ..pipeline import Pipeline, as_pipeline
from ..render import leave_one_out
from ._codec import NodeBytes, decode, encode, encode_outcome

__all__ = ["Limiter", "SharedBucket", "Worker", "import_pipeline"]


class Limiter:
    """Token buckets shared by a cluster, by name: ``reserve`` answers the wall-clock
    instant at which the tokens may be used."""

    def __init__(self) -> None:
        self._tat: dict[str, float] = {}

    async def reserve(self, key: str, rate: float, burst: float, tokens: float) -> float:
        now = time.time()
        tat = max(self._tat.get(key, 0.0), now)
        allowed = tat + tokens / rate - burst / rate
        self._tat[key] = tat + tokens / rate
        return max(now, allowed)


class SharedBucket:
    """A throttle's bucket drawn from the cluster's ``Limiter`` (see ``desic._bucket.Bucket``)."""

    def __init__(self, limiter: Any, key: str, rate: float, burst: float) -> None:
        self.rate = float(rate)
        self.burst = float(burst)
        self._limiter = limiter
        self._key = key
        self._pending: set[asyncio.Future[float]] = set()

    async def _due(self, tokens: float) -> float:
        due: float = await self._limiter.reserve.remote(self._key, self.rate, self.burst, float(tokens))
        return due

    async def _wait(self, tokens: float) -> float:
        return max(0.0, await self._due(tokens) - time.time())

    def reserve(self, tokens: float = 1.0) -> asyncio.Future[float]:
        """Reserve ``tokens``; the seconds to wait come in the returned future (already under way)."""
        task = asyncio.ensure_future(self._wait(tokens))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def acquire(self, tokens: float = 1.0) -> float:
        """Wait for the slot the limiter gives. A caller woken well after its slot (its
        process stalled: load, a pause) takes a new one rather than send late, so stalled
        callers never go out together in a burst the cluster's rate does not allow."""
        started = time.time()
        for _ in range(LATE_RETRIES):
            due = await self._due(tokens)
            wait = due - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if time.time() - due <= LATE:
                break
        return time.time() - started


#: how late (seconds) after its slot a throttled request may still be sent
LATE = 0.05
LATE_RETRIES = 8


def import_pipeline(ref: str) -> Pipeline[..., Any]:
    """The pipeline (or signature) named ``module:qualname``, imported here; a
    ``ConfigError``-worthy message (``ImportError``) says how to ship the code when not."""
    module_name, _, qualname = ref.partition(":")
    ship = (
        "ship the code to the workers: ray.init(runtime_env={'working_dir': '.'}) or "
        "runtime_env={'py_modules': [your_package]} (also desic.executors.Ray(runtime_env=...)), "
        "or install it on every node"
    )
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportError(f"a Ray worker cannot import module {module_name!r} (for the pipeline {ref!r}): {exc}; {ship}") from None
    obj: Any = module
    for part in qualname.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ImportError(
                f"a Ray worker imported {module_name!r} but it has no {qualname!r} (for the pipeline {ref!r}): "
                f"the workers may run other code than the driver; {ship}"
            )
    return as_pipeline(obj)


class Worker:
    """A long-lived Ray actor that runs jobs of batches on its own loop."""

    def __init__(self, name: str, concurrency: int, limiter: Any) -> None:
        self.name = name
        self.concurrency = max(1, concurrency)
        self.limiter = limiter
        self._pipes: dict[str, Pipeline[..., Any]] = {}
        self._lms: dict[str, asyncio.Future[LM]] = {}
        self._programs: collections.OrderedDict[str, ir.Program] = collections.OrderedDict()
        self._tasks: dict[str, set[asyncio.Task[None]]] = {}
        self._halted: set[str] = set()
        self._sem: asyncio.Semaphore | None = None
        self._nodes = NodeBytes()

    async def _build(self, config: dict[str, Any]) -> LM:
        made = lm_from_config(config, share=self._share)
        prepare = getattr(made, "prepare", None)
        if prepare is not None:  # SDK import, client: before the first row takes a rate slot
            await prepare("request")
        return made

    async def prepare(self, ref: str) -> str | None:
        """Import the pipeline ``ref``; the reason when it cannot be, else None."""
        try:
            self._pipe(ref)
        except ImportError as exc:
            return str(exc)
        except Exception as exc:  # noqa: BLE001 - sent back to the driver as text
            return f"a Ray worker failed importing the pipeline {ref!r}: {type(exc).__name__}: {exc}"
        return None

    def _pipe(self, ref: str) -> Pipeline[..., Any]:
        pipe = self._pipes.get(ref)
        if pipe is None:
            pipe = self._pipes[ref] = import_pipeline(ref)
        return pipe

    def _share(self, key: str, rate: float, burst: float) -> SharedBucket | None:
        return SharedBucket(self.limiter, key, rate, burst) if self.limiter is not None else None

    async def running(self) -> int:
        """Jobs held (running or waiting for a slot), over every run."""
        return sum(len(t) for t in self._tasks.values())

    async def halt(self, run: str) -> None:
        """Start no more jobs of ``run``: those still waiting come back as dropped."""
        self._halted.add(run)

    async def cancel(self, run: str) -> int:
        """Cancel every job of ``run`` (Ctrl-C on the driver); returns how many were held."""
        self._halted.add(run)
        tasks = self._tasks.get(run, set())
        for task in tasks:
            task.cancel()
        return len(tasks)

    async def end(self, run: str) -> None:
        """``run`` is over: forget its state."""
        self._halted.discard(run)
        self._tasks.pop(run, None)

    async def run(self, batch: bytes) -> AsyncIterator[bytes]:
        """Run a batch; yields chunks of outcomes (and events) as jobs finish."""
        b = decode(batch)
        run: str = b["run"]
        pipe = self._pipe(b["pipe"])
        config = b.get("lm_config")

        def guard() -> Any:
            # the driver decides: a test that refuses real LM calls refuses them here too,
            # and one that allows them allows them here, whatever this process imported
            return refuse_model_requests() if b.get("refuse") else allow_model_requests()

        if config is not None and b["lm"] not in self._lms:
            # set-up only (client, SDK import): each row's request is checked under guard(),
            # so a refused LM fails its rows one by one, as on the driver's machine
            with allow_model_requests():
                self._lms[b["lm"]] = asyncio.ensure_future(self._build(config))
        try:
            lm = await self._lms[b["lm"]]
        except Exception:
            self._lms.pop(b["lm"], None)  # a failed set-up is tried again with the next batch
            raise
        for pid, data in (b.get("programs") or {}).items():
            self._programs[pid] = decode(data, type=ir.Program)
            if len(self._programs) > 512:
                self._programs.popitem(last=False)
        concurrency = int(b.get("concurrency") or self.concurrency)
        if self._sem is None or concurrency != self.concurrency:
            self.concurrency = concurrency
            self._sem = asyncio.Semaphore(concurrency)
        if pipe.signature is None and not pipe.is_async:
            workers(self.concurrency)
        queue: asyncio.Queue[list[Any]] = asyncio.Queue()
        said: collections.deque[list[Any]] = collections.deque()

        def sink(event: events.Event) -> None:
            said.append(["e", event.kind, to_jsonable({**event.data, "worker": self.name}), event.time])

        loop = asyncio.get_running_loop()
        held = self._tasks.setdefault(run, set())
        token = home_loop.set(loop)
        try:
            with events.listening(sink) if b["events"] else nullcontext(), guard(), (
                leave_one_out(bool(b.get("hold_out")))
            ):
                mine = [loop.create_task(self._job(run, pipe, lm, bool(b["trace"]), job, queue)) for job in b["jobs"]]
        finally:
            home_loop.reset(token)
        for task in mine:
            held.add(task)
            task.add_done_callback(held.discard)
        left = len(mine)
        try:
            while left:
                items = [await queue.get()]
                while not queue.empty():
                    items.append(queue.get_nowait())
                left -= len(items)
                chunk: list[Any] = []
                while said:
                    chunk.append(said.popleft())
                chunk.extend(items)
                yield encode(chunk)
            if said:
                yield encode(list(said))
        finally:  # the driver stopped listening (cancelled, gone): nothing keeps running
            for task in mine:
                task.cancel()

    async def _job(
        self, run: str, pipe: Pipeline[..., Any], lm: LM | None, trace: bool, job: list[Any], queue: asyncio.Queue[list[Any]]
    ) -> None:
        i, inputs, pid = job
        sem = self._sem
        if sem is None:  # made before any job
            return
        try:
            async with sem:
                if run in self._halted:
                    queue.put_nowait(["s", i])
                    return
                program = self._programs.get(pid) if pid is not None else None
                try:
                    example = Example(pipe.validate_inputs(inputs))
                except DataError as exc:
                    outcome = RunOutcome(index=i, example=Example(inputs), error=f"DataError: {exc}")
                else:
                    outcome = await run_one(pipe, example, program=program, lm=lm, trace=trace, index=i)
            queue.put_nowait(["o", i, encode_outcome(outcome, program, pid, self._nodes)])
        except asyncio.CancelledError:
            queue.put_nowait(["s", i])
            raise
