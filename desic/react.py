"""The ``react`` strategy: reason, act (call a tool), observe, until the model finishes.

Each step is one model call whose answer is ``{"thought": ..., "action": {"tool": name,
"args": {...}}}``: the response model is a union of one action per tool (its arguments
being the tool's own argument model) and ``finish`` (its arguments being the signature's
output), so a JSON-schema constrained server (the local llama.cpp) can only produce a
valid action, and an OpenAI-compatible server that calls tools natively gets the same
actions as ``tools`` (``LMRequest.tools``). The last step allowed (``max_steps``) may only
finish. Every tool call is validated against the tool's schema; its result (or what went
wrong) comes back as the next observation.

The trajectory is recorded: each step's LM call and tool call are events (``lm_call``,
``tool_call``), the trace entry's ``messages`` are the last step's (the whole trajectory)
and its ``output`` holds the answer with the steps under ``"trajectory"``, which is what
bootstrap keeps as a demo and what the prompt of a demo shows turn by turn.
"""

from __future__ import annotations

import asyncio
import contextvars
import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal, Union

from pydantic import BaseModel, Field, create_model

from . import events, ir
from .errors import ArtifactError
from .lm import LM, LMParams, LMRequest, Usage
from .render import trajectory_messages

if TYPE_CHECKING:
    from .runtime import RunState, TraceEntry
    from .signature import Signature
    from .tools import Tool

__all__ = ["THOUGHT", "TRAJECTORY", "native_tools", "run_agent", "step_guard", "step_model"]

THOUGHT = "thought"
TRAJECTORY = "trajectory"
#: Longest thought a step may write: constrained decoders must close it in time, so a small
#: model cannot spend its whole token budget thinking.
THOUGHT_CHARS = 200
_SHOWN = 300  # characters of a tool's arguments and result put in a ``tool_call`` event

#: Asked before each step of an agent (with the run's usage so far); raising stops the
#: trajectory there. A compile sets it to stop agents mid-trajectory once its budget is spent.
step_guard: contextvars.ContextVar[Callable[[Usage], None] | None] = contextvars.ContextVar(
    "desic_step_guard", default=None
)

_models: dict[tuple[Any, ...], type[BaseModel]] = {}


def _bound_tools(sig: Signature[..., Any], node: ir.Node) -> list[Tool[..., Any]]:
    """The code's tool functions for the node's tools, by name (in the node's order)."""
    by_name = {t.name: t for t in sig.tools}
    missing = [t.name for t in node.tools if t.name not in by_name]
    if missing:
        raise ArtifactError(
            f"node {node.id!r} is an agent whose tools are code: {', '.join(missing)} "
            f"{'is' if len(missing) == 1 else 'are'} not among the signature's tools; load the artifact "
            "with your pipeline (desic.load(path, pipeline=...)) whose signature lists them"
        )
    return [by_name[t.name] for t in node.tools]


def step_model(sig: Signature[..., Any], node: ir.Node, *, final: bool = False) -> type[BaseModel]:
    """The response model of one step: a thought, then one action (a tool or ``finish``)."""
    tools = [] if final else _bound_tools(sig, node)
    key = (id(sig.output_model), tuple(id(t.args_model) for t in tools), final)
    hit = _models.get(key)
    if hit is not None:
        return hit
    actions: list[Any] = []
    for t in tools:
        tag: Any = Literal[t.name]
        actions.append(create_model(f"Call{t.args_model.__name__.removesuffix('Args')}", tool=(tag, ...), args=(t.args_model, ...)))
    done: Any = Literal[ir.FINISH]
    actions.append(create_model("Finish", tool=(done, ...), args=(sig.output_model, ...)))
    action: Any = actions[0] if len(actions) == 1 else Union[tuple(actions)]  # noqa: UP007
    model: type[BaseModel] = create_model(
        "FinalStep" if final else "Step",
        **{
            THOUGHT: (str, Field(..., max_length=THOUGHT_CHARS, description="what you know so far and what to do next")),
            "action": (action, ...),
        },  # type: ignore[call-overload]
    )
    if len(_models) >= 1024:
        _models.clear()
    _models[key] = model
    return model


def native_tools(sig: Signature[..., Any], node: ir.Node, *, final: bool = False) -> tuple[dict[str, Any], ...]:
    """The step's actions as OpenAI function definitions (descriptions from the node,
    which an optimizer may have rewritten)."""
    out: list[dict[str, Any]] = []
    if not final:
        for spec in node.tools:
            fn = {"name": spec.name, "description": spec.description, "parameters": spec.parameters}
            out.append({"type": "function", "function": fn})
    finish = {
        "name": ir.FINISH,
        "description": "Give the final answer and stop.",
        "parameters": sig.output_model.model_json_schema(),
    }
    out.append({"type": "function", "function": finish})
    return tuple(out)


def _fail(entry: TraceEntry | None, node: ir.Node, started: float, exc: BaseException) -> None:
    if entry is not None:
        entry.error = f"{type(exc).__name__}: {exc}"
    if events.active():
        events.emit("node_call", node=node.id, latency=time.perf_counter() - started, error=str(exc))


async def run_agent(
    sig: Signature[..., Any],
    inputs: dict[str, Any],
    node: ir.Node,
    messages: list[dict[str, str]],
    state: RunState | None,
    entry: TraceEntry | None,
    lm: LM,
    params: LMParams,
) -> Any:
    """Run the agent ``node`` on ``inputs`` (``messages`` is its rendered query) to its answer."""
    started = time.perf_counter()
    steps: list[dict[str, Any]] = []
    calls: dict[str, int] = {}
    used = Usage()
    max_steps = max(1, node.max_steps)
    try:
        tools = {t.name: t for t in _bound_tools(sig, node)}
        for number in range(max_steps):
            final = number == max_steps - 1
            if number > 0:
                guard = step_guard.get()
                if guard is not None:
                    guard(used)
                if state is not None and state.cancelled:
                    raise asyncio.CancelledError(f"the run was cancelled at step {number + 1} of node {node.id!r}")
            turns = messages + trajectory_messages(node, steps)
            if entry is not None:
                entry.messages = turns
            request = LMRequest(
                messages=tuple(turns),
                response_model=step_model(sig, node, final=final),
                params=params,
                node_id=node.id,
                tools=native_tools(sig, node, final=final),
            )
            try:
                response = await lm.request(request)
            except Exception as exc:
                spent = getattr(exc, "usage", None)  # a failed call's requests count all the same
                if state is not None and isinstance(spent, Usage):
                    state.add_usage(spent, node.id)
                raise
            used = used + response.usage
            if state is not None:
                state.add_usage(response.usage, node.id)
            if events.active():
                u = response.usage
                events.emit(
                    "lm_call",
                    lm=getattr(lm, "name", "?"),
                    node=node.id,
                    step=number + 1,
                    latency=response.latency,
                    prompt_tokens=u.prompt_tokens,
                    completion_tokens=u.completion_tokens,
                    cost=u.cost,
                    cached=bool(response.meta.get("cached", False)),
                    calls=u.calls,  # the requests sent (re-asks included), as other nodes report
                )
            value = response.value
            thought = str(getattr(value, THOUGHT, ""))
            action = getattr(value, "action")  # noqa: B009 - a field of a model built at run time
            name = str(action.tool)
            args = action.args.model_dump(mode="json")
            if name == ir.FINISH:
                steps.append({THOUGHT: thought, "tool": name, "args": args})
                result = sig.finish(sig.output_model.model_validate(args))
                if state is not None:
                    state.note_output(node.id, result)
                if entry is not None:
                    entry.output = {TRAJECTORY: steps, **args}
                if events.active():
                    events.emit("node_call", node=node.id, latency=time.perf_counter() - started, error=None,
                                steps=len(steps))
                return result
            tool = tools[name]
            calls[name] = calls.get(name, 0) + 1
            tool_started = time.perf_counter()
            if tool.max_calls is not None and calls[name] > tool.max_calls:
                ok = False
                observation = (
                    f"error: {name} may be called at most {tool.max_calls} time(s) in a run; "
                    "use what you have or finish"
                )
            else:
                observation, ok = await tool.run(args)
            if events.active():
                events.emit(
                    "tool_call",
                    node=node.id,
                    tool=name,
                    step=number + 1,
                    latency=time.perf_counter() - tool_started,
                    error=None if ok else observation,
                    thought=thought[:_SHOWN],
                    args=json.dumps(args, ensure_ascii=False)[:_SHOWN],
                    observation=observation[:_SHOWN],
                )
            steps.append({THOUGHT: thought, "tool": name, "args": args, "observation": observation})
            if entry is not None:
                entry.output = {TRAJECTORY: steps}  # what the run got to, should a later step fail
    except BaseException as exc:
        _fail(entry, node, started, exc)
        raise
    raise AssertionError("unreachable: the last step may only finish")  # pragma: no cover
