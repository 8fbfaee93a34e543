"""Scale-out: the Ray executor beside the local one, on a local Ray cluster of this machine.

``python bench/bench_scale_out.py [--rows 2000] [--json]`` (needs ``pip install 'desic[ray]'``)

Method
------
* One local Ray cluster (``ray.init(num_cpus=2)``), one ``desic.executors.Ray(workers=2)``
  kept for every figure (its actors start once, as in a compile); every Ray figure is
  taken after an untimed warm-up run of the same shape (actors started, pipeline imported,
  LM built on each worker). Workers import the pipelines of ``bench/_scale_out.py`` (on
  their ``PYTHONPATH`` through the cluster's ``runtime_env``).
* CPU-bound: ``_scale_out.cpu_bound``, a synchronous pipeline that burns ~20 ms of CPU
  per example and then calls a fake LM answering after 50 ms (``FakeLM(latency=0.05)``),
  on ``--rows`` rows, concurrency 16 (local) and 2 workers x 8 (Ray). On one process the
  CPU work is serialised by the GIL, so local throughput is at most 50 rows/s; the ratio
  is Ray's rows/s over local rows/s (target >= 1.7 on 2 cores).
* Overhead at zero latency: a bare signature with a zero-latency fake LM on ``--rows`` rows
  at concurrency 200: (Ray wall - local wall) / rows (target <= 2 ms per example).
* LM-bound: the same signature with a 50 ms fake LM, concurrency 200 across the workers:
  wall / (calls x latency / concurrency) (target <= 1.2).
* Machine: how much parallel CPU this machine gives two processes right now (two
  processes each burning 0.5 s of CPU, their speed-up over one): the ceiling of the
  CPU-bound ratio on a shared machine.
* Rate: a ``FakeOpenAIServer`` in this process enforcing R requests/s (``Faults(max_rps=R,
  latency=0.05)``), LM ``desic.lm("openai:fake-model", base_url=..., rps=R, retries=0)``,
  ``--rate-rows`` rows at concurrency 200 on Ray: rejections (target 0) and wall / (N / R).
* ``--parts cpu,zero,lm,rate`` picks the figures to take.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))
sys.path.insert(0, str(REPO))


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def timed(fn: Any) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _spin(seconds: float) -> float:
    start, cpu = time.perf_counter(), time.process_time()
    while time.process_time() - cpu < seconds:
        pass
    return time.perf_counter() - start


def parallelism(seconds: float = 0.5) -> float:
    """Speed-up of two processes burning CPU over one, on this machine now (2.0 when idle)."""
    import multiprocessing

    one = _spin(seconds)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        start = time.perf_counter()
        pool.map(_spin, [seconds, seconds])
        two = time.perf_counter() - start
    return 2 * one / two


def cpu_part(ex: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from _scale_out import cpu_bound

    import desic
    from desic.testing import FakeLM

    n = len(rows)
    lm = FakeLM(default="a", latency=0.05)
    log("cpu-bound: warm-up")
    desic.evaluate(cpu_bound, rows[:64], "exact_match", lm=lm, executor=ex, concurrency=16)
    out: dict[str, Any] = {"parallelism_before": parallelism()}
    log(f"cpu-bound: local, {n} rows")
    local_wall, report = timed(lambda: desic.evaluate(cpu_bound, rows, "exact_match", lm=lm, concurrency=16))
    assert report.errors == 0, report
    log(f"cpu-bound: ray, {n} rows")
    ray_wall, report = timed(lambda: desic.evaluate(cpu_bound, rows, "exact_match", lm=lm, executor=ex, concurrency=16))
    assert report.errors == 0, report
    out["parallelism_after"] = parallelism()
    out["cpu_local_rows_s"] = n / local_wall
    out["cpu_ray_rows_s"] = n / ray_wall
    out["cpu_ratio"] = local_wall / ray_wall
    return out


def zero_part(ex: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from _scale_out import answer

    import desic
    from desic.testing import FakeLM

    n = len(rows)
    zero = FakeLM(default="a")
    desic.evaluate(answer, rows, "exact_match", lm=zero, executor=ex, concurrency=200)
    log(f"zero latency: local and ray, {n} rows")
    local0 = min(timed(lambda: desic.evaluate(answer, rows, "exact_match", lm=zero, concurrency=200))[0] for _ in range(3))
    ray0 = min(timed(lambda: desic.evaluate(answer, rows, "exact_match", lm=zero, executor=ex, concurrency=200))[0]
               for _ in range(3))
    return {"zero_local_s": local0, "zero_ray_s": ray0, "overhead_ms_per_example": (ray0 - local0) / n * 1000}


def lm_part(ex: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    from _scale_out import answer

    import desic
    from desic.testing import FakeLM

    n = len(rows)
    slow = FakeLM(default="a", latency=0.05)
    desic.evaluate(answer, rows, "exact_match", lm=slow, executor=ex, concurrency=200)
    log(f"lm-bound: ray, {n} rows at 50 ms, concurrency 200")
    wall = min(timed(lambda: desic.evaluate(answer, rows, "exact_match", lm=slow, executor=ex, concurrency=200))[0]
               for _ in range(3))
    ideal = n * 0.05 / 200
    return {"lm_ray_s": wall, "lm_ideal_s": ideal, "lm_ratio": wall / ideal}


def rate_part(ex: Any, rate: float, m: int) -> dict[str, Any]:
    from _scale_out import answer

    import desic
    from desic.testing import FakeOpenAIServer, Faults, allow_model_requests

    rows = [{"question": f"q{i}", "answer": "a"} for i in range(m)]
    out: dict[str, Any] = {}
    with allow_model_requests(), FakeOpenAIServer(handler=lambda req: {"output": "a"},
                                                  faults=Faults(max_rps=rate, latency=0.05)) as server:
        throttled = desic.lm("openai:fake-model", base_url=server.url, api_key="x", rps=rate, retries=0)
        desic.evaluate(answer, rows[:64], "exact_match", lm=throttled, executor=ex, concurrency=200)
        time.sleep(1.0)
        log(f"rate: ray, {m} rows against a server enforcing {rate:g}/s")
        wall, report = timed(lambda: desic.evaluate(answer, rows, "exact_match", lm=throttled, executor=ex, concurrency=200))
        out["rate_rejections"] = server.counts["rejected_rate"]
        out["rate_errors"] = report.errors
        out["rate_wall_over_ideal"] = wall / (m / rate)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="R: requests/s the server enforces")
    parser.add_argument("--rate-rows", type=int, default=2000)
    parser.add_argument("--parts", default="cpu,zero,lm,rate", help="which figures (comma-separated)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    parts = set(args.parts.split(","))

    import ray

    import desic

    path = os.pathsep.join(p for p in (str(REPO), str(BENCH), os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, runtime_env={"env_vars": {"PYTHONPATH": path}})
    n = args.rows
    rows = [{"question": f"q{i}", "answer": "a"} for i in range(n)]
    r: dict[str, Any] = {"rows": n}
    with desic.executors.Ray(workers=2) as ex:
        if "cpu" in parts:
            r.update(cpu_part(ex, rows))
        if "zero" in parts:
            r.update(zero_part(ex, rows))
        if "lm" in parts:
            r.update(lm_part(ex, rows))
        if "rate" in parts:
            r.update(rate_part(ex, args.rate, args.rate_rows))
    ray.shutdown()
    if args.json:
        print(json.dumps(r, indent=2))
        return
    print(f"scale-out on a local Ray cluster (2 workers) vs the local executor; {n} rows")
    print("figure                                  | value     | target")
    print("----------------------------------------+-----------+--------------")
    if "cpu_ratio" in r:
        print(f"machine: 2-process CPU speed-up (b/a)   | {r['parallelism_before']:.2f}/{r['parallelism_after']:.2f} | (2.00 idle)")
        print(f"cpu-bound rows/s local                  | {r['cpu_local_rows_s']:9.1f} |")
        print(f"cpu-bound rows/s ray                    | {r['cpu_ray_rows_s']:9.1f} |")
        print(f"cpu-bound throughput ratio ray/local    | {r['cpu_ratio']:9.2f} | >= 1.7 {'PASS' if r['cpu_ratio'] >= 1.7 else 'MISS'}")
    if "overhead_ms_per_example" in r:
        print(f"zero latency wall local (s)             | {r['zero_local_s']:9.3f} |")
        print(f"zero latency wall ray (s)               | {r['zero_ray_s']:9.3f} |")
        ok = r["overhead_ms_per_example"] <= 2
        print(f"ray overhead per example (ms)           | {r['overhead_ms_per_example']:9.3f} | <= 2 {'PASS' if ok else 'MISS'}")
    if "lm_ratio" in r:
        print(f"lm-bound wall ray (s), ideal {r['lm_ideal_s']:.2f}       | {r['lm_ray_s']:9.3f} |")
        print(f"lm-bound wall / ideal                   | {r['lm_ratio']:9.3f} | <= 1.2 {'PASS' if r['lm_ratio'] <= 1.2 else 'MISS'}")
    if "rate_rejections" in r:
        ok = r["rate_rejections"] == 0
        print(f"rate {args.rate:g}/s: server rejections           | {r['rate_rejections']:9d} | 0 {'PASS' if ok else 'MISS'}")
        print(f"rate {args.rate:g}/s: errors                      | {r['rate_errors']:9d} |")
        print(f"rate {args.rate:g}/s: wall / (N / R)              | {r['rate_wall_over_ideal']:9.3f} |")


if __name__ == "__main__":
    main()
