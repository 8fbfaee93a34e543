"""Inference-time strategies: a node answers from several samples instead of one.

- ``Majority(n, temperature)``: self-consistency. ``n`` samples at a temperature; the
  answer most samples agree on wins (a tie goes to the earliest sample).
- ``BestOfN(n, reward, temperature)``: ``n`` samples, the one ``reward`` scores highest
  wins (a tie goes to the earliest).
- ``Refine(n, reward, threshold)``: answer, score it with ``reward``; below
  ``threshold``, ask again with the score and the reward's feedback in the conversation,
  at most ``n`` attempts; the best-scored attempt wins.

Set one on a signature (``@desic.signature(sampling=desic.Majority(5))``) or let an
optimizer choose it; it is stored in the artifact as plain data (``ir.Sampling``), the
reward by its name only: a loaded program finds the function under that name among the
rewards its code defined (``desic.reward`` registers one; a ``BestOfN``/``Refine``
given a function registers it). A reward is ``reward(inputs: dict, output) -> float``
or ``-> (float, feedback: str)``, sync or async, higher is better.

Samples are separate LM requests with ``sample=0..n-1``: an LM cache keeps each as its
own entry, so a rerun gets the same samples back and costs nothing. Every sample's usage
counts (budgets see them all); a sample whose call fails is dropped while at least one
succeeds.

A node may also carry ``variants`` (other instructions and demos, from the runner-up
candidates of a compile with ``ensemble=k``): sample ``i`` then uses variant
``i % len(variants)`` and votes like ``Majority``.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from . import ir
from .errors import ArtifactError, ConfigError

__all__ = ["BestOfN", "Majority", "Refine", "Reward", "SamplingSpec", "reward", "reward_named"]

Reward = Callable[[dict[str, Any], Any], Any]

_rewards: dict[str, Reward] = {}


def reward(fn: Reward | None = None, /, *, name: str | None = None) -> Any:
    """Register ``fn`` as a reward under ``name`` (default: its ``__name__``), so a loaded
    artifact that names it finds it. Returns ``fn`` unchanged (usable as a decorator)."""

    def register(f: Reward) -> Reward:
        _register(f, name)
        return f

    return register(fn) if fn is not None else register


def _register(fn: Reward, name: str | None) -> str:
    if not callable(fn):
        raise ConfigError(f"a reward must be a function (inputs, output) -> score, got {fn!r}")
    key = name or getattr(fn, "__name__", None)
    if not key or key == "<lambda>":
        raise ConfigError("a lambda reward needs a name: desic.reward(fn, name='...') or BestOfN(..., reward_name=...)")
    old = _rewards.get(key)
    if old is not None and old is not fn and _where(old) != _where(fn):
        raise ConfigError(
            f"two different rewards are named {key!r} ({_where(old)} and {_where(fn)}); "
            "rename one or pass name=..."
        )
    _rewards[key] = fn
    return key


def _where(fn: Any) -> str:
    return f"{getattr(fn, '__module__', '?')}.{getattr(fn, '__qualname__', '?')}"


def reward_named(name: str, node_id: str) -> Reward:
    fn = _rewards.get(name)
    if fn is None:
        known = ", ".join(sorted(_rewards)) or "none"
        raise ArtifactError(
            f"node {node_id!r} picks its answer with the reward {name!r}, which no code has "
            f"defined here (known rewards: {known}); import the module that defines it, or "
            f"register it: desic.reward(fn, name={name!r})"
        )
    return fn


@dataclass(frozen=True)
class SamplingSpec:
    """What a signature asks for; ``ir.Sampling`` is its plain-data form."""

    kind: str
    n: int
    temperature: float | None = None
    threshold: float | None = None
    reward: Reward | None = None
    reward_name: str | None = None

    def __post_init__(self) -> None:
        if isinstance(self.n, bool) or not isinstance(self.n, int) or self.n < 1:
            raise ConfigError(f"{self.kind}: n must be a whole number >= 1, got {self.n!r}")
        if self.n > 64:
            raise ConfigError(f"{self.kind}: n={self.n} samples per call is more than 64; use fewer")
        if self.temperature is not None and not (0 <= self.temperature <= 2):
            raise ConfigError(f"{self.kind}: temperature must be within 0..2, got {self.temperature!r}")
        if self.kind in ("best_of_n", "refine"):
            if self.reward is None and self.reward_name is None:
                raise ConfigError(f"{self.kind} needs reward=fn (inputs, output) -> score")
            if self.reward is not None:
                object.__setattr__(self, "reward_name", _register(self.reward, self.reward_name))

    def to_ir(self) -> ir.Sampling:
        return ir.Sampling(
            kind=self.kind, n=self.n, temperature=self.temperature, threshold=self.threshold,
            reward=self.reward_name,
        )


def Majority(n: int = 5, *, temperature: float | None = 0.7) -> SamplingSpec:
    """Self-consistency: ``n`` samples at ``temperature``, the most common answer wins."""
    return SamplingSpec("majority", n, temperature)


def BestOfN(
    n: int = 4, *, reward: Reward, temperature: float | None = 0.7, reward_name: str | None = None
) -> SamplingSpec:
    """``n`` samples at ``temperature``; the one ``reward(inputs, output)`` scores highest wins."""
    return SamplingSpec("best_of_n", n, temperature, reward=reward, reward_name=reward_name)


def Refine(
    n: int = 3,
    *,
    reward: Reward,
    threshold: float = 1.0,
    temperature: float | None = None,
    reward_name: str | None = None,
) -> SamplingSpec:
    """Answer, score with ``reward``; below ``threshold`` try again with the feedback in
    the conversation, at most ``n`` attempts; the best-scored attempt wins."""
    return SamplingSpec("refine", n, temperature, threshold=threshold, reward=reward, reward_name=reward_name)


# --- running ------------------------------------------------------------------------------------

#: One sample: (its messages' index or extra turns, sample number) -> the validated answer
#: as (caller-facing output, JSON data of the full response). Raises on a failed call.
Sample = Callable[[list[dict[str, str]], int], Awaitable[tuple[Any, dict[str, Any]]]]


@dataclass
class Picked:
    """The chosen answer and what the choice was based on (for events and traces)."""

    output: Any
    data: dict[str, Any]
    index: int
    votes: list[int] | None = None
    scores: list[float | None] | None = None
    feedback: list[str] | None = None


def vote_key(data: dict[str, Any]) -> str:
    """What two samples must share to count as the same answer: the output without its
    reasoning, as canonical JSON."""
    return json.dumps({k: v for k, v in data.items() if k != "reasoning"}, sort_keys=True, default=str)


async def score(fn: Reward, inputs: dict[str, Any], output: Any) -> tuple[float, str]:
    value = fn(inputs, output)
    if inspect.isawaitable(value):
        value = await value
    feedback = ""
    if isinstance(value, tuple) and len(value) == 2:
        value, feedback = value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"a reward returns a number or (number, feedback), got {value!r}")
    return float(value), str(feedback or "")


async def majority(
    sample: Sample, messages: Sequence[list[dict[str, str]]], n: int
) -> Picked:
    """``n`` samples (sample ``i`` with ``messages[i % len(messages)]``), the most common wins."""
    import asyncio

    results = await asyncio.gather(
        *(sample(messages[i % len(messages)], i) for i in range(n)), return_exceptions=True
    )
    answers = [(i, r) for i, r in enumerate(results) if not isinstance(r, BaseException)]
    if not answers:
        first = results[0]
        assert isinstance(first, BaseException)
        raise first
    _reraise_interrupts(results)
    counts: dict[str, list[int]] = {}
    for i, (_, data) in answers:
        counts.setdefault(vote_key(data), []).append(i)
    winner = max(counts.values(), key=lambda idx: (len(idx), -idx[0]))
    chosen = winner[0]
    output, data = dict(answers)[chosen]
    votes = [0] * n
    for idx in counts.values():
        for i in idx:
            votes[i] = len(idx)
    return Picked(output, data, chosen, votes=votes)


async def best_of_n(
    sample: Sample, messages: list[dict[str, str]], n: int, fn: Reward, inputs: dict[str, Any]
) -> Picked:
    import asyncio

    results = await asyncio.gather(*(sample(messages, i) for i in range(n)), return_exceptions=True)
    _reraise_interrupts(results)
    scores: list[float | None] = [None] * n
    best: int | None = None
    for i, r in enumerate(results):
        if isinstance(r, BaseException):
            continue
        scores[i], _ = await score(fn, inputs, r[0])
        if best is None or (scores[i] or 0.0) > (scores[best] or 0.0):
            best = i
    if best is None:
        first = results[0]
        assert isinstance(first, BaseException)
        raise first
    output, data = results[best]  # type: ignore[misc]
    return Picked(output, data, best, scores=scores)


REFINE_TURN = (
    "That answer scored {score:g} (wanted at least {threshold:g}).{feedback} "
    "Answer again, in the same format."
)


async def refine(
    sample: Sample,
    messages: list[dict[str, str]],
    n: int,
    fn: Reward,
    inputs: dict[str, Any],
    threshold: float,
) -> Picked:
    """Attempts one after another, each seeing the earlier answers and their feedback."""
    turns = list(messages)
    scores: list[float | None] = []
    feedback: list[str] = []
    best: tuple[float, int, Any, dict[str, Any]] | None = None
    for i in range(n):
        output, data = await sample(turns, i)
        value, note = await score(fn, inputs, output)
        scores.append(value)
        feedback.append(note)
        if best is None or value > best[0]:
            best = (value, i, output, data)
        if value >= threshold:
            break
        turns = [
            *turns,
            {"role": "assistant", "content": json.dumps(data, ensure_ascii=False, default=str)},
            {
                "role": "user",
                "content": REFINE_TURN.format(
                    score=value, threshold=threshold, feedback=_feedback(note)
                ),
            },
        ]
    assert best is not None
    return Picked(best[2], best[3], best[1], scores=scores, feedback=feedback)


def _feedback(note: str) -> str:
    note = note.strip()
    if not note:
        return ""
    return f" Feedback: {note}" + ("" if note[-1] in ".!?" else ".")


def _reraise_interrupts(results: Sequence[object]) -> None:
    """A cancelled or interrupted sample stops the node: never voted around."""
    import asyncio

    for r in results:
        if isinstance(r, (asyncio.CancelledError, KeyboardInterrupt, SystemExit)):
            raise r
        if isinstance(r, BaseException) and not isinstance(r, Exception):
            raise r
        if isinstance(r, Exception) and type(r).__name__ == "BudgetExceeded":
            raise r
