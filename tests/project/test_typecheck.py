"""desic type-checks, and so does a user's code written the way the README shows.

- the package and its tests pass mypy --strict (configured in pyproject.toml): the tests
  use the public API the way a typed user would;
- a sample user project (two signatures declared with the README's body convention, a
  sync and an async pipeline, compile, call, acall, batch, load) passes mypy --strict and
  pyright strict, and every result keeps its type (``assert_type``); a deliberate mistake
  in it is caught, so the checkers really see desic's types (not ``Any``);
- with the README's editable install (``pip install -e .``) a user's mypy still finds
  desic's types (PEP 561 through a plain path entry, not setuptools' import hook).
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support import ROOT

HAS_MYPY = importlib.util.find_spec("mypy") is not None
HAS_PYRIGHT = importlib.util.find_spec("pyright") is not None
needs_mypy = pytest.mark.skipif(not HAS_MYPY, reason="mypy is in the dev extra: pip install -e '.[dev]'")
needs_pyright = pytest.mark.skipif(not HAS_PYRIGHT, reason="pyright is in the dev extra: pip install -e '.[dev]'")


def _mypy(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", target],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@needs_mypy
def test_package_is_strictly_typed() -> None:
    result = _mypy("desic")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


@needs_mypy
def test_tests_are_strictly_typed() -> None:
    result = _mypy("tests")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "no issues found" in result.stdout


# --- a user's project -------------------------------------------------------------------

TASKS = '''
# mypy: disable-error-code="empty-body"
"""Two signatures and two pipelines, declared as the README shows."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

import desic


class Route(BaseModel):
    team: Literal["billing", "technical", "shipping", "account"]


@desic.signature
def route(ticket: Annotated[str, "the customer's message"]) -> Route:
    """Route a customer support ticket to the team that should handle it."""
    ...


@desic.signature(strategy="chain_of_thought")
def summarize(
    text: str, max_words: int = Field(30, description="upper bound")
) -> Annotated[str, desic.Output("summary", "at most max_words words")]:
    """Summarize the text."""
    ...


@desic.pipeline
def support(ticket: str) -> str:
    r = route(ticket=ticket)
    return summarize(text=f"[{r.team}] {ticket}")


@desic.pipeline
async def support_async(ticket: str) -> str:
    r = await route.acall(ticket=ticket)
    return await summarize.acall(text=f"[{r.team}] {ticket}")
'''

MAIN = '''
"""Compiling and calling: every result keeps its type."""

from __future__ import annotations

from typing import assert_type

import desic

from .tasks import Route, route, support, support_async


def compile_and_run() -> None:
    trainset = [{"ticket": "My parcel is late", "summary": "[shipping] a late parcel"}]
    compiled = desic.compile(support, trainset, metric=desic.metrics.exact_match, optimizer="labeled")
    assert_type(compiled(ticket="My parcel is late"), str)
    assert_type(compiled.score, float | None)
    for result in compiled.batch([{"ticket": "a"}, {"ticket": "b"}], concurrency=4):
        assert_type(result, desic.BatchResult[str])
        if result.ok:
            assert_type(result.unwrap(), str)
        else:
            assert_type(result.error, BaseException | None)
    assert_type(route(ticket="x"), Route)
    assert_type(route.batch([{"ticket": "a"}])[0].output, Route | None)
    compiled.save("support.desic.json")
    prod = desic.load("support.desic.json", pipeline=support)
    assert_type(prod(ticket="x"), str)
    report = compiled.evaluate(trainset, desic.metrics.exact_match)
    assert_type(report.score, float)


async def compile_async() -> str:
    rows = [{"ticket": "a", "summary": "b"}]
    compiled = await desic.acompile(support_async, rows, metric="exact_match")
    assert_type(await compiled.acall(ticket="x"), str)
    assert_type(await compiled.abatch([{"ticket": "a"}]), list[desic.BatchResult[str]])
    assert_type(await support_async.abatch([{"ticket": "a"}]), list[desic.BatchResult[str]])
    plain = await desic.acompile(support, rows, metric="exact_match")
    return await plain.acall(ticket="y")
'''

# Mistakes a typed compiled pipeline must catch (each line is one).
MISTAKES = '''
from __future__ import annotations

import desic

from .tasks import route, support

compiled = desic.compile(support, [], metric="exact_match")
n: int = compiled(ticket="x")
compiled(ticket=3)
compiled(tiket="x")
team: int = route(ticket="x").team
compiled.evaluate([], "exact_match", concurency=4)
'''

# Why the README documents its convention: without empty-body off mypy flags both bodies,
# and pyright accepts `...` but flags the docstring-only one.
BARE = '''
from __future__ import annotations

import desic


@desic.signature
def echo(text: str) -> str:
    """Repeat the text."""
    ...


@desic.signature
def shout(text: str) -> str:
    """Repeat the text in capitals."""
'''

CONFIG = """
[tool.mypy]
strict = true

[tool.pyright]
typeCheckingMode = "strict"
"""


def _project(root: Path) -> Path:
    app = root / "myapp"
    app.mkdir(parents=True)
    (app / "__init__.py").write_text("")
    for name, text in (("tasks", TASKS), ("main", MAIN), ("mistakes", MISTAKES), ("bare", BARE)):
        (app / f"{name}.py").write_text(textwrap.dedent(text).lstrip())
    (root / "pyproject.toml").write_text(textwrap.dedent(CONFIG).lstrip())
    return root


def _errors(out: str, module: str) -> list[str]:
    return [line for line in out.splitlines() if f"{module}.py:" in line and "error" in line]


def _env() -> dict[str, str]:
    """desic importable from this tree however it is installed (or not) in this venv."""
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    env["PYTHONPATH"] = str(ROOT)
    return env


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        args, check=False, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=600
    )


def _user_mypy(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run(
        [sys.executable, "-m", "mypy", "--cache-dir", str(project / ".mypy_cache"), *extra, "myapp"],
        project,
    )


def _pyright(project: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return _run([sys.executable, "-m", "pyright", "--pythonpath", sys.executable, *extra, "myapp"], project)


@needs_mypy
def test_user_project_under_mypy_strict(tmp_path: Path) -> None:
    """The README's declarations and a typed use of compile/call/acall/batch/load are
    clean; the mistakes are caught (mypy sees desic's types, not Any)."""
    result = _user_mypy(_project(tmp_path))
    out = result.stdout + result.stderr
    assert _errors(out, "tasks") == [] and _errors(out, "main") == [], out
    mistakes = _errors(out, "mistakes")
    assert 'mistakes.py:8: error: Incompatible types in assignment (expression has type "str"' in out
    assert 'mistakes.py:9: error: Argument "ticket" to "__call__" of "CompiledPipeline"' in out
    assert 'mistakes.py:10: error: Unexpected keyword argument "tiket"' in out
    assert "mistakes.py:11: error: Incompatible types in assignment" in out
    assert 'mistakes.py:12: error: Unexpected keyword argument "concurency"' in out
    assert len(mistakes) == 5, mistakes
    assert [e.split("error: ")[1] for e in _errors(out, "bare")] == [
        "Missing return statement  [empty-body]",
        "Missing return statement  [empty-body]",
    ], out


@needs_pyright
def test_user_project_under_pyright_strict(tmp_path: Path) -> None:
    result = _pyright(_project(tmp_path))
    out = result.stdout
    assert "tasks.py:" not in out and "main.py:" not in out, out
    assert {line: f"mistakes.py:{line}:" in out for line in (8, 9, 10, 11, 12)} == dict.fromkeys((8, 9, 10, 11, 12), True), out
    bare = [line for line in out.splitlines() if "bare.py:" in line]
    assert len(bare) == 1 and "bare.py:13:" in bare[0] and "must return value" in bare[0], out


# --- an editable install ----------------------------------------------------------------


@needs_mypy
def test_mypy_finds_desic_installed_editable(tmp_path: Path) -> None:
    """The README's `pip install -e .` into a fresh venv (no dependencies: only desic's own
    install is under test); a user's mypy, pointed at that venv, sees desic's types."""
    if shutil.which("git") is None:
        pytest.skip("git lists the project's files to copy")
    source = tmp_path / "src"
    source.mkdir()
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT, check=True, capture_output=True, timeout=120,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        path = ROOT / os.fsdecode(name)
        if path.is_file():
            target = source / os.fsdecode(name)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps", "-e", str(source)],
        check=False, capture_output=True, text=True, timeout=600,
    )
    if install.returncode != 0 and "No matching distribution" in install.stderr:
        pytest.skip(f"the build backend could not be installed here: {install.stderr[-300:]}")
    assert install.returncode == 0, install.stdout[-2000:] + install.stderr[-2000:]
    user = tmp_path / "user"
    user.mkdir()
    (user / "use.py").write_text("import desic\n\nversion: int = desic.__version__\n")
    env = {k: v for k, v in os.environ.items() if k not in ("MYPYPATH", "PYTHONPATH")}
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--python-executable", str(python), "--cache-dir",
         str(user / ".mypy_cache"), "use.py"],
        cwd=user, env=env, check=False, capture_output=True, text=True, timeout=600,
    )
    assert "Cannot find implementation or library stub" not in result.stdout, result.stdout
    # desic found and typed: its __version__ is a str
    assert 'use.py:3: error: Incompatible types in assignment (expression has type "str"' in result.stdout
