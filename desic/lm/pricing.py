"""Dollar prices of models, to put a cost on every call.

Prices come from `genai-prices <https://github.com/pydantic/genai-prices>`_, a maintained
table of LLM API prices (per provider, with snapshots, cached-input and tiered prices),
read from the copy installed with it: nothing is fetched at run time, so costs are
reproducible for a given install (``pip install -U genai-prices`` brings newer prices).
Your own prices go on top, per model (``desic.lm("openai:gpt-4o", prices={"gpt-4o":
(2.5, 10.0)})``) or for the LM's own model (``prices=(2.5, 10.0)``), in US dollars per
million tokens; a self-hosted model is free only if you say so (``prices=(0, 0)``).

A model with no known price costs 0.0 per call (and the ``openai`` provider logs it once),
so ``max_dollars`` could never trigger for it: a budget in dollars refuses to start on
such a model instead (:func:`unpriced`).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["Price", "PriceSpec", "cost", "normalize_prices", "price_for"]


@dataclass(frozen=True, slots=True)
class Price:
    """US dollars per million tokens; ``cached_input`` for prompt tokens served from
    the provider's prompt cache (defaults to ``input``)."""

    input: float
    output: float = 0.0
    cached_input: float | None = None


PriceSpec = Price | tuple[float, float] | tuple[float, float, float]

OPENAI_URL = "https://api.openai.com/v1"


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


def _override(model: str, overrides: Mapping[str, Price] | None) -> Price | None:
    """The user's price for ``model``: exact name first, then the longest family prefix
    (``gpt-4o-mini-2024-07-18`` takes a price given for ``gpt-4o-mini``)."""
    if not overrides:
        return None
    name = model.split("/")[-1].lower()  # "openai/gpt-4o" as some gateways name it
    hit = overrides.get(model) or overrides.get(name)
    if hit is not None:
        return hit
    families = [k for k in overrides if name.startswith(k.lower() + "-")]
    return overrides[max(families, key=len)] if families else None


@functools.lru_cache(maxsize=256)
def _where(model: str, base_url: str | None) -> dict[str, str] | None:
    """How genai-prices finds ``model`` served at ``base_url``: by the server's URL when
    the table knows it (OpenAI, OpenRouter, Groq, ...), else among OpenAI's models by
    name (desic's ``openai`` provider); None when it has no price."""
    from genai_prices import Usage, calc_price  # 0.25 s to import: only when pricing

    tries: list[dict[str, str]] = []
    if base_url and base_url.rstrip("/") != OPENAI_URL:
        tries.append({"provider_api_url": base_url})
    tries.append({"provider_id": "openai"})
    for where in tries:
        try:
            calc_price(Usage(input_tokens=1), model, **where)  # type: ignore[call-overload]
        except LookupError:
            continue
        return where
    return None


def _table_price(model: str, base_url: str | None) -> Any:
    where = _where(model, base_url)
    if where is None:
        return None
    from genai_prices import Usage, calc_price

    return calc_price(Usage(input_tokens=1), model, **where)  # type: ignore[call-overload]


def price_for(
    model: str, overrides: Mapping[str, Price] | None = None, *, base_url: str | None = None
) -> Price | None:
    """The price of ``model`` (the user's first, then genai-prices' base rates), or None."""
    own = _override(model, overrides)
    if own is not None:
        return own
    found = _table_price(model, base_url)
    if found is None:
        return None
    mp = found.model_price

    def rate(value: Any) -> float | None:
        if value is None:
            return None
        return float(getattr(value, "base", value))  # tiered prices: the base tier

    return Price(
        input=rate(mp.input_mtok) or 0.0,
        output=rate(mp.output_mtok) or 0.0,
        cached_input=rate(getattr(mp, "cache_read_mtok", None)),
    )


def cost(
    model: str,
    prompt_tokens: int,
    completion_tokens: int = 0,
    *,
    cached_tokens: int = 0,
    overrides: Mapping[str, Price] | None = None,
    base_url: str | None = None,
) -> float | None:
    """Dollars for one call, or ``None`` when the model has no known price.

    ``prompt_tokens`` includes the ``cached_tokens`` the provider served from its prompt
    cache (as OpenAI reports them).
    """
    cached = min(max(cached_tokens, 0), prompt_tokens)
    own = _override(model, overrides)
    if own is not None:
        cached_rate = own.input if own.cached_input is None else own.cached_input
        dollars = (
            (prompt_tokens - cached) * own.input
            + cached * cached_rate
            + completion_tokens * own.output
        )
        return dollars / 1_000_000
    where = _where(model, base_url)
    if where is None:
        return None
    from genai_prices import Usage, calc_price

    usage = Usage(
        input_tokens=prompt_tokens, cache_read_tokens=cached, output_tokens=completion_tokens
    )
    return float(calc_price(usage, model, **where).total_price)  # type: ignore[call-overload]


def known(model: str, overrides: Mapping[str, Price] | None = None, *, base_url: str | None = None) -> bool:
    """Whether calls of ``model`` get a real price (the user's or the table's)."""
    return _override(model, overrides) is not None or _where(model, base_url) is not None
