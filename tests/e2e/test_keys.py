"""
Keys (contract §9): server key mode, per-request mode, client keys, and keys never leaking.

The simulator records ``key_sent`` (the right key arrived, never the key itself), which shows
which key the gateway sent upstream. Every captured log line is searched for every key.
"""

from __future__ import annotations

import json

import httpx
import pytest

from tests.support.servers import ServerThread

from .conftest import (
    CLIENT_TIMEOUT,
    SIM_KEY,
    GatewayFactory,
    LogCapture,
    Simulator,
    chat_body,
    new_request_id,
    openai_error,
    wait_log_line,
)

CLIENT_KEYS = ("client-key-one-7f3a91", "client-key-two-c4e802")
WRONG_KEY = "wrong-key-5d17e3"
MODEL = "sim/json"

V1_ENDPOINTS = [
    pytest.param("POST", "/v1/chat/completions", id="chat"),
    pytest.param("GET", "/v1/models", id="models"),
    pytest.param("GET", "/v1/models/sim%2Fjson", id="model"),
]


def _bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


def _call(gateway: ServerThread, method: str, path: str, headers: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        if method == "POST":
            return http.post(path, json=chat_body(MODEL), headers=headers)
        return http.request(method, path, headers=headers)


def _assert_no_key_logged(log_capture: LogCapture, keys: tuple[str, ...]) -> None:
    for line in log_capture.lines:
        text = json.dumps(line)
        for key in keys:
            assert key not in text, f"a key in the log line {line.get('event')!r}"


@pytest.mark.parametrize(
    "client_headers",
    [
        pytest.param({}, id="no-authorization"),
        pytest.param(_bearer(WRONG_KEY), id="any-bearer"),
    ],
)
def test_keys_server_key_mode_sends_the_server_key_whatever_the_client_sends(
    gateway: ServerThread, sim: Simulator, log_capture: LogCapture, client_headers: dict[str, str]
) -> None:
    response = _call(gateway, "POST", "/v1/chat/completions", client_headers)

    assert response.status_code == 200, response.text
    assert [r["key_sent"] for r in sim.chat_requests(MODEL)] == [True]
    assert WRONG_KEY not in response.text
    _assert_no_key_logged(log_capture, (SIM_KEY, WRONG_KEY))


def test_keys_per_request_mode_sends_the_client_bearer_upstream(
    gateway_factory: GatewayFactory, sim: Simulator, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(upstream_key=None)
    response = _call(gateway, "POST", "/v1/chat/completions", _bearer(SIM_KEY))

    assert response.status_code == 200, response.text
    assert [r["key_sent"] for r in sim.chat_requests(MODEL)] == [True]
    assert SIM_KEY not in response.text
    _assert_no_key_logged(log_capture, (SIM_KEY,))


@pytest.mark.parametrize(
    "client_headers",
    [
        pytest.param({}, id="no-authorization"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
        pytest.param({"Authorization": f"Basic {SIM_KEY}"}, id="not-bearer"),
    ],
)
def test_keys_per_request_mode_without_a_bearer_is_401_and_calls_nobody(
    gateway_factory: GatewayFactory,
    sim: Simulator,
    log_capture: LogCapture,
    client_headers: dict[str, str],
) -> None:
    gateway = gateway_factory(upstream_key=None)
    rid = new_request_id("no-bearer")
    response = _call(
        gateway, "POST", "/v1/chat/completions", {**client_headers, "X-Request-ID": rid}
    )

    assert response.status_code == 401
    assert openai_error(response.json())["code"] == "invalid_api_key"
    assert sim.chat_requests() == []
    line = wait_log_line(log_capture, rid)
    assert (line["outcome"], line["error"], line["trace"]) == ("rejected", "unauthorized", [])
    _assert_no_key_logged(log_capture, (SIM_KEY,))


def test_keys_per_request_mode_wrong_bearer_gets_the_upstream_401_as_invalid_api_key(
    gateway_factory: GatewayFactory, sim: Simulator, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(upstream_key=None)
    rid = new_request_id("wrong-bearer")
    response = _call(
        gateway, "POST", "/v1/chat/completions", {**_bearer(WRONG_KEY), "X-Request-ID": rid}
    )

    assert response.status_code == 401
    error = openai_error(response.json())
    assert (error["type"], error["code"]) == ("invalid_request_error", "invalid_api_key")
    assert WRONG_KEY not in response.text
    assert [r["key_sent"] for r in sim.chat_requests(MODEL)] == [False]
    line = wait_log_line(log_capture, rid)
    assert (line["error"], line["upstream_calls"]) == ("upstream_auth", 1)
    _assert_no_key_logged(log_capture, (WRONG_KEY, SIM_KEY))


@pytest.mark.parametrize(("method", "path"), V1_ENDPOINTS)
@pytest.mark.parametrize(
    "client_headers",
    [
        pytest.param({}, id="missing"),
        pytest.param(_bearer(WRONG_KEY), id="wrong"),
        pytest.param(_bearer(SIM_KEY), id="upstream-key-is-not-a-client-key"),
        pytest.param(_bearer(CLIENT_KEYS[0] + "x"), id="client-key-plus-a-char"),
        pytest.param(_bearer(CLIENT_KEYS[0][:-1]), id="client-key-prefix"),
    ],
)
def test_keys_client_keys_refuse_a_missing_or_wrong_key_on_every_v1_endpoint(
    gateway_factory: GatewayFactory,
    sim: Simulator,
    log_capture: LogCapture,
    method: str,
    path: str,
    client_headers: dict[str, str],
) -> None:
    gateway = gateway_factory(client_keys=CLIENT_KEYS)
    response = _call(gateway, method, path, client_headers)

    assert response.status_code == 401, response.text
    assert openai_error(response.json())["code"] == "invalid_api_key"
    assert sim.requests() == []  # refused before any upstream call
    for key in (*CLIENT_KEYS, SIM_KEY):
        assert key not in response.text
    _assert_no_key_logged(log_capture, (*CLIENT_KEYS, SIM_KEY, WRONG_KEY))


@pytest.mark.parametrize(("method", "path"), V1_ENDPOINTS)
@pytest.mark.parametrize("client_key", CLIENT_KEYS, ids=["first-key", "second-key"])
def test_keys_client_keys_accept_each_configured_key(
    gateway_factory: GatewayFactory,
    sim: Simulator,
    log_capture: LogCapture,
    method: str,
    path: str,
    client_key: str,
) -> None:
    gateway = gateway_factory(client_keys=CLIENT_KEYS)
    response = _call(gateway, method, path, _bearer(client_key))

    assert response.status_code == 200, response.text
    assert [r["key_sent"] for r in sim.requests()] == [True]  # the server key went upstream
    for key in (*CLIENT_KEYS, SIM_KEY):
        assert key not in response.text
    _assert_no_key_logged(log_capture, (*CLIENT_KEYS, SIM_KEY))


def test_keys_healthz_needs_no_client_key(gateway_factory: GatewayFactory) -> None:
    gateway = gateway_factory(client_keys=CLIENT_KEYS)
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        response = http.get("/healthz")

    assert response.status_code == 200


def test_keys_streamed_answers_and_errors_never_carry_a_key(
    gateway_factory: GatewayFactory, log_capture: LogCapture
) -> None:
    gateway = gateway_factory(client_keys=CLIENT_KEYS, heartbeat_interval=0.2)
    bodies = [
        chat_body("sim/stream", stream=True),
        chat_body("sim/json", stream=True),
        chat_body("sim/json:status=401"),
        chat_body("sim/json:delay=300:status=500", stream=True),
        chat_body("sim/stream:errevent=1", stream=True),
    ]
    texts: list[str] = []
    with httpx.Client(base_url=gateway.url, timeout=CLIENT_TIMEOUT) as http:
        for body in bodies:
            response = http.post("/v1/chat/completions", json=body, headers=_bearer(CLIENT_KEYS[1]))
            texts.append(response.text)
            texts.append(json.dumps(dict(response.headers)))

    for text in texts:
        for key in (*CLIENT_KEYS, SIM_KEY):
            assert key not in text
    _assert_no_key_logged(log_capture, (*CLIENT_KEYS, SIM_KEY))
