# mypy: disable-error-code="empty-body"
"""``@desic.pipeline``: tracing (node ids, edges, nesting, async) and ``desic.compile``."""

from __future__ import annotations

import asyncio
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import LMRequest
from desic.pipeline import program_from_runs
from desic.runtime import RunState
from desic.testing import FakeLM, FunctionLM, last_input
from tests.support.overlap import InFlight


class Route(BaseModel):
    team: Literal["billing", "shipping", "tech"]


@desic.signature
def extract(ticket: str) -> str:
    """Extract the customer's issue in a few words."""


@desic.signature
def classify(issue: str) -> Literal["billing", "shipping", "tech"]:
    """Classify the issue."""


@desic.signature
def route(ticket: str) -> Route:
    """Route a support ticket to a team."""


@desic.signature
def reply(ticket: str, team: str) -> str:
    """Write a short reply to the customer."""


@desic.pipeline
def triage(ticket: str) -> str:
    issue = extract(ticket=ticket)
    return classify(issue=issue)


def trace(pipe: desic.Pipeline[..., Any], lm: desic.LM, **inputs: Any) -> tuple[Any, desic.Program]:
    """Run ``pipe`` once and return its result and the program observed."""
    state = RunState()
    with desic.context(lm=lm):
        result = pipe.run(inputs, state)
    return result, program_from_runs(pipe, [state])


def triage_answer(request: LMRequest) -> str:
    """A deterministic two-step model: extract echoes, classify by keyword."""
    text = last_input(request)
    if text.startswith("ticket: "):
        return "issue: " + text.removeprefix("ticket: ")
    if "money" in text or "charged" in text:
        return "billing"
    if "parcel" in text:
        return "shipping"
    return "tech"


# --- tracing --------------------------------------------------------------------------------


def test_pipeline_decorator_bare_and_with_name() -> None:
    assert isinstance(triage, desic.Pipeline)
    assert triage.name == "triage"
    assert triage.input_names == ("ticket",)
    assert triage.ref.endswith(":triage")

    @desic.pipeline(name="custom")
    def other(ticket: str) -> str:
        return extract(ticket=ticket)

    assert other.name == "custom"


def test_pipeline_call_returns_the_function_result() -> None:
    with desic.context(lm=FunctionLM(triage_answer)):
        assert triage("I was charged twice") == "billing"
        assert triage(ticket="my parcel is lost") == "shipping"


def test_node_ids_name_then_numbered_then_explicit() -> None:
    @desic.pipeline
    def three(ticket: str) -> str:
        a = extract(ticket=ticket)
        b = extract(ticket=a)
        c = extract.named("final")(ticket=b)
        return c

    result, program = trace(three, FakeLM(["one", "two", "three"]), ticket="t")
    assert result == "three"
    assert program.node_ids == ("extract", "extract#2", "final")
    assert all(n.signature.name == "extract" for n in program.nodes)
    assert program.pipeline == three.ref


def test_node_ids_restart_for_each_run() -> None:
    lm = FakeLM(default="tech")
    ids = []
    for _ in range(2):
        _, program = trace(triage, lm, ticket="t")
        ids.append(program.node_ids)
    assert ids == [("extract", "classify"), ("extract", "classify")]
    assert [r.node_id for r in lm.calls] == ["extract", "classify"] * 2


def test_edges_are_observed_from_data_flow() -> None:
    _, program = trace(triage, FunctionLM(triage_answer), ticket="parcel gone")
    assert [(e.src, e.dst, e.field) for e in program.edges] == [("extract", "classify", "issue")]


@pytest.mark.filterwarnings("error::DeprecationWarning")
def test_edges_follow_model_fields_and_skip_pipeline_inputs() -> None:
    @desic.pipeline
    def routed_reply(ticket: str) -> str:
        decision = route(ticket=ticket)
        return reply(ticket=ticket, team=decision.team)

    lm = FakeLM([{"team": "shipping"}, "On its way."])
    result, program = trace(routed_reply, lm, ticket="where is my parcel")
    assert result == "On its way."
    # ``team`` came from route's output; ``ticket`` came from the pipeline's input.
    assert [(e.src, e.dst, e.field) for e in program.edges] == [("route", "reply", "team")]


def test_independent_nodes_have_no_edges() -> None:
    @desic.pipeline
    def two(ticket: str) -> tuple[str, str]:
        return extract(ticket=ticket), extract.named("again")(ticket=ticket)

    _, program = trace(two, FakeLM(["a", "b"]), ticket="t")
    assert program.node_ids == ("extract", "again")
    assert program.edges == ()


def test_nested_pipelines_share_one_run() -> None:
    @desic.pipeline
    def outer(ticket: str) -> str:
        first = triage(ticket=ticket)  # a nested pipeline: its nodes join this run
        return extract(ticket=first)

    result, program = trace(outer, FunctionLM(triage_answer), ticket="charged twice")
    assert result == "issue: billing"
    assert program.node_ids == ("extract", "classify", "extract#2")
    edges = {(e.src, e.dst, e.field) for e in program.edges}
    assert edges == {("extract", "classify", "issue"), ("classify", "extract#2", "ticket")}


def test_async_pipeline_gathers_independent_calls_concurrently() -> None:
    @desic.pipeline
    async def both(ticket: str) -> tuple[str, str]:
        a, b = await asyncio.gather(
            extract.acall(ticket=ticket),
            extract.named("second").acall(ticket=ticket + "!"),
        )
        return a, b

    assert both.is_async
    # each call waits inside the LM until the other has arrived: one after the other, they never meet
    inflight = InFlight(2)

    async def meet(request: LMRequest) -> str:
        async with inflight.aio():
            return "loud" if "!" in last_input(request) else "calm"

    lm = FunctionLM(meet)

    async def main() -> tuple[str, str]:
        with desic.context(lm=lm):
            return await both(ticket="hello")

    result = asyncio.run(main())
    assert result == ("calm", "loud")
    assert len(lm.calls) == 2
    assert inflight.peak == 2, "the two calls ran one after the other"


def test_async_pipeline_node_ids_follow_call_order_when_gathered() -> None:
    @desic.pipeline
    async def twice(ticket: str) -> list[str]:
        return list(
            await asyncio.gather(extract.acall(ticket=ticket), extract.acall(ticket=ticket))
        )

    lm = FakeLM(default="x", latency=0.01)
    state = RunState()
    with desic.context(lm=lm):
        assert twice.run({"ticket": "t"}, state) == ["x", "x"]
    assert tuple(state.nodes_seen) == ("extract", "extract#2")


def test_pipeline_refuses_var_args() -> None:
    def bad(*tickets: str) -> str:
        return ""

    with pytest.raises(desic.SignatureError, match="not \\*args"):
        desic.pipeline(bad)


# --- trainset validation ----------------------------------------------------------------------


def test_trainset_missing_field_names_row_and_field_before_any_lm_call() -> None:
    lm = FakeLM(default="billing")
    rows = [{"ticket": "fine", "output": "billing"}, {"tikcet": "typo", "output": "tech"}]
    with pytest.raises(desic.DataError) as info:
        desic.compile(triage, rows, metric=desic.metrics.exact_match, lm=lm)
    assert info.value.row == 1
    assert info.value.field == "ticket"
    assert "row 1" in str(info.value)
    assert "'ticket'" in str(info.value)
    assert lm.calls == []


def test_trainset_wrong_type_names_row_and_field_before_any_lm_call() -> None:
    @desic.signature
    def count(text: str, limit: int) -> int:
        """Count."""

    @desic.pipeline
    def counting(text: str, limit: int) -> int:
        return count(text=text, limit=limit)

    lm = FakeLM(default=1)
    rows = [
        {"text": "a", "limit": 3, "output": 1},
        {"text": "b", "limit": "4", "output": 1},  # numeric string: coerced, fine
        {"text": "c", "limit": "many", "output": 1},
    ]
    with pytest.raises(desic.DataError) as info:
        desic.compile(counting, rows, optimizer="labeled", lm=lm)
    assert (info.value.row, info.value.field) == (2, "limit")
    assert "row 2" in str(info.value) and "'limit'" in str(info.value)
    assert lm.calls == []


def test_valset_is_validated_too() -> None:
    lm = FakeLM(default="billing")
    with pytest.raises(desic.DataError, match="valset row 0"):
        desic.compile(
            triage,
            [{"ticket": "a", "output": "billing"}],
            valset=[{"text": "no ticket"}],
            metric=desic.metrics.exact_match,
            lm=lm,
        )
    assert lm.calls == []


def test_empty_trainset_is_refused() -> None:
    with pytest.raises(desic.DataError, match="empty"):
        desic.compile(triage, [], metric=desic.metrics.exact_match, lm=FakeLM())


# --- compile ------------------------------------------------------------------------------


ROUTE_ROWS = [
    {"ticket": "I was charged twice", "team": "billing"},
    {"ticket": "my parcel never arrived", "team": "shipping"},
    {"ticket": "the app crashes on start", "team": "tech"},
]


def test_compile_labeled_takes_demos_from_the_labels() -> None:
    @desic.pipeline
    def routing(ticket: str) -> Route:
        return route(ticket=ticket)

    lm = FakeLM(default={"team": "tech"})
    compiled = desic.compile(routing, ROUTE_ROWS, optimizer="labeled", lm=lm)
    assert isinstance(compiled, desic.CompiledPipeline)
    node = compiled.program.node("route")
    assert node is not None
    got = {(d.inputs["ticket"], d.output["team"], d.source) for d in node.demos}
    assert got == {(r["ticket"], r["team"], "labeled") for r in ROUTE_ROWS}
    assert compiled.program.meta.optimizer == "labeled"
    assert compiled.program.meta.optimizer_config["max_demos"] == 8
    assert compiled.program.meta.lm == {"provider": "fake", "model": "fake"}
    assert compiled.program.meta.trainset_fingerprint
    assert compiled.program.pipeline == routing.ref


def test_compile_labeled_respects_max_demos() -> None:
    compiled = desic.compile(
        route, ROUTE_ROWS, optimizer="labeled", max_demos=2, lm=FakeLM(default={"team": "tech"})
    )
    (node,) = compiled.program.nodes
    assert len(node.demos) == 2
    assert {d.inputs["ticket"] for d in node.demos} <= {r["ticket"] for r in ROUTE_ROWS}


def test_compile_bootstrap_keeps_only_traces_the_metric_accepts() -> None:
    rows = [
        {"ticket": "I was charged twice", "output": "billing"},
        {"ticket": "money taken without reason", "output": "billing"},
        {"ticket": "my parcel never arrived", "output": "shipping"},
        {"ticket": "the screen stays black", "output": "tech"},
    ]

    def sometimes_wrong(request: LMRequest) -> str:
        text = last_input(request)
        if text.startswith("ticket: "):
            return "issue: " + text.removeprefix("ticket: ")
        if "parcel" in text or "black" in text:
            return "billing"  # wrong for both
        return triage_answer(request)

    lm = FunctionLM(sometimes_wrong)
    compiled = desic.compile(
        triage, rows, metric=desic.metrics.exact_match, optimizer="bootstrap", max_labeled=0, lm=lm, baseline=False
    )
    assert compiled.program.node_ids == ("extract", "classify")
    extract_node = compiled.program.node("extract")
    classify_node = compiled.program.node("classify")
    assert extract_node is not None and classify_node is not None

    accepted = {"I was charged twice", "money taken without reason"}
    assert {d.inputs["ticket"] for d in extract_node.demos} == accepted
    assert {d.inputs["issue"] for d in classify_node.demos} == {f"issue: {t}" for t in accepted}
    assert all(d.source == "bootstrap" for d in extract_node.demos + classify_node.demos)
    assert all(d.output == {"output": "billing"} for d in classify_node.demos)
    for demo in extract_node.demos:
        assert demo.output == {"output": "issue: " + demo.inputs["ticket"]}
    assert compiled.history[-1].score == pytest.approx(0.5)
    assert compiled.program.edges[0].src == "extract"


def test_compile_bootstrap_fills_with_labeled_demos_from_rejected_rows() -> None:
    def wrong_for_parcels(request: LMRequest) -> dict[str, str]:
        return {"team": "billing"}

    compiled = desic.compile(
        route,
        ROUTE_ROWS,
        metric=desic.metrics.exact_match,
        optimizer="bootstrap",
        lm=FunctionLM(wrong_for_parcels),
    )
    (node,) = compiled.program.nodes
    by_source: dict[str, set[tuple[str, str]]] = {}
    for d in node.demos:
        by_source.setdefault(d.source, set()).add((d.inputs["ticket"], d.output["team"]))
    assert by_source["bootstrap"] == {("I was charged twice", "billing")}
    # Rejected rows only come back with their *labelled* (correct) answer.
    assert by_source["labeled"] == {
        ("my parcel never arrived", "shipping"),
        ("the app crashes on start", "tech"),
    }


def test_compile_bootstrap_demos_render_as_turns() -> None:
    lm = FunctionLM(triage_answer)
    compiled = desic.compile(
        triage,
        [{"ticket": "charged twice", "output": "billing"}],
        metric=desic.metrics.exact_match,
        lm=lm,
    )
    with desic.context(lm=lm):
        prompts = compiled.prompts(ticket="parcel lost")
    assert list(prompts) == ["extract", "classify"]
    assert [m["role"] for m in prompts["classify"]] == ["system", "user", "assistant", "user"]
    assert prompts["classify"][1]["content"] == "issue: issue: charged twice"
    assert prompts["classify"][2]["content"] == '{"output": "billing"}'
    assert prompts["classify"][3]["content"] == "issue: issue: parcel lost"


def test_compiled_pipeline_is_callable_like_the_original() -> None:
    lm = FunctionLM(triage_answer)
    compiled = desic.compile(
        triage,
        [{"ticket": "charged", "output": "billing"}],
        metric=desic.metrics.exact_match,
        lm=lm,
    )
    with desic.context(lm=lm):
        assert compiled("my parcel is late") == "shipping"
        assert compiled(ticket="money gone") == "billing"
    # The compiled demos were sent with the calls.
    assert any(m["role"] == "assistant" for m in lm.calls[-1].messages)


def test_prompts_without_an_lm_stops_after_the_first_node() -> None:
    compiled = desic.compile(
        triage,
        [{"ticket": "charged", "output": "billing"}],
        metric=desic.metrics.exact_match,
        lm=FunctionLM(triage_answer),
    )
    prompts = compiled.prompts(ticket="hello")
    assert list(prompts) == ["extract"]
    assert prompts["extract"][-1] == {"role": "user", "content": "ticket: hello"}
    assert prompts["extract"][0]["content"].startswith("Extract the customer's issue")


def test_compiled_evaluate_reports_scores_and_usage() -> None:
    lm = FunctionLM(triage_answer)
    compiled = desic.compile(
        triage,
        [{"ticket": "charged", "output": "billing"}],
        metric=desic.metrics.exact_match,
        lm=lm,
    )
    devset = [
        {"ticket": "charged twice", "output": "billing"},
        {"ticket": "parcel lost", "output": "shipping"},
        {"ticket": "parcel lost", "output": "tech"},  # deliberately mislabelled
        {"ticket": "crash", "output": "tech"},
    ]
    with desic.context(lm=lm):
        report = compiled.evaluate(devset, desic.metrics.exact_match)
    assert isinstance(report, desic.EvaluationReport)
    assert report.score == pytest.approx(0.75)
    assert [r.score for r in report.results] == [1.0, 1.0, 0.0, 1.0]
    assert [r.output for r in report.results] == ["billing", "shipping", "shipping", "tech"]
    assert report.errors == 0
    assert report.usage.calls == 8
    assert report.usage.total_tokens > 0


def test_evaluate_records_one_failure_without_stopping() -> None:
    def flaky(request: LMRequest) -> str:
        if "boom" in last_input(request):
            raise RuntimeError("model exploded")
        return triage_answer(request)

    report = desic.evaluate(
        triage,
        [{"ticket": "boom", "output": "tech"}, {"ticket": "charged", "output": "billing"}],
        desic.metrics.exact_match,
        lm=FunctionLM(flaky),
    )
    assert report.errors == 1
    assert "model exploded" in (report.results[0].error or "")
    assert report.results[1].score == 1.0
    assert report.score == pytest.approx(0.5)


def test_compiled_inspect_shows_nodes_demos_and_edges() -> None:
    lm = FunctionLM(triage_answer)
    compiled = desic.compile(
        triage,
        [{"ticket": "charged", "output": "billing"}],
        valset=[{"ticket": "parcel", "output": "shipping"}],
        metric=desic.metrics.exact_match,
        lm=lm,
    )
    text = compiled.inspect()
    assert text.splitlines()[0] == f"pipeline {triage.ref}  (2 nodes)"
    assert "optimizer bootstrap, score 1.000 on valset" in text
    assert "[extract] predict(ticket) -> output; 1 demo" in text
    assert "[classify] predict(issue) -> output; 1 demo" in text
    assert "extract --issue--> classify" in text
    assert compiled.score == 1.0


def test_unknown_optimizer_is_a_config_error() -> None:
    lm = FakeLM(default="x")
    with pytest.raises(desic.ConfigError, match="unknown optimizer 'magic'.*bootstrap.*labeled"):
        desic.compile(triage, [{"ticket": "a", "output": "billing"}], optimizer="magic", lm=lm)
    assert lm.calls == []


def test_bad_optimizer_option_is_a_config_error() -> None:
    with pytest.raises(desic.ConfigError, match="optimizer 'labeled'"):
        desic.compile(
            triage,
            [{"ticket": "a", "output": "billing"}],
            optimizer="labeled",
            max_dmeos=3,
            lm=FakeLM(),
        )


def test_bootstrap_without_metric_is_a_config_error() -> None:
    lm = FakeLM(default="x")
    with pytest.raises(desic.ConfigError, match="needs a metric"):
        desic.compile(triage, [{"ticket": "a", "output": "billing"}], optimizer="bootstrap", lm=lm)
    assert lm.calls == []


def test_compile_a_bare_signature() -> None:
    lm = FakeLM(default={"team": "tech"})
    compiled = desic.compile(route, ROUTE_ROWS, optimizer="labeled", lm=lm)
    assert compiled.program.node_ids == ("route",)
    assert compiled.program.pipeline == route.spec.ref
    (node,) = compiled.program.nodes
    assert len(node.demos) == 3
    with desic.context(lm=FakeLM([{"team": "billing"}, {"team": "shipping"}])) as ctx:
        assert compiled(ticket="refund please") == Route(team="billing")
        assert compiled("where is my parcel") == Route(team="shipping")  # positional, like route()
    sent = ctx.lm.calls[0].messages  # type: ignore[union-attr]
    assert len(sent) == 1 + 2 * 3 + 1
