# mypy: disable-error-code="empty-body"
"""Batches (``sig.batch``, ``pipeline.batch``, ``compiled.batch`` and their async forms),
``compiled.acall`` and ``desic.acompile``: outputs in input order, one result per item,
one item's failure kept on its item."""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import pytest

import desic
from desic.lm import LMRequest
from desic.testing import FakeLM, FunctionLM, last_input


@desic.signature
def shout(text: str) -> str:
    """Repeat the text in capitals."""


@desic.pipeline
def twice(text: str) -> str:
    return shout(text=shout(text=text))


@desic.pipeline
async def twice_async(text: str) -> str:
    first = await shout.acall(text=text)
    return await shout.acall(text=first)


def text_of(request: LMRequest) -> str:
    """The ``text`` input of the request (its user message is ``text: ...``)."""
    return last_input(request).removeprefix("text: ")


def upper_or_fail(request: LMRequest) -> str:
    text = text_of(request)
    if "boom" in text:
        raise desic.LMError("the model refused this one")
    return text.upper()


def test_signature_batch_keeps_order_and_per_item_errors() -> None:
    items = [{"text": f"item {i}"} for i in range(12)] + [{"text": "boom"}, {"txt": "typo"}]
    with desic.context(lm=FunctionLM(upper_or_fail)):
        results = shout.batch(items, concurrency=4)

    assert [r.index for r in results] == list(range(14))
    assert [r.output for r in results[:12]] == [f"ITEM {i}" for i in range(12)]
    assert all(r.ok for r in results[:12])
    lm_failure, bad_input = results[12], results[13]
    assert not lm_failure.ok and isinstance(lm_failure.error, desic.LMError)
    assert lm_failure.output is None
    assert isinstance(bad_input.error, TypeError) and "txt" in str(bad_input.error)
    assert results[0].unwrap() == "ITEM 0"
    with pytest.raises(desic.LMError, match="refused"):
        lm_failure.unwrap()


def test_batch_runs_at_most_concurrency_items_at_once() -> None:
    lock = threading.Lock()
    running = peak = 0

    async def slow(request: LMRequest) -> str:
        nonlocal running, peak
        with lock:
            running += 1
            peak = max(peak, running)
        await asyncio.sleep(0)  # let the other items start if they may
        await asyncio.sleep(0)
        with lock:
            running -= 1
        return "ok"

    with desic.context(lm=FunctionLM(slow)):
        results = shout.batch([{"text": str(i)} for i in range(10)], concurrency=3)
    assert [r.output for r in results] == ["ok"] * 10
    assert 1 <= peak <= 3


@pytest.mark.parametrize("pipe", [twice, twice_async], ids=["sync", "async"])
def test_pipeline_batch_validates_each_item(pipe: Any) -> None:
    items = [{"text": "a"}, {"nope": 1}, {"text": "b"}, {"text": "boom"}]
    with desic.context(lm=FunctionLM(upper_or_fail)):
        results = pipe.batch(items)
    assert [r.output for r in results] == ["A", None, "B", None]
    assert isinstance(results[1].error, (desic.DataError, TypeError))
    assert isinstance(results[3].error, desic.LMError)


def test_abatch_from_async_code() -> None:
    async def main() -> list[Any]:
        with desic.context(lm=FunctionLM(upper_or_fail)):
            return [r.output for r in await twice_async.abatch([{"text": "x"}, {"text": "y"}])]

    assert asyncio.run(main()) == ["X", "Y"]


def test_batch_refuses_a_single_dict_with_a_hint() -> None:
    with pytest.raises(TypeError, match=r"list of input dicts.*batch\(\[\{"):
        shout.batch({"text": "a"})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="item 1 is str"):
        shout.batch([{"text": "a"}, "b"])  # type: ignore[list-item]


def test_batch_refuses_a_concurrency_below_one() -> None:
    with pytest.raises(desic.ConfigError, match="at least 1"):
        shout.batch([{"text": "a"}], concurrency=0)


TRAIN = [{"text": "hello", "output": "HELLO"}, {"text": "bye", "output": "BYE"}]


def test_compiled_acall_batch_and_acompile() -> None:
    lm = FunctionLM(lambda request: text_of(request).upper())
    with desic.context(lm=lm):
        compiled = desic.compile(twice, TRAIN, metric="exact_match", optimizer="labeled")
        assert asyncio.run(compiled.acall(text="abc")) == "ABC"
        assert [r.output for r in compiled.batch([{"text": "a"}, {"text": "b"}])] == ["A", "B"]

        async def main() -> Any:
            again = await desic.acompile(twice_async, TRAIN, metric="exact_match", optimizer="labeled")
            one = await again.acall(text="q")
            many = await again.abatch([{"text": "r"}, {}])
            return one, [r.output for r in many], many[1].error

        one, outputs, missing = asyncio.run(main())
    assert one == "Q"
    assert outputs == ["R", None]
    assert isinstance(missing, (desic.DataError, TypeError))
    # The compiled program's demos reach the batch's prompts: it runs the compiled program.
    assert any("HELLO" in str(call.messages) for call in lm.calls[-2:])


def test_fake_lm_batch_over_a_bare_signature_artifact(tmp_path: Any) -> None:
    with desic.context(lm=FakeLM(default="FINE")):
        desic.compile(shout, TRAIN, metric="exact_match", optimizer="labeled").save(tmp_path / "a.json")
        loaded = desic.load(tmp_path / "a.json")
        assert [r.output for r in loaded.batch([{"text": "a"}, {"text": "b"}])] == ["FINE", "FINE"]
