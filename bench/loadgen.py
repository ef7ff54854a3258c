"""
A load generator on raw sockets: HTTP/1.1 keep-alive, incremental chunked and SSE decoding.

Rules:

1. Every timestamp is ``time.perf_counter()`` taken when the bytes were handed to the
   protocol (``data_received``), before any parsing, so decoding never delays what is timed.
2. What is timed is validated: status 200; for a stream, every expected content delta in order
   (their concatenation equals the expected text, and the count matches when it is known),
   ``[DONE]`` as the last event and no error event; for a JSON body, the expected content.
   An invalid response is kept with ``ok = False`` and its reason; the scenarios count them.
3. Every request has a deadline (``timeout``), so a run always ends by itself.
4. Heartbeats (SSE comments, and chunks whose only delta is an empty content) are recorded
   with their arrival times and are not content.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import attrs

__all__ = [
    "Connection",
    "Expect",
    "RequestSpec",
    "Result",
    "chat_body",
    "run_batch",
    "run_concurrent",
    "run_sequential",
]

HOST = "127.0.0.1"
DEFAULT_TIMEOUT = 120.0


def chat_body(model: str, *, stream: bool, include_usage: bool = False) -> bytes:
    """A small OpenAI chat request."""
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "stream": stream,
    }
    if include_usage:
        body["stream_options"] = {"include_usage": True}
    return json.dumps(body).encode()


@attrs.frozen
class Expect:
    """
    What a valid response holds: its text, and for a pass-through stream the delta count.

    ``stream`` None accepts either form (a peer may answer a stream request with JSON when
    its upstream did).
    """

    text: str
    stream: bool | None
    chunks: int | None = None


@attrs.frozen
class RequestSpec:
    path: str
    body: bytes
    expect: Expect
    headers: tuple[tuple[str, str], ...] = (("Authorization", "Bearer x"),)


@attrs.define
class Result:
    """One timed response; times are seconds since the request was written."""

    ok: bool = False
    error: str | None = None
    status: int | None = None
    started: float = 0.0
    first_byte: float | None = None
    first_content: float | None = None
    last_content: float | None = None
    total: float | None = None
    chunks: int = 0
    heartbeats: list[float] = attrs.Factory(list)
    finished_at: float = 0.0

    @property
    def first_content_abs(self) -> float | None:
        return None if self.first_content is None else self.started + self.first_content


class _Response:
    """Incremental parser of one HTTP/1.1 response (head, then Content-Length or chunked)."""

    def __init__(self, started: float) -> None:
        self.result = Result(started=started)
        self.head_done = False
        self.status = 0
        self.headers: dict[str, str] = {}
        self.length: int | None = None
        self.chunked = False
        self.sse = False
        self.complete = False
        self.keep_alive = True
        self._buffer = bytearray()
        self._chunk_left = 0  # bytes left of the current chunk (+2 for its CRLF)
        self._body = bytearray()
        self._events = bytearray()
        self.texts: list[str] = []
        self.done = False
        self.after_done = False
        self.error_event = False

    def feed(self, data: bytes, now: float) -> None:
        result = self.result
        if result.first_byte is None:
            result.first_byte = now - result.started
        self._buffer += data
        if not self.head_done and not self._parse_head():
            return
        if self.chunked:
            self._parse_chunked(now)
        else:
            take = bytes(self._buffer)
            self._buffer.clear()
            self._body_bytes(take, now)
            if self.length is not None and len(self._body) >= self.length:
                self._finish(now)

    def _parse_head(self) -> bool:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            return False
        lines = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        del self._buffer[: end + 4]
        self.status = int(lines[0].split(" ", 2)[1])
        for line in lines[1:]:
            name, _, value = line.partition(":")
            self.headers[name.strip().lower()] = value.strip()
        self.head_done = True
        self.result.status = self.status
        self.chunked = "chunked" in self.headers.get("transfer-encoding", "").lower()
        if "content-length" in self.headers:
            self.length = int(self.headers["content-length"])
        self.sse = self.headers.get("content-type", "").startswith("text/event-stream")
        self.keep_alive = self.headers.get("connection", "").lower() != "close"
        return True

    def _parse_chunked(self, now: float) -> None:
        buf = self._buffer
        pos = 0
        while True:
            if self._chunk_left:
                take = min(self._chunk_left, len(buf) - pos)
                if take <= 0:
                    break
                data_left = self._chunk_left - 2  # the chunk's CRLF is not data
                if data_left > 0:
                    self._body_bytes(bytes(buf[pos : pos + min(take, data_left)]), now)
                self._chunk_left -= take
                pos += take
                continue
            eol = buf.find(b"\r\n", pos)
            if eol < 0:
                break
            size = int(bytes(buf[pos:eol]).split(b";", 1)[0], 16)
            if size == 0:
                # The last chunk; the response ends at the blank line after it (no trailers).
                if buf.find(b"\r\n", eol + 2) < 0:
                    break
                pos = eol + 4
                self._finish(now)
                break
            pos = eol + 2
            self._chunk_left = size + 2
        del buf[:pos]

    def _body_bytes(self, data: bytes, now: float) -> None:
        if not self.sse:
            self._body += data
            return
        events = self._events
        events += data
        start = 0
        while True:
            end = events.find(b"\n\n", start)
            if end < 0:
                break
            self._event(bytes(events[start:end]), now)
            start = end + 2
        del events[:start]

    def _event(self, raw: bytes, now: float) -> None:
        result = self.result
        if raw.startswith(b":"):
            result.heartbeats.append(now - result.started)
            return
        if self.done:
            self.after_done = True
            return
        data = b"\n".join(line[6:] for line in raw.split(b"\n") if line.startswith(b"data: "))
        if data == b"[DONE]":
            self.done = True
            return
        chunk = json.loads(data)
        if chunk.get("error") is not None:
            self.error_event = True
            return
        choices = chunk.get("choices") or []
        delta = choices[0].get("delta") or {} if choices else {}
        content = delta.get("content")
        if content:
            self.texts.append(content)
            result.chunks += 1
            if result.first_content is None:
                result.first_content = now - result.started
            result.last_content = now - result.started
        elif content == "" and set(delta) == {"content"}:
            result.heartbeats.append(now - result.started)  # heartbeat_style = chunk

    def _finish(self, now: float) -> None:
        self.complete = True
        self.result.total = now - self.result.started
        self.result.finished_at = now

    def validate(self, expect: Expect) -> None:
        result = self.result
        reason = self._problem(expect)
        result.ok = reason is None
        result.error = reason

    def _problem(self, expect: Expect) -> str | None:
        if self.status != 200:
            return f"status {self.status}"
        if expect.stream or (expect.stream is None and self.sse):
            if not self.sse:
                return "not an event stream"
            if self.error_event:
                return "error event"
            if not self.done or self.after_done:
                return "[DONE] missing or not last"
            if expect.chunks is not None and len(self.texts) != expect.chunks:
                return f"{len(self.texts)} content chunks, expected {expect.chunks}"
            if "".join(self.texts) != expect.text:
                return "content differs"
            return None
        try:
            body = json.loads(bytes(self._body))
            content = body["choices"][0]["message"]["content"]
        except (ValueError, KeyError, IndexError, TypeError):
            return "not a chat.completion body"
        if content != expect.text:
            return "content differs"
        if self.result.first_content is None:
            self.result.first_content = self.result.total
            self.result.last_content = self.result.total
        return None


class Connection(asyncio.Protocol):
    """One keep-alive client connection; one request at a time."""

    def __init__(self) -> None:
        self._transport: asyncio.Transport | None = None
        self._response: _Response | None = None
        self._waiter: asyncio.Future[None] | None = None
        self.closed = False

    @classmethod
    async def open(cls, port: int, host: str = HOST) -> Connection:
        loop = asyncio.get_running_loop()
        _transport, protocol = await loop.create_connection(cls, host, port)
        return protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._wake()

    def data_received(self, data: bytes) -> None:
        now = time.perf_counter()
        response = self._response
        if response is None:
            return
        try:
            response.feed(data, now)
        except (ValueError, KeyError, IndexError, TypeError) as exc:
            response.result.error = f"unparsable response: {exc!r}"
            response.complete = True
            self.close()
        if response.complete:
            self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def close(self) -> None:
        self.closed = True
        if self._transport is not None:
            self._transport.close()

    async def request(
        self, port: int, spec: RequestSpec, *, timeout: float = DEFAULT_TIMEOUT
    ) -> Result:
        """Send one POST and read its whole response."""
        assert self._transport is not None and not self.closed
        head = [
            f"POST {spec.path} HTTP/1.1",
            f"Host: {HOST}:{port}",
            "Content-Type: application/json",
            f"Content-Length: {len(spec.body)}",
            *(f"{name}: {value}" for name, value in spec.headers),
        ]
        loop = asyncio.get_running_loop()
        self._waiter = loop.create_future()
        started = time.perf_counter()
        response = self._response = _Response(started)
        self._transport.write(("\r\n".join(head) + "\r\n\r\n").encode() + spec.body)
        try:
            await asyncio.wait_for(self._waiter, timeout)
        except TimeoutError:
            response.result.error = "timeout"
            self.close()
            return response.result
        finally:
            self._response = None
        if not response.complete:
            response.result.error = response.result.error or "connection closed mid-response"
            self.close()
            return response.result
        if response.result.error is None:
            response.validate(spec.expect)
        if not response.keep_alive:
            self.close()
        return response.result


async def _reopen(conn: Connection | None, port: int) -> Connection:
    if conn is not None and not conn.closed:
        return conn
    return await Connection.open(port)


async def run_sequential(
    port: int, spec: RequestSpec, *, count: int, warmup: int, timeout: float = DEFAULT_TIMEOUT
) -> list[Result]:
    """*warmup* then *count* requests one at a time on one keep-alive connection."""
    conn: Connection | None = None
    results: list[Result] = []
    try:
        for i in range(warmup + count):
            conn = await _reopen(conn, port)
            result = await conn.request(port, spec, timeout=timeout)
            if i >= warmup:
                results.append(result)
    finally:
        if conn is not None:
            conn.close()
    return results


@attrs.define
class ConcurrentRun:
    results: list[Result]
    window: float
    started: float


async def run_concurrent(
    port: int,
    spec: RequestSpec,
    *,
    connections: int,
    duration: float,
    warmup: float,
    timeout: float = DEFAULT_TIMEOUT,
) -> ConcurrentRun:
    """
    *connections* keep-alive connections, each sending requests back to back.

    Only responses that finished inside the window ``[warmup, warmup + duration]`` count.
    """
    start = time.perf_counter()
    window_start = start + warmup
    window_end = window_start + duration
    counted: list[Result] = []

    async def worker() -> None:
        conn: Connection | None = None
        try:
            while time.perf_counter() < window_end:
                conn = await _reopen(conn, port)
                result = await conn.request(port, spec, timeout=timeout)
                if window_start <= result.finished_at <= window_end or (
                    not result.ok and window_start <= time.perf_counter() <= window_end
                ):
                    counted.append(result)
        finally:
            if conn is not None:
                conn.close()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return ConcurrentRun(results=counted, window=duration, started=window_start)


async def run_batch(
    port: int,
    specs: Sequence[RequestSpec],
    *,
    concurrency: int,
    timeout: float = DEFAULT_TIMEOUT,
    on_result: Callable[[int, Result], None] | None = None,
) -> list[Result]:
    """Each spec once, at most *concurrency* at a time, each worker on its own connection."""
    results: list[Result | None] = [None] * len(specs)
    queue: asyncio.Queue[int] = asyncio.Queue()
    for i in range(len(specs)):
        queue.put_nowait(i)

    async def worker() -> None:
        conn: Connection | None = None
        try:
            while True:
                try:
                    i = queue.get_nowait()
                except asyncio.QueueEmpty:
                    return
                try:
                    conn = await _reopen(conn, port)
                except OSError as exc:
                    results[i] = Result(error=f"connect failed: {exc!r}")
                    conn = None
                    continue
                result = await conn.request(port, specs[i], timeout=timeout)
                results[i] = result
                if on_result is not None:
                    on_result(i, result)
        finally:
            if conn is not None:
                conn.close()

    await asyncio.gather(*(worker() for _ in range(min(concurrency, len(specs)))))
    return [r if r is not None else Result(error="not run") for r in results]


async def get_json(port: int, path: str, *, timeout: float = 10.0) -> Any:
    """A GET on a fresh connection (for the fake upstream's statistics)."""
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
        raw = await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    _head, _, body = raw.partition(b"\r\n\r\n")
    return json.loads(body)


async def post_empty(port: int, path: str, *, timeout: float = 10.0) -> None:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(HOST, port), timeout)
    try:
        writer.write(
            f"POST {path} HTTP/1.1\r\nHost: {HOST}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )
        await asyncio.wait_for(reader.read(), timeout)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
