"""
Classifying an upstream's error answer: the status half of the error table (contract §7) and the
stream-rejection rule D4 (contract §4). This is the only place that reads upstream statuses.

Rules, applied in this order to an answer with status *n* (not 2xx):

1. 401/403: the key was refused. Per-request key mode: ``UpstreamAuthRejected`` (401) or
   ``UpstreamPermissionDenied`` (403); server key mode: ``UpstreamAuthFailed``.
2. 402: ``UpstreamQuota``.
3. 404, or a 422 whose message says the model was not found: ``ModelNotFound``.
4. Any other 4xx whose message matches ``\\b(coins?|credits?|balance)\\b``: ``UpstreamQuota``.
5. 429: ``UpstreamRateLimited``, its ``Retry-After`` kept.
6. 400/422 to a request sent with ``stream: true`` that is a stream rejection (D4): ``None``.
7. Any other 4xx: ``UpstreamRejected``.
8. 503: ``UpstreamUnavailable``; 504: ``UpstreamTimeout``; 3xx and every other 5xx:
   ``UpstreamFailure``.

Choices the contract leaves open:

- The requested model id is removed from the message (case-insensitively) before *every* message
  test, not only the D4 one, so that a model named like ``balance`` or ``sim/stream`` cannot turn
  its own errors into quota errors or rejections.
- "Says the model was not found" means ``model not found``, ``model_not_found``, ``unknown model``,
  ``no such model``, or ``model`` followed in the same sentence by ``does not exist``.
- The upstream's message is passed on with its runs of whitespace folded into one space; it is
  passed on when, after that and after removing the keys, it is at most 300 characters and not
  HTML. An empty message is no message.
- ``UpstreamRejected`` keeps the upstream's ``error.param`` (OpenAI's error shape has one).
- A quota error never carries ``Retry-After``: retrying cannot fix it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence

from .errors import (
    GatewayError,
    ModelNotFound,
    UpstreamAuthFailed,
    UpstreamAuthRejected,
    UpstreamError,
    UpstreamFailure,
    UpstreamPermissionDenied,
    UpstreamQuota,
    UpstreamRateLimited,
    UpstreamRejected,
    UpstreamTimeout,
    UpstreamUnavailable,
)

__all__ = [
    "MAX_PASSED_MESSAGE_CHARS",
    "classify_upstream_error",
    "error_from_event",
    "is_stream_rejection",
    "upstream_message",
]

#: The longest upstream message passed on to the client (contract §7).
MAX_PASSED_MESSAGE_CHARS = 300
REDACTED = "***"

_STREAM_WORD = re.compile(r"\bstream(?:ing)?\b", re.IGNORECASE)
_OUT_OF_CREDIT = re.compile(r"\b(?:coins?|credits?|balance)\b", re.IGNORECASE)
_MODEL_NOT_FOUND = re.compile(
    r"\bmodel[\s_]+not[\s_]+found\b"
    r"|\b(?:unknown|no\s+such)\s+model\b"
    r"|\bmodel\b[^.\n]{0,200}?\b(?:does\s+not|doesn't)\s+exist\b",
    re.IGNORECASE,
)
_HTML = re.compile(
    r"<(?:!doctype\s+html|html|head|body|title|h1|center)\b|</[a-z][a-z0-9]*\s*>",
    re.IGNORECASE,
)

# What the client is told, per class: what happened, then what to do.
_WORDING: dict[type[UpstreamError], tuple[str, str]] = {
    UpstreamAuthRejected: ("The upstream rejected your API key", "Check the key you send."),
    UpstreamPermissionDenied: (
        "The upstream refused this request for your API key",
        "Check what the key is allowed to do.",
    ),
    UpstreamAuthFailed: (
        "The upstream rejected the gateway's API key",
        "The operator must fix the key.",
    ),
    ModelNotFound: (
        "The upstream does not know this model",
        "List models with GET /v1/models.",
    ),
    UpstreamQuota: ("The upstream account is out of credit", "Top it up, then retry."),
    UpstreamRateLimited: ("The upstream is rate limiting requests", "Retry later."),
    UpstreamRejected: ("The upstream rejected the request", "Fix the request, then retry."),
    UpstreamFailure: ("The upstream failed", "Retry later."),
    UpstreamUnavailable: ("The upstream is temporarily unavailable", "Retry later."),
    UpstreamTimeout: ("The upstream timed out", "Retry later."),
}
_EVENT_WORDING = ("The upstream reported an error in the middle of the stream", "Retry later.")


def upstream_message(body: bytes) -> str:
    """
    The message of an upstream error answer (contract §4, D4): the first of ``error`` when a
    string, ``error.message``, the first ``error.completions.*.completion.error``, ``detail``
    (a string, or compact JSON of a list), ``message``, else the raw text (stripped).
    """
    return _parse_body(body)[0]


def is_stream_rejection(status: int, message: str, param: object, *, model: str) -> bool:
    """
    Whether an answer to a ``stream: true`` request refuses the stream flag (contract §4, D4).

    True for a 400 or 422 whose ``error.param`` (*param*) is ``stream``, or whose *message*, with
    the requested *model* id removed, matches ``\\bstream(ing)?\\b``; never for a "model not
    found" or an out-of-credit answer.
    """
    if status not in (400, 422):
        return False
    scrubbed = _without_model(message, model)
    if _MODEL_NOT_FOUND.search(scrubbed) or _OUT_OF_CREDIT.search(scrubbed):
        return False
    return param == "stream" or _STREAM_WORD.search(scrubbed) is not None


def classify_upstream_error(
    status: int,
    body: bytes,
    *,
    model: str,
    server_key: bool,
    stream_requested: bool,
    retry_after: str | None,
    secrets: Sequence[str] = (),
) -> GatewayError | None:
    """
    The error for an upstream answer with a non-2xx *status* and *body* (contract §7).

    Args:
        model: the model id as requested (removed from the message before matching it).
        server_key: the gateway used its own key (server key mode), not the client's.
        stream_requested: the request was sent with ``stream: true``.
        retry_after: the answer's ``Retry-After`` header, kept on a 429.
        secrets: keys that must not appear in the client-facing message.

    Returns:
        The error to fail the request with, or ``None`` when the answer is a stream rejection
        (D4), which is only possible when *stream_requested*.

    Raises:
        ValueError: *status* is below 300 (a success is not an error; a bug in the caller).
    """
    if status < 300:
        raise ValueError(f"HTTP {status} is not an error status")
    message, param = _parse_body(body)
    scrubbed = _without_model(message, model)
    cls: type[UpstreamError]
    if status in (401, 403):
        if server_key:
            cls = UpstreamAuthFailed
        else:
            cls = UpstreamAuthRejected if status == 401 else UpstreamPermissionDenied
    elif status == 402:
        cls = UpstreamQuota
    elif status == 404 or (status == 422 and _MODEL_NOT_FOUND.search(scrubbed)):
        cls = ModelNotFound
    elif 400 <= status < 500 and _OUT_OF_CREDIT.search(scrubbed):
        cls = UpstreamQuota
    elif status == 429:
        return UpstreamRateLimited(
            _client_message(UpstreamRateLimited, message, status, secrets),
            retry_after=retry_after,
        )
    elif stream_requested and is_stream_rejection(status, message, param, model=model):
        return None
    elif 400 <= status < 500:
        kept_param = _redact(param, secrets) if isinstance(param, str) else None
        return UpstreamRejected(
            _client_message(UpstreamRejected, message, status, secrets), param=kept_param
        )
    elif status == 503:
        cls = UpstreamUnavailable
    elif status == 504:
        cls = UpstreamTimeout
    else:
        cls = UpstreamFailure
    return cls(_client_message(cls, message, status, secrets))


def error_from_event(data: object, *, secrets: Sequence[str] = ()) -> GatewayError:
    """
    The error for an SSE error event received mid-stream (contract §5 R5): ``UpstreamFailure``
    with the upstream's message.

    Args:
        data: the event's data, parsed as JSON when it was JSON, else its text.
        secrets: keys that must not appear in the client-facing message.
    """
    if isinstance(data, str):
        message = _parse_body(data.encode())[0]
    else:
        message = _message_of(data) or (
            _compact_json(data) if isinstance(data, dict | list) else ""
        )
    lead, advice = _EVENT_WORDING
    passed = _passable(message, secrets)
    if passed is None:
        return UpstreamFailure(f"{lead}. {advice}")
    return UpstreamFailure(_with_message(lead, passed, advice))


# --- reading the body ---------------------------------------------------------------------


def _parse_body(body: bytes) -> tuple[str, object]:
    """The message and ``error.param`` of an error body (param ``None`` when absent)."""
    try:
        document = json.loads(body)
    except (ValueError, RecursionError):
        document = None
    message = _message_of(document)
    if message is None:
        message = body.decode("utf-8", errors="replace").strip()
    param = None
    if isinstance(document, dict) and isinstance(document.get("error"), dict):
        param = document["error"].get("param")
    return message, param


def _message_of(document: object) -> str | None:
    """The message of a parsed error document, per D4's order; ``None`` when it has none."""
    if not isinstance(document, dict):
        return None
    error = document.get("error")
    if text := _text(error):
        return text
    if isinstance(error, dict):
        if text := _text(error.get("message")):
            return text
        if text := _first_completion_error(error.get("completions")):
            return text
    detail = document.get("detail")
    if text := _text(detail):
        return text
    if isinstance(detail, list):
        return _compact_json(detail)
    return _text(document.get("message"))


def _first_completion_error(completions: object) -> str | None:
    """Straico v1's per-model form: ``{"<model>": {"completion": {"error": "<text>"}}}``."""
    if not isinstance(completions, dict):
        return None
    for entry in completions.values():
        completion = entry.get("completion") if isinstance(entry, dict) else None
        if isinstance(completion, dict) and (text := _text(completion.get("error"))):
            return text
    return None


def _text(value: object) -> str | None:
    """*value* stripped when it is a string with something in it, else ``None``."""
    if isinstance(value, str) and (stripped := value.strip()):
        return stripped
    return None


def _compact_json(value: object) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False, default=str)


def _without_model(message: str, model: str) -> str:
    if not model:
        return message
    return re.sub(re.escape(model), "", message, flags=re.IGNORECASE)


# --- what the client is told --------------------------------------------------------------


def _client_message(
    cls: type[UpstreamError], message: str, status: int, secrets: Sequence[str]
) -> str:
    lead, advice = _WORDING[cls]
    passed = _passable(message, secrets)
    if passed is None:
        return f"{lead} (upstream answered HTTP {status}). {advice}"
    return _with_message(lead, passed, advice)


def _passable(message: str, secrets: Sequence[str]) -> str | None:
    """*message* as it may be shown to the client, or ``None`` when it must not be."""
    folded = _redact(" ".join(message.split()), secrets)
    if not folded or len(folded) > MAX_PASSED_MESSAGE_CHARS or _HTML.search(folded):
        return None
    return folded


def _with_message(lead: str, message: str, advice: str) -> str:
    stop = "" if message[-1] in ".!?" else "."
    return f"{lead}: {message}{stop} {advice}"


def _redact(text: str, secrets: Sequence[str]) -> str:
    # Longest first, so a key that contains another is removed whole.
    for secret in sorted(filter(None, secrets), key=len, reverse=True):
        text = text.replace(secret, REDACTED)
    return text
