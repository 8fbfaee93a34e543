"""What every ``desic`` command shares: exit codes, error printing, resolving names.

A ``DesicError`` never shows a traceback: the command prints one line saying what went
wrong, a line saying how to fix it, and exits with the code of its kind (``EXIT_CODES``).
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import importlib
import importlib.util
import inspect
import json
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer

from .._redact import redact_text
from ..errors import (
    ArtifactError,
    BudgetExceeded,
    ConfigError,
    DataError,
    DesicError,
    LMError,
    MetricError,
    OutputValidationError,
    RateLimited,
    StorageError,
    Timeout,
)

if TYPE_CHECKING:
    from .._compiled import CompiledPipeline
    from ..metrics import Metric

F = TypeVar("F", bound=Callable[..., Any])

EXIT_ERROR = 1  # any other DesicError
EXIT_USAGE = 2  # bad command line (click's own code)
EXIT_CONFIG = 3
EXIT_DATA = 4
EXIT_ARTIFACT = 5
EXIT_LM = 6
EXIT_STORAGE = 7
EXIT_BUDGET = 8
EXIT_INTERRUPTED = 130

#: (error class, exit code, how to fix it); the first class that matches wins
EXIT_CODES: tuple[tuple[type[DesicError], int, str], ...] = (
    (ConfigError, EXIT_CONFIG, "check --lm / DESIC_LM, --storage / DESIC_STORAGE and the options given; `desic doctor` checks the set-up"),
    (DataError, EXIT_DATA, "fix the data file where the message says (row and field, or line): a row's keys are the pipeline's inputs, the other keys its labels"),
    (ArtifactError, EXIT_ARTIFACT, "check the artifact's path or URL (`desic runs list` shows stored runs), or recompile with `desic compile`"),
    (RateLimited, EXIT_LM, "the provider is rate limiting: lower --concurrency or try again later"),
    (Timeout, EXIT_LM, "the LM did not answer in time: check the server, or lower --concurrency"),
    (OutputValidationError, EXIT_LM, "the model's answer did not fit the output type: try a stronger model, or compile to add demos"),
    (LMError, EXIT_LM, "check that the LM is reachable and its key is valid: `desic doctor`"),
    (StorageError, EXIT_STORAGE, "check the store URL and that its files are readable and writable: `desic doctor --storage URL`"),
    (BudgetExceeded, EXIT_BUDGET, "raise the --budget, or continue the run with --resume RUN"),
    (MetricError, EXIT_ERROR, "fix the metric: it raised on the row named above (a metric returns a float for any output)"),
)

_FIX = "desic_cli_fix"  # the attribute a cause-specific hint rides on, from where it was known


def exit_code(exc: BaseException) -> int:
    for cls, code, _ in EXIT_CODES:
        if isinstance(exc, cls):
            return code
    return EXIT_ERROR


E = TypeVar("E", bound=DesicError)


def hinted(exc: E, fix: str) -> E:
    """``exc`` carrying ``fix``: the hint printed for it instead of its class's."""
    setattr(exc, _FIX, fix)
    return exc


@contextlib.contextmanager
def cause(fix: str | Callable[[DesicError], str | None] | None) -> Iterator[None]:
    """Give a ``DesicError`` raised in the block (without a hint yet) the hint of this step:
    ``fix``, or ``fix(exc)`` (None keeps the class's hint). The hint follows the cause."""
    try:
        yield
    except DesicError as exc:
        if fix is not None and getattr(exc, _FIX, None) is None:
            hint = fix(exc) if callable(fix) else fix
            if hint:
                hinted(exc, hint)
        raise


def fix_hint(exc: BaseException) -> str:
    own = getattr(exc, _FIX, None)
    if isinstance(own, str):
        return own
    for cls, _, hint in EXIT_CODES:
        if isinstance(exc, cls):
            return hint
    return "see the message above; `desic COMMAND --help` lists the options"


def echo_err(text: str) -> None:
    """Print ``text`` on stderr, scrubbed of credentials (error texts may echo a key)."""
    typer.echo(redact_text(text), err=True)


def fail(exc: DesicError) -> NoReturn:
    """Print ``exc`` as ``error: ...`` plus ``fix: ...`` and exit with its code."""
    message = str(exc).strip() or type(exc).__name__
    echo_err(f"error: {message}")
    echo_err(f"fix: {fix_hint(exc)}")
    raise typer.Exit(exit_code(exc))


def handle_errors(fn: F) -> F:
    """Turn a ``DesicError`` (and Ctrl-C) raised by a command into a message and exit code."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except DesicError as exc:
            fail(exc)
        except KeyboardInterrupt:
            echo_err("interrupted")
            raise typer.Exit(EXIT_INTERRUPTED) from None

    return wrapper  # type: ignore[return-value]


# --- names -> objects ---------------------------------------------------------------------------


def _ensure_cwd_on_path() -> None:
    cwd = os.getcwd()
    if cwd not in sys.path and "" not in sys.path:
        sys.path.insert(0, cwd)


def import_object(ref: str, *, what: str = "object") -> Any:
    """``package.module:name`` or ``path/to/file.py:name`` (dotted names allowed after ``:``)."""
    module_part, sep, attr = ref.rpartition(":")
    if not sep or not module_part or not attr:
        raise hinted(
            ConfigError(f"{ref!r} does not name a {what}: the name after ':' is missing"),
            "write MODULE:NAME or path/to/file.py:NAME, e.g. myapp.pipelines:triage or app.py:triage",
        )
    if module_part.endswith(".py") or "/" in module_part or os.sep in module_part:
        module = _import_file(Path(module_part), ref)
    else:
        _ensure_cwd_on_path()
        try:
            module = importlib.import_module(module_part)
        except ModuleNotFoundError as exc:
            if exc.name and module_part.startswith(exc.name):
                raise hinted(
                    ConfigError(f"cannot import module {module_part!r} (for {ref!r})"),
                    f"run desic from your project's folder (now {os.getcwd()}) or add it to PYTHONPATH; "
                    "a file is named path/to/file.py:NAME",
                ) from None
            raise hinted(
                ConfigError(f"importing {module_part!r} failed: {exc}"),
                f"install the missing package ({exc.name}) in this environment",
            ) from None
        except Exception as exc:
            raise _import_failed(module_part, exc) from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise hinted(
                ConfigError(f"{module_part!r} has no {attr!r} (from {ref!r})"),
                _names_hint(module, attr),
            ) from None
    return obj


def _import_failed(where: str, exc: Exception) -> ConfigError:
    return hinted(
        ConfigError(f"importing {where} failed: {type(exc).__name__}: {exc}"),
        f"fix the error in {where} (python -c 'import ...' of it shows the traceback)",
    )


def _names_hint(module: Any, attr: str) -> str:
    """What the module offers instead: its pipelines and signatures, the closest first."""
    from ..pipeline import Pipeline
    from ..signature import Signature

    offered = sorted(
        name for name, value in vars(module).items()
        if not name.startswith("_") and isinstance(value, (Pipeline, Signature))
    )
    close = difflib.get_close_matches(attr, offered, 1)
    if close:
        return f"did you mean {close[0]!r}? check the name after ':'; it defines {', '.join(offered)}"
    if offered:
        return f"check the name after ':'; it defines {', '.join(offered)}"
    return "check the name after ':'; that module defines no @desic.pipeline or @desic.signature"


def _import_file(path: Path, ref: str) -> Any:
    if not path.is_file():
        raise hinted(
            ConfigError(f"no such Python file: {path} (from {ref!r})"),
            f"check the path before ':' (relative to {os.getcwd()}); e.g. examples/triage.py:triage",
        )
    name = path.stem
    existing = sys.modules.get(name)
    if existing is not None and Path(getattr(existing, "__file__", "") or "").resolve() == path.resolve():
        return existing
    folder = str(path.resolve().parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)  # so the file's own sibling imports work, as with `python file.py`
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"cannot import {path} as a Python module")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except DesicError:
        sys.modules.pop(name, None)
        raise
    except Exception as exc:
        sys.modules.pop(name, None)
        raise _import_failed(str(path), exc) from exc
    except BaseException:
        sys.modules.pop(name, None)
        raise
    return module


def resolve_metric(name: str) -> Metric:
    """A metric of ``desic.metrics`` by name, or ``module:function``."""
    if ":" in name:
        obj = import_object(name, what="metric")
        if not callable(obj):
            raise hinted(
                ConfigError(f"{name!r} is not callable"),
                "--metric MODULE:FUNCTION names a function metric(example, output) -> float",
            )
        return obj  # type: ignore[no-any-return]
    available = builtin_metrics()
    if name not in available:
        close = difflib.get_close_matches(name, list(available), 1)
        raise hinted(
            ConfigError(
                f"unknown metric {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
                + f"; built in: {', '.join(sorted(available)) or 'none'}, or give your own as MODULE:FUNCTION"
            ),
            f"--metric takes one of {', '.join(sorted(available))}, or MODULE:FUNCTION for your own",
        )
    return available[name]


def builtin_metrics() -> dict[str, Metric]:
    """The metrics of ``desic.metrics`` that can be given by name (the one list of them)."""
    from ..metrics import named

    return named()


def json_example(names: Sequence[str] = ()) -> str:
    """``{"ticket": "..."}`` for the pipeline's inputs."""
    return "{" + ", ".join(f'"{n}": "..."' for n in (names or ["ticket"])) + "}"


def input_example(option: str, names: Sequence[str] = ()) -> str:
    """``--input '{"ticket": "..."}'`` for the pipeline's inputs (one quoted JSON object)."""
    return f"{option} '{json_example(names)}'"


def parse_json_object(text: str, *, option: str, inputs: Sequence[str] = ()) -> dict[str, Any]:
    fix = f"give one JSON object of the inputs, in single quotes for the shell: {input_example(option, inputs)}"
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise hinted(DataError(f"{option} is not valid JSON ({exc.msg} at column {exc.colno})"), fix) from None
    if not isinstance(value, dict):
        raise hinted(DataError(f"{option} must be a JSON object of the pipeline's inputs, got {type(value).__name__}"), fix)
    return value


def read_dataset(path: Path, *, option: str, pipe: Any = None) -> list[dict[str, Any]]:
    """The rows of a dataset file given by ``option`` (``--trainset`` ...), with hints that
    name the option: a missing file, an unknown format, a malformed row."""
    from ..data import load_dataset

    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "not found"
        raise hinted(
            DataError(f"{option} file {what}: {path}"),
            f"check the {option} path (relative to {os.getcwd()}): a .jsonl, .json or .csv file",
        )
    names = ", ".join(pipe.input_names) if pipe is not None else ""
    keys = f" ({names})" if names else ""
    def hint(exc: DesicError) -> str:
        if "unknown dataset format" in str(exc):
            return f"give {option} a .jsonl, .json or .csv file (rows of the pipeline's inputs{keys} and labels)"
        return f"fix {path} where the message says: one JSON object per row whose keys are the pipeline's inputs{keys}; other keys are labels"

    with cause(hint):
        return load_dataset(path)


def parse_options(items: list[str] | None) -> dict[str, Any]:
    """``-O key=value`` optimizer options; values are JSON when they parse, else strings."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"{item!r}: expected KEY=VALUE, e.g. -O max_demos=4", param_hint="--option")
        try:
            out[key.strip()] = json.loads(raw)
        except json.JSONDecodeError:
            out[key.strip()] = raw
    return out


def resolve_optimizer(name: str, options: dict[str, Any]) -> Any:
    """The optimizer ``--optimizer`` and ``-O`` describe, checked before any work starts
    (``desic.optimize.resolve``: unknown names and options are errors listing the valid ones)."""
    from ..optimize import options_of, registry, resolve

    factories = registry()

    def hint(exc: DesicError) -> str:
        factory = factories.get(name)
        if factory is None:
            return f"--optimizer takes one of {', '.join(sorted(factories))}"
        valid = options_of(factory)
        listed = ", ".join(valid) if valid else "(none)"
        return f"-O KEY=VALUE (JSON values) takes the options of the {name} optimizer: {listed}; compile's own settings have their flags (--seed, --budget, ...)"

    with cause(hint):
        return resolve(name, **options)


STORAGE_FIX = (
    "give a store URL: sqlite://PATH, tinydb://PATH, msgspec://PATH, postgresql://... or memory://; "
    "`desic doctor --storage URL` checks it"
)


def check_storage(url: str, *, option: str = "--storage", create: bool = False) -> None:
    """A store URL given on the command line is well formed and of a known scheme; with
    ``create``, the store is opened (created) now, before any LM call."""
    from ..storage import open as open_store
    from ..storage import schemes, split_url

    with cause(STORAGE_FIX.replace("give a store URL", f"give {option} a store URL")):
        scheme, _, _ = split_url(url)
        if scheme not in schemes():
            close = difflib.get_close_matches(scheme, schemes(), 1)
            raise ConfigError(
                f"unknown storage scheme {scheme!r} in {option} {url!r}"
                + (f" (did you mean {close[0]}://?)" if close else "")
                + f"; known: {', '.join(schemes())}"
            )
        if create:
            open_store(url).close()


def check_out(out: str) -> None:
    """``--out`` can be written: a known store URL with a name, or a file in a folder."""
    from ..storage import is_url, split_url

    if is_url(out):
        check_storage(out, option="--out")
        if not split_url(out)[2]:
            raise hinted(
                ConfigError(f"--out {out!r} names no artifact"),
                f"add the artifact's name after '#': --out '{out}#triage'",
            )
        return
    folder = Path(out).expanduser().resolve().parent
    for existing in [folder, *folder.parents]:
        if existing.exists():
            if not existing.is_dir() or not os.access(existing, os.W_OK):
                raise hinted(
                    ConfigError(f"--out {out}: cannot write in {existing}"),
                    "give --out a path in a writable folder, or a store URL (sqlite://.desic/desic.db#NAME)",
                )
            return


BUDGET_KEYS = ("calls", "tokens", "dollars", "seconds")


def parse_budget(text: str) -> dict[str, float]:
    """``calls=100,tokens=50000,dollars=1.5,seconds=600`` -> a dict (any subset)."""
    out: dict[str, float] = {}
    for part in text.split(","):
        if not part.strip():
            continue
        key, sep, raw = part.partition("=")
        key = key.strip()
        if not sep or key not in BUDGET_KEYS:
            raise typer.BadParameter(
                f"{part.strip()!r}: expected one of {', '.join(k + '=N' for k in BUDGET_KEYS)}, comma-separated",
                param_hint="--budget",
            )
        try:
            value = float(raw)
        except ValueError:
            raise typer.BadParameter(f"{key}={raw!r} is not a number", param_hint="--budget") from None
        if value <= 0:
            raise typer.BadParameter(f"{key} must be positive", param_hint="--budget")
        out[key] = value
    if not out:
        raise typer.BadParameter("empty budget; e.g. --budget calls=100,dollars=1.5", param_hint="--budget")
    return out


def load_target(ref: str, *, pipeline: str | None = None, storage: str | None = None) -> CompiledPipeline[..., Any]:
    """An artifact (file, store URL, or ``name@version`` in the store) or ``MODULE:PIPELINE``."""
    from .._compiled import CompiledPipeline, load
    from ..ir import Program
    from ..pipeline import as_pipeline
    from ..storage import default_url, is_url

    code = import_object(pipeline, what="pipeline") if pipeline else None
    if is_url(ref) or Path(ref).is_file():
        return load(ref, pipeline=code)
    if "@" in ref and ":" not in ref and "/" not in ref:
        return load(f"{storage or default_url()}#{ref}", pipeline=code)
    if ":" in ref and not ref.endswith(".json"):
        obj = import_object(ref, what="pipeline")
        if isinstance(obj, CompiledPipeline):
            return obj
        return CompiledPipeline(as_pipeline(obj), Program())
    raise ArtifactError(
        f"artifact not found: {ref} (give an artifact file, a store URL such as "
        "sqlite://.desic/desic.db#triage@latest, NAME@VERSION in the store, or MODULE:PIPELINE)"
    )


def lm_context(spec: Any) -> Any:
    """``desic.context(lm=spec)`` when a spec is given, else a no-op context."""
    import contextlib

    from ..runtime import context

    return context(lm=spec) if spec else contextlib.nullcontext()


def accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` declares a parameter ``name`` (not merely ``**kwargs``)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def shown_url(url: str) -> str:
    """A store URL as the command line may print it: a ``postgresql://`` URL without its
    password (a pasted command takes it from PGPASSWORD / ~/.pgpass); others as they are."""
    from .._postgres import is_postgres_url, public_url

    return public_url(url) if is_postgres_url(url) else url
