"""``desic runs list|show|report|watch``: the compile runs kept in a store."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._text import plural
from ..errors import ConfigError, StorageError
from ._common import EXIT_ERROR, STORAGE_FIX, cause, echo_err, handle_errors, hinted

if TYPE_CHECKING:
    from ..storage import RunInfo, Storage

runs_app = typer.Typer(
    help="The compile runs kept in a store (--storage URL, default $DESIC_STORAGE or sqlite://.desic/desic.db).",
    no_args_is_help=True,
    rich_markup_mode=None,
)

StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", "-s", help="store URL (default: $DESIC_STORAGE, else sqlite://.desic/desic.db)"),
]
RunArg = Annotated[str, typer.Argument(metavar="RUN", help="run id, a unique part of it (its start or end), or 'latest'")]

_FILE_SCHEMES = ("sqlite", "tinydb", "msgspec", "file")


@contextmanager
def open_existing(url: str | None) -> Iterator[Storage]:
    """Open a store for reading; a file store that does not exist yet is an error, not created."""
    from ..storage import default_url, open, split_url

    url = url or default_url()
    with cause(STORAGE_FIX.replace("give a store URL", "give --storage a store URL")):
        scheme, location, _ = split_url(url)
        store = None if scheme in _FILE_SCHEMES and location and not Path(location).expanduser().exists() else open(url)
    if store is None:
        raise hinted(
            StorageError(f"no store at {url}: nothing has been recorded there"),
            f"point --storage (or DESIC_STORAGE) at the store your compile recorded into, or compile with --storage {url}",
        )
    try:
        yield store
    finally:
        store.close()


def find_run(store: Storage, ref: str) -> RunInfo:
    """The run ``ref`` names: an exact id, ``latest``, or a unique start or end of an id."""
    runs = store.list_runs()
    if not runs:
        raise StorageError(f"{store.url} has no runs yet; compile with --storage {store.url} to record one")
    if ref == "latest":
        return max(runs, key=lambda r: (r.created_at, r.id))
    for run in runs:
        if run.id == ref:
            return store.get_run(run.id)
    matches = [r for r in runs if r.id.startswith(ref) or r.id.endswith(ref)]
    if len(matches) == 1:
        return store.get_run(matches[0].id)
    if not matches:
        raise StorageError(
            f"no run {ref!r} in {store.url}; list the runs with `desic runs list --storage {store.url}`"
        )
    raise ConfigError(f"{ref!r} matches {len(matches)} runs ({', '.join(r.id for r in matches[:5])}); give more of the id")


def _status(info: RunInfo) -> str:
    """The run's status; a budget stop names its budget (``stopped (max_calls)``); a
    running run whose process stopped touching it says so (``running (stale ...)``)."""
    from ..storage import STALE_SECONDS, is_stale

    if is_stale(info):
        return f"running (stale: no heartbeat for over {STALE_SECONDS:g}s; its process is gone, resume it)"
    return f"{info.status} ({info.stopped_by})" if info.status == "stopped" and info.stopped_by else info.status


def _score(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def _usage(record: dict[str, Any]) -> tuple[int, int, float]:
    usage = record.get("usage") or [0, 0, 0, 0.0]
    try:
        return int(usage[0]), int(usage[1]) + int(usage[2]), float(usage[3])
    except (TypeError, ValueError, IndexError, KeyError):
        return 0, 0, 0.0


def _console() -> Any:
    from rich.console import Console

    return Console(highlight=False)


def print_table(headers: list[str], rows: list[list[str]], *, left: tuple[str, ...] = ()) -> None:
    """A rich table on a terminal; plain aligned columns (never truncated) otherwise."""
    console = _console()
    if console.is_terminal:
        from rich.table import Table

        table = Table(box=None, header_style="bold", pad_edge=False)
        for h in headers:
            table.add_column(h, justify="left" if h in left else "right", overflow="fold")
        for row in rows:
            table.add_row(*row)
        console.print(table)
        return
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]

    def fmt(cells: list[str]) -> str:
        out = [c.ljust(w) if h in left else c.rjust(w) for c, w, h in zip(cells, widths, headers)]
        return "  ".join(out).rstrip()

    typer.echo(fmt(headers))
    for row in rows:
        typer.echo(fmt(row))


@runs_app.command("list")
@handle_errors
def list_cmd(
    storage: StorageOpt = None,
    status: Annotated[str | None, typer.Option("--status", help="only runs with this status (running, finished, failed, stopped, interrupted)")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the runs as JSON")] = False,
) -> None:
    """List the runs, oldest first."""
    import msgspec

    with open_existing(storage) as store:
        runs = [r for r in store.list_runs() if status is None or r.status == status]
    if as_json:
        typer.echo(json.dumps(msgspec.to_builtins(runs)))
        return
    if not runs:
        typer.echo("no runs" + (f" with status {status}" if status else ""))
        return
    headers = ["run", "status", "pipeline", "optimizer", "candidates", "best", "updated"]
    rows = [
        [r.id, _status(r), r.pipeline, r.optimizer or "-", str(r.candidates), _score(r.best_score), r.updated_at[:19]]
        for r in runs
    ]
    print_table(headers, rows, left=("run", "status", "pipeline", "optimizer", "updated"))


@runs_app.command("show")
@handle_errors
def show_cmd(
    run: RunArg,
    storage: StorageOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the run and its candidates (without programs) as JSON")] = False,
) -> None:
    """Show one run: its settings, status and every candidate's score."""
    import msgspec

    with open_existing(storage) as store:
        info = find_run(store, run)
        history = store.history(info.id)
        has_program = store.get_run_program(info.id) is not None
    if as_json:
        records = [{k: v for k, v in c.items() if k != "program"} for c in history]
        typer.echo(json.dumps({"run": msgspec.to_builtins(info), "candidates": records}))
        return
    typer.echo(f"run {info.id}  {_status(info)}")
    if has_program:
        kept = "kept with the run" + (" (the best found before the budget ran out)" if info.stopped_by else "")
    else:
        kept = "not yet (the run has not finished)"
    fields = [
        ("pipeline", info.pipeline),
        ("optimizer", f"{info.optimizer} {json.dumps(info.optimizer_config, sort_keys=True)}"),
        ("lm", info.lm.get("model") or json.dumps(info.lm)),
        ("started", info.created_at),
        ("updated", info.updated_at),
        ("best score", _score(info.best_score)),
        ("program", kept),
    ]
    if info.stopped_by:
        fields.append(("stopped by", f"the {info.stopped_by} budget"))
    if info.error:
        fields.append(("reason" if info.status == "stopped" else "error", info.error))
    for key, value in fields:
        typer.echo(f"  {key:<11} {value}")
    if not history:
        typer.echo("  no candidates yet")
        return
    rows: list[list[str]] = []
    best: float | None = None
    for c in history:
        score = c.get("score")
        if isinstance(score, (int, float)) and (best is None or score > best):
            best = float(score)
        calls, tokens, cost = _usage(c)
        rows.append([str(c.get("index")), _score(score), _score(best), str(calls), str(tokens), f"${cost:.4f}", str(c.get("note") or "")])
    print_table(["#", "score", "best so far", "calls", "tokens", "cost", "note"], rows, left=("note",))


@runs_app.command("report")
@handle_errors
def report_cmd(
    run: RunArg,
    storage: StorageOpt = None,
    out: Annotated[Path | None, typer.Option("--out", "-o", help="the HTML file to write (default: desic-run-<id>.html)")] = None,
) -> None:
    """Write one self-contained HTML report of a run (plot, candidates, best prompts, diff)."""
    from ..report import build_report

    with open_existing(storage) as store:
        info = find_run(store, run)
        history = store.history(info.id)
    target = out or Path(f"desic-run-{info.id}.html")
    page = build_report(info, history)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(page, encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot write the report to {target}: {exc}; choose another --out") from exc
    typer.echo(str(target))


def _line(record: dict[str, Any], best: float | None) -> str:
    calls, tokens, cost = _usage(record)
    note = record.get("note") or ""
    return (
        f"candidate {record.get('index')}  score {_score(record.get('score'))}  best {_score(best)}  "
        f"calls {calls}  tokens {tokens}  ${cost:.4f}" + (f"  {note}" if note else "")
    )


#: ``runs watch --timeout``: a running compile touches its run every ``HEARTBEAT_SECONDS``
#: (10 s), so two minutes without any update means its process died or hangs
WATCH_TIMEOUT = 120.0


def _silence(info: RunInfo, quiet: float, timeout: float) -> str | None:
    """Why a ``running`` run is no longer worth watching, or None: its process (on this
    host) is gone, its heartbeat is stale, or nothing changed for ``timeout`` seconds."""
    from ..storage import STALE_SECONDS, is_stale, owner_gone

    if owner_gone(info):
        return f"is marked running but its process ({info.owner}) is gone"
    if is_stale(info):
        return f"stopped updating: no heartbeat for over {STALE_SECONDS:g}s (its process died or hangs)"
    if quiet > timeout:
        return f"stopped updating: no new candidate or heartbeat for {timeout:g}s (--timeout)"
    return None


@runs_app.command("watch")
@handle_errors
def watch_cmd(
    run: RunArg,
    storage: StorageOpt = None,
    interval: Annotated[float, typer.Option("--interval", min=0.05, help="seconds between polls")] = 0.5,
    timeout: Annotated[float, typer.Option("--timeout", min=0.1, help="stop when the run has not been updated for this many seconds")] = WATCH_TIMEOUT,
) -> None:
    """Follow a run in progress: print each new candidate until the run ends, or stops
    being updated (its process died, or is stuck)."""
    from ..storage import is_stale

    with open_existing(storage) as store:
        info = find_run(store, run)
        console = _console()
        live = console.is_terminal and not console.is_dumb_terminal
        follower = _LiveTable(console, info) if live else None
        if follower is None:
            typer.echo(f"watching run {info.id} ({info.pipeline}, {info.optimizer}); status {info.status}")
        seen = 0
        best: float | None = None
        last_change = time.monotonic()
        last_state: tuple[str, str] | None = None
        silent: str | None = None
        try:
            if follower is not None:
                follower.start()
            while True:
                current = store.get_run(info.id)  # read before the history: nothing is missed
                status = "stale" if is_stale(current) else current.status
                state = (current.updated_at, current.status)
                if state != last_state:
                    last_state, last_change = state, time.monotonic()
                history = store.history(info.id)
                for record in history[seen:]:
                    score = record.get("score")
                    if isinstance(score, (int, float)) and (best is None or score > best):
                        best = float(score)
                    if follower is not None:
                        follower.add(record, best)
                    else:
                        typer.echo(_line(record, best))
                if len(history) != seen:
                    last_change = time.monotonic()
                seen = len(history)
                if status != "running":
                    break
                silent = _silence(current, time.monotonic() - last_change, timeout)
                if silent is not None:
                    break
                time.sleep(interval)
        finally:
            if follower is not None:
                follower.stop()
        final = store.get_run(info.id)
        store_url = store.url
    if silent is not None and final.status == "running":
        echo_err(f"error: run {final.id} {silent}; stopped watching after {plural(seen, 'candidate')}")
        echo_err(
            f"fix: `desic runs show {final.id}` shows how far it got; if its process is gone, continue it with "
            f"desic compile ... --storage {store_url} --resume {final.id}"
        )
        raise typer.Exit(EXIT_ERROR)
    typer.echo(f"run {final.id} {_status(final)}: {plural(seen, 'candidate')}, best {_score(final.best_score if final.best_score is not None else best)}")
    if final.error:
        typer.echo(f"{'reason' if final.status == 'stopped' else 'error'}: {final.error}", err=True)
    if final.status != "finished" and not final.stopped_by:  # a budget stop ends cleanly
        raise typer.Exit(EXIT_ERROR)


class _LiveTable:
    """The newest candidates of a run in a rich live table (on a terminal)."""

    def __init__(self, console: Any, info: RunInfo, *, rows: int = 20):
        from rich.live import Live

        self.console = console
        self.info = info
        self.rows: list[tuple[str, ...]] = []
        self.max_rows = rows
        self.best: float | None = None
        self._live = Live(self._render(), console=console, refresh_per_second=4, transient=False)
        self._running = False

    def _render(self) -> Any:
        from rich.table import Table

        title = f"run {self.info.id} · {self.info.pipeline} · {self.info.optimizer} · best {_score(self.best)}"
        table = Table(title=title, title_justify="left", header_style="bold")
        for col in ("#", "score", "best", "calls", "tokens", "cost", "note"):
            table.add_column(col, justify="left" if col == "note" else "right")
        for row in self.rows[-self.max_rows :]:
            table.add_row(*row)
        return table

    def start(self) -> None:
        self._live.start()
        self._running = True

    def add(self, record: dict[str, Any], best: float | None) -> None:
        self.best = best
        calls, tokens, cost = _usage(record)
        self.rows.append(
            (str(record.get("index")), _score(record.get("score")), _score(best), str(calls), str(tokens), f"${cost:.4f}", str(record.get("note") or ""))
        )
        self._live.update(self._render())

    def stop(self) -> None:
        if self._running:
            self._running = False
            self._live.stop()
