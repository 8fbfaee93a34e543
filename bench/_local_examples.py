"""Every optimizer on every shipped example, on the embedded local model, desic beside DSPy.

Run by ``bench_compile.py --examples`` (or directly: ``python bench/_local_examples.py
--help``). For each example (orders, triage, qa, booking; in that order, the main job
first) it measures, on the example's own train/dev rows and metric:

* desic zero-shot (the uncompiled pipeline on dev), then each desic optimizer with the
  example's ``LOCAL_PRESETS`` settings (``examples/_common.py``): dev score before (the
  zero-shot figure) and after, compile LM calls, dev-evaluation LM calls, seconds;
* DSPy 3.4.1 zero-shot, ``BootstrapFewShot``, ``KNNFewShot`` (neighbours by the same model's
  embeddings) and ``MIPROv2`` on an equivalent program, run
  by ``bench/_dspy_local.py`` with the DSPy virtualenv's python (desic never imports DSPy),
  against the very llama.cpp server desic started (its OpenAI-compatible URL), so both
  frameworks share one model process, one model file and the same sampling (temperature 0).

One model process runs at a time: figures are taken one after the other. Each figure is
appended to ``--results`` (JSON lines) as soon as it is known, so a long run can be read
while it goes; one (example, optimizer) failing records its error and the run goes on. The
first line of a run records the server URL (``{"event": "server", ...}``), so DSPy can be
tried by hand against the same server while the run goes. ``--table FILE`` prints the
table of a results file (the last figure of each (example, framework, optimizer) wins).

The desic LM is ``desic.lm("local")`` with the example's own options (orders:
``max_tokens=32``, as ``examples/orders.py`` uses); every optimizer and evaluation uses
``concurrency=4`` (the server has one slot by default, deterministic: requests queue).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import traceback
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
EXAMPLES = ("orders", "triage", "qa", "booking")
OPTIMIZERS = ("bootstrap", "knn", "random_search", "beam", "genetic", "mipro", "reflective")
DSPY_MODES = ("zero-shot", "bootstrap", "knn", "mipro")
DSPY_NAMES = {"zero-shot": "zero-shot", "bootstrap": "BootstrapFewShot", "knn": "KNNFewShot", "mipro": "MIPROv2"}
# The example's pipeline, metric name and LM options (as the example's own main uses them).
SPECS: dict[str, dict[str, Any]] = {
    "orders": {"pipeline": "extract", "metric": "exact_match", "lm": {"max_tokens": 32}},
    "triage": {"pipeline": "triage", "metric": "exact_match", "lm": {}},
    "qa": {"pipeline": "qa", "metric": "contains", "lm": {}},
    "booking": {"pipeline": "booking", "metric": "field_match", "lm": {}},
}


def _write(results: Path, row: dict[str, Any]) -> None:
    with results.open("a") as fh:
        fh.write(json.dumps(row, default=str) + "\n")
    print(json.dumps(row, default=str), file=sys.stderr, flush=True)


def _load(name: str) -> tuple[Any, list[Any], list[Any], Any]:
    import importlib

    import desic

    mod = importlib.import_module(name)
    spec = SPECS[name]
    train = desic.load_dataset(mod.DATA / f"{name}_train.jsonl")
    dev = desic.load_dataset(mod.DATA / f"{name}_dev.jsonl")
    return getattr(mod, spec["pipeline"]), train, dev, getattr(desic.metrics, spec["metric"])


def _error(exc: BaseException) -> dict[str, Any]:
    return {"error": f"{type(exc).__name__}: {exc}"[:500], "traceback": traceback.format_exc()[-4000:]}


def desic_example(name: str, optimizers: list[str], results: Path, concurrency: int, base_lm: Any) -> list[dict[str, Any]]:
    from _common import LOCAL_PRESETS, compile_and_compare  # type: ignore[import-not-found]

    import desic

    pipeline, train, dev, metric = _load(name)
    lm = desic.lm("local", **SPECS[name]["lm"]) if SPECS[name]["lm"] else base_lm
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    base = {"example": name, "framework": "desic", "train": len(train), "dev": len(dev)}
    try:
        zero = desic.evaluate(pipeline, dev, metric, lm=lm, concurrency=concurrency)
        row = {**base, "optimizer": "zero-shot", "before": zero.score, "after": zero.score, "compile_calls": 0,
               "eval_calls": zero.usage.calls, "seconds": round(time.perf_counter() - start, 1)}
        before: float | None = zero.score
    except Exception as exc:  # noqa: BLE001 - recorded as the figure
        row = {**base, "optimizer": "zero-shot", **_error(exc)}
        before = None
    rows.append(row)
    _write(results, row)
    for opt in optimizers:
        start = time.perf_counter()
        try:
            fig = compile_and_compare(pipeline, train, dev, metric, optimizer=opt, small=True,
                                      concurrency=concurrency, before=False, lm=lm)
            fig = {**base, **fig, "before": before}
        except Exception as exc:  # noqa: BLE001 - one failing must not lose the others
            fig = {**base, "optimizer": opt, "options": LOCAL_PRESETS.get(opt), **_error(exc),
                   "seconds": round(time.perf_counter() - start, 1)}
        rows.append(fig)
        _write(results, fig)
    return rows


def dspy_example(name: str, modes: list[str], results: Path, python: str, url: str, adapter: str,
                 timeout: float, embed_url: str | None = None) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    before: float | None = None
    for mode in modes:
        base = {"example": name, "framework": "dspy", "optimizer": DSPY_NAMES[mode]}
        cmd = [python, str(BENCH / "_dspy_local.py"), name, mode, url, "--adapter", adapter]
        if embed_url is not None:
            cmd += ["--embed-url", embed_url]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=False, timeout=timeout)
            lines = [ln for ln in proc.stdout.strip().splitlines() if ln.startswith("{")]
            if proc.returncode != 0 or not lines:
                err = [ln for ln in proc.stderr.strip().splitlines() if ln.strip()]
                row = {**base, "error": err[-1] if err else f"exit {proc.returncode}", "stderr": proc.stderr[-4000:]}
            else:
                row = {**base, **json.loads(lines[-1])}
        except subprocess.TimeoutExpired:
            row = {**base, "error": f"timed out after {timeout:.0f}s"}
        row.setdefault("seconds", round(time.perf_counter() - start, 1))
        if mode == "zero-shot" and "after" in row:
            before = row["after"]
        if "after" in row:
            row["before"] = before if mode != "zero-shot" else row["after"]
        rows.append(row)
        _write(results, row)
    return rows


def ensure_optuna(python: str) -> None:
    """DSPy's MIPROv2 needs ``optuna`` (the ``dspy[optuna]`` extra), which ``pip install dspy`` lacks."""
    if subprocess.run([python, "-c", "import optuna"], capture_output=True, check=False).returncode != 0:
        print("[bench] pip install optuna into the DSPy venv (MIPROv2 needs it)", file=sys.stderr, flush=True)
        subprocess.run([python, "-m", "pip", "install", "-q", "optuna>=3.4.0"], check=False, stdout=sys.stderr)


def ensure_packages(python: str, examples: list[str], modes: list[str] | tuple[str, ...]) -> None:
    """What the DSPy venv needs beyond ``pip install dspy``: numpy for ``KNNFewShot``, and
    ``bm25s`` for qa (its retriever is desic's own BM25, ``desic/_bm25.py``)."""
    wanted = {"numpy": "numpy"} if "knn" in modes else {}
    if "qa" in examples:
        wanted.update(numpy="numpy", bm25s="bm25s>=0.2.6")
    for module, requirement in wanted.items():
        if subprocess.run([python, "-c", f"import {module}"], capture_output=True, check=False).returncode != 0:
            print(f"[bench] pip install {requirement} into the DSPy venv", file=sys.stderr, flush=True)
            subprocess.run([python, "-m", "pip", "install", "-q", requirement], check=False, stdout=sys.stderr)


def run(examples: list[str], optimizers: list[str], results: Path, concurrency: int = 4, *,
        dspy_modes: list[str] | tuple[str, ...] = DSPY_MODES, python: str | None = None, adapter: str = "chat",
        dspy_timeout: float = 3600.0, desic_part: bool = True) -> list[dict[str, Any]]:
    """desic (and DSPy, when ``python`` is its interpreter) on each example; rows as they come."""
    sys.path.insert(0, str(REPO / "examples"))
    sys.path.insert(0, str(BENCH))
    import importlib

    import desic

    # Import everything now: a long run must not pick up half-edited modules later.
    for module in ("compile", "evaluate", "metrics", "budget", *(f"optimize.{o}" for o in OPTIMIZERS)):
        importlib.import_module(f"desic.{module}")
    importlib.import_module("_common")
    for name in examples:
        importlib.import_module(name)

    results.parent.mkdir(parents=True, exist_ok=True)
    if python is not None and "mipro" in dspy_modes:
        ensure_optuna(python)
    if python is not None and dspy_modes:
        ensure_packages(python, examples, dspy_modes)
    lm = desic.lm("local")
    url = lm._endpoint()  # starts the one llama.cpp server; DSPy reaches it here (OpenAI-compatible)
    # KNNFewShot's vectorizer: the same model's embeddings (a second server, started only for it)
    embed_url = lm._embed_endpoint() if python is not None and "knn" in dspy_modes else None
    _write(results, {"event": "server", "url": url, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                     "examples": examples, "optimizers": optimizers, "dspy": python is not None})
    rows: list[dict[str, Any]] = []
    for name in examples:
        if desic_part:
            rows += desic_example(name, optimizers, results, concurrency, lm)
        if python is not None and dspy_modes:
            rows += dspy_example(name, list(dspy_modes), results, python, url, adapter, dspy_timeout, embed_url)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """example x (framework, optimizer): dev before -> after, compile calls, eval calls, seconds."""
    last: dict[tuple[str, str, str], dict[str, Any]] = {}
    for r in rows:
        if "example" in r:
            last[(r["example"], r.get("framework", "desic"), r["optimizer"])] = r
    order_o = ["zero-shot", *OPTIMIZERS, "BootstrapFewShot", "KNNFewShot", "MIPROv2"]
    order_e = list(EXAMPLES)

    def key(k: tuple[str, str, str]) -> tuple[int, int, int]:
        e, f, o = k
        return (order_e.index(e) if e in order_e else 99, f != "desic", order_o.index(o) if o in order_o else 99)

    head = ("example", "framework", "optimizer", "dev before -> after", "compile calls", "eval calls", "seconds")
    lines = []
    for k in sorted(last, key=key):
        r = last[k]
        if "error" in r:
            score = "ERROR: " + str(r["error"])[:90]
        else:
            score = f"{_fmt(r.get('before'), '.3f')} -> {_fmt(r.get('after'), '.3f')}"
        lines.append((k[0], k[1], k[2], score, _fmt(r.get("compile_calls"), "d"), _fmt(r.get("eval_calls"), "d"),
                      _fmt(r.get("seconds"), ".0f")))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    text = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *lines)]
    text.insert(1, "-+-".join("-" * w for w in widths))
    return "\n".join(text)


def read(path: Path) -> list[dict[str, Any]]:
    return [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--results", default=str(BENCH / "results" / "local.jsonl"), help="JSON lines, appended")
    p.add_argument("--examples", default=",".join(EXAMPLES))
    p.add_argument("--optimizers", default=",".join(OPTIMIZERS), help="desic optimizers ('' for none)")
    p.add_argument("--dspy", default=",".join(DSPY_MODES), help="DSPy modes ('' for none)")
    p.add_argument("--no-desic", action="store_true", help="DSPy only")
    p.add_argument("--dspy-adapter", default="chat", choices=("chat", "json"))
    p.add_argument("--dspy-timeout", type=float, default=3600.0, help="seconds per DSPy figure")
    p.add_argument("--no-install", action="store_true", help="never create the DSPy venv")
    p.add_argument("--table", metavar="FILE", help="only print the table of a results file")
    args = p.parse_args()
    if args.table:
        print(table(read(Path(args.table))))
        return 0
    sys.path.insert(0, str(BENCH))
    modes = [m for m in args.dspy.split(",") if m]
    python = None
    if modes:
        from bench_core import dspy_python

        python = dspy_python(install=not args.no_install)
    results = Path(args.results)
    rows = run([e for e in args.examples.split(",") if e], [o for o in args.optimizers.split(",") if o], results,
               dspy_modes=modes, python=python, adapter=args.dspy_adapter, dspy_timeout=args.dspy_timeout,
               desic_part=not args.no_desic)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
