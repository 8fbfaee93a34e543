"""Rate limits: desic throttled at R next to DSPy 3.4.1, against a server enforcing R.

``python bench/bench_throttle.py [--rate 20] [--n 200] [--threads 16] [--json]``

Method
------
* The server is ``desic.testing.FakeOpenAIServer(faults=Faults(max_rps=R))``, in this
  process: an OpenAI-compatible loopback server that answers 429 to any request beyond R
  accepted in the last second (less 100 ms for arrival jitter), with a Retry-After saying
  when the window frees a slot. Each run gets a fresh server; the 429 count is the
  server's own.
* The task is one predict per example (``question -> answer``) over N examples; the
  server answers every accepted request correctly, so a lost example is a rate-limit loss.
* desic: ``desic.lm("openai:fake-model", base_url=..., rps=R)`` (a GCRA throttle of burst
  1 inside desic's retry, 3 retries) evaluated by ``desic.evaluate(..., concurrency=T)``.
  For reference, the same with no throttle (``retries=3`` only) is shown as well.
* DSPy: ``dspy.LM("openai/fake-model", api_base=..., api_key="x", cache=False)`` with its
  default retries (``num_retries=3``, litellm's exponential backoff) and
  ``dspy.Evaluate(num_threads=T, max_errors=N)`` on ``dspy.Predict("question -> answer")``
  (``max_errors=N`` only so that a run with many failures finishes and can be measured).
  It runs in ``bench/.venv-dspy`` (see ``bench_core.py``), against a server in this process.
* Every run makes one untimed warm-up call first (SDK imports, connections), then waits a
  second so the warm-up leaves the server's window. Wall time is the evaluation's.
  Throughput is answered examples per second; the ideal is N/R seconds.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_core import REPO, dspy_python, log

DSPY_SCRIPT = """
import json, sys, time
import dspy
url, n, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
lm = dspy.LM("openai/fake-model", api_base=url, api_key="x", cache=False)
dspy.configure(lm=lm)
program = dspy.Predict("question -> answer")
program(question="warm-up")
time.sleep(1.0)
devset = [dspy.Example(question=f"q{i}", answer=f"a{i}").with_inputs("question") for i in range(n)]
metric = lambda example, pred, trace=None: example.answer == pred.answer
evaluate = dspy.Evaluate(devset=devset, metric=metric, num_threads=threads, max_errors=n,
                         display_progress=False, provide_traceback=False)
start = time.perf_counter()
result = evaluate(program)
wall = time.perf_counter() - start
answered = sum(1 for _, pred, score in result.results if score)
print(json.dumps({"version": dspy.__version__, "wall": wall, "answered": answered,
                  "score": float(result.score)}))
"""

def answer_for(question: str) -> str:
    return "a" + question.strip().removeprefix("q")


def handler(req: dict[str, Any]) -> Any:
    """Answers both stacks correctly: desic's JSON schema, DSPy's chat adapter format."""
    text = str(req["messages"][-1]["content"])
    fmt = req.get("response_format") or {}
    if fmt.get("type") == "json_schema":  # desic (instructor) or DSPy's JSON fallback
        props = fmt["json_schema"]["schema"]["properties"]
        question = text.split(":", 1)[-1] if "question:" in text else _dspy_question(text)
        return {name: answer_for(question) for name in props}
    question = _dspy_question(text)
    if fmt.get("type") == "json_object":
        return {"answer": answer_for(question)}
    return f"[[ ## answer ## ]]\n{answer_for(question)}\n\n[[ ## completed ## ]]"


def _dspy_question(text: str) -> str:
    match = re.search(r"\[\[ ## question ## \]\]\s*([^\n]*)", text)
    return match.group(1) if match else text


def run_desic(rate: float, n: int, threads: int, throttled: bool) -> dict[str, Any]:
    import desic
    from desic.testing import FakeOpenAIServer, Faults, allow_model_requests

    @desic.signature
    def answer(question: str) -> str:  # type: ignore[empty-body]
        """Answer the question."""

    devset = [{"question": f"q{i}", "answer": f"a{i}"} for i in range(n)]
    options: dict[str, Any] = {"rps": rate} if throttled else {"retries": 3}
    with FakeOpenAIServer(handler=handler, faults=Faults(max_rps=rate)) as server, allow_model_requests():
        lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", **options)
        with desic.context(lm=lm):
            answer(question="q-1")
        time.sleep(1.0)
        before = dict(server.counts)
        start = time.perf_counter()
        report = desic.evaluate(answer, devset, desic.metrics.exact_match, lm=lm, concurrency=threads)
        wall = time.perf_counter() - start
        rejected = server.counts["rejected_rate"] - before["rejected_rate"]
        requests = server.counts["requests"] - before["requests"]
    answered = sum(1 for r in report.results if r.error is None and r.score == 1.0)
    return {"wall": wall, "answered": answered, "rejected": rejected, "requests": requests}


def run_dspy(python: str, rate: float, n: int, threads: int) -> dict[str, Any]:
    from desic.testing import FakeOpenAIServer, Faults

    with FakeOpenAIServer(handler=handler, faults=Faults(max_rps=rate)) as server:
        cmd = [python, "-c", DSPY_SCRIPT, server.url, str(n), str(threads)]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, timeout=3600)
        if proc.returncode != 0:
            raise RuntimeError(f"the DSPy run failed:\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        # the warm-up call went through before the window was cleared; it was never rejected
        out["rejected"] = server.counts["rejected_rate"]
        out["requests"] = server.counts["requests"] - 1
    return out  # type: ignore[no-any-return]


def table(rows: list[dict[str, Any]], ideal: float) -> str:
    head = ("run", "wall (s)", "x ideal", "answered/s", "answered", "429s", "requests")
    lines = [
        (
            r["run"],
            f"{r['wall']:.2f}",
            f"{r['wall'] / ideal:.2f}",
            f"{r['answered'] / r['wall']:.1f}",
            f"{r['answered']}/{r['n']}",
            str(r["rejected"]),
            str(r["requests"]),
        )
        for r in rows
    ]
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    out = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *lines)]
    out.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--rate", type=float, default=20, help="R: the server's limit and desic's rps")
    parser.add_argument("--n", type=int, default=200, help="N: examples evaluated")
    parser.add_argument("--threads", type=int, default=16, help="concurrency of both evaluators")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    parser.add_argument("--no-dspy", action="store_true", help="measure desic only")
    args = parser.parse_args()

    rows: list[dict[str, Any]] = []
    log(f"desic, throttled at {args.rate:g}/s")
    rows.append({"run": f"desic rps={args.rate:g}", **run_desic(args.rate, args.n, args.threads, True)})
    log("desic, no throttle (retries=3)")
    rows.append({"run": "desic no throttle", **run_desic(args.rate, args.n, args.threads, False)})
    version = None
    python = None if args.no_dspy else dspy_python(install=not args.no_install)
    if python is not None:
        log(f"DSPy with its default retries ({python})")
        try:
            result = run_dspy(python, args.rate, args.n, args.threads)
            version = result.pop("version")
            rows.append({"run": f"dspy {version} default", **result})
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            log(str(exc))
    for r in rows:
        r["n"] = args.n
    ideal = args.n / args.rate
    if args.json:
        meta = {"python": sys.version.split()[0], "dspy_version": version, "ideal_s": ideal, **vars(args)}
        print(json.dumps({"meta": meta, "rows": rows}, indent=2))
    else:
        print(
            f"N={args.n} examples, server limit R={args.rate:g} req/s, {args.threads} threads; "
            f"ideal wall time N/R = {ideal:.1f}s"
        )
        print(table(rows, ideal))
    return 0


if __name__ == "__main__":
    sys.exit(main())
