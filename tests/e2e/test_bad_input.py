"""
Bad client input over real HTTP (contract §7, §8): every refusal is a 4xx in OpenAI's error
shape, never a 5xx, never HTML; checks run in the order 404/405 → 413 → 401 → 415 →
``invalid_json`` → ``invalid_value`` → ``unsupported_parameter``; and the gateway is unharmed.
"""

from __future__ import annotations

import json
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
    GatewayFactory,
    Simulator,
    chat_body,
    openai_error,
    raw_http_request,
    read_http_head,
)

MAX_BODY = 1000
CLIENT_KEY = "client-key-for-bad-input-81c2"
JSON_TYPE = {"Content-Type": "application/json"}
CHAT = "/v1/chat/completions"


@attrs.frozen(kw_only=True)
class Bad:
    """One bad request and the refusal it must get."""

    id: str
    status: int
    code: str
    param: str | None = None
    method: str = "POST"
    path: str = CHAT
    body: bytes = b""
    headers: dict[str, str] = attrs.field(factory=lambda: dict(JSON_TYPE))


def _json(value: Any) -> bytes:
    return json.dumps(value).encode()


def _with(**fields: Any) -> bytes:
    return _json({**chat_body("sim/json"), **fields})


BAD_REQUESTS = [
    Bad(id="invalid-json", status=400, code="invalid_json", body=b'{"model": "sim/json",'),
    Bad(id="not-utf8", status=400, code="invalid_json", body=b'{"model": "\xff"}'),
    Bad(id="json-array", status=400, code="invalid_json", body=_json([chat_body("sim/json")])),
    Bad(id="json-string", status=400, code="invalid_json", body=_json("hello")),
    Bad(id="empty-body", status=400, code="invalid_json", body=b""),
    Bad(
        id="wrong-content-type",
        status=415,
        code="unsupported_media_type",
        body=_with(),
        headers={"Content-Type": "text/plain"},
    ),
    Bad(
        id="form-content-type",
        status=415,
        code="unsupported_media_type",
        body=b"model=sim/json",
        headers={"Content-Type": "application/x-www-form-urlencoded"},
    ),
    Bad(id="no-content-type", status=415, code="unsupported_media_type", body=_with(), headers={}),
    Bad(
        id="missing-model",
        status=400,
        code="invalid_value",
        param="model",
        body=_json({"messages": [{"role": "user", "content": "hi"}]}),
    ),
    Bad(
        id="missing-messages",
        status=400,
        code="invalid_value",
        param="messages",
        body=_json({"model": "sim/json"}),
    ),
    Bad(
        id="empty-messages",
        status=400,
        code="invalid_value",
        param="messages",
        body=_with(messages=[]),
    ),
    Bad(
        id="unknown-role",
        status=400,
        code="invalid_value",
        param="messages[0].role",
        body=_with(messages=[{"role": "wizard", "content": "hi"}]),
    ),
    Bad(
        id="stream-as-string",
        status=400,
        code="invalid_value",
        param="stream",
        body=_with(stream="false"),
    ),
    Bad(
        id="temperature-as-string",
        status=400,
        code="invalid_value",
        param="temperature",
        body=_with(temperature="hot"),
    ),
    Bad(
        id="max-tokens-as-bool",
        status=400,
        code="invalid_value",
        param="max_tokens",
        body=_with(max_tokens=True),
    ),
    Bad(id="model-as-number", status=400, code="invalid_value", param="model", body=_with(model=5)),
    Bad(
        id="n-2",
        status=400,
        code="unsupported_parameter",
        param="n",
        body=_with(n=2),
    ),
    Bad(
        id="logprobs-true",
        status=400,
        code="unsupported_parameter",
        param="logprobs",
        body=_with(logprobs=True),
    ),
    Bad(
        id="custom-tools",
        status=400,
        code="unsupported_parameter",
        param="tools[0].type",
        body=_with(tools=[{"type": "custom", "custom": {"name": "f"}}]),
    ),
    Bad(
        id="over-max-body-size",
        status=413,
        code="request_too_large",
        body=_with(messages=[{"role": "user", "content": "x" * (2 * MAX_BODY)}]),
    ),
    Bad(id="unknown-path", status=404, code="not_found", method="GET", path="/v1/nowhere"),
    Bad(id="unknown-root-path", status=404, code="not_found", method="GET", path="/nowhere"),
    Bad(
        id="wrong-method-chat",
        status=405,
        code="method_not_allowed",
        method="GET",
        path=CHAT,
        headers={},
    ),
    Bad(
        id="wrong-method-models",
        status=405,
        code="method_not_allowed",
        method="POST",
        path="/v1/models",
        body=_with(),
    ),
]


@pytest.fixture(name="small_gateway")
def _small_gateway(gateway_factory: GatewayFactory) -> ServerThread:
    return gateway_factory(max_body_size=MAX_BODY)


def _send(
    gateway: ServerThread, bad: Bad, extra_headers: dict[str, str] | None = None
) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        return http.request(
            bad.method, bad.path, content=bad.body, headers={**bad.headers, **(extra_headers or {})}
        )


def _assert_refusal(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert "<html" not in response.text.lower()
    error = openai_error(response.json())
    assert error["code"] == code
    assert error["type"] == "invalid_request_error"
    return error


@pytest.mark.parametrize("bad", BAD_REQUESTS, ids=lambda bad: bad.id)
def test_bad_input_is_refused_with_an_openai_error(
    small_gateway: ServerThread, sim: Simulator, bad: Bad
) -> None:
    response = _send(small_gateway, bad)

    error = _assert_refusal(response, bad.status, bad.code)
    if bad.param is not None:
        assert error["param"] == bad.param
    assert sim.requests() == []  # nothing reached the upstream


def test_bad_input_content_length_over_the_limit_is_refused_before_the_body(
    small_gateway: ServerThread, sim: Simulator
) -> None:
    """Only the head is sent: the 413 must come without the gateway waiting for the body."""
    head = raw_http_request(
        small_gateway.port,
        "POST",
        CHAT,
        headers={**JSON_TYPE, "Content-Length": str(50 * MAX_BODY)},
    )
    with socket.create_connection(
        ("127.0.0.1", small_gateway.port), timeout=CLIENT_TIMEOUT
    ) as sock:
        sock.sendall(head)
        status, received = read_http_head(sock)
        body = _read_body(sock, received)

    assert status == 413
    assert openai_error(json.loads(body))["code"] == "request_too_large"
    assert sim.requests() == []


def _read_body(sock: socket.socket, received: bytes) -> bytes:
    """The rest of a response with a Content-Length, after its head was read into *received*."""
    head, _, body = received.partition(b"\r\n\r\n")
    lengths = [
        int(line.split(b":", 1)[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    ]
    assert len(lengths) == 1, head
    while len(body) < lengths[0]:
        data = sock.recv(65536)
        if not data:
            break
        body += data
    return body


def _chunks(total: int, size: int = 250) -> Iterator[bytes]:
    sent = 0
    prefix = b'{"model": "sim/json", "messages": [{"role": "user", "content": "'
    yield prefix
    sent += len(prefix)
    while sent < total:
        yield b"x" * size
        sent += size
    yield b'"}]}'


def test_bad_input_chunked_body_over_the_limit_is_refused(
    small_gateway: ServerThread, sim: Simulator
) -> None:
    with httpx.Client(base_url=small_gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(CHAT, content=_chunks(5 * MAX_BODY), headers=JSON_TYPE)

    _assert_refusal(response, 413, "request_too_large")
    assert sim.requests() == []


def test_bad_input_chunked_body_under_the_limit_is_served(small_gateway: ServerThread) -> None:
    with httpx.Client(base_url=small_gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.post(CHAT, content=_chunks(MAX_BODY // 2), headers=JSON_TYPE)

    assert response.status_code == 200, response.text


@pytest.fixture(name="guarded_gateway")
def _guarded_gateway(gateway_factory: GatewayFactory) -> ServerThread:
    return gateway_factory(max_body_size=MAX_BODY, client_keys=(CLIENT_KEY,))


ORDER_CASES = [
    pytest.param(
        Bad(id="", status=404, code="not_found", method="GET", path="/v1/nowhere"),
        id="unknown-path-before-key",
    ),
    pytest.param(
        Bad(id="", status=405, code="method_not_allowed", method="GET", path=CHAT, headers={}),
        id="wrong-method-before-key",
    ),
    pytest.param(
        Bad(id="", status=413, code="request_too_large", body=b"{" * (2 * MAX_BODY)),
        id="too-large-before-key",
    ),
    pytest.param(
        Bad(
            id="",
            status=401,
            code="invalid_api_key",
            body=b"not json",
            headers={"Content-Type": "text/plain"},
        ),
        id="key-before-content-type",
    ),
    pytest.param(
        Bad(id="", status=401, code="invalid_api_key", body=b"not json"),
        id="key-before-invalid-json",
    ),
]


@pytest.mark.parametrize("bad", ORDER_CASES)
def test_bad_input_checks_run_in_the_contract_order_without_a_key(
    guarded_gateway: ServerThread, bad: Bad
) -> None:
    _assert_refusal(_send(guarded_gateway, bad), bad.status, bad.code)


KEYED_ORDER_CASES = [
    pytest.param(
        Bad(
            id="",
            status=415,
            code="unsupported_media_type",
            body=b"not json",
            headers={"Content-Type": "text/plain"},
        ),
        id="content-type-before-invalid-json",
    ),
    pytest.param(
        Bad(id="", status=400, code="invalid_json", body=b'["model", "n"]'),
        id="invalid-json-before-values",
    ),
    pytest.param(
        Bad(id="", status=400, code="invalid_value", body=_json({"n": 2, "messages": []})),
        id="invalid-value-before-unsupported",
    ),
    pytest.param(
        Bad(id="", status=400, code="unsupported_parameter", body=_with(n=2, logprobs=True)),
        id="unsupported-parameter-last",
    ),
]


@pytest.mark.parametrize("bad", KEYED_ORDER_CASES)
def test_bad_input_checks_run_in_the_contract_order_with_a_key(
    guarded_gateway: ServerThread, bad: Bad
) -> None:
    response = _send(guarded_gateway, bad, {"Authorization": f"Bearer {CLIENT_KEY}"})

    _assert_refusal(response, bad.status, bad.code)


def test_bad_input_leaves_the_gateway_healthy(small_gateway: ServerThread, sim: Simulator) -> None:
    statuses = [_send(small_gateway, bad).status_code for bad in BAD_REQUESTS]
    assert all(400 <= status < 500 for status in statuses), statuses

    with httpx.Client(base_url=small_gateway.url, timeout=CLIENT_TIMEOUT) as http:
        assert http.get("/healthz").status_code == 200
        whole = http.post(CHAT, json=chat_body("sim/json"))
        streamed = http.post(CHAT, json=chat_body("sim/stream", stream=True))

    assert whole.status_code == 200, whole.text
    assert whole.json()["choices"][0]["message"]["content"]
    assert check_stream(streamed.content).done
    assert len(sim.chat_requests()) == 2
