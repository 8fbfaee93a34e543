"""The desic pytest plugin (registered through the ``pytest11`` entry point).

- tests marked ``@pytest.mark.live`` may call real providers (others are refused);
- ``prompt_snapshot`` renders the messages each node sends and compares them with a
  syrupy snapshot (``pytest --snapshot-update`` refreshes it).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "live: the test may call a real LM (the local model or a configured provider)"
    )


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    if item.get_closest_marker("live") is None:
        yield
        return
    from ..lm._guard import allow_model_requests

    with allow_model_requests():
        yield


@pytest.fixture
def desic_live() -> Iterator[None]:
    """Allow real LM calls inside the requesting test (same effect as the ``live`` marker)."""
    from ..lm._guard import allow_model_requests

    with allow_model_requests():
        yield


