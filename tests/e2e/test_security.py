"""
Security (contract §7, §8, §9): keys never leak, client keys guard every ``/v1/*`` endpoint,
and a client's request id is sanitised before it reaches a log line.

Keys: an upstream of this module's own answers every error by echoing the bearer token it was
sent, in the message, in ``error.param``, in an SSE error event, on every endpoint the gateway
calls, for both upstream kinds and both key modes. The gateway passes the upstream's message on
(§7) with the key removed: each test checks that the rest of the message arrived, so a
redaction cannot pass by dropping the whole message. Every captured log line and every response
(body and headers) is searched for every key.
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

from server.app import create_app
from server.settings import Settings
from tests.support.servers import ServerThread
from tests.support.sse_check import check_stream

from .conftest import (
    CLIENT_TIMEOUT,
    LogCapture,
    chat_body,
    new_request_id,
    openai_error,
    raw_http_request,
    read_http_head,
    start_gateway,
    wait_log_line,
)

SERVER_KEY = "sk-straico-server-0d5f7c91b2"
CLIENT_KEY = "ck-client-key-6a2e94f0"
PER_REQUEST_KEY = "sk-client-upstream-b81c33e7"
ALL_KEYS = (SERVER_KEY, CLIENT_KEY, PER_REQUEST_KEY)
ECHO_PREFIX = "Invalid API key: "
EVENT_PREFIX = "stream failed for key "
VALID_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


# --- an upstream that echoes the key --------------------------------------------------------


class EchoingUpstream:
    """
    A raw ASGI upstream (Straico ``/v2`` and OpenAI ``/v1`` paths) that echoes the bearer token.

    Chat model ids: ``echo/<status>`` answers that status with ``Invalid API key: <token>``
    (Straico's string envelope on ``/v2``, OpenAI's object on ``/v1``); ``echo-param/<status>``
    also puts the token in ``error.param``; ``echo-event`` streams one content chunk (to a
    ``stream: true`` call) then an error event whose message holds the token. The models list
    answers 401 and a model lookup 404, both echoing the token.
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                await send({"type": message["type"] + ".complete"})
                if message["type"] == "lifespan.shutdown":
                    return
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        token = ""
        for name, value in scope["headers"]:
            if name == b"authorization":
                token = value.decode("latin-1").partition(" ")[2]
        openai_shape = scope["path"].startswith("/v1/")
        if scope["path"].endswith("/chat/completions"):
            await self._chat(json.loads(body), token, openai_shape, send)
        elif scope["path"].endswith("/models"):
            await _json(send, 401, _error(ECHO_PREFIX + token, None, openai_shape))
        else:
            await _json(send, 404, _error(f"No such model for key {token}", None, openai_shape))

    async def _chat(self, request: Any, token: str, openai_shape: bool, send: Any) -> None:
        kind, _, status = str(request.get("model")).partition("/")
        if kind == "echo-event" and request.get("stream") is True:
            await _echo_event(send, token)
            return
        param = token if kind == "echo-param" else None
        code = int(status) if status.isdigit() else 500
        await _json(send, code, _error(ECHO_PREFIX + token, param, openai_shape))


def _error(message: str, param: str | None, openai_shape: bool) -> dict[str, Any]:
    if openai_shape:
        return {"error": {"message": message, "type": "invalid_request_error", "param": param}}
    return {"error": message, "success": False, **({"param": param} if param else {})}


async def _json(send: Any, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _echo_event(send: Any, token: str) -> None:
    chunk = {
        "id": "x",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "echo-event",
        "choices": [{"index": 0, "delta": {"content": "partial"}, "finish_reason": None}],
    }
    error = {"error": {"message": EVENT_PREFIX + token, "type": "server_error"}}
    headers = [(b"content-type", b"text/event-stream")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in (chunk, error):
        data = b"data: " + json.dumps(event).encode() + b"\n\n"
        await send({"type": "http.response.body", "body": data, "more_body": True})
    await send({"type": "http.response.body", "body": b""})


@pytest.fixture(name="echoing_upstream", scope="module")
def _echoing_upstream() -> Iterator[ServerThread]:
    with ServerThread(EchoingUpstream(), graceful_timeout=0.5) as server:
        yield server


@attrs.frozen
class Mode:
    """A gateway set-up: upstream kind and keys, and what the client sends."""

    id: str
    flags: dict[str, Any]
    client_token: str
    upstream_token: str  # what the upstream receives, and echoes


MODES = [
    Mode("straico-server-key", {"upstream_key": SERVER_KEY}, "ignored", SERVER_KEY),
    Mode(
        "straico-client-keys",
        {"upstream_key": SERVER_KEY, "client_keys": (CLIENT_KEY,)},
        CLIENT_KEY,
        SERVER_KEY,
    ),
    Mode("straico-per-request", {"upstream_key": None}, PER_REQUEST_KEY, PER_REQUEST_KEY),
    Mode(
        "openai-server-key",
        {"upstream_key": SERVER_KEY, "upstream_kind": "openai"},
        "x",
        SERVER_KEY,
    ),
    Mode(
        "openai-per-request",
        {"upstream_key": None, "upstream_kind": "openai"},
        PER_REQUEST_KEY,
        PER_REQUEST_KEY,
    ),
]


@pytest.fixture(name="gateways", scope="module")
def _gateways(
    echoing_upstream: ServerThread, log_capture: LogCapture
) -> Iterator[dict[str, ServerThread]]:
    started: dict[str, ServerThread] = {}
    for mode in MODES:
        url = echoing_upstream.url + ("/v1" if mode.flags.get("upstream_kind") == "openai" else "")
        started[mode.id] = start_gateway(url, heartbeat_interval=10.0, **mode.flags)
    yield started
    for gateway in started.values():
        gateway.stop()


def _assert_no_key(text: str) -> None:
    for key in ALL_KEYS:
        assert key not in text


def _assert_no_key_logged(log_capture: LogCapture) -> None:
    for line in log_capture.lines:
        _assert_no_key(json.dumps(line))


def _headers(mode: Mode, request_id: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {mode.client_token}", "X-Request-ID": request_id}


ERROR_STATUSES = [400, 401, 403, 404, 422, 429, 500, 503]
ECHO_CASES = [
    pytest.param(
        mode,
        f"{kind}/{status}",
        stream,
        id=f"{mode.id}-{kind}-{status}-{'stream' if stream else 'json'}",
    )
    for mode in MODES
    for kind, statuses in (("echo", ERROR_STATUSES), ("echo-param", [400, 422]))
    for status in statuses
    for stream in (True, False)
]


@pytest.mark.parametrize(("mode", "model", "stream"), ECHO_CASES)
def test_security_upstream_error_echoing_the_key_is_passed_on_without_it(
    gateways: dict[str, ServerThread],
    log_capture: LogCapture,
    mode: Mode,
    model: str,
    stream: bool,
) -> None:
    rid = new_request_id("echo")
    with httpx.Client(base_url=gateways[mode.id].url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            "/v1/chat/completions",
            json=chat_body(model, stream=stream),
            headers=_headers(mode, rid),
        )

    assert response.status_code >= 400
    error = openai_error(response.json())
    assert ECHO_PREFIX.strip() in error["message"]  # the upstream's message was passed on
    _assert_no_key(response.text)
    _assert_no_key(json.dumps(dict(response.headers)))
    wait_log_line(log_capture, rid)
    _assert_no_key_logged(log_capture)


@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.id)
def test_security_error_event_echoing_the_key_is_passed_on_without_it(
    gateways: dict[str, ServerThread], log_capture: LogCapture, mode: Mode
) -> None:
    rid = new_request_id("echo-event")
    with httpx.Client(base_url=gateways[mode.id].url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(
            "/v1/chat/completions",
            json=chat_body("echo-event", stream=True),
            headers=_headers(mode, rid),
        )

    assert response.status_code == 200
    report = check_stream(response.content)
    assert report.content == "partial"
    assert report.error is not None and EVENT_PREFIX.strip() in report.error["message"]
    _assert_no_key(response.text)
    wait_log_line(log_capture, rid)
    _assert_no_key_logged(log_capture)


@pytest.mark.parametrize("path", ["/v1/models", "/v1/models/some%2Fmodel"], ids=["list", "one"])
@pytest.mark.parametrize("mode", MODES, ids=lambda mode: mode.id)
def test_security_models_errors_echoing_the_key_never_show_it(
    gateways: dict[str, ServerThread], log_capture: LogCapture, mode: Mode, path: str
) -> None:
    rid = new_request_id("echo-models")
    with httpx.Client(base_url=gateways[mode.id].url, timeout=CLIENT_TIMEOUT) as http:
        response = http.get(path, headers=_headers(mode, rid))

    assert response.status_code >= 400
    openai_error(response.json())
    _assert_no_key(response.text)
    _assert_no_key(json.dumps(dict(response.headers)))
    wait_log_line(log_capture, rid)
    _assert_no_key_logged(log_capture)


# --- client keys on every /v1 endpoint ------------------------------------------------------


def _v1_routes() -> list[tuple[str, str]]:
    """Every (method, path) the gateway's app serves under /v1, path parameters filled in."""
    settings = Settings.resolve(
        {"upstream_url": "http://127.0.0.1:9", "upstream_key": SERVER_KEY}, env={}, file=None
    )
    app = create_app(settings)  # never served: its routes are every gateway's routes
    routes: list[tuple[str, str]] = []
    for rule in app.url_map.iter_rules():
        if not rule.rule.startswith("/v1/"):
            continue
        path = re.sub(r"<[^>]+>", "sim%2Fjson", rule.rule)
        methods = (rule.methods or set()) - {"HEAD", "OPTIONS"}
        routes.extend((method, path) for method in sorted(methods))
    return routes


def test_security_client_key_is_required_on_every_v1_route(
    gateways: dict[str, ServerThread],
) -> None:
    gateway = gateways["straico-client-keys"]
    routes = _v1_routes()
    assert ("POST", "/v1/chat/completions") in routes and len(routes) >= 3
    refused: list[tuple[str, str, int]] = []
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        for method, path in routes:
            for headers in ({}, {"Authorization": "Bearer not-a-client-key"}):
                response = http.request(method, path, json=chat_body("echo/500"), headers=headers)
                refused.append((method, path, response.status_code))
                assert openai_error(response.json())["code"] == "invalid_api_key"
    assert {status for _, _, status in refused} == {401}


# --- request ids ----------------------------------------------------------------------------

#: Each is appended to a fresh valid id, so a line break cut by the HTTP layer leaves a prefix
#: no other request has.
ODD_REQUEST_ID_TAILS = {
    "bare-newline": b"\nforged: 1",
    "crlf-injection": b"\r\nX-Forged: 1",
    "non-ascii-utf8": "caf\u00e9-\u00fc\u00df".encode(),
    "right-to-left-override": "\u202egpj.exe".encode(),
    "emoji": "\U0001f600".encode(),
    "very-long": b"a" * 8000,
    "json-breaking": b'","outcome":"done',
    "control-character": b"\x1b[31mred",
    "nul": b"\x00def",
}


def _raw_chat(port: int, request_id: bytes) -> tuple[int, bytes]:
    body = json.dumps(chat_body("echo/500")).encode()
    head = raw_http_request(port, "POST", "/v1/chat/completions", body=b"")
    # raw_http_request builds text headers; the odd value goes in as raw bytes
    lines = head.rstrip(b"\r\n").split(b"\r\n")
    lines += [
        b"Content-Type: application/json",
        b"Authorization: Bearer " + PER_REQUEST_KEY.encode(),
        f"Content-Length: {len(body)}".encode(),
        b"Connection: close",
        b"X-Request-ID: " + request_id,
    ]
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT) as sock:
        sock.sendall(b"\r\n".join(lines) + b"\r\n\r\n" + body)
        status, received = read_http_head(sock)
        while True:
            data = sock.recv(65536)
            if not data:
                break
            received += data
    return status, received


@pytest.mark.parametrize("tail", ODD_REQUEST_ID_TAILS.values(), ids=ODD_REQUEST_ID_TAILS)
def test_security_odd_request_ids_are_replaced_before_logging(
    gateways: dict[str, ServerThread], log_capture: LogCapture, tail: bytes
) -> None:
    gateway = gateways["straico-per-request"]
    prefix = new_request_id("odd")
    given = prefix.encode() + tail
    before = len(log_capture.lines)
    status, received = _raw_chat(gateway.port, given)

    head = received.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    echoed = re.search(r"(?im)^x-request-id: (.*)$", head)
    if echoed is None:
        # refused by the HTTP layer before the gateway saw it: nothing was logged for it
        assert status == 400
        assert [line for line in log_capture.lines[before:] if line.get("event") == "request"] == []
        return
    kept = echoed.group(1).strip()
    assert VALID_REQUEST_ID.fullmatch(kept)
    # a fresh id, or the id before a line break the HTTP layer took as the header's end
    assert kept == prefix or not kept.startswith("odd-")
    assert wait_log_line(log_capture, kept)["request_id"] == kept
    for line in log_capture.lines[before:]:
        assert "forged" not in json.dumps(line).lower()
        assert line.get("request_id") is None or VALID_REQUEST_ID.fullmatch(line["request_id"])
