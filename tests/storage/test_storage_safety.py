"""Storage safety: URLs and their errors, third-party backends, corruption, schema versions,
atomic rewrites, several processes writing at once, and no secret ever written."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import desic
import desic.storage as ds
from desic.errors import ArtifactError, ConfigError, LMError, StorageError
from desic.storage import _sqlite  # private on purpose: unit test of the schema migrations
from desic.storage._memory import MemoryStorage  # private: reused as a complete backend
from desic.testing import FakeOpenAIServer, FunctionLM, allow_model_requests
from tests.support.stores import RECORD, make_run, url_for
from tests.support.two_teams import TRAIN, answer, triage

FILE_BACKENDS = ["sqlite", "tinydb", "msgspec"]


# -- URLs -------------------------------------------------------------------------------------


def test_unknown_scheme_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(
        ConfigError, match=r"unknown storage scheme 'redis'.*known: .*postgresql.*sqlite.*register"
    ):
        ds.open("redis://db")


@pytest.mark.parametrize("bad", ["not a url", ".desic/desic.db", "SQLITE//x", ""])
def test_malformed_url(bad: str) -> None:
    with pytest.raises(ConfigError, match="expected scheme://location"):
        ds.open(bad)


@pytest.mark.parametrize("scheme", ["sqlite", "tinydb", "msgspec"])
def test_empty_location(scheme: str) -> None:
    with pytest.raises(ConfigError, match=rf"{scheme}:// needs a"):
        ds.open(f"{scheme}://")


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_unwritable_location_is_a_config_error(backend: str, tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    with pytest.raises(ConfigError, match="writable"):
        ds.open(url_for(backend, blocker / "sub"))


def test_default_url_comes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("DESIC_STORAGE", raising=False)
    assert ds.default_url() == "sqlite://.desic/desic.db"
    monkeypatch.setenv("DESIC_STORAGE", f"tinydb://{tmp_path}/d.json")
    store = ds.open()
    assert store.url == f"tinydb://{tmp_path}/d.json"
    store.close()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DESIC_STORAGE")
    with ds.open() as default:  # type: ignore[attr-defined]
        assert isinstance(default, ds.BaseStorage)
    assert (tmp_path / ".desic" / "desic.db").exists()


def test_split_url_and_fragment() -> None:
    assert ds.split_url("sqlite://.desic/desic.db#triage@prod") == (
        "sqlite",
        ".desic/desic.db",
        "triage@prod",
    )
    assert ds.split_url("sqlite:///abs/x.db") == ("sqlite", "/abs/x.db", None)
    assert ds.is_url("memory://") and not ds.is_url("/tmp/x.json") and not ds.is_url(Path("x"))


# -- third-party backends ------------------------------------------------------------------------


class Incomplete:
    url = "half://"

    def create_run(self, info: Any) -> Any:
        return info


class Stubbed(ds.Storage):  # inherits the protocol's stub bodies: not an implementation
    url = "stub://"


class Custom(MemoryStorage):
    """A complete backend (it reuses the memory one) under its own scheme."""

    def __init__(self, location: str):
        super().__init__(f"custom-{location}")
        self.url = f"custom://{location}"


def test_incomplete_backend_is_refused_at_registration() -> None:
    with pytest.raises(ConfigError, match=r"Incomplete for 'half'://.*get_run, list_runs"):
        ds.register("half", Incomplete)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="Stubbed.*create_run"):
        ds.register("stub", Stubbed)  # type: ignore[arg-type]
    assert "half" not in ds.schemes() and "stub" not in ds.schemes()
    with pytest.raises(ConfigError, match="invalid storage scheme"):
        ds.register("Bad Scheme", Custom)
    with pytest.raises(ConfigError, match="callable"):
        ds.register("x", 42)  # type: ignore[arg-type]


def test_factory_returning_an_incomplete_store_is_refused_at_open() -> None:
    ds.register("halffn", lambda location: Incomplete())  # type: ignore[arg-type,return-value]
    try:
        with pytest.raises(ConfigError, match="does not implement get_run"):
            ds.open("halffn://x")
    finally:
        ds._registry.pop("halffn")


def test_registered_backend_serves_open_and_compile() -> None:
    ds.register("custom", Custom)
    try:
        compiled = desic.compile(
            triage,
            TRAIN[:4],
            metric=desic.metrics.exact_match,
            lm=FunctionLM(answer),
            storage="custom://one",
        )
        store = ds.open("custom://one")
        assert isinstance(store, Custom)
        assert store.get_run(compiled.program.meta.run_id or "").status == "finished"
    finally:
        ds._registry.pop("custom")


# -- corruption: an error naming the file, never a silent reset ----------------------------------


def _populate(url: str) -> ds.RunInfo:
    store = ds.open(url)
    run = make_run(store, id="run-1")
    for i in range(60):
        store.add_candidate(run.id, {**RECORD, "index": i, "note": "n" * 200})
        store.put_evaluation(run.id, f"k{i}", {"output": "o" * 200})
    store.put_artifact("triage", b'{"x": 1}')
    store.close()
    return run


def test_tinydb_garbage_and_truncation(tmp_path: Path) -> None:
    url = url_for("tinydb", tmp_path)
    path = tmp_path / "store.json"
    _populate(url)
    whole = path.read_bytes()
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(StorageError, match=rf"{path}.*corrupt or truncated"):
        ds.open(url)
    assert path.read_bytes() == whole[: len(whole) // 2]  # untouched
    path.write_bytes(b"")
    with pytest.raises(StorageError, match=str(path)):
        ds.open(url)


def test_sqlite_garbage_and_truncation(tmp_path: Path) -> None:
    url = url_for("sqlite", tmp_path)
    path = tmp_path / "store.db"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(StorageError, match=rf"{path} is not a usable desic SQLite store"):
        ds.open(url)
    assert path.read_bytes() == b"this is not a database" * 100
    path.unlink()
    _populate(url)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(StorageError, match=str(path)):
        store = ds.open(url)
        store.history("run-1")
        store.list_artifacts()


def test_msgspec_corrupt_files_are_named(tmp_path: Path) -> None:
    url = url_for("msgspec", tmp_path)
    run = _populate(url)
    folder = tmp_path / "store" / "runs" / run.id
    candidates = folder / "candidates.jsonl"
    whole = candidates.read_bytes()
    candidates.write_bytes(whole[:-40])  # a torn last line
    store = ds.open(url)
    with pytest.raises(StorageError, match=rf"{candidates} is truncated: line 60 is incomplete"):
        store.history(run.id)
    lines = whole.splitlines(keepends=True)
    candidates.write_bytes(b"".join(lines[:2]) + b"{not json\n" + b"".join(lines[3:]))
    with pytest.raises(StorageError, match=rf"{candidates} is corrupt at line 3"):
        store.history(run.id)
    (folder / "run.json").write_bytes(b"{")
    with pytest.raises(StorageError, match=rf"{folder / 'run.json'} is corrupt"):
        store.get_run(run.id)
    (folder / "evaluations.jsonl").write_bytes(b"[1, 2]\n")
    with pytest.raises(StorageError, match="evaluations.jsonl is corrupt at line 1"):
        store.get_evaluation(run.id, "k1")
    index = tmp_path / "store" / "artifacts" / "triage" / "index.json"
    index.write_bytes(b"[")
    with pytest.raises(StorageError, match=str(index)):
        store.list_artifacts()


def test_msgspec_refuses_a_folder_that_is_not_a_store(tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(ConfigError, match="not a desic store"):
        ds.open(f"msgspec://{tmp_path}/mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_tampered_artifact_fails_its_hash(backend: str, tmp_path: Path) -> None:
    url = url_for(backend, tmp_path)
    store = ds.open(url)
    store.put_artifact("triage", b'{"format": "desic.program", "format_version": 1}')
    store.close()
    evil = b'{"format": "desic.program", "format_version": 2}'
    if backend == "msgspec":
        (tmp_path / "store" / "artifacts" / "triage" / "v1.json").write_bytes(evil)
    elif backend == "sqlite":
        with sqlite3.connect(tmp_path / "store.db") as db:
            db.execute("UPDATE artifacts SET data = ?", (evil,))
        db.close()
    else:
        path = tmp_path / "store.json"
        tampered = path.read_bytes().replace(b'format_version\\": 1', b'format_version\\": 2')
        assert tampered != path.read_bytes()
        path.write_bytes(tampered)
    with pytest.raises(
        ArtifactError, match=r"triage@1 is corrupt: its bytes do not match the sha256"
    ):
        ds.load_program(ds.open(url), "triage@1")


# -- schema versions -------------------------------------------------------------------------------


def test_newer_store_formats_are_refused(tmp_path: Path) -> None:
    _populate(url_for("sqlite", tmp_path))
    with sqlite3.connect(tmp_path / "store.db") as db:
        db.execute("UPDATE desic_schema SET version = 99")
    db.close()
    with pytest.raises(StorageError, match="schema 99, newer than this desic understands"):
        ds.open(url_for("sqlite", tmp_path))

    ds.open(url_for("tinydb", tmp_path)).close()
    path = tmp_path / "store.json"
    path.write_bytes(path.read_bytes().replace(b'"format":1', b'"format":99'))
    with pytest.raises(StorageError, match="format 99, newer"):
        ds.open(url_for("tinydb", tmp_path))

    ds.open(url_for("msgspec", tmp_path)).close()
    (tmp_path / "store" / "desic-store.json").write_bytes(b'{"store": "desic", "format": 99}')
    with pytest.raises(StorageError, match="format 99, newer"):
        ds.open(url_for("msgspec", tmp_path))


def test_sqlite_migrations_run_once_in_order(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = url_for("sqlite", tmp_path)
    _populate(url)

    def version() -> Any:
        return (
            sqlite3.connect(tmp_path / "store.db")
            .execute("SELECT version FROM desic_schema")
            .fetchone()[0]
        )

    assert version() == _sqlite.SCHEMA_VERSION == 1
    extra = "CREATE TABLE notes (run_id TEXT, text TEXT); INSERT INTO notes VALUES ('run-1', 'migrated')"
    monkeypatch.setattr(_sqlite, "MIGRATIONS", (*_sqlite.MIGRATIONS, extra))
    monkeypatch.setattr(_sqlite, "SCHEMA_VERSION", 2)
    store = ds.open(url)
    store.close()
    ds.open(url).close()  # already at 2: nothing runs again
    assert version() == 2
    rows = sqlite3.connect(tmp_path / "store.db").execute("SELECT * FROM notes").fetchall()
    assert rows == [("run-1", "migrated")]
    assert len(ds.open(url).history("run-1")) == 60


# -- atomic rewrites -----------------------------------------------------------------------------


def test_failed_rewrite_leaves_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "doc.json"
    ds.atomic_write(target, b'{"v": 1}')

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(StorageError, match=rf"cannot write {target}: No space left"):
        ds.atomic_write(target, b'{"v": 2}')
    assert target.read_bytes() == b'{"v": 1}'
    assert [p.name for p in tmp_path.iterdir()] == ["doc.json"]  # no temporary file left behind


# -- several processes at once -------------------------------------------------------------------

N_PROCS = 4
APPENDS = {"sqlite": 60, "msgspec": 60, "tinydb": 15}


WRITER = """
import os, sys, time
import desic.storage as ds
url, run_id, proc, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
store = ds.open(url)
while not os.path.exists(go):  # start together
    time.sleep(0.001)
own = store.create_run(ds.RunInfo(id=f"own-{proc}"))
for i in range(n):
    store.add_candidate(run_id, {"proc": proc, "i": i, "pad": "x" * 300})
    store.put_evaluation(run_id, f"{proc}-{i}", {"proc": proc, "i": i})
    if i % 5 == 0:
        store.update_run(own.id, best_score=i)
store.put_artifact("shared", f'{{"proc": {proc}}}'.encode())
store.close()
"""


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_concurrent_processes_lose_nothing(backend: str, tmp_path: Path) -> None:
    url = url_for(backend, tmp_path)
    store = ds.open(url)
    shared = make_run(store, id="shared")
    n = APPENDS[backend]
    go = tmp_path / "go"
    procs = [
        subprocess.Popen([sys.executable, "-c", WRITER, url, shared.id, str(p), str(n), str(go)])
        for p in range(N_PROCS)
    ]
    go.touch()
    assert [p.wait(60) for p in procs] == [0] * N_PROCS

    history = store.history(shared.id)
    assert len(history) == N_PROCS * n
    assert sorted((c["proc"], c["i"]) for c in history) == [
        (p, i) for p in range(N_PROCS) for i in range(n)
    ]
    for proc in range(N_PROCS):  # each writer's appends stay in its order
        assert [c["i"] for c in history if c["proc"] == proc] == list(range(n))
    for proc in range(N_PROCS):
        for i in range(n):
            assert store.get_evaluation(shared.id, f"{proc}-{i}") == {"proc": proc, "i": i}
    versions = store.list_artifacts("shared")
    assert [v.version for v in versions] == [1, 2, 3, 4]
    assert sorted(store.get_artifact("shared", v.version) for v in versions) == [
        f'{{"proc": {p}}}'.encode() for p in range(4)
    ]
    assert {r.id for r in store.list_runs()} == {"shared", *(f"own-{p}" for p in range(N_PROCS))}
    assert all(store.get_run(f"own-{p}").best_score == (n - 1) // 5 * 5 for p in range(N_PROCS))
    store.close()


# -- secrets -----------------------------------------------------------------------------------------

KEY = "sk-SECRET-0123456789abcdefXYZ"
ENV_SECRET = "hunter2-not-a-pattern-but-a-secret"


def _all_bytes(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


@pytest.mark.parametrize("backend", FILE_BACKENDS)
def test_no_secret_is_ever_written(
    backend: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ACME_API_KEY", ENV_SECRET)
    root = tmp_path / "store-root"
    root.mkdir()
    url = url_for(backend, root)
    with FakeOpenAIServer() as server, allow_model_requests():
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key=KEY, mode="json_schema")
        compiled = desic.compile(
            triage, TRAIN[:4], metric=desic.metrics.exact_match, lm=lm, storage=url, concurrency=2
        )
        assert server.requests  # the key really was in use
    compiled.save(f"{url}#triage@prod")

    def leaky(request: Any) -> str:  # a provider error that echoes credentials back
        raise LMError(f"401 invalid key {KEY} (Authorization: Bearer {KEY}) env {ENV_SECRET}")

    with pytest.raises(LMError, match="max_errors=0"):  # an LM failure is an error, never a score
        desic.compile(
            triage, TRAIN[:2], metric=desic.metrics.exact_match, lm=FunctionLM(leaky), storage=url,
            max_errors=0,
        )

    class LeakyOptimizer:  # crashes with credentials in its message
        name = "leaky"

        def config(self) -> dict[str, Any]:
            return {}

        async def optimize(self, task: Any) -> Any:
            await task.run(task.trainset, None)
            raise RuntimeError(f"optimizer crashed holding {KEY} and {ENV_SECRET}")

    with pytest.raises(RuntimeError):
        desic.compile(triage, TRAIN[:2], optimizer=LeakyOptimizer(), lm=FunctionLM(answer), storage=url)
    written = _all_bytes(root)
    assert written  # something was stored
    for secret in (KEY, KEY[3:], ENV_SECRET):
        assert secret.encode() not in written
    store = ds.open(url)
    runs = store.list_runs()
    assert [r.status for r in runs] == ["finished", "failed", "failed"]
    assert (runs[2].error or "").count("<redacted>") == 2
    assert "401 invalid key <redacted>" in (runs[1].error or "")  # the LM's error was kept, scrubbed
