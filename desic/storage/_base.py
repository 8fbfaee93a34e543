"""The ``Storage`` protocol: what every run store and artifact store can do.

A store keeps two kinds of things:

* **runs**: one record per compile run (``RunInfo``), the candidates an optimizer scored in
  the order it scored them (the run's history), the evaluations it recorded by key (what a
  resumed run replays instead of calling the LM again), and one checkpoint of arbitrary
  optimizer state;
* **artifacts**: compiled programs saved under a name, numbered ``1, 2, 3, ...`` per name,
  with movable tags (``prod``, ``staging``) pointing at a version.

The protocol is deliberately made of small primitives that move plain data (dicts of JSON
values, and artifact bytes); the logic on top (references such as ``triage@latest``,
hashing, decoding programs) lives once in ``desic.storage`` and ``BaseStorage`` so a backend
stays a thin adapter, the way tinydb's ``Storage`` is two methods. A backend must be safe to
use from several threads and, for the file backends, from several processes at once.

Records given to ``add_candidate``/``put_evaluation``/``put_checkpoint`` must be JSON data
(dict/list/str/int/float/bool/None); backends may copy them and must return equal data.
"""

from __future__ import annotations

import datetime as _dt
import re
import secrets
from collections.abc import Mapping
from typing import Any, Literal, Protocol, TypedDict, runtime_checkable

import msgspec

from ..errors import ConfigError, StorageError

__all__ = [
    "RUN_STATUSES",
    "STALE_SECONDS",
    "ArtifactInfo",
    "RunInfo",
    "RunStatus",
    "RunUpdate",
    "Storage",
    "check_name",
    "is_stale",
    "new_run_id",
    "now",
]

RunStatus = Literal["running", "finished", "failed", "stopped", "interrupted"]
RUN_STATUSES: tuple[str, ...] = ("running", "finished", "failed", "stopped", "interrupted")

#: a ``running`` run whose ``updated_at`` is older than this many seconds is stale: its
#: process stopped without saying so (killed, machine lost). A compile touches its run
#: every 10 s while it runs.
STALE_SECONDS = 60.0


class RunInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One compile run: what was optimized, how, and how it is going.

    ``optimizer_config`` includes the seed; ``lm`` is the LM's secret-free ``describe()``.
    ``best_score`` is the best candidate score seen so far; ``error`` says why a failed,
    stopped or interrupted run ended (``interrupted``: Ctrl-C, SIGTERM or cancelled; it
    resumes like the others). A ``running`` run that stopped touching ``updated_at`` is
    stale (``is_stale``). A run stopped by a budget has status ``"stopped"`` and
    ``stopped_by`` names the budget (``"max_calls"``, ...); its best program so far is kept
    with the run like a finished one's. (Stores written before ``stopped_by`` existed read
    as ``None`` there.)
    """

    id: str
    pipeline: str = ""
    optimizer: str | None = None
    optimizer_config: dict[str, Any] = {}
    seed: int | None = None
    lm: dict[str, Any] = {}
    status: RunStatus = "running"
    created_at: str = ""
    updated_at: str = ""
    best_score: float | None = None
    error: str | None = None
    stopped_by: str | None = None
    owner: str = ""  # who holds the run while it runs (host:pid:token); see ``lease``
    trainset: str = ""  # fingerprint of the rows it optimizes on (a resume must use the same)
    candidates: int = 0  # how many candidates the history holds (computed by the backend)


class RunUpdate(TypedDict, total=False):
    """The keyword arguments of ``Storage.update_run`` (a backend may take them as
    ``**changes: Unpack[RunUpdate]`` and hand them to ``apply_update``)."""

    status: RunStatus | None
    best_score: float | None
    error: str | None
    stopped_by: str | None
    lease: str | None


class ArtifactInfo(msgspec.Struct, frozen=True, kw_only=True):
    """One saved version of a named artifact.

    ``sha256`` is the hash of the stored bytes, checked on every load; ``meta`` is a small
    summary of the program's provenance (run id, score, desic version) for listings.
    """

    name: str
    version: int
    sha256: str
    created_at: str = ""
    size: int = 0
    tags: tuple[str, ...] = ()
    meta: dict[str, Any] = {}

    @property
    def ref(self) -> str:
        return f"{self.name}@{self.version}"


@runtime_checkable
class Storage(Protocol):
    """A run store and artifact store. Built-in: tinydb, msgspec files, sqlite, memory.

    Errors: a missing run raises ``StorageError`` naming the run; a missing artifact
    ``ArtifactError``; a store that cannot be read (corrupt, truncated) ``StorageError``
    naming the path. Nothing is ever reset silently.
    """

    url: str

    # -- runs -------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        """Add a new run (``info.id`` must be unused); returns it as stored."""
        ...

    def get_run(self, run_id: str) -> RunInfo:
        """The run, or ``StorageError`` when the store has no such run."""
        ...

    def list_runs(self) -> list[RunInfo]:
        """Every run, oldest first."""
        ...

    def update_run(
        self,
        run_id: str,
        *,
        status: RunStatus | None = None,
        best_score: float | None = None,
        error: str | None = None,
        stopped_by: str | None = None,
        lease: str | None = None,
    ) -> RunInfo:
        """Change a run's status / best score / error / stopping budget (``None`` leaves a
        field as is; ``""`` clears ``error`` or ``stopped_by``). ``lease`` takes the run
        for that owner, atomically with the change: ``StorageError`` when another owner
        holds it running and not stale (two resumes of one run at once). Backends get this for free
        from ``apply_update``; a backend without ``stopped_by`` still works (compile then
        keeps only the status and the reason in ``error``)."""
        ...

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        """Append one scored candidate (``index, score, note, usage, program``) to the history."""
        ...

    def history(self, run_id: str) -> list[dict[str, Any]]:
        """The run's candidates in the order they were added."""
        ...

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        """Record one evaluation's result under ``key`` (a later put of the same key wins)."""
        ...

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None: ...

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        """Replace the run's checkpoint (arbitrary optimizer state as JSON data)."""
        ...

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None: ...

    def put_run_program(self, run_id: str, data: bytes) -> None:
        """Keep the run's final program (an encoded artifact) with the run."""
        ...

    def get_run_program(self, run_id: str) -> bytes | None: ...

    # -- artifacts --------------------------------------------------------------------
    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        """Store ``data`` as the next version of ``name`` (1 for a new name)."""
        ...

    def get_artifact(self, name: str, version: int) -> bytes:
        """The bytes of one version; ``ArtifactError`` when it does not exist."""
        ...

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        """Versions (with their tags) of ``name``, or of every name; by name, then version."""
        ...

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        """Point ``tag`` (``prod``, ``staging``, ...) of ``name`` at ``version`` (moves it)."""
        ...

    def close(self) -> None: ...


#: The methods a backend must define (every public method of ``Storage``); ``register``
#: refuses a class missing one.
REQUIRED_METHODS: tuple[str, ...] = tuple(
    name for name, member in vars(Storage).items() if callable(member) and not name.startswith("_")
)


_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


def check_name(value: str, what: str) -> str:
    """Refuse run ids, artifact names and tags that could escape the store's folder.

    Allowed: letters, digits, ``_ . -``, starting with a letter or digit, at most 128
    characters, and never ``..``: so a name is always one plain path component.
    """
    if not isinstance(value, str) or not _NAME.fullmatch(value) or ".." in value:
        raise ConfigError(
            f"invalid {what} {value!r}: use letters, digits, '_', '.', '-' (starting with a "
            "letter or digit, no '..', no '/', at most 128 characters)"
        )
    return value


def now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="milliseconds")


def is_stale(info: RunInfo, *, after: float = STALE_SECONDS, at: _dt.datetime | None = None) -> bool:
    """Whether ``info`` says ``running`` but has not been touched for ``after`` seconds."""
    if info.status != "running" or not info.updated_at:
        return False
    try:
        touched = _dt.datetime.fromisoformat(info.updated_at)
    except ValueError:
        return False
    if touched.tzinfo is None:
        touched = touched.replace(tzinfo=_dt.UTC)
    return ((at or _dt.datetime.now(_dt.UTC)) - touched).total_seconds() > after


def owner_gone(info: RunInfo) -> bool:
    """Whether ``info`` says ``running`` but the process holding it ran on this host and is
    gone (killed without a word): no need to wait until the run is stale."""
    return info.status == "running" and bool(info.owner) and _gone(info.owner)


def _gone(owner: str) -> bool:
    """Whether the process named by a lease owner (``host:pid:token``) ran on this host and
    no longer exists (killed: its run can be resumed at once, without waiting until stale)."""
    import socket

    from ._fs import alive

    parts = owner.split(":")
    if len(parts) < 3 or not parts[-2].isdigit() or ":".join(parts[:-2]) != socket.gethostname():
        return False
    return not alive(int(parts[-2]))


def new_run_id() -> str:
    """A fresh run id that sorts by creation time: ``20250131-142501-3fa2c1``."""
    stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%d-%H%M%S")
    return f"{stamp}-{secrets.token_hex(3)}"


def apply_update(
    info: RunInfo,
    *,
    status: str | None = None,
    best_score: float | None = None,
    error: str | None = None,
    stopped_by: str | None = None,
    lease: str | None = None,
    at: _dt.datetime | None = None,
) -> RunInfo:
    """``info`` with the given fields changed and ``updated_at`` set (shared by backends,
    which call it inside their lock or transaction, so a ``lease`` is taken atomically).

    ``None`` leaves a field as is; ``""`` clears ``error`` / ``stopped_by``. ``at`` is the
    time of the change (default: this machine's clock); a store shared by several machines
    passes its server's clock, so staleness is judged by one clock for all of them."""
    changes: dict[str, Any] = {"updated_at": now() if at is None else at.astimezone(_dt.UTC).isoformat(timespec="milliseconds")}
    if lease is not None:
        if info.status == "running" and info.owner and info.owner != lease and not is_stale(info, at=at) and not _gone(info.owner):
            raise StorageError(
                f"run {info.id} is running in another process ({info.owner}, last heartbeat "
                f"{info.updated_at}); wait for it to end or stop it. A run whose process died "
                f"without a word can be resumed once it is stale ({STALE_SECONDS:g}s without a heartbeat)"
            )
        changes["owner"] = lease
    if status is not None:
        if status not in RUN_STATUSES:
            raise ConfigError(f"invalid run status {status!r}; one of {', '.join(RUN_STATUSES)}")
        changes["status"] = status
    if best_score is not None:
        changes["best_score"] = float(best_score)
    if error is not None:
        changes["error"] = error or None
    if stopped_by is not None:
        changes["stopped_by"] = stopped_by or None
    return msgspec.structs.replace(info, **changes)


def new_run(info: RunInfo) -> RunInfo:
    """``info`` as a backend stores it on creation: id checked, timestamps set."""
    check_name(info.id, "run id")
    if info.status not in RUN_STATUSES:
        raise ConfigError(f"invalid run status {info.status!r}; one of {', '.join(RUN_STATUSES)}")
    stamp = now()
    return msgspec.structs.replace(
        info, created_at=info.created_at or stamp, updated_at=stamp, candidates=0
    )


def run_not_found(run_id: str, url: str) -> Exception:
    from ..errors import StorageError

    return StorageError(
        f"no run {run_id!r} in {url}; list its runs with desic.storage.open({url!r}).list_runs()"
    )


def run_exists(run_id: str, url: str) -> Exception:
    from ..errors import StorageError

    return StorageError(f"a run {run_id!r} already exists in {url}")
