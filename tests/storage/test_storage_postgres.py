"""The ``postgresql://`` store beyond the shared contract: 8 processes writing one database at
once, the resume lease between machines (judged by the server's clock), schema migrations,
clear errors for bad URLs, and psycopg imported only when such a URL is used.

Every test runs against a real PostgreSQL server (tests/support/postgres.py)."""

from __future__ import annotations

import datetime
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import desic.storage as ds
from desic.errors import ConfigError, StorageError
from desic.storage import _postgres  # private on purpose: unit test of the schema migrations
from tests.support.postgres import PASSWORD, Server, _free_port, have_psycopg
from tests.support.stores import RECORD, make_run

N_PROCS = 8
APPENDS = 40


@pytest.fixture
def url(postgres_server: Server) -> str:
    return postgres_server.fresh_url()


def _sql(url: str, query: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Run ``query`` on the store's database directly (what another tool or an old desic did)."""
    import psycopg

    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query.encode(), params)
        return list(cur.fetchall()) if cur.description else []


def _start_together(script: str, args: list[list[str]], go: Path) -> list[str]:
    """Run ``script`` once per argument list, all released at once by ``go``; their outputs."""
    procs = [
        subprocess.Popen([sys.executable, "-c", script, *a, str(go)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for a in args
    ]
    go.touch()
    outs = []
    for p in procs:
        out, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
        outs.append(out.strip())
    return outs


# -- several processes, one database ----------------------------------------------------------

WRITER = """
import os, sys, time
import desic.storage as ds
url, run_id, proc, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
while not os.path.exists(go):  # start together
    time.sleep(0.001)
store = ds.open(url)
own = store.create_run(ds.RunInfo(id=f"own-{proc}"))
for i in range(n):
    store.add_candidate(run_id, {"proc": proc, "i": i, "pad": "x" * 300})
    store.put_evaluation(run_id, f"{proc}-{i}", {"proc": proc, "i": i})
    if i % 5 == 0:
        store.update_run(own.id, best_score=i)
store.put_artifact("shared", f'{{"proc": {proc}}}'.encode())
store.tag_artifact("shared", 1, "first")
store.close()
"""


def test_eight_processes_appending_at_once_lose_nothing(url: str, tmp_path: Path) -> None:
    store = ds.open(url)
    shared = make_run(store, id="shared")
    _start_together(WRITER, [[url, shared.id, str(p), str(APPENDS)] for p in range(N_PROCS)], tmp_path / "go")

    history = store.history(shared.id)
    assert len(history) == N_PROCS * APPENDS
    assert sorted((c["proc"], c["i"]) for c in history) == [(p, i) for p in range(N_PROCS) for i in range(APPENDS)]
    for proc in range(N_PROCS):  # each writer's appends stay in its order
        assert [c["i"] for c in history if c["proc"] == proc] == list(range(APPENDS))
        for i in range(APPENDS):
            assert store.get_evaluation(shared.id, f"{proc}-{i}") == {"proc": proc, "i": i}
    versions = store.list_artifacts("shared")
    assert [v.version for v in versions] == list(range(1, N_PROCS + 1))  # numbered once each
    assert sorted(store.get_artifact("shared", v.version) for v in versions) == sorted(
        f'{{"proc": {p}}}'.encode() for p in range(N_PROCS)
    )
    assert versions[0].tags == ("first",)
    assert {r.id for r in store.list_runs()} == {"shared", *(f"own-{p}" for p in range(N_PROCS))}
    assert all(store.get_run(f"own-{p}").best_score == (APPENDS - 1) // 5 * 5 for p in range(N_PROCS))
    assert store.get_run(shared.id).candidates == N_PROCS * APPENDS
    store.close()


OPENER = """
import os, sys, time
import desic.storage as ds
url, go = sys.argv[1], sys.argv[2]
while not os.path.exists(go):
    time.sleep(0.001)
store = ds.open(url)
print(len(store.list_runs()))
store.close()
"""


def test_machines_opening_a_new_database_at_once_create_the_tables_once(url: str, tmp_path: Path) -> None:
    outs = _start_together(OPENER, [[url]] * N_PROCS, tmp_path / "go")
    assert outs == ["0"] * N_PROCS
    assert _sql(url, "SELECT component, version FROM desic_schema") == [("store", _postgres.SCHEMA_VERSION)]


# -- the resume lease across machines ------------------------------------------------------------

MACHINE_A = "build-box-a:4242:aaaa1111"  # owners name a host that is not this one: the lease
MACHINE_B = "laptop-b:777:bbbb2222"  # cannot be broken by finding the process gone locally


def _age(url: str, run_id: str, seconds: float) -> None:
    """Make the run's last heartbeat ``seconds`` old, by the server's clock."""
    _sql(url, "UPDATE desic_runs SET updated_at = now() - make_interval(secs => %s) WHERE id = %s", (seconds, run_id))


def test_a_lease_held_by_one_machine_is_refused_to_another_until_stale(url: str) -> None:
    a, b = ds.open(url), ds.open(url)  # two machines: two connections to one database
    run = make_run(a, owner=MACHINE_A)
    assert a.update_run(run.id, lease=MACHINE_A).owner == MACHINE_A  # its holder renews it
    with pytest.raises(StorageError, match=rf"running in another process \({re.escape(MACHINE_A)}"):
        b.update_run(run.id, status="running", lease=MACHINE_B)
    a.update_run(run.id)  # a heartbeat
    _age(url, run.id, ds.STALE_SECONDS - 5)  # quiet, but not long enough
    with pytest.raises(StorageError, match="running in another process"):
        b.update_run(run.id, lease=MACHINE_B)
    assert b.get_run(run.id).owner == MACHINE_A

    _age(url, run.id, ds.STALE_SECONDS + 5)  # machine A went silent: the run is stale
    assert ds.is_stale(b.get_run(run.id))
    taken = b.update_run(run.id, status="running", error="", lease=MACHINE_B)
    assert (taken.owner, taken.status, ds.is_stale(taken)) == (MACHINE_B, "running", False)
    with pytest.raises(StorageError, match=rf"running in another process \({re.escape(MACHINE_B)}"):
        a.update_run(run.id, lease=MACHINE_A)  # A came back: B holds it now
    finished = b.update_run(run.id, status="finished")
    assert a.update_run(run.id, status="running", lease=MACHINE_A).owner == MACHINE_A  # ended: free
    assert finished.status == "finished"
    a.close()
    b.close()


def test_updated_at_comes_from_the_server_clock(url: str) -> None:
    store = ds.open(url)
    run = make_run(store)
    updated = store.update_run(run.id, best_score=0.5)
    (server_time,) = _sql(url, "SELECT updated_at FROM desic_runs WHERE id = %s", (run.id,))[0]
    assert updated.updated_at == server_time.astimezone(datetime.UTC).isoformat(timespec="milliseconds")
    assert store.get_run(run.id).updated_at == updated.updated_at
    store.close()


TAKER = """
import os, sys, time
import desic.storage as ds
from desic.errors import StorageError
url, run_id, owner, go = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
store = ds.open(url)
while not os.path.exists(go):
    time.sleep(0.001)
try:
    store.update_run(run_id, status="running", lease=owner)
    print("won")
except StorageError:
    print("refused")
"""


def test_eight_machines_resuming_a_stale_run_at_once_one_gets_it(url: str, tmp_path: Path) -> None:
    store = ds.open(url)
    run = make_run(store, owner=MACHINE_A)
    _age(url, run.id, ds.STALE_SECONDS * 2)
    owners = [f"machine-{p}:{100 + p}:tok{p}" for p in range(N_PROCS)]
    outs = _start_together(TAKER, [[url, run.id, o] for o in owners], tmp_path / "go")
    assert sorted(outs) == ["refused"] * (N_PROCS - 1) + ["won"]
    assert store.get_run(run.id).owner == owners[outs.index("won")]
    store.close()


# -- schema migrations ----------------------------------------------------------------------------


def test_an_older_schema_is_migrated_forward_and_a_newer_one_refused(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = ds.open(url)
    run = make_run(store, id="run-1")
    store.add_candidate(run.id, RECORD)
    store.close()
    assert _sql(url, "SELECT version FROM desic_schema WHERE component = 'store'") == [(1,)]

    # a later desic adds a step: opening this (now older) database runs it once, keeping the data
    step = "CREATE TABLE desic_notes (run_id TEXT, text TEXT); INSERT INTO desic_notes VALUES ('run-1', 'migrated')"
    with monkeypatch.context() as later:
        later.setattr(_postgres, "MIGRATIONS", (*_postgres.MIGRATIONS, step))
        ds.open(url).close()
        ds.open(url).close()  # already at 2: nothing runs again
        assert _sql(url, "SELECT version FROM desic_schema WHERE component = 'store'") == [(2,)]
        assert _sql(url, "SELECT * FROM desic_notes") == [("run-1", "migrated")]
        with ds.open(url) as migrated:  # type: ignore[attr-defined]
            assert migrated.history("run-1") == [RECORD]

    # this desic (schema 1) meets the database the later one left: refused, not guessed at
    with pytest.raises(StorageError, match="schema version 2, newer than this desic understands \\(1\\); upgrade desic") as err:
        ds.open(url)
    assert PASSWORD not in str(err.value)


def test_a_failed_migration_changes_nothing(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    ds.open(url).close()
    broken = "CREATE TABLE desic_half (x INT); SELECT no_such_function()"
    monkeypatch.setattr(_postgres, "MIGRATIONS", (*_postgres.MIGRATIONS, broken))
    with pytest.raises(StorageError, match="no_such_function"):
        ds.open(url)
    assert _sql(url, "SELECT to_regclass('desic_half') IS NULL") == [(True,)]
    assert _sql(url, "SELECT version FROM desic_schema") == [(1,)]


# -- bad URLs: clear errors, never the password ---------------------------------------------------


def test_a_wrong_password_names_the_url_without_it_and_says_how_to_fix(postgres_server: Server) -> None:
    db = postgres_server.create_database()
    bad = postgres_server.url(db, password="not-the-Password-42")
    with pytest.raises(ConfigError) as err:
        ds.open(bad)
    message = str(err.value)
    assert f"postgresql://desic@127.0.0.1:{postgres_server.port}/{db}" in message
    assert "password authentication failed" in message and "PGPASSWORD" in message
    assert "not-the-Password-42" not in message and PASSWORD not in message


def test_a_server_that_is_down_says_start_it(postgres_server: Server) -> None:
    port = _free_port()  # nothing listens there
    with pytest.raises(ConfigError) as err:
        ds.open(f"postgresql://desic:{PASSWORD}@127.0.0.1:{port}/desic")
    message = str(err.value)
    assert f"cannot connect to postgresql://desic@127.0.0.1:{port}/desic" in message
    assert f"start the PostgreSQL server at 127.0.0.1:{port}" in message
    assert PASSWORD not in message


def test_a_missing_database_says_create_it(postgres_server: Server) -> None:
    with pytest.raises(ConfigError, match="create the database first \\(createdb .* nosuchdb\\)"):
        ds.open(postgres_server.url("nosuchdb"))


@pytest.mark.parametrize("bad", ["postgresql://", "postgresql://u@h:notaport/db", "postgresql://u@h/db?bogus_option=1"])
def test_malformed_postgres_urls_are_config_errors(bad: str) -> None:
    if not have_psycopg():
        pytest.skip("psycopg is not installed: pip install -e '.[postgres]'")
    with pytest.raises(ConfigError, match="postgresql://"):
        ds.open(bad)


def test_the_store_url_never_holds_the_password(url: str) -> None:
    with ds.open(url) as store:  # type: ignore[attr-defined]
        assert PASSWORD not in store.url and store.url == url.replace(f":{PASSWORD}@", "@")
        assert PASSWORD not in repr(store)


# -- the single-machine path stays light ----------------------------------------------------------


def test_psycopg_is_imported_only_for_a_postgresql_url(tmp_path: Path) -> None:
    code = (
        "import sys, desic, desic.storage as ds\n"
        f"s = ds.open('sqlite://{tmp_path}/x.db'); s.list_runs(); s.close()\n"
        "from desic.lm.stores import open_store\n"
        "open_store('memory')\n"
        "assert 'psycopg' not in sys.modules, 'psycopg imported without a postgresql:// URL'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "DESIC_STORAGE": ""})


def test_without_psycopg_a_postgresql_url_says_what_to_install(tmp_path: Path) -> None:
    code = (
        "import sys; sys.modules['psycopg'] = None\n"  # as if not installed
        "import desic.storage as ds\n"
        "from desic.errors import ConfigError\n"
        "try:\n"
        "    ds.open('postgresql://u:secret@127.0.0.1:1/db')\n"
        "except ConfigError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert "pip install 'desic[postgres]'" in out and "postgresql://u@127.0.0.1:1/db" in out
    assert "secret" not in out


def test_artifacts_save_and_load_by_url_and_no_message_holds_the_password(url: str) -> None:
    import desic
    from desic.testing import FunctionLM
    from tests.support.two_teams import TRAIN, answer, triage

    compiled = desic.compile(triage, TRAIN[:4], optimizer="labeled", lm=FunctionLM(answer))
    assert compiled.save(f"{url}#triage@prod").ref == "triage@1"
    assert desic.load(f"{url}#triage@prod", pipeline=triage).program == compiled.program
    program, source = ds.load_url(f"{url}#triage@1")
    assert program == compiled.program and source == url.replace(f":{PASSWORD}@", "@") + "#triage@1"
    for bad in (lambda: compiled.save(url), lambda: compiled.save(f"{url}#triage@3"), lambda: desic.load(url)):
        with pytest.raises(ConfigError) as err:
            bad()
        assert "postgresql://desic@" in str(err.value) and PASSWORD not in str(err.value)


def test_a_compile_whose_run_another_machine_took_over_stops_and_writes_nothing_more(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Machine A paused long enough to look dead; machine B took the run over. A's next
    heartbeat is refused: A's compile stops with a StorageError and leaves the run to B."""
    import asyncio
    import threading

    import desic
    from desic import _lifecycle  # private on purpose: a fast heartbeat
    from desic.testing import FunctionLM
    from tests.support.two_teams import TRAIN, answer, triage

    monkeypatch.setattr(_lifecycle, "HEARTBEAT_SECONDS", 0.05)
    started, release = threading.Event(), threading.Event()

    async def held(request: Any) -> Any:  # A is busy in an LM call while B takes the run
        started.set()
        while not release.is_set():
            await asyncio.sleep(0.01)
        return answer(request)

    outcome: dict[str, BaseException] = {}

    def machine_a() -> None:
        try:
            desic.compile(triage, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(held), storage=url)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome["error"] = exc

    thread = threading.Thread(target=machine_a)
    thread.start()
    try:
        assert started.wait(120)
        (run_id,) = [r[0] for r in _sql(url, "SELECT id FROM desic_runs")]
        # what B's successful take-over of the (then stale) run leaves in the store
        _sql(url, "UPDATE desic_runs SET owner = %s, updated_at = clock_timestamp() WHERE id = %s", (MACHINE_B, run_id))
        thread.join(120)
    finally:
        release.set()
        thread.join(120)
    error = outcome.get("error")
    assert isinstance(error, StorageError), error
    assert f"run {run_id}" in str(error) and "taken over by another process" in str(error) and MACHINE_B in str(error)
    with ds.open(url) as store:  # type: ignore[attr-defined]
        after = store.get_run(run_id)
        assert (after.status, after.owner, after.error) == ("running", MACHINE_B, None)  # A left it to B
        assert store.get_run_program(run_id) is None
    assert not thread.is_alive()


def test_a_restarted_server_costs_one_clear_error_then_the_store_reconnects(postgres_server: Server) -> None:
    store = ds.open(postgres_server.fresh_url())
    run = make_run(store)
    postgres_server.restart()  # every session is dropped, as after a failover or a restart
    with pytest.raises(StorageError, match="the connection to PostgreSQL failed .*desic reconnects on the next call") as err:
        store.add_candidate(run.id, RECORD)
    assert PASSWORD not in str(err.value)
    store.add_candidate(run.id, RECORD)  # a new connection
    assert store.history(run.id) == [RECORD]
    store.close()
