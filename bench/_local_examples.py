"""Every desic optimizer on every shipped example, on the embedded local model.

Run by ``bench_compile.py --examples``; writes one JSON line per (example, optimizer) to
``--results`` as soon as it is known, so a long run can be read while it goes.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
EXAMPLES = ("triage", "qa", "booking")


def _load(name: str) -> tuple[Any, list[dict[str, Any]], list[dict[str, Any]], Any]:
    sys.path.insert(0, str(REPO / "examples"))
    import importlib

    import desic

    mod = importlib.import_module(name)
    pipeline = {"triage": "triage", "qa": "qa", "booking": "booking"}[name]
    metric = {
        "triage": desic.metrics.exact_match,
        "qa": desic.metrics.contains,
        "booking": desic.metrics.field_match,
    }[name]
    data = mod.DATA
    prefix = {"triage": "triage", "qa": "qa", "booking": "booking"}[name]
    train = desic.load_dataset(data / f"{prefix}_train.jsonl")
    dev = desic.load_dataset(data / f"{prefix}_dev.jsonl")
    return getattr(mod, pipeline), train, dev, metric


def run(examples: list[str], optimizers: list[str], results: Path, concurrency: int = 4) -> list[dict[str, Any]]:
    sys.path.insert(0, str(REPO / "examples"))
    import importlib

    import desic

    # Import everything now: a long run must not pick up half-edited modules later.
    for module in ("compile", "evaluate", "metrics", "budget", *(f"optimize.{o}" for o in optimizers)):
        importlib.import_module(f"desic.{module}")
    from _common import compile_and_compare  # type: ignore[import-not-found]

    lm = desic.lm("local")
    rows: list[dict[str, Any]] = []
    for name in examples:
        pipeline, train, dev, metric = _load(name)
        start = time.perf_counter()
        zero = desic.evaluate(pipeline, dev, metric, lm=lm, concurrency=concurrency)
        row = {"example": name, "optimizer": "zero-shot", "after": zero.score, "eval_calls": zero.usage.calls,
               "seconds": round(time.perf_counter() - start, 1)}
        rows.append(row)
        with results.open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        for opt in optimizers:
            try:
                fig = compile_and_compare(pipeline, train, dev, metric, optimizer=opt, small=True,
                                          concurrency=concurrency, before=False, lm=lm)
                fig.update(example=name, before=zero.score)
            except Exception as exc:  # one optimizer failing must not lose the others' figures
                fig = {"example": name, "optimizer": opt, "error": f"{type(exc).__name__}: {exc}"}
            rows.append(fig)
            with results.open("a") as fh:
                fh.write(json.dumps(fig, default=str) + "\n")
    return rows


if __name__ == "__main__":
    out = Path(sys.argv[1])
    ex = sys.argv[2].split(",") if len(sys.argv) > 2 else list(EXAMPLES)
    opts = sys.argv[3].split(",") if len(sys.argv) > 3 else ["bootstrap", "random_search", "beam", "genetic", "mipro", "reflective"]
    run(ex, opts, out)
