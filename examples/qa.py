"""Answer questions about a small town from a corpus shipped with the example.

Two LM steps around a plain-Python retriever: ``search_query`` turns the question into
keywords, BM25 (below, no dependencies) picks the two best passages of
``data/qa_corpus.jsonl``, and ``answer`` replies in a few words from them. The facts are
invented, so the model can only get them from the passages: compiling teaches both steps
at once, from the traces of questions the pipeline got right.

    python examples/qa.py --optimizer bootstrap --small     # the embedded local model
    DESIC_LM=openai:gpt-4o-mini python examples/qa.py --optimizer mipro
"""

from __future__ import annotations

import json
import math
import re
from collections import Counter
from pathlib import Path

from pydantic import BaseModel, Field

import desic

DATA = Path(__file__).parent / "data"
_WORD = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    "a an the of to in on is are was what which who when how does do for and or at by from it".split()  # noqa: SIM905
)


def tokenize(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.lower()) if w not in _STOP]


class BM25:
    """Okapi BM25 over a list of passages (k1=1.5, b=0.75)."""

    def __init__(self, passages: list[str], k1: float = 1.5, b: float = 0.75):
        self.passages = passages
        self.k1, self.b = k1, b
        self.docs = [Counter(tokenize(p)) for p in passages]
        self.lengths = [sum(d.values()) for d in self.docs]
        self.avg = sum(self.lengths) / len(self.lengths)
        df = Counter(term for d in self.docs for term in d)
        n = len(passages)
        self.idf = {t: math.log(1 + (n - f + 0.5) / (f + 0.5)) for t, f in df.items()}

    def search(self, query: str, k: int = 2) -> list[str]:
        terms = tokenize(query)
        scores = []
        for i, (doc, length) in enumerate(zip(self.docs, self.lengths)):
            s = 0.0
            for t in terms:
                tf = doc.get(t, 0)
                if tf:
                    s += self.idf[t] * tf * (self.k1 + 1) / (tf + self.k1 * (1 - self.b + self.b * length / self.avg))
            scores.append((s, -i))
        best = sorted(scores, reverse=True)[:k]
        return [self.passages[-i] for _, i in best]


INDEX = BM25([json.loads(line)["text"] for line in (DATA / "qa_corpus.jsonl").read_text().splitlines() if line])


class Query(BaseModel):
    query: str = Field(max_length=80, description="a few keywords")


class Answer(BaseModel):
    answer: str = Field(max_length=60, description="a few words from the passages")


@desic.signature
def search_query(question: str) -> Query:
    """Write a short search query, a few keywords, to find the answer to the question."""


@desic.signature
def answer(question: str, passages: str) -> Answer:
    """Answer the question in a few words, using only the passages."""


@desic.pipeline
def qa(question: str) -> Answer:
    query = search_query(question=question)
    passages = INDEX.search(f"{question} {query.query}", k=2)
    return answer(question=question, passages="\n".join(passages))


def main() -> None:
    from _common import compile_and_compare, parser

    args = parser(__doc__.splitlines()[0], "qa.desic.json").parse_args()
    compile_and_compare(
        qa,
        desic.load_dataset(DATA / "qa_train.jsonl"),
        desic.load_dataset(DATA / "qa_dev.jsonl"),
        desic.metrics.contains,
        optimizer=args.optimizer,
        small=args.small,
        seed=args.seed,
        concurrency=args.concurrency,
        max_calls=args.max_calls,
        before=not args.skip_before,
        out=args.out,
    )


if __name__ == "__main__":
    main()
