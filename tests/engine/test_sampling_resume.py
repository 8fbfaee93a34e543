"""A compile with ``ensemble=`` and ``sampling=`` killed with SIGKILL resumes in a new
process without repeating a finished evaluation (its last phases included: the ensemble
and each strategy are scored on the validation rows), and ends with the same program."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

import desic.storage as ds
from desic import ir
from tests.support import killed

OPTIONS = {"optimizer": "random_search", "num_candidates": 2, "ensemble": 2, "sampling": [{"majority": {"n": 3}}]}


@pytest.mark.parametrize("left", [6, 40], ids=["in-sampling", "in-ensemble"])
def test_a_sigkilled_compile_with_an_ensemble_and_sampling_resumes(tmp_path: Path, left: int) -> None:
    def start(name: str, resume: str = "", db: str = "") -> tuple[subprocess.Popen[str], Path, Path]:
        return killed.start(tmp_path, f"sqlite://{tmp_path}/{db or name}.db", name, resume, rows=24, label_every=3,
                            latency=0.02, **OPTIONS)

    reference, ref_log, ref_out = start("reference")
    assert reference.wait(300) == 0
    total = killed.calls(ref_log)
    victim, victim_log, _ = start("victim")
    made = killed.kill_after(victim, victim_log, total - left, within=300)

    store = ds.open(f"sqlite://{tmp_path}/victim.db")
    (run,) = store.list_runs()
    resumed, resumed_log, resumed_out = start("resumed", resume=run.id, db="victim")
    assert resumed.wait(300) == 0
    # nothing recorded runs again: only the calls after the kill, and the one row in flight
    # then (a majority vote's 3 samples at most), are made again
    assert total - made <= killed.calls(resumed_log) <= total - made + 3
    final, expected = (ir.decode_program(p.read_bytes()) for p in (resumed_out, ref_out))
    assert final.nodes == expected.nodes
    (node,) = final.nodes
    assert len(node.variants) == 1  # the ensemble survived the kill
    assert store.get_run(run.id).status == "finished"
    store.close()
