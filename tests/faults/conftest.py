"""
Fixtures of the fault suites: the end-to-end fixtures, and gateways that can be looked into.

The simulator, the log capture and ``sim`` are the end-to-end suite's own fixtures, registered
here too (pytest keeps one instance per directory). :class:`LiveGateway` is a gateway served in
this process whose event loop and upstream connection pool a test can read (read only), to show
that nothing leaks.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from quart import Quart

from server.app import create_app
from server.gateway import Gateway
from server.settings import Settings
from tests.e2e.conftest import SIM_KEY, LogCapture, _log_capture, _sim, _simulator
from tests.support.servers import ServerThread

__all__ = ["LiveGateway", "LiveGatewayFactory", "_log_capture", "_sim", "_simulator"]

LOOP_CALL_SECONDS = 5.0


class LiveGateway:
    """
    A gateway in a :class:`ServerThread`, with read-only views of its loop and pool.

    The loop is captured by a ``before_serving`` hook, so it is the loop that serves requests.
    """

    def __init__(self, settings: Settings) -> None:
        self.app: Quart = create_app(settings)
        self._loops: list[asyncio.AbstractEventLoop] = []

        async def remember_loop() -> None:
            self._loops.append(asyncio.get_running_loop())

        self.app.before_serving(remember_loop)
        self.server = ServerThread(self.app, graceful_timeout=0.5)

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def gateway(self) -> Gateway:
        gateway: Gateway = self.app.extensions["gateway"]
        return gateway

    def _in_loop(self, read: Callable[[], Any]) -> Any:
        async def call() -> Any:
            return read()

        (loop,) = self._loops
        return asyncio.run_coroutine_threadsafe(call(), loop).result(LOOP_CALL_SECONDS)

    def task_count(self) -> int:
        """Tasks alive in the gateway's loop, not counting the one that counts."""
        count: int = self._in_loop(lambda: len(asyncio.all_tasks()) - 1)
        return count

    def pool_counts(self) -> tuple[int, int]:
        """(connections in the upstream pool, those of them not idle), read in the loop."""

        def read() -> tuple[int, int]:
            # httpx keeps its httpcore pool private; reading it is the only way to see it
            pool = self.gateway.client._transport._pool  # type: ignore[attr-defined]
            connections = list(pool.connections)
            return len(connections), sum(1 for c in connections if not c.is_idle())

        counts: tuple[int, int] = self._in_loop(read)
        return counts

    def in_flight(self) -> int:
        """Exchanges the gateway still tracks (each is removed when its request finished)."""
        count: int = self._in_loop(lambda: len(self.gateway.exchanges))
        return count


LiveGatewayFactory = Callable[..., LiveGateway]


@pytest.fixture(name="live_gateway_factory")
def _live_gateway_factory(
    simulator: ServerThread, log_capture: LogCapture
) -> Iterator[LiveGatewayFactory]:
    started: list[LiveGateway] = []

    def start(**flags: Any) -> LiveGateway:
        given: dict[str, Any] = {"upstream_url": simulator.url, "upstream_key": SIM_KEY}
        given.update(flags)
        live = LiveGateway(Settings.resolve(given, env={}, file=None))
        live.server.start()
        started.append(live)
        return live

    yield start
    for live in started:
        live.server.stop()
