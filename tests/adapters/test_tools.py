"""Tool calls emulated on Straico: what is offered, how it is rendered and parsed (§13)."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from adapters.tools import (
    HISTORY_NOTE,
    Tool,
    ToolCall,
    ToolPlan,
    ToolReply,
    choose_calls,
    format_tool_calls,
    new_call_id,
    parse_tool_reply,
    plan_tools,
    render_tool_history,
    tool_instruction,
    tool_transform,
)
from engine.answer import Answer
from engine.chunks import tool_call_deltas
from engine.errors import InvalidValue, UnsupportedParameter
from engine.request import ChatRequest, Message, parse_chat_request

MODEL = "openai/gpt-4o-mini"
HELLO = {"role": "user", "content": "What is the weather in Paris?"}
WEATHER_SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}},
    "required": ["city"],
}
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": WEATHER_SCHEMA,
    },
}
SEARCH = {"type": "function", "function": {"name": "search"}}
WEATHER_TOOL = Tool("get_weather", "The weather in a city", WEATHER_SCHEMA)
SEARCH_TOOL = Tool("search")
TOOLS = (WEATHER_TOOL, SEARCH_TOOL)
CALL_ID = re.compile(r"call_[A-Za-z0-9]{24}")


def request(**fields: Any) -> ChatRequest:
    return parse_chat_request({"model": MODEL, "messages": [HELLO], **fields})


def ids(*values: str) -> Any:
    """A call-id source that hands out *values* in order."""
    it = iter(values)
    return lambda: next(it)


# --- plan_tools ------------------------------------------------------------------------------

PLANS = [
    pytest.param({}, ToolPlan(), id="no-tools"),
    pytest.param({"tools": [WEATHER, SEARCH]}, ToolPlan(tools=TOOLS), id="auto-by-default"),
    pytest.param({"tools": [WEATHER], "tool_choice": "auto"}, ToolPlan(tools=TOOLS[:1]), id="auto"),
    pytest.param({"tools": [WEATHER], "tool_choice": "none"}, ToolPlan(), id="none-offers-nothing"),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": "required"},
        ToolPlan(tools=TOOLS[:1], required=True),
        id="required",
    ),
    pytest.param(
        {
            "tools": [WEATHER, SEARCH],
            "tool_choice": {"type": "function", "function": {"name": "search"}},
        },
        ToolPlan(tools=TOOLS, named="search"),
        id="named",
    ),
    pytest.param(
        {"tools": [WEATHER], "parallel_tool_calls": False},
        ToolPlan(tools=TOOLS[:1], parallel=False),
        id="one-call",
    ),
    pytest.param(
        {"functions": [WEATHER["function"]]},
        ToolPlan(tools=TOOLS[:1], legacy=True, parallel=False),
        id="legacy-functions",
    ),
    pytest.param(
        {"functions": [WEATHER["function"]], "function_call": {"name": "get_weather"}},
        ToolPlan(tools=TOOLS[:1], legacy=True, parallel=False, named="get_weather"),
        id="legacy-named",
    ),
    pytest.param(
        {"functions": [WEATHER["function"]], "function_call": "none"},
        ToolPlan(legacy=True, parallel=False),
        id="legacy-none",
    ),
    pytest.param(
        {"tools": [], "functions": [], "tool_choice": "auto", "parallel_tool_calls": True},
        ToolPlan(ignored_fields=("tools", "functions", "tool_choice", "parallel_tool_calls")),
        id="nothing-to-apply-to",
    ),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": "none", "parallel_tool_calls": False},
        ToolPlan(parallel=False, ignored_fields=("parallel_tool_calls",)),
        id="none-makes-parallel-meaningless",
    ),
    pytest.param(
        {"function_call": "auto", "parallel_tool_calls": False, "functions": [SEARCH["function"]]},
        ToolPlan(
            tools=(SEARCH_TOOL,),
            legacy=True,
            parallel=False,
            ignored_fields=("parallel_tool_calls",),
        ),
        id="legacy-ignores-parallel",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), PLANS)
def test_plan_tools_reads_the_tool_fields(fields: dict[str, Any], expected: ToolPlan) -> None:
    assert plan_tools(request(**fields)) == expected


def assistant_calls(*calls: dict[str, Any]) -> dict[str, Any]:
    return {"role": "assistant", "content": None, "tool_calls": list(calls)}


INVALID = [
    pytest.param({"tools": [{"function": {"name": "f"}}]}, "tools[0].type", id="no-type"),
    pytest.param({"tools": [{"type": "function"}]}, "tools[0].function", id="no-function"),
    pytest.param(
        {"tools": [{"type": "function", "function": {"name": "a b"}}]},
        "tools[0].function.name",
        id="name-with-space",
    ),
    pytest.param(
        {"tools": [{"type": "function", "function": {"name": "x" * 65}}]},
        "tools[0].function.name",
        id="name-too-long",
    ),
    pytest.param(
        {"tools": [{"type": "function", "function": {"name": "f", "description": 1}}]},
        "tools[0].function.description",
        id="description-not-string",
    ),
    pytest.param(
        {"tools": [{"type": "function", "function": {"name": "f", "parameters": []}}]},
        "tools[0].function.parameters",
        id="parameters-not-object",
    ),
    pytest.param({"tools": [SEARCH, SEARCH]}, "tools", id="duplicate-name"),
    pytest.param({"functions": [{"description": "d"}]}, "functions[0].name", id="function-no-name"),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": {"type": "function", "function": {"name": "nope"}}},
        "tool_choice",
        id="named-not-offered",
    ),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": {"type": "function"}},
        "tool_choice.function.name",
        id="named-without-name",
    ),
    pytest.param({"tools": [WEATHER], "tool_choice": {}}, "tool_choice.type", id="choice-no-type"),
    pytest.param({"tool_choice": "required"}, "tool_choice", id="required-without-tools"),
    pytest.param(
        {"functions": [WEATHER["function"]], "function_call": {"name": "search"}},
        "function_call",
        id="legacy-named-not-offered",
    ),
    pytest.param(
        {"messages": [HELLO, assistant_calls({"id": "c", "type": "function"})]},
        "messages[1].tool_calls[0].function",
        id="history-call-without-function",
    ),
    pytest.param(
        {"messages": [HELLO, assistant_calls({"id": "c", "function": {"arguments": "{}"}})]},
        "messages[1].tool_calls[0].function.name",
        id="history-call-without-name",
    ),
    pytest.param(
        {"messages": [HELLO, assistant_calls({"function": {"name": "f", "arguments": 3}})]},
        "messages[1].tool_calls[0].function.arguments",
        id="history-arguments-number",
    ),
    pytest.param(
        {"messages": [{"role": "assistant", "function_call": {"arguments": "{}"}}]},
        "messages[0].function_call.name",
        id="history-function-call-without-name",
    ),
]


@pytest.mark.parametrize(("fields", "param"), INVALID)
def test_plan_tools_malformed_field_is_invalid_value(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(InvalidValue) as caught:
        plan_tools(request(**fields))
    assert (caught.value.code, caught.value.param) == ("invalid_value", param)


UNSUPPORTED = [
    pytest.param(
        {"tools": [WEATHER, {"type": "custom", "custom": {"name": "c"}}]},
        "tools[1].type",
        id="custom-tool",
    ),
    pytest.param(
        {"tools": [WEATHER], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
        "tool_choice",
        id="allowed-tools-choice",
    ),
    pytest.param(
        {"tools": [WEATHER], "functions": [SEARCH["function"]]}, "functions", id="both-kinds"
    ),
]


@pytest.mark.parametrize(("fields", "param"), UNSUPPORTED)
def test_plan_tools_what_cannot_be_emulated_is_unsupported(
    fields: dict[str, Any], param: str
) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        plan_tools(request(**fields))
    assert (caught.value.code, caught.value.param) == ("unsupported_parameter", param)
    assert caught.value.message.startswith(f"{param} is not supported by the Straico upstream.")


def test_plan_tools_shape_errors_come_before_unsupported_ones() -> None:
    fields = {"tools": [{"type": "custom"}, {"type": "function", "function": {"name": "a b"}}]}
    with pytest.raises(InvalidValue) as caught:
        plan_tools(request(**fields))
    assert caught.value.param == "tools[1].function.name"


# --- the instruction -------------------------------------------------------------------------

FORMAT_BLOCK = (
    '<tool_calls>\n[{"name": "tool_name", "arguments": {"argument_name": "value"}}]\n</tool_calls>'
)


def test_tool_instruction_lists_each_tool_as_a_json_line_and_the_format() -> None:
    text = tool_instruction(ToolPlan(tools=TOOLS))
    listing = text.split("<tools>\n", 1)[1].split("\n</tools>", 1)[0]
    assert [json.loads(line) for line in listing.splitlines()] == [
        {
            "name": "get_weather",
            "description": "The weather in a city",
            "parameters": WEATHER_SCHEMA,
        },
        {"name": "search"},
    ]
    assert FORMAT_BLOCK in text
    assert text.startswith("# Tools\n")


@pytest.mark.parametrize(
    ("plan", "present", "absent"),
    [
        pytest.param(
            ToolPlan(tools=TOOLS),
            ["Put every call you need now in the one array.", "answer in plain text"],
            ["You must call", "at most one tool"],
            id="auto",
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, required=True),
            ["You must call at least one tool in this reply."],
            ["answer in plain text"],
            id="required",
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, named="search"),
            ['You must call the tool "search" in this reply, and no other tool.'],
            ["answer in plain text", "at least one tool"],
            id="named",
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, parallel=False),
            ["Call at most one tool per reply: the array holds exactly one call."],
            ["Put every call"],
            id="one-call",
        ),
    ],
)
def test_tool_instruction_states_the_choice(
    plan: ToolPlan, present: list[str], absent: list[str]
) -> None:
    text = tool_instruction(plan)
    assert ([p in text for p in present], [a in text for a in absent]) == (
        [True] * len(present),
        [False] * len(absent),
    )


# --- the history ----------------------------------------------------------------------------


def messages(*raw: dict[str, Any]) -> tuple[Message, ...]:
    return request(messages=list(raw)).messages


def test_render_tool_history_writes_calls_and_results_as_text() -> None:
    history = messages(
        {"role": "system", "content": "Be brief."},
        HELLO,
        {
            "role": "assistant",
            "content": "Let me look.",
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                },
                {
                    "id": "call_2",
                    "type": "function",
                    "function": {"name": "search", "arguments": "not json"},
                },
            ],
        },
        {"role": "tool", "tool_call_id": "call_1", "content": '{"temp": 21}'},
        {"role": "tool", "tool_call_id": "call_2", "content": [{"type": "text", "text": "none"}]},
        {"role": "user", "content": "Thanks"},
    )
    assert render_tool_history(history) == (
        history[0],
        history[1],
        Message(
            role="assistant",
            content="Let me look.\n\n<tool_calls>\n"
            '[{"id": "call_1", "name": "get_weather", "arguments": {"city": "Paris"}}, '
            '{"id": "call_2", "name": "search", "arguments": "not json"}]\n</tool_calls>',
        ),
        Message(
            role="user",
            content='<tool_result call_id="call_1" name="get_weather">\n{"temp": 21}\n'
            "</tool_result>\n\n"
            '<tool_result call_id="call_2" name="search">\nnone\n</tool_result>',
        ),
        history[5],
    )


def test_render_tool_history_legacy_function_call_and_unknown_call_id() -> None:
    history = messages(
        HELLO,
        {"role": "assistant", "function_call": {"name": "search", "arguments": "{}"}},
        {"role": "tool", "tool_call_id": "call_x", "content": "ok"},
        {"role": "tool", "tool_call_id": "call_y", "name": "search", "content": "ok"},
    )
    assert render_tool_history(history)[1:] == (
        Message(
            role="assistant",
            content='<tool_calls>\n[{"name": "search", "arguments": {}}]\n</tool_calls>',
        ),
        Message(
            role="user",
            content='<tool_result call_id="call_x">\nok\n</tool_result>\n\n'
            '<tool_result call_id="call_y" name="search">\nok\n</tool_result>',
        ),
    )


def test_render_tool_history_leaves_plain_history_alone() -> None:
    history = messages(HELLO, {"role": "assistant", "content": "Hi"}, HELLO)
    assert render_tool_history(history) == history


def test_render_tool_history_history_call_parses_back_as_the_same_call() -> None:
    """The model sees its earlier calls exactly in the format it is asked to write."""
    history = messages(
        HELLO,
        assistant_calls(
            {"id": "c", "function": {"name": "get_weather", "arguments": '{"city": "Oslo"}'}}
        ),
    )
    rendered = render_tool_history(history)[1]
    assert isinstance(rendered.content, str)
    assert parse_tool_reply(rendered.content, TOOLS).calls == (
        ToolCall("get_weather", {"city": "Oslo"}),
    )


def test_history_note_mentions_both_blocks() -> None:
    assert ("<tool_calls>" in HISTORY_NOTE, "<tool_result>" in HISTORY_NOTE) == (True, True)


# --- parsing: what is tolerated ----------------------------------------------------------------

PARIS = ToolCall("get_weather", {"city": "Paris"})
FOUND = ToolCall("search", {"q": "cats"})

TOLERATED = [
    pytest.param(
        '<tool_calls>\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n</tool_calls>',
        (PARIS,),
        "",
        id="the-format",
    ),
    pytest.param(
        '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
        '{"name": "search", "arguments": {"q": "cats"}}]</tool_calls>',
        (PARIS, FOUND),
        "",
        id="several-calls-one-block",
    ),
    pytest.param(
        '<tool_calls>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_calls>',
        (PARIS,),
        "",
        id="one-object-not-array",
    ),
    pytest.param(
        'I will check.\n\n<tool_calls>\n[{"name": "get_weather", '
        '"arguments": {"city": "Paris"}}]\n</tool_calls>\n',
        (PARIS,),
        "I will check.",
        id="prose-before",
    ),
    pytest.param(
        'Checking <tool_calls>[{"name": "search", "arguments": {"q": "cats"}}]</tool_calls> now.',
        (FOUND,),
        "Checking\n\nnow.",
        id="prose-around",
    ),
    pytest.param(
        '<tool_calls>\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]',
        (PARIS,),
        "",
        id="closing-tag-missing-at-end",
    ),
    pytest.param(
        '```json\n<tool_calls>\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n'
        "</tool_calls>\n```",
        (PARIS,),
        "",
        id="fence-around",
    ),
    pytest.param(
        '<tool_calls>\n```json\n[{"name": "get_weather", "arguments": {"city": "Paris"}}]\n```\n'
        "</tool_calls>",
        (PARIS,),
        "",
        id="fence-inside",
    ),
    pytest.param(
        '<tool_calls>[{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}]'
        "</tool_calls>",
        (PARIS,),
        "",
        id="arguments-as-json-string",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "parameters": {"q": "cats"}}]</tool_calls>',
        (FOUND,),
        "",
        id="parameters-for-arguments",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search"}]</tool_calls>',
        (ToolCall("search", {}),),
        "",
        id="arguments-absent",
    ),
    pytest.param(
        '<tool_calls>[{"id": "call_1", "type": "function", "function": {"name": "get_weather", '
        '"arguments": "{\\"city\\":\\"Paris\\"}"}}]</tool_calls>',
        (PARIS,),
        "",
        id="openai-shape-inside",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": {"q": "</tool_calls>"}}]</tool_calls>',
        (ToolCall("search", {"q": "</tool_calls>"}),),
        "",
        id="closing-tag-inside-a-string",
    ),
    pytest.param(
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "search", "arguments": {"q": "cats"}}\n</tool_call>',
        (PARIS, FOUND),
        "",
        id="qwen-hermes",
    ),
    pytest.param(
        'Sure.\n```\n<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n'
        "</tool_call>\n```\nDone.",
        (PARIS,),
        "Sure.\n\nDone.",
        id="qwen-in-fence-with-prose",
    ),
    pytest.param(
        '<tool_call>\n```json\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n```\n'
        "</tool_call>",
        (PARIS,),
        "",
        id="qwen-fence-inside",
    ),
    pytest.param(
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>Paris</arg_value>\n"
        "<arg_key>days</arg_key>\n<arg_value>3</arg_value>\n</tool_call>",
        (ToolCall("get_weather", {"city": "Paris", "days": 3}),),
        "",
        id="glm-arg-key-value",
    ),
    pytest.param(
        "<tool_call>get_weather\n<arg_key>city</arg_key>\n<arg_value>1984</arg_value>\n"
        "</tool_call>",
        (ToolCall("get_weather", {"city": "1984"}),),
        "",
        id="glm-string-per-schema",
    ),
    pytest.param(
        "<tool_call>search<arg_key>q</arg_key><arg_value>[1, 2]</arg_value></tool_call>",
        (ToolCall("search", {"q": [1, 2]}),),
        "",
        id="glm-json-without-schema",
    ),
    pytest.param(
        '<tool_call>get_weather\n{"city": "Paris"}\n</tool_call>',
        (PARIS,),
        "",
        id="glm-name-then-json",
    ),
    pytest.param(
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:0"
        '<|tool_call_argument_begin|>{"city": "Paris"}<|tool_call_end|>'
        "<|tool_call_begin|>functions.search:1<|tool_call_argument_begin|>"
        '{"q": "cats"}<|tool_call_end|><|tool_calls_section_end|>',
        (PARIS, FOUND),
        "",
        id="kimi-section",
    ),
    pytest.param(
        'Let me see. <|tool_call_begin|>get_weather<|tool_call_argument_begin|>{"city": "Paris"}'
        "<|tool_call_end|>",
        (PARIS,),
        "Let me see.",
        id="kimi-bare-call",
    ),
    pytest.param(
        'Let me check the weather.\n```json\n{"tool_calls": [{"type": "function", "function": '
        '{"name": "get_weather", "arguments": "{\\"city\\": \\"Paris\\"}"}}]}\n```',
        (PARIS,),
        "Let me check the weather.",
        id="fenced-tool-calls-object",
    ),
    pytest.param(
        'Running it {"tool_calls": [{"name": "search", "arguments": {"q": "cats"}}]} and back.',
        (FOUND,),
        "Running it\n\nand back.",
        id="bare-tool-calls-object",
    ),
    pytest.param(
        '```json\n[{"name": "search", "arguments": {"q": "cats"}}]\n```',
        (FOUND,),
        "",
        id="fenced-array-of-calls",
    ),
    pytest.param(
        '  {"name": "get_weather", "arguments": {"city": "Paris"}}\n',
        (PARIS,),
        "",
        id="whole-reply-is-a-call",
    ),
    pytest.param(
        'Example:\n```json\n{"city": "Paris"}\n```\n'
        '<tool_calls>[{"name": "search", "arguments": {"q": "cats"}}]</tool_calls>',
        (FOUND,),
        'Example:\n```json\n{"city": "Paris"}\n```',
        id="unrelated-fence-stays-content",
    ),
    pytest.param(
        '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>\n'
        '<tool_calls>[{"name": "search", "arguments": {"q": "cats"}}]</tool_calls>',
        (PARIS, FOUND),
        "",
        id="several-blocks",
    ),
]


@pytest.mark.parametrize(("text", "calls", "content"), TOLERATED)
def test_parse_tool_reply_tolerated_format(
    text: str, calls: tuple[ToolCall, ...], content: str
) -> None:
    assert parse_tool_reply(text, TOOLS) == ToolReply(text, calls, content)


# --- parsing: what stays text ----------------------------------------------------------------

REJECTED = [
    pytest.param("It is sunny in Paris.", None, id="plain-answer"),
    pytest.param(
        '<tool_calls>[{"name": "get_time", "arguments": {}}]</tool_calls>',
        "the reply calls 'get_time', which is not an offered tool",
        id="unknown-tool",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": {}}, {"name": "nope"}]</tool_calls>',
        "the reply calls 'nope', which is not an offered tool",
        id="one-unknown-among-known",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": [1, 2]}]</tool_calls>',
        "a call's arguments are not a JSON object",
        id="arguments-array",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": "[1]"}]</tool_calls>',
        "a call's arguments are not a JSON object",
        id="arguments-string-of-array",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": "{oops"}]</tool_calls>',
        "a call's arguments string is not JSON",
        id="arguments-string-not-json",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search", "arguments": {"q": NaN}}]</tool_calls>',
        "a tool-call block does not hold valid JSON",
        id="nan-is-not-json",
    ),
    pytest.param(
        "<tool_calls>[{name: 'search'}]</tool_calls>",
        "a tool-call block does not hold valid JSON",
        id="not-json",
    ),
    pytest.param(
        '<tool_calls>[{"name": "search"}] and then some</tool_calls>',
        "a tool-call block is not closed by </tool_calls>",
        id="text-inside-block",
    ),
    pytest.param("<tool_calls>[]</tool_calls>", "a tool-call block holds no call", id="empty"),
    pytest.param(
        '<tool_calls>[{"arguments": {}}]</tool_calls>',
        "a call does not name its tool",
        id="no-name",
    ),
    pytest.param(
        'Done. <tool_calls>[{"name": "search"}]</tool_calls> <tool_calls>[{"name": "x"}]'
        "</tool_calls>",
        "the reply calls 'x', which is not an offered tool",
        id="second-block-bad",
    ),
    pytest.param(
        "<tool_call>search\nq = cats\n</tool_call>",
        "a <tool_call> block holds neither JSON nor arg_key/arg_value pairs",
        id="glm-garbage",
    ),
    pytest.param(
        '{"tool_calls": [{"name": "search"}], "content": "hi"}',
        'a {"tool_calls": ...} object holds other keys',
        id="tool-calls-object-with-more",
    ),
    pytest.param(
        "<|tool_calls_section_begin|>get_weather<|tool_calls_section_end|>",
        "a Kimi tool-call section holds something other than calls",
        id="kimi-section-garbage",
    ),
    pytest.param('{"city": "Paris"}', None, id="json-that-is-not-a-call"),
    pytest.param('["search"]', None, id="array-that-is-not-calls"),
    pytest.param(
        '```json\n{"name": "search", "arguments": {}}\nand more inside\n```',
        None,
        id="fence-with-more-than-calls",
    ),
]


@pytest.mark.parametrize(("text", "problem"), REJECTED)
def test_parse_tool_reply_invalid_reply_is_plain_content(text: str, problem: str | None) -> None:
    assert parse_tool_reply(text, TOOLS) == ToolReply(text, (), text, problem)


def test_parse_tool_reply_no_tools_offered_calls_nothing() -> None:
    text = '<tool_calls>[{"name": "search"}]</tool_calls>'
    assert parse_tool_reply(text, ()).calls == ()


# --- choice and the answer ---------------------------------------------------------------------

TWO_CALLS = (
    'On it.\n<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}, '
    '{"name": "search", "arguments": {"q": "cats"}}]</tool_calls>'
)


@pytest.mark.parametrize(
    ("plan", "text", "expected"),
    [
        pytest.param(ToolPlan(tools=TOOLS), TWO_CALLS, ((PARIS, FOUND), "On it."), id="auto"),
        pytest.param(
            ToolPlan(tools=TOOLS, parallel=False),
            TWO_CALLS,
            (
                (PARIS,),
                'On it.\n\n<tool_calls>\n[{"name": "search", "arguments": {"q": "cats"}}]'
                "\n</tool_calls>",
            ),
            id="one-call-rest-as-content",
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, named="search"), TWO_CALLS, ((), TWO_CALLS), id="named-ignored"
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, named="get_weather"),
            '<tool_calls>[{"name": "get_weather", "arguments": {"city": "Paris"}}]</tool_calls>',
            ((PARIS,), ""),
            id="named-obeyed",
        ),
        pytest.param(
            ToolPlan(tools=TOOLS, required=True), "No.", ((), "No."), id="required-ignored"
        ),
    ],
)
def test_choose_calls_applies_the_choice(
    plan: ToolPlan, text: str, expected: tuple[tuple[ToolCall, ...], str]
) -> None:
    assert choose_calls(parse_tool_reply(text, plan.tools), plan) == expected


def test_tool_transform_answers_with_tool_calls() -> None:
    transform = tool_transform(ToolPlan(tools=TOOLS), make_call_id=ids("call_A", "call_B"))
    answer = transform(Answer(content=TWO_CALLS, finish_reason="stop"))
    assert answer == Answer(
        content="On it.",
        tool_calls=[
            {
                "id": "call_A",
                "type": "function",
                "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
            },
            {
                "id": "call_B",
                "type": "function",
                "function": {"name": "search", "arguments": '{"q":"cats"}'},
            },
        ],
        finish_reason="stop",
    )


def test_tool_transform_only_calls_leave_empty_content() -> None:
    transform = tool_transform(ToolPlan(tools=TOOLS), make_call_id=ids("call_A"))
    answer = transform(Answer(content='<tool_calls>[{"name": "search"}]</tool_calls>'))
    assert (answer.content, answer.tool_calls[0]["function"]) == (
        "",
        {"name": "search", "arguments": "{}"},
    )


def test_tool_transform_legacy_functions_answer_with_function_call() -> None:
    plan = plan_tools(request(functions=[WEATHER["function"], SEARCH["function"]]))
    answer = tool_transform(plan, make_call_id=ids("call_A"))(Answer(content=TWO_CALLS))
    assert (answer.function_call, answer.tool_calls, answer.content) == (
        {"name": "get_weather", "arguments": '{"city":"Paris"}'},
        [],
        'On it.\n\n<tool_calls>\n[{"name": "search", "arguments": {"q": "cats"}}]\n</tool_calls>',
    )


def test_tool_transform_plain_reply_is_unchanged() -> None:
    original = Answer(content="It is sunny.", finish_reason="stop", usage={"total_tokens": 3})
    assert tool_transform(ToolPlan(tools=TOOLS))(original) == original


def test_tool_transform_native_tool_calls_are_left_alone() -> None:
    native = [{"id": "x", "type": "function", "function": {"name": "search", "arguments": "{}"}}]
    original = Answer(content='<tool_calls>[{"name": "search"}]</tool_calls>', tool_calls=native)
    assert tool_transform(ToolPlan(tools=TOOLS))(original) == original


def test_new_call_id_is_call_and_24_alphanumerics() -> None:
    drawn = {new_call_id() for _ in range(50)}
    assert (all(CALL_ID.fullmatch(i) for i in drawn), len(drawn)) == (True, 50)


# --- properties --------------------------------------------------------------------------------

NAMES = ("get_weather", "search", "send.mail", "x-1")
PROPERTY_TOOLS = tuple(Tool(name) for name in NAMES)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
arguments = st.dictionaries(st.text(max_size=8), json_values, max_size=4)
calls = st.lists(st.builds(ToolCall, st.sampled_from(NAMES), arguments), min_size=1, max_size=4)
# Prose that cannot open an envelope: no '<', '{', '[', '`'.
prose = st.text(alphabet=st.characters(blacklist_characters="<{[`", codec="utf-8"), max_size=40)
FRAGMENTS = (
    "<tool_calls>",
    "</tool_calls>",
    "<tool_call>",
    "</tool_call>",
    "<|tool_calls_section_begin|>",
    "<|tool_call_begin|>",
    "<|tool_call_argument_begin|>",
    "<|tool_call_end|>",
    "<arg_key>",
    "</arg_key>",
    "<arg_value>",
    "</arg_value>",
    "```json\n",
    "```",
    '{"tool_calls": ',
    '{"name": "search", "arguments": ',
    '"get_weather"',
    "{",
    "}",
    "[",
    "]",
    ",",
    ":",
    '"',
    "NaN",
    "\n",
)
chaotic = st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=8), max_size=25).map("".join)


@given(calls=calls)
def test_parse_tool_reply_reads_back_rendered_calls(calls: list[ToolCall]) -> None:
    text = format_tool_calls(calls)
    assert parse_tool_reply(text, PROPERTY_TOOLS) == ToolReply(text, tuple(calls), "")


@given(before=prose, calls=calls, after=prose)
def test_parse_tool_reply_keeps_the_prose_around_rendered_calls(
    before: str, calls: list[ToolCall], after: str
) -> None:
    text = f"{before}\n{format_tool_calls(calls)}\n{after}"
    expected = "\n\n".join(part.strip() for part in (before, after) if part.strip())
    assert parse_tool_reply(text, PROPERTY_TOOLS) == ToolReply(text, tuple(calls), expected)


@settings(max_examples=300)
@given(text=st.text() | chaotic)
def test_parse_tool_reply_never_raises_and_never_invents(text: str) -> None:
    reply = parse_tool_reply(text, PROPERTY_TOOLS)
    assert reply.text == text
    if reply.calls:
        assert all(call.name in NAMES and isinstance(call.arguments, dict) for call in reply.calls)
        assert json.loads(json.dumps([c.arguments for c in reply.calls])) == [
            c.arguments for c in reply.calls
        ]
    else:
        assert reply.content == text


@given(calls=calls, max_chars=st.integers(min_value=1, max_value=30))
def test_tool_call_deltas_concatenate_to_the_parsed_arguments(
    calls: list[ToolCall], max_chars: int
) -> None:
    transform = tool_transform(ToolPlan(tools=PROPERTY_TOOLS))
    answer = transform(Answer(content=format_tool_calls(calls)))
    deltas = tool_call_deltas(answer.tool_calls, max_chars)
    assembled: dict[int, dict[str, Any]] = {}
    for delta in deltas:
        if delta["index"] not in assembled:
            assert set(delta) == {"index", "id", "type", "function"}
            assert CALL_ID.fullmatch(delta["id"]) and delta["type"] == "function"
            assembled[delta["index"]] = {"name": delta["function"]["name"], "arguments": ""}
        assembled[delta["index"]]["arguments"] += delta["function"]["arguments"]
    assert [assembled[i]["arguments"] for i in sorted(assembled)] == [
        call["function"]["arguments"] for call in answer.tool_calls
    ]
    assert [(a["name"], json.loads(a["arguments"])) for a in assembled.values()] == [
        (call.name, call.arguments) for call in calls
    ]
