"""
A plain ASGI app for ``POST /v1/chat/completions``: runs under Starlette, FastAPI or any ASGI
server, over the framework-neutral :class:`adapters.service.ChatService`.

Mount it as a route's endpoint (Starlette treats a non-function endpoint as an ASGI app)::

    service = ChatService(StraicoUpstream(), keys=KeyPolicy(server_key=KEY))
    app = Starlette(routes=[Route("/v1/chat/completions", ChatCompletionsApp(service))])

Rules:

1. The head is sent only once the session decided it (contract §5).
2. The adapter listens for ``http.disconnect`` itself while it answers, and cancels the
   answering task at once: the exchange records ``client_gone`` and cancels the upstream call.
3. It never decides anything the session decides; it only moves bytes and signals.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from engine.errors import (
    GatewayError,
    MethodNotAllowed,
    RequestTooLarge,
    ShuttingDown,
    UnsupportedMediaType,
)

from .driver import Exchange
from .service import ChatService, Reply, error_reply, first_reply, is_json_content_type

__all__ = ["ChatCompletionsApp"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


class _ClientLeft(Exception):
    """The client disconnected while its request body was being read."""


class ChatCompletionsApp:
    """The ASGI endpoint of one :class:`ChatService`."""

    def __init__(
        self,
        service: ChatService,
        *,
        on_finish: Callable[[Exchange], None] | None = None,
    ) -> None:
        self.service = service
        self._on_finish = on_finish

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        try:
            exchange = await self._open(scope, receive)
        except GatewayError as error:
            await _send_reply(send, error_reply(error))
            return
        except _ClientLeft:
            return
        answering = asyncio.ensure_future(self._answer(exchange, send))
        watching = asyncio.ensure_future(_wait_for_disconnect(receive))
        try:
            await asyncio.wait({answering, watching}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (answering, watching):  # rule 2: the client left, or we are cancelled
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await answering
            with contextlib.suppress(asyncio.CancelledError):
                await watching

    async def _open(self, scope: Scope, receive: Receive) -> Exchange:
        """The §7 checks in order, then the exchange."""
        accepted_at = asyncio.get_running_loop().time()
        if scope.get("method") != "POST":
            raise MethodNotAllowed()
        if self.service.shutting_down:  # contract §15: no new machine once shutdown began
            raise ShuttingDown()
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        limit = self.service.max_body_size
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise RequestTooLarge()
        upstream_key = self.service.authorize(headers.get("authorization"))
        if not is_json_content_type(headers.get("content-type")):
            raise UnsupportedMediaType()
        body = await _read_body(receive, limit)
        return self.service.open(
            body, upstream_key=upstream_key, on_finish=self._on_finish, accepted_at=accepted_at
        )

    async def _answer(self, exchange: Exchange, send: Send) -> None:
        reply = await first_reply(exchange)
        await _send_reply(send, reply)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.service.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return


async def _read_body(receive: Receive, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientLeft()
        part = message.get("body", b"")
        size += len(part)
        if size > limit:
            raise RequestTooLarge()
        parts.append(part)
        if not message.get("more_body", False):
            return b"".join(parts)


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


async def _send_reply(send: Send, reply: Reply) -> None:
    headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in reply.headers]
    start = {"type": "http.response.start", "status": reply.status, "headers": headers}
    if reply.stream is None:
        await send(start)
        await send({"type": "http.response.body", "body": reply.body, "more_body": False})
        return
    try:  # from the head on: a cancellation while sending it must close the stream too
        await send(start)
        async for chunk in reply.stream:
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
    finally:
        await reply.stream.aclose()
    await send({"type": "http.response.body", "body": b"", "more_body": False})
