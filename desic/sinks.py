"""Event sinks beyond the basics of :mod:`desic.events`: terminal progress and OpenTelemetry.

- ``ProgressSink`` / ``progress()``: a rich progress line for a compile or an evaluation
  (candidates or examples done, best score so far, LM calls, tokens, cost, ETA). It draws
  only on a terminal; ``progress()`` is silent (subscribes nothing) when output is not a TTY.
- ``OTelSink``: one OpenTelemetry span per LM call, node call and evaluated example, nested
  under a span per run; other events become span events on the run's span. desic turns it
  on by itself when ``opentelemetry-api`` is installed (``DESIC_OTEL=0`` turns it off).
- ``JsonlSink`` appends each event to a JSON-lines trace (``read_trace`` reads it back),
  ``LoggingSink`` logs each one on the ``desic`` logger;
- ``subscribe_from_env``: ``DESIC_TRACE=path`` and OpenTelemetry, set up on desic's first
  event (registered in ``desic._hooks`` by the package itself).

Any callable taking an ``Event`` is a sink: ``desic.events.subscribe(my_sink)``.

rich and opentelemetry are imported only when a sink of theirs is built.
"""

from __future__ import annotations

import json
import logging
import math
import os
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Self

from ._redact import get_logger
from ._text import plural
from .events import Event, subscribe

if TYPE_CHECKING:
    from rich.console import Console

    from .budget import Budget

__all__ = [
    "JsonlSink",
    "LoggingSink",
    "OTelSink",
    "ProgressSink",
    "format_eta",
    "progress",
    "progress_display",
    "read_trace",
    "subscribe_from_env",
    "want_progress",
]

log = get_logger("desic")

# --- files and logs ----------------------------------------------------------------------------

class JsonlSink:
    """Appends each event as one JSON line (thread-safe, flushed per line)."""

    def __init__(self, path: str | os.PathLike[str]):
        self.path = os.fspath(path)
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        line = event.to_json() + "\n"
        with self._lock, open(self.path, "a", encoding="utf-8") as fh:
            fh.write(line)


def read_trace(path: str | os.PathLike[str]) -> list[Event]:
    """The events of a JSONL trace file (as written by ``JsonlSink`` / ``DESIC_TRACE``)."""
    out: list[Event] = []
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            data = json.loads(line)
            kind = data.pop("kind")
            when = data.pop("time")
            out.append(Event(kind, data, when))
    return out


class LoggingSink:
    """Logs each event on the ``desic`` logger with its fields in ``extra``."""

    def __init__(self, level: int = logging.INFO, logger: logging.Logger | None = None):
        self.level = level
        self.logger = logger or log

    def __call__(self, event: Event) -> None:
        if self.logger.isEnabledFor(self.level):
            fields = " ".join(f"{k}={v}" for k, v in event.data.items())
            extra = {"desic_event": event.kind, **{f"desic_{k}": v for k, v in event.data.items()}}
            self.logger.log(self.level, "%s %s", event.kind, fields, extra=extra)


def subscribe_from_env() -> None:
    """Subscribe the sinks the environment asks for: a ``JsonlSink`` at ``$DESIC_TRACE``,
    and OpenTelemetry spans when ``opentelemetry-api`` is installed (``DESIC_OTEL=0`` turns
    them off). Runs once per process, on desic's first event."""
    path = os.environ.get("DESIC_TRACE")
    if path:
        subscribe(JsonlSink(path))
    if _otel_wanted():
        try:
            sink = OTelSink()
        except Exception:  # a broken install never breaks the run
            log.warning("desic: opentelemetry is installed but cannot be used; no spans", exc_info=True)
        else:
            subscribe(sink)


def _otel_wanted() -> bool:
    if os.environ.get("DESIC_OTEL", "").strip().lower() in ("0", "false", "no", "off"):
        return False
    import importlib.util

    try:
        return all(importlib.util.find_spec(m) is not None for m in ("opentelemetry", "opentelemetry.trace"))
    except (ImportError, ValueError):  # a broken or blocked install counts as absent
        return False


#: budget keys the progress ETA understands, and the usage counter each one limits
_BUDGET_USAGE = {"calls": "calls", "tokens": "tokens", "dollars": "cost", "seconds": "seconds"}


def format_eta(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds) or seconds < 0:
        return "-:--"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _int(value: Any, default: int) -> int:
    """An event's count field, ``default`` when absent (events of older emitters)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else default


def _tokens_text(n: int) -> str:
    return f"{n / 1000:.1f}k" if n >= 1000 else str(n)


class ProgressSink:
    """A live progress line for one compile (``what="compile"``) or evaluation.

    A compile counts scored candidates (``candidate`` events), an evaluation finished
    examples (``example`` events); both count LM calls, tokens and cost (``lm_call``).
    ``total`` (or a ``total`` field of ``run_start``) gives the bar its end; without one
    the ETA comes from the most used ``budget`` (``{"calls": 100, "dollars": 1.5, ...}``).
    """

    def __init__(
        self,
        console: Console | None = None,
        *,
        what: str = "compile",
        total: int | None = None,
        budget: Mapping[str, float] | None = None,
        transient: bool = False,
    ):
        from rich.console import Console
        from rich.progress import BarColumn, Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        self.console = console or Console(stderr=True)
        self.what = what
        self.total = total
        self.budget = {k: float(v) for k, v in (budget or {}).items() if k in _BUDGET_USAGE}
        self.started = time.monotonic()
        self.done = 0
        self.best: float | None = None
        self.score_sum = 0.0
        self.calls = 0
        self.tokens = 0
        self.cost = 0.0
        self.round: int | None = None
        self.examples = 0
        self.errors = 0
        self.cached = 0
        self.loading: str | None = None  # the model being loaded, until it is
        self.stopped_by: str | None = None
        self.load_seconds = 0.0  # spent loading models (lm_load events), not working
        self._lock = threading.Lock()
        self._progress = Progress(
            SpinnerColumn(),
            TextColumn("[bold]{task.description}"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[count]}"),
            TextColumn("{task.fields[status]}"),
            TextColumn("ETA {task.fields[eta]}"),
            TimeElapsedColumn(),
            console=self.console,
            transient=transient,
            auto_refresh=self.console.is_terminal and not self.console.is_dumb_terminal,
        )
        self._task = self._progress.add_task(what, total=total, count="", status="", eta="-:--")
        self._update()

    # -- lifecycle --------------------------------------------------------------------------
    def start(self) -> None:
        self._progress.start()

    def stop(self) -> None:
        self._update()
        self._progress.refresh()
        self._progress.stop()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- events -----------------------------------------------------------------------------
    def __call__(self, event: Event) -> None:
        d = event.data
        with self._lock:
            kind = event.kind
            if kind == "lm_call":
                # the requests the server saw, as Usage.calls counts them (and so the
                # final summary): re-asks included, a cache hit none
                self.calls += _int(d.get("calls"), 1)
                self.cached += bool(d.get("cached"))
                self.tokens += int(d.get("prompt_tokens") or 0) + int(d.get("completion_tokens") or 0)
                self.cost += float(d.get("cost") or 0.0)
            elif kind == "node_call":
                if not d.get("error"):
                    return
                self.calls += _int(d.get("calls"), 0)  # a failed call's requests count too
            elif kind == "lm_load":
                self.loading = None if d.get("done") else str(d.get("model") or d.get("lm") or "model")
                if d.get("done"):
                    self.load_seconds += float(d.get("seconds") or 0.0)
            elif kind == "example":
                if (d.get("what") == "compile") != (self.what == "compile"):
                    return
                self.examples += 1
                if d.get("error"):
                    self.errors += 1
                if self.what != "compile":
                    self.done += 1
                    self.score_sum += float(d.get("score") or 0.0)
            elif kind == "candidate" and self.what == "compile":
                self.done += 1
                score = d.get("score")
                if isinstance(score, (int, float)) and (self.best is None or score > self.best):
                    self.best = float(score)
            elif kind == "iteration":
                self.round = d.get("round", self.round)
                best = d.get("best")
                if isinstance(best, (int, float)) and (self.best is None or best > self.best):
                    self.best = float(best)
            elif kind == "run_start":
                if d.get("what", self.what) != self.what:
                    return  # e.g. the evaluations inside a compile
                total = d.get("total", d.get("examples"))
                if isinstance(total, int) and total > 0 and self.total is None:
                    self.total = total
                    self._progress.update(self._task, total=total)
            elif kind == "budget_stop":
                self.stopped_by = str(d.get("budget") or "budget")
            else:
                return
            self._update()

    # -- rendering --------------------------------------------------------------------------
    def eta(self) -> float | None:
        """Seconds left, estimated from the work done so far: from ``total`` when known,
        else from the rate the most used budget is being spent at (time spent loading a
        model left out), else unknown."""
        elapsed = time.monotonic() - self.started
        if self.total and self.done:
            return elapsed / self.done * max(0, self.total - self.done)
        if self.loading is not None:
            return None
        used = {"calls": self.calls, "tokens": self.tokens, "cost": self.cost, "seconds": elapsed}
        fractions = {k: used[_BUDGET_USAGE[k]] / limit for k, limit in self.budget.items() if limit > 0}
        if not fractions:
            return None
        key = max(fractions, key=lambda k: fractions[k])
        fraction = fractions[key]
        if fraction >= 1:
            return 0.0
        if key == "seconds":
            return max(0.0, self.budget["seconds"] - elapsed)
        working = elapsed - self.load_seconds  # loading a model is no work: it is not repeated
        if fraction <= 0 or working <= 0:
            return None  # nothing spent yet: no rate to estimate from
        return working * (1 - fraction) / fraction

    def status(self) -> str:
        parts: list[str] = []
        if self.what == "compile":
            if self.best is not None:
                parts.append(f"best {self.best:.3f}")
            if self.round is not None:
                parts.append(f"round {self.round}")
        elif self.done:
            parts.append(f"score {self.score_sum / self.done:.3f}")
        if self.loading is not None:
            parts.append(f"loading model {self.loading}")
        if self.what == "compile" and self.examples:
            parts.append(plural(self.examples, "example"))
        if self.errors:
            parts.append(plural(self.errors, "error"))
        parts.append(plural(self.calls, "call"))
        if self.cached:
            parts.append(f"{self.cached} cached")
        if self.tokens:
            parts.append(f"{_tokens_text(self.tokens)} tok")
        if self.cost:
            parts.append(f"${self.cost:.4f}")
        if self.stopped_by:
            parts.append(f"stopped by {self.stopped_by} budget")
        return " · ".join(parts)

    def _update(self) -> None:
        noun = "candidate" if self.what == "compile" else "example"
        ending = "" if (self.total or self.done) == 1 else "s"
        count = f"{self.done}/{self.total} {noun}{ending}" if self.total else f"{self.done} {noun}{ending}"
        if self.loading is not None and not self.done:
            count = "loading model"
        self._progress.update(
            self._task,
            completed=self.done,
            count=count,
            status=self.status(),
            eta=format_eta(self.eta()),
        )


@contextmanager
def progress(
    console: Console | None = None,
    *,
    what: str = "compile",
    total: int | None = None,
    budget: Mapping[str, float] | None = None,
) -> Iterator[ProgressSink | None]:
    """Show a progress line while the block runs; silent (yields ``None``) off a terminal.

    >>> with desic.sinks.progress(what="compile"):
    ...     compiled = desic.compile(pipe, trainset, metric=m)
    """
    if console is None:
        from rich.console import Console

        console = Console(stderr=True)
    if not console.is_terminal:
        yield None
        return
    sink = ProgressSink(console, what=what, total=total, budget=budget)
    unsubscribe = subscribe(sink)
    sink.start()
    try:
        yield sink
    finally:
        unsubscribe()
        sink.stop()


def progress_display(
    what: str,
    *,
    total: int | None = None,
    budget: Budget | None = None,
    show: bool | None = None,
) -> ProgressSink | None:
    """The progress line of one compile or evaluation, or None when none is wanted.

    ``show``: True or False, or None for "only when stderr is a terminal". The line's
    ETA without a ``total`` comes from the limits of ``budget``.
    """
    if not want_progress(show):
        return None
    limits: dict[str, float] = {}
    if budget:
        for name, key in (("max_calls", "calls"), ("max_tokens", "tokens"), ("max_dollars", "dollars"), ("max_seconds", "seconds")):
            value = getattr(budget, name)
            if value is not None:
                limits[key] = value
    return ProgressSink(what=what, total=total, budget=limits)


def want_progress(show: bool | None) -> bool:
    """``show``, or for None whether stderr is a terminal."""
    if show is None:
        try:
            return sys.stderr.isatty()
        except (AttributeError, ValueError):
            return False
    return show


# --- OpenTelemetry ------------------------------------------------------------------------------

_SPAN_KINDS = ("lm_call", "node_call", "retrieve", "example")
_RECHECK_SECONDS = 1.0
_UNSEEN = object()  # opentelemetry keeps its global provider elsewhere
_NEVER = object()


def _version() -> str:
    from ._version import __version__

    return __version__


_ATTR_TYPES = (str, bool, int, float)


def _attributes(data: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in data.items():
        if value is None:
            continue
        if key == "prompt_tokens":
            out["gen_ai.usage.input_tokens"] = value
        elif key == "completion_tokens":
            out["gen_ai.usage.output_tokens"] = value
        out[f"desic.{key}"] = value if isinstance(value, _ATTR_TYPES) else str(value)
    return out


class OTelSink:
    """Events as OpenTelemetry spans (needs ``opentelemetry-api``; an SDK to export them).

    - ``run_start`` opens a span ``desic.<what>`` (ended by the matching ``run_end``);
    - ``lm_call``, ``node_call`` and ``example`` become spans ``desic.<kind>`` covering
      their latency, children of the innermost open run span;
    - every other event is added as a span event on that run span (or as an instant span
      when no run is open).

    ``tracer_provider`` defaults to the global one; with no SDK configured the sink does
    nothing at all.
    """

    def __init__(self, tracer_provider: Any = None):
        import opentelemetry.trace

        self._trace = opentelemetry.trace
        self._provider = tracer_provider
        self._tracer: Any = None
        self._runs: list[tuple[str, Any]] = []  # (run_id, span), innermost last
        self._lock = threading.Lock()
        self._seen: Any = _NEVER  # the global provider when last looked at
        self._recheck_at = 0.0

    def _get_tracer(self) -> Any:
        if self._provider is not None:
            if self._tracer is None:
                self._tracer = self._provider.get_tracer("desic", _version())
            return self._tracer
        # Asking OpenTelemetry for the global provider reads os.environ: microseconds on
        # every event. So ask again only when its module-level provider has changed (a
        # ``set_tracer_provider`` call) or, while none is set, once a second (for one that
        # the environment names). Until an SDK provider is set, the sink does nothing.
        trace = self._trace
        seen = getattr(trace, "_TRACER_PROVIDER", _UNSEEN)
        if seen is self._seen and (self._tracer is not None or time.monotonic() < self._recheck_at):
            return self._tracer
        self._seen, self._recheck_at = seen, time.monotonic() + _RECHECK_SECONDS
        provider = trace.get_tracer_provider()
        if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
            self._tracer = None  # no SDK configured: spans would go nowhere
        else:
            self._tracer = provider.get_tracer("desic", _version())
        return self._tracer

    def idle(self) -> bool:
        """True while there is nothing to export to (no SDK provider yet): see ``subscribe``."""
        return self._get_tracer() is None

    def __call__(self, event: Event) -> None:
        tracer = self._get_tracer()
        if tracer is None:
            return
        trace = self._trace
        end_ns = int(event.time * 1e9)
        with self._lock:
            parent = self._runs[-1][1] if self._runs else None
            if event.kind == "run_start":
                what = str(event.data.get("what") or "run")
                ctx = trace.set_span_in_context(parent) if parent is not None else None
                span = tracer.start_span(
                    f"desic.{what}", context=ctx, attributes=_attributes(event.data), start_time=end_ns
                )
                self._runs.append((str(event.data.get("run_id") or ""), span))
                return
            if event.kind == "run_end":
                run_id = str(event.data.get("run_id") or "")
                for i in range(len(self._runs) - 1, -1, -1):
                    if self._runs[i][0] == run_id or not run_id:
                        _, span = self._runs.pop(i)
                        span.set_attributes(_attributes(event.data))
                        if event.data.get("error"):
                            span.set_status(trace.Status(trace.StatusCode.ERROR, str(event.data["error"])))
                        span.end(end_time=end_ns)
                        break
                return
        ctx = trace.set_span_in_context(parent) if parent is not None else None
        if event.kind in _SPAN_KINDS:
            latency = float(event.data.get("latency") or 0.0)
            span = tracer.start_span(
                f"desic.{event.kind}",
                context=ctx,
                attributes=_attributes(event.data),
                start_time=end_ns - int(latency * 1e9),
            )
            if event.data.get("error"):
                span.set_status(trace.Status(trace.StatusCode.ERROR, str(event.data["error"])))
            span.end(end_time=end_ns)
        elif parent is not None:
            parent.add_event(f"desic.{event.kind}", attributes=_attributes(event.data), timestamp=end_ns)
        else:
            span = tracer.start_span(
                f"desic.{event.kind}", attributes=_attributes(event.data), start_time=end_ns
            )
            span.end(end_time=end_ns)
