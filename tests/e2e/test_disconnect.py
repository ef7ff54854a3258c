"""
A client leaving cancels the upstream call at once, in every phase (contract §6; §2 client_gone).

Phases: a streaming client waiting for a slow whole answer after heartbeats arrived; a streaming
client before any byte (the head held back); a streaming client mid-relay; a non-streaming client
waiting. In each, the simulator's record of the call shows ``closed_early`` (the gateway closed
its upstream connection before the answer ended: a slow answer would still be pending, a stalled
one would never end), and the log line says ``cancelled`` / ``client_disconnected`` with a trace
ending in ``client_gone``.
"""

from __future__ import annotations

import json
import socket
from typing import Any

import httpx

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    GatewayFactory,
    LogCapture,
    Simulator,
    chat_body,
    new_request_id,
    raw_http_request,
    settled_records,
    wait_for_chat_request,
    wait_log_line,
)

#: How long the simulator is given to see the gateway close its upstream connection.
CANCEL_WITHIN_SECONDS = 1.5


def _upstream_record(sim: Simulator, model: str) -> dict[str, Any]:
    records = [r for r in settled_records(sim, CANCEL_WITHIN_SECONDS) if r["model"] == model]
    assert len(records) == 1, records
    return records[0]


def _assert_cancelled(
    log_capture: LogCapture, request_id: str, *, status: int | None
) -> dict[str, Any]:
    line = wait_log_line(log_capture, request_id)
    assert (line["outcome"], line["error"]) == ("cancelled", "client_disconnected")
    assert line["status"] == status
    assert line["committed"] is (status is not None)
    assert line["trace"][-1]["event"] == "client_gone"
    assert line["trace"][-1]["target"] == "errored"
    return line


def _send_then_leave(gateway: ServerThread, sim: Simulator, body: dict[str, Any], rid: str) -> None:
    """Send a request on a raw socket, wait until it reached the upstream, then close."""
    payload = json.dumps(body).encode()
    request = raw_http_request(
        gateway.port,
        "POST",
        "/v1/chat/completions",
        headers={"Content-Type": "application/json", "X-Request-ID": rid},
        body=payload,
    )
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(request)
        wait_for_chat_request(sim, body["model"])
        sock.setblocking(False)
        try:
            received = sock.recv(65536)
        except BlockingIOError:
            received = b""
        assert received == b"", "the head must still be held back"


def test_disconnect_while_waiting_after_heartbeats_cancels_the_upstream(
    gateway_factory: GatewayFactory, sim: Simulator, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(heartbeat_interval=0.2)
    model = "sim/json:delay=3000"
    rid = new_request_id("gone-heartbeats")
    received = b""
    with (
        httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body(model, stream=True),
            headers={"X-Request-ID": rid},
        ) as response,
    ):
        assert response.status_code == 200
        for data in response.iter_raw():
            received += data
            if b": keep-alive" in received:
                break

    report = check_stream(received, partial=True)
    assert report.comments >= 1
    assert report.content == ""
    assert _upstream_record(sim, model)["closed_early"] is True
    _assert_cancelled(log_capture, rid, status=200)


def test_disconnect_before_any_byte_cancels_the_upstream(
    gateway: ServerThread, sim: Simulator, log_capture: LogCapture
) -> None:
    model = "sim/json:delay=3000"
    rid = new_request_id("gone-before-head")
    _send_then_leave(gateway, sim, chat_body(model, stream=True), rid)

    assert _upstream_record(sim, model)["closed_early"] is True
    _assert_cancelled(log_capture, rid, status=None)


def test_disconnect_mid_stream_cancels_the_upstream(
    gateway: ServerThread, sim: Simulator, log_capture: LogCapture
) -> None:
    model = "sim/stream:chunks=6:stall=2"
    rid = new_request_id("gone-mid-stream")
    received = b""
    with (
        httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http,
        http.stream(
            "POST",
            "/v1/chat/completions",
            json=chat_body(model, stream=True),
            headers={"X-Request-ID": rid},
        ) as response,
    ):
        assert response.status_code == 200
        for data in response.iter_raw():
            received += data
            # the role chunk, then two content chunks
            if len(check_stream(received, partial=True).events) >= 3:
                break

    report = check_stream(received, partial=True)
    assert len(report.events) == 3
    assert report.content
    assert _upstream_record(sim, model)["closed_early"] is True
    line = _assert_cancelled(log_capture, rid, status=200)
    assert [entry["event"] for entry in line["trace"]] == ["upstream_streamed", "client_gone"]


def test_disconnect_of_a_waiting_non_streaming_client_cancels_the_upstream(
    gateway: ServerThread, sim: Simulator, log_capture: LogCapture
) -> None:
    model = "sim/json:delay=3000"
    rid = new_request_id("gone-json")
    _send_then_leave(gateway, sim, chat_body(model), rid)

    assert _upstream_record(sim, model)["closed_early"] is True
    line = _assert_cancelled(log_capture, rid, status=None)
    assert [entry["event"] for entry in line["trace"]] == ["stream_declined", "client_gone"]
