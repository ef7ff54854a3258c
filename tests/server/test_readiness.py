"""
``GET /readyz`` (contract §15; rules in ``server.routes.health``), over loopback against the
simulator, or a small upstream of the test's own where the simulator cannot misbehave so.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.gateway import Gateway
from server.routes import health
from server.settings import Settings
from server.simulator.app import create_simulator_app
from tests.support.gateway_process import chat_body
from tests.support.servers import ServerThread

SIM_KEY = "sim-key"
CLIENT_KEY = "ck-ready-20c"


class ModelsUpstream:
    """
    A raw ASGI upstream for the probe: answers every path with *status*, or never answers.

    It records the paths asked, so tests see what the probe called.
    """

    def __init__(self, status: int = 200, *, hang: bool = False) -> None:
        self.status = status
        self.hang = hang
        self.paths: list[str] = []

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        self.paths.append(scope["path"])
        if self.hang:
            await asyncio.Event().wait()  # cancelled when the server stops
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": b'{"data": []}'})


@pytest.fixture(name="simulator", scope="module")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SIM_KEY), graceful_timeout=0.5) as server:
        yield server


@pytest.fixture(name="serve")
def _serve() -> Iterator[Callable[[Any], ServerThread]]:
    """Start any ASGI app on loopback for the length of one test."""
    started: list[ServerThread] = []

    def serve(app: Any) -> ServerThread:
        server = ServerThread(app, graceful_timeout=0.5).start()
        started.append(server)
        return server

    try:
        yield serve
    finally:
        for server in reversed(started):
            server.stop()


def gateway_settings(upstream_url: str, **flags: Any) -> Settings:
    given: dict[str, Any] = {"upstream_url": upstream_url, "upstream_key": SIM_KEY}
    given.update(flags)
    return Settings.resolve(given, env={}, file=None)


def models_calls(simulator: ServerThread) -> list[dict[str, Any]]:
    records: list[dict[str, Any]] = httpx.get(f"{simulator.url}/_sim/requests").json()
    return [record for record in records if record["path"] == "/v2/models"]


def readyz(gateway: ServerThread) -> tuple[int, Any]:
    response = httpx.get(f"{gateway.url}/readyz", timeout=10)
    return response.status_code, response.json()


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_readyz_asks_the_upstream_once_then_stays_fresh(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    httpx.delete(f"{simulator.url}/_sim/requests")
    gateway = serve(create_app(gateway_settings(simulator.url, client_keys=(CLIENT_KEY,))))

    first = readyz(gateway)  # no key needed, even with client keys
    second = readyz(gateway)

    assert (first, second) == ((200, {"status": "ready"}), (200, {"status": "ready"}))
    assert [(call["method"], call["key_sent"]) for call in models_calls(simulator)] == [
        ("GET", True)
    ]


def test_readyz_after_a_chat_answer_asks_the_upstream_nothing(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    gateway = serve(create_app(gateway_settings(simulator.url)))
    answer = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat_body("sim/json", stream=False), timeout=10
    )
    httpx.delete(f"{simulator.url}/_sim/requests")

    ready = readyz(gateway)

    assert answer.status_code == 200
    assert ready == (200, {"status": "ready"})
    assert models_calls(simulator) == []


def test_readyz_after_a_failed_chat_still_asks_the_upstream(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    """Only a 2xx from the upstream makes readiness fresh; a 503 answer does not."""
    gateway = serve(create_app(gateway_settings(simulator.url)))
    failed = httpx.post(
        f"{gateway.url}/v1/chat/completions",
        json=chat_body("sim/json:status=503", stream=False),
        timeout=10,
    )
    httpx.delete(f"{simulator.url}/_sim/requests")

    ready = readyz(gateway)

    assert failed.status_code == 503
    assert ready == (200, {"status": "ready"})
    assert len(models_calls(simulator)) == 1


def test_readyz_with_a_wrong_server_key_is_not_ready(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    gateway = serve(create_app(gateway_settings(simulator.url, upstream_key="sk-wrong")))

    assert readyz(gateway) == (
        503,
        {"status": "not_ready", "reason": "the upstream refused the server key (HTTP 401)"},
    )


def test_readyz_in_per_request_mode_takes_an_auth_refusal_as_ready(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    """Without a server key the probe goes keyless; a 401 shows the upstream is answering."""
    httpx.delete(f"{simulator.url}/_sim/requests")
    settings = Settings.resolve({"upstream_url": simulator.url}, env={}, file=None)
    gateway = serve(create_app(settings))

    ready = readyz(gateway)

    assert ready == (200, {"status": "ready"})
    assert [call["key_sent"] for call in models_calls(simulator)] == [False]


def test_readyz_with_an_unreachable_upstream_is_not_ready(
    serve: Callable[[Any], ServerThread],
) -> None:
    gateway = serve(create_app(gateway_settings(closed_port_url(), connect_timeout=1.0)))

    assert readyz(gateway) == (
        503,
        {"status": "not_ready", "reason": "the upstream cannot be reached (upstream_unreachable)"},
    )


@pytest.mark.parametrize("status", [429, 500, 503])
def test_readyz_with_an_upstream_error_status_is_not_ready(
    serve: Callable[[Any], ServerThread], status: int
) -> None:
    upstream = serve(ModelsUpstream(status))
    gateway = serve(create_app(gateway_settings(upstream.url)))

    assert readyz(gateway) == (
        503,
        {"status": "not_ready", "reason": f"the upstream answered HTTP {status}"},
    )


def test_readyz_with_a_silent_upstream_is_not_ready_after_the_probe_timeout(
    serve: Callable[[Any], ServerThread], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_PROBE_SECONDS", 0.2)
    upstream = serve(ModelsUpstream(hang=True))
    gateway = serve(create_app(gateway_settings(upstream.url)))

    assert readyz(gateway) == (
        503,
        {"status": "not_ready", "reason": "the upstream did not answer within 0.2 s"},
    )


def test_readyz_of_an_openai_upstream_asks_its_models_path(
    serve: Callable[[Any], ServerThread],
) -> None:
    models = ModelsUpstream(200)
    upstream = serve(models)
    settings = gateway_settings(f"{upstream.url}/v1", upstream_kind="openai")
    gateway = serve(create_app(settings))

    ready = readyz(gateway)

    assert ready == (200, {"status": "ready"})
    assert models.paths == ["/v1/models"]


def test_readyz_while_shutting_down_answers_503(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    settings = gateway_settings(simulator.url)
    gateway = Gateway(settings)
    server = serve(create_app(settings, gateway))
    before = readyz(server)

    gateway.shutting_down = True  # what the drain of server.run sets first

    assert before == (200, {"status": "ready"})
    assert readyz(server) == (503, {"status": "shutting_down"})


def test_healthz_answers_ok_without_a_key(
    simulator: ServerThread, serve: Callable[[Any], ServerThread]
) -> None:
    gateway = serve(create_app(gateway_settings(simulator.url, client_keys=(CLIENT_KEY,))))

    response = httpx.get(f"{gateway.url}/healthz", timeout=5)

    assert (response.status_code, response.json()) == (200, {"status": "ok"})
