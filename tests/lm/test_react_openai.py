"""An agent through the real openai + instructor stack against the loopback server: native
``tool_calls`` (mode ``tools``) and JSON-schema constrained actions (any other server)."""

from __future__ import annotations

import json
from typing import Any

import pytest

import desic
from desic.testing import FakeOpenAIServer, ToolCall, allow_model_requests
from tests.support.agents import PLANS, ask


@pytest.fixture(autouse=True)
def _loopback_only() -> Any:
    with allow_model_requests():  # the loopback server only: no network
        yield


def _plan(req: dict[str, Any]) -> list[dict[str, Any]]:
    messages = req["messages"]
    at = max(i for i, m in enumerate(messages) if m["role"] == "user" and m["content"].startswith("question:"))
    question = messages[at]["content"].lower()
    plan = next(p for key, p in PLANS.items() if key in question)
    return [plan[min((len(messages) - at - 1) // 2, len(plan) - 1)]]


def native(req: dict[str, Any]) -> Any:
    (step,) = _plan(req)
    return ToolCall(step["action"]["tool"], step["action"]["args"], content=step["thought"])


def as_json(req: dict[str, Any]) -> Any:
    (step,) = _plan(req)
    return json.dumps(step)


def test_native_tool_calls() -> None:
    with FakeOpenAIServer(native) as srv:
        lm = desic.lm("openai:fake", base_url=srv.url, api_key="k", mode="tools")
        with desic.context(lm=lm):
            assert ask(question="What do two tickets cost?").answer == "12 crowns"
        assert len(srv.requests) == 3
        first, last = srv.requests[0], srv.requests[-1]
    assert first["tool_choice"] == "required" and "response_format" not in first
    assert [t["function"]["name"] for t in first["tools"]] == ["search", "calc", "finish"]
    assert first["tools"][1]["function"]["parameters"]["properties"]["a"] == {"title": "A", "type": "integer"}
    assert first["tools"][2]["function"]["parameters"]["required"] == ["answer"]
    observations = [m["content"] for m in last["messages"] if m["content"].startswith("observation")]
    assert observations == ['observation from search: ["A ferry ticket costs 6 crowns."]', "observation from calc: 12"]


def test_a_native_call_that_does_not_fit_the_tool_is_asked_again() -> None:
    answers = iter([ToolCall("calc", {"a": "six"}), ToolCall("finish", {"answer": "12 crowns"})])
    with FakeOpenAIServer(lambda req: next(answers)) as srv:
        lm = desic.lm("openai:fake", base_url=srv.url, api_key="k", mode="tools")
        with desic.context(lm=lm):
            assert ask(question="What do two tickets cost?").answer == "12 crowns"
        retry = srv.requests[1]["messages"][-1]["content"]
    assert retry.startswith("That action is not valid:") and "action.CallCalc.args.a" in retry
    with FakeOpenAIServer(lambda req: ToolCall("calc", {"a": "six"})) as srv:
        lm = desic.lm("openai:fake", base_url=srv.url, api_key="k", mode="tools", validation_retries=1)
        with desic.context(lm=lm), pytest.raises(desic.OutputValidationError, match="did not validate after 2"):
            ask(question="What do two tickets cost?")


def test_json_schema_actions() -> None:
    with FakeOpenAIServer(as_json) as srv:
        lm = desic.lm("openai:fake", base_url=srv.url, api_key="k")  # a compatible server: json_schema
        with desic.context(lm=lm):
            assert ask(question="What do two tickets cost?").answer == "12 crowns"
        first = srv.requests[0]
    assert "tools" not in first
    schema = first["response_format"]["json_schema"]["schema"]
    actions = schema["properties"]["action"]["anyOf"]
    assert [a["$ref"].rsplit("/", 1)[-1] for a in actions] == ["CallSearch", "CallCalc", "Finish"]
    assert schema["$defs"]["CallCalc"]["properties"]["tool"] == {"const": "calc", "title": "Tool", "type": "string"}
