"""
A small OpenAI-compatible upstream for tests of ``--upstream-kind openai``, as a raw ASGI app.

Serve it with :class:`tests.support.servers.ServerThread`; its base URL for the gateway is
``<server.url>/v1``. It records every request (method, raw path, parsed body, bearer token), so a
test can check what the gateway forwarded.

Routes:

- ``POST /v1/chat/completions``: the model name picks the behaviour (``MODES``):

  - ``oa/stream``: SSE when the body has ``stream: true``, a ``chat.completion`` JSON otherwise.
    The stream is: role chunk, content chunks, finish chunk, a usage chunk (``choices: []``)
    when ``stream_options.include_usage`` is true, then ``data: [DONE]``. As OpenAI does, every
    other chunk then carries ``"usage": null``.
  - ``oa/json``: a ``chat.completion`` JSON whatever is asked.
  - ``oa/reject``: 400 ``{"error": {"message": "stream is not supported", "param": "stream"}}``
    to ``stream: true``; JSON otherwise.
  - ``oa/reject-param``: the same 400, but the message does not say "stream": only
    ``error.param`` tells it is a rejection of the flag.
  - ``oa/tools``: answers with :data:`TOOL_CALLS`; streamed as tool-call deltas (the first one
    of each call has ``index``, ``id``, ``type`` and the function name, the next ones argument
    pieces), finish reason ``tool_calls``.
  - ``oa/error``: 500 in OpenAI's error shape, whatever is asked.
  - ``oa/sse-always``: SSE whatever the ``stream`` flag says, as some servers do (contract D11).
  - any other model: 404 ``model_not_found``.

- ``GET /v1/models``: every model of ``MODES`` plus :data:`SLASHED_MODEL_ID`.
- ``GET /v1/models/{id}``: the id must come percent-encoded as one path segment (the raw path
  holds no ``/`` after ``/v1/models/``), as the openai SDK sends it; 404 otherwise or when
  unknown.

With a ``key``, every ``/v1/*`` request needs ``Authorization: Bearer <key>`` (401 otherwise).
Answers are deterministic: the text depends only on the model and the last user message.
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from typing import Any
from urllib.parse import unquote

import attrs

__all__ = [
    "MODES",
    "REJECTION_MESSAGE",
    "SLASHED_MODEL_ID",
    "TOOL_CALLS",
    "OpenAITestServer",
    "Recorded",
    "answer_text",
]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

MODES = (
    "oa/stream",
    "oa/json",
    "oa/reject",
    "oa/reject-param",
    "oa/tools",
    "oa/error",
    "oa/sse-always",
)
#: A catalogue id with a slash inside, to check the lookup encodes it as one segment.
SLASHED_MODEL_ID = "org/model.v1"
CREATED = 1_735_689_600
CHAT_PATH = "/v1/chat/completions"
MODELS_PATH = "/v1/models"
REJECTION_MESSAGE = "stream is not supported"
#: What ``oa/reject-param`` says: nothing about streaming, only ``param`` tells.
PARAM_ONLY_MESSAGE = "This option is not available for this model."
CONTENT_CHUNKS = 4
ARGUMENT_PIECES = 3

TOOL_CALLS: tuple[dict[str, Any], ...] = (
    {
        "id": "call_weather000000000000001",
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city": "Paris", "unit": "celsius"}'},
    },
    {
        "id": "call_clock00000000000000002",
        "type": "function",
        "function": {"name": "get_time", "arguments": '{"timezone": "Europe/Paris"}'},
    },
)
"""The calls ``oa/tools`` makes, in order (their position is their ``index``)."""

_WORDS = ("alpha", "brook", "cinder", "dawn", "ember", "fern", "gale", "haze")


@attrs.frozen
class Recorded:
    """One request as the server received it."""

    method: str
    #: The raw path, still percent-encoded.
    path: str
    #: The parsed JSON body; None when absent or not JSON.
    body: Any
    #: The bearer token sent, if any.
    token: str | None


def _last_user_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            return content if isinstance(content, str) else json.dumps(content)
    return ""


def answer_text(model: str, messages: object) -> str:
    """The deterministic answer of *model* to *messages* (twelve words and a full stop)."""
    digest = hashlib.sha256(f"{model}\n{_last_user_text(messages)}".encode()).digest()
    words = [_WORDS[byte % len(_WORDS)] for byte in digest[:12]]
    return " ".join(words).capitalize() + "."


def _split(text: str, parts: int) -> list[str]:
    size = len(text)
    return [text[i * size // parts : (i + 1) * size // parts] for i in range(parts)]


def _usage(messages: object, text: str) -> dict[str, int]:
    prompt = len(json.dumps(messages).split())
    completion = len(text.split())
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _completion(model: str, messages: object) -> dict[str, Any]:
    tools = model == "oa/tools"
    text = "" if tools else answer_text(model, messages)
    message: dict[str, Any] = {"role": "assistant", "content": None if tools else text}
    if tools:
        message["tool_calls"] = [dict(call) for call in TOOL_CALLS]
    return {
        "id": "chatcmpl-upstream-json",
        "object": "chat.completion",
        "created": CREATED,
        "model": f"{model}-2025",
        "system_fingerprint": "fp_test",
        "choices": [
            {
                "index": 0,
                "message": message,
                "logprobs": None,
                "finish_reason": "tool_calls" if tools else "stop",
            }
        ],
        "usage": _usage(messages, text),
    }


def _chunk(
    model: str, delta: dict[str, Any], finish: str | None, *, usage_field: bool
) -> dict[str, Any]:
    chunk: dict[str, Any] = {
        "id": "chatcmpl-upstream-stream",
        "object": "chat.completion.chunk",
        "created": CREATED,
        "model": f"{model}-2025",
        "system_fingerprint": "fp_test",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
    }
    if usage_field:
        chunk["usage"] = None
    return chunk


def _tool_deltas() -> list[dict[str, Any]]:
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(TOOL_CALLS):
        function = call["function"]
        deltas.append(
            {
                "index": index,
                "id": call["id"],
                "type": "function",
                "function": {"name": function["name"], "arguments": ""},
            }
        )
        deltas.extend(
            {"index": index, "function": {"arguments": piece}}
            for piece in _split(function["arguments"], ARGUMENT_PIECES)
        )
    return deltas


def stream_events(model: str, messages: object, *, include_usage: bool) -> list[bytes]:
    """The SSE events of one streamed answer, each a ``data:`` line and a blank line."""
    tools = model == "oa/tools"
    text = "" if tools else answer_text(model, messages)
    chunks = [_chunk(model, {"role": "assistant", "content": ""}, None, usage_field=include_usage)]
    if tools:
        chunks.extend(
            _chunk(model, {"tool_calls": [delta]}, None, usage_field=include_usage)
            for delta in _tool_deltas()
        )
    else:
        chunks.extend(
            _chunk(model, {"content": piece}, None, usage_field=include_usage)
            for piece in _split(text, CONTENT_CHUNKS)
        )
    finish = "tool_calls" if tools else "stop"
    chunks.append(_chunk(model, {}, finish, usage_field=include_usage))
    if include_usage:
        usage_chunk = _chunk(model, {}, None, usage_field=False)
        usage_chunk["choices"] = []
        usage_chunk["usage"] = _usage(messages, text)
        chunks.append(usage_chunk)
    events = [b"data: " + json.dumps(chunk).encode() + b"\n\n" for chunk in chunks]
    return [*events, b"data: [DONE]\n\n"]


def _error(
    status: int, message: str, *, kind: str, param: str | None = None, code: str | None = None
) -> tuple[int, dict[str, Any]]:
    return status, {"error": {"message": message, "type": kind, "param": param, "code": code}}


def _model_object(model_id: str) -> dict[str, Any]:
    return {"id": model_id, "object": "model", "created": CREATED, "owned_by": "test-org"}


class OpenAITestServer:
    """The ASGI app; :attr:`records` lists every request received, oldest first."""

    def __init__(self, key: str | None = None) -> None:
        self._key = key
        self._lock = threading.Lock()
        self._records: list[Recorded] = []

    @property
    def records(self) -> list[Recorded]:
        with self._lock:
            return list(self._records)

    def chat_bodies(self, model: str | None = None) -> list[Any]:
        """The bodies of the chat calls received (for *model* only, when given)."""
        return [
            r.body
            for r in self.records
            if r.path == CHAT_PATH
            and (model is None or (isinstance(r.body, dict) and r.body.get("model") == model))
        ]

    def clear(self) -> None:
        with self._lock:
            self._records.clear()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        raw = await _read_body(receive)
        raw_path = bytes(scope.get("raw_path") or scope["path"].encode()).decode("latin-1")
        token = _bearer(scope)
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
        with self._lock:
            self._records.append(Recorded(scope["method"], raw_path, body, token))
        if self._key is not None and token != self._key:
            refusal = _error(
                401,
                "Incorrect API key provided.",
                kind="invalid_request_error",
                code="invalid_api_key",
            )
            await _send_json(send, *refusal)
            return
        if scope["method"] == "POST" and raw_path == CHAT_PATH:
            await self._chat(body, send)
        elif scope["method"] == "GET" and raw_path == MODELS_PATH:
            data = [_model_object(m) for m in (*MODES, SLASHED_MODEL_ID)]
            await _send_json(send, 200, {"object": "list", "data": data})
        elif scope["method"] == "GET" and raw_path.startswith(MODELS_PATH + "/"):
            await _send_json(send, *_lookup(raw_path.removeprefix(MODELS_PATH + "/")))
        else:
            await _send_json(send, *_error(404, "Not found", kind="invalid_request_error"))

    async def _chat(self, body: Any, send: Send) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("model"), str):
            await _send_json(send, *_error(400, "model is required", kind="invalid_request_error"))
            return
        model, messages = body["model"], body.get("messages")
        stream = body.get("stream") is True
        options = body.get("stream_options")
        include_usage = isinstance(options, dict) and options.get("include_usage") is True
        if model not in MODES:
            await _send_json(
                send,
                *_error(
                    404,
                    f"The model `{model}` does not exist or you do not have access to it.",
                    kind="invalid_request_error",
                    code="model_not_found",
                ),
            )
        elif model == "oa/error":
            await _send_json(
                send,
                *_error(
                    500,
                    "The server had an error while processing your request.",
                    kind="server_error",
                ),
            )
        elif model in ("oa/reject", "oa/reject-param") and stream:
            message = REJECTION_MESSAGE if model == "oa/reject" else PARAM_ONLY_MESSAGE
            await _send_json(
                send,
                *_error(
                    400,
                    message,
                    kind="invalid_request_error",
                    param="stream",
                    code="unsupported_parameter",
                ),
            )
        elif (stream and model in ("oa/stream", "oa/tools")) or model == "oa/sse-always":
            await _send_stream(send, stream_events(model, messages, include_usage=include_usage))
        else:
            await _send_json(send, 200, _completion(model, messages))


def _lookup(segment: str) -> tuple[int, dict[str, Any]]:
    model_id = unquote(segment)
    if "/" in segment or model_id not in (*MODES, SLASHED_MODEL_ID):
        return _error(
            404,
            f"The model `{model_id}` does not exist.",
            kind="invalid_request_error",
            code="model_not_found",
        )
    return 200, _model_object(model_id)


def _bearer(scope: Scope) -> str | None:
    for name, value in scope["headers"]:
        if bytes(name).lower() == b"authorization":
            scheme, _, token = bytes(value).decode("latin-1").partition(" ")
            return token.strip() if scheme.lower() == "bearer" else None
    return None


async def _read_body(receive: Receive) -> bytes:
    parts: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts)
        parts.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(parts)


async def _send_json(send: Send, status: int, body: object) -> None:
    data = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": data})


async def _send_stream(send: Send, events: Sequence[bytes]) -> None:
    headers = [
        (b"content-type", b"text/event-stream; charset=utf-8"),
        (b"cache-control", b"no-cache"),
    ]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    for event in events:
        await send({"type": "http.response.body", "body": event, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})
