"""Instruction proposals fit the model: the LM's own token limit, failures counted, true advice."""

from __future__ import annotations

import logging
from typing import Any

import pytest

import desic
from desic import events
from desic.optimize.calls import PROPOSAL_TOKENS
from desic.testing import FakeOpenAIServer, allow_model_requests
from tests.support.house_rule import ROWS, triage


def is_proposal(req: dict[str, Any]) -> bool:
    return "improve the instruction" in req["messages"][0]["content"]


class CutProposals(FakeOpenAIServer):
    """A valid answer to every pipeline call; every proposal cut off by the token limit."""

    def _chat(self, req: dict[str, Any]) -> dict[str, Any] | bytes:
        out = super()._chat(req)
        if is_proposal(req) and isinstance(out, dict):
            out["choices"][0]["finish_reason"] = "length"
            out["choices"][0]["message"]["content"] = '{"instruction": "Route the'
        return out


def compile_on(server: FakeOpenAIServer, max_tokens: int) -> Any:
    lm = desic.lm("openai:fake-model", base_url=server.url, api_key="test", max_tokens=max_tokens)
    with allow_model_requests():
        return desic.compile(triage, ROWS[:8], metric=desic.metrics.exact_match, optimizer="beam", lm=lm,
                             init=None, concurrency=4, rounds=1, width=2, beam=1)


@pytest.mark.parametrize(("own", "sent"), [(2048, 2048), (32, PROPOSAL_TOKENS)])
def test_proposals_use_the_lms_own_max_tokens_never_less_than_they_need(own: int, sent: int) -> None:
    with FakeOpenAIServer() as server:
        compile_on(server, own)
    proposals = [r for r in server.requests if is_proposal(r)]
    assert proposals and {r["max_tokens"] for r in proposals} == {sent}
    assert {r["max_tokens"] for r in server.requests if not is_proposal(r)} == {own}


def test_failed_proposals_are_counted_and_the_advice_is_true(caplog: pytest.LogCaptureFixture) -> None:
    seen: list[events.Event] = []
    with CutProposals() as server, events.listening(seen.append), caplog.at_level(logging.WARNING, "desic"):
        compiled = compile_on(server, 1024)
    last = compiled.history[-1]
    assert last.proposals > 0 and last.proposals_failed == last.proposals
    (end,) = [e for e in seen if e.kind == "run_end"]
    assert end.data["proposals_failed"] == end.data["proposals"] == last.proposals
    failed = [e for e in seen if e.kind == "proposal" and e.data["error"]]
    assert failed and "raise max_tokens on the LM" in failed[0].data["error"]  # true: proposals use it
    assert f"{last.proposals} of {last.proposals} instruction proposals failed" in caplog.text


def test_a_proposal_cut_at_its_own_limit_says_so() -> None:
    seen: list[events.Event] = []
    with CutProposals() as server, events.listening(seen.append):
        compile_on(server, 32)  # too few for a proposal: it gets PROPOSAL_TOKENS of its own
    failed = [e for e in seen if e.kind == "proposal" and e.data["error"]]
    assert failed and f"max_tokens={PROPOSAL_TOKENS}" in failed[0].data["error"]
    assert "this call's own limit" in failed[0].data["error"]
    assert "raise max_tokens on the LM" not in failed[0].data["error"]
