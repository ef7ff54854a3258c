"""
Clients leaving in every phase: the upstream call is closed at once, and nothing leaks.

For each phase a batch of clients sends requests on raw sockets, waits until the request is in
that phase, and closes. Then:

1. the simulator saw every still-running upstream call closed by the gateway within a second
   (``closed_early``; contract §6: "the upstream sees its connection close"), read with its
   ``?wait=`` so no polling is needed;
2. every request's log line says ``cancelled`` / ``client_disconnected``, its trace ending in
   ``client_gone`` from that phase (§2, §11);
3. the gateway's event loop is back to the number of tasks it had before the batch, it tracks
   no exchange, and its upstream pool holds no busy connection and no more connections than
   before (the only new ones allowed are idle keep-alive connections of answers that ended).

The gateway runs in this process (:class:`LiveGateway`), so its loop and pool can be read.
The resources (3) are checked before the log lines (2), so a wrong outcome cannot hide a leak.
A draining request has no upstream call left to close: its answer was read to the end.
"""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable
from typing import Any, Literal

import attrs
import pytest

from tests.e2e.conftest import (
    CLIENT_TIMEOUT,
    LogCapture,
    Simulator,
    chat_body,
    new_request_id,
    raw_http_request,
    settled_records,
    wait_log_line,
)

from .conftest import LiveGateway, LiveGatewayFactory

BATCH = 8
#: Issue 6: "the simulator sees the upstream connection closed within a second".
CANCEL_WITHIN_SECONDS = 1.0
BASELINE_WAIT_SECONDS = 5.0
POLL_SECONDS = 0.02
#: A small receive buffer, so a client that stops reading blocks the gateway's sends quickly.
SMALL_RECEIVE_BUFFER = 4096

Ready = Literal["upstream_called", "role_chunk", "content", "heartbeat", "replay"]


@attrs.frozen(kw_only=True)
class Phase:
    """Where the clients leave, and what the log and the simulator must show."""

    id: str
    model: str
    stream: bool
    ready: Ready
    trace: tuple[str, ...]
    flags: dict[str, Any] = attrs.field(factory=dict)
    #: False when the upstream's answer ended before the client left (nothing to close).
    upstream_open: bool = True
    #: A D4 rejection is recorded too; only the repeat call is still running.
    repeat_only: bool = False
    #: The gateway handed every byte to the web server before the client left: Hypercorn
    #: then drops what it could not write without telling the app, so the request is ``done``
    #: (the design document, "choices the contract leaves open"). What must hold regardless:
    #: nothing leaks and nothing is left open.
    handed_over: bool = False


HEARTBEATS = {"heartbeat_interval": 0.1}

PHASES = [
    Phase(
        id="detecting-before-commit",
        model="sim/stream:delay=5000",
        stream=True,
        ready="upstream_called",
        trace=("client_gone",),
    ),
    Phase(
        id="detecting-after-commit",
        model="sim/stream:delay=5000",
        stream=True,
        ready="role_chunk",
        trace=("client_gone",),
        flags=HEARTBEATS,
    ),
    Phase(
        id="streaming",
        model="sim/stream:chunks=6:stall=2",
        stream=True,
        ready="content",
        trace=("upstream_streamed", "client_gone"),
    ),
    Phase(
        id="falling-back-whole-answer",
        model="sim/json:gap=5000",
        stream=True,
        ready="heartbeat",
        trace=("upstream_answered_whole", "client_gone"),
        flags=HEARTBEATS,
    ),
    Phase(
        id="falling-back-after-rejection",
        model="sim/reject:gap=5000",
        stream=True,
        ready="heartbeat",
        trace=("stream_rejected", "client_gone"),
        # every request probes: none learns from another that the flag is rejected (D8)
        flags={**HEARTBEATS, "detection_cache_ttl": 0},
        repeat_only=True,
    ),
    Phase(
        id="falling-back-non-streaming-client",
        model="sim/json:gap=5000",
        stream=False,
        ready="upstream_called",
        trace=("stream_declined", "client_gone"),
    ),
    Phase(
        id="draining-replay",
        model="sim/json:words=100000",
        stream=True,
        ready="replay",
        trace=("upstream_answered_whole", "answer_received", "drained"),
        upstream_open=False,
        handed_over=True,
    ),
]


class RawClient:
    """One request on a raw socket, read only as far as a test wants, then abandoned."""

    def __init__(
        self, port: int, body: dict[str, Any], request_id: str, *, close: bool = False
    ) -> None:
        self.request_id = request_id
        self.received = b""
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, SMALL_RECEIVE_BUFFER)
        self.sock.settimeout(CLIENT_TIMEOUT)
        self.sock.connect(("127.0.0.1", port))
        headers = {"Content-Type": "application/json", "X-Request-ID": request_id}
        if close:  # Hypercorn keeps an idle keep-alive connection's task until its timeout
            headers["Connection"] = "close"
        payload = json.dumps(body).encode()
        request = raw_http_request(
            port, "POST", "/v1/chat/completions", headers=headers, body=payload
        )
        self.sock.sendall(request)

    def read_until(self, done: Callable[[bytes], bool]) -> None:
        while not done(self.received):
            data = self.sock.recv(4096)
            if not data:
                raise AssertionError(f"the response ended early: {self.received[-300:]!r}")
            self.received += data

    def close(self) -> None:
        self.sock.close()


def _events(received: bytes) -> int:
    return received.count(b"data: ")


READY: dict[str, Callable[[bytes], bool]] = {
    "role_chunk": lambda received: _events(received) >= 1,
    "content": lambda received: _events(received) >= 3,  # the role chunk and two contents
    "heartbeat": lambda received: b": keep-alive" in received,
    "replay": lambda received: _events(received) >= 2,  # the role chunk and the first delta
}


def _wait_for_upstream_calls(sim: Simulator, model: str, count: int) -> None:
    deadline = time.monotonic() + CLIENT_TIMEOUT
    while len(sim.chat_requests(model)) < count:
        assert time.monotonic() < deadline, f"the upstream got fewer than {count} calls"
        time.sleep(POLL_SECONDS)


def _wait_for(read: Callable[[], Any], expected: Any) -> Any:
    """Read until it gives *expected*, for a bounded time; return the last value read."""
    deadline = time.monotonic() + BASELINE_WAIT_SECONDS
    value = read()
    while value != expected and time.monotonic() < deadline:
        time.sleep(POLL_SECONDS)
        value = read()
    return value


def _warm_up(live: LiveGateway, sim: Simulator) -> None:
    """One finished request, so the client and its pool exist before the baseline."""
    client = RawClient(live.port, chat_body("sim/json"), new_request_id("warm-up"), close=True)
    client.read_until(lambda received: received.endswith(b"}"))
    client.close()
    assert _wait_for(live.in_flight, 0) == 0
    sim.clear()


@pytest.mark.parametrize("phase", PHASES, ids=lambda phase: phase.id)
def test_disconnect_in_every_phase_closes_the_upstream_and_leaks_nothing(
    live_gateway_factory: LiveGatewayFactory,
    sim: Simulator,
    log_capture: LogCapture,
    phase: Phase,
) -> None:
    live = live_gateway_factory(**phase.flags)
    tasks_before = live.task_count()  # no connection open yet
    _warm_up(live, sim)
    connections_before, busy_before = live.pool_counts()
    assert busy_before == 0

    clients = [
        RawClient(live.port, chat_body(phase.model, stream=phase.stream), new_request_id(phase.id))
        for _ in range(BATCH)
    ]
    if phase.ready == "upstream_called":
        _wait_for_upstream_calls(sim, phase.model, BATCH * (2 if phase.repeat_only else 1))
    else:
        for client in clients:
            client.read_until(READY[phase.ready])
    for client in clients:
        client.close()

    records = [r for r in settled_records(sim, CANCEL_WITHIN_SECONDS) if r["model"] == phase.model]
    if phase.repeat_only:
        records = [r for r in records if r["stream"] is False]
    assert len(records) == BATCH
    assert [r["closed_early"] for r in records] == [phase.upstream_open] * BATCH

    assert _wait_for(live.in_flight, 0) == 0
    assert _wait_for(live.task_count, tasks_before) == tasks_before
    connections_after, busy_after = live.pool_counts()
    assert busy_after == 0
    answers_ended = 0 if phase.upstream_open else BATCH
    assert connections_after <= connections_before + answers_ended

    for client in clients:
        line = wait_log_line(log_capture, client.request_id)
        assert tuple(entry["event"] for entry in line["trace"]) == phase.trace
        if phase.handed_over:
            assert (line["outcome"], line["error"]) == ("done", None)
            continue
        assert (line["outcome"], line["error"]) == ("cancelled", "client_disconnected")
        assert line["trace"][-1]["target"] == "errored"
