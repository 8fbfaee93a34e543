# mypy: disable-error-code="empty-body"
"""``desic.lm.cache``: content-addressed answers on disk (sqlite, WAL) or in memory."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import CacheLM, LMParams, LMRequest
from desic.lm.stores import MemoryStore, SqliteStore, default_cache_dir, sqlite_store
from desic.testing import FakeLM, FakeOpenAIServer, FunctionLM, allow_model_requests, last_input


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture(autouse=True)
def _isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("DESIC_CACHE_DIR", str(tmp_path / "cache"))
    with allow_model_requests():
        yield


def counting_lm(name: str = "counting") -> FunctionLM:
    return FunctionLM(lambda r: "billing" if "money" in last_input(r) else "tech", name=name)


def request(text: str, **fields: Any) -> LMRequest:
    return LMRequest(
        messages=({"role": "user", "content": text},), response_model=team.response_model(), **fields
    )


def ask(lm: Any, req: LMRequest) -> Any:
    return asyncio.run(lm.request(req))


@pytest.mark.parametrize("store", ["memory", True], ids=["memory", "disk"])
def test_a_repeated_request_is_answered_from_the_cache(store: Any) -> None:
    inner = counting_lm()
    lm = desic.lm(inner, cache=store)
    assert isinstance(lm, CacheLM)
    first = ask(lm, request("money back"))
    second = ask(lm, request("money back"))
    assert len(inner.calls) == 1
    assert second.value == first.value and second.raw == first.raw
    assert second.meta["cached"] is True and "cached" not in first.meta
    assert second.usage.calls == 0 and second.usage.cost == 0  # no call was made
    assert second.meta["cached_usage"] == first.usage
    ask(lm, request("crash"))
    assert len(inner.calls) == 2
    assert (lm.hits, lm.misses) == (1, 2)


def test_disk_cache_lives_under_desic_cache_dir_and_survives_the_lm(tmp_path: Path) -> None:
    ask(desic.lm(counting_lm(), cache=True), request("money"))
    assert (tmp_path / "cache" / "lm.sqlite3").is_file()
    assert default_cache_dir() == tmp_path / "cache"
    again = counting_lm()
    response = ask(desic.lm(again, cache=True), request("money"))
    assert response.meta["cached"] and again.calls == []


def test_a_path_names_the_sqlite_file_or_its_directory(tmp_path: Path) -> None:
    as_file: Any = desic.lm(counting_lm(), cache=tmp_path / "mine.db")
    as_dir: Any = desic.lm(counting_lm(), cache=str(tmp_path / "dir"))
    assert isinstance(as_file.store, SqliteStore) and as_file.store.path == (tmp_path / "mine.db").resolve()
    assert isinstance(as_dir.store, SqliteStore) and as_dir.store.path.name == "lm.sqlite3"
    assert isinstance(desic.lm.cache(counting_lm(), "memory").store, MemoryStore)
    with pytest.raises(ValueError, match="cache="):
        desic.lm(counting_lm(), cache=3.5)


def test_the_key_covers_everything_that_changes_the_answer() -> None:
    inner = counting_lm()
    lm = desic.lm.cache(inner, "memory")
    base = request("crash")
    variants = [
        base,
        request("crash!"),  # messages
        request("crash", params=LMParams(temperature=0.7)),  # params
        request("crash", params=LMParams(model="other")),
        LMRequest(messages=base.messages, response_model=team.response_model("chain_of_thought")),
        request("crash", sample=1),  # an explicit second sample
        request("crash", sample=2),
    ]
    for req in variants:
        ask(lm, req)
    assert len(inner.calls) == len(variants)
    for req in variants:  # and each is now cached on its own
        assert ask(lm, req).meta["cached"]
    assert len(inner.calls) == len(variants)
    # a different model (describe()) never shares entries
    other = counting_lm(name="other-model")
    ask(desic.lm(other, cache=lm.store), base)
    assert len(other.calls) == 1


def test_node_ids_do_not_split_the_cache() -> None:
    inner = counting_lm()
    lm = desic.lm(inner, cache="memory")
    ask(lm, request("crash", node_id="a"))
    assert ask(lm, request("crash", node_id="b")).meta["cached"]


def test_samples_give_distinct_entries_and_cache_false_bypasses() -> None:
    counter = iter(range(100))
    inner = FunctionLM(lambda r: "billing" if next(counter) % 2 else "tech")
    lm = desic.lm(inner, cache="memory")
    samples = [ask(lm, request("q", sample=i)).value for i in range(4)]
    assert [s.output for s in samples] == ["tech", "billing", "tech", "billing"]
    assert [ask(lm, request("q", sample=i)).value for i in range(4)] == samples  # all cached
    fresh = ask(lm, request("q", cache=False))
    assert "cached" not in fresh.meta and len(inner.calls) == 5
    assert ask(lm, request("q")).value == samples[0]  # the bypass stored nothing


def test_failures_are_not_cached() -> None:
    answers: Iterator[Exception | str] = iter([desic.RateLimited("429"), "tech"])

    def flaky(r: LMRequest) -> str:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return answer

    lm = desic.lm(FunctionLM(flaky), cache="memory")
    with pytest.raises(desic.RateLimited):
        ask(lm, request("x"))
    assert ask(lm, request("x")).value.output == "tech"


def test_a_cache_hit_runs_no_retry_throttle_or_timeout() -> None:
    inner = FakeLM(default="tech", latency=0.3)
    lm: Any = desic.lm(inner, cache="memory", rps=1, retries=2, timeout=1)
    assert [type(x).__name__ for x in (lm, lm.inner, lm.inner.inner, lm.inner.inner.inner)] == [
        "CacheLM", "RetryLM", "ThrottleLM", "TimeoutLM",
    ]
    with desic.context(lm=lm):
        for _ in range(5):
            assert team(ticket="same") == "tech"
    assert len(inner.calls) == 1


def test_unreadable_entries_are_ignored() -> None:
    store = MemoryStore()
    lm = desic.lm(counting_lm(), cache=store)
    ask(lm, request("x"))
    for key in list(store._data):
        store.put(key, b"not json")
    assert "cached" not in ask(lm, request("x")).meta


def test_embeddings_are_cached_per_text() -> None:
    inner = FakeLM()
    lm = desic.lm(inner, cache="memory")
    first = lm.embed_sync(["a", "b"])
    second = lm.embed_sync(["b", "c", "a"])
    assert second[0] == first[1] and second[2] == first[0]
    assert inner.embed_calls == [["a", "b"], ["c"]]


def test_embedding_models_do_not_share_entries() -> None:
    store = MemoryStore()
    with FakeOpenAIServer() as server:
        small: Any = desic.lm("openai:m", base_url=server.url, api_key="x", cache=store)
        large: Any = desic.lm(
            "openai:m", base_url=server.url, api_key="x", cache=store, embedding_model="large"
        )
        small.embed_sync(["same text"])
        large.embed_sync(["same text"])
        small.embed_sync(["same text"])
        assert [r["model"] for r in server.requests] == ["text-embedding-3-small", "large"]


# --- secrets --------------------------------------------------------------------------------


def test_no_secret_reaches_the_cache_file(tmp_path: Path) -> None:
    key, password, token = "sk-SECRET-cache-0123456789", "hunter2pw", "tok-SECRET-q"
    path = tmp_path / "secrets.sqlite3"
    with FakeOpenAIServer(handler=lambda req: {"output": "tech"}) as server:
        port = server.url.split(":")[-1].split("/")[0]
        lm: Any = desic.lm(
            "openai:fake-model",
            api_key=key,
            base_url=f"http://admin:{password}@127.0.0.1:{port}/v1?token={token}",
            cache=path,
        )
        with desic.context(lm=lm):
            assert team(ticket="crash") == "tech"
            assert team(ticket="crash") == "tech"
        lm.embed_sync(["some text"])
        assert server.counts["ok"] == 2
        assert server.requests[0]["_path"].endswith(f"?token={token}")  # the secrets were in use
    assert isinstance(lm.store, SqliteStore)
    assert len(lm.store) == 2  # the answer and the embedding
    lm.store.close()
    data = b"".join(p.read_bytes() for p in tmp_path.iterdir() if p.name.startswith("secrets"))
    assert b'"tech"' in data  # the file holds the entries (checkpointed from the WAL)
    for secret in (key, password, token, "admin:", "Bearer"):
        assert secret.encode() not in data, secret


# --- threads and processes --------------------------------------------------------------------


def test_threads_share_one_sqlite_store_safely(tmp_path: Path) -> None:
    store = sqlite_store(tmp_path / "threads.sqlite3")
    assert sqlite_store(tmp_path / "threads.sqlite3") is store  # one per file and process
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            for i in range(100):
                store.put(f"{n}-{i}", f"{n}:{i}".encode())
                assert store.get(f"{n}-{i}") == f"{n}:{i}".encode()
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and len(store) == 800


_WRITER = """
import sys, time
from desic.lm.stores import SqliteStore
start = float(sys.argv[3])
while time.time() < start:  # all processes open the new file at the same moment
    pass
store = SqliteStore(sys.argv[1])
proc = sys.argv[2]
for i in range(150):
    store.put(f"{proc}-{i}", proc.encode() * 50)
    assert store.get(f"{proc}-{i}") == proc.encode() * 50
print("ok")
"""


def test_processes_share_one_sqlite_file_safely(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite3"
    start = time.time() + 2.0
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WRITER, str(path), str(p), str(start)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for p in range(6)
    ]
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    store = SqliteStore(path)
    assert len(store) == 900
    assert store.get("3-149") == b"3" * 50
    mode = store._connection().execute("PRAGMA journal_mode").fetchone()[0]
    assert mode == "wal"


def test_busy_database_is_retried_and_other_errors_are_not(tmp_path: Path) -> None:
    # sqlite answers "database is locked" at once, without its busy wait, to a process
    # that would deadlock (two processes switching one new file to WAL); the store retries.
    store = SqliteStore(tmp_path / "busy.sqlite3", busy_timeout=5.0)
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) < 3:
            raise sqlite3.OperationalError("database is locked")
        return "done"

    assert store._retry_busy(flaky) == "done" and len(attempts) == 3

    def broken() -> None:
        attempts.append(1)
        raise sqlite3.OperationalError("no such table: entries")

    attempts.clear()
    with pytest.raises(sqlite3.OperationalError, match="no such table"):
        store._retry_busy(broken)
    assert len(attempts) == 1

    impatient = SqliteStore(tmp_path / "busy.sqlite3", busy_timeout=0.05)

    def always_locked() -> None:
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(sqlite3.OperationalError, match="locked"):
        impatient._retry_busy(always_locked)


# --- through a compile ------------------------------------------------------------------------


class Ticket(BaseModel):
    team: Literal["billing", "tech"]


@desic.signature
def summarize(ticket: str) -> str:
    """Summarize the ticket in a few words."""


@desic.signature
def route(summary: str) -> Ticket:
    """Route the summarized ticket."""


@desic.pipeline
def triage(ticket: str) -> Ticket:
    return route(summary=summarize(ticket=ticket))


def triage_handler(req: dict[str, Any]) -> dict[str, Any]:
    text = req["messages"][-1]["content"]
    props = req["response_format"]["json_schema"]["schema"]["properties"]
    if "team" in props:
        return {"team": "billing" if "money" in text else "tech"}
    return {"output": text.split(":", 1)[-1].strip()[:40]}


TRAIN = [
    {"ticket": "I want my money back", "team": "billing"},
    {"ticket": "the app crashes", "team": "tech"},
    {"ticket": "money taken twice", "team": "billing"},
    {"ticket": "login broken", "team": "tech"},
]


def test_a_cached_rerun_of_a_finished_compile_makes_no_lm_call(tmp_path: Path) -> None:
    with FakeOpenAIServer(handler=triage_handler) as server:

        def compile_once() -> desic.CompiledPipeline[..., Any]:
            lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", cache=tmp_path / "c")
            return desic.compile(
                triage, TRAIN, metric=desic.metrics.exact_match, valset=TRAIN[:2], lm=lm, seed=3
            )

        first = compile_once()
        calls = server.counts["requests"]
        assert calls > 0
        second = compile_once()
        assert server.counts["requests"] == calls  # not one more
    assert second.program.nodes == first.program.nodes
    assert second.score == first.score == 1.0
