"""The agent example (``examples/agent.py``) beside DSPy 3.4.1's ``ReAct``, on the local model.

    python bench/bench_agent.py [--skip-desic] [--skip-dspy] [--results FILE]

desic: ``ask`` (``strategy="react"``, ``search`` + ``calculate``, ``max_steps=4``) on the
local model with ``max_tokens=320``, dev score before and after ``bootstrap(max_demos=2,
max_labeled=0)``, as ``python examples/agent.py`` prints them. DSPy: ``bench/_dspy_agent.py``
run by the DSPy virtualenv's python against the very llama.cpp server desic started (one
model process, one model file, temperature 0): ``dspy.ReAct`` on the same tools, rows and
metric, before and after ``BootstrapFewShot(max_bootstrapped_demos=2, max_labeled_demos=0)``.
Figures are printed and appended to ``--results`` (JSON lines) as they come.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent


def _write(results: Path, row: dict[str, Any]) -> None:
    with results.open("a") as fh:
        fh.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def desic_figures(lm: Any, concurrency: int) -> dict[str, Any]:
    sys.path.insert(0, str(REPO / "examples"))
    from agent import DATA, ask  # type: ignore[import-not-found]

    import desic

    train = desic.load_dataset(DATA / "agent_train.jsonl")
    dev = desic.load_dataset(DATA / "agent_dev.jsonl")
    start = time.perf_counter()
    before = desic.evaluate(ask, dev, desic.metrics.contains, lm=lm, concurrency=concurrency)
    t = time.perf_counter()
    compiled = desic.compile(ask, train, metric=desic.metrics.contains, optimizer="bootstrap", lm=lm,
                             max_demos=2, max_labeled=0, concurrency=concurrency)
    compile_seconds = time.perf_counter() - t
    after = compiled.evaluate(dev, desic.metrics.contains, lm=lm, concurrency=concurrency)
    return {
        "framework": "desic", "program": "react", "before": before.score, "after": after.score,
        "eval_calls_before": before.usage.calls, "compile_calls": compiled.usage.calls,
        "eval_calls_after": after.usage.calls, "errors_before": before.errors, "errors_after": after.errors,
        "compile_seconds": round(compile_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
        "train": len(train), "dev": len(dev), "max_tokens": 320,
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--skip-desic", action="store_true")
    p.add_argument("--skip-dspy", action="store_true")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--dspy-max-tokens", type=int, default=200)
    p.add_argument("--results", type=Path, default=BENCH / "agent_results.jsonl")
    p.add_argument("--python", default=str(BENCH / ".venv-dspy" / "bin" / "python"))
    args = p.parse_args()

    import desic

    lm: Any = desic.lm("local", max_tokens=320, timeout=1800)
    url = lm.inner._endpoint()  # starts the one llama.cpp server (under the timeout wrapper)
    _write(args.results, {"event": "server", "url": url, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    if not args.skip_desic:
        _write(args.results, desic_figures(lm, args.concurrency))
    if not args.skip_dspy:
        cmd = [args.python, str(BENCH / "_dspy_agent.py"), url, "--max-tokens", str(args.dspy_max_tokens)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
        lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
        if proc.returncode != 0 or not lines:
            _write(args.results, {"framework": "dspy", "error": proc.stderr[-3000:]})
            return 1
        _write(args.results, json.loads(lines[-1]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
