"""Optimizers: one registry, one interface.

An optimizer is an object with ``name``, ``config()`` and
``async optimize(task: CompileTask) -> Program``. Register a third-party one with
``register("name", factory)``; ``resolve("name", **options)`` or an instance picks it.
Everything an optimizer runs goes through the ``CompileTask`` (``run``/``evaluate`` for the
pipeline, ``call`` for its own LM calls), which memoizes, budgets and records it.

Built in (one module each):

- ``labeled``: demos straight from the labelled rows;
- ``bootstrap``: demos from the pipeline's own traces that the metric accepts;
- ``knn``: per-input demos, the k pool examples (bootstrapped and labelled) nearest each input;
- ``random_search``: one bootstrap pool, random demo subsets, best on validation;
- ``beam``: LM rewrites of each node's instruction, top-k per round survive;
- ``genetic``: (instructions, demos) genomes, crossover, LM-rewrite and demo-swap mutation;
- ``mipro``: grounded instruction proposals x demo sets, searched TPE-style on minibatches;
- ``reflective``: GEPA-like edits from failures and metric feedback, Pareto-front parents.

The search optimizers return their start (the bootstrap program by default) unless a
candidate beats it with evidence (``compare``: a paired test on the same rows; see
``desic.optimize._select``); every score in the history has an ``interval``. Then
``compile`` compares what any of them (but ``labeled``) returns with the pipeline as
written on the same rows, each scored without the demos made from it
(``without_own_demos``), and keeps the better.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from ..errors import ConfigError
from ..record import MemoryRecorder, RunRecorder
from ._select import unseen_rows, without_own_demos
from ._stats import Comparison, compare, interval
from .history import Candidate, Scored
from .task import CompileTask

__all__ = [
    "Candidate",
    "Comparison",
    "CompileTask",
    "MemoryRecorder",
    "Optimizer",
    "RunRecorder",
    "Scored",
    "compare",
    "interval",
    "options_of",
    "register",
    "registry",
    "resolve",
    "unregister",
    "unseen_rows",
    "without_own_demos",
]


@runtime_checkable
class Optimizer(Protocol):
    name: str

    def config(self) -> dict[str, Any]: ...

    async def optimize(self, task: CompileTask) -> Any: ...


_registry: dict[str, Callable[..., Optimizer]] = {}


def register(name: str, factory: Callable[..., Optimizer]) -> None:
    """Make ``optimizer=name`` build ``factory(**options)``."""
    if not callable(factory):
        raise ConfigError(f"optimizer {name!r}: factory must be callable")
    _registry[name] = factory


def unregister(name: str) -> None:
    """Forget ``optimizer=name`` (a name never registered is ignored)."""
    _registry.pop(name, None)


def registry() -> dict[str, Callable[..., Optimizer]]:
    return dict(_registry)


def options_of(factory: Callable[..., Optimizer]) -> list[str] | None:
    """The keyword options ``factory`` takes, or None when it takes any (``**options``)."""
    import inspect

    target: Any = getattr(factory, "target", None)
    target = target() if callable(target) else factory
    try:
        params = inspect.signature(target).parameters
    except (TypeError, ValueError):
        return None
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return None
    return [name for name, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]


def resolve(optimizer: str | Optimizer, **options: Any) -> Optimizer:
    if not isinstance(optimizer, str):
        if options:
            raise ConfigError("pass optimizer options to the optimizer's constructor, not compile()")
        if not isinstance(optimizer, Optimizer):
            raise ConfigError(f"{optimizer!r} is not an optimizer (needs name, config(), optimize())")
        return optimizer
    factory = _registry.get(optimizer)
    if factory is None:
        raise ConfigError(
            f"unknown optimizer {optimizer!r}; available: {', '.join(sorted(_registry))}"
        )
    valid = options_of(factory)
    if valid is not None:
        unknown = [name for name in options if name not in valid]
        if unknown:
            import difflib

            hints = [f"{name!r} (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(name, valid, 1)) else repr(name) for name in unknown]
            raise ConfigError(
                f"optimizer {optimizer!r} has no option {', '.join(hints)}; its options: {', '.join(valid) or '(none)'}"
            )
    try:
        return factory(**options)
    except TypeError as exc:
        raise ConfigError(f"optimizer {optimizer!r}: {exc}") from exc


def _lazy(module: str, cls: str) -> Callable[..., Optimizer]:
    """A factory importing its optimizer on first use (keeps ``import desic`` light)."""

    def target() -> Any:
        import importlib

        return getattr(importlib.import_module(f".{module}", __name__), cls)

    def factory(**options: Any) -> Optimizer:
        return target()(**options)  # type: ignore[no-any-return]

    factory.__qualname__ = factory.__name__ = cls
    factory.target = target  # type: ignore[attr-defined]
    return factory


def _register_builtins() -> None:
    from .bootstrap import Bootstrap
    from .labeled import Labeled

    register("labeled", Labeled)
    register("bootstrap", Bootstrap)
    register("knn", _lazy("knn", "KNN"))
    register("random_search", _lazy("random_search", "RandomSearch"))
    register("beam", _lazy("beam", "Beam"))
    register("genetic", _lazy("genetic", "Genetic"))
    register("mipro", _lazy("mipro", "Mipro"))
    register("reflective", _lazy("reflective", "Reflective"))


_register_builtins()
