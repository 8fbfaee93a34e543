"""``desic.lm.portable``: an LM as plain data, rebuilt elsewhere without its secrets."""

from __future__ import annotations

import json

import pytest

import desic
from desic.lm import CacheLM, RetryLM, ThrottleLM, TimeoutLM
from desic.lm.portable import lm_config, lm_from_config
from desic.testing import FakeLM, FunctionLM
from tests.support.house_rule import answer


def test_a_configured_openai_lm_travels_as_json_without_its_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    lm = desic.lm("openai:gpt-4o-mini", api_key="sk-secret-123", base_url="http://u:pw@127.0.0.1:9/v1",
                  rps=5, burst=2, tpm=6000, retries=2, timeout=7, cache="memory", temperature=0.3)
    config = lm_config(lm)
    text = json.dumps(config)
    assert "sk-secret-123" not in text and "pw" not in text  # secrets come from the other side's environment
    rebuilt = lm_from_config(json.loads(text))
    assert isinstance(rebuilt, CacheLM) and isinstance(rebuilt.inner, RetryLM)
    throttle = rebuilt.inner.inner
    assert isinstance(throttle, ThrottleLM) and (throttle.rps, throttle.burst, throttle.tpm) == (5, 2, 6000)
    assert isinstance(throttle.inner, TimeoutLM) and throttle.inner.seconds == 7
    assert rebuilt.describe() == lm.describe()


def test_the_fakes_travel_by_their_answers_or_their_functions_import_path() -> None:
    fake = FakeLM({"refund": {"team": "shipping"}}, default={"team": "tech"}, latency=0.01)
    copy = lm_from_config(json.loads(json.dumps(lm_config(fake))))
    assert isinstance(copy, FakeLM) and copy.by_input == fake.by_input and copy.latency == 0.01
    fn = lm_from_config(lm_config(FunctionLM(answer, name="m")))
    assert isinstance(fn, FunctionLM) and fn.fn is answer


def test_an_lm_that_cannot_travel_says_how_to_make_it() -> None:
    with pytest.raises(desic.ConfigError, match=r"FunctionLM's function .*<lambda>.* top level of an importable module"):
        lm_config(FunctionLM(lambda request: "x"))
    with pytest.raises(desic.ConfigError, match="cache store was given as an object"):
        lm_config(desic.lm.cache(FakeLM(), FakeStore()))


class FakeStore:
    def get(self, key: str) -> bytes | None:
        return None

    def put(self, key: str, value: bytes) -> None:
        pass
