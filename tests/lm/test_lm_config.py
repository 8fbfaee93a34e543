"""``desic.lm(...)``: how options compose the middleware, and the forms the wrappers take."""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import pytest

import desic
from desic.lm import BaseLM, CacheLM, LMRequest, LMResponse, RetryLM, ThrottleLM, TimeoutLM

# private on purpose (no public API): the tests look inside the layers desic.lm(...) builds
from desic.lm._middleware import unwrap
from desic.lm._openai import OpenAILM
from desic.lm._wrapper import WrapperLM
from desic.testing import FakeLM

lm_module = importlib.import_module("desic.lm")


@pytest.fixture(autouse=True)
def _no_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    yield


URL = "http://127.0.0.1:9/v1"


def layers(lm: Any) -> list[str]:
    out = [type(lm).__name__]
    while isinstance(lm, WrapperLM):
        lm = lm.inner
        out.append(type(lm).__name__)
    return out


def test_the_wrappers_are_reachable_from_desic_lm_and_the_module() -> None:
    assert desic.lm.retry is lm_module.retry
    assert desic.lm.throttle is lm_module.throttle
    assert desic.lm.timeout is lm_module.timeout
    assert desic.lm.cache is lm_module.cache
    fake = FakeLM()
    composed = desic.lm.retry(desic.lm.throttle(desic.lm.timeout(fake, 5), rps=5, burst=10), 3)
    assert layers(composed) == ["RetryLM", "ThrottleLM", "TimeoutLM", "FakeLM"]
    assert composed.name == fake.name and composed.describe() == fake.describe()
    assert unwrap(composed) is fake
    assert isinstance(composed, desic.LM)


def test_all_options_compose_cache_retry_throttle_timeout_provider() -> None:
    lm = desic.lm("openai:fake", base_url=URL, rps=5, burst=10, tpm=1000, retries=4, timeout=7, cache="memory")
    assert layers(lm) == ["CacheLM", "RetryLM", "ThrottleLM", "TimeoutLM", "OpenAILM"]
    provider = unwrap(lm)
    assert isinstance(provider, OpenAILM)
    assert provider.client_retries == 0 and provider.timeout == 7
    assert isinstance(lm, CacheLM) and isinstance(lm.inner, RetryLM) and lm.inner.max_retries == 4
    assert lm.describe() == provider.describe()  # artifacts and compile records see the model


@pytest.mark.parametrize(
    ("options", "expected", "client_retries"),
    [
        ({}, ["OpenAILM"], 2),
        ({"timeout": 3}, ["TimeoutLM", "OpenAILM"], 2),
        ({"retries": 2}, ["RetryLM", "OpenAILM"], 0),
        ({"retries": 0}, ["OpenAILM"], 0),
        ({"rps": 5}, ["RetryLM", "ThrottleLM", "OpenAILM"], 0),
        ({"rps": 5, "retries": 0}, ["ThrottleLM", "OpenAILM"], 0),
        ({"cache": "memory"}, ["CacheLM", "OpenAILM"], 2),
        ({"rps": 5, "client_retries": 1}, ["RetryLM", "ThrottleLM", "OpenAILM"], 1),
    ],
)
def test_which_options_add_which_wrappers(
    options: dict[str, Any], expected: list[str], client_retries: int
) -> None:
    lm = desic.lm("openai:fake", base_url=URL, **options)
    assert layers(lm) == expected
    assert unwrap(lm).client_retries == client_retries  # type: ignore[attr-defined]


def test_an_lm_object_takes_middleware_options_only() -> None:
    fake = FakeLM()
    assert desic.lm(fake) is fake
    assert isinstance(desic.lm(fake, timeout=1), TimeoutLM)
    with pytest.raises(desic.ConfigError, match="only middleware options"):
        desic.lm(fake, temperature=0.5)


def test_an_lm_that_is_not_a_base_lm_gets_the_sync_fronts() -> None:
    class Minimal:
        name = "minimal"

        async def request(self, request: LMRequest) -> LMResponse:
            return await FakeLM(default="hi").request(request)

        def describe(self) -> dict[str, Any]:
            return {"provider": "mine"}

    lm = desic.lm(Minimal())
    assert isinstance(lm, BaseLM) and lm.name == "minimal"
    with pytest.raises(TypeError, match="expected an LM"):
        desic.lm.retry(object())  # type: ignore[arg-type]


def test_throttle_options_are_checked() -> None:
    with pytest.raises(desic.ConfigError):
        desic.lm("openai:fake", base_url=URL, burst=4)
    with pytest.raises(ValueError, match="timeout must be positive"):
        desic.lm(FakeLM(), timeout=0)
    assert isinstance(desic.lm(FakeLM(), tpm=1000), RetryLM)
    assert isinstance(desic.lm(FakeLM(), tpm=1000, retries=0), ThrottleLM)
