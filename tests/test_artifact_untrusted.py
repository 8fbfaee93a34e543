# mypy: disable-error-code="empty-body"
"""An artifact is untrusted input: loading and rendering it runs no code, reads no other file,
stays within bounded work, and every malformed artifact is an ``ArtifactError``.

Each test here loads a hand-edited copy of a real artifact (a signature compiled with
``optimizer="labeled"``). A template payload that would run away is stopped by the render
limits (``desic.render`` counts steps and characters), so no test here relies on a clock;
``deadline`` only turns a regression into a failure instead of a hung suite.
"""

from __future__ import annotations

import contextlib
import copy
import json
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from pydantic import BaseModel

import desic
from desic import ir
from desic.render import default_template
from desic.testing import FakeLM


class Route(BaseModel):
    team: Literal["billing", "tech"]
    reason: str


@desic.signature
def route(ticket: str, channel: str = "email") -> Route:
    """Route the ticket to a team."""


ROWS = [
    {"ticket": "money gone", "team": "billing", "reason": "a refund"},
    {"ticket": "app crash", "team": "tech", "reason": "a bug"},
]


class Hung(BaseException):
    """Raised by ``deadline``; a BaseException so that no ``except Exception`` swallows it."""


@contextlib.contextmanager
def deadline(seconds: float = 20.0) -> Iterator[None]:
    """Fail (rather than hang the suite) if the block runs away; a hang detector, not a timing
    assertion: the limits under test bound the work far below this."""
    if not hasattr(signal, "setitimer"):
        yield
        return

    def fire(signum: int, frame: Any) -> None:
        raise Hung(f"still running after {seconds} s")

    old = signal.signal(signal.SIGALRM, fire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module")
def artifact(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid saved artifact, as JSON data."""
    lm = FakeLM(default={"team": "tech", "reason": "x"})
    compiled = desic.compile(route, trainset=ROWS, metric=lambda ex, out: 1.0, optimizer="labeled", lm=lm)
    path = compiled.save(tmp_path_factory.mktemp("untrusted") / "route.json")
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    assert data["nodes"][0]["demos"], "the labeled optimizer adds demos"
    return data


def edited(artifact: dict[str, Any], tmp_path: Path, edit: Callable[[dict[str, Any]], Any]) -> Path:
    data = copy.deepcopy(artifact)
    edit(data)
    path = tmp_path / "edited.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def with_template(artifact: dict[str, Any], tmp_path: Path, payload: str, *, block: str = "system") -> Path:
    """The artifact with ``payload`` put into its template (the system block by default)."""
    template = default_template("predict")
    if block == "system":
        template = template.replace("{{ instructions }}", payload + "{{ instructions }}")
    elif block == "user":
        template = template.replace("{{ f.value }}", "{{ f.value }}" + payload)
    else:
        template = payload + template

    def edit(data: dict[str, Any]) -> None:
        data["nodes"][0]["template"] = template

    return edited(artifact, tmp_path, edit)


def with_output_schema(artifact: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], Any]) -> Path:
    def edit(data: dict[str, Any]) -> None:
        node = data["nodes"][0]
        change(node["signature"]["output_schema"])
        node["fingerprint"] = ""  # the hand edit is deliberate: skip the integrity check
        node["signature"]["ref"] = "elsewhere:route"  # and the code is not at hand

    return edited(artifact, tmp_path, edit)


def prompts_of(path: Path) -> dict[str, list[dict[str, str]]]:
    with deadline():
        return desic.load(path).prompts(ticket="where is my parcel")


def test_the_base_artifact_loads_and_renders(artifact: dict[str, Any], tmp_path: Path) -> None:
    messages = prompts_of(edited(artifact, tmp_path, lambda data: None))["route"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user", "assistant", "user"]


# --- strategy is a name, never a path -----------------------------------------------------------


def test_strategy_must_be_a_known_name(artifact: dict[str, Any], tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nodes"][0]["strategy"] = "../../../../etc/secret"
        data["nodes"][0]["template"] = ""

    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*unknown strategy '../../../../etc/secret'"):
        desic.load(edited(artifact, tmp_path, edit))


# --- malformed data is an ArtifactError, never a traceback --------------------------------------


def test_a_self_referencing_definition_is_an_artifact_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    def change(schema: dict[str, Any]) -> None:
        schema["$defs"] = {"A": {"$ref": "#/$defs/A"}}
        schema["properties"]["reason"] = {"$ref": "#/$defs/A"}

    with pytest.raises(desic.ArtifactError, match=r"definition 'A' refers to itself"):
        desic.load(with_output_schema(artifact, tmp_path, change))


def test_mutually_referencing_definitions_are_an_artifact_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    def change(schema: dict[str, Any]) -> None:
        schema["$defs"] = {"A": {"anyOf": [{"$ref": "#/$defs/B"}, {"type": "null"}]}, "B": {"$ref": "#/$defs/A"}}
        schema["properties"]["reason"] = {"$ref": "#/$defs/A"}

    with pytest.raises(desic.ArtifactError, match=r"refers to itself"):
        desic.load(with_output_schema(artifact, tmp_path, change))


def test_deeply_nested_json_is_an_artifact_error(tmp_path: Path) -> None:
    depth = 100_000
    path = tmp_path / "deep.json"
    path.write_text(
        '{"format": "desic.program", "format_version": 1, "meta": {"lm": ' + "[" * depth + "]" * depth + "}}",
        encoding="utf-8",
    )
    with pytest.raises(desic.ArtifactError, match=r"nests .* deep"):
        desic.load(path)


def test_a_deeply_nested_schema_is_an_artifact_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(500):
        deep = {"type": "array", "items": deep}

    def change(schema: dict[str, Any]) -> None:
        schema["properties"]["reason"] = deep

    with pytest.raises(desic.ArtifactError, match=r"nests .* deep"):
        desic.load(with_output_schema(artifact, tmp_path, change))


@pytest.mark.parametrize("name", ["_x", "__class__", "model_config", "model_fields", "model_validate"])
def test_an_output_property_that_cannot_be_a_field_is_an_artifact_error(
    artifact: dict[str, Any], tmp_path: Path, name: str
) -> None:
    def change(schema: dict[str, Any]) -> None:
        schema["properties"][name] = {"type": "string"}

    with pytest.raises(desic.ArtifactError, match=rf"output property '{name}'"):
        desic.load(with_output_schema(artifact, tmp_path, change))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s["properties"].__setitem__("team", {"enum": 5}), "'enum' must be a list"),
        (lambda s: s["properties"].__setitem__("team", []), "must be an object"),
        (lambda s: s.__setitem__("properties", ["team"]), "'properties' must be an object"),
        (lambda s: s.__setitem__("required", "team"), "'required' must be a list"),
        (lambda s: s["properties"].__setitem__("team", {"$ref": 7}), "'\\$ref' must be a string"),
        (lambda s: s["properties"].__setitem__("team", {"$ref": "#/$defs/Nope"}), "unknown definition 'Nope'"),
        (lambda s: s["properties"].__setitem__("team", {"anyOf": {}}), "'anyOf' must be a list"),
    ],
)
def test_a_malformed_output_schema_is_an_artifact_error(
    artifact: dict[str, Any], tmp_path: Path, change: Callable[[dict[str, Any]], Any], message: str
) -> None:
    with pytest.raises(desic.ArtifactError, match=message):
        desic.load(with_output_schema(artifact, tmp_path, change))


@pytest.mark.parametrize("name", ["my ticket", "class", "", "ticket"])
def test_input_names_must_be_parameter_names(artifact: dict[str, Any], tmp_path: Path, name: str) -> None:
    def edit(data: dict[str, Any]) -> None:
        node = data["nodes"][0]
        node["signature"]["inputs"][1]["name"] = name  # "ticket" makes a duplicate
        node["fingerprint"] = ""
        node["signature"]["ref"] = "elsewhere:route"

    with pytest.raises(desic.ArtifactError, match=r"input name"):
        desic.load(edited(artifact, tmp_path, edit))


def test_an_integer_too_long_to_print_is_an_artifact_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = edited(artifact, tmp_path, lambda data: None)
    text = path.read_text("utf-8").replace('"ticket": "app crash"', '"ticket": ' + "9" * 4400, 1)
    path.write_text(text, encoding="utf-8")
    with pytest.raises(desic.ArtifactError):
        prompts_of(path)


# --- a legitimately recursive output model ------------------------------------------------------


class Tree(BaseModel):
    label: str
    children: list[Tree] = []


class Outline(BaseModel):
    title: str
    root: Tree


@desic.signature
def outline(text: str) -> Outline:
    """Outline the text."""


@desic.signature
def parse_tree(text: str) -> Tree:
    """Parse the text into a tree."""


TREE = {"label": "a", "children": [{"label": "b", "children": [{"label": "c", "children": []}]}]}


@pytest.mark.parametrize(
    ("sig", "answer"), [(outline, {"title": "t", "root": TREE}), (parse_tree, TREE)], ids=["inside", "root"]
)
def test_a_recursive_output_model_loads_and_runs_without_the_code(
    tmp_path: Path, sig: desic.Signature[..., Any], answer: dict[str, Any]
) -> None:
    lm = FakeLM(default=answer)
    compiled = desic.compile(sig, trainset=[{"text": "x", **answer}], metric=lambda e, o: 1.0, optimizer="labeled", lm=lm)
    path = compiled.save(tmp_path / "tree.json")
    program = ir.decode_program(path.read_bytes())
    ref = program.nodes[0].signature.ref
    from desic.signature import _registry

    saved = _registry.pop(ref)  # as if the code were not importable
    try:
        loaded = desic.load(path)
        with desic.context(lm=FakeLM(default=answer)):
            result = loaded(text="y")
    finally:
        _registry[ref] = saved
    assert type(result) is not type(answer)  # a rebuilt model, not the user's class
    assert result.model_dump() == answer
    assert loaded.prompts(text="y") == compiled.prompts(text="y")


def test_decode_program_is_the_only_door(artifact: dict[str, Any]) -> None:
    """Everything above goes through ``ir.decode_program``; a valid artifact round-trips."""
    data = msgspec.json.encode(artifact)
    program = ir.decode_program(data)
    assert ir.decode_program(ir.encode_program(program)) == program
