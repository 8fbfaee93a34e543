"""``cache``: the same question to the same model is answered once.

Keys are content addresses: a SHA-256 over everything that changes the answer, namely
the LM's ``describe()`` (provider, model, default sampling parameters; secret-free by
contract, so no key or credential enters a key), the messages, the request's parameters,
the response model's JSON schema (which also tells a chain-of-thought node, with its
reasoning field, from a plain one) and the ``sample`` number. Values are the validated
output as JSON, the raw completion and the usage of the original call; nothing of the
LM's configuration is stored.

A hit comes back with ``meta["cached"] = True`` and zero usage (no call was made; the
original usage is in ``meta["cached_usage"]``). ``LMRequest(cache=False)`` bypasses the
cache both ways. Failed calls are never cached. Embeddings are cached per text.

A stream (``stream``) shares the entries of ``request``: a hit comes back as one item, the
final response; a miss streams from the wrapped LM and stores its final response.
"""

from __future__ import annotations

import array
import hashlib
import json
import time
import weakref
from collections.abc import AsyncIterator
from typing import Any

from pydantic import BaseModel, ValidationError

from .._redact import get_logger
from . import LM, LMRequest, LMResponse, Usage, stream_of
from ._wrapper import WrapperLM, stepped, unwrap
from .stores import CacheStore, open_store

log = get_logger("desic.lm")

KEY_VERSION = 1

_schemas: weakref.WeakKeyDictionary[type[BaseModel], Any] = weakref.WeakKeyDictionary()


def _schema(model: type[BaseModel]) -> Any:
    schema = _schemas.get(model)
    if schema is None:
        schema = _schemas[model] = model.model_json_schema()
    return schema


def _digest(payload: Any) -> str:
    text = json.dumps(payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def request_key(description: dict[str, Any], request: LMRequest) -> str:
    """The content address of ``request`` sent to the LM described by ``description``."""
    p = request.params
    payload = {
        "v": KEY_VERSION,
        "op": "request",
        "lm": description,
        "messages": [dict(m) for m in request.messages],
        "params": [p.model, p.temperature, p.max_tokens, p.seed],
        "schema": _schema(request.response_model),
        "sample": request.sample,
    }
    if request.tools:  # an agent's step (the key of every other request is unchanged)
        payload["tools"] = list(request.tools)
    return _digest(payload)


def embedding_key(description: dict[str, Any], model: str | None, text: str) -> str:
    """The content address of ``text`` embedded by ``model`` of the described LM."""
    return _digest({"v": KEY_VERSION, "op": "embed", "lm": description, "model": model, "text": text})


class CacheLM(WrapperLM):
    """Answers repeated requests from ``store``.

    ``store``: ``True``/``"disk"`` (``lm.sqlite3`` under DESIC_CACHE_DIR, else
    ~/.cache/desic), ``"memory"``, a path (a directory, or a file with a suffix), a ``postgresql://`` URL, or any
    object with ``get(key) -> bytes | None`` and ``put(key, bytes)``.
    """

    def __init__(self, inner: LM, store: Any = True):
        super().__init__(inner)
        self.store: CacheStore = open_store(store)
        # how to open the same store in another process (desic.lm.portable); None for an object
        self.store_spec: Any = store if isinstance(store, (bool, str)) else None
        self.hits = 0
        self.misses = 0

    def _lookup(self, request: LMRequest) -> tuple[str, LMResponse | None]:
        """The request's cache key and its stored answer (counted as a hit or a miss)."""
        started = time.perf_counter()
        key = request_key(self.inner.describe(), request)
        data = self.store.get(key)
        if data is not None:
            hit = self._decode(data, request, started)
            if hit is not None:
                self.hits += 1
                return key, hit
        self.misses += 1
        return key, None

    async def request(self, request: LMRequest) -> LMResponse:
        if not request.cache:
            return await self.inner.request(request)
        key, hit = self._lookup(request)
        if hit is not None:
            return hit
        response = await self.inner.request(request)
        self.store.put(key, self._encode(response))
        return response

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        if not request.cache:
            async for item in stepped(stream_of(self.inner, request)):
                yield item
            return
        key, hit = self._lookup(request)
        if hit is not None:
            yield hit
            return
        async for item in stepped(stream_of(self.inner, request)):
            if isinstance(item, LMResponse):
                self.store.put(key, self._encode(item))
            yield item

    async def embed(self, texts: list[str]) -> list[list[float]]:
        description = self.inner.describe()
        model = getattr(unwrap(self.inner), "embedding_model", None)
        keys = [embedding_key(description, model, t) for t in texts]
        out: list[list[float] | None] = []
        for key in keys:
            data = self.store.get(key)
            out.append(array.array("d", data).tolist() if data is not None else None)
        missing = [i for i, v in enumerate(out) if v is None]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if missing:
            fresh = await super().embed([texts[i] for i in missing])
            for i, vector in zip(missing, fresh, strict=True):
                out[i] = vector
                self.store.put(keys[i], array.array("d", vector).tobytes())
        return [v for v in out if v is not None]

    @staticmethod
    def _encode(response: LMResponse) -> bytes:
        u = response.usage
        record = {
            "value": response.value.model_dump(mode="json"),
            "raw": response.raw,
            "model": response.model,
            "latency": response.latency,
            "usage": [u.calls, u.prompt_tokens, u.completion_tokens, u.cost],
        }
        return json.dumps(record, ensure_ascii=False).encode("utf-8")

    def _decode(self, data: bytes, request: LMRequest, started: float) -> LMResponse | None:
        try:
            record = json.loads(data)
            value = request.response_model.model_validate(record["value"])
            calls, prompt, completion, cost = record["usage"]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            log.warning("%s: ignoring an unreadable cache entry (%s)", self.name, exc)
            return None
        return LMResponse(
            value=value,
            raw=str(record.get("raw", "")),
            usage=Usage(),
            latency=time.perf_counter() - started,
            model=str(record.get("model", "")),
            meta={
                "cached": True,
                "cached_usage": Usage(int(calls), int(prompt), int(completion), float(cost)),
            },
        )
