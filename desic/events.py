"""One event bus for everything desic does; sinks subscribe to it.

Events are small frozen records (``kind``, ``time``, ``data``). Emitting costs almost
nothing when nobody listens. Subscribe for the whole process with ``subscribe(sink)``
(returns an unsubscribe function) or for a block of code (this thread/task only) with
``with listening(sink): ...``. A sink that raises is logged and never breaks the run.
An event's data is scrubbed of credentials (``desic._redact``) before any sink sees it.

Kinds emitted by desic (``data`` keys in brackets):

- ``node_call``   a signature ran [node, latency, error; a failed one: calls, the requests it
  spent; an agent: steps]
- ``tool_call``   an agent called a tool [node, tool, step, latency, error, thought, args, observation]
- ``lm_call``     an LM answered [lm, node, latency, prompt_tokens, completion_tokens, cost, cached,
  calls: the requests the server saw (re-asks included, 0 for a cache hit), as in ``Usage.calls``;
  an agent's step: step; a streamed call (``sig.stream``): streamed, partials, first_partial]
- ``lm_load``     a local model is loading / loaded [lm, model, done, seconds]
- ``lm_retry``    a call is retried [lm, attempt, wait, error]
- ``example``     an evaluation example finished [index, score, error, latency; in a compile
  also what="compile" and replayed (True: read from the run's records, no LM call)]
- ``candidate``   an optimizer scored a candidate program [index, score, note, calls, cost]
- ``iteration``   an optimizer round ended [optimizer, round, best]
- ``checkpoint``  a run's state was stored [run_id]
- ``budget_stop`` a budget stopped a compile [budget, detail]
- ``proposal``    an optimizer proposed new instructions [optimizer, signature, error]
- ``demo_skipped`` trainset rows too large to become demos, warned before a compile [rows, limit, what]
- ``run_start`` / ``run_end``  a compile or evaluation began / ended [run_id, what, total or
  examples, ...; run_end: score/best, errors, stopped_by]

This module is the bus only. The sinks that come with desic live in :mod:`desic.sinks`:
``LoggingSink``, ``JsonlSink`` (``DESIC_TRACE=path`` subscribes one for the whole
process; ``read_trace(path)`` reads it back), a rich progress display and OpenTelemetry
spans (on when ``opentelemetry-api`` is installed, unless ``DESIC_OTEL=0``).
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from . import _hooks, _redact

__all__ = ["Event", "Sink", "active", "emit", "listening", "subscribe"]

log = _redact.get_logger("desic")


@dataclass(frozen=True, slots=True)
class Event:
    kind: str
    data: dict[str, Any] = field(default_factory=dict)
    time: float = field(default_factory=time.time)

    def to_json(self) -> str:
        return json.dumps({"kind": self.kind, "time": self.time, **self.data}, default=str)


Sink = Callable[[Event], None]

_global: tuple[Sink, ...] = ()
# What ``active()`` asks of the global sinks: (whether one always listens, the ``idle``
# methods of the others), rebuilt whenever ``_global`` changes.
_interest: tuple[bool, tuple[Callable[[], bool], ...]] = (False, ())
_global_lock = threading.Lock()
_scoped: contextvars.ContextVar[tuple[Sink, ...]] = contextvars.ContextVar("desic_sinks", default=())
_trace_checked = False
_env_lock = threading.Lock()


def _set_global(sinks: tuple[Sink, ...]) -> None:
    global _global, _interest
    idle = tuple(check for check in (getattr(s, "idle", None) for s in sinks) if callable(check))
    _global = sinks
    _interest = (len(idle) < len(sinks), idle)


def subscribe(sink: Sink) -> Callable[[], None]:
    """Send every event of this process to ``sink``; returns the function that stops it.

    A sink may have an ``idle()`` method: while it returns True the sink drops whatever it
    is sent, and ``active()`` leaves it out (so nobody builds events just for it).
    """
    with _global_lock:
        _set_global((*_global, sink))

    def unsubscribe() -> None:
        with _global_lock:
            _set_global(tuple(s for s in _global if s is not sink))

    return unsubscribe


@contextmanager
def listening(sink: Sink) -> Iterator[Sink]:
    """Send the events of this block (this thread/task and what it starts) to ``sink``."""
    token = _scoped.set((*_scoped.get(), sink))
    try:
        yield sink
    finally:
        _scoped.reset(token)


def _trace_from_env() -> None:
    """Run the hooks that subscribe the sinks the environment asks for, once per process
    (on the first event): :mod:`desic.sinks` registers its own (``DESIC_TRACE``,
    OpenTelemetry) through ``desic._hooks.first_event``."""
    global _trace_checked
    with _env_lock:
        if _trace_checked:
            return
        _trace_checked = True
        for hook in _hooks.first_event:
            try:
                hook()
            except Exception:  # a broken sink setup never breaks the run
                log.warning("desic: an event sink could not be set up", exc_info=True)


def emit(kind: str, **data: Any) -> None:
    if not _trace_checked:
        _trace_from_env()
    sinks = _global + _scoped.get()
    if not sinks:
        return
    # error texts come from third parties and may echo a credential: no sink sees one
    event = Event(kind, _redact.redact(data))
    for sink in sinks:
        try:
            sink(event)
        except Exception:  # a broken sink never breaks the run
            log.exception("desic event sink %r failed on %s", sink, kind)


def active() -> bool:
    """Whether anyone listens (to skip building expensive event data)."""
    if not _trace_checked:
        _trace_from_env()
    always, idle = _interest
    if always or _scoped.get():
        return True
    for check in idle:
        if not check():
            return True
    return False
