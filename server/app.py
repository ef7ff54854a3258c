"""
The app factory: Quart routes over the engine and driver.

Checks on a request run in the order of contract §7: 404/405 → 413 → 401 → 415 →
``invalid_json`` → ``invalid_value`` → ``unsupported_parameter``. The first three happen here,
before any handler; the rest in the chat handler.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator

from quart import Quart, Response, g, request
from werkzeug.exceptions import HTTPException

from engine.errors import GatewayError, InternalError, RequestTooLarge, ShuttingDown

from . import errors
from .context import accepted_at, base_fields, current_gateway, request_id, started_at
from .gateway import Gateway
from .logging import get_logger, log_request
from .routes import chat, health, models
from .settings import Settings

__all__ = ["create_app"]


def create_app(settings: Settings, gateway: Gateway | None = None) -> Quart:
    """Build the service for *settings*."""
    app = Quart("straico_gateway")
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_size
    app.config["RESPONSE_TIMEOUT"] = None
    app.config["PROVIDE_AUTOMATIC_OPTIONS"] = False
    app.extensions["gateway"] = gateway or Gateway(settings)

    app.register_blueprint(chat.blueprint, url_prefix="/v1")
    app.register_blueprint(models.blueprint, url_prefix="/v1")
    app.register_blueprint(health.blueprint)

    app.before_request(_check_request)
    app.after_request(_tag_response)
    app.register_error_handler(GatewayError, _render_gateway_error)
    app.register_error_handler(HTTPException, _render_http_exception)
    app.register_error_handler(Exception, _render_bug)

    @app.while_serving
    async def lifespan() -> AsyncGenerator[None, None]:
        current_gateway().client  # noqa: B018 - made now, not on the first request (~50 ms)
        yield
        await current_gateway().aclose()

    return app


async def _check_request() -> None:
    request_id()
    started_at()
    accepted_at()
    if request.routing_exception is not None:
        raise request.routing_exception
    if not request.path.startswith("/v1/"):
        return
    gateway = current_gateway()
    if gateway.shutting_down:
        raise ShuttingDown()
    length = request.content_length
    if length is not None and length > gateway.settings.max_body_size:
        raise RequestTooLarge()
    g.upstream_key = gateway.keys.upstream_key(request.headers.get("Authorization"))


async def _tag_response(response: Response) -> Response:
    response.headers["X-Request-ID"] = request_id()
    return response


async def _render_gateway_error(error: GatewayError) -> Response:
    if request.path.startswith("/v1/") and not getattr(g, "logged", False):
        fields = base_fields()
        fields.update(
            status=error.status,
            outcome="rejected",
            error=error.kind,
            error_code=error.code,
            duration_ms=round((time.perf_counter() - started_at()) * 1000, 3),
            trace=[],
        )
        log_request(fields)
        current_gateway().metrics.observe_rejected(error)  # operations (§16)
    return errors.render(error, request_id=request_id())


async def _render_http_exception(exc: HTTPException) -> Response:
    return await _render_gateway_error(errors.from_http_exception(exc))


async def _render_bug(exc: Exception) -> Response:
    original = getattr(exc, "original_exception", None) or exc
    if isinstance(original, GatewayError):
        return await _render_gateway_error(original)
    if isinstance(original, HTTPException):
        return await _render_http_exception(original)
    get_logger().error("unexpected_error", request_id=request_id(), exc_info=original)
    return await _render_gateway_error(InternalError())
