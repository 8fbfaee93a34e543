"""Dollar prices of OpenAI models, to put a cost on every call.

Prices are US dollars per million tokens, as OpenAI published them in 2025. They change:
pass your own to the provider, which are taken over these (``desic.lm("openai:gpt-4o",
prices={"gpt-4o": (2.5, 10.0)})``, or ``prices=(2.5, 10.0)`` for the LM's own model).
A dated snapshot name (``gpt-4o-mini-2024-07-18``) is priced as its family
(``gpt-4o-mini``). Local models and fakes cost nothing; a model with no known price
costs 0.0 (and the ``openai`` provider logs it once).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["PRICES", "Price", "PriceSpec", "cost", "normalize_prices", "price_for"]


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens; ``cached_input`` for prompt tokens served from
    the provider's prompt cache (defaults to ``input``)."""

    input: float
    output: float = 0.0
    cached_input: float | None = None


PriceSpec = Price | tuple[float, float] | tuple[float, float, float]

PRICES: Mapping[str, Price] = {
    # chat models
    "gpt-4o": Price(2.50, 10.00, 1.25),
    "gpt-4o-mini": Price(0.15, 0.60, 0.075),
    "gpt-4.1": Price(2.00, 8.00, 0.50),
    "gpt-4.1-mini": Price(0.40, 1.60, 0.10),
    "gpt-4.1-nano": Price(0.10, 0.40, 0.025),
    "gpt-5": Price(1.25, 10.00, 0.125),
    "gpt-5-mini": Price(0.25, 2.00, 0.025),
    "gpt-5-nano": Price(0.05, 0.40, 0.005),
    "o1": Price(15.00, 60.00, 7.50),
    "o1-mini": Price(1.10, 4.40, 0.55),
    "o3": Price(2.00, 8.00, 0.50),
    "o3-mini": Price(1.10, 4.40, 0.55),
    "o4-mini": Price(1.10, 4.40, 0.275),
    "gpt-4-turbo": Price(10.00, 30.00),
    "gpt-4": Price(30.00, 60.00),
    "gpt-3.5-turbo": Price(0.50, 1.50),
    # embedding models (input only)
    "text-embedding-3-small": Price(0.02),
    "text-embedding-3-large": Price(0.13),
    "text-embedding-ada-002": Price(0.10),
}


def _as_price(spec: PriceSpec) -> Price:
    if isinstance(spec, Price):
        return spec
    values = tuple(float(v) for v in spec)
    if len(values) not in (2, 3):
        raise ValueError(f"a price is (input, output[, cached_input]) per 1M tokens, got {spec!r}")
    return Price(*values)


def normalize_prices(
    prices: Mapping[str, PriceSpec] | PriceSpec | None, model: str
) -> dict[str, Price]:
    """Overrides by model name; a bare price applies to ``model``."""
    if prices is None:
        return {}
    if isinstance(prices, Mapping):
        return {str(name): _as_price(p) for name, p in prices.items()}
    return {model: _as_price(prices)}


def price_for(model: str, overrides: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``: exact name first, then the longest known family prefix."""
    table: dict[str, Price] = {**PRICES, **(overrides or {})}
    name = model.split("/")[-1].lower()  # "openai/gpt-4o" as some gateways name it
    hit = table.get(model) or table.get(name)
    if hit is not None:
        return hit
    families = [k for k in table if name.startswith(k.lower() + "-")]
    return table[max(families, key=len)] if families else None


def cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int = 0,
    *,
    cached_tokens: int = 0,
    overrides: Mapping[str, Price] | None = None,
) -> float | None:
    """Dollars for one call, or ``None`` when the model has no known price."""
    price = price_for(model, overrides)
    if price is None:
        return None
    cached = min(max(cached_tokens, 0), prompt_tokens)
    cached_rate = price.input if price.cached_input is None else price.cached_input
    dollars = (
        (prompt_tokens - cached) * price.input
        + cached * cached_rate
        + completion_tokens * price.output
    )
    return dollars / 1_000_000
