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
DSPY_MODES = ("zero-shot", "bootstrap", "random_search", "knn", "mipro")
DSPY_NAMES = {"zero-shot": "zero-shot", "bootstrap": "BootstrapFewShot", "random_search": "BootstrapFewShotWithRandomSearch",
              "knn": "KNNFewShot", "mipro": "MIPROv2"}
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


def desic_example(name: str, optimizers: list[str], results: Path, concurrency: int, base_lm: Any,
                  seeds: list[int] | tuple[int, ...] = (0,), zero_shot: bool = True) -> list[dict[str, Any]]:
    from _common import LOCAL_PRESETS, compile_and_compare  # type: ignore[import-not-found]

    import desic

    pipeline, train, dev, metric = _load(name)
    lm = desic.lm("local", **SPECS[name]["lm"]) if SPECS[name]["lm"] else base_lm
    rows: list[dict[str, Any]] = []
    start = time.perf_counter()
    base = {"example": name, "framework": "desic", "train": len(train), "dev": len(dev)}
    before: float | None = None
    try:
        if not zero_shot:
            raise LookupError("zero-shot skipped")
        zero = desic.evaluate(pipeline, dev, metric, lm=lm, concurrency=concurrency)
        row = {**base, "optimizer": "zero-shot", "before": zero.score, "after": zero.score, "compile_calls": 0,
               "eval_calls": zero.usage.calls, "seconds": round(time.perf_counter() - start, 1)}
        before = zero.score
        rows.append(row)
        _write(results, row)
    except LookupError:
        pass
    except Exception as exc:  # noqa: BLE001 - recorded as the figure
        row = {**base, "optimizer": "zero-shot", **_error(exc)}
        rows.append(row)
        _write(results, row)
    for seed in seeds:
        for opt in optimizers:
            start = time.perf_counter()
            try:
                fig = compile_and_compare(pipeline, train, dev, metric, optimizer=opt, small=True, seed=seed,
                                          concurrency=concurrency, before=False, lm=lm)
                fig = {**base, **fig, "before": before, "seed": seed}
            except Exception as exc:  # noqa: BLE001 - one failing must not lose the others
                fig = {**base, "optimizer": opt, "options": LOCAL_PRESETS.get(opt), "seed": seed, **_error(exc),
                       "seconds": round(time.perf_counter() - start, 1)}
            rows.append(fig)
            _write(results, fig)
    return rows


def dspy_example(name: str, modes: list[str], results: Path, python: str, url: str, adapter: str,
                 timeout: float, embed_url: str | None = None, seeds: list[int] | tuple[int, ...] = (0,)) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    before: float | None = None
    # zero-shot does not depend on the seed: once, first (it is every other mode's "before")
    runs = [(m, 0) for m in modes if m == "zero-shot"] + [(m, s) for s in seeds for m in modes if m != "zero-shot"]
    for mode, seed in runs:
        base = {"example": name, "framework": "dspy", "optimizer": DSPY_NAMES[mode], "seed": seed}
        cmd = [python, str(BENCH / "_dspy_local.py"), name, mode, url, "--adapter", adapter, "--seed", str(seed)]
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
        dspy_timeout: float = 3600.0, desic_part: bool = True, seeds: list[int] | tuple[int, ...] = (0,),
        zero_shot: bool = True) -> list[dict[str, Any]]:
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
            rows += desic_example(name, optimizers, results, concurrency, lm, seeds, zero_shot)
        if python is not None and dspy_modes:
            modes = [m for m in dspy_modes if zero_shot or m != "zero-shot"]
            rows += dspy_example(name, modes, results, python, url, adapter, dspy_timeout, embed_url, seeds)
    return rows


def _fmt(v: Any, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def table(rows: list[dict[str, Any]]) -> str:
    """example x (framework, optimizer): dev before -> after (mean and min-max over seeds),
    compile calls and eval calls (means), seconds (sum), then each example's verdict."""
    last: dict[tuple[str, str, str, int], dict[str, Any]] = {}
    for r in rows:
        if "example" in r:
            opt = r["optimizer"]
            if r.get("framework") == "dspy" and r["example"] == "qa" and not r.get("capped"):
                opt += " (uncapped)"  # DSPy's free text not cut at desic's max_length (see _dspy_local.py)
            last[(r["example"], r.get("framework", "desic"), opt, int(r.get("seed", 0)))] = r
    groups: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for (e, f, o, _), r in sorted(last.items()):
        groups.setdefault((e, f, o), []).append(r)
    order_o = ["zero-shot", *OPTIMIZERS, *DSPY_NAMES.values()]
    order_e = list(EXAMPLES)

    def key(k: tuple[str, str, str]) -> tuple[int, int, int, bool]:
        e, f, o = k
        base = o.removesuffix(" (uncapped)")
        return (order_e.index(e) if e in order_e else 99, f != "desic", order_o.index(base) if base in order_o else 99,
                base != o)

    def mean(values: list[Any]) -> float | None:
        vals = [v for v in values if v is not None]
        return sum(vals) / len(vals) if vals else None

    head = ("example", "framework", "optimizer", "seeds", "dev before -> after (min-max)", "compile calls",
            "eval calls", "seconds")
    zero = {(e, f): float(r[-1]["after"]) for (e, f, o), r in groups.items()
            if o == "zero-shot" and r[-1].get("after") is not None}
    lines = []
    stats: dict[tuple[str, str, str], tuple[float, float, float | None, float | None]] = {}
    for k in sorted(groups, key=key):
        rs = groups[k]
        ok = [r for r in rs if "error" not in r and r.get("after") is not None]
        seeds = ",".join(str(r.get("seed", 0)) for r in rs)
        if not ok:
            score = "ERROR: " + str(rs[-1].get("error"))[:80]
            calls = None
        else:
            after = [float(r["after"]) for r in ok]
            m = sum(after) / len(after)
            spread = f" ({min(after):.3f}-{max(after):.3f})" if len(after) > 1 else ""
            errors = f" +{len(rs) - len(ok)} failed" if len(ok) < len(rs) else ""
            before = zero.get((k[0], k[1]), ok[0].get("before"))
            score = f"{_fmt(before, '.3f')} -> {m:.3f}{spread}{errors}"
            calls = mean([r.get("compile_calls") for r in ok])
            stats[k] = (m, min(after), calls, before)
        embeds = mean([r.get("compile_embeds") for r in ok]) if ok else None
        shown = _fmt(calls, ".0f") + (f" +{embeds:.0f} embed" if embeds else "")  # chat calls, as DSPy's
        lines.append((k[0], k[1], k[2], seeds, score, shown,
                      _fmt(mean([r.get("eval_calls") for r in ok]) if ok else None, ".0f"),
                      _fmt(sum(float(r.get("seconds") or 0) for r in rs), ".0f")))
    widths = [max(len(x) for x in col) for col in zip(head, *lines)]
    text = [" | ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in (head, *lines)]
    text.insert(1, "-+-".join("-" * w for w in widths))
    verdicts = []
    for e in sorted({k[0] for k in stats}, key=lambda x: order_e.index(x) if x in order_e else 99):
        mine = {k[2]: v for k, v in stats.items() if k[0] == e and k[1] == "desic" and k[2] != "zero-shot"}
        theirs = {k[2]: v for k, v in stats.items() if k[0] == e and k[1] == "dspy"
                  and k[2].removesuffix(" (uncapped)") != "zero-shot"}
        if not mine:
            continue
        uncapped = {o: v for o, v in theirs.items() if o.endswith(" (uncapped)")}
        if uncapped and len(uncapped) < len(theirs):  # like for like: the capped figures decide
            theirs = {o: v for o, v in theirs.items() if o not in uncapped}
        else:
            uncapped = {}
        best = max(mine, key=lambda o: (mine[o][0], -(mine[o][2] or 0)))  # a tie: the cheaper
        line = f"{e}: desic best {best} {mine[best][0]:.3f} ({_fmt(mine[best][2], '.0f')} calls)"
        if theirs:
            rival = max(theirs, key=lambda o: (theirs[o][0], -(theirs[o][2] or 0)))
            gap = round(round(mine[best][0], 4) - round(theirs[rival][0], 4), 9) + 0.0  # DSPy reports 4 places
            need = 0.10 if theirs[rival][0] < 0.9 else 0.0
            scored = gap >= need - 1e-9 if need else gap > 0
            mine_calls, their_calls = mine[best][2], theirs[rival][2]
            cheaper = mine_calls is None or their_calls is None or mine_calls <= their_calls
            verdict = "MET" if scored and cheaper else "NOT MET" + ("" if scored else " (score)") + (
                "" if cheaper else " (calls)")
            line += (f" vs DSPy best {rival} {theirs[rival][0]:.3f} ({_fmt(their_calls, '.0f')} calls):"
                     f" {gap * 100:+.1f} points, goal {verdict}")
            if uncapped:
                top = max(uncapped, key=lambda o: uncapped[o][0])
                line += f" (DSPy uncapped: {top} {uncapped[top][0]:.3f})"
        dev = next((r.get("dev") for r in rows if r.get("example") == e and r.get("dev")), None)
        worse = [o for o, (m, lo, _, before) in mine.items()
                 if before is not None and dev and lo < before - 1.0 / dev - 1e-9]
        line += f"; worse than zero-shot by > 1 row (any seed): {', '.join(worse) if worse else 'none'}"
        verdicts.append(line)
    return "\n".join(text + ([""] + verdicts if verdicts else []))


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
    p.add_argument("--seeds", default="0", help="compile seeds, e.g. 0,1,2 (zero-shot runs once)")
    p.add_argument("--no-zero-shot", action="store_true", help="skip the zero-shot figures (already taken)")
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
               desic_part=not args.no_desic, seeds=[int(x) for x in args.seeds.split(",") if x],
               zero_shot=not args.no_zero_shot)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
