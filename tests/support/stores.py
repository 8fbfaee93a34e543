"""Storage backends under test and small store helpers (no tests here).

Any backend (built-in or registered by a third party) must pass the storage suite; add
yours to ``BACKENDS`` the way tinydb's own suite parametrizes over its storages.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import desic.storage as ds

BACKENDS = ["memory", "sqlite", "tinydb", "msgspec", "postgres"]


def url_for(backend: str, root: Path) -> str:
    """A new, empty store of ``backend`` (under ``root`` for the file backends; a new database
    on the session's real server for ``postgres``, which skips when psycopg is missing)."""
    if backend == "postgres":
        from tests.support.postgres import fresh_url

        return fresh_url()
    return {
        "memory": "memory://",
        "sqlite": f"sqlite://{root}/store.db",
        "tinydb": f"tinydb://{root}/store.json",
        "msgspec": f"msgspec://{root}/store",
    }[backend]


def make_run(store: ds.Storage, **fields: Any) -> ds.RunInfo:
    run_id = fields.pop("id") if "id" in fields else ds.new_run_id()
    return store.create_run(ds.RunInfo(id=run_id, **fields))


RECORD = {
    "index": 0,
    "score": 0.5,
    "note": "naïve — ünïcode ✓",
    "usage": [3, 120, 40, 0.0012],
    "program": {"nodes": [{"id": "a", "demos": [{"x": None, "y": [1, 2.5, True]}]}]},
}
