"""The react strategy on scripted models: steps, trace, events, prompts, budgets, Ctrl-C, bootstrap."""

from __future__ import annotations

import _thread
import itertools
import json
import uuid
from typing import Any

import pytest

import desic
from desic import events
from desic._compiled import CompiledPipeline
from desic.ir import Program
from desic.lm import LMRequest
from desic.pipeline import as_pipeline
from desic.runtime import default_node
from desic.testing import FakeLM, FunctionLM, act, finish
from tests.support.agents import ROWS, ask, play


def test_an_agent_calls_tools_and_finishes_with_the_typed_output() -> None:
    lm = FunctionLM(play)
    with desic.context(lm=lm):
        out = ask(question="What do two tickets cost?")
    assert out.answer == "12 crowns"
    assert len(lm.calls) == 3  # search, calc, finish: one model call per step
    last = lm.calls[-1].messages
    assert [m["role"] for m in last] == ["system", "user", "assistant", "user", "assistant", "user"]
    assert json.loads(last[2]["content"]) == {"thought": "", "action": {"tool": "search", "args": {"query": "ticket"}}}
    assert last[3]["content"] == 'observation from search: ["A ferry ticket costs 6 crowns."]'
    assert last[5]["content"] == "observation from calc: 12"
    # every step offers the tools natively too (finish among them)
    names = [t["function"]["name"] for t in lm.calls[0].tools]
    assert names == ["search", "calc", "finish"]


def test_tool_failures_and_max_calls_are_observations_and_the_last_step_may_only_finish() -> None:
    lm = FakeLM([
        act("search", query="weather"),
        act("calc", a=1, b=2),
        act("calc", a=1, b=2, op="*"),
        finish(answer="3"),
    ])
    with desic.context(lm=lm):
        assert ask(question="sum?").answer == "3"
    seen = [m["content"] for m in lm.calls[-1].messages if m["content"].startswith("observation")]
    assert seen == ['observation from search: ["nothing found"]', "observation from calc: 3", "observation from calc: 2"]
    lm = FakeLM([act("calc", a=1, b=2), act("calc", a=1, b=2), act("calc", a=1, b=2), finish(answer="3")])
    with desic.context(lm=lm):
        ask(question="sum?")
    last = lm.calls[-1].messages[-1]["content"]
    assert last == "observation from calc: error: calc may be called at most 2 time(s) in a run; use what you have or finish"
    # arguments that do not fit the tool's schema are the model's invalid answer (re-asked by
    # instructor or the native tool path), never a tool call
    with pytest.raises(desic.OutputValidationError, match="does not fit Step"), desic.context(
        lm=FakeLM([act("calc", a=1, b="x")])
    ):
        ask(question="sum?")
    # max_steps=4: the fourth step's response model has only the finish action
    assert lm.calls[-1].response_model.__name__ == "FinalStep"
    assert [t["function"]["name"] for t in lm.calls[-1].tools] == ["finish"]
    with pytest.raises(desic.OutputValidationError, match="does not fit FinalStep"), desic.context(
        lm=FakeLM([act("search", query="a")] * 4)
    ):
        ask(question="loops forever?")


def test_the_trajectory_is_traced_and_emitted_as_events() -> None:
    seen: list[events.Event] = []
    with desic.context(lm=FunctionLM(play)), events.listening(seen.append):
        report = desic.evaluate(ask, ROWS, desic.metrics.contains, concurrency=1)
    assert report.score == 1.0
    tools = [e.data for e in seen if e.kind == "tool_call"]
    assert [(d["tool"], d["step"]) for d in tools] == [("search", 1), ("search", 1), ("search", 1), ("calc", 2)]
    assert tools[3]["args"] == '{"a": 6, "b": 2, "op": "*"}' and tools[3]["observation"] == "12"
    assert sum(e.kind == "lm_call" for e in seen) == 7
    calls = [e.data for e in seen if e.kind == "node_call"]
    assert [d["steps"] for d in calls] == [2, 2, 3]


def test_each_steps_lm_call_event_counts_its_requests() -> None:
    """The progress bar sums ``calls`` of ``lm_call`` events: an agent's steps report them
    like any other node, so the bar agrees with the run's usage."""
    seen: list[events.Event] = []
    with desic.context(lm=FunctionLM(play)), events.listening(seen.append):
        report = desic.evaluate(ask, ROWS, desic.metrics.contains, concurrency=1)
    steps = [e.data for e in seen if e.kind == "lm_call"]
    assert all(d.get("calls") == 1 for d in steps), steps
    assert sum(d["calls"] for d in steps) == report.usage.calls == 7


def test_prompts_show_the_whole_trajectory_and_capture_stops_at_the_first_step() -> None:
    compiled = CompiledPipeline(as_pipeline(ask), Program(nodes=(default_node(ask, "ask"),)))
    first = compiled.prompts(question="What do two tickets cost?")["ask"]
    assert [m["role"] for m in first] == ["system", "user"]
    assert "- calc(a: integer, b: integer, op: string (+ or *)): Add or multiply two numbers." in first[0]["content"]
    assert "You have at most 4 turns." in first[0]["content"]
    with desic.context(lm=FunctionLM(play)):
        whole = compiled.prompts(question="What do two tickets cost?")["ask"]
    assert len(whole) == 6 and whole[-1]["content"] == "observation from calc: 12"


def test_bootstrap_keeps_whole_trajectories_as_demos() -> None:
    compiled = desic.compile(ask, ROWS, metric=desic.metrics.contains, optimizer="bootstrap",
                             max_demos=2, max_labeled=0, lm=FunctionLM(play))
    (node,) = compiled.program.nodes
    assert len(node.demos) == 2
    for demo in node.demos:
        steps = demo.output["trajectory"]
        assert steps[-1]["tool"] == "finish" and steps[0]["tool"] == "search"
        assert steps[0]["observation"] and demo.output["answer"] == steps[-1]["args"]["answer"]
    # a demo is shown as its turns: the question, then each action and observation, then finish
    lm = FunctionLM(play)
    with desic.context(lm=lm):
        compiled(question="Who is the mayor?")
    roles = [m["role"] for m in lm.calls[0].messages]
    assert roles[:6] == ["system", "user", "assistant", "user", "assistant", "user"]
    demo_finish = json.loads(lm.calls[0].messages[4]["content"])
    assert demo_finish["action"]["tool"] == "finish"


def test_a_compile_budget_stops_an_agent_between_two_steps() -> None:
    lm = FunctionLM(play)
    compiled = desic.compile(ask, ROWS[2:] * 3, metric=desic.metrics.contains, optimizer="bootstrap",
                             max_calls=2, concurrency=1, lm=lm)
    assert compiled.stopped_by == "max_calls"
    assert len(lm.calls) == 2  # the three-step trajectory stopped after its second step
    assert compiled.errors == 0  # a budget stop is not an LM failure


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_stops_an_agent_mid_trajectory() -> None:
    count = itertools.count(1)

    def pressing(request: LMRequest) -> Any:
        if next(count) == 2:
            _thread.interrupt_main()
        return play(request)

    lm = FunctionLM(pressing, latency=0.01)
    url = f"memory://react-{uuid.uuid4().hex}"
    with pytest.raises(KeyboardInterrupt):
        desic.compile(ask, ROWS[2:] * 4, metric=desic.metrics.contains, optimizer="bootstrap", lm=lm,
                      storage=url, concurrency=1)
    assert len(lm.calls) <= 3  # it stopped inside the first (three-step) trajectory
    (run,) = desic.storage.open(url).list_runs()
    assert run.status == "interrupted"
