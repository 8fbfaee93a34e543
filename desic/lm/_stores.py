"""Where the LM cache keeps its entries: a sqlite file (default) or process memory.

The sqlite store runs in WAL mode, so readers never wait for a writer and several
processes (parallel test workers, a compile and a notebook) share one file safely; a
writer waits up to ``busy_timeout`` for another. Within a process one connection per
file is shared under a lock (entries are small; each statement takes microseconds).
A store that cannot be read or written is logged and treated as empty: a broken cache
slows a run down but never fails it.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from pathlib import Path
from typing import Any, Callable, Protocol, TypeVar, runtime_checkable

from desic._utils import retry_sqlite_busy

log = logging.getLogger("desic.lm")

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
            except BaseException:
                conn.close()
                raise
            self._conn, self._pid = conn, os.getpid()
        return self._conn

    def _retry_busy(self, operation: Callable[[], T]) -> T:
        return retry_sqlite_busy(operation, self.busy_timeout)

    def get(self, key: str) -> bytes | None:
        import sqlite3

        try:
            with self._lock:
                conn = self._connection()
                row = self._retry_busy(
                    lambda: conn.execute("SELECT value FROM entries WHERE key = ?", (key,)).fetchone()
                )
        except sqlite3.Error as exc:
            log.warning("LM cache %s cannot be read (%s); calling the LM", self.path, exc)
            return None
        return bytes(row[0]) if row is not None else None

    def put(self, key: str, value: bytes) -> None:
        import sqlite3

        try:
            with self._lock:
                conn = self._connection()
                self._retry_busy(
                    lambda: conn.execute(
                        "INSERT OR REPLACE INTO entries (key, value, created) VALUES (?, ?, ?)",
                        (key, value, time.time()),
                    )
                )
        except sqlite3.Error as exc:
            log.warning("LM cache %s cannot be written (%s); the answer is not cached", self.path, exc)

    def __len__(self) -> int:
        with self._lock:
            return int(self._connection().execute("SELECT count(*) FROM entries").fetchone()[0])

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


def sqlite_store(path: str | os.PathLike[str] | None = None) -> SqliteStore:
    """The process's store for ``path`` (a file, or a directory holding ``lm.sqlite3``)."""
    target = Path(path).expanduser() if path is not None else default_cache_dir()
    if target.is_dir() or path is None or (not target.suffix and not target.exists()):
        target = target / CACHE_FILE
    target = target.resolve()
    with _shared_lock:
        store = _shared.get(target)
        if store is None:
            store = _shared[target] = SqliteStore(target)
        return store


def open_store(spec: Any) -> CacheStore:
    """A store from ``cache=`` values: True/"disk", "memory", a path, or a CacheStore."""
    if spec is True or spec == "disk":
        return sqlite_store()
    if spec == "memory":
        return MemoryStore()
    if isinstance(spec, (str, os.PathLike)):
        return sqlite_store(spec)
    if isinstance(spec, CacheStore):
        return spec
    raise ValueError(
        f"cache={spec!r}: use True (sqlite under DESIC_CACHE_DIR), 'memory', "
        "a path to a sqlite file, or an object with get(key) and put(key, value)"
    )
