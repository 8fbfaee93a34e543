# mypy: disable-error-code="empty-body"
"""Scoped configuration (contextvars), LM specs, and the guard against real calls in tests."""

from __future__ import annotations

import asyncio
import importlib
import threading
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.runtime import current_lm, settings
from desic.testing import FakeLM, FakeOpenAIServer, FunctionLM, allow_model_requests, last_input

lm_module = importlib.import_module("desic.lm")


@desic.signature
def echo(text: str) -> str:
    """Repeat the text."""


def echo_lm(name: str, seen: list[str]) -> FunctionLM:
    def answer(request: LMRequest) -> str:
        text = last_input(request).removeprefix("text: ")
        seen.append(text)
        return f"{name}:{text}"

    return FunctionLM(answer, name=name)


@pytest.fixture
def no_env_lm(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in ("DESIC_LM", "OPENAI_API_KEY", "OPENAI_BASE_URL", "DESIC_ALLOW_MODEL_REQUESTS"):
        monkeypatch.delenv(var, raising=False)


# --- desic.context ------------------------------------------------------------------------


def test_context_nests_and_restores() -> None:
    outer, inner = FakeLM(name="outer"), FakeLM(name="inner")
    before = settings()
    assert before.lm is None
    with desic.context(lm=outer, max_concurrency=4) as s1:
        assert s1.lm is outer
        assert current_lm() is outer
        with desic.context(lm=inner) as s2:
            assert current_lm() is inner
            assert s2.max_concurrency == 4  # unchanged settings are inherited
            with desic.context(max_concurrency=2):
                assert current_lm() is inner
                assert settings().max_concurrency == 2
            assert settings().max_concurrency == 4
        assert current_lm() is outer
    assert settings() is before


def test_context_restores_after_an_exception() -> None:
    lm = FakeLM()
    with pytest.raises(RuntimeError), desic.context(lm=lm):
        raise RuntimeError("boom")
    assert settings().lm is None


def test_context_lm_routes_calls() -> None:
    outer_seen: list[str] = []
    inner_seen: list[str] = []
    with desic.context(lm=echo_lm("outer", outer_seen)):
        assert echo("a") == "outer:a"
        with desic.context(lm=echo_lm("inner", inner_seen)):
            assert echo("b") == "inner:b"
        assert echo("c") == "outer:c"
    assert outer_seen == ["a", "c"]
    assert inner_seen == ["b"]


def test_context_accepts_an_lm_spec_string(
    no_env_lm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    with desic.context(lm="openai:fake-model") as s:
        assert isinstance(s.lm, desic.LM)
        assert current_lm() is s.lm
        assert current_lm().name == "openai:fake-model"
        assert current_lm().describe()["base_url"] == "http://127.0.0.1:9/v1"
    with pytest.raises(desic.ConfigError, match="unknown LM provider"), desic.context(lm="nope:x"):
        pass  # pragma: no cover


def test_threads_each_see_only_their_own_lm() -> None:
    n_calls = 50
    barrier = threading.Barrier(2)
    seen: dict[str, list[str]] = {"A": [], "B": []}
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            lm = echo_lm(name, seen[name])
            lm.latency = 0.001
            out: list[str] = []
            with desic.context(lm=lm):
                barrier.wait(timeout=5)
                for i in range(n_calls):
                    out.append(echo(text=f"{name}-{i}"))
            results[name] = out
        except BaseException as exc:  # noqa: BLE001  (surfaced below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for name in ("A", "B"):
        assert seen[name] == [f"{name}-{i}" for i in range(n_calls)]
        assert results[name] == [f"{name}:{name}-{i}" for i in range(n_calls)]
    assert settings().lm is None  # the main thread never saw either


def test_asyncio_tasks_each_see_only_their_own_lm() -> None:
    n_calls = 50
    seen: dict[str, list[str]] = {"A": [], "B": []}

    async def task(name: str) -> list[str]:
        lm = echo_lm(name, seen[name])
        lm.latency = 0.001
        with desic.context(lm=lm):
            sequential = [await echo.acall(text=f"{name}-{i}") for i in range(n_calls // 2)]
            gathered = await asyncio.gather(
                *(echo.acall(text=f"{name}-{i}") for i in range(n_calls // 2, n_calls))
            )
        return sequential + list(gathered)

    async def main() -> tuple[list[str], list[str]]:
        a, b = await asyncio.gather(task("A"), task("B"))
        assert settings().lm is None
        return a, b

    a, b = asyncio.run(main())
    assert a == [f"A:A-{i}" for i in range(n_calls)]
    assert b == [f"B:B-{i}" for i in range(n_calls)]
    assert sorted(seen["A"]) == sorted(f"A-{i}" for i in range(n_calls))
    assert sorted(seen["B"]) == sorted(f"B-{i}" for i in range(n_calls))


# --- no LM / LM specs -------------------------------------------------------------------------


def test_no_lm_configured_is_a_config_error_with_the_fix(
    no_env_lm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lm_module, "local_available", lambda: False)
    with pytest.raises(desic.ConfigError) as info:
        echo("hello")
    msg = str(info.value)
    assert "no language model is configured" in msg
    assert "pip install 'desic[local]'" in msg
    assert "DESIC_LM" in msg
    assert "desic.context(lm=" in msg


def test_desic_lm_env_var_gives_the_default(
    no_env_lm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(lm_module, "local_available", lambda: False)
    monkeypatch.setenv("DESIC_LM", "bogus:model")
    with pytest.raises(desic.ConfigError, match="unknown LM provider 'bogus'"):
        echo("hello")


def test_unknown_provider_is_a_config_error() -> None:
    with pytest.raises(desic.ConfigError) as info:
        desic.lm("bogus:x")
    assert "'bogus'" in str(info.value)
    assert "openai:MODEL" in str(info.value)


def test_openai_spec_without_model_is_a_config_error() -> None:
    with pytest.raises(desic.ConfigError, match="names no model"):
        desic.lm("openai:")


def test_openai_without_api_key_is_a_config_error(no_env_lm: None) -> None:
    with pytest.raises(desic.ConfigError) as info:
        desic.lm("openai:gpt-4o-mini")
    assert "OPENAI_API_KEY" in str(info.value)
    assert "gpt-4o-mini" in str(info.value)


def test_openai_reads_the_key_from_the_environment(
    no_env_lm: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    lm: Any = desic.lm("openai:gpt-4o-mini")
    assert lm.name == "openai:gpt-4o-mini"
    assert lm.mode == "tools"
    assert "sk-from-env" not in repr(lm.describe())


def test_openai_unknown_mode_is_a_config_error(no_env_lm: None) -> None:
    with pytest.raises(desic.ConfigError, match="unknown instructor mode 'xml'"):
        desic.lm("openai:m", base_url="http://127.0.0.1:1/v1", mode="xml")


# --- the pytest guard -------------------------------------------------------------------------


def test_real_provider_is_refused_in_a_test_without_permission(no_env_lm: None) -> None:
    with FakeOpenAIServer() as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="test")
        with desic.context(lm=lm), pytest.raises(desic.ConfigError) as info:
            echo("hello")
        assert server.counts["requests"] == 0
    msg = str(info.value)
    assert "@pytest.mark.live" in msg
    assert "allow_model_requests" in msg
    assert "openai:fake-model" in msg


def test_real_provider_runs_with_allow_model_requests(no_env_lm: None) -> None:
    with FakeOpenAIServer(handler=lambda req: {"output": "from the server"}) as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="test")
        with desic.context(lm=lm):
            with allow_model_requests():
                assert echo("hello") == "from the server"
            # Permission ends with the block.
            with pytest.raises(desic.ConfigError, match="live"):
                echo("again")
        assert server.counts["ok"] == 1


@pytest.mark.live
def test_live_marker_allows_real_providers(no_env_lm: None) -> None:
    with FakeOpenAIServer(handler=lambda req: {"output": "marked"}) as server:
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="test")
        with desic.context(lm=lm):
            assert echo("hello") == "marked"
