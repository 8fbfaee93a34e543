"""The shipped examples' data: a dev row that is word for word a training row measures
memory, not the compile (a per-input demo would simply show its twin)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"
SPLITS = sorted(p.name.removesuffix("_train.jsonl") for p in DATA.glob("*_train.jsonl"))


def rows(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_every_example_with_a_trainset_has_a_devset() -> None:
    assert {"orders", "triage", "qa", "booking", "agent"} <= set(SPLITS)
    assert all((DATA / f"{name}_dev.jsonl").exists() for name in SPLITS)


@pytest.mark.parametrize("name", SPLITS)
def test_no_dev_input_is_a_training_input(name: str) -> None:
    train, dev = rows(DATA / f"{name}_train.jsonl"), rows(DATA / f"{name}_dev.jsonl")
    field = next(iter(train[0]))  # the input field comes first in every row
    seen = {str(r[field]).strip().lower() for r in train}
    twins = [r[field] for r in dev if str(r[field]).strip().lower() in seen]
    assert not twins, f"{name}: dev rows that are training rows: {twins}"
    assert len({str(r[field]).strip().lower() for r in dev}) == len(dev), f"{name}: a dev row is repeated"
