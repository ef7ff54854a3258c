"""The Straico upstream's view of a request (contract §8, "field (Straico upstream)")."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from adapters.straico_request import (
    StraicoPlan,
    apply_stop,
    plan_straico_request,
    straico_payload,
)
from adapters.tools import HISTORY_NOTE, Tool, ToolPlan, tool_instruction
from engine.errors import InvalidValue, UnsupportedParameter
from engine.request import ChatRequest, parse_chat_request

MODEL = "openai/gpt-4o-mini"
HELLO = {"role": "user", "content": "Hello"}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
TOOL = {"type": "function", "function": {"name": "f", "description": "Does f."}}
TOOLS_PLAN = ToolPlan(tools=(Tool("f", "Does f."),))


def request(**fields: Any) -> ChatRequest:
    return parse_chat_request({"model": MODEL, "messages": [HELLO], **fields})


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": "Look:"}, *parts]}


UNSUPPORTED = [
    pytest.param({"n": 2}, "n", id="n-2"),
    pytest.param({"logprobs": True}, "logprobs", id="logprobs-true"),
    pytest.param({"top_logprobs": 0}, "top_logprobs", id="top-logprobs"),
    pytest.param({"top_p": 0.9}, "top_p", id="top-p"),
    pytest.param({"presence_penalty": 0.5}, "presence_penalty", id="presence-penalty"),
    pytest.param({"frequency_penalty": -1}, "frequency_penalty", id="frequency-penalty"),
    pytest.param({"response_format": {"type": "json_object"}}, "response_format", id="json-mode"),
    pytest.param(
        {"response_format": {"type": "json_schema", "json_schema": {}}},
        "response_format",
        id="json-schema",
    ),
    pytest.param({"audio": {"voice": "alloy", "format": "wav"}}, "audio", id="audio"),
    pytest.param({"modalities": ["text", "audio"]}, "modalities", id="modalities-audio"),
    pytest.param({"modalities": "text"}, "modalities", id="modalities-not-list"),
    pytest.param({"prediction": {"type": "content", "content": "x"}}, "prediction"),
    pytest.param(
        {"tools": [{"type": "custom", "custom": {"name": "f"}}]}, "tools[0].type", id="custom-tool"
    ),
    pytest.param(
        {"tools": [TOOL], "tool_choice": {"type": "allowed_tools", "allowed_tools": {}}},
        "tool_choice",
        id="allowed-tools-choice",
    ),
    pytest.param(
        {"tools": [TOOL], "functions": [{"name": "g"}]}, "functions", id="tools-and-functions"
    ),
    pytest.param(
        {
            "messages": [
                user({"type": "image_url", "image_url": {"url": "data:image/png;base64,AA"}})
            ]
        },
        "messages[0].content[1].image_url",
        id="data-uri-image",
    ),
    pytest.param(
        {"messages": [user({"type": "image_url", "image_url": {"url": " DATA:image/png,AA"}})]},
        "messages[0].content[1].image_url",
        id="data-uri-any-case",
    ),
    pytest.param(
        {"messages": [HELLO, user({"type": "file", "file": {"file_id": "file-1"}})]},
        "messages[1].content[1].file",
        id="file-part",
    ),
    pytest.param(
        {"messages": [user({"type": "input_audio", "input_audio": {"data": "AA"}})]},
        "messages[0].content[1].input_audio",
        id="audio-part",
    ),
]


@pytest.mark.parametrize(("fields", "param"), UNSUPPORTED)
def test_plan_straico_request_refuses_unsupported_field(fields: dict[str, Any], param: str) -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        plan_straico_request(request(**fields))
    assert (caught.value.code, caught.value.status, caught.value.param) == (
        "unsupported_parameter",
        400,
        param,
    )
    assert caught.value.message.startswith(param)


def test_plan_straico_request_message_names_the_value_and_the_way_out() -> None:
    with pytest.raises(UnsupportedParameter) as caught:
        plan_straico_request(request(top_p=0.5))
    assert caught.value.message == (
        "top_p = 0.5 is not supported by the Straico upstream. "
        "Straico has no nucleus sampling; send top_p: 1 or leave it out (temperature works)."
    )


IGNORED = [
    pytest.param({}, (), id="nothing"),
    pytest.param(
        {"user": "u", "metadata": {"k": "v"}, "store": False, "seed": 7},
        ("metadata", "seed", "store", "user"),
        id="always-ignored",
    ),
    pytest.param(
        {
            "n": 1,
            "logprobs": False,
            "top_p": 1,
            "presence_penalty": 0,
            "frequency_penalty": 0.0,
            "response_format": {"type": "text"},
            "modalities": ["text"],
        },
        (
            "frequency_penalty",
            "logprobs",
            "modalities",
            "n",
            "presence_penalty",
            "response_format",
            "top_p",
        ),
        id="values-that-change-nothing",
    ),
    pytest.param({"tools": [], "functions": []}, ("functions", "tools"), id="no-tools"),
    pytest.param(
        {"tool_choice": "auto", "function_call": "none", "parallel_tool_calls": True},
        ("function_call", "parallel_tool_calls", "tool_choice"),
        id="tool-settings-without-tools",
    ),
    pytest.param(
        {"tools": [TOOL], "tool_choice": "required", "parallel_tool_calls": False},
        (),
        id="tools-are-honoured",
    ),
    pytest.param(
        {"zeta": 1, "alpha": {"x": 1}, "logit_bias": {"1": 2}},
        ("alpha", "logit_bias", "zeta"),
        id="unknown-fields-sorted",
    ),
    pytest.param(
        {"seed": None, "tools": None, "audio": None, "unknown": None},
        (),
        id="null-is-absent",
    ),
    pytest.param(
        {
            "stream": True,
            "stream_options": {"include_usage": True},
            "stop": ["x"],
            "temperature": 0.5,
            "max_tokens": 10,
            "max_completion_tokens": 20,
        },
        (),
        id="sent-or-honoured",
    ),
]


@pytest.mark.parametrize(("fields", "ignored"), IGNORED)
def test_plan_straico_request_lists_ignored_fields(
    fields: dict[str, Any], ignored: tuple[str, ...]
) -> None:
    assert plan_straico_request(request(**fields)).ignored_fields == ignored


@pytest.mark.parametrize(
    ("fields", "needs_whole"),
    [
        pytest.param({}, False, id="no-stop"),
        pytest.param({"stop": "END"}, True, id="stop-string"),
        pytest.param({"stop": ["a", "b"]}, True, id="stop-list"),
        pytest.param({"stop": []}, False, id="stop-empty"),
        pytest.param({"stop": None}, False, id="stop-null"),
    ],
)
def test_plan_straico_request_needs_whole_answer_for_stop(
    fields: dict[str, Any], needs_whole: bool
) -> None:
    assert plan_straico_request(request(**fields)) == StraicoPlan(
        ignored_fields=(), needs_whole=needs_whole
    )


@pytest.mark.parametrize(
    ("fields", "needs_whole"),
    [
        pytest.param({"tools": [TOOL]}, True, id="tools"),
        pytest.param({"functions": [{"name": "f"}]}, True, id="functions"),
        pytest.param({"tools": [TOOL], "tool_choice": "none"}, False, id="tool-choice-none"),
        pytest.param({"tools": []}, False, id="no-tools"),
        pytest.param(
            {"messages": [HELLO, {"role": "tool", "content": "42", "tool_call_id": "call_1"}]},
            False,
            id="tool-history-only",
        ),
    ],
)
def test_plan_straico_request_needs_whole_answer_when_tools_are_offered(
    fields: dict[str, Any], needs_whole: bool
) -> None:
    plan = plan_straico_request(request(**fields))
    assert (plan.needs_whole, plan.tools.offered) == (needs_whole, needs_whole)


def test_plan_straico_request_tool_shape_error_comes_before_unsupported_fields() -> None:
    """§7: invalid_value before unsupported_parameter, whatever the field order."""
    with pytest.raises(InvalidValue) as caught:
        plan_straico_request(request(top_p=0.5, tools=[{"type": "function"}]))
    assert caught.value.param == "tools[0].function"


def test_plan_straico_request_accepts_https_image_and_plain_history() -> None:
    messages = [
        {"role": "system", "content": "Be brief."},
        user({"type": "image_url", "image_url": {"url": "https://example.com/a.png"}}),
        {"role": "assistant", "content": "A cat."},
        {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
        HELLO,
    ]
    assert plan_straico_request(request(messages=messages)) == StraicoPlan((), False)


def test_straico_payload_minimal_has_model_messages_and_stream() -> None:
    assert straico_payload(request(), stream=True) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "stream": True,
    }


def test_straico_payload_sends_developer_as_system() -> None:
    sent = request(messages=[{"role": "developer", "content": "Be brief."}, HELLO])
    assert straico_payload(sent, stream=False)["messages"] == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hello"},
    ]


@pytest.mark.parametrize(
    ("fields", "max_tokens"),
    [
        pytest.param({"max_tokens": 10}, 10, id="max-tokens"),
        pytest.param({"max_completion_tokens": 20}, 20, id="max-completion-tokens"),
        pytest.param({"max_tokens": 10, "max_completion_tokens": 20}, 20, id="both"),
    ],
)
def test_straico_payload_sends_max_completion_tokens_as_max_tokens(
    fields: dict[str, Any], max_tokens: int
) -> None:
    payload = straico_payload(request(**fields), stream=False)
    assert (payload["max_tokens"], "max_completion_tokens" in payload) == (max_tokens, False)


def test_straico_payload_sends_temperature_and_nothing_it_ignores() -> None:
    sent = request(
        temperature=0.2, stop=["x"], seed=1, user="u", top_p=1, n=1, stream=True, extra=True
    )
    assert straico_payload(sent, stream=False) == {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Hello"}],
        "temperature": 0.2,
        "stream": False,
    }


def test_straico_payload_sends_parts_as_straico_documents_them() -> None:
    sent = request(
        messages=[
            user({"type": "image_url", "image_url": {"url": "https://x/a.png", "detail": "high"}}),
            {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]},
            {"role": "assistant", "content": None, "refusal": "I can't."},
        ]
    )
    assert straico_payload(sent, stream=False)["messages"] == [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Look:"},
                {"type": "image_url", "image_url": {"url": "https://x/a.png"}},
            ],
        },
        {"role": "assistant", "content": [{"type": "text", "text": "No."}]},
        {"role": "assistant", "content": "I can't."},
    ]


def test_straico_payload_file_part_is_a_bug_when_not_planned() -> None:
    sent = request(messages=[user({"type": "file", "file": {"file_id": "file-1"}})])
    with pytest.raises(ValueError, match="file part"):
        straico_payload(sent, stream=False)


# --- tool calls (contract §13; adapters/tools.py) ---------------------------------------------

SYSTEM = {"role": "system", "content": "Be brief."}
TOOL_RESULT = {"role": "tool", "content": "42", "tool_call_id": "call_1"}
CALLED = {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}


def test_straico_payload_appends_the_tool_instruction_to_the_leading_system_messages() -> None:
    sent = request(
        messages=[SYSTEM, {"role": "developer", "content": "Answer in French."}, HELLO],
        tools=[TOOL],
    )
    messages = straico_payload(sent, stream=False)["messages"]
    assert messages == [
        SYSTEM,
        {"role": "system", "content": "Answer in French.\n\n" + tool_instruction(TOOLS_PLAN)},
        HELLO,
    ]


def test_straico_payload_tool_instruction_is_first_when_no_system_message_opens() -> None:
    sent = request(messages=[HELLO, SYSTEM], tools=[TOOL])
    assert straico_payload(sent, stream=False)["messages"] == [
        {"role": "system", "content": tool_instruction(TOOLS_PLAN)},
        HELLO,
        SYSTEM,
    ]


def test_straico_payload_tool_instruction_joins_a_system_message_of_parts() -> None:
    parts = [{"type": "text", "text": "Be brief."}]
    sent = request(messages=[{"role": "system", "content": parts}, HELLO], tools=[TOOL])
    assert straico_payload(sent, stream=False)["messages"][0] == {
        "role": "system",
        "content": [*parts, {"type": "text", "text": tool_instruction(TOOLS_PLAN)}],
    }


def test_straico_payload_renders_tool_history_without_a_tool_role() -> None:
    sent = request(messages=[HELLO, CALLED, TOOL_RESULT], tools=[TOOL])
    messages = straico_payload(sent, stream=False)["messages"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[2:] == [
        {
            "role": "assistant",
            "content": '<tool_calls>\n[{"id": "call_1", "name": "f", "arguments": {}}]\n'
            "</tool_calls>",
        },
        {"role": "user", "content": '<tool_result call_id="call_1" name="f">\n42\n</tool_result>'},
    ]


@pytest.mark.parametrize(
    "fields",
    [
        pytest.param({"tool_choice": "none", "tools": [TOOL]}, id="tool-choice-none"),
        pytest.param({}, id="no-tools"),
    ],
)
def test_straico_payload_tool_history_without_tools_gets_the_history_note(
    fields: dict[str, Any],
) -> None:
    sent = request(messages=[SYSTEM, HELLO, CALLED, TOOL_RESULT], **fields)
    messages = straico_payload(sent, stream=False)["messages"]
    assert messages[0] == {"role": "system", "content": "Be brief.\n\n" + HISTORY_NOTE}
    assert "<tools>" not in json.dumps(messages)


def test_straico_payload_tool_choice_none_sends_no_tool_list() -> None:
    sent = request(tools=[TOOL], tool_choice="none")
    assert straico_payload(sent, stream=False) == straico_payload(request(), stream=False)


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        pytest.param("Hello world", ["world"], ("Hello ", True), id="cut"),
        pytest.param("Hello world", ["xyz"], ("Hello world", False), id="absent"),
        pytest.param("Hello world", [], ("Hello world", False), id="no-stops"),
        pytest.param("one. two. END three", ["END", "."], ("one", True), id="earliest-wins"),
        pytest.param("abcdef", ["cdef", "cd"], ("ab", True), id="same-start"),
        pytest.param("STOP here", ["STOP"], ("", True), id="at-start"),
        pytest.param("abc", ["", "c"], ("ab", True), id="empty-stop-never-matches"),
        pytest.param("", ["a"], ("", False), id="empty-text"),
    ],
)
def test_apply_stop_cuts_before_earliest_stop(
    text: str, stops: list[str], expected: tuple[str, bool]
) -> None:
    assert apply_stop(text, stops) == expected


@given(text=st.text(alphabet="abc ", max_size=30), stops=st.lists(st.text("abc", max_size=3)))
def test_apply_stop_keeps_the_longest_prefix_without_a_stop(text: str, stops: list[str]) -> None:
    """Cut exactly when a stop occurs; what is kept holds none; what is cut starts with one."""
    kept, cut = apply_stop(text, stops)
    real = [stop for stop in stops if stop]
    rest = text[len(kept) :]
    assert cut == any(stop in text for stop in real)
    assert (
        text.startswith(kept),
        any(stop in kept for stop in real),
        rest != "",
        any(rest.startswith(stop) for stop in real),
    ) == (True, False, cut, cut)
