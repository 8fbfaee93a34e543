"""Real providers refuse to run under pytest unless a test opts in.

A test opts in with the ``live`` marker (the desic pytest plugin allows it), with
``desic.testing.allow_model_requests()``, or the whole run with
``DESIC_ALLOW_MODEL_REQUESTS=1``. Outside pytest nothing is refused.
"""

from __future__ import annotations

import contextvars
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

from ..errors import ConfigError

_allowed: contextvars.ContextVar[bool] = contextvars.ContextVar("desic_allow_requests", default=False)
# set in another process (a Ray worker) running rows for a test that refuses real requests
_refused: contextvars.ContextVar[bool] = contextvars.ContextVar("desic_refuse_requests", default=False)


def _under_pytest() -> bool:
    return "pytest" in sys.modules and "PYTEST_CURRENT_TEST" in os.environ


def requests_refused() -> bool:
    """Whether a real LM call would be refused here (for a worker process to do the same)."""
    if _refused.get():
        return True
    if not _under_pytest() or _allowed.get():
        return False
    return os.environ.get("DESIC_ALLOW_MODEL_REQUESTS", "").lower() not in ("1", "true", "yes")


@contextmanager
def refuse_model_requests() -> Iterator[None]:
    """Refuse real LM calls in this block, as a test would (a Ray worker running its rows)."""
    token = _refused.set(True)
    try:
        yield
    finally:
        _refused.reset(token)


def check_allowed(lm_name: str) -> None:
    if not requests_refused():
        return
    raise ConfigError(
        f"refusing to call the real LM {lm_name!r} inside a test: mark the test "
        "@pytest.mark.live, wrap the call in desic.testing.allow_model_requests(), "
        "or use desic.testing.FakeLM / FunctionLM"
    )


@contextmanager
def allow_model_requests(allow: bool = True) -> Iterator[None]:
    token = _allowed.set(allow)
    try:
        yield
    finally:
        _allowed.reset(token)
