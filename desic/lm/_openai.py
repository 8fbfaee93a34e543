"""The ``openai`` provider: OpenAI or any OpenAI-compatible server, through instructor.

openai and instructor are imported on first use, never at ``import desic``. Errors are
translated here, at the boundary, into desic's tree; the ones a later attempt may fix
(5xx, 408/409, connection failures, a malformed body) are marked transient for
``desic.lm.retry``, and a 429 carries the server's Retry-After.

Credentials never travel in a URL: a ``user:password@`` in the base URL is taken out and
sent as HTTP basic auth (what the HTTP client did with it), so the URL the client holds,
logs and puts in its errors has none. The key, the password and secret-looking query
parameters are registered with ``desic._redact``, and the loggers of openai, instructor
and the HTTP client get its filter, so an echo of them is scrubbed wherever desic writes.

``stream`` asks for a streamed completion (server-sent events) through instructor's
partial models, with ``stream_options.include_usage`` so the last chunk carries the usage;
the chunks are tapped on their way to instructor for that usage and the raw text, from
which the final output is validated. A stream is never re-asked.
"""

from __future__ import annotations

import asyncio
import base64
import contextvars
import email.utils
import json
import os
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ValidationError

from .. import events
from .._redact import add_secret, get_logger, guard_loggers, redact_exception, redact_text
from ..errors import ConfigError, LMError, OutputValidationError, RateLimited, Timeout
from . import BaseLM, LMParams, LMRequest, LMResponse, Usage, charge_embedding
from ._pacing import counting, pace
from ._retry import transient
from .guard import check_allowed
from .pricing import Price, PriceSpec, cost, known, normalize_prices

log = get_logger("desic.lm")

_MODES = ("auto", "tools", "json_schema", "json", "md_json")
DEFAULT_EMBEDDING_MODEL = "text-embedding-3-small"
EMBED_BATCH = 256  # inputs per embeddings request (the API takes up to 2048)
_TRANSIENT_STATUS = {408, 409}
_unpriced_warned: set[str] = set()
# Models known to take images; others on OpenAI itself are text-only. A server of one's
# own (base_url) is assumed to take them; ``vision=`` says otherwise.
_VISION_PREFIXES = ("gpt-4o", "gpt-4.1", "gpt-4.5", "gpt-4-turbo", "gpt-5", "o1", "o3", "o4", "chatgpt-4o")


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
    llama.cpp and other compatible servers. ``validation_retries`` bounds instructor's
    re-asks when the output does not validate (then ``OutputValidationError``, carrying the
    raw completion and the errors). ``client_retries`` are the openai client's own retries;
    ``desic.lm(..., retries=N)`` sets them to 0 and retries with ``desic.lm.retry``.
    ``prices`` (dollars per 1M tokens) go over genai-prices' table (:mod:`desic.lm.pricing`).
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
        prices: Mapping[str, PriceSpec] | PriceSpec | None = None,
        embedding_model: str = DEFAULT_EMBEDDING_MODEL,
        vision: bool | None = None,
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
            mode = "tools" if _is_openai(base_url) else "json_schema"
        base_url, basic_auth = _take_credentials(base_url)
        add_secret(api_key)
        self.model = model
        self.name = f"{self.provider}:{model}"
        self.mode = mode
        self.base_url = base_url  # never with a user or password: see _take_credentials
        self._api_key = api_key or "not-needed"
        self._headers = {"Authorization": basic_auth} if basic_auth else {}
        self.params = LMParams(model=model, temperature=temperature, max_tokens=max_tokens, seed=seed)
        self.validation_retries = validation_retries
        self.timeout = timeout
        self.client_retries = client_retries
        # provider-specific sampling options sent as-is (e.g. {"top_k": 20} for llama.cpp)
        self.extra_body = dict(extra_body or {})
        self.prices: dict[str, Price] = normalize_prices(prices, model)
        self.embedding_model = embedding_model
        # whether the model takes images: ``vision=``, else known OpenAI vision models, and
        # any model of another OpenAI-compatible server
        self.vision = vision if vision is not None else (
            not _is_openai(base_url) or model.startswith(_VISION_PREFIXES)
        )
        # clients are bound to the event loop they were made on
        self._clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[str, Any]] = (
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

    def unpriced(self) -> str | None:
        """The model, if its calls have no known price (see :mod:`desic.lm.pricing`); else
        the embedding model, if its requests have none (a dollar budget counts those too)."""
        for model in (self.model, self.embedding_model):
            if not known(model, self.prices, base_url=self.base_url):
                return model
        return None

    # --- clients ------------------------------------------------------------------------

    def _endpoint(self) -> str | None:
        return self.base_url

    def _embed_endpoint(self) -> str | None:
        return self._endpoint()

    def _raw_client(self, endpoint: str | None) -> Any:
        import openai

        base_url, query = _split_query(endpoint)
        return openai.AsyncOpenAI(
            api_key=self._api_key,
            base_url=base_url,
            default_query=query or None,
            timeout=self.timeout,
            max_retries=self.client_retries,
            default_headers=self._headers or None,
            # every HTTP request (instructor's re-asks, the client's retries) pays the
            # throttle the call runs under, not only the call's first
            http_client=openai.DefaultAsyncHttpxClient(event_hooks={"request": [pace]}),
        )

    def _client(self, kind: str = "chat") -> Any:
        """The instructor client (``chat``) or the bare openai client for ``embed``."""
        loop = asyncio.get_running_loop()
        clients = self._clients.setdefault(loop, {})
        client = clients.get(kind)
        if client is None:
            if kind == "embed":
                client = self._raw_client(self._embed_endpoint())
            elif kind == "raw":  # native tool calls (an agent's steps)
                client = self._raw_client(self._endpoint())
            elif kind == "stream":
                import instructor

                raw = self._raw_client(self._endpoint())
                completions = raw.chat.completions
                completions.create = _tapped(completions.create)  # the chunks pass by us
                client = instructor.from_openai(raw, mode=_instructor_mode(self.mode))
            else:
                import instructor

                mode = {
                    "tools": instructor.Mode.TOOLS,
                    "json_schema": instructor.Mode.JSON_SCHEMA,
                    "json": instructor.Mode.JSON,
                    "md_json": instructor.Mode.MD_JSON,
                }[self.mode]
                client = instructor.from_openai(self._raw_client(self._endpoint()), mode=mode)
            # the SDKs' loggers exist now: an echoed key must not reach a log through them
            guard_loggers()
            clients[kind] = client
        return client

    async def prepare(self, op: str = "request") -> None:
        """Import openai and instructor and build this loop's client (``timeout`` starts after).

        The imports take a second or more on a cold start; inside the timed attempt they
        made a first call with ``timeout=1`` fail before sending anything.
        """
        check_allowed(self.name)  # before any set-up (the local provider starts a server)
        self._client("embed" if op == "embed" else "chat")

    # --- calls --------------------------------------------------------------------------

    def _sampling_options(self, params: LMParams, kwargs: dict[str, Any]) -> None:
        """The sampling settings that are set (the rest left to the server) and the
        provider's extra body, into a chat request's ``kwargs``."""
        if params.temperature is not None:
            kwargs["temperature"] = params.temperature
        if params.max_tokens is not None:
            kwargs["max_tokens"] = params.max_tokens
        if params.seed is not None:
            kwargs["seed"] = params.seed
        if self.extra_body:
            kwargs["extra_body"] = self.extra_body

    async def request(self, request: LMRequest) -> LMResponse:
        check_allowed(self.name)
        if request.tools and self.mode == "tools":
            return await self._tool_call(request)
        client = self._client()
        params = self.params.merged(request.params)
        kwargs: dict[str, Any] = {
            "model": params.model or self.model,
            "messages": [dict(m) for m in request.messages],
            "response_model": request.response_model,
            "max_retries": self.validation_retries,
        }
        self._sampling_options(params, kwargs)
        start = time.perf_counter()
        with counting() as sent:
            try:
                value, completion = await client.chat.completions.create_with_completion(**kwargs)
            except Exception as exc:  # translated at the boundary
                error = self._translate(
                    exc, max_tokens=params.max_tokens, own=request.params.max_tokens is not None
                )
                if isinstance(error, LMError):  # what the server saw counts, failed or not
                    spent = getattr(exc, "total_usage", None)
                    error.usage = self._usage(kwargs["model"], spent, calls=sent[0])
                raise error from exc
        latency = time.perf_counter() - start
        if type(value) is not request.response_model:
            # instructor returns an instance of its own subclass carrying the raw completion
            # (which breaks == with the user's model); hand back the requested model only.
            value = request.response_model.model_validate(value.model_dump())
        # instructor sums the usage of every attempt (re-asks included) on the last completion
        usage = self._usage(kwargs["model"], getattr(completion, "usage", None), calls=max(1, sent[0]))
        return LMResponse(
            value=value,
            raw=_raw_text(completion),
            usage=usage,
            latency=latency,
            model=str(getattr(completion, "model", "") or kwargs["model"]),
        )

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        """Partial outputs as the completion streams in, then the validated ``LMResponse``."""
        check_allowed(self.name)
        client = self._client("stream")
        params = self.params.merged(request.params)
        kwargs: dict[str, Any] = {
            "model": params.model or self.model,
            "messages": [dict(m) for m in request.messages],
            "response_model": request.response_model,
            "max_retries": 0,  # a streamed answer the caller has seen in part is not re-asked
            "stream_options": {"include_usage": True},
        }
        self._sampling_options(params, kwargs)
        start = time.perf_counter()
        tap = _Tap()
        items = client.chat.completions.create_partial(**kwargs)
        try:
            while True:
                with counting() as sent, _tap_scope(tap):
                    try:
                        item = await items.__anext__()
                    except StopAsyncIteration:
                        break
                    except Exception as exc:
                        error = self._stream_error(exc, tap, params.max_tokens)
                        if isinstance(error, LMError):
                            calls = max(1, tap.sent + sent[0])
                            error.usage = self._usage(kwargs["model"], tap.usage, calls=calls)
                        raise error from exc
                    tap.sent += sent[0]
                yield item
        finally:
            await items.aclose()
        usage = self._usage(kwargs["model"], tap.usage, calls=max(1, tap.sent))
        if tap.finish == "length":
            cut = OutputValidationError(
                f"{self.name}: the output was cut off by the token limit "
                f"(max_tokens={params.max_tokens}); raise max_tokens on the LM, "
                f"e.g. desic.lm({self.name!r}, max_tokens=4096)",
                raw=tap.text, errors="finish_reason=length",
            )
            cut.usage = usage
            raise cut
        try:
            value = request.response_model.model_validate_json(tap.text)
        except ValidationError as exc:
            invalid = OutputValidationError(
                f"{self.name}: the streamed output did not validate: {exc}", raw=tap.text, errors=str(exc)
            )
            invalid.usage = usage
            raise invalid from exc
        yield LMResponse(
            value=value,
            raw=tap.text,
            usage=usage,
            latency=time.perf_counter() - start,
            model=tap.model or kwargs["model"],
            meta={"streamed": True},
        )

    def _stream_error(self, exc: Exception, tap: _Tap, max_tokens: int | None) -> Exception:
        if isinstance(exc, ValidationError):  # instructor validates a complete object itself
            return OutputValidationError(
                f"{self.name}: the streamed output did not validate: {exc}", raw=tap.text, errors=str(exc)
            )
        return self._translate(exc, max_tokens=max_tokens)

    async def _tool_call(self, request: LMRequest) -> LMResponse:
        """An agent's step through native tool calling: the request's tools are sent as
        ``tools`` (one call required), and the call that comes back fills the response model
        (``{"thought": content, "action": {"tool": name, "args": arguments}}``). An answer
        that does not validate is re-asked, the error shown, ``validation_retries`` times."""
        from pydantic import ValidationError

        client = self._client("raw")
        params = self.params.merged(request.params)
        model = params.model or self.model
        messages: list[dict[str, Any]] = [dict(m) for m in request.messages]
        kwargs: dict[str, Any] = {"model": model, "tools": list(request.tools), "tool_choice": "required"}
        self._sampling_options(params, kwargs)
        start = time.perf_counter()
        prompt = completion_tokens = 0
        raw = ""
        detail = ""
        with counting() as sent:
            for _attempt in range(self.validation_retries + 1):
                try:
                    completion = await client.chat.completions.create(messages=messages, **kwargs)
                except Exception as exc:  # translated at the boundary
                    error = self._translate(exc, max_tokens=params.max_tokens)
                    if isinstance(error, LMError):
                        error.usage = Usage(calls=sent[0], prompt_tokens=prompt, completion_tokens=completion_tokens)
                    raise error from exc
                usage = getattr(completion, "usage", None)
                prompt += int(getattr(usage, "prompt_tokens", 0) or 0)
                completion_tokens += int(getattr(usage, "completion_tokens", 0) or 0)
                message = completion.choices[0].message
                calls = getattr(message, "tool_calls", None) or []
                raw = _raw_text(completion)
                if not calls:
                    detail = "the model called no tool"
                else:
                    call = calls[0]
                    try:
                        args = json.loads(call.function.arguments or "{}")
                        value = request.response_model.model_validate(
                            {"thought": message.content or "", "action": {"tool": call.function.name, "args": args}}
                        )
                    except (ValidationError, json.JSONDecodeError) as exc:
                        detail = str(exc)
                    else:
                        total = Usage(calls=max(1, sent[0]), prompt_tokens=prompt, completion_tokens=completion_tokens)
                        return LMResponse(
                            value=value,
                            raw=raw,
                            usage=self._usage(model, total, calls=max(1, sent[0])),
                            latency=time.perf_counter() - start,
                            model=str(getattr(completion, "model", "") or model),
                        )
                messages.append({"role": "assistant", "content": raw or "(no tool call)"})
                messages.append({"role": "user", "content": f"That action is not valid: {detail}. Call one tool."})
        error = OutputValidationError(
            f"{self.name}: the tool call did not validate after {self.validation_retries + 1} attempts: {detail}",
            raw=raw,
            errors=detail,
        )
        error.usage = self._usage(
            model, Usage(prompt_tokens=prompt, completion_tokens=completion_tokens), calls=max(1, sent[0])
        )
        raise error

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Vectors from the embeddings endpoint (``embedding_model``), in input order."""
        check_allowed(self.name)
        texts = list(texts)
        if not texts:
            return []
        client = self._client("embed")
        start = time.perf_counter()
        vectors: list[list[float]] = []
        tokens = 0
        for i in range(0, len(texts), EMBED_BATCH):
            batch = texts[i : i + EMBED_BATCH]
            try:
                result = await client.embeddings.create(model=self.embedding_model, input=batch)
            except Exception as exc:
                raise self._translate(exc) from exc
            used = int(getattr(getattr(result, "usage", None), "prompt_tokens", 0) or 0)
            tokens += used
            # each request as it is answered: a later failure does not unspend it
            charge_embedding(Usage(calls=1, prompt_tokens=used, cost=self._cost(self.embedding_model, used, 0, 0)))
            rows = sorted(result.data, key=lambda d: d.index)
            if len(rows) != len(batch):
                raise transient(LMError(
                    f"{self.name}: asked for {len(batch)} embeddings, got {len(rows)}"
                ))
            vectors.extend([float(x) for x in row.embedding] for row in rows)
        spent = self._cost(self.embedding_model, tokens, 0, 0)
        if events.active():
            events.emit(
                "lm_call",
                lm=self.name,
                node=None,
                op="embed",
                latency=time.perf_counter() - start,
                prompt_tokens=tokens,
                completion_tokens=0,
                cost=spent,
                cached=False,
            )
        return vectors

    # --- usage and cost -----------------------------------------------------------------

    def _usage(self, model: str, usage: Any, *, calls: int = 1) -> Usage:
        """``calls``: the HTTP requests the server saw for this call (re-asks included)."""
        if usage is None:
            return Usage(calls=calls)
        prompt = int(getattr(usage, "prompt_tokens", 0) or 0)
        completion = int(getattr(usage, "completion_tokens", 0) or 0)
        details = getattr(usage, "prompt_tokens_details", None)
        cached = int(getattr(details, "cached_tokens", 0) or 0)
        return Usage(
            calls=calls,
            prompt_tokens=prompt,
            completion_tokens=completion,
            cost=self._cost(model, prompt, completion, cached),
        )

    def _cost(self, model: str, prompt: int, completion: int, cached: int) -> float:
        dollars = cost(
            model, prompt, completion, cached_tokens=cached, overrides=self.prices, base_url=self.base_url
        )
        if dollars is None:
            if _is_openai(self.base_url) and model not in _unpriced_warned:
                _unpriced_warned.add(model)
                log.warning(
                    "no price known for %r: its calls are counted as costing $0; pass "
                    "prices={%r: (input, output)} (dollars per 1M tokens)", model, model,
                )
            return 0.0
        return dollars

    # --- errors -------------------------------------------------------------------------

    def _translate(self, exc: Exception, *, max_tokens: int | None = None, own: bool = False) -> Exception:
        """``exc`` as desic's error, scrubbed (and the SDK's errors it came from) of any
        credential the server echoed back."""
        redact_exception(exc)
        error = self._translate_error(exc, max_tokens=max_tokens, own=own)
        redact_exception(error)
        if isinstance(error, OutputValidationError) and isinstance(error.errors, str):
            error.errors = redact_text(error.errors)
        return error

    def _translate_error(self, exc: Exception, *, max_tokens: int | None = None, own: bool = False) -> Exception:
        import openai
        from instructor.core.exceptions import (
            IncompleteOutputException,
            InstructorError,
            InstructorRetryException,
        )

        if isinstance(exc, IncompleteOutputException):
            last = getattr(exc, "last_completion", None)
            advice = (
                f"this call's own limit (a node's lm override or an optimizer's), not the LM's "
                f"({self.params.max_tokens}): raise it where it is set"
                if own
                else f"raise max_tokens on the LM, e.g. desic.lm({self.name!r}, max_tokens=4096)"
            )
            return OutputValidationError(
                f"{self.name}: the output was cut off by the token limit (max_tokens={max_tokens}); {advice}",
                raw=_raw_text(last) if last is not None else None,
                errors=str(exc),
            )
        if isinstance(exc, InstructorRetryException):
            cause = exc.__cause__ or exc.__context__
            last = getattr(exc, "last_completion", None)
            if isinstance(cause, (openai.OpenAIError, IncompleteOutputException)):
                return self._translate_error(cause, max_tokens=max_tokens, own=own)
            if isinstance(cause, json.JSONDecodeError) and last is None:
                # No completion was ever parsed: the HTTP body itself was broken (instructor
                # retried it as if it were a parse error).
                return self._translate_error(cause)
            # str(exc) repeats every attempt's full completion object; the last
            # validation error is what the reader needs.
            detail = str(cause) if cause is not None else str(exc)
            return OutputValidationError(
                f"{self.name}: output did not validate after {getattr(exc, 'n_attempts', '?')} "
                f"attempts: {detail}",
                raw=_raw_text(last) if last is not None else None,
                errors=detail,
            )
        if isinstance(exc, json.JSONDecodeError):
            return transient(LMError(f"{self.name}: the server sent a malformed response: {exc}"))
        if isinstance(exc, openai.RateLimitError):
            retry_after = _retry_after(getattr(exc, "response", None))
            return RateLimited(f"{self.name}: rate limited (429): {exc}", retry_after=retry_after)
        if isinstance(exc, openai.APITimeoutError):
            return Timeout(f"{self.name}: no answer within {self.timeout:g}s")
        if isinstance(exc, openai.APIConnectionError):
            where = safe_url(self._endpoint()) or "api.openai.com"
            return transient(
                LMError(f"{self.name}: cannot reach {where}: {exc}; is the server running?")
            )
        if isinstance(exc, openai.AuthenticationError):
            return ConfigError(f"{self.name}: the API key was refused; check OPENAI_API_KEY")
        if isinstance(exc, openai.APIStatusError):
            error = LMError(f"{self.name}: HTTP {exc.status_code}: {exc.message}")
            error.status_code = exc.status_code  # type: ignore[attr-defined]
            if exc.status_code >= 500 or exc.status_code in _TRANSIENT_STATUS:
                return transient(error)
            return error
        if isinstance(exc, openai.APIResponseValidationError):
            return transient(LMError(f"{self.name}: the server sent an unexpected response: {exc}"))
        if isinstance(exc, openai.OpenAIError):
            return LMError(f"{self.name}: {exc}")
        if isinstance(exc, InstructorError):
            return LMError(f"{self.name}: {type(exc).__name__}: {exc}")
        return exc


def _instructor_mode(mode: str) -> Any:
    import instructor

    return {
        "tools": instructor.Mode.TOOLS,
        "json_schema": instructor.Mode.JSON_SCHEMA,
        "json": instructor.Mode.JSON,
        "md_json": instructor.Mode.MD_JSON,
    }[mode]


class _Tap:
    """What one streamed call's chunks said besides the partial outputs: the text so far,
    the usage (the last chunk's, with ``include_usage``), the finish reason and model."""

    __slots__ = ("finish", "model", "sent", "text", "usage")

    def __init__(self) -> None:
        self.text = ""
        self.usage: Any = None
        self.finish: str | None = None
        self.model = ""
        self.sent = 0

    def see(self, chunk: Any) -> None:
        usage = getattr(chunk, "usage", None)
        if usage is not None:
            self.usage = usage
        self.model = str(getattr(chunk, "model", "") or self.model)
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) != 0:
                continue
            delta = getattr(choice, "delta", None)
            content = getattr(delta, "content", None)
            if content:
                self.text += content
            for call in getattr(delta, "tool_calls", None) or ():
                arguments = getattr(getattr(call, "function", None), "arguments", None)
                if arguments:
                    self.text += arguments
            if getattr(choice, "finish_reason", None):
                self.finish = choice.finish_reason


_tap_var: contextvars.ContextVar[_Tap | None] = contextvars.ContextVar("desic_stream_tap", default=None)


class _tap_scope:
    __slots__ = ("_token", "tap")

    def __init__(self, tap: _Tap) -> None:
        self.tap = tap

    def __enter__(self) -> None:
        self._token = _tap_var.set(self.tap)

    def __exit__(self, *exc: object) -> None:
        _tap_var.reset(self._token)


def _tapped(create: Callable[..., Any]) -> Callable[..., Any]:
    """``create`` whose streamed responses pass every chunk to the call's ``_Tap``."""

    async def create_tapped(*args: Any, **kwargs: Any) -> Any:
        response = await create(*args, **kwargs)
        if not kwargs.get("stream"):
            return response
        return _chunks(response)

    return create_tapped


async def _chunks(response: Any) -> AsyncIterator[Any]:
    try:
        async for chunk in response:
            tap = _tap_var.get()
            if tap is not None:
                tap.see(chunk)
            yield chunk
    finally:
        close = getattr(response, "close", None)
        if close is not None:
            await close()


def _is_openai(base_url: str | None) -> bool:
    return base_url is None or "api.openai.com" in base_url


_SECRET_QUERY = ("key", "token", "secret", "password", "passwd", "sig", "signature", "auth", "code")


def _take_credentials(url: str | None) -> tuple[str | None, str | None]:
    """``url`` without its ``user:password@``, and those as a basic auth header value.

    The password, and query parameters that look secret (``?api_key=``, ``?token=``,
    ``?sig=``), are registered for redaction: the query does travel in the URL.
    """
    if not url:
        return url, None
    parts = urlsplit(url)
    for name, value in parse_qsl(parts.query):
        if any(word in name.lower() for word in _SECRET_QUERY):
            add_secret(value)
    if parts.username is None and parts.password is None:
        return url, None
    user, password = unquote(parts.username or ""), unquote(parts.password or "")
    add_secret(password)
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    if parts.port:
        host = f"{host}:{parts.port}"
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    add_secret(token)
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


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


def _retry_after(response: Any) -> float | None:
    """Seconds to wait from ``retry-after-ms`` or ``Retry-After`` (seconds or an HTTP date)."""
    headers = getattr(response, "headers", None)
    if headers is None or not hasattr(headers, "get"):
        return None
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _raw_text(completion: Any) -> str:
    try:
        message = completion.choices[0].message
    except (AttributeError, IndexError, TypeError):
        return ""
    if getattr(message, "content", None):
        return str(message.content)
    calls = getattr(message, "tool_calls", None) or []
    return "".join(str(c.function.arguments) for c in calls)
