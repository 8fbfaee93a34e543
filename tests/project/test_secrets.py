# mypy: disable-error-code="empty-body"
"""No credential leaves through anything desic writes.

The API key comes from OPENAI_API_KEY, a user and password sit in the base URL, and the
server echoes the key back in its error texts (as real providers do). A compile and an
evaluation, with DEBUG logging captured, a JSONL trace, the logging sink, a sqlite run
store and a saved artifact, and the same through the command line: none of the bytes
desic wrote (files, logs, report rows, CLI output) holds the key or the password.
"""

from __future__ import annotations

import base64
import json
import logging
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import desic
from desic import events
from desic.cli import app
from desic.sinks import JsonlSink, LoggingSink
from desic.testing import FakeOpenAIServer, HTTPFault, allow_model_requests

# Neither looks like an ``sk-`` key: only knowing the secrets can keep them out.
KEY = "acme-live-key-0123456789abcdef"
USER = "gateway-user"
PASSWORD = "p4ss-Wd-9876543210"
BASIC = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
SECRETS = (KEY, PASSWORD, BASIC)


class Ticket(BaseModel):
    team: Literal["billing", "tech"]


@desic.signature
def route(ticket: str) -> Ticket:
    """Route the ticket to a team."""


@desic.pipeline
def triage(ticket: str) -> Ticket:
    return route(ticket=ticket)


TRAIN = [
    {"ticket": "I want my money back", "team": "billing"},
    {"ticket": "the app crashes", "team": "tech"},
    {"ticket": "money taken twice", "team": "billing"},
    {"ticket": "login broken", "team": "tech"},
    {"ticket": "leak: refused by the gateway", "team": "tech"},
    {"ticket": "flaky: the upstream is down", "team": "tech"},
]
DEV = [
    {"ticket": "money gone", "team": "billing"},
    {"ticket": "screen black", "team": "tech"},
    {"ticket": "leak: again", "team": "billing"},
    {"ticket": "flaky: again", "team": "tech"},
]


def handler(req: dict[str, Any]) -> dict[str, str]:
    """Routes by keyword; 'leak' tickets get a 400 and 'flaky' ones a 500 echoing the key."""
    text = next(m["content"] for m in reversed(req["messages"]) if m["role"] == "user")
    if "leak" in text:
        raise HTTPFault(400, f"Incorrect API key provided: {KEY}. Authorization: Basic {BASIC}")
    if "flaky" in text:
        raise HTTPFault(500, f"upstream refused the key {KEY} (user {USER}:{PASSWORD})")
    return {"team": "billing" if "money" in text else "tech"}


@pytest.fixture
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(handler=handler) as srv:
        yield srv


@pytest.fixture
def credentials(server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """The key in OPENAI_API_KEY and user:password in OPENAI_BASE_URL; returns that URL."""
    url = server.url.replace("http://", f"http://{USER}:{PASSWORD}@")
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    for var in ("DESIC_TRACE", "DESIC_STORAGE", "DESIC_LM"):
        monkeypatch.delenv(var, raising=False)
    return url


def leaks(what: str, data: bytes | str) -> list[str]:
    raw = data.encode() if isinstance(data, str) else data
    return [f"{what} holds {secret!r}" for secret in SECRETS if secret.encode() in raw]


def files_under(root: Path) -> bytes:
    return b"".join(p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file())


def log_text(caplog: pytest.LogCaptureFixture) -> str:
    """Every captured record, formatted (tracebacks included) and as its bare message."""
    handler = caplog.handler
    return "\n".join([caplog.text, *(handler.format(r) for r in caplog.records)])


def used_the_credentials(server: FakeOpenAIServer) -> None:
    """The key or the password really went out, as auth: never inside the URL."""
    auth = {h.get("authorization") for h in server.headers}
    assert f"Basic {BASIC}" in auth, auth
    assert all(h.get("host", "").startswith("127.0.0.1") for h in server.headers)


def test_compile_and_evaluate_write_no_secret(
    server: FakeOpenAIServer, credentials: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    trace = tmp_path / "trace.jsonl"
    stop: list[Callable[[], None]] = [
        events.subscribe(JsonlSink(trace)),
        events.subscribe(LoggingSink(logging.DEBUG)),
    ]
    lm = desic.lm.retry(desic.lm("openai:fake-model", client_retries=1), 1, initial=0.01, jitter=0.01)
    try:
        with allow_model_requests():
            compiled = desic.compile(
                triage, TRAIN, metric=desic.metrics.exact_match, lm=lm,
                storage=f"sqlite://{tmp_path / 'runs.db'}", valset=DEV, seed=1, concurrency=2,
            )
            compiled.save(tmp_path / "triage.desic.json")
            report = desic.evaluate(compiled, DEV, desic.metrics.exact_match, lm=lm, concurrency=2)
    finally:
        for unsubscribe in stop:
            unsubscribe()
    used_the_credentials(server)
    assert server.counts["http_400"] and server.counts["http_500"]  # the echoes were sent
    assert report.errors == 2
    rows = json.dumps(report.to_rows(), default=str)
    assert "HTTP 400" in rows and "<redacted>" in rows  # the error was kept, scrubbed
    found = [
        *leaks("a file under tmp_path", files_under(tmp_path)),
        *leaks("the captured logs", log_text(caplog)),
        *leaks("the report's rows", rows),
        *leaks("the report", str(report)),
    ]
    assert trace.stat().st_size and (tmp_path / "runs.db").exists()
    assert "HTTP 400" in trace.read_text()
    assert found == []


PROJECT = textwrap.dedent(
    '''
    from typing import Literal

    from pydantic import BaseModel

    import desic


    class Ticket(BaseModel):
        team: Literal["billing", "tech"]


    @desic.signature
    def route(ticket: str) -> Ticket:
        """Route the ticket to a team."""


    @desic.pipeline
    def triage(ticket: str) -> Ticket:
        return route(ticket=ticket)
    '''
)


def test_the_command_line_prints_and_writes_no_secret(
    server: FakeOpenAIServer,
    credentials: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    project = tmp_path / "project"
    project.mkdir()
    (project / "secretproj.py").write_text(PROJECT, encoding="utf-8")
    for name, rows in (("train.jsonl", TRAIN), ("dev.jsonl", DEV)):
        (project / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    monkeypatch.chdir(project)
    monkeypatch.setenv("DESIC_LM", "openai:fake-model")
    monkeypatch.setenv("DESIC_ALLOW_MODEL_REQUESTS", "1")
    store = f"sqlite://{tmp_path / 'cli-runs.db'}"
    trace = str(tmp_path / "cli-trace.jsonl")
    runner = CliRunner()
    results = [
        runner.invoke(app, ["-vv", "--trace", trace, "compile", "secretproj:triage", "-t", "train.jsonl",
                            "--valset", "dev.jsonl", "-o", "triage.desic.json", "--storage", store]),
        runner.invoke(app, ["-vv", "--trace", trace, "eval", "triage.desic.json", "-d", "dev.jsonl"]),
        runner.invoke(app, ["eval", "triage.desic.json", "-d", "dev.jsonl", "--json"]),
        runner.invoke(app, ["run", "triage.desic.json", "--input", '{"ticket": "leak: once more"}']),
        runner.invoke(app, ["-v", "run", "triage.desic.json", "--input", '{"ticket": "flaky: once more"}']),
        runner.invoke(app, ["runs", "list", "--storage", store]),
    ]
    assert [r.exit_code for r in results] == [0, 0, 0, 6, 6, 0], [r.output for r in results]
    used_the_credentials(server)
    assert "error: " in results[3].stderr and "HTTP 400" in results[3].stderr
    assert "row 2" in results[1].stderr  # the failed rows are listed
    found = [*leaks("a file under tmp_path", files_under(tmp_path)), *leaks("the captured logs", log_text(caplog))]
    for args, result in zip(["compile", "eval", "eval --json", "run leak", "run flaky", "runs list"], results):
        found += leaks(f"stdout of {args}", result.stdout) + leaks(f"stderr of {args}", result.stderr)
    assert found == []


def test_the_client_never_sees_credentials_in_its_url(credentials: str) -> None:
    import asyncio

    from desic.lm._openai import OpenAILM

    lm = desic.lm("openai:fake-model")
    assert isinstance(lm, OpenAILM)
    assert PASSWORD not in repr(vars(lm)) and USER not in str(lm.base_url)

    async def clients() -> list[Any]:
        return [lm._client("chat").client, lm._client("embed")]

    for client in asyncio.run(clients()):
        url = str(client.base_url)
        assert PASSWORD not in url and USER not in url and "@" not in url
        assert client.default_headers["Authorization"] == f"Basic {BASIC}"


def test_one_redaction_reexported_by_storage(monkeypatch: pytest.MonkeyPatch) -> None:
    import desic.storage
    from desic import _redact

    assert desic.storage.redact is _redact.redact
    monkeypatch.setenv("ACME_SERVICE_TOKEN", "tok-0123456789")
    record = {"error": "denied tok-0123456789 at http://u:pw-secret@host/v1", "n": 1, "rows": [("sk-abcdefgh1234",)]}
    assert _redact.redact(record) == {
        "error": "denied <redacted> at http://<redacted>@host/v1", "n": 1, "rows": [("<redacted>",)],
    }
    clean = {"error": "basic information, nothing secret", "n": 1}
    assert _redact.redact(clean) is clean  # no copy when there is nothing to replace
