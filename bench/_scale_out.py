"""Pipelines and LMs of ``bench_scale_out.py``, in a module of their own: Ray workers import
pipelines by ``module:name`` (the script itself is ``__main__``, which they cannot)."""

from __future__ import annotations

import time

import desic


@desic.signature
def answer(question: str) -> str:
    """Answer the question."""


def burn(seconds: float) -> None:
    """Spin the CPU (this thread) for ``seconds`` of its own CPU time."""
    end = time.thread_time() + seconds
    x = 0
    while time.thread_time() < end:
        for i in range(1000):
            x += i * i


CPU_SECONDS = 0.020


@desic.pipeline
def cpu_bound(question: str) -> str:
    """~20 ms of CPU per example (a retrieval, a local scorer), then one LM call."""
    burn(CPU_SECONDS)
    return answer(question=question)
