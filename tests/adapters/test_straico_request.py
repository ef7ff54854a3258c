"""The Straico upstream's view of a request (contract §8, "field (Straico upstream)")."""

from __future__ import annotations

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
from engine.errors import UnsupportedParameter
from engine.request import ChatRequest, parse_chat_request

MODEL = "openai/gpt-4o-mini"
HELLO = {"role": "user", "content": "Hello"}
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "f", "arguments": "{}"}}


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
    pytest.param({"tools": [{"type": "function", "function": {"name": "f"}}]}, "tools"),
    pytest.param({"tool_choice": "auto"}, "tool_choice", id="tool-choice"),
    pytest.param({"functions": [{"name": "f"}]}, "functions", id="functions"),
    pytest.param({"function_call": "auto"}, "function_call", id="function-call"),
    pytest.param({"parallel_tool_calls": True}, "parallel_tool_calls", id="parallel-tool-calls"),
    pytest.param(
        {"messages": [HELLO, {"role": "tool", "content": "42", "tool_call_id": "call_1"}]},
        "messages[1]",
        id="tool-message",
    ),
    pytest.param(
        {"messages": [HELLO, {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]}]},
        "messages[1].tool_calls",
        id="assistant-tool-calls",
    ),
    pytest.param(
        {"messages": [{"role": "assistant", "function_call": {"name": "f", "arguments": "{}"}}]},
        "messages[0].function_call",
        id="assistant-function-call",
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


def test_straico_payload_tool_message_is_a_bug_when_not_planned() -> None:
    sent = request(messages=[HELLO, {"role": "tool", "content": "42", "tool_call_id": "c"}])
    with pytest.raises(ValueError, match="tool message"):
        straico_payload(sent, stream=False)


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
