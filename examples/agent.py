"""A tool-using agent: questions about a small town, answered with a search tool and a calculator.

``ask`` is a ``react`` signature: the model thinks, calls ``search`` (BM25 over the corpus
shipped with ``qa.py``) or ``calculate`` (arithmetic, safely evaluated), reads the result,
and finishes with a short answer. Some questions need a lookup, some a lookup and a sum.
Compiling with bootstrap keeps whole successful trajectories (every thought, call and
observation) as demos. The script prints the dev score before and after, saves the
artifact, loads it back bound to these functions, and answers a new question, printing its
trajectory as it goes.

    python examples/agent.py                        # the embedded local model (a few minutes)
    DESIC_LM=openai:gpt-4o-mini python examples/agent.py
"""

from __future__ import annotations

import argparse
import ast
import operator
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, Field

import desic
from desic import events

sys.path.insert(0, str(Path(__file__).parent))
from qa import INDEX

DATA = Path(__file__).parent / "data"


def search(query: Annotated[str, Field(max_length=60, description="a few keywords")]) -> list[str]:
    """Find the two passages of the town guide that best match the keywords."""
    return INDEX.search(query, k=2)


_OPS: dict[type, Any] = {
    ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul,
    ast.Div: operator.truediv, ast.USub: operator.neg, ast.UAdd: operator.pos,
}


def _eval(node: ast.AST) -> float:
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)):
        return node.value
    if isinstance(node, ast.BinOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.left), _eval(node.right)))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _OPS:
        return float(_OPS[type(node.op)](_eval(node.operand)))
    raise ValueError("only numbers and + - * / are allowed")


@desic.tool(timeout=5)
def calculate(
    expression: Annotated[str, Field(max_length=40, description="arithmetic, e.g. 3 * 6 or 1887 - 1851")],
) -> float | int:
    """Compute an arithmetic expression of numbers with + - * / and parentheses."""
    value = _eval(ast.parse(expression, mode="eval").body)
    return int(value) if value == int(value) else round(value, 4)


class Answer(BaseModel):
    answer: str = Field(max_length=40, description="a few words or a number")


@desic.signature(strategy="react", tools=[search, calculate], max_steps=4)
def ask(question: str) -> Answer:
    """Answer the question about the town of Harrow Bay. Search the town guide first; use
    the calculator for any arithmetic. Answer in a few words."""


def show_step(event: Any) -> None:
    """Print each tool call of the agent as it happens (an event sink)."""
    if event.kind == "tool_call":
        d = event.data
        print(f"  step {d['step']}: {d['tool']}({d.get('args')}) -> {d.get('observation')}")
        if d.get("thought"):
            print(f"          thought: {d['thought']}")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--out", default="agent.desic.json", help="where to save the artifact")
    args = p.parse_args()
    # the local model, unless DESIC_LM names another: one step's answer stays short, and a
    # call may wait long on a busy machine
    lm = None if os.environ.get("DESIC_LM") else desic.lm("local", max_tokens=320, timeout=1800)
    train = desic.load_dataset(DATA / "agent_train.jsonl")
    dev = desic.load_dataset(DATA / "agent_dev.jsonl")
    metric = desic.metrics.contains

    start = time.perf_counter()
    before = desic.evaluate(ask, dev, metric, lm=lm, concurrency=args.concurrency)
    print(f"dev score before compile: {before.score:.3f}  ({before})")
    compiled = desic.compile(
        ask, train, metric=metric, optimizer="bootstrap", lm=lm,
        max_demos=2, max_labeled=0, concurrency=args.concurrency,
    )
    after = compiled.evaluate(dev, metric, lm=lm, concurrency=args.concurrency)
    print(f"dev score after bootstrap: {after.score:.3f}  ({after}); compile used {compiled.usage.calls} LM calls")
    path = compiled.save(args.out)

    agent = desic.load(path, pipeline=ask)  # binds the saved tools to these functions by name
    node = agent.program.nodes[0]
    print(f"saved {path}: {len(node.demos)} demos, tools {[t.name for t in node.tools]}")
    question = "How many minutes does a ferry crossing to Gull Island and back take?"
    print(f"\nquestion: {question}")
    with desic.context(lm=lm), events.listening(show_step):
        result = agent(question=question)
    print(f"answer: {result.answer}")
    print(f"total {time.perf_counter() - start:.0f}s")


if __name__ == "__main__":
    main()
