import signal
from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from tests.support.postgres import Server

pytest_plugins = ["pytester"]


@pytest.fixture
def ctrl_c_raises() -> Iterator[None]:
    """Ctrl-C raises KeyboardInterrupt in this process, and child processes inherit the
    default disposition (so Python installs its handler there too), even when the suite
    runs as a background job: a shell without job control starts those with SIGINT
    ignored, and an ignored signal stays ignored across exec."""
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator["Server"]:
    """A real PostgreSQL server for the whole session (tests/support/postgres.py): started on
    first use, stopped at the end; skips only when psycopg is not installed."""
    from tests.support import postgres

    yield postgres.server()
    postgres.stop()


def pytest_sessionfinish(session: pytest.Session) -> None:
    """Stop the PostgreSQL server a test started through ``url_for("postgres", ...)``."""
    import sys

    module = sys.modules.get("tests.support.postgres")
    if module is not None:
        module.stop()
