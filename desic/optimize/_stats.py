"""The statistics of choosing programs: intervals of a mean, paired comparisons.

Pure functions of score lists (no desic imports), used by ``desic.optimize._select``
and by ``Candidate.interval``; see ``_select`` for why a search needs them.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["ALPHA", "MARGIN", "RESAMPLES", "Comparison", "compare", "interval"]

#: one-sided significance level a candidate must reach against the start
ALPHA = 0.1
#: and by more than this much in mean score
MARGIN = 0.0
RESAMPLES = 2000
_Z = 1.959963984540054  # two-sided 95%


def interval(scores: Sequence[float]) -> tuple[float, float] | None:
    """A 95% interval of the mean of ``scores`` (None for no scores).

    Scores in [0, 1] (accuracy-like metrics): Wilson's score interval, conservative for
    fractional scores (their variance is at most that of 0/1 scores with the same mean)
    and sensible at 0 or 1 and on few rows; otherwise mean +- 1.96 standard errors.
    """
    n = len(scores)
    if n == 0:
        return None
    mean = sum(scores) / n
    if all(0.0 <= s <= 1.0 for s in scores):
        p = min(1.0, max(0.0, mean))
        denom = 1 + _Z * _Z / n
        centre = (p + _Z * _Z / (2 * n)) / denom
        half = _Z * math.sqrt(p * (1 - p) / n + _Z * _Z / (4 * n * n)) / denom
        return round(max(0.0, centre - half), 6), round(min(1.0, centre + half), 6)
    if n == 1:
        return mean, mean
    var = sum((s - mean) ** 2 for s in scores) / (n - 1)
    half = _Z * math.sqrt(var / n)
    return round(mean - half, 6), round(mean + half, 6)


@dataclass(frozen=True)
class Comparison:
    """A paired comparison of a candidate with the start on the same rows."""

    delta: float  # mean(candidate - start)
    p_value: float  # share of paired resamples where the candidate is not better
    wins: int  # rows the candidate scores higher on
    losses: int  # rows the start scores higher on
    n: int

    @property
    def significant(self) -> bool:
        return self.delta > MARGIN and self.p_value < ALPHA

    def describe(self) -> str:
        return (
            f"{self.delta:+.3f} on {self.n} paired rows ({self.wins} better, {self.losses} worse), "
            f"p={self.p_value:.3f} (needs < {ALPHA:g})"
        )


def compare(candidate: Sequence[float], start: Sequence[float], seed: int | str = 0) -> Comparison:
    """Paired comparison of ``candidate`` with ``start`` (scores on the same rows, in the
    same order); deterministic given ``seed`` and the scores.

    The p-value is the larger of two one-sided tests: a paired bootstrap of the mean
    difference (the share of ``RESAMPLES`` resamples where it is not above zero) and the
    exact sign test on the rows that differ (which the bootstrap underrates on few rows:
    one better row out of one is no evidence).
    """
    if len(candidate) != len(start):
        raise ValueError(f"paired scores differ in length: {len(candidate)} vs {len(start)}")
    diffs = [a - b for a, b in zip(candidate, start)]
    n = len(diffs)
    wins = sum(d > 0 for d in diffs)
    losses = sum(d < 0 for d in diffs)
    if n == 0 or wins == 0:
        return Comparison(sum(diffs) / n if n else 0.0, 1.0, wins, losses, n)
    delta = sum(diffs) / n
    sign = sum(math.comb(wins + losses, k) for k in range(wins, wins + losses + 1)) / 2 ** (wins + losses)
    rng = random.Random(f"{seed}:paired:{n}")
    not_better = sum(1 for _ in range(RESAMPLES) if sum(rng.choices(diffs, k=n)) <= 0.0)
    return Comparison(delta, max(sign, not_better / RESAMPLES), wins, losses, n)
