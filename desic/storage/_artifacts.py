"""Named, versioned artifacts on top of any ``Storage``: references, saving, checked loading.

A reference is ``name`` or ``name@<selector>``, the selector being a version number, the
word ``latest`` (the default), or a tag such as ``prod``. Versions are assigned by the store
on save (1, 2, 3, ... per name) and never reused; tags move. Every load checks the stored
bytes against the sha256 recorded at save time and decodes them with the typed, migrating
decoder of ``desic.ir``; nothing is executed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

from ..errors import ArtifactError, ConfigError
from ._base import ArtifactInfo, Storage, check_name, now

if TYPE_CHECKING:
    from .. import ir

__all__ = [
    "ArtifactRef",
    "artifact_info",
    "check_tag",
    "load_program",
    "load_url",
    "parse_ref",
    "resolve_artifact",
    "save_program",
    "save_url",
]

LATEST = "latest"
_FILE_SCHEMES = ("sqlite", "tinydb", "msgspec", "file")


class ArtifactRef(NamedTuple):
    """A parsed ``name@selector``: ``version`` for ``@3``, ``tag`` for ``@prod``, neither for latest."""

    name: str
    version: int | None = None
    tag: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}@{self.version}"
        return f"{self.name}@{self.tag or LATEST}"


def check_tag(tag: str) -> str:
    check_name(tag, "artifact tag")
    if tag == LATEST or tag.isdigit():
        raise ConfigError(
            f"invalid artifact tag {tag!r}: 'latest' and numbers are reserved for versions"
        )
    return tag


def parse_ref(ref: str) -> ArtifactRef:
    """``"triage"``, ``"triage@3"``, ``"triage@latest"``, ``"triage@prod"`` -> ``ArtifactRef``."""
    if not isinstance(ref, str) or not ref:
        raise ConfigError(
            f"invalid artifact reference {ref!r}: expected name[@version|@latest|@tag], e.g. triage@3"
        )
    name, sep, selector = ref.partition("@")
    check_name(name, "artifact name")
    if not sep or selector == LATEST:
        return ArtifactRef(name)
    if selector.isdigit():
        version = int(selector)
        if version < 1:
            raise ConfigError(f"invalid artifact version in {ref!r}: versions start at 1")
        return ArtifactRef(name, version=version)
    return ArtifactRef(name, tag=check_tag(selector))


def artifact_info(
    name: str, version: int, data: bytes, meta: Mapping[str, Any] | None
) -> ArtifactInfo:
    """The record a backend keeps for a new version (hash and size computed here, once)."""
    return ArtifactInfo(
        name=name,
        version=version,
        sha256=hashlib.sha256(data).hexdigest(),
        created_at=now(),
        size=len(data),
        meta=dict(meta or {}),
    )


def resolve_artifact(store: Storage, ref: str | ArtifactRef) -> ArtifactInfo:
    """The ``ArtifactInfo`` a reference points at, or ``ArtifactError`` listing what exists."""
    parsed = parse_ref(ref) if isinstance(ref, str) else ref
    versions = store.list_artifacts(parsed.name)
    if not versions:
        names = sorted({a.name for a in store.list_artifacts()})
        known = (
            f"; artifacts in this store: {', '.join(names)}"
            if names
            else "; the store has no artifacts"
        )
        raise ArtifactError(f"no artifact named {parsed.name!r} in {store.url}{known}")
    if parsed.version is not None:
        for info in versions:
            if info.version == parsed.version:
                return info
        raise ArtifactError(
            f"{store.url}#{parsed} does not exist; versions of {parsed.name!r}: "
            f"{', '.join(str(a.version) for a in versions)}"
        )
    if parsed.tag is not None:
        for info in versions:
            if parsed.tag in info.tags:
                return info
        tags = sorted({t for a in versions for t in a.tags})
        raise ArtifactError(
            f"{store.url}#{parsed}: no version of {parsed.name!r} is tagged {parsed.tag!r}; "
            f"tags: {', '.join(tags) or 'none'}"
        )
    return max(versions, key=lambda a: a.version)


def _summary(program: ir.Program) -> dict[str, Any]:
    m = program.meta
    out: dict[str, Any] = {"format_version": program.format_version, "pipeline": program.pipeline}
    for key in (
        "desic_version",
        "optimizer",
        "score",
        "score_split",
        "run_id",
        "trainset_fingerprint",
    ):
        value = getattr(m, key)
        if value not in (None, ""):
            out[key] = value
    if m.lm.get("model"):
        out["lm"] = m.lm["model"]
    return out


def save_program(
    store: Storage, name: str, program: ir.Program, *, tags: tuple[str, ...] | list[str] = ()
) -> ArtifactInfo:
    """Store ``program`` as the next version of ``name`` and move ``tags`` onto it."""
    from .. import ir

    check_name(name, "artifact name")
    for tag in tags:
        check_tag(tag)
    info = store.put_artifact(name, ir.encode_program(program), meta=_summary(program))
    for tag in tags:
        store.tag_artifact(name, info.version, tag)
    if tags:
        info = resolve_artifact(store, ArtifactRef(name, version=info.version))
    return info


def load_bytes(store: Storage, ref: str | ArtifactRef) -> tuple[bytes, ArtifactInfo]:
    """The verified bytes of the version ``ref`` points at."""
    info = resolve_artifact(store, ref)
    data = store.get_artifact(info.name, info.version)
    if hashlib.sha256(data).hexdigest() != info.sha256:
        raise ArtifactError(
            f"{store.url}#{info.ref} is corrupt: its bytes do not match the sha256 recorded when "
            f"it was saved ({info.sha256[:16]}...); save the program again"
        )
    return data, info


def load_program(store: Storage, ref: str | ArtifactRef) -> ir.Program:
    from .. import ir

    data, info = load_bytes(store, ref)
    return ir.decode_program(data, source=f"{store.url}#{info.ref}")


def _split(url: str, *, action: str) -> tuple[str, ArtifactRef]:
    from . import split_url

    scheme, location, fragment = split_url(url)
    if not fragment:
        base = _shown(f"{scheme}://{location}")
        raise ConfigError(
            f"{base!r} names a store but no artifact; {action} "
            f"'{base}#<name>[@version|@latest|@tag]', e.g. '{base}#triage@latest'"
        )
    return f"{scheme}://{location}", parse_ref(fragment)


def save_url(program: ir.Program, url: str) -> ArtifactInfo:
    """``compiled.save("sqlite://x.db#triage")``: a new version; ``#triage@prod`` also tags it."""
    from . import open as open_store

    store_url, ref = _split(url, action="save to")
    if ref.version is not None:
        base = _shown(store_url)
        raise ConfigError(
            f"cannot save to {f'{base}#{ref}'!r}: versions are assigned by the store; save to "
            f"'{base}#{ref.name}' (or '#{ref.name}@<tag>' to tag the new version)"
        )
    store = open_store(store_url)
    try:
        return save_program(store, ref.name, program, tags=(ref.tag,) if ref.tag else ())
    finally:
        store.close()


def load_url(url: str) -> tuple[ir.Program, str]:
    """``desic.load("sqlite://x.db#triage@prod")``: the program and a readable source name."""
    from .. import ir
    from . import open as open_store

    store_url, ref = _split(url, action="load from")
    scheme, _, location = store_url.partition("://")
    if scheme in _FILE_SCHEMES and not Path(location).expanduser().exists():
        # opening would create an empty store; loading must not write anything
        raise ArtifactError(f"no store at {store_url} ({Path(location).expanduser().absolute()} does not exist)")
    store = open_store(store_url)
    try:
        data, info = load_bytes(store, ref)
    finally:
        store.close()
    source = f"{_shown(store_url)}#{info.ref}"
    return ir.decode_program(data, source=source), source


def _shown(store_url: str) -> str:
    """``store_url`` as it may be shown: a ``postgresql://`` URL without its password."""
    from .._postgres import is_postgres_url, public_url

    return public_url(store_url) if is_postgres_url(store_url) else store_url
