"""The layers of the package (pyproject's import-linter contracts) hold, and can break.

import-linter is in the dev extra; the contracts are: layers point one way, no cycle
between sibling modules, private modules imported only inside their own package.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support import ROOT

LINT = Path(sys.executable).with_name("lint-imports")

pytestmark = pytest.mark.skipif(
    not LINT.exists(), reason="import-linter is in the dev extra: pip install -e '.[dev]'"
)


def _lint(root: Path) -> subprocess.CompletedProcess[str]:
    env = {"PATH": str(LINT.parent), "PYTHONPATH": str(root), "HOME": str(root)}
    return subprocess.run(
        [str(LINT), "--no-cache", str(root / "pyproject.toml")],
        check=False, cwd=root, capture_output=True, text=True, timeout=300, env=env,
    )


def test_the_package_keeps_its_layer_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert "3 kept, 0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # a store reaching up into the optimizers
        ("desic/storage/_base.py", "from ..optimize import resolve as _up", "desic's layers point one way"),
        # the bus importing its sinks (the events <-> sinks cycle that was)
        ("desic/events.py", "from . import sinks as _up", "no import cycles between sibling modules"),
        # a top-level room reaching into another room's private module
        ("desic/compile.py", "from .storage._fs import atomic_write as _up", "a private module is imported only"),
    ],
)
def test_an_offending_import_breaks_a_contract(tmp_path: Path, module: str, line: str, broken: str) -> None:
    shutil.copytree(ROOT / "desic", tmp_path / "desic", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    assert f"{broken}" in result.stdout
    assert "BROKEN" in result.stdout.split(broken, 1)[1].splitlines()[0]
