"""Run reports and program graphs, built from plain records (no storage, no network).

- ``build_report(run_info, candidates)``: one self-contained HTML page for a compile run:
  the score of every candidate with the best-so-far line (inline SVG), the candidate table,
  the best program's node graph and rendered prompts, and the diff of each node's
  instructions (and full prompt) between the baseline (candidate 0) and the best candidate.
- ``format_graph(program)``: a program's nodes and data edges as text (``desic prompts``).

``candidates`` are history records as optimizers and stores keep them
(``{"index", "score", "note", "usage": [calls, prompt_tokens, completion_tokens, cost],
"program"}``; usage is cumulative for the run) or ``desic.optimize.Candidate`` objects.
"""

from __future__ import annotations

import datetime as _dt
import difflib
import html
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import msgspec

from . import ir
from ._version import __version__

__all__ = ["CandidateRow", "build_report", "candidate_rows", "format_graph", "graph_layers"]


# --- records ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateRow:
    """One candidate, normalised from whatever shape the record came in."""

    index: int
    score: float | None
    note: str
    calls: int
    tokens: int
    cost: float
    program: ir.Program | None


def _usage(value: Any) -> tuple[int, int, float]:
    if isinstance(value, Sequence) and not isinstance(value, str) and len(value) >= 4:
        return int(value[0]), int(value[1]) + int(value[2]), float(value[3])
    if isinstance(value, Mapping):
        tokens = int(value.get("prompt_tokens", 0)) + int(value.get("completion_tokens", 0))
        return int(value.get("calls", 0)), tokens, float(value.get("cost", 0.0))
    if value is not None and hasattr(value, "calls"):
        tokens = int(getattr(value, "prompt_tokens", 0)) + int(getattr(value, "completion_tokens", 0))
        return int(value.calls), tokens, float(getattr(value, "cost", 0.0))
    return 0, 0, 0.0


def _program(value: Any) -> ir.Program | None:
    if isinstance(value, ir.Program):
        return value
    if isinstance(value, Mapping):
        try:
            return msgspec.convert(dict(value), ir.Program)
        except msgspec.ValidationError:
            return None
    return None


def candidate_rows(candidates: Iterable[Any]) -> list[CandidateRow]:
    rows: list[CandidateRow] = []
    for position, cand in enumerate(candidates):
        get = cand.get if isinstance(cand, Mapping) else lambda k, d=None, c=cand: getattr(c, k, d)
        score = get("score")
        calls, tokens, cost = _usage(get("usage"))
        index = get("index")
        rows.append(
            CandidateRow(
                index=int(index) if isinstance(index, int) else position,
                score=float(score) if isinstance(score, (int, float)) else None,
                note=str(get("note") or ""),
                calls=calls,
                tokens=tokens,
                cost=cost,
                program=_program(get("program")),
            )
        )
    return rows


def _best(rows: Sequence[CandidateRow]) -> CandidateRow | None:
    """The highest-scoring candidate (the earliest of equals), or ``None`` if none scored."""
    best: CandidateRow | None = None
    for row in rows:
        if row.score is not None and (best is None or best.score is None or row.score > best.score):
            best = row
    return best


def _info(run_info: Any) -> dict[str, Any]:
    if run_info is None:
        return {}
    if isinstance(run_info, msgspec.Struct):
        data: dict[str, Any] = msgspec.to_builtins(run_info)
        return data
    if isinstance(run_info, Mapping):
        return dict(run_info)
    return {k: v for k, v in vars(run_info).items() if not k.startswith("_")}


# --- the graph ----------------------------------------------------------------------------------


def graph_layers(program: ir.Program) -> list[list[str]]:
    """Node ids by depth: a node sits one layer below the deepest node feeding it.

    A depth-first walk up the edges from each node in program order, cutting an edge back
    into the path being walked (so cycles are cut, never followed). The walk keeps its own
    stack: a program is data, and a chain of thousands of nodes must not exhaust Python's.
    """
    ids = list(program.node_ids)
    parents: dict[str, set[str]] = {i: set() for i in ids}
    for edge in program.edges:
        if edge.src in parents and edge.dst in parents and edge.src != edge.dst:
            parents[edge.dst].add(edge.src)
    depth: dict[str, int] = {}
    path: set[str] = set()  # the nodes on the stack: what a recursive walk would have "seen"

    def enter(node_id: str) -> list[Any]:
        frame = [node_id, iter([p for p in parents[node_id] if p not in path]), -1]
        path.add(node_id)
        return frame

    for start in ids:
        if start in depth:
            continue
        stack = [enter(start)]
        while stack:
            frame = stack[-1]
            for up in frame[1]:
                if up in depth:
                    frame[2] = max(frame[2], depth[up])
                else:
                    stack.append(enter(up))
                    break
            else:
                node_id = frame[0]
                depth[node_id] = frame[2] + 1
                path.discard(node_id)
                stack.pop()
                if stack:
                    stack[-1][2] = max(stack[-1][2], depth[node_id])
    layers: list[list[str]] = [[] for _ in range(max(depth.values(), default=-1) + 1)]
    for node_id in ids:
        layers[depth[node_id]].append(node_id)
    return layers


def format_graph(program: ir.Program) -> str:
    """The node graph as text: each node with its strategy, fields and demos, and where
    each of its inputs comes from (another node or the pipeline's caller)."""
    n_nodes, n_edges = len(program.nodes), len(program.edges)
    head = f"graph of {program.pipeline or 'the program'}: "
    lines = [f"{head}{n_nodes} node{'s' * (n_nodes != 1)}, {n_edges} edge{'s' * (n_edges != 1)}"]
    incoming: dict[str, dict[str, list[str]]] = {}
    for edge in program.edges:
        incoming.setdefault(edge.dst, {}).setdefault(edge.field, []).append(edge.src)
    order = [node_id for layer in graph_layers(program) for node_id in layer]
    width = max((len(i) for i in order), default=0)
    for node_id in order:
        node = program.node(node_id)
        if node is None:  # pragma: no cover - ids come from the program
            continue
        spec = node.signature
        demos = f"{len(node.demos)} demo{'s' * (len(node.demos) != 1)}"
        outs = ", ".join(spec.output_names)
        lines.append(
            f"  [{node_id}]{' ' * (width - len(node_id))}  {node.strategy}"
            f"({', '.join(spec.input_names)}) -> {outs}   {demos}"
        )
        feeds = incoming.get(node_id, {})
        for name in spec.input_names:
            sources = feeds.get(name)
            origin = ", ".join(f"[{s}]" for s in sources) if sources else "pipeline input"
            lines.append(f"  {' ' * (width + 2)}    {name} <- {origin}")
    return "\n".join(lines)


# --- HTML pieces ----------------------------------------------------------------------------------

_e = html.escape

_CSS = """
:root{--fg:#1d2330;--mut:#5f6b7a;--line:#d9dee5;--bg:#fff;--soft:#f4f6f9;--acc:#2b6cb0;--best:#d97706;
--add:#e6ffed;--sub:#ffeef0;--chg:#fff5b1}
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;
color:var(--fg);background:var(--bg)}main{max-width:1100px;margin:0 auto;padding:24px 28px 48px}
h1{font-size:22px;margin:0 0 4px}h2{font-size:17px;margin:32px 0 10px;padding-bottom:6px;
border-bottom:1px solid var(--line)}h3{font-size:14px;margin:18px 0 6px}
code,pre{font:12.5px/1.45 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace}
.sub{color:var(--mut);margin:0}.cards{display:flex;flex-wrap:wrap;gap:10px;margin-top:16px}
.card{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:8px 14px;min-width:120px}
.card b{display:block;font-size:18px}.card span{color:var(--mut);font-size:12px}
dl.meta{display:grid;grid-template-columns:max-content 1fr;gap:2px 14px;margin:14px 0 0}
dl.meta dt{color:var(--mut)}dl.meta dd{margin:0;word-break:break-word}
svg.plot{width:100%;height:auto;background:#fff;border:1px solid var(--line);border-radius:8px}
svg .grid{stroke:#eef1f5}svg .axis{stroke:#9aa5b1}svg text{font-size:11px;fill:var(--mut)}
svg .best-line{fill:none;stroke:var(--best);stroke-width:2}svg .pt{fill:var(--acc);opacity:.85}
svg .pt.top{fill:var(--best);stroke:#fff;stroke-width:1.5}svg a:hover .pt{opacity:1;stroke:#000}
.legend{color:var(--mut);font-size:12px;margin:6px 0 0}.legend i{display:inline-block;width:14px;height:3px;
vertical-align:middle;margin:0 4px 0 12px}
table.cands{border-collapse:collapse;width:100%}table.cands th,table.cands td{padding:5px 8px;
border-bottom:1px solid var(--line);text-align:left;vertical-align:top}table.cands th{cursor:pointer;
user-select:none;background:var(--soft);position:sticky;top:0}table.cands td.num{text-align:right;
font-variant-numeric:tabular-nums}table.cands tr.best td{background:#fff7e6}table.cands tr:target td{
outline:2px solid var(--acc)}td.instr{color:var(--mut);max-width:420px}
pre.graph{background:var(--soft);border:1px solid var(--line);border-radius:8px;padding:10px 12px;overflow:auto}
svg.dag{max-width:100%;height:auto}svg.dag rect{fill:#eef4fb;stroke:var(--acc)}svg.dag text{fill:var(--fg);
font-size:12px}svg.dag line{stroke:#7b8794;stroke-width:1.4}
.msg{border:1px solid var(--line);border-radius:8px;margin:8px 0;overflow:hidden}
.msg .role{font-size:11px;text-transform:uppercase;letter-spacing:.05em;padding:3px 10px;background:var(--soft);
color:var(--mut)}.msg pre{margin:0;padding:8px 10px;white-space:pre-wrap;word-break:break-word}
.msg.system .role{background:#e8f0fe}.msg.assistant .role{background:#e9f7ef}
table.diff{border-collapse:collapse;width:100%;font:12px ui-monospace,Menlo,Consolas,monospace;margin:6px 0;
border:1px solid var(--line)}table.diff colgroup{display:none}
table.diff td{padding:1px 6px;vertical-align:top;white-space:pre-wrap;word-break:break-word;width:50%}
table.diff th{background:var(--soft);font-weight:600;text-align:left;padding:4px 6px}
table.diff .diff_next{display:none}table.diff td.diff_header{color:var(--mut);text-align:right;width:2.5em;
background:var(--soft)}
.diff_add{background:var(--add)}.diff_chg{background:var(--chg)}.diff_sub{background:var(--sub)}
.same{color:var(--mut)}details{margin:8px 0}summary{cursor:pointer;color:var(--acc)}
.empty{color:var(--mut);font-style:italic}footer{margin-top:40px;color:var(--mut);font-size:12px}
"""

_JS = """
document.querySelectorAll('table.cands th').forEach(function(th, col){
  th.addEventListener('click', function(){
    var body = th.closest('table').tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var asc = th.dataset.dir !== 'asc'; th.dataset.dir = asc ? 'asc' : 'desc';
    rows.sort(function(a, b){
      var x = a.cells[col].dataset.v, y = b.cells[col].dataset.v;
      var nx = parseFloat(x), ny = parseFloat(y);
      var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : String(x).localeCompare(String(y));
      return asc ? c : -c;
    });
    rows.forEach(function(r){ body.appendChild(r); });
  });
});
"""


def _fmt_score(score: float | None) -> str:
    return "—" if score is None else f"{score:.3f}"


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    span = hi - lo
    if span <= 0:
        return [lo]
    raw = span / count
    mag = 10 ** math.floor(math.log10(raw))
    step = min((m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw), default=raw)
    first = (lo // step) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9:
        if t >= lo - step * 1e-9:
            ticks.append(round(t, 10))
        t += step
    return ticks


def score_plot(rows: Sequence[CandidateRow], *, width: int = 760, height: int = 300) -> str:
    """Inline SVG: one point per scored candidate, a step line of the best score so far."""
    scored = [(r, r.score) for r in rows if r.score is not None]
    left, right, top, bottom = 52, 18, 16, 40
    pw, ph = width - left - right, height - top - bottom
    if not scored:
        return '<p class="empty">No candidate has a score yet.</p>'
    xs = [r.index for r in rows]
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)
    scores = [score for _, score in scored]
    y_lo, y_hi = min(0.0, min(scores)), max(1.0, max(scores))

    def px(x: float) -> float:
        return left + (x - x_lo) / (x_hi - x_lo) * pw

    def py(y: float) -> float:
        return top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph

    out = [
        (
            f'<svg class="plot" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
            'role="img" aria-label="score over candidates">'
        )
    ]
    for t in _nice_ticks(y_lo, y_hi):
        y = py(t)
        out.append(f'<line class="grid" x1="{left}" x2="{left + pw}" y1="{y:.1f}" y2="{y:.1f}"/>')
        out.append(f'<text x="{left - 6}" y="{y + 4:.1f}" text-anchor="end">{t:g}</text>')
    x_ticks = [t for t in _nice_ticks(x_lo, x_hi, 10) if float(t).is_integer()]
    for t in x_ticks:
        x = px(t)
        out.append(f'<text x="{x:.1f}" y="{top + ph + 16}" text-anchor="middle">{int(t)}</text>')
    out.append(f'<line class="axis" x1="{left}" x2="{left + pw}" y1="{top + ph}" y2="{top + ph}"/>')
    out.append(f'<line class="axis" x1="{left}" x2="{left}" y1="{top}" y2="{top + ph}"/>')
    out.append(
        f'<text x="{left + pw / 2:.1f}" y="{height - 6}" text-anchor="middle">candidate</text>'
        f'<text x="14" y="{top + ph / 2:.1f}" text-anchor="middle" '
        f'transform="rotate(-90 14 {top + ph / 2:.1f})">score</text>'
    )
    points: list[str] = []
    best: float | None = None
    for r, score in scored:
        if best is not None:
            points.append(f"{px(r.index):.1f},{py(best):.1f}")
        best = score if best is None or score > best else best
        points.append(f"{px(r.index):.1f},{py(best):.1f}")
    out.append(f'<polyline class="best-line" points="{" ".join(points)}"/>')
    top_row = _best(rows)
    for r, score in scored:
        cls = "pt top" if r is top_row else "pt"
        radius = 6 if r is top_row else 4
        tip = f"candidate {r.index}: score {score:.3f}" + (f" ({r.note})" if r.note else "")
        out.append(
            f'<a href="#cand-{r.index}"><circle class="{cls}" cx="{px(r.index):.1f}" '
            f'cy="{py(score):.1f}" r="{radius}"><title>{_e(tip)}</title></circle></a>'
        )
    out.append("</svg>")
    return "".join(out)


def _first_line(text: str, limit: int = 110) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _candidate_table(rows: Sequence[CandidateRow]) -> str:
    if not rows:
        return '<p class="empty">No candidates recorded yet.</p>'
    best = _best(rows)
    head = ["#", "score", "best so far", "note", "calls", "tokens", "cost ($)", "demos", "instructions"]
    out = ['<table class="cands" id="candidates-table"><thead><tr>']
    out.extend(f"<th>{_e(h)}</th>" for h in head)
    out.append("</tr></thead><tbody>")
    running: float | None = None
    for r in rows:
        if r.score is not None and (running is None or r.score > running):
            running = r.score
        demos = sum(len(n.demos) for n in r.program.nodes) if r.program else 0
        instr = " | ".join(_first_line(n.instructions, 80) for n in r.program.nodes) if r.program else ""
        cells = [
            (str(r.index), str(r.index), "num"),
            (_fmt_score(r.score), "" if r.score is None else f"{r.score}", "num"),
            (_fmt_score(running), "" if running is None else f"{running}", "num"),
            (r.note, r.note, ""),
            (str(r.calls), str(r.calls), "num"),
            (str(r.tokens), str(r.tokens), "num"),
            (f"{r.cost:.4f}", f"{r.cost}", "num"),
            (str(demos), str(demos), "num"),
            (instr, instr, "instr"),
        ]
        cls = ' class="best"' if r is best else ""
        out.append(f'<tr id="cand-{r.index}"{cls}>')
        out.extend(
            f'<td class="{c}" data-v="{_e(v)}">{_e(text)}</td>' if c else f'<td data-v="{_e(v)}">{_e(text)}</td>'
            for text, v, c in cells
        )
        out.append("</tr>")
    out.append("</tbody></table>")
    return "".join(out)


def _graph_svg(program: ir.Program) -> str:
    """The node graph as boxes in layers (left to right) with arrows for data edges."""
    layers = graph_layers(program)
    if not layers:
        return ""
    box_w, box_h, gap_x, gap_y, pad = 170, 40, 70, 18, 10
    pos: dict[str, tuple[float, float]] = {}
    tallest = max(len(layer) for layer in layers)
    height = pad * 2 + tallest * box_h + (tallest - 1) * gap_y
    width = pad * 2 + len(layers) * box_w + (len(layers) - 1) * gap_x
    for li, layer in enumerate(layers):
        span = len(layer) * box_h + (len(layer) - 1) * gap_y
        y0 = (height - span) / 2
        for ni, node_id in enumerate(layer):
            pos[node_id] = (pad + li * (box_w + gap_x), y0 + ni * (box_h + gap_y))
    out = [
        (
            f'<svg class="dag" xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height:.0f}" '
            f'width="{width}" role="img" aria-label="node graph">'
            '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" '
            'markerHeight="7" orient="auto"><path d="M0,0L10,5L0,10z" fill="#7b8794"/></marker></defs>'
        )
    ]
    for edge in program.edges:
        if edge.src not in pos or edge.dst not in pos:
            continue
        (sx, sy), (dx, dy) = pos[edge.src], pos[edge.dst]
        out.append(
            f'<line x1="{sx + box_w:.1f}" y1="{sy + box_h / 2:.1f}" x2="{dx:.1f}" '
            f'y2="{dy + box_h / 2:.1f}" marker-end="url(#arrow)"><title>{_e(edge.src)} → '
            f"{_e(edge.dst)}.{_e(edge.field)}</title></line>"
        )
    for node in program.nodes:
        x, y = pos[node.id]
        label = node.id if len(node.id) <= 22 else node.id[:21] + "…"
        out.append(
            f'<g><rect x="{x:.1f}" y="{y:.1f}" width="{box_w}" height="{box_h}" rx="7"/>'
            f'<text x="{x + box_w / 2:.1f}" y="{y + 17:.1f}" text-anchor="middle">{_e(label)}</text>'
            f'<text x="{x + box_w / 2:.1f}" y="{y + 32:.1f}" text-anchor="middle" '
            f'style="font-size:10px;fill:#5f6b7a">{_e(node.strategy)} · {_e(node.demos_text)}</text></g>'
        )
    out.append("</svg>")
    return "".join(out)


def placeholder_inputs(node: ir.Node) -> dict[str, str]:
    return {f.name: "{" + f.name + "}" for f in node.signature.inputs}


def node_prompt(node: ir.Node) -> list[dict[str, str]]:
    """The node's messages with each input shown as ``{name}``."""
    from .render import render_messages

    return render_messages(node, placeholder_inputs(node))


def _messages_html(messages: Sequence[Mapping[str, str]]) -> str:
    return "".join(
        f'<div class="msg {_e(m["role"])}"><div class="role">{_e(m["role"])}</div>'
        f"<pre>{_e(m['content'])}</pre></div>"
        for m in messages
    )


def _prompt_text(node: ir.Node) -> list[str]:
    try:
        messages = node_prompt(node)
    except Exception as exc:  # noqa: BLE001 - a template that cannot render is reported, not fatal
        return [f"(cannot render: {type(exc).__name__}: {exc})"]
    lines: list[str] = []
    for m in messages:
        lines.append(f"--- {m['role']} ---")
        lines.extend(m["content"].splitlines())
    return lines


def _best_program_html(best: CandidateRow | None) -> str:
    if best is None or best.program is None:
        return '<p class="empty">No scored candidate with a program.</p>'
    program = best.program
    parts = [
        f"<p>Candidate {best.index}, score {_fmt_score(best.score)}"
        + (f" — {_e(best.note)}" if best.note else "")
        + ". Inputs are shown as <code>{name}</code>.</p>",
        _graph_svg(program),
        f'<pre class="graph">{_e(format_graph(program))}</pre>',
    ]
    for node in program.nodes:
        parts.append(f"<h3>node <code>{_e(node.id)}</code> · {_e(node.strategy)} · {_e(node.demos_text)}</h3>")
        try:
            messages = node_prompt(node)
        except Exception as exc:  # noqa: BLE001 - a template that cannot render is reported, not fatal
            parts.append(f'<p class="empty">cannot render this node: {_e(type(exc).__name__)}: {_e(str(exc))}</p>')
            continue
        demo_turns = messages[1:-1]
        parts.append(_messages_html(messages[:1]))
        if node.select is not None and node.select.per_input:
            parts.append(_pool_html(node.select))
        elif demo_turns:
            parts.append(
                f"<details><summary>{len(demo_turns) // 2} demos ({len(demo_turns)} messages)</summary>"
                + _messages_html(demo_turns)
                + "</details>"
            )
        parts.append(_messages_html(messages[-1:]))
    return "".join(parts)


def _pool_html(select: ir.DemoSelect, limit: int = 200) -> str:
    """A per-input demo pool: each input gets the ``k`` demos of it nearest the input."""
    rows = "".join(
        f"<tr><td>{i}</td><td>{_e(d.source)}</td><td><pre>{_e(_first_line(json.dumps(d.inputs, ensure_ascii=False), 300))}</pre></td>"
        f"<td><pre>{_e(_first_line(json.dumps(d.output, ensure_ascii=False), 200))}</pre></td></tr>"
        for i, d in enumerate(select.pool[:limit])
    )
    more = f"<p>... and {len(select.pool) - limit} more</p>" if len(select.pool) > limit else ""
    return (
        f"<details><summary>per-input demos: each input is shown the {select.k} demos of this pool of "
        f"{len(select.pool)} most similar to it ({_e(select.by)})</summary>"
        f"<table><tr><th>#</th><th>source</th><th>inputs</th><th>output</th></tr>{rows}</table>{more}</details>"
    )


def _wrap_lines(text: str, width: int = 100) -> list[str]:
    import textwrap

    lines: list[str] = []
    for line in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(line, width) or [""])
    return lines


def _diff_html(baseline: CandidateRow | None, best: CandidateRow | None) -> str:
    if baseline is None or best is None or baseline.program is None or best.program is None:
        return '<p class="empty">Needs a baseline and a scored best candidate.</p>'
    if baseline is best:
        return f'<p class="same">The best candidate is the baseline (candidate {baseline.index}): nothing changed.</p>'
    a, b = baseline.program, best.program
    from_desc = f"baseline (candidate {baseline.index})"
    to_desc = f"best (candidate {best.index})"
    differ = difflib.HtmlDiff(tabsize=4, wrapcolumn=70)
    parts: list[str] = []
    for node_id in dict.fromkeys([*a.node_ids, *b.node_ids]):
        na, nb = a.node(node_id), b.node(node_id)
        parts.append(f"<h3>node <code>{_e(node_id)}</code></h3>")
        if na is None or nb is None:
            where = "best" if na is None else "baseline"
            parts.append(f'<p class="same">only in the {where} program</p>')
            continue
        ia = na.instructions or na.signature.instructions
        ib = nb.instructions or nb.signature.instructions
        if ia == ib:
            parts.append('<p class="same">Instructions unchanged.</p>')
        else:
            parts.append(
                differ.make_table(_wrap_lines(ia), _wrap_lines(ib), from_desc, to_desc, context=False)
            )
        parts.append(f"<p>Demos: {len(na.demos)} → {len(nb.demos)}.</p>")
        pa, pb = _prompt_text(na), _prompt_text(nb)
        if pa != pb:
            parts.append(
                "<details><summary>Full prompt diff (system message and demos)</summary>"
                + differ.make_table(pa, pb, from_desc, to_desc, context=True, numlines=2)
                + "</details>"
            )
    return "".join(parts)


def _meta_html(info: Mapping[str, Any]) -> str:
    keys = ["id", "pipeline", "status", "stopped_by", "optimizer", "optimizer_config", "seed", "lm", "created_at", "updated_at", "error"]
    keys += [k for k in info if k not in keys and k not in ("best_score", "candidates")]
    labels = {"stopped_by": "stopped by budget", "error": "reason" if info.get("status") == "stopped" else "error"}
    out = ['<dl class="meta">']
    for key in keys:
        value = info.get(key)
        if value in (None, "", {}, []):
            continue
        text = value if isinstance(value, str) else json.dumps(value, default=str, sort_keys=True)
        out.append(f"<dt>{_e(labels.get(key, key.replace('_', ' ')))}</dt><dd>{_e(text)}</dd>")
    out.append("</dl>")
    return "".join(out)


def _status(info: Mapping[str, Any]) -> str:
    """``stopped (max_calls)`` for a run a budget stopped; else the status as stored."""
    status = str(info.get("status") or "?")
    stopped_by = info.get("stopped_by")
    return f"{status} ({stopped_by})" if status == "stopped" and stopped_by else status


def build_report(run_info: Any, candidates: Iterable[Any]) -> str:
    """One self-contained HTML page (inline CSS, JS and SVG; no network) for a run.

    ``run_info`` is a ``RunInfo`` or a mapping (``id``, ``pipeline``, ``optimizer``,
    ``status``, ...); ``candidates`` the run's history records in evaluation order.
    """
    info = _info(run_info)
    rows = candidate_rows(candidates)
    best = _best(rows)
    baseline = rows[0] if rows else None
    run_id = str(info.get("id") or info.get("run_id") or "run")
    last = rows[-1] if rows else None
    cards = [
        (_fmt_score(best.score if best else None), "best score"),
        (str(len(rows)), "candidates"),
        (str(last.calls if last else 0), "LM calls"),
        (str(last.tokens if last else 0), "tokens"),
        (f"${last.cost:.4f}" if last else "$0", "cost"),
        (_status(info), "status"),
    ]
    status = _status(info) if info.get("status") else None
    subtitle = " · ".join(str(x) for x in (info.get("pipeline"), info.get("optimizer"), status) if x)
    stamp = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    body = [
        "<!doctype html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>desic run {_e(run_id)}</title><style>{_CSS}</style></head><body><main>",
        f'<header><h1>desic run <code>{_e(run_id)}</code></h1><p class="sub">{_e(subtitle)}</p>',
        '<div class="cards">',
        *(f'<div class="card"><b>{_e(v)}</b><span>{_e(k)}</span></div>' for v, k in cards),
        "</div>",
        _meta_html(info),
        "</header>",
        '<section id="plot"><h2>Score over candidates</h2>',
        score_plot(rows),
        (
            '<p class="legend"><i style="background:#2b6cb0;height:8px;width:8px;border-radius:4px"></i>'
            'candidate <i style="background:#d97706"></i>best so far (click a point for its row)</p></section>'
        ),
        '<section id="candidates"><h2>Candidates</h2>',
        '<p class="legend">Calls, tokens and cost are cumulative for the run. Click a header to sort.</p>',
        _candidate_table(rows),
        "</section>",
        '<section id="best"><h2>Best program</h2>',
        # nothing scored (labeled, knn without a valset): the program the run ended with
        _best_program_html(best or next((r for r in reversed(rows) if r.program is not None), None)),
        "</section>",
        '<section id="diff"><h2>Instructions: baseline vs best</h2>',
        _diff_html(baseline, best),
        "</section>",
        f"<footer>Generated by desic {_e(__version__)} on {_e(stamp)}.</footer>",
        f"</main><script>{_JS}</script></body></html>",
    ]
    return "\n".join(body)
