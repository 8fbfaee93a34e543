"""The storage contract: one suite, run against every backend (a fixture over the URLs).

Any backend (built-in or registered by a third party) must pass these; add yours to
``BACKENDS`` in ``tests/support/stores.py`` (the ``url`` fixture is in this folder's conftest).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec
import pytest

import desic
import desic.storage as ds
from desic import ir
from desic.errors import ArtifactError, ConfigError, StorageError
from desic.optimize import RunRecorder
from tests.support.stores import RECORD, make_run, url_for
from tests.support.two_teams import TRAIN, answer, triage


@pytest.fixture
def store(url: str) -> Iterator[ds.Storage]:
    s = ds.open(url)
    yield s
    s.close()


def program(instructions: str = "Route it.") -> ir.Program:
    spec = ir.SignatureSpec(
        name="route",
        instructions="Route the ticket.",
        inputs=(ir.FieldSpec(name="ticket", schema={"type": "string"}),),
        output_schema={
            "type": "object",
            "properties": {"team": {"type": "string"}},
            "required": ["team"],
        },
        output_field="team",
    )
    node = ir.Node(
        id="route",
        signature=spec,
        instructions=instructions,
        fingerprint=spec.fingerprint,
        demos=(ir.Demo(inputs={"ticket": "x"}, output={"team": "billing"}),),
    )
    return ir.Program(
        pipeline="tests:route",
        nodes=(node,),
        meta=ir.ProgramMeta(run_id="r1", score=0.75, optimizer="bootstrap"),
    )


# -- runs ----------------------------------------------------------------------------------


def test_create_and_get_run_round_trips_every_field(store: ds.Storage) -> None:
    created = make_run(
        store,
        pipeline="app:triage",
        optimizer="bootstrap",
        optimizer_config={"max_demos": 4, "seed": 3},
        seed=3,
        lm={"provider": "openai", "model": "m"},
    )
    got = store.get_run(created.id)
    assert got == created
    assert got.status == "running" and got.candidates == 0 and got.best_score is None
    assert got.created_at and got.updated_at
    assert isinstance(store, ds.Storage)


def test_duplicate_run_id_is_refused(store: ds.Storage) -> None:
    run = make_run(store)
    with pytest.raises(StorageError, match="already exists"):
        make_run(store, id=run.id)


def test_missing_run_raises_storage_error_naming_it(store: ds.Storage) -> None:
    for call in (
        lambda: store.get_run("nope"),
        lambda: store.history("nope"),
        lambda: store.update_run("nope", status="failed"),
        lambda: store.add_candidate("nope", RECORD),
        lambda: store.put_evaluation("nope", "k", {}),
        lambda: store.put_checkpoint("nope", {}),
        lambda: store.get_checkpoint("nope"),
        lambda: store.put_run_program("nope", b"{}"),
    ):
        with pytest.raises(StorageError, match="'nope'"):
            call()


def test_update_run_status_best_score_and_error(store: ds.Storage) -> None:
    run = make_run(store)
    updated = store.update_run(run.id, best_score=0.5)
    assert updated.best_score == 0.5 and updated.status == "running"
    updated = store.update_run(run.id, status="failed", error="LMError: boom")
    assert (updated.status, updated.best_score, updated.error) == ("failed", 0.5, "LMError: boom")
    assert store.get_run(run.id) == updated
    assert updated.updated_at >= run.updated_at
    with pytest.raises(ConfigError, match="status"):
        store.update_run(run.id, status="exploded")  # type: ignore[arg-type]


def test_update_run_stopped_by_a_budget_and_clearing_it(store: ds.Storage) -> None:
    run = make_run(store)
    assert run.stopped_by is None
    stopped = store.update_run(
        run.id, status="stopped", error="BudgetExceeded: budget max_calls ran out", stopped_by="max_calls"
    )
    assert (stopped.status, stopped.stopped_by) == ("stopped", "max_calls")
    assert stopped.error == "BudgetExceeded: budget max_calls ran out"
    assert store.get_run(run.id) == stopped
    assert store.update_run(run.id, best_score=0.5).stopped_by == "max_calls"  # None leaves it
    again = store.update_run(run.id, status="running", error="", stopped_by="")  # "" clears
    assert (again.status, again.error, again.stopped_by) == ("running", None, None)
    assert store.get_run(run.id) == again


def _drop_stopped_by(url: str, run_id: str) -> None:
    """Rewrite a run's record on disk as a desic without ``stopped_by`` wrote it."""
    import json
    import sqlite3

    scheme, location, _ = ds.split_url(url)
    if scheme == "sqlite":
        db = sqlite3.connect(location)
        with db:
            (info,) = db.execute("SELECT info FROM runs WHERE id = ?", (run_id,)).fetchone()
            data = json.loads(info)
            del data["stopped_by"]
            db.execute("UPDATE runs SET info = ? WHERE id = ?", (json.dumps(data).encode(), run_id))
        db.close()
    elif scheme == "tinydb":
        path = Path(location)
        doc = json.loads(path.read_text())
        for record in doc["runs"].values():
            del record["stopped_by"]
        path.write_text(json.dumps(doc))
    else:
        path = Path(location) / "runs" / run_id / "run.json"
        data = json.loads(path.read_bytes())
        del data["stopped_by"]
        path.write_text(json.dumps(data))


@pytest.mark.parametrize("backend", ["sqlite", "tinydb", "msgspec"])
def test_a_store_written_before_stopped_by_existed_still_opens(backend: str, tmp_path: Path) -> None:
    url = url_for(backend, tmp_path)
    with ds.open(url) as first:  # type: ignore[attr-defined]
        run = make_run(first, pipeline="app:triage")
        first.update_run(run.id, status="stopped", error="KeyboardInterrupt: ")
    _drop_stopped_by(url, run.id)
    with ds.open(url) as old:  # type: ignore[attr-defined]
        (found,) = old.list_runs()
        assert (found.id, found.status, found.stopped_by) == (run.id, "stopped", None)
        assert old.get_run(run.id).error == "KeyboardInterrupt: "
        assert old.update_run(run.id, status="stopped", stopped_by="max_calls").stopped_by == "max_calls"


def test_list_runs_oldest_first_with_candidate_counts(store: ds.Storage) -> None:
    ids = [
        make_run(store, id=f"run-{i}", created_at=f"2025-01-0{i + 1}T00:00:00+00:00").id
        for i in range(3)
    ]
    store.add_candidate("run-1", RECORD)
    store.add_candidate("run-1", RECORD)
    runs = store.list_runs()
    assert [r.id for r in runs] == ids
    assert [r.candidates for r in runs] == [0, 2, 0]


def test_history_keeps_order_and_exact_data(store: ds.Storage) -> None:
    run = make_run(store)
    for i in range(30):
        store.add_candidate(run.id, {**RECORD, "index": i, "score": i / 30})
    history = store.history(run.id)
    assert [c["index"] for c in history] == list(range(30))
    assert history[0] == {**RECORD, "score": 0.0}
    assert store.get_run(run.id).candidates == 30


def test_records_are_copies(store: ds.Storage) -> None:
    run = make_run(store)
    record: dict[str, Any] = {"index": 0, "program": {"nodes": [1]}}
    store.add_candidate(run.id, record)
    store.put_evaluation(run.id, "k", record)
    record["program"]["nodes"].append(2)
    store.history(run.id)[0]["program"]["nodes"].append(3)
    got = store.get_evaluation(run.id, "k")
    assert got is not None
    got["program"]["nodes"].append(4)
    assert store.history(run.id)[0]["program"] == {"nodes": [1]}
    assert store.get_evaluation(run.id, "k") == {"index": 0, "program": {"nodes": [1]}}


def test_non_json_record_is_refused(store: ds.Storage) -> None:
    run = make_run(store)
    with pytest.raises(StorageError, match="JSON"):
        store.add_candidate(run.id, {"program": object()})
    assert store.history(run.id) == []


def test_evaluations_by_key_last_put_wins_and_runs_are_separate(store: ds.Storage) -> None:
    a, b = make_run(store), make_run(store)
    assert store.get_evaluation(a.id, "k1") is None
    store.put_evaluation(a.id, "k1", {"output": {"team": "billing"}, "error": None})
    store.put_evaluation(a.id, "k2", {"output": None, "error": "boom"})
    store.put_evaluation(a.id, "k1", {"output": {"team": "shipping"}, "error": None})
    assert store.get_evaluation(a.id, "k1") == {"output": {"team": "shipping"}, "error": None}
    assert store.get_evaluation(a.id, "k2") == {"output": None, "error": "boom"}
    assert store.get_evaluation(b.id, "k1") is None


def test_checkpoint_is_replaced(store: ds.Storage) -> None:
    run = make_run(store)
    assert store.get_checkpoint(run.id) is None
    store.put_checkpoint(run.id, {"round": 1, "beam": [[0.5, "p1"]]})
    store.put_checkpoint(run.id, {"round": 2, "beam": [[0.7, "p2"]]})
    assert store.get_checkpoint(run.id) == {"round": 2, "beam": [[0.7, "p2"]]}


def test_run_program_bytes(store: ds.Storage) -> None:
    run = make_run(store)
    assert store.get_run_program(run.id) is None
    data = ir.encode_program(program())
    store.put_run_program(run.id, data)
    assert store.get_run_program(run.id) == data


# -- artifacts ---------------------------------------------------------------------------


def test_artifact_versions_latest_and_tags(store: ds.Storage) -> None:
    infos = [store.put_artifact("triage", f'{{"v":{i}}}'.encode(), meta={"i": i}) for i in range(3)]
    assert [i.version for i in infos] == [1, 2, 3]
    assert store.put_artifact("other", b"{}").version == 1
    assert ds.resolve_artifact(store, "triage").version == 3
    assert ds.resolve_artifact(store, "triage@latest").version == 3
    assert ds.resolve_artifact(store, "triage@2").meta == {"i": 1}
    store.tag_artifact("triage", 2, "prod")
    assert ds.resolve_artifact(store, "triage@prod").version == 2
    store.tag_artifact("triage", 3, "prod")  # tags move
    store.tag_artifact("triage", 3, "staging")
    assert ds.resolve_artifact(store, "triage@prod").version == 3
    listed = store.list_artifacts("triage")
    assert [(a.version, a.tags) for a in listed] == [(1, ()), (2, ()), (3, ("prod", "staging"))]
    assert [a.name for a in store.list_artifacts()] == ["other", "triage", "triage", "triage"]
    assert store.get_artifact("triage", 1) == b'{"v":0}'


def test_missing_artifacts_say_what_exists(store: ds.Storage) -> None:
    with pytest.raises(ArtifactError, match="no artifacts"):
        ds.resolve_artifact(store, "triage")
    store.put_artifact("triage", b"{}")
    with pytest.raises(ArtifactError, match="artifacts in this store: triage"):
        ds.resolve_artifact(store, "nope")
    with pytest.raises(ArtifactError, match="versions of 'triage': 1"):
        ds.resolve_artifact(store, "triage@7")
    with pytest.raises(ArtifactError, match="tagged 'prod'"):
        ds.resolve_artifact(store, "triage@prod")
    with pytest.raises(ArtifactError, match="no such version"):
        store.tag_artifact("triage", 5, "prod")
    with pytest.raises(ArtifactError):
        store.get_artifact("triage", 9)


def test_save_and_load_program(store: ds.Storage) -> None:
    p = program()
    info = ds.save_program(store, "triage", p, tags=("prod",))
    assert (info.version, info.tags) == (1, ("prod",))
    assert (
        info.meta["run_id"] == "r1"
        and info.meta["score"] == 0.75
        and info.meta["format_version"] == ir.FORMAT_VERSION
    )
    assert ds.load_program(store, "triage@prod") == p
    assert ds.load_program(store, "triage") == p


def test_names_cannot_escape_the_store(store: ds.Storage) -> None:
    for bad in ("../x", "/etc/passwd", "a/b", "..", "", ".hidden", "a\\b", "x" * 200, "a\x00b"):
        with pytest.raises(ConfigError):
            make_run(store, id=bad)
        with pytest.raises(ConfigError):
            store.put_artifact(bad, b"{}")
        with pytest.raises(ConfigError):
            ds.parse_ref(f"{bad}@1")
    with pytest.raises((ConfigError, StorageError)):  # refused or simply not found; never a path
        store.get_run("../../etc")
    store.put_artifact("ok", b"{}")
    with pytest.raises(ConfigError, match="reserved"):
        store.tag_artifact("ok", 1, "latest")
    with pytest.raises(ConfigError):
        store.tag_artifact("ok", 1, "../prod")


# -- the recorder seam -------------------------------------------------------------------------


def test_storage_recorder_records_and_replays(store: ds.Storage) -> None:
    run = make_run(store)
    recorder = ds.StorageRecorder(store, run.id)
    as_protocol: RunRecorder = recorder  # checked statically; the methods exist at runtime
    assert all(
        callable(getattr(as_protocol, m))
        for m in ("get_evaluation", "put_evaluation", "add_candidate")
    )
    recorder.put_evaluation("k", {"output": 1})
    recorder.add_candidate({**RECORD, "index": 0, "score": 0.25})
    recorder.add_candidate({**RECORD, "index": 1, "score": 0.75})
    recorder.add_candidate({**RECORD, "index": 2, "score": 0.5})
    assert store.get_run(run.id).best_score == 0.75
    recorder.checkpoint({"round": 3})
    # a resumed run replays from the start: recorded candidates are not appended again
    again = ds.StorageRecorder(store, run.id)
    assert again.get_evaluation("k") == {"output": 1}
    for i in range(4):
        again.add_candidate({**RECORD, "index": i, "score": 0.1})
    assert [c["index"] for c in store.history(run.id)] == [0, 1, 2, 3]
    assert again.replayed_candidates == 3
    assert again.last_checkpoint() == {"round": 3}


def test_reopened_store_keeps_everything(url: str) -> None:
    if url.startswith("memory"):
        url = "memory://reopen-test"
    first = ds.open(url)
    run = make_run(first, pipeline="app:triage")
    first.add_candidate(run.id, RECORD)
    first.put_evaluation(run.id, "k", {"x": 1})
    first.put_artifact("triage", b"{}")
    first.close()
    second = ds.open(url)
    assert second.get_run(run.id).pipeline == "app:triage"
    assert second.history(run.id) == [RECORD]
    assert second.get_evaluation(run.id, "k") == {"x": 1}
    assert [a.ref for a in second.list_artifacts()] == ["triage@1"]
    second.close()


def test_compile_records_run_history_and_final_program(url: str) -> None:
    compiled = desic.compile(
        triage,
        TRAIN,
        metric=desic.metrics.exact_match,
        lm=desic.testing.FunctionLM(answer),
        storage=url if not url.startswith("memory") else "memory://compile-test",
        seed=1,
    )
    store = ds.open(url if not url.startswith("memory") else "memory://compile-test")
    run = store.get_run(compiled.program.meta.run_id or "")
    assert run.status == "finished" and run.pipeline == triage.ref and run.optimizer == "bootstrap"
    assert (
        run.optimizer_config["seed"] == 1
        and run.seed == 1
        and run.lm == {"provider": "fake", "model": "function"}
    )
    assert (
        run.candidates == len(compiled.history) >= 1
        and run.best_score == compiled.history[-1].score
    )
    stored = ir.decode_program(store.get_run_program(run.id) or b"")
    assert stored == compiled.program
    assert (
        msgspec.convert(store.history(run.id)[-1]["program"], ir.Program).nodes
        == compiled.program.nodes
    )
    store.close()


def test_a_compile_stopped_by_a_budget_is_stored_as_stopped(url: str) -> None:
    url = url if not url.startswith("memory") else "memory://budget-stop-test"
    options: dict[str, Any] = {
        "metric": desic.metrics.exact_match,
        "optimizer": "bootstrap",
        "max_demos": 100,
        "concurrency": 1,
        "storage": url,
        "seed": 1,
    }
    lm = desic.testing.FunctionLM(answer)
    compiled = desic.compile(triage, TRAIN, lm=lm, max_calls=3, **options)
    assert compiled.stopped_by == "max_calls"
    store = ds.open(url)
    run = store.get_run(compiled.program.meta.run_id or "")
    assert (run.status, run.stopped_by) == ("stopped", "max_calls")
    assert run.error is not None and run.error.startswith("BudgetExceeded: budget max_calls ran out")
    assert run.candidates == len(compiled.history) >= 1  # what was scored before the stop
    assert ir.decode_program(store.get_run_program(run.id) or b"") == compiled.program
    assert [r.id for r in store.iter_runs("stopped")] == [run.id]  # type: ignore[attr-defined]

    finished = desic.compile(triage, TRAIN, lm=lm, resume=run.id, **options)  # no budget now
    assert finished.stopped_by is None and finished.program.meta.run_id == run.id
    after = store.get_run(run.id)
    assert (after.status, after.stopped_by, after.error) == ("finished", None, None)
    store.close()
