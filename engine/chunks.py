"""
The OpenAI shapes the client receives: stream chunks and the whole ``chat.completion`` body.

One :class:`Identity` per request gives every chunk the same ``id``, ``created`` and
``model`` (contract §5). Chunks are encoded straight to SSE bytes; the JSON prefix shared by
every chunk is built once per request.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from .answer import Answer

__all__ = ["Identity", "dumps", "function_call_deltas", "tool_call_deltas"]


# One encoder for the process: json.dumps with options builds a new one per call.
_ENCODER = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False)
# The C string encoder: a content delta is one string, the replay's hot spot.
_encode_string: Any = getattr(json.encoder, "c_encode_basestring", None) or (
    json.encoder.encode_basestring
)


_CONTENT_SUFFIX = '},"logprobs":null,"finish_reason":null}]}\n\n'


def dumps(obj: Any) -> str:
    """Compact JSON, UTF-8 kept as is (clients decode it; it is smaller on the wire)."""
    return _ENCODER.encode(obj)


@attrs.define(slots=True)
class Identity:
    """The id, creation time and model shared by every chunk of one answer."""

    id: str
    created: int
    model: str
    _prefix: str = attrs.field(init=False, repr=False)
    _content_prefix: str = attrs.field(init=False, repr=False)

    def __attrs_post_init__(self) -> None:
        self._prefix = (
            f'data: {{"id":{dumps(self.id)},"object":"chat.completion.chunk",'
            f'"created":{self.created},"model":{dumps(self.model)},'
        )
        self._content_prefix = self._prefix + '"choices":[{"index":0,"delta":{"content":'

    def rewrite(self, chunk: dict[str, Any]) -> None:
        """Give an upstream chunk this answer's identity, in place."""
        chunk["id"] = self.id
        chunk["object"] = "chat.completion.chunk"
        chunk["created"] = self.created
        chunk["model"] = self.model

    def _event(self, choices_json: str, tail: str = "") -> bytes:
        return f'{self._prefix}"choices":{choices_json}{tail}}}\n\n'.encode()

    def delta_chunk(self, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
        return self._event(dumps([choice]))

    def role_chunk(self) -> bytes:
        return self.delta_chunk({"role": "assistant", "content": ""})

    def content_chunk(self, text: str) -> bytes:
        return self.content_chunks([text])

    def content_chunks(self, pieces: list[str]) -> bytes:
        """
        One content chunk per piece, as one bytes object: the replay's hot path.

        Same bytes as ``delta_chunk({"content": piece})`` for each, without building objects.
        """
        prefix = self._content_prefix
        return "".join(
            [f"{prefix}{_encode_string(piece)}{_CONTENT_SUFFIX}" for piece in pieces]
        ).encode()

    def finish_chunk(self, finish_reason: str) -> bytes:
        return self.delta_chunk({}, finish_reason)

    def usage_chunk(self, usage: dict[str, Any] | None) -> bytes:
        return self._event("[]", f',"usage":{dumps(usage)}')

    def completion(self, answer: Answer, finish_reason: str) -> dict[str, Any]:
        """The whole ``chat.completion`` body for a non-streaming client."""
        has_calls = bool(answer.tool_calls) or answer.function_call is not None
        message: dict[str, Any] = {
            "role": "assistant",
            "content": answer.content if answer.content or not has_calls else None,
            "refusal": answer.refusal,
        }
        if answer.tool_calls:
            message["tool_calls"] = answer.tool_calls
        if answer.function_call is not None:
            message["function_call"] = answer.function_call
        return {
            "id": self.id,
            "object": "chat.completion",
            "created": self.created,
            "model": self.model,
            "choices": [
                {"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}
            ],
            "usage": answer.usage,
        }


def tool_call_deltas(tool_calls: list[dict[str, Any]], max_chars: int) -> list[dict[str, Any]]:
    """
    Split whole tool calls into streamed deltas (contract §5, §13).

    The first delta of each call carries ``index``, ``id``, ``type`` and ``function.name``;
    the arguments follow in pieces of at most *max_chars* characters.
    """
    deltas: list[dict[str, Any]] = []
    for index, call in enumerate(tool_calls):
        function = call.get("function") or {}
        deltas.append(
            {
                "index": index,
                "id": call.get("id"),
                "type": call.get("type", "function"),
                "function": {"name": function.get("name", ""), "arguments": ""},
            }
        )
        arguments = str(function.get("arguments") or "")
        for start in range(0, len(arguments), max_chars):
            piece = arguments[start : start + max_chars]
            deltas.append({"index": index, "function": {"arguments": piece}})
    return deltas


def function_call_deltas(function_call: dict[str, Any], max_chars: int) -> list[dict[str, Any]]:
    """A legacy ``function_call`` as streamed deltas: the name first, then argument pieces."""
    arguments = str(function_call.get("arguments") or "")
    deltas: list[dict[str, Any]] = [{"name": function_call.get("name", ""), "arguments": ""}]
    deltas.extend(
        {"arguments": arguments[start : start + max_chars]}
        for start in range(0, len(arguments), max_chars)
    )
    return deltas
