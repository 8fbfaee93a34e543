"""Prompt snapshots: the exact messages a pipeline sends, pinned with syrupy.

Snapshots are stored under ``snapshots/`` at the project root (the nearest folder above
the test file holding ``pyproject.toml``, ``setup.cfg``, ``pytest.ini`` or ``.git``),
one ``.ambr`` file per test module, so a recompile that changes a prompt shows up as a
reviewable diff.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from syrupy.extensions.amber import AmberSnapshotExtension

from ..render import content_text

__all__ = ["PromptSnapshotExtension", "format_prompts", "project_root"]

_MARKERS = ("pyproject.toml", "setup.cfg", "pytest.ini", "tox.ini", ".git")


def project_root(start: str | Path) -> Path:
    here = Path(start).resolve()
    for folder in [here, *here.parents]:
        if any((folder / m).exists() for m in _MARKERS):
            return folder
    return here.parent if here.is_file() else here


class PromptSnapshotExtension(AmberSnapshotExtension):
    """Amber snapshots kept in ``<project root>/snapshots/``."""

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(project_root(test_location.filepath) / "snapshots")


def format_prompts(prompts: dict[str, list[dict[str, Any]]]) -> str:
    """Prompts as plain text, one section per node and message; an image part shows as
    ``[image URL]`` (inline data as its type, size and hash)."""
    parts: list[str] = []
    for node_id, messages in prompts.items():
        parts.append(f"=== node {node_id} ===")
        for message in messages:
            parts.append(f"--- {message['role']} ---")
            parts.append(content_text(message["content"]))
    return "\n".join(parts) + "\n"

