"""Metrics: ``metric(example, output) -> float | bool | (score, feedback)``."""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from .errors import DataError

if TYPE_CHECKING:
    from .data import Example

__all__ = ["Metric", "exact_match", "normalize", "score_of"]

Metric = Callable[["Example", Any], Any]

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]+$")


def normalize(value: Any) -> Any:
    """Case-, space- and trailing-punctuation-insensitive form of a value."""
    if isinstance(value, str):
        return _PUNCT.sub("", " ".join(value.casefold().split()))
    if isinstance(value, BaseModel):
        return normalize(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


def _pairs(example: Example, output: Any) -> list[tuple[Any, Any]]:
    labels = example.labels
    if not labels:
        raise DataError("exact_match needs labels: give each row its expected output fields")
    data = output.model_dump(mode="json") if isinstance(output, BaseModel) else output
    if isinstance(data, dict):
        shared = [k for k in labels if k in data]
        if shared:
            return [(labels[k], data[k]) for k in shared]
        if len(labels) == 1 and len(data) == 1:
            return [(next(iter(labels.values())), next(iter(data.values())))]
        raise DataError(
            f"exact_match: no label among {sorted(labels)} matches an output field of {sorted(data)}"
        )
    if len(labels) == 1:
        return [(next(iter(labels.values())), data)]
    for key in ("output", "answer"):
        if key in labels:
            return [(labels[key], data)]
    raise DataError(f"exact_match: the output is a bare value but the row has labels {sorted(labels)}")


def exact_match(example: Example, output: Any) -> float:
    """1.0 when every labelled field equals the output's (normalised), else 0.0."""
    return float(all(normalize(a) == normalize(b) for a, b in _pairs(example, output)))


def score_of(result: Any) -> tuple[float, str | None]:
    """(score, feedback) from whatever a metric returned."""
    if isinstance(result, tuple) and len(result) == 2:
        return float(result[0]), str(result[1]) if result[1] is not None else None
    if isinstance(result, bool):
        return float(result), None
    return float(result), None
