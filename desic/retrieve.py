"""Retrieval as a step of a pipeline: the ``Retriever`` protocol and two retrievers.

A retriever answers ``search(query, k)`` with a list of ``Passage``\\s, best first. A
``Passage`` is a ``str`` (pass it, or a list of them, straight to a signature) that also
carries the passage's ``id``, ``score`` and ``meta`` (the corpus row's other fields).

- ``BM25Retriever(corpus)``: lexical search through the ``bm25s`` library
  (``pip install 'desic[retrieval]'``), deterministic (ties to the earlier passage);
- ``EmbeddingsRetriever(corpus, lm=None)``: cosine similarity of the LM's embeddings
  (``lm.embed``; the corpus is embedded once, on first search, through the LM's cache).

A corpus is a JSONL file (one object a line, its text in ``text_field``), a JSON file
holding a list, a folder of text files (``*.txt``, ``*.md``; a passage per file, its
path as id), or a list of strings or dicts.

Inside a pipeline a search is a traced step, like a signature's call: it gets a node id
(the retriever's ``name``: ``retrieve``, ``retrieve#2``, ...), and its query and results go
into the run's trace (``kind="retrieve"``; stored with the run's records, so a resumed
compile replays them) and out as a ``retrieve`` event to every sink. A retriever holds no
optimizable settings, so it is not a node of the ``Program``. ``traced(obj)`` gives the
same tracing to any object with a ``search(query, k)`` method.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol, Self, runtime_checkable

from . import events
from ._aio import run_sync
from ._json import to_jsonable
from .errors import ConfigError, DataError
from .lm import LM, Usage, counting_embeddings
from .runtime import TraceEntry, current_lm, current_run

__all__ = [
    "BM25Retriever",
    "EmbeddingsRetriever",
    "Passage",
    "Retriever",
    "load_corpus",
    "traced",
]


class Passage(str):
    """A retrieved text: use it as the ``str`` it is; ``id``, ``score`` and ``meta``
    (the corpus row's other fields) say where it came from."""

    id: str
    score: float
    meta: dict[str, Any]

    def __new__(cls, text: str, *, id: str = "", score: float = 0.0, meta: dict[str, Any] | None = None) -> Self:
        self = super().__new__(cls, text)
        self.id = id
        self.score = score
        self.meta = meta or {}
        return self

    @property
    def text(self) -> str:
        return str.__str__(self)

    def scored(self, score: float) -> Passage:
        return Passage(self.text, id=self.id, score=score, meta=self.meta)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "text": self.text, "score": round(self.score, 6)}

    def __repr__(self) -> str:
        return f"Passage(id={self.id!r}, score={self.score:.4g}, text={self.text[:60]!r})"

    def __reduce__(self) -> Any:  # copy/deepcopy keep the fields (desic never pickles)
        return (_passage, (self.text, self.id, self.score, self.meta))


def _passage(text: str, id: str, score: float, meta: dict[str, Any]) -> Passage:
    return Passage(text, id=id, score=score, meta=meta)


@runtime_checkable
class Retriever(Protocol):
    """Anything that finds passages for a query: ``search(query, k)``, best first."""

    def search(self, query: str, k: int = 3) -> list[Passage]: ...


# --- corpora ---------------------------------------------------------------------------

_TEXT_SUFFIXES = (".txt", ".md", ".rst")


def load_corpus(
    source: str | os.PathLike[str] | Iterable[str | dict[str, Any]],
    *,
    text_field: str = "text",
    id_field: str = "id",
) -> list[Passage]:
    """The passages of ``source``: a JSONL or JSON file, a folder of text files, or a list
    of strings or dicts (a dict's ``text_field`` is the text, ``id_field`` its id, the other
    fields its ``meta``). A bad row is a ``DataError`` naming it."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in _TEXT_SUFFIXES)
            if not files:
                raise DataError(f"corpus folder {path} has no text files ({', '.join(_TEXT_SUFFIXES)})")
            return [Passage(p.read_text("utf-8"), id=p.relative_to(path).as_posix()) for p in files]
        if not path.is_file():
            raise DataError(f"corpus not found: {path} (a JSONL or JSON file, or a folder of text files)")
        text = path.read_text("utf-8")
        if path.suffix.lower() == ".jsonl":
            rows: list[Any] = []
            for n, line in enumerate(text.splitlines(), 1):
                if line.strip():
                    try:
                        rows.append(json.loads(line))
                    except json.JSONDecodeError as exc:
                        raise DataError(f"{path} line {n} is not JSON: {exc.msg}", row=n - 1) from None
        elif path.suffix.lower() == ".json":
            try:
                rows = json.loads(text)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path} is not JSON: {exc.msg} (line {exc.lineno})") from None
            if not isinstance(rows, list):
                raise DataError(f"{path} must hold a JSON list of passages (strings or objects)")
        else:
            raise DataError(f"corpus {path}: use a .jsonl or .json file, or a folder of text files")
        return _rows(rows, text_field, id_field, where=str(path))
    if isinstance(source, (bytes, dict)):
        raise DataError("a corpus is a path, or a list of strings or dicts")
    return _rows(list(source), text_field, id_field, where="corpus")


def _rows(rows: Sequence[Any], text_field: str, id_field: str, where: str) -> list[Passage]:
    out: list[Passage] = []
    for i, row in enumerate(rows):
        if isinstance(row, str):
            out.append(Passage(row, id=str(i)))
        elif isinstance(row, dict):
            text = row.get(text_field)
            if not isinstance(text, str):
                raise DataError(
                    f"{where} row {i} has no string field {text_field!r} (fields: {', '.join(map(str, row)) or 'none'}); "
                    "pass text_field= to name the field holding the text",
                    row=i,
                    field=text_field,
                )
            meta = {k: v for k, v in row.items() if k not in (text_field, id_field)}
            out.append(Passage(text, id=str(row.get(id_field, i)), meta=meta))
        else:
            raise DataError(f"{where} row {i} is {type(row).__name__}; a passage is a string or a dict", row=i)
    return out


# --- tracing ---------------------------------------------------------------------------


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ConfigError(f"search(k={k!r}): k must be a whole number 0 or more")
    return k


def _record(name: str, query: str, k: int, passages: list[Passage], started: float, error: str | None) -> None:
    state = current_run()
    node_id = state.next_name(name) if state is not None else name
    if state is not None and state.trace is not None:
        output = None if error is not None else {"passages": [p.to_dict() for p in passages]}
        state.trace.append(TraceEntry(node_id, {"query": query, "k": k}, output, [], error, "retrieve"))
    if events.active():
        events.emit(
            "retrieve",
            node=node_id,
            query=query,
            k=k,
            passages=[p.id for p in passages],
            latency=time.perf_counter() - started,
            error=error,
        )


def _charge(usage: Usage | None) -> None:
    """A search's embeddings requests, added to the run it is part of (if any)."""
    state = current_run()
    if state is not None and usage is not None:
        state.add_usage(usage)


def _as_passages(found: Any) -> list[Passage]:
    return [p if isinstance(p, Passage) else Passage(str(p), id=str(i)) for i, p in enumerate(found)]


class _Traced:
    """Tracing around ``search``: subclasses implement ``_search`` (and ``_asearch``)."""

    name: str = "retrieve"
    k: int = 3

    def _search(self, query: str, k: int) -> list[Passage]:
        raise NotImplementedError

    async def _asearch(self, query: str, k: int) -> list[Passage]:
        return self._search(query, k)

    def search(self, query: str, k: int | None = None) -> list[Passage]:
        """The ``k`` passages (default: the retriever's ``k``) best matching ``query``."""
        k, query = self._args(query, k)
        started = time.perf_counter()
        try:
            found = _as_passages(self._search(query, k))[:k] if k else []
        except Exception as exc:
            _record(self.name, query, k, [], started, f"{type(exc).__name__}: {exc}")
            raise
        _record(self.name, query, k, found, started, None)
        return found

    async def asearch(self, query: str, k: int | None = None) -> list[Passage]:
        """``search`` for async pipelines."""
        k, query = self._args(query, k)
        started = time.perf_counter()
        try:
            found = _as_passages(await self._asearch(query, k))[:k] if k else []
        except Exception as exc:
            _record(self.name, query, k, [], started, f"{type(exc).__name__}: {exc}")
            raise
        _record(self.name, query, k, found, started, None)
        return found

    def _args(self, query: Any, k: int | None) -> tuple[int, str]:
        k = _check_k(self.k if k is None else k)
        return k, query if isinstance(query, str) else str(to_jsonable(query))

    __call__ = search


class _Wrapped(_Traced):
    def __init__(self, inner: Any, name: str, k: int):
        self.inner, self.name, self.k = inner, name, k

    def _search(self, query: str, k: int) -> list[Passage]:
        return _as_passages(self.inner.search(query, k))

    async def _asearch(self, query: str, k: int) -> list[Passage]:
        asearch = getattr(self.inner, "asearch", None)
        if asearch is not None:
            return _as_passages(await asearch(query, k))
        return self._search(query, k)

    def __repr__(self) -> str:
        return f"traced({self.inner!r}, name={self.name!r})"


def traced(retriever: Any, *, name: str = "retrieve", k: int = 3) -> Any:
    """``retriever`` (anything with ``search(query, k)``) as a traced pipeline step."""
    if not callable(getattr(retriever, "search", None)):
        raise ConfigError(f"{retriever!r} is not a retriever: it needs a search(query, k) method")
    return _Wrapped(retriever, name, k)


# --- retrievers ------------------------------------------------------------------------


class BM25Retriever(_Traced):
    """BM25 over ``corpus`` (see ``load_corpus``) through ``bm25s``; deterministic.

    ``k`` is the default number of passages; ``k1`` and ``b`` are BM25's usual settings.
    The index is built here, once; a search scores every passage and returns the ``k``
    best (passages sharing no term with the query score 0 and come last, in corpus order).
    """

    def __init__(
        self,
        corpus: Any,
        *,
        k: int = 3,
        name: str = "retrieve",
        text_field: str = "text",
        id_field: str = "id",
        k1: float = 1.5,
        b: float = 0.75,
    ):
        from ._bm25 import BM25Index

        self.passages = load_corpus(corpus, text_field=text_field, id_field=id_field)
        self.k = _check_k(k)
        self.name = name
        self.index = BM25Index(self.passages, k1=k1, b=b)

    def _search(self, query: str, k: int) -> list[Passage]:
        scores = self.index.scores(query)
        return [self.passages[i].scored(scores[i]) for i in self.index.top(query, k)]

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"BM25Retriever({len(self.passages)} passages, k={self.k}, name={self.name!r})"


class EmbeddingsRetriever(_Traced):
    """Cosine similarity of embeddings by ``lm`` (default: the LM of the run the search is
    part of, else of the current ``desic.context``, at search time). The corpus is embedded on the first search with an
    LM (in batches, through that LM's cache when it has one) and kept per LM."""

    def __init__(
        self,
        corpus: Any,
        *,
        lm: LM | None = None,
        k: int = 3,
        name: str = "retrieve",
        text_field: str = "text",
        id_field: str = "id",
        batch: int = 64,
    ):
        self.passages = load_corpus(corpus, text_field=text_field, id_field=id_field)
        self.lm = lm
        self.k = _check_k(k)
        self.name = name
        self.batch = max(1, batch)
        self._vectors: dict[int, tuple[Any, list[list[float]]]] = {}

    async def _corpus_vectors(self, lm: Any) -> list[list[float]]:
        hit = self._vectors.get(id(lm))
        if hit is not None and hit[0] is lm:
            return hit[1]
        vectors: list[list[float]] = []
        for start in range(0, len(self.passages), self.batch):
            chunk = [p.text for p in self.passages[start : start + self.batch]]
            vectors.extend(_unit(v) for v in await lm.embed(chunk))
        self._vectors[id(lm)] = (lm, vectors)
        return vectors

    def _lm(self) -> Any:
        """The retriever's own LM, else the LM of the run it is part of (a compile's
        ``lm=``), else the context's."""
        if self.lm is not None:
            return self.lm
        state = current_run()
        return state.lm if state is not None and state.lm is not None else current_lm()

    async def _asearch(self, query: str, k: int) -> list[Passage]:
        try:
            found, spent = await self._rank(self._lm(), query, k)
        except Exception as exc:
            _charge(getattr(exc, "spent", None))
            raise
        _charge(spent)
        return found

    def _search(self, query: str, k: int) -> list[Passage]:
        # the LM is looked up here, in the caller's context, not on the loop run_sync uses
        try:
            found, spent = run_sync(self._rank(self._lm(), query, k))
        except Exception as exc:
            _charge(getattr(exc, "spent", None))
            raise
        _charge(spent)
        return found

    async def _rank(self, lm: Any, query: str, k: int) -> tuple[list[Passage], Usage]:
        """The ``k`` best passages, and what embedding the corpus (first time) and the query cost."""
        with counting_embeddings() as tally:
            try:
                vectors = await self._corpus_vectors(lm)
                (q,) = await lm.embed([query])
            except Exception as exc:
                exc.spent = tally.usage  # type: ignore[attr-defined]  # charged by the caller
                raise
        q = _unit(q)
        scores = [sum(a * b for a, b in zip(q, v)) for v in vectors]
        order = sorted(range(len(scores)), key=lambda i: -scores[i])[:k]
        return [self.passages[i].scored(scores[i]) for i in order], tally.usage

    def __len__(self) -> int:
        return len(self.passages)

    def __repr__(self) -> str:
        return f"EmbeddingsRetriever({len(self.passages)} passages, k={self.k}, name={self.name!r})"


def _unit(v: Sequence[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in v)) or 1.0
    return [x / norm for x in v]
