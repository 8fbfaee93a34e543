"""Batches: many inputs through one signature or pipeline, outputs in order, one result each.

``sig.batch([...])`` / ``await sig.abatch([...])`` (and the same on pipelines and compiled
pipelines) run every item, at most ``concurrency`` at once, and return one ``BatchResult``
per item in input order: its output, or the exception that item raised. One item's
failure never stops the others nor raises; ``BatchResult.unwrap()`` re-raises it where the
caller wants that.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

__all__ = ["BatchResult", "gather_results", "items_of"]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class BatchResult(Generic[T]):
    """One item of a batch: ``output`` when it succeeded, else the ``error`` it raised."""

    index: int
    inputs: dict[str, Any]
    output: T | None = None
    error: BaseException | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    def unwrap(self) -> T:
        """The output; the item's exception is raised again when it failed."""
        if self.error is not None:
            raise self.error
        return self.output  # type: ignore[return-value]  # None only when T admits it


def items_of(inputs: Iterable[Mapping[str, Any]], what: str) -> list[dict[str, Any]]:
    """The batch's items as dicts; a ``TypeError`` naming the first item that is not a mapping."""
    if isinstance(inputs, (Mapping, str, bytes)):
        raise TypeError(
            f"{what}.batch() takes a list of input dicts, got {type(inputs).__name__}; "
            "wrap one item in a list: batch([{...}])"
        )
    items: list[dict[str, Any]] = []
    for i, item in enumerate(inputs):
        if not isinstance(item, Mapping):
            raise TypeError(
                f"{what}.batch(): item {i} is {type(item).__name__}, not a dict of inputs by name "
                f"(e.g. {{'ticket': '...'}})"
            )
        items.append(dict(item))
    return items


async def gather_results(
    items: list[dict[str, Any]],
    run_one: Callable[[dict[str, Any]], Awaitable[T]],
    concurrency: int,
) -> list[BatchResult[T]]:
    """Run ``run_one`` on every item, ``concurrency`` at a time; results in item order.

    An ``Exception`` becomes its item's ``error``; a cancellation or interrupt
    (``BaseException``) cancels the whole batch as it should.
    """
    gate = asyncio.Semaphore(concurrency)

    async def one(index: int, item: dict[str, Any]) -> BatchResult[T]:
        async with gate:
            try:
                output = await run_one(item)
            except Exception as exc:  # noqa: BLE001 - the item's result holds it
                return BatchResult(index, item, error=exc)
            return BatchResult(index, item, output=output)

    return list(await asyncio.gather(*(one(i, item) for i, item in enumerate(items))))
