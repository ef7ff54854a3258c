"""httpx exceptions to gateway errors (adapters.errors), by table and over real sockets."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest

from adapters.errors import HTTPX_EXCEPTIONS, Phase, map_httpx_error, mapping_httpx_errors
from engine.errors import (
    ClientError,
    GatewayError,
    InternalError,
    StreamTimeout,
    UpstreamDisconnected,
    UpstreamError,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamUnreachable,
)

# A literal copy of contract §7 for each httpx exception: (phase head, phase body).
EXPECTED: dict[type[Exception], tuple[type[GatewayError], type[GatewayError]]] = {
    httpx.ConnectError: (UpstreamUnreachable, UpstreamUnreachable),
    httpx.ConnectTimeout: (UpstreamTimeout, UpstreamTimeout),
    httpx.WriteTimeout: (UpstreamTimeout, UpstreamTimeout),
    httpx.PoolTimeout: (UpstreamTimeout, UpstreamTimeout),
    httpx.ReadTimeout: (UpstreamTimeout, StreamTimeout),
    httpx.TimeoutException: (UpstreamTimeout, UpstreamTimeout),
    httpx.ReadError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.WriteError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.CloseError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.RemoteProtocolError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.NetworkError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.ProtocolError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.TransportError: (UpstreamDisconnected, UpstreamDisconnected),
    httpx.DecodingError: (UpstreamMalformed, UpstreamMalformed),
    httpx.UnsupportedProtocol: (UpstreamUnreachable, UpstreamUnreachable),
    httpx.InvalidURL: (UpstreamUnreachable, UpstreamUnreachable),
    httpx.ProxyError: (UpstreamUnreachable, UpstreamUnreachable),
    httpx.TooManyRedirects: (UpstreamUnreachable, UpstreamUnreachable),
    httpx.LocalProtocolError: (InternalError, InternalError),
    httpx.StreamError: (InternalError, InternalError),
    httpx.StreamConsumed: (InternalError, InternalError),
    httpx.StreamClosed: (InternalError, InternalError),
    httpx.ResponseNotRead: (InternalError, InternalError),
    httpx.RequestNotRead: (InternalError, InternalError),
    httpx.CookieConflict: (InternalError, InternalError),
    httpx.RequestError: (UpstreamFailure, UpstreamFailure),
    httpx.HTTPStatusError: (UpstreamFailure, UpstreamFailure),
    httpx.HTTPError: (UpstreamFailure, UpstreamFailure),
}

ABSTRACT = {GatewayError, ClientError, UpstreamError}


def bare(cls: type[BaseException]) -> BaseException:
    """An instance without running ``__init__`` (some httpx exceptions need a request)."""
    return cls.__new__(cls)


def exported_exceptions() -> list[type[BaseException]]:
    """Every exception class httpx exports, and all their subclasses, recursively."""
    found: set[type[BaseException]] = set()
    pending = [
        obj
        for name in httpx.__all__
        if isinstance(obj := getattr(httpx, name), type) and issubclass(obj, Exception)
    ]
    while pending:
        cls = pending.pop()
        if cls not in found:
            found.add(cls)
            pending.extend(cls.__subclasses__())
    return sorted(found, key=lambda cls: f"{cls.__module__}.{cls.__qualname__}")


@pytest.mark.parametrize("phase", ["head", "body"])
@pytest.mark.parametrize("httpx_cls", list(EXPECTED), ids=lambda cls: cls.__name__)
def test_map_httpx_error_contract_row(httpx_cls: type[Exception], phase: Phase) -> None:
    expected = EXPECTED[httpx_cls][0 if phase == "head" else 1]
    assert type(map_httpx_error(bare(httpx_cls), phase=phase)) is expected


@pytest.mark.parametrize("phase", ["head", "body"])
def test_map_httpx_error_every_exported_exception_maps_to_a_concrete_error(phase: Phase) -> None:
    unmapped = [
        cls.__name__
        for cls in exported_exceptions()
        if type(map_httpx_error(bare(cls), phase=phase)) in ABSTRACT
    ]
    assert unmapped == []


def test_map_httpx_error_every_exported_exception_is_caught_by_the_context_manager() -> None:
    uncaught = [
        cls.__name__ for cls in exported_exceptions() if not issubclass(cls, HTTPX_EXCEPTIONS)
    ]
    assert uncaught == []


def test_map_httpx_error_expected_table_covers_every_exported_exception() -> None:
    """A new httpx exception must be added to the table above (and checked) on purpose."""
    exported = {cls for cls in exported_exceptions() if cls.__module__.startswith("httpx")}
    assert exported - set(EXPECTED) == set()


def test_map_httpx_error_unknown_subclass_maps_by_nearest_base() -> None:
    class SlowBodyTimeout(httpx.ReadTimeout):
        pass

    class FlakyNetwork(httpx.NetworkError):
        pass

    actual = (
        type(map_httpx_error(SlowBodyTimeout("slow"), phase="body")),
        type(map_httpx_error(FlakyNetwork("flaky"), phase="head")),
    )
    assert actual == (StreamTimeout, UpstreamDisconnected)


def test_map_httpx_error_non_httpx_exception_is_internal() -> None:
    assert type(map_httpx_error(KeyError("x"), phase="head")) is InternalError


def test_map_httpx_error_message_never_carries_the_exception_text() -> None:
    secret_url = "http://user:sk-secret@upstream.example/v1"
    error = map_httpx_error(httpx.ConnectError(f"cannot reach {secret_url}"), phase="head")
    assert "sk-secret" not in error.message


def test_mapping_httpx_errors_reraises_from_the_original() -> None:
    original = httpx.ReadTimeout("timed out")
    with pytest.raises(StreamTimeout) as caught, mapping_httpx_errors("body"):
        raise original
    assert caught.value.__cause__ is original


def test_mapping_httpx_errors_lets_other_exceptions_through() -> None:
    with pytest.raises(asyncio.CancelledError), mapping_httpx_errors("head"):
        raise asyncio.CancelledError


def test_mapping_httpx_errors_lets_gateway_errors_through() -> None:
    error = UpstreamMalformed("bad json")
    with pytest.raises(UpstreamMalformed) as caught, mapping_httpx_errors("body"):
        raise error
    assert caught.value is error


# --- real sockets on 127.0.0.1 ------------------------------------------------------------

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(handler: Handler) -> AsyncIterator[str]:
    """A plain asyncio server on an ephemeral loopback port; yields its base URL."""
    writers: list[asyncio.StreamWriter] = []

    async def tracked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await reader.readuntil(b"\r\n\r\n")  # the request head (the tests send no body)
        await handler(reader, writer)

    server = await asyncio.start_server(tracked, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in writers:
            writer.close()
        await server.wait_closed()


def closed_port() -> int:
    """A loopback port that was just free (nothing listens on it)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


async def test_mapping_httpx_errors_refused_connection_is_unreachable() -> None:
    async with httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(UpstreamUnreachable) as caught, mapping_httpx_errors("head"):
            await client.get(f"http://127.0.0.1:{closed_port()}/")
    assert isinstance(caught.value.__cause__, httpx.ConnectError)


async def test_mapping_httpx_errors_body_cut_short_is_disconnected() -> None:
    async def cut_short(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\ndata: partial")
        await writer.drain()
        writer.close()

    async with (
        serving(cut_short) as url,
        httpx.AsyncClient(timeout=5) as client,
        client.stream("GET", url) as response,
    ):
        with pytest.raises(UpstreamDisconnected) as caught, mapping_httpx_errors("body"):
            async for _ in response.aiter_bytes():
                pass
    assert isinstance(caught.value.__cause__, httpx.RemoteProtocolError)


async def test_mapping_httpx_errors_connection_closed_before_head_is_disconnected() -> None:
    async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async with serving(hang_up) as url, httpx.AsyncClient(timeout=5) as client:
        with pytest.raises(UpstreamDisconnected), mapping_httpx_errors("head"):
            await client.get(url)


async def test_mapping_httpx_errors_silent_body_is_stream_timeout() -> None:
    stop = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\r\n")
        await writer.drain()
        await stop.wait()

    timeout = httpx.Timeout(5, read=0.2)
    async with serving(stall) as url, httpx.AsyncClient(timeout=timeout) as client:
        try:
            async with client.stream("GET", url) as response:
                with pytest.raises(StreamTimeout), mapping_httpx_errors("body"):
                    async for _ in response.aiter_bytes():
                        pass
        finally:
            stop.set()


async def test_mapping_httpx_errors_silent_head_is_upstream_timeout() -> None:
    stop = asyncio.Event()

    async def stall(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await stop.wait()

    timeout = httpx.Timeout(5, read=0.2)
    async with serving(stall) as url, httpx.AsyncClient(timeout=timeout) as client:
        try:
            with pytest.raises(UpstreamTimeout) as caught, mapping_httpx_errors("head"):
                await client.get(url)
        finally:
            stop.set()
    assert type(caught.value) is UpstreamTimeout
