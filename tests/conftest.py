import signal
from collections.abc import Iterator

import pytest

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
