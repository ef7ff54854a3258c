"""Serving the simulator (``start_simulator``, ``run_simulator``) and the test server harness."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
from quart import Quart

from server.simulator import create_simulator_app, start_simulator
from tests.support.servers import ServerThread

KEY = "run-key"
AUTH = {"Authorization": f"Bearer {KEY}"}
PROJECT_ROOT = Path(__file__).resolve().parents[2]
PROCESS_TIMEOUT = 20.0


# --- start_simulator ------------------------------------------------------------------------


async def test_start_simulator_serves_on_an_ephemeral_loopback_port() -> None:
    url, stop = await start_simulator(KEY)
    try:
        async with httpx.AsyncClient(base_url=url, headers=AUTH, timeout=5) as client:
            response = await client.post(
                "/v2/chat/completions",
                json={"model": "sim/stream", "messages": [{"role": "user", "content": "hi"}]},
            )
    finally:
        await stop()

    assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
    assert (response.status_code, response.json()["object"]) == (200, "chat.completion")


async def test_start_simulator_stop_closes_the_port() -> None:
    url, stop = await start_simulator(KEY)
    await stop()

    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{url}/v2/models")


async def test_start_simulator_stop_returns_while_a_client_holds_a_stall() -> None:
    url, stop = await start_simulator(KEY)
    async with (
        httpx.AsyncClient(base_url=url, headers=AUTH, timeout=5) as client,
        client.stream(
            "POST", "/v2/chat/completions", json={"model": "sim/json:stall=0", "messages": []}
        ) as response,
    ):
        await stop()

        with pytest.raises(httpx.HTTPError):
            await response.aread()


async def test_start_simulator_empty_key_is_refused() -> None:
    with pytest.raises(ValueError, match="non-empty key"):
        await start_simulator("")


# --- run_simulator --------------------------------------------------------------------------

RUN_ON_ANY_PORT = f"from server.simulator import run_simulator; run_simulator(port=0, key={KEY!r})"


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_run_simulator_prints_its_url_serves_and_stops_on_signal(signum: signal.Signals) -> None:
    environment = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    process = subprocess.Popen(
        [sys.executable, "-c", RUN_ON_ANY_PORT],
        cwd=PROJECT_ROOT,
        env=environment,
        stdout=subprocess.PIPE,
        text=True,
    )
    watchdog = threading.Timer(PROCESS_TIMEOUT, process.kill)  # a hung server fails, not hangs
    watchdog.start()
    try:
        assert process.stdout is not None
        banner = process.stdout.readline()
        found = re.search(r"http://127\.0\.0\.1:\d+", banner)
        assert found is not None, banner
        status = httpx.get(f"{found.group()}/v2/models", headers=AUTH, timeout=5).status_code

        process.send_signal(signum)
        exit_code = process.wait(PROCESS_TIMEOUT)
    finally:
        watchdog.cancel()
        process.kill()
        process.wait()
        if process.stdout is not None:
            process.stdout.close()

    assert (status, exit_code) == (200, 0)


# --- the ServerThread harness ---------------------------------------------------------------


def test_server_thread_url_before_start_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="not started"):
        ServerThread(create_simulator_app(KEY)).url  # noqa: B018


def test_server_thread_serves_a_quart_app_and_frees_the_port_after_stop() -> None:
    app = Quart(__name__)

    @app.get("/")
    async def hello() -> str:
        return "hello"

    with ServerThread(app) as server:
        answer = httpx.get(server.url, timeout=5).text

    with pytest.raises(httpx.ConnectError):
        httpx.get(server.url, timeout=5)
    assert answer == "hello"


def test_server_thread_stop_returns_while_a_client_holds_a_stream_open() -> None:
    server = ServerThread(create_simulator_app(KEY), graceful_timeout=0.1).start()
    with (
        httpx.Client(base_url=server.url, headers=AUTH, timeout=5) as client,
        client.stream(
            "POST",
            "/v2/chat/completions",
            json={"model": "sim/stream:stall=1", "stream": True, "messages": []},
        ) as response,
    ):
        server.stop()

        with pytest.raises(httpx.HTTPError):
            response.read()


def test_server_thread_cannot_start_twice() -> None:
    with ServerThread(create_simulator_app(KEY)) as server, pytest.raises(RuntimeError):
        server.start()


async def refuses_to_start(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI app whose lifespan start-up fails."""
    if scope["type"] == "lifespan":
        await receive()
        await send({"type": "lifespan.startup.failed", "message": "no"})


def test_server_thread_start_up_failure_is_raised() -> None:
    server = ServerThread(refuses_to_start)

    with pytest.raises(RuntimeError, match="failed to start"):
        server.start()
