"""``BaseStorage``: an optional base class for storage backends."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Self

from ._artifacts import load_program, resolve_artifact, save_program
from ._base import ArtifactInfo, RunInfo, RunStatus

if TYPE_CHECKING:
    from .. import ir

__all__ = ["BaseStorage"]


class BaseStorage:
    """Optional base class for backends: context management and artifact conveniences.

    The conveniences delegate to the functions of ``desic.storage`` (``save_program``,
    ``load_program``, ``resolve_artifact``), which work with any ``Storage``.
    """

    url: str = ""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:  # pragma: no cover - overridden where there is something to close
        pass

    def save_program(
        self, name: str, program: ir.Program, *, tags: tuple[str, ...] = ()
    ) -> ArtifactInfo:
        return save_program(self, name, program, tags=tags)  # type: ignore[arg-type]

    def load_program(self, ref: str) -> ir.Program:
        """``ref`` is ``name``, ``name@3``, ``name@latest`` or ``name@<tag>``."""
        return load_program(self, ref)  # type: ignore[arg-type]

    def resolve_artifact(self, ref: str) -> ArtifactInfo:
        return resolve_artifact(self, ref)  # type: ignore[arg-type]

    def iter_runs(self, status: RunStatus | None = None) -> Iterator[RunInfo]:
        for run in self.list_runs():  # type: ignore[attr-defined]
            if status is None or run.status == status:
                yield run

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.url}>"
