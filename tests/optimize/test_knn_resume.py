"""A ``knn`` compile killed with SIGKILL resumes in a new process without repeating finished
evaluations, and ends with the program an uninterrupted run makes (pool and settings alike)."""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path

import pytest

import desic.storage as ds
from desic import ir
from tests.support import killed


def _start(tmp_path: Path, url: str, name: str, resume: str = "", by: str = "bm25") -> tuple[subprocess.Popen[str], Path, Path]:
    return killed.start(tmp_path, url, name, resume, rows=40, label_every=3, latency=0.05, optimizer="knn", k=3,
                        by=by)


@pytest.mark.parametrize("by", ["bm25", "embeddings"])
def test_a_sigkilled_knn_compile_resumes_in_a_new_process(tmp_path: Path, by: str) -> None:
    def url(name: str) -> str:
        return f"sqlite://{tmp_path}/{name}.db"

    reference, ref_log, ref_out = _start(tmp_path, url("reference"), "reference", by=by)
    victim, victim_log, _ = _start(tmp_path, url("victim"), "victim", by=by)
    calls_before_kill = killed.kill_after(victim, victim_log, 10, within=120)

    store = ds.open(url("victim"))
    (run,) = store.list_runs()
    assert run.status == "running"  # killed: nobody could mark it
    with sqlite3.connect(tmp_path / "victim.db") as db:
        recorded = int(db.execute("SELECT count(*) FROM evaluations").fetchone()[0])
    assert 9 <= recorded <= calls_before_kill

    resumed, resumed_log, resumed_out = _start(tmp_path, url("victim"), "resumed", resume=run.id, by=by)
    resumed_stdout, _ = resumed.communicate(timeout=300)
    reference.communicate(timeout=300)
    assert (resumed.returncode, reference.returncode) == (0, 0)
    total, after = killed.calls(ref_log), killed.calls(resumed_log)
    assert after == total - recorded  # no finished evaluation repeated
    assert resumed_stdout.strip() == run.id
    final, expected = (ir.decode_program(p.read_bytes()) for p in (resumed_out, ref_out))
    assert final.nodes == expected.nodes
    (node,) = final.nodes
    assert node.select is not None and node.select.per_input and len(node.select.pool) == 40
    assert node.select.by == by and len(node.select.vectors) == (40 if by == "embeddings" else 0)
    assert store.get_run(run.id).status == "finished"
    store.close()
