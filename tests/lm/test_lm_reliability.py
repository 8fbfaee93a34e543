# mypy: disable-error-code="empty-body"
"""The LM layer stays up when its surroundings misbehave.

- a cache location that cannot be used turns the cache off (one warning), calls succeed;
- every HTTP request, instructor's re-asks included, pays the throttle;
- the first call's SDK import and client set-up do not count against ``timeout``.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest

import desic
from desic._bucket import TokenBucket  # private: the bucket this process's throttle keeps
from desic.lm import ThrottleLM
from desic.testing import FakeLM, FakeOpenAIServer, Faults, allow_model_requests


@desic.signature
def team(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "XDG_CACHE_HOME"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


# --- an unusable cache location ---------------------------------------------------------------


def _file_as_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache dir whose parent is a regular file: it can never be created."""
    (tmp_path / "a-file").write_text("not a directory")
    return tmp_path / "a-file" / "cache"


def _read_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A cache dir that mkdir may not create (a read-only parent; root ignores chmod)."""
    target = tmp_path / "read-only" / "cache"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == target or target in self.parents:
            raise PermissionError(13, "Permission denied", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return target


def _missing_parent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A missing parent that cannot be created (it vanished, or its mount is gone)."""
    target = tmp_path / "gone" / "cache"
    real_mkdir = Path.mkdir

    def mkdir(self: Path, *args: Any, **kwargs: Any) -> None:
        if self == target or target in self.parents:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", mkdir)
    return target


def _file_is_a_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The directory exists but sqlite cannot open the file in it (here: a directory)."""
    (tmp_path / "cache" / "lm.sqlite3").mkdir(parents=True)
    return tmp_path / "cache"


@pytest.mark.parametrize(
    "location", [_file_as_parent, _read_only, _missing_parent, _file_is_a_directory],
    ids=["parent-is-a-file", "read-only", "missing-parent", "unopenable-file"],
)
def test_an_unusable_cache_dir_turns_the_cache_off_with_one_warning(
    location: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("DESIC_CACHE_DIR", str(location(tmp_path, monkeypatch)))
    inner = FakeLM(default="tech")
    lm = desic.lm(inner, cache=True)
    with caplog.at_level(logging.WARNING, logger="desic"), desic.context(lm=lm):
        answers = [team(ticket="crash") for _ in range(3)]
    assert answers == ["tech"] * 3
    assert len(inner.calls) == 3  # nothing was cached: every call reached the LM
    warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("desic")]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]
    message = warnings[0].getMessage()
    assert "cache" in message and "off" in message
    assert "DESIC_CACHE_DIR" in message  # says how to fix it


# --- the throttle pays for every HTTP request, re-asks included --------------------------------


class FirstAskMalformed:
    """A model whose first reply to each ticket is malformed JSON; its re-ask is answered.

    instructor re-asks (``validation_retries``) within one call, so every row costs two
    HTTP requests, the second right after the first.
    """

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def __call__(self, req: dict[str, Any]) -> str | dict[str, str]:
        ticket = next(m["content"] for m in req["messages"] if m["role"] == "user")
        if ticket not in self.seen:
            self.seen.add(ticket)
            return '{"output": "te'  # cut off: not JSON
        return {"output": "tech"}


def test_reasks_pay_the_throttle_so_a_rate_limited_server_rejects_none() -> None:
    rate, n = 10, 20
    devset = [{"ticket": f"ticket {i}", "output": "tech"} for i in range(n)]
    # The server rejects more than `rate` requests within 0.6 s (slack for a loaded
    # machine, as in test_lm_throttle); paying for first asks only sends ~2x the rate.
    faults = Faults(max_rps=rate, rps_slack=0.4)
    with FakeOpenAIServer(handler=FirstAskMalformed(), faults=faults) as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=rate)
        with desic.context(lm=lm):
            team(ticket="warm-up")  # SDK imports and client set-up happen once, before the run
        time.sleep(1.0)  # the warm-up's requests leave the server's window
        report = desic.evaluate(team, devset, desic.metrics.exact_match, lm=lm, concurrency=8)
        counts = dict(server.counts)
    assert counts["rejected_rate"] == 0, counts  # not a single 429
    assert report.errors == 0 and report.score == 1.0
    assert counts["ok"] == 2 * (n + 1)  # every row was re-asked once


def test_every_http_request_reserves_a_slot_even_a_retried_broken_body(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a body that is not JSON at all is retried by instructor within the same call
    with FakeOpenAIServer(faults=Faults(rate_malformed=0.3), seed=3) as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=1000, burst=1000)
        throttle = next(w for w in _chain(lm) if isinstance(w, ThrottleLM))
        assert isinstance(throttle.requests, TokenBucket)
        reservations: list[float] = []
        reserve = throttle.requests.reserve

        def counting(tokens: float = 1.0) -> float:
            reservations.append(tokens)
            return reserve(tokens)

        monkeypatch.setattr(throttle.requests, "reserve", counting)
        with desic.context(lm=lm):
            for i in range(12):
                assert team(ticket=f"ticket {i}") in ("billing", "tech")
        counts = dict(server.counts)
    assert counts["malformed"] >= 2, counts  # the faults really happened
    assert len(reservations) == counts["requests"], counts


def test_a_reask_waiting_for_the_throttle_does_not_eat_the_attempts_timeout() -> None:
    # one request every 2 s: the re-ask waits ~2 s for its slot, inside an attempt of 1 s
    with FakeOpenAIServer(handler=FirstAskMalformed()) as server:
        provider = desic.lm("openai:fake-model", base_url=server.url, api_key="x", client_retries=0)
        with desic.context(lm=provider):
            team(ticket="warm-up")  # imports and the first ask's malformed reply
        lm = desic.lm.throttle(desic.lm.timeout(provider, 1.0), rps=0.5)
        with desic.context(lm=lm):
            assert team(ticket="slow re-ask") == "tech"
        assert server.counts["ok"] == 4


def _chain(lm: Any) -> Iterator[Any]:
    while lm is not None:
        yield lm
        lm = getattr(lm, "inner", None)


# --- the first call's set-up is not part of its timeout -----------------------------------------

_SLOW_IMPORT = """
import importlib.abc, json, sys, time

class SlowImport(importlib.abc.MetaPathFinder):
    # importing the SDKs takes a while on a cold start; here it takes 3 s for sure
    def find_spec(self, name, path=None, target=None):
        if name in ("openai", "instructor"):
            time.sleep(1.5)
        return None

sys.meta_path.insert(0, SlowImport())

import desic
from desic.testing import FakeOpenAIServer, allow_model_requests

assert "openai" not in sys.modules and "instructor" not in sys.modules

@desic.signature
def team(ticket: str) -> str:
    \"\"\"Name the team for the ticket.\"\"\"

with FakeOpenAIServer(handler=lambda req: {"output": "tech"}) as server, allow_model_requests():
    lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", timeout=2, retries=0)
    try:
        with desic.context(lm=lm):
            result = team(ticket="crash")
    except desic.Timeout as exc:
        result = f"Timeout: {exc}"
    print(json.dumps({"result": result, "requests": server.counts["requests"]}))
"""


def test_the_first_calls_sdk_import_does_not_count_against_timeout(tmp_path: Path) -> None:
    script = tmp_path / "slow_import.py"
    script.write_text(_SLOW_IMPORT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "DESIC_TRACE"):
        env.pop(var, None)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    outcome = json.loads(done.stdout.strip().splitlines()[-1])
    assert outcome == {"result": "tech", "requests": 1}
