"""Where desic keeps compile runs and compiled programs: stores chosen by URL.

Store URLs (everything after ``scheme://`` is the location; a relative path is relative to
the working directory, ``scheme:///abs/path`` is absolute)::

    sqlite://.desic/desic.db     one SQLite file (WAL); the default; best for several processes
    tinydb://.desic/desic.json   one JSON document (tinydb); human-readable, for small stores
    msgspec://.desic/store       a folder: runs/<id>/{run.json, candidates.jsonl, ...},
                                 artifacts/<name>/v<n>.json (``file://`` is the same backend)
    memory://                    a fresh in-process store; ``memory://name`` is shared by name
                                 within the process (tests, notebooks)
    postgresql://user@host:5432/db   a PostgreSQL database shared by several machines and
                                 people (``pip install 'desic[postgres]'``; ``postgres://`` too);
                                 the password from the URL or PGPASSWORD / ~/.pgpass

The default store is ``$DESIC_STORAGE``, else ``sqlite://.desic/desic.db``. ``compile`` records
into a store only when one is given (``storage=``, ``desic.context(storage=...)`` or
``DESIC_STORAGE``), so a plain ``compile`` writes nothing to disk.

Artifacts are addressed by a URL fragment, ``<store-url>#<name>[@<version>]``, where the
version is a number, ``latest`` (the default) or a tag::

    compiled.save("sqlite://.desic/desic.db#triage")        # -> triage@1, triage@2, ...
    compiled.save("sqlite://.desic/desic.db#triage@prod")   # new version, tagged prod
    desic.load("sqlite://.desic/desic.db#triage@latest", pipeline=triage)
    desic.load("sqlite://.desic/desic.db#triage@3")
    desic.load("sqlite://.desic/desic.db#triage@prod")

Loading never creates a store: a missing store file or folder is an ``ArtifactError``. Every
load checks the sha256 recorded at save time, refuses a newer artifact format, upgrades an
older one through ``desic.ir.MIGRATIONS``, and checks node fingerprints against your code.

Runs::

    compiled = desic.compile(triage, train, metric=m, storage="sqlite://.desic/desic.db")
    compiled.program.meta.run_id                 # e.g. "20250131-142501-3fa2c1"
    desic.compile(triage, train, metric=m, storage=..., resume="20250131-142501-3fa2c1")

    store = desic.storage.open("sqlite://.desic/desic.db")
    store.list_runs(); store.history(run_id); store.get_run(run_id).status

A third-party backend implements the ``Storage`` protocol and registers a scheme:
``desic.storage.register("redis", lambda location: RedisStorage(location))``; the factory
receives the location (the text between ``redis://`` and any ``#``). A class missing a
protocol method is refused at registration.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

from ..errors import ArtifactError, ConfigError, StorageError
from ._artifacts import (
    ArtifactRef,
    load_program,
    load_url,
    parse_ref,
    resolve_artifact,
    save_program,
    save_url,
)
from ._backend import BaseStorage
from ._base import (
    REQUIRED_METHODS,
    STALE_SECONDS,
    ArtifactInfo,
    RunInfo,
    RunStatus,
    Storage,
    check_name,
    is_stale,
    new_run_id,
    owner_gone,
)
from ._fs import atomic_write
from ._recorder import StorageRecorder, redact

__all__ = [
    "DEFAULT_URL",
    "STALE_SECONDS",
    "ArtifactError",
    "ArtifactInfo",
    "ArtifactRef",
    "BaseStorage",
    "ConfigError",
    "RunInfo",
    "RunStatus",
    "Storage",
    "StorageError",
    "StorageRecorder",
    "atomic_write",
    "check_name",
    "configured_url",
    "default_url",
    "is_stale",
    "is_url",
    "load_program",
    "load_url",
    "new_run_id",
    "open",
    "owner_gone",
    "parse_ref",
    "redact",
    "register",
    "resolve",
    "resolve_artifact",
    "save_program",
    "save_url",
    "schemes",
    "split_url",
]

DEFAULT_URL = "sqlite://.desic/desic.db"

StorageFactory = Callable[[str], Storage]

_URL = re.compile(r"([a-z][a-z0-9+.-]*)://(.*)", re.DOTALL)


def _missing_methods(obj: Any) -> list[str]:
    """Protocol methods ``obj`` (a class or an instance) lacks or only inherits as stubs."""
    missing = []
    for name in REQUIRED_METHODS:
        member = getattr(obj, name, None)
        if (
            not callable(member)
            or getattr(member, "__isabstractmethod__", False)
            or getattr(member, "__func__", member) is getattr(Storage, name, None)
        ):
            missing.append(name)
    return missing


def _builtin(module: str, cls: str) -> StorageFactory:
    def factory(location: str) -> Storage:
        import importlib

        backend = getattr(importlib.import_module(f"{__name__}.{module}"), cls)
        return backend(location)  # type: ignore[no-any-return]

    factory.__name__ = f"open_{cls}"
    return factory


_registry: dict[str, StorageFactory] = {
    "sqlite": _builtin("_sqlite", "SQLiteStorage"),
    "tinydb": _builtin("_tinydb", "TinyDBStorage"),
    "msgspec": _builtin("_files", "FileStorage"),
    "file": _builtin("_files", "FileStorage"),
    "memory": _builtin("_memory", "MemoryStorage"),
    # psycopg is imported only when such a URL is opened
    "postgresql": _builtin("_postgres", "open_postgres"),
    "postgres": _builtin("_postgres", "open_postgres_alias"),
}


def register(scheme: str, factory: StorageFactory) -> None:
    """Make ``open("<scheme>://<location>")`` return ``factory(location)``.

    ``factory`` is usually the backend class. A class that does not define every method of
    the ``Storage`` protocol is refused here, not at the first write of a long run.
    """
    if not isinstance(scheme, str) or not re.fullmatch(r"[a-z][a-z0-9+.-]*", scheme):
        raise ConfigError(
            f"invalid storage scheme {scheme!r}: use lowercase letters, digits, '+', '.', '-'"
        )
    if not callable(factory):
        raise ConfigError(
            f"storage scheme {scheme!r}: the factory must be callable (a class or a function)"
        )
    if isinstance(factory, type):
        missing = _missing_methods(factory)
        if missing:
            raise ConfigError(
                f"storage backend {factory.__name__} for {scheme!r}:// does not implement "
                f"{', '.join(missing)} (see desic.storage.Storage for the protocol)"
            )
    _registry[scheme] = factory


def schemes() -> list[str]:
    return sorted(_registry)


def is_url(value: object) -> bool:
    """Whether ``value`` is a store URL (``scheme://...``) rather than a file path."""
    return isinstance(value, str) and _URL.fullmatch(value) is not None


def split_url(url: str) -> tuple[str, str, str | None]:
    """``scheme://location#fragment`` -> ``(scheme, location, fragment or None)``."""
    match = _URL.fullmatch(url) if isinstance(url, str) else None
    if match is None:
        raise ConfigError(
            f"invalid storage URL {url!r}: expected scheme://location, e.g. {DEFAULT_URL} "
            f"(schemes: {', '.join(schemes())})"
        )
    scheme, rest = match.groups()
    location, sep, fragment = rest.partition("#")
    return scheme, location, (fragment if sep else None)


def configured_url() -> str | None:
    """``$DESIC_STORAGE`` when set (the one place desic reads it), else None."""
    return os.environ.get("DESIC_STORAGE") or None


def default_url() -> str:
    """``$DESIC_STORAGE`` when set, else ``sqlite://.desic/desic.db`` (under the working dir)."""
    return configured_url() or DEFAULT_URL


def open(url: str | None = None) -> Storage:
    """Open the store at ``url`` (default: ``default_url()``); a ``#fragment`` is ignored.

    Raises ``ConfigError`` for an unknown scheme, a malformed URL or a path that cannot be
    created or written, and ``StorageError`` for a store that exists but is corrupt.
    """
    url = default_url() if url is None else url
    scheme, location, _ = split_url(url)
    factory = _registry.get(scheme)
    if factory is None:
        raise ConfigError(
            f"unknown storage scheme {scheme!r} in {url!r}; known: {', '.join(schemes())}. "
            "Fix the URL (e.g. sqlite://.desic/desic.db) or register a backend with "
            "desic.storage.register(scheme, factory)"
        )
    store = factory(location)
    missing = _missing_methods(store)
    if missing:
        raise ConfigError(
            f"storage backend for {scheme}:// does not implement {', '.join(missing)}"
        )
    return store


def resolve(storage: Storage | str | None) -> Storage | None:
    """A store from an object or a URL; ``None`` (nothing configured) gives ``None``.

    The caller decides the default: ``desic.compile`` passes ``storage=``, else
    ``desic.context(storage=...)``, else ``$DESIC_STORAGE``.
    """
    if storage is None:
        return None
    if isinstance(storage, str):
        return open(storage)
    missing = _missing_methods(storage)
    if missing:
        raise ConfigError(f"{storage!r} is not a desic storage (missing {', '.join(missing)})")
    return storage
