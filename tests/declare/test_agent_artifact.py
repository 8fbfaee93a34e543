# mypy: disable-error-code="empty-body"
"""Agent artifacts: tools saved as data (never code), bound by name on load, drift caught with a diff."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

import desic
from desic import ir
from desic.report import build_report
from desic.testing import FunctionLM
from tests.support.agents import ROWS, ask, play


def build(*tools: Callable[..., Any]) -> desic.Signature[..., Any]:
    """The same agent (one ref) declared with ``tools``: the code as it is at load time."""

    @desic.signature(strategy="react", tools=list(tools), max_steps=3)
    def agent(question: str) -> str:
        """Answer the question."""

    return agent


def lookup(query: str) -> str:
    """Find a fact."""
    return f"fact about {query}"


def test_the_artifact_holds_tool_names_schemas_and_descriptions_and_loads_bound_to_the_code(tmp_path: Path) -> None:
    compiled = desic.compile(ask, ROWS, metric=desic.metrics.contains, optimizer="bootstrap",
                             max_demos=1, max_labeled=0, lm=FunctionLM(play))
    path = compiled.save(tmp_path / "agent.json")
    raw = json.loads(path.read_text())
    (node,) = raw["nodes"]
    assert node["strategy"] == "react" and node["max_steps"] == 4
    assert [t["name"] for t in node["tools"]] == ["search", "calc"]
    assert node["tools"][1]["description"] == "Add or multiply two numbers."
    assert node["tools"][1]["parameters"]["properties"]["op"]["default"] == "+"
    assert "def " not in path.read_text() and "trajectory" in json.dumps(node["demos"])

    loaded = desic.load(path, pipeline=ask)
    assert loaded.program == compiled.program
    with desic.context(lm=FunctionLM(play)):
        assert loaded(question="What do two tickets cost?").answer == "12 crowns"


def test_an_optimized_tool_description_is_what_the_model_reads(tmp_path: Path) -> None:
    compiled = desic.compile(ask, ROWS, metric=desic.metrics.contains, optimizer="labeled", lm=FunctionLM(play))
    (node,) = compiled.program.nodes
    tools = tuple(msgspec.structs.replace(t, description="Sum or product of a and b.") if t.name == "calc" else t
                  for t in node.tools)
    program = compiled.program.with_node(msgspec.structs.replace(node, tools=tools))
    path = tmp_path / "a.json"
    path.write_bytes(ir.encode_program(program))
    lm = FunctionLM(play)
    with desic.context(lm=lm):
        desic.load(path, pipeline=ask)(question="Who is the mayor?")
    assert "- calc(a: integer, b: integer, op: string (+ or *)): Sum or product of a and b." in lm.calls[0].messages[0]["content"]
    assert lm.calls[0].tools[1]["function"]["description"] == "Sum or product of a and b."


def test_a_changed_tool_is_drift_with_a_diff(tmp_path: Path) -> None:
    old = build(lookup)
    lm = FunctionLM(lambda r: {"thought": "", "action": {"tool": "finish", "args": {"output": "x"}}})
    compiled = desic.compile(old, ROWS, metric=lambda ex, out: 1.0, optimizer="labeled", lm=lm)
    path = compiled.save(tmp_path / "agent.json")
    assert desic.load(path, pipeline=old).program == compiled.program

    def lookup_now(query: str, limit: int) -> str:
        """Find a fact."""
        return query

    def extra(x: int) -> int:
        """New."""
        return x

    with pytest.raises(desic.ArtifactError) as caught:
        desic.load(path, pipeline=build(desic.tool(lookup_now, name="lookup"), extra))
    message = str(caught.value)
    assert "the tools of 'agent' changed since the artifact was compiled" in message
    assert "tool 'extra': added in the code" in message
    assert "tool 'lookup': argument 'limit' added (integer)" in message
    assert "recompile the pipeline" in message

    def renamed(query: str) -> str:
        """Find a fact."""
        return query

    with pytest.raises(desic.ArtifactError, match="tool 'lookup': removed from the code"):
        desic.load(path, pipeline=build(renamed))


def test_an_agent_artifact_needs_its_code_to_run(tmp_path: Path) -> None:
    agent = build(lookup)
    lm = FunctionLM(lambda r: {"thought": "", "action": {"tool": "finish", "args": {"output": "x"}}})
    path = desic.compile(agent, ROWS, metric=lambda ex, out: 1.0, optimizer="labeled", lm=lm).save(tmp_path / "a.json")
    with pytest.raises(desic.ArtifactError, match=r"tools \(lookup\) are code.*pipeline="):
        desic.load(path)


def test_an_artifact_with_a_bad_tool_is_refused(tmp_path: Path) -> None:
    agent = build(lookup)
    lm = FunctionLM(lambda r: {"thought": "", "action": {"tool": "finish", "args": {"output": "x"}}})
    path = desic.compile(agent, ROWS, metric=lambda ex, out: 1.0, optimizer="labeled", lm=lm).save(tmp_path / "a.json")
    raw = json.loads(path.read_text())
    raw["nodes"][0]["tools"][0]["name"] = "finish"
    path.write_text(json.dumps(raw))
    with pytest.raises(desic.ArtifactError, match="tool name 'finish' is not usable"):
        desic.load(path, pipeline=agent)


def test_the_report_shows_the_tools_and_each_step_of_a_demo() -> None:
    compiled = desic.compile(ask, ROWS, metric=desic.metrics.contains, optimizer="bootstrap",
                             max_demos=1, max_labeled=0, lm=FunctionLM(play))
    page = build_report({"id": "r1"}, [{"index": 0, "score": 1.0, "program": compiled.program}])
    assert "observation from search: [&#34;" in page
    assert "search(query: string (a few keywords)): Find facts about the town." in page
    assert "tools: search, calc" in page
