"""Types <-> JSON schema.

``model_from_schema`` rebuilds a pydantic model from the JSON schema stored in an
artifact, so a single-signature program runs without the user's code. It understands
the subset of JSON schema that pydantic emits for the types signatures accept, including
recursive models (a ``$defs`` entry that refers to itself, e.g. through a list of
children). The schema is untrusted data: whatever it holds, the result is a model or an
``ArtifactError`` saying what is wrong.
"""

from __future__ import annotations

from typing import Any, ForwardRef, Literal, Optional, Union

from pydantic import BaseModel, Field, create_model

from .errors import ArtifactError

_PRIMITIVES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}

#: How many ``$ref``\\s may be followed inside one another (a chain of definitions).
MAX_REF_DEPTH = 64


def _is_model(schema: dict[str, Any]) -> bool:
    return schema.get("type") == "object" and "properties" in schema


class _Builder:
    def __init__(self, root: dict[str, Any]):
        defs = root.get("$defs", {})
        self.defs: dict[str, Any] = dict(defs) if isinstance(defs, dict) else {}
        self.models: dict[str, type[BaseModel]] = {}  # by definition name
        self.building: dict[str, str] = {}  # definition being built -> its forward-ref name
        self.built: list[type[BaseModel]] = []
        self.forward: dict[str, type[BaseModel]] = {}  # forward-ref name -> model
        self.refs = 0

    def ref(self, ref: Any) -> Any:
        if not isinstance(ref, str):
            raise ArtifactError(f"output schema has a '$ref' that is not a string: {ref!r:.60}")
        name = ref.rsplit("/", 1)[-1]
        if name not in self.defs or not isinstance(self.defs[name], dict):
            raise ArtifactError(f"output schema refers to unknown definition {name!r}")
        if name in self.models:
            return self.models[name]
        target: dict[str, Any] = self.defs[name]
        if name in self.building:
            if _is_model(target):  # recursion through an object: a forward reference
                return ForwardRef(self.building[name])
            raise ArtifactError(
                f"output schema definition {name!r} refers to itself without an object in between "
                "(a type alias of itself); such a type cannot be rebuilt"
            )
        if len(self.building) >= MAX_REF_DEPTH:
            raise ArtifactError(f"output schema definitions nest more than {MAX_REF_DEPTH} levels deep")
        self.refs += 1
        self.building[name] = f"_desic_def_{self.refs}"
        try:
            result = self.type_of({**target, "title": target.get("title", name)})
        finally:
            forward_name = self.building.pop(name)
        if isinstance(result, type) and issubclass(result, BaseModel):
            self.models[name] = result
            self.forward[forward_name] = result
        return result

    def type_of(self, schema: dict[str, Any]) -> Any:
        if not isinstance(schema, dict):
            raise ArtifactError(f"output schema has a part that is not an object: {schema!r:.60}")
        if "$ref" in schema:
            return self.ref(schema["$ref"])
        if "enum" in schema:
            values = schema["enum"]
            if not isinstance(values, list) or not values:
                raise ArtifactError("output schema has an 'enum' that is not a non-empty list")
            if not all(v is None or isinstance(v, (str, int, float, bool)) for v in values):
                raise ArtifactError("output schema has an 'enum' of values other than strings, numbers and null")
            return Literal[tuple(values)]
        if "const" in schema:
            value = schema["const"]
            if not (value is None or isinstance(value, (str, int, float, bool))):
                raise ArtifactError("output schema has a 'const' that is not a string, number or null")
            return Literal[value]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.type_of(s) for s in schema[key]]
                if not options:
                    raise ArtifactError(f"output schema has an empty {key!r}")
                if len(options) == 2 and type(None) in options:
                    other = next(o for o in options if o is not type(None))
                    return Optional[other]  # noqa: UP045 (a type built at runtime)
                return Union[tuple(options)]  # noqa: UP007 (a type built at runtime)
        if "allOf" in schema and len(schema["allOf"]) == 1:
            return self.type_of(schema["allOf"][0])
        kind = schema.get("type")
        if isinstance(kind, list):
            return Union[tuple(_PRIMITIVES.get(k, Any) for k in kind)]  # noqa: UP007
        if kind == "array":
            items = schema.get("items")
            if isinstance(items, dict):
                return list[self.type_of(items)]  # type: ignore[misc]
            if "prefixItems" in schema:
                return tuple[tuple(self.type_of(s) for s in schema["prefixItems"])]  # type: ignore[misc]
            return list[Any]
        if kind == "object":
            if "properties" in schema:
                return self.model(schema)
            extra = schema.get("additionalProperties")
            if isinstance(extra, dict):
                return dict[str, self.type_of(extra)]  # type: ignore[misc]
            return dict[str, Any]
        if isinstance(kind, str) and kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        return Any

    def model(self, schema: dict[str, Any]) -> type[BaseModel]:
        title = str(schema.get("title", "Output")).replace(" ", "") or "Output"
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not isinstance(properties, dict) or not isinstance(required, list):
            raise ArtifactError(f"output schema of {title!r}: 'properties' must be an object, 'required' a list")
        fields: dict[str, Any] = {}
        for name, prop in properties.items():
            _check_field_name(name)
            if not isinstance(prop, dict):
                raise ArtifactError(f"output property {name!r} has a schema that is not an object")
            annotation = self.type_of(prop)
            desc = prop.get("description")
            if desc is not None and not isinstance(desc, str):
                raise ArtifactError(f"output property {name!r} has a description that is not a string")
            if name in required:
                fields[name] = (annotation, Field(..., description=desc))
            else:
                fields[name] = (annotation, Field(prop.get("default"), description=desc))
        doc = schema.get("description")
        try:
            model: type[BaseModel] = create_model(
                title, __doc__=doc if isinstance(doc, str) else None, **fields
            )
        except Exception as exc:  # pydantic refuses some field names and types in several ways
            raise ArtifactError(
                f"output schema of {title!r} cannot be rebuilt as a model: {type(exc).__name__}: {exc}"
            ) from exc
        self.built.append(model)
        return model

    def finish(self) -> None:
        """Resolve the forward references of recursive definitions."""
        if not self.forward:
            return
        for model in self.built:
            if not model.__pydantic_complete__:
                model.model_rebuild(_types_namespace=dict(self.forward))


def _check_field_name(name: str) -> None:
    if name.startswith("_"):
        raise ArtifactError(
            f"output property {name!r} cannot be a model field: names starting with '_' are private in pydantic"
        )
    if name.startswith("model_") and hasattr(BaseModel, name):
        raise ArtifactError(
            f"output property {name!r} cannot be a model field: it is pydantic's own BaseModel.{name}"
        )


def model_from_schema(schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model equivalent to ``schema``: an object schema with properties, or a
    ``$ref`` to one (a recursive model at the root)."""
    if not isinstance(schema, dict):
        raise ArtifactError("output schema is not an object; cannot rebuild it")
    builder = _Builder(schema)
    try:
        if "$ref" in schema and "properties" not in schema:
            model = builder.ref(schema["$ref"])
        elif _is_model(schema):
            model = builder.model(schema)
        else:
            model = None
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            raise ArtifactError("output schema is not an object with properties; cannot rebuild it")
        builder.finish()
    except ArtifactError:
        raise
    except RecursionError as exc:
        raise ArtifactError("output schema nests too deeply to be rebuilt") from exc
    except Exception as exc:  # the schema is untrusted data: name what failed, never a traceback
        raise ArtifactError(f"output schema cannot be rebuilt as a model: {type(exc).__name__}: {exc}") from exc
    return model
