"""Where the rows of an evaluation or a compile run: the executor seam.

- ``"local"`` (the default): this process's event loop (:class:`desic.engine.LocalExecutor`),
  the fastest path on one machine;
- ``"ray"``, ``"ray:auto"``, ``"ray://HOST:10001"`` or ``desic.executors.Ray(...)``: actors on
  a Ray cluster (``pip install 'desic[ray]'``; Ray is imported only when one is used).

``desic.evaluate(..., executor=...)``, ``desic.compile(..., executor=...)``,
``$DESIC_EXECUTOR`` and ``--executor`` on the command line all take these. An executor
made from a name lives for one call; an object (``desic.executors.Ray(...)``) lives until
its ``close()``, so one cluster of actors serves many calls.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..engine import LOCAL, Executor, LocalExecutor
from ..errors import ConfigError

if TYPE_CHECKING:
    from ._ray import Ray

__all__ = ["LOCAL", "Executor", "LocalExecutor", "Ray", "resolve"]


def __getattr__(name: str) -> Any:
    if name == "Ray":  # ray itself is imported only when the executor runs
        from ._ray import Ray

        return Ray
    raise AttributeError(f"module 'desic.executors' has no attribute {name!r}")


_NAMES = "'local', 'ray', 'ray:auto', 'ray://HOST:10001' or a desic.executors.Ray(...)"


def resolve(spec: Executor | str | None) -> tuple[Executor, bool]:
    """The executor ``spec`` names, and whether it was made here (the caller closes it).

    ``None`` reads ``$DESIC_EXECUTOR`` (default ``"local"``).
    """
    where = "executor"
    if spec is None:
        spec = os.environ.get("DESIC_EXECUTOR", "").strip() or "local"
        where = "DESIC_EXECUTOR"
    if not isinstance(spec, str):
        if callable(getattr(spec, "run", None)):
            return spec, False
        raise ConfigError(f"{where}={spec!r:.80} is not an executor; give {_NAMES}")
    name = spec.strip()
    if name.lower() == "local":
        return LOCAL, False
    if name.lower() == "ray" or name.lower().startswith("ray:"):
        from ._ray import Ray

        address = None if name.lower() == "ray" else (name if name.startswith("ray://") else name[4:] or None)
        return Ray(address=address), True
    raise ConfigError(f"unknown {where} {spec!r}; give {_NAMES}")


def close(executor: Executor) -> None:
    """Close ``executor`` if it has anything to close."""
    closer = getattr(executor, "close", None)
    if callable(closer):
        closer()
