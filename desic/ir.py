"""The immutable intermediate representation of a compiled pipeline.

Everything here is plain data (frozen ``msgspec.Struct``\\s): it encodes to JSON without
code, decodes with a typed decoder that executes nothing, and every transformation
returns a new object (``msgspec.structs.replace``).

``SignatureSpec`` describes what the code declares (and is fingerprinted to detect drift);
``Node`` adds what an optimizer may change (instructions, demos, template, LM overrides).
"""

from __future__ import annotations

import hashlib
import json
import keyword
import math
import re
from collections.abc import Callable
from typing import Any

import msgspec

__all__ = [
    "DEMO_MODES",
    "DEMO_RETRIEVERS",
    "FINISH",
    "FORMAT_VERSION",
    "MAX_NESTING",
    "MIGRATIONS",
    "SAMPLING_KINDS",
    "STRATEGIES",
    "Demo",
    "DemoSelect",
    "Edge",
    "FieldSpec",
    "LMOverrides",
    "Node",
    "Program",
    "ProgramMeta",
    "Sampling",
    "SignatureSpec",
    "ToolSpec",
    "Variant",
    "canonical_json",
    "describe_type",
    "fingerprint",
    "spec_diff",
    "tools_diff",
]

FORMAT_VERSION = 1
FORMAT_NAME = "desic.program"

#: How a node prompts: the names a ``Node.strategy`` may take (each has a shipped template).
STRATEGIES = ("predict", "chain_of_thought", "react")

#: The action a ``react`` node takes to end its trajectory (no tool may take this name).
FINISH = "finish"

#: How deep an artifact's JSON may nest (objects and arrays). Real artifacts stay far below:
#: schemas keep nested models in ``$defs``. The bound keeps every recursive consumer of the
#: data (schemas, ``json.dumps`` of demos, the model builder) far from Python's stack limit.
MAX_NESTING = 128


def canonical_json(value: Any) -> bytes:
    """Deterministic JSON (sorted keys) used for every hash in desic."""
    return msgspec.json.encode(value, order="sorted")


def fingerprint(value: Any) -> str:
    return hashlib.sha256(canonical_json(value)).hexdigest()[:16]


class FieldSpec(msgspec.Struct, frozen=True, kw_only=True):
    """One input of a signature."""

    name: str
    schema: dict[str, Any]
    description: str = ""
    required: bool = True
    default: Any = None


class SignatureSpec(msgspec.Struct, frozen=True, kw_only=True):
    """What a ``@signature`` function declares: name, docstring, inputs and output schema.

    ``output_field`` is set when the return type was a bare type (``str``, ``list[str]``,
    ``Literal[...]``) wrapped in a one-field model; callers get that field's value.
    """

    name: str
    instructions: str
    inputs: tuple[FieldSpec, ...]
    output_schema: dict[str, Any]
    output_field: str | None = None
    ref: str = ""  # "module:qualname" of the function, for finding it again (never imported)

    @property
    def fingerprint(self) -> str:
        data = msgspec.to_builtins(self)
        data.pop("ref", None)
        return fingerprint(data)

    @property
    def input_names(self) -> tuple[str, ...]:
        return tuple(f.name for f in self.inputs)

    @property
    def output_names(self) -> tuple[str, ...]:
        return tuple(self.output_schema.get("properties", {}))


class Demo(msgspec.Struct, frozen=True, kw_only=True):
    """A worked example shown to the LM: inputs and the output (as JSON data)."""

    inputs: dict[str, Any]
    output: dict[str, Any]
    source: str = "labeled"  # "labeled" | "bootstrap" | "manual"


#: How a node picks the demos of a prompt (``DemoSelect.mode``).
DEMO_MODES = ("fixed", "knn")
#: How per-input demos are matched to the input (``DemoSelect.by``).
DEMO_RETRIEVERS = ("bm25", "embeddings")
#: The most numbers one pool vector may hold (``DemoSelect.vectors``).
MAX_VECTOR_DIMS = 16384


class DemoSelect(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Which demos a node's prompt shows.

    ``mode="fixed"`` (the default): ``Node.demos``, the same in every prompt.
    ``mode="knn"``: for each input, the ``k`` demos of ``pool`` most similar to it, ranked
    by ``by`` over the input fields named in ``fields`` (all inputs when empty), most
    similar last (nearest the question): ``"bm25"`` (the index is rebuilt from the pool
    when the program is loaded) or ``"embeddings"`` (cosine similarity of the LM's
    embeddings: ``vectors`` holds each pool demo's unit vector, computed at compile time;
    the input is embedded by the node's LM when it runs). The pool is plain data, so the
    choice is the same wherever the program runs.
    """

    mode: str = "fixed"
    k: int = 4
    by: str = "bm25"
    fields: tuple[str, ...] = ()
    pool: tuple[Demo, ...] = ()
    vectors: tuple[tuple[float, ...], ...] = ()

    @property
    def per_input(self) -> bool:
        return self.mode == "knn"


class LMOverrides(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Per-node LM parameters; ``None`` means "use the LM's own setting"."""

    model: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None


class ToolSpec(msgspec.Struct, frozen=True, kw_only=True):
    """A tool a ``react`` node may call, as data: its name, what the model is told it does
    (an optimizer may rewrite ``description``) and the JSON schema of its arguments. Never
    code: loading binds the name to the user's function (``desic.load(..., pipeline=...)``)
    and checks ``parameters`` against it (drift, like signatures)."""

    name: str
    description: str = ""
    parameters: dict[str, Any] = {}


#: The inference-time strategies a ``Node.sampling`` may name (see ``desic.sampling``).
SAMPLING_KINDS = ("majority", "best_of_n", "refine")


class Sampling(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """A node answers from several samples: ``kind`` is one of ``SAMPLING_KINDS``;
    ``reward`` names the function that scores samples (never code)."""

    kind: str
    n: int
    temperature: float | None = None
    threshold: float | None = None
    reward: str | None = None


class Variant(msgspec.Struct, frozen=True, kw_only=True):
    """Other instructions and demos for a node (an ensemble member)."""

    instructions: str = ""
    demos: tuple[Demo, ...] = ()


class Node(msgspec.Struct, frozen=True, kw_only=True):
    id: str
    signature: SignatureSpec
    strategy: str = "predict"
    instructions: str = ""
    template: str = ""
    demos: tuple[Demo, ...] = ()
    lm: LMOverrides = LMOverrides()
    fingerprint: str = ""
    sampling: Sampling | None = None
    variants: tuple[Variant, ...] = ()
    # ``react`` nodes only: the tools the agent may call and its step limit (model calls,
    # the final answer included).
    tools: tuple[ToolSpec, ...] = ()
    max_steps: int = 0
    select: DemoSelect | None = None  # None: fixed demos (``Node.demos``)

    @property
    def demos_text(self) -> str:
        """The node's demos in words: ``3 demos`` or ``per-input demos: 4 of 20 (bm25)``."""
        s = self.select
        if s is not None and s.per_input:
            over = f" over {', '.join(s.fields)}" if s.fields else ""
            return f"per-input demos: {s.k} of {len(s.pool)} ({s.by}{over})"
        return f"{len(self.demos)} demos"


class Edge(msgspec.Struct, frozen=True, array_like=False):
    """``src``'s output flowed into input ``field`` of ``dst`` (observed while tracing)."""

    src: str
    dst: str
    field: str


class ProgramMeta(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    desic_version: str = ""
    created_at: str = ""
    lm: dict[str, Any] = {}
    optimizer: str | None = None
    optimizer_config: dict[str, Any] = {}
    score: float | None = None
    score_split: str | None = None
    trainset_fingerprint: str | None = None
    run_id: str | None = None


class Program(msgspec.Struct, frozen=True, kw_only=True):
    """A pipeline's nodes and edges plus provenance: the content of an artifact."""

    format: str = FORMAT_NAME
    format_version: int = FORMAT_VERSION
    pipeline: str = ""
    nodes: tuple[Node, ...] = ()
    edges: tuple[Edge, ...] = ()
    meta: ProgramMeta = ProgramMeta()

    def node(self, node_id: str) -> Node | None:
        for node in self.nodes:
            if node.id == node_id:
                return node
        return None

    @property
    def node_ids(self) -> tuple[str, ...]:
        return tuple(n.id for n in self.nodes)

    def with_node(self, node: Node) -> Program:
        """A new program with ``node`` replacing the node of the same id (or appended)."""
        nodes = list(self.nodes)
        for i, old in enumerate(nodes):
            if old.id == node.id:
                nodes[i] = node
                break
        else:
            nodes.append(node)
        return msgspec.structs.replace(self, nodes=tuple(nodes))

    def replace(self, **changes: Any) -> Program:
        return msgspec.structs.replace(self, **changes)


def describe_type(schema: dict[str, Any]) -> str:
    """A JSON schema in words, as prompts and drift messages show it (``list of string``,
    ``one of: "a", "b"``, ``integer or null``)."""
    if not isinstance(schema, dict):  # ``true`` (anything) is a schema too, e.g. as "items"
        return "any"
    mark = schema.get("x-desic")  # desic.Image, desic.History (see desic.media)
    if mark == "image":
        return "image"
    if mark == "history":
        return "conversation history"
    if "enum" in schema:
        return "one of: " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    if "anyOf" in schema:
        return " or ".join(describe_type(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {describe_type(schema.get('items', {}))}"
    if "$ref" in schema:
        return "object " + str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(schema.get("type", "any"))


def spec_diff(old: SignatureSpec, new: SignatureSpec) -> list[str]:
    """Readable, field-level differences between two specs (empty when equal)."""
    lines: list[str] = []
    if old.name != new.name:
        lines.append(f"name: {old.name!r} -> {new.name!r}")
    if old.instructions != new.instructions:
        lines.append(f"docstring: {old.instructions!r} -> {new.instructions!r}")
    old_in = {f.name: f for f in old.inputs}
    new_in = {f.name: f for f in new.inputs}
    for name in old_in.keys() - new_in.keys():
        lines.append(f"input {name!r}: removed")
    for name in new_in.keys() - old_in.keys():
        lines.append(f"input {name!r}: added ({describe_type(new_in[name].schema)})")
    for name in sorted(old_in.keys() & new_in.keys()):
        a, b = old_in[name], new_in[name]
        if a.schema != b.schema:
            lines.append(f"input {name!r}: type {describe_type(a.schema)} -> {describe_type(b.schema)}")
        if a.description != b.description:
            lines.append(f"input {name!r}: description {a.description!r} -> {b.description!r}")
        if (a.required, a.default) != (b.required, b.default):
            lines.append(
                f"input {name!r}: default "
                f"{'required' if a.required else repr(a.default)} -> "
                f"{'required' if b.required else repr(b.default)}"
            )
    if old.output_schema != new.output_schema or old.output_field != new.output_field:
        old_props: dict[str, Any] = old.output_schema.get("properties", {})
        new_props: dict[str, Any] = new.output_schema.get("properties", {})
        changed = False
        for name in sorted(old_props.keys() | new_props.keys()):
            if name not in new_props:
                lines.append(f"output {name!r}: removed")
            elif name not in old_props:
                lines.append(f"output {name!r}: added ({describe_type(new_props[name])})")
            elif old_props[name] != new_props[name]:
                lines.append(
                    f"output {name!r}: {describe_type(old_props[name])} -> {describe_type(new_props[name])}"
                )
            else:
                continue
            changed = True
        if not changed:
            lines.append("output schema: changed (nested definitions or required fields)")
    return lines


class _Header(msgspec.Struct):
    format: str = ""
    format_version: int = 0


def tools_diff(old: tuple[ToolSpec, ...], new: tuple[ToolSpec, ...]) -> list[str]:
    """Readable differences between an artifact's tools and the code's (names and argument
    schemas; a description is the optimizer's to change, never drift)."""
    lines: list[str] = []
    old_by = {t.name: t for t in old}
    new_by = {t.name: t for t in new}
    for name in sorted(old_by.keys() - new_by.keys()):
        lines.append(f"tool {name!r}: removed from the code (the artifact calls it)")
    for name in sorted(new_by.keys() - old_by.keys()):
        lines.append(f"tool {name!r}: added in the code (the artifact never saw it)")
    for name in sorted(old_by.keys() & new_by.keys()):
        a = old_by[name].parameters.get("properties", {})
        b = new_by[name].parameters.get("properties", {})
        for arg in sorted(a.keys() | b.keys()):
            if arg not in b:
                lines.append(f"tool {name!r}: argument {arg!r} removed")
            elif arg not in a:
                lines.append(f"tool {name!r}: argument {arg!r} added ({describe_type(b[arg])})")
            elif a[arg] != b[arg]:
                lines.append(f"tool {name!r}: argument {arg!r}: {describe_type(a[arg])} -> {describe_type(b[arg])}")
        if not any(line.startswith(f"tool {name!r}") for line in lines) and (
            old_by[name].parameters != new_by[name].parameters
        ):
            lines.append(f"tool {name!r}: argument schema changed (required arguments or nested definitions)")
    return lines


def _v0_to_v1(raw: dict[str, Any]) -> dict[str, Any]:
    """Format 0 is the pre-release layout (desic 0.0.x, before ``format_version`` existed):
    the provenance fields (``optimizer``, ``score``, ``lm``, ``run_id``, ...) sat at the top
    level of the artifact. Format 1 moved them into ``meta`` (``ProgramMeta``)."""
    out = dict(raw)
    meta = dict(out.pop("meta", None) or {})
    for key in ProgramMeta.__struct_fields__:
        if key in out:
            meta.setdefault(key, out.pop(key))
    out["meta"] = meta
    return out


#: Upgrades for older artifacts: ``MIGRATIONS[n]`` turns the raw dict of format ``n`` into
#: format ``n + 1``. They run on plain data before the typed decode, so an old artifact is
#: read by the current types and nothing else. Bump ``FORMAT_VERSION`` together with a new
#: entry here and a test that loads a hand-made artifact of the old version.
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _v0_to_v1}


def migrate(raw: dict[str, Any], *, source: str = "<bytes>") -> dict[str, Any]:
    """Bring the raw dict of an older artifact up to ``FORMAT_VERSION``, one step at a time."""
    from .errors import ArtifactError

    version = raw.get("format_version", 0)
    while version < FORMAT_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ArtifactError(f"{source} has format version {version}, which this desic cannot upgrade")
        raw = step(raw)
        version += 1
        raw["format_version"] = version
    return raw


_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_nesting(data: bytes) -> int:
    """How deep the arrays and objects of the JSON text ``data`` nest, without parsing it
    (strings are cut out first, then only the brackets are counted)."""
    depth = deepest = 0
    for byte in _JSON_STRING.sub(b"", data).translate(None, _NOT_BRACKETS):
        if byte in b"[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_program(data: bytes, *, source: str = "<bytes>") -> Program:
    """Decode an artifact, refusing unknown formats and newer versions with clear errors.

    Older formats are upgraded through ``MIGRATIONS`` first; the current format is decoded
    directly by the typed decoder (the fast path). An artifact is untrusted input: whatever
    the bytes, this returns a ``Program`` that ``check_program`` accepts or raises
    ``ArtifactError`` saying what is wrong.
    """
    from .errors import ArtifactError

    nesting = json_nesting(data)
    if nesting > MAX_NESTING:
        raise ArtifactError(
            f"{source} is corrupt: its JSON nests {nesting} levels deep; the limit is {MAX_NESTING}"
        )
    try:
        header = msgspec.json.decode(data, type=_Header)
    except msgspec.DecodeError as exc:
        raise ArtifactError(f"{source} is not a desic artifact (invalid JSON: {exc})") from exc
    if header.format != FORMAT_NAME:
        raise ArtifactError(
            f"{source} is not a desic artifact (format {header.format!r}, expected {FORMAT_NAME!r})"
        )
    if header.format_version > FORMAT_VERSION:
        raise ArtifactError(
            f"{source} has format version {header.format_version}, newer than this desic "
            f"understands ({FORMAT_VERSION}); upgrade desic (pip install -U desic) to load it"
        )
    if header.format_version < 0:
        raise ArtifactError(f"{source} has an invalid format version {header.format_version}")
    try:
        if header.format_version == FORMAT_VERSION:
            program = msgspec.json.decode(data, type=Program)
        else:
            raw = migrate(msgspec.json.decode(data), source=source)
            program = msgspec.convert(raw, Program)
    except msgspec.ValidationError as exc:
        raise ArtifactError(f"{source} is corrupt: {exc}") from exc
    except (msgspec.DecodeError, RecursionError, TypeError, ValueError, AttributeError) as exc:
        # a migration step meeting data of the wrong shape, or a decoder limit
        raise ArtifactError(f"{source} is corrupt: {type(exc).__name__}: {exc}") from exc
    check_program(program, source=source)
    return program


def check_program(program: Program, *, source: str = "<program>") -> None:
    """``ArtifactError`` unless every node of ``program`` can be used as data: a known
    strategy, inputs named like Python parameters, schemas of the JSON-schema shape that
    desic writes (and reads: prompts, the model builder)."""
    from .errors import ArtifactError

    for node in program.nodes:
        where = f"{source}: node {node.id!r}"
        if node.strategy not in STRATEGIES:
            raise ArtifactError(
                f"{where} has an unknown strategy {node.strategy!r}; strategies: {', '.join(STRATEGIES)}"
            )
        if node.sampling is not None:
            check_sampling(node.sampling, where)
        if len(node.variants) > 16:
            raise ArtifactError(f"{where} has {len(node.variants)} variants; at most 16")
        spec = node.signature
        if node.select is not None:
            check_select(node.select, spec, where=where)
        seen: set[str] = set()
        for field in spec.inputs:
            if not field.name.isidentifier() or keyword.iskeyword(field.name):
                raise ArtifactError(f"{where}: input name {field.name!r} is not a Python parameter name")
            if field.name in seen:
                raise ArtifactError(f"{where}: input name {field.name!r} appears twice")
            seen.add(field.name)
            check_schema(field.schema, where=f"{where}: input {field.name!r} schema")
        check_schema(spec.output_schema, where=f"{where}: output schema")
        names: set[str] = set()
        for tool in node.tools:
            if not tool.name.isidentifier() or tool.name == FINISH or tool.name in names:
                raise ArtifactError(
                    f"{where}: tool name {tool.name!r} is not usable (a Python name, unique, not {FINISH!r})"
                )
            names.add(tool.name)
            check_schema(tool.parameters, where=f"{where}: tool {tool.name!r} parameters")
        if node.max_steps < 0:
            raise ArtifactError(f"{where}: max_steps {node.max_steps} is negative")
        if spec.output_field is not None and spec.output_field not in spec.output_names:
            raise ArtifactError(f"{where}: output_field {spec.output_field!r} is not an output property")


def check_sampling(sampling: Sampling, where: str) -> None:
    from .errors import ArtifactError

    if sampling.kind not in SAMPLING_KINDS:
        raise ArtifactError(f"{where} has an unknown sampling {sampling.kind!r}; kinds: {', '.join(SAMPLING_KINDS)}")
    if not 1 <= sampling.n <= 64:
        raise ArtifactError(f"{where}: sampling n={sampling.n} must be within 1..64")
    if sampling.temperature is not None and not 0 <= sampling.temperature <= 2:
        raise ArtifactError(f"{where}: sampling temperature {sampling.temperature} must be within 0..2")
    if sampling.kind in ("best_of_n", "refine") and not sampling.reward:
        raise ArtifactError(f"{where}: {sampling.kind} needs the name of its reward")
def check_select(select: DemoSelect, spec: SignatureSpec, *, where: str) -> None:
    """``ArtifactError`` unless ``select`` is a demo selection ``spec``'s node can use."""
    from .errors import ArtifactError

    if select.mode not in DEMO_MODES:
        raise ArtifactError(f"{where}: demo mode {select.mode!r} is unknown; modes: {', '.join(DEMO_MODES)}")
    if select.by not in DEMO_RETRIEVERS:
        raise ArtifactError(
            f"{where}: demos by {select.by!r} is unknown; per-input demos are matched by: {', '.join(DEMO_RETRIEVERS)}"
        )
    if isinstance(select.k, bool) or select.k < 1:
        raise ArtifactError(f"{where}: per-input demos need k >= 1, not {select.k!r}")
    names = spec.input_names
    for name in select.fields:
        if name not in names:
            raise ArtifactError(f"{where}: per-input demos match input {name!r}, which the node lacks; inputs: {', '.join(names)}")
    if select.by == "embeddings" and select.mode != "fixed":
        if len(select.vectors) != len(select.pool):
            raise ArtifactError(
                f"{where}: per-input demos by embeddings need one vector per pool demo: "
                f"{len(select.vectors)} vectors for {len(select.pool)} demos"
            )
        dims = {len(v) for v in select.vectors}
        if len(dims) > 1 or any(not 1 <= d <= MAX_VECTOR_DIMS for d in dims):
            raise ArtifactError(
                f"{where}: the pool's vectors must all have the same size, 1 to {MAX_VECTOR_DIMS} numbers; "
                f"sizes found: {sorted(dims)[:5]}"
            )
        if not all(math.isfinite(x) for v in select.vectors for x in v):
            raise ArtifactError(f"{where}: the pool's vectors hold a number that is not finite")
    elif select.vectors:
        raise ArtifactError(f"{where}: vectors are only for per-input demos by embeddings (by={select.by!r})")


_SCHEMA_LISTS = ("anyOf", "oneOf", "allOf", "prefixItems")
_SCHEMA_MAPS = ("properties", "$defs")
_SCHEMA_OR_BOOL = ("items", "additionalProperties")
_STRING_KEYS = ("title", "description")


def check_schema(schema: Any, *, where: str = "schema") -> None:
    """``ArtifactError`` unless ``schema`` has the shape of the JSON schemas desic writes:
    the keywords desic reads have the right types (``enum`` a list, ``properties`` an object
    of schemas, ...) and every ``$ref`` names an entry of the root's ``$defs``."""
    from .errors import ArtifactError

    if not isinstance(schema, dict):
        raise ArtifactError(f"{where} must be an object, not {_json_kind(schema)}")
    defs = schema.get("$defs", {})
    names = set(defs) if isinstance(defs, dict) else set()
    todo: list[tuple[Any, str]] = [(schema, "")]
    while todo:
        node, path = todo.pop()
        here = f"{where}{' at ' + path if path else ''}"
        if not isinstance(node, dict):
            raise ArtifactError(f"{here} must be an object, not {_json_kind(node)}")
        if "enum" in node and not isinstance(node["enum"], list):
            raise ArtifactError(f"{here}: 'enum' must be a list")
        if "required" in node and not (
            isinstance(node["required"], list) and all(isinstance(r, str) for r in node["required"])
        ):
            raise ArtifactError(f"{here}: 'required' must be a list of names")
        kind = node.get("type")
        if kind is not None and not isinstance(kind, str) and not (
            isinstance(kind, list) and all(isinstance(k, str) for k in kind)
        ):
            raise ArtifactError(f"{here}: 'type' must be a string or a list of strings")
        for key in _STRING_KEYS:
            if key in node and not isinstance(node[key], str):
                raise ArtifactError(f"{here}: {key!r} must be a string")
        if "$ref" in node:
            ref = node["$ref"]
            if not isinstance(ref, str):
                raise ArtifactError(f"{here}: '$ref' must be a string")
            name = ref.removeprefix("#/$defs/")
            if name == ref or name not in names:
                raise ArtifactError(f"{here} refers to unknown definition {ref.rsplit('/', 1)[-1]!r}")
        for key in _SCHEMA_LISTS:
            if key in node:
                if not isinstance(node[key], list):
                    raise ArtifactError(f"{here}: {key!r} must be a list of schemas")
                todo.extend((s, f"{path}.{key}[{i}]".lstrip(".")) for i, s in enumerate(node[key]))
        for key in _SCHEMA_MAPS:
            if key in node:
                if not isinstance(node[key], dict):
                    raise ArtifactError(f"{here}: {key!r} must be an object of schemas")
                todo.extend((s, f"{path}.{key}.{n}".lstrip(".")) for n, s in node[key].items())
        for key in _SCHEMA_OR_BOOL:
            if key in node and not isinstance(node[key], bool):
                todo.append((node[key], f"{path}.{key}".lstrip(".")))


def _json_kind(value: Any) -> str:
    return {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}.get(
        type(value), "null" if value is None else "a number"
    )


def encode_program(program: Program) -> bytes:
    return msgspec.json.format(msgspec.json.encode(program), indent=2)
