"""Storage figures, in one run: ``python bench/bench_storage.py [--json]``.

Method
------
* Append throughput: ``add_candidate`` of a realistic record (a one-node program with four
  demos, about 1.5 KB of JSON) into one run, per backend. ``1 proc``: one process appends
  ``--appends`` records. ``N procs``: ``--procs`` fresh processes append ``--appends``
  records each into the same run at the same time (they start on a shared signal); the
  figure is all records over the wall time from the first start to the last finish (each
  process times itself). tinydb rewrites its whole file per write, so it gets
  ``--tinydb-appends`` (fewer) records; its figure falls as the store grows.
* Load and answer: wall time of a fresh ``python -c`` that imports the framework, loads a
  saved one-signature program (question -> answer, four demos) and is ready to answer,
  minus that of ``python -c pass`` in the same round (median and min of ``--runs`` rounds
  after one warm-up round; the cases run interleaved so machine load hits all alike). ``+answer``
  also answers one question with the framework's fake LM. desic loads from a file and from
  each store URL (``<store>#qa@prod``); DSPy 3.4.1 (in ``bench/.venv-dspy``, made by
  ``bench_core.py``) does ``dspy.Predict("question -> answer").load("x.json")`` after
  ``program.save("x.json")``, and answers with ``DummyLM``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

from bench_core import DSPY_VERSION, REPO, dspy_python, log

BACKENDS = ("memory", "sqlite", "msgspec", "tinydb")

RECORD: dict[str, Any] = {
    "index": 0,
    "score": 0.75,
    "note": "bootstrap: 3/4 traces accepted",
    "usage": [4, 820, 96, 0.0004],
    "program": {
        "format": "desic.program",
        "format_version": 1,
        "pipeline": "app:qa",
        "nodes": [
            {
                "id": "answer",
                "signature": {
                    "name": "answer",
                    "instructions": "Answer the question.",
                    "inputs": [{"name": "question", "schema": {"type": "string"}}],
                    "output_schema": {
                        "type": "object",
                        "properties": {"answer": {"type": "string"}},
                    },
                    "output_field": "answer",
                },
                "instructions": "Answer the question briefly and precisely, citing nothing.",
                "demos": [
                    {
                        "inputs": {"question": f"What is {i} + {i}? " * 4},
                        "output": {"answer": str(2 * i) * 8},
                        "source": "bootstrap",
                    }
                    for i in range(4)
                ],
            }
        ],
    },
}

WORKER = """
import json, os, sys, time
import desic.storage as ds
url, run_id, n, go = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
record = json.loads(sys.argv[5])
store = ds.open(url)
while not os.path.exists(go):
    time.sleep(0.0005)
start = time.time()
for i in range(n):
    store.add_candidate(run_id, {**record, "index": i})
print(json.dumps([start, time.time()]))
"""


def url_for(backend: str, root: Path) -> str:
    return {
        "memory": "memory://",
        "sqlite": f"sqlite://{root}/s.db",
        "msgspec": f"msgspec://{root}/s",
        "tinydb": f"tinydb://{root}/s.json",
    }[backend]


def append_one_process(backend: str, n: int) -> float:
    import desic.storage as ds

    with tempfile.TemporaryDirectory() as tmp:
        store = ds.open(url_for(backend, Path(tmp)))
        run = store.create_run(ds.RunInfo(id="bench"))
        start = time.perf_counter()
        for i in range(n):
            store.add_candidate(run.id, {**RECORD, "index": i})
        elapsed = time.perf_counter() - start
        assert len(store.history(run.id)) == n
        store.close()
    return n / elapsed


def append_processes(backend: str, n: int, procs: int) -> float:
    import desic.storage as ds

    with tempfile.TemporaryDirectory() as tmp:
        url = url_for(backend, Path(tmp))
        store = ds.open(url)
        store.create_run(ds.RunInfo(id="bench"))
        go = Path(tmp) / "go"
        workers = [
            subprocess.Popen(
                [sys.executable, "-c", WORKER, url, "bench", str(n), str(go), json.dumps(RECORD)],
                stdout=subprocess.PIPE,
                text=True,
            )
            for _ in range(procs)
        ]
        time.sleep(1.0)  # let every worker import and open the store
        go.touch()
        spans = [json.loads(w.communicate()[0]) for w in workers]
        assert all(w.returncode == 0 for w in workers)
        assert len(store.history("bench")) == n * procs
        store.close()
    return n * procs / (max(e for _, e in spans) - min(s for s, _ in spans))


def make_desic_artifacts(root: Path) -> dict[str, str]:
    """A one-signature program with four demos, saved to a file and to each store."""
    import desic
    from desic.testing import FakeLM

    @desic.signature
    def answer(question: str) -> str:  # type: ignore[empty-body]
        """Answer the question."""

    train = [{"question": f"What is {i} + {i}?", "answer": str(2 * i)} for i in range(4)]
    compiled = desic.compile(
        answer, train, optimizer="labeled", max_demos=4, lm=FakeLM(default="x")
    )
    targets = {"file": str(compiled.save(root / "qa.json"))}
    for backend in ("sqlite", "msgspec", "tinydb"):
        url = f"{url_for(backend, root)}#qa@prod"
        compiled.save(url)
        targets[backend] = url
    return targets


DSPY_SAVE = """
import sys, dspy
program = dspy.Predict("question -> answer")
program.demos = [dspy.Example(question=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(4)]
program.save(sys.argv[1])
"""


def load_statements(target: str) -> tuple[str, str]:
    load = f"import desic; c = desic.load({target!r})"
    answer = (
        load
        + "; from desic.testing import FakeLM\nwith desic.context(lm=FakeLM(default='ok')): assert c(question='q') == 'ok'"
    )
    return load, answer


def dspy_statements(path: str) -> tuple[str, str]:
    load = f"import dspy; p = dspy.Predict('question -> answer'); p.load({path!r})"
    answer = (
        load
        + "; from dspy.utils import DummyLM; dspy.configure(lm=DummyLM([{'answer': 'ok'}])); assert p(question='q').answer == 'ok'"
    )
    return load, answer


def fresh_process_seconds(
    cases: list[tuple[str, str, str]], runs: int
) -> dict[str, tuple[float, float]]:
    """Per case ``(name, python, code)``: (median, min) of its wall time minus ``pass``'s.

    Cases run interleaved, round by round (each round also times ``python -c pass`` on each
    interpreter), so a busy machine slows every case alike; round 0 only warms the caches.
    """
    times: dict[str, list[float]] = {name: [] for name, _, _ in cases}

    def wall(python: str, code: str) -> float:
        start = time.perf_counter()
        subprocess.run([python, "-c", code], check=True, cwd=REPO, stdout=subprocess.DEVNULL)
        return time.perf_counter() - start

    for round_ in range(runs + 1):
        base = {python: wall(python, "pass") for python in {p for _, p, _ in cases}}
        for name, python, code in cases:
            elapsed = wall(python, code) - base[python]
            if round_:
                times[name].append(max(0.0, elapsed))
    return {name: (statistics.median(t), min(t)) for name, t in times.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print JSON instead of tables")
    parser.add_argument(
        "--appends", type=int, default=2000, help="records per process (memory, sqlite, msgspec)"
    )
    parser.add_argument(
        "--tinydb-appends", type=int, default=200, help="records per process for tinydb"
    )
    parser.add_argument("--procs", type=int, default=4, help="concurrent processes")
    parser.add_argument("--runs", type=int, default=7, help="fresh processes per load figure")
    parser.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    args = parser.parse_args()

    appends: list[dict[str, Any]] = []
    for backend in BACKENDS:
        n = args.tinydb_appends if backend == "tinydb" else args.appends
        log(f"appends: {backend} x{n}")
        row: dict[str, Any] = {
            "backend": backend,
            "records": n,
            "one_proc": append_one_process(backend, n),
        }
        row["n_procs"] = None if backend == "memory" else append_processes(backend, n, args.procs)
        appends.append(row)

    cases: list[tuple[str, str, str]] = []
    labels: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        for where, target in make_desic_artifacts(root).items():
            label = f"desic load ({where})"
            load, answer = load_statements(target)
            labels.append(label)
            cases += [(label, sys.executable, load), (label + "+", sys.executable, answer)]
        dspy_py = dspy_python(install=not args.no_install)
        if dspy_py is not None:
            path = str(root / "dspy_qa.json")
            subprocess.run(
                [dspy_py, "-c", DSPY_SAVE, path], check=True, cwd=REPO, capture_output=True
            )
            label = f"dspy {DSPY_VERSION} Predict.load (file)"
            load, answer = dspy_statements(path)
            labels.append(label)
            cases += [(label, dspy_py, load), (label + "+", dspy_py, answer)]
        log(f"timing {len(cases)} fresh-process cases x{args.runs} (interleaved)")
        timed = fresh_process_seconds(cases, args.runs)
    loads = [
        {
            "what": label,
            "load": timed[label][0],
            "load_min": timed[label][1],
            "answer": timed[label + "+"][0],
            "answer_min": timed[label + "+"][1],
        }
        for label in labels
    ]

    if args.json:
        meta = {"python": sys.version.split()[0], **vars(args)}
        print(json.dumps({"meta": meta, "appends": appends, "loads": loads}, indent=2))
        return 0
    print(
        f"append throughput (records/s; record ~{len(json.dumps(RECORD))} B; {args.procs} procs share one run)"
    )
    print(f"{'backend':<8} | {'records':>7} | {'1 proc':>9} | {f'{args.procs} procs':>9}")
    for r in appends:
        many = "-" if r["n_procs"] is None else f"{r['n_procs']:9.0f}"
        print(f"{r['backend']:<8} | {r['records']:>7} | {r['one_proc']:9.0f} | {many:>9}")
    print(
        f"\nfresh process: import + load (+ answer one question with a fake LM), s; median (min) of {args.runs}"
    )
    print(f"{'what':<32} | {'load':>13} | {'+answer':>13}")
    for r in loads:
        print(
            f"{r['what']:<32} | {r['load']:5.3f} ({r['load_min']:5.3f}) | {r['answer']:5.3f} ({r['answer_min']:5.3f})"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
