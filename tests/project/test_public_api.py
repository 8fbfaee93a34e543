"""The public surface of ``desic`` is small, explicit and cheap to import."""

from __future__ import annotations

import json
import subprocess
import sys
import types

import pytest

import desic

EXPECTED_ALL = [
    "ArtifactError",
    "BM25Retriever",
    "BatchResult",
    "BestOfN",
    "Budget",
    "BudgetExceeded",
    "CompiledPipeline",
    "ConfigError",
    "DataError",
    "DesicError",
    "EmbeddingsRetriever",
    "EvaluationReport",
    "Example",
    "History",
    "Image",
    "LM",
    "LMError",
    "Majority",
    "MetricError",
    "Output",
    "OutputValidationError",
    "Partial",
    "Passage",
    "Pipeline",
    "Program",
    "RateLimited",
    "Refine",
    "Retriever",
    "Signature",
    "SignatureError",
    "StorageError",
    "Timeout",
    "Tool",
    "__version__",
    "acompile",
    "aevaluate",
    "compile",
    "context",
    "evaluate",
    "executors",
    "lm",
    "load",
    "load_dataset",
    "metrics",
    "pipeline",
    "reward",
    "signature",
    "storage",
    "testing",
    "tool",
]


def test_all_is_pinned() -> None:
    assert sorted(desic.__all__) == EXPECTED_ALL
    assert len(set(desic.__all__)) == len(desic.__all__)
    assert dir(desic) == EXPECTED_ALL


def test_every_public_name_resolves() -> None:
    for name in EXPECTED_ALL:
        assert getattr(desic, name) is not None, name
    assert isinstance(desic.__version__, str)
    assert isinstance(desic.metrics, types.ModuleType)
    assert isinstance(desic.testing, types.ModuleType)


def test_public_functions_are_functions_not_submodules() -> None:
    # Importing the submodule of the same name must not shadow the public function.
    import desic.compile
    import desic.evaluate
    import desic.lm
    import desic.pipeline
    import desic.signature

    for name in ("compile", "evaluate", "lm", "pipeline", "signature", "load", "context"):
        value = getattr(desic, name)
        assert callable(value) and not isinstance(value, types.ModuleType), name
    assert sys.modules["desic.lm"].lm is desic.lm


def test_error_tree() -> None:
    for name in (
        "SignatureError",
        "DataError",
        "ArtifactError",
        "ConfigError",
        "LMError",
        "BudgetExceeded",
        "StorageError",
    ):
        assert issubclass(getattr(desic, name), desic.DesicError), name
    for name in ("RateLimited", "Timeout", "OutputValidationError"):
        assert issubclass(getattr(desic, name), desic.LMError), name


def test_unknown_attribute_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_thing"):
        _ = desic.no_such_thing


_IMPORT_CHECK = """
import json, sys
import desic
heavy = ("openai", "instructor", "xllamacpp", "psycopg", "bm25s", "numpy", "ray")
before = sorted(m for m in heavy if m in sys.modules)
# Touching one lazy name imports the submodules behind it; none of them may shadow a
# public function of the same name.
desic.compile
desic.executors.resolve("local")  # the executor seam; Ray loads only when an executor runs
public = {n: callable(getattr(desic, n)) for n in ("signature", "pipeline", "evaluate", "lm", "load")}
# Using the core API (signatures, pipelines, fakes) must not pull the SDKs in either.
@desic.signature
def echo(text: str) -> str:
    '''Echo.'''
@desic.pipeline
def run(text: str) -> str:
    return echo(text=text)
with desic.context(lm=desic.testing.FakeLM(["hi"])):
    out = run(text="x")
after = sorted(m for m in heavy if m in sys.modules)
print(json.dumps({"before": before, "after": after, "out": out, "public": public}))
"""


def test_import_is_light_in_a_fresh_interpreter() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", _IMPORT_CHECK],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    assert result["before"] == []
    assert result["after"] == []
    assert result["out"] == "hi"
    assert result["public"] == dict.fromkeys(
        ("signature", "pipeline", "evaluate", "lm", "load"), True
    )
