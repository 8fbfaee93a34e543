"""``desic compile``, ``eval``, ``run`` and ``prompts``."""

from __future__ import annotations

import json
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from .._text import plural
from ..errors import ConfigError, DataError
from ._common import (
    EXIT_ERROR,
    EXIT_INTERRUPTED,
    accepts,
    cause,
    check_out,
    check_storage,
    echo_err,
    handle_errors,
    hinted,
    import_object,
    input_example,
    json_example,
    lm_context,
    load_target,
    parse_budget,
    parse_json_object,
    parse_options,
    read_dataset,
    resolve_metric,
    resolve_optimizer,
    shown_url,
)
from ._lm import BaseUrlOpt, CacheOpt, LmOpt, RetriesOpt, RpsOpt, build_lm, lm_settings

if TYPE_CHECKING:
    from .._compiled import CompiledPipeline

# --- shared option types -------------------------------------------------------------------------

MetricOpt = Annotated[
    str,
    typer.Option("--metric", "-m", help="a metric of desic.metrics (exact_match, ...) or MODULE:FUNCTION"),
]
PipelineOpt = Annotated[
    str | None,
    typer.Option("--pipeline", "-p", help="MODULE:PIPELINE to bind a multi-node artifact to (checks it for drift)"),
]
StorageOpt = Annotated[
    str | None,
    typer.Option("--storage", "-s", help="store URL, e.g. sqlite://.desic/desic.db (default: $DESIC_STORAGE)"),
]
ConcurrencyOpt = Annotated[int, typer.Option("--concurrency", "-c", min=1, help="examples run at once")]
ExecutorOpt = Annotated[
    str | None,
    typer.Option("--executor", help="where rows run: local, ray, ray:auto or ray://HOST:10001 (default: $DESIC_EXECUTOR, else local)"),
]
ArtifactArg = Annotated[
    str,
    typer.Argument(
        metavar="ARTIFACT",
        help="artifact file, store URL (sqlite://.desic/desic.db#triage@latest), NAME@VERSION in the store, or MODULE:PIPELINE",
    ),
]


def _jsonable(value: Any) -> Any:
    from .._json import to_jsonable

    return to_jsonable(value)


def _dumps(value: Any) -> str:
    return json.dumps(_jsonable(value), ensure_ascii=False, default=str)


# --- compile -----------------------------------------------------------------------------------


def _budget_value(limits: dict[str, float]) -> Any:
    """``desic.budget.Budget`` from ``--budget`` limits (``calls=100,dollars=1.5``)."""
    from ..budget import Budget

    return Budget(
        max_calls=int(limits["calls"]) if "calls" in limits else None,
        max_tokens=int(limits["tokens"]) if "tokens" in limits else None,
        max_dollars=limits.get("dollars"),
        max_seconds=limits.get("seconds"),
    )


def _resume_hint(store_url: str | None, pipeline_ref: str) -> None:
    """After Ctrl-C/SIGTERM: the full command that resumes the interrupted run."""
    from ..storage import configured_url
    from ..storage import open as open_store

    url = store_url or configured_url()
    if not url:
        return
    try:
        store = open_store(url)
        try:
            runs = [r for r in store.list_runs() if r.pipeline == pipeline_ref and r.status != "finished"]
        finally:
            store.close()
    except Exception:  # noqa: BLE001 - the hint is a courtesy; never mask the interruption
        return
    if runs:
        echo_err(f"continue it with: {resume_command(sys.argv[1:], url, runs[-1].id)}")


def resume_command(argv: list[str], store_url: str, run_id: str) -> str:
    """``desic <argv>`` with ``--resume run_id`` (replacing any) and ``--storage`` when the
    store came from the environment: a command that works when pasted."""
    args: list[str] = []
    skip = False
    has_storage = False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume="):
            continue
        if arg == "--storage" or arg.startswith("--storage="):
            has_storage = True
        args.append(arg)
    if not has_storage:
        args += ["--storage", shown_url(store_url)]
    return shlex.join(["desic", *args, "--resume", run_id])


@handle_errors
def compile_cmd(
    target: Annotated[str, typer.Argument(metavar="MODULE:PIPELINE", help="the pipeline (or signature) to compile")],
    trainset: Annotated[Path, typer.Option("--trainset", "-t", help="training rows: .jsonl, .json or .csv")],
    out: Annotated[str, typer.Option("--out", "-o", help="where to save: a file, or a store URL with a name (sqlite://.desic/desic.db#triage)")],
    metric: MetricOpt = "exact_match",
    optimizer: Annotated[str, typer.Option("--optimizer", help="optimizer name (labeled, bootstrap, mipro, ...)")] = "bootstrap",
    valset: Annotated[Path | None, typer.Option("--valset", help="validation rows, scored after optimizing")] = None,
    lm: LmOpt = None,
    seed: Annotated[int, typer.Option("--seed", help="seed of the optimizer's random choices")] = 0,
    resume: Annotated[str | None, typer.Option("--resume", help="id of a stored run to continue (needs its store)")] = None,
    storage: Annotated[str | None, typer.Option("--storage", "-s", help="record the run in this store (default: $DESIC_STORAGE, else not recorded)")] = None,
    budget: Annotated[str | None, typer.Option("--budget", help="limits: calls=100,tokens=50000,dollars=1.5,seconds=600 (any subset)")] = None,
    concurrency: ConcurrencyOpt = 8,
    option: Annotated[list[str] | None, typer.Option("--option", "-O", help="optimizer option KEY=VALUE (JSON values), repeatable")] = None,
    cache: CacheOpt = None,
    retries: RetriesOpt = None,
    rps: RpsOpt = None,
    base_url: BaseUrlOpt = None,
    executor: ExecutorOpt = None,
    baseline: Annotated[bool, typer.Option(
        "--baseline/--no-baseline",
        help="return the pipeline as written when it scores higher than the optimizer's program (two runs of the pipeline per row compared)",
    )] = True,
) -> None:
    """Optimize a pipeline on a trainset and save the compiled artifact."""
    from ..compile import compile as compile_fn
    from ..pipeline import as_pipeline
    from ..sinks import progress

    limits = parse_budget(budget) if budget is not None else None
    opt = resolve_optimizer(optimizer, parse_options(option))  # before anything is imported or run
    obj = import_object(target, what="pipeline")
    with cause(_NOT_A_PIPELINE):
        pipe = as_pipeline(obj)
    check_out(out)
    kwargs: dict[str, Any] = {
        "metric": resolve_metric(metric),
        "optimizer": opt,
        "seed": seed,
        "concurrency": concurrency,
        "baseline": baseline,
        "lm": build_lm(lm_settings(lm, cache=cache, retries=retries, rps=rps, base_url=base_url)),
    }
    train_rows = read_dataset(trainset, option="--trainset", pipe=pipe)
    if valset is not None:
        kwargs["valset"] = read_dataset(valset, option="--valset", pipe=pipe)
    if storage is not None:
        check_storage(storage, create=True)
        kwargs["storage"] = storage
    if resume is not None:
        kwargs["resume"] = resume
    if limits is not None:
        kwargs["budget"] = _budget_value(limits)
    if executor is not None:
        kwargs["executor"] = executor
    try:
        with progress(what="compile", budget=limits), cause(_compile_hint):
            compiled = compile_fn(obj, train_rows, progress=False, **kwargs)
    except KeyboardInterrupt:
        echo_err("interrupted")
        _resume_hint(storage, pipe.ref)
        raise typer.Exit(EXIT_INTERRUPTED) from None
    with cause(f"the compile finished but could not be saved: give another --out (the run is kept in {storage})" if storage else None):
        saved = compiled.save(out)
    where = f"{getattr(saved, 'ref', '')}" if not isinstance(saved, Path) else str(saved)
    if not isinstance(saved, Path):
        where = f"{shown_url(out.split('#', 1)[0])}#{where}"
    meta = compiled.program.meta
    parts = [f"saved {where}"]
    if meta.score is not None:
        parts.append(f"score {meta.score:.3f} on {meta.score_split}")
    history = compiled.history
    if history:
        best = max((c.score for c in history if c.score is not None), default=None)
        parts.append(plural(len(history), "candidate") + (f", best {best:.3f}" if best is not None else ""))
    usage = compiled.usage  # the whole compile's (what its progress line counted)
    parts.append(plural(usage.calls, "LM call") + (f", ${usage.cost:.4f}" if usage.cost else ""))
    if compiled.stopped_by:
        parts.append(f"stopped by the {compiled.stopped_by} budget")
    if meta.run_id:
        parts.append(f"run {meta.run_id}")
    typer.echo(" | ".join(parts))
    if compiled.stopped_by:
        _budget_note(compiled.stopped_by, limits or {}, storage, meta.run_id)
    if storage or kwargs.get("resume"):
        typer.echo(f"report: desic runs report {meta.run_id}" + (f" --storage {shown_url(storage)}" if storage else ""))


def _compile_hint(exc: Exception) -> str | None:
    """A hint for the compile's own refusals the command line can fix; else the class's."""
    if isinstance(exc, ConfigError) and "max_dollars" in str(exc):
        return "drop dollars= from --budget, or use an LM whose price is known (desic.lm(..., prices=...) in Python)"
    return None


_NOT_A_PIPELINE = "name a @desic.pipeline or a @desic.signature after the ':' (or a compiled pipeline)"


def _budget_note(stopped_by: str, limits: dict[str, float], storage: str | None, run_id: str | None) -> None:
    """On stderr: which budget stopped the compile, what was saved, how to go on."""
    from ..storage import configured_url

    key = stopped_by.removeprefix("max_")  # the --budget key: calls, tokens, dollars, seconds
    limit = limits.get(key)
    given = f" (--budget {key}={limit:g})" if limit is not None else ""
    echo_err(
        f"note: the {stopped_by} budget ran out{given}; the search stopped early and the best "
        "program found so far was saved"
    )
    url = storage or configured_url()
    if url and run_id:
        echo_err(f"continue it with a larger budget: desic compile ... --storage {shown_url(url)} --resume {run_id} --budget ...")


# --- eval --------------------------------------------------------------------------------------


@handle_errors
def eval_cmd(
    target: ArtifactArg,
    devset: Annotated[Path, typer.Option("--devset", "-d", help="rows to score: .jsonl, .json or .csv")],
    metric: MetricOpt = "exact_match",
    lm: LmOpt = None,
    pipeline: PipelineOpt = None,
    storage: StorageOpt = None,
    concurrency: ConcurrencyOpt = 8,
    executor: ExecutorOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="print the full report (every example) as JSON")] = False,
    show_errors: Annotated[int, typer.Option("--show-errors", help="how many failed examples to list")] = 5,
    cache: CacheOpt = None,
    retries: RetriesOpt = None,
    rps: RpsOpt = None,
    base_url: BaseUrlOpt = None,
) -> None:
    """Score an artifact (or an uncompiled MODULE:PIPELINE) on a devset."""
    from ..sinks import progress

    if storage is not None:
        check_storage(storage)
    compiled = load_target(target, pipeline=pipeline, storage=storage)
    metric_fn = resolve_metric(metric)
    rows = read_dataset(devset, option="--devset", pipe=compiled.pipeline)
    model = build_lm(lm_settings(lm, cache=cache, retries=retries, rps=rps, base_url=base_url))
    from ..evaluate import evaluate

    options: dict[str, Any] = {"concurrency": concurrency}
    if executor is not None:
        options["executor"] = executor
    if accepts(evaluate, "progress"):
        options["progress"] = False  # the progress line below draws it from the events
    with lm_context(model), progress(what="evaluate", total=len(rows)):
        report = evaluate(compiled, rows, metric_fn, **options)
    if as_json:
        u = report.usage
        typer.echo(
            _dumps(
                {
                    "score": report.score,
                    "examples": len(report.results),
                    "errors": report.errors,
                    "usage": {"calls": u.calls, "prompt_tokens": u.prompt_tokens, "completion_tokens": u.completion_tokens, "cost": u.cost},
                    "wall_time": report.wall_time,
                    "results": [
                        {
                            "index": r.index,
                            "inputs": r.inputs,
                            "expected": r.expected,
                            "output": r.output,
                            "score": r.score,
                            "feedback": r.feedback,
                            "error": r.error,
                            "latency": r.latency,
                        }
                        for r in report.results
                    ],
                }
            )
        )
        return
    typer.echo(str(report))
    failed = [r for r in report.results if r.error is not None]
    for r in failed[:show_errors]:
        echo_err(f"  row {r.index}: {r.error}")
    if len(failed) > show_errors:
        echo_err(f"  ... and {len(failed) - show_errors} more (--json shows every row)")


# --- run ---------------------------------------------------------------------------------------


def _read_jsonl(source: str, names: Sequence[str]) -> list[dict[str, Any]]:
    if source == "-":
        text, name = sys.stdin.read(), "<stdin>"
    else:
        from ..data import read_text

        path = Path(source)
        if not path.is_file():
            raise hinted(
                DataError(f"--jsonl file not found: {path}"),
                f"check the --jsonl path (relative to {Path.cwd()}), or give '-' to read the lines from stdin",
            )
        text, name = read_text(path), str(path)
    fix = f"each line of {name} must be one JSON object of the inputs, e.g. {json_example(names)}"
    rows: list[dict[str, Any]] = []
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise hinted(DataError(f"{name}:{lineno}: invalid JSON: {exc.msg}", row=len(rows)), fix) from None
        if not isinstance(row, dict):
            raise hinted(DataError(f"{name}:{lineno}: expected a JSON object, got {type(row).__name__}", row=len(rows)), fix)
        rows.append(row)
    return rows


@handle_errors
def run_cmd(
    artifact: ArtifactArg,
    input: Annotated[str | None, typer.Option("--input", "-i", help="the inputs as a JSON object, e.g. '{\"ticket\": \"...\"}'")] = None,
    jsonl: Annotated[str | None, typer.Option("--jsonl", help="a JSONL file of inputs ('-' for stdin); one JSON output line each")] = None,
    lm: LmOpt = None,
    pipeline: PipelineOpt = None,
    storage: StorageOpt = None,
    concurrency: ConcurrencyOpt = 4,
    cache: CacheOpt = None,
    retries: RetriesOpt = None,
    rps: RpsOpt = None,
    base_url: BaseUrlOpt = None,
    stream: Annotated[bool, typer.Option("--stream", help="with --input: print the last node's output as it is written, one {\"partial\": ...} line each, then the output")] = False,
) -> None:
    """Run an artifact on inputs and print the output as JSON (one line per input)."""
    if stream and jsonl is not None:
        raise typer.BadParameter("--stream streams one run: give --input JSON, not --jsonl", param_hint="--stream")
    if (input is None) == (jsonl is None):
        raise typer.BadParameter("give exactly one of --input JSON or --jsonl FILE", param_hint="--input / --jsonl")
    if storage is not None:
        check_storage(storage)
    compiled = load_target(artifact, pipeline=pipeline, storage=storage)
    names = compiled.pipeline.input_names
    if input is not None:
        data = parse_json_object(input, option="--input", inputs=names)
        model = build_lm(lm_settings(lm, cache=cache, retries=retries, rps=rps, base_url=base_url))
        _run_one(compiled, data, model, stream=stream)
    elif jsonl is not None:
        rows = _read_jsonl(jsonl, names)
        model = build_lm(lm_settings(lm, cache=cache, retries=retries, rps=rps, base_url=base_url))
        _run_many(compiled, rows, model, concurrency, source=jsonl)


def _run_one(compiled: CompiledPipeline[..., Any], data: dict[str, Any], lm: Any, *, stream: bool = False) -> None:
    from ..runtime import RunState

    pipe = compiled.pipeline
    with cause(f"--input needs every input of {pipe.name}: {input_example('--input', pipe.input_names)}"):
        inputs = pipe.validate_inputs(data)
    extra = sorted(set(data) - set(pipe.input_names))
    if extra:
        echo_err(f"warning: ignoring keys that are not inputs of {pipe.name}: {', '.join(extra)}")
    if stream:
        with lm_context(lm):
            for partial in compiled.stream(**inputs):
                typer.echo(_dumps(partial.value) if partial.done else _dumps({"partial": partial.data}))
        return
    with lm_context(lm):
        result = pipe.run(inputs, RunState(program=compiled.program))
    typer.echo(_dumps(result))


def _run_many(compiled: CompiledPipeline[..., Any], rows: list[dict[str, Any]], lm: Any, concurrency: int, *, source: str) -> None:
    from .._aio import run_sync
    from ..data import to_examples
    from ..engine import run_all
    from ..runtime import current_lm

    pipe = compiled.pipeline
    with cause(f"fix the named line of {source}: each line is one JSON object of the inputs ({', '.join(pipe.input_names)})"):
        examples = to_examples(pipe, rows, what=source)  # every row is checked before any LM call
    with lm_context(lm):
        outcomes = run_sync(run_all(pipe, examples, program=compiled.program, lm=current_lm(), concurrency=concurrency))
    failed = 0
    for o in outcomes:
        if o.error is None:
            typer.echo(_dumps(o.output))
        else:
            failed += 1
            typer.echo("null")
            echo_err(f"row {o.index}: {o.error}")
    if failed:
        echo_err(f"error: {failed} of {plural(len(outcomes), 'row')} failed (their lines are null)")
        raise typer.Exit(EXIT_ERROR)


# --- prompts -----------------------------------------------------------------------------------


@handle_errors
def prompts_cmd(
    artifact: ArtifactArg,
    input: Annotated[str | None, typer.Option("--input", "-i", help="render for these inputs (JSON object); default: {name} placeholders")] = None,
    lm: Annotated[str | None, typer.Option("--lm", help="run an uncompiled multi-node pipeline on this LM to render its later nodes")] = None,
    pipeline: PipelineOpt = None,
    storage: StorageOpt = None,
    node: Annotated[str | None, typer.Option("--node", help="only this node's prompt")] = None,
) -> None:
    """Print the node graph and the exact messages each node sends (no LM needed)."""
    from ..report import format_graph, node_prompt
    from ..testing.snapshots import format_prompts

    if storage is not None:
        check_storage(storage)
    compiled = load_target(artifact, pipeline=pipeline, storage=storage)
    program = compiled.program
    pipe = compiled.pipeline
    inputs: dict[str, Any] | None = None
    if input is not None:
        data = parse_json_object(input, option="--input", inputs=pipe.input_names)
        with cause(f"--input needs every input of {pipe.name}: {input_example('--input', pipe.input_names)}"):
            inputs = pipe.validate_inputs(pipe.bind((), data))
    single = _single_node(compiled)
    prompts: dict[str, list[dict[str, Any]]]
    if single is not None:  # one node: rendered directly, whatever the inputs, never an LM
        from ..render import render_messages

        program = program if program.nodes else program.replace(nodes=(single,))
        prompts = {single.id: render_messages(single, inputs) if inputs is not None else node_prompt(single)}
    elif inputs is not None:
        with lm_context(build_lm(lm_settings(lm), required=False) if lm else None):
            prompts = compiled.prompts(**inputs)
    elif program.nodes:
        prompts = {n.id: node_prompt(n) for n in program.nodes}
    else:
        raise hinted(
            ConfigError(f"{artifact} is not compiled, so its nodes are only known by running it"),
            f"pass {input_example('--input', pipe.input_names)} to render its first node "
            "(add --lm SPEC to render the nodes after it), or compile it first",
        )
    if node is not None:
        if node not in prompts:
            raise hinted(
                ConfigError(f"no node {node!r} was rendered"),
                f"--node takes one of {', '.join(prompts) or 'none'}",
            )
        prompts = {node: prompts[node]}
    if program is not compiled.program:  # a bare signature's default node, shown like a compiled one
        from .._compiled import CompiledPipeline as Compiled

        compiled = Compiled(pipe, program)
    typer.echo(compiled.inspect())
    if program.nodes:
        typer.echo("")
        typer.echo(format_graph(program))
    typer.echo("")
    typer.echo(format_prompts(prompts), nl=False)
    missing = [n for n in program.node_ids if n not in prompts and node is None]
    if missing and input is not None:
        echo_err(f"note: {', '.join(missing)} not rendered: later nodes need an LM to produce their inputs (pass --lm)")


def _single_node(compiled: CompiledPipeline[..., Any]) -> Any:
    """The one node of a bare signature (compiled or not), else None."""
    from ..pipeline import SignaturePipeline
    from ..runtime import default_node

    pipe = compiled.pipeline
    if not isinstance(pipe, SignaturePipeline):
        return None
    if len(compiled.program.nodes) == 1:
        return compiled.program.nodes[0]
    if compiled.program.nodes:
        return None
    sig = pipe.signature
    if sig is None:
        return None
    return default_node(sig, getattr(sig, "node_name", None) or sig.spec.name)
