"""``desic.executors.Ray``: run a pipeline's rows on a Ray cluster (``pip install 'desic[ray]'``).

The driver (this process) keeps everything that decides: the order of jobs, ``before``
(rate of rows, budgets, recorded answers) and ``after`` (scoring, recording, progress)
run here, as on one machine. Workers only run rows:

- a few long-lived actors (``Worker``), each with its own event loop and ``concurrency``
  rows at once; the driver keeps each one fed with batches (about twice its concurrency
  outstanding) and they stream outcomes back as they finish (chunks of whatever finished
  since the last one), so ``after`` and progress are live;
- the pipeline reaches a worker by import path (``module:qualname``); programs, examples,
  outcomes and the LM's configuration travel as msgpack (``desic.executors._codec``,
  ``desic.lm.portable``); API keys come from each worker's environment;
- a throttled LM's rate (``rps``/``tpm``) holds for the whole cluster: one ``Limiter``
  actor keeps its buckets, for the workers and for the driver's own calls alike;
- a worker lost mid-batch (killed, its node gone) is replaced, and only the jobs that
  have no outcome yet are sent again: nothing recorded runs twice;
- cancelling the run (Ctrl-C) cancels the jobs on every worker.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import importlib.util
import math
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Self

from .. import events, ir
from .._bucket import Bucket
from .._json import to_jsonable
from ..engine import Job, RunOutcome
from ..errors import ConfigError, DesicError
from ..lm import LM
from ..lm.guard import requests_refused
from ..lm.portable import lm_config, throttles
from ..pipeline import Pipeline
from ..record import program_key
from ..render import leaving_one_out
from ..runtime import current_lm
from ._codec import NodeCache, decode, decode_outcome, encode
from ._worker import Limiter, SharedBucket, Worker

__all__ = ["Ray"]

_INSTALL = "the Ray executor needs Ray: pip install 'desic[ray]'"


def _ray() -> Any:
    if importlib.util.find_spec("ray") is None:
        raise ConfigError(_INSTALL)
    import ray

    return ray


class _Slot:
    """One worker place: its current actor (replaced when lost) and what it was sent."""

    __slots__ = ("actor", "generation", "index", "lms", "name", "programs")

    def __init__(self, index: int) -> None:
        self.index = index
        self.generation = 0
        self.actor: Any = None
        self.name = ""
        self.programs: set[str] = set()
        self.lms: set[str] = set()


class Ray:
    """Run rows on Ray actors: ``desic.evaluate(..., executor=desic.executors.Ray(...))``.

    - ``address``: ``None`` uses the Ray already initialised in this process, else starts
      a local one; ``"auto"`` joins the cluster this machine belongs to (``ray start``);
      ``"ray://host:10001"`` connects through the Ray client;
    - ``workers``: actors to start (default: the cluster's CPUs);
    - ``per_worker_concurrency``: rows each runs at once (default: the run's
      ``concurrency`` shared out over the workers);
    - ``resources``: Ray actor options of each worker (default ``{"num_cpus": 1}``; e.g.
      ``{"num_gpus": 1}`` or ``{"resources": {"judge": 1}}``);
    - ``runtime_env``: Ray's ``runtime_env`` for the workers (ship code with
      ``{"working_dir": "."}`` or ``{"py_modules": [...]}``, set ``env_vars``);
    - ``max_restarts``: workers lost in one run before the run fails.

    The actors live until ``close()`` (or the end of a ``with`` block): one executor
    serves many evaluations and a whole compile without starting actors again.
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        workers: int | None = None,
        per_worker_concurrency: int | None = None,
        resources: dict[str, Any] | None = None,
        runtime_env: dict[str, Any] | None = None,
        max_restarts: int = 8,
    ) -> None:
        for name, value in (("workers", workers), ("per_worker_concurrency", per_worker_concurrency)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ConfigError(f"desic.executors.Ray({name}={value!r}): give a whole number of at least 1")
        if address is not None and not isinstance(address, str):
            raise ConfigError(f"desic.executors.Ray(address={address!r}): give 'auto', 'ray://HOST:10001' or None")
        if resources is not None and not isinstance(resources, dict):
            raise ConfigError(f"desic.executors.Ray(resources={resources!r}): give Ray actor options as a dict, e.g. {{'num_gpus': 1}}")
        if importlib.util.find_spec("ray") is None:
            raise ConfigError(_INSTALL)
        self.address = address
        self.workers = workers
        self.per_worker_concurrency = per_worker_concurrency
        self.resources = {"num_cpus": 1, **(resources or {})}
        self.runtime_env = runtime_env
        self.max_restarts = max_restarts
        self.slots: list[_Slot] = []
        self.limiter: Any = None
        self.restarts = 0  # workers replaced, over this executor's life
        self.resent = 0  # jobs sent again after their worker was lost
        self._concurrency = 0
        self._nodes = NodeCache()
        self._lms: dict[int, tuple[LM, str, dict[str, Any]]] = {}
        self._swapped: list[tuple[Any, Bucket | None, Bucket | None]] = []
        self._current: _Run | None = None

    def __repr__(self) -> str:
        return f"desic.executors.Ray(address={self.address!r}, workers={len(self.slots) or self.workers})"

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- actors -----------------------------------------------------------------------------

    def _start(self, concurrency: int) -> None:
        ray = _ray()
        if not ray.is_initialized():
            options: dict[str, Any] = {}
            if self.address is not None:
                options["address"] = self.address
            ray.init(**options)
        if self.limiter is None:
            self.limiter = ray.remote(Limiter).options(num_cpus=0, max_concurrency=10_000).remote()
        count = len(self.slots) or self.workers or max(1, int(ray.cluster_resources().get("CPU", 1)))
        self._concurrency = self.per_worker_concurrency or max(1, math.ceil(concurrency / count))
        if not self.slots:
            self.slots = [_Slot(k) for k in range(count)]
            for slot in self.slots:
                self._replace(slot)

    def _replace(self, slot: _Slot) -> None:
        ray = _ray()
        if slot.actor is not None:
            ray.kill(slot.actor, no_restart=True)
            slot.generation += 1
        slot.name = f"ray-worker-{slot.index}" + (f".{slot.generation}" if slot.generation else "")
        options: dict[str, Any] = {**self.resources, "max_concurrency": 10_000}
        if self.runtime_env is not None:
            options["runtime_env"] = self.runtime_env
        slot.actor = ray.remote(Worker).options(**options).remote(slot.name, self._concurrency, self.limiter)
        slot.programs.clear()
        slot.lms.clear()

    def _kill_all(self) -> None:
        if not self.slots:
            return
        ray = _ray()
        for slot in self.slots:
            if slot.actor is not None:
                ray.kill(slot.actor, no_restart=True)
                slot.actor = None
        self.slots = []

    @property
    def held(self) -> list[int]:
        """Jobs of the running call each worker holds now (sent, no outcome back yet)."""
        run = self._current
        return list(run.outstanding) if run is not None else [0] * len(self.slots)

    @property
    def actors(self) -> list[Any]:
        """The worker actors now (their handles; a test may ``ray.kill`` one)."""
        return [s.actor for s in self.slots]

    def close(self) -> None:
        """Stop the workers and the limiter; the driver's throttles get their own buckets back."""
        for throttle, requests, tokens in self._swapped:
            throttle.requests, throttle.tokens = requests, tokens
        self._swapped.clear()
        self._lms.clear()
        if importlib.util.find_spec("ray") is None:
            return
        import ray

        if not ray.is_initialized():
            self.slots, self.limiter = [], None
            return
        self._kill_all()
        if self.limiter is not None:
            ray.kill(self.limiter, no_restart=True)
            self.limiter = None

    # --- the LM ---------------------------------------------------------------------------

    def _lm(self, lm: LM) -> tuple[str, dict[str, Any]]:
        """The LM's id and configuration; its throttles on the driver now draw from the
        cluster's limiter too (the driver's own calls, e.g. an optimizer's proposals)."""
        hit = self._lms.get(id(lm))
        if hit is not None and hit[0] is lm:
            return hit[1], hit[2]
        config = lm_config(lm)
        key = ir.fingerprint(config)
        self._lms[id(lm)] = (lm, key, config)
        for throttle in throttles(lm):
            if any(t is throttle for t, _, _ in self._swapped):
                continue
            self._swapped.append((throttle, throttle.requests, throttle.tokens))
            name = str(id(throttle))
            if throttle.requests is not None:
                throttle.requests = SharedBucket(self.limiter, f"{name}/requests", throttle.requests.rate, throttle.requests.burst)
            if throttle.tokens is not None:
                throttle.tokens = SharedBucket(self.limiter, f"{name}/tokens", throttle.tokens.rate, throttle.tokens.burst)
        return key, config

    # --- running ----------------------------------------------------------------------------

    async def run(
        self,
        pipe: Pipeline[..., Any],
        jobs: Sequence[Job],
        *,
        lm: LM | None,
        concurrency: int,
        trace: bool = False,
        stop: Callable[[], bool] | None = None,
        before: Callable[[int], Awaitable[bool]] | None = None,
        after: Callable[[int, RunOutcome], Awaitable[None]],
    ) -> None:
        """Run ``jobs`` on the workers (see :class:`desic.engine.Executor`)."""
        if not jobs:
            return
        ref = pipe.ref
        if "<locals>" in ref or ref.startswith("__main__:"):
            raise ConfigError(
                f"the pipeline {ref!r} cannot reach Ray workers: they import it by MODULE:NAME, so define it "
                "at the top level of a module (not in a function or in the script you run)"
            )
        self._start(concurrency)
        active = lm if lm is not None else current_lm()
        lm_key, config = self._lm(active)
        await self._prepare(ref)
        run = self._current = _Run(self, pipe, jobs, lm_key, config, trace, stop, before, after)
        try:
            await run.go()
        finally:
            self._current = None

    async def _prepare(self, ref: str) -> None:
        """Every worker imports the pipeline, or the run fails with why (and how to ship it).
        A worker found dead (lost between two runs) is replaced first."""
        ray = _ray()
        for attempt in range(self.max_restarts + 1):
            answers = await asyncio.gather(
                *(slot.actor.prepare.remote(ref) for slot in self.slots), return_exceptions=True
            )
            dead = False
            for slot, answer in zip(self.slots, answers, strict=True):
                if isinstance(answer, (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)):
                    if attempt == self.max_restarts:
                        raise DesicError(f"Ray workers keep dying before they can run anything: {answer}")
                    self.restarts += 1
                    self._replace(slot)
                    dead = True
                elif isinstance(answer, BaseException):
                    raise answer
                elif answer is not None:
                    raise ConfigError(answer)
            if not dead:
                return


class _Run:
    """One ``Ray.run``: the queue of jobs, what each worker holds, and the streams back."""

    def __init__(
        self,
        ex: Ray,
        pipe: Pipeline[..., Any],
        jobs: Sequence[Job],
        lm_key: str,
        lm_config: dict[str, Any],
        trace: bool,
        stop: Callable[[], bool] | None,
        before: Callable[[int], Awaitable[bool]] | None,
        after: Callable[[int, RunOutcome], Awaitable[None]],
    ) -> None:
        self.ex = ex
        self.pipe = pipe
        self.jobs = jobs
        self.lm_key = lm_key
        self.lm_config = lm_config
        self.trace = trace
        self.stop = stop
        self.before = before
        self.after = after
        self.id = uuid.uuid4().hex
        self.events = events.active()
        self.refuse = requests_refused()  # a test refusing real LM calls refuses them on the workers too
        self.hold_out = leaving_one_out()  # a compile's leave-one-out per-input demos hold there too
        self.queue: collections.deque[int] = collections.deque(range(len(jobs)))
        self.admitted = bytearray(len(jobs))
        self.outstanding = [0] * len(ex.slots)
        self.limit = 2 * ex._concurrency
        self.low = max(1, ex._concurrency // 2)
        self.changed = asyncio.Event()
        self.error: BaseException | None = None
        self.halted = False
        self.restarts = 0
        self.streams: set[asyncio.Task[None]] = set()
        self.programs: dict[str, ir.Program] = {}
        self._pids: dict[int, tuple[ir.Program, str, bytes]] = {}
        self._inputs: dict[int, tuple[Any, Any]] = {}

    def _pid(self, program: ir.Program | None) -> tuple[str | None, bytes | None]:
        if program is None:
            return None, None
        hit = self._pids.get(id(program))
        if hit is None or hit[0] is not program:
            pid = program_key(program)
            hit = (program, pid, encode(program))
            self._pids[id(program)] = hit
            self.programs[pid] = program
        return hit[1], hit[2]

    def _job_data(self, i: int) -> tuple[list[Any], str | None, bytes | None]:
        example, program = self.jobs[i]
        hit = self._inputs.get(id(example))
        if hit is None or hit[0] is not example:
            hit = (example, to_jsonable(example.inputs))
            self._inputs[id(example)] = hit
        pid, data = self._pid(program)
        return [i, hit[1], pid], pid, data

    async def go(self) -> None:
        try:
            while True:
                self.changed.clear()
                if self.error is not None:
                    raise self.error
                if not self.halted and self.stop is not None and self.stop():
                    self.halt()
                if not self.halted and self.queue:
                    for slot in sorted(self.ex.slots, key=lambda s: self.outstanding[s.index]):
                        if not self.queue or self.halted or self.error is not None:
                            break
                        held = self.outstanding[slot.index]
                        room = self.limit - held
                        if room <= 0 or (held > 0 and room < self.low):
                            continue
                        batch = await self._take(room)
                        if batch:
                            self._send(slot, batch)
                if self.error is not None:
                    raise self.error
                if (not self.queue or self.halted) and not any(self.outstanding):
                    break
                try:
                    await asyncio.wait_for(self.changed.wait(), 0.1)  # also re-asks stop()
                except TimeoutError:
                    pass
        except BaseException:
            await self._abort()
            raise
        finally:
            for slot in self.ex.slots:
                slot.actor.end.remote(self.id)

    async def _take(self, room: int) -> list[int]:
        """Up to ``room`` jobs admitted by ``before`` (a slow ``before``, e.g. a rate of rows,
        sends what it has after 10 ms rather than holding a worker idle)."""
        batch: list[int] = []
        started = time.perf_counter()
        while self.queue and len(batch) < room:
            if self.stop is not None and self.stop():
                self.halt()
                break
            i = self.queue.popleft()
            if not self.admitted[i]:
                if self.before is not None and not await self.before(i):
                    continue
                self.admitted[i] = 1
            batch.append(i)
            if self.before is not None and time.perf_counter() - started > 0.01:
                break
        return batch

    def _send(self, slot: _Slot, batch: list[int]) -> None:
        jobs, programs = [], {}
        for i in batch:
            job, pid, data = self._job_data(i)
            jobs.append(job)
            if pid is not None and pid not in slot.programs:
                slot.programs.add(pid)
                programs[pid] = data
        payload: dict[str, Any] = {
            "run": self.id, "pipe": self.pipe.ref, "lm": self.lm_key, "programs": programs,
            "trace": self.trace, "events": self.events, "concurrency": self.ex._concurrency, "refuse": self.refuse,
            "hold_out": self.hold_out, "jobs": jobs,
        }
        if self.lm_key not in slot.lms:
            slot.lms.add(self.lm_key)
            payload["lm_config"] = self.lm_config
        stream = slot.actor.run.options(num_returns="streaming").remote(encode(payload))
        self.outstanding[slot.index] += len(batch)
        task = asyncio.ensure_future(self._consume(slot, slot.actor, batch, stream))
        self.streams.add(task)
        task.add_done_callback(self.streams.discard)

    async def _consume(self, slot: _Slot, actor: Any, batch: list[int], stream: Any) -> None:
        ray = _ray()
        pending = set(batch)
        try:
            async for ref in stream:
                chunk = decode(await ref)
                for item in chunk:
                    kind = item[0]
                    if kind == "e":
                        events.emit(item[1], **item[2])
                        continue
                    i = item[1]
                    if i not in pending:
                        continue
                    pending.discard(i)
                    self.outstanding[slot.index] -= 1
                    if kind == "o":
                        example = self.jobs[i][0]
                        outcome = decode_outcome(self.pipe, i, example, item[2], self.trace, self.programs, self.ex._nodes)
                        await self.after(i, outcome)
                self.changed.set()
        except asyncio.CancelledError:
            raise
        except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
            self._lost(slot, actor, pending, exc)
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            self._fail(cause if isinstance(cause, DesicError) else exc)
        except BaseException as exc:  # noqa: BLE001 - handed to the dispatcher, which raises it
            self._fail(exc)

    def _fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc
        self.changed.set()

    def _lost(self, slot: _Slot, actor: Any, pending: set[int], exc: BaseException) -> None:
        """``actor`` died: its jobs without an outcome go back to the front of the queue, to
        a fresh actor in its place."""
        self.outstanding[slot.index] -= len(pending)
        for i in sorted(pending, reverse=True):
            self.queue.appendleft(i)
        self.ex.resent += len(pending)
        if slot.actor is actor:
            self.restarts += 1
            self.ex.restarts += 1
            if self.restarts > self.ex.max_restarts:
                self._fail(DesicError(f"{self.restarts} Ray workers were lost in this run (max_restarts={self.ex.max_restarts}); last: {exc}"))
                return
            self.ex._replace(slot)
        self.changed.set()

    def halt(self) -> None:
        """Start nothing more: every worker drops the jobs of this run it has not started."""
        if self.halted:
            return
        self.halted = True
        for slot in self.ex.slots:
            slot.actor.halt.remote(self.id)

    async def _abort(self) -> None:
        """Cancel the run everywhere (Ctrl-C, or an error raised by ``after``)."""
        self.halted = True
        refs = [slot.actor.cancel.remote(self.id) for slot in self.ex.slots]
        for task in list(self.streams):
            task.cancel()
        waits = [asyncio.ensure_future(_settled(r)) for r in refs]
        if waits:
            await asyncio.wait(waits, timeout=3.0)  # within an interrupted loop's own wind-down


async def _settled(ref: Any) -> None:
    with contextlib.suppress(Exception):  # a worker already gone has nothing left to cancel
        await ref
