"""Inspecting and bounding the LM cache file: ``SqliteStore.stats/prune/clear``, ``desic cache``."""

from __future__ import annotations

import json
import math
import re
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from desic.cli import app
from desic.cli._cache import human_size, parse_duration, parse_size  # private: unit tests
from desic.errors import StorageError
from desic.lm.stores import CacheStats, SqliteStore

DAY = 86400.0


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("DESIC_CACHE_DIR", str(tmp_path / "default-cache"))


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path.resolve() / "lm.sqlite3"


@pytest.fixture
def store(path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(path)
    yield s
    s.close()


def fill(store: SqliteStore, entries: dict[str, tuple[int, float]]) -> None:
    """``{key: (value size, created)}``: put each value, then backdate it with sqlite3 directly."""
    for key, (size, _) in entries.items():
        store.put(key, key[:1].encode() * size)
    with sqlite3.connect(store.path) as conn:
        conn.executemany("UPDATE entries SET created = ? WHERE key = ?", [(created, key) for key, (_, created) in entries.items()])
    conn.close()


def keys(target: SqliteStore | Path) -> set[str]:
    with sqlite3.connect(target.path if isinstance(target, SqliteStore) else target) as conn:
        found = {row[0] for row in conn.execute("SELECT key FROM entries")}
    conn.close()
    return found


def aged(now: float, *ages_in_days: float, size: int = 100) -> dict[str, tuple[int, float]]:
    """Entries ``k0, k1, ...`` of ``size`` bytes, created the given numbers of days ago."""
    return {f"k{i}": (size, now - age * DAY) for i, age in enumerate(ages_in_days)}


# --- stats ------------------------------------------------------------------------------------


def test_stats_counts_entries_bytes_and_times(store: SqliteStore, path: Path) -> None:
    fill(store, {"a": (10, 1000.0), "b": (20, 3000.0), "c": (30, 2000.0)})
    stats = store.stats()
    assert isinstance(stats, CacheStats)
    assert (stats.path, stats.entries, stats.value_bytes) == (path, 3, 60)
    assert (stats.oldest, stats.newest) == (1000.0, 3000.0)
    wal = path.with_name(path.name + "-wal")
    on_disk = path.stat().st_size + (wal.stat().st_size if wal.exists() else 0)
    assert stats.file_bytes == on_disk >= path.stat().st_size > 0


def test_stats_of_an_empty_cache(store: SqliteStore) -> None:
    stats = store.stats()
    assert (stats.entries, stats.value_bytes, stats.oldest, stats.newest) == (0, 0, None, None)
    assert stats.file_bytes > 0


def test_a_file_that_is_not_a_cache_is_a_storage_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-db.sqlite3"
    bad.write_bytes(b"this is not sqlite" * 100)
    store = SqliteStore(bad, busy_timeout=0.2)
    with pytest.raises(StorageError, match="not-a-db.sqlite3.*delete it"):
        store.stats()
    with pytest.raises(StorageError, match="cannot be written"):
        store.prune(max_entries=1)


# --- prune ------------------------------------------------------------------------------------


def test_prune_by_age_deletes_only_older_entries(store: SqliteStore) -> None:
    now = time.time()
    fill(store, aged(now, 40, 31, 29, 1, 0))
    assert store.prune(older_than=30 * DAY) == 2
    assert keys(store) == {"k2", "k3", "k4"}
    assert store.prune(older_than=30 * DAY) == 0


def test_prune_by_count_deletes_the_oldest_first(store: SqliteStore) -> None:
    # keys sort the other way round from their ages: the order must come from `created`
    fill(store, {"e": (10, 100.0), "d": (10, 200.0), "c": (10, 300.0), "b": (10, 400.0), "a": (10, 500.0)})
    assert store.prune(max_entries=2) == 3
    assert keys(store) == {"a", "b"}
    assert store.prune(max_entries=2) == 0
    assert store.prune(max_entries=0) == 2
    assert len(store) == 0


def test_prune_by_bytes_deletes_the_oldest_until_the_values_fit(store: SqliteStore) -> None:
    fill(store, {"old": (100, 1.0), "older": (100, 0.5), "mid": (100, 2.0), "new": (300, 3.0)})
    total = 600
    assert store.prune(max_bytes=total) == 0  # exactly at the limit: nothing to do
    assert store.prune(max_bytes=450) == 2  # new (300) + mid (100) fit; old would make 500
    assert keys(store) == {"new", "mid"}
    assert store.stats().value_bytes == 400
    assert store.prune(max_bytes=299) == 2  # even the newest alone is too big
    assert len(store) == 0


def test_prune_applies_age_then_count_then_bytes(store: SqliteStore) -> None:
    now = time.time()
    fill(store, aged(now, 50, 40, 5, 4, 3, 2, 1, size=100))
    # age removes k0, k1; count keeps the newest 4 (k3..k6); bytes keeps the newest 3
    assert store.prune(older_than=30 * DAY, max_entries=4, max_bytes=350) == 4
    assert keys(store) == {"k4", "k5", "k6"}


def test_prune_without_limits_deletes_nothing(store: SqliteStore) -> None:
    fill(store, aged(time.time(), 100, 1))
    assert store.prune() == 0
    assert len(store) == 2


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"older_than": -1.0}, ValueError, "older_than=-1.0 is negative; pass a number >= 0"),
        ({"max_entries": -5}, ValueError, "max_entries=-5 is negative; pass a whole number >= 0"),
        ({"max_bytes": -1}, ValueError, "max_bytes=-1 is negative"),
        ({"older_than": math.nan}, ValueError, "older_than=nan is not a number"),
        ({"max_entries": 2.5}, TypeError, "max_entries=2.5: pass a whole number"),
        ({"max_bytes": "500MB"}, TypeError, "max_bytes='500MB': pass a whole number"),
        ({"older_than": "30d"}, TypeError, "older_than='30d': pass a number"),
        ({"max_entries": True}, TypeError, "max_entries=True"),
    ],
)
def test_prune_rejects_bad_limits_before_deleting_anything(
    store: SqliteStore, kwargs: dict[str, Any], error: type[Exception], message: str
) -> None:
    fill(store, aged(time.time(), 100, 1))
    limits = {"older_than": 0.0, "max_entries": 0, **kwargs}  # the valid ones would delete all
    with pytest.raises(error, match=re.escape(message)) as info:
        store.prune(**limits)
    assert "None for no limit" in str(info.value)
    assert len(store) == 2


def test_prune_gives_the_wal_back_and_vacuum_shrinks_the_file(store: SqliteStore, path: Path) -> None:
    for i in range(300):
        store.put(f"k{i}", b"x" * 2000)
    wal = path.with_name(path.name + "-wal")
    assert store.prune(max_entries=10) == 290
    assert not wal.exists() or wal.stat().st_size == 0  # checkpointed and truncated
    full = store.file_bytes()
    assert store.prune(max_entries=10, vacuum=True) == 0
    assert store.file_bytes() < full / 5
    assert len(store) == 10


def test_clear_deletes_everything_and_says_how_many(store: SqliteStore) -> None:
    fill(store, aged(time.time(), 3, 2, 1))
    assert store.clear() == 3
    assert len(store) == 0 and store.stats().value_bytes == 0
    assert store.clear() == 0


def test_a_pruned_cache_still_serves_get_and_put(store: SqliteStore, path: Path) -> None:
    fill(store, aged(time.time(), 3, 2, 1))
    assert store.prune(max_entries=1) == 2
    assert store.get("k0") is None and store.get("k2") == b"k" * 100
    store.put("fresh", b"answer")
    assert store.get("fresh") == b"answer"
    store.clear(vacuum=True)
    store.put("after-clear", b"again")
    other = SqliteStore(path)  # another connection (as another process would have) sees it all
    try:
        assert other.get("after-clear") == b"again"
        assert len(other) == 1
    finally:
        other.close()


def test_a_cache_file_from_before_the_index_keeps_working(path: Path) -> None:
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute(
            "CREATE TABLE entries (key TEXT PRIMARY KEY, value BLOB NOT NULL, created REAL NOT NULL) WITHOUT ROWID"
        )
        conn.execute("INSERT INTO entries VALUES ('old', x'0102', 10.0), ('new', x'03', 20.0)")
    conn.close()
    store = SqliteStore(path)
    try:
        assert store.get("old") == b"\x01\x02"
        indexes = store._connection().execute("SELECT name FROM sqlite_master WHERE type = 'index'").fetchall()
        assert ("entries_created",) in indexes
        plan = " ".join(
            str(row[-1]) for row in store._connection().execute(
                "EXPLAIN QUERY PLAN SELECT key FROM entries ORDER BY created, key LIMIT 1"
            )
        )
        assert "entries_created" in plan
        assert store.prune(max_entries=1) == 1
        assert store.get("new") == b"\x03"
    finally:
        store.close()


_WRITER = """
import sys, time
from desic.lm.stores import SqliteStore
start = float(sys.argv[3])
while time.time() < start:
    pass
store = SqliteStore(sys.argv[1])
for i in range(400):
    store.put(f"{sys.argv[2]}-{i}", b"v" * 200)
print("ok")
"""


def test_prune_while_other_processes_write_does_not_raise(path: Path) -> None:
    store = SqliteStore(path)
    store.put("seed", b"s")  # the file exists, in WAL mode, before the writers start
    start = time.time() + 1.5
    writers = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(w), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for w in range(2)
    ]
    try:
        while time.time() < start:
            time.sleep(0.01)
        removed: list[int] = []
        while any(w.poll() is None for w in writers) or len(removed) < 3:
            removed.append(store.prune(max_entries=50))
            assert store.stats().entries <= 50 + 800
            time.sleep(0.005)
        outputs = [w.communicate(timeout=120) for w in writers]
    finally:
        for w in writers:
            if w.poll() is None:
                w.kill()
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    assert all(out.strip() == "ok" for out, _ in outputs)
    removed.append(store.prune(max_entries=50))
    assert len(store) == 50
    assert sum(removed) == 1 + 800 - 50  # every entry written was counted once, when deleted
    store.put("after", b"a")
    assert store.get("after") == b"a"
    store.close()


# --- the CLI ----------------------------------------------------------------------------------


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def flat(text: str) -> str:
    """The text with rich's box drawing and line wrapping taken out."""
    return " ".join(text.replace("│", " ").replace("╭", " ").replace("╰", " ").split())


def assert_clean_error(result: Any, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: "), result.stderr
    assert any(line.startswith("fix: ") for line in lines)
    for needle in needles:
        assert needle in result.stderr


@pytest.fixture
def filled(store: SqliteStore, path: Path) -> Path:
    """Five entries of 1000 bytes, created 40, 35, 10, 2 and 1 days ago."""
    fill(store, aged(time.time(), 40, 35, 10, 2, 1, size=1000))
    store.close()
    return path


@pytest.mark.parametrize("command", [["cache"], ["cache", "info"], ["cache", "prune"], ["cache", "clear"]])
def test_every_cache_command_has_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0, result.output
    assert "--cache" in result.output or "info" in result.output


def test_info_shows_path_entries_sizes_and_dates(filled: Path) -> None:
    result = cli("cache", "info", "--cache", str(filled))
    assert result.exit_code == 0, result.output
    lines = dict(line.split(None, 1) for line in result.stdout.replace("on disk", "on-disk").splitlines())
    assert lines["path"] == str(filled)
    assert lines["entries"] == "5"
    assert lines["answers"] == "5.0 kB"
    assert lines["on-disk"].endswith(("kB", "MB"))
    store = SqliteStore(filled)
    stats = store.stats()
    store.close()
    assert stats.oldest is not None and stats.newest is not None
    assert lines["oldest"].startswith(datetime.fromtimestamp(stats.oldest).strftime("%Y-%m-%d %H:%M:%S"))
    assert lines["newest"].startswith(datetime.fromtimestamp(stats.newest).strftime("%Y-%m-%d %H:%M:%S"))


def test_info_json_and_a_folder_as_cache(filled: Path) -> None:
    result = cli("cache", "info", "--cache", str(filled.parent), "--json")  # the folder holding lm.sqlite3
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data["path"] == str(filled)
    assert (data["entries"], data["value_bytes"]) == (5, 5000)
    assert data["file_bytes"] >= filled.stat().st_size
    assert data["oldest"] < data["newest"] <= time.time()


def test_info_of_an_empty_cache(store: SqliteStore, path: Path) -> None:
    assert store.stats().entries == 0  # creates the file
    store.close()
    result = cli("cache", "info", "--cache", str(path))
    assert result.exit_code == 0, result.output
    assert "entries  0" in result.stdout and "oldest   -" in result.stdout


def test_info_defaults_to_the_cache_under_desic_cache_dir(monkeypatch: pytest.MonkeyPatch, filled: Path) -> None:
    monkeypatch.setenv("DESIC_CACHE_DIR", str(filled.parent))
    result = cli("cache", "info", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["entries"] == 5


def test_a_missing_cache_is_an_error_and_is_not_created(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "lm.sqlite3"
    for command in (["info"], ["prune", "--max-entries", "1"], ["clear", "--yes"]):
        assert_clean_error(cli("cache", *command, "--cache", str(missing)), 7, f"no LM cache at {missing}", "--cache")
    default = cli("cache", "info")
    assert_clean_error(default, 7, str(tmp_path / "default-cache" / "lm.sqlite3"), "DESIC_CACHE_DIR")
    assert not (tmp_path / "nowhere").exists() and not (tmp_path / "default-cache").exists()


def test_prune_by_age_reports_what_it_removed(filled: Path) -> None:
    result = cli("cache", "prune", "--cache", str(filled), "--older-than", "30d")
    assert result.exit_code == 0, result.output
    assert f"removed 2 of 5 entries from {filled}; 3 left" in result.stdout
    assert "answers 5.0 kB -> 3.0 kB" in result.stdout
    assert "on disk " in result.stdout and "--vacuum" in result.stdout
    assert keys(filled) == {"k2", "k3", "k4"}


def test_prune_by_count_and_size_with_vacuum(filled: Path) -> None:
    result = cli("cache", "prune", "-c", str(filled), "--max-entries", "4", "--max-size", "2.5kB", "--vacuum")
    assert result.exit_code == 0, result.output
    assert "removed 3 of 5 entries" in result.stdout
    before, after = result.stdout.split("on disk ")[1].split("\n")[0].split(" -> ")
    assert parse_size(after.replace(" ", "")) <= parse_size(before.replace(" ", ""))
    assert "--vacuum" not in result.stdout
    assert keys(filled) == {"k3", "k4"}


def test_prune_refuses_without_a_limit(filled: Path) -> None:
    result = cli("cache", "prune", "--cache", str(filled), "--vacuum")
    assert_clean_error(result, 2, "needs a limit", "--older-than", "--max-entries", "--max-size")
    assert len(keys(filled)) == 5


@pytest.mark.parametrize("value", ["30", "3x", "d", "-5d", "1 fortnight", ""])
def test_prune_rejects_bad_durations(filled: Path, value: str) -> None:
    result = cli("cache", "prune", "--cache", str(filled), "--older-than", value)
    assert result.exit_code == 2, result.output
    message = flat(result.output)
    assert f"{value!r} is not a duration" in message
    assert "3600s, 90m, 12h, 30d" in message
    assert len(keys(filled)) == 5


@pytest.mark.parametrize("value", ["lots", "5XB", "-1MB", "MB"])
def test_prune_rejects_bad_sizes(filled: Path, value: str) -> None:
    result = cli("cache", "prune", "--cache", str(filled), "--max-size", value)
    assert result.exit_code == 2, result.output
    message = flat(result.output)
    assert f"{value!r} is not a size" in message
    assert "500MB, 2GB" in message
    assert len(keys(filled)) == 5


def test_prune_rejects_a_negative_count(filled: Path) -> None:
    result = cli("cache", "prune", "--cache", str(filled), "--max-entries", "-1")
    assert result.exit_code == 2, result.output
    assert len(keys(filled)) == 5


def test_clear_refuses_without_yes_and_says_how_to_confirm(filled: Path) -> None:
    result = cli("cache", "clear", "--cache", str(filled))
    assert_clean_error(result, 2, "--yes", str(filled))
    assert len(keys(filled)) == 5


def test_clear_with_yes_empties_the_cache(filled: Path) -> None:
    result = cli("cache", "clear", "--cache", str(filled), "--yes")
    assert result.exit_code == 0, result.output
    assert f"removed 5 entries from {filled}" in result.stdout
    store = SqliteStore(filled)
    try:
        assert len(store) == 0
        store.put("next", b"n")  # and it still works as a cache
        assert store.get("next") == b"n"
    finally:
        store.close()


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("3600s", 3600), ("90m", 5400), ("12h", 43200), ("30d", 30 * DAY), ("2w", 14 * DAY), ("1.5h", 5400), ("30D", 30 * DAY)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "size"),
    [("4096", 4096), ("500MB", 500_000_000), ("2GB", 2_000_000_000), ("1.5g", 1_500_000_000), ("100KiB", 102_400), ("3 kb", 3000)],
)
def test_parse_size(text: str, size: int) -> None:
    assert parse_size(text) == size


@pytest.mark.parametrize(
    ("size", "text"), [(0, "0 B"), (999, "999 B"), (1000, "1.0 kB"), (999_960, "1.0 MB"), (2_500_000_000, "2.5 GB")]
)
def test_human_size(size: int, text: str) -> None:
    assert human_size(size) == text
