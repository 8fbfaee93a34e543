"""The ``desic`` command: compile, eval, run, prompts, runs, doctor.

``desic --help`` and ``desic COMMAND --help`` describe everything. Errors print one line
saying what went wrong and one saying how to fix it, never a traceback, and exit with a
code that names their kind:

====  =========================================================
code  meaning
====  =========================================================
0     success
1     another desic error (or some rows of ``run --jsonl`` failed)
2     bad command line (usage)
3     configuration (``ConfigError``: LM spec, store URL, options)
4     data (``DataError``: a dataset row or ``--input``)
5     artifact (``ArtifactError``: missing, corrupt, drifted)
6     language model (``LMError``: unreachable, rate limited, bad output)
7     storage (``StorageError``)
8     budget exhausted (``BudgetExceeded``)
130   interrupted (Ctrl-C)
====  =========================================================

typer and rich are imported here, never by ``import desic``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from ._cache import cache_app
from ._commands import compile_cmd, eval_cmd, prompts_cmd, run_cmd
from ._common import EXIT_CODES, exit_code
from ._doctor import doctor_cmd
from ._runs import runs_app

__all__ = ["EXIT_CODES", "app", "exit_code", "main"]

app = typer.Typer(
    name="desic",
    help="Program LLM pipelines: compile them against a metric, run, inspect and watch them.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,  # plain help: a flag shows no <bool>, nothing is boxed or cut
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        from .._version import __version__

        typer.echo(f"desic {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    ctx: typer.Context,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="print the version and exit")] = False,
    verbose: Annotated[int, typer.Option("--verbose", "-v", count=True, help="log every event (-vv: debug logging too)")] = 0,
    trace: Annotated[Path | None, typer.Option("--trace", help="append every event to this JSONL file (like DESIC_TRACE)")] = None,
) -> None:
    from ..events import subscribe
    from ..sinks import JsonlSink, LoggingSink

    if verbose:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        logger = logging.getLogger("desic")
        logger.addHandler(handler)
        old_level = logger.level
        logger.setLevel(logging.DEBUG if verbose > 1 else logging.INFO)
        unsubscribe = subscribe(LoggingSink(logging.INFO, logger))

        def restore() -> None:
            unsubscribe()
            logger.removeHandler(handler)
            logger.setLevel(old_level)

        ctx.call_on_close(restore)
    else:
        # desic reports LM failures itself; the SDKs' own retry chatter would only add noise
        quiet = [logging.getLogger(name) for name in ("instructor", "openai", "httpx", "httpx2")]
        levels = [q.level for q in quiet]
        for q in quiet:
            q.setLevel(max(q.getEffectiveLevel(), logging.CRITICAL))

        def unquiet() -> None:
            for q, level in zip(quiet, levels):
                q.setLevel(level)

        ctx.call_on_close(unquiet)
    if trace is not None:
        ctx.call_on_close(subscribe(JsonlSink(trace)))


app.command("compile", no_args_is_help=True)(compile_cmd)
app.command("eval", no_args_is_help=True)(eval_cmd)
app.command("run", no_args_is_help=True)(run_cmd)
app.command("prompts", no_args_is_help=True)(prompts_cmd)
app.command("doctor")(doctor_cmd)
app.add_typer(runs_app, name="runs")
app.add_typer(cache_app, name="cache")


def main(argv: list[str] | None = None) -> None:
    """The console-script entry point (``desic = "desic.cli:main"``).

    SIGTERM is handled like Ctrl-C: the work in flight is cancelled, the run is stored as
    ``interrupted`` and the command says how to resume it.
    """
    import signal

    def terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    try:
        previous = signal.signal(signal.SIGTERM, terminate)
    except ValueError:  # not the main thread: leave signals alone
        previous = None
    try:
        app(args=argv, prog_name="desic")
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
