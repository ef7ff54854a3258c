"""
``POST /v1/chat/completions``: validates, then hands the request to an engine session.

The handler awaits the session's first output (the head or an error) before it returns a
response, so the head is never sent before the session commits (contract §5).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from typing import Any

from quart import Blueprint, Response, g, request

from adapters.driver import Exchange, Frame
from engine.errors import RequestTooLarge, UnsupportedMediaType
from engine.events import SendHead
from engine.request import parse_chat_request
from engine.session import Session

from ..context import base_fields, current_gateway, request_id, started_at
from ..gateway import make_chat_id
from ..logging import log_request

__all__ = ["blueprint"]

blueprint = Blueprint("chat", __name__)


def _is_json(content_type: str | None) -> bool:
    mime = (content_type or "").split(";", 1)[0].strip().lower()
    return mime == "application/json" or (
        mime.startswith("application/") and mime.endswith("+json")
    )


async def _read_body(limit: int) -> bytes:
    """Read the body, counting a chunked upload as it arrives (413 past *limit*)."""
    parts: list[bytes] = []
    size = 0
    async for part in request.body:
        size += len(part)
        if size > limit:
            raise RequestTooLarge()
        parts.append(part)
    return b"".join(parts)


@blueprint.post("/chat/completions")
async def chat_completions() -> Response:
    gateway = current_gateway()
    upstream_key: str = g.upstream_key
    if not _is_json(request.headers.get("Content-Type")):
        raise UnsupportedMediaType()
    chat = parse_chat_request(await _read_body(gateway.settings.max_body_size))
    prepared = gateway.upstream.prepare(chat)

    loop_now = _loop_time()
    session = Session(
        chat,
        config=gateway.config,
        cache=gateway.cache,
        cache_key=(gateway.upstream.cache_prefix, chat.model),
        now=loop_now,
        chat_id=make_chat_id(),
        created=int(time.time()),
        server_key=gateway.keys.server_key_mode,
        needs_whole=prepared.needs_whole,
        secrets=gateway.keys.secrets(upstream_key),
        transform_answer=prepared.transform,
        record_answer=gateway.settings.log_content,
    )
    fields = base_fields()
    fields["ignored_fields"] = list(prepared.ignored_fields)
    if gateway.settings.log_content:
        fields["messages"] = chat.raw.get("messages")
    begun = started_at()
    rid = request_id()

    def on_finish(finished: Session) -> None:
        gateway.exchanges.discard(exchange)
        log_request(_log_fields(fields, finished, begun, gateway.settings.log_content))
        # Operations (§15, §16): metrics, and a 2xx from the upstream keeps /readyz fresh.
        gateway.metrics.observe_chat(finished, duration=time.perf_counter() - begun)
        if any(200 <= status < 300 for status in finished.upstream_statuses):
            gateway.last_upstream_ok = time.monotonic()

    exchange = Exchange(
        session,
        gateway.upstream,
        prepared,
        gateway.client,
        key=upstream_key,
        on_finish=on_finish,
        shutting_down=lambda: gateway.shutting_down,
    )
    gateway.exchanges.add(exchange)
    gateway.metrics.chat_started(session)  # operations (§16): active_streams
    frames = exchange.frames()
    head = await anext(frames)
    assert isinstance(head, SendHead), "the session's first output is its head"
    headers = dict(head.headers)
    headers["X-Request-ID"] = rid
    content_type = headers.pop("Content-Type")
    if session.client_stream and session.committed:
        response = Response(_body(frames), status=head.status, headers=headers)
        response.content_type = content_type
        response.timeout = None  # stack-notes §2: the gateway keeps its own deadlines
        return response
    body = b"".join([frame async for frame in frames if isinstance(frame, bytes)])
    response = Response(body, status=head.status, headers=headers)
    response.content_type = content_type
    return response


async def _body(frames: AsyncIterator[Frame]) -> AsyncIterator[bytes]:
    """The rest of a committed stream; closing it (client gone) closes the exchange."""
    try:
        async for frame in frames:
            if isinstance(frame, bytes):
                yield frame
    finally:
        await frames.aclose()  # type: ignore[attr-defined]


def _loop_time() -> float:
    import asyncio

    return asyncio.get_running_loop().time()


def _log_fields(
    fields: dict[str, Any], session: Session, begun: float, log_content: bool
) -> dict[str, Any]:
    line = {**fields, **session.summary()}
    line["duration_ms"] = round((time.perf_counter() - begun) * 1000, 3)
    if log_content:
        line["answer"] = "".join(session.answer_text)
    return line
