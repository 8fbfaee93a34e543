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
    from ..lm.guard import allow_model_requests

    with allow_model_requests():
        yield


@pytest.fixture
def desic_live() -> Iterator[None]:
    """Allow real LM calls inside the requesting test (same effect as the ``live`` marker)."""
    from ..lm.guard import allow_model_requests

    with allow_model_requests():
        yield




@pytest.fixture
def prompt_snapshot(request: pytest.FixtureRequest) -> Any:
    """Compare the messages each node sends with a stored snapshot.

    ``prompt_snapshot(target, **inputs)`` where ``target`` is a compiled pipeline, a
    pipeline or a signature; returns the prompts. Refresh with ``pytest --snapshot-update``.
    Multi-node pipelines need an LM in ``desic.context`` (a ``FakeLM`` will do) for the
    prompts of nodes after the first.
    """
    try:
        snapshot = request.getfixturevalue("snapshot")
    except pytest.FixtureLookupError:
        raise RuntimeError("prompt_snapshot needs syrupy: pip install 'desic[dev]'") from None
    from .._compiled import CompiledPipeline
    from ..ir import Program
    from ..pipeline import as_pipeline
    from .snapshots import PromptSnapshotExtension, format_prompts

    pinned = snapshot.use_extension(PromptSnapshotExtension)

    def check(target: Any, /, **inputs: Any) -> dict[str, list[dict[str, Any]]]:
        compiled = (
            target
            if isinstance(target, CompiledPipeline)
            else CompiledPipeline(as_pipeline(target), Program())
        )
        prompts = compiled.prompts(**inputs)
        # syrupy's own assertion: its diff shows in every install mode (an ``assert`` here
        # is not rewritten by pytest when desic is installed in editable mode)
        pinned.assert_match(format_prompts(prompts))
        return prompts

    return check
