"""
The fault matrix as data: upstream fault, phase, commit and client kind → what must happen.

Every expectation here was written by hand from the contract, never by running the gateway:
the §7 error table gives the status, ``type``, ``code``, the log line's ``error`` kind and the
machine event of each fault; the §5 commit rule says how the client sees it (an HTTP error before
the commit, ``200`` and one error event after it); the §2 machine gives the trace. The runner
(``test_fault_matrix.py``) only provokes each cell and compares.

Axes:

- **fault**: :data:`FAULTS`, the upstream faults of issue 6 plus an SSE error event.
- **phase**: the machine state the request is in when the fault arrives (§2). ``draining``
  begins when the upstream part is over, so no upstream fault can arrive in it: its cells place
  each fault at the last moment it can come, right after the upstream's finish chunk, where R3
  ends the upstream part, and expect a clean finish (the fault never reaches the client).
- **commit**: whether the streaming client's head went out before the fault (a heartbeat tick
  of 0.1 s and an upstream that waits 0.3-0.6 s first, or content already relayed) or not (the
  default 10 s interval, the fault at once).
- **client**: a streaming client (``stream: true``) or a non-streaming one.

A cell that cannot occur is :class:`NotApplicable` with the reason. Every other cell has its
:class:`Placement`: the model id the simulator reads (§12 grammar), the gateway flags, and which
upstream serves it. Every gateway of the matrix runs in server key mode with
``--detection-cache-ttl 0``, so no cell learns anything another cell reads.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Literal

import attrs

__all__ = [
    "CELLS",
    "CLIENTS",
    "COMMITS",
    "FAULTS",
    "PHASES",
    "ROWS",
    "Cell",
    "Clean",
    "Failed",
    "NotApplicable",
    "Placement",
    "Result",
    "Row",
    "cell_by_id",
    "expected_result",
]

FAULTS: tuple[str, ...] = (
    "connection_refused",
    "timeout_before_first_byte",
    "status_401",
    "status_403",
    "status_404",
    "status_422",
    "status_429",
    "status_500",
    "status_503",
    "malformed_json",
    "malformed_sse",
    "dropped",
    "stalled",
    "error_event",
)
PHASES: tuple[str, ...] = ("detecting", "streaming", "falling_back", "draining")
COMMITS: tuple[str, ...] = ("before_commit", "after_commit")
CLIENTS: tuple[str, ...] = ("stream_client", "json_client")

FAULT_TITLES: dict[str, str] = {
    "connection_refused": "connection refused",
    "timeout_before_first_byte": "timeout before the first byte",
    "status_401": "401",
    "status_403": "403",
    "status_404": "404",
    "status_422": "422",
    "status_429": "429 with Retry-After",
    "status_500": "500",
    "status_503": "503",
    "malformed_json": "malformed JSON",
    "malformed_sse": "malformed SSE line",
    "dropped": "connection dropped",
    "stalled": "stalled",
    "error_event": "SSE error event",
}


# --- §7, by hand ----------------------------------------------------------------------------


@attrs.frozen
class Row:
    """One row of the §7 table as the client and the log line see it."""

    status: int
    type: str
    code: str
    kind: str
    event: Literal["upstream_failed", "timed_out"]
    should_retry_false: bool = False


API_ERROR = "api_error"
INVALID_REQUEST = "invalid_request_error"

ROWS: dict[str, Row] = {
    # upstream 401/403, server key mode (every matrix gateway has a server key)
    "upstream_auth_failed": Row(
        502, API_ERROR, "upstream_auth_failed", "upstream_auth", "upstream_failed", True
    ),
    "model_not_found": Row(
        404, INVALID_REQUEST, "model_not_found", "upstream_not_found", "upstream_failed"
    ),
    "rate_limit_exceeded": Row(
        429, "rate_limit_error", "rate_limit_exceeded", "upstream_rate_limited", "upstream_failed"
    ),
    "upstream_rejected_request": Row(
        400, INVALID_REQUEST, "upstream_rejected_request", "upstream_rejected", "upstream_failed"
    ),
    # upstream 3xx, 500, 502, other 5xx; an error event mid-stream
    "upstream_error": Row(502, API_ERROR, "upstream_error", "upstream_error", "upstream_failed"),
    "upstream_unavailable": Row(
        503, API_ERROR, "upstream_unavailable", "upstream_unavailable", "upstream_failed"
    ),
    "upstream_unreachable": Row(
        502, API_ERROR, "upstream_unreachable", "upstream_unreachable", "upstream_failed"
    ),
    # no answer within answer_timeout (the head, or a whole body to its last byte)
    "upstream_timeout": Row(504, API_ERROR, "upstream_timeout", "upstream_timeout", "timed_out"),
    "stream_timeout": Row(504, API_ERROR, "stream_timeout", "stream_timeout", "timed_out"),
    "upstream_disconnected": Row(
        502, API_ERROR, "upstream_disconnected", "upstream_disconnected", "upstream_failed"
    ),
    "upstream_malformed": Row(
        502, API_ERROR, "upstream_malformed", "upstream_malformed", "upstream_failed", True
    ),
}

#: The upstream's status → its §7 row. 422 carries "Unprocessable request" (§12's fixed
#: message), which is neither a rejection of the stream flag (D4) nor "model not found".
STATUS_ROWS: dict[int, str] = {
    401: "upstream_auth_failed",
    403: "upstream_auth_failed",
    404: "model_not_found",
    422: "upstream_rejected_request",
    429: "rate_limit_exceeded",
    500: "upstream_error",
    503: "upstream_unavailable",
}
#: What the simulator's ``retry=`` sends as ``Retry-After`` on a 429.
RETRY_AFTER = "7"


# --- what a cell expects --------------------------------------------------------------------


@attrs.frozen
class Failed:
    """The request ends ``errored`` with the §7 row; ``trace`` is every event, in order."""

    row: Row
    trace: tuple[str, ...]
    retry_after: str | None = None


@attrs.frozen
class Clean:
    """The fault never reaches the client: the request ends ``done``."""

    trace: tuple[str, ...]


@attrs.frozen
class NotApplicable:
    reason: str


Expectation = Failed | Clean | NotApplicable
UpstreamKind = Literal["simulator", "closed_port", "scripted", "stream_whatever_asked"]
ScriptName = Literal["hang_up", "hang_up_late", "reject_then_refuse", "reject_late_then_refuse",
                     "reject_then_silent", "reject_late_then_silent"]  # fmt: skip


@attrs.frozen
class Placement:
    """How the runner provokes a cell: the model id, gateway flags, and the upstream."""

    model: str
    flags: tuple[tuple[str, object], ...] = ()
    upstream: UpstreamKind = "simulator"
    script: ScriptName | None = None


@attrs.frozen
class Cell:
    fault: str
    phase: str
    commit: str
    client: str
    expect: Expectation
    placement: Placement | None = None

    @property
    def id(self) -> str:
        return f"{self.fault}-{self.phase}-{self.commit}-{self.client}"

    @property
    def runnable(self) -> bool:
        return not isinstance(self.expect, NotApplicable)


@attrs.frozen
class Result:
    """
    A cell's outcome in the words of ``docs/reliability.md``; the same for expected and seen.

    ``client_saw`` is ``HTTP <status> <code>`` before the commit, ``200, error event <code>``
    after it, ``200, [DONE]`` for a clean stream.
    """

    client_saw: str
    outcome: str
    error_kind: str | None
    trace: tuple[str, ...]

    def as_json(self) -> dict[str, object]:
        return {
            "client_saw": self.client_saw,
            "outcome": self.outcome,
            "error_kind": self.error_kind,
            "trace": list(self.trace),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, object]) -> Result:
        trace = data["trace"]
        kind = data["error_kind"]
        assert isinstance(trace, list)
        return cls(
            client_saw=str(data["client_saw"]),
            outcome=str(data["outcome"]),
            error_kind=None if kind is None else str(kind),
            trace=tuple(str(event) for event in trace),
        )


def expected_result(cell: Cell) -> Result | None:
    """What the client must see, per §5's commit rule; None for a cell that cannot occur."""
    expect = cell.expect
    if isinstance(expect, NotApplicable):
        return None
    if isinstance(expect, Clean):
        return Result("200, [DONE]", "done", None, expect.trace)
    row = expect.row
    if cell.commit == "before_commit":
        saw = f"HTTP {row.status} {row.code}"
    else:
        saw = f"200, error event {row.code}"
    return Result(saw, "errored", row.kind, expect.trace)


# --- the reasons a cell cannot occur --------------------------------------------------------

JSON_NEVER_DETECTS = (
    "a non-streaming client's call is sent with stream: false and fires stream_declined before "
    "it leaves (D1): such a request is never in detecting"
)
JSON_NEVER_STREAMS = (
    "a non-streaming client's call is sent with stream: false (D1); an SSE answer to it is read "
    "whole in falling_back (D11), so it never enters streaming"
)
JSON_NEVER_COMMITS_EARLY = "a non-streaming client never commits early (§5): nothing is sent first"
JSON_NOTHING_AFTER_ANSWER = (
    "a non-streaming client's upstream part ends with the whole body read (answer_received); "
    "nothing of the upstream comes after it"
)
UPSTREAM_PART_OVER = (
    "draining begins when the upstream part is over (answer_received, or R3's "
    "upstream_finished); the upstream has nothing left to send"
)
REFUSED_BEFORE_TICK = (
    "a refused connection is known one network round trip after the call, long before the "
    "first heartbeat tick could commit"
)
NO_CONNECTION_IN_STREAMING = "streaming begins with a 2xx head: a connection that answered"
NO_FIRST_BYTE_IN_STREAMING = (
    "streaming begins with the head, the first byte; a silence after it is a stall"
)
STATUS_IS_THE_HEAD = (
    "an error status is the response head; streaming begins only with a 2xx SSE head (D2)"
)
STATUS_BEFORE_DRAINING = "every response head was read before the upstream part ended"
BODY_AFTER_DETECTING = "a body is read only after its head, and the head ends detecting (D2, D3)"
STREAM_BODY_IS_SSE = (
    "in a stream every event is SSE: a malformed event there is the malformed SSE fault"
)
WHOLE_BODY_IS_THE_END = (
    "the whole body parsed is answer_received, which begins draining: nothing is read after it"
)
MALFORMED_AFTER_FINISH = (
    "a malformed event after the upstream's finish chunk comes before the upstream's end, so "
    "the request is still streaming (R3 ends the upstream part only at an end: [DONE], the "
    "connection's end, or silence); once it ended nothing more is read"
)
STALL_BEFORE_HEAD = "silence before the head is the timeout before the first byte"
EVENT_AFTER_HEAD = "an error event comes in a stream body, after the head that ended detecting"


# --- placements -----------------------------------------------------------------------------

HEARTBEAT = ("heartbeat_interval", 0.1)  # a tick commits before the fault
NO_HEARTBEAT_TICK = ("heartbeat_interval", 10.0)
LATE = 600  # ms the simulator waits before a fault, so the 0.1 s tick comes first
LATE_EACH = 300  # ms before each of the two D4 calls
ANSWER_TIMEOUT_SHORT = ("answer_timeout", 0.3)
ANSWER_TIMEOUT_AFTER_TICK = ("answer_timeout", 1.0)
STREAM_TIMEOUT_SHORT = ("stream_timeout", 0.3)
#: A whole body is governed by answer_timeout (§6); a shorter stream_timeout beside it shows
#: that the stream timeout does not apply to it.
WHOLE_BODY_TIMEOUTS = (("answer_timeout", 0.6), ("stream_timeout", 0.2))
STREAMING_OFF = ("streaming", "off")
NEVER_ANSWERS = 3000  # ms: longer than every answer timeout above


def _sim(model: str, *flags: tuple[str, object]) -> Placement:
    return Placement(model=model, flags=flags)


def _sse_always(model: str, *flags: tuple[str, object]) -> Placement:
    return Placement(model=model, flags=flags, upstream="stream_whatever_asked")


def _scripted(script: ScriptName, *flags: tuple[str, object]) -> Placement:
    return Placement(model="sim/stream", flags=flags, upstream="scripted", script=script)


def _closed_port(model: str) -> Placement:
    return Placement(model=model, upstream="closed_port")


@attrs.frozen
class PhaseSpec:
    """
    One fault in one phase: its expectation and the placements of its three runnable cells.

    ``route`` is the streaming client's trace before the fault; a non-streaming client's is
    always ``("stream_declined",)``. ``na`` is the reason for the cells without a placement.
    """

    row: str | None = None  # a key of ROWS; None with ``clean``
    clean: bool = False
    route: tuple[str, ...] = ()
    stream_before: Placement | None = None
    stream_after: Placement | None = None
    json_before: Placement | None = None
    na_stream_before: str | None = None
    na_stream_after: str | None = None
    na_json: str | None = None


def _status_specs(status: int) -> dict[str, PhaseSpec]:
    retry = ":retry=7" if status == 429 else ""
    code = f"status={status}{retry}"
    row = STATUS_ROWS[status]
    return {
        "detecting": PhaseSpec(
            row=row,
            stream_before=_sim(f"sim/stream:{code}"),
            stream_after=_sim(f"sim/stream:delay={LATE}:{code}", HEARTBEAT),
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            na_stream_before=STATUS_IS_THE_HEAD,
            na_stream_after=STATUS_IS_THE_HEAD,
            na_json=JSON_NEVER_STREAMS,
        ),
        # sim/reject:status=CODE: the rejection first, then CODE on the D4 repeat call (§12)
        "falling_back": PhaseSpec(
            row=row,
            route=("stream_rejected",),
            stream_before=_sim(f"sim/reject:{code}"),
            stream_after=_sim(f"sim/reject:delay={LATE_EACH}:{code}", HEARTBEAT),
            json_before=_sim(f"sim/json:{code}"),
        ),
        "draining": PhaseSpec(
            na_stream_before=STATUS_BEFORE_DRAINING,
            na_stream_after=STATUS_BEFORE_DRAINING,
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    }


_NOT_IN_DRAINING = PhaseSpec(
    na_stream_before=UPSTREAM_PART_OVER,
    na_stream_after=UPSTREAM_PART_OVER,
    na_json=JSON_NOTHING_AFTER_ANSWER,
)

SPECS: dict[str, dict[str, PhaseSpec]] = {
    "connection_refused": {
        "detecting": PhaseSpec(
            row="upstream_unreachable",
            stream_before=_closed_port("sim/stream"),
            na_stream_after=REFUSED_BEFORE_TICK,
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            na_stream_before=NO_CONNECTION_IN_STREAMING,
            na_stream_after=NO_CONNECTION_IN_STREAMING,
            na_json=JSON_NEVER_STREAMS,
        ),
        # the upstream rejects the stream flag, then stops listening: the repeat is refused
        "falling_back": PhaseSpec(
            row="upstream_unreachable",
            route=("stream_rejected",),
            stream_before=_scripted("reject_then_refuse"),
            stream_after=_scripted("reject_late_then_refuse", HEARTBEAT),
            json_before=_closed_port("sim/json"),
        ),
        "draining": _NOT_IN_DRAINING,
    },
    "timeout_before_first_byte": {
        "detecting": PhaseSpec(
            row="upstream_timeout",
            stream_before=_sim(f"sim/stream:delay={NEVER_ANSWERS}", ANSWER_TIMEOUT_SHORT),
            stream_after=_sim(
                f"sim/stream:delay={NEVER_ANSWERS}", HEARTBEAT, ANSWER_TIMEOUT_AFTER_TICK
            ),
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            na_stream_before=NO_FIRST_BYTE_IN_STREAMING,
            na_stream_after=NO_FIRST_BYTE_IN_STREAMING,
            na_json=JSON_NEVER_STREAMS,
        ),
        # the D4 repeat call gets its own answer_timeout (§6) and never answers
        "falling_back": PhaseSpec(
            row="upstream_timeout",
            route=("stream_rejected",),
            stream_before=_scripted("reject_then_silent", ANSWER_TIMEOUT_SHORT),
            stream_after=_scripted("reject_late_then_silent", HEARTBEAT, ANSWER_TIMEOUT_AFTER_TICK),
            json_before=_sim(f"sim/json:delay={NEVER_ANSWERS}", ANSWER_TIMEOUT_SHORT),
        ),
        "draining": _NOT_IN_DRAINING,
    },
    **{f"status_{status}": _status_specs(status) for status in STATUS_ROWS},
    "malformed_json": {
        "detecting": PhaseSpec(
            na_stream_before=BODY_AFTER_DETECTING,
            na_stream_after=BODY_AFTER_DETECTING,
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            na_stream_before=STREAM_BODY_IS_SSE,
            na_stream_after=STREAM_BODY_IS_SSE,
            na_json=JSON_NEVER_STREAMS,
        ),
        "falling_back": PhaseSpec(
            row="upstream_malformed",
            route=("upstream_answered_whole",),
            stream_before=_sim("sim/json:badjson=1"),
            stream_after=_sim(f"sim/json:delay={LATE}:badjson=1", HEARTBEAT),
            json_before=_sim("sim/json:badjson=1"),
        ),
        "draining": PhaseSpec(
            na_stream_before=WHOLE_BODY_IS_THE_END,
            na_stream_after=WHOLE_BODY_IS_THE_END,
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    },
    "malformed_sse": {
        "detecting": PhaseSpec(
            na_stream_before=BODY_AFTER_DETECTING,
            na_stream_after=BODY_AFTER_DETECTING,
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            row="upstream_malformed",
            route=("upstream_streamed",),
            stream_before=_sim("sim/stream:badsse=0"),
            stream_after=_sim("sim/stream:badsse=2"),
            na_json=JSON_NEVER_STREAMS,
        ),
        # an upstream that streams whatever is asked (D11), with stream: false sent (D1)
        "falling_back": PhaseSpec(
            row="upstream_malformed",
            route=("stream_declined",),
            stream_before=_sse_always("sim/stream:badsse=2", STREAMING_OFF),
            stream_after=_sse_always(f"sim/stream:delay={LATE}:badsse=2", STREAMING_OFF, HEARTBEAT),
            json_before=_sse_always("sim/stream:badsse=2"),
        ),
        "draining": PhaseSpec(
            na_stream_before=MALFORMED_AFTER_FINISH,
            na_stream_after=MALFORMED_AFTER_FINISH,
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    },
    "dropped": {
        # before the head (§7: "the upstream connection broke (before the head, ...)")
        "detecting": PhaseSpec(
            row="upstream_disconnected",
            stream_before=_scripted("hang_up"),
            stream_after=_scripted("hang_up_late", HEARTBEAT),
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            row="upstream_disconnected",
            route=("upstream_streamed",),
            stream_before=_sim("sim/stream:drop=0"),
            stream_after=_sim("sim/stream:drop=2"),
            na_json=JSON_NEVER_STREAMS,
        ),
        # a JSON answer cut after half its Content-Length
        "falling_back": PhaseSpec(
            row="upstream_disconnected",
            route=("upstream_answered_whole",),
            stream_before=_sim("sim/json:drop=1"),
            stream_after=_sim(f"sim/json:delay={LATE}:drop=1", HEARTBEAT),
            json_before=_sim("sim/json:drop=1"),
        ),
        # cut right after the finish chunk: R3, a broken end after it is an end
        "draining": PhaseSpec(
            clean=True,
            route=("upstream_streamed", "upstream_finished", "drained"),
            stream_before=_sim("sim/stream:words=0:chunks=1:drop=1"),
            stream_after=_sim("sim/stream:chunks=2:drop=2"),
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    },
    "stalled": {
        "detecting": PhaseSpec(
            na_stream_before=STALL_BEFORE_HEAD,
            na_stream_after=STALL_BEFORE_HEAD,
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            row="stream_timeout",
            route=("upstream_streamed",),
            stream_before=_sim("sim/stream:stall=0", STREAM_TIMEOUT_SHORT),
            stream_after=_sim("sim/stream:stall=2", STREAM_TIMEOUT_SHORT),
            na_json=JSON_NEVER_STREAMS,
        ),
        # a whole body that stops after its head: answer_timeout, not stream_timeout (§6)
        "falling_back": PhaseSpec(
            row="upstream_timeout",
            route=("upstream_answered_whole",),
            stream_before=_sim("sim/json:stall=1", *WHOLE_BODY_TIMEOUTS),
            stream_after=_sim("sim/json:stall=1", HEARTBEAT, *WHOLE_BODY_TIMEOUTS),
            json_before=_sim("sim/json:stall=1", *WHOLE_BODY_TIMEOUTS),
        ),
        # silent right after the finish chunk: R3, silence after it is an end
        "draining": PhaseSpec(
            clean=True,
            route=("upstream_streamed", "upstream_finished", "drained"),
            stream_before=_sim("sim/stream:words=0:chunks=1:stall=1", STREAM_TIMEOUT_SHORT),
            stream_after=_sim("sim/stream:chunks=2:stall=2", STREAM_TIMEOUT_SHORT),
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    },
    "error_event": {
        "detecting": PhaseSpec(
            na_stream_before=EVENT_AFTER_HEAD,
            na_stream_after=EVENT_AFTER_HEAD,
            na_json=JSON_NEVER_DETECTS,
        ),
        "streaming": PhaseSpec(
            row="upstream_error",
            route=("upstream_streamed",),
            stream_before=_sim("sim/stream:errevent=0"),
            stream_after=_sim("sim/stream:errevent=2"),
            na_json=JSON_NEVER_STREAMS,
        ),
        "falling_back": PhaseSpec(
            row="upstream_error",
            route=("stream_declined",),
            stream_before=_sse_always("sim/stream:errevent=2", STREAMING_OFF),
            stream_after=_sse_always(
                f"sim/stream:delay={LATE}:errevent=2", STREAMING_OFF, HEARTBEAT
            ),
            json_before=_sse_always("sim/stream:errevent=2"),
        ),
        # right after the finish chunk: an end after it is an end (R3; the design document
        # records that an error event there ends the stream cleanly)
        "draining": PhaseSpec(
            clean=True,
            route=("upstream_streamed", "upstream_finished", "drained"),
            stream_before=_sim("sim/stream:words=0:chunks=1:errevent=1"),
            stream_after=_sim("sim/stream:chunks=2:errevent=2"),
            na_json=JSON_NOTHING_AFTER_ANSWER,
        ),
    },
}


def _expectation(spec: PhaseSpec, fault: str, route: tuple[str, ...]) -> Failed | Clean:
    if spec.clean:
        return Clean(trace=spec.route)
    assert spec.row is not None
    row = ROWS[spec.row]
    retry_after = RETRY_AFTER if fault == "status_429" else None
    return Failed(row=row, trace=(*route, row.event), retry_after=retry_after)


def _cells() -> Iterator[Cell]:
    for fault in FAULTS:
        for phase in PHASES:
            spec = SPECS[fault][phase]
            stream_cells = (
                ("before_commit", spec.stream_before, spec.na_stream_before),
                ("after_commit", spec.stream_after, spec.na_stream_after),
            )
            for commit, placement, reason in stream_cells:
                if placement is None:
                    assert reason is not None, (fault, phase, commit)
                    yield Cell(fault, phase, commit, "stream_client", NotApplicable(reason))
                else:
                    expect = _expectation(spec, fault, spec.route)
                    yield Cell(fault, phase, commit, "stream_client", expect, placement)
            if spec.json_before is None:
                assert spec.na_json is not None, (fault, phase)
                yield Cell(
                    fault, phase, "before_commit", "json_client", NotApplicable(spec.na_json)
                )
            else:
                expect = _expectation(spec, fault, ("stream_declined",))
                yield Cell(fault, phase, "before_commit", "json_client", expect, spec.json_before)
            yield Cell(
                fault, phase, "after_commit", "json_client", NotApplicable(JSON_NEVER_COMMITS_EARLY)
            )


CELLS: tuple[Cell, ...] = tuple(_cells())


def cell_by_id(cell_id: str) -> Cell:
    for cell in CELLS:
        if cell.id == cell_id:
            return cell
    raise KeyError(cell_id)
