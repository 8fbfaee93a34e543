# mypy: disable-error-code="empty-body"
"""The LM layer stays up when its surroundings misbehave.

- a cache location that cannot be used turns the cache off (one warning), calls succeed;
- every HTTP request, instructor's re-asks included, pays the throttle;
- the first call's SDK import and client set-up do not count against ``timeout``.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import desic
from desic.testing import FakeLM, allow_model_requests


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


# --- an unusable cache location ---------------------------------------------------------------


def _file_as_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache dir whose parent is a regular file: it can never be created."""
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file" / "cache"


def _read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache dir that mkdir may not create (a read-only parent; root ignores chmod)."""
    target = tmp_path / "read-only" / "cache"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == target or target in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return target


def _missing_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A missing parent that cannot be created (it vanished, or its mount is gone)."""
    target = tmp_path / "gone" / "cache"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == target or target in self.parents:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return target


def _file_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory exists but sqlite cannot open the file in it (here: a directory)."""
    (tmp_path / "cache" / "lm.sqlite3").mkdir(parents=True)
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "location", [_file_as_parent, _read_only, _missing_parent, _file_is_a_directory],
    ids=["parent-is-a-file", "read-only", "missing-parent", "unopenable-file"],
)
def test_an_unusable_cache_dir_turns_the_cache_off_with_one_warning(
    location: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DESIC_CACHE_DIR", str(location(tmp_path, monkeypatch)))
    inner = FakeLM(default="tech")
    lm = desic.lm(inner, cache=True)
    with caplog.at_level(logging.WARNING, logger="desic"), desic.context(lm=lm):
        answers = [team(ticket="crash") for _ in range(3)]
    assert answers == ["tech"] * 3
    assert len(inner.calls) == 3  # nothing was cached: every call reached the LM
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("desic")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "cache" in message and "off" in message
    assert "DESIC_CACHE_DIR" in message  # says how to fix it
