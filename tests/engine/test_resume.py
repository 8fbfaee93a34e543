"""Recorded evaluations are replayed: a rerun with the same recorder makes no LM calls."""

from __future__ import annotations

import desic
from desic.optimize import MemoryRecorder
from desic.testing import FunctionLM
from tests.support.two_teams import TRAIN, answer, triage


def test_rerun_with_recorder_replays_without_lm_calls() -> None:
    recorder = MemoryRecorder()
    first_lm, second_lm = FunctionLM(answer), FunctionLM(answer)
    first = desic.compile(triage, TRAIN, metric=desic.metrics.exact_match, lm=first_lm, recorder=recorder, seed=3)
    assert len(first_lm.calls) > 0
    second = desic.compile(triage, TRAIN, metric=desic.metrics.exact_match, lm=second_lm, recorder=recorder, seed=3)
    assert len(second_lm.calls) == 0
    assert second.program.nodes == first.program.nodes
    assert recorder.candidates and recorder.candidates[-1]["program"]["nodes"]


def test_partial_record_only_runs_the_missing_examples() -> None:
    recorder = MemoryRecorder()
    desic.compile(triage, TRAIN[:4], metric=desic.metrics.exact_match, lm=FunctionLM(answer), recorder=recorder, optimizer="bootstrap", max_demos=10, max_labeled=0, seed=1,
                   baseline=False)
    lm = FunctionLM(answer)
    # (no labelled demos: with them each row's program depends on the whole trainset)
    desic.compile(triage, TRAIN, metric=desic.metrics.exact_match, lm=lm, recorder=recorder, optimizer="bootstrap", max_demos=10, max_labeled=0, seed=1,
                   baseline=False)
    # the first four rows were recorded under the same (zero-shot) program: only 8 are new
    # (baseline=False: no comparison with the pipeline as written on the rows left over)
    assert len(lm.calls) == 8
