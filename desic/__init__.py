"""desic: program LLM pipelines instead of hand-tuning prompts.

Declare tasks as typed functions (``@desic.signature``), compose them in plain Python
(``@desic.pipeline``), then ``desic.compile(pipeline, trainset, metric=...)`` and ship the
artifact with ``compiled.save(...)`` / ``desic.load(...)``.

Importing desic is cheap: the LM SDKs (openai, instructor, xllamacpp) load on first use.
"""

from __future__ import annotations

import sys as _sys
import types as _types
from typing import TYPE_CHECKING, Any

from . import _hooks
from ._version import __version__
from .errors import (
    ArtifactError,
    BudgetExceeded,
    ConfigError,
    DataError,
    DesicError,
    LMError,
    MetricError,
    OutputValidationError,
    RateLimited,
    SignatureError,
    StorageError,
    Timeout,
)

if TYPE_CHECKING:
    from . import executors as executors
    from . import metrics as metrics
    from . import storage as storage
    from . import testing as testing
    from ._batch import BatchResult as BatchResult
    from ._compiled import CompiledPipeline as CompiledPipeline
    from ._compiled import load as load
    from .budget import Budget as Budget
    from .compile import acompile as acompile
    from .compile import compile as compile
    from .data import Example as Example
    from .data import load_dataset as load_dataset
    from .evaluate import EvaluationReport as EvaluationReport
    from .evaluate import aevaluate as aevaluate
    from .evaluate import evaluate as evaluate
    from .ir import Program as Program
    from .lm import LM as LM
    from .lm import lm as lm
    from .media import History as History
    from .media import Image as Image
    from .pipeline import Pipeline as Pipeline
    from .pipeline import pipeline as pipeline
    from .retrieve import BM25Retriever as BM25Retriever
    from .retrieve import EmbeddingsRetriever as EmbeddingsRetriever
    from .retrieve import Passage as Passage
    from .retrieve import Retriever as Retriever
    from .runtime import Partial as Partial
    from .runtime import context as context
    from .sampling import BestOfN as BestOfN
    from .sampling import Majority as Majority
    from .sampling import Refine as Refine
    from .sampling import reward as reward
    from .signature import Output as Output
    from .signature import Signature as Signature
    from .signature import signature as signature
    from .tools import Tool as Tool
    from .tools import tool as tool

__all__ = [
    "LM",
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

_LAZY = {
    "CompiledPipeline": ("_compiled", "CompiledPipeline"),  # light: loading imports no optimizer
    "compile": ("compile", "compile"),
    "acompile": ("compile", "acompile"),
    "BatchResult": ("_batch", "BatchResult"),
    "Output": ("signature", "Output"),
    "load": ("_compiled", "load"),
    "Example": ("data", "Example"),
    "load_dataset": ("data", "load_dataset"),
    "EvaluationReport": ("evaluate", "EvaluationReport"),
    "evaluate": ("evaluate", "evaluate"),
    "aevaluate": ("evaluate", "aevaluate"),
    "Budget": ("budget", "Budget"),
    "Program": ("ir", "Program"),
    "LM": ("lm", "LM"),
    "lm": ("lm", "lm"),
    "Pipeline": ("pipeline", "Pipeline"),
    "BM25Retriever": ("retrieve", "BM25Retriever"),
    "EmbeddingsRetriever": ("retrieve", "EmbeddingsRetriever"),
    "Passage": ("retrieve", "Passage"),
    "Retriever": ("retrieve", "Retriever"),
    "Partial": ("runtime", "Partial"),
    "Image": ("media", "Image"),
    "History": ("media", "History"),
    "pipeline": ("pipeline", "pipeline"),
    "context": ("runtime", "context"),
    "Majority": ("sampling", "Majority"),
    "BestOfN": ("sampling", "BestOfN"),
    "Refine": ("sampling", "Refine"),
    "reward": ("sampling", "reward"),
    "Signature": ("signature", "Signature"),
    "signature": ("signature", "signature"),
    "executors": ("executors", None),
    "Tool": ("tools", "Tool"),
    "tool": ("tools", "tool"),
    "metrics": ("metrics", None),
    "storage": ("storage", None),
    "testing": ("testing", None),
}


def __getattr__(name: str) -> Any:
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'desic' has no attribute {name!r}") from None
    import importlib

    module = importlib.import_module(f".{module_name}", __name__)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


class _Package(_types.ModuleType):
    """Keeps ``desic.signature``, ``desic.lm``, ... the public functions.

    Importing a submodule (``desic.signature``, ``desic.lm``, ...) makes the import system
    bind it on the package under the same name, which would hide the lazily exported
    function of that name depending on import order. Such a binding is replaced by the
    function; the submodule itself stays in ``sys.modules``.
    """

    def __setattr__(self, name: str, value: Any) -> None:
        target = _LAZY.get(name)
        if (
            target is not None
            and target[1] is not None
            and isinstance(value, _types.ModuleType)
            and value.__name__ == f"{__name__}.{target[0]}"
        ):
            value = getattr(value, target[1])
        super().__setattr__(name, value)


_sys.modules[__name__].__class__ = _Package


def _environment_sinks() -> None:
    from .sinks import subscribe_from_env

    subscribe_from_env()


_hooks.first_event.append(_environment_sinks)
