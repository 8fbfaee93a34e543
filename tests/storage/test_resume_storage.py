"""Resuming a stored compile run: nothing finished is repeated, the result is the same.

In-process interruptions (an exception escaping the optimizer) for every backend, and a
real crash: a compile process killed with SIGKILL, then resumed by a new process.
"""

from __future__ import annotations

import sqlite3
import subprocess
from pathlib import Path
from typing import Any

import msgspec
import pytest

import desic
import desic.storage as ds
from desic import ir
from desic.errors import ConfigError
from desic.optimize import MemoryRecorder
from desic.testing import FunctionLM
from tests.support import killed
from tests.support.stores import BACKENDS, url_for
from tests.support.two_teams import TRAIN, answer, triage


class Crash(BaseException):
    """Stands for the process dying: not an ``Exception``, so no evaluation swallows it."""


def crashing_after(n: int) -> FunctionLM:
    def fn(request: Any) -> Any:
        if len(lm.calls) > n:
            raise Crash
        return answer(request)

    lm = FunctionLM(fn)
    return lm


OPTIONS: dict[str, Any] = {
    "metric": desic.metrics.exact_match,
    "optimizer": "bootstrap",
    "max_demos": 100,
    "concurrency": 1,
    "seed": 5,
}


@pytest.mark.parametrize("backend", BACKENDS)
def test_interrupted_run_resumes_without_repeating(backend: str, tmp_path: Path) -> None:
    url = url_for(backend, tmp_path) if backend != "memory" else f"memory://resume-{tmp_path.name}"
    reference_lm = FunctionLM(answer)
    reference = desic.compile(triage, TRAIN, lm=reference_lm, **OPTIONS)
    total = len(reference_lm.calls)
    # one run discovers the node (for the labelled demos shown while bootstrapping), then every
    # row; then the comparison with the pipeline as written: zero-shot on every row but the
    # first (the discovery run), and the program on every row without its own demo
    assert total == 1 + len(TRAIN) + (len(TRAIN) - 1) + len(TRAIN)

    with pytest.raises(Crash):
        desic.compile(triage, TRAIN, lm=crashing_after(5), storage=url, **OPTIONS)
    store = ds.open(url)
    (run,) = store.list_runs()
    assert run.status == "failed" and run.error == "Crash: " and run.candidates == 0

    lm = FunctionLM(answer)
    resumed = desic.compile(triage, TRAIN, lm=lm, storage=url, resume=run.id, **OPTIONS)
    assert len(lm.calls) == total - 5  # the 5 finished evaluations were replayed, not repeated
    assert resumed.program.nodes == reference.program.nodes
    assert resumed.program.meta.run_id == run.id
    after = store.get_run(run.id)
    assert (after.status, after.candidates, after.best_score) == (
        "finished",
        len(resumed.history),  # bootstrap's program, the two comparison scores, the choice
        resumed.history[-1].score,
    )
    assert ir.decode_program(store.get_run_program(run.id) or b"") == resumed.program

    again = FunctionLM(answer)  # resuming a finished run replays all of it
    desic.compile(triage, TRAIN, lm=again, storage=url, resume=run.id, **OPTIONS)
    assert len(again.calls) == 0 and store.get_run(run.id).candidates == len(resumed.history) == 4
    store.close()


def test_each_new_run_gets_a_fresh_id(tmp_path: Path) -> None:
    url = url_for("sqlite", tmp_path)
    ids = {
        desic.compile(
            triage, TRAIN[:2], lm=FunctionLM(answer), storage=url, **OPTIONS
        ).program.meta.run_id
        for _ in range(3)
    }
    assert len(ids) == 3
    assert {r.id for r in ds.open(url).list_runs()} == ids


def test_resume_refuses_different_settings(tmp_path: Path) -> None:
    url = url_for("sqlite", tmp_path)
    run_id = desic.compile(
        triage, TRAIN[:4], lm=FunctionLM(answer), storage=url, **OPTIONS
    ).program.meta.run_id
    with pytest.raises(
        ConfigError, match=r"different settings[\s\S]*seed: run has 5, this compile has 6"
    ):
        desic.compile(
            triage,
            TRAIN[:4],
            lm=FunctionLM(answer),
            storage=url,
            resume=run_id,
            **{**OPTIONS, "seed": 6},
        )
    with pytest.raises(ConfigError, match="optimizer_config"):
        desic.compile(
            triage,
            TRAIN[:4],
            lm=FunctionLM(answer),
            storage=url,
            resume=run_id,
            **{**OPTIONS, "max_demos": 3},
        )
    assert (
        ds.open(url).get_run(run_id or "").status == "finished"
    )  # a refused resume leaves the run alone


def test_resume_of_an_unknown_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match=r"cannot resume run 'nope': no run 'nope' in sqlite://"):
        desic.compile(
            triage,
            TRAIN[:2],
            lm=FunctionLM(answer),
            storage=url_for("sqlite", tmp_path),
            resume="nope",
            **OPTIONS,
        )
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESIC_STORAGE", raising=False)
    with pytest.raises(
        ConfigError, match=r"no run 'nope' in sqlite://\.desic/desic\.db"
    ):  # the default store
        desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), resume="nope", **OPTIONS)
    with pytest.raises(ConfigError, match="invalid run id"):
        desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), resume="../x", **OPTIONS)


def test_storage_from_context_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DESIC_STORAGE", raising=False)
    plain = desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), **OPTIONS)
    assert plain.program.meta.run_id and not any(
        tmp_path.iterdir()
    )  # nothing configured, nothing written

    with desic.context(storage=url_for("tinydb", tmp_path)):
        in_context = desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), **OPTIONS)
    assert (
        ds.open(url_for("tinydb", tmp_path)).get_run(in_context.program.meta.run_id or "").status
        == "finished"
    )

    monkeypatch.setenv("DESIC_STORAGE", url_for("msgspec", tmp_path))
    from_env = desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), **OPTIONS)
    assert (
        ds.open(url_for("msgspec", tmp_path)).get_run(from_env.program.meta.run_id or "").status
        == "finished"
    )

    recorder = MemoryRecorder()  # an explicit recorder wins over the environment's store
    desic.compile(triage, TRAIN[:2], lm=FunctionLM(answer), recorder=recorder, **OPTIONS)
    assert recorder.candidates and len(ds.open(url_for("msgspec", tmp_path)).list_runs()) == 1
    with pytest.raises(ConfigError, match="either storage= .* or recorder="):
        desic.compile(
            triage,
            TRAIN[:2],
            lm=FunctionLM(answer),
            recorder=recorder,
            storage="memory://",
            **OPTIONS,
        )


# -- a real crash: SIGKILL -----------------------------------------------------------------------

def _start(tmp_path: Path, url: str, name: str, resume: str = "") -> tuple[subprocess.Popen[str], Path, Path]:
    return killed.start(
        tmp_path, url, name, resume, rows=30, label_every=2, latency=0.02, optimizer="bootstrap", max_demos=100,
        baseline=False,  # the calls counted are the bootstrap pass's (the comparison after replays too: test_optimizers)
    )


def _recorded_evaluations(backend: str, tmp_path: Path, name: str, url: str) -> int:
    if backend == "postgres":
        import psycopg

        with psycopg.connect(url) as conn:
            return int(conn.execute("SELECT count(*) FROM desic_evaluations").fetchone()[0])  # type: ignore[index]
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / f"{name}.db") as db:
            return int(db.execute("SELECT count(*) FROM evaluations").fetchone()[0])
    data = msgspec.json.decode((tmp_path / f"{name}.json.db").read_bytes())
    return len(data.get("evaluations", {}))


@pytest.mark.parametrize("backend", ["sqlite", "tinydb", "postgres"])
def test_sigkilled_compile_resumes_in_a_new_process(backend: str, tmp_path: Path) -> None:
    databases: dict[str, str] = {}  # postgres: a database per name on the session's server

    def store_url(name: str) -> str:
        if backend == "postgres":
            return databases.setdefault(name, url_for("postgres", tmp_path))
        return (
            f"sqlite://{tmp_path}/{name}.db"
            if backend == "sqlite"
            else f"tinydb://{tmp_path}/{name}.json.db"
        )

    reference, ref_log, ref_out = _start(tmp_path, store_url("reference"), "reference")
    victim, victim_log, _ = _start(tmp_path, store_url("victim"), "victim")
    calls_before_kill = killed.kill_after(victim, victim_log, 10, within=120)

    store = ds.open(store_url("victim"))
    (run,) = store.list_runs()
    assert run.status == "running"  # killed: nobody could mark it
    recorded = _recorded_evaluations(backend, tmp_path, "victim", store_url("victim"))
    assert 9 <= recorded <= calls_before_kill

    resumed, resumed_log, resumed_out = _start(
        tmp_path, store_url("victim"), "resumed", resume=run.id
    )
    resumed_stdout, _ = resumed.communicate(timeout=60)
    reference.communicate(timeout=60)
    assert (resumed.returncode, reference.returncode) == (0, 0)
    total, calls_after_resume = killed.calls(ref_log), killed.calls(resumed_log)
    assert total == 1 + 30  # the discovering run, then the 30 rows
    assert calls_after_resume == total - recorded  # no finished evaluation repeated
    assert calls_before_kill + calls_after_resume <= total + 1  # at most the one in flight
    assert resumed_stdout.strip() == run.id
    final, expected = (ir.decode_program(p.read_bytes()) for p in (resumed_out, ref_out))
    assert final.nodes == expected.nodes and final.edges == expected.edges
    assert final.meta.run_id == run.id != expected.meta.run_id
    assert store.get_run(run.id).status == "finished"
    store.close()
