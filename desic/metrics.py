"""Metrics: ``metric(example, output) -> float | bool | (score, feedback)``.

A metric compares a pipeline's output with a row's labels and returns a score in 0..1,
optionally with feedback text (which reflective optimizers read to fix instructions).

- ``exact_match``: every labelled field equals the output's (normalised);
- ``token_f1`` (alias ``f1``): SQuAD-style token overlap of label and output text;
- ``contains``: the label text occurs in the output text;
- ``field_match``: for structured (pydantic) outputs, the fraction of fields (nested ones
  flattened to dotted paths) that equal the labels, with feedback naming the wrong ones;
- ``semantic_similarity(...)``: cosine similarity of label and output embeddings, through
  the LM's ``embed``;
- ``judge(criteria)``: an LLM judge declared as a desic signature (score 0..1 + reason).

The last two call a language model, so they are objects with an async ``acall`` as well
as the plain call; evaluation awaits ``acall`` on its own event loop. Their LM usage is
added to the run being scored (the engine scores inside that run's scope), so budgets and
reports include it.
"""

from __future__ import annotations

import inspect
import math
import re
import string
import typing
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from enum import Enum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, TypeAdapter, ValidationError

from .errors import ConfigError, DataError

if TYPE_CHECKING:
    from .data import Example
    from .lm import LM, Usage
    from .pipeline import Pipeline

__all__ = [
    "Metric",
    "ascore",
    "check_labels",
    "contains",
    "exact_match",
    "f1",
    "field_match",
    "judge",
    "metric_key",
    "named",
    "normalize",
    "resolve_metric",
    "score_of",
    "semantic_similarity",
    "token_f1",
]

Metric = Callable[["Example", Any], Any]

_ALL_PUNCT = re.compile(f"[{re.escape(string.punctuation)}]")
_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(value: Any) -> Any:
    """Case-, space- and trailing-punctuation-insensitive form of a value."""
    if isinstance(value, str):
        return " ".join(value.casefold().split()).rstrip(string.punctuation)
    if isinstance(value, BaseModel):
        return normalize(value.model_dump(mode="json"))
    if isinstance(value, dict):
        return {k: normalize(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [normalize(v) for v in value]
    return value


def _as_data(output: Any) -> Any:
    return output.model_dump(mode="json") if isinstance(output, BaseModel) else output


def _targets(labels: Mapping[str, Any], fields: Sequence[str] | None) -> list[tuple[str, str | None]] | None:
    """Which labels ``_pairs`` compares with which output field, or None when none can be.

    ``fields`` are the structured output's field names (None: a bare output). Each pair is
    (label, output field), the field None when the label holds the whole output. Decided
    from the label names and the output's shape alone, so the same rules serve scoring
    (``_pairs``) and the check of a dataset before any LM call (``check_labels``).
    """
    if fields is not None:
        shared = [k for k in labels if k in fields]
        if shared:
            return [(k, k) for k in shared]
        if len(labels) == 1:
            (key, label), = labels.items()
            if isinstance(label, dict) and set(label) & set(fields):
                return [(key, None)]  # the whole structured output under one label
            if len(fields) == 1:
                return [(key, fields[0])]
        return None
    if len(labels) == 1:
        return [(next(iter(labels)), None)]
    for key in ("output", "answer"):
        if key in labels:
            return [(key, None)]
    return None


def _pairs(example: Example, output: Any, who: str = "exact_match") -> list[tuple[str, Any, Any]]:
    """(field, label, output value) for each labelled field the output answers.

    The field is ``""`` when one label holds the whole structured output.
    """
    labels = example.labels
    if not labels:
        raise DataError(f"{who} needs labels: give each row its expected output fields")
    data = _as_data(output)
    if isinstance(data, dict):
        targets = _targets(labels, list(data))
        if targets is None:
            raise DataError(
                f"{who}: no label among {sorted(labels)} matches an output field of {sorted(data)}"
            )
        return [(key, labels[key], data[f]) if f is not None else ("", labels[key], data) for key, f in targets]
    targets = _targets(labels, None)
    if targets is None:
        raise DataError(f"{who}: the output is a bare value but the row has labels {sorted(labels)}")
    return [(key, labels[key], data) for key, _ in targets]


def exact_match(example: Example, output: Any) -> float:
    """1.0 when every labelled field equals the output's (normalised), else 0.0."""
    for _, label, value in _pairs(example, output):
        if normalize(label) != normalize(value):
            return 0.0
    return 1.0


# --- text overlap -------------------------------------------------------------------------


def _text(value: Any) -> str:
    value = _as_data(value)
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        return " ".join(_text(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return " ".join(_text(v) for v in value)
    return "" if value is None else str(value)


def _tokens(value: Any) -> list[str]:
    text = _ALL_PUNCT.sub(" ", _text(value).casefold())
    return _ARTICLES.sub(" ", text).split()


def _f1(label: Any, output: Any) -> float:
    want, got = _tokens(label), _tokens(output)
    if not want or not got:
        return float(want == got)
    common = sum((Counter(want) & Counter(got)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(got), common / len(want)
    return 2 * precision * recall / (precision + recall)


def token_f1(example: Example, output: Any) -> float:
    """Token-overlap F1 of label and output text (lower-cased, no punctuation or articles),
    averaged over the labelled fields. Partial credit for free-text answers."""
    pairs = _pairs(example, output, "token_f1")
    return sum(_f1(a, b) for _, a, b in pairs) / len(pairs)


f1 = token_f1


def contains(example: Example, output: Any) -> float:
    """1.0 when every label's text occurs in the output's text (normalised), else 0.0.

    For answers that must mention something ("Paris") but may say more.
    """
    for _, label, value in _pairs(example, output, "contains"):
        want = " ".join(_tokens(label))
        if not want or want not in " ".join(_tokens(value)):
            return 0.0
    return 1.0


# --- structured outputs -------------------------------------------------------------------


def _leaves(value: Any, path: str, out: dict[str, Any]) -> None:
    if isinstance(value, dict) and value:
        for k, v in value.items():
            _leaves(v, f"{path}.{k}" if path else str(k), out)
    elif isinstance(value, (list, tuple)) and value and any(isinstance(v, (dict, list)) for v in value):
        for i, v in enumerate(value):
            _leaves(v, f"{path}[{i}]", out)
    else:
        out[path] = value


def field_match(example: Example, output: Any) -> tuple[float, str | None]:
    """Fraction of labelled fields the output gets right, with feedback naming the wrong ones.

    Nested models are compared leaf by leaf (``customer.name``, ``items[1].qty``); lists of
    plain values compare as a whole. A field that is missing or extra counts as wrong.
    """
    want: dict[str, Any] = {}
    got: dict[str, Any] = {}
    for key, label, value in _pairs(example, output, "field_match"):
        _leaves(_as_data(label), key, want)
        _leaves(_as_data(value), key, got)
    paths = list(want) + [p for p in got if p not in want and _is_extra(p, want)]
    if not paths:
        return 1.0, None
    wrong: list[str] = []
    for p in paths:
        if p not in want:
            wrong.append(f"{p}: unexpected {got[p]!r}")
        elif p not in got:
            wrong.append(f"{p}: missing (expected {want[p]!r})")
        elif normalize(want[p]) != normalize(got[p]):
            wrong.append(f"{p}: expected {want[p]!r}, got {got[p]!r}")
    score = 1.0 - len(wrong) / len(paths)
    if not wrong:
        return score, None
    return score, f"{len(wrong)} of {len(paths)} fields wrong: " + "; ".join(wrong)


def _is_extra(path: str, want: dict[str, Any]) -> bool:
    """An output leaf counts as extra only inside a list the labels also have (extra items)."""
    head = path.rsplit("[", 1)[0]
    return "[" in path and any(p.startswith(head + "[") for p in want)


# --- metrics by name ----------------------------------------------------------------------


def named() -> dict[str, Metric]:
    """The metrics that can be given by name (``evaluate(..., "exact_match")``, ``--metric``)."""
    return {"exact_match": exact_match, "token_f1": token_f1, "f1": token_f1, "contains": contains, "field_match": field_match}


def resolve_metric(metric: Metric | str | None) -> Metric:
    """``metric`` itself, or the metric of that name; a ``ConfigError`` for anything else.

    Checked before any LM call: a metric that cannot be called as ``metric(example,
    output)`` would otherwise fail on every row after every row's LM calls were paid for.
    """
    names = ", ".join(sorted(named()))
    if isinstance(metric, str):
        found = named().get(metric.strip())
        if found is None:
            raise ConfigError(
                f"unknown metric {metric!r}; the metrics known by name are {names} "
                "(or pass a function metric(example, output) -> float)"
            )
        return found
    if not callable(metric):
        raise ConfigError(
            f"metric={metric!r:.60} is not a metric: pass a function metric(example, output) -> float "
            f"or the name of one of {names}"
        )
    try:
        params = inspect.signature(metric)
    except (TypeError, ValueError):
        return metric  # a builtin or C callable: nothing to check
    try:
        params.bind(None, None)
    except TypeError:
        raise ConfigError(
            f"metric {getattr(metric, '__qualname__', metric)!r} takes ({', '.join(params.parameters)}); "
            "a metric is called as metric(example, output) and returns a score"
        ) from None
    return metric


# --- labels against the output, before any LM call ----------------------------------------


def _pairing(metric: Metric | None) -> bool:
    """Whether ``metric`` compares labels with the output by ``_pairs``' rules."""
    return metric in (exact_match, token_f1, contains, field_match) or isinstance(metric, SemanticSimilarity)


def _strip_annotated(tp: Any) -> Any:
    while typing.get_origin(tp) is typing.Annotated:
        tp = typing.get_args(tp)[0]
    return tp


_BARE_ORIGINS = (list, tuple, set, frozenset)


def _is_bare(tp: Any) -> bool:
    """An output that is never a dict or a model at run time (``_pairs`` treats it as one value)."""
    origin = typing.get_origin(tp)
    if tp in (str, int, float, bool) or tp in _BARE_ORIGINS or origin in _BARE_ORIGINS:
        return True
    if origin is typing.Literal:
        return True
    return isinstance(tp, type) and issubclass(tp, Enum)


class _Shape:
    """What a pipeline's output looks like to ``_pairs``: its fields (None when bare) and how
    to validate a label of one field (or of the whole output)."""

    def __init__(self, name: str, model: type[BaseModel] | None, bare: Any = None, bare_field: str | None = None):
        self.name = name
        self.model = model if bare is None else None
        self.bare = bare
        self.bare_field = bare_field  # a signature's wrapper field ("output"): labels of that name are demos
        self.fields: list[str] | None = None
        if self.model is not None:
            self.fields = [*self.model.model_fields, *self.model.model_computed_fields]
        self._adapters: dict[str | None, TypeAdapter[Any]] = {}

    @classmethod
    def of(cls, pipe: Pipeline[..., Any]) -> _Shape | None:
        sig = pipe.signature
        if sig is not None:
            field = sig.spec.output_field
            if field is None:
                return cls(pipe.name, sig.output_model)
            info = sig.output_model.model_fields[field]
            tp = _strip_annotated(info.annotation)
            if not _is_bare(tp):
                return None  # e.g. dict[str, int]: a dict whose keys only the run shows
            return cls(pipe.name, None, typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation, field)
        tp = _strip_annotated(pipe.output_type)
        if isinstance(tp, type) and issubclass(tp, BaseModel):
            return cls(pipe.name, tp)
        if tp is not None and _is_bare(tp):
            return cls(pipe.name, None, pipe.output_type)
        return None  # not annotated, Any, a union, a dict, ...: only the run shows the output

    def describe(self) -> str:
        if self.fields is None:
            return f"the output of {self.name} is a single value"
        return f"the output fields of {self.name} are {', '.join(self.fields) or '(none)'}"

    def demo_targets(self, labels: Mapping[str, Any]) -> list[tuple[str, str | None]]:
        """The labels a demo would show as the output (see ``optimize.demos.labeled_demo``)."""
        if self.model is not None:
            return [(k, k) for k in labels if k in self.model.model_fields]
        if self.bare_field is not None:
            if self.bare_field in labels:
                return [(self.bare_field, None)]
            if len(labels) == 1:
                return [(next(iter(labels)), None)]
        return []

    def _adapter(self, field: str | None) -> TypeAdapter[Any] | None:
        if field not in self._adapters:
            if field is None:
                if self.bare is None:
                    return None
                self._adapters[None] = TypeAdapter(self.bare)
            else:
                assert self.model is not None
                info = self.model.model_fields.get(field)
                if info is None:
                    return None  # a computed field: nothing to validate against
                tp: Any = typing.Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
                self._adapters[field] = TypeAdapter(tp)
        return self._adapters[field]

    def problem(self, field: str | None, value: Any, *, tolerant: bool) -> tuple[str | None, str] | None:
        """(output field, what is wrong) when ``value`` can never be that field's value."""
        if field is None and self.model is not None:  # one label holding the whole output
            if not isinstance(value, dict):
                return None
            for key, item in value.items():
                if isinstance(key, str) and key in self.model.model_fields:
                    found = self.problem(key, item, tolerant=tolerant)
                    if found is not None:
                        return found
            return None
        adapter = self._adapter(field)
        if adapter is None:
            return None
        try:
            adapter.validate_python(value)
        except ValidationError as exc:
            if field is not None and self._model_accepts(field, value):
                return None  # the model's own field validators take it
            if tolerant and _equal_to_a_choice(value, adapter):
                return None
            err = exc.errors()[0] if exc.errors() else None
            if err is None:
                return field, str(exc)
            where = ".".join(str(p) for p in err.get("loc", ()))
            return field, (f"{where}: " if where else "") + str(err["msg"])
        return None

    def _model_accepts(self, field: str, value: Any) -> bool:
        assert self.model is not None
        try:
            self.model.__pydantic_validator__.validate_assignment(self.model.model_construct(), field, value)
        except Exception:  # noqa: BLE001 - any failure means "not accepted"
            return False
        return True


def _equal_to_a_choice(value: Any, adapter: TypeAdapter[Any]) -> bool:
    """Whether ``value`` is one of the type's literal choices once normalised (``"Billing "``
    for ``Literal["billing", ...]``): ``exact_match`` and ``field_match`` count it as equal."""
    if not isinstance(value, str):
        return False
    try:
        schema = adapter.json_schema()
    except Exception:  # noqa: BLE001 - no schema: nothing to compare with
        return False
    choices: list[Any] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            choices.extend(node.get("enum", ()))
            if "const" in node:
                choices.append(node["const"])
            for child in node.values():
                walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk(schema)
    want = normalize(value)
    return any(isinstance(c, str) and normalize(c) == want for c in choices)


def check_labels(
    pipe: Pipeline[..., Any],
    examples: Iterable[Example],
    metric: Metric | None,
    *,
    what: str = "devset",
    demos: bool = False,
) -> None:
    """Refuse, before any LM call, labels that can never match ``pipe``'s output.

    Only when the output type is known (a signature's output model, or a ``@pipeline``
    annotated with a pydantic model or a bare type such as ``str``, ``int``, ``Literal``,
    ``list[...]``); otherwise nothing is checked. The rules are ``_pairs``' own, so
    whatever a built-in metric can score is accepted:

    - with a metric that compares labels with output fields (``exact_match``, ``token_f1``,
      ``contains``, ``field_match``, ``semantic_similarity``) every row needs a label that
      ``_pairs`` pairs with the output: a label named like an output field; a single label
      holding the whole output or matching a single-field or bare output; ``output`` or
      ``answer`` for a bare output. A custom metric may read labels its own way: not checked;
    - with ``exact_match`` or ``field_match`` (equality), the paired labels' values must
      validate against the output field's type (a ``Literal`` choice differing only in
      case or spaces counts, as those metrics normalise before comparing);
    - with ``demos`` (a trainset: its labels become demos shown to the model as outputs),
      the labels a demo would show (those named like an output field, or a bare
      signature's single label) must validate exactly, whatever the metric.

    ``DataError`` names the row, the labels and the output fields, or the row, the field
    and the validation message.
    """
    shape = _Shape.of(pipe)
    pairing = _pairing(metric)
    if shape is None or not (pairing or demos):
        return
    equality = metric in (exact_match, field_match)
    who = getattr(metric, "__name__", "the metric") if not isinstance(metric, SemanticSimilarity) else "semantic_similarity"
    plans: dict[tuple[str, ...], list[tuple[str, str | None]]] = {}  # by label names
    valid: set[tuple[str | None, type, Any]] = set()  # (field, type, value) seen to validate
    for i, example in enumerate(examples):
        labels = example.labels
        names = tuple(labels)
        # Which labels to validate depends on their names only, except for a single dict
        # label of a structured output (it may hold the whole output).
        memo = shape.fields is None or len(names) != 1 or not isinstance(labels[names[0]], dict)
        plan = plans.get(names) if memo else None
        if plan is None:
            plan = _plan(shape, labels, pairing=pairing, equality=equality, demos=demos, who=who, what=what, row=i)
            if memo:
                plans[names] = plan
        for key, field in plan:
            value = labels[key]
            try:
                seen = (field, type(value), value)
                if seen in valid:
                    continue
            except TypeError:  # unhashable: validated every time
                seen = None
            found = shape.problem(field, value, tolerant=not demos)
            if found is None:
                if seen is not None:
                    valid.add(seen)
                continue
            out_field, message = found
            target = f"output field {out_field!r}" if out_field is not None else "the output"
            raise DataError(
                f"{what} row {i}: label {key!r} = {value!r:.60} can never be {target} of {pipe.name}: {message}",
                row=i,
                field=key,
            )


def _plan(
    shape: _Shape, labels: Mapping[str, Any], *, pairing: bool, equality: bool, demos: bool, who: str, what: str, row: int
) -> list[tuple[str, str | None]]:
    """The (label, output field) pairs whose values ``check_labels`` validates for a row;
    ``DataError`` when the metric can pair no label with the output."""
    checked: list[tuple[str, str | None]] = []
    if pairing:
        if not labels:
            raise DataError(
                f"{what} row {row} has no labels, and {who} needs labels to compare the output with: "
                f"give each row its expected output ({shape.describe()})",
                row=row,
            )
        targets = _targets(labels, shape.fields)
        if targets is None:
            if shape.fields is None:
                hint = "keep a single label, or name the expected one 'output' or 'answer'"
            else:
                hint = "name the labels like the output fields, or check that this dataset is for this pipeline"
            raise DataError(
                f"{what} row {row}: no label among {sorted(labels)} can match the output ({shape.describe()}); "
                f"{who} compares labels with the output fields of the same name: {hint}",
                row=row,
            )
        if equality:
            checked += targets
    if demos:
        checked += shape.demo_targets(labels)
    return list(dict.fromkeys(checked))


# --- scores and LM-backed metrics ---------------------------------------------------------


def score_of(result: Any) -> tuple[float, str | None]:
    """(score, feedback) from whatever a metric returned."""
    if isinstance(result, tuple) and len(result) == 2:
        score, feedback = result
        return _number(score), str(feedback) if feedback is not None else None
    return _number(result), None


def _number(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if value is None:
        raise DataError("the metric returned None; return a float, a bool or (score, feedback)")
    return float(value)


async def ascore(metric: Metric, example: Example, output: Any) -> tuple[float, str | None]:
    """Score with ``metric`` from async code: awaits ``metric.acall`` or an async metric."""
    acall = getattr(metric, "acall", None)
    result = acall(example, output) if acall is not None else metric(example, output)
    if type(result) not in _PLAIN_SCORES and inspect.isawaitable(result):
        result = await result
    return score_of(result)


_PLAIN_SCORES = frozenset((float, int, bool, tuple))


def metric_key(metric: Metric | None) -> str:
    """A stable name for a metric (part of the record key of scored evaluations)."""
    if metric is None:
        return ""
    key = getattr(metric, "key", None)
    if isinstance(key, str):
        return key
    fn = getattr(metric, "__func__", metric)
    return f"{getattr(fn, '__module__', '?')}:{getattr(fn, '__qualname__', type(fn).__qualname__)}"


def _report(usage: Usage) -> None:
    """Add an LM-backed metric's usage to the run it scores (if it scores one)."""
    from .runtime import current_run

    run = current_run()
    if run is not None:
        run.add_usage(usage)


def _pick_lm(lm: LM | str | None) -> LM:
    from .lm import lm as make_lm
    from .runtime import current_lm

    if isinstance(lm, str):
        return make_lm(lm)
    return lm if lm is not None else current_lm()


class _LMMetric:
    """Shared by LM-backed metrics: a sync call for plain code, ``acall`` for evaluation."""

    key: str

    async def acall(self, example: Example, output: Any) -> tuple[float, str | None]:  # pragma: no cover
        raise NotImplementedError

    def __call__(self, example: Example, output: Any) -> tuple[float, str | None]:
        from ._aio import run_sync

        return run_sync(self.acall(example, output))


class SemanticSimilarity(_LMMetric):
    """Cosine similarity of label and output embeddings (``lm.embed``), clipped to 0..1.

    With ``threshold`` the score is 1.0 at or above it and 0.0 below.
    """

    def __init__(self, lm: LM | str | None = None, *, threshold: float | None = None):
        self.lm = lm
        self.threshold = threshold
        self.key = f"desic.metrics:semantic_similarity:{threshold}"

    async def acall(self, example: Example, output: Any) -> tuple[float, str | None]:
        lm = _pick_lm(self.lm)
        embed = getattr(lm, "embed", None)
        if embed is None:
            raise ConfigError(
                f"semantic_similarity needs an LM with embeddings; {getattr(lm, 'name', lm)!r} has no "
                "embed(texts): pass one, e.g. semantic_similarity(lm=desic.lm('openai:text-embedding-3-small'))"
            )
        pairs = _pairs(example, output, "semantic_similarity")
        texts: list[str] = []
        for _, label, value in pairs:
            texts += [_text(label), _text(value)]
        from .lm import counting_embeddings

        with counting_embeddings() as tally:
            try:
                vectors = await embed(texts)
            finally:
                _report(tally.usage)
        sims = [_cosine(vectors[2 * i], vectors[2 * i + 1]) for i in range(len(pairs))]
        sim = max(0.0, min(1.0, sum(sims) / len(sims)))
        if self.threshold is not None:
            return float(sim >= self.threshold), f"similarity {sim:.3f} (threshold {self.threshold})"
        return sim, None


def _cosine(a: Any, b: Any) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    na = math.sqrt(sum(x * x for x in a))
    nb = math.sqrt(sum(y * y for y in b))
    return dot / (na * nb) if na and nb else 0.0


def semantic_similarity(lm: LM | str | None = None, *, threshold: float | None = None) -> SemanticSimilarity:
    """A metric scoring meaning rather than wording: cosine of embeddings from ``lm.embed``.

    ``lm`` defaults to the LM in ``desic.context`` at scoring time.
    """
    return SemanticSimilarity(lm, threshold=threshold)


class Judge(_LMMetric):
    """An LLM judge: a desic signature grading the output against ``criteria``."""

    def __init__(self, criteria: str, *, lm: LM | str | None = None, threshold: float | None = None):
        from .ir import fingerprint

        if not criteria or not criteria.strip():
            raise ConfigError("judge(criteria): say what a good output is, e.g. 'answers the question politely'")
        self.criteria = criteria.strip()
        self.lm = lm
        self.threshold = threshold
        self.key = f"desic.metrics:judge:{fingerprint([self.criteria, threshold])}"

    async def acall(self, example: Example, output: Any) -> tuple[float, str | None]:
        from .render import format_value
        from .runtime import RunState, run_isolated

        sig = _judge_signature()
        inputs = {
            "criteria": self.criteria,
            "inputs": "\n".join(f"{k}: {format_value(v)}" for k, v in example.inputs.items()),
            "expected": "\n".join(f"{k}: {format_value(v)}" for k, v in example.labels.items()) or "(none given)",
            "output": format_value(_as_data(output)),
        }
        state = RunState(lm=_pick_lm(self.lm))
        try:  # its own run: never a node of the pipeline being scored
            verdict = await run_isolated(sig, inputs, state=state)
        finally:
            _report(state.usage)
        score = max(0.0, min(1.0, float(verdict.score)))
        if self.threshold is not None:
            score = float(score >= self.threshold)
        return score, verdict.reason


_judge_sig: Any = None


def _judge_signature() -> Any:
    """The judge's signature, declared on first use (keeps ``import desic.metrics`` light)."""
    global _judge_sig
    if _judge_sig is None:
        from pydantic import Field

        from .signature import signature

        class Verdict(BaseModel):
            reason: str = Field(description="one sentence: why the output does or does not meet the criteria")
            score: float = Field(ge=0.0, le=1.0, description="0 = fails the criteria, 1 = fully meets them")

        def judge(criteria: str, inputs: str, expected: str, output: str) -> Verdict:  # type: ignore[empty-body]
            """Grade the output of a task against the criteria. The expected answer, when
            given, is a reference. Give a short reason, then a score from 0 to 1."""

        judge.__annotations__["return"] = Verdict
        judge.__annotations__.update(criteria=str, inputs=str, expected=str, output=str)
        _judge_sig = signature(judge)
    return _judge_sig


def judge(criteria: str, *, lm: LM | str | None = None, threshold: float | None = None) -> Judge:
    """A metric that asks an LM whether the output meets ``criteria`` (score 0..1 + reason).

    ``lm`` defaults to the LM in ``desic.context`` at scoring time; ``threshold`` turns the
    score into pass/fail. The reason is returned as feedback.
    """
    return Judge(criteria, lm=lm, threshold=threshold)
