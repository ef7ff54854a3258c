"""Per-request context shared by the routes: the request id, the timer, the log fields."""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from typing import Any

from quart import current_app, g, request

from .gateway import Gateway

__all__ = ["base_fields", "current_gateway", "request_id", "sanitise_request_id"]

_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def sanitise_request_id(given: str | None) -> str:
    """Keep a client's ``X-Request-ID`` when it is 1-128 of ``[A-Za-z0-9._:-]`` (§8)."""
    if given is not None and _REQUEST_ID.fullmatch(given):
        return given
    return "req_" + secrets.token_hex(12)


def current_gateway() -> Gateway:
    gateway: Gateway = current_app.extensions["gateway"]
    return gateway


def request_id() -> str:
    rid: str | None = getattr(g, "request_id", None)
    if rid is None:
        rid = g.request_id = sanitise_request_id(request.headers.get("X-Request-ID"))
    return rid


def accepted_at() -> float:
    """When the request arrived, in the event loop's clock (the session's time base)."""
    at: float | None = getattr(g, "accepted_at", None)
    if at is None:
        at = g.accepted_at = asyncio.get_running_loop().time()
    return at


def started_at() -> float:
    at: float | None = getattr(g, "started_at", None)
    if at is None:
        at = g.started_at = time.perf_counter()
    return at


def base_fields() -> dict[str, Any]:
    """The log line's fields known from the request alone."""
    gateway = current_gateway()
    return {
        "request_id": request_id(),
        "method": request.method,
        "path": request.path,
        "upstream": gateway.upstream.cache_prefix,
    }
