# mypy: disable-error-code="empty-body"
"""``desic runs list|show|report|watch`` on stores filled directly (no LM involved): a local
SQLite file and a shared PostgreSQL database (a real server, tests/support/postgres.py)."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from typer.testing import CliRunner

import desic
from desic import ir
from desic.cli import app
from desic.runtime import default_node
from desic.storage import RunInfo
from desic.storage import open as open_store
from tests.support.stores import url_for


@desic.signature
def classify(text: str) -> Literal["spam", "ham"]:
    """Classify the message as spam or ham."""


def program(instructions: str | None = None, demos: int = 0) -> ir.Program:
    node = default_node(classify, "classify")
    changes: dict[str, Any] = {}
    if instructions is not None:
        changes["instructions"] = instructions
    if demos:
        changes["demos"] = tuple(
            ir.Demo(inputs={"text": f"example {i}"}, output={"output": "ham"}) for i in range(demos)
        )
    node = msgspec.structs.replace(node, **changes)
    return ir.Program(pipeline="tests.test_cli_runs:classify", nodes=(node,))


def record(index: int, score: float | None, *, instructions: str | None = None, demos: int = 0) -> dict[str, Any]:
    return {
        "index": index,
        "score": score,
        "note": f"candidate {index} note",
        "usage": [10 * (index + 1), 100 * (index + 1), 20 * (index + 1), 0.001 * (index + 1)],
        "program": msgspec.to_builtins(program(instructions, demos)),
    }


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(params=["sqlite", "postgres"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgres":
        return url_for("postgres", tmp_path)
    return f"sqlite://{tmp_path / 'runs.db'}"


@pytest.fixture
def filled(store_url: str) -> str:
    """A store with a finished run of four candidates and a failed run."""
    store = open_store(store_url)
    try:
        store.create_run(RunInfo(id="20250101-000000-aaaaaa", pipeline="tests:classify", optimizer="beam", seed=3))
        scores = [0.25, 0.5, 0.75, 0.5]
        for i, score in enumerate(scores):
            store.add_candidate("20250101-000000-aaaaaa", record(i, score, instructions="Be strict." if i == 2 else None, demos=i))
        store.update_run("20250101-000000-aaaaaa", status="finished", best_score=0.75)
        store.create_run(RunInfo(id="20250102-000000-bbbbbb", pipeline="tests:classify", optimizer="bootstrap"))
        store.update_run("20250102-000000-bbbbbb", status="failed", error="LMError: the server went away")
    finally:
        store.close()
    return store_url


def test_list_shows_every_run_untruncated(filled: str) -> None:
    result = cli("runs", "list", "--storage", filled)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["run", "status", "pipeline", "optimizer", "candidates", "best", "updated"]
    assert lines[1].split()[:6] == ["20250101-000000-aaaaaa", "finished", "tests:classify", "beam", "4", "0.750"]
    assert lines[2].split()[:5] == ["20250102-000000-bbbbbb", "failed", "tests:classify", "bootstrap", "0"]
    only_failed = cli("runs", "list", "--storage", filled, "--status", "failed", "--json")
    assert [r["id"] for r in json.loads(only_failed.stdout)] == ["20250102-000000-bbbbbb"]


def test_show_finds_a_run_by_part_of_its_id(filled: str) -> None:
    result = cli("runs", "show", "aaaaaa", "--storage", filled)
    assert result.exit_code == 0, result.output
    out = result.stdout
    assert out.startswith("run 20250101-000000-aaaaaa  finished")
    assert "best score  0.750" in out
    rows = [line.split() for line in out.splitlines() if line[:1].isdigit()]
    assert [r[:3] for r in rows] == [["0", "0.250", "0.250"], ["1", "0.500", "0.500"], ["2", "0.750", "0.750"], ["3", "0.500", "0.750"]]
    data = json.loads(cli("runs", "show", "latest", "--storage", filled, "--json").stdout)
    assert data["run"]["id"] == "20250102-000000-bbbbbb" and data["run"]["error"].startswith("LMError")


def test_show_unknown_and_ambiguous_runs(filled: str) -> None:
    unknown = cli("runs", "show", "zzz", "--storage", filled)
    assert unknown.exit_code == 7 and "no run 'zzz'" in unknown.stderr
    ambiguous = cli("runs", "show", "2025", "--storage", filled)
    assert ambiguous.exit_code == 3 and "matches 2 runs" in ambiguous.stderr


def test_report_writes_one_html_file(filled: str, tmp_path: Path) -> None:
    out = tmp_path / "report.html"
    result = cli("runs", "report", "aaaaaa", "--storage", filled, "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == str(out)
    page = out.read_text()
    assert "<title>desic run 20250101-000000-aaaaaa</title>" in page
    assert page.count('<tr id="cand-') == 4
    assert "Be strict." in page  # the best candidate's instructions, in the diff and prompts


def test_watch_follows_a_run_until_it_finishes(store_url: str) -> None:
    store = open_store(store_url)
    store.create_run(RunInfo(id="live-run", pipeline="tests:classify", optimizer="beam"))
    started = threading.Event()

    def optimizer() -> None:  # another process's compile, appending as it goes
        writer = open_store(store_url)
        try:
            started.wait(5)
            for i, score in enumerate([0.2, 0.6, 0.4, 0.9]):
                time.sleep(0.12)
                writer.add_candidate("live-run", record(i, score))
            writer.update_run("live-run", status="finished", best_score=0.9)
        finally:
            writer.close()

    thread = threading.Thread(target=optimizer)
    thread.start()
    started.set()
    try:
        began = time.monotonic()
        result = cli("runs", "watch", "live-run", "--storage", store_url, "--interval", "0.05")
        took = time.monotonic() - began
    finally:
        thread.join()
        store.close()
    assert result.exit_code == 0, result.output
    lines = result.stdout.strip().splitlines()
    assert lines[0].startswith("watching run live-run")
    candidates = [line for line in lines if line.startswith("candidate ")]
    assert [line.split()[1] for line in candidates] == ["0", "1", "2", "3"]
    assert [line.split()[5] for line in candidates] == ["0.200", "0.600", "0.600", "0.900"]  # best so far
    assert lines[-1] == "run live-run finished: 4 candidates, best 0.900"
    assert took >= 0.4  # it really followed the run rather than reading it once at the end


def test_watch_a_failed_run_exits_nonzero_and_says_why(filled: str) -> None:
    result = cli("runs", "watch", "bbbbbb", "--storage", filled)
    assert result.exit_code == 1
    assert "failed" in result.stdout
    assert "the server went away" in result.stderr


def test_watch_gives_up_after_the_timeout(store_url: str) -> None:
    store = open_store(store_url)
    try:
        store.create_run(RunInfo(id="stuck", pipeline="p"))
    finally:
        store.close()
    result = cli("runs", "watch", "stuck", "--storage", store_url, "--interval", "0.05", "--timeout", "0.2")
    assert result.exit_code == 1  # a run that stopped updating is a problem, said so
    assert "run stuck stopped updating: no new candidate or heartbeat for 0.2s (--timeout)" in result.stderr
    assert "--resume stuck" in result.stderr


def test_watch_draws_a_live_table_on_a_terminal(filled: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")
    monkeypatch.setenv("TERM", "xterm-256color")
    result = cli("runs", "watch", "aaaaaa", "--storage", filled)
    assert result.exit_code == 0, result.output
    assert "run 20250101-000000-aaaaaa · tests:classify · beam · best 0.750" in result.stdout
    assert "candidate 3 note" in result.stdout
    assert "watching run" not in result.stdout  # the table replaces the plain lines


@pytest.fixture
def with_stops(store_url: str) -> str:
    """A store with a run a budget stopped (program kept) and one interrupted by Ctrl-C."""
    store = open_store(store_url)
    try:
        store.create_run(RunInfo(id="20250103-000000-cccccc", pipeline="tests:classify", optimizer="beam"))
        for i, score in enumerate([0.25, 0.5]):
            store.add_candidate("20250103-000000-cccccc", record(i, score))
        store.put_run_program("20250103-000000-cccccc", ir.encode_program(program()))
        store.update_run(
            "20250103-000000-cccccc",
            status="stopped",
            best_score=0.5,
            error="BudgetExceeded: budget max_calls ran out: 12 LM calls made (budget 10)",
            stopped_by="max_calls",
        )
        store.create_run(RunInfo(id="20250104-000000-dddddd", pipeline="tests:classify", optimizer="beam"))
        store.update_run("20250104-000000-dddddd", status="stopped", error="KeyboardInterrupt: ")
    finally:
        store.close()
    return store_url


def test_a_budget_stopped_run_is_listed_and_shown_as_stopped(with_stops: str) -> None:
    listed = cli("runs", "list", "--storage", with_stops)
    assert listed.exit_code == 0, listed.output
    rows = [line.split() for line in listed.stdout.splitlines()[1:]]
    assert rows[0][:3] == ["20250103-000000-cccccc", "stopped", "(max_calls)"]
    assert rows[1][:3] == ["20250104-000000-dddddd", "stopped", "tests:classify"]  # no budget named
    stopped = json.loads(cli("runs", "list", "--storage", with_stops, "--status", "stopped", "--json").stdout)
    assert [(r["id"][-6:], r["stopped_by"]) for r in stopped] == [("cccccc", "max_calls"), ("dddddd", None)]

    shown = cli("runs", "show", "cccccc", "--storage", with_stops)
    assert shown.exit_code == 0, shown.output
    out = shown.stdout
    assert out.startswith("run 20250103-000000-cccccc  stopped (max_calls)")
    assert "stopped by  the max_calls budget" in out
    assert "reason      BudgetExceeded: budget max_calls ran out" in out
    assert "program     kept with the run (the best found before the budget ran out)" in out
    data = json.loads(cli("runs", "show", "cccccc", "--storage", with_stops, "--json").stdout)
    assert (data["run"]["status"], data["run"]["stopped_by"]) == ("stopped", "max_calls")


def test_watch_a_budget_stopped_run_ends_cleanly_an_interrupted_one_does_not(with_stops: str) -> None:
    budget = cli("runs", "watch", "cccccc", "--storage", with_stops)
    assert budget.exit_code == 0, budget.output
    assert "run 20250103-000000-cccccc stopped (max_calls): 2 candidates, best 0.500" in budget.stdout
    assert "reason: BudgetExceeded" in budget.stderr
    interrupted = cli("runs", "watch", "dddddd", "--storage", with_stops)
    assert interrupted.exit_code == 1
    assert "reason: KeyboardInterrupt" in interrupted.stderr


def test_report_of_a_budget_stopped_run_names_the_budget(with_stops: str, tmp_path: Path) -> None:
    out = tmp_path / "stopped.html"
    result = cli("runs", "report", "cccccc", "--storage", with_stops, "--out", str(out))
    assert result.exit_code == 0, result.output
    page = out.read_text()
    assert "<b>stopped (max_calls)</b><span>status</span>" in page
    assert "<dt>stopped by budget</dt><dd>max_calls</dd>" in page
    assert "<dt>reason</dt><dd>BudgetExceeded: budget max_calls ran out" in page


def test_doctor_checks_a_postgres_store_without_showing_its_password(tmp_path: Path) -> None:
    from tests.support.postgres import PASSWORD

    url = url_for("postgres", tmp_path)
    shown = url.replace(f":{PASSWORD}@", "@")
    ok = cli("doctor", "--offline", "--storage", url)
    assert f"{shown}: writable, 0 runs, 0 artifacts" in ok.output and PASSWORD not in ok.output
    bad = cli("doctor", "--offline", "--storage", url.replace(PASSWORD, "wrong-pw"))
    assert f"cannot connect to {shown}" in bad.output and "PGPASSWORD" in bad.output
    assert "wrong-pw" not in bad.output and bad.exit_code != 0


def test_the_resume_hint_for_a_postgres_store_from_the_environment_holds_no_password() -> None:
    from desic.cli._commands import resume_command  # private: the hint printed after Ctrl-C

    hint = resume_command(["compile", "app:triage"], "postgresql://alice:s3cret@db.example:5432/desic", "r1")
    assert hint == "desic compile app:triage --storage postgresql://alice@db.example:5432/desic --resume r1"
