"""What the examples share: optimizer settings sized for the local model, and one
compile-and-compare routine (dev score before and after, LM calls spent).

The embedded model (Gemma 3 270M, base) runs on the CPU at a few seconds per call, so the
``local`` presets keep every optimizer to a few dozen calls; on a hosted model drop
``--small`` and the optimizers' defaults apply.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import desic
from desic.lm import counting_embeddings

OPTIMIZERS = ("labeled", "bootstrap", "knn", "random_search", "beam", "genetic", "mipro", "reflective")

# Small settings for the slow local model: each compile stays under ~100 LM calls.
LOCAL_PRESETS: dict[str, dict[str, Any]] = {
    "labeled": {"max_demos": 4},
    "bootstrap": {"max_demos": 3, "max_labeled": 3},
    "knn": {"k": 3, "by": "embeddings"},  # embeddings beat BM25 on the local model (bench README)
    "random_search": {"num_candidates": 3, "max_demos": 3, "max_labeled": 3, "per_input": "embeddings"},
    "beam": {"rounds": 1, "width": 2, "beam": 1, "init": "bootstrap"},
    "genetic": {"population": 4, "generations": 1, "max_demos": 3},
    "mipro": {"num_instructions": 3, "num_demo_sets": 3, "trials": 4, "minibatch": 4, "full_every": 4,
              "per_input": "embeddings"},
    "reflective": {"iterations": 3, "minibatch": 3, "init": "bootstrap"},
}


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--optimizer", default="bootstrap", choices=OPTIMIZERS)
    p.add_argument("--small", action="store_true", help="optimizer settings sized for the local model")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--max-calls", type=int, default=None, help="stop the compile after this many LM calls")
    p.add_argument("--skip-before", action="store_true", help="do not score the uncompiled pipeline")
    p.add_argument("--out", default=default_out, help="where to save the artifact")
    return p


def compile_and_compare(
    pipeline: Any,
    trainset: list[dict[str, Any]],
    devset: list[dict[str, Any]],
    metric: Any,
    *,
    optimizer: str,
    small: bool = False,
    seed: int = 0,
    concurrency: int = 4,
    max_calls: int | None = None,
    before: bool = True,
    lm: Any = None,
    teacher_lm: Any = None,
    out: str | None = None,
) -> dict[str, Any]:
    """Dev score before and after compiling with ``optimizer``; prints and returns figures."""
    options = dict(LOCAL_PRESETS[optimizer]) if small else {}
    figures: dict[str, Any] = {"optimizer": optimizer, "options": options}
    start = time.perf_counter()
    if before:
        report = desic.evaluate(pipeline, devset, metric, lm=lm, concurrency=concurrency)
        figures["before"] = report.score
        figures["before_calls"] = report.usage.calls
        print(f"dev score before compile: {report.score:.3f}  ({report})")
    # the embeddings requests (per-input demos by embeddings), told apart from chat calls
    with counting_embeddings() as embeds:
        compiled = desic.compile(
            pipeline,
            trainset,
            metric=metric,
            optimizer=optimizer,
            lm=lm,
            teacher_lm=teacher_lm,
            seed=seed,
            concurrency=concurrency,
            max_calls=max_calls,
            **options,
        )
    embedded = embeds.usage.calls
    calls = compiled.usage.calls - embedded  # usage counts both; DSPy's figures count chat calls
    after = compiled.evaluate(devset, metric, lm=lm, concurrency=concurrency)
    figures.update(
        after=after.score,
        compile_calls=calls,
        compile_embeds=embedded,
        candidates=len(compiled.history),
        stopped_by=compiled.stopped_by,
        seconds=round(time.perf_counter() - start, 1),
    )
    print(
        f"dev score after {optimizer}: {after.score:.3f}  ({after}); compile: {calls} LM calls"
        + (f" and {embedded} embeddings requests" if embedded else "")
        + f", {len(compiled.history)} candidates" + (f", stopped by {compiled.stopped_by}" if compiled.stopped_by else "")
    )
    print(compiled.inspect())
    if out:
        print(f"saved {compiled.save(out)}")
    return figures
