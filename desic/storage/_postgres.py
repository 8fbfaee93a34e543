"""``postgresql://user@host:port/db``: runs and artifacts in a PostgreSQL database shared by
several machines and people (``pip install 'desic[postgres]'``: psycopg 3).

Why PostgreSQL: a team's runs, artifacts and cached answers in one place that many
processes on many machines write at once. Every write is one short transaction; appends
(candidates, evaluations) are single ``INSERT`` statements whose foreign key checks the
run, so concurrent writers never lose or reorder each other's records (each writer's
appends keep their order: ``history`` sorts by an identity column).

The resume lease is taken under the run's row lock (``SELECT ... FOR UPDATE``) in the
transaction that changes the run, and judged by the server's clock: ``updated_at`` is
set from ``clock_timestamp()`` on every update, so machines with skewed clocks agree on
when a run went stale. Two machines resuming one run at once: one gets the lease, the
other a ``StorageError``.

Tables are prefixed ``desic_`` (the database can hold other things) and versioned in
``desic_schema`` (component ``store``; see ``desic._postgres.migrate``).
"""

from __future__ import annotations

import datetime as _dt
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Unpack

import msgspec

from .._postgres import connect, migrate, public_url, storage_error
from ..errors import ArtifactError, ConfigError, DesicError
from ._artifacts import artifact_info, check_tag
from ._backend import BaseStorage
from ._base import (
    ArtifactInfo,
    RunInfo,
    RunUpdate,
    apply_update,
    check_name,
    new_run,
    run_exists,
    run_not_found,
)
from ._fs import encode_json

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresStorage"]

COMPONENT = "store"

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema
    """
    CREATE TABLE desic_runs (
        id TEXT PRIMARY KEY,
        seq BIGINT GENERATED ALWAYS AS IDENTITY,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        owner TEXT NOT NULL DEFAULT '',
        updated_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp(),
        info BYTEA NOT NULL
    );
    CREATE INDEX desic_runs_created ON desic_runs (created_at, seq);
    CREATE TABLE desic_candidates (
        seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        run_id TEXT NOT NULL REFERENCES desic_runs (id) ON DELETE CASCADE,
        data BYTEA NOT NULL
    );
    CREATE INDEX desic_candidates_run ON desic_candidates (run_id, seq);
    CREATE TABLE desic_evaluations (
        run_id TEXT NOT NULL REFERENCES desic_runs (id) ON DELETE CASCADE,
        key TEXT NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (run_id, key)
    );
    CREATE TABLE desic_checkpoints (
        run_id TEXT PRIMARY KEY REFERENCES desic_runs (id) ON DELETE CASCADE,
        data BYTEA NOT NULL
    );
    CREATE TABLE desic_run_programs (
        run_id TEXT PRIMARY KEY REFERENCES desic_runs (id) ON DELETE CASCADE,
        data BYTEA NOT NULL
    );
    CREATE TABLE desic_artifacts (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        info BYTEA NOT NULL,
        data BYTEA NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE desic_tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, tag),
        FOREIGN KEY (name, version) REFERENCES desic_artifacts (name, version)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)

_info_decoder = msgspec.json.Decoder(RunInfo)
_artifact_decoder = msgspec.json.Decoder(ArtifactInfo)


def _iso(at: _dt.datetime) -> str:
    return at.astimezone(_dt.UTC).isoformat(timespec="milliseconds")


class PostgresStorage(BaseStorage):
    """A run store and artifact registry in PostgreSQL (see the module docstring).

    One connection per store object, used under a lock (so a store is safe to share between
    threads); a process that forks opens its own in the child.
    """

    def __init__(self, location: str, *, scheme: str = "postgresql"):
        full = f"{scheme}://{location}"
        self._conninfo = full
        self.url = public_url(full)
        self._lock = threading.RLock()
        self._conn: psycopg.Connection[Any] | None = None
        self._pid = -1
        self._inherited: list[Any] = []  # a parent's connections: never closed by a child
        self._psycopg: Any = None
        self._connection()  # fail now, with a clear error, not at the first write

    # -- plumbing --------------------------------------------------------------------------
    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and self._pid == os.getpid() and not conn.closed and not conn.broken:
            return conn
        if conn is not None and self._pid != os.getpid():
            self._inherited.append(conn)  # closing it here would close the parent's session
        conn = connect(self._conninfo, what="the desic store")
        try:
            import psycopg

            self._psycopg = psycopg
            migrate(conn, COMPONENT, MIGRATIONS, self.url)
        except BaseException as exc:
            conn.close()
            if isinstance(exc, DesicError) or not isinstance(exc, Exception):
                raise
            raise storage_error(self.url, exc) from None
        self._conn, self._pid = conn, os.getpid()
        return conn

    @contextmanager
    def _tx(self) -> Iterator[psycopg.Connection[Any]]:
        """One transaction on the store's connection (under the lock)."""
        with self._lock:
            conn = self._connection()
            try:
                with conn.transaction():
                    yield conn
            except self._psycopg.Error as exc:
                raise storage_error(self.url, exc) from None

    @contextmanager
    def _read(self) -> Iterator[psycopg.Connection[Any]]:
        """One statement outside an explicit transaction (autocommit)."""
        with self._lock:
            conn = self._connection()
            try:
                yield conn
            except self._psycopg.Error as exc:
                raise storage_error(self.url, exc) from None

    def _decode_info(self, data: bytes, status: str, owner: str, updated_at: _dt.datetime, n: int) -> RunInfo:
        try:
            info = _info_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise self._corrupt("a run record", exc) from exc
        # the columns are the truth for what the lease and staleness are judged by
        return msgspec.structs.replace(
            info, status=status, owner=owner, updated_at=_iso(updated_at), candidates=n
        )

    def _corrupt(self, what: str, exc: Exception) -> DesicError:
        from ..errors import StorageError

        return StorageError(f"{self.url}: {what} is corrupt ({exc})")

    def _decode(self, data: bytes, what: str) -> Any:
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise self._corrupt(what, exc) from exc

    _RUN_COLUMNS = (
        "r.info, r.status, r.owner, r.updated_at, "
        "(SELECT count(*) FROM desic_candidates c WHERE c.run_id = r.id)"
    )

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        info = new_run(info)
        with self._tx() as db:
            row = db.execute(
                "INSERT INTO desic_runs (id, created_at, status, owner, info) VALUES (%s, %s, %s, %s, %s) "
                "ON CONFLICT (id) DO NOTHING RETURNING updated_at",
                (info.id, info.created_at, info.status, info.owner, msgspec.json.encode(info)),
            ).fetchone()
            if row is None:
                raise run_exists(info.id, self.url)
        return msgspec.structs.replace(info, updated_at=_iso(row[0]))

    def get_run(self, run_id: str) -> RunInfo:
        with self._read() as db:
            row = db.execute(
                f"SELECT {self._RUN_COLUMNS} FROM desic_runs r WHERE r.id = %s",
                (run_id,),
            ).fetchone()
        if row is None:
            raise run_not_found(run_id, self.url)
        return self._decode_info(*row)

    def list_runs(self) -> list[RunInfo]:
        with self._read() as db:
            rows = db.execute(
                f"SELECT {self._RUN_COLUMNS} FROM desic_runs r ORDER BY r.created_at, r.seq"
            ).fetchall()
        return [self._decode_info(*row) for row in rows]

    def update_run(self, run_id: str, **changes: Unpack[RunUpdate]) -> RunInfo:
        with self._tx() as db:
            row = db.execute(
                f"SELECT {self._RUN_COLUMNS}, clock_timestamp() FROM desic_runs r WHERE r.id = %s FOR UPDATE",
                (run_id,),
            ).fetchone()
            if row is None:
                raise run_not_found(run_id, self.url)
            at: _dt.datetime = row[-1]
            info = apply_update(self._decode_info(*row[:-1]), at=at, **changes)
            db.execute(
                "UPDATE desic_runs SET status = %s, owner = %s, updated_at = %s, info = %s WHERE id = %s",
                (info.status, info.owner, at, msgspec.json.encode(info), run_id),
            )
            return info

    def _missing_run(self, exc: Exception, run_id: str) -> Exception:
        if isinstance(exc, self._psycopg.errors.ForeignKeyViolation):
            return run_not_found(run_id, self.url)
        return storage_error(self.url, exc)

    def _append(self, query: Any, run_id: str, params: tuple[Any, ...]) -> None:
        """One INSERT whose foreign key checks the run (no separate lookup: one round trip)."""
        with self._lock:
            db = self._connection()
            try:
                db.execute(query, params)
            except self._psycopg.Error as exc:
                raise self._missing_run(exc, run_id) from None

    def _require(self, db: psycopg.Connection[Any], run_id: str) -> None:
        if db.execute("SELECT 1 FROM desic_runs WHERE id = %s", (run_id,)).fetchone() is None:
            raise run_not_found(run_id, self.url)

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        self._append("INSERT INTO desic_candidates (run_id, data) VALUES (%s, %s)", run_id, (run_id, data))

    def history(self, run_id: str) -> list[dict[str, Any]]:
        with self._tx() as db:
            self._require(db, run_id)
            rows = db.execute(
                "SELECT data FROM desic_candidates WHERE run_id = %s ORDER BY seq", (run_id,)
            ).fetchall()
        return [self._decode(bytes(r[0]), f"a candidate of run {run_id}") for r in rows]

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        self._append(
            "INSERT INTO desic_evaluations (run_id, key, data) VALUES (%s, %s, %s) "
            "ON CONFLICT (run_id, key) DO UPDATE SET data = EXCLUDED.data",
            run_id,
            (run_id, key, data),
        )

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None:
        with self._read() as db:
            row = db.execute(
                "SELECT data FROM desic_evaluations WHERE run_id = %s AND key = %s", (run_id, key)
            ).fetchone()
        return None if row is None else self._decode(bytes(row[0]), f"evaluation {key} of run {run_id}")

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        data = encode_json(state)
        self._append(
            "INSERT INTO desic_checkpoints (run_id, data) VALUES (%s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET data = EXCLUDED.data",
            run_id,
            (run_id, data),
        )

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        with self._tx() as db:
            self._require(db, run_id)
            row = db.execute("SELECT data FROM desic_checkpoints WHERE run_id = %s", (run_id,)).fetchone()
        return None if row is None else self._decode(bytes(row[0]), f"the checkpoint of run {run_id}")

    def put_run_program(self, run_id: str, data: bytes) -> None:
        self._append(
            "INSERT INTO desic_run_programs (run_id, data) VALUES (%s, %s) "
            "ON CONFLICT (run_id) DO UPDATE SET data = EXCLUDED.data",
            run_id,
            (run_id, bytes(data)),
        )

    def get_run_program(self, run_id: str) -> bytes | None:
        with self._tx() as db:
            self._require(db, run_id)
            row = db.execute("SELECT data FROM desic_run_programs WHERE run_id = %s", (run_id,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- artifacts -------------------------------------------------------------------------
    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        check_name(name, "artifact name")
        with self._tx() as db:
            # versions of one name are numbered under a lock of that name: two machines saving
            # at once get 3 and 4, never both 3
            db.execute("SELECT pg_advisory_xact_lock(hashtextextended('desic.artifact:' || %s, 0))", (name,))
            row = db.execute("SELECT max(version) FROM desic_artifacts WHERE name = %s", (name,)).fetchone()
            info = artifact_info(name, ((row[0] if row else None) or 0) + 1, data, meta)
            db.execute(
                "INSERT INTO desic_artifacts (name, version, info, data) VALUES (%s, %s, %s, %s)",
                (name, info.version, msgspec.json.encode(info), bytes(data)),
            )
        return info

    def get_artifact(self, name: str, version: int) -> bytes:
        with self._read() as db:
            row = db.execute(
                "SELECT data FROM desic_artifacts WHERE name = %s AND version = %s", (name, version)
            ).fetchone()
        if row is None:
            raise ArtifactError(f"no artifact {name}@{version} in {self.url}")
        return bytes(row[0])

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        with self._tx() as db:
            if name is None:
                rows = db.execute("SELECT info FROM desic_artifacts ORDER BY name, version").fetchall()
                tag_rows = db.execute("SELECT name, tag, version FROM desic_tags").fetchall()
            else:
                rows = db.execute(
                    "SELECT info FROM desic_artifacts WHERE name = %s ORDER BY version", (name,)
                ).fetchall()
                tag_rows = db.execute(
                    "SELECT name, tag, version FROM desic_tags WHERE name = %s", (name,)
                ).fetchall()
        tags: dict[tuple[str, int], list[str]] = {}
        for n, tag, version in tag_rows:
            tags.setdefault((n, version), []).append(tag)
        out = []
        for (data,) in rows:
            try:
                info = _artifact_decoder.decode(bytes(data))
            except msgspec.DecodeError as exc:
                raise self._corrupt("an artifact record", exc) from exc
            out.append(
                msgspec.structs.replace(info, tags=tuple(sorted(tags.get((info.name, info.version), ()))))
            )
        return out

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        check_tag(tag)
        with self._tx() as db:
            if (
                db.execute(
                    "SELECT 1 FROM desic_artifacts WHERE name = %s AND version = %s", (name, version)
                ).fetchone()
                is None
            ):
                raise ArtifactError(f"cannot tag {name}@{version} in {self.url}: no such version")
            db.execute(
                "INSERT INTO desic_tags (name, tag, version) VALUES (%s, %s, %s) "
                "ON CONFLICT (name, tag) DO UPDATE SET version = EXCLUDED.version",
                (name, tag, version),
            )

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
            self._conn = None


def open_postgres(location: str) -> PostgresStorage:
    if not location:
        raise ConfigError(
            "postgresql:// needs a server and a database, e.g. postgresql://user@host:5432/desic "
            "(credentials from the URL or PGPASSWORD / ~/.pgpass)"
        )
    return PostgresStorage(location)


def open_postgres_alias(location: str) -> PostgresStorage:
    """``postgres://`` (the short scheme libpq also accepts)."""
    if not location:
        return open_postgres(location)
    return PostgresStorage(location, scheme="postgres")
