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


def _under_pytest() -> bool:
    return "pytest" in sys.modules and "PYTEST_CURRENT_TEST" in os.environ


def check_allowed(lm_name: str) -> None:
    if not _under_pytest() or _allowed.get():
        return
    if os.environ.get("DESIC_ALLOW_MODEL_REQUESTS", "").lower() in ("1", "true", "yes"):
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
