"""The ``url`` fixture: every storage test that takes it runs once per backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.stores import BACKENDS, url_for


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return url_for(request.param, tmp_path)
