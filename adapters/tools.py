"""
Tool calls on the Straico upstream, emulated in text (contract §13; docs/tools.md).

Straico has no tool calling. The gateway describes the tools in a system message that demands
one reply format, renders the tool traffic of the history as text in that same format, sends
the call with ``stream: false`` (D1), and parses the reply back into OpenAI ``tool_calls``.

**The reply format** (the only one the instruction teaches)::

    <tool_calls>
    [{"name": "get_weather", "arguments": {"city": "Paris"}}]
    </tool_calls>

Rules:

1. **What is offered** (:func:`plan_tools`). Function ``tools``, or legacy ``functions``, never
   both. ``tool_choice`` / ``function_call`` ``none`` offers nothing (no tool list is sent, the
   reply is not parsed); ``required`` or a named function is demanded in the instruction.
   Legacy ``functions`` and ``parallel_tool_calls: false`` allow one call per reply. Tool fields
   that change nothing (empty arrays, a choice or ``parallel_tool_calls`` with no tools) are
   listed in ``ToolPlan.ignored_fields``. Shapes are checked here (``invalid_value``) because
   the gateway, not Straico, reads them; other tool types (``custom``) and other
   ``tool_choice`` types are ``unsupported_parameter``.
2. **Rendering** (:func:`tool_instruction`, :func:`render_tool_history`). The instruction lists
   each tool as one JSON line (name, description, JSON Schema of its arguments) inside
   ``<tools>`` and states the reply format. History: an assistant's ``tool_calls`` (or legacy
   ``function_call``) become text in the reply format after its own text, each call with its
   ``id``; ``tool`` messages become a ``user`` message of ``<tool_result call_id=".." name="..">``
   blocks (consecutive results merged into one message), so no ``tool`` role reaches Straico.
   A history with tool traffic but no tool offered gets :data:`HISTORY_NOTE` instead.
3. **Parsing** (:func:`parse_tool_reply`) never raises. Tolerated: the format itself (an array
   or one object, closing tag missing at the very end), qwen/hermes
   ``<tool_call>{json}</tool_call>``, GLM
   ``<tool_call>name<arg_key>k</arg_key><arg_value>v</arg_value></tool_call>`` (a value is JSON
   unless the tool's schema says ``string``), Kimi ``<|tool_call_begin|>functions.name:0
   <|tool_call_argument_begin|>{json}<|tool_call_end|>``, a ``{"tool_calls": [...]}`` object,
   a fenced code block holding only calls, a reply that is only calls as JSON; code fences
   inside or around envelopes, prose around them, several envelopes, whitespace. A call is
   ``{"name", "arguments"}`` (``parameters`` accepted for ``arguments``; the OpenAI shape
   ``{"type": "function", "function": {...}}`` too); ``arguments`` is an object, a string
   holding one, or absent (``{}``).
4. **All or nothing.** One envelope that does not parse, a call naming a tool that was not
   offered, or arguments that are not a JSON object (NaN and Infinity are not JSON) make the
   whole reply plain content, unchanged: nothing is dropped, nothing is invented. Text outside
   the calls stays ``content`` (an empty content becomes null in the answer).
5. **Choice** (:func:`choose_calls`): a reply that does not call the named function, or calls no
   tool when one is required, is returned as text. With one call allowed, the first call is
   kept and the others are appended to the content in the reply format.
6. **The answer** (:func:`tool_transform`): ``tool_calls`` with ids ``call_`` + 24
   alphanumerics (the source is injectable), ``type`` ``function``, ``arguments`` compact JSON
   of an object; the session finishes them with ``tool_calls``. Legacy ``functions`` answer with
   ``function_call`` (finish ``function_call``). Arguments are not checked against the schema,
   as OpenAI's non-strict tools do not either.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NoReturn

import attrs

from engine.answer import Answer
from engine.errors import InvalidValue, UnsupportedParameter
from engine.request import ChatRequest, Message
from engine.validation import describe

__all__ = [
    "HISTORY_NOTE",
    "Tool",
    "ToolCall",
    "ToolPlan",
    "ToolReply",
    "choose_calls",
    "format_tool_calls",
    "has_tool_traffic",
    "new_call_id",
    "parse_tool_reply",
    "plan_tools",
    "render_tool_history",
    "tool_instruction",
    "tool_transform",
]

#: OpenAI's rule for function names, plus ``.`` (some agent frameworks namespace their tools).
_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_CALL_ID_ALPHABET = string.ascii_letters + string.digits
_CALL_ID_LENGTH = 24


# --- what the request offers ---------------------------------------------------------------


@attrs.frozen
class Tool:
    """One function the model may call."""

    name: str
    description: str | None = None
    #: The JSON Schema of the arguments object.
    parameters: dict[str, Any] | None = None

    def describe(self) -> dict[str, Any]:
        """The tool as the instruction lists it."""
        listed: dict[str, Any] = {"name": self.name}
        if self.description:
            listed["description"] = self.description
        if self.parameters is not None:
            listed["parameters"] = self.parameters
        return listed


@attrs.frozen(kw_only=True)
class ToolPlan:
    """What a request asks of the tool emulation (rule 1)."""

    #: The tools offered to the model; empty when none are (then nothing is parsed).
    tools: tuple[Tool, ...] = ()
    #: Legacy ``functions``: the answer carries ``function_call``.
    legacy: bool = False
    #: ``tool_choice: required``: the reply must call a tool.
    required: bool = False
    #: ``tool_choice`` / ``function_call`` naming a function: the reply must call it.
    named: str | None = None
    #: Several calls per reply allowed (``parallel_tool_calls``, never with ``functions``).
    parallel: bool = True
    #: Tool fields accepted that change nothing (for the log line's ``ignored_fields``).
    ignored_fields: tuple[str, ...] = ()

    @property
    def offered(self) -> bool:
        return bool(self.tools)


def _invalid(param: str, what: str, value: Any) -> InvalidValue:
    return InvalidValue(f"{param} must be {what}, got {describe(value)}.", param=param)


def _function_spec(spec: Any, where: str) -> Tool:
    """A ``function`` object of ``tools`` or an entry of ``functions``."""
    if not isinstance(spec, dict):
        raise _invalid(where, "an object with a name", spec)
    name = spec.get("name")
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise _invalid(f"{where}.name", "1 to 64 letters, digits, '_', '-' or '.'", name)
    description = spec.get("description")
    if description is not None and not isinstance(description, str):
        raise _invalid(f"{where}.description", "a string", description)
    parameters = spec.get("parameters")
    if parameters is not None and not isinstance(parameters, dict):
        raise _invalid(f"{where}.parameters", "a JSON Schema object", parameters)
    return Tool(name, description, parameters)


def _read_tools(request: ChatRequest) -> tuple[tuple[Tool, ...], tuple[Tool, ...]]:
    tools: list[Tool] = []
    for index, entry in enumerate(request.tools or ()):
        kind = entry.get("type")
        if not isinstance(kind, str):
            raise _invalid(f"tools[{index}].type", '"function"', kind)
        if kind == "function":
            tools.append(_function_spec(entry.get("function"), f"tools[{index}].function"))
    functions = tuple(
        _function_spec(entry, f"functions[{index}]")
        for index, entry in enumerate(request.functions or ())
    )
    for field, read in (("tools", tools), ("functions", functions)):
        names = [tool.name for tool in read]
        for index, name in enumerate(names):
            if name in names[:index]:
                raise InvalidValue(
                    f"{field} names the function {name!r} twice; give each a unique name.",
                    param=field,
                )
    return tuple(tools), functions


def _function_name(spec: Any, where: str) -> str:
    name = spec.get("name") if isinstance(spec, dict) else None
    if not isinstance(name, str):
        raise _invalid(f"{where}.name", "the name of a function", name)
    return name


def _named_tool(choice: Any) -> str | None:
    """The function a ``tool_choice`` object names; None for a string or another kind."""
    if not isinstance(choice, dict):
        return None
    kind = choice.get("type")
    if not isinstance(kind, str):
        raise _invalid("tool_choice.type", '"function"', kind)
    if kind != "function":
        return None  # unsupported, reported once every shape is checked
    return _function_name(choice.get("function"), "tool_choice.function")


def _check_history(messages: Sequence[Message]) -> None:
    """Assistant tool calls of the history must name their function (they are rendered)."""
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        for number, call in enumerate(message.tool_calls or ()):
            function = call.get("function")
            if not isinstance(function, dict):
                raise _invalid(f"{where}.tool_calls[{number}].function", "an object", function)
            if not isinstance(function.get("name"), str):
                raise _invalid(
                    f"{where}.tool_calls[{number}].function.name", "a string", function.get("name")
                )
            arguments = function.get("arguments")
            if arguments is not None and not isinstance(arguments, str | dict):
                raise _invalid(
                    f"{where}.tool_calls[{number}].function.arguments", "a JSON string", arguments
                )
        if message.function_call is not None and not isinstance(
            message.function_call.get("name"), str
        ):
            raise _invalid(
                f"{where}.function_call.name", "a string", message.function_call.get("name")
            )


def _unsupported(param: str, message: str) -> UnsupportedParameter:
    return UnsupportedParameter(
        f"{param} is not supported by the Straico upstream. {message}", param=param
    )


def plan_tools(request: ChatRequest) -> ToolPlan:
    """
    Read and check the tool fields of *request* (rule 1).

    Shapes are checked first (``invalid_value`` comes before ``unsupported_parameter``, §7).

    Raises:
        InvalidValue: a tool, a choice or a history call that is malformed, a duplicate name,
            or a choice naming a function that is not offered.
        UnsupportedParameter: a tool type other than ``function``, a ``tool_choice`` of another
            type, or ``tools`` and ``functions`` together.
    """
    tools, functions = _read_tools(request)
    _check_history(request.messages)
    named_tool = _named_tool(request.tool_choice)
    named_function = (
        _function_name(request.function_call, "function_call")
        if isinstance(request.function_call, dict)
        else None
    )
    for field, named, offered in (
        ("tool_choice", named_tool, tools),
        ("function_call", named_function, functions),
    ):
        if named is not None and named not in {tool.name for tool in offered}:
            raise InvalidValue(
                f"{field} names the function {named!r}, which is not in "
                f"{'tools' if field == 'tool_choice' else 'functions'}.",
                param=field,
            )
    if request.tool_choice == "required" and not tools:
        raise InvalidValue(
            'tool_choice "required" needs at least one function in tools.', param="tool_choice"
        )

    for index, entry in enumerate(request.tools or ()):
        if entry.get("type") != "function":
            raise _unsupported(
                f"tools[{index}].type",
                "Tool calling on Straico is emulated for function tools only.",
            )
    if isinstance(request.tool_choice, dict) and named_tool is None:
        raise _unsupported(
            "tool_choice",
            'Send "none", "auto", "required" or {"type": "function", "function": {"name": ...}}.',
        )
    if tools and functions:
        raise _unsupported("functions", "Send tools or the legacy functions, not both.")

    ignored: list[str] = []
    if request.tools is not None and not request.tools:
        ignored.append("tools")
    if request.functions is not None and not request.functions:
        ignored.append("functions")
    if request.tool_choice is not None and not tools:
        ignored.append("tool_choice")
    if request.function_call is not None and not functions:
        ignored.append("function_call")
    if functions:
        offered = () if request.function_call == "none" else functions
        plan = ToolPlan(tools=offered, legacy=True, named=named_function, parallel=False)
    else:
        offered = () if request.tool_choice == "none" else tools
        plan = ToolPlan(
            tools=offered,
            required=request.tool_choice == "required",
            named=named_tool,
            parallel=request.parallel_tool_calls is not False,
        )
    if request.parallel_tool_calls is not None and (plan.legacy or not plan.offered):
        ignored.append("parallel_tool_calls")
    return attrs.evolve(plan, ignored_fields=tuple(ignored))


# --- rendering -----------------------------------------------------------------------------

#: What a model is told when the history holds tool traffic but no tool is offered now.
HISTORY_NOTE = (
    "Earlier turns of this conversation show tool calls in <tool_calls> blocks and their "
    "results in <tool_result> blocks. No tools are available now: answer in plain text, "
    "without a <tool_calls> block."
)

_EXAMPLE_CALL = '[{"name": "tool_name", "arguments": {"argument_name": "value"}}]'


def tool_instruction(plan: ToolPlan) -> str:
    """The system text that lists the offered tools and demands the reply format (rule 2)."""
    listing = "\n".join(json.dumps(tool.describe(), ensure_ascii=False) for tool in plan.tools)
    rules = [
        "Call only the tools listed above, with arguments that follow their schema. Write "
        "strict JSON: double quotes, no comments, no trailing commas.",
        "Put every call you need now in the one array."
        if plan.parallel
        else "Call at most one tool per reply: the array holds exactly one call.",
        "Write nothing after the block. The results come back in the next message, each in a "
        "<tool_result> block that names the call.",
    ]
    if plan.named is not None:
        rules.append(f'You must call the tool "{plan.named}" in this reply, and no other tool.')
    elif plan.required:
        rules.append("You must call at least one tool in this reply.")
    else:
        rules.append(
            "When no tool is needed, or the results you already have are enough, answer in "
            "plain text with no <tool_calls> block."
        )
    return (
        "# Tools\n\n"
        "You can call tools (functions) to help with this conversation. Each line below is "
        "one tool as JSON: its name, what it does, and the JSON Schema of its arguments.\n"
        f"<tools>\n{listing}\n</tools>\n\n"
        "To call tools, end your reply with exactly one block in this format: a JSON array of "
        'calls, each with the tool\'s "name" and its "arguments" as a JSON object.\n'
        f"<tool_calls>\n{_EXAMPLE_CALL}\n</tool_calls>\n\n"
        "Rules:\n" + "\n".join(f"- {rule}" for rule in rules)
    )


@attrs.frozen
class ToolCall:
    """A call parsed from a reply: a tool's name and its arguments object."""

    name: str
    arguments: dict[str, Any]

    def arguments_json(self) -> str:
        """The arguments as OpenAI sends them: compact JSON of an object."""
        return json.dumps(self.arguments, ensure_ascii=False, separators=(",", ":"))


def _block(calls: Sequence[Mapping[str, Any]]) -> str:
    return f"<tool_calls>\n{json.dumps(list(calls), ensure_ascii=False)}\n</tool_calls>"


def format_tool_calls(calls: Sequence[ToolCall]) -> str:
    """*calls* written in the reply format."""
    return _block([{"name": call.name, "arguments": call.arguments} for call in calls])


def _history_arguments(raw: Any) -> Any:
    """A history call's arguments as an object when they are JSON of one, else as given."""
    if isinstance(raw, str):
        try:
            decoded = json.loads(raw)
        except ValueError:
            return raw
        return decoded if isinstance(decoded, dict) else raw
    return {} if raw is None else raw


def _assistant_as_text(message: Message, names: dict[str, str]) -> Message:
    listed: list[dict[str, Any]] = []
    for call in message.tool_calls or ():
        function = call.get("function") or {}
        entry: dict[str, Any] = {}
        if isinstance(call.get("id"), str):
            entry["id"] = call["id"]
            names[call["id"]] = function.get("name", "")
        entry["name"] = function.get("name", "")
        entry["arguments"] = _history_arguments(function.get("arguments"))
        listed.append(entry)
    if message.function_call is not None:
        listed.append(
            {
                "name": message.function_call.get("name", ""),
                "arguments": _history_arguments(message.function_call.get("arguments")),
            }
        )
    block = _block(listed)
    content: str | tuple[dict[str, Any], ...]
    if isinstance(message.content, tuple):
        content = (*message.content, {"type": "text", "text": block})
    else:
        said = message.content or message.refusal or ""
        content = f"{said}\n\n{block}" if said else block
    return attrs.evolve(message, content=content, tool_calls=None, function_call=None)


def _tool_result(message: Message, names: Mapping[str, str]) -> str:
    call_id = message.tool_call_id or ""
    name = names.get(call_id) or message.name
    attributes = f"call_id={json.dumps(call_id, ensure_ascii=False)}"
    if name:
        attributes += f" name={json.dumps(name, ensure_ascii=False)}"
    return f"<tool_result {attributes}>\n{message.text()}\n</tool_result>"


def has_tool_traffic(messages: Sequence[Message]) -> bool:
    """Whether the history holds tool calls or tool results."""
    return any(
        message.role == "tool" or message.tool_calls or message.function_call is not None
        for message in messages
    )


def render_tool_history(messages: Sequence[Message]) -> tuple[Message, ...]:
    """*messages* with their tool traffic as text (rule 2); other messages are kept as they are."""
    names: dict[str, str] = {}
    rendered: list[Message] = []
    results: list[str] = []
    for message in messages:
        if message.role == "tool":
            results.append(_tool_result(message, names))
            continue
        if results:
            rendered.append(Message(role="user", content="\n\n".join(results)))
            results = []
        if message.role == "assistant" and (message.tool_calls or message.function_call):
            rendered.append(_assistant_as_text(message, names))
        else:
            rendered.append(message)
    if results:
        rendered.append(Message(role="user", content="\n\n".join(results)))
    return tuple(rendered)


# --- parsing -------------------------------------------------------------------------------


@attrs.frozen
class ToolReply:
    """A reply read for tool calls: the calls and the text around them, or why it stays text."""

    #: The reply as the model wrote it.
    text: str
    calls: tuple[ToolCall, ...] = ()
    #: The text outside the calls; the whole text when there are none.
    content: str = ""
    #: Why the reply is plain text although it looked like a call (None otherwise).
    problem: str | None = None


class _NotACall(Exception):
    """An envelope that does not hold valid calls: the whole reply stays text (rule 4)."""


def _no_constant(name: str) -> NoReturn:
    raise ValueError(f"{name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_no_constant)

# Where an envelope may start; the first of these alternatives wins at one position.
_OPENER = re.compile(
    r"(?P<fence>```[ \t]*[\w+-]*[ \t]*\n?(?=\s*[\[{]))"
    r"|(?P<calls><tool_calls>)"
    r"|(?P<call><tool_call>)"
    r"|(?P<section><\|tool_calls_section_begin\|>)"
    r"|(?P<kimi><\|tool_call_begin\|>)"
    r'|(?P<object>\{(?=\s*"tool_calls"\s*:))'
)
_FENCE_START = re.compile(r"```[ \t]*[\w+-]*[ \t]*\n?")
_FENCE_END = re.compile(r"\s*```")
_GLM_NAME = re.compile(r"\s*([^\s<{]+)")
_GLM_PAIR = re.compile(r"\s*<arg_key>(.*?)</arg_key>\s*<arg_value>(.*?)</arg_value>", re.DOTALL)
_KIMI_HEAD = re.compile(r"<\|tool_call_begin\|>(.*?)<\|tool_call_argument_begin\|>", re.DOTALL)
_KIMI_END = "<|tool_call_end|>"
_KIMI_CALL_START = "<|tool_call_begin|>"
_KIMI_SECTION_END = "<|tool_calls_section_end|>"
#: Keys a bare JSON call may have (outside any tag, JSON must look like calls to be one).
_CALL_KEYS = frozenset({"id", "type", "name", "arguments", "parameters", "function"})
# A fence left open right before an envelope, and its closing right after the envelopes.
_OPEN_FENCE_TAIL = re.compile(r"```[ \t]*[\w+-]*[ \t]*\s*\Z")
_CLOSE_FENCE_HEAD = re.compile(r"\s*```[ \t]*(?:\n|\Z)")


def _skip_space(text: str, pos: int) -> int:
    while pos < len(text) and text[pos].isspace():
        pos += 1
    return pos


def _skip_fence_start(text: str, pos: int) -> int:
    pos = _skip_space(text, pos)
    if fence := _FENCE_START.match(text, pos):
        pos = _skip_space(text, fence.end())
    return pos


def _decode(text: str, pos: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, pos)
    except (ValueError, RecursionError):
        raise _NotACall("a tool-call block does not hold valid JSON") from None


def _close(text: str, pos: int, tag: str) -> int:
    """The end of an envelope after its JSON: an optional fence end, then *tag* or the end."""
    pos = _skip_space(text, pos)
    if fence := _FENCE_END.match(text, pos):
        pos = _skip_space(text, fence.end())
    if text.startswith(tag, pos):
        return pos + len(tag)
    if pos == len(text):  # a reply that stops right after its last call lost only the tag
        return pos
    raise _NotACall(f"a tool-call block is not closed by {tag}")


def _tool(name: Any, known: Mapping[str, Tool]) -> Tool:
    if not isinstance(name, str) or not name:
        raise _NotACall("a call does not name its tool")
    tool = known.get(name)
    if tool is None:
        raise _NotACall(f"the reply calls {name!r}, which is not an offered tool")
    return tool


def _arguments(value: Any) -> dict[str, Any]:
    if value is None:
        return {}
    if isinstance(value, str):  # the OpenAI shape: JSON of the object, in a string
        if not value.strip():
            return {}
        try:
            value = _DECODER.decode(value)
        except (ValueError, RecursionError):
            raise _NotACall("a call's arguments string is not JSON") from None
    if not isinstance(value, dict):
        raise _NotACall("a call's arguments are not a JSON object")
    return value


def _call(obj: Any, known: Mapping[str, Tool]) -> ToolCall:
    if not isinstance(obj, dict):
        raise _NotACall("a call is not a JSON object")
    function = obj.get("function")
    if isinstance(function, dict):  # the OpenAI shape
        name = function.get("name")
        arguments = function.get("arguments", function.get("parameters"))
    else:
        name = function if isinstance(function, str) else obj.get("name")
        arguments = obj["arguments"] if "arguments" in obj else obj.get("parameters")
    return ToolCall(_tool(name, known).name, _arguments(arguments))


def _calls(value: Any, known: Mapping[str, Tool]) -> list[ToolCall]:
    if isinstance(value, dict) and set(value) == {"tool_calls"}:
        value = value["tool_calls"]
    if isinstance(value, dict):
        return [_call(value, known)]
    if isinstance(value, list) and value:
        return [_call(item, known) for item in value]
    raise _NotACall("a tool-call block holds no call")


def _looks_like_call(obj: Any) -> bool:
    return (
        isinstance(obj, dict)
        and bool(obj.keys() & {"name", "function"})
        and obj.keys() <= _CALL_KEYS
    )


def _looks_like_calls(value: Any) -> bool:
    """JSON outside any tag counts as calls only when it has their shape."""
    if isinstance(value, dict) and set(value) == {"tool_calls"}:
        return True
    if isinstance(value, list):
        return bool(value) and all(_looks_like_call(item) for item in value)
    return _looks_like_call(value)


def _glm_value(tool: Tool, key: str, raw: str) -> Any:
    """GLM writes strings as they are and other values as JSON; the schema tells which."""
    value = raw.strip()
    schema = (tool.parameters or {}).get("properties")
    prop = schema.get(key) if isinstance(schema, dict) else None
    if isinstance(prop, dict) and prop.get("type") == "string":
        return value
    try:
        return _DECODER.decode(value)
    except (ValueError, RecursionError):
        return value


def _glm_call(inner: str, known: Mapping[str, Tool]) -> ToolCall:
    head = _GLM_NAME.match(inner)
    if head is None:
        raise _NotACall("a <tool_call> block names no tool")
    tool = _tool(head.group(1), known)
    pos = _skip_space(inner, head.end())
    if inner.startswith("{", pos):  # the name, then the arguments as JSON
        value, end = _decode(inner, pos)
        if inner[end:].strip():
            raise _NotACall("a <tool_call> block holds text after its arguments")
        return ToolCall(tool.name, _arguments(value))
    arguments: dict[str, Any] = {}
    while pair := _GLM_PAIR.match(inner, pos):
        key = pair.group(1).strip()
        arguments[key] = _glm_value(tool, key, pair.group(2))
        pos = pair.end()
    if inner[pos:].strip():
        raise _NotACall("a <tool_call> block holds neither JSON nor arg_key/arg_value pairs")
    return ToolCall(tool.name, arguments)


def _kimi_call(text: str, pos: int, known: Mapping[str, Tool]) -> tuple[ToolCall, int]:
    head = _KIMI_HEAD.match(text, pos)
    if head is None:
        raise _NotACall("a <|tool_call_begin|> call has no <|tool_call_argument_begin|>")
    name = head.group(1).strip().removeprefix("functions.").split(":", 1)[0]
    tool = _tool(name, known)
    value, end = _decode(text, _skip_space(text, head.end()))
    return ToolCall(tool.name, _arguments(value)), _close(text, end, _KIMI_END)


def _envelope(
    kind: str, text: str, start: int, after: int, known: Mapping[str, Tool]
) -> tuple[list[ToolCall], int] | None:
    """The calls of the envelope opened at *start*, and where it ends; None: not an envelope."""
    if kind == "fence":  # a fenced block is calls only when it holds nothing but calls
        try:
            value, end = _DECODER.raw_decode(text, _skip_space(text, after))
        except (ValueError, RecursionError):
            return None
        fence = _FENCE_END.match(text, end)
        closed = fence.end() if fence else _skip_space(text, end)
        if not _looks_like_calls(value) or (fence is None and closed != len(text)):
            return None
        return _calls(value, known), closed
    if kind == "calls":
        value, end = _decode(text, _skip_fence_start(text, after))
        return _calls(value, known), _close(text, end, "</tool_calls>")
    if kind == "call":
        pos = _skip_fence_start(text, after)
        if text.startswith(("{", "["), pos):
            value, end = _decode(text, pos)
            return _calls(value, known), _close(text, end, "</tool_call>")
        close = text.find("</tool_call>", pos)
        inner_end = len(text) if close < 0 else close
        end = len(text) if close < 0 else close + len("</tool_call>")
        return [_glm_call(text[pos:inner_end], known)], end
    if kind == "kimi":
        call, end = _kimi_call(text, start, known)
        return [call], end
    if kind == "section":
        calls: list[ToolCall] = []
        pos = _skip_space(text, after)
        while text.startswith(_KIMI_CALL_START, pos):
            call, pos = _kimi_call(text, pos, known)
            calls.append(call)
            pos = _skip_space(text, pos)
        if text.startswith(_KIMI_SECTION_END, pos):
            pos += len(_KIMI_SECTION_END)
        elif pos != len(text):
            raise _NotACall("a Kimi tool-call section holds something other than calls")
        if not calls:
            raise _NotACall("a Kimi tool-call section holds no call")
        return calls, pos
    # kind == "object": {"tool_calls": [...]} written in the reply
    value, end = _decode(text, start)
    if not (isinstance(value, dict) and set(value) == {"tool_calls"}):
        raise _NotACall('a {"tool_calls": ...} object holds other keys')
    return _calls(value, known), end


def _without_wrapping_fences(pieces: list[str]) -> list[str]:
    """Remove a code fence left open before a run of envelopes and closed right after it."""
    index = 0
    while index < len(pieces) - 1:
        last = index + 1  # envelopes index..last-1 are separated by whitespace only
        while last < len(pieces) - 1 and not pieces[last].strip():
            last += 1
        opened = _OPEN_FENCE_TAIL.search(pieces[index])
        closed = _CLOSE_FENCE_HEAD.match(pieces[last])
        fences_before = sum(piece.count("```") for piece in pieces[: index + 1])
        if opened and closed and fences_before % 2 == 1:
            pieces[index] = pieces[index][: opened.start()]
            pieces[last] = pieces[last][closed.end() :]
        index = last
    return pieces


def _scan(text: str, known: Mapping[str, Tool]) -> tuple[list[ToolCall], list[str]]:
    calls: list[ToolCall] = []
    pieces: list[str] = []
    outside_from = search_from = 0
    while opener := _OPENER.search(text, search_from):
        kind = opener.lastgroup or ""
        found = _envelope(kind, text, opener.start(), opener.end(), known)
        if found is None:
            search_from = opener.end()
            continue
        pieces.append(text[outside_from : opener.start()])
        calls.extend(found[0])
        outside_from = search_from = found[1]
    pieces.append(text[outside_from:])
    return calls, pieces


def _bare(text: str, known: Mapping[str, Tool]) -> list[ToolCall]:
    """A reply that is nothing but calls as JSON."""
    start = _skip_space(text, 0)
    if not text.startswith(("{", "["), start):
        return []
    try:
        value, end = _DECODER.raw_decode(text, start)
    except (ValueError, RecursionError):
        return []
    if text[end:].strip() or not _looks_like_calls(value):
        return []
    return _calls(value, known)


def parse_tool_reply(text: str, tools: Sequence[Tool]) -> ToolReply:
    """
    Read the calls a reply makes to *tools* (rules 3 and 4); never raises.

    Returns:
        The calls and the text outside them; no calls and the whole text when the reply calls
        nothing, or when it tried and failed (``problem`` says why).
    """
    known = {tool.name: tool for tool in tools}
    try:
        calls, pieces = _scan(text, known)
        if not calls:
            calls, pieces = _bare(text, known), [""]
    except _NotACall as exc:
        return ToolReply(text, (), text, str(exc))
    if not calls:
        return ToolReply(text, (), text)
    outside = [piece.strip() for piece in _without_wrapping_fences(pieces)]
    return ToolReply(text, tuple(calls), "\n\n".join(piece for piece in outside if piece))


def choose_calls(reply: ToolReply, plan: ToolPlan) -> tuple[tuple[ToolCall, ...], str]:
    """Apply ``tool_choice`` and the one-call rule (rule 5): the calls kept, and the content."""
    if not reply.calls or (
        plan.named is not None and any(call.name != plan.named for call in reply.calls)
    ):
        return (), reply.text
    calls, content = reply.calls, reply.content
    if len(calls) > 1 and not plan.parallel:
        rest = format_tool_calls(calls[1:])
        calls, content = calls[:1], f"{content}\n\n{rest}" if content else rest
    return calls, content


# --- the answer ----------------------------------------------------------------------------


def new_call_id() -> str:
    """``call_`` and 24 random alphanumerics."""
    return "call_" + "".join(secrets.choice(_CALL_ID_ALPHABET) for _ in range(_CALL_ID_LENGTH))


def tool_transform(
    plan: ToolPlan, *, make_call_id: Callable[[], str] = new_call_id
) -> Callable[[Answer], Answer]:
    """The session's answer hook for a request that offers tools (rule 6)."""

    def transform(answer: Answer) -> Answer:
        if answer.tool_calls or answer.function_call is not None:
            return answer  # the upstream called natively: nothing to emulate
        calls, content = choose_calls(parse_tool_reply(answer.content, plan.tools), plan)
        if not calls:
            return answer
        if plan.legacy:
            call = calls[0]
            function_call = {"name": call.name, "arguments": call.arguments_json()}
            return attrs.evolve(answer, content=content, function_call=function_call)
        tool_calls = [
            {
                "id": make_call_id(),
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments_json()},
            }
            for call in calls
        ]
        return attrs.evolve(answer, content=content, tool_calls=tool_calls)

    return transform
