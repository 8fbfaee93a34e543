"""What an optimizer reports: candidates in evaluation order, and scored programs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .. import ir
from ..engine import RunOutcome
from ..lm import Usage
from ..record import usage_list

__all__ = ["Candidate", "Scored"]

_NO_USAGE = Usage()


@dataclass
class Candidate:
    """A program an optimizer evaluated, with its score, in evaluation order.

    ``split`` says what the score is measured on: ``"val"`` (the validation split, the
    scores compile picks the best from), ``"minibatch"`` (a sample of it or of the
    trainset), ``"bootstrap"`` (the share of trainset traces the metric accepted), or
    None. ``usage`` is the run's cumulative usage when the candidate was recorded.
    """

    index: int
    program: ir.Program
    score: float | None
    usage: Usage = _NO_USAGE
    note: str = ""
    split: str | None = None
    scores: list[float] | None = None
    round: int | None = None
    parent: int | None = None
    seconds: float = 0.0

    def to_record(self) -> dict[str, Any]:
        """The candidate as plain data (what a run recorder keeps)."""
        return {
            "index": self.index, "score": self.score, "note": self.note, "split": self.split,
            "scores": self.scores, "round": self.round, "parent": self.parent,
            "usage": usage_list(self.usage), "seconds": self.seconds,
            "program": msgspec.to_builtins(self.program),
        }

    def event_data(self) -> dict[str, Any]:
        """The fields of its ``candidate`` event."""
        return {
            "index": self.index, "score": self.score, "split": self.split, "note": self.note,
            "round": self.round, "calls": self.usage.calls, "cost": self.usage.cost,
        }


@dataclass
class Scored:
    """A program's scores on some examples (what ``task.evaluate`` returns)."""

    program: ir.Program
    score: float
    scores: list[float]
    outcomes: list[RunOutcome]

    @property
    def failures(self) -> list[RunOutcome]:
        return [o for o in self.outcomes if (o.score or 0.0) < 1.0]
