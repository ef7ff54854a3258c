"""
``--workers N`` (N > 1): N worker processes on one listening socket, and their supervisor.

The gateway supervises its workers itself rather than using Hypercorn's ``-w N``: with that,
on Python 3.12+ the parent SIGTERMs every worker as soon as one exits, and a stream still in
flight is cut (stack-notes §3). The rules below keep contract §15 on any interpreter.

Rules:

1. The parent binds the socket (``--host``, ``--port``) once, then starts every worker with the
   ``spawn`` method (a fresh interpreter: no loop, thread or lock inherited half-way) and hands
   it the socket. Each worker runs :func:`server.run.serve_gateway` on it; the kernel gives each
   new connection to one worker, and a keep-alive connection stays with its worker.
2. ``--simulate``: the parent runs one simulator, in a thread of its own, and every worker uses
   it as its upstream (contract §15).
3. Metrics: the parent provides ``PROMETHEUS_MULTIPROC_DIR`` before the first worker starts
   (:mod:`server.metrics`, rule 3) and forgets each exited worker's open-streams gauge.
4. Signals: the first SIGTERM or SIGINT to the parent is forwarded once, as SIGTERM, to every
   worker; each worker then drains as a single process does (contract §15). Later signals to
   the parent are ignored: the drain is bounded anyway (rule 7). A worker ignores SIGINT (a
   terminal's Ctrl+C reaches the whole process group; the parent forwards it) and keeps one
   SIGTERM handler for its whole life, so a signal never finds it without one.
5. A worker whose parent disappears (SIGKILL, the OOM killer) notices it through its parent
   sentinel and drains as if told SIGTERM: workers never outlive their supervisor for long.
6. A worker that exits while the gateway serves is replaced, if it had reported ready; one that
   exits before reporting ready is a start-up failure: the others are stopped, exit code 1.
7. After the signal the parent waits at most ``--shutdown-grace`` plus ``STOP_MARGIN_SECONDS``
   (the sessions' last event, Hypercorn's own grace), then kills what is left. It exits 0 when
   every worker exited 0. A worker that had not reported ready yet may end otherwise (the
   signal came before its handlers were installed); it served nothing, so that counts as clean.
8. Every log line of a worker carries ``pid`` and ``worker`` (its index), so the request lines
   of several workers can be told apart once shipped. The workers and the parent share one
   stderr, and ``print`` writes a line and its newline in two system calls, which lets lines
   of two processes run into each other; so each process logs through a buffered, line-flushed
   stderr of its own: one ``write`` per line.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import multiprocessing
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from types import FrameType
from typing import Any, TextIO

import attrs
import structlog

from .logging import configure_logging, get_logger
from .metrics import forget_process, multiprocess_directory
from .run import (
    SIMULATOR_KEY,
    listening_socket,
    loop_factory,
    raise_open_files_limit,
    serve_gateway,
    socket_url,
)
from .settings import Settings

__all__ = ["STOP_MARGIN_SECONDS", "line_atomic_stderr", "supervise", "worker_main"]

#: Rule 7: the sessions' last event (5 s), Hypercorn's grace (2 s) and start-up slack.
STOP_MARGIN_SECONDS = 10.0
SIMULATOR_START_SECONDS = 10.0
#: Log lines up to this size leave in one ``write`` (rule 8); ``--log-content`` lines are long.
LOG_LINE_BUFFER = 1024 * 1024
_STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


def supervise(settings: Settings) -> int:
    """
    Serve with ``settings.workers`` worker processes until SIGTERM or SIGINT.

    Returns:
        The exit code: 0 when every worker exited cleanly, else 1.

    Raises:
        OSError: the address cannot be bound.
    """
    configure_logging(settings.log_format, settings.log_level, stream=line_atomic_stderr())
    log = get_logger().bind(pid=os.getpid(), role="supervisor")
    with contextlib.ExitStack() as stack:
        metrics_dir = stack.enter_context(multiprocess_directory())
        sock = stack.enter_context(listening_socket(settings.host, settings.port))
        worker_settings = settings
        if settings.simulate:
            key = settings.upstream_key or SIMULATOR_KEY
            simulator = _SimulatorThread(key)
            sim_url = simulator.start()
            stack.callback(simulator.stop)
            log.info("simulator_started", url=sim_url)
            worker_settings = attrs.evolve(
                settings, simulate=False, upstream_url=sim_url, upstream_key=key
            )
        return _Supervisor(worker_settings, sock, metrics_dir, log).run()


@attrs.define(eq=False)
class _Worker:
    index: int
    process: BaseProcess
    ready_reader: Connection | None
    ready: bool = False


class _Supervisor:
    """Starts, watches, replaces and stops the workers (rules 4 to 7)."""

    def __init__(self, settings: Settings, sock: socket.socket, metrics_dir: str, log: Any) -> None:
        self._settings = settings
        self._sock = sock
        self._url = socket_url(sock)
        self._metrics_dir = metrics_dir
        self._log = log
        self._context = multiprocessing.get_context("spawn")
        self._workers: dict[int, _Worker] = {}
        self._listening_logged = False
        self._stopping = False
        self._kill_at: float | None = None
        self._failed = False
        self._wake_reader, self._wake_writer = os.pipe()
        os.set_blocking(self._wake_writer, False)

    def run(self) -> int:
        previous = {signum: signal.signal(signum, self._on_signal) for signum in _STOP_SIGNALS}
        try:
            self._log.info(
                "workers_starting",
                workers=self._settings.workers,
                url=self._url,
                metrics_dir=self._metrics_dir,
            )
            for index in range(self._settings.workers):
                self._start(index)
            while self._workers:
                self._step()
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            os.close(self._wake_reader)
            os.close(self._wake_writer)
        self._log.info("workers_stopped", exit_code=1 if self._failed else 0)
        return 1 if self._failed else 0

    # --- the watch loop -----------------------------------------------------------------

    def _step(self) -> None:
        workers = list(self._workers.values())
        watched: list[Any] = [self._wake_reader]
        watched.extend(worker.process.sentinel for worker in workers)
        watched.extend(w.ready_reader for w in workers if w.ready_reader is not None)
        timeout = None if self._kill_at is None else max(0.0, self._kill_at - time.monotonic())
        ready = wait(watched, timeout)
        if self._wake_reader in ready:
            self._take_signals()
        for worker in workers:
            if worker.ready_reader is not None and worker.ready_reader in ready:
                self._read_ready(worker)
            if worker.process.sentinel in ready:
                self._reap(worker)
        if self._kill_at is not None and time.monotonic() >= self._kill_at:
            self._kill_all()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        # Only wake the watch loop: logging or killing here could interrupt a half-written line.
        with contextlib.suppress(OSError):
            os.write(self._wake_writer, bytes([signum]))

    def _take_signals(self) -> None:
        with contextlib.suppress(BlockingIOError):
            received = os.read(self._wake_reader, 64)
            for signum in received:
                name = signal.Signals(signum).name
                if self._stopping:
                    self._log.info("signal_ignored", signal=name)
                else:
                    self._begin_stop(f"signal {name}")

    def _begin_stop(self, reason: str) -> None:
        self._stopping = True
        self._kill_at = time.monotonic() + self._settings.shutdown_grace + STOP_MARGIN_SECONDS
        self._log.info("shutdown_requested", reason=reason, workers=len(self._workers))
        for worker in self._workers.values():
            pid = worker.process.pid
            if pid is not None and worker.process.is_alive():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    def _kill_all(self) -> None:
        self._kill_at = None
        for worker in self._workers.values():
            if worker.process.is_alive():
                self._log.warning("worker_killed", worker=worker.index, pid=worker.process.pid)
                worker.process.kill()
                self._failed = True

    # --- one worker ---------------------------------------------------------------------

    def _start(self, index: int) -> None:
        reader, writer = self._context.Pipe(duplex=False)
        process = self._context.Process(
            target=worker_main,
            args=(self._settings, self._sock, writer, index),
            name=f"straico-gateway-worker-{index}",
            daemon=True,  # a safety net: multiprocessing ends them if the parent's Python exits
        )
        process.start()
        writer.close()  # the worker holds the only writer: EOF if it dies before reporting
        self._workers[index] = _Worker(index, process, reader)

    def _read_ready(self, worker: _Worker) -> None:
        reader = worker.ready_reader
        assert reader is not None
        try:
            reader.recv()
        except (EOFError, OSError):
            pass  # it died first; its sentinel says so
        else:
            worker.ready = True
            self._log.info("worker_ready", worker=worker.index, worker_pid=worker.process.pid)
        reader.close()
        worker.ready_reader = None
        if not self._listening_logged and all(w.ready for w in self._workers.values()):
            self._listening_logged = True
            self._log.info("gateway_listening", url=self._url, workers=len(self._workers))

    def _reap(self, worker: _Worker) -> None:
        process = worker.process
        process.join()
        code = process.exitcode
        del self._workers[worker.index]
        if worker.ready_reader is not None:
            worker.ready_reader.close()
        if process.pid is not None:
            forget_process(process.pid, self._metrics_dir)
        fields = {"worker": worker.index, "worker_pid": process.pid, "exit_code": code}
        if self._stopping:
            clean = code == 0 or not worker.ready  # rule 7
            self._failed |= not clean
            self._log.info("worker_exited", **fields)
        elif not worker.ready:
            self._failed = True
            self._log.error("worker_failed_to_start", **fields)
            self._begin_stop("a worker failed to start")
        else:
            self._log.warning("worker_exited_unexpectedly", **fields)
            self._start(worker.index)  # rule 6


# --- the worker process ---------------------------------------------------------------------


def line_atomic_stderr() -> TextIO:
    """This process's stderr, written with one ``write`` per line (rule 8)."""
    raw = io.FileIO(sys.stderr.fileno(), "w", closefd=False)
    buffered = io.BufferedWriter(raw, buffer_size=LOG_LINE_BUFFER)
    return io.TextIOWrapper(
        buffered, encoding="utf-8", errors="backslashreplace", line_buffering=True
    )


class _StopRequest:
    """A SIGTERM handler installed for the worker's whole life (rule 4)."""

    def __init__(self) -> None:
        self.requested = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None

    def on_signal(self, signum: int, frame: FrameType | None) -> None:
        self.requested = True
        loop, stop = self._loop, self._stop
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):  # the loop is closing
                loop.call_soon_threadsafe(stop.set)

    def attach(self, loop: asyncio.AbstractEventLoop, stop: asyncio.Event) -> None:
        self._loop, self._stop = loop, stop
        if self.requested:  # a signal came before the loop ran
            stop.set()


def worker_main(settings: Settings, sock: socket.socket, ready: Connection, index: int) -> None:
    """
    One worker process: serve on the shared *sock* until SIGTERM or the parent's end.

    Args:
        settings: the gateway's settings (with ``--simulate``, the parent's simulator as upstream).
        sock: the listening socket, shared with the other workers.
        ready: where the worker reports that it listens.
        index: the worker's number, 0 to N - 1, for the log lines.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop_request = _StopRequest()
    signal.signal(signal.SIGTERM, stop_request.on_signal)
    configure_logging(settings.log_format, settings.log_level, stream=line_atomic_stderr())
    structlog.contextvars.bind_contextvars(pid=os.getpid(), worker=index)  # rule 8
    raise_open_files_limit()
    with asyncio.Runner(loop_factory=loop_factory(settings.loop)) as runner:
        runner.run(_serve(settings, sock, ready, stop_request))


async def _serve(
    settings: Settings, sock: socket.socket, ready: Connection, stop_request: _StopRequest
) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    stop_request.attach(loop, stop)
    parent = multiprocessing.parent_process()
    sentinel = parent.sentinel if parent is not None else None
    if sentinel is not None:  # rule 5

        def parent_gone() -> None:
            loop.remove_reader(sentinel)
            get_logger().warning("supervisor_gone")
            stop.set()

        loop.add_reader(sentinel, parent_gone)

    def report_ready(url: str) -> None:
        with contextlib.suppress(OSError):
            ready.send(url)
            ready.close()

    await serve_gateway(settings, sock=sock, stop=stop, on_ready=report_ready, handle_signals=False)


# --- one simulator for every worker ---------------------------------------------------------


class _SimulatorThread:
    """The built-in simulator served from a thread of the parent, for every worker (rule 2)."""

    def __init__(self, key: str) -> None:
        self._key = key
        self._started = threading.Event()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._url: str | None = None
        self._failure: BaseException | None = None

    def start(self) -> str:
        """Start serving; return the simulator's base URL."""
        self._thread = threading.Thread(target=self._run, name="simulator", daemon=True)
        self._thread.start()
        if not self._started.wait(SIMULATOR_START_SECONDS):
            raise RuntimeError("the simulator did not start in time")
        if self._failure is not None or self._url is None:
            raise RuntimeError("the simulator failed to start") from self._failure
        return self._url

    def stop(self) -> None:
        loop, stop, thread = self._loop, self._stop, self._thread
        if loop is not None and stop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(stop.set)
        if thread is not None:
            thread.join(SIMULATOR_START_SECONDS)

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); a thread has nobody else to tell
            self._failure = exc
        finally:
            self._started.set()

    async def _main(self) -> None:
        from .simulator.run import start_simulator

        stop_simulator: Callable[[], Awaitable[None]]
        self._url, stop_simulator = await start_simulator(self._key)
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        self._started.set()
        try:
            await self._stop.wait()
        finally:
            await stop_simulator()
