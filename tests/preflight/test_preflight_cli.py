"""The ``desic`` command refuses bad data and options with one error line, before any LM call.

LM calls go to a loopback ``FakeOpenAIServer`` (its ``requests`` count what was sent).
"""

from __future__ import annotations

import json
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from desic.cli import app
from desic.testing import FakeOpenAIServer

PROJECT = textwrap.dedent(
    '''
    from typing import Literal

    from pydantic import BaseModel

    import desic


    class Route(BaseModel):
        team: Literal["billing", "shipping"]


    @desic.signature
    def route(ticket: str) -> Route:
        """Route a support ticket."""


    @desic.pipeline
    def triage(ticket: str) -> Route:
        return route(ticket=ticket)


    not_a_pipeline = 42
    '''
)

TRAIN = [{"ticket": f"charged twice {i}", "team": "billing"} for i in range(4)]
SENTIMENT = [{"ticket": f"I love it {i}", "sentiment": "positive", "stars": 5} for i in range(6)]


def answer(req: dict[str, Any]) -> Any:
    return {"team": "billing"}


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(answer) as srv:
        yield srv


@pytest.fixture
def project(tmp_path: Path, server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    (tmp_path / "pfproj.py").write_text(PROJECT, encoding="utf-8")
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in TRAIN), encoding="utf-8")
    (tmp_path / "sentiment.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SENTIMENT), encoding="utf-8")
    for key, value in {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "test-key",
        "DESIC_LM": "openai:fake",
        "DESIC_ALLOW_MODEL_REQUESTS": "1",
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DESIC_STORAGE", raising=False)
    monkeypatch.delenv("DESIC_TRACE", raising=False)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def cli(*args: str) -> Any:
    result = CliRunner().invoke(app, list(args))
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


def assert_one_line_error(result: Any, code: int, *needles: str) -> None:
    """Exit ``code``, no traceback, stderr = one ``error:`` line and its ``fix:`` line."""
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert lines[0].startswith("error: ") and lines[1].startswith("fix: ")
    for needle in needles:
        assert needle in lines[0]


def test_eval_against_another_tasks_devset_is_refused_before_any_call(project: Path, server: FakeOpenAIServer) -> None:
    before = len(server.requests)
    result = cli("eval", "pfproj:triage", "--devset", "sentiment.jsonl", "--metric", "exact_match")
    assert_one_line_error(result, 4, "row 0", "sentiment", "stars", "team")
    assert len(server.requests) == before


def test_compile_of_a_file_that_is_not_utf8_names_file_and_line(project: Path, server: FakeOpenAIServer) -> None:
    (project / "latin1.jsonl").write_bytes(b'{"ticket": "ok", "team": "billing"}\n{"ticket": "caf\xe9", "team": "billing"}\n')
    before = len(server.requests)
    result = cli("compile", "pfproj:triage", "-t", "latin1.jsonl", "-o", "out.json")
    assert_one_line_error(result, 4, "latin1.jsonl:2", "UTF-8")
    assert len(server.requests) == before


def test_compile_with_an_option_out_of_range(project: Path, server: FakeOpenAIServer) -> None:
    before = len(server.requests)
    result = cli("compile", "pfproj:triage", "-t", "train.jsonl", "-o", "out.json", "-O", "max_demos=-1")
    assert_one_line_error(result, 3, "max_demos=-1")
    assert len(server.requests) == before


def test_compile_of_something_that_is_not_a_pipeline(project: Path) -> None:
    result = cli("compile", "pfproj:not_a_pipeline", "-t", "train.jsonl", "-o", "out.json")
    assert_one_line_error(result, 1, "42")


def test_compile_with_a_label_the_output_type_refuses(project: Path, server: FakeOpenAIServer) -> None:
    (project / "bad.jsonl").write_text(
        "".join(json.dumps(r) + "\n" for r in [*TRAIN, {"ticket": "x", "team": "sales"}]), encoding="utf-8"
    )
    before = len(server.requests)
    result = cli("compile", "pfproj:triage", "-t", "bad.jsonl", "-o", "out.json", "--optimizer", "labeled")
    assert_one_line_error(result, 4, "row 4", "'team'")
    assert len(server.requests) == before


def test_run_jsonl_of_a_file_that_is_not_utf8_names_file_and_line(project: Path, server: FakeOpenAIServer) -> None:
    (project / "inputs.jsonl").write_bytes(b'{"ticket": "ok"}\n\n{"ticket": "caf\xe9"}\n')
    before = len(server.requests)
    result = cli("run", "pfproj:triage", "--jsonl", "inputs.jsonl")
    assert_one_line_error(result, 4, "inputs.jsonl:3", "UTF-8")
    assert len(server.requests) == before
