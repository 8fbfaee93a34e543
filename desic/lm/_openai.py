"""The ``openai`` provider: OpenAI or any OpenAI-compatible server, through instructor.

openai and instructor are imported on first use, never at ``import desic``.
"""

from __future__ import annotations

import asyncio
import os
import time
import weakref
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from ..errors import ConfigError, LMError, OutputValidationError, RateLimited, Timeout
from . import BaseLM, LMParams, LMRequest, LMResponse, Usage
from ._guard import check_allowed

_MODES = ("auto", "tools", "json_schema", "json", "md_json")


def safe_url(url: str | None) -> str | None:
    """``url`` without credentials, query or fragment (what may be written to disk)."""
    if not url:
        return url
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


class OpenAILM(BaseLM):
    """A chat model behind the OpenAI API.

    ``mode`` picks how instructor asks for structure: ``tools`` for OpenAI itself,
    ``json_schema`` (the default whenever ``base_url`` points elsewhere) for vLLM, Ollama,
    llama.cpp and other compatible servers.
    """

    provider = "openai"

    def __init__(
        self,
        model: str,
        *,
        api_key: str | None = None,
        base_url: str | None = None,
        mode: str = "auto",
        temperature: float | None = 0.0,
        max_tokens: int | None = 1024,
        seed: int | None = None,
        validation_retries: int = 2,
        timeout: float = 120.0,
        client_retries: int = 2,
        extra_body: dict[str, Any] | None = None,
    ):
        base_url = base_url or os.environ.get("OPENAI_BASE_URL") or None
        api_key = api_key or os.environ.get("OPENAI_API_KEY") or None
        if api_key is None and (base_url is None or "api.openai.com" in base_url):
            raise ConfigError(
                f"openai:{model} needs an API key: set OPENAI_API_KEY=sk-... or pass "
                "api_key=...; for a local OpenAI-compatible server pass base_url=... instead"
            )
        if mode not in _MODES:
            raise ConfigError(f"unknown instructor mode {mode!r}; choose one of {_MODES}")
        if mode == "auto":
            mode = "tools" if base_url is None or "api.openai.com" in base_url else "json_schema"
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.mode = mode
        self.base_url = base_url
        self._api_key = api_key or "not-needed"
        self.params = LMParams(model=model, temperature=temperature, max_tokens=max_tokens, seed=seed)
        self.validation_retries = validation_retries
        self.timeout = timeout
        self.client_retries = client_retries
        # provider-specific sampling options sent as-is (e.g. {"top_k": 20} for llama.cpp)
        self.extra_body = dict(extra_body or {})
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Any] = (
            weakref.WeakKeyDictionary()
        )

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "provider": self.provider,
            "model": self.model,
            "mode": self.mode,
            "temperature": self.params.temperature,
            "max_tokens": self.params.max_tokens,
        }
        if self.base_url:
            out["base_url"] = safe_url(self.base_url)
        return out

    def _endpoint(self) -> str | None:
        return self.base_url

    def _client(self) -> Any:
        loop = asyncio.get_running_loop()
        client = self._clients.get(loop)
        if client is None:
            import instructor
            import openai

            base_url, query = _split_query(self._endpoint())
            raw = openai.AsyncOpenAI(
                api_key=self._api_key,
                base_url=base_url,
                default_query=query or None,
                timeout=self.timeout,
                max_retries=self.client_retries,
            )
            mode = {
                "tools": instructor.Mode.TOOLS,
                "json_schema": instructor.Mode.JSON_SCHEMA,
                "json": instructor.Mode.JSON,
                "md_json": instructor.Mode.MD_JSON,
            }[self.mode]
            client = instructor.from_openai(raw, mode=mode)
            self._clients[loop] = client
        return client

    async def request(self, request: LMRequest) -> LMResponse:
        check_allowed(self.name)
        client = self._client()
        params = self.params.merged(request.params)
        kwargs: dict[str, Any] = {
            "model": params.model or self.model,
            "messages": [dict(m) for m in request.messages],
            "response_model": request.response_model,
            "max_retries": self.validation_retries,
        }
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body
        start = time.perf_counter()
        try:
            value, completion = await client.chat.completions.create_with_completion(**kwargs)
        except Exception as exc:  # translated at the boundary
            raise self._translate(exc, max_tokens=params.max_tokens) from exc
        latency = time.perf_counter() - start
        if type(value) is not request.response_model:
            # instructor returns an instance of its own subclass carrying the raw completion
            # (which breaks == with the user's model); hand back the requested model only.
            value = request.response_model.model_validate(value.model_dump())
        return LMResponse(
            value=value,
            raw=_raw_text(completion),
            usage=_usage(getattr(completion, "usage", None)),
            latency=latency,
            model=str(getattr(completion, "model", "") or kwargs["model"]),
        )

    def _translate(self, exc: Exception, *, max_tokens: int | None = None) -> Exception:
        import openai
        from instructor.core.exceptions import (
            IncompleteOutputException,
            InstructorError,
            InstructorRetryException,
        )

        if isinstance(exc, IncompleteOutputException):
            last = getattr(exc, "last_completion", None)
            return OutputValidationError(
                f"{self.name}: the output was cut off by the token limit "
                f"(max_tokens={max_tokens}); raise max_tokens on the LM, "
                f"e.g. desic.lm({self.name!r}, max_tokens=4096)",
                raw=_raw_text(last) if last is not None else None,
                errors=str(exc),
            )
        from instructor.core.exceptions import IncompleteOutputException

        if isinstance(exc, IncompleteOutputException):
            last = getattr(exc, "last_completion", None)
            return OutputValidationError(
                f"{self.name}: the output was cut off at max_tokens={self.params.max_tokens} "
                "before it was complete; raise max_tokens or add demos that show a short answer",
                raw=_raw_text(last) if last is not None else None,
                errors="incomplete output (max_tokens reached)",
            )
        if isinstance(exc, InstructorRetryException):
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, (openai.OpenAIError, IncompleteOutputException)):
                return self._translate(cause, max_tokens=max_tokens)
            last = getattr(exc, "last_completion", None)
            # str(exc) repeats every attempt's full completion object; the last
            # validation error is what the reader needs.
            detail = str(cause) if cause is not None else str(exc)
            return OutputValidationError(
                f"{self.name}: output did not validate after {getattr(exc, 'n_attempts', '?')} "
                f"attempts: {detail}",
                raw=_raw_text(last) if last is not None else None,
                errors=detail,
            )
        if isinstance(exc, openai.RateLimitError):
            retry_after = _retry_after(exc)
            return RateLimited(f"{self.name}: rate limited (429): {exc}", retry_after=retry_after)
        if isinstance(exc, openai.APITimeoutError):
            return Timeout(f"{self.name}: no answer within {self.timeout}s")
        if isinstance(exc, openai.APIConnectionError):
            where = safe_url(self._endpoint()) or "api.openai.com"
            return LMError(f"{self.name}: cannot reach {where}: {exc}; is the server running?")
        if isinstance(exc, openai.AuthenticationError):
            return ConfigError(f"{self.name}: the API key was refused; check OPENAI_API_KEY")
        if isinstance(exc, openai.APIStatusError):
            return LMError(f"{self.name}: HTTP {exc.status_code}: {exc.message}")
        if isinstance(exc, openai.OpenAIError):
            return LMError(f"{self.name}: {exc}")
        if isinstance(exc, InstructorError):
            return LMError(f"{self.name}: {type(exc).__name__}: {exc}")
        return exc


def _split_query(url: str | None) -> tuple[str | None, dict[str, str]]:
    """``url`` without its query string, and the query as parameters.

    The openai client appends paths to ``base_url`` verbatim, so a query there (an API
    version or token some gateways want) would end up in the middle of the path; it is
    sent as default query parameters of every request instead.
    """
    if not url:
        return url, {}
    parts = urlsplit(url)
    if not parts.query:
        return url, {}
    return urlunsplit(parts._replace(query="", fragment="")), dict(parse_qsl(parts.query))


def _retry_after(exc: Any) -> float | None:
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None) or {}
    value = headers.get("retry-after") if hasattr(headers, "get") else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _raw_text(completion: Any) -> str:
    try:
        message = completion.choices[0].message
    except (AttributeError, IndexError, TypeError):
        return ""
    if getattr(message, "content", None):
        return str(message.content)
    calls = getattr(message, "tool_calls", None) or []
    return "".join(str(c.function.arguments) for c in calls)


def _usage(usage: Any) -> Usage:
    if usage is None:
        return Usage(calls=1)
    return Usage(
        calls=1,
        prompt_tokens=int(getattr(usage, "prompt_tokens", 0) or 0),
        completion_tokens=int(getattr(usage, "completion_tokens", 0) or 0),
    )
