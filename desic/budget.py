"""Budgets: how much a compile (or an evaluation) may spend before it stops cleanly.

A ``Budget`` caps LM calls, tokens, dollars and wall-clock seconds. It is checked between
units of work (before each example run or LM call an optimizer starts), never in the
middle of one, so work already paid for is always recorded. Work in flight counts
against the budget at the average cost of the work done so far, which keeps the
overshoot small even with many examples running at once.

When a budget runs out, ``desic.compile`` returns the best program found so far and names
the budget in ``compiled.stopped_by``; ``BudgetExceeded`` is only used inside desic.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from .errors import BudgetExceeded, ConfigError
from .lm import Usage

__all__ = ["BUDGET_NAMES", "Budget", "BudgetMeter"]

BUDGET_NAMES = ("max_calls", "max_tokens", "max_dollars", "max_seconds")


_NO_USAGE = Usage()


@dataclass(frozen=True, slots=True)
class Budget:
    """Limits on LM calls, tokens (prompt + completion), dollars and wall time.

    ``None`` means unlimited. ``Budget(max_calls=500, max_dollars=2.0)`` stops at whichever
    runs out first.
    """

    max_calls: int | None = None
    max_tokens: int | None = None
    max_dollars: float | None = None
    max_seconds: float | None = None

    def __post_init__(self) -> None:
        for name in BUDGET_NAMES:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
                raise ConfigError(f"Budget({name}={value!r}): give a number or None")
            if value < 0:
                raise ConfigError(f"Budget({name}={value!r}): a budget cannot be negative")

    @classmethod
    def of(cls, budget: Budget | None = None, **shortcuts: Any) -> Budget | None:
        """``budget`` with the keyword shortcuts (``max_calls=...``) set over it; None if empty."""
        unknown = set(shortcuts) - set(BUDGET_NAMES)
        if unknown:
            raise ConfigError(f"unknown budget {sorted(unknown)}; budgets are {', '.join(BUDGET_NAMES)}")
        given = {k: v for k, v in shortcuts.items() if v is not None}
        if budget is not None and not isinstance(budget, Budget):
            raise ConfigError(f"budget must be a desic.Budget, got {budget!r}")
        if not given:
            return budget if budget else None
        base = {name: getattr(budget, name) for name in BUDGET_NAMES} if budget else {}
        return cls(**{**base, **given})

    def __bool__(self) -> bool:
        return any(getattr(self, name) is not None for name in BUDGET_NAMES)

    def exceeded(
        self, usage: Usage, elapsed: float, pending: Usage = _NO_USAGE, next_unit: Usage = _NO_USAGE
    ) -> tuple[str, str] | None:
        """``(budget name, explanation)`` of the first limit that ``usage`` plus the work in
        flight (``pending``) plus one more unit (``next_unit``) would pass; else None."""
        calls = usage.calls + pending.calls + next_unit.calls
        if self.max_calls is not None and calls > self.max_calls:
            return "max_calls", f"{usage.calls} LM calls made{_more(pending.calls)} (budget {self.max_calls})"
        tokens = usage.total_tokens + pending.total_tokens + next_unit.total_tokens
        if self.max_tokens is not None and tokens > self.max_tokens:
            return "max_tokens", (
                f"{usage.total_tokens} tokens used{_more(pending.total_tokens)} (budget {self.max_tokens})"
            )
        cost = usage.cost + pending.cost + next_unit.cost
        if self.max_dollars is not None and cost > self.max_dollars:
            more = f", about ${pending.cost:.4f} more in flight" if pending.cost else ""
            return "max_dollars", f"${usage.cost:.4f} spent{more} (budget ${self.max_dollars:.4f})"
        if self.max_seconds is not None and elapsed >= self.max_seconds:
            return "max_seconds", f"{elapsed:.1f}s elapsed (budget {self.max_seconds:g}s)"
        return None


def require_prices(budget: Budget | None, lm: Any) -> None:
    """Refuse a dollar budget that could never trigger: ``lm``'s model has no known price,
    so its calls count as $0."""
    if budget is None or budget.max_dollars is None or lm is None:
        return
    method = getattr(lm, "unpriced", None)
    model = method() if method is not None else None
    if model:
        raise ConfigError(
            f"max_dollars={budget.max_dollars:g} cannot be enforced: no price is known for "
            f"model {model!r}, so its calls would count as $0. Give its price to the LM, in "
            f"dollars per 1M tokens: desic.lm(..., prices={{{model!r}: (input, output)}}) "
            "(prices=(0, 0) for a free self-hosted model), or drop max_dollars"
        )


def _more(n: int) -> str:
    return f", about {n} more in flight" if n else ""


@dataclass
class BudgetMeter:
    """Spend against a budget: usage done, work in flight, and the clock.

    Everything runs on one event loop, so plain attributes suffice (no lock).
    """

    budget: Budget | None
    started: float = field(default_factory=time.monotonic)
    usage: Usage = _NO_USAGE  # frozen: sharing the default is safe
    in_flight: int = 0
    _units: int = 0
    stopped: tuple[str, str] | None = None

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def pending(self, units: int | None = None) -> Usage:
        """``units`` of work (default: those in flight), estimated at the average cost of a
        finished unit (one call each before any has finished)."""
        units = self.in_flight if units is None else units
        if units == 0:
            return Usage()
        if self._units == 0:
            return Usage(calls=units)
        n = units / self._units
        u = self.usage
        return Usage(
            calls=math.ceil(u.calls * n),
            prompt_tokens=math.ceil(u.prompt_tokens * n),
            completion_tokens=math.ceil(u.completion_tokens * n),
            cost=u.cost * n,
        )

    def reason(self) -> tuple[str, str] | None:
        """Why no new unit of work may start (and remember it), or None.

        A unit may start only if, with the units in flight, it is expected to stay within
        every limit (so a run ends at or just under its budget, not over it).
        """
        if self.stopped is not None:
            return self.stopped
        if not self.budget:
            return None
        hit = self.budget.exceeded(self.usage, self.elapsed(), self.pending(), self.pending(1))
        if hit is not None:
            self.stopped = hit
        return hit

    def check(self) -> None:
        """Raise ``BudgetExceeded`` when no new work may start."""
        hit = self.reason()
        if hit is not None:
            raise BudgetExceeded(f"budget {hit[0]} ran out: {hit[1]}", budget=hit[0])

    def start(self) -> None:
        self.in_flight += 1

    def finish(self, usage: Usage) -> None:
        self.in_flight -= 1
        self._units += 1
        self.usage = self.usage + usage

    def add(self, usage: Usage) -> None:
        """Usage of work not started through ``start`` (e.g. a metric's own LM calls)."""
        self.usage = self.usage + usage
