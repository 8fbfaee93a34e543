"""Route support tickets to teams, and let the examples teach the house rules.

The instruction alone says "route to the team that should handle it"; the labelled data
carries conventions it does not state (refunds for damaged items go to shipping, login
problems go to account even when an error is quoted, coupons go to billing). Compiling
puts worked examples in front of the model, and the dev accuracy shows what they buy.

Runs on the embedded local model by default (no API key):

    python examples/triage.py

or on any OpenAI-compatible server: DESIC_LM=openai:gpt-4o-mini python examples/triage.py

Any optimizer: ``--optimizer random_search|beam|genetic|mipro|reflective``; ``--small``
sizes it for the slow local model; ``--max-calls N`` is a budget.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel

import desic

DATA = Path(__file__).parent / "data"


class Route(BaseModel):
    team: Literal["billing", "technical", "shipping", "account"]


@desic.signature
def route(ticket: str) -> Route:
    """Route a customer support ticket to the team that should handle it."""


@desic.pipeline
def triage(ticket: str) -> Route:
    return route(ticket=ticket)


def main() -> None:
    from _common import LOCAL_PRESETS, OPTIMIZERS

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--optimizer", default="bootstrap", choices=OPTIMIZERS)
    parser.add_argument("--small", action="store_true", help="optimizer settings sized for the local model")
    parser.add_argument("--max-calls", type=int, default=None, help="stop the compile after this many LM calls")
    parser.add_argument("--out", default="triage.desic.json", help="where to save the artifact")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    options = LOCAL_PRESETS[args.optimizer] if args.small else {}

    trainset = desic.load_dataset(DATA / "triage_train.jsonl")
    devset = desic.load_dataset(DATA / "triage_dev.jsonl")
    metric = desic.metrics.exact_match

    start = time.perf_counter()
    before = desic.evaluate(triage, devset, metric, concurrency=args.concurrency)
    print(f"dev accuracy before compile: {before.score:.2f}  ({before})")

    compiled = desic.compile(
        triage,
        trainset,
        metric=metric,
        optimizer=args.optimizer,
        concurrency=args.concurrency,
        max_calls=args.max_calls,
        **options,
    )
    after = compiled.evaluate(devset, metric, concurrency=args.concurrency)
    print(f"dev accuracy after compile:  {after.score:.2f}  ({after})")
    stop = f", stopped by {compiled.stopped_by}" if compiled.stopped_by else ""
    print(f"compile: {compiled.usage.calls} LM calls, {len(compiled.history)} candidates{stop}")
    print(compiled.inspect())

    path = compiled.save(args.out)
    print(f"saved {path}")
    prod = desic.load(path)  # runs from the artifact alone
    ticket = "The discount code SPRING20 says it is invalid at checkout."
    print(f"loaded artifact answers {ticket!r} -> {prod(ticket=ticket).team}")
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
