"""``tinydb://path.json``: the whole store in one JSON document, through TinyDB.

Good for small stores you want to read with your eyes or diff; every write rewrites the
file, so it slows down as the store grows (use ``sqlite://`` for long optimizer runs).

Safety, on top of TinyDB (which has neither): the document is replaced atomically (a
temporary file, fsync, rename: see ``_fs.atomic_write``), writers hold an ``flock`` on
``path.json.lock``, and every operation reads the current file (a parsed copy is reused
while the file's inode, size and mtime are unchanged), so several processes can share a
store. A file that does not parse raises ``StorageError`` naming it; it is never reset.

Tables: ``desic`` (store format), ``runs``, ``candidates`` (in insertion order = document
id order), ``evaluations``, ``checkpoints``, ``run_programs``, ``artifacts``, ``tags``.
"""

from __future__ import annotations

import base64
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar, Unpack

import msgspec
from tinydb import Query, TinyDB
from tinydb.storages import Storage as _TinyStorage

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
from ._fs import FileLock, atomic_write, encode_json, ensure_dir

__all__ = ["TinyDBStorage"]

STORE_FORMAT = 1
T = TypeVar("T")
Q = Query()


class _AtomicJSONStorage(_TinyStorage):
    """TinyDB storage: msgspec JSON, atomic rewrites, and a parsed copy reused while unchanged."""

    def __init__(self, path: Path):
        self.path = path
        self._cache: dict[str, Any] | None = None
        self._stamp: tuple[int, int, int] | None = None

    def read(self) -> dict[str, Any] | None:
        try:
            fh = open(self.path, "rb")  # noqa: SIM115
        except FileNotFoundError:
            self._cache = self._stamp = None
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        with fh:
            st = os.fstat(fh.fileno())
            stamp = (st.st_ino, st.st_size, st.st_mtime_ns)
            if stamp == self._stamp and self._cache is not None:
                return self._cache
            raw = fh.read()
        try:
            data = msgspec.json.decode(raw)
            if not isinstance(data, dict):
                raise msgspec.DecodeError("the top level is not an object")
        except msgspec.DecodeError as exc:
            self._cache = self._stamp = None
            raise StorageError(
                f"{self.path} is corrupt or truncated ({exc}); it was not modified. Restore it "
                "from a backup or move it away to start a new store"
            ) from exc
        self._cache, self._stamp = data, stamp
        return data

    def write(self, data: dict[str, Any]) -> None:
        self._cache = self._stamp = None
        atomic_write(self.path, encode_json(data))
        st = os.stat(self.path)
        self._cache, self._stamp = data, (st.st_ino, st.st_size, st.st_mtime_ns)

    def invalidate(self) -> None:
        self._cache = self._stamp = None


def _copy(value: T) -> T:
    """A deep copy (through JSON) so callers never hold the cached document's objects."""
    return msgspec.json.decode(msgspec.json.encode(value))  # type: ignore[no-any-return]


def _bytes_doc(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _doc_bytes(doc: Mapping[str, Any]) -> bytes:
    if "text" in doc:
        return str(doc["text"]).encode("utf-8")
    return base64.b64decode(doc["b64"])


class TinyDBStorage(BaseStorage):
    def __init__(self, location: str):
        if not location:
            raise ConfigError("tinydb:// needs a file path, e.g. tinydb://.desic/desic.json")
        self.path = Path(location).expanduser().absolute()
        self.url = f"tinydb://{location}"
        ensure_dir(self.path.parent, self.url)
        if self.path.is_dir():
            raise ConfigError(
                f"{self.url}: {self.path} is a folder; give a file path such as {self.path / 'desic.json'}"
            )
        self._storage = _AtomicJSONStorage(self.path)
        self._lock = FileLock(self.path.with_name(self.path.name + ".lock"))
        try:
            self._lock.path.touch(exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"cannot write {self.url} ({self.path.parent}): {exc.strerror or exc}; choose a writable "
                "location (or set DESIC_STORAGE)"
            ) from exc
        self._check_format()

    # -- plumbing ---------------------------------------------------------------------------
    def _read(self, fn: Callable[[TinyDB], T]) -> T:
        """Run ``fn`` on the current document.

        No inter-process lock is needed (the file is replaced atomically), but this process's
        threads are kept out while one of them is inside a write: TinyDB updates the parsed
        document in place, and the parsed copy is shared.
        """
        with self._lock.thread_lock:
            return fn(TinyDB(storage=lambda: self._storage))

    def _write(self, fn: Callable[[TinyDB], T]) -> T:
        """Run ``fn`` under the store's exclusive lock, on a fresh view of the file."""
        with self._lock():
            try:
                return fn(TinyDB(storage=lambda: self._storage))
            except BaseException:
                self._storage.invalidate()
                raise

    def _check_format(self) -> None:
        def check(db: TinyDB) -> None:
            rows = db.table("desic").all()
            if not rows:
                db.table("desic").insert({"store": "desic", "format": STORE_FORMAT})
                return
            found = rows[0].get("format")
            if not isinstance(found, int) or found > STORE_FORMAT:
                raise StorageError(
                    f"{self.path} has store format {found!r}, newer than this desic understands "
                    f"({STORE_FORMAT}); upgrade desic (pip install -U desic)"
                )

        if self._read(lambda db: bool(db.table("desic").all())):
            self._read(check)
        else:
            self._write(check)

    @staticmethod
    def _run_doc(db: TinyDB, run_id: str) -> dict[str, Any] | None:
        return db.table("runs").get(Q.id == run_id)

    def _info(self, db: TinyDB, run_id: str) -> RunInfo:
        doc = self._run_doc(db, run_id)
        if doc is None:
            raise run_not_found(run_id, self.url)
        try:
            return msgspec.convert(dict(doc), RunInfo)
        except msgspec.ValidationError as exc:
            raise StorageError(
                f"{self.path}: the record of run {run_id!r} is corrupt ({exc})"
            ) from exc

    def _with_count(self, db: TinyDB, info: RunInfo) -> RunInfo:
        return msgspec.structs.replace(
            info, candidates=db.table("candidates").count(Q.run == info.id)
        )

    # -- runs -----------------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        info = new_run(info)

        def op(db: TinyDB) -> None:
            if self._run_doc(db, info.id) is not None:
                raise run_exists(info.id, self.url)
            db.table("runs").insert(msgspec.to_builtins(info))

        self._write(op)
        return info

    def get_run(self, run_id: str) -> RunInfo:
        return self._read(lambda db: self._with_count(db, self._info(db, run_id)))

    def list_runs(self) -> list[RunInfo]:
        def op(db: TinyDB) -> list[RunInfo]:
            ids = [doc["id"] for doc in db.table("runs").all()]
            runs = [self._with_count(db, self._info(db, run_id)) for run_id in ids]
            return sorted(runs, key=lambda r: r.created_at)

        return self._read(op)

    def update_run(self, run_id: str, **changes: Unpack[RunUpdate]) -> RunInfo:
        def op(db: TinyDB) -> RunInfo:
            info = apply_update(self._info(db, run_id), **changes)
            db.table("runs").update(msgspec.to_builtins(info), Q.id == run_id)
            return self._with_count(db, info)

        return self._write(op)

    def _require(self, db: TinyDB, run_id: str) -> None:
        if self._run_doc(db, run_id) is None:
            raise run_not_found(run_id, self.url)

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        data = msgspec.json.decode(encode_json(record))  # refuse non-JSON data, copy the rest

        def op(db: TinyDB) -> None:
            self._require(db, run_id)
            db.table("candidates").insert({"run": run_id, "data": data})

        self._write(op)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        def op(db: TinyDB) -> list[dict[str, Any]]:
            self._require(db, run_id)
            docs = sorted(db.table("candidates").search(Q.run == run_id), key=lambda d: d.doc_id)
            return _copy([d["data"] for d in docs])

        return self._read(op)

    def _put_keyed(self, table: str, run_id: str, key: str | None, data: Any) -> None:
        data = msgspec.json.decode(encode_json(data))

        def op(db: TinyDB) -> None:
            self._require(db, run_id)
            cond = (Q.run == run_id) & (Q.key == key)
            db.table(table).upsert({"run": run_id, "key": key, "data": data}, cond)

        self._write(op)

    def _get_keyed(self, table: str, run_id: str, key: str | None, *, require: bool) -> Any:
        def op(db: TinyDB) -> Any:
            if require:
                self._require(db, run_id)
            doc = db.table(table).get((Q.run == run_id) & (Q.key == key))
            return None if doc is None else _copy(doc["data"])

        return self._read(op)

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        self._put_keyed("evaluations", run_id, key, record)

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None:
        return self._get_keyed("evaluations", run_id, key, require=False)  # type: ignore[no-any-return]

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        self._put_keyed("checkpoints", run_id, None, state)

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        return self._get_keyed("checkpoints", run_id, None, require=True)  # type: ignore[no-any-return]

    def put_run_program(self, run_id: str, data: bytes) -> None:
        self._put_keyed("run_programs", run_id, None, _bytes_doc(bytes(data)))

    def get_run_program(self, run_id: str) -> bytes | None:
        doc = self._get_keyed("run_programs", run_id, None, require=True)
        return None if doc is None else _doc_bytes(doc)

    # -- artifacts ------------------------------------------------------------------------------
    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        check_name(name, "artifact name")

        def op(db: TinyDB) -> ArtifactInfo:
            versions = [d["version"] for d in db.table("artifacts").search(Q.name == name)]
            info = artifact_info(name, max(versions, default=0) + 1, data, meta)
            db.table("artifacts").insert(
                {
                    "name": name,
                    "version": info.version,
                    "info": msgspec.to_builtins(info),
                    **_bytes_doc(bytes(data)),
                }
            )
            return info

        return self._write(op)

    def get_artifact(self, name: str, version: int) -> bytes:
        doc = self._read(
            lambda db: db.table("artifacts").get((Q.name == name) & (Q.version == version))
        )
        if doc is None:
            raise ArtifactError(f"no artifact {name}@{version} in {self.url}")
        return _doc_bytes(doc)

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        def op(db: TinyDB) -> list[ArtifactInfo]:
            docs = (
                db.table("artifacts").all()
                if name is None
                else db.table("artifacts").search(Q.name == name)
            )
            tag_docs = db.table("tags").all()
            out = []
            for doc in docs:
                try:
                    info = msgspec.convert(doc["info"], ArtifactInfo)
                except (KeyError, msgspec.ValidationError) as exc:
                    raise StorageError(
                        f"{self.path}: an artifact record is corrupt ({exc})"
                    ) from exc
                tags = sorted(
                    t["tag"]
                    for t in tag_docs
                    if t["name"] == info.name and t["version"] == info.version
                )
                out.append(msgspec.structs.replace(info, tags=tuple(tags)))
            return sorted(out, key=lambda a: (a.name, a.version))

        return self._read(op)

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        check_tag(tag)

        def op(db: TinyDB) -> None:
            if db.table("artifacts").get((Q.name == name) & (Q.version == version)) is None:
                raise ArtifactError(f"cannot tag {name}@{version} in {self.url}: no such version")
            db.table("tags").upsert(
                {"name": name, "tag": tag, "version": version}, (Q.name == name) & (Q.tag == tag)
            )

        self._write(op)

    def close(self) -> None:
        self._storage.invalidate()
