"""Pull the order reference out of a support ticket, in the house format.

The instruction says only "find the order number". The labelled rows carry the
convention it leaves out: references are written ``ORD-`` plus the five digits, whatever
the customer typed (``#85642``, ``order no. 85642``, ``ord-85642``), and a ticket without
one gets ``none``. Compiling shows the model worked examples, and the dev accuracy shows
what they buy.

Runs on the embedded local model by default (no API key)::

    python examples/orders.py

or on any OpenAI-compatible server: ``DESIC_LM=openai:gpt-4o-mini python examples/orders.py``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

from pydantic import BaseModel, Field

import desic

DATA = Path(__file__).parent / "data"


class OrderRef(BaseModel):
    order_id: str = Field(description="the order reference, or none")


@desic.signature
def order_ref(ticket: str) -> OrderRef:
    """Find the order number the customer mentions in the ticket."""


@desic.pipeline
def extract(ticket: str) -> OrderRef:
    return order_ref(ticket=ticket)


def main() -> None:
    parser = argparse.ArgumentParser(description="Compile the order-reference extractor.")
    parser.add_argument("--optimizer", default="bootstrap", help="labeled | bootstrap | ...")
    parser.add_argument("--out", default="orders.desic.json", help="where to save the artifact")
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()

    # Short answers: a small max_tokens keeps a confused zero-shot model from rambling.
    lm = desic.lm(os.environ.get("DESIC_LM", "local"), max_tokens=32)
    trainset = desic.load_dataset(DATA / "orders_train.jsonl")
    devset = desic.load_dataset(DATA / "orders_dev.jsonl")
    metric = desic.metrics.exact_match

    start = time.perf_counter()
    with desic.context(lm=lm):
        before = desic.evaluate(extract, devset, metric, concurrency=args.concurrency)
        print(f"dev accuracy before compile: {before.score:.2f}  ({before})")

        options = {"max_labeled": 8} if args.optimizer == "bootstrap" else {}
        compiled = desic.compile(
            extract,
            trainset,
            metric=metric,
            optimizer=args.optimizer,
            concurrency=args.concurrency,
            **options,
        )
        after = compiled.evaluate(devset, metric, concurrency=args.concurrency)
        print(f"dev accuracy after compile:  {after.score:.2f}  ({after})")
        print(compiled.inspect())

        path = compiled.save(args.out)
        print(f"saved {path}")
        prod = desic.load(path)  # a single-signature artifact runs without this file's code
        ticket = "hello, my order #40417 came without the manual"
        print(f"loaded artifact answers {ticket!r} -> {prod(ticket=ticket).order_id}")
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
