"""
Reading the gateway's audit trail: the ``request`` log lines of contract §11.

``straico-gateway trace`` is a thin layer over this module. Everything here is a pure function
over lines of text except :func:`render_image`, the one edge that runs Graphviz's ``dot``.

Rules:

1. **What a line is.** A line whose first non-blank character is ``{`` is meant to be JSON.
   One that does not parse as a JSON object (a truncated or garbled line) is *malformed*.
   A JSON object whose ``event`` is ``request`` is a request line; any other JSON object (an event
   such as ``gateway_listening``) and any line that is not JSON at all (Hypercorn's own lines,
   console logs) is an *other* line: counted, never reported.
2. **What a request line needs.** A non-empty string ``request_id``, an ``outcome`` of §11
   (``done``, ``cancelled``, ``rejected``, ``errored``) and a ``trace`` list of
   ``{"source", "event", "target", "at_ms"}`` (strings, and a non-negative integer). The other keys
   of §11 are read when present and of the right type (``status`` an integer or null, ``model`` a
   string or null, ...); a key of the wrong type makes the line malformed, an absent key is null
   (a rejected request's line has no ``model``). Unknown keys are ignored.
3. **Consistency.** A request line whose trace is not a path of declared transitions is
   *inconsistent*: it must start in the machine's initial state, each transition must be in the
   table compiled from :class:`engine.machine.RequestMachine` and start where the previous one
   ended, ``at_ms`` never goes back, and the trace ends in the final state the outcome names
   (``done`` for done, ``errored`` for errored and cancelled). A rejected request has no machine,
   so its trace must be empty; any other outcome needs a non-empty one.
4. **Problems are reported and skipped.** Malformed and inconsistent lines become
   :class:`Problem` entries (source name, line number, reason) and are left out of every
   selection, timeline, summary and diagram, so each statistic is over valid paths only; the
   summary counts them. Reading never raises on bad input.
5. **Filters.** Each filter is a set of accepted values; an empty set accepts everything.
   Values of one filter are alternatives (any may match), different filters must all match.
   ``error`` matches the line's error kind (§7), ``model`` the model as the client named it.
6. **Time in a state** is the difference of consecutive ``at_ms`` values: the first transition
   spent its ``at_ms`` in the initial state, and each later one the time since the previous
   transition in that transition's source state (the final transition's time is spent in the
   state before it). Final states take no time. Percentiles use the nearest-rank method, so each
   reported value is one that was observed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

import attrs

from engine.machine import RequestMachine
from engine.trace import FINAL_STATES, INITIAL_STATE, TRANSITIONS

__all__ = [
    "IMAGE_FORMATS",
    "OUTCOMES",
    "PERCENTILES",
    "AuditLog",
    "GraphvizError",
    "Problem",
    "RequestRecord",
    "Selection",
    "StateTiming",
    "Summary",
    "Transition",
    "dot_diagram",
    "format_summary",
    "format_timeline",
    "mermaid_diagram",
    "nearest_rank",
    "read_log",
    "render_image",
    "state_times",
    "states_visited",
    "summarise",
    "trace_inconsistency",
    "transition_counts",
]

#: The outcomes of contract §11, in the order the summary lists them.
OUTCOMES: tuple[str, ...] = ("done", "cancelled", "rejected", "errored")
#: The percentiles the summary reports for the time spent in each state.
PERCENTILES: tuple[int, ...] = (50, 90, 99)
#: Image formats :func:`render_image` asks ``dot`` for.
IMAGE_FORMATS: frozenset[str] = frozenset({"svg", "png"})
#: The final state each outcome must end in (rule 3); rejected requests have no machine.
_FINAL_STATE_OF = {"done": "done", "cancelled": "errored", "errored": "errored"}
#: States in the order the machine declares them, for stable listings.
_STATE_ORDER: tuple[str, ...] = tuple(state.id for state in RequestMachine.states)
#: How long ``dot`` may take to draw a six-state diagram before it is considered hung.
DOT_TIMEOUT_SECONDS = 60.0

ProblemKind = Literal["malformed", "inconsistent"]
Edge = tuple[str, str, str]


@attrs.frozen
class Transition:
    """One step of a request's trace, ``at_ms`` milliseconds after the request began."""

    source: str
    event: str
    target: str
    at_ms: int

    def describe(self) -> str:
        return f"{self.source} --{self.event}--> {self.target}"


@attrs.frozen
class RequestRecord:
    """One valid request log line, with where it was read and its text as logged."""

    source: str
    line_number: int
    text: str
    request_id: str
    outcome: str
    trace: tuple[Transition, ...]
    method: str | None = None
    path: str | None = None
    status: int | None = None
    error: str | None = None
    error_code: str | None = None
    model: str | None = None
    mode: str | None = None
    duration_ms: float | None = None


@attrs.frozen
class Problem:
    """A line that was skipped, and why."""

    source: str
    line_number: int
    kind: ProblemKind
    reason: str

    def describe(self) -> str:
        return f"{self.source}:{self.line_number}: {self.kind}: {self.reason}"


@attrs.frozen
class AuditLog:
    """What reading one or more logs found: the valid request lines and the skipped ones."""

    records: tuple[RequestRecord, ...] = ()
    problems: tuple[Problem, ...] = ()
    lines_read: int = 0
    other_lines: int = 0

    def __add__(self, other: AuditLog) -> AuditLog:
        return AuditLog(
            records=self.records + other.records,
            problems=self.problems + other.problems,
            lines_read=self.lines_read + other.lines_read,
            other_lines=self.other_lines + other.other_lines,
        )

    def count(self, kind: ProblemKind) -> int:
        return sum(1 for problem in self.problems if problem.kind == kind)

    def select(self, selection: Selection) -> tuple[RequestRecord, ...]:
        return tuple(record for record in self.records if selection.matches(record))


@attrs.frozen
class Selection:
    """Which request lines to keep (rule 5); empty sets keep everything."""

    outcomes: frozenset[str] = frozenset()
    errors: frozenset[str] = frozenset()
    models: frozenset[str] = frozenset()
    request_ids: frozenset[str] = frozenset()

    def matches(self, record: RequestRecord) -> bool:
        return (
            _accepts(self.outcomes, record.outcome)
            and _accepts(self.errors, record.error)
            and _accepts(self.models, record.model)
            and _accepts(self.request_ids, record.request_id)
        )


def _accepts(accepted: frozenset[str], value: str | None) -> bool:
    return not accepted or value in accepted


# --- reading --------------------------------------------------------------------------------


class _Malformed(Exception):
    """A request line that cannot be read (rule 2); the message is the reason."""


def read_log(lines: Iterable[str], *, source: str = "<stdin>") -> AuditLog:
    """
    Read log lines (with or without their newlines) into valid request lines and problems.

    Args:
        lines: the log, one line per item, as a file object yields them.
        source: the name problems are reported under (a file name, or ``<stdin>``).

    Returns:
        The valid request lines in log order, the problems in log order, and line counts.
    """
    records: list[RequestRecord] = []
    problems: list[Problem] = []
    lines_read = other_lines = 0
    for line_number, line in enumerate(lines, start=1):
        lines_read += 1
        text = line.rstrip("\r\n")
        if not text.lstrip().startswith("{"):
            other_lines += 1
            continue
        try:
            fields = json.loads(text)
        except (ValueError, RecursionError):  # truncated, garbled, or absurdly nested
            problems.append(
                Problem(source, line_number, "malformed", "not valid JSON (a truncated line?)")
            )
            continue
        if fields.get("event") != "request":  # a line starting with "{" is an object
            other_lines += 1
            continue
        try:
            record = _record_from(fields, text=text, source=source, line_number=line_number)
        except _Malformed as exc:
            problems.append(Problem(source, line_number, "malformed", str(exc)))
            continue
        reason = trace_inconsistency(record)
        if reason is not None:
            problems.append(Problem(source, line_number, "inconsistent", reason))
            continue
        records.append(record)
    return AuditLog(tuple(records), tuple(problems), lines_read, other_lines)


def _record_from(
    fields: Mapping[str, Any], *, text: str, source: str, line_number: int
) -> RequestRecord:
    request_id = fields.get("request_id")
    if not isinstance(request_id, str) or not request_id:
        raise _Malformed("request_id is missing or not a non-empty string")
    outcome = fields.get("outcome")
    if outcome not in OUTCOMES:
        raise _Malformed(f"outcome {outcome!r} is not one of {', '.join(OUTCOMES)}")
    duration = fields.get("duration_ms")
    if duration is not None and (
        isinstance(duration, bool) or not isinstance(duration, int | float)
    ):
        raise _Malformed("duration_ms is not a number")
    return RequestRecord(
        source=source,
        line_number=line_number,
        text=text,
        request_id=request_id,
        outcome=outcome,
        trace=_trace_from(fields.get("trace")),
        method=_optional_str(fields, "method"),
        path=_optional_str(fields, "path"),
        status=_optional_int(fields, "status"),
        error=_optional_str(fields, "error"),
        error_code=_optional_str(fields, "error_code"),
        model=_optional_str(fields, "model"),
        mode=_optional_str(fields, "mode"),
        duration_ms=None if duration is None else float(duration),
    )


def _trace_from(trace: object) -> tuple[Transition, ...]:
    if not isinstance(trace, list):
        raise _Malformed("trace is missing or not a list")
    steps: list[Transition] = []
    for position, entry in enumerate(trace, start=1):
        if not isinstance(entry, dict):
            raise _Malformed(f"trace entry {position} is not an object")
        names = [entry.get(key) for key in ("source", "event", "target")]
        at_ms = entry.get("at_ms")
        if not all(isinstance(name, str) for name in names):
            raise _Malformed(f"trace entry {position} lacks a string source, event or target")
        if isinstance(at_ms, bool) or not isinstance(at_ms, int) or at_ms < 0:
            raise _Malformed(f"trace entry {position} has no non-negative integer at_ms")
        source, event, target = (str(name) for name in names)
        steps.append(Transition(source, event, target, at_ms))
    return tuple(steps)


def _optional_str(fields: Mapping[str, Any], key: str) -> str | None:
    value = fields.get(key)
    if value is not None and not isinstance(value, str):
        raise _Malformed(f"{key} is not a string")
    return value


def _optional_int(fields: Mapping[str, Any], key: str) -> int | None:
    value = fields.get(key)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise _Malformed(f"{key} is not an integer")
    return value


def trace_inconsistency(record: RequestRecord) -> str | None:
    """Why *record*'s trace is not a path the machine allows (rule 3), or None when it is."""
    trace = record.trace
    if record.outcome == "rejected":
        if trace:
            return f"a rejected request has no machine, but its trace has {len(trace)} transitions"
        return None
    if not trace:
        return f"outcome {record.outcome} needs transitions, but the trace is empty"
    state, previous_at = INITIAL_STATE, 0
    for position, step in enumerate(trace, start=1):
        if step.source != state:
            return f"transition {position} starts in {step.source}, but the request was in {state}"
        if TRANSITIONS.get((step.source, step.event)) != step.target:
            return f"transition {position} ({step.describe()}) is not a declared transition"
        if step.at_ms < previous_at:
            return f"transition {position} is at {step.at_ms} ms, before the previous one"
        state, previous_at = step.target, step.at_ms
    expected_end = _FINAL_STATE_OF[record.outcome]
    if state != expected_end:
        return f"outcome {record.outcome} must end in {expected_end}, but the trace ends in {state}"
    return None


# --- one request ----------------------------------------------------------------------------


def states_visited(record: RequestRecord) -> tuple[str, ...]:
    """The request's path through the machine; empty for a rejected request."""
    if not record.trace:
        return ()
    return (record.trace[0].source, *(step.target for step in record.trace))


def state_times(record: RequestRecord) -> tuple[tuple[str, int], ...]:
    """``(state, milliseconds spent in it)`` for each transition, in order (rule 6)."""
    times: list[tuple[str, int]] = []
    previous_at = 0
    for step in record.trace:
        times.append((step.source, step.at_ms - previous_at))
        previous_at = step.at_ms
    return tuple(times)


def format_timeline(record: RequestRecord) -> str:
    """
    A readable timeline: a header line, then one line per transition.

    Example::

        req_1  POST /v1/chat/completions  sim/json  200 done  8 ms
          +0 ms  detecting --stream_declined--> falling_back  (0 ms in detecting)
          +7 ms  falling_back --answer_received--> draining   (7 ms in falling_back)
          +7 ms  draining --drained--> done                   (0 ms in draining)
    """
    ending = f"{_or_dash(record.status)} {record.outcome}"
    if record.error is not None:
        ending += f" {record.error}"
    duration = "-" if record.duration_ms is None else f"{round(record.duration_ms)}"
    header = "  ".join(
        [
            record.request_id,
            f"{_or_dash(record.method)} {_or_dash(record.path)}",
            _or_dash(record.model),
            ending,
            f"{duration} ms",
        ]
    )
    if not record.trace:
        return f"{header}\n  no transitions: rejected before the machine started"
    offsets = [f"+{step.at_ms} ms" for step in record.trace]
    steps = [step.describe() for step in record.trace]
    offset_width = max(len(offset) for offset in offsets)
    step_width = max(len(step) for step in steps)
    lines = [header]
    for offset, step, (state, spent) in zip(offsets, steps, state_times(record), strict=True):
        lines.append(
            f"  {offset.rjust(offset_width)}  {step.ljust(step_width)}  ({spent} ms in {state})"
        )
    return "\n".join(lines)


def _or_dash(value: object) -> str:
    return "-" if value is None else str(value)


# --- many requests --------------------------------------------------------------------------


@attrs.frozen
class StateTiming:
    """Time spent in one state over many requests, in milliseconds (rule 6)."""

    state: str
    count: int
    p50_ms: int
    p90_ms: int
    p99_ms: int
    max_ms: int


@attrs.frozen
class Summary:
    """Counts over the selected requests, and the line counts of the whole read."""

    requests: int
    paths: tuple[tuple[tuple[str, ...], int], ...]
    outcomes: tuple[tuple[str, int], ...]
    errors: tuple[tuple[str, int], ...]
    time_in_state: tuple[StateTiming, ...]
    lines_read: int
    other_lines: int
    malformed_lines: int
    inconsistent_lines: int

    def to_dict(self) -> dict[str, Any]:
        """The summary as plain JSON-ready data (what ``trace --summary --json`` prints)."""
        return {
            "requests": self.requests,
            "lines_read": self.lines_read,
            "other_lines": self.other_lines,
            "malformed_lines": self.malformed_lines,
            "inconsistent_lines": self.inconsistent_lines,
            "paths": [{"states": list(states), "count": count} for states, count in self.paths],
            "outcomes": dict(self.outcomes),
            "errors": dict(self.errors),
            "time_in_state_ms": {
                timing.state: {
                    "count": timing.count,
                    "p50": timing.p50_ms,
                    "p90": timing.p90_ms,
                    "p99": timing.p99_ms,
                    "max": timing.max_ms,
                }
                for timing in self.time_in_state
            },
        }


def nearest_rank(values: Sequence[int], percentile: int) -> int:
    """
    The *percentile*-th percentile of *values* by the nearest-rank method.

    Raises:
        ValueError: *values* is empty or *percentile* is outside 1..100.
    """
    if not values:
        raise ValueError("no values to take a percentile of")
    if not 0 < percentile <= 100:
        raise ValueError(f"percentile {percentile} is outside 1..100")
    ordered = sorted(values)
    rank = -(-percentile * len(ordered) // 100)  # ceil(p * n / 100) without floats
    return ordered[rank - 1]


def summarise(log: AuditLog, selection: Selection | None = None) -> Summary:
    """Count the selected requests by path, outcome and error kind; time each state."""
    records = log.select(selection or Selection())
    paths = Counter(states_visited(record) for record in records)
    errors = Counter(record.error for record in records if record.error is not None)
    outcomes = Counter(record.outcome for record in records)
    spent: dict[str, list[int]] = {}
    for record in records:
        for state, milliseconds in state_times(record):
            spent.setdefault(state, []).append(milliseconds)
    timings = tuple(_timing(state, spent[state]) for state in _STATE_ORDER if state in spent)
    return Summary(
        requests=len(records),
        paths=tuple(sorted(paths.items(), key=lambda item: (-item[1], item[0]))),
        outcomes=tuple((outcome, outcomes[outcome]) for outcome in OUTCOMES),
        errors=tuple(sorted(errors.items(), key=lambda item: (-item[1], item[0]))),
        time_in_state=timings,
        lines_read=log.lines_read,
        other_lines=log.other_lines,
        malformed_lines=log.count("malformed"),
        inconsistent_lines=log.count("inconsistent"),
    )


def _timing(state: str, values: Sequence[int]) -> StateTiming:
    p50, p90, p99 = (nearest_rank(values, percentile) for percentile in PERCENTILES)
    return StateTiming(state, len(values), p50, p90, p99, max(values))


def format_summary(summary: Summary) -> str:
    """The summary as aligned text sections."""
    lines = [
        f"{summary.requests} requests  ({summary.lines_read} lines read: "
        f"{summary.other_lines} other, {summary.malformed_lines} malformed, "
        f"{summary.inconsistent_lines} inconsistent)",
        "",
        "paths through the machine",
    ]
    path_rows = [
        (str(count), " → ".join(states) if states else "(no machine: rejected)")
        for states, count in summary.paths
    ]
    lines += _rows(path_rows) or ["  (none)"]
    lines += ["", "outcomes", *_rows([(name, str(n)) for name, n in summary.outcomes])]
    lines += ["", "error kinds"]
    lines += _rows([(kind, str(n)) for kind, n in summary.errors]) or ["  (none)"]
    lines += ["", "time in state (ms)"]
    timing_rows = [
        (t.state, str(t.count), str(t.p50_ms), str(t.p90_ms), str(t.p99_ms), str(t.max_ms))
        for t in summary.time_in_state
    ]
    if timing_rows:
        lines += _rows([("state", "n", "p50", "p90", "p99", "max"), *timing_rows], numeric=True)
    else:
        lines.append("  (none)")
    return "\n".join(lines)


def _rows(rows: Sequence[tuple[str, ...]], *, numeric: bool = False) -> list[str]:
    """Align columns: the first left-aligned, the others right-aligned when *numeric*."""
    if not rows:
        return []
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    lines = []
    for row in rows:
        cells = [
            cell.rjust(width) if numeric and column else cell.ljust(width)
            for column, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        lines.append(("  " + "  ".join(cells)).rstrip())
    return lines


# --- the diagram ----------------------------------------------------------------------------


def transition_counts(records: Iterable[RequestRecord]) -> dict[Edge, int]:
    """
    How many times each declared transition was taken; every declared one is present.

    Raises:
        KeyError: a record's trace takes an undeclared transition; records from
            :func:`read_log` never do (rule 3).
    """
    counts: dict[Edge, int] = {
        (source, event, target): 0 for (source, event), target in TRANSITIONS.items()
    }
    for record in records:
        for step in record.trace:
            counts[(step.source, step.event, step.target)] += 1
    return counts


def mermaid_diagram(counts: Mapping[Edge, int]) -> str:
    """The machine as mermaid ``stateDiagram-v2`` text, each edge labelled ``event (N)``."""
    lines = ["stateDiagram-v2", "    direction LR", f"    [*] --> {INITIAL_STATE}"]
    lines += [
        f"    {source} --> {target} : {event} ({count})"
        for (source, event, target), count in counts.items()
    ]
    lines += [f"    {state} --> [*]" for state in _STATE_ORDER if state in FINAL_STATES]
    return "\n".join(lines) + "\n"


def dot_diagram(counts: Mapping[Edge, int]) -> str:
    """
    The machine as Graphviz DOT text, each edge labelled ``event (N)``.

    Edges no request took are drawn dashed and grey, so the paths in use stand out.
    """
    lines = [
        "digraph RequestMachine {",
        "    rankdir=LR;",
        '    node [shape=box, style=rounded, fontname="Helvetica"];',
        '    edge [fontname="Helvetica", fontsize=10];',
        '    "__start__" [shape=point, width=0.15, label=""];',
    ]
    for state in _STATE_ORDER:
        extra = ", peripheries=2" if state in FINAL_STATES else ""
        lines.append(f'    "{state}" [label="{state}"{extra}];')
    lines.append(f'    "__start__" -> "{INITIAL_STATE}";')
    for (source, event, target), count in counts.items():
        style = "" if count else ', style=dashed, color="gray50", fontcolor="gray50"'
        lines.append(f'    "{source}" -> "{target}" [label="{event} ({count})"{style}];')
    lines.append("}")
    return "\n".join(lines) + "\n"


class GraphvizError(Exception):
    """Graphviz's ``dot`` is not installed, or could not draw the diagram."""


def render_image(dot_text: str, image_format: str, *, dot_command: str | None = None) -> bytes:
    """
    Draw DOT text as an image with Graphviz's ``dot`` binary (the module's only IO).

    Args:
        dot_text: what :func:`dot_diagram` returned.
        image_format: one of :data:`IMAGE_FORMATS`.
        dot_command: the ``dot`` executable; found on ``PATH`` when not given.

    Raises:
        GraphvizError: ``dot`` is missing, failed, or took longer than ``DOT_TIMEOUT_SECONDS``.
        ValueError: *image_format* is not one of :data:`IMAGE_FORMATS`.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r} is not one of {sorted(IMAGE_FORMATS)}")
    command = dot_command or shutil.which("dot")
    if command is None:
        raise GraphvizError(
            "drawing an image needs Graphviz's 'dot' program, which is not installed "
            "(Debian: apt-get install graphviz); the mermaid text needs nothing "
            "(write it with --output FILE.mmd, or FILE.dot for DOT text)"
        )
    try:
        finished = subprocess.run(
            [command, f"-T{image_format}"],
            input=dot_text.encode("utf-8"),
            capture_output=True,
            timeout=DOT_TIMEOUT_SECONDS,
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise GraphvizError(f"could not run {command!r}: {exc}") from exc
    if finished.returncode != 0:
        message = finished.stderr.decode("utf-8", "replace").strip()
        raise GraphvizError(f"dot failed with exit code {finished.returncode}: {message}")
    return finished.stdout
