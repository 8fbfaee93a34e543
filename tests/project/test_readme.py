"""Every Python block of README.md runs, in order, in one namespace, as a reader typing
them would run them (issue 15: the README must not rot).

The run happens in a scratch folder (with the project's ``examples/``), with no store,
trace or cache of the caller's, and with ``DESIC_LM`` pointing at desic's loopback fake
OpenAI server (``desic.testing.FakeOpenAIServer``): the real OpenAI provider and instructor
talk HTTP to it, so every block that calls an LM runs offline. A block that cannot run here
is marked ``<!-- not run: reason -->`` right before its fence (``tests/support/readme.py``).
"""

from __future__ import annotations

import json
import os
import re
import sys
import traceback
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from desic import events
from desic.testing import FakeOpenAIServer, allow_model_requests
from desic.testing._server import _tool_choice, minimal_instance
from tests.support import ROOT
from tests.support.readme import Block, python_blocks

README = ROOT / "README.md"
TEAMS = {"charged": "billing", "refund": "billing", "parcel": "shipping", "package": "shipping",
         "password": "account", "login": "account", "crash": "technical", "error": "technical"}


def _schema(req: dict[str, Any]) -> dict[str, Any]:
    if req.get("tools"):
        return _tool_choice(req)[1]
    fmt = req.get("response_format") or {}
    return (fmt.get("json_schema") or {}).get("schema") or {}


def answer(req: dict[str, Any]) -> str:
    """A plausible answer for the README's tasks: a team by keyword, a short text otherwise."""
    user = next((m.get("content") or "" for m in reversed(req.get("messages", [])) if m.get("role") == "user"), "")
    text = str(user)
    schema = _schema(req)
    if not schema:
        return "ok"
    value = minimal_instance(schema)
    if isinstance(value, dict):
        for key, field in (schema.get("properties") or {}).items():
            if key == "team":
                value[key] = next((t for w, t in TEAMS.items() if w in text.lower()), "technical")
            elif field.get("type") == "string" and "enum" not in field:
                value[key] = text.split(": ", 1)[-1][:60] or "ok"
    return json.dumps(value)


@pytest.fixture
def reader(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeOpenAIServer]:
    """A new reader's shell: a scratch folder with the examples, an LM in the environment."""
    (tmp_path / "examples").symlink_to(ROOT / "examples", target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    for name in list(os.environ):
        if name.startswith(("DESIC_", "OPENAI_")):
            monkeypatch.delenv(name)
    with FakeOpenAIServer(answer) as server:
        monkeypatch.setenv("DESIC_LM", "openai:gpt-4o-mini")
        monkeypatch.setenv("OPENAI_BASE_URL", server.url)
        monkeypatch.setenv("OPENAI_API_KEY", "sk-readme-test")
        monkeypatch.setenv("DESIC_CACHE_DIR", str(tmp_path / "cache"))
        with allow_model_requests():
            yield server


def _run(block: Block, namespace: dict[str, Any]) -> None:
    code = compile(block.source, str(README) + f":{block.line}", "exec")
    try:
        exec(code, namespace)  # noqa: S102 - the README's own code, run as its reader would
    except Exception as exc:  # noqa: BLE001 - any failure of a block is reported with its line
        trace = "".join(traceback.format_exception(exc)[-6:])
        pytest.fail(
            f"{block.where} fails as written:\n{block.source}\n{trace}\n"
            "The blocks run in order in one namespace (a name a block redefines stays redefined for "
            "the blocks below it), in a scratch folder with examples/, DESIC_LM on the loopback fake "
            "OpenAI server. A block that cannot run here (a cluster, a paid API) gets "
            "<!-- not run: the reason --> on the line before its fence.",
            pytrace=False,
        )


def test_readme_python_blocks_run_in_order(reader: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch) -> None:
    blocks = python_blocks(README)
    module = types.ModuleType("readme")  # a real module: pydantic resolves annotations through it
    monkeypatch.setitem(sys.modules, "readme", module)
    namespace = module.__dict__
    before = events._global  # the process-wide sinks: a block must not leave one behind
    ran = 0
    for block in blocks:
        if block.not_run is None:
            _run(block, namespace)
            ran += 1
    assert ran >= 10, f"only {ran} README blocks ran"
    assert reader.counts["requests"] > 0, "no README block reached the (fake) LM"
    left = [s for s in events._global if s not in before and type(s).__module__ != "desic.sinks"]
    assert not left, f"a README block left a process-wide event sink behind: {left}"  # sinks: the environment's


def test_not_run_marks_are_rare_and_give_a_reason() -> None:
    blocks = python_blocks(README)
    skipped = [b for b in blocks if b.not_run is not None]
    assert all(b.not_run for b in skipped)
    assert len(skipped) <= max(2, len(blocks) // 4), [b.where for b in skipped]


def test_the_mark_is_read_and_checked(tmp_path: Path) -> None:
    doc = tmp_path / "README.md"
    doc.write_text("# x\n\n```python\na = 1\n```\n\n<!-- not run: needs a cluster -->\n```python\nb = 2\n```\n\n```bash\nls\n```\n")
    assert [(b.line, b.not_run) for b in python_blocks(doc)] == [(3, None), (8, "needs a cluster")]
    doc.write_text("<!-- not run -->\n```python\nb = 2\n```\n")
    with pytest.raises(ValueError, match="needs a reason"):
        python_blocks(doc)
    doc.write_text("<!-- not run: why -->\n\nsome text\n\n```python\nb = 2\n```\n")
    with pytest.raises(ValueError, match="right before"):
        python_blocks(doc)


def test_readme_documents_the_mark() -> None:
    assert re.search(r"<!-- not run: ", README.read_text()), "README should say how a block is marked not run"
