"""``labeled`` builds its program from the rows alone: no LM call for a bare signature."""

from __future__ import annotations

import desic
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, answer, route


def test_labeled_makes_no_lm_call_for_a_bare_signature() -> None:
    lm = FunctionLM(answer)
    compiled = desic.compile(route, ROWS, metric=desic.metrics.exact_match, optimizer="labeled", lm=lm, max_demos=3)
    assert lm.calls == []
    (node,) = compiled.program.nodes
    assert len(node.demos) == 3 and all(d.source == "labeled" for d in node.demos)
    with desic.context(lm=lm):
        assert compiled(ticket="charge 1").team == "billing"
