"""Small text helpers shared by every layer's messages."""

from __future__ import annotations

__all__ = ["plural"]


def plural(n: int, noun: str, many: str | None = None) -> str:
    """``1 node``, ``2 nodes``, ``0 errors``; ``many`` for an irregular plural."""
    return f"{n} {noun}" if n == 1 else f"{n} {many or noun + 's'}"
