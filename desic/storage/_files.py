"""``msgspec://dir`` (alias ``file://dir``): a folder of plain files, one folder per run.

Layout (everything JSON, encoded and decoded with msgspec)::

    dir/desic-store.json              store format marker
    dir/.lock                         writers hold an flock on it
    dir/runs/<run_id>/run.json        the run record (rewritten atomically)
    dir/runs/<run_id>/candidates.jsonl   the history: one candidate per line, append-only
    dir/runs/<run_id>/evaluations.jsonl  recorded evaluations: [key, record] per line, append-only
    dir/runs/<run_id>/checkpoint.json    the latest checkpoint (rewritten atomically)
    dir/runs/<run_id>/program.json       the run's final program (an artifact file)
    dir/artifacts/<name>/index.json      versions and tags of <name> (rewritten atomically)
    dir/artifacts/<name>/v<n>.json       version n (written once)

Why this shape: the logs can be tailed (``tail -f candidates.jsonl``) and copied with
``rsync``; appends are cheap (no rewrite) and each line is written by one ``write`` call
under the lock, so concurrent writers never interleave. Appends are not fsynced (a process
crash loses nothing; a power cut may lose the last lines); rewrites are atomic and fsynced.
A line that does not parse (a torn or edited file) raises ``StorageError`` naming the file
and line; nothing is dropped silently.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Unpack

import msgspec

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
from ._fs import FileLock, atomic_write, encode_json, ensure_dir, read_json

__all__ = ["FileStorage"]

STORE_FORMAT = 1
MARKER = "desic-store.json"


class _Index(msgspec.Struct):
    versions: list[ArtifactInfo] = []
    tags: dict[str, int] = {}


class _EvalCache:
    """Evaluations of one run read so far, and where reading stopped (to read only new lines)."""

    def __init__(self) -> None:
        self.records: dict[str, bytes] = {}
        self.offset = 0
        self.line = 0


class FileStorage(BaseStorage):
    def __init__(self, location: str):
        if not location:
            raise ConfigError("msgspec:// needs a folder, e.g. msgspec://.desic/store")
        self.root = Path(location).expanduser().absolute()
        self.url = f"msgspec://{location}"
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"{self.url}: {self.root} is a file; msgspec:// takes a folder path")
        ensure_dir(self.root, self.url)
        self._lock = FileLock(self.root / ".lock")
        self._evals: dict[str, _EvalCache] = {}
        self._evals_lock = threading.Lock()
        self._check_format()

    # -- plumbing -----------------------------------------------------------------------------
    def _check_format(self) -> None:
        marker = self.root / MARKER
        found = read_json(marker, what="store marker")
        if found is None:
            with self._lock():
                if read_json(marker, what="store marker") is None:
                    if any(p.name not in (".lock",) for p in self.root.iterdir()):
                        raise ConfigError(
                            f"{self.root} is not empty and is not a desic store; give msgspec:// an "
                            "empty or new folder"
                        )
                    atomic_write(marker, encode_json({"store": "desic", "format": STORE_FORMAT}))
            return
        if not isinstance(found, dict) or not isinstance(found.get("format"), int):
            raise StorageError(f"{marker} is corrupt (not a desic store marker)")
        if found["format"] > STORE_FORMAT:
            raise StorageError(
                f"{self.root} has store format {found['format']}, newer than this desic understands "
                f"({STORE_FORMAT}); upgrade desic (pip install -U desic)"
            )

    def _run_dir(self, run_id: str) -> Path:
        return self.root / "runs" / check_name(run_id, "run id")

    def _info(self, run_id: str) -> RunInfo:
        path = self._run_dir(run_id) / "run.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise run_not_found(run_id, self.url) from None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            return msgspec.json.decode(data, type=RunInfo)
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"{path} is corrupt or truncated ({exc}); it was not modified"
            ) from exc

    def _lines(self, path: Path, start: int = 0, first_line: int = 0) -> tuple[list[bytes], int]:
        """Complete lines of ``path`` from byte ``start`` (read under the shared lock)."""
        with self._lock(shared=True):
            try:
                with open(path, "rb") as fh:
                    fh.seek(start)
                    raw = fh.read()
            except FileNotFoundError:
                return [], start
            except OSError as exc:
                raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        if raw and not raw.endswith(b"\n"):
            line = first_line + raw.count(b"\n") + 1
            raise StorageError(
                f"{path} is truncated: line {line} is incomplete (the file was cut while written or "
                "edited); it was not modified. Remove the incomplete last line to continue"
            )
        return raw.splitlines(), start + len(raw)

    def _decode_line(self, path: Path, number: int, line: bytes) -> Any:
        try:
            return msgspec.json.decode(line)
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"{path} is corrupt at line {number} ({exc}); it was not modified"
            ) from exc

    def _append(self, path: Path, line: bytes) -> None:
        """Append one line with a single ``write`` (callers hold the exclusive lock)."""
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        try:
            view = memoryview(line + b"\n")
            while view:
                written = os.write(fd, view)
                view = view[written:]
        except OSError as exc:
            raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc
        finally:
            os.close(fd)

    def _count(self, run_id: str) -> int:
        path = self._run_dir(run_id) / "candidates.jsonl"
        lines, _ = self._lines(path)
        return len(lines)

    # -- runs -------------------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        info = new_run(info)
        folder = self._run_dir(info.id)
        with self._lock():
            if (folder / "run.json").exists():
                raise run_exists(info.id, self.url)
            ensure_dir(folder, self.url)
            atomic_write(folder / "run.json", encode_json(info), sync_dir=True)
        return info

    def get_run(self, run_id: str) -> RunInfo:
        return msgspec.structs.replace(self._info(run_id), candidates=self._count(run_id))

    def list_runs(self) -> list[RunInfo]:
        runs_dir = self.root / "runs"
        if not runs_dir.is_dir():
            return []
        runs = [self.get_run(p.name) for p in runs_dir.iterdir() if (p / "run.json").exists()]
        return sorted(runs, key=lambda r: (r.created_at, r.id))

    def update_run(self, run_id: str, **changes: Unpack[RunUpdate]) -> RunInfo:
        with self._lock():
            info = apply_update(self._info(run_id), **changes)
            atomic_write(self._run_dir(run_id) / "run.json", encode_json(info))
        return msgspec.structs.replace(info, candidates=self._count(run_id))

    def _require(self, run_id: str) -> Path:
        folder = self._run_dir(run_id)
        if not (folder / "run.json").exists():
            raise run_not_found(run_id, self.url)
        return folder

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        line = encode_json(record)
        with self._lock():
            self._append(self._require(run_id) / "candidates.jsonl", line)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        path = self._require(run_id) / "candidates.jsonl"
        lines, _ = self._lines(path)
        return [self._decode_line(path, i + 1, line) for i, line in enumerate(lines)]

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        line = encode_json([key, record])
        with self._lock():
            self._append(self._require(run_id) / "evaluations.jsonl", line)

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None:
        path = self._run_dir(run_id) / "evaluations.jsonl"
        with self._evals_lock:
            cache = self._evals.setdefault(run_id, _EvalCache())
            if key not in cache.records:
                lines, cache.offset = self._lines(path, cache.offset, cache.line)
                for line in lines:
                    cache.line += 1
                    item = self._decode_line(path, cache.line, line)
                    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)):
                        raise StorageError(
                            f"{path} is corrupt at line {cache.line} (not a [key, record] pair)"
                        )
                    cache.records[item[0]] = msgspec.json.encode(item[1])
            data = cache.records.get(key)
        return None if data is None else msgspec.json.decode(data)

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        data = encode_json(state)
        with self._lock():
            atomic_write(self._require(run_id) / "checkpoint.json", data)

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        return read_json(self._require(run_id) / "checkpoint.json", what="checkpoint")  # type: ignore[no-any-return]

    def put_run_program(self, run_id: str, data: bytes) -> None:
        with self._lock():
            atomic_write(self._require(run_id) / "program.json", bytes(data))

    def get_run_program(self, run_id: str) -> bytes | None:
        path = self._require(run_id) / "program.json"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc

    # -- artifacts ------------------------------------------------------------------------------
    def _artifact_dir(self, name: str) -> Path:
        return self.root / "artifacts" / check_name(name, "artifact name")

    def _index(self, name: str) -> _Index:
        path = self._artifact_dir(name) / "index.json"
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return _Index()
        except OSError as exc:
            raise StorageError(f"cannot read {path}: {exc.strerror or exc}") from exc
        try:
            return msgspec.json.decode(data, type=_Index)
        except msgspec.DecodeError as exc:
            raise StorageError(
                f"{path} is corrupt or truncated ({exc}); it was not modified"
            ) from exc

    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        folder = self._artifact_dir(name)
        with self._lock():
            ensure_dir(folder, self.url)
            index = self._index(name)
            info = artifact_info(
                name, max((v.version for v in index.versions), default=0) + 1, data, meta
            )
            atomic_write(folder / f"v{info.version}.json", bytes(data))
            index.versions.append(info)
            atomic_write(folder / "index.json", msgspec.json.encode(index), sync_dir=True)
        return info

    def get_artifact(self, name: str, version: int) -> bytes:
        path = self._artifact_dir(name) / f"v{int(version)}.json"
        try:
            return path.read_bytes()
        except FileNotFoundError:
            raise ArtifactError(
                f"no artifact {name}@{version} in {self.url} ({path} is missing)"
            ) from None
        except OSError as exc:
            raise ArtifactError(f"cannot read {path}: {exc.strerror or exc}") from exc

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        if name is not None:
            names = [name]
        else:
            folder = self.root / "artifacts"
            names = (
                sorted(p.name for p in folder.iterdir() if p.is_dir()) if folder.is_dir() else []
            )
        out = []
        for n in names:
            index = self._index(n)
            for info in sorted(index.versions, key=lambda v: v.version):
                tags = tuple(sorted(t for t, v in index.tags.items() if v == info.version))
                out.append(msgspec.structs.replace(info, tags=tags))
        return out

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        check_tag(tag)
        folder = self._artifact_dir(name)
        with self._lock():
            index = self._index(name)
            if not any(v.version == version for v in index.versions):
                raise ArtifactError(f"cannot tag {name}@{version} in {self.url}: no such version")
            index.tags[tag] = version
            atomic_write(folder / "index.json", msgspec.json.encode(index))

    def close(self) -> None:
        with self._evals_lock:
            self._evals.clear()
