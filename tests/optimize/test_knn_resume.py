"""A ``knn`` compile killed with SIGKILL resumes in a new process without repeating finished
evaluations, and ends with the program an uninterrupted run makes (pool and settings alike)."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import desic.storage as ds
from desic import ir

SCRIPT = textwrap.dedent(
    '''
    import sys
    from typing import Literal
    from pydantic import BaseModel
    import desic
    from desic.testing import FunctionLM, last_input

    class Route(BaseModel):
        team: Literal["billing", "shipping"]

    @desic.signature
    def route(ticket: str) -> Route:
        """Route the ticket."""

    @desic.pipeline
    def triage(ticket: str) -> Route:
        return route(ticket=ticket)

    TRAIN = [{"ticket": f"charged {i}" if i % 3 else f"parcel {i}", "team": "billing" if i % 3 else "shipping"}
             for i in range(40)]
    url, log, out, resume = sys.argv[1:5]

    def answer(request):
        text = last_input(request)
        with open(log, "a") as fh:
            fh.write(text.replace("\\n", " ")[-12:] + "\\n")
        return "billing" if "charged" in text else "shipping"

    compiled = desic.compile(
        triage, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(answer, latency=0.05), storage=url,
        resume=resume or None, optimizer="knn", k=3, concurrency=1, seed=7,
    )
    compiled.save(out)
    print(compiled.program.meta.run_id)
    '''
)


def _start(tmp_path: Path, url: str, name: str, resume: str = "") -> tuple[subprocess.Popen[str], Path, Path]:
    script = tmp_path / "job.py"
    if not script.exists():
        script.write_text(SCRIPT)
    log, out = tmp_path / f"{name}.calls", tmp_path / f"{name}.json"
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(log), str(out), resume],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DESIC_STORAGE": ""},
    )
    return proc, log, out


def _calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_a_sigkilled_knn_compile_resumes_in_a_new_process(tmp_path: Path) -> None:
    def url(name: str) -> str:
        return f"sqlite://{tmp_path}/{name}.db"

    reference, ref_log, ref_out = _start(tmp_path, url("reference"), "reference")
    victim, victim_log, _ = _start(tmp_path, url("victim"), "victim")
    deadline = time.monotonic() + 120
    while _calls(victim_log) < 10:
        assert victim.poll() is None, "the compile finished before it could be killed"
        assert time.monotonic() < deadline, "the compile made no progress"
        time.sleep(0.005)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(60) == -signal.SIGKILL
    calls_before_kill = _calls(victim_log)

    store = ds.open(url("victim"))
    (run,) = store.list_runs()
    assert run.status == "running"  # killed: nobody could mark it
    with sqlite3.connect(tmp_path / "victim.db") as db:
        recorded = int(db.execute("SELECT count(*) FROM evaluations").fetchone()[0])
    assert 9 <= recorded <= calls_before_kill

    resumed, resumed_log, resumed_out = _start(tmp_path, url("victim"), "resumed", resume=run.id)
    resumed_stdout, _ = resumed.communicate(timeout=300)
    reference.communicate(timeout=300)
    assert (resumed.returncode, reference.returncode) == (0, 0)
    total, after = _calls(ref_log), _calls(resumed_log)
    assert after == total - recorded  # no finished evaluation repeated
    assert resumed_stdout.strip() == run.id
    final, expected = (ir.decode_program(p.read_bytes()) for p in (resumed_out, ref_out))
    assert final.nodes == expected.nodes
    (node,) = final.nodes
    assert node.select is not None and node.select.per_input and len(node.select.pool) == 40
    assert store.get_run(run.id).status == "finished"
    store.close()
