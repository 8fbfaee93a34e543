"""Where the LM cache keeps its entries: a sqlite file (default), process memory, or a
PostgreSQL database shared by a team (``cache="postgresql://..."``, in ``desic.lm._pgcache``;
psycopg is imported only then).

The sqlite store runs in WAL mode, so readers never wait for a writer and several
processes (parallel test workers, a compile and a notebook) share one file safely; a
writer waits up to ``busy_timeout`` for another. Within a process one connection per
file is shared under a lock (entries are small; each statement takes microseconds).
A store that cannot be read or written is logged and treated as empty: a broken cache
slows a run down but never fails it. One that cannot even be opened (DESIC_CACHE_DIR
read-only, under a file, or on a vanished mount) is turned off for the process after one
warning, so calls go straight to the model instead of failing or retrying the disk.

The file only grows as answers are cached; ``SqliteStore.stats()`` describes it and
``prune()`` / ``clear()`` bound it (``desic cache info|prune|clear`` on the command line).
These run in one write transaction, so processes using the cache meanwhile stay safe, and
raise ``StorageError`` when the file cannot be read or written.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, runtime_checkable

from desic.errors import StorageError

from .._redact import get_logger
from .._sqlite import retry_sqlite_busy
from ._cachestats import CacheStats, _check_limit

if TYPE_CHECKING:
    from ._pgcache import PostgresCacheStore

__all__ = [
    "CACHE_FILE",
    "CacheStats",
    "CacheStore",
    "MemoryStore",
    "SqliteStore",
    "cache_file",
    "default_cache_dir",
    "is_postgres",
    "open_store",
    "postgres_cache",
    "sqlite_store",
]

log = get_logger("desic.lm")

CACHE_FILE = "lm.sqlite3"

T = TypeVar("T")


@runtime_checkable
class CacheStore(Protocol):
    """A map from content hashes to bytes."""

    def get(self, key: str) -> bytes | None: ...

    def put(self, key: str, value: bytes) -> None: ...


class MemoryStore:
    """Entries in this process only, least recently used dropped beyond ``max_entries``."""

    def __init__(self, max_entries: int = 100_000):
        self.max_entries = max_entries
        self._data: OrderedDict[str, bytes] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            value = self._data.get(key)
            if value is not None:
                self._data.move_to_end(key)
            return value

    def put(self, key: str, value: bytes) -> None:
        with self._lock:
            self._data[key] = value
            self._data.move_to_end(key)
            while len(self._data) > self.max_entries:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class SqliteStore:
    """Entries in a sqlite file (WAL mode), shared by threads and processes."""

    def __init__(self, path: str | os.PathLike[str], busy_timeout: float = 30.0):
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._lock = threading.Lock()
        self._conn: Any = None
        self._pid = -1
        # why the file cannot be opened, once it could not be: the cache is off then
        self.off: str | None = None
        self._warned: set[str] = set()

    def _connection(self) -> Any:
        # A connection must not cross a fork: a child opens its own.
        if self._conn is None or self._pid != os.getpid():
            import sqlite3

            self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            conn = sqlite3.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            try:
                # Switching a fresh file to WAL takes an exclusive lock in rollback mode,
                # where sqlite answers "database is locked" at once (no busy wait) to a
                # process that would deadlock; several processes opening one new file
                # race here, so the set-up is retried until busy_timeout.
                self._retry_busy(lambda: conn.execute("PRAGMA journal_mode=WAL").fetchone())
                conn.execute("PRAGMA synchronous=NORMAL")
                self._retry_busy(
                    lambda: conn.execute(
                        "CREATE TABLE IF NOT EXISTS entries ("
                        "key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL NOT NULL) WITHOUT ROWID"
                    )
                )
                self._create_created_index(conn)
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _create_created_index(self, conn: Any) -> None:
        """The index that lets ``prune`` find the oldest entries without a full scan.

        Files written before it existed get it on first open; a read-only file without
        it still serves ``get`` (only pruning it would be slower).
        """
        import sqlite3

        try:
            self._retry_busy(
                lambda: conn.execute("CREATE INDEX IF NOT EXISTS entries_created ON entries (created)")
            )
        except sqlite3.OperationalError as exc:
            if "readonly" not in str(exc):
                raise
            log.debug("LM cache %s is read-only; not adding the index on created", self.path)

    def _retry_busy(self, operation: Callable[[], T]) -> T:
        return retry_sqlite_busy(operation, self.busy_timeout)

    def _serving_connection(self) -> Any:
        """The connection for ``get``/``put``, or None when the cache is off.

        Called under the lock. A file that cannot be opened (its directory cannot be made,
        or sqlite cannot open it) turns the cache off for good, with one warning: every
        later call would fail the same way, and a cache is never worth failing a call for.
        """
        import sqlite3

        if self.off is not None:
            return None
        try:
            return self._connection()
        except (OSError, sqlite3.Error) as exc:
            self.off = f"{type(exc).__name__}: {exc}"
            log.warning(
                "LM cache %s cannot be opened (%s); the cache is off for this process and "
                "every call goes to the LM. Set DESIC_CACHE_DIR to a writable directory, or "
                "pass cache='memory' or cache=False",
                self.path, self.off,
            )
            return None

    def _warn_once(self, action: str, message: str, *args: Any) -> None:
        """Warn the first time ``action`` fails on this store; later failures go to debug."""
        level = logging.DEBUG if action in self._warned else logging.WARNING
        self._warned.add(action)
        log.log(level, message, *args)

    def get(self, key: str) -> bytes | None:
        import sqlite3

        try:
            with self._lock:
                conn = self._serving_connection()
                if conn is None:
                    return None
                row = self._retry_busy(
                    lambda: conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
                )
        except (OSError, sqlite3.Error) as exc:
            self._warn_once("read", "LM cache %s cannot be read (%s); calling the LM", self.path, exc)
            return None
        return bytes(row[0]) if row is not None else None

    def put(self, key: str, value: bytes) -> None:
        import sqlite3

        try:
            with self._lock:
                conn = self._serving_connection()
                if conn is None:
                    return
                self._retry_busy(
                    lambda: conn.execute(
                        "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                        (key, value, time.time()),
                    )
                )
        except (OSError, sqlite3.Error) as exc:
            self._warn_once(
                "write", "LM cache %s cannot be written (%s); the answer is not cached", self.path, exc
            )

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT count(*) FROM entries").fetchone()[0])

    # --- administration: stats, prune, clear ------------------------------------------------

    def file_bytes(self) -> int:
        """The space the cache takes on disk: the file and its ``-wal`` (0 if absent)."""
        total = 0
        for path in (self.path, self.path.with_name(self.path.name + "-wal")):
            try:
                total += path.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def stats(self) -> CacheStats:
        """How many entries the file holds, their size, the file's size, oldest and newest."""
        import sqlite3

        try:
            with self._lock:
                conn = self._connection()
                count, value_bytes, oldest, newest = self._retry_busy(
                    lambda: conn.execute(
                        "SELECT count(*), coalesce(sum(length(value)), 0), min(created), max(created) FROM entries"
                    ).fetchone()
                )
        except (OSError, sqlite3.Error) as exc:
            raise self._error("read", exc) from exc
        return CacheStats(
            path=self.path,
            entries=int(count),
            value_bytes=int(value_bytes),
            file_bytes=self.file_bytes(),
            oldest=None if oldest is None else float(oldest),
            newest=None if newest is None else float(newest),
        )

    def prune(
        self,
        *,
        older_than: float | None = None,
        max_entries: int | None = None,
        max_bytes: int | None = None,
        vacuum: bool = False,
    ) -> int:
        """Delete old entries; return how many were deleted.

        In order: entries created more than ``older_than`` seconds ago, then the oldest
        beyond ``max_entries``, then the oldest until the values total at most
        ``max_bytes``. Limits left as None do not apply. One write transaction does it
        all, so other threads and processes see the cache before or after, never between.
        Freed pages are reused by later entries; ``vacuum=True`` also gives them back to
        the disk (it rewrites the file, so it takes a while on a large cache).
        """
        _check_limit("older_than", older_than, "the age in seconds past which entries go", integer=False)
        _check_limit("max_entries", max_entries, "the most entries to keep", integer=True)
        _check_limit("max_bytes", max_bytes, "the most bytes of cached answers to keep", integer=True)

        def delete(conn: Any) -> int:
            removed = 0
            if older_than is not None:
                cutoff = time.time() - older_than
                removed += conn.execute("DELETE FROM entries WHERE created < ?", (cutoff,)).rowcount
            if max_entries is not None:
                excess = conn.execute("SELECT count(*) FROM entries").fetchone()[0] - max_entries
                if excess > 0:
                    removed += conn.execute(
                        "DELETE FROM entries WHERE key IN "
                        "(SELECT key FROM entries ORDER BY created, key LIMIT ?)",
                        (excess,),
                    ).rowcount
            if max_bytes is not None:
                # keep the newest entries whose running total (newest first) fits
                removed += conn.execute(
                    "DELETE FROM entries WHERE key IN (SELECT key FROM ("
                    "SELECT key, sum(length(value)) OVER "
                    "(ORDER BY created DESC, key DESC ROWS UNBOUNDED PRECEDING) AS kept "
                    "FROM entries) WHERE kept > ?)",
                    (max_bytes,),
                ).rowcount
            return int(removed)

        return self._write(delete, vacuum=vacuum)

    def clear(self, *, vacuum: bool = False) -> int:
        """Delete every entry; return how many there were (``vacuum`` as in ``prune``)."""
        return self._write(lambda conn: int(conn.execute("DELETE FROM entries").rowcount), vacuum=vacuum)

    def _write(self, body: Callable[[Any], int], *, vacuum: bool) -> int:
        """``body(conn)`` in one write transaction, then VACUUM if asked, then a checkpoint."""
        import sqlite3

        def transaction(conn: Any) -> int:
            conn.execute("BEGIN IMMEDIATE")  # takes the write lock now: no upgrade deadlock later
            try:
                result = body(conn)
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            return result

        try:
            with self._lock:
                conn = self._connection()
                removed = self._retry_busy(lambda: transaction(conn))
                if vacuum:
                    self._retry_busy(lambda: conn.execute("VACUUM"))
                self._checkpoint(conn)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("written", exc) from exc
        return removed

    def _checkpoint(self, conn: Any) -> None:
        """Fold the WAL into the file and truncate it, if no other process is in the way.

        Best effort: a checkpoint waits for readers, so it gets a second, not busy_timeout.
        """
        import sqlite3

        try:
            conn.execute("PRAGMA busy_timeout = 1000")
            try:
                conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            finally:
                conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")
        except sqlite3.OperationalError as exc:
            log.debug("LM cache %s: checkpoint skipped (%s)", self.path, exc)

    def _error(self, action: str, exc: BaseException) -> StorageError:
        return StorageError(
            f"the LM cache {self.path} cannot be {action} ({exc}); check that the file is "
            "readable and writable, or delete it to start an empty cache"
        )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<SqliteStore {self.path}>"


def default_cache_dir() -> Path:
    """DESIC_CACHE_DIR, else $XDG_CACHE_HOME/desic, else ~/.cache/desic."""
    explicit = os.environ.get("DESIC_CACHE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "desic"


_shared: dict[Path, SqliteStore] = {}
_shared_lock = threading.Lock()


def cache_file(path: str | os.PathLike[str] | None = None) -> Path:
    """The sqlite file for ``path`` (a file, or a directory holding ``lm.sqlite3``).

    None means the default: ``lm.sqlite3`` in ``default_cache_dir()``.
    """
    target = Path(path).expanduser() if path is not None else default_cache_dir()
    if target.is_dir() or path is None or (not target.suffix and not target.exists()):
        target = target / CACHE_FILE
    return target.resolve()


def sqlite_store(path: str | os.PathLike[str] | None = None) -> SqliteStore:
    """The process's store for ``path`` (a file, or a directory holding ``lm.sqlite3``)."""
    target = cache_file(path)
    with _shared_lock:
        store = _shared.get(target)
        if store is None:
            store = _shared[target] = SqliteStore(target)
        return store


def is_postgres(spec: object) -> bool:
    """Whether a ``cache=`` value is a PostgreSQL URL (``postgresql://`` or ``postgres://``)."""
    return isinstance(spec, str) and spec.startswith(("postgresql://", "postgres://"))


def postgres_cache(url: str) -> PostgresCacheStore:
    """A new handle on the shared cache at ``url`` (``desic cache``'s, closed after use; LMs
    share one per database and process through ``open_store``)."""
    from ._pgcache import PostgresCacheStore

    return PostgresCacheStore(url)


def open_store(spec: Any) -> CacheStore:
    """A store from ``cache=`` values: True/"disk", "memory", a path, a
    ``postgresql://user@host:port/db`` URL, or a CacheStore."""
    if spec is True or spec == "disk":
        return sqlite_store()
    if spec == "memory":
        return MemoryStore()
    if is_postgres(spec):
        from ._pgcache import postgres_store

        return postgres_store(spec)
    if isinstance(spec, (str, os.PathLike)):
        return sqlite_store(spec)
    if isinstance(spec, CacheStore):
        return spec
    raise ValueError(
        f"cache={spec!r}: use True (sqlite under DESIC_CACHE_DIR), 'memory', a path to a "
        "sqlite file, a postgresql://user@host:port/db URL, or an object with get(key) and put(key, value)"
    )
