"""The LM middleware, and how configuration options compose it.

``desic.lm(spec, rps=, burst=, tpm=, retries=, timeout=, cache=)`` builds
``cache(retry(throttle(timeout(provider))))``: a cache hit skips everything; every
attempt (first or retried) waits for the throttle, and so does every further HTTP request
within an attempt (instructor's re-asks), so retries cannot storm the provider; each
attempt gets its own timeout, and neither the time spent waiting for the throttle nor the
provider's one-off set-up (SDK import, client) counts against it.
"""

from __future__ import annotations

from typing import Any

from ..errors import ConfigError
from . import LM, BaseLM
from ._cache import CacheLM
from ._retry import RetryLM
from ._throttle import ThrottleLM
from ._timeout import TimeoutLM
from ._wrapper import WrapperLM, unwrap

__all__ = ["CacheLM", "RetryLM", "ThrottleLM", "TimeoutLM", "WrapperLM", "unwrap", "wrap"]

MIDDLEWARE_OPTIONS = ("rps", "burst", "tpm", "retries", "timeout", "cache")

DEFAULT_RETRIES_WITH_THROTTLE = 3


def wrap(
    inner: LM,
    *,
    rps: float | None = None,
    burst: float = 1,
    tpm: float | None = None,
    retries: int | None = None,
    timeout: float | None = None,
    cache: Any = None,
) -> BaseLM:
    """``inner`` wrapped as the options ask (see ``desic.lm``); unchanged if none do.

    An LM that is not a ``BaseLM`` gets a plain wrapper at least, for the sync fronts
    and ``embed``.
    """
    if burst != 1 and rps is None:
        raise ConfigError("burst= only makes sense with rps= (requests per second)")
    lm: BaseLM = inner if isinstance(inner, BaseLM) else WrapperLM(inner)
    if timeout is not None:
        lm = TimeoutLM(lm, timeout)
    if rps is not None or tpm is not None:
        lm = ThrottleLM(lm, rps=rps, burst=burst, tpm=tpm)
        if retries is None:
            retries = DEFAULT_RETRIES_WITH_THROTTLE
    if retries:
        lm = RetryLM(lm, retries)
    if cache not in (None, False):
        lm = CacheLM(lm, cache)
    return lm
