"""The LM answer cache in PostgreSQL: ``cache="postgresql://user@host:port/db"``, so a team's
machines answer a question once between them (``pip install 'desic[postgres]'``).

It behaves like the sqlite cache file (``desic.lm.stores``): a server that cannot be
reached turns the cache off for the process after one warning, and a failed read or write
is a miss, never a failed call; ``stats``/``prune``/``clear`` (``desic cache ... --cache
postgresql://...``) raise instead. Entries live in ``desic_lm_cache`` (component
``lm_cache`` of ``desic_schema``, next to the run store's tables when both share a database).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .._postgres import connect, migrate, public_url, storage_error
from .._redact import get_logger
from ..errors import DesicError
from ._cachestats import CacheStats, _check_limit

if TYPE_CHECKING:
    import psycopg

__all__ = ["PostgresCacheStore", "postgres_store"]

log = get_logger("desic.lm")

COMPONENT = "lm_cache"
MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1
    """
    CREATE TABLE desic_lm_cache (
        key TEXT PRIMARY KEY,
        value BYTEA NOT NULL,
        created DOUBLE PRECISION NOT NULL
    );
    CREATE INDEX desic_lm_cache_created ON desic_lm_cache (created);
    """,
)


class PostgresCacheStore:
    """LM cache entries in a PostgreSQL table, shared by every process and machine using it."""

    def __init__(self, url: str):
        self._conninfo = url
        self.path = public_url(url)  # what listings show: the URL without its password
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = -1
        self._inherited: list[Any] = []
        self.off: str | None = None
        self._warned: set[str] = set()

    def _connection(self) -> psycopg.Connection[Any]:
        """The open connection (reconnecting after a fork or a lost connection); raises."""
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        if conn is not None and self._pid != os.getpid():
            self._inherited.append(conn)  # a parent's session: never closed from the child
        conn = connect(self._conninfo, what="the LM cache")
        try:
            migrate(conn, COMPONENT, MIGRATIONS, self.path)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, DesicError) or not isinstance(exc, Exception):
                raise
            raise storage_error(self.path, exc) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    def _warn_once(self, action: str, message: str, *args: Any) -> None:
        level = logging.DEBUG if action in self._warned else logging.WARNING
        self._warned.add(action)
        log.log(level, message, *args)

    def _serve(self, action: str, body: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        """``body(conn)`` for get/put; None when the cache is off or the statement failed."""
        import psycopg

        with self._lock:
            if self.off is not None:
                return None
            try:
                conn = self._connection()
            except DesicError as exc:
                self.off = str(exc)
                log.warning(
                    "LM cache %s cannot be used (%s); the cache is off for this process and every "
                    "call goes to the LM", self.path, exc,
                )
                return None
            try:
                return body(conn)
            except psycopg.Error as exc:
                self._warn_once(action, "LM cache %s cannot be %s (%s); going on without it", self.path, action, exc)
                return None

    def get(self, key: str) -> bytes | None:
        row = self._serve(
            "read", lambda c: c.execute("SELECT value FROM desic_lm_cache WHERE key = %s", (key,)).fetchone()
        )
        return bytes(row[0]) if row is not None else None

    def put(self, key: str, value: bytes) -> None:
        self._serve(
            "written",
            lambda c: c.execute(
                "INSERT INTO desic_lm_cache (key, value, created) VALUES (%s, %s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value, created = EXCLUDED.created",
                (key, bytes(value), time.time()),
            ),
        )

    def __len__(self) -> int:
        return self.stats().entries

    # --- administration: stats, prune, clear (errors raise) -----------------------------------

    def _admin(self, body: Callable[[psycopg.Connection[Any]], Any]) -> Any:
        import psycopg

        with self._lock:
            conn = self._connection()
            try:
                return body(conn)
            except psycopg.Error as exc:
                raise storage_error(self.path, exc) from None

    def file_bytes(self) -> int:
        """The space the table and its index take in the database."""
        return self.stats().file_bytes

    def stats(self) -> CacheStats:
        def read(conn: psycopg.Connection[Any]) -> Any:
            return conn.execute(
                "SELECT count(*), coalesce(sum(octet_length(value)), 0), min(created), max(created), "
                "pg_total_relation_size('desic_lm_cache') FROM desic_lm_cache"
            ).fetchone()

        count, value_bytes, oldest, newest, size = self._admin(read)
        return CacheStats(
            path=self.path,
            entries=int(count),
            value_bytes=int(value_bytes),
            file_bytes=int(size),
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
        """As ``SqliteStore.prune``: by age, then beyond a count, then beyond a size, in one
        transaction (other machines see the cache before or after, never between)."""
        _check_limit("older_than", older_than, "the age in seconds past which entries go", integer=False)
        _check_limit("max_entries", max_entries, "the most entries to keep", integer=True)
        _check_limit("max_bytes", max_bytes, "the most bytes of cached answers to keep", integer=True)

        def delete(conn: psycopg.Connection[Any]) -> int:
            removed = 0
            with conn.transaction():
                conn.execute("LOCK TABLE desic_lm_cache IN SHARE ROW EXCLUSIVE MODE")
                if older_than is not None:
                    cutoff = time.time() - older_than
                    removed += conn.execute("DELETE FROM desic_lm_cache WHERE created < %s", (cutoff,)).rowcount
                if max_entries is not None:
                    removed += conn.execute(
                        "DELETE FROM desic_lm_cache WHERE key IN (SELECT key FROM desic_lm_cache "
                        "ORDER BY created DESC, key DESC OFFSET %s)",
                        (max_entries,),
                    ).rowcount
                if max_bytes is not None:
                    removed += conn.execute(
                        "DELETE FROM desic_lm_cache WHERE key IN (SELECT key FROM ("
                        "SELECT key, sum(octet_length(value)) OVER "
                        "(ORDER BY created DESC, key DESC ROWS UNBOUNDED PRECEDING) AS kept "
                        "FROM desic_lm_cache) AS running WHERE kept > %s)",
                        (max_bytes,),
                    ).rowcount
            if vacuum:
                conn.execute("VACUUM FULL desic_lm_cache")
            return removed

        return int(self._admin(delete))

    def clear(self, *, vacuum: bool = False) -> int:
        """Delete every entry; return how many there were."""

        def delete(conn: psycopg.Connection[Any]) -> int:
            removed = conn.execute("DELETE FROM desic_lm_cache").rowcount
            if vacuum:
                conn.execute("VACUUM FULL desic_lm_cache")
            return int(removed)

        return int(self._admin(delete))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None

    def __repr__(self) -> str:
        return f"<PostgresCacheStore {self.path}>"


_shared: dict[str, PostgresCacheStore] = {}
_shared_lock = threading.Lock()


def postgres_store(url: str) -> PostgresCacheStore:
    """The process's cache store for ``url`` (one connection per database and process)."""
    with _shared_lock:
        store = _shared.get(url)
        if store is None:
            store = _shared[url] = PostgresCacheStore(url)
        return store

