"""Prompts: node + inputs -> chat messages, through a sandboxed Jinja environment.

A template is one ``.j2`` source with three blocks: ``system`` (rendered once),
``user`` (rendered for each demo's inputs and for the query) and ``assistant`` (each
demo's answer). User inputs only ever enter as variables, never as template source, so a
ticket containing ``{{ 7*7 }}`` reaches the LM verbatim. Undefined variables are errors.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

from .. import ir
from .._utils import to_jsonable
from ..errors import SignatureError

__all__ = ["BLOCKS", "default_template", "render_messages", "format_value", "answer_json"]

BLOCKS = ("system", "user", "assistant")

_env = ImmutableSandboxedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)


@lru_cache(maxsize=8)
def default_template(strategy: str) -> str:
    """The source of the template shipped for ``strategy``."""
    try:
        return files(__package__).joinpath("templates", f"{strategy}.j2").read_text("utf-8")
    except FileNotFoundError as exc:
        raise SignatureError(f"no default template for strategy {strategy!r}") from exc


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    try:
        template = _env.from_string(source)
    except jinja2.TemplateSyntaxError as exc:
        raise SignatureError(f"template syntax error at line {exc.lineno}: {exc.message}") from exc
    missing = [b for b in BLOCKS if b not in template.blocks]
    if missing:
        raise SignatureError(f"template lacks block(s) {', '.join(missing)}; it needs {BLOCKS}")
    return template


def format_value(value: Any) -> str:
    """How an input value is shown to the LM: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def answer_json(output: dict[str, Any]) -> str:
    return json.dumps(output, ensure_ascii=False)


def _type_text(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return "one of: " + ", ".join(json.dumps(v) for v in schema["enum"])
    if "const" in schema:
        return f"exactly {json.dumps(schema['const'])}"
    if "anyOf" in schema:
        return " or ".join(_type_text(s) for s in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type_text(schema.get('items', {}))}"
    if "$ref" in schema:
        return "object " + str(schema["$ref"]).rsplit("/", 1)[-1]
    return str(schema.get("type", "any"))


def _block(template: jinja2.Template, name: str, variables: dict[str, Any]) -> str:
    try:
        text = "".join(template.blocks[name](template.new_context(variables)))
    except jinja2.UndefinedError as exc:
        raise SignatureError(f"template block {name!r}: {exc.message}") from exc
    except jinja2.TemplateError as exc:  # SecurityError (sandbox) and other runtime errors
        raise SignatureError(f"template block {name!r}: {type(exc).__name__}: {exc.message}") from exc
    return text.strip()


def _resolve(schema: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/$defs/"):
        target: dict[str, Any] = root.get("$defs", {}).get(ref.rsplit("/", 1)[-1], schema)
        return {**target, **{k: v for k, v in schema.items() if k != "$ref"}}
    if "allOf" in schema and len(schema["allOf"]) == 1:
        return _resolve(schema["allOf"][0], root)
    return schema


def _output_fields(spec: ir.SignatureSpec) -> list[dict[str, str]]:
    root = spec.output_schema
    fields = []
    for name, prop in root.get("properties", {}).items():
        prop = _resolve(prop, root)
        fields.append(
            {"name": name, "type": _type_text(prop), "description": prop.get("description", "")}
        )
    return fields


# The system message and demo turns depend on the node alone: render them once per node
# object (nodes are immutable) and only the query per call.
_prefixes: dict[int, tuple[ir.Node, tuple[dict[str, str], ...]]] = {}
_PREFIX_CACHE_SIZE = 4096


def _user(template: jinja2.Template, spec: ir.SignatureSpec, values: dict[str, Any]) -> str:
    fields = [
        {"name": f.name, "description": f.description, "value": format_value(values.get(f.name))}
        for f in spec.inputs
        if f.name in values
    ]
    return _block(template, "user", {"fields": fields, "inputs": values})


def _prefix(node: ir.Node, template: jinja2.Template) -> tuple[dict[str, str], ...]:
    hit = _prefixes.get(id(node))
    if hit is not None and hit[0] is node:
        return hit[1]
    spec = node.signature
    input_fields = [
        {"name": f.name, "type": _type_text(f.schema), "description": f.description}
        for f in spec.inputs
    ]
    system = _block(
        template,
        "system",
        {
            "instructions": node.instructions or spec.instructions,
            "input_fields": input_fields,
            "output_fields": _output_fields(spec),
            "strategy": node.strategy,
            "signature": spec.name,
        },
    )
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    for demo in node.demos:
        messages.append({"role": "user", "content": _user(template, spec, demo.inputs)})
        answer = _block(
            template, "assistant", {"answer": answer_json(demo.output), "output": demo.output}
        )
        messages.append({"role": "assistant", "content": answer})
    prefix = tuple(messages)
    if len(_prefixes) >= _PREFIX_CACHE_SIZE:
        _prefixes.clear()
    _prefixes[id(node)] = (node, prefix)
    return prefix


def render_messages(node: ir.Node, inputs: dict[str, Any]) -> list[dict[str, str]]:
    """The chat messages ``node`` sends for ``inputs`` (demos become example turns)."""
    template = _compile(node.template or default_template(node.strategy))
    messages = [dict(m) for m in _prefix(node, template)]
    messages.append({"role": "user", "content": _user(template, node.signature, inputs)})
    return messages
