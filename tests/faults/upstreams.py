"""
Upstreams that place the faults the simulator cannot place by itself.

- :class:`ScriptedUpstream`: a raw TCP server on loopback that answers each accepted connection
  with the next step of a script, then stops listening. It places faults around the D4 repeat
  call (a refused connection, a repeat that never answers) and a connection closed before any
  response head, none of which an HTTP framework lets a server do on purpose.
- :class:`StreamWhateverAsked`: an ASGI wrapper around the simulator that answers every chat call
  as if it had asked for a stream, as some servers do (contract D11). With it every fault key of
  the simulator (``badsse``, ``errevent``, ...) lands in a body the gateway reads whole.

Rules of :class:`ScriptedUpstream`:

1. Connection *n* gets step *n*. The listening socket is closed as soon as the last step's
   connection is accepted, before that step acts, so any later connection is refused (the kernel
   answers RST on a closed port) and none can wait in the backlog meanwhile.
2. Every step reads the whole request (head and ``Content-Length`` body) before it acts.
3. :class:`Reject` answers with ``Connection: close``, so the gateway's next call needs a new
   connection: that is what lets the next step (or the closed port) decide the repeat call.
4. ``stop()`` wakes every waiting step and closes every socket; it is bounded.
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, Self

import attrs

__all__ = ["HangUp", "Reject", "ScriptedUpstream", "Silent", "StreamWhateverAsked"]

HOST = "127.0.0.1"
ACCEPT_POLL_SECONDS = 0.05
READ_TIMEOUT_SECONDS = 10.0
JOIN_SECONDS = 5.0

#: Straico's refusal of the stream flag, as the simulator words it (contract §12).
REJECTION_BODY = json.dumps({"error": "stream is not supported", "success": False}).encode()


@attrs.frozen
class Reject:
    """Answer 400 "stream is not supported" (a D4 rejection) after *delay* seconds."""

    delay: float = 0.0


@attrs.frozen
class HangUp:
    """Close the connection after *delay* seconds without sending a response head."""

    delay: float = 0.0


@attrs.frozen
class Silent:
    """Read the request and never answer (until the upstream stops)."""


Step = Reject | HangUp | Silent


def _read_request(conn: socket.socket) -> None:
    """Read one HTTP/1.1 request: its head, then ``Content-Length`` bytes of body."""
    conn.settimeout(READ_TIMEOUT_SECONDS)
    received = b""
    while b"\r\n\r\n" not in received:
        data = conn.recv(65536)
        if not data:
            return
        received += data
    head, _, body = received.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        data = conn.recv(65536)
        if not data:
            return
        body += data


def _rejection() -> bytes:
    head = (
        "HTTP/1.1 400 Bad Request\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(REJECTION_BODY)}\r\n"
        "Connection: close\r\n\r\n"
    )
    return head.encode("ascii") + REJECTION_BODY


class ScriptedUpstream:
    """A loopback upstream that plays *script*, one step per connection (see module rules)."""

    def __init__(self, script: tuple[Step, ...]) -> None:
        self._script = script
        self._listener: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stopping = threading.Event()
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._port: int | None = None

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("the upstream is not started")
        return f"http://{HOST}:{self._port}"

    def start(self) -> Self:
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.bind((HOST, 0))
        listener.listen(16)
        listener.settimeout(ACCEPT_POLL_SECONDS)
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._thread = threading.Thread(target=self._serve, name="scripted-upstream", daemon=True)
        self._thread.start()
        return self

    def _close_listener(self) -> None:
        with self._lock:
            listener, self._listener = self._listener, None
        if listener is not None:
            listener.close()

    def _accept(self) -> socket.socket | None:
        while not self._stopping.is_set():
            with self._lock:
                listener = self._listener
            if listener is None:
                return None
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return None
            with self._lock:
                self._open.append(conn)
            return conn
        return None

    def _serve(self) -> None:
        last = len(self._script) - 1
        for index, step in enumerate(self._script):
            conn = self._accept()
            if conn is None:
                return
            if index == last:
                self._close_listener()  # rule 1: later connections are refused
            with contextlib.suppress(OSError):
                _read_request(conn)
                self._perform(step, conn)
        self._close_listener()

    def _perform(self, step: Step, conn: socket.socket) -> None:
        match step:
            case Reject(delay):
                self._stopping.wait(delay)
                conn.sendall(_rejection())
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            case HangUp(delay):
                self._stopping.wait(delay)
                conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            case Silent():
                pass  # kept open in self._open until stop()

    def stop(self) -> None:
        self._stopping.set()
        self._close_listener()
        with self._lock:
            open_sockets, self._open = self._open, []
        for conn in open_sockets:
            conn.close()
        if self._thread is not None:
            self._thread.join(JOIN_SECONDS)


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Sender = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Sender], Awaitable[None]]

CHAT_PATH = "/v2/chat/completions"


class StreamWhateverAsked:
    """
    The wrapped simulator, except that a chat call is answered as if it sent ``stream: true``.

    The body is rewritten before the simulator reads it; the client's disconnect still reaches
    the simulator (its receive is the original one once the body is handed over), so
    ``closed_early`` keeps its meaning.
    """

    def __init__(self, simulator: ASGIApp) -> None:
        self._simulator = simulator

    async def __call__(self, scope: Scope, receive: Receive, send: Sender) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_PATH:
            await self._simulator(scope, receive, send)
            return
        parts: list[bytes] = []
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            parts.append(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = b"".join(parts)
        with contextlib.suppress(ValueError):
            document = json.loads(body)
            if isinstance(document, dict):
                document["stream"] = True
                body = json.dumps(document).encode()
        handed_over = False

        async def rewritten() -> Message:
            nonlocal handed_over
            if not handed_over:
                handed_over = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self._simulator(scope, rewritten, send)
