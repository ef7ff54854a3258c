"""
Serving the simulator over real HTTP with Hypercorn.

- :func:`run_simulator` blocks (``straico-gateway simulate``): it binds *host*:*port*, prints
  the URL, and serves until SIGINT or SIGTERM.
- :func:`start_simulator` starts it inside the running loop on an ephemeral loopback port
  (``serve --simulate``): a socket bound to port 0 is handed to Hypercorn as ``fd://``
  (stack-notes §3), so the port is known, and already listening, before Hypercorn runs.

Rules:

1. No access log. Hypercorn logs through a logger of the simulator's own at WARNING, never the
   global ``hypercorn.error`` logger, whose level and handlers the gateway's Hypercorn sets.
2. ``graceful_timeout`` is short: a stalled simulated answer must not hold a shutdown. On
   Python 3.11 Hypercorn cancels what is left after it; on 3.12+ it waits for every connection
   (stack-notes §3), so ``stop`` cancels the server itself after the grace period and a margin.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import socket
from collections.abc import Awaitable, Callable
from typing import Any

from hypercorn.asyncio import serve
from hypercorn.config import Config

from .app import create_simulator_app

__all__ = ["run_simulator", "start_simulator"]

SECONDS = 1.0
GRACEFUL_TIMEOUT = 1 * SECONDS
STOP_MARGIN = 2 * SECONDS
STARTUP_TIMEOUT = 10 * SECONDS
BACKLOG = 1024

_log = logging.getLogger("server.simulator.hypercorn")
_log.setLevel(logging.WARNING)


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    return sock


def _url(host: str, port: int) -> str:
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


def _config(sock: socket.socket) -> Config:
    config = Config()
    config.bind = [f"fd://{sock.detach()}"]  # detach: Hypercorn owns the descriptor now
    config.accesslog = None
    config.errorlog = _log
    config.graceful_timeout = GRACEFUL_TIMEOUT
    config.backlog = 1024  # bursts of hundreds of connections in load tests
    return config


class _InLoopServer:
    """Hypercorn serving an app as a task of the running loop, with a start and a stop."""

    def __init__(self, app: Any, config: Config) -> None:
        self._app = app
        self._config = config
        self._listening = asyncio.Event()
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def _shutdown_trigger(self) -> None:
        self._listening.set()  # Hypercorn awaits the trigger once its servers are started
        await self._stopping.wait()

    async def start(self) -> None:
        """Return once Hypercorn serves; re-raise its start-up failure."""
        self._task = asyncio.create_task(
            serve(self._app, self._config, shutdown_trigger=self._shutdown_trigger)
        )
        listening = asyncio.create_task(self._listening.wait())
        await asyncio.wait(
            {self._task, listening}, timeout=STARTUP_TIMEOUT, return_when=asyncio.FIRST_COMPLETED
        )
        listening.cancel()
        if self._task.done():
            self._task.result()
            raise RuntimeError("the simulator stopped while starting")
        if not self._listening.is_set():
            await self.stop()
            raise RuntimeError("the simulator did not start in time")

    async def stop(self) -> None:
        """Shut down gracefully; cancel the server if it outlives the grace period (rule 2)."""
        self._stopping.set()
        task = self._task
        if task is None or task.done():
            return
        try:
            await asyncio.wait_for(asyncio.shield(task), GRACEFUL_TIMEOUT + STOP_MARGIN)
        except TimeoutError:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def start_simulator(
    key: str, host: str = "127.0.0.1"
) -> tuple[str, Callable[[], Awaitable[None]]]:
    """
    Start the simulator in the running loop on an ephemeral port of *host*.

    Returns:
        The base URL (``http://127.0.0.1:PORT``, paths ``/v2/...`` go after it) and an async
        ``stop()`` to call before the loop ends.

    Raises:
        ValueError: *key* is empty.
        OSError: *host* cannot be bound.
    """
    app = create_simulator_app(key)
    sock = _listening_socket(host, 0)
    url = _url(host, sock.getsockname()[1])
    server = _InLoopServer(app, _config(sock))
    await server.start()
    return url, server.stop


async def _serve_until_signalled(host: str, port: int, key: str) -> None:
    app = create_simulator_app(key)
    sock = _listening_socket(host, port)
    url = _url(host, sock.getsockname()[1])
    stop_requested = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop_requested.set)
    server = _InLoopServer(app, _config(sock))
    try:
        await server.start()
        print(f"Straico simulator serving on {url} (Ctrl+C to stop)", flush=True)
        await stop_requested.wait()
    finally:
        await server.stop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)


def run_simulator(host: str = "127.0.0.1", port: int = 8001, key: str = "sim-key") -> None:
    """
    Serve the simulator on *host*:*port* until SIGINT or SIGTERM (``straico-gateway simulate``).

    Raises:
        ValueError: *key* is empty.
        OSError: the address cannot be bound.
    """
    asyncio.run(_serve_until_signalled(host, port, key))
