"""Helpers shared by the test folders (no tests here): import them as ``tests.support.<module>``.

Test modules import from here, never from each other.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
"""The project root (``pyproject.toml``, ``desic/``, ``examples/``)."""
