"""``desic cache info|prune|clear``: inspect and bound the on-disk LM answer cache."""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, NoReturn

import typer

from .._text import plural
from ._common import EXIT_STORAGE, EXIT_USAGE, echo_err, handle_errors

if TYPE_CHECKING:
    from ..lm._pgcache import PostgresCacheStore
    from ..lm.stores import CacheStats, SqliteStore

cache_app = typer.Typer(
    help="The LM answer cache (--cache PATH or postgresql://URL, default $DESIC_CACHE_DIR/lm.sqlite3 or ~/.cache/desic/lm.sqlite3).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

CacheOpt = Annotated[
    str | None,
    typer.Option(
        "--cache",
        "-c",
        help="the cache file, a folder holding lm.sqlite3, or a shared cache's postgresql://user@host:port/db "
        "(default: $DESIC_CACHE_DIR/lm.sqlite3, else ~/.cache/desic/lm.sqlite3)",
    ),
]

_DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_SIZE_UNITS = {
    "": 1, "b": 1,
    "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
    "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4,
}  # fmt: skip
_NUMBER = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]*)\s*")


def _scaled(text: str, units: dict[str, int], problem: str, hint: str) -> float:
    """``text`` as a number times one of ``units`` (BadParameter saying ``problem`` if not)."""
    match = _NUMBER.fullmatch(text)
    unit = match.group(2).lower() if match else ""
    if match is None or unit not in units:
        raise typer.BadParameter(f"{text!r} is not {problem}", param_hint=hint)
    return float(match.group(1)) * units[unit]


def parse_duration(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` (also ``2w``, ``1.5h``) -> seconds."""
    return _scaled(
        text,
        _DURATION_UNITS,
        "a duration; write a number and a unit: s, m, h, d or w (e.g. 3600s, 90m, 12h, 30d, 2w)",
        "--older-than",
    )


def parse_size(text: str) -> int:
    """``500MB``, ``2GB``, ``1.5G``, ``100KiB``, ``4096`` (bytes) -> bytes."""
    return int(
        _scaled(
            text,
            _SIZE_UNITS,
            "a size; write bytes or a number and a unit: B, KB, MB, GB, TB "
            "(powers of 1000) or KiB, MiB, GiB, TiB (powers of 1024), e.g. 500MB, 2GB",
            "--max-size",
        )
    )


def human_size(n: int) -> str:
    """``1234567`` -> ``1.2 MB`` (powers of 1000, like --max-size)."""
    if n < 1000:
        return f"{n} B"
    exponent = min(int(math.log(n, 1000)), 4)
    value = n / 1000**exponent
    if round(value, 1) >= 1000 and exponent < 4:  # 999.96 kB prints as 1.0 MB
        exponent, value = exponent + 1, value / 1000
    return f"{value:.1f} {['B', 'kB', 'MB', 'GB', 'TB'][exponent]}"


def _date(timestamp: float | None) -> str:
    if timestamp is None:
        return "-"
    return datetime.fromtimestamp(timestamp).astimezone().strftime("%Y-%m-%d %H:%M:%S %z")


def _fail(message: str, fix: str, code: int) -> NoReturn:
    echo_err(f"error: {message}")
    echo_err(f"fix: {fix}")
    raise typer.Exit(code)


@contextmanager
def open_cache(path: str | None) -> Iterator[SqliteStore | PostgresCacheStore]:
    """The cache at ``path`` (default: the one LMs use); a missing file is an error, not
    created. A ``postgresql://`` URL opens the shared cache in that database."""
    from ..lm.stores import SqliteStore, cache_file, is_postgres, postgres_cache

    if path is not None and is_postgres(path):
        shared = postgres_cache(path)
        try:
            shared.stats()  # connects: a bad URL or a server that is down fails here, clearly
            yield shared
        finally:
            shared.close()
        return
    target = cache_file(path)
    if not target.is_file():
        where = "--cache" if path is not None else "the default location (set by DESIC_CACHE_DIR)"
        _fail(
            f"no LM cache at {target}: nothing has been cached there",
            f"check {where}; an LM caches its answers there once used with cache=True",
            EXIT_STORAGE,
        )
    store = SqliteStore(target)
    try:
        yield store
    finally:
        store.close()


def _stats_json(stats: CacheStats) -> dict[str, object]:
    return {**dataclasses.asdict(stats), "path": str(stats.path)}


@cache_app.command("info")
@handle_errors
def info_cmd(
    cache: CacheOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the numbers as JSON (sizes in bytes, times in seconds since the epoch)")] = False,
) -> None:
    """Show where the cache is, how many answers it holds, its size, oldest and newest."""
    with open_cache(cache) as store:
        stats = store.stats()
    if as_json:
        typer.echo(json.dumps(_stats_json(stats)))
        return
    for key, value in [
        ("path", str(stats.path)),
        ("entries", str(stats.entries)),
        ("answers", human_size(stats.value_bytes)),
        ("on disk", human_size(stats.file_bytes)),
        ("oldest", _date(stats.oldest)),
        ("newest", _date(stats.newest)),
    ]:
        typer.echo(f"{key:<8} {value}")


@cache_app.command("prune")
@handle_errors
def prune_cmd(
    cache: CacheOpt = None,
    older_than: Annotated[str | None, typer.Option("--older-than", metavar="AGE", help="remove answers cached longer ago than this: 3600s, 90m, 12h, 30d, 2w")] = None,
    max_entries: Annotated[int | None, typer.Option("--max-entries", metavar="N", min=0, help="then keep at most N answers, the newest")] = None,
    max_size: Annotated[str | None, typer.Option("--max-size", metavar="SIZE", help="then keep the newest answers up to this size: 500MB, 2GB, 100MiB")] = None,
    vacuum: Annotated[bool, typer.Option("--vacuum", help="also give the freed space back to the disk (rewrites the file)")] = False,
) -> None:
    """Remove old answers: by age, then the oldest beyond a count, then beyond a size."""
    if older_than is None and max_entries is None and max_size is None:
        _fail(
            "prune needs a limit, or it would remove nothing",
            "give --older-than AGE, --max-entries N and/or --max-size SIZE "
            "(e.g. desic cache prune --older-than 30d --max-size 500MB); `desic cache clear --yes` removes everything",
            EXIT_USAGE,
        )
    seconds = parse_duration(older_than) if older_than is not None else None
    max_bytes = parse_size(max_size) if max_size is not None else None
    with open_cache(cache) as store:
        before = store.stats()
        removed = store.prune(older_than=seconds, max_entries=max_entries, max_bytes=max_bytes, vacuum=vacuum)
        after = store.stats()
    typer.echo(f"removed {removed} of {plural(before.entries, 'entry', 'entries')} from {after.path}; {after.entries} left")
    typer.echo(f"answers {human_size(before.value_bytes)} -> {human_size(after.value_bytes)}")
    typer.echo(f"on disk {human_size(before.file_bytes)} -> {human_size(after.file_bytes)}")
    if removed and not vacuum and after.file_bytes >= before.file_bytes:
        typer.echo("the freed space is reused by new answers; add --vacuum to give it back to the disk now")


@cache_app.command("clear")
@handle_errors
def clear_cmd(
    cache: CacheOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="confirm: remove every cached answer")] = False,
) -> None:
    """Remove every cached answer (the next calls go to the LM again)."""
    from .._postgres import public_url
    from ..lm.stores import cache_file, is_postgres

    if not yes:
        where = public_url(cache) if cache is not None and is_postgres(cache) else cache_file(cache)
        _fail(
            f"clear removes every cached answer in {where}, and needs confirming",
            "run it again with --yes (desic cache clear --yes); "
            "`desic cache prune` removes only old answers",
            EXIT_USAGE,
        )
    with open_cache(cache) as store:
        before = store.file_bytes()
        removed = store.clear(vacuum=True)
        after = store.file_bytes()
    typer.echo(f"removed {plural(removed, 'entry', 'entries')} from {store.path}; on disk {human_size(before)} -> {human_size(after)}")
