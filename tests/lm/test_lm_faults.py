# mypy: disable-error-code="empty-body"
"""The whole stack under injected faults: openai + instructor + timeout + throttle + retry.

A compile against a server failing 30% of its requests (429, 500, slow, malformed) must
finish and produce exactly the program a fault-free run produces with the same seed.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import LMRequest
from desic.testing import FakeOpenAIServer, Faults, FunctionLM, allow_model_requests, last_input


class Ticket(BaseModel):
    team: Literal["billing", "shipping", "tech"]
    urgent: bool


@desic.signature
def summarize(ticket: str) -> str:
    """Summarize the customer's problem in a few words."""


@desic.signature
def route(summary: str) -> Ticket:
    """Route the summarized ticket to a team and say if it is urgent."""


@desic.pipeline
def triage(ticket: str) -> Ticket:
    return route(summary=summarize.with_strategy("chain_of_thought")(ticket=ticket))


def team_of(text: str) -> str:
    if "money" in text or "charge" in text:
        return "billing"
    return "shipping" if "parcel" in text else "tech"


def handler(req: dict[str, Any]) -> dict[str, Any]:
    """A deterministic model: the answer is a function of the last user message only."""
    text = req["messages"][-1]["content"]
    props = req["response_format"]["json_schema"]["schema"]["properties"]
    if "team" in props:
        return {"team": team_of(text), "urgent": "now" in text}
    words = text.split(":", 1)[-1].split()
    return {"reasoning": f"{len(words)} words", "output": " ".join(words[:6])}


TRAIN = [
    {"ticket": "I was charged twice for my order", "team": "billing", "urgent": False},
    {"ticket": "my parcel never arrived, help now", "team": "shipping", "urgent": True},
    {"ticket": "the app crashes when I log in", "team": "tech", "urgent": False},
    {"ticket": "refund my money now please", "team": "billing", "urgent": True},
    {"ticket": "parcel damaged on arrival", "team": "shipping", "urgent": False},
    {"ticket": "cannot reset my password now", "team": "tech", "urgent": True},
    {"ticket": "a strange charge on my card", "team": "billing", "urgent": False},
    {"ticket": "where is my parcel", "team": "shipping", "urgent": False},
]
VAL = [
    {"ticket": "money missing from my account now", "team": "billing", "urgent": True},
    {"ticket": "the parcel went to the wrong address", "team": "shipping", "urgent": False},
    {"ticket": "screen stays black", "team": "tech", "urgent": False},
]


@pytest.fixture(autouse=True)
def _allowed(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for var in ("OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(var, raising=False)
    with allow_model_requests():
        yield


def resilient(server: FakeOpenAIServer) -> Any:
    provider = desic.lm("openai:fake-model", base_url=server.url, api_key="x", client_retries=0)
    attempt = desic.lm.timeout(provider, 0.3)
    return desic.lm.retry(
        desic.lm.throttle(attempt, rps=200, burst=20), max_retries=10, initial=0.02, jitter=0.02
    )


def compile_against(server: FakeOpenAIServer) -> desic.CompiledPipeline[..., Any]:
    return desic.compile(
        triage,
        TRAIN,
        metric=desic.metrics.exact_match,
        optimizer="bootstrap",
        valset=VAL,
        lm=resilient(server),
        seed=7,
        concurrency=8,
    )


def test_a_compile_under_30_percent_faults_yields_the_fault_free_program() -> None:
    faults = Faults(
        rate_429=0.10, retry_after=0.05, rate_500=0.08, rate_slow=0.06, slow_seconds=1.0,
        rate_malformed=0.06,
    )
    with FakeOpenAIServer(handler=handler) as clean_server:
        clean = compile_against(clean_server)
    with FakeOpenAIServer(handler=handler, faults=faults, seed=11) as faulty_server:
        faulty = compile_against(faulty_server)
        counts = dict(faulty_server.counts)
    injected = counts["429"] + counts["500"] + counts["slow"] + counts["malformed"]
    assert injected >= 5, counts  # the faults really happened
    assert injected / counts["requests"] == pytest.approx(0.30, abs=0.15)
    assert clean.score == faulty.score == 1.0
    assert [n.id for n in clean.program.nodes] == ["summarize", "route"]
    assert all(n.demos for n in clean.program.nodes)
    assert faulty.program.nodes == clean.program.nodes
    assert faulty.program.edges == clean.program.edges


# --- context isolation through wrappers ---------------------------------------------------------


@desic.signature
def echo(text: str) -> str:
    """Repeat the text."""


def test_threads_with_different_wrapped_lms_never_cross() -> None:
    n_calls = 40
    barrier = threading.Barrier(2)
    seen: dict[str, list[str]] = {"A": [], "B": []}
    results: dict[str, list[str]] = {}
    errors: list[BaseException] = []

    def make(name: str) -> Any:
        def answer(request: LMRequest) -> str:
            text = last_input(request).removeprefix("text: ")
            seen[name].append(text)
            return f"{name}:{text}"

        inner = FunctionLM(answer, name=name, latency=0.001)
        # a shared-looking stack: cache keys differ by the model's description
        return desic.lm(inner, rps=500, burst=5, retries=2, timeout=5, cache="memory")

    def worker(name: str) -> None:
        try:
            lm = make(name)
            out: list[str] = []
            with desic.context(lm=lm):
                barrier.wait(timeout=5)
                for i in range(n_calls):
                    out.append(echo(text=f"{name}-{i % 10}"))  # repeats hit that LM's cache
            results[name] = out
        except BaseException as exc:  # noqa: BLE001  (surfaced below)
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in ("A", "B")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    for name in ("A", "B"):
        assert seen[name] == [f"{name}-{i}" for i in range(10)]
        assert results[name] == [f"{name}:{name}-{i % 10}" for i in range(n_calls)]


def test_faults_the_retries_cannot_absorb_fail_the_run_visibly_and_it_resumes() -> None:
    """An outage (most requests failing, few retries): the compile stops with a clear error
    and a failed, resumable run; resumed once the server is healthy it ends with the
    fault-free program."""
    import uuid

    faults = Faults(rate_500=0.6, rate_429=0.1, retry_after=0.01, rate_malformed=0.1)
    url = f"memory://outage-{uuid.uuid4().hex}"

    def weak(server: FakeOpenAIServer) -> Any:
        provider = desic.lm("openai:fake-model", base_url=server.url, api_key="x", client_retries=0)
        return desic.lm.retry(provider, max_retries=1, initial=0.0, jitter=0.0)

    options: dict[str, Any] = {"metric": desic.metrics.exact_match, "optimizer": "bootstrap", "valset": VAL,
                               "seed": 7, "concurrency": 8, "storage": url, "max_errors": 3}
    with FakeOpenAIServer(handler=handler, faults=faults, seed=3) as server:
        lm = weak(server)
        with pytest.raises(desic.LMError, match="max_errors=3"):
            desic.compile(triage, TRAIN, lm=lm, **options)
        (run,) = desic.storage.open(url).list_runs()
        assert run.status == "failed" and "retries" in (run.error or "")
        server.faults = Faults()  # the outage is over
        resumed = desic.compile(triage, TRAIN, lm=lm, resume=run.id, **options)
    with FakeOpenAIServer(handler=handler) as clean_server:
        clean = desic.compile(triage, TRAIN, lm=weak(clean_server), **{**options, "storage": None})
    assert resumed.program.nodes == clean.program.nodes
    assert resumed.errors == 0
