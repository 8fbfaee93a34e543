"""Resume and save hold up: one resume at a time, the same trainset, a finished run is not
run again; saving reports every failure as a StorageError, cleans what a killed save
left, and writes with the user's umask."""

from __future__ import annotations

import os
import stat
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.storage import atomic_write
from desic.testing import FunctionLM
from tests.support.house_rule import ROWS, answer, triage
from tests.support.stores import url_for

BACKENDS = ["memory", "sqlite", "tinydb", "msgspec", "postgres"]
OPTIONS: dict[str, Any] = {"metric": desic.metrics.exact_match, "optimizer": "random_search", "num_candidates": 4}


def _url(backend: str, root: Path) -> str:
    return f"memory://guard-{uuid.uuid4().hex}" if backend == "memory" else url_for(backend, root)


def _stopped_run(url: str) -> str:
    """A run stopped early by its budget (resumable)."""
    compiled = desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"), storage=url, max_calls=20, **OPTIONS)
    assert compiled.stopped_by == "max_calls"
    run_id = compiled.program.meta.run_id
    assert run_id
    return run_id


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_second_resume_of_a_running_run_is_refused(backend: str, tmp_path: Path) -> None:
    url = _url(backend, tmp_path)
    run_id = _stopped_run(url)
    started, release = threading.Event(), threading.Event()

    def held(request: LMRequest) -> Any:  # the first resume waits here while the second tries
        started.set()
        release.wait(30)
        return answer(request)

    first: dict[str, Any] = {}

    def resume_first() -> None:
        try:
            first["compiled"] = desic.compile(triage, ROWS, lm=FunctionLM(held, name="m"), storage=url,
                                              resume=run_id, **OPTIONS)
        except BaseException as exc:  # noqa: BLE001 - checked below
            first["error"] = exc

    thread = threading.Thread(target=resume_first)
    thread.start()
    try:
        assert started.wait(30)
        with pytest.raises(desic.ConfigError, match="running in another process"):
            desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"), storage=url, resume=run_id, **OPTIONS)
    finally:
        release.set()
        thread.join(60)
    assert "error" not in first, first.get("error")
    store = desic.storage.open(url)
    indices = [c["index"] for c in store.history(run_id)]
    assert indices == sorted(set(indices))  # no candidate twice
    assert store.get_run(run_id).status == "finished"


def test_resuming_with_another_trainset_is_refused(tmp_path: Path) -> None:
    url = url_for("sqlite", tmp_path)
    run_id = _stopped_run(url)
    other = [dict(r, ticket=r["ticket"] + "!") for r in ROWS]
    with pytest.raises(desic.ConfigError, match="trainset"):
        desic.compile(triage, other, lm=FunctionLM(answer, name="m"), storage=url, resume=run_id, **OPTIONS)


def test_resuming_a_finished_run_returns_its_program_without_work(tmp_path: Path) -> None:
    url = url_for("sqlite", tmp_path)
    done = desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"), storage=url, **OPTIONS)
    run_id = done.program.meta.run_id
    assert run_id

    def never(request: LMRequest) -> Any:
        raise AssertionError("a finished run made an LM call")

    again = desic.compile(triage, ROWS, lm=FunctionLM(never, name="m"), storage=url, resume=run_id, **OPTIONS)
    assert again.program == done.program
    assert len(desic.storage.open(url).history(run_id)) == len(done.history)


# --- saving ------------------------------------------------------------------------------------


def test_saving_where_nothing_can_be_written_is_a_storage_error(tmp_path: Path) -> None:
    compiled = desic.compile(triage, ROWS[:4], optimizer="labeled", lm=FunctionLM(answer, name="m"))
    for target in (Path("/sys/kernel/triage.json"), tmp_path / "a-file" / "triage.json"):
        (tmp_path / "a-file").write_text("not a folder")
        with pytest.raises(desic.StorageError, match=str(target.parent)):
            compiled.save(target)
    with pytest.raises(desic.StorageError):
        atomic_write(tmp_path / "a-file" / "x.json", b"{}")


def test_a_killed_save_leaves_nothing_behind_after_the_next(tmp_path: Path) -> None:
    compiled = desic.compile(triage, ROWS[:4], optimizer="labeled", lm=FunctionLM(answer, name="m"))
    target = tmp_path / "triage.json"
    # what a save killed between write and rename leaves: a temp file of a process now gone
    orphan = tmp_path / ".triage.json.999999999.abc.tmp"
    orphan.write_bytes(b"half")
    unrelated = tmp_path / ".other.json.1.x.tmp"
    unrelated.write_bytes(b"not ours")
    compiled.save(target)
    assert not orphan.exists()
    assert unrelated.exists()  # only the target's own leftovers are removed
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([".other.json.1.x.tmp", "triage.json"])


def test_artifacts_are_written_with_the_umask(tmp_path: Path) -> None:
    compiled = desic.compile(triage, ROWS[:4], optimizer="labeled", lm=FunctionLM(answer, name="m"))
    old = os.umask(0o022)
    try:
        path = compiled.save(tmp_path / "triage.json")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


@pytest.mark.parametrize("backend", ["tinydb", "msgspec"])
def test_a_read_only_store_is_refused_not_replaced(backend: str, tmp_path: Path) -> None:
    url = url_for(backend, tmp_path)
    store = desic.storage.open(url)
    run = store.create_run(desic.storage.RunInfo(id="20260101-000000-bbbbbb", pipeline="m:p"))
    files = [p for p in tmp_path.rglob("*") if p.is_file() and p.suffix == ".json"]
    before = {p: p.read_bytes() for p in files}
    for p in files:
        p.chmod(0o444)
    with pytest.raises(desic.StorageError, match="read-only"):
        store.update_run(run.id, status="finished")
    assert {p: p.read_bytes() for p in files} == before
