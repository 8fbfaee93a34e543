# mypy: disable-error-code="empty-body"
"""Inference-time strategies (desic.sampling): majority vote, best-of-n, refine, and
compile's ensembles of the top candidates; stored in artifacts as plain data."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import desic
from desic import ir
from desic.errors import ArtifactError, ConfigError
from desic.events import Event, listening
from desic.lm import LMRequest
from desic.testing import FakeLM, FunctionLM


def last_user(request: LMRequest) -> str:
    return str(next(m["content"] for m in reversed(request.messages) if m["role"] == "user"))


@desic.signature(sampling=desic.Majority(5, temperature=0.8))
def vote(question: str) -> str:
    """Answer the question."""


def test_majority_takes_the_most_common_answer_of_n_samples() -> None:
    answers = ["b", "a", "c", "a", "a"]
    lm = FunctionLM(lambda r: answers[r.sample])
    seen: list[Event] = []
    with desic.context(lm=lm), listening(seen.append):
        assert vote(question="q") == "a"
    assert sorted(c.sample for c in lm.calls) == [0, 1, 2, 3, 4]
    assert {c.params.temperature for c in lm.calls} == {0.8}
    (ev,) = [e for e in seen if e.kind == "sampling"]
    assert ev.data["strategy"] == "majority" and ev.data["chosen"] == 1 and ev.data["votes"] == [1, 3, 1, 3, 3]


def test_a_tie_goes_to_the_earliest_sample_and_failed_samples_are_dropped() -> None:
    def answer(r: LMRequest) -> str:
        if r.sample == 0:
            raise desic.LMError("sample 0 failed")
        return ["-", "x", "y", "y", "x"][r.sample]

    with desic.context(lm=FunctionLM(answer)):
        assert vote(question="q") == "x"  # x (sample 1) and y (2) both have two votes

    def down(r: LMRequest) -> str:
        raise desic.LMError("down")

    with desic.context(lm=FunctionLM(down)), pytest.raises(desic.LMError, match="down"):
        vote(question="q")


def looks_like_a_ref(inputs: dict[str, Any], output: str) -> float:
    return 1.0 if output.startswith("ORD-") else 0.0


@desic.signature(sampling=desic.BestOfN(4, reward=looks_like_a_ref))
def order_ref(ticket: str) -> str:
    """The order reference in the ticket."""


def test_best_of_n_keeps_the_sample_the_reward_scores_highest() -> None:
    answers = ["12345", "order 12345", "ORD-12345", "ORD-99999"]
    lm = FunctionLM(lambda r: answers[r.sample])
    with desic.context(lm=lm):
        assert order_ref(ticket="my order 12345") == "ORD-12345"  # the earliest of the best
    assert len(lm.calls) == 4


def test_refine_retries_with_the_rewards_feedback_until_the_threshold() -> None:
    def strict(inputs: dict[str, Any], output: str) -> tuple[float, str]:
        if output.isupper():
            return 1.0, ""
        return 0.25, "write it in capitals"

    @desic.signature(sampling=desic.Refine(3, reward=strict, threshold=1.0))
    def shout(text: str) -> str:
        """Repeat the text."""

    answers = ["hello", "HELLO", "never asked"]
    lm = FunctionLM(lambda r: answers[r.sample])
    with desic.context(lm=lm):
        assert shout(text="hello") == "HELLO"
    assert len(lm.calls) == 2  # stopped at the threshold
    retry = lm.calls[1].messages
    assert retry[-2]["role"] == "assistant" and json.loads(retry[-2]["content"]) == {"output": "hello"}
    assert "scored 0.25 (wanted at least 1)" in retry[-1]["content"]
    assert "Feedback: write it in capitals" in retry[-1]["content"]


def test_rewards_are_checked() -> None:
    with pytest.raises(ConfigError, match="needs reward"):
        desic.BestOfN(3, reward=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="lambda reward needs a name"):
        desic.BestOfN(3, reward=lambda i, o: 1.0)
    with pytest.raises(ConfigError, match="n must be a whole number"):
        desic.Majority(0)
    with pytest.raises(ConfigError, match="temperature"):
        desic.Majority(3, temperature=5)

    def wordy(inputs: dict[str, Any], output: str) -> Any:
        return "great"

    @desic.signature(sampling=desic.BestOfN(2, reward=wordy))
    def guess(q: str) -> str:
        """Guess."""

    with desic.context(lm=FakeLM(default="x")), pytest.raises(ConfigError, match="returns a number"):
        guess(q="?")


def test_every_sample_counts_against_a_budget() -> None:
    rows = [{"question": f"q{i}", "output": "a"} for i in range(4)]
    report = desic.evaluate(vote, rows, desic.metrics.exact_match, lm=FakeLM(default="a"), progress=False)
    assert report.usage.calls == 20
    capped = desic.evaluate(vote, rows, desic.metrics.exact_match, lm=FakeLM(default="a"),
                            budget=desic.Budget(max_calls=7), progress=False, concurrency=1)
    # one row costs 5 calls: a second would pass 7, so the budget stops after the first
    assert capped.stopped_by == "max_calls" and capped.usage.calls == 5 and capped.skipped == 3
    compiled = desic.compile(vote, rows, metric="exact_match", optimizer="bootstrap", lm=FakeLM(default="a"),
                             max_calls=7, progress=False, concurrency=1)
    assert compiled.stopped_by == "max_calls" and compiled.usage.calls <= 7


def test_samples_are_cached_one_entry_each_so_a_rerun_costs_nothing(tmp_path: Path) -> None:
    answers = ["b", "a", "c", "a", "a"]
    inner = FunctionLM(lambda r: answers[r.sample])
    lm = desic.lm.cache(inner, tmp_path / "cache.db")
    with desic.context(lm=lm):
        assert vote(question="q") == "a"
        assert vote(question="q") == "a"
    assert len(inner.calls) == 5


def test_the_strategy_travels_in_the_artifact_and_its_reward_binds_by_name(tmp_path: Path) -> None:
    rows = [{"ticket": f"order {i}", "output": f"ORD-{i}"} for i in range(3)]
    compiled = desic.compile(order_ref, rows, metric="exact_match", optimizer="labeled", lm=FakeLM(default="x"), progress=False)
    path = compiled.save(tmp_path / "ref.json")
    node = json.loads(path.read_text())["nodes"][0]
    assert node["sampling"] == {"kind": "best_of_n", "n": 4, "temperature": 0.7, "reward": "looks_like_a_ref"}
    loaded = desic.load(path)  # no pipeline: the program alone
    answers = ["nope", "ORD-7", "x", "y"]
    with desic.context(lm=FunctionLM(lambda r: answers[r.sample])):
        assert loaded(ticket="order 7") == "ORD-7"
    # an artifact naming a reward no code defined fails clearly
    data = json.loads(path.read_text())
    data["nodes"][0]["sampling"]["reward"] = "no_such_reward"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(data))
    with desic.context(lm=FakeLM(default="x")), pytest.raises(ArtifactError, match="reward 'no_such_reward'.*desic.reward"):
        desic.load(bad)(ticket="t")


@pytest.mark.parametrize(
    ("sampling", "message"),
    [
        ({"kind": "telepathy", "n": 3}, "unknown sampling 'telepathy'"),
        ({"kind": "majority", "n": 1000}, "n=1000 must be within 1..64"),
        ({"kind": "best_of_n", "n": 3}, "needs the name of its reward"),
    ],
)
def test_a_hostile_sampling_in_an_artifact_is_refused(tmp_path: Path, sampling: dict[str, Any], message: str) -> None:
    compiled = desic.compile(vote, [{"question": "q", "output": "a"}], metric="exact_match", optimizer="labeled",
                             lm=FakeLM(default="a"), progress=False)
    data = json.loads(compiled.save(tmp_path / "v.json").read_text())
    data["nodes"][0]["sampling"] = sampling
    (tmp_path / "bad.json").write_text(json.dumps(data))
    with pytest.raises(ArtifactError, match=message):
        desic.load(tmp_path / "bad.json")


# --- ensembles of the top candidates ------------------------------------------------------------


@desic.signature
def capital(country: str) -> str:
    """Name the capital."""


TRUTH = {"France": "Paris", "Peru": "Lima", "Chad": "N'Djamena", "Fiji": "Suva", "Laos": "Vientiane", "Mali": "Bamako"}


def test_compile_with_an_ensemble_votes_over_the_top_candidates() -> None:
    rows = [{"country": c, "output": a} for c, a in TRUTH.items()]

    def answer(r: LMRequest) -> str:
        country = last_user(r).split("country:")[-1].strip().splitlines()[0].strip()
        return TRUTH.get(country, "?")

    lm = FunctionLM(answer)
    compiled = desic.compile(capital, rows, metric="exact_match", optimizer="random_search", lm=lm,
                             ensemble=3, progress=False, seed=1)
    node = compiled.program.nodes[0]
    notes = [c.note for c in compiled.history]
    assert any("ensemble of the top" in n for n in notes), notes
    assert len(node.variants) == 2  # the best candidate's prompt plus two runners-up
    before = len(lm.calls)
    with desic.context(lm=lm):
        assert compiled(country="Peru") == "Lima"
    assert len(lm.calls) - before == 3  # one call per member
    with pytest.raises(ConfigError, match="ensemble must be"):
        desic.compile(capital, rows, metric="exact_match", lm=lm, ensemble=0)


def test_ir_checks_variants() -> None:
    node = ir.Node(id="n", signature=capital.spec, variants=tuple(ir.Variant() for _ in range(17)))
    with pytest.raises(ArtifactError, match="17 variants"):
        ir.check_program(ir.Program(nodes=(node,)))


def test_compile_tries_sampling_strategies_and_keeps_one_only_when_it_scores_higher() -> None:
    rows = [{"question": f"q{i}", "output": "a"} for i in range(8)]
    # greedy (temperature unset) answers "b"; sampled answers are mostly "a"
    def answer(r: LMRequest) -> str:
        if r.params.temperature is None:
            return "b"
        return "a" if r.sample % 3 else "c"

    lm = FunctionLM(answer)
    compiled = desic.compile(echo, rows, metric="exact_match", optimizer="labeled", lm=lm, progress=False,
                             sampling=[desic.Majority(3), desic.Majority(5)])
    node = compiled.program.nodes[0]
    assert node.sampling is not None and node.sampling.kind == "majority" and node.sampling.n == 3
    notes = [c.note for c in compiled.history]
    assert "sampling: majority n=3" in notes and "sampling: majority n=5" in notes
    # when sampling does not help, the plain program stays (a tie keeps the cheaper one)
    same = desic.compile(echo, rows, metric="exact_match", optimizer="labeled", lm=FakeLM(default="a"),
                         progress=False, sampling=[desic.Majority(3)])
    assert same.program.nodes[0].sampling is None
    with pytest.raises(ConfigError, match="sampling= takes a list"):
        desic.compile(echo, rows, metric="exact_match", lm=lm, sampling=["majority"])  # type: ignore[list-item]


@desic.signature
def echo(question: str) -> str:
    """Answer."""


def ensemble_program(**options: Any) -> desic.CompiledPipeline[..., Any]:
    rows = [{"country": c, "output": a} for c, a in TRUTH.items()]
    return desic.compile(capital, rows, metric="exact_match", optimizer="random_search", lm=FunctionLM(capital_answer),
                         ensemble=3, progress=False, seed=1, concurrency=1, **options)


def capital_answer(r: LMRequest) -> str:
    country = last_user(r).split("country:")[-1].strip().splitlines()[0].strip()
    return TRUTH.get(country, "?")


def test_an_ensemble_travels_in_the_artifact_and_loads_without_code(tmp_path: Path) -> None:
    compiled = ensemble_program()
    path = compiled.save(tmp_path / "capital.json")
    variants = json.loads(path.read_text())["nodes"][0]["variants"]
    assert len(variants) == 2 and all(v["demos"] for v in variants)  # plain data: the members' demos
    loaded = desic.load(path)  # no code: the signature is rebuilt from the artifact
    assert loaded.program == compiled.program
    prompts = loaded.prompts(country="Peru")
    assert prompts == compiled.prompts(country="Peru")
    assert list(prompts) == ["capital", "capital/variant-1", "capital/variant-2"]
    assert len({json.dumps(m) for m in prompts.values()}) == 3  # three members, three prompts
    lm = FunctionLM(capital_answer)
    with desic.context(lm=lm):
        assert loaded(country="Peru") == "Lima"
    # what prompts() shows is exactly what the members send
    assert sorted(json.dumps(r.messages) for r in lm.calls) == sorted(json.dumps(m) for m in prompts.values())


def test_the_prompts_of_every_ensemble_member_are_pinned(prompt_snapshot: Any) -> None:
    prompts = prompt_snapshot(ensemble_program(), country="Chad")
    assert len(prompts) == 3 and all("Chad" in str(m[-1]["content"]) for m in prompts.values())


def test_an_ensemble_that_the_budget_stops_keeps_the_single_best_program() -> None:
    total = ensemble_program().usage.calls
    capped = ensemble_program(max_calls=total - 2)  # runs out while the ensemble is scored
    assert capped.stopped_by == "max_calls" and capped.usage.calls <= total - 2
    assert capped.program.nodes[0].variants == ()
    # the unfinished ensemble was never recorded as a candidate
    assert not any("ensemble" in c.note or c.program.nodes[0].variants for c in capped.history)
