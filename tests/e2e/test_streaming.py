"""
The stream a client gets (contract §5): heartbeats, pass-through order, headers, usage, one
identity, the replay's deltas, and raw bytes as ``curl -N`` receives them.

Every streamed response read here goes through ``check_stream``, the SSE conformance checker.
"""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import time
from typing import Any

import httpx
import pytest

from server.simulator.answers import answer_text, split_into_chunks
from server.simulator.grammar import parse_model_id
from tests.support.servers import ServerThread
from tests.support.sse_check import StreamReport, check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    FAKE_UPSTREAM_MODEL,
    FAKE_UPSTREAM_PIECES,
    GatewayFactory,
    LogCapture,
    chat_body,
    new_request_id,
    wait_log_line,
)

CHAT_ID = re.compile(r"chatcmpl-[A-Za-z0-9]{24}")
PROMPT = "tell me"


def _stream(gateway: ServerThread, body: dict[str, object], rid: str) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        return http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": rid})


def _whole_answer(gateway: ServerThread, model: str) -> str:
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post("/v1/chat/completions", json=chat_body(model, content=PROMPT))
    assert response.status_code == 200, response.text
    content: str = response.json()["choices"][0]["message"]["content"]
    return content


def _content_deltas(report: StreamReport) -> list[str]:
    """The non-empty content deltas, in order (the role chunk's empty content excluded)."""
    return [
        choice["delta"]["content"]
        for event in report.events
        for choice in event["choices"]
        if choice["delta"].get("content")
    ]


def _has_content(block: str) -> bool:
    """Whether an SSE event block is a chunk with non-empty content."""
    if not block.startswith("data: {"):
        return False
    chunk = json.loads(block.removeprefix("data: "))
    return any(choice["delta"].get("content") for choice in chunk.get("choices") or ())


def test_streaming_heartbeats_keep_a_client_alive_while_the_upstream_is_slow(
    gateway_factory: GatewayFactory, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(heartbeat_interval=0.2)
    model = "sim/json:delay=1000"
    rid = new_request_id("heartbeats")
    response = _stream(gateway, chat_body(model, stream=True), rid)

    assert response.status_code == 200
    assert response.headers["x-gateway-stream-mode"] == "detecting"  # committed by the first tick
    report = check_stream(response.content)
    assert report.comments >= 2
    blocks = response.content.decode().split("\n\n")
    first_content = next(i for i, block in enumerate(blocks) if _has_content(block))
    assert blocks[:first_content].count(": keep-alive") == report.comments
    assert report.content == _whole_answer(gateway, model)
    line = wait_log_line(log_capture, rid)
    assert line["heartbeats"] == report.comments
    assert line["mode"] == "fallback"


def test_streaming_chunk_heartbeats_are_empty_content_chunks(
    gateway_factory: GatewayFactory, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(heartbeat_interval=0.2, heartbeat_style="chunk")
    rid = new_request_id("chunk-heartbeats")
    response = _stream(gateway, chat_body("sim/json:delay=1000", stream=True), rid)

    report = check_stream(response.content)
    assert report.comments == 0
    assert report.heartbeat_chunks >= 2
    assert b": keep-alive" not in response.content
    line = wait_log_line(log_capture, rid)
    assert line["heartbeats"] == report.heartbeat_chunks


def test_streaming_relays_chunks_before_the_upstream_finishes(gateway: ServerThread) -> None:
    """The upstream stalls after two content chunks and never ends; both reach the client."""
    model = "sim/stream:chunks=5:stall=2"
    simulated = parse_model_id(model)
    assert simulated is not None
    text = answer_text(simulated, model, [{"role": "user", "content": PROMPT}])
    received = b""
    with (
        httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http,
        http.stream("POST", "/v1/chat/completions", json=chat_body(model, stream=True)) as response,
    ):
        assert response.headers["x-gateway-stream-mode"] == "stream"
        for data in response.iter_raw():
            received += data
            if len(check_stream(received, partial=True).events) >= 3:
                break

    report = check_stream(received, partial=True)
    assert _content_deltas(report) == split_into_chunks(text, 5)[:2]
    assert report.ended is False


@pytest.mark.parametrize(
    ("model", "mode"),
    [("sim/stream", "stream"), ("sim/json", "fallback")],
    ids=["pass-through", "fallback"],
)
def test_streaming_sends_the_sse_headers(gateway: ServerThread, model: str, mode: str) -> None:
    rid = new_request_id("headers")
    response = _stream(gateway, chat_body(model, stream=True), rid)

    assert response.status_code == 200
    assert response.headers["content-type"] == "text/event-stream; charset=utf-8"
    assert response.headers["cache-control"] == "no-cache"
    assert response.headers["x-accel-buffering"] == "no"
    assert response.headers["x-gateway-stream-mode"] == mode
    assert response.headers["x-request-id"] == rid
    check_stream(response.content)


@pytest.mark.parametrize(
    "model", ["sim/stream", "sim/json", "sim/reject"], ids=["stream", "json", "reject"]
)
@pytest.mark.parametrize(
    "stream_options",
    [None, {"include_usage": False}, {"include_usage": True}],
    ids=["no-options", "usage-false", "usage-true"],
)
def test_streaming_usage_chunk_only_when_asked(
    gateway: ServerThread, model: str, stream_options: dict[str, bool] | None
) -> None:
    include_usage = bool(stream_options and stream_options["include_usage"])
    extra: dict[str, Any] = {} if stream_options is None else {"stream_options": stream_options}
    response = _stream(gateway, chat_body(model, stream=True, **extra), new_request_id("usage"))

    report = check_stream(response.content, include_usage=include_usage)
    assert report.saw_usage_chunk is include_usage
    if include_usage:
        assert report.usage is not None and report.usage["total_tokens"] > 0
    assert sum(1 for event in report.events if event.get("usage") is not None) == int(include_usage)


@pytest.mark.parametrize("stream", [True, False], ids=["stream-client", "json-client"])
def test_streaming_one_identity_whatever_the_upstream_names(
    gateway_factory: GatewayFactory,
    openai_upstream: ServerThread,
    log_capture: LogCapture,
    stream: bool,
) -> None:
    gateway = gateway_factory(upstream_kind="openai", upstream_url=f"{openai_upstream.url}/v1")
    requested = "client-requested-model"
    rid = new_request_id("identity")
    body = chat_body(requested, stream=stream, stream_options={"include_usage": True})
    if not stream:
        body.pop("stream_options")
    started = int(time.time())
    response = _stream(gateway, body, rid)
    ended = int(time.time())

    assert response.status_code == 200, response.text
    if stream:
        report = check_stream(response.content, include_usage=True)
        assert {e["id"] for e in report.events} == {report.id}
        assert {e["created"] for e in report.events} == {report.created}
        assert {e["model"] for e in report.events} == {requested}
        assert report.content == "".join(FAKE_UPSTREAM_PIECES)
        chat_id, created = report.id, report.created
    else:
        completion = response.json()
        assert completion["model"] == requested
        chat_id, created = completion["id"], completion["created"]
    assert CHAT_ID.fullmatch(str(chat_id))
    assert isinstance(created, int)
    assert started <= created <= ended  # the request's start, not the upstream's value (1)
    line = wait_log_line(log_capture, rid)
    assert (line["model"], line["upstream_model"]) == (requested, FAKE_UPSTREAM_MODEL)


def test_streaming_identity_differs_between_requests(gateway: ServerThread) -> None:
    first = check_stream(_stream(gateway, chat_body("sim/stream", stream=True), "a-1").content)
    second = check_stream(_stream(gateway, chat_body("sim/stream", stream=True), "a-2").content)

    assert first.id != second.id


@pytest.mark.parametrize("max_chars", [10, 24])
def test_streaming_replay_splits_a_long_answer_into_short_deltas(
    gateway_factory: GatewayFactory, max_chars: int
) -> None:
    gateway = gateway_factory(replay_chunk_chars=max_chars)
    model = "sim/json:words=80"
    expected = _whole_answer(gateway, model)
    response = _stream(gateway, chat_body(model, stream=True, content=PROMPT), "replay")

    report = check_stream(response.content)
    deltas = _content_deltas(report)
    assert "".join(deltas) == expected
    assert len(deltas) >= len(expected) // max_chars
    for delta in deltas:
        assert len(delta) <= max_chars or len(delta.split()) == 1, delta


def test_streaming_replay_keeps_a_long_word_whole(gateway_factory: GatewayFactory) -> None:
    long_word = "Pneumonoultramicroscopicsilicovolcanoconiosis"
    text = f"A short start, then {long_word} and a short end."
    encoded = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
    gateway = gateway_factory(replay_chunk_chars=10)
    response = _stream(gateway, chat_body(f"sim/json:text={encoded}", stream=True), "long-word")

    deltas = _content_deltas(check_stream(response.content))
    assert "".join(deltas) == text
    assert [d for d in deltas if len(d) > 10] == [f"{long_word} "]


@pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")
@pytest.mark.parametrize("model", ["sim/stream:words=30:chunks=6", "sim/json:words=30"])
def test_streaming_curl_receives_a_conforming_stream(gateway: ServerThread, model: str) -> None:
    expected = _whole_answer(gateway, model)
    body = chat_body(model, stream=True, stream_options={"include_usage": True})
    completed = subprocess.run(
        [
            "curl",
            "-sS",
            "-N",
            "--max-time",
            "10",
            "-H",
            "Content-Type: application/json",
            "-d",
            json.dumps(body),
            f"{gateway.url}/v1/chat/completions",
        ],
        capture_output=True,
        timeout=15,
        check=True,
    )

    report = check_stream(completed.stdout, include_usage=True)
    assert report.content == expected
    assert report.finish_reason == "stop"
