"""
The gateway's error tree: one class per row of the contract's error table (§7).

Every class carries its row as data: the HTTP ``status`` sent before the commit, the OpenAI
``type`` and ``code``, the log line's ``kind``, and the machine ``event`` that ends the request
(``None`` for errors raised before any machine exists)::

    GatewayError                      abstract
    ├── ClientError                   before any machine exists (event None)
    │   ├── InvalidJSON               400 invalid_json
    │   ├── InvalidValue              400 invalid_value, param = field path
    │   ├── UnsupportedParameter      400 unsupported_parameter, param = field
    │   ├── UnsupportedMediaType      415
    │   ├── RequestTooLarge           413
    │   ├── Unauthorized              401 invalid_api_key
    │   ├── NotFound                  404
    │   └── MethodNotAllowed          405
    ├── UpstreamError                 event upstream_failed
    │   ├── StreamingUnsupported      400 (D10)
    │   ├── UpstreamAuthRejected      401 in per-request key mode
    │   │   └── UpstreamPermissionDenied  403 in per-request key mode
    │   ├── UpstreamAuthFailed        502 in server key mode
    │   ├── ModelNotFound             404
    │   ├── UpstreamQuota             429 insufficient_quota
    │   ├── UpstreamRateLimited       429 rate_limit_exceeded (keeps Retry-After)
    │   ├── UpstreamRejected          400 upstream_rejected_request
    │   ├── UpstreamFailure           502 upstream_error (3xx, 5xx, an error event)
    │   ├── UpstreamUnavailable       503
    │   ├── UpstreamUnreachable       502
    │   ├── UpstreamDisconnected      502
    │   ├── UpstreamMalformed         502
    │   └── UpstreamTimeout           504, event timed_out
    │       └── StreamTimeout         504 stream_timeout
    ├── ShuttingDown                  503, event shut_down
    └── InternalError                 500, event gateway_failed

Messages say what happened and what to do; they never hold a key or a traceback.
"""

from __future__ import annotations

from typing import Any, ClassVar

__all__ = [
    "ClientError",
    "GatewayError",
    "InternalError",
    "InvalidJSON",
    "InvalidValue",
    "MethodNotAllowed",
    "ModelNotFound",
    "NotFound",
    "RequestTooLarge",
    "ShuttingDown",
    "StreamTimeout",
    "StreamingUnsupported",
    "Unauthorized",
    "UnsupportedMediaType",
    "UnsupportedParameter",
    "UpstreamAuthFailed",
    "UpstreamAuthRejected",
    "UpstreamDisconnected",
    "UpstreamError",
    "UpstreamFailure",
    "UpstreamMalformed",
    "UpstreamPermissionDenied",
    "UpstreamQuota",
    "UpstreamRateLimited",
    "UpstreamRejected",
    "UpstreamTimeout",
    "UpstreamUnavailable",
    "UpstreamUnreachable",
]

INVALID_REQUEST = "invalid_request_error"
API_ERROR = "api_error"


class GatewayError(Exception):
    """A failure the client is told about; abstract: raise one of its leaves."""

    status: ClassVar[int]
    type: ClassVar[str]
    code: ClassVar[str]
    kind: ClassVar[str]
    event: ClassVar[str | None] = None
    #: Retrying cannot fix it: answers carry ``x-should-retry: false``.
    final: ClassVar[bool] = False
    default_message: ClassVar[str] = ""

    def __init__(
        self,
        message: str | None = None,
        *,
        param: str | None = None,
        retry_after: str | None = None,
    ) -> None:
        if type(self) in _ABSTRACT:
            raise TypeError(f"{type(self).__name__} is abstract; raise one of its subclasses")
        self.message = message or self.default_message
        self.param = param
        self.retry_after = retry_after
        super().__init__(self.message)

    def to_dict(self) -> dict[str, Any]:
        """The OpenAI error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }

    def headers(self) -> list[tuple[str, str]]:
        """Extra response headers this error carries before the commit."""
        extra: list[tuple[str, str]] = []
        if self.retry_after is not None:
            extra.append(("Retry-After", self.retry_after))
        if self.final:
            extra.append(("x-should-retry", "false"))
        return extra


class ClientError(GatewayError):
    """The client's request is at fault; found before any machine exists."""

    type = INVALID_REQUEST
    kind = "invalid_request"
    status = 400


class InvalidJSON(ClientError):
    """The body is not valid JSON, or not a JSON object."""

    code = "invalid_json"
    default_message = (
        "The request body is not valid JSON. Send a JSON object with 'model' and 'messages'."
    )


class InvalidValue(ClientError):
    """A field is missing, has the wrong type, or holds a value that is not allowed."""

    code = "invalid_value"


class UnsupportedParameter(ClientError):
    """A field the upstream cannot honour (contract §8)."""

    code = "unsupported_parameter"


class UnsupportedMediaType(ClientError):
    """The Content-Type is missing or not JSON."""

    status = 415
    code = "unsupported_media_type"
    default_message = "Send the request body as JSON with 'Content-Type: application/json'."


class RequestTooLarge(ClientError):
    """The body is larger than ``--max-body-size``."""

    status = 413
    code = "request_too_large"
    default_message = "The request body is larger than this gateway accepts."


class Unauthorized(ClientError):
    """A ``/v1`` request without a valid bearer key."""

    status = 401
    kind = "unauthorized"
    code = "invalid_api_key"
    default_message = "Missing or invalid API key. Send 'Authorization: Bearer <key>'."


class NotFound(ClientError):
    """No such path."""

    status = 404
    kind = "not_found"
    code = "not_found"
    default_message = "No such endpoint. The gateway serves /v1/chat/completions and /v1/models."


class MethodNotAllowed(ClientError):
    """The path exists, the method does not."""

    status = 405
    kind = "not_found"
    code = "method_not_allowed"
    default_message = "This endpoint does not accept that HTTP method."


class UpstreamError(GatewayError):
    """The upstream failed; the machine event is ``upstream_failed``."""

    event = "upstream_failed"
    type = API_ERROR
    status = 502


class StreamingUnsupported(UpstreamError):
    """A streaming client, an upstream that cannot stream, and fallback disabled (D10)."""

    status = 400
    type = INVALID_REQUEST
    code = "streaming_unsupported"
    kind = "streaming_unsupported"
    default_message = (
        "The upstream cannot stream this model and the gateway runs with fallback disabled. "
        "Retry with 'stream': false."
    )


class UpstreamAuthRejected(UpstreamError):
    """The upstream refused the client's own key (per-request key mode): 401 or 403."""

    type = INVALID_REQUEST
    kind = "upstream_auth"
    status = 401
    code = "invalid_api_key"
    final = True
    default_message = "The upstream rejected your API key. Check the key you send."


class UpstreamPermissionDenied(UpstreamAuthRejected):
    """The upstream answered 403 to the client's own key."""

    status = 403
    code = "permission_denied"
    default_message = "The upstream refused this request for your API key."


class UpstreamAuthFailed(UpstreamError):
    """The upstream refused the gateway's own key (server key mode)."""

    kind = "upstream_auth"
    code = "upstream_auth_failed"
    final = True
    default_message = "The upstream rejected the gateway's API key. The operator must fix the key."


class ModelNotFound(UpstreamError):
    """The upstream does not know the model."""

    status = 404
    type = INVALID_REQUEST
    code = "model_not_found"
    kind = "upstream_not_found"
    default_message = "The upstream does not know this model. List models with GET /v1/models."


class UpstreamQuota(UpstreamError):
    """The upstream account is out of credit."""

    status = 429
    type = "insufficient_quota"
    code = "insufficient_quota"
    kind = "upstream_quota"
    final = True
    default_message = "The upstream account is out of credit. Top it up, then retry."


class UpstreamRateLimited(UpstreamError):
    """The upstream rate-limited the call; its ``Retry-After`` is kept."""

    status = 429
    type = "rate_limit_error"
    code = "rate_limit_exceeded"
    kind = "upstream_rate_limited"
    default_message = "The upstream is rate limiting requests. Retry later."


class UpstreamRejected(UpstreamError):
    """The upstream refused the request as invalid (400/422 or another 4xx)."""

    status = 400
    type = INVALID_REQUEST
    code = "upstream_rejected_request"
    kind = "upstream_rejected"
    default_message = "The upstream rejected the request."


class UpstreamFailure(UpstreamError):
    """The upstream answered 3xx or 5xx, or sent an error event mid-stream."""

    code = "upstream_error"
    kind = "upstream_error"
    default_message = "The upstream failed. Retry later."


class UpstreamUnavailable(UpstreamError):
    """The upstream answered 503."""

    status = 503
    code = "upstream_unavailable"
    kind = "upstream_unavailable"
    default_message = "The upstream is temporarily unavailable. Retry later."


class UpstreamUnreachable(UpstreamError):
    """No connection to the upstream could be made."""

    code = "upstream_unreachable"
    kind = "upstream_unreachable"
    default_message = "The gateway could not connect to the upstream. Retry later."


class UpstreamDisconnected(UpstreamError):
    """The upstream connection broke before the answer was complete."""

    code = "upstream_disconnected"
    kind = "upstream_disconnected"
    default_message = "The upstream closed the connection before the answer was complete."


class UpstreamMalformed(UpstreamError):
    """The upstream sent malformed JSON, malformed SSE or undecodable bytes."""

    code = "upstream_malformed"
    kind = "upstream_malformed"
    final = True
    default_message = "The upstream sent a malformed answer."


class UpstreamTimeout(UpstreamError):
    """The upstream did not answer in time (connect, write, pool, head or whole body)."""

    event = "timed_out"
    status = 504
    code = "upstream_timeout"
    kind = "upstream_timeout"
    default_message = "The upstream did not answer in time. Retry later."


class StreamTimeout(UpstreamTimeout):
    """An upstream stream stayed silent past ``streaming_timeout`` before its finish chunk."""

    code = "stream_timeout"
    kind = "stream_timeout"
    default_message = "The upstream stream went silent for too long."


class ShuttingDown(GatewayError):
    """The gateway is shutting down."""

    event = "shut_down"
    status = 503
    type = API_ERROR
    code = "server_shutting_down"
    kind = "shutdown"
    default_message = "The gateway is shutting down. Retry on another instance."


class InternalError(GatewayError):
    """A bug in the gateway itself."""

    event = "gateway_failed"
    status = 500
    type = API_ERROR
    code = "internal_error"
    kind = "internal"
    final = True
    default_message = "The gateway failed unexpectedly. This is a bug; the error was logged."


_ABSTRACT = frozenset({GatewayError, ClientError, UpstreamError})
