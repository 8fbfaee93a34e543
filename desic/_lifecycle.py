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

import inspect
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

    def start(
        self,
        *,
        pipeline: str,
        optimizer: str,
        optimizer_config: dict[str, Any],
        seed: int,
        lm: dict[str, Any],
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
        )
        if self.resume is not None:
            try:
                found = self.store.get_run(self.resume)
            except StorageError as exc:
                raise ConfigError(f"cannot resume run {self.resume!r}: {exc}") from exc
            self._check_same(found, wanted)
            # running again: what ended it last time (an error, a budget) no longer applies
            self._update(self.resume, status="running", error="", stopped_by="")
        else:
            self.store.create_run(wanted)
        self.run_id = wanted.id
        self.recorder = StorageRecorder(self.store, self.run_id)
        self.started = True

    def _check_same(self, found: RunInfo, wanted: RunInfo) -> None:
        diffs = [
            f"{field}: run has {getattr(found, field)!r}, this compile has {getattr(wanted, field)!r}"
            for field in ("pipeline", "optimizer", "optimizer_config", "seed", "lm")
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
        """Mark the run failed (an error) or stopped (interrupted, cancelled, out of budget)."""
        if self.store is None or not self.started or self.finished:
            return
        stopped = (
            isinstance(exc, (KeyboardInterrupt, BudgetExceeded))
            or type(exc).__name__ == "CancelledError"
        )
        try:
            self._update(
                self.run_id,
                status="stopped" if stopped else "failed",
                error=_error_text(exc),
                stopped_by=exc.budget if isinstance(exc, BudgetExceeded) else None,
            )
        except Exception:  # never hide the original error behind a storage one
            log.exception(
                "desic: could not mark run %s as failed in %s", self.run_id, self.store.url
            )

    def _update(self, run_id: str, *, stopped_by: str | None = None, **fields: Any) -> None:
        """``store.update_run``; ``stopped_by`` only for a backend that takes it (one
        written against an older protocol keeps the status and the reason in ``error``)."""
        assert self.store is not None
        if stopped_by is not None and _takes(self.store.update_run, "stopped_by"):
            fields["stopped_by"] = stopped_by
        self.store.update_run(run_id, **fields)


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
        run.fail(exc)
        raise
    finally:
        if store is not None and owned:
            store.close()
