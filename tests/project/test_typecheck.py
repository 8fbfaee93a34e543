"""The package and its tests pass mypy --strict (configured in pyproject.toml) when mypy is
installed: the tests use the public API the way a typed user would, so a signature change
that breaks them shows up here as well as at run time."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("mypy") is None and not any(Path(p, "mypy").exists() for p in sys.path),
    reason="mypy is in the dev extra: pip install -e '.[dev]'",
)


def _mypy(target: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "mypy", target],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_package_is_strictly_typed() -> None:
    result = _mypy("desic")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]


def test_tests_are_strictly_typed() -> None:
    result = _mypy("tests")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "no issues found" in result.stdout
