"""Instruction proposals, declared as desic signatures and grounded on data.

Optimizers that rewrite instructions (beam, genetic, mipro, reflective) ask an LM through
these signatures, always via ``CompileTask.call`` (memoized, budgeted, teacher-first).
The text they are given is built here: the node's signature, a few data rows seen at that
node, the failures of the current candidate and the metric's feedback.

The answer is a one-field model whose string has a ``maxLength``: constrained decoders
(llama.cpp grammars) then must close the JSON in time, so small local models still give
a usable (if modest) instruction instead of a truncated completion. Proposals run with
the proposer LM's own ``max_tokens``, raised to ``PROPOSAL_TOKENS`` when it is lower (an
example's LM capped at 32 tokens for its answers still proposes); a proposal that fails
anyway is skipped and counted (``CompileTask.proposals_failed``, the history, the run's
``run_end`` event and a warning naming the last error).
"""

from __future__ import annotations

from typing import Any

import msgspec
from pydantic import BaseModel, Field

from .. import ir
from ..engine import RunOutcome
from ..render import format_value
from ..signature import signature
from .calls import MAX_INSTRUCTION


class Instruction(BaseModel):
    instruction: str = Field(max_length=MAX_INSTRUCTION, description="the new instruction, imperative, one paragraph")


@signature
def propose_instruction(task: str, examples: str, failures: str, feedback: str, tip: str) -> Instruction:  # type: ignore[empty-body]
    """You improve the instruction of one step of an LLM program. `task` shows the step's
    inputs, outputs and current instruction; `examples` shows data it handles; `failures`
    shows inputs it got wrong with the expected answers; `feedback` is the grader's
    comments. Following the tip, write one clear instruction that would get these right.
    State the rules the data follows. Do not mention specific examples."""


@signature
def reflect_instruction(current_instruction: str, task: str, examples_with_feedback: str) -> Instruction:  # type: ignore[empty-body]
    """An assistant was given the instruction below for a task. Each example shows the
    inputs, the assistant's answer, and feedback on how it should be improved (with the
    correct answer). Read them carefully, find the rules the assistant missed, and write
    a new instruction for the task that states those rules. Keep what already worked."""


@signature
def reflect_tool_description(current_description: str, tool: str, task: str, examples_with_feedback: str) -> Instruction:  # type: ignore[empty-body]
    """An agent calls the tool below while doing a task. Each example shows the inputs, the
    agent's answer, and feedback with the correct answer. Write a new description of the
    tool (what it does, when to call it and what to pass) that would help the agent use it
    well. Keep it short and true to what the tool does."""


def tool_text(node: ir.Node, name: str) -> str:
    """One tool of an agent node, as the proposer sees it."""
    spec = next(t for t in node.tools if t.name == name)
    args = ", ".join(spec.parameters.get("properties", {}))
    return f"tool {name}({args}) of step {node.id}"


def with_tool_description(node: ir.Node, name: str, text: str) -> tuple[ir.ToolSpec, ...]:
    """``node``'s tools with ``name``'s description replaced by ``text``."""
    return tuple(msgspec.structs.replace(t, description=text) if t.name == name else t for t in node.tools)


TIPS = (
    "Be concise and direct.",
    "Name the rules the examples follow.",
    "Describe the tricky cases and how to handle them.",
    "Say exactly what form the answer takes.",
    "Explain how to decide, step by step.",
    "Rethink the task from scratch; be creative.",
    "Write it for a careful beginner.",
    "Mention the most common mistake to avoid.",
)


def _clip(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _field_line(values: dict[str, Any], limit: int = 160) -> str:
    return "; ".join(f"{k}: {_clip(format_value(v), limit)}" for k, v in values.items())


def describe_node(node: ir.Node) -> str:
    """The step as the proposer sees it: inputs, outputs and the current instruction."""
    spec = node.signature
    ins = ", ".join(f.name + (f" ({f.description})" if f.description else "") for f in spec.inputs)
    props: dict[str, Any] = spec.output_schema.get("properties", {})
    outs = []
    for name, prop in props.items():
        kind = prop.get("enum") or prop.get("type") or "value"
        outs.append(f"{name} ({'/'.join(map(str, kind)) if isinstance(kind, list) else kind})")
    instruction = node.instructions or spec.instructions
    tools = f" It is an agent calling tools: {', '.join(t.name for t in node.tools)}." if node.tools else ""
    return f"step {node.id}: inputs {ins}; outputs {', '.join(outs)}.{tools} Current instruction: {instruction}"


def describe_program(program: ir.Program) -> str:
    """The pipeline's steps and data flow, for program-aware proposals."""
    steps = " -> ".join(program.node_ids) or "(one step)"
    flows = "; ".join(f"{e.src}.{e.field} feeds {e.dst}" for e in program.edges)
    return f"program steps: {steps}" + (f" ({flows})" if flows else "")


def node_rows(outcomes: list[RunOutcome], node_id: str, limit: int) -> list[tuple[dict[str, Any], Any]]:
    """(inputs, output) pairs observed at ``node_id`` in ``outcomes``."""
    rows: list[tuple[dict[str, Any], Any]] = []
    for o in outcomes:
        for entry in o.state.trace or []:
            if entry.node_id == node_id and entry.output is not None:
                rows.append((entry.inputs, entry.output))
                break
        if len(rows) >= limit:
            break
    return rows


def examples_text(task_examples: list[Any], limit: int = 4) -> str:
    """A few labelled rows: inputs => expected."""
    lines = []
    for e in task_examples[:limit]:
        lines.append(f"{_field_line(e.inputs)} => {_field_line(e.labels)}")
    return "\n".join(lines) or "(none)"


def feedback_of(o: RunOutcome) -> str:
    """The metric's feedback, or a plain statement of what was expected."""
    if o.error is not None:
        return f"failed: {_clip(o.error, 160)}"
    if o.feedback:
        return _clip(o.feedback, 240)
    return f"expected {_field_line(o.example.labels)}"


def failures_text(outcomes: list[RunOutcome], node_id: str, limit: int = 4) -> tuple[str, str]:
    """(failures, feedback) texts for the failed rows of ``outcomes``, seen at ``node_id``."""
    bad = [o for o in outcomes if (o.score or 0.0) < 1.0][:limit]
    fails, notes = [], []
    for o in bad:
        entry = next((t for t in o.state.trace or [] if t.node_id == node_id), None)
        shown = entry.inputs if entry is not None else o.example.inputs
        got = entry.output if entry is not None and entry.output is not None else o.output
        got_text = _field_line(got) if isinstance(got, dict) else _clip(format_value(got), 160)
        fails.append(f"{_field_line(shown)} => answered {got_text}; expected {_field_line(o.example.labels)}")
        notes.append(feedback_of(o))
    return "\n".join(fails) or "(none)", "\n".join(notes) or "(none)"


def reflection_text(outcomes: list[RunOutcome], node_id: str, limit: int = 4) -> str:
    """GEPA-style records: inputs, the answer at the node, and feedback with the truth."""
    blocks = []
    for n, o in enumerate(outcomes[:limit], 1):
        entry = next((t for t in o.state.trace or [] if t.node_id == node_id), None)
        shown = entry.inputs if entry is not None else o.example.inputs
        got = entry.output if entry is not None and entry.output is not None else o.output
        got_text = _field_line(got) if isinstance(got, dict) else _clip(format_value(got), 160)
        verdict = "correct" if (o.score or 0.0) >= 1.0 else "wrong"
        blocks.append(
            f"example {n}: {_field_line(shown)}\nanswer: {got_text} ({verdict}, score {o.score or 0.0:.2f})\n"
            f"feedback: {feedback_of(o)}; correct answer: {_field_line(o.example.labels)}"
        )
    return "\n".join(blocks)


def clean_instruction(value: Any, current: str) -> str | None:
    """A usable instruction from a proposal, or None (empty, too short, unchanged)."""
    if value is None:
        return None
    text = value.instruction if isinstance(value, Instruction) else str(value)
    text = " ".join(text.split()).strip().strip('"').strip()
    for prefix in ("instruction:", "new instruction:"):
        if text.lower().startswith(prefix):
            text = text[len(prefix) :].strip()
    if len(text) < 12 or text == current.strip():
        return None
    return text
