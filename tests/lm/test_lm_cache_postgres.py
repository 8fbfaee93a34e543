# mypy: disable-error-code="empty-body"
"""The LM answer cache in PostgreSQL (``cache="postgresql://..."``): one team's machines answer
a question once between them; stats, prune and clear; a server that is down turns the cache
off with a warning instead of failing calls. Against a real server (tests/support/postgres.py)."""

from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
from typing import Any, Literal

import pytest

import desic
from desic.lm import CacheLM, LMRequest
from desic.lm.stores import open_store, postgres_cache
from desic.testing import FunctionLM, last_input
from tests.support.postgres import PASSWORD, Server, _free_port, require_psycopg

DAY = 86400.0


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture
def url(postgres_server: Server) -> str:
    return postgres_server.fresh_url()


def counting_lm() -> FunctionLM:
    return FunctionLM(lambda r: "billing" if "money" in last_input(r) else "tech", name="counting")


def ask(lm: Any, text: str) -> Any:
    request = LMRequest(messages=({"role": "user", "content": text},), response_model=team.response_model())
    return asyncio.run(lm.request(request))


def test_a_repeated_request_is_answered_from_the_shared_cache(url: str) -> None:
    inner = counting_lm()
    lm = desic.lm(inner, cache=url)
    assert isinstance(lm, CacheLM)
    first = ask(lm, "money back")
    second = ask(lm, "money back")
    assert len(inner.calls) == 1 and first.value == second.value
    assert second.meta.get("cached") is True


ASKER = """
import asyncio, sys
import desic
from desic.lm import LMRequest
from desic.testing import FunctionLM, allow_model_requests, last_input
from typing import Literal

@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    \"\"\"Name the team for the ticket.\"\"\"

inner = FunctionLM(lambda r: "billing" if "money" in last_input(r) else "tech", name="counting")
lm = desic.lm(inner, cache=sys.argv[1])
request = LMRequest(messages=({"role": "user", "content": "money back"},), response_model=team.response_model())
asyncio.run(lm.request(request))
print(len(inner.calls))
"""


def test_another_machine_gets_the_answer_without_calling_the_lm(url: str) -> None:
    ask(desic.lm(counting_lm(), cache=url), "money back")
    other = subprocess.run([sys.executable, "-c", ASKER, url], check=True, capture_output=True, text=True)
    assert other.stdout.strip() == "0"  # answered by the cache the first machine filled


def _fill(url: str, entries: dict[str, tuple[int, float]]) -> None:
    """``{key: (value size, created)}``: put each value, then backdate it in SQL."""
    import psycopg

    store = open_store(url)
    for key, (size, _) in entries.items():
        store.put(key, key[:1].encode() * size)
    with psycopg.connect(url, autocommit=True) as conn:
        for key, (_, created) in entries.items():
            conn.execute("UPDATE desic_lm_cache SET created = %s WHERE key = %s", (created, key))


def test_stats_prune_and_clear(url: str) -> None:
    now = time.time()
    _fill(url, {"a": (10, now - 40 * DAY), "b": (20, now - 3 * DAY), "c": (30, now - 2 * DAY), "d": (40, now - DAY)})
    store = postgres_cache(url)
    stats = store.stats()
    assert (stats.entries, stats.value_bytes) == (4, 100)
    assert stats.oldest == pytest.approx(now - 40 * DAY) and stats.newest == pytest.approx(now - DAY)
    assert stats.file_bytes > 0 and stats.path == url.replace(f":{PASSWORD}@", "@")
    assert store.prune(older_than=30 * DAY) == 1  # a
    assert store.prune(max_entries=2) == 1  # b, the oldest left
    assert store.prune(max_bytes=40) == 1  # c: d alone fits
    assert store.get("d") == b"d" * 40 and store.get("c") is None
    with pytest.raises(ValueError, match="negative"):
        store.prune(max_entries=-1)
    assert store.clear(vacuum=True) == 1
    assert store.stats().entries == 0
    store.close()


def test_a_server_that_is_down_turns_the_cache_off_with_one_warning(caplog: pytest.LogCaptureFixture) -> None:
    require_psycopg()
    down = f"postgresql://desic:{PASSWORD}@127.0.0.1:{_free_port()}/desic"
    inner = counting_lm()
    lm = desic.lm(inner, cache=down)
    with caplog.at_level(logging.WARNING, logger="desic.lm"):
        ask(lm, "money back")
        ask(lm, "money back")
    assert len(inner.calls) == 2  # every call went to the LM; none failed
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "the cache is off" in warnings[0] and "start the PostgreSQL server" in warnings[0]
    assert PASSWORD not in warnings[0]


# --- desic cache info|prune|clear --cache postgresql://... -----------------------------------------


def cli(*args: str) -> Any:
    from typer.testing import CliRunner

    from desic.cli import app

    return CliRunner().invoke(app, list(args))


def test_the_cache_commands_work_on_a_shared_cache(url: str) -> None:
    now = time.time()
    _fill(url, {"a": (100, now - 40 * DAY), "b": (200, now - DAY), "c": (300, now)})
    shown = url.replace(f":{PASSWORD}@", "@")

    info = cli("cache", "info", "--cache", url)
    assert info.exit_code == 0, info.output
    assert f"path     {shown}" in info.output and "entries  3" in info.output and PASSWORD not in info.output
    as_json = json.loads(cli("cache", "info", "--cache", url, "--json").output)
    assert (as_json["path"], as_json["entries"], as_json["value_bytes"]) == (shown, 3, 600)

    pruned = cli("cache", "prune", "--cache", url, "--older-than", "30d")
    assert pruned.exit_code == 0 and f"removed 1 of 3 entries from {shown}; 2 left" in pruned.output
    pruned = cli("cache", "prune", "--cache", url, "--max-entries", "1", "--vacuum")
    assert pruned.exit_code == 0 and "removed 1 of 2 entries" in pruned.output

    refused = cli("cache", "clear", "--cache", url)
    assert refused.exit_code == 2 and shown in refused.output and PASSWORD not in refused.output
    cleared = cli("cache", "clear", "--cache", url, "--yes")
    assert cleared.exit_code == 0 and f"removed 1 entry from {shown}" in cleared.output
    assert postgres_cache(url).stats().entries == 0


def test_a_wrong_password_on_the_command_line_says_how_to_fix(postgres_server: Server) -> None:
    bad = postgres_server.url(postgres_server.create_database(), password="wrong-Secret-9")
    result = cli("cache", "info", "--cache", bad)
    assert result.exit_code == 3, result.output  # a ConfigError
    assert "password authentication failed" in result.output and "PGPASSWORD" in result.output
    assert "wrong-Secret-9" not in result.output
