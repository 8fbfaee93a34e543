# mypy: disable-error-code="empty-body"
"""Per-input demos: the ``knn`` optimizer, the node option the search optimizers choose,
the choice of neighbours, artifacts, prompts, reports."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from pydantic import BaseModel

import desic
from desic import ir
from desic.lm import LMRequest
from desic.optimize import resolve
from desic.pipeline import as_pipeline
from desic.render import choose_demos, leave_one_out, leaving_one_out, render_messages
from desic.report import build_report
from desic.testing import FunctionLM, last_input

PromptSnapshot = Callable[..., dict[str, list[dict[str, str]]]]

Team = Literal["billing", "account", "technical", "shipping"]
KEYWORDS = {"invoice": "billing", "password": "account", "crash": "technical", "parcel": "shipping"}
NAMES = ("alder", "birch", "cedar", "dogwood", "elm", "fir", "gum", "hazel", "ivy", "juniper")


class Route(BaseModel):
    team: Team


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket."""


def rows(names: tuple[str, ...]) -> list[dict[str, str]]:
    # each ticket: one keyword that decides the team, and a name no other ticket has
    return [{"ticket": f"{kw} problem for {name}", "team": team} for name in names for kw, team in KEYWORDS.items()]


TRAIN = rows(NAMES[:6])
VAL = rows(NAMES[6:])


def copycat(request: LMRequest) -> Any:
    """A model that answers what the demo nearest the question (the last one) answered."""
    if request.node_id != "route":
        return {"instruction": f"Route the ticket (variant {request.params.seed})."}
    answers = [m["content"] for m in request.messages[1:-1] if m["role"] == "assistant"]
    return json.loads(answers[-1]) if answers else {"team": "shipping"}


def node_with_pool(pool: list[tuple[str, str]], k: int) -> ir.Node:
    spec = route.spec
    demos = tuple(ir.Demo(inputs={"ticket": t}, output={"team": team}) for t, team in pool)
    return ir.Node(id="route", signature=spec, select=ir.DemoSelect(mode="knn", k=k, pool=demos))


# --- choosing the neighbours ---------------------------------------------------------------


def test_the_nearest_pool_demos_are_chosen_most_similar_last() -> None:
    node = node_with_pool(
        [("invoice wrong", "billing"), ("parcel late", "shipping"), ("parcel lost in transit", "shipping"),
         ("password reset", "account")],
        k=2,
    )
    assert choose_demos(node, {"ticket": "my parcel is lost"}) == (1, 2)  # 2 shares "parcel" and "lost"
    assert choose_demos(node, {"ticket": "reset my password please"})[-1] == 3
    # the same query gives the same choice (and the same prompt) every time
    prompts = {json.dumps(render_messages(node, {"ticket": "invoice and parcel"})) for _ in range(5)}
    assert len(prompts) == 1
    # nothing in common: ties go to the earlier pool demos
    assert choose_demos(node, {"ticket": "zebra"}) == (1, 0)


def test_a_pool_demo_with_the_very_same_input_is_shown_except_while_compiling() -> None:
    node = node_with_pool([("invoice wrong", "billing"), ("invoice wrong twice", "billing"), ("parcel", "shipping")], k=1)
    assert choose_demos(node, {"ticket": "invoice wrong"}) == (0,)  # the nearest of all
    with leave_one_out():  # a compile scoring the rows the pool came from: never the row itself
        assert choose_demos(node, {"ticket": "invoice wrong"}) == (1,)
        with leave_one_out(False):
            assert choose_demos(node, {"ticket": "invoice wrong"}) == (0,)
        assert leaving_one_out()
    assert not leaving_one_out()


def parrot(request: LMRequest) -> Any:
    """A base model that copies the answer of a demo with its very input, else guesses."""
    ticket = last_input(request).split("ticket:")[-1].strip()
    turns = request.messages[1:-1]
    for user, reply in zip(turns[::2], turns[1::2]):
        if user["content"].split("ticket:")[-1].strip() == ticket:
            return json.loads(reply["content"])
    return {"team": "billing"}


def test_a_compile_scores_per_input_demos_leave_one_out_and_inference_shows_the_twin() -> None:
    rows = [{"ticket": f"case {i}", "team": ("billing", "shipping", "technical")[i % 3]} for i in range(12)]
    # validated on its own training rows: every per-input candidate's pool holds each row
    compiled = desic.compile(route, rows, valset=rows, metric=desic.metrics.exact_match, lm=FunctionLM(parrot),
                             optimizer="random_search", num_candidates=2, progress=False)
    per_input = [c for c in compiled.history if c.split == "val" and "per-input" in c.note]
    assert per_input
    # while compiling no row saw its own label: the parrot only guessed (a third right)
    assert all(c.score is not None and c.score < 0.5 for c in per_input)
    knn = desic.CompiledPipeline(as_pipeline(route), per_input[0].program)
    with desic.context(lm=FunctionLM(parrot)):  # afterwards a training twin is the best demo there is
        assert desic.evaluate(knn, rows, desic.metrics.exact_match, progress=False).score == 1.0


def test_fields_restrict_what_is_matched() -> None:
    spec = ir.SignatureSpec(
        name="answer", instructions="", output_schema={"type": "object", "properties": {"a": {"type": "string"}}},
        inputs=(ir.FieldSpec(name="question", schema={"type": "string"}), ir.FieldSpec(name="context", schema={"type": "string"})),
    )
    pool = (
        ir.Demo(inputs={"question": "ferry times", "context": "lighthouse lighthouse"}, output={"a": "x"}),
        ir.Demo(inputs={"question": "lighthouse age", "context": "ferry"}, output={"a": "y"}),
    )
    node = ir.Node(id="answer", signature=spec, select=ir.DemoSelect(mode="knn", k=1, pool=pool, fields=("question",)))
    assert choose_demos(node, {"question": "when is the ferry", "context": "lighthouse"}) == (0,)
    assert node.select is not None
    everything = msgspec.structs.replace(node, select=msgspec.structs.replace(node.select, fields=()))
    assert choose_demos(everything, {"question": "when is the ferry", "context": "lighthouse lighthouse"}) == (0,)


# --- the knn optimizer ---------------------------------------------------------------------


def test_knn_beats_fixed_demos_where_the_answer_follows_the_nearest_example() -> None:
    fixed = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer="labeled")
    # baseline=False: each name has four training tickets, so leave-one-out scoring shows the
    # same name's other tickets first and rates knn below zero-shot; new names (VAL) do not
    knn = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer="knn", k=2,
                        baseline=False)
    node = knn.program.nodes[0]
    assert node.select is not None and node.select.per_input and node.select.k == 2
    # the pool: every labelled row (the copycat gets them right with labelled demos shown)
    assert {d.inputs["ticket"] for d in node.select.pool} == {r["ticket"] for r in TRAIN}
    assert "per-input demos: 2 of 24 (bm25)" in knn.inspect()
    lm = FunctionLM(copycat)
    assert knn.evaluate(VAL, desic.metrics.exact_match, lm=lm).score == 1.0
    assert fixed.evaluate(VAL, desic.metrics.exact_match, lm=lm).score < 0.5


def test_knn_pools_bootstrapped_traces_first_then_labelled_rows() -> None:
    def right_on_invoices(request: LMRequest) -> Any:
        return {"team": "billing" if "invoice" in last_input(request) else "shipping"}

    compiled = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(right_on_invoices),
                             optimizer="knn", k=3, teacher_demos=0)
    select = compiled.program.nodes[0].select
    assert select is not None
    sources = [d.source for d in select.pool]
    accepted = sources.count("bootstrap")
    assert accepted == 12  # the invoice and parcel rows the model got right
    assert sources == ["bootstrap"] * accepted + ["labeled"] * (len(TRAIN) - accepted)
    assert len(select.pool) == len(TRAIN)  # an accepted row is not in the pool twice
    small = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(right_on_invoices),
                          optimizer="knn", k=3, pool=5, bootstrap=False)
    assert small.program.nodes[0].select is not None
    assert [d.source for d in small.program.nodes[0].select.pool] == ["labeled"] * 5


def test_knn_options_are_checked_before_any_call() -> None:
    for options, message in (
        ({"k": 0}, "k=0 is out of range"),
        ({"pool": 0}, "pool=0 is out of range"),
        ({"by": "magic"}, "by='magic' is unknown"),
        ({"fields": "ticket"}, "fields must be a list"),
    ):
        with pytest.raises(desic.ConfigError, match=message):
            resolve("knn", **options)
    with pytest.raises(desic.ConfigError, match="name no input of node 'route'"):
        desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer="knn",
                      fields=["question"], bootstrap=False)


@pytest.mark.parametrize("name", ["random_search", "mipro"])
def test_search_optimizers_choose_per_input_demos_when_they_win(name: str) -> None:
    options: dict[str, Any] = {"max_demos": 2, "valset": VAL}
    if name == "mipro":
        options.update(num_instructions=2, num_demo_sets=2, trials=6, minibatch=4, full_every=3, startup=6)
    compiled = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat),
                             optimizer=name, seed=1, **options)
    node = compiled.program.nodes[0]
    assert node.select is not None and node.select.per_input
    assert compiled.score == 1.0
    assert any("knn" in c.note or (c.program.nodes and c.program.nodes[0].select) for c in compiled.history)
    off = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat),
                        optimizer=name, seed=1, per_input=False, **options)
    assert all(c.program.nodes[0].select is None for c in off.history if c.program.nodes)
    assert (off.score or 0.0) < 1.0


@pytest.mark.parametrize("name", ["random_search", "mipro"])
def test_search_optimizers_can_match_per_input_demos_by_embeddings(name: str, tmp_path: Path) -> None:
    options: dict[str, Any] = {"max_demos": 2, "valset": VAL}
    if name == "mipro":
        options.update(num_instructions=2, num_demo_sets=2, trials=6, minibatch=4, full_every=3, startup=6)
    compiled = desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat),
                             optimizer=name, seed=1, per_input="embeddings", **options)
    select = compiled.program.nodes[0].select
    assert select is not None and select.per_input and select.by == "embeddings"
    assert len(select.vectors) == len(select.pool) > select.k  # the pool embedded by the task's LM
    assert compiled.score == 1.0 and compiled.program.meta.optimizer_config["per_input"] == "embeddings"
    loaded = desic.load(compiled.save(tmp_path / "route.json"))  # no code
    with desic.context(lm=FunctionLM(copycat)):
        assert loaded.evaluate(VAL, desic.metrics.exact_match).score == 1.0
    with pytest.raises(desic.ConfigError, match="per_input"):
        desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer=name,
                      per_input="cosine")


# --- artifacts, prompts, drift, reports ------------------------------------------------------


def knn_program() -> desic.CompiledPipeline[..., Any]:
    return desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer="knn", k=2,
                         baseline=False)


def test_the_artifact_carries_the_pool_and_loads_without_code(tmp_path: Path) -> None:
    compiled = knn_program()
    path = compiled.save(tmp_path / "route.json")
    data = json.loads(path.read_text())
    select = data["nodes"][0]["select"]
    assert select["mode"] == "knn" and select["k"] == 2 and len(select["pool"]) == 24  # plain data
    loaded = desic.load(path)  # no code: the signature is rebuilt from the artifact
    assert loaded.program == compiled.program
    for ticket in ("password problem for ivy", "my parcel never came"):
        assert loaded.prompts(ticket=ticket) == compiled.prompts(ticket=ticket)
    with desic.context(lm=FunctionLM(copycat)):
        assert loaded(ticket="crash problem for oak").team == "technical"


def test_the_prompt_shows_the_demos_chosen_for_the_inputs(prompt_snapshot: PromptSnapshot) -> None:
    prompts = prompt_snapshot(knn_program(), ticket="my password stopped working after the crash")
    shown = [m["content"] for m in prompts["route"][1:-1] if m["role"] == "user"]
    assert len(shown) == 2 and all("password" in t or "crash" in t for t in shown)


def test_drift_is_still_caught_for_a_per_input_program(tmp_path: Path) -> None:
    path = knn_program().save(tmp_path / "route.json")

    @desic.signature
    def route(ticket: str, urgent: bool) -> Route:  # the code changed since the compile
        """Route the ticket."""

    loaded = desic.load(path, pipeline=route)
    with pytest.raises(desic.ArtifactError, match="input 'urgent': added"):
        loaded.prompts(ticket="my parcel", urgent=True)


@pytest.mark.parametrize(
    ("select", "message"),
    [
        ({"mode": "nearest"}, "demo mode 'nearest' is unknown"),
        ({"mode": "knn", "k": 0}, "need k >= 1"),
        ({"mode": "knn", "by": "telepathy"}, "demos by 'telepathy' is unknown"),
        ({"mode": "knn", "fields": ["question"]}, "input 'question', which the node lacks"),
        ({"mode": "knn", "pool": [{"inputs": 3}]}, "corrupt"),
    ],
)
def test_a_bad_selection_in_an_artifact_is_an_artifact_error(tmp_path: Path, select: dict[str, Any], message: str) -> None:
    data = json.loads(ir.encode_program(knn_program().program))
    data["nodes"][0]["select"] = select
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(desic.ArtifactError, match=message):
        desic.load(path)


def test_an_older_artifact_without_a_selection_still_loads(tmp_path: Path) -> None:
    data = json.loads(ir.encode_program(knn_program().program))
    del data["nodes"][0]["select"]
    path = tmp_path / "old.json"
    path.write_text(json.dumps(data))
    assert desic.load(path).program.nodes[0].select is None


def test_the_report_shows_the_pool_of_a_per_input_node() -> None:
    compiled = desic.compile(route, TRAIN, optimizer="knn", k=2, bootstrap=False)  # no metric, no LM call
    records = [c.to_record() for c in compiled.history]
    page = build_report({"id": "r1", "pipeline": "route", "optimizer": "knn"}, records)
    assert "per-input demos: 2 of 24 (bm25)" in page
    assert "password problem for alder" in page


# --- per-input demos by the LM's embeddings ---------------------------------------------------


def embeddings_program() -> desic.CompiledPipeline[..., Any]:
    return desic.compile(route, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(copycat), optimizer="knn",
                         k=2, by="embeddings", progress=False)


def test_per_input_demos_by_embeddings_travel_as_vectors_and_choose_the_nearest(tmp_path: Path) -> None:
    compiled = embeddings_program()
    select = compiled.program.nodes[0].select
    assert select is not None and select.by == "embeddings" and len(select.vectors) == len(select.pool) == 24
    data = json.loads(compiled.save(tmp_path / "route.json").read_text())["nodes"][0]["select"]
    assert data["by"] == "embeddings" and len(data["vectors"]) == 24  # plain numbers in the artifact
    loaded = desic.load(tmp_path / "route.json")  # no code
    assert loaded.program == compiled.program
    lm = FunctionLM(copycat)
    with desic.context(lm=lm):
        prompts = loaded.prompts(ticket="password problem for oak")
        assert prompts == compiled.prompts(ticket="password problem for oak")
        assert loaded(ticket="parcel problem for oak").team == "shipping"
        assert loaded(ticket="crash problem for oak").team == "technical"
    shown = [m["content"] for m in prompts["route"][1:-1] if m["role"] == "user"]
    assert len(shown) == 2 and all("password" in t for t in shown)  # the nearest by the LM's embeddings
    assert ["crash problem for oak"] in lm.embed_calls  # the input was embedded by the node's LM
    with pytest.raises(desic.ConfigError, match="needs an LM to embed it"):
        loaded.prompts(ticket="password problem for oak")  # no LM: it cannot choose
    with desic.context(lm=FunctionLM(copycat)):
        report = desic.evaluate(loaded, VAL, desic.metrics.exact_match, progress=False)
    assert report.score == 1.0


def test_embeddings_demos_leave_one_out_while_compiling() -> None:
    select = embeddings_program().program.nodes[0].select
    assert select is not None
    node = ir.Node(id="route", signature=route.spec, select=select)
    twin = {"ticket": "password problem for alder"}  # a training row of the pool
    from desic.render import query_vector
    from desic.testing import fake_embedding

    vector = fake_embedding(twin["ticket"])
    with query_vector("route", vector):
        first = choose_demos(node, twin)
        with leave_one_out():
            held = choose_demos(node, twin)
    assert select.pool[first[-1]].inputs == twin  # afterwards: the twin, nearest of all
    assert all(select.pool[i].inputs != twin for i in held)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda s: s.update(vectors=s["vectors"][:3]), "one vector per pool demo: 3 vectors for 24 demos"),
        (lambda s: s.update(vectors=[v[:5] if i == 2 else v for i, v in enumerate(s["vectors"])]), "same size"),
        (lambda s: s.update(by="bm25"), "only for per-input demos by embeddings"),
    ],
)
def test_bad_vectors_in_an_artifact_are_refused(tmp_path: Path, change: Callable[[dict[str, Any]], None],
                                                message: str) -> None:
    data = json.loads(ir.encode_program(embeddings_program().program))
    change(data["nodes"][0]["select"])
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    with pytest.raises(desic.ArtifactError, match=message):
        desic.load(path)


def test_a_streamed_call_embeds_its_input_before_choosing_demos_too() -> None:
    compiled = embeddings_program()
    lm = FunctionLM(copycat)
    with desic.context(lm=lm):
        items = list(compiled.stream(ticket="crash problem for oak"))
    assert items[-1].done and items[-1].value.team == "technical"
    assert ["crash problem for oak"] in lm.embed_calls
