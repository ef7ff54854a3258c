"""
A validated chat request as the Straico upstream takes it (contract §8, "field (Straico upstream)").

Pure functions, no IO. Rules:

1. **Sent:** ``model``, ``messages``, ``temperature``, ``max_tokens`` (``max_completion_tokens``
   wins when both are given) and ``stream`` (as the detection rules decide). The ``developer``
   role goes as ``system``; content goes as a string, or as Straico's ``text`` and ``image_url``
   parts.
2. **Honoured by the gateway, not sent:** ``stop`` (cut on the whole answer, so the call is made
   with ``stream: false``, D1: ``StraicoPlan.needs_whole``) and ``stream_options``.
   **Emulated** (contract §13, :mod:`adapters.tools`): ``tools``, ``tool_choice``, ``functions``,
   ``function_call``, ``parallel_tool_calls``, ``tool`` messages and assistant ``tool_calls`` /
   ``function_call``. A request that offers tools needs the whole answer too (it is parsed);
   the tool traffic of the history is rendered as text, and the tools instruction is appended
   to the last system or developer message that opens the conversation (a new first ``system``
   message when none does), so the client's own instructions stay first and unchanged.
3. **Accepted, not sent** (``StraicoPlan.ignored_fields``, for the log line): ``user``,
   ``metadata``, ``store``, ``seed``, and the values that change nothing: ``n`` = 1,
   ``logprobs`` = false, ``top_p`` = 1, penalties = 0, ``response_format`` ``text``,
   ``modalities`` ``["text"]``, empty ``tools`` / ``functions`` arrays, and a ``tool_choice``,
   ``function_call`` or ``parallel_tool_calls`` with no tool to apply to; also every unknown
   top-level field.
4. **Refused** with ``unsupported_parameter`` naming the field: any other value of those fields,
   ``top_logprobs``, ``audio``, ``prediction``, an ``image_url`` with a ``data:`` URI, file and
   audio parts; tool types other than ``function``, other ``tool_choice`` types, and ``tools``
   with ``functions``. The tool fields are checked first (their shapes can be ``invalid_value``,
   which §7 orders before ``unsupported_parameter``), then the other top-level fields in the
   order of ``_RULES``, then the messages in order.
5. A top-level field whose value is ``null`` counts as absent.

Not listed in ``ignored_fields`` (the contract names top-level fields only): a message's
``name``, and an image part's ``detail``, which Straico does not document.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from engine.errors import UnsupportedParameter
from engine.request import ChatRequest, Message

from .tools import (
    HISTORY_NOTE,
    ToolPlan,
    has_tool_traffic,
    plan_tools,
    render_tool_history,
    tool_instruction,
)

__all__ = ["StraicoPlan", "apply_stop", "plan_straico_request", "straico_payload"]

#: Fields Straico receives (rule 1).
_SENT = frozenset({"model", "messages", "temperature", "max_tokens", "max_completion_tokens"})
#: Fields the gateway itself acts on (rule 2); ``stream`` is sent per the detection rules.
_HONOURED = frozenset({"stream", "stream_options", "stop"})
#: Fields the tool emulation reads (:func:`adapters.tools.plan_tools`).
_TOOL_FIELDS = frozenset(
    {"tools", "tool_choice", "functions", "function_call", "parallel_tool_calls"}
)


def _always(_: Any) -> bool:
    return True


def _never(_: Any) -> bool:
    return False


@attrs.frozen
class _Rule:
    """A field Straico does not take: when its value changes nothing, and what to say if not."""

    field: str
    harmless: Callable[[Any], bool]
    advice: str


_RULES: tuple[_Rule, ...] = (
    _Rule("user", _always, ""),
    _Rule("metadata", _always, ""),
    _Rule("store", _always, ""),
    _Rule("seed", _always, ""),
    _Rule("n", lambda n: n == 1, "Straico returns one choice; send n: 1 or leave n out."),
    _Rule(
        "logprobs",
        lambda flag: flag is False,
        "Straico returns no log probabilities; send logprobs: false or leave it out.",
    ),
    _Rule("top_logprobs", _never, "Straico returns no log probabilities; leave top_logprobs out."),
    _Rule(
        "top_p",
        lambda top_p: top_p == 1,
        "Straico has no nucleus sampling; send top_p: 1 or leave it out (temperature works).",
    ),
    _Rule(
        "presence_penalty",
        lambda penalty: penalty == 0,
        "Straico has no presence penalty; send 0 or leave it out.",
    ),
    _Rule(
        "frequency_penalty",
        lambda penalty: penalty == 0,
        "Straico has no frequency penalty; send 0 or leave it out.",
    ),
    _Rule(
        "response_format",
        lambda fmt: isinstance(fmt, dict) and fmt.get("type") == "text",
        'Straico has no JSON mode or structured output; send {"type": "text"} or leave '
        "response_format out.",
    ),
    _Rule("audio", _never, "Straico answers in text only; leave audio out."),
    _Rule(
        "modalities",
        lambda modalities: modalities == ["text"],
        'Straico answers in text only; send modalities: ["text"] or leave it out.',
    ),
    _Rule("prediction", _never, "Straico has no predicted outputs; leave prediction out."),
)
#: Every top-level field this module knows; any other is unknown, hence ignored (rule 3).
_KNOWN = _SENT | _HONOURED | _TOOL_FIELDS | frozenset(rule.field for rule in _RULES)


@attrs.frozen
class StraicoPlan:
    """How a request goes to Straico, once :func:`plan_straico_request` accepted it."""

    #: Top-level fields accepted but not sent, sorted (the log line's ``ignored_fields``).
    ignored_fields: tuple[str, ...]
    #: The gateway must see the whole answer (``stop``, tools offered): sent with ``stream: false``.
    needs_whole: bool
    #: What the tool emulation does with this request (nothing offered by default).
    tools: ToolPlan = attrs.field(factory=ToolPlan)


def _unsupported(param: str, advice: str, value: Any = None) -> UnsupportedParameter:
    shown = param
    if isinstance(value, bool | int | float | str):
        shown = f"{param} = {json.dumps(value)}"
    return UnsupportedParameter(
        f"{shown} is not supported by the Straico upstream. {advice}", param=param
    )


def _check_message(message: Message, index: int) -> None:
    where = f"messages[{index}]"
    if isinstance(message.content, str) or message.content is None:
        return
    for number, part in enumerate(message.content):
        kind = part.get("type")
        if kind == "image_url" and _is_data_uri(part["image_url"]["url"]):
            raise _unsupported(
                f"{where}.content[{number}].image_url",
                "Straico takes images by https URL only; upload the image and send its URL "
                "instead of a data: URI.",
            )
        if kind in ("input_audio", "file"):
            raise _unsupported(
                f"{where}.content[{number}].{kind}",
                "Straico chat takes text and image_url parts only.",
            )


def _is_data_uri(url: str) -> bool:
    return url.lstrip()[:5].lower() == "data:"


def plan_straico_request(request: ChatRequest) -> StraicoPlan:
    """
    Check what Straico can honour and list what it does not need (rules 2 to 5).

    Raises:
        InvalidValue: a malformed tool field or tool call of the history (rule 4).
        UnsupportedParameter: the first field, in the order of rule 4, that Straico cannot honour.
    """
    tools = plan_tools(request)
    raw = request.raw
    ignored: list[str] = list(tools.ignored_fields)
    for rule in _RULES:
        value = raw.get(rule.field)
        if value is None:
            continue
        if not rule.harmless(value):
            raise _unsupported(rule.field, rule.advice, value)
        ignored.append(rule.field)
    for index, message in enumerate(request.messages):
        _check_message(message, index)
    ignored.extend(
        field for field, value in raw.items() if value is not None and field not in _KNOWN
    )
    return StraicoPlan(
        ignored_fields=tuple(sorted(ignored)),
        needs_whole=bool(request.stop) or tools.offered,
        tools=tools,
    )


def _straico_part(part: dict[str, Any]) -> dict[str, Any]:
    kind = part.get("type")
    if kind == "text":
        return {"type": "text", "text": part["text"]}
    if kind == "refusal":  # what an assistant said when it refused: plain text to Straico
        return {"type": "text", "text": part["refusal"]}
    if kind == "image_url":
        return {"type": "image_url", "image_url": {"url": part["image_url"]["url"]}}
    raise ValueError(f"a {kind} part cannot go to Straico; plan_straico_request refuses it")


def _straico_message(message: Message) -> dict[str, Any]:
    if message.role == "tool":
        raise ValueError("a tool message cannot go to Straico; render_tool_history renders it")
    role = "system" if message.role == "developer" else message.role
    content: str | list[dict[str, Any]]
    if isinstance(message.content, str):
        content = message.content
    elif message.content is None:
        content = message.refusal or ""
    else:
        content = [_straico_part(part) for part in message.content]
    return {"role": role, "content": content}


def straico_payload(request: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """
    The body of ``POST /v2/chat/completions`` for a request :func:`plan_straico_request` accepted.

    Args:
        stream: the ``stream`` flag the detection rules chose (always present in the body).

    Raises:
        ValueError: a file/audio part reached here (a bug: plan first).
    """
    history = request.messages
    traffic = has_tool_traffic(history)
    if traffic:
        history = render_tool_history(history)
    messages = [_straico_message(message) for message in history]
    tools = plan_tools(request)
    if tools.offered:
        _add_system_text(messages, tool_instruction(tools))
    elif traffic:
        _add_system_text(messages, HISTORY_NOTE)
    payload: dict[str, Any] = {"model": request.model, "messages": messages}
    if request.temperature is not None:
        payload["temperature"] = request.temperature
    if request.max_tokens is not None:
        payload["max_tokens"] = request.max_tokens
    payload["stream"] = stream
    return payload


def _add_system_text(messages: list[dict[str, Any]], text: str) -> None:
    """Append *text* to the system messages that open the conversation (rule 2), in place."""
    leading = 0
    while leading < len(messages) and messages[leading]["role"] == "system":
        leading += 1
    if leading == 0:
        messages.insert(0, {"role": "system", "content": text})
        return
    last = messages[leading - 1]
    content = last["content"]
    if isinstance(content, str):
        last["content"] = f"{content}\n\n{text}" if content else text
    else:
        last["content"] = [*content, {"type": "text", "text": text}]


def apply_stop(text: str, stops: Sequence[str]) -> tuple[str, bool]:
    """
    Cut *text* before the earliest occurrence of any stop sequence (``stop``, rule 2).

    Returns:
        The text up to the first stop sequence, and whether it was cut. Empty stop sequences
        never match.
    """
    found = [at for stop in stops if stop and (at := text.find(stop)) >= 0]
    if not found:
        return text, False
    return text[: min(found)], True
