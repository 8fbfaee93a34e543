"""The ``desic`` command, driven in-process (typer's CliRunner) and as ``python -m desic``.

Every LM call goes to a loopback ``FakeOpenAIServer`` through the real openai + instructor
stack (``--lm openai:fake`` with OPENAI_BASE_URL pointing at it): nothing leaves the machine.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from desic.cli import app
from desic.testing import FakeOpenAIServer, default_handler

PROJECT = textwrap.dedent(
    '''
    from typing import Literal

    from pydantic import BaseModel

    import desic


    class Route(BaseModel):
        team: Literal["billing", "technical", "shipping", "account"]


    @desic.signature
    def route(ticket: str) -> Route:
        """Route a customer support ticket to the team that should handle it."""


    @desic.signature
    def reply(ticket: str, team: str) -> str:
        """Write a one-line reply saying which team took the ticket."""


    @desic.pipeline
    def triage(ticket: str) -> Route:
        return route(ticket=ticket)


    @desic.pipeline
    def support(ticket: str) -> str:
        r = route(ticket=ticket)
        return reply(ticket=ticket, team=r.team)


    def same_team(example, output) -> float:
        return float(example.labels["team"] == output.team)
    '''
)

TRAIN = [
    {"ticket": "I was charged twice this month", "team": "billing"},
    {"ticket": "Where is my invoice for March?", "team": "billing"},
    {"ticket": "My parcel never arrived", "team": "shipping"},
    {"ticket": "The delivery box was damaged", "team": "shipping"},
    {"ticket": "I forgot my password and cannot log in", "team": "account"},
    {"ticket": "The app crashes when I open settings", "team": "technical"},
    {"ticket": "Refund for a damaged parcel please", "team": "shipping"},  # the rule says billing
    {"ticket": "API returns 500 errors since yesterday", "team": "technical"},
]
DEV = [
    {"ticket": "charged for an order I cancelled", "team": "billing"},
    {"ticket": "parcel stuck at the depot", "team": "shipping"},
    {"ticket": "cannot log in after the update", "team": "account"},
    {"ticket": "the export button does nothing", "team": "technical"},
]


def team_for(text: str) -> str:
    text = text.lower()
    if any(w in text for w in ("charged", "invoice", "refund")):
        return "billing"
    if any(w in text for w in ("parcel", "delivery")):
        return "shipping"
    if any(w in text for w in ("password", "log in")):
        return "account"
    return "technical"


def answer(req: dict[str, Any]) -> Any:
    """Routes by keywords; a ticket containing 'boom' gets an answer that never validates."""
    last = next(m["content"] for m in reversed(req["messages"]) if m["role"] == "user")
    if any("boom" in str(m["content"]) for m in req["messages"]):  # re-asks fail too
        return "this is not JSON"
    schema = ((req.get("response_format") or {}).get("json_schema") or {}).get("schema") or {}
    if list(schema.get("properties", {})) == ["team"]:
        return {"team": team_for(last)}
    return default_handler(req)


def write_jsonl(path: Path, rows: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def server() -> Iterator[FakeOpenAIServer]:
    with FakeOpenAIServer(answer) as srv:
        yield srv


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cliproject")
    (root / "cliproj.py").write_text(PROJECT, encoding="utf-8")
    write_jsonl(root / "train.jsonl", TRAIN)
    write_jsonl(root / "dev.jsonl", DEV)
    return root


@pytest.fixture
def env(server: FakeOpenAIServer, project: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """Run in the project folder with the fake server as the default LM."""
    values = {
        "OPENAI_BASE_URL": server.url,
        "OPENAI_API_KEY": "test-key",
        "DESIC_LM": "openai:fake",
        "DESIC_ALLOW_MODEL_REQUESTS": "1",
    }
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("DESIC_STORAGE", raising=False)
    monkeypatch.delenv("DESIC_TRACE", raising=False)
    monkeypatch.chdir(project)
    return values


def cli(*args: str, input: str | None = None) -> Any:
    result = CliRunner().invoke(app, list(args), input=input)
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception
    return result


@pytest.fixture(scope="module")
def compiled_artifact(project: Path, server: FakeOpenAIServer, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """One compile (bootstrap, recorded in a sqlite store), shared by the read-only tests."""
    mp = pytest.MonkeyPatch()
    try:
        for key, value in {
            "OPENAI_BASE_URL": server.url,
            "OPENAI_API_KEY": "test-key",
            "DESIC_LM": "openai:fake",
            "DESIC_ALLOW_MODEL_REQUESTS": "1",
        }.items():
            mp.setenv(key, value)
        mp.chdir(project)
        out = tmp_path_factory.mktemp("artifacts") / "triage.desic.json"
        store = f"sqlite://{out.parent / 'store.db'}"
        result = cli("compile", "cliproj:triage", "--trainset", "train.jsonl", "--valset", "dev.jsonl",
                     "--metric", "exact_match", "--optimizer", "bootstrap", "--out", str(out),
                     "--storage", store, "--seed", "1", "-O", "max_demos=2")
        assert result.exit_code == 0, result.output
        return out, store
    finally:
        mp.undo()


# --- help and usage -----------------------------------------------------------------------------

COMMANDS = [[], ["compile"], ["eval"], ["run"], ["prompts"], ["doctor"], ["runs"], ["runs", "list"],
            ["runs", "show"], ["runs", "report"], ["runs", "watch"]]


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "desic")
def test_every_command_has_help(command: list[str]) -> None:
    result = cli(*command, "--help")
    assert result.exit_code == 0
    assert "Usage: desic" in result.stdout
    assert len(result.stdout.strip().splitlines()) > 4


def test_version() -> None:
    import desic

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout.strip() == f"desic {desic.__version__}"


def test_usage_errors_exit_2(env: dict[str, str]) -> None:
    assert cli("compile", "cliproj:triage").exit_code == 2  # --trainset and --out missing
    assert cli("frobnicate").exit_code == 2
    bad_budget = cli("compile", "cliproj:triage", "-t", "train.jsonl", "-o", "x.json", "--budget", "pennies=3")
    assert bad_budget.exit_code == 2
    assert "calls=N" in bad_budget.output
    both = cli("run", "cliproj:triage", "--input", "{}", "--jsonl", "rows.jsonl")
    assert both.exit_code == 2 and "exactly one of" in both.output


# --- compile, run, eval, prompts ----------------------------------------------------------------


def test_compile_saves_the_artifact_and_records_the_run(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    import desic

    out, store = compiled_artifact
    loaded = desic.load(out)
    assert loaded.program.meta.optimizer == "bootstrap"
    assert loaded.program.meta.score_split == "valset"
    assert loaded.program.nodes[0].demos  # bootstrap kept demos
    listing = cli("runs", "list", "--storage", store)
    assert listing.exit_code == 0
    assert loaded.program.meta.run_id in listing.stdout
    assert "finished" in listing.stdout
    page = out.parent / "run.html"
    report = cli("runs", "report", "latest", "--storage", store, "--out", str(page))
    assert report.exit_code == 0, report.output
    html = page.read_text()
    assert f"<title>desic run {loaded.program.meta.run_id}</title>" in html
    assert "=== node" not in html and 'class="msg system"' in html


def test_compile_to_a_store_url_and_run_it_by_name(env: dict[str, str], tmp_path: Path) -> None:
    store = f"sqlite://{tmp_path / 'art.db'}"
    result = cli("compile", "cliproj:triage", "-t", "train.jsonl", "-o", f"{store}#triage", "--optimizer", "labeled")
    assert result.exit_code == 0, result.output
    assert f"saved {store}#triage@1" in result.stdout
    ran = cli("run", "triage@latest", "--storage", store, "--input", '{"ticket": "my parcel is lost"}')
    assert ran.exit_code == 0, ran.output
    assert json.loads(ran.stdout) == {"team": "shipping"}


def test_compile_can_skip_the_comparison_with_the_pipeline_as_written(env: dict[str, str], tmp_path: Path) -> None:
    import desic

    for flag, compared in (("--baseline", True), ("--no-baseline", False)):
        store = f"sqlite://{tmp_path / (flag + '.db')}"
        out = tmp_path / f"{flag}.json"
        result = cli("compile", "cliproj:triage", "-t", "train.jsonl", "-o", str(out), "--storage", store, flag,
                     "-O", "max_demos=1", "-O", "max_labeled=0")  # rows left over to compare on
        assert result.exit_code == 0, result.output
        opened = desic.storage.open(store)
        (run,) = opened.list_runs()
        splits = {c["split"] for c in opened.history(run.id)}
        assert ("selected (baseline)" in splits) is compared, splits
        assert desic.load(out).program.meta.optimizer == "bootstrap"


def test_run_one_input_prints_json(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    out, _ = compiled_artifact
    result = cli("run", str(out), "--input", '{"ticket": "I was charged twice"}')
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == {"team": "billing"}


def test_run_jsonl_one_line_per_row_and_failures_are_null(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    out, _ = compiled_artifact
    rows = "".join(json.dumps({"ticket": t}) + "\n" for t in ["invoice missing", "boom", "parcel late"])
    result = cli("run", str(out), "--jsonl", "-", input=rows)
    assert result.exit_code == 1
    lines = result.stdout.strip().splitlines()
    assert [json.loads(line) for line in lines] == [{"team": "billing"}, None, {"team": "shipping"}]
    assert "row 1: OutputValidationError" in result.stderr
    assert "1 of 3 rows failed" in result.stderr


def test_run_jsonl_validates_every_row_first(compiled_artifact: tuple[Path, str], env: dict[str, str], server: FakeOpenAIServer) -> None:
    out, _ = compiled_artifact
    before = len(server.requests)
    result = cli("run", str(out), "--jsonl", "-", input='{"ticket": "fine"}\n{"subject": "no ticket"}\n')
    assert result.exit_code == 4
    assert "row 1" in result.stderr and "ticket" in result.stderr
    assert len(server.requests) == before  # no LM call before every row was checked


def test_eval_prints_the_score(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    out, _ = compiled_artifact
    result = cli("eval", str(out), "--devset", "dev.jsonl", "--metric", "exact_match")
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("score 1.000 on 4 examples")


def test_eval_json_and_a_metric_from_a_module(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    out, _ = compiled_artifact
    result = cli("eval", str(out), "-d", "dev.jsonl", "--metric", "cliproj:same_team", "--json")
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert report["score"] == 1.0 and report["examples"] == 4 and report["errors"] == 0
    assert [r["output"] for r in report["results"]][:2] == [{"team": "billing"}, {"team": "shipping"}]


def test_eval_an_uncompiled_pipeline(env: dict[str, str]) -> None:
    result = cli("eval", "cliproj:triage", "-d", "dev.jsonl")
    assert result.exit_code == 0, result.output
    assert "on 4 examples" in result.stdout


def test_prompts_show_the_graph_and_the_snapshot_formatting(compiled_artifact: tuple[Path, str], env: dict[str, str]) -> None:
    import desic
    from desic.testing.snapshots import format_prompts

    out, _ = compiled_artifact
    result = cli("prompts", str(out), "--input", '{"ticket": "where is my parcel"}')
    assert result.exit_code == 0, result.output
    compiled = desic.load(out)
    assert compiled.inspect() in result.stdout
    assert "ticket <- pipeline input" in result.stdout
    assert result.stdout.endswith(format_prompts(compiled.prompts(ticket="where is my parcel")))
    placeholders = cli("prompts", str(out))
    assert "=== node route ===" in placeholders.stdout
    assert "ticket: {ticket}" in placeholders.stdout


def test_prompts_of_a_multi_node_pipeline_show_edges(env: dict[str, str]) -> None:
    result = cli("prompts", "cliproj:support", "--input", '{"ticket": "parcel lost"}', "--lm", "openai:fake")
    assert result.exit_code == 0, result.output
    assert "=== node route ===" in result.stdout and "=== node reply ===" in result.stdout
    without_lm = cli("prompts", "cliproj:support", "--input", '{"ticket": "parcel lost"}')
    assert "=== node route ===" in without_lm.stdout and "=== node reply ===" not in without_lm.stdout
    uncompiled = cli("prompts", "cliproj:support")
    assert uncompiled.exit_code == 3 and "--input" in uncompiled.stderr


def test_resume_a_stored_run(env: dict[str, str], tmp_path: Path, server: FakeOpenAIServer) -> None:
    store = f"sqlite://{tmp_path / 'resume.db'}"
    args = ["compile", "cliproj:triage", "-t", "train.jsonl", "-o", str(tmp_path / "a.json"), "--storage", store, "--seed", "2"]
    first = cli(*args)
    assert first.exit_code == 0, first.output
    run_id = first.stdout.split("run ")[1].split()[0]
    calls = len(server.requests)
    again = cli(*args, "--resume", run_id)
    assert again.exit_code == 0, again.output
    assert f"run {run_id}" in again.stdout
    assert len(server.requests) == calls  # every evaluation was replayed from the store


def test_a_budget_stops_compile_cleanly_and_saves_the_best_so_far(
    env: dict[str, str], tmp_path: Path, server: FakeOpenAIServer
) -> None:
    import desic
    from desic.storage import open as open_store

    # a dollar budget on a model with no known price could never trigger: refused up front
    unpriced = cli("compile", "cliproj:triage", "-t", "train.jsonl", "-o", str(tmp_path / "u.json"), "--budget", "calls=500,dollars=2")
    assert unpriced.exit_code == 3 and "max_dollars=2 cannot be enforced" in unpriced.output
    assert not (tmp_path / "u.json").exists()
    roomy = cli("compile", "cliproj:triage", "-t", "train.jsonl", "-o", str(tmp_path / "b.json"), "--budget", "calls=500,tokens=100000")
    assert roomy.exit_code == 0, roomy.output
    assert "stopped by" not in roomy.stdout and "budget" not in roomy.stderr
    assert (tmp_path / "b.json").is_file()

    # bootstrap wants more demos than the 8 rows give, so it would run every row: 8 calls
    # (after one run that discovers the node for the labelled demos shown while bootstrapping)
    store = f"sqlite://{tmp_path / 'budget.db'}"
    out = tmp_path / "tight.json"
    args = ["compile", "cliproj:triage", "-t", "train.jsonl", "-o", str(out), "--storage", store,
            "--concurrency", "1", "-O", "max_demos=100", "--no-baseline"]  # counts bootstrap's calls alone
    before = len(server.requests)
    tight = cli(*args, "--budget", "calls=3")
    assert len(server.requests) - before == 3
    assert tight.exit_code == 0, tight.output  # a budget stop is a clean end, like compile()'s
    run_id = tight.stdout.split("| run ")[1].split()[0]
    assert "stopped by the max_calls budget" in tight.stdout
    assert "the max_calls budget ran out (--budget calls=3)" in tight.stderr
    assert "the best program found so far was saved" in tight.stderr
    assert f"--storage {store} --resume {run_id} --budget" in tight.stderr
    saved = desic.load(out)  # the best-so-far program was written, and runs
    assert saved.program.meta.run_id == run_id
    assert 1 <= [d.source for d in saved.program.nodes[0].demos].count("bootstrap") <= 3
    with open_store(store) as runs:  # type: ignore[attr-defined]
        info = runs.get_run(run_id)
        assert (info.status, info.stopped_by) == ("stopped", "max_calls")

    resumed = cli(*args, "--resume", run_id)  # no budget: the rest of the run, replaying the 3 calls
    assert resumed.exit_code == 0, resumed.output
    assert "stopped by" not in resumed.stdout and "budget ran out" not in resumed.stderr
    assert len(server.requests) - before == 9  # one run discovers the node, then 8 rows
    with open_store(store) as runs:  # type: ignore[attr-defined]
        assert runs.get_run(run_id).status == "finished"


def test_trace_option_writes_events(env: dict[str, str], tmp_path: Path) -> None:
    from desic.sinks import read_trace

    trace = tmp_path / "trace.jsonl"
    result = cli("--trace", str(trace), "run", "cliproj:triage", "--input", '{"ticket": "invoice"}')
    assert result.exit_code == 0, result.output
    kinds = [e.kind for e in read_trace(trace)]
    assert kinds.count("lm_call") == 1 and "node_call" in kinds
    # the sink was unsubscribed when the command ended
    cli("run", "cliproj:triage", "--input", '{"ticket": "invoice"}')
    assert len(read_trace(trace)) == len(kinds)


# --- errors: one line, a fix, a distinct exit code, no traceback ---------------------------------


def _assert_clean_error(result: Any, code: int, *needles: str) -> None:
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ")
    assert any(line.startswith("fix: ") for line in lines)
    for needle in needles:
        assert needle in result.stderr


def test_unknown_metric_is_a_config_error(env: dict[str, str]) -> None:
    result = cli("eval", "cliproj:triage", "-d", "dev.jsonl", "--metric", "accuracyy")
    _assert_clean_error(result, 3, "unknown metric 'accuracyy'", "exact_match")


def test_unknown_module_is_a_config_error(env: dict[str, str]) -> None:
    result = cli("compile", "nosuchmodule:triage", "-t", "train.jsonl", "-o", "x.json")
    _assert_clean_error(result, 3, "cannot import module 'nosuchmodule'", "PYTHONPATH")


def test_bad_row_is_a_data_error_naming_row_and_field(env: dict[str, str], tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"ticket": "ok", "team": "billing"}, {"tickett": "typo", "team": "billing"}])
    result = cli("compile", "cliproj:triage", "-t", str(bad), "-o", str(tmp_path / "x.json"))
    _assert_clean_error(result, 4, "row 1", "ticket")


def test_bad_input_json_is_a_data_error(env: dict[str, str]) -> None:
    result = cli("run", "cliproj:triage", "--input", "{ticket: 1}")
    _assert_clean_error(result, 4, "--input is not valid JSON")


def test_missing_and_corrupt_artifacts_are_artifact_errors(env: dict[str, str], tmp_path: Path) -> None:
    _assert_clean_error(cli("run", "nothing-here.json", "--input", "{}"), 5, "artifact not found")
    corrupt = tmp_path / "corrupt.json"
    corrupt.write_text('{"format": "desic.program", "format_version": 1, "nodes": 7}')
    _assert_clean_error(cli("prompts", str(corrupt)), 5, "corrupt")


def test_unreachable_lm_is_an_lm_error(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("OPENAI_BASE_URL", f"http://127.0.0.1:{port}/v1")
    result = cli("run", "cliproj:triage", "--input", '{"ticket": "hi"}')
    _assert_clean_error(result, 6, "cannot reach")


def test_missing_store_is_a_storage_error(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("runs", "show", "latest", "--storage", f"sqlite://{tmp_path / 'none.db'}")
    _assert_clean_error(result, 7, "no store at")
    assert not (tmp_path / "none.db").exists()  # reading never creates a store


def test_unknown_storage_scheme_is_a_config_error(env: dict[str, str]) -> None:
    _assert_clean_error(cli("runs", "list", "--storage", "redis://x"), 3, "unknown storage scheme")


# --- doctor -------------------------------------------------------------------------------------


def test_doctor_calls_the_lm_and_checks_the_store(env: dict[str, str], tmp_path: Path) -> None:
    result = cli("doctor", "--lm", "openai:fake", "--storage", f"sqlite://{tmp_path / 'd.db'}")
    assert result.exit_code == 0, result.output
    out = result.stdout
    for name in ("python", "desic", "pydantic", "openai", "instructor", "xllamacpp", "lm", "local model", "storage"):
        assert any(line.split("  ")[1:2] and name in line for line in out.splitlines()), name
    assert "openai:fake answered in" in out
    assert "no store yet" in out
    assert out.strip().endswith("all good")


def test_doctor_offline_does_not_call_the_lm(env: dict[str, str], server: FakeOpenAIServer) -> None:
    before = len(server.requests)
    result = cli("doctor", "--offline", "--storage", "memory://")
    assert result.exit_code == 0, result.output
    assert "not called (--offline)" in result.stdout
    assert len(server.requests) == before


def test_doctor_reports_a_bad_lm_with_its_exit_code(env: dict[str, str]) -> None:
    result = cli("doctor", "--offline", "--lm", "bogus:model", "--storage", "memory://")
    assert result.exit_code == 3
    assert "FAIL  lm" in result.stdout and "fix:" in result.stdout


# --- as a real process --------------------------------------------------------------------------


def _run(args: list[str], env: dict[str, str], cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    full_env = {**os.environ, **env}
    full_env.pop("PYTEST_CURRENT_TEST", None)
    return subprocess.run([sys.executable, "-m", "desic", *args], cwd=cwd, env=full_env, input=stdin,
                          check=False, capture_output=True, text=True, timeout=120)


def test_python_m_desic_compiles_with_a_trace_file(env: dict[str, str], project: Path, tmp_path: Path) -> None:
    trace = tmp_path / "trace.jsonl"
    out = tmp_path / "p.json"
    proc = _run(["compile", "cliproj:triage", "--trainset", "train.jsonl", "--metric", "exact_match",
                 "--optimizer", "labeled", "--out", str(out), "--lm", "openai:fake", "--seed", "0"],
                {**env, "DESIC_TRACE": str(trace)}, project)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"saved {out}")
    assert proc.stderr == ""  # no progress drawn off a terminal
    events = [json.loads(line) for line in trace.read_text().splitlines()]
    assert events and {"kind", "time"} <= set(events[0])
    calls = [e for e in events if e["kind"] == "lm_call"]
    assert calls and all(e["lm"] == "openai:fake" and e["node"] == "route" for e in calls)


def test_python_m_desic_error_has_no_traceback(project: Path) -> None:
    proc = _run(["eval", "missing.desic.json", "--devset", "dev.jsonl"], {}, project)
    assert proc.returncode == 5
    assert "Traceback" not in proc.stderr
    assert proc.stderr.startswith("error: artifact not found: missing.desic.json")


def test_the_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "desic"
    if not script.exists():
        pytest.skip("the desic console script is not installed in this environment (pip install -e .)")
    proc = subprocess.run([str(script), "--version"], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0 and proc.stdout.startswith("desic ")


def test_import_desic_does_not_load_the_cli_stack() -> None:
    code = "import sys, desic, desic.events; print(sorted(m for m in ('typer', 'rich', 'opentelemetry', 'desic.cli', 'desic.sinks') if m in sys.modules))"
    proc = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_eval_runs_rows_where_executor_says(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    result = cli("eval", "cliproj:triage", "-d", "dev.jsonl", "--executor", "local")
    assert result.exit_code == 0, result.output
    assert "on 4 examples" in result.stdout
    wrong = cli("eval", "cliproj:triage", "-d", "dev.jsonl", "--executor", "spark")
    assert wrong.exit_code != 0
    assert "unknown executor 'spark'" in wrong.output
    monkeypatch.setenv("DESIC_EXECUTOR", "spark")
    from_env = cli("compile", "cliproj:triage", "-t", "dev.jsonl", "-o", "out.json")
    assert from_env.exit_code != 0 and "unknown DESIC_EXECUTOR 'spark'" in from_env.output


def test_compile_into_a_shared_postgres_store_gives_the_local_program(env: dict[str, str], tmp_path: Path) -> None:
    """The same compile (same seed) recorded in a PostgreSQL store (a real server) and in a
    local SQLite file saves the same program; nothing printed holds the password."""
    import desic.storage as ds
    from tests.support.postgres import PASSWORD
    from tests.support.stores import url_for

    shared, local = url_for("postgres", tmp_path), f"sqlite://{tmp_path / 'local.db'}"
    args = ["compile", "cliproj:triage", "-t", "train.jsonl", "--metric", "exact_match",
            "--optimizer", "bootstrap", "--seed", "1", "-O", "max_demos=2"]  # fmt: skip
    on_shared = cli(*args, "--storage", shared, "-o", f"{shared}#triage")
    on_local = cli(*args, "--storage", local, "-o", f"{local}#triage")
    assert (on_shared.exit_code, on_local.exit_code) == (0, 0), on_shared.output + on_local.output
    assert f"saved {shared.replace(f':{PASSWORD}@', '@')}#triage@1" in on_shared.stdout
    assert PASSWORD not in on_shared.output
    with ds.open(shared) as a, ds.open(local) as b:  # type: ignore[attr-defined]
        program_a, program_b = a.load_program("triage"), b.load_program("triage")
        assert program_a.nodes == program_b.nodes and program_a.edges == program_b.edges
        (run,) = a.list_runs()
        assert run.status == "finished" and run.id == program_a.meta.run_id
    listed = cli("runs", "list", "--storage", shared)
    assert run.id in listed.stdout and "finished" in listed.stdout
