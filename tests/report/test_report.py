# mypy: disable-error-code="empty-body"
"""The HTML run report (``desic.report.build_report``) and the text node graph.

The page is checked twice: parsed here (fast), and rendered by headless Chromium (what a
browser really shows: the DOM after parsing, and a screenshot) when Chromium is installed.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, Literal

import msgspec
import pytest
from pydantic import BaseModel

import desic
from desic import ir
from desic.report import build_report, candidate_rows, format_graph, graph_layers
from desic.runtime import default_node


class Route(BaseModel):
    team: Literal["billing", "shipping"]


@desic.signature
def route(ticket: str) -> Route:
    """Route the ticket to a team."""


@desic.signature
def reply(ticket: str, team: str) -> str:
    """Write a reply naming the team."""


@desic.signature
def polish(text: str) -> str:
    """Polish the reply."""


BEST_INSTRUCTIONS = "Route the ticket to a team.\nRefunds for damaged parcels go to shipping."


def pipeline_program(instructions: str | None = None, demos: int = 0) -> ir.Program:
    r = default_node(route, "route")
    if instructions is not None:
        r = msgspec.structs.replace(r, instructions=instructions)
    if demos:
        r = msgspec.structs.replace(
            r,
            demos=tuple(ir.Demo(inputs={"ticket": f"ticket <{i}>"}, output={"team": "billing"}) for i in range(demos)),
        )
    nodes = (r, default_node(reply, "reply"), default_node(polish, "polish"))
    edges = (ir.Edge("route", "reply", "team"), ir.Edge("reply", "polish", "text"))
    return ir.Program(pipeline="tests.test_report:support", nodes=nodes, edges=edges)


SCORES = [0.3, 0.45, None, 0.8, 0.6, 0.7]
BEST = 3


def history() -> list[dict[str, Any]]:
    out = []
    for i, score in enumerate(SCORES):
        prog = pipeline_program(BEST_INSTRUCTIONS if i == BEST else None, demos=2 if i == BEST else 0)
        out.append(
            {
                "index": i,
                "score": score,
                "note": "zero-shot" if i == 0 else f"<round {i}> & co",
                "usage": [5 * (i + 1), 50 * (i + 1), 10 * (i + 1), 0.01 * (i + 1)],
                "program": msgspec.to_builtins(prog),
            }
        )
    return out


RUN = {"id": "20250131-142501-3fa2c1", "pipeline": "tests.test_report:support", "optimizer": "beam",
       "status": "finished", "seed": 7, "lm": {"provider": "fake", "model": "fake-1"}}


class Page(HTMLParser):
    """What the checks need from the page: title, table rows, svg elements, scripts, links."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.title = ""
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        self._in_title = tag == "title" and not self.title  # the page's title, not an svg tooltip

    def handle_endtag(self, tag: str) -> None:
        self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data

    def find(self, tag: str, **attrs: str) -> list[dict[str, str | None]]:
        return [a for t, a in self.tags if t == tag and all(a.get(k) == v for k, v in attrs.items())]


def parse(html: str) -> Page:
    page = Page()
    page.feed(html)
    return page


def test_report_has_plot_table_prompts_and_diff() -> None:
    html = build_report(RUN, history())
    page = parse(html)
    assert page.title == "desic run 20250131-142501-3fa2c1"
    rows = [a for a in page.find("tr") if (a.get("id") or "").startswith("cand-")]
    assert [a["id"] for a in rows] == [f"cand-{i}" for i in range(len(SCORES))]
    assert page.find("tr", id=f"cand-{BEST}", **{"class": "best"})
    # the plot: one point per scored candidate, the best one highlighted, a best-so-far line
    assert len(page.find("circle")) == len([s for s in SCORES if s is not None])
    assert len(page.find("circle", **{"class": "pt top"})) == 1
    (line,) = page.find("polyline", **{"class": "best-line"})
    ys = [float(p.split(",")[1]) for p in (line["points"] or "").split()]
    assert ys == sorted(ys, reverse=True)  # best so far never drops (svg y grows downwards)
    # the best program: node graph (svg + text) and each node's prompt with {placeholders}
    assert "[route]   predict(ticket) -&gt; team" in html
    assert "team &lt;- [route]" in html
    assert len(page.find("svg", **{"class": "dag"})) == 1 and len(page.find("rect")) == 3
    assert "ticket: {ticket}" in html
    assert "2 demos (4 messages)" in html
    # the instruction diff: baseline (candidate 0) vs best
    diff_tables = page.find("table", **{"class": "diff"})
    assert diff_tables
    assert 'class="diff_add"' in html and "Refunds for damaged parcels go to shipping." in html
    assert "baseline (candidate 0)" in html and f"best (candidate {BEST})" in html
    assert "Demos: 0 → 2." in html
    # user text is escaped, never markup
    assert "&lt;round 1&gt; &amp; co" in html and "<round 1>" not in html


def test_report_is_self_contained() -> None:
    html = build_report(RUN, history())
    page = parse(html)
    assert not page.find("link") and not page.find("img") and not page.find("iframe")
    assert all(a.get("src") is None for _, a in page.tags)
    hrefs = [a.get("href") for _, a in page.tags if a.get("href")]
    assert hrefs and all(h.startswith("#") for h in hrefs if h)
    urls = set(re.findall(r"https?://[^\s\"'<>)]+", html))
    assert urls <= {"http://www.w3.org/2000/svg"}


def test_report_edge_cases() -> None:
    empty = build_report({"id": "r1", "status": "running"}, [])
    assert "No candidates recorded yet." in empty and "No candidate has a score yet." in empty
    only = build_report({"id": "r2"}, history()[:1])
    assert "The best candidate is the baseline (candidate 0)" in only
    from desic.lm import Usage
    from desic.optimize import Candidate

    objects = [Candidate(index=i, program=pipeline_program(), score=s, usage=Usage(calls=i), note="") for i, s in enumerate([0.1, 0.2])]
    rows = candidate_rows(objects)
    assert [(r.index, r.score, r.calls) for r in rows] == [(0, 0.1, 0), (1, 0.2, 1)]
    assert 'id="cand-1" class="best"' in build_report({"id": "r3"}, objects)


def test_report_names_the_budget_that_stopped_a_run() -> None:
    from desic.storage import RunInfo

    info = RunInfo(id="r4", pipeline="p", status="stopped", stopped_by="max_dollars", error="BudgetExceeded: out")
    page = build_report(info, history())
    assert '<p class="sub">p · stopped (max_dollars)</p>' in page
    assert "<b>stopped (max_dollars)</b><span>status</span>" in page
    assert "<dt>stopped by budget</dt><dd>max_dollars</dd>" in page and "<dt>reason</dt><dd>BudgetExceeded: out</dd>" in page
    failed = build_report({"id": "r5", "status": "failed", "error": "LMError: down"}, [])
    assert "<b>failed</b><span>status</span>" in failed and "<dt>error</dt><dd>LMError: down</dd>" in failed
    interrupted = build_report({"id": "r6", "status": "stopped", "error": "KeyboardInterrupt: "}, [])
    assert "<b>stopped</b><span>status</span>" in interrupted


def test_format_graph_lists_nodes_in_data_order_with_input_origins() -> None:
    program = pipeline_program(demos=1)
    shuffled = program.replace(nodes=tuple(reversed(program.nodes)))
    assert graph_layers(shuffled) == [["route"], ["reply"], ["polish"]]
    text = format_graph(shuffled)
    assert text.splitlines() == [
        "graph of tests.test_report:support: 3 nodes, 2 edges",
        "  [route]   predict(ticket) -> team   1 demo",
        "              ticket <- pipeline input",
        "  [reply]   predict(ticket, team) -> output   0 demos",
        "              ticket <- pipeline input",
        "              team <- [route]",
        "  [polish]  predict(text) -> output   0 demos",
        "              text <- [reply]",
    ]


def test_format_graph_survives_a_cycle() -> None:
    program = pipeline_program().replace(edges=(ir.Edge("route", "reply", "team"), ir.Edge("reply", "route", "ticket")))
    assert sorted(n for layer in graph_layers(program) for n in layer) == ["polish", "reply", "route"]


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="headless Chromium is not installed (apt-get install -y chromium)")
def test_report_renders_in_headless_chromium(tmp_path: Path) -> None:
    report = tmp_path / "report.html"
    report.write_text(build_report(RUN, history()), encoding="utf-8")
    base = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*base, "--dump-dom", report.as_uri()], check=False, capture_output=True, text=True, timeout=60)
    assert dom.returncode == 0, dom.stderr[-2000:]
    page = parse(dom.stdout)
    assert page.title == "desic run 20250131-142501-3fa2c1"
    assert len([a for a in page.find("tr") if (a.get("id") or "").startswith("cand-")]) == len(SCORES)
    assert page.find("polyline", **{"class": "best-line"})
    assert len(page.find("circle")) == 5
    assert page.find("table", **{"class": "diff"})
    assert "Refunds for damaged parcels go to shipping." in dom.stdout
    shot = tmp_path / "report.png"
    snap = subprocess.run([*base, "--window-size=1200,2200", f"--screenshot={shot}", report.as_uri()],
                          check=False, capture_output=True, text=True, timeout=60)
    assert snap.returncode == 0, snap.stderr[-2000:]
    data = shot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    assert int.from_bytes(data[16:20], "big") == 1200  # IHDR width
    assert len(data) > 50_000  # a rendered page, not a blank one


# --- one candidate, scores with their split and rows, config tables, the Jinja template ------------


def scored_history(split: str = "val") -> list[dict[str, Any]]:
    out = history()
    for rec in out:
        if rec["score"] is not None:
            n = 20
            hits = round(rec["score"] * n)
            rec["split"], rec["scores"] = split, [1.0] * hits + [0.0] * (n - hits)
    return out


def test_a_one_candidate_run_says_its_score_instead_of_an_empty_chart() -> None:
    page = build_report(RUN, scored_history()[:1])
    assert not parse(page).find("svg", **{"class": "plot"})
    assert "One candidate was evaluated" in page
    assert "0.300" in page


def test_scores_say_which_split_and_how_many_rows_with_an_interval() -> None:
    page = build_report(RUN, scored_history())
    # best is candidate 3: 16 of 20 validation rows; a 95% interval around 0.8
    assert re.search(r"0\.800 \[0\.5\d\d, 0\.9\d\d\] on 20 validation rows", page), page[:3000]
    text = re.sub(r"<[^>]+>", " ", page)
    assert "rows" in text and "split" in text
    # records with no per-row scores (older runs) still show a bare score, no interval
    assert "0.800" in build_report(RUN, history()) and "validation rows" not in build_report(RUN, history())


def test_lm_and_optimizer_config_are_tables_not_json() -> None:
    info = {**RUN, "optimizer_config": {"max_demos": 4, "seed": 7}}
    page = parse(build_report(info, history()))
    tables = page.find("table", **{"class": "kv"})
    assert len(tables) == 2
    html = build_report(info, history())
    assert "<th>provider</th><td>fake</td>" in html and "<th>max_demos</th><td>4</td>" in html
    assert '{"model"' not in html and "&#34;model&#34;" not in html and "&quot;model&quot;" not in html


def test_the_page_is_a_jinja_template_with_autoescape() -> None:
    from desic import report

    env = report.environment()
    assert env.autoescape is True or callable(env.autoescape)
    assert env.get_template("report.html.j2") is not None
    hostile = history()
    hostile[1]["note"] = "{{ 7*7 }}<script>alert(1)</script>"
    page = build_report({**RUN, "pipeline": "<img src=x onerror=alert(1)>"}, hostile)
    assert "<script>alert(1)</script>" not in page and "<img src=x" not in page
    assert "{{ 7*7 }}" in page and ">49<" not in page  # user text is data, never template code
