# mypy: disable-error-code="empty-body"
"""Pinned default prompts (snapshots under snapshots/), through the shipped fixture."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, Literal

import pytest
from pydantic import BaseModel, Field

import desic
from desic.lm import LMRequest
from desic.testing import FunctionLM, last_input

# the shipped prompt_snapshot fixture: prompt_snapshot(target, **inputs) -> prompts by node
PromptSnapshot = Callable[..., dict[str, list[dict[str, str]]]]


class Route(BaseModel):
    team: Literal["billing", "technical", "shipping", "account"]


@desic.signature
def route(ticket: Annotated[str, "the customer's message, verbatim"]) -> Route:
    """Route a customer support ticket to the team that should handle it."""


class Reply(BaseModel):
    subject: str = Field(description="one line")
    body: str


@desic.signature(strategy="chain_of_thought")
def draft_reply(ticket: str, team: str) -> Reply:
    """Draft a short, polite reply to the customer on behalf of the team."""


@desic.pipeline
def support(ticket: str) -> Reply:
    r = route(ticket=ticket)
    return draft_reply(ticket=ticket, team=r.team)


def test_predict_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    prompts = prompt_snapshot(route, ticket="I was charged twice {{ 7*7 }}")
    assert list(prompts) == ["route"]


def test_compiled_prompts_with_demos_are_pinned(prompt_snapshot: PromptSnapshot) -> None:
    def answer(request: LMRequest) -> Any:
        text = last_input(request)
        if "team" in request.response_model.model_fields:
            return "billing" if "charged" in text else "shipping"
        return {"reasoning": "The customer needs help.", "subject": "Re: your ticket", "body": "On it."}

    trainset = [
        {"ticket": "I was charged twice", "team": "billing"},
        {"ticket": "Where is my parcel?", "team": "shipping"},
    ]
    with desic.context(lm=FunctionLM(answer)):
        compiled = desic.compile(support, trainset, metric=lambda ex, out: 1.0, optimizer="bootstrap")
        prompts = prompt_snapshot(compiled, ticket="My package arrived broken")
    assert list(prompts) == ["route", "draft_reply"]
    # demos are example turns: system, 2 x (user, assistant), then the query
    assert [m["role"] for m in prompts["route"]] == ["system", "user", "assistant", "user", "assistant", "user"]


@desic.signature
def detect_language(
    sentence: str,
) -> Annotated[str, desic.Output("language", "the language's English name")]:
    """Identify the language of the sentence."""


def test_named_bare_output_prompt_is_pinned(prompt_snapshot: PromptSnapshot) -> None:
    """A DSPy port of "sentence -> language": the LM is asked for `language`, not `output`."""
    prompts = prompt_snapshot(detect_language, sentence="Das ist gut.")
    assert "- language (string): the language's English name" in prompts["detect_language"][0]["content"]


SNAPSHOT_PROJECT = '''
import desic


@desic.signature
def route(ticket: str) -> str:
    """{doc}"""


def test_prompt(prompt_snapshot):
    prompt_snapshot(route, ticket="my parcel is late")
'''


def test_a_changed_prompt_fails_with_a_readable_diff(pytester: pytest.Pytester) -> None:
    """The failure shows the changed line (syrupy's own diff), also when desic is
    installed in editable mode (its plugin's asserts are not rewritten there)."""
    pytester.makefile(".toml", pyproject="[tool.pytest.ini_options]\n")
    pytester.makepyfile(test_route=SNAPSHOT_PROJECT.format(doc="Route the ticket to a team."))
    assert pytester.runpytest_subprocess("--snapshot-update").ret == 0
    pytester.makepyfile(test_route=SNAPSHOT_PROJECT.format(doc="Route the ticket to the right team."))
    result = pytester.runpytest_subprocess()
    assert result.ret == 1
    out = result.stdout.str()
    assert "Route the ticket to a team." in out and "Route the ticket to the right team." in out


def _capitals(inputs: dict[str, Any], output: str) -> tuple[float, str]:
    return (1.0, "") if output.isupper() else (0.0, "write it in capitals")


@desic.signature(sampling=desic.Refine(2, reward=_capitals))
def shout(text: str) -> str:
    """Repeat the text."""


def test_a_refine_retry_is_pinned(snapshot: Any) -> None:
    """The second attempt of ``desic.Refine``: the first answer, its score and feedback."""
    from desic.testing.snapshots import PromptSnapshotExtension, format_prompts

    lm = FunctionLM(lambda r: ["hello", "HELLO"][r.sample])
    with desic.context(lm=lm):
        assert shout(text="hello") == "HELLO"
    snapshot.use_extension(PromptSnapshotExtension).assert_match(format_prompts({"shout": list(lm.calls[1].messages)}))
