"""Loopback fake OpenAI-compatible HTTP server for tests (standard library only).

``FakeOpenAIServer`` serves ``POST /v1/chat/completions``, ``POST /v1/embeddings`` and
``GET /v1/models`` on 127.0.0.1 (random port) from a daemon thread.  Replies are built by a
user ``handler`` (or a default one that satisfies JSON schemas / tool schemas), and
reproducible faults (429, 500, slow, malformed, rate limiting) can be injected via ``Faults``.
A handler may also raise ``HTTPFault(status, message)`` to answer with any HTTP error
(400, 401, 503 with a Retry-After, ...).

A request with ``"stream": true`` is answered as OpenAI does: server-sent events in a
chunked HTTP response, each event written and flushed on its own, the answer split into
deltas of ``stream_chunk_chars`` characters, then the finish chunk and, when
``stream_options.include_usage`` asks for it, a usage chunk.

    with FakeOpenAIServer(faults=Faults(rate_429=0.2), seed=1) as srv:
        client = openai.OpenAI(base_url=srv.url, api_key="test")
"""

from __future__ import annotations

import base64
import collections
import contextlib
import hashlib
import json
import math
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self

__all__ = [
    "FakeOpenAIServer",
    "Faults",
    "HTTPFault",
    "ToolCall",
    "default_handler",
    "fake_embedding",
    "minimal_instance",
]

@dataclass
class ToolCall:
    """A handler's answer as a native tool call: the model calls ``name`` with ``arguments``
    (``content`` is the text beside the call, e.g. an agent's thought)."""

    name: str
    arguments: dict[str, Any]
    content: str | None = None


HandlerResult = str | dict[str, Any] | list[float] | ToolCall
Handler = Callable[[dict[str, Any]], HandlerResult]
EMBED_DIM = 64
_STRING_FORMATS = {"date-time": "1970-01-01T00:00:00Z", "date": "1970-01-01", "time": "00:00:00",
                   "uuid": "00000000-0000-0000-0000-000000000000", "email": "user@example.com",
                   "uri": "http://example.com", "duration": "PT0S"}


@dataclass
class Faults:
    """Fault injection settings; fractions are of requests to known endpoints.

    ``max_rps`` rejects a request (429) when ``max_rps`` requests were already accepted
    within the last second, less ``rps_slack`` seconds. The slack absorbs arrival jitter
    (event-loop wake-ups, the HTTP stack, server threads; all in one process, under one
    GIL, on a busy test machine), which any real limiter tolerates too: with none, a client
    pacing itself at exactly ``max_rps`` is rejected whenever one request is a few
    milliseconds later than the one ``max_rps`` requests after it. Bursts above the rate
    are rejected all the same. Such a rejection's Retry-After says truly when the window
    frees a slot; ``retry_after`` is the one sent with the random ``rate_429`` faults.
    """

    rate_429: float = 0.0
    retry_after: float = 0.05
    rate_500: float = 0.0
    rate_slow: float = 0.0
    slow_seconds: float = 2.0
    rate_malformed: float = 0.0
    max_rps: float | None = None
    rps_slack: float = 0.1
    latency: float = 0.0


class HTTPFault(Exception):
    """Raised by a handler to answer with an HTTP error, e.g. ``HTTPFault(401, "bad key")``."""

    def __init__(self, status: int, message: str = "fault (fake)", *,
                 headers: dict[str, str] | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = dict(headers or {})
        self.code = code


def minimal_instance(
    schema: dict[str, Any], root: dict[str, Any] | None = None, _depth: int = 0
) -> Any:
    """Build a small value valid for a (pydantic-style) JSON schema; ``$ref`` resolves in root."""
    root = schema if root is None else root
    if _depth > 40 or not isinstance(schema, dict):
        return None

    def nxt(sub: Any) -> Any:
        return minimal_instance(sub, root, _depth + 1)

    if "$ref" in schema:
        target: Any = root
        for part in str(schema["$ref"]).lstrip("#").strip("/").split("/"):
            target = target.get(part, {}) if part and isinstance(target, dict) else target
        return nxt(target)
    if "const" in schema:
        return schema["const"]
    if schema.get("enum"):
        return schema["enum"][0]
    for key in ("anyOf", "oneOf"):
        if schema.get(key):  # first option; null when nested deep (recursive models)
            deep = _depth > 8 and {"type": "null"} in schema[key]
            return None if deep else nxt(schema[key][0])
    if schema.get("allOf"):
        parts = [nxt(s) for s in schema["allOf"]]
        if all(isinstance(p, dict) for p in parts):
            return {k: v for p in parts for k, v in p.items()}
        return parts[0]
    typ = schema.get("type")
    if isinstance(typ, list):
        typ = next((t for t in typ if t != "null"), "null")
    if typ is None:
        typ = "object" if "properties" in schema else "array" if "items" in schema else None
    if typ == "object":
        return {k: nxt(v) for k, v in schema.get("properties", {}).items()}
    if typ == "array":
        out = [nxt(s) for s in schema.get("prefixItems", [])]
        while len(out) < int(schema.get("minItems", 0)):
            out.append(nxt(schema.get("items", {})))
        return out
    if typ == "string":
        return _STRING_FORMATS.get(schema.get("format", ""), "x" * int(schema.get("minLength", 0)))
    if typ in ("integer", "number"):
        val: float = 0
        if "minimum" in schema or "exclusiveMinimum" in schema:
            val = schema["minimum"] if "minimum" in schema else schema["exclusiveMinimum"] + 1
        elif "maximum" in schema or "exclusiveMaximum" in schema:
            high = schema["maximum"] if "maximum" in schema else schema["exclusiveMaximum"] - 1
            val = min(0, high)
        return math.ceil(val) if typ == "integer" else val
    if typ == "boolean":
        return False
    return None


def fake_embedding(text: str, dim: int = EMBED_DIM) -> list[float]:
    """Deterministic unit vector from hashed character trigrams (similar text -> similar vector)."""
    vec = [0.0] * dim
    padded = f"  {text.lower()} "
    for i in range(len(padded) - 2):
        h = int.from_bytes(hashlib.md5(padded[i:i + 3].encode()).digest()[:8], "little")
        vec[h % dim] += 1.0 if (h >> 32) & 1 else -1.0
    norm = math.sqrt(sum(v * v for v in vec))
    return [v / norm for v in vec] if norm else [1.0] + [0.0] * (dim - 1)


def _tokens(text: str) -> int:
    return len(text) // 4 + 1


def _text_of(content: Any) -> str:
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def _tool_choice(req: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    tools = [t.get("function", {}) for t in req.get("tools") or [] if isinstance(t, dict)]
    choice = req.get("tool_choice")
    wanted = choice.get("function", {}).get("name") if isinstance(choice, dict) else None
    fn = next((t for t in tools if t.get("name") == wanted), tools[0] if tools else {})
    return str(wanted or fn.get("name", "tool")), fn.get("parameters") or {}


def default_handler(req: dict[str, Any]) -> HandlerResult:
    """Minimal valid JSON for json_schema/tools requests, ``"{}"`` for json_object, else "ok"."""
    fmt = req.get("response_format") or {}
    if req.get("tools"):
        return json.dumps(minimal_instance(_tool_choice(req)[1]))
    if fmt.get("type") == "json_schema":
        return json.dumps(minimal_instance((fmt.get("json_schema") or {}).get("schema") or {}))
    return "{}" if fmt.get("type") == "json_object" else "ok"


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    fake: FakeOpenAIServer

    def handle_error(self, request: Any, client_address: Any) -> None:  # quiet
        pass


class _RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # avoid 40ms Nagle/delayed-ACK stalls on keep-alive
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        self.server.fake._track(self.connection, add=True)

    def finish(self) -> None:
        self.server.fake._track(self.connection, add=False)
        super().finish()

    def do_GET(self) -> None:
        self.server.fake._dispatch(self, "GET")

    def do_POST(self) -> None:
        self.server.fake._dispatch(self, "POST")

    def send_events(self, events: list[bytes]) -> None:
        """200 with ``events`` as a chunked ``text/event-stream``, one chunk each, flushed."""
        try:
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Transfer-Encoding", "chunked")
            self.send_header("Cache-Control", "no-cache")
            self.end_headers()
            for event in events:
                self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                self.wfile.flush()
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    def send(self, status: int, body: bytes, ctype: str = "application/json",
             headers: dict[str, str] | None = None) -> None:
        try:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True


def _error(message: str, typ: str, code: str | None) -> bytes:
    err = {"message": message, "type": typ, "param": None, "code": code}
    return json.dumps({"error": err}).encode()


class FakeOpenAIServer:
    """Fake OpenAI-compatible server on 127.0.0.1; use as a context manager or start()/stop()."""

    def __init__(self, handler: Handler | None = None, *, faults: Faults | None = None,
                 seed: int = 0, model: str = "fake-model", stream_chunk_chars: int = 8) -> None:
        self.handler: Handler = handler or default_handler
        self.faults = faults or Faults()
        self.model = model
        self.stream_chunk_chars = max(1, stream_chunk_chars)
        self.requests: list[dict[str, Any]] = []
        # the headers of every request (to any path), in arrival order, names in lower case
        self.headers: list[dict[str, str]] = []
        self.counts: dict[str, int] = dict.fromkeys(
            ("requests", "ok", "429", "500", "slow", "malformed", "rejected_rate", "handler_error"),
            0)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._window: collections.deque[float] = collections.deque()
        self._conns: set[socket.socket] = set()
        self._stopping = threading.Event()
        self._httpd: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._routes: dict[tuple[str, str], Callable[[dict[str, Any]], dict[str, Any] | bytes]] = {
            ("POST", "/chat/completions"): self._chat, ("POST", "/embeddings"): self._embeddings,
            ("GET", "/models"): self._models}

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("FakeOpenAIServer is not started")
        return f"http://127.0.0.1:{self._httpd.server_address[1]}/v1"

    def start(self) -> Self:
        if self._httpd is None:
            self._stopping.clear()
            self._httpd = _HTTPServer(("127.0.0.1", 0), _RequestHandler)
            self._httpd.fake = self
            self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05},
                name="FakeOpenAIServer", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            httpd, self._httpd = self._httpd, None
        if httpd is None:
            return
        self._stopping.set()  # wakes requests sleeping in slow/latency faults
        httpd.shutdown()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:  # drop idle keep-alive connections
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- internals -----------------------------------------------------------------------------
    def _track(self, conn: socket.socket, add: bool) -> None:
        with self._lock:
            (self._conns.add if add else self._conns.discard)(conn)

    def _count(self, key: str) -> None:
        with self._lock:
            self.counts[key] = self.counts.get(key, 0) + 1

    def _draw_fault(self) -> tuple[str | None, float]:
        """The fault for this request (None: answer), and the Retry-After of a 429."""
        f = self.faults
        with self._lock:
            r = self._rng.random()
            now = time.monotonic()
            span = 1.0 - f.rps_slack
            while self._window and now - self._window[0] >= span:
                self._window.popleft()
            if f.max_rps is not None and len(self._window) >= f.max_rps:
                return "rejected_rate", max(0.001, self._window[0] + span - now)
            self._window.append(now)
        acc = 0.0
        for name, rate in (("429", f.rate_429), ("500", f.rate_500), ("slow", f.rate_slow),
                           ("malformed", f.rate_malformed)):
            acc += rate
            if r < acc:
                return name, f.retry_after
        return None, f.retry_after

    def _dispatch(self, h: _RequestHandler, method: str) -> None:
        self._count("requests")
        with self._lock:
            self.headers.append({k.lower(): v for k, v in h.headers.items()})
        path = h.path.split("?", 1)[0].rstrip("/")
        route = self._routes.get((method, path.removeprefix("/v1")))
        length = int(h.headers.get("Content-Length") or 0)
        raw = h.rfile.read(length) if length > 0 else b""
        if route is None:
            msg = f"Unknown endpoint {method} {h.path}"
            return h.send(404, _error(msg, "invalid_request_error", "not_found"))
        body: dict[str, Any] = {}
        if method == "POST":
            try:
                body = json.loads(raw)
                if not isinstance(body, dict):
                    raise TypeError("body must be a JSON object")
            except (ValueError, TypeError) as exc:
                msg = f"Invalid JSON body: {exc}"
                return h.send(400, _error(msg, "invalid_request_error", "invalid_json"))
            body["_path"] = h.path
            with self._lock:
                self.requests.append(body)
        fault, retry_after = self._draw_fault()
        if self.faults.latency > 0:
            self._stopping.wait(self.faults.latency)
        if fault is not None:
            self._count(fault)
        if fault in ("429", "rejected_rate"):
            ra = retry_after
            headers = {"Retry-After": f"{ra:g}", "retry-after-ms": str(max(1, round(ra * 1000)))}
            err = _error("Rate limit exceeded (fake)", "requests", "rate_limit_exceeded")
            return h.send(429, err, headers=headers)
        if fault == "500":
            return h.send(500, _error("Internal server error (fake)", "server_error", None))
        if fault == "malformed":
            return h.send(200, b'{"id": "broken", "choices": [{"message": {"content": ')
        if fault == "slow":
            self._stopping.wait(self.faults.slow_seconds)
        try:
            result = route(body)
        except HTTPFault as raised:  # counted as "http_<status>"
            self._count(f"http_{raised.status}")
            typ = "invalid_request_error" if raised.status < 500 else "server_error"
            err = _error(raised.message, typ, raised.code)
            return h.send(raised.status, err, headers=raised.headers)
        except Exception as exc:  # noqa: BLE001  (a failing user handler becomes a 500)
            self._count("handler_error")
            return h.send(500, _error(f"handler failed: {exc!r}", "server_error", "handler_error"))
        self._count("ok")
        if isinstance(result, bytes):  # server-sent events: one HTTP chunk each
            h.send_events([event + b"\n\n" for event in result.split(b"\n\n") if event])
        else:
            h.send(200, json.dumps(result).encode())

    def _chat(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        result = self.handler(req)
        call = result if isinstance(result, ToolCall) else None
        if call is not None:
            result = call.arguments
        content = result if isinstance(result, str) else json.dumps(result)
        with self._lock:
            self._seq += 1
            cid = f"chatcmpl-fake-{self._seq}"
        message: dict[str, Any] = {"role": "assistant", "content": content}
        finish = "stop"
        if req.get("tools"):
            fn = {"name": call.name if call is not None else _tool_choice(req)[0], "arguments": content}
            calls = [{"id": "call_1", "type": "function", "function": fn}]
            text = call.content if call is not None else None
            message = {"role": "assistant", "content": text, "tool_calls": calls}
            finish = "tool_calls"
        messages = [m for m in req.get("messages") or [] if isinstance(m, dict)]
        prompt = _tokens("".join(_text_of(m.get("content")) for m in messages))
        usage = {"prompt_tokens": prompt, "completion_tokens": _tokens(content),
                 "total_tokens": prompt + _tokens(content)}
        base = {"id": cid, "created": int(time.time()), "model": req.get("model") or self.model}
        if not req.get("stream"):
            choice = {"index": 0, "message": message, "finish_reason": finish, "logprobs": None}
            return {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
        # streaming: the role, the answer in deltas of stream_chunk_chars, the finish chunk
        n = self.stream_chunk_chars
        pieces = [content[i:i + n] for i in range(0, len(content), n)] or [""]
        deltas: list[dict[str, Any]] = [{"role": "assistant", "content": ""}]
        if req.get("tools"):
            call = message["tool_calls"][0]
            deltas = [{"role": "assistant", "content": None, "tool_calls": [
                {"index": 0, "id": call["id"], "type": "function",
                 "function": {"name": call["function"]["name"], "arguments": ""}}]}]
            deltas += [{"tool_calls": [{"index": 0, "function": {"arguments": p}}]} for p in pieces]
        else:
            deltas += [{"content": p} for p in pieces]
        chunks: list[dict[str, Any]] = [{"index": 0, "delta": d, "finish_reason": None} for d in deltas]
        chunks.append({"index": 0, "delta": {}, "finish_reason": finish})
        events = [{**base, "object": "chat.completion.chunk", "choices": [c]} for c in chunks]
        if (req.get("stream_options") or {}).get("include_usage"):
            events.append({**base, "object": "chat.completion.chunk", "choices": [],
                           "usage": usage})
        return ("".join(f"data: {json.dumps(e)}\n\n" for e in events) + "data: [DONE]\n\n").encode()

    def _embeddings(self, req: dict[str, Any]) -> dict[str, Any]:
        raw = req.get("input", "")
        single = isinstance(raw, str) or (isinstance(raw, list) and raw and isinstance(raw[0], int))
        items = [raw] if single else raw
        texts = [x if isinstance(x, str) else " ".join(map(str, x)) for x in items]
        data = []
        for i, text in enumerate(texts):
            vec: Any = fake_embedding(text)
            if req.get("encoding_format") == "base64":
                vec = base64.b64encode(struct.pack(f"<{len(vec)}f", *vec)).decode()
            data.append({"object": "embedding", "index": i, "embedding": vec})
        tokens = sum(_tokens(t) for t in texts)
        return {"object": "list", "data": data, "model": req.get("model") or self.model,
                "usage": {"prompt_tokens": tokens, "total_tokens": tokens}}

    def _models(self, _req: dict[str, Any]) -> dict[str, Any]:
        model = {"id": self.model, "object": "model", "created": 0, "owned_by": "desic"}
        return {"object": "list", "data": [model]}
