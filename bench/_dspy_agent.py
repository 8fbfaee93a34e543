"""DSPy 3.4.1's ``ReAct`` on the agent example, on the local model: run with the DSPy venv's python.

    bench/.venv-dspy/bin/python bench/_dspy_agent.py URL [--max-tokens N]

URL is the OpenAI-compatible base URL of the llama.cpp server that ``desic.lm("local")``
started (``bench/bench_agent.py`` passes it). Prints one JSON line: dev score before and
after ``BootstrapFewShot``, LM calls, seconds.

The program is ``examples/agent.py``'s in DSPy terms: the same tools (``search`` over the
same BM25 index, ``calculate``; the very functions, imported with a stand-in ``desic``
module whose decorators are no-ops), the same instruction (``ask``'s docstring), output
field and description, ``max_iters=4`` (desic's ``max_steps=4``), the same train/dev rows
and metric (``contains``, as desic's). ``BootstrapFewShot(max_bootstrapped_demos=2,
max_labeled_demos=0)`` as the example's ``bootstrap(max_demos=2, max_labeled=0)``.
Temperature 0, caches off, the ``ChatAdapter``; an answer that cannot be parsed scores 0.
"""

# no `from __future__ import annotations`: DSPy reads the signature classes' annotations as types

import argparse
import json
import re
import string
import sys
import threading
import time
import types
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
DATA = REPO / "examples" / "data"
THREADS = 4


def _import_agent() -> types.ModuleType:
    """``examples/agent.py`` with a stand-in ``desic`` (identity decorators, no desic import)."""
    stub = types.ModuleType("desic")

    def ident(fn: Any = None, **_: Any) -> Any:
        return fn if fn is not None else (lambda f: f)

    stub.signature = ident  # type: ignore[attr-defined]
    stub.pipeline = ident  # type: ignore[attr-defined]
    stub.tool = ident  # type: ignore[attr-defined]
    # the qa corpus's index, through desic's own BM25 module (as bench/_dspy_local.py does
    # for qa): both frameworks' search tools return the very same passages
    sys.path.insert(0, str(REPO / "bench"))
    from _dspy_local import _BM25Retriever

    stub.BM25Retriever = _BM25Retriever  # type: ignore[attr-defined]
    stub.events = types.ModuleType("desic.events")  # type: ignore[attr-defined]
    sys.modules["desic"] = stub
    sys.modules["desic.events"] = stub.events  # type: ignore[attr-defined]
    sys.path.insert(0, str(REPO / "examples"))
    import importlib

    return importlib.import_module("agent")


_ALL_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def _tokens(value: Any) -> list[str]:
    text = "" if value is None else str(value)
    return _ARTICLES.sub(" ", _ALL_PUNCT.sub(" ", text.casefold())).split()


def contains(label: str, got: Any) -> float:
    """desic.metrics.contains on one string field."""
    want = " ".join(_tokens(label))
    return float(bool(want) and want in " ".join(_tokens(got)))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("url")
    p.add_argument("--max-tokens", type=int, default=200)
    p.add_argument("--limit", type=int, default=None, help="first N train and dev rows only")
    args = p.parse_args()

    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    counted = [0]
    lock = threading.Lock()

    class CountingLM(dspy.LM):
        def __call__(self, *a: Any, **k: Any) -> Any:
            with lock:
                counted[0] += 1
            return super().__call__(*a, **k)

        async def acall(self, *a: Any, **k: Any) -> Any:
            with lock:
                counted[0] += 1
            return await super().acall(*a, **k)

    lm = CountingLM("openai/local", api_base=args.url, api_key="local", temperature=0.0,
                    max_tokens=args.max_tokens, cache=False)
    dspy.configure(lm=lm, adapter=dspy.ChatAdapter(), max_errors=100_000)

    agent = _import_agent()
    desc = agent.Answer.model_fields["answer"].description

    class Ask(dspy.Signature):
        question: str = dspy.InputField()
        answer: str = dspy.OutputField(desc=desc)

    sig = Ask.with_instructions(agent.ask.__doc__.strip())
    program = dspy.ReAct(sig, tools=[agent.search, agent.calculate], max_iters=4)

    def rows(name: str) -> list[Any]:
        lines = (DATA / f"{name}.jsonl").read_text().splitlines()
        return [dspy.Example(**json.loads(x)).with_inputs("question") for x in lines if x.strip()][: args.limit]

    train, dev = rows("agent_train"), rows("agent_dev")

    def metric(example: Any, pred: Any, trace: Any = None) -> Any:
        try:
            s = contains(example.answer, pred.answer)
        except Exception:  # noqa: BLE001 - an unparseable output scores 0, as in desic
            s = 0.0
        return s >= 1.0 if trace is not None else s

    def evaluate(prog: Any) -> float:
        result = dspy.Evaluate(devset=dev, metric=metric, num_threads=THREADS, display_progress=False,
                               max_errors=10 * len(dev) + 10)(prog)
        return round(float(result.score) / 100.0, 4)

    start = time.perf_counter()
    before = evaluate(program)
    before_calls = counted[0]
    t = time.perf_counter()
    compiled = dspy.BootstrapFewShot(metric=metric, max_bootstrapped_demos=2, max_labeled_demos=0).compile(
        program, trainset=train
    )
    compile_calls = counted[0] - before_calls
    compile_seconds = time.perf_counter() - t
    after = evaluate(compiled)
    print(json.dumps({
        "framework": "dspy", "program": "ReAct", "before": before, "after": after,
        "eval_calls_before": before_calls, "compile_calls": compile_calls,
        "eval_calls_after": counted[0] - before_calls - compile_calls,
        "compile_seconds": round(compile_seconds, 1), "seconds": round(time.perf_counter() - start, 1),
        "train": len(train), "dev": len(dev), "max_tokens": args.max_tokens, "dspy": dspy.__version__,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
