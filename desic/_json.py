"""Plain-data helpers every layer uses: the UNSET sentinel and JSON-able conversion."""

from __future__ import annotations

from enum import Enum
from typing import Any, Final

from pydantic import BaseModel
from pydantic_core import to_jsonable_python

__all__ = ["UNSET", "to_jsonable"]


class _Unset(Enum):
    """"Not given", distinct from ``None``."""

    UNSET = "UNSET"

    def __repr__(self) -> str:
        return "UNSET"

    def __bool__(self) -> bool:
        return False


UNSET: Final = _Unset.UNSET


_SCALARS = frozenset((str, int, float, bool, type(None)))


def to_jsonable(value: Any) -> Any:
    """Plain JSON data for a value (pydantic models dumped in JSON mode)."""
    if type(value) in _SCALARS:
        return value  # what pydantic returns for these, without the call
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    return to_jsonable_python(value)

