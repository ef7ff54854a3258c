"""
Real servers for tests: any ASGI app under Hypercorn on an ephemeral 127.0.0.1 port.

``ServerThread`` runs the server in a background thread with its own event loop
(stack-notes §8), so sync tests and async tests of any loop scope can talk to it over real
loopback sockets:

    with ServerThread(create_simulator_app("k")) as server:
        httpx.get(f"{server.url}/v2/models", headers={"Authorization": "Bearer k"})

Rules:

1. No ``free_port()``: a socket is bound to port 0 and handed to Hypercorn as ``fd://``, so the
   port cannot be taken by someone else between choosing and binding it.
2. ``start()`` returns once Hypercorn serves (its shutdown trigger is awaited only then), and
   re-raises a start-up failure.
3. ``stop()`` returns promptly even when clients left streams open: Hypercorn cancels in-flight
   requests after ``graceful_timeout`` on Python 3.11; on 3.12+ it would wait for every
   connection (stack-notes §3), so the harness cancels the server itself after the grace period
   and a margin, then cancels every task left in its loop.
4. Hypercorn logs through a logger of the harness's own at WARNING (no access log), never the
   global ``hypercorn.error`` logger that the code under test may configure.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from types import TracebackType
from typing import Any, Self

from hypercorn.asyncio import serve
from hypercorn.config import Config

__all__ = ["ServerThread"]

HOST = "127.0.0.1"
STARTUP_TIMEOUT = 10.0
STOP_MARGIN = 2.0
JOIN_TIMEOUT = 10.0

_log = logging.getLogger("tests.support.servers")
_log.setLevel(logging.WARNING)


class ServerThread:
    """
    One ASGI app served by Hypercorn in a thread, on ``http://127.0.0.1:<ephemeral port>``.

    Args:
        app: any ASGI application (Quart app, raw ASGI callable).
        graceful_timeout: Hypercorn's grace period for in-flight requests at ``stop()``.
    """

    def __init__(self, app: Any, *, graceful_timeout: float = 1.0) -> None:
        self._app = app
        self._graceful_timeout = graceful_timeout
        self._port: int | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        self._serving = threading.Event()
        self._failure: BaseException | None = None

    @property
    def url(self) -> str:
        """The base URL, ``http://127.0.0.1:PORT`` (no trailing slash)."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return f"http://{HOST}:{self._port}"

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    def start(self) -> Self:
        """Serve in a background thread; return once it accepts connections."""
        if self._thread is not None:
            raise RuntimeError("the server was already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind((HOST, 0))
        sock.listen(1024)
        self._port = sock.getsockname()[1]
        config = Config()
        config.bind = [f"fd://{sock.detach()}"]  # Hypercorn owns the descriptor from here
        config.accesslog = None
        config.errorlog = _log
        config.graceful_timeout = self._graceful_timeout
        self._thread = threading.Thread(
            target=self._run, args=(config,), name=f"server-{self._port}", daemon=True
        )
        self._thread.start()
        if not self._serving.wait(STARTUP_TIMEOUT) and self._failure is None:
            self.stop()
            raise RuntimeError("the server did not start in time")
        if self._failure is not None:
            self._thread.join(JOIN_TIMEOUT)
            raise RuntimeError("the server failed to start") from self._failure
        return self

    def _run(self, config: Config) -> None:
        try:
            asyncio.run(self._main(config))
        except BaseException as exc:  # reported to start(); a thread has nobody else to tell
            self._failure = exc
        finally:
            self._serving.set()  # unblocks start() when serving never began

    async def _main(self, config: Config) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop_requested = stop_requested = asyncio.Event()

        async def shutdown_trigger() -> None:
            self._serving.set()  # Hypercorn awaits the trigger once its servers are started
            await stop_requested.wait()

        serving = asyncio.create_task(serve(self._app, config, shutdown_trigger=shutdown_trigger))
        stop_waiter = asyncio.create_task(stop_requested.wait())
        await asyncio.wait({serving, stop_waiter}, return_when=asyncio.FIRST_COMPLETED)
        stop_waiter.cancel()
        if serving.done():
            serving.result()  # a start-up failure
            return
        try:  # rule 3: bounded whatever Hypercorn's shutdown does on this Python
            await asyncio.wait_for(asyncio.shield(serving), self._graceful_timeout + STOP_MARGIN)
        except TimeoutError:
            serving.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await serving
        # asyncio.run then cancels the connection tasks still open.

    def stop(self) -> None:
        """Shut the server down and join its thread; safe to call twice."""
        thread, loop, stop_requested = self._thread, self._loop, self._stop_requested
        if thread is None:
            return
        if loop is not None and stop_requested is not None and thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop may have closed meanwhile
                loop.call_soon_threadsafe(stop_requested.set)
        thread.join(self._graceful_timeout + STOP_MARGIN + JOIN_TIMEOUT)
        if thread.is_alive():
            raise RuntimeError("the server thread did not stop")

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()
