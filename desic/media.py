"""Inputs beyond text: ``Image`` and ``History``.

Declare them as a signature's input types::

    @desic.signature
    def describe(photo: desic.Image, question: str) -> str: ...

    @desic.signature
    def chat(history: desic.History, message: str) -> str: ...

An ``Image`` is sent as an OpenAI image content part, inside the user message where its
field stands. As data (demos, artifacts, run records) it is ``{"url": ...}``: a web URL is
kept as the reference it is; an image from a file, bytes or a PIL image is kept inline as
a ``data:`` URL of at most ``Image.max_inline_bytes`` (above it, storing it is an error
that says to pass a URL instead). Data read back (an artifact is untrusted) may only hold
``http(s)`` or ``data:image/...`` URLs, never a path: no file is read on an artifact's behalf.

A ``History`` is a list of prior turns, rendered as real chat messages between the demos
and the current input: ``{"role": "user" | "assistant", "content": "..."}`` turns, or
``{"inputs": {...}, "output": {...}}`` turns of the signature itself (rendered as its
demos are). As data it is that list.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import io
import mimetypes
import os
from typing import Any, ClassVar, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    RootModel,
    SerializerFunctionWrapHandler,
    field_serializer,
    field_validator,
    model_serializer,
    model_validator,
)

__all__ = ["MEDIA_KEY", "History", "Image", "Turn", "describe_image", "media_kind"]

#: The key of an input's JSON schema that marks an image or a history input.
MEDIA_KEY = "x-desic"

_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
)


def _schema_mark(kind: str | None) -> Any:
    """A ``json_schema_extra`` that marks the schema as ``kind`` and drops the docstring (a
    signature's fingerprint covers its inputs' schemas: editing a docstring is no drift)."""

    def extra(schema: dict[str, Any]) -> None:
        schema.pop("description", None)
        if kind is not None:
            schema[MEDIA_KEY] = kind

    return extra


def _sniff(data: bytes) -> str | None:
    for magic, media_type in _MAGIC:
        if data.startswith(magic):
            return media_type
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return None


def _data_url(data: bytes, media_type: str | None, what: str) -> str:
    media_type = media_type or _sniff(data)
    if media_type is None:
        raise ValueError(
            f"{what} is not a PNG, JPEG, GIF or WebP image; give its type: "
            "desic.Image.from_bytes(data, media_type='image/...')"
        )
    return f"data:{media_type};base64,{base64.b64encode(data).decode('ascii')}"


def _is_pil(value: Any) -> bool:
    return type(value).__module__.startswith("PIL.") and hasattr(value, "save")


class Image(BaseModel):
    """An image input: ``Image("https://...")``, ``Image("photo.png")`` (a file),
    ``Image(raw_bytes)``, ``Image(pil_image)``, or the ``from_*`` constructors.

    ``detail`` is OpenAI's ``"low"``/``"high"``/``"auto"`` (None: the provider's default).
    """

    model_config = ConfigDict(frozen=True, json_schema_extra=_schema_mark("image"))

    #: The most bytes an inline image may have when stored (demos, artifacts, records).
    max_inline_bytes: ClassVar[int] = 1_000_000

    url: str
    detail: Literal["auto", "low", "high"] | None = None

    def __init__(self, source: Any = None, /, **data: Any) -> None:
        if source is not None:
            data = {**_from_source(source), **data}
        super().__init__(**data)

    @model_validator(mode="before")
    @classmethod
    def _from_data(cls, value: Any) -> Any:
        if isinstance(value, str):  # as data, a string is a URL (never a path)
            return {"url": value}
        return value

    @field_validator("url")
    @classmethod
    def _check_url(cls, url: str) -> str:
        lowered = url[:16].lower()
        if lowered.startswith(("http://", "https://")):
            return url
        if lowered.startswith("data:image/"):
            head, sep, payload = url.partition(",")
            if not sep or not head.endswith(";base64"):
                raise ValueError("an image data: URL must be base64: data:image/png;base64,...")
            try:
                base64.b64decode(payload[:64] + "=" * (-len(payload[:64]) % 4), validate=True)
            except (binascii.Error, ValueError):
                raise ValueError("the image data: URL does not hold base64 data") from None
            return url
        raise ValueError(
            f"an image URL must be http(s):// or data:image/...;base64, got {url[:40]!r}; "
            "for a file use desic.Image.from_path(path)"
        )

    @model_serializer(mode="wrap")
    def _plain(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data

    @field_serializer("url")
    def _store_url(self, url: str) -> str:
        size = self.inline_bytes
        if size > self.max_inline_bytes:
            raise ValueError(
                f"an inline image of {size:,} bytes is too large to store (demos, artifacts, "
                f"records keep at most desic.Image.max_inline_bytes = {self.max_inline_bytes:,}); "
                "host it and pass its URL, desic.Image('https://...'), or make it smaller"
            )
        return url

    # --- constructors ----------------------------------------------------------------

    @classmethod
    def from_url(cls, url: str, *, detail: str | None = None) -> Image:
        return cls(url=url, detail=detail)

    @classmethod
    def from_path(cls, path: str | os.PathLike[str], *, detail: str | None = None) -> Image:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError as exc:
            raise ValueError(f"cannot read image {os.fspath(path)!r}: {exc.strerror or exc}") from exc
        media_type = _sniff(data) or mimetypes.guess_type(os.fspath(path))[0]
        if media_type is not None and not media_type.startswith("image/"):
            media_type = None
        return cls(url=_data_url(data, media_type, f"file {os.fspath(path)!r}"), detail=detail)

    @classmethod
    def from_bytes(cls, data: bytes, *, media_type: str | None = None, detail: str | None = None) -> Image:
        return cls(url=_data_url(bytes(data), media_type, "these bytes"), detail=detail)

    @classmethod
    def from_pil(cls, image: Any, *, format: str = "PNG", detail: str | None = None) -> Image:
        buffer = io.BytesIO()
        image.save(buffer, format=format)
        return cls.from_bytes(buffer.getvalue(), media_type=f"image/{format.lower()}", detail=detail)

    # --- what it is --------------------------------------------------------------------

    @property
    def is_inline(self) -> bool:
        return self.url[:5].lower() == "data:"

    @property
    def inline_bytes(self) -> int:
        """The size of an inline image's data (0 for a web URL)."""
        if not self.is_inline:
            return 0
        payload = self.url.partition(",")[2]
        return len(payload) * 3 // 4 - payload.count("=", len(payload) - 2)

    def content_part(self) -> dict[str, Any]:
        """The OpenAI content part that sends this image."""
        image_url: dict[str, Any] = {"url": self.url}
        if self.detail is not None:
            image_url["detail"] = self.detail
        return {"type": "image_url", "image_url": image_url}

    def __repr__(self) -> str:
        return f"Image({describe_image(self.url)})"

    __str__ = __repr__


def _from_source(source: Any) -> dict[str, Any]:
    if isinstance(source, Image):
        return source.model_dump(exclude_none=True)
    if isinstance(source, str) and source[:16].lower().startswith(("http://", "https://", "data:")):
        return {"url": source}
    if isinstance(source, (str, os.PathLike)):
        return {"url": Image.from_path(source).url}
    if isinstance(source, (bytes, bytearray, memoryview)):
        return {"url": Image.from_bytes(bytes(source)).url}
    if _is_pil(source):
        return {"url": Image.from_pil(source).url}
    raise TypeError(
        f"desic.Image takes a URL, a path, bytes or a PIL image, got {type(source).__name__}"
    )


def describe_image(url: str) -> str:
    """A short, stable description of an image URL (what snapshots and reprs show)."""
    if url[:5].lower() != "data:":
        return url
    head, _, payload = url.partition(",")
    digest = hashlib.sha256(payload.encode("ascii", "replace")).hexdigest()[:12]
    return f"{head.removeprefix('data:')}, {len(payload) * 3 // 4:,} bytes, sha256 {digest}"


class Turn(BaseModel):
    """One prior turn: ``role`` and ``content``, or the signature's ``inputs`` and ``output``."""

    model_config = ConfigDict(frozen=True, extra="forbid", json_schema_extra=_schema_mark(None))

    role: Literal["user", "assistant"] | None = None
    content: str | None = None
    inputs: dict[str, Any] | None = None
    output: Any = None

    @model_validator(mode="after")
    def _one_form(self) -> Turn:
        chat = self.role is not None and self.content is not None
        pair = self.inputs is not None and self.output is not None
        if chat == pair:
            raise ValueError(
                "a turn is either {'role': 'user' | 'assistant', 'content': '...'} or "
                "{'inputs': {...}, 'output': ...} of the signature"
            )
        return self

    @model_serializer(mode="wrap")
    def _plain(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class History(RootModel[list[Turn]]):
    """Prior turns of a conversation: ``desic.History([{"role": "user", "content": "hi"}, ...])``."""

    model_config = ConfigDict(frozen=True, json_schema_extra=_schema_mark("history"))

    def __init__(self, root: Any = None, /, **data: Any) -> None:
        if root is None and not data:
            root = []
        if root is not None:
            super().__init__(root)
        else:
            super().__init__(**data)

    @property
    def turns(self) -> list[Turn]:
        return self.root

    def __len__(self) -> int:
        return len(self.root)


def media_kind(schema: Any) -> str | None:
    """``"image"``, ``"images"`` (a list of them) or ``"history"`` for an input's JSON
    schema, else None. Optional forms (``Image | None``) count too."""
    if not isinstance(schema, dict):
        return None
    defs = schema.get("$defs") or {}

    def kind(node: Any) -> str | None:
        if not isinstance(node, dict):
            return None
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith("#/$defs/"):
            node = defs.get(ref.rsplit("/", 1)[-1], {})
        mark = node.get(MEDIA_KEY) if isinstance(node, dict) else None
        return mark if mark in ("image", "history") else None

    found = kind(schema)
    if found is not None:
        return found
    options = schema.get("anyOf")
    if isinstance(options, list):
        real = [o for o in options if not (isinstance(o, dict) and o.get("type") == "null")]
        if len(real) == 1:
            return media_kind({**real[0], "$defs": defs})
    if schema.get("type") == "array" and kind(schema.get("items")) == "image":
        return "images"
    return None
