"""The optimizer's own LM calls (instruction proposals, rewrites): memoized, budgeted."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import msgspec

from .. import events, ir
from .._json import to_jsonable
from ..errors import BudgetExceeded
from ..lm import LM
from ..record import usage_list
from ..runtime import RunState, default_node, run_isolated

if TYPE_CHECKING:
    from .task import CompileTask

__all__ = ["MAX_INSTRUCTION", "PROPOSAL_TOKENS", "own_call", "proposal_tokens"]

MAX_INSTRUCTION = 320
#: the fewest tokens a proposal runs with: room for MAX_INSTRUCTION characters of JSON
#: string even at one character per token (what a small model under a grammar may do)
PROPOSAL_TOKENS = MAX_INSTRUCTION + 64


def proposal_tokens(lm: Any) -> int | None:
    """The token limit of a proposal on ``lm``: the LM's own ``max_tokens`` when it leaves
    room for an instruction (None: no override), else ``PROPOSAL_TOKENS``. A proposal is
    never cut shorter than the LM allows; raising the LM's max_tokens always helps."""
    own = lm.describe().get("max_tokens") if lm is not None else None
    if own is None and lm is not None and hasattr(lm, "params"):
        own = getattr(lm.params, "max_tokens", None)
    if isinstance(own, int) and own >= PROPOSAL_TOKENS:
        return None
    return PROPOSAL_TOKENS


async def own_call(
    task: CompileTask,
    sig: Any,
    inputs: dict[str, Any],
    *,
    key_salt: str = "",
    lm: LM | None = None,
    temperature: float | None = None,
    seed: int | None = None,
    max_tokens: int | None = None,
) -> Any:
    """Run signature ``sig`` on ``inputs`` for the optimizer itself; memoized.

    The record key covers the signature, the inputs, the LM, the sampling overrides
    and ``key_salt`` (say which round/parent/slot this call is for, so distinct
    proposals get distinct keys). Runs on the teacher LM if given, else the task LM.
    Returns the output, or None when the call failed (the failure is recorded too, so
    a replay takes the same path).
    """
    active = lm or task.proposer_lm
    overrides = ir.LMOverrides(temperature=temperature, seed=seed, max_tokens=max_tokens)
    key = ir.fingerprint(
        ["call", sig.spec.fingerprint, sig.strategy, to_jsonable(inputs),
         active.describe() if active is not None else None, msgspec.to_builtins(overrides), key_salt]
    )
    record = task.recorder.get_evaluation(key)
    task.proposals += 1
    if record is not None:
        task.memo_hits += 1
        if record.get("error") is not None:
            task.proposals_failed += 1
            task.last_proposal_error = str(record["error"])
            return None
        data = record.get("output")
        if sig.spec.output_field is not None:
            return getattr(sig.output_model.model_validate({sig.spec.output_field: data}), sig.spec.output_field)
        return sig.output_model.model_validate(data)
    task.meter.check()
    node = msgspec.structs.replace(default_node(sig, sig.node_name or sig.spec.name), lm=overrides)
    state = RunState(program=ir.Program(nodes=(node,)), lm=active)
    error = value = None
    task.meter.start()
    try:
        value = await run_isolated(sig, inputs, state=state)
    except BudgetExceeded:
        raise
    except Exception as exc:  # noqa: BLE001 - a failed proposal is skipped, not fatal
        error = f"{type(exc).__name__}: {exc}"
    finally:
        task.meter.finish(state.usage)
    if error is not None:
        task.proposals_failed += 1
        task.last_proposal_error = error
    output = to_jsonable(value) if error is None else None
    task.recorder.put_evaluation(key, {"output": output, "error": error, "usage": usage_list(state.usage)})
    if events.active():
        events.emit("proposal", optimizer=task.optimizer_name, signature=sig.spec.name, error=error)
    return value
