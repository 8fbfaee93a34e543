# mypy: disable-error-code="empty-body,index,operator,union-attr"
"""Fuzzing the artifact loader and renderer: a few hundred seeded mutations of a real
artifact (types, sizes, nesting, deleted and duplicated keys, Jinja payloads, huge
numbers, unicode, raw bytes). Every case must load and render, or raise ``ArtifactError``;
nothing else, ever.

The work of a case is bounded by desic's own limits (``ir.MAX_NESTING``, the render
budget of ``desic.render``), not by a clock; ``deadline`` is only a hang detector that
turns a regression into a failure naming the case instead of a stuck suite.
"""

from __future__ import annotations

import copy
import json
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic import ir
from desic.render import default_template
from desic.report import format_graph, node_prompt
from desic.testing import FakeLM
from tests.support.hang import Hung, deadline

SEED = 20260611
CASES = 400  # per base artifact


class Route(BaseModel):
    team: Literal["billing", "tech"]
    reason: str
    tags: list[str] = []


@desic.signature
def route(ticket: str, channel: str = "email") -> Route:
    """Route the ticket to a team."""


class Address(BaseModel):
    city: str
    country: str = "NL"


class Contact(BaseModel):
    """Who wrote the ticket."""

    kind: Literal["customer", "partner", "spam"]
    address: Address
    phone: str | None = None


@desic.signature(strategy="chain_of_thought")
def who(ticket: str, history: list[str], priority: int = 1) -> Contact:
    """Identify who wrote the ticket."""


BASES: dict[str, Any] = {
    "route": (
        route,
        [
            {"ticket": "money gone", "team": "billing", "reason": "a refund", "tags": ["refund"]},
            {"ticket": "app crash", "team": "tech", "reason": "a bug", "tags": []},
            {"ticket": "charged twice", "team": "billing", "reason": "double charge", "tags": ["vip"]},
        ],
        {"team": "tech", "reason": "x", "tags": []},
    ),
    "who": (
        who,
        [
            {"ticket": "Ann from Utrecht", "history": ["hi"], "kind": "customer", "address": {"city": "Utrecht"}},
            {"ticket": "CHEAP WATCHES", "history": [], "kind": "spam", "address": {"city": "?", "country": "XX"}},
        ],
        {"reasoning": "r", "kind": "customer", "address": {"city": "Utrecht", "country": "NL"}, "phone": None},
    ),
}


# --- what mutations put in ------------------------------------------------------------------

PAYLOADS = [
    "{{ 7*7 }}",
    "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}",
    "{{ 'x' * 200000000 }}",
    "{{ range(10**9)|list|length }}",
    "{% include 'other.j2' %}",
    "{% import 'm.j2' as m %}",
    "{% extends 'base.j2' %}",
    "{{ ''.__class__.__mro__[1].__subclasses__() }}",
    "{{ lipsum(10**9) }}",
    "{% macro f() %}{{ f() }}{% endmacro %}{{ f() }}",
    "{{ self.system() }}",
    "{{ 10 ** 100000 }}",
    "{{ '%999999999d' % 1 }}",
    "{{ 'a'.ljust(10**9) }}",
    "{{ '{:>999999999}'.format(1) }}",
    "{{ (range(10000)|list) * 10000 }}",
    "{% set ns = namespace(s='x') %}{% for i in range(64) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}",
    "{{ instructions * 100000 }}",
    "{{ x",
    "{% for %}",
    "{% endblock %}",
    "{% block system %}nested{% endblock %}",
    "{% raw %}",
    "{{ undefined_name }}",
    "{{ input_fields|tojson(indent=100) }}",
    "{{ output|tojson }}{{ answer|upper }}",
    "{{ fields|map(attribute='value')|join(', ') }}",
    "{% for f in fields %}{{ loop.index }}: {{ f.name|title }}{% endfor %}",
    "{{ inputs.ticket|replace('', inputs.ticket * 1000) }}",
    "{{ cycler('a', 'b').next() }}{{ namespace(a=1).a }}{{ dict(a=1)|items|list }}",
    "{# comment #}\u202e\u200b\x00",
    "{{ " + "(" * 3000 + "1" + ")" * 3000 + " }}",
]

SCALARS: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    7,
    2**63,
    -(2**64),
    10**40,
    int("9" * 4300),
    1.5,
    -0.0,
    1e308,
    "",
    "x",
    "predict",
    "chain_of_thought",
    "../../../../etc/passwd",
    "ünïcødé ✓ 🎉",
    "\u202eRTL\u200b\ufeff",
    "\x00\x01\x1f",
    "a" * 5000,
    "#/$defs/Nope",
    "{{ 7*7 }}",
]

HUGE_NUMBERS = ["1" + "0" * 4299, "1" + "0" * 4400, "1e999", "-1e999", "1e-999", "123456789012345678901234567890.5"]


def random_value(rng: random.Random, depth: int = 0) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if depth < 3 and roll < 0.3:
        return {rng.choice(["type", "enum", "properties", "items", "$ref", "a", "_x", "model_config"]): random_value(rng, depth + 1)}
    if roll < 0.45:
        return rng.choice(PAYLOADS)
    return copy.deepcopy(rng.choice(SCALARS))


def paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    yield prefix
    if isinstance(value, dict):
        for key, item in value.items():
            yield from paths(item, (*prefix, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from paths(item, (*prefix, i))


def get(value: Any, path: tuple[Any, ...]) -> Any:
    for key in path:
        value = value[key]
    return value


def put(doc: Any, path: tuple[Any, ...], new: Any) -> Any:
    if not path:
        return new
    get(doc, path[:-1])[path[-1]] = new
    return doc


def pick(rng: random.Random, doc: Any, *, containers: type | tuple[type, ...] | None = None) -> tuple[Any, ...] | None:
    """A random path, mostly inside the first node (where the interesting code reads)."""
    root: tuple[Any, ...] = ("nodes", 0) if first_node(doc) is not None and rng.random() < 0.8 else ()
    candidates = [root + p for p in paths(get(doc, root))]
    if containers is not None:
        candidates = [p for p in candidates if isinstance(get(doc, p), containers)]
    return rng.choice(candidates) if candidates else None


# --- mutations: each takes (rng, doc) and returns the new doc ------------------------------


def change_type(rng: random.Random, doc: Any) -> Any:
    path = pick(rng, doc)
    return doc if path is None else put(doc, path, random_value(rng))


def delete_key(rng: random.Random, doc: Any) -> Any:
    path = pick(rng, doc, containers=dict)
    if path is not None and get(doc, path):
        target = get(doc, path)
        del target[rng.choice(list(target))]
    return doc


def duplicate_item(rng: random.Random, doc: Any) -> Any:
    path = pick(rng, doc, containers=list)
    if path is not None and get(doc, path):
        items = get(doc, path)
        items.extend(copy.deepcopy(items) * rng.choice([1, 2, 10]))
    return doc


def grow_string(rng: random.Random, doc: Any) -> Any:
    path = pick(rng, doc, containers=str)
    if path is not None:  # up to 300k characters: large, yet the file stays small enough to be quick
        put(doc, path, (get(doc, path) * rng.choice([2, 100, 10_000]))[:300_000] or "y" * 100_000)
    return doc


def nest(rng: random.Random, doc: Any) -> Any:
    path = pick(rng, doc)
    if path is None:
        return doc
    depth = rng.choice([3, 20, 60, 150, 5000, 100_000])
    if depth > 150:  # deeper than json.dumps goes: spliced in as text by ``encode``
        return put(doc, path, f"\x00NEST{depth}\x00")
    value = get(doc, path)
    for _ in range(depth):
        value = [value] if rng.random() < 0.5 else {"items": value, "type": "array"}
    return put(doc, path, value)


def template_payload(rng: random.Random, doc: Any) -> Any:
    node = first_node(doc)
    if node is None:
        return doc
    template = node.get("template") if isinstance(node.get("template"), str) and node.get("template") else default_template("predict")
    payload = rng.choice(PAYLOADS)
    where = rng.choice(["{{ instructions }}", "{{ f.value }}", "{{ answer }}", "{% endblock %}", ""])
    if where and where in template:
        template = template.replace(where, payload + where, 1)
    else:
        template = payload if rng.random() < 0.5 else template + payload
    node["template"] = template
    return doc


def data_payload(rng: random.Random, doc: Any) -> Any:
    """Jinja (or huge) text where the artifact holds data: it must stay data."""
    node = first_node(doc)
    if node is None:
        return doc
    payload = rng.choice(PAYLOADS)
    demos = node.get("demos")
    spots = ["instructions"]
    if isinstance(demos, list) and demos and isinstance(demos[0], dict):
        spots += ["demo input", "demo output"]
    spot = rng.choice(spots)
    if spot == "instructions":
        node["instructions"] = payload
    elif spot == "demo input" and isinstance(demos[0].get("inputs"), dict):
        demos[0]["inputs"]["ticket"] = payload
    elif isinstance(demos[0].get("output"), dict):
        demos[0]["output"]["reason"] = payload
    return doc


def strategy(rng: random.Random, doc: Any) -> Any:
    node = first_node(doc)
    if node is not None:
        node["strategy"] = rng.choice(["chain_of_thought", "predict", "", "../../render/templates/predict", "nope", 3])
        if rng.random() < 0.5:
            node["template"] = ""
    return doc


def schema_edit(rng: random.Random, doc: Any) -> Any:
    """A change inside a schema, with the fingerprint cleared so that loading reaches it."""
    node = first_node(doc)
    signature = node.get("signature") if node is not None else None
    if not isinstance(signature, dict):
        return doc
    target = rng.choice(["output_schema", "inputs"])
    if target in signature:
        sub = signature[target]
        candidates = list(paths(sub))
        path = rng.choice(candidates)
        roll = rng.random()
        if roll < 0.3 and isinstance(get(sub, path), dict):
            get(sub, path)[rng.choice(["$ref", "enum", "anyOf", "items", "properties", "type", "title", "description"])] = random_value(rng)
        elif roll < 0.45 and isinstance(sub, dict) and isinstance(sub.get("properties"), dict):
            definition = {"$ref": "#/$defs/Node"} if rng.random() < 0.5 else {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/Node"}}},
            }
            sub["$defs"] = {"Node": definition}
            sub["properties"]["tree"] = {"$ref": "#/$defs/Node"}
        elif roll < 0.6 and isinstance(sub, dict) and isinstance(sub.get("properties"), dict):
            sub["properties"][rng.choice(["_x", "model_config", "model_validate", "json", "my field", "class", "ünï"])] = {"type": "string"}
        elif roll < 0.7 and isinstance(sub, list) and sub and isinstance(sub[0], dict):
            sub[0]["name"] = rng.choice(["my input", "class", "", "channel", "_x", "ünï", 7])
        elif path:
            put(sub, path, random_value(rng))
    node["fingerprint"] = ""
    signature["ref"] = "elsewhere:route"
    return doc


def header(rng: random.Random, doc: Any) -> Any:
    if isinstance(doc, dict):
        doc[rng.choice(["format", "format_version"])] = rng.choice([0, -1, 2, 10**30, "1", None, "desic.program", 1])
    return doc


def first_node(doc: Any) -> dict[str, Any] | None:
    nodes = doc.get("nodes") if isinstance(doc, dict) else None
    if isinstance(nodes, list) and nodes and isinstance(nodes[0], dict):
        return nodes[0]
    return None


MUTATIONS = [
    change_type,
    delete_key,
    duplicate_item,
    grow_string,
    nest,
    template_payload,
    template_payload,
    data_payload,
    strategy,
    schema_edit,
    schema_edit,
    header,
]


def encode(rng: random.Random, doc: Any) -> bytes:
    """The document as JSON, sometimes with text-level damage JSON data cannot express."""
    text = json.dumps(doc, ensure_ascii=rng.random() < 0.5)
    for depth in (5000, 100_000):
        text = text.replace(f'"\\u0000NEST{depth}\\u0000"', "[" * depth + "1" + "]" * depth)
    roll = rng.random()
    if roll < 0.06:  # a duplicated key
        match = '"strategy": '
        if match in text:
            text = text.replace(match, f'{match}"predict", {match}', 1)
    elif roll < 0.12:  # a number JSON allows but Python may not hold
        text = text.replace('"format_version": 1', '"format_version": ' + rng.choice(HUGE_NUMBERS), 1)
        text = text.replace('"max_demos": 8', '"max_demos": ' + rng.choice(HUGE_NUMBERS), 1)
    elif roll < 0.16:  # a lone surrogate
        text = text.replace('"ticket"', '"tick\\ud800et"', 1)
    data = text.encode("utf-8", "surrogatepass")
    roll = rng.random()
    if roll < 0.04:
        data = data[: rng.randrange(len(data))]
    elif roll < 0.08:
        i = rng.randrange(len(data))
        data = data[:i] + bytes([rng.randrange(256)]) + data[i + 1 :]
    elif roll < 0.1:
        data = b"\xef\xbb\xbf" + data  # a byte-order mark
    return data


# --- the test ----------------------------------------------------------------------------------


@pytest.fixture(scope="module", params=sorted(BASES))
def base(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A valid saved artifact (a signature compiled with demos), as JSON data."""
    sig, rows, answer = BASES[request.param]
    compiled: desic.CompiledPipeline[..., Any] = desic.compile(sig, trainset=rows, metric=lambda ex, out: 1.0, optimizer="labeled", lm=FakeLM(default=answer))
    path = compiled.save(tmp_path_factory.mktemp("fuzz") / "base.json")
    data: dict[str, Any] = json.loads(path.read_text("utf-8"))
    assert data["nodes"][0]["demos"]
    return data


def inputs_for(program: ir.Program) -> dict[str, Any]:
    node = program.nodes[0]
    return {f.name: "where is my parcel {{ 7*7 }}" for f in node.signature.inputs}  # any type: no code checks it


def run_case(path: Path) -> str:
    """What happened to one artifact: ok, refused at load, refused at render."""
    try:
        compiled = desic.load(path)
    except desic.ArtifactError:
        try:
            program = ir.decode_program(path.read_bytes())
        except desic.ArtifactError:
            return "refused at decode"
        format_graph(program)  # what ``desic prompts`` shows of any program it reads
        for node in program.nodes:  # a multi-node or drifted program: render its nodes alone
            try:
                node_prompt(node)
            except desic.ArtifactError:
                return "refused at load, node refused at render"
        return "refused at load"
    program = compiled.program
    assert compiled.inspect() and format_graph(program)
    assert ir.decode_program(ir.encode_program(program)) == program  # loads correctly: it round-trips
    values = inputs_for(program)
    try:
        prompts = compiled.prompts(**values)
        messages = compiled.render(program.nodes[0].id, **values)
    except desic.ArtifactError:
        return "refused at render"
    assert prompts[program.nodes[0].id] == messages
    assert all(isinstance(m["content"], str) and m["role"] in ("system", "user", "assistant") for m in messages)
    return "ok"


@pytest.mark.filterwarnings("ignore:Field name:UserWarning")
def test_mutated_artifacts_load_or_raise_artifact_error(base: dict[str, Any], tmp_path: Path) -> None:
    outcomes: Counter[str] = Counter()
    failures: list[str] = []
    for case in range(CASES):
        rng = random.Random(SEED * 1000 + case)
        doc: Any = copy.deepcopy(base)
        applied = []
        for _ in range(rng.choice([1, 1, 2, 3])):
            mutation = rng.choice(MUTATIONS)
            applied.append(mutation.__name__)
            doc = mutation(rng, doc)
        path = tmp_path / f"case{case}.json"
        path.write_bytes(encode(rng, doc))
        try:
            with deadline(20.0):
                outcomes[run_case(path)] += 1
        except Exception as exc:  # noqa: BLE001 - anything but ArtifactError escaping is the bug hunted here
            failures.append(f"case {case} ({', '.join(applied)}): {type(exc).__name__}: {str(exc)[:300]}")
        except Hung as exc:
            failures.append(f"case {case} ({', '.join(applied)}): {exc}")
    assert not failures, "\n".join(failures)
    assert sum(outcomes.values()) == CASES
    # the mutations reach every stage: some load and render, some are refused at each door
    assert outcomes["ok"] >= CASES // 10, outcomes
    assert outcomes["refused at decode"] >= CASES // 10, outcomes
    assert outcomes["refused at render"] >= CASES // 20, outcomes
    print(f"\nfuzzed {CASES} artifacts: {dict(outcomes)}")
