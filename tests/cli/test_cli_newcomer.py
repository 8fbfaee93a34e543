"""A newcomer's first hour with the ``desic`` command (issue 15): prompts without an LM,
the LM options (cache, retries, rps, base URL), doctor's checks, ``runs watch`` on a dead
run, and help without ``<bool>``. LM calls go to the loopback fake OpenAI server."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from desic.storage import RunInfo
from desic.storage import open as open_store
from desic.testing import FakeOpenAIServer
from tests.cli.test_cli import COMMANDS, cli, env, project, server  # noqa: F401 - fixtures
from tests.support.hang import deadline

REPO = Path(__file__).resolve().parents[2]


# --- 7: prompts of a bare signature, no LM ---------------------------------------------------


def test_prompts_of_a_bare_signature_render_without_any_lm(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("DESIC_LM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "DESIC_ALLOW_MODEL_REQUESTS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    target = f"{REPO / 'examples' / 'orders.py'}:order_ref"
    plain = cli("prompts", target)
    assert plain.exit_code == 0, plain.output
    assert "(1 node)" in plain.stdout and "=== node order_ref ===" in plain.stdout
    assert "ticket: {ticket}" in plain.stdout
    filled = cli("prompts", target, "--input", '{"ticket": "where is order #85642?"}')
    assert filled.exit_code == 0, filled.output
    assert "ticket: where is order #85642?" in filled.stdout
    assert "Find the order number the customer mentions" in filled.stdout


def test_prompts_with_input_never_call_the_lm_for_a_signature(env: dict[str, str], server: FakeOpenAIServer) -> None:  # noqa: F811
    before = len(server.requests)
    result = cli("prompts", "cliproj:route", "--input", '{"ticket": "parcel lost"}', "--lm", "openai:fake")
    assert result.exit_code == 0, result.output
    assert "ticket: parcel lost" in result.stdout
    assert len(server.requests) == before


# --- 9: --cache, --retries, --rps, --base-url and their environment variables ---------------


def test_eval_rerun_with_the_cache_costs_no_lm_call(
    env: dict[str, str], server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch, tmp_path: Path  # noqa: F811
) -> None:
    monkeypatch.setenv("DESIC_CACHE_DIR", str(tmp_path / "cache"))
    args = ["eval", "cliproj:triage", "-d", "dev.jsonl", "--retries", "2", "--rps", "1000"]
    before = len(server.requests)
    first = cli(*args, "--cache")
    assert first.exit_code == 0, first.output
    assert len(server.requests) - before == 4
    assert "(0 errors, 4 LM calls" in first.stdout
    again = cli(*args, "--cache")
    assert again.exit_code == 0, again.output
    assert len(server.requests) - before == 4  # every answer came from the cache
    assert "0 LM calls" in again.stdout and again.stdout.startswith("score 1.000 on 4 examples")
    monkeypatch.setenv("DESIC_CACHE", "1")  # the environment's equivalent
    assert cli(*args).exit_code == 0
    assert len(server.requests) - before == 4
    assert cli(*args, "--no-cache").exit_code == 0  # the flag wins over the variable
    assert len(server.requests) - before == 8


def test_base_url_option_and_variable_reach_the_server(
    env: dict[str, str], server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch  # noqa: F811
) -> None:
    monkeypatch.delenv("OPENAI_BASE_URL")
    monkeypatch.delenv("OPENAI_API_KEY")
    before = len(server.requests)
    given = cli("run", "cliproj:triage", "--input", '{"ticket": "invoice"}', "--base-url", server.url)
    assert given.exit_code == 0, given.output
    monkeypatch.setenv("DESIC_BASE_URL", server.url)
    from_env = cli("run", "cliproj:triage", "--input", '{"ticket": "parcel"}')
    assert from_env.exit_code == 0, from_env.output
    assert len(server.requests) - before == 2


@pytest.mark.parametrize(
    ("name", "value"), [("DESIC_RPS", "fast"), ("DESIC_RETRIES", "-1"), ("DESIC_CACHE", "maybe"), ("DESIC_RPS", "0")]
)
def test_a_bad_lm_variable_is_named(name: str, value: str, env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    monkeypatch.setenv(name, value)
    result = cli("run", "cliproj:triage", "--input", '{"ticket": "x"}')
    assert result.exit_code == 3, result.output
    assert f"{name}={value!r}" in result.stderr
    assert f"fix: fix or unset {name}" in result.stderr


# --- 10: doctor --------------------------------------------------------------------------------


def test_doctor_refuses_a_store_under_a_file(env: dict[str, str], tmp_path: Path) -> None:  # noqa: F811
    afile = tmp_path / "hostname"
    afile.write_text("not a folder")
    result = cli("doctor", "--offline", "--storage", f"sqlite://{afile}/x.db")
    assert result.exit_code == 7, result.output
    line = next(line for line in result.stdout.splitlines() if " storage " in line)
    assert line.startswith("FAIL") and "is a file, not a folder" in line
    assert "will be created" not in result.stdout


def test_doctor_names_a_failing_lm_once(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: F811
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    result = cli("doctor", "--lm", "openai:foo", "--storage", "memory://")
    assert result.exit_code == 6, result.output
    line = next(line for line in result.stdout.splitlines() if line.startswith("FAIL  lm"))
    assert "openai:foo" in line and "openai:foo: openai:foo" not in line


# --- 12: runs watch on a run whose process died -------------------------------------------------


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_watch_stops_at_once_when_the_run_process_is_gone(tmp_path: Path) -> None:
    url = f"sqlite://{tmp_path / 'runs.db'}"
    store = open_store(url)
    try:
        store.create_run(RunInfo(id="orphan", pipeline="p", optimizer="beam"))
        store.update_run("orphan", lease=f"{socket.gethostname()}:{_dead_pid()}:abc")
    finally:
        store.close()
    with deadline(60):  # without the check this waits forever
        result = cli("runs", "watch", "orphan", "--storage", url, "--interval", "0.05")
    assert result.exit_code == 1, result.output
    assert "run orphan is marked running but its process" in result.stderr and "is gone" in result.stderr
    assert f"--storage {url} --resume orphan" in result.stderr


def test_watch_has_a_default_timeout_for_a_silent_run() -> None:
    result = cli("runs", "watch", "--help")
    assert "--timeout" in result.stdout and "[default: 120.0" in result.stdout
    assert "not been updated" in result.stdout


# --- 11: help ----------------------------------------------------------------------------------


@pytest.mark.parametrize("command", COMMANDS + [["cache", "prune"], ["cache", "clear"]], ids=lambda c: " ".join(c) or "desic")
def test_help_shows_no_bool_metavar(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0
    assert "<bool>" not in result.stdout


def test_help_lists_the_lm_options_with_their_variables() -> None:
    for command in ("compile", "eval", "run"):
        text = " ".join(cli(command, "--help").stdout.split())
        for option, variable in (("--cache / --no-cache", "DESIC_CACHE"), ("--retries", "DESIC_RETRIES"),
                                 ("--rps", "DESIC_RPS"), ("--base-url", "DESIC_BASE_URL")):
            assert option in text and variable in text, (command, option)


def test_the_cli_reads_the_lm_variables_in_one_place() -> None:
    """Only desic/cli/_lm.py names DESIC_CACHE, DESIC_RETRIES, DESIC_RPS, DESIC_BASE_URL in code."""
    names = ("DESIC_CACHE\"", "DESIC_RETRIES", "DESIC_RPS", "DESIC_BASE_URL")
    readers = sorted(
        str(p.relative_to(REPO)) for p in (REPO / "desic").rglob("*.py")
        if any(n in p.read_text(encoding="utf-8") for n in names)
    )
    assert readers == [os.path.join("desic", "cli", "_lm.py")]
