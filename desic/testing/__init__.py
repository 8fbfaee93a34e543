"""Fakes for tests, yours and ours: no network, no model, deterministic answers.

- ``FakeLM``: scripted answers, in sequence or by input text;
- ``FunctionLM``: a function (sync or async) from ``LMRequest`` to answer;
- ``FakeOpenAIServer``: a loopback OpenAI-compatible HTTP server (with fault injection,
  ``Faults``; a handler may raise ``HTTPFault`` for any status, or fall back on
  ``default_handler``, the server's own valid answer) to test through the real
  openai + instructor stack;
- ``allow_model_requests()``: let a real provider run inside a test.

The fakes embed text too (``await lm.embed(texts)``): deterministic unit vectors from
hashed character trigrams, so similar texts get similar vectors (``fake_embedding``).
They cost nothing.

The fakes stream too (``lm.stream(request)``, what ``sig.stream`` uses): the answer's JSON
arrives ``chunk_chars`` characters at a time, each new prefix parsed into a partial
output, then the final response. ``vision=False`` makes a fake a text-only model.

An answer may be the output model itself, a dict of its fields, a JSON string, or, for a
signature with a bare return type, the bare value (``"billing"``).

>>> lm = FakeLM(["billing", {"team": "shipping"}])
>>> with desic.context(lm=lm):
...     route(ticket="charged twice").team
'billing'
"""

from __future__ import annotations

import inspect
import json
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from pydantic_core import from_json

from ..errors import ConfigError, OutputValidationError
from ..lm import BaseLM, LMRequest, LMResponse, Usage, charge_embedding, message_text
from ..lm.guard import allow_model_requests

if TYPE_CHECKING:
    from ._server import (
        FakeOpenAIServer,
        Faults,
        HTTPFault,
        ToolCall,
        default_handler,
        fake_embedding,
    )

_SERVER_NAMES = ("FakeOpenAIServer", "Faults", "HTTPFault", "ToolCall", "default_handler", "fake_embedding")


def __getattr__(name: str) -> Any:
    # The HTTP server (http.server, socketserver) loads only when a test asks for it.
    if name in _SERVER_NAMES:
        from . import _server

        return getattr(_server, name)
    raise AttributeError(f"module 'desic.testing' has no attribute {name!r}")


__all__ = [
    "FakeLM",
    "FakeOpenAIServer",
    "Faults",
    "FunctionLM",
    "HTTPFault",
    "ToolCall",
    "act",
    "allow_model_requests",
    "coerce_answer",
    "default_handler",
    "fake_embedding",
    "finish",
    "last_input",
    "partial_output",
]


def act(tool: str, thought: str = "", /, **args: Any) -> dict[str, Any]:
    """A scripted agent step calling ``tool`` with ``args``: ``FakeLM([act("search", query="ferry"),
    finish(answer="25 minutes")])`` plays a two-step trajectory."""
    return {"thought": thought, "action": {"tool": tool, "args": args}}


def finish(thought: str = "", /, **output: Any) -> dict[str, Any]:
    """A scripted agent step finishing with the signature's ``output`` fields (for a bare
    return type, its one field is ``output``: ``finish(output="billing")``)."""
    return act("finish", thought, **output)


def coerce_answer(answer: Any, model: type[BaseModel]) -> BaseModel:
    """Turn a scripted answer into an instance of ``model`` (the LM's response model)."""
    fields = model.model_fields
    try:
        if isinstance(answer, model):
            return answer
        if isinstance(answer, BaseModel):
            return model.model_validate(_with_reasoning(answer.model_dump(), fields))
        if isinstance(answer, str) and answer.lstrip().startswith("{"):
            try:
                data = json.loads(answer)
            except json.JSONDecodeError:
                data = None
            if isinstance(data, dict):
                return model.model_validate(_with_reasoning(data, fields))
        if isinstance(answer, Mapping) and set(answer) & set(fields):
            return model.model_validate(_with_reasoning(dict(answer), fields))
        value_fields = [f for f in fields if f != "reasoning"]
        if len(value_fields) == 1:
            return model.model_validate(_with_reasoning({value_fields[0]: answer}, fields))
    except ValidationError as exc:
        raise OutputValidationError(
            f"fake answer {answer!r:.80} does not fit {model.__name__}: {exc.errors()[0]['msg']}",
            raw=json.dumps(answer, default=str),
            errors=exc.errors(),
        ) from exc
    raise OutputValidationError(
        f"fake answer {answer!r:.80} does not fit {model.__name__} (fields {list(fields)})",
        raw=str(answer),
    )


def _with_reasoning(data: dict[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
    if "reasoning" in fields and "reasoning" not in data:
        return {"reasoning": "", **data}
    return data


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4)


def partial_output(model: type[BaseModel], text: str) -> BaseModel | None:
    """What a prefix of an answer's JSON says so far, as an unvalidated ``model`` (fields
    not yet begun are None; a string being written holds its text so far)."""
    try:
        data = from_json(text, allow_partial="trailing-strings")
    except ValueError:
        return None
    if not isinstance(data, dict):
        return None
    return model.model_construct(**{name: data.get(name) for name in model.model_fields})


class _RecordingLM(BaseLM):
    def __init__(self, name: str, latency: float, chunk_chars: int = 8, vision: bool = True):
        if chunk_chars < 1:
            raise ConfigError(f"chunk_chars={chunk_chars!r}: a streamed chunk holds 1 character or more")
        self.name = name
        self.latency = latency
        self.chunk_chars = chunk_chars
        self.vision = vision
        self.calls: list[LMRequest] = []
        self.embed_calls: list[list[str]] = []
        self._lock = threading.Lock()

    async def stream(self, request: LMRequest) -> AsyncIterator[BaseModel | LMResponse]:
        """The answer's JSON ``chunk_chars`` characters at a time, then the response."""
        response = await self.request(request)
        raw, seen = response.raw, None
        for end in range(self.chunk_chars, len(raw), self.chunk_chars):
            partial = partial_output(request.response_model, raw[:end])
            if partial is not None and partial != seen:
                seen = partial
                yield partial
        yield response

    def _respond(self, request: LMRequest, answer: Any, started: float) -> LMResponse:
        value = coerce_answer(answer, request.response_model)
        raw = value.model_dump_json()
        prompt = sum(_estimate_tokens(message_text(m.get("content"))) for m in request.messages)
        return LMResponse(
            value=value,
            raw=raw,
            usage=Usage(calls=1, prompt_tokens=prompt, completion_tokens=_estimate_tokens(raw)),
            latency=time.perf_counter() - started,
            model=self.name,
        )

    async def _wait(self) -> None:
        if self.latency > 0:
            import asyncio

            await asyncio.sleep(self.latency)

    async def embed(self, texts: list[str]) -> list[list[float]]:
        """Deterministic hashed-trigram unit vectors (``fake_embedding``); no model needed."""
        from ._server import fake_embedding

        with self._lock:
            self.embed_calls.append(list(texts))
        await self._wait()
        if texts:
            charge_embedding(Usage(calls=1, prompt_tokens=sum(_estimate_tokens(t) for t in texts)))
        return [fake_embedding(t) for t in texts]

    def describe(self) -> dict[str, Any]:
        return {"provider": "fake", "model": self.name}


class FakeLM(_RecordingLM):
    """Scripted answers.

    ``FakeLM([a1, a2, ...])`` answers in sequence (``cycle=True`` repeats the list);
    ``FakeLM({"substring": answer, ...}, default=...)`` answers the first entry whose key
    occurs in the last user message. ``latency`` (seconds) simulates a slow model.
    ``calls`` records every request.
    """

    def __init__(
        self,
        answers: Iterable[Any] | Mapping[str, Any] = (),
        *,
        default: Any = None,
        cycle: bool = False,
        latency: float = 0.0,
        name: str = "fake",
        chunk_chars: int = 8,
        vision: bool = True,
    ):
        super().__init__(name, latency, chunk_chars, vision)
        self.by_input: dict[str, Any] | None = dict(answers) if isinstance(answers, Mapping) else None
        self.sequence: list[Any] = [] if isinstance(answers, Mapping) else list(answers)
        self.default = default
        self.cycle = cycle
        self._next = 0

    def _pick(self, request: LMRequest) -> Any:
        if self.by_input is not None:
            last = last_input(request)
            for key, answer in self.by_input.items():
                if key in last:
                    return answer
            if self.default is not None:
                return self.default
            raise ConfigError(f"FakeLM has no answer for input {last!r:.120}; add a key or default=")
        with self._lock:
            if self._next < len(self.sequence):
                answer = self.sequence[self._next]
            elif self.cycle and self.sequence:
                answer = self.sequence[self._next % len(self.sequence)]
            elif self.default is not None:
                answer = self.default
            else:
                raise ConfigError(
                    f"FakeLM ran out of answers after {len(self.sequence)} calls; "
                    "give more, cycle=True or default="
                )
            self._next += 1
        return answer

    async def request(self, request: LMRequest) -> LMResponse:
        started = time.perf_counter()
        with self._lock:
            self.calls.append(request)
        await self._wait()
        return self._respond(request, self._pick(request), started)

    def to_config(self) -> dict[str, Any]:
        """This fake as plain data (``desic.lm.portable``): a Ray worker builds its own copy.
        Answers by input behave the same everywhere; answers in sequence are counted by
        each copy on its own."""
        from .._json import to_jsonable

        answers = self.by_input if self.by_input is not None else self.sequence
        return {
            "answers": to_jsonable(answers), "by_input": self.by_input is not None, "default": to_jsonable(self.default),
            "cycle": self.cycle, "latency": self.latency, "name": self.name,
        }

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> FakeLM:
        answers = data["answers"]
        return cls(
            dict(answers) if data.get("by_input") else list(answers), default=data.get("default"),
            cycle=bool(data.get("cycle")), latency=float(data.get("latency") or 0.0), name=str(data.get("name") or "fake"),
        )


class FunctionLM(_RecordingLM):
    """Answers computed by ``fn(request)`` (sync or async); see ``coerce_answer``."""

    def __init__(
        self,
        fn: Callable[[LMRequest], Any],
        *,
        latency: float = 0.0,
        name: str = "function",
        chunk_chars: int = 8,
        vision: bool = True,
    ):
        super().__init__(name, latency, chunk_chars, vision)
        self.fn = fn

    async def request(self, request: LMRequest) -> LMResponse:
        started = time.perf_counter()
        with self._lock:
            self.calls.append(request)
        await self._wait()
        answer = self.fn(request)
        if inspect.isawaitable(answer):
            answer = await answer
        return self._respond(request, answer, started)

    def to_config(self) -> dict[str, Any]:
        """This fake as plain data: its function travels by import path (``module:name``)."""
        fn = self.fn
        ref = f"{getattr(fn, '__module__', '')}:{getattr(fn, '__qualname__', '')}"
        if "<" in ref or ref.startswith((":", "__main__:")):
            raise ConfigError(
                f"FunctionLM's function {ref!r} cannot be imported by name on another process; "
                "define it at the top level of an importable module"
            )
        return {"fn": ref, "latency": self.latency, "name": self.name}

    @classmethod
    def from_config(cls, data: dict[str, Any]) -> FunctionLM:
        import importlib

        module, _, qualname = str(data["fn"]).partition(":")
        fn: Any = importlib.import_module(module)
        for part in qualname.split("."):
            fn = getattr(fn, part)
        return cls(fn, latency=float(data.get("latency") or 0.0), name=str(data.get("name") or "function"))


def last_input(request: LMRequest) -> str:
    """The text of the last user message of a request (handy inside ``FunctionLM`` functions)."""
    return next((message_text(m["content"]) for m in reversed(request.messages) if m["role"] == "user"), "")
