"""
An aiohttp handler for ``POST /v1/chat/completions`` over the framework-neutral
:class:`adapters.service.ChatService`::

    app = web.Application(client_max_size=service.max_body_size)
    app.router.add_post("/v1/chat/completions", chat_completions_handler(service))
    web.run_app(app, handler_cancellation=True)

Rules:

1. Run it with ``handler_cancellation=True``: only then does aiohttp cancel the handler when the
   client disconnects, which the exchange turns into ``client_gone`` and an upstream cancel.
2. The head is sent only once the session decided it (contract §5): the handler awaits the
   first reply before it prepares the response.
3. It never decides anything the session decides.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from aiohttp import web

from engine.errors import GatewayError, RequestTooLarge, ShuttingDown, UnsupportedMediaType

from .driver import Exchange
from .service import ChatService, Reply, error_reply, first_reply, is_json_content_type

__all__ = ["chat_completions_handler"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def chat_completions_handler(
    service: ChatService,
    *,
    on_finish: Callable[[Exchange], None] | None = None,
) -> Handler:
    """The aiohttp handler answering chat completions through *service*."""

    async def handler(request: web.Request) -> web.StreamResponse:
        accepted_at = asyncio.get_running_loop().time()
        try:
            if service.shutting_down:  # contract §15: no new machine once shutdown began
                raise ShuttingDown()
            if (request.content_length or 0) > service.max_body_size:
                raise RequestTooLarge()
            upstream_key = service.authorize(request.headers.get("Authorization"))
            if not is_json_content_type(request.headers.get("Content-Type")):
                raise UnsupportedMediaType()
            body = await _read_body(request, service.max_body_size)
            exchange = service.open(
                body, upstream_key=upstream_key, on_finish=on_finish, accepted_at=accepted_at
            )
        except GatewayError as error:
            return _whole(error_reply(error))
        reply = await first_reply(exchange)
        if reply.stream is None:
            return _whole(reply)
        response = web.StreamResponse(status=reply.status, headers=dict(reply.headers))
        try:  # from the head on: a client leaving while it is sent must close the stream too
            await response.prepare(request)
            async for chunk in reply.stream:
                await response.write(chunk)
        finally:
            await reply.stream.aclose()
        await response.write_eof()
        return response

    return handler


async def _read_body(request: web.Request, limit: int) -> bytes:
    parts: list[bytes] = []
    size = 0
    async for part in request.content.iter_any():
        size += len(part)
        if size > limit:
            raise RequestTooLarge()
        parts.append(part)
    return b"".join(parts)


def _whole(reply: Reply) -> web.Response:
    headers = {k: v for k, v in reply.headers if k.lower() != "content-type"}
    response = web.Response(status=reply.status, body=reply.body, headers=headers)
    response.content_type = reply.content_type.split(";", 1)[0] or "application/json"
    return response
