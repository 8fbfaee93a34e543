# mypy: disable-error-code="empty-body"
"""An artifact is untrusted input: loading and rendering it runs no code, reads no other file,
stays within bounded work, and every malformed artifact is an ``ArtifactError``.

Each test here loads a hand-edited copy of a real artifact (a signature compiled with
``optimizer="labeled"``). A template payload that would run away is stopped by the render
limits (``desic.render`` counts steps and characters), so no test here relies on a clock;
``deadline`` only turns a regression into a failure instead of a hung suite.
"""

from __future__ import annotations

import copy
import itertools
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from pydantic import BaseModel
from typer.testing import CliRunner

import desic
from desic import ir
from desic.render import default_template, render_messages
from desic.testing import FakeLM
from tests.support.hang import deadline


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


# --- template payloads are bounded --------------------------------------------------------------


def test_nested_range_loops_stop_at_the_step_limit(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = with_template(
        artifact, tmp_path, "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
    )
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*template block 'system'.*limit"):
        prompts_of(path)


def test_nested_loops_over_a_literal_stop_at_the_step_limit(artifact: dict[str, Any], tmp_path: Path) -> None:
    loops = "{% set r = range(10000) %}" + "{% for i in r %}" * 4 + "{% endfor %}" * 4
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*steps"):
        prompts_of(with_template(artifact, tmp_path, loops))


def test_string_multiplication_cannot_build_a_huge_prompt(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = with_template(artifact, tmp_path, "{{ 'x' * 200000000 }}")
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*characters"):
        prompts_of(path)


def test_a_huge_range_is_an_artifact_error(artifact: dict[str, Any], tmp_path: Path) -> None:
    path = with_template(artifact, tmp_path, "{{ range(10**9)|list|length }}")
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*range of 1000000000 items.*limit"):
        prompts_of(path)


@pytest.mark.parametrize(
    "payload",
    ["{% include 'other.j2' %}", "{% import 'macros.j2' as m %}", "{% from 'macros.j2' import m %}"],
)
def test_templates_cannot_load_other_templates(artifact: dict[str, Any], tmp_path: Path, payload: str) -> None:
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*cannot (include|import)"):
        prompts_of(with_template(artifact, tmp_path, payload))


def test_extends_is_refused(artifact: dict[str, Any], tmp_path: Path) -> None:
    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*cannot extend"):
        prompts_of(with_template(artifact, tmp_path, "{% extends 'base.j2' %}", block="top"))


# Payloads that would run away (time or memory) without the render limits, with the limit
# or rule that stops each. They render in the system block, or in the user block per call.
BOMBS = [
    ("{% macro f(n) %}{{ f(n) }}{% endmacro %}{{ f(1) }}", "nested calls"),
    ("{{ self.BLOCK() }}", "nested calls"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}", "characters"),
    ("{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "characters"),
    ("{% set ns = namespace(s=[1]) %}{% for i in range(64) %}{% set ns.s = ns.s + ns.s %}{% endfor %}", "characters"),
    ("{{ (range(10000)|list) * 10000 }}", "characters"),
    ("{{ 'x'|center(10**9) }}", "characters"),
    ("{{ 'x'|indent(10**9, true) }}", "characters"),
    ("{{ 'ab'.ljust(10**9) }}", "unsafe"),
    ("{{ '{:>999999999}'.format(1) }}", "unsafe"),
    ("{{ '%999999999d' % 1 }}", "characters"),
    ("{{ '%*d' % (999999999, 1) }}", "'*'"),
    ("{{ '%999999999d'|format(1) }}", "characters"),
    ("{{ 10 ** 1000000000 }}", "bits"),
    ("{% set ns = namespace(n=3) %}{% for i in range(40) %}{% set ns.n = ns.n * ns.n %}{% endfor %}", "bits"),
    ("{{ lipsum(10**9) }}", "undefined"),
    ("{{ ([1] * 10000)|join('x' * 100000) }}", "characters"),
    ("{% set s = 'x' * 100000 %}{{ s|replace('', s) }}", "characters"),
    ("{% set s = 'x' * 100000 %}{{ s.replace('', s) }}", "unsafe"),
    ("{{ [1]|slice(10**9)|list }}", "range"),
    ("{{ [1]|batch(10**9, 0)|list }}", "characters"),
    ("{% for i in range(10000) %}{% for j in range(10000) if false %}{% endfor %}{% endfor %}", "steps"),
    ("{% for i in range(10000) %}{% for j in range(10000) %}{% if j is odd %}{% endif %}{% endfor %}{% endfor %}", "steps"),
    ("{% set s = 'x' * 400000 %}{% for i in range(10000) %}{% if 'y' in s %}{% endif %}{% endfor %}", "scanned"),
    ("{% set s = 'x' * 400000 %}{% for i in range(10000) %}{{ s.count('y') }}{% endfor %}", "scanned"),
    ("{% set z = [0] * 10000 %}{% for i in range(10000) %}{{ z|select|list }}{% endfor %}", "steps"),
    ("{% for i in range(10000) %}" + "x" * 1000 + "{% endfor %}", "characters"),
    ("{% set t %}{% for i in range(10000) %}" + "x" * 1000 + "{% endfor %}{% endset %}", "characters"),
    ("{% for i in range(10000) %}{{ '" + "x" * 90000 + "' }}{% endfor %}", "characters"),
    ("{% set t %}{% for i in range(10000) %}{{ '" + "x" * 90000 + "' }}{% endfor %}{% endset %}", "characters"),
    ("{{ ('x' * 90000)|upper|lower|length }}" * 40, "characters"),
    ("{{ range(10000)|map('string')|join|length }}" * 40, "steps"),
    ("{{ " + "(" * 5000 + "1" + ")" * 5000 + " }}", "cannot be compiled"),
    ("{% for i in [1] %}" * 30 + "{% endfor %}" * 30, "cannot be compiled"),
    ("{# " + "x" * 300000 + " #}", "characters long"),
]


@pytest.mark.parametrize(("payload", "limit"), BOMBS, ids=[f"bomb{i}" for i in range(len(BOMBS))])
@pytest.mark.parametrize("block", ["system", "user"])
def test_template_bombs_are_stopped(artifact: dict[str, Any], tmp_path: Path, payload: str, limit: str, block: str) -> None:
    path = with_template(artifact, tmp_path, payload.replace("self.BLOCK", f"self.{block}"), block=block)
    with pytest.raises(desic.ArtifactError, match=r"node 'route'") as info:
        prompts_of(path)
    assert limit in str(info.value)


def test_one_budget_bounds_a_node_however_many_demos_it_has(artifact: dict[str, Any], tmp_path: Path) -> None:
    """Each demo's user turn alone stays under the limits; together they do not."""
    payload = "{% for i in range(5000) %}{% for j in range(2) %}{% endfor %}{% endfor %}"
    template = default_template("predict").replace("{{ f.value }}", "{{ f.value }}" + payload)

    def edit(data: dict[str, Any]) -> None:
        node = data["nodes"][0]
        node["template"] = template
        node["demos"] = node["demos"] * 200

    with pytest.raises(desic.ArtifactError, match=r"node 'route': template block 'user' exceeds a render limit: more than \d+ steps"):
        prompts_of(edited(artifact, tmp_path, edit))
    node = ir.Node(id="route", signature=route.spec, template=template)
    assert render_messages(node, {"ticket": "one call"})[-1]["content"] == "ticket: one call"


def test_a_bomb_in_instructions_or_demos_is_data(artifact: dict[str, Any], tmp_path: Path) -> None:
    bomb = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}{{ 'x' * 10**9 }}"

    def edit(data: dict[str, Any]) -> None:
        node = data["nodes"][0]
        node["instructions"] = bomb
        node["demos"][0]["inputs"]["ticket"] = bomb
        node["demos"][0]["output"]["reason"] = bomb

    messages = prompts_of(edited(artifact, tmp_path, edit))["route"]
    assert messages[0]["content"].startswith(bomb)
    assert messages[1]["content"] == f"ticket: {bomb}"
    assert bomb in messages[2]["content"]


def test_the_limits_leave_ordinary_custom_templates_alone(artifact: dict[str, Any], tmp_path: Path) -> None:
    template = (
        "{% block system %}{% macro line(f) %}- {{ f.name|upper }} ({{ f.type }}){% endmacro %}"
        "{{ instructions|trim }}\n"
        "{% set ns = namespace(n=0) %}"
        "{% for f in input_fields %}{{ line(f) }}{% if not loop.last %}, {% endif %}{% set ns.n = ns.n + 1 %}{% endfor %}\n"
        "{{ ns.n }} inputs; outputs: {{ output_fields|map(attribute='name')|join(', ') }}; "
        "{{ '%.2f'|format(0.5) }} {{ '%s!' % signature }} {{ (range(3)|list) * 2 }} {{ 'ab' * 2 }} {{ 2 ** 10 }}"
        "{% if 'team' in output_fields|map(attribute='name')|list %} team{% endif %}"
        "{{ ' ' ~ strategy ~ ' ' }}{{ instructions.split()|length }}{{ instructions[0:5]|lower }}{% endblock %}"
        "{% block user %}{% for f in fields %}<{{ f.name }}>{{ f.value }}</{{ f.name }}>{% endfor %}{% endblock %}"
        "{% block assistant %}{{ output|tojson }}{% endblock %}"
    )

    def edit(data: dict[str, Any]) -> None:
        data["nodes"][0]["template"] = template

    messages = prompts_of(edited(artifact, tmp_path, edit))["route"]
    assert messages[0]["content"] == (
        "Route the ticket to a team.\n- TICKET (string), - CHANNEL (string)"  # trim_blocks ate the newline
        "2 inputs; outputs: team, reason; 0.50 route! [0, 1, 2, 0, 1, 2] abab 1024 team predict 6route"
    )
    assert messages[-1]["content"] == "<ticket>where is my parcel</ticket><channel>email</channel>"
    assert messages[2]["content"] == '{"reason": "a bug", "team": "tech"}'


def test_large_inputs_render_with_a_custom_template(artifact: dict[str, Any], tmp_path: Path) -> None:
    """The character limit grows with the data a block is given: long inputs are fine."""
    template = default_template("predict").replace("{{ f.value }}", "[{{ f.value }}]")
    node = ir.Node(id="route", signature=route.spec, template=template)
    ticket = "long ticket " * 200_000  # 2.4 M characters
    with deadline():
        messages = render_messages(node, {"ticket": ticket, "channel": "email"})
    assert messages[-1]["content"] == f"ticket: [{ticket}]\nchannel: [email]"


# --- strategy is a name, never a path -----------------------------------------------------------


def test_strategy_must_be_a_known_name(artifact: dict[str, Any], tmp_path: Path) -> None:
    def edit(data: dict[str, Any]) -> None:
        data["nodes"][0]["strategy"] = "../../../../etc/secret"
        data["nodes"][0]["template"] = ""

    with pytest.raises(desic.ArtifactError, match=r"node 'route'.*unknown strategy '../../../../etc/secret'"):
        desic.load(edited(artifact, tmp_path, edit))


def test_a_strategy_path_never_reads_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "secret.j2"
    secret.write_text(
        "{% block system %}SECRET{% endblock %}{% block user %}SECRET{% endblock %}{% block assistant %}{% endblock %}",
        encoding="utf-8",
    )
    import desic.render

    templates = Path(desic.render.__file__).parent / "templates"
    strategy = os.path.relpath(secret.with_suffix(""), templates)
    node = ir.Node(id="route", signature=route.spec, strategy=strategy, template="")
    with pytest.raises(desic.ArtifactError, match="unknown strategy"):
        render_messages(node, {"ticket": "t"})


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


def test_a_boolean_items_schema_is_described_as_any(artifact: dict[str, Any], tmp_path: Path) -> None:
    """JSON schema allows ``"items": true``; pydantic never writes it, but an artifact may."""

    def change(schema: dict[str, Any]) -> None:
        schema["properties"]["tags"] = {"type": "array", "items": True}

    system = prompts_of(with_output_schema(artifact, tmp_path, change))["route"][0]["content"]
    assert "- tags (list of any)" in system


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


def test_a_long_chain_of_nodes_is_shown_without_recursion(artifact: dict[str, Any], tmp_path: Path) -> None:
    """``desic prompts`` and the report lay out the graph: 3000 nodes in a chain (a loop
    feeding a signature its own output) must not exhaust the stack."""
    from desic.report import format_graph, graph_layers

    def edit(data: dict[str, Any]) -> None:
        node = data["nodes"][0]
        ids = ["route"] + [f"route#{i}" for i in range(2, 3001)]
        data["nodes"] = [{**node, "id": i} for i in ids]
        data["edges"] = [{"src": a, "dst": b, "field": "ticket"} for a, b in itertools.pairwise(ids)]
        data["edges"].append({"src": ids[-1], "dst": ids[0], "field": "channel"})  # and a cycle

    program = ir.decode_program(edited(artifact, tmp_path, edit).read_bytes())
    with deadline():
        layers = graph_layers(program)
        text = format_graph(program)
    assert [len(layer) for layer in layers] == [1] * 3000
    assert sorted(i for layer in layers for i in layer) == sorted(program.node_ids)
    assert "route#3000" in text


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


# --- the command line ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    ["{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}", "{% include 'x' %}"],
)
def test_cli_prompts_of_a_malformed_artifact_is_a_one_line_error(
    artifact: dict[str, Any], tmp_path: Path, payload: str
) -> None:
    from desic.cli import app

    path = with_template(artifact, tmp_path, payload)
    with deadline():
        result = CliRunner().invoke(app, ["prompts", str(path), "--input", '{"ticket": "hi"}'])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 5
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and "node 'route'" in lines[0]
    assert lines[1].startswith("fix: ")
    assert len(lines) == 2


def test_decode_program_is_the_only_door(artifact: dict[str, Any]) -> None:
    """Everything above goes through ``ir.decode_program``; a valid artifact round-trips."""
    data = msgspec.json.encode(artifact)
    program = ir.decode_program(data)
    assert ir.decode_program(ir.encode_program(program)) == program
