"""
A fast fake upstream: raw asyncio HTTP/1.1 with keep-alive, so it is never the bottleneck.

What it answers is chosen by the requested model id, ``<kind>(:<key>=<value>)*``:

- kinds: ``stream`` (SSE to ``stream: true``, JSON otherwise), ``json`` (JSON whatever is
  asked), ``reject`` (400 with ``param: "stream"`` to ``stream: true``, JSON otherwise);
- ``chunks=N`` content chunks of a stream (default 100); ``words=N`` words of a JSON answer
  (default: as many as ``chunks``); ``delay=MS`` before the head; ``gap=MS`` between chunks
  (0: the whole stream in one write, each event its own HTTP chunk); ``id=X`` a tag: the time
  a whole (JSON) answer was written is kept under it (``GET /_stats``).

Paths: ``POST /v1/chat/completions`` (any prefix before ``/chat/completions``) answers in
OpenAI's shapes; ``POST /v2/chat/completions`` in Straico's (top-level ``choices`` plus
``price`` and ``words``). ``GET /_stats`` returns the call counts per model and stream flag, the
calls in flight and the tagged answer times (``time.perf_counter``, CLOCK_MONOTONIC on Linux,
so comparable across processes); ``POST /_reset`` clears them.

Content chunk *i* is ``"w<i> "`` and a JSON answer of *n* words is ``"w0 w1 ... w<n-1>"``, so a
client can check that every chunk arrived, in order.

Run it with ``python -m bench.fake_upstream --port 0``: it prints ``PORT <n>`` once listening.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import resource
import sys
import time
from collections.abc import Callable
from typing import Any, cast

import attrs

__all__ = ["ModelSpec", "UpstreamStats", "parse_model", "serve", "stream_text"]

MAX_HEAD_BYTES = 64 * 1024
MAX_BODY_BYTES = 16 * 1024 * 1024
RESPONSE_CACHE_SIZE = 256
KINDS = ("stream", "json", "reject")


@attrs.frozen
class ModelSpec:
    """What one model id asks the fake upstream to do."""

    kind: str = "stream"
    chunks: int = 100
    words: int | None = None
    delay_ms: float = 0.0
    gap_ms: float = 0.0
    tag: str | None = None

    @property
    def answer_words(self) -> int:
        return self.chunks if self.words is None else self.words


def parse_model(model: str) -> ModelSpec:
    """``stream:chunks=100:gap=1`` → :class:`ModelSpec`; unknown keys are ignored."""
    kind, *options = model.split(":")
    values: dict[str, str] = {}
    for option in options:
        key, _, value = option.partition("=")
        values[key] = value
    return ModelSpec(
        kind=kind if kind in KINDS else "json",
        chunks=int(values.get("chunks", 100)),
        words=int(values["words"]) if "words" in values else None,
        delay_ms=float(values.get("delay", 0)),
        gap_ms=float(values.get("gap", 0)),
        tag=values.get("id"),
    )


def stream_text(count: int) -> list[str]:
    """The content of each chunk of a stream of *count* chunks."""
    return [f"w{i} " for i in range(count)]


def whole_text(words: int) -> str:
    return " ".join(f"w{i}" for i in range(words))


def _chunk_event(model: str, delta: dict[str, Any], finish: str | None = None) -> bytes:
    obj = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": model,
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
    }
    return b"data: " + json.dumps(obj, separators=(",", ":")).encode() + b"\n\n"


def _usage(words: int) -> dict[str, int]:
    return {"prompt_tokens": 10, "completion_tokens": words, "total_tokens": 10 + words}


def sse_events(model: str, spec: ModelSpec, include_usage: bool) -> list[bytes]:
    """The SSE events of one stream: role, content chunks, finish, usage if asked, [DONE]."""
    events = [_chunk_event(model, {"role": "assistant", "content": ""})]
    events.extend(_chunk_event(model, {"content": text}) for text in stream_text(spec.chunks))
    events.append(_chunk_event(model, {}, "stop"))
    if include_usage:
        usage = {
            "id": "chatcmpl-upstream",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [],
            "usage": _usage(spec.chunks),
        }
        events.append(b"data: " + json.dumps(usage, separators=(",", ":")).encode() + b"\n\n")
    events.append(b"data: [DONE]\n\n")
    return events


def completion_body(model: str, spec: ModelSpec, *, straico: bool) -> bytes:
    """A whole answer: OpenAI's ``chat.completion``, or Straico's with price and words."""
    words = spec.answer_words
    body: dict[str, Any] = {
        "id": "chatcmpl-upstream",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": whole_text(words)},
                "finish_reason": "stop",
            }
        ],
        "usage": _usage(words),
    }
    if straico:
        body["price"] = {"input": 0.01, "output": 0.2, "total": 0.21}
        body["words"] = {"input": 1, "output": words, "total": words + 1}
    return json.dumps(body, separators=(",", ":")).encode()


REJECTION = json.dumps(
    {
        "error": {
            "message": "stream is not supported",
            "type": "invalid_request_error",
            "param": "stream",
            "code": None,
        }
    }
).encode()


def _head(status: int, content_type: str, length: int | None) -> bytes:
    reason = {200: "OK", 400: "Bad Request", 404: "Not Found"}.get(status, "OK")
    lines = [f"HTTP/1.1 {status} {reason}", f"content-type: {content_type}"]
    if length is None:
        lines.append("transfer-encoding: chunked")
    else:
        lines.append(f"content-length: {length}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _chunked(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


@attrs.define
class UpstreamStats:
    """What the fake upstream counts: calls per model and stream flag, and answer times."""

    calls: int = 0
    #: model → [calls with stream true, calls with stream false]
    by_model: dict[str, list[int]] = attrs.Factory(dict)
    inflight: int = 0
    most_inflight: int = 0
    answered_at: dict[str, float] = attrs.Factory(dict)
    #: model → when the first rejection of a stream flag was written
    rejected_at: dict[str, float] = attrs.Factory(dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "calls": self.calls,
            "by_model": self.by_model,
            "inflight": self.inflight,
            "most_inflight": self.most_inflight,
            "answered_at": self.answered_at,
            "rejected_at": self.rejected_at,
        }


@attrs.define
class _Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes


class UpstreamProtocol(asyncio.Protocol):
    """One client connection; requests are answered one at a time, in order (keep-alive)."""

    def __init__(self, server: FakeUpstream) -> None:
        self._server = server
        self._buffer = bytearray()
        self._transport: asyncio.Transport | None = None
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._task is not None and not self._task.done():
            self._task.cancel()

    def data_received(self, data: bytes) -> None:
        self._buffer += data
        if self._task is None or self._task.done():
            self._next()

    def _next(self) -> None:
        request = self._parse()
        if request is None:
            return
        self._task = asyncio.get_running_loop().create_task(self._answer(request))

    def _parse(self) -> _Request | None:
        end = self._buffer.find(b"\r\n\r\n")
        if end < 0:
            if len(self._buffer) > MAX_HEAD_BYTES:
                self._abort()
            return None
        head = bytes(self._buffer[:end]).decode("latin-1").split("\r\n")
        method, path, _ = head[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in head[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        length = int(headers.get("content-length", "0"))
        if "chunked" in headers.get("transfer-encoding", "") or length > MAX_BODY_BYTES:
            self._abort()  # the clients under test always send a Content-Length
            return None
        if len(self._buffer) < end + 4 + length:
            return None
        body = bytes(self._buffer[end + 4 : end + 4 + length])
        del self._buffer[: end + 4 + length]
        return _Request(method, path.split("?", 1)[0], headers, body)

    def _abort(self) -> None:
        self._closed = True
        if self._transport is not None:
            self._transport.abort()

    def _write(self, data: bytes) -> None:
        if not self._closed and self._transport is not None:
            self._transport.write(data)

    async def _answer(self, request: _Request) -> None:
        try:
            await self._server.answer(request, self._write)
        finally:
            if request.headers.get("connection", "").lower() == "close":
                self._abort()
        if not self._closed and self._buffer:
            self._next()


class FakeUpstream:
    """The server's state: response cache and statistics."""

    def __init__(self) -> None:
        self.stats = UpstreamStats()
        self._cache: dict[tuple[str, bool, bool], list[bytes]] = {}

    async def answer(self, request: _Request, write: Callable[[bytes], None]) -> None:
        if request.path == "/_stats":
            body = json.dumps(self.stats.to_dict()).encode()
            write(_head(200, "application/json", len(body)) + body)
            return
        if request.path == "/_reset":
            self.stats = UpstreamStats()
            write(_head(200, "application/json", 2) + b"{}")
            return
        if request.method != "POST" or not request.path.endswith("/chat/completions"):
            write(_head(404, "application/json", 2) + b"{}")
            return
        payload = json.loads(request.body)
        model = str(payload.get("model", ""))
        stream = payload.get("stream") is True
        options = payload.get("stream_options") or {}
        include_usage = stream and bool(options.get("include_usage"))
        straico = request.path.startswith("/v2/")
        spec = parse_model(model)
        stats = self.stats
        stats.calls += 1
        stats.by_model.setdefault(model, [0, 0])[0 if stream else 1] += 1
        stats.inflight += 1
        stats.most_inflight = max(stats.most_inflight, stats.inflight)
        try:
            if spec.delay_ms:
                await asyncio.sleep(spec.delay_ms / 1000)
            # Times are taken just before the write: taken after it, they could include the
            # time this process waited for the core while the client was already reading.
            if stream and spec.kind == "reject":
                stats.rejected_at.setdefault(model, time.perf_counter())
                write(_head(400, "application/json", len(REJECTION)) + REJECTION)
            elif stream and spec.kind == "stream" and not straico:
                await self._stream(model, spec, include_usage, write)
            else:
                body = completion_body(model, spec, straico=straico)
                if spec.tag is not None:
                    stats.answered_at[spec.tag] = time.perf_counter()
                write(_head(200, "application/json", len(body)) + body)
        finally:
            stats.inflight -= 1

    async def _stream(
        self, model: str, spec: ModelSpec, include_usage: bool, write: Callable[[bytes], None]
    ) -> None:
        key = (model, include_usage, spec.tag is None)
        pieces = self._cache.get(key)
        if pieces is None:
            pieces = [_chunked(event) for event in sse_events(model, spec, include_usage)]
            if spec.tag is None:  # tagged models are one-offs: do not fill the cache
                if len(self._cache) >= RESPONSE_CACHE_SIZE:
                    self._cache.clear()
                self._cache[key] = pieces
        head = _head(200, "text/event-stream", None)
        if not spec.gap_ms:
            # One write: the upstream costs next to nothing and never shares its core's time
            # with the load generator mid-stream. Each event stays its own HTTP chunk, which
            # an HTTP client (h11 under httpx) hands over one by one.
            write(b"".join((head, *pieces, b"0\r\n\r\n")))
            return
        write(head + pieces[0])
        for piece in pieces[1:]:
            await asyncio.sleep(spec.gap_ms / 1000)
            write(piece)
        write(b"0\r\n\r\n")


async def serve(
    host: str = "127.0.0.1", port: int = 0, *, ready: Callable[[int], None] | None = None
) -> None:
    """Serve until cancelled; *ready* gets the port once listening."""
    upstream = FakeUpstream()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        lambda: UpstreamProtocol(upstream), host, port, backlog=4096, reuse_address=True
    )
    bound = server.sockets[0].getsockname()[1]
    if ready is not None:
        ready(bound)
    async with server:
        await server.serve_forever()


def raise_open_files_limit() -> None:
    """Many concurrent streams need many sockets: soft limit up to the hard one."""
    with contextlib.suppress(ValueError, OSError):
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def install_uvloop() -> str:
    """Use uvloop where installed (the fake upstream and load generator must stay fast)."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    raise_open_files_limit()
    install_uvloop()

    def ready(port: int) -> None:
        print(f"PORT {port}", flush=True)

    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, ready=ready))
    sys.exit(0)


if __name__ == "__main__":
    main()
