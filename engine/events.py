"""
What the session is told (inputs) and what it asks the driver to do (actions).

Inputs are nouns for what arrived, as h11 names its events; actions are imperative, so the
driver reads as "do this". All are small frozen attrs classes.
"""

from __future__ import annotations

import attrs

from .errors import GatewayError

__all__ = [
    "Action",
    "CallUpstream",
    "CancelUpstream",
    "ClientGone",
    "Delivered",
    "Finish",
    "Input",
    "SendBytes",
    "SendHead",
    "ShutDown",
    "UpstreamData",
    "UpstreamEnd",
    "UpstreamFailed",
    "UpstreamHead",
]

# --- inputs -------------------------------------------------------------------------------


@attrs.frozen
class UpstreamHead:
    """The upstream answered with this status and content type."""

    status: int
    content_type: str = ""
    retry_after: str | None = None


@attrs.frozen
class UpstreamData:
    """Raw body bytes from the upstream, as they arrived."""

    data: bytes


@attrs.frozen
class UpstreamEnd:
    """The upstream body ended cleanly (the connection did not break)."""


@attrs.frozen
class UpstreamFailed:
    """The upstream call failed in transport (classified by the adapter)."""

    error: GatewayError


@attrs.frozen
class ClientGone:
    """The client disconnected."""


@attrs.frozen
class ShutDown:
    """The shutdown grace period ended with this request in flight."""


@attrs.frozen
class Delivered:
    """Every output so far was handed to the client."""


Input = (
    UpstreamHead | UpstreamData | UpstreamEnd | UpstreamFailed | ClientGone | ShutDown | Delivered
)

# --- actions ------------------------------------------------------------------------------


@attrs.frozen
class CallUpstream:
    """Call the upstream with ``stream`` set so; any previous call is over."""

    stream: bool


@attrs.frozen
class CancelUpstream:
    """Close the upstream call now; its further inputs are not wanted."""


@attrs.frozen
class SendHead:
    """Send the response head to the client."""

    status: int
    headers: tuple[tuple[str, str], ...]


@attrs.frozen
class SendBytes:
    """Send these body bytes to the client."""

    data: bytes


@attrs.frozen
class Finish:
    """End the response body normally; the session wants nothing more."""


Action = CallUpstream | CancelUpstream | SendHead | SendBytes | Finish
