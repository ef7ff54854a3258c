"""
The error table of contract §7, row by row, over real HTTP: simulator faults in, OpenAI errors out.

Each upstream row is tried with a non-streaming client and, where it applies, with a streaming
client before the commit (the default 10 s heartbeat, so nothing commits early): the status,
the OpenAI error shape, the retry headers, and the log line's ``error`` kind and final
transition. Rows that can only happen mid-stream are tried after the commit, where the same
error arrives as one ``data: {"error": ...}`` event and the stream has no ``[DONE]``.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    SIM_KEY,
    GatewayFactory,
    LogCapture,
    chat_body,
    new_request_id,
    openai_error,
    wait_log_line,
)

JSON_CLIENT = "json-client"
STREAM_CLIENT = "stream-client"
BOTH_CLIENTS = (JSON_CLIENT, STREAM_CLIENT)

API_ERROR = "api_error"
INVALID_REQUEST = "invalid_request_error"
UPSTREAM_FAILED = "upstream_failed"
TIMED_OUT = "timed_out"


@attrs.frozen(kw_only=True)
class Row:
    """One row of §7 as a client sees it, and how to provoke it."""

    id: str
    model: str
    status: int
    type: str
    code: str
    kind: str
    event: str
    clients: tuple[str, ...] = BOTH_CLIENTS
    flags: dict[str, Any] = attrs.field(factory=dict)
    retry_after: str | None = None
    should_retry_false: bool = False
    closed_upstream: bool = False  # point the gateway at a closed port instead of the simulator


BEFORE_COMMIT_ROWS = [
    Row(
        id="upstream_auth_failed-401",
        model="sim/json:status=401",
        status=502,
        type=API_ERROR,
        code="upstream_auth_failed",
        kind="upstream_auth",
        event=UPSTREAM_FAILED,
        should_retry_false=True,
    ),
    Row(
        id="upstream_auth_failed-403",
        model="sim/json:status=403",
        status=502,
        type=API_ERROR,
        code="upstream_auth_failed",
        kind="upstream_auth",
        event=UPSTREAM_FAILED,
        should_retry_false=True,
    ),
    Row(
        id="invalid_api_key-per-request-401",
        model="sim/json:status=401",
        status=401,
        type=INVALID_REQUEST,
        code="invalid_api_key",
        kind="upstream_auth",
        event=UPSTREAM_FAILED,
        flags={"upstream_key": None},
        should_retry_false=True,
    ),
    Row(
        id="permission_denied-per-request-403",
        model="sim/json:status=403",
        status=403,
        type=INVALID_REQUEST,
        code="permission_denied",
        kind="upstream_auth",
        event=UPSTREAM_FAILED,
        flags={"upstream_key": None},
        should_retry_false=True,
    ),
    Row(
        id="model_not_found-404",
        model="sim/json:status=404",
        status=404,
        type=INVALID_REQUEST,
        code="model_not_found",
        kind="upstream_not_found",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="model_not_found-unknown-model",
        model="sim/nosuchkind",
        status=404,
        type=INVALID_REQUEST,
        code="model_not_found",
        kind="upstream_not_found",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="insufficient_quota-402",
        model="sim/json:status=402",
        status=429,
        type="insufficient_quota",
        code="insufficient_quota",
        kind="upstream_quota",
        event=UPSTREAM_FAILED,
        should_retry_false=True,
    ),
    Row(
        id="rate_limit_exceeded-429",
        model="sim/json:status=429:retry=3",
        status=429,
        type="rate_limit_error",
        code="rate_limit_exceeded",
        kind="upstream_rate_limited",
        event=UPSTREAM_FAILED,
        retry_after="3",
    ),
    Row(
        id="upstream_rejected_request-400",
        model="sim/json:status=400",
        status=400,
        type=INVALID_REQUEST,
        code="upstream_rejected_request",
        kind="upstream_rejected",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_rejected_request-422",
        model="sim/json:status=422",
        status=400,
        type=INVALID_REQUEST,
        code="upstream_rejected_request",
        kind="upstream_rejected",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_rejected_request-other-4xx",
        model="sim/json:status=409",
        status=400,
        type=INVALID_REQUEST,
        code="upstream_rejected_request",
        kind="upstream_rejected",
        event=UPSTREAM_FAILED,
    ),
    *(
        Row(
            id=f"upstream_error-{status}",
            model=f"sim/json:status={status}",
            status=502,
            type=API_ERROR,
            code="upstream_error",
            kind="upstream_error",
            event=UPSTREAM_FAILED,
        )
        for status in (500, 502, 501, 302)
    ),
    Row(
        id="upstream_error-error-event",
        model="sim/stream:errevent=0",
        clients=(STREAM_CLIENT,),
        status=502,
        type=API_ERROR,
        code="upstream_error",
        kind="upstream_error",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_unavailable-503",
        model="sim/json:status=503",
        status=503,
        type=API_ERROR,
        code="upstream_unavailable",
        kind="upstream_unavailable",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_timeout-504",
        model="sim/json:status=504",
        status=504,
        type=API_ERROR,
        code="upstream_timeout",
        kind="upstream_timeout",
        event=TIMED_OUT,
    ),
    Row(
        id="upstream_unreachable",
        model="sim/json",
        status=502,
        type=API_ERROR,
        code="upstream_unreachable",
        kind="upstream_unreachable",
        event=UPSTREAM_FAILED,
        closed_upstream=True,
    ),
    Row(
        id="upstream_timeout-no-head",
        model="sim/json:delay=2000",
        status=504,
        type=API_ERROR,
        code="upstream_timeout",
        kind="upstream_timeout",
        event=TIMED_OUT,
        flags={"answer_timeout": 0.3},
    ),
    Row(
        id="upstream_timeout-slow-body",
        model="sim/json:gap=2000",
        status=504,
        type=API_ERROR,
        code="upstream_timeout",
        kind="upstream_timeout",
        event=TIMED_OUT,
        flags={"answer_timeout": 0.3},
    ),
    Row(
        id="stream_timeout",
        model="sim/stream:stall=0",
        clients=(STREAM_CLIENT,),
        status=504,
        type=API_ERROR,
        code="stream_timeout",
        kind="stream_timeout",
        event=TIMED_OUT,
        flags={"stream_timeout": 0.3},
    ),
    Row(
        id="upstream_disconnected-json",
        model="sim/json:drop=1",
        status=502,
        type=API_ERROR,
        code="upstream_disconnected",
        kind="upstream_disconnected",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_disconnected-stream",
        model="sim/stream:drop=0",
        clients=(STREAM_CLIENT,),
        status=502,
        type=API_ERROR,
        code="upstream_disconnected",
        kind="upstream_disconnected",
        event=UPSTREAM_FAILED,
    ),
    Row(
        id="upstream_malformed-badjson",
        model="sim/json:badjson=1",
        status=502,
        type=API_ERROR,
        code="upstream_malformed",
        kind="upstream_malformed",
        event=UPSTREAM_FAILED,
        should_retry_false=True,
    ),
    Row(
        id="upstream_malformed-badsse",
        model="sim/stream:badsse=0",
        clients=(STREAM_CLIENT,),
        status=502,
        type=API_ERROR,
        code="upstream_malformed",
        kind="upstream_malformed",
        event=UPSTREAM_FAILED,
        should_retry_false=True,
    ),
    Row(
        id="streaming_unsupported-answers-whole",
        model="sim/json",
        clients=(STREAM_CLIENT,),
        status=400,
        type=INVALID_REQUEST,
        code="streaming_unsupported",
        kind="streaming_unsupported",
        event=UPSTREAM_FAILED,
        flags={"fallback": False},
    ),
    Row(
        id="streaming_unsupported-rejects-stream",
        model="sim/reject",
        clients=(STREAM_CLIENT,),
        status=400,
        type=INVALID_REQUEST,
        code="streaming_unsupported",
        kind="streaming_unsupported",
        event=UPSTREAM_FAILED,
        flags={"fallback": False},
    ),
]

BEFORE_COMMIT_CASES = [
    pytest.param(row, client, id=f"{row.id}-{client}")
    for row in BEFORE_COMMIT_ROWS
    for client in row.clients
]


@pytest.fixture(name="closed_port")
def _closed_port() -> Iterator[int]:
    """A loopback port nobody listens on: bound (so nobody else takes it), never listening."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    try:
        yield sock.getsockname()[1]
    finally:
        sock.close()


def _gateway_for(row: Row, gateway_factory: GatewayFactory, closed_port: int) -> ServerThread:
    flags = dict(row.flags)
    if row.closed_upstream:
        flags["upstream_url"] = f"http://127.0.0.1:{closed_port}"
    return gateway_factory(**flags)


def _auth_headers(request_id: str) -> dict[str, str]:
    # The simulator's key: irrelevant in server key mode, the upstream key in per-request mode.
    return {"Authorization": f"Bearer {SIM_KEY}", "X-Request-ID": request_id}


@pytest.mark.parametrize(("row", "client"), BEFORE_COMMIT_CASES)
def test_errors_before_commit_answer_with_the_table_status(
    gateway_factory: GatewayFactory,
    log_capture: LogCapture,
    closed_port: int,
    row: Row,
    client: str,
) -> None:
    gateway = _gateway_for(row, gateway_factory, closed_port)
    rid = new_request_id(row.id)
    body = chat_body(row.model, stream=client == STREAM_CLIENT)
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post("/v1/chat/completions", json=body, headers=_auth_headers(rid))

    assert response.status_code == row.status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.headers["x-request-id"] == rid
    error = openai_error(response.json())
    assert (error["type"], error["code"]) == (row.type, row.code)
    assert SIM_KEY not in response.text
    assert response.headers.get("retry-after") == row.retry_after
    assert response.headers.get("x-should-retry") == ("false" if row.should_retry_false else None)

    line = wait_log_line(log_capture, rid)
    assert (line["status"], line["outcome"], line["committed"]) == (row.status, "errored", False)
    assert (line["error"], line["error_code"]) == (row.kind, row.code)
    assert line["trace"][-1]["event"] == row.event
    assert line["trace"][-1]["target"] == "errored"


@attrs.frozen(kw_only=True)
class CommittedRow:
    """A failure after the commit: one error event, no ``[DONE]``."""

    id: str
    model: str
    code: str
    kind: str
    event: str
    flags: dict[str, Any] = attrs.field(factory=dict)
    min_content_chars: int = 1  # the chunks relayed before the failure
    min_heartbeats: int = 0


AFTER_COMMIT_ROWS = [
    CommittedRow(
        id="stream_timeout",
        model="sim/stream:chunks=4:stall=2",
        code="stream_timeout",
        kind="stream_timeout",
        event=TIMED_OUT,
        flags={"stream_timeout": 0.3},
    ),
    CommittedRow(
        id="upstream_disconnected",
        model="sim/stream:drop=2",
        code="upstream_disconnected",
        kind="upstream_disconnected",
        event=UPSTREAM_FAILED,
    ),
    CommittedRow(
        id="upstream_malformed",
        model="sim/stream:badsse=2",
        code="upstream_malformed",
        kind="upstream_malformed",
        event=UPSTREAM_FAILED,
    ),
    CommittedRow(
        id="upstream_error",
        model="sim/stream:errevent=2",
        code="upstream_error",
        kind="upstream_error",
        event=UPSTREAM_FAILED,
    ),
    CommittedRow(
        id="upstream_error-slow-status",
        model="sim/json:delay=600:status=500",
        code="upstream_error",
        kind="upstream_error",
        event=UPSTREAM_FAILED,
        flags={"heartbeat_interval": 0.2},
        min_content_chars=0,
        min_heartbeats=1,
    ),
    CommittedRow(
        id="upstream_timeout-after-heartbeats",
        model="sim/json:delay=2000",
        code="upstream_timeout",
        kind="upstream_timeout",
        event=TIMED_OUT,
        flags={"heartbeat_interval": 0.2, "answer_timeout": 0.7},
        min_content_chars=0,
        min_heartbeats=1,
    ),
]


@pytest.mark.parametrize("row", AFTER_COMMIT_ROWS, ids=lambda row: row.id)
def test_errors_after_commit_arrive_as_one_error_event(
    gateway_factory: GatewayFactory, log_capture: LogCapture, row: CommittedRow
) -> None:
    gateway = gateway_factory(**row.flags)
    rid = new_request_id(row.id)
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            "/v1/chat/completions",
            json=chat_body(row.model, stream=True),
            headers={"X-Request-ID": rid},
        )

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    report = check_stream(response.content)
    assert report.done is False
    assert report.error is not None
    assert set(report.error) == {"message", "type", "param", "code"}
    assert report.error["code"] == row.code
    assert b"[DONE]" not in response.content
    assert len(report.content) >= row.min_content_chars
    assert report.comments >= row.min_heartbeats

    line = wait_log_line(log_capture, rid)
    assert (line["status"], line["outcome"], line["committed"]) == (200, "errored", True)
    assert (line["error"], line["error_code"]) == (row.kind, row.code)
    assert line["trace"][-1]["event"] == row.event
    assert line["trace"][-1]["target"] == "errored"
    assert line["heartbeats"] == report.comments


def test_errors_quick_upstream_error_keeps_its_status_with_heartbeats_on(
    gateway_factory: GatewayFactory, log_capture: LogCapture
) -> None:
    """The commit rule's other half: an error before the first tick is still an HTTP error."""
    gateway = gateway_factory(heartbeat_interval=0.2)
    rid = new_request_id("quick-error")
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            "/v1/chat/completions",
            json=chat_body("sim/json:status=500", stream=True),
            headers={"X-Request-ID": rid},
        )

    assert response.status_code == 502
    assert openai_error(response.json())["code"] == "upstream_error"
    line = wait_log_line(log_capture, rid)
    assert (line["status"], line["committed"], line["heartbeats"]) == (502, False, 0)
