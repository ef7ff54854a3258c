"""
Operational endpoints, none of which needs a key (contract §9): ``GET /healthz``,
``GET /readyz`` and ``GET /metrics``.

Readiness rules (``/readyz``):

1. While shutting down (contract §15): always 503 ``{"status": "shutting_down"}``.
2. The configuration must name an upstream; the settings were checked at start-up.
3. The upstream answered 2xx within the last ``READY_FRESH_SECONDS`` (a chat call, a model
   list, or an earlier probe): 200 ``{"status": "ready"}`` with no upstream call.
4. Otherwise the gateway asks the upstream for its model list now (Straico ``/v2/models``,
   OpenAI ``/models``), within ``READY_PROBE_SECONDS``: a 2xx answer is ready; anything else is
   503 ``{"status": "not_ready", "reason": "..."}``.
   In server-key mode the probe uses the server key, so a 401 or 403 (a wrong key) is not
   ready. In per-request mode the gateway has no key of its own: the probe goes without one,
   and a 401 or 403 shows that the upstream is up and answering, so it counts as ready.
5. Probes are not coalesced: orchestrators probe one instance at a time, a success makes the
   next ``READY_FRESH_SECONDS`` free, and a failing probe is bounded by its timeout.
"""

from __future__ import annotations

import asyncio
import json
import time

import httpx
from quart import Blueprint, Response

from adapters.errors import map_httpx_error

from ..context import current_gateway
from ..gateway import Gateway

__all__ = ["READY_FRESH_SECONDS", "READY_PROBE_SECONDS", "blueprint", "readiness_problem"]

blueprint = Blueprint("health", __name__)

#: An upstream 2xx younger than this makes ``/readyz`` answer without asking the upstream.
READY_FRESH_SECONDS = 30.0
#: The longest a readiness probe waits for the upstream (orchestrators time out at 1-5 s).
READY_PROBE_SECONDS = 2.0


@blueprint.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@blueprint.get("/readyz")
async def readyz() -> Response:
    gateway = current_gateway()
    if gateway.shutting_down:
        return _json(503, {"status": "shutting_down"})
    problem = await readiness_problem(gateway)
    if gateway.shutting_down:  # the shutdown began while the probe was out
        return _json(503, {"status": "shutting_down"})
    if problem is not None:
        return _json(503, {"status": "not_ready", "reason": problem})
    return _json(200, {"status": "ready"})


@blueprint.get("/metrics")
async def metrics() -> Response:
    body, content_type = current_gateway().metrics.render()
    return Response(body, status=200, content_type=content_type)


async def readiness_problem(gateway: Gateway) -> str | None:
    """Why the gateway cannot serve now, or None when it can (rules 2 to 4)."""
    if not gateway.settings.upstream_url:
        return "no upstream URL is configured"
    last_ok = gateway.last_upstream_ok
    if last_ok is not None and time.monotonic() - last_ok < READY_FRESH_SECONDS:
        return None
    request = gateway.upstream.models_request(gateway.keys.server_key)
    try:
        async with asyncio.timeout(READY_PROBE_SECONDS):
            response = await gateway.client.send(request)
    except TimeoutError:
        return f"the upstream did not answer within {READY_PROBE_SECONDS:g} s"
    except httpx.HTTPError as exc:
        error = map_httpx_error(exc, phase="head")
        return f"the upstream cannot be reached ({error.code})"
    status = response.status_code
    if 200 <= status < 300:
        gateway.last_upstream_ok = time.monotonic()
        return None
    if status in (401, 403):
        if not gateway.keys.server_key_mode:
            return None  # rule 4: per-request mode has no key of its own to try
        return f"the upstream refused the server key (HTTP {status})"
    return f"the upstream answered HTTP {status}"


def _json(status: int, body: dict[str, str]) -> Response:
    response = Response(json.dumps(body), status=status, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response
