"""``memory://``: a store in this process's memory, for tests and notebooks.

``memory://`` opens a fresh, empty store; ``memory://name`` opens the store of that name,
shared by everything in the process that opens the same URL (so a program saved to
``memory://t#triage`` can be loaded back from it). Records are kept JSON-encoded, so the
store returns copies and refuses what the file backends would refuse.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any, Unpack

import msgspec

from ..errors import ArtifactError
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

__all__ = ["MemoryStorage"]


class _State:
    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.runs: dict[str, RunInfo] = {}
        self.candidates: dict[str, list[bytes]] = {}
        self.evaluations: dict[str, dict[str, bytes]] = {}
        self.checkpoints: dict[str, bytes] = {}
        self.programs: dict[str, bytes] = {}
        self.artifacts: dict[str, list[tuple[ArtifactInfo, bytes]]] = {}
        self.tags: dict[str, dict[str, int]] = {}


_named: dict[str, _State] = {}
_named_lock = threading.Lock()


class MemoryStorage(BaseStorage):
    def __init__(self, location: str = ""):
        self.url = f"memory://{location}"
        if location:
            check_name(location, "memory store name")
            with _named_lock:
                self._s = _named.setdefault(location, _State())
        else:
            self._s = _State()

    def _run(self, run_id: str) -> RunInfo:
        info = self._s.runs.get(run_id)
        if info is None:
            raise run_not_found(run_id, self.url)
        return info

    # -- runs ---------------------------------------------------------------------------
    def create_run(self, info: RunInfo) -> RunInfo:
        info = new_run(info)
        with self._s.lock:
            if info.id in self._s.runs:
                raise run_exists(info.id, self.url)
            self._s.runs[info.id] = info
            self._s.candidates[info.id] = []
            self._s.evaluations[info.id] = {}
        return info

    def get_run(self, run_id: str) -> RunInfo:
        with self._s.lock:
            info = self._run(run_id)
            return msgspec.structs.replace(info, candidates=len(self._s.candidates[run_id]))

    def list_runs(self) -> list[RunInfo]:
        with self._s.lock:
            return [self.get_run(r) for r in self._s.runs]

    def update_run(self, run_id: str, **changes: Unpack[RunUpdate]) -> RunInfo:
        with self._s.lock:
            info = apply_update(self._run(run_id), **changes)
            self._s.runs[run_id] = info
            return self.get_run(run_id)

    def add_candidate(self, run_id: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        with self._s.lock:
            self._run(run_id)
            self._s.candidates[run_id].append(data)

    def history(self, run_id: str) -> list[dict[str, Any]]:
        with self._s.lock:
            self._run(run_id)
            items = list(self._s.candidates[run_id])
        return [msgspec.json.decode(d) for d in items]

    def put_evaluation(self, run_id: str, key: str, record: Mapping[str, Any]) -> None:
        data = encode_json(record)
        with self._s.lock:
            self._run(run_id)
            self._s.evaluations[run_id][key] = data

    def get_evaluation(self, run_id: str, key: str) -> dict[str, Any] | None:
        with self._s.lock:  # like the other backends: an unknown run simply has no record
            data = self._s.evaluations.get(run_id, {}).get(key)
        return None if data is None else msgspec.json.decode(data)

    def put_checkpoint(self, run_id: str, state: Mapping[str, Any]) -> None:
        data = encode_json(state)
        with self._s.lock:
            self._run(run_id)
            self._s.checkpoints[run_id] = data

    def get_checkpoint(self, run_id: str) -> dict[str, Any] | None:
        with self._s.lock:
            self._run(run_id)
            data = self._s.checkpoints.get(run_id)
        return None if data is None else msgspec.json.decode(data)

    def put_run_program(self, run_id: str, data: bytes) -> None:
        with self._s.lock:
            self._run(run_id)
            self._s.programs[run_id] = bytes(data)

    def get_run_program(self, run_id: str) -> bytes | None:
        with self._s.lock:
            self._run(run_id)
            return self._s.programs.get(run_id)

    # -- artifacts ------------------------------------------------------------------------
    def put_artifact(
        self, name: str, data: bytes, *, meta: Mapping[str, Any] | None = None
    ) -> ArtifactInfo:
        check_name(name, "artifact name")
        with self._s.lock:
            versions = self._s.artifacts.setdefault(name, [])
            info = artifact_info(name, len(versions) + 1, data, meta)
            versions.append((info, bytes(data)))
        return info

    def get_artifact(self, name: str, version: int) -> bytes:
        with self._s.lock:
            for info, data in self._s.artifacts.get(name, []):
                if info.version == version:
                    return data
        raise ArtifactError(f"no artifact {name}@{version} in {self.url}")

    def list_artifacts(self, name: str | None = None) -> list[ArtifactInfo]:
        with self._s.lock:
            names = [name] if name is not None else sorted(self._s.artifacts)
            out = []
            for n in names:
                tags = self._s.tags.get(n, {})
                for info, _ in self._s.artifacts.get(n, []):
                    mine = tuple(sorted(t for t, v in tags.items() if v == info.version))
                    out.append(msgspec.structs.replace(info, tags=mine))
            return out

    def tag_artifact(self, name: str, version: int, tag: str) -> None:
        check_tag(tag)
        with self._s.lock:
            if not any(i.version == version for i, _ in self._s.artifacts.get(name, [])):
                raise ArtifactError(f"cannot tag {name}@{version} in {self.url}: no such version")
            self._s.tags.setdefault(name, {})[tag] = version

    def close(self) -> None:
        pass
