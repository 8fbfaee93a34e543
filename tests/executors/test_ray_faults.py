"""Faults on a Ray cluster: a worker killed mid-batch loses nothing and repeats no recorded
evaluation (the compile ends with the local program), and Ctrl-C on the driver cancels the
work on every worker."""

from __future__ import annotations

import _thread
import itertools
import threading
import time
from collections import Counter
from typing import Any

import pytest

import desic
from desic.record import MemoryRecorder
from desic.testing import FakeOpenAIServer, FunctionLM, allow_model_requests
from tests.executors.gate import NAME, Gate, gated_answer
from tests.support.house_rule import ROWS, answer, triage


class CountingRecorder(MemoryRecorder):
    def __init__(self) -> None:
        super().__init__()
        self.puts: Counter[str] = Counter()

    def put_evaluation(self, key: str, record: dict[str, Any]) -> None:
        self.puts[key] += 1
        super().put_evaluation(key, record)


def test_a_worker_killed_mid_batch_loses_nothing_and_the_compile_ends_as_on_one_machine(
    ray_executor: Any, ray_cluster: Any
) -> None:
    options: dict[str, Any] = {"metric": "exact_match", "optimizer": "random_search", "num_candidates": 4,
                               "concurrency": 8, "seed": 3}
    local = desic.compile(triage, ROWS, lm=FunctionLM(answer, name="m"), **options)
    resent = ray_executor.resent
    gate = ray_cluster.remote(Gate).options(name=NAME, num_cpus=0).remote(free=40)
    killed: list[str] = []

    def kill_the_worker_held_at_the_gate() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            held = ray_cluster.get(gate.held.remote())
            if held:
                victim = next(a for a in ray_executor.actors if a._actor_id.hex() == held[0])
                ray_cluster.kill(victim, no_restart=True)  # in the middle of a row
                killed.append(held[0])
                break
            time.sleep(0.02)
        ray_cluster.get(gate.open.remote())

    killer = threading.Thread(target=kill_the_worker_held_at_the_gate)
    killer.start()
    recorder = CountingRecorder()
    try:
        on_ray = desic.compile(triage, ROWS, lm=FunctionLM(gated_answer, name="m"), recorder=recorder,
                               executor=ray_executor, **options)
    finally:
        killer.join()
        ray_cluster.kill(gate)
    assert killed, "no row of the compile reached the gate"
    assert ray_executor.resent > resent  # its rows without an outcome went to a new worker
    assert max(recorder.puts.values()) == 1  # and no recorded evaluation ran again
    assert on_ray.program.nodes == local.program.nodes
    assert on_ray.program.meta.score == local.program.meta.score


@pytest.mark.usefixtures("ctrl_c_raises")
def test_ctrl_c_on_the_driver_cancels_the_work_on_every_worker(ray_executor: Any, ray_cluster: Any) -> None:
    release = threading.Event()
    count = itertools.count(1)

    def handler(request: dict[str, Any]) -> dict[str, str]:
        if next(count) == 6:  # Ctrl-C while rows are running on the workers
            _thread.interrupt_main()
        release.wait(60)
        return {"team": "tech"}

    devset = [{"ticket": f"crash {i}", "team": "tech"} for i in range(200)]
    with allow_model_requests(), FakeOpenAIServer(handler=handler) as server:
        try:
            lm = desic.lm("openai:fake-model", base_url=server.url, api_key="x", retries=0)
            with pytest.raises(KeyboardInterrupt):
                desic.evaluate(triage, devset, "exact_match", lm=lm, executor=ray_executor, concurrency=8)
            deadline = time.monotonic() + 60
            holding = ray_cluster.get([actor.running.remote() for actor in ray_executor.actors])
            while any(holding) and time.monotonic() < deadline:
                time.sleep(0.05)
                holding = ray_cluster.get([actor.running.remote() for actor in ray_executor.actors])
            assert holding == [0, 0]  # every worker let go of every row, running or waiting
            assert server.counts["requests"] <= 8  # at most the rows running at once ever called
        finally:
            release.set()
