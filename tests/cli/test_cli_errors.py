"""Every error path of the ``desic`` command: its exit code, its message, and a ``fix:``
hint that follows the cause (not only the error's class). One table, one test."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.cli.test_cli import cli, env, project, server, write_jsonl  # noqa: F401 - fixtures

T = "train.jsonl"
BAD_ROWS = "bad_rows.jsonl"

# (command line, exit code, a fragment of the error line, a fragment of the fix line)
CASES: list[tuple[list[str], int, str, str]] = [
    # the pipeline
    (["compile", "nofile.py:triage", "-t", T, "-o", "x.json"], 3, "no such Python file: nofile.py", "check the path before ':'"),
    (["compile", "nosuchmodule:triage", "-t", T, "-o", "x.json"], 3, "cannot import module 'nosuchmodule'", "PYTHONPATH"),
    (["compile", "cliproj:triag", "-t", T, "-o", "x.json"], 3, "'cliproj' has no 'triag'", "did you mean 'triage'?"),
    (["compile", "cliproj", "-t", T, "-o", "x.json"], 3, "does not name a pipeline", "write MODULE:NAME"),
    (["compile", "broken.py:triage", "-t", T, "-o", "x.json"], 3, "ZeroDivisionError", "fix the error in broken.py"),
    (["compile", "errmod:NOTE", "-t", T, "-o", "x.json"], 1, "expected a @desic.pipeline", "name a @desic.pipeline or a @desic.signature"),
    # datasets
    (["compile", "cliproj:triage", "-t", "nofile.jsonl", "-o", "x.json"], 4, "--trainset file not found: nofile.jsonl", "check the --trainset path"),
    (["compile", "cliproj:triage", "-t", T, "--valset", "nodev.jsonl", "-o", "x.json"], 4, "--valset file not found", "check the --valset path"),
    (["eval", "cliproj:triage", "-d", "nofile.jsonl"], 4, "--devset file not found: nofile.jsonl", "check the --devset path"),
    (["eval", "cliproj:triage", "-d", "notes.txt"], 4, "unknown dataset format '.txt'", "give --devset a .jsonl, .json or .csv file"),
    (["compile", "cliproj:triage", "-t", BAD_ROWS, "-o", "x.json"], 4, "row 1", "fix the data file"),
    # --input / --jsonl
    (["run", "cliproj:triage", "--input", "not json"], 4, "--input is not valid JSON", """--input '{"ticket": "..."}'"""),
    (["run", "cliproj:triage", "--input", "[1, 2]"], 4, "must be a JSON object", "single quotes for the shell"),
    (["run", "cliproj:triage", "--input", '{"subject": "x"}'], 4, "ticket", "--input needs every input of triage"),
    (["run", "cliproj:triage", "--jsonl", "nofile.jsonl"], 4, "--jsonl file not found", "'-' to read the lines from stdin"),
    (["prompts", "cliproj:triage", "--input", "{oops"], 4, "--input is not valid JSON", """--input '{"ticket": "..."}'"""),
    # LM, storage, optimizer, metric
    (["run", "cliproj:triage", "--input", '{"ticket": "x"}', "--lm", "bogus:model"], 3, "unknown LM provider 'bogus'", "write --lm local, local:/path/model.gguf or openai:MODEL"),
    (["run", "cliproj:triage", "--input", '{"ticket": "x"}', "--lm", "local", "--base-url", "http://x/v1"], 3, "--base-url / DESIC_BASE_URL is for openai:MODEL", "use --lm openai:MODEL with --base-url"),
    (["run", "cliproj:triage", "--input", '{"ticket": "x"}', "--rps", "0"], 3, "--rps 0 is not a rate", "above 0"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "--storage", "redis://x"], 3, "unknown storage scheme 'redis'", "give --storage a store URL: sqlite://PATH"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "--storage", "not a url"], 3, "invalid storage URL", "give --storage a store URL"),
    (["compile", "cliproj:triage", "-t", T, "-o", "sqlite://x.db"], 3, "names no artifact", "add the artifact's name after '#'"),
    (["eval", "triage@latest", "-d", "dev.jsonl", "--storage", "sqlit://x.db"], 3, "did you mean sqlite://", "give --storage a store URL"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "--optimizer", "bootstrapp"], 3, "unknown optimizer 'bootstrapp'", "--optimizer takes one of"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "-O", "nope=1"], 3, "has no option 'nope'", "takes the options of the bootstrap optimizer: max_demos"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "-O", "max_demo=1"], 3, "did you mean 'max_demos'?", "-O KEY=VALUE"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "-O", "seed=3"], 3, "has no option 'seed'", "have their flags (--seed"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "--optimizer", "labeled", "-O", "max_demos=abc"], 3, "max_demos='abc'", "takes the options of the labeled optimizer"),
    (["eval", "cliproj:triage", "-d", "dev.jsonl", "--metric", "exact_matc"], 3, "did you mean 'exact_match'?", "--metric takes one of"),
    (["eval", "cliproj:triage", "-d", "dev.jsonl", "--metric", "errmod:NOTE"], 3, "is not callable", "metric(example, output) -> float"),
    # artifacts, prompts, runs
    (["run", "nothing-here.json", "--input", "{}"], 5, "artifact not found", "check the artifact's path"),
    (["prompts", "cliproj:support"], 3, "is not compiled", """pass --input '{"ticket": "..."}' to render its first node"""),
    (["prompts", "cliproj:route", "--node", "nope"], 3, "no node 'nope'", "--node takes one of route"),
    (["runs", "show", "latest", "--storage", "sqlite://none.db"], 7, "no store at", "point --storage (or DESIC_STORAGE) at the store"),
    (["runs", "list", "--storage", "redis://x"], 3, "unknown storage scheme", "give --storage a store URL"),
    (["compile", "cliproj:triage", "-t", T, "-o", "x.json", "--budget", "dollars=2"], 3, "max_dollars=2 cannot be enforced", "drop dollars= from --budget"),
]


@pytest.fixture
def broken(project: Path) -> None:  # noqa: F811 - the imported fixture
    (project / "broken.py").write_text("import desic\n\nx = 1 / 0\n", encoding="utf-8")
    (project / "notes.txt").write_text("ticket\n", encoding="utf-8")
    write_jsonl(project / BAD_ROWS, [{"ticket": "ok", "team": "billing"}, {"tickett": "typo", "team": "billing"}])
    (project / "errmod.py").write_text('NOTE = "not a pipeline"\n', encoding="utf-8")


@pytest.mark.parametrize(("argv", "code", "message", "fix"), CASES, ids=lambda v: " ".join(v) if isinstance(v, list) else None)
def test_every_error_names_its_cause_and_its_fix(
    argv: list[str], code: int, message: str, fix: str, env: dict[str, str], broken: None, server: object  # noqa: F811
) -> None:
    before = len(server.requests)  # type: ignore[attr-defined]
    result = cli(*argv)
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith("error: ") and message in lines[0], result.stderr
    fixes = [line for line in lines if line.startswith("fix: ")]
    assert fixes and fix in fixes[0], result.stderr
    assert len(server.requests) == before  # type: ignore[attr-defined]  # no error path calls an LM


def test_hints_differ_by_cause_within_one_error_class() -> None:
    """The table above is not one hint per class: each class maps to several hints."""
    by_code: dict[int, set[str]] = {}
    for _, code, _, fix in CASES:
        by_code.setdefault(code, set()).add(fix)
    assert len(by_code[3]) >= 10 and len(by_code[4]) >= 6
