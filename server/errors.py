"""
Renders every failure as OpenAI's error shape; never an HTML page, never a traceback.

Errors carry their own status (engine/errors.py); this module only writes them out. Quart's
own HTTP exceptions (routing, body size) are translated into the engine's classes first.
"""

from __future__ import annotations

import json

from quart import Response
from werkzeug.exceptions import HTTPException

from engine.errors import (
    GatewayError,
    InternalError,
    InvalidJSON,
    InvalidValue,
    MethodNotAllowed,
    NotFound,
    RequestTooLarge,
)

__all__ = ["from_http_exception", "render"]


def render(error: GatewayError, *, request_id: str | None = None) -> Response:
    """The HTTP answer for *error* before any commit."""
    headers = dict(error.headers())
    if request_id is not None:
        headers["X-Request-ID"] = request_id
    return Response(
        json.dumps(error.to_dict()),
        status=error.status,
        content_type="application/json",
        headers=headers,
    )


def from_http_exception(exc: HTTPException) -> GatewayError:
    """Translate Quart/werkzeug's HTTP errors into the engine's error tree."""
    code = exc.code or 500
    if code == 404:
        return NotFound()
    if code == 405:
        return MethodNotAllowed()
    if code == 413:
        return RequestTooLarge()
    if code == 400:
        return InvalidJSON()
    if code < 500:
        return InvalidValue(exc.description or "The request is invalid.")
    return InternalError()
