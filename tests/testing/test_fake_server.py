"""The loopback fake OpenAI server (``desic.testing.FakeOpenAIServer``) and the openai client."""

from __future__ import annotations

import concurrent.futures
import json
import math
import time
import urllib.error
import urllib.request
from typing import Any, Literal

import instructor
import openai
import pytest
from pydantic import BaseModel

from desic.testing import FakeOpenAIServer, Faults

USER: Any = [{"role": "user", "content": "x"}]


class Address(BaseModel):
    city: str
    zip_code: int


class Person(BaseModel):
    name: str
    kind: Literal["friend", "foe"]
    age: int
    tags: list[str]
    address: Address
    nickname: str | None = None


def _client(server: Any, **kw: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.url, api_key="test", **kw)


def _ask(client: openai.OpenAI, content: str = "x") -> Any:
    return client.chat.completions.create(
        model="m", messages=[{"role": "user", "content": content}]
    )


def _cos(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True))


def test_plain_chat_completion() -> None:
    with FakeOpenAIServer() as server:
        client = _client(server)
        resp = _ask(client, "hello there")
        assert resp.choices[0].message.content == "ok"
        assert resp.choices[0].finish_reason == "stop"
        assert resp.object == "chat.completion"
        assert resp.usage.prompt_tokens == len("hello there") // 4 + 1
        assert resp.usage.total_tokens == resp.usage.prompt_tokens + resp.usage.completion_tokens
        for _ in range(5):  # keep-alive: several calls over the same connection pool
            _ask(client)
        assert server.counts["requests"] == 6 and server.counts["ok"] == 6
        assert [m.id for m in client.models.list()] == ["fake-model"]


def test_requests_recorded() -> None:
    seen: list[dict[str, Any]] = []

    def handler(req: dict[str, Any]) -> str:
        seen.append(req)
        return "reply:" + str(req["messages"][-1]["content"])

    with FakeOpenAIServer(handler) as server:
        client = _client(server)
        out = [_ask(client, f"q{i}").choices[0].message.content for i in range(3)]
        assert out == ["reply:q0", "reply:q1", "reply:q2"]
        assert [r["messages"][0]["content"] for r in server.requests] == ["q0", "q1", "q2"]
        assert {r["_path"] for r in server.requests} == {"/v1/chat/completions"}
        assert all(r["model"] == "m" for r in server.requests)
        assert seen == server.requests


def test_instructor_json_schema_default_handler() -> None:
    with FakeOpenAIServer() as server:
        client = instructor.from_openai(_client(server), mode=instructor.Mode.JSON_SCHEMA)
        person = client.chat.completions.create(
            model="m", response_model=Person, messages=USER, max_retries=0
        )
        assert isinstance(person, Person)
        assert person.kind == "friend" and person.address == Address(city="", zip_code=0)
        assert server.requests[0]["response_format"]["type"] == "json_schema"


def test_instructor_tools_mode_custom_handler() -> None:
    def handler(req: dict[str, Any]) -> dict[str, Any]:
        assert req["tools"][0]["function"]["name"] == "Person"
        address = {"city": "London", "zip_code": 1}
        return {"name": "Ada", "kind": "foe", "age": 36, "tags": ["math"], "address": address}

    with FakeOpenAIServer(handler) as server:
        client = instructor.from_openai(_client(server), mode=instructor.Mode.TOOLS)
        person = client.chat.completions.create(
            model="m", response_model=Person, messages=USER, max_retries=0
        )
        assert person.name == "Ada" and person.kind == "foe" and person.address.city == "London"
        fn: Any = {"name": "Person", "parameters": Person.model_json_schema()}
        raw = _client(server).chat.completions.create(
            model="m", messages=USER, tools=[{"type": "function", "function": fn}]
        )
        choice = raw.choices[0]
        assert choice.finish_reason == "tool_calls" and choice.message.content is None
        call: Any = (choice.message.tool_calls or [])[0]
        assert call.id == "call_1" and call.function.name == "Person"
        assert json.loads(call.function.arguments)["name"] == "Ada"


def test_tools_mode_default_handler() -> None:
    with FakeOpenAIServer() as server:
        client = instructor.from_openai(_client(server), mode=instructor.Mode.TOOLS)
        person = client.chat.completions.create(
            model="m", response_model=Person, messages=USER, max_retries=0
        )
        assert person.kind == "friend" and person.tags == []


def test_embeddings_similarity() -> None:
    with FakeOpenAIServer() as server:
        client = _client(server)
        texts = ["the quick brown fox", "the quick brown foxes", "completely unrelated sentence"]
        resp = client.embeddings.create(model="e", input=texts)
        vecs = [d.embedding for d in resp.data]
        assert all(len(v) == 64 and math.isclose(_cos(v, v), 1.0, rel_tol=1e-4) for v in vecs)
        assert _cos(vecs[0], vecs[1]) > _cos(vecs[0], vecs[2]) + 0.2
        floats = client.embeddings.create(model="e", input=texts[0], encoding_format="float")
        assert [round(x, 4) for x in floats.data[0].embedding] == [round(x, 4) for x in vecs[0]]
        assert resp.usage.prompt_tokens > 0
        again = client.embeddings.create(model="e", input=texts)
        assert [d.embedding for d in again.data] == vecs


def test_rate_429_raises_with_retry_after() -> None:
    with FakeOpenAIServer(faults=Faults(rate_429=1.0, retry_after=0.25)) as server:
        with pytest.raises(openai.RateLimitError) as info:
            _ask(_client(server, max_retries=0))
        assert info.value.status_code == 429
        assert info.value.response.headers["Retry-After"] == "0.25"
        assert server.counts["429"] == 1 and server.counts["ok"] == 0


def test_rate_500() -> None:
    with FakeOpenAIServer(faults=Faults(rate_500=1.0)) as server:
        with pytest.raises(openai.InternalServerError):
            _ask(_client(server, max_retries=0))
        assert server.counts["500"] == 1


def test_max_rps_rejects() -> None:
    with FakeOpenAIServer(faults=Faults(max_rps=5)) as server:
        client = _client(server, max_retries=0)

        def call(_: int) -> bool:
            try:
                _ask(client)
                return True
            except openai.RateLimitError:
                return False

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            results = list(pool.map(call, range(20)))
        assert 1 <= results.count(True) == server.counts["ok"] <= 10
        assert server.counts["rejected_rate"] == results.count(False) >= 10
        assert server.counts["requests"] == 20


def test_malformed_json_errors_on_client() -> None:
    with FakeOpenAIServer(faults=Faults(rate_malformed=1.0)) as server:
        with pytest.raises(ValueError):  # json.JSONDecodeError raised by the client
            _ask(_client(server, max_retries=0))
        assert server.counts["malformed"] == 1


def test_fault_choice_is_reproducible() -> None:
    def run() -> list[bool]:
        with FakeOpenAIServer(faults=Faults(rate_500=0.5), seed=42) as server:
            client = _client(server, max_retries=0)
            out = []
            for _ in range(12):
                try:
                    _ask(client)
                    out.append(True)
                except openai.InternalServerError:
                    out.append(False)
            return out

    first = run()
    assert first == run() and True in first and False in first


def test_streaming_slow_and_handler_error() -> None:
    faults = Faults(rate_slow=1.0, slow_seconds=0.2)
    with FakeOpenAIServer(lambda req: "streamed", faults=faults) as server:
        t0 = time.monotonic()
        stream = _client(server).chat.completions.create(model="m", messages=USER, stream=True)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text == "streamed" and time.monotonic() - t0 >= 0.2
        assert server.counts["slow"] == 1 and server.counts["ok"] == 1

    def broken(req: dict[str, Any]) -> str:
        raise RuntimeError("boom")

    with FakeOpenAIServer(broken) as server:
        with pytest.raises(openai.InternalServerError, match="boom"):
            _ask(_client(server, max_retries=0))
        assert server.counts["handler_error"] == 1


def test_404_400_and_stop_idempotent() -> None:
    server = FakeOpenAIServer().start()
    base = server.url
    with pytest.raises(urllib.error.HTTPError) as e404:
        urllib.request.urlopen(base + "/nope")
    assert e404.value.code == 404 and "message" in json.loads(e404.value.read())["error"]
    bad = urllib.request.Request(base + "/chat/completions", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as e400:
        urllib.request.urlopen(bad)
    assert e400.value.code == 400
    assert json.loads(e400.value.read())["error"]["type"] == "invalid_request_error"
    server.stop()
    server.stop()
    with pytest.raises(OSError):
        urllib.request.urlopen(base + "/models", timeout=2)
