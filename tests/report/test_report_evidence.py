"""The HTML report names the optimizer's choice and shows its score with interval and rows."""

from __future__ import annotations

import desic
from desic.optimize import MemoryRecorder
from desic.report import build_report, candidate_rows, score_text
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, SMALL, answer, search_choice, triage


def test_the_chosen_program_is_the_selected_one_with_its_evidence() -> None:
    recorder = MemoryRecorder()
    compiled = desic.compile(triage, ROWS, metric=desic.metrics.exact_match, optimizer="beam", init=None,
                             lm=FunctionLM(answer), recorder=recorder, **SMALL["beam"])
    page = build_report({"id": "r1", "optimizer": "beam"}, recorder.candidates)
    rows = candidate_rows(recorder.candidates)
    # the search's own choice, on its validation rows, then the compile's, beside zero-shot
    search, final = search_choice(compiled.history), compiled.history[-1]
    for chosen, where in ((search, "16 validation rows (the optimizer's choice)"),
                          (final, "32 rows, each without its own demos (the compile's choice, beside the pipeline as written)")):
        low, high = chosen.interval or (0.0, 0.0)
        (row,) = [r for r in rows if r.index == chosen.index]
        text = score_text(row)
        assert text == f"{chosen.score:.3f} [{low:.3f}, {high:.3f}] on {where}"
        assert text.replace("'", "&#39;") in page
