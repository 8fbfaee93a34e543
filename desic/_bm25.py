"""BM25 ranking over a list of texts, deterministic, through the ``bm25s`` library.

The one BM25 of desic: ``desic.BM25Retriever`` searches a corpus with it and per-input
demos (``ir.DemoSelect``) pick a node's demos with it. ``bm25s`` (and numpy, its one
dependency) is imported on first use only, so ``import desic`` stays light; without it
a ``ConfigError`` names the extra to install.

Ranking is deterministic: every text is scored and ties go to the earlier text (a stable
sort), never to whatever order a partial sort left them in. Texts are tokenized here
(lower-cased words and numbers, English stop words removed), so the same texts always
give the same index; an index is cached by the texts' content.
"""

from __future__ import annotations

import hashlib
import re
import threading
from collections.abc import Sequence
from typing import Any

__all__ = ["BM25Index", "index_for", "tokenize"]

_WORD = re.compile(r"\w+", re.UNICODE)
# a short English list: words that match nearly everything and rank nothing
_STOP = frozenset(
    (  # noqa: SIM905 - a word list reads better as text
        "a an and are as at be but by did do does for from had has have how i if in into is it its "
        "me my no not of on or our so than that the their them then there these they this to was "
        "we were what when where which who whom why will with you your"
    ).split()
)


def tokenize(text: str) -> list[str]:
    """The terms BM25 matches: lower-cased words and numbers, stop words left out."""
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


def _bm25s() -> Any:
    try:
        import bm25s
    except ImportError as exc:  # pragma: no cover - the suite installs the extra
        from .errors import ConfigError  # here: the bench loads this file on its own

        raise ConfigError(
            "BM25 retrieval needs the bm25s library: pip install 'desic[retrieval]'"
        ) from exc
    return bm25s


class BM25Index:
    """Okapi BM25 (``k1``, ``b``) over ``texts``; ``top(query, k)`` gives positions."""

    def __init__(self, texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75):
        self.size = len(texts)
        self.k1, self.b = k1, b
        self._lock = threading.Lock()  # bm25s objects are not documented as thread-safe
        self._engine: Any = None
        tokens = [tokenize(t) for t in texts]
        if any(tokens):
            engine = _bm25s().BM25(k1=k1, b=b)
            # an empty document would leave bm25s without a vocabulary entry for it
            engine.index([t or ["\x00"] for t in tokens], show_progress=False)
            self._engine = engine

    def scores(self, query: str) -> list[float]:
        """The BM25 score of every text for ``query`` (0 for a text sharing no term)."""
        terms = tokenize(query)
        if self._engine is None or not terms:
            return [0.0] * self.size
        with self._lock:
            values = self._engine.get_scores(terms)
        return [float(v) for v in values]

    def top(self, query: str, k: int, *, exclude: frozenset[int] = frozenset()) -> list[int]:
        """The positions of the ``k`` best texts for ``query``, best first; ties (and texts
        sharing no term with the query) in text order; positions in ``exclude`` skipped."""
        scores = self.scores(query)
        order = sorted(range(self.size), key=lambda i: -scores[i])  # sorted() is stable
        return [i for i in order if i not in exclude][:k]


_indices: dict[tuple[str, float, float], BM25Index] = {}
_indices_lock = threading.Lock()


def index_for(texts: Sequence[str], *, k1: float = 1.5, b: float = 0.75) -> BM25Index:
    """The index of ``texts`` (made once per content and settings, kept for reuse)."""
    digest = hashlib.sha256("\x1e".join(texts).encode("utf-8", "surrogatepass")).hexdigest()
    key = (f"{len(texts)}:{digest}", k1, b)
    with _indices_lock:
        hit = _indices.get(key)
    if hit is not None:
        return hit
    made = BM25Index(texts, k1=k1, b=b)
    with _indices_lock:
        if len(_indices) >= 256:
            _indices.clear()
        return _indices.setdefault(key, made)
