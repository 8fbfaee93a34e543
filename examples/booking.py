"""Extract hotel bookings from guests' messages into a nested pydantic model.

The output is structured (a ``Guest`` inside a ``Booking``), so the metric is
``desic.metrics.field_match``: the share of fields right (``guest.name``,
``guest.phone``, ``room``, ``nights``, ``breakfast``), with feedback naming the wrong
ones, which the reflective optimizer reads. Messages write numbers as words or digits
("three nights", "3 nights") and mention breakfast only when it is wanted.

    python examples/booking.py --optimizer bootstrap --small     # the embedded local model
    DESIC_LM=openai:gpt-4o-mini python examples/booking.py --optimizer reflective
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field

import desic

DATA = Path(__file__).parent / "data"


class Guest(BaseModel):
    name: str = Field(max_length=40)
    phone: str = Field(max_length=20)


class Booking(BaseModel):
    guest: Guest
    room: Literal["single", "double", "suite"]
    nights: int = Field(ge=1, le=30)
    breakfast: bool


@desic.signature
def extract_booking(message: str) -> Booking:
    """Extract the hotel booking from the guest's message."""


@desic.pipeline
def booking(message: str) -> Booking:
    return extract_booking(message=message)


def main() -> None:
    from _common import compile_and_compare, parser

    args = parser(__doc__.splitlines()[0], "booking.desic.json").parse_args()
    compile_and_compare(
        booking,
        desic.load_dataset(DATA / "booking_train.jsonl"),
        desic.load_dataset(DATA / "booking_dev.jsonl"),
        desic.metrics.field_match,
        optimizer=args.optimizer,
        small=args.small,
        seed=args.seed,
        concurrency=args.concurrency,
        max_calls=args.max_calls,
        before=not args.skip_before,
        out=args.out,
    )


if __name__ == "__main__":
    main()
