# mypy: disable-error-code="empty-body"
"""The ``openai`` provider through the real openai + instructor stack, against a loopback fake."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.testing import FakeOpenAIServer, Faults, allow_model_requests


class Address(BaseModel):
    city: str
    postcode: str


class Customer(BaseModel):
    kind: Literal["person", "company"]
    name: str
    address: Address
    tags: list[str]


@desic.signature
def parse_customer(text: str) -> Customer:
    """Extract the customer from the text."""


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


GOOD = {
    "kind": "company",
    "name": "Acme",
    "address": {"city": "Delft", "postcode": "2611"},
    "tags": ["b2b", "eu"],
}


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def make_lm(server: FakeOpenAIServer, **options: Any) -> Any:
    return desic.lm("openai:fake-model", base_url=server.url, api_key="test", **options)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- structured outputs -----------------------------------------------------------------------


def test_json_schema_mode_returns_the_nested_model() -> None:
    with FakeOpenAIServer(handler=lambda req: GOOD) as server:
        lm = make_lm(server, mode="json_schema")
        with desic.context(lm=lm):
            result = parse_customer(text="Acme BV, Delft 2611")
        (req,) = server.requests
    assert type(result) is Customer  # not instructor's subclass carrying the raw completion
    assert result == Customer.model_validate(GOOD)
    fmt = req["response_format"]
    assert fmt["type"] == "json_schema"
    schema = fmt["json_schema"]["schema"]
    assert schema["properties"]["kind"]["enum"] == ["person", "company"]
    assert "Address" in schema["$defs"]
    assert "tools" not in req
    assert req["model"] == "fake-model"
    assert req["temperature"] == 0.0
    assert req["max_tokens"] == 1024
    assert req["messages"][0]["role"] == "system"
    assert req["messages"][0]["content"].startswith("Extract the customer from the text.")
    assert req["messages"][-1] == {"role": "user", "content": "text: Acme BV, Delft 2611"}


def test_tools_mode_returns_the_nested_model() -> None:
    with FakeOpenAIServer(handler=lambda req: GOOD) as server:
        lm = make_lm(server, mode="tools")
        with desic.context(lm=lm):
            result = parse_customer(text="Acme")
        (req,) = server.requests
    assert type(result) is Customer
    assert result == Customer.model_validate(GOOD)
    (tool,) = req["tools"]
    params = tool["function"]["parameters"]
    assert params["properties"]["kind"]["enum"] == ["person", "company"]
    assert "Address" in json.dumps(params)
    assert req["tool_choice"]["function"]["name"] == tool["function"]["name"]
    assert "response_format" not in req


def test_auto_mode_picks_json_schema_for_compatible_servers() -> None:
    with FakeOpenAIServer(handler=lambda req: {"output": "tech"}) as server:
        lm = make_lm(server)
        assert lm.mode == "json_schema"
        with desic.context(lm=lm):
            assert team(ticket="crash") == "tech"
        assert server.requests[0]["response_format"]["type"] == "json_schema"


def test_chain_of_thought_through_the_real_stack() -> None:
    def answer(req: dict[str, Any]) -> dict[str, Any]:
        props = list(req["response_format"]["json_schema"]["schema"]["properties"])
        assert props[0] == "reasoning"
        return {"reasoning": "an invoice is mentioned", "output": "billing"}

    with FakeOpenAIServer(handler=answer) as server:
        with desic.context(lm=make_lm(server, mode="json_schema")):
            assert team.with_strategy("chain_of_thought")(ticket="invoice") == "billing"
        assert server.counts["handler_error"] == 0
        assert server.counts["ok"] == 1


def test_usage_tokens_are_recorded() -> None:
    def answer(req: dict[str, Any]) -> dict[str, str]:
        return {"output": "billing" if "money" in req["messages"][-1]["content"] else "tech"}

    devset = [
        {"ticket": "money lost", "output": "billing"},
        {"ticket": "crash", "output": "tech"},
        {"ticket": "screen", "output": "billing"},
    ]
    with FakeOpenAIServer(handler=answer) as server:
        lm = make_lm(server)
        report = desic.evaluate(team, devset, desic.metrics.exact_match, lm=lm)
        assert server.counts["ok"] == 3
    assert report.errors == 0, [r.error for r in report.results]
    assert report.score == pytest.approx(2 / 3)
    assert report.usage.calls == 3
    assert report.usage.prompt_tokens > 0
    assert report.usage.completion_tokens > 0
    assert all(r.usage.calls == 1 and r.usage.total_tokens > 0 for r in report.results)


# --- failures -------------------------------------------------------------------------------


def test_invalid_output_twice_is_an_output_validation_error_with_the_raw_completion() -> None:
    bad = '{"kind": "alien", "name": "Zork"}'
    with FakeOpenAIServer(handler=lambda req: bad) as server:
        lm = make_lm(server, mode="json_schema", validation_retries=1)
        with desic.context(lm=lm), pytest.raises(desic.OutputValidationError) as info:
            parse_customer(text="?")
        assert server.counts["ok"] == 2  # the first answer and one re-ask
    err = info.value
    assert isinstance(err, desic.LMError)
    assert err.raw == bad
    assert "kind" in str(err.errors)
    assert "after 2 attempts" in str(err)
    assert "ChatCompletion(" not in str(err)


def test_rate_limit_is_rate_limited_with_retry_after() -> None:
    with FakeOpenAIServer(faults=Faults(rate_429=1.0, retry_after=7)) as server:
        lm = make_lm(server, client_retries=0)
        with desic.context(lm=lm), pytest.raises(desic.RateLimited) as info:
            team(ticket="x")
        assert server.counts["429"] == 1
    assert info.value.retry_after == 7.0
    assert "429" in str(info.value)
    assert isinstance(info.value, desic.LMError)


def test_server_error_is_an_lm_error() -> None:
    with (
        FakeOpenAIServer(faults=Faults(rate_500=1.0)) as server,
        desic.context(lm=make_lm(server, client_retries=0)),
        pytest.raises(desic.LMError, match="HTTP 500"),
    ):
        team(ticket="x")


def test_slow_server_is_a_timeout() -> None:
    with FakeOpenAIServer(faults=Faults(rate_slow=1.0, slow_seconds=5)) as server:
        lm = make_lm(server, client_retries=0, timeout=0.3)
        with desic.context(lm=lm), pytest.raises(desic.Timeout, match="0.3s"):
            team(ticket="x")


def test_connection_refused_says_it_cannot_reach_the_server() -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    lm = desic.lm("openai:fake-model", base_url=url, api_key="test", client_retries=0)
    with desic.context(lm=lm), pytest.raises(desic.LMError) as info:
        team(ticket="x")
    msg = str(info.value)
    assert f"cannot reach {url}" in msg
    assert "is the server running?" in msg


class _TruncatingServer(FakeOpenAIServer):
    """Answers as if the model hit its token limit mid-JSON (finish_reason "length")."""

    def _chat(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        out = super()._chat(req)
        assert isinstance(out, dict)
        out["choices"][0]["finish_reason"] = "length"
        out["choices"][0]["message"]["content"] = '{"output": "bill'
        return out


def test_output_cut_off_by_max_tokens_is_an_output_validation_error() -> None:
    with _TruncatingServer() as server:
        lm = make_lm(server, mode="json_schema", max_tokens=5)
        with desic.context(lm=lm), pytest.raises(desic.OutputValidationError) as info:
            team(ticket="x")
    assert info.value.raw == '{"output": "bill'
    assert "max_tokens=5" in str(info.value)
