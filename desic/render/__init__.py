"""Prompts: node + inputs -> chat messages, through a sandboxed Jinja environment.

A template is one ``.j2`` source with three blocks: ``system`` (rendered once),
``user`` (rendered for each demo's inputs and for the query) and ``assistant`` (each
demo's answer). User inputs only ever enter as variables, never as template source, so a
ticket containing ``{{ 7*7 }}`` reaches the LM verbatim. Undefined variables are errors.

Per call only the query's user block is rendered (the rest is cached per node). For the
shipped templates that block is built in plain Python, to the byte what Jinja renders
(``tests/test_render_fast.py`` holds the two together); custom templates always go
through the sandbox.

Images and conversation history (``desic.media``): an image input is sent as an image
content part where its field stands in the user message (the message's content becomes
a list of text and image parts); a history input is not a line of the user message but
the chat turns before it, after the demos. Both work in demos and in custom templates.

A template may come from an artifact, so it is untrusted: it renders in the bounded sandbox
of ``desic.render._sandbox`` (no ``include``/``import``, counted steps, characters and
nesting), and every failure, from a syntax error to a render limit, is a ``TemplateError``
(an ``ArtifactError``) naming the node and the block. A strategy is a name from
``ir.STRATEGIES``, never a path.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from functools import lru_cache
from importlib.resources import files
from typing import Any

import jinja2
from pydantic import ValidationError

from .. import ir
from .._json import to_jsonable
from ..errors import DataError, TemplateError
from ..media import History, Image, describe_image, media_kind
from . import _sandbox

Message = dict[str, Any]

__all__ = [
    "BLOCKS",
    "Message",
    "answer_json",
    "choose_demos",
    "content_text",
    "default_template",
    "format_value",
    "leave_one_out",
    "leaving_one_out",
    "match_text",
    "query_vector",
    "render_messages",
    "step_json",
    "trajectory_messages",
    "with_chosen_demos",
]

BLOCKS = ("system", "user", "assistant")

@lru_cache(maxsize=8)
def default_template(strategy: str) -> str:
    """The source of the template shipped for ``strategy`` (a name of ``ir.STRATEGIES``)."""
    if strategy not in ir.STRATEGIES:  # never a path: an artifact's strategy is untrusted
        raise TemplateError(
            f"no default template for strategy {strategy!r}: unknown strategy; "
            f"strategies: {', '.join(ir.STRATEGIES)}"
        )
    return files(__package__).joinpath("templates", f"{strategy}.j2").read_text("utf-8")


@lru_cache(maxsize=256)
def _compile(source: str) -> jinja2.Template:
    try:
        template = _sandbox.environment.from_string(_sandbox.prepare(source))
    except jinja2.TemplateSyntaxError as exc:
        raise TemplateError(f"template syntax error at line {exc.lineno}: {exc.message}") from exc
    except (_sandbox.TemplateRefused, _sandbox.RenderLimit) as exc:
        raise TemplateError(str(exc)) from exc
    except Exception as exc:  # RecursionError, SyntaxError (too deeply nested), ValueError, ...
        raise TemplateError(f"the template cannot be compiled: {type(exc).__name__}: {exc}") from exc
    missing = [b for b in BLOCKS if b not in template.blocks]
    if missing:
        raise TemplateError(f"template lacks block(s) {', '.join(missing)}; it needs {BLOCKS}")
    return template


def format_value(value: Any) -> str:
    """How an input value is shown to the LM: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value), ensure_ascii=False)


def answer_json(output: dict[str, Any]) -> str:
    return json.dumps(output, ensure_ascii=False)


def _block(
    template: jinja2.Template,
    name: str,
    variables: dict[str, Any],
    node_id: str,
    budget: _sandbox.Budget | None = None,
) -> str:
    """Render one block; ``budget`` is what the render may spend (default: the limits plus
    an allowance for ``variables``), shared by the blocks that prepare one node."""
    where = f"node {node_id!r}: template block {name!r}"
    try:
        text = _sandbox.render(template, name, variables, budget or _sandbox.Budget.for_data(variables))
    except jinja2.UndefinedError as exc:
        raise TemplateError(f"{where}: {exc.message}") from exc
    except jinja2.TemplateError as exc:  # SecurityError (sandbox) and other runtime errors
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc.message}") from exc
    except _sandbox.RenderLimit as exc:
        raise TemplateError(f"{where} exceeds a render limit: {exc}") from exc
    except RecursionError as exc:
        raise TemplateError(f"{where} nests too deeply (RecursionError)") from exc
    except Exception as exc:  # the template is untrusted: whatever it did, say so, never a traceback
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from exc
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
            {"name": name, "type": ir.describe_type(prop), "description": prop.get("description", "")}
        )
    return fields


# The shipped templates' user block, which ``_fast_user`` produces without Jinja (the
# bulk of the per-call rendering cost: a Jinja context and sandboxed attribute lookups).
_SHIPPED_USER_BLOCK = """{% block user %}
{% for f in fields %}
{{ f.name }}: {{ f.value }}
{% endfor %}
{% endblock %}"""


@lru_cache(maxsize=1)
def _shipped_sources() -> frozenset[str]:
    folder = files(__package__).joinpath("templates")
    return frozenset(
        entry.read_text("utf-8") for entry in folder.iterdir() if entry.name.endswith(".j2")
    )


def _fast_user_ok(source: str) -> bool:
    """Whether ``source`` is a shipped template, whose user block ``_fast_user`` renders."""
    return source in _shipped_sources() and _SHIPPED_USER_BLOCK in source


def _fast_user(spec: ir.SignatureSpec, values: dict[str, Any]) -> str:
    """The shipped user block for ``values``, exactly as Jinja renders it: one
    ``name: value`` line per input given (``str`` of ``format_value``), then stripped."""
    lines = [
        f.name + ": " + str(format_value(values[f.name])) + "\n" for f in spec.inputs if f.name in values
    ]
    return "".join(lines).strip()


def _user(
    template: jinja2.Template,
    spec: ir.SignatureSpec,
    values: dict[str, Any],
    node_id: str | None = None,
    budget: _sandbox.Budget | None = None,
) -> str:
    fields = [
        {"name": f.name, "description": f.description, "value": format_value(values.get(f.name))}
        for f in spec.inputs
        if f.name in values
    ]
    return _block(template, "user", {"fields": fields, "inputs": values}, node_id or spec.name, budget)


# Where an image goes in a rendered user block: a mark no input text holds (a NUL byte and
# a nonce of this process), replaced by the image's content part afterwards.
_MARK = f"\x00desic-image-{secrets.token_hex(6)}:"
_MARK_RE = re.compile(re.escape(_MARK) + r"(\d+)\x00")


def _image(value: Any, field: str) -> Image:
    """An image input's value as an ``Image``: one already, or its data (``{"url": ...}``
    or a URL: never a path, as data may come from an artifact)."""
    if isinstance(value, Image):
        return value
    try:
        return Image.model_validate(value)
    except ValidationError as exc:
        raise DataError(
            f"input {field!r} must be a desic.Image (e.g. desic.Image('photo.png') or "
            f"desic.Image('https://...')): {exc.errors()[0]['msg']}",
            field=field,
        ) from exc


def _history(value: Any, field: str) -> History:
    if isinstance(value, History):
        return value
    try:
        return History.model_validate(value if value is not None else [])
    except ValidationError as exc:
        raise DataError(
            f"input {field!r} must be a desic.History, a list of {{'role', 'content'}} or "
            f"{{'inputs', 'output'}} turns: {exc.errors()[0]['msg']}",
            field=field,
        ) from exc


def content_text(content: Any) -> str:
    """A message's content as text (snapshots, reports): image parts as ``[image URL]``,
    inline data as its type, size and hash."""
    if not isinstance(content, list):
        return str(content)
    out: list[str] = []
    for part in content:
        if isinstance(part, dict) and part.get("type") == "image_url":
            image = part.get("image_url") or {}
            detail = f" detail={image['detail']}" if image.get("detail") else ""
            out.append(f"[image {describe_image(str(image.get('url', '')))}{detail}]")
        elif isinstance(part, dict):
            out.append(str(part.get("text", "")))
    return "".join(out)


def _parts(text: str, images: list[Image]) -> list[dict[str, Any]]:
    """The content parts of a user message: its text, each image where its mark stands
    (an image the template did not place comes at the end)."""
    parts: list[dict[str, Any]] = []
    placed: set[int] = set()
    for i, piece in enumerate(_MARK_RE.split(text)):
        if i % 2 == 0:
            if piece:
                parts.append({"type": "text", "text": piece})
        else:
            placed.add(int(piece))
            parts.append(images[int(piece)].content_part())
    parts.extend(image.content_part() for n, image in enumerate(images) if n not in placed)
    return parts
def step_json(step: dict[str, Any]) -> str:
    """An agent step's action as the model writes it (and as demos show it)."""
    action = {"tool": step.get("tool", ir.FINISH), "args": step.get("args") or {}}
    return answer_json({"thought": step.get("thought", ""), "action": action})


def _arg_text(name: str, prop: dict[str, Any], root: dict[str, Any]) -> str:
    """``name: type (description)`` of one tool argument."""
    prop = _resolve(prop, root)
    text = f"{name}: {ir.describe_type(prop)}"
    description = prop.get("description")
    return f"{text} ({description})" if description else text


def _tool_fields(node: ir.Node) -> dict[str, Any]:
    """The template variables that describe a ``react`` node's tools and finish action."""
    tools = [
        {
            "name": t.name,
            "description": t.description,
            "args": ", ".join(_arg_text(name, prop, t.parameters) for name, prop in t.parameters.get("properties", {}).items()),
        }
        for t in node.tools
    ]
    finish_args = ", ".join(f"{f['name']}: {f['type']}" for f in _output_fields(node.signature))
    return {"tools": tools, "finish_args": finish_args, "max_steps": node.max_steps}


class _Rendering:
    """What rendering a node's calls needs, worked out once per node object: the system
    message and demo turns (they depend on the node alone; nodes are immutable), and how
    to render the query's user block."""

    __slots__ = ("fast", "media", "node", "prefix", "template")

    def __init__(self, node: ir.Node) -> None:
        try:
            source = node.template or default_template(node.strategy)
            template = _compile(source)
        except TemplateError as exc:
            raise TemplateError(f"node {node.id!r}: {exc}") from exc
        self.node = node
        self.template = template
        self.fast = _fast_user_ok(source)
        spec = node.signature
        # inputs that are images or history, by name (most nodes have none)
        self.media = {f.name: kind for f in spec.inputs if (kind := media_kind(f.schema)) is not None}
        input_fields = [
            {"name": f.name, "type": ir.describe_type(f.schema), "description": f.description}
            for f in spec.inputs
            if self.media.get(f.name) != "history"
        ]
        variables = {
            "instructions": node.instructions or spec.instructions,
            "input_fields": input_fields,
            "output_fields": _output_fields(spec),
            "strategy": node.strategy,
            "signature": spec.name,
        }
        agent = node.strategy == "react"
        if agent:
            variables.update(_tool_fields(node))
            if "observation" not in template.blocks:
                raise TemplateError(f"node {node.id!r}: a react template needs an 'observation' block")
        # One budget for the system block and every demo turn: a node's preparation is
        # bounded as a whole, however many demos the artifact holds.
        budget = _sandbox.Budget.for_data((variables, [(d.inputs, d.output) for d in node.demos]))
        system = _block(template, "system", variables, node.id, budget)
        messages: list[Message] = [{"role": "system", "content": system}]
        for demo in node.demos:
            if self.media:
                messages.extend(self.turn(demo.inputs, budget))
            else:
                messages.append({"role": "user", "content": self.user(demo.inputs, budget)})
            if agent:  # the whole trajectory: each action and observation, then finish
                output = {k: v for k, v in demo.output.items() if k != "trajectory"}
                steps = list(demo.output.get("trajectory") or [])
                if not steps or steps[-1].get("tool") != ir.FINISH:
                    steps.append({"thought": "", "tool": ir.FINISH, "args": output})
                messages.extend(self.steps(steps, budget))
                continue
            messages.append({"role": "assistant", "content": self.answer(demo.output, budget)})
        self.prefix = tuple(messages)

    def steps(self, steps: list[dict[str, Any]], budget: _sandbox.Budget | None = None) -> list[Message]:
        """An agent's steps as chat turns: each action (assistant), each tool's result (user)."""
        turns: list[Message] = []
        for step in steps:
            variables = {"answer": step_json(step), "output": step}
            turns.append({"role": "assistant", "content": _block(self.template, "assistant", variables, self.node.id, budget)})
            if step.get("tool") == ir.FINISH:
                continue
            seen = {"tool": step.get("tool", ""), "observation": str(step.get("observation", "")), "step": step}
            turns.append({"role": "user", "content": _block(self.template, "observation", seen, self.node.id, budget)})
        return turns
    def answer(self, output: dict[str, Any], budget: _sandbox.Budget | None = None) -> str:
        variables = {"answer": answer_json(output), "output": output}
        return _block(self.template, "assistant", variables, self.node.id, budget)

    def turn(self, values: dict[str, Any], budget: _sandbox.Budget | None = None) -> list[Message]:
        """The messages of one input with images or history: the history's turns, then
        the user message (text, or text and image parts)."""
        out: list[Message] = []
        shown = dict(values)
        images: list[Image] = []
        for name, kind in self.media.items():
            value = shown.get(name)
            if name not in shown:
                continue
            if kind == "history":
                del shown[name]
                out.extend(self.history(_history(value, name), budget))
            elif value is None:
                continue
            elif kind == "image":
                shown[name] = f"{_MARK}{len(images)}\x00"
                images.append(_image(value, name))
            else:  # a list of images
                marks = []
                for item in value:
                    marks.append(f"{_MARK}{len(images)}\x00")
                    images.append(_image(item, name))
                shown[name] = " ".join(marks)
        text = self.user(shown, budget)
        out.append({"role": "user", "content": _parts(text, images) if images else text})
        return out

    def history(self, history: History, budget: _sandbox.Budget | None = None) -> list[Message]:
        """Prior turns as chat messages; a turn of the signature's inputs and output is
        rendered as a demo is."""
        out: list[Message] = []
        field = self.node.signature.output_field
        for t in history.turns:
            if t.role is not None:
                out.append({"role": t.role, "content": t.content})
                continue
            inputs = {k: v for k, v in (t.inputs or {}).items() if self.media.get(k) != "history"}
            out.extend(self.turn(inputs, budget))
            output = t.output if isinstance(t.output, dict) else {field or "output": t.output}
            out.append({"role": "assistant", "content": self.answer(to_jsonable(output), budget)})
        return out

    def user(self, values: dict[str, Any], budget: _sandbox.Budget | None = None) -> str:
        if self.fast:
            return _fast_user(self.node.signature, values)
        return _user(self.template, self.node.signature, values, self.node.id, budget)


_renderings: dict[int, _Rendering] = {}
_RENDERING_CACHE_SIZE = 4096


def _rendering(node: ir.Node) -> _Rendering:
    hit = _renderings.get(id(node))
    if hit is not None and hit.node is node:
        return hit
    rendering = _Rendering(node)
    if len(_renderings) >= _RENDERING_CACHE_SIZE:
        _renderings.clear()
    _renderings[id(node)] = rendering
    return rendering


def _match_key(values: dict[str, Any], fields: tuple[str, ...]) -> tuple[str, ...]:
    """What makes two inputs the very same for per-input demos (leave-one-out)."""
    return tuple(format_value(values.get(f)) for f in fields)


def _match_text(values: dict[str, Any], fields: tuple[str, ...]) -> str:
    return "\n".join(format_value(values[name]) for name in fields if name in values)


class _Pool:
    """A per-input demo pool ready to search: matched fields, texts and BM25 index."""

    __slots__ = ("fields", "index", "keys", "select")

    def __init__(self, select: ir.DemoSelect, fields: tuple[str, ...]) -> None:
        from .._bm25 import index_for

        self.select = select
        self.fields = fields
        texts = [_match_text(d.inputs, fields) for d in select.pool]
        self.keys = [self._key(d.inputs) for d in select.pool]
        self.index = index_for(texts)

    def _key(self, values: dict[str, Any]) -> tuple[str, ...]:
        return _match_key(values, self.fields)

    def choose(self, inputs: dict[str, Any], *, hold_out: bool) -> tuple[int, ...]:
        same: frozenset[int] = frozenset()
        if hold_out:
            own = self._key(inputs)
            same = frozenset(i for i, key in enumerate(self.keys) if key == own)
        best = self.index.top(_match_text(inputs, self.fields), self.select.k, exclude=same)
        return tuple(reversed(best))


_pools: dict[int, _Pool] = {}
_hold_out: ContextVar[bool] = ContextVar("desic_demo_hold_out", default=False)


@contextmanager
def leave_one_out(on: bool = True) -> Iterator[None]:
    """Within the block, per-input demos never include a pool demo with the very inputs
    being answered (``choose_demos``). A compile scores programs on the rows their pools
    came from: there such a demo would show the row's own answer. Outside a compile the
    training example identical to a new input is the best demo there is, and is shown."""
    token = _hold_out.set(on)
    try:
        yield
    finally:
        _hold_out.reset(token)


def leaving_one_out() -> bool:
    """Whether ``leave_one_out`` is on here."""
    return _hold_out.get()


_query_vector: ContextVar[tuple[str, list[float]] | None] = ContextVar("desic_query_vector", default=None)


@contextmanager
def query_vector(node_id: str, vector: list[float]) -> Iterator[None]:
    """Within the block, node ``node_id`` (per-input demos by embeddings) chooses its demos
    for the input whose unit embedding is ``vector`` (the runtime embeds it first)."""
    token = _query_vector.set((node_id, vector))
    try:
        yield
    finally:
        _query_vector.reset(token)


def match_text(node: ir.Node, inputs: dict[str, Any]) -> str:
    """The text of ``inputs`` that per-input demos are matched on (``DemoSelect.fields``)."""
    select = node.select
    fields = (select.fields if select is not None else ()) or node.signature.input_names
    return _match_text(inputs, fields)


def _by_embeddings(select: ir.DemoSelect, node: ir.Node, inputs: dict[str, Any]) -> tuple[int, ...]:
    given = _query_vector.get()
    if given is None or given[0] != node.id:
        from ..errors import ConfigError

        raise ConfigError(
            f"node {node.id!r} chooses its demos by the embeddings of its input: it needs an LM to embed it "
            "(call it, or compiled.prompts(...), inside desic.context(lm=...))"
        )
    vector = given[1]
    skip: frozenset[int] = frozenset()
    fields = select.fields or node.signature.input_names
    if _hold_out.get():
        own = _match_key(inputs, fields)
        skip = frozenset(i for i, d in enumerate(select.pool) if _match_key(d.inputs, fields) == own)
    scores = [sum(a * b for a, b in zip(vector, v)) for v in select.vectors]
    order = sorted(range(len(scores)), key=lambda i: -scores[i])  # stable: ties to the earlier demo
    best = [i for i in order if i not in skip][: select.k]
    return tuple(reversed(best))


def choose_demos(node: ir.Node, inputs: dict[str, Any]) -> tuple[int, ...]:
    """The positions in ``node.select.pool`` of the demos ``node`` shows for ``inputs``:
    the ``k`` most similar by BM25 over the matched input fields (ties to the earlier pool
    demo), most similar last. While a compile scores programs (``leave_one_out``), a pool
    demo whose matched inputs equal the query's is never chosen: it would show the row's
    own answer and make the score on training rows meaningless; afterwards (evaluation,
    production) it is the nearest demo of all and is chosen first."""
    select = node.select
    if select is None or not select.per_input or not select.pool:
        return ()
    if select.by == "embeddings":
        return _by_embeddings(select, node, inputs)
    fields = select.fields or node.signature.input_names
    pool = _pools.get(id(select))
    if pool is None or pool.select is not select or pool.fields != fields:
        pool = _Pool(select, fields)
        if len(_pools) >= 256:
            _pools.clear()
        _pools[id(select)] = pool
    return pool.choose(inputs, hold_out=_hold_out.get())


_chosen: dict[tuple[int, tuple[int, ...]], tuple[ir.Node, ir.Node]] = {}


def with_chosen_demos(node: ir.Node, inputs: dict[str, Any]) -> ir.Node:
    """``node`` as it prompts for ``inputs``: with per-input demos, a node whose ``demos``
    are the ones chosen for them (one node object per choice, so its rendering is reused);
    otherwise ``node`` itself."""
    select = node.select
    if select is None or not select.per_input:
        return node
    picks = choose_demos(node, inputs)
    key = (id(node), picks)
    hit = _chosen.get(key)
    if hit is not None and hit[0] is node:
        return hit[1]
    import msgspec

    chosen = msgspec.structs.replace(node, demos=tuple(select.pool[i] for i in picks))
    if len(_chosen) >= _RENDERING_CACHE_SIZE:
        _chosen.clear()
    _chosen[key] = (node, chosen)
    return chosen


def trajectory_messages(node: ir.Node, steps: list[dict[str, Any]]) -> list[Message]:
    """The turns an agent's ``steps`` so far add after its query (see ``render_messages``)."""
    if not steps:
        return []
    return _rendering(node).steps(steps)


def render_messages(node: ir.Node, inputs: dict[str, Any]) -> list[Message]:
    """The chat messages ``node`` sends for ``inputs`` (demos become example turns, a
    history input the turns before the last user message; with per-input
    demos, the ones chosen for ``inputs``)."""
    rendering = _rendering(with_chosen_demos(node, inputs))
    messages = [dict(m) for m in rendering.prefix]
    if rendering.media:
        messages.extend(rendering.turn(inputs))
    else:
        messages.append({"role": "user", "content": rendering.user(inputs)})
    return messages
