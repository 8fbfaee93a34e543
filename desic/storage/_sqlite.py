"""``sqlite://path.db``: one SQLite file (stdlib ``sqlite3``), the default store.

Why SQLite: one file, transactions, and safe concurrent use by several processes (WAL
journal so readers never block the writer; ``busy_timeout`` so writers wait for each other
instead of failing). ``synchronous=NORMAL`` in WAL mode survives any process crash; a power
loss may drop the last transactions but never corrupts the file.

The schema is versioned in ``desic_schema``: ``MIGRATIONS[i]`` takes a store from version
``i`` to ``i + 1`` and runs in one transaction when an older store is opened; a store
written by a newer desic is refused rather than guessed at.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Unpack

import msgspec

from .._sqlite import retry_sqlite_busy
from ..errors import ArtifactError, ConfigError, StorageError
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
from ._fs import encode_json, ensure_dir

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "SQLiteStorage"]

MIGRATIONS: tuple[str, ...] = (
    # 0 -> 1: the first schema
    """
    CREATE TABLE runs (
        id TEXT PRIMARY KEY,
        created_at TEXT NOT NULL,
        status TEXT NOT NULL,
        info BLOB NOT NULL
    );
    CREATE TABLE candidates (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id TEXT NOT NULL REFERENCES runs(id),
        data BLOB NOT NULL
    );
    CREATE INDEX candidates_run ON candidates(run_id, seq);
    CREATE TABLE evaluations (
        run_id TEXT NOT NULL,
        key TEXT NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (run_id, key)
    ) WITHOUT ROWID;
    CREATE TABLE checkpoints (run_id TEXT PRIMARY KEY, data BLOB NOT NULL);
    CREATE TABLE run_programs (run_id TEXT PRIMARY KEY, data BLOB NOT NULL);
    CREATE TABLE artifacts (
        name TEXT NOT NULL,
        version INTEGER NOT NULL,
        info BLOB NOT NULL,
        data BLOB NOT NULL,
        PRIMARY KEY (name, version)
    );
    CREATE TABLE tags (
        name TEXT NOT NULL,
        tag TEXT NOT NULL,
        version INTEGER NOT NULL,
        PRIMARY KEY (name, tag)
    );
    """,
)
SCHEMA_VERSION = len(MIGRATIONS)
BUSY_TIMEOUT_MS = 30_000

_info_decoder = msgspec.json.Decoder(RunInfo)
_artifact_decoder = msgspec.json.Decoder(ArtifactInfo)


class SQLiteStorage(BaseStorage):
    def __init__(self, location: str):
        if not location:
            raise ConfigError(
                "sqlite:// needs a file path, e.g. sqlite://.desic/desic.db (or sqlite:///abs/path.db)"
            )
        self.path = Path(location).expanduser().absolute()
        self.url = f"sqlite://{location}"
        ensure_dir(self.path.parent, self.url)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path,
                timeout=BUSY_TIMEOUT_MS / 1000,
                isolation_level=None,
                check_same_thread=False,
            )
        except sqlite3.Error as exc:
            raise ConfigError(
                f"cannot open {self.url} ({self.path}): {exc}; choose a writable path "
                "(or set DESIC_STORAGE, e.g. sqlite://.desic/desic.db)"
            ) from exc
        try:
            with self._errors():
                self._db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
                # retried: the switch to WAL can meet "locked" at once (see retry_sqlite_busy)
                db = self._db
                retry_sqlite_busy(
                    lambda: db.execute("PRAGMA journal_mode = WAL").fetchone(), BUSY_TIMEOUT_MS / 1000
                )
                self._db.execute("PRAGMA synchronous = NORMAL")
                self._migrate()
        except BaseException:
            self._db.close()
            raise

    # -- plumbing --------------------------------------------------------------------------
    @contextmanager
    def _errors(self) -> Iterator[None]:
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "readonly" in str(exc) or "unable to open" in str(exc):
                raise ConfigError(
                    f"cannot write {self.url} ({self.path}): {exc}; fix the file's permissions or choose "
                    "another path (or set DESIC_STORAGE)"
                ) from exc
            raise StorageError(f"{self.url} ({self.path}): {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise StorageError(
                f"{self.path} is not a usable desic SQLite store ({exc}): it may be corrupt or "
                "truncated; it was not modified. Restore it from a backup or move it away"
            ) from exc

    @contextmanager
    def _tx(self, *, write: bool = True) -> Iterator[sqlite3.Connection]:
        """One transaction (``BEGIN IMMEDIATE`` for writes: take the write lock up front)."""
        with self._lock, self._errors():
            self._db.execute("BEGIN IMMEDIATE" if write else "BEGIN")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _version(self) -> int:
        row = self._db.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND name = 'desic_schema'"
        ).fetchone()
        if row is None:
            return 0
        row = self._db.execute("SELECT version FROM desic_schema").fetchone()
        return int(row[0]) if row else 0

    def _migrate(self) -> None:
        if self._version() == SCHEMA_VERSION:
            return  # the common case: no write at all
        with self._tx() as db:
            version = self._version()  # again, under the write lock: another process may have won
            if version > SCHEMA_VERSION:
                raise StorageError(
                    f"{self.path} uses store schema {version}, newer than this desic understands "
                    f"({SCHEMA_VERSION}); upgrade desic (pip install -U desic)"
                )
            if version == 0:
                db.execute("CREATE TABLE IF NOT EXISTS desic_schema (version INTEGER NOT NULL)")
                db.execute("DELETE FROM desic_schema")
                db.execute("INSERT INTO desic_schema VALUES (0)")
            for step in range(version, SCHEMA_VERSION):
                for statement in MIGRATIONS[step].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute("UPDATE desic_schema SET version = ?", (step + 1,))

    def _info(self, db: sqlite3.Connection, run_id: str) -> RunInfo:
        row = db.execute("SELECT info FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise run_not_found(run_id, self.url)
        return self._decode_info(row[0])

    def _decode_info(self, data: bytes) -> RunInfo:
        try:
            return _info_decoder.decode(data)
        except msgspec.DecodeError as exc:
            raise StorageError(f"{self.path}: a run record is corrupt ({exc})") from exc

    def _decode(self, data: bytes, what: str) -> Any:
        try:
            return msgspec.json.decode(data)
        except msgspec.DecodeError as exc:
            raise StorageError(f"{self.path}: {what} is corrupt ({exc})") from exc

    def _count(self, db: sqlite3.Connection, run_id: str) -> int:
        return int(
            db.execute("SELECT count(*) FROM candidates WHERE run_id = ?", (run_id,)).fetchone()[0]
        )

    # -- runs -------------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        info = new_run(info)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM runs WHERE id = ?", (info.id,)).fetchone():
                raise run_exists(info.id, self.url)
            db.execute(
                "INSERT INTO runs (id, created_at, status, info) VALUES (?, ?, ?, ?)",
                (info.id, info.created_at, info.status, msgspec.json.encode(info)),
            )
        return info

    def get_run(self, run_id: str) -> RunInfo:
        with self._tx(write=False) as db:
            info = self._info(db, run_id)
            return msgspec.structs.replace(info, candidates=self._count(db, run_id))

    def list_runs(self) -> list[RunInfo]:
        with self._tx(write=False) as db:
            rows = db.execute(
                "SELECT r.info, (SELECT count(*) FROM candidates c WHERE c.run_id = r.id) "
                "FROM runs r ORDER BY r.created_at, r.rowid"
            ).fetchall()
        return [msgspec.structs.replace(self._decode_info(info), candidates=n) for info, n in rows]

    def update_run(self, run_id: str, **changes: Unpack[RunUpdate]) -> RunInfo:
        with self._tx() as db:
            info = apply_update(self._info(db, run_id), **changes)
            db.execute(
                "UPDATE runs SET status = ?, info = ? WHERE id = ?",
                (info.status, msgspec.json.encode(info), run_id),
            )
            return msgspec.structs.replace(info, candidates=self._count(db, run_id))

    def _require(self, db: sqlite3.Connection, run_id: str) -> None:
        if db.execute("SELECT 1 FROM runs WHERE id = ?", (run_id,)).fetchone() is None:
            raise run_not_found(run_id, self.url)

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        with self._tx() as db:
            self._require(db, run_id)
            db.execute("INSERT INTO candidates (run_id, data) VALUES (?, ?)", (run_id, data))

    def history(self, run_id: str) -> list[dict[str, Any]]:
        with self._tx(write=False) as db:
            self._require(db, run_id)
            rows = db.execute(
                "SELECT data FROM candidates WHERE run_id = ? ORDER BY seq", (run_id,)
            ).fetchall()
        return [self._decode(r[0], f"a candidate of run {run_id}") for r in rows]

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        with self._tx() as db:
            self._require(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO evaluations (run_id, key, data) VALUES (?, ?, ?)",
                (run_id, key, data),
            )

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None:
        with self._lock, self._errors():
            row = self._db.execute(
                "SELECT data FROM evaluations WHERE run_id = ? AND key = ?", (run_id, key)
            ).fetchone()
        return None if row is None else self._decode(row[0], f"evaluation {key} of run {run_id}")

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        data = encode_json(state)
        with self._tx() as db:
            self._require(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO checkpoints (run_id, data) VALUES (?, ?)", (run_id, data)
            )

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        with self._tx(write=False) as db:
            self._require(db, run_id)
            row = db.execute("SELECT data FROM checkpoints WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else self._decode(row[0], f"the checkpoint of run {run_id}")

    def put_run_program(self, run_id: str, data: bytes) -> None:
        with self._tx() as db:
            self._require(db, run_id)
            db.execute(
                "INSERT OR REPLACE INTO run_programs (run_id, data) VALUES (?, ?)",
                (run_id, bytes(data)),
            )

    def get_run_program(self, run_id: str) -> bytes | None:
        with self._tx(write=False) as db:
            self._require(db, run_id)
            row = db.execute("SELECT data FROM run_programs WHERE run_id = ?", (run_id,)).fetchone()
        return None if row is None else bytes(row[0])

    # -- artifacts -------------------------------------------------------------------------
    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        check_name(name, "artifact name")
        with self._tx() as db:
            row = db.execute(
                "SELECT max(version) FROM artifacts WHERE name = ?", (name,)
            ).fetchone()
            info = artifact_info(name, (row[0] or 0) + 1, data, meta)
            db.execute(
                "INSERT INTO artifacts (name, version, info, data) VALUES (?, ?, ?, ?)",
                (name, info.version, msgspec.json.encode(info), bytes(data)),
            )
        return info

    def get_artifact(self, name: str, version: int) -> bytes:
        with self._tx(write=False) as db:
            row = db.execute(
                "SELECT data FROM artifacts WHERE name = ? AND version = ?", (name, version)
            ).fetchone()
        if row is None:
            raise ArtifactError(f"no artifact {name}@{version} in {self.url}")
        return bytes(row[0])

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        where, args = ("WHERE name = ?", (name,)) if name is not None else ("", ())
        with self._tx(write=False) as db:
            rows = db.execute(
                f"SELECT info FROM artifacts {where} ORDER BY name, version", args
            ).fetchall()
            tag_rows = db.execute(f"SELECT name, tag, version FROM tags {where}", args).fetchall()
        tags: dict[tuple[str, int], list[str]] = {}
        for n, tag, version in tag_rows:
            tags.setdefault((n, version), []).append(tag)
        out = []
        for (data,) in rows:
            try:
                info = _artifact_decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise StorageError(f"{self.path}: an artifact record is corrupt ({exc})") from exc
            out.append(
                msgspec.structs.replace(
                    info, tags=tuple(sorted(tags.get((info.name, info.version), ())))
                )
            )
        return out

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        check_tag(tag)
        with self._tx() as db:
            if (
                db.execute(
                    "SELECT 1 FROM artifacts WHERE name = ? AND version = ?", (name, version)
                ).fetchone()
                is None
            ):
                raise ArtifactError(f"cannot tag {name}@{version} in {self.url}: no such version")
            db.execute(
                "INSERT OR REPLACE INTO tags (name, tag, version) VALUES (?, ?, ?)",
                (name, tag, version),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()
