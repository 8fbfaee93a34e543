"""Core overhead of desic next to DSPy 3.4.1, in one run: ``python bench/bench_core.py [--json]``.

Method
------
* Import time: wall time of fresh ``python -c "import X"`` processes minus that of
  ``python -c "pass"`` on the same interpreter (median of ``--import-runs`` each, after one
  untimed run to warm the OS and bytecode caches). desic runs on the interpreter running this
  script; DSPy on the interpreter of its own virtualenv. ``import+use`` also touches the API a
  program needs first (desic loads its submodules lazily; DSPy loads everything on import).
* Per-call overhead: a one-str-input, one-str-output task called ``--calls`` times with a
  zero-latency fake LM after ``--warmup`` calls; best of ``--repeats`` loops, in µs per call
  of wall time (``--cpu``: process CPU time, steadier on a busy machine).
  Every input differs (``q{i}``) and DSPy's caches are off, so no cache can help. desic:
  ``@desic.signature`` under ``desic.context(lm=FakeLM(default="ok"))``; DSPy:
  ``dspy.Predict`` / ``dspy.ChainOfThought("question -> answer")`` with ``DummyLM``
  (which in 3.4.1 never caches; ``configure_cache`` turns the global caches off as well).
* DSPy lives in ``bench/.venv-dspy`` (created and ``pip install dspy==3.4.1``-ed if missing)
  and is measured by a subprocess running ``DSPY_SCRIPT``, which prints JSON.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
DSPY_VENV = BENCH / ".venv-dspy"
DSPY_VERSION = "3.4.1"
METRICS = {  # name: (unit, target: the highest desic/dspy ratio that passes)
    "import": ("s", 0.2),
    "import+use": ("s", None),
    "predict": ("µs/call", 0.2),
    "chain_of_thought": ("µs/call", 0.2),
}
IMPORTS = {
    "desic": ("import desic", "import desic; desic.signature; desic.context; desic.testing.FakeLM"),
    "dspy": ("import dspy", "import dspy; dspy.Predict; dspy.ChainOfThought; dspy.utils.DummyLM"),
}

DSPY_SCRIPT = """
import json, sys, time
import dspy
from dspy.utils import DummyLM
calls, warmup, repeats = map(int, sys.argv[1:4])
clock = time.process_time if sys.argv[4] == "cpu" else time.perf_counter
dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
out = {"version": dspy.__version__}
for key, module in (("predict", dspy.Predict), ("chain_of_thought", dspy.ChainOfThought)):
    lm = DummyLM([{"answer": "ok", "reasoning": "r"}] * (warmup + calls * repeats))
    lm.cache = False
    dspy.configure(lm=lm)
    program = module("question -> answer")
    for i in range(warmup):
        assert program(question=f"w{i}").answer == "ok"
    best = float("inf")
    for r in range(repeats):
        start = clock()
        for i in range(calls):
            program(question=f"q{r}-{i}")
        best = min(best, clock() - start)
    out[key] = best / calls * 1e6
print(json.dumps(out))
"""


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


def import_seconds(python: str, statement: str, runs: int) -> float:
    """Median wall time of ``python -c statement`` minus that of ``python -c pass``."""

    def median_wall(code: str) -> float:
        times = []
        for _ in range(runs + 1):  # the first run warms the OS and bytecode caches
            start = time.perf_counter()
            subprocess.run([python, "-c", code], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
            times.append(time.perf_counter() - start)
        del times[0]
        return statistics.median(times)

    return max(0.0, median_wall(statement) - median_wall("pass"))


def desic_per_call(calls: int, warmup: int, repeats: int, cpu: bool) -> dict[str, float]:
    """µs per call of a desic signature, for each strategy, with a zero-latency FakeLM."""
    import desic
    from desic.testing import FakeLM

    clock = time.process_time if cpu else time.perf_counter

    @desic.signature
    def answer(question: str) -> str:  # type: ignore[empty-body]
        """Answer the question."""

    out: dict[str, float] = {}
    for strategy in ("predict", "chain_of_thought"):
        sig = answer.with_strategy(strategy)
        with desic.context(lm=FakeLM(default="ok")):
            for i in range(warmup):
                assert sig(question=f"w{i}") == "ok"
            best = float("inf")
            for r in range(repeats):
                start = clock()
                for i in range(calls):
                    sig(question=f"q{r}-{i}")
                best = min(best, clock() - start)
        out[strategy] = best / calls * 1e6
    return out


def dspy_python(install: bool) -> str | None:
    """The interpreter of the DSPy virtualenv, creating it if missing; None if unavailable."""
    python = DSPY_VENV / "bin" / "python"
    probe = [str(python), "-c", f"import dspy, sys; sys.exit(dspy.__version__ != {DSPY_VERSION!r})"]
    if python.exists() and subprocess.run(probe, check=False, capture_output=True).returncode == 0:
        return str(python)
    if not install:
        log(f"no DSPy {DSPY_VERSION} in {DSPY_VENV} and --no-install given: skipping DSPy")
        return None
    try:
        if not python.exists():
            log(f"creating virtualenv {DSPY_VENV}")
            subprocess.run([sys.executable, "-m", "venv", DSPY_VENV], check=True, stdout=sys.stderr)
        log(f"pip install dspy=={DSPY_VERSION} (a few minutes)")
        pip = [str(python), "-m", "pip", "install", f"dspy=={DSPY_VERSION}"]
        subprocess.run(pip, check=True, stdout=sys.stderr)
    except (OSError, subprocess.CalledProcessError) as exc:
        log(f"could not install DSPy {DSPY_VERSION} ({exc}); reporting desic figures only")
        return None
    return str(python)


def dspy_per_call(python: str, calls: int, warmup: int, repeats: int, cpu: bool) -> dict[str, Any]:
    cmd = [python, "-c", DSPY_SCRIPT, str(calls), str(warmup), str(repeats), "cpu" * cpu]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=True, cwd=REPO)
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def table(rows: list[dict[str, Any]]) -> str:
    def fmt(value: float | None, digits: int) -> str:
        return "-" if value is None else f"{value:.{digits}f}"

    head = ("metric", "desic", "dspy", "ratio", "target", "status")
    lines = []
    for r in rows:
        digits = 3 if r["metric"].endswith("(s)") else 1
        target = "-" if r["target"] is None else f"<= {r['target']}"
        values = (fmt(r["desic"], digits), fmt(r["dspy"], digits), fmt(r["ratio"], 3))
        lines.append((r["metric"], *values, target, r["status"]))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *lines)]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--calls", type=int, default=2000, help="calls per timed loop")
    parser.add_argument("--warmup", type=int, default=200, help="untimed calls first")
    parser.add_argument("--repeats", type=int, default=5, help="timed loops (best is kept)")
    parser.add_argument("--import-runs", type=int, default=5, help="processes per import figure")
    parser.add_argument("--cpu", action="store_true", help="time calls in process CPU time")
    parser.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    args = parser.parse_args()

    figures: dict[str, dict[str, float]] = {"desic": {}, "dspy": {}}

    def imports(name: str, python: str) -> None:
        log(f"timing imports of {name} ({python})")
        plain, used = IMPORTS[name]
        figures[name]["import"] = import_seconds(python, plain, args.import_runs)
        figures[name]["import+use"] = import_seconds(python, used, args.import_runs)

    imports("desic", sys.executable)
    log("timing desic calls")
    figures["desic"].update(desic_per_call(args.calls, args.warmup, args.repeats, args.cpu))
    dspy_version = None
    dspy_py = dspy_python(install=not args.no_install)
    if dspy_py is not None:
        try:
            imports("dspy", dspy_py)
            log("timing DSPy calls")
            result = dspy_per_call(dspy_py, args.calls, args.warmup, args.repeats, args.cpu)
            dspy_version = result.pop("version")
            figures["dspy"].update(result)
        except subprocess.CalledProcessError as exc:
            log(f"the DSPy run failed ({exc}):\n{exc.stderr or ''}")

    rows = []
    for key, (unit, target) in METRICS.items():
        mine, theirs = figures["desic"].get(key), figures["dspy"].get(key)
        ratio = mine / theirs if mine is not None and theirs else None
        status = "-" if target is None or ratio is None else ("PASS" if ratio <= target else "MISS")
        row = {"metric": f"{key} ({unit})", "desic": mine, "dspy": theirs, "ratio": ratio}
        rows.append({**row, "target": target, "status": status})
    if args.json:
        knobs = {k: v for k, v in vars(args).items() if k not in ("json", "no_install")}
        meta = {"python": sys.version.split()[0], "dspy_version": dspy_version, **knobs}
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        clock = "cpu" if args.cpu else "wall"
        print(
            f"desic vs DSPy {dspy_version or '(unavailable)'}; python {sys.version.split()[0]}; "
            f"calls: best of {args.repeats}x{args.calls} ({clock}); "
            f"imports: median of {args.import_runs}"
        )
        print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
