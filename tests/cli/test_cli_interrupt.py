"""Ctrl-C and SIGTERM on ``desic compile``: the process stops promptly, the run is stored as
``interrupted``, and the printed resume command works when pasted; a run whose process died
without a word shows as stale in ``desic runs list`` and ends ``desic runs watch``."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import desic
from desic.storage import RunInfo
from desic.testing import FakeOpenAIServer
from tests.cli.test_cli import PROJECT, TRAIN, answer, write_jsonl


def slow_answer(req: dict[str, Any]) -> Any:
    time.sleep(0.02)
    return answer(req)


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(slow_answer) as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path) -> Path:
    (tmp_path / "cliproj.py").write_text(PROJECT, encoding="utf-8")
    write_jsonl(tmp_path / "train.jsonl", TRAIN * 8)
    return tmp_path


def _env(server: FakeOpenAIServer) -> dict[str, str]:
    env = {**os.environ, "OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test-key",
           "DESIC_ALLOW_MODEL_REQUESTS": "1"}
    for name in ("PYTEST_CURRENT_TEST", "DESIC_STORAGE", "DESIC_TRACE"):
        env.pop(name, None)
    return env


@pytest.mark.usefixtures("ctrl_c_raises")
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_an_interrupted_compile_stops_and_its_resume_command_works(
    signum: int, server: FakeOpenAIServer, project: Path
) -> None:
    store = f"sqlite://{project / 'runs.db'}"
    args = ["compile", "cliproj:triage", "--trainset", "train.jsonl", "--metric", "exact_match",
            "--optimizer", "random_search", "--out", "triage.json", "--lm", "openai:fake",
            "--storage", store, "--concurrency", "2"]
    proc = subprocess.Popen([sys.executable, "-m", "desic", *args], cwd=project, env=_env(server),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while len(server.requests) < 10 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=60)  # promptly: a hang fails here
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "interrupted" in err and "Traceback" not in err
    seen = len(server.requests)
    time.sleep(0.2)
    assert len(server.requests) == seen  # nothing of it runs on
    (run,) = desic.storage.open(store).list_runs()
    assert run.status == "interrupted"
    hint = next(line for line in err.splitlines() if line.startswith("continue it with: "))
    command = shlex.split(hint.removeprefix("continue it with: "))
    assert command[0] == "desic" and command[-2:] == ["--resume", run.id]
    again = subprocess.run([sys.executable, "-m", "desic", *command[1:]], cwd=project, env=_env(server),
                           capture_output=True, text=True, timeout=300, check=False)
    assert again.returncode == 0, again.stderr
    assert desic.storage.open(store).get_run(run.id).status == "finished"
    assert (project / "triage.json").is_file()


def test_a_run_whose_process_died_is_stale_in_list_and_ends_watch(tmp_path: Path) -> None:
    store_url = f"msgspec://{tmp_path / 'store'}"
    store = desic.storage.open(store_url)
    store.create_run(RunInfo(id="20260101-000000-aaaaaa", pipeline="m:p", optimizer="bootstrap"))
    store.close()
    # the process was killed an hour ago: its heartbeat stopped then
    (path,) = (tmp_path / "store").rglob("run.json")
    data = json.loads(path.read_text())
    data["updated_at"] = "2026-01-01T00:00:00.000+00:00"
    path.write_text(json.dumps(data))
    env = {**os.environ}
    env.pop("PYTEST_CURRENT_TEST", None)
    listed = subprocess.run([sys.executable, "-m", "desic", "runs", "list", "--storage", store_url, "--json"],
                            capture_output=True, text=True, timeout=60, check=False, env=env)
    assert listed.returncode == 0, listed.stderr
    text = subprocess.run([sys.executable, "-m", "desic", "runs", "list", "--storage", store_url],
                          capture_output=True, text=True, timeout=60, check=False, env=env).stdout
    assert "stale" in text
    watched = subprocess.run([sys.executable, "-m", "desic", "runs", "watch", "latest", "--storage", store_url],
                             capture_output=True, text=True, timeout=60, check=False, env=env)
    assert watched.returncode != 0  # it returns (never waits forever) and says why
    assert "stale" in watched.stdout + watched.stderr
    assert json.loads(listed.stdout)  # the JSON listing still reads
