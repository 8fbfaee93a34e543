"""Tools: typed Python functions a ``react`` agent may call.

Any typed function, sync or async, is a tool: its name, its docstring as the description
the model reads, and its parameters' type hints as the JSON schema of its arguments (a
pydantic model built from them, which also validates every call). ``desic.tool`` sets
options (a name or description of its own, a ``timeout``, ``max_calls`` per run)::

    @desic.tool(timeout=5)
    def search(query: Annotated[str, "a few keywords"]) -> list[str]:
        '''Find passages about the query.'''

A call never raises into the agent: invalid arguments, an exception, a timeout, a result
that is not JSON data, or a tool called more than ``max_calls`` times all come back as an
observation saying what went wrong, for the model to read and act on. What returns is
shown to the model as text: a string as it is, anything else as JSON (pydantic models,
dataclasses, lists and dicts of those).
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import json
import typing
from collections.abc import Awaitable, Callable, Iterable
from typing import Annotated, Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, create_model
from pydantic.fields import FieldInfo

from . import ir
from ._aio import workers
from .errors import SignatureError

__all__ = ["OBSERVATION_CHARS", "Tool", "as_tools", "render_result", "tool"]

P = ParamSpec("P")
R = TypeVar("R")

#: How much of a tool's result the model sees (longer results are cut, saying so).
OBSERVATION_CHARS = 4000

_ANY = TypeAdapter(Any)


def _split(annotation: Any) -> tuple[Any, str]:
    """(type, description) from ``Annotated[T, "text" | Field(description=...)]``."""
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        description = ""
        for extra in extras:
            if isinstance(extra, str):
                description = extra
            elif isinstance(extra, FieldInfo) and extra.description:
                description = extra.description
        return base, description
    return annotation, ""


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_") if part)


def _args_model(fn: Callable[..., Any], name: str) -> type[BaseModel]:
    owner = f"tool {name!r}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise SignatureError(f"{owner}: cannot resolve type annotations: {exc}") from exc
    fields: dict[str, Any] = {}
    for pname, param in inspect.signature(fn).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
            raise SignatureError(
                f"{owner}: parameter {pname!r} must be an ordinary named parameter (no *args, **kwargs or '/')"
            )
        if pname not in hints:
            raise SignatureError(f"{owner}: parameter {pname!r} has no type annotation; write e.g. '{pname}: str'")
        annotation = hints[pname]
        _, description = _split(annotation)
        default = param.default
        if isinstance(default, FieldInfo):
            description = default.description or description
            default = default.get_default() if not default.is_required() else param.empty
        info = Field(... if default is param.empty else default, description=description or None)
        fields[pname] = (annotation, info)  # constraints in Annotated[..., Field(...)] stay
    try:
        model: type[BaseModel] = create_model(f"{_camel(name)}Args", __config__=ConfigDict(extra="forbid"), **fields)
        model.model_json_schema()
    except SignatureError:
        raise
    except Exception as exc:  # pydantic raises several kinds for unsupported types
        raise SignatureError(
            f"{owner}: its parameters cannot be described to an LM ({type(exc).__name__}: {exc}); "
            "use str, int, float, bool, Literal, list/dict of those, or pydantic models"
        ) from exc
    return model


def render_result(name: str, value: Any) -> tuple[str, bool]:
    """What the model reads of a tool's result (a string as it is, anything else as JSON),
    and whether it was usable (False: an error observation saying why not)."""
    if isinstance(value, str):
        text = value
    else:
        try:
            text = json.dumps(_ANY.dump_python(value, mode="json"), ensure_ascii=False)
        except Exception as exc:  # noqa: BLE001 - pydantic raises several kinds
            return (
                f"error: {name} returned a {type(value).__name__}, which is not JSON data "
                f"({type(exc).__name__}); a tool must return str, numbers, lists/dicts or pydantic models"
            ), False
    if len(text) > OBSERVATION_CHARS:
        text = text[:OBSERVATION_CHARS] + f"... (cut: {len(text)} characters in all)"
    return text, True


class Tool(Generic[P, R]):
    """A function an agent may call; call the object itself like the function.

    ``name`` and ``description`` (the docstring unless given) are what the model reads;
    ``parameters`` is the JSON schema of the arguments; ``timeout`` (seconds) and
    ``max_calls`` (per agent run) bound its use.
    """

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        description: str | None = None,
        timeout: float | None = None,
        max_calls: int | None = None,
    ) -> None:
        if isinstance(fn, Tool):
            fn = typing.cast(Callable[P, R], getattr(fn, "fn"))  # noqa: B009 - a Tool wrapped again
        if not callable(fn):
            raise SignatureError(f"a tool must be a function, not {fn!r}")
        tool_name: str = name or str(getattr(fn, "__name__", ""))
        if not tool_name.isidentifier() or tool_name == ir.FINISH:
            raise SignatureError(
                f"tool name {tool_name!r} is not usable: give a Python name other than {ir.FINISH!r} "
                "(desic.tool(fn, name='...'))"
            )
        if timeout is not None and (isinstance(timeout, bool) or not timeout > 0):
            raise SignatureError(f"tool {tool_name!r}: timeout={timeout!r} must be a positive number of seconds")
        if max_calls is not None and (isinstance(max_calls, bool) or not isinstance(max_calls, int) or max_calls < 1):
            raise SignatureError(f"tool {tool_name!r}: max_calls={max_calls!r} must be a whole number, 1 or more")
        self.fn = fn
        self.name = tool_name
        self.description = (
            description if description is not None else inspect.cleandoc(getattr(fn, "__doc__", None) or "")
        )
        self.timeout = timeout
        self.max_calls = max_calls
        self.args_model = _args_model(fn, tool_name)
        self.parameters: dict[str, Any] = self.args_model.model_json_schema()
        self._schema_key = ir.fingerprint(self.parameters)
        self.is_async = inspect.iscoroutinefunction(fn)
        self.__doc__ = getattr(fn, "__doc__", None)
        self.__name__ = tool_name
        self.__wrapped__ = fn

    @property
    def key(self) -> tuple[str, str, str]:
        """What of the tool a node holds (name, description, argument schema), hashable."""
        return (self.name, self.description, self._schema_key)

    @property
    def spec(self) -> ir.ToolSpec:
        """The tool as data, as artifacts store it (never its code)."""
        return ir.ToolSpec(name=self.name, description=self.description, parameters=self.parameters)

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    async def run(self, args: Any) -> tuple[str, bool]:
        """Call the tool with the model's ``args``: ``(observation, ok)``. Never raises
        (but for a cancellation): every failure is an observation saying what went wrong."""
        try:
            if isinstance(args, BaseModel):
                args = args.model_dump()
            values = self.args_model.model_validate(args if args is not None else {})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc']) or 'arguments'}: {e['msg']}" for e in exc.errors()
            )
            return f"error: invalid arguments for {self.name}: {problems}", False
        kwargs = {k: getattr(values, k) for k in type(values).model_fields}
        try:
            if self.is_async:
                result = await asyncio.wait_for(self._call_async(kwargs), self.timeout)
            else:
                # in the caller's context: what the tool calls (a retriever, an LM) sees the run
                job = workers().submit(contextvars.copy_context().run, self._call_sync, kwargs)
                result = await asyncio.wait_for(job, self.timeout)
        except TimeoutError:
            return f"error: {self.name} gave no result within {self.timeout:g}s (timeout)", False
        except Exception as exc:  # noqa: BLE001 - the model reads what went wrong
            return f"error: {self.name} raised {type(exc).__name__}: {exc}", False
        return render_result(self.name, result)

    async def _call_async(self, kwargs: dict[str, Any]) -> Any:
        result = self.fn(**kwargs)  # type: ignore[call-arg]
        return await typing.cast(Awaitable[Any], result)

    def _call_sync(self, kwargs: dict[str, Any]) -> Any:
        return self.fn(**kwargs)  # type: ignore[call-arg]

    def __repr__(self) -> str:
        args = ", ".join(self.parameters.get("properties", {}))
        return f"<desic.Tool {self.name}({args})>"


@overload
def tool(fn: Callable[P, R], /) -> Tool[P, R]: ...
@overload
def tool(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_calls: int | None = None,
) -> Tool[P, R]: ...
@overload
def tool(
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_calls: int | None = None,
) -> Callable[[Callable[P, R]], Tool[P, R]]: ...
def tool(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    description: str | None = None,
    timeout: float | None = None,
    max_calls: int | None = None,
) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
    """Make a function a tool: bare ``@desic.tool``, with options ``@desic.tool(timeout=5)``,
    or as a wrapper ``desic.tool(fn, name="lookup")``. A plain typed function given in
    ``tools=[...]`` is a tool already; this is for the options."""
    if fn is not None:
        return Tool(fn, name=name, description=description, timeout=timeout, max_calls=max_calls)

    def decorate(f: Callable[P, R]) -> Tool[P, R]:
        return Tool(f, name=name, description=description, timeout=timeout, max_calls=max_calls)

    return decorate


def as_tools(items: Iterable[Any], owner: str) -> tuple[Tool[..., Any], ...]:
    """``items`` (functions or ``Tool``s) as tools, names checked unique."""
    if isinstance(items, (str, bytes)) or not isinstance(items, Iterable):
        raise SignatureError(f"{owner}: tools must be a list of functions, not {items!r}")
    out: list[Tool[..., Any]] = []
    for item in items:
        t = item if isinstance(item, Tool) else Tool(item)
        if any(t.name == other.name for other in out):
            raise SignatureError(f"{owner}: two tools are named {t.name!r}; rename one with desic.tool(fn, name=...)")
        out.append(t)
    return tuple(out)
