"""
The chat request as the gateway understands it (contract §8), parsed and validated once.

Unknown fields are tolerated; known fields with the wrong type are ``invalid_value`` with the
field's path as ``param`` (no coercion: ``"false"`` is not a boolean).
"""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["ROLES", "ChatRequest", "Message", "Role"]

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "developer", "user", "assistant", "tool"})


@attrs.frozen(kw_only=True)
class Message:
    """One message; ``content`` is a string, a tuple of content parts (dicts), or None."""

    role: Role
    content: str | tuple[dict[str, Any], ...] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None

    def text(self) -> str:
        """The message's text: the string, or its ``text`` parts joined by newlines."""
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(
            str(part.get("text", "")) for part in self.content if part.get("type") == "text"
        )


@attrs.frozen(kw_only=True)
class ChatRequest:
    """A validated ``/v1/chat/completions`` body; ``raw`` is the body as received."""

    raw: dict[str, Any] = attrs.field(repr=False)
    model: str
    messages: tuple[Message, ...]
    stream: bool = False
    include_usage: bool = False
    #: ``max_completion_tokens`` when given, else ``max_tokens``.
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    stop: tuple[str, ...] = ()
    n: int | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    logprobs: bool | None = None
    top_logprobs: int | None = None
    tools: tuple[dict[str, Any], ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    functions: tuple[dict[str, Any], ...] | None = None
    function_call: str | dict[str, Any] | None = None
    parallel_tool_calls: bool | None = None
    response_format: dict[str, Any] | None = None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""
