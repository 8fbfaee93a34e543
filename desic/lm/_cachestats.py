"""What the LM cache stores share for administration: ``CacheStats`` and the checks of
``prune``'s limits (the sqlite store in ``stores``, the PostgreSQL one in ``_pgcache``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

__all__ = ["CacheStats"]


@dataclass(frozen=True)
class CacheStats:
    """What a cache holds: ``SqliteStore.stats()`` (and ``PostgresCacheStore.stats()``).

    ``value_bytes`` sums the cached answers; ``file_bytes`` is the space on disk (the file
    and its ``-wal``; for PostgreSQL, the table's). ``path`` is the file, or the URL of a
    PostgreSQL cache without its password. ``oldest`` and ``newest`` are the ``created`` times (seconds since
    the epoch) of the oldest and newest entries, None when the cache is empty.
    """

    path: Path | str
    entries: int
    value_bytes: int
    file_bytes: int
    oldest: float | None
    newest: float | None


def _check_limit(name: str, value: float | None, meaning: str, *, integer: bool) -> None:
    """``value`` is None, or a number >= 0 (an int when ``integer``)."""
    if value is None:
        return
    number = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, int if integer else (int, float)):
        raise TypeError(f"{name}={value!r}: pass {number}, {meaning}, or None for no limit")
    if math.isnan(value) or value < 0:
        problem = "is not a number" if math.isnan(value) else "is negative"
        raise ValueError(f"{name}={value!r} {problem}; pass {number} >= 0, {meaning}, or None for no limit")
