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
import functools
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import jinja2
import msgspec
from markupsafe import Markup

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
    split: str | None = None
    scores: tuple[float, ...] = ()


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


def _scores(value: Any) -> tuple[float, ...]:
    if not isinstance(value, Sequence) or isinstance(value, str):
        return ()
    try:
        return tuple(float(v) for v in value)
    except (TypeError, ValueError):
        return ()


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
                split=str(get("split")) if get("split") else None,
                scores=_scores(get("scores")),
            )
        )
    return rows


def _best(rows: Sequence[CandidateRow]) -> CandidateRow | None:
    """The program the optimizer chose (its last ``selected`` record, whose note holds the
    evidence) when it recorded one; else the highest-scoring candidate (the earliest of
    equals), or ``None`` if none scored."""
    for row in reversed(rows):
        if row.split is not None and row.split.startswith("selected") and row.score is not None:
            return row
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
        if node.select is not None and node.select.per_input:
            demos = node.demos_text
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



# --- what the page shows, as data for the template (desic/templates/report.html.j2) ------------

_SPLITS = {
    "val": "validation rows",
    "minibatch": "minibatch rows",
    "bootstrap": "trainset traces",
    "selected": "validation rows (the optimizer's choice)",
    "check": "check rows the search never used",
    "selected (check)": "check rows the search never used (the optimizer's choice)",
    "baseline": "rows, each without its own demos (beside the pipeline as written)",
    "selected (baseline)": "rows, each without its own demos (the compile's choice, beside the pipeline as written)",
}


def score_interval(scores: Sequence[float]) -> tuple[float, float] | None:
    """A 95% interval of the mean of per-row scores (``desic.optimize.interval``, the one
    the search's evidence uses); None below 2 rows."""
    if len(scores) < 2:
        return None
    from .optimize import interval

    return interval(scores)


def _fmt_score(score: float | None) -> str:
    return "—" if score is None else f"{score:.3f}"


def score_text(row: CandidateRow | None) -> str:
    """``0.800 [0.584, 0.919] on 20 validation rows``, or the bare score when the record
    has no per-row scores."""
    if row is None or row.score is None:
        return "—"
    text = _fmt_score(row.score)
    if not row.scores:
        return text
    interval = score_interval(row.scores)
    if interval is not None:
        text += f" [{interval[0]:.3f}, {interval[1]:.3f}]"
    where = _SPLITS.get(row.split or "", f"{row.split} rows" if row.split else "rows")
    return f"{text} on {len(row.scores)} {where}"


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


def plot_data(rows: Sequence[CandidateRow], *, width: int = 760, height: int = 300) -> dict[str, Any] | None:
    """The score chart's geometry: one point per scored candidate and a step line of the
    best score so far; None when fewer than two candidates have a score (nothing to chart)."""
    scored = [(r, r.score) for r in rows if r.score is not None]
    if len(scored) < 2:
        return None
    left, right, top, bottom = 52, 18, 16, 40
    pw, ph = width - left - right, height - top - bottom
    xs = [r.index for r in rows]
    x_lo, x_hi = min(xs), max(max(xs), min(xs) + 1)
    values = [score for _, score in scored]
    y_lo, y_hi = min(0.0, min(values)), max(1.0, max(values))

    def px(x: float) -> float:
        return round(left + (x - x_lo) / (x_hi - x_lo) * pw, 1)

    def py(y: float) -> float:
        return round(top + (1 - (y - y_lo) / (y_hi - y_lo)) * ph, 1)

    line: list[str] = []
    best: float | None = None
    for r, score in scored:
        if best is not None:
            line.append(f"{px(r.index)},{py(best)}")
        best = score if best is None or score > best else best
        line.append(f"{px(r.index)},{py(best)}")
    top_row = _best(rows)
    return {
        "width": width, "height": height, "left": left, "top": top, "pw": pw, "ph": ph,
        "y_ticks": [(py(t), f"{t:g}") for t in _nice_ticks(y_lo, y_hi)],
        "x_ticks": [(px(t), int(t)) for t in _nice_ticks(x_lo, x_hi, 10) if float(t).is_integer()],
        "line": " ".join(line),
        "points": [
            {
                "index": r.index, "x": px(r.index), "y": py(score), "top": r is top_row,
                "tip": f"candidate {r.index}: {score_text(r)}" + (f" ({r.note})" if r.note else ""),
            }
            for r, score in scored
        ],
    }


def _first_line(text: str, limit: int = 110) -> str:
    line = (text.strip().splitlines() or [""])[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def table_rows(rows: Sequence[CandidateRow]) -> list[dict[str, Any]]:
    """The candidate table: each cell as (text, sort value, css class)."""
    best = _best(rows)
    out: list[dict[str, Any]] = []
    running: float | None = None
    for r in rows:
        if r.score is not None and (running is None or r.score > running):
            running = r.score
        demos = sum(len(n.demos) for n in r.program.nodes) if r.program else 0
        instr = " | ".join(_first_line(n.instructions, 80) for n in r.program.nodes) if r.program else ""
        interval = score_interval(r.scores) if r.scores else None
        cells = [
            (str(r.index), str(r.index), "num"),
            (_fmt_score(r.score), "" if r.score is None else f"{r.score}", "num"),
            ("" if interval is None else f"{interval[0]:.3f}–{interval[1]:.3f}", "" if interval is None else f"{interval[0]}", "num"),
            (str(len(r.scores)) if r.scores else "", str(len(r.scores)), "num"),
            (r.split or "", r.split or "", ""),
            (_fmt_score(running), "" if running is None else f"{running}", "num"),
            (r.note, r.note, ""),
            (str(r.calls), str(r.calls), "num"),
            (str(r.tokens), str(r.tokens), "num"),
            (f"{r.cost:.4f}", f"{r.cost}", "num"),
            (str(demos), str(demos), "num"),
            (instr, instr, "instr"),
        ]
        out.append({"index": r.index, "best": r is best, "cells": cells})
    return out


TABLE_HEAD = [
    "#", "score", "95% interval", "rows", "split", "best so far", "note", "calls", "tokens",
    "cost ($)", "demos", "instructions",
]


def graph_data(program: ir.Program) -> dict[str, Any] | None:
    """The node graph's geometry: boxes in layers (left to right), a line per data edge."""
    layers = graph_layers(program)
    if not layers:
        return None
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
    edges = []
    for edge in program.edges:
        if edge.src not in pos or edge.dst not in pos:
            continue
        (sx, sy), (dx, dy) = pos[edge.src], pos[edge.dst]
        edges.append({
            "x1": round(sx + box_w, 1), "y1": round(sy + box_h / 2, 1), "x2": round(dx, 1),
            "y2": round(dy + box_h / 2, 1), "tip": f"{edge.src} → {edge.dst}.{edge.field}",
        })
    boxes = []
    for node in program.nodes:
        x, y = pos[node.id]
        boxes.append({
            "x": round(x, 1), "y": round(y, 1), "cx": round(x + box_w / 2, 1),
            "label": node.id if len(node.id) <= 22 else node.id[:21] + "…",
            "sub": f"{node.strategy} · {node.demos_text}",
        })
    return {"width": width, "height": round(height), "box_w": box_w, "box_h": box_h, "edges": edges, "boxes": boxes}


def placeholder_inputs(node: ir.Node) -> dict[str, Any]:
    """Each input as ``{name}`` (an image input as an image at example.com/name, a history
    input as one user turn saying ``{name}``)."""
    from .media import Image, media_kind

    out: dict[str, Any] = {}
    for f in node.signature.inputs:
        kind = media_kind(f.schema)
        text = "{" + f.name + "}"
        if kind == "history":
            out[f.name] = [{"role": "user", "content": text}]
        elif kind is not None:
            image = Image(url=f"https://example.com/{f.name}")
            out[f.name] = image if kind == "image" else [image]
        else:
            out[f.name] = text
    return out


def node_prompt(node: ir.Node) -> list[dict[str, Any]]:
    """The node's messages with each input shown as ``{name}``."""
    from .render import render_messages

    return render_messages(node, placeholder_inputs(node))


def _prompt_text(node: ir.Node) -> list[str]:
    from .render import content_text

    try:
        messages = node_prompt(node)
    except Exception as exc:  # noqa: BLE001 - a template that cannot render is reported, not fatal
        return [f"(cannot render: {type(exc).__name__}: {exc})"]
    lines: list[str] = []
    for m in messages:
        lines.append(f"--- {m['role']} ---")
        lines.extend(content_text(m["content"]).splitlines())
    return lines


def _pool(node: ir.Node, limit: int = 200) -> dict[str, Any] | None:
    """A per-input demo pool as the report shows it (each input gets the ``k`` nearest)."""
    select = node.select
    if select is None or not select.per_input:
        return None
    rows = [
        {"source": d.source, "inputs": _first_line(json.dumps(d.inputs, ensure_ascii=False), 300),
         "output": _first_line(json.dumps(d.output, ensure_ascii=False), 200)}
        for d in select.pool[:limit]
    ]
    return {"k": select.k, "size": len(select.pool), "by": select.by, "rows": rows,
            "more": max(0, len(select.pool) - limit)}


def best_program_data(best: CandidateRow | None) -> dict[str, Any] | None:
    from .render import content_text

    if best is None or best.program is None:
        return None
    program = best.program
    nodes: list[dict[str, Any]] = []
    for node in program.nodes:
        entry: dict[str, Any] = {
            "id": node.id, "strategy": node.strategy, "demos": node.demos_text, "demo_count": len(node.demos),
            "error": None, "pool": _pool(node),
            # an agent: its tools (and its demos show every step: action, then observation)
            "tools": ", ".join(t.name for t in node.tools), "max_steps": node.max_steps,
        }
        try:
            messages = [{"role": m["role"], "content": content_text(m["content"])} for m in node_prompt(node)]
        except Exception as exc:  # noqa: BLE001 - a template that cannot render is reported, not fatal
            entry["error"] = f"{type(exc).__name__}: {exc}"
        else:
            entry.update(first=messages[:1], demo_turns=messages[1:-1], last=messages[-1:])
        nodes.append(entry)
    return {
        "row": best, "score": score_text(best), "graph": graph_data(program),
        "text": format_graph(program), "nodes": nodes,
    }


def _wrap_lines(text: str, width: int = 100) -> list[str]:
    import textwrap

    lines: list[str] = []
    for line in text.splitlines() or [""]:
        lines.extend(textwrap.wrap(line, width) or [""])
    return lines


def diff_data(baseline: CandidateRow | None, best: CandidateRow | None) -> dict[str, Any]:
    """Per node: the instructions' side-by-side diff and the full prompt's. The tables are
    difflib's HTML, which escapes the text it shows, so they go into the page as markup."""
    if baseline is None or best is None or baseline.program is None or best.program is None:
        return {"missing": True, "same": None, "nodes": []}
    if baseline is best:
        return {"missing": False, "same": baseline.index, "nodes": []}
    a, b = baseline.program, best.program
    from_desc = f"baseline (candidate {baseline.index})"
    to_desc = f"best (candidate {best.index})"
    differ = difflib.HtmlDiff(tabsize=4, wrapcolumn=70)
    nodes: list[dict[str, Any]] = []
    for node_id in dict.fromkeys([*a.node_ids, *b.node_ids]):
        na, nb = a.node(node_id), b.node(node_id)
        if na is None or nb is None:
            nodes.append({"id": node_id, "only_in": "best" if na is None else "baseline", "instructions": None,
                          "demos": (0, 0), "prompt": None})
            continue
        ia = na.instructions or na.signature.instructions
        ib = nb.instructions or nb.signature.instructions
        pa, pb = _prompt_text(na), _prompt_text(nb)
        nodes.append({
            "id": node_id,
            "only_in": None,
            "instructions": None if ia == ib else Markup(
                differ.make_table(_wrap_lines(ia), _wrap_lines(ib), from_desc, to_desc, context=False)
            ),
            "demos": (len(na.demos), len(nb.demos)),
            "prompt": None if pa == pb else Markup(
                differ.make_table(pa, pb, from_desc, to_desc, context=True, numlines=2)
            ),
        })
    return {"missing": False, "same": None, "nodes": nodes}


_META_KEYS = ["id", "pipeline", "status", "stopped_by", "optimizer", "seed", "created_at", "updated_at", "error"]
_TABLE_KEYS = ("lm", "optimizer_config")


def meta_data(info: Mapping[str, Any]) -> tuple[list[tuple[str, str]], list[tuple[str, list[tuple[str, str]]]]]:
    """The run's facts: (label, text) pairs, and the LM and optimizer settings (and any
    other mapping) as (title, [(key, value)]) tables."""
    keys = [*_META_KEYS, *_TABLE_KEYS]
    keys += [k for k in info if k not in keys and k not in ("best_score", "candidates")]
    labels = {
        "stopped_by": "stopped by budget",
        "error": "reason" if info.get("status") == "stopped" else "error",
        "lm": "LM", "optimizer_config": "optimizer settings",
    }
    facts: list[tuple[str, str]] = []
    tables: list[tuple[str, list[tuple[str, str]]]] = []
    for key in keys:
        value = info.get(key)
        if value in (None, "", {}, []):
            continue
        label = labels.get(key, key.replace("_", " "))
        if isinstance(value, Mapping):
            tables.append((label, [(str(k), _cell(v)) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))]))
        else:
            facts.append((label, _cell(value)))
    return facts, tables


def _cell(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, (int, float, bool)) or value is None:
        return json.dumps(value)
    return json.dumps(value, default=str, sort_keys=True)


def _status(info: Mapping[str, Any]) -> str:
    """``stopped (max_calls)`` for a run a budget stopped; else the status as stored."""
    status = str(info.get("status") or "?")
    stopped_by = info.get("stopped_by")
    return f"{status} ({stopped_by})" if status == "stopped" and stopped_by else status


@functools.cache
def environment() -> jinja2.Environment:
    """The report's Jinja environment: templates shipped in ``desic/templates``, every
    value escaped unless it is ``Markup`` (only difflib's tables are)."""
    return jinja2.Environment(
        loader=jinja2.PackageLoader("desic", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def build_report(run_info: Any, candidates: Iterable[Any]) -> str:
    """One self-contained HTML page (inline CSS, JS and SVG; no network) for a run.

    ``run_info`` is a ``RunInfo`` or a mapping (``id``, ``pipeline``, ``optimizer``,
    ``status``, ...); ``candidates`` the run's history records in evaluation order.
    """
    info = _info(run_info)
    rows = candidate_rows(candidates)
    best = _best(rows)
    last = rows[-1] if rows else None
    status = _status(info) if info.get("status") else None
    facts, tables = meta_data(info)
    scored = [r for r in rows if r.score is not None]
    return environment().get_template("report.html.j2").render(
        run_id=str(info.get("id") or info.get("run_id") or "run"),
        subtitle=" · ".join(str(x) for x in (info.get("pipeline"), info.get("optimizer"), status) if x),
        cards=[
            (_fmt_score(best.score if best else None), "best score"),
            (str(len(rows)), "candidates"),
            (str(last.calls if last else 0), "LM calls"),
            (str(last.tokens if last else 0), "tokens"),
            (f"${last.cost:.4f}" if last else "$0", "cost"),
            (_status(info), "status"),
        ],
        best_score=score_text(best) if best is not None and best.scores else None,
        facts=facts,
        tables=tables,
        plot=plot_data(rows),
        only=scored[0] if len(scored) == 1 else None,
        only_score=score_text(scored[0]) if len(scored) == 1 else None,
        head=TABLE_HEAD,
        table=table_rows(rows),
        # nothing scored (labeled, knn without a valset): the program the run ended with
        best=best_program_data(best or next((r for r in reversed(rows) if r.program is not None), None)),
        diff=diff_data(rows[0] if rows else None, best),
        version=__version__,
        stamp=_dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    )
