"""
httpx exceptions to the gateway's errors (contract §7), in one place.

The table below maps every exception class httpx exports; an exception is mapped by the nearest
class of its method resolution order found in the table, so a future httpx subclass lands on its
nearest known base and never escapes unmapped. The *phase* only matters for ``ReadTimeout``: while
waiting for the response head it is ``UpstreamTimeout``; while reading a body it is
``StreamTimeout``.

::

    ConnectError, UnsupportedProtocol, InvalidURL, ProxyError, TooManyRedirects
                                                   -> UpstreamUnreachable
    ConnectTimeout, WriteTimeout, PoolTimeout      -> UpstreamTimeout
    ReadTimeout                                    -> UpstreamTimeout (head) / StreamTimeout (body)
    ReadError, WriteError, CloseError, RemoteProtocolError
                                                   -> UpstreamDisconnected
    DecodingError                                  -> UpstreamMalformed
    LocalProtocolError, StreamError (StreamConsumed, StreamClosed, ResponseNotRead,
    RequestNotRead), CookieConflict                -> InternalError (a bug on our side)
    bases: TimeoutException -> UpstreamTimeout; NetworkError, ProtocolError, TransportError
    -> UpstreamDisconnected; RequestError, HTTPStatusError, HTTPError -> UpstreamFailure

``HTTPStatusError`` only comes from ``raise_for_status()``, which the gateway does not use: it
reads statuses itself (``engine.upstream_errors``). Messages are fixed texts: never the
exception's own text, which may hold a URL with credentials.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Literal

import httpx

from engine.errors import (
    GatewayError,
    InternalError,
    StreamTimeout,
    UpstreamDisconnected,
    UpstreamFailure,
    UpstreamMalformed,
    UpstreamTimeout,
    UpstreamUnreachable,
)

__all__ = ["HTTPX_EXCEPTIONS", "Phase", "map_httpx_error", "mapping_httpx_errors"]

#: ``head``: sending the request and waiting for the response head; ``body``: reading the body.
Phase = Literal["head", "body"]

#: The roots of every exception httpx raises (not all derive from ``httpx.HTTPError``).
HTTPX_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.HTTPError,
    httpx.InvalidURL,
    httpx.CookieConflict,
    httpx.StreamError,
)

_BAD_URL = "The gateway's upstream URL is not usable. The operator must fix it."

# httpx class -> (gateway class, message; None keeps the class's default message)
_TABLE: dict[type[Exception], tuple[type[GatewayError], str | None]] = {
    httpx.ConnectError: (UpstreamUnreachable, None),
    httpx.UnsupportedProtocol: (UpstreamUnreachable, _BAD_URL),
    httpx.InvalidURL: (UpstreamUnreachable, _BAD_URL),
    httpx.ProxyError: (
        UpstreamUnreachable,
        "The gateway could not reach the upstream through its proxy. Retry later.",
    ),
    httpx.TooManyRedirects: (
        UpstreamUnreachable,
        "The upstream redirected the gateway too many times. The operator must fix the URL.",
    ),
    httpx.ConnectTimeout: (
        UpstreamTimeout,
        "The gateway could not connect to the upstream in time. Retry later.",
    ),
    httpx.WriteTimeout: (
        UpstreamTimeout,
        "The gateway could not send the request to the upstream in time. Retry later.",
    ),
    httpx.PoolTimeout: (
        UpstreamTimeout,
        "The gateway had no free connection to the upstream in time. Retry later.",
    ),
    httpx.ReadTimeout: (UpstreamTimeout, None),
    httpx.TimeoutException: (UpstreamTimeout, None),
    httpx.ReadError: (UpstreamDisconnected, None),
    httpx.WriteError: (UpstreamDisconnected, None),
    httpx.CloseError: (UpstreamDisconnected, None),
    httpx.RemoteProtocolError: (UpstreamDisconnected, None),
    httpx.NetworkError: (UpstreamDisconnected, None),
    httpx.ProtocolError: (UpstreamDisconnected, None),
    httpx.TransportError: (UpstreamDisconnected, None),
    httpx.DecodingError: (
        UpstreamMalformed,
        "The upstream sent a body the gateway could not decode.",
    ),
    httpx.LocalProtocolError: (InternalError, None),
    httpx.StreamError: (InternalError, None),
    httpx.CookieConflict: (InternalError, None),
    httpx.RequestError: (UpstreamFailure, None),
    httpx.HTTPStatusError: (UpstreamFailure, None),
    httpx.HTTPError: (UpstreamFailure, None),
}

# Where the phase changes the answer.
_BODY_TABLE: dict[type[Exception], tuple[type[GatewayError], str | None]] = {
    httpx.ReadTimeout: (StreamTimeout, None),
}


def map_httpx_error(exc: BaseException, *, phase: Phase) -> GatewayError:
    """
    The gateway error for *exc*, raised by httpx during *phase* (the caller raises it).

    Anything that is not an httpx exception maps to ``InternalError``: passing one is a bug.
    """
    for cls in type(exc).__mro__:
        if phase == "body" and cls in _BODY_TABLE:
            error_cls, message = _BODY_TABLE[cls]
            return error_cls(message)
        if cls in _TABLE:
            error_cls, message = _TABLE[cls]
            return error_cls(message)
    return InternalError()


@contextlib.contextmanager
def mapping_httpx_errors(phase: Phase) -> Iterator[None]:
    """
    Run the block, re-raising any httpx exception as its gateway error (``from`` the original).

    Other exceptions, cancellation included, pass through unchanged.
    """
    try:
        yield
    except HTTPX_EXCEPTIONS as exc:
        raise map_httpx_error(exc, phase=phase) from exc
