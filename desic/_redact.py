"""One redaction for everything desic writes or shows: events, logs, reports, stores, the CLI.

Credentials should never reach any of them (LM descriptions are secret-free, base URLs are
written without their user and password), but error texts come from third parties, and a
provider may echo a key back ("Incorrect API key provided: ..."). So every exit scrubs:

- API-key-looking strings (``sk-...``), ``Bearer``/``Basic`` credentials, and the
  ``user:password@`` of URLs;
- the values of ``*_API_KEY``/``*_TOKEN``/``*_SECRET``/``*_PASSWORD`` environment variables;
- the secrets desic was handed (an ``api_key=``, a password in a base URL), which
  providers register with :func:`add_secret` when they are built.

:func:`redact` scrubs a string or any JSON-like value (returning it unchanged, the same
object, when there is nothing to replace); :class:`RedactingFilter` scrubs log records, and
:func:`guard_loggers` puts it on desic's loggers and on those of the SDKs it drives.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import traceback
from collections.abc import Iterable
from typing import Any

__all__ = [
    "REDACTED",
    "RedactingFilter",
    "add_secret",
    "get_logger",
    "guard_loggers",
    "redact",
    "redact_exception",
    "redact_text",
    "secrets",
]

REDACTED = "<redacted>"

_PATTERNS = re.compile(
    r"(?<![A-Za-z0-9])(?:sk-[A-Za-z0-9_\-]{8,}"
    r"|(?:Bearer|bearer)\s+[A-Za-z0-9._\-]{8,}"
    # base64 of user:password, told from a word ("basic information") by a digit, + / or =
    r"|(?:Basic|basic)\s+(?=[A-Za-z0-9+/]*[0-9+/=])[A-Za-z0-9+/]{8,}={0,2})"
)
# the user:password@ of a URL (a user alone is not a secret)
_USERINFO = re.compile(r"(?<=://)[^\s/@:\"'<>]*:[^\s/@\"'<>]*@")
_SECRET_ENV_SUFFIXES = ("_API_KEY", "_TOKEN", "_SECRET", "_PASSWORD")
MIN_ENV_SECRET = 8  # shorter env values ("1", "true") would redact ordinary text
MIN_SECRET = 6

_known: frozenset[str] = frozenset()
_known_lock = threading.Lock()


def add_secret(value: str | None) -> None:
    """Redact ``value`` from now on wherever desic writes (short values are ignored)."""
    global _known
    if not value or len(value) < MIN_SECRET or value in _known:
        return
    with _known_lock:
        _known = _known | {value}


def _env_values() -> Iterable[tuple[str | bytes, str | bytes]]:
    # os.environ's own dict when there is one (CPython): every event is scrubbed, and
    # going through the mapping's per-key decoding costs ten times more
    data = getattr(os.environ, "_data", None)
    return data.items() if isinstance(data, dict) else os.environ.items()


def secrets() -> list[str]:
    """The secret values known now: the environment's and those added, longest first."""
    found = set(_known)
    for name, value in _env_values():
        if len(value) >= MIN_ENV_SECRET:
            key = name.decode("utf-8", "replace") if isinstance(name, bytes) else name
            if key.upper().endswith(_SECRET_ENV_SUFFIXES):
                found.add(os.fsdecode(value) if isinstance(value, bytes) else value)
    return sorted(found, key=len, reverse=True)


def _as_text(values: Iterable[str | bytes]) -> list[str]:
    return [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in values]


def redact_text(text: str, extra: Iterable[str | bytes] | None = None) -> str:
    """``text`` with credentials and known secret values replaced by ``<redacted>``."""
    if len(text) < MIN_SECRET:  # too short to hold anything worth redacting
        return text
    known = _as_text(extra) if extra is not None else secrets()
    cleaned = text
    # the regular expressions only where their anchors occur (most texts have none)
    if "sk-" in cleaned or "earer" in cleaned or "asic" in cleaned:
        cleaned = _PATTERNS.sub(REDACTED, cleaned)
    if "://" in cleaned:
        cleaned = _USERINFO.sub(REDACTED + "@", cleaned)
    for secret in known:
        if secret in cleaned:
            cleaned = cleaned.replace(secret, REDACTED)
    return cleaned


def redact(value: Any, extra: Iterable[str | bytes] | None = None) -> Any:
    """``value`` with API-key-looking strings and known secret values replaced.

    Reaches every string of nested dicts, lists and tuples (keys too); other objects are
    left as they are. Returns ``value`` itself (no copy) when there is nothing to replace.
    ``extra`` replaces the secrets looked up by default (:func:`secrets`).
    """
    known = _as_text(extra) if extra is not None else secrets()
    return _walk(value, known)


def _walk(value: Any, known: list[str]) -> Any:
    if isinstance(value, str):
        return redact_text(value, known)
    if isinstance(value, dict):
        items = [(_walk(k, known), _walk(v, known)) for k, v in value.items()]
        if all(k is k0 and v is v0 for (k, v), (k0, v0) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, (list, tuple)):
        parts = [_walk(v, known) for v in value]
        if all(p is v for p, v in zip(parts, value, strict=True)):
            return value
        return parts if isinstance(value, list) else tuple(parts)
    return value


def redact_exception(exc: BaseException) -> BaseException:
    """Scrub the string arguments of ``exc`` and of the exceptions it was raised from, in
    place (what its message and a printed traceback show); returns ``exc``."""
    known = secrets()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        args = current.args
        cleaned = tuple(redact_text(a, known) if isinstance(a, str) else a for a in args)
        if cleaned != args:
            current.args = cleaned
            message = getattr(current, "message", None)
            if isinstance(message, str):
                try:
                    current.message = redact_text(message, known)  # type: ignore[attr-defined]
                except AttributeError:  # a read-only property
                    pass
        current = current.__cause__ or current.__context__
    return exc


class RedactingFilter(logging.Filter):
    """Scrubs a record's message, traceback and stack before any handler formats it."""

    def filter(self, record: logging.LogRecord) -> bool:
        known = secrets()
        try:
            message = record.getMessage()
        except (TypeError, ValueError, KeyError):  # a malformed record: the handler reports it
            return True
        cleaned = redact_text(message, known)
        if cleaned != message:
            record.msg, record.args = cleaned, ()
        if record.exc_info and record.exc_info[0] is not None and not record.exc_text:
            # what logging.Formatter.formatException would write, scrubbed; formatters
            # use exc_text as it is once set
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = redact_text(text, known)
        elif record.exc_text:
            record.exc_text = redact_text(record.exc_text, known)
        if record.stack_info:
            record.stack_info = redact_text(record.stack_info, known)
        return True


_FILTER = RedactingFilter()
#: desic's loggers and those of the SDKs and HTTP clients desic drives
LOGGERS = ("desic", "openai", "instructor", "httpx", "httpx2", "httpcore", "httpcore2")


def guard_loggers(prefixes: Iterable[str] = LOGGERS) -> None:
    """Put the redacting filter on every logger under ``prefixes`` that exists now.

    A logger's filters see only the records logged on it (not those its children pass up),
    so each existing logger gets it; call again after importing a library that makes more.
    """
    roots = tuple(prefixes)
    names = [
        name
        for name, logger in list(logging.Logger.manager.loggerDict.items())
        if isinstance(logger, logging.Logger) and name.split(".", 1)[0] in roots
    ]
    for name in {*roots, *names}:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)


def get_logger(name: str) -> logging.Logger:
    """``logging.getLogger(name)`` with the redacting filter on it (desic's own loggers)."""
    log = logging.getLogger(name)
    if _FILTER not in log.filters:
        log.addFilter(_FILTER)
    return log
