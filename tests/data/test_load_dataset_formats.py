# mypy: disable-error-code="empty-body"
"""load_dataset beyond JSON/CSV: parquet files and Hugging Face datasets (the `data` extra),
with the same row validation and errors that name the source and how to fix it."""

from __future__ import annotations

from pathlib import Path

import pytest

import desic
from desic.errors import DataError

pa = pytest.importorskip("pyarrow", reason="the 'data' extra is not installed: pip install 'desic[data]'")
datasets = pytest.importorskip("datasets", reason="the 'data' extra is not installed: pip install 'desic[data]'")
import pyarrow.parquet as pq

ROWS = [
    {"ticket": "my card was charged twice", "team": "billing"},
    {"ticket": "the app crashes on login", "team": "technical"},
    {"ticket": "how do I change my plan", "team": "billing"},
]


@desic.signature
def route(ticket: str) -> str:
    """Name the team."""


def test_a_parquet_file_gives_the_same_rows_as_jsonl(tmp_path: Path) -> None:
    path = tmp_path / "train.parquet"
    pq.write_table(pa.Table.from_pylist(ROWS), path)
    assert desic.load_dataset(path) == ROWS
    assert desic.load_dataset(str(path)) == ROWS


def test_a_broken_parquet_file_is_a_data_error_naming_it(tmp_path: Path) -> None:
    path = tmp_path / "broken.parquet"
    path.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match=r"broken\.parquet: not a readable parquet file"):
        desic.load_dataset(path)


def test_a_hugging_face_dataset_and_its_splits() -> None:
    ds = datasets.Dataset.from_list(ROWS)
    assert desic.load_dataset(ds) == ROWS
    both = datasets.DatasetDict({"train": ds, "test": datasets.Dataset.from_list(ROWS[:1])})
    assert desic.load_dataset(both, split="test") == ROWS[:1]
    with pytest.raises(DataError, match=r"has splits \['test', 'train'\]: pick one with split="):
        desic.load_dataset(both)
    with pytest.raises(DataError, match=r"no split 'dev'; its splits are \['test', 'train'\]"):
        desic.load_dataset(both, split="dev")
    with pytest.raises(DataError, match="not a DatasetDict: drop split="):
        desic.load_dataset(ds, split="train")
    only = datasets.DatasetDict({"train": ds})
    assert desic.load_dataset(only) == ROWS  # one split: no need to name it


def test_a_saved_dataset_folder(tmp_path: Path) -> None:
    datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS)}).save_to_disk(tmp_path / "saved")
    assert desic.load_dataset(tmp_path / "saved", split="train") == ROWS
    (tmp_path / "plain").mkdir()
    with pytest.raises(DataError, match="not a saved Hugging Face dataset"):
        desic.load_dataset(tmp_path / "plain")


def test_rows_from_datasets_are_validated_like_any_other() -> None:
    good = desic.load_dataset(datasets.Dataset.from_list([{"ticket": "x", "output": "billing"}]))
    report = desic.evaluate(route, good, desic.metrics.exact_match, lm=desic.testing.FakeLM(default="billing"), progress=False)
    assert report.errors == 0 and report.score == 1.0
    bad = desic.load_dataset(datasets.Dataset.from_list([{"text": "x", "output": "billing"}]))
    with pytest.raises(DataError, match="ticket"):
        desic.evaluate(route, bad, desic.metrics.exact_match, lm=desic.testing.FakeLM(default="billing"), progress=False)
    with pytest.raises(DataError, match="cannot read rows from int"):
        desic.load_dataset(42)


def test_split_on_a_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "rows.jsonl"
    path.write_text('{"ticket": "x", "team": "billing"}\n')
    with pytest.raises(DataError, match="split='train' applies to Hugging Face datasets"):
        desic.load_dataset(path, split="train")
