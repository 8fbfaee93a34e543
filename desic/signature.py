"""``@signature``: a typed Python function becomes a declared LM task.

The function's docstring is the instruction, its parameters the inputs and its return
annotation the output. The body is never run. Calling the result predicts with the LM in
context; inside a pipeline the call is also recorded as a node of the traced program.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Generic, ParamSpec, TypeVar, overload

from pydantic import BaseModel, Field, TypeAdapter, create_model
from pydantic.fields import FieldInfo

from . import ir
from ._aio import run_sync
from ._batch import BatchResult, gather_results, items_of
from .errors import SignatureError
from .sampling import SamplingSpec
from .tools import Tool, as_tools

if TYPE_CHECKING:
    from .runtime import Partial

__all__ = ["STRATEGIES", "Output", "Signature", "signature"]

P = ParamSpec("P")
R = TypeVar("R")

STRATEGIES = ir.STRATEGIES
OUTPUT_FIELD = "output"
REASONING_FIELD = "reasoning"
TRAJECTORY_FIELD = "trajectory"  # a react node's trace output: its steps beside the answer
DEFAULT_MAX_STEPS = 6
_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")

# Signatures defined in this process, by "module:qualname" (to check artifacts for drift
# without importing anything).
_registry: dict[str, Signature[..., Any]] = {}


@dataclass(frozen=True, slots=True)
class Output:
    """Names the output of a bare return type, and optionally describes it.

    ``-> Annotated[str, desic.Output("language")]`` is a ``str`` to the caller and to type
    checkers, and the field ``language`` to the LM (instead of ``output``): the port of
    DSPy's ``"sentence -> language"`` without writing a pydantic model.
    """

    name: str
    description: str = ""


def _output_of(owner: str, annotation: Any) -> Output | None:
    """The ``Output`` marker of a return annotation, if any."""
    if typing.get_origin(annotation) is not Annotated:
        return None
    marks = [m for m in typing.get_args(annotation)[1:] if isinstance(m, Output)]
    if len(marks) > 1:
        raise SignatureError(f"{owner}: the return annotation has {len(marks)} desic.Output marks; keep one")
    if not marks:
        return None
    mark = marks[0]
    if not isinstance(mark.name, str) or not mark.name.isidentifier() or mark.name.startswith("_"):
        raise SignatureError(
            f"{owner}: desic.Output({mark.name!r}) needs a field name: a Python identifier not "
            "starting with '_', e.g. desic.Output(\"language\")"
        )
    return mark


def _split_annotated(annotation: Any) -> tuple[Any, str, FieldInfo | None]:
    """(base type, description, FieldInfo) from ``Annotated[T, "text" | Field(...)]``."""
    description = ""
    info: FieldInfo | None = None
    if typing.get_origin(annotation) is Annotated:
        base, *extras = typing.get_args(annotation)
        for extra in extras:
            if isinstance(extra, str):
                description = extra
            elif isinstance(extra, Output):
                description = extra.description or description
            elif isinstance(extra, FieldInfo):
                info = extra
                description = extra.description or description
        return base, description, info
    return annotation, description, info


def _schema_for(owner: str, what: str, annotation: Any) -> dict[str, Any]:
    try:
        return TypeAdapter(annotation).json_schema()
    except Exception as exc:  # pydantic raises several kinds for unsupported types
        raise SignatureError(
            f"{owner}: {what} has type {annotation!r}, which desic cannot describe to an LM "
            f"({type(exc).__name__}); use str, int, float, bool, Literal, list/dict of those, "
            "or a pydantic model"
        ) from exc


# A JSON schema with none of these says nothing about its value (``object``, ``Any``).
_SCHEMA_KEYS = frozenset(
    ("type", "$ref", "anyOf", "oneOf", "allOf", "enum", "const", "items", "properties", "prefixItems")
)


def _require_described(owner: str, model: type[BaseModel], bare: Any) -> None:
    """``SignatureError`` when an output field (of the model or a nested one) has a type the
    LM is told nothing about: its JSON schema is empty, as for ``object`` or ``Any``."""
    schema = model.model_json_schema()
    scopes = [(model.__name__, schema), *((name, d) for name, d in schema.get("$defs", {}).items())]
    for scope, node in scopes:
        for field, prop in (node.get("properties") or {}).items():
            if isinstance(prop, dict) and not _SCHEMA_KEYS & prop.keys():
                if bare is not None and scope == model.__name__:
                    what = f"the return type {bare!r}"
                elif scope == model.__name__:
                    what = f"output field {field!r}"
                else:
                    what = f"field {field!r} of {scope}"
                raise SignatureError(
                    f"{owner}: {what} gives the LM no JSON schema to follow (it accepts anything); "
                    "declare a concrete type: str, int, float, bool, Literal, list/dict of those, "
                    "or a pydantic model"
                )


def _build(fn: Callable[..., Any], name: str) -> tuple[ir.SignatureSpec, type[BaseModel], tuple[str, ...]]:
    owner = f"@signature {fn.__qualname__}"
    try:
        hints = typing.get_type_hints(fn, include_extras=True)
    except Exception as exc:
        raise SignatureError(f"{owner}: cannot resolve type annotations: {exc}") from exc
    params = inspect.signature(fn).parameters
    inputs: list[ir.FieldSpec] = []
    for pname, param in params.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            star = "*" if param.kind is param.VAR_POSITIONAL else "**"
            raise SignatureError(
                f"{owner}: parameter {star}{pname} is not allowed; declare each input as a named, "
                "annotated parameter"
            )
        if param.kind is param.POSITIONAL_ONLY:
            raise SignatureError(f"{owner}: parameter {pname!r} is positional-only; drop the '/'")
        if pname not in hints:
            raise SignatureError(
                f"{owner}: parameter {pname!r} has no type annotation; write e.g. '{pname}: str'"
            )
        base, description, _ = _split_annotated(hints[pname])
        default: Any = param.default
        if isinstance(default, FieldInfo):
            description = default.description or description
            default = default.get_default() if not default.is_required() else param.empty
        required = default is param.empty
        if not required:
            try:
                default = TypeAdapter(Any).dump_python(default, mode="json")
            except Exception as exc:
                raise SignatureError(f"{owner}: default of {pname!r} is not JSON data") from exc
        inputs.append(
            ir.FieldSpec(
                name=pname,
                schema=_schema_for(owner, f"parameter {pname!r}", base),
                description=description,
                required=required,
                default=None if required else default,
            )
        )
    if "return" not in hints or hints["return"] is type(None):
        raise SignatureError(
            f"{owner}: no return annotation; declare the output, e.g. '-> str' or '-> MyModel'"
        )
    ret, ret_desc, _ = _split_annotated(hints["return"])
    named = _output_of(owner, hints["return"])
    output_field: str | None = None
    if isinstance(ret, type) and issubclass(ret, BaseModel):
        if named is not None:
            raise SignatureError(
                f"{owner}: desic.Output({named.name!r}) names the output of a bare type (str, "
                f"list[str], ...); {ret.__name__} already names its fields: drop the Output mark"
            )
        model: type[BaseModel] = ret
        _schema_for(owner, "the return type", ret)
    else:
        _schema_for(owner, "the return type", ret)
        output_field = named.name if named is not None else OUTPUT_FIELD
        model = create_model(
            f"{_camel(name)}Output",
            **{output_field: (ret, Field(..., description=ret_desc or None))},  # type: ignore[call-overload]
        )
    _require_described(owner, model, ret if output_field is not None else None)
    if any(f.name in model.model_fields for f in inputs):
        clash = next(f.name for f in inputs if f.name in model.model_fields)
        raise SignatureError(f"{owner}: {clash!r} is both an input and an output field; rename one")
    instructions = inspect.cleandoc(fn.__doc__ or "").strip()
    if not instructions:
        instructions = f"Given {', '.join(f.name for f in inputs) or 'nothing'}, produce " + (
            ", ".join(model.model_fields) + "."
        )
    spec = ir.SignatureSpec(
        name=name,
        instructions=instructions,
        inputs=tuple(inputs),
        output_schema=model.model_json_schema(),
        output_field=output_field,
        ref=f"{fn.__module__}:{fn.__qualname__}",
    )
    return spec, model, tuple(params)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in re.split(r"[_\-.#]", name) if part)


def reasoning_model(model: type[BaseModel]) -> type[BaseModel]:
    """``model`` with a ``reasoning`` field generated before its own fields."""
    fields: dict[str, Any] = {
        REASONING_FIELD: (str, Field(..., description="Think step by step before answering.")),
    }
    for fname, finfo in model.model_fields.items():
        fields[fname] = (finfo.annotation, finfo)
    return create_model(f"{model.__name__}WithReasoning", **fields)


class Signature(Generic[P, R]):
    """A declared LM task. Create with ``@desic.signature``; call it like the function."""

    def __init__(
        self,
        fn: Callable[P, R] | None,
        *,
        spec: ir.SignatureSpec,
        output_model: type[BaseModel],
        strategy: str = "predict",
        node_name: str | None = None,
        sampling: SamplingSpec | None = None,
        tools: tuple[Tool[..., Any], ...] = (),
        max_steps: int | None = None,
    ):
        if strategy not in STRATEGIES:
            raise SignatureError(
                f"@signature {spec.name}: unknown strategy {strategy!r}; choose one of {STRATEGIES}"
            )
        if strategy != "react" and (tools or max_steps is not None):
            raise SignatureError(
                f"@signature {spec.name}: tools and max_steps are for agents; add strategy='react'"
            )
        if strategy == "react":
            if TRAJECTORY_FIELD in spec.output_names:
                raise SignatureError(
                    f"@signature {spec.name}: an agent's output cannot have a field named "
                    f"{TRAJECTORY_FIELD!r} (its trace keeps the steps there); rename it"
                )
            if max_steps is None:
                max_steps = DEFAULT_MAX_STEPS
            if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 1:
                raise SignatureError(f"@signature {spec.name}: max_steps={max_steps!r} must be a whole number, 1 or more")
        self.tools = tools
        self.max_steps = max_steps or 0
        self.fn = fn
        self.spec = spec
        self.output_model = output_model
        self.strategy = strategy
        self.node_name = node_name
        if sampling is not None and not isinstance(sampling, SamplingSpec):
            raise SignatureError(
                f"@signature {spec.name}: sampling= takes desic.Majority(...), desic.BestOfN(...) "
                f"or desic.Refine(...), got {sampling!r}"
            )
        self.sampling = sampling
        self._param_order = spec.input_names
        self._cot_model: type[BaseModel] | None = None
        self.fingerprint = spec.fingerprint
        if fn is not None:
            self.__doc__ = fn.__doc__
            self.__name__ = getattr(fn, "__name__", spec.name)
            self.__qualname__ = getattr(fn, "__qualname__", spec.name)
            self.__module__ = getattr(fn, "__module__", __name__)
            self.__wrapped__ = fn

    @classmethod
    def from_function(
        cls,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        strategy: str = "predict",
        sampling: SamplingSpec | None = None,
        tools: Iterable[Callable[..., Any]] = (),
        max_steps: int | None = None,
    ) -> Signature[P, R]:
        sig_name = name or fn.__name__
        if not _NAME_RE.match(sig_name):
            raise SignatureError(f"@signature {fn.__qualname__}: invalid name {sig_name!r}")
        spec, model, _ = _build(fn, sig_name)
        sig = cls(
            fn, spec=spec, output_model=model, strategy=strategy, sampling=sampling,
            tools=as_tools(tools, f"@signature {sig_name}"), max_steps=max_steps,
        )
        _registry[spec.ref] = sig
        return sig

    @classmethod
    def from_spec(cls, spec: ir.SignatureSpec, strategy: str = "predict") -> Signature[..., Any]:
        """Rebuild a signature from an artifact's spec alone (no user code)."""
        from ._schema import model_from_schema

        return cls(None, spec=spec, output_model=model_from_schema(spec.output_schema), strategy=strategy)

    # --- what the runtime asks of a signature ----------------------------------------

    def response_model(self, strategy: str | None = None) -> type[BaseModel]:
        """The pydantic model the LM must fill for ``strategy``."""
        if (strategy or self.strategy) == "chain_of_thought":
            if self._cot_model is None:
                self._cot_model = reasoning_model(self.output_model)
            return self._cot_model
        return self.output_model

    def finish(self, value: BaseModel) -> Any:
        """The caller-facing result from the LM's validated response."""
        if not isinstance(value, self.output_model):
            data = value.model_dump()
            data.pop(REASONING_FIELD, None)
            value = self.output_model.model_validate(data)
        if self.spec.output_field is not None:
            return getattr(value, self.spec.output_field)
        return value

    def partial(self, value: BaseModel) -> Any:
        """The caller-facing form of a partial (unvalidated) response: ``finish`` without
        validation, fields not yet written being None."""
        if self.spec.output_field is not None:
            return getattr(value, self.spec.output_field, None)
        if isinstance(value, self.output_model):
            return value
        return self.output_model.model_construct(
            **{name: getattr(value, name, None) for name in self.output_model.model_fields}
        )

    def bind(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """Inputs by name; positional arguments follow the declared order."""
        if len(args) > len(self._param_order):
            raise TypeError(
                f"{self.spec.name}() takes {len(self._param_order)} inputs but {len(args)} were given"
            )
        inputs = dict(zip(self._param_order, args))
        for key, value in kwargs.items():
            if key in inputs:
                raise TypeError(f"{self.spec.name}() got multiple values for input {key!r}")
            if key not in self._param_order:
                raise TypeError(
                    f"{self.spec.name}() got an unexpected input {key!r}; "
                    f"its inputs are {', '.join(self._param_order)}"
                )
            inputs[key] = value
        for field in self.spec.inputs:
            if field.name not in inputs:
                if field.required:
                    raise TypeError(f"{self.spec.name}() missing required input {field.name!r}")
                inputs[field.name] = field.default
        return inputs

    # --- calling ---------------------------------------------------------------------

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        from . import runtime

        return runtime.call_signature(self, self.bind(args, kwargs))  # type: ignore[no-any-return]

    def acall(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R]:
        """The async form: ``await sig.acall(...)``; independent calls may be gathered."""
        from . import runtime

        return runtime.acall_signature(self, self.bind(args, kwargs))

    def stream(self, *args: P.args, **kwargs: P.kwargs) -> Iterator[Partial[R]]:
        """The output as it is written: ``desic.Partial`` items, the last with ``done=True``
        and the validated output (what calling the signature returns)."""
        from . import runtime

        return runtime.sync_stream(runtime.stream_signature(self, self.bind(args, kwargs)))

    def astream(self, *args: P.args, **kwargs: P.kwargs) -> AsyncIterator[Partial[R]]:
        """``stream`` for async code: ``async for partial in sig.astream(...)``."""
        from . import runtime

        return runtime.stream_signature(self, self.bind(args, kwargs))

    def batch(
        self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[R]]:
        """Predict for every dict of inputs, ``concurrency`` at a time (default:
        ``desic.context(max_concurrency=...)``, ``$DESIC_MAX_CONCURRENCY``, else 8).

        One ``BatchResult`` per item, in input order: ``.output``, or the ``.error`` that
        item raised (bad inputs, an LM failure); one failure never stops the others.
        """
        return run_sync(self.abatch(inputs, concurrency=concurrency))

    async def abatch(
        self, inputs: Iterable[Mapping[str, Any]], *, concurrency: int | None = None
    ) -> list[BatchResult[R]]:
        """The async form of :meth:`batch`."""
        from . import runtime

        items = items_of(inputs, self.spec.name)

        async def one(item: dict[str, Any]) -> R:
            result: R = await runtime.acall_signature(self, self.bind((), item))
            return result

        return await gather_results(items, one, runtime.default_concurrency(concurrency))

    def named(self, name: str) -> Signature[P, R]:
        """The same signature recorded under an explicit node id (for repeated uses)."""
        if not _NAME_RE.match(name):
            raise SignatureError(f"invalid node name {name!r}")
        return self._copy(node_name=name)

    def with_strategy(self, strategy: str) -> Signature[P, R]:
        return self._copy(strategy=strategy)

    def with_sampling(self, sampling: SamplingSpec | None) -> Signature[P, R]:
        """The same signature answering by ``sampling`` (``desic.Majority(5)``, ...)."""
        return self._copy(sampling=sampling)

    def _copy(self, **changes: Any) -> Signature[P, R]:
        new = Signature(
            self.fn,
            spec=self.spec,
            output_model=self.output_model,
            strategy=changes.get("strategy", self.strategy),
            node_name=changes.get("node_name", self.node_name),
            sampling=changes.get("sampling", self.sampling),
            tools=self.tools,
            max_steps=self.max_steps or None,
        )
        return new

    def __repr__(self) -> str:
        ins = ", ".join(self.spec.input_names)
        return f"<desic.Signature {self.spec.name}({ins}) strategy={self.strategy}>"


@overload
def signature(fn: Callable[P, R], /) -> Signature[P, R]: ...
@overload
def signature(
    *,
    name: str | None = None,
    strategy: str = "predict",
    sampling: SamplingSpec | None = None,
    tools: Iterable[Callable[..., Any]] = (),
    max_steps: int | None = None,
) -> Callable[[Callable[P, R]], Signature[P, R]]: ...
def signature(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    strategy: str = "predict",
    sampling: SamplingSpec | None = None,
    tools: Iterable[Callable[..., Any]] = (),
    max_steps: int | None = None,
) -> Signature[P, R] | Callable[[Callable[P, R]], Signature[P, R]]:
    """Declare an LM task from a typed function (bare ``@signature`` or with arguments).

    >>> @signature
    ... def route(ticket: str) -> Route:
    ...     '''Route a support ticket to a team.'''

    ``strategy="react"`` makes it an agent: it calls ``tools`` (typed functions, see
    ``desic.tool``) step by step, at most ``max_steps`` model calls (default 6), until it
    finishes with the declared output.
    """
    if fn is not None:
        return Signature.from_function(fn)

    def decorate(f: Callable[P, R]) -> Signature[P, R]:
        return Signature.from_function(
            f, name=name, strategy=strategy, sampling=sampling, tools=tools, max_steps=max_steps
        )

    return decorate


def registered(ref: str) -> Signature[..., Any] | None:
    return _registry.get(ref)
