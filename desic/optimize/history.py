"""What an optimizer reports: candidates in evaluation order, and scored programs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import msgspec

from .. import ir
from ..engine import RunOutcome
from ..lm import Usage
from ..record import usage_list
from ._stats import interval

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
    proposals: int = 0  # the optimizer's own LM calls so far (instruction proposals)
    proposals_failed: int = 0  # of which failed (cut off, invalid): skipped, not used

    @property
    def n(self) -> int:
        """How many rows the score is the mean of (0 when not known)."""
        return len(self.scores or [])

    @property
    def interval(self) -> tuple[float, float] | None:
        """A 95% interval of the score (see ``desic.optimize._select.interval``)."""
        return interval(self.scores) if self.scores else None

    def describe(self) -> str:
        """``0.750 [0.47, 0.91] on 16 val rows``: the score with its evidence."""
        if self.score is None:
            return "no score"
        span = self.interval
        rows = f" on {self.n} {self.split or ''} rows".replace("  ", " ") if self.n else ""
        return f"{self.score:.3f}" + (f" [{span[0]:.2f}, {span[1]:.2f}]" if span else "") + rows

    def to_record(self) -> dict[str, Any]:
        """The candidate as plain data (what a run recorder keeps)."""
        span = self.interval
        return {
            "index": self.index, "score": self.score, "note": self.note, "split": self.split,
            "interval": list(span) if span else None, "n": self.n,
            "scores": self.scores, "round": self.round, "parent": self.parent,
            "usage": usage_list(self.usage), "seconds": self.seconds,
            "proposals": self.proposals, "proposals_failed": self.proposals_failed,
            "program": msgspec.to_builtins(self.program),
        }

    def event_data(self) -> dict[str, Any]:
        """The fields of its ``candidate`` event."""
        return {
            "index": self.index, "score": self.score, "split": self.split, "note": self.note,
            "interval": list(span) if (span := self.interval) else None, "n": self.n, "round": self.round, "calls": self.usage.calls,
            "proposals": self.proposals, "proposals_failed": self.proposals_failed, "cost": self.usage.cost,
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
