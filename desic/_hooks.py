"""Hooks a higher layer installs into a lower one, so imports still point one way.

``first_event``: run once, on the first event desic emits (``desic.events``); the package
(``desic/__init__``) installs the environment-driven sinks of :mod:`desic.sinks` here.
"""

from __future__ import annotations

from collections.abc import Callable

__all__ = ["first_event"]

first_event: list[Callable[[], None]] = []
