"""The bounded Jinja sandbox that renders node templates.

A template comes from an artifact, so it is untrusted: Jinja's ``SandboxedEnvironment``
already stops attribute escapes (``__class__``) and mutation; this module also bounds the
*work* a template can do, by counting, never by a clock:

* before compiling: the source length (``MAX_TEMPLATE_CHARS``), and no ``include``,
  ``import`` or ``extends`` (there is nothing else a template may load);
* while rendering, a ``Budget`` (one for a node's system prompt and all its demo turns,
  one per call for the query's user turn):

  - steps (``MAX_STEPS``): every loop iteration costs the size of its body (AST nodes),
    every run of a macro or block its size, every call, filter, test and operator one,
    reading a list or dict one per item; so nested loops, filtered loops, recursion and
    filters walking lists all draw on it;
  - characters produced (``MAX_CHARS``): every ``{{ }}`` output, the literal text of a
    loop body per iteration, and every string or list an operator, filter or method builds
    (reserved *before* building where the size is known: ``'x' * n``, ``s + t``,
    ``center``, ``indent``, ``join``, ``replace``, ``batch``, ``%`` widths, ``tojson``
    indents);
  - characters scanned (``MAX_SCANNED``): ``in``, comparisons, filters and methods that
    read a string pay its length, so a loop cannot rescan a large input forever;
  - a ``range()`` of at most ``MAX_RANGE`` items (``slice`` into as many parts), integers
    of at most ``MAX_INT_BITS`` bits from ``*`` and ``**``;
  - at most ``MAX_DEPTH`` nested calls (macros, ``self.block()``, recursive loops).

  The three counted limits grow with the data the render is given (``Budget.for_data``),
  so long inputs render through a custom template as through a shipped one, and the work
  of a render stays proportional to the limits plus its data.

Methods of built-in values are limited to ones whose output is no larger than their input
(``split``, ``strip``, ``upper``, ``get``, ``items``, ...); ``str.format``, ``ljust``,
``replace`` and the like are refused as unsafe (the ``format``/``replace`` filters, which
are checked, do the same jobs). Filters are Jinja's own minus ``random`` (prompts must be
deterministic), ``wordwrap``, ``urlize`` and ``pprint``; globals are ``range``, ``dict``,
``namespace``, ``cycler`` and ``joiner`` (no ``lipsum``).

A limit that is hit raises ``RenderLimit``; ``desic.render`` turns it into a
``TemplateError`` naming the node, the block and the limit.
"""

from __future__ import annotations

import contextvars
import functools
import inspect
import operator
import re
from collections.abc import Callable, Iterator
from typing import Any, cast

import jinja2
from jinja2 import nodes
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment
from jinja2.utils import Cycler, Joiner, Namespace
from jinja2.visitor import NodeTransformer

__all__ = [
    "MAX_CHARS",
    "MAX_DEPTH",
    "MAX_INT_BITS",
    "MAX_RANGE",
    "MAX_SCANNED",
    "MAX_STEPS",
    "MAX_TEMPLATE_CHARS",
    "Budget",
    "RenderLimit",
    "TemplateRefused",
    "environment",
    "prepare",
    "render",
]

MAX_TEMPLATE_CHARS = 100_000
MAX_STEPS = 100_000
MAX_CHARS = 1_000_000
MAX_SCANNED = 20_000_000  # characters: scanning a string runs at C speed
MAX_RANGE = 10_000
MAX_INT_BITS = 10_000
MAX_DEPTH = 40


class RenderLimit(Exception):
    """A template went past one of the render limits (the message says which)."""


class TemplateRefused(Exception):
    """A template uses something the sandbox does not offer (``include``, ...)."""


class Budget:
    """What a render may spend, and what it has spent. Limits are the module's, plus an
    allowance for the data the render is given (``for_data``)."""

    __slots__ = ("chars", "depth", "max_chars", "max_scanned", "max_steps", "scanned", "steps")

    def __init__(self, data_size: int = 0) -> None:
        self.steps = self.chars = self.scanned = self.depth = 0
        self.max_steps = MAX_STEPS + 2 * data_size
        self.max_chars = MAX_CHARS + 2 * data_size
        self.max_scanned = MAX_SCANNED + 20 * data_size

    @classmethod
    def for_data(cls, variables: Any) -> Budget:
        return cls(_data_size(variables))

    def step(self, n: int = 1) -> None:
        self.steps += n
        if self.steps > self.max_steps:
            raise RenderLimit(
                f"more than {self.max_steps} steps (loop iterations times loop body size, "
                "calls, filters, operators); the limit is there so that a template cannot loop forever"
            )

    def produce(self, n: int) -> None:
        self.chars += n
        if self.chars > self.max_chars:
            raise RenderLimit(
                f"more than {self.max_chars} characters (output and the strings and lists built "
                f"on the way; this one would add {n})"
            )

    def scan(self, n: int) -> None:
        self.scanned += n
        if self.scanned > self.max_scanned:
            raise RenderLimit(f"more than {self.max_scanned} characters scanned")

    def read(self, *values: Any) -> None:
        """Charge reading ``values`` whole: a string's characters are scanned (C speed), a
        container's items are steps (Python code such as a filter walks them)."""
        for value in values:
            if isinstance(value, (str, bytes)):
                self.scan(len(value))
            elif isinstance(value, (list, tuple, dict, set, frozenset)):
                self.step(len(value))


_current: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("desic_render_budget", default=None)


def budget() -> Budget:
    """The budget of the render under way (a fresh one when Jinja folds constants while
    compiling, so the checks of single values still apply)."""
    return _current.get() or Budget()


def render(template: jinja2.Template, block: str, variables: dict[str, Any], b: Budget) -> str:
    """The text of ``block`` rendered with ``variables`` within ``b``; the streamed output is
    counted too, so whatever the accounting above misses cannot pile up in the result."""
    limit = b.max_chars
    pieces: list[str] = []
    total = 0
    with use_budget(b):
        for piece in template.blocks[block](template.new_context(variables)):
            total += len(piece)
            if total > limit:
                raise RenderLimit(f"more than {limit} characters of output")
            pieces.append(piece)
    return "".join(pieces)


class use_budget:  # lower case: used as ``with use_budget(b):``
    __slots__ = ("_token", "budget")

    def __init__(self, b: Budget) -> None:
        self.budget = b

    def __enter__(self) -> Budget:
        self._token = _current.set(self.budget)
        return self.budget

    def __exit__(self, *exc: object) -> None:
        _current.reset(self._token)


def _data_size(value: Any) -> int:
    """Characters of strings plus items of containers in ``value`` (no recursion)."""
    total = 0
    todo = [value]
    while todo:
        item = todo.pop()
        if isinstance(item, str):
            total += len(item)
        elif isinstance(item, dict):
            total += len(item)
            todo.extend(item.keys())
            todo.extend(item.values())
        elif isinstance(item, (list, tuple)):
            total += len(item)
            todo.extend(item)
    return total


_SIZED = (str, bytes, list, tuple, dict, set, frozenset)


def _size(value: Any) -> int:
    return len(value) if isinstance(value, _SIZED) else 0


def _produced(b: Budget, result: Any) -> Any:
    """Charge a built value; make a lazy one pay per item as it is consumed."""
    if isinstance(result, _SIZED):
        b.produce(len(result))
    elif isinstance(result, Iterator):
        return _counted(result, b)
    return result


def _counted(items: Iterator[Any], b: Budget) -> Iterator[Any]:
    for item in items:
        b.step()
        yield item


# --- the globals -----------------------------------------------------------------------------


def _range(*args: int) -> range:
    items = range(*args)
    try:
        size = len(items)
    except OverflowError:
        size = -1
    if size < 0 or size > MAX_RANGE:
        count = f"{size}" if size >= 0 else "more than a machine word of"
        raise RenderLimit(f"a range of {count} items; the limit is {MAX_RANGE}")
    return items


# --- filters and tests -----------------------------------------------------------------------

_EXCLUDED_FILTERS = frozenset({"random", "wordwrap", "urlize", "pprint"})

# "%" conversions with an optional mapping key, flags, width and precision
_PERCENT = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)", re.DOTALL)


def _check_percent(b: Budget, fmt: str) -> None:
    """Reserve what the widths and precisions of ``fmt`` (a ``%`` format) can add; widths
    taken from the arguments (``*``) are refused. The result is charged once built."""
    extra = 0
    for match in _PERCENT.finditer(fmt):
        width, precision, _ = match.groups()
        if "*" in (width, precision):
            raise RenderLimit("'%' formatting with a '*' width or precision is not allowed in templates")
        extra += int(width or 0) + int(precision or 0)
        if extra > b.max_chars:
            break
    b.produce(extra)


def _pre_indent(b: Budget, a: dict[str, Any]) -> None:
    s, width = a["s"], a["width"]
    if isinstance(s, str):
        w = len(width) if isinstance(width, str) else width if isinstance(width, int) else 0
        b.produce(len(s) + max(w, 0) * (s.count("\n") + 1))


def _pre_join(b: Budget, a: dict[str, Any]) -> None:
    if not isinstance(a["value"], _SIZED):
        a["value"] = list(a["value"])  # a lazy sequence (counted as it is read): size it first
    if isinstance(a["d"], str):
        b.produce(len(a["d"]) * max(len(a["value"]) - 1, 0))


def _pre_replace(b: Budget, a: dict[str, Any]) -> None:
    s, old, new, count = a["s"], a["old"], a["new"], a["count"]
    if isinstance(s, str) and isinstance(old, str) and isinstance(new, str):
        b.scan(len(s))
        hits = len(s) + 1 if old == "" else s.count(old)
        if isinstance(count, int) and count >= 0:
            hits = min(hits, count)
        b.produce(len(s) + hits * max(len(new) - len(old), 0))


def _pre_format(b: Budget, a: dict[str, Any]) -> None:
    if isinstance(a["value"], str):
        _check_percent(b, a["value"])


def _pre_batch(b: Budget, a: dict[str, Any]) -> None:
    if a["fill_with"] is not None and isinstance(a["linecount"], int):
        b.produce(a["linecount"])


def _pre_slice(b: Budget, a: dict[str, Any]) -> None:
    slices = a["slices"]
    if isinstance(slices, int) and slices > MAX_RANGE:
        raise RenderLimit(f"slice into {slices} parts; the range limit is {MAX_RANGE}")
    b.step(max(slices, 0) if isinstance(slices, int) else 0)


def _pre_sum(b: Budget, a: dict[str, Any]) -> None:
    if not isinstance(a["start"], (int, float)):
        raise RenderLimit("the sum filter adds numbers only (a start value that is not a number is not allowed)")


def _pre_tojson(b: Budget, a: dict[str, Any]) -> None:
    indent = a["indent"]
    if indent is None:
        return
    if not (isinstance(indent, int) and 0 <= indent <= 8):
        raise RenderLimit(f"tojson indent {indent!r}; the limit is an integer up to 8")
    items, depth = _shape(a["value"])
    b.step(items)
    b.produce(items * (depth * indent + 1))  # each item on its own line, indented by its depth


def _pre_center(b: Budget, a: dict[str, Any]) -> None:
    if isinstance(a["width"], int):
        b.produce(max(a["width"], 0))


def _shape(value: Any) -> tuple[int, int]:
    """(items, nesting depth) of JSON-like data, without recursion."""
    items = deepest = 0
    todo: list[tuple[Any, int]] = [(value, 1)]
    while todo:
        item, depth = todo.pop()
        items += 1
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            todo.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            todo.extend((v, depth + 1) for v in item)
    return items, deepest


_PRECHECKS: dict[str, Callable[[Budget, dict[str, Any]], None]] = {
    "center": _pre_center,
    "indent": _pre_indent,
    "join": _pre_join,
    "replace": _pre_replace,
    "format": _pre_format,
    "batch": _pre_batch,
    "slice": _pre_slice,
    "sum": _pre_sum,
    "tojson": _pre_tojson,
}


def _guarded(kind: str, name: str, func: Callable[..., Any]) -> Callable[..., Any]:
    """``func`` (a Jinja filter or test) charging the budget: a step, its sized arguments as
    scanned, the filter's own precheck (which may size a lazy value first), and what it
    builds. Keeps Jinja's pass-context/environment marker (``functools.wraps``)."""
    precheck = _PRECHECKS.get(name) if kind == "filter" else None
    inner = inspect.unwrap(func)
    signature = inspect.signature(inner)
    # Jinja's sync/async filter wrappers take the context (or eval context) that the sync
    # function itself does not: those leading arguments are not in ``signature``.
    passed = getattr(func, "jinja_pass_arg", None) is not None
    offset = 1 if passed and getattr(inner, "jinja_pass_arg", None) is None else 0

    @functools.wraps(func)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        b = budget()
        b.step()
        b.read(*args, *kwargs.values())
        if precheck is not None:
            bound = signature.bind(*args[offset:], **kwargs)
            bound.apply_defaults()
            precheck(b, bound.arguments)
            args, kwargs = (*args[:offset], *bound.args), bound.kwargs
        return _produced(b, func(*args, **kwargs))

    return guarded


# --- the nodes the rewrite inserts -----------------------------------------------------------

_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "gteq": operator.ge,
    "lt": operator.lt,
    "lteq": operator.le,
    "in": lambda a, b: a in b,
    "notin": lambda a, b: a not in b,
}


@jinja2.pass_context
def _pay(context: Context, steps: int, chars: int) -> bool:
    b = budget()
    b.step(steps)
    if chars:
        b.produce(chars)
    return True


@jinja2.pass_context
def _concat(context: Context, first: Any, *rest: Any) -> str:
    b = budget()
    b.step()
    parts = [str(first), *(str(p) for p in rest)]
    b.produce(sum(len(p) for p in parts))
    return "".join(parts)


@jinja2.pass_context
def _compare(context: Context, left: Any, *ops: Any) -> bool:
    b = budget()
    for i in range(0, len(ops), 2):
        op, right = ops[i], ops[i + 1]
        b.step()
        if op in ("in", "notin"):
            if not isinstance(right, (dict, set, frozenset)):  # hashed lookups cost no scan
                b.read(left, right)
        elif _size(left) and _size(right):
            b.read(min((left, right), key=_size))
        if not _COMPARE[op](left, right):
            return False
        left = right
    return True


_TICK, _CONCAT, _COMPARE_FILTER = "desic:tick", "desic:concat", "desic:compare"  # not writable in a template


def _weight(body: list[nodes.Node]) -> tuple[int, int]:
    """(AST nodes, literal characters) of a body: what one run of it costs at most (literal
    text and string constants may be output without passing ``finalize``)."""
    count = chars = 0
    for child in body:
        for node in (child, *child.find_all(nodes.Node)):
            count += 1
            if isinstance(node, nodes.TemplateData):
                chars += len(node.data)
            elif isinstance(node, nodes.Const) and isinstance(node.value, str):
                chars += len(node.value)  # ``{{ 'literal' }}`` is folded into constant output
    return count, chars


def _tick(steps: int, chars: int, lineno: int) -> nodes.Filter:
    tick = nodes.Filter(nodes.Const(steps), _TICK, [nodes.Const(chars)], [], None, None)
    tick.set_lineno(lineno)
    return tick


class _Rewrite(NodeTransformer):
    """Refuses loading other templates; makes loops, macros and blocks pay per run; routes
    ``~`` and comparisons through counted filters."""

    def visit_Include(self, node: nodes.Include) -> Any:
        raise TemplateRefused("templates cannot include other templates ({% include %})")

    def visit_Import(self, node: nodes.Import) -> Any:
        raise TemplateRefused("templates cannot import other templates ({% import %})")

    def visit_FromImport(self, node: nodes.FromImport) -> Any:
        raise TemplateRefused("templates cannot import other templates ({% from ... import %})")

    def visit_Extends(self, node: nodes.Extends) -> Any:
        raise TemplateRefused("templates cannot extend other templates ({% extends %})")

    def _pay(self, node: Any, body_fields: tuple[str, ...]) -> Any:
        body = [n for f in body_fields for n in (getattr(node, f) or [])]
        steps, chars = _weight(body)
        node = self.generic_visit(node)
        stmt = nodes.ExprStmt(_tick(steps + 1, chars, node.lineno))
        stmt.set_lineno(node.lineno)
        node.body = [stmt, *node.body]
        return node

    def visit_For(self, node: nodes.For) -> Any:
        test = node.test
        node = self._pay(node, ("body",))
        if test is not None:  # items the test skips still cost a step each
            node.test = nodes.And(_tick(1, 0, node.lineno), node.test)
            node.test.set_lineno(node.lineno)
        return node

    def visit_Macro(self, node: nodes.Macro) -> Any:
        return self._pay(node, ("body",))

    def visit_CallBlock(self, node: nodes.CallBlock) -> Any:
        return self._pay(node, ("body",))

    def visit_Block(self, node: nodes.Block) -> Any:
        return self._pay(node, ("body",))

    def visit_Concat(self, node: nodes.Concat) -> Any:
        self.generic_visit(node)  # in place
        first, *rest = node.nodes
        concat = nodes.Filter(first, _CONCAT, rest, [], None, None)
        concat.set_lineno(node.lineno)
        return concat

    def visit_Compare(self, node: nodes.Compare) -> Any:
        self.generic_visit(node)  # in place
        args: list[nodes.Expr] = []
        for operand in node.ops:
            args += [nodes.Const(operand.op), operand.expr]
        compare = nodes.Filter(node.expr, _COMPARE_FILTER, args, [], None, None)
        compare.set_lineno(node.lineno)
        return compare


def prepare(source: str) -> nodes.Template:
    """The parsed, checked and rewritten template ``source`` (for ``environment.from_string``)."""
    if len(source) > MAX_TEMPLATE_CHARS:
        raise RenderLimit(f"the template is {len(source)} characters long; the limit is {MAX_TEMPLATE_CHARS}")
    tree = environment.parse(source)
    rewritten: nodes.Template = _Rewrite().visit(tree)
    rewritten.set_environment(environment)
    return rewritten


# --- methods of built-in values --------------------------------------------------------------

#: Methods a template may call on built-in values: none builds more than a few times its input.
SAFE_METHODS: dict[type, frozenset[str]] = {
    str: frozenset(
        {
            "capitalize", "casefold", "count", "endswith", "find", "index", "isalnum", "isalpha",
            "isascii", "isdecimal", "isdigit", "isidentifier", "islower", "isnumeric", "isprintable",
            "isspace", "istitle", "isupper", "lower", "lstrip", "partition", "removeprefix",
            "removesuffix", "rfind", "rindex", "rpartition", "rsplit", "rstrip", "split", "splitlines",
            "startswith", "strip", "swapcase", "title", "upper",
        }
    ),
    dict: frozenset({"get", "items", "keys", "values"}),
    list: frozenset({"count", "index"}),
    tuple: frozenset({"count", "index"}),
}
_BUILTIN_VALUES = (str, bytes, list, tuple, dict, set, frozenset, int, float, complex)


def _method_owner(obj: Any) -> Any:
    return getattr(obj, "__self__", None)


class BoundedEnvironment(ImmutableSandboxedEnvironment):
    """The sandbox plus the counting of ``Budget`` (see the module docstring)."""

    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def __init__(self, **options: Any) -> None:
        super().__init__(finalize=_finalize, **options)
        self.globals = {"range": _range, "dict": dict, "namespace": Namespace, "cycler": Cycler, "joiner": Joiner}
        self.filters = {
            name: _guarded("filter", name, func)
            for name, func in self.filters.items()
            if name not in _EXCLUDED_FILTERS
        }
        self.filters.update({_TICK: _pay, _CONCAT: _concat, _COMPARE_FILTER: _compare})
        self.tests = {name: _guarded("test", name, cast("Callable[..., Any]", func)) for name, func in self.tests.items()}

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if not super().is_safe_attribute(obj, attr, value):
            return False
        if isinstance(obj, _BUILTIN_VALUES) and callable(value):
            allowed = next((names for kind, names in SAFE_METHODS.items() if isinstance(obj, kind)), frozenset())
            return attr in allowed
        return True

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        return None  # str.format and format_map are not in SAFE_METHODS: refused as unsafe

    def getitem(self, obj: Any, argument: Any) -> Any:
        value = super().getitem(obj, argument)
        if isinstance(argument, slice):
            budget().produce(_size(value))
        return value

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        b = budget()
        b.step()
        if operator == "*":
            seq, count = (left, right) if isinstance(left, _SIZED) else (right, left)
            if isinstance(seq, _SIZED) and isinstance(count, int):
                b.produce(len(seq) * max(count, 0))
            elif isinstance(left, int) and isinstance(right, int):
                _check_bits(left.bit_length() + right.bit_length())
        elif operator == "**":
            if isinstance(left, int) and isinstance(right, int) and right > 0 and abs(left) > 1:
                _check_bits(left.bit_length() * right)
        elif operator == "+":
            if isinstance(left, _SIZED) and isinstance(right, _SIZED):
                b.produce(len(left) + len(right))
        elif operator == "%" and isinstance(left, str):
            _check_percent(b, left)
            return _produced(b, super().call_binop(context, operator, left, right))
        return super().call_binop(context, operator, left, right)

    def call(self, context: Context, obj: Any, /, *args: Any, **kwargs: Any) -> Any:
        b = budget()
        b.step()
        if b.depth >= MAX_DEPTH:
            raise RenderLimit(f"more than {MAX_DEPTH} nested calls (macros, blocks, loop())")
        owner = _method_owner(obj)
        builtin = isinstance(owner, _BUILTIN_VALUES)
        if builtin:  # a method of a string, list or dict reads it, and its arguments
            b.read(owner, *args)
        b.depth += 1
        try:
            result = super().call(context, obj, *args, **kwargs)
        finally:
            b.depth -= 1
        if builtin or obj is dict:
            return _produced(b, result)
        return result


def _check_bits(bits: int) -> None:
    if bits > MAX_INT_BITS:
        raise RenderLimit(f"an integer of about {bits} bits; the limit is {MAX_INT_BITS} bits")


def _finalize(value: Any) -> str:
    """Every ``{{ }}`` output: its text, charged (Jinja would call ``str`` on it anyway)."""
    text = value if type(value) is str else str(value)
    budget().produce(len(text))
    return text


environment = BoundedEnvironment(
    undefined=jinja2.StrictUndefined,
    autoescape=False,
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=False,
)
