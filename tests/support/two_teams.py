# mypy: disable-error-code="empty-body"
"""A two-team triage pipeline and its fake model (no tests here): resume and storage tests.

Tickets mentioning "charged" go to billing, the rest to shipping; ``answer`` always gets
them right, so any compile finishes with a perfect score.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel

import desic
from desic.lm import LMRequest
from desic.testing import last_input


class Route(BaseModel):
    team: Literal["billing", "shipping"]


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


@desic.pipeline
def triage(ticket: str) -> Route:
    return route(ticket=ticket)


TRAIN = [{"ticket": f"charged {i}" if i % 2 else f"parcel {i}", "team": "billing" if i % 2 else "shipping"} for i in range(12)]


def answer(request: LMRequest) -> str:
    return "billing" if "charged" in last_input(request) else "shipping"
