"""
End-to-end fixtures: the simulator and the gateway, each a real Hypercorn on loopback.

``gateway_factory(**flags)`` starts a gateway with those settings against the session's
simulator; every gateway's request log lines are captured in ``log_lines``.
"""

from __future__ import annotations

import io
import json
import threading
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from server.app import create_app
from server.logging import configure_logging
from server.settings import Settings
from server.simulator.app import create_simulator_app
from tests.support.servers import ServerThread

SIM_KEY = "sim-key"


class LogCapture(io.TextIOBase):
    """A stream for structlog that keeps every JSON line, thread-safely."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._buffer = ""
        self.lines: list[dict[str, Any]] = []

    def write(self, text: str) -> int:
        with self._lock:
            self._buffer += text
            *complete, self._buffer = self._buffer.split("\n")
            self.lines.extend(json.loads(line) for line in complete if line.strip())
        return len(text)

    def isatty(self) -> bool:
        return False

    def requests(self) -> list[dict[str, Any]]:
        with self._lock:
            return [line for line in self.lines if line.get("event") == "request"]

    def for_request(self, request_id: str) -> dict[str, Any]:
        matches = [line for line in self.requests() if line.get("request_id") == request_id]
        assert len(matches) == 1, f"{len(matches)} log lines for {request_id}"
        return matches[0]


@pytest.fixture(name="log_capture", scope="session")
def _log_capture() -> LogCapture:
    capture = LogCapture()
    configure_logging("json", "info", stream=capture)  # type: ignore[arg-type]
    return capture


@pytest.fixture(name="simulator", scope="session")
def _simulator() -> Iterator[ServerThread]:
    with ServerThread(create_simulator_app(SIM_KEY), graceful_timeout=0.5) as server:
        yield server


class Simulator:
    """What the simulator recorded, for assertions on what the gateway sent upstream."""

    def __init__(self, url: str) -> None:
        self.url = url

    def requests(self) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = httpx.get(f"{self.url}/_sim/requests").json()
        return records

    def chat_requests(self, model: str | None = None) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests()
            if r["path"] == "/v2/chat/completions" and (model is None or r["model"] == model)
        ]

    def clear(self) -> None:
        httpx.delete(f"{self.url}/_sim/requests")


@pytest.fixture(name="sim")
def _sim(simulator: ServerThread) -> Simulator:
    sim = Simulator(simulator.url)
    sim.clear()
    return sim


GatewayFactory = Callable[..., ServerThread]


@pytest.fixture(name="gateway_factory")
def _gateway_factory(simulator: ServerThread, log_capture: LogCapture) -> Iterator[GatewayFactory]:
    started: list[ServerThread] = []

    def start(**flags: Any) -> ServerThread:
        given: dict[str, Any] = {
            "upstream_url": simulator.url,
            "upstream_key": SIM_KEY,
            "heartbeat_interval": 10.0,
        }
        given.update(flags)
        settings = Settings.resolve(given, env={}, file=None)
        server = ServerThread(create_app(settings), graceful_timeout=0.5).start()
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture(name="gateway")
def _gateway(gateway_factory: GatewayFactory) -> ServerThread:
    return gateway_factory()
