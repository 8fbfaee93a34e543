"""The exception tree of desic.

Every error desic raises on purpose is a ``DesicError``; third-party errors (openai,
instructor, msgspec, jinja2) are translated at the boundary where they occur, so user
code needs to catch only these::

    DesicError
    ├── SignatureError          a @signature or @pipeline declaration is wrong
    ├── DataError               a trainset/devset row does not fit the pipeline (names row and field)
    ├── ArtifactError           an artifact is corrupt, of an unknown version, or drifted from the code
    │   └── TemplateError       a node's prompt template cannot compile or render (also a SignatureError)
    ├── ConfigError             unknown LM/storage spec, missing API key or extra (says how to fix it)
    ├── LMError                 a language-model call failed
    │   ├── RateLimited         the provider said 429 (carries retry_after when given)
    │   ├── Timeout             the call took longer than allowed
    │   └── OutputValidationError   the completion never validated (carries raw text and errors)
    ├── MetricError             the metric raised on an output (names metric, row, exception)
    ├── BudgetExceeded          a compile/eval budget ran out (names which one)
    └── StorageError            a run store or file cannot be read or written
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ArtifactError",
    "BudgetExceeded",
    "ConfigError",
    "DataError",
    "DesicError",
    "LMError",
    "MetricError",
    "OutputValidationError",
    "RateLimited",
    "SignatureError",
    "StorageError",
    "TemplateError",
    "Timeout",
]


class DesicError(Exception):
    """Base class of every error raised by desic."""


class SignatureError(DesicError):
    """A ``@signature`` or ``@pipeline`` declaration cannot be used as written."""


class DataError(DesicError):
    """A dataset row does not fit the pipeline's inputs.

    ``row`` is the 0-based row number and ``field`` the offending field, when known.
    """

    def __init__(self, message: str, *, row: int | None = None, field: str | None = None):
        super().__init__(message)
        self.row = row
        self.field = field


class ArtifactError(DesicError):
    """An artifact is corrupt, has an unsupported format version, or drifted from the code."""


class TemplateError(ArtifactError, SignatureError):
    """A node's prompt template cannot be compiled or rendered: a syntax error, an undefined
    variable, something the sandbox refuses, or a render limit (``desic.render``).

    Templates are part of the program, which may come from an artifact, so this is an
    ``ArtifactError``; it is also a ``SignatureError``, which template mistakes were before.
    """


class ConfigError(DesicError):
    """Configuration is missing or wrong; the message says how to fix it."""


class LMError(DesicError):
    """A language-model call failed.

    ``usage`` (a ``desic.lm.Usage``, or None) is what the failed call consumed before it
    failed: every request the server saw, so budgets and reports count them too.
    """

    usage: Any = None


class RateLimited(LMError):
    """The provider rejected the call for its rate limit (HTTP 429)."""

    def __init__(self, message: str, *, retry_after: float | None = None):
        super().__init__(message)
        self.retry_after = retry_after


class Timeout(LMError):
    """The call did not finish in the allowed time."""


class OutputValidationError(LMError):
    """The model's completion never validated against the output schema.

    ``raw`` is the last completion text, ``errors`` the validation errors.
    """

    def __init__(self, message: str, *, raw: str | None = None, errors: Any = None):
        super().__init__(message)
        self.raw = raw
        self.errors = errors


class MetricError(DesicError):
    """The metric raised while scoring an output; ``metric`` names it, ``row`` is the
    0-based row of the trainset (or valset) it was scoring, when known."""

    def __init__(self, message: str, *, metric: str = "", row: int | None = None):
        super().__init__(message)
        self.metric = metric
        self.row = row


class BudgetExceeded(DesicError):
    """A budget (calls, tokens, dollars, wall time) ran out; ``budget`` names which."""

    def __init__(self, message: str, *, budget: str):
        super().__init__(message)
        self.budget = budget


class StorageError(DesicError):
    """A store or file cannot be read or written (corrupt, locked, unwritable)."""
