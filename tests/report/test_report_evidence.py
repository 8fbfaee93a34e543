"""The HTML report shows each score with its interval and rows, and the optimizer's choice."""

from __future__ import annotations

import desic
from desic.optimize import MemoryRecorder
from desic.report import build_report, candidate_rows
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, SMALL, answer, triage


def test_scores_show_an_interval_and_the_chosen_program_is_the_selected_one() -> None:
    recorder = MemoryRecorder()
    compiled = desic.compile(triage, ROWS, metric=desic.metrics.exact_match, optimizer="beam", init=None,
                             lm=FunctionLM(answer), recorder=recorder, **SMALL["beam"])
    page = build_report({"id": "r1", "optimizer": "beam"}, recorder.candidates)
    chosen = compiled.history[-1]
    low, high = chosen.interval or (0.0, 0.0)
    assert f"{chosen.score:.3f} [{low:.2f}, {high:.2f}] · 16 selected rows" in page
    assert "chosen score [95% interval]" in page
    assert f'<tr id="cand-{chosen.index}" class="best">' in page


def test_records_without_intervals_get_them_from_their_scores() -> None:
    (row,) = candidate_rows([{"index": 0, "score": 0.75, "scores": [1, 1, 1, 0], "split": "val"}])
    assert row.n == 4 and row.interval is not None and row.interval[0] < 0.75 < row.interval[1]
    assert row.evidence().startswith("0.750 [") and row.evidence().endswith("· 4 val rows")
