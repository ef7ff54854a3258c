"""
Serving: Hypercorn over the app, the built-in simulator for ``--simulate``, and shutdown.

``--workers 1`` serves in this process; more workers are started and supervised by
:mod:`server.workers`, each of them running :func:`serve_gateway` on the shared socket.

Shutdown (contract §15) is the gateway's own, so it holds whatever Hypercorn's
``graceful_timeout`` does on the interpreter in use (stack-notes §3): on SIGTERM or SIGINT
new ``/v1`` requests get 503, in-flight requests go on for ``--shutdown-grace`` seconds,
then every open session gets ``shut_down`` (its client an error event or a 503), and only
then is Hypercorn told to stop.

Hypercorn logs at WARNING: its "Running on" line would be the one non-JSON line of a JSON log;
the gateway logs ``gateway_listening`` itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import resource
import signal
import socket
from collections.abc import Awaitable, Callable

import attrs
from hypercorn.asyncio import serve
from hypercorn.config import Config

from .app import create_app
from .gateway import Gateway
from .logging import configure_logging, get_logger
from .metrics import multiprocess_directory, multiprocess_enabled
from .settings import Settings

__all__ = [
    "SIMULATOR_KEY",
    "listening_socket",
    "loop_factory",
    "raise_open_files_limit",
    "run",
    "serve_gateway",
    "socket_url",
]

#: How long sessions told ``shut_down`` get to send their last event.
SHUTDOWN_FLUSH_SECONDS = 5.0
#: Hypercorn's own grace period, once the gateway's drain is over (stack-notes §3).
HYPERCORN_GRACEFUL_SECONDS = 2.0
#: The simulator's key with ``--simulate`` when no ``--upstream-key`` is given (contract §10).
SIMULATOR_KEY = "sim-key"
#: Pending connections the kernel queues before the gateway accepts them.
BACKLOG = 1024


def raise_open_files_limit() -> None:
    """§6: the soft open-files limit goes up to the hard limit (many streams, many sockets)."""
    with contextlib.suppress(ValueError, OSError):
        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < hard:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def run(settings: Settings) -> None:
    """
    Serve until SIGTERM or SIGINT; the console command's ``serve``.

    Raises:
        SystemExit: with a non-zero code when a worker failed (``--workers`` above 1).
    """
    configure_logging(settings.log_format, settings.log_level)
    raise_open_files_limit()
    if settings.workers > 1:
        from .workers import supervise

        code = supervise(settings)
        if code:
            raise SystemExit(code)
        return
    with contextlib.ExitStack() as stack:
        if multiprocess_enabled():  # an operator's PROMETHEUS_MULTIPROC_DIR: start it empty
            stack.enter_context(multiprocess_directory())
        with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
            runner.run(serve_gateway(settings))


def listening_socket(host: str, port: int) -> socket.socket:
    """A TCP socket listening on *host*:*port* (IPv6 when *host* has a colon)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    return socket.create_server((host, port), family=family, backlog=BACKLOG)


def socket_url(sock: socket.socket) -> str:
    """The base URL a listening socket serves, ``http://host:port``."""
    host, port = sock.getsockname()[:2]
    return f"http://{host}:{port}" if ":" not in host else f"http://[{host}]:{port}"


def loop_factory(choice: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if choice == "asyncio":
        return None
    try:
        import uvloop
    except ImportError:
        if choice == "uvloop":
            raise
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def serve_gateway(
    settings: Settings,
    *,
    sock: socket.socket | None = None,
    stop: asyncio.Event | None = None,
    on_ready: Callable[[str], Awaitable[None] | None] | None = None,
    handle_signals: bool = True,
) -> None:
    """
    Serve the gateway in the running loop until *stop* is set or a signal arrives.

    Args:
        sock: an already bound listening socket (tests bind port 0); else host and port.
        stop: set it to shut down as SIGTERM would.
        on_ready: called with the base URL once the gateway listens.
        handle_signals: set *stop* on SIGTERM and SIGINT; a worker leaves signals to its own
            handlers (:mod:`server.workers`).
    """
    log = get_logger()
    stop = stop or asyncio.Event()
    stop_simulator: Callable[[], Awaitable[None]] | None = None
    if settings.simulate:
        from .simulator.run import start_simulator

        sim_key = settings.upstream_key or SIMULATOR_KEY
        sim_url, stop_simulator = await start_simulator(sim_key)
        settings = attrs.evolve(settings, upstream_url=sim_url, upstream_key=sim_key)
        log.info("simulator_started", url=sim_url)

    gateway = Gateway(settings)
    app = create_app(settings, gateway)
    if sock is None:
        sock = listening_socket(settings.host, settings.port)
    url = socket_url(sock)

    config = Config()
    config.bind = [f"fd://{sock.detach()}"]
    config.accesslog = None
    config.graceful_timeout = HYPERCORN_GRACEFUL_SECONDS
    config.keep_alive_timeout = 5.0
    config.backlog = BACKLOG  # Hypercorn listens again with its own backlog (100) otherwise
    config.loglevel = "WARNING"

    loop = asyncio.get_running_loop()
    signals = (signal.SIGTERM, signal.SIGINT) if handle_signals else ()
    for signum in signals:
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(signum, stop.set)

    stopped = asyncio.Event()

    async def trigger() -> None:
        log.info("gateway_listening", url=url, upstream=gateway.upstream.cache_prefix)
        if on_ready is not None:
            result = on_ready(url)
            if result is not None:
                await result
        await stop.wait()
        await _drain(gateway, settings.shutdown_grace)
        stopped.set()

    try:
        await serve(app, config, shutdown_trigger=trigger)
    finally:
        for signum in signals:
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.remove_signal_handler(signum)
        if stop_simulator is not None:
            await stop_simulator()
        log.info("gateway_stopped")


async def _drain(gateway: Gateway, grace: float) -> None:
    """§15: refuse new requests, let in-flight ones finish, then end the rest."""
    log = get_logger()
    gateway.shutting_down = True
    log.info("shutdown_started", in_flight=len(gateway.exchanges), grace_seconds=grace)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + grace
    while gateway.exchanges and loop.time() < deadline:
        await asyncio.sleep(0.05)
    if gateway.exchanges:
        log.info("shutdown_ending_requests", count=len(gateway.exchanges))
        gateway.shut_down_all()
        flush_deadline = loop.time() + SHUTDOWN_FLUSH_SECONDS
        while gateway.exchanges and loop.time() < flush_deadline:
            await asyncio.sleep(0.02)
