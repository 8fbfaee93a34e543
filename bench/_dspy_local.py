"""DSPy 3.4.1 on one shipped example, on the local model: run with the DSPy venv's python.

    bench/.venv-dspy/bin/python bench/_dspy_local.py EXAMPLE MODE URL [--adapter chat|json]

EXAMPLE is orders, triage, qa or booking; MODE is zero-shot, bootstrap (``BootstrapFewShot``),
random_search (``BootstrapFewShotWithRandomSearch``), mipro (``MIPROv2``) or knn (``KNNFewShot``: k=3 neighbours by the local model's embeddings,
``--embed-url``, then a ``BootstrapFewShot`` over them per input, as DSPy does); URL is the OpenAI-compatible base URL of the llama.cpp server that
``desic.lm("local")`` started (``bench/_local_examples.py`` passes it). Prints one JSON line:
dev score after (0..1), compile LM calls, dev-evaluation LM calls, seconds, settings.

The program is the example's, in DSPy terms: the same instruction (the desic signature's
docstring), input and output fields (names, types, descriptions; booking's output is the
same nested pydantic ``Booking``), and for qa the same two steps around the same BM25 index
(``examples/qa.py``'s ``INDEX``: question -> query, BM25 top 2 on question + query, then
question + passages -> answer). The example modules are imported with a stand-in ``desic``
module (identity decorators), so their models, docstrings and retriever are reused as they
are and desic is never imported here. The metric is desic's, ported to plain Python
(``exact_match``, ``contains``, ``field_match`` with the same normalisation); during
bootstrapping (``trace`` given) a trace counts as a demo only at score 1.0, as desic's
``threshold=1.0``. Train and dev rows are the example's jsonl files.

Settings, small like ``LOCAL_PRESETS``: temperature 0, caches off, DSPy's default
``ChatAdapter`` (``--adapter json`` for the JSONAdapter), ``max_tokens`` 64 (128 for booking's
larger JSON; free text is not grammar-constrained and the base model otherwise rambles to the
limit). The LM declares the server's structured-output support (``--no-structured`` not to),
so when the ChatAdapter cannot parse an answer, its JSONAdapter fallback sends the output's
JSON schema, which llama.cpp decodes under a grammar, as desic does from the first call.
``BootstrapFewShot(max_bootstrapped_demos=3, max_labeled_demos=3)``;
``MIPROv2(auto=None, num_candidates=3, max_bootstrapped_demos=3, max_labeled_demos=3,
num_threads=4)`` compiled with ``num_trials=4, minibatch_size=4, minibatch_full_eval_steps=4,
data_aware_proposer=False, program_aware_proposer=False`` (fewer meta-prompts the base model
must answer: one proposer call per instruction candidate), its proposer on its own LM with
``max_tokens=256`` (``MIPRO_PROPOSER``). (Earlier, with free text only, the proposer's
answer did not parse on triage and MIPROv2 stopped with ``AdapterParseError``.)

``BootstrapFewShotWithRandomSearch(max_bootstrapped_demos=3, max_labeled_demos=3,
num_candidate_programs=3, num_threads=4)`` (DSPy's own validation is the trainset).
qa: desic's ``Query.query`` and ``Answer.answer`` are capped at 80 and 60 characters
(``Field(max_length=...)``, the JSON schema's ``maxLength``, enforced by the grammar while
decoding); DSPy's free-text query and answer are cut at the same lengths before use (the
query before the search, the answer before the metric), so both are scored on what the
same field can hold. ``--uncapped`` leaves them whole (figures before 2026-12-02 10:20).

``--seed S``: the trainset is shuffled by ``random.Random(S)`` before compiling (every
optimizer walks it in order, as desic's seed orders desic's), and MIPROv2 gets ``seed=S`` (0: its default, 9);
seed 0 keeps the file's order. Zero-shot does not depend on it.

Evaluation: ``dspy.Evaluate`` with 4 threads (the server's 4 slots). ``max_errors`` is
raised so that unparseable answers score 0 (as in desic) instead of stopping the run. LM calls are counted on
every ``dspy.LM`` the run makes (task and proposer, and their copies), including the
ChatAdapter's second call in JSON when it cannot parse the first.
"""

# no `from __future__ import annotations`: DSPy reads the signature classes' annotations as types

import argparse
import json
import random
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
MAX_TOKENS = {"orders": 64, "triage": 64, "qa": 64, "booking": 128}
THREADS = 4
# MIPROv2's instruction proposer: its own LM with room for an instruction, fewer steps that
# need the base model to follow a long meta-prompt.
MIPRO_PROPOSER = {"max_tokens": 256, "data_aware_proposer": False, "program_aware_proposer": False}


class _BM25Retriever:
    """``desic.BM25Retriever`` for the DSPy side: desic's own BM25 module (``desic/_bm25.py``,
    loaded as a file: it needs only ``bm25s``), so both frameworks retrieve the very same
    passages for the same query."""

    def __init__(self, corpus: Any, *, k: int = 3, text_field: str = "text", **_: Any) -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location("_desic_bm25", REPO / "desic" / "_bm25.py")
        assert spec is not None and spec.loader is not None
        bm25 = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(bm25)
        lines = Path(corpus).read_text().splitlines()
        self.passages = [json.loads(line)[text_field] for line in lines if line.strip()]
        self.index = bm25.BM25Index(self.passages)
        self.k = k

    def search(self, query: str, k: int | None = None) -> list[str]:
        return [self.passages[i] for i in self.index.top(query, self.k if k is None else k)]


def _import_example(name: str) -> types.ModuleType:
    """The example module, with a stand-in ``desic`` so its decorators are no-ops."""
    if "desic" not in sys.modules:
        stub = types.ModuleType("desic")

        def ident(fn: Any = None, **_: Any) -> Any:
            return fn if fn is not None else (lambda f: f)

        stub.signature = ident  # type: ignore[attr-defined]
        stub.pipeline = ident  # type: ignore[attr-defined]
        stub.BM25Retriever = _BM25Retriever  # type: ignore[attr-defined]
        sys.modules["desic"] = stub
    sys.path.insert(0, str(REPO / "examples"))
    import importlib

    return importlib.import_module(name)


# --- desic's metrics, in plain Python (desic/metrics.py) -------------------------------------

_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]+$")
_ALL_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(value: Any) -> Any:
    if isinstance(value, str):
        return _PUNCT.sub("", " ".join(value.casefold().split()))
    if hasattr(value, "model_dump"):
        return normalize(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


def _data(value: Any) -> Any:
    return value.model_dump(mode="json") if hasattr(value, "model_dump") else value


def _text(value: Any) -> str:
    value = _data(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _tokens(value: Any) -> list[str]:
    return _ARTICLES.sub(" ", _ALL_PUNCT.sub(" ", _text(value).casefold())).split()


def exact_match(labels: dict[str, Any], got: dict[str, Any]) -> float:
    return float(all(k in got and normalize(v) == normalize(got[k]) for k, v in labels.items()))


def contains(labels: dict[str, Any], got: dict[str, Any]) -> float:
    for k, label in labels.items():
        want = " ".join(_tokens(label))
        if not want or want not in " ".join(_tokens(got.get(k))):
            return 0.0
    return 1.0


def _leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", out)
    else:
        out[path] = value


def field_match(labels: dict[str, Any], got: dict[str, Any]) -> float:
    want: dict[str, Any] = {}
    have: dict[str, Any] = {}
    for k, label in labels.items():
        _leaves(_data(label), k, want)
        if k in got:
            _leaves(_data(got[k]), k, have)
    if not want:
        return 1.0
    right = sum(1 for p in want if p in have and normalize(want[p]) == normalize(have[p]))
    return right / len(want)


# --- the examples as DSPy programs -----------------------------------------------------------


def build(name: str) -> tuple[Any, list[str], list[str], Any, Any]:
    """(program, input fields, label fields, metric on (labels, output dict), output dict of a prediction)."""
    import dspy

    mod = _import_example(name)
    if name == "orders":
        desc = mod.OrderRef.model_fields["order_id"].description

        class Orders(dspy.Signature):
            ticket: str = dspy.InputField()
            order_id: str = dspy.OutputField(desc=desc)

        sig = Orders.with_instructions(mod.order_ref.__doc__.strip())
        return dspy.Predict(sig), ["ticket"], ["order_id"], exact_match, lambda p: {"order_id": p.order_id}
    if name == "triage":
        team_type = mod.Route.model_fields["team"].annotation

        class Triage(dspy.Signature):
            ticket: str = dspy.InputField()
            team: team_type = dspy.OutputField()  # type: ignore[valid-type]

        sig = Triage.with_instructions(mod.route.__doc__.strip())
        return dspy.Predict(sig), ["ticket"], ["team"], exact_match, lambda p: {"team": p.team}
    if name == "qa":
        qdesc = mod.Query.model_fields["query"].description
        adesc = mod.Answer.model_fields["answer"].description
        # desic's fields cap the strings (pydantic max_length: the JSON schema's maxLength,
        # which llama.cpp's grammar enforces): DSPy's free text gets the same cut, unless
        # --uncapped (an answer of 64 tokens contains the gold words more often)
        qmax = _max_length(mod.Query, "query") if CAP[0] else None
        amax = _max_length(mod.Answer, "answer") if CAP[0] else None

        class SearchQuery(dspy.Signature):
            question: str = dspy.InputField()
            query: str = dspy.OutputField(desc=qdesc)

        class Answer(dspy.Signature):
            question: str = dspy.InputField()
            passages: str = dspy.InputField()
            answer: str = dspy.OutputField(desc=adesc)

        search_sig = SearchQuery.with_instructions(mod.search_query.__doc__.strip())
        answer_sig = Answer.with_instructions(mod.answer.__doc__.strip())
        index = mod.INDEX

        class QA(dspy.Module):
            def __init__(self) -> None:
                super().__init__()
                self.search_query = dspy.Predict(search_sig)
                self.answer = dspy.Predict(answer_sig)

            def forward(self, question: str) -> Any:
                query = (self.search_query(question=question).query or "")[:qmax]
                passages = index.search(f"{question} {query}", k=2)
                return self.answer(question=question, passages="\n".join(passages))

        return QA(), ["question"], ["answer"], contains, lambda p: {"answer": (p.answer or "")[:amax]}
    if name == "booking":
        booking_type = mod.Booking

        class Extract(dspy.Signature):
            message: str = dspy.InputField()
            booking: booking_type = dspy.OutputField()  # type: ignore[valid-type]

        sig = Extract.with_instructions(mod.extract_booking.__doc__.strip())
        fields = list(mod.Booking.model_fields)
        return (dspy.Predict(sig), ["message"], fields, field_match,
                lambda p: _data(p.booking) if p.booking is not None else {})
    raise SystemExit(f"unknown example {name!r}")


CAP = [True]  # --uncapped sets it off


def _max_length(model: Any, name: str) -> int | None:
    """A pydantic field's ``max_length`` (``Field(max_length=...)``), if it has one."""
    for item in model.model_fields[name].metadata:
        if getattr(item, "max_length", None) is not None:
            return int(item.max_length)
    return None


def _embedder(url: str) -> Any:
    """A vectorizer for ``dspy.Embedder``: the llama.cpp server's OpenAI-style embeddings."""
    import urllib.request

    import numpy as np

    def encode(texts: list[str]) -> Any:
        body = json.dumps({"input": list(texts), "model": "local"}).encode()
        req = urllib.request.Request(url.rstrip("/") + "/embeddings", body, {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=600) as resp:  # the local server
            data = json.loads(resp.read())["data"]
        return np.array([d["embedding"] for d in sorted(data, key=lambda d: d["index"])], dtype=np.float32)

    return encode


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("example", choices=("orders", "triage", "qa", "booking"))
    p.add_argument("mode", choices=("zero-shot", "bootstrap", "random_search", "mipro", "knn"))
    p.add_argument("url")
    p.add_argument("--embed-url", default=None, help="the llama.cpp embeddings server (knn's vectorizer)")
    p.add_argument("--adapter", default="chat", choices=("chat", "json"))
    p.add_argument("--max-tokens", type=int, default=None)
    p.add_argument("--no-structured", dest="structured", action="store_false",
                   help="do not declare the server's response_format support to DSPy")
    p.add_argument("--limit", type=int, default=None, help="first N train and dev rows only (for trying settings)")
    p.add_argument("--seed", type=int, default=0, help="trainset order (0: the file's) and MIPROv2's seed")
    p.add_argument("--uncapped", action="store_true",
                   help="qa: do not cut the query and answer at desic's max_length (80 / 60 characters)")
    args = p.parse_args()
    CAP[0] = not args.uncapped

    import dspy

    dspy.configure_cache(enable_disk_cache=False, enable_memory_cache=False)
    counted: list[int] = [0]
    lock = threading.Lock()

    class CountingLM(dspy.LM):
        """Counts every request (``__call__`` / ``acall``; copies count too).

        With ``--structured`` (default) it also declares what the llama.cpp server does:
        it honours ``response_format`` with a JSON schema (as a grammar). DSPy's model
        catalog cannot know that of a local model name, and without it the JSONAdapter
        (the ChatAdapter's fallback after an unparseable answer) sends no schema at all.
        """

        def __call__(self, *a: Any, **k: Any) -> Any:
            with lock:
                counted[0] += 1
            return super().__call__(*a, **k)

        async def acall(self, *a: Any, **k: Any) -> Any:
            with lock:
                counted[0] += 1
            return await super().acall(*a, **k)

        @property
        def supports_response_schema(self) -> bool:
            return args.structured or super().supports_response_schema

        @property
        def supported_params(self) -> set[str]:
            return set(super().supported_params) | ({"response_format"} if args.structured else set())

    def make_lm(max_tokens: int) -> Any:
        return CountingLM("openai/local", api_base=args.url, api_key="local", temperature=0.0,
                          max_tokens=max_tokens, cache=False)

    max_tokens = args.max_tokens or MAX_TOKENS[args.example]
    lm = make_lm(max_tokens)
    adapter = dspy.JSONAdapter() if args.adapter == "json" else dspy.ChatAdapter()
    # An answer that cannot be parsed scores 0 (as in desic) instead of halting after 10 errors.
    dspy.configure(lm=lm, adapter=adapter, max_errors=100_000)

    program, inputs, label_fields, score, output = build(args.example)
    mod = _import_example(args.example)

    def rows(path: Path) -> list[Any]:
        out = []
        for line in path.read_text().splitlines():
            if not line.strip():
                continue
            r = json.loads(line)
            if args.example == "booking":  # the label is the nested model, as one output field
                r = {"message": r["message"], "booking": mod.Booking(**{k: r[k] for k in label_fields})}
            out.append(dspy.Example(**r).with_inputs(*inputs))
        return out

    trainset = rows(DATA / f"{args.example}_train.jsonl")[: args.limit]
    devset = rows(DATA / f"{args.example}_dev.jsonl")[: args.limit]
    if args.seed:
        random.Random(args.seed).shuffle(trainset)

    def labels_of(example: Any) -> dict[str, Any]:
        if args.example == "booking":
            return _data(example.booking)
        return {k: example[k] for k in label_fields}

    def metric(example: Any, pred: Any, trace: Any = None) -> Any:
        try:
            s = score(labels_of(example), output(pred))
        except Exception:  # noqa: BLE001 - an unparseable output scores 0, as in desic
            s = 0.0
        return s >= 1.0 if trace is not None else s

    settings: dict[str, Any] = {"adapter": args.adapter, "structured": args.structured, "max_tokens": max_tokens,
                                "threads": THREADS}
    start = time.perf_counter()
    if args.mode == "bootstrap":
        opts = {"max_bootstrapped_demos": 3, "max_labeled_demos": 3}
        settings["BootstrapFewShot"] = opts
        program = dspy.BootstrapFewShot(metric=metric, **opts).compile(program, trainset=trainset)
    elif args.mode == "random_search":
        opts = {"max_bootstrapped_demos": 3, "max_labeled_demos": 3, "num_candidate_programs": 3,
                "num_threads": THREADS}
        settings["BootstrapFewShotWithRandomSearch"] = opts
        program = dspy.BootstrapFewShotWithRandomSearch(metric=metric, **opts).compile(program, trainset=trainset)
    elif args.mode == "knn":
        if not args.embed_url:
            raise SystemExit("knn needs --embed-url (the local model's embeddings server)")
        opts = {"k": 3, "max_bootstrapped_demos": 3, "max_labeled_demos": 3}
        settings["KNNFewShot"] = {**opts, "vectorizer": "the local model's embeddings (llama.cpp, mean pooling)"}
        knn = dspy.KNNFewShot(trainset=trainset, vectorizer=dspy.Embedder(_embedder(args.embed_url)),
                              metric=metric, **opts)
        program = knn.compile(program)
    elif args.mode == "mipro":
        proposer = make_lm(MIPRO_PROPOSER["max_tokens"])
        opts = {"auto": None, "num_candidates": 3, "max_bootstrapped_demos": 3, "max_labeled_demos": 3,
                "num_threads": THREADS, "data_aware_proposer": MIPRO_PROPOSER["data_aware_proposer"]}
        comp = {"num_trials": 4, "minibatch_size": 4, "minibatch_full_eval_steps": 4,
                "program_aware_proposer": MIPRO_PROPOSER["program_aware_proposer"]}
        settings["MIPROv2"] = {**opts, "prompt_model_max_tokens": MIPRO_PROPOSER["max_tokens"], **comp}
        opt = dspy.MIPROv2(metric=metric, prompt_model=proposer, task_model=lm, verbose=False, seed=args.seed or 9,
                           **{k: v for k, v in opts.items() if k != "data_aware_proposer"})
        program = opt.compile(program, trainset=trainset, data_aware_proposer=opts["data_aware_proposer"], **comp)
    compile_calls = counted[0]
    compile_seconds = time.perf_counter() - start
    result = dspy.Evaluate(devset=devset, metric=metric, num_threads=THREADS, display_progress=False,
                           max_errors=10 * len(devset) + 10)(program)
    print(json.dumps({
        "after": round(float(result.score) / 100.0, 4), "compile_calls": compile_calls,
        "eval_calls": counted[0] - compile_calls, "compile_seconds": round(compile_seconds, 1),
        "seconds": round(time.perf_counter() - start, 1), "train": len(trainset), "dev": len(devset),
        "settings": settings, "dspy": dspy.__version__, "seed": args.seed, "capped": CAP[0],
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
