"""
The chat request as the gateway understands it (contract §8), parsed and validated once.

Rules of :func:`parse_chat_request`, checked in the contract's order (§7):

1. ``invalid_json``: the body is not UTF-8, not JSON (``NaN`` and ``Infinity`` are not JSON), or
   not a JSON object.
2. ``invalid_value``: a field is missing, has the wrong type (no coercion: ``"false"`` is not a
   boolean, ``true`` is not a number) or a value out of range. ``param`` is the field path as
   OpenAI writes it (``messages[1].role``); the first bad field, in the order of :class:`_Body`,
   is reported. Unknown fields, at any level, are tolerated and kept in ``raw``.
3. ``unsupported_parameter``: ``n`` > 1 with ``stream: true`` (§5, whatever the upstream).

Decisions the contract leaves open (a user of OpenAI-compatible servers would expect these):

- ``null`` is the same as absent for every optional field, as OpenAI documents them nullable.
- An assistant message may have null or absent content when it carries ``tool_calls``,
  ``function_call`` or ``refusal`` (OpenAI echoes a refusal with null content).
- Content parts are checked by type: ``text`` needs a string ``text``, ``image_url`` an object
  with a string ``url``, ``refusal`` a string ``refusal``; ``input_audio`` and ``file`` are known
  (so an upstream can refuse them as unsupported) and not looked into. An empty array of parts,
  an empty ``tools`` array and ``stream_options`` without ``stream`` are accepted.
- ``tools`` and ``functions`` must be arrays of objects; their inner shape is left to whoever
  uses them (the OpenAI-compatible upstream gets the body as received).
- Empty strings in ``stop`` are dropped: they cannot stop anything.
"""

from __future__ import annotations

import json
from typing import Any, Literal, NoReturn

import attrs
from cattrs.errors import BaseValidationError
from cattrs.gen import override

from engine import validation
from engine.errors import InvalidJSON, UnsupportedParameter
from engine.validation import Invalid, expected, integer_between, nullable, number_between

__all__ = [
    "CONTENT_PART_TYPES",
    "ROLES",
    "ChatRequest",
    "Message",
    "Role",
    "parse_chat_request",
]

Role = Literal["system", "developer", "user", "assistant", "tool"]
ROLES: frozenset[str] = frozenset({"system", "developer", "user", "assistant", "tool"})
#: Content part types a request may carry; an upstream may still refuse some (§8).
CONTENT_PART_TYPES: tuple[str, ...] = ("text", "image_url", "input_audio", "file", "refusal")

_ROLE_ORDER = ("system", "developer", "user", "assistant", "tool")
_MAX_STOP_SEQUENCES = 4


@attrs.frozen(kw_only=True)
class Message:
    """One message; ``content`` is a string, a tuple of content parts (dicts), or None."""

    role: Role
    content: str | tuple[dict[str, Any], ...] | None = None
    name: str | None = None
    tool_call_id: str | None = None
    tool_calls: tuple[dict[str, Any], ...] | None = None
    #: Legacy assistant function call (before ``tool_calls``).
    function_call: dict[str, Any] | None = None
    #: What an assistant said when it refused (OpenAI echoes it with null content).
    refusal: str | None = None

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
    #: ``stream_options.include_usage``; it only matters to a streaming client (§5).
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
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None

    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message.role == "user":
                return message.text()
        return ""


# --- the body as sent: the shape the converter reads -------------------------------------------


@attrs.frozen
class _StreamOptions:
    include_usage: bool | None = None


@attrs.frozen
class _Body:
    """The known fields of a body, in the order their errors are reported."""

    model: str
    messages: tuple[Message, ...]
    stream: bool | None = None
    stream_options: _StreamOptions | None = None
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
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
    seed: int | None = None
    user: str | None = None
    metadata: dict[str, Any] | None = None
    store: bool | None = None


#: What a required field must be, for "is required" messages.
_REQUIRED = {
    "model": "a non-empty string naming the model",
    "messages": "a non-empty array of messages",
    "role": "one of " + ", ".join(_ROLE_ORDER),
}


def _check_part(part: Any, index: int) -> dict[str, Any]:
    where = f"[{index}]"
    if not isinstance(part, dict):
        raise expected("a content part object", part, subpath=where)
    kind = part.get("type")
    if kind in ("text", "refusal"):
        if not isinstance(part.get(kind), str):
            raise expected("a string", part.get(kind), subpath=f"{where}.{kind}")
    elif kind == "image_url":
        image = part.get("image_url")
        if not isinstance(image, dict):
            raise expected("an object with a string url", image, subpath=f"{where}.image_url")
        if not isinstance(image.get("url"), str):
            raise expected("a string", image.get("url"), subpath=f"{where}.image_url.url")
    elif kind not in CONTENT_PART_TYPES:
        raise expected("one of " + ", ".join(CONTENT_PART_TYPES), kind, subpath=f"{where}.type")
    return part


def _structure_content(value: Any, _: Any) -> str | tuple[dict[str, Any], ...] | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, list):
        return tuple([_check_part(part, index) for index, part in enumerate(value)])
    raise expected("a string or an array of content parts", value)


def _structure_stop(value: Any, _: Any) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,) if value else ()
    if not isinstance(value, list) or len(value) > _MAX_STOP_SEQUENCES:
        raise expected("a string or an array of up to 4 strings", value)
    for index, sequence in enumerate(value):
        if not isinstance(sequence, str):
            raise expected("a string", sequence, subpath=f"[{index}]")
    return tuple([sequence for sequence in value if sequence])


def _string_or_object(choices: tuple[str, ...]) -> validation.Hook:
    """``tool_choice`` / ``function_call``: one of *choices*, or an object naming a function."""
    what = "one of " + ", ".join(choices) + ", or an object"

    def structure_choice(value: Any, _: Any) -> str | dict[str, Any]:
        if isinstance(value, dict) or (isinstance(value, str) and value in choices):
            return value
        raise expected(what, value)

    return structure_choice


def _structure_response_format(value: Any, _: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise expected('an object such as {"type": "text"}', value)
    if not isinstance(value.get("type"), str):
        raise expected("a string", value.get("type"), subpath=".type")
    return value


def _may_omit_content(message: Message) -> bool:
    """An assistant turn that called a tool or refused has no content to carry."""
    return message.role == "assistant" and (
        message.tool_calls is not None
        or message.function_call is not None
        or message.refusal is not None
    )


def _check_message(message: Message, source: dict[str, Any]) -> None:
    """Rules that span fields of one message (§8)."""
    if message.content is None and not _may_omit_content(message):
        need = "a string or an array of content parts"
        if "content" not in source:
            raise Invalid(f"is required; it must be {need}", subpath=".content")
        raise expected(
            f"{need} (null only on an assistant message with tool_calls)", None, subpath=".content"
        )
    if message.role == "tool" and message.tool_call_id is None:
        raise Invalid(
            "is required on a tool message: the id of the tool call it answers",
            subpath=".tool_call_id",
        )


def _build_body_hook() -> validation.Hook:
    converter = validation.strict_converter()
    converter.register_structure_hook(
        _StreamOptions, validation.object_hook(converter, _StreamOptions)
    )
    converter.register_structure_hook(
        Message,
        validation.object_hook(
            converter,
            Message,
            what="a message object",
            after=_check_message,
            role=override(struct_hook=validation.one_of(_ROLE_ORDER)),
            content=override(struct_hook=_structure_content),
        ),
    )
    structure_messages = converter.get_structure_hook(tuple[Message, ...])

    def structure_message_list(value: Any, cl: Any) -> Any:
        if not isinstance(value, list) or not value:
            raise expected("a non-empty array of messages", value)
        return structure_messages(value, cl)

    at_least_one = override(struct_hook=nullable(integer_between(1)))
    penalty = override(struct_hook=nullable(number_between(-2, 2)))
    return validation.object_hook(
        converter,
        _Body,
        model=override(struct_hook=validation.non_empty_string),
        messages=override(struct_hook=structure_message_list),
        max_tokens=at_least_one,
        max_completion_tokens=at_least_one,
        n=at_least_one,
        temperature=override(struct_hook=nullable(number_between(0, 2))),
        top_p=override(struct_hook=nullable(number_between(0, 1))),
        presence_penalty=penalty,
        frequency_penalty=penalty,
        top_logprobs=override(struct_hook=nullable(integer_between(0, 20))),
        stop=override(struct_hook=_structure_stop),
        tool_choice=override(struct_hook=nullable(_string_or_object(("none", "auto", "required")))),
        function_call=override(struct_hook=nullable(_string_or_object(("none", "auto")))),
        response_format=override(struct_hook=nullable(_structure_response_format)),
    )


# Built once at import: generating the cattrs functions costs far more than using them.
_structure_body = _build_body_hook()


def _reject_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


def _has_lone_surrogate(value: object) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (ValueError, RecursionError):
        return False
    return False


def _decode(body: bytes | str | object) -> dict[str, Any]:
    """The body as a JSON object, or :class:`InvalidJSON` (rule 1)."""
    payload: object = body
    if isinstance(body, bytes | bytearray | memoryview):
        try:
            payload = bytes(body).decode("utf-8")
        except UnicodeDecodeError:
            raise InvalidJSON(
                "The request body is not valid UTF-8. Send JSON encoded as UTF-8."
            ) from None
    if isinstance(payload, str):
        text = payload
        try:
            payload = json.loads(text, parse_constant=_reject_constant)
        except (ValueError, RecursionError):
            raise InvalidJSON() from None
        # A \ud800-style escape is JSON syntax for text that is not Unicode (RFC 8259 §8.2):
        # no upstream can be sent it. Only a body holding escapes needs the full check.
        if "\\u" in text and _has_lone_surrogate(payload):
            raise InvalidJSON(
                "The request body holds a \\u escape of a lone surrogate, which is not "
                "Unicode text. Send valid UTF-8 text."
            )
    if not isinstance(payload, dict):
        raise InvalidJSON(
            "The request body must be a JSON object with 'model' and 'messages', "
            f"got {validation.describe(payload)}."
        )
    return payload


def parse_chat_request(body: bytes | str | object) -> ChatRequest:
    """
    Parse and validate a ``/v1/chat/completions`` body (contract §8).

    Args:
        body: the raw bytes or text of the body, or a body a framework already decoded.

    Raises:
        InvalidJSON: not UTF-8, not JSON, or not a JSON object.
        InvalidValue: a field missing, of the wrong type or out of range; ``param`` is its path.
        UnsupportedParameter: ``n`` > 1 with ``stream: true``.
    """
    raw = _decode(body)
    try:
        sent: _Body = _structure_body(raw, _Body)
    except (BaseValidationError, Invalid) as exc:
        raise validation.invalid_value_from(exc, _REQUIRED) from exc
    stream = bool(sent.stream)
    if stream and sent.n is not None and sent.n > 1:
        raise UnsupportedParameter(
            f"n = {sent.n} is not supported with stream: true; "
            "send n: 1, or stream: false to get several choices.",
            param="n",
        )
    return ChatRequest(
        raw=raw,
        model=sent.model,
        messages=sent.messages,
        stream=stream,
        include_usage=bool(sent.stream_options and sent.stream_options.include_usage),
        max_tokens=(
            sent.max_completion_tokens
            if sent.max_completion_tokens is not None
            else sent.max_tokens
        ),
        temperature=sent.temperature,
        top_p=sent.top_p,
        stop=sent.stop,
        n=sent.n,
        presence_penalty=sent.presence_penalty,
        frequency_penalty=sent.frequency_penalty,
        logprobs=sent.logprobs,
        top_logprobs=sent.top_logprobs,
        tools=sent.tools,
        tool_choice=sent.tool_choice,
        functions=sent.functions,
        function_call=sent.function_call,
        parallel_tool_calls=sent.parallel_tool_calls,
        response_format=sent.response_format,
        seed=sent.seed,
        user=sent.user,
        metadata=sent.metadata,
        store=sent.store,
    )
