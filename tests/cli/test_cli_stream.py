"""``desic run --stream``: partial JSON lines, then the output, through the loopback server."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from desic.cli import app
from desic.testing import FakeOpenAIServer

PROJECT = textwrap.dedent(
    '''
    from pydantic import BaseModel

    import desic


    class Route(BaseModel):
        team: str
        reason: str


    @desic.signature
    def route(ticket: str) -> Route:
        """Route a customer support ticket to the team that should handle it, and say why."""
    '''
)

ROUTE = {"team": "billing", "reason": "the customer was charged twice"}


def test_run_stream_prints_partial_lines_then_the_output(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "streamproj.py").write_text(PROJECT, encoding="utf-8")
    with FakeOpenAIServer(lambda req: ROUTE, stream_chunk_chars=6) as server:
        for key, value in {"OPENAI_BASE_URL": server.url, "OPENAI_API_KEY": "test-key",
                           "DESIC_LM": "openai:fake", "DESIC_ALLOW_MODEL_REQUESTS": "1"}.items():
            monkeypatch.setenv(key, value)
        monkeypatch.chdir(tmp_path)
        monkeypatch.syspath_prepend(str(tmp_path))
        result = CliRunner().invoke(app, ["run", "streamproj:route", "--stream", "--input", '{"ticket": "charged twice"}'])
        assert result.exit_code == 0, result.output
        refused = CliRunner().invoke(app, ["run", "streamproj:route", "--stream", "--jsonl", "-"], input="{}\n")
    lines: list[Any] = [json.loads(line) for line in result.stdout.splitlines()]
    *partials, final = lines
    assert final == ROUTE
    assert len(partials) > 2 and all(set(p) == {"partial"} for p in partials)
    assert partials[-1]["partial"]["reason"].startswith("the customer")
    assert refused.exit_code == 2 and "--input" in refused.output
