"""Examples and datasets: rows are validated against the pipeline before any LM call."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from . import ir
from ._json import to_jsonable
from .errors import DataError

if TYPE_CHECKING:
    from .pipeline import Pipeline

__all__ = ["Example", "dataset_fingerprint", "holdout_split", "load_dataset", "read_text", "require_json", "to_examples"]


@dataclass(frozen=True)
class Example:
    """One row: the pipeline's ``inputs`` and the expected outputs (``labels``)."""

    inputs: dict[str, Any]
    labels: dict[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        if key in self.labels:
            return self.labels[key]
        return self.inputs.get(key, default)

    def to_dict(self) -> dict[str, Any]:
        return {**self.inputs, **self.labels}


def load_dataset(source: str | Path | Any, *, split: str | None = None) -> list[dict[str, Any]]:
    """Rows as plain dicts, from a file or a Hugging Face dataset.

    ``source`` is a ``.jsonl``, ``.json`` (a list of objects), ``.csv`` (UTF-8) or
    ``.parquet`` file (needs ``pyarrow``), a folder written by ``datasets``'
    ``save_to_disk``, or a ``datasets.Dataset`` / ``DatasetDict`` object (``split`` picks
    one of a ``DatasetDict``'s splits; it may be left out when there is only one). The
    last three need ``pip install 'desic[data]'``.

    Whatever is wrong (missing, unreadable, not UTF-8, invalid JSON, a row that is not an
    object, an unknown split) is a ``DataError`` naming the source and, where it can, the
    line or row.
    """
    if not isinstance(source, (str, Path)):
        return _from_hf(source, split, what=type(source).__name__)
    p = Path(source)
    if p.is_dir():
        if not any((p / f).is_file() for f in ("dataset_dict.json", "dataset_info.json", "state.json")):
            raise DataError(
                f"{p} is a folder but not a saved Hugging Face dataset (no dataset_dict.json or "
                "dataset_info.json); give a .jsonl, .json, .csv or .parquet file"
            )
        datasets = _optional("datasets", f"reading the saved dataset {p}")
        try:
            loaded = datasets.load_from_disk(str(p))
        except (OSError, ValueError) as exc:
            raise DataError(f"{p}: cannot read the saved dataset: {exc}") from exc
        return _from_hf(loaded, split, what=str(p))
    if split is not None:
        raise DataError(f"split={split!r} applies to Hugging Face datasets, not to the file {p}")
    if not p.is_file():
        raise DataError(f"dataset file not found: {p}")
    rows: list[Any]
    if p.suffix == ".parquet":
        parquet = _optional("pyarrow.parquet", f"reading {p}")
        try:
            rows = parquet.read_table(p).to_pylist()
        except (OSError, ValueError) as exc:  # ArrowInvalid is a ValueError
            raise DataError(f"{p}: not a readable parquet file: {exc}") from exc
        return _check_rows(rows, str(p))
    text = read_text(p)
    if p.suffix == ".jsonl":
        rows = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as exc:
                raise DataError(f"{p}:{lineno}: invalid JSON: {exc.msg}", row=len(rows)) from exc
    elif p.suffix == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as exc:
            raise DataError(f"{p}: invalid JSON: {exc.msg} (line {exc.lineno})") from exc
        if not isinstance(rows, list):
            raise DataError(f"{p}: expected a JSON list of objects")
    elif p.suffix == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
    else:
        raise DataError(
            f"{p}: unknown dataset format {p.suffix!r}; use .jsonl, .json, .csv or .parquet"
        )
    return _check_rows(rows, str(p))


def _check_rows(rows: list[Any], where: str) -> list[dict[str, Any]]:
    for i, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DataError(f"{where}: row {i} is {type(row).__name__}, expected an object", row=i)
    return rows


def _optional(module: str, doing: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise DataError(
            f"{doing} needs the {package!r} package: pip install 'desic[data]'"
        ) from exc


def _from_hf(obj: Any, split: str | None, *, what: str) -> list[dict[str, Any]]:
    """Rows of a ``datasets`` object, recognised without importing ``datasets``."""
    kind = type(obj).__name__
    module = type(obj).__module__
    if not module.startswith("datasets"):
        raise DataError(
            f"cannot read rows from {kind}: give a file path (.jsonl, .json, .csv, .parquet), "
            "a saved dataset folder, or a datasets.Dataset / DatasetDict"
        )
    if kind in ("DatasetDict", "IterableDatasetDict"):
        splits = sorted(obj.keys())
        if split is None:
            if len(splits) != 1:
                raise DataError(f"{what} has splits {splits}: pick one with split=...")
            split = splits[0]
        if split not in obj:
            raise DataError(f"{what} has no split {split!r}; its splits are {splits}")
        return _from_hf(obj[split], None, what=f"{what}[{split!r}]")
    if split is not None:
        raise DataError(f"{what} is a single {kind}, not a DatasetDict: drop split={split!r}")
    if hasattr(obj, "to_list"):
        rows = obj.to_list()
    else:  # an IterableDataset
        rows = [dict(row) for row in obj]
    return _check_rows(rows, what)


def read_text(p: Path) -> str:
    """The file's text as UTF-8 (a leading byte-order mark dropped); ``DataError`` naming the
    file and line of the first byte that is not UTF-8."""
    try:
        data = p.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read dataset file {p}: {exc.strerror or exc}") from None
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{p}:{line}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save the file as UTF-8 (e.g. iconv -f latin1 -t utf-8)"
        ) from None


def to_examples(pipe: Pipeline[..., Any], rows: Iterable[Any], *, what: str = "trainset") -> list[Example]:
    """Validate every row against ``pipe``'s inputs; extra keys become labels."""
    names = pipe.inputs
    # With no type to check (e.g. a bare signature's pipeline), a row whose required
    # inputs are all there needs no validation: only the split into inputs and labels.
    plain = all(adapter is None for adapter, _ in names.values())
    required = frozenset(name for name, (_, needed) in names.items() if needed)
    out: list[Example] = []
    for i, row in enumerate(rows):
        data: Mapping[str, Any]
        if type(row) is dict:
            data = row
        elif isinstance(row, Example):
            data = row.to_dict()
        elif isinstance(row, Mapping):
            data = row
        else:
            raise DataError(f"{what} row {i}: expected a dict or desic.Example, got {type(row).__name__}", row=i)
        if plain and data.keys() >= required:
            inputs = {name: data[name] for name in names if name in data}
        else:
            try:
                inputs = pipe.validate_inputs(dict(data), i)
            except DataError as exc:
                raise DataError(f"{what} {exc}", row=exc.row, field=exc.field) from None
        labels = {k: v for k, v in data.items() if k not in names}
        out.append(Example(inputs=inputs, labels=labels))
    if not out:
        raise DataError(f"{what} is empty; give at least one example")
    return out


_PLAIN = frozenset((str, int, bool, type(None)))  # JSON data as they are


def _row_data(example: Example) -> Any:
    row = {**example.inputs, **example.labels}
    for key, value in row.items():
        if type(value) not in _PLAIN or type(key) is not str:
            return to_jsonable(row)
    return row  # what ``to_jsonable`` returns for it, without the conversion


def require_json(examples: Iterable[Example], what: str = "trainset") -> None:
    """``DataError`` naming row and field for a value that is not JSON data.

    A compile fingerprints its rows and records them in its store: an object JSON cannot
    hold (``object()``, a file handle, a set of objects, ...) would fail there, after the
    LM calls were made. Checked before any call; plain values cost one type lookup.
    """
    for i, example in enumerate(examples):
        for part in (example.inputs, example.labels):
            for key, value in part.items():
                if type(value) in _PLAIN:
                    continue
                try:
                    to_jsonable(value)
                except Exception as exc:  # noqa: BLE001 - pydantic raises several kinds
                    raise DataError(
                        f"{what} row {i}: field {key!r} = {value!r:.60} is not JSON data "
                        f"({type(value).__name__}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}); "
                        "give it as text, a number, a bool, a list or an object, or drop the key",
                        row=i,
                        field=str(key),
                    ) from None


def dataset_fingerprint(examples: Iterable[Example]) -> str:
    return ir.fingerprint([_row_data(e) for e in examples])


def holdout_split(
    examples: list[Example], fraction: float, max_val: int | None, rng: random.Random
) -> tuple[list[Example], list[Example]]:
    """(train, validation): ``fraction`` of ``examples`` (at most ``max_val``, at least one)
    drawn with ``rng`` for validation, the rest for training, each in the original order.
    Fewer than two examples serve as both."""
    n = len(examples)
    if n < 2:
        return examples, examples
    k = max(1, min(n - 1, round(n * fraction)))
    if max_val is not None:
        k = max(1, min(k, max_val))
    order = list(range(n))
    rng.shuffle(order)
    val = set(order[:k])
    return [e for i, e in enumerate(examples) if i not in val], [e for i, e in enumerate(examples) if i in val]
