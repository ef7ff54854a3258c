"""
A whole upstream answer, parsed from a ``chat.completion`` body or assembled from a stream.

Both Straico's body (top-level ``choices`` with extra ``price`` and ``words``) and any
OpenAI-compatible body parse here; anything else is ``upstream_malformed``.
"""

from __future__ import annotations

import json
from typing import Any

import attrs

from .errors import UpstreamMalformed

__all__ = ["Answer", "StreamAssembler", "parse_completion", "parse_completion_bytes"]


@attrs.define(kw_only=True)
class Answer:
    """What the upstream answered, in OpenAI terms, plus what the log line keeps."""

    content: str = ""
    tool_calls: list[dict[str, Any]] = attrs.Factory(list)
    function_call: dict[str, Any] | None = None
    refusal: str | None = None
    #: The upstream's own finish reason, unmapped (None when it gave none).
    finish_reason: str | None = None
    usage: dict[str, Any] | None = None
    model: str | None = None
    price: Any = None
    words: Any = None


def parse_completion_bytes(body: bytes) -> Answer:
    """Parse a whole JSON body; raise :class:`UpstreamMalformed` when it is not a completion."""
    try:
        obj = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise UpstreamMalformed("The upstream sent a body that is not valid JSON.") from exc
    return parse_completion(obj)


def parse_completion(obj: object) -> Answer:
    """Read the first choice of a ``chat.completion`` object."""
    if not isinstance(obj, dict):
        raise UpstreamMalformed("The upstream sent JSON that is not a chat completion object.")
    choices = obj.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise UpstreamMalformed("The upstream's answer has no choices.")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        raise UpstreamMalformed("The upstream's answer has no message.")
    content = message.get("content")
    if content is not None and not isinstance(content, str):
        raise UpstreamMalformed("The upstream's message content is not a string.")
    tool_calls = message.get("tool_calls") or []
    function_call = message.get("function_call")
    if not isinstance(tool_calls, list) or not all(isinstance(c, dict) for c in tool_calls):
        raise UpstreamMalformed("The upstream's tool_calls are not a list of objects.")
    finish = choice.get("finish_reason")
    usage = obj.get("usage")
    model = obj.get("model")
    refusal = message.get("refusal")
    return Answer(
        content=content or "",
        tool_calls=tool_calls,
        function_call=function_call if isinstance(function_call, dict) else None,
        refusal=refusal if isinstance(refusal, str) else None,
        finish_reason=finish if isinstance(finish, str) else None,
        usage=usage if isinstance(usage, dict) else None,
        model=model if isinstance(model, str) else None,
        price=obj.get("price"),
        words=obj.get("words"),
    )


@attrs.define
class StreamAssembler:
    """
    Builds one :class:`Answer` from ``chat.completion.chunk`` objects (D11).

    Tool-call deltas are merged by ``index``; their argument pieces are concatenated.
    """

    _content: list[str] = attrs.Factory(list)
    _calls: dict[int, dict[str, Any]] = attrs.Factory(dict)
    answer: Answer = attrs.Factory(Answer)

    def add(self, chunk: dict[str, Any]) -> None:
        if isinstance(chunk.get("model"), str) and self.answer.model is None:
            self.answer.model = chunk["model"]
        usage = chunk.get("usage")
        if isinstance(usage, dict):
            self.answer.usage = usage
        choices = chunk.get("choices")
        if not isinstance(choices, list):
            return
        for choice in choices:
            if not isinstance(choice, dict) or choice.get("index", 0) != 0:
                continue
            delta = choice.get("delta")
            if isinstance(delta, dict):
                self._add_delta(delta)
            finish = choice.get("finish_reason")
            if isinstance(finish, str):
                self.answer.finish_reason = finish

    def _add_delta(self, delta: dict[str, Any]) -> None:
        content = delta.get("content")
        if isinstance(content, str):
            self._content.append(content)
        for call in delta.get("tool_calls") or ():
            if not isinstance(call, dict):
                raise UpstreamMalformed(
                    "The upstream sent a tool-call delta that is not an object."
                )
            index = call.get("index", 0)
            merged = self._calls.setdefault(
                index if isinstance(index, int) else 0,
                {"id": None, "type": "function", "function": {"name": "", "arguments": ""}},
            )
            if call.get("id"):
                merged["id"] = call["id"]
            function = call.get("function") or {}
            if isinstance(function, dict):
                merged["function"]["name"] += function.get("name") or ""
                merged["function"]["arguments"] += function.get("arguments") or ""

    def finish(self) -> Answer:
        self.answer.content = "".join(self._content)
        self.answer.tool_calls = [self._calls[i] for i in sorted(self._calls)]
        return self.answer
