# mypy: disable-error-code="empty-body"
"""Tools: typed functions described to the model, and every failure an observation, never a crash."""

from __future__ import annotations

import asyncio
import threading
from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field

import desic
from desic.tools import OBSERVATION_CHARS, Tool


def lookup(city: Annotated[str, "the city's name"], days: int = 1) -> dict[str, Any]:
    """Look up the weather of a city."""
    return {"city": city, "days": days}


def run(tool: Tool[..., Any], args: Any) -> tuple[str, bool]:
    return asyncio.run(tool.run(args))


def test_a_typed_function_is_a_tool_with_name_description_and_schema() -> None:
    t = Tool(lookup)
    assert t.name == "lookup"
    assert t.description == "Look up the weather of a city."
    props = t.parameters["properties"]
    assert props["city"] == {"description": "the city's name", "title": "City", "type": "string"}
    assert props["days"]["default"] == 1 and t.parameters["required"] == ["city"]
    assert t.spec.name == "lookup" and t.spec.parameters == t.parameters
    assert t("Oslo") == {"city": "Oslo", "days": 1}  # still callable like the function


def test_desic_tool_sets_name_description_and_limits_bare_or_with_options() -> None:
    @desic.tool
    def bare(x: int) -> int:
        """Double it."""
        return 2 * x

    wrapped = desic.tool(lookup, name="weather", description="Weather by city.", timeout=2, max_calls=3)
    assert isinstance(bare, Tool) and bare(4) == 8 and bare.description == "Double it."
    assert (wrapped.name, wrapped.description, wrapped.timeout, wrapped.max_calls) == ("weather", "Weather by city.", 2, 3)


class Row(BaseModel):
    n: int


def test_results_are_shown_as_text_or_json() -> None:
    assert run(Tool(lookup), {"city": "Oslo"}) == ('{"city": "Oslo", "days": 1}', True)

    def rows() -> list[Row]:
        """Rows."""
        return [Row(n=1)]

    def text() -> str:
        """Text."""
        return "plain"

    assert run(Tool(rows), {}) == ('[{"n": 1}]', True)
    assert run(Tool(text), {}) == ("plain", True)

    def long() -> str:
        """Long."""
        return "x" * (OBSERVATION_CHARS + 10)

    shown, ok = run(Tool(long), {})
    assert ok and len(shown) < OBSERVATION_CHARS + 60 and shown.endswith(f"(cut: {OBSERVATION_CHARS + 10} characters in all)")


def test_a_result_that_is_not_json_data_is_a_clear_error_observation() -> None:
    def handle() -> Any:
        """Gives a lock."""
        return threading.Lock()

    shown, ok = run(Tool(handle), {})
    assert not ok
    assert shown.startswith("error: handle returned a lock, which is not JSON data")
    assert "must return str, numbers, lists/dicts or pydantic models" in shown


def test_invalid_arguments_errors_and_timeouts_come_back_as_observations() -> None:
    expected = (
        "error: invalid arguments for lookup: city: Field required; days: Input should be a valid integer, "
        "unable to parse string as an integer"
    )
    assert run(Tool(lookup), {"days": "many"}) == (expected, False)
    assert run(Tool(lookup), {"city": "Oslo", "extra": 1})[0].startswith("error: invalid arguments for lookup: extra")

    def broken(x: int) -> int:
        """Fails."""
        raise ValueError(f"bad {x}")

    assert run(Tool(broken), {"x": 3}) == ("error: broken raised ValueError: bad 3", False)

    release = threading.Event()

    def stuck() -> str:
        """Never answers in time."""
        release.wait(30)
        return "late"

    async def slow() -> str:
        """Never answers in time either."""
        await asyncio.sleep(30)
        return "late"

    try:
        assert run(desic.tool(stuck, timeout=0.05), {}) == ("error: stuck gave no result within 0.05s (timeout)", False)
    finally:
        release.set()
    assert run(desic.tool(slow, timeout=0.05), {}) == ("error: slow gave no result within 0.05s (timeout)", False)


def test_async_tools_are_awaited() -> None:
    async def fetch(url: str) -> str:
        """Fetch a page."""
        await asyncio.sleep(0)
        return f"page {url}"

    t = Tool(fetch)
    assert t.is_async and run(t, {"url": "a"}) == ("page a", True)


def test_bad_tool_declarations_say_what_to_fix() -> None:
    def untyped(x):  # type: ignore[no-untyped-def]
        """No hints."""

    def star(*xs: int) -> int:
        """Star args."""
        return 0

    def finish(x: int) -> int:
        """Reserved name."""
        return x

    with pytest.raises(desic.SignatureError, match="parameter 'x' has no type annotation"):
        Tool(untyped)
    with pytest.raises(desic.SignatureError, match="ordinary named parameter"):
        Tool(star)
    with pytest.raises(desic.SignatureError, match="other than 'finish'"):
        Tool(finish)
    with pytest.raises(desic.SignatureError, match="timeout=0 must be a positive"):
        desic.tool(lookup, timeout=0)
    with pytest.raises(desic.SignatureError, match="max_calls=0 must be a whole number"):
        desic.tool(lookup, max_calls=0)


class Out(BaseModel):
    trajectory: str = Field(description="clashes")


def test_signature_checks_its_agent_options() -> None:
    def ok(q: str) -> str:
        """Q."""
        return q

    with pytest.raises(desic.SignatureError, match="add strategy='react'"):

        @desic.signature(tools=[ok])
        def plain(question: str) -> str: ...

    with pytest.raises(desic.SignatureError, match="two tools are named 'ok'"):

        @desic.signature(strategy="react", tools=[ok, ok])
        def twice(question: str) -> str: ...

    with pytest.raises(desic.SignatureError, match="max_steps=0"):

        @desic.signature(strategy="react", tools=[ok], max_steps=0)
        def none(question: str) -> str: ...

    with pytest.raises(desic.SignatureError, match="named 'trajectory'"):

        @desic.signature(strategy="react", tools=[ok])
        def clash(question: str) -> Out: ...
