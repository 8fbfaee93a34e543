"""Range checks of the optimizers' numeric options, made in their constructors.

A ``max_demos=-1`` or ``val_fraction=1.5`` would otherwise surface, if at all, as an odd
result or a raw exception after LM calls were paid for. Each option is declared once as a
``Range``; ``check`` raises a one-line ``ConfigError`` naming the optimizer, the option,
the value and what is allowed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError

__all__ = ["COUNT", "POSITIVE", "SHARE", "SPLIT", "TEMPERATURE", "Range", "check", "check_all"]


@dataclass(frozen=True)
class Range:
    """A number from ``low`` to ``high`` (either bound exclusive when ``open_*``), whole when
    ``whole``; ``None`` accepted when ``none``."""

    low: float | None = None
    high: float | None = None
    whole: bool = True
    none: bool = False
    open_low: bool = False
    open_high: bool = False

    def accepts(self, value: Any) -> bool:
        if value is None:
            return self.none
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.whole and not isinstance(value, int):
            return False
        if isinstance(value, float) and math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.open_low else value < self.low):
            return False
        return not (self.high is not None and (value >= self.high if self.open_high else value > self.high))

    def describe(self) -> str:
        if self.whole:
            text = f"a whole number {_g(self.low)} or more" if self.high is None else (
                f"a whole number from {_g(self.low)} to {_g(self.high)}"
            )
        elif self.low is not None and self.high is not None:
            text = f"a number between {_g(self.low)} and {_g(self.high)}"
            if self.open_low and self.open_high:
                text += " (both excluded)"
            elif self.open_low:
                text += f" ({_g(self.low)} excluded)"
            elif self.open_high:
                text += f" ({_g(self.high)} excluded)"
        else:
            text = f"a number {'above' if self.open_low else 'from'} {_g(self.low)}"
        return f"None, or {text}" if self.none else text


def _g(x: float | None) -> str:
    return f"{x:g}" if x is not None else "?"


COUNT = Range(0)  # how many of something: 0 means none
POSITIVE = Range(1)  # at least one
SHARE = Range(0, 1, whole=False)  # a probability or a score threshold
SPLIT = Range(0, 1, whole=False, open_low=True, open_high=True)  # a fraction held out
TEMPERATURE = Range(0, 2, whole=False)  # the sampling temperature of proposals


def check(optimizer: str, name: str, value: Any, allowed: Range) -> None:
    """A ``ConfigError`` unless ``allowed`` accepts ``value``."""
    if not allowed.accepts(value):
        raise ConfigError(f"optimizer {optimizer!r}: {name}={value!r} is out of range; allowed: {allowed.describe()}")


def check_all(optimizer: str, obj: Any, ranges: dict[str, Range]) -> None:
    """``check`` each option of ``obj`` named in ``ranges`` (in their order)."""
    for name, allowed in ranges.items():
        check(optimizer, name, getattr(obj, name), allowed)
