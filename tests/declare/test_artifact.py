# mypy: disable-error-code="empty-body"
"""Artifacts: save/load round trips, running without user code, drift, corruption, secrets."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Literal

import pytest
from pydantic import BaseModel

import desic
from desic.lm import LMRequest
from desic.testing import FakeLM, FakeOpenAIServer, FunctionLM, allow_model_requests, last_input


class Address(BaseModel):
    city: str
    country: str = "NL"


class Contact(BaseModel):
    """Who wrote the ticket."""

    kind: Literal["customer", "partner", "spam"]
    address: Address
    tags: list[str]
    phone: str | None = None


@desic.signature
def who(ticket: str) -> Contact:
    """Identify who wrote the ticket."""


@desic.signature
def extract(ticket: str) -> str:
    """Extract the issue."""


@desic.signature
def classify(issue: str) -> Literal["billing", "tech"]:
    """Classify the issue."""


@desic.pipeline
def triage(ticket: str) -> str:
    return classify(issue=extract(ticket=ticket))


def triage_answer(request: LMRequest) -> str:
    text = last_input(request)
    if text.startswith("ticket: "):
        return "issue: " + text.removeprefix("ticket: ")
    return "billing" if "money" in text else "tech"


TRIAGE_ROWS = [
    {"ticket": "money gone", "output": "billing"},
    {"ticket": "app crash", "output": "tech"},
]

CONTACT_ROWS = [
    {
        "ticket": "Hi, Ann from Utrecht here",
        "kind": "customer",
        "address": {"city": "Utrecht", "country": "NL"},
        "tags": ["vip"],
        "phone": None,
    },
    {
        "ticket": "BUY CHEAP WATCHES",
        "kind": "spam",
        "address": {"city": "Nowhere", "country": "XX"},
        "tags": [],
        "phone": None,
    },
]


@pytest.fixture
def compiled_triage() -> desic.CompiledPipeline[..., Any]:
    return desic.compile(
        triage, TRIAGE_ROWS, metric=desic.metrics.exact_match, lm=FunctionLM(triage_answer)
    )


# --- round trips ----------------------------------------------------------------------------


def test_save_then_load_gives_the_same_program(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    path = compiled_triage.save(tmp_path / "sub" / "triage.json")
    assert path == tmp_path / "sub" / "triage.json"
    loaded = desic.load(path, pipeline=triage)
    assert isinstance(loaded, desic.CompiledPipeline)
    assert loaded.program == compiled_triage.program
    assert loaded.program.node_ids == ("extract", "classify")
    assert all(len(n.demos) == 2 for n in loaded.program.nodes)
    # Saving is deterministic and leaves no temporary files behind.
    again = loaded.save(tmp_path / "again.json")
    assert again.read_bytes() == path.read_bytes()
    assert sorted(p.name for p in (tmp_path / "sub").iterdir()) == ["triage.json"]


def test_save_to_an_unwritable_place_names_it_and_keeps_the_old_file(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file")
    with pytest.raises(desic.StorageError, match="not-a-dir"):
        compiled_triage.save(blocker / "triage.json")
    target = compiled_triage.save(tmp_path / "t.json")
    before = target.read_bytes()
    (tmp_path / "t.json.blocked").mkdir()
    with pytest.raises(desic.StorageError, match="t.json.blocked"):
        compiled_triage.save(tmp_path / "t.json.blocked")  # a directory is in the way
    assert target.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["not-a-dir", "t.json", "t.json.blocked"]


def test_loaded_pipeline_answers_with_its_demos(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    loaded = desic.load(compiled_triage.save(tmp_path / "t.json"), pipeline=triage)
    lm = FunctionLM(triage_answer)
    with desic.context(lm=lm):
        assert loaded(ticket="where is my money") == "billing"
    assert [r.node_id for r in lm.calls] == ["extract", "classify"]
    assert [m["role"] for m in lm.calls[1].messages] == [
        "system",
        "user",
        "assistant",
        "user",
        "assistant",
        "user",
    ]


def test_artifact_is_versioned_plain_json(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    data = json.loads(compiled_triage.save(tmp_path / "t.json").read_text("utf-8"))
    assert data["format"] == "desic.program"
    assert data["format_version"] == 1
    assert data["meta"]["desic_version"] == desic.__version__
    assert data["meta"]["optimizer"] == "bootstrap"
    assert [n["id"] for n in data["nodes"]] == ["extract", "classify"]
    assert data["edges"] == [{"src": "extract", "dst": "classify", "field": "issue"}]


def test_single_signature_artifact_runs_without_pipeline(tmp_path: Path) -> None:
    compiled = desic.compile(
        who, CONTACT_ROWS, optimizer="labeled", lm=FakeLM(default=CONTACT_ROWS[0])
    )
    loaded = desic.load(compiled.save(tmp_path / "who.json"))
    answer = {"kind": "partner", "address": {"city": "Gent", "country": "BE"}, "tags": ["reseller"]}
    lm = FakeLM([answer, answer])
    with desic.context(lm=lm):
        result = loaded(ticket="We resell your product in Gent")
        positional = loaded("again")
    assert result.kind == "partner"
    assert result.address.city == "Gent"
    assert result.tags == ["reseller"]
    assert result.phone is None
    assert positional.model_dump() == result.model_dump()
    # The demos of the artifact were sent.
    assert len(lm.calls[0].messages) == 1 + 2 * 2 + 1
    assert lm.calls[0].node_id == "who"


@desic.signature(strategy="chain_of_thought")
def solve(question: str) -> int:
    """Solve the arithmetic question."""


def test_named_chain_of_thought_artifact_keeps_node_id_and_strategy(tmp_path: Path) -> None:
    rows = [{"question": "1+1", "output": 2}]
    lm = FakeLM(default={"reasoning": "r", "output": 2})
    compiled = desic.compile(solve.named("solver"), rows, optimizer="labeled", lm=lm)
    loaded = desic.load(compiled.save(tmp_path / "solve.json"))
    (node,) = loaded.program.nodes
    assert (node.id, node.strategy) == ("solver", "chain_of_thought")
    answer = FakeLM([{"reasoning": "1 plus 2", "output": 3}])
    with desic.context(lm=answer):
        assert loaded(question="1+2") == 3
    request = answer.calls[0]
    assert request.node_id == "solver"
    assert list(request.response_model.model_fields) == ["reasoning", "output"]
    assert request.messages[2] == {"role": "assistant", "content": '{"reasoning": "", "output": 2}'}


def test_multi_node_artifact_without_pipeline_says_to_pass_it(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    path = compiled_triage.save(tmp_path / "t.json")
    with pytest.raises(desic.ArtifactError, match=r"2 nodes; pass your code.*pipeline=triage"):
        desic.load(path)


_SUBPROCESS = textwrap.dedent(
    """
    import json, sys
    import desic
    from desic.testing import FunctionLM, last_input

    def answer(request):
        text = last_input(request)
        kind = "spam" if "WATCHES" in text else "customer"
        return {"kind": kind, "address": {"city": "Delft"}, "tags": [text[-5:]]}

    prod = desic.load(sys.argv[1])
    lm = FunctionLM(answer)
    with desic.context(lm=lm):
        a = prod(ticket="CHEAP WATCHES")
        b = prod(ticket="hello, my order")
    leaked = sorted(m for m in sys.modules if "test_artifact" in m or m.startswith("tests"))
    print(json.dumps({
        "a": a.model_dump(), "b": b.model_dump(), "type": type(a).__name__,
        "leaked": leaked, "calls": len(lm.calls),
        "roles": [m["role"] for m in lm.calls[0].messages],
    }))
    """
)


def test_single_signature_artifact_runs_in_a_fresh_interpreter_without_user_code(
    tmp_path: Path,
) -> None:
    compiled = desic.compile(
        who, CONTACT_ROWS, optimizer="labeled", lm=FakeLM(default=CONTACT_ROWS[0])
    )
    path = compiled.save(tmp_path / "who.json")
    assert compiled.program.nodes[0].signature.ref.endswith(":who")
    script = tmp_path / "run.py"
    script.write_text(_SUBPROCESS, "utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(path)],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["leaked"] == []
    assert out["type"] == "Contact"
    assert out["a"] == {
        "kind": "spam",
        "address": {"city": "Delft", "country": "NL"},
        "tags": ["TCHES"],
        "phone": None,
    }
    assert out["b"]["kind"] == "customer"
    assert out["calls"] == 2
    assert out["roles"] == ["system", "user", "assistant", "user", "assistant", "user"]


_LIGHT = textwrap.dedent(
    """
    import json, sys
    import desic
    from desic.testing import FakeLM

    prod = desic.load(sys.argv[1])
    stored = desic.load(sys.argv[2])
    with desic.context(lm=FakeLM(default={"kind": "spam", "address": {"city": "Delft"}, "tags": []})):
        answer = prod(ticket="CHEAP WATCHES")
    heavy = ("desic.optimize", "desic.compile", "desic.evaluate", "desic.budget", "desic.metrics")
    print(json.dumps({
        "kind": answer.kind,
        "same": stored.program == prod.program,
        "imported": sorted(m for m in sys.modules if m.startswith(heavy)),
    }))
    """
)


def test_loading_and_running_an_artifact_imports_no_optimizer(tmp_path: Path) -> None:
    compiled = desic.compile(
        who, CONTACT_ROWS, optimizer="labeled", lm=FakeLM(default=CONTACT_ROWS[0])
    )
    path = compiled.save(tmp_path / "who.json")
    url = f"sqlite://{tmp_path / 'store.db'}#who"
    compiled.save(url)
    script = tmp_path / "light.py"
    script.write_text(_LIGHT, "utf-8")
    proc = subprocess.run(
        [sys.executable, str(script), str(path), url + "@latest"],
        check=False,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out == {"kind": "spam", "same": True, "imported": []}


def test_compile_module_still_exports_load_and_compiled_pipeline() -> None:
    from desic.compile import CompiledPipeline, load

    assert load is desic.load and CompiledPipeline is desic.CompiledPipeline


# --- drift ----------------------------------------------------------------------------------


def _define(source: str, module: str) -> Any:
    """Define ``route`` from ``source`` as if it lived in ``module`` (same ref each time)."""
    namespace: dict[str, Any] = {"__name__": module, "desic": desic, "Literal": Literal}
    exec(textwrap.dedent(source), namespace)  # noqa: S102  (same module name on purpose)
    return namespace["route"]


V1 = '''
@desic.signature
def route(ticket: str, lang: str = "en") -> Literal["billing", "tech"]:
    """Route the ticket."""
'''


def _compile_v1(tmp_path: Path, module: str) -> Path:
    v1 = _define(V1, module)
    rows = [{"ticket": "money", "output": "billing"}]
    saved = desic.compile(v1, rows, optimizer="labeled", lm=FakeLM(default="billing")).save(
        tmp_path / "route.json"
    )
    assert isinstance(saved, Path)
    return saved


def test_unchanged_code_loads(tmp_path: Path) -> None:
    path = _compile_v1(tmp_path, "drift_same")
    same = _define(V1, "drift_same")
    loaded = desic.load(path, pipeline=same)
    with desic.context(lm=FakeLM(["tech"])):
        assert loaded(ticket="crash") == "tech"


def test_changed_docstring_is_drift_with_a_readable_diff(tmp_path: Path) -> None:
    path = _compile_v1(tmp_path, "drift_doc")
    _define(V1.replace("Route the ticket.", "Route the ticket to a team."), "drift_doc")
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path)
    msg = str(info.value)
    assert "node 'route'" in msg
    assert "docstring: 'Route the ticket.' -> 'Route the ticket to a team.'" in msg
    assert "recompile" in msg


def test_changed_input_type_is_drift_with_a_readable_diff(tmp_path: Path) -> None:
    path = _compile_v1(tmp_path, "drift_type")
    v2 = _define(V1.replace("ticket: str", "ticket: int"), "drift_type")
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path, pipeline=v2)
    msg = str(info.value)
    assert "input 'ticket': type string -> integer" in msg
    assert "docstring" not in msg


def test_added_input_changed_default_and_output_are_listed(tmp_path: Path) -> None:
    path = _compile_v1(tmp_path, "drift_many")
    v2 = '''
    @desic.signature
    def route(ticket: str, lang: str = "nl", urgent: bool = False) -> Literal["billing", "tech", "sales"]:
        """Route the ticket."""
    '''
    _define(v2, "drift_many")
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path)
    lines = [line.strip() for line in str(info.value).splitlines()]
    assert "- input 'urgent': added (boolean)" in lines
    assert "- input 'lang': default 'en' -> 'nl'" in lines
    assert (
        "- output 'output': one of: \"billing\", \"tech\" -> one of: \"billing\", \"tech\", \"sales\"" in lines
    )


def test_drift_in_a_pipeline_node_is_caught(tmp_path: Path) -> None:
    namespace: dict[str, Any] = {"__name__": "drift_pipe", "desic": desic}
    source = '''
    @desic.signature
    def shout(text: str) -> str:
        """Shout it."""

    @desic.pipeline
    def loud(text: str) -> str:
        return shout(text=shout(text=text))
    '''
    exec(textwrap.dedent(source), namespace)  # noqa: S102  (same module name on purpose)
    compiled: desic.CompiledPipeline[..., Any] = desic.compile(
        namespace["loud"],
        [{"text": "a", "output": "A"}],
        optimizer="labeled",
        lm=FakeLM(default="A"),
    )
    path = compiled.save(tmp_path / "loud.json")
    assert compiled.program.node_ids == ("shout", "shout#2")

    changed: dict[str, Any] = {"__name__": "drift_pipe", "desic": desic}
    changed_source = source.replace("def shout(text: str) -> str:", "def shout(text: str) -> int:")
    assert changed_source != source
    exec(textwrap.dedent(changed_source), changed)  # noqa: S102  (same module name on purpose)
    with pytest.raises(desic.ArtifactError, match="output 'output': string -> integer"):
        desic.load(path, pipeline=changed["loud"])


# --- corrupt / foreign / future files -------------------------------------------------------


def test_truncated_artifact_names_the_path(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    path = compiled_triage.save(tmp_path / "t.json")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path, pipeline=triage)
    assert str(path) in str(info.value)
    assert "not a desic artifact" in str(info.value)


def test_structurally_corrupt_artifact_names_the_path(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    path = compiled_triage.save(tmp_path / "t.json")
    data = json.loads(path.read_text("utf-8"))
    data["nodes"][0]["demos"] = "not a list"
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path, pipeline=triage)
    assert str(path) in str(info.value)
    assert "corrupt" in str(info.value)


def test_newer_format_version_says_to_upgrade(
    tmp_path: Path, compiled_triage: desic.CompiledPipeline[..., Any]
) -> None:
    path = compiled_triage.save(tmp_path / "t.json")
    data = json.loads(path.read_text("utf-8"))
    data["format_version"] = 99
    path.write_text(json.dumps(data), "utf-8")
    with pytest.raises(desic.ArtifactError) as info:
        desic.load(path, pipeline=triage)
    msg = str(info.value)
    assert "format version 99" in msg
    assert "upgrade desic" in msg
    assert str(path) in msg


def test_wrong_format_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(
        json.dumps({"format": "dspy.program", "format_version": 1, "nodes": []}), "utf-8"
    )
    with pytest.raises(desic.ArtifactError, match="not a desic artifact.*'dspy.program'"):
        desic.load(path)
    path.write_text(json.dumps([1, 2, 3]), "utf-8")
    with pytest.raises(desic.ArtifactError, match="not a desic artifact"):
        desic.load(path)


def test_missing_artifact_is_an_artifact_error(tmp_path: Path) -> None:
    with pytest.raises(desic.ArtifactError, match="artifact not found"):
        desic.load(tmp_path / "nope.json")


# --- no secrets -----------------------------------------------------------------------------


@desic.signature
def team_of(ticket: str) -> Literal["billing", "tech"]:
    """Name the team for the ticket."""


def test_artifact_holds_no_secrets(tmp_path: Path) -> None:
    with FakeOpenAIServer() as server:
        port = server.url.split(":")[-1].split("/")[0]
        lm = desic.lm(
            "openai:fake-model",
            api_key="sk-SECRET123",
            base_url=f"http://user:pw@127.0.0.1:{port}/v1?token=abc",
        )
        with allow_model_requests():
            compiled = desic.compile(
                team_of,
                [{"ticket": "money", "output": "billing"}],
                valset=[{"ticket": "crash", "output": "tech"}],
                metric=desic.metrics.exact_match,
                lm=lm,
            )
        assert server.counts["ok"] >= 2  # the calls really went through the fake server
        assert all(r["_path"].endswith("?token=abc") for r in server.requests)
    data = compiled.save(tmp_path / "a.json").read_bytes()
    for secret in (b"sk-SECRET123", b"pw", b"token=abc", b"user:"):
        assert secret not in data, secret
    meta = json.loads(data)["meta"]["lm"]
    assert meta["base_url"] == f"http://127.0.0.1:{port}/v1"
    assert meta["model"] == "fake-model"
