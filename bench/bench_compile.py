"""Compile and evaluation at scale, desic next to DSPy 3.4.1: ``python bench/bench_compile.py``.

Method
------
* **Fake LM** (default part). Both frameworks compile a one-input, one-output task
  (desic: a bare ``@desic.signature``; DSPy: ``dspy.Predict("question -> answer")``) against
  the same fake model: it sleeps ``latency`` (0 or 50 ms) per call and answers row ``qN``
  with ``aN`` when the row is "accepted" by the scenario, else ``wrong``. The fakes do the
  least work their framework allows (desic: an ``LM`` that builds the answer model;
  DSPy: ``DummyLM`` with its engine replaced), and DSPy's caches are off. Every row differs.
  Scenarios:
    - ``bootstrap``: no row is ever accepted, so both run the whole trainset (desic:
      ``optimizer="bootstrap"``; DSPy: ``BootstrapFewShot``, which runs rows one by one);
    - ``random_search``: half the rows are accepted; 4 demos, 4 candidates, valset 100
      (desic: ``random_search``; DSPy: ``BootstrapFewShotWithRandomSearch``);
    - ``evaluate``: ``desic.evaluate`` vs ``dspy.Evaluate`` on 200 and 2,000 rows;
    - ``evaluate_pipeline``: the same, with the signature called from a synchronous
      ``@desic.pipeline`` (runs in worker threads; each LM call hops to the event loop).
  Each figure is LM calls and wall time, and wall time relative to the ideal
  ``calls x latency / concurrency`` (the time if the LM were the only cost and the
  concurrency limit always full; 1.00 is perfect). desic figures are the best of
  ``--repeats`` runs (the machine is shared; the best run is the least disturbed);
  DSPy runs once per figure (its times are dominated by sleeping, not noise).
* **Local model** (``--local``, slow) and **examples** (``--examples [LIST]``, slower): on the
  embedded Gemma 3 270M (base), dev score before/after, compile LM calls, evaluation calls and
  seconds of desic zero-shot and each desic optimizer (``--local``: triage, bootstrap and
  ``--best``; ``--examples``: orders, triage, qa, booking, all six optimizers) with the
  examples' ``LOCAL_PRESETS``, beside DSPy zero-shot, ``BootstrapFewShot`` and ``MIPROv2`` on
  an equivalent program with the same rows, the same metric and small settings, reaching the
  same llama.cpp server through its OpenAI-compatible URL. The method is in
  ``_local_examples.py`` (desic, this process) and ``_dspy_local.py`` (DSPy, its venv).
  Each figure is appended to ``--results`` (default ``bench/results/local.jsonl``) as it is
  known; ``python bench/_local_examples.py --table FILE`` prints a results file's table.
  Typical run, no fake-LM part: ``python bench/bench_compile.py --no-fake --examples``.

DSPy lives in ``bench/.venv-dspy`` (created by ``bench_core.py``'s helper if missing).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO / "examples"))

from bench_core import dspy_python, log

LATENCIES = (0.0, 0.05)
# (scenario, rows, concurrency)
FAKE_CASES = (
    ("bootstrap", 200, 8),
    ("bootstrap", 2000, 200),
    ("random_search", 200, 8),
    ("random_search", 200, 200),
    ("evaluate", 200, 8),
    ("evaluate", 2000, 200),
    ("evaluate_pipeline", 200, 8),
    ("evaluate_pipeline", 2000, 200),
)
TARGETS = {("evaluate", 2000, 200, 0.05): 1.10, ("evaluate_pipeline", 2000, 200, 0.05): 1.10, ("bootstrap", 2000, 200, 0.05): 1.2, ("bootstrap", 200, 8, 0.05): 1.2}


def accepted(i: int, scenario: str) -> bool:
    return scenario != "bootstrap" and i % 2 == 0


def rows(n: int, offset: int = 0) -> list[dict[str, str]]:
    return [{"question": f"q{i}", "answer": f"a{i}"} for i in range(offset, offset + n)]


# --- desic on the fake LM ---------------------------------------------------------------------


def desic_fake(scenario: str, n: int, concurrency: int, latency: float) -> dict[str, Any]:
    import desic
    from desic.lm import BaseLM, LMRequest, LMResponse, Usage

    pattern = re.compile(r"q(\d+)\s*$")

    class BenchLM(BaseLM):
        """Sleeps ``latency``, then answers; counts calls."""

        name = "bench"

        def __init__(self) -> None:
            self.calls = 0

        async def request(self, request: LMRequest) -> LMResponse:
            self.calls += 1
            if latency:
                await asyncio.sleep(latency)
            m = pattern.search(request.messages[-1]["content"])
            i = int(m.group(1)) if m else -1
            text = f"a{i}" if accepted(i, scenario) else "wrong"
            return LMResponse(value=request.response_model(output=text), raw=text, usage=Usage(calls=1))

        def describe(self) -> dict[str, Any]:
            return {"provider": "bench", "scenario": scenario}

    @desic.signature
    def answer(question: str) -> str:  # type: ignore[empty-body]
        """Answer the question."""

    @desic.pipeline
    def qa(question: str) -> str:
        return answer(question=question)

    lm = BenchLM()
    metric = desic.metrics.exact_match
    start = time.perf_counter()
    if scenario.startswith("evaluate"):
        target = qa if scenario == "evaluate_pipeline" else answer
        report = desic.evaluate(target, rows(n), metric, lm=lm, concurrency=concurrency)
        assert report.completed == n
    elif scenario == "bootstrap":
        desic.compile(answer, rows(n), metric=metric, optimizer="bootstrap", max_demos=n, max_labeled=0,
                      lm=lm, concurrency=concurrency)
    else:
        desic.compile(answer, rows(n), valset=rows(100, offset=n), metric=metric, optimizer="random_search",
                      num_candidates=4, max_demos=4, max_labeled=4, lm=lm, concurrency=concurrency)
    return {"calls": lm.calls, "wall": time.perf_counter() - start}


# --- DSPy on the fake LM (run in its own virtualenv) ----------------------------------------

DSPY_FAKE = r"""
import json, re, sys, threading, time
import dspy
from dspy.utils.dummies import DummyLM
from dspy.clients.engines.dummy_engine import AsyncDummyEngine, DummyEngine

scenario, n, concurrency, latency = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), float(sys.argv[4])
dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
COUNT = [0]
LOCK = threading.Lock()
PATTERN = re.compile(r"\[\[ ## question ## \]\]\s*q(\d+)")

def accepted(i):
    return scenario != "bootstrap" and i % 2 == 0

class Engine(DummyEngine):
    def _complete_messages(self, messages):
        with LOCK:
            COUNT[0] += 1
        if latency:
            time.sleep(latency)
        m = PATTERN.search(messages[-1]["content"])
        i = int(m.group(1)) if m else -1
        text = self.owner._format_answer_fields({"answer": f"a{i}" if accepted(i) else "wrong"})
        from dspy.lm15 import Message, Response, TextPart, Usage
        return Response(id=None, model="bench", message=Message.assistant([TextPart(text)]),
                        finish_reason="stop", usage=Usage(input_tokens=0, output_tokens=0, total_tokens=0))

class BenchLM(DummyLM):
    def __init__(self):
        super().__init__({})
        self._install()
    def _install(self):
        self._engine_spec = Engine(self)
        self._async_engine_spec = AsyncDummyEngine(self._engine_spec)
    def copy(self, **kwargs):
        new = super().copy(**kwargs)
        new._install()
        return new

def rows(count, offset=0):
    return [dspy.Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(offset, offset + count)]

def metric(example, pred, trace=None):
    return example.answer == pred.answer

dspy.configure(lm=BenchLM())
program = dspy.Predict("question -> answer")
start = time.perf_counter()
if scenario.startswith("evaluate"):
    dspy.Evaluate(devset=rows(n), metric=metric, num_threads=concurrency, display_progress=False)(program)
elif scenario == "bootstrap":
    dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=n, max_labeled_demos=0).compile(program, trainset=rows(n))
else:
    opt = dspy.BootstrapFewShotWithRandomSearch(metric=metric, max_bootstrapped_demos=4, max_labeled_demos=4,
                                                num_candidate_programs=4, num_threads=concurrency)
    opt.compile(program, trainset=rows(n), valset=rows(100, offset=n))
print(json.dumps({"calls": COUNT[0], "wall": time.perf_counter() - start, "version": dspy.__version__}))
"""


def dspy_fake(python: str, scenario: str, n: int, concurrency: int, latency: float) -> dict[str, Any] | None:
    cmd = [python, "-c", DSPY_FAKE, scenario, str(n), str(concurrency), str(latency)]
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False)
    if proc.returncode != 0:
        log(f"DSPy {scenario} failed:\n{proc.stderr[-2000:]}")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])  # type: ignore[no-any-return]


def fake_part(python: str | None, repeats: int, skip_slow_dspy: bool) -> list[dict[str, Any]]:
    out = []
    for scenario, n, concurrency in FAKE_CASES:
        for latency in LATENCIES:
            log(f"{scenario} n={n} concurrency={concurrency} latency={latency * 1000:.0f} ms")
            best = min((desic_fake(scenario, n, concurrency, latency) for _ in range(repeats)), key=lambda r: r["wall"])
            row: dict[str, Any] = {"scenario": scenario, "rows": n, "concurrency": concurrency, "latency_ms": latency * 1000,
                                   "desic_calls": best["calls"], "desic_wall": best["wall"]}
            slow = scenario == "bootstrap" and latency and n * latency > 30
            theirs = None
            if python is not None and not (slow and skip_slow_dspy):
                theirs = dspy_fake(python, scenario, n, concurrency, latency)
            if theirs is not None:
                row.update(dspy_calls=theirs["calls"], dspy_wall=theirs["wall"])
            for who in ("desic", "dspy"):
                calls = row.get(f"{who}_calls")
                if latency and calls:
                    row[f"{who}_ratio"] = row[f"{who}_wall"] / (calls * latency / concurrency)
            row["target"] = TARGETS.get((scenario, n, concurrency, latency))
            out.append(row)
    return out


def fake_table(rows_: list[dict[str, Any]]) -> str:
    head = ("scenario", "rows", "conc", "lat", "desic calls", "desic wall", "desic/ideal", "dspy calls", "dspy wall",
            "dspy/ideal", "target")
    lines = []
    for r in rows_:
        def f(key: str, fmt: str, r: dict[str, Any] = r) -> str:
            v = r.get(key)
            return "-" if v is None else format(v, fmt)

        target = r.get("target")
        status = "" if target is None or r.get("desic_ratio") is None else (
            f"<= {target} {'PASS' if r['desic_ratio'] <= target else 'MISS'}")
        lines.append((r["scenario"], str(r["rows"]), str(r["concurrency"]), f"{r['latency_ms']:.0f}ms",
                      f("desic_calls", "d"), f("desic_wall", ".3f"), f("desic_ratio", ".3f"),
                      f("dspy_calls", "d"), f("dspy_wall", ".3f"), f("dspy_ratio", ".2f"), status))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    text = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *lines)]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


# --- the local model ----------------------------------------------------------------------------
# desic and DSPy on the shipped examples: bench/_local_examples.py (desic, in this process) runs
# bench/_dspy_local.py (DSPy, in its own venv) against the same llama.cpp server.


def local_part(python: str | None, examples: list[str], optimizers: list[str], results: Path,
               adapter: str = "chat", dspy_modes: tuple[str, ...] = ("zero-shot", "bootstrap", "mipro")) -> list[dict[str, Any]]:
    from _local_examples import run  # type: ignore[import-not-found]

    return run(examples, optimizers, results, python=python, adapter=adapter, dspy_modes=dspy_modes)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument("--repeats", type=int, default=3, help="desic runs per fake-LM figure (best kept)")
    parser.add_argument("--no-fake", action="store_true", help="skip the fake-LM part")
    parser.add_argument("--skip-slow-dspy", action="store_true", help="skip DSPy's sequential 2,000-row bootstrap at 50 ms (~100 s)")
    parser.add_argument("--local", action="store_true",
                        help="triage on the local model: desic zero-shot, bootstrap and --best; DSPy zero-shot, "
                             "BootstrapFewShot, MIPROv2 (slow)")
    parser.add_argument("--best", default="mipro", help="the desic optimizer beside bootstrap for --local")
    parser.add_argument("--dspy-adapter", default="chat", choices=("chat", "json"),
                        help="DSPy's adapter on the local model (chat falls back to JSON by itself)")
    parser.add_argument("--examples", nargs="?", const="orders,triage,qa,booking", default=None, metavar="LIST",
                        help="every optimizer (desic and DSPy) on every shipped example, or on LIST "
                             "(comma-separated) (1-2 hours per example on 2 cores)")
    parser.add_argument("--optimizers", default="bootstrap,random_search,beam,genetic,mipro,reflective",
                        help="desic optimizers for --examples")
    parser.add_argument("--no-dspy", action="store_true", help="desic only on the local model")
    parser.add_argument("--results", default=str(BENCH / "results" / "local.jsonl"),
                        help="JSON lines appended by --local / --examples as each figure is known")
    parser.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    args = parser.parse_args()

    python = dspy_python(install=not args.no_install)
    report: dict[str, Any] = {"python": sys.version.split()[0]}
    if not args.no_fake:
        report["fake"] = fake_part(python, args.repeats, args.skip_slow_dspy)
    local_python = None if args.no_dspy else python
    if args.local:
        report["local"] = local_part(local_python, ["triage"], ["bootstrap", args.best], Path(args.results),
                                     args.dspy_adapter)
    if args.examples:
        report["examples"] = local_part(local_python, args.examples.split(","), [o for o in args.optimizers.split(",") if o],
                                        Path(args.results), args.dspy_adapter)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0
    if "fake" in report:
        print("fake LM: LM calls, wall seconds, and wall / (calls x latency / concurrency)")
        print(fake_table(report["fake"]))
    for part in ("local", "examples"):
        if part in report:
            from _local_examples import table  # type: ignore[import-not-found]

            print(f"\n{part} (dev score before -> after; all rows also in {args.results}):")
            print(table(report[part]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
