"""
End-to-end fixtures: the simulator and the gateway, each a real Hypercorn on loopback.

``gateway_factory(**flags)`` starts a gateway with those settings against the session's
simulator; every gateway's request log lines are captured in ``log_lines``.
"""

from __future__ import annotations

import io
import json
import socket
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import httpx
import httpx2
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


# --- Helpers shared by the end-to-end suites -------------------------------------------------
#
# Every wait below is bounded: a helper that waits for something that never comes returns what
# it has (or fails) after its timeout, so a broken gateway fails a test instead of hanging it.

CLIENT_TIMEOUT = 10.0
LOG_WAIT_SECONDS = 5.0
SIM_SETTLE_SECONDS = 2.0
POLL_SECONDS = 0.01
OPENAI_ERROR_FIELDS = {"message", "type", "param", "code"}


def new_request_id(prefix: str = "e2e") -> str:
    """A fresh, valid ``X-Request-ID`` (contract §8), so a test can find its own log line."""
    return f"{prefix}-{uuid.uuid4().hex[:16]}"


def chat_body(
    model: str, *, stream: bool = False, content: str = "tell me", **extra: Any
) -> dict[str, Any]:
    """A minimal chat request body; *extra* fields are added as given."""
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": content}]}
    if stream:
        body["stream"] = True
    body.update(extra)
    return body


def wait_log_line(
    capture: LogCapture, request_id: str, timeout: float = LOG_WAIT_SECONDS
) -> dict[str, Any]:
    """
    The one ``request`` log line of *request_id*, once it was written.

    The line is written when the request's session finishes, which may be a moment after the
    client read the last byte; this polls for it, for at most *timeout* seconds.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(line.get("request_id") == request_id for line in capture.requests()):
            break
        time.sleep(POLL_SECONDS)
    return capture.for_request(request_id)


def settled_records(sim: Simulator, wait: float = SIM_SETTLE_SECONDS) -> list[dict[str, Any]]:
    """
    The simulator's records once no recorded request is still being answered (or after *wait*).

    Uses the simulator's own ``?wait=`` (contract §12), so a test reads ``closed_early`` as soon
    as the gateway closed its upstream connection, without polling.
    """
    response = httpx.get(
        f"{sim.url}/_sim/requests", params={"wait": wait}, timeout=wait + CLIENT_TIMEOUT
    )
    records: list[dict[str, Any]] = response.json()
    return records


def openai_error(body: object) -> dict[str, Any]:
    """The ``error`` object of an OpenAI error body, after checking the shape (contract §7)."""
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error, dict), body
    assert set(error) == OPENAI_ERROR_FIELDS, error
    assert isinstance(error["message"], str) and error["message"], error
    assert "Traceback" not in error["message"], error
    return error


def wait_for_chat_request(sim: Simulator, model: str, timeout: float = LOG_WAIT_SECONDS) -> None:
    """Return once the simulator has recorded a chat call for *model* (bounded)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if sim.chat_requests(model):
            return
        time.sleep(POLL_SECONDS)
    raise AssertionError(f"the upstream never received a call for {model}")


def raw_http_request(
    port: int,
    method: str,
    path: str,
    *,
    headers: dict[str, str] | None = None,
    body: bytes = b"",
) -> bytes:
    """The bytes of one HTTP/1.1 request to 127.0.0.1:*port* (for raw-socket tests)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    given = dict(headers or {})
    if body and "Content-Length" not in given and "Transfer-Encoding" not in given:
        given["Content-Length"] = str(len(body))
    lines.extend(f"{name}: {value}" for name, value in given.items())
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def read_http_head(sock: socket.socket, timeout: float = CLIENT_TIMEOUT) -> tuple[int, bytes]:
    """Read from *sock* until the end of a response head; return the status and all bytes read."""
    sock.settimeout(timeout)
    received = b""
    while b"\r\n\r\n" not in received:
        data = sock.recv(65536)
        if not data:
            break
        received += data
    status_line = received.split(b"\r\n", 1)[0]
    assert status_line.startswith(b"HTTP/1.1 "), received[:200]
    return int(status_line.split()[1]), received


class _FakeOpenAIUpstream:
    """
    A minimal OpenAI-compatible upstream (raw ASGI) that names another model in its chunks.

    ``POST /v1/chat/completions`` answers a stream (``stream: true``) or a completion, always
    with ``model`` set to :data:`FAKE_UPSTREAM_MODEL` and an ``id`` of its own, so tests can see
    the gateway rewrite both (contract §5, one identity).
    """

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        data = b""
        while True:
            message = await receive()
            data += message.get("body", b"")
            if not message.get("more_body"):
                break
        request = json.loads(data or b"{}")
        if request.get("stream") is True:
            await self._stream(send)
        else:
            await self._whole(send)

    @staticmethod
    def _chunk(delta: dict[str, Any], finish: str | None) -> bytes:
        chunk = {
            "id": "upstream-own-id",
            "object": "chat.completion.chunk",
            "created": 1,
            "model": FAKE_UPSTREAM_MODEL,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        }
        return b"data: " + json.dumps(chunk).encode() + b"\n\n"

    async def _stream(self, send: Any) -> None:
        headers = [(b"content-type", b"text/event-stream")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        events = [
            self._chunk({"role": "assistant", "content": ""}, None),
            *(self._chunk({"content": piece}, None) for piece in FAKE_UPSTREAM_PIECES),
            self._chunk({}, "stop"),
            b"data: [DONE]\n\n",
        ]
        for event in events:
            await send({"type": "http.response.body", "body": event, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def _whole(self, send: Any) -> None:
        body = json.dumps(
            {
                "id": "upstream-own-id",
                "object": "chat.completion",
                "created": 1,
                "model": FAKE_UPSTREAM_MODEL,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": "".join(FAKE_UPSTREAM_PIECES)},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4},
            }
        ).encode()
        headers = [(b"content-type", b"application/json")]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": body})


FAKE_UPSTREAM_MODEL = "upstream-named-model"
FAKE_UPSTREAM_PIECES = ("Hello", " from", " the", " fake", " upstream.")


@pytest.fixture(name="openai_upstream", scope="session")
def _openai_upstream() -> Iterator[ServerThread]:
    with ServerThread(_FakeOpenAIUpstream(), graceful_timeout=0.5) as server:
        yield server


# --- Compatibility suites: module-scoped gateways and recorded raw responses -----------------


def start_gateway(upstream_url: str, **flags: Any) -> ServerThread:
    """A gateway on *upstream_url* in server key mode, *flags* over the defaults (caller stops)."""
    given: dict[str, Any] = {
        "upstream_url": upstream_url,
        "upstream_key": SIM_KEY,
        "heartbeat_interval": 10.0,
    }
    given.update(flags)
    settings = Settings.resolve(given, env={}, file=None)
    return ServerThread(create_app(settings), graceful_timeout=0.5).start()


class _TeeStream(httpx2.SyncByteStream):
    def __init__(self, inner: httpx2.SyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    def __iter__(self) -> Iterator[bytes]:
        for part in self._inner:
            self._sink.extend(part)
            yield part

    def close(self) -> None:
        self._inner.close()


class _AsyncTeeStream(httpx2.AsyncByteStream):
    def __init__(self, inner: httpx2.AsyncByteStream, sink: bytearray) -> None:
        self._inner = inner
        self._sink = sink

    async def __aiter__(self) -> AsyncIterator[bytes]:
        async for part in self._inner:
            self._sink.extend(part)
            yield part

    async def aclose(self) -> None:
        await self._inner.aclose()


class RecordingTransport(httpx2.BaseTransport):
    """
    A real transport that also keeps every response body's raw bytes, as the client read them.

    The openai SDK (and LangChain through it) uses ``httpx2``; with this as its client's
    transport a test checks the SSE bytes (``check_stream``) of the very response the SDK parsed.
    """

    def __init__(self) -> None:
        self._inner = httpx2.HTTPTransport()
        self.bodies: list[bytearray] = []

    def handle_request(self, request: httpx2.Request) -> httpx2.Response:
        response = self._inner.handle_request(request)
        sink = bytearray()
        self.bodies.append(sink)
        assert isinstance(response.stream, httpx2.SyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_TeeStream(response.stream, sink),
            extensions=response.extensions,
        )

    def close(self) -> None:
        self._inner.close()


class AsyncRecordingTransport(httpx2.AsyncBaseTransport):
    """The async twin of :class:`RecordingTransport`."""

    def __init__(self) -> None:
        self._inner = httpx2.AsyncHTTPTransport()
        self.bodies: list[bytearray] = []

    async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
        response = await self._inner.handle_async_request(request)
        sink = bytearray()
        self.bodies.append(sink)
        assert isinstance(response.stream, httpx2.AsyncByteStream)
        return httpx2.Response(
            response.status_code,
            headers=response.headers,
            stream=_AsyncTeeStream(response.stream, sink),
            extensions=response.extensions,
        )

    async def aclose(self) -> None:
        await self._inner.aclose()


def reference_answer(gateway: ServerThread, model: str) -> str:
    """A model's answer text, asked of *gateway* with plain httpx (the simulator's is fixed)."""
    response = httpx.post(
        f"{gateway.url}/v1/chat/completions", json=chat_body(model), timeout=CLIENT_TIMEOUT
    )
    content: str = response.json()["choices"][0]["message"]["content"]
    return content
