"""
The chat completions service, framework-neutral: what any web framework needs to answer
``POST /v1/chat/completions`` through the engine.

A framework adapter (Quart in ``server/``, :mod:`adapters.asgi`, :mod:`adapters.aiohttp_app`)
only moves bytes and signals:

1. it refuses a new request once :attr:`ChatService.shutting_down` is set (503), checks the
   caller with :meth:`ChatService.authorize` and the content type with
   :func:`is_json_content_type`, reads the body up to ``max_body_size``;
2. it opens an exchange with :meth:`ChatService.open` and awaits :func:`first_reply`, which
   holds the response head back until the session has decided it (contract §5);
3. it sends that reply, streaming :attr:`Reply.stream` chunk by chunk when there is one;
4. when the client disconnects it cancels the task sending the reply (or closes the stream)
   at once; the exchange then tells the session ``client_gone`` and cancels the upstream call.

It never decides anything the session decides. Errors raised by steps 1-2 are
:class:`engine.errors.GatewayError` leaves; :func:`error_reply` renders them.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import string
import time
from collections.abc import AsyncGenerator, Callable
from typing import cast

import attrs
import httpx

from engine.capability import CapabilityCache
from engine.config import StreamingConfig
from engine.errors import GatewayError
from engine.events import SendHead
from engine.request import parse_chat_request
from engine.session import Session

from .driver import Exchange, Frame
from .keys import KeyPolicy
from .upstream import Upstream, make_client

__all__ = [
    "ChatService",
    "Reply",
    "ReplyStream",
    "error_reply",
    "first_reply",
    "is_json_content_type",
    "make_chat_id",
]

DEFAULT_MAX_BODY_SIZE = 16 * 1024 * 1024
_ALPHANUMERIC = string.ascii_letters + string.digits


def make_chat_id() -> str:
    """``chatcmpl-`` and 24 random alphanumerics (contract §5)."""
    # One draw of random bytes instead of 24 (secrets.choice per character cost ~20 µs).
    # Only bytes below 248 = 4 x 62 are used, so every character is equally likely.
    while True:
        chars = [_ALPHANUMERIC[b % 62] for b in secrets.token_bytes(40) if b < 248]
        if len(chars) >= 24:
            return "chatcmpl-" + "".join(chars[:24])


def is_json_content_type(content_type: str | None) -> bool:
    """``application/json`` or ``application/*+json`` (contract §7, the 415 row)."""
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


class ReplyStream:
    """
    The rest of a committed SSE stream: its body bytes, in order.

    :meth:`aclose` before the end means the client left, and takes effect at once, even when
    nothing was read yet (an adapter whose client leaves while the head is being sent).
    An async generator would not do: closing one that never started skips its ``finally``.
    """

    def __init__(self, frames: AsyncGenerator[Frame, None]) -> None:
        self._frames = frames

    def __aiter__(self) -> ReplyStream:
        return self

    async def __anext__(self) -> bytes:
        while True:
            frame = await anext(self._frames)  # StopAsyncIteration ends the stream
            if isinstance(frame, bytes):
                return frame

    async def aclose(self) -> None:
        await self._frames.aclose()


@attrs.frozen
class Reply:
    """What to answer: a whole body, or a committed stream to send chunk by chunk."""

    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""
    #: The rest of a committed SSE stream; closing it early means the client left.
    stream: ReplyStream | None = None

    @property
    def content_type(self) -> str:
        return next((v for k, v in self.headers if k.lower() == "content-type"), "")


def error_reply(error: GatewayError) -> Reply:
    """An OpenAI error answer for *error*, before any commit."""
    headers = (("Content-Type", "application/json"), *error.headers())
    return Reply(error.status, headers, json.dumps(error.to_dict()).encode())


async def first_reply(exchange: Exchange) -> Reply:
    """Run *exchange* until the session's head; the reply is then what to send."""
    frames = cast(AsyncGenerator[Frame, None], exchange.frames())  # an async generator
    head = await anext(frames)
    if not isinstance(head, SendHead):  # the session always decides its head first
        raise TypeError(f"the session's first output was {head!r}, not its head")
    if exchange.session.client_stream and exchange.session.committed:
        return Reply(head.status, head.headers, stream=ReplyStream(frames))
    body = b"".join([frame async for frame in frames if isinstance(frame, bytes)])
    return Reply(head.status, head.headers, body)


class ChatService:
    """One upstream, its shared client and capability cache, and the exchanges in flight."""

    def __init__(
        self,
        upstream: Upstream,
        *,
        config: StreamingConfig | None = None,
        keys: KeyPolicy | None = None,
        connect_timeout: float = 10.0,
        max_connections: int = 1000,
        max_body_size: int = DEFAULT_MAX_BODY_SIZE,
        record_answer: bool = False,
    ) -> None:
        self.upstream = upstream
        self.config = config or StreamingConfig()
        self.keys = keys or KeyPolicy()
        self.cache = CapabilityCache(ttl=self.config.detection_cache_duration)
        self.max_body_size = max_body_size
        self.record_answer = record_answer
        self.exchanges: set[Exchange] = set()
        self.shutting_down = False
        self._connect_timeout = connect_timeout
        self._max_connections = max_connections
        self._client: httpx.AsyncClient | None = None

    @property
    def client(self) -> httpx.AsyncClient:
        """The one shared upstream client, made on first use (inside the serving loop)."""
        if self._client is None:
            self._client = make_client(
                self.config,
                connect_timeout=self._connect_timeout,
                max_connections=self._max_connections,
            )
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def authorize(self, authorization: str | None) -> str:
        """The upstream key for a caller; raises ``Unauthorized`` (contract §9)."""
        return self.keys.upstream_key(authorization)

    def open(
        self,
        body: bytes,
        *,
        upstream_key: str | None,
        on_finish: Callable[[Exchange], None] | None = None,
        accepted_at: float | None = None,
    ) -> Exchange:
        """
        Validate *body* and make its exchange, ready to run.

        *accepted_at* is when the request arrived, in the loop's clock: heartbeat ticks and the
        trace count from it (§5), not from when the body was read and parsed.

        Raises:
            GatewayError: ``invalid_json``, ``invalid_value`` or ``unsupported_parameter``.
        """
        chat = parse_chat_request(body)
        prepared = self.upstream.prepare(chat)
        session = Session(
            chat,
            config=self.config,
            cache=self.cache,
            cache_key=(self.upstream.cache_prefix, chat.model),
            now=asyncio.get_running_loop().time() if accepted_at is None else accepted_at,
            chat_id=make_chat_id(),
            created=int(time.time()),
            server_key=self.keys.server_key_mode,
            needs_whole=prepared.needs_whole,
            secrets=self.keys.secrets(upstream_key),
            transform_answer=prepared.transform,
            record_answer=self.record_answer,
        )

        def finished(_: Session) -> None:
            self.exchanges.discard(exchange)
            if on_finish is not None:
                on_finish(exchange)

        exchange = Exchange(
            session,
            self.upstream,
            prepared,
            self.client,
            key=upstream_key,
            on_finish=finished,
            shutting_down=lambda: self.shutting_down,
        )
        self.exchanges.add(exchange)
        return exchange

    def shut_down_all(self) -> None:
        """
        The shutdown grace period is over: end every exchange in flight (§15).

        A host sets :attr:`shutting_down` when its shutdown begins, so new requests are
        refused and a cancellation is not taken for a client leaving, and calls this at the
        end of its grace period, in the serving loop.
        """
        self.shutting_down = True
        for exchange in list(self.exchanges):
            exchange.shut_down()
