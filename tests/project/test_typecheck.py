"""The package passes mypy --strict (configured in pyproject.toml) when mypy is installed."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT


@pytest.mark.skipif(
    shutil.which("mypy") is None and not any(Path(p, "mypy").exists() for p in sys.path),
    reason="mypy is in the dev extra: pip install -e '.[dev]'",
)
def test_package_is_strictly_typed() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "desic"],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
