"""A compile in its own process, to kill with SIGKILL and resume in another.

``start`` runs a small triage compile (``rows`` rows, labels every ``label_every``-th row
"shipping", the optimizer and its options as given) against a store URL; every LM call is
one line in its call log, so a test counts calls, kills the process mid-run
(``kill_after``) and checks that a resumed process repeats no finished evaluation.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

SCRIPT = textwrap.dedent(
    '''
    import json
    import sys
    from typing import Literal
    from pydantic import BaseModel
    import desic
    from desic.testing import FunctionLM, last_input

    class Route(BaseModel):
        team: Literal["billing", "shipping"]

    @desic.signature
    def route(ticket: str) -> Route:
        """Route the ticket."""

    @desic.pipeline
    def triage(ticket: str) -> Route:
        return route(ticket=ticket)

    url, log, out, resume, setup = sys.argv[1:6]
    setup = json.loads(setup)
    every = setup.pop("label_every")
    TRAIN = [{"ticket": f"charged {i}" if i % 3 else f"parcel {i}", "team": "billing" if i % every else "shipping"}
             for i in range(setup.pop("rows"))]
    latency = setup.pop("latency")
    if "sampling" in setup:  # JSON here: [{"majority": {"n": 3, ...}}, ...]
        kinds = {"majority": desic.Majority}
        setup["sampling"] = [kinds[k](**v) for spec in setup["sampling"] for k, v in spec.items()]

    def answer(request):
        text = last_input(request)
        with open(log, "a") as fh:
            fh.write(text.replace("\\n", " ")[-12:] + "\\n")
        return "billing" if "charged" in text else "shipping"

    compiled = desic.compile(
        triage, TRAIN, metric=desic.metrics.exact_match, lm=FunctionLM(answer, latency=latency), storage=url,
        resume=resume or None, concurrency=1, seed=7, **setup,
    )
    compiled.save(out)
    print(compiled.program.meta.run_id)
    '''
)


def start(
    tmp_path: Path,
    url: str,
    name: str,
    resume: str = "",
    *,
    rows: int,
    label_every: int,
    latency: float,
    **compile_options: Any,
) -> tuple[subprocess.Popen[str], Path, Path]:
    """The compile as a process; returns it, its call log and where it saves the artifact."""
    script = tmp_path / "job.py"
    if not script.exists():
        script.write_text(SCRIPT)
    log, out = tmp_path / f"{name}.calls", tmp_path / f"{name}.json"
    setup = json.dumps({"rows": rows, "label_every": label_every, "latency": latency, **compile_options})
    proc = subprocess.Popen(
        [sys.executable, str(script), url, str(log), str(out), resume, setup],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "DESIC_STORAGE": ""},
    )
    return proc, log, out


def calls(log: Path) -> int:
    return len(log.read_text().splitlines()) if log.exists() else 0


def kill_after(proc: subprocess.Popen[str], log: Path, n: int, *, within: float) -> int:
    """SIGKILL ``proc`` once its log has ``n`` calls; returns the calls made by then."""
    deadline = time.monotonic() + within
    while calls(log) < n:
        assert proc.poll() is None, "the compile finished before it could be killed"
        assert time.monotonic() < deadline, "the compile made no progress"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait(60) == -signal.SIGKILL
    return calls(log)
