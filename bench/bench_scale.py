"""Evaluation cost per example as the devset grows, desic next to DSPy 3.4.1:
``python bench/bench_scale.py [--sizes 1000,10000,100000] [--dspy-max 20000] [--json]``.

Method
------
Each (framework, size) runs in a fresh process: ``desic.evaluate`` / ``dspy.Evaluate`` of
a one-input, one-output task on ``size`` distinct rows, with a zero-latency fake LM (the
same fakes as ``bench_compile.py``'s ``evaluate`` scenario), concurrency 8. Printed: wall
seconds, microseconds of wall time per example, and the process's peak resident memory.
With a zero-latency LM every second is framework overhead, so a flat us/example column
means the cost of one example does not grow with the devset (the issue's 100k target).
DSPy sizes above ``--dspy-max`` are skipped (its thread pool gets slow there); the
figures it does produce show the trend.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from bench_compile import DSPY_FAKE
from bench_core import dspy_python, log

CONCURRENCY = 8
PEAK = "\nimport resource as _r, json as _j; print(_j.dumps({'peak_mb': _r.getrusage(_r.RUSAGE_SELF).ru_maxrss / 1024}))\n"

DESIC = f"""
import json, sys
sys.path.insert(0, {str(BENCH)!r})
from bench_compile import desic_fake
n = int(sys.argv[1])
print(json.dumps(desic_fake("evaluate", n, {CONCURRENCY}, 0.0)))
""" + PEAK


def measure(cmd: list[str], timeout: float) -> dict[str, Any] | None:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        log(f"timed out after {timeout:.0f} s")
        return None
    if proc.returncode != 0:
        log(f"failed:\n{proc.stderr[-2000:]}")
        return None
    lines = [json.loads(line) for line in proc.stdout.strip().splitlines() if line.startswith("{")]
    out: dict[str, Any] = {}
    for line in lines[-2:]:
        out.update(line)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dspy-max", type=int, default=20000, help="largest devset DSPy is run on")
    parser.add_argument("--timeout", type=float, default=900.0, help="seconds per run")
    parser.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    python = dspy_python(install=not args.no_install)
    rows = []
    for n in sizes:
        row: dict[str, Any] = {"rows": n}
        log(f"desic evaluate n={n}")
        mine = measure([sys.executable, "-c", DESIC, str(n)], args.timeout)
        if mine:
            row.update(desic_wall=mine["wall"], desic_us=mine["wall"] / n * 1e6, desic_peak_mb=mine["peak_mb"])
        if python is not None and n <= args.dspy_max:
            log(f"DSPy evaluate n={n}")
            cmd = [python, "-c", DSPY_FAKE + PEAK, "evaluate", str(n), str(CONCURRENCY), "0"]
            theirs = measure(cmd, args.timeout)
            if theirs:
                row.update(dspy_wall=theirs["wall"], dspy_us=theirs["wall"] / n * 1e6, dspy_peak_mb=theirs["peak_mb"])
        rows.append(row)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    head = ("rows", "desic s", "desic us/ex", "desic peak MB", "dspy s", "dspy us/ex", "dspy peak MB")
    keys = ("rows", "desic_wall", "desic_us", "desic_peak_mb", "dspy_wall", "dspy_us", "dspy_peak_mb")
    fmts = ("d", ".2f", ".0f", ".0f", ".2f", ".0f", ".0f")
    lines = [tuple("-" if r.get(k) is None else format(r[k], f) for k, f in zip(keys, fmts)) for r in rows]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    print(" | ".join(h.ljust(w) for h, w in zip(head, widths)))
    print("-+-".join("-" * w for w in widths))
    for line in lines:
        print(" | ".join(c.ljust(w) for c, w in zip(line, widths)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
