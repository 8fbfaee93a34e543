"""``StorageRecorder``: the ``RunRecorder`` seam of ``CompileTask`` backed by a store.

A compile run records every evaluation (by key) and every scored candidate as it happens.
Resuming is a deterministic replay: the seeded optimizer runs again from the start, every
evaluation already recorded is answered from the store instead of the LM, and candidates
already in the history are not appended a second time (their index is the position in the
replayed history, which the replay reproduces).

Secrets: nothing secret should reach a recorder (LM descriptions are secret-free by
contract), but error texts come from third parties. As a last line of defence every record
is scrubbed (``desic._redact.redact``, re-exported here as ``desic.storage.redact``: the
one redaction every exit of desic uses) before it is written.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .. import events
from .._redact import redact, secrets
from ._base import Storage

__all__ = ["StorageRecorder", "redact"]

class StorageRecorder:
    """Records a compile run's evaluations and candidates into ``storage`` under ``run_id``."""

    def __init__(self, storage: Storage, run_id: str):
        self.storage = storage
        self.run_id = run_id
        run = storage.get_run(run_id)
        self.best_score = run.best_score
        self._recorded = {c.get("index") for c in storage.history(run_id)}
        self._secrets = secrets()
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
