"""``GET /v1/models`` and ``GET /v1/models/{id}``: the upstream's chat models, OpenAI-shaped."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from quart import Blueprint, Response, g

from adapters.errors import map_httpx_error
from engine.errors import GatewayError, ModelNotFound, UpstreamMalformed
from engine.upstream_errors import classify_upstream_error

from ..context import base_fields, current_gateway, request_id, started_at
from ..logging import log_request

__all__ = ["blueprint"]

blueprint = Blueprint("models", __name__)


async def _fetch(request: httpx.Request, *, model: str) -> Any:
    gateway = current_gateway()
    try:
        response = await gateway.client.send(request)
    except httpx.HTTPError as exc:
        raise map_httpx_error(exc, phase="head") from exc
    if not 200 <= response.status_code < 300:
        error = classify_upstream_error(
            response.status_code,
            response.content,
            model=model,
            server_key=gateway.keys.server_key_mode,
            stream_requested=False,
            retry_after=response.headers.get("retry-after"),
            secrets=gateway.keys.secrets(g.upstream_key),
        )
        assert error is not None  # only a stream:true call can be a rejection
        raise error
    gateway.last_upstream_ok = time.monotonic()
    try:
        return response.json()
    except ValueError as exc:
        raise UpstreamMalformed("The upstream's model list is not valid JSON.") from exc


def _answer(body: dict[str, Any]) -> Response:
    return Response(
        json.dumps(body),
        status=200,
        content_type="application/json",
        headers={"X-Request-ID": request_id()},
    )


def _log(status: int, error: GatewayError | None = None) -> None:
    current_gateway().metrics.observe_models(error)
    fields = base_fields()
    fields.update(
        status=status,
        outcome="done" if error is None else "errored",
        error=error.kind if error else None,
        error_code=error.code if error else None,
        duration_ms=round((time.perf_counter() - started_at()) * 1000, 3),
        trace=[],
    )
    log_request(fields)


@blueprint.get("/models")
async def list_models() -> Response:
    gateway = current_gateway()
    key: str = g.upstream_key
    models = gateway.cached_models(key)
    if models is None:
        try:
            body = await _fetch(gateway.upstream.models_request(key), model="")
        except GatewayError as error:
            g.logged = True
            _log(error.status, error)
            raise
        models = gateway.upstream.models_from(body)
        gateway.remember_models(key, models)
    _log(200)
    return _answer(models)


@blueprint.get("/models/<path:model_id>")
async def get_model(model_id: str) -> Response:
    gateway = current_gateway()
    key: str = g.upstream_key
    try:
        body = await _fetch(gateway.upstream.model_request(model_id, key), model=model_id)
        model = gateway.upstream.model_from(body)
        if model is None:
            raise ModelNotFound(f"The upstream does not know the model {model_id!r}.")
    except GatewayError as error:
        g.logged = True
        _log(error.status, error)
        raise
    _log(200)
    return _answer(model)
