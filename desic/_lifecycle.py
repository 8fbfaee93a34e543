"""How ``desic.compile`` runs its lifecycle in a store: create or resume it, record, finish or fail.

``compile_run(storage, resume, recorder)`` is a context manager around the body of
``acompile``; it gives the run id (also written into ``program.meta.run_id``) and the
``RunRecorder`` to hand to ``CompileTask``. Without a store it changes nothing: the run id
is a fresh random one and the recorder the given one or a ``MemoryRecorder``.

A resumed run must be the same computation as the interrupted one (pipeline, optimizer and
its config including the seed, LM): otherwise replay would quietly recompute everything,
so a difference is refused with the list of what differs.
"""

from __future__ import annotations

import asyncio
import inspect
import os
import socket
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import msgspec

from . import ir
from ._redact import get_logger
from .errors import BudgetExceeded, ConfigError, StorageError
from .record import MemoryRecorder, RunRecorder
from .runtime import settings
from .storage import (
    RunInfo,
    Storage,
    StorageRecorder,
    check_name,
    configured_url,
    default_url,
    new_run_id,
    redact,
)
from .storage import resolve as resolve_store

__all__ = ["CompileRun", "compile_run"]

log = get_logger("desic")

#: how often a running compile touches its run in the store (see ``storage.is_stale``)
HEARTBEAT_SECONDS = 10.0
MAX_ERROR = 2000


def _plain(value: Any) -> Any:
    return msgspec.json.decode(msgspec.json.encode(value))


class CompileRun:
    """One compile's run: ``run_id`` and ``recorder`` once ``start`` was called."""

    def __init__(self, store: Storage | None, resume: str | None, recorder: RunRecorder | None):
        self.store = store
        self.resume = resume
        self.run_id = ""
        self._given_recorder = recorder
        self.recorder: RunRecorder = MemoryRecorder()
        self.started = False
        self.finished = False
        # who holds the run while this process runs it (a second resume is refused)
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # a resumed run that had finished: its program, returned without any work
        self.finished_program: ir.Program | None = None
        # set when another process took the run over while this one ran it (its heartbeat
        # was refused): this process then stops and writes nothing more to the run
        self.lost: StorageError | None = None

    def start(
        self,
        *,
        pipeline: str,
        optimizer: str,
        optimizer_config: dict[str, Any],
        seed: int,
        lm: dict[str, Any],
        trainset: str = "",
    ) -> None:
        if self.store is None:
            self.run_id = uuid.uuid4().hex[:12]
            self.recorder = (
                self._given_recorder if self._given_recorder is not None else MemoryRecorder()
            )
            return
        wanted = RunInfo(
            id=self.resume or new_run_id(),
            pipeline=pipeline,
            optimizer=optimizer,
            optimizer_config=_plain(optimizer_config),
            seed=seed,
            lm=redact(_plain(lm)),
            owner=self.owner,
            trainset=trainset,
        )
        if self.resume is not None:
            try:
                found = self.store.get_run(self.resume)
            except StorageError as exc:
                raise ConfigError(f"cannot resume run {self.resume!r}: {exc}") from exc
            self._check_same(found, wanted)
            if found.status == "finished":
                self._finished_run(found)
                return
            # running again: what ended it last time (an error, a budget) no longer applies
            try:
                self._update(self.resume, status="running", error="", stopped_by="", lease=self.owner)
            except StorageError as exc:
                raise ConfigError(f"cannot resume run {self.resume!r}: {exc}") from exc
        else:
            self.store.create_run(wanted)
        self.run_id = wanted.id
        self.recorder = StorageRecorder(self.store, self.run_id)
        self.started = True

    def _finished_run(self, found: RunInfo) -> None:
        """Resuming a finished run: nothing to do; its stored program is the answer."""
        assert self.store is not None
        data = self.store.get_run_program(found.id)
        if data is None:
            raise ConfigError(
                f"run {found.id!r} finished but {self.store.url} holds no program for it; start a new run (drop resume=)"
            )
        self.finished_program = ir.decode_program(data, source=f"run {found.id} in {self.store.url}")
        self.run_id = found.id
        log.info("desic: run %s already finished; returning its program without running anything", found.id)

    def _check_same(self, found: RunInfo, wanted: RunInfo) -> None:
        fields = ["pipeline", "optimizer", "optimizer_config", "seed", "lm"]
        if found.trainset and wanted.trainset:  # runs stored before the fingerprint have none
            fields.append("trainset")
        diffs = [
            f"{field}: run has {getattr(found, field)!r}, this compile has {getattr(wanted, field)!r}"
            for field in fields
            if getattr(found, field) != getattr(wanted, field)
        ]
        if diffs:
            raise ConfigError(
                f"cannot resume run {found.id!r} in {self.store.url if self.store else ''}: it was started "
                "with different settings; call compile with the run's settings or start a new run "
                "(drop resume=).\n  " + "\n  ".join(diffs)
            )

    def finish(self, program: ir.Program, *, stopped: BudgetExceeded | None = None) -> None:
        """Keep the final program with the run and mark it finished, or stopped when a
        budget (``stopped``) ended the search early (the program is the best so far)."""
        if self.store is None or not self.started:
            return
        if self.lost is not None:
            raise self.lost
        self.store.put_run_program(self.run_id, ir.encode_program(program))
        best = getattr(self.recorder, "best_score", None)
        if best is None and program.meta.score is not None:
            best = program.meta.score
        if stopped is None:
            self._update(self.run_id, status="finished", best_score=best)
        else:
            self._update(
                self.run_id,
                status="stopped",
                best_score=best,
                error=_error_text(stopped),
                stopped_by=stopped.budget,
            )
        self.finished = True

    def fail(self, exc: BaseException) -> None:
        """Mark the run ``interrupted`` (Ctrl-C, SIGTERM, cancelled), ``stopped`` (out of
        budget) or ``failed`` (an error); each can be resumed."""
        if self.store is None or not self.started or self.finished or self.lost is not None:
            return
        if isinstance(exc, BudgetExceeded):
            status = "stopped"
        elif isinstance(exc, (KeyboardInterrupt, SystemExit)) or type(exc).__name__ == "CancelledError":
            status = "interrupted"
        else:
            status = "failed"
        try:
            self._update(
                self.run_id,
                status=status,
                error=_error_text(exc),
                stopped_by=exc.budget if isinstance(exc, BudgetExceeded) else None,
            )
        except Exception:  # never hide the original error behind a storage one
            log.exception(
                "desic: could not mark run %s as failed in %s", self.run_id, self.store.url
            )

    async def heartbeat(self, main: asyncio.Task[Any] | None = None) -> None:
        """Renew the run's lease every ``HEARTBEAT_SECONDS`` while it runs (a task on the
        compile's loop), so a run whose process was killed shows as stale, never as running
        forever. A store error here is logged, never fatal; but when another process has
        taken the run over (this one looked dead to it: stale after a long pause or a lost
        network), ``lost`` is set and ``main`` (the compile) is cancelled: two processes
        must not both write one run."""
        if self.store is None or not self.started:
            return
        while not self.finished:
            await asyncio.sleep(HEARTBEAT_SECONDS)
            try:
                self._update(self.run_id, lease=self.owner)
            except Exception:
                if self._taken_over():
                    if main is not None:
                        main.cancel()
                    return
                log.warning("desic: could not record the heartbeat of run %s", self.run_id, exc_info=True)

    def _taken_over(self) -> bool:
        """Whether another process now holds the run (after a refused heartbeat)."""
        assert self.store is not None
        try:
            info = self.store.get_run(self.run_id)
        except Exception:  # noqa: BLE001 - the store is unreachable: nothing is known to have changed
            return False
        if info.status != "running" or not info.owner or info.owner == self.owner:
            return False
        self.lost = StorageError(
            f"run {self.run_id} in {self.store.url} was taken over by another process "
            f"({info.owner}) while this one ({self.owner}) ran it: this process looked dead to "
            "it (no heartbeat for a while). This compile stopped and wrote nothing more to the "
            "run; the other process goes on with it"
        )
        log.error("desic: %s", self.lost)
        return True

    def _update(
        self, run_id: str, *, stopped_by: str | None = None, lease: str | None = None, **fields: Any
    ) -> None:
        """``store.update_run``; ``stopped_by`` and ``lease`` only for a backend that takes
        them (one written against an older protocol keeps the status and the reason in
        ``error``, and cannot refuse a second resume)."""
        assert self.store is not None
        if stopped_by is not None and _takes(self.store.update_run, "stopped_by"):
            fields["stopped_by"] = stopped_by
        if lease is not None and _takes(self.store.update_run, "lease"):
            fields["lease"] = lease
        self.store.update_run(run_id, **fields)


def _current_task() -> asyncio.Task[Any] | None:
    try:
        return asyncio.current_task()
    except RuntimeError:  # no running loop
        return None


def _error_text(exc: BaseException) -> str:
    text: str = redact(f"{type(exc).__name__}: {exc}"[:MAX_ERROR])
    return text


def _takes(method: Any, name: str) -> bool:
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


@contextmanager
def compile_run(
    storage: Storage | str | None, resume: str | None, recorder: RunRecorder | None
) -> Iterator[CompileRun]:
    """The run of one ``compile`` (see the module docstring); closes a store it opened."""
    if resume is not None:
        check_name(resume, "run id")
    source: Storage | str | None = storage
    if source is None and (
        recorder is None or resume is not None
    ):  # an explicit recorder wins over defaults
        source = settings().storage or configured_url()
    if source is None and resume is not None:
        source = default_url()  # resuming needs a store: the default one
    owned = isinstance(source, str)  # opened here from a URL, so closed here
    store = resolve_store(source)
    if store is not None and recorder is not None:
        if owned:
            store.close()
        raise ConfigError("pass either storage= (runs are recorded there) or recorder=, not both")
    run = CompileRun(store, resume, recorder)
    try:
        yield run
    except BaseException as exc:
        if run.lost is not None:  # cancelled by its heartbeat: another process holds the run
            task = _current_task()
            if task is not None and isinstance(exc, asyncio.CancelledError):
                task.uncancel()  # the cancel was ours, not the caller's
            raise run.lost from None
        run.fail(exc)
        raise
    finally:
        if store is not None and owned:
            store.close()
