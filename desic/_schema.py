"""Types <-> JSON schema.

``model_from_schema`` rebuilds a pydantic model from the JSON schema stored in an
artifact, so a single-signature program runs without the user's code. It understands
the subset of JSON schema that pydantic emits for the types signatures accept.
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, Field, create_model

from .errors import ArtifactError

_PRIMITIVES: dict[str, Any] = {
    "string": str,
    "integer": int,
    "number": float,
    "boolean": bool,
    "null": type(None),
}


class _Builder:
    def __init__(self, root: dict[str, Any]):
        self.defs: dict[str, Any] = dict(root.get("$defs", {}))
        self.models: dict[str, type[BaseModel]] = {}

    def type_of(self, schema: dict[str, Any]) -> Any:
        if "$ref" in schema:
            name = str(schema["$ref"]).rsplit("/", 1)[-1]
            if name not in self.defs:
                raise ArtifactError(f"output schema refers to unknown definition {name!r}")
            if name in self.models:
                return self.models[name]
            return self.type_of({**self.defs[name], "title": self.defs[name].get("title", name)})
        if "enum" in schema:
            return Literal[tuple(schema["enum"])]
        if "const" in schema:
            return Literal[schema["const"]]
        for key in ("anyOf", "oneOf"):
            if key in schema:
                options = [self.type_of(s) for s in schema[key]]
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
        if kind in _PRIMITIVES:
            return _PRIMITIVES[kind]
        return Any

    def model(self, schema: dict[str, Any]) -> type[BaseModel]:
        title = str(schema.get("title", "Output")).replace(" ", "")
        required = set(schema.get("required", []))
        fields: dict[str, Any] = {}
        for name, prop in schema.get("properties", {}).items():
            annotation = self.type_of(prop)
            desc = prop.get("description")
            if name in required:
                fields[name] = (annotation, Field(..., description=desc))
            else:
                fields[name] = (annotation, Field(prop.get("default"), description=desc))
        model: type[BaseModel] = create_model(title, __doc__=schema.get("description"), **fields)
        self.models[title] = model
        return model


def model_from_schema(schema: dict[str, Any]) -> type[BaseModel]:
    """A pydantic model equivalent to ``schema`` (an object schema with properties)."""
    if schema.get("type") != "object" or "properties" not in schema:
        raise ArtifactError("output schema is not an object with properties; cannot rebuild it")
    return _Builder(schema).model(schema)
