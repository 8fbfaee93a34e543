"""One real local Ray cluster for every Ray test of the session (Ray starts slowly).

The cluster has the machine's 2 CPUs; workers find this checkout (and ``tests``) through
``PYTHONPATH`` in the cluster's ``runtime_env``, as a user ships code with ``working_dir``.
The workers of the shared executor take no CPU of the scheduler's, so a test may start an
executor of its own beside it. Tests needing Ray skip, saying why, only when Ray is not
installed.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = str(Path(__file__).resolve().parents[2])


@pytest.fixture(scope="session")
def ray_cluster() -> Iterator[Any]:
    if importlib.util.find_spec("ray") is None:
        pytest.skip("Ray is not installed: pip install -e '.[ray]' to run the Ray executor's tests")
    import ray

    path = os.pathsep.join(p for p in (ROOT, os.environ.get("PYTHONPATH", "")) if p)
    env = {"PYTHONPATH": path, "OPENAI_API_KEY": "sk-worker-environment"}
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": env})
    try:
        yield ray
    finally:
        ray.shutdown()


@pytest.fixture(scope="session")
def ray_executor(ray_cluster: Any) -> Iterator[Any]:
    """Two long-lived workers, shared by the tests (a killed one is replaced by the executor)."""
    import desic.executors

    with desic.executors.Ray(workers=2, resources={"num_cpus": 0}) as executor:
        yield executor
