"""An LM as plain data, to rebuild it in another process (a Ray worker).

``lm_config(lm)`` describes how to build ``lm`` again: a JSON-ready dict, never a pickle.
``lm_from_config(data)`` builds it. What goes in the dict is the LM's configuration
(provider, model, base URL, sampling, middleware options); what never does is a secret:
an API key, or a user and password taken out of a base URL, comes from the environment of
the process that rebuilds the LM (``OPENAI_API_KEY``, ``OPENAI_BASE_URL``).

The providers and the middleware of :mod:`desic.lm` are known here. Any other LM travels
if its class has ``to_config() -> dict`` and a classmethod ``from_config(dict)``: the
class is found again by its import path (``module:QualName``), as pipelines are (the
fakes of :mod:`desic.testing` do this).

A throttle's buckets may be replaced where the LM is rebuilt (``share=``), so that every
process rebuilding one LM draws from one cluster-wide limit; each throttle carries a
``key`` naming it for that purpose.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..errors import ConfigError
from . import LM
from ._cache import CacheLM
from ._local import LocalLM
from ._openai import OpenAILM
from ._retry import RetryLM
from ._throttle import ThrottleLM
from ._timeout import TimeoutLM
from ._wrapper import WrapperLM

__all__ = ["Share", "lm_config", "lm_from_config", "throttles"]

# (key, rate per second, burst) -> a bucket with reserve/acquire, or None to keep a local one
Share = Callable[[str, float, float], Any]


def _cannot(lm: Any, why: str) -> ConfigError:
    return ConfigError(
        f"the LM {lm!r:.80} cannot be sent to other processes (a Ray worker): {why}. Build it "
        "from a spec (desic.lm('openai:MODEL', base_url=...)), or give its class to_config() -> dict "
        "and a classmethod from_config(dict), importable by MODULE:NAME on every worker"
    )


def lm_config(lm: LM) -> dict[str, Any]:
    """How to build ``lm`` again, as plain JSON data (no secret in it)."""
    if isinstance(lm, ThrottleLM):
        tpm_burst = lm.tokens.burst if lm.tokens is not None else None
        return {
            "type": "throttle", "rps": lm.rps, "burst": lm.burst, "tpm": lm.tpm, "tpm_burst": tpm_burst,
            "key": str(id(lm)), "inner": lm_config(lm.inner),
        }
    if isinstance(lm, RetryLM):
        return {
            "type": "retry", "max_retries": lm.max_retries, "initial": lm.initial, "max_wait": lm.max_wait,
            "jitter": lm.jitter, "inner": lm_config(lm.inner),
        }
    if isinstance(lm, TimeoutLM):
        return {"type": "timeout", "seconds": lm.seconds, "inner": lm_config(lm.inner)}
    if isinstance(lm, CacheLM):
        store = getattr(lm, "store_spec", None)
        if store is None:
            raise _cannot(lm, "its cache store was given as an object; give cache= a path, 'memory' or True")
        return {"type": "cache", "store": store, "inner": lm_config(lm.inner)}
    if isinstance(lm, LocalLM):
        return {
            "type": "local", "model_path": lm._model_path, "n_ctx": lm.n_ctx, "n_parallel": lm.n_parallel,
            "temperature": lm.params.temperature, "max_tokens": lm.params.max_tokens, "seed": lm.params.seed,
            "validation_retries": lm.validation_retries, "timeout": lm.timeout, "client_retries": lm.client_retries,
        }
    if isinstance(lm, OpenAILM):
        prices = {name: [p.input, p.output, p.cached_input] for name, p in lm.prices.items()}
        return {
            "type": "openai", "model": lm.model, "base_url": lm.base_url, "mode": lm.mode,
            "temperature": lm.params.temperature, "max_tokens": lm.params.max_tokens, "seed": lm.params.seed,
            "validation_retries": lm.validation_retries, "timeout": lm.timeout,
            "client_retries": lm.client_retries, "extra_body": lm.extra_body, "prices": prices or None,
            "embedding_model": lm.embedding_model,
        }
    if type(lm) is WrapperLM:
        return lm_config(lm.inner)
    to_config = getattr(lm, "to_config", None)
    cls = type(lm)
    if to_config is None or not callable(getattr(cls, "from_config", None)):
        raise _cannot(lm, f"{cls.__qualname__} has no to_config()/from_config()")
    if "<locals>" in cls.__qualname__ or cls.__module__ == "__main__":
        raise _cannot(lm, f"its class {cls.__qualname__} is not importable by name (defined in a function or a script)")
    data = dict(to_config())
    data["type"] = f"{cls.__module__}:{cls.__qualname__}"
    return data


def _import(path: str) -> Any:
    module, _, name = path.partition(":")
    try:
        obj: Any = importlib.import_module(module)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module!r} to rebuild the LM {path!r} here: {exc}") from None
    for part in name.split("."):
        obj = getattr(obj, part, None)
        if obj is None:
            raise ConfigError(f"{module!r} has no {name!r} (to rebuild the LM {path!r})")
    return obj


def lm_from_config(data: dict[str, Any], *, share: Share | None = None) -> LM:
    """The LM ``data`` (from :func:`lm_config`) describes; ``share(key, rate, burst)``, when
    given, supplies the buckets of each throttle (None keeps the throttle's own)."""
    kind = data.get("type")
    options = {k: v for k, v in data.items() if k not in ("type", "inner", "key")}
    if kind in ("throttle", "retry", "timeout", "cache"):
        inner = lm_from_config(data["inner"], share=share)
        if kind == "retry":
            return RetryLM(inner, **options)
        if kind == "timeout":
            return TimeoutLM(inner, **options)
        if kind == "cache":
            return CacheLM(inner, options["store"])
        throttle = ThrottleLM(inner, **options)
        if share is not None:
            key = str(data.get("key"))
            if throttle.rps is not None:
                throttle.requests = share(f"{key}/requests", throttle.rps, throttle.burst) or throttle.requests
            if throttle.tokens is not None:
                throttle.tokens = share(f"{key}/tokens", throttle.tokens.rate, throttle.tokens.burst) or throttle.tokens
        return throttle
    if kind == "openai":
        prices = options.pop("prices") or None
        if prices is not None:
            prices = {name: tuple(p[:2]) if p[2] is None else tuple(p) for name, p in prices.items()}
        return OpenAILM(prices=prices, **options)
    if kind == "local":
        return LocalLM(**options)
    if isinstance(kind, str) and ":" in kind:
        made: LM = _import(kind).from_config(options)
        return made
    raise ConfigError(f"cannot rebuild an LM from {data!r:.120}: unknown type {kind!r}")


def throttles(lm: LM) -> list[ThrottleLM]:
    """The throttles in ``lm``'s chain of wrappers, outermost first."""
    found: list[ThrottleLM] = []
    while isinstance(lm, WrapperLM):
        if isinstance(lm, ThrottleLM):
            found.append(lm)
        lm = lm.inner
    return found
