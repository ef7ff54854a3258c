"""
The request log line (contract §11): one ``request`` line per finished ``/v1`` request, every
key present, and values that tell the request's story for a pass-through, a fallback, a
rejected stream flag and a rejected bad request; ``X-Request-ID`` handling (§8); ``--log-content``.
"""

from __future__ import annotations

import re
import time
from typing import Any

import httpx
import pytest

from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    GatewayFactory,
    LogCapture,
    chat_body,
    new_request_id,
    wait_log_line,
)

LOG_LINE_KEYS = {
    "request_id",
    "method",
    "path",
    "status",
    "outcome",
    "error",
    "error_code",
    "model",
    "upstream_model",
    "upstream",
    "client_stream",
    "mode",
    "upstream_calls",
    "capability",
    "committed",
    "ttfb_ms",
    "duration_ms",
    "chunks_out",
    "heartbeats",
    "finish_reason",
    "upstream_finish_reason",
    "usage",
    "price",
    "words",
    "ignored_fields",
    "trace",
}
TRACE_ENTRY_KEYS = {"source", "event", "target", "at_ms"}
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
PROMPT = "tell me"  # two words: the simulator counts them as the prompt's words


def _post(
    gateway: ServerThread, body: dict[str, Any] | bytes, rid: str | None = None
) -> httpx.Response:
    headers = {"X-Request-ID": rid} if rid is not None else {}
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        if isinstance(body, bytes):
            headers["Content-Type"] = "application/json"
            return http.post("/v1/chat/completions", content=body, headers=headers)
        return http.post("/v1/chat/completions", json=body, headers=headers)


def _check_keys(line: dict[str, Any]) -> None:
    missing = LOG_LINE_KEYS - set(line)
    assert missing == set(), f"missing keys {sorted(missing)}"
    assert line["event"] == "request"
    assert isinstance(line["trace"], list)
    previous = 0
    for entry in line["trace"]:
        assert set(entry) == TRACE_ENTRY_KEYS
        assert isinstance(entry["at_ms"], int) and not isinstance(entry["at_ms"], bool)
        assert entry["at_ms"] >= previous
        previous = entry["at_ms"]
    for source, target in zip(line["trace"], line["trace"][1:], strict=False):
        assert source["target"] == target["source"]


def _events(line: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(e["source"], e["event"], e["target"]) for e in line["trace"]]


def _check_timings(line: dict[str, Any]) -> None:
    assert isinstance(line["ttfb_ms"], int | float) and line["ttfb_ms"] >= 0
    assert isinstance(line["duration_ms"], int | float)
    assert line["duration_ms"] >= line["ttfb_ms"]


def test_log_line_pass_through(
    gateway: ServerThread, simulator: ServerThread, log_capture: LogCapture
) -> None:
    model = "sim/stream:chunks=5"
    rid = new_request_id("pass-through")
    body = chat_body(
        model,
        stream=True,
        content=PROMPT,
        stream_options={"include_usage": True},
        user="someone",
        seed=7,
    )
    response = _post(gateway, body, rid)
    report = check_stream(response.content, include_usage=True)

    line = wait_log_line(log_capture, rid)
    _check_keys(line)
    _check_timings(line)
    assert {k: line[k] for k in ("request_id", "method", "path", "status")} == {
        "request_id": rid,
        "method": "POST",
        "path": "/v1/chat/completions",
        "status": 200,
    }
    assert {
        k: line[k]
        for k in (
            "outcome",
            "error",
            "error_code",
            "model",
            "upstream_model",
            "client_stream",
            "mode",
            "upstream_calls",
            "capability",
            "committed",
            "heartbeats",
            "finish_reason",
            "upstream_finish_reason",
            "ignored_fields",
        )
    } == {
        "outcome": "done",
        "error": None,
        "error_code": None,
        "model": model,
        "upstream_model": model,
        "client_stream": True,
        "mode": "stream",
        "upstream_calls": 1,
        "capability": "unknown",
        "committed": True,
        "heartbeats": 0,
        "finish_reason": "stop",
        "upstream_finish_reason": "stop",
        "ignored_fields": ["seed", "user"],
    }
    assert simulator.url in line["upstream"]
    assert line["chunks_out"] == len(report.events)  # role, 5 contents, finish, usage
    assert line["usage"] == report.usage
    assert _events(line) == [
        ("detecting", "upstream_streamed", "streaming"),
        ("streaming", "upstream_finished", "draining"),
        ("draining", "drained", "done"),
    ]

    again = new_request_id("pass-through-again")
    _post(gateway, chat_body(model, stream=True), again)
    assert wait_log_line(log_capture, again)["capability"] == "streams"


def test_log_line_fallback(gateway: ServerThread, log_capture: LogCapture) -> None:
    model = "sim/json"
    rid = new_request_id("fallback")
    response = _post(gateway, chat_body(model, stream=True, content=PROMPT), rid)
    report = check_stream(response.content)

    line = wait_log_line(log_capture, rid)
    _check_keys(line)
    _check_timings(line)
    assert (line["status"], line["outcome"], line["mode"]) == (200, "done", "fallback")
    assert (line["upstream_calls"], line["capability"], line["committed"]) == (1, "unknown", True)
    assert (line["model"], line["upstream_model"]) == (model, model)
    assert (line["finish_reason"], line["upstream_finish_reason"]) == ("stop", "stop")
    assert line["chunks_out"] == len(report.events)
    assert line["usage"]["total_tokens"] > 0
    assert line["words"] == {"input": 2, "output": 12, "total": 14}
    assert line["price"] == pytest.approx({"input": 0.004, "output": 0.024, "total": 0.028})
    assert line["ignored_fields"] == []
    assert _events(line) == [
        ("detecting", "upstream_answered_whole", "falling_back"),
        ("falling_back", "answer_received", "draining"),
        ("draining", "drained", "done"),
    ]

    again = new_request_id("fallback-again")
    _post(gateway, chat_body(model, stream=True), again)
    assert wait_log_line(log_capture, again)["capability"] == "answers_whole"


def test_log_line_non_streaming_client(gateway: ServerThread, log_capture: LogCapture) -> None:
    rid = new_request_id("json-client")
    response = _post(gateway, chat_body("sim/stream"), rid)
    assert response.status_code == 200

    line = wait_log_line(log_capture, rid)
    _check_keys(line)
    assert (line["client_stream"], line["mode"], line["status"]) == (False, "json", 200)
    assert (line["heartbeats"], line["chunks_out"]) == (0, 0)
    assert _events(line) == [
        ("detecting", "stream_declined", "falling_back"),
        ("falling_back", "answer_received", "draining"),
        ("draining", "drained", "done"),
    ]


def test_log_line_rejected_stream_flag_then_declined(
    gateway: ServerThread, log_capture: LogCapture
) -> None:
    model = "sim/reject"
    first, second = new_request_id("reject-1"), new_request_id("reject-2")
    check_stream(_post(gateway, chat_body(model, stream=True), first).content)
    check_stream(_post(gateway, chat_body(model, stream=True), second).content)

    line = wait_log_line(log_capture, first)
    _check_keys(line)
    assert (line["upstream_calls"], line["capability"], line["mode"]) == (2, "unknown", "fallback")
    assert (line["outcome"], line["error"]) == ("done", None)
    assert _events(line) == [
        ("detecting", "stream_rejected", "falling_back"),
        ("falling_back", "answer_received", "draining"),
        ("draining", "drained", "done"),
    ]
    line = wait_log_line(log_capture, second)
    _check_keys(line)
    assert (line["upstream_calls"], line["capability"], line["mode"]) == (
        1,
        "rejects_stream",
        "fallback",
    )
    assert _events(line)[0] == ("detecting", "stream_declined", "falling_back")


def test_log_line_rejected_bad_request(gateway: ServerThread, log_capture: LogCapture) -> None:
    rid = new_request_id("bad-request")
    response = _post(gateway, b"{not json", rid)
    assert response.status_code == 400

    line = wait_log_line(log_capture, rid)
    _check_keys(line)
    assert {k: line[k] for k in ("status", "outcome", "error", "error_code", "trace")} == {
        "status": 400,
        "outcome": "rejected",
        "error": "invalid_request",
        "error_code": "invalid_json",
        "trace": [],
    }
    assert (line["upstream_calls"], line["committed"]) == (0, False)


def test_log_line_models_request(gateway: ServerThread, log_capture: LogCapture) -> None:
    rid = new_request_id("models")
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        assert http.get("/v1/models", headers={"X-Request-ID": rid}).status_code == 200

    line = wait_log_line(log_capture, rid)
    _check_keys(line)
    assert (line["path"], line["status"], line["outcome"]) == ("/v1/models", 200, "done")


def test_log_line_one_per_v1_request_and_none_for_healthz(
    gateway: ServerThread, log_capture: LogCapture
) -> None:
    rids = [new_request_id(f"count-{i}") for i in range(3)]
    health = new_request_id("health")
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        # /healthz first: a line of its own would be written before the later lines
        assert http.get("/healthz", headers={"X-Request-ID": health}).status_code == 200
        http.post(
            "/v1/chat/completions", json=chat_body("sim/json"), headers={"X-Request-ID": rids[0]}
        )
        http.post(
            "/v1/chat/completions",
            json=chat_body("sim/stream", stream=True),
            headers={"X-Request-ID": rids[1]},
        )
        http.get("/v1/nowhere", headers={"X-Request-ID": rids[2]})

    for rid in rids:
        wait_log_line(log_capture, rid)  # exactly one each
    assert [line for line in log_capture.requests() if line.get("request_id") == health] == []


@pytest.mark.parametrize(
    "given",
    ["abc", "A.b_c:d-9", "x" * 128],
    ids=["short", "every-allowed-character", "128-characters"],
)
def test_log_line_valid_request_id_is_kept_and_echoed(
    gateway: ServerThread, log_capture: LogCapture, given: str
) -> None:
    rid = f"{given}-{time.monotonic_ns()}"[:128]
    response = _post(gateway, chat_body("sim/json"), rid)
    kept = response.headers["x-request-id"]

    assert kept == rid
    assert wait_log_line(log_capture, kept)["request_id"] == kept


@pytest.mark.parametrize(
    "given",
    ["x" * 200, "x" * 129, "has space", "tab\tinside", "slash/inside", "semi;colon", ""],
    ids=["200-chars", "129-chars", "space", "tab", "slash", "semicolon", "empty"],
)
def test_log_line_invalid_request_id_is_replaced(
    gateway: ServerThread, log_capture: LogCapture, given: str
) -> None:
    response = _post(gateway, chat_body("sim/json"), given)
    fresh = response.headers["x-request-id"]

    assert fresh != given
    assert VALID_REQUEST_ID.fullmatch(fresh)
    assert wait_log_line(log_capture, fresh)["request_id"] == fresh


def test_log_line_request_id_is_echoed_on_every_answer(gateway: ServerThread) -> None:
    rid = new_request_id("echo")
    headers = {"X-Request-ID": rid}
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        answers = [
            http.post("/v1/chat/completions", json=chat_body("sim/json"), headers=headers),
            http.post(
                "/v1/chat/completions", json=chat_body("sim/json", stream=True), headers=headers
            ),
            http.post("/v1/chat/completions", json={"model": "sim/json"}, headers=headers),
            http.post(
                "/v1/chat/completions", json=chat_body("sim/json:status=503"), headers=headers
            ),
            http.get("/v1/models", headers=headers),
            http.get("/v1/models/sim%2Fjson", headers=headers),
            http.get("/v1/nowhere", headers=headers),
            http.get("/v1/chat/completions", headers=headers),
            http.get("/healthz", headers=headers),
        ]

    assert [a.headers.get("x-request-id") for a in answers] == [rid] * len(answers)


def test_log_line_content_logged_only_with_log_content(
    gateway_factory: GatewayFactory, log_capture: LogCapture
) -> None:
    plain, with_content = gateway_factory(), gateway_factory(log_content=True)
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": PROMPT}]
    ids: dict[str, str] = {}
    answers: dict[str, str] = {}
    for name, gateway in (("plain", plain), ("content", with_content)):
        for model, stream in (("sim/stream", True), ("sim/json", False)):
            rid = new_request_id(f"{name}-{model.replace('/', '-')}")
            body = {"model": model, "messages": messages, "stream": stream}
            response = _post(gateway, body, rid)
            answers[rid] = (
                check_stream(response.content).content
                if stream
                else response.json()["choices"][0]["message"]["content"]
            )
            ids[rid] = name

    for rid, name in ids.items():
        line = wait_log_line(log_capture, rid)
        if name == "plain":
            assert "messages" not in line and "answer" not in line
        else:
            assert line["messages"] == messages
            assert line["answer"] == answers[rid]
