"""
``POST /v1/chat/completions``: the Quart sink over the framework-neutral chat service.

The handler awaits the session's first output (the head or an error) before it returns a
response, so the head is never sent before the session commits (contract §5). Quart cancels
the handler, or closes the body, when the client disconnects; the exchange turns that into
``client_gone`` and cancels the upstream call.
"""

from __future__ import annotations

import time
from typing import Any

from quart import Blueprint, Response, g, request

from adapters.driver import Exchange
from adapters.service import first_reply, is_json_content_type
from engine.errors import RequestTooLarge, UnsupportedMediaType
from engine.session import Session

from ..context import accepted_at, base_fields, current_gateway, request_id, started_at
from ..gateway import Gateway
from ..logging import get_logger, log_request

__all__ = ["blueprint"]

blueprint = Blueprint("chat", __name__)


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
    if not is_json_content_type(request.headers.get("Content-Type")):
        raise UnsupportedMediaType()
    body = await _read_body(gateway.max_body_size)
    # Read from the request context now: the body generator runs outside it.
    fields = base_fields()
    begun = started_at()
    exchange = gateway.open(
        body,
        upstream_key=g.upstream_key,
        on_finish=lambda done: _finished(gateway, done, fields, begun),
        accepted_at=accepted_at(),
    )
    gateway.metrics.chat_started(exchange.session)  # operations (§16): active_streams
    reply = await first_reply(exchange)
    headers = {k: v for k, v in reply.headers if k.lower() != "content-type"}
    headers["X-Request-ID"] = request_id()
    if reply.stream is not None:
        response = Response(reply.stream, status=reply.status, headers=headers)
        response.timeout = None  # stack-notes §2: the gateway keeps its own deadlines
    else:
        response = Response(reply.body, status=reply.status, headers=headers)
    response.content_type = reply.content_type
    return response


def _finished(gateway: Gateway, exchange: Exchange, fields: dict[str, Any], begun: float) -> None:
    """The request is over: its log line, its metrics, and readiness (§11, §15, §16)."""
    session = exchange.session
    if session.exception is not None:  # a bug: the client got internal_error, we keep the cause
        get_logger().error(
            "unexpected_error", request_id=fields["request_id"], exc_info=session.exception
        )
    log_request(_log_fields(fields, exchange, begun, gateway.record_answer))
    gateway.metrics.observe_chat(session, duration=time.perf_counter() - begun)
    if any(200 <= status < 300 for status in session.upstream_statuses):
        gateway.last_upstream_ok = time.monotonic()


def _log_fields(
    fields: dict[str, Any], exchange: Exchange, begun: float, log_content: bool
) -> dict[str, Any]:
    session: Session = exchange.session
    line = {**fields, **session.summary()}
    line["ignored_fields"] = list(exchange.prepared.ignored_fields)
    line["duration_ms"] = round((time.perf_counter() - begun) * 1000, 3)
    if log_content:
        line["messages"] = session.request.raw.get("messages")
        line["answer"] = "".join(session.answer_text)
    return line
