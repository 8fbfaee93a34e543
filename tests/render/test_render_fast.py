# mypy: disable-error-code="empty-body"
"""The shipped templates' user block is rendered in Python; it must equal Jinja's output.

``desic.render`` skips Jinja for the query of a node whose template is a shipped one.
These tests render the same inputs through both paths (the real sandboxed Jinja block of
every shipped template) and require identical text, so the two can never drift apart.
"""

from __future__ import annotations

import enum
import random
from datetime import date
from importlib.resources import files
from typing import Any

import msgspec
import pytest
from pydantic import BaseModel

import desic
from desic import ir

# private on purpose: unit tests of desic.render's fast path against its template path
from desic.render import _compile, _fast_user, _fast_user_ok, _renderings, _user, render_messages
from desic.runtime import default_node
from desic.signature import STRATEGIES


class Point(BaseModel):
    x: int
    label: str


class Color(str, enum.Enum):
    RED = "red"


class Size(enum.Enum):
    BIG = "big"


@desic.signature
def many(
    text: str,
    count: int = 0,
    items: list[Any] | None = None,
    meta: dict[str, Any] | None = None,
    point: Point | None = None,
    note: str = "",
) -> str:
    """Answer."""


SHIPPED = sorted(
    entry.name.removesuffix(".j2")
    for entry in files("desic.render").joinpath("templates").iterdir()
    if entry.name.endswith(".j2")
)

TEXTS = [
    "",
    " ",
    "plain",
    "  padded both ends \t",
    "\n\nnewlines around\n\n",
    "line one\nline two\r\nline three\rfour",
    "{{ 7*7 }} {% if true %}x{% endif %} {# c #} {{ text }}",
    "é ü 中文 🙂 \u00a0nbsp\u2028sep",
    "\x0b\x0cvertical\x1c\x1d\x1e\x1f",
    "tab\tinside",
    "trailing backslash \\",
    "a: b\nfake: line",
]

OTHERS: list[Any] = [
    0,
    -7,
    3.5,
    float("inf"),
    True,
    None,
    [],
    [1, "two", None, 4.0],
    {},
    {"k": "é", "nested": {"a": [1, 2]}},
    Point(x=1, label="{{ 7*7 }}\n"),
    Color.RED,
    Size.BIG,
    date(2024, 1, 2),
    ("tuple", 1),
]


def _random_text(rng: random.Random) -> str:
    alphabet = "ab {}%#\n\r\t\x0b\x0c\x1c\u00a0\u2028é中🙂:-\\\"'"
    return "".join(rng.choice(alphabet) for _ in range(rng.randrange(0, 12)))


def _cases() -> list[dict[str, Any]]:
    cases: list[dict[str, Any]] = [{}]  # no input given at all
    cases += [{"text": t} for t in TEXTS]
    cases += [{"text": "t", "count": v} for v in OTHERS]
    cases += [{"text": "t", "items": v, "meta": v, "point": v} for v in OTHERS]
    cases += [{"note": t, "text": "last first"} for t in TEXTS]  # dict order differs from spec order
    cases.append({"text": "", "count": 0, "items": [], "meta": {}, "point": None, "note": ""})
    cases.append({"text": "x", "unknown": "not an input"})
    rng = random.Random(7)
    names = many.spec.input_names
    for _ in range(300):
        chosen = rng.sample(names, rng.randrange(0, len(names) + 1))
        cases.append(
            {n: _random_text(rng) if rng.random() < 0.7 else rng.choice(OTHERS) for n in chosen}
        )
    return cases


@pytest.mark.parametrize("strategy", SHIPPED)
def test_every_shipped_template_takes_the_fast_path(strategy: str) -> None:
    source = desic.render.default_template(strategy)
    assert _fast_user_ok(source)
    assert not _fast_user_ok(source + "{# edited #}")
    assert not _fast_user_ok(source.replace("{{ f.name }}: ", "{{ f.name }} = "))


@pytest.mark.parametrize("strategy", SHIPPED)
def test_fast_user_block_equals_jinja(strategy: str) -> None:
    template = _compile(desic.render.default_template(strategy))
    spec = many.spec
    for values in _cases():
        assert _fast_user(spec, values) == _user(template, spec, values), values


@pytest.mark.parametrize("strategy", [s for s in STRATEGIES if s in SHIPPED])
def test_rendered_messages_equal_the_jinja_path(strategy: str) -> None:
    sig = many.with_strategy(strategy)
    fast = default_node(sig, "many")
    demos = tuple(
        ir.Demo(inputs={"text": t, "count": i}, output={"output": f"o{i}"}) for i, t in enumerate(TEXTS[:4])
    )
    fast = msgspec.structs.replace(fast, demos=demos)
    # the same template with a comment added: not a shipped source, so rendered by Jinja
    slow = msgspec.structs.replace(fast, template=fast.template + "{# force the Jinja path #}")
    for values in _cases():
        assert render_messages(fast, values) == render_messages(slow, values), values
    assert _renderings[id(fast)].fast and not _renderings[id(slow)].fast
