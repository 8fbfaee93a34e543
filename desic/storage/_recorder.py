"""``StorageRecorder``: the ``RunRecorder`` seam of ``CompileTask`` backed by a store.

A compile run records every evaluation (by key) and every scored candidate as it happens.
Resuming is a deterministic replay: the seeded optimizer runs again from the start, every
evaluation already recorded is answered from the store instead of the LM, and candidates
already in the history are not appended a second time (their index is the position in the
replayed history, which the replay reproduces).

Secrets: nothing secret should reach a recorder (LM descriptions are secret-free by
contract), but error texts come from third parties. As a last line of defence every record
is scrubbed of API-key-looking strings and of the values of ``*_API_KEY``/``*_TOKEN``/
``*_SECRET`` environment variables before it is written.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any

import msgspec

from .. import events
from ._base import Storage

__all__ = ["StorageRecorder", "redact"]

_KEY_PATTERN = re.compile(
    rb"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_\-]{8,}|(?:Bearer|bearer)\s+[A-Za-z0-9._\-]{8,})"
)
_SECRET_ENV = re.compile(r".*(_API_KEY|_TOKEN|_SECRET|_PASSWORD)$")
REDACTED = b"<redacted>"


def _env_secrets() -> list[bytes]:
    found = []
    for name, value in os.environ.items():
        if _SECRET_ENV.fullmatch(name) and len(value) >= 8:
            found.append(value.encode())
    return found


def redact(value: Any, extra: list[bytes] | None = None) -> Any:
    """``value`` with API-key-looking strings and known secret values replaced.

    Works on the JSON encoding, so it reaches every nested string; returns ``value`` itself
    (no copy) when there is nothing to replace.
    """
    raw = msgspec.json.encode(value)
    cleaned = _KEY_PATTERN.sub(REDACTED, raw)
    for secret in extra if extra is not None else _env_secrets():
        if secret in cleaned:
            cleaned = cleaned.replace(secret, REDACTED)
    if cleaned == raw:
        return value
    return msgspec.json.decode(cleaned)


class StorageRecorder:
    """Records a compile run's evaluations and candidates into ``storage`` under ``run_id``."""

    def __init__(self, storage: Storage, run_id: str):
        self.storage = storage
        self.run_id = run_id
        run = storage.get_run(run_id)
        self.best_score = run.best_score
        self._recorded = {c.get("index") for c in storage.history(run_id)}
        self._secrets = _env_secrets()
        self.replayed_candidates = 0

    def get_evaluation(self, key: str) -> dict[str, Any] | None:
        return self.storage.get_evaluation(self.run_id, key)

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None:
        self.storage.put_evaluation(self.run_id, key, redact(record, self._secrets))

    def add_candidate(self, record: dict[str, Any]) -> None:
        index = record.get("index")
        if index is not None and index in self._recorded:
            self.replayed_candidates += 1  # a resumed run replaying what the history holds
            return
        self.storage.add_candidate(self.run_id, redact(record, self._secrets))
        self._recorded.add(index)
        score = record.get("score")
        if isinstance(score, (int, float)) and (self.best_score is None or score > self.best_score):
            self.best_score = float(score)
            self.storage.update_run(self.run_id, best_score=self.best_score)

    def checkpoint(self, state: Mapping[str, Any]) -> None:
        """Keep ``state`` (JSON data) as the run's checkpoint, replacing the previous one."""
        self.storage.put_checkpoint(self.run_id, redact(dict(state), self._secrets))
        events.emit("checkpoint", run_id=self.run_id)

    def last_checkpoint(self) -> dict[str, Any] | None:
        return self.storage.get_checkpoint(self.run_id)

    def __repr__(self) -> str:
        return f"<StorageRecorder {self.storage.url} run={self.run_id}>"
