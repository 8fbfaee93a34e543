"""What the PostgreSQL stores share: connecting (psycopg 3, imported only here and only when a
``postgresql://`` URL is used), naming a URL without its password, clear connection errors,
and versioned schema migrations.

Credentials come from the URL (``postgresql://user:password@host:port/db``) or from libpq's
environment (``PGPASSWORD``, ``PGUSER``, ``PGHOST``, ``~/.pgpass``, ``PGSERVICE``); desic never
writes them anywhere: the store's ``url`` (shown in listings, errors and logs) is the URL
without its password, and the password is registered with the one redaction of secrets.

Both the run store (``desic.storage``) and the LM answer cache (``desic.lm``) keep their
tables in the same database, prefixed ``desic_``. ``desic_schema`` holds one version per
component; ``migrate`` takes a component from the version it finds to the newest one in one
transaction, under an advisory lock (several machines opening one new database at once
create the tables once), and refuses a database written by a newer desic.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ._redact import add_secret, redact_text
from .errors import ConfigError, StorageError

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "SCHEMES",
    "connect",
    "is_postgres_url",
    "migrate",
    "public_url",
    "storage_error",
]

SCHEMES = ("postgresql", "postgres")
CONNECT_TIMEOUT = 10  # seconds; libpq waits forever by default for an unreachable host
INSTALL = "pip install 'desic[postgres]'"
#: key of the advisory lock that serializes migrations (any constant unique to desic)
MIGRATION_LOCK = 0x64657369  # "desi"


def is_postgres_url(value: object) -> bool:
    return isinstance(value, str) and value.split("://", 1)[0] in SCHEMES and "://" in value


def public_url(url: str) -> str:
    """``url`` without its password (in the user part or a ``password=`` parameter), to show."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, _, hostport = netloc.rpartition("@")
        user = userinfo.partition(":")[0]
        netloc = f"{user}@{hostport}" if user else hostport
    query = urllib.parse.urlencode(
        [(k, v) for k, v in urllib.parse.parse_qsl(parts.query, keep_blank_values=True) if k != "password"]
    )
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, query, ""))


def _password(url: str) -> str | None:
    parts = urllib.parse.urlsplit(url)
    if parts.password:
        return urllib.parse.unquote(parts.password)
    for key, value in urllib.parse.parse_qsl(parts.query):
        if key == "password":
            return value
    return None


def _psycopg(url: str) -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise ConfigError(
            f"{public_url(url)} needs psycopg 3, which is not installed: {INSTALL} "
            "(or pip install 'psycopg[binary]')"
        ) from exc
    return psycopg


def _fix(message: str, params: dict[str, Any]) -> str:
    """How to fix a failed connection, from libpq's message and the URL's parameters."""
    host = str(params.get("host") or "localhost")
    port = str(params.get("port") or 5432)
    where = f"{host}:{port}"
    db = str(params.get("dbname") or "DBNAME")
    text = message.lower()
    if "password authentication failed" in text or "no password supplied" in text:
        return (
            "check the user and password: give them in the URL (the password after the user name "
            "and a colon, percent-encoded) or in the environment (PGUSER, PGPASSWORD or ~/.pgpass)"
        )
    if "does not exist" in text and "database" in text:
        return f"create the database first (createdb -h {host} -p {port} {db}) or fix its name in the URL"
    if "role" in text and "does not exist" in text:
        return "use an existing user in the URL (postgresql://USER@host/db) or create that role"
    if "refused" in text or "timeout" in text or "timed out" in text or "could not connect" in text or "no such file" in text:
        return f"start the PostgreSQL server at {where}, or fix the host and port in the URL"
    if "could not translate host name" in text or "name or service not known" in text:
        return f"fix the host name in the URL ({host} is not known)"
    return "check the URL, that the server is running and that the user may connect"


def connect(url: str, *, what: str) -> psycopg.Connection[Any]:
    """An autocommit connection to ``url`` (``postgresql://...``), or a ``ConfigError`` that
    names the URL without its password and says how to fix it. ``what`` names the user."""
    shown = public_url(url)
    add_secret(_password(url))
    pg = _psycopg(url)
    try:
        params = pg.conninfo.conninfo_to_dict(url)
    except pg.Error as exc:
        raise ConfigError(
            f"invalid PostgreSQL URL for {what} ({shown}): {redact_text(str(exc))}; write "
            "postgresql://user@host:port/dbname"
        ) from None
    options: dict[str, Any] = {"autocommit": True}
    if "connect_timeout" not in params:
        options["connect_timeout"] = CONNECT_TIMEOUT
    if "application_name" not in params:
        options["application_name"] = "desic"
    try:
        conn: psycopg.Connection[Any] = pg.connect(url, **options)
    except pg.Error as exc:
        message = redact_text(str(exc).strip())
        raise ConfigError(
            f"cannot connect to {shown} for {what}: {message}\nfix: {_fix(message, params)}"
        ) from None
    return conn


def storage_error(shown: str, exc: BaseException) -> StorageError:
    """A psycopg error met while using a store, as a ``StorageError`` naming it."""
    message = redact_text(str(exc).strip())
    if isinstance(exc, _psycopg(shown).OperationalError):
        return StorageError(
            f"{shown}: the connection to PostgreSQL failed ({message}); check that the server is "
            "up, then try again (desic reconnects on the next call)"
        )
    return StorageError(f"{shown}: {message}")


def _version(conn: psycopg.Connection[Any], component: str) -> int:
    row = conn.execute("SELECT to_regclass('desic_schema') IS NOT NULL").fetchone()
    if not row or not row[0]:
        return 0
    row = conn.execute("SELECT version FROM desic_schema WHERE component = %s", (component,)).fetchone()
    return int(row[0]) if row else 0


def _newer(shown: str, component: str, found: int, known: int) -> StorageError:
    return StorageError(
        f"{shown} holds the {component} in schema version {found}, newer than this desic "
        f"understands ({known}); upgrade desic on this machine (pip install -U 'desic[postgres]') "
        "to share it with the machines that wrote it"
    )


def migrate(
    conn: psycopg.Connection[Any], component: str, migrations: Sequence[str], shown: str
) -> None:
    """Bring ``component``'s tables to ``len(migrations)``: ``migrations[i]`` takes them from
    version ``i`` to ``i + 1``. All steps run in one transaction under an advisory lock; a
    newer version than this desic knows is refused with ``StorageError``."""
    target = len(migrations)
    found = _version(conn, component)
    if found == target:
        return  # the common case: one read, no lock, no write
    if found > target:
        raise _newer(shown, component, found, target)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        conn.execute(
            "CREATE TABLE IF NOT EXISTS desic_schema (component TEXT PRIMARY KEY, version INTEGER NOT NULL)"
        )
        found = _version(conn, component)  # again, under the lock: another machine may have won
        if found > target:
            raise _newer(shown, component, found, target)
        for step in range(found, target):
            conn.execute(migrations[step].encode())
            conn.execute(
                "INSERT INTO desic_schema (component, version) VALUES (%s, %s) "
                "ON CONFLICT (component) DO UPDATE SET version = EXCLUDED.version",
                (component, step + 1),
            )
