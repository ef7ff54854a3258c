"""Upstream error answers: messages, D4 stream rejections and the §7 status rows."""

from __future__ import annotations

import json
from typing import Any, NamedTuple

import pytest

from engine.errors import (
    GatewayError,
    ModelNotFound,
    UpstreamAuthFailed,
    UpstreamAuthRejected,
    UpstreamFailure,
    UpstreamPermissionDenied,
    UpstreamQuota,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)
from engine.upstream_errors import (
    classify_upstream_error,
    error_from_event,
    is_stream_rejection,
    upstream_message,
)

MODEL = "openai/gpt-4o-mini"


def body(document: Any) -> bytes:
    return json.dumps(document).encode()


def straico(error: Any) -> bytes:
    """Straico's envelope (straico-api.md §5)."""
    return body({"error": error, "success": False})


def classify(
    status: int,
    payload: bytes = b"",
    *,
    model: str = MODEL,
    server_key: bool = False,
    stream_requested: bool = False,
    retry_after: str | None = None,
    secrets: tuple[str, ...] = (),
) -> GatewayError | None:
    return classify_upstream_error(
        status,
        payload,
        model=model,
        server_key=server_key,
        stream_requested=stream_requested,
        retry_after=retry_after,
        secrets=secrets,
    )


def classify_error(status: int, payload: bytes = b"", **options: Any) -> GatewayError:
    """classify() for an answer that is an error (never a D4 rejection)."""
    error = classify(status, payload, **options)
    assert error is not None
    return error


# --- upstream_message ---------------------------------------------------------------------

V1_PER_MODEL = straico(
    {
        "overall_price": 0,
        "overall_words": 0,
        "completions": {
            "openai/gpt-4o": {"completion": {"content": "fine"}, "price": 0, "words": 0},
            "anthropic/claude": {"completion": {"error": "Context too long"}, "price": 0},
            "meta/llama": {"completion": {"error": "second error"}, "price": 0},
        },
    }
)


@pytest.mark.parametrize(
    ("payload", "expected"),
    [
        pytest.param(straico("Model not found: x"), "Model not found: x", id="error-string"),
        pytest.param(
            body({"error": {"message": "Invalid 'temperature'", "type": "invalid_request_error"}}),
            "Invalid 'temperature'",
            id="error-object-message",
        ),
        pytest.param(V1_PER_MODEL, "Context too long", id="straico-v1-per-model"),
        pytest.param(
            body({"detail": "Not authenticated"}), "Not authenticated", id="detail-string"
        ),
        pytest.param(
            body({"detail": [{"loc": ["body", "model"], "msg": "field required"}]}),
            '[{"loc":["body","model"],"msg":"field required"}]',
            id="detail-list",
        ),
        pytest.param(body({"message": "Forbidden"}), "Forbidden", id="message"),
        pytest.param(b"Bad Gateway\r\n", "Bad Gateway", id="raw-text"),
        pytest.param(
            b"<html><body><h1>502 Bad Gateway</h1></body></html>\n",
            "<html><body><h1>502 Bad Gateway</h1></body></html>",
            id="html",
        ),
        pytest.param(b"bad \xff byte", "bad \ufffd byte", id="raw-not-utf8"),
        pytest.param(b'{"foo": 1}', '{"foo": 1}', id="json-without-message"),
        pytest.param(b'"just a string"', '"just a string"', id="json-string"),
        pytest.param(b"", "", id="empty"),
        pytest.param(
            body({"error": "first", "message": "second", "detail": "third"}),
            "first",
            id="error-wins",
        ),
        pytest.param(
            body({"error": {"message": "inner"}, "detail": "outer"}),
            "inner",
            id="error-message-wins",
        ),
        pytest.param(
            body({"error": "  ", "message": "fallback"}), "fallback", id="blank-error-skipped"
        ),
        pytest.param(
            body({"error": {"code": 5}, "detail": "the detail"}),
            "the detail",
            id="error-object-no-message",
        ),
        pytest.param(
            body({"detail": {"a": 1}, "message": "msg"}), "msg", id="detail-object-skipped"
        ),
        pytest.param(b"[" * 100_000 + b"]" * 100_000, "[" * 100_000 + "]" * 100_000, id="too-deep"),
    ],
)
def test_upstream_message_body_shape(payload: bytes, expected: str) -> None:
    assert upstream_message(payload) == expected


# --- is_stream_rejection ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "message", "param", "model", "expected"),
    [
        pytest.param(400, "Invalid value", "stream", MODEL, True, id="param-stream"),
        pytest.param(422, "stream is not supported", None, MODEL, True, id="message-stream"),
        pytest.param(400, "Streaming is not available", None, MODEL, True, id="message-streaming"),
        pytest.param(400, "STREAM not allowed", None, MODEL, True, id="upper-case"),
        pytest.param(
            400, "Invalid model sim/stream", None, "sim/stream", False, id="model-id-only"
        ),
        pytest.param(
            400, "Invalid model SIM/Stream", None, "sim/stream", False, id="model-id-other-case"
        ),
        pytest.param(
            400, "sim/stream cannot stream", None, "sim/stream", True, id="model-id-and-stream"
        ),
        pytest.param(400, "upstream error", None, MODEL, False, id="upstream-is-not-stream"),
        pytest.param(400, "streams are off", None, MODEL, False, id="plural-is-not-stream"),
        pytest.param(404, "stream is not supported", "stream", MODEL, False, id="status-404"),
        pytest.param(500, "stream is not supported", "stream", MODEL, False, id="status-500"),
        pytest.param(422, "Model not found: streaming-x", None, MODEL, False, id="model-not-found"),
        pytest.param(400, "Not enough coins to stream", "stream", MODEL, False, id="out-of-credit"),
        pytest.param(400, "Invalid temperature", "temperature", MODEL, False, id="other-param"),
    ],
)
def test_is_stream_rejection_case(
    status: int, message: str, param: object, model: str, expected: bool
) -> None:
    assert is_stream_rejection(status, message, param, model=model) is expected


# --- classify_upstream_error: the §7 rows -------------------------------------------------


class Row(NamedTuple):
    status: int
    payload: bytes
    options: dict[str, Any]
    cls: type[GatewayError]
    http_status: int
    code: str
    kind: str


def row(
    status: int,
    payload: bytes,
    cls: type[GatewayError],
    http_status: int,
    code: str,
    kind: str,
    *,
    case: str,
    **options: Any,
) -> Any:
    return pytest.param(
        Row(status, payload, options, cls, http_status, code, kind), id=f"{code}-{case}"
    )


ROWS = [
    row(
        401,
        straico("Unauthorized"),
        UpstreamAuthRejected,
        401,
        "invalid_api_key",
        "upstream_auth",
        case="401",
    ),
    row(
        403,
        b"Forbidden",
        UpstreamPermissionDenied,
        403,
        "permission_denied",
        "upstream_auth",
        case="403",
    ),
    row(
        401,
        b"",
        UpstreamAuthFailed,
        502,
        "upstream_auth_failed",
        "upstream_auth",
        case="401-server-key",
        server_key=True,
    ),
    row(
        403,
        b"",
        UpstreamAuthFailed,
        502,
        "upstream_auth_failed",
        "upstream_auth",
        case="403-server-key",
        server_key=True,
    ),
    row(
        401,
        straico("Not enough credits"),
        UpstreamAuthRejected,
        401,
        "invalid_api_key",
        "upstream_auth",
        case="401-before-credit",
    ),
    row(404, b"Not Found", ModelNotFound, 404, "model_not_found", "upstream_not_found", case="404"),
    row(
        422,
        straico("Model not found: x/y"),
        ModelNotFound,
        404,
        "model_not_found",
        "upstream_not_found",
        case="422-straico",
    ),
    row(
        422,
        straico("Model not found: sim/stream"),
        ModelNotFound,
        404,
        "model_not_found",
        "upstream_not_found",
        case="422-never-a-rejection",
        model="sim/stream",
        stream_requested=True,
    ),
    row(
        422,
        body({"error": {"message": "The model `x` does not exist", "code": "model_not_found"}}),
        ModelNotFound,
        404,
        "model_not_found",
        "upstream_not_found",
        case="422-does-not-exist",
    ),
    row(
        400,
        straico("Model not found: x/y"),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="400-model-not-found-is-rejected",
    ),
    row(
        402,
        b"Payment Required",
        UpstreamQuota,
        429,
        "insufficient_quota",
        "upstream_quota",
        case="402",
    ),
    row(
        400,
        straico("Insufficient coins"),
        UpstreamQuota,
        429,
        "insufficient_quota",
        "upstream_quota",
        case="400-coins",
    ),
    row(
        400,
        straico("Insufficient coins to stream"),
        UpstreamQuota,
        429,
        "insufficient_quota",
        "upstream_quota",
        case="400-coins-never-a-rejection",
        stream_requested=True,
    ),
    row(
        422,
        body({"detail": "Your credit balance is too low"}),
        UpstreamQuota,
        429,
        "insufficient_quota",
        "upstream_quota",
        case="422-credit",
    ),
    row(
        429,
        straico("No credits left"),
        UpstreamQuota,
        429,
        "insufficient_quota",
        "upstream_quota",
        case="429-credits",
    ),
    row(
        400,
        straico("Invalid model balance"),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="400-model-named-balance",
        model="balance",
    ),
    row(
        429,
        b"Too Many Requests",
        UpstreamRateLimited,
        429,
        "rate_limit_exceeded",
        "upstream_rate_limited",
        case="429",
    ),
    row(
        400,
        straico("Invalid temperature"),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="400",
    ),
    row(
        422,
        body({"detail": [{"msg": "field required"}]}),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="422",
    ),
    row(
        400,
        straico("stream is not supported"),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="400-stream-not-requested",
    ),
    row(
        400,
        straico("Invalid model sim/stream"),
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="400-model-id-mentions-stream",
        model="sim/stream",
        stream_requested=True,
    ),
    row(
        409,
        b"Conflict",
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="409",
    ),
    row(
        413,
        b"",
        UpstreamRejected,
        400,
        "upstream_rejected_request",
        "upstream_rejected",
        case="413",
    ),
    row(301, b"Moved", UpstreamFailure, 502, "upstream_error", "upstream_error", case="301"),
    row(307, b"", UpstreamFailure, 502, "upstream_error", "upstream_error", case="307"),
    row(
        500,
        b"Internal Server Error",
        UpstreamFailure,
        502,
        "upstream_error",
        "upstream_error",
        case="500",
    ),
    row(
        500,
        straico("stream is not supported"),
        UpstreamFailure,
        502,
        "upstream_error",
        "upstream_error",
        case="500-stream-never-a-rejection",
        stream_requested=True,
    ),
    row(
        502,
        b"<html>Bad Gateway</html>",
        UpstreamFailure,
        502,
        "upstream_error",
        "upstream_error",
        case="502",
    ),
    row(599, b"", UpstreamFailure, 502, "upstream_error", "upstream_error", case="599"),
    row(
        503,
        b"Service Unavailable",
        UpstreamUnavailable,
        503,
        "upstream_unavailable",
        "upstream_unavailable",
        case="503",
    ),
    row(
        504,
        b"Gateway Timeout",
        UpstreamTimeout,
        504,
        "upstream_timeout",
        "upstream_timeout",
        case="504",
    ),
]


@pytest.mark.parametrize("case", ROWS)
def test_classify_upstream_error_status_row(case: Row) -> None:
    error = classify(case.status, case.payload, **case.options)
    assert error is not None
    actual = (type(error), error.status, error.code, error.kind)
    assert actual == (case.cls, case.http_status, case.code, case.kind)


def test_classify_upstream_error_timeout_row_ends_timed_out() -> None:
    assert classify_error(504).event == "timed_out"


@pytest.mark.parametrize(
    ("status", "payload", "model"),
    [
        pytest.param(
            400, body({"error": {"message": "bad", "param": "stream"}}), MODEL, id="param-stream"
        ),
        pytest.param(400, straico("stream is not supported"), MODEL, id="straico-simulator"),
        pytest.param(
            422, body({"detail": "Streaming responses are disabled"}), MODEL, id="422-streaming"
        ),
        pytest.param(
            400, straico("sim/reject: stream is not supported"), "sim/reject", id="with-model-id"
        ),
    ],
)
def test_classify_upstream_error_stream_rejection_is_none(
    status: int, payload: bytes, model: str
) -> None:
    assert classify(status, payload, model=model, stream_requested=True) is None


@pytest.mark.parametrize("status", [200, 204, 101])
def test_classify_upstream_error_success_status_raises(status: int) -> None:
    with pytest.raises(ValueError):
        classify(status)


# --- classify_upstream_error: the client-facing message -----------------------------------


def test_classify_upstream_error_short_message_is_passed_on() -> None:
    error = classify_error(400, straico("Invalid temperature"))
    assert error.message == (
        "The upstream rejected the request: Invalid temperature. Fix the request, then retry."
    )


def test_classify_upstream_error_message_ending_in_period_gets_no_second_one() -> None:
    error = classify_error(500, body({"error": {"message": "Something broke."}}))
    assert error.message == "The upstream failed: Something broke. Retry later."


def test_classify_upstream_error_message_whitespace_is_folded() -> None:
    error = classify_error(500, b"  line one\n\n\tline two  ")
    assert error.message == "The upstream failed: line one line two. Retry later."


def test_classify_upstream_error_message_of_300_chars_is_passed_on() -> None:
    message = "x" * 300
    error = classify_error(400, straico(message))
    assert (
        error.message
        == f"The upstream rejected the request: {message}. Fix the request, then retry."
    )


def test_classify_upstream_error_message_over_300_chars_gives_status() -> None:
    error = classify_error(400, straico("x" * 301))
    assert error.message == (
        "The upstream rejected the request (upstream answered HTTP 400). "
        "Fix the request, then retry."
    )


@pytest.mark.parametrize(
    "payload",
    [
        b"<!DOCTYPE html><html><head><title>502</title></head><body>Bad gateway</body></html>",
        b"<html><body>Bad</body></html>",
        b"<h1>Error</h1>",
        body({"error": "<center>nginx</center>"}),
    ],
    ids=["doctype", "html", "closing-tag", "html-inside-json"],
)
def test_classify_upstream_error_html_message_gives_status(payload: bytes) -> None:
    error = classify_error(502, payload)
    assert error.message == "The upstream failed (upstream answered HTTP 502). Retry later."


def test_classify_upstream_error_empty_body_gives_status() -> None:
    error = classify_error(503, b"")
    assert error.message == (
        "The upstream is temporarily unavailable (upstream answered HTTP 503). Retry later."
    )


def test_classify_upstream_error_echoed_key_is_redacted() -> None:
    error = classify_error(
        401, straico("Invalid key sk-secret-123, check sk-secret-123"), secrets=("sk-secret-123",)
    )
    assert error.message == (
        "The upstream rejected your API key: Invalid key ***, check ***. Check the key you send."
    )


def test_classify_upstream_error_longer_key_containing_shorter_is_redacted_whole() -> None:
    error = classify_error(
        400, straico("bad key abc-long-key"), secrets=("abc", "abc-long-key", "")
    )
    assert error.message == (
        "The upstream rejected the request: bad key ***. Fix the request, then retry."
    )


def test_classify_upstream_error_redaction_can_make_a_message_short_enough() -> None:
    key = "k" * 400
    error = classify_error(400, straico(f"bad key {key}"), secrets=(key,))
    assert error.message == (
        "The upstream rejected the request: bad key ***. Fix the request, then retry."
    )


def test_classify_upstream_error_429_keeps_retry_after() -> None:
    error = classify_error(429, b"slow down", retry_after="7")
    assert (error.retry_after, error.headers()) == ("7", [("Retry-After", "7")])


@pytest.mark.parametrize(
    ("status", "payload"), [(402, b""), (503, b""), (429, straico("No credits"))]
)
def test_classify_upstream_error_other_status_drops_retry_after(
    status: int, payload: bytes
) -> None:
    error = classify_error(status, payload, retry_after="7")
    assert error.retry_after is None


def test_classify_upstream_error_rejected_keeps_upstream_param() -> None:
    error = classify_error(400, body({"error": {"message": "too hot", "param": "temperature"}}))
    assert error.to_dict()["error"]["param"] == "temperature"


def test_classify_upstream_error_rejected_param_is_redacted() -> None:
    error = classify_error(
        400, body({"error": {"message": "bad", "param": "sk-1"}}), secrets=("sk-1",)
    )
    assert error.param == "***"


def test_classify_upstream_error_quota_answer_is_final() -> None:
    error = classify_error(402)
    assert error.headers() == [("x-should-retry", "false")]


# --- error_from_event ---------------------------------------------------------------------


LEAD = "The upstream reported an error in the middle of the stream"


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        pytest.param(
            {"error": {"message": "simulated error", "type": "server_error"}},
            f"{LEAD}: simulated error. Retry later.",
            id="openai-shape",
        ),
        pytest.param(
            {"error": "overloaded"}, f"{LEAD}: overloaded. Retry later.", id="error-string"
        ),
        pytest.param("plain text", f"{LEAD}: plain text. Retry later.", id="text-data"),
        pytest.param(
            '{"error": "as json text"}', f"{LEAD}: as json text. Retry later.", id="json-text"
        ),
        pytest.param(
            {"error": {"type": "server_error"}},
            f'{LEAD}: {{"error":{{"type":"server_error"}}}}. Retry later.',
            id="no-message",
        ),
        pytest.param(None, f"{LEAD}. Retry later.", id="null"),
        pytest.param("", f"{LEAD}. Retry later.", id="empty"),
        pytest.param({"error": "e" * 301}, f"{LEAD}. Retry later.", id="too-long"),
        pytest.param({"error": "<html><body>x</body></html>"}, f"{LEAD}. Retry later.", id="html"),
    ],
)
def test_error_from_event_message(data: object, expected: str) -> None:
    error = error_from_event(data)
    actual = (type(error), error.status, error.code, error.event, error.message)
    assert actual == (UpstreamFailure, 502, "upstream_error", "upstream_failed", expected)


def test_error_from_event_redacts_keys() -> None:
    error = error_from_event({"error": {"message": "key sk-9 refused"}}, secrets=("sk-9",))
    assert error.message == f"{LEAD}: key *** refused. Retry later."
